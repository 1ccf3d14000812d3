//! `rollgate rollback`: puts live back on blue at once; during a rollout, stops it.

use std::process::ExitCode;

use serde_json::json;

use crate::Global;
use crate::locate;

/// The same arguments as the operator commands: the app, `--env`, `--json`.
pub use super::operate::Args;

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let body = api
        .post("/v1/rollback", &json!({ "app": a.app, "env": a.env }))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else if let Some(r) = body.get("rollout") {
        println!(
            "rollout #{} {}: {}",
            r["id"],
            super::s(r, "phase"),
            super::s(r, "reason")
        );
    } else {
        println!(
            "{} in {}: live is {} again (was {})",
            a.app,
            a.env,
            super::v(&body["live"]),
            super::v(&body["rolled_back_from"])
        );
    }
    Ok(ExitCode::SUCCESS)
}
