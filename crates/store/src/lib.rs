//! Persistence of rollgate's state behind the [`Store`] trait: versions, aliases, rollouts and
//! their events, locks with lease expiry, and the audit trail.
//!
//! Every change that must happen together happens in one transaction: a deploy creates the
//! version, the rollout, its first event, its lock and its audit entry at once; a transition
//! writes the new rollout, its event, the alias changes, the lock release and the audit entry
//! at once. A crash therefore leaves either the state before or the state after, never a mix.
//!
//! [`SqliteStore`] is the embedded default (one file, WAL). A PostgreSQL store for scale-out
//! implements the same trait.
//!
//! Secrets (sealed bytes, versions, stages, rotation policies) live behind the separate
//! [`SecretStore`] trait in [`secrets`], which [`SqliteStore`] implements too.

pub mod secrets;
mod sqlite;

use std::collections::BTreeMap;

use rollgate_core::{Alias, Rollout, Timestamp};
use serde::{Deserialize, Serialize};

pub use secrets::{
    NewSecretVersion, NewVersionStage, RewrapItem, RotationPolicy, SecretFilter, SecretInfo,
    SecretStore, SecretVersionInfo,
};
pub use sqlite::SqliteStore;

/// Errors of the store, by cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another rollout holds the (app, environment) lock.
    #[error(
        "{app}/{env} is locked by {holder} (rollout #{rollout_id}) until its lease expires or it finishes"
    )]
    Locked {
        app: String,
        env: String,
        holder: String,
        rollout_id: u64,
    },
    #[error("{0} not found")]
    NotFound(String),
    /// Another process has the database open (a second `rollgate serve` on the same data directory).
    #[error("the database {path} is in use by another rollgate process")]
    InUse { path: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The change does not fit the stored state, e.g. a secret version number already taken or
    /// a promotion of a version that is not pending. Nothing was changed; re-read and retry.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A released, immutable version of an app in an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub app: String,
    pub env: String,
    /// 1, 2, 3… per (app, environment); never reused.
    pub number: u64,
    /// `sha256:<hex>` of the artifact.
    pub digest: String,
    /// Free text given at deploy, e.g. a git sha.
    pub label: Option<String>,
    /// Environment variables given at deploy for this version only.
    pub vars: BTreeMap<String, String>,
    pub created_at: Timestamp,
    pub created_by: String,
}

/// The versions each alias of an (app, environment) points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasSet {
    pub live: Option<u64>,
    pub blue: Option<u64>,
    pub green: Option<u64>,
}

impl AliasSet {
    pub fn get(&self, alias: Alias) -> Option<u64> {
        match alias {
            Alias::Live => self.live,
            Alias::Blue => self.blue,
            Alias::Green => self.green,
        }
    }

    pub fn set(&mut self, alias: Alias, version: Option<u64>) {
        match alias {
            Alias::Live => self.live = version,
            Alias::Blue => self.blue = version,
            Alias::Green => self.green = version,
        }
    }

    /// The versions that must be running: live, blue and green, without repeats.
    pub fn running(&self) -> Vec<u64> {
        let mut v: Vec<u64> = [self.live, self.blue, self.green]
            .into_iter()
            .flatten()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// One line of a rollout's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub rollout_id: u64,
    pub at: Timestamp,
    /// The phase the rollout is in after this event.
    pub phase: String,
    /// A short stable name, e.g. `started`, `instances_healthy`, `smoke_failed`, `switched`.
    pub kind: String,
    /// A sentence for people.
    pub message: String,
    /// Structured details (verdict inputs, instance addresses…), if any.
    pub data: Option<serde_json::Value>,
}

/// One audited action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: String,
    /// e.g. `deploy`, `rollback`, `promote`, `rollout_failed`.
    pub action: String,
    pub app: Option<String>,
    pub env: Option<String>,
    pub detail: String,
}

/// A deploy request, as the store needs it.
#[derive(Clone, Debug)]
pub struct NewDeploy {
    /// `Some(n)`: a retry, a new rollout of the existing version n (digest, label and vars
    /// are taken from it); `None`: a new version N+1.
    pub retry: Option<u64>,
    pub app: String,
    pub env: String,
    pub digest: String,
    pub label: Option<String>,
    pub vars: BTreeMap<String, String>,
    pub actor: String,
    pub strategy: String,
    /// Weight steps of a gradual strategy; empty for blue/green.
    pub steps: Vec<rollgate_core::Step>,
    pub monitor: std::time::Duration,
    /// How long the lock holds without renewal.
    pub lease: std::time::Duration,
}

/// A state change made by a rollout transition.
#[derive(Clone, Debug)]
pub struct Transition<'a> {
    /// The rollout after the transition.
    pub rollout: &'a Rollout,
    pub event: EventRecord,
    pub aliases: Vec<(Alias, Option<u64>)>,
    pub audit: Option<AuditEntry>,
}

/// Filter of history and audit queries.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub app: Option<String>,
    pub env: Option<String>,
    /// Newest first; default 50.
    pub limit: Option<u32>,
}

/// rollgate's persistent state. Implementations must make each method one transaction.
pub trait Store: Send + Sync {
    /// Creates version N+1, its rollout in `deploying` (with `green` pointing at it) and the
    /// lock on (app, env). Fails with [`StoreError::Locked`] if an unexpired lock is held.
    fn create_deploy(
        &self,
        deploy: &NewDeploy,
        now: Timestamp,
    ) -> Result<(VersionRecord, Rollout), StoreError>;

    /// Persists a transition. Releases the lock when the rollout becomes terminal.
    fn apply(&self, t: &Transition<'_>) -> Result<(), StoreError>;

    /// Extends the lock of a running rollout.
    fn renew_lock(
        &self,
        app: &str,
        env: &str,
        rollout_id: u64,
        until: Timestamp,
    ) -> Result<(), StoreError>;

    /// Moves aliases outside a rollout (an operator's rollback). Fails with
    /// [`StoreError::Locked`] if a rollout holds the lock.
    fn set_aliases(
        &self,
        app: &str,
        env: &str,
        changes: &[(Alias, Option<u64>)],
        audit: &AuditEntry,
        now: Timestamp,
    ) -> Result<AliasSet, StoreError>;

    fn rollout(&self, id: u64) -> Result<Rollout, StoreError>;
    fn active_rollouts(&self) -> Result<Vec<Rollout>, StoreError>;
    fn rollouts(&self, filter: &Filter) -> Result<Vec<Rollout>, StoreError>;
    fn events(&self, rollout_id: u64) -> Result<Vec<EventRecord>, StoreError>;
    fn aliases(&self, app: &str, env: &str) -> Result<AliasSet, StoreError>;
    /// Every (app, env) that has aliases.
    fn all_aliases(&self) -> Result<Vec<(String, String, AliasSet)>, StoreError>;
    fn versions(&self, app: &str, env: &str) -> Result<Vec<VersionRecord>, StoreError>;
    fn version(&self, app: &str, env: &str, number: u64) -> Result<VersionRecord, StoreError>;
    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    fn audit(&self, filter: &Filter) -> Result<Vec<AuditEntry>, StoreError>;
}
