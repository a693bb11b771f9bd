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
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub routes: Spanned<Vec<RawRoute>>,
    /// Shared rate limits and replay memory for several instances.
    pub redis: Option<Spanned<RawRedis>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Text,
    pub timeout: Option<Text>,
    pub key_prefix: Option<Text>,
    pub instances: Option<Spanned<u64>>,
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
    pub cert: Text,
    pub key: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Text,
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
}
