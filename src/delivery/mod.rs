//! Durable delivery (issue 16): a route with `delivery: queue` answers its sender once the event
//! is in the spool (fsync'd), and workers deliver it to the upstream later, with retries, dead
//! letters and replay. [`Delivery`] owns the spool, its writer thread and one queue and worker
//! loop per upstream. It never acknowledges an event that is not durable and never drops one
//! that was acknowledged: failures end as `dead`, kept until retention and replayable.
//!
//! Delivery is at least once (a crash between an upstream's 2xx and the commit that records
//! it sends the event again, with the same `Idempotency-Key`), and order is not guaranteed.

pub mod intake;
pub mod log;
mod meta_codec;
pub mod ops;
mod segments;
pub mod send;
pub mod spool;
pub mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::sync::{watch, OwnedSemaphorePermit};

use crate::config::{DeliveryConfig, DeliverySettings, QueueRoute};
use crate::observe::event;
use crate::observe::metrics::{
    AttemptLabels, BreakerLabels, Metrics, QueueLabels, RouteLabels, UpstreamLabels,
};
use crate::state::Shared;
use segments::SegmentSpool;
use send::Sent;
use spool::{EventMeta, Filter, Op, Spool, SpoolError, State, Trigger, Writer};
use worker::{Admit, BreakerState, Clock, SystemClock, UpstreamQueue, Verdict};

/// How often queue gauges are refreshed and retention is applied.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// Retention runs at most this often.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

pub struct Delivery {
    spool: Arc<dyn Spool>,
    writer: Writer,
    config: ArcSwap<DeliveryConfig>,
    clock: Arc<dyn Clock>,
    queues: Mutex<HashMap<String, Arc<UpstreamQueue>>>,
    /// Events by (route, state), kept in step with every commit.
    counts: Mutex<HashMap<(String, State), i64>>,
    shared: OnceLock<Weak<Shared>>,
    handle: OnceLock<tokio::runtime::Handle>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    failure_logged: AtomicBool,
    /// Set while delivered events are being removed to make room.
    evicting: AtomicBool,
    /// Events just spooled, with their payload, so the first attempt does not read them back
    /// from disk; bounded by [`FRESH_BYTES`]. An event not here is read from the spool.
    fresh: Mutex<HashMap<String, (EventMeta, bytes::Bytes)>>,
    fresh_bytes: std::sync::atomic::AtomicU64,
    /// The `kind: delivery` lines, written in batches.
    attempt_log: log::AttemptLog,
    /// The request path's worker threads, once they run: attempts go to them, round robin,
    /// with their idle upstream connections, rather than all to the main runtime's one thread.
    workers: OnceLock<Arc<crate::server::workers::Workers>>,
    /// Events listed at a time by work over many of them ([`Delivery::next_page`]).
    page: AtomicUsize,
}

/// [`Delivery::page`]: a spool of millions of events is never all in memory as `EventMeta`s
/// at once, and no listing holds the spool's lock (which commits wait for) for long: each
/// listed event's metadata is read from disk under it.
const PAGE: usize = 4096;

/// Payload bytes [`Delivery::fresh`] may hold.
const FRESH_BYTES: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {error}")]
pub struct OpenError {
    path: String,
    error: SpoolError,
}

impl Delivery {
    /// Opens the spool the config names, if any. Metrics of the commits go to `metrics`.
    pub fn open(
        config: &DeliveryConfig,
        metrics: &Metrics,
    ) -> Result<Option<Arc<Delivery>>, OpenError> {
        Self::open_with_clock(config, metrics, Arc::new(SystemClock))
    }

    /// [`Delivery::open`] with the clock retries, `max_age` and retention read (tests move it).
    fn open_with_clock(
        config: &DeliveryConfig,
        metrics: &Metrics,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<Arc<Delivery>>, OpenError> {
        let Some(spool_config) = &config.spool else {
            return Ok(None);
        };
        let open_error = |error| OpenError {
            path: spool_config.path.display().to_string(),
            error,
        };
        let segment_bytes = segments::segment_bytes_for(spool_config.max_bytes);
        let spool: Arc<dyn Spool> =
            Arc::new(SegmentSpool::open(&spool_config.path, segment_bytes).map_err(open_error)?);
        let observe = {
            let duration = metrics.delivery.commit_duration.clone();
            let errors = metrics.delivery.commit_errors.clone();
            let logged = AtomicBool::new(false);
            Box::new(
                move |_ops: usize, seconds: f64, result: &Result<(), SpoolError>| {
                    duration.observe(seconds);
                    if let Err(e) = result {
                        errors.inc();
                        if !logged.swap(true, Ordering::SeqCst) {
                            event(
                            "error",
                            "spool commit failed: no more queued events are acknowledged until restart",
                            json!({"error": e.to_string()}),
                        );
                        }
                    }
                },
            ) as spool::CommitObserver
        };
        let (writer, _thread) = Writer::start(Arc::clone(&spool), spool_config.max_bytes, observe)
            .map_err(|e| open_error(SpoolError::Store(e.to_string())))?;
        let counts = spool.counts().map_err(open_error)?;
        Ok(Some(Arc::new(Delivery {
            spool,
            writer,
            config: ArcSwap::from_pointee(config.clone()),
            clock,
            queues: Mutex::default(),
            counts: Mutex::new(counts),
            shared: OnceLock::new(),
            handle: OnceLock::new(),
            stop: watch::channel(false).0,
            tasks: Mutex::default(),
            failure_logged: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            fresh: Mutex::default(),
            fresh_bytes: Default::default(),
            attempt_log: log::AttemptLog::default(),
            workers: OnceLock::new(),
            page: AtomicUsize::new(PAGE),
        })))
    }

    /// Starts the workers on the current tokio runtime: every event not delivered is due now
    /// (a restart re-attempts what was in flight; at least once allows the duplicate).
    pub fn start(self: &Arc<Self>, shared: &Arc<Shared>) -> Result<(), SpoolError> {
        let _ = self.shared.set(Arc::downgrade(shared));
        let _ = self.handle.set(tokio::runtime::Handle::current());
        self.schedule_pending()?;
        let me = Arc::clone(self);
        let task = tokio::spawn(async move { me.housekeeping().await });
        self.lock_tasks().push(task);
        let me = Arc::clone(self);
        let task = tokio::spawn(async move { me.flush_attempt_log().await });
        self.lock_tasks().push(task);
        Ok(())
    }

    /// Makes every pending event due now, a page at a time. Returns how many.
    fn schedule_pending(self: &Arc<Self>) -> Result<usize, SpoolError> {
        let now = self.clock.now_ms();
        let page = self.page.load(Ordering::Relaxed);
        let (mut after, mut scheduled) = (None, 0);
        loop {
            let pending = self.spool.pending(after.as_deref(), page)?;
            let Some(last) = pending.last() else {
                return Ok(scheduled);
            };
            after = Some(last.id.clone());
            scheduled += pending.len();
            for event in &pending {
                let queued = worker::Event {
                    id: &event.id,
                    route: &event.route,
                    received_ms: event.received_ms,
                };
                self.queue(&event.upstream)
                    .schedule(queued, now, event.trigger);
            }
        }
    }

    /// The next page of events matching `filter`, oldest first; `filter.after_id` moves past
    /// it. Empty once there are no more.
    fn next_page(&self, filter: &mut Filter) -> Result<Vec<EventMeta>, SpoolError> {
        let events = self.spool.list(filter, self.page.load(Ordering::Relaxed))?;
        if let Some(last) = events.last() {
            filter.after_id = Some(last.id.clone());
        }
        Ok(events)
    }

    /// Runs attempts on the request path's worker threads from now on.
    pub fn use_workers(&self, workers: Arc<crate::server::workers::Workers>) {
        let _ = self.workers.set(workers);
    }

    /// A route's queue settings, when the route queues.
    pub fn queue_route(&self, route: &str) -> Option<QueueRoute> {
        self.config.load().queue_routes.get(route).cloned()
    }

    /// Takes a reloaded config's routes and policies, per-upstream concurrency included (the
    /// spool needs a restart). Call on the runtime the workers run on.
    pub fn reconfigure(&self, config: &DeliveryConfig) {
        self.config.store(Arc::new(config.clone()));
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, queue) in queues.iter() {
            queue.resize(self.settings(name).concurrency);
        }
    }

    /// The admin token, if one is set.
    pub fn admin_token(&self) -> Option<String> {
        self.config.load().admin_token.as_ref().map(|t| t.0.clone())
    }

    fn settings(&self, upstream: &str) -> DeliverySettings {
        self.config
            .load()
            .upstreams
            .get(upstream)
            .cloned()
            .unwrap_or_default()
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue of `upstream`, created (with its worker loop) on first use.
    fn queue(self: &Arc<Self>, upstream: &str) -> Arc<UpstreamQueue> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = queues.get(upstream) {
            return Arc::clone(q);
        }
        let q = Arc::new(UpstreamQueue::new(
            upstream,
            self.settings(upstream).concurrency,
        ));
        queues.insert(upstream.to_string(), Arc::clone(&q));
        drop(queues);
        if let Some(handle) = self.handle.get() {
            let (me, q2) = (Arc::clone(self), Arc::clone(&q));
            let task = handle.spawn(async move { me.run(q2).await });
            self.lock_tasks().push(task);
        }
        q
    }

    fn count(&self, route: &str, from: Option<State>, to: Option<State>) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(from) = from {
            *counts.entry((route.to_string(), from)).or_insert(0) -= 1;
        }
        if let Some(to) = to {
            *counts.entry((route.to_string(), to)).or_insert(0) += 1;
        }
    }

    /// Stores one event durably; resolves once its commit (shared with others) is on disk.
    pub async fn enqueue(
        self: &Arc<Self>,
        meta: EventMeta,
        payload: Vec<u8>,
    ) -> Result<(), SpoolError> {
        let payload = bytes::Bytes::from(payload);
        let payload_kept = payload.clone();
        let insert = |payload| {
            vec![Op::Insert {
                meta: meta.clone(),
                payload,
            }]
        };
        let mut result = self.writer.commit(insert(payload.clone())).await;
        // Delivered events are only kept for inspection: when they fill the spool, the oldest
        // go before retention (never a pending or dead one), and the event is tried once more.
        if result == Err(SpoolError::Full) && self.evict_delivered().await {
            result = self.writer.commit(insert(payload)).await;
        }
        match &result {
            Ok(()) => {
                self.count(&meta.route, None, Some(State::Pending));
                self.first_attempt(meta, payload_kept);
            }
            Err(SpoolError::Full) => {}
            Err(e) => {
                if !self.failure_logged.swap(true, Ordering::SeqCst) {
                    event(
                        "error",
                        "spool refuses events",
                        json!({"error": e.to_string()}),
                    );
                }
            }
        }
        result
    }

    /// Starts a just-stored event's first attempt. When its upstream has a free slot, a closed
    /// breaker and nothing due before it, the attempt runs at once on the caller's thread (the
    /// intake's worker, whose idle upstream connections it uses) instead of going through the
    /// upstream's queue on the main runtime: one cross-thread wake-up less per event, and
    /// deliveries spread over the workers (measured: bench/README.md, "Durable delivery").
    /// Otherwise it joins the queue. Either way the event and its payload stay in memory for
    /// that attempt: given to it, or kept in [`Delivery::fresh`] for it.
    fn first_attempt(self: &Arc<Self>, meta: EventMeta, payload: bytes::Bytes) {
        let queue = self.queue(&meta.upstream);
        let now = self.clock.now_ms();
        let started = self.handle.get().is_some() && !*self.stop.borrow();
        let free =
            started && queue.peek(now).is_err() && queue.breaker().state() == BreakerState::Closed;
        let permit = free
            .then(|| Arc::clone(&queue.permits).try_acquire_owned().ok())
            .flatten();
        match permit {
            Some(permit) if queue.begin(&meta, Trigger::Initial) => {
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    let id = meta.id.clone();
                    let event = Some((meta, payload));
                    me.attempt(&queue, &id, Trigger::Initial, permit, event)
                        .await;
                });
            }
            _ => {
                queue.schedule(&meta, meta.next_attempt_ms, Trigger::Initial);
                self.remember_fresh(meta, payload);
            }
        }
    }

    /// Removes the earliest-received delivered events, a tenth of `max_bytes` of them, when no other
    /// eviction is under way. Returns whether any went.
    async fn evict_delivered(&self) -> bool {
        if self.evicting.swap(true, Ordering::SeqCst) {
            return false;
        }
        let max = self.config.load().spool.as_ref().map_or(0, |s| s.max_bytes);
        let mut filter = Filter {
            state: Some(State::Delivered),
            ..Filter::default()
        };
        // The oldest arrivals first, a page at a time.
        let (mut freed, mut removed) = (0u64, false);
        while freed < max / 10 {
            let Ok(delivered) = self.next_page(&mut filter) else {
                break;
            };
            let chosen: Vec<EventMeta> = delivered
                .into_iter()
                .take_while(|m| {
                    let take = freed < max / 10;
                    freed += m.stored_bytes;
                    take
                })
                .collect();
            if chosen.is_empty() || self.remove(chosen).await.is_err() {
                break;
            }
            removed = true;
        }
        self.evicting.store(false, Ordering::SeqCst);
        removed
    }

    fn remember_fresh(&self, meta: EventMeta, payload: bytes::Bytes) {
        let size = payload.len() as u64;
        if self.fresh_bytes.fetch_add(size, Ordering::SeqCst) + size > FRESH_BYTES {
            self.fresh_bytes.fetch_sub(size, Ordering::SeqCst);
            return;
        }
        self.fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(meta.id.clone(), (meta, payload));
    }

    fn take_fresh(&self, id: &str) -> Option<(EventMeta, bytes::Bytes)> {
        let taken = self
            .fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some((_, payload)) = &taken {
            self.fresh_bytes
                .fetch_sub(payload.len() as u64, Ordering::SeqCst);
        }
        taken
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// One upstream's worker loop: takes due events while the breaker and the concurrency
    /// limit allow, each attempt on its own task.
    async fn run(self: Arc<Self>, queue: Arc<UpstreamQueue>) {
        let mut stop = self.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            let now = self.clock.now_ms();
            let wait_until = match queue.peek(now) {
                Err(at) => at,
                Ok(()) => {
                    let settings = self.settings(&queue.name);
                    let admit = queue.breaker().admit(&settings, now);
                    self.set_breaker_gauge(&queue);
                    match admit {
                        Admit::WaitUntil(at) => Some(at),
                        Admit::Go | Admit::Probe => {
                            let permit = tokio::select! {
                                p = Arc::clone(&queue.permits).acquire_owned() => p,
                                _ = stop.wait_for(|s| *s) => return,
                            };
                            let Ok(permit) = permit else { return };
                            match queue.take_due(self.clock.now_ms()) {
                                Ok((id, trigger)) => {
                                    let (me, q) = (Arc::clone(&self), Arc::clone(&queue));
                                    let attempt = async move {
                                        me.attempt(&q, &id, trigger, permit, None).await;
                                    };
                                    match self.workers.get() {
                                        Some(workers) => workers.spawn(attempt),
                                        None => drop(tokio::spawn(attempt)),
                                    }
                                }
                                Err(_) => {
                                    // Taken by a purge or replay meanwhile; a probe not sent.
                                    if admit == Admit::Probe {
                                        queue.breaker().cancel_probe();
                                    }
                                }
                            }
                            continue;
                        }
                    }
                }
            };
            let sleep = match wait_until {
                Some(at) => Duration::from_millis(at.saturating_sub(now).min(1000)),
                None => Duration::from_secs(1),
            };
            tokio::select! {
                _ = queue.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// One attempt of event `id`, and what follows from it.
    /// `permit` (a slot of the upstream's concurrency) is passed on once the upstream has
    /// answered and the result is handed to the writer, not when it is committed: waiting
    /// for an intake's fsync with the slot held made delivery fall behind intake (bench/).
    /// It goes to the next due event, if any ([`Delivery::pass_slot`]).
    /// `in_hand`: the event and its payload when the caller has them (a first attempt
    /// made at once); otherwise they come from [`Delivery::fresh`] or the spool.
    async fn attempt(
        self: &Arc<Self>,
        queue: &Arc<UpstreamQueue>,
        id: &str,
        trigger: Trigger,
        permit: OwnedSemaphorePermit,
        in_hand: Option<(EventMeta, bytes::Bytes)>,
    ) {
        let Some(shared) = self.shared.get().and_then(Weak::upgrade) else {
            return;
        };
        let stored = match in_hand.or_else(|| self.take_fresh(id)) {
            Some((meta, payload)) => {
                spool::Payload::decode_shared(&payload).map(|p| Some((meta, p)))
            }
            None => self.spool.get(id),
        };
        let (mut meta, payload) = match stored {
            Ok(Some(found)) if found.0.state == State::Pending => found,
            Ok(_) => {
                queue.finish_id(id);
                return;
            }
            Err(e) => {
                event(
                    "error",
                    "spool read failed",
                    json!({"event_id": id, "error": e.to_string()}),
                );
                let meta = EventMeta::placeholder(id);
                queue.finish(&meta, Some((self.clock.now_ms() + 5000, trigger)));
                return;
            }
        };
        meta.attempts += 1;
        meta.round_attempts += 1;
        let settings = self.settings(&meta.upstream);
        let runtime = shared.runtime.load_full();
        let upstream = runtime.upstreams.iter().find(|u| *u.name == *meta.upstream);
        let route = runtime.routes.iter().find(|r| *r.name == *meta.route);
        let started = std::time::Instant::now();
        let sent = match upstream {
            Some(upstream) => send::send(upstream, route, &meta, payload, trigger).await.0,
            None => Sent::Failed {
                reason: "no_upstream",
            },
        };
        let seconds = started.elapsed().as_secs_f64();
        let now = self.clock.now_ms();
        let jitter = (worker::cheap_random() % 1_000_000) as f64 / 1_000_000.0;
        let verdict = worker::decide(&settings, &meta, &sent, now, jitter);
        queue
            .breaker()
            .record(&settings, worker::is_failure(&sent), now);
        self.set_breaker_gauge(queue);

        let code = match &sent {
            Sent::Status { code, .. } => Some(*code),
            _ => None,
        };
        let reason = match (&sent, &verdict) {
            (_, Verdict::Dead { reason }) | (_, Verdict::Retry { reason, .. }) => {
                Some(reason.clone())
            }
            _ => None,
        };
        meta.last_status = code;
        meta.last_reason = reason.clone();
        meta.updated_ms = now;
        let replay = queue.take_replay_request(&meta.id);
        let (result, next) = match &verdict {
            Verdict::Delivered => {
                meta.state = State::Delivered;
                ("delivered", None)
            }
            // A replay asked for during this attempt: it replaces what the attempt decided.
            _ if replay => {
                ops::mark_replay(&mut meta, now);
                ("retry", Some((now, Trigger::Replay)))
            }
            Verdict::Dead { .. } => {
                meta.state = State::Dead;
                ("dead", None)
            }
            Verdict::Retry { at_ms, .. } => {
                meta.next_attempt_ms = *at_ms;
                meta.trigger = Trigger::Retry;
                ("retry", Some((*at_ms, Trigger::Retry)))
            }
        };
        // Without an fsync of its own: a crash that undoes it means one more attempt.
        let recorded = self.writer.record(vec![Op::Update(meta.clone())]);
        self.pass_slot(queue, permit);
        if let Err(e) = recorded.await {
            // The upstream's answer is not recorded: after a restart the event is attempted
            // again (at least once), never lost.
            event(
                "error",
                "spool: attempt result not recorded",
                json!({"event_id": meta.id, "error": e.to_string()}),
            );
        }
        match meta.state {
            State::Pending => {}
            to => self.count(&meta.route, Some(State::Pending), Some(to)),
        }
        queue.finish(&meta, next);

        let metrics = &shared.metrics.delivery;
        metrics
            .attempts
            .get_or_create(&AttemptLabels {
                route: meta.route.clone(),
                upstream: meta.upstream.clone(),
                result,
                code: code.unwrap_or(0),
            })
            .inc();
        metrics
            .duration
            .get_or_create(&UpstreamLabels {
                upstream: Arc::from(meta.upstream.as_str()),
            })
            .observe(seconds);
        let failed = match &sent {
            Sent::Failed { reason } => Some(*reason),
            _ => None,
        };
        self.attempt_log.attempt(&log::AttemptLine {
            event_id: &meta.id,
            idempotency_key: &meta.idempotency_key,
            route: &meta.route,
            upstream: &meta.upstream,
            attempt: meta.attempts,
            trigger: trigger.as_str(),
            status: code,
            result,
            reason: reason.as_deref().or(failed),
            next_retry: next.map(|(at, _)| std::time::UNIX_EPOCH + Duration::from_millis(at)),
            duration_ms: (seconds * 1000.0 * 1000.0).round() / 1000.0,
        });
    }

    /// Gives a finished attempt's slot (`permit`) to the upstream's next due event, as a task
    /// on this thread, when one is due, the breaker is closed and the gateway is not stopping.
    /// Otherwise the slot goes back to the upstream's semaphore, where the worker loop
    /// ([`Delivery::run`]) finds it. The loop runs on the main runtime: each event it starts
    /// costs two cross-thread wake-ups (the loop's own, and its spawn onto a worker), which a
    /// slot passed on here does not (measured: bench/README.md, "Pacing the group commit").
    fn pass_slot(self: &Arc<Self>, queue: &Arc<UpstreamQueue>, permit: OwnedSemaphorePermit) {
        if *self.stop.borrow() || queue.breaker().state() != BreakerState::Closed {
            return;
        }
        let Ok((id, trigger)) = queue.take_due(self.clock.now_ms()) else {
            return;
        };
        let (me, queue) = (Arc::clone(self), Arc::clone(queue));
        tokio::spawn(async move {
            me.attempt(&queue, &id, trigger, permit, None).await;
        });
    }

    fn set_breaker_gauge(&self, queue: &UpstreamQueue) {
        let Some(shared) = self.shared.get().and_then(Weak::upgrade) else {
            return;
        };
        let state = queue.breaker().state().gauge();
        shared
            .metrics
            .delivery
            .breaker_state
            .get_or_create(&BreakerLabels {
                upstream: queue.name.clone(),
            })
            .set(state);
    }

    /// Writes the collected attempt lines every [`log::FLUSH_EVERY`] (and at stop).
    async fn flush_attempt_log(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(log::FLUSH_EVERY) => self.attempt_log.flush(),
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Queue gauges every few seconds; retention and compaction now and then.
    async fn housekeeping(self: Arc<Self>) {
        let mut last_retention = std::time::Instant::now();
        let mut stop = self.stop.subscribe();
        loop {
            self.refresh_gauges();
            if last_retention.elapsed() >= RETENTION_EVERY {
                last_retention = std::time::Instant::now();
                if let Err(e) = self.apply_retention().await {
                    event(
                        "error",
                        "spool retention failed",
                        json!({"error": e.to_string()}),
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    pub fn refresh_gauges(&self) {
        let Some(shared) = self.shared.get().and_then(Weak::upgrade) else {
            return;
        };
        let m = &shared.metrics.delivery;
        for ((route, state), n) in self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            m.queue_events
                .get_or_create(&QueueLabels {
                    route: route.clone(),
                    state: state.as_str(),
                })
                .set(*n);
        }
        let now = self.clock.now_ms();
        let mut oldest: HashMap<String, u64> = HashMap::new();
        for route in self.config.load().queue_routes.keys() {
            oldest.insert(route.clone(), now);
        }
        let queues: Vec<_> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for q in queues {
            for (route, (_, received)) in q.pending_by_route() {
                let slot = oldest.entry(route).or_insert(now);
                *slot = (*slot).min(received);
            }
        }
        for (route, received) in oldest {
            m.oldest_pending_age
                .get_or_create(&RouteLabels { route })
                .set(now.saturating_sub(received) as f64 / 1000.0);
        }
        m.spool_bytes.set(self.spool.live_bytes() as i64);
        m.spool_file_bytes.set(self.spool.file_bytes() as i64);
    }

    /// Removes delivered and dead events older than `spool.retention`, then compacts.
    pub async fn apply_retention(&self) -> Result<usize, SpoolError> {
        let Some(retention) = self.config.load().spool.as_ref().map(|s| s.retention) else {
            return Ok(0);
        };
        let cutoff = self
            .clock
            .now_ms()
            .saturating_sub(retention.as_millis() as u64);
        let mut n = 0;
        for state in [State::Delivered, State::Dead] {
            let mut filter = Filter {
                state: Some(state),
                updated_before_ms: Some(cutoff),
                ..Filter::default()
            };
            loop {
                let old = self.next_page(&mut filter)?;
                if old.is_empty() {
                    break;
                }
                n += self.remove(old).await?;
            }
        }
        if n > 0 {
            let spool = Arc::clone(&self.spool);
            let _ = tokio::task::spawn_blocking(move || spool.compact()).await;
        }
        Ok(n)
    }

    async fn remove(&self, events: Vec<EventMeta>) -> Result<usize, SpoolError> {
        let n = events.len();
        for chunk in events.chunks(1000) {
            let ops = chunk.iter().map(|m| Op::Remove(m.id.clone())).collect();
            self.writer.commit(ops).await?;
            for m in chunk {
                self.take_fresh(&m.id);
                self.count(&m.route, Some(m.state), None);
                if let Some(q) = self
                    .queues
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&m.upstream)
                {
                    q.forget(&m.id);
                }
            }
        }
        Ok(n)
    }

    /// Events matching `filter`, oldest first.
    pub fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<EventMeta>, SpoolError> {
        self.spool.list(filter, limit)
    }

    pub fn get(&self, id: &str) -> Result<Option<(EventMeta, spool::Payload)>, SpoolError> {
        self.spool.get(id)
    }

    /// Makes matching dead (or pending) events due now, as `replay`: this replaces any pending
    /// automatic retry, and the attempt budget starts over. Delivered events are replayed only
    /// when asked for by id. Returns how many.
    pub async fn replay(self: &Arc<Self>, filter: &Filter) -> Result<usize, SpoolError> {
        let now = self.clock.now_ms();
        let mut pages = filter.clone();
        let mut replayed = 0;
        loop {
            let page = self.next_page(&mut pages)?;
            if page.is_empty() {
                return Ok(replayed);
            }
            let mut updated = Vec::with_capacity(page.len());
            for mut m in page {
                if m.state == State::Delivered && filter.id.is_none() {
                    continue;
                }
                self.take_fresh(&m.id);
                let from = m.state;
                ops::mark_replay(&mut m, now);
                updated.push((from, m));
            }
            for chunk in updated.chunks(1000) {
                self.writer
                    .commit(chunk.iter().map(|(_, m)| Op::Update(m.clone())).collect())
                    .await?;
                for (from, m) in chunk {
                    if *from != State::Pending {
                        self.count(&m.route, Some(*from), Some(State::Pending));
                    }
                    self.queue(&m.upstream).schedule(m, now, Trigger::Replay);
                }
            }
            replayed += updated.len();
        }
    }

    /// Removes matching events for good.
    pub async fn purge(&self, filter: &Filter) -> Result<usize, SpoolError> {
        let mut pages = filter.clone();
        let mut purged = 0;
        loop {
            let page = self.next_page(&mut pages)?;
            if page.is_empty() {
                return Ok(purged);
            }
            purged += self.remove(page).await?;
        }
    }

    /// Stops the workers: no new attempt starts; attempts under way get until `deadline` to
    /// finish and record their result, then are abandoned (the event stays pending and is
    /// attempted again at the next start). Every commit is whole or absent, so the spool is
    /// consistent whatever is cut short.
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        let _ = self.stop.send(true);
        let queues: Vec<_> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for q in queues {
            let _ =
                tokio::time::timeout_at(deadline, q.permits.acquire_many(q.concurrency())).await;
        }
        for task in self.lock_tasks().drain(..) {
            task.abort();
        }
        // Attempt results recorded without fsync become durable before the file closes.
        let _ = self.writer.commit(Vec::new()).await;
        self.attempt_log.flush();
        self.spool.close();
    }

    /// Whether a commit failed (then nothing more is acknowledged).
    pub fn has_failed(&self) -> bool {
        self.writer.has_failed()
    }
}

impl EventMeta {
    fn placeholder(id: &str) -> EventMeta {
        EventMeta {
            id: id.to_string(),
            route: String::new(),
            upstream: String::new(),
            method: String::new(),
            uri: String::new(),
            idempotency_key: String::new(),
            provider: None,
            client_ip: String::new(),
            request_id: String::new(),
            tls: false,
            received_ms: 0,
            state: State::Pending,
            attempts: 0,
            round_attempts: 0,
            round_start_ms: 0,
            next_attempt_ms: 0,
            trigger: Trigger::Retry,
            updated_ms: 0,
            last_status: None,
            last_reason: None,
            stored_bytes: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::spool::Payload;
    use super::worker::FakeClock;
    use super::*;
    use crate::config::SpoolConfig;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    struct Clocked(Arc<FakeClock>);
    impl Clock for Clocked {
        fn now_ms(&self) -> u64 {
            self.0.now_ms()
        }
    }

    /// Segments of 1 MiB: small enough for a test to see space come back.
    const MAX_BYTES: u64 = 16 << 20;

    fn open(dir: &std::path::Path, clock: &Arc<FakeClock>) -> Arc<Delivery> {
        let config = DeliveryConfig {
            spool: Some(SpoolConfig {
                path: dir.to_path_buf(),
                max_bytes: MAX_BYTES,
                retention: 7 * DAY,
            }),
            ..DeliveryConfig::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(Clocked(Arc::clone(clock)));
        Delivery::open_with_clock(&config, &Metrics::new(), clock)
            .unwrap()
            .unwrap()
    }

    /// Spools `n` events at the clock's time; returns their metadata.
    async fn spool_events(d: &Arc<Delivery>, n: usize) -> Vec<EventMeta> {
        let mut out = Vec::new();
        for _ in 0..n {
            let now = d.now_ms();
            let id = uuid::Uuid::now_v7().simple().to_string();
            let mut meta = EventMeta::placeholder(&id);
            meta.route = "r".into();
            meta.upstream = "u".into();
            meta.trigger = Trigger::Initial;
            (meta.received_ms, meta.updated_ms) = (now, now);
            let payload = Payload {
                headers: vec![],
                body: vec![7; 2048].into(),
            }
            .encode();
            meta.stored_bytes = payload.len() as u64 + 512;
            d.enqueue(meta.clone(), payload).await.unwrap();
            out.push(meta);
        }
        out
    }

    /// Records `events` as ended in `state` now, as an attempt does.
    async fn end(d: &Arc<Delivery>, events: &mut [EventMeta], state: State) {
        let now = d.now_ms();
        for m in events.iter_mut() {
            (m.state, m.updated_ms) = (state, now);
        }
        let ops = events.iter().cloned().map(Op::Update).collect();
        d.writer.record(ops).await.unwrap();
    }

    #[tokio::test]
    async fn a_reload_changes_a_running_upstreams_concurrency() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::at(1));
        let d = open(dir.path(), &clock);
        let with = |n: usize| {
            let mut config = (**d.config.load()).clone();
            let settings = DeliverySettings {
                concurrency: n,
                ..DeliverySettings::default()
            };
            config.upstreams.insert("u".into(), settings);
            config
        };
        d.reconfigure(&with(4));
        let q = d.queue("u");
        assert_eq!(q.permits.available_permits(), 4);
        // Three slots busy while the reload halves the limit: no attempt starts until they
        // are given back, and then two at most.
        let busy = Arc::clone(&q.permits).acquire_many_owned(3).await.unwrap();
        d.reconfigure(&with(2));
        assert_eq!(q.concurrency(), 2);
        assert_eq!(q.permits.available_permits(), 0);
        drop(busy);
        tokio::task::yield_now().await;
        assert_eq!(q.permits.available_permits(), 2);
        d.reconfigure(&with(16));
        assert_eq!(q.permits.available_permits(), 16);
    }

    #[tokio::test]
    async fn a_restart_makes_every_pending_event_due_listing_them_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::at(1_000_000_000_000));
        let d = open(dir.path(), &clock);
        let mut events = spool_events(&d, 23).await;
        end(&d, &mut events[4..9], State::Delivered).await;
        // Pending still, after attempts (retried at the start) or asked to be replayed.
        for m in &mut events[10..12] {
            m.attempts = 2;
        }
        for m in &mut events[12..14] {
            ops::mark_replay(m, d.now_ms());
        }
        let ops = events[10..14].iter().cloned().map(Op::Update).collect();
        d.writer.record(ops).await.unwrap();
        d.stop(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
        drop(d);
        // The writer thread lets go of the spool (and its lock) once it sees the last Writer go.
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::File::open(dir.path().join(segments::LOCK_FILE))
            .unwrap()
            .try_lock()
            .is_err()
        {
            assert!(std::time::Instant::now() < until, "the spool stays locked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let d = open(dir.path(), &clock);
        // 18 pending, in pages of 5: the last page is short. What each attempt is comes from
        // the index, as the last record left it.
        d.page.store(5, Ordering::Relaxed);
        assert_eq!(d.schedule_pending().unwrap(), 18);
        let queue = d.queue("u");
        assert_eq!(queue.len(), 18);
        let mut due = HashMap::new();
        while let Ok((id, trigger)) = queue.take_due(d.now_ms()) {
            due.insert(id.to_string(), trigger);
        }
        let want: HashMap<_, _> = events
            .iter()
            .enumerate()
            .filter(|(_, m)| m.state == State::Pending)
            .map(|(i, m)| {
                let trigger = match i {
                    10 | 11 => Trigger::Retry,
                    12 | 13 => Trigger::Replay,
                    _ => Trigger::Initial,
                };
                (m.id.clone(), trigger)
            })
            .collect();
        assert_eq!(due, want);
        d.stop(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
    }

    #[tokio::test]
    async fn replay_and_purge_go_through_every_page_of_what_they_match_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::at(1_000_000_000_000));
        let d = open(dir.path(), &clock);
        let mut events = spool_events(&d, 12).await;
        end(&d, &mut events[..7], State::Dead).await;
        end(&d, &mut events[7..8], State::Delivered).await;
        d.page.store(3, Ordering::Relaxed);
        let in_time = Duration::from_secs(10);
        let by_state = |state| {
            let filter = Filter {
                state: Some(state),
                ..Filter::default()
            };
            d.list(&filter, usize::MAX).unwrap()
        };

        // Every state asked for: the dead and the pending are replayed, the delivered one is
        // not (only by its id). Pending events stay pending, so paging must move on past them.
        let replayed = tokio::time::timeout(in_time, d.replay(&Filter::default())).await;
        assert_eq!(replayed.unwrap().unwrap(), 11);
        let pending = by_state(State::Pending);
        assert_eq!(pending.len(), 11);
        assert!(pending.iter().all(|m| m.trigger == Trigger::Replay));
        assert_eq!(by_state(State::Delivered).len(), 1);

        let filter = Filter {
            state: Some(State::Pending),
            ..Filter::default()
        };
        let purged = tokio::time::timeout(in_time, d.purge(&filter)).await;
        assert_eq!(purged.unwrap().unwrap(), 11);
        let left = d.list(&Filter::default(), usize::MAX).unwrap();
        let left: Vec<&str> = left.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(left, vec![events[7].id.as_str()]);
        d.stop(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
    }

    #[tokio::test]
    async fn retention_removes_delivered_and_dead_events_past_it_and_the_file_stops_growing() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::at(1_000_000_000_000));
        let d = open(dir.path(), &clock);

        let mut first = spool_events(&d, 30).await;
        end(&d, &mut first[..10], State::Delivered).await;
        end(&d, &mut first[10..20], State::Dead).await;
        // Not yet past retention: nothing goes.
        clock.advance(7 * DAY - Duration::from_secs(1));
        assert_eq!(d.apply_retention().await.unwrap(), 0);
        clock.advance(Duration::from_secs(2));
        // In pages of 3: ten delivered and ten dead each take four listings.
        d.page.store(3, Ordering::Relaxed);
        assert_eq!(d.apply_retention().await.unwrap(), 20);
        let left = d.list(&Filter::default(), usize::MAX).unwrap();
        assert_eq!(left.len(), 10, "the pending ones stay, however old");
        assert!(left.iter().all(|m| m.state == State::Pending));
        assert!(d.get(&first[25].id).unwrap().is_some());
        assert!(d.get(&first[5].id).unwrap().is_none());
        assert_eq!(d.spool.live_bytes(), 10 * (2048 + 4 + 512));

        // Steady state: a day's events delivered, and removed a retention later. Space comes
        // back by whole segments (the first one's ten pending events are copied forward), so
        // the files hold a segment or two, however many rounds go by.
        let mut sizes = Vec::new();
        for _ in 0..8 {
            let mut batch = spool_events(&d, 200).await;
            end(&d, &mut batch, State::Delivered).await;
            clock.advance(7 * DAY + Duration::from_secs(1));
            assert_eq!(d.apply_retention().await.unwrap(), 200);
            sizes.push(d.spool.file_bytes());
        }
        assert_eq!(d.list(&Filter::default(), usize::MAX).unwrap().len(), 10);
        for (id, m) in first[20..].iter().map(|m| (&m.id, m)) {
            let (kept, payload) = d.get(id).unwrap().unwrap();
            assert_eq!((&kept, payload.body.len()), (m, 2048));
        }
        // Eight rounds wrote 8 x 200 x 2.5 KiB = 4 MiB of events.
        let segment = segments::segment_bytes_for(MAX_BYTES);
        assert!(
            sizes.iter().all(|s| *s <= 2 * segment),
            "the files grew while holding the same events: {sizes:?}"
        );
        d.stop(tokio::time::Instant::now() + Duration::from_secs(1))
            .await;
    }
}
