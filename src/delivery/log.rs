//! The delivery attempt lines (`kind: delivery`): one JSON object per line on stderr, like
//! `observe::event`, but collected and written in batches. One line per attempt written with
//! `eprintln!` cost a `write` per JSON fragment (stderr is unbuffered): measured as a third of
//! a queued event's CPU (bench/README.md, "Durable delivery"). A line is written by hand from
//! [`AttemptLine`], as the access log's are ([`crate::observe::json_line`]); through serde it
//! was about 1.2 µs of a queued event's 45 (bench/README.md, "Pacing the group commit").

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::observe::json_line::{text, value, write_rfc3339_millis};

/// Lines are written once this much is collected, or every [`FLUSH_EVERY`].
const BATCH: usize = 64 << 10;
/// The most a line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What one attempt's line says, after `ts`, `level`, `msg` and `kind`.
pub struct AttemptLine<'a> {
    pub event_id: &'a str,
    pub idempotency_key: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    pub attempt: u32,
    pub trigger: &'static str,
    /// The upstream's status, if it answered.
    pub status: Option<u16>,
    /// `delivered`, `retry` or `dead`.
    pub result: &'static str,
    pub reason: Option<&'a str>,
    /// When the next attempt is due (RFC 3339), if one is.
    pub next_retry: Option<SystemTime>,
    pub duration_ms: f64,
}

impl AttemptLine<'_> {
    /// Appends the line, `ts` first, fields in a fixed order; an absent value is `null`.
    fn write_json(&self, ts: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        write_rfc3339_millis(out, ts);
        out.push(b'"');
        let level = if self.result == "dead" {
            "warn"
        } else {
            "info"
        };
        text(out, "level", level);
        text(out, "msg", "delivery attempt");
        text(out, "kind", "delivery");
        text(out, "event_id", self.event_id);
        text(out, "idempotency_key", self.idempotency_key);
        text(out, "route", self.route);
        text(out, "upstream", self.upstream);
        value(out, "attempt", &self.attempt);
        text(out, "trigger", self.trigger);
        value(out, "status", &self.status);
        text(out, "result", self.result);
        value(out, "reason", &self.reason);
        // Not through the per-second cache: a retry is due in another second than now. A
        // time humantime refuses (past year 9999) is written as null.
        let next_retry = self.next_retry.and_then(|at| {
            use std::fmt::Write as _;
            let mut formatted = String::new();
            write!(formatted, "{}", humantime::format_rfc3339_millis(at)).ok()?;
            Some(formatted)
        });
        value(out, "next_retry", &next_retry);
        value(out, "duration_ms", &self.duration_ms);
        out.push(b'}');
    }
}

/// Lines collected for the next write, and the buffer the last write used (kept, so a batch
/// does not grow a fresh allocation line by line: that was page faults, bench/README.md).
#[derive(Default)]
struct Buffers {
    pending: Vec<u8>,
    spare: Vec<u8>,
}

#[derive(Default)]
pub struct AttemptLog {
    buffers: Mutex<Buffers>,
}

impl AttemptLog {
    /// Adds one attempt's line: `warn` for a dead event, `info` otherwise.
    pub fn attempt(&self, attempt: &AttemptLine) {
        let full = {
            let mut buffers = self.lock();
            if buffers.pending.capacity() == 0 {
                buffers.pending.reserve(BATCH + 1024);
            }
            attempt.write_json(SystemTime::now(), &mut buffers.pending);
            buffers.pending.push(b'\n');
            (buffers.pending.len() >= BATCH).then(|| Self::take(&mut buffers))
        };
        if let Some(batch) = full {
            self.write_out(batch);
        }
    }

    /// Writes what is collected.
    pub fn flush(&self) {
        let batch = Self::take(&mut self.lock());
        if !batch.is_empty() {
            self.write_out(batch);
        }
    }

    /// The collected lines; the spare buffer takes their place.
    fn take(buffers: &mut Buffers) -> Vec<u8> {
        let spare = std::mem::take(&mut buffers.spare);
        std::mem::replace(&mut buffers.pending, spare)
    }

    fn write_out(&self, mut batch: Vec<u8>) {
        // A log that cannot be written is not a reason to stop delivering.
        let _ = std::io::stderr().lock().write_all(&batch);
        batch.clear();
        let mut buffers = self.lock();
        if buffers.spare.capacity() < batch.capacity() {
            buffers.spare = batch;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffers> {
        self.buffers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_json_objects_until_flushed() {
        let log = AttemptLog::default();
        let mut attempt = AttemptLine {
            event_id: "e1",
            idempotency_key: "k \"quoted\"",
            route: "r",
            upstream: "u",
            attempt: 1,
            trigger: "initial",
            status: Some(503),
            result: "retry",
            reason: Some("status_503"),
            next_retry: Some(std::time::UNIX_EPOCH + Duration::from_millis(1_500)),
            duration_ms: 1.25,
        };
        log.attempt(&attempt);
        (attempt.result, attempt.status, attempt.next_retry) = ("dead", None, None);
        attempt.reason = Some("a \"quoted\"\nreason");
        log.attempt(&attempt);
        // A clock gone wrong gives no retry time, not a panic.
        attempt.next_retry = Some(std::time::UNIX_EPOCH + Duration::from_secs(300_000_000_000));
        log.attempt(&attempt);
        let pending = log.lock().pending.clone();
        let lines: Vec<serde_json::Value> = pending
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let first = &lines[0];
        assert_eq!(first["kind"], "delivery");
        assert_eq!(first["msg"], "delivery attempt");
        assert_eq!(first["level"], "info");
        assert_eq!(first["idempotency_key"], "k \"quoted\"");
        assert_eq!(first["status"], 503);
        assert_eq!(first["next_retry"], "1970-01-01T00:00:01.500Z");
        assert_eq!(first["duration_ms"], 1.25);
        assert!(humantime::parse_rfc3339(first["ts"].as_str().unwrap()).is_ok());
        let mut keys: Vec<&str> = first.as_object().unwrap().keys().map(|k| &**k).collect();
        keys.sort_unstable();
        let mut expected = vec![
            "ts",
            "level",
            "msg",
            "kind",
            "event_id",
            "idempotency_key",
            "route",
            "upstream",
            "attempt",
            "trigger",
            "status",
            "result",
            "reason",
            "next_retry",
            "duration_ms",
        ];
        expected.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(first["attempt"], 1);
        assert_eq!(first["reason"], "status_503");
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(lines[1]["status"], serde_json::Value::Null);
        assert_eq!(lines[1]["next_retry"], serde_json::Value::Null);
        assert_eq!(lines[1]["reason"], "a \"quoted\"\nreason");
        assert_eq!(lines[2]["next_retry"], serde_json::Value::Null);
        log.flush();
        assert!(log.lock().pending.is_empty());
    }
}
