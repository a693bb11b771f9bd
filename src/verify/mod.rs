//! Signature verification (pipeline stage 7): compiles a route's `verify:` block into a
//! `Verifier` once at load time, then checks each request's exact raw bytes against it, names the
//! delivery id, answers provider handshakes and signs test requests. It never fails open (a block
//! that cannot be compiled is a config error), never reads anything but the request it is given,
//! and never lets a secret, or which secret or rule failed, leak beyond `Verified::secret_index`
//! and `Reason`.

#![forbid(unsafe_code)]

pub mod config;
mod discord;
pub mod encoding;
mod gitlab;
pub mod handshake;
pub mod hmac_scheme;
pub mod hmac_spec;
mod mailgun;
pub mod providers;
mod sendgrid;
pub mod shared_secret;
pub mod template;
pub mod timestamp;
mod twilio;
mod v1a;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName};

use config::SecretEncoding;
pub use config::{RawVerify, Secret, VerifyConfigError};
use handshake::Handshake;
use hmac_scheme::Scheme;
use hmac_spec::{HmacSpec, SigFormat};
use providers::{HmacPreset, Preset, Shape, TsAt};
use shared_secret::{BasicScheme, TokenScheme};
use template::Part;
use timestamp::{TimestampRule, TsSource};

/// Longest signature header we look at; longer is malformed (no work done on it).
pub const MAX_HEADER_LEN: usize = 8 * 1024;
/// Most signature entries considered in one request.
pub const MAX_CANDIDATES: usize = 16;

/// What a verifier needs to know about one request. Borrowed: nothing is copied.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The route's configured public_url + "?" + query if any (Twilio, Square, HubSpot); `None`
    /// if not configured (the verifier then falls back to its own `public_url`, without query).
    pub public_url: Option<&'a str>,
    /// The request's raw query string without `?` (Dropbox and X/Twitter GET challenges).
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Body<'a>,
}

/// A request body as it arrived: hyper's frames, in order, never joined on the way in. Hashes run
/// over the frames one by one; only a scheme that parses the body (JSON, a form) or signs it as
/// one message asks for it joined, which copies only when it came in more than one frame.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a>(BodyParts<'a>);

#[derive(Debug, Clone, Copy)]
enum BodyParts<'a> {
    One(&'a [u8]),
    Frames(&'a [bytes::Bytes]),
}

impl<'a> Body<'a> {
    pub fn frames(frames: &'a [bytes::Bytes]) -> Body<'a> {
        Body(BodyParts::Frames(frames))
    }

    pub fn len(&self) -> usize {
        self.chunks().map(<[u8]>::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks().all(<[u8]>::is_empty)
    }

    /// The body's pieces in order.
    pub fn chunks(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (one, frames): (Option<&'a [u8]>, &'a [bytes::Bytes]) = match self.0 {
            BodyParts::One(bytes) => (Some(bytes), &[]),
            BodyParts::Frames(frames) => (None, frames),
        };
        one.into_iter().chain(frames.iter().map(|f| f.as_ref()))
    }

    /// The body in one slice: borrowed when it is one piece, else copied together.
    pub fn joined(&self) -> std::borrow::Cow<'a, [u8]> {
        match self.0 {
            BodyParts::One(bytes) => bytes.into(),
            BodyParts::Frames([frame]) => frame.as_ref().into(),
            BodyParts::Frames(frames) => frames.concat().into(),
        }
    }

    /// Appends the body to `out` (a message that is signed as a whole).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        for chunk in self.chunks() {
            out.extend_from_slice(chunk);
        }
    }
}

impl<'a> From<&'a [u8]> for Body<'a> {
    fn from(bytes: &'a [u8]) -> Body<'a> {
        Body(BodyParts::One(bytes))
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Body<'a> {
    fn from(bytes: &'a [u8; N]) -> Body<'a> {
        Body(BodyParts::One(bytes))
    }
}

/// Why a signature was refused. Goes to logs and metrics, never to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A required header or field is absent.
    Missing,
    /// Present but unreadable (not hex/base64, wrong length, no `t=`, too long, ...).
    Malformed,
    /// Well-formed, but no secret produces it.
    Mismatch,
    /// The timestamp is older than the tolerance.
    Expired,
    /// The timestamp is further in the future than allowed.
    Future,
    /// Only signature versions we do not know were present.
    UnknownVersion,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "missing",
            Reason::Malformed => "malformed",
            Reason::Mismatch => "mismatch",
            Reason::Expired => "expired",
            Reason::Future => "future",
            Reason::UnknownVersion => "unknown_version",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified request: which secret (index into `secrets`) matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub secret_index: usize,
}

/// A refused request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
}

impl From<Reason> for Failure {
    fn from(reason: Reason) -> Self {
        Failure { reason }
    }
}

/// A reply the gateway sends itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    pub status: u16,
    /// `None` for an empty reply.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

/// Why `sign` cannot produce headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("provider {0} verifies with a public key; the gateway cannot sign for it")]
    Asymmetric(String),
    #[error("this route signs its public URL: pass one or configure verify.public_url")]
    NeedsPublicUrl,
    #[error("no secret configured")]
    NoSecret,
    #[error("cannot sign: {0}")]
    Unsupported(String),
}

enum Kind {
    Hmac(Box<Scheme>),
    Token(TokenScheme),
    Basic(BasicScheme),
    Twilio(twilio::Twilio),
    Mailgun(mailgun::Mailgun),
    Discord(discord::Discord),
    Sendgrid(sendgrid::Sendgrid),
    V1a(v1a::V1a),
    Gitlab(Box<gitlab::Gitlab>),
}

/// Where the delivery id comes from.
enum IdSource {
    None,
    /// A header, or its alias when the header is absent.
    Header(HeaderName, Option<HeaderName>),
    Json(&'static [&'static str]),
}

/// A compiled `verify:` block.
pub struct Verifier {
    /// Shared, since every signature check counts under it.
    provider: Arc<str>,
    kind: Kind,
    handshake: Handshake,
    id: IdSource,
    on_failure: u16,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// The value of a header as text; absent -> Missing, not text or empty -> Malformed.
pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<&'h str, Reason> {
    let v = headers.get(name).ok_or(Reason::Missing)?;
    let s = v.to_str().map_err(|_| Reason::Malformed)?.trim();
    if s.is_empty() {
        return Err(Reason::Malformed);
    }
    Ok(s)
}

/// Keys a preset fixes; setting them next to a preset is an error rather than silently ignored.
fn refuse_fixed_keys(raw: &RawVerify, allowed: &[&str]) -> Result<(), VerifyConfigError> {
    let set: [(&str, bool); 13] = [
        ("algorithm", raw.algorithm.is_some()),
        ("header", raw.header.is_some()),
        ("prefix", raw.prefix.is_some()),
        ("encoding", raw.encoding.is_some()),
        ("separator", raw.separator.is_some()),
        ("signature_key", raw.signature_key.is_some()),
        ("timestamp_key", raw.timestamp_key.is_some()),
        ("key_separator", raw.key_separator.is_some()),
        ("signed", raw.signed.is_some()),
        ("timestamp_header", raw.timestamp_header.is_some()),
        ("timestamp_format", raw.timestamp_format.is_some()),
        ("public_key", raw.public_key.is_some()),
        ("secret_encoding", raw.secret_encoding.is_some()),
    ];
    for (field, is_set) in set {
        if is_set && !allowed.contains(&field) {
            return Err(VerifyConfigError::new(
                field,
                format!(
                    "fixed by provider `{}`; remove it (or use provider: hmac)",
                    raw.provider
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses `tolerance` / `future_tolerance` where no timestamp is signed, saying `why`.
pub(crate) fn refuse_windows(raw: &RawVerify, why: &str) -> Result<(), VerifyConfigError> {
    for (field, value) in [
        ("tolerance", &raw.tolerance),
        ("future_tolerance", &raw.future_tolerance),
    ] {
        if value.is_some() {
            return Err(VerifyConfigError::new(field, why));
        }
    }
    Ok(())
}

fn window_override(
    field: &str,
    value: &Option<String>,
    default: Option<Duration>,
) -> Result<Option<Duration>, VerifyConfigError> {
    match value {
        Some(v) => config::parse_window(field, v),
        None => Ok(default),
    }
}

pub(crate) fn spec_from_preset(
    p: &HmacPreset,
    raw: &RawVerify,
) -> Result<HmacSpec, VerifyConfigError> {
    let format = match p.structured {
        Some(s) => SigFormat::Structured {
            separator: s.separator.into(),
            key_sep: s.key_sep.into(),
            sig_key: s.sig_key.into(),
            ts_key: s.ts_key.map(Into::into),
        },
        None => SigFormat::Plain {
            prefix: p.prefix.into(),
            separator: None,
        },
    };
    let timestamp = match p.timestamp {
        Some(t) => Some(TimestampRule {
            source: match t.at {
                TsAt::Header(h) => TsSource::Header(HeaderName::from_static(h)),
                TsAt::Structured => TsSource::Structured,
                TsAt::BodyJson(f) => TsSource::BodyJson(f),
            },
            format: t.format,
            tolerance: window_override(
                "tolerance",
                &raw.tolerance,
                t.past.map(Duration::from_secs),
            )?,
            future: window_override(
                "future_tolerance",
                &raw.future_tolerance,
                t.future.map(Duration::from_secs),
            )?,
        }),
        None => {
            refuse_windows(
                raw,
                &format!("provider `{}` signs no timestamp", raw.provider),
            )?;
            None
        }
    };
    let id_header = match (&raw.id_header, p.id_header) {
        (Some(h), _) => Some(config::parse_header_name("id_header", h)?),
        (None, Some(h)) => Some(HeaderName::from_static(h)),
        (None, None) => None,
    };
    let secret_encoding = match &raw.secret_encoding {
        Some(v) => SecretEncoding::parse("secret_encoding", v)?,
        None => p.secret_encoding,
    };
    Ok(HmacSpec {
        algorithm: p.algorithm,
        header: HeaderName::from_static(p.header),
        header_alias: p.header_alias.map(HeaderName::from_static),
        format,
        encoding: p.encoding,
        template: template::parse_template(p.signed)?,
        timestamp,
        id_header,
        secret_encoding,
        url_mode: p.url_mode,
    })
}

impl Verifier {
    /// Compiles a `verify:` block. Errors name a field relative to `verify` and never a secret.
    pub fn from_raw(raw: &RawVerify) -> Result<Verifier, VerifyConfigError> {
        let on_failure = config::parse_on_failure(raw.on_failure)?;
        let provider = raw.provider.trim();
        // Header values are visible ASCII, read without the spaces around them; a prefix
        // outside that, or one starting with a space, could never match (fails closed, but
        // silently: every request refused). Both found by the verify fuzz target.
        if let Some(prefix) = &raw.prefix {
            if !prefix.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(VerifyConfigError::new(
                    "prefix",
                    "must be printable ASCII, as header values are",
                ));
            }
            if prefix.starts_with(' ') {
                return Err(VerifyConfigError::new(
                    "prefix",
                    "must not start with a space: a header value is read without the spaces \
                     around it, so no signature could match",
                ));
            }
        }
        let (kind, handshake, id) = match provider {
            "hmac" => {
                let spec = HmacSpec::from_raw(raw)?;
                let mut spec = spec;
                if let Some(rule) = spec.timestamp.as_mut() {
                    rule.tolerance = window_override("tolerance", &raw.tolerance, rule.tolerance)?;
                    rule.future =
                        window_override("future_tolerance", &raw.future_tolerance, rule.future)?;
                }
                if raw.public_key.is_some() {
                    return Err(VerifyConfigError::new(
                        "public_key",
                        "not used by provider hmac",
                    ));
                }
                let id = spec
                    .id_header
                    .clone()
                    .map_or(IdSource::None, |h| IdSource::Header(h, None));
                (
                    Kind::Hmac(Box::new(Scheme::compile(
                        spec,
                        raw,
                        raw.public_url.clone(),
                    )?)),
                    Handshake::None,
                    id,
                )
            }
            "token" => {
                refuse_fixed_keys(raw, &["header", "prefix"])?;
                let header = match raw.header.as_deref() {
                    Some(h) => config::parse_header_name("header", h)?,
                    None => {
                        return Err(VerifyConfigError::new(
                            "header",
                            "required for provider token",
                        ))
                    }
                };
                let id_header = raw
                    .id_header
                    .as_deref()
                    .map(|h| config::parse_header_name("id_header", h))
                    .transpose()?;
                let id = id_header
                    .clone()
                    .map_or(IdSource::None, |h| IdSource::Header(h, None));
                let scheme = TokenScheme::compile(
                    raw,
                    header,
                    raw.prefix.clone().unwrap_or_default(),
                    id_header,
                )?;
                (Kind::Token(scheme), Handshake::None, id)
            }
            "basic-auth" => {
                refuse_fixed_keys(raw, &["header"])?;
                let header = match raw.header.as_deref() {
                    Some(h) => config::parse_header_name("header", h)?,
                    None => http::header::AUTHORIZATION,
                };
                let id = raw
                    .id_header
                    .as_deref()
                    .map(|h| config::parse_header_name("id_header", h))
                    .transpose()?
                    .map_or(IdSource::None, |h| IdSource::Header(h, None));
                (
                    Kind::Basic(BasicScheme::compile(raw, header)?),
                    Handshake::None,
                    id,
                )
            }
            other => {
                let preset: &Preset = providers::find(other).ok_or_else(|| {
                    VerifyConfigError::new(
                        "provider",
                        format!(
                            "unknown provider `{other}` (known: {})",
                            providers::known_ids()
                        ),
                    )
                })?;
                let header_id = |fallback: Option<&'static str>,
                                 alias: Option<&'static str>|
                 -> Result<IdSource, VerifyConfigError> {
                    Ok(match (&raw.id_header, fallback) {
                        (Some(h), _) => {
                            IdSource::Header(config::parse_header_name("id_header", h)?, None)
                        }
                        (None, Some(h)) => IdSource::Header(
                            HeaderName::from_static(h),
                            alias.map(HeaderName::from_static),
                        ),
                        (None, None) => match preset.id_json {
                            Some(p) => IdSource::Json(p),
                            None => IdSource::None,
                        },
                    })
                };
                let kind = match &preset.shape {
                    Shape::Hmac(_)
                        if preset.id == "standard-webhooks" && raw.public_key.is_some() =>
                    {
                        refuse_fixed_keys(raw, &["public_key"])?;
                        Kind::V1a(v1a::V1a::compile(raw)?)
                    }
                    Shape::Hmac(p) => {
                        refuse_fixed_keys(raw, &["secret_encoding"])?;
                        let spec = spec_from_preset(p, raw)?;
                        let id = header_id(p.id_header, p.id_alias)?;
                        let public_url = raw.public_url.clone();
                        return Ok(Verifier {
                            provider: preset.id.into(),
                            kind: Kind::Hmac(Box::new(Scheme::compile(spec, raw, public_url)?)),
                            handshake: preset.handshake,
                            id,
                            on_failure,
                        });
                    }
                    Shape::Gitlab => {
                        refuse_fixed_keys(raw, &[])?;
                        Kind::Gitlab(Box::new(gitlab::Gitlab::compile(
                            raw,
                            &providers::GITLAB_SIGNING,
                        )?))
                    }
                    Shape::BasicAuth => {
                        refuse_fixed_keys(raw, &[])?;
                        Kind::Basic(BasicScheme::compile(raw, http::header::AUTHORIZATION)?)
                    }
                    Shape::Twilio => {
                        refuse_fixed_keys(raw, &[])?;
                        Kind::Twilio(twilio::Twilio::compile(raw)?)
                    }
                    Shape::Mailgun => {
                        refuse_fixed_keys(raw, &[])?;
                        Kind::Mailgun(mailgun::Mailgun::compile(raw)?)
                    }
                    Shape::Discord => {
                        refuse_fixed_keys(raw, &["public_key"])?;
                        Kind::Discord(discord::Discord::compile(raw)?)
                    }
                    Shape::Sendgrid => {
                        refuse_fixed_keys(raw, &["public_key"])?;
                        Kind::Sendgrid(sendgrid::Sendgrid::compile(raw)?)
                    }
                };
                let (id_header, id_alias) = match &preset.shape {
                    Shape::Hmac(p) => (p.id_header, p.id_alias),
                    Shape::Gitlab => (Some(providers::GITLAB_ID_HEADER), None),
                    _ => (None, None),
                };
                let id = header_id(id_header, id_alias)?;
                return Ok(Verifier {
                    provider: preset.id.into(),
                    kind,
                    handshake: preset.handshake,
                    id,
                    on_failure,
                });
            }
        };
        Ok(Verifier {
            provider: provider.into(),
            kind,
            handshake,
            id,
            on_failure,
        })
    }

    /// The provider id (`github`, `stripe`, `hmac`, ...).
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The provider id as a metric label value.
    pub fn provider_label(&self) -> Arc<str> {
        Arc::clone(&self.provider)
    }

    /// The configured public URL of a provider that signs it (without query).
    pub fn public_url(&self) -> Option<&str> {
        match &self.kind {
            Kind::Hmac(s) => s.public_url(),
            Kind::Twilio(t) => t.public_url(),
            _ => None,
        }
    }

    /// Whether the signature covers the request URL (the spine must then pass `public_url`).
    pub fn signs_url(&self) -> bool {
        match &self.kind {
            Kind::Hmac(s) => s.spec.template.contains(&Part::Url),
            Kind::Twilio(_) => true,
            _ => false,
        }
    }

    /// Checks the request. Unsigned handshakes are not requests to verify: answer them with
    /// [`Verifier::unsigned_handshake`] first. A body the provider's handshake rules out (see
    /// [`Handshake::admits_body`]) fails as malformed even when its signature is right.
    pub fn verify(&self, req: &SignedRequest<'_>, now: SystemTime) -> Result<Verified, Failure> {
        let verified = match &self.kind {
            Kind::Hmac(s) => s.verify(req, now),
            Kind::Token(t) => t.verify(req),
            Kind::Basic(b) => b.verify(req),
            Kind::Twilio(t) => t.verify(req),
            Kind::Mailgun(m) => m.verify(req, now),
            Kind::Discord(d) => d.verify(req, now),
            Kind::Sendgrid(s) => s.verify(req, now),
            Kind::V1a(v) => v.verify(req, now),
            Kind::Gitlab(g) => g.verify(req, now),
        }?;
        if !self.handshake.admits_body(&req.body) {
            return Err(Reason::Malformed.into());
        }
        Ok(verified)
    }

    /// The provider's delivery / event id, if the request carries one.
    pub fn delivery_id(&self, req: &SignedRequest<'_>) -> Option<String> {
        match &self.id {
            IdSource::None => None,
            IdSource::Header(h, alias) => {
                let v = match (req.headers.get(h), alias) {
                    (Some(v), _) => v,
                    (None, Some(alias)) => req.headers.get(alias)?,
                    (None, None) => return None,
                };
                let v = v.to_str().ok()?.trim();
                (!v.is_empty() && v.len() <= 256).then(|| v.to_string())
            }
            IdSource::Json(path) => {
                let v: serde_json::Value = serde_json::from_slice(&req.body.joined()).ok()?;
                let mut cur = &v;
                for p in path.iter() {
                    cur = cur.get(*p)?;
                }
                let s = match cur {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                (!s.is_empty() && s.len() <= 256).then_some(s)
            }
        }
    }

    /// The reply to an unsigned provider handshake (Dropbox and X challenges, WooCommerce's
    /// activation ping, Intercom's HEAD), if `req` is one: answered instead of verifying, never
    /// forwarded. X's CRC reply proves the first secret.
    pub fn unsigned_handshake(&self, req: &SignedRequest<'_>) -> Option<HandshakeReply> {
        self.handshake.unsigned_reply(req, self.key(0))
    }

    /// The method an unsigned handshake of this provider uses, which its route admits.
    pub fn handshake_method(&self) -> Option<http::Method> {
        self.handshake.method()
    }

    /// The reply to a signed provider handshake (Slack, Zoom, Twitch, Discord PINGs); call only
    /// after `verify` succeeded with `verified`, whose secret Zoom's reply proves.
    pub fn signed_handshake(
        &self,
        req: &SignedRequest<'_>,
        verified: &Verified,
    ) -> Option<HandshakeReply> {
        self.handshake
            .signed_reply(req, self.key(verified.secret_index))
    }

    fn key(&self, i: usize) -> Option<&ring::hmac::Key> {
        match &self.kind {
            Kind::Hmac(s) => s.key(i),
            _ => None,
        }
    }

    /// Status of a refused signature (`on_failure`, default 401).
    pub fn on_failure_status(&self) -> u16 {
        self.on_failure
    }

    /// Headers of a correctly signed request for `body` at `now`, with secret 0 (for
    /// `hookgate sign` and tests). `Err` for public-key providers and body-signed Mailgun.
    pub fn sign(
        &self,
        body: &[u8],
        now: SystemTime,
        public_url: Option<&str>,
    ) -> Result<Vec<(String, String)>, SignError> {
        if !self.handshake.admits_body(&body.into()) {
            return Err(SignError::Unsupported(format!(
                "{} accepts only a JSON object as the body",
                self.provider
            )));
        }
        match &self.kind {
            Kind::Hmac(s) => s.sign(body, now, public_url),
            Kind::Token(t) => t.sign(),
            Kind::Basic(b) => b.sign(),
            Kind::Twilio(t) => t.sign(body, now, public_url),
            Kind::Mailgun(m) => m.sign(),
            Kind::Gitlab(g) => g.sign(body, now),
            Kind::Discord(_) | Kind::Sendgrid(_) | Kind::V1a(_) => {
                Err(SignError::Asymmetric(self.provider.to_string()))
            }
        }
    }

    /// True only when `verify` is certain to fail with `missing` whatever the body: an HMAC
    /// scheme whose signature header is absent, for a provider with no unsigned handshake.
    /// Lets the pipeline refuse an `Expect: 100-continue` request before inviting its body.
    pub fn required_header_missing(&self, headers: &HeaderMap) -> bool {
        match &self.kind {
            _ if self.handshake.has_unsigned() => false,
            Kind::Hmac(s) => s.signature_absent(headers),
            _ => false,
        }
    }
}
