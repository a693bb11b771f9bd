//! Loads `gateway.yaml` into a typed, validated [`Config`]. Loading reads the file and every file
//! it names (certificates, CA bundles), so a config that loads is a config that can serve. It never
//! binds a socket or starts a task, and its errors never contain a secret's value.

pub mod rate_limit;
mod raw;
pub mod secrets;
pub mod units;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ipset::{Cidr, IpTable};
use rate_limit::RateLimitSettings;

pub(crate) use validate::read_certificates;
pub use validate::{parse_and_validate, shadow_warnings, validate};

/// Largest config file we will parse: a gateway.yaml is a few KiB; a 16 MiB one is a mistake
/// or an attack, and the YAML parser's own budget guards against alias bombs inside that.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// The JSON Schema of `gateway.yaml` (`hookgate schema`, committed as `gateway.schema.json`),
/// derived from the raw config types so it cannot drift from what the loader accepts: the same
/// keys, unknown ones refused, doc comments as descriptions. It checks shapes only; meaning
/// (durations, CIDRs, names that must exist) stays with `hookgate check`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(raw::RawConfig).to_value()
}

/// A config problem, located: `gateway.yaml:12:5: routes[2].upstream: no upstream named "ordrs"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {field}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    /// Field path from the document root, e.g. `routes[2].upstream`.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config came from; relative paths inside it are resolved against its folder.
    pub source: PathBuf,
    /// The config file and every file it names (certificates, keys, CA bundles, IP set
    /// files): what a change watcher must look at.
    pub files: Vec<PathBuf>,
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<SocketAddr>,
    pub client_ip: ClientIpConfig,
    pub ip_sets: Vec<IpSetConfig>,
    pub limits: Limits,
    pub global_rate_limit: Option<RateLimitSettings>,
    pub access_log: LogTarget,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// Durable delivery: the spool, queue routes and per-upstream retry policy.
    pub delivery: DeliveryConfig,
    /// `redis:`: rate limits and replay memory shared with the other instances.
    pub redis: Option<RedisConfig>,
}

/// Everything durable delivery reads from the config (`spool:`, `admin.token`, routes'
/// `delivery: queue` and `ack_status`, `upstreams.*.delivery`), kept apart from the request
/// path's types so `delivery/` is built from this alone.
#[derive(Debug, Clone, Default)]
pub struct DeliveryConfig {
    pub spool: Option<SpoolConfig>,
    /// Queue routes by name: the status each acknowledges with.
    pub queue_routes: std::collections::HashMap<String, QueueRoute>,
    /// Every upstream's delivery policy (defaults when it has no `delivery:` block), by name.
    pub upstreams: std::collections::HashMap<String, DeliverySettings>,
    /// `admin.token`: required as `Authorization: Bearer ...` on `/queue/...` when set.
    pub admin_token: Option<AdminToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The spool's folder (its segment files and lock file are inside it).
    pub path: PathBuf,
    pub max_bytes: u64,
    /// Delivered and dead events are removed this long after their last change.
    pub retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRoute {
    /// The route's upstream, by name.
    pub upstream: String,
    pub ack_status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    pub max_attempts: u32,
    pub max_age: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub concurrency: usize,
    pub non_retryable: Vec<u16>,
    pub breaker_failure_percent: u32,
    pub breaker_window: u32,
    pub breaker_cooldown: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            max_attempts: 20,
            max_age: Duration::from_secs(72 * 3600),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            concurrency: 8,
            non_retryable: vec![400, 410, 413, 422],
            breaker_failure_percent: 50,
            breaker_window: 20,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

/// A secret that must never reach a log: `Debug` prints its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(pub String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminToken(<{} bytes>)", self.0.len())
    }
}

/// The `redis:` block. Equal blocks mean the same connection: a reload keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `redis://` or `rediss://`, `${ENV}` expanded: may hold a password, so it is never
    /// printed; [`RedisConfig::redacted_url`] is what logs and errors show.
    pub url: String,
    /// The deadline of every call to Redis; past it the request is decided locally.
    pub timeout: std::time::Duration,
    pub key_prefix: String,
    /// How many instances share the limits: while Redis is down each one admits
    /// `limit / instances` on its own. `None`: the full limit.
    pub instances: Option<std::num::NonZeroU32>,
    /// `redis.ca`: the PEM bundle trusted for `rediss://` instead of the system's roots, as
    /// read when the config was loaded (a reload that finds it changed reconnects).
    pub ca: Option<Vec<u8>>,
}

impl RedisConfig {
    /// The URL with any password replaced by `***`.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .field("instances", &self.instances)
            .field(
                "ca",
                &self.ca.as_ref().map(|pem| format!("<{} bytes>", pem.len())),
            )
            .finish()
    }
}

/// `scheme://user:secret@host/...` -> `scheme://user:***@host/...`.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(start);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{head}{user}:***{host}{tail}")
            } else {
                format!("{head}{user}{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    pub tls: Option<TlsConfig>,
    /// Expect a PROXY protocol (v1 or v2) header first; accepted from trusted proxies only.
    pub proxy_protocol: bool,
}

/// The forwarding header the trusted proxies append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

/// Who may tell us the client's address (stage 3).
#[derive(Debug, Clone, Default)]
pub struct ClientIpConfig {
    pub trusted_proxies: IpTable,
    pub header: ForwardedHeader,
}

#[derive(Debug, Clone)]
pub struct IpSetConfig {
    pub name: String,
    pub source: IpSetSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpSetSource {
    /// Inline `cidrs:` or a `file:` read at load (and re-read on every reload).
    Fixed(IpTable),
    /// Fetched at start and every `refresh`; the last good list stays when a fetch fails.
    Url {
        url: http::Uri,
        json_path: Option<String>,
        refresh: Duration,
    },
}

/// A route's `allow_ips`: literal networks plus the named sets it refers to.
#[derive(Debug, Clone)]
pub struct AllowIps {
    pub cidrs: Vec<Cidr>,
    /// Indexes into [`Config::ip_sets`].
    pub sets: Vec<usize>,
}

/// A TLS listener's certificates: files (`cert`/`key` or `certs:`), ACME, or both.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// In config order; the first is the default for clients without SNI (or with a name no
    /// certificate has). Empty only when `acme` is set.
    pub certs: Vec<TlsMaterial>,
    /// `true` for the single-certificate form `tls: { cert, key }` (its expiry series keeps an
    /// empty `sni` label).
    pub single: bool,
    pub acme: Option<AcmeConfig>,
}

/// `tls.acme`: certificates from an RFC 8555 server, proven by TLS-ALPN-01 on the listener
/// itself or by HTTP-01 on a plain listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    pub challenge: AcmeChallenge,
    pub directory: String,
    /// Lower-case DNS names, the first one names the certificate.
    pub domains: Vec<String>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    /// Account key and certificates (0700; keys 0600).
    pub cache: PathBuf,
    /// Trust roots (PEM) for the ACME server's own TLS; the public roots when absent.
    pub ca: Option<PathBuf>,
}

/// `tls.acme.challenge`: how the ACME server is shown that we control the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcmeChallenge {
    /// TLS-ALPN-01 (RFC 8737): a challenge certificate on this TLS listener (port 443).
    #[default]
    TlsAlpn01,
    /// HTTP-01 (RFC 8555 section 8.3): the plain listeners answer
    /// `/.well-known/acme-challenge/<token>` (port 80).
    Http01,
}

/// A certificate chain and its key, already read and parsed from the files the config names.
#[derive(Debug)]
pub struct TlsMaterial {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Configured `names:`, lower case; empty means the certificate's own DNS SANs.
    pub names: Vec<String>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            names: self.names.clone(),
        }
    }
}

/// Connection and request limits. Every one has a safe default, so a config without `limits:`
/// is still protected against slow or oversized clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_body: u64,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub handshake_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub drain_timeout: Duration,
    /// A connection with no open request for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// A response must be handed to the client's connection within this, or the connection is
    /// closed and the response dropped.
    pub send_timeout: Duration,
    /// Response bytes one connection may hold unsent; past it (beyond a single response) the
    /// connection is closed.
    pub max_unsent: u64,
    pub max_connections: usize,
    pub max_headers: usize,
    pub max_header_size: usize,
    pub h2_max_concurrent_streams: u32,
    /// Threads serving requests (default: one per core). Read at start; a change needs a restart.
    pub worker_threads: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(30),
            max_unsent: 4 << 20,
            max_connections: 10_000,
            max_headers: 100,
            max_header_size: 64 << 10,
            h2_max_concurrent_streams: 100,
            worker_threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
    Off,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub scheme: UpstreamScheme,
    /// `host:port` as written (the port defaulted from the scheme when absent).
    pub authority: http::uri::Authority,
    /// Path prefix from the URL (`http://svc/base` -> `/base`), empty when none.
    pub base_path: String,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_response: u64,
    /// The most connections open to this upstream at once, over all worker threads; a request
    /// that finds them all busy waits briefly for one, then gets 503.
    pub max_connections: usize,
    /// Extra trust roots for an `https://` upstream signed by a private CA.
    pub ca: Vec<CertificateDer<'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub path: PathPattern,
    pub methods: Vec<Method>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    pub upstream_path: Option<String>,
    pub max_body: u64,
    pub body_timeout: Duration,
    pub allow_ips: Option<AllowIps>,
    pub rate_limit: Option<RateLimitSettings>,
    pub verify: Option<std::sync::Arc<crate::verify::Verifier>>,
    /// Delivered event ids are remembered this long; `None` turns duplicate detection off.
    pub replay_window: Option<Duration>,
}

/// A route's path: exact (`/hooks/github`) or a prefix written with a trailing `/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    /// The part before `/*`: `/hooks/*` is `Prefix("/hooks")` and matches `/hooks` and
    /// everything under `/hooks/`, but not `/hooksmith`.
    Prefix(String),
}

impl PathPattern {
    /// Whether a request for `path` matches, as the route table decides (README "Path policy"):
    /// ASCII case does not count, and an exact path also matches with one trailing `/`.
    pub fn matches(&self, path: &str) -> bool {
        let starts = |p: &str| {
            path.as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes()))
        };
        match self {
            PathPattern::Exact(exact) => {
                starts(exact)
                    && matches!(&path.as_bytes()[exact.len()..], b"" | b"/")
                    && !(exact.ends_with('/') && path.len() > exact.len())
            }
            PathPattern::Prefix(prefix) => {
                starts(prefix)
                    && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
            }
        }
    }

    /// True when every path `other` matches is also matched by `self`.
    pub fn covers(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (_, PathPattern::Exact(b)) => {
                // `/a/` is one of the paths `/a` matches, so it covers them both.
                self.matches(b) && (b.ends_with('/') || self.matches(&format!("{b}/")))
            }
            (PathPattern::Prefix(_), PathPattern::Prefix(b)) => self.matches(b),
            (PathPattern::Exact(_), PathPattern::Prefix(_)) => false,
        }
    }

    /// The path as the route table indexes it (lowercase).
    pub fn key(&self) -> String {
        match self {
            PathPattern::Exact(p) | PathPattern::Prefix(p) => p.to_ascii_lowercase(),
        }
    }
}

/// Every prefix a `Prefix` pattern could hold and still match `path`: "" (for `/*`), then the
/// path cut before each later `/`, then the whole path. `/a/b` gives "", "/a", "/a/b".
pub fn prefix_candidates(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(i, _)| &path[..i])
        .chain(std::iter::once(path))
}

impl std::fmt::Display for PathPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathPattern::Exact(p) => f.write_str(p),
            PathPattern::Prefix(p) => write!(f, "{p}/*"),
        }
    }
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_config_text(path)?;
    let env = std::env::vars().collect();
    validate::parse_and_validate(&text, path, env)
}

fn read_config_text(path: &Path) -> Result<String, ConfigError> {
    let whole_file = |message: String| ConfigError {
        file: path.display().to_string(),
        line: 0,
        column: 0,
        field: "(file)".into(),
        message,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| whole_file(format!("cannot read: {e}")))?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(whole_file(format!(
            "file is {size} bytes; the limit is {MAX_CONFIG_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| whole_file(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|_| whole_file("file is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_itself_and_below_but_not_lookalikes() {
        let p = PathPattern::Prefix("/hooks".into());
        assert!(p.matches("/hooks"));
        assert!(p.matches("/hooks/"));
        assert!(p.matches("/hooks/a/b"));
        assert!(!p.matches("/hooksmith"));
        assert!(!p.matches("/hook"));
        let all = PathPattern::Prefix(String::new());
        assert!(all.matches("/anything"));
    }

    #[test]
    fn prefix_candidates_are_every_segment_boundary() {
        assert_eq!(
            prefix_candidates("/a/b").collect::<Vec<_>>(),
            ["", "/a", "/a/b"]
        );
        assert_eq!(prefix_candidates("/").collect::<Vec<_>>(), ["", "/"]);
        assert_eq!(prefix_candidates("").collect::<Vec<_>>(), [""]);
        // Every candidate a Prefix pattern can hold that matches the path, and no other.
        for path in ["/hooks/github/x", "/hooks", "/"] {
            for c in prefix_candidates(path) {
                assert!(
                    PathPattern::Prefix(c.to_string()).matches(path),
                    "{c} vs {path}"
                );
            }
        }
    }

    #[test]
    fn covers_knows_which_route_shadows_which() {
        let prefix = PathPattern::Prefix("/hooks".into());
        let exact = PathPattern::Exact("/hooks/github".into());
        assert!(prefix.covers(&exact));
        assert!(prefix.covers(&PathPattern::Prefix("/hooks/x".into())));
        assert!(!exact.covers(&prefix));
        assert!(!PathPattern::Prefix("/hooks/x".into()).covers(&prefix));
        assert!(exact.covers(&exact.clone()));
        assert!(!exact.covers(&PathPattern::Exact("/hooks/gitlab".into())));
        // Matching ignores ASCII case and one trailing slash after an exact path.
        assert!(exact.covers(&PathPattern::Exact("/Hooks/GitHub".into())));
        assert!(exact.covers(&PathPattern::Exact("/hooks/github/".into())));
        assert!(!PathPattern::Exact("/hooks/github/".into()).covers(&exact));
        assert!(exact.matches("/HOOKS/github/"));
        assert!(!exact.matches("/hooks/github//"));
        assert!(!exact.matches("/hooks/githu"));
        assert!(PathPattern::Prefix("/Hooks".into()).covers(&exact));
    }
}
