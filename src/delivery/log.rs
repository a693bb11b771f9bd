//! The delivery attempt lines (`kind: delivery`): one JSON object per line on stderr, like
//! `observe::event`, but collected and written in batches. One line per attempt written with
//! `eprintln!` cost a `write` per JSON fragment (stderr is unbuffered): measured as a third of
//! a queued event's CPU (bench/README.md, "Durable delivery").

use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Lines are written once this much is collected, or every [`FLUSH_EVERY`].
const BATCH: usize = 64 << 10;
/// The most a line waits before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

#[derive(Default)]
pub struct AttemptLog {
    pending: Mutex<Vec<u8>>,
}

impl AttemptLog {
    /// Adds one line: `ts`, `level`, `msg`, then `fields` (an object).
    pub fn line(&self, level: &str, msg: &str, fields: serde_json::Value) {
        let line = crate::observe::event_line(level, msg, fields);
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
        log.line(
            "info",
            "delivery attempt",
            serde_json::json!({"kind": "delivery"}),
        );
        log.line(
            "warn",
            "delivery attempt",
            serde_json::json!({"attempt": 2}),
        );
        let pending = log.lock().clone();
        let lines: Vec<serde_json::Value> = pending
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "delivery");
        assert_eq!(lines[1]["level"], "warn");
        log.flush();
        assert!(log.lock().is_empty());
    }
}
