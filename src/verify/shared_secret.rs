//! The two shared-secret schemes: `provider: token` (the secret itself in a header) and
//! `provider: basic-auth` (`user:password`). Both compare SHA-256 digests in constant time against
//! every secret, so timing tells neither which secret matched nor how long the secrets are.

use http::HeaderName;

use super::config::{self, RawVerify, SecretEncoding, VerifyConfigError};
use super::encoding::{self, ct_eq};
use super::{header_str, Failure, Reason, SignError, SignedRequest, Verified, MAX_HEADER_LEN};

/// Index of the first secret equal to `given`, comparing SHA-256 digests in constant time and
/// visiting every secret.
fn match_digest(secrets: &[Vec<u8>], given: &[u8]) -> Option<usize> {
    let given = ring::digest::digest(&ring::digest::SHA256, given);
    let mut found = None;
    for (i, s) in secrets.iter().enumerate() {
        let d = ring::digest::digest(&ring::digest::SHA256, s);
        if ct_eq(d.as_ref(), given.as_ref()) && found.is_none() {
            found = Some(i);
        }
    }
    found
}

/// `provider: token` (and GitLab): the shared secret itself travels in a header.
pub struct TokenScheme {
    header: HeaderName,
    prefix: String,
    tokens: Vec<Vec<u8>>,
    pub id_header: Option<HeaderName>,
}

impl TokenScheme {
    pub fn compile(
        raw: &RawVerify,
        header: HeaderName,
        prefix: String,
        id_header: Option<HeaderName>,
    ) -> Result<TokenScheme, VerifyConfigError> {
        let tokens = config::decode_secrets(&raw.secrets, SecretEncoding::Utf8)?;
        // The token travels as a header value: visible ASCII, and HTTP strips whitespace at
        // either end, so such a token could never match. Found by the verify fuzz target.
        for (i, token) in tokens.iter().enumerate() {
            let printable = token.iter().all(|b| *b == b' ' || b.is_ascii_graphic());
            let trimmed = token.first() != Some(&b' ') && token.last() != Some(&b' ');
            if !printable || !trimmed {
                return Err(VerifyConfigError::new(
                    format!("secrets[{i}]"),
                    "a token must be printable ASCII without spaces at either end (it is sent as a header value)",
                ));
            }
        }
        Ok(TokenScheme {
            header,
            prefix,
            tokens,
            id_header,
        })
    }

    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = header_str(req.headers, &self.header)?;
        if value.len() > MAX_HEADER_LEN {
            return Err(Reason::Malformed.into());
        }
        let token = value
            .strip_prefix(self.prefix.as_str())
            .ok_or(Reason::Malformed)?;
        if token.is_empty() {
            return Err(Reason::Malformed.into());
        }
        // Compare digests against every secret: timing tells neither which secret matched nor
        // how long the secrets are.
        let found = match_digest(&self.tokens, token.as_bytes());
        found
            .map(|secret_index| Verified { secret_index })
            .ok_or_else(|| Reason::Mismatch.into())
    }

    pub fn sign(&self) -> Result<Vec<(String, String)>, SignError> {
        let t = self.tokens.first().ok_or(SignError::NoSecret)?;
        let t = String::from_utf8_lossy(t);
        Ok(vec![(
            self.header.as_str().to_string(),
            format!("{}{}", self.prefix, t),
        )])
    }
}

/// `provider: basic-auth` (Postmark): `Authorization: Basic base64(user:password)`; each secret
/// is `user:password`.
pub struct BasicScheme {
    header: HeaderName,
    creds: Vec<Vec<u8>>,
}

impl BasicScheme {
    pub fn compile(raw: &RawVerify, header: HeaderName) -> Result<BasicScheme, VerifyConfigError> {
        let creds = config::decode_secrets(&raw.secrets, SecretEncoding::Utf8)?;
        for (i, c) in creds.iter().enumerate() {
            if !c.contains(&b':') {
                return Err(VerifyConfigError::new(
                    format!("secrets[{i}]"),
                    "basic-auth secrets are written `user:password`",
                ));
            }
        }
        Ok(BasicScheme { header, creds })
    }

    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let value = header_str(req.headers, &self.header)?;
        let (scheme, b64) = value.trim().split_once(' ').ok_or(Reason::Malformed)?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return Err(Reason::Malformed.into());
        }
        let mut buf = [0u8; 512];
        let n = encoding::base64_decode_into(b64.trim().as_bytes(), &mut buf)
            .ok_or(Reason::Malformed)?;
        let found = match_digest(&self.creds, &buf[..n]);
        found
            .map(|secret_index| Verified { secret_index })
            .ok_or_else(|| Reason::Mismatch.into())
    }

    pub fn sign(&self) -> Result<Vec<(String, String)>, SignError> {
        let c = self.creds.first().ok_or(SignError::NoSecret)?;
        Ok(vec![(
            self.header.as_str().to_string(),
            format!("Basic {}", encoding::base64_encode(c)),
        )])
    }
}
