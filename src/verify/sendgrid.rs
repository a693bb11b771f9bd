//! SendGrid (Twilio SendGrid) Event Webhook signatures: ECDSA P-256 with SHA-256 over
//! `X-Twilio-Email-Event-Webhook-Timestamp` + raw body; the signature header is a base64 DER
//! signature and the public key is the base64 DER SubjectPublicKeyInfo shown in SendGrid's mail
//! settings (PEM armour accepted). It holds only a public key, never signs, and a key that is not
//! a P-256 SubjectPublicKeyInfo is a config error.

use std::time::SystemTime;

use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1};

use super::config::{RawVerify, VerifyConfigError};
use super::encoding;
use super::timestamp::TimestampRule;
use super::MAX_HEADER_LEN;
use super::{header_str, Failure, Reason, SignedRequest, Verified};

const SIGNATURE: http::HeaderName =
    http::HeaderName::from_static("x-twilio-email-event-webhook-signature");
const TIMESTAMP: http::HeaderName =
    http::HeaderName::from_static("x-twilio-email-event-webhook-timestamp");

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, BIT STRING of 66).
pub const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

pub struct Sendgrid {
    key: UnparsedPublicKey<Vec<u8>>,
    timestamp: TimestampRule,
}

impl Sendgrid {
    pub fn compile(raw: &RawVerify) -> Result<Sendgrid, VerifyConfigError> {
        let text = raw.public_key.as_deref().ok_or_else(|| {
            VerifyConfigError::new(
                "public_key",
                "required for sendgrid (the verification key, base64)",
            )
        })?;
        let b64: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = encoding::base64_decode(b64.as_bytes())
            .ok_or_else(|| VerifyConfigError::new("public_key", "not valid base64"))?;
        let point = der
            .strip_prefix(&P256_SPKI_PREFIX[..])
            .filter(|p| p.len() == 65 && p[0] == 0x04)
            .ok_or_else(|| {
                VerifyConfigError::new(
                    "public_key",
                    "not an uncompressed P-256 SubjectPublicKeyInfo",
                )
            })?;
        if !raw.secrets.is_empty() {
            return Err(VerifyConfigError::new(
                "secrets",
                "sendgrid verifies with public_key; remove secrets",
            ));
        }
        Ok(Sendgrid {
            key: UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point.to_vec()),
            timestamp: super::discord::window(raw)?,
        })
    }

    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        let sig_text = header_str(req.headers, &SIGNATURE)?;
        let ts = header_str(req.headers, &TIMESTAMP)?;
        if sig_text.len() > MAX_HEADER_LEN || ts.len() > 64 {
            return Err(Reason::Malformed.into());
        }
        let mut sig = [0u8; 80];
        let n = encoding::base64_decode_into(sig_text.trim().as_bytes(), &mut sig)
            .ok_or(Reason::Malformed)?;
        if !(8..=72).contains(&n) {
            return Err(Reason::Malformed.into());
        }
        self.timestamp.check(ts, now)?;
        let mut msg = Vec::with_capacity(ts.len() + req.body.len());
        msg.extend_from_slice(ts.as_bytes());
        req.body.append_to(&mut msg);
        self.key
            .verify(&msg, &sig[..n])
            .map_err(|_| Reason::Mismatch)?;
        Ok(Verified { secret_index: 0 })
    }
}
