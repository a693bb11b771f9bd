//! CIDR parsing and `IpTable`, an immutable set of IPv4 and IPv6 networks answering "is this
//! address inside?" in O(log n). Lists come from config (`allow_ips`, `trusted_proxies`), from
//! files (one CIDR a line, `#` comments) and from providers' published JSON or text lists.
//!
//! It must never do I/O (callers read files and fetch URLs, then hand the text here), never guess:
//! a line that is not an address or a CIDR is an error with its line number, never skipped, and
//! it must never match an address that no listed network contains.
//!
//! Rules worth knowing:
//! - A bare address is a host network: `/32` for IPv4, `/128` for IPv6.
//! - Host bits are accepted and masked, as nginx does (`10.1.2.3/8` is `10.0.0.0/8`);
//!   [`parse_cidr_checked`] says when that happened so the config check can warn.
//! - IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is IPv4: both in CIDRs (`::ffff:10.0.0.0/104` is
//!   `10.0.0.0/8`) and in lookups. An IPv6 network wider than `/96` (e.g. `::/0`) therefore does
//!   not match IPv4 clients: IPv4 is allowed only by IPv4 networks.
//! - The table stores sorted, merged, disjoint ranges (IPv4 as `u32`, IPv6 as `u128`), so
//!   100 000 CIDRs cost a few MiB at most and a lookup is one binary search.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use thiserror::Error;

/// One network: an address with its host bits cleared and a prefix length.
///
/// Always normalised: IPv4-mapped IPv6 networks become IPv4, host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a piece of text is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    #[error("empty address")]
    Empty,
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    BadAddress(String),
    #[error("{0:?} is not a prefix length (digits only)")]
    BadPrefix(String),
    #[error("prefix /{prefix} is longer than the {max} bits of the address")]
    PrefixTooLong { prefix: u32, max: u8 },
}

impl Cidr {
    /// A network from an address and a prefix length; host bits are masked, IPv4-mapped IPv6
    /// becomes IPv4 (a mapped prefix shorter than /96 stays IPv6, see the module notes).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        Cidr::new_checked(addr, prefix).map(|(cidr, _)| cidr)
    }

    fn new_checked(addr: IpAddr, prefix: u8) -> Result<(Cidr, bool), CidrError> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            other => (other, prefix),
        };
        match addr {
            IpAddr::V4(v4) => {
                if prefix > 32 {
                    return Err(CidrError::PrefixTooLong {
                        prefix: prefix.into(),
                        max: 32,
                    });
                }
                let bits = u32::from(v4);
                let masked = bits & mask_u32(prefix);
                Ok((
                    Cidr {
                        addr: IpAddr::V4(Ipv4Addr::from(masked)),
                        prefix,
                    },
                    masked != bits,
                ))
            }
            IpAddr::V6(v6) => {
                if prefix > 128 {
                    return Err(CidrError::PrefixTooLong {
                        prefix: prefix.into(),
                        max: 128,
                    });
                }
                let bits = u128::from(v6);
                let masked = bits & mask_u128(prefix);
                Ok((
                    Cidr {
                        addr: IpAddr::V6(Ipv6Addr::from(masked)),
                        prefix,
                    },
                    masked != bits,
                ))
            }
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` (normalised first) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, normalize_ip(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_u32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_u128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        parse_cidr(s)
    }
}

fn mask_u32(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

fn mask_u128(prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p if p >= 128 => u128::MAX,
        p => u128::MAX << (128 - u32::from(p)),
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4; everything else is returned unchanged.
/// (The deprecated IPv4-compatible form `::a.b.c.d` is left as IPv6.)
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// Parses `addr` or `addr/prefix` (surrounding whitespace allowed), masking host bits.
pub fn parse_cidr(text: &str) -> Result<Cidr, CidrError> {
    parse_cidr_checked(text).map(|(cidr, _)| cidr)
}

/// Like [`parse_cidr`], and also says whether host bits were set and masked away
/// (`10.1.2.3/8` gives `(10.0.0.0/8, true)`), so a config check can warn about it.
pub fn parse_cidr_checked(text: &str) -> Result<(Cidr, bool), CidrError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(CidrError::Empty);
    }
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| CidrError::BadAddress(addr_text.to_string()))?;
    let prefix = match prefix_text {
        None => match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        },
        Some(p) => {
            // u8::from_str accepts "+8"; a prefix is plain digits only.
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CidrError::BadPrefix(p.to_string()));
            }
            let value: u32 = p.parse().map_err(|_| CidrError::BadPrefix(p.to_string()))?;
            let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
            if value > u32::from(max) {
                return Err(CidrError::PrefixTooLong { prefix: value, max });
            }
            // value <= 128 here, so it fits in a u8.
            u8::try_from(value).map_err(|_| CidrError::BadPrefix(p.to_string()))?
        }
    };
    Cidr::new_checked(addr, prefix)
}

/// A CIDR list file or a provider's plain-text list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {error}")]
pub struct ListError {
    /// 1-based line number.
    pub line: usize,
    pub error: CidrError,
}

/// Parses a list: one address or CIDR a line; `#` starts a comment (whole line or after an
/// entry); blank lines and surrounding whitespace (including `\r`) are ignored. This is also the
/// format of providers' plain-text lists (Stripe publishes one IP a line). The first bad line is
/// an error: a list is never used half-read. An empty list is `Ok(vec![])`; whether that is
/// acceptable (it denies everyone) is the caller's decision.
pub fn parse_cidr_list(text: &str) -> Result<Vec<Cidr>, ListError> {
    let mut out = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let entry = match raw.split_once('#') {
            Some((before, _comment)) => before,
            None => raw,
        }
        .trim();
        if entry.is_empty() {
            continue;
        }
        let cidr = parse_cidr(entry).map_err(|error| ListError {
            line: index + 1,
            error,
        })?;
        out.push(cidr);
    }
    Ok(out)
}

/// A provider's JSON list could not be used.
#[derive(Debug, Error)]
pub enum JsonListError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("json_path {path:?}: nothing at {at:?}")]
    PathNotFound { path: String, at: String },
    #[error("json_path {path:?}: {at:?} is not an array of strings")]
    NotAList { path: String, at: String },
    #[error("json_path {path:?}: entry {at:?}: {error}")]
    Cidr {
        path: String,
        at: String,
        error: CidrError,
    },
}

/// Reads the CIDRs at `json_path` in a provider's JSON document.
///
/// `json_path` is a dot path of object keys; a number indexes an array; `*` takes every element
/// of an array. Each value reached must be an array of strings or a single string:
/// - GitHub `/meta`: `hooks` on `{"hooks": ["192.30.252.0/22", ...]}`
/// - AWS `ip-ranges.json`: `prefixes.*.ip_prefix`
///
/// An empty path means the document itself. Every string must parse as a CIDR (see
/// [`parse_cidr`]); the first one that does not is an error.
pub fn cidrs_from_json(json_text: &str, json_path: &str) -> Result<Vec<Cidr>, JsonListError> {
    let root: serde_json::Value = serde_json::from_str(json_text)?;
    let segments: Vec<&str> = if json_path.trim().is_empty() {
        Vec::new()
    } else {
        json_path.split('.').collect()
    };
    let mut out = Vec::new();
    collect_json(&root, &segments, json_path, String::new(), &mut out)?;
    Ok(out)
}

fn collect_json(
    value: &serde_json::Value,
    segments: &[&str],
    path: &str,
    at: String,
    out: &mut Vec<Cidr>,
) -> Result<(), JsonListError> {
    use serde_json::Value;
    let join = |at: &str, seg: &str| {
        if at.is_empty() {
            seg.to_string()
        } else {
            format!("{at}.{seg}")
        }
    };
    let Some((first, rest)) = segments.split_first() else {
        // End of the path: an array of strings, or a single string (e.g. reached through `*`).
        return match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_at = join(&at, &i.to_string());
                    let Value::String(s) = item else {
                        return Err(JsonListError::NotAList {
                            path: path.to_string(),
                            at: item_at,
                        });
                    };
                    push_json_cidr(s, path, item_at, out)?;
                }
                Ok(())
            }
            Value::String(s) => push_json_cidr(s, path, at, out),
            _ => Err(JsonListError::NotAList {
                path: path.to_string(),
                at,
            }),
        };
    };
    let here = join(&at, first);
    match (value, *first) {
        (Value::Array(items), "*") => {
            for (i, item) in items.iter().enumerate() {
                collect_json(item, rest, path, join(&at, &i.to_string()), out)?;
            }
            Ok(())
        }
        (Value::Object(map), key) => match map.get(key) {
            Some(next) => collect_json(next, rest, path, here, out),
            None => Err(JsonListError::PathNotFound {
                path: path.to_string(),
                at: here,
            }),
        },
        (Value::Array(items), index) => {
            match index.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(next) => collect_json(next, rest, path, here, out),
                None => Err(JsonListError::PathNotFound {
                    path: path.to_string(),
                    at: here,
                }),
            }
        }
        _ => Err(JsonListError::PathNotFound {
            path: path.to_string(),
            at: here,
        }),
    }
}

fn push_json_cidr(
    s: &str,
    path: &str,
    at: String,
    out: &mut Vec<Cidr>,
) -> Result<(), JsonListError> {
    let cidr = parse_cidr(s).map_err(|error| JsonListError::Cidr {
        path: path.to_string(),
        at,
        error,
    })?;
    out.push(cidr);
    Ok(())
}

/// An immutable set of networks, built once, queried per request.
///
/// Lookups normalise IPv4-mapped IPv6 first. `contains` is a binary search over sorted,
/// merged, disjoint ranges: O(log n), no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpTable {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpTable {
    /// The empty table: contains nothing.
    pub fn empty() -> IpTable {
        IpTable::default()
    }

    /// Builds the table from any number of CIDRs (overlaps and duplicates are fine).
    pub fn new(cidrs: impl IntoIterator<Item = Cidr>) -> IpTable {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for cidr in cidrs {
            match cidr.addr {
                IpAddr::V4(a) => {
                    let start = u32::from(a);
                    v4.push((start, start | !mask_u32(cidr.prefix)));
                }
                IpAddr::V6(a) => {
                    let start = u128::from(a);
                    v6.push((start, start | !mask_u128(cidr.prefix)));
                }
            }
        }
        IpTable {
            v4: merge_ranges(v4),
            v6: merge_ranges(v6),
        }
    }

    /// The union of several tables (e.g. a route's own CIDRs and the named sets it refers to).
    pub fn union<'a>(tables: impl IntoIterator<Item = &'a IpTable>) -> IpTable {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for t in tables {
            v4.extend_from_slice(&t.v4);
            v6.extend_from_slice(&t.v6);
        }
        IpTable {
            v4: merge_ranges(v4),
            v6: merge_ranges(v6),
        }
    }

    /// Whether any network in the table contains `ip` (IPv4-mapped IPv6 is looked up as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match normalize_ip(ip) {
            IpAddr::V4(a) => in_ranges(&self.v4, u32::from(a)),
            IpAddr::V6(a) => in_ranges(&self.v6, u128::from(a)),
        }
    }

    /// Number of disjoint address ranges stored after merging overlapping and adjacent
    /// networks (`10.0.0.0/9` + `10.128.0.0/9` count as one). This is what memory scales with.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True when the table contains no address at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

impl FromIterator<Cidr> for IpTable {
    fn from_iter<I: IntoIterator<Item = Cidr>>(iter: I) -> IpTable {
        IpTable::new(iter)
    }
}

/// Sorts inclusive `(start, end)` ranges and merges overlapping or adjacent ones.
fn merge_ranges<T>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)>
where
    T: Copy + Ord + Successor,
{
    ranges.sort_unstable();
    let mut merged: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = merged.last_mut() {
            // Adjacent when last.end + 1 == start; no successor means last.end is the maximum,
            // so everything after is already covered.
            let touches = match last.1.successor() {
                None => true,
                Some(next) => start <= next,
            };
            if touches {
                if end > last.1 {
                    last.1 = end;
                }
                continue;
            }
        }
        merged.push((start, end));
    }
    merged.shrink_to_fit();
    merged
}

fn in_ranges<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    // Index of the first range starting after x; the candidate is the one before it.
    let idx = ranges.partition_point(|&(start, _)| start <= x);
    match idx.checked_sub(1).and_then(|i| ranges.get(i)) {
        Some(&(_, end)) => x <= end,
        None => false,
    }
}

trait Successor: Sized {
    fn successor(self) -> Option<Self>;
}
impl Successor for u32 {
    fn successor(self) -> Option<u32> {
        self.checked_add(1)
    }
}
impl Successor for u128 {
    fn successor(self) -> Option<u128> {
        self.checked_add(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn table(list: &[&str]) -> IpTable {
        list.iter().map(|s| parse_cidr(s).unwrap()).collect()
    }

    #[test]
    fn bare_addresses_are_host_networks() {
        assert_eq!(parse_cidr("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert_eq!(
            parse_cidr("  10.0.0.0/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn masks_host_bits_and_says_so() {
        assert_eq!(
            parse_cidr_checked("10.1.2.3/8").unwrap(),
            (parse_cidr("10.0.0.0/8").unwrap(), true)
        );
        assert!(!parse_cidr_checked("10.0.0.0/8").unwrap().1);
        assert_eq!(
            parse_cidr("2001:db8::ff/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(parse_cidr("1.2.3.4/0").unwrap().to_string(), "0.0.0.0/0");
    }

    #[test]
    fn ipv4_mapped_networks_become_ipv4() {
        assert_eq!(
            parse_cidr("::ffff:10.0.0.0/104").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_cidr("::ffff:192.0.2.1").unwrap().to_string(),
            "192.0.2.1/32"
        );
        assert_eq!(
            parse_cidr("::ffff:0.0.0.0/96").unwrap().to_string(),
            "0.0.0.0/0"
        );
        // Wider than /96: stays IPv6.
        assert_eq!(
            parse_cidr("::ffff:0.0.0.0/95").unwrap().to_string(),
            "::fffe:0:0/95"
        );
    }

    #[test]
    fn rejects_what_is_not_a_cidr() {
        for bad in [
            "",
            "   ",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0",
            "010.0.0.1",
            "10.0.0.0 /8",
            "fe80::1%eth0",
            "host.example",
            "10.0.0.0/0008",
            "[2001:db8::1]",
            "1.2.3.4:80",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            parse_cidr("10.0.0.0/33"),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
    }

    #[test]
    fn list_skips_comments_and_blank_lines_and_reports_the_bad_line() {
        let text = "# partners\n\n192.0.2.0/24   # office\r\n  2001:db8::/32\n\t\n198.51.100.7\n";
        let list = parse_cidr_list(text).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[2].to_string(), "198.51.100.7/32");

        let err = parse_cidr_list("10.0.0.0/8\n# ok\nnot-an-ip\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(err.to_string().starts_with("line 3: "), "{err}");
    }

    #[test]
    fn reads_stripe_style_plain_text_list() {
        let text = "3.18.12.63\n3.130.192.231\n13.235.14.237\n";
        let t = IpTable::new(parse_cidr_list(text).unwrap());
        assert!(t.contains(ip("3.130.192.231")));
        assert!(!t.contains(ip("3.130.192.232")));
    }

    #[test]
    fn reads_github_meta_hooks() {
        let meta = r#"{"verifiable_password_authentication":true,
            "hooks":["192.30.252.0/22","185.199.108.0/22","140.82.112.0/20","143.55.64.0/20",
                     "2a0a:a440::/29","2606:50c0::/32"],
            "web":["1.2.3.4/32"]}"#;
        let cidrs = cidrs_from_json(meta, "hooks").unwrap();
        assert_eq!(cidrs.len(), 6);
        let t = IpTable::new(cidrs);
        assert!(t.contains(ip("140.82.115.9")));
        assert!(t.contains(ip("2a0a:a440:1::5")));
        assert!(!t.contains(ip("1.2.3.4")));
    }

    #[test]
    fn json_path_walks_objects_indexes_and_wildcards() {
        let doc = r#"{"a":{"b":[["10.0.0.0/8"],["192.0.2.0/24"]]},
                      "prefixes":[{"ip_prefix":"3.5.140.0/22"},{"ip_prefix":"52.95.0.0/16"}]}"#;
        assert_eq!(
            cidrs_from_json(doc, "a.b.1").unwrap()[0].to_string(),
            "192.0.2.0/24"
        );
        let aws = cidrs_from_json(doc, "prefixes.*.ip_prefix").unwrap();
        assert_eq!(aws.len(), 2);
        assert_eq!(cidrs_from_json(r#"["10.0.0.1"]"#, "").unwrap().len(), 1);
    }

    #[test]
    fn json_errors_name_the_place() {
        let doc = r#"{"hooks":["10.0.0.0/8", 7], "bad":["nope"], "obj":{}}"#;
        assert!(matches!(
            cidrs_from_json(doc, "missing"),
            Err(JsonListError::PathNotFound { .. })
        ));
        match cidrs_from_json(doc, "hooks") {
            Err(JsonListError::NotAList { at, .. }) => assert_eq!(at, "hooks.1"),
            other => panic!("{other:?}"),
        }
        match cidrs_from_json(doc, "bad") {
            Err(JsonListError::Cidr { at, .. }) => assert_eq!(at, "bad.0"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cidrs_from_json(doc, "obj"),
            Err(JsonListError::NotAList { .. })
        ));
        assert!(matches!(
            cidrs_from_json("{", "hooks"),
            Err(JsonListError::Json(_))
        ));
    }

    #[test]
    fn contains_respects_network_edges() {
        let t = table(&[
            "192.0.2.0/24",
            "2001:db8::/32",
            "0.0.0.0/32",
            "255.255.255.255",
        ]);
        assert!(t.contains(ip("192.0.2.0")));
        assert!(t.contains(ip("192.0.2.255")));
        assert!(!t.contains(ip("192.0.1.255")));
        assert!(!t.contains(ip("192.0.3.0")));
        assert!(t.contains(ip("0.0.0.0")));
        assert!(t.contains(ip("255.255.255.255")));
        assert!(!t.contains(ip("255.255.255.254")));
        assert!(t.contains(ip("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!t.contains(ip("2001:db9::")));
        assert!(!t.contains(ip("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff")));
    }

    #[test]
    fn mapped_ipv4_clients_match_ipv4_networks_only() {
        let t = table(&["10.0.0.0/8"]);
        assert!(t.contains(ip("::ffff:10.1.2.3")));
        let all_v6 = table(&["::/0"]);
        assert!(!all_v6.contains(ip("10.1.2.3")));
        assert!(!all_v6.contains(ip("::ffff:10.1.2.3")));
        assert!(all_v6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn merges_overlapping_and_adjacent_networks() {
        let t = table(&[
            "10.0.0.0/9",
            "10.128.0.0/9",
            "10.1.0.0/16",
            "10.0.0.0/8",
            "11.0.0.0/8",
        ]);
        assert_eq!(t.len(), 1);
        assert!(t.contains(ip("11.255.255.255")));
        assert!(!t.contains(ip("12.0.0.0")));
        let full = table(&["0.0.0.0/0", "255.0.0.0/8", "::/0", "ffff::/16"]);
        assert_eq!(full.len(), 2);
        assert!(full.contains(ip("255.255.255.255")));
    }

    #[test]
    fn empty_table_contains_nothing() {
        let t = IpTable::empty();
        assert!(t.is_empty());
        assert!(!t.contains(ip("0.0.0.0")));
        assert!(!t.contains(ip("::")));
    }

    #[test]
    fn union_of_tables_contains_each() {
        let a = table(&["10.0.0.0/8"]);
        let b = table(&["2001:db8::/32", "10.0.0.0/16"]);
        let u = IpTable::union([&a, &b]);
        assert_eq!(u.len(), 2);
        assert!(u.contains(ip("10.200.0.1")) && u.contains(ip("2001:db8::1")));
    }

    #[test]
    fn binary_search_agrees_with_a_linear_scan() {
        // Deterministic pseudo-random networks, checked against Cidr::contains one by one.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cidrs = Vec::new();
        for _ in 0..2_000 {
            let r = next();
            let prefix = 8 + (r % 25) as u8;
            cidrs.push(Cidr::new(IpAddr::V4(Ipv4Addr::from((r >> 32) as u32)), prefix).unwrap());
            let r6 = (u128::from(next()) << 64) | u128::from(next());
            cidrs.push(Cidr::new(IpAddr::V6(Ipv6Addr::from(r6)), 16 + (r % 100) as u8).unwrap());
        }
        let t = IpTable::new(cidrs.iter().copied());
        for _ in 0..4_000 {
            let r = next();
            let probe4 = IpAddr::V4(Ipv4Addr::from(r as u32));
            assert_eq!(
                t.contains(probe4),
                cidrs.iter().any(|c| c.contains(probe4)),
                "{probe4}"
            );
            // Probe inside a known v6 network half of the time so hits are exercised too.
            let c = cidrs[(r % cidrs.len() as u64) as usize];
            let probe6 = match c.addr() {
                IpAddr::V6(a) => {
                    IpAddr::V6(Ipv6Addr::from(u128::from(a) | u128::from(next() & 0xff)))
                }
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | (next() as u32 & 0xff))),
            };
            assert_eq!(
                t.contains(probe6),
                cidrs.iter().any(|c| c.contains(probe6)),
                "{probe6}"
            );
        }
    }
}
