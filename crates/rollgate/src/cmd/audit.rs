//! `rollgate audit`: who did what, when.

use std::process::ExitCode;

use serde_json::Value;

use crate::Global;
use crate::client::query;
use crate::locate;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this app.
    pub app: Option<String>,
    /// Only this environment.
    #[arg(long, short = 'e')]
    pub env: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let q = query(&[
        ("app", a.app),
        ("env", a.env),
        ("limit", Some(a.limit.to_string())),
    ]);
    let body = api.get(&format!("/v1/audit{q}")).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in body["audit"].as_array().into_iter().flatten() {
        let place = match (e["app"].as_str(), e["env"].as_str()) {
            (Some(app), Some(env)) => format!("{app}/{env}"),
            _ => "-".to_string(),
        };
        println!(
            "{}  {:<10} {:<22} {:<16} {}",
            super::s(e, "at"),
            super::s(e, "actor"),
            super::s(e, "action"),
            place,
            e.get("detail").and_then(Value::as_str).unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}
