//! Stage 9 for a `delivery: queue` route: the verified request becomes a spooled event, and the
//! sender gets the route's `ack_status` only once that event is durable. A full spool answers
//! 503 with `Retry-After`, a failed one 503: the sender keeps the event and retries. Nothing is
//! acknowledged that is not on disk, and nothing here reaches the upstream.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, request, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::spool::{EventMeta, Payload, SpoolError, State, Trigger};
use super::Delivery;
use crate::config::QueueRoute;
use crate::observe::access_log::Entry;
use crate::pipeline::body::Frames;
use crate::pipeline::replay::ClaimGuard;
use crate::runtime::Route;

/// `Retry-After` seconds on a 503 from a full spool.
const FULL_RETRY_AFTER: &str = "30";

/// Spools the request and answers. Fills the log entry (`outcome: queued`, or `spool_full` /
/// `spool_error` with 503). On success the delivery id is remembered as delivered (stage 8), so
/// a provider's retry of a spooled event is answered 2xx and not spooled again.
#[allow(clippy::too_many_arguments)]
pub async fn accept(
    delivery: &Arc<Delivery>,
    queue: &QueueRoute,
    route: &Route,
    parts: &request::Parts,
    body: Frames,
    client_ip: IpAddr,
    tls: bool,
    claim: Option<ClaimGuard>,
    entry: &mut Entry<'_>,
) -> Response<Full<Bytes>> {
    let now = delivery.now_ms();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let mut bytes = Vec::with_capacity(body.len() as usize);
    for frame in body.as_slice() {
        bytes.extend_from_slice(frame);
    }
    let payload = Payload {
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect(),
        body: bytes,
    }
    .encode();
    let mut meta = EventMeta {
        idempotency_key: entry.event_id.clone().unwrap_or_else(|| id.clone()),
        id,
        route: route.name.to_string(),
        upstream: queue.upstream.clone(),
        method: parts.method.as_str().to_string(),
        uri: parts.uri.to_string(),
        provider: entry.provider.map(str::to_string),
        client_ip: client_ip.to_string(),
        request_id: entry.request_id.to_str().unwrap_or("-").to_string(),
        tls,
        received_ms: now,
        state: State::Pending,
        attempts: 0,
        round_attempts: 0,
        round_start_ms: now,
        next_attempt_ms: now,
        trigger: Trigger::Initial,
        updated_ms: now,
        last_status: None,
        last_reason: None,
        stored_bytes: 0,
    };
    // What counts against max_bytes: the payload plus about what the metadata takes.
    meta.stored_bytes = payload.len() as u64 + 512;
    entry.upstream = Some(Arc::clone(&route.upstream.name));
    match delivery.enqueue(meta, payload).await {
        Ok(()) => {
            if let (Some(claim), Some(window)) = (claim, route.replay_window) {
                claim.delivered(window);
            }
            entry.outcome = "queued";
            let status = StatusCode::from_u16(queue.ack_status).unwrap_or(StatusCode::OK);
            text(status, "queued\n", None)
        }
        Err(SpoolError::Full) => {
            entry.outcome = "spool_full";
            entry.reason = Some("max_bytes");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable\n",
                Some(FULL_RETRY_AFTER),
            )
        }
        Err(_) => {
            entry.outcome = "spool_error";
            entry.reason = Some("commit");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service Unavailable\n",
                Some("60"),
            )
        }
    }
}

fn text(
    status: StatusCode,
    body: &'static str,
    retry_after: Option<&'static str>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    }
    response
}
