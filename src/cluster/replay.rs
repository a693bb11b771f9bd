//! Replay memory on Redis, with the in-memory store as the fallback. One key per delivery id,
//! `<prefix>rp:<route>\0<id>`:
//! - claim: `SET key "f:<owner>" NX PX <in-flight ttl>` (in flight, owned by this instance's
//!   random token); if the key exists, `d` means delivered (2xx duplicate), anything else in
//!   flight (409). One step of the batch script (`batch.rs`), at most one round trip, shared
//!   with the other requests' calls in flight.
//! - delivered (after the upstream's 2xx): compare-and-set to `d` with PX = the replay window,
//!   only while the value is still this instance's claim (or no claim is left).
//! - release (the forward failed): compare-and-delete, same condition.
//!
//! While Redis does not answer, claims are made in the local store; a claim made locally is
//! marked delivered or released locally. An id marked delivered locally stays a duplicate here
//! even once Redis is back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::batch::Op;
use super::RedisHandle;
use crate::pipeline::replay::{BoxFuture, Claim, MemoryReplayStore, ReplayStore};

/// How long an in-flight claim holds when its instance dies before answering: a provider's
/// retry within this gets 409, after it the delivery is forwarded again. Longer than any
/// upstream timeout.
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(120);

/// The gateway's replay store: Redis when configured and answering, else the local memory.
pub struct SharedReplayStore {
    local: Arc<MemoryReplayStore>,
    redis: ArcSwapOption<RedisHandle>,
    /// `f:<random>`: this instance's claims.
    owner: Arc<str>,
}

impl SharedReplayStore {
    pub fn new(local: MemoryReplayStore) -> SharedReplayStore {
        SharedReplayStore {
            local: Arc::new(local),
            redis: ArcSwapOption::empty(),
            owner: Arc::from(format!("f:{}", uuid::Uuid::new_v4().simple())),
        }
    }

    fn redis_key(redis: &RedisHandle, key: &str) -> String {
        format!("{}rp:{key}", redis.key_prefix())
    }

    /// Runs `op` on `key` from a task of its own: the request does not wait for it. When
    /// Redis does not answer, `otherwise` runs with the local store.
    fn send(&self, op: Op, key: &str, otherwise: impl FnOnce(&MemoryReplayStore) + Send + 'static) {
        let Some(redis) = self.redis.load_full() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let redis_key = Self::redis_key(&redis, key);
        let local = Arc::clone(&self.local);
        runtime.spawn(async move {
            if redis.call(op, redis_key).await.is_none() {
                otherwise(&local);
            }
        });
    }
}

impl ReplayStore for SharedReplayStore {
    fn claim<'a>(&'a self, key: &'a str, now: Instant) -> BoxFuture<'a, Claim> {
        Box::pin(async move {
            let Some(redis) = self.redis.load_full() else {
                return self.local.claim_now(key, now);
            };
            // Delivered while Redis was down: still a duplicate.
            if self.local.is_delivered(key, now) {
                return Claim::Delivered;
            }
            let ttl = u64::try_from(IN_FLIGHT_TTL.as_millis()).unwrap_or(u64::MAX);
            let redis_key = Self::redis_key(&redis, key);
            let owner = Arc::clone(&self.owner);
            let answer = redis
                .call(Op::Claim { owner, ttl_ms: ttl }, redis_key)
                .await;
            match answer {
                Some((0, _)) => Claim::Fresh,
                Some((1, _)) => Claim::Delivered,
                Some(_) => Claim::InFlight,
                None => self.local.claim_now(key, now),
            }
        })
    }

    fn delivered(&self, key: &str, now: Instant, window: Duration) {
        if self.redis.load().is_none() || self.local.is_in_flight(key) {
            self.local.delivered(key, now, window);
            return;
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let owner = Arc::clone(&self.owner);
        self.send(Op::Delivered { owner, window_ms }, key, {
            let key = key.to_string();
            move |local| local.delivered(&key, now, window)
        });
    }

    fn release(&self, key: &str) {
        if self.redis.load().is_none() || self.local.is_in_flight(key) {
            self.local.release(key);
            return;
        }
        // Not answered: the claim expires after IN_FLIGHT_TTL.
        let owner = Arc::clone(&self.owner);
        self.send(Op::Release { owner }, key, |_| {});
    }

    fn use_redis(&self, redis: Option<Arc<RedisHandle>>) {
        self.redis.store(redis);
    }
}
