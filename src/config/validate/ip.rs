//! Client addresses: `client_ip:` (trusted proxies, forwarded header), `ip_sets:` (inline,
//! file and feed lists) and a route's `allow_ips`.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::super::raw::{RawClientIp, RawIpSet, Text};
use super::super::ForwardedHeader;
use super::super::{AllowIps, ClientIpConfig, IpSetConfig, IpSetSource};
use super::{is_name, unlocated, ConfigError, Ctx, NAME_RULE};
use crate::ipset::{parse_cidr, parse_cidr_list, Cidr, IpTable};

pub(super) fn cidr(ctx: &Ctx, value: &Text, field: &str) -> Result<Cidr, ConfigError> {
    let text = ctx.text(value, field)?;
    parse_cidr(&text).map_err(|e| ctx.err(&value.referenced, field, format!("{text:?}: {e}")))
}

pub(super) fn client_ip(
    ctx: &Ctx,
    raw: Option<&RawClientIp>,
) -> Result<ClientIpConfig, ConfigError> {
    let Some(raw) = raw else {
        return Ok(ClientIpConfig::default());
    };
    let mut cidrs = Vec::new();
    if let Some(list) = &raw.trusted_proxies {
        for (i, value) in list.value.iter().enumerate() {
            cidrs.push(cidr(
                ctx,
                value,
                &format!("client_ip.trusted_proxies[{i}]"),
            )?);
        }
    }
    let header = match &raw.header {
        None => ForwardedHeader::XForwardedFor,
        Some(value) => match ctx
            .text(value, "client_ip.header")?
            .to_ascii_lowercase()
            .as_str()
        {
            "x-forwarded-for" => ForwardedHeader::XForwardedFor,
            "forwarded" => ForwardedHeader::Forwarded,
            other => {
                return Err(ctx.err(
                    &value.referenced,
                    "client_ip.header",
                    format!("{other:?}: expected x-forwarded-for or forwarded"),
                ))
            }
        },
    };
    Ok(ClientIpConfig {
        trusted_proxies: IpTable::new(cidrs),
        header,
    })
}

pub(super) fn ip_set(ctx: &Ctx, name: &str, raw: &RawIpSet) -> Result<IpSetConfig, ConfigError> {
    let field = format!("ip_sets.{name}");
    let located = [
        raw.file.as_ref(),
        raw.url.as_ref(),
        raw.json_path.as_ref(),
        raw.refresh.as_ref(),
    ];
    let at = raw
        .cidrs
        .as_ref()
        .map(|c| c.referenced)
        .or_else(|| located.iter().flatten().next().map(|t| t.referenced));
    let Some(at) = at else {
        return Err(unlocated(ctx, &field, "needs one of cidrs, file or url"));
    };
    if !is_name(name) {
        return Err(ctx.err(&at, &field, NAME_RULE));
    }
    let sources = [raw.cidrs.is_some(), raw.file.is_some(), raw.url.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(ctx.err(&at, &field, "needs exactly one of cidrs, file or url"));
    }
    if raw.url.is_none() {
        if let Some(extra) = raw.json_path.as_ref().or(raw.refresh.as_ref()) {
            return Err(ctx.err(
                &extra.referenced,
                &field,
                "json_path and refresh only apply to a url set",
            ));
        }
    }
    let source = if let Some(list) = &raw.cidrs {
        let mut cidrs = Vec::new();
        for (i, value) in list.value.iter().enumerate() {
            cidrs.push(cidr(ctx, value, &format!("{field}.cidrs[{i}]"))?);
        }
        IpSetSource::Fixed(IpTable::new(cidrs))
    } else if let Some(file) = &raw.file {
        let f = format!("{field}.file");
        let path = ctx.path(file, &f)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ctx.err(&file.referenced, &f, format!("{}: {e}", path.display())))?;
        let cidrs = parse_cidr_list(&text)
            .map_err(|e| ctx.err(&file.referenced, &f, format!("{}: {e}", path.display())))?;
        IpSetSource::Fixed(IpTable::new(cidrs))
    } else if let Some(url) = &raw.url {
        let f = format!("{field}.url");
        let text = ctx.text(url, &f)?;
        let uri: http::Uri = text
            .parse()
            .map_err(|_| ctx.err(&url.referenced, &f, format!("{text:?} is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
            return Err(ctx.err(
                &url.referenced,
                &f,
                format!("{text:?}: needs http:// or https:// and a host"),
            ));
        }
        let json_path = match &raw.json_path {
            None => None,
            Some(p) => Some(ctx.text(p, &format!("{field}.json_path"))?),
        };
        let refresh = ctx.duration(
            &raw.refresh,
            &format!("{field}.refresh"),
            Duration::from_secs(3600),
        )?;
        IpSetSource::Url {
            url: uri,
            json_path,
            refresh,
        }
    } else {
        return Err(ctx.err(&at, &field, "needs one of cidrs, file or url"));
    };
    Ok(IpSetConfig {
        name: name.to_string(),
        source,
    })
}

pub(super) fn allow_ips(
    ctx: &Ctx,
    list: &Spanned<Vec<Text>>,
    field: &str,
    ip_sets: &[IpSetConfig],
) -> Result<AllowIps, ConfigError> {
    if list.value.is_empty() {
        return Err(ctx.err(
            &list.referenced,
            field,
            "an empty allowlist would refuse everyone; remove the key to allow all",
        ));
    }
    let mut allow = AllowIps {
        cidrs: Vec::new(),
        sets: Vec::new(),
    };
    for (i, value) in list.value.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let text = ctx.text(value, &f)?;
        if let Some(set) = ip_sets.iter().position(|s| s.name == text) {
            allow.sets.push(set);
            continue;
        }
        match parse_cidr(&text) {
            Ok(cidr) => allow.cidrs.push(cidr),
            Err(e) => {
                return Err(ctx.err(
                    &value.referenced,
                    &f,
                    format!("{text:?} is neither a CIDR ({e}) nor the name of an ip_set"),
                ));
            }
        }
    }
    Ok(allow)
}
