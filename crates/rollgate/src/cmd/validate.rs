//! `rollgate validate`: checks the configuration and lists every error at once.

use std::process::ExitCode;

use crate::Global;

pub fn run(g: &Global) -> anyhow::Result<ExitCode> {
    let text = match std::fs::read_to_string(&g.config) {
        Ok(t) => t,
        Err(e) => anyhow::bail!("cannot read {}: {e}", g.config.display()),
    };
    match rollgate_core::Config::parse(&text, &g.config.display().to_string()) {
        Ok(c) => {
            println!(
                "{}: ok ({} app{}, {} environment{})",
                g.config.display(),
                c.apps.len(),
                if c.apps.len() == 1 { "" } else { "s" },
                c.envs.len(),
                if c.envs.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("{e}");
            }
            eprintln!(
                "{} error{} found",
                errs.0.len(),
                if errs.0.len() == 1 { "" } else { "s" }
            );
            Ok(ExitCode::from(2))
        }
    }
}
