//! Keep-alive HTTP/1.1 connections to one upstream, with one idle list per worker thread, so a
//! request only ever uses a connection opened on its own thread. A request takes the most
//! recently used idle connection, or opens one (TCP, then TLS for https), makes its exchange on
//! it (`upstream_http1`) and gives it back once the whole response is read. A connection that
//! fails, or is abandoned mid-exchange (timeout, client gone), is closed and never reused.
//!
//! The connections open to one upstream, idle or busy, on all workers together, are capped
//! (`max_connections`): each holds a permit of one semaphore. A request that needs a new
//! connection when none is left first closes an idle one of another worker, else waits briefly
//! for a permit, else gives up with [`UpstreamError::Busy`] (503). It never opens one more.
//!
//! Which list a thread uses is set once by the thread itself ([`bind_worker`]): the server's
//! workers each bind their index; every other thread shares the last list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Response};
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use super::http1::Connection;
use super::UpstreamError;

thread_local! {
    /// The idle list this thread uses, when it is a worker of the request path.
    static WORKER: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// Makes the calling thread use idle list `index` of every pool (the server's worker threads
/// call it once, at start). Threads that never call it share the last list.
pub fn bind_worker(index: usize) {
    WORKER.set(Some(index));
}

/// The cap on an upstream's open connections and what it counts.
pub struct ConnectionCap {
    /// One permit per connection that may be open; shared with the next config's pool when a
    /// reload keeps the same cap, so old and new connections together stay under it.
    pub permits: Arc<Semaphore>,
    /// The most permits there are.
    pub max: usize,
    /// How long a request waits for a permit before [`UpstreamError::Busy`].
    pub wait: Duration,
    /// `hookgate_upstream_connection_waits_total{upstream}`
    pub waits: Counter,
    /// `hookgate_upstream_connections_refused_total{upstream}`
    pub refused: Counter,
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
    cap: ConnectionCap,
    /// Requests waiting for a permit now: while there are any, a finished connection is
    /// closed rather than kept idle, so its permit goes to them.
    waiting: AtomicUsize,
}

struct Idle {
    connection: Connection,
    since: Instant,
    permit: OwnedSemaphorePermit,
}

impl Pool {
    /// A pool for `workers` worker threads; each keeps at most `max_idle` idle connections,
    /// none older than `idle_timeout`.
    pub fn new(
        target: Target,
        workers: usize,
        max_idle: usize,
        idle_timeout: Duration,
        cap: ConnectionCap,
    ) -> Pool {
        Pool {
            target,
            idle_timeout,
            max_idle,
            idle: (0..=workers).map(|_| Mutex::new(Vec::new())).collect(),
            cap,
            waiting: AtomicUsize::new(0),
        }
    }

    /// The semaphore of the connection cap, for the next config's pool.
    pub fn cap(&self) -> (&Arc<Semaphore>, usize) {
        (&self.cap.permits, self.cap.max)
    }

    /// Sends a request (a head from `http1::RequestHead`, then `body`) and reads the
    /// whole response, of at most `max_response` body bytes.
    pub async fn send(
        &self,
        head: Vec<u8>,
        body: &[Bytes],
        method: &Method,
        max_response: usize,
    ) -> Result<Response<Bytes>, UpstreamError> {
        // An idle connection the upstream has closed in the meantime is dropped before a byte
        // is written; the request then goes out on the next one, or on a new one.
        let (mut connection, permit) = loop {
            match self.take_idle() {
                Some((mut idle, permit)) => {
                    if idle.is_open() {
                        break (idle, permit);
                    }
                }
                // Boxed: opening a connection (TLS state included) is the rare path, and inline
                // it would make every request's future kilobytes larger, copied at each move.
                None => {
                    let permit = Box::pin(self.permit()).await?;
                    break (Box::pin(self.connect()).await?, permit);
                }
            }
        };
        let answer = connection
            .exchange(head, body, method, max_response)
            .await
            .map_err(UpstreamError::Exchange)?;
        if answer.reusable {
            self.release(connection, permit);
        }
        Ok(answer.response)
    }

    /// A permit to open one more connection: at once when the cap allows, else by closing an
    /// idle connection of another worker, else after waiting up to the cap's wait.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, UpstreamError> {
        if let Ok(permit) = Arc::clone(&self.cap.permits).try_acquire_owned() {
            return Ok(permit);
        }
        if self.close_one_idle() {
            if let Ok(permit) = Arc::clone(&self.cap.permits).try_acquire_owned() {
                return Ok(permit);
            }
        }
        self.cap.waits.inc();
        let waited = {
            let _waiting = Waiting::enter(&self.waiting);
            tokio::time::timeout(self.cap.wait, Arc::clone(&self.cap.permits).acquire_owned()).await
        };
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.cap.refused.inc();
                Err(UpstreamError::Busy)
            }
        }
    }

    /// Closes the oldest idle connection of any worker, freeing its permit; false if none.
    fn close_one_idle(&self) -> bool {
        self.idle.iter().any(|list| {
            let mut list = lock(list);
            if list.is_empty() {
                return false;
            }
            drop(list.remove(0));
            true
        })
    }

    /// Gives back a connection whose response has been read to the end (or closes it, when
    /// requests wait for its permit).
    fn release(&self, connection: Connection, permit: OwnedSemaphorePermit) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut idle = self.local();
        if idle.len() < self.max_idle {
            idle.push(Idle {
                connection,
                since: Instant::now(),
                permit,
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

    fn take_idle(&self) -> Option<(Connection, OwnedSemaphorePermit)> {
        let mut idle = self.local();
        let newest = idle.pop()?;
        if newest.since.elapsed() >= self.idle_timeout {
            // The newest is too old, so all of them are.
            idle.clear();
            return None;
        }
        Some((newest.connection, newest.permit))
    }

    fn local(&self) -> MutexGuard<'_, Vec<Idle>> {
        let last = self.idle.len() - 1;
        let index = WORKER.get().map_or(last, |i| i.min(last));
        lock(&self.idle[index])
    }

    /// Opens a connection (TCP, then TLS for https) within the connect timeout, keeping what
    /// went wrong: a refused port, another connect failure, or the TLS handshake.
    async fn connect(&self) -> Result<Connection, UpstreamError> {
        let target = &self.target;
        let opened = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port))
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => UpstreamError::ConnectRefused(e),
                    _ => UpstreamError::Connect(e),
                })?;
            let _ = tcp.set_nodelay(true);
            match &target.tls {
                None => Ok(Connection::new(Box::new(tcp))),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|tls| Connection::new(Box::new(tls)))
                    .map_err(UpstreamError::Tls),
            }
        };
        tokio::time::timeout(target.connect_timeout, opened)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout)?
    }
}

/// Counts a request in [`Pool::waiting`] for as long as it waits, cancelled or not.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A poisoned list only means a thread panicked while holding it; the connections are fine.
fn lock(list: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
    list.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
