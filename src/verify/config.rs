//! The `verify:` key of a route as written in gateway.yaml (`RawVerify`), the `Secret` type that
//! holds key material, and the one error type for a verify block that cannot be compiled
//! (`VerifyConfigError`). This module only describes and decodes configuration; it never verifies
//! a request, and nothing here may ever print, log or format a secret's value.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use serde_saphyr::{Location, Spanned};

/// A shared secret as written in the config (already `${ENV}`-interpolated by the YAML loader).
/// Debug and Display never show the value.
#[derive(Clone, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value. The value is only reachable through `expose`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's text. Call it only to derive key material, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The `verify:` block of a route (DESIGN.md section 4). Every field but `provider` and
/// `secrets` is optional; presets fill in what their provider fixes.
// Read through `LocatedVerify`, so each key's line and column are kept for config errors; the
// schema is derived from this type.
#[derive(Debug, Clone, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// `github`, `stripe`, ... or the generic `hmac`, `token`, `basic-auth`.
    pub provider: String,
    /// Secrets, newest first. Any may match (rotation); the index of the match is reported.
    /// For `basic-auth` each entry is `user:password`.
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// `utf8` (default for most), `base64` (a leading `whsec_` is stripped) or `hex`.
    pub secret_encoding: Option<String>,
    /// `sha1` | `sha256` | `sha512` (generic `hmac` only).
    pub algorithm: Option<String>,
    /// The header that carries the signature (or the token for `token`).
    pub header: Option<String>,
    /// Text before the signature, e.g. `sha256=` (or `Bearer ` for `token`).
    pub prefix: Option<String>,
    /// How the signature is written: `hex` | `base64`.
    pub encoding: Option<String>,
    /// Splits the signature header into several entries, any of which may match
    /// (`,` for PagerDuty, ` ` for Standard Webhooks, `,`/`;` for `t=..,v1=..` forms).
    pub separator: Option<String>,
    /// Structured headers: the key of the signature entries (`v1`, `h1`). Setting it makes the
    /// header a list of `key=value` entries split by `separator`.
    pub signature_key: Option<String>,
    /// Structured headers: the key of the timestamp entry (`t`, `ts`).
    pub timestamp_key: Option<String>,
    /// Structured headers: what separates a key from its value; default `=`.
    pub key_separator: Option<String>,
    /// Template of the signed bytes over `{body}`, `{timestamp}`, `{id}`, `{method}`, `{url}`,
    /// `{header:NAME}`; default `{body}`. `{{` and `}}` are literal braces.
    pub signed: Option<String>,
    /// Header that carries the timestamp (when not inside a structured signature header).
    pub timestamp_header: Option<String>,
    /// `seconds` (default) | `milliseconds` | `rfc3339`.
    pub timestamp_format: Option<String>,
    /// Oldest accepted timestamp, e.g. `5m`; `off` disables the check. Default: the preset's
    /// (see providers.rs), `5m` for `provider: hmac` with a timestamp.
    pub tolerance: Option<String>,
    /// How far in the future a timestamp may be, e.g. `5m`; `off` accepts any future timestamp.
    /// Default: the preset's (Stripe, Twitch, HubSpot, Calendly: unchecked), `5m` for `hmac`.
    pub future_tolerance: Option<String>,
    /// Header holding the provider's delivery id (also what `{id}` refers to).
    pub id_header: Option<String>,
    /// The URL the provider was given for this route, without its query (Twilio, Square,
    /// HubSpot). Normally read by the spine and passed per request in `SignedRequest::public_url`.
    pub public_url: Option<String>,
    /// Asymmetric providers (Discord: 32-byte hex; SendGrid: base64 DER SubjectPublicKeyInfo).
    pub public_key: Option<String>,
    /// Status of a refused signature; default 401.
    pub on_failure: Option<u16>,
    /// Where each key was written; empty for a block built in code.
    #[serde(skip)]
    pub locations: FieldLocations,
}

/// Line and column of each key of a `verify:` block (`secrets[1]` for each secret), so an error
/// points at the field it names rather than at the block.
#[derive(Debug, Clone, Default)]
pub struct FieldLocations(Vec<(String, Location)>);

impl FieldLocations {
    /// Where `field` (as a `VerifyConfigError` names it) was written: the exact key, else the key
    /// it is part of (`secrets` for `secrets[3]` when the list came from an alias).
    pub fn of(&self, field: &str) -> Option<&Location> {
        let head = field.split(['[', '.']).next().unwrap_or(field);
        [field, head].into_iter().find_map(|name| {
            self.0
                .iter()
                .find(|(key, at)| key == name && *at != Location::UNKNOWN)
                .map(|(_, at)| at)
        })
    }
}

/// `RawVerify` as YAML holds it, every value with its location.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocatedVerify {
    provider: Spanned<String>,
    secrets: Option<Spanned<Vec<Spanned<Secret>>>>,
    secret_encoding: Option<Spanned<String>>,
    algorithm: Option<Spanned<String>>,
    header: Option<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    encoding: Option<Spanned<String>>,
    separator: Option<Spanned<String>>,
    signature_key: Option<Spanned<String>>,
    timestamp_key: Option<Spanned<String>>,
    key_separator: Option<Spanned<String>>,
    signed: Option<Spanned<String>>,
    timestamp_header: Option<Spanned<String>>,
    timestamp_format: Option<Spanned<String>>,
    tolerance: Option<Spanned<String>>,
    future_tolerance: Option<Spanned<String>>,
    id_header: Option<Spanned<String>>,
    public_url: Option<Spanned<String>>,
    public_key: Option<Spanned<String>>,
    on_failure: Option<Spanned<u16>>,
}

impl<'de> Deserialize<'de> for RawVerify {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = LocatedVerify::deserialize(deserializer)?;
        let mut at = vec![("provider".to_string(), v.provider.referenced)];
        let mut take = |name: &str, value: Option<Spanned<String>>| {
            value.map(|s| {
                at.push((name.to_string(), s.referenced));
                s.value
            })
        };
        let secret_encoding = take("secret_encoding", v.secret_encoding);
        let algorithm = take("algorithm", v.algorithm);
        let header = take("header", v.header);
        let prefix = take("prefix", v.prefix);
        let encoding = take("encoding", v.encoding);
        let separator = take("separator", v.separator);
        let signature_key = take("signature_key", v.signature_key);
        let timestamp_key = take("timestamp_key", v.timestamp_key);
        let key_separator = take("key_separator", v.key_separator);
        let signed = take("signed", v.signed);
        let timestamp_header = take("timestamp_header", v.timestamp_header);
        let timestamp_format = take("timestamp_format", v.timestamp_format);
        let tolerance = take("tolerance", v.tolerance);
        let future_tolerance = take("future_tolerance", v.future_tolerance);
        let id_header = take("id_header", v.id_header);
        let public_url = take("public_url", v.public_url);
        let public_key = take("public_key", v.public_key);
        let on_failure = v.on_failure.map(|s| {
            at.push(("on_failure".into(), s.referenced));
            s.value
        });
        let secrets = match v.secrets {
            None => Vec::new(),
            Some(list) => {
                at.push(("secrets".into(), list.referenced));
                let mut secrets = Vec::with_capacity(list.value.len());
                for (i, s) in list.value.into_iter().enumerate() {
                    at.push((format!("secrets[{i}]"), s.referenced));
                    secrets.push(s.value);
                }
                secrets
            }
        };
        Ok(RawVerify {
            provider: v.provider.value,
            secrets,
            secret_encoding,
            algorithm,
            header,
            prefix,
            encoding,
            separator,
            signature_key,
            timestamp_key,
            key_separator,
            signed,
            timestamp_header,
            timestamp_format,
            tolerance,
            future_tolerance,
            id_header,
            public_url,
            public_key,
            on_failure,
            locations: FieldLocations(at),
        })
    }
}

/// A verify block that cannot be compiled. `field` is relative to `verify` (`secrets[1]`,
/// `algorithm`, ...). The message never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct VerifyConfigError {
    pub field: String,
    pub message: String,
}

impl VerifyConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        VerifyConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// How secrets are turned into key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretEncoding {
    Utf8,
    /// Base64 after stripping an optional `whsec_` prefix (Standard Webhooks, Svix).
    Base64,
    Hex,
}

impl SecretEncoding {
    pub fn parse(field: &str, value: &str) -> Result<Self, VerifyConfigError> {
        match value {
            "utf8" => Ok(SecretEncoding::Utf8),
            "base64" => Ok(SecretEncoding::Base64),
            "hex" => Ok(SecretEncoding::Hex),
            other => Err(VerifyConfigError::new(
                field,
                format!("unknown secret encoding `{other}` (expected utf8, base64 or hex)"),
            )),
        }
    }
}

/// Decodes every secret into key bytes; refuses an empty list, an empty secret or one that does
/// not decode. Errors name the index (`secrets[1]`) and never the value.
pub fn decode_secrets(
    secrets: &[Secret],
    encoding: SecretEncoding,
) -> Result<Vec<Vec<u8>>, VerifyConfigError> {
    if secrets.is_empty() {
        return Err(VerifyConfigError::new(
            "secrets",
            "at least one secret is required",
        ));
    }
    secrets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field = format!("secrets[{i}]");
            let text = s.expose();
            if text.trim().is_empty() {
                return Err(VerifyConfigError::new(field, "secret is empty"));
            }
            let bytes = match encoding {
                SecretEncoding::Utf8 => text.as_bytes().to_vec(),
                SecretEncoding::Base64 => {
                    let body = text.strip_prefix("whsec_").unwrap_or(text);
                    super::encoding::base64_decode(body.as_bytes()).ok_or_else(|| {
                        VerifyConfigError::new(&field, "secret is not valid base64")
                    })?
                }
                SecretEncoding::Hex => super::encoding::hex_decode(text.as_bytes())
                    .ok_or_else(|| VerifyConfigError::new(&field, "secret is not valid hex"))?,
            };
            if bytes.is_empty() {
                return Err(VerifyConfigError::new(field, "secret decodes to no bytes"));
            }
            Ok(bytes)
        })
        .collect()
}

/// A timestamp window bound: `None` means unchecked.
pub fn parse_window(field: &str, value: &str) -> Result<Option<Duration>, VerifyConfigError> {
    match value.trim() {
        "off" | "none" => Ok(None),
        v => humantime::parse_duration(v)
            .map(Some)
            .map_err(|e| VerifyConfigError::new(field, format!("not a duration like `5m`: {e}"))),
    }
}

/// The `on_failure` status; must be a 4xx or 5xx.
pub fn parse_on_failure(value: Option<u16>) -> Result<u16, VerifyConfigError> {
    match value {
        None => Ok(401),
        Some(code) if (400..=599).contains(&code) => Ok(code),
        Some(code) => Err(VerifyConfigError::new(
            "on_failure",
            format!("{code} is not a 4xx or 5xx status"),
        )),
    }
}

/// A header name from config.
pub fn parse_header_name(field: &str, value: &str) -> Result<http::HeaderName, VerifyConfigError> {
    http::HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| VerifyConfigError::new(field, format!("`{value}` is not a valid header name")))
}
