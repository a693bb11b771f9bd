//! Every way an upstream can fail to answer, each with a real failing upstream on loopback: the
//! client gets 502 or 504, and the access log's `reason` names the cause (the upstream client's
//! `UpstreamError::reason`), so an operator can tell a refused port from a bad certificate.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a test upstream does once it has accepted a connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads the request, sends half a response, then resets the connection (RST).
    ResetMidAnswer,
    /// Accepts and never sends a byte (also no TLS handshake).
    Silent,
    /// Answers something that is not HTTP.
    Garbage,
}

async fn failing_upstream(behaviour: Behaviour) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = socket.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                match behaviour {
                    Behaviour::ResetMidAnswer => {
                        let _ = stream.read(&mut buf).await;
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
                            .await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        // Linger 0: closing sends RST, not FIN.
                        let std = stream.into_std().unwrap();
                        socket2_free_rst(std);
                    }
                    Behaviour::Silent => {
                        let _ = stream.read(&mut buf).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    Behaviour::Garbage => {
                        let _ = stream.read(&mut buf).await;
                        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            });
        }
    });
    addr
}

/// Closes a socket with an RST (SO_LINGER 0), as a crashing upstream's kernel would.
fn socket2_free_rst(stream: std::net::TcpStream) {
    let stream = tokio::net::TcpStream::from_std(stream).unwrap();
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);
}

fn routes(upstreams: &[(&str, String)]) -> String {
    let mut yaml = String::from("upstreams:\n");
    for (name, url) in upstreams {
        yaml.push_str(&format!(
            "  {name}:\n    url: {url}\n    timeout: 1500ms\n    connect_timeout: 300ms\n"
        ));
    }
    yaml.push_str("routes:\n");
    for (name, _) in upstreams {
        yaml.push_str(&format!(
            "  - name: {name}\n    path: /{name}\n    upstream: {name}\n"
        ));
    }
    yaml
}

/// Sends one request to `/{name}` and returns its status and log line.
async fn through(gw: &TestGateway, name: &str, line: usize) -> (u16, serde_json::Value) {
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url(&format!("/{name}")),
        &[],
        "payload",
    )
    .await
    .unwrap();
    (status, gw.log_line(line).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_failure_is_502_or_504_with_a_reason_naming_its_cause() {
    // A TLS upstream whose certificate comes from a CA the gateway was not told about.
    let other_certs = TestCerts::new();
    let untrusted = RecordingUpstream::start_tls(&other_certs).await;
    let reset = failing_upstream(Behaviour::ResetMidAnswer).await;
    let silent = failing_upstream(Behaviour::Silent).await;
    let garbage = failing_upstream(Behaviour::Garbage).await;
    let gw = TestGateway::start(&routes(&[
        ("refused", "http://{dead}".to_string()),
        (
            "untrusted",
            format!("https://localhost:{}", untrusted.addr.port()),
        ),
        // TCP is accepted, the TLS handshake never answered: the connect deadline.
        (
            "handshake_silent",
            format!("https://localhost:{}", silent.port()),
        ),
        ("reset", format!("http://{reset}")),
        ("silent", format!("http://{silent}")),
        ("garbage", format!("http://{garbage}")),
    ]))
    .await;

    let cases = [
        ("refused", 502, "upstream_connect_error", "connect_refused"),
        ("untrusted", 502, "upstream_connect_error", "tls"),
        (
            "handshake_silent",
            502,
            "upstream_connect_error",
            "connect_timeout",
        ),
        ("reset", 502, "upstream_error", "reset"),
        ("silent", 504, "upstream_timeout", "timeout"),
        ("garbage", 502, "upstream_error", "malformed_response"),
    ];
    for (i, (name, status, outcome, reason)) in cases.into_iter().enumerate() {
        let (got, line) = through(&gw, name, i + 1).await;
        assert_eq!(got, status, "{name}: status");
        assert_eq!(line["status"], status, "{name}: logged status");
        assert_eq!(line["outcome"], outcome, "{name}: outcome");
        assert_eq!(line["reason"], reason, "{name}: reason");
        assert_eq!(line["upstream"], name, "{name}: upstream");
    }
    assert!(
        untrusted.seen().is_empty(),
        "nothing reaches an upstream whose certificate is not trusted"
    );
    // Counted under the outcome, per route and status.
    let metrics = gw.metrics().await;
    for (name, status, outcome, _) in cases {
        let key = format!(
            r#"hookgate_requests_total{{listener="public",route="{name}",outcome="{outcome}",code="{status}"}}"#
        );
        assert_eq!(metrics.get(&key).copied(), Some(1.0), "{key}");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_request_logs_no_failure_reason() {
    let gw = TestGateway::start(&routes(&[("backend", "http://{upstream}".to_string())])).await;
    let (status, line) = through(&gw, "backend", 1).await;
    assert_eq!(status, 200);
    assert_eq!(line["outcome"], "forwarded");
    assert!(line["reason"].is_null(), "{line}");
    gw.shutdown().await;
}
