//! A `rate_limit:` block as plain, validated values: the sustained rate, the burst, what
//! requests are counted by and how many keys a limiter may track. The limiter these settings
//! compile to, and the response headers they produce, live in `pipeline::rate_limit`.

use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::time::Duration;

use http::header::HeaderName;
use thiserror::Error;

/// Default cap on buckets per route: 100 000 keys, about 4 MiB (see the benchmark notes).
pub const DEFAULT_MAX_KEYS: NonZeroUsize = match NonZeroUsize::new(100_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// Highest accepted `per_second`: one request per microsecond. Anything faster is a typo.
pub const MAX_PER_SECOND: u32 = 1_000_000;

/// The sustained rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rate {
    PerSecond(NonZeroU32),
    PerMinute(NonZeroU32),
}

impl Rate {
    /// Time for one request's worth of budget to come back.
    pub fn interval(&self) -> Duration {
        match *self {
            Rate::PerSecond(n) => Duration::from_secs(1) / n.get(),
            Rate::PerMinute(n) => Duration::from_secs(60) / n.get(),
        }
    }
}

/// What a route's requests are counted by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The resolved client address; IPv6 collapsed to its /64.
    ClientIp,
    /// One bucket for the whole route.
    Route,
    /// The value of this request header; missing or empty: the client-IP key.
    Header(HeaderName),
}

/// A `key:` value that is not `client_ip`, `route` or `header:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LimitKeyError {
    #[error("rate_limit key {0:?}: expected client_ip, route or header:NAME")]
    Unknown(String),
    #[error("rate_limit key {0:?}: not a valid header name")]
    BadHeaderName(String),
}

impl FromStr for LimitKey {
    type Err = LimitKeyError;
    /// `client_ip`, `route`, or `header:NAME` (header names are case-insensitive).
    fn from_str(s: &str) -> Result<LimitKey, LimitKeyError> {
        match s {
            "client_ip" => Ok(LimitKey::ClientIp),
            "route" => Ok(LimitKey::Route),
            _ => match s.strip_prefix("header:") {
                Some(name) => HeaderName::from_bytes(name.trim().as_bytes())
                    .map(LimitKey::Header)
                    .map_err(|_| LimitKeyError::BadHeaderName(s.to_string())),
                None => Err(LimitKeyError::Unknown(s.to_string())),
            },
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKey::ClientIp => f.write_str("client_ip"),
            LimitKey::Route => f.write_str("route"),
            LimitKey::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// Settings that cannot make a limiter.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SettingsError {
    #[error("rate_limit: per_second {0} is above the maximum of {MAX_PER_SECOND}")]
    RateTooHigh(u32),
}

/// One route's `rate_limit:` block, validated. Equal settings mean an identical limiter, so a
/// reload can keep the old one and its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimitSettings {
    rate: Rate,
    burst: NonZeroU32,
    key: LimitKey,
    max_keys: NonZeroUsize,
}

impl RateLimitSettings {
    /// Settings with [`DEFAULT_MAX_KEYS`]. Refuses rates above [`MAX_PER_SECOND`].
    pub fn new(
        rate: Rate,
        burst: NonZeroU32,
        key: LimitKey,
    ) -> Result<RateLimitSettings, SettingsError> {
        if let Rate::PerSecond(n) = rate {
            if n.get() > MAX_PER_SECOND {
                return Err(SettingsError::RateTooHigh(n.get()));
            }
        }
        Ok(RateLimitSettings {
            rate,
            burst,
            key,
            max_keys: DEFAULT_MAX_KEYS,
        })
    }

    /// The same settings with another cap on tracked keys.
    pub fn with_max_keys(mut self, max_keys: NonZeroUsize) -> RateLimitSettings {
        self.max_keys = max_keys;
        self
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }
    pub fn burst(&self) -> NonZeroU32 {
        self.burst
    }
    pub fn key(&self) -> &LimitKey {
        &self.key
    }
    pub fn max_keys(&self) -> NonZeroUsize {
        self.max_keys
    }
}
