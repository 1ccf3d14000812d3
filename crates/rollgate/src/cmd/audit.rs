//! `rollgate audit`: who did what, when.

use std::process::ExitCode;

use serde_json::Value;

use crate::Global;

pub async fn run(g: &Global, a: super::Scope) -> anyhow::Result<ExitCode> {
    let Some(body) = a.fetch(g, "/v1/audit").await? else {
        return Ok(ExitCode::SUCCESS);
    };
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
