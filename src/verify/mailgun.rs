//! Mailgun's webhook signature, which travels in the body rather than a header: JSON
//! `{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}` or a form body with
//! `timestamp`, `token`, `signature` fields. signature = hex(HMAC-SHA256(signing key,
//! timestamp + token)). An event of a subaccount also carries `parent-signature`, made with the
//! parent account's key: either may verify, so a route can hold the parent's key. The timestamp
//! must be within 15 minutes either way, as the mailgun SDK's `verify_webhook` demands. Only
//! those fields are read; the rest of the body is never interpreted, and a body with the fields
//! missing is refused, never passed.

use std::time::{Duration, SystemTime};

use ring::hmac;

use super::config::{self, RawVerify, SecretEncoding, VerifyConfigError};
use super::encoding::{self, ct_eq};
use super::timestamp::{TimestampRule, TsFormat, TsSource};
use super::{Failure, Reason, SignError, SignedRequest, Verified};

/// The mailgun SDK's `max_age_seconds` default, applied both ways (`abs(now - timestamp)`).
const DEFAULT_WINDOW: Duration = Duration::from_secs(900);

pub struct Mailgun {
    keys: Vec<hmac::Key>,
    timestamp: TimestampRule,
}

struct Fields {
    timestamp: String,
    token: String,
    signature: String,
}

impl Mailgun {
    /// `tolerance` / `future_tolerance` override the default 15 minutes (`off` disables).
    pub fn compile(raw: &RawVerify) -> Result<Mailgun, VerifyConfigError> {
        let keys = config::decode_secrets(&raw.secrets, SecretEncoding::Utf8)?
            .iter()
            .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k))
            .collect();
        let window = |f: &str, v: &Option<String>| match v {
            Some(v) => config::parse_window(f, v),
            None => Ok(Some(DEFAULT_WINDOW)),
        };
        Ok(Mailgun {
            keys,
            timestamp: TimestampRule {
                source: TsSource::Structured,
                format: TsFormat::Seconds,
                tolerance: window("tolerance", &raw.tolerance)?,
                future: window("future_tolerance", &raw.future_tolerance)?,
            },
        })
    }

    /// The signature fields of a JSON body: `signature`, then `parent-signature` if present.
    fn json_fields(body: &[u8]) -> Result<Vec<Fields>, Reason> {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| Reason::Malformed)?;
        let read = |sig: &serde_json::Value| -> Result<Fields, Reason> {
            let get = |k: &str| -> Result<String, Reason> {
                match sig.get(k) {
                    None | Some(serde_json::Value::Null) => Err(Reason::Missing),
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                    Some(_) => Err(Reason::Malformed),
                }
            };
            Ok(Fields {
                timestamp: get("timestamp")?,
                token: get("token")?,
                signature: get("signature")?,
            })
        };
        let mut fields = vec![read(v.get("signature").ok_or(Reason::Missing)?)?];
        if let Some(parent) = v.get("parent-signature") {
            fields.push(read(parent)?);
        }
        Ok(fields)
    }

    fn form_fields(body: &[u8]) -> Result<Fields, Reason> {
        let (mut ts, mut token, mut sig) = (None, None, None);
        for (k, v) in form_urlencoded::parse(body) {
            let slot = match k.as_ref() {
                "timestamp" => &mut ts,
                "token" => &mut token,
                "signature" => &mut sig,
                _ => continue,
            };
            if slot.is_some() {
                return Err(Reason::Malformed);
            }
            *slot = Some(v.into_owned());
        }
        Ok(Fields {
            timestamp: ts.ok_or(Reason::Missing)?,
            token: token.ok_or(Reason::Missing)?,
            signature: sig.ok_or(Reason::Missing)?,
        })
    }

    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        let body = req.body.joined();
        let candidates = if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            Self::json_fields(&body)?
        } else {
            vec![Self::form_fields(&body)?]
        };
        // The first refusal is reported when neither signature verifies.
        let mut refusal = None;
        for f in &candidates {
            match self.verify_fields(f, now) {
                Ok(verified) => return Ok(verified),
                Err(failure) => {
                    refusal.get_or_insert(failure);
                }
            }
        }
        Err(refusal.unwrap_or_else(|| Reason::Missing.into()))
    }

    fn verify_fields(&self, f: &Fields, now: SystemTime) -> Result<Verified, Failure> {
        let mut sig = [0u8; 32];
        match encoding::hex_decode_into(f.signature.trim().as_bytes(), &mut sig) {
            Some(32) => {}
            _ => return Err(Reason::Malformed.into()),
        }
        self.timestamp.check(&f.timestamp, now)?;
        for (i, key) in self.keys.iter().enumerate() {
            let mut ctx = hmac::Context::with_key(key);
            ctx.update(f.timestamp.as_bytes());
            ctx.update(f.token.as_bytes());
            if ct_eq(ctx.sign().as_ref(), &sig) {
                return Ok(Verified { secret_index: i });
            }
        }
        Err(Reason::Mismatch.into())
    }

    /// The signature lives in the body, so there are no headers to produce.
    pub fn sign(&self) -> Result<Vec<(String, String)>, SignError> {
        Err(SignError::Unsupported(
            "mailgun signs fields inside the body".into(),
        ))
    }

    /// The `signature` value for `timestamp` + `token` (tests and tooling).
    #[cfg(test)]
    pub fn signature_fields(&self, timestamp: &str, token: &str) -> Option<String> {
        let key = self.keys.first()?;
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(timestamp.as_bytes());
        ctx.update(token.as_bytes());
        Some(encoding::hex_encode(ctx.sign().as_ref()))
    }
}
