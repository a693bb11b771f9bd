//! Provider handshakes: URL validation, CRC and challenge answers, each only after the proof
//! the provider gives (or, for unsigned challenges, only for the exact request shape).

use super::*;

#[test]
fn answers_zoom_url_validation_with_the_hmac_of_the_plain_token() {
    let v = verifier(&raw("zoom", &["zoom-secret"]));
    let body = br#"{"event":"endpoint.url_validation","payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680}"#;
    let signed = v.sign(body, at(T0), None).expect("sign");
    let pairs: Vec<(&str, &str)> = signed
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let h = headers(&pairs);
    assert!(v.verify(&post(&h, body), at(T0)).is_ok());
    let reply = signed_reply(&v, &post(&h, body)).expect("reply");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"zoom-secret");
    let expected = encoding::hex_encode(ring::hmac::sign(&key, b"qgg8vlvZRS6UYooatFL8Aw").as_ref());
    let got: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(got["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(got["encryptedToken"], expected.as_str());
}

#[test]
fn answers_twitch_callback_verification_with_the_raw_challenge() {
    let v = verifier(&raw("twitch", &["twitch-secret"]));
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{}}"#;
    let h = headers(&[
        (
            "Twitch-Eventsub-Message-Id",
            "e76c6bd4-55c9-4987-8304-da1588d8988b",
        ),
        (
            "Twitch-Eventsub-Message-Timestamp",
            "2023-11-14T22:13:20.634234626Z",
        ),
        (
            "Twitch-Eventsub-Message-Type",
            "webhook_callback_verification",
        ),
    ]);
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"twitch-secret");
    let mut msg = b"e76c6bd4-55c9-4987-8304-da1588d8988b2023-11-14T22:13:20.634234626Z".to_vec();
    msg.extend_from_slice(body);
    let sig = format!(
        "sha256={}",
        encoding::hex_encode(ring::hmac::sign(&key, &msg).as_ref())
    );
    let mut h2 = h.clone();
    h2.insert(
        "twitch-eventsub-message-signature",
        HeaderValue::from_str(&sig).expect("v"),
    );
    assert!(v.verify(&post(&h2, body), at(T0)).is_ok());
    assert_eq!(
        reason(v.verify(&post(&h2, body), at(T0 + 601))),
        Reason::Expired
    );
    let reply = signed_reply(&v, &post(&h2, body)).expect("reply");
    assert_eq!(reply.content_type, Some("text/plain"));
    assert_eq!(reply.body, b"pogchamp-kappa-360noscope-vohiyo");
    assert_eq!(
        v.delivery_id(&post(&h2, body)),
        Some("e76c6bd4-55c9-4987-8304-da1588d8988b".into())
    );
}

#[test]
fn answers_dropbox_get_challenge_and_refuses_other_unsigned_gets() {
    let v = verifier(&raw("dropbox", &["app-secret"]));
    let h = HeaderMap::new();
    let get = SignedRequest {
        method: "GET",
        public_url: None,
        query: Some("challenge=abc%20123"),
        headers: &h,
        body: b"".into(),
    };
    assert_eq!(v.unsigned_handshake(&get).expect("reply").body, b"abc 123");
    // The challenge is answered, not verified: as a request it carries no signature.
    assert_eq!(reason(v.verify(&get, at(T0))), Reason::Missing);
    let plain_get = SignedRequest { query: None, ..get };
    assert_eq!(v.unsigned_handshake(&plain_get), None);
    // A POST carrying a challenge query is not a handshake: it needs a signature.
    let sneaky = SignedRequest {
        method: "POST",
        ..get
    };
    assert_eq!(reason(v.verify(&sneaky, at(T0))), Reason::Missing);
    assert_eq!(v.unsigned_handshake(&sneaky), None);
}

#[test]
fn answers_twitter_crc_with_the_hmac_of_the_token() {
    let v = verifier(&raw("twitter", &["consumer-secret"]));
    let h = HeaderMap::new();
    let get = SignedRequest {
        method: "GET",
        public_url: None,
        query: Some("crc_token=tok&nonce=1"),
        headers: &h,
        body: b"".into(),
    };
    let reply = v.unsigned_handshake(&get).expect("reply");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"consumer-secret");
    let expected = format!(
        "sha256={}",
        encoding::base64_encode(ring::hmac::sign(&key, b"tok").as_ref())
    );
    let got: serde_json::Value = serde_json::from_slice(&reply.body).expect("json");
    assert_eq!(got["response_token"], expected.as_str());
}
