//! `rollgate.toml`: the typed configuration model and its validation.
//!
//! The whole file is checked at once and every problem is collected, each naming the file, the
//! key and what was expected, so that `rollgate validate` can list them all. Unknown keys are
//! errors: a misspelt key must never be silently ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::model::valid_name;
use crate::rollout::{Pause, Step};
use crate::rule::Rule;

#[path = "edge.rs"]
pub mod edge;

/// The control API's default listen address.
pub const DEFAULT_CONTROL_LISTEN: &str = "127.0.0.1:7700";

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub file: String,
    /// The dotted key (e.g. `app.api.health.interval`), or `line L, column C` for syntax errors.
    pub key: String,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.key, self.message)
    }
}

/// Every problem found in a configuration file, in file order where known.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A validated `rollgate.toml`.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub apps: BTreeMap<String, AppConfig>,
    pub envs: BTreeMap<String, EnvConfig>,
}

/// `[server]`: the control plane.
#[derive(Clone, Debug, Serialize)]
pub struct ServerConfig {
    /// Control API listen address; default `127.0.0.1:7700`. Port 0 lets the OS choose; the
    /// chosen address is written to the data directory for the CLI to find.
    pub control: SocketAddr,
    /// Data directory, relative to the configuration file; default `.rollgate`.
    pub data_dir: Option<PathBuf>,
    /// Secrets' master key from this file (relative to the configuration file's folder).
    /// Default: the variable `ROLLGATE_MASTER_KEY` if set, else `<data dir>/master.key`
    /// (docs/secrets.md). Exclusive with `master_key_env`.
    pub master_key_file: Option<PathBuf>,
    /// Secrets' master key from this environment variable (hex or base64 of 32 bytes).
    pub master_key_env: Option<String>,
    /// Further API tokens with limited permissions (the data directory's `token` may do
    /// everything).
    pub tokens: Vec<TokenConfig>,
    /// Threads serving each environment's gateway (like nginx's `worker_processes`); `None`
    /// (the default) is one per CPU core.
    pub gateway_workers: Option<usize>,
}

/// `server.tokens[i]`: an API token that may do only what it lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenConfig {
    /// Shown in errors and logs.
    pub name: String,
    /// The environment variable holding the token (at least 16 characters); tokens are
    /// never written in `rollgate.toml`.
    pub token_env: String,
    pub may: Vec<Permission>,
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Permission {
    /// `read`: status, history, rollouts, logs, audit, secret metadata.
    Read,
    /// `deploy`: deploy and retry.
    Deploy,
    /// `operate`: rollback, promote, pause, resume, abort.
    Operate,
    /// `secrets.write`: set, delete, rotate secrets and their policies, rotate the master key.
    SecretsWrite,
    /// `secrets.read`: read secret values (`rollgate secret get`).
    SecretsRead,
}

impl Permission {
    /// Every permission with its name in `rollgate.toml`.
    pub const ALL: [(Permission, &'static str); 5] = [
        (Permission::Read, "read"),
        (Permission::Deploy, "deploy"),
        (Permission::Operate, "operate"),
        (Permission::SecretsWrite, "secrets.write"),
        (Permission::SecretsRead, "secrets.read"),
    ];

    /// The name used in `rollgate.toml` and in errors.
    pub fn as_str(self) -> &'static str {
        Permission::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("?", |(_, n)| n)
    }
}

/// `[app.NAME]`: a web service that rollgate releases.
#[derive(Clone, Debug, Serialize)]
pub struct AppConfig {
    pub name: String,
    /// Shell command line that starts one instance; `${PORT}` is the port it must listen on
    /// (also given as the `PORT` environment variable).
    pub run: String,
    /// Working directory relative to the artifact's root; default `.`.
    pub workdir: PathBuf,
    /// Extra environment variables for every instance.
    pub env: BTreeMap<String, String>,
    /// Instances per version; default 1.
    pub instances: u32,
    /// Grace between SIGTERM and SIGKILL; default 10s.
    #[serde(with = "ms")]
    pub stop_grace: Duration,
    /// Host names routed to this app by the gateway; empty (default) = any host.
    pub hosts: Vec<String>,
    /// Path prefix routed to this app; default `/`.
    pub path_prefix: String,
    pub health: HealthConfig,
    pub smoke: Vec<SmokeTest>,
    /// Synthetic requests sent to the candidate (and the stable version while both take
    /// traffic) during analysis, so a quiet service still reaches the minimum sample.
    pub probe: Option<Probe>,
    /// `secrets = [...]`: the secrets every instance gets at start (docs/secrets.md).
    pub secrets: Vec<SecretRef>,
}

/// One entry of `app.NAME.secrets`: a secret and where the instance finds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// The secret's name in the store (app-scoped first, then environment-wide).
    pub name: String,
    pub target: SecretTarget,
}

/// Where an instance finds a secret's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretTarget {
    /// An environment variable; by default the name upper-cased with `.` and `-` as `_`.
    Env(String),
    /// A file (mode 0600) of this name in the directory `ROLLGATE_SECRETS_DIR`.
    File(String),
}

/// `app.NAME.probe`: one request, repeated.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// Default `GET`.
    pub method: String,
    pub path: String,
    /// Time between two requests to each version; default 100ms.
    #[serde(with = "ms")]
    pub every: Duration,
}

/// `app.NAME.health`: the probe that decides whether an instance may get traffic.
#[derive(Clone, Debug, Serialize)]
pub struct HealthConfig {
    /// Default `/health`.
    pub path: String,
    /// Default 1s.
    #[serde(with = "ms")]
    pub interval: Duration,
    /// Default 500ms.
    #[serde(with = "ms")]
    pub timeout: Duration,
    /// Consecutive passes to become healthy; default 2.
    pub healthy: u32,
    /// Consecutive failures to become unhealthy; default 3.
    pub unhealthy: u32,
    /// How long a new version may take to become healthy; default 60s.
    #[serde(with = "ms")]
    pub deadline: Duration,
}

/// One smoke test, run against the candidate before it gets any user traffic.
#[derive(Clone, Debug, Serialize)]
pub struct SmokeTest {
    /// Default `GET`.
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// Expected status; default 200.
    pub status: u16,
    /// Text the body must contain, if set.
    pub body_contains: Option<String>,
    /// Default 5s.
    #[serde(with = "ms")]
    pub timeout: Duration,
}

/// How `live` moves from blue to green.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// All traffic at once after verification.
    BlueGreen,
    /// Weight steps, e.g. 10 → 25 → 50 → 100 %, each held and judged before the next.
    Canary { steps: Vec<Step> },
    /// Equal steps of `step` (0.1 % units) every `every`, up to 100 %.
    Linear {
        step: u32,
        #[serde(with = "ms")]
        every: Duration,
    },
}

/// `env.NAME.compare`: judging the candidate against the stable version over the same window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompareConfig {
    /// Confidence of a failing verdict; default 0.99.
    pub confidence: f64,
    /// Allowed absolute increase of the error rate, e.g. 0.01 for one point; default 0.01.
    pub error_rate_margin: f64,
    /// Allowed relative slowdown of the latency distribution, e.g. 0.2 for 20 %; default 0.2.
    pub latency_margin: f64,
    /// Requests each side needs before a comparison can pass or fail; default 50.
    pub min_requests: u64,
    /// Consecutive failing comparisons (one a second) before the candidate is rolled back;
    /// default 3. Judging every second looks at the data many times, and demanding a
    /// repeated verdict keeps that from turning noise into rollbacks.
    pub consecutive: u32,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            confidence: 0.99,
            error_rate_margin: 0.01,
            latency_margin: 0.2,
            min_requests: 50,
            consecutive: 3,
        }
    }
}

/// One destination of notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyTarget {
    /// `{ webhook = "http://…", headers = { … } }`: the event as JSON.
    Webhook {
        url: String,
        /// Sent with each request (e.g. an authorization); never logged.
        #[serde(skip)]
        headers: BTreeMap<String, String>,
    },
    /// `{ slack = "http://…" }`: a Slack-compatible incoming webhook.
    Slack { url: String },
}

/// An alarm: a rule judged continuously on `live`, and what to do when it fires.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AlarmConfig {
    pub rule: Rule,
    /// Put live back on blue when it fires (if there is a blue).
    pub rollback: bool,
    /// Send a notification when it fires and when it resolves.
    pub notify: bool,
}

/// `env.NAME.sticky`: what keeps a client on one version while weights change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StickyConfig {
    /// `"cookie"`: the gateway assigns a version and remembers it in a cookie `rg_APP`.
    Cookie,
    /// `{ header = "X-User-Id" }`: a key the client sends, hashed into the weights.
    Header(String),
    /// `{ cookie = "user_id" }`: a key in one of the client's cookies, hashed likewise.
    KeyCookie(String),
}

/// What an inconclusive analysis (too little traffic) leads to at the end of a weight step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Inconclusive {
    /// Hold the weight until an operator resumes, promotes or aborts.
    Pause,
    /// Take all traffic off the candidate, as for a failure.
    Rollback,
    /// Go on with the next step; the verdicts are still recorded as inconclusive.
    Continue,
}

/// The default canary: 10 → 25 → 50 → 100 %, 30 s each.
pub const DEFAULT_CANARY_STEPS: [u32; 4] = [100, 250, 500, 1000];
/// The default pause between canary steps.
pub const DEFAULT_STEP_INTERVAL: Duration = Duration::from_secs(30);

impl Strategy {
    /// `blue-green`, `canary` or `linear`.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary { .. } => "canary",
            Strategy::Linear { .. } => "linear",
        }
    }

    /// The weight steps a rollout walks; empty for blue/green.
    pub fn steps(&self) -> Vec<Step> {
        match self {
            Strategy::BlueGreen => Vec::new(),
            Strategy::Canary { steps } => steps.clone(),
            Strategy::Linear { step, every } => {
                let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
                let mut out = Vec::new();
                let mut w = 0;
                while w < 1000 {
                    w = (w + step.max(&1)).min(1000);
                    out.push(Step {
                        weight: w,
                        pause: Pause::Millis(ms),
                    });
                }
                out
            }
        }
    }
}

/// `[env.NAME]`: an environment with its own gateway listener and policies.
#[derive(Clone, Debug, Serialize)]
pub struct EnvConfig {
    pub name: String,
    /// Gateway listen address. Port 0 lets the OS choose.
    pub listen: SocketAddr,
    pub strategy: Strategy,
    /// How long a promoted version is watched while blue stays warm; default 30s.
    #[serde(with = "ms")]
    pub monitor: Duration,
    /// Rules that roll the promoted version back; default `["error_rate > 5%"]`.
    pub rollback_when: Vec<Rule>,
    /// Requests a rate or latency rule needs before it can pass or fail; default 20.
    pub min_requests: u64,
    /// What a weight step does when its analysis could not judge for lack of traffic; default
    /// `pause` (wait for an operator).
    pub on_inconclusive: Inconclusive,
    /// How the gateway keeps a client on one version during a rollout; default none.
    pub sticky: Option<StickyConfig>,
    /// Statistical comparison of the candidate with the stable version while both take
    /// traffic (gradual strategies); `None` when `compare = false`.
    pub compare: Option<CompareConfig>,
    /// Where rollout events and alarm changes are sent; default nowhere.
    pub notify: Vec<NotifyTarget>,
    /// Rules judged every second on `live` outside rollouts, with their actions.
    pub alarms: Vec<AlarmConfig>,
    /// Request header naming an alias (`green`, `blue`, `live`) to reach it whatever the
    /// weights; default none (disabled).
    pub override_header: Option<String>,
    /// Apps released in this environment; default all.
    pub apps: Vec<String>,
    /// `[env.NAME.edge]`: IP lists, rate limit, WAF and request limits of the gateway; `None`
    /// (the default) when the table is absent. See `docs/edge.md`.
    pub edge: Option<edge::EdgeConfig>,
}

mod ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl Config {
    /// Parses and validates configuration text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigErrors> {
        let mut cx = Cx {
            file: file.to_string(),
            errors: Vec::new(),
        };
        let root: toml::Table = match text.parse::<toml::Table>() {
            Ok(t) => t,
            Err(e) => {
                let key = match e.span() {
                    Some(span) => {
                        let before = &text[..span.start.min(text.len())];
                        let line = before.matches('\n').count() + 1;
                        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                        format!("line {line}, column {col}")
                    }
                    None => "syntax".to_string(),
                };
                let message = format!("invalid TOML: {}", e.message().trim());
                return Err(ConfigErrors(vec![ConfigError {
                    file: cx.file,
                    key,
                    message,
                }]));
            }
        };
        let root_t = T {
            key: String::new(),
            table: &root,
        };
        cx.only(&root_t, &["server", "app", "env"]);

        let server = match root_t.table("server", &mut cx) {
            Some(t) => {
                cx.only(
                    &t,
                    &[
                        "control",
                        "data_dir",
                        "master_key_file",
                        "master_key_env",
                        "tokens",
                        "gateway_workers",
                    ],
                );
                let server = ServerConfig {
                    control: t
                        .addr("control", &mut cx)
                        .unwrap_or_else(default_control_listen),
                    data_dir: t.string("data_dir", &mut cx).map(PathBuf::from),
                    master_key_file: t.string("master_key_file", &mut cx).map(PathBuf::from),
                    master_key_env: t.string("master_key_env", &mut cx),
                    tokens: parse_tokens(&t, &mut cx),
                    gateway_workers: t
                        .int("gateway_workers", 1, 256, &mut cx)
                        .and_then(|n| usize::try_from(n).ok()),
                };
                check_master_key(&server, &t, &mut cx);
                server
            }
            None => ServerConfig {
                control: default_control_listen(),
                data_dir: None,
                master_key_file: None,
                master_key_env: None,
                tokens: Vec::new(),
                gateway_workers: None,
            },
        };

        let mut apps = BTreeMap::new();
        if let Some(app_t) = root_t.table("app", &mut cx) {
            for (name, value) in app_t.table.iter() {
                let key = app_t.child(name);
                if let Err(msg) = valid_name(name) {
                    cx.err(&key, msg);
                    continue;
                }
                match value.as_table() {
                    Some(table) => {
                        let t = T { key, table };
                        if let Some(app) = parse_app(name, &t, &mut cx) {
                            apps.insert(name.clone(), app);
                        }
                    }
                    None => cx.err(&key, format!("expected a table, got {}", value.type_str())),
                }
            }
        }
        if apps.is_empty() && !root.contains_key("app") {
            cx.err("app", "expected at least one [app.NAME] table".to_string());
        }

        let mut envs = BTreeMap::new();
        if let Some(env_t) = root_t.table("env", &mut cx) {
            for (name, value) in env_t.table.iter() {
                let key = env_t.child(name);
                if let Err(msg) = valid_name(name) {
                    cx.err(&key, msg);
                    continue;
                }
                match value.as_table() {
                    Some(table) => {
                        let t = T { key, table };
                        if let Some(env) = parse_env(name, &t, &apps, &mut cx) {
                            envs.insert(name.clone(), env);
                        }
                    }
                    None => cx.err(&key, format!("expected a table, got {}", value.type_str())),
                }
            }
        }
        if envs.is_empty() && !root.contains_key("env") {
            cx.err("env", "expected at least one [env.NAME] table".to_string());
        }
        check_cross(&apps, &envs, &server, &mut cx);

        if cx.errors.is_empty() {
            Ok(Config { server, apps, envs })
        } else {
            Err(ConfigErrors(cx.errors))
        }
    }

    /// The apps released in an environment, in name order.
    pub fn apps_in<'a>(&'a self, env: &'a EnvConfig) -> impl Iterator<Item = &'a AppConfig> + 'a {
        env.apps.iter().filter_map(|a| self.apps.get(a))
    }
}

fn default_control_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}

fn parse_app(name: &str, t: &T<'_>, cx: &mut Cx) -> Option<AppConfig> {
    cx.only(
        t,
        &[
            "run",
            "workdir",
            "env",
            "instances",
            "stop_grace",
            "hosts",
            "path_prefix",
            "health",
            "smoke",
            "probe",
            "secrets",
        ],
    );
    let before = cx.errors.len();
    let secrets = parse_secrets(t, cx);
    let run = t.string("run", cx);
    if run.is_none() && !t.table.contains_key("run") {
        cx.err(
            &t.child("run"),
            "expected the command that starts an instance, e.g. \"./api --port ${PORT}\""
                .to_string(),
        );
    }
    if let Some(r) = &run
        && r.trim().is_empty()
    {
        cx.err(&t.child("run"), "expected a non-empty command".to_string());
    }
    let workdir = t
        .string("workdir", cx)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    if workdir.is_absolute()
        || workdir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        cx.err(
            &t.child("workdir"),
            format!(
                "expected a path inside the artifact (relative, without '..'), got {:?}",
                workdir.display().to_string()
            ),
        );
    }
    let env = t.string_map("env", cx).unwrap_or_default();
    for k in env.keys() {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            cx.err(
                &t.child("env"),
                format!("invalid environment variable name {k:?}"),
            );
        }
    }
    let instances = t.int("instances", 1, 64, cx).map_or(1, |n| n as u32);
    let stop_grace = t
        .duration("stop_grace", cx)
        .unwrap_or(Duration::from_secs(10));
    let hosts = t.string_list("hosts", cx).unwrap_or_default();
    let path_prefix = t
        .string("path_prefix", cx)
        .unwrap_or_else(|| "/".to_string());
    if !path_prefix.starts_with('/') {
        cx.err(
            &t.child("path_prefix"),
            format!("expected a path starting with '/', got {path_prefix:?}"),
        );
    }

    let health = match t.table("health", cx) {
        Some(h) => {
            cx.only(
                &h,
                &[
                    "path",
                    "interval",
                    "timeout",
                    "healthy",
                    "unhealthy",
                    "deadline",
                ],
            );
            let hc = HealthConfig {
                path: h
                    .string("path", cx)
                    .unwrap_or_else(|| "/health".to_string()),
                interval: h.duration("interval", cx).unwrap_or(Duration::from_secs(1)),
                timeout: h
                    .duration("timeout", cx)
                    .unwrap_or(Duration::from_millis(500)),
                healthy: h.int("healthy", 1, 100, cx).map_or(2, |n| n as u32),
                unhealthy: h.int("unhealthy", 1, 100, cx).map_or(3, |n| n as u32),
                deadline: h
                    .duration("deadline", cx)
                    .unwrap_or(Duration::from_secs(60)),
            };
            if !hc.path.starts_with('/') {
                cx.err(
                    &h.child("path"),
                    format!("expected a path starting with '/', got {:?}", hc.path),
                );
            }
            if hc.timeout > hc.interval {
                cx.err(
                    &h.child("timeout"),
                    "expected a timeout no longer than the interval".to_string(),
                );
            }
            hc
        }
        None => HealthConfig {
            path: "/health".to_string(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy: 2,
            unhealthy: 3,
            deadline: Duration::from_secs(60),
        },
    };

    let mut smoke = Vec::new();
    for s in t.tables("smoke", "{ path = \"/\", status = 200 }", cx) {
        if let Some(test) = parse_smoke(&s, cx) {
            smoke.push(test);
        }
    }

    let probe = t.table("probe", cx).and_then(|p| {
        cx.only(&p, &["method", "path", "every"]);
        let method = p
            .string("method", cx)
            .unwrap_or_else(|| "GET".to_string())
            .to_ascii_uppercase();
        let every = p
            .duration("every", cx)
            .unwrap_or(Duration::from_millis(100));
        if every < Duration::from_millis(10) {
            cx.err(&p.child("every"), "expected at least 10ms".to_string());
        }
        match p.string("path", cx) {
            Some(path) if path.starts_with('/') => Some(Probe {
                method,
                path,
                every,
            }),
            Some(path) => {
                cx.err(
                    &p.child("path"),
                    format!("expected a path starting with '/', got {path:?}"),
                );
                None
            }
            None => {
                cx.err(
                    &p.child("path"),
                    "expected the path to request, e.g. \"/api/users\"".to_string(),
                );
                None
            }
        }
    });
    if cx.errors.len() > before {
        return None;
    }
    Some(AppConfig {
        name: name.to_string(),
        run: run.unwrap_or_default(),
        workdir,
        env,
        instances,
        stop_grace,
        hosts: hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        path_prefix,
        health,
        smoke,
        probe,
        secrets,
    })
}

/// `server.master_key_file` / `server.master_key_env`: at most one, each well-formed.
fn check_master_key(server: &ServerConfig, t: &T<'_>, cx: &mut Cx) {
    if server.master_key_file.is_some() && server.master_key_env.is_some() {
        cx.err(
            &t.child("master_key_env"),
            "expected either master_key_file or master_key_env, not both".to_string(),
        );
    }
    if let Some(v) = &server.master_key_env
        && !env_var_name(v)
    {
        cx.err(
            &t.child("master_key_env"),
            format!(
                "expected an environment variable name like \"ROLLGATE_MASTER_KEY\", got {v:?}"
            ),
        );
    }
    if let Some(f) = &server.master_key_file
        && f.as_os_str().is_empty()
    {
        cx.err(
            &t.child("master_key_file"),
            "expected a path to the key file".to_string(),
        );
    }
}

/// `A-Z a-z 0-9 _`, not starting with a digit: what a shell and every runtime accept.
fn env_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The default variable of a secret: `database-password` → `DATABASE_PASSWORD`.
pub fn secret_env_var(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// `app.NAME.secrets`: names, or `{ name, env }` / `{ name, file }` tables.
fn parse_secrets(t: &T<'_>, cx: &mut Cx) -> Vec<SecretRef> {
    let mut out: Vec<SecretRef> = Vec::new();
    let Some(v) = t.table.get("secrets") else {
        return out;
    };
    let key = t.child("secrets");
    let Some(items) = v.as_array() else {
        cx.err(
            &key,
            format!("expected an array of secret names, got {}", v.type_str()),
        );
        return out;
    };
    // Secret names become file names and variable names, so the store's rule applies here.
    let valid = |n: &str| {
        !n.is_empty()
            && n.len() <= 128
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    };
    for (i, item) in items.iter().enumerate() {
        let ikey = format!("{key}[{i}]");
        let entry = if let Some(name) = item.as_str() {
            Some((name.to_string(), SecretTarget::Env(secret_env_var(name))))
        } else if let Some(table) = item.as_table() {
            let it = T {
                key: ikey.clone(),
                table,
            };
            cx.only(&it, &["name", "env", "file"]);
            let name = it.string("name", cx);
            if name.is_none() && !table.contains_key("name") {
                cx.err(&it.child("name"), "expected the secret's name".to_string());
            }
            let env = it.string("env", cx);
            let file = it.string("file", cx);
            let target = match (env, file) {
                (Some(_), Some(_)) => {
                    cx.err(
                        &it.child("file"),
                        "expected either env or file, not both".to_string(),
                    );
                    None
                }
                (Some(e), None) => Some(SecretTarget::Env(e)),
                (None, Some(f)) => Some(SecretTarget::File(f)),
                (None, None) => name
                    .as_deref()
                    .map(|n| SecretTarget::Env(secret_env_var(n))),
            };
            name.zip(target)
        } else {
            cx.err(
                &ikey,
                format!(
                    "expected a secret name or a table like {{ name = \"db\", env = \"DATABASE_URL\" }}, got {}",
                    item.type_str()
                ),
            );
            None
        };
        let Some((name, target)) = entry else {
            continue;
        };
        if !valid(&name) {
            cx.err(
                &ikey,
                format!("invalid secret name {name:?}: use 1 to 128 of A-Z a-z 0-9 _ . -"),
            );
            continue;
        }
        match &target {
            SecretTarget::Env(e) if !env_var_name(e) => cx.err(
                &ikey,
                format!("invalid environment variable name {e:?}: use A-Z a-z 0-9 _"),
            ),
            SecretTarget::File(f)
                if f.is_empty() || f == "." || f == ".." || f.contains(['/', '\\', '\0']) =>
            {
                cx.err(
                    &ikey,
                    format!("expected a plain file name (no '/'), got {f:?}"),
                )
            }
            _ => {}
        }
        if out.iter().any(|o| o.target == target) {
            cx.err(
                &ikey,
                format!("two secrets would be given as the same {target:?}"),
            );
        }
        out.push(SecretRef { name, target });
    }
    out
}

fn parse_smoke(s: &T<'_>, cx: &mut Cx) -> Option<SmokeTest> {
    cx.only(
        s,
        &[
            "method",
            "path",
            "headers",
            "status",
            "body_contains",
            "timeout",
        ],
    );
    let before = cx.errors.len();
    let method = s
        .string("method", cx)
        .unwrap_or_else(|| "GET".to_string())
        .to_ascii_uppercase();
    if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
        cx.err(
            &s.child("method"),
            format!("expected an HTTP method like GET, got {method:?}"),
        );
    }
    let path = s.string("path", cx);
    match &path {
        None if !s.table.contains_key("path") => cx.err(
            &s.child("path"),
            "expected the path to request, e.g. \"/api/users\"".to_string(),
        ),
        Some(p) if !p.starts_with('/') => cx.err(
            &s.child("path"),
            format!("expected a path starting with '/', got {p:?}"),
        ),
        _ => {}
    }
    let test = SmokeTest {
        method,
        path: path.unwrap_or_default(),
        headers: s.string_map("headers", cx).unwrap_or_default(),
        status: s.int("status", 100, 599, cx).map_or(200, |n| n as u16),
        body_contains: s.string("body_contains", cx),
        timeout: s.duration("timeout", cx).unwrap_or(Duration::from_secs(5)),
    };
    (cx.errors.len() == before).then_some(test)
}

fn parse_env(
    name: &str,
    t: &T<'_>,
    apps: &BTreeMap<String, AppConfig>,
    cx: &mut Cx,
) -> Option<EnvConfig> {
    cx.only(
        t,
        &[
            "listen",
            "strategy",
            "monitor",
            "rollback_when",
            "min_requests",
            "on_inconclusive",
            "sticky",
            "override_header",
            "compare",
            "notify",
            "alarms",
            "apps",
            "edge",
        ],
    );
    let before = cx.errors.len();
    let listen = t.addr("listen", cx);
    if listen.is_none() && !t.table.contains_key("listen") {
        cx.err(
            &t.child("listen"),
            "expected the gateway's listen address, e.g. \"127.0.0.1:8080\"".to_string(),
        );
    }
    let strategy = parse_strategy(t, cx);
    let monitor = t.duration("monitor", cx).unwrap_or(Duration::from_secs(30));
    let mut rollback_when = Vec::new();
    match t.string_list("rollback_when", cx) {
        Some(list) => {
            for (i, text) in list.iter().enumerate() {
                match Rule::parse(text) {
                    Ok(r) => rollback_when.push(r),
                    Err(msg) => cx.err(&format!("{}[{i}]", t.child("rollback_when")), msg),
                }
            }
        }
        None => {
            if let Ok(r) = Rule::parse("error_rate > 5%") {
                rollback_when.push(r);
            }
        }
    }
    let on_inconclusive = match t.string("on_inconclusive", cx).as_deref() {
        None | Some("pause") => Inconclusive::Pause,
        Some("rollback") => Inconclusive::Rollback,
        Some("continue") => Inconclusive::Continue,
        Some(other) => {
            cx.err(
                &t.child("on_inconclusive"),
                format!("expected \"pause\", \"rollback\" or \"continue\", got {other:?}"),
            );
            Inconclusive::Pause
        }
    };
    let sticky = match t.table.get("sticky") {
        None => None,
        Some(v) if v.as_str() == Some("cookie") => Some(StickyConfig::Cookie),
        Some(v) => {
            let one = v
                .as_table()
                .filter(|t| t.len() == 1)
                .and_then(|t| t.iter().next());
            let parsed = match one {
                Some((k, val)) if k == "header" => val
                    .as_str()
                    .filter(|h| http_token(h))
                    .map(|h| StickyConfig::Header(h.to_string())),
                Some((k, val)) if k == "cookie" => val
                    .as_str()
                    .filter(|c| http_token(c))
                    .map(|c| StickyConfig::KeyCookie(c.to_string())),
                _ => None,
            };
            if parsed.is_none() {
                cx.err(
                    &t.child("sticky"),
                    "expected \"cookie\", { header = \"X-User-Id\" } or { cookie = \"user_id\" }"
                        .to_string(),
                );
            }
            parsed
        }
    };
    let compare = match t.table.get("compare") {
        None => Some(CompareConfig::default()),
        Some(v) if v.as_bool() == Some(false) => None,
        Some(v) if v.as_bool() == Some(true) => Some(CompareConfig::default()),
        Some(_) => match t.table("compare", cx) {
            None => None,
            Some(ct) => {
                cx.only(
                    &ct,
                    &[
                        "confidence",
                        "error_rate_margin",
                        "latency_margin",
                        "min_requests",
                        "consecutive",
                    ],
                );
                let mut cc = CompareConfig::default();
                if let Some(v) = ct.table.get("confidence") {
                    match v.as_float().filter(|f| *f > 0.5 && *f < 1.0) {
                        Some(f) => cc.confidence = f,
                        None => cx.err(
                            &ct.child("confidence"),
                            "expected a number between 0.5 and 1, e.g. 0.99".to_string(),
                        ),
                    }
                }
                for (key, slot) in [
                    ("error_rate_margin", &mut cc.error_rate_margin),
                    ("latency_margin", &mut cc.latency_margin),
                ] {
                    if let Some(v) = ct.table.get(key) {
                        match v
                            .as_str()
                            .and_then(|s| s.strip_suffix('%'))
                            .and_then(|p| p.trim().parse::<f64>().ok())
                            .filter(|p| (0.0..=1000.0).contains(p))
                        {
                            Some(p) => *slot = p / 100.0,
                            None => cx.err(
                                &ct.child(key),
                                "expected a percentage like \"1%\"".to_string(),
                            ),
                        }
                    }
                }
                if let Some(n) = ct.int("min_requests", 1, 1_000_000, cx) {
                    cc.min_requests = n as u64;
                }
                if let Some(n) = ct.int("consecutive", 1, 60, cx) {
                    cc.consecutive = n as u32;
                }
                Some(cc)
            }
        },
    };
    let notify = parse_notify(t, cx);
    let alarms = parse_alarms(t, cx);
    let override_header = t.string("override_header", cx);
    if let Some(h) = &override_header
        && !http_token(h)
    {
        cx.err(
            &t.child("override_header"),
            format!("expected an HTTP header name, got {h:?}"),
        );
    }
    let min_requests = t
        .int("min_requests", 1, 1_000_000, cx)
        .map_or(20, |n| n as u64);
    let env_apps = match t.string_list("apps", cx) {
        Some(list) => {
            for a in &list {
                if !apps.contains_key(a) {
                    cx.err(
                        &t.child("apps"),
                        format!("unknown app {a:?}; apps defined: {}", names(apps.keys())),
                    );
                }
            }
            list
        }
        None => apps.keys().cloned().collect(),
    };
    if cx.errors.len() > before {
        return None;
    }
    Some(EnvConfig {
        name: name.to_string(),
        listen: listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
        strategy,
        monitor,
        rollback_when,
        min_requests,
        on_inconclusive,
        sticky,
        compare,
        notify,
        alarms,
        override_header,
        apps: env_apps,
        edge: edge::parse(t, cx),
    })
}

const STRATEGY_HELP: &str = "expected \"blue-green\", \"canary\", \"linear\", { canary = { steps = [10, 25, 50, 100], interval = \"30s\" } } or { linear = { step = 10, every = \"1m\" } }";

/// Parses a weight in percent (`10`, `0.5`, `12.5`) into 0.1 % units.
fn weight(v: &toml::Value) -> Option<u32> {
    let pct = v.as_float().or_else(|| v.as_integer().map(|i| i as f64))?;
    let permille = (pct * 10.0).round();
    ((pct * 10.0 - permille).abs() < 1e-9 && (1.0..=1000.0).contains(&permille))
        .then_some(permille as u32)
}

fn parse_strategy(t: &T<'_>, cx: &mut Cx) -> Strategy {
    let key = t.child("strategy");
    let Some(v) = t.table.get("strategy") else {
        return Strategy::BlueGreen;
    };
    if let Some(s) = v.as_str() {
        return match s {
            "blue-green" => Strategy::BlueGreen,
            "canary" => Strategy::Canary {
                steps: DEFAULT_CANARY_STEPS
                    .iter()
                    .map(|w| Step {
                        weight: *w,
                        pause: Pause::Millis(DEFAULT_STEP_INTERVAL.as_millis() as u64),
                    })
                    .collect(),
            },
            "linear" => Strategy::Linear {
                step: 100,
                every: Duration::from_secs(60),
            },
            other => {
                cx.err(&key, format!("{STRATEGY_HELP}, got {other:?}"));
                Strategy::BlueGreen
            }
        };
    }
    let Some(table) = v.as_table().filter(|t| t.len() == 1) else {
        cx.err(&key, format!("{STRATEGY_HELP}, got {}", v.type_str()));
        return Strategy::BlueGreen;
    };
    let outer = T {
        key: key.clone(),
        table,
    };
    if let Some(c) = outer.table("canary", cx) {
        cx.only(&c, &["steps", "interval"]);
        let interval = c.duration("interval", cx).unwrap_or(DEFAULT_STEP_INTERVAL);
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let mut steps = Vec::new();
        match c.table.get("steps") {
            None => steps.extend(DEFAULT_CANARY_STEPS.iter().map(|w| Step {
                weight: *w,
                pause: Pause::Millis(interval_ms),
            })),
            Some(v) => match v.as_array() {
                None => cx.err(
                    &c.child("steps"),
                    format!("expected an array of percentages, got {}", v.type_str()),
                ),
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let ikey = format!("{}[{i}]", c.child("steps"));
                        let step = match item.as_table() {
                            Some(st) => {
                                let s = T {
                                    key: ikey.clone(),
                                    table: st,
                                };
                                cx.only(&s, &["weight", "pause"]);
                                let w = st.get("weight").and_then(weight);
                                let pause = match st.get("pause") {
                                    None => Some(Pause::Millis(interval_ms)),
                                    Some(p) if p.as_str() == Some("manual") => Some(Pause::Manual),
                                    Some(p) => p
                                        .as_str()
                                        .and_then(|s| humantime::parse_duration(s).ok())
                                        .map(|d| {
                                            Pause::Millis(
                                                u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                                            )
                                        }),
                                };
                                if pause.is_none() {
                                    cx.err(
                                        &format!("{ikey}.pause"),
                                        "expected a duration like \"1m\" or \"manual\"".to_string(),
                                    );
                                }
                                w.zip(pause).map(|(weight, pause)| Step { weight, pause })
                            }
                            None => weight(item).map(|w| Step {
                                weight: w,
                                pause: Pause::Millis(interval_ms),
                            }),
                        };
                        match step {
                            Some(s) => steps.push(s),
                            None => cx.err(&ikey, "expected a percentage from 0.1 to 100 (steps of 0.1) or { weight = 25, pause = \"manual\" }".to_string()),
                        }
                    }
                }
            },
        }
        if steps.windows(2).any(|w| w[0].weight >= w[1].weight) {
            cx.err(&c.child("steps"), "expected increasing weights".to_string());
        }
        if steps.is_empty() && c.table.contains_key("steps") {
            cx.err(&c.child("steps"), "expected at least one step".to_string());
        }
        return Strategy::Canary { steps };
    }
    if let Some(l) = outer.table("linear", cx) {
        cx.only(&l, &["step", "every"]);
        let step = match l.table.get("step") {
            None => 100,
            Some(v) => weight(v).unwrap_or_else(|| {
                cx.err(
                    &l.child("step"),
                    "expected a percentage from 0.1 to 100".to_string(),
                );
                100
            }),
        };
        let every = l.duration("every", cx).unwrap_or(Duration::from_secs(60));
        return Strategy::Linear { step, every };
    }
    if !table.contains_key("canary") && !table.contains_key("linear") {
        cx.err(
            &key,
            format!(
                "{STRATEGY_HELP}, got a table with {:?}",
                table.keys().collect::<Vec<_>>()
            ),
        );
    }
    Strategy::BlueGreen
}

fn parse_tokens(t: &T<'_>, cx: &mut Cx) -> Vec<TokenConfig> {
    let mut out: Vec<TokenConfig> = Vec::new();
    let example =
        "{ name = \"ci\", token_env = \"ROLLGATE_TOKEN_CI\", may = [\"read\", \"deploy\"] }";
    for tt in t.tables("tokens", example, cx) {
        if tt.table.contains_key("token") {
            // Never echo it: it is the value that must not be in this file.
            cx.err(&tt.child("token"), "tokens are never written in rollgate.toml; name the environment variable holding it in `token_env`".to_string());
        }
        cx.only(&tt, &["name", "token_env", "may", "token"]);
        let name = tt.string("name", cx);
        match &name {
            Some(n) => {
                if let Err(msg) = valid_name(n) {
                    cx.err(&tt.child("name"), msg);
                } else if out.iter().any(|o| &o.name == n) {
                    cx.err(&tt.child("name"), format!("token {n:?} is listed twice"));
                }
            }
            None => cx.err(
                &tt.child("name"),
                "expected a name for the token, e.g. \"ci\"".to_string(),
            ),
        }
        let token_env = tt.string("token_env", cx);
        if token_env
            .as_ref()
            .is_none_or(|e| e.is_empty() || e.contains('='))
        {
            cx.err(
                &tt.child("token_env"),
                "expected the environment variable holding the token, e.g. \"ROLLGATE_TOKEN_CI\""
                    .to_string(),
            );
        }
        let mut may = Vec::new();
        for p in tt.string_list("may", cx).unwrap_or_default() {
            match Permission::ALL.iter().find(|(_, n)| *n == p) {
                Some((perm, _)) => may.push(*perm),
                None => cx.err(&tt.child("may"), format!("unknown permission {p:?}; expected read, deploy, operate, secrets.write or secrets.read")),
            }
        }
        if let (Some(name), Some(token_env)) = (name, token_env) {
            out.push(TokenConfig {
                name,
                token_env,
                may,
            });
        }
    }
    out
}

fn http_url(s: &str) -> bool {
    s.strip_prefix("http://")
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
}

fn parse_notify(t: &T<'_>, cx: &mut Cx) -> Vec<NotifyTarget> {
    let mut out = Vec::new();
    for n in t.tables("notify", "{ webhook = \"http://…\" }", cx) {
        let (table, ikey) = (n.table, n.key.clone());
        cx.only(&n, &["webhook", "slack", "headers"]);
        let url_of = |k: &str, cx: &mut Cx| {
            let url = n.string(k, cx)?;
            if http_url(&url) {
                Some(url)
            } else {
                cx.err(
                    &n.child(k),
                    format!("expected an http:// URL (https is not supported yet), got {url:?}"),
                );
                None
            }
        };
        match (table.contains_key("webhook"), table.contains_key("slack")) {
            (true, false) => {
                let headers = n.string_map("headers", cx).unwrap_or_default();
                if let Some(url) = url_of("webhook", cx) {
                    out.push(NotifyTarget::Webhook { url, headers });
                }
            }
            (false, true) => {
                if table.contains_key("headers") {
                    cx.err(
                        &n.child("headers"),
                        "only a webhook takes headers".to_string(),
                    );
                }
                if let Some(url) = url_of("slack", cx) {
                    out.push(NotifyTarget::Slack { url });
                }
            }
            _ => cx.err(
                &ikey,
                "expected exactly one of webhook or slack".to_string(),
            ),
        }
    }
    out
}

fn parse_alarms(t: &T<'_>, cx: &mut Cx) -> Vec<AlarmConfig> {
    let mut out = Vec::new();
    let example = "{ rule = \"error_rate > 5%\", actions = [\"rollback\", \"notify\"] }";
    for a in t.tables("alarms", example, cx) {
        let table = a.table;
        cx.only(&a, &["rule", "actions"]);
        let rule = match a.string("rule", cx) {
            Some(text) => match Rule::parse(&text) {
                Ok(r) => Some(r),
                Err(msg) => {
                    cx.err(&a.child("rule"), msg);
                    None
                }
            },
            None => {
                if !table.contains_key("rule") {
                    cx.err(
                        &a.child("rule"),
                        "expected a rule like \"error_rate > 5%\"".to_string(),
                    );
                }
                None
            }
        };
        let actions = a
            .string_list("actions", cx)
            .unwrap_or_else(|| vec!["notify".to_string()]);
        let mut alarm = rule.map(|rule| AlarmConfig {
            rule,
            rollback: false,
            notify: false,
        });
        for action in &actions {
            match (action.as_str(), alarm.as_mut()) {
                ("rollback", Some(al)) => al.rollback = true,
                ("notify", Some(al)) => al.notify = true,
                ("rollback" | "notify", None) => {}
                (other, _) => cx.err(
                    &a.child("actions"),
                    format!("expected \"rollback\" or \"notify\", got {other:?}"),
                ),
            }
        }
        if let Some(al) = alarm {
            out.push(al);
        }
    }
    out
}

/// A header or cookie name: visible ASCII without separators.
fn http_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// Checks that span sections: listen addresses clash nowhere, routes are unambiguous.
fn check_cross(
    apps: &BTreeMap<String, AppConfig>,
    envs: &BTreeMap<String, EnvConfig>,
    server: &ServerConfig,
    cx: &mut Cx,
) {
    let mut seen: BTreeMap<SocketAddr, String> = BTreeMap::new();
    if server.control.port() != 0 {
        seen.insert(server.control, "server.control".to_string());
    }
    for env in envs.values() {
        let key = format!("env.{}.listen", env.name);
        if env.listen.port() != 0 {
            if let Some(other) = seen.get(&env.listen) {
                cx.err(
                    &key,
                    format!("address {} is already used by {other}", env.listen),
                );
            } else {
                seen.insert(env.listen, key);
            }
        }
        let mut routes: BTreeSet<(Vec<String>, String)> = BTreeSet::new();
        for app in env.apps.iter().filter_map(|a| apps.get(a)) {
            let mut hosts = app.hosts.clone();
            hosts.sort();
            if !routes.insert((hosts, app.path_prefix.clone())) {
                cx.err(
                    &format!("app.{}.path_prefix", app.name),
                    format!(
                        "in env {:?}, another app has the same hosts and path_prefix {:?}: set `hosts` or `path_prefix` so the gateway can tell them apart",
                        env.name, app.path_prefix
                    ),
                );
            }
        }
    }
}

struct Cx {
    file: String,
    errors: Vec<ConfigError>,
}

impl Cx {
    fn err(&mut self, key: &str, message: String) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key: key.to_string(),
            message,
        });
    }

    fn only(&mut self, t: &T<'_>, allowed: &[&str]) {
        for k in t.table.keys() {
            if !allowed.contains(&k.as_str()) {
                self.err(
                    &t.child(k),
                    format!("unknown key; expected one of: {}", allowed.join(", ")),
                );
            }
        }
    }
}

/// A table with its dotted key, and typed getters that report errors against that key.
struct T<'a> {
    key: String,
    table: &'a toml::Table,
}

impl<'a> T<'a> {
    fn child(&self, k: &str) -> String {
        if self.key.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.key)
        }
    }

    fn table(&self, k: &str, cx: &mut Cx) -> Option<T<'a>> {
        let v = self.table.get(k)?;
        match v.as_table() {
            Some(table) => Some(T {
                key: self.child(k),
                table,
            }),
            None => {
                cx.err(
                    &self.child(k),
                    format!("expected a table, got {}", v.type_str()),
                );
                None
            }
        }
    }

    /// The tables of the array at `k`, each under its indexed key (`k[i]`). A value that is
    /// not an array, or an item that is not a table, is an error that shows `example` (one
    /// table) as what was expected.
    fn tables(&self, k: &str, example: &str, cx: &mut Cx) -> Vec<T<'a>> {
        let Some(v) = self.table.get(k) else {
            return Vec::new();
        };
        let key = self.child(k);
        let Some(items) = v.as_array() else {
            cx.err(
                &key,
                format!(
                    "expected an array of tables like [{example}], got {}",
                    v.type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let ikey = format!("{key}[{i}]");
            match item.as_table() {
                Some(table) => out.push(T { key: ikey, table }),
                None => cx.err(
                    &ikey,
                    format!("expected a table like {example}, got {}", item.type_str()),
                ),
            }
        }
        out
    }

    fn string(&self, k: &str, cx: &mut Cx) -> Option<String> {
        let v = self.table.get(k)?;
        match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                cx.err(
                    &self.child(k),
                    format!("expected a string, got {}", v.type_str()),
                );
                None
            }
        }
    }

    fn string_list(&self, k: &str, cx: &mut Cx) -> Option<Vec<String>> {
        let v = self.table.get(k)?;
        let list = v.as_array().and_then(|a| {
            a.iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        });
        if list.is_none() {
            cx.err(
                &self.child(k),
                format!("expected an array of strings, got {}", v.type_str()),
            );
        }
        list
    }

    fn string_map(&self, k: &str, cx: &mut Cx) -> Option<BTreeMap<String, String>> {
        let v = self.table.get(k)?;
        let Some(t) = v.as_table() else {
            cx.err(
                &self.child(k),
                format!("expected a table of strings, got {}", v.type_str()),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        for (name, val) in t {
            match val.as_str() {
                Some(s) => {
                    out.insert(name.clone(), s.to_string());
                }
                None => cx.err(
                    &format!("{}.{name}", self.child(k)),
                    format!("expected a string, got {}", val.type_str()),
                ),
            }
        }
        Some(out)
    }

    fn int(&self, k: &str, min: i64, max: i64, cx: &mut Cx) -> Option<i64> {
        let v = self.table.get(k)?;
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                cx.err(
                    &self.child(k),
                    format!("expected a whole number from {min} to {max}, got {n}"),
                );
                None
            }
            None => {
                cx.err(
                    &self.child(k),
                    format!("expected a whole number, got {}", v.type_str()),
                );
                None
            }
        }
    }

    fn duration(&self, k: &str, cx: &mut Cx) -> Option<Duration> {
        let v = self.table.get(k)?;
        let parsed = v.as_str().and_then(|s| humantime::parse_duration(s).ok());
        if parsed.is_none() {
            let got = v
                .as_str()
                .map_or_else(|| v.type_str().to_string(), |s| format!("{s:?}"));
            cx.err(
                &self.child(k),
                format!("expected a duration string like \"500ms\", \"30s\" or \"5m\", got {got}"),
            );
        }
        parsed
    }

    fn addr(&self, k: &str, cx: &mut Cx) -> Option<SocketAddr> {
        let s = self.string(k, cx)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                cx.err(
                    &self.child(k),
                    format!("expected an IP address and port like \"127.0.0.1:8080\", got {s:?}"),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[app.api]
run = "./api --port ${PORT}"
env = { RUST_LOG = "info" }
health = { path = "/health", interval = "1s", timeout = "500ms", healthy = 2 }
smoke = [{ path = "/api/users", status = 200, body_contains = "Ada" }]

[env.staging]
listen = "127.0.0.1:8080"
strategy = "blue-green"

[env.prod]
listen = "127.0.0.1:8443"
monitor = "10m"
rollback_when = ["error_rate > 5%", "errors > 3 in 1m", "p99 > 500ms"]
"#;

    #[test]
    fn parses_the_design_sketch_with_defaults() {
        let c = Config::parse(GOOD, "rollgate.toml").unwrap();
        let api = &c.apps["api"];
        assert_eq!(api.instances, 1);
        assert_eq!(api.health.unhealthy, 3);
        assert_eq!(api.health.deadline, Duration::from_secs(60));
        assert_eq!(api.smoke[0].method, "GET");
        assert_eq!(api.smoke[0].body_contains.as_deref(), Some("Ada"));
        assert_eq!(c.envs["prod"].monitor, Duration::from_secs(600));
        assert_eq!(c.envs["prod"].rollback_when.len(), 3);
        assert_eq!(c.envs["staging"].rollback_when[0].text, "error_rate > 5%");
        assert_eq!(c.envs["staging"].apps, vec!["api".to_string()]);
        assert_eq!(c.server.control, default_control_listen());
    }

    #[test]
    fn lists_every_error_with_file_and_key() {
        let bad = r#"
[server]
contrl = "x"

[app.api]
run = "./api"
health = { interval = "fast", healthy = 0 }
smoke = [{ status = 200 }]
instance = 2

[env.staging]
listen = "localhost"
strategy = "yolo"
rollback_when = ["cpu > 5%"]
apps = ["web"]
"#;
        let errs = Config::parse(bad, "conf/rollgate.toml").unwrap_err();
        let shown = errs.to_string();
        for needle in [
            "conf/rollgate.toml: server.contrl: unknown key",
            "app.api.instance: unknown key",
            "app.api.health.interval: expected a duration",
            "app.api.health.healthy: expected a whole number from 1 to 100, got 0",
            "app.api.smoke[0].path: expected the path",
            "env.staging.listen: expected an IP address and port",
            "env.staging.strategy: expected \"blue-green\"",
            "env.staging.rollback_when[0]: unknown metric",
            "env.staging.apps: unknown app \"web\"",
        ] {
            assert!(shown.contains(needle), "missing {needle:?} in:\n{shown}");
        }
        assert_eq!(errs.0.len(), 9, "{shown}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        let errs = Config::parse("[app.api]\nrun = \n", "r.toml").unwrap_err();
        assert_eq!(errs.0.len(), 1);
        assert!(errs.0[0].key.starts_with("line 2"), "{:?}", errs.0[0]);
        assert!(errs.0[0].to_string().starts_with("r.toml: line 2"));
    }

    #[test]
    fn empty_file_asks_for_apps_and_envs() {
        let errs = Config::parse("", "r.toml").unwrap_err();
        assert_eq!(errs.0.len(), 2);
    }

    #[test]
    fn clashing_addresses_and_routes_are_errors() {
        let text = r#"
[app.a]
run = "x"
[app.b]
run = "y"
[env.one]
listen = "127.0.0.1:9000"
[env.two]
listen = "127.0.0.1:9000"
"#;
        let shown = Config::parse(text, "r.toml").unwrap_err().to_string();
        assert!(
            shown.contains(
                "env.two.listen: address 127.0.0.1:9000 is already used by env.one.listen"
            ),
            "{shown}"
        );
        assert!(shown.contains("app.b.path_prefix"), "{shown}");
    }

    #[test]
    fn strategies_parse_with_defaults_and_checks() {
        let env = |s: &str| {
            format!("[app.a]\nrun = \"x\"\n[env.e]\nlisten = \"127.0.0.1:0\"\nstrategy = {s}\n")
        };
        let c = Config::parse(&env("\"canary\""), "r.toml").unwrap();
        let steps = c.envs["e"].strategy.steps();
        assert_eq!(
            steps.iter().map(|s| s.weight).collect::<Vec<_>>(),
            vec![100, 250, 500, 1000]
        );
        assert_eq!(steps[0].pause, Pause::Millis(30_000));
        let c = Config::parse(
            &env("{ canary = { steps = [0.5, { weight = 25, pause = \"manual\" }, 100], interval = \"10s\" } }"),
            "r.toml",
        )
        .unwrap();
        assert_eq!(
            c.envs["e"].strategy.steps(),
            vec![
                Step {
                    weight: 5,
                    pause: Pause::Millis(10_000)
                },
                Step {
                    weight: 250,
                    pause: Pause::Manual
                },
                Step {
                    weight: 1000,
                    pause: Pause::Millis(10_000)
                },
            ]
        );
        let c =
            Config::parse(&env("{ linear = { step = 25, every = \"1m\" } }"), "r.toml").unwrap();
        assert_eq!(c.envs["e"].strategy.name(), "linear");
        assert_eq!(
            c.envs["e"]
                .strategy
                .steps()
                .iter()
                .map(|s| s.weight)
                .collect::<Vec<_>>(),
            vec![250, 500, 750, 1000]
        );
        for (bad, needle) in [
            ("\"yolo\"", "expected \"blue-green\""),
            ("{ canary = { steps = [50, 10] } }", "increasing"),
            (
                "{ canary = { steps = [0.05] } }",
                "steps[0]: expected a percentage",
            ),
            (
                "{ canary = { steps = [10], pause = \"1m\" } }",
                "canary.pause: unknown key",
            ),
            ("{ linear = { step = 0 } }", "linear.step"),
            (
                "{ canary = { steps = [{ weight = 10, pause = \"soon\" }] } }",
                "steps[0].pause",
            ),
        ] {
            let shown = Config::parse(&env(bad), "r.toml").unwrap_err().to_string();
            assert!(shown.contains(needle), "{bad}: {shown}");
        }
    }

    #[test]
    fn notify_targets_and_alarms_are_checked() {
        let env =
            |s: &str| format!("[app.a]\nrun = \"x\"\n[env.e]\nlisten = \"127.0.0.1:0\"\n{s}\n");
        let c = Config::parse(
            &env("notify = [{ webhook = \"http://127.0.0.1:9/h\", headers = { Authorization = \"t\" } }, { slack = \"http://127.0.0.1:9/s\" }]\nalarms = [{ rule = \"errors > 3 in 1m\", actions = [\"rollback\", \"notify\"] }]"),
            "r.toml",
        )
        .unwrap();
        assert_eq!(c.envs["e"].notify.len(), 2);
        assert!(c.envs["e"].alarms[0].rollback && c.envs["e"].alarms[0].notify);
        for (bad, needle) in [
            (
                "notify = [{ webhook = \"https://x\" }]",
                "notify[0].webhook: expected an http:// URL",
            ),
            (
                "notify = [{ webhook = \"http://x\", slack = \"http://y\" }]",
                "exactly one",
            ),
            (
                "alarms = [{ rule = \"cpu > 1\" }]",
                "alarms[0].rule: unknown metric",
            ),
            (
                "alarms = [{ rule = \"errors > 1\", actions = [\"page\"] }]",
                "alarms[0].actions",
            ),
        ] {
            let shown = Config::parse(&env(bad), "r.toml").unwrap_err().to_string();
            assert!(shown.contains(needle), "{bad}: {shown}");
        }
    }

    #[test]
    fn workdir_must_stay_inside_the_artifact() {
        let text =
            "[app.a]\nrun = \"x\"\nworkdir = \"../etc\"\n[env.e]\nlisten = \"127.0.0.1:0\"\n";
        let shown = Config::parse(text, "r.toml").unwrap_err().to_string();
        assert!(shown.contains("app.a.workdir"), "{shown}");
    }
    #[test]
    fn app_secrets_and_master_key_source_are_checked() {
        let good = GOOD.replace(
            "[app.api]",
            "[server]\nmaster_key_file = \"keys/master.key\"\n\n[app.api]\nsecrets = [\"database-password\", { name = \"db\", env = \"DATABASE_URL\" }, { name = \"tls\", file = \"tls.pem\" }]",
        );
        let c = Config::parse(&good, "rollgate.toml").unwrap();
        assert_eq!(
            c.server.master_key_file.as_deref(),
            Some(std::path::Path::new("keys/master.key"))
        );
        let targets: Vec<_> = c.apps["api"]
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.target.clone()))
            .collect();
        assert_eq!(
            targets,
            [
                (
                    "database-password",
                    SecretTarget::Env("DATABASE_PASSWORD".into())
                ),
                ("db", SecretTarget::Env("DATABASE_URL".into())),
                ("tls", SecretTarget::File("tls.pem".into())),
            ]
        );
        let bad = GOOD.replace(
            "[app.api]",
            "[server]\nmaster_key_file = \"k\"\nmaster_key_env = \"K\"\n\n[app.api]\nsecrets = [\"a b\", { name = \"x\", file = \"../x\" }, { name = \"y\", env = \"Y=1\" }, { env = \"Z\" }, 3]",
        );
        let errs = Config::parse(&bad, "rollgate.toml")
            .unwrap_err()
            .to_string();
        for needle in [
            "rollgate.toml: server.master_key_env: expected either master_key_file or master_key_env",
            "app.api.secrets[0]: invalid secret name \"a b\"",
            "app.api.secrets[1]: expected a plain file name",
            "app.api.secrets[2]: invalid environment variable name",
            "app.api.secrets[3].name: expected the secret's name",
            "app.api.secrets[4]: expected a secret name or a table",
        ] {
            assert!(errs.contains(needle), "{needle}\n{errs}");
        }
    }

    #[test]
    fn gateway_workers_is_a_thread_count() {
        let c = Config::parse(
            &GOOD.replace("[app.api]", "[server]\ngateway_workers = 4\n\n[app.api]"),
            "rollgate.toml",
        )
        .unwrap();
        assert_eq!(c.server.gateway_workers, Some(4));
        assert_eq!(
            Config::parse(GOOD, "rollgate.toml")
                .unwrap()
                .server
                .gateway_workers,
            None
        );
        let errs = Config::parse(
            &GOOD.replace("[app.api]", "[server]\ngateway_workers = 0\n\n[app.api]"),
            "rollgate.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            errs.contains("rollgate.toml: server.gateway_workers:"),
            "{errs}"
        );
    }
}
