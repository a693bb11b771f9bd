//! The delivery attempt lines (`kind: delivery`): one JSON object per line on stderr, like
//! `observe::event`, but collected and written in batches. One line per attempt written with
//! `eprintln!` cost a `write` per JSON fragment (stderr is unbuffered): measured as a third of
//! a queued event's CPU (bench/README.md, "Durable delivery"). A line is serialized straight
//! from [`AttemptLine`], not built as a `serde_json::Value` first (a map of owned keys and
//! values: measured at about 4% of a queued event's CPU).

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Lines are written once this much is collected, or every [`FLUSH_EVERY`].
const BATCH: usize = 64 << 10;
/// The most a line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// What one attempt's line says, after `ts`, `level`, `msg` and `kind`.
#[derive(serde::Serialize)]
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
    #[serde(serialize_with = "rfc3339_millis")]
    pub next_retry: Option<std::time::SystemTime>,
    pub duration_ms: f64,
}

/// The whole line.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339_millis")]
    ts: Option<std::time::SystemTime>,
    level: &'a str,
    msg: &'a str,
    kind: &'a str,
    #[serde(flatten)]
    attempt: &'a AttemptLine<'a>,
}

fn rfc3339_millis<S: serde::Serializer>(
    at: &Option<std::time::SystemTime>,
    out: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => out.collect_str(&humantime::format_rfc3339_millis(*at)),
        None => out.serialize_none(),
    }
}

#[derive(Default)]
pub struct AttemptLog {
    pending: Mutex<Vec<u8>>,
}

impl AttemptLog {
    /// Adds one attempt's line: `warn` for a dead event, `info` otherwise.
    pub fn attempt(&self, attempt: &AttemptLine) {
        let line = Line {
            ts: Some(std::time::SystemTime::now()),
            level: if attempt.result == "dead" {
                "warn"
            } else {
                "info"
            },
            msg: "delivery attempt",
            kind: "delivery",
            attempt,
        };
        let full = {
            let mut pending = self.lock();
            if serde_json::to_writer(&mut *pending, &line).is_err() {
                return;
            }
            pending.push(b'\n');
            (pending.len() >= BATCH).then(|| std::mem::take(&mut *pending))
        };
        if let Some(batch) = full {
            write_out(&batch);
        }
    }

    /// Writes what is collected.
    pub fn flush(&self) {
        let batch = std::mem::take(&mut *self.lock());
        if !batch.is_empty() {
            write_out(&batch);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn write_out(batch: &[u8]) {
    // A log that cannot be written is not a reason to stop delivering.
    let _ = std::io::stderr().lock().write_all(batch);
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
        log.attempt(&attempt);
        let pending = log.lock().clone();
        let lines: Vec<serde_json::Value> = pending
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        let first = &lines[0];
        assert_eq!(first["kind"], "delivery");
        assert_eq!(first["msg"], "delivery attempt");
        assert_eq!(first["level"], "info");
        assert_eq!(first["idempotency_key"], "k \"quoted\"");
        assert_eq!(first["status"], 503);
        assert_eq!(first["next_retry"], "1970-01-01T00:00:01.500Z");
        assert_eq!(first["duration_ms"], 1.25);
        assert!(humantime::parse_rfc3339(first["ts"].as_str().unwrap()).is_ok());
        assert_eq!(lines[1]["level"], "warn");
        assert_eq!(lines[1]["status"], serde_json::Value::Null);
        assert_eq!(lines[1]["next_retry"], serde_json::Value::Null);
        log.flush();
        assert!(log.lock().is_empty());
    }
}
