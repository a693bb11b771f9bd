//! Fuzzes every signature-header parser through the public API: a `Verifier` built by
//! `Verifier::from_raw` (each provider preset, or a fuzzed `verify:` block) checks a fuzzed
//! request with `verify`, then `delivery_id`, `unsigned_handshake` and `signed_handshake` run on
//! it too.
//!
//! Checked beyond "never panics": whatever `Verifier::sign` produces for the fuzzed body must be
//! accepted by `verify` of the same verifier at the same instant (what `hookgate sign` prints
//! must work).
//!
//! Input is text shaped like a request, so seeds are real headers and crashes read as such:
//!
//! ```text
//! @preset github                       <- a preset with built-in test keys (see PRESETS below), or
//! @config                              <- a verify: block, one `key: value` a line, then `@end`
//! provider: hmac                          (`secret:` may repeat; the value is everything after
//! header: x-signature                      `key: `, so trailing spaces count)
//! secret: s3cr3t
//! @end
//! POST ?query=string                   <- method, and optionally `?` + the raw query
//! @now: 1700000000                     <- directives: the clock (default 1700000000) and the
//! @public-url: https://example.com/h      request's public URL (what the spine passes)
//! X-Hub-Signature-256: sha256=...      <- headers (invalid names or values are dropped)
//!                                      <- a blank line, then the body, byte for byte
//! Hello, World!
//! ```
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookgate::verify::{Body, RawVerify, Reason, Secret, SignedRequest, Verifier};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

const T0: u64 = 1_700_000_000;

// Test keys: the providers' published or SDK-made vectors used in src/verify/tests.rs, so seeds
// can carry signatures that verify.
const UTF8_SECRET: &str = "It's a Secret to Everybody";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_V1A_PUB: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
const DISCORD_PUB: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
const SG_PUB: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEvXxzuIsum0ztpiAistqL4TGTpbVu3Cbn33hC4kzQtesGBa2nvag6xqK4DX4xQED6R/8WuDushc7bAURRu3znGg==";

fn secrets(list: &[&str]) -> Vec<Secret> {
    list.iter().map(|s| Secret::new(*s)).collect()
}

/// The `verify:` block `@preset NAME` stands for.
fn preset_raw(name: &str) -> RawVerify {
    let mut raw = RawVerify {
        provider: name.to_string(),
        ..RawVerify::default()
    };
    match name {
        "discord" => raw.public_key = Some(DISCORD_PUB.into()),
        "sendgrid" => raw.public_key = Some(SG_PUB.into()),
        "standard-webhooks-v1a" => {
            raw.provider = "standard-webhooks".into();
            raw.public_key = Some(SW_V1A_PUB.into());
        }
        "standard-webhooks" | "svix" | "clerk" | "resend" => {
            raw.secrets = secrets(&[SW_SECRET, "whsec_c2Vjb25kIHNlY3JldA=="])
        }
        "stripe" => raw.secrets = secrets(&["whsec_test_secret", "whsec_old"]),
        "postmark" | "basic-auth" => raw.secrets = secrets(&["user:pass", "old:pw"]),
        "twilio" => {
            raw.secrets = secrets(&["12345", "67890"]);
            raw.public_url = Some("https://mycompany.com/myapp.php".into());
        }
        "square" | "hubspot" => {
            raw.secrets = secrets(&[UTF8_SECRET, "old"]);
            raw.public_url = Some("https://example.com/hooks/x".into());
        }
        "token" => {
            raw.header = Some("x-token".into());
            raw.prefix = Some("Bearer ".into());
            raw.secrets = secrets(&["tok-new", "tok-old"]);
        }
        "hmac" => {
            raw.header = Some("x-signature".into());
            raw.prefix = Some("sha256=".into());
            raw.signed = Some("{timestamp}.{body}".into());
            raw.timestamp_header = Some("x-timestamp".into());
            raw.secrets = secrets(&[UTF8_SECRET, "old"]);
        }
        _ => raw.secrets = secrets(&[UTF8_SECRET, "old"]),
    }
    raw
}

fn presets() -> &'static HashMap<String, Verifier> {
    static PRESETS: OnceLock<HashMap<String, Verifier>> = OnceLock::new();
    PRESETS.get_or_init(|| {
        let mut names: Vec<&str> = hookgate::verify::providers::PRESETS
            .iter()
            .map(|p| p.id)
            .collect();
        names.extend(["standard-webhooks-v1a", "hmac", "token", "basic-auth"]);
        names
            .into_iter()
            .map(|name| match Verifier::from_raw(&preset_raw(name)) {
                Ok(v) => (name.to_string(), v),
                Err(e) => panic!("fuzz fixture: preset {name} does not compile: {e}"),
            })
            .collect()
    })
}

/// Fills one field of a `verify:` block from a `key: value` line; false for an unknown key.
fn set_field(raw: &mut RawVerify, key: &str, value: &str) -> bool {
    let v = Some(value.to_string());
    match key {
        "provider" => raw.provider = value.to_string(),
        "secret" => raw.secrets.push(Secret::new(value)),
        "secret_encoding" => raw.secret_encoding = v,
        "algorithm" => raw.algorithm = v,
        "header" => raw.header = v,
        "prefix" => raw.prefix = v,
        "encoding" => raw.encoding = v,
        "separator" => raw.separator = v,
        "signature_key" => raw.signature_key = v,
        "timestamp_key" => raw.timestamp_key = v,
        "key_separator" => raw.key_separator = v,
        "signed" => raw.signed = v,
        "timestamp_header" => raw.timestamp_header = v,
        "timestamp_format" => raw.timestamp_format = v,
        "tolerance" => raw.tolerance = v,
        "future_tolerance" => raw.future_tolerance = v,
        "id_header" => raw.id_header = v,
        "public_url" => raw.public_url = v,
        "public_key" => raw.public_key = v,
        "on_failure" => match value.parse() {
            Ok(n) => raw.on_failure = Some(n),
            Err(_) => return false,
        },
        _ => return false,
    }
    true
}

/// `key: value` -> (key, value), keeping the value's trailing spaces.
fn split_line(line: &str) -> Option<(&str, &str)> {
    let (k, v) = line.split_once(':')?;
    Some((k.trim(), v.strip_prefix(' ').unwrap_or(v)))
}

enum Chosen<'a> {
    Preset(&'a Verifier),
    Owned(Verifier),
}

struct Request {
    method: String,
    query: Option<String>,
    public_url: Option<String>,
    now: SystemTime,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<(Chosen<'static>, Request)> {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));

    let first = lines.next()?;
    let chosen = if let Some(name) = first.strip_prefix("@preset ") {
        Chosen::Preset(presets().get(name.trim())?)
    } else if first == "@config" {
        let mut raw = RawVerify::default();
        loop {
            let line = lines.next()?;
            if line == "@end" {
                break;
            }
            let (k, v) = split_line(line)?;
            if !set_field(&mut raw, k, v) {
                return None;
            }
        }
        Chosen::Owned(Verifier::from_raw(&raw).ok()?)
    } else {
        return None;
    };

    let request_line = lines.next().unwrap_or("POST");
    let (method, query) = match request_line.split_once(' ') {
        Some((m, rest)) => (m, rest.strip_prefix('?').map(str::to_string)),
        None => (request_line, None),
    };
    let mut req = Request {
        method: method.to_string(),
        query,
        public_url: None,
        now: UNIX_EPOCH + Duration::from_secs(T0),
        headers: HeaderMap::new(),
        body: body.to_vec(),
    };
    for line in lines {
        let Some((name, value)) = split_line(line) else {
            continue;
        };
        match name {
            "@now" => {
                let secs: u64 = value.trim().parse().ok()?;
                req.now = UNIX_EPOCH.checked_add(Duration::from_secs(secs))?;
            }
            "@public-url" => req.public_url = Some(value.to_string()),
            _ => {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value.as_bytes()),
                ) {
                    req.headers.append(n, v);
                }
            }
        }
    }
    Some((chosen, req))
}

/// `HOOKGATE_FUZZ_DEBUG=1` prints each verdict (to check that seeds verify).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("HOOKGATE_FUZZ_DEBUG").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((chosen, req)) = parse(data) else {
        return;
    };
    let verifier = match &chosen {
        Chosen::Preset(v) => *v,
        Chosen::Owned(v) => v,
    };
    let signed = SignedRequest {
        method: &req.method,
        public_url: req.public_url.as_deref(),
        query: req.query.as_deref(),
        headers: &req.headers,
        body: req.body.as_slice().into(),
    };
    let result = verifier.verify(&signed, req.now);
    if debug() {
        eprintln!("{}: verify -> {result:?}", verifier.provider());
    }
    // The same body in two frames, as hyper may deliver it, must get the same answer.
    if let Some(&first) = req.body.first() {
        let cut = usize::from(first) % req.body.len();
        let frames = [
            bytes::Bytes::copy_from_slice(&req.body[..cut]),
            bytes::Bytes::copy_from_slice(&req.body[cut..]),
        ];
        let framed = SignedRequest {
            body: Body::frames(&frames),
            ..signed
        };
        let again = verifier.verify(&framed, req.now);
        assert_eq!(
            again.as_ref().map(|v| v.secret_index).map_err(|f| f.reason),
            result.as_ref().map(|v| v.secret_index).map_err(|f| f.reason),
            "{}: split at {cut}",
            verifier.provider()
        );
    }
    let _ = verifier.delivery_id(&signed);
    let _ = verifier.unsigned_handshake(&signed);
    if let Ok(verified) = &result {
        let _ = verifier.signed_handshake(&signed, verified);
    }
    let _ = verifier.on_failure_status();

    // What `sign` makes for this body must verify, at the same instant, with the same URL.
    // Past year 9999 an RFC 3339 timestamp cannot say the instant (sign() clamps it), so the
    // round trip is only required for representable times.
    const YEAR_10000: u64 = 253_402_300_800;
    if req.now.duration_since(std::time::UNIX_EPOCH).map_or(true, |d| d.as_secs() >= YEAR_10000) {
        return;
    }
    let Ok(pairs) = verifier.sign(&req.body, req.now, req.public_url.as_deref()) else {
        return;
    };
    // Twilio: `bodySHA256=` in the URL is the hash of the body Twilio sent; sign() takes the URL
    // as given, so it only verifies when that hash matches the body.
    if verifier.provider() == "twilio"
        && req
            .public_url
            .as_deref()
            .is_some_and(|u| u.contains("bodySHA256"))
    {
        return;
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &pairs {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            // A configured prefix or token that cannot be a header value: not this check's job.
            return;
        };
        if v.to_str().is_err() {
            // Known: a configured prefix (or token) with non-ASCII text is accepted by
            // Verifier::from_raw, but verify() reads headers as visible ASCII only, so such a
            // route refuses everything (fails closed). Skipped here so the run goes on.
            return;
        }
        headers.append(n, v);
    }
    let resigned = SignedRequest {
        method: "POST",
        public_url: req.public_url.as_deref(),
        query: None,
        headers: &headers,
        body: req.body.as_slice().into(),
    };
    if let Err(failure) = verifier.verify(&resigned, req.now) {
        // Linear's timestamp is inside the body (webhookTimestamp), which sign() does not write:
        // a body without a fresh one is refused whoever signed it. Only a mismatch is a bug.
        if verifier.provider() == "linear" && failure.reason != Reason::Mismatch {
            return;
        }
        panic!(
            "{} refuses ({}) the headers its own sign() made: {pairs:?}",
            verifier.provider(),
            failure.reason
        );
    }
});
