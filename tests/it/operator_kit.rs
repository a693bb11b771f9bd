//! The operator's kit (issue 19), each piece checked by its own ecosystem's tool so it cannot
//! rot: the JSON Schema of gateway.yaml is what `hookgate schema` prints and `check-jsonschema`
//! (PyPI) accepts every config in the repository with it and refuses known-bad ones; the alert
//! rules pass `promtool test rules`; every query of the Grafana dashboard parses (promtool) and
//! names only metrics a real scrape shows; the systemd unit passes `systemd-analyze verify` and
//! scores "OK" or better in `systemd-analyze security`; completions and the man page name every
//! subcommand and the bash script parses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hookgate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The subcommands, as `hookgate --help` lists them (so a new one is covered without editing
/// this file).
fn subcommands() -> Vec<String> {
    let help = stdout_of(&hookgate(&["--help"]));
    let names: Vec<String> = help
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect();
    for expected in ["run", "check", "sign", "schema", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {help}");
    }
    names
}

// ---------------------------------------------------------------------------------------------
// JSON Schema

/// check-jsonschema from PyPI, in `target/check-jsonschema-venv`.
fn check_jsonschema() -> PathBuf {
    python_venv("check-jsonschema-venv", "check-jsonschema==0.39.0\n").join("bin/check-jsonschema")
}

/// Validates each file against the committed schema; returns (ok, output).
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(check_jsonschema())
        .arg("--schemafile")
        .arg(repo().join("gateway.schema.json"))
        .args(files)
        .output()
        .unwrap();
    (out.status.success(), text(&out))
}

#[test]
fn committed_schema_is_what_hookgate_schema_prints() {
    let printed = stdout_of(&hookgate(&["schema"]));
    let committed = std::fs::read_to_string(repo().join("gateway.schema.json")).unwrap();
    assert!(
        printed == committed,
        "gateway.schema.json is stale (a config key changed?): regenerate it with\n  \
         cargo run -q -- schema > gateway.schema.json"
    );
    let schema: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // Unknown keys are errors in the loader, so they are in the schema too.
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(
        schema["$defs"]["RawVerify"]["additionalProperties"], false,
        "{schema:#}"
    );
    // Doc comments become hover documentation.
    assert!(
        schema["$defs"]["RawRoute"]["properties"]["path"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("/*"))
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.contains("# yaml-language-server: $schema=./gateway.schema.json"));
}

/// Every config in the repository that is meant to load: gateway.yaml, the packaged
/// /etc/hookgate/gateway.yaml (deploy/debian/), the README's
/// configuration example, the fuzz seeds (their shapes are right; one names a missing upstream,
/// which only `hookgate check` can know) and the configs the integration tests start gateways
/// with (`const NAME: &str = r#"..."#` holding `routes:`, after the harness's listeners).
fn repository_configs(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        repo().join("gateway.yaml"),
        repo().join("deploy/debian/gateway.yaml"),
    ];
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    assert!(block.starts_with("listeners:"), "{block}");
    let path = dir.join("README.yaml");
    std::fs::write(&path, block).unwrap();
    files.push(path);
    for entry in std::fs::read_dir(repo().join("fuzz/corpus/config")).unwrap() {
        files.push(entry.unwrap().path());
    }
    let listeners = LISTENERS;
    let mut tests: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/it"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    tests.sort();
    let mut from_tests = 0;
    for test in tests {
        let source = std::fs::read_to_string(&test).unwrap();
        for part in source.split("const ").skip(1) {
            let Some((name, rest)) = part.split_once(": &str = r#\"") else {
                continue;
            };
            let Some((yaml, _)) = rest.split_once("\"#;") else {
                continue;
            };
            if !yaml.contains("\nroutes:") || name.contains(char::is_whitespace) {
                continue;
            }
            let yaml = if yaml.contains("\nlisteners:") {
                yaml.to_string()
            } else {
                format!("{listeners}{yaml}")
            };
            let stem = test.file_stem().unwrap().to_string_lossy();
            let path = dir.join(format!("{stem}-{name}.yaml"));
            std::fs::write(&path, yaml).unwrap();
            files.push(path);
            from_tests += 1;
        }
    }
    assert!(from_tests >= 5, "found only {from_tests} test configs");
    files
}

#[test]
fn every_config_in_the_repository_validates_against_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let files = repository_configs(dir.path());
    let (ok, out) = validate(&files);
    assert!(ok, "{files:#?}\n{out}");
}

/// The config the Debian package installs loads once its secret is in the environment (as the
/// unit's EnvironmentFile provides), and not without it.
#[test]
fn packaged_config_passes_hookgate_check_with_its_secret() {
    let config = repo().join("deploy/debian/gateway.yaml");
    let check = |env: &[(&str, &str)]| {
        Command::new(BIN)
            .args(["check", "-c"])
            .arg(&config)
            .env_remove("GITHUB_WEBHOOK_SECRET")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let ok = check(&[("GITHUB_WEBHOOK_SECRET", "from-hookgate.env")]);
    assert!(ok.status.success(), "{}", text(&ok));
    let missing = check(&[]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("GITHUB_WEBHOOK_SECRET is not set"));
}

/// A config that is fine but for one mistake; each mistake must fail both the schema and the
/// loader (so the schema is never stricter or looser than the gateway on these shapes).
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
    rate_limit: { per_second: 5 }
    verify: { provider: github, secrets: [s3cret] }
";

#[test]
fn known_bad_configs_fail_the_schema_and_hookgate_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    let (ok, out) = validate(std::slice::from_ref(&good));
    assert!(ok, "{out}");
    assert!(hookgate(&["check", "-c", good.to_str().unwrap()])
        .status
        .success());

    let bad: &[(&str, String)] = &[
        (
            "unknown-listener-key",
            GOOD.replace("    bind:", "    bnd:"),
        ),
        ("unknown-top-level-key", format!("{GOOD}upstream: orders\n")),
        (
            "no-routes",
            GOOD.split("routes:").next().unwrap().to_string(),
        ),
        (
            "listeners-not-a-list",
            GOOD.replace(
                "listeners:\n  - name: internal\n    bind: 127.0.0.1:8080",
                "listeners: { name: internal, bind: 127.0.0.1:8080 }",
            ),
        ),
        (
            "unknown-verify-key",
            GOOD.replace("secrets: [s3cret]", "secret: [s3cret]"),
        ),
        (
            "rate-not-a-number",
            GOOD.replace("per_second: 5", "per_second: fast"),
        ),
        (
            "negative-size",
            GOOD.replace(
                "    timeout: 15s\n",
                "    timeout: 15s\n    max_response: -1\n",
            ),
        ),
        (
            "status-not-a-number",
            GOOD.replace("secrets: [s3cret]", "secrets: [s3cret], on_failure: [401]"),
        ),
    ];
    for (name, yaml) in bad {
        assert_ne!(yaml, GOOD, "{name}: the mistake was not made");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let (ok, out) = validate(std::slice::from_ref(&path));
        assert!(!ok, "{name}: the schema accepts it\n{yaml}\n{out}");
        let check = hookgate(&["check", "-c", path.to_str().unwrap()]);
        assert!(
            !check.status.success(),
            "{name}: hookgate check accepts it\n{yaml}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus: promtool

fn alert_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    let dir = repo().join("deploy/prometheus");
    let check = Command::new(promtool())
        .args(["check", "rules", "hookgate-rules.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check));
    let test = Command::new(promtool())
        .args(["test", "rules", "hookgate-rules.test.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(test.status.success(), "{}", text(&test));

    // Every alert has a test in which it fires.
    let rules = std::fs::read_to_string(dir.join("hookgate-rules.yaml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("hookgate-rules.test.yaml")).unwrap();
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 10, "{alerts:?}");
    for alert in &alerts {
        let fires = tests.split("- eval_time:").any(|case| {
            case.contains(&format!("alertname: {alert}\n")) && case.contains("- exp_labels:")
        });
        assert!(fires, "{alert} has no test in which it fires");
    }
    // The delivery and Redis alerts wait, commented, for their metrics.
    for metric in [
        "hookgate_queue_oldest_pending_age_seconds",
        "hookgate_queue_events{state=\"dead\"}",
        "hookgate_redis_up",
    ] {
        assert!(rules.contains(metric), "{metric}");
    }
}

/// Writes `exprs` as recording rules and has promtool parse them.
fn promtool_parses(exprs: &[String]) {
    let rules = serde_json::json!({
        "groups": [{
            "name": "dashboard",
            "rules": exprs.iter().enumerate().map(|(i, e)| serde_json::json!({
                "record": format!("dashboard:query_{i}"),
                "expr": e,
            })).collect::<Vec<_>>(),
        }]
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    // JSON is YAML.
    std::fs::write(&file, serde_json::to_string_pretty(&rules).unwrap()).unwrap();
    let out = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{rules:#}", text(&out));
}

// ---------------------------------------------------------------------------------------------
// Completions and the man page

#[test]
fn completions_name_every_subcommand_and_bash_parses_them() {
    let subcommands = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&hookgate(&["completions", shell]));
        assert!(!script.trim().is_empty(), "{shell}");
        for sub in &subcommands {
            assert!(script.contains(sub.as_str()), "{shell}: {sub}\n{script}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("hookgate.bash");
    std::fs::write(&bash, stdout_of(&hookgate(&["completions", "bash"]))).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(parsed.status.success(), "{}", text(&parsed));
    // And it completes: `hookgate ch<TAB>` offers `check`.
    let completed = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(hookgate ch); COMP_CWORD=1; _hookgate hookgate ch hookgate; \
             echo \"${{COMPREPLY[@]}}\"",
            bash.display()
        ))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&completed.stdout).contains("check"),
        "{}",
        text(&completed)
    );
    let bad = hookgate(&["completions", "cmd.exe"]);
    assert!(!bad.status.success());
}

#[test]
fn man_page_names_every_subcommand() {
    let page = stdout_of(&hookgate(&["man"]));
    assert!(page.contains(".TH hookgate 1"), "{page}");
    let subcommands = subcommands();
    for sub in &subcommands {
        assert!(
            page.contains(&format!("hookgate\\-{sub}(1)")),
            "{sub}\n{page}"
        );
    }
    // --dir writes the pages the SUBCOMMANDS section refers to.
    let pages = tempfile::tempdir().unwrap();
    stdout_of(&hookgate(&["man", "--dir", pages.path().to_str().unwrap()]));
    assert_eq!(
        std::fs::read_to_string(pages.path().join("hookgate.1")).unwrap(),
        page
    );
    for sub in &subcommands {
        let sub_page =
            std::fs::read_to_string(pages.path().join(format!("hookgate-{sub}.1"))).unwrap();
        assert!(sub_page.contains(".TH hookgate-"), "{sub_page}");
    }
    // man(1) itself renders it without complaint, where it is installed.
    if Command::new("man")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hookgate.1");
        std::fs::write(&file, &page).unwrap();
        let rendered = Command::new("man")
            .arg("-l")
            .arg(&file)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{}", text(&rendered));
        assert!(String::from_utf8_lossy(&rendered.stdout).contains("webhook"));
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana dashboard

/// Every PromQL expression in the dashboard (panel targets) and every query of its variables.
fn dashboard_queries() -> (Vec<String>, Vec<String>) {
    fn walk(v: &serde_json::Value, exprs: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => exprs.push(e.clone()),
                        _ => walk(v, exprs),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, exprs)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(repo().join("deploy/grafana/hookgate.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| v["query"]["query"].as_str().unwrap().to_string())
        .collect();
    (exprs, variables)
}

/// Grafana's variables replaced by what they stand for, so promtool can parse the query.
fn without_grafana_variables(expr: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$instance", ".*")
        .replace("$route", ".*");
    assert!(!expr.contains('$'), "unknown Grafana variable in {expr}");
    expr
}

/// The `hookgate_*` names a query mentions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("hookgate_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A gateway with one route of each kind, a URL-fed IP set, and small connection limits, so
/// that one round of traffic touches every series the dashboard shows.
const DASHBOARD_ROUTES: &str = r#"
limits:
  max_connections: 3
  header_timeout: 1s
ip_sets:
  office: { cidrs: [192.0.2.0/24] }
  feed: { url: "http://{upstream}/ips", refresh: 1h }
rate_limit: { per_second: 1000, burst: 1000, key: route }
upstreams:
  backend:
    url: http://{upstream}
  dead:
    url: http://{dead}
routes:
  - name: signed
    path: /signed
    upstream: backend
    rate_limit: { per_minute: 1, burst: 2 }
    verify: { provider: github, secrets: ["It's a Secret to Everybody"] }
  - name: office
    path: /office
    upstream: backend
    allow_ips: [office]
  - name: gone
    path: /gone
    upstream: dead
  - name: open
    path: /open/*
    upstream: backend
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_parse_and_name_only_metrics_a_scrape_shows() {
    let (exprs, variables) = dashboard_queries();
    assert!(exprs.len() >= 15, "{exprs:#?}");
    promtool_parses(
        &exprs
            .iter()
            .map(|e| without_grafana_variables(e))
            .collect::<Vec<_>>(),
    );

    let gw = TestGateway::start(DASHBOARD_ROUTES).await;
    let client = h2_client(&gw.certs);
    let sent = send_one_of_every_outcome(&gw, &client).await;
    // Not TLS on the TLS listener: a failed handshake.
    raw_exchange(
        gw.tls_addr(),
        b"GET / HTTP/1.1\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    // Silent connections to the plain listener: with the h2 client's one, the cap is reached
    // (the next is refused), and those that stay silent are closed at the first-byte deadline.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            tokio::net::TcpStream::connect(gw.plain_addr())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(silent);
    // An HTTP/2 connection whose first frame is not SETTINGS: a protocol error.
    raw_exchange(
        gw.plain_addr(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\0\0\0\0\0\0",
        Duration::from_millis(500),
    )
    .await;
    gw.log_lines(sent).await;

    // Some series appear a moment later: rate-limit key counts with the housekeeping round
    // (every 10 s), a protocol error when its connection's task ends.
    let url = format!(
        "http://{}/metrics",
        gw.gateway.as_ref().unwrap().admin_addr().unwrap()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = send(&plain_client(), "GET", &url, &[], "").await.unwrap();
        let scrape = String::from_utf8(body.to_vec()).unwrap();
        let scraped: BTreeSet<&str> = scrape
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let mut missing = BTreeSet::new();
        for query in exprs.iter().chain(&variables) {
            for name in metric_names(query) {
                // A histogram may be named bare (histogram_count(x)) or by its series.
                let known = scraped.contains(name.as_str())
                    || scraped.contains(format!("{name}_bucket").as_str());
                if !known {
                    missing.insert(name);
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard names metrics the gateway does not export: {missing:?}\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `systemd-analyze` from PATH or /usr/bin; on CI `.ci/run` installs Debian's `systemd`.
fn systemd_analyze() -> PathBuf {
    let tool = PathBuf::from("/usr/bin/systemd-analyze");
    assert!(
        tool.exists(),
        "systemd-analyze is missing (Debian: apt-get install systemd)"
    );
    tool
}

/// The unit as shipped, with ExecStart and friends pointing at the binary under test (verify
/// checks that each command exists and is executable).
fn unit_under_test(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/hookgate.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/hookgate run -c /etc/hookgate/gateway.yaml"));
    for setting in [
        "Type=exec",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=hookgate",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "SystemCallFilter=@system-service",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            unit.lines().any(|l| l == setting),
            "{setting} missing from the unit"
        );
    }
    let path = dir.join("hookgate.service");
    std::fs::write(&path, unit.replace("/usr/bin/hookgate", BIN)).unwrap();
    path
}

#[test]
fn systemd_unit_verifies_and_rates_ok_or_better() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let verify = Command::new(systemd_analyze())
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    // Unknown or misspelt settings are only warnings: any output is a failure too.
    assert!(
        verify.status.success() && text(&verify).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );
    let security = Command::new(systemd_analyze())
        .args(["security", "--offline=true", "--threshold=49", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = text(&security);
    let overall = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for hookgate.service: "))
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| panic!("no overall rating:\n{report}"));
    let mut words = overall.split_whitespace();
    let level: f64 = words.next().unwrap().parse().unwrap();
    let grade = words.next().unwrap();
    assert!(
        security.status.success() && level <= 4.9 && ["OK", "SAFE"].contains(&grade),
        "exposure {overall}; wanted OK (<= 4.9) or better:\n{report}"
    );
}
