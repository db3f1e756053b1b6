//! The durable store: SQLite in WAL mode, one connection, every write committed (and, with
//! `synchronous=FULL`, fsynced) before the caller answers. The in-memory maps in
//! [`super::state`] serve reads; this file is the truth they are loaded from at start.
//!
//! The uniqueness of a key within a cluster is the table's primary key, so a create that races
//! another is refused by SQLite itself, not only by a check in memory.

use std::path::Path;

use anyhow::Context;
use rusqlite::{params, Connection, ErrorCode};

/// Schema version kept in `PRAGMA user_version`; a newer file is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clusters (
    pin         TEXT PRIMARY KEY NOT NULL,
    created_ms  INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL,
    token_hash  BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (
    pin    TEXT NOT NULL REFERENCES clusters(pin) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (pin, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS clusters_by_expiry ON clusters (expires_ms);
";

/// Why a write was refused. Nothing of a refused write is kept.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint: the PIN or the key already exists.
    #[error("already exists")]
    Conflict,
    /// A key for a cluster that is not in the store.
    #[error("no such cluster")]
    NoCluster,
    /// SQLITE_FULL: the disk (or the configured page limit) is full.
    #[error("the disk is full")]
    Full,
    #[error(transparent)]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(e, _) = &err {
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY {
                return StoreError::NoCluster;
            }
        }
        match err.sqlite_error_code() {
            Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
            Some(ErrorCode::DiskFull) => StoreError::Full,
            _ => StoreError::Sqlite(err),
        }
    }
}

/// A cluster as stored, with its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCluster {
    pub pin: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub token_hash: [u8; 32],
    pub keys: Vec<(String, String)>,
}

pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the store at `path`, with its parent directory.
    ///
    /// The file is locked exclusively for the life of the process: a second `clusterctx serve`
    /// on the same file would keep its own stale copy in memory, so it is refused at start.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the directory {}", parent.display()))?;
        }
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        Self::init(conn, true).with_context(|| format!("cannot use the store {}", path.display()))
    }

    /// A store that lives in memory only: for tests and throw-away servers.
    pub fn open_in_memory() -> anyhow::Result<Store> {
        let conn = Connection::open_in_memory().context("cannot open an in-memory store")?;
        Self::init(conn, false)
    }

    fn init(conn: Connection, on_disk: bool) -> anyhow::Result<Store> {
        // Short: the only other user of the file would be a second server, which we refuse.
        conn.busy_timeout(std::time::Duration::from_millis(500))?;
        if on_disk {
            conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
                .map_err(explain_open_error)?;
            if !mode.eq_ignore_ascii_case("wal") {
                anyhow::bail!("SQLite refused WAL mode (got {mode})");
            }
            // Take the exclusive lock now, not at the first write.
            conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")
                .map_err(explain_open_error)?;
        }
        // FULL: a commit is on disk before we answer, so an acknowledged write survives even a
        // power cut, not only a crash of the process. Writes are rare; reads never touch SQLite.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;

        let check: String = conn
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(explain_open_error)?;
        if check != "ok" {
            anyhow::bail!("the file is corrupt: {check}");
        }
        let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
        if version > SCHEMA_VERSION {
            anyhow::bail!(
                "the file has schema version {version}, written by a newer clusterctx \
                 (this one knows version {SCHEMA_VERSION})"
            );
        }
        conn.execute_batch(SCHEMA)
            .context("cannot create the tables")?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Store { conn })
    }

    /// Everything in the store, for the in-memory maps at start.
    pub fn load(&self) -> anyhow::Result<Vec<StoredCluster>> {
        let mut clusters = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT pin, created_ms, expires_ms, token_hash FROM clusters")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut index = std::collections::HashMap::new();
        for row in rows {
            let (pin, created_ms, expires_ms, hash) = row?;
            let token_hash: [u8; 32] = hash
                .as_slice()
                .try_into()
                .map_err(|_| anyhow::anyhow!("a token digest in the store is malformed"))?;
            index.insert(pin.clone(), clusters.len());
            clusters.push(StoredCluster {
                pin,
                created_ms,
                expires_ms,
                token_hash,
                keys: Vec::new(),
            });
        }
        let mut stmt = self.conn.prepare("SELECT pin, key, value FROM keys")?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (pin, key, value) = row?;
            // The foreign key guarantees the cluster exists.
            if let Some(&i) = index.get(&pin) {
                clusters[i].keys.push((key, value));
            }
        }
        Ok(clusters)
    }

    pub fn insert_cluster(&mut self, cluster: &StoredCluster) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO clusters (pin, created_ms, expires_ms, token_hash)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                cluster.pin,
                cluster.created_ms,
                cluster.expires_ms,
                &cluster.token_hash[..]
            ])?;
        Ok(())
    }

    /// Create-only: [`StoreError::Conflict`] if the key exists.
    pub fn insert_key(&mut self, pin: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT INTO keys (pin, key, value) VALUES (?1, ?2, ?3)")?
            .execute(params![pin, key, value])?;
        Ok(())
    }

    /// Replaces an existing value; false if there was no such key.
    pub fn update_key(&mut self, pin: &str, key: &str, value: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached("UPDATE keys SET value = ?3 WHERE pin = ?1 AND key = ?2")?
            .execute(params![pin, key, value])?;
        Ok(changed > 0)
    }

    /// False if there was no such key.
    pub fn delete_key(&mut self, pin: &str, key: &str) -> Result<bool, StoreError> {
        let changed = self
            .conn
            .prepare_cached("DELETE FROM keys WHERE pin = ?1 AND key = ?2")?
            .execute(params![pin, key])?;
        Ok(changed > 0)
    }

    /// Deletes a cluster and its keys in one transaction; false if there was no such cluster.
    pub fn delete_cluster(&mut self, pin: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM keys WHERE pin = ?1", params![pin])?;
        let changed = tx.execute("DELETE FROM clusters WHERE pin = ?1", params![pin])?;
        tx.commit()?;
        Ok(changed > 0)
    }

    /// Deletes the keys of clusters expired at `now_ms`, and the clusters themselves (their
    /// tombstones) once expired before `forget_before_ms`. One transaction.
    pub fn sweep(&mut self, now_ms: i64, forget_before_ms: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM keys WHERE pin IN (SELECT pin FROM clusters WHERE expires_ms <= ?1)",
            params![now_ms],
        )?;
        tx.execute(
            "DELETE FROM clusters WHERE expires_ms <= ?1",
            params![forget_before_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The value stored for a key, read from the file (for tests of the write path).
    #[cfg(test)]
    pub fn value(&self, pin: &str, key: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM keys WHERE pin = ?1 AND key = ?2",
                params![pin, key],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Caps the file at `pages` pages, so tests can provoke SQLITE_FULL without filling a disk.
    #[cfg(test)]
    pub(crate) fn limit_pages(&self, pages: u32) {
        self.conn
            .pragma_update(None, "max_page_count", pages)
            .expect("max_page_count");
    }
}

/// Turns the cryptic SQLite codes one meets at open into advice.
fn explain_open_error(err: rusqlite::Error) -> anyhow::Error {
    let hint = match err.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Some("the file is not a SQLite database"),
        Some(ErrorCode::DatabaseCorrupt) => Some("the file is corrupt"),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            Some("the file is in use: is another clusterctx serve running on it?")
        }
        Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied | ErrorCode::CannotOpen) => {
            Some("the file cannot be written: check its permissions")
        }
        _ => None,
    };
    match hint {
        Some(hint) => anyhow::Error::new(err).context(hint),
        None => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(pin: &str) -> StoredCluster {
        StoredCluster {
            pin: pin.to_string(),
            created_ms: 1_000,
            expires_ms: 2_000,
            token_hash: [7; 32],
            keys: Vec::new(),
        }
    }

    #[test]
    fn unique_key_is_enforced_by_sqlite() {
        let mut store = Store::open_in_memory().unwrap();
        store.insert_cluster(&cluster("aaaaaaaaaaaa")).unwrap();
        store.insert_key("aaaaaaaaaaaa", "k", "1").unwrap();
        assert!(matches!(
            store.insert_key("aaaaaaaaaaaa", "k", "2"),
            Err(StoreError::Conflict)
        ));
        assert_eq!(
            store.value("aaaaaaaaaaaa", "k").unwrap().as_deref(),
            Some("1")
        );
        // A key needs its cluster.
        assert!(matches!(
            store.insert_key("bbbbbbbbbbbb", "k", "1"),
            Err(StoreError::NoCluster)
        ));
    }

    #[test]
    fn reopening_a_file_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/pins.sqlite3");
        {
            let mut store = Store::open(&path).unwrap();
            store.insert_cluster(&cluster("aaaaaaaaaaaa")).unwrap();
            store
                .insert_key("aaaaaaaaaaaa", "master_ip", "10.0.0.1")
                .unwrap();
            store.insert_key("aaaaaaaaaaaa", "other", "x").unwrap();
            assert!(store.update_key("aaaaaaaaaaaa", "other", "y").unwrap());
            assert!(store.delete_key("aaaaaaaaaaaa", "other").unwrap());
            assert!(!store.delete_key("aaaaaaaaaaaa", "other").unwrap());
        }
        let store = Store::open(&path).unwrap();
        let mut expected = cluster("aaaaaaaaaaaa");
        expected.keys = vec![("master_ip".into(), "10.0.0.1".into())];
        assert_eq!(store.load().unwrap(), vec![expected]);
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).err().expect("second open must fail");
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
    }

    #[test]
    fn garbage_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = Store::open(&path).err().expect("garbage must be refused");
        assert!(
            format!("{err:#}").contains("not a SQLite database"),
            "{err:#}"
        );
    }

    #[test]
    fn sweep_drops_keys_then_tombstones() {
        let mut store = Store::open_in_memory().unwrap();
        store.insert_cluster(&cluster("aaaaaaaaaaaa")).unwrap();
        store.insert_key("aaaaaaaaaaaa", "k", "1").unwrap();
        store.sweep(2_000, 0).unwrap();
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert!(loaded[0].keys.is_empty());
        store.sweep(3_000, 2_500).unwrap();
        assert!(store.load().unwrap().is_empty());
    }

    #[test]
    fn a_full_disk_is_reported_and_nothing_is_half_written() {
        let mut store = Store::open_in_memory().unwrap();
        store.insert_cluster(&cluster("aaaaaaaaaaaa")).unwrap();
        store.limit_pages(8);
        let big = "v".repeat(1000);
        let mut failed = None;
        for i in 0..1000 {
            if let Err(err) = store.insert_key("aaaaaaaaaaaa", &format!("k{i}"), &big) {
                failed = Some((i, err));
                break;
            }
        }
        let (i, err) = failed.expect("the page limit must be hit");
        assert!(matches!(err, StoreError::Full), "{err}");
        assert_eq!(store.value("aaaaaaaaaaaa", &format!("k{i}")).unwrap(), None);
    }
}
