//! ACME against a real ACME server: Let's Encrypt's test server pebble (Debian's `pebble`
//! package, installed by .ci/run) on loopback with its own TLS certificate from the test CA.
//! hookgate orders a certificate for `localhost` and proves it with TLS-ALPN-01 on its own
//! listener (pebble's validation authority really connects to it: no always-valid shortcut);
//! a client that trusts only pebble's root (fetched from the management endpoint) completes
//! requests. Pebble issues 45-second certificates, so renewal at two thirds comes within the
//! test: a new certificate is served while a stream of requests, each on a new connection, sees
//! no failure. A restart serves the cached certificate at once. With `challenge: http-01`,
//! pebble fetches the token from hookgate's plain listener (pebble's `httpPort`) instead, and
//! `hookgate check` refuses http-01 when there is no plain listener to answer it.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

const ROUTES: &str = r#"
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: gen
    path: /hooks/github
    upstream: backend
    replay_window: off
    verify: { provider: github, secrets: ["It's a Secret to Everybody"] }
"#;

const SIG: (&str, &str) = (
    "x-hub-signature-256",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
);

const VALIDITY_SECONDS: u64 = 45;

/// Pebble, killed when dropped.
struct Pebble {
    child: Child,
    acme_port: u16,
    management_port: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pebble validating TLS-ALPN-01 on `tls_alpn_port` and HTTP-01 on `http_port` of the name's
/// address (127.0.0.1 for `localhost`).
fn start_pebble(certs: &TestCerts, tls_alpn_port: u16, http_port: u16) -> Pebble {
    let binary = std::env::var("PEBBLE").unwrap_or_else(|_| "/usr/bin/pebble".into());
    assert!(
        std::path::Path::new(&binary).exists(),
        "{binary} is missing: `apt-get install pebble` (.ci/run does)"
    );
    let (acme_port, management_port) = (free_port(), free_port());
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme_port}"),
        "managementListenAddress": format!("127.0.0.1:{management_port}"),
        "certificate": certs.cert_path,
        "privateKey": certs.key_path,
        "httpPort": http_port,
        "tlsPort": tls_alpn_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": VALIDITY_SECONDS,
    }});
    let path = certs.dir.path().join("pebble.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let log = std::fs::File::create(certs.dir.path().join("pebble.log")).unwrap();
    let child = Command::new(binary)
        .arg("-config")
        .arg(&path)
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let pebble = Pebble {
        child,
        acme_port,
        management_port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", management_port)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err()
    {
        assert!(Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    pebble
}

/// A TLS listener on `port` with ACME from `pebble` by `challenge`, and a plain listener on
/// `plain_port` (0: any).
fn gateway_listeners(
    port: u16,
    plain_port: u16,
    challenge: &str,
    pebble: &Pebble,
    certs: &TestCerts,
    cache: &str,
) -> String {
    let ca = certs.dir.path().join("test-ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    format!(
        r#"
listeners:
  - name: public
    bind: 127.0.0.1:{port}
    tls:
      acme:
        directory: https://127.0.0.1:{}/dir
        domains: [localhost]
        contact: ["mailto:ops@example.com"]
        cache: "{cache}"
        ca: "{}"
        challenge: {challenge}
  - name: plain
    bind: 127.0.0.1:{plain_port}
admin:
  bind: 127.0.0.1:0
access_log: "{{log}}"
"#,
        pebble.acme_port,
        ca.display()
    )
}

async fn pebble_root(certs: &TestCerts, pebble: &Pebble) -> String {
    let client = client_trusting(&certs.ca_pem, false);
    let url = format!("https://127.0.0.1:{}/roots/0", pebble.management_port);
    let (status, _, body) = send(&client, "GET", &url, &[], "").await.unwrap();
    assert_eq!(status, 200);
    String::from_utf8(body.to_vec()).unwrap()
}

async fn wait_for_leaf_trusted_by(
    addr: std::net::SocketAddr,
    root: &str,
    not: Option<&[u8]>,
    within: Duration,
) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(leaf) = leaf_trusted_by(addr, root).await {
            if Some(leaf.as_slice()) != not {
                return leaf;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no (new) certificate from pebble within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_from_pebble_renews_without_a_dropped_request_and_restarts_from_the_cache() {
    let certs = TestCerts::new();
    let port = free_port();
    let pebble = start_pebble(&certs, port, free_port());
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("acme");
    let cache_text = cache.to_str().unwrap();
    let listeners = gateway_listeners(port, 0, "tls-alpn-01", &pebble, &certs, cache_text);
    let root = pebble_root(&certs, &pebble).await;
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;
    let addr = gw.tls_addr();
    // Handshakes never wait for the order: a placeholder (or the issued one) answers at once.
    let early = tokio::time::timeout(
        Duration::from_secs(2),
        presented_for(addr, Some("localhost"), &[]),
    )
    .await;
    assert!(
        early.is_ok(),
        "a handshake during the first order completes"
    );

    // Issued at start, proven on the listener itself, trusted through pebble's root.
    let first = wait_for_leaf_trusted_by(addr, &root, None, Duration::from_secs(30)).await;
    let client = client_trusting(&root, true);
    let url = gw.https_url("/hooks/github");
    let (status, _, _) = send(&client, "POST", &url, &[SIG], "Hello, World!")
        .await
        .unwrap();
    assert_eq!(status, 200, "a request over the ACME certificate");
    // Without http-01 the challenge path is left to the routes (none here: 404 no_route).
    let challenge_url = gw.http_url("/.well-known/acme-challenge/x");
    let (status, _, _) = send(&plain_client(), "GET", &challenge_url, &[], "")
        .await
        .unwrap();
    assert_eq!(status, 404);
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="plain",route="",outcome="no_route",code="404"}"#],
        1.0
    );
    assert_eq!(metrics[r#"hookgate_acme_orders_total{result="ok"}"#], 1.0);
    let expiry =
        r#"hookgate_tls_cert_not_after_timestamp_seconds{listener="public",sni="localhost"}"#;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(
        (metrics[expiry] - now - VALIDITY_SECONDS as f64).abs() < 15.0,
        "the expiry series shows the issued certificate: {} at {now}",
        metrics[expiry]
    );
    // Account key and certificate key: 0600, in a 0700 directory.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("account.json")), 0o600);
    assert_eq!(mode(&cache.join("localhost.key")), 0o600);

    // Renewal at two thirds of 45 s, under a stream of requests on new connections.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (stop, served, url, root) = (
            Arc::clone(&stop),
            Arc::clone(&served),
            url.clone(),
            root.clone(),
        );
        tokio::spawn(async move {
            let client = client_trusting(&root, true);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match send(&client, "POST", &url, &[SIG], "Hello, World!").await {
                    Ok((200, _, _)) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failures
        })
    };
    let second = wait_for_leaf_trusted_by(addr, &root, Some(&first), Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let failures = sender.await.unwrap();
    assert!(failures.is_empty(), "dropped during renewal: {failures:?}");
    assert!(served.load(Ordering::Relaxed) > 10);
    assert_ne!(first, second);
    let renewed = gw.metrics().await;
    assert!(renewed[r#"hookgate_acme_orders_total{result="ok"}"#] >= 2.0);
    assert!(
        renewed[expiry] > metrics[expiry],
        "the expiry series follows the renewed certificate"
    );

    // A restart serves the cached certificate from the first handshake, no order needed.
    // (The new gateway's metrics start at zero.)
    let cached = std::fs::read(cache.join("localhost.crt")).unwrap();
    drop(gw.shutdown().await);
    let listeners = gateway_listeners(port, 0, "tls-alpn-01", &pebble, &certs, cache_text);
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;
    let leaf = leaf_trusted_by(gw.tls_addr(), &root).await;
    let leaf = leaf.expect("the cached certificate is served at once");
    use rustls_pki_types::pem::PemObject;
    let cached_leaf = rustls_pki_types::CertificateDer::pem_slice_iter(&cached)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(leaf, cached_leaf.to_vec());

    // At two thirds of the cached certificate's life the new gateway renews; with the ACME
    // server gone, the order fails, is counted, and the cached certificate stays.
    drop(pebble);
    let deadline = Instant::now() + Duration::from_secs(VALIDITY_SECONDS * 2 / 3 + 10);
    let errors = r#"hookgate_acme_orders_total{result="error"}"#;
    while gw.metrics().await.get(errors).copied().unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "a failed order is counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leaf = leaf_trusted_by(gw.tls_addr(), &root).await;
    assert_eq!(
        leaf,
        Some(cached_leaf.to_vec()),
        "the old certificate stays"
    );
    gw.shutdown().await;
}

/// HTTP-01: pebble's validation authority fetches the token from hookgate's plain listener (the
/// port pebble is told as `httpPort`), which answers it before any route; then a client that
/// trusts only pebble's root completes a request on the TLS listener with the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_with_http01_answered_by_the_plain_listener() {
    let certs = TestCerts::new();
    let (port, http_port) = (free_port(), free_port());
    // Pebble's TLS-ALPN-01 port has nobody listening: only HTTP-01 can succeed.
    let pebble = start_pebble(&certs, free_port(), http_port);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("acme");
    let cache = cache.to_str().unwrap();
    let listeners = gateway_listeners(port, http_port, "http-01", &pebble, &certs, cache);
    let root = pebble_root(&certs, &pebble).await;
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;

    let leaf = wait_for_leaf_trusted_by(gw.tls_addr(), &root, None, Duration::from_secs(30)).await;
    assert!(!leaf.is_empty());
    let client = client_trusting(&root, true);
    let (status, _, _) = send(
        &client,
        "POST",
        &gw.https_url("/hooks/github"),
        &[SIG],
        "Hello, World!",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "a request over the HTTP-01 certificate");

    // Pebble's validation request, in hookgate's access log: answered by the plain listener.
    let lines = gw.log_lines(2).await;
    let validation = lines
        .iter()
        .find(|l| {
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/.well-known/acme-challenge/"))
        })
        .unwrap_or_else(|| panic!("no challenge request in the access log: {lines:?}"));
    assert_eq!(validation["listener"], "plain");
    assert_eq!(validation["method"], "GET");
    assert_eq!(validation["status"], 200);
    assert_eq!(validation["outcome"], "acme_challenge");
    assert!(validation.get("route").is_none());

    // Once validated the token is withdrawn: the same request now gets a 404, and a made-up
    // token too; both are logged and counted as challenge answers.
    let path = validation["path"].as_str().unwrap();
    for path in [path, "/.well-known/acme-challenge/made-up"] {
        let (status, headers, _) = send(&plain_client(), "GET", &gw.http_url(path), &[], "")
            .await
            .unwrap();
        assert_eq!(status, 404, "{path}");
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
    }
    let lines = gw.log_lines(lines.len() + 2).await;
    let last = &lines[lines.len() - 1];
    assert_eq!(
        (&last["outcome"], &last["reason"]),
        (&"acme_challenge".into(), &"unknown_token".into())
    );

    let metrics = gw.metrics().await;
    assert_eq!(metrics[r#"hookgate_acme_orders_total{result="ok"}"#], 1.0);
    let answered =
        r#"hookgate_requests_total{listener="plain",route="",outcome="acme_challenge",code="200"}"#;
    assert!(metrics[answered] >= 1.0, "pebble's fetch is counted");
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="plain",route="",outcome="acme_challenge",code="404"}"#],
        2.0
    );

    // Renewal at two thirds of pebble's 45 s goes through HTTP-01 again.
    let renewed =
        wait_for_leaf_trusted_by(gw.tls_addr(), &root, Some(&leaf), Duration::from_secs(60)).await;
    assert_ne!(renewed, leaf);
    let metrics = gw.metrics().await;
    assert!(metrics[r#"hookgate_acme_orders_total{result="ok"}"#] >= 2.0);
    assert!(
        metrics[answered] >= 2.0,
        "the renewal was validated over HTTP-01 too"
    );
    gw.shutdown().await;
}

/// `hookgate check` refuses `challenge: http-01` when no plain listener could answer it, and an
/// unknown challenge name, naming file:line:col and the field; with a plain listener the same
/// block passes (no ACME call at check time: acme.example does not exist).
#[test]
fn check_refuses_http01_without_a_plain_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acme");
    let config = |challenge: &str, plain: bool| {
        let plain = if plain {
            "  - name: plain\n    bind: 127.0.0.1:8080\n"
        } else {
            ""
        };
        format!(
            "listeners:
  - name: public
    bind: 127.0.0.1:8443
    tls:
      acme:
        directory: https://acme.example/dir
        domains: [hooks.example.com]
        cache: \"{}\"
        challenge: {challenge}
{plain}upstreams:
  backend:
    url: http://127.0.0.1:3000
routes:
  - name: github
    path: /hooks/github
    upstream: backend
",
            cache.display()
        )
    };
    let check = |yaml: String| {
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = check(config("http-01", false));
    assert!(!ok);
    assert!(
        stderr
            .contains("gateway.yaml:9:20: listeners[0].tls.acme.challenge: http-01 needs a plain"),
        "{stderr}"
    );
    let (ok, stderr) = check(config("dns-01", true));
    assert!(!ok);
    assert!(
        stderr.contains("gateway.yaml:9:20: listeners[0].tls.acme.challenge: \"dns-01\": expected tls-alpn-01 or http-01"),
        "{stderr}"
    );
    for (challenge, plain) in [("http-01", true), ("tls-alpn-01", false)] {
        let (ok, stderr) = check(config(challenge, plain));
        assert!(ok, "{challenge}: {stderr}");
    }
    assert!(!cache.exists(), "check creates nothing");
}
