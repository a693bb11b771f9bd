//! Delivery workers: per upstream, a queue of due events, a concurrency limit and a circuit
//! breaker; and the retry policy ([`decide`]), a pure function of the event, the attempt's
//! result and the time, so tests drive it with a [`FakeClock`].
//!
//! Semantics: at least once. 2xx is done; `non_retryable` statuses are dead at once; every
//! other answer (3xx included: never followed), a timeout or a connection failure is retried
//! with capped exponential backoff and jitter, `Retry-After` honoured within the backoff bounds,
//! until `max_attempts` or `max_age`, then dead. Order is not guaranteed: events are attempted
//! when due, several at once, and a retried event goes behind newer ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::send::Sent;
use super::spool::{EventMeta, Trigger};
use crate::config::DeliverySettings;

/// Wall-clock time in Unix milliseconds, behind a trait so tests can move it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told.
#[derive(Default)]
pub struct FakeClock(AtomicU64);

impl FakeClock {
    pub fn at(ms: u64) -> FakeClock {
        FakeClock(AtomicU64::new(ms))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What happens to an event after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { at_ms: u64, reason: String },
    Dead { reason: String },
}

/// 64 bits that differ from call to call and from process to process, without a `getrandom`
/// syscall (the id and the jitter took 2 % of a queued event's CPU that way): the std
/// hasher's random keys (per thread) over a process-wide counter. For jitter and ids, not for
/// secrets.
pub fn cheap_random() -> u64 {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static KEYS: std::collections::hash_map::RandomState =
            std::collections::hash_map::RandomState::new();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    KEYS.with(|keys| keys.hash_one(n))
}

/// The delay before retry number `n` (1 = the first retry): `initial * 2^(n-1)`, capped at
/// `max`, then jittered into its upper half (`jitter` in [0, 1)).
pub fn backoff(settings: &DeliverySettings, n: u32, jitter: f64) -> Duration {
    let initial = settings.backoff_initial.as_millis() as f64;
    let max = settings.backoff_max.as_millis() as f64;
    let base = (initial * 2f64.powi(n.saturating_sub(1).min(62) as i32)).min(max);
    let jittered = base / 2.0 + base / 2.0 * jitter.clamp(0.0, 1.0);
    Duration::from_millis(jittered.max(1.0) as u64)
}

/// The retry policy. `meta` is the event after the attempt was counted.
pub fn decide(
    settings: &DeliverySettings,
    meta: &EventMeta,
    sent: &Sent,
    now_ms: u64,
    jitter: f64,
) -> Verdict {
    let (reason, retry_after) = match sent {
        Sent::Status { code, .. } if (200..300).contains(code) => return Verdict::Delivered,
        Sent::Status { code, .. } if settings.non_retryable.contains(code) => {
            return Verdict::Dead {
                reason: format!("non_retryable {code}"),
            }
        }
        Sent::Status { code, retry_after } => (format!("status {code}"), *retry_after),
        Sent::Failed { reason } => ((*reason).to_string(), None),
        Sent::Invalid { reason } => {
            return Verdict::Dead {
                reason: format!("invalid {reason}"),
            }
        }
    };
    if meta.round_attempts >= settings.max_attempts {
        return Verdict::Dead {
            reason: format!("max_attempts ({reason})"),
        };
    }
    let mut delay = backoff(settings, meta.round_attempts, jitter);
    if let Some(asked) = retry_after {
        delay = delay.max(asked.min(settings.backoff_max));
    }
    let at_ms = now_ms.saturating_add(delay.as_millis() as u64);
    let max_age = settings.max_age.as_millis() as u64;
    if at_ms.saturating_sub(meta.round_start_ms) > max_age {
        return Verdict::Dead {
            reason: format!("max_age ({reason})"),
        };
    }
    Verdict::Retry { at_ms, reason }
}

/// Whether an attempt's result counts against the upstream's health.
pub fn is_failure(sent: &Sent) -> bool {
    match sent {
        Sent::Status { code, .. } => *code >= 500 || *code == 429 || *code == 408,
        Sent::Failed { .. } => true,
        Sent::Invalid { .. } => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What the breaker allows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Go,
    /// The one probe of a half-open breaker.
    Probe,
    /// Nothing until then (Unix ms): no attempt is spent on a backend known to be down.
    WaitUntil(u64),
}

/// Opens when, over the last `breaker_window` attempts (at least half a window of them), the
/// share that failed reaches `breaker_failure_percent`; after `breaker_cooldown` one probe goes
/// out: success closes it, failure opens it again.
#[derive(Debug)]
pub struct Breaker {
    results: VecDeque<bool>,
    state: BreakerState,
    opened_ms: u64,
    probing: bool,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            results: VecDeque::new(),
            state: BreakerState::Closed,
            opened_ms: 0,
            probing: false,
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn admit(&mut self, settings: &DeliverySettings, now_ms: u64) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::Go,
            BreakerState::Open => {
                let until = self.opened_ms + settings.breaker_cooldown.as_millis() as u64;
                if now_ms >= until {
                    self.state = BreakerState::HalfOpen;
                    self.probing = true;
                    Admit::Probe
                } else {
                    Admit::WaitUntil(until)
                }
            }
            BreakerState::HalfOpen if self.probing => Admit::WaitUntil(now_ms + 50),
            BreakerState::HalfOpen => {
                self.probing = true;
                Admit::Probe
            }
        }
    }

    /// A probe that was allowed but not sent: the next due event may probe instead.
    pub fn cancel_probe(&mut self) {
        self.probing = false;
    }

    pub fn record(&mut self, settings: &DeliverySettings, failed: bool, now_ms: u64) {
        match self.state {
            BreakerState::HalfOpen => {
                self.probing = false;
                if failed {
                    self.state = BreakerState::Open;
                    self.opened_ms = now_ms;
                } else {
                    self.state = BreakerState::Closed;
                    self.results.clear();
                }
            }
            BreakerState::Open => {}
            BreakerState::Closed => {
                let window = settings.breaker_window.max(1) as usize;
                self.results.push_back(failed);
                while self.results.len() > window {
                    self.results.pop_front();
                }
                let failures = self.results.iter().filter(|f| **f).count();
                if self.results.len() * 2 >= window
                    && failures * 100
                        >= self.results.len() * settings.breaker_failure_percent as usize
                {
                    self.state = BreakerState::Open;
                    self.opened_ms = now_ms;
                    self.results.clear();
                }
            }
        }
    }
}

/// A scheduled event.
#[derive(Debug, Clone)]
pub struct Due {
    pub due_ms: u64,
    pub trigger: Trigger,
    /// Shared with the upstream's other events of this route ([`Inner::routes`]).
    pub route: Arc<str>,
    pub received_ms: u64,
    seq: u64,
    pub in_flight: bool,
    /// A replay asked for while this event was being attempted: it applies when the attempt
    /// ends, unless that attempt delivered it.
    pub replay_requested: bool,
}

#[derive(Default)]
struct Inner {
    /// Due time, sequence number, id: the id is the same allocation as its key in `entries`.
    heap: BinaryHeap<Reverse<(u64, u64, Arc<str>)>>,
    entries: HashMap<Arc<str>, Due>,
    seq: u64,
    /// The routes of these events, each name held once: a backlog of millions of events of a
    /// few routes need not hold millions of copies of their names.
    routes: Vec<Arc<str>>,
}

impl Inner {
    /// Puts `event` in the entries (not the heap); returns its sequence number and its id as
    /// the entries hold it.
    fn insert(
        &mut self,
        event: Event<'_>,
        due_ms: u64,
        trigger: Trigger,
        in_flight: bool,
    ) -> (u64, Arc<str>) {
        self.seq += 1;
        let id = match self.entries.get_key_value(event.id) {
            Some((id, _)) => Arc::clone(id),
            None => Arc::from(event.id),
        };
        let route = match self.routes.iter().find(|r| ***r == *event.route) {
            Some(route) => Arc::clone(route),
            None => {
                let route: Arc<str> = Arc::from(event.route);
                self.routes.push(Arc::clone(&route));
                route
            }
        };
        self.entries.insert(
            Arc::clone(&id),
            Due {
                due_ms,
                trigger,
                route,
                received_ms: event.received_ms,
                seq: self.seq,
                in_flight,
                replay_requested: false,
            },
        );
        (self.seq, id)
    }
}

/// What the queue keeps of an event.
#[derive(Clone, Copy)]
pub struct Event<'a> {
    pub id: &'a str,
    pub route: &'a str,
    pub received_ms: u64,
}

impl<'a> From<&'a EventMeta> for Event<'a> {
    fn from(meta: &'a EventMeta) -> Event<'a> {
        Event {
            id: &meta.id,
            route: &meta.route,
            received_ms: meta.received_ms,
        }
    }
}

/// One upstream's pending events, in due order (lazily: a rescheduled event's old heap entry
/// is skipped when its sequence number no longer matches).
pub struct UpstreamQueue {
    pub name: String,
    inner: Mutex<Inner>,
    pub notify: Notify,
    pub permits: Arc<Semaphore>,
    /// The permits there are (attempts at once); a reload may change it ([`Self::resize`]).
    concurrency: AtomicU32,
    pub breaker: Mutex<Breaker>,
}

impl UpstreamQueue {
    pub fn new(name: &str, concurrency: usize) -> UpstreamQueue {
        UpstreamQueue {
            name: name.to_string(),
            inner: Mutex::default(),
            notify: Notify::new(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: (concurrency.clamp(1, u32::MAX as usize) as u32).into(),
            breaker: Mutex::default(),
        }
    }

    /// The attempts allowed at once.
    pub fn concurrency(&self) -> u32 {
        self.concurrency.load(Ordering::SeqCst)
    }

    /// Makes `to` attempts allowed at once (a reload). Fewer take effect as attempts under way
    /// finish: the slots they give back are withdrawn instead of reused.
    pub fn resize(&self, to: usize) {
        let to = to.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
        let from = self.concurrency.swap(to, Ordering::SeqCst);
        if to > from {
            self.permits.add_permits((to - from) as usize);
        } else if to < from {
            let owed = (from - to) as usize;
            let left = owed - self.permits.forget_permits(owed);
            // Outside a runtime (never, from a reload) the extra slots would stay.
            if let (true, Ok(runtime)) = (left > 0, tokio::runtime::Handle::try_current()) {
                let permits = Arc::clone(&self.permits);
                runtime.spawn(async move {
                    if let Ok(taken) = permits.acquire_many_owned(left as u32).await {
                        taken.forget();
                    }
                });
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn breaker(&self) -> MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Schedules (or reschedules) `event` at `due_ms`. Returns false when the event is
    /// being attempted right now (the attempt's own result decides what follows).
    pub fn schedule<'a>(&self, event: impl Into<Event<'a>>, due_ms: u64, trigger: Trigger) -> bool {
        let event = event.into();
        let mut inner = self.lock();
        if let Some(due) = inner.entries.get_mut(event.id).filter(|d| d.in_flight) {
            due.replay_requested |= trigger == Trigger::Replay;
            return false;
        }
        let (seq, id) = inner.insert(event, due_ms, trigger, false);
        inner.heap.push(Reverse((due_ms, seq, id)));
        drop(inner);
        self.notify.notify_one();
        true
    }

    /// Marks `meta`'s event in flight for an attempt that starts now, outside the due order
    /// (see [`super::Delivery::enqueue`]). False if the queue already knows the event.
    pub fn begin(&self, meta: &EventMeta, trigger: Trigger) -> bool {
        let mut inner = self.lock();
        if inner.entries.contains_key(meta.id.as_str()) {
            return false;
        }
        inner.insert(meta.into(), meta.next_attempt_ms, trigger, true);
        true
    }

    /// Whether an event is due now; if not, when the earliest one is.
    pub fn peek(&self, now_ms: u64) -> Result<(), Option<u64>> {
        let mut inner = self.lock();
        loop {
            let Some(Reverse((due, seq, id))) = inner.heap.peek().cloned() else {
                return Err(None);
            };
            if !inner
                .entries
                .get(&id)
                .is_some_and(|d| d.seq == seq && !d.in_flight)
            {
                inner.heap.pop();
                continue;
            }
            return if due > now_ms { Err(Some(due)) } else { Ok(()) };
        }
    }

    /// Ends an attempt that found its event gone or no longer pending.
    pub fn finish_id(&self, id: &str) {
        self.lock().entries.remove(id);
    }

    /// The next due event (marked in flight), or when the earliest one is due.
    pub fn take_due(&self, now_ms: u64) -> Result<(Arc<str>, Trigger), Option<u64>> {
        let mut inner = self.lock();
        loop {
            let Some(Reverse((due, seq, id))) = inner.heap.peek().cloned() else {
                return Err(None);
            };
            let current = inner
                .entries
                .get(&id)
                .is_some_and(|d| d.seq == seq && !d.in_flight);
            if !current {
                inner.heap.pop();
                continue;
            }
            if due > now_ms {
                return Err(Some(due));
            }
            inner.heap.pop();
            let Some(entry) = inner.entries.get_mut(&id) else {
                continue;
            };
            entry.in_flight = true;
            return Ok((id, entry.trigger));
        }
    }

    /// Ends an attempt: the event is rescheduled, or forgotten when `next` is `None`.
    pub fn finish(&self, meta: &EventMeta, next: Option<(u64, Trigger)>) {
        {
            let mut inner = self.lock();
            if let Some(entry) = inner.entries.get_mut(meta.id.as_str()) {
                entry.in_flight = false;
            }
            if next.is_none() {
                inner.entries.remove(meta.id.as_str());
            }
        }
        if let Some((due, trigger)) = next {
            self.schedule(meta, due, trigger);
        }
    }

    /// Whether a replay was asked for while `id` was in flight (and forgets the request).
    pub fn take_replay_request(&self, id: &str) -> bool {
        self.lock()
            .entries
            .get_mut(id)
            .is_some_and(|d| std::mem::take(&mut d.replay_requested))
    }

    /// Forgets an event (purged, or no longer pending). In-flight ones finish first.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        if inner.entries.get(id).is_some_and(|d| !d.in_flight) {
            inner.entries.remove(id);
        }
    }

    /// Pending events and the oldest one's arrival, by route.
    pub fn pending_by_route(&self) -> HashMap<String, (usize, u64)> {
        let inner = self.lock();
        let mut out: HashMap<Arc<str>, (usize, u64)> = HashMap::new();
        for due in inner.entries.values() {
            let slot = out.entry(Arc::clone(&due.route)).or_insert((0, u64::MAX));
            slot.0 += 1;
            slot.1 = slot.1.min(due.received_ms);
        }
        out.into_iter().map(|(r, v)| (r.to_string(), v)).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::State;

    fn settings() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(5),
            backoff_max: Duration::from_secs(60),
            breaker_window: 4,
            breaker_failure_percent: 50,
            breaker_cooldown: Duration::from_secs(30),
            ..DeliverySettings::default()
        }
    }

    fn event(round_attempts: u32, round_start_ms: u64) -> EventMeta {
        EventMeta {
            id: "e".into(),
            route: "r".into(),
            upstream: "u".into(),
            method: "POST".into(),
            uri: "/".into(),
            idempotency_key: "e".into(),
            provider: None,
            client_ip: "127.0.0.1".into(),
            request_id: "q".into(),
            tls: false,
            received_ms: round_start_ms,
            state: State::Pending,
            attempts: round_attempts,
            round_attempts,
            round_start_ms,
            next_attempt_ms: 0,
            trigger: Trigger::Initial,
            updated_ms: 0,
            last_status: None,
            last_reason: None,
            stored_bytes: 0,
        }
    }

    fn status(code: u16) -> Sent {
        Sent::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn cheap_random_values_differ() {
        let values: std::collections::HashSet<u64> = (0..1000).map(|_| cheap_random()).collect();
        assert_eq!(values.len(), 1000);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let s = settings();
        assert_eq!(backoff(&s, 1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&s, 1, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(&s, 3, 1.0), Duration::from_secs(20));
        assert_eq!(backoff(&s, 30, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&s, u32::MAX, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn statuses_decide_delivered_dead_or_retry() {
        let clock = FakeClock::at(1_000_000);
        let s = settings();
        let e = event(1, clock.now_ms());
        assert_eq!(
            decide(&s, &e, &status(204), clock.now_ms(), 0.5),
            Verdict::Delivered
        );
        for dead in [400, 410, 413, 422] {
            assert!(
                matches!(
                    decide(&s, &e, &status(dead), clock.now_ms(), 0.5),
                    Verdict::Dead { .. }
                ),
                "{dead}"
            );
        }
        for retry in [301, 302, 404, 408, 425, 429, 500, 502, 503] {
            assert!(
                matches!(
                    decide(&s, &e, &status(retry), clock.now_ms(), 0.5),
                    Verdict::Retry { .. }
                ),
                "{retry}"
            );
        }
        let failed = Sent::Failed { reason: "connect" };
        assert_eq!(
            decide(&s, &e, &failed, clock.now_ms(), 1.0),
            Verdict::Retry {
                at_ms: clock.now_ms() + 5000,
                reason: "connect".into()
            }
        );
    }

    #[test]
    fn retry_after_is_honoured_within_the_backoff_cap() {
        let clock = FakeClock::at(1_000_000);
        let s = settings();
        let e = event(1, clock.now_ms());
        let asked = |secs| Sent::Status {
            code: 503,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            decide(&s, &e, &asked(30), clock.now_ms(), 1.0),
            Verdict::Retry {
                at_ms: clock.now_ms() + 30_000,
                reason: "status 503".into()
            }
        );
        // Beyond the cap, the cap; below the backoff, the backoff.
        assert_eq!(
            decide(&s, &e, &asked(3600), clock.now_ms(), 1.0),
            Verdict::Retry {
                at_ms: clock.now_ms() + 60_000,
                reason: "status 503".into()
            }
        );
        assert_eq!(
            decide(&s, &e, &asked(1), clock.now_ms(), 1.0),
            Verdict::Retry {
                at_ms: clock.now_ms() + 5_000,
                reason: "status 503".into()
            }
        );
    }

    #[test]
    fn max_attempts_and_max_age_end_in_dead() {
        let clock = FakeClock::at(10_000_000);
        let s = settings();
        let start = clock.now_ms();
        assert!(
            matches!(decide(&s, &event(5, start), &status(500), clock.now_ms(), 0.5), Verdict::Dead { reason } if reason.starts_with("max_attempts"))
        );
        clock.advance(Duration::from_secs(3599));
        assert!(
            matches!(decide(&s, &event(2, start), &status(500), clock.now_ms(), 0.5), Verdict::Dead { reason } if reason.starts_with("max_age"))
        );
        clock.advance(Duration::from_secs(3600));
        assert!(matches!(
            decide(&s, &event(2, start), &status(200), clock.now_ms(), 0.5),
            Verdict::Delivered
        ));
    }

    #[test]
    fn breaker_opens_on_failures_waits_then_probes() {
        let clock = FakeClock::at(0);
        let s = settings();
        let mut b = Breaker::default();
        b.record(&s, true, clock.now_ms());
        assert_eq!(b.state(), BreakerState::Closed, "not before half a window");
        b.record(&s, true, clock.now_ms());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(&s, clock.now_ms()), Admit::WaitUntil(30_000));
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(&s, clock.now_ms()), Admit::Probe);
        assert!(
            matches!(b.admit(&s, clock.now_ms()), Admit::WaitUntil(_)),
            "one probe at a time"
        );
        b.record(&s, true, clock.now_ms());
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(30));
        assert_eq!(b.admit(&s, clock.now_ms()), Admit::Probe);
        b.record(&s, false, clock.now_ms());
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(&s, clock.now_ms()), Admit::Go);
    }

    #[test]
    fn queue_hands_out_due_events_once_and_skips_rescheduled_ones() {
        let q = UpstreamQueue::new("u", 2);
        let mut a = event(0, 0);
        a.id = "a".into();
        let mut b = event(0, 0);
        b.id = "b".into();
        q.schedule(&a, 100, Trigger::Initial);
        q.schedule(&b, 50, Trigger::Initial);
        q.schedule(&a, 10, Trigger::Replay);
        assert_eq!(q.take_due(5), Err(Some(10)));
        assert_eq!(q.take_due(100), Ok(("a".into(), Trigger::Replay)));
        assert_eq!(q.take_due(100), Ok(("b".into(), Trigger::Initial)));
        assert_eq!(
            q.take_due(1000),
            Err(None),
            "the stale entry for a is skipped"
        );
        assert!(!q.schedule(&a, 0, Trigger::Replay), "in flight");
        assert!(
            q.take_replay_request("a"),
            "the replay waits for the attempt's end"
        );
        assert!(!q.take_replay_request("a"));
        q.finish(&a, None);
        q.finish(&b, Some((2000, Trigger::Retry)));
        assert_eq!(q.len(), 1);
    }
}
