//! The one place the gateway answers for itself: every refusal ([`Reject`]), handshake reply
//! and duplicate answer ([`GatewayAnswer`]) becomes its response here, with its status code, its
//! [`Outcome`] and `reason` for the log and metrics, and the short body the client sees. The body
//! never says which rule, secret or address failed; only the log does. Errors from hyper (a
//! refused head, a broken body, a protocol violation) are classified here too.
//!
//! It never decides *whether* to refuse: the stages do that.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Full, LengthLimitError};

use super::rate_limit::{RATELIMIT, RATELIMIT_POLICY};
use crate::verify::HandshakeReply;

pub use crate::observe::access_log::Outcome;

/// How a request ended when it was not forwarded: the gateway answered it itself.
#[derive(Debug)]
pub enum GatewayAnswer {
    /// A stage refused.
    Refuse(Reject),
    /// A provider handshake (a challenge echoed, a verification ping), never forwarded.
    Handshake(HandshakeReply),
    /// Stage 8: an event already delivered inside its window gets a 2xx, not a second delivery.
    Duplicate,
    /// hyper refused the request's head before the pipeline saw it (see [`RefusedHead`]).
    HeadRefused(RefusedHead),
    /// Stage 9 on a `delivery: queue` route: the event is durable in the spool; `status` is the
    /// route's `ack_status` (issue 16, `delivery::intake`).
    Queued { status: StatusCode },
    /// Stage 1: an ACME HTTP-01 validation request, answered with the token's key
    /// authorization, or 404 for a token no order has open (`acme_challenge`).
    AcmeChallenge { key_authorization: Option<String> },
}

impl From<Reject> for GatewayAnswer {
    fn from(reject: Reject) -> GatewayAnswer {
        GatewayAnswer::Refuse(reject)
    }
}

impl GatewayAnswer {
    pub fn outcome(&self) -> Outcome {
        match self {
            GatewayAnswer::Refuse(reject) => reject.outcome(),
            GatewayAnswer::Handshake(_) => Outcome::Handshake,
            GatewayAnswer::Duplicate => Outcome::Duplicate,
            GatewayAnswer::Queued { .. } => Outcome::Queued,
            GatewayAnswer::AcmeChallenge { .. } => Outcome::AcmeChallenge,
            GatewayAnswer::HeadRefused(refused) => refused.outcome(),
        }
    }

    pub fn reason(&self) -> Option<&'static str> {
        match self {
            GatewayAnswer::Refuse(reject) => reject.reason(),
            GatewayAnswer::Handshake(_)
            | GatewayAnswer::Duplicate
            | GatewayAnswer::Queued { .. } => None,
            GatewayAnswer::HeadRefused(refused) => Some(refused.reason),
            GatewayAnswer::AcmeChallenge { key_authorization } => {
                key_authorization.is_none().then_some("unknown_token")
            }
        }
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            GatewayAnswer::Refuse(reject) => reject.into_response(),
            GatewayAnswer::Handshake(reply) => handshake_response(reply),
            GatewayAnswer::Duplicate => {
                text_response(StatusCode::OK, "duplicate: already delivered\n")
            }
            GatewayAnswer::Queued { status } => text_response(status, "queued\n"),
            GatewayAnswer::AcmeChallenge { key_authorization } => match key_authorization {
                Some(text) => text_response(StatusCode::OK, text),
                None => text_response(StatusCode::NOT_FOUND, "Not Found\n"),
            },
            // hyper has answered (or closed) already; this response is only logged and counted.
            GatewayAnswer::HeadRefused(refused) => {
                let mut response = Response::new(Full::new(Bytes::new()));
                *response.status_mut() = refused.status;
                response
            }
        }
    }
}

fn handshake_response(reply: HandshakeReply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    if let Some(content_type) = reply.content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    // A challenge is echoed: no browser may read it as anything but text (Dropbox asks this).
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn text_response(status: StatusCode, text: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(text.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
    /// A `delivery: queue` route's spool is at `spool.max_bytes`: the sender should retry.
    SpoolFull,
    /// A spool commit failed; after that nothing is acknowledged until a restart.
    SpoolFailed,
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
            Reject::UpstreamBusy | Reject::SpoolFull | Reject::SpoolFailed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            Reject::SpoolFull => Outcome::SpoolFull,
            Reject::SpoolFailed => Outcome::SpoolError,
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
            Reject::SpoolFull => Some("max_bytes"),
            Reject::SpoolFailed => Some("commit"),
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
            Reject::SpoolFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            Reject::SpoolFailed => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
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

/// A request hyper refused before it reached the pipeline (malformed request line or headers,
/// a head over `max_header_size`, a head not finished within `header_timeout`): hyper has
/// answered 400 or 431, or closed the connection, and the request is still owed one log line
/// and metric. Clients that simply hang up are not requests and are not logged.
#[derive(Debug, Clone, Copy)]
pub struct RefusedHead {
    status: StatusCode,
    reason: &'static str,
}

impl RefusedHead {
    /// The refusal a connection error stands for, if it was one (and not a client leaving).
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Option<RefusedHead> {
        let error = error.downcast_ref::<hyper::Error>()?;
        let (status, reason) = if error.is_parse_too_large() {
            (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
            )
        } else if error.is_parse() {
            (StatusCode::BAD_REQUEST, "malformed")
        } else if error.is_timeout() {
            (StatusCode::REQUEST_TIMEOUT, "header_timeout")
        } else {
            return None;
        };
        Some(RefusedHead { status, reason })
    }

    /// A head that never finished within the header timeout (not a malformed one).
    pub fn is_timeout(&self) -> bool {
        self.reason == "header_timeout"
    }

    fn outcome(&self) -> Outcome {
        if self.is_timeout() {
            Outcome::Timeout
        } else {
            Outcome::BadRequest
        }
    }
}

/// What an error while reading a request body (stage 6) means: over the cap, a broken chunked
/// encoding (the client's fault), or else the client going away.
pub fn body_error(error: &(dyn std::error::Error + 'static)) -> Reject {
    if error.downcast_ref::<LengthLimitError>().is_some() {
        Reject::BodyTooLarge
    } else if is_malformed(error) {
        Reject::BadRequest { reason: "body" }
    } else {
        Reject::ClientAbort
    }
}

/// A broken chunked encoding (hyper reports it as an `InvalidInput`/`InvalidData` I/O error in
/// the body) is the client's fault; anything else while reading is the client going away.
fn is_malformed(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
        }
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// A connection error that is neither a refused request head (logged as a request) nor the
/// client going away: what is left are protocol violations, among them the abuse hyper's HTTP/2
/// layer answers with GOAWAY(ENHANCE_YOUR_CALM), such as rapid resets and endless header blocks.
pub fn is_protocol_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let Some(hyper_error) = error.downcast_ref::<hyper::Error>() else {
        return false;
    };
    let leaving_or_ours = hyper_error.is_parse()
        || hyper_error.is_timeout()
        || hyper_error.is_incomplete_message()
        || hyper_error.is_canceled()
        || hyper_error.is_closed()
        || hyper_error.is_user()
        || hyper_error.is_body_write_aborted()
        || hyper_error.is_shutdown();
    // An I/O error anywhere in the chain is the network or a client that hung up.
    let io =
        std::iter::successors(error.source(), |e| e.source()).any(|e| e.is::<std::io::Error>());
    !leaving_or_ours && !io
}
