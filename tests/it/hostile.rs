//! Hostile input and upstream faults through real sockets: each gets the right status or a
//! closed connection, a log line where a request was read, and the gateway keeps serving.
//! (`fd_leaks.rs` repeats these alone in its process and counts file descriptors.)

use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROUTES: &str = r#"
limits:
  max_connections: 20
  handshake_timeout: 500ms
  body_timeout: 500ms
upstreams:
  backend:
    url: http://{upstream}
    timeout: 1s
  faulty:
    url: http://{faulty}
    timeout: 1s
    max_response: 64KiB
routes:
  - name: hooks
    path: /hooks/*
    upstream: backend
  - name: faulty
    path: /faulty/*
    upstream: faulty
"#;

async fn healthy(gw: &TestGateway) {
    let (status, _, _) = send(&plain_client(), "POST", &gw.http_url("/hooks/ok"), &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 200, "the gateway still serves a normal request");
}

/// The same over TLS and HTTP/2 (the TLS listener has its own connection cap).
async fn healthy_over_tls(gw: &TestGateway) {
    let (status, _, _) = send(
        &h2_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/ok"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(
        status, 200,
        "the TLS listener still serves a normal request"
    );
}

/// A backend that misbehaves by path: `/faulty/reset` closes after half a response,
/// `/faulty/huge` answers 1 MiB, `/faulty/stall` sends headers and then stalls the body,
/// `/faulty/smuggle` frames its answer two ways at once. And two odd but valid answers:
/// `/faulty/chunked` after a `100 Continue`, `/faulty/until-close` with no length at all.
async fn faulty_upstream() -> std::net::SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = socket.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.contains("/faulty/reset") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
                        .await;
                } else if head.contains("/faulty/huge") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n")
                        .await;
                    let _ = stream.write_all(&vec![b'z'; 1 << 20]).await;
                } else if head.contains("/faulty/smuggle") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
                        .await;
                } else if head.contains("/faulty/chunked") {
                    let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nX-Queue: q1\r\n\r\n6\r\nqueued\r\n")
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = stream.write_all(b"3;x=y\r\n ok\r\n0\r\n\r\n").await;
                } else if head.contains("/faulty/until-close") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
                        .await;
                } else if head.contains("/faulty/stall") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                        .await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    });
    addr
}

async fn start() -> TestGateway {
    let faulty = faulty_upstream().await;
    TestGateway::start(&ROUTES.replace("{faulty}", &faulty.to_string())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_smuggling_and_malformed_requests_each_with_the_right_status() {
    let gw = start().await;
    let cases: &[(&str, &[u8], &str)] = &[
        ("no Host", b"POST /hooks/x HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", "HTTP/1.1 400"),
        ("two Hosts", b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 1\r\n\r\nx", "HTTP/1.1 400"),
        ("duplicate Content-Length", b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy", "HTTP/1.1 400"),
        ("obs-fold", b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\nContent-Length: 1\r\n\r\nx", "HTTP/1.1 400"),
        ("bad chunk size", b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n", "HTTP/1.1 400"),
        ("unknown transfer coding", b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", "HTTP/1.1 501"),
        ("invalid method", b"P@ST /hooks/x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", "HTTP/1.1 400"),
        ("space before colon", b"POST /hooks/x HTTP/1.1\r\nHost: a\r\nContent-Length : 1\r\n\r\nx", "HTTP/1.1 400"),
        ("asterisk target", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "HTTP/1.1 400"),
        ("encoded dot segment", b"POST /hooks/%2e%2e/admin HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx", "HTTP/1.1 400"),
    ];
    for (what, raw, want) in cases {
        let reply = raw_exchange(gw.plain_addr(), raw, Duration::from_secs(2)).await;
        assert!(reply.starts_with(want), "{what}: {reply}");
    }
    // The ones hyper could parse reached the pipeline and were logged with their reason.
    let lines = gw.log_lines(cases.len()).await;
    assert_eq!(
        lines.len(),
        cases.len(),
        "one line per refused request, parser-level ones too"
    );
    let reasons: Vec<_> = lines.iter().filter_map(|l| l["reason"].as_str()).collect();
    for reason in ["host", "body", "transfer_encoding", "path", "malformed"] {
        assert!(
            reasons.contains(&reason),
            "{reason} missing from {reasons:?}"
        );
    }
    assert!(
        gw.upstream.seen().is_empty(),
        "nothing malformed reached the backend"
    );
    healthy(&gw).await;
    assert_eq!(
        protocol_errors(&gw).await,
        0.0,
        "malformed HTTP/1 heads are refused requests, not protocol errors"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_open_connections_and_serves_again_when_they_close() {
    let gw = start().await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(
            tokio::net::TcpStream::connect(gw.plain_addr())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = tokio::net::TcpStream::connect(gw.plain_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the 21st connection is closed at once");
    let metrics = gw.metrics().await;
    assert!(metrics[r#"hookgate_connections_refused_total{listener="plain"}"#] >= 1.0);
    assert_eq!(
        metrics[r#"hookgate_open_connections{listener="plain"}"#],
        20.0
    );
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    healthy(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_garbage_and_abandoned_handshakes_are_counted_and_closed() {
    let gw = start().await;
    // Garbage instead of a ClientHello.
    let mut garbage = tokio::net::TcpStream::connect(gw.tls_addr()).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), garbage.read_to_end(&mut buf))
        .await
        .unwrap();
    // A connection that never says anything is closed after the handshake timeout (500ms).
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(gw.tls_addr()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut [0u8; 16]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed at the handshake deadline"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_tls_handshake_failures_total{listener="public"}"#],
        2.0
    );
    healthy_over_tls(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_become_502_or_504_and_one_bad_backend_does_not_starve_the_others() {
    let gw = start().await;
    let client = h2_client(&gw.certs);
    let cases = [
        ("/faulty/reset", 502, "upstream_error"),
        ("/faulty/huge", 502, "upstream_error"),
        ("/faulty/stall", 504, "upstream_timeout"),
        ("/faulty/smuggle", 502, "upstream_error"),
    ];
    for (path, want, _) in cases {
        let (status, _, _) = send(&client, "POST", &gw.https_url(path), &[], "x")
            .await
            .unwrap();
        assert_eq!(status, want, "{path}");
    }
    let lines = gw.log_lines(4).await;
    for (line, (path, _, outcome)) in lines.iter().zip(cases) {
        assert_eq!(line["outcome"], outcome, "{path}");
    }
    assert_eq!(lines[0]["reason"], "reset");
    assert_eq!(lines[1]["reason"], "response_too_large");
    assert_eq!(lines[3]["reason"], "malformed_response");
    // Ten stalled requests in flight on one upstream; the other route answers at once.
    let stalled: Vec<_> = (0..10)
        .map(|_| {
            let (client, url) = (client.clone(), gw.https_url("/faulty/stall"));
            tokio::spawn(async move { send(&client, "POST", &url, &[], "x").await.unwrap().0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let (status, _, _) = send(&client, "POST", &gw.https_url("/hooks/fast"), &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not queued behind the stalled backend"
    );
    for task in stalled {
        assert_eq!(task.await.unwrap(), 504);
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_interim_and_close_delimited_answers_reach_the_client_whole() {
    let gw = start().await;
    for client in [h2_client(&gw.certs), h1_client(&gw.certs)] {
        let (status, headers, body) =
            send(&client, "POST", &gw.https_url("/faulty/chunked"), &[], "x")
                .await
                .unwrap();
        assert_eq!((status, body.as_ref()), (202, &b"queued ok"[..]));
        assert_eq!(headers["x-queue"], "q1");
        assert_eq!(
            headers["content-length"], "9",
            "sent on with a length, not chunked"
        );
        let (status, _, body) = send(
            &client,
            "POST",
            &gw.https_url("/faulty/until-close"),
            &[],
            "x",
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_ref()), (200, &b"all of it"[..]));
    }
    let lines = gw.log_lines(4).await;
    assert!(
        lines.iter().all(|l| l["outcome"] == "forwarded"),
        "{lines:?}"
    );
    assert_eq!(lines[0]["bytes_out"], 9);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_fill_the_cap_and_the_next_is_closed() {
    // Each idle connection costs this process two descriptors (both ends live here); the tests
    // running beside this one in the process hold some already and may open a few hundred more.
    let held = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    let cap = (open_files_limit().saturating_sub(held + 300) / 2).min(2000);
    assert!(cap >= 500, "the descriptor limit is too low for this test");
    let faulty = faulty_upstream().await;
    let gw = TestGateway::start(
        &ROUTES
            .replace("{faulty}", &faulty.to_string())
            .replace("max_connections: 20", &format!("max_connections: {cap}")),
    )
    .await;
    let mut idle = Vec::with_capacity(cap);
    for _ in 0..cap {
        idle.push(
            tokio::net::TcpStream::connect(gw.plain_addr())
                .await
                .unwrap(),
        );
    }
    let mut open = 0.0;
    for _ in 0..50 {
        open = gw.metrics().await[r#"hookgate_open_connections{listener="plain"}"#];
        if open >= cap as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open, cap as f64, "every idle connection is held");
    let mut extra = tokio::net::TcpStream::connect(gw.plain_addr())
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut [0u8; 16]))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection over the cap is closed at once");
    // The TLS listener has its own cap and still serves.
    healthy_over_tls(&gw).await;
    drop(idle);
    tokio::time::sleep(Duration::from_millis(500)).await;
    healthy(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_h2_streams_on_one_connection_is_served_within_the_stream_limit() {
    let gw = start().await;
    let client = h2_client(&gw.certs);
    // 1 000 requests at once on one HTTP/2 connection; the server allows 100 concurrent
    // streams, the client queues the rest. All are answered; another client is not starved.
    let flood: Vec<_> = (0..1000)
        .map(|i| {
            let (client, url) = (client.clone(), gw.https_url(&format!("/hooks/flood-{i}")));
            tokio::spawn(async move { send(&client, "POST", &url, &[], "x").await.map(|r| r.0) })
        })
        .collect();
    let started = Instant::now();
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/other"),
        &[],
        "x",
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another client is served during the flood"
    );
    let mut ok = 0;
    for task in flood {
        if task.await.unwrap().is_ok_and(|s| s == 200) {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    assert_eq!(gw.log_lines(1001).await.len(), 1001, "every stream logged");
    assert_eq!(
        protocol_errors_on(&gw, "tls").await,
        0.0,
        "many streams are no abuse"
    );
    gw.shutdown().await;
}

/// The soft limit on open files, from /proc/self/limits.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Raw HTTP/2 frames over cleartext (prior knowledge), for the attacks a client library will
/// not send.
mod raw_h2 {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_HEADERS: u8 = 0x4;
    /// RST_STREAM's error code CANCEL.
    pub const CANCEL: [u8; 4] = [0, 0, 0, 8];
    /// GOAWAY's error code for a peer that behaves abusively.
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK block for `POST http://x{path}`: static-table names, literal values.
    pub fn post_head(path: &str) -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        for (name_index, value) in [(4u8, path), (1, "x")] {
            // literal without indexing, indexed name (:path, :authority)
            block.push(name_index);
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        block
    }

    /// A connection that has sent the preface and its (empty) SETTINGS.
    pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        tcp
    }

    /// What the server did within `wait`: the GOAWAY error code it sent, if any, and whether it
    /// closed the connection.
    pub async fn server_reaction(tcp: &mut TcpStream, wait: Duration) -> (Option<u32>, bool) {
        let deadline = tokio::time::Instant::now() + wait;
        let (mut goaway, mut buf) = (None, Vec::new());
        let mut chunk = [0u8; 16 << 10];
        loop {
            let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await;
            match read {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return (goaway, true), // EOF or reset
                Err(_) => return (goaway, false),
            }
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                if buf[3] == GOAWAY && len >= 8 {
                    goaway = Some(u32::from_be_bytes(buf[13..17].try_into().unwrap()));
                }
                buf.drain(..9 + len);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_rapid_reset_flood_gets_goaway_and_does_no_work_upstream() {
    use raw_h2::*;
    let gw = start().await;
    let mut tcp = connect(gw.plain_addr()).await;
    // CVE-2023-44487: open a stream and cancel it at once, thousands of times, faster than any
    // stream limit can count.
    let mut flood = Vec::new();
    for i in 0..5000u32 {
        let stream = 2 * i + 1;
        flood.extend(frame(HEADERS, END_HEADERS, stream, &post_head("/hooks/rr")));
        flood.extend(frame(RST_STREAM, 0, stream, &CANCEL));
    }
    // The server may close while we are still writing: that is the point.
    let _ = tcp.write_all(&flood).await;
    let (goaway, closed) = server_reaction(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        goaway == Some(ENHANCE_YOUR_CALM) && closed,
        "GOAWAY(ENHANCE_YOUR_CALM) and a closed connection, got {goaway:?}, closed: {closed}"
    );
    assert!(
        gw.upstream.seen().is_empty(),
        "no cancelled stream was forwarded"
    );
    healthy(&gw).await;
    assert_eq!(counted_protocol_error(&gw).await, 1.0, "counted once");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_h2_header_block_is_cut_off_at_the_header_size_limit() {
    use raw_h2::*;
    let gw = start().await;
    let mut tcp = connect(gw.plain_addr()).await;
    // CONTINUATION flood (CVE-2024-27316 and kin): a header block that never ends. The
    // gateway's limit is 64 KiB; send 1 MiB of it, never END_HEADERS, and see it refused well
    // before the 10 s header timeout.
    let mut block = post_head("/hooks/cont");
    block.extend_from_slice(&[0x40, 0x05]); // literal with a new name of 5 bytes...
    block.extend_from_slice(b"x-pad");
    let _ = tcp.write_all(&frame(HEADERS, 0, 1, &block)).await;
    let fragment = vec![b'a'; 16 << 10];
    for _ in 0..64 {
        if tcp
            .write_all(&frame(CONTINUATION, 0, 1, &fragment))
            .await
            .is_err()
        {
            break;
        }
    }
    let (goaway, closed) = server_reaction(&mut tcp, Duration::from_secs(3)).await;
    assert!(
        goaway.is_some() && closed,
        "the header block is refused (GOAWAY, then close), got {goaway:?}, closed: {closed}"
    );
    assert!(gw.upstream.seen().is_empty());
    healthy(&gw).await;
    assert_eq!(counted_protocol_error(&gw).await, 1.0, "counted once");
    gw.shutdown().await;
}

/// `hookgate_protocol_errors_total` on the plain listener.
async fn protocol_errors(gw: &TestGateway) -> f64 {
    protocol_errors_on(gw, "plain").await
}

/// The same once it has counted something: hyper closes the socket, which the client sees,
/// a moment before the connection's task returns the error that is counted.
async fn counted_protocol_error(gw: &TestGateway) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let counted = protocol_errors(gw).await;
        if counted > 0.0 || Instant::now() > deadline {
            return counted;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn protocol_errors_on(gw: &TestGateway, listener: &str) -> f64 {
    let key = format!(r#"hookgate_protocol_errors_total{{listener="{listener}"}}"#);
    gw.metrics().await.get(&key).copied().unwrap_or(0.0)
}
