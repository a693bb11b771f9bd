//! Request ids: keeps a well-formed `X-Request-Id` from the caller (so a trace can cross the
//! gateway), otherwise makes a new one. It never trusts an id that could break a log line.

use http::HeaderMap;

pub const HEADER: &str = "x-request-id";

/// The caller's id if it is 1-128 characters of `[A-Za-z0-9._:-]`, else a fresh UUIDv4.
pub fn from_headers(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_valid(id))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_clean_incoming_id_and_replaces_a_dirty_one() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, "abc-123_X.y:z".parse().unwrap());
        assert_eq!(from_headers(&headers), "abc-123_X.y:z");
        headers.insert(HEADER, "has space\"quote".parse().unwrap());
        let id = from_headers(&headers);
        assert_eq!(id.len(), 36, "{id}");
        headers.insert(HEADER, "a".repeat(129).parse().unwrap());
        assert_eq!(from_headers(&headers).len(), 36);
        assert_eq!(from_headers(&HeaderMap::new()).len(), 36);
    }
}
