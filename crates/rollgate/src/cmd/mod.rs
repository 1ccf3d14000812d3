//! One module per subcommand.

pub mod audit;
pub mod demo;
pub mod deploy;
pub mod history;
pub mod logs;
pub mod rollback;
pub mod serve;
pub mod status;
pub mod validate;

use serde_json::Value;

/// Local time-free short form of an RFC 3339 timestamp: `HH:MM:SS.mmm`.
pub fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..23).unwrap_or(rfc3339)
}

/// `v3` or `-`.
pub fn v(value: &Value) -> String {
    value
        .as_u64()
        .map_or_else(|| "-".to_string(), |n| format!("v{n}"))
}

/// A string field or `-`.
pub fn s<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The first 12 hex digits of a digest.
pub fn short_digest(d: &str) -> String {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    format!("sha256:{}", hex.get(..12).unwrap_or(hex))
}
