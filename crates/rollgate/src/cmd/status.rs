//! `rollgate status`: per environment and app, where each alias points, how traffic is
//! split, the running versions with their instances, and the rollout in progress.

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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let body = api
        .get(&format!(
            "/v1/status{}",
            query(&[("app", a.app), ("env", a.env)])
        ))
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&body));
    Ok(ExitCode::SUCCESS)
}

/// The human form of a status answer.
pub fn render(body: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for env in body["environments"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{}  gateway http://{}  strategy {}",
            super::s(env, "env"),
            super::s(env, "gateway"),
            super::s(env, "strategy")
        );
        for app in env["apps"].as_array().into_iter().flatten() {
            let al = &app["aliases"];
            let traffic: Vec<String> = app["traffic"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!(
                        "v{} {}%",
                        t["version"],
                        t["weight_percent"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  {}  live {}  blue {}  green {}  traffic [{}]",
                super::s(app, "app"),
                super::v(&al["live"]),
                super::v(&al["blue"]),
                super::v(&al["green"]),
                traffic.join(", ")
            );
            if let Some(r) = app["rollout"].as_object() {
                let steps = r.get("steps").and_then(Value::as_array).map_or(0, Vec::len);
                let at = match (
                    r.get("step").and_then(Value::as_u64),
                    r.get("weight_percent").and_then(Value::as_f64),
                ) {
                    (Some(i), Some(w)) => format!(" at {w}% (step {} of {steps})", i + 1),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "    rollout #{} of v{} ({}): {}{at}",
                    r.get("id").cloned().unwrap_or_default(),
                    r.get("version").cloned().unwrap_or_default(),
                    r.get("strategy").and_then(Value::as_str).unwrap_or("-"),
                    r.get("phase").and_then(Value::as_str).unwrap_or("-")
                );
            } else if let Some(r) = app["last_rollout"].as_object() {
                let _ = writeln!(
                    out,
                    "    last rollout #{} of v{}: {} — {}",
                    r.get("id").cloned().unwrap_or_default(),
                    r.get("version").cloned().unwrap_or_default(),
                    r.get("phase").and_then(Value::as_str).unwrap_or("-"),
                    r.get("reason").and_then(Value::as_str).unwrap_or("")
                );
            }
            for alarm in app["alarms"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    out,
                    "    alarm {:<8} {}  [{}]",
                    super::s(alarm, "state"),
                    super::s(alarm, "rule"),
                    alarm["actions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let versions = app["versions"].as_array().cloned().unwrap_or_default();
            // Newest first: show the newest and every version an alias points at or that runs.
            for (i, v) in versions.iter().enumerate() {
                let named = v["aliases"].as_array().is_some_and(|a| !a.is_empty());
                let running = v["instances"].as_array().is_some_and(|a| !a.is_empty());
                if i > 0 && !named && !running {
                    continue;
                }
                let names: Vec<&str> = v["aliases"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let instances = v["instances"].as_array().cloned().unwrap_or_default();
                let healthy = instances
                    .iter()
                    .filter(|i| i["status"]["state"] == "healthy")
                    .count();
                let _ = writeln!(
                    out,
                    "    v{:<4} {:<12} {:<14} {}  {}/{} healthy  {}",
                    v["number"],
                    if names.is_empty() {
                        "-".to_string()
                    } else {
                        names.join(",")
                    },
                    v["label"].as_str().unwrap_or("-"),
                    super::short_digest(super::s(v, "digest")),
                    healthy,
                    instances.len(),
                    super::s(v, "created_at"),
                );
                for i in &instances {
                    let _ = writeln!(
                        out,
                        "           {}  {}  pid {}  {}{}",
                        super::s(i, "id"),
                        super::s(i, "addr"),
                        i["pid"]
                            .as_u64()
                            .map_or_else(|| "-".to_string(), |p| p.to_string()),
                        super::s(&i["status"], "state"),
                        match i["restarts"].as_u64() {
                            Some(n) if n > 0 => format!(" ({n} restarts)"),
                            _ => String::new(),
                        }
                    );
                }
            }
        }
    }
    out
}
