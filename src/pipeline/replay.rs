//! Stage 8, duplicates: remembers which event ids were delivered, so a provider's retry of an
//! event the backend already accepted gets a 2xx without a second delivery. An id counts as
//! delivered only after the upstream answered 2xx; a retry after an upstream failure goes through,
//! or the event would be lost. While one copy is being forwarded, another copy is turned away
//! (the sender retries), so two copies never reach the backend at once.
//!
//! The state sits behind [`ReplayStore`] so a shared store (Redis, `cluster::replay`) can
//! stand in front of the in-memory one. Memory is bounded by a cap on entries (oldest dropped
//! first) and each entry's window.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A future a [`ReplayStore`] returns (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a store says about an event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not seen (or its memory expired): this request now owns delivery.
    Fresh,
    /// Delivered inside the window: answer 2xx, do not forward.
    Delivered,
    /// Another copy is being forwarded right now.
    InFlight,
}

pub trait ReplayStore: Send + Sync {
    /// Claims `key` for delivery; only a `Fresh` claim may forward. Async: a shared store asks
    /// Redis (within its deadline).
    fn claim<'a>(&'a self, key: &'a str, now: Instant) -> BoxFuture<'a, Claim>;
    /// The upstream accepted the event: remember it until `now + window`. Never blocks (a
    /// shared store sends it from a task).
    fn delivered(&self, key: &str, now: Instant, window: Duration);
    /// The forward failed: forget the claim so the provider's retry is forwarded. Never blocks.
    fn release(&self, key: &str);
    /// The shared Redis to use from now on (`None`: local only). Called at start and on each
    /// reload; a store without a shared side ignores it.
    fn use_redis(&self, _redis: Option<Arc<crate::cluster::RedisHandle>>) {}
}

/// Entries beyond this are dropped oldest first: ~100 bytes each, so about 20 MB at most.
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, Copy)]
enum State {
    InFlight,
    Delivered { until: Instant },
}

/// The in-memory store. One mutex: the critical sections are a hash lookup and an insert.
pub struct MemoryReplayStore {
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, State>,
    /// Keys in the order they were delivered, to drop the oldest when over the cap.
    order: VecDeque<String>,
}

impl MemoryReplayStore {
    pub fn new(max_entries: usize) -> MemoryReplayStore {
        MemoryReplayStore {
            max_entries: max_entries.max(1),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a map that is still consistent enough to use.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `key` is claimed here and being forwarded.
    pub fn is_in_flight(&self, key: &str) -> bool {
        matches!(self.lock().entries.get(key), Some(State::InFlight))
    }

    /// True when `key` was delivered and is still remembered at `now`.
    pub fn is_delivered(&self, key: &str, now: Instant) -> bool {
        matches!(self.lock().entries.get(key), Some(State::Delivered { until }) if *until > now)
    }

    /// [`ReplayStore::claim`], without the future.
    pub fn claim_now(&self, key: &str, now: Instant) -> Claim {
        let mut inner = self.lock();
        match inner.entries.get(key) {
            Some(State::InFlight) => Claim::InFlight,
            Some(State::Delivered { until }) if *until > now => Claim::Delivered,
            _ => {
                inner.entries.insert(key.to_string(), State::InFlight);
                Claim::Fresh
            }
        }
    }
}

impl ReplayStore for MemoryReplayStore {
    fn claim<'a>(&'a self, key: &'a str, now: Instant) -> BoxFuture<'a, Claim> {
        Box::pin(std::future::ready(self.claim_now(key, now)))
    }

    fn delivered(&self, key: &str, now: Instant, window: Duration) {
        let mut inner = self.lock();
        inner.entries.insert(
            key.to_string(),
            State::Delivered {
                until: now + window,
            },
        );
        inner.order.push_back(key.to_string());
        while inner.order.len() > self.max_entries {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            // Only drop it if it is not claimed again right now.
            if let Some(State::Delivered { .. }) = inner.entries.get(&oldest) {
                inner.entries.remove(&oldest);
            }
        }
    }

    fn release(&self, key: &str) {
        let mut inner = self.lock();
        if let Some(State::InFlight) = inner.entries.get(key) {
            inner.entries.remove(key);
        }
    }
}

/// A `Fresh` claim that releases itself unless marked delivered, whatever path the request
/// takes after claiming (upstream error, timeout, early return).
pub struct ClaimGuard {
    store: Arc<dyn ReplayStore>,
    key: String,
    done: bool,
}

impl ClaimGuard {
    pub fn new(store: Arc<dyn ReplayStore>, key: String) -> ClaimGuard {
        ClaimGuard {
            store,
            key,
            done: false,
        }
    }

    pub fn delivered(mut self, window: Duration) {
        self.store.delivered(&self.key, Instant::now(), window);
        self.done = true;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.done {
            self.store.release(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_delivered_id_is_a_duplicate_inside_its_window_only() {
        let store = MemoryReplayStore::new(10);
        let t0 = Instant::now();
        assert_eq!(store.claim_now("a", t0), Claim::Fresh);
        store.delivered("a", t0, HOUR);
        assert_eq!(store.claim_now("a", t0 + HOUR / 2), Claim::Delivered);
        assert_eq!(
            store.claim_now("a", t0 + HOUR + Duration::from_secs(1)),
            Claim::Fresh
        );
    }

    #[test]
    fn a_second_copy_in_flight_is_turned_away_and_a_failed_forward_is_forgotten() {
        let store = MemoryReplayStore::new(10);
        let t0 = Instant::now();
        assert_eq!(store.claim_now("a", t0), Claim::Fresh);
        assert_eq!(store.claim_now("a", t0), Claim::InFlight);
        store.release("a");
        assert_eq!(
            store.claim_now("a", t0),
            Claim::Fresh,
            "the retry after a failure is forwarded"
        );
    }

    #[test]
    fn the_guard_releases_unless_delivered() {
        let memory = Arc::new(MemoryReplayStore::new(10));
        let store: Arc<dyn ReplayStore> = memory.clone();
        let now = Instant::now();
        assert_eq!(memory.claim_now("a", now), Claim::Fresh);
        drop(ClaimGuard::new(Arc::clone(&store), "a".into()));
        assert_eq!(memory.claim_now("a", now), Claim::Fresh);
        ClaimGuard::new(Arc::clone(&store), "a".into()).delivered(HOUR);
        assert_eq!(memory.claim_now("a", now), Claim::Delivered);
    }

    #[test]
    fn memory_stays_under_the_cap_dropping_the_oldest() {
        let store = MemoryReplayStore::new(3);
        let now = Instant::now();
        for key in ["a", "b", "c", "d", "e"] {
            assert_eq!(store.claim_now(key, now), Claim::Fresh);
            store.delivered(key, now, HOUR);
        }
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.claim_now("a", now),
            Claim::Fresh,
            "the oldest was forgotten"
        );
        assert_eq!(store.claim_now("e", now), Claim::Delivered);
    }
}
