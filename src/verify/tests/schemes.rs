//! Schemes beyond a plain header HMAC: HubSpot, Linear and Square templates, the token and
//! basic-auth schemes, the generic `provider: hmac`, and every symmetric preset verifying what
//! it signs.

use super::*;

#[test]
fn hubspot_signs_method_decoded_url_body_and_timestamp() {
    let mut r = raw("hubspot", &["client-secret"]);
    r.public_url = Some("https://example.com/hook".into());
    let v = verifier(&r);
    let url = "https://example.com/hook?email=a%40b.com&x=%2Fy";
    let body = br#"[{"eventId":1}]"#;
    let ts = (T0 * 1000).to_string();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"client-secret");
    let msg = format!(
        "POSThttps://example.com/hook?email=a@b.com&x=/y{}{ts}",
        std::str::from_utf8(body).expect("utf8")
    );
    let sig = encoding::base64_encode(ring::hmac::sign(&key, msg.as_bytes()).as_ref());
    let h = headers(&[
        ("X-HubSpot-Signature-v3", &sig),
        ("X-HubSpot-Request-Timestamp", &ts),
    ]);
    let req = SignedRequest {
        public_url: Some(url),
        ..post(&h, body)
    };
    assert!(v.verify(&req, at(T0 + 60)).is_ok());
    assert_eq!(reason(v.verify(&req, at(T0 + 301))), Reason::Expired);
    let get = SignedRequest {
        method: "GET",
        ..req
    };
    assert_eq!(reason(v.verify(&get, at(T0))), Reason::Mismatch);
}

#[test]
fn linear_checks_the_webhook_timestamp_inside_the_body() {
    let v = verifier(&raw("linear", &["lin-secret"]));
    let body = format!(r#"{{"action":"create","webhookTimestamp":{}}}"#, T0 * 1000);
    let signed = v.sign(body.as_bytes(), at(T0), None).expect("sign");
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let h = headers(&pairs);
    assert!(v.verify(&post(&h, body.as_bytes()), at(T0 + 59)).is_ok());
    assert_eq!(
        reason(v.verify(&post(&h, body.as_bytes()), at(T0 + 61))),
        Reason::Expired
    );
}

#[test]
fn square_signs_the_notification_url_and_body() {
    let mut r = raw("square", &["sq-key"]);
    r.public_url = Some("https://example.com/square".into());
    let v = verifier(&r);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"sq-key");
    let sig = encoding::base64_encode(
        ring::hmac::sign(&key, b"https://example.com/square{\"event_id\":\"e1\"}").as_ref(),
    );
    let h = headers(&[("x-square-hmacsha256-signature", &sig)]);
    let body = br#"{"event_id":"e1"}"#;
    assert!(v.verify(&post(&h, body), at(T0)).is_ok());
    assert_eq!(v.delivery_id(&post(&h, body)), Some("e1".into()));
    let elsewhere = SignedRequest {
        public_url: Some("https://evil.example/square"),
        ..post(&h, body)
    };
    assert_eq!(reason(v.verify(&elsewhere, at(T0))), Reason::Mismatch);
}

// ---------------------------------------------------------------- token / basic-auth

#[test]
fn gitlab_token_must_equal_a_configured_secret() {
    let v = verifier(&raw("gitlab", &["tok-new", "tok-old"]));
    let h = headers(&[
        ("X-Gitlab-Token", "tok-old"),
        ("X-Gitlab-Event-UUID", "uuid-1"),
    ]);
    assert_eq!(
        v.verify(&post(&h, b"{}"), at(T0)),
        Ok(Verified { secret_index: 1 })
    );
    assert_eq!(v.delivery_id(&post(&h, b"{}")), Some("uuid-1".into()));
    let h = headers(&[("X-Gitlab-Token", "tok-ol")]);
    assert_eq!(reason(v.verify(&post(&h, b"{}"), at(T0))), Reason::Mismatch);
    let h = HeaderMap::new();
    assert_eq!(reason(v.verify(&post(&h, b"{}"), at(T0))), Reason::Missing);
}

#[test]
fn generic_token_checks_the_configured_header_and_prefix() {
    let mut r = raw("token", &["s3cret"]);
    r.header = Some("Authorization".into());
    r.prefix = Some("Bearer ".into());
    let v = verifier(&r);
    let h = headers(&[("Authorization", "Bearer s3cret")]);
    assert!(v.verify(&post(&h, b""), at(T0)).is_ok());
    let h = headers(&[("Authorization", "Basic s3cret")]);
    assert_eq!(reason(v.verify(&post(&h, b""), at(T0))), Reason::Malformed);
}

#[test]
fn postmark_basic_auth_matches_user_and_password() {
    let v = verifier(&raw("postmark", &["hook:pa55"]));
    let good = format!("Basic {}", encoding::base64_encode(b"hook:pa55"));
    let h = headers(&[("Authorization", &good)]);
    assert!(v.verify(&post(&h, b"{}"), at(T0)).is_ok());
    let bad = format!("Basic {}", encoding::base64_encode(b"hook:pa56"));
    let h = headers(&[("Authorization", &bad)]);
    assert_eq!(reason(v.verify(&post(&h, b"{}"), at(T0))), Reason::Mismatch);
    let h = headers(&[("Authorization", "Basic !!!")]);
    assert_eq!(
        reason(v.verify(&post(&h, b"{}"), at(T0))),
        Reason::Malformed
    );
    let err = Verifier::from_raw(&raw("postmark", &["no-colon"])).expect_err("needs user:password");
    assert_eq!(err.field, "secrets[0]");
}

// ---------------------------------------------------------------- generic hmac

#[test]
fn generic_hmac_follows_the_design_example() {
    let mut r = raw("hmac", &["custom"]);
    r.algorithm = Some("sha256".into());
    r.header = Some("X-Signature".into());
    r.prefix = Some("sha256=".into());
    r.encoding = Some("hex".into());
    r.signed = Some("{timestamp}.{body}".into());
    r.timestamp_header = Some("X-Timestamp".into());
    r.tolerance = Some("5m".into());
    let v = verifier(&r);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"custom");
    let sig = format!(
        "sha256={}",
        encoding::hex_encode(ring::hmac::sign(&key, format!("{T0}.hi").as_bytes()).as_ref())
    );
    let h = headers(&[("X-Signature", &sig), ("X-Timestamp", &T0.to_string())]);
    assert!(v.verify(&post(&h, b"hi"), at(T0)).is_ok());
    assert_eq!(
        reason(v.verify(&post(&h, b"hi"), at(T0 + 301))),
        Reason::Expired
    );
}

#[test]
fn generic_hmac_supports_structured_headers_and_sha512_base64() {
    let mut r = raw("hmac", &["k"]);
    r.algorithm = Some("sha512".into());
    r.header = Some("X-Sig".into());
    r.encoding = Some("base64".into());
    r.signature_key = Some("s".into());
    r.timestamp_key = Some("ts".into());
    r.separator = Some(";".into());
    r.signed = Some("{timestamp}|{method}|{header:X-Tenant}|{body}".into());
    r.timestamp_format = Some("milliseconds".into());
    r.future_tolerance = Some("off".into());
    let v = verifier(&r);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, b"k");
    let ts = (T0 * 1000).to_string();
    let sig = encoding::base64_encode(
        ring::hmac::sign(&key, format!("{ts}|POST|acme|x").as_bytes()).as_ref(),
    );
    let h = headers(&[("X-Sig", &format!("ts={ts};s={sig}")), ("X-Tenant", "acme")]);
    assert!(v.verify(&post(&h, b"x"), at(T0 - 10_000)).is_ok());
    let h = headers(&[
        ("X-Sig", &format!("ts={ts};s={sig}")),
        ("X-Tenant", "other"),
    ]);
    assert_eq!(reason(v.verify(&post(&h, b"x"), at(T0))), Reason::Mismatch);
}

#[test]
fn every_symmetric_preset_verifies_what_it_signs() {
    for preset in providers::PRESETS {
        let mut r = match preset.shape {
            Shape::Discord | Shape::Sendgrid | Shape::Mailgun => continue,
            Shape::BasicAuth => raw(preset.id, &["u:p"]),
            _ => raw(preset.id, &["c2VjcmV0LWtleQ=="]),
        };
        r.public_url = Some("https://example.com/hooks/x".into());
        let v = verifier(&r);
        let body = format!(r#"{{"webhookTimestamp":{},"id":"e"}}"#, T0 * 1000);
        let signed = match v.sign(body.as_bytes(), at(T0), None) {
            Ok(s) => s,
            Err(e) => panic!("{}: {e}", preset.id),
        };
        let pairs: Vec<(&str, &str)> = signed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let h = headers(&pairs);
        assert_eq!(
            v.verify(&post(&h, body.as_bytes()), at(T0)),
            Ok(Verified { secret_index: 0 }),
            "{}",
            preset.id
        );
        let tampered = body.replace("\"e\"", "\"f\"");
        if !matches!(preset.shape, Shape::Gitlab | Shape::BasicAuth) {
            assert!(
                v.verify(&post(&h, tampered.as_bytes()), at(T0)).is_err(),
                "{} tampered",
                preset.id
            );
        }
    }
}
