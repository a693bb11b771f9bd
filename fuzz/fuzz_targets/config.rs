//! Fuzzes config loading: `hookgate::config::parse_and_validate` on arbitrary YAML text (what
//! `load` does after reading the file), plus the unit and `${ENV}` helpers it is built on.
//!
//! Checked beyond "never panics":
//! - an error never contains the value of an environment variable (config/validate.rs: "It never
//!   prints a value that came from the environment, since those are where secrets live"), unless
//!   the YAML text itself contains that value;
//! - `expand_env` errors never contain an environment value either.
//!
//! Relative paths in the config resolve against a scratch folder made once per process that
//! holds a self-signed `certs/localhost.{crt,key}` and `ips/partners.txt`, so configs with TLS
//! listeners and file-backed ip_sets get past the file reads and into the rest of validation.
#![no_main]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// Environment for `${NAME}`. Values are distinctive and none is a part of another, so finding
/// one in an error means it was expanded from the environment and printed.
const ENV: &[(&str, &str)] = &[
    ("GITHUB_WEBHOOK_SECRET", "hgfz-secret-Kq7w"),
    ("GITHUB_WEBHOOK_SECRET_OLD", "hgfz-secret-Xm2p"),
    ("CUSTOM_SECRET", "hgfz-secret-Rt9v"),
    ("SECRET", "hgfz-secret-Lb4n"),
    ("BIND", "hgfz-secret-Zc8d"),
];

struct Fixture {
    source: PathBuf,
    env: HashMap<String, String>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hookgate-fuzz-config-{}", std::process::id()));
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(certs.join("localhost.crt"), certified.cert.pem()).unwrap();
        std::fs::write(
            certs.join("localhost.key"),
            certified.signing_key.serialize_pem(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("ips")).unwrap();
        std::fs::write(
            dir.join("ips/partners.txt"),
            "# partners\n192.0.2.0/24\n2001:db8::/32 # v6\n\n198.51.100.7\n",
        )
        .unwrap();
        Fixture {
            source: dir.join("gateway.yaml"),
            env: ENV
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    })
}

/// Paths the fuzzer must not make the loader read: device files block or never end
/// (`/dev/zero`, `/dev/stdin`), /proc and /sys files can be huge or slow. A YAML escape could
/// still spell them; these filters keep the run deterministic, they are not a security boundary.
fn reads_special_files(text: &str) -> bool {
    [
        "dev", "proc", "sys", "fd", "\\x", "\\u", "\\U", "\\\n", "\\\r",
    ]
    .iter()
    .any(|bad| text.contains(bad))
}

fn leaked<'a>(message: &str, text: &str, env: &'a HashMap<String, String>) -> Option<&'a str> {
    env.values()
        .map(String::as_str)
        .find(|v| message.contains(*v) && !text.contains(*v))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fx = fixture();

    // The small helpers, straight.
    let _ = hookgate::config::units::parse_duration(text);
    let _ = hookgate::config::units::parse_size(text);
    if let Err(message) = hookgate::config::secrets::expand_env(text, &fx.env) {
        if let Some(v) = leaked(&message, text, &fx.env) {
            panic!(
                "expand_env error shows the value of an environment variable ({v:?}): {message}"
            );
        }
    }

    if reads_special_files(text) {
        return;
    }
    if let Err(e) = hookgate::config::parse_and_validate(text, &fx.source, fx.env.clone()) {
        let message = e.to_string();
        if let Some(v) = leaked(&message, text, &fx.env) {
            panic!("config error shows the value of an environment variable ({v:?}): {message}");
        }
    }
});
