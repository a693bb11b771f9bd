//! The real binary as a child process, for tests that measure the gateway's own process (its
//! open file descriptors): a gateway started in-process shares the test binary's descriptor
//! table with every test running beside it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{closed_port, fill_placeholders, RecordingUpstream, TestCerts, LISTENERS};

/// `hookgate run` on a config made as [`super::TestGateway::start`] makes it (same
/// placeholders, same `public` and `plain` listeners). Killed when dropped.
pub struct GatewayProcess {
    child: Child,
    pub certs: TestCerts,
    pub upstream: RecordingUpstream,
    pub dir: tempfile::TempDir,
    plain: SocketAddr,
    tls: SocketAddr,
}

impl GatewayProcess {
    /// `body` is the rest of the config after the listeners: limits, upstreams, routes.
    pub async fn start(body: &str) -> GatewayProcess {
        let certs = TestCerts::new();
        let upstream = RecordingUpstream::start().await;
        let dead = closed_port().await;
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("access.log");
        let yaml = fill_placeholders(
            &format!("{LISTENERS}{body}"),
            &certs,
            upstream.addr,
            dead,
            &log_path,
        );
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let events = dir.path().join("stderr.log");
        let child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["run", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&events).unwrap())
            .spawn()
            .unwrap();
        let mut gateway = GatewayProcess {
            child,
            certs,
            upstream,
            dir,
            // Until the binary names them.
            plain: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        // The binary announces each listener's address once it is bound (port 0 in the config).
        let until = Instant::now() + Duration::from_secs(20);
        let (mut plain, mut tls) = (None, None);
        while plain.is_none() || tls.is_none() {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            for event in text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| e["msg"] == "listening")
            {
                let addr = event["addr"].as_str().and_then(|a| a.parse().ok());
                match event["listener"].as_str() {
                    Some("plain") => plain = addr,
                    Some("public") => tls = addr,
                    _ => {}
                }
            }
            let exited = gateway.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < until,
                "the gateway did not start ({exited:?}): {text}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gateway.plain = plain.unwrap();
        gateway.tls = tls.unwrap();
        gateway
    }

    pub fn plain_addr(&self) -> SocketAddr {
        self.plain
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.tls
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.plain)
    }

    /// The gateway process's open file descriptors.
    pub fn open_fds(&self) -> usize {
        let fds = PathBuf::from(format!("/proc/{}/fd", self.child.id()));
        std::fs::read_dir(fds).unwrap().count()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
