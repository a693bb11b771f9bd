//! Builds the rustls server side of a TLS listener: TLS 1.2 and 1.3 only, ALPN for h2 and
//! http/1.1, the server's cipher order, all from the one crypto provider (ring) in the build.
//! The certificate for each handshake is chosen by [`SniResolver`]: by the client's SNI (exact
//! names, then `*.` wildcards), then by the signature schemes the client offers (so an ECDSA and
//! an RSA certificate for the same name can sit side by side), with the first configured
//! certificate as the default. ACME certificates and TLS-ALPN-01 challenge certificates come
//! from the listener's [`AcmeSlot`](super::acme::AcmeSlot).
//! It never reads files; the config loader already did.

use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use super::acme::AcmeSlot;
use crate::config::{TlsConfig, TlsMaterial};

/// The ALPN protocol of RFC 8737's TLS-ALPN-01 challenge.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One configured certificate and the names it is served for.
#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// Chooses a listener's certificate per handshake.
#[derive(Debug)]
pub struct SniResolver {
    entries: Vec<Entry>,
    acme: Option<Arc<AcmeSlot>>,
}

/// The rustls provider every listener uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl SniResolver {
    /// Loads every configured certificate with its key (refusing a key that does not match its
    /// certificate) and learns its names.
    pub fn new(tls: &TlsConfig, acme: Option<Arc<AcmeSlot>>) -> Result<SniResolver, rustls::Error> {
        let provider = provider();
        let mut entries = Vec::new();
        for material in &tls.certs {
            let key = CertifiedKey::from_der(
                material.chain.clone(),
                material.key.clone_key(),
                &provider,
            )?;
            entries.push(Entry {
                names: names(material),
                key: Arc::new(key),
            });
        }
        Ok(SniResolver { entries, acme })
    }

    fn choose(&self, name: Option<&str>, hello: &ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut candidates: Vec<Arc<CertifiedKey>> = Vec::new();
        if let Some(name) = name {
            candidates.extend(
                self.entries
                    .iter()
                    .filter(|e| e.names.iter().any(|n| n == name))
                    .map(|e| Arc::clone(&e.key)),
            );
            if let Some(acme) = &self.acme {
                if acme.domains.iter().any(|d| d == name) {
                    if let Some(live) = acme.issued() {
                        candidates.push(live);
                    }
                }
            }
            candidates.extend(
                self.entries
                    .iter()
                    .filter(|e| e.names.iter().any(|n| wildcard_matches(n, name)))
                    .map(|e| Arc::clone(&e.key)),
            );
            if candidates.is_empty() {
                if let Some(acme) = &self.acme {
                    if acme.domains.iter().any(|d| d == name) {
                        candidates.push(acme.current());
                    }
                }
            }
        }
        if candidates.is_empty() {
            // The default: the first certificate and any other for exactly the same names (its
            // RSA or ECDSA twin); ACME's when no file is configured.
            match self.entries.first() {
                Some(first) => candidates.extend(
                    self.entries
                        .iter()
                        .filter(|e| e.names == first.names)
                        .map(|e| Arc::clone(&e.key)),
                ),
                None => candidates.extend(self.acme.as_ref().map(|a| a.current())),
            }
        }
        let schemes = hello.signature_schemes();
        candidates
            .iter()
            .find(|k| k.key.choose_scheme(schemes).is_some())
            .or(candidates.first())
            .cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name().map(|n| n.to_ascii_lowercase());
        let wants_challenge = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if wants_challenge {
            // Only a validation server asks for acme-tls/1, and it gets the challenge
            // certificate or nothing (RFC 8737 section 3).
            return self.acme.as_ref()?.challenge(name.as_deref()?);
        }
        self.choose(name.as_deref(), &hello)
    }
}

/// `*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((first, rest)) => !first.is_empty() && rest == suffix,
        None => false,
    }
}

/// The names a certificate is served for: the configured ones, else its DNS SANs.
fn names(material: &TlsMaterial) -> Vec<String> {
    if !material.names.is_empty() {
        return material.names.clone();
    }
    material
        .chain
        .first()
        .map(|leaf| dns_names(leaf.as_ref()))
        .unwrap_or_default()
}

/// The DNS names in a certificate's subjectAltName, lower case, in order.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    use x509_cert::der::oid::AssociatedOid;
    use x509_cert::der::Decode;
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let Ok(cert) = x509_cert::Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for ext in cert.tbs_certificate().extensions().into_iter().flatten() {
        if ext.extn_id != SubjectAltName::OID {
            continue;
        }
        let Ok(san) = SubjectAltName::from_der(ext.extn_value.as_bytes()) else {
            continue;
        };
        for general in san.0 {
            if let GeneralName::DnsName(dns) = general {
                names.push(dns.as_str().to_ascii_lowercase());
            }
        }
    }
    names
}

pub fn server_config(resolver: Arc<SniResolver>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let acme = resolver.acme.is_some();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if acme {
        // Offered last: only a validation server asks for it, and it asks for nothing else.
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    // Scanners flag servers that let the client pick a weak suite; ours are all strong, but the
    // server's order (AEADs with forward secrecy, strongest first) is the one to follow.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The resolver and server config for a listener's `tls:` block.
pub fn build(
    tls: &TlsConfig,
    acme: Option<Arc<AcmeSlot>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config(Arc::new(SniResolver::new(tls, acme)?))
}

/// The expiry series of a listener's configured certificates: `(sni, not_after)`, where `sni`
/// is the certificate's first name (empty for the single-certificate `tls: { cert, key }`).
pub fn expiries(tls: &TlsConfig) -> Vec<(String, i64)> {
    tls.certs
        .iter()
        .filter_map(|material| {
            let sni = if tls.single {
                String::new()
            } else {
                names(material).into_iter().next().unwrap_or_default()
            };
            Some((sni, not_after(material.chain.first()?.as_ref())?))
        })
        .collect()
}

/// The log's name for a negotiated TLS version.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> Option<&'static str> {
    match version? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("other"),
    }
}

/// When a certificate expires, in Unix seconds, for
/// `hookgate_tls_cert_not_after_timestamp_seconds`. `None` if it does not parse as X.509,
/// which rustls, having accepted it, makes unlikely.
pub fn not_after(der: &[u8]) -> Option<i64> {
    validity(der).map(|(_, not_after)| not_after)
}

/// A certificate's `(not_before, not_after)` in Unix seconds.
pub fn validity(der: &[u8]) -> Option<(i64, i64)> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let validity = cert.tbs_certificate().validity();
    let secs = |t: x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).ok();
    Some((secs(validity.not_before)?, secs(validity.not_after)?))
}

#[cfg(test)]
mod tests {
    use super::wildcard_matches;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_matches("*.example.com", "a.example.com"));
        assert!(!wildcard_matches("*.example.com", "example.com"));
        assert!(!wildcard_matches("*.example.com", "a.b.example.com"));
        assert!(!wildcard_matches("a.example.com", "a.example.com"));
    }
}
