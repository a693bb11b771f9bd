//! Issue 17: several gateways sharing rate limits and replay memory through one real
//! `redis-server` (Debian's package; each test starts its own on a free loopback port, without
//! persistence), and a gateway that keeps serving, within the Redis timeout, when Redis is
//! killed, frozen or a blackhole.

use std::time::{Duration, Instant};

use crate::common::*;

const GITHUB_BODY: &str = "Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

/// A route limited to 20/s (burst 5) for everyone together, and a GitHub route with the replay
/// memory on. `{redis}` and `{timeout}` are filled in per test.
const ROUTES: &str = r#"
redis:
  url: "{redis}"
  timeout: "{timeout}"
  key_prefix: "hg-test:"
  instances: 2
upstreams:
  backend:
    url: http://{upstream}
routes:
  - name: limited
    path: /limited
    upstream: backend
    rate_limit: { per_second: 20, burst: 5, key: route }
  - name: github
    path: /hooks/github
    upstream: backend
    verify:
      provider: github
      secrets: ["It's a Secret to Everybody"]
"#;

async fn gateway(redis_url: &str, timeout: &str) -> TestGateway {
    TestGateway::start(
        &ROUTES
            .replace("{redis}", redis_url)
            .replace("{timeout}", timeout),
    )
    .await
}

async fn wait_until_up(gw: &TestGateway, up: f64, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if gw.metrics().await.get("hookgate_redis_up") == Some(&up) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "hookgate_redis_up never became {up} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends GET /limited to `gw` every `every` for `duration`; returns (status, latency) of each.
async fn load(gw: &TestGateway, every: Duration, duration: Duration) -> Vec<(u16, Duration)> {
    let client = plain_client();
    let url = gw.http_url("/limited");
    let mut tick = tokio::time::interval(every);
    let started = Instant::now();
    let mut pending = Vec::new();
    while started.elapsed() < duration {
        tick.tick().await;
        let client = client.clone();
        let url = url.clone();
        pending.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (status, _, _) = send(&client, "POST", &url, &[], "{}").await.unwrap();
            (status, sent.elapsed())
        }));
    }
    let mut out = Vec::new();
    for p in pending {
        out.push(p.await.unwrap());
    }
    out
}

/// Every answer of a `load` is the policy's (200 or 429), and came within `within`.
fn assert_policy_answers_within(results: &[(u16, Duration)], within: Duration) {
    for (status, latency) in results {
        assert!(*status == 200 || *status == 429, "status {status}");
        assert!(*latency < within, "took {latency:?}");
    }
}

/// Sends the signed GitHub delivery `id` to `gw`'s `/hooks/github`; the status.
async fn signed_delivery(gw: &TestGateway, id: &str) -> u16 {
    let headers = [
        ("x-hub-signature-256", GITHUB_SIGNATURE),
        ("x-github-delivery", id),
    ];
    let url = gw.http_url("/hooks/github");
    let (status, _, _) = send(&plain_client(), "POST", &url, &headers, GITHUB_BODY)
        .await
        .unwrap();
    status
}

fn admitted(results: &[(u16, Duration)]) -> usize {
    results.iter().filter(|(s, _)| *s == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_limit_not_one_each() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis.url(), "250ms").await;
    let b = gateway(&redis.url(), "250ms").await;
    wait_until_up(&a, 1.0, Duration::from_secs(5)).await;
    wait_until_up(&b, 1.0, Duration::from_secs(5)).await;

    // 100/s offered to each for 2 s: a shared 20/s bucket with a burst of 5 admits about
    // 5 + 2 * 20 = 45 in total; two separate limiters would admit about 90.
    let window = Duration::from_secs(2);
    let every = Duration::from_millis(10);
    let (ra, rb) = tokio::join!(load(&a, every, window), load(&b, every, window));
    let total = admitted(&ra) + admitted(&rb);
    assert!(
        (30..=60).contains(&total),
        "admitted {total} (a {}, b {}): a shared 20/s should admit about 45",
        admitted(&ra),
        admitted(&rb)
    );
    assert!(admitted(&ra) > 0 && admitted(&rb) > 0);
    for (status, _) in ra.iter().chain(&rb) {
        assert!(*status == 200 || *status == 429, "status {status}");
    }
    // The 429s carry the local limiter's headers, for the whole (shared) limit.
    let (status, headers, _) = send(&plain_client(), "POST", &a.http_url("/limited"), &[], "")
        .await
        .unwrap();
    if status == 429 {
        assert!(
            headers["retry-after"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=5;w=1");
    }
    // Round trips: a refused key is not asked again before Redis said it may try (the local
    // pre-check), so a sender hammering past its limit costs far fewer than one per request.
    // Checks in flight together share one EVALSHA, and a bucket is written once per batch
    // that admitted something: at most one SET per admission. Every admission was decided on
    // Redis: the fallback (the only other way to admit) never ran.
    let stats: String = redis.query(&["INFO", "commandstats"]).await;
    let calls = |command: &str| -> usize {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let (evalsha, sets) = (calls("evalsha"), calls("set"));
    let requests = ra.len() + rb.len();
    eprintln!("shared limit: {requests} requests, {total} admitted, {evalsha} EVALSHA");
    assert!(
        evalsha > 0 && evalsha < requests / 2,
        "{evalsha} round trips for {requests} requests ({total} admitted)"
    );
    let probe = usize::from(status == 200);
    assert!(
        (1..=total + probe).contains(&sets),
        "{sets} bucket writes for {} admissions",
        total + probe
    );
    let m = a.metrics().await;
    assert_eq!(m.get("hookgate_rate_limit_fallback_total"), Some(&0.0));
    let keys: Vec<String> = redis.query(&["KEYS", "hg-test:rl:*"]).await;
    assert_eq!(keys, ["hg-test:rl:limited:r"], "one key per bucket");
    let ttl: i64 = redis.query(&["PTTL", "hg-test:rl:limited:r"]).await;
    assert!(
        ttl > 0 && ttl <= 1001,
        "the bucket expires when full again: {ttl}"
    );
}

/// The number of keys of each EVALSHA in Redis's slowlog (armed with a threshold of 0).
async fn evalsha_key_counts(redis: &RedisServer) -> Vec<usize> {
    let entries: Vec<redis::Value> = redis.query(&["SLOWLOG", "GET", "-1"]).await;
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let mut counts: Vec<usize> = entries
        .iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                return None;
            };
            let redis::Value::Array(args) = fields.get(3)? else {
                return None;
            };
            if !text(args.first()?)?.eq_ignore_ascii_case("evalsha") {
                return None;
            }
            text(args.get(2)?)?.parse().ok()
        })
        .collect();
    counts.reverse(); // the slowlog lists the newest first
    counts
}

/// Checks that arrive while an EVALSHA is in flight go together in the next one (one script
/// over N keys): fewer EVALSHAs than GCRA steps, and the same key several times in one batch
/// is still decided in order, so a burst admits exactly the bucket's burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_share_evalshas_and_a_burst_admits_exactly_the_burst() {
    let redis = RedisServer::start().await;
    let gw = gateway(&redis.url(), "250ms").await;
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;
    // Every command from here on, with its arguments, in Redis's slowlog.
    let _: () = redis
        .query(&["CONFIG", "SET", "slowlog-log-slower-than", "0"])
        .await;
    let _: () = redis
        .query(&["CONFIG", "SET", "slowlog-max-len", "10000"])
        .await;
    let _: () = redis.query(&["SLOWLOG", "RESET"]).await;
    let url = gw.http_url("/limited");
    let started = Instant::now();
    let sent: Vec<_> = (0..64)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                send(&plain_client(), "POST", &url, &[], "{}")
                    .await
                    .unwrap()
                    .0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sent {
        statuses.push(s.await.unwrap());
    }
    let elapsed = started.elapsed();
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    // burst 5, then one every 50 ms (20/s)
    let most = 5 + (elapsed.as_millis() / 50) as usize;
    assert!(
        (5..=most).contains(&admitted),
        "admitted {admitted} of 64 in {elapsed:?}: the burst is 5"
    );
    let stats: String = redis.query(&["INFO", "commandstats"]).await;
    let calls = |command: &str| -> usize {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    // The checks each EVALSHA carried (the local pre-check answers some refusals without one).
    let batches = evalsha_key_counts(&redis).await;
    let steps: usize = batches.iter().sum();
    eprintln!(
        "burst: {steps} checks on Redis in EVALSHAs of {batches:?} keys, {admitted} admitted"
    );
    assert!(
        batches.iter().any(|&keys| keys > 1),
        "no EVALSHA carried more than one check: {batches:?}"
    );
    assert!(
        steps >= admitted,
        "{steps} checks on Redis, {admitted} admitted"
    );
    // The bucket is read once per batch and written once per batch that admitted something.
    let (gets, sets) = (calls("get"), calls("set"));
    assert!(
        gets <= batches.len(),
        "{gets} GETs for {} EVALSHAs",
        batches.len()
    );
    assert!(
        (1..=admitted).contains(&sets),
        "{sets} bucket writes for {admitted} admissions"
    );
    assert_eq!(
        gw.metrics().await.get("hookgate_rate_limit_fallback_total"),
        Some(&0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_delivery_sent_to_two_instances_at_once_is_forwarded_once() {
    let redis = RedisServer::start().await;
    let a = gateway(&redis.url(), "250ms").await;
    let b = gateway(&redis.url(), "250ms").await;
    wait_until_up(&a, 1.0, Duration::from_secs(5)).await;
    wait_until_up(&b, 1.0, Duration::from_secs(5)).await;
    let ids: Vec<String> = (0..20).map(|i| format!("redis-delivery-{i}")).collect();
    for id in &ids {
        let headers = [
            ("x-hub-signature-256", GITHUB_SIGNATURE),
            ("x-github-delivery", id.as_str()),
        ];
        let (ca, cb) = (plain_client(), plain_client());
        let (ua, ub) = (a.http_url("/hooks/github"), b.http_url("/hooks/github"));
        let (ra, rb) = tokio::join!(
            send(&ca, "POST", &ua, &headers, GITHUB_BODY),
            send(&cb, "POST", &ub, &headers, GITHUB_BODY),
        );
        let mut statuses = [ra.unwrap().0, rb.unwrap().0];
        statuses.sort();
        assert!(
            statuses == [200, 200] || statuses == [200, 409],
            "{id}: {statuses:?}"
        );
    }
    // Both upstreams together saw each delivery exactly once.
    let seen: Vec<String> = a
        .upstream
        .seen()
        .iter()
        .chain(b.upstream.seen().iter())
        .map(|s| s.headers["x-github-delivery"].to_str().unwrap().to_string())
        .collect();
    for id in &ids {
        let n = seen.iter().filter(|s| *s == id).count();
        assert_eq!(n, 1, "{id} forwarded {n} times");
    }
    // A later retry on either instance is a 2xx duplicate, not forwarded.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for gw in [&a, &b] {
        assert_eq!(signed_delivery(gw, &ids[0]).await, 200);
    }
    assert_eq!(a.upstream.seen().len() + b.upstream.seen().len(), ids.len());
    let value: String = redis
        .query(&["GET", &format!("hg-test:rp:github\0{}", ids[0])])
        .await;
    assert_eq!(value, "d", "marked delivered");
    let ttl: i64 = redis
        .query(&["PTTL", &format!("hg-test:rp:github\0{}", ids[0])])
        .await;
    assert!(
        ttl > 23 * 3600 * 1000,
        "remembered for the replay window: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_changes_no_answer_and_restarted_it_is_shared_again() {
    let mut redis = RedisServer::start().await;
    let gw = gateway(&redis.url(), "100ms").await;
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;

    let killer = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.kill();
    };
    let (results, ()) = tokio::join!(
        load(&gw, Duration::from_millis(10), Duration::from_millis(2000)),
        killer
    );
    for (status, latency) in &results {
        assert!(
            *status == 200 || *status == 429,
            "status {status}: only the policy decides"
        );
        assert!(
            *latency < Duration::from_millis(600),
            "a request took {latency:?} (Redis timeout 100ms)"
        );
    }
    let m = gw.metrics().await;
    assert!(
        m["hookgate_rate_limit_fallback_total"] > 0.0,
        "fallback counted"
    );
    assert_eq!(m["hookgate_redis_up"], 0.0);
    assert!(
        m.iter()
            .any(|(k, v)| k.starts_with("hookgate_redis_errors_total") && *v > 0.0),
        "errors counted"
    );
    // Still limited while down (at half the limit, instances: 2): not everything went through.
    let down: Vec<_> = results.iter().skip(100).collect();
    assert!(
        down.iter().any(|(s, _)| *s == 429),
        "still rate limited while down"
    );

    // Ready while Redis is down.
    let admin = gw.gateway.as_ref().unwrap().admin_addr().unwrap();
    let (status, _, _) = send(
        &plain_client(),
        "GET",
        &format!("http://{admin}/readyz"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "/readyz stays 200 with Redis down");

    redis.restart().await;
    let back = wait_until_up(&gw, 1.0, Duration::from_secs(1)).await;
    let before = gw.metrics().await["hookgate_rate_limit_fallback_total"];
    let (status, _, _) = send(&plain_client(), "POST", &gw.http_url("/limited"), &[], "")
        .await
        .unwrap();
    assert!(status == 200 || status == 429);
    let exists: i64 = redis.query(&["EXISTS", "hg-test:rl:limited:r"]).await;
    assert_eq!(
        exists, 1,
        "the bucket is on Redis again ({back:?} after restart)"
    );
    assert_eq!(
        gw.metrics().await["hookgate_rate_limit_fallback_total"],
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blackhole_or_a_frozen_redis_costs_at_most_the_timeout() {
    // A port that accepts and never answers: the connection is never made, every request is
    // decided locally at once.
    let hole = blackhole_port().await;
    let gw = gateway(&format!("redis://{hole}"), "50ms").await;
    let results = load(&gw, Duration::from_millis(10), Duration::from_millis(500)).await;
    assert_policy_answers_within(&results, Duration::from_millis(500));
    let status = signed_delivery(&gw, "blackhole-1").await;
    assert_eq!(status, 200, "forwarded with the local replay memory");
    let status = signed_delivery(&gw, "blackhole-1").await;
    assert_eq!(status, 200, "a duplicate by the local replay memory");
    assert_eq!(gw.upstream.seen().len(), admitted(&results) + 1);
    let m = gw.metrics().await;
    assert_eq!(m["hookgate_redis_up"], 0.0);
    assert!(m["hookgate_rate_limit_fallback_total"] > 0.0);
    drop(gw);

    // A Redis that answered and then stops answering (SIGSTOP): each call waits at most the
    // timeout, then the instance runs locally.
    let redis = RedisServer::start().await;
    let gw = gateway(&redis.url(), "50ms").await;
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;
    redis.freeze(true);
    let results = load(&gw, Duration::from_millis(10), Duration::from_millis(500)).await;
    redis.freeze(false);
    assert_policy_answers_within(&results, Duration::from_millis(500));
    assert!(gw.metrics().await["hookgate_rate_limit_fallback_total"] > 0.0);
    wait_until_up(&gw, 1.0, Duration::from_secs(2)).await;
}

/// Each worker thread has its own Redis connection, which its requests' calls use (so a call
/// never wakes another thread), plus one for every other thread; and a Redis that lost the
/// batch script (`SCRIPT FLUSH`) is given it again without any call falling back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_calls_on_its_own_connection_and_a_flushed_script_is_loaded_again() {
    let redis = RedisServer::start().await;
    let gw = TestGateway::start(&format!(
        "{}limits:\n  worker_threads: 3\n",
        ROUTES
            .replace("{redis}", &redis.url())
            .replace("{timeout}", "250ms")
    ))
    .await;
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;
    let _: () = redis.query(&["SCRIPT", "FLUSH"]).await;
    // One new connection each, so the worker threads take turns: every worker's lane is used.
    let ids: Vec<String> = (0..12).map(|i| format!("lane-delivery-{i}")).collect();
    for id in &ids {
        assert_eq!(signed_delivery(&gw, id).await, 200, "{id}");
    }
    for id in &ids {
        assert_eq!(signed_delivery(&gw, id).await, 200, "{id}: a duplicate");
    }
    assert_eq!(gw.upstream.seen().len(), ids.len(), "each forwarded once");
    let m = gw.metrics().await;
    let errors: Vec<_> = m
        .iter()
        .filter(|(k, v)| k.starts_with("hookgate_redis_errors_total") && **v > 0.0)
        .collect();
    assert!(errors.is_empty(), "no call fell back: {errors:?}");
    // The gateway's connections (CLIENT LIST also shows the one asking): three workers, one
    // for the other threads; the workers' last command was a batch's EVALSHA.
    let clients: String = redis.query(&["CLIENT", "LIST"]).await;
    let gateway: Vec<&str> = clients
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .collect();
    assert_eq!(gateway.len(), 4, "{clients}");
    let calling = gateway.iter().filter(|l| l.contains("cmd=evalsha")).count();
    assert_eq!(calling, 3, "each worker on its own connection: {clients}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_the_same_redis_block_keeps_the_connection() {
    let redis = RedisServer::start().await;
    let gw = gateway(&redis.url(), "250ms").await;
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;
    let connections = |info: String| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = connections(redis.query(&["INFO", "stats"]).await);
    gw.edit_config(|text| text.replace("per_second: 20", "per_second: 21"));
    gw.reload().unwrap();
    let after = connections(redis.query(&["INFO", "stats"]).await);
    // The INFO calls themselves are one connection each.
    assert_eq!(after, before + 1, "no new gateway connection on reload");
}

/// A reload that changes the `redis:` block gives every worker a connection to the new one
/// (made from the main thread onto each worker's runtime): the calls after it use the new
/// prefix, none falls back, and the old connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_another_redis_block_moves_every_worker_to_it() {
    let redis = RedisServer::start().await;
    let gw = TestGateway::start(&format!(
        "{}limits:\n  worker_threads: 2\n",
        ROUTES
            .replace("{redis}", &redis.url())
            .replace("{timeout}", "250ms")
    ))
    .await;
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;
    gw.edit_config(|text| text.replace("key_prefix: \"hg-test:\"", "key_prefix: \"hg-new:\""));
    gw.reload().unwrap();
    wait_until_up(&gw, 1.0, Duration::from_secs(5)).await;
    for i in 0..6 {
        assert_eq!(signed_delivery(&gw, &format!("moved-{i}")).await, 200);
    }
    let moved: Vec<String> = redis.query(&["KEYS", "hg-new:rp:*"]).await;
    assert_eq!(moved.len(), 6, "{moved:?}");
    let old: Vec<String> = redis.query(&["KEYS", "hg-test:*"]).await;
    assert!(old.is_empty(), "{old:?}");
    let m = gw.metrics().await;
    assert!(
        !m.iter()
            .any(|(k, v)| k.starts_with("hookgate_redis_errors_total") && *v > 0.0),
        "no call fell back"
    );
    // Two workers and the other threads: three connections (and the one asking), the old
    // ones closed.
    let started = Instant::now();
    loop {
        let clients: String = redis.query(&["CLIENT", "LIST"]).await;
        if clients.lines().count() == 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "old connections still open: {clients}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn check_refuses_a_bad_redis_block_without_showing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    let base = "listeners:\n  - name: plain\n    bind: 127.0.0.1:0\nupstreams:\n  b:\n    url: http://127.0.0.1:1\nroutes:\n  - name: r\n    path: /r\n    upstream: b\n";
    std::fs::write(
        &path,
        format!("{base}redis:\n  url: \"http://app:hunter2@cache:6379\"\n"),
    )
    .unwrap();
    let err = hookgate::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("redis.url"), "{err}");
    assert!(err.contains(":12:"), "located: {err}");
    assert!(!err.contains("hunter2"), "password leaked: {err}");
    std::fs::write(
        &path,
        format!("{base}redis:\n  url: redis://127.0.0.1:6379\n  timeout: 30\n"),
    )
    .unwrap();
    let err = hookgate::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("redis.timeout"), "{err}");
    // redis.ca: only with TLS, and it must hold a certificate; both located.
    std::fs::write(dir.path().join("not-a-ca.pem"), "hello").unwrap();
    std::fs::write(
        &path,
        format!("{base}redis:\n  url: redis://127.0.0.1:6379\n  ca: not-a-ca.pem\n"),
    )
    .unwrap();
    let err = hookgate::config::load(&path).unwrap_err().to_string();
    assert!(err.contains("redis.ca") && err.contains(":13:"), "{err}");
    assert!(err.contains("rediss://"), "{err}");
    std::fs::write(
        &path,
        format!("{base}redis:\n  url: rediss://127.0.0.1:6379\n  ca: not-a-ca.pem\n"),
    )
    .unwrap();
    let err = hookgate::config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("redis.ca") && err.contains(":13:") && err.contains("not-a-ca.pem"),
        "{err}"
    );
    // A good block loads without any Redis running (nothing connects at check time).
    std::fs::write(
        &path,
        format!("{base}redis:\n  url: \"rediss://:hunter2@127.0.0.1:1/0\"\n  timeout: 25ms\n"),
    )
    .unwrap();
    let config = hookgate::config::load(&path).unwrap();
    let shown = format!("{:?}", config.redis);
    assert!(
        !shown.contains("hunter2") && shown.contains("***"),
        "{shown}"
    );
}

/// `rediss://` against a real TLS redis-server whose certificate comes from a private CA named
/// in `redis.ca`: two gateways share one limit through it. A gateway trusting another CA never
/// connects: it counts the failed connects and the fallbacks, and serves by its local policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_private_ca_shares_limits_and_a_wrong_ca_falls_back() {
    let certs = TestCerts::new();
    let redis = TlsRedisServer::start(&certs).await;
    let with_ca = |ca: &std::path::Path| {
        ROUTES
            .replace("{redis}", &redis.url())
            .replace("{timeout}", "250ms")
            .replace(
                "  instances: 2\n",
                &format!("  instances: 2\n  ca: \"{}\"\n", path_str(ca)),
            )
    };
    let a = TestGateway::start(&with_ca(&redis.ca_path)).await;
    let b = TestGateway::start(&with_ca(&redis.ca_path)).await;
    wait_until_up(&a, 1.0, Duration::from_secs(5)).await;
    wait_until_up(&b, 1.0, Duration::from_secs(5)).await;

    let window = Duration::from_secs(2);
    let every = Duration::from_millis(10);
    let (ra, rb) = tokio::join!(load(&a, every, window), load(&b, every, window));
    let total = admitted(&ra) + admitted(&rb);
    assert!(
        (30..=60).contains(&total),
        "admitted {total} (a {}, b {}): a shared 20/s over TLS should admit about 45",
        admitted(&ra),
        admitted(&rb)
    );
    for gw in [&a, &b] {
        let m = gw.metrics().await;
        assert_eq!(m.get("hookgate_rate_limit_fallback_total"), Some(&0.0));
        assert_eq!(m.get("hookgate_redis_up"), Some(&1.0));
    }
    let keys: Vec<String> = redis.query(&["KEYS", "hg-test:rl:*"]).await;
    assert_eq!(
        keys,
        ["hg-test:rl:limited:r"],
        "the shared bucket, over TLS"
    );

    // The same Redis, trusted through another CA: the handshake fails.
    let other = TestCerts::new();
    let other_ca = other.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    let c = TestGateway::start(&with_ca(&other_ca)).await;
    let started = Instant::now();
    while !c
        .metrics()
        .await
        .iter()
        .any(|(k, v)| k.starts_with("hookgate_redis_errors_total{op=\"connect\"") && *v > 0.0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no failed connect counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let results = load(&c, Duration::from_millis(10), Duration::from_millis(500)).await;
    assert_policy_answers_within(&results, Duration::from_millis(500));
    assert!(admitted(&results) > 0, "served by the local limiter");
    let status = signed_delivery(&c, "wrong-ca-1").await;
    assert_eq!(status, 200, "forwarded with the local replay memory");
    let m = c.metrics().await;
    assert_eq!(m["hookgate_redis_up"], 0.0);
    assert!(m["hookgate_rate_limit_fallback_total"] >= results.len() as f64);
    let replay: Vec<String> = redis.query(&["KEYS", "hg-test:rp:*"]).await;
    assert!(replay.is_empty(), "nothing reached Redis: {replay:?}");
}
