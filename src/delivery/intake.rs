//! Stage 9 for a `delivery: queue` route: the verified request becomes a spooled event, and the
//! sender gets the route's `ack_status` only once that event is durable. A full spool answers
//! 503 with `Retry-After`, a failed one 503: the sender keeps the event and retries. Nothing is
//! acknowledged that is not on disk, and nothing here reaches the upstream.

use std::sync::Arc;

use http::{request, StatusCode};

use super::spool::{EventMeta, Payload, SpoolError, State, Trigger};
use super::Delivery;
use crate::config::QueueRoute;
use crate::pipeline::body::Frames;
use crate::pipeline::reject::{GatewayAnswer, Reject};
use crate::pipeline::replay::ClaimGuard;
use crate::pipeline::RequestCtx;
use crate::runtime::Route;

/// Spools the request and says how to answer: [`GatewayAnswer::Queued`] (`outcome: queued`,
/// the route's `ack_status`), or 503 ([`Reject::SpoolFull`] with `Retry-After`,
/// [`Reject::SpoolFailed`]). On success the delivery id is remembered as delivered (stage 8),
/// so a provider's retry of a spooled event is answered 2xx and not spooled again.
#[allow(clippy::too_many_arguments)]
pub async fn accept<'r>(
    delivery: &Arc<Delivery>,
    queue: &QueueRoute,
    route: &'r Route,
    parts: &request::Parts,
    body: Frames,
    tls: bool,
    claim: Option<ClaimGuard>,
    ctx: &mut RequestCtx<'r>,
) -> GatewayAnswer {
    let now = delivery.now_ms();
    let id = event_id(now);
    let frames: Vec<&[u8]> = body.as_slice().iter().map(|f| f.as_ref()).collect();
    let headers: Vec<(&[u8], &[u8])> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
        .collect();
    let payload = Payload::encode_from(&headers, &frames);
    let mut meta = EventMeta {
        idempotency_key: ctx.event_id.clone().unwrap_or_else(|| id.clone()),
        id,
        route: route.name.to_string(),
        upstream: queue.upstream.clone(),
        method: parts.method.as_str().to_string(),
        uri: parts.uri.to_string(),
        provider: ctx.provider.map(str::to_string),
        client_ip: ctx.client_ip.to_string(),
        request_id: ctx.request_id.to_str().unwrap_or("-").to_string(),
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
    ctx.upstream = Some(&route.upstream.name);
    match delivery.enqueue(meta, payload).await {
        Ok(()) => {
            if let (Some(claim), Some(window)) = (claim, route.replay_window) {
                claim.delivered(window);
            }
            GatewayAnswer::Queued {
                status: StatusCode::from_u16(queue.ack_status).unwrap_or(StatusCode::OK),
            }
        }
        Err(SpoolError::Full) => Reject::SpoolFull.into(),
        Err(_) => Reject::SpoolFailed.into(),
    }
}

/// A UUIDv7 (time-ordered, 32 hex digits): `now_ms`, then 74 bits from
/// [`super::worker::cheap_random`] rather than the OS's random source (a syscall per event).
pub fn event_id(now_ms: u64) -> String {
    let (a, b) = (super::worker::cheap_random(), super::worker::cheap_random());
    let mut bits = [0u8; 10];
    bits[..8].copy_from_slice(&a.to_be_bytes());
    bits[8..].copy_from_slice(&b.to_be_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(now_ms, &bits)
        .into_uuid()
        .simple()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_ids_are_uuid_v7_ordered_by_time_and_distinct() {
        let a = super::event_id(1_700_000_000_000);
        let b = super::event_id(1_700_000_000_001);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert!(a < b);
        let same_ms: std::collections::HashSet<String> =
            (0..1000).map(|_| super::event_id(5)).collect();
        assert_eq!(same_ms.len(), 1000);
    }
}
