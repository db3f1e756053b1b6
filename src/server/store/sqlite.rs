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
//!
//! A full disk makes the store read-only, not unusable. Opening writes (the schema version),
//! and when that write finds the disk full (SQLite's `SQLITE_FULL`, which is what it makes of
//! `ENOSPC` on the file or its WAL) in a store that already has its schema, the store starts
//! read-only; a write that finds the disk full later does the same. Reads are served from the
//! cache either way. Every write while read-only is still tried, so the first one after space
//! returns succeeds and ends it: there is nothing to poll. Entering and leaving are logged
//! once each.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock, RwLock, RwLockReadGuard,
    },
};

use anyhow::Context;
use rusqlite::{params, Connection, ErrorCode};

use super::{
    cluster_bytes, key_bytes, member_bytes, Change, ChangeSink, Changed, ClusterRecord, Inventory,
    KeyRead, KeysRead, MemberRecord, MembersRead, NewKey, NewMember, Quota, Registered, Role,
    Store, StoreError, StoreFuture, Swept, Usage,
};

/// Schema version kept in `PRAGMA user_version`; a newer file is refused rather than misread.
/// Version 2 added the members table; a version-1 file gains it when it is opened (every
/// table is created if missing), and nothing else changed.
const SCHEMA_VERSION: i64 = 2;

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
CREATE TABLE IF NOT EXISTS members (
    pin           TEXT NOT NULL REFERENCES clusters(pin) ON DELETE CASCADE,
    node          TEXT NOT NULL,
    role          TEXT NOT NULL,
    address       TEXT NOT NULL,
    -- The joining order within the cluster: timestamps can tie.
    seq           INTEGER NOT NULL,
    joined_ms     INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    PRIMARY KEY (pin, node)
) WITHOUT ROWID;
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

/// A cluster as cached: its record, its keys, sorted so that listings are stable, and its
/// members in joining order.
struct Cached {
    record: ClusterRecord,
    keys: BTreeMap<String, String>,
    members: Vec<MemberRecord>,
}

impl Cached {
    /// What its keys and members count against the byte cap.
    fn contents_bytes(&self) -> u64 {
        let pin = &self.record.pin;
        let keys: u64 = self.keys.iter().map(|(k, v)| key_bytes(pin, k, v)).sum();
        let members: u64 = self
            .members
            .iter()
            .map(|m| member_bytes(pin, &m.node, &m.address))
            .sum();
        keys + members
    }

    fn member(&self, node: &str) -> Option<&MemberRecord> {
        self.members.iter().find(|m| m.node == node)
    }
}

/// Every cluster in the file, and what they add up to: changed only through these methods,
/// so the count cannot drift from what is cached.
#[derive(Default)]
struct Cache {
    clusters: HashMap<String, Cached>,
    usage: Usage,
}

impl Cache {
    fn get(&self, pin: &str) -> Option<&Cached> {
        self.clusters.get(pin)
    }

    fn insert_cluster(&mut self, record: ClusterRecord) {
        self.usage.clusters += 1;
        self.usage.bytes += cluster_bytes(&record.pin);
        let cached = Cached {
            record,
            keys: BTreeMap::new(),
            members: Vec::new(),
        };
        if let Some(old) = self.clusters.insert(cached.record.pin.clone(), cached) {
            self.forget(&old);
        }
    }

    fn remove_cluster(&mut self, pin: &str) -> bool {
        let Some(old) = self.clusters.remove(pin) else {
            return false;
        };
        self.forget(&old);
        true
    }

    fn forget(&mut self, cluster: &Cached) {
        self.usage.clusters -= 1;
        self.usage.bytes -= cluster_bytes(&cluster.record.pin) + cluster.contents_bytes();
    }

    /// Sets a key of a cached cluster, new or replaced.
    fn set_key(&mut self, pin: &str, key: String, value: String) {
        let Some(cluster) = self.clusters.get_mut(pin) else {
            return;
        };
        self.usage.bytes += key_bytes(pin, &key, &value);
        if let Some(old) = cluster.keys.insert(key.clone(), value) {
            self.usage.bytes -= key_bytes(pin, &key, &old);
        }
    }

    fn remove_key(&mut self, pin: &str, key: &str) {
        let Some(cluster) = self.clusters.get_mut(pin) else {
            return;
        };
        if let Some(old) = cluster.keys.remove(key) {
            self.usage.bytes -= key_bytes(pin, key, &old);
        }
    }

    /// Registers a member of a cached cluster: a new one joins at the end, a known one keeps
    /// its place and `joined_ms`.
    fn put_member(&mut self, pin: &str, member: MemberRecord) {
        let Some(cluster) = self.clusters.get_mut(pin) else {
            return;
        };
        self.usage.bytes += member_bytes(pin, &member.node, &member.address);
        match cluster.members.iter_mut().find(|m| m.node == member.node) {
            Some(old) => {
                self.usage.bytes -= member_bytes(pin, &old.node, &old.address);
                *old = MemberRecord {
                    joined_ms: old.joined_ms,
                    ..member
                };
            }
            None => cluster.members.push(member),
        }
    }

    fn remove_member(&mut self, pin: &str, node: &str) {
        let Some(cluster) = self.clusters.get_mut(pin) else {
            return;
        };
        if let Some(at) = cluster.members.iter().position(|m| m.node == node) {
            let old = cluster.members.remove(at);
            self.usage.bytes -= member_bytes(pin, &old.node, &old.address);
        }
    }

    /// What the sweep does to an expired cluster it keeps: its keys and members go.
    fn clear_contents(&mut self, pin: &str) {
        let Some(cluster) = self.clusters.get_mut(pin) else {
            return;
        };
        self.usage.bytes -= cluster.contents_bytes();
        cluster.keys.clear();
        cluster.members.clear();
    }
}

/// See the module documentation.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every cluster in the file, committed changes only.
    cache: RwLock<Cache>,
    /// The one connection, which writes; `None` once closed.
    conn: Mutex<Option<Connection>>,
    sink: OnceLock<ChangeSink>,
    /// Changes committed by the write in progress, reported once it is back on the runtime.
    committed: Mutex<Vec<(String, Committed)>>,
    /// The last write found the disk full (see the module documentation).
    read_only: AtomicBool,
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
                "the file has schema version {version}, written by a newer clusterctx \
                 (this one knows version {SCHEMA_VERSION})"
            );
        }
        // A write at every start, even when nothing changes: it tells whether the disk takes
        // writes before the first client asks.
        let read_only = match create_schema(&conn) {
            Ok(()) => false,
            Err(err) if version == SCHEMA_VERSION && is_disk_full(&err) => true,
            Err(err) => return Err(explain_open_error(err).context("cannot create the tables")),
        };
        let cache = load(&conn)?;
        let inner = Inner {
            cache: RwLock::new(cache),
            conn: Mutex::new(Some(conn)),
            sink: OnceLock::new(),
            committed: Mutex::new(Vec::new()),
            read_only: AtomicBool::new(false),
        };
        inner.disk_full(read_only);
        Ok(SqliteStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs `op` on tokio's blocking pool (SQLite blocks) with the connection, one write at
    /// a time. Its changes are reported from the writer's task, not the blocking thread: woken
    /// from there, every parked long-poll was queued ahead of the writer itself, whose answer
    /// then waited for theirs; woken from the writer's task, they run after it has answered.
    fn write<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner, &mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        StoreFuture::pending(async move {
            let blocking = Arc::clone(&inner);
            let (result, committed) = tokio::task::spawn_blocking(move || {
                let inner = blocking;
                let mut conn = inner.conn.lock().unwrap_or_else(|e| e.into_inner());
                let Some(conn) = conn.as_mut() else {
                    return (Err(StoreError::Closed), Vec::new());
                };
                let result = op(&inner, conn);
                if let Err(StoreError::Full) = result {
                    inner.disk_full(true);
                }
                let committed =
                    std::mem::take(&mut *inner.committed.lock().unwrap_or_else(|e| e.into_inner()));
                (result, committed)
            })
            .await
            .map_err(|err| StoreError::Unavailable(format!("a store write stopped: {err}")))?;
            if let Some(sink) = inner.sink.get() {
                for (pin, what) in &committed {
                    let what = match what {
                        Committed::Key(key) => Changed::Key(key),
                        Committed::Members => Changed::Members,
                        Committed::Cluster => Changed::Cluster,
                        Committed::Everything => Changed::Everything,
                    };
                    sink(Change { pin, what });
                }
            }
            result
        })
    }
}

/// A [`Changed`] held until the write that made it returns.
enum Committed {
    Key(String),
    Members,
    Cluster,
    Everything,
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a committed change to the cache. A commit also shows that the disk takes
    /// writes again.
    fn modify<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        let result = f(&mut self.cache.write().unwrap_or_else(|e| e.into_inner()));
        self.disk_full(false);
        result
    }

    /// Records whether the disk takes writes; logs only the changes.
    fn disk_full(&self, full: bool) {
        if self.read_only.swap(full, Ordering::Relaxed) == full {
            return;
        }
        if full {
            tracing::error!(
                "the store's disk is full: serving reads only, writes answer 507 until space \
                 is freed (each write tries again)"
            );
        } else {
            tracing::info!("the store takes writes again: its disk has space");
        }
    }

    /// Records a committed change, reported by [`SqliteStore::write`] when `op` returns.
    fn report(&self, pin: &str, what: Changed<'_>) {
        if self.sink.get().is_none() {
            return;
        }
        let what = match what {
            Changed::Key(key) => Committed::Key(key.to_string()),
            Changed::Members => Committed::Members,
            Changed::Cluster => Committed::Cluster,
            Changed::Everything => Committed::Everything,
        };
        (self.committed.lock().unwrap_or_else(|e| e.into_inner())).push((pin.to_string(), what));
    }
}

/// The tables and the schema version, written at every start.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
}

fn is_disk_full(err: &rusqlite::Error) -> bool {
    err.sqlite_error_code() == Some(ErrorCode::DiskFull)
}

/// Everything in the file, for the cache at start.
fn load(conn: &Connection) -> anyhow::Result<Cache> {
    let mut cache = Cache::default();
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
        cache.insert_cluster(ClusterRecord {
            pin,
            created_ms,
            expires_ms,
            token_hash,
        });
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
        cache.set_key(&pin, key, value);
    }
    let mut stmt = conn.prepare(
        "SELECT pin, node, role, address, joined_ms, last_seen_ms FROM members ORDER BY pin, seq",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            MemberRecord {
                node: row.get(1)?,
                role: Role::Worker,
                address: row.get(3)?,
                joined_ms: row.get(4)?,
                last_seen_ms: row.get(5)?,
            },
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (pin, member, role) = row?;
        let role = Role::parse(&role)
            .ok_or_else(|| anyhow::anyhow!("a member role in the store is malformed"))?;
        cache.put_member(&pin, MemberRecord { role, ..member });
    }
    Ok(cache)
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

    fn create_cluster(&self, cluster: ClusterRecord, quota: Quota) -> StoreFuture<'_, ()> {
        self.write(move |inner, conn| {
            // Writes are serialized, so the usage checked here is still the usage at the
            // INSERT.
            let usage = inner.read().usage;
            quota
                .admits(usage, 1, cluster_bytes(&cluster.pin))
                .map_err(StoreError::AtCap)?;
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
            inner.modify(|cache| cache.insert_cluster(cluster));
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
                let cache = inner.read();
                let cluster = cache.get(&new.pin).ok_or(StoreError::NoCluster)?;
                if cluster.record.expires_ms <= new.now_ms {
                    return Err(StoreError::Expired);
                }
                if cluster.keys.len() >= new.max_keys {
                    return Err(StoreError::TooManyKeys(new.max_keys));
                }
                new.quota
                    .admits(cache.usage, 0, key_bytes(&new.pin, &new.key, &new.value))
                    .map_err(StoreError::AtCap)?;
            }
            conn.prepare_cached("INSERT INTO keys (pin, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![new.pin, new.key, new.value])?;
            inner.modify(|cache| cache.set_key(&new.pin, new.key.clone(), new.value));
            inner.report(&new.pin, Changed::Key(&new.key));
            Ok(())
        })
    }

    fn replace_key(
        &self,
        pin: String,
        key: String,
        value: String,
        quota: Quota,
    ) -> StoreFuture<'_, bool> {
        self.write(move |inner, conn| {
            {
                let cache = inner.read();
                let Some(old) = cache.get(&pin).and_then(|c| c.keys.get(&key)) else {
                    return Ok(false);
                };
                let growth = value.len().saturating_sub(old.len()) as u64;
                quota
                    .admits(cache.usage, 0, growth)
                    .map_err(StoreError::AtCap)?;
            }
            let changed = conn
                .prepare_cached("UPDATE keys SET value = ?3 WHERE pin = ?1 AND key = ?2")?
                .execute(params![pin, key, value])?;
            if changed == 0 {
                return Ok(false);
            }
            inner.modify(|cache| cache.set_key(&pin, key.clone(), value));
            inner.report(&pin, Changed::Key(&key));
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
            inner.modify(|cache| cache.remove_key(&pin, &key));
            Ok(true)
        })
    }

    fn put_member(&self, new: NewMember) -> StoreFuture<'_, Registered> {
        self.write(move |inner, conn| {
            let known = {
                // Writes are serialized, so these checks still hold at the write.
                let cache = inner.read();
                let cluster = cache.get(&new.pin).ok_or(StoreError::NoCluster)?;
                if cluster.record.expires_ms <= new.now_ms {
                    return Err(StoreError::Expired);
                }
                let growth = match cluster.member(&new.node) {
                    Some(old) => new.address.len().saturating_sub(old.address.len()) as u64,
                    None if cluster.members.len() as u64 >= new.max_members => {
                        return Err(StoreError::TooManyMembers(new.max_members))
                    }
                    None => member_bytes(&new.pin, &new.node, &new.address),
                };
                new.quota
                    .admits(cache.usage, 0, growth)
                    .map_err(StoreError::AtCap)?;
                cluster.member(&new.node).is_some()
            };
            let role = new.role.as_str();
            if known {
                conn.prepare_cached(
                    "UPDATE members SET role = ?3, address = ?4, last_seen_ms = ?5
                     WHERE pin = ?1 AND node = ?2",
                )?
                .execute(params![
                    new.pin,
                    new.node,
                    role,
                    new.address,
                    new.now_ms
                ])?;
            } else {
                conn.prepare_cached(
                    "INSERT INTO members (pin, node, role, address, seq, joined_ms, last_seen_ms)
                     VALUES (?1, ?2, ?3, ?4,
                             (SELECT COALESCE(MAX(seq), 0) + 1 FROM members WHERE pin = ?1),
                             ?5, ?5)",
                )?
                .execute(params![
                    new.pin,
                    new.node,
                    role,
                    new.address,
                    new.now_ms
                ])?;
            }
            let member = MemberRecord {
                node: new.node,
                role: new.role,
                address: new.address,
                joined_ms: new.now_ms,
                last_seen_ms: new.now_ms,
            };
            inner.modify(|cache| cache.put_member(&new.pin, member));
            inner.report(&new.pin, Changed::Members);
            Ok(if known {
                Registered::Updated
            } else {
                Registered::Joined
            })
        })
    }

    fn members<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<MembersRead>> {
        ready(self.inner.read().get(pin).map(|c| MembersRead {
            expires_ms: c.record.expires_ms,
            members: c.members.clone(),
        }))
    }

    fn delete_member(&self, pin: String, node: String) -> StoreFuture<'_, bool> {
        self.write(move |inner, conn| {
            let changed = conn
                .prepare_cached("DELETE FROM members WHERE pin = ?1 AND node = ?2")?
                .execute(params![pin, node])?;
            if changed == 0 {
                return Ok(false);
            }
            inner.modify(|cache| cache.remove_member(&pin, &node));
            Ok(true)
        })
    }

    fn delete_cluster(&self, pin: String) -> StoreFuture<'_, bool> {
        self.write(move |inner, conn| {
            let tx = conn.transaction()?;
            tx.execute("DELETE FROM keys WHERE pin = ?1", params![pin])?;
            tx.execute("DELETE FROM members WHERE pin = ?1", params![pin])?;
            let changed = tx.execute("DELETE FROM clusters WHERE pin = ?1", params![pin])?;
            tx.commit()?;
            if changed == 0 {
                return Ok(false);
            }
            inner.modify(|cache| cache.remove_cluster(&pin));
            inner.report(&pin, Changed::Cluster);
            Ok(true)
        })
    }

    fn sweep(&self, now_ms: i64, forget_before_ms: i64) -> StoreFuture<'_, Swept> {
        self.write(move |inner, conn| {
            let emptied = |c: &Cached| {
                c.record.expires_ms <= now_ms && !(c.keys.is_empty() && c.members.is_empty())
            };
            let forgotten = |c: &Cached| c.record.expires_ms <= forget_before_ms;
            let due: Vec<String> = inner
                .read()
                .clusters
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
                "DELETE FROM members WHERE pin IN \
                 (SELECT pin FROM clusters WHERE expires_ms <= ?1)",
                params![now_ms],
            )?;
            tx.execute(
                "DELETE FROM clusters WHERE expires_ms <= ?1",
                params![forget_before_ms],
            )?;
            tx.commit()?;
            let swept = inner.modify(|cache| {
                let mut swept = Swept::default();
                for pin in &due {
                    let Some(forget) = cache.get(pin).map(forgotten) else {
                        continue;
                    };
                    if forget {
                        cache.remove_cluster(pin);
                        swept.forgotten += 1;
                    } else {
                        cache.clear_contents(pin);
                        swept.emptied += 1;
                    }
                }
                swept
            });
            for pin in &due {
                inner.report(pin, Changed::Cluster);
            }
            Ok(swept)
        })
    }

    fn inventory(&self, now_ms: i64) -> StoreFuture<'_, Inventory> {
        let cache = self.inner.read();
        let mut inventory = Inventory {
            usage: cache.usage,
            read_only: self.inner.read_only.load(Ordering::Relaxed),
            ..Inventory::default()
        };
        for cluster in cache.clusters.values() {
            if cluster.record.expires_ms <= now_ms {
                inventory.tombstones += 1;
            } else {
                inventory.clusters += 1;
                inventory.keys += cluster.keys.len() as u64;
                inventory.members += cluster.members.len() as u64;
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
        Some(ErrorCode::DiskFull) => Some("the disk is full"),
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
    use crate::server::store::Cap;

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
            quota: Quota::default(),
        }
    }

    const NODE_A: &str = "aaaaaaaaaaaaaaaa";
    const NODE_B: &str = "bbbbbbbbbbbbbbbb";

    fn new_member(pin: &str, node: &str, address: &str) -> NewMember {
        NewMember {
            pin: pin.into(),
            node: node.into(),
            role: Role::Worker,
            address: address.into(),
            now_ms: 1_500,
            max_members: 2,
            quota: Quota::default(),
        }
    }

    async fn nodes(store: &SqliteStore, pin: &str) -> Vec<String> {
        let read = store.members(pin).await.unwrap().unwrap_or(MembersRead {
            expires_ms: 0,
            members: Vec::new(),
        });
        read.members.into_iter().map(|m| m.node).collect()
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
        store
            .create_cluster(record("aaaaaaaaaaaa"), Quota::default())
            .await
            .unwrap();
        assert_eq!(
            store
                .create_cluster(record("aaaaaaaaaaaa"), Quota::default())
                .await,
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
        store
            .create_cluster(record("aaaaaaaaaaaa"), Quota::default())
            .await
            .unwrap();
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
            store
                .create_cluster(record("aaaaaaaaaaaa"), Quota::default())
                .await
                .unwrap();
            for (key, value) in [("master_ip", "10.0.0.1"), ("other", "x")] {
                store
                    .create_key(new_key("aaaaaaaaaaaa", key, value))
                    .await
                    .unwrap();
            }
            let (pin, other) = ("aaaaaaaaaaaa".to_string(), "other".to_string());
            assert!(store
                .replace_key(pin.clone(), other.clone(), "y".into(), Quota::default())
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

    #[tokio::test]
    async fn members_keep_their_joining_order_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        let pin = "aaaaaaaaaaaa";
        {
            let store = SqliteStore::open(&path).unwrap();
            store
                .create_cluster(record(pin), Quota::default())
                .await
                .unwrap();
            let joined = store.put_member(new_member(pin, NODE_B, "10.0.0.2")).await;
            assert_eq!(joined, Ok(Registered::Joined));
            store
                .put_member(new_member(pin, NODE_A, "10.0.0.1"))
                .await
                .unwrap();
            let again = NewMember {
                now_ms: 1_600,
                role: Role::Master,
                ..new_member(pin, NODE_B, "10.0.0.22")
            };
            assert_eq!(store.put_member(again).await, Ok(Registered::Updated));
            let third = store.put_member(new_member(pin, "cccccccccccccccc", "10.0.0.3"));
            assert_eq!(third.await, Err(StoreError::TooManyMembers(2)));
        }
        let store = SqliteStore::open(&path).unwrap();
        let read = store.members(pin).await.unwrap().unwrap();
        assert_eq!(
            read.members[0],
            MemberRecord {
                node: NODE_B.into(),
                role: Role::Master,
                address: "10.0.0.22".into(),
                joined_ms: 1_500,
                last_seen_ms: 1_600,
            }
        );
        assert_eq!(nodes(&store, pin).await, [NODE_B, NODE_A]);
        let usage = store.inventory(0).await.unwrap().usage.bytes;
        assert_eq!(
            usage,
            cluster_bytes(pin)
                + member_bytes(pin, NODE_A, "10.0.0.1")
                + member_bytes(pin, NODE_B, "10.0.0.22")
        );
        assert!(store
            .delete_member(pin.into(), NODE_B.into())
            .await
            .unwrap());
        assert!(!store
            .delete_member(pin.into(), NODE_B.into())
            .await
            .unwrap());
        // A node that comes back after its deletion joins at the end.
        store
            .put_member(new_member(pin, NODE_B, "10.0.0.2"))
            .await
            .unwrap();
        assert_eq!(nodes(&store, pin).await, [NODE_A, NODE_B]);
        // The sweep empties an expired cluster of its members as of its keys.
        assert_eq!(store.sweep(2_000, 0).await.unwrap().emptied, 1);
        assert!(nodes(&store, pin).await.is_empty());
        assert_eq!(
            store.inventory(0).await.unwrap().usage.bytes,
            cluster_bytes(pin)
        );
    }

    #[tokio::test]
    async fn members_count_against_the_byte_cap() {
        let store = SqliteStore::open_in_memory().unwrap();
        let pin = "aaaaaaaaaaaa";
        store
            .create_cluster(record(pin), Quota::default())
            .await
            .unwrap();
        let quota = Quota {
            max_clusters: 0,
            max_bytes: cluster_bytes(pin) + member_bytes(pin, NODE_A, "10.0.0.1"),
        };
        let capped = |node: &str, address: &str| NewMember {
            quota,
            ..new_member(pin, node, address)
        };
        store.put_member(capped(NODE_A, "10.0.0.1")).await.unwrap();
        let full = Err(StoreError::AtCap(Cap::Bytes(quota.max_bytes)));
        assert_eq!(store.put_member(capped(NODE_B, "10.0.0.2")).await, full);
        assert_eq!(store.put_member(capped(NODE_A, "10.0.0.10")).await, full);
        // Registering again with an address no longer than before needs no more bytes.
        let again = store.put_member(capped(NODE_A, "10.0.0.2")).await;
        assert_eq!(again, Ok(Registered::Updated));
        assert_eq!(nodes(&store, pin).await, [NODE_A]);
    }

    #[tokio::test]
    async fn a_version_1_file_gains_the_members_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        {
            // The schema of version 1, as it was written.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE clusters (pin TEXT PRIMARY KEY NOT NULL, created_ms INTEGER NOT NULL,
                     expires_ms INTEGER NOT NULL, token_hash BLOB NOT NULL) WITHOUT ROWID;
                 CREATE TABLE keys (pin TEXT NOT NULL REFERENCES clusters(pin) ON DELETE CASCADE,
                     key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (pin, key)) WITHOUT ROWID;
                 CREATE INDEX clusters_by_expiry ON clusters (expires_ms);
                 INSERT INTO clusters VALUES ('aaaaaaaaaaaa', 1000, 2000, zeroblob(32));
                 INSERT INTO keys VALUES ('aaaaaaaaaaaa', 'master_ip', '10.0.0.1');
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        {
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(
                value(&store, "aaaaaaaaaaaa", "master_ip").await.as_deref(),
                Some("10.0.0.1")
            );
            store
                .put_member(new_member("aaaaaaaaaaaa", NODE_A, "10.0.0.1"))
                .await
                .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        drop(conn);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(nodes(&store, "aaaaaaaaaaaa").await, [NODE_A]);
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
                    .push((change.pin.to_string(), format!("{:?}", change.what)))
            })
        });
        let pin = "aaaaaaaaaaaa".to_string();
        store
            .create_cluster(record(&pin), Quota::default())
            .await
            .unwrap();
        store.create_key(new_key(&pin, "k", "1")).await.unwrap();
        // A refused write reports nothing.
        let _ = store.create_key(new_key(&pin, "k", "2")).await;
        store
            .replace_key(pin.clone(), "k".into(), "3".into(), Quota::default())
            .await
            .unwrap();
        store.delete_key(pin.clone(), "k".into()).await.unwrap();
        store
            .put_member(new_member(&pin, NODE_A, "10.0.0.1"))
            .await
            .unwrap();
        store
            .delete_member(pin.clone(), NODE_A.into())
            .await
            .unwrap();
        store.delete_cluster(pin.clone()).await.unwrap();
        let seen: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(p, what)| {
                assert_eq!(*p, pin);
                what.clone()
            })
            .collect();
        assert_eq!(seen, ["Key(\"k\")", "Key(\"k\")", "Members", "Cluster"]);
    }

    #[tokio::test]
    async fn sweep_drops_keys_then_tombstones() {
        let store = SqliteStore::open_in_memory().unwrap();
        let reported = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        store.subscribe({
            let reported = Arc::clone(&reported);
            Arc::new(move |change: Change<'_>| {
                if change.what == Changed::Cluster {
                    reported.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        });
        store
            .create_cluster(record("aaaaaaaaaaaa"), Quota::default())
            .await
            .unwrap();
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
                keys: 0,
                members: 0,
                usage: Usage {
                    clusters: 1,
                    bytes: cluster_bytes("aaaaaaaaaaaa"),
                },
                read_only: false,
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

    async fn usage(store: &SqliteStore) -> Usage {
        store.inventory(0).await.unwrap().usage
    }

    #[tokio::test]
    async fn usage_follows_every_write_and_is_recounted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        let (a, b) = ("aaaaaaaaaaaa", "bbbbbbbbbbbb");
        for pin in [a, b] {
            store
                .create_cluster(record(pin), Quota::default())
                .await
                .unwrap();
        }
        let rows = 2 * cluster_bytes(a);
        assert_eq!(
            usage(&store).await,
            Usage {
                clusters: 2,
                bytes: rows
            }
        );
        store.create_key(new_key(a, "k", "12345")).await.unwrap();
        store.create_key(new_key(a, "j", "1")).await.unwrap();
        store.create_key(new_key(b, "k", "1")).await.unwrap();
        let keys = key_bytes(a, "k", "12345") + key_bytes(a, "j", "1") + key_bytes(b, "k", "1");
        assert_eq!(usage(&store).await.bytes, rows + keys);
        let (pin, k) = (a.to_string(), "k".to_string());
        store
            .replace_key(pin.clone(), k.clone(), "12".into(), Quota::default())
            .await
            .unwrap();
        let keys = keys - 3;
        assert_eq!(usage(&store).await.bytes, rows + keys);
        store.delete_key(pin.clone(), "j".into()).await.unwrap();
        let keys = keys - key_bytes(a, "j", "1");
        let before_close = usage(&store).await;
        assert_eq!(before_close.bytes, rows + keys);
        store.close();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(usage(&store).await, before_close);
        store.delete_cluster(pin).await.unwrap();
        assert_eq!(
            usage(&store).await,
            Usage {
                clusters: 1,
                bytes: cluster_bytes(b) + key_bytes(b, "k", "1"),
            }
        );
        // Expired at 2_000: the sweep empties it, then forgets it.
        store.sweep(2_000, 0).await.unwrap();
        assert_eq!(
            usage(&store).await,
            Usage {
                clusters: 1,
                bytes: cluster_bytes(b),
            }
        );
        store.sweep(3_000, 2_500).await.unwrap();
        assert_eq!(usage(&store).await, Usage::default());
    }

    #[tokio::test]
    async fn writes_past_a_cap_are_refused_and_leave_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (a, b) = ("aaaaaaaaaaaa", "bbbbbbbbbbbb");
        let one_cluster = Quota {
            max_clusters: 1,
            max_bytes: 0,
        };
        store.create_cluster(record(a), one_cluster).await.unwrap();
        assert_eq!(
            store.create_cluster(record(b), one_cluster).await,
            Err(StoreError::AtCap(Cap::Clusters(1)))
        );
        assert_eq!(store.cluster(b).await.unwrap(), None);

        // Room for the cluster row and one key of 5 bytes of value, not a byte more.
        let max_bytes = cluster_bytes(a) + key_bytes(a, "k", "12345");
        let tight = Quota {
            max_clusters: 0,
            max_bytes,
        };
        let capped = |key: &str, value: &str| NewKey {
            quota: tight,
            ..new_key(a, key, value)
        };
        assert_eq!(
            store.create_key(capped("k", "123456")).await,
            Err(StoreError::AtCap(Cap::Bytes(max_bytes)))
        );
        store.create_key(capped("k", "12345")).await.unwrap();
        assert_eq!(
            store.create_key(capped("j", "")).await,
            Err(StoreError::AtCap(Cap::Bytes(max_bytes)))
        );
        let (pin, k) = (a.to_string(), "k".to_string());
        assert_eq!(
            store
                .replace_key(pin.clone(), k.clone(), "123456".into(), tight)
                .await,
            Err(StoreError::AtCap(Cap::Bytes(max_bytes)))
        );
        assert_eq!(value(&store, a, "k").await.as_deref(), Some("12345"));
        // Shrinking always fits, and makes room again.
        assert!(store
            .replace_key(pin.clone(), k.clone(), "1".into(), tight)
            .await
            .unwrap());
        assert!(store
            .replace_key(pin, k, "12345".into(), tight)
            .await
            .unwrap());
        assert_eq!(usage(&store).await.bytes, max_bytes);
    }

    /// Caps the database at its current size, as a full disk would.
    fn set_full(store: &SqliteStore, full: bool) {
        let conn = store.inner.conn.lock().unwrap();
        let conn = conn.as_ref().unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        let max = if full { pages } else { i64::from(u32::MAX) };
        conn.pragma_update(None, "max_page_count", max).unwrap();
    }

    #[tokio::test]
    async fn a_full_database_reads_and_takes_writes_again_once_they_fit() {
        let store = SqliteStore::open_in_memory().unwrap();
        let pin = "aaaaaaaaaaaa";
        store
            .create_cluster(record(pin), Quota::default())
            .await
            .unwrap();
        store.create_key(new_key(pin, "k", "1")).await.unwrap();
        set_full(&store, true);
        let big = "x".repeat(8000);
        assert_eq!(
            store.create_key(new_key(pin, "big", &big)).await,
            Err(StoreError::Full)
        );
        assert!(store.inventory(0).await.unwrap().read_only);
        assert_eq!(value(&store, pin, "k").await.as_deref(), Some("1"));
        assert_eq!(value(&store, pin, "big").await, None);
        set_full(&store, false);
        store.create_key(new_key(pin, "big", &big)).await.unwrap();
        assert!(!store.inventory(0).await.unwrap().read_only);
    }
}
