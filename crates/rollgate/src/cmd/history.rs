//! `rollgate history`: past rollouts, newest first, with outcome, reason and events.

use std::process::ExitCode;

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
    /// At most this many rollouts.
    #[arg(long, default_value_t = 20)]
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
    let body = api.get(&format!("/v1/history{q}")).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in body["rollouts"].as_array().into_iter().flatten() {
        println!(
            "#{} {}/{} v{} ({}) {} by {} at {}",
            r["id"],
            super::s(r, "app"),
            super::s(r, "env"),
            r["version"],
            r["label"].as_str().unwrap_or("no label"),
            super::s(r, "phase"),
            super::s(r, "actor"),
            super::s(r, "started_at"),
        );
        if let Some(reason) = r["reason"].as_str() {
            println!("    {reason}");
        }
        for e in r["events"].as_array().into_iter().flatten() {
            println!(
                "    {}  {:<18} {}",
                super::clock(super::s(e, "at")),
                super::s(e, "kind"),
                super::s(e, "message")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
