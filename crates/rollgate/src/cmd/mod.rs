//! One module per subcommand.

pub mod audit;
pub mod demo;
pub mod deploy;
pub mod history;
pub mod logs;
pub mod operate;
pub mod retry;
pub mod rollback;
pub mod secret;
pub mod serve;
pub mod sign;
pub mod status;
pub mod validate;

use serde_json::Value;

use crate::Global;
use crate::client::query;
use crate::locate;

/// The scope of a listing command (`history`, `audit`): newest first, filtered.
#[derive(clap::Args, Debug)]
pub struct Scope {
    /// Only this app.
    pub app: Option<String>,
    /// Only this environment.
    #[arg(long, short = 'e')]
    pub env: Option<String>,
    /// At most this many entries.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Scope {
    /// GETs `path` with this scope; prints the JSON and returns `None` when `--json` was given.
    pub async fn fetch(self, g: &Global, path: &str) -> anyhow::Result<Option<Value>> {
        let api = locate::api(g)?;
        let q = query(&[
            ("app", self.app),
            ("env", self.env),
            ("limit", Some(self.limit.to_string())),
        ]);
        let body = api.get(&format!("{path}{q}")).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(None);
        }
        Ok(Some(body))
    }
}

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
