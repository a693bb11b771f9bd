//! Certificates from an ACME (RFC 8555) server, proven with TLS-ALPN-01 (RFC 8737) on the
//! listener itself, or with HTTP-01 (RFC 8555 section 8.3) on the plain listeners.
//! `instant-acme` speaks the protocol; this module drives the order, serves the TLS-ALPN-01
//! challenge certificate through the listener's resolver or publishes the HTTP-01 token in the
//! shared store the plain listeners answer from (`pipeline::acme_challenge`), caches the account
//! key and the certificate, and renews at two thirds of the lifetime with backoff. It never
//! blocks a handshake: until a certificate is issued the listener serves its other certificates,
//! or a self-signed placeholder.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::config::{AcmeChallenge, AcmeConfig, Config};
use crate::observe::event;
use crate::observe::metrics::Metrics;
use crate::pipeline::acme_challenge::Http01Tokens;

/// The first retry after a failed order; doubled after each failure, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// What the listener's resolver reads: the issued certificate (if any), a placeholder, and
/// the TLS-ALPN-01 challenge certificates of the order in progress.
#[derive(Debug)]
pub struct AcmeSlot {
    pub domains: Vec<String>,
    issued: ArcSwapOption<CertifiedKey>,
    placeholder: ArcSwap<CertifiedKey>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl AcmeSlot {
    /// A slot for `domains`, with a certificate from the cache if one is there and still valid.
    pub fn new(config: &AcmeConfig) -> Result<AcmeSlot, String> {
        let placeholder = self_signed(&config.domains)?;
        let slot = AcmeSlot {
            domains: config.domains.clone(),
            issued: ArcSwapOption::empty(),
            placeholder: ArcSwap::from_pointee(placeholder),
            challenges: Mutex::new(HashMap::new()),
        };
        if let Some(cached) = load_cached(config) {
            slot.issued.store(Some(Arc::new(cached)));
        }
        Ok(slot)
    }

    /// The issued certificate, if there is one.
    pub fn issued(&self) -> Option<Arc<CertifiedKey>> {
        self.issued.load_full()
    }

    /// The issued certificate, or the placeholder.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.issued()
            .unwrap_or_else(|| self.placeholder.load_full())
    }

    /// The TLS-ALPN-01 certificate for `name`, while its challenge is open.
    pub fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges.lock().ok()?.get(name).cloned()
    }

    fn set_challenge(&self, name: &str, key: Option<Arc<CertifiedKey>>) {
        if let Ok(mut challenges) = self.challenges.lock() {
            match key {
                Some(key) => challenges.insert(name.to_string(), key),
                None => challenges.remove(name),
            };
        }
    }

    /// `(not_before, not_after)` of the issued certificate.
    fn validity(&self) -> Option<(i64, i64)> {
        let issued = self.issued()?;
        super::tls::validity(issued.cert.first()?.as_ref())
    }
}

/// Whether any listener proves its ACME domains with HTTP-01 (then the plain listeners answer
/// `/.well-known/acme-challenge/`).
pub fn uses_http01(config: &Config) -> bool {
    config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref()?.acme.as_ref())
        .any(|acme| acme.challenge == AcmeChallenge::Http01)
}

/// Runs the listener's ACME client until shutdown: orders a certificate when there is none, or
/// when two thirds of the current one's lifetime have passed; retries with backoff.
pub async fn run(
    listener: String,
    config: AcmeConfig,
    slot: Arc<AcmeSlot>,
    shared: Arc<crate::state::Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics = &shared.metrics;
    record_expiry(metrics, &listener, &slot);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let wait = match slot.validity() {
            None => Duration::ZERO,
            Some((not_before, not_after)) => {
                let renew_at = not_before + (not_after - not_before) * 2 / 3;
                let now = unix_now();
                Duration::from_secs(u64::try_from(renew_at - now).unwrap_or(0))
            }
        };
        tokio::select! {
            _ = super::stopping(&mut shutdown) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            _ = super::stopping(&mut shutdown) => return,
            outcome = order(&config, &slot, shared.acme_http01.as_ref()) => outcome,
        };
        for domain in &config.domains {
            slot.set_challenge(domain, None);
        }
        match outcome {
            Ok(()) => {
                metrics.count_acme_order(true);
                record_expiry(metrics, &listener, &slot);
                backoff = FIRST_BACKOFF;
                event(
                    "info",
                    "acme certificate issued",
                    serde_json::json!({
                        "listener": listener, "domains": config.domains,
                        "not_after": slot.validity().map(|(_, end)| end),
                        "seconds": started.elapsed().as_secs_f64(),
                    }),
                );
            }
            Err(why) => {
                metrics.count_acme_order(false);
                event(
                    "error",
                    "acme order failed; serving the current certificate, will retry",
                    serde_json::json!({
                        "listener": listener, "domains": config.domains, "error": why,
                        "retry_in_seconds": backoff.as_secs(),
                    }),
                );
                tokio::select! {
                    _ = super::stopping(&mut shutdown) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn record_expiry(metrics: &Metrics, listener: &str, slot: &AcmeSlot) {
    if let (Some((_, not_after)), Some(first)) = (slot.validity(), slot.domains.first()) {
        metrics.set_cert_expiry(listener, first, not_after);
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One order, start to finish; on success the slot serves the new certificate and the cache
/// holds it. `http01` is where HTTP-01 tokens are published (present when the config uses it).
async fn order(
    config: &AcmeConfig,
    slot: &AcmeSlot,
    http01: Option<&Http01Tokens>,
) -> Result<(), String> {
    ensure_cache_dir(&config.cache)?;
    let account = account(config).await?;
    let identifiers: Vec<Identifier> = config
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    // HTTP-01 tokens stay published until validation is over (or the order fails).
    let mut published = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => return Err(format!("authorization is {other:?}")),
        }
        let (kind, label) = match config.challenge {
            AcmeChallenge::TlsAlpn01 => (ChallengeType::TlsAlpn01, "tls-alpn-01"),
            AcmeChallenge::Http01 => (ChallengeType::Http01, "http-01"),
        };
        let mut challenge = authz
            .challenge(kind)
            .ok_or_else(|| format!("the server offers no {label} challenge"))?;
        match (config.challenge, http01) {
            (AcmeChallenge::TlsAlpn01, _) => {
                let name = challenge.identifier().to_string();
                let digest = challenge.key_authorization().digest();
                let cert = challenge_cert(&name, digest.as_ref())?;
                slot.set_challenge(&name, Some(Arc::new(cert)));
            }
            (AcmeChallenge::Http01, Some(tokens)) => {
                let key_authorization = challenge.key_authorization();
                published.push(tokens.publish(&challenge.token, key_authorization.as_str()));
            }
            (AcmeChallenge::Http01, None) => return Err("no plain listener for http-01".into()),
        }
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("challenge ready: {e}"))?;
    }
    let retries = RetryPolicy::new().timeout(Duration::from_secs(90));
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(|e| format!("waiting for the order: {e}"))?;
    // Validation is over: the tokens are answered no more.
    drop(published);
    if status != OrderStatus::Ready {
        return Err(format!("order is {status:?}, not ready"));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(config.domains.clone()).map_err(|e| format!("csr: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("csr: {e}"))?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    let key_pem = key.serialize_pem();
    let certified = certified_from_pem(&chain_pem, &key_pem)?;
    let (cert_path, key_path) = cache_paths(config);
    write_private(&key_path, key_pem.as_bytes())?;
    write_private(&cert_path, chain_pem.as_bytes())?;
    slot.issued.store(Some(Arc::new(certified)));
    Ok(())
}

/// The cached account, or a new one (then cached, 0600).
async fn account(config: &AcmeConfig) -> Result<Account, String> {
    let http = http_client(config)?;
    let path = config.cache.join("account.json");
    if let Ok(text) = std::fs::read(&path) {
        if let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&text) {
            return Account::builder_with_http(http)
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("account: {e}"));
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("new account: {e}"))?;
    let json = serde_json::to_vec(&credentials).map_err(|e| format!("account: {e}"))?;
    write_private(&path, &json)?;
    Ok(account)
}

/// HTTPS to the ACME server through the gateway's one HTTP client (`src/upstream`), trusting the
/// public roots, or `ca`'s. One upstream per origin the directory names (normally just one).
fn http_client(config: &AcmeConfig) -> Result<Box<dyn HttpClient>, String> {
    let ca = match &config.ca {
        Some(ca) => crate::config::read_certificates(ca)?,
        None => Vec::new(),
    };
    Ok(Box::new(AcmeHttp {
        ca,
        origins: Mutex::new(HashMap::new()),
    }))
}

struct AcmeHttp {
    ca: Vec<CertificateDer<'static>>,
    origins: Mutex<HashMap<http::uri::Authority, Arc<crate::upstream::Upstream>>>,
}

/// Bounds on one ACME exchange: answers are small JSON documents and certificate chains.
const ACME_TIMEOUT: Duration = Duration::from_secs(30);
const ACME_MAX_RESPONSE: u64 = 1024 * 1024;

impl AcmeHttp {
    fn upstream(
        &self,
        authority: &http::uri::Authority,
    ) -> Result<Arc<crate::upstream::Upstream>, instant_acme::Error> {
        let mut origins = self
            .origins
            .lock()
            .map_err(|_| instant_acme::Error::Str("ACME client state poisoned"))?;
        if let Some(upstream) = origins.get(authority) {
            return Ok(Arc::clone(upstream));
        }
        let config = crate::config::UpstreamConfig {
            name: format!("acme:{authority}"),
            scheme: crate::config::UpstreamScheme::Https,
            authority: authority.clone(),
            base_path: String::new(),
            timeout: ACME_TIMEOUT,
            connect_timeout: Duration::from_secs(10),
            max_response: ACME_MAX_RESPONSE,
            max_connections: 4,
            ca: self.ca.clone(),
        };
        let upstream = Arc::new(
            crate::upstream::Upstream::standalone(&config)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?,
        );
        origins.insert(authority.clone(), Arc::clone(&upstream));
        Ok(upstream)
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>,
    > {
        let (parts, body) = req.into_parts();
        let upstream = match (parts.uri.scheme_str(), parts.uri.authority()) {
            (Some("https"), Some(authority)) => self.upstream(authority),
            _ => Err(instant_acme::Error::Str("ACME URLs must be https://")),
        };
        Box::pin(async move {
            use http_body_util::BodyExt;
            let upstream = upstream?;
            let body = body
                .collect()
                .await
                .map_err(|e| instant_acme::Error::Other(e.into()))?
                .to_bytes();
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut head =
                crate::upstream::RequestHead::new(&parts.method, target, body.len() as u64);
            for (name, value) in &parts.headers {
                head.header(name, value);
            }
            let answer = upstream
                .send(head, &[body], &parts.method)
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            Ok(BytesResponse::from(
                answer.response.map(http_body_util::Full::new),
            ))
        })
    }
}

fn cache_paths(config: &AcmeConfig) -> (PathBuf, PathBuf) {
    let first = config.domains.first().map(String::as_str).unwrap_or("cert");
    (
        config.cache.join(format!("{first}.crt")),
        config.cache.join(format!("{first}.key")),
    )
}

/// The cached certificate if it covers every configured domain and has not expired.
fn load_cached(config: &AcmeConfig) -> Option<CertifiedKey> {
    let (cert_path, key_path) = cache_paths(config);
    let chain = std::fs::read_to_string(cert_path).ok()?;
    let key = std::fs::read_to_string(key_path).ok()?;
    let certified = certified_from_pem(&chain, &key).ok()?;
    let leaf = certified.cert.first()?;
    let names = super::tls::dns_names(leaf.as_ref());
    let (_, not_after) = super::tls::validity(leaf.as_ref())?;
    (config.domains.iter().all(|d| names.contains(d)) && not_after > unix_now())
        .then_some(certified)
}

fn certified_from_pem(chain: &str, key: &str) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e:?}"))?;
    if chain.is_empty() {
        return Err("no certificate in the chain".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|_| "no usable private key".to_string())?;
    CertifiedKey::from_der(chain, key, &super::tls::provider())
        .map_err(|e| format!("certificate and key: {e}"))
}

/// The self-signed certificate served for the domains until the first one is issued.
fn self_signed(domains: &[String]) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("placeholder key: {e}"))?;
    let params =
        rcgen::CertificateParams::new(domains.to_vec()).map_err(|e| format!("placeholder: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("placeholder: {e}"))?;
    certified(cert, &key)
}

/// The TLS-ALPN-01 certificate: self-signed for `name`, with the critical acmeIdentifier
/// extension carrying the SHA-256 of the key authorization (RFC 8737 section 3).
fn challenge_cert(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("challenge key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("challenge: {e}"))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("challenge: {e}"))?;
    certified(cert, &key)
}

fn certified(cert: rcgen::Certificate, key: &rcgen::KeyPair) -> Result<CertifiedKey, String> {
    // Not `CertifiedKey::from_der`: its consistency check parses the certificate with webpki,
    // which refuses the challenge certificate's critical acmeIdentifier extension. We made the
    // key and the certificate together here.
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    let key = super::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("key: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], key))
}

/// Creates the cache directory 0700 if it is missing.
pub fn ensure_cache_dir(dir: &Path) -> Result<(), String> {
    crate::files::create_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// Writes a file readable by the owner only (0600), replacing the old one atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
