//! Stage 9: sends the verified request to its upstream and brings the answer back, over a
//! pooled keep-alive HTTP/1.1 connection (the `upstream` client). The body goes out byte for byte;
//! hop-by-hop headers and any `X-Hookgate-*` header from outside are removed, and the gateway's
//! own headers added. It never retries: whether a retry is safe is the provider's decision,
//! made by resending.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Uri};
use http_body_util::Full;

use super::body::Frames;
use super::reject::Reject;
use crate::upstream::http1::{self as upstream_http1, RequestHead};
pub use crate::upstream::{Upstream, UpstreamBuildError, UpstreamError};

// The headers the gateway sets.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = crate::observe::request_id::HEADER;
const X_HOOKGATE_ROUTE: HeaderName = HeaderName::from_static("x-hookgate-route");
const X_HOOKGATE_VERIFIED: HeaderName = HeaderName::from_static("x-hookgate-verified");

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1). A static,
/// not a const: a const array of names is built, and dropped, at every use.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The client's headers the gateway writes itself: theirs never pass (nor any `X-Hookgate-*`).
static REPLACED: [HeaderName; 6] = [
    header::HOST,
    header::CONTENT_LENGTH,
    X_FORWARDED_HOST,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_REQUEST_ID,
];

/// What the gateway adds about the request it forwards.
pub struct Forwarding<'a> {
    /// `X-Hookgate-Route`: the route's name.
    pub route: Option<&'a HeaderValue>,
    pub upstream_path: Option<&'a str>,
    pub client_ip: IpAddr,
    pub tls: bool,
    pub request_id: &'a HeaderValue,
    /// `X-Hookgate-Verified`: the provider whose signature was verified.
    pub verified_by: Option<&'a HeaderValue>,
}

/// What came back, for the log and metrics.
pub struct Answer {
    pub response: http::Response<Full<Bytes>>,
    pub upstream_ms: f64,
}

pub async fn send(
    upstream: &Upstream,
    parts: request::Parts,
    body: Frames,
    fwd: &Forwarding<'_>,
) -> Result<Answer, Reject> {
    send_with(upstream, parts, body.as_slice(), body.len(), fwd, &[]).await
}

/// [`send`] for a body held as bytes (the delivery worker's, from the spool), with `extra`
/// headers written after the gateway's own (`Idempotency-Key`, `X-Hookgate-Attempt`, ...).
pub async fn send_with(
    upstream: &Upstream,
    parts: request::Parts,
    body: &[Bytes],
    body_len: u64,
    fwd: &Forwarding<'_>,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<Answer, Reject> {
    let target = upstream_target(upstream, &parts.uri, fwd.upstream_path)?;
    let mut head = RequestHead::new(&parts.method, &target, body_len);
    head.header(&header::HOST, upstream.host());
    forwarded_headers(&mut head, &parts.headers, &parts.uri, fwd);
    for (name, value) in extra {
        head.header(name, value);
    }
    let head = head.finish(&parts.method, body_len);

    let answer = upstream
        .send_head(head, body, &parts.method)
        .await
        .map_err(|e| refusal(&e))?;
    let mut response = answer.response;
    strip_hop_by_hop(response.headers_mut());
    response.headers_mut().remove(header::CONTENT_LENGTH);
    Ok(Answer {
        response: response.map(Full::new),
        upstream_ms: (answer.elapsed.as_secs_f64() * 1_000_000.0).round() / 1000.0,
    })
}

/// What the client is told when the upstream gave no answer: 502 when no connection could be
/// opened or the answer was unusable, 504 when none came in time, 503 when every allowed
/// connection was busy. The log's `reason` names the cause ([`UpstreamError::reason`]).
pub fn refusal(e: &UpstreamError) -> Reject {
    let reason = e.reason();
    match e {
        UpstreamError::Timeout(_) => Reject::UpstreamTimeout,
        UpstreamError::Busy => Reject::UpstreamBusy,
        _ if e.is_connect() => Reject::UpstreamConnect { reason },
        _ => Reject::Upstream { reason },
    }
}

/// Origin form, as HTTP/1.1 sends it: base path + (rewrite or original path) + original query.
fn upstream_target(
    upstream: &Upstream,
    original: &Uri,
    rewrite: Option<&str>,
) -> Result<String, Reject> {
    let path = rewrite.unwrap_or(original.path());
    let mut target = String::with_capacity(upstream.base_path().len() + path.len() + 32);
    target.push_str(upstream.base_path());
    target.push_str(path);
    if let Some(query) = original.query() {
        target.push('?');
        target.push_str(query);
    }
    if upstream_http1::is_origin_form(&target) {
        Ok(target)
    } else {
        Err(Reject::BadRequest { reason: "path" })
    }
}

/// The client's headers, as they came, less the hop-by-hop ones (and those its `Connection`
/// names) and [`REPLACED`]; then the gateway's own.
fn forwarded_headers(head: &mut RequestHead, headers: &HeaderMap, uri: &Uri, fwd: &Forwarding<'_>) {
    let connection_named = connection_named(headers);
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let several_cookies = cookies.nth(1).is_some();
    for (name, value) in headers {
        let passes = !HOP_BY_HOP.contains(name)
            && !REPLACED.contains(name)
            && !name.as_str().starts_with("x-hookgate-")
            && !connection_named.contains(name)
            && (!several_cookies || name != header::COOKIE);
        if passes {
            head.header(name, value);
        }
    }
    if several_cookies && !connection_named.contains(&header::COOKIE) {
        // HTTP/2 splits `cookie` into crumbs; an HTTP/1.1 backend gets them joined with "; "
        // into the one line it expects (RFC 9113 section 8.2.3).
        head.header_with(&header::COOKIE, |out| {
            for (i, crumb) in headers.get_all(header::COOKIE).iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"; ");
                }
                out.extend_from_slice(crumb.as_bytes());
            }
        });
    }
    if let Some(host) = headers.get(header::HOST) {
        head.header(&X_FORWARDED_HOST, host);
    } else if let Some(authority) = uri.authority() {
        // HTTP/2 carries the host in `:authority`.
        head.header_with(&X_FORWARDED_HOST, |out| {
            out.extend_from_slice(authority.as_str().as_bytes())
        });
    }
    // The client address as hookgate determined it. An untrusted caller's X-Forwarded-For is
    // replaced, never passed on, so the backend cannot be fooled by it.
    head.header_with(&X_FORWARDED_FOR, |out| {
        crate::observe::append_ip(out, fwd.client_ip)
    });
    head.header(
        &X_FORWARDED_PROTO,
        &HeaderValue::from_static(if fwd.tls { "https" } else { "http" }),
    );
    head.header(&X_REQUEST_ID, fwd.request_id);
    if let Some(route) = fwd.route {
        head.header(&X_HOOKGATE_ROUTE, route);
    }
    if let Some(provider) = fwd.verified_by {
        head.header(&X_HOOKGATE_VERIFIED, provider);
    }
}

/// The header names a message's `Connection` header lists: hop-by-hop too (none, mostly).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    upstream_http1::list_elements(headers, header::CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// Removes the hop-by-hop headers and any header the `Connection` header names. One scan of the
/// names finds those present (most responses carry just `Connection: keep-alive`); only they
/// are removed, not all nine looked up each time.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    if present.is_empty() {
        return;
    }
    present.extend(connection_named(headers));
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static ROUTE: HeaderValue = HeaderValue::from_static("github");
    static REQUEST_ID: HeaderValue = HeaderValue::from_static("req-1");

    fn fwd() -> Forwarding<'static> {
        Forwarding {
            route: Some(&ROUTE),
            upstream_path: None,
            client_ip: "203.0.113.9".parse().unwrap(),
            tls: true,
            request_id: &REQUEST_ID,
            verified_by: None,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    /// What the upstream receives of `headers`, parsed back from the head as written.
    fn forwarded(headers: HeaderMap) -> HeaderMap {
        let mut head = RequestHead::new(&http::Method::POST, "/hooks", 0);
        forwarded_headers(&mut head, &headers, &Uri::from_static("/hooks"), &fwd());
        let head = head.finish(&http::Method::POST, 0);
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut slots);
        assert!(parsed.parse(&head).unwrap().is_complete());
        parsed
            .headers
            .iter()
            .map(|h| {
                (
                    HeaderName::from_bytes(h.name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(h.value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn cookie_crumbs_are_joined_into_one_line() {
        let mut crumbs = headers(&[("cookie", "a=1")]);
        crumbs.append("cookie", HeaderValue::from_static("b=2"));
        crumbs.append("cookie", HeaderValue::from_static("c=3"));
        let out = forwarded(crumbs);
        let all: Vec<_> = out.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let one = forwarded(headers(&[("cookie", "a=1; b=2")]));
        assert_eq!(
            one.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2"]
        );
    }

    #[test]
    fn without_a_connection_header_the_other_hop_by_hop_headers_still_go() {
        let out = forwarded(headers(&[
            ("keep-alive", "timeout=5"),
            ("x-hookgate-route", "forged"),
            ("content-type", "application/json"),
        ]));
        assert!(out.get("keep-alive").is_none());
        assert_eq!(out["x-hookgate-route"], "github");
        assert_eq!(out.get_all("x-hookgate-route").iter().count(), 1);
        assert_eq!(out["content-type"], "application/json");
        let mut plain = headers(&[("content-type", "application/json")]);
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain.len(), 1);
    }

    #[test]
    fn an_answer_loses_its_hop_by_hop_headers_and_those_connection_names() {
        let mut answer = headers(&[
            ("connection", "keep-alive, x-upstream-private"),
            ("x-upstream-private", "1"),
            ("keep-alive", "timeout=75"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
        ]);
        answer.append("connection", HeaderValue::from_static("upgrade"));
        answer.insert("upgrade", HeaderValue::from_static("h2c"));
        strip_hop_by_hop(&mut answer);
        let left: Vec<_> = answer.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-type"]);
    }

    #[test]
    fn removes_hop_by_hop_and_outside_hookgate_headers_and_adds_forwarding_ones() {
        let out = forwarded(headers(&[
            ("host", "hooks.example.com"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("x-hookgate-verified", "github"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil.example"),
            ("x-request-id", "theirs"),
            ("content-length", "999"),
            ("x-hub-signature-256", "sha256=abc"),
        ]));
        for gone in ["connection", "x-secret-hop", "te", "x-hookgate-verified"] {
            assert!(out.get(gone).is_none(), "{gone}");
        }
        assert!(
            out.get("host").is_none(),
            "Host is the upstream's, written by send"
        );
        assert_eq!(
            out["content-length"], "0",
            "the body's length, not the client's"
        );
        for (name, value) in [
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-host", "hooks.example.com"),
            ("x-forwarded-proto", "https"),
            ("x-request-id", "req-1"),
            ("x-hookgate-route", "github"),
            ("x-hub-signature-256", "sha256=abc"),
        ] {
            let all: Vec<_> = out.get_all(name).iter().collect();
            assert_eq!(all, [value], "{name}: exactly one, the right one");
        }
    }
}
