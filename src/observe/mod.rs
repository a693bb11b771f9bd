//! Everything an operator sees of the gateway: the access log, the metrics, request ids and the
//! gateway's own event lines on stderr. Nothing here decides anything about a request.

pub mod access_log;
pub mod metrics;
pub mod request_id;

/// One JSON line on stderr for a gateway event (start, listening, reload, drain). Not for
/// requests: those go to the access log.
pub fn event(level: &str, msg: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({
        "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "level": level,
        "msg": msg,
    });
    if let (Some(line), serde_json::Value::Object(extra)) = (line.as_object_mut(), fields) {
        line.extend(extra);
    }
    eprintln!("{line}");
}

/// Seconds since the Unix epoch, for `*_timestamp_seconds` gauges.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
