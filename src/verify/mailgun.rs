//! Mailgun's webhook signature, which travels in the body rather than a header: JSON
//! `{"signature": {"timestamp", "token", "signature"}, "event-data": {...}}` or a form body with
//! `timestamp`, `token`, `signature` fields. signature = hex(HMAC-SHA256(signing key,
//! timestamp + token)). Only those fields are read; the rest of the body is never interpreted,
//! and a body with the fields missing is refused, never passed.

use std::time::SystemTime;

use ring::hmac;

use super::config::{self, RawVerify, SecretEncoding, VerifyConfigError};
use super::encoding::{self, ct_eq};
use super::scheme::{TimestampRule, TsFormat, TsSource};
use super::{Failure, Reason, SignError, SignedRequest, Verified};

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
    /// `tolerance` / `future_tolerance` are optional (Mailgun publishes no window; unset = unchecked).
    pub fn compile(raw: &RawVerify) -> Result<Mailgun, VerifyConfigError> {
        let keys = config::decode_secrets(&raw.secrets, SecretEncoding::Utf8)?
            .iter()
            .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k))
            .collect();
        let window = |f: &str, v: &Option<String>| match v {
            Some(v) => config::parse_window(f, v),
            None => Ok(None),
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

    fn fields(body: &[u8]) -> Result<Fields, Reason> {
        if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| Reason::Malformed)?;
            let sig = v.get("signature").ok_or(Reason::Missing)?;
            let get = |k: &str| -> Result<String, Reason> {
                match sig.get(k) {
                    None | Some(serde_json::Value::Null) => Err(Reason::Missing),
                    Some(serde_json::Value::String(s)) => Ok(s.clone()),
                    Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                    Some(_) => Err(Reason::Malformed),
                }
            };
            return Ok(Fields {
                timestamp: get("timestamp")?,
                token: get("token")?,
                signature: get("signature")?,
            });
        }
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
        let f = Self::fields(&req.body.joined())?;
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
