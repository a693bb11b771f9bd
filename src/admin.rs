//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process answers) and
//! `/readyz` (it takes traffic; 503 while draining), and the durable-delivery queue
//! (`GET /queue/events[/ID]`, `POST /queue/replay`, `POST /queue/purge`; bearer `admin.token`
//! when set, see `delivery::ops`). Plain HTTP/1.1, meant for a private
//! address. It never serves webhook routes and never shows config or secrets. It also runs the
//! periodic housekeeping that metrics report on (rate-limit bucket pruning).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::state::Shared;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves until the task is aborted, which the gateway does only after its drain: load
/// balancers must be able to read `/readyz` = 503 for as long as the drain lasts.
pub async fn serve(socket: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                async move {
                    let path = request.uri().path();
                    let response = if path == "/queue" || path.starts_with("/queue/") {
                        crate::delivery::ops::admin(
                            shared.delivery.as_ref(),
                            request.method(),
                            path,
                            request.uri().query(),
                            request.headers(),
                        )
                        .await
                    } else {
                        answer(&request, &shared)
                    };
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// How often idle rate-limit buckets are dropped, key counts reported and stale upstream
/// connections closed.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Housekeeping on the current runtime, forever (the gateway aborts it): drops idle rate-limit
/// buckets and closes upstream connections idle past their timeout.
pub async fn housekeeping(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(PRUNE_EVERY).await;
        let runtime = shared.runtime.load();
        runtime.prune_limiters(&shared.metrics);
        runtime.close_stale_connections();
    }
}

fn answer(request: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match request.uri().path() {
        "/metrics" => {
            if let Some(delivery) = &shared.delivery {
                delivery.refresh_gauges();
            }
            // Prometheus asks for OpenMetrics in Accept; everything else gets the classic format.
            let wants_openmetrics = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("application/openmetrics-text"));
            let (body, content_type) = if wants_openmetrics {
                (shared.metrics.encode(), OPENMETRICS)
            } else {
                (shared.metrics.encode_text(), PROMETHEUS_TEXT)
            };
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if shared.draining.load(Ordering::SeqCst) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        // Not ready until every URL-fed IP set has loaded once: before that its routes refuse all.
        "/readyz" if !shared.runtime.load().is_ready() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "ip sets loading\n")
        }
        "/readyz" => text(StatusCode::OK, "ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
