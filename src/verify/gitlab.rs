//! GitLab: a delivery authenticates with the plain secret token (`X-Gitlab-Token`, the secret
//! itself) or with a signing token (Standard Webhooks: `webhook-signature` over
//! `webhook-id.webhook-timestamp.body`, HMAC-SHA256 keyed with the base64 after `whsec_`).
//! A route's `secrets` may hold both kinds while it moves from one to the other: entries that
//! start with `whsec_` are signing tokens, the others secret tokens. A request that carries a
//! signature is judged by the signing tokens; one without, by the secret tokens. The index
//! reported is the matching secret's place in the route's `secrets` list.

use std::time::SystemTime;

use http::HeaderName;

use super::config::{RawVerify, VerifyConfigError};
use super::hmac_scheme::Scheme;
use super::providers::HmacPreset;
use super::shared_secret::TokenScheme;
use super::{Failure, Reason, SignError, SignedRequest, Verified};

const SIGNING_PREFIX: &str = "whsec_";
const SECRET_TOKEN: HeaderName = HeaderName::from_static("x-gitlab-token");
const SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// A scheme over some of the route's secrets, with their places in the full list.
struct Part<S> {
    scheme: S,
    indexes: Vec<usize>,
}

impl<S> Part<S> {
    fn map(&self, verified: Result<Verified, Failure>) -> Result<Verified, Failure> {
        let v = verified?;
        let secret_index = self.indexes.get(v.secret_index).copied().unwrap_or(0);
        Ok(Verified { secret_index })
    }
}

pub struct Gitlab {
    token: Option<Part<TokenScheme>>,
    signing: Option<Part<Scheme>>,
}

/// `raw` with only the secrets `keep` selects, and where they were.
fn split(raw: &RawVerify, keep: impl Fn(&str) -> bool) -> Option<(RawVerify, Vec<usize>)> {
    let indexes: Vec<usize> = (0..raw.secrets.len())
        .filter(|&i| keep(raw.secrets[i].expose()))
        .collect();
    if indexes.is_empty() {
        return None;
    }
    let secrets = indexes.iter().map(|&i| raw.secrets[i].clone()).collect();
    Some((
        RawVerify {
            secrets,
            ..raw.clone()
        },
        indexes,
    ))
}

impl Gitlab {
    /// `signing` is the Standard Webhooks preset the signing tokens follow.
    pub fn compile(raw: &RawVerify, signing: &HmacPreset) -> Result<Gitlab, VerifyConfigError> {
        if raw.secrets.is_empty() {
            return Err(VerifyConfigError::new(
                "secrets",
                "at least one is required",
            ));
        }
        let token = match split(raw, |s| !s.starts_with(SIGNING_PREFIX)) {
            Some((sub, indexes)) => Some(Part {
                scheme: TokenScheme::compile(&sub, SECRET_TOKEN, String::new(), None)
                    .map_err(|e| renumber(e, &indexes))?,
                indexes,
            }),
            None => None,
        };
        let signing = match split(raw, |s| s.starts_with(SIGNING_PREFIX)) {
            Some((sub, indexes)) => {
                // `{id}` is the signed webhook-id, whatever id_header names for replay.
                let sub = RawVerify {
                    id_header: None,
                    ..sub
                };
                let spec = super::spec_from_preset(signing, &sub)?;
                Some(Part {
                    scheme: Scheme::compile(spec, &sub, None).map_err(|e| renumber(e, &indexes))?,
                    indexes,
                })
            }
            None => {
                super::refuse_windows(raw, "only signing tokens (whsec_...) carry a timestamp")?;
                None
            }
        };
        Ok(Gitlab { token, signing })
    }

    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        match (&self.signing, &self.token) {
            (Some(signing), _) if req.headers.contains_key(SIGNATURE) => {
                signing.map(signing.scheme.verify(req, now))
            }
            (_, Some(token)) => token.map(token.scheme.verify(req)),
            (Some(signing), None) => signing.map(signing.scheme.verify(req, now)),
            (None, None) => Err(Reason::Missing.into()),
        }
    }

    /// Headers for a test request, with the first secret's kind.
    pub fn sign(&self, body: &[u8], now: SystemTime) -> Result<Vec<(String, String)>, SignError> {
        let first_is_signing = self
            .signing
            .as_ref()
            .is_some_and(|s| s.indexes.first() == Some(&0));
        match (&self.signing, &self.token) {
            (Some(signing), _) if first_is_signing => signing.scheme.sign(body, now, None),
            (_, Some(token)) => token.scheme.sign(),
            _ => Err(SignError::NoSecret),
        }
    }
}

/// An error about `secrets[i]` of a sub-list, renamed to the secret's place in the route's list.
fn renumber(e: VerifyConfigError, indexes: &[usize]) -> VerifyConfigError {
    let field = e
        .field
        .strip_prefix("secrets[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| indexes.get(n))
        .map_or(e.field.clone(), |i| format!("secrets[{i}]"));
    VerifyConfigError::new(field, e.message)
}
