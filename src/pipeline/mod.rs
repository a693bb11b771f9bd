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
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Request, Response, Version};
use http_body_util::Full;
use hyper::body::Body as _;
use hyper::body::Incoming;

use crate::observe::access_log::{AccessLog, Entry};
use crate::observe::metrics::{Metrics, RequestLabels, RouteOutcomeLabels, UpstreamLabels};
use crate::observe::request_id;
use crate::runtime::Runtime;
use reject::{Outcome, Reject};

/// What every request shares: the current runtime snapshot and the observers.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub access_log: AccessLog,
    /// Set when shutdown begins: `/readyz` turns 503 so balancers stop sending.
    pub draining: std::sync::atomic::AtomicBool,
}

/// Facts about the connection a request came in on.
pub struct ConnInfo {
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    pub tls_version: Option<&'static str>,
}

/// Serves one request. Runs as its own task (see `server::http`), so a client that disconnects
/// mid-request cannot cancel it between forwarding and logging.
pub async fn handle(
    request: Request<Incoming>,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
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
    finish(&shared, entry, response, started).await
}

/// The stages. Cheap checks first: nothing reads the body before the route is known.
async fn serve(
    request: Request<Incoming>,
    conn: &ConnInfo,
    runtime: &Runtime,
    shared: &Shared,
    entry: &mut Entry,
) -> Result<Response<Full<Bytes>>, Reject> {
    // 2. route
    route::check_path(request.uri().path())?;
    let route = route::find(&runtime.routes, request.method(), request.uri().path())?;
    entry.route = Some(route.name.to_string());

    // 3. client ip: the peer, or what trusted proxies say it is
    let trust = &runtime.client_ip;
    let client_ip = client_ip::resolve_client_ip_with(
        conn.peer.ip(),
        request.headers(),
        &trust.trusted_proxies,
        trust.header,
    );
    entry.client_ip = client_ip.to_string();

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

    // 6. body
    let (parts, body) = request.into_parts();
    let body = body::read(body, &parts.headers, route.max_body, route.body_timeout).await?;
    entry.bytes_in = body.len() as u64;

    // 9. forward
    entry.upstream = Some(route.upstream.name.to_string());
    let forwarding = forward::Forwarding {
        route: &route.name,
        upstream_path: route.upstream_path.as_deref(),
        client_ip,
        tls: conn.tls_version.is_some(),
        request_id: &entry.request_id,
    };
    let result = forward::send(&route.upstream, &parts, body, &forwarding).await;
    let answer = match result {
        Ok(answer) => answer,
        Err(reject) => return Err(reject),
    };
    entry.upstream_status = Some(answer.response.status().as_u16());
    entry.upstream_ms = Some(answer.upstream_ms);
    shared
        .metrics
        .upstream_duration
        .get_or_create(&UpstreamLabels {
            upstream: route.upstream.name.to_string(),
        })
        .observe(answer.upstream_ms / 1000.0);
    entry.outcome = Outcome::Forwarded.as_str();
    Ok(answer.response)
}

use client_ip::normalize;

fn begin_entry(request: &Request<Incoming>, conn: &ConnInfo) -> Entry {
    let peer_ip = normalize(conn.peer.ip()).to_string();
    Entry {
        ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        request_id: request_id::from_headers(request.headers()),
        listener: conn.listener.to_string(),
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
        proto: match request.version() {
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        tls_version: conn.tls_version,
        client_ip: peer_ip.clone(),
        peer_ip,
        user_agent: request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect()),
        outcome: Outcome::Internal.as_str(),
        ..Entry::default()
    }
}

/// Stage 10: one log line and one count for every request, then the response goes out with the
/// request id so a sender's support ticket can be matched to the log.
async fn finish(
    shared: &Shared,
    mut entry: Entry,
    mut response: Response<Full<Bytes>>,
    started: Instant,
) -> Response<Full<Bytes>> {
    let elapsed = started.elapsed();
    entry.status = response.status().as_u16();
    entry.duration_ms = (elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0;
    entry.bytes_out = response.body().size_hint().exact().unwrap_or(0);
    let route = entry.route.clone().unwrap_or_default();
    shared
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            listener: entry.listener.clone(),
            route: route.clone(),
            outcome: entry.outcome,
            code: entry.status,
        })
        .inc();
    shared
        .metrics
        .request_duration
        .get_or_create(&RouteOutcomeLabels {
            route,
            outcome: entry.outcome,
        })
        .observe(elapsed.as_secs_f64());
    if let Ok(id) = http::HeaderValue::from_str(&entry.request_id) {
        response.headers_mut().insert(request_id::HEADER, id);
    }
    shared.access_log.write(&entry).await;
    response
}

/// The response for a request whose task panicked: still logged and counted, as a 500.
pub async fn internal_error(
    shared: &Shared,
    conn: &ConnInfo,
    started: Instant,
) -> Response<Full<Bytes>> {
    let entry = Entry {
        ts: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        request_id: uuid::Uuid::new_v4().to_string(),
        listener: conn.listener.to_string(),
        peer_ip: normalize(conn.peer.ip()).to_string(),
        client_ip: normalize(conn.peer.ip()).to_string(),
        outcome: Outcome::Internal.as_str(),
        ..Entry::default()
    };
    finish(shared, entry, Reject::Internal.into_response(), started).await
}
