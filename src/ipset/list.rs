//! One-a-line CIDR lists: `ip_sets` files and providers' plain-text lists.

use thiserror::Error;

use super::cidr::{parse_cidr, Cidr, CidrError};

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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::IpTable;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
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
}
