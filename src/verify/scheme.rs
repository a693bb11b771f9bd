//! The generic declarative HMAC scheme (`provider: hmac`, and every preset that is just data),
//! plus the two shared-secret schemes `token` and `basic-auth`. A scheme is compiled once from
//! an `HmacSpec` and then verifies requests over the exact raw body bytes: it streams the
//! signed-content template into ring's HMAC without copying the body, decodes each received
//! signature once into a stack buffer and compares in constant time. It never allocates a copy of
//! the body, never panics on hostile headers, and never reveals which secret or rule failed other
//! than through the `Reason` it returns.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;
use ring::hmac;

use super::config::{self, RawVerify, SecretEncoding, VerifyConfigError};
use super::encoding::{self, ct_eq, Encoding, SigBuf, MAX_SIG};
use super::{header_str, Failure, Reason, SignError, SignedRequest, Verified};

/// Longest signature header we look at; longer is malformed (no work done on it).
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Most signature entries considered in one request.
pub const MAX_CANDIDATES: usize = 16;
/// Most parts in a signed-content template.
const MAX_PARTS: usize = 16;

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

/// Where a timestamp is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsSource {
    /// A header of its own.
    Header(HeaderName),
    /// The `timestamp_key` entry of a structured signature header.
    Structured,
    /// A top-level numeric field of a JSON body (Linear's `webhookTimestamp`).
    BodyJson(&'static str),
}

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsFormat {
    Seconds,
    Milliseconds,
    Rfc3339,
}

impl TsFormat {
    pub fn parse(value: &str) -> Result<Self, VerifyConfigError> {
        match value {
            "seconds" => Ok(TsFormat::Seconds),
            "milliseconds" => Ok(TsFormat::Milliseconds),
            "rfc3339" => Ok(TsFormat::Rfc3339),
            other => Err(VerifyConfigError::new(
                "timestamp_format",
                format!("unknown timestamp format `{other}` (expected seconds, milliseconds or rfc3339)"),
            )),
        }
    }

    /// Milliseconds since the epoch; `None` if the text is not of this format.
    pub fn to_millis(self, text: &str) -> Option<i64> {
        match self {
            TsFormat::Seconds => parse_int(text)?.checked_mul(1000),
            TsFormat::Milliseconds => parse_int(text),
            TsFormat::Rfc3339 => {
                let t = humantime::parse_rfc3339(text).ok()?;
                Some(system_millis(t))
            }
        }
    }

    pub fn format(self, now: SystemTime) -> String {
        match self {
            TsFormat::Seconds => (system_millis(now) / 1000).to_string(),
            TsFormat::Milliseconds => system_millis(now).to_string(),
            TsFormat::Rfc3339 => {
                // RFC 3339 ends at year 9999 and humantime's Display errs past it (to_string()
                // would panic; found by the verify fuzz target). Clamp instead.
                use std::fmt::Write;
                let mut out = String::with_capacity(30);
                match write!(out, "{}", humantime::format_rfc3339_nanos(now)) {
                    Ok(()) => out,
                    Err(_) => "9999-12-31T23:59:59.999999999Z".to_string(),
                }
            }
        }
    }
}

/// Digits only, at most 18 of them (no sign, no spaces, no overflow).
fn parse_int(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Milliseconds since the epoch, negative before it, saturating.
pub fn system_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The timestamp rule of a scheme.
#[derive(Debug, Clone)]
pub struct TimestampRule {
    pub source: TsSource,
    pub format: TsFormat,
    /// Maximum age; `None` = unchecked.
    pub tolerance: Option<Duration>,
    /// Maximum lead into the future; `None` = unchecked.
    pub future: Option<Duration>,
}

impl TimestampRule {
    /// Checks a timestamp against `now`.
    pub fn check(&self, text: &str, now: SystemTime) -> Result<(), Reason> {
        let ts = self
            .format
            .to_millis(text.trim())
            .ok_or(Reason::Malformed)?;
        let age = i128::from(system_millis(now)) - i128::from(ts);
        if let Some(tol) = self.tolerance {
            if age > tol.as_millis() as i128 {
                return Err(Reason::Expired);
            }
        }
        if let Some(fut) = self.future {
            if -age > fut.as_millis() as i128 {
                return Err(Reason::Future);
            }
        }
        Ok(())
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

/// How `{url}` is presented to the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlMode {
    /// Exactly as configured (+ query).
    Raw,
    /// HubSpot v3: a fixed set of percent-escapes is decoded first.
    HubspotDecoded,
}

/// One part of a signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(Vec<u8>),
    Body,
    Timestamp,
    Id,
    Method,
    Url,
    Header(HeaderName),
}

/// Parses `"{timestamp}.{body}"` style templates.
pub fn parse_template(text: &str) -> Result<Vec<Part>, VerifyConfigError> {
    let err = |m: String| VerifyConfigError::new("signed", m);
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            lit.push(rest.as_bytes()[0]);
            rest = &rest[2..];
            continue;
        }
        if c == '}' {
            return Err(err("unmatched `}` (write `}}` for a literal brace)".into()));
        }
        if c != '{' {
            let mut buf = [0u8; 4];
            lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let end = rest.find('}').ok_or_else(|| err("unclosed `{`".into()))?;
        let name = &rest[1..end];
        rest = &rest[end + 1..];
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        let part = match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "id" => Part::Id,
            "method" => Part::Method,
            "url" => Part::Url,
            other => match other.strip_prefix("header:") {
                Some(h) => Part::Header(config::parse_header_name("signed", h)?),
                None => return Err(err(format!("unknown placeholder `{{{other}}}`"))),
            },
        };
        parts.push(part);
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    if parts.len() > MAX_PARTS {
        return Err(err(format!("at most {MAX_PARTS} parts")));
    }
    if !parts.contains(&Part::Body) {
        return Err(err("the template must include `{body}`".into()));
    }
    Ok(parts)
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

/// A compiled HMAC scheme: spec plus keys.
pub struct Scheme {
    pub spec: HmacSpec,
    keys: Vec<hmac::Key>,
    public_url: Option<String>,
}

impl std::fmt::Debug for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheme")
            .field("spec", &self.spec)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Decoded candidate signatures of one request, on the stack.
struct Candidates {
    bufs: [SigBuf; MAX_CANDIDATES],
    lens: [usize; MAX_CANDIDATES],
    n: usize,
}

impl Candidates {
    fn new() -> Self {
        Candidates {
            bufs: [[0u8; MAX_SIG]; MAX_CANDIDATES],
            lens: [0; MAX_CANDIDATES],
            n: 0,
        }
    }

    /// Decodes `text` as a candidate of `want` bytes; returns false if it is not one.
    fn push(&mut self, text: &str, encoding: Encoding, want: usize) -> Result<bool, Reason> {
        if self.n == MAX_CANDIDATES {
            return Err(Reason::Malformed);
        }
        match encoding.decode_into(text.trim().as_bytes(), &mut self.bufs[self.n]) {
            Some(len) if len == want => {
                self.lens[self.n] = len;
                self.n += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs[..self.n]
            .iter()
            .zip(self.lens[..self.n].iter())
            .map(|(b, &l)| &b[..l])
    }
}

/// What the signature header yielded: candidates and, for structured headers, the timestamp.
struct Parsed<'h> {
    cands: Candidates,
    ts: Option<&'h str>,
}

impl Scheme {
    /// Attaches key material to a spec. `public_url` is the configured one (fallback when a
    /// request carries none).
    pub fn compile(
        spec: HmacSpec,
        raw: &RawVerify,
        public_url: Option<String>,
    ) -> Result<Scheme, VerifyConfigError> {
        let keys = config::decode_secrets(&raw.secrets, spec.secret_encoding)?
            .into_iter()
            .map(|k| hmac::Key::new(spec.algorithm.ring(), &k))
            .collect();
        if spec.template.contains(&Part::Url) && public_url.is_none() {
            return Err(VerifyConfigError::new(
                "public_url",
                "required: the signature covers the URL the provider was given",
            ));
        }
        Ok(Scheme {
            spec,
            keys,
            public_url,
        })
    }

    /// The configured public URL, if any.
    pub fn public_url(&self) -> Option<&str> {
        self.public_url.as_deref()
    }

    /// Key `i` (for handshakes that prove the secret, and for signing).
    pub fn key(&self, i: usize) -> Option<&hmac::Key> {
        self.keys.get(i)
    }

    /// The signature header's name in this request: `header`, or its alias when only that came.
    fn signature_header(&self, headers: &http::HeaderMap) -> &HeaderName {
        match &self.spec.header_alias {
            Some(alias) if !headers.contains_key(&self.spec.header) => alias,
            _ => &self.spec.header,
        }
    }

    /// Whether the request carries no signature header at all (under either name).
    pub fn signature_absent(&self, headers: &http::HeaderMap) -> bool {
        !headers.contains_key(self.signature_header(headers))
    }

    fn parse_header<'h>(&self, req: &'h SignedRequest<'_>) -> Result<Parsed<'h>, Reason> {
        let name = self.signature_header(req.headers);
        let mut values = req.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            return Err(Reason::Missing);
        }
        let want = self.spec.algorithm.tag_len();
        let mut cands = Candidates::new();
        let mut ts = None;
        let mut total = 0usize;
        let mut saw_other_version = false;
        for value in values {
            total += value.len();
            if total > MAX_HEADER_LEN {
                return Err(Reason::Malformed);
            }
            let text = value.to_str().map_err(|_| Reason::Malformed)?.trim();
            if text.is_empty() {
                return Err(Reason::Malformed);
            }
            match &self.spec.format {
                SigFormat::Plain { prefix, separator } => {
                    let mut one = |entry: &str| -> Result<(), Reason> {
                        let entry = entry.trim();
                        if entry.is_empty() {
                            return Ok(());
                        }
                        match entry.strip_prefix(prefix.as_str()) {
                            Some(sig) => {
                                cands.push(sig, self.spec.encoding, want)?;
                            }
                            None => {
                                saw_other_version |= !prefix.is_empty() && looks_versioned(entry)
                            }
                        }
                        Ok(())
                    };
                    match separator {
                        Some(sep) => {
                            for entry in text.split(sep.as_str()) {
                                one(entry)?;
                            }
                        }
                        None => one(text)?,
                    }
                }
                SigFormat::Structured {
                    separator,
                    key_sep,
                    sig_key,
                    ts_key,
                } => {
                    for entry in text.split(separator.as_str()) {
                        let entry = entry.trim();
                        if entry.is_empty() {
                            continue;
                        }
                        let Some((k, v)) = entry.split_once(key_sep.as_str()) else {
                            return Err(Reason::Malformed);
                        };
                        let k = k.trim();
                        if k == sig_key {
                            cands.push(v, self.spec.encoding, want)?;
                        } else if ts_key.as_deref() == Some(k) {
                            if ts.is_some() {
                                return Err(Reason::Malformed);
                            }
                            ts = Some(v.trim());
                        } else {
                            saw_other_version = true;
                        }
                    }
                }
            }
        }
        if cands.n == 0 {
            // Only entries of versions we do not know: say so; otherwise the entries we know
            // did not decode to a signature of the right length.
            return Err(if saw_other_version && !self.any_known_entry(req) {
                Reason::UnknownVersion
            } else {
                Reason::Malformed
            });
        }
        Ok(Parsed { cands, ts })
    }

    /// Whether the signature header has an entry of the expected version (decodable or not).
    fn any_known_entry(&self, req: &SignedRequest<'_>) -> bool {
        let name = self.signature_header(req.headers);
        req.headers.get_all(name).iter().any(|v| {
            let Ok(text) = v.to_str() else { return false };
            match &self.spec.format {
                SigFormat::Plain { prefix, separator } => match separator {
                    Some(sep) => text
                        .split(sep.as_str())
                        .any(|e| e.trim().starts_with(prefix.as_str())),
                    None => text.trim().starts_with(prefix.as_str()),
                },
                SigFormat::Structured {
                    separator,
                    key_sep,
                    sig_key,
                    ..
                } => text.split(separator.as_str()).any(|e| {
                    e.split_once(key_sep.as_str())
                        .is_some_and(|(k, _)| k.trim() == sig_key)
                }),
            }
        })
    }

    /// Reads the timestamp (text) for this request.
    fn timestamp<'h>(
        &self,
        rule: &TimestampRule,
        req: &'h SignedRequest<'_>,
        structured: Option<&'h str>,
        json_buf: &'h mut Option<String>,
    ) -> Result<&'h str, Reason> {
        match &rule.source {
            TsSource::Structured => structured.ok_or(Reason::Malformed),
            TsSource::Header(h) => header_str(req.headers, h),
            TsSource::BodyJson(field) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&req.body.joined()).map_err(|_| Reason::Malformed)?;
                let n = match v.get(*field) {
                    None | Some(serde_json::Value::Null) => return Err(Reason::Missing),
                    // A number, as the providers send it (Linear's SDK refuses a string).
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    Some(_) => return Err(Reason::Malformed),
                };
                Ok(json_buf.insert(n).as_str())
            }
        }
    }

    /// Verifies `req`; any secret may match.
    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        let parsed = self.parse_header(req).map_err(Failure::from)?;
        let mut json_buf = None;
        let ts = match &self.spec.timestamp {
            Some(rule) => {
                let t = self.timestamp(rule, req, parsed.ts, &mut json_buf)?;
                rule.check(t, now)?;
                Some(t)
            }
            None => None,
        };
        let url = self.url(req.public_url)?;
        let mut parts = [Piece::Body; MAX_PARTS];
        let n = self.resolve(req.headers, req.method, ts, url.as_deref(), &mut parts)?;
        let parts = &parts[..n];
        for (i, key) in self.keys.iter().enumerate() {
            let tag = hmac_parts(key, parts, req.body);
            if parsed.cands.iter().any(|c| ct_eq(c, tag.as_ref())) {
                return Ok(Verified { secret_index: i });
            }
        }
        Err(Reason::Mismatch.into())
    }

    fn url<'u>(&self, from_request: Option<&'u str>) -> Result<Option<Cow<'u, str>>, Reason> {
        if !self.spec.template.contains(&Part::Url) {
            return Ok(None);
        }
        let url: Cow<'u, str> = match (from_request, &self.public_url) {
            (Some(u), _) => Cow::Borrowed(u),
            (None, Some(u)) => Cow::Owned(u.clone()),
            (None, None) => return Err(Reason::Missing),
        };
        Ok(Some(match self.spec.url_mode {
            UrlMode::Raw => url,
            UrlMode::HubspotDecoded => Cow::Owned(hubspot_decode(&url)),
        }))
    }

    /// Fills `out` with the template's byte slices; returns how many.
    fn resolve<'a>(
        &'a self,
        headers: &'a http::HeaderMap,
        method: &'a str,
        ts: Option<&'a str>,
        url: Option<&'a str>,
        out: &mut [Piece<'a>; MAX_PARTS],
    ) -> Result<usize, Reason> {
        for (slot, part) in out.iter_mut().zip(self.spec.template.iter()) {
            *slot = Piece::Bytes(match part {
                Part::Lit(b) => b.as_slice(),
                Part::Body => {
                    *slot = Piece::Body;
                    continue;
                }
                Part::Timestamp => ts.ok_or(Reason::Missing)?.as_bytes(),
                Part::Method => method.as_bytes(),
                Part::Url => url.ok_or(Reason::Missing)?.as_bytes(),
                Part::Id => match &self.spec.id_header {
                    Some(h) => header_str(headers, h)?.as_bytes(),
                    None => return Err(Reason::Missing),
                },
                Part::Header(h) => header_str(headers, h)?.as_bytes(),
            });
        }
        Ok(self.spec.template.len())
    }

    /// Headers of a correctly signed request (secret 0).
    pub fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        public_url: Option<&str>,
    ) -> Result<Vec<(String, String)>, SignError> {
        let key = self.keys.first().ok_or(SignError::NoSecret)?;
        let mut out = Vec::new();
        let ts = self.spec.timestamp.as_ref().map(|r| r.format.format(now));
        let id = self
            .spec
            .id_header
            .as_ref()
            .map(|_| format!("hookgate-sign-{}", system_millis(now)));
        let url = match (public_url, self.public_url.as_deref()) {
            (Some(u), _) | (None, Some(u)) => Some(match self.spec.url_mode {
                UrlMode::Raw => u.to_string(),
                UrlMode::HubspotDecoded => hubspot_decode(u),
            }),
            (None, None) => None,
        };
        let mut ctx = hmac::Context::with_key(key);
        for part in &self.spec.template {
            match part {
                Part::Lit(b) => ctx.update(b),
                Part::Body => ctx.update(body),
                Part::Timestamp => match (&ts, &self.spec.timestamp) {
                    (Some(t), Some(r)) if !matches!(r.source, TsSource::BodyJson(_)) => {
                        ctx.update(t.as_bytes())
                    }
                    _ => {
                        return Err(SignError::Unsupported(
                            "{timestamp} read from the body".into(),
                        ))
                    }
                },
                Part::Method => ctx.update(b"POST"),
                Part::Url => {
                    ctx.update(url.as_deref().ok_or(SignError::NeedsPublicUrl)?.as_bytes())
                }
                Part::Id => ctx.update(id.as_deref().unwrap_or_default().as_bytes()),
                Part::Header(h) => {
                    return Err(SignError::Unsupported(format!(
                        "template uses {{header:{h}}}"
                    )))
                }
            }
        }
        let sig = self.spec.encoding.encode(ctx.sign().as_ref());
        let value = match &self.spec.format {
            SigFormat::Plain { prefix, .. } => format!("{prefix}{sig}"),
            SigFormat::Structured {
                separator,
                key_sep,
                sig_key,
                ts_key,
            } => match (ts_key, &ts) {
                (Some(k), Some(t)) => format!("{k}{key_sep}{t}{separator}{sig_key}{key_sep}{sig}"),
                _ => format!("{sig_key}{key_sep}{sig}"),
            },
        };
        if let (Some(h), Some(id)) = (&self.spec.id_header, &id) {
            out.push((h.as_str().to_string(), id.clone()));
        }
        if let (Some(rule), Some(t)) = (&self.spec.timestamp, &ts) {
            if let TsSource::Header(h) = &rule.source {
                out.push((h.as_str().to_string(), t.clone()));
            }
        }
        out.push((self.spec.header.as_str().to_string(), value));
        Ok(out)
    }
}

/// `sha1=...`, `v0=...`: a signature of some other version than the one we expect.
fn looks_versioned(entry: &str) -> bool {
    entry.split_once(['=', ',']).is_some_and(|(k, _)| {
        !k.is_empty() && k.len() <= 16 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// HMAC over several slices, streamed.
/// One piece of the signed content: fixed bytes, or the body, which is fed frame by frame.
#[derive(Clone, Copy)]
enum Piece<'a> {
    Bytes(&'a [u8]),
    Body,
}

fn hmac_parts(key: &hmac::Key, parts: &[Piece<'_>], body: super::Body<'_>) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(key);
    for part in parts {
        match part {
            Piece::Bytes(bytes) => ctx.update(bytes),
            Piece::Body => body.chunks().for_each(|chunk| ctx.update(chunk)),
        }
    }
    ctx.sign()
}

/// HubSpot v3: these escapes are decoded in the URI before signing (their docs list them).
pub fn hubspot_decode(url: &str) -> String {
    const MAP: [(&str, char); 12] = [
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let hit = tail.get(..3).and_then(|esc| {
            MAP.iter()
                .find(|(e, _)| e.eq_ignore_ascii_case(esc))
                .map(|(_, c)| *c)
        });
        match hit {
            Some(c) => {
                out.push(c);
                rest = &tail[3..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

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
