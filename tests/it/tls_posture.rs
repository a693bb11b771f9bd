//! TLS posture checked by a real scanner: sslyze (PyPI) must find a TLS listener compliant with
//! Mozilla's "intermediate" configuration. The chain is CA-signed (rcgen); the test CA is added
//! to the scanner's own Mozilla trust store inside its private virtualenv under `target/`,
//! which is the only way to give it a trusted chain without a public CA.

use std::process::Command;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslyze_finds_the_tls_listener_compliant_with_mozilla_intermediate() {
    let gw = TestGateway::start("upstreams:\n  b:\n    url: http://{upstream}\nroutes:\n  - name: r\n    path: /x\n    upstream: b\n").await;
    let sslyze = sslyze_with_ca(&gw.certs.ca_pem);
    let target = format!("localhost:{}", gw.tls_addr().port());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(sslyze)
            .args(["--mozilla_config=intermediate", &target])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("is compliant with Mozilla's \"intermediate\"")
            || report.contains("OK - Compliant"),
        "{report}"
    );
    assert!(!report.contains("FAILED - Not compliant"), "{report}");
    for refused in [
        "SSL 2.0 Cipher Suites",
        "SSL 3.0 Cipher Suites",
        "TLS 1.0 Cipher Suites",
        "TLS 1.1 Cipher Suites",
    ] {
        // "* SSL 2.0 Cipher Suites:\n     Attempted to connect using 7 cipher suites; the server rejected all cipher suites."
        let verdict = report
            .split(refused)
            .nth(1)
            .and_then(|s| s.lines().nth(1))
            .unwrap_or("");
        assert!(
            verdict.contains("the server rejected all cipher suites"),
            "{refused} must be rejected:\n{report}"
        );
    }
    gw.shutdown().await;
}

/// testssl.sh from Debian (installed here when missing, as root), told about the test CA.
fn testssl() -> &'static str {
    if Command::new("testssl").arg("--version").output().is_err() {
        let installed = Command::new("apt-get")
            .args(["install", "-y", "-qq", "testssl.sh"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            installed,
            "testssl.sh is needed: apt-get install testssl.sh"
        );
    }
    "testssl"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_nothing_rated_high_or_critical() {
    let gw = TestGateway::start("upstreams:\n  b:\n    url: http://{upstream}\nroutes:\n  - name: r\n    path: /x\n    upstream: b\n").await;
    let ca = gw.dir.path().join("test-ca.pem");
    std::fs::write(&ca, &gw.certs.ca_pem).unwrap();
    let report = gw.dir.path().join("testssl.json");
    let target = format!("localhost:{}", gw.tls_addr().port());
    let (tool, args_report, args_ca) = (testssl(), report.clone(), ca.clone());
    let status = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .args(["--quiet", "--color", "0", "--warnings", "off", "--add-ca"])
            .arg(&args_ca)
            .arg("--jsonfile")
            .arg(&args_report)
            .arg(&target)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(&report)
            .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&status.stdout))),
    )
    .unwrap();
    let offered = |id: &str| {
        findings.iter().any(|f| {
            f["id"] == id
                && f["finding"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("offered"))
        })
    };
    assert!(
        findings.len() > 20 && offered("TLS1_3") && offered("TLS1_2"),
        "the scan did not run through: {findings:#?}"
    );
    assert!(
        !offered("TLS1") && !offered("TLS1_1") && !offered("SSLv3"),
        "old protocols must not be offered"
    );
    let bad: Vec<_> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("HIGH" | "CRITICAL")))
        .collect();
    assert!(
        bad.is_empty(),
        "testssl.sh findings rated HIGH or above: {bad:#?}"
    );
    gw.shutdown().await;
}
