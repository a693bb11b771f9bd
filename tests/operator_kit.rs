//! The operator's kit (issue 19), each piece checked by its own ecosystem's tool so it cannot
//! rot: the JSON Schema of gateway.yaml is what `hookgate schema` prints and `check-jsonschema`
//! (PyPI) accepts every config in the repository with it and refuses known-bad ones; the alert
//! rules pass `promtool test rules`; every query of the Grafana dashboard parses (promtool) and
//! names only metrics a real scrape shows; the systemd unit passes `systemd-analyze verify` and
//! scores "OK" or better in `systemd-analyze security`; completions and the man page name every
//! subcommand and the bash script parses.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::*;

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

/// Every config in the repository that is meant to load: gateway.yaml, the README's
/// configuration example, the fuzz seeds (their shapes are right; one names a missing upstream,
/// which only `hookgate check` can know) and the configs the integration tests start gateways
/// with (`const NAME: &str = r#"..."#` holding `routes:`, after the harness's listeners).
fn repository_configs(dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![repo().join("gateway.yaml")];
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
    let mut tests: Vec<PathBuf> = std::fs::read_dir(repo().join("tests"))
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

/// promtool from PATH, or extracted from Debian's `prometheus` package into `target/` (no
/// install, no service started), as tests/exposition.rs does.
fn promtool() -> PathBuf {
    static ONCE: Mutex<()> = Mutex::new(());
    let _one_at_a_time = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("promtool");
    }
    let dir = repo().join("target/promtool");
    let tool = dir.join("usr/bin/promtool");
    if !tool.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let download = || {
            Command::new("apt-get")
                .args(["download", "prometheus"])
                .current_dir(&dir)
                .status()
                .is_ok_and(|s| s.success())
        };
        let fetched = download()
            || (Command::new("apt-get")
                .arg("update")
                .status()
                .is_ok_and(|s| s.success())
                && download());
        assert!(
            fetched,
            "could not fetch Debian's prometheus package for promtool"
        );
        let deb = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap();
        assert!(Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&dir)
            .status()
            .unwrap()
            .success());
    }
    tool
}

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
