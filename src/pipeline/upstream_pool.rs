//! Keep-alive HTTP/1.1 connections to one upstream, with one idle list per worker thread, so a
//! request only ever uses a connection opened on its own thread. A request takes the most
//! recently used idle connection, or opens one (TCP, then TLS for https), makes its exchange on
//! it (`upstream_http1`) and gives it back once the whole response is read. A connection that
//! fails, or is abandoned mid-exchange (timeout, client gone), is closed and never reused.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::upstream_http1::{Connection, ExchangeError};

/// Why an exchange failed, as far as the pool can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be opened (TCP connect or TLS handshake failed or timed out).
    Connect,
    /// The request was written, or begun, and the exchange failed.
    Exchange(ExchangeError),
}

/// Where and how to open a connection.
pub struct Target {
    /// A host name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
    /// For https upstreams: the TLS client and the name the certificate must carry.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    pub connect_timeout: Duration,
}

pub struct Pool {
    target: Target,
    idle_timeout: Duration,
    max_idle: usize,
    /// One list per worker, and a last one for any other thread. Newest at the end.
    idle: Box<[Mutex<Vec<Idle>>]>,
}

struct Idle {
    connection: Connection,
    since: Instant,
}

impl Pool {
    /// A pool for `workers` worker threads; each keeps at most `max_idle` idle connections,
    /// none older than `idle_timeout`.
    pub fn new(target: Target, workers: usize, max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            target,
            idle_timeout,
            max_idle,
            idle: (0..=workers).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// Sends a request (a head from `upstream_http1::RequestHead`, then `body`) and reads the
    /// whole response, of at most `max_response` body bytes.
    pub async fn send(
        &self,
        head: Vec<u8>,
        body: &[Bytes],
        method: &Method,
        max_response: usize,
    ) -> Result<Response<Bytes>, SendError> {
        // An idle connection the upstream has closed in the meantime is dropped before a byte
        // is written; the request then goes out on the next one, or on a new one.
        let mut connection = loop {
            match self.take_idle() {
                Some(mut idle) => {
                    if idle.is_open() {
                        break idle;
                    }
                }
                // Boxed: opening a connection (TLS state included) is the rare path, and inline
                // it would make every request's future kilobytes larger, copied at each move.
                None => break Box::pin(self.connect()).await?,
            }
        };
        let answer = connection
            .exchange(head, body, method, max_response)
            .await
            .map_err(SendError::Exchange)?;
        if answer.reusable {
            self.release(connection);
        }
        Ok(answer.response)
    }

    /// Gives back a connection whose response has been read to the end.
    fn release(&self, connection: Connection) {
        let mut idle = self.local();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for longer than the idle timeout, on every worker. Run now and
    /// then, so connections of a quiet upstream do not stay open until the upstream closes them.
    pub fn close_stale(&self) {
        let now = Instant::now();
        for list in self.idle.iter() {
            lock(list).retain(|c| now.duration_since(c.since) < self.idle_timeout);
        }
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.local();
        let newest = idle.pop()?;
        if newest.since.elapsed() >= self.idle_timeout {
            // The newest is too old, so all of them are.
            idle.clear();
            return None;
        }
        Some(newest.connection)
    }

    fn local(&self) -> MutexGuard<'_, Vec<Idle>> {
        let last = self.idle.len() - 1;
        let index = crate::server::workers::current().map_or(last, |i| i.min(last));
        lock(&self.idle[index])
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let target = &self.target;
        let opened = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|_| SendError::Connect)?;
            let _ = tcp.set_nodelay(true);
            match &target.tls {
                None => Ok(Connection::new(Box::new(tcp))),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|tls| Connection::new(Box::new(tls)))
                    .map_err(|_| SendError::Connect),
            }
        };
        tokio::time::timeout(target.connect_timeout, opened)
            .await
            .map_err(|_| SendError::Connect)?
    }
}

/// A poisoned list only means a thread panicked while holding it; the connections are fine.
fn lock(list: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
    list.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
