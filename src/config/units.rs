//! Parses the human units the config is written in: durations (`250ms`, `10s`, `5m`) and sizes
//! (`65536`, `64KiB`, `1MiB`). It only turns text into numbers; it never knows which field it is
//! reading, so callers attach the location and field path to its errors.

use std::time::Duration;

/// Parses `250ms`, `10s`, `5m`, `1h`, `1h 30m` (anything `humantime` accepts). A bare number is
/// refused: "30" could mean seconds or milliseconds, and guessing wrong is a silent outage.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{text:?} has no unit; write e.g. \"{text}s\" or \"{text}ms\""
        ));
    }
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

/// Parses a byte size: a plain number of bytes, or a number with `B`, `KB`/`KiB`, `MB`/`MiB`,
/// `GB`/`GiB` (all binary multiples: in a proxy's limits nobody means 1000).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 65536, \"64KiB\" or \"1MiB\""))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" | "k" | "kb" => 1 << 10,
        "M" | "MB" | "MiB" | "m" | "mb" => 1 << 20,
        "G" | "GB" | "GiB" | "g" | "gb" => 1 << 30,
        other => return Err(format!("{other:?} is not a size unit (B, KiB, MiB, GiB)")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_durations_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn refuses_durations_without_unit_or_garbage() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn reads_sizes_in_bytes_and_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("2 MB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }

    #[test]
    fn refuses_bad_sizes() {
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("18446744073709551615GiB").is_err());
    }
}
