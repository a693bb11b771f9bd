//! The `hookgate` binary as an operator uses it: `check` on good and broken configs (the message
//! names file, line, column and field path), `version`, `demo` on the shipped config, and `run`
//! draining an in-flight request on SIGTERM before it exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

fn check(yaml: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "listeners:
  - name: internal
    bind: 127.0.0.1:8080
upstreams:
  orders:
    url: http://127.0.0.1:3000
    timeout: 15s
routes:
  - name: github
    path: /hooks/github
    upstream: orders
  - name: rest
    path: /hooks/*
    upstream: orders
";

#[test]
fn check_accepts_a_good_config_and_the_shipped_example_parses() {
    let (ok, stdout, stderr) = check(GOOD, &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("ok (1 listeners, 1 upstreams, 2 routes)"),
        "{stdout}"
    );
}

/// Each broken config must fail with exit 1 and a message naming `file:line:col: field: why`.
#[test]
fn check_names_line_column_and_field_of_each_mistake() {
    let cases: &[(&str, &str, &str)] = &[
        (
            &GOOD.replace(
                "upstream: orders\n  - name: rest",
                "upstream: ordrs\n  - name: rest",
            ),
            ":11:15: routes[0].upstream",
            "no upstream named \"ordrs\"",
        ),
        (
            &GOOD.replace("timeout: 15s", "timeout: 15"),
            ":7:14: upstreams.orders.timeout",
            "no unit",
        ),
        (
            &GOOD.replace("    bind: 127", "    bnd: 127"),
            ":3:5: listeners[0].bnd",
            "unknown field",
        ),
        (
            &GOOD.replace("name: rest", "name: github"),
            ":12:11: routes[1].name",
            "duplicate route name",
        ),
        (
            &GOOD.replace("path: /hooks/*", "path: /hooks/github"),
            ":13:11: routes[1].path",
            "can never match",
        ),
        (
            &GOOD.replace("url: http://127.0.0.1:3000", "url: ftp://x"),
            ":6:10: upstreams.orders.url",
            "scheme",
        ),
        (
            &GOOD.replace("url: http://127.0.0.1:3000", "url: \"${ORDERS_URL}\""),
            ":6:10: upstreams.orders.url",
            "ORDERS_URL is not set",
        ),
        (
            &GOOD.replace(
                "bind: 127.0.0.1:8080",
                "bind: 127.0.0.1:8080\n    tls: { cert: missing.crt, key: missing.key }",
            ),
            ":4:18: listeners[0].tls.cert",
            "missing.crt",
        ),
        (
            &format!("{GOOD}limits:\n  max_body: 1TiB\n"),
            ":16:13: limits.max_body",
            "size unit",
        ),
        (
            &GOOD.replace("path: /hooks/github", "path: /hooks/../github"),
            ":10:11: routes[0].path",
            "segments",
        ),
    ];
    for (yaml, location, why) in cases {
        let (ok, _, stderr) = check(yaml, &[]);
        assert!(!ok, "should fail: {location}");
        assert!(
            stderr.contains(&format!("gateway.yaml{location}: ")),
            "expected {location} in: {stderr}"
        );
        assert!(stderr.contains(why), "expected {why:?} in: {stderr}");
    }
}

#[test]
fn check_expands_environment_variables_and_never_prints_their_values() {
    let yaml = GOOD.replace("url: http://127.0.0.1:3000", "url: \"${ORDERS_URL}\"");
    let (ok, _, stderr) = check(&yaml, &[("ORDERS_URL", "http://127.0.0.1:3001")]);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = check(&yaml, &[("ORDERS_URL", "not a url with s3cr3t")]);
    assert!(!ok);
    assert!(stderr.contains("upstreams.orders.url"), "{stderr}");
    assert!(
        stderr.contains("${ORDERS_URL}"),
        "the reference is shown: {stderr}"
    );
    assert!(!stderr.contains("s3cr3t"), "the value is not: {stderr}");
    // Found by the config fuzz target: a secret put where an address belongs.
    let yaml = GOOD.replace("bind: 127.0.0.1:8080", "bind: \"${LEAKY}\"");
    let (ok, _, stderr) = check(&yaml, &[("LEAKY", "hunter2-very-secret")]);
    assert!(!ok);
    assert!(
        stderr.contains(":3:11: listeners[0].bind: \"${LEAKY}\" is not an address"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

/// `hookgate demo` on the shipped gateway.yaml (its ports moved to free ones) writes a dev
/// certificate, with which the shipped config passes `hookgate check`, and serves the
/// catch-all route through its echo backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_makes_a_dev_certificate_and_serves_the_shipped_config_through_its_echo_backend() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml")).unwrap();
    let echo = free_port();
    let mut yaml = shipped.clone();
    for (from, to) in [
        ("bind: 127.0.0.1:8443", "bind: 127.0.0.1:0".to_string()),
        ("bind: 127.0.0.1:8080", "bind: 127.0.0.1:0".to_string()),
        ("bind: 127.0.0.1:9090", "bind: 127.0.0.1:0".to_string()),
        (
            "url: http://127.0.0.1:3000",
            format!("url: http://127.0.0.1:{echo}"),
        ),
    ] {
        assert!(yaml.contains(from), "gateway.yaml no longer has {from}");
        yaml = yaml.replace(from, &to);
    }
    std::fs::write(dir.path().join("gateway.yaml"), &yaml).unwrap();
    let events = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["demo", "-c"])
        .arg(dir.path().join("gateway.yaml"))
        .args(["--echo", &format!("127.0.0.1:{echo}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&events).unwrap())
        .spawn()
        .unwrap();
    let mut internal = None;
    for _ in 0..2000 {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        internal = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["msg"] == "listening" && e["listener"] == "internal")
            .and_then(|e| e["addr"].as_str().map(str::to_string));
        if internal.is_some() || child.try_wait().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let Some(internal) = internal else {
        let _ = child.kill();
        panic!("hookgate demo did not start: {text}");
    };
    assert!(
        text.contains("wrote a self-signed development certificate"),
        "{text}"
    );
    let answer = send(
        &plain_client(),
        "POST",
        &format!("http://{internal}/hooks/try"),
        &[],
        "hello",
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (status, _, body) = answer.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["echo"], "hookgate demo backend");
    assert_eq!(echoed["body"], "hello");

    // The shipped config itself (its own ports) is valid with that certificate.
    std::fs::write(dir.path().join("gateway.yaml"), shipped).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(dir.path().join("gateway.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hookgate {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight_then_exits_zero() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\naccess_log: {}\nupstreams:\n  slow:\n    url: http://{}\nroutes:\n  - name: slow\n    path: /slow\n    upstream: slow\n",
        log.display(),
        upstream.addr
    );
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary says where it listens; port 0 means we must read it.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut plain = None;
    let mut admin = None;
    let mut lines = stderr.lines();
    while plain.is_none() || admin.is_none() {
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        match line["listener"].as_str() {
            Some("plain") => plain = Some(line["addr"].as_str().unwrap().to_string()),
            Some("admin") => admin = Some(line["addr"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    let (plain, admin) = (plain.unwrap(), admin.unwrap());
    let client = plain_client();
    let url = format!("http://{plain}/slow");
    let in_flight = tokio::spawn(async move { send(&client, "POST", &url, &[], "order #1").await });
    tokio::time::sleep(Duration::from_millis(300)).await; // the upstream now holds it for 2 s
    assert_eq!(upstream.seen().len(), 1);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Draining: not ready, and no new connections are accepted.
    let (ready, _, _) = send(
        &plain_client(),
        "GET",
        &format!("http://{admin}/readyz"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(ready, 503, "readyz turns 503 while draining");
    let refused = send(
        &plain_client(),
        "POST",
        &format!("http://{plain}/slow"),
        &[],
        "late",
    )
    .await;
    assert!(
        refused.is_err(),
        "no new requests are accepted while draining"
    );
    let (status, _, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(status, 200, "the in-flight request completes");
    assert_eq!(body, "upstream ok");
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.lines().count(),
        1,
        "the drained request was logged before exit: {logged}"
    );
    assert!(logged.contains("\"outcome\":\"forwarded\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_config_file_reloads_it_without_a_signal() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.yaml");
    let yaml = |path: &str| {
        format!(
            "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\naccess_log: off\nupstreams:\n  b:\n    url: http://{}\nroutes:\n  - name: r\n    path: {path}\n    upstream: b\n",
            upstream.addr
        )
    };
    std::fs::write(&config, yaml("/before")).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let plain = loop {
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["listener"] == "plain" {
            break line["addr"].as_str().unwrap().to_string();
        }
    };
    let status = |path: &'static str| {
        let url = format!("http://{plain}{path}");
        async move {
            send(&plain_client(), "POST", &url, &[], "x")
                .await
                .unwrap()
                .0
        }
    };
    assert_eq!(status("/before").await, 200);
    // Replace the file the way editors and Kubernetes do: write aside, rename over.
    let tmp = dir.path().join(".gateway.yaml.new");
    std::fs::write(&tmp, yaml("/after")).unwrap();
    std::fs::rename(&tmp, &config).unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if status("/after").await == 200 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new config was picked up within 5 s");
    assert_eq!(status("/before").await, 404);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap()
        .success());
}
