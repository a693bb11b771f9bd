//! The signed-content template of an HMAC scheme (`"{timestamp}.{body}"`): its parts, its parser,
//! and how `{url}` is presented (HubSpot decodes some escapes first). Config time only, except
//! `hubspot_decode`, which runs per request for HubSpot v3.

use http::HeaderName;

use super::config::{self, VerifyConfigError};

/// Most parts in a signed-content template.
pub const MAX_PARTS: usize = 16;

/// How `{url}` is presented to the HMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlMode {
    /// Exactly as configured (+ query).
    Raw,
    /// HubSpot v3: a fixed set of percent-escapes is decoded first.
    HubspotDecoded,
}

/// One part of a signed-content template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(Vec<u8>),
    Body,
    Timestamp,
    Id,
    Method,
    Url,
    Header(HeaderName),
}

/// Parses `"{timestamp}.{body}"` style templates.
pub fn parse_template(text: &str) -> Result<Vec<Part>, VerifyConfigError> {
    let err = |m: String| VerifyConfigError::new("signed", m);
    let mut parts = Vec::new();
    let mut lit = Vec::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            lit.push(rest.as_bytes()[0]);
            rest = &rest[2..];
            continue;
        }
        if c == '}' {
            return Err(err("unmatched `}` (write `}}` for a literal brace)".into()));
        }
        if c != '{' {
            let mut buf = [0u8; 4];
            lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            rest = &rest[c.len_utf8()..];
            continue;
        }
        let end = rest.find('}').ok_or_else(|| err("unclosed `{`".into()))?;
        let name = &rest[1..end];
        rest = &rest[end + 1..];
        if !lit.is_empty() {
            parts.push(Part::Lit(std::mem::take(&mut lit)));
        }
        let part = match name {
            "body" => Part::Body,
            "timestamp" => Part::Timestamp,
            "id" => Part::Id,
            "method" => Part::Method,
            "url" => Part::Url,
            other => match other.strip_prefix("header:") {
                Some(h) => Part::Header(config::parse_header_name("signed", h)?),
                None => return Err(err(format!("unknown placeholder `{{{other}}}`"))),
            },
        };
        parts.push(part);
    }
    if !lit.is_empty() {
        parts.push(Part::Lit(lit));
    }
    if parts.len() > MAX_PARTS {
        return Err(err(format!("at most {MAX_PARTS} parts")));
    }
    if !parts.contains(&Part::Body) {
        return Err(err("the template must include `{body}`".into()));
    }
    Ok(parts)
}

/// HubSpot v3: these escapes are decoded in the URI before signing (their docs list them).
pub fn hubspot_decode(url: &str) -> String {
    const MAP: [(&str, char); 12] = [
        ("%3A", ':'),
        ("%2F", '/'),
        ("%3F", '?'),
        ("%40", '@'),
        ("%21", '!'),
        ("%24", '$'),
        ("%27", '\''),
        ("%28", '('),
        ("%29", ')'),
        ("%2A", '*'),
        ("%2C", ','),
        ("%3B", ';'),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let hit = tail.get(..3).and_then(|esc| {
            MAP.iter()
                .find(|(e, _)| e.eq_ignore_ascii_case(esc))
                .map(|(_, c)| *c)
        });
        match hit {
            Some(c) => {
                out.push(c);
                rest = &tail[3..];
            }
            None => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
