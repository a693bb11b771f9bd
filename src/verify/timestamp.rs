//! Timestamps of signed requests: where a scheme reads one, how it is written, and the age and
//! lead rule it must pass. Pure functions of the text and `now` (never the wall clock itself).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderName;

use super::config::VerifyConfigError;
use super::Reason;

/// Where a timestamp is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TsSource {
    /// A header of its own.
    Header(HeaderName),
    /// The `timestamp_key` entry of a structured signature header.
    Structured,
    /// A top-level numeric field of a JSON body (Linear's `webhookTimestamp`).
    BodyJson(&'static str),
}

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsFormat {
    Seconds,
    Milliseconds,
    Rfc3339,
}

impl TsFormat {
    pub fn parse(value: &str) -> Result<Self, VerifyConfigError> {
        match value {
            "seconds" => Ok(TsFormat::Seconds),
            "milliseconds" => Ok(TsFormat::Milliseconds),
            "rfc3339" => Ok(TsFormat::Rfc3339),
            other => Err(VerifyConfigError::new(
                "timestamp_format",
                format!("unknown timestamp format `{other}` (expected seconds, milliseconds or rfc3339)"),
            )),
        }
    }

    /// Milliseconds since the epoch; `None` if the text is not of this format.
    pub fn to_millis(self, text: &str) -> Option<i64> {
        match self {
            TsFormat::Seconds => parse_int(text)?.checked_mul(1000),
            TsFormat::Milliseconds => parse_int(text),
            TsFormat::Rfc3339 => {
                let t = humantime::parse_rfc3339(text).ok()?;
                Some(system_millis(t))
            }
        }
    }

    pub fn format(self, now: SystemTime) -> String {
        match self {
            TsFormat::Seconds => (system_millis(now) / 1000).to_string(),
            TsFormat::Milliseconds => system_millis(now).to_string(),
            TsFormat::Rfc3339 => {
                // RFC 3339 ends at year 9999 and humantime's Display errs past it (to_string()
                // would panic; found by the verify fuzz target). Clamp instead.
                use std::fmt::Write;
                let mut out = String::with_capacity(30);
                match write!(out, "{}", humantime::format_rfc3339_nanos(now)) {
                    Ok(()) => out,
                    Err(_) => "9999-12-31T23:59:59.999999999Z".to_string(),
                }
            }
        }
    }
}

/// Digits only, at most 18 of them (no sign, no spaces, no overflow).
fn parse_int(text: &str) -> Option<i64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Milliseconds since the epoch, negative before it, saturating.
pub fn system_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The timestamp rule of a scheme.
#[derive(Debug, Clone)]
pub struct TimestampRule {
    pub source: TsSource,
    pub format: TsFormat,
    /// Maximum age; `None` = unchecked.
    pub tolerance: Option<Duration>,
    /// Maximum lead into the future; `None` = unchecked.
    pub future: Option<Duration>,
}

impl TimestampRule {
    /// Checks a timestamp against `now`.
    pub fn check(&self, text: &str, now: SystemTime) -> Result<(), Reason> {
        let ts = self
            .format
            .to_millis(text.trim())
            .ok_or(Reason::Malformed)?;
        let age = i128::from(system_millis(now)) - i128::from(ts);
        if let Some(tol) = self.tolerance {
            if age > tol.as_millis() as i128 {
                return Err(Reason::Expired);
            }
        }
        if let Some(fut) = self.future {
            if -age > fut.as_millis() as i128 {
                return Err(Reason::Future);
            }
        }
        Ok(())
    }
}
