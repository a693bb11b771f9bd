//! Stage 9: sends the verified request to its upstream and brings the answer back. One pooled
//! keep-alive client per upstream. The body goes out byte for byte; hop-by-hop headers and any
//! `X-Hookgate-*` header from outside are removed, and the gateway's own headers added. It never
//! retries: whether a retry is safe is the provider's decision, made by resending.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::reject::Reject;
use crate::config::{UpstreamConfig, UpstreamScheme};

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle pooled connections are closed after this; below common backend keep-alive timeouts
/// (nginx 75 s, Node 5 s is the outlier) so we rarely reuse a socket the backend just closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const POOL_MAX_IDLE_PER_HOST: usize = 256;

// The headers the gateway sets, as typed names (a `&str` name is parsed on every insert).
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = crate::observe::request_id::HEADER;
const X_HOOKGATE_ROUTE: HeaderName = HeaderName::from_static("x-hookgate-route");
const X_HOOKGATE_VERIFIED: HeaderName = HeaderName::from_static("x-hookgate-verified");

/// Headers that describe one connection, not the message (RFC 9110 section 7.6.1). Typed
/// names: removing by `&str` would parse the name again on every request.
const HOP_BY_HOP: [HeaderName; 9] = [
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

pub struct Upstream {
    pub name: Arc<str>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    base_path: String,
    timeout: Duration,
    max_response: usize,
    /// One pool per worker thread, so a request only ever uses connections that live on its
    /// own thread (see `server::workers`).
    clients: Box<[HttpClient]>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {message}")]
pub struct UpstreamBuildError {
    name: String,
    message: String,
}

impl Upstream {
    /// An upstream with a connection pool for each of `workers` threads.
    pub fn new(config: &UpstreamConfig, workers: usize) -> Result<Upstream, UpstreamBuildError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if config.ca.is_empty() {
            builder
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| build_error(config, e))?
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in &config.ca {
                roots
                    .add(cert.clone())
                    .map_err(|e| build_error(config, e))?;
            }
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| build_error(config, e))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(tls)
        };
        let connector = builder
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let clients = (0..workers.max(1))
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                    .build(connector.clone())
            })
            .collect();
        Ok(Upstream {
            name: config.name.as_str().into(),
            scheme: match config.scheme {
                UpstreamScheme::Http => http::uri::Scheme::HTTP,
                UpstreamScheme::Https => http::uri::Scheme::HTTPS,
            },
            authority: config.authority.clone(),
            base_path: config.base_path.clone(),
            timeout: config.timeout,
            max_response: usize::try_from(config.max_response).unwrap_or(usize::MAX),
            clients,
        })
    }
}

impl Upstream {
    /// The calling worker's pool (the first one off the worker threads).
    fn client(&self) -> &HttpClient {
        let index = crate::server::workers::current().unwrap_or(0);
        &self.clients[index % self.clients.len()]
    }
}

fn build_error(config: &UpstreamConfig, e: impl std::fmt::Display) -> UpstreamBuildError {
    UpstreamBuildError {
        name: config.name.clone(),
        message: e.to_string(),
    }
}

/// What the gateway adds about the request it forwards.
pub struct Forwarding<'a> {
    pub route: &'a str,
    pub upstream_path: Option<&'a str>,
    pub client_ip: IpAddr,
    pub tls: bool,
    pub request_id: &'a str,
    /// The provider whose signature was verified, for `X-Hookgate-Verified`.
    pub verified_by: Option<&'a str>,
}

/// What came back, for the log and metrics.
pub struct Answer {
    pub response: Response<Full<Bytes>>,
    pub upstream_ms: f64,
}

pub async fn send(
    upstream: &Upstream,
    parts: request::Parts,
    body: Bytes,
    fwd: &Forwarding<'_>,
) -> Result<Answer, Reject> {
    let uri = upstream_uri(upstream, &parts.uri, fwd.upstream_path)?;
    let mut request = Request::new(Full::new(body));
    *request.headers_mut() = upstream_headers(parts.headers, &parts.uri, fwd);
    *request.method_mut() = parts.method;
    *request.uri_mut() = uri;

    let started = Instant::now();
    let exchange = async {
        let response = upstream.client().request(request).await.map_err(|e| {
            if e.is_connect() {
                Reject::UpstreamConnect
            } else {
                Reject::Upstream { reason: "reset" }
            }
        })?;
        let (mut head, body) = response.into_parts();
        let body = Limited::new(body, upstream.max_response)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    Reject::Upstream {
                        reason: "response_too_large",
                    }
                } else {
                    Reject::Upstream { reason: "reset" }
                }
            })?
            .to_bytes();
        strip_hop_by_hop(&mut head.headers);
        head.headers.remove(header::CONTENT_LENGTH);
        Ok::<_, Reject>(Response::from_parts(head, Full::new(body)))
    };
    let response = tokio::time::timeout(upstream.timeout, exchange)
        .await
        .map_err(|_| Reject::UpstreamTimeout)??;
    Ok(Answer {
        response,
        upstream_ms: (started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0,
    })
}

/// `scheme://authority` + base path + (rewrite or original path) + original query.
fn upstream_uri(upstream: &Upstream, original: &Uri, rewrite: Option<&str>) -> Result<Uri, Reject> {
    let path = rewrite.unwrap_or(original.path());
    let mut path_and_query = String::with_capacity(upstream.base_path.len() + path.len() + 32);
    path_and_query.push_str(&upstream.base_path);
    path_and_query.push_str(path);
    if let Some(query) = original.query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| Reject::BadRequest { reason: "path" })
}

fn upstream_headers(mut headers: HeaderMap, uri: &Uri, fwd: &Forwarding<'_>) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    let outside_claims: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-hookgate-"))
        .cloned()
        .collect();
    for name in outside_claims {
        headers.remove(name);
    }
    let original_host = headers.remove(header::HOST).or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host);
    }
    // The client address as hookgate determined it. An untrusted caller's X-Forwarded-For is
    // replaced, never passed on, so the backend cannot be fooled by it.
    if let Ok(ip) = HeaderValue::from_str(&fwd.client_ip.to_string()) {
        headers.insert(X_FORWARDED_FOR, ip);
    }
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if fwd.tls { "https" } else { "http" }),
    );
    if let Ok(id) = HeaderValue::from_str(fwd.request_id) {
        headers.insert(X_REQUEST_ID, id);
    }
    if let Ok(route) = HeaderValue::from_str(fwd.route) {
        headers.insert(X_HOOKGATE_ROUTE, route);
    }
    if let Some(provider) = fwd.verified_by.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(X_HOOKGATE_VERIFIED, provider);
    }
    headers
}

/// Removes the fixed hop-by-hop headers and any header the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd() -> Forwarding<'static> {
        Forwarding {
            route: "github",
            upstream_path: None,
            client_ip: "203.0.113.9".parse().unwrap(),
            tls: true,
            request_id: "req-1",
            verified_by: None,
        }
    }

    #[test]
    fn removes_hop_by_hop_and_outside_hookgate_headers_and_adds_forwarding_ones() {
        let mut h = HeaderMap::new();
        h.insert("host", "hooks.example.com".parse().unwrap());
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("x-hookgate-verified", "github".parse().unwrap());
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("x-hub-signature-256", "sha256=abc".parse().unwrap());
        let out = upstream_headers(h, &Uri::from_static("/hooks"), &fwd());
        assert!(out.get("connection").is_none());
        assert!(out.get("x-secret-hop").is_none());
        assert!(out.get("te").is_none());
        assert!(
            out.get("host").is_none(),
            "the client sets Host from the upstream URL"
        );
        assert!(out.get("x-hookgate-verified").is_none());
        assert_eq!(out["x-forwarded-for"], "203.0.113.9");
        assert_eq!(out["x-forwarded-host"], "hooks.example.com");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-request-id"], "req-1");
        assert_eq!(out["x-hookgate-route"], "github");
        assert_eq!(
            out["x-hub-signature-256"], "sha256=abc",
            "signature headers pass through"
        );
    }
}
