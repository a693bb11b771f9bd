//! Accepted requests: real TLS clients over HTTP/1.1 and HTTP/2 and a plain-HTTP listener; the
//! recording upstream proves the body arrives byte for byte and the headers are right; each
//! request leaves one access-log line and one metric increment.

use crate::common::*;
use bytes::Bytes;

const ROUTES: &str = r#"
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: github
    path: /hooks/github
    upstream: backend
    upstream_path: /internal/github
    max_body: 2MiB
  - name: any
    path: /hooks/*
    methods: [POST, PUT]
    upstream: backend
"#;

/// 1 MiB of every byte value, so any re-encoding or UTF-8 handling would show.
fn binary_body() -> Bytes {
    (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(31) % 256) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_a_1mib_binary_body_byte_for_byte_over_http1_tls() {
    let gw = TestGateway::start(ROUTES).await;
    let body = binary_body();
    let (status, headers, answer) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/github?x=1&y=2"),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer, "upstream ok");
    assert_eq!(
        headers["x-upstream"], "yes",
        "upstream response headers pass back"
    );
    let seen = gw.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body, "body must be identical");
    assert_eq!(
        seen[0].uri, "/internal/github?x=1&y=2",
        "upstream_path rewrite keeps the query"
    );

    let line = gw.log_line(1).await;
    assert_eq!(line["route"], "github");
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["status"], 200);
    assert_eq!(line["proto"], "HTTP/1.1");
    assert_eq!(line["tls_version"], "TLSv1.3");
    assert_eq!(line["bytes_in"], 1 << 20);
    assert_eq!(line["upstream"], "backend");
    assert_eq!(line["upstream_status"], 200);
    assert_eq!(line["path"], "/hooks/github", "the log path has no query");
    assert_eq!(
        line["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="public",route="github",outcome="forwarded",code="200"}"#],
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_over_http2_with_the_right_headers() {
    let gw = TestGateway::start(ROUTES).await;
    let body: &[u8] = b"\xff\xfe\x00not utf-8 \x80\x81";
    let (status, _, _) = send(
        &h2_client(&gw.certs),
        "PUT",
        &gw.https_url("/hooks/stripe/events"),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-hookgate-verified", "stripe"),
            ("x-request-id", "sender-trace-42"),
            ("stripe-signature", "t=1,v1=abc"),
        ],
        Bytes::from_static(body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let seen = &gw.upstream.seen()[0];
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.uri, "/hooks/stripe/events");
    assert_eq!(&seen.body[..], body);
    let h = &seen.headers;
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "an untrusted X-Forwarded-For is replaced"
    );
    assert_eq!(h["x-forwarded-proto"], "https");
    assert!(h["x-forwarded-host"]
        .to_str()
        .unwrap()
        .starts_with("localhost:"));
    assert_eq!(
        h["x-request-id"], "sender-trace-42",
        "a clean incoming request id is kept"
    );
    assert_eq!(h["x-hookgate-route"], "any");
    assert!(
        h.get("x-hookgate-verified").is_none(),
        "nobody outside can claim verification"
    );
    assert_eq!(
        h["stripe-signature"], "t=1,v1=abc",
        "signature headers reach the backend"
    );
    let line = gw.log_line(1).await;
    assert_eq!(line["proto"], "HTTP/2");
    assert_eq!(line["request_id"], "sender-trace-42");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_forwards_and_strips_hop_by_hop_headers() {
    let gw = TestGateway::start(ROUTES).await;
    let raw = String::from(
        "POST /hooks/github HTTP/1.1\r\nHost: example\r\nConnection: keep-alive, x-drop-me\r\nx-drop-me: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\nhello"
    );
    let reply = raw_exchange(
        gw.plain_addr(),
        raw.as_bytes(),
        std::time::Duration::from_millis(500),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = &gw.upstream.seen()[0];
    assert_eq!(&seen.body[..], b"hello");
    assert!(seen.headers.get("x-drop-me").is_none());
    assert!(seen.headers.get("keep-alive").is_none());
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "example");
    let line = gw.log_line(1).await;
    assert_eq!(line["listener"], "plain");
    assert!(line.get("tls_version").is_none());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_concurrent_burst_is_logged_and_counted_once() {
    let gw = TestGateway::start(ROUTES).await;
    let client = h2_client(&gw.certs);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        let url = gw.https_url(&format!("/hooks/n{i}"));
        tasks.push(tokio::spawn(async move {
            send(&client, "POST", &url, &[], format!("event {i}"))
                .await
                .unwrap()
                .0
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let lines = gw.log_lines(50).await;
    assert_eq!(lines.len(), 50);
    let mut ids: Vec<_> = lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "request ids are unique");
    assert_eq!(gw.upstream.seen().len(), 50);
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="public",route="any",outcome="forwarded",code="200"}"#],
        50.0
    );
    assert_eq!(
        metrics[r#"hookgate_request_duration_seconds_count{route="any",outcome="forwarded"}"#],
        50.0
    );
    assert_eq!(
        metrics[r#"hookgate_upstream_duration_seconds_count{upstream="backend"}"#],
        50.0
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_to_an_https_upstream_signed_by_a_private_ca() {
    let backend_certs = TestCerts::new();
    let backend = RecordingUpstream::start_tls(&backend_certs).await;
    let ca = backend_certs.dir.path().join("private-ca.pem");
    std::fs::write(&ca, &backend_certs.ca_pem).unwrap();
    let gw = TestGateway::start(&format!(
        "limits:\n  worker_threads: 1\nupstreams:\n  secure:\n    url: https://localhost:{}/base\n    ca: {}\n  untrusted:\n    url: https://localhost:{}\nroutes:\n  - name: secure\n    path: /hooks/secure\n    upstream: secure\n  - name: untrusted\n    path: /hooks/untrusted\n    upstream: untrusted\n",
        backend.addr.port(),
        ca.display(),
        backend.addr.port()
    ))
    .await;
    let client = h1_client(&gw.certs);
    let (status, _, body) = send(
        &client,
        "POST",
        &gw.https_url("/hooks/secure?a=1"),
        &[],
        "over tls",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "upstream ok");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].uri, "/base/hooks/secure?a=1",
        "the URL's path is a prefix"
    );
    assert_eq!(&seen[0].body[..], b"over tls");
    // The TLS connection is kept alive: the session tickets a TLS 1.3 server sends after the
    // handshake do not make an idle connection look closed.
    for _ in 0..2 {
        let (status, _, _) = send(
            &client,
            "POST",
            &gw.https_url("/hooks/secure"),
            &[],
            "again",
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
    }
    let peers: Vec<_> = backend.seen().iter().map(|s| s.peer).collect();
    assert_eq!(peers.len(), 3);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one upstream connection: {peers:?}"
    );
    // Without the private CA the backend's certificate is not trusted: 502, nothing delivered.
    let (status, _, _) = send(&client, "POST", &gw.https_url("/hooks/untrusted"), &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 502);
    assert_eq!(backend.seen().len(), 3);
    assert_eq!(gw.log_line(4).await["outcome"], "upstream_connect_error");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_one_the_upstream_closed_is_replaced() {
    // One worker, so every request draws on the same pool of upstream connections.
    let gw = TestGateway::start(
        r#"
limits:
  worker_threads: 1
upstreams:
  backend:
    url: http://{upstream}
routes:
  - { name: keep, path: /keep, upstream: backend }
  - { name: close, path: /close, upstream: backend }
"#,
    )
    .await;
    let client = plain_client();
    for path in [
        "/keep", "/keep", "/keep", "/close", "/keep", "/keep", "/keep",
    ] {
        let (status, _, body) = send(&client, "POST", &gw.http_url(path), &[], "event")
            .await
            .unwrap();
        assert_eq!(
            (status, body.as_ref()),
            (200, &b"upstream ok"[..]),
            "{path}"
        );
    }
    let peers: Vec<_> = gw.upstream.seen().iter().map(|s| s.peer).collect();
    assert_eq!(
        peers.len(),
        7,
        "each request reached the upstream exactly once"
    );
    assert!(
        peers[..4].iter().all(|p| *p == peers[0]),
        "one kept-alive connection until the upstream closed it: {peers:?}"
    );
    assert!(
        peers[4..].iter().all(|p| *p == peers[4]) && peers[4] != peers[0],
        "then one new connection, kept alive again: {peers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_still_finishes_and_is_logged_when_the_gateway_stops() {
    let gw = TestGateway::start(
        r#"
limits:
  drain_timeout: 5s
upstreams:
  backend:
    url: http://{upstream}
routes:
  - { name: slow, path: /slow, upstream: backend }
"#,
    )
    .await;
    let client = plain_client();
    // The client gives up while the upstream still holds the request (it answers after 2 s).
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        send(&client, "POST", &gw.http_url("/slow"), &[], "order #7"),
    )
    .await;
    assert!(gave_up.is_err());
    drop(client);
    assert_eq!(gw.upstream.seen().len(), 1);
    let log_path = gw.log_path.clone();
    let _dir = gw.shutdown().await;
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "the forward finished and was logged: {log}");
    assert_eq!(lines[0]["path"], "/slow");
    assert_eq!(lines[0]["upstream_status"], 200);
}
