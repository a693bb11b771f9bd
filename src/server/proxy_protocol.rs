//! Reads the HAProxy PROXY protocol header (v1 text or v2 binary) that a trusted load balancer
//! puts at the start of each connection on a listener with `proxy_protocol: true`, and reports the
//! client address it announces. Its one job is to consume exactly that header. It must never read
//! a byte past the header, because the next bytes are the TLS ClientHello or the HTTP request. It
//! must never accept a header it could not fully validate, and it must never panic on hostile
//! input: every failure is a `ProxyError`, and the caller closes the connection.
//!
//! We wrote the parser ourselves and don't use the `ppp` crate. It is small, and we want exact
//! control over how many bytes are read and what is accepted.
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest v1 line, CRLF included (spec: `PROXY UNKNOWN` with two full IPv6 addresses and ports).
pub const V1_MAX_LEN: usize = 107;
/// Shortest v1 line: `PROXY UNKNOWN\r\n`.
const V1_MIN_LEN: usize = 15;
/// Shortest `TCP4` line: `PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n`.
const V1_MIN_LEN_TCP4: usize = 32;
/// Shortest `TCP6` line: `PROXY TCP6 :: :: 0 0\r\n`.
const V1_MIN_LEN_TCP6: usize = 22;
const V1_PREFIX: &[u8] = b"PROXY ";

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V2_PREFIX_LEN: usize = 16;
/// Largest v2 header we accept, counting the 16-byte prefix. The spec allows 16 + 65535 bytes,
/// but a header is meant to fit in one segment. 4096 bytes is enough for an AF_UNIX block (216)
/// plus the usual TLVs (ALPN, authority, SSL info, cloud endpoint IDs). A larger header gets
/// `TooLong` before its body is read.
pub const V2_MAX_LEN: usize = 4096;

const V2_ADDR_LEN_INET: usize = 12;
const V2_ADDR_LEN_INET6: usize = 36;
const V2_ADDR_LEN_UNIX: usize = 216;

/// What the PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The load balancer relayed a TCP connection from `source` (the real client) to `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// Use the socket's own peer address. This covers a v2 LOCAL command (such as a health
    /// check), v1 `UNKNOWN`, and v2 PROXY with AF_UNSPEC or AF_UNIX.
    Local,
}

impl ProxyHeader {
    /// The client address to use for this connection: the announced source, or `peer` (the
    /// socket's peer address) for `Local`.
    pub fn client_addr(&self, peer: SocketAddr) -> SocketAddr {
        match self {
            ProxyHeader::Proxied { source, .. } => *source,
            ProxyHeader::Local => peer,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The stream failed or ended before the header was complete (`UnexpectedEof`).
    #[error("reading PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// The connection does not start with `PROXY ` or the v2 signature.
    #[error("connection does not start with a PROXY protocol header")]
    NotProxyProtocol,
    #[error("malformed PROXY header: {0}")]
    Malformed(&'static str),
    /// A v1 line longer than 107 bytes, or a v2 header longer than `V2_MAX_LEN`.
    #[error("PROXY header too long")]
    TooLong,
    /// `read_header_with_timeout` ran out of time.
    #[error("timed out waiting for the PROXY header")]
    Timeout,
}

use ProxyError::Malformed;

/// Reads exactly the header bytes from the stream — never one byte more, because what follows is
/// the TLS ClientHello or the HTTP request. It reads no more than 6 bytes before rejecting a
/// connection that is not PROXY protocol (a single byte when the first byte is neither `P` nor
/// `\r`).
///
/// Without a peek, a v1 line has to be read in small pieces. It reads the shortest possible line
/// in one go and then reads one byte at a time up to the CRLF, at most about 90 small reads per
/// connection. A v2 header takes three reads: the signature, the rest of the 16-byte prefix, and
/// the body. Do not wrap the stream in a `BufReader` before calling this: the buffer would take in
/// bytes that come after the header.
///
/// There is no timeout here: use `read_header_with_timeout` on a socket.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    match first[0] {
        b'P' => read_v1(stream).await,
        b'\r' => read_v2(stream).await,
        _ => Err(ProxyError::NotProxyProtocol),
    }
}

/// `read_header` with a deadline for the whole header, so a peer that connects and stays silent
/// (or trickles bytes) cannot hold a connection slot. Returns `ProxyError::Timeout` when the time
/// runs out.
pub async fn read_header_with_timeout<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<ProxyHeader, ProxyError> {
    tokio::time::timeout(limit, read_header(stream))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

/// Where the v1 line reader stands after looking at the bytes read so far.
enum V1Scan {
    /// The buffer ends with the line's CRLF.
    Complete,
    /// No line end yet: at least this many bytes in total can be read without passing the end of
    /// the line.
    NeedUpTo(usize),
}

fn scan_v1(buf: &[u8]) -> Result<V1Scan, ProxyError> {
    let len = buf.len();
    match buf.iter().position(|&b| b == b'\r' || b == b'\n') {
        None => {
            // The line must still have its CRLF, and the protocol word may require a longer line.
            let min = if buf.starts_with(b"PROXY TCP4 ") {
                V1_MIN_LEN_TCP4
            } else if buf.starts_with(b"PROXY TCP6 ") {
                V1_MIN_LEN_TCP6
            } else {
                0
            };
            Ok(V1Scan::NeedUpTo(min.max(len + 1)))
        }
        Some(pos) if buf[pos] == b'\n' => Err(Malformed("v1 line has LF without CR")),
        Some(pos) if pos + 1 == len => Ok(V1Scan::NeedUpTo(len + 1)),
        Some(pos) if pos + 2 == len && buf[pos + 1] == b'\n' => Ok(V1Scan::Complete),
        Some(_) => Err(Malformed(
            "v1 line has a CR not followed by LF, or is too short",
        )),
    }
}

async fn read_v1<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut buf = [0u8; V1_MAX_LEN];
    buf[0] = b'P';
    // Check the rest of "PROXY " before waiting for more, so a non-PROXY client fails quickly.
    stream.read_exact(&mut buf[1..V1_PREFIX.len()]).await?;
    if &buf[..V1_PREFIX.len()] != V1_PREFIX {
        return Err(ProxyError::NotProxyProtocol);
    }
    // Every valid line is at least V1_MIN_LEN bytes long, so reading up to that length is safe.
    stream
        .read_exact(&mut buf[V1_PREFIX.len()..V1_MIN_LEN])
        .await?;
    let mut len = V1_MIN_LEN;
    loop {
        match scan_v1(&buf[..len])? {
            V1Scan::Complete => return parse_v1(&buf[..len]),
            V1Scan::NeedUpTo(_) if len >= V1_MAX_LEN => return Err(ProxyError::TooLong),
            V1Scan::NeedUpTo(want) => {
                let want = want.min(V1_MAX_LEN);
                stream.read_exact(&mut buf[len..want]).await?;
                len = want;
            }
        }
    }
}

async fn read_v2<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut prefix = [0u8; V2_PREFIX_LEN];
    prefix[0] = b'\r';
    stream
        .read_exact(&mut prefix[1..V2_SIGNATURE.len()])
        .await?;
    if prefix[..V2_SIGNATURE.len()] != V2_SIGNATURE {
        return Err(ProxyError::NotProxyProtocol);
    }
    stream.read_exact(&mut prefix[V2_SIGNATURE.len()..]).await?;
    // Check version, command, family and length before reading (or allocating for) the body.
    let total = check_v2_prefix(&prefix)?.total;
    let mut header = vec![0u8; total];
    header[..V2_PREFIX_LEN].copy_from_slice(&prefix);
    stream.read_exact(&mut header[V2_PREFIX_LEN..]).await?;
    parse_v2(&header)
}

/// Parses one complete v1 line, trailing CRLF included (at most 107 bytes).
///
/// The check is strict. The protocol is `TCP4`, `TCP6` or `UNKNOWN`. Fields are separated by
/// exactly one space. The addresses must match the protocol's family, and IPv4 must be dotted
/// decimal without leading zeros. Ports are plain decimal from 0 to 65535, with no sign and no
/// leading zero. After `UNKNOWN`, the spec says the rest of the line is ignored.
pub fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if line.len() > V1_MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    let body = line
        .strip_suffix(b"\r\n")
        .ok_or(Malformed("v1 line does not end with CRLF"))?;
    if body.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(Malformed("v1 line has a CR or LF before its end"));
    }
    let rest = body
        .strip_prefix(V1_PREFIX)
        .ok_or(ProxyError::NotProxyProtocol)?;
    if rest == b"UNKNOWN" || rest.starts_with(b"UNKNOWN ") {
        return Ok(ProxyHeader::Local);
    }
    let mut fields = rest.split(|&b| b == b' ');
    let mut field = || fields.next().ok_or(Malformed("v1 line has too few fields"));
    let (proto, src, dst, sport, dport) = (field()?, field()?, field()?, field()?, field()?);
    if fields.next().is_some() {
        return Err(Malformed("v1 line has too many fields"));
    }
    let (source, destination) = match proto {
        b"TCP4" => (
            IpAddr::V4(parse_ip::<Ipv4Addr>(
                src,
                "v1 TCP4 source is not an IPv4 address",
            )?),
            IpAddr::V4(parse_ip::<Ipv4Addr>(
                dst,
                "v1 TCP4 destination is not an IPv4 address",
            )?),
        ),
        b"TCP6" => (
            IpAddr::V6(parse_ip::<Ipv6Addr>(
                src,
                "v1 TCP6 source is not an IPv6 address",
            )?),
            IpAddr::V6(parse_ip::<Ipv6Addr>(
                dst,
                "v1 TCP6 destination is not an IPv6 address",
            )?),
        ),
        _ => return Err(Malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(source, parse_port(sport)?),
        destination: SocketAddr::new(destination, parse_port(dport)?),
    })
}

fn parse_ip<T: FromStr>(field: &[u8], what: &'static str) -> Result<T, ProxyError> {
    // std's parsers reject leading zeros in IPv4 octets ("010.0.0.1"), as the spec requires.
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed(what))
}

fn parse_port(field: &[u8]) -> Result<u16, ProxyError> {
    if field.is_empty() || field.len() > 5 || !field.iter().all(u8::is_ascii_digit) {
        return Err(Malformed("v1 port is not a decimal number"));
    }
    if field.len() > 1 && field[0] == b'0' {
        return Err(Malformed("v1 port has a leading zero"));
    }
    let value = field
        .iter()
        .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| Malformed("v1 port is above 65535"))
}

/// What the 16-byte v2 prefix says.
struct V2Prefix {
    /// LOCAL command: ignore the whole address block.
    local: bool,
    /// Address family (high nibble of byte 14).
    family: u8,
    /// Whole header length: 16 + the declared length.
    total: usize,
}

fn check_v2_prefix(prefix: &[u8; V2_PREFIX_LEN]) -> Result<V2Prefix, ProxyError> {
    let (ver_cmd, fam_proto) = (prefix[12], prefix[13]);
    if ver_cmd >> 4 != 2 {
        return Err(Malformed("v2 version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Malformed("v2 command is not LOCAL or PROXY")),
    };
    let total = V2_PREFIX_LEN + usize::from(u16::from_be_bytes([prefix[14], prefix[15]]));
    if total > V2_MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    let (family, transport) = (fam_proto >> 4, fam_proto & 0x0f);
    // With LOCAL, the spec says to ignore the block, family included.
    if !local {
        let needed = match (family, transport) {
            (0, 0..=2) => 0,
            (1, 1) => V2_ADDR_LEN_INET,
            (2, 1) => V2_ADDR_LEN_INET6,
            (3, 1..=2) => V2_ADDR_LEN_UNIX,
            (1..=2, _) => return Err(Malformed("v2 transport is not STREAM (TCP)")),
            _ => return Err(Malformed("v2 address family or transport is unknown")),
        };
        if total - V2_PREFIX_LEN < needed {
            return Err(Malformed("v2 length is shorter than the address block"));
        }
    }
    Ok(V2Prefix {
        local,
        family,
        total,
    })
}

/// Parses one complete v2 header: the 16-byte prefix and then exactly the declared number of
/// bytes. The header can be at most `V2_MAX_LEN` bytes, and anything longer is `TooLong`. The
/// version must be 2 and the command LOCAL or PROXY. PROXY accepts INET or INET6 over STREAM,
/// and AF_UNSPEC or AF_UNIX give `Local`. After an INET/INET6 address block, the TLVs must be
/// well formed (type, 16-bit length, value), but their contents are skipped.
pub fn parse_v2(header: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let prefix: &[u8; V2_PREFIX_LEN] = header
        .get(..V2_PREFIX_LEN)
        .and_then(|p| p.try_into().ok())
        .ok_or(Malformed("v2 header is shorter than 16 bytes"))?;
    if prefix[..V2_SIGNATURE.len()] != V2_SIGNATURE {
        return Err(ProxyError::NotProxyProtocol);
    }
    let V2Prefix {
        local,
        family,
        total,
    } = check_v2_prefix(prefix)?;
    if header.len() < total {
        return Err(Malformed("v2 header is shorter than its declared length"));
    }
    if header.len() > total {
        return Err(Malformed("v2 header has bytes past its declared length"));
    }
    let block = &header[V2_PREFIX_LEN..];
    if local {
        return Ok(ProxyHeader::Local);
    }
    let (source, destination, tlvs) = match family {
        1 => {
            let ip =
                |at: usize| Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]);
            (
                SocketAddr::new(IpAddr::V4(ip(0)), be16(block, 8)),
                SocketAddr::new(IpAddr::V4(ip(4)), be16(block, 10)),
                &block[V2_ADDR_LEN_INET..],
            )
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            (
                SocketAddr::new(IpAddr::V6(ip(0)), be16(block, 32)),
                SocketAddr::new(IpAddr::V6(ip(16)), be16(block, 34)),
                &block[V2_ADDR_LEN_INET6..],
            )
        }
        // AF_UNSPEC and AF_UNIX: we have no use for the block, so use the socket peer.
        _ => return Ok(ProxyHeader::Local),
    };
    check_tlvs(tlvs)?;
    Ok(ProxyHeader::Proxied {
        source,
        destination,
    })
}

/// Big-endian u16 at `at`. The caller has already checked the block length, so the fallback
/// never happens. It is there so that this can't panic.
fn be16(block: &[u8], at: usize) -> u16 {
    match block.get(at..at + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// Walks the TLVs without reading their values: each one must fit inside the header.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ProxyError> {
    while !rest.is_empty() {
        let &[_kind, hi, lo, ..] = rest else {
            return Err(Malformed("v2 TLV is truncated"));
        };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        rest = rest
            .get(end..)
            .ok_or(Malformed("v2 TLV runs past the header"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn proxied(src: &str, dst: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: sa(src),
            destination: sa(dst),
        }
    }

    /// A v2 header: signature, the two command bytes, the length, then `body`.
    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(ver_cmd);
        h.push(fam);
        h.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v4_block() -> Vec<u8> {
        // 192.0.2.7:51000 -> 10.1.2.3:443
        let mut b = vec![192, 0, 2, 7, 10, 1, 2, 3];
        b.extend_from_slice(&51000u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    fn v6_block() -> Vec<u8> {
        let mut b = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        b.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&1234u16.to_be_bytes());
        b.extend_from_slice(&8443u16.to_be_bytes());
        b
    }

    fn tlvs() -> Vec<u8> {
        // PP2_TYPE_ALPN "h2", then PP2_TYPE_NOOP with 3 bytes of padding.
        vec![0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x03, 0, 0, 0]
    }

    async fn read_all(input: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        let mut reader = input;
        let result = read_header(&mut reader).await;
        (result, reader.to_vec())
    }

    #[test]
    fn v1_tcp4() {
        let h = parse_v1(b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\r\n").unwrap();
        assert_eq!(h, proxied("192.0.2.7:51000", "10.1.2.3:443"));
        assert_eq!(h.client_addr(sa("10.9.9.9:1")), sa("192.0.2.7:51000"));
        let h = parse_v1(b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n").unwrap();
        assert_eq!(h, proxied("255.255.255.255:65535", "255.255.255.255:65535"));
        let h = parse_v1(b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n").unwrap();
        assert_eq!(h, proxied("0.0.0.0:0", "0.0.0.0:0"));
    }

    #[test]
    fn v1_tcp6() {
        let h = parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 8443\r\n").unwrap();
        assert_eq!(h, proxied("[2001:db8::1]:1234", "[2001:db8::2]:8443"));
        let full = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(full.len(), 104);
        assert!(matches!(parse_v1(full), Ok(ProxyHeader::Proxied { .. })));
    }

    #[test]
    fn v1_unknown() {
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n").unwrap(), ProxyHeader::Local);
        let worst = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(worst.len(), V1_MAX_LEN);
        assert_eq!(parse_v1(worst).unwrap(), ProxyHeader::Local);
        assert_eq!(
            ProxyHeader::Local.client_addr(sa("10.9.9.9:1")),
            sa("10.9.9.9:1")
        );
    }

    #[test]
    fn v1_rejects() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443",   // no CRLF
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\n", // LF only
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\r\r\n", // stray CR
            b"PROXY TCP4  192.0.2.7 10.1.2.3 51000 443\r\n", // double space
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443 \r\n", // trailing space
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000\r\n",   // missing port
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443 1\r\n", // extra field
            b"PROXY tcp4 192.0.2.7 10.1.2.3 51000 443\r\n", // case
            b"PROXY UDP4 192.0.2.7 10.1.2.3 51000 443\r\n",
            b"PROXY TCP4 2001:db8::1 10.1.2.3 51000 443\r\n", // family mismatch
            b"PROXY TCP6 192.0.2.7 2001:db8::2 51000 443\r\n",
            b"PROXY TCP4 010.0.2.7 10.1.2.3 51000 443\r\n", // octal-looking octet
            b"PROXY TCP4 192.0.2 10.1.2.3 51000 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.1.2.3 +5100 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.1.2.3 05100 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.1.2.3 65536 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.1.2.3 -1 443\r\n",
            b"PROXY TCP4 192.0.2.7 10.1.2.3 99999999999 443\r\n",
            b"PROXY TCP6 [2001:db8::1] 2001:db8::2 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 2001:db8::2 1 2\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY \r\n",
            b"PROXY\r\n",
            b"\r\n",
            b"",
        ];
        for line in bad {
            assert!(
                parse_v1(line).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert!(matches!(
            parse_v1(b"GET / HTTP/1.1\r\n"),
            Err(ProxyError::NotProxyProtocol)
        ));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(matches!(parse_v1(&long), Err(ProxyError::TooLong)));
    }

    #[test]
    fn v2_proxy_ipv4_with_tlvs() {
        let mut body = v4_block();
        body.extend(tlvs());
        let h = parse_v2(&v2(0x21, 0x11, &body)).unwrap();
        assert_eq!(h, proxied("192.0.2.7:51000", "10.1.2.3:443"));
        // Without TLVs too.
        let h = parse_v2(&v2(0x21, 0x11, &v4_block())).unwrap();
        assert_eq!(h, proxied("192.0.2.7:51000", "10.1.2.3:443"));
    }

    #[test]
    fn v2_proxy_ipv6_with_tlvs() {
        let mut body = v6_block();
        body.extend(tlvs());
        let h = parse_v2(&v2(0x21, 0x21, &body)).unwrap();
        assert_eq!(h, proxied("[2001:db8::1]:1234", "[2001:db8::2]:8443"));
    }

    #[test]
    fn v2_local_and_non_inet_are_local() {
        // LOCAL ignores the block whatever its family says.
        assert_eq!(parse_v2(&v2(0x20, 0x00, &[])).unwrap(), ProxyHeader::Local);
        assert_eq!(
            parse_v2(&v2(0x20, 0x11, &v4_block())).unwrap(),
            ProxyHeader::Local
        );
        assert_eq!(
            parse_v2(&v2(0x20, 0xff, &[1, 2, 3])).unwrap(),
            ProxyHeader::Local
        );
        // PROXY with AF_UNSPEC or AF_UNIX.
        assert_eq!(parse_v2(&v2(0x21, 0x00, &[])).unwrap(), ProxyHeader::Local);
        assert_eq!(
            parse_v2(&v2(0x21, 0x31, &[0; 216])).unwrap(),
            ProxyHeader::Local
        );
    }

    #[test]
    fn v2_rejects() {
        let v4 = v4_block();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (v2(0x11, 0x11, &v4), "version 1"),
            (v2(0x31, 0x11, &v4), "version 3"),
            (v2(0x22, 0x11, &v4), "command 2"),
            (v2(0x21, 0x12, &v4), "DGRAM"),
            (v2(0x21, 0x10, &v4), "UNSPEC transport with INET"),
            (v2(0x21, 0x41, &v4), "family 4"),
            (v2(0x21, 0x13, &v4), "transport 3"),
            (v2(0x21, 0x11, &v4[..11]), "short INET block"),
            (v2(0x21, 0x21, &v4), "INET6 with an INET-sized block"),
            (v2(0x21, 0x31, &[0; 100]), "short UNIX block"),
            (
                v2(0x21, 0x11, &[v4.clone(), vec![1, 0]].concat()),
                "truncated TLV",
            ),
            (
                v2(0x21, 0x11, &[v4.clone(), vec![1, 0, 5, 0]].concat()),
                "TLV past end",
            ),
            (v2(0x21, 0x11, &v4)[..20].to_vec(), "truncated header"),
            (
                [v2(0x21, 0x11, &v4), b"GET".to_vec()].concat(),
                "trailing bytes",
            ),
            (v2(0x21, 0x11, &v4)[..15].to_vec(), "short prefix"),
            (Vec::new(), "empty"),
        ];
        for (header, why) in cases {
            assert!(parse_v2(&header).is_err(), "accepted: {why}");
        }
        let mut sig = v2(0x21, 0x11, &v4);
        sig[11] = b'X';
        assert!(matches!(parse_v2(&sig), Err(ProxyError::NotProxyProtocol)));
        let big = v2(0x21, 0x11, &vec![0; V2_MAX_LEN - 16 + 1]);
        assert!(matches!(parse_v2(&big), Err(ProxyError::TooLong)));
        let biggest = v2(
            0x21,
            0x11,
            &[v4.clone(), vec![4, 0x0f, 0xe1], vec![0; 4096 - 16 - 12 - 3]].concat(),
        );
        assert_eq!(biggest.len(), V2_MAX_LEN);
        assert!(parse_v2(&biggest).is_ok());
    }

    #[tokio::test]
    async fn read_header_leaves_the_request_unread() {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut v2_with_tlvs = v4_block();
        v2_with_tlvs.extend(tlvs());
        let headers: Vec<(Vec<u8>, ProxyHeader)> = vec![
            (
                b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\r\n".to_vec(),
                proxied("192.0.2.7:51000", "10.1.2.3:443"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 8443\r\n".to_vec(),
                proxied("[2001:db8::1]:1234", "[2001:db8::2]:8443"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
            (
                b"PROXY UNKNOWN whatever 1 2\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (
                v2(0x21, 0x11, &v2_with_tlvs),
                proxied("192.0.2.7:51000", "10.1.2.3:443"),
            ),
            (
                v2(0x21, 0x21, &v6_block()),
                proxied("[2001:db8::1]:1234", "[2001:db8::2]:8443"),
            ),
            (v2(0x20, 0x00, &[]), ProxyHeader::Local),
        ];
        for (header, expected) in headers {
            let input = [header.as_slice(), request].concat();
            let (result, rest) = read_all(&input).await;
            assert_eq!(result.unwrap(), expected);
            assert_eq!(
                rest,
                request,
                "after {:?}",
                String::from_utf8_lossy(&header)
            );
            // A TLS ClientHello starts with 0x16: it must survive too.
            let input = [header.as_slice(), &[0x16, 0x03, 0x01]].concat();
            assert_eq!(read_all(&input).await.1, [0x16, 0x03, 0x01]);
        }
    }

    /// The header arrives and the sender then waits for us: `read_header` must not block
    /// waiting for bytes that only come after the header.
    #[tokio::test]
    async fn read_header_does_not_wait_past_the_header() {
        use tokio::io::AsyncWriteExt;
        let headers: Vec<Vec<u8>> = vec![
            b"PROXY UNKNOWN\r\n".to_vec(),
            b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n".to_vec(),
            b"PROXY TCP6 :: :: 0 0\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\r\n".to_vec(),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x11, &v4_block()),
        ];
        for header in headers {
            let (mut client, mut server) = tokio::io::duplex(1024);
            client.write_all(&header).await.unwrap();
            let result = read_header_with_timeout(&mut server, Duration::from_secs(5)).await;
            assert!(
                result.is_ok(),
                "{:?}: {result:?}",
                String::from_utf8_lossy(&header)
            );
            drop(client);
        }
    }

    #[tokio::test]
    async fn read_header_rejects_early() {
        // One byte is enough to reject an HTTP request, and nothing more is read.
        let (result, rest) = read_all(b"GET / HTTP/1.1\r\n").await;
        assert!(matches!(result, Err(ProxyError::NotProxyProtocol)));
        assert_eq!(rest, b"ET / HTTP/1.1\r\n");
        let (result, _) = read_all(b"PRI * HTTP/2.0\r\n").await;
        assert!(matches!(result, Err(ProxyError::NotProxyProtocol)));
        let (result, _) = read_all(b"\r\n\r\nGET / HTTP/1.1\r\n").await;
        assert!(matches!(result, Err(ProxyError::NotProxyProtocol)));
        // Truncated input is an I/O error (unexpected EOF).
        let (result, _) = read_all(b"PROXY TCP4 192.0.2.7").await;
        assert!(matches!(result, Err(ProxyError::Io(_))));
        let (result, _) = read_all(b"").await;
        assert!(matches!(result, Err(ProxyError::Io(_))));
        // No CRLF within 107 bytes.
        let (result, _) = read_all(&[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat()).await;
        assert!(matches!(result, Err(ProxyError::TooLong)));
        // An oversize v2 header is refused before its body is read.
        let mut big = v2(0x21, 0x11, &[]);
        big[14..16].copy_from_slice(&60000u16.to_be_bytes());
        let (result, rest) = read_all(&[big.as_slice(), b"body"].concat()).await;
        assert!(matches!(result, Err(ProxyError::TooLong)));
        assert_eq!(rest, b"body");
        // So is a bad version.
        let (result, rest) = read_all(&[v2(0x11, 0x11, &[]).as_slice(), b"body"].concat()).await;
        assert!(matches!(result, Err(ProxyError::Malformed(_))));
        assert_eq!(rest, b"body");
    }

    #[tokio::test]
    async fn read_header_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let result = read_header_with_timeout(&mut server, Duration::from_millis(20)).await;
        assert!(matches!(result, Err(ProxyError::Timeout)));
    }

    /// Deterministic xorshift64*, so the random tests are reproducible without a proptest dep.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random, truncated and mutated inputs: the parsers must return rather than panic. When
    /// `read_header` accepts a header, the bytes it consumed must be a header that the matching
    /// pure parser also accepts, with the same result.
    #[tokio::test]
    async fn random_inputs_never_panic() {
        let mut v2_tlv = v4_block();
        v2_tlv.extend(tlvs());
        let seeds: Vec<Vec<u8>> = vec![
            b"PROXY TCP4 192.0.2.7 10.1.2.3 51000 443\r\n".to_vec(),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 8443\r\n".to_vec(),
            b"PROXY UNKNOWN\r\n".to_vec(),
            v2(0x21, 0x11, &v2_tlv),
            v2(0x21, 0x21, &v6_block()),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x31, &[7; 216]),
        ];
        let alphabet = b"PROXY TCP46UNKNOWN0123456789abcdef.:\r\n\0QUIT \x11\x21\x20";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for i in 0..30_000 {
            let mut input = if i % 3 == 0 {
                // Pure noise, biased towards header-ish bytes.
                let len = rng.below(140);
                (0..len)
                    .map(|_| {
                        if rng.below(2) == 0 {
                            alphabet[rng.below(alphabet.len())]
                        } else {
                            rng.next() as u8
                        }
                    })
                    .collect()
            } else {
                seeds[rng.below(seeds.len())].clone()
            };
            // Mutate: flip, insert or delete a few bytes, and sometimes truncate.
            for _ in 0..rng.below(4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.below(input.len());
                match rng.below(3) {
                    0 => input[at] = rng.next() as u8,
                    1 => input.insert(at, rng.next() as u8),
                    _ => {
                        input.remove(at);
                    }
                }
            }
            if rng.below(4) == 0 && !input.is_empty() {
                input.truncate(rng.below(input.len()));
            }
            let _ = parse_v1(&input);
            let _ = parse_v2(&input);
            input.extend_from_slice(b"GET");
            let (result, rest) = read_all(&input).await;
            if let Ok(header) = result {
                accepted += 1;
                let consumed = &input[..input.len() - rest.len()];
                let again = if consumed.starts_with(b"P") {
                    parse_v1(consumed)
                } else {
                    parse_v2(consumed)
                };
                assert_eq!(again.unwrap(), header, "input {input:?}");
                assert!(consumed.len() <= V2_MAX_LEN);
            }
        }
        assert!(
            accepted > 100,
            "the mutations should leave some headers valid"
        );
    }
}
