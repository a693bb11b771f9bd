//! The one place metric names, labels and buckets are defined (DESIGN.md section 5). Labels are
//! bounded: route, listener and upstream are configured names, outcome and code come from fixed
//! sets. No label ever carries a path, an IP, a header value or a secret.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Request latency buckets, seconds: from a cache-hot 1 ms to a 30 s upstream timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: Arc<str>,
    pub route: Arc<str>,
    pub outcome: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcomeLabels {
    pub route: Arc<str>,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionClosedLabels {
    pub listener: String,
    /// `first_byte_timeout`, `idle_timeout`, `send_timeout` or `unsent_limit`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    pub listener: String,
    /// The certificate's first name (configured `names:`, else its first DNS SAN; an ACME
    /// certificate's first domain); empty for the single-certificate form `tls: { cert, key }`.
    pub sni: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignatureLabels {
    pub route: Arc<str>,
    pub provider: Arc<str>,
    /// `valid` or the refusal reason (`mismatch`, `expired`, ...).
    pub result: &'static str,
    /// Which secret matched (rotation); empty when none did.
    pub secret_index: Option<usize>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpSetLabels {
    pub set: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpSetResultLabels {
    pub set: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisOpLabels {
    /// `rate_limit`, `claim`, `delivered`, `release` or `connect`.
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// The series a route's accepted requests touch that are fixed per route, resolved on first
/// use and kept with the route: a `Family` lookup hashes every label (SipHash) and takes a lock
/// on each request, a resolved handle is an atomic load. Lazily, so a config with 10 000 routes
/// does not print 10 000 empty series. A reload builds new routes, which resolve to the same
/// series again.
#[derive(Default)]
pub struct RouteSeries {
    upstream_duration: OnceLock<Histogram>,
    /// `result="valid"` by secret index; rotations beyond these are looked up per request.
    valid_signatures: [OnceLock<Counter>; 4],
}

impl RouteSeries {
    pub fn upstream_duration(&self, metrics: &Metrics, upstream: &Arc<str>) -> &Histogram {
        self.upstream_duration.get_or_init(|| {
            metrics
                .upstream_duration
                .get_or_create(&UpstreamLabels {
                    upstream: Arc::clone(upstream),
                })
                .clone()
        })
    }

    /// Counts one signature check of the route; `labels` are built only when the series is not
    /// resolved yet.
    pub fn count_signature_check(
        &self,
        metrics: &Metrics,
        valid_secret: Option<usize>,
        labels: impl FnOnce() -> SignatureLabels,
    ) {
        let resolve = || {
            let labels = labels();
            metrics.remember(&labels.route, |keys| {
                keys.signatures.insert(labels.clone());
            });
            metrics.signature_checks.get_or_create(&labels).clone()
        };
        match valid_secret.and_then(|i| self.valid_signatures.get(i)) {
            Some(series) => series.get_or_init(resolve).inc(),
            None => resolve().inc(),
        };
    }
}

/// The request count and duration series of one (listener, route, outcome, status), resolved.
/// A connection keeps the first it answers with ([`Metrics::count_request`]): on a keep-alive
/// connection nearly every request lands in the same series, and a `Family` lookup (every label
/// hashed, a lock taken) was the dearest part of counting one.
pub struct AnswerSeries {
    labels: RequestLabels,
    /// [`Metrics::forget_routes`] count when resolved: a series resolved before routes were
    /// forgotten may have been removed from its family, and is looked up again.
    generation: u64,
    requests: Counter,
    duration: Histogram,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteOutcomeLabels, Histogram, fn() -> Histogram>,
    pub upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub open_connections: Family<ListenerLabels, Gauge>,
    pub connections_refused: Family<ListenerLabels, Counter>,
    pub tls_handshake_failures: Family<ListenerLabels, Counter>,
    pub protocol_errors: Family<ListenerLabels, Counter>,
    pub connections_closed: Family<ConnectionClosedLabels, Counter>,
    pub tls_cert_not_after: Family<CertLabels, Gauge>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub acme_orders: Family<ResultLabels, Counter>,
    /// The `sni` labels of each listener's file certificates, so a reload drops the series of
    /// certificates it removed.
    cert_series: std::sync::Mutex<HashMap<String, Vec<String>>>,
    pub config_last_reload_success: Gauge<f64, AtomicU64>,
    pub signature_checks: Family<SignatureLabels, Counter>,
    pub rate_limit_keys: Family<RouteLabels, Gauge>,
    pub ip_set_entries: Family<IpSetLabels, Gauge>,
    pub ip_set_last_success: Family<IpSetLabels, Gauge<f64, AtomicU64>>,
    pub ip_set_refreshes: Family<IpSetResultLabels, Counter>,
    /// Requests that found all of an upstream's `max_connections` busy and waited.
    pub upstream_connection_waits: Family<UpstreamLabels, Counter>,
    /// Requests that waited in vain and got 503.
    pub upstream_connections_refused: Family<UpstreamLabels, Counter>,
    /// Durable delivery (issue 16).
    pub delivery: DeliveryMetrics,
    /// Redis calls that failed or missed their deadline, by operation.
    pub redis_errors: Family<RedisOpLabels, Counter>,
    /// 1 while the shared Redis answers, 0 while the gateway runs on its local state.
    pub redis_up: Gauge,
    /// Rate-limit checks decided by the local limiter because Redis failed or was down.
    pub rate_limit_fallback: Counter,
    /// The label sets created per route in the families above, so that a route a reload
    /// removes can take its series along ([`Metrics::forget_routes`]).
    route_keys: Mutex<HashMap<Arc<str>, RouteKeys>>,
    generation: AtomicU64,
}

#[derive(Default)]
struct RouteKeys {
    requests: HashSet<RequestLabels>,
    signatures: HashSet<SignatureLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts one finished request and observes its duration, through `cached` when the request
    /// is in the series cached there (filling it on first use).
    pub fn count_request(
        &self,
        cached: &OnceLock<AnswerSeries>,
        labels: RequestLabels,
        seconds: f64,
    ) {
        let generation = self.generation.load(Ordering::Acquire);
        let resolve = |labels: RequestLabels| AnswerSeries {
            requests: {
                self.remember(&labels.route, |keys| {
                    keys.requests.insert(labels.clone());
                });
                self.requests.get_or_create(&labels).clone()
            },
            generation,
            duration: self
                .request_duration
                .get_or_create(&RouteOutcomeLabels {
                    route: Arc::clone(&labels.route),
                    outcome: labels.outcome,
                })
                .clone(),
            labels,
        };
        // By value, not by pointer: a reload's routes have new names of the same text.
        let series = match cached.get() {
            Some(series) if series.labels == labels && series.generation == generation => series,
            Some(_) => &resolve(labels),
            None => cached.get_or_init(|| resolve(labels)),
        };
        series.requests.inc();
        series.duration.observe(seconds);
    }

    /// The config loaded at start: no reload, so both reload counts start at 0, but the time
    /// of the last config that took is stamped.
    pub fn config_loaded_at_start(&self) {
        for result in ["success", "error"] {
            let _ = self.config_reloads.get_or_create(&ResultLabels { result });
        }
        self.config_last_reload_success
            .set(crate::observe::unix_now());
    }

    /// Counts a reload and, when it took, stamps the time.
    pub fn count_config_reload(&self, success: bool) {
        let result = if success { "success" } else { "error" };
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if success {
            self.config_last_reload_success
                .set(crate::observe::unix_now());
        }
    }

    /// Notes a label set created for `route`.
    fn remember(&self, route: &Arc<str>, note: impl FnOnce(&mut RouteKeys)) {
        let mut keys = self
            .route_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match keys.get_mut(route) {
            Some(entry) => note(entry),
            None => note(keys.entry(Arc::clone(route)).or_default()),
        }
    }

    /// Removes every series of `routes` (routes a reload removed): request counts and
    /// durations, signature checks, rate-limit keys. A request of such a route still running
    /// on the old config when this runs may bring one back until the next reload.
    pub fn forget_routes(&self, routes: &[&str]) {
        if routes.is_empty() {
            return;
        }
        let mut keys = self
            .route_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for route in routes {
            if let Some(created) = keys.remove(*route) {
                for labels in created.requests {
                    self.requests.remove(&labels);
                    self.request_duration.remove(&RouteOutcomeLabels {
                        route: Arc::clone(&labels.route),
                        outcome: labels.outcome,
                    });
                }
                for labels in created.signatures {
                    self.signature_checks.remove(&labels);
                }
            }
            self.rate_limit_keys.remove(&RouteLabels {
                route: route.to_string(),
            });
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Records when a certificate `listener` now serves expires, in Unix seconds.
    pub fn set_cert_expiry(&self, listener: &str, sni: &str, not_after: i64) {
        self.tls_cert_not_after
            .get_or_create(&CertLabels {
                listener: listener.to_string(),
                sni: sni.to_string(),
            })
            .set(not_after);
    }

    /// Replaces the expiry series of `listener`'s file certificates with `certs`
    /// (`(sni, not_after)`); series of certificates no longer configured go.
    pub fn set_cert_expiries(&self, listener: &str, certs: &[(String, i64)]) {
        let Ok(mut series) = self.cert_series.lock() else {
            return;
        };
        let new: Vec<String> = certs.iter().map(|(sni, _)| sni.clone()).collect();
        for old in series.get(listener).into_iter().flatten() {
            if !new.contains(old) {
                self.tls_cert_not_after.remove(&CertLabels {
                    listener: listener.to_string(),
                    sni: old.clone(),
                });
            }
        }
        // Twins for one name (ECDSA and RSA) share a series: the earlier expiry, the one to
        // alert on.
        let mut earliest: HashMap<&str, i64> = HashMap::new();
        for (sni, not_after) in certs {
            let entry = earliest.entry(sni.as_str()).or_insert(*not_after);
            *entry = (*entry).min(*not_after);
        }
        for (sni, not_after) in earliest {
            self.set_cert_expiry(listener, sni, not_after);
        }
        series.insert(listener.to_string(), new);
    }

    /// Counts a finished ACME order (`ok` or `error`).
    pub fn count_acme_order(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.acme_orders
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("hookgate"),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_duration: Family::new_with_constructor(latency_histogram),
            open_connections: Family::default(),
            connections_refused: Family::default(),
            tls_handshake_failures: Family::default(),
            protocol_errors: Family::default(),
            connections_closed: Family::default(),
            tls_cert_not_after: Family::default(),
            config_reloads: Family::default(),
            acme_orders: Family::default(),
            cert_series: Default::default(),
            config_last_reload_success: Gauge::default(),
            signature_checks: Family::default(),
            rate_limit_keys: Family::default(),
            ip_set_entries: Family::default(),
            ip_set_last_success: Family::default(),
            ip_set_refreshes: Family::default(),
            upstream_connection_waits: Family::default(),
            upstream_connections_refused: Family::default(),
            delivery: DeliveryMetrics::default(),
            redis_errors: Family::default(),
            redis_up: Gauge::default(),
            rate_limit_fallback: Counter::default(),
            route_keys: Mutex::default(),
            generation: AtomicU64::new(0),
        };
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let mut m = m;
        let r = &mut m.registry;
        r.register(
            "requests",
            "Requests by listener, route, outcome and status code",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time from request head to response, by route and outcome",
            m.request_duration.clone(),
        );
        r.register(
            "upstream_duration_seconds",
            "Time the upstream took to answer, by upstream",
            m.upstream_duration.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now, by listener",
            m.open_connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once because the listener was at its connection cap",
            m.connections_refused.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "tls_cert_not_after_timestamp_seconds",
            "Unix time the certificate a TLS listener serves expires (notAfter), by listener and SNI name (empty: the default certificate); alert on it minus time()",
            m.tls_cert_not_after.clone(),
        );
        r.register(
            "protocol_errors",
            "Connections closed for an HTTP protocol violation (HTTP/2 GOAWAY: rapid resets, endless header blocks), by listener",
            m.protocol_errors.clone(),
        );
        r.register(
            "connections_closed",
            "Connections the gateway closed at a deadline or limit, by listener and reason (first_byte_timeout, idle_timeout, send_timeout, unsent_limit)",
            m.connections_closed.clone(),
        );
        r.register(
            "acme_orders",
            "ACME certificate orders by result (ok, error)",
            m.acme_orders.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads by result (success, error); the load at start is not one",
            m.config_reloads.clone(),
        );
        r.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that succeeded",
            m.config_last_reload_success.clone(),
        );
        r.register(
            "signature_checks",
            "Signature checks by route, provider, result and matching secret index",
            m.signature_checks.clone(),
        );
        r.register("rate_limit_keys", "Keys with their own rate-limit bucket, by route (\"-global\" for the gateway-wide limit)", m.rate_limit_keys.clone());
        r.register(
            "ip_set_entries",
            "Networks in each URL-fed IP set's current list",
            m.ip_set_entries.clone(),
        );
        r.register("ip_set_last_success_timestamp_seconds", "Unix time each URL-fed IP set was last fetched successfully; time() minus this is its age", m.ip_set_last_success.clone());
        r.register(
            "ip_set_refreshes",
            "IP set fetches by set and result",
            m.ip_set_refreshes.clone(),
        );
        r.register(
            "redis_errors",
            "Calls to the shared Redis that failed or missed their deadline, by operation (rate_limit, claim, delivered, release, connect)",
            m.redis_errors.clone(),
        );
        r.register(
            "redis_up",
            "1 while the shared Redis answers; 0 while rate limits and replay memory are local (no redis: configured, or Redis down)",
            m.redis_up.clone(),
        );
        r.register(
            "rate_limit_fallback",
            "Rate-limit checks decided by the local limiter because Redis failed, was slow or was down",
            m.rate_limit_fallback.clone(),
        );
        r.register(
            "upstream_connection_waits",
            "Requests that found all of an upstream's max_connections busy and waited for one, by upstream",
            m.upstream_connection_waits.clone(),
        );
        r.register(
            "upstream_connections_refused",
            "Requests answered 503 because no connection to the upstream came free in time, by upstream",
            m.upstream_connections_refused.clone(),
        );
        m.delivery.register(r);
        r.register(
            "build_info",
            "Always 1; the version label says which build runs",
            build_info,
        );
        m
    }

    /// The classic Prometheus text format (0.0.4), for scrapers that do not ask for
    /// OpenMetrics (curl, promtool, older agents). The two differ only in framing: counter
    /// families are named with their `_total` suffix, and there is no `# EOF` or `# UNIT`.
    pub fn encode_text(&self) -> String {
        let open = self.encode();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len() + 64);
        for line in open.lines() {
            if line == "# EOF" || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
                let rest = line.strip_prefix(tag)?;
                let (name, tail) = rest.split_once(' ')?;
                counters
                    .contains(name)
                    .then(|| format!("{tag}{name}_total {tail}"))
            });
            match renamed {
                Some(line) => out.push_str(&line),
                None => out.push_str(line),
            }
            out.push('\n');
        }
        out
    }

    /// The OpenMetrics exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error here would be a bug in the encoder.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(result: &'static str, secret_index: Option<usize>) -> SignatureLabels {
        SignatureLabels {
            route: Arc::from("github"),
            provider: Arc::from("github"),
            result,
            secret_index,
        }
    }

    #[test]
    fn a_connection_counts_its_first_answer_through_the_cache_and_others_by_lookup() {
        let metrics = Metrics::new();
        let request = |route: &str, outcome, code| RequestLabels {
            listener: Arc::from("public"),
            route: Arc::from(route),
            outcome,
            code,
        };
        let (first, second) = (OnceLock::new(), OnceLock::new());
        metrics.count_request(&first, request("github", "forwarded", 200), 0.002);
        metrics.count_request(&first, request("github", "signature_invalid", 401), 0.001);
        // The same route after a reload: a new name of the same text, the same series.
        metrics.count_request(&first, request("github", "forwarded", 200), 0.002);
        metrics.count_request(&second, request("github", "signature_invalid", 401), 0.001);
        metrics.count_request(&second, request("github", "forwarded", 200), 0.002);
        metrics.count_request(&second, request("github", "forwarded", 200), 0.002);
        let count = |outcome, code| {
            metrics
                .requests
                .get_or_create(&request("github", outcome, code))
                .get()
        };
        assert_eq!(count("forwarded", 200), 4);
        assert_eq!(count("signature_invalid", 401), 2);
        let text = metrics.encode();
        for line in [
            r#"hookgate_request_duration_seconds_count{route="github",outcome="forwarded"} 4"#,
            r#"hookgate_request_duration_seconds_count{route="github",outcome="signature_invalid"} 2"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn resolved_series_count_into_the_same_series_as_a_lookup_across_reloads() {
        let metrics = Metrics::new();
        // Two routes with the same name, as before and after a reload.
        let (before, after) = (RouteSeries::default(), RouteSeries::default());
        for series in [&before, &after] {
            series.count_signature_check(&metrics, Some(0), || labels("valid", Some(0)));
            series.count_signature_check(&metrics, Some(7), || labels("valid", Some(7)));
            series.count_signature_check(&metrics, None, || labels("mismatch", None));
            let upstream: Arc<str> = Arc::from("backend");
            series.upstream_duration(&metrics, &upstream).observe(0.01);
        }
        before.count_signature_check(&metrics, Some(0), || labels("valid", Some(0)));
        let count = |l: SignatureLabels| metrics.signature_checks.get_or_create(&l).get();
        assert_eq!(count(labels("valid", Some(0))), 3);
        assert_eq!(count(labels("valid", Some(7))), 2);
        assert_eq!(count(labels("mismatch", None)), 2);
        let text = metrics.encode();
        assert!(
            text.contains(r#"hookgate_upstream_duration_seconds_count{upstream="backend"} 2"#),
            "{text}"
        );
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub route: String,
    /// `pending`, `dead` or `delivered`.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub route: String,
    pub upstream: String,
    /// `delivered`, `retry`, `dead`.
    pub result: &'static str,
    /// The upstream's status, or 0 when it gave none (connect error, timeout).
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    pub upstream: String,
}

/// Durable delivery's metrics: queue depth by route and state, attempts, spool size and commit
/// time, and each upstream's circuit breaker.
#[derive(Debug)]
pub struct DeliveryMetrics {
    pub queue_events: Family<QueueLabels, Gauge>,
    pub oldest_pending_age: Family<RouteLabels, Gauge<f64, AtomicU64>>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub spool_bytes: Gauge,
    pub spool_file_bytes: Gauge,
    pub commit_duration: Histogram,
    pub commit_errors: Counter,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<BreakerLabels, Gauge>,
}

impl Default for DeliveryMetrics {
    fn default() -> Self {
        DeliveryMetrics {
            queue_events: Family::default(),
            oldest_pending_age: Family::default(),
            attempts: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            spool_bytes: Gauge::default(),
            spool_file_bytes: Gauge::default(),
            commit_duration: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ]),
            commit_errors: Counter::default(),
            breaker_state: Family::default(),
        }
    }
}

impl DeliveryMetrics {
    fn register(&self, r: &mut Registry) {
        r.register(
            "queue_events",
            "Events in the durable-delivery spool, by route and state (pending, dead, delivered)",
            self.queue_events.clone(),
        );
        r.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest pending event, by route (0 when none)",
            self.oldest_pending_age.clone(),
        );
        r.register(
            "delivery_attempts",
            "Delivery attempts by route, upstream, result (delivered, retry, dead) and status code (0: none)",
            self.attempts.clone(),
        );
        r.register(
            "delivery_duration_seconds",
            "Time a delivery attempt took, by upstream",
            self.duration.clone(),
        );
        r.register(
            "spool_bytes",
            "Bytes of events held in the spool (what spool.max_bytes limits)",
            self.spool_bytes.clone(),
        );
        r.register(
            "spool_file_bytes",
            "Size of the spool file on disk",
            self.spool_file_bytes.clone(),
        );
        r.register(
            "spool_commit_duration_seconds",
            "Time one spool commit (one fsync, shared by the changes grouped into it) took",
            self.commit_duration.clone(),
        );
        r.register(
            "spool_commit_errors",
            "Spool commits that failed; after one the gateway acknowledges no queued event until restarted",
            self.commit_errors.clone(),
        );
        r.register(
            "delivery_breaker_state",
            "Circuit breaker per upstream: 0 closed, 1 open, 2 half-open",
            self.breaker_state.clone(),
        );
    }
}
