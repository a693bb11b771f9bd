//! Several certificates on one TLS listener, chosen by SNI: exact names and `*.` wildcards
//! from the certificates' SANs or from configured `names:`, the first as the default for clients
//! without SNI (or with a name nobody has), and an ECDSA and an RSA certificate for one name
//! chosen by the signature schemes the client offers. A reload replaces one certificate and
//! leaves the others. Real sockets, a real rustls client; the expiry metric has a series per
//! certificate.

use crate::common::*;
use rustls::SignatureScheme;

const ROUTES: &str = r#"
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: open
    path: /hooks/open
    upstream: backend
    replay_window: off
    verify: { provider: github, secrets: ["It's a Secret to Everybody"] }
"#;

const SIG: (&str, &str) = (
    "x-hub-signature-256",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
);

const RSA_ONLY: &[SignatureScheme] = &[
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA256,
];
const ECDSA_ONLY: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];

/// The test listeners: a TLS one serving two certificates by SNI (the first is the default)
/// and a plain one.
fn two_cert_listeners(
    first: (&std::path::Path, &std::path::Path),
    second: (&std::path::Path, &std::path::Path),
) -> String {
    format!(
        r#"
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls:
      certs:
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
  - name: plain
    bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
access_log: "{{log}}"
"#,
        first.0.display(),
        first.1.display(),
        second.0.display(),
        second.1.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_gets_its_certificate_and_reload_replaces_only_one() {
    let certs = TestCerts::new();
    let (a_crt, a_key, a) = write_named_leaf(&certs, "a", &["a.test"], false);
    let (b_crt, b_key, b) = write_named_leaf(&certs, "b", &["b.test"], false);
    let (w_crt, w_key, w) = write_named_leaf(&certs, "w", &["*.w.test"], false);
    let (ce_crt, ce_key, c_ecdsa) = write_named_leaf(&certs, "c-ecdsa", &["c.test"], false);
    let (cr_crt, cr_key, c_rsa) = write_named_leaf(&certs, "c-rsa", &["c.test"], true);
    // Configured names win over the SANs: this one (for d.test) is served for e.test.
    let (d_crt, d_key, d) = write_named_leaf(&certs, "d", &["d.test"], false);
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let listeners = format!(
        r#"
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls:
      certs:
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}" }}
        - {{ cert: "{}", key: "{}", names: [E.test] }}
  - name: plain
    bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
access_log: "{{log}}"
"#,
        p(&a_crt),
        p(&a_key),
        p(&b_crt),
        p(&b_key),
        p(&w_crt),
        p(&w_key),
        p(&ce_crt),
        p(&ce_key),
        p(&cr_crt),
        p(&cr_key),
        p(&d_crt),
        p(&d_key),
    );
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;
    let addr = gw.tls_addr();

    assert!(
        presented_for(addr, Some("a.test"), &[]).await == a,
        "a.test gets A"
    );
    assert!(
        presented_for(addr, Some("b.test"), &[]).await == b,
        "b.test gets B"
    );
    assert!(
        presented_for(addr, Some("B.Test"), &[]).await == b,
        "names are case-blind"
    );
    assert!(
        presented_for(addr, Some("x.w.test"), &[]).await == w,
        "*.w.test covers x.w.test"
    );
    assert!(
        presented_for(addr, Some("x.y.w.test"), &[]).await == a,
        "but one label only"
    );
    assert!(
        presented_for(addr, None, &[]).await == a,
        "no SNI: the first, the default"
    );
    assert!(
        presented_for(addr, Some("nobody.test"), &[]).await == a,
        "unknown name: default"
    );
    assert!(
        presented_for(addr, Some("e.test"), &[]).await == d,
        "configured names: served"
    );
    assert!(
        presented_for(addr, Some("d.test"), &[]).await == a,
        "configured names replace SANs"
    );
    assert!(
        presented_for(addr, Some("c.test"), ECDSA_ONLY).await == c_ecdsa,
        "an ECDSA-only client gets the ECDSA certificate"
    );
    assert!(
        presented_for(addr, Some("c.test"), RSA_ONLY).await == c_rsa,
        "an RSA-only client gets the RSA certificate for the same name"
    );
    assert!(
        presented_for(addr, Some("c.test"), &[]).await == c_ecdsa,
        "a client that takes both gets the first configured"
    );

    let metrics = gw.metrics().await;
    for sni in ["a.test", "b.test", "*.w.test", "c.test", "e.test"] {
        let key = format!(
            r#"hookgate_tls_cert_not_after_timestamp_seconds{{listener="public",sni="{sni}"}}"#
        );
        assert!(
            metrics.contains_key(&key),
            "a series for {sni}: {metrics:?}"
        );
    }
    assert!(
        !metrics.contains_key(
            r#"hookgate_tls_cert_not_after_timestamp_seconds{listener="public",sni=""}"#
        ),
        "no unnamed series with certs:"
    );

    // Replace B's files and reload: b.test gets the new one, every other name keeps its own.
    let (_, _, b2) = write_named_leaf(&certs, "b", &["b.test"], false);
    assert!(b2 != b);
    gw.reload().unwrap();
    assert!(
        presented_for(addr, Some("b.test"), &[]).await == b2,
        "b.test: the new B"
    );
    assert!(
        presented_for(addr, Some("a.test"), &[]).await == a,
        "a.test: still A"
    );
    assert!(
        presented_for(addr, None, &[]).await == a,
        "the default: still A"
    );
    assert!(presented_for(addr, Some("c.test"), RSA_ONLY).await == c_rsa);

    // Drop B from the config: its series goes, the others stay.
    gw.edit_config(|yaml| {
        let line = format!(
            "        - {{ cert: \"{}\", key: \"{}\" }}\n",
            p(&b_crt),
            p(&b_key)
        );
        assert!(yaml.contains(&line));
        yaml.replace(&line, "")
    });
    gw.reload().unwrap();
    assert!(
        presented_for(addr, Some("b.test"), &[]).await == a,
        "b.test: now the default"
    );
    let metrics = gw.metrics().await;
    assert!(!metrics.contains_key(
        r#"hookgate_tls_cert_not_after_timestamp_seconds{listener="public",sni="b.test"}"#
    ));
    assert!(metrics.contains_key(
        r#"hookgate_tls_cert_not_after_timestamp_seconds{listener="public",sni="a.test"}"#
    ));
    gw.shutdown().await;
}

/// A request completes end to end through a certificate chosen by SNI and verified by a
/// client that trusts the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_completes_over_the_sni_certificate() {
    let certs = TestCerts::new();
    let (a_crt, a_key, _) = write_named_leaf(&certs, "a", &["a.test"], false);
    let (l_crt, l_key, _) = write_named_leaf(&certs, "l", &["localhost"], true);
    let listeners = two_cert_listeners((&a_crt, &a_key), (&l_crt, &l_key));
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;
    for client in [h1_client(&certs), h2_client(&certs)] {
        let (status, _, _) = send(
            &client,
            "POST",
            &gw.https_url("/hooks/open"),
            &[SIG],
            "Hello, World!",
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
    }
    gw.shutdown().await;
}

/// `tls:` mistakes are config errors naming file:line:col and the field; no ACME call is made
/// to check an `acme:` block.
#[test]
fn tls_block_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::new();
    let base = |tls: &str| {
        format!(
            "listeners:\n  - name: public\n    bind: 127.0.0.1:0\n    tls:\n{tls}\nupstreams:\n  b:\n    url: http://127.0.0.1:9\nroutes:\n  - name: r\n    path: /x\n    upstream: b\n    verify: {{ provider: github, secrets: [x] }}\n"
        )
    };
    let cert = certs.cert_path.display().to_string();
    let key = certs.key_path.display().to_string();
    let cache = dir.path().join("acme").display().to_string();
    let cases = [
        (format!("      cert: \"{cert}\""), "listeners[0].tls.key", "cert needs a key"),
        (
            format!("      cert: \"{cert}\"\n      key: \"{key}\"\n      certs: [{{ cert: \"{cert}\", key: \"{key}\" }}]"),
            "listeners[0].tls.certs",
            "not both",
        ),
        ("      certs: []".to_string(), "listeners[0].tls.certs", "at least one"),
        (
            format!("      certs: [{{ cert: \"{cert}\", key: \"{key}\", names: [\"bad name\"] }}]"),
            "listeners[0].tls.certs[0].names",
            "not a DNS name",
        ),
        (
            format!("      acme: {{ directory: https://acme.example/dir, domains: [\"*.example.com\"], cache: \"{cache}\" }}"),
            "listeners[0].tls.acme.domains",
            "wildcards",
        ),
        (
            format!("      acme: {{ directory: https://acme.example/dir, domains: [hooks.example.com], contact: [ops@example.com], cache: \"{cache}\" }}"),
            "listeners[0].tls.acme.contact",
            "mailto",
        ),
        (
            format!("      acme: {{ directory: http://acme.example/dir, domains: [hooks.example.com], cache: \"{cache}\" }}"),
            "listeners[0].tls.acme.directory",
            "https",
        ),
        (
            "      acme: { directory: https://acme.example/dir, domains: [hooks.example.com], cache: /proc/hookgate-acme }".to_string(),
            "listeners[0].tls.acme.cache",
            "writable",
        ),
    ];
    for (tls, field, message) in cases {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, base(&tls)).unwrap();
        let error = hookgate::config::load(&path)
            .err()
            .unwrap_or_else(|| panic!("{tls} loads"))
            .to_string();
        assert!(error.contains(field), "{tls}: {error}");
        assert!(error.contains(message), "{tls}: {error}");
        assert!(error.contains("gateway.yaml:"), "{tls}: {error}");
    }
    // A valid block loads without contacting the server (acme.example does not exist).
    std::fs::write(
        dir.path().join("gateway.yaml"),
        base(&format!("      acme: {{ directory: https://acme.example/dir, domains: [Hooks.Example.com], contact: [\"mailto:ops@example.com\"], cache: \"{cache}\" }}")),
    )
    .unwrap();
    let config = hookgate::config::load(&dir.path().join("gateway.yaml")).unwrap();
    let acme = config.listeners[0]
        .tls
        .as_ref()
        .unwrap()
        .acme
        .as_ref()
        .unwrap();
    assert_eq!(acme.domains, ["hooks.example.com"]);
    assert!(
        !dir.path().join("acme").exists(),
        "check creates no cache dir"
    );
}

/// sslyze's Mozilla "intermediate" check passes for each certificate of an SNI listener: an
/// ECDSA one for a.test and an RSA one for b.test, scanned by name on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_every_sni_certificate_compliant_with_mozilla_intermediate() {
    let certs = TestCerts::new();
    let (a_crt, a_key, _) = write_named_leaf(&certs, "a", &["a.test"], false);
    let (b_crt, b_key, _) = write_named_leaf(&certs, "b", &["b.test"], true);
    let listeners = two_cert_listeners((&a_crt, &a_key), (&b_crt, &b_key));
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;
    let sslyze = sslyze_with_ca(&certs.ca_pem);
    let port = gw.tls_addr().port();
    let targets = [
        format!("a.test:{port}{{127.0.0.1}}"),
        format!("b.test:{port}{{127.0.0.1}}"),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sslyze)
            .arg("--mozilla_config=intermediate")
            .args(&targets)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(!report.contains("FAILED - Not compliant"), "{report}");
    assert!(!report.contains("Not compliant"), "{report}");
    for name in ["a.test", "b.test"] {
        assert!(
            report.contains(&format!("{name}:{port}: OK - Compliant")),
            "{name} must be compliant:\n{report}"
        );
    }
    // Each scan saw its own certificate.
    assert!(
        report.contains("Common Name:                       a.test"),
        "{report}"
    );
    assert!(
        report.contains("Common Name:                       b.test"),
        "{report}"
    );
    gw.shutdown().await;
}
