//! The one place a refusal becomes a response: each [`Reject`] knows its status code, its
//! `outcome` and `reason` for the log and metrics, and the short body the client sees. The body
//! never says which rule, secret or address failed; only the log does.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use super::rate_limit::{RATELIMIT, RATELIMIT_POLICY};

/// What happened to a request, as the access log's `outcome` and the metrics' `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    Duplicate,
    Handshake,
    BadRequest,
    NoRoute,
    MethodNotAllowed,
    IpDenied,
    RateLimited,
    BodyTooLarge,
    Timeout,
    SignatureInvalid,
    ClientAbort,
    UpstreamConnectError,
    UpstreamTimeout,
    UpstreamError,
    /// Every connection the upstream may have is busy and none freed up in time.
    UpstreamBusy,
    Internal,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Duplicate => "duplicate",
            Outcome::Handshake => "handshake",
            Outcome::BadRequest => "bad_request",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::IpDenied => "ip_denied",
            Outcome::RateLimited => "rate_limited",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::Timeout => "timeout",
            Outcome::SignatureInvalid => "signature_invalid",
            Outcome::ClientAbort => "client_abort",
            Outcome::UpstreamConnectError => "upstream_connect_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamBusy => "upstream_busy",
            Outcome::Internal => "internal_error",
        }
    }
}

/// Why a stage refused. Stages return these; only [`Reject::into_response`] turns them into
/// HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// A request a front door must not pass on: a path with dot segments or encoded separators
    /// (could reach another route upstream), a missing or doubled `Host`, ambiguous framing
    /// (`Content-Length` with `Transfer-Encoding`), a broken chunked body. `reason` says which.
    BadRequest {
        reason: &'static str,
    },
    /// A transfer coding other than `chunked`: we cannot forward what we cannot decode.
    UnsupportedTransferCoding,
    /// An HTTP/2 head with more header fields than `limits.max_headers` (hyper refuses such
    /// an HTTP/1.1 head itself).
    TooManyHeaders,
    NoRoute,
    MethodNotAllowed {
        allow: String,
    },
    /// The client address is outside the route's allowlist.
    IpDenied,
    /// Over a limit: `Retry-After` seconds and the IETF `RateLimit-Policy` / `RateLimit` field
    /// values. `scope` ("route" or "global") says which limit, in the log only.
    RateLimited {
        retry_after: String,
        policy: String,
        state: String,
        scope: &'static str,
    },
    /// Declared or actual body larger than the route allows.
    BodyTooLarge,
    /// The body did not arrive within the route's body timeout.
    BodyTimeout,
    /// The signature is missing, malformed, wrong or outside its time window. `status` is the
    /// route's `on_failure` (401 unless a provider wants another).
    SignatureInvalid {
        reason: &'static str,
        status: u16,
    },
    /// Another copy of this event is being forwarded right now; the sender should retry.
    DuplicateInFlight,
    /// The client went away or sent a broken body before it was complete.
    ClientAbort,
    /// No connection could be opened; `reason` says why (`connect_refused`, `tls`, ...).
    UpstreamConnect {
        reason: &'static str,
    },
    UpstreamTimeout,
    /// The upstream's `max_connections` are all busy and none came free within the wait.
    UpstreamBusy,
    /// The upstream answered something we cannot pass on (reset, oversized response).
    Upstream {
        reason: &'static str,
    },
    /// A bug in the gateway (a panicked request task). Logged; never expected.
    Internal,
}

impl Reject {
    pub fn status(&self) -> StatusCode {
        match self {
            Reject::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Reject::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            Reject::TooManyHeaders => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Reject::NoRoute => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Reject::IpDenied => StatusCode::FORBIDDEN,
            Reject::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Reject::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reject::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Reject::SignatureInvalid { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::UNAUTHORIZED)
            }
            // nginx's convention for "client closed the request": nobody reads this response,
            // but the log and metrics must not count it as a server error.
            Reject::DuplicateInFlight => StatusCode::CONFLICT,
            Reject::ClientAbort => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Reject::UpstreamConnect { .. } | Reject::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Reject::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Reject::UpstreamBusy => StatusCode::SERVICE_UNAVAILABLE,
            Reject::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn outcome(&self) -> Outcome {
        match self {
            Reject::BadRequest { .. }
            | Reject::UnsupportedTransferCoding
            | Reject::TooManyHeaders => Outcome::BadRequest,
            Reject::NoRoute => Outcome::NoRoute,
            Reject::MethodNotAllowed { .. } => Outcome::MethodNotAllowed,
            Reject::IpDenied => Outcome::IpDenied,
            Reject::RateLimited { .. } => Outcome::RateLimited,
            Reject::BodyTooLarge => Outcome::BodyTooLarge,
            Reject::BodyTimeout => Outcome::Timeout,
            Reject::SignatureInvalid { .. } => Outcome::SignatureInvalid,
            Reject::DuplicateInFlight => Outcome::Duplicate,
            Reject::ClientAbort => Outcome::ClientAbort,
            Reject::UpstreamConnect { .. } => Outcome::UpstreamConnectError,
            Reject::UpstreamTimeout => Outcome::UpstreamTimeout,
            Reject::UpstreamBusy => Outcome::UpstreamBusy,
            Reject::Upstream { .. } => Outcome::UpstreamError,
            Reject::Internal => Outcome::Internal,
        }
    }

    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Reject::BadRequest { reason } => Some(reason),
            Reject::UnsupportedTransferCoding => Some("transfer_encoding"),
            Reject::TooManyHeaders => Some("too_many_headers"),
            Reject::UpstreamConnect { reason } => Some(reason),
            Reject::UpstreamTimeout => Some("timeout"),
            Reject::UpstreamBusy => Some("max_connections"),
            Reject::BodyTimeout => Some("body"),
            Reject::DuplicateInFlight => Some("in_flight"),
            Reject::RateLimited { scope, .. } => Some(scope),
            Reject::SignatureInvalid { reason, .. } => Some(reason),
            Reject::Upstream { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether a refusal made before the body was read may first read and drop a small body
    /// (`body::discard`): not when the framing itself is in doubt.
    pub fn allows_discarding_body(&self) -> bool {
        match self {
            Reject::BadRequest { reason } => *reason != "framing",
            Reject::TooManyHeaders
            | Reject::NoRoute
            | Reject::MethodNotAllowed { .. }
            | Reject::IpDenied
            | Reject::RateLimited { .. }
            | Reject::SignatureInvalid { .. } => true,
            _ => false,
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let text = status.canonical_reason().unwrap_or("client closed request");
        let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match &self {
            Reject::MethodNotAllowed { allow } => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    headers.insert(header::ALLOW, value);
                }
            }
            Reject::RateLimited {
                retry_after,
                policy,
                state,
                ..
            } => {
                for (name, value) in [
                    (header::RETRY_AFTER, retry_after),
                    (RATELIMIT_POLICY, policy),
                    (RATELIMIT, state),
                ] {
                    if let Ok(value) = HeaderValue::from_str(value) {
                        headers.insert(name, value);
                    }
                }
            }
            Reject::DuplicateInFlight | Reject::UpstreamBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Reject::BodyTimeout
            | Reject::ClientAbort
            | Reject::BadRequest { .. }
            | Reject::UnsupportedTransferCoding => {
                // The connection's framing can no longer be trusted.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
