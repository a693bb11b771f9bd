//! The access log: one JSON object per line, per request, accepted or refused (DESIGN.md
//! section 5). Requests hand a finished [`Entry`] to a channel; one writer task owns the file, so
//! disk I/O never runs on a request's task. It never logs a body, a secret or a signature header.

use std::path::PathBuf;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
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
    /// Opens the target and starts the writer task. The handle resolves once every sender is
    /// gone and every queued line is flushed.
    pub async fn start(target: &LogTarget) -> std::io::Result<(AccessLog, JoinHandle<()>)> {
        let sink: Box<dyn AsyncWrite + Send + Unpin> = match target {
            LogTarget::Off => {
                return Ok((AccessLog { tx: None }, tokio::spawn(async {})));
            }
            LogTarget::Stdout => Box::new(tokio::io::stdout()),
            LogTarget::File(path) => Box::new(open_append(path).await?),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok((
            AccessLog { tx: Some(tx) },
            tokio::spawn(write_lines(rx, sink)),
        ))
    }

    pub async fn write(&self, entry: &Entry) {
        let Some(tx) = &self.tx else { return };
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(_) => return, // Serialising plain strings and numbers cannot fail.
        };
        line.push(b'\n');
        // An error means the writer is gone, which only happens at shutdown.
        let _ = tx.send(line).await;
    }
}

async fn open_append(path: &PathBuf) -> std::io::Result<tokio::fs::File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Writes lines as they come, flushing whenever the queue runs dry, so a quiet gateway's log is
/// current and a busy one writes in large batches.
async fn write_lines(mut rx: mpsc::Receiver<Vec<u8>>, sink: Box<dyn AsyncWrite + Send + Unpin>) {
    let mut out = BufWriter::with_capacity(64 << 10, sink);
    while let Some(line) = rx.recv().await {
        let mut ok = out.write_all(&line).await.is_ok();
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(&line).await.is_ok();
        }
        ok &= out.flush().await.is_ok();
        if !ok {
            super::event("error", "access log write failed", serde_json::json!({}));
        }
    }
    let _ = out.flush().await;
}
