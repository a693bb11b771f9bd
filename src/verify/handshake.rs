//! Provider handshakes the gateway answers itself, in two kinds:
//!
//! - **signed**, answered after the signature check: Slack `url_verification`, Zoom
//!   `endpoint.url_validation`, Twitch `webhook_callback_verification`, Discord PINGs (the
//!   Interactions PING wants `{"type":1}`, the Webhook Events PING wants 204);
//! - **unsigned**, answered instead of a signature check: Dropbox `GET ?challenge=`, X/Twitter
//!   `GET ?crc_token=`, WooCommerce's activation ping (`webhook_id=N`, no `X-WC-*` headers) and
//!   Intercom's `HEAD` URL check.
//!
//! It only recognises a handshake and builds the reply; it never decides whether a request is
//! authentic (the verifier does) and never answers a request that is not a handshake of its
//! route's provider. No unsigned answer may be usable as a signature: the only unsigned answer
//! that is an HMAC under the route's secret is X's CRC reply, and [`Handshake::admits_body`]
//! keeps the tokens it answers and the bodies the route accepts disjoint.

use http::Method;
use ring::hmac;

use super::encoding;
use super::{HandshakeReply, SignedRequest};

/// Which handshake a provider performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    None,
    Slack,
    Zoom,
    Twitch,
    Dropbox,
    Twitter,
    Discord,
    Woocommerce,
    Intercom,
}

/// Longest challenge echoed back.
const MAX_CHALLENGE: usize = 1024;

/// Longest X/Twitter CRC token answered. X sends short random tokens.
const MAX_CRC_TOKEN: usize = 255;

fn json_reply(value: serde_json::Value) -> Option<HandshakeReply> {
    let body = serde_json::to_vec(&value).ok()?;
    Some(HandshakeReply {
        status: 200,
        content_type: Some("application/json"),
        body,
    })
}

/// An echoed challenge.
fn text_reply(body: Vec<u8>) -> HandshakeReply {
    HandshakeReply {
        status: 200,
        content_type: Some("text/plain"),
        body,
    }
}

fn empty_reply(status: u16) -> HandshakeReply {
    HandshakeReply {
        status,
        content_type: None,
        body: Vec::new(),
    }
}

/// The value of query parameter `name` (percent-decoded).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty() && v.len() <= MAX_CHALLENGE)
}

/// A CRC token of the shape X sends: base64 / URL-safe characters only. Never `{` nor
/// whitespace, so it can never be a body [`Handshake::admits_body`] lets through.
fn is_crc_token(token: &str) -> bool {
    (1..=MAX_CRC_TOKEN).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_.~".contains(&b))
}

/// WooCommerce's activation ping body: `webhook_id=<digits>` and nothing else.
fn is_woocommerce_ping(body: &[u8]) -> bool {
    body.strip_prefix(b"webhook_id=")
        .is_some_and(|id| (1..=20).contains(&id.len()) && id.iter().all(u8::is_ascii_digit))
}

fn first_non_space(body: &super::Body<'_>) -> Option<u8> {
    body.chunks()
        .flat_map(|c| c.iter())
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

impl Handshake {
    /// The method of an unsigned handshake, which its route must admit besides its own methods
    /// (the gateway answers it; it is never forwarded).
    pub fn method(self) -> Option<Method> {
        match self {
            Handshake::Dropbox | Handshake::Twitter => Some(Method::GET),
            Handshake::Intercom => Some(Method::HEAD),
            _ => None,
        }
    }

    /// Whether this provider sends a handshake without a signature (see `unsigned_reply`).
    pub fn has_unsigned(self) -> bool {
        matches!(
            self,
            Handshake::Dropbox | Handshake::Twitter | Handshake::Woocommerce | Handshake::Intercom
        )
    }

    /// Whether a signed request with this body may be accepted at all. X signs POST bodies with
    /// the same HMAC its CRC reply computes, so a POST body must be a JSON object (as every
    /// Account Activity event is), which a CRC token (see `is_crc_token`) can never be.
    pub fn admits_body(self, body: &super::Body<'_>) -> bool {
        match self {
            Handshake::Twitter => first_non_space(body) == Some(b'{'),
            _ => true,
        }
    }

    /// The reply to an unsigned handshake, if `req` is one. `key` is the route's first secret
    /// (X's CRC proves the gateway holds it).
    pub fn unsigned_reply(
        self,
        req: &SignedRequest<'_>,
        key: Option<&hmac::Key>,
    ) -> Option<HandshakeReply> {
        let method = req.method;
        match self {
            Handshake::Dropbox if method == "GET" => {
                let challenge = query_param(req.query, "challenge")?;
                Some(text_reply(challenge.into_bytes()))
            }
            Handshake::Twitter if method == "GET" => {
                let token = query_param(req.query, "crc_token").filter(|t| is_crc_token(t))?;
                let tag = hmac::sign(key?, token.as_bytes());
                json_reply(serde_json::json!({
                    "response_token": format!("sha256={}", encoding::base64_encode(tag.as_ref())),
                }))
            }
            Handshake::Woocommerce if method == "POST" => {
                let any_wc_header = req
                    .headers
                    .keys()
                    .any(|name| name.as_str().starts_with("x-wc-webhook-"));
                (!any_wc_header && is_woocommerce_ping(&req.body.joined()))
                    .then(|| empty_reply(200))
            }
            Handshake::Intercom if method == "HEAD" => Some(empty_reply(200)),
            _ => None,
        }
    }

    /// The reply to a signed handshake; call only after the request verified. `key` is the
    /// HMAC key of the secret that verified (Zoom proves it holds it).
    pub fn signed_reply(
        self,
        req: &SignedRequest<'_>,
        key: Option<&hmac::Key>,
    ) -> Option<HandshakeReply> {
        match self {
            Handshake::Slack => {
                let v: serde_json::Value = serde_json::from_slice(&req.body.joined()).ok()?;
                if v.get("type")?.as_str()? != "url_verification" {
                    return None;
                }
                let challenge = v.get("challenge")?.as_str()?;
                json_reply(serde_json::json!({ "challenge": challenge }))
            }
            Handshake::Zoom => {
                let v: serde_json::Value = serde_json::from_slice(&req.body.joined()).ok()?;
                if v.get("event")?.as_str()? != "endpoint.url_validation" {
                    return None;
                }
                let plain = v.get("payload")?.get("plainToken")?.as_str()?;
                let tag = hmac::sign(key?, plain.as_bytes());
                json_reply(serde_json::json!({
                    "plainToken": plain,
                    "encryptedToken": encoding::hex_encode(tag.as_ref()),
                }))
            }
            Handshake::Twitch => {
                let kind = req
                    .headers
                    .get("twitch-eventsub-message-type")?
                    .to_str()
                    .ok()?;
                if kind != "webhook_callback_verification" {
                    return None;
                }
                let v: serde_json::Value = serde_json::from_slice(&req.body.joined()).ok()?;
                let challenge = v.get("challenge")?.as_str()?;
                Some(text_reply(challenge.as_bytes().to_vec()))
            }
            Handshake::Discord => discord_ping(req),
            _ => None,
        }
    }
}

/// Discord sends two kinds of signed request with the same key and headers, classified as
/// Discord's `discord-interactions` library does: an Interaction (`type` 1 is its PING, answered
/// `{"type":1}`) or a Webhook Event (`type` 0 is its PING, answered 204; `type` 1 with an
/// `event` object is an EVENT, forwarded). Everything else is forwarded.
fn discord_ping(req: &SignedRequest<'_>) -> Option<HandshakeReply> {
    let v: serde_json::Value = serde_json::from_slice(&req.body.joined()).ok()?;
    match v.get("type")?.as_u64()? {
        0 => Some(empty_reply(204)),
        1 if v.get("event").is_none() => json_reply(serde_json::json!({ "type": 1 })),
        _ => None,
    }
}
