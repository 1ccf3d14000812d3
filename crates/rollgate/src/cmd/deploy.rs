//! `rollgate deploy`: uploads nothing (the server reads the artifact from this machine's
//! disk), starts the rollout, then follows its events until it ends. Exits non-zero unless the
//! release succeeded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Global;
use crate::client::Api;
use crate::locate;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The app to release.
    pub app: String,
    /// The environment to release it to.
    #[arg(long, short = 'e')]
    pub env: String,
    /// The build to release: a file or a directory.
    #[arg(long, short = 'a')]
    pub artifact: PathBuf,
    /// Free text shown with the version, e.g. a git sha.
    #[arg(long, short = 'l')]
    pub label: Option<String>,
    /// Environment variable for this version only (repeatable).
    #[arg(long = "var", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Return once the rollout has started instead of following it.
    #[arg(long)]
    pub detach: bool,
    /// Print the final rollout as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let artifact = std::fs::canonicalize(&a.artifact)
        .with_context(|| format!("artifact {}", a.artifact.display()))?;
    let mut vars = BTreeMap::new();
    for kv in &a.vars {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--var expects KEY=VALUE, got {kv:?}")
        };
        vars.insert(k.to_string(), v.to_string());
    }
    let accepted = start(
        &api,
        &a.app,
        &a.env,
        &artifact.display().to_string(),
        a.label.as_deref(),
        &vars,
    )
    .await?;
    let id = accepted["rollout_id"].as_u64().unwrap_or(0);
    if !a.json {
        println!(
            "deploying {} v{} to {} (rollout #{id}, {})",
            a.app,
            accepted["version"].as_u64().unwrap_or(0),
            a.env,
            super::short_digest(super::s(&accepted, "digest"))
        );
    }
    if a.detach {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&accepted)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(&api, id, !a.json).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        print_outcome(&done);
    }
    Ok(if done["phase"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Starts a deploy; returns the server's acceptance (`rollout_id`, `version`, `digest`).
pub async fn start(
    api: &Api,
    app: &str,
    env: &str,
    artifact: &str,
    label: Option<&str>,
    vars: &BTreeMap<String, String>,
) -> anyhow::Result<Value> {
    api.post(
        "/v1/deploy",
        &json!({ "app": app, "env": env, "artifact": artifact, "label": label, "vars": vars }),
    )
    .await
}

/// Polls a rollout until it ends, printing each new event when `print`; returns the rollout.
pub async fn follow(api: &Api, id: u64, print: bool) -> anyhow::Result<Value> {
    let mut seen = 0usize;
    loop {
        let r = api.get(&format!("/v1/rollouts/{id}")).await?;
        let events = r["events"].as_array().cloned().unwrap_or_default();
        if print {
            for e in events.iter().skip(seen) {
                println!(
                    "  {}  {:<12} {}",
                    super::clock(super::s(e, "at")),
                    super::s(e, "phase"),
                    super::s(e, "message")
                );
            }
        }
        seen = events.len();
        if r["finished_at"].is_string() {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn print_outcome(r: &Value) {
    let phase = super::s(r, "phase");
    let reason = super::s(r, "reason");
    if phase == "succeeded" {
        println!(
            "ok: {} v{} is live in {}",
            super::s(r, "app"),
            r["version"],
            super::s(r, "env")
        );
    } else {
        println!("{}: {reason}", phase.replace('_', " "));
    }
}
