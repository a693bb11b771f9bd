//! Stages 3-5 through real sockets: who the client is (trusted proxies, spoofing, PROXY
//! protocol), who may knock (allowlists from CIDRs, files and a URL feed), and how often (the
//! exact count of 429s, their headers, and limiter state across reloads). 127.0.0.1 and
//! 127.0.0.2 are two different peers on loopback.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;

const TRUST_127_0_0_2: &str = r#"
client_ip:
  trusted_proxies: [127.0.0.2/32]
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: partners
    path: /hooks/partners
    upstream: backend
    allow_ips: [203.0.113.0/24, "2001:db8::/32"]
  - name: open
    path: /hooks/open
    upstream: backend
"#;

fn post(path: &str, xff: Option<&str>) -> String {
    let xff = xff
        .map(|v| format!("X-Forwarded-For: {v}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{xff}Content-Length: 2\r\nConnection: close\r\n\r\nhi"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_passes_the_client_address_and_the_allowlist_uses_it() {
    let gw = TestGateway::start(TRUST_127_0_0_2).await;
    let reply = raw_exchange_from(
        "127.0.0.2",
        gw.plain_addr(),
        post("/hooks/partners", Some("198.51.100.1, 203.0.113.7")).as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let line = gw.log_line(1).await;
    assert_eq!(line["peer_ip"], "127.0.0.2");
    assert_eq!(
        line["client_ip"], "203.0.113.7",
        "the right-most untrusted entry is the client"
    );
    assert_eq!(
        gw.upstream.seen()[0].headers["x-forwarded-for"],
        "203.0.113.7"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_cannot_spoof_its_way_in_with_x_forwarded_for() {
    let gw = TestGateway::start(TRUST_127_0_0_2).await;
    let reply = raw_exchange_from(
        "127.0.0.1",
        gw.plain_addr(),
        post("/hooks/partners", Some("203.0.113.7")).as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply.ends_with("Forbidden\n"),
        "no detail for the client: {reply}"
    );
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "ip_denied");
    assert_eq!(line["client_ip"], "127.0.0.1", "the header was ignored");
    // A spoofed left-most entry through the trusted proxy does not help either.
    let reply = raw_exchange_from(
        "127.0.0.2",
        gw.plain_addr(),
        post("/hooks/partners", Some("203.0.113.7, 198.51.100.9")).as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(gw.log_line(2).await["client_ip"], "198.51.100.9");
    assert!(gw.upstream.seen().is_empty());
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="plain",route="partners",outcome="ip_denied",code="403"}"#],
        2.0
    );
    // Routes without allow_ips stay open.
    let reply = raw_exchange(
        gw.plain_addr(),
        post("/hooks/open", None).as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    gw.shutdown().await;
}

const PROXY_LISTENERS: &str = r#"
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls: { cert: "{cert}", key: "{key}" }
  - name: plain
    bind: 127.0.0.1:0
    proxy_protocol: true
admin:
  bind: 127.0.0.1:0
access_log: "{log}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_is_believed_from_a_trusted_peer_only() {
    let gw = TestGateway::start_with_listeners(PROXY_LISTENERS, TRUST_127_0_0_2).await;
    let header = "PROXY TCP4 203.0.113.50 127.0.0.1 40000 443\r\n";
    // v1 from the trusted balancer: the client is the address in the header.
    let request = format!("{header}{}", post("/hooks/partners", None));
    let reply = raw_exchange_from(
        "127.0.0.2",
        gw.plain_addr(),
        request.as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let line = gw.log_line(1).await;
    assert_eq!(line["peer_ip"], "203.0.113.50");
    assert_eq!(line["client_ip"], "203.0.113.50");
    // v2 (binary) from the trusted balancer.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[203, 0, 113, 51, 127, 0, 0, 1, 0x9c, 0x40, 0x01, 0xbb]);
    v2.extend_from_slice(post("/hooks/partners", None).as_bytes());
    let reply = raw_exchange_from("127.0.0.2", gw.plain_addr(), &v2, Duration::from_secs(1)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(gw.log_line(2).await["client_ip"], "203.0.113.51");
    // The same header from an untrusted peer: the connection is closed, nothing is served.
    let reply = raw_exchange_from(
        "127.0.0.1",
        gw.plain_addr(),
        request.as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(reply, "", "closed without an answer");
    // A trusted peer that sends no PROXY header is refused too (the listener requires it).
    let reply = raw_exchange_from(
        "127.0.0.2",
        gw.plain_addr(),
        post("/hooks/open", None).as_bytes(),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(reply, "");
    assert_eq!(gw.upstream.seen().len(), 2);
    gw.shutdown().await;
}

/// A tiny feed server whose answer the test can change.
async fn feed_server(body: Arc<Mutex<(u16, String)>>) -> SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = socket.accept().await.unwrap();
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let (status, text) = body.lock().unwrap().clone();
                    async move {
                        let mut response = http::Response::new(Full::new(Bytes::from(text)));
                        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_set_fed_from_a_url_refreshes_and_keeps_the_last_good_list() {
    let feed = Arc::new(Mutex::new((
        200,
        r#"{"hooks": ["198.51.100.0/24"]}"#.to_string(),
    )));
    let addr = feed_server(Arc::clone(&feed)).await;
    let gw = TestGateway::start(&format!(
        "ip_sets:\n  github:\n    url: http://{addr}/meta\n    json_path: hooks\n    refresh: 1s\nupstreams:\n  backend:\n    url: http://{{upstream}}\nroutes:\n  - name: gh\n    path: /hooks/gh\n    upstream: backend\n    allow_ips: [github]\n"
    ))
    .await;
    let status = |gw: &TestGateway| {
        let url = gw.http_url("/hooks/gh");
        async move {
            send(&plain_client(), "POST", &url, &[], "x")
                .await
                .unwrap()
                .0
        }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&gw).await, 403, "loopback is not in the first list");
    *feed.lock().unwrap() = (
        200,
        r#"{"hooks": ["198.51.100.0/24", "127.0.0.0/8"]}"#.to_string(),
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        status(&gw).await,
        200,
        "the refreshed list applies without a reload"
    );
    // The feed breaks: the last good list stays.
    *feed.lock().unwrap() = (500, "oops".to_string());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(status(&gw).await, 200);
    *feed.lock().unwrap() = (200, r#"{"hooks": []}"#.to_string());
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(
        status(&gw).await,
        200,
        "an empty list is treated as a failure"
    );
    let metrics = gw.metrics().await;
    assert_eq!(metrics[r#"hookgate_ip_set_entries{set="github"}"#], 2.0);
    assert!(metrics[r#"hookgate_ip_set_refreshes_total{set="github",result="success"}"#] >= 2.0);
    assert!(metrics[r#"hookgate_ip_set_refreshes_total{set="github",result="error"}"#] >= 1.0);
    assert!(metrics[r#"hookgate_ip_set_last_success_timestamp_seconds{set="github"}"#] > 1.7e9);
    gw.shutdown().await;
}

const LIMITED: &str = r#"
ip_sets:
  partners: { file: partners.txt }
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: limited
    path: /hooks/limited
    upstream: backend
    rate_limit: { per_minute: 1, burst: 5, key: client_ip }
  - name: from-file
    path: /hooks/file
    upstream: backend
    allow_ips: [partners]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_gets_exactly_its_quota_then_429s_with_retry_after_and_ratelimit_fields() {
    let dir = tempfile::tempdir().unwrap();
    let _ = dir; // the gateway's own temp dir holds partners.txt (written below before start)
    let gw = start_with_partners_file("# partners\n198.51.100.0/24\n").await;
    let client = h1_client(&gw.certs);
    let url = gw.https_url("/hooks/limited");
    let mut statuses = Vec::new();
    let mut refused_headers = None;
    for _ in 0..8 {
        let (status, headers, _) = send(&client, "POST", &url, &[], "x").await.unwrap();
        statuses.push(status);
        if status == 429 {
            refused_headers = Some(headers);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let headers = refused_headers.unwrap();
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (50..=60).contains(&retry_after),
        "one request a minute: wait up to a minute, got {retry_after}"
    );
    assert_eq!(headers["ratelimit-policy"], r#""default";q=5;w=300"#);
    assert!(headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with(r#""default";r=0;t="#));
    assert_eq!(gw.upstream.seen().len(), 5);
    let lines = gw.log_lines(8).await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["outcome"] == "rate_limited")
            .count(),
        3
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="public",route="limited",outcome="rate_limited",code="429"}"#],
        3.0
    );

    // A reload that leaves the limit alone keeps its state: still limited.
    gw.reload().unwrap();
    assert_eq!(send(&client, "POST", &url, &[], "x").await.unwrap().0, 429);
    // Changed settings start a fresh bucket.
    gw.edit_config(|c| c.replace("burst: 5", "burst: 6"));
    gw.reload().unwrap();
    assert_eq!(send(&client, "POST", &url, &[], "x").await.unwrap().0, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_ip_set_is_read_again_on_reload_and_a_broken_one_keeps_the_old_config() {
    let gw = start_with_partners_file("198.51.100.0/24\n").await;
    let url = gw.http_url("/hooks/file");
    assert_eq!(
        send(&plain_client(), "POST", &url, &[], "x")
            .await
            .unwrap()
            .0,
        403
    );
    std::fs::write(
        gw.dir.path().join("partners.txt"),
        "198.51.100.0/24\n127.0.0.1\n",
    )
    .unwrap();
    gw.reload().unwrap();
    assert_eq!(
        send(&plain_client(), "POST", &url, &[], "x")
            .await
            .unwrap()
            .0,
        200
    );
    std::fs::write(gw.dir.path().join("partners.txt"), "not-an-address\n").unwrap();
    let why = gw.reload().unwrap_err();
    assert!(
        why.contains("partners.txt") && why.contains("line 1"),
        "{why}"
    );
    assert_eq!(
        send(&plain_client(), "POST", &url, &[], "x")
            .await
            .unwrap()
            .0,
        200,
        "the old config still serves"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_config_reloads_total{result="error"}"#],
        1.0
    );
    gw.shutdown().await;
}

/// The LIMITED config with `partners.txt` next to it.
async fn start_with_partners_file(contents: &str) -> TestGateway {
    // The file must exist before the config loads; TestGateway writes its config into its own
    // temp dir, so point the set at an absolute path in a dir we create first.
    let holder = tempfile::tempdir().unwrap().keep();
    let file = holder.join("partners.txt");
    std::fs::write(&file, contents).unwrap();
    let gw = TestGateway::start(&LIMITED.replace("partners.txt", file.to_str().unwrap())).await;
    // Tests edit the file through the gateway's dir: make that path the same file.
    std::os::unix::fs::symlink(&file, gw.dir.path().join("partners.txt")).unwrap();
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_wide_limit_covers_every_route() {
    let gw = TestGateway::start(
        "rate_limit: { per_minute: 1, burst: 3, key: route }\nupstreams:\n  backend:\n    url: http://{upstream}\nroutes:\n  - name: one\n    path: /one\n    upstream: backend\n  - name: two\n    path: /two\n    upstream: backend\n",
    )
    .await;
    let client = plain_client();
    let mut statuses = Vec::new();
    for path in ["/one", "/two", "/one", "/two", "/one"] {
        statuses.push(
            send(&client, "POST", &gw.http_url(path), &[], "x")
                .await
                .unwrap()
                .0,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429],
        "one bucket for the whole gateway"
    );
    // Each worker thread hands its lines over on its own, so lines from two connections need not
    // be in request order: count them.
    let lines = gw.log_lines(5).await;
    let limited = lines
        .iter()
        .filter(|l| l["outcome"] == "rate_limited" && l["reason"] == "global")
        .count();
    assert_eq!(limited, 2, "{lines:?}");
    gw.shutdown().await;
}
