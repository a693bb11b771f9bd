//! `routes:`: one route's path, methods, upstream, checks and `verify:` block, and the
//! shadowing rules (a route no request can reach is an error; one that loses some methods is a
//! warning `hookgate check` prints).

use std::collections::HashMap;
use std::time::Duration;

use http::Method;
use serde_saphyr::Spanned;

use super::super::raw::RawRoute;
use super::super::{Config, IpSetConfig, Limits, PathPattern, RouteConfig, UpstreamConfig};
use super::ip::allow_ips;
use super::rate_limit::rate_limit;
use super::{is_name, ConfigError, Ctx, NAME_RULE};

/// The first earlier route that takes every request `route` could match, if any. Routes match
/// by path first, so the earlier route's methods do not matter: a method it lacks is 405 there.
pub(super) fn shadowing(
    routes: &[RouteConfig],
    exact: &HashMap<String, Vec<usize>>,
    prefix: &HashMap<String, Vec<usize>>,
    route: &RouteConfig,
) -> Option<usize> {
    let key = route.path.key();
    let exact_hits = match &route.path {
        PathPattern::Exact(_) => {
            let trimmed = key.strip_suffix('/').filter(|k| !k.is_empty());
            [exact.get(&key), trimmed.and_then(|t| exact.get(t))]
        }
        PathPattern::Prefix(_) => [None, None],
    };
    let prefix_hits = super::super::prefix_candidates(&key).filter_map(|c| prefix.get(c));
    exact_hits
        .into_iter()
        .flatten()
        .chain(prefix_hits)
        .flatten()
        .copied()
        .filter(|&i| routes[i].path.covers(&route.path))
        .min()
}

/// Routes that lose some of their paths to an earlier route with other methods: a request
/// there for a method only the later route allows gets 405, as routes match by path first.
/// Not an error (the later route still serves its other paths); `hookgate check` prints them.
pub fn shadow_warnings(config: &Config) -> Vec<String> {
    let mut prefix: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, r) in config.routes.iter().enumerate() {
        if let PathPattern::Prefix(_) = r.path {
            prefix.entry(r.path.key()).or_default().push(i);
        }
    }
    let mut warnings = Vec::new();
    for (i, earlier) in config.routes.iter().enumerate() {
        let key = earlier.path.key();
        let later = super::super::prefix_candidates(&key)
            .filter_map(|c| prefix.get(c))
            .flatten()
            .copied()
            .filter(|&j| j > i);
        for j in later {
            let wider = &config.routes[j];
            let lost: Vec<&str> = wider
                .methods
                .iter()
                .filter(|m| !earlier.methods.contains(m))
                .map(Method::as_str)
                .collect();
            if lost.is_empty() {
                continue;
            }
            warnings.push(format!(
                "routes[{j}] {:?} ({}) does not serve {} {}: the earlier route {:?} takes that path \
                 and answers {} with 405",
                wider.name,
                wider.path,
                lost.join(", "),
                earlier.path,
                earlier.name,
                lost.join(", "),
            ));
        }
    }
    warnings
}

pub(super) fn route(
    ctx: &Ctx,
    i: usize,
    raw: &RawRoute,
    upstreams: &[UpstreamConfig],
    ip_sets: &[IpSetConfig],
    limits: &Limits,
) -> Result<RouteConfig, ConfigError> {
    let field = format!("routes[{i}]");
    let name = ctx.text(&raw.name, &format!("{field}.name"))?;
    if !is_name(&name) {
        return Err(ctx.err(&raw.name.referenced, format!("{field}.name"), NAME_RULE));
    }
    let path_field = format!("{field}.path");
    let path_text = ctx.text(&raw.path, &path_field)?;
    let path =
        path_pattern(&path_text).map_err(|m| ctx.err(&raw.path.referenced, &path_field, m))?;

    let verify = match &raw.verify {
        None => None,
        Some(v) => Some(std::sync::Arc::new(verifier(
            ctx,
            v,
            &format!("{field}.verify"),
        )?)),
    };
    let mut methods = match &raw.methods {
        // Webhooks are POSTs.
        None => vec![Method::POST],
        Some(list) => {
            if list.value.is_empty() {
                return Err(ctx.err(
                    &list.referenced,
                    format!("{field}.methods"),
                    "must list at least one method",
                ));
            }
            let mut methods = Vec::new();
            for (j, m) in list.value.iter().enumerate() {
                let upper = m.to_ascii_uppercase();
                let method = Method::from_bytes(upper.as_bytes())
                    .ok()
                    .filter(|_| !upper.is_empty() && upper.chars().all(|c| c.is_ascii_uppercase()))
                    .ok_or_else(|| {
                        ctx.err(
                            &list.referenced,
                            format!("{field}.methods[{j}]"),
                            format!("{m:?} is not an HTTP method"),
                        )
                    })?;
                if !methods.contains(&method) {
                    methods.push(method);
                }
            }
            methods
        }
    };

    // A provider's unsigned handshake (GET challenges, Intercom's HEAD) is answered by the
    // gateway on any route of that provider, so the route admits its method.
    if let Some(m) = verify.as_ref().and_then(|v| v.handshake_method()) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }

    let upstream_field = format!("{field}.upstream");
    let upstream_name = ctx.text(&raw.upstream, &upstream_field)?;
    let upstream = upstreams
        .iter()
        .position(|u| u.name == upstream_name)
        .ok_or_else(|| {
            ctx.err(
                &raw.upstream.referenced,
                &upstream_field,
                format!("no upstream named {upstream_name:?}"),
            )
        })?;

    let upstream_path = match &raw.upstream_path {
        None => None,
        Some(value) => {
            let f = format!("{field}.upstream_path");
            let text = ctx.text(value, &f)?;
            match path_pattern(&text) {
                Ok(PathPattern::Exact(p)) => Some(p),
                Ok(PathPattern::Prefix(_)) => {
                    return Err(ctx.err(&value.referenced, &f, "must be a plain path, without /*"))
                }
                Err(m) => return Err(ctx.err(&value.referenced, &f, m)),
            }
        }
    };

    Ok(RouteConfig {
        name,
        path,
        methods,
        upstream,
        upstream_path,
        max_body: ctx.size(&raw.max_body, &format!("{field}.max_body"), limits.max_body)?,
        body_timeout: ctx.duration(
            &raw.body_timeout,
            &format!("{field}.body_timeout"),
            limits.body_timeout,
        )?,
        allow_ips: match &raw.allow_ips {
            None => None,
            Some(list) => Some(allow_ips(
                ctx,
                list,
                &format!("{field}.allow_ips"),
                ip_sets,
            )?),
        },
        rate_limit: match &raw.rate_limit {
            None => None,
            Some(r) => Some(rate_limit(ctx, r, &format!("{field}.rate_limit"))?),
        },
        verify,
        replay_window: match &raw.replay_window {
            Some(w) if ctx.text(w, &format!("{field}.replay_window"))? == "off" => None,
            other => Some(ctx.duration(
                other,
                &format!("{field}.replay_window"),
                DEFAULT_REPLAY_WINDOW,
            )?),
        },
    })
}

/// Providers retry for hours to days; a day of memory catches the retries that matter.
const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Compiles a `verify:` block after expanding `${NAME}` in the values that hold secrets and keys.
/// Errors name the field but never echo a value.
pub(super) fn verifier(
    ctx: &Ctx,
    raw: &Spanned<crate::verify::RawVerify>,
    field: &str,
) -> Result<crate::verify::Verifier, ConfigError> {
    use crate::verify::Secret;
    // The key an error names, or the block when it is not known (a block built by an alias).
    let at = |name: &str| raw.value.locations.of(name).unwrap_or(&raw.referenced);
    let mut expanded = raw.value.clone();
    for (i, secret) in raw.value.secrets.iter().enumerate() {
        let name = format!("secrets[{i}]");
        let value = ctx
            .expand(secret.expose())
            .map_err(|m| ctx.err(at(&name), format!("{field}.{name}"), m))?;
        expanded.secrets[i] = Secret::new(value);
    }
    for (name, value) in [
        ("public_key", &mut expanded.public_key),
        ("public_url", &mut expanded.public_url),
    ] {
        if let Some(text) = value.as_mut() {
            *text = ctx
                .expand(text)
                .map_err(|m| ctx.err(at(name), format!("{field}.{name}"), m))?;
        }
    }
    crate::verify::Verifier::from_raw(&expanded)
        .map_err(|e| ctx.err(at(&e.field), format!("{field}.{}", e.field), e.message))
}

/// A route path: starts with `/`, plain characters, no dot segments, `*` only as a final `/*`.
pub(super) fn path_pattern(text: &str) -> Result<PathPattern, String> {
    if !text.starts_with('/') {
        return Err(format!("{text:?} must start with '/'"));
    }
    let (base, prefix) = match text.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (text, false),
    };
    if base.contains('*') {
        return Err(format!("{text:?}: '*' is only allowed as a final \"/*\""));
    }
    if !base
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#' && b != b'%' && b != b'\\')
    {
        return Err(format!(
            "{text:?} has characters a route path cannot have (space, ?, #, %, \\)"
        ));
    }
    if base
        .split('/')
        .any(|segment| segment == "." || segment == "..")
        || base.contains("//")
    {
        return Err(format!("{text:?} has '.', '..' or empty segments"));
    }
    Ok(if prefix {
        PathPattern::Prefix(base.to_string())
    } else {
        PathPattern::Exact(base.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_paths_are_exact_or_trailing_prefix() {
        assert_eq!(
            path_pattern("/hooks/github"),
            Ok(PathPattern::Exact("/hooks/github".into()))
        );
        assert_eq!(
            path_pattern("/hooks/*"),
            Ok(PathPattern::Prefix("/hooks".into()))
        );
        assert_eq!(path_pattern("/*"), Ok(PathPattern::Prefix(String::new())));
        for bad in [
            "hooks", "/a/*/b", "/a*", "/a/../b", "/a/./b", "/a//b", "/a b", "/a?x=1", "/a%2e",
        ] {
            assert!(path_pattern(bad).is_err(), "{bad} should be refused");
        }
    }

    /// A `verify:` mistake is reported at the key it names, not at the block.
    #[test]
    fn verify_errors_point_at_the_field() {
        let config = |verify: &str| {
            format!(
                "listeners:\n  - name: internal\n    bind: 127.0.0.1:8080\nupstreams:\n  orders:\n    url: http://127.0.0.1:3000\nroutes:\n  - name: github\n    path: /hooks/github\n    upstream: orders\n    verify:\n{verify}"
            )
        };
        let cases = [
            (
                "      provider: hmac\n      secrets: [a]\n      header: x-sig\n      algorithm: md5\n",
                (15, 18),
                "routes[0].verify.algorithm",
            ),
            (
                "      provider: github\n      secrets:\n        - good\n        - \"${UNSET_FOR_TEST}\"\n",
                (15, 11),
                "routes[0].verify.secrets[1]",
            ),
            (
                "      provider: nope\n      secrets: [a]\n",
                (12, 17),
                "routes[0].verify.provider",
            ),
            (
                "      provider: hmac\n      secrets: [a]\n      header: x-sig\n      prefix: \" hex\"\n",
                (15, 15),
                "routes[0].verify.prefix",
            ),
        ];
        for (verify, (line, column), field) in cases {
            let err = crate::config::validate::parse_and_validate(
                &config(verify),
                std::path::Path::new("gateway.yaml"),
                HashMap::new(),
            )
            .expect_err("must refuse");
            assert_eq!(
                (err.line, err.column, err.field.as_str()),
                (line, column, field),
                "{err}"
            );
        }
    }
}
