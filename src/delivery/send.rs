//! The one adapter between delivery and the upstream client: turns a spooled event into the
//! exchange direct forwarding makes (`pipeline::forward`), plus `Idempotency-Key`,
//! `X-Hookgate-Attempt` and `X-Hookgate-Trigger`, and the answer into a [`Sent`]. When the
//! upstream client moves (`src/upstream/`), only this file changes. It never retries and never
//! follows a redirect: that is the worker's decision.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};

use super::spool::{EventMeta, Payload, Trigger};
use crate::pipeline::forward::{self, Forwarding, Upstream};
use crate::pipeline::reject::Reject;
use crate::runtime::Route;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const X_HOOKGATE_ATTEMPT: HeaderName = HeaderName::from_static("x-hookgate-attempt");
pub const X_HOOKGATE_TRIGGER: HeaderName = HeaderName::from_static("x-hookgate-trigger");

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The upstream answered; `retry_after` is its `Retry-After` in seconds, if any.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No answer: connect or TLS failure, timeout, reset, unreadable response. Retryable.
    Failed { reason: &'static str },
    /// The event cannot be sent as stored (its target is not a valid path). Not retryable.
    Invalid { reason: &'static str },
}

/// Sends `meta`'s event to `upstream` as direct forwarding would have, as attempt
/// `meta.attempts`. `route` is the event's route in the running config, if it still exists
/// (its `upstream_path` and gateway headers apply).
pub async fn send(
    upstream: &Upstream,
    route: Option<&Route>,
    meta: &EventMeta,
    payload: Payload,
    trigger: Trigger,
) -> (Sent, f64) {
    let Ok(mut request) = http::Request::builder()
        .method(meta.method.as_str())
        .uri(meta.uri.as_str())
        .body(())
    else {
        return (Sent::Invalid { reason: "request" }, 0.0);
    };
    let headers = request.headers_mut();
    for (name, value) in payload.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(&value),
        ) {
            headers.append(name, value);
        }
    }
    // Ours replaces any the sender set: one key per event, the same on every attempt.
    headers.remove(IDEMPOTENCY_KEY);
    let (parts, ()) = request.into_parts();
    let client_ip: IpAddr = meta
        .client_ip
        .parse()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let request_id =
        HeaderValue::from_str(&meta.request_id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    let forwarding = Forwarding {
        route: route.and_then(|r| r.headers.route.as_ref()),
        upstream_path: route.and_then(|r| r.upstream_path.as_deref()),
        client_ip,
        tls: meta.tls,
        request_id: &request_id,
        verified_by: route.and_then(|r| r.headers.verified_by.as_ref()),
    };
    let mut extra = Vec::with_capacity(3);
    if let Ok(key) = HeaderValue::from_str(&meta.idempotency_key) {
        extra.push((IDEMPOTENCY_KEY, key));
    }
    extra.push((X_HOOKGATE_ATTEMPT, HeaderValue::from(meta.attempts)));
    extra.push((
        X_HOOKGATE_TRIGGER,
        HeaderValue::from_static(trigger.as_str()),
    ));
    let body = [payload.body];
    let len = body[0].len() as u64;
    match forward::send_with(upstream, parts, &body, len, &forwarding, &extra).await {
        Ok(answer) => {
            let retry_after = answer
                .response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            (
                Sent::Status {
                    code: answer.response.status().as_u16(),
                    retry_after,
                },
                answer.upstream_ms,
            )
        }
        Err(reject) => (classify(&reject), 0.0),
    }
}

fn classify(reject: &Reject) -> Sent {
    match reject {
        // `reason` is the upstream client's word for the cause: connect_refused, tls, ...
        Reject::UpstreamConnect { reason } => Sent::Failed { reason },
        Reject::UpstreamTimeout => Sent::Failed { reason: "timeout" },
        Reject::UpstreamBusy => Sent::Failed {
            reason: "max_connections",
        },
        Reject::Upstream { reason } => Sent::Failed { reason },
        Reject::BadRequest { reason } => Sent::Invalid { reason },
        _ => Sent::Failed { reason: "error" },
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate_parse(value)?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn httpdate_parse(value: &str) -> Option<std::time::SystemTime> {
    // IMF-fixdate, e.g. "Sun, 06 Nov 1994 08:49:37 GMT", read with humantime's RFC 3339 parser.
    let mut parts = value.split_whitespace();
    let _weekday = parts.next()?;
    let day: u32 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = parts.next()?.parse().ok()?;
    let time = parts.next()?;
    let text = format!("{year:04}-{month:02}-{day:02}T{time}Z");
    humantime::parse_rfc3339(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
