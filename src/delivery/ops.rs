//! Operators' view of the queue: list, show, replay and purge, for the admin listener
//! (`/queue/...`, with an optional bearer token) and for `hookgate queue` when the gateway is
//! stopped (the spool is single-writer: a running gateway holds its lock, and the CLI then goes
//! through the admin listener instead). Never shows a body or a header's value: header names
//! and the body's length only, since both carry signatures and personal data.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::segments::{self, SegmentSpool};
use super::spool::{EventMeta, Filter, Op, Spool, SpoolError, State, Trigger};
use super::Delivery;

/// Most events one listing returns unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 1000;

/// A dead (or pending, or delivered) event made due now as a replay, with a fresh budget.
pub fn mark_replay(meta: &mut EventMeta, now_ms: u64) {
    meta.state = State::Pending;
    meta.trigger = Trigger::Replay;
    meta.round_attempts = 0;
    meta.round_start_ms = now_ms;
    meta.next_attempt_ms = now_ms;
    meta.updated_ms = now_ms;
}

/// A filter from `route=`, `state=`, `since=` (RFC 3339, or a duration back from now such as
/// `1h`), `id=` pairs; also the most events to list (`limit=`).
pub fn parse_filter<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    now_ms: u64,
) -> Result<(Filter, usize), String> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (key, value) in pairs {
        match key {
            "route" => filter.route = Some(value.to_string()),
            "state" => {
                filter.state = Some(
                    State::parse(value)
                        .ok_or_else(|| format!("state {value:?}: pending, dead or delivered"))?,
                )
            }
            "since" => filter.since_ms = Some(parse_since(value, now_ms)?),
            "id" => filter.id = Some(value.to_string()),
            "limit" => limit = value.parse().map_err(|_| format!("limit {value:?}"))?,
            other => return Err(format!("unknown filter {other:?}")),
        }
    }
    Ok((filter, limit))
}

pub fn parse_since(value: &str, now_ms: u64) -> Result<u64, String> {
    if let Ok(at) = humantime::parse_rfc3339_weak(value) {
        return at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .map_err(|_| format!("since {value:?} is before 1970"));
    }
    let back = crate::config::units::parse_duration(value)
        .map_err(|_| format!("since {value:?}: an RFC 3339 time or a duration such as 1h"))?;
    Ok(now_ms.saturating_sub(back.as_millis() as u64))
}

/// The listing form of an event.
pub fn summary(m: &EventMeta) -> serde_json::Value {
    let at = |ms: u64| {
        humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    };
    json!({
        "id": m.id,
        "route": m.route,
        "upstream": m.upstream,
        "state": m.state.as_str(),
        "idempotency_key": m.idempotency_key,
        "provider": m.provider,
        "received": at(m.received_ms),
        "attempts": m.attempts,
        "next_attempt": (m.state == State::Pending).then(|| at(m.next_attempt_ms)),
        "last_status": m.last_status,
        "last_reason": m.last_reason,
        "updated": at(m.updated_ms),
    })
}

/// `show`: the summary plus what was received, without values.
pub fn detail(m: &EventMeta, payload: &super::spool::Payload) -> serde_json::Value {
    let mut v = summary(m);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("method".into(), json!(m.method));
        obj.insert("path".into(), json!(m.uri.split('?').next().unwrap_or("")));
        obj.insert("client_ip".into(), json!(m.client_ip));
        obj.insert("request_id".into(), json!(m.request_id));
        obj.insert(
            "header_names".into(),
            json!(payload
                .headers
                .iter()
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .collect::<Vec<_>>()),
        );
        obj.insert("body_bytes".into(), json!(payload.body.len()));
    }
    v
}

/// `/queue/...` on the admin listener.
pub async fn admin(
    delivery: Option<&Arc<Delivery>>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    let Some(delivery) = delivery else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "no spool configured"}),
        );
    };
    if let Some(token) = delivery.admin_token() {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !same(given.as_bytes(), token.as_bytes()) {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "bearer token required"}),
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let (mut filter, limit) = match parse_filter(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        delivery.now_ms(),
    ) {
        Ok(parsed) => parsed,
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e})),
    };
    let result = match (method, path) {
        (&Method::GET, "/queue/events") => delivery
            .list(&filter, limit)
            .map(|events| json!({"events": events.iter().map(summary).collect::<Vec<_>>()})),
        (&Method::GET, p) if p.starts_with("/queue/events/") => {
            let id = &p["/queue/events/".len()..];
            match delivery.get(id) {
                Ok(Some((m, payload))) => Ok(detail(&m, &payload)),
                Ok(None) => return reply(StatusCode::NOT_FOUND, json!({"error": "no such event"})),
                Err(e) => Err(e),
            }
        }
        (&Method::POST, p) if p.starts_with("/queue/events/") => {
            return reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "GET"}));
        }
        (&Method::POST, "/queue/replay") => delivery
            .replay(&filter)
            .await
            .map(|n| json!({"replayed": n})),
        (&Method::POST, "/queue/purge") => {
            if filter == Filter::default() {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "purge needs a filter (state, route, id or since)"}),
                );
            }
            if filter.state.is_none() && filter.id.is_none() {
                // Never purge pending events by accident: a route or time alone means dead ones.
                filter.state = Some(State::Dead);
            }
            delivery.purge(&filter).await.map(|n| json!({"purged": n}))
        }
        (_, "/queue/events" | "/queue/replay" | "/queue/purge") => {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method not allowed"}),
            );
        }
        _ => return reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    };
    match result {
        Ok(v) => reply(StatusCode::OK, v),
        Err(e) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        ),
    }
}

/// Constant-time comparison of the admin token (`subtle`); the length is not hidden.
fn same(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut text = body.to_string();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `hookgate queue` on a stopped gateway's spool. `Err(SpoolError::Locked)` means the gateway
/// runs: ask its admin listener instead.
pub fn offline(
    dir: &std::path::Path,
    action: &str,
    filter: &Filter,
    limit: usize,
) -> Result<serde_json::Value, SpoolError> {
    let spool = SegmentSpool::open(dir, segments::DEFAULT_SEGMENT_BYTES)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    match action {
        "ls" => Ok(
            json!({"events": spool.list(filter, limit)?.iter().map(summary).collect::<Vec<_>>()}),
        ),
        "show" => {
            let id = filter.id.as_deref().unwrap_or("");
            match spool.get(id)? {
                Some((m, payload)) => Ok(detail(&m, &payload)),
                None => Ok(json!({"error": "no such event"})),
            }
        }
        "replay" => {
            let mut ops = Vec::new();
            for mut m in spool.list(filter, usize::MAX)? {
                if m.state == State::Delivered && filter.id.is_none() {
                    continue;
                }
                mark_replay(&mut m, now);
                ops.push(Op::Update(m));
            }
            let n = ops.len();
            spool.commit(ops, u64::MAX, true)?;
            Ok(json!({"replayed": n}))
        }
        "purge" => {
            let mut filter = filter.clone();
            if filter.state.is_none() && filter.id.is_none() {
                filter.state = Some(State::Dead);
            }
            let ops: Vec<Op> = spool
                .list(&filter, usize::MAX)?
                .into_iter()
                .map(|m| Op::Remove(m.id))
                .collect();
            let n = ops.len();
            spool.commit(ops, u64::MAX, true)?;
            if n > 0 {
                let _ = spool.compact();
            }
            Ok(json!({"purged": n}))
        }
        other => Ok(json!({"error": format!("unknown action {other:?}")})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_unknown_keys() {
        let (f, limit) = parse_filter(
            [
                ("route", "gh"),
                ("state", "dead"),
                ("since", "1h"),
                ("limit", "5"),
            ]
            .into_iter(),
            10_000_000,
        )
        .unwrap();
        assert_eq!(f.route.as_deref(), Some("gh"));
        assert_eq!(f.state, Some(State::Dead));
        assert_eq!(f.since_ms, Some(10_000_000 - 3_600_000));
        assert_eq!(limit, 5);
        assert!(parse_filter([("state", "gone")].into_iter(), 0).is_err());
        assert!(parse_filter([("colour", "red")].into_iter(), 0).is_err());
        assert_eq!(parse_since("1970-01-01T00:00:01Z", 0), Ok(1000));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
