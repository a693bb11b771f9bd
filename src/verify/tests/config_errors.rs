//! `verify:` blocks that must be refused at load, with the field named and no secret shown.

use super::*;

#[test]
fn refuses_unknown_provider_empty_secrets_and_empty_secret() {
    let e = Verifier::from_raw(&raw("gihub", &["x"])).expect_err("unknown");
    assert_eq!(e.field, "provider");
    assert!(e.message.contains("github"));
    assert_eq!(
        Verifier::from_raw(&raw("github", &[]))
            .expect_err("none")
            .field,
        "secrets"
    );
    assert_eq!(
        Verifier::from_raw(&raw("github", &["a", " "]))
            .expect_err("empty")
            .field,
        "secrets[1]"
    );
}

#[test]
fn config_errors_never_contain_the_secret() {
    let mut r = raw("standard-webhooks", &["whsec_not*base64*TOPSECRET"]);
    let e = Verifier::from_raw(&r).expect_err("bad base64");
    assert_eq!(e.field, "secrets[0]");
    assert!(!e.to_string().contains("TOPSECRET"));
    r.secret_encoding = Some("rot13".into());
    assert!(!Verifier::from_raw(&r)
        .expect_err("enc")
        .to_string()
        .contains("TOPSECRET"));
    assert!(!format!("{r:?}").contains("TOPSECRET"));
    assert_eq!(format!("{}", Secret::new("TOPSECRET")), "***");
}

#[test]
fn refuses_keys_a_preset_fixes() {
    let mut r = raw("github", &["x"]);
    r.header = Some("X-Other".into());
    assert_eq!(Verifier::from_raw(&r).expect_err("fixed").field, "header");
    let mut r = raw("github", &["x"]);
    r.tolerance = Some("5m".into());
    assert_eq!(
        Verifier::from_raw(&r).expect_err("no ts").field,
        "tolerance"
    );
}

#[test]
fn refuses_bad_generic_settings() {
    let mut r = raw("hmac", &["x"]);
    assert_eq!(Verifier::from_raw(&r).expect_err("header").field, "header");
    r.header = Some("X-Sig".into());
    r.algorithm = Some("md5".into());
    assert_eq!(Verifier::from_raw(&r).expect_err("alg").field, "algorithm");
    r.algorithm = None;
    r.signed = Some("{timestamp}{body}".into());
    assert_eq!(Verifier::from_raw(&r).expect_err("ts").field, "signed");
    r.signed = Some("{nope}{body}".into());
    assert_eq!(
        Verifier::from_raw(&r).expect_err("placeholder").field,
        "signed"
    );
    r.signed = Some("{timestamp}".into());
    assert_eq!(Verifier::from_raw(&r).expect_err("no body").field, "signed");
    r.signed = None;
    r.tolerance = Some("five minutes".into());
    r.timestamp_header = Some("X-Ts".into());
    assert_eq!(
        Verifier::from_raw(&r).expect_err("duration").field,
        "tolerance"
    );
    r.tolerance = None;
    r.on_failure = Some(200);
    assert_eq!(
        Verifier::from_raw(&r).expect_err("status").field,
        "on_failure"
    );
    r.on_failure = Some(403);
    assert_eq!(verifier(&r).on_failure_status(), 403);
}

/// A prefix that starts with a space can never match: a header value is read without the
/// spaces around it (found by the verify fuzz target: such a route refused what its own
/// sign() made). One that ends with a space, as `Bearer `, is fine.
#[test]
fn refuses_a_prefix_starting_with_a_space() {
    for provider in ["hmac", "token"] {
        let mut r = raw(provider, &["deadbeef"]);
        r.header = Some("X-Sig".into());
        r.prefix = Some(" hex".into());
        let e = Verifier::from_raw(&r).expect_err("leading space");
        assert_eq!(e.field, "prefix", "{provider}");
        assert!(e.message.contains("space"), "{provider}: {e}");
        r.prefix = Some("v1 ".into());
        assert!(
            Verifier::from_raw(&r).is_ok(),
            "{provider}: a trailing space"
        );
    }
}

#[test]
fn hex_and_base64_secret_encodings_decode_the_key() {
    let mut r = raw(
        "github",
        &["4974277320612053656372657420746f2045766572796279"],
    );
    r.secret_encoding = Some("hex".into());
    let v = verifier(&r);
    let h = headers(&[("X-Hub-Signature-256", GH_SIG)]);
    // hex of "It's a Secret to Everyby" (a different key) must not verify GitHub's example
    assert_eq!(
        reason(v.verify(&post(&h, b"Hello, World!"), at(T0))),
        Reason::Mismatch
    );
    let mut r = raw("github", &["SXQncyBhIFNlY3JldCB0byBFdmVyeWJvZHk="]);
    r.secret_encoding = Some("base64".into());
    assert!(verifier(&r)
        .verify(&post(&h, b"Hello, World!"), at(T0))
        .is_ok());
}

#[test]
fn raw_verify_rejects_unknown_keys_in_yaml() {
    let ok: Result<RawVerify, _> = serde_json::from_str(r#"{"provider":"github","secrets":["a"]}"#);
    assert!(ok.is_ok());
    let bad: Result<RawVerify, _> =
        serde_json::from_str(r#"{"provider":"github","secrets":["a"],"secret":"b"}"#);
    assert!(bad.is_err());
}

#[test]
fn refuses_a_token_that_cannot_travel_in_a_header() {
    for bad in ["s3cr3t-x ", " s3cr3t-x", "s3cr3t-ö", "s3cr3t\tx"] {
        let raw = RawVerify {
            provider: "token".into(),
            header: Some("authorization".into()),
            prefix: Some("Bearer ".into()),
            secrets: vec![Secret::new(bad)],
            ..Default::default()
        };
        let err = Verifier::from_raw(&raw).expect_err(bad);
        assert_eq!(err.field, "secrets[0]");
        assert!(
            !err.to_string().contains("s3cr3t"),
            "no secret in the error: {err}"
        );
    }
}
