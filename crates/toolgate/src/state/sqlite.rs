//! The embedded state store: SQLite in WAL mode at `state_dir/toolgate.db`, created and
//! migrated on open. Migrations are numbered; a database written by a newer toolgate (a
//! schema version this binary does not know) is refused with a clear error rather than
//! guessed at.
//!
//! One connection behind a mutex: the store sees only administrative traffic (grants and
//! policies change at human speed), and callers on async code run it on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{PolicyScope, PolicyVersion, Result, StateError, StateStore, StoredGrant, Timestamp};

pub const DB_FILE: &str = "toolgate.db";

/// Schema migrations, in order; `MIGRATIONS[n]` takes version n to n + 1.
const MIGRATIONS: &[&str] = &[
    // 1: grants and policy versions.
    "CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        server TEXT NOT NULL,
        token_hash BLOB NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        rotated_at INTEGER,
        revoked_at INTEGER
     );
     CREATE TABLE policy_versions (
        server TEXT NOT NULL,
        grant_id TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL,
        document TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (server, grant_id, version)
     );
     CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
];

pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(state_dir).map_err(|e| {
            StateError(format!(
                "cannot create state directory {}: {e}",
                state_dir.display()
            ))
        })?;
        let path = state_dir.join(DB_FILE);
        let conn = Connection::open(&path)
            .map_err(|e| StateError(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Grants and policies change rarely and must not be lost: commit to disk each time.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&conn, &path)?;
        Ok(SqliteStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: SQLite rolled back.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StateError(format!(
            "{} has schema version {current}, newer than this toolgate knows ({known}): upgrade toolgate, or point it at another state_dir",
            path.display()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
        tracing::info!(db = %path.display(), version = i + 1, "state store migrated");
    }
    Ok(())
}

fn grant_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredGrant> {
    let hash: Vec<u8> = row.get(3)?;
    let mut token_hash = [0u8; 32];
    if hash.len() == 32 {
        token_hash.copy_from_slice(&hash);
    }
    Ok(StoredGrant {
        id: row.get(0)?,
        label: row.get(1)?,
        server: row.get(2)?,
        token_hash,
        created_at: row.get(4)?,
        rotated_at: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

const GRANT_COLUMNS: &str = "id, label, server, token_hash, created_at, rotated_at, revoked_at";

fn version_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<PolicyVersion> {
    let grant: String = row.get(1)?;
    Ok(PolicyVersion {
        scope: PolicyScope {
            server: row.get(0)?,
            grant: (!grant.is_empty()).then_some(grant),
        },
        version: row.get::<_, i64>(2)? as u64,
        document: row.get(3)?,
        created_at: row.get(4)?,
    })
}

impl StateStore for SqliteStore {
    fn insert_grant(&self, g: &StoredGrant) -> Result<()> {
        self.conn().execute(
            "INSERT INTO grants (id, label, server, token_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![g.id, g.label, g.server, g.token_hash.to_vec(), g.created_at],
        )?;
        Ok(())
    }

    fn grants(&self) -> Result<Vec<StoredGrant>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants ORDER BY created_at, id"
        ))?;
        let rows = stmt
            .query_map([], grant_of)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn grant(&self, id: &str) -> Result<Option<StoredGrant>> {
        let conn = self.conn();
        let g = conn
            .query_row(
                &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?1"),
                [id],
                grant_of,
            )
            .optional()?;
        Ok(g)
    }

    fn set_token(&self, id: &str, token_hash: [u8; 32], at: Timestamp) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE grants SET token_hash = ?2, rotated_at = ?3 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, token_hash.to_vec(), at],
        )?;
        Ok(n == 1)
    }

    fn revoke(&self, id: &str, at: Timestamp) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE grants SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, at],
        )?;
        Ok(n == 1)
    }

    fn add_policy_version(
        &self,
        scope: &PolicyScope,
        document: &str,
        at: Timestamp,
    ) -> Result<u64> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let grant = scope.grant.as_deref().unwrap_or("");
        let next: i64 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions WHERE server = ?1 AND grant_id = ?2",
            params![scope.server, grant],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO policy_versions (server, grant_id, version, document, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![scope.server, grant, next, document, at],
        )?;
        tx.commit()?;
        Ok(next as u64)
    }

    fn policy_versions(&self, scope: &PolicyScope) -> Result<Vec<PolicyVersion>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT server, grant_id, version, document, created_at FROM policy_versions
             WHERE server = ?1 AND grant_id = ?2 ORDER BY version",
        )?;
        let rows = stmt
            .query_map(
                params![scope.server, scope.grant.as_deref().unwrap_or("")],
                version_of,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn latest_policies(&self) -> Result<Vec<PolicyVersion>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT p.server, p.grant_id, p.version, p.document, p.created_at FROM policy_versions p
             JOIN (SELECT server, grant_id, MAX(version) AS v FROM policy_versions GROUP BY server, grant_id) m
               ON p.server = m.server AND p.grant_id = m.grant_id AND p.version = m.v",
        )?;
        let rows = stmt
            .query_map([], version_of)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn admin_token_hash(&self) -> Result<Option<[u8; 32]>> {
        let conn = self.conn();
        let v: Option<Vec<u8>> = conn
            .query_row(
                "SELECT value FROM settings WHERE key = 'admin_token_hash'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.filter(|v| v.len() == 32).map(|v| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&v);
            h
        }))
    }

    fn set_admin_token_hash(&self, hash: [u8; 32]) -> Result<()> {
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES ('admin_token_hash', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [hash.to_vec()],
        )?;
        Ok(())
    }

    fn data_version(&self) -> Result<i64> {
        Ok(self
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, hash: u8) -> StoredGrant {
        StoredGrant {
            id: id.into(),
            label: "ci".into(),
            server: "s".into(),
            token_hash: [hash; 32],
            created_at: 100,
            rotated_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn grants_round_trip_rotate_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.insert_grant(&grant("g1", 1)).unwrap();
        assert!(
            store.insert_grant(&grant("g2", 1)).is_err(),
            "token hashes are unique"
        );
        assert!(store.set_token("g1", [2; 32], 200).unwrap());
        assert!(!store.set_token("nope", [3; 32], 200).unwrap());
        assert!(store.revoke("g1", 300).unwrap());
        assert!(
            !store.revoke("g1", 301).unwrap(),
            "revoking twice changes nothing"
        );
        assert!(
            !store.set_token("g1", [4; 32], 400).unwrap(),
            "a revoked grant cannot be rotated"
        );
        let g = store.grant("g1").unwrap().unwrap();
        assert_eq!(
            (g.token_hash, g.rotated_at, g.revoked_at),
            ([2; 32], Some(200), Some(300))
        );
    }

    #[test]
    fn policy_versions_count_per_scope_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let server = PolicyScope {
            server: "s".into(),
            grant: None,
        };
        let one = PolicyScope {
            server: "s".into(),
            grant: Some("g1".into()),
        };
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            assert_eq!(store.add_policy_version(&server, "{}", 1).unwrap(), 1);
            assert_eq!(
                store.add_policy_version(&server, "{\"a\":1}", 2).unwrap(),
                2
            );
            assert_eq!(store.add_policy_version(&one, "{}", 3).unwrap(), 1);
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.policy_versions(&server).unwrap().len(), 2);
        let mut latest = store.latest_policies().unwrap();
        latest.sort_by(|a, b| a.scope.cmp(&b.scope));
        assert_eq!(latest.len(), 2);
        assert_eq!(
            (latest[0].version, latest[0].document.as_str()),
            (2, "{\"a\":1}")
        );
    }

    #[test]
    fn a_newer_schema_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = SqliteStore::open(dir.path()).err().unwrap().0;
        assert!(
            e.contains("schema version 99, newer than this toolgate knows"),
            "{e}"
        );
    }

    #[test]
    fn admin_token_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.admin_token_hash().unwrap(), None);
        store.set_admin_token_hash([9; 32]).unwrap();
        store.set_admin_token_hash([8; 32]).unwrap();
        assert_eq!(store.admin_token_hash().unwrap(), Some([8; 32]));
    }
}
