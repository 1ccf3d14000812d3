//! `rollgate demo`: a whole release story on the embedded default, with nothing to build.
//!
//! It writes a configuration and four artifacts into a temporary directory, runs the control
//! plane in this process (the sample service is this same binary's hidden `demo-service`
//! command), drives steady client traffic through the gateway, and releases:
//! v1 (first release), v2 (healthy: a canary 10 → 50 → 100 %), v3 (fails its health check:
//! never takes traffic) and v4 (answers 30 % of its API calls with 500: rolled back from the
//! gateway's metrics while it holds 10 % of the traffic). It then prints what the clients saw
//! and leaves everything up until Ctrl-C (or stops at once with `--exit`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::deploy;
use crate::client::Api;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Finish after the story instead of leaving the gateway up until Ctrl-C.
    #[arg(long)]
    pub exit: bool,
    /// Concurrent clients driving traffic through the gateway.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
}

/// What the clients saw, counted since the start.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    status_5xx: AtomicU64,
    other: AtomicU64,
    conn_errors: AtomicU64,
}

#[derive(Clone, Copy, Default)]
struct Snapshot {
    requests: u64,
    ok: u64,
    status_5xx: u64,
    other: u64,
    conn_errors: u64,
}

impl Snapshot {
    fn of(c: &Counters) -> Snapshot {
        Snapshot {
            requests: c.requests.load(Ordering::Relaxed),
            ok: c.ok.load(Ordering::Relaxed),
            status_5xx: c.status_5xx.load(Ordering::Relaxed),
            other: c.other.load(Ordering::Relaxed),
            conn_errors: c.conn_errors.load(Ordering::Relaxed),
        }
    }

    fn since(self, before: Snapshot) -> Snapshot {
        Snapshot {
            requests: self.requests - before.requests,
            ok: self.ok - before.ok,
            status_5xx: self.status_5xx - before.status_5xx,
            other: self.other - before.other,
            conn_errors: self.conn_errors - before.conn_errors,
        }
    }

    fn failed(self) -> u64 {
        self.status_5xx + self.other + self.conn_errors
    }
}

struct Step {
    what: &'static str,
    outcome: String,
    traffic: Snapshot,
}

const CONFIG: &str = r#"# Written by `rollgate demo`.
[server]
control = "127.0.0.1:0"

[app.api]
run = "{EXE} demo-service"
stop_grace = "5s"
health = { path = "/health", interval = "250ms", timeout = "250ms", healthy = 2, unhealthy = 2, deadline = "4s" }
smoke = [
  { path = "/api/users", status = 200, body_contains = "Ada" },
  { path = "/version", status = 200 },
]

[env.staging]
listen = "127.0.0.1:0"
strategy = { canary = { steps = [10, 50, 100], interval = "2s" } }
monitor = "3s"
rollback_when = ["error_rate > 5%", "p99 > 500ms"]
min_requests = 20
on_inconclusive = "continue"
sticky = "cookie"
override_header = "X-Rollgate-Alias"
"#;

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("rollgate-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = dir.path().to_path_buf();
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let config_text = CONFIG.replace(
        "{EXE}",
        &shell_quote(&exe.display().to_string())
            .replace('\\', "\\\\")
            .replace('"', "\\\""),
    );
    let config_path = root.join("rollgate.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = rollgate_core::Config::parse(&config_text, &config_path.display().to_string())
        .map_err(|e| anyhow::anyhow!("demo configuration: {e}"))?;
    for n in 1..=4 {
        let a = root.join(format!("build-v{n}"));
        std::fs::create_dir_all(&a)?;
        std::fs::write(a.join("RELEASE"), format!("demo release {n}\n"))?;
    }
    let data_dir = root.join(".rollgate");

    println!("rollgate demo — everything lives in {}", root.display());
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rollgate_control::serve(
        config,
        data_dir.clone(),
        async move {
            let _ = stop_rx.await;
        },
        move |info| {
            let _ = ready_tx.send(info.clone());
        },
    ));
    let info = match ready_rx.await {
        Ok(info) => info,
        Err(_) => {
            return match server.await {
                Ok(Err(e)) => Err(e).context("the embedded server failed to start"),
                _ => Err(anyhow::anyhow!("the embedded server failed to start")),
            };
        }
    };
    let gateway = info.gateways.get("staging").cloned().unwrap_or_default();
    let token = std::fs::read_to_string(data_dir.join(rollgate_control::TOKEN_FILE))?
        .trim()
        .to_string();
    let api = Api::new(&info.control, token)?;
    println!("control API {}   gateway http://{gateway}\n", info.control);

    let counters = Arc::new(Counters::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut steps = Vec::new();

    let story: [(&'static str, BTreeMap<String, String>, bool); 4] = [
        ("v1  first release", BTreeMap::new(), false),
        (
            "v2  healthy canary 10 -> 50 -> 100 %",
            BTreeMap::new(),
            true,
        ),
        (
            "v3  fails its health check",
            [("DEMO_FAIL_HEALTH".to_string(), "1".to_string())].into(),
            true,
        ),
        (
            "v4  answers 30% of API calls with 500",
            [("DEMO_ERROR_RATE".to_string(), "0.3".to_string())].into(),
            true,
        ),
    ];
    let mut workers = Vec::new();
    for (n, (what, vars, with_traffic)) in story.into_iter().enumerate() {
        if with_traffic && workers.is_empty() {
            for _ in 0..args.clients.max(1) {
                workers.push(tokio::spawn(client_loop(
                    gateway.clone(),
                    Arc::clone(&counters),
                    Arc::clone(&running),
                )));
            }
            // Let the clients settle on the gateway before the next release.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("== {what}");
        let before = Snapshot::of(&counters);
        let artifact = root.join(format!("build-v{}", n + 1));
        let label = format!("demo-{}", n + 1);
        let accepted = deploy::start(
            &api,
            "api",
            "staging",
            &artifact.display().to_string(),
            Some(&label),
            &vars,
        )
        .await?;
        let id = accepted["rollout_id"].as_u64().unwrap_or(0);
        let done = deploy::follow(&api, id, true).await?;
        let traffic = Snapshot::of(&counters).since(before);
        steps.push(Step {
            what,
            outcome: outcome(&done),
            traffic,
        });
        println!();
    }
    running.store(false, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }

    let total = Snapshot::of(&counters);
    println!("== summary (what the clients saw through the gateway)");
    for s in &steps {
        println!(
            "  {:<38} {:<56} {:>6} requests, {} failed",
            s.what,
            s.outcome,
            s.traffic.requests,
            s.traffic.failed()
        );
    }
    println!(
        "  total: {} requests, {} ok, {} answered 5xx, {} other, {} connection errors",
        total.requests, total.ok, total.status_5xx, total.other, total.conn_errors
    );
    let status = api.get("/v1/status").await?;
    print!("\n{}", super::status::render(&status));

    if args.exit {
        let _ = stop_tx.send(());
    } else {
        println!("\nThe gateway stays up. Try:");
        println!("  curl http://{gateway}/version");
        println!(
            "  curl -H 'X-Rollgate-Alias: blue' http://{gateway}/version   # the previous version, kept warm"
        );
        println!("  rollgate --data-dir {} status", data_dir.display());
        println!(
            "  rollgate --data-dir {} history --explain",
            data_dir.display()
        );
        println!("Press Ctrl-C to stop (the temporary directory is then removed).");
        super::serve::shutdown_signal().await;
        let _ = stop_tx.send(());
    }
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e).context("embedded server"),
        Err(e) => anyhow::bail!("embedded server task: {e}"),
    }
    drop(dir);
    Ok(ExitCode::SUCCESS)
}

fn outcome(r: &Value) -> String {
    let phase = r["phase"].as_str().unwrap_or("-");
    let events = r["events"].as_array().cloned().unwrap_or_default();
    let started = r["started_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let secs = |a: Option<std::time::SystemTime>| match (started, a) {
        (Some(s), Some(a)) => a
            .duration_since(s)
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_default(),
        _ => "?".to_string(),
    };
    // When live moved to the candidate (the first event in `monitoring`) and when the
    // candidate first took traffic (the first event in `shifting` or `monitoring`).
    let first_in = |phases: &[&str]| {
        events
            .iter()
            .find(|e| phases.iter().any(|p| e["phase"] == *p))
            .and_then(|e| e["at"].as_str())
            .and_then(|t| humantime::parse_rfc3339(t).ok())
    };
    let finished = r["finished_at"]
        .as_str()
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let between = |a: Option<std::time::SystemTime>, b: Option<std::time::SystemTime>| match (a, b)
    {
        (Some(a), Some(b)) => b
            .duration_since(a)
            .map(|d| format!("{:.1}s", d.as_secs_f64()))
            .unwrap_or_default(),
        _ => "?".to_string(),
    };
    match phase {
        "succeeded" => format!("live after {}, succeeded", secs(first_in(&["monitoring"]))),
        "failed" => format!("caught before traffic after {}", secs(finished)),
        "rolled_back" => format!(
            "rolled back automatically {} after its first request",
            between(first_in(&["shifting", "monitoring"]), finished)
        ),
        other => other.to_string(),
    }
}

/// One client: keep-alive GETs of `/api/users` through the gateway until told to stop.
async fn client_loop(gateway: String, c: Arc<Counters>, running: Arc<AtomicBool>) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: hyper::Uri = match format!("http://{gateway}/api/users").parse() {
        Ok(u) => u,
        Err(_) => return,
    };
    while running.load(Ordering::Relaxed) {
        let started = Instant::now();
        c.requests.fetch_add(1, Ordering::Relaxed);
        match client.get(uri.clone()).await {
            Ok(resp) => {
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                if status.is_success() {
                    c.ok.fetch_add(1, Ordering::Relaxed);
                } else if status.is_server_error() {
                    c.status_5xx.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.other.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                c.conn_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        // About 100 requests per second per client: steady traffic, not a load test.
        tokio::time::sleep(Duration::from_millis(10).saturating_sub(started.elapsed())).await;
    }
}
