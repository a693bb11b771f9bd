//! Validates `tls.acme.challenge`: which ACME challenge proves the domains, and, for HTTP-01,
//! that a plain listener exists to answer it. Errors name file:line:col and the field path like
//! the rest of the config. The other `acme:` keys are checked in `acme_config` (validate.rs).

use super::super::raw::{RawAcme, RawConfig};
use super::super::{AcmeChallenge, ListenerConfig};
use super::{ConfigError, Ctx};

/// `challenge:` of one `acme:` block; `tls-alpn-01` when absent.
pub(super) fn challenge(
    ctx: &Ctx,
    raw: &RawAcme,
    field: &str,
) -> Result<AcmeChallenge, ConfigError> {
    let Some(value) = &raw.challenge else {
        return Ok(AcmeChallenge::TlsAlpn01);
    };
    let field = format!("{field}.challenge");
    match ctx.text(value, &field)?.as_str() {
        "tls-alpn-01" => Ok(AcmeChallenge::TlsAlpn01),
        "http-01" => Ok(AcmeChallenge::Http01),
        other => Err(ctx.err(
            &value.referenced,
            field,
            format!("{other:?}: expected tls-alpn-01 or http-01"),
        )),
    }
}

/// HTTP-01 is answered by the plain listeners, so an `acme:` block that chooses it needs at
/// least one. Its port is not checked: a real CA connects to port 80, but the listener may bind
/// another port that a NAT or container maps port 80 to (and a test CA can be told the port).
pub(super) fn check_http01_listener(
    ctx: &Ctx,
    raw: &RawConfig,
    listeners: &[ListenerConfig],
) -> Result<(), ConfigError> {
    if listeners.iter().any(|l| l.tls.is_none()) {
        return Ok(());
    }
    for (i, listener) in listeners.iter().enumerate() {
        let acme = listener.tls.as_ref().and_then(|t| t.acme.as_ref());
        if acme.map(|a| a.challenge) != Some(AcmeChallenge::Http01) {
            continue;
        }
        let written = raw
            .listeners
            .value
            .get(i)
            .and_then(|l| l.tls.as_ref()?.acme.as_ref()?.value.challenge.as_ref());
        let at = written.map_or(raw.listeners.referenced, |c| c.referenced);
        return Err(ctx.err(
            &at,
            format!("listeners[{i}].tls.acme.challenge"),
            "http-01 needs a plain (non-TLS) listener, reached by the domains' port 80, to answer \
             /.well-known/acme-challenge/; none is configured (add one, or use tls-alpn-01)",
        ));
    }
    Ok(())
}
