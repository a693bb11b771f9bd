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
//!
//! Files: `cidr.rs` (one network, on the `ipnet` crate), `list.rs` (one-a-line lists),
//! `json.rs` (providers' JSON documents), `table.rs` (the merged range table).

mod cidr;
mod json;
mod list;
mod table;

pub use cidr::{normalize_ip, parse_cidr, parse_cidr_checked, Cidr, CidrError};
pub use json::{cidrs_from_json, JsonListError};
pub use list::{parse_cidr_list, ListError};
pub use table::IpTable;
