//! Every refusal the spine makes, each with a real request: the status code, the one access-log
//! line with its outcome, the metric increment, and that nothing reached the upstream.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;

const ROUTES: &str = r#"
limits:
  body_timeout: 300ms
upstreams:
  backend:
    url: http://{upstream}
    timeout: 500ms
  dead:
    url: http://{dead}
    connect_timeout: 1s
routes:
  - name: small
    path: /hooks/small
    upstream: backend
    max_body: 1KiB
  - name: slow
    path: /slow
    upstream: backend
  - name: gone
    path: /hooks/gone
    upstream: dead
  - name: files
    path: /files/*
    methods: [GET, POST]
    upstream: backend
  - name: only-put
    path: /hooks/put
    methods: [PUT]
    upstream: backend
"#;

async fn count(gw: &TestGateway, route: &str, outcome: &str, code: u16) -> f64 {
    let key = format!(
        r#"hookgate_requests_total{{listener="public",route="{route}",outcome="{outcome}",code="{code}"}}"#
    );
    gw.metrics().await.get(&key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_unknown_path_with_404() {
    let gw = TestGateway::start(ROUTES).await;
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/nothing/here"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "no_route");
    assert_eq!(line["status"], 404);
    assert!(line.get("route").is_none());
    assert_eq!(count(&gw, "", "no_route", 404).await, 1.0);
    assert!(gw.upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_wrong_method_with_405_and_allow() {
    let gw = TestGateway::start(ROUTES).await;
    let (status, headers, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/put"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "PUT");
    assert_eq!(gw.log_line(1).await["outcome"], "method_not_allowed");
    assert_eq!(count(&gw, "only-put", "method_not_allowed", 405).await, 1.0);
    assert!(gw.upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_body_over_the_route_cap_with_413_declared_or_chunked() {
    let gw = TestGateway::start(ROUTES).await;
    // Declared: refused on Content-Length before the body is read.
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/small"),
        &[],
        vec![b'a'; 1025],
    )
    .await
    .unwrap();
    assert_eq!(status, 413);
    // Chunked, no length: refused once the cap is crossed.
    let raw = "POST /hooks/small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n"
        .to_string()
        + &"b".repeat(1024)
        + "\r\n1\r\nb\r\n0\r\n\r\n";
    let reply = raw_exchange(gw.plain_addr(), raw.as_bytes(), Duration::from_millis(500)).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    // Exactly at the cap passes.
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/small"),
        &[],
        vec![b'a'; 1024],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let lines = gw.log_lines(3).await;
    let too_large: Vec<_> = lines
        .iter()
        .filter(|l| l["outcome"] == "body_too_large")
        .collect();
    assert_eq!(too_large.len(), 2);
    assert!(too_large
        .iter()
        .all(|l| l["status"] == 413 && l["route"] == "small"));
    assert_eq!(
        count(&gw, "small", "body_too_large", 413).await,
        1.0,
        "one on the TLS listener"
    );
    assert_eq!(gw.upstream.seen().len(), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_body_that_stalls_with_408() {
    let gw = TestGateway::start(ROUTES).await;
    let raw = b"POST /hooks/small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b";
    let started = std::time::Instant::now();
    let reply = raw_exchange(gw.plain_addr(), raw, Duration::from_secs(3)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at the body timeout, not later"
    );
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "timeout");
    assert_eq!(line["reason"], "body");
    assert_eq!(line["status"], 408);
    assert!(gw.upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_502_when_the_upstream_refuses_connections() {
    let gw = TestGateway::start(ROUTES).await;
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/gone"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(status, 502);
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "upstream_connect_error");
    assert_eq!(line["upstream"], "dead");
    assert_eq!(count(&gw, "gone", "upstream_connect_error", 502).await, 1.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_504_when_the_upstream_is_too_slow() {
    let gw = TestGateway::start(ROUTES).await;
    let started = std::time::Instant::now();
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/slow"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the 500ms upstream timeout applies"
    );
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "upstream_timeout");
    assert_eq!(count(&gw, "slow", "upstream_timeout", 504).await, 1.0);
    assert_eq!(
        gw.upstream.seen().len(),
        1,
        "the request did reach the upstream"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_paths_that_could_escape_a_prefix_route_with_400() {
    let gw = TestGateway::start(ROUTES).await;
    for path in [
        "/files/../admin",
        "/files/%2e%2e/admin",
        "/files//etc",
        "/files/a%2Fb",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let reply = raw_exchange(gw.plain_addr(), raw.as_bytes(), Duration::from_millis(500)).await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{path}: {reply}");
    }
    let lines = gw.log_lines(4).await;
    assert!(lines
        .iter()
        .all(|l| l["outcome"] == "bad_request" && l["reason"] == "path"));
    assert!(gw.upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_a_connection_that_never_finishes_its_headers() {
    let gw =
        TestGateway::start(&ROUTES.replace("body_timeout: 300ms", "header_timeout: 300ms")).await;
    let started = std::time::Instant::now();
    let reply = raw_exchange(
        gw.plain_addr(),
        b"POST /hooks/small HTTP/1.1\r\nHost: x\r\nX-Slow",
        Duration::from_secs(5),
    )
    .await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "closed after the header timeout, took {waited:?}"
    );
    assert!(!reply.contains("200"), "{reply}");
    // The gateway still serves others.
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/small"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let lines = gw.log_lines(2).await;
    let line = lines
        .iter()
        .find(|l| l["status"] == 408)
        .expect("a line for the timed-out head");
    assert_eq!(
        (
            line["status"].as_u64(),
            line["outcome"].as_str(),
            line["reason"].as_str()
        ),
        (Some(408), Some("timeout"), Some("header_timeout"))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_431_to_an_oversized_header_block() {
    let gw = TestGateway::start(ROUTES).await;
    let raw = format!(
        "POST /hooks/small HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let reply = raw_exchange(gw.plain_addr(), raw.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
    assert!(gw.upstream.seen().is_empty());
    // hyper answered before our pipeline saw a request; the log line is still written.
    let line = gw.log_line(1).await;
    assert_eq!(
        (
            line["status"].as_u64(),
            line["outcome"].as_str(),
            line["reason"].as_str()
        ),
        (Some(431), Some("bad_request"), Some("header_too_large"))
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="plain",route="",outcome="bad_request",code="431"}"#],
        1.0
    );
    let _ = Bytes::new();
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_431_past_the_default_limit_of_100_headers() {
    let gw = TestGateway::start(ROUTES).await;
    // Host and Content-Length plus `extra` more.
    let head = |extra: usize| {
        let mut raw =
            String::from("POST /hooks/small HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n");
        for i in 0..extra {
            raw.push_str(&format!("X-H{i}: v\r\n"));
        }
        raw + "Connection: close\r\n\r\n"
    };
    let refused =
        r#"hookgate_requests_total{listener="plain",route="",outcome="bad_request",code="431"}"#;
    // 100 pass the gateway and are forwarded (the upstream, a hyper server with the same limit,
    // refuses 100 plus the gateway's own headers, but that is its answer, not ours).
    raw_exchange(gw.plain_addr(), head(97).as_bytes(), Duration::from_secs(2)).await;
    let metrics = gw.metrics().await;
    assert_eq!(metrics.get(refused), None, "100 headers are allowed");
    assert!(
        metrics.keys().any(|k| k.starts_with(
            r#"hookgate_requests_total{listener="plain",route="small",outcome="forwarded""#
        )),
        "{metrics:?}"
    );
    let reply = raw_exchange(gw.plain_addr(), head(98).as_bytes(), Duration::from_secs(2)).await;
    assert!(
        reply.starts_with("HTTP/1.1 431"),
        "101 headers are not: {reply}"
    );
    // hyper reports the refused head when the connection's task ends, a moment after the 431
    // reached us: wait for the count (up to 3 s) rather than race it.
    let mut count = None;
    for _ in 0..60 {
        count = gw.metrics().await.get(refused).copied();
        if count.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, Some(1.0));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_a_client_that_hangs_up_mid_body_as_client_abort_499() {
    use tokio::io::AsyncWriteExt;
    let gw = TestGateway::start(ROUTES).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.plain_addr())
        .await
        .unwrap();
    tcp.write_all(
        b"POST /hooks/small HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .unwrap();
    drop(tcp);
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "client_abort");
    assert_eq!(line["status"], 499);
    assert_eq!(line["route"], "small");
    let key = r#"hookgate_requests_total{listener="plain",route="small",outcome="client_abort",code="499"}"#;
    let metrics = gw.metrics().await;
    assert_eq!(metrics.get(key).copied(), Some(1.0));
    assert_eq!(
        metrics.get(r#"hookgate_protocol_errors_total{listener="plain"}"#),
        None,
        "a client that leaves is no protocol error"
    );
    assert!(gw.upstream.seen().is_empty());
    gw.shutdown().await;
}
