//! The spool's store: an append-only log in numbered segment files, and an index in memory.
//!
//! A commit appends one record per change (a new event with its payload, a new state, a
//! removal) to the active segment in one `pwrite`, then `fdatasync`s it when it must be durable.
//! Nothing is rewritten in place, so a commit costs what it writes (measured against redb's
//! B-tree, which rewrote pages and their parents per commit: bench/README.md, "Durable
//! delivery"). On open every segment is read once, in order, to rebuild the index; the last
//! record of the last segment may be torn by a crash mid-write, and is cut off there.
//!
//! Space comes back by whole segments: the oldest one goes once no live event has its payload
//! or its latest state there. Deleting oldest first is what keeps a removal's record alive as
//! long as the record it cancels. A mostly-dead oldest segment has its few live events copied
//! to the end of the log first ([`SegmentSpool::compact`]), so one long-lived event does not
//! hold every later segment.
//!
//! A record: `u32 crc32 of the rest, u32 length of the rest, u8 kind`, then
//! - `1` insert: `u32 payload length, payload, metadata`;
//! - `2` state: `metadata`;
//! - `3` removal: the event id.
//!
//! Integers are big-endian; the metadata is [`meta_codec`]'s, whose trailing [`Location`] is
//! where the payload was written (on open, a record's own position is what counts).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Bound;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::meta_codec::{self, Location};
use super::spool::{
    EventMeta, Filter, Op, Payload, PendingEvent, Spool, SpoolError, State, Trigger,
};

/// Held locked (`flock`) while a process has the spool open.
pub const LOCK_FILE: &str = "spool.lock";
const SUFFIX: &str = ".seg";
/// The file of the spool before the segment log (redb).
const EARLIER_FILE: &str = "spool.redb";
/// crc, length, kind.
const HEADER: usize = 9;
const INSERT: u8 = 1;
const STATE: u8 = 2;
const REMOVE: u8 = 3;
/// No record is larger: a length beyond it is a torn or corrupt header, not an allocation.
const MAX_RECORD: usize = 1 << 30;
/// The largest commit buffer kept for the next commit.
const SCRATCH_MAX: usize = 4 << 20;
/// Segment size for a spool opened without its config (`hookgate queue` on a stopped gateway).
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// Segments of a sixteenth of `spool.max_bytes`, between 1 and 64 MiB: space comes back in
/// steps small against the limit, and a large spool is not thousands of files.
pub fn segment_bytes_for(max_bytes: u64) -> u64 {
    (max_bytes / 16).clamp(1 << 20, DEFAULT_SEGMENT_BYTES)
}

/// The store behind [`Spool`] (see the module's documentation).
pub struct SegmentSpool {
    dir: PathBuf,
    /// A new segment starts once the active one holds this much.
    segment_bytes: u64,
    /// `None` once closed.
    inner: Mutex<Option<Log>>,
    /// Mirrors [`Log::live`], for readers that do not need the lock.
    live: AtomicU64,
    file_bytes: AtomicU64,
    /// Keeps the `flock`; released when dropped.
    _lock: File,
}

struct Log {
    index: BTreeMap<String, Entry>,
    /// The route and upstream names the index's entries refer to by number.
    names: Names,
    segments: BTreeMap<u64, Segment>,
    /// The segment appended to: the last in `segments`.
    active: u64,
    /// Stored bytes of the events in `index` (what `max_bytes` limits).
    live: u64,
    /// The last commit's buffer, kept for the next: a fresh one of a few hundred KiB each
    /// time was page faults and zeroed pages (measured: 7% of a queued event's CPU).
    scratch: Batch,
}

/// An event in the index: where its latest metadata and its payload are on disk, what listing
/// and counting filter on, and what a start schedules. The metadata itself stays on disk and
/// is read back when an event is listed or fetched: held here, its bytes were most of the
/// memory a backlog took (bench/README.md, "memory per pending event").
#[derive(Clone)]
struct Entry {
    /// Where the event's latest [`meta_codec`] bytes are: in its insert record, or in its
    /// latest state record (`segment` is that record's segment).
    meta_at: Location,
    stored_bytes: u64,
    /// What listing filters on, so a scan reads only what it returns (retention runs every
    /// minute over every stored event, under the lock commits wait for).
    state: State,
    /// The route's and the upstream's numbers in [`Log::names`]: counting by route and
    /// scheduling at start read nothing from disk.
    route: u32,
    upstream: u32,
    /// What its next attempt is after a restart, if it is pending ([`Trigger::at_start`]).
    trigger_at_start: Trigger,
    received_ms: u64,
    updated_ms: u64,
    /// Where the payload is (`segment` is the segment's number).
    payload: Location,
}

/// Route and upstream names, each held once, by number.
#[derive(Default)]
struct Names {
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
}

impl Names {
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        let n = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        self.numbers.insert(name, n);
        n
    }

    fn name(&self, number: u32) -> &str {
        self.names.get(number as usize).map_or("", |name| name)
    }

    fn shared(&self, number: u32) -> Arc<str> {
        self.names
            .get(number as usize)
            .map_or_else(|| Arc::from(""), Arc::clone)
    }
}

struct Segment {
    file: File,
    len: u64,
    /// Live events whose payload, or latest state, is here (one each): the segment goes when 0.
    refs: u64,
    /// Payload bytes of live events here: what copying them forward would cost.
    live_payload: u64,
}

impl SegmentSpool {
    /// Opens (or creates, mode 0700) the spool folder, takes its lock, and reads every segment
    /// to rebuild the index. `segment_bytes` sizes the segments: space comes back in steps of
    /// about that.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<SegmentSpool, SpoolError> {
        crate::files::create_private_dir(dir).map_err(|e| io_error(dir, "cannot create", &e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, "cannot open", &e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error(&lock_path, "cannot lock", &e))
            }
        }
        // Builds before the segment log kept events in one redb file here: starting without
        // them would lose them quietly.
        let earlier = dir.join(EARLIER_FILE);
        if earlier.exists() {
            return Err(SpoolError::Store(format!(
                "{} was written by an earlier hookgate (a redb spool), which this build does not \
                 read: deliver or purge its events with that build, then remove the file",
                earlier.display()
            )));
        }
        let mut numbers = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io_error(dir, "cannot read", &e))? {
            let item = item.map_err(|e| io_error(dir, "cannot read", &e))?;
            let name = item.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            numbers.push(number);
        }
        numbers.sort_unstable();
        let mut log = Log {
            index: BTreeMap::new(),
            names: Names::default(),
            segments: BTreeMap::new(),
            active: 0,
            live: 0,
            scratch: Batch::default(),
        };
        let last = numbers.last().copied();
        for number in numbers {
            let path = segment_path(dir, number);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_error(&path, "cannot open", &e))?;
            let len = replay(&mut log, number, &file, &path, Some(number) == last)?;
            log.segments.insert(
                number,
                Segment {
                    file,
                    len,
                    refs: 0,
                    live_payload: 0,
                },
            );
            log.active = number;
        }
        if log.segments.is_empty() {
            log.start_segment(dir, 1)?;
        }
        log.count_refs();
        let spool = SegmentSpool {
            dir: dir.to_path_buf(),
            segment_bytes: segment_bytes.max(1),
            live: AtomicU64::new(log.live),
            file_bytes: AtomicU64::new(log.file_bytes()),
            inner: Mutex::new(Some(log)),
            _lock: lock,
        };
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Log>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, log: &Log) {
        self.live.store(log.live, Ordering::SeqCst);
        self.file_bytes.store(log.file_bytes(), Ordering::SeqCst);
    }
}

/// Reads one segment's records into the index; returns its length. In the last segment a torn
/// record ends the log and is cut off; anywhere else it is corruption, and the spool does not
/// open rather than lose what follows it. The file is read in pieces, not whole: a segment may
/// be larger than what a restart should hold in memory.
fn replay(
    log: &mut Log,
    number: u64,
    file: &File,
    path: &Path,
    last: bool,
) -> Result<u64, SpoolError> {
    let size = file
        .metadata()
        .map_err(|e| io_error(path, "cannot read", &e))?
        .len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut rest = Vec::new();
    let mut at = 0u64;
    while at < size {
        let whole = read_record(&mut reader, &mut rest, size - at)
            .map_err(|e| io_error(path, "cannot read", &e))?;
        match whole
            .then(|| decode_record(&rest, at + 8, number))
            .flatten()
        {
            Some(record) => {
                apply_recovered(log, record)?;
                at += 8 + rest.len() as u64;
            }
            None if last => {
                file.set_len(at)
                    .map_err(|e| io_error(path, "cannot cut the torn record off", &e))?;
                file.sync_data()
                    .map_err(|e| io_error(path, "cannot sync", &e))?;
                return Ok(at);
            }
            None => {
                return Err(SpoolError::Corrupt(format!(
                    "{}: unreadable record at byte {at}",
                    path.display()
                )))
            }
        }
    }
    Ok(at)
}

/// Reads the record at the reader's position (`left` bytes remain in the file) into `rest`
/// (its kind and body): false when it is cut short or its checksum fails.
fn read_record(reader: &mut impl Read, rest: &mut Vec<u8>, left: u64) -> std::io::Result<bool> {
    let mut header = [0u8; 8];
    if left < 8 + 1 {
        return Ok(false);
    }
    reader.read_exact(&mut header)?;
    let crc = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len == 0 || len > MAX_RECORD || len as u64 > left - 8 {
        return Ok(false);
    }
    rest.resize(len, 0);
    reader.read_exact(rest)?;
    Ok(crc32fast::hash(rest) == crc)
}

/// What a record (`rest`: its kind and body, which start at byte `start` of segment `segment`)
/// says, if it is well formed.
fn decode_record(rest: &[u8], start: u64, segment: u64) -> Option<Recovered<'_>> {
    let body = rest.get(1..)?;
    Some(match rest[0] {
        INSERT => {
            let payload_len = u32::from_be_bytes(body.get(0..4)?.try_into().ok()?) as usize;
            let meta_start = 4usize.checked_add(payload_len)?;
            let meta = body.get(meta_start..)?;
            let payload = Location {
                segment,
                offset: start + 1 + 4,
                len: payload_len as u64,
            };
            let at = Location {
                segment,
                offset: payload.offset + payload.len,
                len: meta.len() as u64,
            };
            Recovered::Insert(meta, payload, at)
        }
        STATE => Recovered::State(
            body,
            Location {
                segment,
                offset: start + 1,
                len: body.len() as u64,
            },
        ),
        REMOVE => Recovered::Remove(std::str::from_utf8(body).ok()?),
        _ => return None,
    })
}

/// A record read back: its metadata bytes, and where they (and an insert's payload) are.
enum Recovered<'a> {
    Insert(&'a [u8], Location, Location),
    State(&'a [u8], Location),
    Remove(&'a str),
}

fn apply_recovered(log: &mut Log, record: Recovered<'_>) -> Result<(), SpoolError> {
    match record {
        Recovered::Insert(record, payload, at) => {
            let meta = meta_codec::decode(record)?;
            let entry = Entry::new(at, &meta, &mut log.names, payload);
            log.live += entry.stored_bytes;
            if let Some(old) = log.index.insert(meta.id, entry) {
                log.live = log.live.saturating_sub(old.stored_bytes);
            }
        }
        Recovered::State(record, at) => {
            let meta = meta_codec::decode(record)?;
            // A state for an event removed or moved on since is stale: skip it.
            if let Some(entry) = log.index.get_mut(&meta.id) {
                log.live = log.live.saturating_sub(entry.stored_bytes) + meta.stored_bytes;
                *entry = Entry::new(at, &meta, &mut log.names, entry.payload);
            }
        }
        Recovered::Remove(id) => {
            if let Some(old) = log.index.remove(id) {
                log.live = log.live.saturating_sub(old.stored_bytes);
            }
        }
    }
    Ok(())
}

impl Entry {
    /// The entry of `meta`, whose metadata bytes are at `at` and its payload at `payload`.
    fn new(at: Location, meta: &EventMeta, names: &mut Names, payload: Location) -> Entry {
        Entry {
            meta_at: at,
            stored_bytes: meta.stored_bytes,
            state: meta.state,
            route: names.number(&meta.route),
            upstream: names.number(&meta.upstream),
            trigger_at_start: Trigger::at_start(meta),
            received_ms: meta.received_ms,
            updated_ms: meta.updated_ms,
            payload,
        }
    }

    /// Whether the event may match `filter`, from what the entry holds without reading it.
    fn may_match(&self, filter: &Filter, names: &Names) -> bool {
        filter.state.is_none_or(|s| s == self.state)
            && filter.since_ms.is_none_or(|t| self.received_ms >= t)
            && filter.updated_before_ms.is_none_or(|t| self.updated_ms < t)
            && filter
                .route
                .as_ref()
                .is_none_or(|r| r == names.name(self.route))
    }

    /// The segment holding the event's latest state record (its insert record, or a later one).
    fn state_segment(&self) -> u64 {
        self.meta_at.segment
    }
}

impl Log {
    fn file_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.len).sum()
    }

    fn count_refs(&mut self) {
        for entry in self.index.values() {
            if let Some(s) = self.segments.get_mut(&entry.payload.segment) {
                s.refs += 1;
                s.live_payload += entry.payload.len;
            }
            if let Some(s) = self.segments.get_mut(&entry.state_segment()) {
                s.refs += 1;
            }
        }
    }

    /// Creates segment `number` and makes its name durable before anything is acknowledged
    /// from it.
    fn start_segment(&mut self, dir: &Path, number: u64) -> Result<(), SpoolError> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, "cannot create", &e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "cannot sync", &e))?;
        self.segments.insert(
            number,
            Segment {
                file,
                len: 0,
                refs: 0,
                live_payload: 0,
            },
        );
        self.active = number;
        Ok(())
    }

    /// Starts the next segment once the active one is whole on disk: only the last segment
    /// can have a torn record.
    fn rotate(&mut self, dir: &Path) -> Result<(), SpoolError> {
        self.append(dir, &Batch::default(), true)?;
        self.start_segment(dir, self.active + 1)?;
        self.drop_dead_segments(dir);
        Ok(())
    }

    fn active(&self) -> Result<&Segment, SpoolError> {
        self.segments
            .get(&self.active)
            .ok_or_else(|| SpoolError::Store("the active segment is gone".into()))
    }

    /// Appends `batch` to the active segment, and syncs it if `durable`. On error the segment
    /// is cut back to where it was (best effort: a restart cuts a torn tail anyway).
    fn append(&mut self, dir: &Path, batch: &Batch, durable: bool) -> Result<(), SpoolError> {
        let number = self.active;
        let segment = self
            .segments
            .get_mut(&number)
            .ok_or_else(|| SpoolError::Store("the active segment is gone".into()))?;
        let path = || segment_path(dir, number);
        let mut at = segment.len;
        for piece in batch.pieces() {
            if let Err(e) = segment.file.write_all_at(piece, at) {
                let _ = segment.file.set_len(segment.len);
                return Err(io_error(&path(), "cannot write", &e));
            }
            at += piece.len() as u64;
        }
        segment.len = at;
        if durable {
            segment
                .file
                .sync_data()
                .map_err(|e| io_error(&path(), "cannot sync", &e))?;
        }
        Ok(())
    }

    /// Puts `entry` (or nothing) where the event `id` was, keeping the segments' counts.
    /// Takes both by value: an existing event's entry is replaced in place, without copying
    /// its record or its key.
    fn replace(&mut self, id: String, entry: Option<Entry>) {
        let added = entry
            .as_ref()
            .map(|e| (e.stored_bytes, e.payload, e.state_segment()));
        let old = match entry {
            Some(entry) => self.index.insert(id, entry),
            None => self.index.remove(&id),
        };
        if let Some(old) = old {
            self.live = self.live.saturating_sub(old.stored_bytes);
            if let Some(s) = self.segments.get_mut(&old.payload.segment) {
                s.refs = s.refs.saturating_sub(1);
                s.live_payload = s.live_payload.saturating_sub(old.payload.len);
            }
            if let Some(s) = self.segments.get_mut(&old.state_segment()) {
                s.refs = s.refs.saturating_sub(1);
            }
        }
        if let Some((stored_bytes, payload, state_segment)) = added {
            self.live += stored_bytes;
            if let Some(s) = self.segments.get_mut(&payload.segment) {
                s.refs += 1;
                s.live_payload += payload.len;
            }
            if let Some(s) = self.segments.get_mut(&state_segment) {
                s.refs += 1;
            }
        }
    }

    /// The event's metadata, as its latest record has it.
    fn read_meta(&self, entry: &Entry) -> Result<EventMeta, SpoolError> {
        meta_codec::decode(&self.read(entry.meta_at, "metadata")?)
    }

    fn read_payload(&self, at: Location) -> Result<Vec<u8>, SpoolError> {
        self.read(at, "payload")
    }

    fn read(&self, at: Location, what: &str) -> Result<Vec<u8>, SpoolError> {
        let missing = || SpoolError::Corrupt(format!("{what} in segment {}", at.segment));
        let segment = self.segments.get(&at.segment).ok_or_else(missing)?;
        let len = usize::try_from(at.len).map_err(|_| missing())?;
        let mut bytes = vec![0u8; len];
        segment
            .file
            .read_exact_at(&mut bytes, at.offset)
            .map_err(|e| SpoolError::Store(format!("segment {}: {e}", at.segment)))?;
        Ok(bytes)
    }

    /// Deletes the oldest segments that nothing live needs, the active one aside.
    fn drop_dead_segments(&mut self, dir: &Path) -> bool {
        let mut any = false;
        while let Some((&number, segment)) = self.segments.first_key_value() {
            if number == self.active || segment.refs > 0 {
                break;
            }
            if std::fs::remove_file(segment_path(dir, number)).is_err() {
                break;
            }
            self.segments.remove(&number);
            any = true;
        }
        // A deleted segment that came back after a crash would bring back what later
        // (deleted) segments removed.
        if any {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        any
    }
}

/// What an event stored now counts against `max_bytes`, and where its payload is: as this
/// commit has changed it so far, else as in the index. `None`: it is not stored.
fn current(
    changes: &HashMap<String, Option<Entry>>,
    index: &BTreeMap<String, Entry>,
    id: &str,
) -> Option<(u64, Location)> {
    let entry = match changes.get(id) {
        Some(change) => change.as_ref(),
        None => index.get(id),
    };
    entry.map(|e| (e.stored_bytes, e.payload))
}

/// A commit's bytes, in order: records built in one buffer, except large payloads, which are
/// written from the request's own buffer rather than copied into this one (a 64 KiB body was
/// copied twice in user space before its `pwrite`: 14% of a queued event's CPU, perf).
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    /// Payloads written from where they are: each goes after `buf[..at]`.
    large: Vec<(usize, bytes::Bytes)>,
    large_bytes: u64,
}

/// A payload at least this large is written from its own buffer (a `pwrite` of its own).
const LARGE_PAYLOAD: usize = 16 << 10;

impl Batch {
    fn clear(&mut self) {
        self.buf.clear();
        self.large.clear();
        self.large_bytes = 0;
    }

    /// Bytes in the batch, payloads included.
    fn len(&self) -> u64 {
        self.buf.len() as u64 + self.large_bytes
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn put_payload(&mut self, payload: &bytes::Bytes) {
        if payload.len() < LARGE_PAYLOAD {
            self.put(payload);
        } else {
            self.large.push((self.buf.len(), payload.clone()));
            self.large_bytes += payload.len() as u64;
        }
    }

    /// The pieces to write, in order.
    fn pieces(&self) -> impl Iterator<Item = &[u8]> {
        let mut from = 0;
        let mut out = Vec::with_capacity(2 * self.large.len() + 1);
        for (at, payload) in &self.large {
            out.push(&self.buf[from..*at]);
            out.push(payload.as_ref());
            from = *at;
        }
        out.push(&self.buf[from..]);
        out.into_iter().filter(|piece| !piece.is_empty())
    }
}

/// Appends one record to `out`; `body` is everything after the kind byte, in pieces.
fn put_record(out: &mut Batch, kind: u8, body: &[&[u8]]) {
    let len = 1 + body.iter().map(|b| b.len()).sum::<usize>();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    for piece in body {
        crc.update(piece);
    }
    out.put(&crc.finalize().to_be_bytes());
    out.put(&(len as u32).to_be_bytes());
    out.put(&[kind]);
    for piece in body {
        out.put(piece);
    }
}

/// Appends an insert record for `meta` and `payload` to `out`, which will be written at byte
/// `base` of segment `segment`; returns the entry it makes.
fn put_insert(
    out: &mut Batch,
    base: u64,
    segment: u64,
    meta: &EventMeta,
    names: &mut Names,
    payload: &bytes::Bytes,
) -> Entry {
    let at = Location {
        segment,
        offset: base + out.len() + HEADER as u64 + 4,
        len: payload.len() as u64,
    };
    let record = meta_codec::encode(meta, at);
    let payload_len = (payload.len() as u32).to_be_bytes();
    // put_record's layout, with the payload left where it is.
    let mut crc = crc32fast::Hasher::new();
    for piece in [&[INSERT][..], &payload_len, payload, &record] {
        crc.update(piece);
    }
    let len = 1 + payload_len.len() + payload.len() + record.len();
    out.put(&crc.finalize().to_be_bytes());
    out.put(&(len as u32).to_be_bytes());
    out.put(&[INSERT]);
    out.put(&payload_len);
    out.put_payload(payload);
    let meta_at = Location {
        segment,
        offset: at.offset + at.len,
        len: record.len() as u64,
    };
    out.put(&record);
    Entry::new(meta_at, meta, names, at)
}

impl Spool for SegmentSpool {
    fn commit(
        &self,
        ops: Vec<Op>,
        max_bytes: u64,
        durable: bool,
    ) -> Result<Vec<usize>, SpoolError> {
        let mut guard = self.lock();
        let log = guard.as_mut().ok_or(SpoolError::Stopped)?;
        let number = log.active;
        let base = log.active()?.len;
        // The records, and what each changes in the index once they are written: a failed
        // write leaves the index as it was.
        let mut out = std::mem::take(&mut log.scratch);
        out.clear();
        let mut changes: HashMap<String, Option<Entry>> = HashMap::new();
        let mut refused = Vec::new();
        let mut live = log.live;
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert { meta, payload } => {
                    if live.saturating_add(meta.stored_bytes) > max_bytes {
                        refused.push(i);
                        continue;
                    }
                    live += meta.stored_bytes;
                    let entry = put_insert(&mut out, base, number, &meta, &mut log.names, &payload);
                    changes.insert(meta.id, Some(entry));
                }
                Op::Update(meta) => {
                    // Ignored when purged meanwhile; the payload stays where it is.
                    let Some((stored, payload)) = current(&changes, &log.index, &meta.id) else {
                        continue;
                    };
                    live = live.saturating_sub(stored) + meta.stored_bytes;
                    let record = meta_codec::encode(&meta, payload);
                    let at = Location {
                        segment: number,
                        offset: base + out.len() + HEADER as u64,
                        len: record.len() as u64,
                    };
                    put_record(&mut out, STATE, &[&record]);
                    let entry = Entry::new(at, &meta, &mut log.names, payload);
                    changes.insert(meta.id, Some(entry));
                }
                Op::Remove(id) => {
                    let Some((stored, _)) = current(&changes, &log.index, &id) else {
                        continue;
                    };
                    live = live.saturating_sub(stored);
                    put_record(&mut out, REMOVE, &[id.as_bytes()]);
                    changes.insert(id, None);
                }
            }
        }
        log.append(&self.dir, &out, durable)?;
        for (id, entry) in changes {
            log.replace(id, entry);
        }
        if base + out.len() >= self.segment_bytes {
            log.rotate(&self.dir)?;
        }
        out.large.clear();
        if out.buf.capacity() <= SCRATCH_MAX {
            log.scratch = out;
        }
        self.publish(log);
        Ok(refused)
    }

    fn list(&self, filter: &Filter, limit: usize) -> Result<Vec<EventMeta>, SpoolError> {
        let guard = self.lock();
        let log = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let mut out = Vec::new();
        if let Some(id) = &filter.id {
            if let Some(entry) = log.index.get(id) {
                let meta = log.read_meta(entry)?;
                if filter.matches(&meta) {
                    out.push(meta);
                }
            }
            return Ok(out);
        }
        // Ids are time-ordered: the index's order is oldest first.
        let after = match &filter.after_id {
            Some(id) => Bound::Excluded(id.as_str()),
            None => Bound::Unbounded,
        };
        let entries = log.index.range::<str, _>((after, Bound::Unbounded));
        for entry in entries
            .map(|(_, e)| e)
            .filter(|e| e.may_match(filter, &log.names))
        {
            if out.len() >= limit {
                break;
            }
            let meta = log.read_meta(entry)?;
            if filter.matches(&meta) {
                out.push(meta);
            }
        }
        Ok(out)
    }

    fn pending(&self, after: Option<&str>, limit: usize) -> Result<Vec<PendingEvent>, SpoolError> {
        let guard = self.lock();
        let log = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let after = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(log
            .index
            .range::<str, _>((after, Bound::Unbounded))
            .filter(|(_, e)| e.state == State::Pending)
            .take(limit)
            .map(|(id, e)| PendingEvent {
                id: id.clone(),
                route: log.names.shared(e.route),
                upstream: log.names.shared(e.upstream),
                received_ms: e.received_ms,
                trigger: e.trigger_at_start,
            })
            .collect())
    }

    fn counts(&self) -> Result<HashMap<(String, State), i64>, SpoolError> {
        let guard = self.lock();
        let log = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let mut by_number: HashMap<(u32, State), i64> = HashMap::new();
        for entry in log.index.values() {
            *by_number.entry((entry.route, entry.state)).or_insert(0) += 1;
        }
        let name = |n| log.names.name(n).to_string();
        Ok(by_number
            .into_iter()
            .map(|((route, state), n)| ((name(route), state), n))
            .collect())
    }

    fn get(&self, id: &str) -> Result<Option<(EventMeta, Payload)>, SpoolError> {
        let guard = self.lock();
        let log = guard.as_ref().ok_or(SpoolError::Stopped)?;
        let Some(entry) = log.index.get(id) else {
            return Ok(None);
        };
        let payload = Payload::decode(&log.read_payload(entry.payload)?)?;
        Ok(Some((log.read_meta(entry)?, payload)))
    }

    fn live_bytes(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }

    fn file_bytes(&self) -> u64 {
        self.file_bytes.load(Ordering::SeqCst)
    }

    /// Deletes the segments nothing live needs. The oldest segment, when less than a quarter
    /// of it is live, first has its live events copied to the end of the log (one durable
    /// append), so it can go too; then the next oldest, up to a few per call.
    fn compact(&self) -> Result<bool, SpoolError> {
        const ROUNDS: usize = 8;
        let mut guard = self.lock();
        let log = guard.as_mut().ok_or(SpoolError::Stopped)?;
        let mut freed = log.drop_dead_segments(&self.dir);
        for _ in 0..ROUNDS {
            let Some((&oldest, segment)) = log.segments.first_key_value() else {
                break;
            };
            if oldest == log.active || segment.live_payload * 4 > segment.len {
                break;
            }
            if log.active()?.len >= self.segment_bytes {
                log.rotate(&self.dir)?;
            }
            let movers: Vec<Entry> = log
                .index
                .values()
                .filter(|e| e.payload.segment == oldest || e.state_segment() == oldest)
                .cloned()
                .collect();
            let (number, base) = (log.active, log.active()?.len);
            let mut out = Batch::default();
            let mut moved = Vec::with_capacity(movers.len());
            for entry in movers {
                let payload = bytes::Bytes::from(log.read_payload(entry.payload)?);
                let meta = log.read_meta(&entry)?;
                let moved_entry =
                    put_insert(&mut out, base, number, &meta, &mut log.names, &payload);
                moved.push((moved_entry, meta.id));
            }
            log.append(&self.dir, &out, true)?;
            for (entry, id) in moved {
                log.replace(id, Some(entry));
            }
            freed |= log.drop_dead_segments(&self.dir);
        }
        self.publish(log);
        Ok(freed)
    }

    fn close(&self) {
        // Waits for a commit under way; then the files (and the lock, with `self`) go.
        self.lock().take();
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}{SUFFIX}"))
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> SpoolError {
    SpoolError::Store(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::spool::{State, Trigger};

    fn meta(id: &str, bytes: u64) -> EventMeta {
        let mut m = EventMeta::placeholder(id);
        (m.route, m.upstream, m.trigger) = ("r".into(), "u".into(), Trigger::Initial);
        m.stored_bytes = bytes;
        m
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

    fn body(spool: &SegmentSpool, id: &str) -> Option<Vec<u8>> {
        spool.get(id).unwrap().map(|(m, p)| {
            assert_eq!(m.id, id);
            assert_eq!(p.headers, vec![(b"x-id".to_vec(), id.as_bytes().to_vec())]);
            p.body.to_vec()
        })
    }

    fn ids(spool: &SegmentSpool) -> Vec<String> {
        let all = spool.list(&Filter::default(), usize::MAX).unwrap();
        all.into_iter().map(|m| m.id).collect()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        files.sort();
        files
    }

    /// Cuts `cut` bytes off the end of the last segment, as a crash mid-write leaves it; returns
    /// that segment's path.
    fn tear_last_segment(dir: &Path, cut: u64) -> PathBuf {
        let file = segment_files(dir).pop().unwrap();
        let len = std::fs::metadata(&file).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len - cut)
            .unwrap();
        file
    }

    #[test]
    fn inserts_beyond_max_bytes_are_refused_and_others_commit() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        let mut a = insert("a", b"x");
        let mut b = insert("b", b"y");
        for op in [&mut a, &mut b] {
            if let Op::Insert { meta, .. } = op {
                meta.stored_bytes = 60;
            }
        }
        assert_eq!(spool.commit(vec![a, b], 100, true).unwrap(), vec![1]);
        assert_eq!(spool.live_bytes(), 60);
        assert_eq!(body(&spool, "a").as_deref(), Some(&b"x"[..]));
        assert_eq!(body(&spool, "b"), None);
        drop(spool);
        // Reopened, it knows what it holds.
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            (spool.live_bytes(), ids(&spool)),
            (60, vec!["a".to_string()])
        );
    }

    #[test]
    fn states_and_removals_survive_a_reopen_and_a_payload_stays_where_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        let ops = vec![insert("a", b"AA"), insert("b", b"B"), insert("c", b"")];
        spool.commit(ops, u64::MAX, true).unwrap();
        // Inserted and removed in one commit; a state for an event that is not there.
        let ops = vec![
            insert("d", b"DDDD"),
            Op::Remove("d".into()),
            Op::Update(meta("zz", 1)),
        ];
        spool.commit(ops, u64::MAX, false).unwrap();
        let mut b = meta("b", 10);
        b.state = State::Delivered;
        b.last_status = Some(204);
        spool
            .commit(vec![Op::Update(b.clone())], u64::MAX, false)
            .unwrap();
        spool
            .commit(vec![Op::Remove("a".into())], u64::MAX, true)
            .unwrap();
        let check = |spool: &SegmentSpool| {
            assert_eq!(ids(spool), vec!["b".to_string(), "c".to_string()]);
            assert_eq!(spool.get("b").unwrap().unwrap().0, b);
            assert_eq!(body(spool, "b").as_deref(), Some(&b"B"[..]));
            assert_eq!(body(spool, "c").as_deref(), Some(&b""[..]));
            assert_eq!(spool.live_bytes(), 20);
        };
        check(&spool);
        drop(spool);
        check(&SegmentSpool::open(dir.path(), 1 << 20).unwrap());
    }

    /// Large payloads are written from their own buffers, between the records built around
    /// them: every byte must land where the index says, in this process and after a reopen,
    /// and the next commit must start where the last one ended.
    #[test]
    fn large_and_small_payloads_in_one_commit_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        let large =
            |seed: u8, n: usize| (0..n).map(|i| seed ^ (i % 251) as u8).collect::<Vec<u8>>();
        let bodies: Vec<(String, Vec<u8>)> = vec![
            ("a".into(), b"small".to_vec()),
            ("b".into(), large(1, LARGE_PAYLOAD)),
            ("c".into(), large(2, 70_000)),
            ("d".into(), b"".to_vec()),
            ("e".into(), large(3, LARGE_PAYLOAD - 100)),
        ];
        let mut ops: Vec<Op> = bodies.iter().map(|(id, b)| insert(id, b)).collect();
        let mut c = meta("c", 10);
        c.state = State::Delivered;
        ops.push(Op::Update(c.clone()));
        spool.commit(ops, u64::MAX, true).unwrap();
        spool
            .commit(vec![insert("f", &large(4, 20_000))], u64::MAX, true)
            .unwrap();
        let check = |spool: &SegmentSpool| {
            for (id, want) in &bodies {
                assert_eq!(body(spool, id).as_ref(), Some(want), "{id}");
            }
            assert_eq!(body(spool, "f"), Some(large(4, 20_000)));
            // Metadata is read back from where its record is, after payloads of every size.
            assert_eq!(spool.get("c").unwrap().unwrap().0, c);
            for id in ["a", "b", "d", "e", "f"] {
                assert_eq!(spool.get(id).unwrap().unwrap().0, meta(id, 10), "{id}");
            }
        };
        check(&spool);
        drop(spool);
        check(&SegmentSpool::open(dir.path(), 1 << 20).unwrap());

        // A crash between a large payload's own write and the record after it: the last
        // commit (event f) is cut off whole, the earlier ones stay.
        tear_last_segment(dir.path(), 5_000);
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ids(&spool), vec!["a", "b", "c", "d", "e"]);
        for (id, want) in &bodies {
            assert_eq!(body(&spool, id).as_ref(), Some(want), "{id}");
        }
    }

    #[test]
    fn a_torn_last_record_is_cut_off_and_the_log_goes_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        spool
            .commit(vec![insert("a", b"kept")], u64::MAX, true)
            .unwrap();
        let whole = spool.file_bytes();
        spool
            .commit(vec![insert("b", &[7; 3000])], u64::MAX, true)
            .unwrap();
        drop(spool);
        // A crash mid-write: the second record's end never reached the disk.
        let file = tear_last_segment(dir.path(), 1000);
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ids(&spool), vec!["a".to_string()]);
        assert_eq!(std::fs::metadata(&file).unwrap().len(), whole);
        spool
            .commit(vec![insert("c", b"after")], u64::MAX, true)
            .unwrap();
        drop(spool);
        // Zeros where a record should start (a size that reached the disk before its data).
        let mut tail = OpenOptions::new().append(true).open(&file).unwrap();
        std::io::Write::write_all(&mut tail, &[0; 64]).unwrap();
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(ids(&spool), vec!["a".to_string(), "c".to_string()]);
        assert_eq!(body(&spool, "c").as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn a_bad_record_before_the_last_segment_refuses_to_open_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SegmentSpool::open(dir.path(), 64).unwrap();
        for id in ["a", "b", "c"] {
            spool
                .commit(vec![insert(id, b"x")], u64::MAX, true)
                .unwrap();
        }
        drop(spool);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3, "{files:?}");
        let mut bytes = std::fs::read(&files[0]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&files[0], bytes).unwrap();
        match SegmentSpool::open(dir.path(), 64) {
            Err(SpoolError::Corrupt(why)) => {
                assert!(why.contains(&*files[0].to_string_lossy()), "{why}")
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a corrupt spool opened"),
        }
    }

    #[test]
    fn listing_filters_agree_with_the_filter_on_every_event_and_counts_by_route_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        let states = [State::Pending, State::Delivered, State::Dead];
        let mut ops = Vec::new();
        for i in 0..30u64 {
            let mut m = meta(&format!("{i:02}"), 10);
            (m.received_ms, m.updated_ms) = (100 + i, 1000 + (i * 7) % 30);
            m.route = if i % 4 == 0 { "a".into() } else { "b".into() };
            m.state = states[(i % 3) as usize];
            ops.push(Op::Insert {
                meta: m,
                payload: Payload {
                    headers: vec![],
                    body: bytes::Bytes::new(),
                }
                .encode()
                .into(),
            });
        }
        spool.commit(ops, u64::MAX, true).unwrap();
        let all = spool.list(&Filter::default(), usize::MAX).unwrap();
        assert_eq!(all.len(), 30);
        for state in [None, Some(State::Dead), Some(State::Delivered)] {
            for since_ms in [None, Some(115)] {
                for updated_before_ms in [None, Some(1010)] {
                    for after_id in [None, Some(all[3].id.clone())] {
                        let filter = Filter {
                            state,
                            since_ms,
                            updated_before_ms,
                            after_id,
                            route: Some("b".into()),
                            ..Filter::default()
                        };
                        let want: Vec<_> =
                            all.iter().filter(|m| filter.matches(m)).cloned().collect();
                        assert!(!want.is_empty(), "{filter:?}");
                        assert_eq!(spool.list(&filter, usize::MAX).unwrap(), want, "{filter:?}");
                    }
                }
            }
        }
        let counts = spool.counts().unwrap();
        assert_eq!(counts.values().sum::<i64>(), 30);
        assert_eq!(counts[&("a".to_string(), State::Pending)], 3);
        assert_eq!(counts[&("b".to_string(), State::Dead)], 8);
    }

    #[test]
    fn an_earlier_builds_spool_file_stops_the_open_rather_than_being_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("spool.redb"), b"redb").unwrap();
        match SegmentSpool::open(dir.path(), 1 << 20) {
            Err(SpoolError::Store(why)) => assert!(why.contains("earlier hookgate"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened beside an earlier spool"),
        }
    }

    #[test]
    fn a_second_process_is_refused_by_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _spool = SegmentSpool::open(dir.path(), 1 << 20).unwrap();
        assert!(matches!(
            SegmentSpool::open(dir.path(), 1 << 20),
            Err(SpoolError::Locked)
        ));
    }

    #[test]
    fn space_comes_back_by_segments_and_a_long_lived_event_is_copied_forward() {
        let dir = tempfile::tempdir().unwrap();
        let segment = 4096;
        let spool = SegmentSpool::open(dir.path(), segment).unwrap();
        spool
            .commit(vec![insert("0-old", b"old")], u64::MAX, true)
            .unwrap();
        let mut removed = Vec::new();
        for round in 0..20 {
            let batch: Vec<String> = (0..10).map(|i| format!("{round:02}-{i}")).collect();
            let ops = batch.iter().map(|id| insert(id, &[1; 300])).collect();
            spool.commit(ops, u64::MAX, true).unwrap();
            let ops = batch.iter().map(|id| Op::Remove(id.clone())).collect();
            spool.commit(ops, u64::MAX, false).unwrap();
            removed.extend(batch);
        }
        let before = segment_files(dir.path()).len();
        assert!(before > 10, "{before} segments");
        // The oldest segment holds one live event: it is copied forward, and every segment
        // before the active one goes.
        assert!(spool.compact().unwrap());
        let after = segment_files(dir.path());
        assert!(after.len() <= 2, "{after:?}");
        assert!(spool.file_bytes() <= 2 * segment + 1000);
        assert_eq!(body(&spool, "0-old").as_deref(), Some(&b"old"[..]));
        drop(spool);
        // Reopened: the removed events stay removed, the copied one is there once.
        let spool = SegmentSpool::open(dir.path(), segment).unwrap();
        assert_eq!(ids(&spool), vec!["0-old".to_string()]);
        assert_eq!(body(&spool, "0-old").as_deref(), Some(&b"old"[..]));
        assert_eq!(spool.live_bytes(), 10);
    }
}
