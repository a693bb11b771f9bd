//! Fuzzes client IP resolution (`hookgate::pipeline::client_ip::resolve_client_ip_with`): the
//! X-Forwarded-For and RFC 7239 Forwarded parsers and the right-to-left walk over trusted hops.
//!
//! Input, one item a line: the peer address; the trusted proxies (CIDRs separated by spaces or
//! commas); `xff` or `forwarded`; then each remaining line is one header line (any bytes).
//!
//! Checked beyond "never panics":
//! - an untrusted peer is the client, whatever the headers say; no header: the peer;
//! - the answer is normalised (never IPv4-mapped IPv6);
//! - an untrusted answer does not change when a client prepends another header line (anything
//!   left of the first untrusted hop is the client's own writing and must not matter).
#![no_main]

use std::net::IpAddr;

use hookgate::ipset::{normalize_ip, parse_cidr, IpTable};
use hookgate::pipeline::client_ip::{resolve_client_ip, resolve_client_ip_with, ForwardedHeader};
use http::header::{HeaderMap, HeaderName, HeaderValue, FORWARDED};
use libfuzzer_sys::fuzz_target;

/// What a client could put left of the real chain: garbage, `unknown`, an address, quotes.
const SPOOF: &[u8] = b"203.0.113.66, unknown, for=\"[2001:db8::66]:1\";by=x, \"garbage";

fn build(name: &HeaderName, lines: &[&[u8]]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(name.clone(), v);
        }
    }
    headers
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let (Some(peer), Some(trusted), Some(kind)) = (lines.next(), lines.next(), lines.next()) else {
        return;
    };
    let Some(peer) = std::str::from_utf8(peer)
        .ok()
        .and_then(|p| p.trim().parse::<IpAddr>().ok())
    else {
        return;
    };
    let Ok(trusted) = std::str::from_utf8(trusted) else {
        return;
    };
    let trusted = IpTable::new(
        trusted
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .filter_map(|s| parse_cidr(s).ok()),
    );
    let (kind, name) = match kind {
        b"forwarded" => (ForwardedHeader::Forwarded, FORWARDED),
        _ => (
            ForwardedHeader::XForwardedFor,
            HeaderName::from_static("x-forwarded-for"),
        ),
    };
    let header_lines: Vec<&[u8]> = lines.collect();
    let headers = build(&name, &header_lines);

    let client = resolve_client_ip_with(peer, &headers, &trusted, kind);
    let peer_n = normalize_ip(peer);
    assert_eq!(
        normalize_ip(client),
        client,
        "answer {client} is not normalised"
    );
    if !trusted.contains(peer) {
        assert_eq!(
            client, peer_n,
            "untrusted peer {peer} but the answer is {client}"
        );
    }
    if headers.is_empty() {
        assert_eq!(
            client, peer_n,
            "no {name} header but the answer is {client}"
        );
    }
    if kind == ForwardedHeader::XForwardedFor {
        assert_eq!(client, resolve_client_ip(peer, &headers, &trusted));
    }
    if !trusted.contains(client) {
        let mut spoofed_lines = vec![SPOOF];
        spoofed_lines.extend(header_lines.iter().copied());
        let spoofed = build(&name, &spoofed_lines);
        let again = resolve_client_ip_with(peer, &spoofed, &trusted, kind);
        assert_eq!(
            again, client,
            "a header line prepended by the client changed the answer from {client} to {again}"
        );
    }
});
