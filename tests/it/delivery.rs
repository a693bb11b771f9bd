//! Durable delivery (issue 16), through real sockets, a real spool on disk and, for crashes, the
//! real binary killed with SIGKILL: acknowledged events survive a backend outage and gateway
//! crashes and arrive with their Idempotency-Key; 410 is dead at once; Retry-After is honoured;
//! the breaker stops attempts; replay and purge work on the admin listener and the CLI; a full
//! spool answers 503 with Retry-After. Backoffs are milliseconds, so no test sleeps for seconds
//! (the Retry-After test waits the one second it asks for).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request the backend received.
#[derive(Clone, Debug)]
struct Hit {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

type Script = Arc<dyn Fn(usize, &Hit) -> (u16, Vec<(&'static str, String)>) + Send + Sync>;

/// A backend whose answers a test scripts: `script(n, hit)` for the n-th request (0-based).
struct Backend {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Backend {
    async fn start(script: Script) -> Backend {
        Self::start_on("127.0.0.1:0".parse().unwrap(), script).await
    }

    async fn start_on(addr: SocketAddr, script: Script) -> Backend {
        Self::start_slow(addr, script, Duration::ZERO).await
    }

    /// Like [`Backend::start_on`], each answer `delay` after the request arrived.
    async fn start_slow(addr: SocketAddr, script: Script, delay: Duration) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = Arc::clone(&hits);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (hits, script) = (Arc::clone(&recorded), Arc::clone(&script));
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (hits, script) = (Arc::clone(&hits), Arc::clone(&script));
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let hit = Hit {
                                at: Instant::now(),
                                headers: parts.headers,
                                body,
                            };
                            let n = {
                                let mut hits = hits.lock().unwrap();
                                hits.push(hit.clone());
                                hits.len() - 1
                            };
                            let (status, headers) = script(n, &hit);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
                            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            for (name, value) in headers {
                                response.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until every one of `bodies` has arrived at least once, then returns the hits.
    async fn wait_for_bodies<'a>(
        &self,
        bodies: impl IntoIterator<Item = &'a String> + Clone,
    ) -> Vec<Hit> {
        self.wait_for("every acknowledged event", |hits| {
            let seen: HashSet<&[u8]> = hits.iter().map(|h| &h.body[..]).collect();
            bodies
                .clone()
                .into_iter()
                .all(|b| seen.contains(b.as_bytes()))
        })
        .await
    }

    /// Waits until `done(hits)` holds (at most 20 s), then returns the hits.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            assert!(
                Instant::now() < until,
                "backend never saw {what}: {} hits",
                hits.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn always(status: u16) -> Script {
    Arc::new(move |_, _| (status, vec![]))
}

/// Fast retries and a breaker that does not get in the way unless a test wants it to.
fn config(backend: SocketAddr, extra_delivery: &str, spool: &str) -> String {
    format!(
        r#"
admin:
  bind: 127.0.0.1:0
  token: "test-admin-token-0123456789"
access_log: off
spool:
  path: spool
{spool}
upstreams:
  backend:
    url: http://{backend}
    connect_timeout: 500ms
    delivery:
      backoff: {{ initial: 10ms, max: 100ms }}
      breaker_cooldown: 50ms
{extra_delivery}
routes:
  - name: queued
    path: /hooks/queued
    upstream: backend
    delivery: queue
  - name: github
    path: /hooks/github
    upstream: backend
    delivery: queue
    ack_status: 202
    verify:
      provider: github
      secrets: ["It's a Secret to Everybody"]
"#
    )
}

const LISTENER: &str = r#"
listeners:
  - name: plain
    bind: 127.0.0.1:0
"#;

async fn gateway(yaml: &str) -> TestGateway {
    TestGateway::start_with_listeners(LISTENER, yaml).await
}

async fn post(
    gw: &TestGateway,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap) {
    let (status, headers, _) = send(
        &plain_client(),
        "POST",
        &gw.http_url(path),
        headers,
        body.to_string(),
    )
    .await
    .unwrap();
    (status, headers)
}

async fn admin(gw: &TestGateway, method: &str, target: &str) -> (u16, serde_json::Value) {
    let addr = gw.gateway.as_ref().unwrap().admin_addr().unwrap();
    let (status, _, body) = send(
        &plain_client(),
        method,
        &format!("http://{addr}{target}"),
        &[("authorization", "Bearer test-admin-token-0123456789")],
        Bytes::new(),
    )
    .await
    .unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

async fn wait_state(gw: &TestGateway, state: &str, n: usize) -> Vec<serde_json::Value> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, listed) = admin(gw, "GET", &format!("/queue/events?state={state}")).await;
        assert_eq!(status, 200, "{listed}");
        let events = listed["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= n {
            return events;
        }
        assert!(Instant::now() < until, "never {n} {state} events: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on now, that a backend can bind later.
async fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn header<'a>(hit: &'a Hit, name: &str) -> &'a str {
    hit.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_for_the_whole_intake_then_up_gets_every_acknowledged_event_with_its_key() {
    let port = free_port().await;
    let gw = gateway(&config(port, "", "")).await;
    const N: usize = 60;
    let mut acked = HashSet::new();
    for i in 0..N {
        let body = format!("{{\"event\":{i}}}");
        let (status, _) = post(
            &gw,
            "/hooks/queued",
            &body,
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!(
            status, 200,
            "queued events are acknowledged with 200 by default"
        );
        acked.insert(body);
    }
    // Retries against the closed port meanwhile are spent; the events stay pending.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pending = wait_state(&gw, "pending", N).await;
    assert_eq!(pending.len(), N);

    let backend = Backend::start_on(port, always(200)).await;
    let hits = backend
        .wait_for("every event", |hits| {
            hits.iter()
                .map(|h| h.body.clone())
                .collect::<HashSet<_>>()
                .len()
                >= N
        })
        .await;
    let mut keys: HashMap<Bytes, HashSet<String>> = HashMap::new();
    for hit in &hits {
        let body = std::str::from_utf8(&hit.body).unwrap().to_string();
        assert!(
            acked.contains(&body),
            "only acknowledged events arrive: {body}"
        );
        assert_eq!(
            header(hit, "content-type"),
            "application/json",
            "received headers pass"
        );
        assert_eq!(header(hit, "x-hookgate-route"), "queued");
        assert!(!header(hit, "x-hookgate-attempt").is_empty());
        assert!(["initial", "retry"].contains(&header(hit, "x-hookgate-trigger")));
        let key = header(hit, "idempotency-key");
        assert_eq!(
            key.len(),
            32,
            "a time-ordered id when the provider gives none: {key}"
        );
        keys.entry(hit.body.clone())
            .or_default()
            .insert(key.to_string());
    }
    assert_eq!(
        keys.len(),
        N,
        "every acknowledged event arrived, and nothing else"
    );
    assert!(
        keys.values().all(|k| k.len() == 1),
        "one key per event across attempts"
    );
    let delivered = wait_state(&gw, "delivered", N).await;
    assert_eq!(delivered.len(), N);
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics["hookgate_queue_events{route=\"queued\",state=\"delivered\"}"],
        N as f64
    );
    assert!(metrics.contains_key("hookgate_spool_bytes"));
    assert!(metrics
        .keys()
        .any(|k| k.starts_with("hookgate_delivery_attempts_total{")
            && k.contains("result=\"retry\"")));
}

/// GitHub's documented example: this secret and body give this signature.
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_providers_delivery_id_is_the_key_and_its_retry_is_not_spooled_again() {
    let backend = Backend::start(always(200)).await;
    let gw = gateway(&config(backend.addr, "", "")).await;
    let headers = [
        ("x-hub-signature-256", GITHUB_SIGNATURE),
        ("x-github-delivery", "gh-42"),
    ];
    let (status, _) = post(&gw, "/hooks/github", "Hello, World!", &headers).await;
    assert_eq!(status, 202, "ack_status");
    let (status, _) = post(&gw, "/hooks/github", "Hello, World!", &headers).await;
    assert_eq!(
        status, 200,
        "a duplicate of a spooled event is answered 2xx"
    );
    let hits = backend.wait_for("the event", |h| !h.is_empty()).await;
    assert_eq!(header(&hits[0], "idempotency-key"), "gh-42");
    assert_eq!(header(&hits[0], "x-hookgate-verified"), "github");
    assert_eq!(header(&hits[0], "x-hookgate-attempt"), "1");
    assert_eq!(header(&hits[0], "x-hookgate-trigger"), "initial");
    assert_eq!(&hits[0].body[..], b"Hello, World!");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(backend.hits().len(), 1, "spooled once, delivered once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_is_dead_at_once_replay_delivers_it_and_purge_removes_it() {
    // 410 until the test flips the switch.
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&gone);
    let backend = Backend::start(Arc::new(move |_, _| {
        (
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                410
            } else {
                200
            },
            vec![],
        )
    }))
    .await;
    let gw = gateway(&config(backend.addr, "", "")).await;
    assert_eq!(post(&gw, "/hooks/queued", "gone-1", &[]).await.0, 200);
    let dead = wait_state(&gw, "dead", 1).await;
    assert_eq!(dead[0]["attempts"], 1, "no retry after 410: {dead:?}");
    assert_eq!(dead[0]["last_status"], 410);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(backend.hits().len(), 1);

    // The admin queue needs the token.
    let addr = gw.gateway.as_ref().unwrap().admin_addr().unwrap();
    let (status, _, _) = send(
        &plain_client(),
        "GET",
        &format!("http://{addr}/queue/events"),
        &[],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 401);

    let id = dead[0]["id"].as_str().unwrap().to_string();
    let (status, shown) = admin(&gw, "GET", &format!("/queue/events/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["body_bytes"], 6);
    assert!(shown.get("body").is_none(), "show never prints the body");

    gone.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, replayed) = admin(&gw, "POST", "/queue/replay?state=dead").await;
    assert_eq!((status, replayed["replayed"].as_u64()), (200, Some(1)));
    let hits = backend.wait_for("the replay", |h| h.len() >= 2).await;
    assert_eq!(header(&hits[1], "x-hookgate-trigger"), "replay");
    assert_eq!(header(&hits[1], "x-hookgate-attempt"), "2");
    assert_eq!(
        header(&hits[1], "idempotency-key"),
        header(&hits[0], "idempotency-key")
    );
    wait_state(&gw, "delivered", 1).await;

    let (status, purged) = admin(&gw, "POST", "/queue/purge?state=delivered").await;
    assert_eq!((status, purged["purged"].as_u64()), (200, Some(1)));
    let (_, listed) = admin(&gw, "GET", "/queue/events").await;
    assert_eq!(listed["events"].as_array().map(Vec::len), Some(0));

    // The CLI, while the gateway holds the spool, goes through the admin listener (the config
    // names the port it got, as a real one names a fixed port).
    gw.edit_config(|text| {
        text.replace(
            "bind: 127.0.0.1:0\n  token",
            &format!("bind: {addr}\n  token"),
        )
    });
    assert_eq!(post(&gw, "/hooks/queued", "again", &[]).await.0, 200);
    wait_state(&gw, "dead", 0).await;
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["queue", "ls", "-c"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(
        listed["events"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    // Stopped, the CLI opens the spool itself.
    let config_path = gw.config_path();
    let dir = gw.shutdown().await;
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["queue", "purge", "--state", "delivered", "-c"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let purged: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(purged["purged"], 1, "{purged}");
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_is_retried_after_it_and_not_before() {
    let backend = Backend::start(Arc::new(|n, _| {
        if n == 0 {
            (503, vec![("retry-after", "1".to_string())])
        } else {
            (200, vec![])
        }
    }))
    .await;
    let gw = gateway(
        &config(backend.addr, "      max_attempts: 5\n", "").replace("max: 100ms", "max: 5s"),
    )
    .await;
    assert_eq!(post(&gw, "/hooks/queued", "later", &[]).await.0, 200);
    let hits = backend.wait_for("the retry", |h| h.len() >= 2).await;
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before Retry-After"
    );
    assert_eq!(header(&hits[1], "x-hookgate-trigger"), "retry");
    assert_eq!(header(&hits[1], "x-hookgate-attempt"), "2");
}

/// An upstream's `concurrency` holds however its slots are handed on: with 2 allowed and a
/// backend that takes 60 ms per answer, 16 events posted at once are delivered, never more
/// than 2 at the backend at a time, and 2 at a time for most of it (finished attempts pass
/// their slot straight to the next due event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds_while_finished_attempts_pass_their_slots_on() {
    let delay = Duration::from_millis(60);
    let backend = Backend::start_slow("127.0.0.1:0".parse().unwrap(), always(200), delay).await;
    let gw = gateway(&config(backend.addr, "      concurrency: 2\n", "")).await;
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..16 {
        let url = gw.http_url("/hooks/queued");
        posts.spawn(async move {
            let client = plain_client();
            send(&client, "POST", &url, &[], format!("c{i}"))
                .await
                .unwrap()
                .0
        });
    }
    while let Some(status) = posts.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let hits = backend
        .wait_for("all 16 events", |hits| hits.len() >= 16)
        .await;
    // Each request is at the backend from its arrival until its answer, `delay` later; the
    // next one on the same slot arrives only after that answer reached the gateway.
    let busy = |at: Instant| {
        hits.iter()
            .filter(|h| h.at <= at && at < h.at + delay)
            .count()
    };
    let most = hits.iter().map(|h| busy(h.at)).max().unwrap_or(0);
    assert_eq!(most, 2, "attempts at once, at most 2 allowed");
    let distinct: HashSet<Bytes> = hits.iter().map(|h| h.body.clone()).collect();
    assert_eq!(distinct.len(), 16, "every event delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_spends_no_attempts_on_a_failing_backend() {
    let backend = Backend::start(always(500)).await;
    let yaml = config(
        backend.addr,
        "      breaker_window: 4\n      breaker_failure_percent: 50\n      concurrency: 1\n",
        "",
    )
    .replace("breaker_cooldown: 50ms", "breaker_cooldown: 10m");
    let gw = gateway(&yaml).await;
    for i in 0..20 {
        assert_eq!(
            post(&gw, "/hooks/queued", &format!("e{i}"), &[]).await.0,
            200
        );
    }
    backend
        .wait_for("the attempts that open the breaker", |h| h.len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spent = backend.hits().len();
    assert!(
        spent <= 3,
        "the breaker opened after 2 failures of a window of 4: {spent} attempts"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        backend.hits().len(),
        spent,
        "an open breaker spends nothing"
    );
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics["hookgate_delivery_breaker_state{upstream=\"backend\"}"],
        1.0
    );
    assert_eq!(
        wait_state(&gw, "pending", 20).await.len(),
        20,
        "nothing is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_with_retry_after_and_keeps_what_it_acknowledged() {
    let port = free_port().await;
    let gw = gateway(&config(port, "", "  max_bytes: 4KiB")).await;
    let mut acked = 0;
    let mut refused = None;
    for i in 0..20 {
        let (status, headers) = post(&gw, "/hooks/queued", &format!("{i:0>600}"), &[]).await;
        match status {
            200 => acked += 1,
            503 => {
                refused = Some(headers);
                break;
            }
            other => panic!("{other}"),
        }
    }
    let headers = refused.expect("the spool filled up");
    assert!(headers.contains_key("retry-after"));
    assert!(acked >= 2, "{acked}");
    assert_eq!(wait_state(&gw, "pending", acked).await.len(), acked);
}

#[test]
fn delivery_config_mistakes_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let check = |yaml: &str| {
        std::fs::write(&path, format!("{LISTENER}{yaml}")).unwrap();
        hookgate::config::load(&path)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let base = "upstreams:\n  b:\n    url: http://127.0.0.1:1\nroutes:\n  - name: r\n    path: /r\n    upstream: b\n";
    let e = check(&format!("{base}    delivery: queue\n"));
    assert!(
        e.contains(":12:15: routes[0].delivery: delivery: queue needs a spool"),
        "{e}"
    );
    let e = check(&format!(
        "spool: {{ path: s }}\n{base}    delivery: queue\n    ack_status: 302\n"
    ));
    assert!(
        e.contains("routes[0].ack_status: must be a 2xx status"),
        "{e}"
    );
    let e = check(&format!(
        "spool: {{ path: s }}\n{base}    delivery: later\n"
    ));
    assert!(
        e.contains("routes[0].delivery: \"later\": expected direct or queue"),
        "{e}"
    );
    let e = check(&base.replace(
        "127.0.0.1:1\n",
        "127.0.0.1:1\n    delivery: { backoff: { initial: 5s, max: 1s } }\n",
    ));
    assert!(
        e.contains("upstreams.b.delivery.backoff.max: must not be shorter"),
        "{e}"
    );
    let e = check(&base.replace(
        "127.0.0.1:1\n",
        "127.0.0.1:1\n    delivery: { retries: 3 }\n",
    ));
    assert!(e.contains("unknown field"), "{e}");
    let e = check(&format!(
        "admin: {{ bind: 127.0.0.1:0, token: short }}\n{base}"
    ));
    assert!(e.contains("admin.token: must be at least 16"), "{e}");
    assert!(!e.contains("short"), "the token is never printed: {e}");
}

/// The config of the tests that run the binary as its own process: one queued route to
/// `backend`, with `limits` and the upstream's `delivery` options (flow-style YAML bodies).
fn process_config(backend: SocketAddr, limits: &str, delivery: &str) -> String {
    format!(
        "{LISTENER}limits: {{ {limits} }}\naccess_log: off\nspool: {{ path: spool }}\n\
         upstreams:\n  backend:\n    url: http://{backend}\n    delivery: {{ {delivery} }}\n\
         routes:\n  - name: queued\n    path: /hooks/queued\n    upstream: backend\n    delivery: queue\n"
    )
}

/// A config for the process tests in a fresh folder: one worker, quick retries, and a backend
/// address nothing listens on yet. Returns that address, the folder and the config's path.
async fn queued_to_a_closed_port() -> (SocketAddr, tempfile::TempDir, std::path::PathBuf) {
    let backend_addr = free_port().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gateway.yaml");
    let yaml = process_config(
        backend_addr,
        "worker_threads: 1",
        "backoff: { initial: 10ms, max: 50ms }",
    );
    std::fs::write(&config_path, yaml).unwrap();
    (backend_addr, dir, config_path)
}

/// Starts the real binary on `config`; its stderr goes to `log`. Returns it and the address of
/// its `plain` listener. The caller kills and waits for it.
async fn spawn_gateway(
    config: &std::path::Path,
    log: &std::path::Path,
) -> (std::process::Child, SocketAddr) {
    spawn_gateway_limited(config, log, None).await
}

/// As [`spawn_gateway`]; with `max_file_kib`, through bash's `ulimit -f` (RLIMIT_FSIZE), so the
/// kernel refuses any write past that size in any file the gateway writes (EFBIG, with SIGXFSZ
/// ignored): a real disk error at a size the test chooses.
#[allow(clippy::zombie_processes)]
async fn spawn_gateway_limited(
    config: &std::path::Path,
    log: &std::path::Path,
    max_file_kib: Option<u64>,
) -> (std::process::Child, SocketAddr) {
    let mut command = match max_file_kib {
        None => std::process::Command::new(env!("CARGO_BIN_EXE_hookgate")),
        Some(kib) => {
            let mut bash = std::process::Command::new("bash");
            bash.args([
                "-c",
                &format!("trap '' XFSZ; ulimit -f {kib} && exec \"$0\" \"$@\""),
                env!("CARGO_BIN_EXE_hookgate"),
            ]);
            bash
        }
    };
    let child = command
        .args(["run", "-c"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["msg"] == "listening" && v["listener"] == "plain" {
                return (child, v["addr"].as_str().unwrap().parse().unwrap());
            }
        }
        assert!(Instant::now() < until, "the gateway did not start: {text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_intake_and_delivery_twenty_times_loses_no_acknowledged_event() {
    // A slow backend, so kills land while attempts are under way too.
    let backend = Backend::start_slow(
        "127.0.0.1:0".parse().unwrap(),
        always(200),
        Duration::from_millis(15),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gateway.yaml");
    let yaml = process_config(
        backend.addr,
        "worker_threads: 1",
        // Enough attempts at once for the final drain of a few thousand events to take a few
        // seconds against this backend.
        "backoff: { initial: 10ms, max: 50ms }, concurrency: 32",
    );
    std::fs::write(&config_path, yaml).unwrap();
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut errors = 0usize;
    for round in 0..20u64 {
        let log = dir.path().join(format!("stderr-{round}.log"));
        let (mut child, addr) = spawn_gateway(&config_path, &log).await;
        let stop_at = Instant::now() + Duration::from_millis(40 + (round * 37) % 90);
        let mut tasks = Vec::new();
        for t in 0..6 {
            let acked = Arc::clone(&acked);
            tasks.push(tokio::spawn(async move {
                let client = plain_client();
                let mut errors = 0;
                let mut i = 0;
                while Instant::now() < stop_at + Duration::from_millis(30) {
                    let body = format!("r{round}-t{t}-{i}");
                    i += 1;
                    let url = format!("http://{addr}/hooks/queued");
                    match send(&client, "POST", &url, &[], body.clone()).await {
                        Ok((200, _, _)) => {
                            acked.lock().unwrap().insert(body);
                        }
                        _ => {
                            errors += 1;
                            break;
                        }
                    }
                }
                errors
            }));
        }
        tokio::time::sleep_until(stop_at.into()).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for task in tasks {
            errors += task.await.unwrap();
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the loop acknowledged {} events",
        acked.len()
    );
    assert!(errors > 0, "some requests were cut off by the kills");
    let log = dir.path().join("stderr-final.log");
    let (mut child, _) = spawn_gateway(&config_path, &log).await;
    let hits = backend.wait_for_bodies(&acked).await;
    child.kill().unwrap();
    child.wait().unwrap();
    // At least once: duplicates are allowed, and they carry the same key.
    let mut keys: HashMap<Bytes, HashSet<String>> = HashMap::new();
    for hit in &hits {
        keys.entry(hit.body.clone())
            .or_default()
            .insert(header(hit, "idempotency-key").to_string());
    }
    assert!(keys.values().all(|k| k.len() == 1), "one key per event");
    eprintln!(
        "acknowledged {}, refused or cut off {errors}, attempts seen {}, distinct events {}",
        acked.len(),
        hits.len(),
        keys.len()
    );
}

/// A write error on the spool (the kernel's EFBIG past RLIMIT_FSIZE, on a real file) fails the
/// commit: that request and every one after it gets 503, nothing refused is ever delivered,
/// and every event acknowledged before it is delivered after a restart without the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_error_on_commit_answers_503_from_then_on_and_loses_no_acknowledged_event() {
    let (backend_addr, dir, config_path) = queued_to_a_closed_port().await;
    let log = dir.path().join("stderr-limited.log");
    let (mut child, addr) = spawn_gateway_limited(&config_path, &log, Some(4096)).await;
    let client = plain_client();
    let url = format!("http://{addr}/hooks/queued");
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let pad = "x".repeat(32 << 10);
    for i in 0..400 {
        let body = format!("{{\"n\":{i},\"pad\":\"{pad}\"}}");
        let (status, _, _) = send(&client, "POST", &url, &[], body.clone())
            .await
            .unwrap();
        match status {
            200 => acked.push(body),
            503 => {
                refused.push(body);
                break;
            }
            other => panic!("event {i}: status {other}"),
        }
    }
    assert!(
        !refused.is_empty(),
        "4 MiB never filled: {} acknowledged",
        acked.len()
    );
    assert!(
        acked.len() > 10,
        "only {} acknowledged before the error",
        acked.len()
    );
    // After a failed commit nothing more is acknowledged, even an event that would fit.
    for i in 0..3 {
        let body = format!("{{\"small\":{i}}}");
        let (status, _, _) = send(&client, "POST", &url, &[], body.clone())
            .await
            .unwrap();
        assert_eq!(status, 503, "after the disk error");
        refused.push(body);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.lines()
            .any(|l| l.contains("spool") && l.to_lowercase().contains("large")),
        "the log says why: {text}"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let backend = Backend::start_on(backend_addr, always(200)).await;
    let (mut child, _) = spawn_gateway(&config_path, &dir.path().join("stderr-after.log")).await;
    backend.wait_for_bodies(&acked).await;
    // Time for anything else in the spool to be attempted too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = backend.hits();
    child.kill().unwrap();
    child.wait().unwrap();
    for body in &refused {
        assert!(
            hits.iter().all(|h| h.body != body.as_bytes()),
            "an event answered 503 was delivered"
        );
    }
    eprintln!(
        "disk error after {} acknowledged events; {} refused; {} attempts seen",
        acked.len(),
        refused.len(),
        hits.len()
    );
}

/// A crash in the middle of a commit's write leaves part of a record at the end of the last
/// segment. The restarted gateway cuts it off, delivers every event acknowledged before it,
/// and goes on acknowledging and delivering after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_last_write_is_cut_off_and_every_acknowledged_event_is_delivered() {
    let (backend_addr, dir, config_path) = queued_to_a_closed_port().await;
    let (mut child, addr) = spawn_gateway(&config_path, &dir.path().join("stderr-1.log")).await;
    let client = plain_client();
    let url = format!("http://{addr}/hooks/queued");
    let mut acked = Vec::new();
    for i in 0..30 {
        let body = format!("{{\"before\":{i}}}");
        let (status, _, _) = send(&client, "POST", &url, &[], body.clone())
            .await
            .unwrap();
        assert_eq!(status, 200);
        acked.push(body);
    }
    // Each failed attempt says so on stderr, with when the next one is due.
    let failed = attempt_lines(&dir.path().join("stderr-1.log"), |lines| {
        lines.iter().any(|l| l["result"] == "retry")
    })
    .await;
    let line = failed.iter().find(|l| l["result"] == "retry").unwrap();
    assert_eq!(line["level"], "info");
    assert_eq!(line["msg"], "delivery attempt");
    assert_eq!(
        (line["route"].as_str(), line["upstream"].as_str()),
        (Some("queued"), Some("backend"))
    );
    assert_eq!(line["event_id"].as_str().map(str::len), Some(32), "{line}");
    assert_eq!(
        line["idempotency_key"], line["event_id"],
        "no provider id: the event's own"
    );
    assert!(line["attempt"].as_u64().is_some_and(|n| n >= 1), "{line}");
    assert_eq!(
        line["status"],
        serde_json::Value::Null,
        "nothing answered: {line}"
    );
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("connect")),
        "{line}"
    );
    assert!(
        line["next_retry"]
            .as_str()
            .is_some_and(|t| humantime::parse_rfc3339(t).is_ok()),
        "{line}"
    );
    child.kill().unwrap(); // SIGKILL: the backend was down, all 30 are pending
    child.wait().unwrap();

    // What a crash mid-write leaves: the start of a record (a header that promises more bytes
    // than follow, and some of them), as a commit never acknowledged would.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.pop().expect("a segment file");
    let whole = std::fs::metadata(&last).unwrap().len();
    let mut torn = Vec::new();
    torn.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    torn.extend_from_slice(&5000u32.to_be_bytes());
    torn.push(1);
    torn.extend_from_slice(&[0xab; 700]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut file, &torn).unwrap();
    drop(file);

    let backend = Backend::start_on(backend_addr, always(200)).await;
    let log = dir.path().join("stderr-2.log");
    let (mut child, addr) = spawn_gateway(&config_path, &log).await;
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        whole,
        "the torn record is cut off"
    );
    let url = format!("http://{addr}/hooks/queued");
    for i in 0..5 {
        let body = format!("{{\"after\":{i}}}");
        let (status, _, _) = send(&client, "POST", &url, &[], body.clone())
            .await
            .unwrap();
        assert_eq!(status, 200);
        acked.push(body);
    }
    backend.wait_for_bodies(&acked).await;
    let delivered = attempt_lines(&log, |lines| {
        lines.iter().filter(|l| l["result"] == "delivered").count() >= acked.len()
    })
    .await;
    let line = delivered
        .iter()
        .find(|l| l["result"] == "delivered")
        .unwrap();
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["next_retry"], serde_json::Value::Null, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("\"level\":\"error\""),
        "a torn tail is not an error: {text}"
    );
}

/// The delivery attempt lines (`kind: delivery`) in a gateway's stderr, once `enough` says
/// they are (they are written in batches, within a tenth of a second).
async fn attempt_lines(
    log: &std::path::Path,
    enough: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &serde_json::Value| l["kind"] == "delivery")
            .collect();
        if enough(&lines) {
            return lines;
        }
        assert!(Instant::now() < until, "no such attempt lines: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_events_make_room_in_a_full_spool_but_pending_ones_never_do() {
    let backend = Backend::start(always(200)).await;
    let gw = gateway(&config(backend.addr, "", "  max_bytes: 8KiB")).await;
    // Four times what the spool holds, each delivered before the next arrives.
    for i in 0..40 {
        let (status, _) = post(&gw, "/hooks/queued", &format!("{i:0>600}"), &[]).await;
        assert_eq!(status, 200, "event {i}: delivered events give way");
        backend.wait_for("the event", |h| h.len() > i).await;
        wait_state(&gw, "delivered", 1).await;
    }
    let (_, listed) = admin(&gw, "GET", "/queue/events?state=delivered").await;
    let kept = listed["events"].as_array().map_or(0, Vec::len);
    assert!(
        kept > 0 && kept < 40,
        "the oldest delivered went, some remain: {kept}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_delivery_exits_within_the_drain_and_the_restart_delivers_the_rest() {
    let backend = Backend::start_slow(
        "127.0.0.1:0".parse().unwrap(),
        always(200),
        Duration::from_millis(300),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("gateway.yaml");
    let yaml = process_config(
        backend.addr,
        "worker_threads: 1, drain_timeout: 1s",
        "concurrency: 2",
    );
    std::fs::write(&config_path, yaml).unwrap();
    let (mut child, addr) = spawn_gateway(&config_path, &dir.path().join("first.log")).await;
    for i in 0..20 {
        let url = format!("http://{addr}/hooks/queued");
        let (status, _, _) = send(&plain_client(), "POST", &url, &[], format!("t{i}"))
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    backend
        .wait_for("the first attempts", |h| !h.is_empty())
        .await;
    let stopped_at = Instant::now();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "exited within the drain"
    );
    assert!(
        backend.hits().len() < 20,
        "not everything was delivered before the stop"
    );
    let (mut child, _) = spawn_gateway(&config_path, &dir.path().join("second.log")).await;
    backend
        .wait_for("all 20 events", |hits| {
            hits.iter()
                .map(|h| h.body.clone())
                .collect::<HashSet<_>>()
                .len()
                == 20
        })
        .await;
    child.kill().unwrap();
    child.wait().unwrap();
}
