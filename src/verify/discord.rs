//! Discord interaction signatures: Ed25519 over `X-Signature-Timestamp` + raw body, signature in
//! `X-Signature-Ed25519` as hex, public key (32 bytes, hex) from the application's settings.
//! It holds only a public key, so it can verify but never sign; a key that is not 32 bytes of
//! hex is a config error, never a verifier that passes.

use std::time::SystemTime;

use ring::signature::{UnparsedPublicKey, ED25519};

use super::config::{self, RawVerify, VerifyConfigError};
use super::encoding;
use super::timestamp::{TimestampRule, TsFormat, TsSource};
use super::MAX_HEADER_LEN;
use super::{header_str, Failure, Reason, SignedRequest, Verified};

const SIGNATURE: http::HeaderName = http::HeaderName::from_static("x-signature-ed25519");
const TIMESTAMP: http::HeaderName = http::HeaderName::from_static("x-signature-timestamp");

pub struct Discord {
    key: UnparsedPublicKey<Vec<u8>>,
    timestamp: TimestampRule,
}

impl Discord {
    pub fn compile(raw: &RawVerify) -> Result<Discord, VerifyConfigError> {
        let text = raw.public_key.as_deref().ok_or_else(|| {
            VerifyConfigError::new(
                "public_key",
                "required for discord (hex, from the app's settings)",
            )
        })?;
        let key = encoding::hex_decode(text.trim().as_bytes())
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                VerifyConfigError::new("public_key", "must be 32 bytes written as 64 hex digits")
            })?;
        if !raw.secrets.is_empty() {
            return Err(VerifyConfigError::new(
                "secrets",
                "discord verifies with public_key; remove secrets",
            ));
        }
        Ok(Discord {
            key: UnparsedPublicKey::new(&ED25519, key),
            timestamp: window(raw)?,
        })
    }

    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        let sig_text = header_str(req.headers, &SIGNATURE)?;
        let ts = header_str(req.headers, &TIMESTAMP)?;
        if sig_text.len() > MAX_HEADER_LEN || ts.len() > 64 {
            return Err(Reason::Malformed.into());
        }
        let mut sig = [0u8; 64];
        match encoding::hex_decode_into(sig_text.trim().as_bytes(), &mut sig) {
            Some(64) => {}
            _ => return Err(Reason::Malformed.into()),
        }
        self.timestamp.check(ts, now)?;
        // Ed25519 needs the message in one piece.
        let mut msg = Vec::with_capacity(ts.len() + req.body.len());
        msg.extend_from_slice(ts.as_bytes());
        req.body.append_to(&mut msg);
        self.key.verify(&msg, &sig).map_err(|_| Reason::Mismatch)?;
        Ok(Verified { secret_index: 0 })
    }
}

/// Timestamp window from `tolerance` / `future_tolerance`; both unchecked unless set.
pub fn window(raw: &RawVerify) -> Result<TimestampRule, VerifyConfigError> {
    let w = |f: &str, v: &Option<String>| match v {
        Some(v) => config::parse_window(f, v),
        None => Ok(None),
    };
    Ok(TimestampRule {
        source: TsSource::Structured,
        format: TsFormat::Seconds,
        tolerance: w("tolerance", &raw.tolerance)?,
        future: w("future_tolerance", &raw.future_tolerance)?,
    })
}
