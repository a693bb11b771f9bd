//! The config file exactly as written: serde structs that mirror `gateway.yaml` key for key.
//! Unknown keys are refused here, and every value that validation may complain about keeps its
//! line and column (`Spanned`). Nothing here checks meaning; that is `validate.rs`'s job.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub type Text = Spanned<String>;

/// hookgate's config file, `gateway.yaml` (README "Configuration"). Durations are written
/// `250ms`, `10s`, `5m`; sizes as bytes or `64KiB`, `1MiB`; `${NAME}` in a text value takes it
/// from the environment. Unknown keys are errors.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "hookgate gateway.yaml")]
pub struct RawConfig {
    /// Where the gateway accepts connections: one entry per address, with TLS or plain HTTP.
    #[schemars(with = "Vec<RawListener>")]
    pub listeners: Spanned<Vec<RawListener>>,
    /// The admin listener: `GET /metrics`, `/healthz`, `/readyz`. Keep it off the public network.
    pub admin: Option<RawAdmin>,
    /// Who may tell the gateway the client's address (X-Forwarded-For or Forwarded).
    pub client_ip: Option<RawClientIp>,
    /// Named CIDR lists that routes' `allow_ips` refer to: inline, from a file, or fetched from a URL.
    #[serde(default)]
    pub ip_sets: BTreeMap<String, RawIpSet>,
    /// Connection and request limits for the whole gateway; every one is optional with a safe default.
    #[serde(default)]
    pub limits: RawLimits,
    /// A limit over the whole gateway, checked before each route's own.
    pub rate_limit: Option<RawRateLimit>,
    /// `stdout` (default), `off`, or a file path: one JSON line per request.
    #[schemars(with = "Option<String>")]
    pub access_log: Option<Text>,
    /// Durable delivery's store, for routes with `delivery: queue`.
    pub spool: Option<RawSpool>,
    /// The backends routes forward to, by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Ordered routes; the first whose path matches decides (a wrong method is 405, never a later route).
    #[schemars(with = "Vec<RawRoute>")]
    pub routes: Spanned<Vec<RawRoute>>,
    /// Shared rate limits and replay memory for several instances.
    #[schemars(with = "Option<RawRedis>")]
    pub redis: Option<Spanned<RawRedis>>,
}

/// Redis shared by every instance that names the same URL and prefix.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://` or `rediss://` (rustls) URL; a password may come from `${ENV}`.
    #[schemars(with = "String")]
    pub url: Text,
    /// Deadline of every Redis call; past it the request is decided locally (default `25ms`).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
    /// Prefix of every key (default `hookgate:`).
    #[schemars(with = "Option<String>")]
    pub key_prefix: Option<Text>,
    /// Instances sharing the limits: while Redis is down each admits `limit / instances`.
    #[schemars(with = "Option<u64>")]
    pub instances: Option<Spanned<u64>>,
    /// PEM CA bundle to trust for a `rediss://` URL instead of the system's roots (a Redis
    /// with a certificate from a private CA).
    #[schemars(with = "Option<String>")]
    pub ca: Option<Text>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// The listener's name, as in logs and metrics (`listener` label).
    #[schemars(with = "String")]
    pub name: Text,
    /// Address and port, e.g. `0.0.0.0:8443` or `[::]:8443`.
    #[schemars(with = "String")]
    pub bind: Text,
    /// Certificate and key (PEM, paths relative to this file); without it the listener speaks plain HTTP.
    pub tls: Option<RawTls>,
    /// Expect a PROXY protocol (v1 or v2) header first; accepted from `client_ip.trusted_proxies` only.
    #[schemars(with = "Option<bool>")]
    pub proxy_protocol: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    /// CIDRs whose forwarding header is believed, read right to left.
    #[schemars(with = "Option<Vec<String>>")]
    pub trusted_proxies: Option<Spanned<Vec<Text>>>,
    /// `x-forwarded-for` (default) or `forwarded`.
    #[schemars(with = "Option<String>")]
    pub header: Option<Text>,
}

/// A named list of networks: inline, from a file, or fetched from a URL and refreshed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawIpSet {
    /// Networks written inline, e.g. `[192.0.2.0/24, 2001:db8::/32]`.
    #[schemars(with = "Option<Vec<String>>")]
    pub cidrs: Option<Spanned<Vec<Text>>>,
    /// A file with one CIDR a line, `#` comments (re-read on every reload).
    #[schemars(with = "Option<String>")]
    pub file: Option<Text>,
    /// A URL to fetch the list from at start and every `refresh` (the last good list stays when a fetch fails).
    #[schemars(with = "Option<String>")]
    pub url: Option<Text>,
    /// For a JSON answer: the key holding the list of CIDRs (e.g. `hooks` for GitHub's meta API).
    #[schemars(with = "Option<String>")]
    pub json_path: Option<Text>,
    /// How often a `url` list is fetched again, e.g. `1h`.
    #[schemars(with = "Option<String>")]
    pub refresh: Option<Text>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// Sustained rate in requests per second (or use `per_minute`).
    #[schemars(with = "Option<u32>")]
    pub per_second: Option<Spanned<u32>>,
    /// Sustained rate in requests per minute (or use `per_second`).
    #[schemars(with = "Option<u32>")]
    pub per_minute: Option<Spanned<u32>>,
    /// How many requests may arrive at once above the sustained rate.
    #[schemars(with = "Option<u32>")]
    pub burst: Option<Spanned<u32>>,
    /// What requests are counted by: `client_ip` (default), `route`, or `header:NAME`.
    #[schemars(with = "Option<String>")]
    pub key: Option<Text>,
    /// Most keys one limiter tracks (default 100000).
    #[schemars(with = "Option<u32>")]
    pub max_keys: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The single-certificate form, `tls: { cert, key }`: PEM certificate chain file, leaf
    /// first, relative to this file.
    #[schemars(with = "Option<String>")]
    pub cert: Option<Text>,
    /// PEM private key file of the single-certificate form; relative to this file.
    #[schemars(with = "Option<String>")]
    pub key: Option<Text>,
    /// Several certificates chosen by SNI; the first is the default.
    #[schemars(with = "Option<Vec<RawCertEntry>>")]
    pub certs: Option<Spanned<Vec<RawCertEntry>>>,
    /// Certificates from an ACME server (TLS-ALPN-01 on this listener, or HTTP-01 on a plain one).
    #[schemars(with = "Option<RawAcme>")]
    pub acme: Option<Spanned<RawAcme>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCertEntry {
    /// PEM certificate chain file, leaf first; relative to this file.
    #[schemars(with = "String")]
    pub cert: Text,
    /// PEM private key file; relative to this file.
    #[schemars(with = "String")]
    pub key: Text,
    /// Names to serve this certificate for instead of its SANs.
    #[schemars(with = "Option<Vec<String>>")]
    pub names: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// The ACME directory URL (https), e.g. Let's Encrypt's.
    #[schemars(with = "String")]
    pub directory: Text,
    /// DNS names to get the certificate for.
    #[schemars(with = "Vec<String>")]
    pub domains: Spanned<Vec<Text>>,
    /// Contacts for the account, `mailto:` URLs.
    #[schemars(with = "Option<Vec<String>>")]
    pub contact: Option<Spanned<Vec<Text>>>,
    /// Directory for the account key and certificates (created 0700); relative to this file.
    #[schemars(with = "String")]
    pub cache: Text,
    /// Trust roots (PEM) for a private or test ACME server.
    #[schemars(with = "Option<String>")]
    pub ca: Option<Text>,
    /// How the domains are proven: `tls-alpn-01` (default; on this listener, which port 443
    /// must reach) or `http-01` (the plain listeners answer `/.well-known/acme-challenge/`;
    /// needs a plain listener, which port 80 must reach).
    #[schemars(with = "Option<String>")]
    pub challenge: Option<Text>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address and port of the admin listener, e.g. `127.0.0.1:9090`.
    #[schemars(with = "String")]
    pub bind: Text,
    /// Bearer token the admin listener asks of requests that read or change the queue.
    #[schemars(with = "Option<String>")]
    pub token: Option<Text>,
}

/// Durable delivery's store (routes with `delivery: queue`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    /// Directory of the spool file, relative to this file; created 0700.
    #[schemars(with = "String")]
    pub path: Text,
    /// Largest spool; past it intake answers 503 with Retry-After (default `1GiB`).
    #[schemars(with = "Option<RawSize>")]
    pub max_bytes: Option<Spanned<RawSize>>,
    /// How long delivered and dead events are kept (default `7d`).
    #[schemars(with = "Option<String>")]
    pub retention: Option<Text>,
}

/// `upstreams.NAME.delivery`: how queued events are delivered to this upstream.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawDelivery {
    /// Attempts before an event is dead.
    #[schemars(with = "Option<u64>")]
    pub max_attempts: Option<Spanned<u64>>,
    /// Age after which an undelivered event is dead, e.g. `72h`.
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Text>,
    /// Capped exponential backoff between attempts.
    pub backoff: Option<RawBackoff>,
    /// Attempts in flight to this upstream at once.
    #[schemars(with = "Option<u64>")]
    pub concurrency: Option<Spanned<u64>>,
    /// Statuses that make an event dead at once (default 400, 410, 413, 422).
    #[schemars(with = "Option<Vec<u16>>")]
    pub non_retryable: Option<Spanned<Vec<u16>>>,
    /// Circuit breaker: open after this share of failed attempts (0-100) over `breaker_window`.
    #[schemars(with = "Option<u64>")]
    pub breaker_failure_percent: Option<Spanned<u64>>,
    /// The most recent attempts the breaker judges (it needs at least half of them).
    #[schemars(with = "Option<u64>")]
    pub breaker_window: Option<Spanned<u64>>,
    /// How long an open breaker waits before one probe attempt.
    #[schemars(with = "Option<String>")]
    pub breaker_cooldown: Option<Text>,
}

/// Backoff bounds, e.g. `{ initial: 5s, max: 1h }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    /// Wait before the first retry.
    #[schemars(with = "Option<String>")]
    pub initial: Option<Text>,
    /// Longest wait between attempts.
    #[schemars(with = "Option<String>")]
    pub max: Option<Text>,
}

/// A size may be written as a number of bytes or as text with a unit.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RawSize {
    /// A number of bytes, e.g. `65536`.
    Bytes(u64),
    /// A number with a unit (`B`, `KiB`, `MiB`, `GiB`), e.g. `64KiB`.
    Text(String),
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body (413 above it); default `1MiB`. Per-route override: `max_body`.
    #[schemars(with = "Option<RawSize>")]
    pub max_body: Option<Spanned<RawSize>>,
    /// Deadline for the request head (and a new connection's first byte); default `10s`.
    #[schemars(with = "Option<String>")]
    pub header_timeout: Option<Text>,
    /// Deadline for the request body (408 when slower); default `30s`.
    #[schemars(with = "Option<String>")]
    pub body_timeout: Option<Text>,
    /// TLS handshake deadline; default `10s`.
    #[schemars(with = "Option<String>")]
    pub handshake_timeout: Option<Text>,
    /// HTTP/2 keep-alive ping interval and timeout basis; default `60s`.
    #[schemars(with = "Option<String>")]
    pub keep_alive_timeout: Option<Text>,
    /// How long SIGTERM waits for in-flight requests; default `30s`.
    #[schemars(with = "Option<String>")]
    pub drain_timeout: Option<Text>,
    /// A connection with no open request for this long is closed; default `60s`.
    #[schemars(with = "Option<String>")]
    pub idle_timeout: Option<Text>,
    /// A ready response the client does not take within this is dropped; default `30s`.
    #[schemars(with = "Option<String>")]
    pub send_timeout: Option<Text>,
    /// Response bytes one connection may hold unsent; default `4MiB`.
    #[schemars(with = "Option<RawSize>")]
    pub max_unsent: Option<Spanned<RawSize>>,
    /// Open client connections per listener; connections beyond it are closed at once. Default 10000.
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<Spanned<u64>>,
    /// Most header lines (fields) in a request head (431 above it); default 100.
    #[schemars(with = "Option<u64>")]
    pub max_headers: Option<Spanned<u64>>,
    /// Largest request head (431 above it); default `64KiB`.
    #[schemars(with = "Option<RawSize>")]
    pub max_header_size: Option<Spanned<RawSize>>,
    /// HTTP/2 streams one connection may have open at once; default 100.
    #[schemars(with = "Option<u64>")]
    pub h2_max_concurrent_streams: Option<Spanned<u64>>,
    /// Request worker threads; default one per core (restart to change).
    #[schemars(with = "Option<u64>")]
    pub worker_threads: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL of the backend, `http://` or `https://`; a path here is a prefix for every request.
    #[schemars(with = "String")]
    pub url: Text,
    /// Deadline for the whole answer, connecting included (504 when exceeded).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
    /// Deadline for the TCP connection and TLS session (502 `connect_timeout`).
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Text>,
    /// PEM CA bundle to trust for an `https` upstream instead of the public roots.
    #[schemars(with = "Option<String>")]
    pub ca: Option<Text>,
    /// Largest answer read from the upstream (502 `response_too_large` above it).
    #[schemars(with = "Option<RawSize>")]
    pub max_response: Option<Spanned<RawSize>>,
    /// Open connections to this upstream, over all worker threads.
    #[schemars(with = "Option<u64>")]
    pub max_connections: Option<Spanned<u64>>,
    /// How queued events are delivered to this upstream (routes with `delivery: queue`).
    pub delivery: Option<RawDelivery>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// The route's name, as in logs and metrics (`route` label).
    #[schemars(with = "String")]
    pub name: Text,
    /// Exact path, or a prefix ending in `/*`.
    #[schemars(with = "String")]
    pub path: Text,
    /// Allowed methods (405 with `Allow` for others); default `[POST]`.
    #[schemars(with = "Option<Vec<String>>")]
    pub methods: Option<Spanned<Vec<String>>>,
    /// Name of the upstream (in `upstreams`) to forward to.
    #[schemars(with = "String")]
    pub upstream: Text,
    /// Path sent to the upstream instead of the request's (the query string is kept).
    #[schemars(with = "Option<String>")]
    pub upstream_path: Option<Text>,
    /// This route's body limit, instead of `limits.max_body`.
    #[schemars(with = "Option<RawSize>")]
    pub max_body: Option<Spanned<RawSize>>,
    /// This route's body deadline, instead of `limits.body_timeout`.
    #[schemars(with = "Option<String>")]
    pub body_timeout: Option<Text>,
    /// CIDRs and `ip_sets` names allowed to call this route (403 for others); default: anyone.
    #[schemars(with = "Option<Vec<String>>")]
    pub allow_ips: Option<Spanned<Vec<Text>>>,
    /// Rate limit for this route (429 with Retry-After above it).
    pub rate_limit: Option<RawRateLimit>,
    /// Signature verification: a provider preset (`github`, `stripe`, ...) or the generic `hmac`, `token`, `basic-auth`.
    #[schemars(with = "Option<crate::verify::RawVerify>")]
    pub verify: Option<Spanned<crate::verify::RawVerify>>,
    /// How long a delivered event id is remembered (`24h` default, `off` to disable).
    #[schemars(with = "Option<String>")]
    pub replay_window: Option<Text>,
    /// `direct` (default) or `queue`: answered once durable in the spool, delivered with retries.
    #[schemars(with = "Option<String>")]
    pub delivery: Option<Text>,
    /// The status a queued event is acknowledged with (default 200).
    #[schemars(with = "Option<u16>")]
    pub ack_status: Option<Spanned<u16>>,
}
