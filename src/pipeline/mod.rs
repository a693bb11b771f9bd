//! The request path, top to bottom in `serve`: each stage of DESIGN.md section 1 is one call
//! that either passes or ends the request with a [`GatewayAnswer`] (a refusal, a handshake, a
//! duplicate). What the stages learn goes into the request's [`RequestCtx`]; whatever happens,
//! the request ends in `finish`, which builds the one access-log [`Entry`] from that context
//! and counts the one metric. Stages take only what they need; none of them writes to the log
//! or metrics itself.

pub mod acme_challenge;
pub mod allowlist;
pub mod body;
pub mod client_ip;
pub mod forward;
pub mod rate_limit;
pub mod reject;
pub mod replay;
pub mod route;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::Body;

use crate::observe::access_log::Entry;
use crate::observe::metrics::{Metrics, RequestLabels, SignatureLabels};
use crate::observe::request_id;
use crate::runtime::{Route, Runtime};
use crate::state::{ConnInfo, Shared};
use crate::verify::{Failure, SignedRequest, Verified, Verifier};
use client_ip::normalize;
use reject::{GatewayAnswer, Outcome, RefusedHead, Reject};
use replay::{Claim, ClaimGuard, ReplayStore};

/// What the pipeline knows about one request (pingora's per-request CTX): the facts of its head,
/// then what each stage learns. `finish` turns it into the access-log [`Entry`] by moving its
/// fields; nothing else writes the log.
pub struct RequestCtx<'r> {
    /// The request's arrival: the log's `ts`, and the "now" a signature's timestamp is judged
    /// against.
    pub ts: SystemTime,
    pub request_id: HeaderValue,
    /// `None` for a request hyper refused before its head was read.
    pub method: Option<Method>,
    pub uri: Option<Uri>,
    pub proto: &'static str,
    pub user_agent: Option<HeaderValue>,
    pub peer_ip: IpAddr,
    /// The peer until stage 3 resolves it.
    pub client_ip: IpAddr,
    /// Stage 2.
    pub route: Option<&'r Route>,
    /// Stage 7.
    pub provider: Option<&'r str>,
    pub secret_index: Option<usize>,
    /// The provider's delivery id, cut to 256 characters; stage 8 keys on it.
    pub event_id: Option<String>,
    /// Stage 6.
    pub bytes_in: u64,
    /// Stage 9: the upstream the request went to, and its answer.
    pub upstream: Option<&'r str>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<f64>,
}

impl<'r> RequestCtx<'r> {
    /// The context of a request that has its head.
    fn begin<B>(request: &Request<B>, conn: &ConnInfo) -> RequestCtx<'r> {
        let mut ctx = RequestCtx::headless(request_id::from_headers(request.headers()), conn);
        ctx.method = Some(request.method().clone());
        ctx.uri = Some(request.uri().clone());
        ctx.proto = match request.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        ctx.user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .filter(|v| v.to_str().is_ok())
            .cloned();
        ctx
    }

    /// The context of a request known only by its connection (a refused head, a panic).
    fn headless(request_id: HeaderValue, conn: &ConnInfo) -> RequestCtx<'r> {
        let peer = normalize(conn.peer.ip());
        RequestCtx {
            ts: SystemTime::now(),
            request_id,
            method: None,
            uri: None,
            proto: "HTTP/1.1",
            user_agent: None,
            peer_ip: peer,
            client_ip: peer,
            route: None,
            provider: None,
            secret_index: None,
            event_id: None,
            bytes_in: 0,
            upstream: None,
            upstream_status: None,
            upstream_ms: None,
        }
    }
}

/// Serves one request, which arrived at `started`. Runs as its own task (see `server::http`), so
/// a client that disconnects mid-request cannot cancel it between forwarding and logging.
///
/// Generic over the body so the pipeline runs in memory too (tests hand it `Full` bodies); the
/// server hands it hyper's `Incoming`.
pub async fn handle<B>(
    request: Request<B>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
    started: Instant,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    conn.requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let runtime = shared.runtime.load_full();
    let mut ctx = RequestCtx::begin(&request, &conn);
    let ended = serve(request, &conn, &runtime, &shared, &mut ctx).await;
    finish(&shared, &conn, ctx, ended, started)
}

/// The stages, top to bottom. Cheap checks first: nothing reads the body before the route is
/// known. `Ok` is the upstream's answer; `Err` an answer the gateway made itself.
async fn serve<'r, B>(
    request: Request<B>,
    conn: &ConnInfo,
    runtime: &'r Runtime,
    shared: &Shared,
    ctx: &mut RequestCtx<'r>,
) -> Result<Response<Full<Bytes>>, GatewayAnswer>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // 1b. ACME HTTP-01: a plain listener answers the CA's validation request before any route
    if let (Some(tokens), None) = (&shared.acme_http01, conn.tls_version) {
        acme_challenge::answer(tokens, &request)?;
    }

    // 2-5. route, client ip, allowlist, rate limits: nothing of the body read yet
    let route = match admit(&request, conn, runtime, shared, ctx).await {
        Ok(route) => route,
        Err(reject) => {
            // A refusal before the body: the small body a client is already sending is read
            // and dropped first, so the answer is not cut short by a reset (issue 14, item 8).
            if reject.allows_discarding_body() {
                let (parts, body) = request.into_parts();
                body::discard(body, &parts.headers).await;
            }
            return Err(reject.into());
        }
    };

    // 6. body
    let (parts, body) = request.into_parts();
    let body = body::read(body, &parts.headers, route.max_body, route.body_timeout).await?;
    ctx.bytes_in = body.len();

    // 7. signature, over the exact bytes received; fills in the event id stage 8 keys on
    if let Some(verifier) = &route.verifier {
        check_signature(verifier, route, &parts, &body, &shared.metrics, ctx)?;
    }

    // 8. duplicates: a delivered id is answered, not forwarded again
    let claim = claim_delivery(route, ctx.event_id.as_deref(), &shared.replay).await?;

    // 9. queue (issue 16): a `delivery: queue` route answers once the event is durable in the
    // spool; the delivery worker forwards it later (src/delivery/).
    if let Some(delivery) = &shared.delivery {
        if let Some(queue) = delivery.queue_route(&route.name) {
            let tls = conn.tls_version.is_some();
            return Err(crate::delivery::intake::accept(
                delivery, &queue, route, &parts, body, tls, claim, ctx,
            )
            .await);
        }
    }

    // 9. forward
    ctx.upstream = Some(&route.upstream.name);
    let forwarding = forward::Forwarding {
        route: route.headers.route.as_ref(),
        upstream_path: route.upstream_path.as_deref(),
        client_ip: ctx.client_ip,
        tls: conn.tls_version.is_some(),
        request_id: &ctx.request_id,
        verified_by: route.headers.verified_by.as_ref(),
    };
    let answer = forward::send(&route.upstream, parts, body, &forwarding).await?;
    // end of 9

    if let (Some(claim), Some(window)) = (claim, route.replay_window) {
        if answer.response.status().is_success() {
            claim.delivered(window);
        }
    }
    ctx.upstream_status = Some(answer.response.status().as_u16());
    ctx.upstream_ms = Some(answer.upstream_ms);
    route
        .series
        .upstream_duration(&shared.metrics, &route.upstream.name)
        .observe(answer.upstream_ms / 1000.0);
    Ok(answer.response)
}

/// Stages 2-5, which read nothing of the body: the route, the client address, the allowlist
/// and the rate limits; and, for `Expect: 100-continue`, a signature header that is certainly
/// missing, so the body is never invited only to be refused.
async fn admit<'r, B>(
    request: &Request<B>,
    conn: &ConnInfo,
    runtime: &'r Runtime,
    shared: &Shared,
    ctx: &mut RequestCtx<'r>,
) -> Result<&'r Route, Reject> {
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
    ctx.route = Some(route);
    route::check_method(route, request.method())?;

    // 3. client ip: the peer, or what trusted proxies say it is
    let trust = &runtime.client_ip;
    let client_ip = client_ip::resolve_client_ip_with(
        conn.peer.ip(),
        request.headers(),
        &trust.trusted_proxies,
        trust.header,
    );
    ctx.client_ip = client_ip;

    // 4. allowlist
    if let Some(allowlist) = &route.allowlist {
        allowlist.check(client_ip).map_err(|_| Reject::IpDenied)?;
    }

    // 5. rate limits, the gateway's then the route's, before a byte of the body is read
    if let Some(limiter) = &runtime.global_limit {
        let redis = runtime.redis.as_deref();
        rate_limit::check(limiter, redis, client_ip, request.headers(), "global").await?;
    }
    if let Some(limiter) = &route.limiter {
        let redis = runtime.redis.as_deref();
        rate_limit::check(limiter, redis, client_ip, request.headers(), "route").await?;
    }

    // 7, early: a client waiting for 100 Continue is refused before it sends a body that
    // could not pass anyway (reading the body would send the 100).
    if let Some(verifier) = &route.verifier {
        if body::expects_continue(request.headers())
            && verifier.required_header_missing(request.headers())
        {
            ctx.provider = Some(verifier.provider());
            let missing = Err(Failure::from(crate::verify::Reason::Missing));
            count_signature_check(&shared.metrics, route, verifier, &missing);
            return Err(Reject::SignatureInvalid {
                reason: crate::verify::Reason::Missing.as_str(),
                status: verifier.on_failure_status(),
            });
        }
    }
    Ok(route)
}

/// Stage 7: the signature over the exact bytes received, and the provider handshakes, which
/// are answered here, never forwarded. Unsigned ones (Dropbox and X challenges, WooCommerce's
/// activation ping, Intercom's HEAD) come before the check, signed ones after it. A request
/// that passes leaves its delivery id in `ctx.event_id`.
fn check_signature<'r>(
    verifier: &'r Verifier,
    route: &Route,
    parts: &http::request::Parts,
    body: &body::Frames,
    metrics: &Metrics,
    ctx: &mut RequestCtx<'r>,
) -> Result<(), GatewayAnswer> {
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
    ctx.provider = Some(verifier.provider());
    if let Some(reply) = verifier.unsigned_handshake(&signed) {
        return Err(GatewayAnswer::Handshake(reply));
    }
    // The request's arrival, as logged, is the "now" its timestamp is judged against.
    let checked = verifier.verify(&signed, ctx.ts);
    count_signature_check(metrics, route, verifier, &checked);
    let verified = checked.map_err(|failure| Reject::SignatureInvalid {
        reason: failure.reason.as_str(),
        status: verifier.on_failure_status(),
    })?;
    ctx.secret_index = Some(verified.secret_index);
    if let Some(reply) = verifier.signed_handshake(&signed, &verified) {
        return Err(GatewayAnswer::Handshake(reply));
    }
    ctx.event_id = verifier
        .delivery_id(&signed)
        .map(|id| id.chars().take(256).collect());
    Ok(())
}

/// Stage 8: on a route with a replay window, claims the event id for delivery. `Ok(None)`: no
/// id or no window, nothing to remember; a delivered id is answered as a duplicate, and a copy
/// being forwarded right now is turned away.
async fn claim_delivery(
    route: &Route,
    event_id: Option<&str>,
    replay: &Arc<dyn ReplayStore>,
) -> Result<Option<ClaimGuard>, GatewayAnswer> {
    let (Some(id), Some(_)) = (event_id, route.replay_window) else {
        return Ok(None);
    };
    let key = format!("{}\0{id}", route.name);
    match replay.claim(&key, Instant::now()).await {
        Claim::Fresh => Ok(Some(ClaimGuard::new(Arc::clone(replay), key))),
        Claim::Delivered => Err(GatewayAnswer::Duplicate),
        Claim::InFlight => Err(Reject::DuplicateInFlight.into()),
    }
}

fn count_signature_check(
    metrics: &Metrics,
    route: &Route,
    verifier: &Verifier,
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

/// Stage 10: one log line and one count for every request, then the response goes out with the
/// request id so a sender's support ticket can be matched to the log. The outcome is decided
/// here, from how the request ended, and nowhere else.
fn finish(
    shared: &Shared,
    conn: &ConnInfo,
    ctx: RequestCtx<'_>,
    ended: Result<Response<Full<Bytes>>, GatewayAnswer>,
    started: Instant,
) -> Response<Full<Bytes>> {
    let (outcome, reason, mut response) = match ended {
        Ok(forwarded) => (Outcome::Forwarded, None, forwarded),
        Err(answer) => (answer.outcome(), answer.reason(), answer.into_response()),
    };
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let labels = RequestLabels {
        listener: Arc::clone(&conn.listener),
        route: ctx
            .route
            .map_or_else(|| Arc::from(""), |route| Arc::clone(&route.name)),
        outcome: outcome.as_str(),
        code: status,
    };
    shared
        .metrics
        .count_request(&conn.answers, labels, elapsed.as_secs_f64());
    response
        .headers_mut()
        .insert(request_id::HEADER, ctx.request_id.clone());
    let entry = Entry {
        ts: ctx.ts,
        request_id: ctx.request_id,
        listener: &conn.listener,
        route: ctx.route.map(|route| &*route.name),
        method: ctx.method,
        uri: ctx.uri,
        proto: ctx.proto,
        tls_version: conn.tls_version,
        peer_ip: ctx.peer_ip,
        client_ip: ctx.client_ip,
        status,
        outcome,
        reason,
        provider: ctx.provider,
        event_id: ctx.event_id,
        secret_index: ctx.secret_index,
        bytes_in: ctx.bytes_in,
        bytes_out: response.body().size_hint().exact().unwrap_or(0),
        duration_ms: (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
        upstream: ctx.upstream,
        upstream_status: ctx.upstream_status,
        upstream_ms: ctx.upstream_ms,
        user_agent: ctx.user_agent,
    };
    shared.access_log.write(&entry);
    response
}

/// The one log line and metric a request hyper refused before [`handle`] is owed (see
/// [`RefusedHead`]).
pub fn log_refused_head(shared: &Shared, conn: &ConnInfo, refused: RefusedHead) {
    // A keep-alive connection that has served requests and then idles past the header timeout
    // is closed, but it is no refused request: only a first head that never finishes is logged.
    if refused.is_timeout() && conn.requests.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        return;
    }
    let ctx = RequestCtx::headless(request_id::new(), conn);
    finish(
        shared,
        conn,
        ctx,
        Err(GatewayAnswer::HeadRefused(refused)),
        Instant::now(),
    );
}

/// The response for a request whose task panicked: still logged and counted, as a 500.
pub fn internal_error(shared: &Shared, conn: &ConnInfo, started: Instant) -> Response<Full<Bytes>> {
    let ctx = RequestCtx::headless(request_id::new(), conn);
    finish(shared, conn, ctx, Err(Reject::Internal.into()), started)
}
