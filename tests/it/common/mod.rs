//! The integration-test harness: a real gateway on 127.0.0.1:0 with TLS certificates from rcgen,
//! a recording upstream behind it, and real HTTP/1.1 and HTTP/2 clients. Nothing of the gateway
//! is mocked; the tests speak to it over sockets like any sender would.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookgate::server::Gateway;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

mod process;
mod promtool;
pub use process::GatewayProcess;
pub use promtool::promtool;

/// A CA and a `localhost` / `127.0.0.1` leaf signed by it, written as PEM files.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCerts {
    pub fn new() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "hookgate test CA");
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("leaf.crt");
        let key_path = dir.path().join("leaf.key");
        let certs = TestCerts {
            dir,
            ca_pem: ca.pem(),
            cert_path,
            key_path,
            issuer,
        };
        certs.write_new_leaf();
        certs
    }

    /// Issues a fresh `localhost` leaf from the same CA into the same files (a certificate
    /// rotation), valid for 90 days; returns its DER so a test can tell which one a server
    /// presents.
    pub fn write_new_leaf(&self) -> Vec<u8> {
        self.write_leaf_expiring(time::OffsetDateTime::now_utc() + time::Duration::days(90))
    }

    /// The same, with the leaf's notAfter at `not_after`.
    pub fn write_leaf_expiring(&self, not_after: time::OffsetDateTime) -> Vec<u8> {
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        // What a public CA issues: a key identifier of the issuer and a life under a year.
        params.use_authority_key_identifier_extension = true;
        params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec!["http://crl.hookgate.invalid/test-ca.crl".to_string()],
        }];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = not_after;
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        // Write the key first and the chain by rename, so a reader never sees a torn pair.
        std::fs::write(&self.key_path, leaf_key.serialize_pem()).unwrap();
        let tmp = self.dir.path().join("leaf.crt.tmp");
        std::fs::write(&tmp, format!("{}{}", leaf.pem(), self.ca_pem)).unwrap();
        std::fs::rename(&tmp, &self.cert_path).unwrap();
        leaf.der().to_vec()
    }
}

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The gateway's end of the upstream connection: the same for requests on one connection.
    pub peer: SocketAddr,
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP server that records every request. `/slow...` paths answer after 2 s, `/fail...`
/// paths answer 500, `/close...` paths close the connection after answering; every path answers
/// `upstream ok` with an `x-upstream: yes` header.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingUpstream {
    pub async fn start() -> RecordingUpstream {
        Self::start_with_tls(None).await
    }

    /// The same upstream behind TLS (for `https://` upstreams with a private `ca:`).
    pub async fn start_tls(certs: &TestCerts) -> RecordingUpstream {
        use rustls_pki_types::pem::PemObject;
        let chain = rustls_pki_types::CertificateDer::pem_file_iter(&certs.cert_path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&certs.key_path).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        Self::start_with_tls(Some(Arc::new(config))).await
    }

    async fn start_with_tls(tls: Option<Arc<rustls::ServerConfig>>) -> RecordingUpstream {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = socket.accept().await else {
                    return;
                };
                let record = Arc::clone(&record);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let record = Arc::clone(&record);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let slow = parts.uri.path().starts_with("/slow");
                            let fail = parts.uri.path().starts_with("/fail");
                            let close = parts.uri.path().starts_with("/close");
                            record.lock().unwrap().push(Seen {
                                peer,
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            if slow {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                            }
                            let mut response =
                                Response::new(Full::new(Bytes::from_static(b"upstream ok")));
                            response
                                .headers_mut()
                                .insert("x-upstream", "yes".parse().unwrap());
                            if fail {
                                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            if close {
                                response
                                    .headers_mut()
                                    .insert("connection", "close".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(tls) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(tls).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        RecordingUpstream { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An address where nothing listens (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    socket.local_addr().unwrap()
}

/// A gateway started in-process from a YAML file written to a temp dir. In the YAML,
/// `{upstream}` becomes the recording upstream's address, `{dead}` a closed port, `{cert}` and
/// `{key}` the test certificate files.
pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub certs: TestCerts,
    pub upstream: RecordingUpstream,
    pub dir: tempfile::TempDir,
    pub log_path: PathBuf,
}

pub const LISTENERS: &str = r#"
listeners:
  - name: public
    bind: 127.0.0.1:0
    tls: { cert: "{cert}", key: "{key}" }
  - name: plain
    bind: 127.0.0.1:0
admin:
  bind: 127.0.0.1:0
access_log: "{log}"
"#;

impl TestGateway {
    /// `body` is the rest of the config after the listeners: limits, upstreams, routes.
    pub async fn start(body: &str) -> TestGateway {
        Self::start_with_listeners(LISTENERS, body).await
    }

    /// Like [`TestGateway::start`] with other listeners (same placeholders; listener names
    /// `public` and `plain` are what the URL helpers look for).
    pub async fn start_with_listeners(listeners: &str, body: &str) -> TestGateway {
        let certs = TestCerts::new();
        let upstream = RecordingUpstream::start().await;
        let dead = closed_port().await;
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("access.log");
        let yaml = fill_placeholders(
            &format!("{listeners}{body}"),
            &certs,
            upstream.addr,
            dead,
            &log_path,
        );
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, yaml).unwrap();
        let config = hookgate::config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::start(config).await.unwrap();
        TestGateway {
            gateway: Some(gateway),
            certs,
            upstream,
            dir,
            log_path,
        }
    }

    fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    pub fn https_url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.gateway().addr("public").unwrap().port()
        )
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway().addr("plain").unwrap())
    }

    pub fn plain_addr(&self) -> SocketAddr {
        self.gateway().addr("plain").unwrap()
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.gateway().addr("public").unwrap()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Waits until the access log has at least `n` lines, then returns them all parsed.
    pub async fn log_lines(&self, n: usize) -> Vec<serde_json::Value> {
        for _ in 0..200 {
            let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines: Vec<_> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "access log never reached {n} lines: {:?}",
            std::fs::read_to_string(&self.log_path)
        );
    }

    /// The last access-log line once there are `n`.
    pub async fn log_line(&self, n: usize) -> serde_json::Value {
        self.log_lines(n).await.pop().unwrap()
    }

    /// Scrapes `/metrics` and returns `series{labels} -> value` for every sample line.
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let url = format!("http://{}/metrics", self.gateway().admin_addr().unwrap());
        let (status, _, body) = send(&plain_client(), "GET", &url, &[], Bytes::new())
            .await
            .unwrap();
        assert_eq!(status, 200);
        parse_metrics(std::str::from_utf8(&body).unwrap())
    }

    /// Reloads the config file (as SIGHUP does).
    pub fn reload(&self) -> Result<(), String> {
        self.gateway().reload(&self.config_path()).map(|_| ())
    }

    /// Rewrites the config file: `edit` gets the current text.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config_path()).unwrap();
        std::fs::write(self.config_path(), edit(text)).unwrap();
    }

    /// Drains and stops the gateway; the returned temp dir keeps its files (the access log)
    /// readable until it is dropped.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        self.gateway.take().unwrap().shutdown().await;
        self.dir
    }
}

/// The config text with its placeholders filled in (see [`TestGateway`]).
pub fn fill_placeholders(
    yaml: &str,
    certs: &TestCerts,
    upstream: SocketAddr,
    dead: SocketAddr,
    log_path: &Path,
) -> String {
    yaml.replace("{upstream}", &upstream.to_string())
        .replace("{dead}", &dead.to_string())
        .replace("{cert}", certs.cert_path.to_str().unwrap())
        .replace("{key}", certs.key_path.to_str().unwrap())
        .replace("{log}", log_path.to_str().unwrap())
}

pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

pub type TestClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn tls_connector(ca_pem: &str, h2: bool) -> hyper_rustls::HttpsConnector<HttpConnector> {
    let tls = tls_client_config(ca_pem);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if h2 {
        builder.enable_http2().build()
    } else {
        builder.enable_http1().build()
    }
}

/// An HTTP/1.1 client that trusts the test CA.
pub fn h1_client(certs: &TestCerts) -> TestClient {
    Client::builder(TokioExecutor::new()).build(tls_connector(&certs.ca_pem, false))
}

/// An HTTP/2-only client that trusts the test CA (ALPN h2).
pub fn h2_client(certs: &TestCerts) -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(tls_connector(&certs.ca_pem, true))
}

pub fn plain_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(tls_connector("", false))
}

/// Sends one request and returns status, headers and the whole body.
pub async fn send(
    client: &TestClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<(u16, HeaderMap, Bytes), hyper_util::client::legacy::Error> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((parts.status.as_u16(), parts.headers, body))
}

/// Writes raw bytes to a plain listener and reads until the server closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    raw_exchange_from("127.0.0.1", addr, bytes, wait).await
}

/// Like [`raw_exchange`] from another loopback source address (127.0.0.2 is another peer).
pub async fn raw_exchange_from(
    source: &str,
    addr: SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A request to send and the status it must get: path, headers, status.
pub type Probe<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);

/// Over HTTP/2 and TLS, one request of each outcome a gateway with routes `signed` (GitHub
/// signature, burst 2 a minute), `office` (allowlist without loopback), `gone` (a dead
/// upstream) and `open/*` can give: forwarded, refused by signature, limit and allowlist, 502,
/// and no route, on `client` (the caller's: its connection stays open). Returns how many
/// requests were sent.
pub async fn send_one_of_every_outcome(gw: &TestGateway, client: &TestClient) -> usize {
    let sig = [(
        "x-hub-signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )];
    let traffic: &[Probe] = &[
        ("/signed", &sig, 200),
        ("/signed", &[], 401),
        ("/signed", &sig, 429),
        ("/office", &[], 403),
        ("/gone", &[], 502),
        ("/open/a", &[], 200),
        ("/nothing", &[], 404),
    ];
    for (path, headers, want) in traffic {
        let (status, _, _) = send(
            client,
            "POST",
            &gw.https_url(path),
            headers,
            "Hello, World!",
        )
        .await
        .unwrap();
        assert_eq!(status, *want, "{path}");
    }
    traffic.len()
}

/// The DER of the certificate a TLS server presents on a new connection.
pub async fn presented_certificate(addr: SocketAddr, certs: &TestCerts) -> Vec<u8> {
    leaf_trusted_by(addr, &certs.ca_pem)
        .await
        .expect("a certificate the test CA signed")
}

/// The leaf a TLS listener presents for `localhost`, if a client trusting only `ca_pem`
/// accepts it.
pub async fn leaf_trusted_by(addr: SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(ca_pem)));
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
}

/// A rustls client configuration that trusts only the certificates in `ca_pem`.
pub fn tls_client_config(ca_pem: &str) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A Python virtualenv under `target/NAME` with `requirements` (pip lines) installed; rebuilt
/// only when the requirements change. Returns the venv's folder. Tests running side by side
/// build one venv at a time, so two that need the same one do not both install into it.
pub fn python_venv(name: &str, requirements: &str) -> PathBuf {
    use std::process::Command;
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _building = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let stamp = venv.join("hookgate-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(requirements) {
        return venv;
    }
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        created,
        "python3 -m venv failed (Debian: apt-get install python3-venv)"
    );
    let wanted = venv.join("requirements.txt");
    std::fs::write(&wanted, requirements).unwrap();
    let installed = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&wanted)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "pip install into target/{name} failed:\n{requirements}"
    );
    std::fs::write(&stamp, requirements).unwrap();
    venv
}

/// A leaf for `names` signed by the test CA, written as `<stem>.crt` (leaf + CA) and
/// `<stem>.key` in the CA's folder: ECDSA P-256, or RSA 2048 (made by `openssl`, as ring cannot
/// generate RSA keys). Returns the two paths and the leaf's DER.
pub fn write_named_leaf(
    certs: &TestCerts,
    stem: &str,
    names: &[&str],
    rsa: bool,
) -> (PathBuf, PathBuf, Vec<u8>) {
    let leaf_key = if rsa {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl genpkey");
        assert!(out.status.success(), "openssl genpkey failed");
        rcgen::KeyPair::from_pem_and_sign_algo(
            std::str::from_utf8(&out.stdout).unwrap(),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap()
    } else {
        rcgen::KeyPair::generate().unwrap()
    };
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(60);
    let leaf = params.signed_by(&leaf_key, &certs.issuer).unwrap();
    let cert_path = certs.dir.path().join(format!("{stem}.crt"));
    let key_path = certs.dir.path().join(format!("{stem}.key"));
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    let tmp = certs.dir.path().join(format!("{stem}.crt.tmp"));
    std::fs::write(&tmp, format!("{}{}", leaf.pem(), certs.ca_pem)).unwrap();
    std::fs::rename(&tmp, &cert_path).unwrap();
    (cert_path, key_path, leaf.der().to_vec())
}

/// Accepts any server certificate, offering only the signature schemes given (all of ring's
/// when empty): for tests that look at which certificate a server picks.
#[derive(Debug)]
struct AnyCertificate(Vec<rustls::SignatureScheme>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        if self.0.is_empty() {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        } else {
            self.0.clone()
        }
    }
}

/// The leaf DER a TLS server presents to a client sending SNI `sni` (none when `None`) and
/// offering only `schemes` (all when empty). Verifies nothing: it looks.
pub async fn presented_for(
    addr: SocketAddr,
    sni: Option<&str>,
    schemes: &[rustls::SignatureScheme],
) -> Vec<u8> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate(schemes.to_vec())))
    .with_no_client_auth();
    config.enable_sni = sni.is_some();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(sni.unwrap_or("localhost"))
        .unwrap()
        .to_owned();
    let tls = connector.connect(name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// An HTTP/1.1 client trusting the roots in `ca_pem`; with `fresh`, every request opens a new
/// connection (so a new handshake sees the certificate served now).
pub fn client_trusting(ca_pem: &str, fresh: bool) -> TestClient {
    let mut builder = Client::builder(TokioExecutor::new());
    if fresh {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(tls_connector(ca_pem, false))
}

/// A port on 127.0.0.1 that was free a moment ago, for servers that must be told their port
/// before they start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// sslyze (pinned, in `target/sslyze-venv`) with the test CA `ca_pem` added to its own Mozilla
/// trust stores (the only way to give it a trusted chain without a public CA); returns the
/// sslyze binary. Each test has its own CA and scans may run side by side: the stores are the
/// shipped ones plus every CA added by this process, so adding one never drops another's, and
/// each store is replaced whole (by rename) so a scan under way never reads half a file.
pub fn sslyze_with_ca(ca_pem: &str) -> PathBuf {
    static ADDED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let venv = python_venv("sslyze-venv", "sslyze==6.3.1");
    let mut added = ADDED.lock().unwrap_or_else(|e| e.into_inner());
    added.push(ca_pem.to_string());
    let stores = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|python| {
            python
                .path()
                .join("site-packages/sslyze/plugins/certificate_info/trust_stores/pem_files")
        })
        .find(|p| p.exists())
        .expect("sslyze trust stores");
    for store in std::fs::read_dir(stores)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
    {
        if store.extension().is_some_and(|e| e == "pem") {
            let shipped = store.with_extension("pem.shipped");
            if !shipped.exists() {
                std::fs::copy(&store, &shipped).unwrap();
            }
            let pem = std::fs::read_to_string(&shipped).unwrap();
            let tmp = store.with_extension("pem.tmp");
            std::fs::write(&tmp, format!("{pem}\n{}", added.join("\n"))).unwrap();
            std::fs::rename(&tmp, &store).unwrap();
        }
    }
    venv.join("bin/sslyze")
}

/// A real `redis-server` (Debian's package) on a free loopback port, without persistence.
/// Killed when dropped. Fails the test, with what to install, when the binary is missing.
pub struct RedisServer {
    pub port: u16,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// A free port is only free until someone takes it: when the server cannot start on the
    /// one picked (it exits, or never answers), it is tried again on another, three times.
    pub async fn start() -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            child: None,
        };
        for _ in 0..3 {
            server.port = {
                let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                socket.local_addr().unwrap().port()
            };
            server.spawn();
            if server.ready().await {
                return server;
            }
            server.kill();
        }
        panic!("redis-server did not start on three free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.spawn();
        assert!(
            self.ready().await,
            "redis-server on port {} never answered PING",
            self.port
        );
    }

    /// Waits (up to 10 s, a loaded CI machine included) for PING; false at once if it exited.
    async fn ready(&mut self) -> bool {
        for _ in 0..1000 {
            if self.ping().await {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| child.try_wait().ok().flatten().is_some());
            if exited {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    fn spawn(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}); these tests need a real one: \
                     apt-get install redis-server"
                )
            });
        self.child = Some(child);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`true`) or thaws the server: connections stay open, nothing is answered.
    pub fn freeze(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let done = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(done, "kill {signal} redis-server");
        }
    }

    async fn ping(&self) -> bool {
        match self.connection().await {
            Some(mut conn) => redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .is_ok(),
            None => false,
        }
    }

    pub async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url()).ok()?;
        tokio::time::timeout(
            Duration::from_millis(500),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()
    }

    /// Runs one command and returns its answer.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self.connection().await.expect("connect to the test redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port that accepts connections and never answers (a hung Redis, a blackholed host).
pub async fn blackhole_port() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = socket.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A real `redis-server` that speaks only TLS (`--port 0 --tls-port N`, Debian's build has
/// TLS), presenting the leaf of `certs`; clients are not asked for a certificate. Its CA is
/// written next to the leaf as `redis-ca.pem` ([`TlsRedisServer::ca_path`]). Killed when
/// dropped.
pub struct TlsRedisServer {
    pub port: u16,
    pub ca_path: PathBuf,
    ca_pem: Vec<u8>,
    child: Option<std::process::Child>,
}

impl TlsRedisServer {
    /// Tried on up to three free ports, like [`RedisServer::start`].
    pub async fn start(certs: &TestCerts) -> TlsRedisServer {
        let ca_path = certs.dir.path().join("redis-ca.pem");
        std::fs::write(&ca_path, &certs.ca_pem).unwrap();
        for _ in 0..3 {
            let port = free_port();
            let child = std::process::Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--tls-cert-file", path_str(&certs.cert_path)])
                .args(["--tls-key-file", path_str(&certs.key_path)])
                .args(["--tls-ca-cert-file", path_str(&ca_path)])
                .args(["--tls-auth-clients", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run redis-server ({e}); apt-get install redis-server")
                });
            let mut server = TlsRedisServer {
                port,
                ca_path: ca_path.clone(),
                ca_pem: certs.ca_pem.clone().into_bytes(),
                child: Some(child),
            };
            for _ in 0..1000 {
                if server.connection().await.is_some() {
                    return server;
                }
                let exited = server
                    .child
                    .as_mut()
                    .is_none_or(|child| child.try_wait().ok().flatten().is_some());
                if exited {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if let Some(mut child) = server.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        panic!("a TLS redis-server did not start on three free ports");
    }

    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A TLS connection trusting the test CA, once PING is answered.
    pub async fn connection(&self) -> Option<redis::aio::MultiplexedConnection> {
        let client = redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem.clone()),
            },
        )
        .ok()?;
        let mut conn = tokio::time::timeout(
            Duration::from_millis(500),
            client.get_multiplexed_async_connection(),
        )
        .await
        .ok()?
        .ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()?;
        Some(conn)
    }

    /// Runs one command and returns its answer.
    pub async fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = self
            .connection()
            .await
            .expect("connect to the TLS test redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.unwrap()
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
