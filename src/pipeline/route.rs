//! Stage 2: finds the route for a request. Routes are tried in config order and the first whose
//! path matches and whose methods include the request's wins. It never decodes or rewrites the
//! path: a path that could mean something else once decoded upstream is refused instead.

use http::Method;

use super::reject::Reject;
use crate::runtime::Route;

/// Refuses paths whose meaning could change after our match: dot segments, empty segments and
/// percent-encoded `.`, `/` or `\`. A backend that normalises `/hooks/../admin` must never get it.
pub fn check_path(path: &str) -> Result<(), Reject> {
    if !path.starts_with('/') || path.contains("//") || path.contains('\\') {
        return Err(Reject::BadPath);
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(Reject::BadPath);
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"]
        .iter()
        .any(|enc| lower.contains(enc))
    {
        return Err(Reject::BadPath);
    }
    Ok(())
}

/// The first route matching path and method; 405 with `Allow` when only the method is wrong.
pub fn find<'a>(routes: &'a [Route], method: &Method, path: &str) -> Result<&'a Route, Reject> {
    let mut allowed: Vec<&Method> = Vec::new();
    for route in routes.iter().filter(|r| r.path.matches(path)) {
        if route.methods.contains(method) {
            return Ok(route);
        }
        for method in &route.methods {
            if !allowed.contains(&method) {
                allowed.push(method);
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

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(check_path(bad), Err(Reject::BadPath), "{bad}");
        }
        for good in ["/", "/hooks/github", "/hooks/a.b/c", "/hooks/%20x"] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
    }
}
