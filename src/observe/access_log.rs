//! The access log: one JSON object per line, per request, accepted or refused (DESIGN.md
//! section 5). A request appends its finished [`Entry`] to its worker's batch; batches go through
//! a bounded channel to one writer thread that owns the file, so disk I/O never runs on a
//! request's thread. It never logs a body, a secret or a signature header.

use std::cell::RefCell;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderValue, Method, Uri};
use serde::{Serialize, Serializer};
use tokio::task::JoinHandle;

use crate::config::LogTarget;

/// One request's line. Fields that do not apply to a request are left out. It borrows what the
/// request's runtime snapshot and connection already hold, so filling it allocates little.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    #[serde(serialize_with = "rfc3339_millis")]
    pub ts: SystemTime,
    #[serde(serialize_with = "header_text")]
    pub request_id: HeaderValue,
    pub listener: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Arc<str>>,
    /// Empty for a request hyper refused before its head was read.
    #[serde(serialize_with = "method_name")]
    pub method: Option<Method>,
    #[serde(rename = "path", serialize_with = "uri_path")]
    pub uri: Option<Uri>,
    pub proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    pub peer_ip: IpAddr,
    pub client_ip: IpAddr,
    pub status: u16,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_index: Option<usize>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "user_agent")]
    pub user_agent: Option<HeaderValue>,
}

impl<'a> Entry<'a> {
    /// A line for a request on `listener` from `peer`, stamped now; the pipeline fills in the
    /// rest as it learns it. Until then it reads as an internal error.
    pub fn new(request_id: HeaderValue, listener: Arc<str>, peer: IpAddr) -> Entry<'a> {
        Entry {
            ts: SystemTime::now(),
            request_id,
            listener,
            route: None,
            method: None,
            uri: None,
            proto: "HTTP/1.1",
            tls_version: None,
            peer_ip: peer,
            client_ip: peer,
            status: 0,
            outcome: "internal_error",
            reason: None,
            provider: None,
            event_id: None,
            secret_index: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0.0,
            upstream: None,
            upstream_status: None,
            upstream_ms: None,
            user_agent: None,
        }
    }
}

thread_local! {
    /// The last second formatted on this thread, `2026-11-27T12:49:32`: a busy worker formats
    /// each second's date once, not once per line.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-11-27T12:49:32.123Z`.
fn rfc3339_millis<S: Serializer>(ts: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let since_epoch = ts.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let millis = since_epoch.subsec_millis();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since_epoch.as_secs() {
            *second = since_epoch.as_secs();
            *text = humantime::format_rfc3339_seconds(*ts).to_string();
            text.pop(); // the `Z`, which goes after the milliseconds
        }
        let mut out = [0u8; 32];
        let n = text.len();
        if n + 5 > out.len() {
            return s.collect_str(&humantime::format_rfc3339_millis(*ts));
        }
        out[..n].copy_from_slice(text.as_bytes());
        out[n] = b'.';
        for (i, digit) in [millis / 100, millis / 10 % 10, millis % 10]
            .into_iter()
            .enumerate()
        {
            out[n + 1 + i] = b'0' + digit as u8;
        }
        out[n + 4] = b'Z';
        s.serialize_str(std::str::from_utf8(&out[..n + 5]).unwrap_or_default())
    })
}

/// A header value known to be text (a request id); anything else reads as empty.
fn header_text<S: Serializer>(value: &HeaderValue, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.to_str().unwrap_or_default())
}

fn method_name<S: Serializer>(method: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(method.as_ref().map_or("", Method::as_str))
}

fn uri_path<S: Serializer>(uri: &Option<Uri>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(uri.as_ref().map_or("", Uri::path))
}

/// The caller's User-Agent, cut to 256 characters; not text, it is left out as `null`.
fn user_agent<S: Serializer>(value: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match value.as_ref().and_then(|v| v.to_str().ok()) {
        Some(ua) => {
            let end = ua.char_indices().nth(256).map_or(ua.len(), |(i, _)| i);
            s.serialize_str(&ua[..end])
        }
        None => s.serialize_none(),
    }
}

/// The sending side, cloned into every request. Dropping every clone lets the writer finish.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
}

/// A worker hands its lines over in batches of about this size, or every [`FLUSH_EVERY`].
const BATCH: usize = 64 << 10;
/// Batches queued before a worker waits for the disk (4 MiB): a line is never dropped.
const QUEUE: usize = 64;
/// How often a worker hands over a partial batch: the most a line waits before it is written.
pub const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

thread_local! {
    /// Lines not yet handed to the writer, on a thread that batches (see
    /// [`AccessLog::batch_on_this_thread`]).
    static PENDING: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

impl AccessLog {
    /// Opens the target and starts the writer thread. The handle resolves once every sender is
    /// gone and every line handed over is flushed.
    pub async fn start(target: &LogTarget) -> std::io::Result<(AccessLog, JoinHandle<()>)> {
        let sink: Box<dyn Write + Send> = match target {
            LogTarget::Off => {
                return Ok((AccessLog { tx: None }, tokio::spawn(async {})));
            }
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(open_append(path)?),
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        // A plain thread with a plain file: tokio's file type sends every write through its
        // blocking pool, which measured as a fifth of the gateway's CPU per request (bench/).
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("hookgate-access-log".into())
            .spawn(move || {
                write_batches(rx, sink);
                let _ = done_tx.send(());
            })?;
        let done = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        Ok((AccessLog { tx: Some(tx) }, done))
    }

    /// Makes the calling thread (a worker) collect its lines and hand them to the writer in
    /// batches, one wake-up per batch instead of one per line. The thread must call
    /// [`AccessLog::flush`] every [`FLUSH_EVERY`] and before it exits. Other threads hand over
    /// each line at once.
    pub fn batch_on_this_thread() {
        PENDING.set(Some(Vec::with_capacity(BATCH)));
    }

    pub fn write(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        let ready = PENDING.with_borrow_mut(|pending| match pending {
            Some(batch) => {
                append_line(batch, entry);
                (batch.len() >= BATCH).then(|| std::mem::replace(batch, Vec::with_capacity(BATCH)))
            }
            None => {
                let mut line = Vec::with_capacity(512);
                append_line(&mut line, entry);
                Some(line)
            }
        });
        if let Some(lines) = ready {
            // An error means the writer is gone, which only happens at shutdown.
            let _ = tx.send(lines);
        }
    }

    /// Hands this thread's partial batch to the writer.
    pub fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let ready = PENDING.with_borrow_mut(|pending| {
            pending
                .as_mut()
                .filter(|batch| !batch.is_empty())
                .map(|batch| std::mem::replace(batch, Vec::with_capacity(BATCH)))
        });
        if let Some(lines) = ready {
            let _ = tx.send(lines);
        }
    }
}

fn append_line(out: &mut Vec<u8>, entry: &Entry) {
    // Serialising plain strings and numbers into memory cannot fail; if it ever did, the
    // partial line is cut off so the next one still starts on its own line.
    let start = out.len();
    if serde_json::to_writer(&mut *out, entry).is_err() {
        out.truncate(start);
        return;
    }
    out.push(b'\n');
}

fn open_append(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Writes what arrives, flushing whenever nothing more is queued.
fn write_batches(rx: Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(BATCH, sink);
    while let Ok(lines) = rx.recv() {
        let mut ok = out.write_all(&lines).is_ok();
        while let Ok(lines) = rx.try_recv() {
            ok &= out.write_all(&lines).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            super::event("error", "access log write failed", serde_json::json!({}));
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn formatted(ts: SystemTime) -> String {
        let mut out = Vec::new();
        rfc3339_millis(&ts, &mut serde_json::Serializer::new(&mut out)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_match_rfc3339_with_millis_across_the_per_second_cache() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for offset_ms in [0, 5, 999, 1_000, 1_042, 61_007, 86_400_000, 5] {
            let ts = base + Duration::from_millis(offset_ms);
            let expected = format!("\"{}\"", humantime::format_rfc3339_millis(ts));
            assert_eq!(formatted(ts), expected, "{offset_ms} ms");
        }
    }
}
