//! Secrets never leave: after signed, forged and token-carrying requests, a broken reload and a
//! failing `check`, nothing the gateway wrote (access log, its own stderr, /metrics, `check`
//! output) contains a secret, a signature header value or an Authorization value.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const TOKEN: &str = "gl-token-5f0c1e2d";
const BASIC: &str = "hookuser:hookpass-9c2b";
const BASIC_HEADER: &str = "Basic aG9va3VzZXI6aG9va3Bhc3MtOWMyYg==";
const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

fn config(upstream: std::net::SocketAddr) -> String {
    format!(
        r#"listeners:
  - name: plain
    bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
access_log: stdout
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: github
    path: /github
    upstream: backend
    verify: {{ provider: github, secrets: ["${{GH_SECRET}}"] }}
  - name: gitlab
    path: /gitlab
    upstream: backend
    verify: {{ provider: gitlab, secrets: ["${{GL_TOKEN}}"] }}
  - name: postmark
    path: /postmark
    upstream: backend
    verify: {{ provider: postmark, secrets: ["${{PM_BASIC}}"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_signature_or_authorization_value_appears_in_anything_written() {
    let upstream = RecordingUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, config(upstream.addr)).unwrap();
    let env = [
        ("GH_SECRET", GITHUB_SECRET),
        ("GL_TOKEN", TOKEN),
        ("PM_BASIC", BASIC),
    ];
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&path)
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read the listening lines to learn the ports.
    let mut early = Vec::new();
    let (mut plain, mut admin) = (None, None);
    let mut byte = [0u8; 1];
    while plain.is_none() || admin.is_none() {
        let mut line = Vec::new();
        while stderr.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let json: serde_json::Value = serde_json::from_slice(&line).unwrap();
        match json["listener"].as_str() {
            Some("plain") => plain = json["addr"].as_str().map(str::to_string),
            Some("admin") => admin = json["addr"].as_str().map(str::to_string),
            _ => {}
        }
        early.extend_from_slice(&line);
    }
    let (plain, admin) = (plain.unwrap(), admin.unwrap());
    let client = plain_client();
    let url = |p: &str| format!("http://{plain}{p}");
    let requests: &[Probe] = &[
        ("/github", &[("x-hub-signature-256", SIGNATURE)], 200),
        (
            "/github",
            &[(
                "x-hub-signature-256",
                "sha256=0000000000000000000000000000000000000000000000000000000000000000",
            )],
            401,
        ),
        ("/gitlab", &[("x-gitlab-token", TOKEN)], 200),
        (
            "/gitlab",
            &[("x-gitlab-token", "gl-token-wrong-guess")],
            401,
        ),
        ("/postmark", &[("authorization", BASIC_HEADER)], 200),
        (
            "/postmark",
            &[("authorization", "Basic d3Jvbmc6Z3Vlc3M=")],
            401,
        ),
    ];
    for (path, headers, want) in requests {
        let (status, _, _) = send(&client, "POST", &url(path), headers, "Hello, World!")
            .await
            .unwrap();
        assert_eq!(status, *want, "{path}");
    }
    // A reload with a broken verify block: its error is logged, the secret must not be.
    std::fs::write(
        &path,
        config(upstream.addr).replace("provider: gitlab", "provider: gitlabz"),
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, metrics) = send(&client, "GET", &format!("http://{admin}/metrics"), &[], "")
        .await
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let check = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .envs(env)
        .output()
        .unwrap();
    assert!(!check.status.success());

    let everything = [
        String::from_utf8_lossy(&early).into_owned(),
        rest.clone(),
        stdout.clone(),
        String::from_utf8_lossy(&metrics).into_owned(),
        String::from_utf8_lossy(&check.stdout).into_owned(),
        String::from_utf8_lossy(&check.stderr).into_owned(),
    ]
    .join("\n");
    assert_eq!(
        stdout.lines().count(),
        requests.len(),
        "one access-log line per request"
    );
    assert!(
        rest.contains("config reload failed"),
        "the reload error was logged: {rest}"
    );
    for needle in [
        GITHUB_SECRET,
        TOKEN,
        BASIC,
        "hookpass-9c2b",
        BASIC_HEADER,
        "aG9va3VzZXI6aG9va3Bhc3MtOWMyYg",
        SIGNATURE,
        "757107ea0eb2509fc",
        "gl-token-wrong-guess",
        "d3Jvbmc6Z3Vlc3M",
    ] {
        assert!(
            !everything.contains(needle),
            "{needle:?} leaked into:\n{everything}"
        );
    }
}
