//! The pipeline driven in memory, as axum services are tested: `pipeline::handle` gets a
//! `Request<Full<Bytes>>` and a connection that was never accepted, with no gateway socket at
//! all. Each test checks the answer, the one access-log line and the one metric, as the socket
//! tests do. (Behaviour over real sockets stays pinned by the other test files.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use hookgate::config::{parse_and_validate, LogTarget};
use hookgate::observe::access_log::AccessLog;
use hookgate::observe::metrics::Metrics;
use hookgate::pipeline::handle;
use hookgate::pipeline::replay::MemoryReplayStore;
use hookgate::runtime::Runtime;
use hookgate::state::{ConnInfo, Shared};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// No upstream listens on `backend`: those tests end before stage 9, and must. `recorder` is a
/// real (in-process) upstream for the tests that forward.
const CONFIG: &str = r#"
listeners:
  - name: mem
    bind: 127.0.0.1:0
upstreams:
  backend:
    url: http://127.0.0.1:9
  recorder:
    url: http://{recorder}
routes:
  - name: delivered
    path: /hooks/delivered
    upstream: recorder
    verify: { provider: github, secrets: ["github-secret"] }
  - name: small
    path: /hooks/small
    upstream: backend
    max_body: 16
  - name: github
    path: /hooks/github
    upstream: backend
    verify: { provider: github, secrets: ["github-secret"] }
  - name: dropbox
    path: /hooks/dropbox
    methods: [GET, POST]
    upstream: backend
    verify: { provider: dropbox, secrets: ["dropbox-secret"] }
"#;

struct InMemory {
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    writer: JoinHandle<()>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl InMemory {
    async fn new() -> InMemory {
        InMemory::forwarding_to("127.0.0.1:9".parse().unwrap()).await
    }

    async fn forwarding_to(recorder: SocketAddr) -> InMemory {
        let dir = tempfile::tempdir().unwrap();
        let yaml = CONFIG.replace("{recorder}", &recorder.to_string());
        let config =
            parse_and_validate(&yaml, &dir.path().join("gateway.yaml"), HashMap::new()).unwrap();
        let metrics = Metrics::new();
        let runtime = Runtime::build(&config, None, &metrics, &[]).unwrap();
        let log = dir.path().join("access.log");
        let (access_log, writer) = AccessLog::start(&LogTarget::File(log.clone()))
            .await
            .unwrap();
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            access_log,
            replay: Arc::new(MemoryReplayStore::new(100)),
            draining: Default::default(),
            in_flight: Default::default(),
            delivery: None,
            acme_http01: None,
        });
        let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let conn = Arc::new(ConnInfo {
            listener: Arc::from("mem"),
            peer,
            tls_version: None,
            requests: Default::default(),
            answers: Default::default(),
        });
        InMemory {
            shared,
            conn,
            writer,
            log,
            _dir: dir,
        }
    }

    async fn call(&self, request: Request<Full<Bytes>>) -> (Response<()>, String) {
        let response = handle(
            request,
            Arc::clone(&self.conn),
            Arc::clone(&self.shared),
            Instant::now(),
        )
        .await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            Response::from_parts(parts, ()),
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    fn metric(&self, series: &str) -> Option<f64> {
        self.shared.metrics.encode_text().lines().find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
    }

    /// Drops every handle on the access log, waits for its writer, returns its lines.
    async fn log_lines(self) -> Vec<serde_json::Value> {
        let InMemory {
            shared,
            conn,
            writer,
            log,
            _dir,
        } = self;
        drop((shared, conn));
        writer.await.unwrap();
        read_lines(&log)
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn post(path: &str, headers: &[(&str, &str)], body: &'static str) -> Request<Full<Bytes>> {
    let mut request = Request::post(path).header("host", "gateway.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test]
async fn refuses_an_unknown_path_with_404_and_logs_no_route() {
    let gw = InMemory::new().await;
    let (response, body) = gw
        .call(post("/nowhere?secret=x", &[("user-agent", "probe")], "{}"))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(body, "Not Found\n");
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        gw.metric(
            r#"hookgate_requests_total{listener="mem",route="",outcome="no_route",code="404"}"#
        ),
        Some(1.0)
    );
    let lines = gw.log_lines().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["outcome"], "no_route");
    assert_eq!(line["status"], 404);
    assert_eq!(line["listener"], "mem");
    assert_eq!(line["path"], "/nowhere", "no query");
    assert_eq!(line["peer_ip"], "192.0.2.7");
    assert_eq!(line["user_agent"], "probe");
    assert!(line.get("route").is_none());
    assert!(line.get("upstream").is_none());
}

#[tokio::test]
async fn refuses_a_body_over_the_routes_cap_with_413() {
    let gw = InMemory::new().await;
    let (response, _) = gw
        .call(post("/hooks/small", &[], "seventeen bytes!!"))
        .await;
    assert_eq!(response.status(), 413);
    let (response, _) = gw.call(post("/hooks/small", &[], "x")).await;
    assert_eq!(
        response.status(),
        502,
        "a body under the cap goes on to the (absent) upstream"
    );
    let lines = gw.log_lines().await;
    assert_eq!(lines[0]["outcome"], "body_too_large");
    assert_eq!(lines[0]["route"], "small");
    assert_eq!(lines[1]["outcome"], "upstream_connect_error");
    assert_eq!(lines[1]["upstream"], "backend");
    assert_eq!(lines[1]["bytes_in"], 1);
}

#[tokio::test]
async fn refuses_a_wrong_github_signature_with_401_and_says_why_only_in_the_log() {
    let gw = InMemory::new().await;
    let (response, body) = gw
        .call(post(
            "/hooks/github",
            &[("x-hub-signature-256", &format!("sha256={}", "0".repeat(64)))],
            r#"{"zen":"hi"}"#,
        ))
        .await;
    assert_eq!(response.status(), 401);
    assert_eq!(body, "Unauthorized\n");
    let (response, _) = gw.call(post("/hooks/github", &[], "{}")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        gw.metric(
            r#"hookgate_requests_total{listener="mem",route="github",outcome="signature_invalid",code="401"}"#
        ),
        Some(2.0)
    );
    let lines = gw.log_lines().await;
    let reasons: Vec<_> = lines.iter().map(|l| l["reason"].clone()).collect();
    assert_eq!(reasons, ["mismatch", "missing"]);
    assert!(lines.iter().all(|l| l["provider"] == "github"));
    assert!(lines.iter().all(|l| l["outcome"] == "signature_invalid"));
}

#[tokio::test]
async fn answers_a_dropbox_challenge_itself_as_a_handshake() {
    let gw = InMemory::new().await;
    let request = Request::get("/hooks/dropbox?challenge=abc123")
        .header("host", "gateway.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (response, body) = gw.call(request).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body, "abc123");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        gw.metric(
            r#"hookgate_requests_total{listener="mem",route="dropbox",outcome="handshake",code="200"}"#
        ),
        Some(1.0)
    );
    let lines = gw.log_lines().await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "handshake");
    assert_eq!(lines[0]["provider"], "dropbox");
    assert_eq!(lines[0]["bytes_out"], 6);
    assert!(lines[0].get("upstream").is_none(), "never forwarded");
}

/// A real upstream in this process: answers 200 to everything and counts what it received.
async fn recorder() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let counter = Arc::clone(&counter);
                    async move {
                        let _ = request.into_body().collect().await;
                        counter.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn github_signature(body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"github-secret");
    let tag = hmac::sign(&key, body.as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_a_verified_event_once_and_answers_its_retry_as_a_duplicate() {
    let (addr, received) = recorder().await;
    let gw = InMemory::forwarding_to(addr).await;
    let body = r#"{"action":"opened"}"#;
    let signature = github_signature(body);
    let headers = [
        ("x-hub-signature-256", signature.as_str()),
        ("x-github-delivery", "d-1"),
    ];
    let (response, answer) = gw.call(post("/hooks/delivered", &headers, body)).await;
    assert_eq!((response.status().as_u16(), answer.as_str()), (200, "ok"));
    let (response, answer) = gw.call(post("/hooks/delivered", &headers, body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(answer, "duplicate: already delivered\n");
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "the retry is not forwarded"
    );
    let lines = gw.log_lines().await;
    let outcomes: Vec<_> = lines.iter().map(|l| l["outcome"].clone()).collect();
    assert_eq!(outcomes, ["forwarded", "duplicate"]);
    assert!(lines.iter().all(|l| l["event_id"] == "d-1"));
    assert!(lines.iter().all(|l| l["secret_index"] == 0));
    assert_eq!(lines[0]["upstream"], "recorder");
    assert_eq!(lines[0]["upstream_status"], 200);
    assert!(lines[1].get("upstream").is_none(), "never forwarded");
}
