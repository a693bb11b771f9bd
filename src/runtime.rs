//! The runtime: a validated [`Config`] compiled for serving (route table, allowlists, rate
//! limiters, upstream clients). One `Arc<Runtime>` snapshot serves a request from start to end;
//! a reload builds a new one and swaps it in whole. State that must outlive a reload (rate-limit
//! buckets whose settings did not change, URL-fed IP sets) is carried over from the previous
//! snapshot. Building never touches a socket the gateway listens on.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method};

use crate::config::{ClientIpConfig, Config, IpSetSource, PathPattern};
use crate::ip_feeds::{FeedSource, LiveIpSet};
use crate::ipset::IpTable;
use crate::observe::metrics::{Metrics, RouteSeries};
use crate::pipeline::allowlist::{Allowlist, RouteAllowlist};
use crate::pipeline::rate_limit::{RateLimitSettings, RouteLimiter, SharedBucket};
use crate::pipeline::route::RouteTable;
use crate::upstream::{Upstream, UpstreamBuildError};

pub struct Runtime {
    pub routes: RouteTable,
    pub client_ip: ClientIpConfig,
    pub global_limit: Option<Arc<RouteLimiter>>,
    /// Every URL-fed IP set, for readiness and to hand over on reload.
    pub live_sets: Vec<Arc<LiveIpSet>>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// `limits.max_headers`, which the pipeline applies to HTTP/2 heads (hyper applies it to
    /// HTTP/1.1 ones).
    pub max_headers: usize,
    /// `redis:`: the connection rate limits and replay claims share; kept across reloads
    /// while the block is unchanged.
    pub redis: Option<Arc<crate::cluster::RedisHandle>>,
}

pub struct Route {
    pub name: Arc<str>,
    pub path: PathPattern,
    pub methods: Vec<Method>,
    pub allowlist: Option<RouteAllowlist>,
    pub limiter: Option<Arc<RouteLimiter>>,
    pub verifier: Option<Arc<crate::verify::Verifier>>,
    pub replay_window: Option<Duration>,
    pub upstream: Arc<Upstream>,
    pub upstream_path: Option<String>,
    pub max_body: u64,
    pub body_timeout: Duration,
    pub headers: RouteHeaders,
    pub series: RouteSeries,
}

/// The values of the headers the gateway adds for a route, made once instead of per request.
/// `None` for a name that is not a valid header value (the header is then left out).
pub struct RouteHeaders {
    /// `X-Hookgate-Route`
    pub route: Option<HeaderValue>,
    /// `X-Hookgate-Verified`: the provider, when the route verifies signatures.
    pub verified_by: Option<HeaderValue>,
}

impl Runtime {
    /// Compiles `config`. `previous` is the snapshot being replaced, if any: limiters with
    /// unchanged settings and IP feeds with an unchanged source are taken over from it.
    /// Must run inside the tokio runtime (IP feeds start their refresh tasks). `workers`: the
    /// worker threads' runtimes, each of which gets its own Redis connection.
    pub fn build(
        config: &Config,
        previous: Option<&Runtime>,
        metrics: &Metrics,
        workers: &[tokio::runtime::Handle],
    ) -> Result<Runtime, UpstreamBuildError> {
        let redis =
            config
                .redis
                .as_ref()
                .map(|wanted| match previous.and_then(|p| p.redis.as_ref()) {
                    Some(old) if old.config() == wanted => Arc::clone(old),
                    _ => crate::cluster::RedisHandle::start(wanted.clone(), metrics, workers),
                });
        let shared = |scope: &str| {
            config.redis.as_ref().map(|r| SharedLimit {
                instances: r.instances.map_or(1, |n| n.get()),
                key_base: format!("{}rl:{scope}:", r.key_prefix),
            })
        };
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let old = previous
                    .and_then(|p| p.upstreams.iter().find(|o| *o.name == u.name))
                    .map(Arc::as_ref);
                Upstream::new(u, config.limits.worker_threads, metrics, old).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Each ip_set as either a fixed table or a live feed, by index.
        let mut live_sets = Vec::new();
        let sets: Vec<Result<&IpTable, Arc<LiveIpSet>>> = config
            .ip_sets
            .iter()
            .map(|set| match &set.source {
                IpSetSource::Fixed(table) => Ok(table),
                IpSetSource::Url {
                    url,
                    json_path,
                    refresh,
                } => {
                    let source = FeedSource {
                        url: url.clone(),
                        json_path: json_path.clone(),
                        refresh: *refresh,
                    };
                    let kept = previous
                        .and_then(|p| {
                            p.live_sets
                                .iter()
                                .find(|l| l.name == set.name && l.source == source)
                        })
                        .cloned();
                    let live = kept.unwrap_or_else(|| LiveIpSet::start(&set.name, source, metrics));
                    live_sets.push(Arc::clone(&live));
                    Err(live)
                }
            })
            .collect();

        let mut routes = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let Some(upstream) = upstreams.get(r.upstream) else {
                continue;
            };
            let allowlist = r.allow_ips.as_ref().map(|allow| {
                let chosen = allow.sets.iter().filter_map(|i| sets.get(*i));
                let fixed_sets = chosen.clone().filter_map(|s| s.as_ref().ok().copied());
                RouteAllowlist {
                    fixed: Allowlist::from_parts(&allow.cidrs, fixed_sets),
                    live: chosen.filter_map(|s| s.as_ref().err().cloned()).collect(),
                }
            });
            let limiter = r.rate_limit.as_ref().map(|settings| {
                let old = previous
                    .and_then(|p| p.routes.iter().find(|o| *o.name == r.name))
                    .and_then(|o| o.limiter.as_ref());
                reuse_or_new(old, settings, shared(&r.name))
            });
            routes.push(Route {
                name: r.name.as_str().into(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                allowlist,
                limiter,
                verifier: r.verify.clone(),
                replay_window: r.replay_window,
                upstream: Arc::clone(upstream),
                upstream_path: r.upstream_path.clone(),
                max_body: r.max_body,
                body_timeout: r.body_timeout,
                headers: RouteHeaders {
                    route: HeaderValue::from_str(&r.name).ok(),
                    verified_by: r
                        .verify
                        .as_ref()
                        .and_then(|v| HeaderValue::from_str(v.provider()).ok()),
                },
                series: RouteSeries::default(),
            });
        }
        let global_limit = config.global_rate_limit.as_ref().map(|settings| {
            reuse_or_new(
                previous.and_then(|p| p.global_limit.as_ref()),
                settings,
                shared("-global"),
            )
        });
        Ok(Runtime {
            routes: RouteTable::new(routes),
            client_ip: config.client_ip.clone(),
            global_limit,
            live_sets,
            upstreams,
            max_headers: config.limits.max_headers,
            redis,
        })
    }

    /// Ready to serve: every URL-fed IP set has loaded at least once.
    pub fn is_ready(&self) -> bool {
        self.live_sets.iter().all(|s| s.is_loaded())
    }

    /// Closes upstream connections that have been idle past their timeout.
    pub fn close_stale_connections(&self) {
        for upstream in &self.upstreams {
            upstream.close_stale_connections();
        }
    }

    /// Drops idle rate-limit buckets and reports how many keys each limiter tracks.
    pub fn prune_limiters(&self, metrics: &Metrics) {
        use crate::observe::metrics::RouteLabels;
        let named = self
            .routes
            .iter()
            .filter_map(|r| r.limiter.as_ref().map(|l| (r.name.to_string(), l)))
            .chain(
                self.global_limit
                    .as_ref()
                    .map(|l| ("-global".to_string(), l)),
            );
        for (route, limiter) in named {
            limiter.retain_recent();
            let keys = i64::try_from(limiter.len()).unwrap_or(i64::MAX);
            metrics
                .rate_limit_keys
                .get_or_create(&RouteLabels { route })
                .set(keys);
        }
    }
}

/// Where a limit lives when `redis:` is set.
struct SharedLimit {
    instances: u32,
    key_base: String,
}

/// The previous limiter when its settings are unchanged (its buckets survive), else a new one.
/// A shared limit's local buckets run at this instance's share, for when Redis is down.
fn reuse_or_new(
    old: Option<&Arc<RouteLimiter>>,
    settings: &RateLimitSettings,
    shared: Option<SharedLimit>,
) -> Arc<RouteLimiter> {
    let (local, shared) = match shared {
        None => (settings.clone(), None),
        Some(s) => (
            settings.divided(s.instances),
            Some(SharedBucket {
                settings: settings.clone(),
                key_base: s.key_base,
            }),
        ),
    };
    match old {
        Some(old) if *old.settings() == local && old.shared() == shared.as_ref() => Arc::clone(old),
        _ => {
            let limiter = RouteLimiter::new(local);
            Arc::new(match shared {
                Some(shared) => limiter.with_shared(shared),
                None => limiter,
            })
        }
    }
}
