//! Standard Webhooks asymmetric signatures (`v1a`): Ed25519 over `webhook-id.webhook-timestamp.body`,
//! sent as space-separated `v1a,<base64>` entries in `webhook-signature`, verified with the
//! sender's `whpk_<base64>` public key. Used when a `standard-webhooks` route sets `public_key`
//! instead of `secrets`. It holds only public keys, so it verifies but never signs; `v1` (HMAC)
//! entries are ignored here, and only-`v1` headers are reported as an unknown version.

use std::time::{Duration, SystemTime};

use ring::signature::{UnparsedPublicKey, ED25519};

use super::config::{self, RawVerify, VerifyConfigError};
use super::encoding;
use super::timestamp::{TimestampRule, TsFormat, TsSource};
use super::{header_str, Failure, Reason, SignedRequest, Verified};
use super::{MAX_CANDIDATES, MAX_HEADER_LEN};

const ID: http::HeaderName = http::HeaderName::from_static("webhook-id");
const TIMESTAMP: http::HeaderName = http::HeaderName::from_static("webhook-timestamp");
const SIGNATURE: http::HeaderName = http::HeaderName::from_static("webhook-signature");

pub struct V1a {
    keys: Vec<UnparsedPublicKey<Vec<u8>>>,
    timestamp: TimestampRule,
}

impl V1a {
    /// `public_key` holds one or more `whpk_` keys separated by spaces or commas (rotation);
    /// `secret_index` in `Verified` is the index of the key that matched.
    pub fn compile(raw: &RawVerify) -> Result<V1a, VerifyConfigError> {
        let text = raw.public_key.as_deref().unwrap_or_default();
        let mut keys = Vec::new();
        for (i, k) in text
            .split([' ', ',', '\n'])
            .filter(|k| !k.trim().is_empty())
            .enumerate()
        {
            let b64 = k.trim().strip_prefix("whpk_").unwrap_or(k.trim());
            let bytes = encoding::base64_decode(b64.as_bytes())
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    VerifyConfigError::new(
                        "public_key",
                        format!("key {i} is not `whpk_` + base64 of 32 bytes"),
                    )
                })?;
            keys.push(UnparsedPublicKey::new(&ED25519, bytes));
        }
        if keys.is_empty() {
            return Err(VerifyConfigError::new("public_key", "no key given"));
        }
        if !raw.secrets.is_empty() {
            return Err(VerifyConfigError::new(
                "secrets",
                "use either secrets (v1, HMAC) or public_key (v1a, Ed25519), not both",
            ));
        }
        let w = |f: &str, v: &Option<String>| match v {
            Some(v) => config::parse_window(f, v),
            None => Ok(Some(Duration::from_secs(300))),
        };
        Ok(V1a {
            keys,
            timestamp: TimestampRule {
                source: TsSource::Header(TIMESTAMP),
                format: TsFormat::Seconds,
                tolerance: w("tolerance", &raw.tolerance)?,
                future: w("future_tolerance", &raw.future_tolerance)?,
            },
        })
    }

    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        let sig_text = header_str(req.headers, &SIGNATURE)?;
        let id = header_str(req.headers, &ID)?;
        let ts = header_str(req.headers, &TIMESTAMP)?;
        if sig_text.len() > MAX_HEADER_LEN || ts.len() > 64 {
            return Err(Reason::Malformed.into());
        }
        let mut sigs = [[0u8; 64]; MAX_CANDIDATES];
        let mut n = 0;
        let mut other = false;
        for entry in sig_text.split(' ').filter(|e| !e.is_empty()) {
            match entry.split_once(',') {
                Some(("v1a", b64)) => {
                    let slot = sigs.get_mut(n).ok_or(Reason::Malformed)?;
                    if encoding::base64_decode_into(b64.as_bytes(), slot) == Some(64) {
                        n += 1;
                    }
                }
                Some(_) => other = true,
                None => return Err(Reason::Malformed.into()),
            }
        }
        if n == 0 {
            let unknown_only = other && !sig_text.split(' ').any(|e| e.starts_with("v1a,"));
            return Err(if unknown_only {
                Reason::UnknownVersion
            } else {
                Reason::Malformed
            }
            .into());
        }
        self.timestamp.check(ts, now)?;
        let mut msg = Vec::with_capacity(id.len() + ts.len() + 2 + req.body.len());
        msg.extend_from_slice(id.as_bytes());
        msg.push(b'.');
        msg.extend_from_slice(ts.as_bytes());
        msg.push(b'.');
        req.body.append_to(&mut msg);
        for (i, key) in self.keys.iter().enumerate() {
            if sigs.iter().take(n).any(|s| key.verify(&msg, s).is_ok()) {
                return Ok(Verified { secret_index: i });
            }
        }
        Err(Reason::Mismatch.into())
    }
}
