//! Providers' published JSON lists (GitHub `/meta`, AWS `ip-ranges.json`): the strings at a dot
//! path, each parsed as a CIDR; errors name the path and the entry.

use thiserror::Error;

use super::cidr::{parse_cidr, Cidr, CidrError};

/// A provider's JSON list could not be used.
#[derive(Debug, Error)]
pub enum JsonListError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("json_path {path:?}: nothing at {at:?}")]
    PathNotFound { path: String, at: String },
    #[error("json_path {path:?}: {at:?} is not an array of strings")]
    NotAList { path: String, at: String },
    #[error("json_path {path:?}: entry {at:?}: {error}")]
    Cidr {
        path: String,
        at: String,
        error: CidrError,
    },
}

/// Reads the CIDRs at `json_path` in a provider's JSON document.
///
/// `json_path` is a dot path of object keys; a number indexes an array; `*` takes every element
/// of an array. Each value reached must be an array of strings or a single string:
/// - GitHub `/meta`: `hooks` on `{"hooks": ["192.30.252.0/22", ...]}`
/// - AWS `ip-ranges.json`: `prefixes.*.ip_prefix`
///
/// An empty path means the document itself. Every string must parse as a CIDR (see
/// [`parse_cidr`]); the first one that does not is an error.
pub fn cidrs_from_json(json_text: &str, json_path: &str) -> Result<Vec<Cidr>, JsonListError> {
    let root: serde_json::Value = serde_json::from_str(json_text)?;
    let segments: Vec<&str> = if json_path.trim().is_empty() {
        Vec::new()
    } else {
        json_path.split('.').collect()
    };
    let mut out = Vec::new();
    collect_json(&root, &segments, json_path, String::new(), &mut out)?;
    Ok(out)
}

fn collect_json(
    value: &serde_json::Value,
    segments: &[&str],
    path: &str,
    at: String,
    out: &mut Vec<Cidr>,
) -> Result<(), JsonListError> {
    use serde_json::Value;
    let join = |at: &str, seg: &str| {
        if at.is_empty() {
            seg.to_string()
        } else {
            format!("{at}.{seg}")
        }
    };
    let Some((first, rest)) = segments.split_first() else {
        // End of the path: an array of strings, or a single string (e.g. reached through `*`).
        return match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_at = join(&at, &i.to_string());
                    let Value::String(s) = item else {
                        return Err(JsonListError::NotAList {
                            path: path.to_string(),
                            at: item_at,
                        });
                    };
                    push_json_cidr(s, path, item_at, out)?;
                }
                Ok(())
            }
            Value::String(s) => push_json_cidr(s, path, at, out),
            _ => Err(JsonListError::NotAList {
                path: path.to_string(),
                at,
            }),
        };
    };
    let here = join(&at, first);
    match (value, *first) {
        (Value::Array(items), "*") => {
            for (i, item) in items.iter().enumerate() {
                collect_json(item, rest, path, join(&at, &i.to_string()), out)?;
            }
            Ok(())
        }
        (Value::Object(map), key) => match map.get(key) {
            Some(next) => collect_json(next, rest, path, here, out),
            None => Err(JsonListError::PathNotFound {
                path: path.to_string(),
                at: here,
            }),
        },
        (Value::Array(items), index) => {
            match index.parse::<usize>().ok().and_then(|i| items.get(i)) {
                Some(next) => collect_json(next, rest, path, here, out),
                None => Err(JsonListError::PathNotFound {
                    path: path.to_string(),
                    at: here,
                }),
            }
        }
        _ => Err(JsonListError::PathNotFound {
            path: path.to_string(),
            at: here,
        }),
    }
}

fn push_json_cidr(
    s: &str,
    path: &str,
    at: String,
    out: &mut Vec<Cidr>,
) -> Result<(), JsonListError> {
    let cidr = parse_cidr(s).map_err(|error| JsonListError::Cidr {
        path: path.to_string(),
        at,
        error,
    })?;
    out.push(cidr);
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipset::IpTable;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_github_meta_hooks() {
        let meta = r#"{"verifiable_password_authentication":true,
            "hooks":["192.30.252.0/22","185.199.108.0/22","140.82.112.0/20","143.55.64.0/20",
                     "2a0a:a440::/29","2606:50c0::/32"],
            "web":["1.2.3.4/32"]}"#;
        let cidrs = cidrs_from_json(meta, "hooks").unwrap();
        assert_eq!(cidrs.len(), 6);
        let t = IpTable::new(cidrs);
        assert!(t.contains(ip("140.82.115.9")));
        assert!(t.contains(ip("2a0a:a440:1::5")));
        assert!(!t.contains(ip("1.2.3.4")));
    }

    #[test]
    fn json_path_walks_objects_indexes_and_wildcards() {
        let doc = r#"{"a":{"b":[["10.0.0.0/8"],["192.0.2.0/24"]]},
                      "prefixes":[{"ip_prefix":"3.5.140.0/22"},{"ip_prefix":"52.95.0.0/16"}]}"#;
        assert_eq!(
            cidrs_from_json(doc, "a.b.1").unwrap()[0].to_string(),
            "192.0.2.0/24"
        );
        let aws = cidrs_from_json(doc, "prefixes.*.ip_prefix").unwrap();
        assert_eq!(aws.len(), 2);
        assert_eq!(cidrs_from_json(r#"["10.0.0.1"]"#, "").unwrap().len(), 1);
    }

    #[test]
    fn json_errors_name_the_place() {
        let doc = r#"{"hooks":["10.0.0.0/8", 7], "bad":["nope"], "obj":{}}"#;
        assert!(matches!(
            cidrs_from_json(doc, "missing"),
            Err(JsonListError::PathNotFound { .. })
        ));
        match cidrs_from_json(doc, "hooks") {
            Err(JsonListError::NotAList { at, .. }) => assert_eq!(at, "hooks.1"),
            other => panic!("{other:?}"),
        }
        match cidrs_from_json(doc, "bad") {
            Err(JsonListError::Cidr { at, .. }) => assert_eq!(at, "bad.0"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            cidrs_from_json(doc, "obj"),
            Err(JsonListError::NotAList { .. })
        ));
        assert!(matches!(
            cidrs_from_json("{", "hooks"),
            Err(JsonListError::Json(_))
        ));
    }
}
