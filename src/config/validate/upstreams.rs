//! `upstreams:`: each backend's URL, TLS trust, timeouts and connection budget.

use std::time::Duration;

use super::super::raw::RawUpstream;
use super::super::{UpstreamConfig, UpstreamScheme};
use super::{is_name, read_certificates, ConfigError, Ctx, NAME_RULE};

/// Open connections to one upstream, over all worker threads, when `max_connections` is unset.
const DEFAULT_UPSTREAM_CONNECTIONS: u64 = 256;

pub(super) fn upstream(
    ctx: &Ctx,
    name: &str,
    raw: &RawUpstream,
) -> Result<UpstreamConfig, ConfigError> {
    let field = format!("upstreams.{name}");
    if !is_name(name) {
        return Err(ctx.err(&raw.url.referenced, &field, NAME_RULE));
    }
    let url_field = format!("{field}.url");
    let url_text = ctx.text(&raw.url, &url_field)?;
    let bad_url = |why: &str| {
        ctx.err(
            &raw.url.referenced,
            &url_field,
            format!("{url_text:?}: {why}"),
        )
    };
    let uri: http::Uri = url_text.parse().map_err(|_| bad_url("not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => UpstreamScheme::Http,
        Some("https") => UpstreamScheme::Https,
        _ => return Err(bad_url("the scheme must be http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| bad_url("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad_url("credentials in the URL are not supported"));
    }
    if uri.query().is_some() {
        return Err(bad_url("a query string is not allowed"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let ca = match &raw.ca {
        None => Vec::new(),
        Some(ca) => {
            let ca_field = format!("{field}.ca");
            if scheme == UpstreamScheme::Http {
                return Err(ctx.err(
                    &ca.referenced,
                    &ca_field,
                    "a CA file only applies to an https:// upstream",
                ));
            }
            let path = ctx.path(ca, &ca_field)?;
            read_certificates(&path).map_err(|m| ctx.err(&ca.referenced, &ca_field, m))?
        }
    };
    Ok(UpstreamConfig {
        name: name.to_string(),
        scheme,
        authority,
        base_path,
        timeout: ctx.duration(
            &raw.timeout,
            &format!("{field}.timeout"),
            Duration::from_secs(15),
        )?,
        connect_timeout: ctx.duration(
            &raw.connect_timeout,
            &format!("{field}.connect_timeout"),
            Duration::from_secs(5),
        )?,
        max_response: ctx.size(&raw.max_response, &format!("{field}.max_response"), 1 << 20)?,
        max_connections: ctx.count(
            &raw.max_connections,
            &format!("{field}.max_connections"),
            DEFAULT_UPSTREAM_CONNECTIONS,
            1 << 20,
        )? as usize,
        ca,
    })
}
