//! Turns the raw, as-written config into the typed [`Config`]: units parsed, names resolved,
//! files read, and every mistake reported with file, line, column and field path. It never
//! prints a value that came from the environment, since those are where secrets live.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_saphyr::{Location, Spanned};

mod acme;
mod delivery;

use super::rate_limit::{LimitKey, Rate, RateLimitSettings};
use super::raw::{
    RawAcme, RawClientIp, RawConfig, RawIpSet, RawLimits, RawRateLimit, RawRoute, RawSize, RawTls,
    RawUpstream, Text,
};
use super::secrets::{expand_env, referenced_names, scrub};
use super::units::{parse_duration, parse_size};
use super::ForwardedHeader;
use super::{
    AcmeConfig, AllowIps, ClientIpConfig, Config, ConfigError, IpSetConfig, IpSetSource, Limits,
    ListenerConfig, LogTarget, PathPattern, RouteConfig, TlsConfig, TlsMaterial, UpstreamConfig,
    UpstreamScheme,
};
use crate::ipset::{parse_cidr, parse_cidr_list, Cidr, IpTable};

/// Parses YAML text and validates it. `env` supplies `${NAME}` values (tests pass their own).
pub fn parse_and_validate(
    text: &str,
    source: &Path,
    env: HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    options.budget = Some(yaml_budget());
    let yaml_error = |field: String, e: &serde_saphyr::Error| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigError {
            file: source.display().to_string(),
            line,
            column,
            field,
            message: budget_message(&e.to_string())
                .unwrap_or_else(|| strip_location(&e.to_string())),
        }
    };
    // serde_path_to_error adds the field path (`routes[2].methods`) that serde errors lack.
    let mut failed_at: Option<String> = None;
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize::<_, RawConfig>(de).map_err(|e| {
            failed_at = Some(e.path().to_string());
            e.into_inner()
        })
    });
    let raw = parsed.map_err(|e| {
        // `Spanned` fields appear as `.value` in the path; the user wrote no such key.
        let field = failed_at
            .map(|p| p.replace(".value", ""))
            .filter(|p| !p.is_empty() && p != ".")
            .unwrap_or_else(|| "(document)".into());
        yaml_error(field, &e)
    })?;
    validate(raw, source, &env)
}

/// The YAML parser's limits. Its default node budget (250 000) stopped configs of about 16 000
/// routes; these let a config as large as the 16 MiB file cap allows for real configs (some
/// 100 000 routes) load, and still stop alias bombs, which the anchor and alias limits catch.
const YAML_MAX_NODES: usize = 4_000_000;
const YAML_MAX_EVENTS: usize = 8_000_000;

fn yaml_budget() -> serde_saphyr::budget::Budget {
    let mut budget = serde_saphyr::budget::Budget::default();
    budget.max_nodes = YAML_MAX_NODES;
    budget.max_events = YAML_MAX_EVENTS;
    budget
}

/// A breached parser budget, said in the config's terms ("budget breached: Nodes { .. }" tells
/// an operator nothing).
fn budget_message(message: &str) -> Option<String> {
    if !message.contains("budget breached") {
        return None;
    }
    let what = message
        .split("budget breached: ")
        .nth(1)
        .and_then(|rest| rest.split([' ', '{']).next())
        .unwrap_or("a limit");
    Some(format!(
        "the YAML is larger than hookgate parses ({what} over its limit: {YAML_MAX_NODES} nodes, \
         {YAML_MAX_EVENTS} events, 50 000 anchors or aliases); use fewer anchors and aliases, \
         or split the routes over several gateways"
    ))
}

/// serde-saphyr's messages end with their own "at line L, column C"; we print ours up front.
fn strip_location(message: &str) -> String {
    let first = message.lines().next().unwrap_or("").trim();
    match first.rfind(" at line ") {
        Some(at) => first[..at].to_string(),
        None => first.to_string(),
    }
}

/// Carries what every error needs: the file name and the environment.
struct Ctx<'a> {
    file: String,
    dir: PathBuf,
    env: &'a HashMap<String, String>,
    /// Every file the config names (the access log aside), for the reload watcher.
    files: std::cell::RefCell<Vec<PathBuf>>,
    /// `(NAME, value)` of every environment variable expanded so far; errors scrub the values.
    expanded: std::cell::RefCell<Vec<(String, String)>>,
}

impl Ctx<'_> {
    fn err(
        &self,
        at: &Location,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: at.line(),
            column: at.column(),
            field: field.into(),
            message: scrub(&message.into(), &self.expanded.borrow()),
        }
    }

    /// The value of a text field with `${NAME}` expanded.
    fn text(&self, value: &Text, field: &str) -> Result<String, ConfigError> {
        self.expand(&value.value)
            .map_err(|m| self.err(&value.referenced, field, m))
    }

    /// `${NAME}` expansion that remembers what it put in, so errors can take it out again.
    fn expand(&self, text: &str) -> Result<String, String> {
        let expanded = expand_env(text, self.env)?;
        let mut seen = self.expanded.borrow_mut();
        for name in referenced_names(text) {
            if let Some(value) = self.env.get(name) {
                seen.push((name.to_string(), value.clone()));
            }
        }
        Ok(expanded)
    }

    fn duration(
        &self,
        value: &Option<Text>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let text = self.text(value, field)?;
        let duration = parse_duration(&text).map_err(|m| self.err(&value.referenced, field, m))?;
        if duration.is_zero() {
            return Err(self.err(&value.referenced, field, "must be greater than zero"));
        }
        Ok(duration)
    }

    fn size(
        &self,
        value: &Option<Spanned<RawSize>>,
        field: &str,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let size = match &value.value {
            RawSize::Bytes(n) => *n,
            RawSize::Text(text) => {
                let text = self
                    .expand(text)
                    .map_err(|m| self.err(&value.referenced, field, m))?;
                parse_size(&text).map_err(|m| self.err(&value.referenced, field, m))?
            }
        };
        if size == 0 {
            return Err(self.err(&value.referenced, field, "must be greater than zero"));
        }
        Ok(size)
    }

    fn count(
        &self,
        value: &Option<Spanned<u64>>,
        field: &str,
        default: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if value.value == 0 || value.value > max {
            return Err(self.err(
                &value.referenced,
                field,
                format!("must be between 1 and {max}"),
            ));
        }
        Ok(value.value)
    }

    /// A path from the config, resolved against the config file's folder.
    fn path(&self, value: &Text, field: &str) -> Result<PathBuf, ConfigError> {
        let text = self.text(value, field)?;
        if text.is_empty() {
            return Err(self.err(&value.referenced, field, "must not be empty"));
        }
        let path = self.dir.join(text);
        self.files.borrow_mut().push(path.clone());
        Ok(path)
    }
}

pub fn validate(
    raw: RawConfig,
    source: &Path,
    env: &HashMap<String, String>,
) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        file: source.display().to_string(),
        dir: source.parent().map(Path::to_path_buf).unwrap_or_default(),
        env,
        files: Default::default(),
        expanded: Default::default(),
    };

    let limits = limits(&ctx, &raw.limits)?;

    if raw.listeners.value.is_empty() {
        return Err(ctx.err(
            &raw.listeners.referenced,
            "listeners",
            "at least one listener is needed",
        ));
    }
    let mut listeners = Vec::new();
    let mut listener_names = HashSet::new();
    for (i, l) in raw.listeners.value.iter().enumerate() {
        let field = format!("listeners[{i}]");
        let name = ctx.text(&l.name, &format!("{field}.name"))?;
        if !is_name(&name) {
            return Err(ctx.err(&l.name.referenced, format!("{field}.name"), NAME_RULE));
        }
        if !listener_names.insert(name.clone()) {
            return Err(ctx.err(
                &l.name.referenced,
                format!("{field}.name"),
                format!("duplicate listener name {name:?}"),
            ));
        }
        let bind = socket_addr(&ctx, &l.bind, &format!("{field}.bind"))?;
        let tls = match &l.tls {
            None => None,
            Some(tls) => Some(tls_config(&ctx, tls, &l.name, &format!("{field}.tls"))?),
        };
        let proxy_protocol = l.proxy_protocol.as_ref().is_some_and(|p| p.value);
        listeners.push(ListenerConfig {
            name,
            bind,
            tls,
            proxy_protocol,
        });
    }
    acme::check_http01_listener(&ctx, &raw, &listeners)?;

    let admin = match &raw.admin {
        None => None,
        Some(admin) => Some(socket_addr(&ctx, &admin.bind, "admin.bind")?),
    };

    let access_log = match &raw.access_log {
        None => LogTarget::Stdout,
        Some(value) => match ctx.text(value, "access_log")?.as_str() {
            "stdout" | "-" => LogTarget::Stdout,
            "off" => LogTarget::Off,
            _ => LogTarget::File(ctx.path(value, "access_log")?),
        },
    };

    let client_ip = client_ip(&ctx, raw.client_ip.as_ref())?;
    if let Some(l) = raw
        .listeners
        .value
        .iter()
        .enumerate()
        .find(|(_, l)| l.proxy_protocol.as_ref().is_some_and(|p| p.value))
    {
        if client_ip.trusted_proxies.is_empty() {
            let at =
                l.1.proxy_protocol
                    .as_ref()
                    .map(|p| p.referenced)
                    .unwrap_or(l.1.name.referenced);
            return Err(ctx.err(
                &at,
                format!("listeners[{}].proxy_protocol", l.0),
                "needs client_ip.trusted_proxies: PROXY headers are believed only from them",
            ));
        }
    }
    let mut ip_sets = Vec::new();
    for (name, set) in &raw.ip_sets {
        ip_sets.push(ip_set(&ctx, name, set)?);
    }
    let global_rate_limit = match &raw.rate_limit {
        None => None,
        Some(r) => Some(rate_limit(&ctx, r, "rate_limit")?),
    };

    let mut upstreams = Vec::new();
    for (name, up) in &raw.upstreams {
        upstreams.push(upstream(&ctx, name, up)?);
    }

    let mut routes: Vec<RouteConfig> = Vec::new();
    // Earlier routes by exact path and by prefix, so the shadowing check is not O(n²).
    let mut exact_index: HashMap<String, Vec<usize>> = HashMap::new();
    let mut prefix_index: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in raw.routes.value.iter().enumerate() {
        let route = route(&ctx, i, r, &upstreams, &ip_sets, &limits)?;
        if let Some(earlier) = routes.iter().find(|e| e.name == route.name) {
            return Err(ctx.err(
                &r.name.referenced,
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", earlier.name),
            ));
        }
        if let Some(earlier) = shadowing(&routes, &exact_index, &prefix_index, &route) {
            let earlier = &routes[earlier];
            return Err(ctx.err(
                &r.path.referenced,
                format!("routes[{i}].path"),
                format!(
                    "route {:?} can never match: the earlier route {:?} ({}) takes all of its paths \
                     (routes match by path first; a method it lacks gets 405 there)",
                    route.name, earlier.name, earlier.path
                ),
            ));
        }
        match &route.path {
            PathPattern::Exact(_) => exact_index
                .entry(route.path.key())
                .or_default()
                .push(routes.len()),
            PathPattern::Prefix(_) => prefix_index
                .entry(route.path.key())
                .or_default()
                .push(routes.len()),
        }
        routes.push(route);
    }
    if routes.is_empty() {
        return Err(ctx.err(
            &raw.routes.referenced,
            "routes",
            "at least one route is needed",
        ));
    }

    let delivery = delivery::delivery(&ctx, &raw)?;
    let redis = match &raw.redis {
        None => None,
        Some(r) => Some(redis(&ctx, &r.value)?),
    };

    let mut files = ctx.files.take();
    if let LogTarget::File(log) = &access_log {
        files.retain(|f| f != log);
    }
    files.push(source.to_path_buf());
    Ok(Config {
        files,
        source: source.to_path_buf(),
        listeners,
        admin,
        client_ip,
        ip_sets,
        limits,
        global_rate_limit,
        access_log,
        upstreams,
        routes,
        delivery,
        redis,
    })
}

/// The `redis:` block: a URL redis-rs can parse with a `redis://` or `rediss://` scheme, a
/// deadline, a key prefix, for `rediss://` optionally the CA to trust (read and parsed here). Nothing connects here (`hookgate check` runs without Redis).
fn redis(ctx: &Ctx, raw: &super::raw::RawRedis) -> Result<super::RedisConfig, ConfigError> {
    let url = ctx.text(&raw.url, "redis.url")?;
    let redacted = super::redact_url(&url);
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(ctx.err(
            &raw.url.referenced,
            "redis.url",
            format!("{redacted:?}: expected a redis:// or rediss:// URL"),
        ));
    }
    if redis::Client::open(url.as_str()).is_err() {
        return Err(ctx.err(
            &raw.url.referenced,
            "redis.url",
            format!("{redacted:?} is not a valid Redis URL"),
        ));
    }
    let timeout = ctx.duration(&raw.timeout, "redis.timeout", Duration::from_millis(25))?;
    if timeout > Duration::from_secs(10) {
        if let Some(t) = &raw.timeout {
            return Err(ctx.err(
                &t.referenced,
                "redis.timeout",
                "at most 10s: every rate-limited request may wait this long",
            ));
        }
    }
    let key_prefix = match &raw.key_prefix {
        None => "hookgate:".to_string(),
        Some(p) => ctx.text(p, "redis.key_prefix")?,
    };
    let instances = match &raw.instances {
        None => None,
        Some(_) => {
            let n = ctx.count(&raw.instances, "redis.instances", 1, 10_000)?;
            std::num::NonZeroU32::new(u32::try_from(n).unwrap_or(1))
        }
    };
    let ca = match &raw.ca {
        None => None,
        Some(ca) => {
            if !url.starts_with("rediss://") {
                return Err(ctx.err(
                    &ca.referenced,
                    "redis.ca",
                    format!("only for a rediss:// URL; {redacted:?} does not use TLS"),
                ));
            }
            let path = ctx.path(ca, "redis.ca")?;
            read_certificates(&path).map_err(|m| ctx.err(&ca.referenced, "redis.ca", m))?;
            let pem = std::fs::read(&path).map_err(|e| {
                ctx.err(
                    &ca.referenced,
                    "redis.ca",
                    format!("{}: {e}", path.display()),
                )
            })?;
            let usable = redis::Client::build_with_tls(
                url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            );
            if usable.is_err() {
                return Err(ctx.err(
                    &ca.referenced,
                    "redis.ca",
                    format!("{}: not usable as a trust anchor", path.display()),
                ));
            }
            Some(pem)
        }
    };
    Ok(super::RedisConfig {
        url,
        timeout,
        key_prefix,
        instances,
        ca,
    })
}

/// The first earlier route that takes every request `route` could match, if any. Routes match
/// by path first, so the earlier route's methods do not matter: a method it lacks is 405 there.
fn shadowing(
    routes: &[RouteConfig],
    exact: &HashMap<String, Vec<usize>>,
    prefix: &HashMap<String, Vec<usize>>,
    route: &RouteConfig,
) -> Option<usize> {
    let key = route.path.key();
    let exact_hits = match &route.path {
        PathPattern::Exact(_) => {
            let trimmed = key.strip_suffix('/').filter(|k| !k.is_empty());
            [exact.get(&key), trimmed.and_then(|t| exact.get(t))]
        }
        PathPattern::Prefix(_) => [None, None],
    };
    let prefix_hits = super::prefix_candidates(&key).filter_map(|c| prefix.get(c));
    exact_hits
        .into_iter()
        .flatten()
        .chain(prefix_hits)
        .flatten()
        .copied()
        .filter(|&i| routes[i].path.covers(&route.path))
        .min()
}

/// Routes that lose some of their paths to an earlier route with other methods: a request
/// there for a method only the later route allows gets 405, as routes match by path first.
/// Not an error (the later route still serves its other paths); `hookgate check` prints them.
pub fn shadow_warnings(config: &Config) -> Vec<String> {
    let mut prefix: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in config.routes.iter().enumerate() {
        if let PathPattern::Prefix(_) = r.path {
            prefix.entry(r.path.key()).or_default().push(i);
        }
    }
    let mut warnings = Vec::new();
    for (i, earlier) in config.routes.iter().enumerate() {
        let key = earlier.path.key();
        let later = super::prefix_candidates(&key)
            .filter_map(|c| prefix.get(c))
            .flatten()
            .copied()
            .filter(|&j| j > i);
        for j in later {
            let wider = &config.routes[j];
            let lost: Vec<&str> = wider
                .methods
                .iter()
                .filter(|m| !earlier.methods.contains(m))
                .map(Method::as_str)
                .collect();
            if lost.is_empty() {
                continue;
            }
            warnings.push(format!(
                "routes[{j}] {:?} ({}) does not serve {} {}: the earlier route {:?} takes that path \
                 and answers {} with 405",
                wider.name,
                wider.path,
                lost.join(", "),
                earlier.path,
                earlier.name,
                lost.join(", "),
            ));
        }
    }
    warnings
}

/// Open connections to one upstream, over all worker threads, when `max_connections` is unset.
const DEFAULT_UPSTREAM_CONNECTIONS: u64 = 256;

const NAME_RULE: &str = "names are 1-64 characters of a-z, A-Z, 0-9, '_' and '-'";

/// Names end up in metric labels and log fields, so they stay short and plain.
fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn limits(ctx: &Ctx, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        max_body: ctx.size(&raw.max_body, "limits.max_body", d.max_body)?,
        header_timeout: ctx.duration(
            &raw.header_timeout,
            "limits.header_timeout",
            d.header_timeout,
        )?,
        body_timeout: ctx.duration(&raw.body_timeout, "limits.body_timeout", d.body_timeout)?,
        handshake_timeout: ctx.duration(
            &raw.handshake_timeout,
            "limits.handshake_timeout",
            d.handshake_timeout,
        )?,
        keep_alive_timeout: ctx.duration(
            &raw.keep_alive_timeout,
            "limits.keep_alive_timeout",
            d.keep_alive_timeout,
        )?,
        drain_timeout: ctx.duration(&raw.drain_timeout, "limits.drain_timeout", d.drain_timeout)?,
        idle_timeout: ctx.duration(&raw.idle_timeout, "limits.idle_timeout", d.idle_timeout)?,
        send_timeout: ctx.duration(&raw.send_timeout, "limits.send_timeout", d.send_timeout)?,
        max_unsent: {
            let size = ctx.size(&raw.max_unsent, "limits.max_unsent", d.max_unsent)?;
            match &raw.max_unsent {
                Some(value) if size < (16 << 10) => {
                    return Err(ctx.err(
                        &value.referenced,
                        "limits.max_unsent",
                        "must be at least 16KiB",
                    ));
                }
                _ => size,
            }
        },
        max_connections: ctx.count(
            &raw.max_connections,
            "limits.max_connections",
            d.max_connections as u64,
            1_000_000,
        )? as usize,
        max_headers: ctx.count(
            &raw.max_headers,
            "limits.max_headers",
            d.max_headers as u64,
            1_000,
        )? as usize,
        max_header_size: {
            let size = ctx.size(
                &raw.max_header_size,
                "limits.max_header_size",
                d.max_header_size as u64,
            )?;
            // hyper's read buffer cannot be smaller than 8 KiB; 1 MiB of headers is abuse.
            match &raw.max_header_size {
                Some(value) if !(8192..=(1 << 20)).contains(&size) => {
                    return Err(ctx.err(
                        &value.referenced,
                        "limits.max_header_size",
                        "must be between 8KiB and 1MiB",
                    ));
                }
                _ => size as usize,
            }
        },
        h2_max_concurrent_streams: ctx.count(
            &raw.h2_max_concurrent_streams,
            "limits.h2_max_concurrent_streams",
            d.h2_max_concurrent_streams as u64,
            10_000,
        )? as u32,
        worker_threads: ctx.count(
            &raw.worker_threads,
            "limits.worker_threads",
            d.worker_threads as u64,
            1024,
        )? as usize,
    })
}

fn socket_addr(ctx: &Ctx, value: &Text, field: &str) -> Result<SocketAddr, ConfigError> {
    let text = ctx.text(value, field)?;
    text.parse().map_err(|_| {
        ctx.err(
            &value.referenced,
            field,
            format!("{text:?} is not an address:port such as 0.0.0.0:8443 or [::]:8443"),
        )
    })
}

fn tls_material(
    ctx: &Ctx,
    cert: &Text,
    key: &Text,
    field: &str,
) -> Result<TlsMaterial, ConfigError> {
    let cert_field = format!("{field}.cert");
    let key_field = format!("{field}.key");
    let cert_path = ctx.path(cert, &cert_field)?;
    let key_path = ctx.path(key, &key_field)?;
    let chain =
        read_certificates(&cert_path).map_err(|m| ctx.err(&cert.referenced, &cert_field, m))?;
    let key_der = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        ctx.err(
            &key.referenced,
            &key_field,
            format!(
                "{}: no usable private key ({})",
                key_path.display(),
                pem_error(&e)
            ),
        )
    })?;
    Ok(TlsMaterial {
        cert_path,
        key_path,
        chain,
        key: key_der,
        names: Vec::new(),
    })
}

/// `tls:` is `{ cert, key }`, `{ certs: [...] }`, `{ acme: {...} }` or `certs` with `acme`.
fn tls_config(
    ctx: &Ctx,
    raw: &RawTls,
    listener: &Text,
    field: &str,
) -> Result<TlsConfig, ConfigError> {
    let mut certs = Vec::new();
    let mut single = false;
    match (&raw.cert, &raw.key, &raw.certs) {
        (Some(cert), Some(key), None) => {
            certs.push(tls_material(ctx, cert, key, field)?);
            single = true;
        }
        (None, None, Some(list)) => {
            if list.value.is_empty() {
                return Err(ctx.err(
                    &list.referenced,
                    format!("{field}.certs"),
                    "needs at least one { cert, key }",
                ));
            }
            for (j, entry) in list.value.iter().enumerate() {
                let entry_field = format!("{field}.certs[{j}]");
                let mut material = tls_material(ctx, &entry.cert, &entry.key, &entry_field)?;
                if let Some(names) = &entry.names {
                    let names_field = format!("{entry_field}.names");
                    if names.value.is_empty() {
                        return Err(ctx.err(&names.referenced, &names_field, "must not be empty"));
                    }
                    for name in &names.value {
                        let text = ctx.text(name, &names_field)?.to_ascii_lowercase();
                        if !is_dns_name(&text, true) {
                            return Err(ctx.err(
                                &name.referenced,
                                &names_field,
                                format!("{text:?} is not a DNS name (a leading \"*.\" is allowed)"),
                            ));
                        }
                        material.names.push(text);
                    }
                }
                certs.push(material);
            }
        }
        (None, None, None) => {}
        (Some(cert), None, _) => {
            return Err(ctx.err(&cert.referenced, format!("{field}.key"), "cert needs a key"))
        }
        (None, Some(key), _) => {
            return Err(ctx.err(&key.referenced, format!("{field}.cert"), "key needs a cert"))
        }
        (Some(cert), Some(_), Some(_)) => {
            return Err(ctx.err(
                &cert.referenced,
                format!("{field}.certs"),
                "use either cert/key or certs, not both",
            ))
        }
    }
    let acme = match &raw.acme {
        None => None,
        Some(acme) => Some(acme_config(ctx, &acme.value, &format!("{field}.acme"))?),
    };
    if certs.is_empty() && acme.is_none() {
        return Err(ctx.err(
            &listener.referenced,
            field,
            "needs cert and key, certs, or acme",
        ));
    }
    Ok(TlsConfig {
        certs,
        single,
        acme,
    })
}

fn acme_config(ctx: &Ctx, raw: &RawAcme, field: &str) -> Result<AcmeConfig, ConfigError> {
    let directory_field = format!("{field}.directory");
    let directory = ctx.text(&raw.directory, &directory_field)?;
    match directory.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
        _ => {
            return Err(ctx.err(
                &raw.directory.referenced,
                &directory_field,
                format!("{directory:?} is not an https:// URL"),
            ))
        }
    }
    let domains_field = format!("{field}.domains");
    if raw.domains.value.is_empty() {
        return Err(ctx.err(
            &raw.domains.referenced,
            &domains_field,
            "needs at least one name",
        ));
    }
    let mut domains = Vec::new();
    for domain in &raw.domains.value {
        let text = ctx.text(domain, &domains_field)?.to_ascii_lowercase();
        // TLS-ALPN-01 cannot prove a wildcard (RFC 8737 section 3), so no "*." here.
        if !is_dns_name(&text, false) {
            return Err(ctx.err(
                &domain.referenced,
                &domains_field,
                format!("{text:?} is not a DNS name (no wildcards: TLS-ALPN-01 cannot prove them)"),
            ));
        }
        if !domains.contains(&text) {
            domains.push(text);
        }
    }
    let contact_field = format!("{field}.contact");
    let mut contact = Vec::new();
    for c in raw.contact.iter().flat_map(|c| c.value.iter()) {
        let text = ctx.text(c, &contact_field)?;
        let address = text.strip_prefix("mailto:").unwrap_or("");
        let valid = address
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && is_dns_name(host, false));
        if !valid {
            return Err(ctx.err(
                &c.referenced,
                &contact_field,
                format!("{text:?} is not a mailto: address such as mailto:ops@example.com"),
            ));
        }
        contact.push(text);
    }
    let cache_field = format!("{field}.cache");
    let cache_text = ctx.text(&raw.cache, &cache_field)?;
    if cache_text.is_empty() {
        return Err(ctx.err(&raw.cache.referenced, &cache_field, "must not be empty"));
    }
    // Not a watched file: the gateway writes there itself.
    let cache = ctx.dir.join(cache_text);
    if let Err(why) = writable_dir(&cache) {
        return Err(ctx.err(&raw.cache.referenced, &cache_field, why));
    }
    let ca = match &raw.ca {
        None => None,
        Some(ca) => {
            let ca_field = format!("{field}.ca");
            let path = ctx.path(ca, &ca_field)?;
            read_certificates(&path).map_err(|m| ctx.err(&ca.referenced, &ca_field, m))?;
            Some(path)
        }
    };
    Ok(AcmeConfig {
        challenge: acme::challenge(ctx, raw, field)?,
        directory,
        domains,
        contact,
        cache,
        ca,
    })
}

/// A directory the gateway can create files in, or one it can create (its nearest existing
/// parent is writable). Probes by creating and removing a file; never makes the directory.
fn writable_dir(dir: &Path) -> Result<(), String> {
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    if !existing.is_dir() {
        return Err(format!("{}: not a directory", existing.display()));
    }
    let probe = existing.join(format!(".hookgate-write-probe-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("{}: not writable ({e})", existing.display())),
    }
}

/// A DNS name of letters, digits and hyphens (`localhost` and other one-label names too, for
/// private ACME servers); `*.` first if `wildcard`.
pub(crate) fn is_dns_name(name: &str, wildcard: bool) -> bool {
    let name = match name.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => name,
    };
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    labels.iter().all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// Reads a PEM bundle; an empty one is an error, not a listener that fails every handshake.
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), pem_error(&e)))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(chain)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item found".into(),
        other => format!("malformed PEM ({other:?})"),
    }
}

fn upstream(ctx: &Ctx, name: &str, raw: &RawUpstream) -> Result<UpstreamConfig, ConfigError> {
    let field = format!("upstreams.{name}");
    if !is_name(name) {
        return Err(ctx.err(&raw.url.referenced, &field, NAME_RULE));
    }
    let url_field = format!("{field}.url");
    let url_text = ctx.text(&raw.url, &url_field)?;
    let bad_url = |why: &str| {
        ctx.err(
            &raw.url.referenced,
            &url_field,
            format!("{url_text:?}: {why}"),
        )
    };
    let uri: http::Uri = url_text.parse().map_err(|_| bad_url("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => UpstreamScheme::Http,
        Some("https") => UpstreamScheme::Https,
        _ => return Err(bad_url("the scheme must be http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| bad_url("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad_url("credentials in the URL are not supported"));
    }
    if uri.query().is_some() {
        return Err(bad_url("a query string is not allowed"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let ca = match &raw.ca {
        None => Vec::new(),
        Some(ca) => {
            let ca_field = format!("{field}.ca");
            if scheme == UpstreamScheme::Http {
                return Err(ctx.err(
                    &ca.referenced,
                    &ca_field,
                    "a CA file only applies to an https:// upstream",
                ));
            }
            let path = ctx.path(ca, &ca_field)?;
            read_certificates(&path).map_err(|m| ctx.err(&ca.referenced, &ca_field, m))?
        }
    };
    Ok(UpstreamConfig {
        name: name.to_string(),
        scheme,
        authority,
        base_path,
        timeout: ctx.duration(
            &raw.timeout,
            &format!("{field}.timeout"),
            Duration::from_secs(15),
        )?,
        connect_timeout: ctx.duration(
            &raw.connect_timeout,
            &format!("{field}.connect_timeout"),
            Duration::from_secs(5),
        )?,
        max_response: ctx.size(&raw.max_response, &format!("{field}.max_response"), 1 << 20)?,
        max_connections: ctx.count(
            &raw.max_connections,
            &format!("{field}.max_connections"),
            DEFAULT_UPSTREAM_CONNECTIONS,
            1 << 20,
        )? as usize,
        ca,
    })
}

fn route(
    ctx: &Ctx,
    i: usize,
    raw: &RawRoute,
    upstreams: &[UpstreamConfig],
    ip_sets: &[IpSetConfig],
    limits: &Limits,
) -> Result<RouteConfig, ConfigError> {
    let field = format!("routes[{i}]");
    let name = ctx.text(&raw.name, &format!("{field}.name"))?;
    if !is_name(&name) {
        return Err(ctx.err(&raw.name.referenced, format!("{field}.name"), NAME_RULE));
    }
    let path_field = format!("{field}.path");
    let path_text = ctx.text(&raw.path, &path_field)?;
    let path =
        path_pattern(&path_text).map_err(|m| ctx.err(&raw.path.referenced, &path_field, m))?;

    let verify = match &raw.verify {
        None => None,
        Some(v) => Some(std::sync::Arc::new(verifier(
            ctx,
            v,
            &format!("{field}.verify"),
        )?)),
    };
    let mut methods = match &raw.methods {
        // Webhooks are POSTs.
        None => vec![Method::POST],
        Some(list) => {
            if list.value.is_empty() {
                return Err(ctx.err(
                    &list.referenced,
                    format!("{field}.methods"),
                    "must list at least one method",
                ));
            }
            let mut methods = Vec::new();
            for (j, m) in list.value.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                let method = Method::from_bytes(upper.as_bytes())
                    .ok()
                    .filter(|_| !upper.is_empty() && upper.chars().all(|c| c.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        ctx.err(
                            &list.referenced,
                            format!("{field}.methods[{j}]"),
                            format!("{m:?} is not an HTTP method"),
                        )
                    })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            methods
        }
    };

    // A provider's unsigned handshake (GET challenges, Intercom's HEAD) is answered by the
    // gateway on any route of that provider, so the route admits its method.
    if let Some(m) = verify.as_ref().and_then(|v| v.handshake_method()) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }

    let upstream_field = format!("{field}.upstream");
    let upstream_name = ctx.text(&raw.upstream, &upstream_field)?;
    let upstream = upstreams
        .iter()
        .position(|u| u.name == upstream_name)
        .ok_or_else(|| {
            ctx.err(
                &raw.upstream.referenced,
                &upstream_field,
                format!("no upstream named {upstream_name:?}"),
            )
        })?;

    let upstream_path = match &raw.upstream_path {
        None => None,
        Some(value) => {
            let f = format!("{field}.upstream_path");
            let text = ctx.text(value, &f)?;
            match path_pattern(&text) {
                Ok(PathPattern::Exact(p)) => Some(p),
                Ok(PathPattern::Prefix(_)) => {
                    return Err(ctx.err(&value.referenced, &f, "must be a plain path, without /*"))
                }
                Err(m) => return Err(ctx.err(&value.referenced, &f, m)),
            }
        }
    };

    Ok(RouteConfig {
        name,
        path,
        methods,
        upstream,
        upstream_path,
        max_body: ctx.size(&raw.max_body, &format!("{field}.max_body"), limits.max_body)?,
        body_timeout: ctx.duration(
            &raw.body_timeout,
            &format!("{field}.body_timeout"),
            limits.body_timeout,
        )?,
        allow_ips: match &raw.allow_ips {
            None => None,
            Some(list) => Some(allow_ips(
                ctx,
                list,
                &format!("{field}.allow_ips"),
                ip_sets,
            )?),
        },
        rate_limit: match &raw.rate_limit {
            None => None,
            Some(r) => Some(rate_limit(ctx, r, &format!("{field}.rate_limit"))?),
        },
        verify,
        replay_window: match &raw.replay_window {
            Some(w) if ctx.text(w, &format!("{field}.replay_window"))? == "off" => None,
            other => Some(ctx.duration(
                other,
                &format!("{field}.replay_window"),
                DEFAULT_REPLAY_WINDOW,
            )?),
        },
    })
}

/// Providers retry for hours to days; a day of memory catches the retries that matter.
const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Compiles a `verify:` block after expanding `${NAME}` in the values that hold secrets and keys.
/// Errors name the field but never echo a value.
fn verifier(
    ctx: &Ctx,
    raw: &Spanned<crate::verify::RawVerify>,
    field: &str,
) -> Result<crate::verify::Verifier, ConfigError> {
    use crate::verify::Secret;
    let at = &raw.referenced;
    let mut expanded = raw.value.clone();
    for (i, secret) in raw.value.secrets.iter().enumerate() {
        let value = ctx
            .expand(secret.expose())
            .map_err(|m| ctx.err(at, format!("{field}.secrets[{i}]"), m))?;
        expanded.secrets[i] = Secret::new(value);
    }
    for (name, value) in [
        ("public_key", &mut expanded.public_key),
        ("public_url", &mut expanded.public_url),
    ] {
        if let Some(text) = value.as_mut() {
            *text = ctx
                .expand(text)
                .map_err(|m| ctx.err(at, format!("{field}.{name}"), m))?;
        }
    }
    crate::verify::Verifier::from_raw(&expanded)
        .map_err(|e| ctx.err(at, format!("{field}.{}", e.field), e.message))
}

fn cidr(ctx: &Ctx, value: &Text, field: &str) -> Result<Cidr, ConfigError> {
    let text = ctx.text(value, field)?;
    parse_cidr(&text).map_err(|e| ctx.err(&value.referenced, field, format!("{text:?}: {e}")))
}

fn client_ip(ctx: &Ctx, raw: Option<&RawClientIp>) -> Result<ClientIpConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(ClientIpConfig::default());
    };
    let mut cidrs = Vec::new();
    if let Some(list) = &raw.trusted_proxies {
        for (i, value) in list.value.iter().enumerate() {
            cidrs.push(cidr(
                ctx,
                value,
                &format!("client_ip.trusted_proxies[{i}]"),
            )?);
        }
    }
    let header = match &raw.header {
        None => ForwardedHeader::XForwardedFor,
        Some(value) => match ctx
            .text(value, "client_ip.header")?
            .to_ascii_lowercase()
            .as_str()
        {
            "x-forwarded-for" => ForwardedHeader::XForwardedFor,
            "forwarded" => ForwardedHeader::Forwarded,
            other => {
                return Err(ctx.err(
                    &value.referenced,
                    "client_ip.header",
                    format!("{other:?}: expected x-forwarded-for or forwarded"),
                ))
            }
        },
    };
    Ok(ClientIpConfig {
        trusted_proxies: IpTable::new(cidrs),
        header,
    })
}

/// An error for a block that has no located value at all (an empty mapping).
fn unlocated(ctx: &Ctx, field: &str, message: &str) -> ConfigError {
    ConfigError {
        file: ctx.file.clone(),
        line: 0,
        column: 0,
        field: field.into(),
        message: message.into(),
    }
}

fn ip_set(ctx: &Ctx, name: &str, raw: &RawIpSet) -> Result<IpSetConfig, ConfigError> {
    let field = format!("ip_sets.{name}");
    let located = [
        raw.file.as_ref(),
        raw.url.as_ref(),
        raw.json_path.as_ref(),
        raw.refresh.as_ref(),
    ];
    let at = raw
        .cidrs
        .as_ref()
        .map(|c| c.referenced)
        .or_else(|| located.iter().flatten().next().map(|t| t.referenced));
    let Some(at) = at else {
        return Err(unlocated(ctx, &field, "needs one of cidrs, file or url"));
    };
    if !is_name(name) {
        return Err(ctx.err(&at, &field, NAME_RULE));
    }
    let sources = [raw.cidrs.is_some(), raw.file.is_some(), raw.url.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(ctx.err(&at, &field, "needs exactly one of cidrs, file or url"));
    }
    if raw.url.is_none() {
        if let Some(extra) = raw.json_path.as_ref().or(raw.refresh.as_ref()) {
            return Err(ctx.err(
                &extra.referenced,
                &field,
                "json_path and refresh only apply to a url set",
            ));
        }
    }
    let source = if let Some(list) = &raw.cidrs {
        let mut cidrs = Vec::new();
        for (i, value) in list.value.iter().enumerate() {
            cidrs.push(cidr(ctx, value, &format!("{field}.cidrs[{i}]"))?);
        }
        IpSetSource::Fixed(IpTable::new(cidrs))
    } else if let Some(file) = &raw.file {
        let f = format!("{field}.file");
        let path = ctx.path(file, &f)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ctx.err(&file.referenced, &f, format!("{}: {e}", path.display())))?;
        let cidrs = parse_cidr_list(&text)
            .map_err(|e| ctx.err(&file.referenced, &f, format!("{}: {e}", path.display())))?;
        IpSetSource::Fixed(IpTable::new(cidrs))
    } else if let Some(url) = &raw.url {
        let f = format!("{field}.url");
        let text = ctx.text(url, &f)?;
        let uri: http::Uri = text
            .parse()
            .map_err(|_| ctx.err(&url.referenced, &f, format!("{text:?} is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(ctx.err(
                &url.referenced,
                &f,
                format!("{text:?}: needs http:// or https:// and a host"),
            ));
        }
        let json_path = match &raw.json_path {
            None => None,
            Some(p) => Some(ctx.text(p, &format!("{field}.json_path"))?),
        };
        let refresh = ctx.duration(
            &raw.refresh,
            &format!("{field}.refresh"),
            Duration::from_secs(3600),
        )?;
        IpSetSource::Url {
            url: uri,
            json_path,
            refresh,
        }
    } else {
        return Err(ctx.err(&at, &field, "needs one of cidrs, file or url"));
    };
    Ok(IpSetConfig {
        name: name.to_string(),
        source,
    })
}

fn allow_ips(
    ctx: &Ctx,
    list: &Spanned<Vec<Text>>,
    field: &str,
    ip_sets: &[IpSetConfig],
) -> Result<AllowIps, ConfigError> {
    if list.value.is_empty() {
        return Err(ctx.err(
            &list.referenced,
            field,
            "an empty allowlist would refuse everyone; remove the key to allow all",
        ));
    }
    let mut allow = AllowIps {
        cidrs: Vec::new(),
        sets: Vec::new(),
    };
    for (i, value) in list.value.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let text = ctx.text(value, &f)?;
        if let Some(set) = ip_sets.iter().position(|s| s.name == text) {
            allow.sets.push(set);
            continue;
        }
        match parse_cidr(&text) {
            Ok(cidr) => allow.cidrs.push(cidr),
            Err(e) => {
                return Err(ctx.err(
                    &value.referenced,
                    &f,
                    format!("{text:?} is neither a CIDR ({e}) nor the name of an ip_set"),
                ));
            }
        }
    }
    Ok(allow)
}

fn rate_limit(
    ctx: &Ctx,
    raw: &RawRateLimit,
    field: &str,
) -> Result<RateLimitSettings, ConfigError> {
    let nonzero = |v: &Spanned<u32>, f: &str| {
        NonZeroU32::new(v.value).ok_or_else(|| {
            ctx.err(
                &v.referenced,
                format!("{field}.{f}"),
                "must be greater than zero",
            )
        })
    };
    let (rate, at) = match (&raw.per_second, &raw.per_minute) {
        (Some(n), None) => (Rate::PerSecond(nonzero(n, "per_second")?), n.referenced),
        (None, Some(n)) => (Rate::PerMinute(nonzero(n, "per_minute")?), n.referenced),
        (Some(n), Some(_)) => {
            return Err(ctx.err(
                &n.referenced,
                field,
                "set per_second or per_minute, not both",
            ))
        }
        (None, None) => {
            let at = raw
                .burst
                .as_ref()
                .map(|b| b.referenced)
                .or(raw.key.as_ref().map(|k| k.referenced));
            return Err(match at {
                Some(at) => ctx.err(&at, field, "needs per_second or per_minute"),
                None => unlocated(ctx, field, "needs per_second or per_minute"),
            });
        }
    };
    // Without a burst, a bucket holds one period's worth: 50/s admits 50 at once.
    let burst = match &raw.burst {
        Some(b) => nonzero(b, "burst")?,
        None => match rate {
            Rate::PerSecond(n) | Rate::PerMinute(n) => n,
        },
    };
    let key = match &raw.key {
        None => LimitKey::ClientIp,
        Some(value) => {
            let f = format!("{field}.key");
            let text = ctx.text(value, &f)?;
            text.parse()
                .map_err(|e| ctx.err(&value.referenced, &f, format!("{text:?}: {e}")))?
        }
    };
    let mut settings =
        RateLimitSettings::new(rate, burst, key).map_err(|e| ctx.err(&at, field, e.to_string()))?;
    if let Some(max) = &raw.max_keys {
        let n = nonzero(max, "max_keys")?;
        settings = settings.with_max_keys(NonZeroUsize::MIN.saturating_add(n.get() as usize - 1));
    }
    Ok(settings)
}

/// A route path: starts with `/`, plain characters, no dot segments, `*` only as a final `/*`.
fn path_pattern(text: &str) -> Result<PathPattern, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with '/'"));
    }
    let (base, prefix) = match text.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (text, false),
    };
    if base.contains('*') {
        return Err(format!("{text:?}: '*' is only allowed as a final \"/*\""));
    }
    if !base
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%' && b != b'\\')
    {
        return Err(format!(
            "{text:?} has characters a route path cannot have (space, ?, #, %, \\)"
        ));
    }
    if base
        .split('/')
        .any(|segment| segment == "." || segment == "..")
        || base.contains("//")
    {
        return Err(format!("{text:?} has '.', '..' or empty segments"));
    }
    Ok(if prefix {
        PathPattern::Prefix(base.to_string())
    } else {
        PathPattern::Exact(base.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_breached_yaml_budget_says_what_to_do() {
        let m = budget_message("budget breached: Nodes { nodes: 4000001 }").unwrap();
        assert!(m.contains("Nodes over its limit"), "{m}");
        assert!(m.contains("split the routes"), "{m}");
        assert_eq!(budget_message("invalid type: map"), None);
    }

    #[test]
    fn route_paths_are_exact_or_trailing_prefix() {
        assert_eq!(
            path_pattern("/hooks/github"),
            Ok(PathPattern::Exact("/hooks/github".into()))
        );
        assert_eq!(
            path_pattern("/hooks/*"),
            Ok(PathPattern::Prefix("/hooks".into()))
        );
        assert_eq!(path_pattern("/*"), Ok(PathPattern::Prefix(String::new())));
        for bad in [
            "hooks", "/a/*/b", "/a*", "/a/../b", "/a/./b", "/a//b", "/a b", "/a?x=1", "/a%2e",
        ] {
            assert!(path_pattern(bad).is_err(), "{bad} should be refused");
        }
    }
}
