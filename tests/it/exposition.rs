//! The metrics exposition after real traffic of every kind: `promtool check metrics` (the
//! Prometheus project's own linter) accepts the classic text format, no series appears twice
//! (promtool does not check that), and OpenMetrics is served to scrapers that ask for it.

use std::collections::HashSet;
use std::process::{Command, Stdio};

use crate::common::*;

const ROUTES: &str = r#"
ip_sets:
  office: { cidrs: [192.0.2.0/24] }
upstreams:
  backend:
    url: http://{upstream}
  dead:
    url: http://{dead}
routes:
  - name: signed
    path: /signed
    upstream: backend
    rate_limit: { per_minute: 1, burst: 2 }
    verify: { provider: github, secrets: ["It's a Secret to Everybody"] }
  - name: office
    path: /office
    upstream: backend
    allow_ips: [office]
  - name: gone
    path: /gone
    upstream: dead
  - name: open
    path: /open/*
    upstream: backend
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition_and_no_series_repeats() {
    let gw = TestGateway::start(ROUTES).await;
    let client = h2_client(&gw.certs);
    let sent = send_one_of_every_outcome(&gw, &client).await;
    gw.log_lines(sent).await;
    let url = format!(
        "http://{}/metrics",
        gw.gateway.as_ref().unwrap().admin_addr().unwrap()
    );
    let (_, headers, text) = send(&plain_client(), "GET", &url, &[], "").await.unwrap();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(text.to_vec()).unwrap();

    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let mut seen = HashSet::new();
    for series in text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s))
    {
        assert!(seen.insert(series), "series appears twice: {series}");
    }
    for family in [
        "hookgate_requests_total",
        "hookgate_signature_checks_total",
        "hookgate_request_duration_seconds_bucket",
        "hookgate_build_info",
    ] {
        assert!(text.contains(family), "{family} missing");
    }

    let (_, headers, open) = send(
        &plain_client(),
        "GET",
        &url,
        &[("accept", "application/openmetrics-text; version=1.0.0")],
        "",
    )
    .await
    .unwrap();
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(String::from_utf8(open.to_vec())
        .unwrap()
        .ends_with("# EOF\n"));
    gw.shutdown().await;
}
