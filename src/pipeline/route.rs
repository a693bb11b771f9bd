//! Stage 2: finds the route for a request. Routes are tried in config order and the first whose
//! path matches and whose methods include the request's wins. It never decodes or rewrites the
//! path: a path that could mean something else once decoded upstream is refused instead.

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

/// Refuses paths whose meaning could change after our match: dot segments, empty segments and
/// percent-encoded `.`, `/` or `\`. A backend that normalises `/hooks/../admin` must never get it.
pub fn check_path(path: &str) -> Result<(), Reject> {
    if !path.starts_with('/') || path.contains("//") || path.contains('\\') {
        return Err(BAD_PATH);
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(BAD_PATH);
    }
    // An encoded dot, slash, backslash or NUL could mean another path to the backend.
    let bytes = path.as_bytes();
    let encoded_separator = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && bytes.get(i + 1..i + 3).is_some_and(|code| {
                let code = [code[0].to_ascii_lowercase(), code[1].to_ascii_lowercase()];
                matches!(&code, b"2e" | b"2f" | b"5c" | b"00")
            })
    });
    if encoded_separator {
        return Err(BAD_PATH);
    }
    Ok(())
}

/// The routes in config order, indexed by exact path and by prefix so a lookup costs a few
/// hash probes (one per path segment), not a scan: 10 000 routes cost what 10 do.
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
                PathPattern::Exact(p) => exact.entry(p.clone()).or_default().push(i),
                PathPattern::Prefix(p) => prefix.entry(p.clone()).or_default().push(i),
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

    /// The first route (in config order) matching path and method; 405 with `Allow` when only
    /// the method is wrong.
    pub fn find(&self, method: &Method, path: &str) -> Result<&Route, Reject> {
        let mut matching: Vec<usize> = self
            .exact
            .get(path)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for candidate in prefix_candidates(path) {
            matching.extend(self.prefix.get(candidate).into_iter().flatten().copied());
        }
        matching.sort_unstable();
        let mut allowed: Vec<&Method> = Vec::new();
        for route in matching.iter().filter_map(|&i| self.routes.get(i)) {
            if route.methods.contains(method) {
                return Ok(route);
            }
            for m in &route.methods {
                if !allowed.contains(&m) {
                    allowed.push(m);
                }
            }
        }
        if allowed.is_empty() {
            return Err(Reject::NoRoute);
        }
        let allow = allowed
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Err(Reject::MethodNotAllowed { allow })
    }
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
        for good in ["/", "/hooks/github", "/hooks/a.b/c", "/hooks/%20x"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
    }
}
