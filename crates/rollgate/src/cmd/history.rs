//! `rollgate history`: past rollouts, newest first, with outcome, reason and events.

use std::process::ExitCode;

use crate::Global;

pub async fn run(g: &Global, a: super::Scope) -> anyhow::Result<ExitCode> {
    let Some(body) = a.fetch(g, "/v1/history").await? else {
        return Ok(ExitCode::SUCCESS);
    };
    for r in body["rollouts"].as_array().into_iter().flatten() {
        println!(
            "#{} {}/{} v{} ({}): {}, started by {} at {}",
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
