//! The compiled HMAC scheme (`provider: hmac`, and every preset that is just data): verifies
//! requests over the exact raw body bytes. It streams the signed-content template into ring's
//! HMAC without copying the body, decodes each received signature once into a stack buffer and
//! compares in constant time. It never allocates a copy of the body, never panics on hostile
//! headers, and never reveals which secret or rule failed other than through the `Reason` it
//! returns.

use std::borrow::Cow;
use std::time::SystemTime;

use http::HeaderName;
use ring::hmac;

use super::config::{self, RawVerify, VerifyConfigError};
use super::encoding::{ct_eq, Encoding, SigBuf, MAX_SIG};
use super::hmac_spec::{HmacSpec, SigFormat};
use super::template::{hubspot_decode, Part, UrlMode, MAX_PARTS};
use super::timestamp::{system_millis, TimestampRule, TsSource};
use super::{
    header_str, Failure, Reason, SignError, SignedRequest, Verified, MAX_CANDIDATES, MAX_HEADER_LEN,
};

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
