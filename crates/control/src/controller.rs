//! The controller: drives each rollout through the pure state machine of `rollgate-core`,
//! persisting every transition before carrying out its actions; owns the running instances
//! of every version; keeps each environment's routing table in step with the aliases and the
//! instances' health; and resolves rollouts interrupted by a crash when it starts.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollgate_core::config::{
    AlarmConfig, AppConfig, CompareConfig, EnvConfig, Inconclusive, NotifyTarget, Probe,
    StickyConfig,
};
use rollgate_core::stats::{self, Judgment, Verdict};
use rollgate_core::{
    Action, Alias, Config, Event, Phase, Rollout, RuleVerdict, Timestamp, TrafficStats,
};
use rollgate_gateway::{
    AppRoute, Backend, Metrics, RouteHandle, RouteTable, Sample, Sticky, Upstream,
};
use rollgate_runtime::{
    HealthProbe, InstanceHandle, InstanceSpec, InstanceStatus, ProcessDriver, RestartPolicy,
};
use rollgate_store::{
    AliasSet, AuditEntry, EventRecord, Filter, NewDeploy, Store, StoreError, Transition,
};
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::artifacts::ArtifactStore;
use crate::error::ApiError;
use crate::notify::{Notification, Notifier, Target};
use crate::smoke::{self, CheckClient};

/// How long a rollout's lock holds without renewal; renewed every [`LEASE_RENEW`].
pub const LEASE: Duration = Duration::from_secs(30);
const LEASE_RENEW: Duration = Duration::from_secs(10);
/// How often the monitor judges live traffic.
const MONITOR_TICK: Duration = Duration::from_secs(1);
/// How often routing tables are recomputed from instance health.
const ROUTE_REFRESH: Duration = Duration::from_millis(250);

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    )
}

/// RFC 3339 text of a timestamp, for people and JSON.
pub fn rfc3339(t: Timestamp) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t.0)).to_string()
}

/// The routing and metrics handles of one environment's gateway.
#[derive(Clone)]
pub struct EnvGateway {
    pub addr: SocketAddr,
    pub routes: RouteHandle,
    pub metrics: Metrics,
}

type RouteSignature = Vec<(String, u64, u32, Vec<String>)>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct VersionKey {
    app: String,
    env: String,
    version: u64,
}

/// A deploy request from the API.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct DeployRequest {
    pub app: String,
    pub env: String,
    /// Path of a file or directory on the server's machine.
    pub artifact: String,
    #[serde(default)]
    pub label: Option<String>,
    /// Environment variables for this version only.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
}

/// What a deploy request started.
#[derive(Clone, Debug, Serialize)]
pub struct DeployAccepted {
    pub rollout_id: u64,
    pub app: String,
    pub env: String,
    pub version: u64,
    pub digest: String,
}

/// Aborts a background task when dropped, so that it ends with its owner even when the
/// owner itself is aborted.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An operator's command to a running rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Abort before promotion, roll back after it.
    Cancel,
    Promote,
    Pause,
    Resume,
}

impl Command {
    fn event(&self, by: &str) -> Event {
        let by = by.to_string();
        match self {
            Command::Cancel => Event::Cancel { by },
            Command::Promote => Event::Promote { by },
            Command::Pause => Event::Pause { by },
            Command::Resume => Event::Resume { by },
        }
    }
}

type Commands = mpsc::UnboundedReceiver<(Command, String)>;

/// Where an alarm stands.
struct AlarmState {
    firing: bool,
    since: Timestamp,
    verdict: RuleVerdict,
    version: u64,
}

/// A rollout being driven: its command queue and its task.
struct Driving {
    commands: mpsc::UnboundedSender<(Command, String)>,
    task: Option<tokio::task::AbortHandle>,
}

/// The controller. One per control plane.
pub struct Controller {
    config: Arc<Config>,
    store: Arc<dyn Store>,
    driver: Arc<ProcessDriver>,
    artifacts: ArtifactStore,
    logs_dir: PathBuf,
    gateways: BTreeMap<String, EnvGateway>,
    instances: Mutex<BTreeMap<VersionKey, Vec<InstanceHandle>>>,
    /// Cancel switches of the rollouts being driven: `Some(actor)` cancels.
    active: Mutex<HashMap<u64, Driving>>,
    /// The last routing table applied to each environment, as (app, version, instance ids).
    applied: Mutex<HashMap<String, RouteSignature>>,
    /// One notifier per environment that has targets.
    notifiers: BTreeMap<String, Notifier>,
    /// The state of every alarm, by (app, env, alarm index).
    alarms: Mutex<HashMap<(String, String, usize), AlarmState>>,
    check: CheckClient,
    /// The secret service, set once by `serve` after both exist (crate::secrets).
    secrets: std::sync::OnceLock<Arc<crate::secrets::SecretService>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing holding these locks can leave the data half-changed, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Controller {
    pub fn new(
        config: Arc<Config>,
        store: Arc<dyn Store>,
        driver: Arc<ProcessDriver>,
        artifacts: ArtifactStore,
        logs_dir: PathBuf,
        gateways: BTreeMap<String, EnvGateway>,
    ) -> Arc<Controller> {
        let mut notifiers = BTreeMap::new();
        for env in config.envs.values().filter(|e| !e.notify.is_empty()) {
            let targets = env
                .notify
                .iter()
                .map(|t| match t {
                    NotifyTarget::Webhook { url, headers } => Target::Webhook {
                        url: url.clone(),
                        headers: headers.clone(),
                    },
                    NotifyTarget::Slack { url } => Target::Slack { url: url.clone() },
                })
                .collect();
            match Notifier::new(targets) {
                Ok(n) => {
                    notifiers.insert(env.name.clone(), n);
                }
                Err(e) => tracing::error!(env = %env.name, error = %e, "notifications disabled"),
            }
        }
        Arc::new(Controller {
            config,
            store,
            driver,
            artifacts,
            logs_dir,
            gateways,
            instances: Mutex::new(BTreeMap::new()),
            active: Mutex::new(HashMap::new()),
            applied: Mutex::new(HashMap::new()),
            check: smoke::check_client(),
            notifiers,
            alarms: Mutex::new(HashMap::new()),
            secrets: std::sync::OnceLock::new(),
        })
    }

    /// Gives the controller the secret service: instances get their declared secrets at
    /// start, and deploys check that they exist. Only the first call has an effect.
    pub fn set_secrets(&self, secrets: Arc<crate::secrets::SecretService>) {
        let _ = self.secrets.set(secrets);
    }

    /// The secret service, once set.
    pub fn secrets(&self) -> Option<&Arc<crate::secrets::SecretService>> {
        self.secrets.get()
    }

    /// Sends a notification from outside the controller (e.g. a failed secret rotation).
    pub(crate) fn notify_event(&self, n: Notification) {
        if self.notifiers.contains_key(&n.env) {
            self.notify(n);
        } else {
            tracing::info!(kind = %n.kind, env = %n.env, message = %n.message, "no notification targets; logged only");
        }
    }

    /// Sends a notification to the environment's targets (never blocks).
    fn notify(&self, n: Notification) {
        if let Some(notifier) = self.notifiers.get(&n.env) {
            notifier.send(n);
        }
    }

    /// Judges every environment's alarms on `live` once a second, outside rollouts (a rollout
    /// has its own analysis), firing their actions when a rule starts failing and resolving
    /// them when it passes again. Inconclusive verdicts keep the state.
    pub async fn alarm_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(MONITOR_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(active) = self.store.active_rollouts() else {
                continue;
            };
            for env_c in self.config.envs.values().filter(|e| !e.alarms.is_empty()) {
                for app in self.config.apps_in(env_c) {
                    if active
                        .iter()
                        .any(|r| r.app == app.name && r.env == env_c.name)
                    {
                        continue;
                    }
                    let Ok(set) = self.store.aliases(&app.name, &env_c.name) else {
                        continue;
                    };
                    let Some(live) = set.live else { continue };
                    for (i, alarm) in env_c.alarms.iter().enumerate() {
                        self.judge_alarm(env_c, &app.name, live, i, alarm).await;
                    }
                }
            }
        }
    }

    async fn judge_alarm(
        self: &Arc<Self>,
        env_c: &EnvConfig,
        app: &str,
        live: u64,
        i: usize,
        alarm: &AlarmConfig,
    ) {
        let Some(gw) = self.gateways.get(&env_c.name) else {
            return;
        };
        let w = gw.metrics.window(app, live, alarm.rule.window);
        let stats = TrafficStats {
            requests: w.requests,
            errors_5xx: w.status_5xx,
            p50_ms: w.p50_ms,
            p95_ms: w.p95_ms,
            p99_ms: w.p99_ms,
        };
        let verdict = alarm.rule.judge(&stats, env_c.min_requests);
        let key = (app.to_string(), env_c.name.clone(), i);
        let was_firing = lock(&self.alarms).get(&key).is_some_and(|s| s.firing);
        let firing = match &verdict {
            RuleVerdict::Fail { .. } => true,
            RuleVerdict::Pass { .. } => false,
            RuleVerdict::Inconclusive { .. } => was_firing,
        };
        lock(&self.alarms).insert(
            key,
            AlarmState {
                firing,
                since: now(),
                verdict: verdict.clone(),
                version: live,
            },
        );
        if firing == was_firing {
            return;
        }
        let at = now();
        let (kind, action) = if firing {
            ("alarm.firing", "alarm_firing")
        } else {
            ("alarm.resolved", "alarm_resolved")
        };
        let message = format!("{} on v{live}: {verdict}", alarm.rule.text);
        tracing::warn!(%app, env = %env_c.name, version = live, alarm = %alarm.rule.text, %verdict, "{kind}");
        let _ = self.store.record_audit(&AuditEntry {
            at,
            actor: "rollgate".to_string(),
            action: action.to_string(),
            app: Some(app.to_string()),
            env: Some(env_c.name.clone()),
            detail: message.clone(),
        });
        if alarm.notify {
            let mut n = Notification::new(kind, app, &env_c.name, message.clone());
            n.version = Some(live);
            n.details = json!({ "rule": alarm.rule.text, "verdict": verdict });
            self.notify(n);
        }
        if firing && alarm.rollback {
            match self
                .rollback(app, &env_c.name, &format!("alarm \"{}\"", alarm.rule.text))
                .await
            {
                Ok(_) => tracing::warn!(%app, env = %env_c.name, "alarm rolled live back to blue"),
                Err(e) => {
                    tracing::error!(%app, env = %env_c.name, error = %e, "alarm could not roll back")
                }
            }
        }
    }

    /// The state of each alarm of (app, env), for status.
    fn alarm_states(&self, app: &str, env_c: &EnvConfig) -> Vec<serde_json::Value> {
        let states = lock(&self.alarms);
        env_c
            .alarms
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let s = states.get(&(app.to_string(), env_c.name.clone(), i));
                let actions: Vec<&str> = [
                    a.rollback.then_some("rollback"),
                    a.notify.then_some("notify"),
                ]
                .into_iter()
                .flatten()
                .collect();
                json!({
                    "rule": a.rule.text,
                    "actions": actions,
                    "state": s.map_or("ok", |s| if s.firing { "firing" } else { "ok" }),
                    "version": s.map(|s| s.version),
                    "last_verdict": s.map(|s| &s.verdict),
                    "checked_at": s.map(|s| rfc3339(s.since)),
                })
            })
            .collect()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn gateways(&self) -> &BTreeMap<String, EnvGateway> {
        &self.gateways
    }

    fn app_env(&self, app: &str, env: &str) -> Result<(&AppConfig, &EnvConfig), ApiError> {
        let env_c = self.config.envs.get(env).ok_or_else(|| {
            ApiError::NotFound(format!("environment {env:?} is not in the configuration"))
        })?;
        let app_c = self.config.apps.get(app).ok_or_else(|| {
            ApiError::NotFound(format!("app {app:?} is not in the configuration"))
        })?;
        if !env_c.apps.iter().any(|a| a == app) {
            return Err(ApiError::BadRequest(format!(
                "app {app:?} is not released in environment {env:?}"
            )));
        }
        Ok((app_c, env_c))
    }

    // ---------------------------------------------------------------- startup

    /// Brings the world back to the store's state after a start or a crash: starts the live
    /// and blue versions, routes live, then resolves every interrupted rollout.
    pub async fn recover(self: &Arc<Self>) -> Result<(), StoreError> {
        let mut starts = Vec::new();
        let active = self.store.active_rollouts()?;
        for (app, env, set) in self.store.all_aliases()? {
            if self.app_env(&app, &env).is_err() {
                tracing::warn!(%app, %env, "aliases exist for an app or environment no longer in the configuration; not started");
                continue;
            }
            // A rollout resumed in its monitor window may still roll back to blue and put the
            // version before it back as blue: that one must be warm too.
            let prev_blue = active
                .iter()
                .filter(|r| r.app == app && r.env == env && r.phase == Phase::Monitoring)
                .find_map(|r| r.prev_blue);
            // A gradual rollout interrupted in a weight step resumes that step: its candidate
            // held part of the traffic and must come back before routing does.
            let shifting = active
                .iter()
                .filter(|r| r.app == app && r.env == env)
                .filter(|r| matches!(r.phase, Phase::Shifting | Phase::Paused) && r.step.is_some())
                .map(|r| r.version)
                .next();
            // Once each: two concurrent starts of one version would run it twice.
            let versions: std::collections::BTreeSet<u64> =
                [set.live, set.blue, prev_blue, shifting]
                    .into_iter()
                    .flatten()
                    .collect();
            for v in versions {
                let this = Arc::clone(self);
                let (app, env) = (app.clone(), env.clone());
                starts.push(tokio::spawn(async move {
                    if let Err(reason) = this.start_version(&app, &env, v).await {
                        tracing::error!(%app, %env, version = v, %reason, "could not start a version at startup");
                    }
                }));
            }
        }
        for s in starts {
            let _ = s.await;
        }
        for env in self.gateways.keys() {
            self.apply_routes(env);
        }
        for r in active {
            tracing::warn!(rollout = r.id, app = %r.app, env = %r.env, phase = %r.phase, "resolving a rollout interrupted by a restart");
            self.advance(r, Event::Recovered).await;
        }
        Ok(())
    }

    /// Periodically recomputes routing tables so that instances that fail their health
    /// check leave the table and come back when they recover.
    pub async fn route_refresher(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ROUTE_REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for env in self.gateways.keys() {
                self.apply_routes(env);
            }
        }
    }

    // ---------------------------------------------------------------- instances

    fn instance_spec(
        &self,
        app: &AppConfig,
        env: &str,
        version: &rollgate_store::VersionRecord,
        index: u32,
    ) -> InstanceSpec {
        let id = format!("{}.{env}.v{}.{index}", app.name, version.number);
        let mut vars = app.env.clone();
        vars.extend(version.vars.clone());
        vars.insert("ROLLGATE_APP".into(), app.name.clone());
        vars.insert("ROLLGATE_ENV".into(), env.to_string());
        vars.insert("ROLLGATE_VERSION".into(), version.number.to_string());
        vars.insert("ROLLGATE_DIGEST".into(), version.digest.clone());
        vars.insert("ROLLGATE_INSTANCE".into(), id.clone());
        if let Some(label) = &version.label {
            vars.insert("ROLLGATE_LABEL".into(), label.clone());
        }
        InstanceSpec {
            command: app.run.clone(),
            workdir: self.artifacts.path_of(&version.digest).join(&app.workdir),
            env: vars,
            port: None,
            log_path: self
                .logs_dir
                .join(&app.name)
                .join(env)
                .join(format!("v{}.{index}.log", version.number)),
            stop_grace: app.stop_grace,
            health: Some(HealthProbe {
                path: app.health.path.clone(),
                interval: app.health.interval,
                timeout: app.health.timeout,
                healthy_threshold: app.health.healthy,
                unhealthy_threshold: app.health.unhealthy,
            }),
            restart: RestartPolicy {
                enabled: true,
                ..RestartPolicy::default()
            },
            id,
        }
    }

    /// Starts a version's instances (unless they run) and waits until all are healthy. On
    /// failure the instances are stopped and the reason returned.
    async fn start_version(&self, app: &str, env: &str, version: u64) -> Result<(), String> {
        let key = VersionKey {
            app: app.to_string(),
            env: env.to_string(),
            version,
        };
        let (app_c, _) = self.app_env(app, env).map_err(|e| e.to_string())?;
        let existing = lock(&self.instances).get(&key).cloned();
        let handles = match existing {
            Some(h) => h,
            None => {
                let record = self
                    .store
                    .version(app, env, version)
                    .map_err(|e| e.to_string())?;
                if !self.artifacts.path_of(&record.digest).is_dir() {
                    return Err(format!(
                        "the artifact {} of v{version} is missing from the data directory",
                        record.digest
                    ));
                }
                // Declared secrets, read once per version; never logged (crate::secrets).
                let injected = match self.secrets.get() {
                    Some(s) => s
                        .inject(app_c, env, version)
                        .map_err(|e| format!("secrets of v{version}: {e}"))?,
                    None => BTreeMap::new(),
                };
                let mut handles = Vec::new();
                for i in 0..app_c.instances {
                    let mut spec = self.instance_spec(app_c, env, &record, i);
                    spec.env.extend(
                        injected
                            .iter()
                            .map(|(k, v)| (k.clone(), v.expose().clone())),
                    );
                    match self.driver.start(spec).await {
                        Ok(h) => handles.push(h),
                        Err(e) => {
                            for h in &handles {
                                let _ = h.stop().await;
                            }
                            return Err(format!("could not start instance {i}: {e}"));
                        }
                    }
                }
                lock(&self.instances).insert(key.clone(), handles.clone());
                handles
            }
        };
        let deadline = app_c.health.deadline;
        let mut waits = tokio::task::JoinSet::new();
        for h in handles {
            waits.spawn(async move {
                // The runtime's errors name the instance already.
                h.wait_healthy(deadline).await.map_err(|e| e.to_string())
            });
        }
        let mut failure = None;
        while let Some(res) = waits.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(reason)) => {
                    failure.get_or_insert(reason);
                }
                Err(e) => {
                    failure.get_or_insert(format!("health wait crashed: {e}"));
                }
            }
        }
        if let Some(reason) = failure {
            self.stop_version(app, env, version).await;
            return Err(reason);
        }
        Ok(())
    }

    /// Drains and stops a version's instances (no-op if none run). Routing must already
    /// exclude the version.
    async fn stop_version(&self, app: &str, env: &str, version: u64) {
        let key = VersionKey {
            app: app.to_string(),
            env: env.to_string(),
            version,
        };
        let Some(handles) = lock(&self.instances).remove(&key) else {
            return;
        };
        self.apply_routes(env);
        let grace = self
            .config
            .apps
            .get(app)
            .map_or(Duration::from_secs(10), |a| a.stop_grace);
        if let Some(gw) = self.gateways.get(env) {
            let ids: Vec<String> = handles.iter().map(|h| h.id().to_string()).collect();
            if !gw.routes.drain(&ids, grace).await {
                tracing::warn!(%app, %env, version, "requests still in flight after the drain grace; stopping anyway");
            }
        }
        for h in handles {
            if let Err(e) = h.stop().await {
                tracing::warn!(instance = h.id(), error = %e, "stopping an instance failed");
            }
        }
        if let Some(s) = self.secrets.get() {
            s.remove_files(app, env, version);
        }
        tracing::info!(%app, %env, version, "stopped v{version}");
    }

    /// Stops every instance (server shutdown).
    pub async fn stop_all(&self) {
        // Rollouts stop where they are first: the next start resolves them from the store. Left
        // running, they would mistake their instances stopping for a failure and roll back.
        for (_, d) in lock(&self.active).drain() {
            if let Some(task) = d.task {
                task.abort();
            }
        }
        let all: Vec<_> = std::mem::take(&mut *lock(&self.instances))
            .into_values()
            .flatten()
            .collect();
        for h in all {
            let _ = h.stop().await;
        }
        self.driver.stop_all().await;
        for n in self.notifiers.values() {
            n.flush(Duration::from_secs(5)).await;
        }
    }

    fn healthy_upstreams(&self, key: &VersionKey) -> Vec<Upstream> {
        let map = lock(&self.instances);
        let Some(handles) = map.get(key) else {
            return Vec::new();
        };
        let all: Vec<Upstream> = handles
            .iter()
            .map(|h| Upstream {
                id: h.id().to_string(),
                addr: h.addr(),
            })
            .collect();
        let healthy: Vec<Upstream> = handles
            .iter()
            .filter(|h| h.status() == InstanceStatus::Healthy)
            .map(|h| Upstream {
                id: h.id().to_string(),
                addr: h.addr(),
            })
            .collect();
        // With no healthy instance, sending traffic to the ones that exist beats a certain 503.
        if healthy.is_empty() { all } else { healthy }
    }

    /// Recomputes an environment's routing table from the aliases and instance health, and
    /// swaps it in if it changed.
    pub fn apply_routes(&self, env: &str) {
        let (Some(gw), Some(env_c)) = (self.gateways.get(env), self.config.envs.get(env)) else {
            return;
        };
        // Computing and swapping under one lock keeps a table computed from older aliases or
        // instances (by the refresher, say) from landing after a newer one: a version being
        // drained must never come back into the table.
        let mut applied = lock(&self.applied);
        let (active, aliases) = match (self.store.active_rollouts(), self.store.all_aliases()) {
            (Ok(a), Ok(s)) => (a, s),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot read the store; routing unchanged");
                return;
            }
        };
        let mut apps = Vec::new();
        let mut signature = Vec::new();
        for app in self.config.apps_in(env_c) {
            let live = aliases
                .iter()
                .find(|(a, e, _)| *a == app.name && e == env)
                .and_then(|(_, _, set)| set.live);
            // While a gradual rollout shifts, live still names the stable version and the
            // candidate gets the rollout's weight of its traffic. The candidate comes first so
            // that hashing a sticky key keeps a client on it as its weight grows.
            let canary = active.iter().find(|r| {
                r.app == app.name
                    && r.env == env
                    && matches!(r.phase, Phase::Shifting | Phase::Paused)
                    && r.weight > 0
                    && live.is_some()
                    && r.from_version == live
            });
            let mut split: Vec<(u64, u32)> = Vec::new();
            if let Some(r) = canary {
                split.push((r.version, r.weight));
            }
            if let Some(v) = live {
                split.push((v, 1000 - canary.map_or(0, |r| r.weight.min(1000))));
            }
            // Blue and green are in the table too, without weight: the override header can
            // reach them (a tester trying a candidate before it gets user traffic).
            let set = aliases
                .iter()
                .find(|(a, e, _)| *a == app.name && e == env)
                .map(|(_, _, set)| *set)
                .unwrap_or_default();
            let mut named = Vec::new();
            for alias in Alias::ALL {
                if let Some(v) = set.get(alias) {
                    named.push((alias.as_str().to_string(), v));
                    if !split.iter().any(|(sv, _)| *sv == v) {
                        split.push((v, 0));
                    }
                }
            }
            let mut backends = Vec::new();
            for (v, weight) in split {
                let key = VersionKey {
                    app: app.name.clone(),
                    env: env.to_string(),
                    version: v,
                };
                let instances = self.healthy_upstreams(&key);
                signature.push((
                    app.name.clone(),
                    v,
                    weight,
                    instances.iter().map(|u| u.id.clone()).collect(),
                ));
                backends.push(Backend {
                    version: v,
                    weight,
                    instances,
                });
            }
            let sticky = env_c.sticky.as_ref().and_then(|s| match s {
                StickyConfig::Cookie => Some(Sticky::Cookie(format!("rg_{}", app.name))),
                StickyConfig::Header(h) => http::HeaderName::from_bytes(h.as_bytes())
                    .ok()
                    .map(Sticky::Header),
                StickyConfig::KeyCookie(c) => Some(Sticky::KeyCookie(c.clone())),
            });
            apps.push(AppRoute {
                app: app.name.clone(),
                hosts: app.hosts.clone(),
                path_prefix: app.path_prefix.clone(),
                backends,
                sticky,
                aliases: named,
            });
        }
        if applied.get(env) != Some(&signature) {
            gw.routes.set(RouteTable { apps });
            tracing::info!(%env, routes = ?signature, "routing table swapped");
            applied.insert(env.to_string(), signature);
        }
    }

    // ---------------------------------------------------------------- deploy

    /// Imports the artifact, creates the version and its rollout, and starts driving it.
    pub async fn deploy(
        self: &Arc<Self>,
        req: DeployRequest,
        actor: &str,
    ) -> Result<DeployAccepted, ApiError> {
        let (_, env_c) = self.app_env(&req.app, &req.env)?;
        if let Some(s) = self.secrets.get() {
            s.check_declared(&req.app, &req.env)?;
        }
        if let Some(r) = self
            .store
            .active_rollouts()?
            .into_iter()
            .find(|r| r.app == req.app && r.env == req.env)
        {
            return Err(ApiError::Locked(format!(
                "{}/{} is locked by rollout #{} (v{} by {}, {})",
                r.app, r.env, r.id, r.version, r.actor, r.phase
            )));
        }
        for k in req.vars.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(ApiError::BadRequest(format!(
                    "invalid environment variable name {k:?}"
                )));
            }
        }
        let path = PathBuf::from(&req.artifact);
        if !path.is_absolute() {
            return Err(ApiError::BadRequest(format!(
                "the artifact path must be absolute, got {:?}",
                req.artifact
            )));
        }
        let artifacts = self.artifacts.clone();
        let artifact = tokio::task::spawn_blocking(move || artifacts.import(&path))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Artifact(e.to_string()))?;
        let deploy = new_deploy(
            env_c,
            &req.app,
            &req.env,
            None,
            &artifact.digest,
            req.label.clone(),
            req.vars.clone(),
            actor,
        );
        let accepted = self.launch(&deploy, |v| format!("deploy of v{v} by {actor}"))?;
        tracing::info!(app = %req.app, env = %req.env, version = accepted.version, rollout = accepted.rollout_id, digest = %artifact.digest, %actor, "deploy started");
        Ok(accepted)
    }

    /// Creates a rollout (and its version, unless a retry), announces it and starts driving
    /// it. `started` words the notification for the version number.
    fn launch(
        self: &Arc<Self>,
        deploy: &NewDeploy,
        started: impl FnOnce(u64) -> String,
    ) -> Result<DeployAccepted, ApiError> {
        let (version, rollout) = self.store.create_deploy(deploy, now())?;
        let mut n = Notification::new(
            "rollout.started",
            &deploy.app,
            &deploy.env,
            started(version.number),
        );
        n.rollout_id = Some(rollout.id);
        n.version = Some(version.number);
        n.phase = Some(rollout.phase.as_str().to_string());
        self.notify(n);
        let accepted = DeployAccepted {
            rollout_id: rollout.id,
            app: deploy.app.clone(),
            env: deploy.env.clone(),
            version: version.number,
            digest: version.digest,
        };
        let actions = vec![Action::StartVersion {
            version: rollout.version,
        }];
        self.spawn_drive(rollout, actions);
        Ok(accepted)
    }

    fn spawn_drive(self: &Arc<Self>, rollout: Rollout, actions: Vec<Action>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = rollout.id;
        lock(&self.active).insert(
            id,
            Driving {
                commands: tx,
                task: None,
            },
        );
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            this.drive(rollout, actions, rx).await;
            lock(&this.active).remove(&id);
        });
        if let Some(d) = lock(&self.active).get_mut(&id) {
            d.task = Some(task.abort_handle());
        }
    }

    /// Applies an event outside the drive loop (recovery), then drives what follows.
    async fn advance(self: &Arc<Self>, r: Rollout, event: Event) {
        match self.transition(&r, &event, None).await {
            Ok((next, actions)) => {
                if next.phase.is_terminal() {
                    let (_, rx) = mpsc::unbounded_channel();
                    self.drive(next, actions, rx).await;
                } else {
                    self.spawn_drive(next, actions);
                }
            }
            Err(e) => tracing::error!(rollout = r.id, error = %e, "cannot resolve the rollout"),
        }
    }

    /// Persists a transition (rollout, event, aliases, lock, audit in one transaction).
    async fn transition(
        &self,
        r: &Rollout,
        event: &Event,
        data: Option<serde_json::Value>,
    ) -> Result<(Rollout, Vec<Action>), String> {
        let at = now();
        let (next, actions) = r.next(event, at).map_err(|e| e.to_string())?;
        let aliases = rollgate_core::rollout::alias_changes(&actions);
        let (kind, mut message) = describe(&next, event);
        let inconclusive: Vec<&str> = data
            .as_ref()
            .and_then(|d| d.get("verdicts"))
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter(|v| v["verdict"] == "inconclusive")
            .filter_map(|v| v["rule"].as_str())
            .collect();
        if !inconclusive.is_empty() && matches!(event, Event::MonitorElapsed) {
            // Too little traffic is not a pass: say which rules could not judge.
            message.push_str(&format!(
                " (inconclusive for lack of traffic: {})",
                inconclusive.join(", ")
            ));
        }
        let audit = next.phase.is_terminal().then(|| AuditEntry {
            at,
            actor: match event {
                Event::Cancel { by } => by.clone(),
                _ => "rollgate".to_string(),
            },
            action: format!("rollout_{}", next.phase.as_str()),
            app: Some(next.app.clone()),
            env: Some(next.env.clone()),
            detail: format!(
                "rollout #{} of v{}: {}",
                next.id,
                next.version,
                next.reason.clone().unwrap_or_default()
            ),
        });
        let record = EventRecord {
            rollout_id: next.id,
            at,
            phase: next.phase.as_str().to_string(),
            kind,
            message,
            data,
        };
        let t = Transition {
            rollout: &next,
            event: record,
            aliases,
            audit,
        };
        self.store.apply(&t).map_err(|e| e.to_string())?;
        let kind = if next.phase.is_terminal() {
            next.phase.as_str().to_string()
        } else {
            t.event.kind.clone()
        };
        let mut n = Notification::new(
            format!("rollout.{kind}"),
            &next.app,
            &next.env,
            t.event.message.clone(),
        );
        n.rollout_id = Some(next.id);
        n.version = Some(next.version);
        n.phase = Some(next.phase.as_str().to_string());
        n.details = t.event.data.clone().unwrap_or(serde_json::Value::Null);
        self.notify(n);
        tracing::info!(rollout = next.id, app = %next.app, env = %next.env, version = next.version, phase = %next.phase, reason = next.reason.as_deref().unwrap_or(""), "rollout {}", t.event.kind);
        Ok((next, actions))
    }

    /// Carries out a rollout's actions, turning their results into events, until it ends.
    async fn drive(
        self: &Arc<Self>,
        mut rollout: Rollout,
        mut actions: Vec<Action>,
        mut commands: Commands,
    ) {
        let _renew = {
            let this = Arc::clone(self);
            let (app, env, id) = (rollout.app.clone(), rollout.env.clone(), rollout.id);
            AbortOnDrop(tokio::spawn(async move {
                // Renew at once too: a rollout resumed after a long outage holds an expired lease.
                loop {
                    if let Err(e) = this.store.renew_lock(&app, &env, id, now().after(LEASE)) {
                        tracing::debug!(rollout = id, error = %e, "lock renewal stopped");
                        break;
                    }
                    tokio::time::sleep(LEASE_RENEW).await;
                }
            }))
        };
        loop {
            let mut next_event: Option<(Event, Option<serde_json::Value>)> = None;
            for action in std::mem::take(&mut actions) {
                let outcome = self.execute(&rollout, &action, &mut commands).await;
                if outcome.is_some() {
                    next_event = outcome;
                }
            }
            if rollout.phase == Phase::Shifting && next_event.is_none() {
                next_event = Some((Event::Switched, None));
            }
            let Some((event, data)) = next_event else {
                break;
            };
            match self.transition(&rollout, &event, data).await {
                Ok((next, a)) => {
                    rollout = next;
                    actions = a;
                }
                Err(e) => {
                    tracing::error!(rollout = rollout.id, error = %e, "rollout transition failed; it will be resolved at the next start");
                    break;
                }
            }
            if rollout.phase.is_terminal() && actions.is_empty() {
                break;
            }
        }
    }

    /// Executes one action; returns the event it produced, if any.
    async fn execute(
        &self,
        r: &Rollout,
        action: &Action,
        commands: &mut Commands,
    ) -> Option<(Event, Option<serde_json::Value>)> {
        match action {
            Action::SetAlias { .. } => None,
            Action::Route => {
                self.apply_routes(&r.env);
                None
            }
            Action::StopVersion { version } => {
                self.stop_version(&r.app, &r.env, *version).await;
                None
            }
            Action::StartVersion { version } => {
                let start = self.start_version(&r.app, &r.env, *version);
                tokio::select! {
                    res = start => Some(match res {
                        Ok(()) => (Event::InstancesHealthy, Some(json!({ "instances": self.instance_addrs(&r.app, &r.env, *version) }))),
                        Err(reason) => (Event::InstancesFailed { reason }, None),
                    }),
                    event = next_command(r, commands) => Some((event, None)),
                }
            }
            Action::RunSmoke { version } => {
                let tests = self
                    .config
                    .apps
                    .get(&r.app)
                    .map(|a| a.smoke.clone())
                    .unwrap_or_default();
                let instances = self.instance_addrs(&r.app, &r.env, *version);
                tokio::select! {
                    res = smoke::run(&self.check, &tests, &instances) => Some(match res {
                        Ok(results) => (Event::SmokePassed, Some(json!({ "results": results }))),
                        Err((reason, results)) => (Event::SmokeFailed { reason }, Some(json!({ "results": results }))),
                    }),
                    event = next_command(r, commands) => Some((event, None)),
                }
            }
            Action::Monitor { until } => Some(self.watch(r, Some(*until), false, commands).await),
            Action::Analyze { until } => Some(self.watch(r, *until, true, commands).await),
        }
    }

    fn instance_addrs(&self, app: &str, env: &str, version: u64) -> Vec<(String, SocketAddr)> {
        let key = VersionKey {
            app: app.to_string(),
            env: env.to_string(),
            version,
        };
        lock(&self.instances)
            .get(&key)
            .map(|hs| hs.iter().map(|h| (h.id().to_string(), h.addr())).collect())
            .unwrap_or_default()
    }

    /// Watches the candidate until `until` (or until an operator acts when `None`): its
    /// instances' health and the rules over the traffic the gateway saw. `shifting` selects the
    /// events of a weight step (analysis) rather than of the monitor window after promotion.
    async fn watch(
        &self,
        r: &Rollout,
        until: Option<Timestamp>,
        shifting: bool,
        commands: &mut Commands,
    ) -> (Event, Option<serde_json::Value>) {
        let fail = |reason: String| {
            if shifting {
                Event::AnalysisFailed { reason }
            } else {
                Event::MonitorFailed { reason }
            }
        };
        let Some(env_c) = self.config.envs.get(&r.env) else {
            return (
                if shifting {
                    Event::StepElapsed
                } else {
                    Event::MonitorElapsed
                },
                None,
            );
        };
        let key = VersionKey {
            app: r.app.clone(),
            env: r.env.clone(),
            version: r.version,
        };
        let mut tick = tokio::time::interval(MONITOR_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Synthetic traffic for a quiet service, ended with the watch.
        let _probes: Vec<AbortOnDrop> =
            match self.config.apps.get(&r.app).and_then(|a| a.probe.clone()) {
                Some(probe) => {
                    let mut versions = vec![r.version];
                    if shifting && let Some(stable) = r.from_version {
                        versions.push(stable);
                    }
                    versions
                        .into_iter()
                        .map(|v| self.spawn_probe(&r.app, &r.env, v, probe.clone()))
                        .collect()
                }
                None => Vec::new(),
            };
        let mut last: Vec<RuleVerdict> = Vec::new();
        let mut compared: Vec<Judgment> = Vec::new();
        let mut compare_window_s = 0u64;
        let mut failing_in_a_row = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                event = next_command(r, commands) => return (event, Some(json!({ "verdicts": last, "comparisons": compared, "compare_window_s": compare_window_s }))),
            }
            let handles = lock(&self.instances).get(&key).cloned().unwrap_or_default();
            if handles.is_empty() {
                return (
                    fail(format!("v{} has no running instance", r.version)),
                    None,
                );
            }
            for h in &handles {
                match h.status() {
                    InstanceStatus::Healthy | InstanceStatus::Starting => {}
                    other => {
                        let reason = format!("instance {} is {}", h.id(), describe_status(&other));
                        return (
                            fail(reason),
                            Some(json!({ "instance": h.id(), "status": other })),
                        );
                    }
                }
            }
            last = self.judge(env_c, &r.app, r.version);
            if let Some(failed) = last.iter().find(|v| v.is_fail()) {
                return (
                    fail(failed.to_string()),
                    Some(
                        json!({ "verdicts": last, "comparisons": compared, "compare_window_s": compare_window_s }),
                    ),
                );
            }
            if shifting && let (Some(cc), Some(stable)) = (&env_c.compare, r.from_version) {
                compared = self.compare(cc, &r.app, &r.env, r.version, stable, r.phase_since);
                compare_window_s =
                    (now().millis_since(r.phase_since) + 1_000).clamp(2_000, 900_000) / 1000;
                if compared.iter().any(|j| j.verdict == Verdict::Fail) {
                    failing_in_a_row += 1;
                } else {
                    failing_in_a_row = 0;
                }
                if failing_in_a_row >= cc.consecutive {
                    let reason = compared
                        .iter()
                        .filter(|j| j.verdict == Verdict::Fail)
                        .map(|j| format!("FAIL: {} ({})", j.reason, j.test))
                        .collect::<Vec<_>>()
                        .join("; ");
                    return (
                        fail(reason),
                        Some(
                            json!({ "verdicts": last, "comparisons": compared, "compare_window_s": compare_window_s }),
                        ),
                    );
                }
            }
            if until.is_some_and(|u| now() >= u) {
                let data = Some(
                    json!({ "verdicts": last, "comparisons": compared, "compare_window_s": compare_window_s }),
                );
                if !shifting {
                    return (Event::MonitorElapsed, data);
                }
                let inconclusive: Vec<String> = last
                    .iter()
                    .filter(|v| matches!(v, RuleVerdict::Inconclusive { .. }))
                    .map(ToString::to_string)
                    .collect();
                if inconclusive.is_empty() {
                    return (Event::StepElapsed, data);
                }
                // Too little traffic to judge is never a pass: the configured policy decides.
                let why = format!(
                    "analysis inconclusive at {}: {}",
                    rollgate_core::rollout::percent(r.weight),
                    inconclusive.join("; ")
                );
                return match env_c.on_inconclusive {
                    Inconclusive::Continue => (Event::StepElapsed, data),
                    Inconclusive::Pause => (Event::Pause { by: why }, data),
                    Inconclusive::Rollback => (Event::AnalysisFailed { reason: why }, data),
                };
            }
        }
    }

    /// Sends the app's probe request to a version's instances every `probe.every`, recording
    /// each answer in the gateway's metrics of that version as if a client had asked.
    fn spawn_probe(&self, app: &str, env: &str, version: u64, probe: Probe) -> AbortOnDrop {
        let key = VersionKey {
            app: app.to_string(),
            env: env.to_string(),
            version,
        };
        let handles = lock(&self.instances).get(&key).cloned().unwrap_or_default();
        let metrics = self.gateways.get(env).map(|g| g.metrics.clone());
        let client = self.check.clone();
        let app = app.to_string();
        AbortOnDrop(tokio::spawn(async move {
            let Some(metrics) = metrics else { return };
            if handles.is_empty() {
                return;
            }
            let mut tick = tokio::time::interval(probe.every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for n in 0usize.. {
                tick.tick().await;
                let addr = handles[n % handles.len()].addr();
                let req = hyper::Request::builder()
                    .method(probe.method.as_str())
                    .uri(format!("http://{addr}{}", probe.path))
                    .header("user-agent", "rollgate-probe")
                    .header("x-rollgate-probe", "1")
                    .body(http_body_util::Full::new(bytes::Bytes::new()));
                let Ok(req) = req else { return };
                let started = std::time::Instant::now();
                let sample = match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.request(req),
                )
                .await
                {
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                        Sample {
                            status,
                            latency: started.elapsed(),
                            upstream_failure: false,
                        }
                    }
                    Ok(Err(_)) => Sample {
                        status: 502,
                        latency: started.elapsed(),
                        upstream_failure: true,
                    },
                    Err(_) => Sample {
                        status: 504,
                        latency: started.elapsed(),
                        upstream_failure: true,
                    },
                };
                metrics.record(&app, version, sample);
            }
        }))
    }

    /// The candidate against the stable version over the same window: the current step so
    /// far (at least a second, at most the metric retention).
    fn compare(
        &self,
        cc: &CompareConfig,
        app: &str,
        env: &str,
        candidate: u64,
        stable: u64,
        since: Timestamp,
    ) -> Vec<Judgment> {
        let Some(gw) = self.gateways.get(env) else {
            return Vec::new();
        };
        // One more second than the step has run: the window counts whole seconds, and the
        // second the step began in must be inside it.
        let window =
            Duration::from_millis((now().millis_since(since) + 1_000).clamp(2_000, 900_000));
        let c = gw.metrics.window(app, candidate, window);
        let b = gw.metrics.window(app, stable, window);
        vec![
            stats::compare_error_rates(
                c.status_5xx,
                c.requests,
                b.status_5xx,
                b.requests,
                cc.error_rate_margin,
                cc.confidence,
                cc.min_requests,
            ),
            stats::compare_latency_histograms(
                &gw.metrics.latency_bins(app, candidate, window),
                &gw.metrics.latency_bins(app, stable, window),
                cc.latency_margin,
                cc.confidence,
                cc.min_requests,
            ),
        ]
    }

    fn judge(&self, env_c: &EnvConfig, app: &str, version: u64) -> Vec<RuleVerdict> {
        let Some(gw) = self.gateways.get(&env_c.name) else {
            return Vec::new();
        };
        env_c
            .rollback_when
            .iter()
            .map(|rule| {
                let w = gw.metrics.window(app, version, rule.window);
                let stats = TrafficStats {
                    requests: w.requests,
                    errors_5xx: w.status_5xx,
                    p50_ms: w.p50_ms,
                    p95_ms: w.p95_ms,
                    p99_ms: w.p99_ms,
                };
                rule.judge(&stats, env_c.min_requests)
            })
            .collect()
    }

    // ---------------------------------------------------------------- operators

    /// Sends an operator command to the rollout running on (app, env) and returns the rollout
    /// once the command took effect.
    pub async fn command(
        self: &Arc<Self>,
        app: &str,
        env: &str,
        command: Command,
        actor: &str,
    ) -> Result<serde_json::Value, ApiError> {
        self.app_env(app, env)?;
        let verb = match command {
            Command::Cancel => "abort",
            Command::Promote => "promote",
            Command::Pause => "pause",
            Command::Resume => "resume",
        };
        let Some(r) = self
            .store
            .active_rollouts()?
            .into_iter()
            .find(|r| r.app == app && r.env == env)
        else {
            return Err(ApiError::Conflict(format!(
                "{app}/{env} has no rollout in progress to {verb}"
            )));
        };
        if r.next(&command.event(actor), now()).is_err() {
            return Err(ApiError::Conflict(format!(
                "rollout #{} is {}: cannot {verb} it now",
                r.id, r.phase
            )));
        }
        let sender = lock(&self.active).get(&r.id).map(|d| d.commands.clone());
        let Some(sender) = sender else {
            return Err(ApiError::Conflict(format!(
                "rollout #{} is being resolved; try again in a moment",
                r.id
            )));
        };
        let _ = sender.send((command, actor.to_string()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let current = self.store.rollout(r.id)?;
            if current.phase != r.phase || current.phase_since != r.phase_since {
                return Ok(json!({ "rollout": rollout_json(&current) }));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::Internal(format!(
                    "rollout #{} did not take the command within 30s",
                    r.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Starts a new rollout of the version of the last rollout of (app, env), which must have
    /// ended without success.
    pub async fn retry(
        self: &Arc<Self>,
        app: &str,
        env: &str,
        actor: &str,
    ) -> Result<DeployAccepted, ApiError> {
        let (_, env_c) = self.app_env(app, env)?;
        let last = self
            .store
            .rollouts(&Filter {
                app: Some(app.into()),
                env: Some(env.into()),
                limit: Some(1),
            })?
            .into_iter()
            .next()
            .ok_or_else(|| ApiError::Conflict(format!("{app}/{env} has no rollout to retry")))?;
        if !last.phase.is_terminal() {
            return Err(ApiError::Locked(format!(
                "rollout #{} of {app}/{env} is still {}",
                last.id, last.phase
            )));
        }
        if last.phase == Phase::Succeeded {
            return Err(ApiError::Conflict(format!(
                "rollout #{} succeeded: nothing to retry",
                last.id
            )));
        }
        let version = self.store.version(app, env, last.version)?;
        if !self.artifacts.path_of(&version.digest).is_dir() {
            return Err(ApiError::Artifact(format!(
                "the artifact {} of v{} is gone",
                version.digest, version.number
            )));
        }
        let deploy = new_deploy(
            env_c,
            app,
            env,
            Some(last.version),
            &version.digest,
            version.label.clone(),
            version.vars.clone(),
            actor,
        );
        self.launch(&deploy, |v| format!("retry of v{v} by {actor}"))
    }

    /// Starts a rollout of a new version that copies the live one (artifact, label, vars), so
    /// that fresh instances start, e.g. with a rotated secret (crate::secrets). A new number
    /// rather than a retry of the live one: the live version's instances keep running as the
    /// baseline until the copy is verified, then drain. Fails with [`ApiError::Locked`] while
    /// a rollout runs.
    pub(crate) async fn redeploy(
        self: &Arc<Self>,
        app: &str,
        env: &str,
        actor: &str,
        reason: &str,
    ) -> Result<DeployAccepted, ApiError> {
        let (_, env_c) = self.app_env(app, env)?;
        let live = self
            .store
            .aliases(app, env)?
            .live
            .ok_or_else(|| ApiError::Conflict(format!("{app}/{env} has nothing live")))?;
        let record = self.store.version(app, env, live)?;
        let deploy = new_deploy(
            env_c,
            app,
            env,
            None,
            &record.digest,
            record.label.clone(),
            record.vars.clone(),
            actor,
        );
        let accepted = self.launch(&deploy, |v| {
            format!("redeploy of v{live} as v{v} by {actor}: {reason}")
        })?;
        tracing::info!(%app, %env, from = live, version = accepted.version, rollout = accepted.rollout_id, %reason, "redeploy of the live version started");
        self.store.record_audit(&AuditEntry {
            at: now(),
            actor: actor.to_string(),
            action: "redeploy".to_string(),
            app: Some(app.to_string()),
            env: Some(env.to_string()),
            detail: format!(
                "v{} copies live v{live} (rollout #{}): {reason}",
                accepted.version, accepted.rollout_id
            ),
        })?;
        Ok(accepted)
    }

    // ---------------------------------------------------------------- rollback

    /// Puts `live` back on `blue`. During a rollout this cancels it (an abort before the
    /// switch, a rollback after it) and waits for the outcome.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        env: &str,
        actor: &str,
    ) -> Result<serde_json::Value, ApiError> {
        self.app_env(app, env)?;
        if let Some(r) = self
            .store
            .active_rollouts()?
            .into_iter()
            .find(|r| r.app == app && r.env == env)
        {
            let sender = lock(&self.active).get(&r.id).map(|d| d.commands.clone());
            let Some(sender) = sender else {
                return Err(ApiError::Conflict(format!(
                    "rollout #{} is being resolved; try again in a moment",
                    r.id
                )));
            };
            let _ = sender.send((Command::Cancel, actor.to_string()));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let current = self.store.rollout(r.id)?;
                if current.phase.is_terminal() {
                    let aliases = self.store.aliases(app, env)?;
                    return Ok(json!({ "rollout": current, "aliases": aliases }));
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(ApiError::Internal(format!(
                        "rollout #{} did not stop within 60s",
                        r.id
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let set = self.store.aliases(app, env)?;
        let (Some(live), Some(blue)) = (set.live, set.blue) else {
            return Err(ApiError::Conflict(format!(
                "{app}/{env} has no blue version to roll back to (live is {})",
                set.live
                    .map_or_else(|| "nothing".to_string(), |v| format!("v{v}"))
            )));
        };
        // Blue should be warm; if it is not (e.g. it failed at startup), start it first so the
        // switch never lands on nothing.
        if let Err(reason) = self.start_version(app, env, blue).await {
            return Err(ApiError::Conflict(format!(
                "blue v{blue} cannot serve: {reason}"
            )));
        }
        let at = now();
        let set = self.store.set_aliases(
            app,
            env,
            &[(Alias::Live, Some(blue)), (Alias::Blue, None)],
            &AuditEntry {
                at,
                actor: actor.to_string(),
                action: "rollback".to_string(),
                app: Some(app.to_string()),
                env: Some(env.to_string()),
                detail: format!("live v{live} -> v{blue}"),
            },
            at,
        )?;
        self.apply_routes(env);
        tracing::info!(%app, %env, from = live, to = blue, %actor, "rolled back");
        let this = Arc::clone(self);
        let (a, e) = (app.to_string(), env.to_string());
        tokio::spawn(async move { this.stop_version(&a, &e, live).await });
        Ok(json!({ "rolled_back_from": live, "live": blue, "aliases": set }))
    }

    // ---------------------------------------------------------------- reads

    /// Status of every (environment, app) matching the filter.
    pub fn status(
        &self,
        app: Option<&str>,
        env: Option<&str>,
    ) -> Result<serde_json::Value, ApiError> {
        let mut envs = Vec::new();
        for env_c in self.config.envs.values() {
            if env.is_some_and(|e| e != env_c.name) {
                continue;
            }
            let gw = self.gateways.get(&env_c.name);
            let mut apps = Vec::new();
            for app_c in self.config.apps_in(env_c) {
                if app.is_some_and(|a| a != app_c.name) {
                    continue;
                }
                apps.push(self.app_status(app_c, env_c)?);
            }
            envs.push(json!({
                "env": env_c.name,
                "gateway": gw.map(|g| g.addr.to_string()),
                "strategy": env_c.strategy.name(),
                "steps": env_c.strategy.steps().iter().map(|s| s.weight as f64 / 10.0).collect::<Vec<_>>(),
                "monitor_ms": u64::try_from(env_c.monitor.as_millis()).unwrap_or(u64::MAX),
                "apps": apps,
            }));
        }
        if envs.is_empty() {
            return Err(ApiError::NotFound(format!(
                "environment {:?} is not in the configuration",
                env.unwrap_or("")
            )));
        }
        Ok(json!({ "environments": envs }))
    }

    fn app_status(
        &self,
        app_c: &AppConfig,
        env_c: &EnvConfig,
    ) -> Result<serde_json::Value, ApiError> {
        let (app, env) = (app_c.name.as_str(), env_c.name.as_str());
        let aliases: AliasSet = self.store.aliases(app, env)?;
        let versions = self.store.versions(app, env)?;
        let active = self
            .store
            .active_rollouts()?
            .into_iter()
            .find(|r| r.app == app && r.env == env);
        let last = self.store.rollouts(&Filter {
            app: Some(app.into()),
            env: Some(env.into()),
            limit: Some(1),
        })?;
        // The same split the routing table applies: the candidate's weight while shifting.
        let canary = active.as_ref().filter(|r| {
            matches!(r.phase, Phase::Shifting | Phase::Paused)
                && r.weight > 0
                && aliases.live.is_some()
                && r.from_version == aliases.live
        });
        let mut traffic = Vec::new();
        if let Some(r) = canary {
            traffic.push(json!({ "version": r.version, "weight_percent": r.weight as f64 / 10.0 }));
        }
        if let Some(v) = aliases.live {
            let w = 1000 - canary.map_or(0, |r| r.weight.min(1000));
            traffic.push(json!({ "version": v, "weight_percent": w as f64 / 10.0 }));
        }
        let shown: Vec<_> = versions
            .iter()
            .rev()
            .map(|v| {
                let names: Vec<&str> = Alias::ALL.iter().filter(|a| aliases.get(**a) == Some(v.number)).map(|a| a.as_str()).collect();
                let key = VersionKey { app: app.into(), env: env.into(), version: v.number };
                let instances: Vec<_> = lock(&self.instances)
                    .get(&key)
                    .map(|hs| {
                        hs.iter()
                            .map(|h| json!({ "id": h.id(), "addr": h.addr().to_string(), "status": h.status(), "pid": h.pid(), "restarts": h.restarts() }))
                            .collect()
                    })
                    .unwrap_or_default();
                json!({
                    "number": v.number, "label": v.label, "digest": v.digest,
                    "created_at": rfc3339(v.created_at), "created_by": v.created_by,
                    "aliases": names, "instances": instances,
                })
            })
            .collect();
        Ok(json!({
            "app": app,
            "env": env,
            "aliases": aliases,
            "traffic": traffic,
            "rollout": active.map(|r| rollout_json(&r)),
            "last_rollout": last.first().map(rollout_json),
            "versions": shown,
            "versions_total": versions.len(),
            "alarms": self.alarm_states(app, env_c),
        }))
    }

    /// Rollouts matching the filter, newest first, each with its events.
    pub fn history(&self, filter: &Filter) -> Result<serde_json::Value, ApiError> {
        let mut out = Vec::new();
        for r in self.store.rollouts(filter)? {
            let mut j = rollout_json(&r);
            if let Ok(v) = self.store.version(&r.app, &r.env, r.version) {
                j["label"] = json!(v.label);
                j["digest"] = json!(v.digest);
            }
            j["events"] = self.events_json(r.id)?;
            out.push(j);
        }
        Ok(json!({ "rollouts": out }))
    }

    /// One rollout with its events.
    pub fn rollout_detail(&self, id: u64) -> Result<serde_json::Value, ApiError> {
        let r = self.store.rollout(id)?;
        let mut j = rollout_json(&r);
        j["events"] = self.events_json(id)?;
        Ok(j)
    }

    fn events_json(&self, rollout_id: u64) -> Result<serde_json::Value, ApiError> {
        let events: Vec<_> = self
            .store
            .events(rollout_id)?
            .into_iter()
            .map(|e| json!({ "at": rfc3339(e.at), "phase": e.phase, "kind": e.kind, "message": e.message, "data": e.data }))
            .collect();
        Ok(json!(events))
    }

    /// The last lines of the log of each instance of a version (default: live).
    pub fn logs(
        &self,
        app: &str,
        env: &str,
        version: Option<u64>,
        lines: usize,
    ) -> Result<serde_json::Value, ApiError> {
        let (app_c, _) = self.app_env(app, env)?;
        let v =
            match version {
                Some(v) => v,
                None => self.store.aliases(app, env)?.live.ok_or_else(|| {
                    ApiError::NotFound(format!("{app}/{env} has no live version"))
                })?,
            };
        self.store.version(app, env, v)?;
        let mut out = Vec::new();
        for i in 0..app_c.instances {
            let path = self
                .logs_dir
                .join(app)
                .join(env)
                .join(format!("v{v}.{i}.log"));
            let tail = rollgate_runtime::log_tail(&path, lines).unwrap_or_default();
            out.push(json!({ "instance": format!("{app}.{env}.v{v}.{i}"), "path": path.display().to_string(), "lines": tail }));
        }
        Ok(json!({ "app": app, "env": env, "version": v, "instances": out }))
    }
}

/// Waits for the next operator command that is valid for the rollout's phase and returns its
/// event; commands the phase cannot take are dropped (the API checks before sending, so this
/// only catches races). Never returns once the sender is gone.
async fn next_command(r: &Rollout, commands: &mut Commands) -> Event {
    loop {
        match commands.recv().await {
            Some((command, by)) => {
                let event = command.event(&by);
                if r.next(&event, now()).is_ok() {
                    return event;
                }
                tracing::info!(rollout = r.id, phase = %r.phase, ?command, "command ignored: not valid in this phase");
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// A deploy request for the store, with the environment's strategy, monitor window and lease.
#[allow(clippy::too_many_arguments)]
fn new_deploy(
    env_c: &EnvConfig,
    app: &str,
    env: &str,
    retry: Option<u64>,
    digest: &str,
    label: Option<String>,
    vars: BTreeMap<String, String>,
    actor: &str,
) -> NewDeploy {
    NewDeploy {
        retry,
        app: app.to_string(),
        env: env.to_string(),
        digest: digest.to_string(),
        label,
        vars,
        actor: actor.to_string(),
        strategy: env_c.strategy.name().to_string(),
        steps: env_c.strategy.steps(),
        monitor: env_c.monitor,
        lease: LEASE,
    }
}

fn describe_status(s: &InstanceStatus) -> String {
    match s {
        InstanceStatus::Starting => "starting".to_string(),
        InstanceStatus::Healthy => "healthy".to_string(),
        InstanceStatus::Unhealthy { reason } => format!("unhealthy ({reason})"),
        InstanceStatus::Restarting { exit, restarts, .. } => {
            format!("restarting after {exit} (restart {restarts})")
        }
        InstanceStatus::Exited { exit } => format!("exited ({exit})"),
        InstanceStatus::Stopped => "stopped".to_string(),
    }
}

/// The event's stable kind and a sentence for people.
fn describe(next: &Rollout, event: &Event) -> (String, String) {
    let v = next.version;
    let (kind, msg) = match event {
        Event::InstancesHealthy => ("instances_healthy", format!("v{v} is healthy")),
        Event::InstancesFailed { reason } => (
            "instances_failed",
            format!("v{v} did not become healthy: {reason}"),
        ),
        Event::SmokePassed => ("smoke_passed", format!("v{v} passed its smoke tests")),
        Event::SmokeFailed { reason } => (
            "smoke_failed",
            format!("v{v} failed a smoke test: {reason}"),
        ),
        Event::Switched => (
            "switched",
            format!(
                "live switched to v{v}; monitoring until {}",
                next.monitor_until.map(rfc3339).unwrap_or_default()
            ),
        ),
        Event::MonitorFailed { reason } => (
            "monitor_failed",
            format!("v{v} failed while monitored: {reason}"),
        ),
        Event::MonitorElapsed => ("monitor_passed", format!("v{v} passed its monitor window")),
        Event::Cancel { by } => ("cancelled", format!("cancelled by {by}")),
        Event::Recovered => (
            "recovered",
            "the control plane restarted during this rollout".to_string(),
        ),
        Event::StepElapsed => ("step_passed", "step passed its analysis".to_string()),
        Event::AnalysisFailed { reason } => (
            "analysis_failed",
            format!("v{v} failed its analysis: {reason}"),
        ),
        Event::Promote { by } => ("promoted", format!("promoted by {by}")),
        Event::Pause { by } => ("paused", format!("paused by {by}")),
        Event::Resume { by } => ("resumed", format!("resumed by {by}")),
    };
    // A terminal event's reason already says what happened; repeating the cause reads badly.
    let msg = match (&next.reason, next.phase) {
        (Some(reason), p) if p.is_terminal() => {
            format!("{}: {reason}", p.as_str().replace('_', " "))
        }
        // Where a gradual shift now stands.
        (_, Phase::Shifting) if next.step.is_some() => format!(
            "{msg}; v{v} gets {} of live traffic until {}",
            rollgate_core::rollout::percent(next.weight),
            next.step_until.map(rfc3339).unwrap_or_default()
        ),
        (_, Phase::Paused) => format!(
            "{msg}; v{v} holds {} of live traffic until an operator resumes, promotes or aborts",
            rollgate_core::rollout::percent(next.weight)
        ),
        (_, Phase::Monitoring) if !matches!(event, Event::Switched | Event::Recovered) => format!(
            "{msg}; live switched to v{v}; monitoring until {}",
            next.monitor_until.map(rfc3339).unwrap_or_default()
        ),
        _ => msg,
    };
    (kind.to_string(), msg)
}

/// A rollout as the API shows it.
pub fn rollout_json(r: &Rollout) -> serde_json::Value {
    json!({
        "id": r.id,
        "app": r.app,
        "env": r.env,
        "version": r.version,
        "from_version": r.from_version,
        "strategy": r.strategy,
        "phase": r.phase,
        "outcome": r.phase.outcome(),
        "reason": r.reason,
        "actor": r.actor,
        "started_at": rfc3339(r.started_at),
        "finished_at": r.finished_at.map(rfc3339),
        "monitor_until": r.monitor_until.map(rfc3339),
        "steps": r.steps.iter().map(|s| json!({
            "weight_percent": s.weight as f64 / 10.0,
            "pause": match s.pause {
                rollgate_core::Pause::Millis(ms) => json!(ms),
                rollgate_core::Pause::Manual => json!("manual"),
            },
        })).collect::<Vec<_>>(),
        "step": r.step,
        "weight_percent": r.weight as f64 / 10.0,
        "step_until": r.step_until.map(rfc3339),
    })
}
