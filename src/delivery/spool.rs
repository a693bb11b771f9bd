//! The spool: where queued events live between their acknowledgement and their delivery. The
//! store sits behind the small [`Spool`] trait (the one used is [`super::segments`]'s
//! append-only log), and every change goes through the single writer thread ([`Writer`]), so
//! that requests arriving together share one commit and one fsync (group commit).
//!
//! A store never holds an event only in memory once its commit has returned, and never drops
//! one: a full spool refuses new events ([`SpoolError::Full`]), and after a failed write or
//! fsync the writer refuses every further change ([`SpoolError::Failed`]) until a restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Dead,
    Delivered,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Dead => "dead",
            State::Delivered => "delivered",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        match text {
            "pending" => Some(State::Pending),
            "dead" => Some(State::Dead),
            "delivered" => Some(State::Delivered),
            _ => None,
        }
    }

    pub const ALL: [State; 3] = [State::Pending, State::Dead, State::Delivered];
}

/// What started an attempt: `X-Hookgate-Trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Initial,
    Retry,
    Replay,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Initial => "initial",
            Trigger::Retry => "retry",
            Trigger::Replay => "replay",
        }
    }
}

/// One queued event, without its headers and body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Time-ordered (UUIDv7, 32 hex digits): the spool key.
    pub id: String,
    pub route: String,
    pub upstream: String,
    pub method: String,
    /// The request target as received (path and query, or absolute form over HTTP/2).
    pub uri: String,
    /// `Idempotency-Key` on every attempt: the provider's delivery id when known, else `id`.
    pub idempotency_key: String,
    /// The provider whose signature was verified, if the route verifies.
    pub provider: Option<String>,
    pub client_ip: String,
    pub request_id: String,
    /// Whether the event arrived over TLS (`X-Forwarded-Proto`).
    pub tls: bool,
    /// Unix milliseconds the request arrived.
    pub received_ms: u64,
    pub state: State,
    /// Attempts made, all told (`X-Hookgate-Attempt` of the last one).
    pub attempts: u32,
    /// Attempts since the event was queued or last replayed: what `max_attempts` counts.
    pub round_attempts: u32,
    /// Unix ms from which `max_age` counts: arrival, or the last replay.
    pub round_start_ms: u64,
    /// When the next attempt is due (pending events).
    pub next_attempt_ms: u64,
    /// What the next attempt is.
    pub trigger: Trigger,
    /// Unix ms of the last change; retention counts from it.
    pub updated_ms: u64,
    pub last_status: Option<u16>,
    pub last_reason: Option<String>,
    /// Stored bytes (metadata, headers, body): what counts against `spool.max_bytes`.
    pub stored_bytes: u64,
}

/// A received header, byte for byte.
pub type Header = (Vec<u8>, Vec<u8>);

/// An event's headers and body as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub headers: Vec<Header>,
    pub body: bytes::Bytes,
}

impl Payload {
    /// `u32 count`, then per header `u16 name length, name, u32 value length, value`, then the
    /// body to the end.
    pub fn encode(&self) -> Vec<u8> {
        let headers: Vec<(&[u8], &[u8])> = self
            .headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        Self::encode_from(&headers, &[self.body.as_ref()])
    }

    /// [`Payload::encode`] straight from borrowed headers and body pieces (a request's frames),
    /// copying each byte once.
    pub fn encode_from(headers: &[(&[u8], &[u8])], body: &[&[u8]]) -> Vec<u8> {
        let size: usize = headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum::<usize>()
            + 4
            + body.iter().map(|piece| piece.len()).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for &(name, value) in headers {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        }
        for piece in body {
            out.extend_from_slice(piece);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Payload, SpoolError> {
        let (headers, at) = Self::decode_headers(bytes)?;
        let body = bytes::Bytes::copy_from_slice(&bytes[at..]);
        Ok(Payload { headers, body })
    }

    /// [`Payload::decode`] whose body shares `bytes` instead of copying it (an event kept in
    /// memory since its intake).
    pub fn decode_shared(bytes: &bytes::Bytes) -> Result<Payload, SpoolError> {
        let (headers, at) = Self::decode_headers(bytes)?;
        Ok(Payload {
            headers,
            body: bytes.slice(at..),
        })
    }

    /// The headers, and where the body starts.
    fn decode_headers(bytes: &[u8]) -> Result<(Vec<Header>, usize), SpoolError> {
        let bad = || SpoolError::Corrupt("payload".into());
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], SpoolError> {
            let slice = bytes.get(at..at + n).ok_or_else(bad)?;
            at += n;
            Ok(slice)
        };
        let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?);
        let mut headers = Vec::with_capacity(count.min(1024) as usize);
        for _ in 0..count {
            let n = u16::from_be_bytes(take(2)?.try_into().map_err(|_| bad())?) as usize;
            let name = take(n)?.to_vec();
            let v = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad())?) as usize;
            let value = take(v)?.to_vec();
            headers.push((name, value));
        }
        Ok((headers, at))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full (spool.max_bytes)")]
    Full,
    #[error("the spool failed earlier and accepts no more changes until a restart: {0}")]
    Failed(String),
    #[error("spool: {0}")]
    Store(String),
    #[error("the spool is open in another process (the gateway is running)")]
    Locked,
    #[error("spool: a stored record is unreadable ({0})")]
    Corrupt(String),
    #[error("the spool writer has stopped")]
    Stopped,
}

/// One change, applied with others in one transaction.
#[derive(Debug, Clone)]
pub enum Op {
    /// A new event: refused with [`SpoolError::Full`] when it would not fit.
    Insert {
        meta: EventMeta,
        payload: bytes::Bytes,
    },
    /// New state for an existing event (ignored if the event was purged meanwhile).
    Update(EventMeta),
    Remove(String),
}

/// Filters for listing, replay and purge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub route: Option<String>,
    pub state: Option<State>,
    /// Received at or after this Unix ms.
    pub since_ms: Option<u64>,
    pub id: Option<String>,
    /// Last changed before this Unix ms (retention; not offered to operators).
    pub updated_before_ms: Option<u64>,
    /// Ids after this one, i.e. arrived later (paging through a listing; not offered to
    /// operators).
    pub after_id: Option<String>,
}

impl Filter {
    pub fn matches(&self, meta: &EventMeta) -> bool {
        self.route.as_ref().is_none_or(|r| *r == meta.route)
            && self.state.is_none_or(|s| s == meta.state)
            && self.since_ms.is_none_or(|t| meta.received_ms >= t)
            && self.id.as_ref().is_none_or(|i| *i == meta.id)
            && self.updated_before_ms.is_none_or(|t| meta.updated_ms < t)
            && self.after_id.as_ref().is_none_or(|a| meta.id > *a)
    }
}

/// A pending event as a start schedules it: what the store holds in memory, no metadata read
/// back from disk ([`Spool::pending`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvent {
    pub id: String,
    pub route: std::sync::Arc<str>,
    pub upstream: std::sync::Arc<str>,
    pub received_ms: u64,
    /// What its next attempt is ([`Trigger::at_start`]).
    pub trigger: Trigger,
}

impl Trigger {
    /// What a pending event's next attempt is after a restart: a replay stays one; an event
    /// attempted before is retried; one never attempted gets its first attempt.
    pub fn at_start(meta: &EventMeta) -> Trigger {
        if meta.trigger == Trigger::Replay {
            Trigger::Replay
        } else if meta.attempts > 0 {
            Trigger::Retry
        } else {
            Trigger::Initial
        }
    }
}

/// The store. Only the [`Writer`] thread calls [`Spool::commit`]; reads may come from anywhere.
pub trait Spool: Send + Sync {
    /// Applies `ops` in one transaction. `durable`: it is on disk (one fsync) when this returns,
    /// and so is every earlier one; otherwise it is visible at once but only made durable by the
    /// next durable commit (a crash before that loses it). `Insert`s beyond `max_bytes` are left
    /// out and reported by index in the returned list; the rest commit.
    fn commit(&self, ops: Vec<Op>, max_bytes: u64, durable: bool)
        -> Result<Vec<usize>, SpoolError>;
    /// Every event matching `filter`, oldest first, at most `limit`.
    fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<EventMeta>, SpoolError>;
    /// Pending events with ids after `after`, oldest first, at most `limit`: what a start
    /// schedules, without reading each event's metadata back from disk.
    fn pending(&self, after: Option<&str>, limit: usize) -> Result<Vec<PendingEvent>, SpoolError>;
    /// How many events each route has in each state (for the gauges at start), without
    /// holding them all in memory at once.
    fn counts(&self) -> Result<HashMap<(String, State), i64>, SpoolError>;
    fn get(&self, id: &str) -> Result<Option<(EventMeta, Payload)>, SpoolError>;
    /// Bytes of stored events (what `max_bytes` limits).
    fn live_bytes(&self) -> u64;
    /// The size of the file on disk.
    fn file_bytes(&self) -> u64;
    /// Gives the space of removed events back to the file system, where the store can.
    fn compact(&self) -> Result<bool, SpoolError>;
    /// Closes the store (at shutdown): every later call fails with [`SpoolError::Stopped`].
    fn close(&self);
}

/// The shortest time from one commit's start to the next one's. Under load the writer would
/// otherwise commit back to back, each commit as small as what arrived during the last one,
/// and spend its CPU on as many commits as the disk allows. Pacing them keeps the groups
/// large (about 30 events instead of 13 on the bench): the writer's CPU per queued event fell
/// from about 10.8 to 7.5 µs, the gateway's by 5-11% (bench/README.md, "Pacing the group
/// commit"). Meanwhile the writer sleeps, so changes arriving then wake nobody. Under light
/// load nothing waits: a change that finds the last commit started longer ago than this is
/// committed at once. The spec's "a few ms or a batch size": [`GROUP_MAX`] is the size.
pub const GROUP_PACE: Duration = Duration::from_millis(1);

/// The pace actually used: [`GROUP_PACE`], or `HOOKGATE_SPOOL_PACE_US` microseconds (a
/// benchmarking knob).
fn group_pace() -> Duration {
    std::env::var("HOOKGATE_SPOOL_PACE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GROUP_PACE, Duration::from_micros)
}
/// The most changes in one commit.
pub const GROUP_MAX: usize = 512;

/// What the writer answers one job.
pub type Reply = Result<(), SpoolError>;

struct Job {
    ops: Vec<Op>,
    /// Whether the caller needs the change on disk before its answer (see [`Writer::record`]).
    durable: bool,
    done: tokio::sync::oneshot::Sender<Reply>,
    /// The caller's worker thread's lane, when it has one.
    lane: Option<AnswerLane>,
}

/// Answers on their way to one worker thread.
type Answers = Vec<(tokio::sync::oneshot::Sender<Reply>, Reply)>;

/// How the writer answers the jobs of one worker thread: all of a commit's answers for that
/// worker in one message, which a task on the worker hands out. Answering each job straight
/// from the writer thread wakes its worker once per job (tokio's single-threaded runtime
/// writes its eventfd on every wake from another thread): two such wakes per queued event,
/// its intake and its attempt's result (measured: bench/README.md, "Durable delivery").
#[derive(Clone)]
struct AnswerLane(tokio::sync::mpsc::UnboundedSender<Answers>);

thread_local! {
    /// This thread's lane, when it is a worker of the request path.
    static ANSWER_LANE: std::cell::RefCell<Option<AnswerLane>> =
        const { std::cell::RefCell::new(None) };
}

/// Gives the calling thread an answer lane. Called once by each server worker thread, inside
/// its runtime's context: the lane's task runs on that runtime, and stops with it (answers
/// then go to their jobs one by one).
pub fn bind_answer_lane() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Answers>();
    tokio::spawn(async move {
        while let Some(answers) = rx.recv().await {
            for (done, reply) in answers {
                let _ = done.send(reply);
            }
        }
    });
    ANSWER_LANE.set(Some(AnswerLane(tx)));
}

/// Gives each job its reply: per worker lane in one message, the others one by one.
fn answer(replies: impl Iterator<Item = (Job, Reply)>) {
    let mut batches: Vec<(AnswerLane, Answers)> = Vec::new();
    for (job, reply) in replies {
        match job.lane {
            Some(lane) => match batches.iter_mut().find(|(l, _)| l.0.same_channel(&lane.0)) {
                Some((_, answers)) => answers.push((job.done, reply)),
                None => batches.push((lane, vec![(job.done, reply)])),
            },
            None => {
                let _ = job.done.send(reply);
            }
        }
    }
    for (lane, answers) in batches {
        // A lane whose worker has stopped: its jobs are answered directly.
        if let Err(returned) = lane.0.send(answers) {
            for (done, reply) in returned.0 {
                let _ = done.send(reply);
            }
        }
    }
}

/// The longest a change committed without fsync ([`Writer::record`]) waits for a durable
/// commit: when no intake brings one sooner, the writer makes one. It bounds what a crash can
/// undo (attempt results: a duplicate attempt).
pub const LAZY_MAX: Duration = Duration::from_millis(200);

/// The longest a change given to [`Writer::record`] waits before the writer wakes for it, when
/// no durable change wakes it sooner: such changes do not wake the writer one by one.
pub const LAZY_WAKE: Duration = Duration::from_millis(10);

/// Called by the writer after each commit: (changes, seconds it took, result).
pub type CommitObserver = Box<dyn Fn(usize, f64, &Result<(), SpoolError>) + Send>;

/// What wakes the writer.
enum Wake {
    /// A durable job.
    Job(Job),
    /// Lazy jobs wait in [`Writer::lazy`] (sent by the first of them only).
    Lazy,
}

/// The single writer: a thread that takes jobs and commits them in groups. Cloned into every
/// intake and worker. Each caller awaits its own job's commit.
#[derive(Clone)]
pub struct Writer {
    tx: std::sync::mpsc::Sender<Wake>,
    /// Jobs that wait for the writer's next wake (at most [`LAZY_WAKE`]).
    lazy: Arc<std::sync::Mutex<Vec<Job>>>,
    failed: Arc<AtomicBool>,
}

impl Writer {
    /// Starts the writer thread; it ends when every `Writer` clone is dropped, after
    /// committing what it was given.
    pub fn start(
        spool: Arc<dyn Spool>,
        max_bytes: u64,
        observe: CommitObserver,
    ) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (tx, rx) = std::sync::mpsc::channel::<Wake>();
        let failed = Arc::new(AtomicBool::new(false));
        let lazy = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, lazy_jobs) = (Arc::clone(&failed), Arc::clone(&lazy));
        let handle = std::thread::Builder::new()
            .name("hookgate-spool".into())
            .spawn(move || {
                WriteLoop {
                    spool: &*spool,
                    max_bytes,
                    rx,
                    lazy: &lazy_jobs,
                    failed: &flag,
                    observe: &observe,
                }
                .run()
            })?;
        Ok((Writer { tx, lazy, failed }, handle))
    }

    /// Commits `ops` (with whatever else is waiting) and resolves once they are durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Reply {
        self.send(ops, true).await
    }

    /// Commits `ops` without waiting for an fsync of their own, and without waking the writer:
    /// they go with the next commit, at most [`LAZY_WAKE`] later, are visible once it is made,
    /// and durable with the next durable commit, within [`LAZY_MAX`]. For what a crash may undo
    /// without harm: an attempt's result (undone, the event is attempted again, which at least
    /// once allows). Group commits with an intake in them are durable anyway.
    /// The job is handed to the writer when this is called, not when it is awaited: a commit
    /// made after this call returns (a shutdown's last one) includes it.
    pub fn record(&self, ops: Vec<Op>) -> impl std::future::Future<Output = Reply> + use<> {
        self.send(ops, false)
    }

    fn send(
        &self,
        ops: Vec<Op>,
        durable: bool,
    ) -> impl std::future::Future<Output = Reply> + use<> {
        let sent = if self.failed.load(Ordering::SeqCst) {
            Err(SpoolError::Failed("an earlier commit failed".into()))
        } else {
            let (done, wait) = tokio::sync::oneshot::channel();
            let job = Job {
                ops,
                durable,
                done,
                lane: ANSWER_LANE.with_borrow(Clone::clone),
            };
            let wake = if durable {
                Some(Wake::Job(job))
            } else {
                let mut lazy = self
                    .lazy
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                lazy.push(job);
                (lazy.len() == 1).then_some(Wake::Lazy)
            };
            match wake {
                Some(wake) => self.tx.send(wake).map_err(|_| SpoolError::Stopped),
                None => Ok(()),
            }
            .map(|()| wait)
        };
        async move { sent?.await.map_err(|_| SpoolError::Stopped)? }
    }

    /// Whether a commit has failed: the spool then acknowledges nothing more.
    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A durable commit of nothing, whose answer nobody awaits: it makes earlier lazy ones durable.
fn empty_durable_job() -> Job {
    Job {
        ops: Vec::new(),
        durable: true,
        done: tokio::sync::oneshot::channel().0,
        lane: None,
    }
}

struct WriteLoop<'a> {
    spool: &'a dyn Spool,
    max_bytes: u64,
    rx: std::sync::mpsc::Receiver<Wake>,
    lazy: &'a std::sync::Mutex<Vec<Job>>,
    failed: &'a AtomicBool,
    observe: &'a CommitObserver,
}

impl WriteLoop<'_> {
    fn take_lazy(&self, into: &mut Vec<Job>) {
        into.append(
            &mut self
                .lazy
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    fn run(self) {
        let pace = group_pace();
        // Since when lazy jobs wait; since when changes committed without fsync wait for a
        // durable commit.
        let mut lazy_since: Option<Instant> = None;
        let mut unsynced_since: Option<Instant> = None;
        let mut last_start: Option<Instant> = None;
        loop {
            let deadline = [
                lazy_since.map(|t| t + LAZY_WAKE),
                unsynced_since.map(|t| t + LAZY_MAX),
            ]
            .into_iter()
            .flatten()
            .min();
            let woken = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .rx
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let mut jobs = Vec::new();
            match woken {
                Ok(Wake::Job(job)) => jobs.push(job),
                Ok(Wake::Lazy) => {
                    lazy_since.get_or_insert_with(Instant::now);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    if unsynced_since.is_some_and(|t| t.elapsed() >= LAZY_MAX) {
                        jobs.push(empty_durable_job());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Every Writer is gone (shutdown): what they recorded is committed,
                    // durably, unless the spool is already closed.
                    self.take_lazy(&mut jobs);
                    let ops = jobs.iter_mut().flat_map(|j| j.ops.drain(..)).collect();
                    let _ = self.spool.commit(ops, self.max_bytes, true);
                    return;
                }
            }
            // Wait out the pace; what arrives meanwhile joins this commit.
            let since_last = last_start.map_or(pace, |t| t.elapsed());
            if let (false, Some(wait)) = (jobs.is_empty(), pace.checked_sub(since_last)) {
                std::thread::sleep(wait);
            }
            let mut ops_count: usize = jobs.iter().map(|j| j.ops.len()).sum();
            // Take what is waiting.
            while ops_count < GROUP_MAX && !jobs.is_empty() {
                match self.rx.try_recv().ok() {
                    Some(Wake::Job(job)) => {
                        ops_count += job.ops.len();
                        jobs.push(job);
                    }
                    Some(Wake::Lazy) => {}
                    None => break,
                }
            }
            self.take_lazy(&mut jobs);
            lazy_since = None;
            if !jobs.is_empty() {
                last_start = Some(Instant::now());
                self.commit_group(jobs, &mut unsynced_since);
            }
        }
    }

    /// One transaction for all of `jobs`, durable if any of them is (or unsynced changes have
    /// waited [`LAZY_MAX`]); each job gets its answer.
    fn commit_group(&self, mut jobs: Vec<Job>, unsynced_since: &mut Option<Instant>) {
        if self.failed.load(Ordering::SeqCst) {
            *unsynced_since = None;
            let failed = || Err(SpoolError::Failed("an earlier commit failed".into()));
            answer(jobs.into_iter().map(|job| (job, failed())));
            return;
        }
        let ops_count = jobs.iter().map(|j| j.ops.len()).sum();
        // Remember which job each op came from.
        let mut owners = Vec::with_capacity(ops_count);
        let mut ops = Vec::with_capacity(ops_count);
        for (j, job) in jobs.iter_mut().enumerate() {
            for op in job.ops.drain(..) {
                owners.push(j);
                ops.push(op);
            }
        }
        let durable = jobs.iter().any(|j| j.durable)
            || unsynced_since.is_some_and(|since| since.elapsed() >= LAZY_MAX);
        let started = Instant::now();
        let result = self.spool.commit(ops, self.max_bytes, durable);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(refused) => {
                if durable {
                    *unsynced_since = None;
                } else {
                    unsynced_since.get_or_insert(started);
                }
                (self.observe)(ops_count, seconds, &Ok(()));
                let full: std::collections::HashSet<usize> = refused
                    .iter()
                    .filter_map(|i| owners.get(*i).copied())
                    .collect();
                answer(jobs.into_iter().enumerate().map(|(j, job)| {
                    let reply = if full.contains(&j) {
                        Err(SpoolError::Full)
                    } else {
                        Ok(())
                    };
                    (job, reply)
                }));
            }
            Err(e) => {
                // A write or fsync that failed may have lost pages the kernel already dropped:
                // nothing after it can be trusted to be durable, so nothing more is
                // acknowledged.
                self.failed.store(true, Ordering::SeqCst);
                let err = Err(SpoolError::Failed(e.to_string()));
                (self.observe)(ops_count, seconds, &err);
                answer(
                    jobs.into_iter()
                        .map(|job| (job, Err(SpoolError::Failed(e.to_string())))),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn meta(id: &str, bytes: u64) -> EventMeta {
        EventMeta {
            id: id.into(),
            route: "r".into(),
            upstream: "u".into(),
            method: "POST".into(),
            uri: "/hooks".into(),
            idempotency_key: id.into(),
            provider: None,
            client_ip: "127.0.0.1".into(),
            request_id: "req".into(),
            tls: false,
            received_ms: 1,
            state: State::Pending,
            attempts: 0,
            round_attempts: 0,
            round_start_ms: 1,
            next_attempt_ms: 1,
            trigger: Trigger::Initial,
            updated_ms: 1,
            last_status: None,
            last_reason: None,
            stored_bytes: bytes,
        }
    }

    #[test]
    fn payload_round_trips_exact_bytes() {
        let p = Payload {
            headers: vec![(b"x-a".to_vec(), vec![0xff, b'a']), (b"b".to_vec(), vec![])],
            body: vec![0, 1, 2, 255].into(),
        };
        assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
        assert!(Payload::decode(&[0, 0, 0, 5]).is_err());
    }

    /// A store whose disk fails after `good` commits, as a full or broken disk does.
    struct FailingSpool {
        good: usize,
        commits: std::sync::atomic::AtomicUsize,
    }

    impl FailingSpool {
        fn after(good: usize) -> Arc<FailingSpool> {
            Arc::new(FailingSpool {
                good,
                commits: Default::default(),
            })
        }
    }

    impl Spool for FailingSpool {
        fn commit(&self, _: Vec<Op>, _: u64, _: bool) -> Result<Vec<usize>, SpoolError> {
            if self.commits.fetch_add(1, Ordering::SeqCst) < self.good {
                Ok(vec![])
            } else {
                Err(SpoolError::Store("fsync: Input/output error".into()))
            }
        }
        fn list(&self, _: &Filter, _: usize) -> Result<Vec<EventMeta>, SpoolError> {
            Ok(vec![])
        }
        fn pending(&self, _: Option<&str>, _: usize) -> Result<Vec<PendingEvent>, SpoolError> {
            Ok(vec![])
        }
        fn counts(&self) -> Result<HashMap<(String, State), i64>, SpoolError> {
            Ok(HashMap::new())
        }
        fn get(&self, _: &str) -> Result<Option<(EventMeta, Payload)>, SpoolError> {
            Ok(None)
        }
        fn live_bytes(&self) -> u64 {
            0
        }
        fn file_bytes(&self) -> u64 {
            0
        }
        fn compact(&self) -> Result<bool, SpoolError> {
            Ok(false)
        }
        fn close(&self) {}
    }

    #[tokio::test]
    async fn after_a_failed_commit_nothing_more_is_acknowledged() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let (writer, _thread) = Writer::start(
            FailingSpool::after(1),
            u64::MAX,
            Box::new(move |_, _, result| record.lock().unwrap().push(result.is_ok())),
        )
        .unwrap();
        let insert = || {
            vec![Op::Insert {
                meta: meta("a", 1),
                payload: bytes::Bytes::new(),
            }]
        };
        assert_eq!(writer.commit(insert()).await, Ok(()));
        assert!(matches!(
            writer.commit(insert()).await,
            Err(SpoolError::Failed(_))
        ));
        assert!(writer.has_failed());
        // Even though the store might accept the next one, the writer no longer asks it.
        assert!(matches!(
            writer.commit(insert()).await,
            Err(SpoolError::Failed(_))
        ));
        assert_eq!(*seen.lock().unwrap(), vec![true, false]);
    }

    /// Changes arriving every 100 µs: a commit starts at most once per [`GROUP_PACE`], and the
    /// changes that arrive meanwhile share it (without the pacing, each would have its own).
    #[test]
    fn a_steady_stream_of_changes_is_committed_in_groups_at_most_once_per_pace() {
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&starts);
        let (writer, _thread) = Writer::start(
            FailingSpool::after(usize::MAX),
            u64::MAX,
            Box::new(move |changes, seconds, _| {
                let started = Instant::now() - Duration::from_secs_f64(seconds);
                record.lock().unwrap().push((started, changes));
            }),
        )
        .unwrap();
        let waits: Vec<_> = (0..40)
            .map(|i| {
                std::thread::sleep(Duration::from_micros(100));
                let ops = vec![Op::Insert {
                    meta: meta(&format!("e{i:02}"), 1),
                    payload: bytes::Bytes::new(),
                }];
                writer.send(ops, true)
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for wait in waits {
            assert_eq!(runtime.block_on(wait), Ok(()));
        }
        let starts = starts.lock().unwrap();
        assert_eq!(starts.iter().map(|(_, n)| n).sum::<usize>(), 40);
        // A little less than the pace: the writer notes a commit's start just before the
        // store's commit is called.
        let least = GROUP_PACE - Duration::from_micros(100);
        for pair in starts.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            assert!(
                gap >= least,
                "commits {gap:?} apart, {} in all",
                starts.len()
            );
        }
        assert!(starts.len() < 20, "{} commits for 40 changes", starts.len());
    }

    /// Jobs from a worker thread with an answer lane: each gets its own answer (here the
    /// inserts beyond max_bytes are refused as Full, the rest commit); and once the runtime that ran
    /// the lane's task is gone, the same thread's jobs are still answered, one by one.
    #[test]
    fn answers_reach_their_jobs_through_a_workers_lane_and_without_it_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let spool = super::super::segments::SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        // Room for 20 events of 100 stored bytes.
        let (writer, _thread) =
            Writer::start(Arc::new(spool), 2_000, Box::new(|_, _, _| {})).unwrap();
        let insert = |i: usize| {
            vec![Op::Insert {
                meta: meta(&format!("e{i:03}"), 100),
                payload: bytes::Bytes::from_static(b"body"),
            }]
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            {
                let _entered = runtime.enter();
                bind_answer_lane();
            }
            let replies = runtime.block_on(async {
                let jobs: Vec<_> = (0..50)
                    .map(|i| {
                        let writer = writer.clone();
                        tokio::spawn(async move { writer.commit(insert(i)).await })
                    })
                    .collect();
                let mut replies = Vec::new();
                for job in jobs {
                    replies.push(job.await.unwrap());
                }
                replies
            });
            // Sent in order, so the first 20 fit.
            let expected: Vec<Reply> = (0..50)
                .map(|i| {
                    if i < 20 {
                        Ok(())
                    } else {
                        Err(SpoolError::Full)
                    }
                })
                .collect();
            assert_eq!(replies, expected);
            drop(runtime);
            // The lane's task went with its runtime.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let reply = runtime.block_on(writer.commit(vec![Op::Remove("e000".into())]));
            assert_eq!(reply, Ok(()));
        })
        .join()
        .unwrap();
    }
}
