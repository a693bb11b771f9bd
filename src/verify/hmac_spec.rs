//! What defines an HMAC scheme before keys are attached (`HmacSpec`): the algorithm, the
//! signature header's layout, the template and the timestamp rule. Presets build one from static
//! data; `provider: hmac` compiles one from its `RawVerify` here, refusing at load any block that
//! could never match (so nothing fails open or closed at run time).

use std::time::Duration;

use http::HeaderName;
use ring::hmac;

use super::config::{self, RawVerify, SecretEncoding, VerifyConfigError};
use super::encoding::Encoding;
use super::template::{parse_template, Part, UrlMode};
use super::timestamp::{TimestampRule, TsFormat, TsSource};

/// Hash function of an HMAC scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn parse(value: &str) -> Result<Self, VerifyConfigError> {
        match value {
            "sha1" => Ok(Algorithm::Sha1),
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(VerifyConfigError::new(
                "algorithm",
                format!("unknown algorithm `{other}` (expected sha1, sha256 or sha512)"),
            )),
        }
    }

    pub fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Algorithm::Sha256 => hmac::HMAC_SHA256,
            Algorithm::Sha512 => hmac::HMAC_SHA512,
        }
    }

    pub fn tag_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }
}

/// How the signature header is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigFormat {
    /// `prefix` + signature; with a separator, several such entries (any may match).
    Plain {
        prefix: String,
        separator: Option<String>,
    },
    /// `key=value` entries split by `separator` (`t=..,v1=..`, `ts=..;h1=..`, `v1,<b64> v1,<b64>`).
    Structured {
        separator: String,
        key_sep: String,
        sig_key: String,
        ts_key: Option<String>,
    },
}

/// Everything that defines an HMAC scheme, before key material is attached. Presets produce one
/// from static data; `provider: hmac` produces one from its `RawVerify`.
#[derive(Debug, Clone)]
pub struct HmacSpec {
    pub algorithm: Algorithm,
    pub header: HeaderName,
    /// The same header under another name, read when `header` is absent (Shopify's newer
    /// deliveries drop the `X-` prefix).
    pub header_alias: Option<HeaderName>,
    pub format: SigFormat,
    pub encoding: Encoding,
    pub template: Vec<Part>,
    pub timestamp: Option<TimestampRule>,
    pub id_header: Option<HeaderName>,
    pub secret_encoding: SecretEncoding,
    pub url_mode: UrlMode,
}

impl HmacSpec {
    /// The spec of `provider: hmac` from its raw block.
    pub fn from_raw(raw: &RawVerify) -> Result<HmacSpec, VerifyConfigError> {
        let algorithm = Algorithm::parse(raw.algorithm.as_deref().unwrap_or("sha256"))?;
        let header = match raw.header.as_deref() {
            Some(h) => config::parse_header_name("header", h)?,
            None => {
                return Err(VerifyConfigError::new(
                    "header",
                    "required for provider hmac",
                ))
            }
        };
        let encoding = match raw.encoding.as_deref().unwrap_or("hex") {
            "hex" => Encoding::Hex,
            "base64" => Encoding::Base64,
            other => {
                return Err(VerifyConfigError::new(
                    "encoding",
                    format!("unknown encoding `{other}` (expected hex or base64)"),
                ))
            }
        };
        let format = match raw.signature_key.as_deref() {
            Some(key) => {
                if raw.prefix.is_some() {
                    return Err(VerifyConfigError::new(
                        "prefix",
                        "not used with signature_key (the key names the entry)",
                    ));
                }
                let separator = raw.separator.clone().unwrap_or_else(|| ",".into());
                let key_sep = raw.key_separator.clone().unwrap_or_else(|| "=".into());
                for (field, v) in [("separator", &separator), ("key_separator", &key_sep)] {
                    if v.is_empty() {
                        return Err(VerifyConfigError::new(field, "must not be empty"));
                    }
                }
                check_separator(&separator, "")?;
                if key_sep.contains(separator.as_str()) || separator.contains(key_sep.as_str()) {
                    return Err(VerifyConfigError::new(
                        "key_separator",
                        "must differ from separator",
                    ));
                }
                // Keys are short tokens (`v1`, `t`, `h1`); anything else could contain a separator.
                for (field, k) in [
                    ("signature_key", Some(key)),
                    ("timestamp_key", raw.timestamp_key.as_deref()),
                ] {
                    if let Some(k) = k {
                        if k.is_empty()
                            || !k
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        {
                            return Err(VerifyConfigError::new(
                                field,
                                "must be letters, digits, '_' or '-'",
                            ));
                        }
                    }
                }
                if raw.timestamp_key.as_deref() == Some(key) {
                    return Err(VerifyConfigError::new(
                        "timestamp_key",
                        "must differ from signature_key",
                    ));
                }
                SigFormat::Structured {
                    separator,
                    key_sep,
                    sig_key: key.to_string(),
                    ts_key: raw.timestamp_key.clone(),
                }
            }
            None => {
                if raw.timestamp_key.is_some() {
                    return Err(VerifyConfigError::new(
                        "timestamp_key",
                        "needs signature_key",
                    ));
                }
                if raw.key_separator.is_some() {
                    return Err(VerifyConfigError::new(
                        "key_separator",
                        "needs signature_key",
                    ));
                }
                if raw.separator.as_deref() == Some("") {
                    return Err(VerifyConfigError::new("separator", "must not be empty"));
                }
                if let Some(separator) = raw.separator.as_deref() {
                    check_separator(separator, raw.prefix.as_deref().unwrap_or(""))?;
                }
                SigFormat::Plain {
                    prefix: raw.prefix.clone().unwrap_or_default(),
                    separator: raw.separator.clone(),
                }
            }
        };
        let template = parse_template(raw.signed.as_deref().unwrap_or("{body}"))?;
        let format_ts = TsFormat::parse(raw.timestamp_format.as_deref().unwrap_or("seconds"))?;
        let ts_source = match (&format, raw.timestamp_header.as_deref()) {
            (
                SigFormat::Structured {
                    ts_key: Some(_), ..
                },
                Some(_),
            ) => {
                return Err(VerifyConfigError::new(
                    "timestamp_header",
                    "the timestamp already comes from timestamp_key",
                ))
            }
            (
                SigFormat::Structured {
                    ts_key: Some(_), ..
                },
                None,
            ) => Some(TsSource::Structured),
            (_, Some(h)) => Some(TsSource::Header(config::parse_header_name(
                "timestamp_header",
                h,
            )?)),
            (_, None) => None,
        };
        let timestamp = match ts_source {
            Some(source) => Some(TimestampRule {
                source,
                format: format_ts,
                tolerance: Some(Duration::from_secs(300)),
                future: Some(Duration::from_secs(300)),
            }),
            None => {
                if template.contains(&Part::Timestamp) {
                    return Err(VerifyConfigError::new(
                        "signed",
                        "`{timestamp}` needs timestamp_header or timestamp_key",
                    ));
                }
                for field in ["tolerance", "future_tolerance", "timestamp_format"] {
                    let set = match field {
                        "tolerance" => raw.tolerance.is_some(),
                        "future_tolerance" => raw.future_tolerance.is_some(),
                        _ => raw.timestamp_format.is_some(),
                    };
                    if set {
                        return Err(VerifyConfigError::new(
                            field,
                            "needs timestamp_header or timestamp_key",
                        ));
                    }
                }
                None
            }
        };
        let id_header = match raw.id_header.as_deref() {
            Some(h) => Some(config::parse_header_name("id_header", h)?),
            None => None,
        };
        if template.contains(&Part::Id) && id_header.is_none() {
            return Err(VerifyConfigError::new("signed", "`{id}` needs id_header"));
        }
        let secret_encoding = match raw.secret_encoding.as_deref() {
            Some(v) => SecretEncoding::parse("secret_encoding", v)?,
            None => SecretEncoding::Utf8,
        };
        Ok(HmacSpec {
            algorithm,
            header,
            header_alias: None,
            format,
            encoding,
            template,
            timestamp,
            id_header,
            secret_encoding,
            url_mode: UrlMode::Raw,
        })
    }
}

/// A separator that can occur inside an encoded signature (hex, base64, base64url) or inside the
/// prefix would cut signatures apart: no request could ever match. Found by the verify fuzz
/// target; refused at load instead of failing closed at run time.
fn check_separator(separator: &str, prefix: &str) -> Result<(), VerifyConfigError> {
    if separator
        .bytes()
        .any(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
    {
        return Err(VerifyConfigError::new(
            "separator",
            "must not use characters an encoded signature can contain (letters, digits, + / = - _)",
        ));
    }
    if prefix.contains(separator) {
        return Err(VerifyConfigError::new(
            "separator",
            "must not occur in the prefix",
        ));
    }
    Ok(())
}
