//! Validates the durable-delivery keys: `spool:`, `admin.token`, a route's `delivery` and
//! `ack_status`, and `upstreams.NAME.delivery`. Errors carry file:line:col and the field path
//! like the rest of the config; the admin token's value is never printed.

use std::collections::HashMap;
use std::time::Duration;

use super::super::raw::{RawConfig, RawDelivery, RawSpool};
use super::super::{AdminToken, DeliveryConfig, DeliverySettings, QueueRoute, SpoolConfig};
use super::{unlocated, ConfigError, Ctx};

/// Spool size when `max_bytes` is not given.
const DEFAULT_SPOOL_BYTES: u64 = 1 << 30;
/// Delivered and dead events are kept this long by default.
const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub(super) fn delivery(ctx: &Ctx, raw: &RawConfig) -> Result<DeliveryConfig, ConfigError> {
    let spool = raw.spool.as_ref().map(|s| spool(ctx, s)).transpose()?;
    let admin_token = match raw.admin.as_ref().and_then(|a| a.token.as_ref()) {
        None => None,
        Some(token) => {
            let value = ctx.text(token, "admin.token")?;
            if value.len() < 16 {
                return Err(ctx.err(
                    &token.referenced,
                    "admin.token",
                    "must be at least 16 characters (it guards replay and purge)",
                ));
            }
            Some(AdminToken(value))
        }
    };
    let mut upstreams = HashMap::new();
    for (name, up) in &raw.upstreams {
        let settings = match &up.delivery {
            None => DeliverySettings::default(),
            Some(d) => settings(ctx, &format!("upstreams.{name}.delivery"), d)?,
        };
        upstreams.insert(name.clone(), settings);
    }
    let mut queue_routes = HashMap::new();
    for (i, r) in raw.routes.value.iter().enumerate() {
        let field = format!("routes[{i}]");
        let queued = match &r.delivery {
            None => false,
            Some(mode) => match ctx.text(mode, &format!("{field}.delivery"))?.as_str() {
                "direct" => false,
                "queue" => true,
                other => {
                    return Err(ctx.err(
                        &mode.referenced,
                        format!("{field}.delivery"),
                        format!("{other:?}: expected direct or queue"),
                    ))
                }
            },
        };
        let ack_status = match &r.ack_status {
            None => 200,
            Some(status) => {
                if !(200..=299).contains(&status.value) {
                    return Err(ctx.err(
                        &status.referenced,
                        format!("{field}.ack_status"),
                        "must be a 2xx status",
                    ));
                }
                if !queued {
                    return Err(ctx.err(
                        &status.referenced,
                        format!("{field}.ack_status"),
                        "only applies to a route with delivery: queue",
                    ));
                }
                status.value
            }
        };
        if queued {
            if spool.is_none() {
                let at = r.delivery.as_ref().map(|d| d.referenced);
                let message = "delivery: queue needs a spool: block (where queued events are kept)";
                return Err(match at {
                    Some(at) => ctx.err(&at, format!("{field}.delivery"), message),
                    None => unlocated(ctx, &format!("{field}.delivery"), message),
                });
            }
            queue_routes.insert(
                r.name.value.clone(),
                QueueRoute {
                    upstream: r.upstream.value.clone(),
                    ack_status,
                },
            );
        }
    }
    Ok(DeliveryConfig {
        spool,
        queue_routes,
        upstreams,
        admin_token,
    })
}

fn spool(ctx: &Ctx, raw: &RawSpool) -> Result<SpoolConfig, ConfigError> {
    Ok(SpoolConfig {
        // Not `ctx.path`: the spool changes all the time and must not trigger config reloads.
        path: {
            let text = ctx.text(&raw.path, "spool.path")?;
            if text.is_empty() {
                return Err(ctx.err(&raw.path.referenced, "spool.path", "must not be empty"));
            }
            ctx.dir.join(text)
        },
        max_bytes: ctx.size(&raw.max_bytes, "spool.max_bytes", DEFAULT_SPOOL_BYTES)?,
        retention: ctx.duration(&raw.retention, "spool.retention", DEFAULT_RETENTION)?,
    })
}

fn settings(ctx: &Ctx, field: &str, raw: &RawDelivery) -> Result<DeliverySettings, ConfigError> {
    let d = DeliverySettings::default();
    let backoff_initial = ctx.duration(
        &raw.backoff.as_ref().and_then(|b| b.initial.clone()),
        &format!("{field}.backoff.initial"),
        d.backoff_initial,
    )?;
    let backoff_max = ctx.duration(
        &raw.backoff.as_ref().and_then(|b| b.max.clone()),
        &format!("{field}.backoff.max"),
        d.backoff_max.max(backoff_initial),
    )?;
    if backoff_max < backoff_initial {
        if let Some(at) = raw
            .backoff
            .as_ref()
            .and_then(|b| b.max.as_ref())
            .map(|m| m.referenced)
        {
            return Err(ctx.err(
                &at,
                format!("{field}.backoff.max"),
                "must not be shorter than backoff.initial",
            ));
        }
    }
    let mut non_retryable = d.non_retryable.clone();
    if let Some(list) = &raw.non_retryable {
        for (i, code) in list.value.iter().enumerate() {
            if !(100..=599).contains(code) || (200..=299).contains(code) {
                return Err(ctx.err(
                    &list.referenced,
                    format!("{field}.non_retryable[{i}]"),
                    format!("{code} is not a failure status (100-599, not 2xx)"),
                ));
            }
        }
        non_retryable = list.value.clone();
    }
    let percent = ctx.count(
        &raw.breaker_failure_percent,
        &format!("{field}.breaker_failure_percent"),
        u64::from(d.breaker_failure_percent),
        100,
    )?;
    Ok(DeliverySettings {
        max_attempts: ctx.count(
            &raw.max_attempts,
            &format!("{field}.max_attempts"),
            u64::from(d.max_attempts),
            1_000_000,
        )? as u32,
        max_age: ctx.duration(&raw.max_age, &format!("{field}.max_age"), d.max_age)?,
        backoff_initial,
        backoff_max,
        concurrency: ctx.count(
            &raw.concurrency,
            &format!("{field}.concurrency"),
            d.concurrency as u64,
            4096,
        )? as usize,
        non_retryable,
        breaker_failure_percent: percent as u32,
        breaker_window: ctx.count(
            &raw.breaker_window,
            &format!("{field}.breaker_window"),
            u64::from(d.breaker_window),
            10_000,
        )? as u32,
        breaker_cooldown: ctx.duration(
            &raw.breaker_cooldown,
            &format!("{field}.breaker_cooldown"),
            d.breaker_cooldown,
        )?,
    })
}
