//! Keep-alive HTTP/1.1 connections to one upstream, with one idle list per worker thread, so a
//! request only ever uses a connection whose task runs on its own thread. A request takes the
//! most recently used idle connection, or opens one (TCP, then TLS for https), and gives it back
//! once it has read the whole response. A connection that fails, or is abandoned mid-exchange
//! (timeout, client gone), is closed and never reused.
//!
//! Built on hyper's connection API instead of hyper-util's pooled client: the same exchange cost
//! about 2.5 µs less CPU per request on the bench machine (bench/README, floor variants).

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::body::Frames;

/// One connection's sending half; its reading half runs as a task on the same worker.
pub type Connection = SendRequest<Frames>;

/// Why an exchange failed, as far as the pool can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No connection could be opened (TCP connect or TLS handshake failed or timed out).
    Connect,
    /// The connection broke after the request was handed to it.
    Exchange,
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

    /// Sends `request` (origin-form URI, `Host` set) and returns the response with its body
    /// still to read, and the connection to hand back with [`Pool::release`] once it is read.
    pub async fn send(
        &self,
        mut request: Request<Frames>,
    ) -> Result<(Response<Incoming>, Connection), SendError> {
        // An idle connection the upstream has closed in the meantime fails before the request
        // is written; the request then goes out on the next one, or on a new one.
        while let Some(mut connection) = self.take_idle() {
            if connection.ready().await.is_err() {
                continue;
            }
            match connection.try_send_request(request).await {
                Ok(response) => return Ok((response, connection)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Exchange),
                },
            }
        }
        // Boxed: opening a connection (TLS state included) is the rare path, and inline it would
        // make every request's future kilobytes larger, copied at each move.
        let mut connection = Box::pin(self.connect()).await?;
        match connection.send_request(request).await {
            Ok(response) => Ok((response, connection)),
            Err(_) => Err(SendError::Exchange),
        }
    }

    /// Gives back a connection whose response has been read to the end.
    pub fn release(&self, connection: Connection) {
        if connection.is_closed() {
            return;
        }
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
                None => Ok(Stream::Plain(tcp)),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|tls| Stream::Tls(Box::new(tls)))
                    .map_err(|_| SendError::Connect),
            }
        };
        let stream = tokio::time::timeout(target.connect_timeout, opened)
            .await
            .map_err(|_| SendError::Connect)??;
        match stream {
            Stream::Plain(tcp) => handshake(tcp).await,
            Stream::Tls(tls) => handshake(*tls).await,
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Starts HTTP/1.1 on an open stream; the connection's task runs on the calling worker.
async fn handshake<S>(stream: S) -> Result<Connection, SendError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (connection, driver) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| SendError::Connect)?;
    tokio::spawn(async move {
        // Ends when the upstream closes or the pool drops the connection; either way there is
        // no request left on it to report to.
        let _ = driver.await;
    });
    Ok(connection)
}

/// A poisoned list only means a thread panicked while holding it; the connections are fine.
fn lock(list: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
    list.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
