//! Byte encodings the verifiers need (hex, lenient-padding base64) and the constant-time
//! comparison of two byte strings. Pure functions over bytes: no allocation on the verify path
//! (decoding a received signature writes into a caller's stack buffer), never a panic on any
//! input, and never an early exit that depends on secret-derived bytes.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Standard alphabet, accepting input with or without `=` padding (SDKs differ).
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest signature we ever decode: HMAC-SHA512 / Ed25519 are 64 bytes, a DER ECDSA P-256
/// signature is at most 72. Anything longer is malformed.
pub const MAX_SIG: usize = 80;

/// Fixed buffer for one decoded signature.
pub type SigBuf = [u8; MAX_SIG];

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex into `out`, returning the number of bytes written; `None` on odd length,
/// a non-hex character or output that does not fit.
pub fn hex_decode_into(input: &[u8], out: &mut [u8]) -> Option<usize> {
    if input.len() & 1 == 1 || input.len() / 2 > out.len() {
        return None;
    }
    for (i, pair) in input.chunks_exact(2).enumerate() {
        let hi = hex_val(pair[0])?;
        let lo = hex_val(pair[1])?;
        out[i] = (hi << 4) | lo;
    }
    Some(input.len() / 2)
}

/// Decodes hex into a new vector (config-time use).
pub fn hex_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0u8; input.len() / 2];
    let n = hex_decode_into(input, &mut out)?;
    out.truncate(n);
    Some(out)
}

/// Lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Decodes base64 (padding optional) into `out`; `None` if invalid or too long.
pub fn base64_decode_into(input: &[u8], out: &mut [u8]) -> Option<usize> {
    // An upper bound on the decoded size, checked before decoding so a huge value is refused
    // without work.
    if input.len() / 4 * 3 > out.len() + 3 {
        return None;
    }
    B64.decode_slice(input, out).ok()
}

/// Decodes base64 (padding optional) into a new vector (config-time use).
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    B64.decode(input).ok()
}

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Signature text encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    pub fn decode_into(self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        match self {
            Encoding::Hex => hex_decode_into(input, out),
            Encoding::Base64 => base64_decode_into(input, out),
        }
    }

    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex_encode(bytes),
            Encoding::Base64 => base64_encode(bytes),
        }
    }
}

/// Constant-time equality for equal-length inputs (the `subtle` crate's, which rustls uses too).
/// A length difference returns false at once (lengths are public: they follow from the
/// algorithm).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let mut buf = [0u8; 4];
        assert_eq!(hex_decode_into(b"00ffA1", &mut buf), Some(3));
        assert_eq!(&buf[..3], &[0x00, 0xff, 0xa1]);
        assert_eq!(hex_encode(&buf[..3]), "00ffa1");
        assert_eq!(hex_decode_into(b"0", &mut buf), None);
        assert_eq!(hex_decode_into(b"zz", &mut buf), None);
        assert_eq!(hex_decode_into(b"0011223344", &mut buf), None);
    }

    #[test]
    fn base64_accepts_missing_padding_and_refuses_oversize() {
        let mut buf = [0u8; 8];
        assert_eq!(base64_decode_into(b"aGk=", &mut buf), Some(2));
        assert_eq!(base64_decode_into(b"aGk", &mut buf), Some(2));
        assert_eq!(base64_decode_into(&[b'A'; 400], &mut buf), None);
        assert_eq!(base64_decode_into(b"a*b=", &mut buf), None);
    }

    #[test]
    fn ct_eq_compares_content_and_length() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
