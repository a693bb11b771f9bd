//! promtool, for the modules that lint metrics and test alert rules with the Prometheus
//! project's own tool.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// promtool from PATH, or extracted from Debian's `prometheus` package into `target/` (no
/// install, no service started). Tests running side by side fetch it once: the first one
/// downloads while the others wait.
pub fn promtool() -> PathBuf {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _fetching = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("promtool");
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/promtool");
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
