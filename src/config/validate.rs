//! Turns the raw, as-written config into the typed [`Config`]: units parsed, names resolved,
//! files read, and every mistake reported with file, line, column and field path. It never
//! prints a value that came from the environment, since those are where secrets live.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_saphyr::{Location, Spanned};

mod acme;
mod delivery;
mod ip;
mod limits;
mod rate_limit;
mod redis;
mod routes;
mod upstreams;

use ip::{client_ip, ip_set};
use limits::limits;
use rate_limit::rate_limit;
use redis::redis;
pub use routes::shadow_warnings;
use routes::{route, shadowing};
use upstreams::upstream;

use super::raw::{RawAcme, RawConfig, RawSize, RawTls, Text};
use super::secrets::{expand_env, referenced_names, scrub};
use super::units::{parse_duration, parse_size};
use super::{
    AcmeConfig, Config, ConfigError, ListenerConfig, LogTarget, PathPattern, RouteConfig,
    TlsConfig, TlsMaterial,
};

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

const NAME_RULE: &str = "names are 1-64 characters of a-z, A-Z, 0-9, '_' and '-'";

/// Names end up in metric labels and log fields, so they stay short and plain.
fn is_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
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
}
