//! Behaviour tests for every provider preset and the generic schemes: published vectors and
//! vectors produced by the providers' official SDKs, refusals of every kind (tampered, stale,
//! future, wrong secret, malformed headers), rotation, handshakes and config errors. Tests only:
//! nothing here is compiled into the gateway, and no test depends on the wall clock.
//!
//! This file: the helpers, the vectors' keys and signatures, and what is particular to one
//! provider (delivery ids, hostile headers, Mailgun, PagerDuty, SendGrid keys). `vectors.rs`: the
//! request vectors as one table. `handshakes.rs`, `schemes.rs`, `config_errors.rs`: by topic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

mod config_errors;
mod handshakes;
mod schemes;
mod vectors;

fn raw(provider: &str, secrets: &[&str]) -> RawVerify {
    RawVerify {
        provider: provider.into(),
        secrets: secrets.iter().map(|s| Secret::new(*s)).collect(),
        ..RawVerify::default()
    }
}

fn verifier(r: &RawVerify) -> Verifier {
    match Verifier::from_raw(r) {
        Ok(v) => v,
        Err(e) => panic!("config refused: {e}"),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn post<'a>(h: &'a HeaderMap, body: &'a [u8]) -> SignedRequest<'a> {
    SignedRequest {
        method: "POST",
        public_url: None,
        query: None,
        headers: h,
        body: body.into(),
    }
}

fn signed_reply(v: &Verifier, req: &SignedRequest<'_>) -> Option<HandshakeReply> {
    v.signed_handshake(req, &Verified { secret_index: 0 })
}

fn reason(r: Result<Verified, Failure>) -> Reason {
    match r {
        Ok(v) => panic!("accepted with secret {}", v.secret_index),
        Err(f) => f.reason,
    }
}

const T0: u64 = 1_700_000_000;

// ---------------------------------------------------------------- GitHub

const GH_SECRET: &str = "It's a Secret to Everybody";
const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[test]
fn github_names_its_delivery_and_provider() {
    let v = verifier(&raw("github", &[GH_SECRET]));
    let h = headers(&[
        ("X-Hub-Signature-256", GH_SIG),
        ("X-GitHub-Delivery", "72d3162e"),
    ]);
    assert_eq!(v.delivery_id(&post(&h, b"")), Some("72d3162e".into()));
    assert_eq!(v.provider(), "github");
}

// ---------------------------------------------------------------- malformed headers, all presets

fn garbage_values() -> Vec<String> {
    vec![
        "".into(),
        " ".into(),
        "sha256=".into(),
        "sha256=zz".into(),
        "sha256=abc".into(),
        "sha256=757107ea0eb2509fc2".into(),
        "v0=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17ff".into(),
        "t=".into(),
        "t=abc,v1=".into(),
        "v1=deadbeef".into(),
        "ts=1;h1=zz".into(),
        "v1,!!!!".into(),
        "v1,".into(),
        ",,,,".into(),
        "===".into(),
        "t=1,t=2,v1=00".into(),
        "a".repeat(100_000),
        format!("v1={}", "0".repeat(64)).repeat(200),
        "v1,AAAA ".repeat(40),
        "\u{7f}".into(),
    ]
}

#[test]
fn refuses_malformed_signature_headers_of_every_kind_without_panicking() {
    for preset in providers::PRESETS {
        let Shape::Hmac(p) = &preset.shape else {
            continue;
        };
        let mut r = raw(preset.id, &["c2VjcmV0"]);
        if p.signed.contains("{url}") {
            r.public_url = Some("https://example.com/hook".into());
        }
        let v = verifier(&r);
        for g in garbage_values() {
            let mut h = HeaderMap::new();
            let Ok(value) = HeaderValue::from_str(&g) else {
                continue;
            };
            h.insert(HeaderName::from_static(p.header), value);
            for (name, val) in [
                ("x-slack-request-timestamp", T0.to_string()),
                ("x-zm-request-timestamp", T0.to_string()),
                ("webhook-id", "msg_1".to_string()),
                ("webhook-timestamp", T0.to_string()),
                ("svix-id", "msg_1".to_string()),
                ("svix-timestamp", T0.to_string()),
                ("twitch-eventsub-message-id", "m".to_string()),
                (
                    "twitch-eventsub-message-timestamp",
                    "2023-11-14T22:13:20Z".to_string(),
                ),
                ("x-hubspot-request-timestamp", (T0 * 1000).to_string()),
            ] {
                h.insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_str(&val).expect("v"),
                );
            }
            let body = br#"{"webhookTimestamp":1700000000000}"#;
            let res = v.verify(&post(&h, body), at(T0));
            assert!(
                res.is_err(),
                "{} accepted garbage {:?}",
                preset.id,
                &g[..g.len().min(40)]
            );
        }
        // A header that is not text.
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static(p.header),
            HeaderValue::from_bytes(b"\xff\xfe").expect("v"),
        );
        assert!(v.verify(&post(&h, b"{}"), at(T0)).is_err(), "{}", preset.id);
    }
}

// ---------------------------------------------------------------- Slack

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
const SLACK_TS: u64 = 1_531_420_618;

#[test]
fn answers_slack_url_verification_after_a_valid_signature() {
    let v = verifier(&raw("slack", &["s"]));
    let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let signed = v.sign(body, at(T0), None).expect("sign");
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let h = headers(&pairs);
    assert!(v.verify(&post(&h, body), at(T0)).is_ok());
    let reply = signed_reply(&v, &post(&h, body)).expect("handshake");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, Some("application/json"));
    assert_eq!(
        reply.body,
        br#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#
    );
    assert_eq!(
        signed_reply(&v, &post(&h, br#"{"type":"event_callback"}"#)),
        None
    );
}

// ---------------------------------------------------------------- Stripe

const STRIPE_SECRET: &str = "whsec_test_secret";
const STRIPE_BODY: &str = r#"{"id":"evt_1","object":"event"}"#;
// stripe-python 16.1.0 WebhookSignature.generate_signature_header(body, secret, 1700000000)
const STRIPE_SIG: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

#[test]
fn stripe_names_the_event_id_as_its_delivery() {
    let v = verifier(&raw("stripe", &[STRIPE_SECRET]));
    let h = headers(&[("Stripe-Signature", &format!("t={T0},v1={STRIPE_SIG}"))]);
    assert_eq!(
        v.delivery_id(&post(&h, STRIPE_BODY.as_bytes())),
        Some("evt_1".into())
    );
}

// ---------------------------------------------------------------- Standard Webhooks / Svix

const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: u64 = 1_614_265_330;
const SW_BODY: &str = r#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn sw_headers(sig: &str) -> HeaderMap {
    headers(&[
        ("webhook-id", SW_ID),
        ("webhook-timestamp", "1614265330"),
        ("webhook-signature", sig),
    ])
}

#[test]
fn standard_webhooks_names_the_message_id_as_its_delivery() {
    let v = verifier(&raw("standard-webhooks", &[SW_SECRET]));
    let h = sw_headers(SW_SIG);
    assert_eq!(v.delivery_id(&post(&h, b"")), Some(SW_ID.into()));
}

// PyNaCl SigningKey(bytes(range(32))) over "msg_p5j...Jek.1614265330.{\"test\": 2432232314}"
const SW_V1A_PUB: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
const SW_V1A_SIG: &str =
    "v1a,yoUrgEkc12aGqm0n4Sydmdz55xJfTz4AsAgieHFjmkR7LJtqVCZOQYzvvHjI5kAey+r4iaBGxTFRrl2iBQxtDQ==";

#[test]
fn standard_webhooks_v1a_names_the_delivery_and_cannot_sign() {
    let mut r = raw("standard-webhooks", &[]);
    r.public_key = Some(format!(
        "whpk_{} {SW_V1A_PUB}",
        encoding::base64_encode(&[7u8; 32])
    ));
    let v = verifier(&r);
    let h = sw_headers(&format!("{SW_SIG} {SW_V1A_SIG}"));
    assert_eq!(v.delivery_id(&post(&h, b"")), Some(SW_ID.into()));
    assert!(v.sign(b"x", at(T0), None).is_err());
}

#[test]
fn refuses_standard_webhooks_with_both_secrets_and_public_key_or_a_bad_key() {
    let mut r = raw("standard-webhooks", &[SW_SECRET]);
    r.public_key = Some(SW_V1A_PUB.into());
    assert_eq!(Verifier::from_raw(&r).expect_err("both").field, "secrets");
    let mut r = raw("standard-webhooks", &[]);
    r.public_key = Some("whpk_AAAA".into());
    assert_eq!(
        Verifier::from_raw(&r).expect_err("short").field,
        "public_key"
    );
}

// ---------------------------------------------------------------- Paddle

const PADDLE_SECRET: &str =
    "pdl_ntfset_01gkpjp8bkm3tm53kdgkx6sms7_6h3qd3uFSi9YCD3OLYAShQI90XTI5vEI";
// paddle-python-sdk 1.16.1 PaddleSignature.calculate_hmac(secret, "1700000000:" + body)
const PADDLE_H1: &str = "49bd2d57a59b6bb0d16cf407fd845b04d3000bddb9a16f9938109e133c442b8b";

// ---------------------------------------------------------------- PagerDuty

#[test]
fn accepts_any_signature_in_a_pagerduty_comma_list() {
    let v = verifier(&raw("pagerduty", &["pd secret"]));
    let signed = v.sign(b"{}", at(T0), None).expect("sign");
    let good = &signed
        .iter()
        .find(|(k, _)| k == "x-pagerduty-signature")
        .expect("sig")
        .1;
    let value = format!("v1={},{good}", "3".repeat(64));
    let h = headers(&[("X-PagerDuty-Signature", &value)]);
    assert!(v.verify(&post(&h, b"{}"), at(T0)).is_ok());
    let h = headers(&[("X-PagerDuty-Signature", &format!("v1={}", "3".repeat(64)))]);
    assert_eq!(reason(v.verify(&post(&h, b"{}"), at(T0))), Reason::Mismatch);
}

// ---------------------------------------------------------------- Twilio

const TWILIO_URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

fn twilio(url: &str) -> Verifier {
    let mut r = raw("twilio", &["12345"]);
    r.public_url = Some(url.into());
    verifier(&r)
}

#[test]
fn accepts_twilio_signature_over_the_url_with_its_default_port() {
    let v = twilio("https://mycompany.com/myapp.php");
    let signed = v
        .sign(b"A=1", at(T0), Some("https://mycompany.com:443/myapp.php"))
        .expect("sign");
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let h = headers(&pairs);
    let req = SignedRequest {
        public_url: Some("https://mycompany.com/myapp.php"),
        ..post(&h, b"A=1")
    };
    assert!(v.verify(&req, at(T0)).is_ok());
}

#[test]
fn twilio_needs_a_public_url() {
    let err = Verifier::from_raw(&raw("twilio", &["12345"])).expect_err("must refuse");
    assert_eq!(err.field, "public_url");
}

// ---------------------------------------------------------------- Mailgun

#[test]
fn accepts_mailgun_signature_fields_in_a_json_or_form_body() {
    let v = verifier(&raw("mailgun", &["key-mailgun"]));
    let Kind::Mailgun(m) = &v.kind else {
        panic!("kind")
    };
    let sig = m.signature_fields("1700000000", "tok123").expect("sig");
    let json = format!(
        r#"{{"signature":{{"timestamp":"1700000000","token":"tok123","signature":"{sig}"}},"event-data":{{"id":"ev-1"}}}}"#
    );
    let h = HeaderMap::new();
    assert!(v.verify(&post(&h, json.as_bytes()), at(T0)).is_ok());
    // The signature's token is the delivery id (Mailgun: reject a token seen before).
    assert_eq!(
        v.delivery_id(&post(&h, json.as_bytes())),
        Some("tok123".into())
    );
    let form = format!("timestamp=1700000000&token=tok123&signature={sig}&event=delivered");
    assert!(v.verify(&post(&h, form.as_bytes()), at(T0)).is_ok());
    let forged = form.replace("tok123", "tok124");
    assert_eq!(
        reason(v.verify(&post(&h, forged.as_bytes()), at(T0))),
        Reason::Mismatch
    );
    assert_eq!(
        reason(v.verify(&post(&h, b"event=delivered"), at(T0))),
        Reason::Missing
    );
    assert_eq!(
        reason(v.verify(&post(&h, b"{not json"), at(T0))),
        Reason::Malformed
    );
}

// ---------------------------------------------------------------- Discord / SendGrid

const DISCORD_PUB: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
// PyNaCl SigningKey(bytes(range(32))).sign(b"1700000000" + b'{"type":1}')
const DISCORD_SIG: &str = "c1098e97d711377f30225d53d94b89d43537f92e5b3afaddc590781b1f9f9d4b2eeab335d370be3b9a090bc61a85b86448bc140dcd195f1569c2bff181257607";

fn discord() -> Verifier {
    let mut r = raw("discord", &[]);
    r.public_key = Some(DISCORD_PUB.into());
    verifier(&r)
}

#[test]
fn answers_a_discord_ping_with_pong() {
    let v = discord();
    let h = headers(&[
        ("X-Signature-Ed25519", DISCORD_SIG),
        ("X-Signature-Timestamp", "1700000000"),
    ]);
    let req = post(&h, br#"{"type":1}"#);
    let reply = signed_reply(&v, &req).expect("pong");
    assert_eq!(reply.body, br#"{"type":1}"#);
    assert_eq!(v.on_failure_status(), 401);
}

#[test]
fn discord_cannot_sign_without_the_private_key() {
    assert!(discord().sign(b"x", at(T0), None).is_err());
}

#[test]
fn refuses_a_discord_public_key_that_is_not_32_bytes() {
    let mut r = raw("discord", &[]);
    r.public_key = Some("abcd".into());
    assert_eq!(
        Verifier::from_raw(&r).expect_err("bad key").field,
        "public_key"
    );
    r.public_key = None;
    assert_eq!(
        Verifier::from_raw(&r).expect_err("no key").field,
        "public_key"
    );
}

const SG_PUB: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvXxzuIsum0ztpiAistqL4TGTpbVu3Cbn33hC4kzQtesGBa2nvag6xqK4DX4xQED6R/8WuDushc7bAURRu3znGg==";
// Signed with Python cryptography (ECDSA P-256/SHA-256), verified by sendgrid 6.12.5 EventWebhook.
const SG_SIG: &str = "MEYCIQCN1V4mMlhkZFmhj6gyliRyeoYYmRQecm+gyjrE58FY7QIhAIenCJAx8oGLuN7SGvIXBPcg9wFU2K3WSXXIXwdllOCR";
const SG_BODY: &str = r#"[{"email":"a@example.com","event":"processed"}]"#;

#[test]
fn accepts_sendgrid_signature_from_a_generated_key_in_pem_armour() {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("gen");
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
        .expect("kp");
    let mut spki = sendgrid::P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(kp.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        encoding::base64_encode(&spki)
    );
    let sig = kp.sign(&rng, b"1700000000hello").expect("sign");
    let mut r = raw("sendgrid", &[]);
    r.public_key = Some(pem);
    let v = verifier(&r);
    let h = headers(&[
        (
            "X-Twilio-Email-Event-Webhook-Signature",
            &encoding::base64_encode(sig.as_ref()),
        ),
        ("X-Twilio-Email-Event-Webhook-Timestamp", "1700000000"),
    ]);
    assert!(v.verify(&post(&h, b"hello"), at(T0)).is_ok());
}

#[test]
fn refuses_a_sendgrid_key_that_is_not_p256() {
    let mut r = raw("sendgrid", &[]);
    r.public_key = Some("MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=".into());
    assert_eq!(
        Verifier::from_raw(&r).expect_err("ed25519 key").field,
        "public_key"
    );
}

#[test]
fn a_body_split_into_frames_verifies_as_the_same_body_in_one_piece() {
    let body: &[u8] =
        br#"{"event":"order.paid","webhookTimestamp":1700000000000,"pad":"0123456789abcdef"}"#;
    let cuts: [&[usize]; 4] = [&[1], &[7, 8, 40], &[10, 20, 30, 40, 50, 60, 70], &[]];
    let mut checked = 0;
    // Twilio signs a JSON body through a hash in the URL: checked below with the SDK's vector.
    for id in providers::PRESETS
        .iter()
        .map(|p| p.id)
        .filter(|id| *id != "twilio")
    {
        let mut r = raw(id, &["c2VjcmV0"]);
        r.public_url = Some("https://example.com/hook".into());
        let Ok(v) = Verifier::from_raw(&r) else {
            continue;
        };
        let Ok(signed) = v.sign(body, at(T0), None) else {
            continue; // public-key providers, and timestamps read from the body
        };
        let mut h = headers(
            &signed
                .iter()
                .map(|(k, val)| (k.as_str(), val.as_str()))
                .collect::<Vec<_>>(),
        );
        h.insert("content-type", HeaderValue::from_static("application/json"));
        for cut in cuts {
            let mut frames = Vec::new();
            let mut start = 0;
            for &end in cut.iter().chain([&body.len()]) {
                frames.push(bytes::Bytes::copy_from_slice(&body[start..end]));
                start = end;
            }
            let req = SignedRequest {
                body: Body::frames(&frames),
                ..post(&h, body)
            };
            assert!(v.verify(&req, at(T0)).is_ok(), "{id} split at {cut:?}");
            assert_eq!(req.body.len(), body.len());
            assert_eq!(req.body.joined().as_ref(), body);
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} providers could sign");

    // Twilio hashes a JSON body on its own (bodySHA256); the official SDK's vector, in frames.
    let body = br#"{"property": "value", "boolean": true}"#;
    let url = "https://mycompany.com/myapp.php?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let h = headers(&[
        ("X-Twilio-Signature", "y77kIzt2vzLz71DgmJGsen2scGs="),
        ("Content-Type", "application/json"),
    ]);
    let frames: Vec<_> = body.chunks(5).map(bytes::Bytes::copy_from_slice).collect();
    let req = SignedRequest {
        public_url: Some(url),
        body: Body::frames(&frames),
        ..post(&h, body)
    };
    assert!(twilio("https://mycompany.com/myapp.php")
        .verify(&req, at(T0))
        .is_ok());
}
