//! The request path, top to bottom in [`handle`]: each stage of DESIGN.md section 1 is one call
//! that either passes or returns a [`Reject`]. Whatever happens, the request ends with exactly one
//! access-log line and one metric increment, written in [`finish`]. Stages take only what they
//! need; none of them writes to the log or metrics itself.

pub mod allowlist;
pub mod body;
pub mod client_ip;
pub mod forward;
pub mod rate_limit;
pub mod reject;
pub mod replay;
pub mod route;
pub mod upstream_http1;
pub mod upstream_pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, Response, Version};
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::body::Incoming;

use crate::observe::access_log::{AccessLog, Entry};
use crate::observe::metrics::{AnswerSeries, Metrics, RequestLabels, SignatureLabels};
use crate::observe::request_id;
use crate::runtime::{Route, Runtime};
use crate::verify::{Failure, HandshakeReply, SignedRequest, Verified};
use client_ip::normalize;
use reject::{Outcome, Reject};
use replay::{Claim, ClaimGuard, ReplayStore};

/// What every request shares: the current runtime snapshot and the observers.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    /// Delivered event ids; outlives reloads.
    pub replay: Arc<dyn ReplayStore>,
    /// Set when shutdown begins: `/readyz` turns 503 so balancers stop sending.
    pub draining: std::sync::atomic::AtomicBool,
    /// Requests between [`handle`]'s start and its end, whether or not their client is still
    /// there: shutdown waits for them (within the drain timeout) before it stops the workers.
    pub in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Durable delivery (issue 16), when the config has a `spool:`.
    pub delivery: Option<Arc<crate::delivery::Delivery>>,
}

/// Counts one request in [`Shared::in_flight`] for as long as it lives, panics included.
pub struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    pub fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Facts about the connection a request came in on.
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    pub tls_version: Option<&'static str>,
    /// Requests that reached [`handle`] on this connection.
    pub requests: std::sync::atomic::AtomicU64,
    /// The metric series of the first answer on this connection (see [`AnswerSeries`]).
    pub answers: std::sync::OnceLock<AnswerSeries>,
}

/// Serves one request, which arrived at `started`. Runs as its own task (see `server::http`), so
/// a client that disconnects mid-request cannot cancel it between forwarding and logging.
pub async fn handle(
    request: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    started: Instant,
) -> Response<Full<Bytes>> {
    conn.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let runtime = shared.runtime.load_full();
    let mut entry = begin_entry(&request, &conn);
    let response = match serve(request, &conn, &runtime, &shared, &mut entry).await {
        Ok(response) => response,
        Err(reject) => {
            entry.outcome = reject.outcome().as_str();
            entry.reason = reject.reason();
            reject.into_response()
        }
    };
    finish(&shared, &conn, entry, response, started)
}

/// The stages. Cheap checks first: nothing reads the body before the route is known.
async fn serve<'r>(
    request: Request<Incoming>,
    conn: &ConnInfo,
    runtime: &'r Runtime,
    shared: &Shared,
    entry: &mut Entry<'r>,
) -> Result<Response<Full<Bytes>>, Reject> {
    let (route, client_ip) = match admit(&request, conn, runtime, shared, entry) {
        Ok(admitted) => admitted,
        Err(reject) => {
            // A refusal before the body: the small body a client is already sending is read
            // and dropped first, so the answer is not cut short by a reset (issue 14, item 8).
            if reject.allows_discarding_body() {
                let (parts, body) = request.into_parts();
                body::discard(body, &parts.headers).await;
            }
            return Err(reject);
        }
    };

    // 6. body
    let (parts, body) = request.into_parts();
    let body = body::read(body, &parts.headers, route.max_body, route.body_timeout).await?;
    entry.bytes_in = body.len();

    // 7. signature, over the exact bytes received
    let mut claim = None;
    if let Some(verifier) = &route.verifier {
        let public_url = verifier.public_url().map(|url| match parts.uri.query() {
            Some(query) => format!("{url}?{query}"),
            None => url.to_string(),
        });
        let signed = SignedRequest {
            method: parts.method.as_str(),
            public_url: public_url.as_deref(),
            query: parts.uri.query(),
            headers: &parts.headers,
            body: crate::verify::Body::frames(body.as_slice()),
        };
        entry.provider = Some(verifier.provider());
        // Unsigned handshakes (Dropbox and X challenges, WooCommerce's activation ping,
        // Intercom's HEAD) are answered here, never forwarded.
        if let Some(reply) = verifier.unsigned_handshake(&signed) {
            entry.outcome = Outcome::Handshake.as_str();
            return Ok(handshake_response(reply));
        }
        // The request's arrival, as logged, is the "now" its timestamp is judged against.
        let checked = verifier.verify(&signed, entry.ts);
        count_signature_check(&shared.metrics, route, verifier, &checked);
        let verified = checked.map_err(|failure| Reject::SignatureInvalid {
            reason: failure.reason.as_str(),
            status: verifier.on_failure_status(),
        })?;
        entry.secret_index = Some(verified.secret_index);
        if let Some(reply) = verifier.signed_handshake(&signed, &verified) {
            entry.outcome = Outcome::Handshake.as_str();
            return Ok(handshake_response(reply));
        }

        // 8. duplicates: a delivered id is answered, not forwarded again
        entry.event_id = verifier
            .delivery_id(&signed)
            .map(|id| id.chars().take(256).collect());
        if let (Some(id), Some(_)) = (&entry.event_id, route.replay_window) {
            let key = format!("{}\0{id}", route.name);
            match shared.replay.claim(&key, Instant::now()) {
                Claim::Fresh => claim = Some(ClaimGuard::new(Arc::clone(&shared.replay), key)),
                Claim::Delivered => {
                    entry.outcome = Outcome::Duplicate.as_str();
                    return Ok(text_response(
                        http::StatusCode::OK,
                        "duplicate: already delivered\n",
                    ));
                }
                Claim::InFlight => return Err(Reject::DuplicateInFlight),
            }
        }
    }

    // 9. queue (issue 16): a `delivery: queue` route answers once the event is durable in the
    // spool; the delivery worker forwards it later (src/delivery/).
    if let Some(delivery) = &shared.delivery {
        if let Some(queue) = delivery.queue_route(&route.name) {
            let tls = conn.tls_version.is_some();
            return Ok(crate::delivery::intake::accept(
                delivery, &queue, route, &parts, body, client_ip, tls, claim, entry,
            )
            .await);
        }
    }

    // 9. forward
    entry.upstream = Some(Arc::clone(&route.upstream.name));
    let forwarding = forward::Forwarding {
        route: route.headers.route.as_ref(),
        upstream_path: route.upstream_path.as_deref(),
        client_ip,
        tls: conn.tls_version.is_some(),
        request_id: &entry.request_id,
        verified_by: route.headers.verified_by.as_ref(),
    };
    let answer = forward::send(&route.upstream, parts, body, &forwarding).await?;
    if let (Some(claim), Some(window)) = (claim, route.replay_window) {
        if answer.response.status().is_success() {
            claim.delivered(window);
        }
    }
    entry.upstream_status = Some(answer.response.status().as_u16());
    entry.upstream_ms = Some(answer.upstream_ms);
    route
        .series
        .upstream_duration(&shared.metrics, &route.upstream.name)
        .observe(answer.upstream_ms / 1000.0);
    entry.outcome = Outcome::Forwarded.as_str();
    Ok(answer.response)
}

/// Stages 2-5, which read nothing of the body: the route, the client address, the allowlist
/// and the rate limits; and, for `Expect: 100-continue`, a signature header that is certainly
/// missing, so the body is never invited only to be refused.
fn admit<'r>(
    request: &Request<Incoming>,
    conn: &ConnInfo,
    runtime: &'r Runtime,
    shared: &Shared,
    entry: &mut Entry<'r>,
) -> Result<(&'r Route, std::net::IpAddr), Reject> {
    // 2. route, for a request whose framing, host and path mean the same to us and to the
    // backend, and whose HTTP/2 head is held to the limits an HTTP/1.1 head is
    route::check_framing(request.version(), request.headers())?;
    route::check_host(request.uri(), request.headers())?;
    route::check_header_count(request.version(), request.headers(), runtime.max_headers)?;
    route::check_path(request.uri().path())?;
    let route = runtime
        .routes
        .find_path(request.uri().path())
        .ok_or(Reject::NoRoute)?;
    entry.route = Some(Arc::clone(&route.name));
    route::check_method(route, request.method())?;

    // 3. client ip: the peer, or what trusted proxies say it is
    let trust = &runtime.client_ip;
    let client_ip = client_ip::resolve_client_ip_with(
        conn.peer.ip(),
        request.headers(),
        &trust.trusted_proxies,
        trust.header,
    );
    entry.client_ip = client_ip;

    // 4. allowlist
    if let Some(allowlist) = &route.allowlist {
        allowlist.check(client_ip).map_err(|_| Reject::IpDenied)?;
    }

    // 5. rate limits, the gateway's then the route's, before a byte of the body is read
    if let Some(limiter) = &runtime.global_limit {
        rate_limit::check(limiter, client_ip, request.headers(), "global")?;
    }
    if let Some(limiter) = &route.limiter {
        rate_limit::check(limiter, client_ip, request.headers(), "route")?;
    }

    // 7, early: a client waiting for 100 Continue is refused before it sends a body that
    // could not pass anyway (reading the body would send the 100).
    if let Some(verifier) = &route.verifier {
        if body::expects_continue(request.headers())
            && verifier.required_header_missing(request.headers())
        {
            entry.provider = Some(verifier.provider());
            let missing = Err(Failure::from(crate::verify::Reason::Missing));
            count_signature_check(&shared.metrics, route, verifier, &missing);
            return Err(Reject::SignatureInvalid {
                reason: crate::verify::Reason::Missing.as_str(),
                status: verifier.on_failure_status(),
            });
        }
    }
    Ok((route, client_ip))
}

fn count_signature_check(
    metrics: &Metrics,
    route: &Route,
    verifier: &crate::verify::Verifier,
    checked: &Result<Verified, Failure>,
) {
    let (result, secret_index) = match checked {
        Ok(v) => ("valid", Some(v.secret_index)),
        Err(f) => (f.reason.as_str(), None),
    };
    route
        .series
        .count_signature_check(metrics, secret_index, || SignatureLabels {
            route: Arc::clone(&route.name),
            provider: verifier.provider_label(),
            result,
            secret_index,
        });
}

fn handshake_response(reply: HandshakeReply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::OK);
    let headers = response.headers_mut();
    if let Some(content_type) = reply.content_type {
        headers.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
    }
    // A challenge is echoed: no browser may read it as anything but text (Dropbox asks this).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    response
}

fn text_response(status: http::StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn begin_entry(request: &Request<Incoming>, conn: &ConnInfo) -> Entry<'static> {
    let mut entry = Entry::new(
        request_id::from_headers(request.headers()),
        Arc::clone(&conn.listener),
        normalize(conn.peer.ip()),
    );
    entry.method = Some(request.method().clone());
    entry.uri = Some(request.uri().clone());
    entry.proto = match request.version() {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    entry.tls_version = conn.tls_version;
    entry.user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .filter(|v| v.to_str().is_ok())
        .cloned();
    entry
}

/// Stage 10: one log line and one count for every request, then the response goes out with the
/// request id so a sender's support ticket can be matched to the log.
fn finish(
    shared: &Shared,
    conn: &ConnInfo,
    mut entry: Entry<'_>,
    mut response: Response<Full<Bytes>>,
    started: Instant,
) -> Response<Full<Bytes>> {
    let elapsed = started.elapsed();
    entry.status = response.status().as_u16();
    entry.duration_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    entry.bytes_out = response.body().size_hint().exact().unwrap_or(0);
    let labels = RequestLabels {
        listener: Arc::clone(&entry.listener),
        route: entry.route.clone().unwrap_or_else(|| Arc::from("")),
        outcome: entry.outcome,
        code: entry.status,
    };
    shared
        .metrics
        .count_request(&conn.answers, labels, elapsed.as_secs_f64());
    response
        .headers_mut()
        .insert(request_id::HEADER, entry.request_id.clone());
    shared.access_log.write(&entry);
    response
}

/// A request hyper refused before it reached [`handle`] (malformed request line or headers,
/// a head over `max_header_size`, a head not finished within `header_timeout`): hyper has
/// answered 400 or 431, or closed the connection, and this writes the one log line and metric
/// such a request is owed. Clients that simply hang up are not requests and are not logged.
#[derive(Debug, Clone, Copy)]
pub struct RefusedHead {
    status: http::StatusCode,
    reason: &'static str,
}

impl RefusedHead {
    /// The refusal a connection error stands for, if it was one (and not a client leaving).
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Option<RefusedHead> {
        let error = error.downcast_ref::<hyper::Error>()?;
        let (status, reason) = if error.is_parse_too_large() {
            (
                http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
            )
        } else if error.is_parse() {
            (http::StatusCode::BAD_REQUEST, "malformed")
        } else if error.is_timeout() {
            (http::StatusCode::REQUEST_TIMEOUT, "header_timeout")
        } else {
            return None;
        };
        Some(RefusedHead { status, reason })
    }
}

pub fn log_refused_head(shared: &Shared, conn: &ConnInfo, refused: RefusedHead) {
    let RefusedHead { status, reason } = refused;
    // A keep-alive connection that has served requests and then idles past the header timeout
    // is closed, but it is no refused request: only a first head that never finishes is logged.
    if reason == "header_timeout" && conn.requests.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        return;
    }
    let mut entry = Entry::new(
        request_id::new(),
        Arc::clone(&conn.listener),
        normalize(conn.peer.ip()),
    );
    entry.tls_version = conn.tls_version;
    entry.outcome = if reason == "header_timeout" {
        Outcome::Timeout
    } else {
        Outcome::BadRequest
    }
    .as_str();
    entry.reason = Some(reason);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    finish(shared, conn, entry, response, Instant::now());
}

/// The response for a request whose task panicked: still logged and counted, as a 500.
pub fn internal_error(shared: &Shared, conn: &ConnInfo, started: Instant) -> Response<Full<Bytes>> {
    let entry = Entry::new(
        request_id::new(),
        Arc::clone(&conn.listener),
        normalize(conn.peer.ip()),
    );
    finish(
        shared,
        conn,
        entry,
        Reject::Internal.into_response(),
        started,
    )
}
