//! Stage 5, rate limit: one GCRA limiter (governor) per route, keyed by client IP, by a header or
//! not at all, that says "go" or "429, retry after N seconds", plus the values of the IETF
//! `RateLimit-Policy` / `RateLimit` response fields.
//!
//! It must never read the body, never block or sleep (it answers at once), never grow without
//! bound under a flood of distinct keys, and never fail open: a key it cannot track goes to the
//! shared overflow bucket, it is not waved through.
//!
//! Decisions, in one place:
//! - **Quota.** `per_second: N` / `per_minute: N` is the sustained rate (one request every
//!   1/N s or 60/N s); `burst` is how many may arrive at once from a full bucket. A burst of B
//!   admits exactly B back-to-back requests, then one more every interval.
//! - **Keys.** `client_ip`: the address stage 3 resolved; IPv4 per address, IPv6 per /64 (one
//!   host usually owns a whole /64, so per-address keys would be free to multiply).
//!   `route`: one bucket for the route. `header:NAME`: the header's value (all lines, in order);
//!   a missing or empty header falls back to the client-IP key, so leaving the header out gives
//!   no more than a per-address limit. Header values are kept as a 64-bit keyed (SipHash,
//!   random per limiter) hash: constant memory per key whatever the header's length.
//! - **Memory.** At most `max_keys` buckets (default [`DEFAULT_MAX_KEYS`]). Once full, requests
//!   whose key has no bucket yet share one overflow bucket with the route's quota: known senders
//!   keep their own budget, and a flood of new addresses throttles itself instead of the heap.
//!   [`RouteLimiter::retain_recent`] (call it periodically, e.g. every 10 s) drops buckets that
//!   have been full again for at least one interval (governor's rule), i.e. that are
//!   indistinguishable from new ones: always safe, it never gives anyone extra budget.
//! - **Reload.** [`RouteLimiter::settings`] compares equal when nothing that affects the
//!   decisions changed: keep the old limiter (and its state) in that case.
//! - **Headers** (`draft-ietf-httpapi-ratelimit-headers`, the -08 and later form: two
//!   structured fields, the policy name an sf-String; still an Internet-Draft, not an RFC, so
//!   the spelling may move again and lives only here):
//!   `RateLimit-Policy: "default";q=<burst>;w=<seconds to refill a whole burst>`, which states
//!   both the burst and the sustained rate (q/w); `RateLimit: "default";r=<remaining>;t=<s>`
//!   where `t` is the whole seconds until the bucket is full again when admitted, and equals
//!   `Retry-After` when refused (r=0), as the draft asks. No `pk` parameter: the key (a client
//!   address) is not echoed.
//! - **Retry-After** is whole seconds, rounded up, at least 1.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::reject::Reject;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::header::{HeaderMap, HeaderName};
use thiserror::Error;

use crate::ipset::normalize_ip;

// The settings are plain config values; the limiter below is what they compile to.
pub use crate::config::rate_limit::{
    LimitKey, LimitKeyError, Rate, RateLimitSettings, SettingsError, DEFAULT_MAX_KEYS,
    MAX_PER_SECOND,
};

/// `RateLimit-Policy` response header name.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` response header name.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The policy name used in both header fields.
const POLICY_NAME: &str = "default";

const SHARDS: usize = 32;

impl RateLimitSettings {
    /// Whole seconds for an empty bucket to fill up again: `ceil(burst * interval)`, at least 1.
    /// This is the `w` of `RateLimit-Policy`.
    pub fn window_secs(&self) -> u64 {
        ceil_secs(self.rate().interval().saturating_mul(self.burst().get())).max(1)
    }

    /// The `RateLimit-Policy` value, e.g. `"default";q=100;w=2` for 50/s with a burst of 100.
    pub fn policy_header_value(&self) -> String {
        format!(
            "\"{POLICY_NAME}\";q={};w={}",
            self.burst(),
            self.window_secs()
        )
    }

    /// Whole seconds until a bucket with `remaining` left is full again.
    pub fn reset_secs(&self, remaining: u32) -> u64 {
        let owed = self.burst().get().saturating_sub(remaining);
        ceil_secs(self.rate().interval().saturating_mul(owed))
    }

    /// This instance's share of the limit when `instances` share it and cannot talk to each
    /// other (Redis down): the rate and the burst divided, neither below one request.
    pub fn divided(&self, instances: u32) -> RateLimitSettings {
        let n = instances.max(1);
        let rate = match self.rate() {
            Rate::PerSecond(r) if r.get() >= n => Rate::PerSecond(nz(r.get() / n)),
            Rate::PerSecond(r) => Rate::PerMinute(nz(r.get().saturating_mul(60) / n)),
            Rate::PerMinute(r) => Rate::PerMinute(nz(r.get() / n)),
        };
        let burst = nz(self.burst().get() / n);
        match RateLimitSettings::new(rate, burst, self.key().clone()) {
            Ok(settings) => settings.with_max_keys(self.max_keys()),
            // A divided rate is never above the undivided one, which was accepted.
            Err(_) => self.clone(),
        }
    }

    fn quota(&self) -> Quota {
        // interval >= 1µs thanks to MAX_PER_SECOND, so with_period never sees zero.
        let interval = self.rate().interval().max(Duration::from_nanos(1));
        match Quota::with_period(interval) {
            Some(q) => q.allow_burst(self.burst()),
            None => Quota::per_second(NonZeroU32::MIN).allow_burst(self.burst()),
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The request may go on. Carries what the `RateLimit` field reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// Requests that could still be made right now (after this one).
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (rounded up).
    pub reset_secs: u64,
}

impl Admitted {
    /// The `RateLimit` value, e.g. `"default";r=99;t=1`.
    pub fn header_value(&self) -> String {
        format!(
            "\"{POLICY_NAME}\";r={};t={}",
            self.remaining, self.reset_secs
        )
    }
}

/// The request is over the route's limit: answer 429 with `Retry-After: retry_after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("rate limited: retry after {retry_after_secs}s")]
pub struct RateLimited {
    /// Whole seconds until a request with this key can be admitted, rounded up, at least 1.
    pub retry_after_secs: u64,
}

impl RateLimited {
    /// The `RateLimit` value, e.g. `"default";r=0;t=3` (t is the same moment as Retry-After).
    pub fn header_value(&self) -> String {
        format!("\"{POLICY_NAME}\";r=0;t={}", self.retry_after_secs)
    }

    /// The `Retry-After` value.
    pub fn retry_after_value(&self) -> String {
        self.retry_after_secs.to_string()
    }
}

/// A route's limiter. Shared by all requests of the route (`Arc<RouteLimiter>`); `check` takes
/// `&self` and is safe to call from any thread.
pub struct RouteLimiter<C: Clock = DefaultClock> {
    settings: RateLimitSettings,
    /// Set when the limit is shared on Redis: the local buckets above are then only the
    /// fallback (at the divided limit).
    shared: Option<SharedBucket>,
    limiter: RateLimiter<BucketKey, CappedStore, C, StateInformationMiddleware>,
    header_hasher: RandomState,
    /// Shared limits: keys Redis refused, until the moment it said they may try again.
    denied: DenyCache,
}

impl RouteLimiter<DefaultClock> {
    /// A limiter on the monotonic clock.
    pub fn new(settings: RateLimitSettings) -> RouteLimiter<DefaultClock> {
        RouteLimiter::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock> RouteLimiter<C> {
    /// A limiter on the given clock (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(settings: RateLimitSettings, clock: C) -> RouteLimiter<C> {
        let store = CappedStore::new(settings.max_keys().get());
        let limiter = RateLimiter::<BucketKey, CappedStore, C, StateInformationMiddleware>::new(
            settings.quota(),
            store,
            clock,
        );
        RouteLimiter {
            settings,
            shared: None,
            limiter,
            header_hasher: RandomState::new(),
            denied: DenyCache::default(),
        }
    }

    /// The same limiter whose decisions are made on Redis, under keys starting with
    /// `shared.key_base`, at `shared.settings`; this limiter's own buckets decide only while
    /// Redis does not answer.
    pub fn with_shared(mut self, shared: SharedBucket) -> RouteLimiter<C> {
        self.shared = Some(shared);
        self
    }

    /// The Redis side, if the limit is shared.
    pub fn shared(&self) -> Option<&SharedBucket> {
        self.shared.as_ref()
    }

    /// Counts one request. `client_ip` is stage 3's answer; `headers` are read only for a
    /// `header:NAME` key.
    pub fn check(&self, client_ip: IpAddr, headers: &HeaderMap) -> Result<Admitted, RateLimited> {
        let key = self.bucket_key(client_ip, headers);
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Admitted {
                    remaining,
                    reset_secs: self.reset_secs(remaining),
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Err(RateLimited {
                    retry_after_secs: ceil_secs(wait).max(1),
                })
            }
        }
    }

    /// The settings this limiter was built from (compare on reload).
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// Drops buckets that have been full again for an interval (indistinguishable from fresh
    /// ones) and gives memory
    /// back when most of it is unused. Call periodically; it locks one shard at a time.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
    }

    /// Number of keys with their own bucket (the overflow bucket is not counted).
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no key has a bucket.
    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }

    /// True when the key cap is reached: new keys share the overflow bucket until
    /// `retain_recent` frees room. Worth a gauge or a log line.
    pub fn is_saturated(&self) -> bool {
        self.limiter.len() >= self.settings.max_keys().get()
    }

    fn reset_secs(&self, remaining: u32) -> u64 {
        self.settings.reset_secs(remaining)
    }

    /// The Redis key of this request's bucket: the same on every instance (header values are
    /// hashed with SHA-256, not with this instance's random SipHash key).
    fn shared_key(&self, base: &str, client_ip: IpAddr, headers: &HeaderMap) -> String {
        let ip = |ip: IpAddr| match normalize_ip(ip) {
            IpAddr::V4(v4) => format!("{base}4:{v4}"),
            IpAddr::V6(v6) => format!("{base}6:{:x}", u128::from(v6) >> 64),
        };
        match self.settings.key() {
            LimitKey::Route => format!("{base}r"),
            LimitKey::ClientIp => ip(client_ip),
            LimitKey::Header(name) => {
                let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
                let mut any = false;
                for value in headers.get_all(name) {
                    let bytes = value.as_bytes().trim_ascii();
                    if !bytes.is_empty() {
                        digest.update(&(bytes.len() as u64).to_be_bytes());
                        digest.update(bytes);
                        any = true;
                    }
                }
                if !any {
                    return ip(client_ip);
                }
                let hash = digest.finish();
                let mut key = format!("{base}h:");
                for byte in hash.as_ref().iter().take(16) {
                    key.push_str(&format!("{byte:02x}"));
                }
                key
            }
        }
    }

    fn bucket_key(&self, client_ip: IpAddr, headers: &HeaderMap) -> BucketKey {
        match self.settings.key() {
            LimitKey::Route => BucketKey::Route,
            LimitKey::ClientIp => ip_key(client_ip),
            LimitKey::Header(name) => {
                let mut hasher = self.header_hasher.build_hasher();
                let mut any = false;
                for value in headers.get_all(name) {
                    let bytes = value.as_bytes().trim_ascii();
                    if !bytes.is_empty() {
                        bytes.hash(&mut hasher);
                        any = true;
                    }
                }
                if any {
                    BucketKey::Header(hasher.finish())
                } else {
                    ip_key(client_ip)
                }
            }
        }
    }
}

impl<C: Clock> fmt::Debug for RouteLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("settings", &self.settings)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

fn ip_key(ip: IpAddr) -> BucketKey {
    match normalize_ip(ip) {
        IpAddr::V4(v4) => BucketKey::Ip4(u32::from(v4)),
        IpAddr::V6(v6) => BucketKey::Ip6Net((u128::from(v6) >> 64) as u64),
    }
}

/// Whole seconds, rounded up.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// What a bucket is kept under: 16 bytes, whatever the key kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum BucketKey {
    Route,
    Ip4(u32),
    /// The upper 64 bits of an IPv6 address.
    Ip6Net(u64),
    /// Keyed hash of the header's values.
    Header(u64),
}

/// governor state store with a cap on keys: sharded `Mutex<HashMap>`, plus one overflow bucket
/// for keys that arrive when the cap is reached. The count is reserved before inserting, so the
/// cap is exact even under concurrency.
struct CappedStore {
    shards: Box<[Mutex<HashMap<BucketKey, InMemoryState>>]>,
    shard_hasher: RandomState,
    overflow: InMemoryState,
    count: AtomicUsize,
    max_keys: usize,
}

impl CappedStore {
    fn new(max_keys: usize) -> CappedStore {
        CappedStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            shard_hasher: RandomState::new(),
            overflow: InMemoryState::default(),
            count: AtomicUsize::new(0),
            max_keys,
        }
    }

    fn shard(&self, key: &BucketKey) -> MutexGuard<'_, HashMap<BucketKey, InMemoryState>> {
        let index = (self.shard_hasher.hash_one(key) as usize) % self.shards.len();
        // index < len by construction. A poisoned shard only holds atomics that are always
        // consistent: keep using it.
        #[allow(clippy::indexing_slicing)]
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one slot under the cap, or says there is none.
    fn reserve(&self) -> bool {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_keys).then_some(n + 1)
            })
            .is_ok()
    }
}

/// The theoretical arrival time stored in a bucket (0 for a fresh one), read without changing it.
fn stored_tat(state: &InMemoryState) -> u64 {
    match state.measure_and_replace(&NotKeyed::NonKey, Err::<((), Nanos), _>) {
        Err(tat) => tat.map_or(0, Nanos::as_u64),
        Ok(()) => 0,
    }
}

impl StateStore for CappedStore {
    type Key = BucketKey;

    fn measure_and_replace<T, F, E>(&self, key: &BucketKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        {
            let mut shard = self.shard(key);
            if let Some(state) = shard.get(key) {
                return state.measure_and_replace(&NotKeyed::NonKey, f);
            }
            if self.reserve() {
                let state = shard.entry(*key).or_default();
                return state.measure_and_replace(&NotKeyed::NonKey, f);
            }
        }
        self.overflow.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl ShrinkableKeyedStateStore<BucketKey> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = drop_below.as_u64();
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let before = map.len();
            map.retain(|_, state| stored_tat(state) > drop_below);
            self.count.fetch_sub(before - map.len(), Ordering::AcqRel);
            if map.capacity() > 64 && map.capacity() > 4 * map.len() {
                map.shrink_to_fit();
            }
        }
    }

    fn shrink_to_fit(&self) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keys of a shared limit that Redis refused, with the moment it said they may try again.
/// Exact, not a guess: a GCRA bucket's arrival time only moves forward, so no request for the
/// key can be admitted before that moment, whichever instance asks. Saves the round trip for
/// every request of a sender hammering past its limit (Envoy's local pre-check). Bounded: when
/// full, expired entries go, and if that is not enough all of them (refusals fill it again).
#[derive(Default)]
struct DenyCache {
    keys: Mutex<HashMap<String, std::time::Instant>>,
    /// Entries in `keys`: while 0 (nobody over the limit), no lock is taken.
    len: AtomicUsize,
}

const DENY_CACHE_MAX: usize = 10_000;

impl DenyCache {
    /// `Some(wait)` while `key` is known to be refused at `now`.
    fn refused(&self, key: &str, now: std::time::Instant) -> Option<Duration> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let until = *keys.get(key)?;
        match until.checked_duration_since(now).filter(|w| !w.is_zero()) {
            Some(wait) => Some(wait),
            None => {
                keys.remove(key);
                self.len.store(keys.len(), Ordering::Relaxed);
                None
            }
        }
    }

    fn remember(&self, key: String, until: std::time::Instant) {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= DENY_CACHE_MAX {
            let now = std::time::Instant::now();
            keys.retain(|_, t| *t > now);
            if keys.len() >= DENY_CACHE_MAX {
                keys.clear();
            }
        }
        keys.insert(key, until);
        self.len.store(keys.len(), Ordering::Relaxed);
    }
}

/// The Redis side of a shared limit: the whole limit (over all instances) and where its
/// buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBucket {
    pub settings: RateLimitSettings,
    /// `<key_prefix>rl:<route>:`; the bucket's key follows.
    pub key_base: String,
}

/// Stage 5 for one limiter: counts the request, or refuses it with the 429 headers filled in.
/// A shared limit is decided on Redis (one round trip); when `redis` is absent, down or slow,
/// by the local buckets at this instance's share, and counted as a fallback.
pub async fn check(
    limiter: &RouteLimiter,
    redis: Option<&crate::cluster::RedisHandle>,
    client_ip: IpAddr,
    headers: &HeaderMap,
    scope: &'static str,
) -> Result<(), Reject> {
    if let (Some(shared), Some(redis)) = (limiter.shared(), redis) {
        let key = limiter.shared_key(&shared.key_base, client_ip, headers);
        let now = std::time::Instant::now();
        let limited = |wait: Duration| RateLimited {
            retry_after_secs: ceil_secs(wait).max(1),
        };
        if let Some(wait) = limiter.denied.refused(&key, now) {
            return Err(refusal(&shared.settings, limited(wait), scope));
        }
        if let Some(decided) =
            crate::cluster::rate_limit::check(redis, &key, &shared.settings).await
        {
            return decided.map(|_| ()).map_err(|wait| {
                limiter.denied.remember(key, now + wait);
                refusal(&shared.settings, limited(wait), scope)
            });
        }
        redis.count_fallback();
    }
    limiter
        .check(client_ip, headers)
        .map(|_| ())
        .map_err(|limited| refusal(limiter.settings(), limited, scope))
}

fn refusal(settings: &RateLimitSettings, limited: RateLimited, scope: &'static str) -> Reject {
    Reject::RateLimited {
        retry_after: limited.retry_after_value(),
        policy: settings.policy_header_value(),
        state: limited.header_value(),
        scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use http::HeaderValue;
    use std::num::NonZeroUsize;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }
    fn limiter(
        rate: Rate,
        burst: u32,
        key: LimitKey,
    ) -> (RouteLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        let settings = RateLimitSettings::new(rate, nz(burst), key).unwrap();
        (RouteLimiter::with_clock(settings, clock.clone()), clock)
    }
    fn admitted_in_a_row(l: &RouteLimiter<FakeRelativeClock>, client: &str, h: &HeaderMap) -> u32 {
        let mut n = 0;
        while l.check(ip(client), h).is_ok() {
            n += 1;
            assert!(n < 10_000, "never refused");
        }
        n
    }
    fn header(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn admits_exactly_the_burst_then_refuses() {
        let none = HeaderMap::new();
        for burst in [1, 2, 5, 100] {
            let (l, _) = limiter(Rate::PerSecond(nz(10)), burst, LimitKey::ClientIp);
            assert_eq!(
                admitted_in_a_row(&l, "192.0.2.1", &none),
                burst,
                "burst {burst}"
            );
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let none = HeaderMap::new();
        let (l, clock) = limiter(Rate::PerMinute(nz(2)), 1, LimitKey::ClientIp);
        assert!(l.check(ip("192.0.2.1"), &none).is_ok());
        assert_eq!(
            l.check(ip("192.0.2.1"), &none),
            Err(RateLimited {
                retry_after_secs: 30
            })
        );
        clock.advance(Duration::from_millis(29_500));
        assert_eq!(
            l.check(ip("192.0.2.1"), &none),
            Err(RateLimited {
                retry_after_secs: 1
            })
        );

        let (fast, _) = limiter(Rate::PerSecond(nz(10)), 1, LimitKey::ClientIp);
        assert!(fast.check(ip("192.0.2.1"), &none).is_ok());
        // 100 ms to wait: still "1", never "0".
        assert_eq!(
            fast.check(ip("192.0.2.1"), &none),
            Err(RateLimited {
                retry_after_secs: 1
            })
        );
    }

    #[test]
    fn refills_one_request_per_interval() {
        let none = HeaderMap::new();
        let (l, clock) = limiter(Rate::PerSecond(nz(10)), 5, LimitKey::ClientIp);
        assert_eq!(admitted_in_a_row(&l, "192.0.2.1", &none), 5);
        clock.advance(Duration::from_millis(100));
        assert_eq!(admitted_in_a_row(&l, "192.0.2.1", &none), 1);
        clock.advance(Duration::from_millis(250));
        assert_eq!(admitted_in_a_row(&l, "192.0.2.1", &none), 2);
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            admitted_in_a_row(&l, "192.0.2.1", &none),
            5,
            "refills up to the burst, no more"
        );
    }

    #[test]
    fn client_ip_key_separates_addresses_and_collapses_ipv6_to_its_64() {
        let none = HeaderMap::new();
        let (l, _) = limiter(Rate::PerMinute(nz(1)), 1, LimitKey::ClientIp);
        assert!(l.check(ip("192.0.2.1"), &none).is_ok());
        assert!(l.check(ip("192.0.2.2"), &none).is_ok());
        assert!(
            l.check(ip("::ffff:192.0.2.1"), &none).is_err(),
            "mapped v4 is the same client"
        );
        assert!(l.check(ip("2001:db8:1:2::1"), &none).is_ok());
        assert!(
            l.check(ip("2001:db8:1:2:ffff::9"), &none).is_err(),
            "same /64"
        );
        assert!(l.check(ip("2001:db8:1:3::1"), &none).is_ok(), "next /64");
        assert_eq!(l.len(), 4);
    }

    #[test]
    fn route_key_is_one_bucket_for_everyone() {
        let none = HeaderMap::new();
        let (l, _) = limiter(Rate::PerMinute(nz(1)), 2, LimitKey::Route);
        assert!(l.check(ip("192.0.2.1"), &none).is_ok());
        assert!(l.check(ip("2001:db8::1"), &none).is_ok());
        assert!(l.check(ip("198.51.100.1"), &none).is_err());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn header_key_counts_per_value_and_falls_back_to_client_ip_when_missing() {
        let key: LimitKey = "header:X-Shop-Domain".parse().unwrap();
        let (l, _) = limiter(Rate::PerMinute(nz(1)), 1, key);
        let shop_a = header("x-shop-domain", "a.example");
        let shop_b = header("x-shop-domain", "b.example");
        let empty = header("x-shop-domain", "  ");
        let none = HeaderMap::new();
        assert!(l.check(ip("192.0.2.1"), &shop_a).is_ok());
        assert!(
            l.check(ip("192.0.2.2"), &shop_a).is_err(),
            "same value, other address: same bucket"
        );
        assert!(l.check(ip("192.0.2.1"), &shop_b).is_ok());
        assert!(
            l.check(ip("192.0.2.1"), &none).is_ok(),
            "missing: the client's own address bucket"
        );
        assert!(
            l.check(ip("192.0.2.1"), &empty).is_err(),
            "empty counts as missing"
        );
        assert!(l.check(ip("192.0.2.3"), &none).is_ok());
    }

    #[test]
    fn header_key_reads_every_line_of_the_header() {
        let (l, _) = limiter(
            Rate::PerMinute(nz(1)),
            1,
            "header:x-tenant".parse().unwrap(),
        );
        let mut two = header("x-tenant", "a");
        two.append(
            HeaderName::from_static("x-tenant"),
            HeaderValue::from_static("b"),
        );
        assert!(l.check(ip("192.0.2.1"), &header("x-tenant", "a")).is_ok());
        assert!(
            l.check(ip("192.0.2.1"), &two).is_ok(),
            "a then b is another key than a"
        );
    }

    #[test]
    fn keys_beyond_the_cap_share_one_overflow_bucket() {
        let none = HeaderMap::new();
        let clock = FakeRelativeClock::default();
        let settings = RateLimitSettings::new(Rate::PerMinute(nz(1)), nz(1), LimitKey::ClientIp)
            .unwrap()
            .with_max_keys(NonZeroUsize::new(2).unwrap());
        let l = RouteLimiter::with_clock(settings, clock.clone());
        assert!(l.check(ip("192.0.2.1"), &none).is_ok());
        assert!(l.check(ip("192.0.2.2"), &none).is_ok());
        assert!(l.is_saturated());
        assert!(
            l.check(ip("192.0.2.3"), &none).is_ok(),
            "first newcomer gets the overflow bucket"
        );
        assert!(
            l.check(ip("192.0.2.4"), &none).is_err(),
            "second newcomer shares it"
        );
        assert!(
            l.check(ip("192.0.2.1"), &none).is_err(),
            "known keys keep their own bucket"
        );
        assert_eq!(l.len(), 2, "memory stays at the cap");

        // Once the buckets have been full again for an interval, pruning frees room.
        clock.advance(Duration::from_secs(121));
        l.retain_recent();
        assert_eq!(l.len(), 0);
        assert!(!l.is_saturated());
        assert!(l.check(ip("192.0.2.4"), &none).is_ok());
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn retain_recent_keeps_buckets_still_in_use() {
        let none = HeaderMap::new();
        let (l, clock) = limiter(Rate::PerSecond(nz(1)), 10, LimitKey::ClientIp);
        assert!(l.check(ip("192.0.2.1"), &none).is_ok());
        clock.advance(Duration::from_millis(2_500));
        assert_eq!(admitted_in_a_row(&l, "192.0.2.2", &none), 10);
        l.retain_recent();
        assert_eq!(
            l.len(),
            1,
            "the idle, refilled bucket is dropped; the busy one stays"
        );
        assert!(
            l.check(ip("192.0.2.2"), &none).is_err(),
            "its state survived"
        );
    }

    #[test]
    fn ratelimit_header_values_follow_the_draft() {
        let none = HeaderMap::new();
        let s =
            RateLimitSettings::new(Rate::PerSecond(nz(50)), nz(100), LimitKey::ClientIp).unwrap();
        assert_eq!(s.policy_header_value(), "\"default\";q=100;w=2");
        let s = RateLimitSettings::new(Rate::PerMinute(nz(10)), nz(5), LimitKey::Route).unwrap();
        assert_eq!(s.policy_header_value(), "\"default\";q=5;w=30");
        let s = RateLimitSettings::new(Rate::PerSecond(nz(1000)), nz(1), LimitKey::Route).unwrap();
        assert_eq!(s.window_secs(), 1, "never a zero window");

        let (l, clock) = limiter(Rate::PerSecond(nz(1)), 3, LimitKey::ClientIp);
        let first = l.check(ip("192.0.2.1"), &none).unwrap();
        assert_eq!(
            first,
            Admitted {
                remaining: 2,
                reset_secs: 1
            }
        );
        assert_eq!(first.header_value(), "\"default\";r=2;t=1");
        assert_eq!(
            l.check(ip("192.0.2.1"), &none).unwrap(),
            Admitted {
                remaining: 1,
                reset_secs: 2
            }
        );
        assert_eq!(
            l.check(ip("192.0.2.1"), &none).unwrap(),
            Admitted {
                remaining: 0,
                reset_secs: 3
            }
        );
        let refused = l.check(ip("192.0.2.1"), &none).unwrap_err();
        assert_eq!(refused.header_value(), "\"default\";r=0;t=1");
        assert_eq!(refused.retry_after_value(), "1");
        clock.advance(Duration::from_millis(400));
        assert_eq!(
            l.check(ip("192.0.2.1"), &none)
                .unwrap_err()
                .retry_after_secs,
            1
        );
        assert_eq!(RATELIMIT_POLICY.as_str(), "ratelimit-policy");
        assert_eq!(RATELIMIT.as_str(), "ratelimit");
    }

    #[test]
    fn settings_compare_equal_only_when_nothing_changed() {
        let a =
            RateLimitSettings::new(Rate::PerSecond(nz(50)), nz(100), LimitKey::ClientIp).unwrap();
        let b = RateLimitSettings::new(
            Rate::PerSecond(nz(50)),
            nz(100),
            "client_ip".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            RateLimitSettings::new(Rate::PerSecond(nz(50)), nz(99), LimitKey::ClientIp).unwrap()
        );
        assert_ne!(
            a,
            RateLimitSettings::new(Rate::PerMinute(nz(50)), nz(100), LimitKey::ClientIp).unwrap()
        );
        assert_ne!(
            a,
            RateLimitSettings::new(Rate::PerSecond(nz(50)), nz(100), LimitKey::Route).unwrap()
        );
        assert_ne!(a, a.clone().with_max_keys(NonZeroUsize::new(5).unwrap()));
        let h1: LimitKey = "header:X-Tenant".parse().unwrap();
        let h2: LimitKey = "header:x-tenant".parse().unwrap();
        assert_eq!(h1, h2, "header names are case-insensitive");
        let l = RouteLimiter::new(a.clone());
        assert_eq!(l.settings(), &b);
    }

    #[test]
    fn limit_key_parses_the_config_spellings() {
        assert_eq!("client_ip".parse::<LimitKey>(), Ok(LimitKey::ClientIp));
        assert_eq!("route".parse::<LimitKey>(), Ok(LimitKey::Route));
        assert_eq!(
            "header:X-GitHub-Hook-ID".parse::<LimitKey>(),
            Ok(LimitKey::Header(HeaderName::from_static(
                "x-github-hook-id"
            )))
        );
        assert!(matches!(
            "ip".parse::<LimitKey>(),
            Err(LimitKeyError::Unknown(_))
        ));
        assert!(matches!(
            "header:".parse::<LimitKey>(),
            Err(LimitKeyError::BadHeaderName(_))
        ));
        assert!(matches!(
            "header:a b".parse::<LimitKey>(),
            Err(LimitKeyError::BadHeaderName(_))
        ));
        assert_eq!(
            "header:X-Tenant".parse::<LimitKey>().unwrap().to_string(),
            "header:x-tenant"
        );
    }

    #[test]
    fn refuses_absurd_rates() {
        assert_eq!(
            RateLimitSettings::new(
                Rate::PerSecond(nz(MAX_PER_SECOND + 1)),
                nz(1),
                LimitKey::Route
            ),
            Err(SettingsError::RateTooHigh(MAX_PER_SECOND + 1))
        );
        assert!(RateLimitSettings::new(
            Rate::PerSecond(nz(MAX_PER_SECOND)),
            nz(1),
            LimitKey::Route
        )
        .is_ok());
    }

    #[test]
    fn limiter_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<RouteLimiter>();
        shareable::<RouteLimiter<FakeRelativeClock>>();
    }

    #[test]
    fn concurrent_checks_never_admit_more_than_the_burst() {
        let none = HeaderMap::new();
        let (l, _) = limiter(Rate::PerMinute(nz(1)), 50, LimitKey::Route);
        let l = std::sync::Arc::new(l);
        let admitted: u32 = (0..4)
            .map(|_| {
                let l = l.clone();
                let none = none.clone();
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| l.check(ip("192.0.2.1"), &none).is_ok())
                        .count() as u32
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum();
        assert_eq!(admitted, 50);
    }

    #[test]
    fn the_fallback_share_divides_rate_and_burst_never_below_one() {
        let settings =
            RateLimitSettings::new(Rate::PerSecond(nz(20)), nz(5), LimitKey::Route).unwrap();
        let half = settings.divided(2);
        assert_eq!(half.rate(), Rate::PerSecond(nz(10)));
        assert_eq!(half.burst(), nz(2));
        let third = RateLimitSettings::new(Rate::PerSecond(nz(1)), nz(1), LimitKey::ClientIp)
            .unwrap()
            .divided(3);
        assert_eq!(third.rate(), Rate::PerMinute(nz(20)));
        assert_eq!(third.burst(), nz(1));
        assert_eq!(settings.divided(1), settings);
    }

    #[test]
    fn shared_keys_are_the_same_on_every_instance() {
        let settings = RateLimitSettings::new(
            Rate::PerSecond(nz(5)),
            nz(5),
            LimitKey::Header(HeaderName::from_static("x-tenant")),
        )
        .unwrap();
        let (a, b) = (
            RouteLimiter::new(settings.clone()),
            RouteLimiter::new(settings),
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("acme"));
        let ka = a.shared_key("p:rl:r:", ip("10.0.0.1"), &headers);
        assert_eq!(ka, b.shared_key("p:rl:r:", ip("10.0.0.2"), &headers));
        assert!(ka.starts_with("p:rl:r:h:") && ka.len() == "p:rl:r:h:".len() + 32);
        assert_eq!(
            a.shared_key("p:", ip("2001:db8::1"), &HeaderMap::new()),
            "p:6:20010db800000000",
            "an IPv6 client by its /64"
        );
        assert_eq!(
            a.shared_key("p:", ip("::ffff:10.1.2.3"), &HeaderMap::new()),
            "p:4:10.1.2.3"
        );
    }
}
