//! `rollgate logs`: the last lines each instance of a version wrote (default: live).

use std::process::ExitCode;

use crate::Global;
use crate::client::query;
use crate::locate;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The app.
    pub app: String,
    /// The environment.
    #[arg(long, short = 'e')]
    pub env: String,
    /// Version number; default the live one.
    #[arg(long)]
    pub version: Option<u64>,
    /// Lines per instance.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub lines: usize,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    let q = query(&[
        ("app", Some(a.app)),
        ("env", Some(a.env)),
        ("version", a.version.map(|v| v.to_string())),
        ("lines", Some(a.lines.to_string())),
    ]);
    let body = api.get(&format!("/v1/logs{q}")).await?;
    for inst in body["instances"].as_array().into_iter().flatten() {
        println!(
            "==> {} ({}) <==",
            super::s(inst, "instance"),
            super::s(inst, "path")
        );
        for line in inst["lines"].as_array().into_iter().flatten() {
            println!("{}", line.as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}
