//! Provider request vectors as a table: one row per request a provider (or its official SDK)
//! sent or could send, and the answer `verify` must give. The published and SDK-made vectors are
//! the same ones `fuzz/corpus/verify` carries as seeds. A row is one assertion; the runner checks
//! every row and names each one that fails.

use super::*;

/// One request and the outcome `verify` must give for it.
struct Vector {
    name: &'static str,
    config: RawVerify,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The request's public URL as the pipeline passes it (Twilio).
    public_url: Option<&'static str>,
    now: u64,
    /// The index of the secret that matched, or why the request is refused.
    expect: Result<usize, Reason>,
}

fn case(
    name: &'static str,
    config: RawVerify,
    headers: &[(&'static str, &str)],
    body: &[u8],
    now: u64,
    expect: Result<usize, Reason>,
) -> Vector {
    Vector {
        name,
        config,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        body: body.to_vec(),
        public_url: None,
        now,
        expect,
    }
}

impl Vector {
    fn at_url(mut self, url: &'static str) -> Vector {
        self.public_url = Some(url);
        self
    }
}

fn with(mut r: RawVerify, edit: impl FnOnce(&mut RawVerify)) -> RawVerify {
    edit(&mut r);
    r
}

use Reason::{Expired, Future, Malformed, Mismatch, Missing, UnknownVersion};

fn vectors() -> Vec<Vector> {
    let gh = || raw("github", &[GH_SECRET]);
    let hello = b"Hello, World!";
    let slack = || raw("slack", &[SLACK_SECRET]);
    let slack_h = [
        ("X-Slack-Signature", SLACK_SIG),
        ("X-Slack-Request-Timestamp", "1531420618"),
    ];
    let sb = SLACK_BODY.as_bytes();
    let stripe = || raw("stripe", &[STRIPE_SECRET]);
    let st_body = STRIPE_BODY.as_bytes();
    let st_sig = format!("t={T0},v1={STRIPE_SIG}");
    let sw = || raw("standard-webhooks", &[SW_SECRET]);
    let sw_h = |sig: &str| {
        [
            ("webhook-id", SW_ID.to_string()),
            ("webhook-timestamp", "1614265330".to_string()),
            ("webhook-signature", sig.to_string()),
        ]
    };
    let swb = SW_BODY.as_bytes();
    let sw_v1a = || {
        with(raw("standard-webhooks", &[]), |r| {
            r.public_key = Some(format!(
                "whpk_{} {SW_V1A_PUB}",
                encoding::base64_encode(&[7u8; 32])
            ))
        })
    };
    let paddle = || raw("paddle", &[PADDLE_SECRET]);
    let paddle_sig = format!("ts={T0};h1={PADDLE_H1}");
    let twilio = || {
        with(raw("twilio", &["12345"]), |r| {
            r.public_url = Some("https://mycompany.com/myapp.php".into())
        })
    };
    let tw_form = [
        ("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    // Out of order on purpose: the parameters are sorted before signing.
    let tw_body = b"To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1234&From=%2B12349013030&Caller=%2B12349013030";
    let tw_json = [
        ("X-Twilio-Signature", "y77kIzt2vzLz71DgmJGsen2scGs="),
        ("Content-Type", "application/json"),
    ];
    // twilio 9.13.0 RequestValidator("12345"): compute_hash(body), compute_signature(url, {})
    let tw_json_url = "https://mycompany.com/myapp.php?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let discord = || {
        with(raw("discord", &[]), |r| {
            r.public_key = Some(DISCORD_PUB.into())
        })
    };
    let dc_ts = |ts: &'static str| {
        [
            ("X-Signature-Ed25519", DISCORD_SIG),
            ("X-Signature-Timestamp", ts),
        ]
    };
    let sendgrid = || with(raw("sendgrid", &[]), |r| r.public_key = Some(SG_PUB.into()));
    let sg_h = |sig: &'static str| {
        [
            ("X-Twilio-Email-Event-Webhook-Signature", sig),
            ("X-Twilio-Email-Event-Webhook-Timestamp", "1700000000"),
        ]
    };
    let svix_h = [
        ("svix-id", "msg_1"),
        ("svix-timestamp", "1700000000"),
        (
            "svix-signature",
            "v1,PK2pTbGdO9pqLZglKL/a98TCXtuzIo+9EgRDI/U+HGY=",
        ),
    ];
    let sw_ref =
        |pairs: &[(&'static str, String); 3]| -> Vec<(&'static str, String)> { pairs.to_vec() };
    let sw_case = |name, config, sig: &str, body: &[u8], now, expect| Vector {
        headers: sw_ref(&sw_h(sig)),
        ..case(name, config, &[], body, now, expect)
    };

    vec![
        // GitHub: the documented example.
        case("github: documented example", gh(), &[("X-Hub-Signature-256", GH_SIG), ("X-GitHub-Delivery", "72d3162e")], hello, T0, Ok(0)),
        case("github: tampered body", gh(), &[("X-Hub-Signature-256", GH_SIG)], b"Hello, World?", T0, Err(Mismatch)),
        case("github: another secret", raw("github", &["another secret"]), &[("X-Hub-Signature-256", GH_SIG)], hello, T0, Err(Mismatch)),
        case("github: the second rotated secret matches", raw("github", &["new secret", GH_SECRET]), &[("X-Hub-Signature-256", GH_SIG)], hello, T0, Ok(1)),
        case("github: no signature header", gh(), &[("X-Hub-Signature", "sha1=0123")], hello, T0, Err(Missing)),
        case("github: sha1 value in the sha256 header", gh(), &[("X-Hub-Signature-256", "sha1=0a4d55a8d778e5022fab701977c5d840bbc486d0")], hello, T0, Err(UnknownVersion)),
        case("github: empty header", gh(), &[("X-Hub-Signature-256", "")], b"x", T0, Err(Malformed)),
        case("github: not hex", gh(), &[("X-Hub-Signature-256", "sha256=xyz")], hello, T0, Err(Malformed)),
        case("github: too short", gh(), &[("X-Hub-Signature-256", "sha256=757107ea")], hello, T0, Err(Malformed)),
        case("github: too long", gh(), &[("X-Hub-Signature-256", &format!("{GH_SIG}00"))], hello, T0, Err(Malformed)),
        case("stripe: huge header", raw("stripe", &["whsec_x"]), &[("Stripe-Signature", &format!("t={T0},{}", "v1=00,".repeat(5000)))], b"x", T0, Err(Malformed)),
        // Slack: the documented example, five minutes both ways.
        case("slack: documented example", slack(), &slack_h, sb, SLACK_TS + 299, Ok(0)),
        case("slack: stale", slack(), &slack_h, sb, SLACK_TS + 301, Err(Expired)),
        case("slack: from the future", slack(), &slack_h, sb, SLACK_TS - 301, Err(Future)),
        case("slack: no timestamp", slack(), &[("X-Slack-Signature", SLACK_SIG)], sb, SLACK_TS, Err(Missing)),
        case("slack: timestamp not a number", slack(), &[("X-Slack-Signature", SLACK_SIG), ("X-Slack-Request-Timestamp", "12:00")], sb, SLACK_TS, Err(Malformed)),
        case("slack: tolerance widened per route", with(slack(), |r| r.tolerance = Some("1h".into())), &slack_h, sb, SLACK_TS + 3000, Ok(0)),
        // Stripe: stripe-python 16.1.0.
        case("stripe: official SDK", stripe(), &[("Stripe-Signature", &st_sig)], st_body, T0 + 10, Ok(0)),
        // The SDK keys HMAC with the whole whsec_ string; decoding the tail must not verify.
        case("stripe: keyed with the whole whsec string", raw("stripe", &[SW_SECRET]), &[("Stripe-Signature", "t=1700000000,v1=1e58533e9136e20e64d0cc6a7d309ac7aeb8c42d5cfa02e63055723957723ba6")], st_body, T0, Ok(0)),
        case("stripe: base64-decoded whsec key", with(raw("stripe", &[SW_SECRET]), |r| r.secret_encoding = Some("base64".into())), &[("Stripe-Signature", "t=1700000000,v1=1e58533e9136e20e64d0cc6a7d309ac7aeb8c42d5cfa02e63055723957723ba6")], st_body, T0, Err(Mismatch)),
        case("stripe: stale", stripe(), &[("Stripe-Signature", &st_sig)], st_body, T0 + 301, Err(Expired)),
        case("stripe: a day ahead is accepted, like the SDK", stripe(), &[("Stripe-Signature", &st_sig)], st_body, T0 - 86_400, Ok(0)),
        case("stripe: any of several v1, v0 ignored", stripe(), &[("Stripe-Signature", &format!("t={T0},v1={0},v0={0},v1={STRIPE_SIG}", "1".repeat(64)))], st_body, T0, Ok(0)),
        case("stripe: only v0", stripe(), &[("Stripe-Signature", &format!("t={T0},v0={STRIPE_SIG}"))], st_body, T0, Err(UnknownVersion)),
        case("stripe: no t", stripe(), &[("Stripe-Signature", &format!("v1={STRIPE_SIG}"))], st_body, T0, Err(Malformed)),
        case("stripe: t not a number", stripe(), &[("Stripe-Signature", &format!("t=yesterday,v1={STRIPE_SIG}"))], st_body, T0, Err(Malformed)),
        // Standard Webhooks: the specification's test vector.
        sw_case("standard-webhooks: test vector", sw(), SW_SIG, swb, SW_TS, Ok(0)),
        sw_case("standard-webhooks: one matching entry in a list", sw(), &format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1a,abc {SW_SIG}"), swb, SW_TS, Ok(0)),
        sw_case("standard-webhooks: only v1a entries", sw(), "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", swb, SW_TS, Err(UnknownVersion)),
        sw_case("standard-webhooks: stale", sw(), SW_SIG, swb, SW_TS + 301, Err(Expired)),
        sw_case("standard-webhooks: from the future", sw(), SW_SIG, swb, SW_TS - 301, Err(Future)),
        case("standard-webhooks: changed id", sw(), &[("webhook-id", "msg_other"), ("webhook-timestamp", "1614265330"), ("webhook-signature", SW_SIG)], swb, SW_TS, Err(Mismatch)),
        case("standard-webhooks: no id", sw(), &[("webhook-timestamp", "1614265330"), ("webhook-signature", SW_SIG)], swb, SW_TS, Err(Missing)),
        // Standard Webhooks v1a (Ed25519, PyNaCl): the second public key matches.
        sw_case("standard-webhooks v1a: second public key", sw_v1a(), &format!("{SW_SIG} {SW_V1A_SIG}"), swb, SW_TS, Ok(1)),
        sw_case("standard-webhooks v1a: other body", sw_v1a(), &format!("{SW_SIG} {SW_V1A_SIG}"), b"{}", SW_TS, Err(Mismatch)),
        sw_case("standard-webhooks v1a: stale", sw_v1a(), &format!("{SW_SIG} {SW_V1A_SIG}"), swb, SW_TS + 301, Err(Expired)),
        sw_case("standard-webhooks v1a: only a v1 entry", sw_v1a(), SW_SIG, swb, SW_TS, Err(UnknownVersion)),
        // Svix and the providers on it: svix 2.9.1 Webhook(SW_SECRET).sign("msg_1", T0, body).
        case("svix: official SDK", raw("svix", &[SW_SECRET]), &svix_h, st_body, T0, Ok(0)),
        case("clerk: svix SDK", raw("clerk", &[SW_SECRET]), &svix_h, st_body, T0, Ok(0)),
        case("resend: svix SDK", raw("resend", &[SW_SECRET]), &svix_h, st_body, T0, Ok(0)),
        // Paddle: paddle-python-sdk 1.16.1; five seconds either way.
        case("paddle: official SDK", paddle(), &[("Paddle-Signature", &paddle_sig)], st_body, T0 + 5, Ok(0)),
        case("paddle: any of several h1", paddle(), &[("Paddle-Signature", &format!("ts={T0};h1={};h1={PADDLE_H1}", "2".repeat(64)))], st_body, T0, Ok(0)),
        case("paddle: older than five seconds", paddle(), &[("Paddle-Signature", &paddle_sig)], st_body, T0 + 6, Err(Expired)),
        case("paddle: ahead of the clock", paddle(), &[("Paddle-Signature", &paddle_sig)], st_body, T0 - 6, Err(Future)),
        // Twilio: the documented example and twilio 9.13.0's JSON body (bodySHA256).
        case("twilio: documented example", twilio(), &tw_form, tw_body, T0, Ok(0)).at_url(TWILIO_URL),
        case("twilio: changed parameter", twilio(), &tw_form, b"To=%2B18005551212&CallSid=CA1234567890ABCDE&Digits=1235&From=%2B12349013030&Caller=%2B12349013030", T0, Err(Mismatch)).at_url(TWILIO_URL),
        case("twilio: changed URL", twilio(), &tw_form, tw_body, T0, Err(Mismatch)).at_url("https://mycompany.com/myapp.php?foo=1"),
        case("twilio: JSON body, official SDK", twilio(), &tw_json, br#"{"property": "value", "boolean": true}"#, T0, Ok(0)).at_url(tw_json_url),
        case("twilio: JSON body tampered", twilio(), &tw_json, br#"{"property": "value", "boolean": false}"#, T0, Err(Mismatch)).at_url(tw_json_url),
        case("twilio: JSON body without bodySHA256", twilio(), &tw_json, b"{}", T0, Err(Malformed)).at_url("https://mycompany.com/myapp.php"),
        // Discord (Ed25519, PyNaCl).
        case("discord: ping", discord(), &dc_ts("1700000000"), br#"{"type":1}"#, T0, Ok(0)),
        case("discord: tampered body", discord(), &dc_ts("1700000000"), br#"{"type":2}"#, T0, Err(Mismatch)),
        case("discord: changed timestamp", discord(), &dc_ts("1700000001"), br#"{"type":1}"#, T0, Err(Mismatch)),
        case("discord: signature not 64 bytes", discord(), &[("X-Signature-Ed25519", "abcd"), ("X-Signature-Timestamp", "1700000000")], br#"{"type":1}"#, T0, Err(Malformed)),
        // SendGrid (ECDSA P-256, verified by sendgrid 6.12.5 EventWebhook).
        case("sendgrid: event webhook", sendgrid(), &sg_h(SG_SIG), SG_BODY.as_bytes(), T0, Ok(0)),
        case("sendgrid: other body", sendgrid(), &sg_h(SG_SIG), b"[]", T0, Err(Mismatch)),
        case("sendgrid: signature not base64", sendgrid(), &sg_h("not base64!"), SG_BODY.as_bytes(), T0, Err(Malformed)),
    ]
}

#[test]
fn every_provider_vector_gets_its_answer() {
    let vectors = vectors();
    let mut failed = Vec::new();
    for v in &vectors {
        let verifier = match Verifier::from_raw(&v.config) {
            Ok(verifier) => verifier,
            Err(e) => {
                failed.push(format!("{}: config refused: {e}", v.name));
                continue;
            }
        };
        let pairs: Vec<(&str, &str)> = v.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let h = headers(&pairs);
        let req = SignedRequest {
            public_url: v.public_url,
            ..post(&h, &v.body)
        };
        let got = verifier
            .verify(&req, at(v.now))
            .map(|ok| ok.secret_index)
            .map_err(|f| f.reason);
        if got != v.expect {
            failed.push(format!("{}: want {:?}, got {got:?}", v.name, v.expect));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} vectors failed:\n{}",
        failed.len(),
        vectors.len(),
        failed.join("\n")
    );
    // Rows are cases: dropping one must show in review.
    assert_eq!(vectors.len(), 57);
}
