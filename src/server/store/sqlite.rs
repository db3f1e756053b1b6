//! [`SqliteStore`]: SQLite in WAL mode, one connection, every write committed (and, with
//! `synchronous=FULL`, fsynced) before it returns, and every cluster cached in memory so that
//! reads are one map lookup under a read lock and never touch SQLite.
//!
//! The file is locked exclusively for the life of the process, which is what makes the cache
//! the truth: no other process can write behind it. Writes run on one writer thread and follow
//! one order: commit, then change the cache, then report the change. So a reader sees a value
//! only once it is durable. The uniqueness of a key within a cluster is the table's primary
//! key, so a create that races another is refused by SQLite itself.
//!
//! Group commit: the writer takes every write queued while it was busy (up to
//! [`MAX_BATCH`]) into one transaction, each write in a savepoint of its own, and commits
//! them with one fsync. A write that is refused (a conflict, a cap, an expired cluster) rolls
//! back its savepoint only; the others commit. Checks within a batch see the writes before
//! them in it ([`Staged`]: what the batch changed so far, over the cache, and the usage), so
//! caps and create-only stay exact, and a write costs the same whatever the size of its
//! cluster. No write of a batch is answered before the batch's commit has returned; if the
//! commit fails, every write of the batch fails with it and the cache is left as it was. A
//! write that panics (a bug) fails its batch the same way, and the writer goes on, having read
//! the cache again from the file.
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
    panic::AssertUnwindSafe,
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc, Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard,
    },
};

use anyhow::Context;
use rusqlite::{params, Connection, ErrorCode, TransactionBehavior};

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

/// At most this many writes go into one transaction.
const MAX_BATCH: usize = 512;

/// A cluster as cached: its record, its keys, sorted so that listings are stable, and its
/// members in joining order.
#[derive(Clone)]
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

/// Every cluster in the file, and what they add up to: changed only through its methods, so
/// the count cannot drift from what is cached.
#[derive(Default)]
struct Cache {
    clusters: HashMap<String, Cached>,
    usage: Usage,
}

/// Every change to the cache goes through these methods (at load, and when a batch's changes
/// are replayed after its commit), so the usage cannot drift from what is cached.
impl Cache {
    fn get(&self, pin: &str) -> Option<&Cached> {
        self.clusters.get(pin)
    }

    fn insert_cluster(&mut self, record: ClusterRecord) {
        if let Some(old) = self.clusters.remove(&record.pin) {
            self.forget(&old);
        }
        let usage = &mut self.usage;
        usage.clusters += 1;
        usage.bytes += cluster_bytes(&record.pin);
        let cluster = Cached {
            record,
            keys: BTreeMap::new(),
            members: Vec::new(),
        };
        self.clusters.insert(cluster.record.pin.clone(), cluster);
    }

    fn remove_cluster(&mut self, pin: &str) -> bool {
        let Some(old) = self.clusters.remove(pin) else {
            return false;
        };
        self.forget(&old);
        true
    }

    fn forget(&mut self, cluster: &Cached) {
        let usage = &mut self.usage;
        usage.clusters -= 1;
        usage.bytes -= cluster_bytes(&cluster.record.pin) + cluster.contents_bytes();
    }

    /// Sets a key of a cached cluster, new or replaced.
    fn set_key(&mut self, pin: &str, key: String, value: String) {
        let Some(cluster) = self.clusters.get_mut(pin) else {
            return;
        };
        let mut bytes = key_bytes(pin, &key, &value) as i64;
        if let Some(old) = cluster.keys.insert(key.clone(), value) {
            bytes -= key_bytes(pin, &key, &old) as i64;
        }
        grow(&mut self.usage, bytes);
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
        let mut bytes = member_bytes(pin, &member.node, &member.address) as i64;
        match cluster.members.iter_mut().find(|m| m.node == member.node) {
            Some(old) => {
                bytes -= member_bytes(pin, &old.node, &old.address) as i64;
                *old = MemberRecord {
                    joined_ms: old.joined_ms,
                    ..member
                };
            }
            None => cluster.members.push(member),
        }
        grow(&mut self.usage, bytes);
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
        let bytes = cluster.contents_bytes();
        cluster.keys.clear();
        cluster.members.clear();
        self.usage.bytes -= bytes;
    }
}

fn grow(usage: &mut Usage, bytes: i64) {
    usage.bytes = usage.bytes.saturating_add_signed(bytes);
}

/// The cache as the writes of one batch see it: the committed cache under what the batch has
/// changed so far, and the log of those changes, applied to the cache once the batch has
/// committed and dropped if it has not; readers never see it. Only what changed is held, not a
/// copy of each cluster touched: a write costs the same in a cluster of one key as in one of
/// a thousand.
struct Staged<'a> {
    committed: RwLockReadGuard<'a, Cache>,
    /// PIN → the cluster as the batch's writes so far left it (`None`: removed).
    changed: HashMap<String, Option<Delta>>,
    usage: Usage,
    /// The batch's changes in order, replayed on the cache after the commit.
    redo: Vec<Redo>,
    /// The changes to report, in order, each with the index of the write that made it.
    reports: Vec<(usize, String, Committed)>,
    /// The write running now, for its reports.
    current: usize,
}

/// One cluster as a batch left it, over its committed state.
struct Delta {
    record: ClusterRecord,
    /// Whether its committed keys and members lie under the changes: not once the batch has
    /// created the cluster anew or emptied it.
    on_committed: bool,
    /// Key → its value now (`None`: removed).
    keys: HashMap<String, Option<String>>,
    key_count: usize,
    /// Node → the member now (`None`: removed).
    members: HashMap<String, Option<MemberRecord>>,
    member_count: usize,
}

impl Delta {
    fn new(record: ClusterRecord) -> Delta {
        Delta {
            record,
            on_committed: false,
            keys: HashMap::new(),
            key_count: 0,
            members: HashMap::new(),
            member_count: 0,
        }
    }
}

/// A change of a batch, for the cache.
enum Redo {
    InsertCluster(ClusterRecord),
    RemoveCluster(String),
    SetKey {
        pin: String,
        key: String,
        value: String,
    },
    RemoveKey {
        pin: String,
        key: String,
    },
    PutMember {
        pin: String,
        member: MemberRecord,
    },
    RemoveMember {
        pin: String,
        node: String,
    },
    ClearContents(String),
}

impl Redo {
    fn apply(self, cache: &mut Cache) {
        match self {
            Redo::InsertCluster(record) => cache.insert_cluster(record),
            Redo::RemoveCluster(pin) => {
                cache.remove_cluster(&pin);
            }
            Redo::SetKey { pin, key, value } => cache.set_key(&pin, key, value),
            Redo::RemoveKey { pin, key } => cache.remove_key(&pin, &key),
            Redo::PutMember { pin, member } => cache.put_member(&pin, member),
            Redo::RemoveMember { pin, node } => cache.remove_member(&pin, &node),
            Redo::ClearContents(pin) => cache.clear_contents(&pin),
        }
    }
}

impl<'a> Staged<'a> {
    fn new(committed: RwLockReadGuard<'a, Cache>) -> Self {
        let usage = committed.usage;
        Staged {
            committed,
            changed: HashMap::new(),
            usage,
            redo: Vec::new(),
            reports: Vec::new(),
            current: 0,
        }
    }

    fn usage_now(&self) -> Usage {
        self.usage
    }

    fn delta(&self, pin: &str) -> Option<&Delta> {
        self.changed.get(pin).and_then(Option::as_ref)
    }

    /// The committed cluster whose contents lie under the batch's changes, if they do.
    fn base(&self, pin: &str) -> Option<&Cached> {
        match self.changed.get(pin) {
            Some(Some(delta)) if delta.on_committed => self.committed.clusters.get(pin),
            Some(_) => None,
            None => self.committed.clusters.get(pin),
        }
    }

    fn record(&self, pin: &str) -> Option<&ClusterRecord> {
        match self.changed.get(pin) {
            Some(delta) => delta.as_ref().map(|d| &d.record),
            None => self.committed.clusters.get(pin).map(|c| &c.record),
        }
    }

    fn key(&self, pin: &str, key: &str) -> Option<&str> {
        if let Some(value) = self.delta(pin).and_then(|d| d.keys.get(key)) {
            return value.as_deref();
        }
        self.base(pin)?.keys.get(key).map(String::as_str)
    }

    fn key_count(&self, pin: &str) -> usize {
        match self.changed.get(pin) {
            Some(delta) => delta.as_ref().map_or(0, |d| d.key_count),
            None => self.committed.clusters.get(pin).map_or(0, |c| c.keys.len()),
        }
    }

    fn member(&self, pin: &str, node: &str) -> Option<&MemberRecord> {
        if let Some(member) = self.delta(pin).and_then(|d| d.members.get(node)) {
            return member.as_ref();
        }
        self.base(pin)?.member(node)
    }

    fn member_count(&self, pin: &str) -> usize {
        match self.changed.get(pin) {
            Some(delta) => delta.as_ref().map_or(0, |d| d.member_count),
            None => self
                .committed
                .clusters
                .get(pin)
                .map_or(0, |c| c.members.len()),
        }
    }

    /// Every cluster as the batch sees it: its record, and whether it holds nothing.
    fn each(&self, mut f: impl FnMut(&ClusterRecord, bool)) {
        for (pin, cluster) in &self.committed.clusters {
            if !self.changed.contains_key(pin) {
                f(
                    &cluster.record,
                    cluster.keys.is_empty() && cluster.members.is_empty(),
                );
            }
        }
        for delta in self.changed.values().flatten() {
            f(
                &delta.record,
                delta.key_count == 0 && delta.member_count == 0,
            );
        }
    }

    /// What a cluster's keys and members count, as the batch sees them. As long as the
    /// cluster: for removals only.
    fn contents_bytes(&self, pin: &str) -> u64 {
        let delta = self.delta(pin);
        let mut bytes = 0;
        if let Some(base) = self.base(pin) {
            let kept_key = |k: &String| delta.map_or(true, |d| !d.keys.contains_key(k));
            let kept_member = |n: &String| delta.map_or(true, |d| !d.members.contains_key(n));
            bytes += base
                .keys
                .iter()
                .filter(|(k, _)| kept_key(k))
                .map(|(k, v)| key_bytes(pin, k, v))
                .sum::<u64>();
            bytes += base
                .members
                .iter()
                .filter(|m| kept_member(&m.node))
                .map(|m| member_bytes(pin, &m.node, &m.address))
                .sum::<u64>();
        }
        if let Some(delta) = delta {
            bytes += delta
                .keys
                .iter()
                .filter_map(|(k, v)| Some(key_bytes(pin, k, v.as_deref()?)))
                .sum::<u64>();
            bytes += delta
                .members
                .values()
                .flatten()
                .map(|m| member_bytes(pin, &m.node, &m.address))
                .sum::<u64>();
        }
        bytes
    }

    /// The cluster's delta, begun over its committed state at its first change.
    fn change(&mut self, pin: &str) -> Option<&mut Delta> {
        if !self.changed.contains_key(pin) {
            let cluster = self.committed.clusters.get(pin)?;
            let delta = Delta {
                on_committed: true,
                key_count: cluster.keys.len(),
                member_count: cluster.members.len(),
                ..Delta::new(cluster.record.clone())
            };
            self.changed.insert(pin.to_string(), Some(delta));
        }
        self.changed.get_mut(pin)?.as_mut()
    }

    /// Takes a cluster out of the usage and marks it removed; whether there was one.
    fn forget(&mut self, pin: &str) -> bool {
        if self.record(pin).is_none() {
            return false;
        }
        let bytes = cluster_bytes(pin) + self.contents_bytes(pin);
        self.usage.clusters -= 1;
        self.usage.bytes -= bytes;
        self.changed.insert(pin.to_string(), None);
        true
    }

    fn insert_cluster(&mut self, record: ClusterRecord) {
        self.forget(&record.pin);
        self.usage.clusters += 1;
        self.usage.bytes += cluster_bytes(&record.pin);
        self.changed
            .insert(record.pin.clone(), Some(Delta::new(record.clone())));
        self.redo.push(Redo::InsertCluster(record));
    }

    fn remove_cluster(&mut self, pin: &str) {
        if self.forget(pin) {
            self.redo.push(Redo::RemoveCluster(pin.to_string()));
        }
    }

    /// Sets a key of a cluster, new or replaced.
    fn set_key(&mut self, pin: &str, key: String, value: String) {
        let old = self.key(pin, &key).map(|old| key_bytes(pin, &key, old));
        let Some(delta) = self.change(pin) else {
            return;
        };
        if old.is_none() {
            delta.key_count += 1;
        }
        delta.keys.insert(key.clone(), Some(value.clone()));
        let bytes = key_bytes(pin, &key, &value) as i64 - old.unwrap_or(0) as i64;
        grow(&mut self.usage, bytes);
        let pin = pin.to_string();
        self.redo.push(Redo::SetKey { pin, key, value });
    }

    fn remove_key(&mut self, pin: &str, key: &str) {
        let Some(old) = self.key(pin, key).map(|old| key_bytes(pin, key, old)) else {
            return;
        };
        let Some(delta) = self.change(pin) else {
            return;
        };
        delta.key_count -= 1;
        delta.keys.insert(key.to_string(), None);
        self.usage.bytes -= old;
        let (pin, key) = (pin.to_string(), key.to_string());
        self.redo.push(Redo::RemoveKey { pin, key });
    }

    /// Registers a member: a known one keeps its `joined_ms` (and, in the cache, its place).
    fn put_member(&mut self, pin: &str, member: MemberRecord) {
        let old = self
            .member(pin, &member.node)
            .map(|old| (member_bytes(pin, &old.node, &old.address), old.joined_ms));
        let Some(delta) = self.change(pin) else {
            return;
        };
        let mut now = member.clone();
        match old {
            Some((_, joined_ms)) => now.joined_ms = joined_ms,
            None => delta.member_count += 1,
        }
        delta.members.insert(member.node.clone(), Some(now));
        let bytes = member_bytes(pin, &member.node, &member.address) as i64
            - old.map_or(0, |(bytes, _)| bytes) as i64;
        grow(&mut self.usage, bytes);
        let pin = pin.to_string();
        self.redo.push(Redo::PutMember { pin, member });
    }

    fn remove_member(&mut self, pin: &str, node: &str) {
        let Some(old) = self
            .member(pin, node)
            .map(|old| member_bytes(pin, &old.node, &old.address))
        else {
            return;
        };
        let Some(delta) = self.change(pin) else {
            return;
        };
        delta.member_count -= 1;
        delta.members.insert(node.to_string(), None);
        self.usage.bytes -= old;
        let (pin, node) = (pin.to_string(), node.to_string());
        self.redo.push(Redo::RemoveMember { pin, node });
    }

    /// What the sweep does to an expired cluster it keeps: its keys and members go.
    fn clear_contents(&mut self, pin: &str) {
        let bytes = self.contents_bytes(pin);
        let Some(delta) = self.change(pin) else {
            return;
        };
        *delta = Delta::new(delta.record.clone());
        self.usage.bytes -= bytes;
        self.redo.push(Redo::ClearContents(pin.to_string()));
    }

    /// Records a change, reported by the write that made it once the batch has committed.
    fn report(&mut self, pin: &str, what: Changed<'_>) {
        let what = match what {
            Changed::Key(key) => Committed::Key(key.to_string()),
            Changed::Members => Committed::Members,
            Changed::Cluster => Committed::Cluster,
            Changed::Everything => Committed::Everything,
        };
        self.reports.push((self.current, pin.to_string(), what));
    }
}

/// See the module documentation.
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// To the writer thread, which ends when this goes.
    jobs: mpsc::Sender<Job>,
}

struct Inner {
    /// Every cluster in the file, committed changes only.
    cache: RwLock<Cache>,
    /// The one connection, which writes; `None` once closed.
    conn: Mutex<Option<Connection>>,
    sink: OnceLock<ChangeSink>,
    /// The last write found the disk full (see the module documentation).
    read_only: AtomicBool,
    /// Transactions committed by the writer, each a batch of writes.
    batches: AtomicU64,
}

/// A write's answer and the changes it made, sent to its task once its batch is durable.
type Answer<T> = (Result<T, StoreError>, Vec<(String, Committed)>);

/// A queued write: run within a batch (`Some`), or refused unrun (`None`, e.g. the store is
/// closed); either way it returns how to answer once the batch's fate is known.
type Job =
    Box<dyn for<'r, 'a> FnOnce(Option<(&'r mut Staged<'a>, &'r Connection)>) -> Finish + Send>;

/// A write that ran: whether it succeeded (so its savepoint is kept), and how to answer it
/// given the commit's outcome and the changes it made.
struct Finish {
    ok: bool,
    /// It found the disk full.
    full: bool,
    answer: AnswerWith,
}

/// Answers a write, given the commit's outcome and the changes the write made.
type AnswerWith = Box<dyn FnOnce(Result<(), StoreError>, Vec<(String, Committed)>) + Send>;

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
        let inner = Arc::new(Inner {
            cache: RwLock::new(cache),
            conn: Mutex::new(Some(conn)),
            sink: OnceLock::new(),
            read_only: AtomicBool::new(false),
            batches: AtomicU64::new(0),
        });
        inner.disk_full(read_only);
        let (jobs, queue) = mpsc::channel();
        let writer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.write_loop(queue))
            .context("cannot start the store's writer thread")?;
        Ok(SqliteStore { inner, jobs })
    }

    /// Queues `op` for the writer thread (SQLite blocks), which runs it in the next batch
    /// (see the module documentation). Its changes are reported from the writing task, not
    /// the writer thread: woken from there, every parked long-poll was queued ahead of the
    /// writer itself, whose answer then waited for theirs; woken from the writing task, they
    /// run after it has answered.
    fn write<T, F>(&self, op: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Staged<'_>, &Connection) -> Result<T, StoreError> + Send + 'static,
    {
        StoreFuture::pending(async move {
            let (done, answer) = tokio::sync::oneshot::channel::<Answer<T>>();
            let job: Job = Box::new(move |run: Option<(&mut Staged<'_>, &Connection)>| {
                let result = run.map(|(staged, conn)| op(staged, conn));
                Finish {
                    ok: matches!(result, Some(Ok(_))),
                    full: matches!(result, Some(Err(StoreError::Full))),
                    answer: Box::new(move |commit, changes| {
                        let answer = match (result, commit) {
                            (Some(Ok(value)), Ok(())) => (Ok(value), changes),
                            (Some(Err(err)), _) | (_, Err(err)) => (Err(err), Vec::new()),
                            (None, Ok(())) => (Err(StoreError::Closed), Vec::new()),
                        };
                        let _ = done.send(answer);
                    }),
                }
            });
            if self.jobs.send(job).is_err() {
                return Err(StoreError::Closed);
            }
            let (result, committed) = answer
                .await
                .map_err(|_| StoreError::Unavailable("a store write stopped".into()))?;
            if let Some(sink) = self.inner.sink.get() {
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

impl Drop for SqliteStore {
    /// Releases the file now, not when the writer thread notices.
    fn drop(&mut self) {
        self.close();
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

    /// The writer thread: every write queued while the last batch ran (or while it waited
    /// for the connection) goes into the next.
    fn write_loop(&self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            // A panic is a bug in a write. It fails its batch only (the tasks of the batch see
            // their answers dropped), not every write after it, as a dead writer thread would.
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| self.run_batch(conn, batch)));
            if ran.is_err() {
                self.reload_after_panic();
            }
        }
    }

    /// The panic may have come after the commit, with the cache half changed: the file is
    /// the truth, so the cache is read again from it.
    fn reload_after_panic(&self) {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let Some(conn) = conn.as_ref() else {
            return;
        };
        match load(conn) {
            Ok(cache) => {
                *self.cache.write().unwrap_or_else(|e| e.into_inner()) = cache;
                tracing::error!(
                    "a store write failed on a bug (a panic, above): its batch \
                    answered 503, the cache was read again from the file"
                );
            }
            Err(err) => tracing::error!(
                "a store write failed on a bug (a panic, above), and the file cannot be read \
                 again ({err:#}): reads may be stale until a restart"
            ),
        }
    }

    /// One transaction for the batch, one savepoint per write; answers every write once the
    /// commit has returned.
    fn run_batch(&self, mut conn: MutexGuard<'_, Option<Connection>>, batch: Vec<Job>) {
        let Some(conn) = conn.as_mut() else {
            for job in batch {
                (job(None).answer)(Err(StoreError::Closed), Vec::new());
            }
            return;
        };
        let mut finished = Vec::with_capacity(batch.len());
        let mut staged = Staged::new(self.read());
        let mut failed: Option<StoreError> = None;
        match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Err(err) => failed = Some(err.into()),
            Ok(tx) => {
                for (index, job) in batch.into_iter().enumerate() {
                    if failed.is_none() {
                        if let Err(err) = in_write(&tx, BEGIN_WRITE) {
                            failed = Some(err.into());
                        }
                    }
                    if failed.is_some() {
                        finished.push(job(None));
                        continue;
                    }
                    staged.current = index;
                    let finish = job(Some((&mut staged, &tx)));
                    // A refused write changed nothing of the staged cache (writes change it
                    // only after their last statement); its statements are rolled back here.
                    let kept = if finish.ok {
                        in_write(&tx, KEEP_WRITE)
                    } else {
                        in_write(&tx, UNDO_WRITE).and_then(|()| in_write(&tx, KEEP_WRITE))
                    };
                    if let Err(err) = kept {
                        // SQLite may roll back the whole transaction on a full disk, taking
                        // the savepoint with it: the batch fails for the write's reason.
                        failed = Some(if finish.full {
                            StoreError::Full
                        } else {
                            err.into()
                        });
                    }
                    finished.push(finish);
                }
                if failed.is_none() {
                    match tx.commit() {
                        Ok(()) => {
                            self.batches.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(err) => failed = Some(err.into()),
                    }
                }
            }
        }
        let Staged {
            committed,
            redo,
            usage,
            reports,
            ..
        } = staged;
        drop(committed);
        let commit = match failed {
            None => {
                if !redo.is_empty() {
                    let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
                    for change in redo {
                        change.apply(&mut cache);
                    }
                    // Two accounts of one batch: the checks used the staged one.
                    debug_assert_eq!(cache.usage, usage, "the staged usage went astray");
                    drop(cache);
                    // A commit shows that the disk takes writes again.
                    self.disk_full(false);
                }
                Ok(())
            }
            Some(err) => Err(err),
        };
        if matches!(commit, Err(StoreError::Full)) || finished.iter().any(|f| f.full) {
            self.disk_full(true);
        }
        let mut reports = reports.into_iter().peekable();
        for (index, finish) in finished.into_iter().enumerate() {
            let mut changes = Vec::new();
            while let Some((_, pin, what)) = reports.next_if(|(i, _, _)| *i == index) {
                changes.push((pin, what));
            }
            (finish.answer)(commit.clone(), changes);
        }
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
}

/// The savepoint of one write within its batch: begun before it, released after it, rolled
/// back to (then released) when it is refused. Prepared once and kept in the connection's
/// cache: rusqlite's `Savepoint` parses its statements anew for every write, which the
/// single writer thread pays for at every POST.
const BEGIN_WRITE: &str = "SAVEPOINT write";
const KEEP_WRITE: &str = "RELEASE write";
const UNDO_WRITE: &str = "ROLLBACK TO write";

fn in_write(conn: &Connection, step: &'static str) -> rusqlite::Result<()> {
    conn.prepare_cached(step)?.execute([]).map(drop)
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
        self.write(move |staged, conn| {
            // Writes are serialized, and the staged usage holds the batch's writes so far: the
            // usage checked here is still the usage at the INSERT.
            let usage = staged.usage_now();
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
            staged.insert_cluster(cluster);
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
        self.write(move |staged, conn| {
            {
                // Writes are serialized, so these checks still hold at the INSERT.
                let usage = staged.usage_now();
                let record = staged.record(&new.pin).ok_or(StoreError::NoCluster)?;
                if record.expires_ms <= new.now_ms {
                    return Err(StoreError::Expired);
                }
                if staged.key_count(&new.pin) >= new.max_keys {
                    return Err(StoreError::TooManyKeys(new.max_keys));
                }
                new.quota
                    .admits(usage, 0, key_bytes(&new.pin, &new.key, &new.value))
                    .map_err(StoreError::AtCap)?;
            }
            conn.prepare_cached("INSERT INTO keys (pin, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![new.pin, new.key, new.value])?;
            staged.set_key(&new.pin, new.key.clone(), new.value);
            staged.report(&new.pin, Changed::Key(&new.key));
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
        self.write(move |staged, conn| {
            {
                let usage = staged.usage_now();
                let Some(old) = staged.key(&pin, &key) else {
                    return Ok(false);
                };
                let growth = value.len().saturating_sub(old.len()) as u64;
                quota.admits(usage, 0, growth).map_err(StoreError::AtCap)?;
            }
            let changed = conn
                .prepare_cached("UPDATE keys SET value = ?3 WHERE pin = ?1 AND key = ?2")?
                .execute(params![pin, key, value])?;
            if changed == 0 {
                return Ok(false);
            }
            staged.set_key(&pin, key.clone(), value);
            staged.report(&pin, Changed::Key(&key));
            Ok(true)
        })
    }

    fn delete_key(&self, pin: String, key: String) -> StoreFuture<'_, bool> {
        self.write(move |staged, conn| {
            let changed = conn
                .prepare_cached("DELETE FROM keys WHERE pin = ?1 AND key = ?2")?
                .execute(params![pin, key])?;
            if changed == 0 {
                return Ok(false);
            }
            staged.remove_key(&pin, &key);
            Ok(true)
        })
    }

    fn put_member(&self, new: NewMember) -> StoreFuture<'_, Registered> {
        self.write(move |staged, conn| {
            let known = {
                // Writes are serialized, so these checks still hold at the write.
                let usage = staged.usage_now();
                let record = staged.record(&new.pin).ok_or(StoreError::NoCluster)?;
                if record.expires_ms <= new.now_ms {
                    return Err(StoreError::Expired);
                }
                let known = staged.member(&new.pin, &new.node);
                let growth = match known {
                    Some(old) => new.address.len().saturating_sub(old.address.len()) as u64,
                    None if staged.member_count(&new.pin) as u64 >= new.max_members => {
                        return Err(StoreError::TooManyMembers(new.max_members))
                    }
                    None => member_bytes(&new.pin, &new.node, &new.address),
                };
                new.quota
                    .admits(usage, 0, growth)
                    .map_err(StoreError::AtCap)?;
                known.is_some()
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
            staged.put_member(&new.pin, member);
            staged.report(&new.pin, Changed::Members);
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
        self.write(move |staged, conn| {
            let changed = conn
                .prepare_cached("DELETE FROM members WHERE pin = ?1 AND node = ?2")?
                .execute(params![pin, node])?;
            if changed == 0 {
                return Ok(false);
            }
            staged.remove_member(&pin, &node);
            Ok(true)
        })
    }

    fn delete_cluster(&self, pin: String) -> StoreFuture<'_, bool> {
        self.write(move |staged, conn| {
            // In the write's own savepoint: all three or none.
            conn.execute("DELETE FROM keys WHERE pin = ?1", params![pin])?;
            conn.execute("DELETE FROM members WHERE pin = ?1", params![pin])?;
            let changed = conn.execute("DELETE FROM clusters WHERE pin = ?1", params![pin])?;
            if changed == 0 {
                return Ok(false);
            }
            staged.remove_cluster(&pin);
            staged.report(&pin, Changed::Cluster);
            Ok(true)
        })
    }

    fn sweep(&self, now_ms: i64, forget_before_ms: i64) -> StoreFuture<'_, Swept> {
        self.write(move |staged, conn| {
            let emptied = |r: &ClusterRecord, empty: bool| r.expires_ms <= now_ms && !empty;
            let forgotten = |r: &ClusterRecord| r.expires_ms <= forget_before_ms;
            let mut due: Vec<String> = Vec::new();
            staged.each(|record, empty| {
                if emptied(record, empty) || forgotten(record) {
                    due.push(record.pin.clone());
                }
            });
            // Nothing to do is the usual case: no statement, so the commit has nothing to write.
            if due.is_empty() {
                return Ok(Swept::default());
            }
            conn.execute(
                "DELETE FROM keys WHERE pin IN (SELECT pin FROM clusters WHERE expires_ms <= ?1)",
                params![now_ms],
            )?;
            conn.execute(
                "DELETE FROM members WHERE pin IN \
                 (SELECT pin FROM clusters WHERE expires_ms <= ?1)",
                params![now_ms],
            )?;
            conn.execute(
                "DELETE FROM clusters WHERE expires_ms <= ?1",
                params![forget_before_ms],
            )?;
            let mut swept = Swept::default();
            for pin in &due {
                let Some(forget) = staged.record(pin).map(forgotten) else {
                    continue;
                };
                if forget {
                    staged.remove_cluster(pin);
                    swept.forgotten += 1;
                } else {
                    staged.clear_contents(pin);
                    swept.emptied += 1;
                }
            }
            for pin in &due {
                staged.report(pin, Changed::Cluster);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_together_commit_together_and_a_refused_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pins.sqlite3");
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let (a, c) = ("aaaaaaaaaaaa", "cccccccccccc");
        for pin in [a, c] {
            store
                .create_cluster(record(pin), Quota::default())
                .await
                .unwrap();
        }
        let expired = ClusterRecord {
            expires_ms: 1_000,
            ..record("eeeeeeeeeeee")
        };
        store
            .create_cluster(expired, Quota::default())
            .await
            .unwrap();
        store.create_key(new_key(a, "taken", "0")).await.unwrap();
        let before = store.inner.batches.load(Ordering::Relaxed);
        // Hold the connection: every write queued meanwhile goes into the writer's next batch.
        let held = store.inner.conn.lock().unwrap();
        // (PIN, key, the cluster's key cap)
        let writes: Vec<(&str, &str, usize)> = vec![
            (a, "taken", 10),
            (a, "dup", 10),
            (a, "dup", 10),
            ("eeeeeeeeeeee", "k", 10),
            ("nnnnnnnnnnnn", "k", 10),
            (c, "c1", 2),
            (c, "c2", 2),
            (c, "c3", 2),
        ];
        let tasks: Vec<_> = writes
            .iter()
            .map(|&(pin, key, max_keys)| {
                let store = Arc::clone(&store);
                let new = NewKey {
                    max_keys,
                    ..new_key(pin, key, &format!("{pin}/{key}"))
                };
                tokio::spawn(async move { store.create_key(new).await })
            })
            .collect();
        // A blocking sleep, so that no await point holds the lock; the tasks run on the
        // runtime's other worker meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(
            store.inner.batches.load(Ordering::Relaxed),
            before + 1,
            "one commit for the batch"
        );
        assert_eq!(results[0], Err(StoreError::Conflict));
        let mut dup = [results[1].clone(), results[2].clone()];
        dup.sort_by_key(|r| r.is_err());
        assert_eq!(
            dup,
            [Ok(()), Err(StoreError::Conflict)],
            "exactly one create"
        );
        assert_eq!(results[3], Err(StoreError::Expired));
        assert_eq!(results[4], Err(StoreError::NoCluster));
        let refused: Vec<_> = results[5..].iter().filter(|r| r.is_err()).collect();
        assert_eq!(
            refused,
            [&Err(StoreError::TooManyKeys(2))],
            "the cap counts the batch's own writes: {results:?}"
        );
        let usage_then = usage(&store).await;
        // What the batch committed is what the file holds, and the cache counts the same.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            value(&store, a, "dup").await.as_deref(),
            Some("aaaaaaaaaaaa/dup")
        );
        assert_eq!(value(&store, a, "taken").await.as_deref(), Some("0"));
        assert_eq!(store.keys(c).await.unwrap().unwrap().keys.len(), 2);
        assert_eq!(usage(&store).await, usage_then);
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

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let store = SqliteStore::open_in_memory().unwrap();
        let pin = "aaaaaaaaaaaa";
        store
            .create_cluster(record(pin), Quota::default())
            .await
            .unwrap();
        // After its statement and its staged change: both must go with the batch.
        let panicking = store.write(move |staged, conn| {
            conn.execute(
                "INSERT INTO keys (pin, key, value) VALUES (?1, 'k', 'v')",
                params![pin],
            )?;
            staged.set_key(pin, "k".into(), "v".into());
            panic!("a bug in a write");
        });
        let answer: Result<(), StoreError> = panicking.await;
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "{answer:?}"
        );
        // Rolled back with its batch, and the cache read again agrees.
        assert_eq!(value(&store, pin, "k").await, None);
        store.create_key(new_key(pin, "j", "1")).await.unwrap();
        assert_eq!(value(&store, pin, "j").await.as_deref(), Some("1"));
        assert_eq!(
            usage(&store).await.bytes,
            cluster_bytes(pin) + key_bytes(pin, "j", "1")
        );
    }

    /// A write of the differential test below. Small domains, so that the writes of one batch
    /// meet on the same clusters, keys and members, and the caps bite.
    #[derive(Debug, Clone)]
    enum Write {
        CreateCluster {
            pin: usize,
            expired: bool,
        },
        CreateKey {
            pin: usize,
            key: usize,
            len: usize,
        },
        ReplaceKey {
            pin: usize,
            key: usize,
            len: usize,
        },
        DeleteKey {
            pin: usize,
            key: usize,
        },
        PutMember {
            pin: usize,
            node: usize,
            len: usize,
        },
        DeleteMember {
            pin: usize,
            node: usize,
        },
        DeleteCluster {
            pin: usize,
        },
        /// At 2,500 every cluster has expired (writes are at 1,500): the sweep empties them.
        Sweep {
            late: bool,
            forget: bool,
        },
    }

    const PINS: [&str; 2] = ["aaaaaaaaaaaa", "bbbbbbbbbbbb"];
    const NODES: [&str; 3] = [NODE_A, NODE_B, "cccccccccccccccc"];

    fn a_write() -> impl proptest::strategy::Strategy<Value = Write> {
        use proptest::prelude::*;
        let (pin, key, node, len) = (0..PINS.len(), 0..3usize, 0..NODES.len(), 0..40usize);
        prop_oneof![
            (pin.clone(), any::<bool>())
                .prop_map(|(pin, expired)| Write::CreateCluster { pin, expired }),
            (pin.clone(), key.clone(), len.clone()).prop_map(|(pin, key, len)| Write::CreateKey {
                pin,
                key,
                len
            }),
            (pin.clone(), key.clone(), len.clone()).prop_map(|(pin, key, len)| Write::ReplaceKey {
                pin,
                key,
                len
            }),
            (pin.clone(), key).prop_map(|(pin, key)| Write::DeleteKey { pin, key }),
            (pin.clone(), node.clone(), len).prop_map(|(pin, node, len)| Write::PutMember {
                pin,
                node,
                len
            }),
            (pin.clone(), node).prop_map(|(pin, node)| Write::DeleteMember { pin, node }),
            pin.prop_map(|pin| Write::DeleteCluster { pin }),
            (any::<bool>(), any::<bool>()).prop_map(|(late, forget)| Write::Sweep { late, forget }),
        ]
    }

    /// A write's outcome, its answer as text.
    async fn run(store: &SqliteStore, write: Write) -> Result<String, StoreError> {
        let quota = Quota {
            max_clusters: 3,
            max_bytes: 500,
        };
        fn text<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Result<String, StoreError> {
            r.map(|v| format!("{v:?}"))
        }
        match write {
            Write::CreateCluster { pin, expired } => {
                let expires_ms = if expired { 1_000 } else { 2_000 };
                let cluster = ClusterRecord {
                    expires_ms,
                    ..record(PINS[pin])
                };
                text(store.create_cluster(cluster, quota).await)
            }
            Write::CreateKey { pin, key, len } => {
                let new = NewKey {
                    max_keys: 3,
                    quota,
                    ..new_key(PINS[pin], &format!("k{key}"), &"v".repeat(len))
                };
                text(store.create_key(new).await)
            }
            Write::ReplaceKey { pin, key, len } => text(
                store
                    .replace_key(PINS[pin].into(), format!("k{key}"), "w".repeat(len), quota)
                    .await,
            ),
            Write::DeleteKey { pin, key } => {
                text(store.delete_key(PINS[pin].into(), format!("k{key}")).await)
            }
            Write::PutMember { pin, node, len } => {
                let new = NewMember {
                    quota,
                    ..new_member(PINS[pin], NODES[node], &"1".repeat(len))
                };
                text(store.put_member(new).await)
            }
            Write::DeleteMember { pin, node } => text(
                store
                    .delete_member(PINS[pin].into(), NODES[node].into())
                    .await,
            ),
            Write::DeleteCluster { pin } => text(store.delete_cluster(PINS[pin].into()).await),
            Write::Sweep { late, forget } => {
                let now = if late { 2_500 } else { 1_500 };
                text(store.sweep(now, if forget { 1_200 } else { 0 }).await)
            }
        }
    }

    type Snapshot = (
        Vec<(Option<ClusterRecord>, Option<KeysRead>, Option<MembersRead>)>,
        Usage,
    );

    /// Everything the store answers about the clusters of the test.
    async fn snapshot(store: &SqliteStore) -> Snapshot {
        let mut clusters = Vec::new();
        for pin in PINS {
            clusters.push((
                store.cluster(pin).await.unwrap(),
                store.keys(pin).await.unwrap(),
                store.members(pin).await.unwrap(),
            ));
        }
        (clusters, usage(store).await)
    }

    /// Queues every write before the writer may take any, so that they make one batch.
    // The lock is held across the yield on purpose: it is what keeps the writer waiting.
    #[allow(clippy::await_holding_lock)]
    async fn in_one_batch(
        store: &Arc<SqliteStore>,
        writes: &[Write],
    ) -> Vec<Result<String, StoreError>> {
        let before = store.inner.batches.load(Ordering::Relaxed);
        let held = store.inner.conn.lock().unwrap();
        let tasks: Vec<_> = writes
            .iter()
            .map(|write| {
                let (store, write) = (Arc::clone(store), write.clone());
                tokio::spawn(async move { run(&store, write).await })
            })
            .collect();
        // On this one-thread runtime, the spawned tasks run here in order, each up to the
        // queueing of its write, and wait for its answer.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        let batches = store.inner.batches.load(Ordering::Relaxed) - before;
        assert!(
            batches <= 1,
            "{} writes made {batches} batches",
            writes.len()
        );
        results
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A batch answers every write as if the writes had run one at a time, in order, and
        /// leaves the same store: the same answers, the same reads, the same usage, and a file
        /// that reads back as the cache. The first batch makes a committed state for the
        /// second to change.
        #[test]
        fn a_batch_is_its_writes_one_at_a_time(
            first in proptest::collection::vec(a_write(), 0..12),
            second in proptest::collection::vec(a_write(), 1..16),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("pins.sqlite3");
                let batched = Arc::new(SqliteStore::open(&path).unwrap());
                let alone = SqliteStore::open_in_memory().unwrap();
                for writes in [&first, &second] {
                    let answers = in_one_batch(&batched, writes).await;
                    let mut expected = Vec::new();
                    for write in writes.iter() {
                        expected.push(run(&alone, write.clone()).await);
                    }
                    assert_eq!(answers, expected, "the answers of {writes:?}");
                    assert_eq!(snapshot(&batched).await, snapshot(&alone).await);
                }
                let cached = snapshot(&batched).await;
                drop(Arc::into_inner(batched).unwrap());
                let reopened = SqliteStore::open(&path).unwrap();
                assert_eq!(snapshot(&reopened).await, cached, "the file against the cache");
            });
        }
    }
}
