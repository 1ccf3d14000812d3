//! Persistence of secrets behind the [`SecretStore`] trait: secrets per scope, their numbered
//! versions (sealed bytes only, never a plaintext), the stages `current`, `pending` and
//! `previous` of the rotation model, rotation policies, and an audit entry for every read and
//! change.
//!
//! The store never sees a master key or a plaintext: callers seal with
//! [`rollgate_secrets::seal`] (binding the ciphertext to its identity with
//! [`rollgate_secrets::aad`]) and open what [`SecretStore::read_sealed`] returns. Audit details
//! name secrets, versions, stages and key ids, never values.
//!
//! Tables (schema version 2, added by the migration from 1):
//!
//! ```text
//! secrets          one row per (env, app or NULL, name); soft-deleted with deleted_at
//! secret_versions  (secret_id, version) → key_id, wrapped_dek, nonce, ciphertext; never changed
//!                  except by a master-key rewrap, which touches key_id and wrapped_dek only
//! secret_stages    (secret_id, stage) → version, since
//! ```

use std::time::Duration;

use rollgate_core::Timestamp;
use rollgate_secrets::{Sealed, SecretScope, Selector, Stage};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::sqlite::{i, insert_audit, ts};
use crate::{AuditEntry, SqliteStore, StoreError};

/// The tables of secrets: the migration from schema version 1 to 2. It only adds tables, so a
/// database migrated in place keeps every row it had.
pub(crate) const SCHEMA_V2: &str = r#"
CREATE TABLE IF NOT EXISTS secrets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope_env TEXT NOT NULL,
    scope_app TEXT,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    deleted_at INTEGER,
    rotation_policy_ms INTEGER,
    rotation_hook TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS secrets_by_scope ON secrets (scope_env, IFNULL(scope_app, ''), name);
CREATE TABLE IF NOT EXISTS secret_versions (
    secret_id INTEGER NOT NULL REFERENCES secrets (id),
    version INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    wrapped_dek BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (secret_id, version)
);
CREATE INDEX IF NOT EXISTS secret_versions_by_key ON secret_versions (key_id);
CREATE TABLE IF NOT EXISTS secret_stages (
    secret_id INTEGER NOT NULL REFERENCES secrets (id),
    stage TEXT NOT NULL CHECK (stage IN ('current', 'pending', 'previous')),
    version INTEGER NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (secret_id, stage),
    FOREIGN KEY (secret_id, version) REFERENCES secret_versions (secret_id, version)
);
"#;

/// The stage a new version takes when it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NewVersionStage {
    /// In use at once; the old `current` becomes `previous` (`rollgate secret set`).
    Current,
    /// Under rotation: stored but not used until [`SecretStore::promote_pending`].
    Pending,
}

/// A new version of a secret, sealed by the caller.
#[derive(Clone, Debug)]
pub struct NewSecretVersion<'a> {
    pub scope: &'a SecretScope,
    pub name: &'a str,
    /// The number this version gets: must be [`SecretStore::next_secret_version`], which the
    /// caller needs anyway to seal with [`rollgate_secrets::aad`]. Another number fails with
    /// [`StoreError::Conflict`] (someone else stored a version in between: seal again).
    pub version: u64,
    pub sealed: &'a Sealed,
    pub stage: NewVersionStage,
    pub actor: &'a str,
}

/// When a secret is rotated, and by what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// Rotate when `current` is this old.
    pub every: Duration,
    /// The command that makes (and verifies) a new value; `None`: rotation is manual.
    pub hook: Option<String>,
}

/// A secret's metadata: never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretInfo {
    pub scope: SecretScope,
    pub name: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// Set when deleted; a deleted secret keeps its versions for the audit trail but has no
    /// stages and cannot be read.
    pub deleted_at: Option<Timestamp>,
    pub rotation: Option<RotationPolicy>,
    pub current: Option<u64>,
    pub pending: Option<u64>,
    pub previous: Option<u64>,
    /// When `current` last moved: what a rotation policy counts from.
    pub current_since: Option<Timestamp>,
    /// The highest version number; 0 for none.
    pub latest_version: u64,
}

/// One version of a secret, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretVersionInfo {
    pub version: u64,
    /// The master key that wraps its data key.
    pub key_id: String,
    pub created_at: Timestamp,
    pub created_by: String,
    /// The stages pointing at this version, in the order of [`Stage::ALL`].
    pub stages: Vec<Stage>,
}

/// Which secrets [`SecretStore::list_secrets`] returns.
#[derive(Clone, Debug, Default)]
pub struct SecretFilter {
    /// Only this environment; default all.
    pub env: Option<String>,
    /// Only secrets of this app (not the environment-wide ones); default all.
    pub app: Option<String>,
    /// Include soft-deleted secrets; default no.
    pub include_deleted: bool,
}

/// One stored version for master-key rotation: read with
/// [`SecretStore::all_sealed_for_rewrap`], re-wrapped by the caller with
/// [`rollgate_secrets::rewrap`], written back with [`SecretStore::rewrap_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrapItem {
    pub scope: SecretScope,
    pub name: String,
    pub version: u64,
    pub sealed: Sealed,
}

/// Persistence of secrets. Implementations must make each method one transaction, and must
/// audit every change and every read of sealed bytes, with details that never hold a value.
pub trait SecretStore: Send + Sync {
    /// The number the next version of (scope, name) gets: 1 for a new secret. Numbers are
    /// never reused, also across a delete.
    fn next_secret_version(&self, scope: &SecretScope, name: &str) -> Result<u64, StoreError>;

    /// Stores a new version; creates the secret (or revives a deleted one) if needed.
    /// As [`NewVersionStage::Current`]: the old `current` becomes `previous`, at once; a
    /// `pending` version is left alone. As [`NewVersionStage::Pending`]: fails with
    /// [`StoreError::Conflict`] if a version is already pending (a rotation in progress).
    /// Audit: `secret_set` or `secret_rotation_started`. Returns the version number.
    fn put_secret_version(
        &self,
        new: &NewSecretVersion<'_>,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Makes the pending `version` current; the old current becomes previous. Fails with
    /// [`StoreError::Conflict`] if `version` is not the pending one. Audit: `secret_rotate`.
    fn promote_pending(
        &self,
        scope: &SecretScope,
        name: &str,
        version: u64,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Drops the `pending` stage of `version` (a failed rotation); the version stays in the
    /// history, `current` is untouched. Fails with [`StoreError::Conflict`] if `version` is not
    /// the pending one. Audit: `secret_rotation_discarded`.
    fn discard_pending(
        &self,
        scope: &SecretScope,
        name: &str,
        version: u64,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// One secret's metadata, deleted or not.
    fn secret_info(&self, scope: &SecretScope, name: &str) -> Result<SecretInfo, StoreError>;

    /// Every version of a secret, oldest first, without bytes (also of a deleted secret, for
    /// `history`).
    fn secret_versions(
        &self,
        scope: &SecretScope,
        name: &str,
    ) -> Result<Vec<SecretVersionInfo>, StoreError>;

    /// The sealed bytes of the version `selector` names, with its number. Fails with
    /// [`StoreError::NotFound`] for a deleted secret, an unset stage or an unknown version.
    /// Audit: `secret_read` by `actor` (the value may be opened after this).
    fn read_sealed(
        &self,
        scope: &SecretScope,
        name: &str,
        selector: Selector,
        actor: &str,
        now: Timestamp,
    ) -> Result<(u64, Sealed), StoreError>;

    /// Secrets matching `filter`, ordered by env, app (env-wide first), name.
    fn list_secrets(&self, filter: &SecretFilter) -> Result<Vec<SecretInfo>, StoreError>;

    /// Soft delete: the secret can no longer be read and loses its stages; its versions stay
    /// for the audit trail. Fails with [`StoreError::NotFound`] if absent or already deleted.
    /// Audit: `secret_delete`.
    fn delete_secret(
        &self,
        scope: &SecretScope,
        name: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Sets (or with `None` removes) the rotation policy. Fails with [`StoreError::NotFound`]
    /// for an absent or deleted secret. Audit: `secret_policy`.
    fn set_rotation_policy(
        &self,
        scope: &SecretScope,
        name: &str,
        policy: Option<&RotationPolicy>,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Every stored version of every secret, deleted ones included (their data keys are under
    /// the old master key too), for master-key rotation.
    fn all_sealed_for_rewrap(&self) -> Result<Vec<RewrapItem>, StoreError>;

    /// Writes re-wrapped data keys, all or nothing. Each item must name an existing version,
    /// keep its nonce and ciphertext, and all items must carry the same key id; afterwards no
    /// version may remain under another key (one stored since
    /// [`SecretStore::all_sealed_for_rewrap`] fails the whole call with
    /// [`StoreError::Conflict`]: read and rewrap again). Audit: `secret_master_key_rotate`.
    /// Returns the number of versions re-wrapped.
    fn rewrap_all(
        &self,
        items: &[RewrapItem],
        actor: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError>;
}

fn audit(
    tx: &Connection,
    scope: &SecretScope,
    actor: &str,
    action: &str,
    detail: String,
    now: Timestamp,
) -> Result<(), StoreError> {
    insert_audit(
        tx,
        &AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: action.to_string(),
            app: scope.app.clone(),
            env: Some(scope.env.clone()),
            detail,
        },
    )
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn not_found(scope: &SecretScope, name: &str) -> StoreError {
    StoreError::NotFound(format!("secret {name} in {scope}"))
}

/// The id and deletion time of (scope, name), if it was ever created.
fn find(
    tx: &Connection,
    scope: &SecretScope,
    name: &str,
) -> Result<Option<(i64, Option<i64>)>, StoreError> {
    // `IS` compares NULL with NULL as equal: the env-wide scope has no app.
    Ok(tx
        .query_row(
            "SELECT id, deleted_at FROM secrets WHERE scope_env = ?1 AND scope_app IS ?2 AND name = ?3",
            params![scope.env, scope.app, name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// The id of a secret that exists and is not deleted.
fn live(tx: &Connection, scope: &SecretScope, name: &str) -> Result<i64, StoreError> {
    match find(tx, scope, name)? {
        Some((id, None)) => Ok(id),
        _ => Err(not_found(scope, name)),
    }
}

fn stage_version(tx: &Connection, id: i64, stage: Stage) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = tx
        .query_row(
            "SELECT version FROM secret_stages WHERE secret_id = ?1 AND stage = ?2",
            params![id, stage.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.map(u))
}

fn set_stage(
    tx: &Transaction<'_>,
    id: i64,
    stage: Stage,
    version: Option<u64>,
    now: Timestamp,
) -> Result<(), StoreError> {
    match version {
        Some(v) => tx.execute(
            "INSERT INTO secret_stages (secret_id, stage, version, since) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (secret_id, stage) DO UPDATE SET version = excluded.version, since = excluded.since",
            params![id, stage.as_str(), i(v), i(now.0)],
        )?,
        None => tx.execute(
            "DELETE FROM secret_stages WHERE secret_id = ?1 AND stage = ?2",
            params![id, stage.as_str()],
        )?,
    };
    Ok(())
}

/// Moves `current` to `version` and the old current to `previous`, as one step of a
/// transaction. Returns the old current.
fn make_current(
    tx: &Transaction<'_>,
    id: i64,
    version: u64,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let old = stage_version(tx, id, Stage::Current)?;
    // With no current before (a new secret, or one revived after delete), there is no previous
    // either: a stale previous from another lifetime must not look like a rollback target.
    set_stage(tx, id, Stage::Previous, old, now)?;
    set_stage(tx, id, Stage::Current, Some(version), now)?;
    Ok(old)
}

fn require_pending(
    tx: &Connection,
    id: i64,
    scope: &SecretScope,
    name: &str,
    version: u64,
) -> Result<(), StoreError> {
    match stage_version(tx, id, Stage::Pending)? {
        Some(p) if p == version => Ok(()),
        Some(p) => Err(StoreError::Conflict(format!(
            "v{version} of secret {name} in {scope} is not pending (v{p} is)"
        ))),
        None => Err(StoreError::Conflict(format!(
            "secret {name} in {scope} has no pending version"
        ))),
    }
}

const INFO_COLS: &str = "id, scope_env, scope_app, name, created_at, created_by, deleted_at, rotation_policy_ms, rotation_hook";

fn info_row(tx: &Connection, r: &rusqlite::Row<'_>) -> Result<SecretInfo, StoreError> {
    let id: i64 = r.get(0)?;
    let policy_ms: Option<i64> = r.get(7)?;
    let mut info = SecretInfo {
        scope: SecretScope {
            env: r.get(1)?,
            app: r.get(2)?,
        },
        name: r.get(3)?,
        created_at: ts(r.get(4)?),
        created_by: r.get(5)?,
        deleted_at: r.get::<_, Option<i64>>(6)?.map(ts),
        rotation: policy_ms.map(|ms| RotationPolicy {
            every: Duration::from_millis(u(ms)),
            hook: None,
        }),
        current: None,
        pending: None,
        previous: None,
        current_since: None,
        latest_version: 0,
    };
    if let Some(p) = &mut info.rotation {
        p.hook = r.get(8)?;
    }
    let mut stmt =
        tx.prepare_cached("SELECT stage, version, since FROM secret_stages WHERE secret_id = ?1")?;
    let stages = stmt.query_map(params![id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in stages {
        let (stage, version, since) = row?;
        match Stage::parse(&stage) {
            Some(Stage::Current) => {
                info.current = Some(u(version));
                info.current_since = Some(ts(since));
            }
            Some(Stage::Pending) => info.pending = Some(u(version)),
            Some(Stage::Previous) => info.previous = Some(u(version)),
            None => {
                return Err(StoreError::Corrupt(format!(
                    "unknown secret stage {stage:?}"
                )));
            }
        }
    }
    info.latest_version = u(tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM secret_versions WHERE secret_id = ?1",
        params![id],
        |r| r.get(0),
    )?);
    Ok(info)
}

fn sealed_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Sealed> {
    Ok(Sealed {
        key_id: r.get(at)?,
        wrapped_dek: r.get(at + 1)?,
        nonce: r.get(at + 2)?,
        ciphertext: r.get(at + 3)?,
    })
}

impl SqliteStore {
    /// Ends the pending stage of `version` in one transaction: the secret must be live and
    /// `version` pending; the stage is cleared, `then` does the rest (promote, or keep the
    /// current version) and names the audit action and detail, recorded before the commit.
    fn end_pending(
        &self,
        scope: &SecretScope,
        name: &str,
        version: u64,
        actor: &str,
        now: Timestamp,
        then: impl FnOnce(&Transaction<'_>, i64) -> Result<(&'static str, String), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = live(&tx, scope, name)?;
        require_pending(&tx, id, scope, name, version)?;
        set_stage(&tx, id, Stage::Pending, None, now)?;
        let (action, detail) = then(&tx, id)?;
        audit(&tx, scope, actor, action, detail, now)?;
        tx.commit()?;
        Ok(())
    }
}

impl SecretStore for SqliteStore {
    fn next_secret_version(&self, scope: &SecretScope, name: &str) -> Result<u64, StoreError> {
        let conn = self.conn();
        let Some((id, _)) = find(&conn, scope, name)? else {
            return Ok(1);
        };
        let last: i64 = conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM secret_versions WHERE secret_id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        Ok(u(last) + 1)
    }

    fn put_secret_version(
        &self,
        new: &NewSecretVersion<'_>,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let (scope, name) = (new.scope, new.name);
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (id, revived) = match find(&tx, scope, name)? {
            Some((id, deleted)) => {
                if deleted.is_some() {
                    tx.execute(
                        "UPDATE secrets SET deleted_at = NULL WHERE id = ?1",
                        params![id],
                    )?;
                }
                (id, deleted.is_some())
            }
            None => {
                tx.execute(
                    "INSERT INTO secrets (scope_env, scope_app, name, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![scope.env, scope.app, name, i(now.0), new.actor],
                )?;
                (tx.last_insert_rowid(), false)
            }
        };
        let next = u(tx.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM secret_versions WHERE secret_id = ?1",
            params![id],
            |r| r.get::<_, i64>(0),
        )?) + 1;
        if new.version != next {
            return Err(StoreError::Conflict(format!(
                "secret {name} in {scope}: the next version is v{next}, not v{}; seal it again for v{next}",
                new.version
            )));
        }
        let pending = stage_version(&tx, id, Stage::Pending)?;
        if let (NewVersionStage::Pending, Some(p)) = (new.stage, pending) {
            return Err(StoreError::Conflict(format!(
                "secret {name} in {scope} is being rotated: v{p} is pending; promote or discard it first"
            )));
        }
        let s = new.sealed;
        tx.execute(
            "INSERT INTO secret_versions (secret_id, version, key_id, wrapped_dek, nonce, ciphertext, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id, i(next), s.key_id, s.wrapped_dek, s.nonce, s.ciphertext, i(now.0), new.actor],
        )?;
        let (action, detail) = match new.stage {
            NewVersionStage::Current => {
                let old = make_current(&tx, id, next, now)?;
                let was = old.map_or_else(
                    || {
                        if revived {
                            "; restored after delete"
                        } else {
                            "; new secret"
                        }
                        .to_string()
                    },
                    |o| format!("; v{o} is previous"),
                );
                ("secret_set", format!("{name} v{next} is current{was}"))
            }
            NewVersionStage::Pending => {
                set_stage(&tx, id, Stage::Pending, Some(next), now)?;
                (
                    "secret_rotation_started",
                    format!("{name} v{next} is pending"),
                )
            }
        };
        audit(
            &tx,
            scope,
            new.actor,
            action,
            format!("{detail} (master key {})", s.key_id),
            now,
        )?;
        tx.commit()?;
        Ok(next)
    }

    fn promote_pending(
        &self,
        scope: &SecretScope,
        name: &str,
        version: u64,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.end_pending(scope, name, version, actor, now, |tx, id| {
            let was = make_current(tx, id, version, now)?
                .map(|o| format!("; v{o} is previous"))
                .unwrap_or_default();
            Ok((
                "secret_rotate",
                format!("{name} v{version} promoted from pending to current{was}"),
            ))
        })
    }

    fn discard_pending(
        &self,
        scope: &SecretScope,
        name: &str,
        version: u64,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.end_pending(scope, name, version, actor, now, |tx, id| {
            let current = stage_version(tx, id, Stage::Current)?
                .map(|c| format!("v{c} stays current"))
                .unwrap_or_else(|| "no current version".to_string());
            Ok((
                "secret_rotation_discarded",
                format!("{name} pending v{version} discarded; {current}"),
            ))
        })
    }

    fn secret_info(&self, scope: &SecretScope, name: &str) -> Result<SecretInfo, StoreError> {
        let conn = self.conn();
        let Some((id, _)) = find(&conn, scope, name)? else {
            return Err(not_found(scope, name));
        };
        let mut stmt = conn.prepare(&format!("SELECT {INFO_COLS} FROM secrets WHERE id = ?1"))?;
        let mut rows = stmt.query(params![id])?;
        match rows.next()? {
            Some(r) => info_row(&conn, r),
            None => Err(not_found(scope, name)),
        }
    }

    fn secret_versions(
        &self,
        scope: &SecretScope,
        name: &str,
    ) -> Result<Vec<SecretVersionInfo>, StoreError> {
        let conn = self.conn();
        let Some((id, _)) = find(&conn, scope, name)? else {
            return Err(not_found(scope, name));
        };
        let mut stmt = conn.prepare(
            "SELECT v.version, v.key_id, v.created_at, v.created_by,
                    (SELECT group_concat(s.stage) FROM secret_stages s
                      WHERE s.secret_id = v.secret_id AND s.version = v.version)
             FROM secret_versions v WHERE v.secret_id = ?1 ORDER BY v.version",
        )?;
        let rows = stmt.query_map(params![id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        rows.map(|row| {
            let (version, key_id, created_at, created_by, stages) = row?;
            let named: Vec<&str> = stages.as_deref().unwrap_or("").split(',').collect();
            Ok(SecretVersionInfo {
                version: u(version),
                key_id,
                created_at: ts(created_at),
                created_by,
                stages: Stage::ALL
                    .into_iter()
                    .filter(|s| named.contains(&s.as_str()))
                    .collect(),
            })
        })
        .collect()
    }

    fn read_sealed(
        &self,
        scope: &SecretScope,
        name: &str,
        selector: Selector,
        actor: &str,
        now: Timestamp,
    ) -> Result<(u64, Sealed), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = live(&tx, scope, name)?;
        let version = match selector {
            Selector::Version(v) => v,
            Selector::Stage(stage) => stage_version(&tx, id, stage)?.ok_or_else(|| {
                StoreError::NotFound(format!("{stage} version of secret {name} in {scope}"))
            })?,
        };
        let sealed = tx
            .query_row(
                "SELECT key_id, wrapped_dek, nonce, ciphertext FROM secret_versions WHERE secret_id = ?1 AND version = ?2",
                params![id, i(version)],
                |r| sealed_row(r, 0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("v{version} of secret {name} in {scope}")))?;
        audit(
            &tx,
            scope,
            actor,
            "secret_read",
            format!("{name} v{version} ({selector})"),
            now,
        )?;
        tx.commit()?;
        Ok((version, sealed))
    }

    fn list_secrets(&self, filter: &SecretFilter) -> Result<Vec<SecretInfo>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {INFO_COLS} FROM secrets
             WHERE (?1 IS NULL OR scope_env = ?1) AND (?2 IS NULL OR scope_app = ?2)
               AND (?3 OR deleted_at IS NULL)
             ORDER BY scope_env, IFNULL(scope_app, ''), name"
        ))?;
        let mut rows = stmt.query(params![filter.env, filter.app, filter.include_deleted])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(info_row(&conn, r)?);
        }
        Ok(out)
    }

    fn delete_secret(
        &self,
        scope: &SecretScope,
        name: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = live(&tx, scope, name)?;
        tx.execute(
            "UPDATE secrets SET deleted_at = ?1 WHERE id = ?2",
            params![i(now.0), id],
        )?;
        tx.execute(
            "DELETE FROM secret_stages WHERE secret_id = ?1",
            params![id],
        )?;
        let versions: i64 = tx.query_row(
            "SELECT COUNT(*) FROM secret_versions WHERE secret_id = ?1",
            params![id],
            |r| r.get(0),
        )?;
        audit(
            &tx,
            scope,
            actor,
            "secret_delete",
            format!("{name} deleted; its {versions} versions are kept for the audit trail"),
            now,
        )?;
        tx.commit()?;
        Ok(())
    }

    fn set_rotation_policy(
        &self,
        scope: &SecretScope,
        name: &str,
        policy: Option<&RotationPolicy>,
        actor: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let id = live(&tx, scope, name)?;
        let every = policy.map(|p| i(u64::try_from(p.every.as_millis()).unwrap_or(u64::MAX)));
        let hook = policy.and_then(|p| p.hook.clone());
        tx.execute(
            "UPDATE secrets SET rotation_policy_ms = ?1, rotation_hook = ?2 WHERE id = ?3",
            params![every, hook, id],
        )?;
        let detail = match policy {
            None => format!("{name}: rotation policy removed"),
            Some(p) => format!(
                "{name}: rotate every {}s{}",
                p.every.as_secs(),
                p.hook
                    .as_ref()
                    .map(|h| format!(" with hook {h:?}"))
                    .unwrap_or_else(|| " (manual, no hook)".to_string())
            ),
        };
        audit(&tx, scope, actor, "secret_policy", detail, now)?;
        tx.commit()?;
        Ok(())
    }

    fn all_sealed_for_rewrap(&self) -> Result<Vec<RewrapItem>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT s.scope_env, s.scope_app, s.name, v.version,
                    v.key_id, v.wrapped_dek, v.nonce, v.ciphertext
             FROM secret_versions v JOIN secrets s ON s.id = v.secret_id
             ORDER BY s.id, v.version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(RewrapItem {
                scope: SecretScope {
                    env: r.get(0)?,
                    app: r.get(1)?,
                },
                name: r.get(2)?,
                version: u(r.get(3)?),
                sealed: sealed_row(r, 4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn rewrap_all(
        &self,
        items: &[RewrapItem],
        actor: &str,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(new_key) = items.first().map(|it| it.sealed.key_id.clone()) else {
            let stored: i64 =
                tx.query_row("SELECT COUNT(*) FROM secret_versions", [], |r| r.get(0))?;
            if stored > 0 {
                return Err(StoreError::Conflict(format!(
                    "{stored} secret versions are stored but none were re-wrapped"
                )));
            }
            return Ok(0);
        };
        let old_keys: Vec<String> = {
            let mut stmt = tx.prepare("SELECT DISTINCT key_id FROM secret_versions ORDER BY 1")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        for it in items {
            if it.sealed.key_id != new_key {
                return Err(StoreError::Conflict(format!(
                    "re-wrapped data keys name two master keys ({new_key} and {})",
                    it.sealed.key_id
                )));
            }
            let id = find(&tx, &it.scope, &it.name)?
                .map(|(id, _)| id)
                .ok_or_else(|| not_found(&it.scope, &it.name))?;
            // Matching nonce and ciphertext too: a rewrap must never change a value, and an
            // item built from stale bytes must not overwrite newer ones.
            let changed = tx.execute(
                "UPDATE secret_versions SET key_id = ?1, wrapped_dek = ?2
                 WHERE secret_id = ?3 AND version = ?4 AND nonce = ?5 AND ciphertext = ?6",
                params![
                    it.sealed.key_id,
                    it.sealed.wrapped_dek,
                    id,
                    i(it.version),
                    it.sealed.nonce,
                    it.sealed.ciphertext
                ],
            )?;
            if changed != 1 {
                return Err(StoreError::Conflict(format!(
                    "v{} of secret {} in {} does not match the re-wrapped bytes (it changed, or the value would)",
                    it.version, it.name, it.scope
                )));
            }
        }
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM secret_versions WHERE key_id != ?1",
            params![new_key],
            |r| r.get(0),
        )?;
        if left > 0 {
            // Committing now would leave values that only the old key opens, after which the
            // operator would destroy it.
            return Err(StoreError::Conflict(format!(
                "{left} secret versions are not re-wrapped (stored since they were read?); nothing was changed, run the rotation again"
            )));
        }
        let old_keys: Vec<&str> = old_keys
            .iter()
            .map(String::as_str)
            .filter(|k| *k != new_key)
            .collect();
        // Not tied to one app or environment: the master key covers them all.
        insert_audit(
            &tx,
            &AuditEntry {
                at: now,
                actor: actor.to_string(),
                action: "secret_master_key_rotate".to_string(),
                app: None,
                env: None,
                detail: format!(
                    "{} data keys re-wrapped from master key {} to {new_key}",
                    items.len(),
                    if old_keys.is_empty() {
                        "(none)".to_string()
                    } else {
                        old_keys.join(", ")
                    }
                ),
            },
        )?;
        tx.commit()?;
        Ok(items.len())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rollgate_secrets::{MasterKey, aad, open, rewrap, seal};

    use super::*;
    use crate::{Filter, Store};

    const ADA: &str = "ada";

    fn store(dir: &Path) -> SqliteStore {
        SqliteStore::open(&dir.join("state.db")).unwrap()
    }

    /// Seals `value` for the next version of (scope, name) and stores it.
    fn put(
        s: &SqliteStore,
        key: &MasterKey,
        scope: &SecretScope,
        name: &str,
        value: &str,
        stage: NewVersionStage,
        at: u64,
    ) -> u64 {
        let version = s.next_secret_version(scope, name).unwrap();
        let sealed = seal(key, value.as_bytes(), &aad(scope, name, version)).unwrap();
        s.put_secret_version(
            &NewSecretVersion {
                scope,
                name,
                version,
                sealed: &sealed,
                stage,
                actor: ADA,
            },
            Timestamp(at),
        )
        .unwrap()
    }

    fn get(
        s: &SqliteStore,
        key: &MasterKey,
        scope: &SecretScope,
        name: &str,
        sel: Selector,
    ) -> (u64, String) {
        let (v, sealed) = s
            .read_sealed(scope, name, sel, "reader", Timestamp(9))
            .unwrap();
        let plain = open(key, &sealed, &aad(scope, name, v)).unwrap();
        (v, String::from_utf8(plain.to_vec()).unwrap())
    }

    fn actions(s: &SqliteStore) -> Vec<String> {
        let mut a: Vec<String> = s
            .audit(&Filter {
                limit: Some(1000),
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        a.reverse();
        a
    }

    const CURRENT: Selector = Selector::Stage(Stage::Current);

    #[test]
    fn set_moves_current_to_previous_and_rotation_promotes_pending() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let scope = SecretScope::app("prod", "api");
        assert_eq!(s.next_secret_version(&scope, "db").unwrap(), 1);
        assert_eq!(
            put(&s, &key, &scope, "db", "one", NewVersionStage::Current, 10),
            1
        );
        assert_eq!(
            put(&s, &key, &scope, "db", "two", NewVersionStage::Current, 20),
            2
        );
        let info = s.secret_info(&scope, "db").unwrap();
        assert_eq!(
            (info.current, info.previous, info.pending),
            (Some(2), Some(1), None)
        );
        assert_eq!(info.current_since, Some(Timestamp(20)));
        assert_eq!(get(&s, &key, &scope, "db", CURRENT), (2, "two".into()));
        assert_eq!(
            get(&s, &key, &scope, "db", Selector::Stage(Stage::Previous)),
            (1, "one".into())
        );

        // A rotation: the pending value is stored but not used until promoted.
        assert_eq!(
            put(
                &s,
                &key,
                &scope,
                "db",
                "three",
                NewVersionStage::Pending,
                30
            ),
            3
        );
        assert_eq!(get(&s, &key, &scope, "db", CURRENT), (2, "two".into()));
        assert_eq!(
            get(&s, &key, &scope, "db", Selector::Stage(Stage::Pending)),
            (3, "three".into())
        );
        s.promote_pending(&scope, "db", 3, "rotator", Timestamp(40))
            .unwrap();
        let info = s.secret_info(&scope, "db").unwrap();
        assert_eq!(
            (info.current, info.previous, info.pending),
            (Some(3), Some(2), None)
        );
        assert_eq!(info.current_since, Some(Timestamp(40)));
        assert_eq!(info.latest_version, 3);
        assert_eq!(
            get(&s, &key, &scope, "db", Selector::Version(1)),
            (1, "one".into())
        );

        let history = s.secret_versions(&scope, "db").unwrap();
        let stages: Vec<(u64, Vec<Stage>)> = history
            .iter()
            .map(|v| (v.version, v.stages.clone()))
            .collect();
        assert_eq!(
            stages,
            vec![
                (1, vec![]),
                (2, vec![Stage::Previous]),
                (3, vec![Stage::Current])
            ]
        );
        assert!(
            history
                .iter()
                .all(|v| v.key_id == key.key_id() && v.created_by == ADA)
        );
        assert_eq!(
            actions(&s),
            [
                "secret_set",
                "secret_set",
                "secret_read",
                "secret_read",
                "secret_rotation_started",
                "secret_read",
                "secret_read",
                "secret_rotate",
                "secret_read"
            ]
        );
        let audit = s.audit(&Filter::default()).unwrap();
        let rotate = audit.iter().find(|e| e.action == "secret_rotate").unwrap();
        assert_eq!(rotate.actor, "rotator");
        assert_eq!(
            (rotate.env.as_deref(), rotate.app.as_deref()),
            (Some("prod"), Some("api"))
        );
        assert!(rotate.detail.contains("v3") && rotate.detail.contains("v2 is previous"));
        for e in &audit {
            for value in ["one", "two", "three"] {
                assert!(!e.detail.contains(value), "{e:?}");
            }
        }
    }

    #[test]
    fn failed_rotation_is_discarded_and_current_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let scope = SecretScope::env("prod");
        put(
            &s,
            &key,
            &scope,
            "api_key",
            "old",
            NewVersionStage::Current,
            1,
        );
        let pending = put(
            &s,
            &key,
            &scope,
            "api_key",
            "new",
            NewVersionStage::Pending,
            2,
        );
        // A second rotation cannot start while one is pending.
        let version = s.next_secret_version(&scope, "api_key").unwrap();
        let sealed = seal(&key, b"newer", &aad(&scope, "api_key", version)).unwrap();
        let err = s
            .put_secret_version(
                &NewSecretVersion {
                    scope: &scope,
                    name: "api_key",
                    version,
                    sealed: &sealed,
                    stage: NewVersionStage::Pending,
                    actor: ADA,
                },
                Timestamp(3),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("v2 is pending"), "{err}");
        // Promoting or discarding another version than the pending one is refused.
        for err in [
            s.promote_pending(&scope, "api_key", 1, ADA, Timestamp(4))
                .unwrap_err(),
            s.discard_pending(&scope, "api_key", 1, ADA, Timestamp(4))
                .unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        }
        s.discard_pending(&scope, "api_key", pending, "rotator", Timestamp(5))
            .unwrap();
        let info = s.secret_info(&scope, "api_key").unwrap();
        assert_eq!(
            (info.current, info.pending, info.previous),
            (Some(1), None, None)
        );
        assert_eq!(get(&s, &key, &scope, "api_key", CURRENT), (1, "old".into()));
        // The discarded value stays in the history, and its number is not reused.
        assert_eq!(s.secret_versions(&scope, "api_key").unwrap().len(), 2);
        assert_eq!(s.next_secret_version(&scope, "api_key").unwrap(), 3);
        let err = s
            .promote_pending(&scope, "api_key", pending, ADA, Timestamp(6))
            .unwrap_err();
        assert!(err.to_string().contains("no pending version"), "{err}");
        assert!(actions(&s).contains(&"secret_rotation_discarded".to_string()));
    }

    #[test]
    fn a_version_number_already_taken_conflicts_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let scope = SecretScope::app("staging", "api");
        put(&s, &key, &scope, "token", "a", NewVersionStage::Current, 1);
        let sealed = seal(&key, b"b", &aad(&scope, "token", 1)).unwrap();
        let err = s
            .put_secret_version(
                &NewSecretVersion {
                    scope: &scope,
                    name: "token",
                    version: 1,
                    sealed: &sealed,
                    stage: NewVersionStage::Current,
                    actor: ADA,
                },
                Timestamp(2),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("next version is v2"), "{err}");
        assert_eq!(s.secret_versions(&scope, "token").unwrap().len(), 1);
        assert_eq!(actions(&s), ["secret_set"]);
    }

    #[test]
    fn rows_moved_to_another_secret_do_not_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let prod = SecretScope::app("prod", "api");
        let dev = SecretScope::app("dev", "api");
        put(
            &s,
            &key,
            &prod,
            "db",
            "prod-password",
            NewVersionStage::Current,
            1,
        );
        put(
            &s,
            &key,
            &dev,
            "db",
            "dev-password",
            NewVersionStage::Current,
            2,
        );
        // Someone with write access to the file copies prod's row over dev's.
        s.conn()
            .execute_batch(
                "UPDATE secret_versions SET wrapped_dek = (SELECT wrapped_dek FROM secret_versions WHERE secret_id = 1),
                   nonce = (SELECT nonce FROM secret_versions WHERE secret_id = 1),
                   ciphertext = (SELECT ciphertext FROM secret_versions WHERE secret_id = 1)
                 WHERE secret_id = 2",
            )
            .unwrap();
        let (v, sealed) = s
            .read_sealed(&dev, "db", CURRENT, ADA, Timestamp(3))
            .unwrap();
        let err = open(&key, &sealed, &aad(&dev, "db", v)).unwrap_err();
        assert!(
            matches!(err, rollgate_secrets::SecretError::Decrypt { .. }),
            "{err}"
        );
    }

    #[test]
    fn delete_is_soft_and_a_new_set_continues_the_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let scope = SecretScope::app("prod", "api");
        put(&s, &key, &scope, "db", "one", NewVersionStage::Current, 1);
        put(&s, &key, &scope, "db", "two", NewVersionStage::Current, 2);
        s.delete_secret(&scope, "db", ADA, Timestamp(3)).unwrap();

        let err = s
            .read_sealed(&scope, "db", CURRENT, ADA, Timestamp(4))
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
        let err = s
            .read_sealed(&scope, "db", Selector::Version(1), ADA, Timestamp(4))
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err}");
        assert!(matches!(
            s.delete_secret(&scope, "db", ADA, Timestamp(4)),
            Err(StoreError::NotFound(_))
        ));
        assert!(s.list_secrets(&SecretFilter::default()).unwrap().is_empty());
        let all = s
            .list_secrets(&SecretFilter {
                include_deleted: true,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].deleted_at, Some(Timestamp(3)));
        assert_eq!((all[0].current, all[0].previous), (None, None));
        // History survives for the audit trail.
        assert_eq!(s.secret_versions(&scope, "db").unwrap().len(), 2);

        assert_eq!(
            put(&s, &key, &scope, "db", "three", NewVersionStage::Current, 5),
            3
        );
        let info = s.secret_info(&scope, "db").unwrap();
        assert_eq!(
            (info.deleted_at, info.current, info.previous),
            (None, Some(3), None)
        );
        assert_eq!(get(&s, &key, &scope, "db", CURRENT), (3, "three".into()));
        let audit = s.audit(&Filter::default()).unwrap();
        let set = audit.iter().find(|e| e.action == "secret_set").unwrap();
        assert!(set.detail.contains("restored after delete"), "{set:?}");
        assert!(audit.iter().any(|e| e.action == "secret_delete"));
    }

    #[test]
    fn env_wide_and_app_scopes_are_separate_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let env = SecretScope::env("prod");
        let api = SecretScope::app("prod", "api");
        let staging = SecretScope::app("staging", "api");
        put(
            &s,
            &key,
            &env,
            "db",
            "env-wide",
            NewVersionStage::Current,
            1,
        );
        put(
            &s,
            &key,
            &api,
            "db",
            "api-only",
            NewVersionStage::Current,
            2,
        );
        put(
            &s,
            &key,
            &staging,
            "db",
            "staging",
            NewVersionStage::Current,
            3,
        );
        put(&s, &key, &api, "api_key", "k", NewVersionStage::Current, 4);
        assert_eq!(get(&s, &key, &env, "db", CURRENT), (1, "env-wide".into()));
        assert_eq!(get(&s, &key, &api, "db", CURRENT), (1, "api-only".into()));

        let names = |f: SecretFilter| -> Vec<String> {
            s.list_secrets(&f)
                .unwrap()
                .into_iter()
                .map(|i| format!("{}:{}", i.scope, i.name))
                .collect()
        };
        assert_eq!(
            names(SecretFilter::default()),
            [
                "prod/*:db",
                "prod/api:api_key",
                "prod/api:db",
                "staging/api:db"
            ]
        );
        assert_eq!(
            names(SecretFilter {
                env: Some("prod".into()),
                app: Some("api".into()),
                ..Default::default()
            }),
            ["prod/api:api_key", "prod/api:db"]
        );
        assert!(matches!(
            s.secret_info(&SecretScope::app("prod", "web"), "db"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn rotation_policy_is_stored_and_audited() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let key = MasterKey::generate().unwrap();
        let scope = SecretScope::env("prod");
        assert!(matches!(
            s.set_rotation_policy(&scope, "db", None, ADA, Timestamp(1)),
            Err(StoreError::NotFound(_))
        ));
        put(&s, &key, &scope, "db", "v", NewVersionStage::Current, 1);
        let policy = RotationPolicy {
            every: Duration::from_secs(7 * 24 * 3600),
            hook: Some("./rotate-db.sh".into()),
        };
        s.set_rotation_policy(&scope, "db", Some(&policy), ADA, Timestamp(2))
            .unwrap();
        assert_eq!(s.secret_info(&scope, "db").unwrap().rotation, Some(policy));
        s.set_rotation_policy(&scope, "db", None, ADA, Timestamp(3))
            .unwrap();
        assert_eq!(s.secret_info(&scope, "db").unwrap().rotation, None);
        assert_eq!(
            actions(&s),
            ["secret_set", "secret_policy", "secret_policy"]
        );
    }

    fn key_ids(s: &SqliteStore) -> Vec<String> {
        s.all_sealed_for_rewrap()
            .unwrap()
            .into_iter()
            .map(|it| it.sealed.key_id)
            .collect()
    }

    #[test]
    fn master_key_rotation_rewraps_every_version_and_keeps_the_values() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let api = SecretScope::app("prod", "api");
        let env = SecretScope::env("staging");
        put(&s, &old, &api, "db", "a1", NewVersionStage::Current, 1);
        put(&s, &old, &api, "db", "a2", NewVersionStage::Current, 2);
        put(&s, &old, &env, "token", "t1", NewVersionStage::Pending, 3);
        put(&s, &old, &env, "gone", "g1", NewVersionStage::Current, 4);
        s.delete_secret(&env, "gone", ADA, Timestamp(5)).unwrap();

        let before = s.all_sealed_for_rewrap().unwrap();
        assert_eq!(before.len(), 4, "deleted secrets are re-wrapped too");
        let items: Vec<RewrapItem> = before
            .iter()
            .map(|it| RewrapItem {
                sealed: rewrap(&old, &new, &it.sealed).unwrap(),
                ..it.clone()
            })
            .collect();
        assert_eq!(s.rewrap_all(&items, "operator", Timestamp(6)).unwrap(), 4);

        let after = s.all_sealed_for_rewrap().unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(
                (&a.scope, &a.name, a.version),
                (&b.scope, &b.name, b.version)
            );
            assert_eq!(
                a.sealed.ciphertext, b.sealed.ciphertext,
                "value bytes untouched"
            );
            assert_eq!(a.sealed.nonce, b.sealed.nonce);
            assert_ne!(a.sealed.wrapped_dek, b.sealed.wrapped_dek);
            assert_eq!(a.sealed.key_id, new.key_id());
        }
        assert_eq!(get(&s, &new, &api, "db", CURRENT), (2, "a2".into()));
        assert_eq!(
            get(&s, &new, &env, "token", Selector::Stage(Stage::Pending)),
            (1, "t1".into())
        );
        let (_, sealed) = s
            .read_sealed(&api, "db", CURRENT, ADA, Timestamp(7))
            .unwrap();
        assert!(matches!(
            open(&old, &sealed, &aad(&api, "db", 2)),
            Err(rollgate_secrets::SecretError::WrongMasterKey { .. })
        ));
        let entry = s
            .audit(&Filter::default())
            .unwrap()
            .into_iter()
            .find(|e| e.action == "secret_master_key_rotate")
            .unwrap();
        assert_eq!(
            (entry.actor.as_str(), entry.env.clone()),
            ("operator", None)
        );
        assert!(
            entry.detail.contains(old.key_id()) && entry.detail.contains(new.key_id()),
            "{entry:?}"
        );
    }

    #[test]
    fn master_key_rotation_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let scope = SecretScope::app("prod", "api");
        put(&s, &old, &scope, "a", "1", NewVersionStage::Current, 1);
        put(&s, &old, &scope, "b", "2", NewVersionStage::Current, 2);
        let rewrapped = |items: Vec<RewrapItem>| -> Vec<RewrapItem> {
            items
                .into_iter()
                .map(|it| RewrapItem {
                    sealed: rewrap(&old, &new, &it.sealed).unwrap(),
                    ..it
                })
                .collect()
        };
        let items = rewrapped(s.all_sealed_for_rewrap().unwrap());
        let audit_before = actions(&s).len();

        // A version stored after the read would stay under the old key: refused, as a whole.
        put(&s, &old, &scope, "c", "3", NewVersionStage::Current, 3);
        let err = s.rewrap_all(&items, ADA, Timestamp(4)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(key_ids(&s).iter().all(|k| k == old.key_id()));

        // An item whose value bytes differ from the stored ones: refused, as a whole.
        let mut items = rewrapped(s.all_sealed_for_rewrap().unwrap());
        items[1].sealed.ciphertext[0] ^= 1;
        let err = s.rewrap_all(&items, ADA, Timestamp(5)).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(key_ids(&s).iter().all(|k| k == old.key_id()));

        // Items under two different new keys: refused.
        let mut items = rewrapped(s.all_sealed_for_rewrap().unwrap());
        let third = MasterKey::generate().unwrap();
        items[2].sealed =
            rewrap(&old, &third, &s.all_sealed_for_rewrap().unwrap()[2].sealed).unwrap();
        assert!(matches!(
            s.rewrap_all(&items, ADA, Timestamp(6)),
            Err(StoreError::Conflict(_))
        ));
        assert!(key_ids(&s).iter().all(|k| k == old.key_id()));
        assert_eq!(
            actions(&s).len(),
            audit_before + 1,
            "only the put of c was audited"
        );

        let items = rewrapped(s.all_sealed_for_rewrap().unwrap());
        assert_eq!(s.rewrap_all(&items, ADA, Timestamp(7)).unwrap(), 3);
        assert!(key_ids(&s).iter().all(|k| k == new.key_id()));
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Every file of the database: the main file, the write-ahead log and its index.
    fn database_bytes(db: &Path) -> Vec<(String, Vec<u8>)> {
        ["", "-wal", "-shm", "-journal"]
            .iter()
            .filter_map(|suffix| {
                let path = format!("{}{suffix}", db.display());
                std::fs::read(&path).ok().map(|b| (path, b))
            })
            .collect()
    }

    #[test]
    fn database_file_contains_no_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let key = MasterKey::generate().unwrap();
        let new_key = MasterKey::generate().unwrap();
        let values = [
            "PLAINTEXT-db-password-4f1c9a",
            "PLAINTEXT-api-key-88e2d0b7",
            "PLAINTEXT-hmac-secret-0c3e51",
            "PLAINTEXT-rotated-value-9b77aa",
            "PLAINTEXT-deleted-value-52d1e3",
        ];
        {
            let s = SqliteStore::open(&db).unwrap();
            let api = SecretScope::app("prod", "api");
            let env = SecretScope::env("prod");
            put(
                &s,
                &key,
                &api,
                "database_password",
                values[0],
                NewVersionStage::Current,
                1,
            );
            put(
                &s,
                &key,
                &api,
                "api_key",
                values[1],
                NewVersionStage::Current,
                2,
            );
            put(
                &s,
                &key,
                &env,
                "hmac",
                values[2],
                NewVersionStage::Current,
                3,
            );
            let v = put(
                &s,
                &key,
                &api,
                "api_key",
                values[3],
                NewVersionStage::Pending,
                4,
            );
            s.promote_pending(&api, "api_key", v, ADA, Timestamp(5))
                .unwrap();
            put(
                &s,
                &key,
                &env,
                "old",
                values[4],
                NewVersionStage::Current,
                6,
            );
            s.delete_secret(&env, "old", ADA, Timestamp(7)).unwrap();
            for (scope, name) in [
                (&api, "database_password"),
                (&api, "api_key"),
                (&env, "hmac"),
            ] {
                get(&s, &key, scope, name, CURRENT);
            }
            let items: Vec<RewrapItem> = s
                .all_sealed_for_rewrap()
                .unwrap()
                .into_iter()
                .map(|it| RewrapItem {
                    sealed: rewrap(&key, &new_key, &it.sealed).unwrap(),
                    ..it
                })
                .collect();
            s.rewrap_all(&items, ADA, Timestamp(8)).unwrap();
            assert_eq!(get(&s, &new_key, &api, "api_key", CURRENT).1, values[3]);

            // While open, most of it sits in the write-ahead log.
            let files = database_bytes(&db);
            assert!(
                files.iter().any(|(p, _)| p.ends_with("-wal")),
                "WAL expected"
            );
            for (path, bytes) in &files {
                for value in values {
                    assert!(
                        !contains(bytes, value.as_bytes()),
                        "{value} found in {path}"
                    );
                }
            }
        }
        let files = database_bytes(&db);
        let total: usize = files.iter().map(|(_, b)| b.len()).sum();
        assert!(total > 4096, "the scan must see the data: {total} bytes");
        for (path, bytes) in &files {
            for value in values {
                assert!(
                    !contains(bytes, value.as_bytes()),
                    "{value} found in {path}"
                );
                // Nor a long fragment of it, in case a value were ever split or re-encoded.
                assert!(
                    !contains(bytes, &value.as_bytes()[9..]),
                    "{value} found in {path}"
                );
            }
        }
        // The names and the audit trail are there, so the scan looked at the right file.
        let main = &files[0].1;
        assert!(contains(main, b"database_password") && contains(main, b"secret_read"));
        assert!(contains(main, new_key.key_id().as_bytes()));
    }

    #[test]
    fn a_version_1_database_migrates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let marker = AuditEntry {
            at: Timestamp(1),
            actor: "ada".into(),
            action: "deploy".into(),
            app: Some("api".into()),
            env: Some("prod".into()),
            detail: "v1 written by rollgate with schema 1".into(),
        };
        {
            SqliteStore::open(&db)
                .unwrap()
                .record_audit(&marker)
                .unwrap();
        }
        {
            // Turn it into what a rollgate with schema 1 left: no secret tables, version 1.
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(
                "DROP TABLE secret_stages; DROP TABLE secret_versions; DROP TABLE secrets;
                 UPDATE meta SET value = '1' WHERE key = 'schema_version';",
            )
            .unwrap();
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'secret%'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 0);
        }
        let s = SqliteStore::open(&db).unwrap();
        let version: String = s
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(version, "2");
        assert_eq!(s.audit(&Filter::default()).unwrap(), vec![marker]);
        let key = MasterKey::generate().unwrap();
        let scope = SecretScope::env("prod");
        put(
            &s,
            &key,
            &scope,
            "db",
            "after-migration",
            NewVersionStage::Current,
            2,
        );
        drop(s);
        // Reopening a version 2 database is a no-op.
        let s = SqliteStore::open(&db).unwrap();
        assert_eq!(
            get(&s, &key, &scope, "db", CURRENT),
            (1, "after-migration".into())
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        drop(SqliteStore::open(&db).unwrap());
        Connection::open(&db)
            .unwrap()
            .execute(
                "UPDATE meta SET value = '3' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        let err = SqliteStore::open(&db).err().unwrap();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("schema version 3"), "{err}");
    }
}
