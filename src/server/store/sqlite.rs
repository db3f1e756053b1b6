//! [`SqliteStore`]: SQLite in WAL mode, one connection, every write committed (and, with
//! `synchronous=FULL`, fsynced) before it returns, and every cluster cached in memory so that
//! reads are one map lookup under a read lock and never touch SQLite.
//!
//! The file is locked exclusively for the life of the process, which is what makes the cache
//! the truth: no other process can write behind it. Writes run one at a time on tokio's
//! blocking pool and follow one order: commit, then change the cache, then report the change.
//! So a reader sees a value only once it is durable. The uniqueness of a key within a cluster
//! is the table's primary key, so a create that races another is refused by SQLite itself.
//!
//! The file, its `-wal` and `-shm` companions and any directory created for them are private
//! to the service's user (0600, 0700), whatever the umask: SQLite gives its companions the
//! mode of the main file.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard},
};

use anyhow::Context;
use rusqlite::{params, Connection, ErrorCode};

use super::{
    Change, ChangeSink, ClusterRecord, Inventory, KeyRead, KeysRead, NewKey, Store, StoreError,
    StoreFuture, Swept,
};

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
            _ => StoreError::Unavailable(format!("SQLite: {err}")),
        }
    }
}

/// A cluster as cached: its record and its keys, sorted so that listings are stable.
struct Cached {
    record: ClusterRecord,
    keys: BTreeMap<String, String>,
}

/// See the module documentation.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every cluster in the file, committed changes only.
    cache: RwLock<HashMap<String, Cached>>,
    /// The one connection, which writes; `None` once closed.
    conn: Mutex<Option<Connection>>,
    sink: OnceLock<ChangeSink>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, with its parent directory, and loads
    /// it. Blocking.
    ///
    /// A second `clusterctx serve` on the same file would keep its own stale cache, so it is
    /// refused at start.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // 0700 for what we create; directories that exist are the operator's.
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("cannot create the directory {}", parent.display()))?;
        }
        // Created here, not by SQLite, so that it is private whatever the umask (SQLite would
        // use 0644 minus the umask); an existing file keeps the mode it has.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create the store {}", path.display()))?;
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        Self::init(conn, true).with_context(|| format!("cannot use the store {}", path.display()))
    }

    /// [`open`](SqliteStore::open) at `path`, or in memory when `None` (what
    /// [`Config::db`](crate::server::Config::db) means).
    pub fn open_at(path: Option<&Path>) -> anyhow::Result<SqliteStore> {
        match path {
            Some(path) => SqliteStore::open(path),
            None => SqliteStore::open_in_memory(),
        }
    }

    /// A store that lives in memory only: for tests and throw-away servers.
    pub fn open_in_memory() -> anyhow::Result<SqliteStore> {
        let conn = Connection::open_in_memory().context("cannot open an in-memory store")?;
        Self::init(conn, false)
    }

    fn init(conn: Connection, on_disk: bool) -> anyhow::Result<SqliteStore> {
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
                "the file has schema version {version}, written by a newer clusterctx                  (this one knows version {SCHEMA_VERSION})"
            );
        }
        conn.execute_batch(SCHEMA)
            .context("cannot create the tables")?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let cache = load(&conn)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                cache: RwLock::new(cache),
                conn: Mutex::new(Some(conn)),
                sink: OnceLock::new(),
            }),
        })
    }

    /// Runs `op` on tokio's blocking pool (SQLite blocks) with the connection, one write at
    /// a time.
    fn write<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        StoreFuture::pending(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
                let conn = conn.as_mut().ok_or(StoreError::Closed)?;
                op(&inner, conn)
            })
            .await
            .map_err(|err| StoreError::Unavailable(format!("a store write stopped: {err}")))?
        })
    }
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Cached>> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    fn modify<T>(&self, f: impl FnOnce(&mut HashMap<String, Cached>) -> T) -> T {
        f(&mut self.cache.write().unwrap_or_else(|e| e.into_inner()))
    }

    fn report(&self, pin: &str, key: Option<&str>) {
        if let Some(sink) = self.sink.get() {
            sink(Change { pin, key });
        }
    }
}

/// Everything in the file, for the cache at start.
fn load(conn: &Connection) -> anyhow::Result<HashMap<String, Cached>> {
    let mut clusters = HashMap::new();
    let mut stmt = conn.prepare("SELECT pin, created_ms, expires_ms, token_hash FROM clusters")?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    for row in rows {
        let (pin, created_ms, expires_ms, hash) = row?;
        let token_hash: [u8; 32] = hash
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("a token digest in the store is malformed"))?;
        let record = ClusterRecord {
            pin: pin.clone(),
            created_ms,
            expires_ms,
            token_hash,
        };
        clusters.insert(
            pin,
            Cached {
                record,
                keys: BTreeMap::new(),
            },
        );
    }
    let mut stmt = conn.prepare("SELECT pin, key, value FROM keys")?;
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
        if let Some(cluster) = clusters.get_mut(&pin) {
            cluster.keys.insert(key, value);
        }
    }
    Ok(clusters)
}

/// A read answered from the cache, in the shape every store returns.
fn ready<T>(value: T) -> StoreFuture<'static, T> {
    StoreFuture::ready(Ok(value))
}

impl Store for SqliteStore {
    fn subscribe(&self, sink: ChangeSink) {
        if self.inner.sink.set(sink).is_err() {
            tracing::error!("a second subscriber to the store was ignored");
        }
    }

    fn create_cluster(&self, cluster: ClusterRecord) -> StoreFuture<'_, ()> {
        self.write(move |inner, conn| {
            conn.prepare_cached(
                "INSERT INTO clusters (pin, created_ms, expires_ms, token_hash)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                cluster.pin,
                cluster.created_ms,
                cluster.expires_ms,
                &cluster.token_hash[..]
            ])?;
            inner.modify(|clusters| {
                clusters.insert(
                    cluster.pin.clone(),
                    Cached {
                        record: cluster,
                        keys: BTreeMap::new(),
                    },
                )
            });
            Ok(())
        })
    }

    fn cluster<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<ClusterRecord>> {
        ready(self.inner.read().get(pin).map(|c| c.record.clone()))
    }

    fn key<'a>(&'a self, pin: &'a str, key: &'a str) -> StoreFuture<'a, Option<KeyRead>> {
        ready(self.inner.read().get(pin).map(|c| KeyRead {
            expires_ms: c.record.expires_ms,
            value: c.keys.get(key).cloned(),
        }))
    }

    fn keys<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<KeysRead>> {
        ready(self.inner.read().get(pin).map(|c| KeysRead {
            expires_ms: c.record.expires_ms,
            keys: c.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }))
    }

    fn create_key(&self, new: NewKey) -> StoreFuture<'_, ()> {
        self.write(move |inner, conn| {
            {
                // Writes are serialized, so these checks still hold at the INSERT.
                let clusters = inner.read();
                let cluster = clusters.get(&new.pin).ok_or(StoreError::NoCluster)?;
                if cluster.record.expires_ms <= new.now_ms {
                    return Err(StoreError::Expired);
                }
                if cluster.keys.len() >= new.max_keys {
                    return Err(StoreError::TooManyKeys(new.max_keys));
                }
            }
            conn.prepare_cached("INSERT INTO keys (pin, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![new.pin, new.key, new.value])?;
            inner.modify(|clusters| {
                if let Some(cluster) = clusters.get_mut(&new.pin) {
                    cluster.keys.insert(new.key.clone(), new.value);
                }
            });
            inner.report(&new.pin, Some(&new.key));
            Ok(())
        })
    }

    fn replace_key(&self, pin: String, key: String, value: String) -> StoreFuture<'_, bool> {
        self.write(move |inner, conn| {
            let changed = conn
                .prepare_cached("UPDATE keys SET value = ?3 WHERE pin = ?1 AND key = ?2")?
                .execute(params![pin, key, value])?;
            if changed == 0 {
                return Ok(false);
            }
            inner.modify(|clusters| {
                if let Some(cluster) = clusters.get_mut(&pin) {
                    cluster.keys.insert(key.clone(), value);
                }
            });
            inner.report(&pin, Some(&key));
            Ok(true)
        })
    }

    fn delete_key(&self, pin: String, key: String) -> StoreFuture<'_, bool> {
        self.write(move |inner, conn| {
            let changed = conn
                .prepare_cached("DELETE FROM keys WHERE pin = ?1 AND key = ?2")?
                .execute(params![pin, key])?;
            if changed == 0 {
                return Ok(false);
            }
            inner.modify(|clusters| {
                if let Some(cluster) = clusters.get_mut(&pin) {
                    cluster.keys.remove(&key);
                }
            });
            Ok(true)
        })
    }

    fn delete_cluster(&self, pin: String) -> StoreFuture<'_, bool> {
        self.write(move |inner, conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM keys WHERE pin = ?1", params![pin])?;
            let changed = tx.execute("DELETE FROM clusters WHERE pin = ?1", params![pin])?;
            tx.commit()?;
            if changed == 0 {
                return Ok(false);
            }
            inner.modify(|clusters| clusters.remove(&pin));
            inner.report(&pin, None);
            Ok(true)
        })
    }

    fn sweep(&self, now_ms: i64, forget_before_ms: i64) -> StoreFuture<'_, Swept> {
        self.write(move |inner, conn| {
            let emptied = |c: &Cached| c.record.expires_ms <= now_ms && !c.keys.is_empty();
            let forgotten = |c: &Cached| c.record.expires_ms <= forget_before_ms;
            let due: Vec<String> = inner
                .read()
                .iter()
                .filter(|(_, c)| emptied(c) || forgotten(c))
                .map(|(pin, _)| pin.clone())
                .collect();
            // Nothing to do is the usual case: no transaction, no fsync.
            if due.is_empty() {
                return Ok(Swept::default());
            }
            let tx = conn.transaction()?;
            tx.execute(
                "DELETE FROM keys WHERE pin IN (SELECT pin FROM clusters WHERE expires_ms <= ?1)",
                params![now_ms],
            )?;
            tx.execute(
                "DELETE FROM clusters WHERE expires_ms <= ?1",
                params![forget_before_ms],
            )?;
            tx.commit()?;
            let swept = inner.modify(|clusters| {
                let mut swept = Swept::default();
                for pin in &due {
                    let Some(cluster) = clusters.get_mut(pin) else {
                        continue;
                    };
                    if forgotten(cluster) {
                        clusters.remove(pin);
                        swept.forgotten += 1;
                    } else {
                        cluster.keys.clear();
                        swept.emptied += 1;
                    }
                }
                swept
            });
            for pin in &due {
                inner.report(pin, None);
            }
            Ok(swept)
        })
    }

    fn inventory(&self, now_ms: i64) -> StoreFuture<'_, Inventory> {
        let mut inventory = Inventory::default();
        for cluster in self.inner.read().values() {
            if cluster.record.expires_ms <= now_ms {
                inventory.tombstones += 1;
            } else {
                inventory.clusters += 1;
                inventory.keys += cluster.keys.len() as u64;
            }
        }
        ready(inventory)
    }

    fn close(&self) {
        drop(
            self.inner
                .conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
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

    fn record(pin: &str) -> ClusterRecord {
        ClusterRecord {
            pin: pin.to_string(),
            created_ms: 1_000,
            expires_ms: 2_000,
            token_hash: [7; 32],
        }
    }

    fn new_key(pin: &str, key: &str, value: &str) -> NewKey {
        NewKey {
            pin: pin.into(),
            key: key.into(),
            value: value.into(),
            now_ms: 1_500,
            max_keys: 10,
        }
    }

    async fn value(store: &SqliteStore, pin: &str, key: &str) -> Option<String> {
        store
            .key(pin, key)
            .await
            .unwrap()
            .and_then(|read| read.value)
    }

    #[tokio::test]
    async fn unique_key_is_enforced_by_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store.create_cluster(record("aaaaaaaaaaaa")).await.unwrap();
        assert_eq!(
            store.create_cluster(record("aaaaaaaaaaaa")).await,
            Err(StoreError::Conflict)
        );
        store
            .create_key(new_key("aaaaaaaaaaaa", "k", "1"))
            .await
            .unwrap();
        assert_eq!(
            store.create_key(new_key("aaaaaaaaaaaa", "k", "2")).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(
            store.create_key(new_key("bbbbbbbbbbbb", "k", "1")).await,
            Err(StoreError::NoCluster)
        );
        store.close();
        assert_eq!(
            store.create_key(new_key("aaaaaaaaaaaa", "j", "1")).await,
            Err(StoreError::Closed)
        );
        // What the file holds, not only the cache.
        let reopened = SqliteStore::open(&path).unwrap();
        assert_eq!(
            value(&reopened, "aaaaaaaaaaaa", "k").await.as_deref(),
            Some("1")
        );
    }

    #[tokio::test]
    async fn expired_and_full_clusters_refuse_new_keys() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.create_cluster(record("aaaaaaaaaaaa")).await.unwrap();
        let late = NewKey {
            now_ms: 2_000,
            ..new_key("aaaaaaaaaaaa", "k", "1")
        };
        assert_eq!(store.create_key(late).await, Err(StoreError::Expired));
        let one = |key: &str| NewKey {
            max_keys: 1,
            ..new_key("aaaaaaaaaaaa", key, "1")
        };
        store.create_key(one("a")).await.unwrap();
        assert_eq!(
            store.create_key(one("b")).await,
            Err(StoreError::TooManyKeys(1))
        );
        assert_eq!(value(&store, "aaaaaaaaaaaa", "b").await, None);
    }

    #[tokio::test]
    async fn reopening_a_file_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/pins.sqlite3");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.create_cluster(record("aaaaaaaaaaaa")).await.unwrap();
            for (key, value) in [("master_ip", "10.0.0.1"), ("other", "x")] {
                store
                    .create_key(new_key("aaaaaaaaaaaa", key, value))
                    .await
                    .unwrap();
            }
            let (pin, other) = ("aaaaaaaaaaaa".to_string(), "other".to_string());
            assert!(store
                .replace_key(pin.clone(), other.clone(), "y".into())
                .await
                .unwrap());
            assert!(store.delete_key(pin.clone(), other.clone()).await.unwrap());
            assert!(!store.delete_key(pin, other).await.unwrap());
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store.cluster("aaaaaaaaaaaa").await.unwrap(),
            Some(record("aaaaaaaaaaaa"))
        );
        assert_eq!(
            store.keys("aaaaaaaaaaaa").await.unwrap(),
            Some(KeysRead {
                expires_ms: 2_000,
                keys: vec![("master_ip".into(), "10.0.0.1".into())],
            })
        );
    }

    #[test]
    fn a_second_server_on_the_same_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        let _first = SqliteStore::open(&path).unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .expect("second open must fail");
        assert!(format!("{err:#}").contains("in use"), "{err:#}");
    }

    #[test]
    fn garbage_files_are_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        std::fs::write(&path, vec![b'x'; 8192]).unwrap();
        let err = SqliteStore::open(&path)
            .err()
            .expect("garbage must be refused");
        assert!(
            format!("{err:#}").contains("not a SQLite database"),
            "{err:#}"
        );
    }

    #[test]
    fn sqlite_codes_become_store_errors() {
        let failure = |code| {
            StoreError::from(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert_eq!(failure(rusqlite::ffi::SQLITE_FULL), StoreError::Full);
        assert_eq!(
            failure(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY),
            StoreError::Conflict
        );
        assert_eq!(
            failure(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
            StoreError::NoCluster
        );
        assert!(matches!(
            failure(rusqlite::ffi::SQLITE_IOERR),
            StoreError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn commits_are_reported_to_the_sink() {
        let store = SqliteStore::open_in_memory().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        store.subscribe({
            let seen = Arc::clone(&seen);
            Arc::new(move |change: Change<'_>| {
                seen.lock()
                    .unwrap()
                    .push((change.pin.to_string(), change.key.map(str::to_string)))
            })
        });
        let pin = "aaaaaaaaaaaa".to_string();
        store.create_cluster(record(&pin)).await.unwrap();
        store.create_key(new_key(&pin, "k", "1")).await.unwrap();
        // A refused write reports nothing.
        let _ = store.create_key(new_key(&pin, "k", "2")).await;
        store
            .replace_key(pin.clone(), "k".into(), "3".into())
            .await
            .unwrap();
        store.delete_key(pin.clone(), "k".into()).await.unwrap();
        store.delete_cluster(pin.clone()).await.unwrap();
        let k = Some("k".to_string());
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(pin.clone(), k.clone()), (pin.clone(), k), (pin, None)]
        );
    }

    #[tokio::test]
    async fn sweep_drops_keys_then_tombstones() {
        let store = SqliteStore::open_in_memory().unwrap();
        let reported = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        store.subscribe({
            let reported = Arc::clone(&reported);
            Arc::new(move |change: Change<'_>| {
                if change.key.is_none() {
                    reported.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        });
        store.create_cluster(record("aaaaaaaaaaaa")).await.unwrap();
        store
            .create_key(new_key("aaaaaaaaaaaa", "k", "1"))
            .await
            .unwrap();
        assert_eq!(store.sweep(1_999, 0).await.unwrap(), Swept::default());
        assert_eq!(
            store.sweep(2_000, 0).await.unwrap(),
            Swept {
                emptied: 1,
                forgotten: 0
            }
        );
        let read = store.keys("aaaaaaaaaaaa").await.unwrap().unwrap();
        assert!(read.keys.is_empty());
        assert_eq!(
            store.inventory(2_000).await.unwrap(),
            Inventory {
                clusters: 0,
                tombstones: 1,
                keys: 0
            }
        );
        assert_eq!(
            store.sweep(3_000, 2_500).await.unwrap(),
            Swept {
                emptied: 0,
                forgotten: 1
            }
        );
        assert_eq!(store.cluster("aaaaaaaaaaaa").await.unwrap(), None);
        assert_eq!(reported.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
