//! Every phase of a connection has a deadline and a connection's unsent responses are bounded
//! (DESIGN.md section 1): silent sockets, idle keep-alive connections and clients that do not
//! read their responses are closed, through real sockets on loopback. Also the reload metrics:
//! the start is no reload, and a removed route's series go with it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines, and a backend whose `/big/large` answers 16 MiB and `/big/mid` 64 KiB.
const CONFIG: &str = r#"
limits:
  header_timeout: 1s
  idle_timeout: 1s
  send_timeout: 1s
  max_connections: 4
upstreams:
  backend:
    url: http://{upstream}
  big:
    url: http://{big}
    max_response: 32MiB
routes:
  - name: hooks
    path: /hooks/*
    upstream: backend
  - name: big
    path: /big/*
    methods: [GET, POST]
    upstream: big
"#;

const LARGE: usize = 16 << 20;
const MID: usize = 64 << 10;

/// A backend answering `LARGE` bytes on `/big/large` and `MID` bytes on anything else.
async fn big_upstream() -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (large, mid) = (Bytes::from(vec![b'x'; LARGE]), Bytes::from(vec![b'y'; MID]));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = socket.accept().await else {
                return;
            };
            let (large, mid) = (large.clone(), mid.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = if req.uri().path().ends_with("/large") {
                        large.clone()
                    } else {
                        mid.clone()
                    };
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(body)))
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

async fn start(config: &str) -> TestGateway {
    let big = big_upstream().await;
    TestGateway::start(&config.replace("{big}", &big.to_string())).await
}

/// Reads until the server closes (`true`) or `wait` passes (`false`); also the bytes read.
async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), wait: Duration) -> (bool, usize) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, total),
            Ok(Ok(n)) => total += n,
            Err(_) => return (false, total),
        }
    }
}

async fn closed_count(gw: &TestGateway, listener: &str, reason: &str) -> f64 {
    let key =
        format!(r#"hookgate_connections_closed_total{{listener="{listener}",reason="{reason}"}}"#);
    for _ in 0..40 {
        if let Some(value) = gw.metrics().await.get(&key) {
            return *value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    0.0
}

async fn healthy(gw: &TestGateway) {
    let (status, _, _) = send(&plain_client(), "POST", &gw.http_url("/hooks/ok"), &[], "x")
        .await
        .unwrap();
    assert_eq!(status, 200);
}

/// A TLS connection to the gateway with the handshake done.
async fn tls_connect(
    gw: &TestGateway,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(gw.certs.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(gw.tls_addr()).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_at_the_first_byte_deadline_and_free_their_slot() {
    let gw = start(CONFIG).await;
    // The listener's whole cap (4) taken by sockets that never send a request: plain TCP that
    // says nothing, a partial HTTP/2 preface, a lone byte of an HTTP/1 head, and one that sent
    // the whole preface but no request.
    let mut silent = TcpStream::connect(gw.plain_addr()).await.unwrap();
    let mut partial_preface = TcpStream::connect(gw.plain_addr()).await.unwrap();
    partial_preface
        .write_all(b"PRI * HTTP/2.0\r\n")
        .await
        .unwrap();
    let mut one_byte = TcpStream::connect(gw.plain_addr()).await.unwrap();
    one_byte.write_all(b"G").await.unwrap();
    let mut preface_only = raw_h2::connect(gw.plain_addr()).await;
    // On TLS: a completed handshake, then nothing.
    let mut tls_silent = tls_connect(&gw, &[]).await;

    for (name, stream) in [
        ("silent", &mut silent),
        ("partial preface", &mut partial_preface),
        ("one byte", &mut one_byte),
    ] {
        let (closed, _) = closed_within(stream, Duration::from_secs(5)).await;
        assert!(closed, "{name}: closed at the first-byte deadline");
    }
    let (closed, _) = closed_within(&mut tls_silent, Duration::from_secs(5)).await;
    assert!(closed, "TLS: closed at the first-byte deadline");
    // The full preface chose HTTP/2: an idle connection, closed with GOAWAY(NO_ERROR).
    let reaction = raw_h2::read_until_close(&mut preface_only, Duration::from_secs(5)).await;
    assert_eq!(reaction.goaway, Some(0), "{reaction:?}");
    assert!(reaction.closed, "{reaction:?}");

    assert_eq!(closed_count(&gw, "plain", "first_byte_timeout").await, 2.0);
    assert_eq!(closed_count(&gw, "public", "first_byte_timeout").await, 1.0);
    assert_eq!(closed_count(&gw, "plain", "idle_timeout").await, 1.0);
    // The lone byte began an HTTP/1 head: hyper's header timeout refused it, with a log line.
    let line = gw.log_line(1).await;
    assert_eq!(line["status"], 408, "{line}");
    healthy(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_send_a_request_do_not_lock_senders_out() {
    let gw = start(CONFIG).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(gw.plain_addr()).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The cap is full now; once the first-byte deadline (1s) has passed, senders get in again.
    let mut served = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok((200, _, _)) =
            send(&plain_client(), "POST", &gw.http_url("/hooks/ok"), &[], "x").await
        {
            served = true;
            break;
        }
    }
    assert!(
        served,
        "a sender got through while the silent sockets were still open"
    );
    drop(held);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_that_answers_pings_is_closed_with_goaway() {
    // Pings every second (keep_alive_timeout / 2), answered; idle after its one request.
    let gw = start(&CONFIG.replace(
        "  idle_timeout: 1s\n",
        "  idle_timeout: 1s\n  keep_alive_timeout: 2s\n",
    ))
    .await;
    let mut tcp = raw_h2::connect(gw.plain_addr()).await;
    tcp.write_all(&raw_h2::request(1, "/hooks/idle"))
        .await
        .unwrap();
    let reaction = raw_h2::read_until_close(&mut tcp, Duration::from_secs(6)).await;
    assert!(reaction.answered, "the request was answered: {reaction:?}");
    assert_eq!(reaction.goaway, Some(0), "GOAWAY(NO_ERROR): {reaction:?}");
    assert!(reaction.closed, "{reaction:?}");
    assert_eq!(closed_count(&gw, "plain", "idle_timeout").await, 1.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http1_connection_is_closed_at_the_idle_deadline_not_the_header_one() {
    let gw = start(&CONFIG.replace("header_timeout: 1s", "header_timeout: 10s")).await;
    let mut tcp = TcpStream::connect(gw.plain_addr()).await.unwrap();
    tcp.write_all(b"POST /hooks/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
        .await
        .unwrap();
    let (closed, read) = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(read > 0, "answered");
    assert!(
        closed,
        "closed at the idle deadline (1s), not the header one (10s)"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_does_not_read_its_response_is_cut_off_at_the_send_deadline() {
    let gw = start(CONFIG).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut tcp = socket.connect(gw.plain_addr()).await.unwrap();
    tcp.write_all(b"GET /big/large HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Read nothing past the deadline (1s), then everything there is.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (closed, read) = closed_within(&mut tcp, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(
        read < LARGE,
        "the response was dropped: {read} bytes arrived"
    );
    assert_eq!(closed_count(&gw, "plain", "send_timeout").await, 1.0);
    healthy(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_with_a_zero_window_is_cut_off_at_the_send_deadline() {
    let gw = start(CONFIG).await;
    let mut tcp = raw_h2::connect_with_window(gw.plain_addr(), 0).await;
    tcp.write_all(&raw_h2::request(1, "/big/mid"))
        .await
        .unwrap();
    let reaction = raw_h2::read_until_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(reaction.closed, "{reaction:?}");
    assert_eq!(closed_count(&gw, "plain", "send_timeout").await, 1.0);
    healthy(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_responses_past_max_unsent_close_the_connection_at_once() {
    let gw = start(
        &CONFIG
            .replace("send_timeout: 1s", "send_timeout: 30s")
            .replace("idle_timeout: 1s", "idle_timeout: 30s")
            .replace("max_connections: 4", "max_unsent: 100KiB"),
    )
    .await;
    let mut tcp = raw_h2::connect_with_window(gw.plain_addr(), 0).await;
    // One 64 KiB response unsent is allowed; a second one is past 100 KiB.
    for stream in [1, 3] {
        tcp.write_all(&raw_h2::request(stream, "/big/mid"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let reaction = raw_h2::read_until_close(&mut tcp, Duration::from_secs(5)).await;
    assert!(
        reaction.closed,
        "closed long before the send deadline: {reaction:?}"
    );
    assert_eq!(closed_count(&gw, "plain", "unsent_limit").await, 1.0);
    healthy(&gw).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_read_at_once_is_whole_and_its_connection_stays_for_the_next() {
    // A send deadline a busy test machine cannot miss: this pins the pieces adding up.
    let gw = start(&CONFIG.replace("send_timeout: 1s", "send_timeout: 30s")).await;
    for client in [h1_client(&gw.certs), h2_client(&gw.certs)] {
        for _ in 0..2 {
            let (status, _, body) = send(&client, "GET", &gw.https_url("/big/large"), &[], "")
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(body.len(), LARGE);
            assert!(body.iter().all(|b| *b == b'x'));
        }
    }
    assert_eq!(closed_count(&gw, "public", "send_timeout").await, 0.0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_is_no_reload_and_a_removed_route_takes_its_series_along() {
    let gw = start(CONFIG).await;
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics.get(r#"hookgate_config_reloads_total{result="success"}"#),
        Some(&0.0)
    );
    assert_eq!(
        metrics.get(r#"hookgate_config_reloads_total{result="error"}"#),
        Some(&0.0)
    );
    assert!(metrics["hookgate_config_last_reload_success_timestamp_seconds"] > 0.0);
    healthy(&gw).await;
    let (status, _, _) = send(&plain_client(), "GET", &gw.http_url("/big/mid"), &[], "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let series =
        r#"hookgate_requests_total{listener="plain",route="big",outcome="forwarded",code="200"}"#;
    let duration = r#"hookgate_request_duration_seconds_count{route="big",outcome="forwarded"}"#;
    let _ = gw.log_lines(2).await;
    let metrics = gw.metrics().await;
    assert_eq!(metrics.get(series), Some(&1.0));
    assert_eq!(metrics.get(duration), Some(&1.0));

    gw.edit_config(|text| {
        let cut = text.find("  - name: big\n    path").unwrap();
        text[..cut].to_string()
    });
    gw.reload().unwrap();
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics.get(series),
        None,
        "the removed route's series are gone"
    );
    assert_eq!(metrics.get(duration), None);
    let kept =
        r#"hookgate_requests_total{listener="plain",route="hooks",outcome="forwarded",code="200"}"#;
    assert_eq!(metrics.get(kept), Some(&1.0), "the others stay");
    assert_eq!(
        metrics.get(r#"hookgate_config_reloads_total{result="success"}"#),
        Some(&1.0)
    );
    gw.shutdown().await;
}

/// Raw HTTP/2 frames over cleartext (prior knowledge), for clients a library will not be.
mod raw_h2 {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut out = vec![len[1], len[2], len[3], kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// `GET http://x{path}` on `stream`, no body.
    pub fn request(stream: u32, path: &str) -> Vec<u8> {
        let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
        for (name_index, value) in [(4u8, path), (1, "x")] {
            block.push(name_index);
            block.push(u8::try_from(value.len()).unwrap());
            block.extend_from_slice(value.as_bytes());
        }
        frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
    }

    pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        tcp
    }

    /// A connection whose streams start with a flow-control window of `window` bytes.
    pub async fn connect_with_window(addr: std::net::SocketAddr, window: u32) -> TcpStream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut settings = vec![0, 4]; // SETTINGS_INITIAL_WINDOW_SIZE
        settings.extend_from_slice(&window.to_be_bytes());
        tcp.write_all(&frame(SETTINGS, 0, 0, &settings))
            .await
            .unwrap();
        tcp
    }

    #[derive(Debug, Default)]
    pub struct Reaction {
        /// A response's last frame arrived.
        pub answered: bool,
        pub goaway: Option<u32>,
        pub closed: bool,
        pub pings_answered: usize,
    }

    /// Reads frames, answering PINGs, until the server closes or `wait` passes.
    pub async fn read_until_close(tcp: &mut TcpStream, wait: Duration) -> Reaction {
        let deadline = tokio::time::Instant::now() + wait;
        let (mut reaction, mut buf) = (Reaction::default(), Vec::new());
        let mut chunk = [0u8; 16 << 10];
        loop {
            match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => {
                    reaction.closed = true;
                    return reaction;
                }
                Err(_) => return reaction,
            }
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, flags) = (buf[3], buf[4]);
                let payload = buf[9..9 + len].to_vec();
                if kind == GOAWAY && len >= 8 {
                    reaction.goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
                }
                if (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
                    reaction.answered = true;
                }
                if kind == PING && flags & ACK == 0 {
                    let _ = tcp.write_all(&frame(PING, ACK, 0, &payload)).await;
                    reaction.pings_answered += 1;
                }
                buf.drain(..9 + len);
            }
        }
    }
}

#[test]
fn bad_connection_limits_are_config_errors_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (limits, field, why) in [
        (
            "  send_timeout: 0s\n",
            "limits.send_timeout",
            "greater than zero",
        ),
        (
            "  idle_timeout: soon\n",
            "limits.idle_timeout",
            "not a duration",
        ),
        (
            "  max_unsent: 1KiB\n",
            "limits.max_unsent",
            "at least 16KiB",
        ),
    ] {
        let path = dir.path().join("gateway.yaml");
        let yaml = format!(
            "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\nlimits:\n  header_timeout: 1s\n{limits}upstreams:\n  b:\n    url: http://127.0.0.1:9\nroutes:\n  - name: r\n    path: /r\n    upstream: b\n"
        );
        std::fs::write(&path, yaml).unwrap();
        let error = hookgate::config::load(&path).unwrap_err().to_string();
        assert!(error.contains("gateway.yaml:6:"), "{error}");
        assert!(error.contains(field) && error.contains(why), "{error}");
    }
}
