//! Twilio's request signature: `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + the
//! form parameters sorted by name then value, each as name+value)), or, for JSON bodies, the URL
//! alone with a `bodySHA256` query parameter that must equal hex(SHA-256(body)). Like the official
//! SDK it accepts the URL with and without the default port, and HMAC-SHA256 when
//! `X-Twilio-Webhooks-Signature-Settings` names `algorithm=HMAC_SHA256`. It never accepts a body
//! that the signature does not cover (a non-form body without `bodySHA256` is refused).

use std::time::SystemTime;

use ring::{digest, hmac};

use super::config::{self, RawVerify, SecretEncoding, VerifyConfigError};
use super::encoding::{self, ct_eq};
use super::MAX_HEADER_LEN;
use super::{Failure, Reason, SignError, SignedRequest, Verified};

const SIGNATURE: &str = "x-twilio-signature";
const SETTINGS: &str = "x-twilio-webhooks-signature-settings";

pub struct Twilio {
    sha1: Vec<hmac::Key>,
    sha256: Vec<hmac::Key>,
    public_url: Option<String>,
}

impl Twilio {
    pub fn compile(raw: &RawVerify) -> Result<Twilio, VerifyConfigError> {
        let secrets = config::decode_secrets(&raw.secrets, SecretEncoding::Utf8)?;
        let public_url = raw.public_url.clone().ok_or_else(|| {
            VerifyConfigError::new("public_url", "required: Twilio signs the URL it was given")
        })?;
        Ok(Twilio {
            sha1: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, s))
                .collect(),
            sha256: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s))
                .collect(),
            public_url: Some(public_url),
        })
    }

    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    pub fn verify(&self, req: &SignedRequest<'_>) -> Result<Verified, Failure> {
        let sig_text = super::header_str(req.headers, &http::HeaderName::from_static(SIGNATURE))?;
        if sig_text.len() > MAX_HEADER_LEN {
            return Err(Reason::Malformed.into());
        }
        let keys = match req.headers.get(SETTINGS) {
            None => &self.sha1,
            Some(v) => {
                let v = v.to_str().map_err(|_| Reason::Malformed)?;
                match algorithm_of(v) {
                    None | Some("HMAC_SHA1") => &self.sha1,
                    Some("HMAC_SHA256") => &self.sha256,
                    Some(_) => return Err(Reason::UnknownVersion.into()),
                }
            }
        };
        let mut sig = [0u8; 64];
        let n = encoding::base64_decode_into(sig_text.trim().as_bytes(), &mut sig)
            .ok_or(Reason::Malformed)?;
        let sig = &sig[..n];
        let url = req
            .public_url
            .or(self.public_url.as_deref())
            .ok_or(Reason::Missing)?;

        let pairs = match body_sha256_param(url) {
            Some(expected) => {
                let mut sha = digest::Context::new(&digest::SHA256);
                for chunk in req.body.chunks() {
                    sha.update(chunk);
                }
                let got = sha.finish();
                if !ct_eq(
                    encoding::hex_encode(got.as_ref()).as_bytes(),
                    expected.to_ascii_lowercase().as_bytes(),
                ) {
                    return Err(Reason::Mismatch.into());
                }
                Vec::new()
            }
            None if req.body.is_empty() => Vec::new(),
            None if is_form(req.headers) => sorted_params(&req.body.joined()),
            // A body the signature would not cover.
            None => return Err(Reason::Malformed.into()),
        };
        for candidate in url_variants(url) {
            for (i, key) in keys.iter().enumerate() {
                let tag = compute(key, &candidate, &pairs);
                if ct_eq(tag.as_ref(), sig) {
                    return Ok(Verified { secret_index: i });
                }
            }
        }
        Err(Reason::Mismatch.into())
    }

    /// Headers for a form-encoded body (secret 0, HMAC-SHA1).
    pub fn sign(
        &self,
        body: &[u8],
        _now: SystemTime,
        public_url: Option<&str>,
    ) -> Result<Vec<(String, String)>, SignError> {
        let key = self.sha1.first().ok_or(SignError::NoSecret)?;
        let url = public_url
            .or(self.public_url.as_deref())
            .ok_or(SignError::NeedsPublicUrl)?;
        let pairs = if body_sha256_param(url).is_some() {
            Vec::new()
        } else {
            sorted_params(body)
        };
        let tag = compute(key, url, &pairs);
        Ok(vec![
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            (
                "x-twilio-signature".into(),
                encoding::base64_encode(tag.as_ref()),
            ),
        ])
    }
}

fn algorithm_of(settings: &str) -> Option<&str> {
    settings.split(',').find_map(|part| {
        let (k, v) = part.split_once('=')?;
        (k.trim() == "algorithm" && !v.trim().is_empty()).then(|| v.trim())
    })
}

fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn body_sha256_param(url: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "bodySHA256")
        .map(|(_, v)| v.into_owned())
}

/// Decoded form parameters, sorted by name then value, duplicates removed (as the SDK does).
fn sorted_params(body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

fn compute(key: &hmac::Key, url: &str, pairs: &[(String, String)]) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(url.as_bytes());
    for (k, v) in pairs {
        ctx.update(k.as_bytes());
        ctx.update(v.as_bytes());
    }
    ctx.sign()
}

/// The URL as given, then with its default port removed or added (Twilio is inconsistent).
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let default = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            out.push(format!("{scheme}://{host}{tail}"));
        }
        _ => out.push(format!("{scheme}://{authority}:{default}{tail}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_variants_add_and_remove_the_default_port() {
        assert_eq!(
            url_variants("https://a.example/x?y=1"),
            vec!["https://a.example/x?y=1", "https://a.example:443/x?y=1"]
        );
        assert_eq!(
            url_variants("https://a.example:443/x"),
            vec!["https://a.example:443/x", "https://a.example/x"]
        );
    }

    #[test]
    fn params_are_sorted_by_name_then_value_and_deduplicated() {
        let p = sorted_params(b"b=2&a=9&a=1&a=1");
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("a".into(), "9".into()),
                ("b".into(), "2".into())
            ]
        );
    }
}
