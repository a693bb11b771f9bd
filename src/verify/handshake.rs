//! Provider handshakes the gateway answers itself: Slack `url_verification`, Zoom
//! `endpoint.url_validation`, Twitch `webhook_callback_verification`, Dropbox `GET ?challenge=`,
//! X/Twitter `GET ?crc_token=`, Discord PING. It only recognises a handshake and builds the reply;
//! it never decides whether a request is authentic (the verifier did that first) and never
//! echoes anything for a request that is not a handshake of its route's provider.

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
}

/// Longest challenge echoed back.
const MAX_CHALLENGE: usize = 1024;

fn json_reply(value: serde_json::Value) -> Option<HandshakeReply> {
    let body = serde_json::to_vec(&value).ok()?;
    Some(HandshakeReply {
        status: 200,
        content_type: "application/json",
        body,
    })
}

/// The value of query parameter `name` (percent-decoded).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty() && v.len() <= MAX_CHALLENGE)
}

impl Handshake {
    /// A GET handshake that carries no signature (Dropbox, Twitter): true when `req` is one.
    pub fn is_unsigned_get(self, req: &SignedRequest<'_>) -> bool {
        if !req.method.eq_ignore_ascii_case("GET") {
            return false;
        }
        match self {
            Handshake::Dropbox => query_param(req.query, "challenge").is_some(),
            Handshake::Twitter => query_param(req.query, "crc_token").is_some(),
            _ => false,
        }
    }

    /// The reply for `req`, if it is this provider's handshake. `key` is the HMAC key of the
    /// secret that verified (Zoom, Twitter prove they hold it).
    pub fn reply(self, req: &SignedRequest<'_>, key: Option<&hmac::Key>) -> Option<HandshakeReply> {
        match self {
            Handshake::None => None,
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
                Some(HandshakeReply {
                    status: 200,
                    content_type: "text/plain",
                    body: challenge.as_bytes().to_vec(),
                })
            }
            Handshake::Dropbox => {
                if !req.method.eq_ignore_ascii_case("GET") {
                    return None;
                }
                let challenge = query_param(req.query, "challenge")?;
                Some(HandshakeReply {
                    status: 200,
                    content_type: "text/plain",
                    body: challenge.into_bytes(),
                })
            }
            Handshake::Twitter => {
                if !req.method.eq_ignore_ascii_case("GET") {
                    return None;
                }
                let token = query_param(req.query, "crc_token")?;
                let tag = hmac::sign(key?, token.as_bytes());
                json_reply(serde_json::json!({
                    "response_token": format!("sha256={}", encoding::base64_encode(tag.as_ref())),
                }))
            }
            Handshake::Discord => {
                let v: serde_json::Value = serde_json::from_slice(&req.body.joined()).ok()?;
                if v.get("type")?.as_u64()? != 1 {
                    return None;
                }
                json_reply(serde_json::json!({ "type": 1 }))
            }
        }
    }
}
