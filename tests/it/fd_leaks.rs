//! Nothing leaks: after hundreds of malformed requests, abandoned TLS handshakes and failing
//! upstream exchanges, the process has the same number of open file descriptors as after one
//! normal request. The gateway runs as its own process (the real binary) and its descriptors
//! are the ones counted, so the tests running beside this one in the test binary are not.

use std::time::Duration;

use crate::common::*;

const ROUTES: &str = r#"
limits:
  handshake_timeout: 300ms
  body_timeout: 300ms
upstreams:
  backend:
    url: http://{upstream}
    timeout: 300ms
  dead:
    url: http://{dead}
routes:
  - name: hooks
    path: /hooks/*
    upstream: backend
  - name: slow
    path: /slow
    upstream: backend
  - name: gone
    path: /gone
    upstream: dead
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_descriptors_return_to_baseline_after_abuse() {
    let gw = GatewayProcess::start(ROUTES).await;
    let client = plain_client();
    // Warm up: one pooled client connection and one pooled upstream connection now exist.
    assert_eq!(
        send(&client, "POST", &gw.http_url("/hooks/ok"), &[], "x")
            .await
            .unwrap()
            .0,
        200
    );
    let baseline = gw.open_fds();
    for _ in 0..50 {
        raw_exchange(
            gw.plain_addr(),
            b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Duration::from_secs(1),
        )
        .await;
        raw_exchange(
            gw.plain_addr(),
            b"POST /hooks/x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx",
            Duration::from_secs(1),
        )
        .await;
        raw_exchange(
            gw.tls_addr(),
            b"\x16\x03\x01garbage",
            Duration::from_secs(1),
        )
        .await;
        raw_exchange(
            gw.plain_addr(),
            b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab",
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(
            send(&client, "POST", &gw.http_url("/gone"), &[], "x")
                .await
                .unwrap()
                .0,
            502
        );
    }
    for _ in 0..5 {
        assert_eq!(
            send(&client, "POST", &gw.http_url("/slow"), &[], "x")
                .await
                .unwrap()
                .0,
            504
        );
    }
    // Let timeouts fire and closed sockets be reaped.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        send(&client, "POST", &gw.http_url("/hooks/ok"), &[], "x")
            .await
            .unwrap()
            .0,
        200
    );
    // Closed sockets are reaped by tasks on the workers; on a loaded machine give them up to
    // 5 s more before calling it a leak.
    let mut after = gw.open_fds();
    for _ in 0..50 {
        if after <= baseline + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = gw.open_fds();
    }
    assert!(
        after <= baseline + 2,
        "file descriptors: {baseline} before, {after} after"
    );
}
