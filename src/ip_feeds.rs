//! IP sets that live at a URL (GitHub's `/meta` `hooks`, Stripe's plain-text list): fetched at
//! start and every `refresh`, swapped in whole when a fetch succeeds, kept as they were when a
//! fetch fails or returns an empty list. A set that has never loaded matches nobody: an
//! allowlist fails closed, never open. It never blocks a request; lookups read a snapshot.
//! Fetches go through the gateway's one HTTP client (`upstream`), one kept-alive pool per set.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Method;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{UpstreamConfig, UpstreamScheme};
use crate::ipset::{cidrs_from_json, parse_cidr_list, IpTable};
use crate::observe::event;
use crate::observe::metrics::{IpSetLabels, IpSetResultLabels, Metrics};
use crate::upstream::{RequestHead, Upstream};

/// A feed list is a few KiB; 8 MiB is far beyond any real one and bounds a hostile answer.
const MAX_FEED_BYTES: usize = 8 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed fetch, try again sooner than the normal refresh, but not in a tight loop.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Where a feed comes from; two feeds with the same source are the same feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSource {
    pub url: http::Uri,
    pub json_path: Option<String>,
    pub refresh: Duration,
}

pub struct LiveIpSet {
    pub name: String,
    pub source: FeedSource,
    table: ArcSwap<IpTable>,
    loaded: AtomicBool,
    entries: Gauge,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    ok: Counter,
    failed: Counter,
    /// The feed's host as an upstream, or why its URL cannot be one.
    client: Result<Upstream, String>,
}

impl LiveIpSet {
    /// Creates the set (empty) and starts its refresh task, which ends when the set is dropped.
    /// Must be called inside the tokio runtime.
    pub fn start(name: &str, source: FeedSource, metrics: &Metrics) -> Arc<LiveIpSet> {
        let labels = IpSetLabels {
            set: name.to_string(),
        };
        let result = |result| IpSetResultLabels {
            set: name.to_string(),
            result,
        };
        // One statement per handle: a family's guard must be gone before it is asked again.
        let entries = metrics.ip_set_entries.get_or_create(&labels).clone();
        let last_success = metrics.ip_set_last_success.get_or_create(&labels).clone();
        let ok = metrics
            .ip_set_refreshes
            .get_or_create(&result("success"))
            .clone();
        let failed = metrics
            .ip_set_refreshes
            .get_or_create(&result("error"))
            .clone();
        let set = Arc::new(LiveIpSet {
            name: name.to_string(),
            table: ArcSwap::from_pointee(IpTable::empty()),
            loaded: AtomicBool::new(false),
            entries,
            last_success,
            ok,
            failed,
            client: feed_upstream(name, &source.url),
            source,
        });
        tokio::spawn(refresh_loop(Arc::downgrade(&set)));
        set
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.table.load().contains(ip)
    }

    /// Whether a first fetch has succeeded (readiness waits for it).
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    async fn refresh(&self) -> Result<usize, String> {
        let client = self.client.as_ref().map_err(Clone::clone)?;
        let text = fetch(client, &self.source.url).await?;
        let cidrs = match &self.source.json_path {
            Some(path) => cidrs_from_json(&text, path).map_err(|e| e.to_string())?,
            None => parse_cidr_list(&text).map_err(|e| e.to_string())?,
        };
        if cidrs.is_empty() {
            // A provider's list is never empty; an empty answer is an outage or a bug.
            return Err("the list is empty".into());
        }
        let count = cidrs.len();
        self.table.store(Arc::new(IpTable::new(cidrs)));
        self.loaded.store(true, Ordering::Release);
        Ok(count)
    }
}

async fn refresh_loop(set: Weak<LiveIpSet>) {
    loop {
        let Some(live) = set.upgrade() else { return };
        let wait = match live.refresh().await {
            Ok(count) => {
                live.ok.inc();
                live.entries.set(i64::try_from(count).unwrap_or(i64::MAX));
                live.last_success.set(crate::observe::unix_now());
                live.source.refresh
            }
            Err(why) => {
                live.failed.inc();
                event(
                    "warn",
                    "ip set refresh failed; keeping the last good list",
                    serde_json::json!({
                        "set": live.name, "url": live.source.url.to_string(), "error": why,
                    }),
                );
                live.source.refresh.min(RETRY_AFTER_FAILURE)
            }
        };
        drop(live);
        tokio::time::sleep(wait).await;
    }
}

/// The feed URL's host as an upstream: GET only, the answer bounded by [`MAX_FEED_BYTES`].
fn feed_upstream(name: &str, url: &http::Uri) -> Result<Upstream, String> {
    let scheme = match url.scheme_str() {
        Some("https") => UpstreamScheme::Https,
        Some("http") => UpstreamScheme::Http,
        other => return Err(format!("unsupported scheme {other:?}")),
    };
    let authority = url.authority().cloned().ok_or("the URL has no host")?;
    let config = UpstreamConfig {
        name: format!("ip_set:{name}"),
        scheme,
        authority,
        base_path: String::new(),
        timeout: FETCH_TIMEOUT,
        connect_timeout: CONNECT_TIMEOUT,
        max_response: MAX_FEED_BYTES as u64,
        max_connections: 2,
        ca: Vec::new(),
    };
    Upstream::standalone(&config).map_err(|e| e.to_string())
}

async fn fetch(client: &Upstream, url: &http::Uri) -> Result<String, String> {
    let target = url.path_and_query().map_or("/", |p| p.as_str());
    let target = if target.is_empty() { "/" } else { target };
    let head = RequestHead::new(&Method::GET, target, 0);
    let answer = client
        .send(head, &[], &Method::GET)
        .await
        .map_err(|e| format!("request failed: {} ({e})", e.reason()))?;
    let status = answer.response.status();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    String::from_utf8(answer.response.into_body().to_vec()).map_err(|_| "not UTF-8".to_string())
}
