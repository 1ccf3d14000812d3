//! `rollgate promote | pause | resume | abort`: an operator's commands to the rollout in
//! progress. Each waits until the rollout took the command and prints where it now stands.

use std::process::ExitCode;

use serde_json::json;

use crate::Global;
use crate::locate;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The app whose rollout to act on.
    pub app: String,
    /// The environment.
    #[arg(long, short = 'e')]
    pub env: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Sends `verb` (`promote`, `pause`, `resume`, `abort`) to the rollout of `a.app` in `a.env`.
pub async fn run(g: &Global, verb: &str, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let body = api
        .post(
            &format!("/v1/{verb}"),
            &json!({ "app": a.app, "env": a.env }),
        )
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = &body["rollout"];
    let weight = r["weight_percent"]
        .as_f64()
        .filter(|w| *w > 0.0 && *w < 100.0);
    println!(
        "rollout #{} of {} v{}: {}{}{}",
        r["id"],
        a.app,
        r["version"],
        super::s(r, "phase"),
        weight.map(|w| format!(" at {w}%")).unwrap_or_default(),
        r["reason"]
            .as_str()
            .map(|why| format!(" — {why}"))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
