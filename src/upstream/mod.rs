//! The one HTTP client of the gateway: keep-alive HTTP/1.1 (plain or rustls TLS) to a configured
//! upstream, with one idle-connection list per worker thread ([`pool`]), an exchange written and
//! read inside the caller's task ([`http1`]), and a typed [`UpstreamError`] that keeps its cause
//! and names it for the log ([`UpstreamError::reason`]). Forwarding (stage 9), the IP feeds and
//! the delivery worker all send through it. It never retries and never turns an error into a
//! response: what a failure means for the client is the caller's decision (`pipeline/forward.rs`).
//!
//! # Use
//!
//! ```no_run
//! # async fn demo(config: &hookgate::config::UpstreamConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use hookgate::upstream::{RequestHead, Upstream};
//! let upstream = Upstream::standalone(config)?; // or Upstream::new(.., metrics, previous)
//! let mut head = RequestHead::new(&http::Method::POST, "/events", 2);
//! head.header(&http::header::CONTENT_TYPE, &http::HeaderValue::from_static("application/json"));
//! let answer = upstream.send(head, &[bytes::Bytes::from_static(b"{}")], &http::Method::POST).await;
//! match answer {
//!     Ok(answer) => println!("{} in {:?}", answer.response.status(), answer.elapsed),
//!     Err(e) => println!("{} ({e})", e.reason()), // e.g. "connect_refused", "tls", "timeout"
//! }
//! # Ok(()) }
//! ```
//!
//! [`Upstream::send`] may be called from any tokio task on any thread: a worker thread of the
//! request path uses its own idle list; every other thread shares one more list. The `Host`
//! header is the upstream's and is added by `send`; the request head must not carry one.

pub mod http1;
pub mod pool;

#[cfg(test)]
mod differential_tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Response};
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::ServerName;

use crate::config::{UpstreamConfig, UpstreamScheme};
use crate::observe::metrics::{Metrics, UpstreamLabels};
pub use http1::{ExchangeError, RequestHead};
pub use pool::bind_worker;
use pool::{ConnectionCap, Pool, Target};

/// Idle pooled connections are closed after this; below common backend keep-alive timeouts
/// (nginx 75 s, Node 5 s is the outlier) so we rarely reuse a socket the backend just closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Idle connections kept per upstream and worker thread.
const POOL_MAX_IDLE: usize = 256;
/// The longest a request waits for a connection when the upstream's `max_connections` are all
/// busy (at most half the upstream's timeout), before [`UpstreamError::Busy`].
const CONNECTION_WAIT: Duration = Duration::from_secs(1);

/// Why a request to an upstream got no answer. Each variant keeps what caused it (`source`)
/// and names it with [`UpstreamError::reason`], the access log's `reason`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream host refused the TCP connection (nothing listens on the port).
    #[error("connection refused")]
    ConnectRefused(#[source] std::io::Error),
    /// No TCP connection, or no TLS session, within the upstream's `connect_timeout`.
    #[error("connect timed out")]
    ConnectTimeout,
    /// Any other failure to open a TCP connection (name lookup, unreachable network).
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed: untrusted or mismatched certificate, no common protocol.
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    /// The request was sent, or begun, and the exchange failed (see [`ExchangeError`]).
    #[error("exchange failed")]
    Exchange(#[source] ExchangeError),
    /// No whole answer within the upstream's `timeout` (connecting included).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Every connection `max_connections` allows is busy, and none came free in time.
    #[error("all connections busy")]
    Busy,
}

impl UpstreamError {
    /// The cause in one word, for the access log's `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::ConnectRefused(_) => "connect_refused",
            UpstreamError::ConnectTimeout => "connect_timeout",
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Tls(_) => "tls",
            UpstreamError::Exchange(ExchangeError::Broken) => "reset",
            UpstreamError::Exchange(ExchangeError::Malformed) => "malformed_response",
            UpstreamError::Exchange(ExchangeError::TooLarge) => "response_too_large",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Busy => "max_connections",
        }
    }

    /// Whether no connection could be opened: nothing of the request reached the upstream.
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectRefused(_)
                | UpstreamError::ConnectTimeout
                | UpstreamError::Connect(_)
                | UpstreamError::Tls(_)
        )
    }
}

/// A response read whole, and how long the exchange took.
pub struct Answer {
    pub response: Response<Bytes>,
    pub elapsed: Duration,
}

/// One configured upstream: where it is, its limits and its pool of connections.
pub struct Upstream {
    pub name: Arc<str>,
    /// `Host` for every request: the upstream's own `host:port`.
    host: HeaderValue,
    base_path: String,
    timeout: Duration,
    max_response: usize,
    pool: Pool,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {message}")]
pub struct UpstreamBuildError {
    name: String,
    message: String,
}

impl Upstream {
    /// An upstream with an idle-connection list for each of `workers` threads. `previous` is
    /// the same upstream in the config being replaced: with an unchanged `max_connections`
    /// its cap carries over, so connections of both configs together stay under it.
    pub fn new(
        config: &UpstreamConfig,
        workers: usize,
        metrics: &Metrics,
        previous: Option<&Upstream>,
    ) -> Result<Upstream, UpstreamBuildError> {
        let labels = UpstreamLabels {
            upstream: config.name.as_str().into(),
        };
        let waits = metrics
            .upstream_connection_waits
            .get_or_create(&labels)
            .clone();
        let refused = metrics
            .upstream_connections_refused
            .get_or_create(&labels)
            .clone();
        Upstream::build(config, workers, waits, refused, previous)
    }

    /// An upstream for a caller off the request path (IP feeds, the delivery worker): one
    /// idle list shared by all threads, its cap counters not exported.
    pub fn standalone(config: &UpstreamConfig) -> Result<Upstream, UpstreamBuildError> {
        Upstream::build(config, 0, Counter::default(), Counter::default(), None)
    }

    fn build(
        config: &UpstreamConfig,
        workers: usize,
        waits: Counter,
        refused: Counter,
        previous: Option<&Upstream>,
    ) -> Result<Upstream, UpstreamBuildError> {
        let authority = &config.authority;
        // `[::1]` in an authority is the address `::1`.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let (default_port, tls) = match config.scheme {
            UpstreamScheme::Http => (80, None),
            UpstreamScheme::Https => {
                let name =
                    ServerName::try_from(host.clone()).map_err(|e| build_error(config, e))?;
                (443, Some((tls_connector(config)?, name)))
            }
        };
        let target = Target {
            port: authority.port_u16().unwrap_or(default_port),
            host,
            tls,
            connect_timeout: config.connect_timeout,
        };
        let permits = match previous.map(|p| p.pool.cap()) {
            Some((permits, max)) if max == config.max_connections => Arc::clone(permits),
            _ => Arc::new(tokio::sync::Semaphore::new(config.max_connections)),
        };
        let cap = ConnectionCap {
            permits,
            max: config.max_connections,
            wait: CONNECTION_WAIT.min(config.timeout / 2),
            waits,
            refused,
        };
        Ok(Upstream {
            name: config.name.as_str().into(),
            host: HeaderValue::from_str(authority.as_str()).map_err(|e| build_error(config, e))?,
            base_path: config.base_path.clone(),
            timeout: config.timeout,
            max_response: usize::try_from(config.max_response).unwrap_or(usize::MAX),
            pool: Pool::new(target, workers, POOL_MAX_IDLE, POOL_IDLE_TIMEOUT, cap),
        })
    }

    /// The path prefix every request target starts with (`http://svc/base` -> `/base`).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// Sends a request and reads the whole answer (at most `max_response` body bytes), within
    /// the upstream's `timeout`. `head` is the request line and headers without `Host` (added
    /// here); `body` goes out byte for byte. Nothing is retried.
    pub async fn send(
        &self,
        mut head: RequestHead,
        body: &[Bytes],
        method: &Method,
    ) -> Result<Answer, UpstreamError> {
        let length: usize = body.iter().map(Bytes::len).sum();
        let length = u64::try_from(length).unwrap_or(u64::MAX);
        head.header(&http::header::HOST, &self.host);
        self.send_head(head.finish(method, length), body, method)
            .await
    }

    /// [`Upstream::send`] for a head already finished, `Host` included (the request path
    /// writes `Host` first, as clients do).
    pub async fn send_head(
        &self,
        head: Vec<u8>,
        body: &[Bytes],
        method: &Method,
    ) -> Result<Answer, UpstreamError> {
        let started = Instant::now();
        let exchange = self.pool.send(head, body, method, self.max_response);
        let response = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))??;
        Ok(Answer {
            response,
            elapsed: started.elapsed(),
        })
    }

    /// `Host` as the upstream is sent it.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Closes idle connections past the idle timeout (see [`Pool::close_stale`]).
    pub fn close_stale_connections(&self) {
        self.pool.close_stale();
    }
}

/// TLS to an upstream: its private `ca:` when given, else the public web roots. HTTP/1.1 only.
fn tls_connector(
    config: &UpstreamConfig,
) -> Result<tokio_rustls::TlsConnector, UpstreamBuildError> {
    let mut roots = rustls::RootCertStore::empty();
    if config.ca.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for cert in &config.ca {
        roots
            .add(cert.clone())
            .map_err(|e| build_error(config, e))?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| build_error(config, e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

fn build_error(config: &UpstreamConfig, e: impl std::fmt::Display) -> UpstreamBuildError {
    UpstreamBuildError {
        name: config.name.clone(),
        message: e.to_string(),
    }
}
