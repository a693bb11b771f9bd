//! Fuzzes CIDR list parsing (`hookgate::ipset`): `parse_cidr_list` on the input and
//! `cidrs_from_json` with the first line as `json_path` and the rest as the JSON document.
//!
//! Checked beyond "never panics", for every list that parses:
//! - each CIDR prints as text that parses back to the same CIDR, and contains its own address;
//! - `IpTable` (sorted, merged ranges) answers exactly like a linear scan of the CIDRs, at each
//!   network's first and last address, one outside either end, the IPv4-mapped form of each,
//!   and at addresses taken from the input;
//! - the union of two halves' tables equals the table of the whole list.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hookgate::ipset::{cidrs_from_json, normalize_ip, parse_cidr, parse_cidr_list, Cidr, IpTable};
use libfuzzer_sys::fuzz_target;

/// First and last address of a network.
fn bounds(c: &Cidr) -> (IpAddr, IpAddr) {
    match c.addr() {
        IpAddr::V4(a) => {
            let start = u32::from(a);
            let host = u32::MAX.checked_shr(u32::from(c.prefix_len())).unwrap_or(0);
            (a.into(), Ipv4Addr::from(start | host).into())
        }
        IpAddr::V6(a) => {
            let start = u128::from(a);
            let host = u128::MAX
                .checked_shr(u32::from(c.prefix_len()))
                .unwrap_or(0);
            (a.into(), Ipv6Addr::from(start | host).into())
        }
    }
}

fn step(ip: IpAddr, up: bool) -> Option<IpAddr> {
    Some(match ip {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            Ipv4Addr::from(if up {
                n.checked_add(1)?
            } else {
                n.checked_sub(1)?
            })
            .into()
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            Ipv6Addr::from(if up {
                n.checked_add(1)?
            } else {
                n.checked_sub(1)?
            })
            .into()
        }
    })
}

fn mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v6 => v6,
    }
}

fn check_list(cidrs: &[Cidr], extra_probes: &[IpAddr], what: &str) {
    let mut probes: Vec<IpAddr> = extra_probes.to_vec();
    for c in cidrs {
        let text = c.to_string();
        assert_eq!(
            parse_cidr(&text).ok(),
            Some(*c),
            "{what}: {c:?} prints as {text:?}"
        );
        assert!(
            c.contains(c.addr()),
            "{what}: {c} does not contain its own address"
        );
        let (first, last) = bounds(c);
        // An IPv6 network reaching into ::ffff:0:0/96 does not contain those addresses: they
        // are IPv4 once normalised (ipset.rs: IPv4 is allowed only by IPv4 networks).
        if normalize_ip(last) == last {
            assert!(
                c.contains(last),
                "{what}: {c} does not contain its last address {last}"
            );
        }
        probes.extend([first, last]);
        probes.extend(step(first, false));
        probes.extend(step(last, true));
    }
    let mapped_probes: Vec<IpAddr> = probes.iter().map(|p| mapped(*p)).collect();
    probes.extend(mapped_probes);

    let table = IpTable::new(cidrs.iter().copied());
    assert_eq!(table.is_empty(), cidrs.is_empty(), "{what}: is_empty");
    assert!(
        table.len() <= cidrs.len(),
        "{what}: more ranges than networks"
    );
    for p in &probes {
        let linear = cidrs.iter().any(|c| c.contains(*p));
        assert_eq!(
            table.contains(*p),
            linear,
            "{what}: IpTable and a scan disagree on {p} for {cidrs:?}"
        );
    }
    let (a, b) = cidrs.split_at(cidrs.len() / 2);
    let union = IpTable::union([
        &IpTable::new(a.iter().copied()),
        &IpTable::new(b.iter().copied()),
    ]);
    assert_eq!(
        union, table,
        "{what}: union of halves differs for {cidrs:?}"
    );
}

/// Addresses written anywhere in the input, as extra probes.
fn probes_in(text: &str) -> Vec<IpAddr> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .filter_map(|w| w.parse().ok())
        .take(32)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let probes = probes_in(text);
    if let Ok(cidrs) = parse_cidr_list(text) {
        check_list(&cidrs, &probes, "parse_cidr_list");
    }
    let (json_path, json) = text.split_once('\n').unwrap_or(("", text));
    if let Ok(cidrs) = cidrs_from_json(json, json_path) {
        check_list(&cidrs, &probes, "cidrs_from_json");
    }
});
