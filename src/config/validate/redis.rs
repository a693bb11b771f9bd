//! The `redis:` block (shared state for clustered gateways).

use std::time::Duration;

use super::{ConfigError, Ctx};

/// The `redis:` block: a URL redis-rs can parse with a `redis://` or `rediss://` scheme, a
/// deadline, a key prefix, for `rediss://` optionally the CA to trust (read and parsed here).
/// Nothing connects here (`hookgate check` runs without Redis).
pub(super) fn redis(
    ctx: &Ctx,
    raw: &super::super::raw::RawRedis,
) -> Result<super::super::RedisConfig, ConfigError> {
    let url = ctx.text(&raw.url, "redis.url")?;
    let redacted = super::super::redact_url(&url);
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
            super::read_certificates(&path).map_err(|m| ctx.err(&ca.referenced, "redis.ca", m))?;
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
    Ok(super::super::RedisConfig {
        url,
        timeout,
        key_prefix,
        instances,
        ca,
    })
}
