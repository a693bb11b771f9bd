//! `rate_limit:` blocks, global and per route.

use std::num::{NonZeroU32, NonZeroUsize};

use serde_saphyr::Spanned;

use super::super::rate_limit::{LimitKey, Rate, RateLimitSettings};
use super::super::raw::RawRateLimit;
use super::{unlocated, ConfigError, Ctx};

pub(super) fn rate_limit(
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
