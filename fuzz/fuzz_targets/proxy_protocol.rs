//! Fuzzes the PROXY protocol reader (`hookgate::server::proxy_protocol`): `parse_v1`, `parse_v2`
//! and `read_header` over a byte slice (an in-memory stream that is always ready).
//!
//! Checked beyond "never panics", for `read_header` on a stream holding the input:
//! - when it accepts, it consumed exactly one header and not a byte more (a v1 line up to and
//!   including its first CRLF; a v2 header of 16 + declared length bytes), and `parse_v1` or
//!   `parse_v2` on those bytes gives the same answer;
//! - when the input starts with a header that `parse_v1`/`parse_v2` accept, it accepts the same
//!   header and stops right after it (whatever bytes follow: the TLS hello or HTTP request).
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use hookgate::server::proxy_protocol::{
    parse_v1, parse_v2, read_header, ProxyError, ProxyHeader, V2_SIGNATURE,
};
use libfuzzer_sys::fuzz_target;

/// Runs `read_header` on `data`; returns the result and how many bytes it consumed.
fn read_from(data: &[u8]) -> (Result<ProxyHeader, ProxyError>, usize) {
    let mut stream: &[u8] = data;
    let result = {
        let mut fut = pin!(read_header(&mut stream));
        let mut cx = Context::from_waker(Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => r,
            // A byte slice never blocks: the reader has nothing to wait for.
            Poll::Pending => panic!("read_header is pending on an in-memory stream"),
        }
    };
    (result, data.len() - stream.len())
}

/// The header `parse_v1`/`parse_v2` accept at the start of `data`, with its length.
fn header_at_start(data: &[u8]) -> Option<(ProxyHeader, usize)> {
    match data.first()? {
        b'P' => {
            let pos = data.iter().position(|&b| b == b'\r' || b == b'\n')?;
            if data.get(pos..pos + 2)? != b"\r\n" {
                return None;
            }
            let len = pos + 2;
            parse_v1(&data[..len]).ok().map(|h| (h, len))
        }
        b'\r' => {
            if data.len() < 16 || data[..12] != V2_SIGNATURE {
                return None;
            }
            let len = 16 + usize::from(u16::from_be_bytes([data[14], data[15]]));
            parse_v2(data.get(..len)?).ok().map(|h| (h, len))
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let v1 = parse_v1(data);
    let v2 = parse_v2(data);
    if let Ok(h) = &v1 {
        // A whole-input v1 line that parses ends in CRLF and has no other CR or LF.
        assert!(
            data.ends_with(b"\r\n"),
            "parse_v1 accepted {data:?} as {h:?}"
        );
        assert!(
            !data[..data.len() - 2]
                .iter()
                .any(|&b| b == b'\r' || b == b'\n'),
            "parse_v1 accepted a CR/LF inside the line: {data:?}"
        );
    }
    if let Ok(h) = &v2 {
        let declared = 16 + usize::from(u16::from_be_bytes([data[14], data[15]]));
        assert_eq!(data.len(), declared, "parse_v2 accepted {data:?} as {h:?}");
    }

    let (read, consumed) = read_from(data);
    assert!(consumed <= data.len());
    let expected = header_at_start(data);
    match (&read, expected) {
        (Ok(got), Some((want, len))) => {
            assert_eq!(*got, want, "read_header and parse_v1/v2 disagree on {data:?}");
            assert_eq!(
                consumed, len,
                "read_header consumed {consumed} bytes of a {len}-byte header: {data:?}"
            );
        }
        (Ok(got), None) => panic!(
            "read_header accepted {got:?} after {consumed} bytes, but parse_v1/v2 accept no header at the start of {data:?}"
        ),
        (Err(e), Some((want, len))) => panic!(
            "read_header refused ({e}) the {len}-byte header {want:?} that parse_v1/v2 accept: {data:?}"
        ),
        (Err(_), None) => {}
    }
});
