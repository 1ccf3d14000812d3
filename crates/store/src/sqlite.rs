//! The embedded store: one SQLite file in WAL mode, opened exclusively by one `rollgate serve`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rollgate_core::rollout::NewRollout;
use rollgate_core::{Alias, Rollout, Timestamp};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use crate::{
    AliasSet, AuditEntry, EventRecord, Filter, NewDeploy, Store, StoreError, Transition,
    VersionRecord,
};

const SCHEMA_VERSION: i64 = 2;

/// Migrations, in order: `(from, sql)` brings a database at version `from` to `from + 1`.
/// Each only adds, so data written by an older rollgate stays valid; a database newer than
/// [`SCHEMA_VERSION`] is refused rather than guessed at.
const MIGRATIONS: &[(i64, &str)] = &[(1, crate::secrets::SCHEMA_V2)];

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    app TEXT NOT NULL, env TEXT NOT NULL, number INTEGER NOT NULL,
    digest TEXT NOT NULL, label TEXT, vars TEXT NOT NULL,
    created_at INTEGER NOT NULL, created_by TEXT NOT NULL,
    PRIMARY KEY (app, env, number)
);
CREATE TABLE IF NOT EXISTS aliases (
    app TEXT NOT NULL, env TEXT NOT NULL, alias TEXT NOT NULL,
    version INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (app, env, alias)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app TEXT NOT NULL, env TEXT NOT NULL, version INTEGER NOT NULL,
    phase TEXT NOT NULL, data TEXT NOT NULL,
    started_at INTEGER NOT NULL, finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS rollouts_by_app ON rollouts (app, env, id);
CREATE INDEX IF NOT EXISTS rollouts_by_phase ON rollouts (phase);
CREATE TABLE IF NOT EXISTS rollout_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id INTEGER NOT NULL REFERENCES rollouts (id),
    at INTEGER NOT NULL, phase TEXT NOT NULL, kind TEXT NOT NULL,
    message TEXT NOT NULL, data TEXT
);
CREATE INDEX IF NOT EXISTS events_by_rollout ON rollout_events (rollout_id, id);
CREATE TABLE IF NOT EXISTS locks (
    app TEXT NOT NULL, env TEXT NOT NULL, holder TEXT NOT NULL,
    rollout_id INTEGER NOT NULL, acquired_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (app, env)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    app TEXT, env TEXT, detail TEXT NOT NULL
);
"#;

/// SQLite implementation of [`Store`]. One connection behind a mutex: every call is a short
/// local transaction, so contention is not worth a pool.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and takes it exclusively, so that a
    /// second control plane on the same data directory fails at once instead of racing.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        // Nobody else may hold the file, so waiting long for a lock only delays the error.
        conn.busy_timeout(std::time::Duration::from_millis(200))?;
        let in_use = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                StoreError::InUse {
                    path: path.display().to_string(),
                }
            }
            _ => StoreError::Db(e),
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(in_use)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        // The exclusive lock is taken by the first write.
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .map_err(in_use)?;
        conn.execute_batch(SCHEMA)?;
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        // A new file has just been given the version 1 tables by SCHEMA.
        let from = match found {
            None => 1,
            Some(v) => v.parse::<i64>().map_err(|_| {
                StoreError::Corrupt(format!("schema version {v:?} is not a number"))
            })?,
        };
        if from > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "schema version {from} is not supported by this rollgate (expects {SCHEMA_VERSION})"
            )));
        }
        // All steps and the new version number in one transaction: a crash mid-way leaves the
        // old version, which the next start migrates again.
        let tx = conn.transaction()?;
        for (step_from, sql) in MIGRATIONS {
            if *step_from >= from {
                tx.execute_batch(sql)?;
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![SCHEMA_VERSION.to_string()],
        )?;
        tx.commit()?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction (rusqlite rolls
        // back on drop), so a poisoned mutex is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn ts(v: i64) -> Timestamp {
    Timestamp(u64::try_from(v).unwrap_or(0))
}

pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn rollout_from_json(data: &str) -> Result<Rollout, StoreError> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt(format!("rollout row: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn read_aliases(tx: &Connection, app: &str, env: &str) -> Result<AliasSet, StoreError> {
    let mut stmt =
        tx.prepare_cached("SELECT alias, version FROM aliases WHERE app = ?1 AND env = ?2")?;
    let mut set = AliasSet::default();
    let rows = stmt.query_map(params![app, env], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (name, v) = row?;
        let alias = Alias::parse(&name)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown alias {name:?}")))?;
        set.set(alias, Some(u64::try_from(v).unwrap_or(0)));
    }
    Ok(set)
}

fn write_aliases(
    tx: &Transaction<'_>,
    app: &str,
    env: &str,
    changes: &[(Alias, Option<u64>)],
    now: Timestamp,
) -> Result<(), StoreError> {
    for (alias, version) in changes {
        match version {
            Some(v) => tx.execute(
                "INSERT INTO aliases (app, env, alias, version, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (app, env, alias) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at",
                params![app, env, alias.as_str(), i(*v), i(now.0)],
            )?,
            None => tx.execute(
                "DELETE FROM aliases WHERE app = ?1 AND env = ?2 AND alias = ?3",
                params![app, env, alias.as_str()],
            )?,
        };
    }
    Ok(())
}

fn insert_event(tx: &Transaction<'_>, e: &EventRecord) -> Result<(), StoreError> {
    let data = e.data.as_ref().map(to_json).transpose()?;
    tx.execute(
        "INSERT INTO rollout_events (rollout_id, at, phase, kind, message, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![i(e.rollout_id), i(e.at.0), e.phase, e.kind, e.message, data],
    )?;
    Ok(())
}

pub(crate) fn insert_audit(tx: &Connection, a: &AuditEntry) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, app, env, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![i(a.at.0), a.actor, a.action, a.app, a.env, a.detail],
    )?;
    Ok(())
}

/// The unexpired lock on (app, env), if any.
fn live_lock(
    tx: &Connection,
    app: &str,
    env: &str,
    now: Timestamp,
) -> Result<Option<(String, u64)>, StoreError> {
    let row: Option<(String, i64)> = tx
        .query_row(
            "SELECT holder, rollout_id FROM locks WHERE app = ?1 AND env = ?2 AND expires_at > ?3",
            params![app, env, i(now.0)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.map(|(h, id)| (h, u64::try_from(id).unwrap_or(0))))
}

fn version_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(VersionRecord, String)> {
    Ok((
        VersionRecord {
            app: r.get(0)?,
            env: r.get(1)?,
            number: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            digest: r.get(3)?,
            label: r.get(4)?,
            vars: Default::default(),
            created_at: ts(r.get(6)?),
            created_by: r.get(7)?,
        },
        r.get(5)?,
    ))
}

fn with_vars((mut v, vars): (VersionRecord, String)) -> Result<VersionRecord, StoreError> {
    v.vars = serde_json::from_str(&vars)
        .map_err(|e| StoreError::Corrupt(format!("version vars: {e}")))?;
    Ok(v)
}

const VERSION_COLS: &str = "app, env, number, digest, label, vars, created_at, created_by";

impl Store for SqliteStore {
    fn create_deploy(
        &self,
        d: &NewDeploy,
        now: Timestamp,
    ) -> Result<(VersionRecord, Rollout), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some((holder, rollout_id)) = live_lock(&tx, &d.app, &d.env, now)? {
            return Err(StoreError::Locked {
                app: d.app.clone(),
                env: d.env.clone(),
                holder,
                rollout_id,
            });
        }
        let version = match d.retry {
            Some(n) => {
                let row = tx
                    .query_row(
                        &format!("SELECT {VERSION_COLS} FROM versions WHERE app = ?1 AND env = ?2 AND number = ?3"),
                        params![d.app, d.env, i(n)],
                        version_row,
                    )
                    .optional()?;
                with_vars(row.ok_or_else(|| {
                    StoreError::NotFound(format!("version {n} of {}/{}", d.app, d.env))
                })?)?
            }
            None => {
                let last: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(number), 0) FROM versions WHERE app = ?1 AND env = ?2",
                    params![d.app, d.env],
                    |r| r.get(0),
                )?;
                let version = VersionRecord {
                    app: d.app.clone(),
                    env: d.env.clone(),
                    number: u64::try_from(last).unwrap_or(0) + 1,
                    digest: d.digest.clone(),
                    label: d.label.clone(),
                    vars: d.vars.clone(),
                    created_at: now,
                    created_by: d.actor.clone(),
                };
                tx.execute(
                    &format!("INSERT INTO versions ({VERSION_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                    params![
                        d.app,
                        d.env,
                        i(version.number),
                        d.digest,
                        d.label,
                        to_json(&d.vars)?,
                        i(now.0),
                        d.actor
                    ],
                )?;
                version
            }
        };
        let number = version.number;
        let aliases = read_aliases(&tx, &d.app, &d.env)?;
        tx.execute(
            "INSERT INTO rollouts (app, env, version, phase, data, started_at) VALUES (?1, ?2, ?3, 'deploying', '{}', ?4)",
            params![d.app, d.env, i(number), i(now.0)],
        )?;
        let id = u64::try_from(tx.last_insert_rowid()).unwrap_or(0);
        let (rollout, actions) = Rollout::start(
            NewRollout {
                id,
                app: d.app.clone(),
                env: d.env.clone(),
                version: number,
                from_version: aliases.live,
                prev_blue: aliases.blue,
                strategy: d.strategy.clone(),
                actor: d.actor.clone(),
                monitor: d.monitor,
                steps: d.steps.clone(),
            },
            now,
        );
        tx.execute(
            "UPDATE rollouts SET data = ?1 WHERE id = ?2",
            params![to_json(&rollout)?, i(id)],
        )?;
        let changes = rollgate_core::rollout::alias_changes(&actions);
        write_aliases(&tx, &d.app, &d.env, &changes, now)?;
        let holder = format!("rollout #{id} (v{number} by {})", d.actor);
        tx.execute(
            "INSERT INTO locks (app, env, holder, rollout_id, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (app, env) DO UPDATE SET holder = excluded.holder, rollout_id = excluded.rollout_id,
               acquired_at = excluded.acquired_at, expires_at = excluded.expires_at",
            params![d.app, d.env, holder, i(id), i(now.0), i(now.after(d.lease).0)],
        )?;
        let from = aliases.live.map_or_else(
            || "nothing live yet".to_string(),
            |v| format!("live is v{v}"),
        );
        insert_event(
            &tx,
            &EventRecord {
                rollout_id: id,
                at: now,
                phase: rollout.phase.as_str().to_string(),
                kind: "started".to_string(),
                message: format!(
                    "{} of v{number} by {}; {from}",
                    if d.retry.is_some() { "retry" } else { "deploy" },
                    d.actor
                ),
                data: Some(serde_json::json!({ "digest": version.digest, "label": version.label })),
            },
        )?;
        insert_audit(
            &tx,
            &AuditEntry {
                at: now,
                actor: d.actor.clone(),
                action: if d.retry.is_some() { "retry" } else { "deploy" }.to_string(),
                app: Some(d.app.clone()),
                env: Some(d.env.clone()),
                detail: format!(
                    "v{number} {}{} (rollout #{id})",
                    version.digest,
                    version
                        .label
                        .as_ref()
                        .map(|l| format!(" label {l}"))
                        .unwrap_or_default()
                ),
            },
        )?;
        tx.commit()?;
        Ok((version, rollout))
    }

    fn apply(&self, t: &Transition<'_>) -> Result<(), StoreError> {
        let r = t.rollout;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE rollouts SET phase = ?1, data = ?2, finished_at = ?3 WHERE id = ?4",
            params![
                r.phase.as_str(),
                to_json(r)?,
                r.finished_at.map(|f| i(f.0)),
                i(r.id)
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("rollout #{}", r.id)));
        }
        insert_event(&tx, &t.event)?;
        write_aliases(&tx, &r.app, &r.env, &t.aliases, t.event.at)?;
        if r.phase.is_terminal() {
            tx.execute(
                "DELETE FROM locks WHERE app = ?1 AND env = ?2 AND rollout_id = ?3",
                params![r.app, r.env, i(r.id)],
            )?;
        }
        if let Some(a) = &t.audit {
            insert_audit(&tx, a)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn renew_lock(
        &self,
        app: &str,
        env: &str,
        rollout_id: u64,
        until: Timestamp,
    ) -> Result<(), StoreError> {
        let n = self.conn().execute(
            "UPDATE locks SET expires_at = ?1 WHERE app = ?2 AND env = ?3 AND rollout_id = ?4",
            params![i(until.0), app, env, i(rollout_id)],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "lock of rollout #{rollout_id} on {app}/{env}"
            )));
        }
        Ok(())
    }

    fn set_aliases(
        &self,
        app: &str,
        env: &str,
        changes: &[(Alias, Option<u64>)],
        audit: &AuditEntry,
        now: Timestamp,
    ) -> Result<AliasSet, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some((holder, rollout_id)) = live_lock(&tx, app, env, now)? {
            return Err(StoreError::Locked {
                app: app.to_string(),
                env: env.to_string(),
                holder,
                rollout_id,
            });
        }
        write_aliases(&tx, app, env, changes, now)?;
        insert_audit(&tx, audit)?;
        let set = read_aliases(&tx, app, env)?;
        tx.commit()?;
        Ok(set)
    }

    fn rollout(&self, id: u64) -> Result<Rollout, StoreError> {
        let data: Option<String> = self
            .conn()
            .query_row(
                "SELECT data FROM rollouts WHERE id = ?1",
                params![i(id)],
                |r| r.get(0),
            )
            .optional()?;
        rollout_from_json(&data.ok_or_else(|| StoreError::NotFound(format!("rollout #{id}")))?)
    }

    fn active_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT data FROM rollouts WHERE phase NOT IN ('succeeded', 'rolled_back', 'failed', 'aborted') ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|r| rollout_from_json(&r?)).collect()
    }

    fn rollouts(&self, f: &Filter) -> Result<Vec<Rollout>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT data FROM rollouts WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR env = ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![f.app, f.env, f.limit.unwrap_or(50)], |r| {
            r.get::<_, String>(0)
        })?;
        rows.map(|r| rollout_from_json(&r?)).collect()
    }

    fn events(&self, rollout_id: u64) -> Result<Vec<EventRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT rollout_id, at, phase, kind, message, data FROM rollout_events WHERE rollout_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![i(rollout_id)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        rows.map(|row| {
            let (id, at, phase, kind, message, data) = row?;
            let data = data
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?;
            Ok(EventRecord {
                rollout_id: u64::try_from(id).unwrap_or(0),
                at: ts(at),
                phase,
                kind,
                message,
                data,
            })
        })
        .collect()
    }

    fn aliases(&self, app: &str, env: &str) -> Result<AliasSet, StoreError> {
        read_aliases(&self.conn(), app, env)
    }

    fn all_aliases(&self) -> Result<Vec<(String, String, AliasSet)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT DISTINCT app, env FROM aliases ORDER BY app, env")?;
        let pairs: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        pairs
            .into_iter()
            .map(|(app, env)| {
                let set = read_aliases(&conn, &app, &env)?;
                Ok((app, env, set))
            })
            .collect()
    }

    fn versions(&self, app: &str, env: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {VERSION_COLS} FROM versions WHERE app = ?1 AND env = ?2 ORDER BY number"
        ))?;
        let rows = stmt.query_map(params![app, env], version_row)?;
        rows.map(|r| with_vars(r?)).collect()
    }

    fn version(&self, app: &str, env: &str, number: u64) -> Result<VersionRecord, StoreError> {
        let row = self
            .conn()
            .query_row(
                &format!("SELECT {VERSION_COLS} FROM versions WHERE app = ?1 AND env = ?2 AND number = ?3"),
                params![app, env, i(number)],
                version_row,
            )
            .optional()?;
        with_vars(
            row.ok_or_else(|| StoreError::NotFound(format!("version {number} of {app}/{env}")))?,
        )
    }

    fn record_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        insert_audit(&self.conn(), entry)
    }

    fn audit(&self, f: &Filter) -> Result<Vec<AuditEntry>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT at, actor, action, app, env, detail FROM audit
             WHERE (?1 IS NULL OR app = ?1) AND (?2 IS NULL OR env = ?2) ORDER BY id DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![f.app, f.env, f.limit.unwrap_or(50)], |r| {
            Ok(AuditEntry {
                at: ts(r.get(0)?),
                actor: r.get(1)?,
                action: r.get(2)?,
                app: r.get(3)?,
                env: r.get(4)?,
                detail: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rollgate_core::{Event, Phase};

    use super::*;

    fn deploy(app: &str) -> NewDeploy {
        NewDeploy {
            retry: None,
            app: app.into(),
            env: "staging".into(),
            digest: "sha256:ab".into(),
            label: Some("3f2a9c1".into()),
            vars: [("K".to_string(), "V".to_string())].into(),
            actor: "ada".into(),
            strategy: "blue-green".into(),
            steps: vec![],
            monitor: Duration::from_secs(30),
            lease: Duration::from_secs(30),
        }
    }

    fn finish(s: &SqliteStore, r: &Rollout, e: Event, at: u64) -> Rollout {
        let (next, actions) = r.next(&e, Timestamp(at)).unwrap();
        let aliases = rollgate_core::rollout::alias_changes(&actions);
        s.apply(&Transition {
            rollout: &next,
            event: EventRecord {
                rollout_id: next.id,
                at: Timestamp(at),
                phase: next.phase.as_str().into(),
                kind: "test".into(),
                message: "m".into(),
                data: Some(serde_json::json!({"x": 1})),
            },
            aliases,
            audit: None,
        })
        .unwrap();
        next
    }

    #[test]
    fn deploy_numbers_versions_and_locks_until_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        let (v1, r1) = s.create_deploy(&deploy("api"), Timestamp(1_000)).unwrap();
        assert_eq!((v1.number, r1.phase), (1, Phase::Deploying));
        assert_eq!(s.aliases("api", "staging").unwrap().green, Some(1));

        let err = s
            .create_deploy(&deploy("api"), Timestamp(2_000))
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Locked { rollout_id, .. } if rollout_id == r1.id),
            "{err}"
        );
        assert!(err.to_string().contains("v1 by ada"));
        // Another app is not blocked.
        s.create_deploy(&deploy("web"), Timestamp(2_000)).unwrap();

        let r = finish(&s, &r1, Event::InstancesHealthy, 3_000);
        let r = finish(&s, &r, Event::SmokePassed, 3_001);
        let r = finish(&s, &r, Event::Switched, 3_002);
        let r = finish(&s, &r, Event::MonitorElapsed, 4_000);
        assert_eq!(s.rollout(r.id).unwrap(), r);
        assert_eq!(
            s.aliases("api", "staging").unwrap(),
            AliasSet {
                live: Some(1),
                blue: None,
                green: None
            }
        );
        assert_eq!(s.events(r.id).unwrap().len(), 5);

        let (v2, r2) = s.create_deploy(&deploy("api"), Timestamp(5_000)).unwrap();
        assert_eq!(v2.number, 2);
        assert_eq!(r2.from_version, Some(1));
        assert_eq!(s.version("api", "staging", 2).unwrap().vars["K"], "V");
        assert_eq!(s.active_rollouts().unwrap().len(), 2);
        assert_eq!(
            s.audit(&Filter {
                app: Some("api".into()),
                ..Default::default()
            })
            .unwrap()
            .len(),
            2
        );
    }

    #[test]
    fn expired_locks_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("state.db")).unwrap();
        s.create_deploy(&deploy("api"), Timestamp(1_000)).unwrap();
        // The lease is 30s; a crashed holder stops renewing.
        let (v2, _) = s.create_deploy(&deploy("api"), Timestamp(31_001)).unwrap();
        assert_eq!(v2.number, 2);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let _first = SqliteStore::open(&path).unwrap();
        let err = SqliteStore::open(&path).err().unwrap();
        assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    }

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let id = {
            let s = SqliteStore::open(&path).unwrap();
            s.create_deploy(&deploy("api"), Timestamp(1)).unwrap().1.id
        };
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.active_rollouts().unwrap()[0].id, id);
        assert_eq!(s.versions("api", "staging").unwrap().len(), 1);
    }
}
