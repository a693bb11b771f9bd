//! The access log: one JSON object per line, per request, accepted or refused (DESIGN.md
//! section 5). Requests hand a finished [`Entry`] to a channel; one writer thread owns the file,
//! so disk I/O never runs on a request's task. It never logs a body, a secret or a signature header.

use std::path::PathBuf;

use serde::Serialize;
use std::io::{BufWriter, Write};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::LogTarget;

/// Lines queued before requests wait for the writer. Large enough to ride out a slow disk for a
/// moment; when it is full, requests wait rather than lose a line.
const QUEUE: usize = 16_384;

/// One request's line. Fields that do not apply to a request are left out.
#[derive(Debug, Default, Serialize)]
pub struct Entry {
    pub ts: String,
    pub request_id: String,
    pub listener: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub method: String,
    pub path: String,
    pub proto: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<&'static str>,
    pub peer_ip: String,
    pub client_ip: String,
    pub status: u16,
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_index: Option<usize>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// The sending side, cloned into every request. Dropping every clone lets the writer finish.
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<mpsc::Sender<Vec<u8>>>,
}

impl AccessLog {
    /// Opens the target and starts the writer thread. The handle resolves once every sender is
    /// gone and every queued line is flushed.
    pub async fn start(target: &LogTarget) -> std::io::Result<(AccessLog, JoinHandle<()>)> {
        let sink: Box<dyn Write + Send> = match target {
            LogTarget::Off => {
                return Ok((AccessLog { tx: None }, tokio::spawn(async {})));
            }
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(open_append(path)?),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        // A plain thread with a plain file: tokio's file type sends every write through its
        // blocking pool, which measured as a fifth of the gateway's CPU per request (bench/).
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("hookgate-access-log".into())
            .spawn(move || {
                write_lines(rx, sink);
                let _ = done_tx.send(());
            })?;
        let done = tokio::spawn(async move {
            let _ = done_rx.await;
        });
        Ok((AccessLog { tx: Some(tx) }, done))
    }

    pub async fn write(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        let mut line = Vec::with_capacity(512);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return; // Serialising plain strings and numbers cannot fail.
        }
        line.push(b'\n');
        // An error means the writer is gone, which only happens at shutdown.
        let _ = tx.send(line).await;
    }
}

fn open_append(path: &PathBuf) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Writes lines in batches: wait for a line, take whatever else is queued, flush, then rest a
/// few milliseconds before waiting again. A line is on disk within ~5 ms, and a busy gateway
/// wakes this thread ~200 times a second instead of once per request (every wake-up is a futex
/// call on the request's thread).
fn write_lines(mut rx: mpsc::Receiver<Vec<u8>>, sink: Box<dyn Write + Send>) {
    const REST: std::time::Duration = std::time::Duration::from_millis(5);
    let mut out = BufWriter::with_capacity(64 << 10, sink);
    while let Some(line) = rx.blocking_recv() {
        let mut ok = out.write_all(&line).is_ok();
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(&line).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            super::event("error", "access log write failed", serde_json::json!({}));
        }
        std::thread::sleep(REST);
    }
    let _ = out.flush();
}
