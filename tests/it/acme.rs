//! ACME against a real ACME server: Let's Encrypt's test server pebble (Debian's `pebble`
//! package, installed by .ci/run) on loopback with its own TLS certificate from the test CA.
//! hookgate orders a certificate for `localhost` and proves it with TLS-ALPN-01 on its own
//! listener (pebble's validation authority really connects to it: no always-valid shortcut);
//! a client that trusts only pebble's root (fetched from the management endpoint) completes
//! requests. Pebble issues 45-second certificates, so renewal at two thirds comes within the
//! test: a new certificate is served while a stream of requests, each on a new connection, sees
//! no failure. A restart serves the cached certificate at once.

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

fn start_pebble(certs: &TestCerts, tls_alpn_port: u16) -> Pebble {
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
        "httpPort": free_port(),
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

fn gateway_listeners(port: u16, pebble: &Pebble, certs: &TestCerts, cache: &str) -> String {
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
  - name: plain
    bind: 127.0.0.1:0
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

/// The leaf the listener presents for `localhost` now, if a client trusting only `root`
/// accepts it.
async fn trusted_leaf(addr: std::net::SocketAddr, root: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(root.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

async fn wait_for_trusted_leaf(
    addr: std::net::SocketAddr,
    root: &str,
    not: Option<&[u8]>,
    within: Duration,
) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(leaf) = trusted_leaf(addr, root).await {
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
    let pebble = start_pebble(&certs, port);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = cache_dir.path().join("acme");
    let listeners = gateway_listeners(port, &pebble, &certs, cache.to_str().unwrap());
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
    let first = wait_for_trusted_leaf(addr, &root, None, Duration::from_secs(30)).await;
    let client = client_trusting(&root, true);
    let url = gw.https_url("/hooks/github");
    let (status, _, _) = send(&client, "POST", &url, &[SIG], "Hello, World!")
        .await
        .unwrap();
    assert_eq!(status, 200, "a request over the ACME certificate");
    let metrics = gw.metrics().await;
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
    let second = wait_for_trusted_leaf(addr, &root, Some(&first), Duration::from_secs(60)).await;
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
    let listeners = gateway_listeners(port, &pebble, &certs, cache.to_str().unwrap());
    let gw = TestGateway::start_with_listeners(&listeners, ROUTES).await;
    let leaf = trusted_leaf(gw.tls_addr(), &root).await;
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
    let leaf = trusted_leaf(gw.tls_addr(), &root).await;
    assert_eq!(
        leaf,
        Some(cached_leaf.to_vec()),
        "the old certificate stays"
    );
    gw.shutdown().await;
}
