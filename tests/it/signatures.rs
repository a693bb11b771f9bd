//! Stage 7 and 8 through real sockets: a published test vector accepted, rotation reported,
//! bad signatures refused with the route's status (and nothing forwarded), duplicates answered
//! without a second delivery, retries after an upstream failure forwarded again.

use crate::common::*;

/// GitHub's documented example ("Validating webhook deliveries"): the secret
/// `It's a Secret to Everybody` (in ROUTES) and this body give exactly this signature.
const GITHUB_BODY: &str = "Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

const ROUTES: &str = r#"
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: github
    path: /hooks/github
    upstream: backend
    verify:
      provider: github
      secrets: ["new-secret-not-used-yet", "It's a Secret to Everybody"]
  - name: github-strict
    path: /hooks/strict
    upstream: backend
    verify:
      provider: github
      secrets: ["It's a Secret to Everybody"]
      on_failure: 403
  - name: github-fail
    path: /fail/github
    upstream: backend
    verify:
      provider: github
      secrets: ["It's a Secret to Everybody"]
  - name: github-slow
    path: /slow/github
    upstream: backend
    verify:
      provider: github
      secrets: ["It's a Secret to Everybody"]
"#;

fn signed(delivery: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("x-hub-signature-256", GITHUB_SIGNATURE),
        ("x-github-delivery", delivery),
        ("x-hookgate-verified", "forged"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_githubs_published_example_and_reports_the_rotated_secret() {
    let gw = TestGateway::start(ROUTES).await;
    let (status, _, _) = send(
        &h1_client(&gw.certs),
        "POST",
        &gw.https_url("/hooks/github"),
        &signed("d-1"),
        GITHUB_BODY,
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let seen = &gw.upstream.seen()[0];
    assert_eq!(&seen.body[..], GITHUB_BODY.as_bytes());
    assert_eq!(
        seen.headers["x-hookgate-verified"], "github",
        "set by the gateway, not the sender"
    );
    assert_eq!(seen.headers["x-hub-signature-256"], GITHUB_SIGNATURE);
    let line = gw.log_line(1).await;
    assert_eq!(line["outcome"], "forwarded");
    assert_eq!(line["provider"], "github");
    assert_eq!(
        line["secret_index"], 1,
        "the old secret matched: not yet safe to retire"
    );
    assert_eq!(line["event_id"], "d-1");
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_signature_checks_total{route="github",provider="github",result="valid",secret_index="1"}"#],
        1.0
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_tampered_missing_and_malformed_signatures_without_forwarding() {
    let gw = TestGateway::start(ROUTES).await;
    let client = h1_client(&gw.certs);
    let url = gw.https_url("/hooks/github");
    let sig = |v: &'static str| vec![("x-hub-signature-256", v)];
    type Case = (
        Vec<(&'static str, &'static str)>,
        &'static str,
        &'static str,
    );
    let cases: [Case; 4] = [
        (sig(GITHUB_SIGNATURE), "Hello, World?", "mismatch"),
        (vec![], GITHUB_BODY, "missing"),
        (sig("sha256=not-hex"), GITHUB_BODY, "malformed"),
        (
            sig("sha1=757107ea0eb2509fc211221cce984b8a37570b6d"),
            GITHUB_BODY,
            "unknown_version",
        ),
    ];
    for (headers, body, _) in &cases {
        let (status, _, answer) = send(&client, "POST", &url, headers, *body).await.unwrap();
        assert_eq!(status, 401);
        assert_eq!(answer, "Unauthorized\n", "the client is not told why");
    }
    let lines = gw.log_lines(4).await;
    for (line, (_, _, reason)) in lines.iter().zip(&cases) {
        assert_eq!(line["outcome"], "signature_invalid");
        assert_eq!(line["reason"], *reason, "{line}");
    }
    assert!(gw.upstream.seen().is_empty());
    let metrics = gw.metrics().await;
    assert_eq!(
        metrics[r#"hookgate_requests_total{listener="public",route="github",outcome="signature_invalid",code="401"}"#],
        4.0
    );
    assert_eq!(
        metrics[r#"hookgate_signature_checks_total{route="github",provider="github",result="mismatch",secret_index=""}"#],
        1.0
    );
    // A route that wants another status for a bad signature gets it.
    let (status, _, _) = send(
        &client,
        "POST",
        &gw.https_url("/hooks/strict"),
        &[],
        GITHUB_BODY,
    )
    .await
    .unwrap();
    assert_eq!(status, 403);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_is_answered_once_delivered_and_not_forwarded_again() {
    let gw = TestGateway::start(ROUTES).await;
    let client = h1_client(&gw.certs);
    let url = gw.https_url("/hooks/github");
    for _ in 0..3 {
        let (status, _, _) = send(&client, "POST", &url, &signed("delivery-42"), GITHUB_BODY)
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(gw.upstream.seen().len(), 1, "delivered once");
    let lines = gw.log_lines(3).await;
    let outcomes: Vec<_> = lines
        .iter()
        .map(|l| l["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["forwarded", "duplicate", "duplicate"]);
    assert_eq!(lines[2]["event_id"], "delivery-42");
    // Another id is new.
    let (status, _, _) = send(&client, "POST", &url, &signed("delivery-43"), GITHUB_BODY)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(gw.upstream.seen().len(), 2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_an_upstream_failure_is_forwarded_again() {
    let gw = TestGateway::start(ROUTES).await;
    let client = h1_client(&gw.certs);
    let url = gw.https_url("/fail/github");
    for _ in 0..2 {
        let (status, _, _) = send(&client, "POST", &url, &signed("delivery-7"), GITHUB_BODY)
            .await
            .unwrap();
        assert_eq!(status, 500, "the upstream's own status passes back");
    }
    assert_eq!(
        gw.upstream.seen().len(),
        2,
        "not remembered after a failure: the event is not lost"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_in_flight_are_not_both_forwarded() {
    let gw = TestGateway::start(ROUTES).await;
    let client = h2_client(&gw.certs);
    let url = gw.https_url("/slow/github");
    let first = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            send(&client, "POST", &url, &signed("delivery-9"), GITHUB_BODY)
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, headers, _) = send(&client, "POST", &url, &signed("delivery-9"), GITHUB_BODY)
        .await
        .unwrap();
    assert_eq!(status, 409, "the copy in flight is turned away");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(first.await.unwrap().0, 200);
    assert_eq!(gw.upstream.seen().len(), 1);
    let lines = gw.log_lines(2).await;
    assert!(lines
        .iter()
        .any(|l| l["outcome"] == "duplicate" && l["reason"] == "in_flight"));
    gw.shutdown().await;
}
