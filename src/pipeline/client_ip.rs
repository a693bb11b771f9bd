//! Stage 3, client IP: decides which address a request comes from. By default the socket peer;
//! only when the peer is a trusted proxy, the forwarding header that proxy appends
//! (`X-Forwarded-For`, or RFC 7239 `Forwarded: for=`), read right to left.
//!
//! It must never believe a forwarding header from an untrusted peer, never take the left-most
//! entry of a chain that has untrusted hops (anyone can write it), never refuse a request (it
//! always yields an address), and never look at anything but the peer, the headers
//! and the trusted table.
//!
//! The rule, in full:
//! 1. `peer` (normalised: IPv4-mapped IPv6 becomes IPv4) is not in `trusted`: it is the client.
//! 2. Otherwise the chosen header's entries (all header lines, in order, each a comma list;
//!    empty list elements ignored) are read from the right. A trusted address is a proxy: go on
//!    to its left. The first untrusted address is the client.
//! 3. An entry that gives no usable address (not an IP, `unknown`, an obfuscated `_name`, a
//!    `Forwarded` element without `for=`, bad syntax, non-ASCII bytes) stops the walk: the client
//!    is the last good address, i.e. the trusted hop that handed us that entry (the peer when
//!    the garbage is the right-most entry). A trusted proxy's address as the client fails closed:
//!    it is in no allowlist and all such requests share one rate-limit bucket.
//! 4. Every entry trusted (a chain of our own proxies): the left-most address.
//! 5. No header: the peer.
//!
//! Addresses may carry a port (`192.0.2.1:4711`, `[2001:db8::1]:4711`); IPv6 may be bracketed.
//!
//! Which header: a proxy appends to one of the two. Reading the other would let a client write
//! its own "client address" there, so the header is chosen by config ([`ForwardedHeader`]);
//! [`resolve_client_ip`] reads `X-Forwarded-For`, which nginx, HAProxy, cloud load balancers and
//! CDNs append by default.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, FORWARDED};

use crate::ipset::{normalize_ip, IpTable};

/// `X-Forwarded-For` (not among `http`'s constants).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub use crate::config::ForwardedHeader;

/// IPv4-mapped IPv6 (`::ffff:192.0.2.1`) becomes IPv4; other addresses are unchanged.
pub fn normalize(ip: IpAddr) -> IpAddr {
    normalize_ip(ip)
}

/// The client address, reading `X-Forwarded-For` when the peer is trusted (see the module rule).
pub fn resolve_client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &IpTable) -> IpAddr {
    resolve_client_ip_with(peer, headers, trusted, ForwardedHeader::XForwardedFor)
}

/// The client address, reading the given forwarding header when the peer is trusted.
pub fn resolve_client_ip_with(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &IpTable,
    header: ForwardedHeader,
) -> IpAddr {
    let peer = normalize(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let name = match header {
        ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
        ForwardedHeader::Forwarded => FORWARDED,
    };
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for line in headers.get_all(&name) {
        match header {
            ForwardedHeader::XForwardedFor => xff_hops(line.as_bytes(), &mut hops),
            ForwardedHeader::Forwarded => forwarded_hops(line.as_bytes(), &mut hops),
        }
    }
    let mut last_good = peer;
    for hop in hops.iter().rev() {
        match hop {
            None => return last_good,
            Some(ip) => {
                let ip = normalize(*ip);
                if !trusted.contains(ip) {
                    return ip;
                }
                last_good = ip;
            }
        }
    }
    last_good
}

/// One `X-Forwarded-For` line: comma-separated addresses; empty elements are skipped.
fn xff_hops(line: &[u8], hops: &mut Vec<Option<IpAddr>>) {
    for element in line.split(|&b| b == b',') {
        let element = trim_ows(element);
        if element.is_empty() {
            continue;
        }
        hops.push(std::str::from_utf8(element).ok().and_then(parse_node_addr));
    }
}

/// One `Forwarded` line: comma-separated elements of `;`-separated `name=value` pairs, values
/// tokens or quoted strings (which may contain `,` and `;`). Each element is one hop; its
/// address is the `for` parameter. Unbalanced quotes make the rest of the line one bad hop.
fn forwarded_hops(line: &[u8], hops: &mut Vec<Option<IpAddr>>) {
    let mut rest = line;
    while !rest.is_empty() {
        let (element, tail, balanced) = split_unquoted(rest, b',');
        rest = tail;
        let element = trim_ows(element);
        if !balanced {
            hops.push(None);
            return;
        }
        if element.is_empty() {
            continue;
        }
        hops.push(forwarded_for(element));
    }
}

/// The address in one `Forwarded` element's `for=` parameter, or None when unusable.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut rest = element;
    let mut found: Option<Option<IpAddr>> = None;
    while !rest.is_empty() {
        let (pair, tail, _) = split_unquoted(rest, b';');
        rest = tail;
        let pair = trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let mut halves = pair.splitn(2, |&b| b == b'=');
        let (name, value) = (trim_ows(halves.next()?), trim_ows(halves.next()?));
        if !name.eq_ignore_ascii_case(b"for") {
            continue;
        }
        if found.is_some() {
            return None; // two `for` in one element: ambiguous
        }
        let value = unquote(value)?;
        found = Some(std::str::from_utf8(&value).ok().and_then(parse_node_addr));
    }
    found.flatten()
}

/// Splits at the first `sep` outside a quoted string; returns (before, after, quotes balanced).
fn split_unquoted(input: &[u8], sep: u8) -> (&[u8], &[u8], bool) {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in input.iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            let (before, after) = input.split_at(i);
            return (before, after.get(1..).unwrap_or_default(), true);
        }
    }
    (input, &[], !in_quotes)
}

/// A token as is, or a quoted string without its quotes and escapes.
fn unquote(value: &[u8]) -> Option<Vec<u8>> {
    match value {
        [b'"', inner @ .., b'"'] => {
            let mut out = Vec::with_capacity(inner.len());
            let mut escaped = false;
            for &b in inner {
                if escaped {
                    out.push(b);
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    return None;
                } else {
                    out.push(b);
                }
            }
            if escaped {
                None
            } else {
                Some(out)
            }
        }
        v if v.contains(&b'"') => None,
        v => Some(v.to_vec()),
    }
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:4711`.
/// `unknown`, `_obfuscated` and anything else: None.
fn parse_node_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = s.strip_prefix('[') {
        let (addr, after) = inner.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        return addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (addr, port) = s.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::parse_cidr;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn trusted(list: &[&str]) -> IpTable {
        list.iter().map(|s| parse_cidr(s).unwrap()).collect()
    }
    fn headers(name: &HeaderName, lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(name.clone(), HeaderValue::from_str(l).unwrap());
        }
        h
    }
    fn xff(peer: &str, lines: &[&str]) -> IpAddr {
        let t = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        resolve_client_ip(ip(peer), &headers(&X_FORWARDED_FOR, lines), &t)
    }
    fn fwd(peer: &str, lines: &[&str]) -> IpAddr {
        let t = trusted(&["10.0.0.0/8", "2001:db8:ffff::/48"]);
        resolve_client_ip_with(
            ip(peer),
            &headers(&FORWARDED, lines),
            &t,
            ForwardedHeader::Forwarded,
        )
    }

    #[test]
    fn xff_table() {
        // (peer, header lines, expected client, why)
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], &str, &str)] = &[
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9", "untrusted peer: header ignored"),
            ("10.0.0.1", &[], "10.0.0.1", "trusted peer without header: the peer"),
            ("10.0.0.1", &["198.51.100.1"], "198.51.100.1", "one proxy"),
            ("10.0.0.1", &["198.51.100.1, 10.0.0.2"], "198.51.100.1", "two trusted proxies"),
            ("10.0.0.1", &["1.1.1.1, 198.51.100.1"], "198.51.100.1", "spoofed left-most entry ignored"),
            ("10.0.0.1", &["1.1.1.1, 2.2.2.2, 198.51.100.1, 10.0.0.3"], "198.51.100.1", "several spoofed entries"),
            ("10.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3", "all trusted: left-most"),
            ("10.0.0.1", &["garbage, 198.51.100.1"], "198.51.100.1", "garbage left of the client is never reached"),
            ("10.0.0.1", &["198.51.100.1, garbage, 10.0.0.2"], "10.0.0.2", "garbage: the trusted hop that handed it over"),
            ("10.0.0.1", &["198.51.100.1, nonsense"], "10.0.0.1", "right-most garbage: the peer"),
            ("10.0.0.1", &["198.51.100.1, unknown"], "10.0.0.1", "unknown is garbage"),
            ("10.0.0.1", &["198.51.100.1,,  ,10.0.0.2,"], "198.51.100.1", "empty elements skipped"),
            ("10.0.0.1", &["198.51.100.1:4711"], "198.51.100.1", "v4 with port"),
            ("10.0.0.1", &["2001:db8::7"], "2001:db8::7", "bare v6"),
            ("10.0.0.1", &["[2001:db8::7]:443"], "2001:db8::7", "bracketed v6 with port"),
            ("10.0.0.1", &["[2001:db8::7]"], "2001:db8::7", "bracketed v6"),
            ("10.0.0.1", &["[2001:db8::7]x"], "10.0.0.1", "junk after brackets is garbage"),
            ("10.0.0.1", &["198.51.100.1:"], "10.0.0.1", "empty port is garbage"),
            ("10.0.0.1", &["198.51.100.1:70000"], "10.0.0.1", "port out of range is garbage"),
            ("10.0.0.1", &["::ffff:198.51.100.1"], "198.51.100.1", "mapped v4 entry normalised"),
            ("10.0.0.1", &["198.51.100.1, ::ffff:10.0.0.2"], "198.51.100.1", "mapped trusted hop recognised"),
            ("::ffff:10.0.0.1", &["198.51.100.1"], "198.51.100.1", "mapped trusted peer recognised"),
            ("::ffff:203.0.113.9", &["198.51.100.1"], "203.0.113.9", "mapped untrusted peer normalised"),
            ("2001:db8:ffff::1", &["198.51.100.1, 2001:db8:ffff::2"], "198.51.100.1", "v6 proxies"),
            ("10.0.0.1", &["1.1.1.1", "198.51.100.1, 10.0.0.2"], "198.51.100.1", "lines read in order"),
            ("10.0.0.1", &["198.51.100.1", "10.0.0.2", "10.0.0.3"], "198.51.100.1", "one hop per line"),
            ("10.0.0.1", &["9.9.9.9, 198.51.100.1", "nonsense"], "10.0.0.1", "garbage in the last line"),
        ];
        for (peer, lines, want, why) in cases {
            assert_eq!(
                xff(peer, lines),
                ip(want),
                "{why}: peer {peer} xff {lines:?}"
            );
        }
    }

    #[test]
    fn ignores_spoofed_leftmost_xff_entry() {
        assert_eq!(
            xff("10.0.0.1", &["127.0.0.1, 203.0.113.50"]),
            ip("203.0.113.50")
        );
    }

    #[test]
    fn ignores_xff_from_untrusted_peer() {
        assert_eq!(xff("203.0.113.50", &["10.0.0.9"]), ip("203.0.113.50"));
    }

    #[test]
    fn with_no_trusted_proxies_the_peer_is_always_the_client() {
        let h = headers(&X_FORWARDED_FOR, &["198.51.100.1"]);
        assert_eq!(
            resolve_client_ip(ip("10.0.0.1"), &h, &IpTable::empty()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn non_ascii_xff_entry_stops_the_walk() {
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.1, \xff\xfe, 10.0.0.2").unwrap(),
        );
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(resolve_client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.2"));
    }

    #[test]
    fn xff_is_not_read_when_forwarded_is_configured_and_vice_versa() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&X_FORWARDED_FOR, &["198.51.100.1"]);
        assert_eq!(
            resolve_client_ip_with(ip("10.0.0.1"), &h, &t, ForwardedHeader::Forwarded),
            ip("10.0.0.1")
        );
        let h = headers(&FORWARDED, &["for=198.51.100.1"]);
        assert_eq!(resolve_client_ip(ip("10.0.0.1"), &h, &t), ip("10.0.0.1"));
    }

    #[test]
    fn forwarded_table() {
        #[rustfmt::skip]
        let cases: &[(&str, &[&str], &str, &str)] = &[
            ("203.0.113.9", &["for=198.51.100.1"], "203.0.113.9", "untrusted peer: header ignored"),
            ("10.0.0.1", &["for=198.51.100.1"], "198.51.100.1", "token"),
            ("10.0.0.1", &["For=198.51.100.1"], "198.51.100.1", "parameter name is case-insensitive"),
            ("10.0.0.1", &["for=\"198.51.100.1:4711\""], "198.51.100.1", "quoted v4 with port"),
            ("10.0.0.1", &["for=\"[2001:db8:cafe::17]:4711\""], "2001:db8:cafe::17", "quoted v6 with port"),
            ("10.0.0.1", &["for=\"[2001:db8:cafe::17]\""], "2001:db8:cafe::17", "quoted v6"),
            ("10.0.0.1", &["for=198.51.100.1;proto=https;by=10.0.0.1"], "198.51.100.1", "other parameters"),
            ("10.0.0.1", &["proto=https; for=198.51.100.1 ;host=x"], "198.51.100.1", "for not first, spaces"),
            ("10.0.0.1", &["for=1.1.1.1, for=198.51.100.1"], "198.51.100.1", "spoofed left-most element"),
            ("10.0.0.1", &["for=198.51.100.1, for=10.0.0.2"], "198.51.100.1", "trusted hop skipped"),
            ("10.0.0.1", &["for=10.0.0.3, for=10.0.0.2"], "10.0.0.3", "all trusted: left-most"),
            ("10.0.0.1", &["for=198.51.100.1, for=unknown"], "10.0.0.1", "unknown stops"),
            ("10.0.0.1", &["for=198.51.100.1, for=_hidden, for=10.0.0.2"], "10.0.0.2", "obfuscated stops"),
            ("10.0.0.1", &["for=198.51.100.1, proto=https"], "10.0.0.1", "element without for stops"),
            ("10.0.0.1", &["for=198.51.100.1;for=10.0.0.2"], "10.0.0.1", "two for in one element"),
            ("10.0.0.1", &["for=\"198.51.100.1, for=10.0.0.2"], "10.0.0.1", "unbalanced quote"),
            ("10.0.0.1", &["for=\"_a,b;c\", for=198.51.100.1"], "198.51.100.1", "comma inside quotes"),
            ("10.0.0.1", &["for=\"_a,b;c\", for=10.0.0.2"], "10.0.0.2", "quoted obfuscated stops"),
            ("10.0.0.1", &["for=[2001:db8::1]"], "2001:db8::1", "unquoted brackets accepted"),
            ("10.0.0.1", &["for=\"::ffff:198.51.100.1\""], "198.51.100.1", "mapped v4 normalised"),
            ("10.0.0.1", &["for=1.1.1.1", "for=198.51.100.1"], "198.51.100.1", "lines read in order"),
            ("10.0.0.1", &["for=198.51.100.1, , for=10.0.0.2"], "198.51.100.1", "empty elements skipped"),
        ];
        for (peer, lines, want, why) in cases {
            assert_eq!(
                fwd(peer, lines),
                ip(want),
                "{why}: peer {peer} forwarded {lines:?}"
            );
        }
    }

    #[test]
    fn normalize_turns_mapped_v4_into_v4_only() {
        assert_eq!(normalize(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(normalize(ip("::192.0.2.1")), ip("::192.0.2.1"));
        assert_eq!(normalize(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(normalize(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
