//! Serves HTTP/1.1 and HTTP/2 on one accepted (and, for TLS listeners, decrypted) connection,
//! with every limit set explicitly: hyper's defaults are for a library, not a front door.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use super::deadlines::{self, Deadlines, ResponseBody, Tracker, Verdict, Watched};
use crate::config::Limits;
use crate::observe::metrics::{ConnectionClosedLabels, ListenerLabels};
use crate::pipeline::{self, reject};
use crate::state::{ConnInfo, Shared};

/// hyper's HTTP/1 header count limit when none is set (`DEFAULT_MAX_HEADERS` in hyper).
const HYPER_MAX_HEADERS: usize = 100;

/// The connection builder for a listener. Built once per listener and cloned per connection.
pub fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // The timer is required: without it hyper silently skips the header timeout.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The read buffer bounds the request head: a larger head gets 431.
        .max_buf_size(limits.max_header_size)
        .keep_alive(true)
        .half_close(false);
    // hyper's own limit is 100 headers, kept in an inline array; an explicit limit, even the
    // same 100, makes it fill a fresh array for every head it parses.
    if limits.max_headers != HYPER_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        // Responses are handed to hyper in pieces (`deadlines::CHUNK`) as window opens; this
        // bounds what one stream buffers beyond that.
        .max_send_buf_size(64 << 10)
        .keep_alive_interval(Some(limits.keep_alive_timeout / 2))
        .keep_alive_timeout(limits.keep_alive_timeout / 2);
    builder
}

/// Serves requests on `io` until the client closes, until a deadline of `deadlines` passes, or
/// until `shutdown` fires: then in-flight requests finish (HTTP/1 closes after them, HTTP/2 sends
/// GOAWAY) within `drain`.
pub async fn serve<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    drain: Duration,
    deadlines: Deadlines,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let tracker = Tracker::new(deadlines);
    let (shared_for_errors, conn_for_errors) = (Arc::clone(&shared), Arc::clone(&conn));
    let books = Arc::clone(&tracker);
    let service = service_fn(move |request| {
        let started = Instant::now();
        // Open from here until the response's last byte is handed over (or the request is
        // dropped): the idle deadline waits for it, the send deadline starts with the answer.
        let open = books.open_request();
        // Its own task: a client hanging up must not cancel a forward half-way, or the
        // request would be neither logged nor known to have reached the backend.
        // Spawned here, not in the future returned to hyper, so that future holds only the
        // task's handle: hyper moves it into place per request. Boxed: the request's future
        // is kilobytes, and tokio moves a task's future (and its output slot of the same size)
        // several times. `handle` is called inside the boxed block, so its future is built in
        // place there rather than on the stack and copied in.
        let in_flight = super::InFlight::enter(&shared.in_flight);
        let (task_conn, task_shared) = (Arc::clone(&conn), Arc::clone(&shared));
        let task = tokio::spawn(Box::pin(async move {
            let _in_flight = in_flight;
            pipeline::handle(request, task_conn, task_shared, started).await
        }));
        let (conn, shared) = (Arc::clone(&conn), Arc::clone(&shared));
        async move {
            let response = match task.await {
                Ok(response) => response,
                Err(_) => pipeline::internal_error(&shared, &conn, started),
            };
            let (parts, body) = response.into_parts();
            // A `Full` body is one buffer, ready at once.
            let data = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(Response::from_parts(parts, ResponseBody::new(data, open)))
        }
    });
    let connection = builder.serve_connection(
        TokioIo::new(Watched::new(io, Arc::clone(&tracker))),
        service,
    );
    tokio::pin!(connection);
    let wake = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(wake);
    // Once a close has begun: when to stop waiting for it.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        let mut due = match tracker.check(now) {
            Verdict::Abort(reason) => {
                count_closed(&shared_for_errors, &conn_for_errors, reason);
                return;
            }
            Verdict::Close(reason) => {
                if closing.is_none() {
                    count_closed(&shared_for_errors, &conn_for_errors, reason);
                    connection.as_mut().graceful_shutdown();
                    // A connection that never sent a request gets no time to finish one.
                    let grace = if reason == deadlines::IDLE_TIMEOUT {
                        drain
                    } else {
                        NO_REQUEST_GRACE
                    };
                    closing = Some(now + grace);
                }
                None
            }
            Verdict::Wait(due) => due,
        };
        if let Some(hard) = closing {
            if now >= hard {
                return;
            }
            due = Some(due.map_or(hard, |d| d.min(hard)));
        }
        if let Some(at) = due.filter(|at| *at != wake.deadline()) {
            wake.as_mut().reset(at);
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    let error = error.as_ref();
                    if let Some(refusal) = reject::RefusedHead::from_error(error) {
                        pipeline::log_refused_head(&shared_for_errors, &conn_for_errors, refusal);
                    } else if reject::is_protocol_error(error) {
                        count_protocol_error(&shared_for_errors, &conn_for_errors, error);
                    }
                }
                return;
            }
            _ = crate::server::stopping(&mut shutdown), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + drain);
            }
            _ = &mut wake, if due.is_some() => {}
            _ = tracker.changed() => {}
        }
    }
}

/// How long a connection closed before its first request may take to go.
const NO_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// One count per connection the gateway closed at a deadline or limit, and one event line for
/// those that are not routine (an idle keep-alive connection closing is).
fn count_closed(shared: &Shared, conn: &ConnInfo, reason: &'static str) {
    shared
        .metrics
        .connections_closed
        .get_or_create(&ConnectionClosedLabels {
            listener: conn.listener.to_string(),
            reason,
        })
        .inc();
    let (level, message) = match reason {
        deadlines::FIRST_BYTE_TIMEOUT => (
            "info",
            "connection closed: no request began within the header timeout",
        ),
        deadlines::SEND_TIMEOUT => (
            "warn",
            "connection closed: the client did not read its response within the send timeout",
        ),
        deadlines::UNSENT_LIMIT => (
            "warn",
            "connection closed: its unread responses passed limits.max_unsent",
        ),
        _ => return,
    };
    crate::observe::event(
        level,
        message,
        serde_json::json!({
            "listener": &*conn.listener,
            "peer_ip": conn.peer.ip().to_string(),
            "reason": reason,
        }),
    );
}

/// One count and one event line per connection closed for a protocol error: no request was
/// read, so there is no access-log line, but an operator sees the abuse and who sent it.
fn count_protocol_error(
    shared: &Shared,
    conn: &ConnInfo,
    error: &(dyn std::error::Error + 'static),
) {
    shared
        .metrics
        .protocol_errors
        .get_or_create(&ListenerLabels {
            listener: conn.listener.to_string(),
        })
        .inc();
    let chain: Vec<String> = std::iter::successors(Some(error), |e| e.source())
        .map(|e| e.to_string())
        .collect();
    crate::observe::event(
        "warn",
        "connection closed for a protocol error",
        serde_json::json!({
            "listener": &*conn.listener,
            "peer_ip": conn.peer.ip().to_string(),
            "error": chain.join(": "),
        }),
    );
}
