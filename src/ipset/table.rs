//! `IpTable`: sorted, merged, disjoint address ranges (IPv4 as `u32`, IPv6 as `u128`) answering
//! "is this address inside?" with one binary search. The part of the set worth owning: `ipnet`
//! gives each network's first and last address, the merging and lookup are here.

use std::net::IpAddr;

use ipnet::IpNet;

use super::cidr::{normalize_ip, Cidr};

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
            match cidr.net() {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
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
    use crate::ipset::parse_cidr;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn table(list: &[&str]) -> IpTable {
        list.iter().map(|s| parse_cidr(s).unwrap()).collect()
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
