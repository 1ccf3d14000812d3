//! `rollgate retry`: a new rollout of the version whose last rollout failed, was rolled back
//! or aborted; followed like a deploy.

use std::process::ExitCode;

use serde_json::json;

use super::deploy;
use crate::Global;
use crate::locate;

pub async fn run(g: &Global, a: super::operate::Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let accepted = api
        .post("/v1/retry", &json!({ "app": a.app, "env": a.env }))
        .await?;
    let id = accepted["rollout_id"].as_u64().unwrap_or(0);
    if !a.json {
        println!(
            "retrying {} v{} in {} (rollout #{id})",
            a.app, accepted["version"], a.env
        );
    }
    let done = deploy::follow(&api, id, !a.json).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        deploy::print_outcome(&done);
    }
    Ok(if done["phase"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
