//! Request ids: keeps a well-formed `X-Request-Id` from the caller (so a trace can cross the
//! gateway), otherwise makes a new one. It never trusts an id that could break a log line.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The caller's id if it is 1-128 characters of `[A-Za-z0-9._:-]`, else a fresh one. A header
/// value, since it goes out in two (to the upstream and back to the caller).
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(HEADER)
        .filter(|id| id.to_str().is_ok_and(is_valid))
        .cloned()
        .unwrap_or_else(new)
}

/// A fresh id: 64 random bits drawn once per process, then a counter (32 hex digits in all).
/// Unique across restarts and instances without a random draw, a syscall, per request.
pub fn new() -> HeaderValue {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Hex by hand: `format!` with padding costs more than the rest of the id put together.
    let value = (u128::from(prefix) << 64) | u128::from(count);
    let id: Vec<u8> = (0..32)
        .rev()
        .map(|digit| HEX[((value >> (digit * 4)) & 0xf) as usize])
        .collect();
    HeaderValue::from_maybe_shared(bytes::Bytes::from(id)).unwrap_or(HeaderValue::from_static("-"))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
        assert_eq!(id.len(), 32, "{id:?}");
        headers.insert(HEADER, "a".repeat(129).parse().unwrap());
        assert_eq!(from_headers(&headers).len(), 32);
        assert_ne!(
            from_headers(&HeaderMap::new()),
            from_headers(&HeaderMap::new()),
            "unique"
        );
    }
}
