//! GCRA on Redis: one Lua script per check (EVALSHA, one round trip), Redis `TIME` as the
//! clock so instances with skewed clocks agree, one key per bucket holding its theoretical
//! arrival time (TAT) in microseconds, with a PX expiry at the moment the bucket is full again
//! (an expired bucket and a full one are the same). Same arithmetic as governor's: a burst of
//! B admits B back-to-back requests, then one every interval.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::RedisHandle;
use crate::pipeline::rate_limit::{Admitted, RateLimitSettings};

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval)}
"#;

static GCRA_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));

pub fn gcra_script() -> &'static Script {
    &GCRA_SCRIPT
}

/// One request against the shared bucket `key`: admitted, or refused for this long. `None`:
/// Redis did not answer in time or at all; decide locally.
pub async fn check(
    redis: &RedisHandle,
    key: &str,
    settings: &RateLimitSettings,
) -> Option<Result<Admitted, Duration>> {
    let interval_us = u64::try_from(settings.rate().interval().as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    let burst = u64::from(settings.burst().get());
    let (allowed, value): (i64, i64) = redis
        .run_script("rate_limit", gcra_script(), &[key], &[&interval_us, &burst])
        .await?;
    let value = u64::try_from(value).unwrap_or(0);
    Some(if allowed == 1 {
        let remaining = u32::try_from(value).unwrap_or(u32::MAX);
        Ok(Admitted {
            remaining,
            reset_secs: settings.reset_secs(remaining),
        })
    } else {
        Err(Duration::from_micros(value))
    })
}
