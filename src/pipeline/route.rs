//! Stage 2: finds the route for a request. Routes match by path first: the first route in config
//! order whose path matches decides, and a method it does not allow is 405, never a later route.
//! It never decodes or rewrites the path: a path that could mean something else once decoded or
//! normalised upstream is refused instead (the path policy in README's "Path policy").

use std::borrow::Cow;
use std::collections::HashMap;

use http::Method;

use super::reject::Reject;
use crate::config::{prefix_candidates, PathPattern};
use crate::runtime::Route;

const BAD_PATH: Reject = Reject::BadRequest { reason: "path" };

/// Refuses requests whose meaning a backend could read differently from us (RFC 9112 sections
/// 3.2 and 6): HTTP/1.1 without exactly one `Host`, `Content-Length` next to `Transfer-Encoding`
/// (the classic smuggling pair), and transfer codings other than `chunked`.
pub fn check_framing(version: http::Version, headers: &http::HeaderMap) -> Result<(), Reject> {
    let hosts = headers.get_all(http::header::HOST).iter().count();
    if hosts > 1 || (version == http::Version::HTTP_11 && hosts == 0) {
        return Err(Reject::BadRequest { reason: "host" });
    }
    let mut codings = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .peekable();
    if codings.peek().is_some() {
        if headers.contains_key(http::header::CONTENT_LENGTH) {
            return Err(Reject::BadRequest { reason: "framing" });
        }
        let only_chunked = codings.all(|v| {
            v.to_str()
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
        });
        if !only_chunked {
            return Err(Reject::UnsupportedTransferCoding);
        }
    }
    Ok(())
}

/// Refuses a `Host` or `:authority` that is not a plain `host[:port]` (empty, with userinfo,
/// spaces or a path: it reaches the backend as `X-Forwarded-Host`), and a request carrying both
/// that name different hosts (RFC 9113 section 8.3.1 calls such an HTTP/2 request malformed).
pub fn check_host(uri: &http::Uri, headers: &http::HeaderMap) -> Result<(), Reject> {
    const BAD_HOST: Reject = Reject::BadRequest { reason: "host" };
    let host = headers.get(http::header::HOST).map(|h| h.as_bytes());
    let authority = uri.authority().map(|a| a.as_str().as_bytes());
    for name in host.iter().chain(authority.iter()) {
        if !is_host_and_port(name) {
            return Err(BAD_HOST);
        }
    }
    if let (Some(host), Some(authority)) = (host, authority) {
        if !host.eq_ignore_ascii_case(authority) {
            return Err(BAD_HOST);
        }
    }
    Ok(())
}

/// `host[:port]` with a DNS name, an IPv4 address or a bracketed IPv6 address, and no userinfo.
fn is_host_and_port(value: &[u8]) -> bool {
    let (host, port) = match value.iter().rposition(|&b| b == b':') {
        Some(i) if !value.ends_with(b"]") => (&value[..i], Some(&value[i + 1..])),
        _ => (value, None),
    };
    let port_ok =
        port.is_none_or(|p| (1..=5).contains(&p.len()) && p.iter().all(u8::is_ascii_digit));
    let host_ok = match host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => {
            (1..=253).contains(&host.len())
                && host
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        }
    };
    port_ok && host_ok
}

/// Holds an HTTP/2 head to `limits.max_headers`, as hyper holds an HTTP/1.1 head (431). The
/// `cookie` crumbs of RFC 9113 section 8.2.3 count as one field, as the one line they are
/// joined into for the backend.
pub fn check_header_count(
    version: http::Version,
    headers: &http::HeaderMap,
    max: usize,
) -> Result<(), Reject> {
    if version != http::Version::HTTP_2 {
        return Ok(());
    }
    let crumbs = headers.get_all(http::header::COOKIE).iter().count();
    if headers.len() - crumbs.saturating_sub(1) > max {
        return Err(Reject::TooManyHeaders);
    }
    Ok(())
}

/// Refuses paths whose meaning could change after our match (README "Path policy"): dot
/// segments and segments ending in `.`, empty segments, `\`, path parameters (`;`), bytes
/// outside printable ASCII, and `%` escapes that are broken or that a backend could decode into
/// something our match did not see: unreserved characters (`%68` for `h`), separators (`/`,
/// `\`, `;`, `?`, `#`, `.`), `%` itself (double encoding), whitespace, control and non-ASCII
/// bytes. Case and one trailing `/` are not refused: [`RouteTable::find_path`] matches them to
/// the route a backend would read them as.
pub fn check_path(path: &str) -> Result<(), Reject> {
    if !path.starts_with('/') || path.contains("//") {
        return Err(BAD_PATH);
    }
    // Dot segments, and segments ending in a dot: Windows servers (IIS, Kestrel on Windows)
    // drop trailing dots, so `/hooks/github.` would be `/hooks/github` to them.
    if path.split('/').any(|s| s.ends_with('.')) {
        return Err(BAD_PATH);
    }
    let bytes = path.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let decoded = bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                match decoded {
                    Some(d) if escape_allowed(d) => i += 3,
                    _ => return Err(BAD_PATH),
                }
            }
            b';' | b'\\' => return Err(BAD_PATH),
            0x21..=0x7e => i += 1,
            _ => return Err(BAD_PATH),
        }
    }
    Ok(())
}

/// Whether a `%XX` escape of `decoded` may stay in a path: only printable ASCII characters that
/// are neither unreserved (their escape means the same path) nor a separator of any kind.
fn escape_allowed(decoded: u8) -> bool {
    decoded.is_ascii_graphic()
        && !decoded.is_ascii_alphanumeric()
        && !matches!(
            decoded,
            b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';' | b'%' | b'?' | b'#'
        )
}

/// The routes in config order, indexed by exact path and by prefix (both lowercased) so a
/// lookup costs a few hash probes (one per path segment), not a scan: 10 000 routes cost what
/// 10 do.
pub struct RouteTable {
    routes: Vec<Route>,
    exact: HashMap<String, Vec<usize>>,
    prefix: HashMap<String, Vec<usize>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> RouteTable {
        let (mut exact, mut prefix) = (
            HashMap::<String, Vec<usize>>::new(),
            HashMap::<String, Vec<usize>>::new(),
        );
        for (i, route) in routes.iter().enumerate() {
            match &route.path {
                PathPattern::Exact(p) => exact.entry(p.to_ascii_lowercase()).or_default().push(i),
                PathPattern::Prefix(p) => prefix.entry(p.to_ascii_lowercase()).or_default().push(i),
            }
        }
        RouteTable {
            routes,
            exact,
            prefix,
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Route> {
        self.routes.iter()
    }

    /// The route for `path`, whatever the method: the first (in config order) whose path
    /// matches, compared without regard to ASCII case, an exact path also with one trailing `/`.
    pub fn find_path(&self, path: &str) -> Option<&Route> {
        let path: Cow<'_, str> = if path.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(path.to_ascii_lowercase())
        } else {
            Cow::Borrowed(path)
        };
        let path = path.as_ref();
        let without_slash = path.strip_suffix('/').filter(|p| !p.is_empty());
        let exact = std::iter::once(path)
            .chain(without_slash)
            .filter_map(|p| self.exact.get(p));
        let prefix = prefix_candidates(path).filter_map(|c| self.prefix.get(c));
        exact
            .chain(prefix)
            .filter_map(|hits| hits.first())
            .min()
            .and_then(|&i| self.routes.get(i))
    }

    /// [`RouteTable::find_path`], then [`check_method`]: routes match by path first, and a
    /// method the route does not allow is 405, never a later route.
    pub fn find(&self, method: &Method, path: &str) -> Result<&Route, Reject> {
        let route = self.find_path(path).ok_or(Reject::NoRoute)?;
        check_method(route, method)?;
        Ok(route)
    }
}

/// 405 with `Allow` when the route's methods do not include `method`.
pub fn check_method(route: &Route, method: &Method) -> Result<(), Reject> {
    if route.methods.contains(method) {
        return Ok(());
    }
    let allow = route
        .methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    Err(Reject::MethodNotAllowed { allow })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_ambiguous_framing_and_missing_or_doubled_host() {
        use http::{HeaderMap, Version};
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        let ok = headers(&[("host", "a"), ("transfer-encoding", "chunked")]);
        assert_eq!(check_framing(Version::HTTP_11, &ok), Ok(()));
        assert_eq!(
            check_framing(Version::HTTP_10, &headers(&[])),
            Ok(()),
            "HTTP/1.0 needs no Host"
        );
        assert_eq!(
            check_framing(Version::HTTP_2, &headers(&[])),
            Ok(()),
            "h2 uses :authority"
        );
        let bad = [
            (headers(&[]), Reject::BadRequest { reason: "host" }),
            (
                headers(&[("host", "a"), ("host", "b")]),
                Reject::BadRequest { reason: "host" },
            ),
            (
                headers(&[
                    ("host", "a"),
                    ("content-length", "3"),
                    ("transfer-encoding", "chunked"),
                ]),
                Reject::BadRequest { reason: "framing" },
            ),
            (
                headers(&[("host", "a"), ("transfer-encoding", "gzip, chunked")]),
                Reject::UnsupportedTransferCoding,
            ),
        ];
        for (h, want) in bad {
            assert_eq!(check_framing(Version::HTTP_11, &h), Err(want), "{h:?}");
        }
    }

    #[test]
    fn refuses_paths_that_could_escape_a_prefix_route() {
        for bad in [
            "/hooks/../admin",
            "/hooks/./x",
            "/hooks//x",
            "/hooks/%2e%2e/admin",
            "/hooks/%2F",
            "/a\\b",
            "/x%00",
        ] {
            assert_eq!(check_path(bad), Err(BAD_PATH), "{bad}");
        }
    }

    #[test]
    fn host_must_be_a_plain_host_and_port_and_agree_with_the_authority() {
        let host = |v: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert("host", http::HeaderValue::from_static(v));
            h
        };
        let origin = http::Uri::from_static("/hooks");
        for good in [
            "hooks.example.com",
            "hooks.example.com:8443",
            "127.0.0.1:80",
            "[::1]:8443",
            "[2001:db8::1]",
            "localhost",
        ] {
            assert_eq!(check_host(&origin, &host(good)), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a b/c",
            "user@evil.example",
            "a/b",
            "a:",
            "a:123456",
            "a:x",
            "::1",
            "[]",
            "a;b",
            "a%20b",
            "[::1]x",
        ] {
            assert!(check_host(&origin, &host(bad)).is_err(), "{bad:?}");
        }
        let h2 = http::Uri::from_static("https://hooks.example.com:8443/hooks");
        assert_eq!(check_host(&h2, &http::HeaderMap::new()), Ok(()));
        assert_eq!(check_host(&h2, &host("Hooks.Example.com:8443")), Ok(()));
        assert!(check_host(&h2, &host("other.example:8443")).is_err());
        assert!(check_host(&h2, &host("hooks.example.com")).is_err());
        let userinfo = http::Uri::from_static("https://user@evil.example/hooks");
        assert!(check_host(&userinfo, &http::HeaderMap::new()).is_err());
    }

    #[test]
    fn h2_heads_are_held_to_max_headers_with_cookie_crumbs_as_one() {
        let mut h = http::HeaderMap::new();
        for i in 0..5 {
            h.append(
                http::HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        for _ in 0..50 {
            h.append("cookie", http::HeaderValue::from_static("a=b"));
        }
        assert_eq!(check_header_count(http::Version::HTTP_2, &h, 6), Ok(()));
        assert_eq!(
            check_header_count(http::Version::HTTP_2, &h, 5),
            Err(Reject::TooManyHeaders)
        );
        assert_eq!(check_header_count(http::Version::HTTP_11, &h, 5), Ok(()));
    }

    /// The path policy, one row per kind of near miss (README "Path policy").
    #[test]
    fn path_policy_table() {
        let table: &[(&str, bool, &str)] = &[
            ("/", true, "root"),
            ("/hooks/github", true, "plain"),
            ("/hooks/a.b/c", true, "dot inside a segment"),
            (
                "/hooks/github.",
                false,
                "trailing dot (dropped by Windows servers)",
            ),
            ("/hooks/github./x", false, "segment ending in a dot"),
            (
                "/hooks/GitHub",
                true,
                "case: matched case-insensitively, not refused",
            ),
            (
                "/hooks/github/",
                true,
                "trailing slash: matched to the exact route",
            ),
            ("/hooks/a%21b", true, "escaped reserved character"),
            ("/hooks/a%40b%2C%3a", true, "escaped @ , :"),
            ("/hooks/github;x", false, "path parameter"),
            ("/hooks/github;", false, "empty path parameter"),
            ("/hooks/github%3Bx", false, "escaped ;"),
            ("/hooks/github%20", false, "escaped space"),
            ("/hooks/%20x", false, "escaped space inside"),
            ("/hooks/github%09", false, "escaped tab"),
            ("/hooks/git%68ub", false, "escaped unreserved letter"),
            ("/hooks/git%48ub", false, "escaped unreserved capital"),
            ("/hooks/github%7e", false, "escaped tilde"),
            ("/hooks/github%2d", false, "escaped hyphen"),
            ("/hooks/github%5f", false, "escaped underscore"),
            ("/hooks/github%2e", false, "escaped dot"),
            ("/hooks/github%252e", false, "double encoding"),
            ("/hooks/github%3f", false, "escaped ?"),
            ("/hooks/github%23", false, "escaped #"),
            ("/hooks/github%5C", false, "escaped backslash"),
            ("/hooks/github%", false, "truncated escape"),
            ("/hooks/github%2", false, "truncated escape"),
            ("/hooks/github%zz", false, "not hex"),
            ("/hooks/github%C4%B1", false, "non-ASCII escape (dotless i)"),
            ("/hooks/github%7F", false, "escaped DEL"),
            ("/hooks/gith\u{fc}b", false, "raw non-ASCII"),
            ("/hooks/git hub", false, "raw space"),
            ("/hooks/github\\", false, "raw backslash"),
            ("hooks/github", false, "no leading slash"),
        ];
        for &(path, ok, why) in table {
            let got = check_path(path);
            assert_eq!(got.is_ok(), ok, "{path:?} ({why}): {got:?}");
        }
    }

    fn route(name: &str, path: &str, methods: &[Method]) -> Route {
        use crate::config::{UpstreamConfig, UpstreamScheme};
        let upstream = UpstreamConfig {
            name: "backend".into(),
            scheme: UpstreamScheme::Http,
            authority: http::uri::Authority::from_static("127.0.0.1:9"),
            base_path: String::new(),
            timeout: std::time::Duration::from_secs(1),
            connect_timeout: std::time::Duration::from_secs(1),
            max_response: 1024,
            max_connections: 4,
            ca: Vec::new(),
        };
        let path = match path.strip_suffix("/*") {
            Some(p) => PathPattern::Prefix(p.into()),
            None => PathPattern::Exact(path.into()),
        };
        Route {
            name: name.into(),
            path,
            methods: methods.to_vec(),
            allowlist: None,
            limiter: None,
            verifier: None,
            replay_window: None,
            upstream: std::sync::Arc::new(
                crate::upstream::Upstream::new(&upstream, 1, &Default::default(), None).unwrap(),
            ),
            upstream_path: None,
            max_body: 1024,
            body_timeout: std::time::Duration::from_secs(1),
            headers: crate::runtime::RouteHeaders {
                route: None,
                verified_by: None,
            },
            series: Default::default(),
        }
    }

    /// Route precedence: by path first, in config order; the first route whose path matches
    /// decides, and its methods alone say whether the request is 405.
    #[test]
    fn route_precedence_table() {
        let table = RouteTable::new(vec![
            route("x", "/hooks/x", &[Method::POST]),
            route("github", "/hooks/github", &[Method::POST]),
            route("slashed", "/v2/", &[Method::POST]),
            route("files", "/hooks/files/*", &[Method::PUT]),
            route("catch-all", "/hooks/*", &[Method::GET, Method::POST]),
        ]);
        let cases: &[(Method, &str, Result<&str, &str>)] = &[
            (Method::POST, "/hooks/x", Ok("x")),
            (Method::GET, "/hooks/x", Err("405 POST")),
            (Method::GET, "/hooks/x/", Err("405 POST")),
            (Method::POST, "/hooks/X", Ok("x")),
            (Method::POST, "/hooks/GitHub", Ok("github")),
            (Method::POST, "/HOOKS/GITHUB/", Ok("github")),
            (Method::GET, "/hooks/GitHub", Err("405 POST")),
            (Method::POST, "/hooks/github/x", Ok("catch-all")),
            (Method::GET, "/hooks/files/a", Err("405 PUT")),
            (Method::PUT, "/Hooks/Files", Ok("files")),
            (Method::GET, "/hooks/other", Ok("catch-all")),
            (Method::GET, "/hooks", Ok("catch-all")),
            (Method::POST, "/v2/", Ok("slashed")),
            (Method::POST, "/v2", Err("404")),
            (Method::POST, "/hooksmith", Err("404")),
        ];
        for (method, path, want) in cases {
            let got = match table.find(method, path) {
                Ok(r) => Ok(&*r.name),
                Err(Reject::MethodNotAllowed { allow }) => Err(if allow == "POST" {
                    "405 POST"
                } else {
                    "405 PUT"
                }),
                Err(Reject::NoRoute) => Err("404"),
                Err(other) => panic!("{other:?}"),
            };
            assert_eq!(&got, want, "{method} {path}");
        }
    }
}
