//! The access log: one JSON object per line, per request, accepted or refused (DESIGN.md
//! section 5). A request appends its finished [`Entry`] to its worker's batch; batches go through
//! a bounded channel to one writer thread that owns the file, so disk I/O never runs on a
//! request's thread. It never logs a body, a secret or a signature header.

use std::cell::RefCell;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::SystemTime;

use http::{HeaderValue, Method, Uri};
use tokio::task::JoinHandle;

use super::json_line::{text, value, write_rfc3339_millis};
use crate::config::LogTarget;

/// What happened to a request: the access log's `outcome` and the metrics' `outcome` label
/// (DESIGN.md section 5). Decided in one place, `pipeline::reject`, from how the request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Duplicate,
    Handshake,
    BadRequest,
    NoRoute,
    MethodNotAllowed,
    IpDenied,
    RateLimited,
    BodyTooLarge,
    Timeout,
    SignatureInvalid,
    ClientAbort,
    UpstreamConnectError,
    UpstreamTimeout,
    UpstreamError,
    /// Every connection the upstream may have is busy and none freed up in time.
    UpstreamBusy,
    /// A `delivery: queue` route's event is in the spool (issue 16).
    Queued,
    /// The spool is at `spool.max_bytes`.
    SpoolFull,
    /// A spool commit failed: nothing is acknowledged until a restart.
    SpoolError,
    /// An ACME HTTP-01 validation request answered by a plain listener (200, or 404 for a
    /// token no order has open).
    AcmeChallenge,
    Internal,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Duplicate => "duplicate",
            Outcome::Handshake => "handshake",
            Outcome::BadRequest => "bad_request",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::IpDenied => "ip_denied",
            Outcome::RateLimited => "rate_limited",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::Timeout => "timeout",
            Outcome::SignatureInvalid => "signature_invalid",
            Outcome::ClientAbort => "client_abort",
            Outcome::UpstreamConnectError => "upstream_connect_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamBusy => "upstream_busy",
            Outcome::Queued => "queued",
            Outcome::SpoolFull => "spool_full",
            Outcome::SpoolError => "spool_error",
            Outcome::AcmeChallenge => "acme_challenge",
            Outcome::Internal => "internal_error",
        }
    }
}

/// One request's line, built once when the request ends (`pipeline::finish`) from the
/// request's context. Fields that do not apply to a request are left out. It borrows what the
/// request's runtime snapshot and connection already hold, so filling it allocates nothing.
#[derive(Debug)]
pub struct Entry<'a> {
    pub ts: SystemTime,
    /// Known to be text (see `request_id`).
    pub request_id: HeaderValue,
    pub listener: &'a str,
    pub route: Option<&'a str>,
    /// `None` (logged as empty) for a request hyper refused before its head was read.
    pub method: Option<Method>,
    /// Logged as `path`, without the query.
    pub uri: Option<Uri>,
    pub proto: &'static str,
    pub tls_version: Option<&'static str>,
    pub peer_ip: IpAddr,
    pub client_ip: IpAddr,
    pub status: u16,
    pub outcome: Outcome,
    pub reason: Option<&'static str>,
    pub provider: Option<&'a str>,
    pub event_id: Option<String>,
    pub secret_index: Option<usize>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<f64>,
    /// Only a value that is text; logged cut to 256 characters.
    pub user_agent: Option<HeaderValue>,
}

impl Entry<'_> {
    /// Appends the line as one JSON object, fields in a fixed order. Written out here rather
    /// than derived: serde_json escapes every key of every line, which was half of a line's
    /// cost. Every value still goes through serde_json, so escaping is serde_json's.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        write_rfc3339_millis(out, self.ts);
        out.push(b'"');
        text(
            out,
            "request_id",
            self.request_id.to_str().unwrap_or_default(),
        );
        text(out, "listener", self.listener);
        if let Some(route) = &self.route {
            text(out, "route", route);
        }
        text(
            out,
            "method",
            self.method.as_ref().map_or("", Method::as_str),
        );
        text(out, "path", self.uri.as_ref().map_or("", Uri::path));
        text(out, "proto", self.proto);
        if let Some(version) = self.tls_version {
            text(out, "tls_version", version);
        }
        ip(out, "peer_ip", self.peer_ip);
        ip(out, "client_ip", self.client_ip);
        value(out, "status", &self.status);
        text(out, "outcome", self.outcome.as_str());
        if let Some(reason) = self.reason {
            text(out, "reason", reason);
        }
        if let Some(provider) = self.provider {
            text(out, "provider", provider);
        }
        if let Some(id) = &self.event_id {
            text(out, "event_id", id);
        }
        if let Some(index) = &self.secret_index {
            value(out, "secret_index", index);
        }
        value(out, "bytes_in", &self.bytes_in);
        value(out, "bytes_out", &self.bytes_out);
        value(out, "duration_ms", &self.duration_ms);
        if let Some(upstream) = &self.upstream {
            text(out, "upstream", upstream);
        }
        if let Some(status) = &self.upstream_status {
            value(out, "upstream_status", status);
        }
        if let Some(ms) = &self.upstream_ms {
            value(out, "upstream_ms", ms);
        }
        if let Some(ua) = self.user_agent.as_ref().and_then(|v| v.to_str().ok()) {
            let end = ua.char_indices().nth(256).map_or(ua.len(), |(i, _)| i);
            text(out, "user_agent", &ua[..end]);
        }
        out.push(b'}');
    }
}

/// An address needs no escaping. IPv4 by hand: `Display` costs more than the rest of the line.
fn ip(out: &mut Vec<u8>, name: &str, ip: IpAddr) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    super::append_ip(out, ip);
    out.push(b'"');
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
    entry.write_json(out);
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

    #[test]
    fn a_line_is_one_json_object_with_escaped_values_and_no_absent_fields() {
        let peer = "2001:db8::1".parse().unwrap();
        let entry = Entry {
            ts: SystemTime::now(),
            request_id: HeaderValue::from_static("req-1"),
            listener: "public",
            route: Some("git\"hub"),
            method: Some(Method::POST),
            uri: Some(Uri::from_static("/hooks/a%22b?secret=x")),
            proto: "HTTP/1.1",
            tls_version: None,
            peer_ip: peer,
            client_ip: peer,
            status: 200,
            outcome: Outcome::Forwarded,
            reason: None,
            provider: None,
            event_id: None,
            secret_index: Some(1),
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 1.25,
            upstream: None,
            upstream_status: None,
            upstream_ms: None,
            user_agent: Some(HeaderValue::from_static("curl \\ \"quoted\"")),
        };
        let mut out = Vec::new();
        append_line(&mut out, &entry);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["request_id"], "req-1");
        assert_eq!(line["route"], "git\"hub");
        assert_eq!(line["method"], "POST");
        assert_eq!(line["path"], "/hooks/a%22b", "no query");
        assert_eq!(line["peer_ip"], "2001:db8::1");
        assert_eq!(line["user_agent"], "curl \\ \"quoted\"");
        assert_eq!(line["secret_index"], 1);
        assert_eq!(line["duration_ms"], 1.25);
        assert_eq!(line["status"], 200);
        for absent in [
            "reason",
            "provider",
            "event_id",
            "upstream",
            "upstream_ms",
            "tls_version",
        ] {
            assert!(line.get(absent).is_none(), "{absent}");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.0.200.5",
            "2001:db8::1",
        ] {
            let mut out = Vec::new();
            ip(&mut out, "a", text.parse().unwrap());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!(",\"a\":\"{text}\"")
            );
        }
    }
}
