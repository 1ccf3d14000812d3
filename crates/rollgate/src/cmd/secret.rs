//! `rollgate secret …`: set, read, list, rotate and delete secrets, set rotation policies and
//! rotate the master key, as a client of the control API's secret routes (docs/secrets.md).
//!
//! Values are read from stdin or a file, never from the command line: arguments end up in
//! shell history and in every process listing, so there is deliberately no `--value` flag.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{s, v};
use crate::Global;
use crate::client::{q, query};
use crate::locate;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: SecretCommand,
}

/// Which secret: its name, environment, and app (none: environment-wide).
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The secret's name (A-Z a-z 0-9 _ . -).
    pub name: String,
    /// The environment.
    #[arg(long, short = 'e')]
    pub env: String,
    /// Only this app (overrides an environment-wide secret of the same name); default: every
    /// app of the environment.
    #[arg(long)]
    pub app: Option<String>,
}

impl Target {
    fn path(&self, suffix: &str) -> String {
        format!("/v1/secrets/{}/{}{suffix}", q(&self.env), q(&self.name))
    }

    fn scope(&self) -> String {
        match &self.app {
            Some(a) => format!("{}/{a}", self.env),
            None => format!("{}/*", self.env),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum SecretCommand {
    /// Store a new value (it becomes current; the old one becomes previous). The value is
    /// read from stdin (one trailing newline dropped) or from --from-file (verbatim).
    Set {
        #[command(flatten)]
        target: Target,
        /// Read the value from this file, byte for byte.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Print a value on stdout, exactly as stored (audited as secret_read).
    Get {
        #[command(flatten)]
        target: Target,
        /// This version instead of the current one.
        #[arg(long, conflicts_with = "stage")]
        version: Option<u64>,
        /// This stage instead of current: current, pending or previous.
        #[arg(long)]
        stage: Option<String>,
        /// Print JSON (with value and value_base64).
        #[arg(long)]
        json: bool,
    },
    /// List secrets: metadata only, values masked.
    List {
        /// Only this environment.
        #[arg(long, short = 'e')]
        env: Option<String>,
        /// Only this app's own secrets.
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a secret's versions and their stages (no values).
    History {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Rotate now with the secret's hook: new value → pending → test → current, then roll the
    /// apps that use it. Exits 1 if the rotation failed (current is unchanged).
    Rotate {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret (its versions stay in the history for the audit trail).
    Delete {
        #[command(flatten)]
        target: Target,
    },
    /// Set the rotation policy: every PERIOD, run HOOK (prints the new value on stdout), then
    /// TEST (gets it on stdin, must exit 0).
    Policy {
        #[command(flatten)]
        target: Target,
        /// Rotate when current is this old, e.g. 7d, 12h, 30m.
        #[arg(long, required_unless_present = "remove")]
        every: Option<String>,
        /// Shell command run by the control plane that prints the new value on stdout.
        #[arg(long)]
        hook: Option<String>,
        /// Shell command that gets the candidate value on stdin and must exit 0.
        #[arg(long)]
        test: Option<String>,
        /// Remove the policy instead.
        #[arg(long, conflicts_with_all = ["every", "hook", "test"])]
        remove: bool,
    },
    /// Re-wrap every data key under a new master key, in one transaction.
    RotateMasterKey {
        /// The new key (64 hex digits or base64 of 32 bytes; mode 0600), on the server's machine.
        #[arg(long)]
        new_key_file: PathBuf,
    },
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let api = locate::api(g)?;
    match a.command {
        SecretCommand::Set { target, from_file } => {
            let value = match &from_file {
                Some(p) => {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?
                }
                None => read_stdin()?,
            };
            let body = json!({
                "app": target.app,
                "value_base64": base64::engine::general_purpose::STANDARD.encode(&value),
            });
            let r = api.post(&target.path(""), &body).await?;
            println!(
                "secret {} in {} is {} (current)",
                target.name,
                target.scope(),
                v(&r["version"])
            );
        }
        SecretCommand::Get {
            target,
            version,
            stage,
            json,
        } => {
            let path = target.path("/value")
                + &query(&[
                    ("app", target.app.clone()),
                    ("version", version.map(|n| n.to_string())),
                    ("stage", stage),
                ]);
            let r = api.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(r["value_base64"].as_str().unwrap_or(""))
                    .context("the server sent a value that is not base64")?;
                // Exactly the stored bytes, so `$(rollgate secret get …)` round-trips.
                let mut out = std::io::stdout().lock();
                out.write_all(&bytes)?;
                out.flush()?;
            }
        }
        SecretCommand::List { env, app, json } => {
            let r = api
                .get(&format!(
                    "/v1/secrets{}",
                    query(&[("env", env), ("app", app)])
                ))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_list(&r);
            }
        }
        SecretCommand::History { target, json } => {
            let r = api
                .get(&(target.path("/history") + &query(&[("app", target.app.clone())])))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_history(&target, &r);
            }
        }
        SecretCommand::Rotate { target, json } => {
            let r = api
                .post(&target.path("/rotate"), &json!({ "app": target.app }))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else if r["outcome"] == "rotated" {
                println!(
                    "secret {} in {} rotated: {} is current",
                    target.name,
                    target.scope(),
                    v(&r["current"])
                );
                for d in r["redeploys"].as_array().into_iter().flatten() {
                    println!(
                        "  rolling {} in {} to v{} (rollout #{}) so its instances get the new value",
                        s(d, "app"),
                        s(d, "env"),
                        d["version"],
                        d["rollout_id"]
                    );
                }
            } else {
                eprintln!(
                    "rotation of {} in {} failed: {}; {} stays current",
                    target.name,
                    target.scope(),
                    s(&r, "reason"),
                    v(&r["current"])
                );
            }
            if r["outcome"] != "rotated" {
                return Ok(ExitCode::from(1));
            }
        }
        SecretCommand::Delete { target } => {
            let path = target.path("") + &query(&[("app", target.app.clone())]);
            api.delete(&path).await?;
            println!("secret {} in {} deleted", target.name, target.scope());
        }
        SecretCommand::Policy {
            target,
            every,
            hook,
            test,
            remove,
        } => {
            let body = if remove {
                json!({ "app": target.app, "every": null })
            } else {
                json!({ "app": target.app, "every": every, "hook": hook, "test": test })
            };
            let r = api.put(&target.path("/policy"), &body).await?;
            match r["rotation"].as_object() {
                None => println!(
                    "secret {} in {}: no rotation policy",
                    target.name,
                    target.scope()
                ),
                Some(p) => println!(
                    "secret {} in {}: rotate every {}{}",
                    target.name,
                    target.scope(),
                    p.get("every").and_then(Value::as_str).unwrap_or("-"),
                    if p.get("hook").is_some_and(|h| !h.is_null()) {
                        " with its hook"
                    } else {
                        " (no hook: `rollgate secret set` by hand)"
                    }
                ),
            }
        }
        SecretCommand::RotateMasterKey { new_key_file } => {
            // The server reads the file: send a path that does not depend on our directory.
            let path = std::fs::canonicalize(&new_key_file)
                .with_context(|| format!("cannot find {}", new_key_file.display()))?;
            let r = api
                .post(
                    "/v1/master-key/rotate",
                    &json!({ "new_key_file": path.display().to_string() }),
                )
                .await?;
            println!(
                "master key rotated: {} data keys re-wrapped from {} to {}\n{}",
                r["rewrapped"],
                s(&r, "old_key_id"),
                s(&r, "new_key_id"),
                s(&r, "next_start")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the value from stdin, dropping one trailing newline (what `echo` adds).
fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut stdin = std::io::stdin().lock();
    if stdin.is_terminal() {
        eprintln!("Type the value, then Enter and Ctrl-D:");
    }
    let mut value = Vec::new();
    stdin
        .read_to_end(&mut value)
        .context("cannot read the value from stdin")?;
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("no value on stdin (pipe it in, or use --from-file PATH)");
    }
    Ok(value)
}

fn print_list(r: &Value) {
    let items = r["secrets"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no secrets");
        return;
    }
    println!(
        "{:<24} {:<16} {:<8} {:<8} {:<8} {:<28} NEXT ROTATION",
        "NAME", "SCOPE", "VALUE", "CURRENT", "PREVIOUS", "ROTATION"
    );
    for i in items {
        let scope = format!("{}/{}", s(&i, "env"), i["app"].as_str().unwrap_or("*"));
        let rotation = match i["rotation"].as_object() {
            None => "-".to_string(),
            Some(p) => format!(
                "every {}{}",
                p.get("every").and_then(Value::as_str).unwrap_or("-"),
                if p.get("hook").is_some_and(|h| !h.is_null()) {
                    " (hook)"
                } else {
                    ""
                }
            ),
        };
        println!(
            "{:<24} {:<16} {:<8} {:<8} {:<8} {:<28} {}",
            s(&i, "name"),
            scope,
            s(&i, "value"),
            v(&i["current"]),
            v(&i["previous"]),
            rotation,
            s(&i, "next_rotation")
        );
    }
}

fn print_history(target: &Target, r: &Value) {
    println!("secret {} in {}", target.name, target.scope());
    for ver in r["versions"].as_array().into_iter().flatten() {
        let stages: Vec<&str> = ver["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "  {:<6} {:<20} {:<24} by {:<16} key {}",
            v(&ver["version"]),
            if stages.is_empty() {
                "-".to_string()
            } else {
                stages.join(",")
            },
            s(ver, "created_at"),
            s(ver, "created_by"),
            s(ver, "key_id")
        );
    }
}
