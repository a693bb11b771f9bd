//! Stage 4, IP allowlist: whether a route lets this client address in. A route's `allow_ips`
//! (CIDRs and named `ip_sets`) are resolved by the config layer and compiled into one
//! [`IpTable`]; this file only answers yes or no.
//!
//! It must never fail open (an empty allowlist lets nobody in; a route without `allow_ips` has no
//! `Allowlist` at all), never tell the client which network or set was involved (a [`Denied`]
//! carries the address for the log, nothing for the response), and never look at headers: it is
//! given the client address stage 3 decided on.

use std::net::IpAddr;

use thiserror::Error;

use crate::ipset::{normalize_ip, Cidr, IpTable};

/// The addresses one route accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowlist {
    table: IpTable,
}

/// The client address is in none of the route's networks. Log it; answer 403 without details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("client address {ip} is not allowed on this route")]
pub struct Denied {
    /// The (normalised) address that was refused.
    pub ip: IpAddr,
}

impl Allowlist {
    /// An allowlist from an already built table.
    pub fn new(table: IpTable) -> Allowlist {
        Allowlist { table }
    }

    /// An allowlist from a route's literal CIDRs plus the named sets it refers to (already
    /// resolved to tables by the config layer).
    pub fn from_parts<'a>(
        cidrs: &[Cidr],
        sets: impl IntoIterator<Item = &'a IpTable>,
    ) -> Allowlist {
        let sets = IpTable::union(sets);
        let own = IpTable::new(cidrs.iter().copied());
        Allowlist {
            table: IpTable::union([&own, &sets]),
        }
    }

    /// `Ok(())` when `ip` (IPv4-mapped IPv6 normalised) is inside one of the networks.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = normalize_ip(ip);
        if self.table.contains(ip) {
            Ok(())
        } else {
            Err(Denied { ip })
        }
    }

    /// The compiled table (for diagnostics such as `hookgate check`).
    pub fn table(&self) -> &IpTable {
        &self.table
    }
}

/// A route's allowlist as served: its fixed networks (CIDRs, inline and file sets, compiled into
/// one table) plus the URL-fed sets it names, each read from its current snapshot.
pub struct RouteAllowlist {
    pub fixed: Allowlist,
    pub live: Vec<std::sync::Arc<crate::ip_feeds::LiveIpSet>>,
}

impl RouteAllowlist {
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = normalize_ip(ip);
        if self.fixed.check(ip).is_ok() || self.live.iter().any(|set| set.contains(ip)) {
            Ok(())
        } else {
            Err(Denied { ip })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::{parse_cidr, parse_cidr_list};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn admits_addresses_inside_the_route_networks() {
        let a = Allowlist::from_parts(&[parse_cidr("192.0.2.0/24").unwrap()], []);
        assert_eq!(a.check(ip("192.0.2.200")), Ok(()));
    }

    #[test]
    fn denies_addresses_outside_with_the_address_for_the_log() {
        let a = Allowlist::from_parts(&[parse_cidr("192.0.2.0/24").unwrap()], []);
        assert_eq!(
            a.check(ip("192.0.3.1")),
            Err(Denied {
                ip: ip("192.0.3.1")
            })
        );
    }

    #[test]
    fn empty_allowlist_denies_everyone() {
        let a = Allowlist::new(IpTable::empty());
        assert!(a.check(ip("0.0.0.0")).is_err());
        assert!(a.check(ip("::1")).is_err());
    }

    #[test]
    fn named_sets_and_literal_cidrs_are_combined() {
        let github = IpTable::new(parse_cidr_list("192.30.252.0/22\n2a0a:a440::/29\n").unwrap());
        let partners = IpTable::new(parse_cidr_list("198.51.100.0/24\n").unwrap());
        let a = Allowlist::from_parts(
            &[parse_cidr("2001:db8::/32").unwrap()],
            [&github, &partners],
        );
        for ok in [
            "192.30.253.1",
            "2a0a:a440::1",
            "198.51.100.9",
            "2001:db8::5",
        ] {
            assert_eq!(a.check(ip(ok)), Ok(()), "{ok}");
        }
        assert!(a.check(ip("203.0.113.1")).is_err());
    }

    #[test]
    fn mapped_ipv4_client_is_checked_as_ipv4() {
        let a = Allowlist::from_parts(&[parse_cidr("192.0.2.0/24").unwrap()], []);
        assert_eq!(a.check(ip("::ffff:192.0.2.1")), Ok(()));
        assert_eq!(
            a.check(ip("::ffff:192.0.3.1")),
            Err(Denied {
                ip: ip("192.0.3.1")
            })
        );
    }

    #[test]
    fn refusal_message_names_no_network() {
        let a = Allowlist::from_parts(&[parse_cidr("192.0.2.0/24").unwrap()], []);
        let msg = a.check(ip("203.0.113.1")).unwrap_err().to_string();
        assert!(!msg.contains("192.0.2"), "{msg}");
    }
}
