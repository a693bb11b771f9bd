//! Hot reload under load: a steady stream of signed requests over HTTP/1.1 and HTTP/2 while the
//! config is reloaded 50 times (valid and broken alternately) and the certificate is rotated.
//! Zero failed requests; every request is served wholly by the old or the new config (route
//! name and upstream path always match); broken configs are counted and change nothing; new
//! connections get the new certificate.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

const SIG: (&str, &str) = (
    "x-hub-signature-256",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
);

fn routes(generation: &str) -> String {
    format!(
        r#"
upstreams:
  backend:
    url: http://{{upstream}}
routes:
  - name: gen-{generation}
    path: /hooks/github
    upstream: backend
    upstream_path: /{generation}
    replay_window: off
    verify: {{ provider: github, secrets: ["It's a Secret to Everybody"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_and_a_certificate_swap_under_load_lose_nothing() {
    let gw = Arc::new(TestGateway::start(&routes("a")).await);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for i in 0..4 {
        let (gw, stop, served) = (Arc::clone(&gw), Arc::clone(&stop), Arc::clone(&served));
        senders.push(tokio::spawn(async move {
            let client = if i % 2 == 0 {
                h1_client(&gw.certs)
            } else {
                h2_client(&gw.certs)
            };
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match send(
                    &client,
                    "POST",
                    &gw.https_url("/hooks/github"),
                    &[SIG],
                    "Hello, World!",
                )
                .await
                {
                    Ok((200, _, _)) => {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
            failures
        }));
    }
    let first_cert = presented_certificate(gw.tls_addr(), &gw.certs).await;
    let expiry = r#"hookgate_tls_cert_not_after_timestamp_seconds{listener="public",sni=""}"#;
    let in_90_days = (time::OffsetDateTime::now_utc() + time::Duration::days(90)).unix_timestamp();
    let first_not_after = gw.metrics().await[expiry];
    assert!(
        (first_not_after - in_90_days as f64).abs() < 120.0,
        "the first certificate expires in 90 days: {first_not_after} against {in_90_days}"
    );
    // 2031-01-02T03:04:05Z, whole seconds as X.509 keeps them.
    let new_not_after = time::OffsetDateTime::from_unix_timestamp(1_925_009_045).unwrap();
    let mut new_cert = Vec::new();
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        if i % 2 == 0 {
            let generation = if i % 4 == 0 { "b" } else { "a" };
            gw.edit_config(|text| {
                let start = text.find("\nupstreams:").unwrap();
                format!(
                    "{}{}",
                    &text[..start],
                    routes(generation).replace("{upstream}", &gw.upstream.addr.to_string())
                )
            });
            if i == 24 {
                new_cert = gw.certs.write_leaf_expiring(new_not_after);
            }
            gw.reload()
                .unwrap_or_else(|e| panic!("valid config refused: {e}"));
        } else {
            let good = std::fs::read_to_string(gw.config_path()).unwrap();
            std::fs::write(
                gw.config_path(),
                good.replace("upstream: backend", "upstream: nowhere"),
            )
            .unwrap();
            assert!(gw.reload().is_err(), "a broken config must be refused");
            std::fs::write(gw.config_path(), good).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        let failures = sender.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during reloads: {failures:?}"
        );
    }
    let served = served.load(Ordering::Relaxed);
    assert!(served > 100, "the stream kept flowing: {served} requests");

    // Every request was served wholly by one config: its route name matches its upstream path.
    let seen = gw.upstream.seen();
    assert_eq!(seen.len(), served);
    let mut by_generation = [0, 0];
    for request in &seen {
        let route = request.headers["x-hookgate-route"].to_str().unwrap();
        match (route, request.uri.as_str()) {
            ("gen-a", "/a") => by_generation[0] += 1,
            ("gen-b", "/b") => by_generation[1] += 1,
            other => panic!("a request mixed two configs: {other:?}"),
        }
    }
    assert!(
        by_generation[0] > 0 && by_generation[1] > 0,
        "both configs served: {by_generation:?}"
    );

    // New connections get the new certificate, and the expiry gauge follows it.
    let now = presented_certificate(gw.tls_addr(), &gw.certs).await;
    assert_ne!(now, first_cert);
    assert_eq!(now, new_cert);

    let metrics = gw.metrics().await;
    assert_eq!(metrics[expiry], 1_925_009_045.0);
    assert_eq!(
        metrics[r#"hookgate_config_reloads_total{result="error"}"#],
        25.0
    );
    assert_eq!(
        metrics[r#"hookgate_config_reloads_total{result="success"}"#], 25.0,
        "25 reloads; the start is no reload"
    );
    Arc::into_inner(gw).unwrap().shutdown().await;
}
