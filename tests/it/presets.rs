//! The provider presets' defects of issue 13, each pinned through real sockets: a real TLS
//! client, the running gateway, a recording backend. Signatures are made here with ring (the
//! schemes are one HMAC or one Ed25519 signature); tests/conformance proves the same presets
//! against the providers' own libraries.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::common::*;
use base64::Engine;
use ring::hmac;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const ROUTES: &str = r#"
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: twitter
    path: /hooks/twitter
    methods: [GET, POST]
    upstream: backend
    verify: { provider: twitter, secrets: ["consumer-secret"] }
  - name: discord
    path: /hooks/discord
    upstream: backend
    verify:
      provider: discord
      # Ed25519 public key of the seed [7; 32] (see discord_key below)
      public_key: "{discord_pub}"
  - name: woocommerce
    path: /hooks/woo
    upstream: backend
    verify: { provider: woocommerce, secrets: ["woo-secret"] }
  - name: intercom
    path: /hooks/intercom
    upstream: backend
    verify: { provider: intercom, secrets: ["intercom-secret"] }
  - name: mailgun
    path: /hooks/mailgun
    upstream: backend
    verify: { provider: mailgun, secrets: ["parent-key"] }
  - name: shopify
    path: /hooks/shopify
    upstream: backend
    verify: { provider: shopify, secrets: ["shopify-secret"] }
  - name: dropbox
    path: /hooks/dropbox
    methods: [GET, POST]
    upstream: backend
    verify: { provider: dropbox, secrets: ["dropbox-secret"] }
  - name: gitlab
    path: /hooks/gitlab
    upstream: backend
    verify:
      provider: gitlab
      secrets: ["whsec_Z2l0bGFiLXNpZ25pbmcta2V5", "plain-token"]
  - name: linear
    path: /hooks/linear
    upstream: backend
    verify: { provider: linear, secrets: ["linear-secret"] }
"#;

fn discord_key() -> ring::signature::Ed25519KeyPair {
    ring::signature::Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap()
}

async fn start() -> TestGateway {
    use ring::signature::KeyPair;
    let public = hex(discord_key().public_key().as_ref());
    TestGateway::start(&ROUTES.replace("{discord_pub}", &public)).await
}

/// Sends over TLS and returns (status, headers, body); counts the log lines as it goes.
struct Sender {
    gw: TestGateway,
    client: TestClient,
    sent: usize,
}

impl Sender {
    async fn new() -> Sender {
        let gw = start().await;
        let client = h1_client(&gw.certs);
        Sender {
            gw,
            client,
            sent: 0,
        }
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, http::HeaderMap, String, serde_json::Value) {
        let (status, h, b) = send(
            &self.client,
            method,
            &self.gw.https_url(path),
            headers,
            body.to_string(),
        )
        .await
        .unwrap();
        self.sent += 1;
        let line = self.gw.log_line(self.sent).await;
        (status, h, String::from_utf8_lossy(&b).into_owned(), line)
    }

    fn forwarded(&self) -> usize {
        self.gw.upstream.seen().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twitter_crc_cannot_be_used_to_sign_a_forged_event() {
    let mut s = Sender::new().await;
    // A legitimate CRC: X's token shape gets the HMAC of the token.
    let (status, _, body, line) = s
        .send("GET", "/hooks/twitter?crc_token=Zm9vYmFy-_.1", &[], "")
        .await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("handshake")));
    let expected = format!(
        "sha256={}",
        B64.encode(hmac256(b"consumer-secret", &[b"Zm9vYmFy-_.1"]))
    );
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["response_token"], expected.as_str());

    // The attack: ask the CRC to sign a JSON event, then POST that event with the answer.
    let forged = r#"{"for_user_id":"1","tweet_create_events":[{"text":"forged"}]}"#;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("crc_token", forged)
        .finish();
    let (status, _, body, _) = s
        .send("GET", &format!("/hooks/twitter?{query}"), &[], "")
        .await;
    assert_eq!(status, 401, "a JSON crc_token must not be answered: {body}");
    assert!(!body.contains("sha256="));
    // And the other direction: a token-shaped body signed by a CRC answer is refused.
    let (status, _, _, line) = s
        .send(
            "POST",
            "/hooks/twitter",
            &[("x-twitter-webhooks-signature", &expected)],
            "Zm9vYmFy-_.1",
        )
        .await;
    assert_eq!((status, line["reason"].as_str()), (401, Some("malformed")));
    assert_eq!(s.forwarded(), 0);
}

fn discord_headers(body: &str) -> (String, String) {
    let ts = now().to_string();
    let sig = discord_key().sign(format!("{ts}{body}").as_bytes());
    (hex(sig.as_ref()), ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_webhook_events_are_forwarded_and_both_pings_answered() {
    let mut s = Sender::new().await;
    let send_signed = |body: &'static str| {
        let (sig, ts) = discord_headers(body);
        (sig, ts, body)
    };
    // Webhook Events PING: 204, empty.
    let (sig, ts, body) = send_signed(r#"{"version":1,"application_id":"42","type":0}"#);
    let h = [
        ("x-signature-ed25519", sig.as_str()),
        ("x-signature-timestamp", ts.as_str()),
    ];
    let (status, _, reply, line) = s.send("POST", "/hooks/discord", &h, body).await;
    assert_eq!((status, reply.as_str()), (204, ""));
    assert_eq!(line["outcome"], "handshake");
    // Webhook Events EVENT (type 1 with an event): forwarded.
    let (sig, ts, body) = send_signed(
        r#"{"version":1,"application_id":"42","type":1,"event":{"type":"APPLICATION_AUTHORIZED","timestamp":"2024-10-18T14:42:53.064834","data":{}}}"#,
    );
    let h = [
        ("x-signature-ed25519", sig.as_str()),
        ("x-signature-timestamp", ts.as_str()),
    ];
    let (status, _, _, line) = s.send("POST", "/hooks/discord", &h, body).await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("forwarded")));
    assert_eq!(s.forwarded(), 1);
    assert_eq!(s.gw.upstream.seen()[0].body, body.as_bytes());
    // Interactions PING: {"type":1}.
    let (sig, ts, body) = send_signed(r#"{"type":1,"id":"1","application_id":"42","version":1}"#);
    let h = [
        ("x-signature-ed25519", sig.as_str()),
        ("x-signature-timestamp", ts.as_str()),
    ];
    let (status, _, reply, _) = s.send("POST", "/hooks/discord", &h, body).await;
    assert_eq!((status, reply.as_str()), (200, r#"{"type":1}"#));
    assert_eq!(s.forwarded(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn woocommerce_activation_ping_gets_200_and_nothing_else_passes_unsigned() {
    let mut s = Sender::new().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, _, _, line) = s.send("POST", "/hooks/woo", &form, "webhook_id=17").await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("handshake")));
    // Anything more than the ping, or a ping claiming WooCommerce headers, needs a signature.
    for (headers, body) in [
        (&form[..], "webhook_id=17&status=paid"),
        (&form[..], "webhook_id=abc"),
        (
            &[("x-wc-webhook-topic", "order.created")][..],
            "webhook_id=17",
        ),
        (&form[..], r#"{"id":17}"#),
    ] {
        let (status, _, _, line) = s.send("POST", "/hooks/woo", headers, body).await;
        assert_eq!(
            (status, line["outcome"].as_str()),
            (401, Some("signature_invalid")),
            "{body}"
        );
    }
    // A signed delivery still goes through.
    let body = r#"{"id":17,"status":"processing"}"#;
    let sig = B64.encode(hmac256(b"woo-secret", &[body.as_bytes()]));
    let (status, _, _, _) = s
        .send(
            "POST",
            "/hooks/woo",
            &[
                ("x-wc-webhook-signature", &sig),
                ("x-wc-webhook-delivery-id", "d1"),
            ],
            body,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(s.forwarded(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercom_head_url_check_gets_200_and_is_not_forwarded() {
    let mut s = Sender::new().await;
    let (status, _, _, line) = s.send("HEAD", "/hooks/intercom", &[], "").await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("handshake")));
    // GET is still not a method of the route.
    let (status, _, _, _) = s.send("GET", "/hooks/intercom", &[], "").await;
    assert_eq!(status, 405);
    assert_eq!(s.forwarded(), 0);
}

fn mailgun_signature(key: &[u8], ts: u64, token: &str) -> serde_json::Value {
    let ts = ts.to_string();
    serde_json::json!({
        "timestamp": ts,
        "token": token,
        "signature": hex(&hmac256(key, &[ts.as_bytes(), token.as_bytes()])),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailgun_refuses_old_signatures_accepts_the_parent_key_and_drops_replayed_tokens() {
    let mut s = Sender::new().await;
    let event = |sig: serde_json::Value, parent: Option<serde_json::Value>| {
        let mut v = serde_json::json!({"signature": sig, "event-data": {"event": "delivered"}});
        if let Some(p) = parent {
            v["parent-signature"] = p;
        }
        v.to_string()
    };
    let json = [("content-type", "application/json")];
    // 20 minutes old: refused (the SDK allows 15).
    let old = event(
        mailgun_signature(b"parent-key", now() - 1200, "tok-old"),
        None,
    );
    let (status, _, _, line) = s.send("POST", "/hooks/mailgun", &json, &old).await;
    assert_eq!((status, line["reason"].as_str()), (401, Some("expired")));
    // A subaccount's event: its own signature does not match this route's (parent) key, the
    // parent-signature does.
    let sub = event(
        mailgun_signature(b"subaccount-key", now(), "tok-1"),
        Some(mailgun_signature(b"parent-key", now(), "tok-1")),
    );
    let (status, _, _, line) = s.send("POST", "/hooks/mailgun", &json, &sub).await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("forwarded")));
    assert_eq!(line["event_id"], "tok-1");
    // The same token again: a replay, not forwarded.
    let (status, _, _, line) = s.send("POST", "/hooks/mailgun", &json, &sub).await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("duplicate")));
    // Neither signature made with the route's key: refused.
    let foreign = event(
        mailgun_signature(b"subaccount-key", now(), "tok-2"),
        Some(mailgun_signature(b"other-parent", now(), "tok-2")),
    );
    let (status, _, _, line) = s.send("POST", "/hooks/mailgun", &json, &foreign).await;
    assert_eq!((status, line["reason"].as_str()), (401, Some("mismatch")));
    assert_eq!(s.forwarded(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_deliveries_without_x_prefix_are_verified_and_deduplicated() {
    let mut s = Sender::new().await;
    let body = r#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let sig = B64.encode(hmac256(b"shopify-secret", &[body.as_bytes()]));
    let h = [
        ("shopify-hmac-sha256", sig.as_str()),
        ("shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
        ("shopify-topic", "orders/create"),
    ];
    let (status, _, _, line) = s.send("POST", "/hooks/shopify", &h, body).await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("forwarded")));
    assert_eq!(line["event_id"], "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    let (_, _, _, line) = s.send("POST", "/hooks/shopify", &h, body).await;
    assert_eq!(line["outcome"], "duplicate");
    // With Expect: 100-continue the unprefixed signature header counts as present too.
    let expecting = [
        ("shopify-hmac-sha256", sig.as_str()),
        ("shopify-webhook-id", "c0ffee00-bdd9-4b37-8a5f-bf7d70bcd043"),
        ("expect", "100-continue"),
    ];
    let (status, _, _, line) = s.send("POST", "/hooks/shopify", &expecting, body).await;
    assert_eq!((status, line["outcome"].as_str()), (200, Some("forwarded")));
    let (status, _, _, line) = s
        .send("POST", "/hooks/shopify", &h, &body.replace("jon", "eve"))
        .await;
    assert_eq!((status, line["reason"].as_str()), (401, Some("mismatch")));
    assert_eq!(s.forwarded(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropbox_challenge_reply_is_plain_text_with_nosniff() {
    let mut s = Sender::new().await;
    let (status, headers, body, _) = s
        .send("GET", "/hooks/dropbox?challenge=%3Cscript%3E", &[], "")
        .await;
    assert_eq!((status, body.as_str()), (200, "<script>"));
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(headers["x-content-type-options"], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_accepts_a_signing_token_signature_and_the_plain_token() {
    let mut s = Sender::new().await;
    let body = r#"{"object_kind":"push","ref":"refs/heads/main"}"#;
    let (id, ts) = ("msg_2mEPLQ6cC3YBIXPXJhvkqeU8", now().to_string());
    let key = B64.decode("Z2l0bGFiLXNpZ25pbmcta2V5").unwrap();
    let sig = format!(
        "v1,{}",
        B64.encode(hmac256(
            &key,
            &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()]
        ))
    );
    let signed = [
        ("webhook-id", id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
        ("x-gitlab-event-uuid", "uuid-1"),
    ];
    let (status, _, _, line) = s.send("POST", "/hooks/gitlab", &signed, body).await;
    assert_eq!((status, line["secret_index"].as_u64()), (200, Some(0)));
    // Tampered: refused, and not rescued by the plain-token path.
    let (status, _, _, line) = s
        .send(
            "POST",
            "/hooks/gitlab",
            &signed,
            &body.replace("main", "evil"),
        )
        .await;
    assert_eq!((status, line["reason"].as_str()), (401, Some("mismatch")));
    // The plain secret token, second in the list.
    let (status, _, _, line) = s
        .send(
            "POST",
            "/hooks/gitlab",
            &[
                ("x-gitlab-token", "plain-token"),
                ("x-gitlab-event-uuid", "uuid-2"),
            ],
            body,
        )
        .await;
    assert_eq!((status, line["secret_index"].as_u64()), (200, Some(1)));
    assert_eq!(s.forwarded(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_refuses_a_webhook_timestamp_written_as_a_string() {
    let mut s = Sender::new().await;
    let ms = now() * 1000;
    for (body, expect) in [
        (
            format!(r#"{{"action":"create","webhookTimestamp":{ms}}}"#),
            200,
        ),
        (
            format!(r#"{{"action":"create","webhookTimestamp":"{ms}"}}"#),
            401,
        ),
    ] {
        let sig = hex(&hmac256(b"linear-secret", &[body.as_bytes()]));
        let (status, _, _, _) = s
            .send(
                "POST",
                "/hooks/linear",
                &[("linear-signature", &sig)],
                &body,
            )
            .await;
        assert_eq!(status, expect, "{body}");
    }
    assert_eq!(s.forwarded(), 1);
}
