//! The end-to-end harness: runs the real `rollgate` binary (`serve` and the CLI) in a
//! temporary directory with OS-chosen ports, makes artifacts, and drives concurrent client
//! traffic through the gateway, counting what the clients saw.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_rollgate");

/// A demo-service app with fast health checks, for tests. `{EXTRA_APP}` and `{EXTRA_ENV}`
/// are replaced by the caller's additions.
pub fn demo_config(monitor: &str, extra_app: &str, extra_env: &str) -> String {
    format!(
        r#"
[server]
control = "127.0.0.1:0"

[app.api]
run = "'{BIN}' demo-service"
stop_grace = "5s"
health = {{ path = "/health", interval = "200ms", timeout = "200ms", healthy = 2, unhealthy = 2, deadline = "5s" }}
smoke = [{{ path = "/api/users", status = 200, body_contains = "Ada" }}]
{extra_app}

[env.staging]
listen = "127.0.0.1:0"
monitor = "{monitor}"
rollback_when = ["error_rate > 5%"]
min_requests = 20
{extra_env}
"#
    )
}

/// A running `rollgate serve` in its own temporary directory.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    pub control: String,
    pub gateways: BTreeMap<String, String>,
    /// Extra environment variables of the `serve` process.
    pub env: Vec<(String, String)>,
}

impl Server {
    /// [`Server::start`] with extra environment variables for `serve`.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("rollgate-e2e-")
            .tempdir()
            .unwrap();
        let path = dir.path().join("rollgate.toml");
        std::fs::write(&path, config).unwrap();
        let mut s = Server {
            dir,
            config: path,
            child: None,
            control: String::new(),
            gateways: BTreeMap::new(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn().await;
        s
    }

    /// Writes `config` to `rollgate.toml` in a new temporary directory and starts `serve`.
    pub async fn start(config: &str) -> Server {
        Server::start_with_env(config, &[]).await
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join(".rollgate")
    }

    /// Starts (or restarts) `serve` and waits until it wrote its address file.
    pub async fn spawn(&mut self) {
        let serve_file = self.data_dir().join("serve.json");
        let _ = std::fs::remove_file(&serve_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("serve.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&serve_file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                self.control = v["control"].as_str().unwrap().to_string();
                self.gateways = v["gateways"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "serve exited with {status} before it was ready:\n{}",
                    self.serve_log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "serve did not get ready in 30s:\n{}",
                self.serve_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn serve_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn gateway(&self, env: &str) -> String {
        self.gateways[env].clone()
    }

    /// `kill -9` of the server process.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("serve did not stop in 30s")
            .unwrap()
    }

    /// Runs the CLI against this server; returns (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("ROLLGATE_TOKEN")
            .env_remove("ROLLGATE_SERVER")
            .env_remove("ROLLGATE_DATA_DIR")
            .output()
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The CLI's `--json` output, asserting success.
    pub async fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let (code, out, err) = self.cli(&all).await;
        assert_eq!(code, 0, "rollgate {args:?} failed:\n{out}\n{err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Makes an artifact directory whose content differs by `tag`.
    pub fn artifact(&self, tag: &str) -> PathBuf {
        let p = self.dir.path().join(format!("build-{tag}"));
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("RELEASE"), tag).unwrap();
        p
    }

    /// Deploys and returns (exit code, stdout+stderr).
    pub async fn deploy(&self, artifact: &Path, extra: &[&str]) -> (i32, String) {
        let a = artifact.display().to_string();
        let mut args = vec![
            "deploy",
            "api",
            "--env",
            "staging",
            "--artifact",
            a.as_str(),
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = self.cli(&args).await;
        (code, format!("{out}{err}"))
    }

    /// The aliases of api/staging from `status --json`.
    pub async fn aliases(&self) -> Value {
        let s = self.cli_json(&["status", "api", "--env", "staging"]).await;
        s["environments"][0]["apps"][0]["aliases"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Some(id) = child.id()
        {
            // A clean stop so that the instances are stopped too.
            let pid = nix::unistd::Pid::from_raw(i32::try_from(id).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.start_kill();
        }
    }
}

/// What concurrent clients saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub status_5xx: AtomicU64,
    pub other_status: AtomicU64,
    pub conn_errors: AtomicU64,
    pub versions: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Seen {
    pub fn failed(&self) -> u64 {
        self.status_5xx.load(Ordering::Relaxed)
            + self.other_status.load(Ordering::Relaxed)
            + self.conn_errors.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} requests: {} ok, {} 5xx, {} other, {} connection errors; versions {:?}",
            self.requests.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.status_5xx.load(Ordering::Relaxed),
            self.other_status.load(Ordering::Relaxed),
            self.conn_errors.load(Ordering::Relaxed),
            self.versions.lock().unwrap()
        )
    }
}

/// Concurrent keep-alive clients GETting `path` through a gateway until stopped.
pub struct Load {
    running: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub seen: Arc<Seen>,
}

impl Load {
    /// `clients` loops, each about 100 requests/s. When `path` is `/version`, the versions
    /// seen are counted too.
    pub fn start(gateway: &str, path: &str, clients: usize) -> Load {
        let running = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(Seen::default());
        let uri: hyper::Uri = format!("http://{gateway}{path}").parse().unwrap();
        let tasks = (0..clients)
            .map(|_| {
                let (running, seen, uri) = (Arc::clone(&running), Arc::clone(&seen), uri.clone());
                tokio::spawn(async move {
                    let client: Client<_, Empty<Bytes>> =
                        Client::builder(TokioExecutor::new()).build_http();
                    // Bounded by count as well as by the stop flag: at most 10 minutes of traffic.
                    for _ in 0..60_000 {
                        if !running.load(Ordering::Relaxed) {
                            break;
                        }
                        let started = Instant::now();
                        seen.requests.fetch_add(1, Ordering::Relaxed);
                        match tokio::time::timeout(Duration::from_secs(10), client.get(uri.clone()))
                            .await
                        {
                            Ok(Ok(resp)) => {
                                let status = resp.status();
                                let body = resp
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                if status.is_success() {
                                    seen.ok.fetch_add(1, Ordering::Relaxed);
                                    if let Ok(v) = serde_json::from_slice::<Value>(&body)
                                        && let Some(ver) = v.get("version").and_then(Value::as_str)
                                    {
                                        *seen
                                            .versions
                                            .lock()
                                            .unwrap()
                                            .entry(ver.to_string())
                                            .or_default() += 1;
                                    }
                                } else if status.is_server_error() {
                                    seen.status_5xx.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    seen.other_status.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            _ => {
                                seen.conn_errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        tokio::time::sleep(
                            Duration::from_millis(10).saturating_sub(started.elapsed()),
                        )
                        .await;
                    }
                })
            })
            .collect();
        Load {
            running,
            tasks,
            seen,
        }
    }

    /// Stops the clients and returns what they saw.
    pub async fn stop(self) -> Arc<Seen> {
        self.running.store(false, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.seen
    }
}

/// One GET through the gateway: (status, body).
pub async fn get(
    gateway: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, String) {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::get(format!("http://{gateway}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// The version a GET of `/version` through the gateway answers.
pub async fn live_version(gateway: &str) -> String {
    let (status, _, body) = get(gateway, "/version", &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["version"].as_str().unwrap().to_string()
}

/// Processes whose environment holds `marker` (a value only this test's instances carry).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        // Zombies keep no environment; only live processes count.
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// A local HTTP receiver for notifications: answers 200 and keeps (path, body) of each POST.
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    pub got: Arc<std::sync::Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<std::sync::Mutex<Vec<(String, Value)>>> = Arc::default();
        let store = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let store = Arc::clone(&store);
                            async move {
                                let path = req.uri().path().to_string();
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                                store.lock().unwrap().push((path, value));
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, got }
    }

    /// Waits up to 10 s for a notification on `path` whose `kind` (or Slack `text`) contains
    /// `needle`.
    pub async fn wait_for(&self, path: &str, needle: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.got.lock().unwrap().iter().find_map(|(p, v)| {
                let hay = v
                    .get("kind")
                    .or_else(|| v.get("text"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                (p == path && hay.contains(needle)).then(|| v.clone())
            });
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on {path}: {:?}",
                self.got.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
