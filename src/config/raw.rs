//! The config file exactly as written: serde structs that mirror `gateway.yaml` key for key.
//! Unknown keys are refused here, and every value that validation may complain about keeps its
//! line and column (`Spanned`). Nothing here checks meaning; that is `validate.rs`'s job.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listeners: Spanned<Vec<RawListener>>,
    pub admin: Option<RawAdmin>,
    pub client_ip: Option<RawClientIp>,
    #[serde(default)]
    pub ip_sets: BTreeMap<String, RawIpSet>,
    #[serde(default)]
    pub limits: RawLimits,
    /// A limit over the whole gateway, checked before each route's own.
    pub rate_limit: Option<RawRateLimit>,
    pub access_log: Option<Text>,
    /// Durable delivery's store, for routes with `delivery: queue`.
    pub spool: Option<RawSpool>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub routes: Spanned<Vec<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: Text,
    pub bind: Text,
    pub tls: Option<RawTls>,
    pub proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    pub trusted_proxies: Option<Spanned<Vec<Text>>>,
    /// `x-forwarded-for` (default) or `forwarded`.
    pub header: Option<Text>,
}

/// A named list of networks: inline, from a file, or fetched from a URL and refreshed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpSet {
    pub cidrs: Option<Spanned<Vec<Text>>>,
    pub file: Option<Text>,
    pub url: Option<Text>,
    pub json_path: Option<Text>,
    pub refresh: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub per_second: Option<Spanned<u32>>,
    pub per_minute: Option<Spanned<u32>>,
    pub burst: Option<Spanned<u32>>,
    pub key: Option<Text>,
    pub max_keys: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The single-certificate form, `tls: { cert, key }`.
    pub cert: Option<Text>,
    pub key: Option<Text>,
    /// Several certificates chosen by SNI; the first is the default.
    pub certs: Option<Spanned<Vec<RawCertEntry>>>,
    pub acme: Option<Spanned<RawAcme>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertEntry {
    pub cert: Text,
    pub key: Text,
    /// Names to serve this certificate for instead of its SANs.
    pub names: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: Text,
    pub domains: Spanned<Vec<Text>>,
    pub contact: Option<Spanned<Vec<Text>>>,
    pub cache: Text,
    pub ca: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Text,
    /// Bearer token the admin listener asks of requests that read or change the queue.
    pub token: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub path: Text,
    pub max_bytes: Option<Spanned<RawSize>>,
    pub retention: Option<Text>,
}

/// `upstreams.NAME.delivery`: how queued events are delivered to this upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    pub max_attempts: Option<Spanned<u64>>,
    pub max_age: Option<Text>,
    pub backoff: Option<RawBackoff>,
    pub concurrency: Option<Spanned<u64>>,
    pub non_retryable: Option<Spanned<Vec<u16>>>,
    /// Circuit breaker: open after this share of failed attempts (0-100) over `breaker_window`.
    pub breaker_failure_percent: Option<Spanned<u64>>,
    /// The most recent attempts the breaker judges (it needs at least half of them).
    pub breaker_window: Option<Spanned<u64>>,
    /// How long an open breaker waits before one probe attempt.
    pub breaker_cooldown: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub initial: Option<Text>,
    pub max: Option<Text>,
}

/// A size may be written as a number of bytes or as text with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body: Option<Spanned<RawSize>>,
    pub header_timeout: Option<Text>,
    pub body_timeout: Option<Text>,
    pub handshake_timeout: Option<Text>,
    pub keep_alive_timeout: Option<Text>,
    pub drain_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub send_timeout: Option<Text>,
    pub max_unsent: Option<Spanned<RawSize>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_headers: Option<Spanned<u64>>,
    pub max_header_size: Option<Spanned<RawSize>>,
    pub h2_max_concurrent_streams: Option<Spanned<u64>>,
    pub worker_threads: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Text,
    pub timeout: Option<Text>,
    pub connect_timeout: Option<Text>,
    pub ca: Option<Text>,
    pub max_response: Option<Spanned<RawSize>>,
    /// Open connections to this upstream, over all worker threads.
    pub max_connections: Option<Spanned<u64>>,
    pub delivery: Option<RawDelivery>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Text,
    pub path: Text,
    pub methods: Option<Spanned<Vec<String>>>,
    pub upstream: Text,
    pub upstream_path: Option<Text>,
    pub max_body: Option<Spanned<RawSize>>,
    pub body_timeout: Option<Text>,
    pub allow_ips: Option<Spanned<Vec<Text>>>,
    pub rate_limit: Option<RawRateLimit>,
    pub verify: Option<Spanned<crate::verify::RawVerify>>,
    /// How long a delivered event id is remembered (`24h` default, `off` to disable).
    pub replay_window: Option<Text>,
    /// `direct` (default) or `queue`.
    pub delivery: Option<Text>,
    /// The status a queued event is acknowledged with (default 200).
    pub ack_status: Option<Spanned<u16>>,
}
