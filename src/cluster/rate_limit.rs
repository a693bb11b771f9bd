//! GCRA on Redis: one step per check, run by the batch script (`batch.rs`, one EVALSHA shared
//! by the checks in flight together), Redis `TIME` as the clock so instances with skewed clocks
//! agree, one key per bucket holding its theoretical arrival time (TAT) in microseconds, with a
//! PX expiry at the moment the bucket is full again (an expired bucket and a full one are the
//! same). Same arithmetic as governor's: a burst of B admits B back-to-back requests, then one
//! every interval.

use std::time::Duration;

use super::batch::Op;
use super::RedisHandle;
use crate::pipeline::rate_limit::{Admitted, RateLimitSettings};

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
    let (allowed, value) = redis
        .call(Op::Limit { interval_us, burst }, key.to_string())
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
