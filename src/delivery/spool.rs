//! The spool: where queued events live between their acknowledgement and their delivery. An
//! embedded transactional store behind the small [`Spool`] trait, and the single writer thread
//! that every change goes through ([`Writer`]), so that requests arriving together share one
//! commit and one fsync (group commit).
//!
//! The store is `redb` (see [`RedbSpool`]): a pure-Rust, copy-on-write B-tree file with
//! checksummed single-fsync commits that survive a torn last write, and an OS file lock so only
//! one process opens it. It never holds an event only in memory once its commit has returned,
//! and it never drops one: a full spool refuses new events ([`SpoolError::Full`]), and after an
//! fsync error it refuses every further change ([`SpoolError::Failed`]) until a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{ReadableTable, TableDefinition};

use super::meta_codec;
use serde::{Deserialize, Serialize};

/// Event metadata and state by event id: small, rewritten at every attempt.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Received headers and exact body by event id, as earlier builds stored them (read and
/// removed, no longer written).
const BODY: TableDefinition<&str, &[u8]> = TableDefinition::new("body");
/// The payloads (headers and body) of the events one commit inserted, end to end, by batch
/// number: one B-tree insert per commit (up to [`BATCH_BYTES`] each) instead of one per event,
/// and no half-empty page per 2 KiB body (measured: redb's share of a queued event's CPU 37% ->
/// 26%, bench/README.md). Each event's metadata says where its payload is
/// ([`meta_codec::Location`]). A batch stays until its last event is removed.
const BATCH: TableDefinition<u64, &[u8]> = TableDefinition::new("batch");
/// How many events of a batch are still stored: the batch goes with the last of them.
const BATCH_LIVE: TableDefinition<u64, u64> = TableDefinition::new("batch_live");
/// A batch is closed once it holds this much: reading one event back (a retry, a backlog past
/// what is kept in memory) reads its whole batch, so a batch stays small, and a payload larger
/// than this has one of its own.
const BATCH_BYTES: usize = 64 << 10;

/// redb's page cache.
const CACHE_BYTES: usize = 32 << 20;

/// The database file inside `spool.path`.
pub const FILE_NAME: &str = "spool.redb";

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

fn store(e: impl Into<redb::Error>) -> SpoolError {
    match e.into() {
        redb::Error::DatabaseAlreadyOpen => SpoolError::Locked,
        e => SpoolError::Store(e.to_string()),
    }
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
}

impl Filter {
    pub fn matches(&self, meta: &EventMeta) -> bool {
        self.route.as_ref().is_none_or(|r| *r == meta.route)
            && self.state.is_none_or(|s| s == meta.state)
            && self.since_ms.is_none_or(|t| meta.received_ms >= t)
            && self.id.as_ref().is_none_or(|i| *i == meta.id)
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

/// The redb-backed spool.
pub struct RedbSpool {
    /// Write-locked only to compact (redb needs `&mut` and no open transaction for it).
    /// `None` once closed.
    db: RwLock<Option<redb::Database>>,
    file: PathBuf,
    live: AtomicU64,
    /// The number the next commit's batch gets.
    next_batch: AtomicU64,
}

impl RedbSpool {
    /// Opens (or creates, mode 0700) the spool folder and its file. A torn last commit (a
    /// crash mid-write) is rolled back by redb's checksums here.
    pub fn open(dir: &Path) -> Result<RedbSpool, SpoolError> {
        create_private_dir(dir)
            .map_err(|e| SpoolError::Store(format!("cannot create {}: {e}", dir.display())))?;
        let file = dir.join(FILE_NAME);
        // redb's default page cache is 1 GiB; the spool is written once and read about once
        // per event, so a small cache does (measured: RSS 250-1000 MiB under load otherwise).
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(store)?;
        let tx = db.begin_write().map_err(store)?;
        let mut live = 0u64;
        let next_batch;
        {
            tx.open_table(META).map_err(store)?;
            tx.open_table(BODY).map_err(store)?;
            tx.open_table(BATCH_LIVE).map_err(store)?;
            let batches = tx.open_table(BATCH).map_err(store)?;
            let last = batches.last().map_err(store)?;
            next_batch = last.map_or(0, |(k, _)| k.value() + 1);
        }
        tx.commit().map_err(store)?;
        {
            let rx = db.begin_read().map_err(store)?;
            let meta = rx.open_table(META).map_err(store)?;
            for row in meta.iter().map_err(store)? {
                let (_, value) = row.map_err(store)?;
                if let Ok(m) = meta_codec::decode(value.value()) {
                    live += m.stored_bytes;
                }
            }
        }
        Ok(RedbSpool {
            db: RwLock::new(Some(db)),
            file,
            live: AtomicU64::new(live),
            next_batch: AtomicU64::new(next_batch),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<redb::Database>> {
        self.db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

impl Spool for RedbSpool {
    fn commit(
        &self,
        ops: Vec<Op>,
        max_bytes: u64,
        durable: bool,
    ) -> Result<Vec<usize>, SpoolError> {
        let guard = self.read();
        let db = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let mut tx = db.begin_write().map_err(store)?;
        if !durable {
            // No fsync: the next durable commit (redb's default, `Immediate`) carries it.
            tx.set_durability(redb::Durability::None);
        }
        let mut refused = Vec::new();
        let mut live = self.live.load(Ordering::SeqCst);
        let first_batch = self.next_batch.load(Ordering::SeqCst);
        // This commit's batches: payloads end to end, and how many of their events are left.
        let mut fresh: Vec<(Vec<u8>, u64)> = Vec::new();
        {
            let mut meta = tx.open_table(META).map_err(store)?;
            let mut body = tx.open_table(BODY).map_err(store)?;
            let mut batches = tx.open_table(BATCH).map_err(store)?;
            let mut batch_live = tx.open_table(BATCH_LIVE).map_err(store)?;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert { meta: m, payload } => {
                        if live.saturating_add(m.stored_bytes) > max_bytes {
                            refused.push(i);
                            continue;
                        }
                        let room = fresh
                            .last()
                            .is_some_and(|(blob, _)| blob.len() + payload.len() <= BATCH_BYTES);
                        if !room {
                            fresh.push((Vec::with_capacity(BATCH_BYTES.max(payload.len())), 0));
                        }
                        let batch = first_batch + fresh.len() as u64 - 1;
                        let Some((blob, members)) = fresh.last_mut() else {
                            continue;
                        };
                        let at = meta_codec::Location {
                            batch,
                            offset: blob.len() as u64,
                            len: payload.len() as u64,
                        };
                        blob.extend_from_slice(&payload);
                        *members += 1;
                        let record = meta_codec::encode(&m, at);
                        meta.insert(m.id.as_str(), record.as_slice())
                            .map_err(store)?;
                        live += m.stored_bytes;
                    }
                    Op::Update(m) => {
                        // Ignored when purged meanwhile; the payload stays where it is.
                        let at = match meta.get(m.id.as_str()).map_err(store)? {
                            None => continue,
                            Some(old) => meta_codec::location(old.value())?,
                        };
                        let record = match at {
                            Some(at) => meta_codec::encode(&m, at),
                            // An earlier build's event: its payload stays in BODY, by id.
                            None => serde_json::to_vec(&m)
                                .map_err(|e| SpoolError::Store(e.to_string()))?,
                        };
                        meta.insert(m.id.as_str(), record.as_slice())
                            .map_err(store)?;
                    }
                    Op::Remove(id) => {
                        let Some(old) = meta.remove(id.as_str()).map_err(store)? else {
                            continue;
                        };
                        let old = old.value().to_vec();
                        if let Ok(m) = meta_codec::decode(&old) {
                            live = live.saturating_sub(m.stored_bytes);
                        }
                        match meta_codec::location(&old) {
                            Ok(Some(at)) if at.batch >= first_batch => {
                                if let Some((_, members)) =
                                    fresh.get_mut((at.batch - first_batch) as usize)
                                {
                                    *members = members.saturating_sub(1);
                                }
                            }
                            Ok(Some(at)) => {
                                let left = batch_live
                                    .get(at.batch)
                                    .map_err(store)?
                                    .map_or(0, |n| n.value())
                                    .saturating_sub(1);
                                if left == 0 {
                                    batch_live.remove(at.batch).map_err(store)?;
                                    batches.remove(at.batch).map_err(store)?;
                                } else {
                                    batch_live.insert(at.batch, left).map_err(store)?;
                                }
                            }
                            _ => {
                                body.remove(id.as_str()).map_err(store)?;
                            }
                        }
                    }
                }
            }
            for (batch, (blob, members)) in (first_batch..).zip(&fresh) {
                if *members > 0 {
                    batches.insert(batch, blob.as_slice()).map_err(store)?;
                    batch_live.insert(batch, *members).map_err(store)?;
                }
            }
        }
        tx.commit().map_err(store)?;
        self.live.store(live, Ordering::SeqCst);
        self.next_batch
            .store(first_batch + fresh.len() as u64, Ordering::SeqCst);
        Ok(refused)
    }

    fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<EventMeta>, SpoolError> {
        let guard = self.read();
        let db = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let rx = db.begin_read().map_err(store)?;
        let table = rx.open_table(META).map_err(store)?;
        let mut out = Vec::new();
        if let Some(id) = &filter.id {
            if let Some(value) = table.get(id.as_str()).map_err(store)? {
                let m = meta_codec::decode(value.value())?;
                if filter.matches(&m) {
                    out.push(m);
                }
            }
            return Ok(out);
        }
        for row in table.iter().map_err(store)? {
            let (_, value) = row.map_err(store)?;
            let m = meta_codec::decode(value.value())?;
            if filter.matches(&m) {
                out.push(m);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn get(&self, id: &str) -> Result<Option<(EventMeta, Payload)>, SpoolError> {
        let guard = self.read();
        let db = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let rx = db.begin_read().map_err(store)?;
        let meta = rx.open_table(META).map_err(store)?;
        let Some(record) = meta.get(id).map_err(store)? else {
            return Ok(None);
        };
        let m = meta_codec::decode(record.value())?;
        let missing = || SpoolError::Corrupt(format!("event {id} has no body"));
        let payload = match meta_codec::location(record.value())? {
            Some(at) => {
                let batches = rx.open_table(BATCH).map_err(store)?;
                let blob = batches.get(at.batch).map_err(store)?.ok_or_else(missing)?;
                let end = at.offset.checked_add(at.len).ok_or_else(missing)?;
                let bytes = blob
                    .value()
                    .get(at.offset as usize..end as usize)
                    .ok_or_else(missing)?;
                Payload::decode(bytes)?
            }
            None => {
                let body = rx.open_table(BODY).map_err(store)?;
                let b = body.get(id).map_err(store)?.ok_or_else(missing)?;
                Payload::decode(b.value())?
            }
        };
        Ok(Some((m, payload)))
    }

    fn live_bytes(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }

    fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.file).map_or(0, |m| m.len())
    }

    fn compact(&self) -> Result<bool, SpoolError> {
        let mut guard = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let db = guard.as_mut().ok_or(SpoolError::Stopped)?;
        db.compact().map_err(|e| SpoolError::Store(e.to_string()))
    }

    fn close(&self) {
        // Waits for a commit under way; then the file and its lock are released.
        let mut guard = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.take();
    }
}

/// Counts of stored events, for metrics at start.
pub fn count_by_route_state(
    spool: &dyn Spool,
) -> Result<HashMap<(String, State), i64>, SpoolError> {
    let mut counts = HashMap::new();
    for m in spool.list(&Filter::default(), usize::MAX)? {
        *counts.entry((m.route, m.state)).or_insert(0) += 1;
    }
    Ok(counts)
}

/// How long the writer waits for more changes to join a commit that has fewer than
/// [`GROUP_MAX`]: requests arriving within it share the fsync.
pub const GROUP_WAIT: Duration = Duration::from_millis(2);

/// The linger actually used: [`GROUP_WAIT`], or `HOOKGATE_SPOOL_GROUP_WAIT_US` microseconds
/// (a benchmarking knob; 0 commits whatever is waiting at once).
fn group_wait() -> Duration {
    std::env::var("HOOKGATE_SPOOL_GROUP_WAIT_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(GROUP_WAIT, Duration::from_micros)
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
}

/// The longest a change committed without fsync ([`Writer::record`]) waits for a durable
/// commit: when no intake brings one sooner, the writer makes one. It bounds both what a
/// crash can undo (attempt results: a duplicate attempt) and how long redb keeps freed pages,
/// which it reuses only after a durable commit.
pub const LAZY_MAX: Duration = Duration::from_millis(200);

/// Called by the writer after each commit: (changes, seconds it took, result).
pub type CommitObserver = Box<dyn Fn(usize, f64, &Result<(), SpoolError>) + Send>;

/// The single writer: a thread that takes jobs from a channel and commits them in groups.
/// Cloned into every intake and worker. Each caller awaits its own job's commit.
#[derive(Clone)]
pub struct Writer {
    tx: std::sync::mpsc::Sender<Job>,
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
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&failed);
        let handle = std::thread::Builder::new()
            .name("hookgate-spool".into())
            .spawn(move || write_loop(&*spool, max_bytes, rx, &flag, &observe))?;
        Ok((Writer { tx, failed }, handle))
    }

    /// Commits `ops` (with whatever else is waiting) and resolves once they are durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Reply {
        self.send(ops, true).await
    }

    /// Commits `ops` without waiting for an fsync of their own: they are visible at once and
    /// durable with the next durable commit, within [`LAZY_MAX`]. For what a crash may undo
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
            self.tx
                .send(Job { ops, durable, done })
                .map(|()| wait)
                .map_err(|_| SpoolError::Stopped)
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
    }
}

fn write_loop(
    spool: &dyn Spool,
    max_bytes: u64,
    rx: std::sync::mpsc::Receiver<Job>,
    failed: &AtomicBool,
    observe: &CommitObserver,
) {
    let linger = group_wait();
    // When the oldest change committed without fsync was made, if one waits for a durable commit.
    let mut lazy_since: Option<Instant> = None;
    loop {
        let first = match lazy_since {
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Some(since) => {
                let left = (since + LAZY_MAX).saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(job) => job,
                    // Nothing came to carry them: an empty durable commit does.
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => empty_durable_job(),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                        let _ = spool.commit(Vec::new(), max_bytes, true);
                        return;
                    }
                }
            }
        };
        let mut jobs = vec![first];
        let mut ops_count = jobs[0].ops.len();
        let until = Instant::now() + linger;
        // Take what is already waiting, then wait a moment for more, up to a full group.
        while ops_count < GROUP_MAX {
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
            };
            ops_count += job.ops.len();
            jobs.push(job);
        }
        if failed.load(Ordering::SeqCst) {
            lazy_since = None;
            for job in jobs {
                let _ = job
                    .done
                    .send(Err(SpoolError::Failed("an earlier commit failed".into())));
            }
            continue;
        }
        // One transaction for all; remember which job each op came from.
        let mut owners = Vec::with_capacity(ops_count);
        let mut ops = Vec::with_capacity(ops_count);
        for (j, job) in jobs.iter_mut().enumerate() {
            for op in job.ops.drain(..) {
                owners.push(j);
                ops.push(op);
            }
        }
        let durable = jobs.iter().any(|j| j.durable)
            || lazy_since.is_some_and(|since| since.elapsed() >= LAZY_MAX);
        let started = Instant::now();
        let result = spool.commit(ops, max_bytes, durable);
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(refused) => {
                if durable {
                    lazy_since = None;
                } else {
                    lazy_since.get_or_insert(started);
                }
                observe(ops_count, seconds, &Ok(()));
                let full: std::collections::HashSet<usize> = refused
                    .iter()
                    .filter_map(|i| owners.get(*i).copied())
                    .collect();
                for (j, job) in jobs.into_iter().enumerate() {
                    let reply = if full.contains(&j) {
                        Err(SpoolError::Full)
                    } else {
                        Ok(())
                    };
                    let _ = job.done.send(reply);
                }
            }
            Err(e) => {
                // An fsync that failed may have lost pages the kernel already dropped: nothing
                // after it can be trusted to be durable, so nothing more is acknowledged.
                failed.store(true, Ordering::SeqCst);
                let err = Err(SpoolError::Failed(e.to_string()));
                observe(ops_count, seconds, &err);
                for job in jobs {
                    let _ = job.done.send(Err(SpoolError::Failed(e.to_string())));
                }
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

    #[test]
    fn inserts_beyond_max_bytes_are_refused_and_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let spool = RedbSpool::open(dir.path()).unwrap();
        let ops = vec![
            Op::Insert {
                meta: meta("a", 60),
                payload: Payload {
                    headers: vec![],
                    body: b"x".to_vec().into(),
                }
                .encode()
                .into(),
            },
            Op::Insert {
                meta: meta("b", 60),
                payload: Payload {
                    headers: vec![],
                    body: b"y".to_vec().into(),
                }
                .encode()
                .into(),
            },
        ];
        assert_eq!(spool.commit(ops, 100, true).unwrap(), vec![1]);
        assert_eq!(spool.live_bytes(), 60);
        assert!(spool.get("a").unwrap().is_some());
        assert!(spool.get("b").unwrap().is_none());
        spool
            .commit(vec![Op::Remove("a".into())], 100, true)
            .unwrap();
        assert_eq!(spool.live_bytes(), 0);
        drop(spool);
        // Reopened, it knows what it holds.
        let spool = RedbSpool::open(dir.path()).unwrap();
        assert_eq!(spool.live_bytes(), 0);
    }

    fn insert(id: &str, body: &[u8]) -> Op {
        Op::Insert {
            meta: meta(id, 10),
            payload: Payload {
                headers: vec![(b"x-id".to_vec(), id.as_bytes().to_vec())],
                body: body.to_vec().into(),
            }
            .encode()
            .into(),
        }
    }

    fn batches(spool: &RedbSpool) -> usize {
        use redb::ReadableTableMetadata;
        let guard = spool.read();
        let rx = guard.as_ref().unwrap().begin_read().unwrap();
        let table = rx.open_table(BATCH).unwrap();
        table.len().unwrap() as usize
    }

    #[test]
    fn a_commits_payloads_share_one_batch_that_goes_with_its_last_event() {
        let dir = tempfile::tempdir().unwrap();
        let spool = RedbSpool::open(dir.path()).unwrap();
        let ops = vec![insert("a", b"AA"), insert("b", b"B"), insert("c", b"")];
        spool.commit(ops, u64::MAX, true).unwrap();
        // Inserted and removed in the same commit: its batch never holds it.
        let ops = vec![insert("d", b"DDDD"), Op::Remove("d".into())];
        spool.commit(ops, u64::MAX, false).unwrap();
        assert_eq!(batches(&spool), 1);
        for (id, body) in [("a", &b"AA"[..]), ("b", b"B"), ("c", b"")] {
            let (m, p) = spool.get(id).unwrap().unwrap();
            assert_eq!((m.id.as_str(), &p.body[..]), (id, body));
            assert_eq!(p.headers, vec![(b"x-id".to_vec(), id.as_bytes().to_vec())]);
        }
        // An update keeps the payload where it is.
        let mut b = meta("b", 10);
        b.state = State::Delivered;
        spool.commit(vec![Op::Update(b)], u64::MAX, false).unwrap();
        let (m, p) = spool.get("b").unwrap().unwrap();
        assert_eq!((m.state, &p.body[..]), (State::Delivered, &b"B"[..]));
        spool
            .commit(
                vec![Op::Remove("a".into()), Op::Remove("b".into())],
                u64::MAX,
                true,
            )
            .unwrap();
        assert_eq!(batches(&spool), 1);
        assert_eq!(spool.get("c").unwrap().unwrap().1.body, &b""[..]);
        drop(spool);
        // Reopened, the next commit's batch does not collide with the one still stored.
        let spool = RedbSpool::open(dir.path()).unwrap();
        spool
            .commit(vec![insert("e", b"E")], u64::MAX, true)
            .unwrap();
        assert_eq!(batches(&spool), 2);
        assert_eq!(spool.get("c").unwrap().unwrap().1.body, &b""[..]);
        spool
            .commit(vec![Op::Remove("c".into())], u64::MAX, true)
            .unwrap();
        assert_eq!(batches(&spool), 1);
        assert_eq!(spool.get("e").unwrap().unwrap().1.body, &b"E"[..]);
        assert_eq!(spool.live_bytes(), 10);
    }

    #[test]
    fn a_second_process_is_refused_by_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _spool = RedbSpool::open(dir.path()).unwrap();
        assert!(matches!(
            RedbSpool::open(dir.path()),
            Err(SpoolError::Locked)
        ));
    }

    /// A store whose disk fails on the second commit, as a full or broken disk does.
    struct FailingSpool(std::sync::atomic::AtomicUsize);

    impl Spool for FailingSpool {
        fn commit(&self, _: Vec<Op>, _: u64, _: bool) -> Result<Vec<usize>, SpoolError> {
            if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                Ok(vec![])
            } else {
                Err(SpoolError::Store("fsync: Input/output error".into()))
            }
        }
        fn list(&self, _: &Filter, _: usize) -> Result<Vec<EventMeta>, SpoolError> {
            Ok(vec![])
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
            Arc::new(FailingSpool(Default::default())),
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
}
