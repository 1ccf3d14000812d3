//! The `rollgate` binary: parses the command line and hands each subcommand to its module.
//! `serve` and `demo` run the control plane; every other command is a client of its API.

mod client;
mod cmd;
mod locate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: the gateway allocates and frees small buffers on
/// every proxied request from several threads, where glibc's malloc spent about 7 % of the
/// proxy's CPU (perf, bench/waf/throughput.sh) and mimalloc's per-thread free lists far less.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Blue/green releases through rollgate's own gateway, in one binary.
#[derive(Parser, Debug)]
#[command(name = "rollgate", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "ROLLGATE_CONFIG",
        default_value = "rollgate.toml"
    )]
    pub config: PathBuf,
    /// Data directory (state, artifacts, logs, token); default `.rollgate` beside the config.
    #[arg(long, global = true, env = "ROLLGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Control API URL; default: read from the data directory of a running `serve`.
    #[arg(long, global = true, env = "ROLLGATE_SERVER")]
    pub server: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the control plane and a gateway per environment.
    Serve(cmd::serve::Args),
    /// Release a new version of an app to an environment (blue/green).
    Deploy(cmd::deploy::Args),
    /// Show aliases, traffic, versions, instances and rollouts.
    Status(cmd::status::Args),
    /// Put live back on blue at once (or stop the running rollout).
    Rollback(cmd::rollback::Args),
    /// Skip the remaining steps of the rollout in progress (or the rest of its monitor window).
    Promote(cmd::operate::Args),
    /// Hold the rollout in progress at its current weight.
    Pause(cmd::operate::Args),
    /// Let a paused rollout go on with its next step.
    Resume(cmd::operate::Args),
    /// Stop the rollout in progress: all traffic back on the stable version.
    Abort(cmd::operate::Args),
    /// Roll out again the version whose last rollout failed, was rolled back or aborted.
    Retry(cmd::operate::Args),
    /// Show past rollouts with their events.
    History(cmd::history::Args),
    /// Show the logs of an app's instances.
    Logs(cmd::logs::Args),
    /// Show the audit trail.
    Audit(cmd::Scope),
    /// Encrypted secrets: set, get, list, history, rotate, delete, policy, rotate-master-key.
    Secret(cmd::secret::Args),
    /// Sign a request for a route that needs an HMAC signature (prints the headers).
    Sign(cmd::sign::Args),
    /// Check a configuration file and list every error.
    Validate,
    /// Watch a whole release story on the embedded default.
    Demo(cmd::demo::Args),
    /// Run the sample service (used by the demo and the tests).
    #[command(hide = true, name = "demo-service", disable_help_flag = true)]
    DemoService {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The sample service runs its own runtime and logging; hand over before setting ours up.
    if let Command::DemoService { args } = &cli.command {
        let code = demo_service::run_main(args.clone());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = cli.global;
    match cli.command {
        Command::Serve(a) => cmd::serve::run(&g, a).await,
        Command::Deploy(a) => cmd::deploy::run(&g, a).await,
        Command::Status(a) => cmd::status::run(&g, a).await,
        Command::Rollback(a) => cmd::rollback::run(&g, a).await,
        Command::Promote(a) => cmd::operate::run(&g, "promote", a).await,
        Command::Pause(a) => cmd::operate::run(&g, "pause", a).await,
        Command::Resume(a) => cmd::operate::run(&g, "resume", a).await,
        Command::Abort(a) => cmd::operate::run(&g, "abort", a).await,
        Command::Retry(a) => cmd::retry::run(&g, a).await,
        Command::History(a) => cmd::history::run(&g, a).await,
        Command::Logs(a) => cmd::logs::run(&g, a).await,
        Command::Audit(a) => cmd::audit::run(&g, a).await,
        Command::Secret(a) => cmd::secret::run(&g, a).await,
        Command::Sign(a) => cmd::sign::run(a),
        Command::Validate => cmd::validate::run(&g),
        Command::Demo(a) => cmd::demo::run(a).await,
        Command::DemoService { .. } => Ok(ExitCode::SUCCESS),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
