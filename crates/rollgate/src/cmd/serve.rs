//! `rollgate serve`: the control plane and one gateway per environment, until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;

use crate::Global;
use crate::locate;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

/// Sets up logging on stderr; `RUST_LOG` overrides the default `info`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

pub async fn run(g: &Global, args: Args) -> anyhow::Result<ExitCode> {
    init_logging(args.log_format);
    let mut config = locate::load_config(&g.config)?;
    let data_dir = locate::data_dir(g, Some(&config));
    // `server.master_key_file` is relative to the configuration's folder, like `data_dir`.
    config.server.master_key_file = config
        .server
        .master_key_file
        .take()
        .map(|f| locate::config_relative(g, f));
    let config_path = g.config.display().to_string();
    rollgate_control::serve(config, data_dir.clone(), shutdown_signal(), |info| {
        tracing::info!(control = %info.control, gateways = ?info.gateways, data_dir = %data_dir.display(), config = %config_path, "rollgate is serving");
    })
    .await
    .context("rollgate serve")?;
    Ok(ExitCode::SUCCESS)
}
