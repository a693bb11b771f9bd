//! Pieces of a JSON log line written by hand (the access log's and the delivery attempts'):
//! serde_json escaping every key of every line was half of a line's cost. Every value that
//! may need escaping still goes through serde_json.

use std::cell::RefCell;
use std::time::SystemTime;

/// `,"name":` then the value as JSON (numbers, strings: serde_json cannot fail on these).
pub fn value<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
    out.push(b',');
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A string value. One that JSON needs no escape for (no control character, quote or
/// backslash: nearly every value) is copied as it is, which is what serde_json would write for
/// it; any other goes through serde_json.
pub fn text(out: &mut Vec<u8>, name: &str, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":\"");
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        value(out, name, text);
    }
}

thread_local! {
    /// The last second formatted on this thread, `2026-11-27T12:49:32`: a busy worker formats
    /// each second's date once, not once per line.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `2026-11-27T12:49:32.123Z`.
pub fn write_rfc3339_millis(out: &mut Vec<u8>, ts: SystemTime) {
    use std::fmt::Write as _;
    let since_epoch = ts.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let millis = since_epoch.subsec_millis();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != since_epoch.as_secs() {
            *second = since_epoch.as_secs();
            text.clear();
            // humantime refuses years past 9999 (a clock gone wrong); the line still goes out.
            if write!(text, "{}", humantime::format_rfc3339_seconds(ts)).is_err() {
                text.clear();
                text.push_str("9999-12-31T23:59:59Z");
            }
            text.pop(); // the `Z`, which goes after the milliseconds
        }
        out.extend_from_slice(text.as_bytes());
    });
    out.push(b'.');
    for digit in [millis / 100, millis / 10 % 10, millis % 10] {
        out.push(b'0' + digit as u8);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn formatted(ts: SystemTime) -> String {
        let mut out = Vec::new();
        write_rfc3339_millis(&mut out, ts);
        format!("\"{}\"", String::from_utf8(out).unwrap())
    }

    #[test]
    fn text_is_written_as_serde_json_writes_it() {
        for sample in [
            "",
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "new\nline\ttab\u{1}",
            "del\u{7f}",
            "ünïcödé ✓",
            "</script>",
        ] {
            let mut out = Vec::new();
            text(&mut out, "a", sample);
            let expected = format!(",\"a\":{}", serde_json::to_string(sample).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn a_clock_past_year_9999_still_gives_a_line() {
        let far = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let mut out = Vec::new();
        write_rfc3339_millis(&mut out, far);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("9999-12-31T23:59:59."));
    }

    #[test]
    fn timestamps_match_rfc3339_with_millis_across_the_per_second_cache() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for offset_ms in [0, 5, 999, 1_000, 1_042, 61_007, 86_400_000, 5] {
            let ts = base + Duration::from_millis(offset_ms);
            let expected = format!("\"{}\"", humantime::format_rfc3339_millis(ts));
            assert_eq!(formatted(ts), expected, "{offset_ms} ms");
        }
    }
}
