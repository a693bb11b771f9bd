//! One network (`Cidr`): parsing with errors that say what is wrong, host-bit masking, and the
//! IPv4-mapped IPv6 rule. The network arithmetic is the `ipnet` crate's.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use thiserror::Error;

/// One network: an address with its host bits cleared and a prefix length.
///
/// Always normalised: IPv4-mapped IPv6 networks become IPv4, host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(IpNet);

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
        let net = IpNet::new(addr, prefix).map_err(|_| CidrError::PrefixTooLong {
            prefix: prefix.into(),
            max: if addr.is_ipv4() { 32 } else { 128 },
        })?;
        let masked = net.trunc();
        Ok((Cidr(masked), masked.addr() != addr))
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.0.addr()
    }

    /// The prefix length: 0..=32 for IPv4, 0..=128 for IPv6.
    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    /// The network as `ipnet` sees it (first and last address, for the range table).
    pub fn net(&self) -> IpNet {
        self.0
    }

    /// Whether `ip` (normalised first) is inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&normalize_ip(ip))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.addr(), self.0.prefix_len())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        parse_cidr(s)
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
#[cfg(test)]
mod tests {
    use super::*;

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
}
