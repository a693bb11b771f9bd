//! Builds the rustls server side of a TLS listener: TLS 1.2 and 1.3 only, ALPN for h2 and
//! http/1.1, the server's cipher order, all from the one crypto provider (ring) in the build.
//! It never reads files; the config loader already did.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::TlsMaterial;

pub fn server_config(material: &TlsMaterial) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Scanners flag servers that let the client pick a weak suite; ours are all strong, but the
    // server's order (AEADs with forward secrecy, strongest first) is the one to follow.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// The log's name for a negotiated TLS version.
pub fn version_name(version: Option<rustls::ProtocolVersion>) -> Option<&'static str> {
    match version? {
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        _ => Some("other"),
    }
}

/// When the listener's certificate (the first of its chain) expires, in Unix seconds, for
/// `hookgate_tls_cert_not_after_timestamp_seconds`. `None` if it does not parse as X.509,
/// which rustls, having accepted it, makes unlikely.
pub fn not_after(material: &TlsMaterial) -> Option<i64> {
    use x509_cert::der::Decode;
    let leaf = material.chain.first()?;
    let cert = x509_cert::Certificate::from_der(leaf.as_ref()).ok()?;
    let not_after = cert.tbs_certificate().validity().not_after;
    i64::try_from(not_after.to_unix_duration().as_secs()).ok()
}
