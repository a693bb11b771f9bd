//! Conformance: the providers' official SDKs (PyPI and npm) sign, the running gateway judges. Every case
//! from `tests/conformance/sdk_cases.py` goes through a real TLS connection to its own route;
//! accepted cases must be forwarded (or answered, for handshakes, with the status and body the
//! provider's library gives when the case names them), refused ones must get the
//! route's failure status with the expected reason in the access log, and a replayed delivery
//! must not reach the backend twice. Prints a table: case, oracle, result.
//!
//! The SDKs live in a virtualenv under `target/`, created on first run from the pinned
//! `tests/conformance/requirements.txt`, so `cargo test` works on a fresh machine.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use base64::Engine;

/// The presets proven by the providers' libraries or published vectors (README, provider table).
const PROVEN: &[&str] = &[
    "github",
    "gitlab",
    "shopify",
    "slack",
    "stripe",
    "standard-webhooks",
    "svix",
    "clerk",
    "resend",
    "zoom",
    "paddle",
    "linear",
    "square",
    "twitch",
    "hubspot",
    "pagerduty",
    "twitter",
    "mailgun",
    "twilio",
    "sendgrid",
    "discord",
];

fn python_with_sdks() -> PathBuf {
    let requirements = include_str!("../conformance/requirements.txt");
    python_venv("conformance-venv", requirements).join("bin/python")
}

fn sdk_cases() -> Vec<serde_json::Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/conformance/sdk_cases.py"
    );
    let out = Command::new(python_with_sdks())
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_cases.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdk_signatures_are_accepted_and_tampered_ones_refused() {
    let cases = sdk_cases();
    assert!(
        cases.len() >= 150,
        "expected the full case list, got {}",
        cases.len()
    );
    // Every preset the README's provider table calls proven by a library or a vector has at
    // least one case accepted and one refused here.
    for provider in PROVEN {
        for expect in ["accept", "refuse"] {
            assert!(
                cases
                    .iter()
                    .any(|c| c["provider"] == *provider && c["expect"] == expect),
                "no {expect} case for {provider}"
            );
        }
    }
    let mut routes = String::from("upstreams:\n  backend:\n    url: http://{upstream}\nroutes:\n");
    for (i, case) in cases.iter().enumerate() {
        // A verify block is JSON, and JSON is YAML.
        routes.push_str(&format!(
            "  - name: c{i}\n    path: /c/{i}\n    methods: [{}]\n    upstream: backend\n    verify: {}\n",
            case["method"].as_str().unwrap(),
            case["verify"]
        ));
    }
    let gw = TestGateway::start(&routes).await;
    let client = h1_client(&gw.certs);
    let mut table = vec![format!(
        "{:<44} {:<28} {:<8} {}",
        "case", "oracle", "expect", "result"
    )];
    let mut failures = Vec::new();
    let mut sent = 0;
    for (i, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let mut url = gw.https_url(&format!("/c/{i}"));
        if let Some(query) = case["query"].as_str() {
            url = format!("{url}?{query}");
        }
        let headers: Vec<(String, String)> = case["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = base64::engine::general_purpose::STANDARD
            .decode(case["body_b64"].as_str().unwrap())
            .unwrap();
        let (status, _, reply) = send(
            &client,
            case["method"].as_str().unwrap(),
            &url,
            &header_refs,
            body,
        )
        .await
        .unwrap();
        sent += 1;
        let line = gw.log_line(sent).await;
        let outcome = line["outcome"].as_str().unwrap_or("").to_string();
        // An accepted case is forwarded (the backend answers 200) or answered by the gateway
        // with the status and, when the oracle knows it, the body the provider's library gives.
        let want_status = case["status"].as_u64().unwrap_or(200) as u16;
        let reply_ok = case["reply"]
            .as_str()
            .is_none_or(|want| want.as_bytes() == reply.as_ref());
        let verdict = match expect {
            "accept" => {
                status == want_status
                    && reply_ok
                    && (outcome == "forwarded" || outcome == "handshake")
            }
            _ => {
                status == 401 && outcome == "signature_invalid" && line["reason"] == case["reason"]
            }
        };
        let result = format!(
            "{status} {outcome} {}",
            line["reason"].as_str().unwrap_or("")
        );
        table.push(format!(
            "{name:<44} {:<28} {expect:<8} {} {result}",
            case["source"].as_str().unwrap_or(""),
            if verdict { "PASS" } else { "FAIL" }
        ));
        if !verdict {
            failures.push(format!(
                "{name}: expected {expect} ({}), got {result}",
                case["reason"]
            ));
        }
        // Replay: an accepted delivery sent again must not reach the backend again.
        if expect == "accept" && outcome == "forwarded" && line.get("event_id").is_some() {
            let before = gw.upstream.seen().len();
            let (again, _, _) = send(
                &client,
                case["method"].as_str().unwrap(),
                &url,
                &header_refs,
                base64::engine::general_purpose::STANDARD
                    .decode(case["body_b64"].as_str().unwrap())
                    .unwrap(),
            )
            .await
            .unwrap();
            sent += 1;
            let replay = gw.log_line(sent).await;
            let ok = again == 200
                && replay["outcome"] == "duplicate"
                && gw.upstream.seen().len() == before;
            table.push(format!(
                "{:<44} {:<28} {:<8} {} {again} {}",
                format!("{name} (replayed)"),
                "same request",
                "dedupe",
                if ok { "PASS" } else { "FAIL" },
                replay["outcome"]
            ));
            if !ok {
                failures.push(format!("{name}: replay got {again} {}", replay["outcome"]));
            }
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        failures.is_empty(),
        "{} conformance failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    gw.shutdown().await;
}
