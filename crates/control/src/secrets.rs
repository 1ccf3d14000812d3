//! The secret service: sets, reads, lists, rotates and deletes secrets for the API, injects
//! them into instances at start, runs rotation policies in the background, and rotates the
//! master key. User documentation: `docs/secrets.md`.
//!
//! The store keeps sealed bytes only ([`rollgate_store::SecretStore`]); this service holds the
//! [`MasterKey`] and is the one place where values are sealed and opened. Values travel as
//! [`Redacted`] or zeroizing buffers and are never formatted into a log line, an error, an
//! audit entry or any API answer but `GET /v1/secrets/{env}/{name}/value`.
//!
//! Rotation follows the AWS model: the hook's new value is stored as `pending`, verified by the
//! optional test command, then promoted to `current` (the old one becomes `previous`); any
//! failure discards `pending`, keeps `current`, audits and notifies. A successful rotation
//! redeploys the live version of every app that uses the secret, so its instances restart
//! with the new value through the release machinery (verify, shift, drain).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use rollgate_core::config::SecretTarget;
use rollgate_core::{AppConfig, Config, Timestamp};
use rollgate_secrets::{
    MasterKey, Redacted, SecretError, SecretScope, Selector, Stage, aad, open, rewrap, seal,
    validate_name,
};
use rollgate_store::{
    AuditEntry, NewSecretVersion, NewVersionStage, RotationPolicy, SecretFilter, SecretInfo,
    SecretStore, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use zeroize::Zeroizing;

use crate::api::actor;
use crate::controller::{Controller, now, rfc3339};
use crate::error::ApiError;
use crate::notify::Notification;

/// The variable that holds the master key when the configuration names no source.
pub const DEFAULT_KEY_ENV: &str = "ROLLGATE_MASTER_KEY";
/// The key file in the data directory used when neither the configuration nor
/// [`DEFAULT_KEY_ENV`] gives a key; created at first start.
pub const DEFAULT_KEY_FILE: &str = "master.key";
/// The largest value accepted: secrets are passwords, tokens and certificates, not files.
pub const MAX_VALUE: usize = 64 * 1024;
/// How long a rotation hook or test command may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the scheduler looks for due rotations.
pub const ROTATION_CHECK: Duration = Duration::from_secs(2);
/// The longest wait before a failed scheduled rotation is tried again (shorter if the
/// policy's period is shorter), so a broken hook is not run every few seconds.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(600);
/// How long a redeploy after a rotation waits for a running rollout of the same app to end.
const REDEPLOY_PATIENCE: Duration = Duration::from_secs(300);
/// Directory, in the data directory, of the per-version folders of secret files.
const FILES_DIR: &str = "secrets";
/// The variable that tells an instance where its secret files are.
pub const FILES_ENV: &str = "ROLLGATE_SECRETS_DIR";

/// Errors of the secret service. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(transparent)]
    Crypto(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The request does not fit the current state (e.g. a rotation in progress).
    #[error("{0}")]
    Conflict(String),
    /// The master key cannot be used: the control plane must not start.
    #[error("{0}")]
    MasterKey(String),
}

impl From<SecretsError> for ApiError {
    fn from(e: SecretsError) -> ApiError {
        match e {
            SecretsError::Store(s) => ApiError::from(s),
            SecretsError::NotFound(m) => ApiError::NotFound(m),
            SecretsError::Invalid(m) => ApiError::BadRequest(m),
            SecretsError::Conflict(m) => ApiError::Conflict(m),
            SecretsError::Crypto(SecretError::InvalidName(n)) => {
                ApiError::BadRequest(SecretError::InvalidName(n).to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Where the master key comes from; kept for master-key rotation, which updates a key file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Env(String),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// Loads the master key for `serve` and checks it against the stored versions, before
/// anything else is written.
///
/// The source: `server.master_key_file` (already made absolute by the caller), else
/// `server.master_key_env`, else [`DEFAULT_KEY_ENV`] if set, else `<data_dir>/master.key`,
/// created (mode 0600) when missing and no secret is stored yet. Fails when the key's id is
/// not the one every stored version was sealed with, or when the default key file is missing
/// while versions are stored (a new key would make them unreadable).
pub fn load_master_key(
    config: &Config,
    data_dir: &Path,
    store: &dyn SecretStore,
) -> Result<(MasterKey, KeySource), SecretsError> {
    let stored: BTreeSet<String> = store
        .all_sealed_for_rewrap()?
        .into_iter()
        .map(|it| it.sealed.key_id)
        .collect();
    let server = &config.server;
    let source = if let Some(f) = &server.master_key_file {
        KeySource::File(f.clone())
    } else if let Some(v) = &server.master_key_env {
        KeySource::Env(v.clone())
    } else if std::env::var_os(DEFAULT_KEY_ENV).is_some() {
        KeySource::Env(DEFAULT_KEY_ENV.to_string())
    } else {
        KeySource::File(data_dir.join(DEFAULT_KEY_FILE))
    };
    let default_file = data_dir.join(DEFAULT_KEY_FILE);
    let key = match &source {
        KeySource::Env(v) => MasterKey::from_env(v)?,
        KeySource::File(p) if *p == default_file && !p.exists() => {
            if !stored.is_empty() {
                return Err(SecretsError::MasterKey(format!(
                    "the master key file {} is missing, but secrets sealed with master key {} are stored; \
                     restore the key file from its backup (or configure server.master_key_file / {DEFAULT_KEY_ENV}); \
                     nothing was changed",
                    p.display(),
                    names(&stored)
                )));
            }
            let key = MasterKey::generate()?;
            key.write_new(p)?;
            tracing::warn!(
                path = %p.display(),
                key_id = key.key_id(),
                "CREATED A NEW SECRETS MASTER KEY at {}: back it up now, somewhere other than the data directory's backups; \
                 without it no stored secret can be read, and stored beside the database it protects nothing",
                p.display()
            );
            key
        }
        KeySource::File(p) => MasterKey::from_file(p)?,
    };
    let wrong: Vec<&String> = stored.iter().filter(|k| *k != key.key_id()).collect();
    if !wrong.is_empty() {
        return Err(SecretsError::MasterKey(format!(
            "wrong master key: the {source} holds master key {}, but the stored secrets were sealed with master key {}; \
             start rollgate with the key they were stored with; nothing was changed",
            key.key_id(),
            wrong
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok((key, source))
}

fn names(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// A rotation policy as the API takes and shows it. The store keeps `hook` and `test`
/// together, as JSON, in its hook column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Rotate when `current` is this old.
    #[serde(with = "humantime_serde_str")]
    pub every: Duration,
    /// Shell command that prints the new value on stdout; `None`: manual rotation only.
    pub hook: Option<String>,
    /// Shell command that gets the candidate value on stdin and must exit 0.
    pub test: Option<String>,
}

mod humantime_serde_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct StoredHook {
    hook: Option<String>,
    test: Option<String>,
}

impl Policy {
    fn to_store(&self) -> RotationPolicy {
        let hook = (self.hook.is_some() || self.test.is_some()).then(|| {
            serde_json::to_string(&StoredHook {
                hook: self.hook.clone(),
                test: self.test.clone(),
            })
            .unwrap_or_default()
        });
        RotationPolicy {
            every: self.every,
            hook,
        }
    }

    fn from_store(p: &RotationPolicy) -> Policy {
        // A hook column written by hand (not JSON) is taken as the hook command alone.
        let (hook, test) = match p.hook.as_deref() {
            None => (None, None),
            Some(text) => match serde_json::from_str::<StoredHook>(text) {
                Ok(h) => (h.hook, h.test),
                Err(_) => (Some(text.to_string()), None),
            },
        };
        Policy {
            every: p.every,
            hook,
            test,
        }
    }
}

/// The result of one rotation, as the API answers it.
#[derive(Clone, Debug, Serialize)]
pub struct RotationOutcome {
    pub name: String,
    pub env: String,
    pub app: Option<String>,
    /// `rotated` or `failed`.
    pub outcome: &'static str,
    /// The new current version (rotated) or the discarded pending one (failed, if stored).
    pub version: Option<u64>,
    /// The version that stays (failed) or became previous (rotated).
    pub current: Option<u64>,
    /// Why it failed; never holds the value.
    pub reason: Option<String>,
    /// Rollouts started so that instances get the new value.
    pub redeploys: Vec<Value>,
}

/// The secret service. One per control plane, shared behind an `Arc`.
pub struct SecretService {
    config: Arc<Config>,
    secrets: Arc<dyn SecretStore>,
    store: Arc<dyn Store>,
    /// Read-locked while sealing and storing, write-locked by master-key rotation, so that no
    /// value is sealed under a key that is being retired.
    key: RwLock<Arc<MasterKey>>,
    source: Mutex<KeySource>,
    files_dir: PathBuf,
    /// Secrets being rotated now: a second rotation of the same one is refused.
    rotating: Mutex<HashSet<(SecretScope, String)>>,
    /// When a scheduled rotation last failed, for the back-off.
    failed_at: Mutex<HashMap<(SecretScope, String), Timestamp>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps are always left consistent, so poisoning carries no meaning here.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SecretService {
    /// The service with a checked master key (see [`load_master_key`]). Discards a `pending`
    /// version left by a rotation interrupted by a crash: it was never verified.
    pub fn new(
        config: Arc<Config>,
        secrets: Arc<dyn SecretStore>,
        store: Arc<dyn Store>,
        key: MasterKey,
        source: KeySource,
        data_dir: &Path,
    ) -> Result<Arc<SecretService>, SecretsError> {
        for info in secrets.list_secrets(&SecretFilter::default())? {
            if let Some(p) = info.pending {
                secrets.discard_pending(&info.scope, &info.name, p, "recovery", now())?;
                tracing::warn!(secret = %info.name, scope = %info.scope, version = p, "discarded a pending secret version left by an interrupted rotation");
            }
        }
        tracing::info!(key_id = key.key_id(), source = %source, "secrets master key loaded");
        Ok(Arc::new(SecretService {
            config,
            secrets,
            store,
            key: RwLock::new(Arc::new(key)),
            source: Mutex::new(source),
            files_dir: data_dir.join(FILES_DIR),
            rotating: Mutex::new(HashSet::new()),
            failed_at: Mutex::new(HashMap::new()),
        }))
    }

    fn key(&self) -> std::sync::RwLockReadGuard<'_, Arc<MasterKey>> {
        self.key.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks that the environment (and app) are configured and the name is valid.
    pub fn check_scope(&self, scope: &SecretScope, name: &str) -> Result<(), SecretsError> {
        validate_name(name)?;
        let env = self.config.envs.get(&scope.env).ok_or_else(|| {
            SecretsError::NotFound(format!(
                "environment {:?} is not in the configuration",
                scope.env
            ))
        })?;
        if let Some(app) = &scope.app
            && !env.apps.iter().any(|a| a == app)
        {
            return Err(SecretsError::NotFound(format!(
                "app {app:?} is not released in environment {:?}",
                scope.env
            )));
        }
        Ok(())
    }

    /// Stores a new version as `current` (the old one becomes `previous`); returns its number.
    /// Audit: `secret_set`.
    pub fn set(
        &self,
        scope: &SecretScope,
        name: &str,
        value: &Redacted<Vec<u8>>,
        actor: &str,
    ) -> Result<u64, SecretsError> {
        self.check_scope(scope, name)?;
        if value.expose().len() > MAX_VALUE {
            return Err(SecretsError::Invalid(format!(
                "the value has {} bytes; at most {MAX_VALUE} are accepted",
                value.expose().len()
            )));
        }
        self.store_version(scope, name, value, NewVersionStage::Current, actor)
    }

    fn store_version(
        &self,
        scope: &SecretScope,
        name: &str,
        value: &Redacted<Vec<u8>>,
        stage: NewVersionStage,
        actor: &str,
    ) -> Result<u64, SecretsError> {
        let key = self.key();
        // The version number is part of the sealed identity: a concurrent set takes the
        // number between our read and our write, so seal again for the next one.
        let mut last = None;
        for _ in 0..5 {
            let version = self.secrets.next_secret_version(scope, name)?;
            let sealed = seal(&key, value.expose(), &aad(scope, name, version))?;
            match self.secrets.put_secret_version(
                &NewSecretVersion {
                    scope,
                    name,
                    version,
                    sealed: &sealed,
                    stage,
                    actor,
                },
                now(),
            ) {
                Ok(v) => return Ok(v),
                Err(StoreError::Conflict(m)) if m.contains("the next version is") => {
                    last = Some(m);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecretsError::Conflict(last.unwrap_or_default()))
    }

    /// Decrypts one version (default `current`). Audit: `secret_read` by `actor`.
    pub fn get(
        &self,
        scope: &SecretScope,
        name: &str,
        selector: Selector,
        actor: &str,
    ) -> Result<(u64, Zeroizing<Vec<u8>>), SecretsError> {
        self.check_scope(scope, name)?;
        let key = self.key();
        let (version, sealed) = self
            .secrets
            .read_sealed(scope, name, selector, actor, now())?;
        let value = open(&key, &sealed, &aad(scope, name, version))?;
        Ok((version, value))
    }

    /// The scope an app's instances read `name` from: the app's own secret if it has a
    /// current version, else the environment-wide one.
    pub fn effective_scope(
        &self,
        app: &str,
        env: &str,
        name: &str,
    ) -> Result<SecretScope, SecretsError> {
        for scope in [SecretScope::app(env, app), SecretScope::env(env)] {
            match self.secrets.secret_info(&scope, name) {
                Ok(info) if info.deleted_at.is_none() && info.current.is_some() => {
                    return Ok(scope);
                }
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(SecretsError::NotFound(format!(
            "app {app} declares the secret {name:?}, which is not set in environment {env} \
             (set it with: rollgate secret set {name} --env {env} [--app {app}])"
        )))
    }

    /// Fails at once, naming every missing one, if a declared secret of the app is not set.
    pub fn check_declared(&self, app: &str, env: &str) -> Result<(), SecretsError> {
        let Some(app_c) = self.config.apps.get(app) else {
            return Ok(());
        };
        let missing: Vec<&str> = app_c
            .secrets
            .iter()
            .filter(|s| self.effective_scope(app, env, &s.name).is_err())
            .map(|s| s.name.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(SecretsError::Conflict(format!(
            "app {app} declares secrets that are not set in environment {env}: {}; set them first with: rollgate secret set NAME --env {env}",
            missing.join(", ")
        )))
    }

    /// The environment variables that give a version's instances their declared secrets,
    /// current values; files (mode 0600) are written into the version's own folder of the
    /// data directory, named in [`FILES_ENV`]. Values stay redacted until the spec is built.
    pub fn inject(
        &self,
        app: &AppConfig,
        env: &str,
        version: u64,
    ) -> Result<BTreeMap<String, Redacted<String>>, SecretsError> {
        let mut vars = BTreeMap::new();
        if app.secrets.is_empty() {
            return Ok(vars);
        }
        let dir = self.version_dir(&app.name, env, version);
        let actor = format!("instances of {}/{env} v{version}", app.name);
        for s in &app.secrets {
            let scope = self.effective_scope(&app.name, env, &s.name)?;
            let (_, value) = self.get(&scope, &s.name, Selector::Stage(Stage::Current), &actor)?;
            match &s.target {
                SecretTarget::Env(var) => {
                    let text = std::str::from_utf8(&value)
                        .ok()
                        .filter(|t| !t.contains('\0'))
                        .ok_or_else(|| {
                            SecretsError::Invalid(format!(
                                "secret {} is not text without NUL bytes, so it cannot be an environment variable; \
                                 give it as a file: {{ name = \"{}\", file = \"...\" }}",
                                s.name, s.name
                            ))
                        })?;
                    vars.insert(var.clone(), Redacted(text.to_string()));
                }
                SecretTarget::File(file) => {
                    write_secret_file(&dir, file, &value)?;
                    vars.insert(FILES_ENV.to_string(), Redacted(dir.display().to_string()));
                }
            }
        }
        Ok(vars)
    }

    fn version_dir(&self, app: &str, env: &str, version: u64) -> PathBuf {
        self.files_dir.join(format!("{app}.{env}.v{version}"))
    }

    /// Removes a stopped version's secret files.
    pub fn remove_files(&self, app: &str, env: &str, version: u64) {
        let dir = self.version_dir(app, env, version);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove secret files")
            }
        }
    }

    /// Metadata of the secrets in `filter` (no values), as the store keeps it.
    pub fn infos(
        &self,
        filter: &SecretFilter,
    ) -> Result<Vec<rollgate_store::SecretInfo>, SecretsError> {
        Ok(self.secrets.list_secrets(filter)?)
    }

    /// Masked metadata of the secrets in `filter`.
    pub fn list(&self, filter: &SecretFilter) -> Result<Vec<Value>, SecretsError> {
        Ok(self
            .secrets
            .list_secrets(filter)?
            .iter()
            .map(info_json)
            .collect())
    }

    /// Metadata and every version with its stages; no values.
    pub fn history(&self, scope: &SecretScope, name: &str) -> Result<Value, SecretsError> {
        self.check_scope(scope, name)?;
        let info = self.secrets.secret_info(scope, name)?;
        let versions: Vec<Value> = self
            .secrets
            .secret_versions(scope, name)?
            .into_iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "stages": v.stages,
                    "key_id": v.key_id,
                    "created_at": rfc3339(v.created_at),
                    "created_by": v.created_by,
                })
            })
            .collect();
        Ok(json!({ "secret": info_json(&info), "versions": versions }))
    }

    /// Soft delete. Audit: `secret_delete`.
    pub fn delete(&self, scope: &SecretScope, name: &str, actor: &str) -> Result<(), SecretsError> {
        self.check_scope(scope, name)?;
        self.secrets.delete_secret(scope, name, actor, now())?;
        Ok(())
    }

    /// Sets or (with `None`) removes the rotation policy. Audit: `secret_policy`.
    pub fn set_policy(
        &self,
        scope: &SecretScope,
        name: &str,
        policy: Option<&Policy>,
        actor: &str,
    ) -> Result<(), SecretsError> {
        self.check_scope(scope, name)?;
        if let Some(p) = policy
            && p.every < Duration::from_secs(1)
        {
            return Err(SecretsError::Invalid(
                "the rotation period must be at least 1s".to_string(),
            ));
        }
        let stored = policy.map(Policy::to_store);
        self.secrets
            .set_rotation_policy(scope, name, stored.as_ref(), actor, now())?;
        Ok(())
    }

    /// Rotates one secret with its hook: new value → `pending` → test → `current`, then
    /// redeploys the live version of every app using it. A failure discards `pending`, keeps
    /// `current`, audits `secret_rotation_failed` and notifies; it is an `Ok` outcome
    /// `failed`, while a request that cannot start a rotation at all is an `Err`.
    pub async fn rotate(
        self: &Arc<Self>,
        controller: &Arc<Controller>,
        scope: &SecretScope,
        name: &str,
        actor: &str,
    ) -> Result<RotationOutcome, SecretsError> {
        self.check_scope(scope, name)?;
        let info = self.secrets.secret_info(scope, name)?;
        if info.deleted_at.is_some() {
            return Err(SecretsError::NotFound(format!(
                "secret {name} in {scope} is deleted"
            )));
        }
        let policy = info.rotation.as_ref().map(Policy::from_store);
        let Some(hook) = policy.as_ref().and_then(|p| p.hook.clone()) else {
            return Err(SecretsError::Conflict(format!(
                "secret {name} in {scope} has no rotation hook; set one with: rollgate secret policy {name} --env {} --every 30d --hook CMD (or set a new value with: rollgate secret set)",
                scope.env
            )));
        };
        let test = policy.and_then(|p| p.test);
        let id = (scope.clone(), name.to_string());
        if !lock(&self.rotating).insert(id.clone()) {
            return Err(SecretsError::Conflict(format!(
                "secret {name} in {scope} is being rotated already"
            )));
        }
        let result = self
            .rotate_locked(
                controller,
                scope,
                name,
                &hook,
                test.as_deref(),
                actor,
                &info,
            )
            .await;
        lock(&self.rotating).remove(&id);
        result
    }

    #[allow(clippy::too_many_arguments)] // One private step of `rotate`, which owns the lock.
    async fn rotate_locked(
        self: &Arc<Self>,
        controller: &Arc<Controller>,
        scope: &SecretScope,
        name: &str,
        hook: &str,
        test: Option<&str>,
        actor: &str,
        info: &SecretInfo,
    ) -> Result<RotationOutcome, SecretsError> {
        let mut outcome = RotationOutcome {
            name: name.to_string(),
            env: scope.env.clone(),
            app: scope.app.clone(),
            outcome: "failed",
            version: None,
            current: info.current,
            reason: None,
            redeploys: Vec::new(),
        };
        let vars = hook_env(scope, name);
        let candidate = match run_command(hook, None, &vars).await {
            Ok(out) => Redacted(trim_newline(out)),
            Err(reason) => {
                self.rotation_failed(
                    controller,
                    scope,
                    name,
                    None,
                    &format!("hook {reason}"),
                    actor,
                )?;
                outcome.reason = Some(format!("hook {reason}"));
                return Ok(outcome);
            }
        };
        if candidate.expose().is_empty() || candidate.expose().len() > MAX_VALUE {
            let reason = format!(
                "hook printed {} bytes; expected 1 to {MAX_VALUE}",
                candidate.expose().len()
            );
            self.rotation_failed(controller, scope, name, None, &reason, actor)?;
            outcome.reason = Some(reason);
            return Ok(outcome);
        }
        let pending =
            self.store_version(scope, name, &candidate, NewVersionStage::Pending, actor)?;
        outcome.version = Some(pending);
        if let Some(test) = test
            && let Err(reason) = run_command(test, Some(candidate.expose()), &vars).await
        {
            let reason = format!("test {}", scrub(&reason, candidate.expose()));
            self.rotation_failed(controller, scope, name, Some(pending), &reason, actor)?;
            outcome.reason = Some(reason);
            return Ok(outcome);
        }
        self.secrets
            .promote_pending(scope, name, pending, actor, now())?;
        lock(&self.failed_at).remove(&(scope.clone(), name.to_string()));
        tracing::info!(secret = %name, scope = %scope, version = pending, %actor, "secret rotated: the new version is current");
        outcome.outcome = "rotated";
        outcome.current = Some(pending);
        let mut n = Notification::new(
            "secret.rotated",
            scope.app.clone().unwrap_or_else(|| "*".to_string()),
            scope.env.clone(),
            format!("secret {name} rotated to v{pending} by {actor}"),
        );
        n.version = Some(pending);
        controller.notify_event(n);
        outcome.redeploys = self.redeploy_users(controller, scope, name, pending).await;
        Ok(outcome)
    }

    fn rotation_failed(
        &self,
        controller: &Arc<Controller>,
        scope: &SecretScope,
        name: &str,
        pending: Option<u64>,
        reason: &str,
        actor: &str,
    ) -> Result<(), SecretsError> {
        if let Some(p) = pending {
            self.secrets.discard_pending(scope, name, p, actor, now())?;
        }
        lock(&self.failed_at).insert((scope.clone(), name.to_string()), now());
        let current = self
            .secrets
            .secret_info(scope, name)
            .ok()
            .and_then(|i| i.current);
        let stays = current.map_or_else(
            || "no current version".to_string(),
            |c| format!("v{c} stays current"),
        );
        self.store.record_audit(&AuditEntry {
            at: now(),
            actor: actor.to_string(),
            action: "secret_rotation_failed".to_string(),
            app: scope.app.clone(),
            env: Some(scope.env.clone()),
            detail: format!("{name}: {reason}; {stays}"),
        })?;
        tracing::warn!(secret = %name, scope = %scope, %reason, "secret rotation failed; {stays}");
        let n = Notification::new(
            "secret.rotation_failed",
            scope.app.clone().unwrap_or_else(|| "*".to_string()),
            scope.env.clone(),
            format!("rotation of secret {name} failed: {reason}; {stays}"),
        );
        controller.notify_event(n);
        Ok(())
    }

    /// Starts a rollout of a copy of the live version of every (app, env) whose instances
    /// read `name` from `scope`, so they restart with the new value. A rollout in progress is
    /// waited for in the background.
    async fn redeploy_users(
        self: &Arc<Self>,
        controller: &Arc<Controller>,
        scope: &SecretScope,
        name: &str,
        version: u64,
    ) -> Vec<Value> {
        let mut started = Vec::new();
        let Some(env_c) = self.config.envs.get(&scope.env) else {
            return started;
        };
        for app in self.config.apps_in(env_c) {
            if scope.app.as_ref().is_some_and(|a| *a != app.name)
                || !app.secrets.iter().any(|s| s.name == name)
            {
                continue;
            }
            // An app with its own secret of this name does not read the environment's.
            if self
                .effective_scope(&app.name, &scope.env, name)
                .is_ok_and(|s| s != *scope)
            {
                continue;
            }
            if controller
                .store()
                .aliases(&app.name, &scope.env)
                .map(|a| a.live.is_none())
                .unwrap_or(true)
            {
                continue;
            }
            let reason = format!("secret {name} rotated to v{version}");
            let actor = "secret-rotation";
            match controller
                .redeploy(&app.name, &scope.env, actor, &reason)
                .await
            {
                Ok(a) => started.push(json!(a)),
                Err(ApiError::Locked(m)) => {
                    tracing::info!(app = %app.name, env = %scope.env, %m, "{reason}; the redeploy waits for the running rollout");
                    let (c, app, env) =
                        (Arc::clone(controller), app.name.clone(), scope.env.clone());
                    tokio::spawn(async move {
                        let deadline = tokio::time::Instant::now() + REDEPLOY_PATIENCE;
                        while tokio::time::Instant::now() < deadline {
                            tokio::time::sleep(ROTATION_CHECK).await;
                            match c.redeploy(&app, &env, actor, &reason).await {
                                Err(ApiError::Locked(_)) => continue,
                                Err(e) => {
                                    tracing::error!(%app, %env, error = %e, "{reason}; the redeploy failed");
                                }
                                Ok(_) => {}
                            }
                            return;
                        }
                        tracing::error!(%app, %env, "{reason}; gave up waiting for the running rollout: redeploy by hand");
                    });
                }
                Err(e) => {
                    tracing::error!(app = %app.name, env = %scope.env, error = %e, "{reason}; the redeploy failed")
                }
            }
        }
        started
    }

    /// Runs every due rotation once: policies with a hook whose `current` is older than their
    /// period, skipping a secret whose last scheduled rotation failed recently.
    pub async fn run_due(self: &Arc<Self>, controller: &Arc<Controller>) {
        let infos = match self.secrets.list_secrets(&SecretFilter::default()) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(error = %e, "cannot list secrets for the rotation scheduler");
                return;
            }
        };
        let t = now();
        for info in infos {
            let Some(policy) = info.rotation.as_ref().map(Policy::from_store) else {
                continue;
            };
            let (Some(since), None, Some(_)) = (info.current_since, info.pending, &policy.hook)
            else {
                continue;
            };
            if t < since.after(policy.every) || self.check_scope(&info.scope, &info.name).is_err() {
                continue;
            }
            let backoff = policy.every.min(RETRY_AFTER_FAILURE);
            if let Some(failed) = lock(&self.failed_at)
                .get(&(info.scope.clone(), info.name.clone()))
                .copied()
                && t < failed.after(backoff)
            {
                continue;
            }
            match self
                .rotate(controller, &info.scope, &info.name, "rotation-policy")
                .await
            {
                Ok(_) => {}
                Err(SecretsError::Conflict(_)) => {} // rotated by hand right now
                Err(e) => {
                    lock(&self.failed_at).insert((info.scope.clone(), info.name.clone()), t);
                    tracing::error!(secret = %info.name, scope = %info.scope, error = %e, "scheduled rotation could not run");
                }
            }
        }
    }

    /// Re-wraps every data key under the key in `new_key_file`, in one transaction, then uses
    /// the new key. When the key came from a file, that file is replaced by the new key
    /// (mode 0600) so the next start finds it; an environment variable must be updated by
    /// the operator. Audit: `secret_master_key_rotate`.
    pub fn rotate_master_key(
        &self,
        new_key_file: &Path,
        actor: &str,
    ) -> Result<Value, SecretsError> {
        if !new_key_file.is_absolute() {
            return Err(SecretsError::Invalid(format!(
                "the new key file must be an absolute path on the server, got {}",
                new_key_file.display()
            )));
        }
        let new = MasterKey::from_file(new_key_file)?;
        let mut guard = self.key.write().unwrap_or_else(|p| p.into_inner());
        let old = Arc::clone(&guard);
        if new.key_id() == old.key_id() {
            return Err(SecretsError::Conflict(format!(
                "{} holds the master key in use ({})",
                new_key_file.display(),
                old.key_id()
            )));
        }
        let mut items = self.secrets.all_sealed_for_rewrap()?;
        for it in &mut items {
            it.sealed = rewrap(&old, &new, &it.sealed)?;
        }
        let count = self.secrets.rewrap_all(&items, actor, now())?;
        let (old_id, new_id) = (old.key_id().to_string(), new.key_id().to_string());
        if count == 0 {
            // Nothing to re-wrap, so the store wrote no audit entry; the change of key is one.
            self.store.record_audit(&AuditEntry {
                at: now(),
                actor: actor.to_string(),
                action: "secret_master_key_rotate".to_string(),
                app: None,
                env: None,
                detail: format!("no data keys stored; master key {old_id} replaced by {new_id}"),
            })?;
        }
        *guard = Arc::new(new);
        let source = lock(&self.source).clone();
        let next_start = match &source {
            KeySource::File(path) => match replace_key_file(path, new_key_file) {
                Ok(()) => format!("{} now holds the new key", path.display()),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "the secrets are re-wrapped but the key file could not be replaced");
                    format!(
                        "could not replace {} ({e}): before the next start, point server.master_key_file at {}",
                        path.display(),
                        new_key_file.display()
                    )
                }
            },
            KeySource::Env(var) => {
                format!("before the next start, set {var} to the new key")
            }
        };
        tracing::warn!(old = %old_id, new = %new_id, count, "secrets master key rotated; {next_start}; destroy the old key once no backup needs it");
        Ok(json!({
            "old_key_id": old_id,
            "new_key_id": new_id,
            "rewrapped": count,
            "next_start": next_start,
        }))
    }
}

/// Copies the key file `from` over `to` through a temporary file (mode 0600) and a rename,
/// so `to` is never half-written.
fn replace_key_file(to: &Path, from: &Path) -> Result<(), SecretsError> {
    let key = MasterKey::from_file(from)?;
    let tmp = to.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    key.write_new(&tmp)?;
    std::fs::rename(&tmp, to).map_err(|error| SecretError::Io {
        path: to.display().to_string(),
        error,
    })?;
    Ok(())
}

fn write_secret_file(dir: &Path, file: &str, value: &[u8]) -> Result<(), SecretsError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| SecretsError::Crypto(SecretError::Io { path, error })
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let path = dir.join(file);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(value).map_err(io(&path))?;
    Ok(())
}

fn info_json(info: &SecretInfo) -> Value {
    let policy = info.rotation.as_ref().map(Policy::from_store);
    let next = match (&policy, info.current_since) {
        (Some(p), Some(since)) if p.hook.is_some() => Some(rfc3339(since.after(p.every))),
        _ => None,
    };
    json!({
        "name": info.name,
        "env": info.scope.env,
        "app": info.scope.app,
        "value": "****",
        "current": info.current,
        "pending": info.pending,
        "previous": info.previous,
        "latest_version": info.latest_version,
        "current_since": info.current_since.map(rfc3339),
        "created_at": rfc3339(info.created_at),
        "created_by": info.created_by,
        "deleted_at": info.deleted_at.map(rfc3339),
        "rotation": policy,
        "next_rotation": next,
    })
}

/// What a hook and a test command see besides the inherited environment.
fn hook_env(scope: &SecretScope, name: &str) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("ROLLGATE_SECRET_NAME", name.to_string()),
        ("ROLLGATE_SECRET_ENV", scope.env.clone()),
    ];
    if let Some(app) = &scope.app {
        v.push(("ROLLGATE_SECRET_APP", app.clone()));
    }
    v
}

/// Drops one trailing newline (`\n` or `\r\n`): what `echo` and most tools add.
fn trim_newline(mut v: Vec<u8>) -> Vec<u8> {
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    v
}

/// Replaces every occurrence of `value` in `text` by `***`.
fn scrub(text: &str, value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(v) if !v.is_empty() => text.replace(v, "***"),
        _ => text.to_string(),
    }
}

/// Runs `sh -c command`, feeding `stdin`, and returns its stdout if it exits 0 within
/// [`HOOK_TIMEOUT`]. The error says how it failed with the tail of its stderr, which the
/// caller scrubs of the candidate value; stdout (the value) is never part of it.
async fn run_command(
    command: &str,
    stdin: Option<&[u8]>,
    vars: &[(&'static str, String)],
) -> Result<Vec<u8>, String> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A command that exits without reading closes the pipe: not an error by itself.
        let _ = pipe.write_all(input).await;
        drop(pipe);
    }
    let out = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| format!("did not finish within {}s", HOOK_TIMEOUT.as_secs()))?
        .map_err(|e| format!("could not be waited for: {e}"))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let t = stderr.trim();
        let start = t.char_indices().rev().nth(299).map_or(0, |(i, _)| i);
        t[start..].to_string()
    };
    Err(format!(
        "exited with {}{}",
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// The scheduler: runs due rotations every [`ROTATION_CHECK`] until aborted.
pub async fn rotation_loop(controller: Arc<Controller>) {
    let mut tick = tokio::time::interval(ROTATION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Some(s) = controller.secrets() {
            let s = Arc::clone(s);
            s.run_due(&controller).await;
        }
    }
}

// ---------------------------------------------------------------- API

/// The secret routes, merged into the control API behind its bearer token:
///
/// | method | path | does |
/// |---|---|---|
/// | POST | `/v1/secrets/{env}/{name}` | `{app?, value \| value_base64}` → new current version |
/// | GET | `/v1/secrets?env=&app=` | masked metadata |
/// | GET | `/v1/secrets/{env}/{name}/value?app=&version=&stage=` | the value (the only route that returns one) |
/// | GET | `/v1/secrets/{env}/{name}/history?app=` | versions and stages, no values |
/// | DELETE | `/v1/secrets/{env}/{name}?app=` | soft delete |
/// | POST | `/v1/secrets/{env}/{name}/rotate` | `{app?}`: run the hook now |
/// | PUT | `/v1/secrets/{env}/{name}/policy` | `{app?, every, hook?, test?}`, or `{app?, every: null}` to remove |
/// | POST | `/v1/master-key/rotate` | `{new_key_file}`: re-wrap every data key |
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Controller>: FromRef<S>,
{
    Router::new()
        .route("/v1/secrets", get(list_route))
        .route(
            "/v1/secrets/{env}/{name}",
            post(set_route).delete(delete_route),
        )
        .route("/v1/secrets/{env}/{name}/value", get(value_route))
        .route("/v1/secrets/{env}/{name}/history", get(history_route))
        .route("/v1/secrets/{env}/{name}/rotate", post(rotate_route))
        .route("/v1/secrets/{env}/{name}/policy", put(policy_route))
        .route("/v1/master-key/rotate", post(master_key_route))
}

fn service(c: &Controller) -> Result<Arc<SecretService>, ApiError> {
    c.secrets()
        .cloned()
        .ok_or_else(|| ApiError::Internal("the secret service is not running".to_string()))
}

/// A JSON body, with a rejection that never echoes the body (it may hold a value).
fn body<T>(b: Result<Json<T>, JsonRejection>, expected: &str) -> Result<T, ApiError> {
    b.map(|Json(t)| t)
        .map_err(|_| ApiError::BadRequest(format!("invalid JSON body: expected {expected}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    app: Option<String>,
    value: Option<String>,
    value_base64: Option<String>,
}

#[derive(Deserialize)]
struct ScopeQuery {
    app: Option<String>,
    version: Option<u64>,
    stage: Option<String>,
    env: Option<String>,
}

fn scope(env: String, app: Option<String>) -> SecretScope {
    SecretScope {
        env,
        app: app.filter(|a| !a.is_empty()),
    }
}

async fn set_route(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    UrlPath((env, name)): UrlPath<(String, String)>,
    b: Result<Json<SetBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b, "{app?, value | value_base64}")?;
    let value = match (b.value, b.value_base64) {
        (Some(v), None) => Redacted(v.into_bytes()),
        (None, Some(v)) => Redacted(
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .map_err(|_| ApiError::BadRequest("value_base64 is not valid base64".into()))?,
        ),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of value (UTF-8 text) and value_base64".into(),
            ));
        }
    };
    let scope = scope(env, b.app);
    let actor = actor(&headers);
    let version = service(&c)?.set(&scope, &name, &value, &actor)?;
    tracing::info!(secret = %name, scope = %scope, version, %actor, "secret set");
    Ok(Json(json!({
        "name": name, "env": scope.env, "app": scope.app, "version": version, "stage": "current",
    })))
}

async fn list_route(
    State(c): State<Arc<Controller>>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = SecretFilter {
        env: q.env,
        app: q.app,
        include_deleted: false,
    };
    Ok(Json(json!({ "secrets": service(&c)?.list(&filter)? })))
}

async fn value_route(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    UrlPath((env, name)): UrlPath<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let selector = match (q.version, q.stage.as_deref()) {
        (Some(v), None) => Selector::Version(v),
        (None, None) => Selector::Stage(Stage::Current),
        (None, Some(s)) => Selector::Stage(Stage::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown stage {s:?}; expected current, pending or previous"
            ))
        })?),
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give version or stage, not both".into(),
            ));
        }
    };
    let scope = scope(env, q.app);
    let actor = actor(&headers);
    let (version, value) = service(&c)?.get(&scope, &name, selector, &actor)?;
    tracing::info!(secret = %name, scope = %scope, version, %actor, "secret read");
    let text = std::str::from_utf8(&value).ok();
    Ok(Json(json!({
        "name": name, "env": scope.env, "app": scope.app, "version": version,
        "value": text,
        "value_base64": base64::engine::general_purpose::STANDARD.encode(&*value),
    })))
}

async fn history_route(
    State(c): State<Arc<Controller>>,
    UrlPath((env, name)): UrlPath<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(service(&c)?.history(&scope(env, q.app), &name)?))
}

async fn delete_route(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    UrlPath((env, name)): UrlPath<(String, String)>,
    Query(q): Query<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let scope = scope(env, q.app);
    let actor = actor(&headers);
    service(&c)?.delete(&scope, &name, &actor)?;
    tracing::info!(secret = %name, scope = %scope, %actor, "secret deleted");
    Ok(Json(
        json!({ "name": name, "env": scope.env, "app": scope.app, "deleted": true }),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AppBody {
    app: Option<String>,
}

async fn rotate_route(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    UrlPath((env, name)): UrlPath<(String, String)>,
    b: Result<Json<AppBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b, "{app?}")?;
    let scope = scope(env, b.app);
    let outcome = service(&c)?
        .rotate(&c, &scope, &name, &actor(&headers))
        .await?;
    Ok(Json(json!(outcome)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    app: Option<String>,
    /// `null` removes the policy.
    every: Option<String>,
    hook: Option<String>,
    test: Option<String>,
}

async fn policy_route(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    UrlPath((env, name)): UrlPath<(String, String)>,
    b: Result<Json<PolicyBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b, "{app?, every, hook?, test?}")?;
    let scope = scope(env, b.app);
    let policy = match b.every {
        None => None,
        Some(every) => Some(Policy {
            every: humantime::parse_duration(&every).map_err(|_| {
                ApiError::BadRequest(format!(
                    "every: expected a duration like \"7d\" or \"12h\", got {every:?}"
                ))
            })?,
            hook: b.hook.filter(|h| !h.trim().is_empty()),
            test: b.test.filter(|t| !t.trim().is_empty()),
        }),
    };
    service(&c)?.set_policy(&scope, &name, policy.as_ref(), &actor(&headers))?;
    Ok(Json(json!({
        "name": name, "env": scope.env, "app": scope.app, "rotation": policy,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MasterKeyBody {
    new_key_file: String,
}

async fn master_key_route(
    State(c): State<Arc<Controller>>,
    headers: HeaderMap,
    b: Result<Json<MasterKeyBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let b = body(b, "{new_key_file}")?;
    let s = service(&c)?;
    let actor = actor(&headers);
    let path = PathBuf::from(b.new_key_file);
    // Re-wrapping is SQLite work and file I/O: off the async threads.
    let done = tokio::task::spawn_blocking(move || s.rotate_master_key(&path, &actor))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(done))
}

#[cfg(test)]
mod tests;
