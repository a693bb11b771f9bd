//! Routing as issue 14 asked for it, through real sockets: routes match by path first (a wrong
//! method is 405, never a later, weaker route), near-miss paths never slip past a verified
//! route, HTTP/2 is held to what HTTP/1.1 is, refusals before the body reach real clients,
//! and an upstream's connections are capped.

use std::process::Command;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

/// A POST-only route behind an allowlist nobody here is in, a verified route, and a catch-all
/// that allows GET: the shape of the configs in issue 14.
const ROUTES: &str = r#"
limits:
  body_timeout: 1s
upstreams:
  backend:
    url: http://{upstream}
    timeout: 3s
  slowpoke:
    url: http://{upstream}
    timeout: 300ms
routes:
  - name: x
    path: /hooks/x
    methods: [POST]
    upstream: backend
    allow_ips: [192.0.2.0/24]
  - name: github
    path: /hooks/github
    methods: [POST]
    upstream: backend
    verify:
      provider: github
      secrets: ["s3cret"]
  - name: limited
    path: /hooks/limited
    methods: [POST]
    upstream: backend
    rate_limit: { per_minute: 1, burst: 1, key: route }
  - name: slow
    path: /slow/*
    upstream: slowpoke
  - name: catch-all
    path: /hooks/*
    methods: [GET, POST]
    upstream: backend
"#;

async fn count(gw: &TestGateway, listener: &str, route: &str, outcome: &str, code: u16) -> f64 {
    let key = format!(
        r#"hookgate_requests_total{{listener="{listener}",route="{route}",outcome="{outcome}",code="{code}"}}"#
    );
    gw.metrics().await.get(&key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_on_a_guarded_route_is_405_not_the_catch_all() {
    let gw = TestGateway::start(ROUTES).await;
    for (client, url) in [
        (h1_client(&gw.certs), gw.https_url("/hooks/x")),
        (h2_client(&gw.certs), gw.https_url("/hooks/x")),
    ] {
        let (status, headers, _) = send(&client, "GET", &url, &[], Bytes::new()).await.unwrap();
        assert_eq!(status, 405, "GET /hooks/x must not reach the catch-all");
        assert_eq!(headers["allow"], "POST");
    }
    let lines = gw.log_lines(2).await;
    for line in &lines {
        assert_eq!(line["outcome"], "method_not_allowed");
        assert_eq!(line["route"], "x");
    }
    assert_eq!(
        count(&gw, "public", "x", "method_not_allowed", 405).await,
        2.0
    );
    assert!(gw.upstream.seen().is_empty(), "{:?}", gw.upstream.seen());
    gw.shutdown().await;
}

/// Paths a backend could read as `/hooks/github` either go through that route's signature
/// check (case, trailing slash) or are refused with 400 (path parameters, escapes): never the
/// catch-all. Sent as raw bytes, so no client normalises them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_paths_never_bypass_the_verified_route() {
    let gw = TestGateway::start(ROUTES).await;
    let cases: &[(&str, u16, &str)] = &[
        ("/hooks/github/", 401, "signature_invalid"),
        ("/hooks/GitHub", 401, "signature_invalid"),
        ("/HOOKS/GITHUB/", 401, "signature_invalid"),
        ("/hooks/github;x", 400, "bad_request"),
        ("/hooks/github.", 400, "bad_request"),
        ("/hooks/github;", 400, "bad_request"),
        ("/hooks/github%20", 400, "bad_request"),
        ("/hooks/git%68ub", 400, "bad_request"),
        ("/hooks/github%2e", 400, "bad_request"),
        ("/hooks/github%252e", 400, "bad_request"),
        ("/hooks/g%C4%B1thub", 400, "bad_request"),
    ];
    for (i, (path, status, outcome)) in cases.iter().enumerate() {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let answer =
            raw_exchange(gw.plain_addr(), request.as_bytes(), Duration::from_secs(3)).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{path}: {answer}"
        );
        let line = gw.log_line(i + 1).await;
        assert_eq!(line["outcome"], *outcome, "{path}: {line}");
        if *status == 400 {
            assert_eq!(line["reason"], "path", "{path}");
        } else {
            assert_eq!(line["route"], "github", "{path}");
        }
    }
    assert!(gw.upstream.seen().is_empty(), "{:?}", gw.upstream.seen());
    // The catch-all still serves what is really its own.
    let (status, _, _) = send(
        &plain_client(),
        "GET",
        &gw.http_url("/hooks/other"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    gw.shutdown().await;
}

fn check(yaml: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CHECKED: &str = "listeners:
  - name: internal
    bind: 127.0.0.1:8080
upstreams:
  orders:
    url: http://127.0.0.1:3000
routes:
  - name: x
    path: /hooks/x
    methods: [POST]
    upstream: orders
  - name: rest
    path: /hooks/*
    methods: [GET, POST]
    upstream: orders
";

#[test]
fn check_warns_about_a_route_partly_shadowed_by_an_earlier_one() {
    let (ok, stdout, stderr) = check(CHECKED);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("warning: routes[1] \"rest\" (/hooks/*) does not serve GET /hooks/x"),
        "{stdout}"
    );
    // Same path, other methods: the later route can never match any more.
    let (ok, _, stderr) = check(&CHECKED.replace("path: /hooks/*", "path: /Hooks/X/"));
    assert!(!ok);
    assert!(stderr.contains("routes[1].path"), "{stderr}");
    assert!(stderr.contains("can never match"), "{stderr}");
}

/// `limits.max_headers` holds over HTTP/2 as over HTTP/1.1 (431), `cookie` crumbs reach the
/// backend as one line, and an h2 `host` that names another host than `:authority` is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_heads_are_held_to_the_http1_rules() {
    let gw = TestGateway::start(ROUTES).await;
    let h2 = h2_client(&gw.certs);
    let url = gw.https_url("/hooks/anything");

    let names: Vec<String> = (0..150).map(|i| format!("x-filler-{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    for (proto, client) in [("HTTP/1.1", &h1_client(&gw.certs)), ("HTTP/2", &h2)] {
        let (status, _, _) = send(client, "POST", &url, &many, "x").await.unwrap();
        assert_eq!(status, 431, "150 headers over {proto}");
    }

    let crumbs: Vec<String> = (0..200).map(|i| format!("c{i}={i}")).collect();
    let cookies: Vec<(&str, &str)> = crumbs.iter().map(|c| ("cookie", c.as_str())).collect();
    let (status, _, _) = send(&h2, "POST", &url, &cookies, "x").await.unwrap();
    assert_eq!(
        status, 200,
        "200 cookie crumbs are one cookie header, well under the limit"
    );
    let seen = gw.upstream.seen();
    let cookie: Vec<_> = seen[0].headers.get_all("cookie").iter().collect();
    assert_eq!(cookie.len(), 1, "one Cookie line: {cookie:?}");
    assert_eq!(cookie[0].to_str().unwrap(), crumbs.join("; "));

    let (status, _, _) = send(&h2, "POST", &url, &[("host", "evil.example")], "x")
        .await
        .unwrap();
    assert_eq!(status, 400, "h2 host differing from :authority");
    // The HTTP/1.1 431 is hyper's, logged when its connection ends: find lines by content.
    let lines = gw.log_lines(4).await;
    let h2_lines: Vec<_> = lines.iter().filter(|l| l["proto"] == "HTTP/2").collect();
    assert_eq!(h2_lines.len(), 3, "{lines:?}");
    assert!(h2_lines
        .iter()
        .any(|l| l["status"] == 431 && l["reason"] == "too_many_headers"));
    assert!(h2_lines
        .iter()
        .any(|l| l["status"] == 400 && l["reason"] == "host"));
    assert_eq!(gw.upstream.seen().len(), 1);
    gw.shutdown().await;
}

/// A `Host` that is not a plain `host[:port]` never reaches the backend as X-Forwarded-Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_host_is_400() {
    let gw = TestGateway::start(ROUTES).await;
    for (i, host) in ["a b/c", "user@evil.example", "", "evil.example/x"]
        .iter()
        .enumerate()
    {
        let request =
            format!("POST /hooks/any HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1\r\n\r\nx");
        let answer =
            raw_exchange(gw.plain_addr(), request.as_bytes(), Duration::from_secs(2)).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{host:?}: {answer}");
        let line = gw.log_line(i + 1).await;
        assert_eq!(line["reason"], "host", "{host:?}");
    }
    assert!(gw.upstream.seen().is_empty(), "{:?}", gw.upstream.seen());
    gw.shutdown().await;
}

/// `Expect: 100-continue` on a signed route without its signature header: 401 `missing` at
/// once, no `100 Continue`, no body read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_without_signature_header_is_refused_before_the_body() {
    let gw = TestGateway::start(ROUTES).await;
    let request = "POST /hooks/github HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\
                   Expect: 100-continue\r\nContent-Type: application/json\r\n\r\n";
    let answer = raw_exchange(
        gw.plain_addr(),
        request.as_bytes(),
        Duration::from_millis(1500),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "signature_invalid");
    assert_eq!(line["reason"], "missing");
    assert_eq!(line["provider"], "github");
    assert_eq!(line["bytes_in"], 0);
    // With the header present the body is invited as usual (and then checked).
    let request = "POST /hooks/github HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\
                   Expect: 100-continue\r\nX-Hub-Signature-256: sha256=00\r\n\r\n";
    let answer = raw_exchange(
        gw.plain_addr(),
        request.as_bytes(),
        Duration::from_millis(500),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 100 Continue"), "{answer}");
    assert!(gw.upstream.seen().is_empty());
    gw.shutdown().await;
}

/// A 504 says why in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_logged_with_a_reason() {
    let gw = TestGateway::start(ROUTES).await;
    let (status, _, _) = send(&plain_client(), "POST", &gw.http_url("/slow/x"), &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 504);
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "upstream_timeout");
    assert_eq!(line["reason"], "timeout");
    gw.shutdown().await;
}

/// curl, as Debian 12 ships it, over HTTP/2 with a body read from a file (sent after the
/// head, as for any real upload): the headers, then the status code.
fn curl_h2(ca: &std::path::Path, url: &str, body: &std::path::Path) -> Option<(String, String)> {
    let out = Command::new("curl")
        .args([
            "--http2",
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text.get(text.len().saturating_sub(3)..)?.to_string();
    Some((code, text))
}

/// A refusal made before the body (403, 429) reaches an HTTP/2 client that is sending a body:
/// the gateway reads and drops the small body first, so no RST_STREAM cuts the answer short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_reach_http2_clients_that_send_a_body() {
    let gw = TestGateway::start(ROUTES).await;
    let body = "x".repeat(20_000);
    let h2 = h2_client(&gw.certs);
    let (status, _, _) = send(&h2, "POST", &gw.https_url("/hooks/x"), &[], body.clone())
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, _, _) = send(
        &h2,
        "POST",
        &gw.https_url("/hooks/limited"),
        &[],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "the route's one request a minute");
    let (status, headers, _) = send(
        &h2,
        "POST",
        &gw.https_url("/hooks/limited"),
        &[],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));

    // curl 7.88 (Debian 12) reported "stream error in the HTTP/2 framing layer" and 000 here.
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl not installed: only the hyper client was tried");
        gw.shutdown().await;
        return;
    }
    let ca = gw.dir.path().join("ca.pem");
    std::fs::write(&ca, &gw.certs.ca_pem).unwrap();
    let body = gw.dir.path().join("body.json");
    std::fs::write(&body, "x".repeat(20_000)).unwrap();
    let (x, limited) = (gw.https_url("/hooks/x"), gw.https_url("/hooks/limited"));
    let (forbidden, throttled) = tokio::task::spawn_blocking(move || {
        (curl_h2(&ca, &x, &body), curl_h2(&ca, &limited, &body))
    })
    .await
    .unwrap();
    let (code, text) = forbidden.unwrap();
    assert_eq!(code, "403", "{text}");
    let (code, text) = throttled.unwrap();
    assert_eq!(code, "429", "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    assert!(text.starts_with("HTTP/2 429"), "{text}");
    gw.shutdown().await;
}

/// `upstreams.NAME.max_connections` caps the connections open to a slow upstream, over all
/// worker threads; requests beyond it wait briefly, then get 503 with Retry-After, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_capped_and_the_excess_gets_503() {
    let gw = TestGateway::start(
        r#"
upstreams:
  capped:
    url: http://{upstream}
    timeout: 5s
    max_connections: 2
routes:
  - name: slow
    path: /slow/*
    upstream: capped
"#,
    )
    .await;
    let h2 = h2_client(&gw.certs);
    let h1 = plain_client();
    let mut requests = Vec::new();
    for i in 0..6 {
        let (client, url) = if i % 2 == 0 {
            (h2.clone(), gw.https_url(&format!("/slow/{i}")))
        } else {
            (h1.clone(), gw.http_url(&format!("/slow/{i}")))
        };
        requests.push(tokio::spawn(async move {
            send(&client, "POST", &url, &[], "x").await.unwrap()
        }));
    }
    let mut statuses = Vec::new();
    for request in requests {
        let (status, headers, _) = request.await.unwrap();
        if status == 503 {
            assert_eq!(headers["retry-after"], "1");
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503]);
    let seen = gw.upstream.seen();
    assert_eq!(seen.len(), 2, "only two requests reached the upstream");
    let mut peers: Vec<_> = seen.iter().map(|s| s.peer).collect();
    peers.sort_unstable();
    peers.dedup();
    assert_eq!(peers.len(), 2, "one upstream connection each: {peers:?}");

    let lines = gw.log_lines(6).await;
    let busy: Vec<_> = lines.iter().filter(|l| l["status"] == 503).collect();
    assert_eq!(busy.len(), 4);
    for line in busy {
        assert_eq!(line["outcome"], "upstream_busy");
        assert_eq!(line["reason"], "max_connections");
        assert_eq!(line["upstream"], "capped");
    }
    let metrics = gw.metrics().await;
    let get = |name: &str| {
        metrics
            .get(&format!(r#"{name}{{upstream="capped"}}"#))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(get("hookgate_upstream_connection_waits_total"), 4.0);
    assert_eq!(get("hookgate_upstream_connections_refused_total"), 4.0);

    // Once they are free again, requests go through on the capped connections.
    let (status, _, _) = send(&h1, "POST", &gw.http_url("/slow/again"), &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut peers: Vec<_> = gw.upstream.seen().iter().map(|s| s.peer).collect();
    peers.sort_unstable();
    peers.dedup();
    assert!(peers.len() <= 3, "{peers:?}");
    gw.shutdown().await;
}

/// `Content-Length` next to `Transfer-Encoding` over HTTP/1.1, in both orders, with a second
/// request hidden behind the chunked body. hyper drops the `Content-Length` before the
/// pipeline sees the request (so `route::check_framing` cannot answer 400), reads the body as
/// chunked and closes the connection after the answer: nothing is smuggled. This pins that;
/// the 400 the issue asks for needs a hook in `src/server` (see the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_smuggles_nothing() {
    let gw = TestGateway::start(ROUTES).await;
    let hidden = "POST /hooks/smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx";
    for framing in [
        "Content-Length: 60\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 60",
    ] {
        let raw =
            format!("POST /hooks/a HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n0\r\n\r\n{hidden}");
        let answer = raw_exchange(gw.plain_addr(), raw.as_bytes(), Duration::from_secs(2)).await;
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{framing}: {answer}"
        );
        assert!(answer.contains("connection: close"), "{framing}: {answer}");
    }
    let seen = gw.upstream.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.uri, "/hooks/a");
        assert_eq!(s.body.len(), 0);
    }
    gw.shutdown().await;
}

/// 16 000 routes with an allowlist and a rate limit each: past the YAML parser's default node
/// budget, which refused them with "budget breached: Nodes".
#[test]
fn check_loads_sixteen_thousand_routes() {
    let mut yaml = String::from(
        "listeners:\n  - name: internal\n    bind: 127.0.0.1:8080\nupstreams:\n  orders:\n    url: http://127.0.0.1:3000\nroutes:\n",
    );
    for i in 0..16_000 {
        yaml.push_str(&format!(
            "  - name: r{i}\n    path: /hooks/r{i}\n    methods: [POST]\n    upstream: orders\n    allow_ips: [10.0.0.0/8]\n    rate_limit: {{ per_second: 5 }}\n"
        ));
    }
    let (ok, stdout, stderr) = check(&yaml);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("16000 routes"), "{stdout}");
}
