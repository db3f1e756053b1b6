//! The store seam: what the service needs from durable storage, whatever holds it (afterburn's
//! `MetadataProvider` is the model). [`AppState`](super::AppState) decides what a request
//! means (expiry at read time, admin tokens, answers); a [`Store`] keeps clusters and keys, makes
//! writes durable before it returns, enforces uniqueness itself, and reports every committed
//! change to one [`ChangeSink`], so that parked long-polls wake wherever the write came from.
//!
//! - [`sqlite`]: one process, one SQLite file (or memory), with every cluster cached in memory
//!   so that reads cost a map lookup.
//! - [`postgres`]: PostgreSQL, shared by any number of replicas, woken across them by
//!   LISTEN/NOTIFY.
//! - [`faulty`]: wraps another store and fails or delays its operations on demand, for tests.
//!
//! Every operation is async and may be served by another machine: nothing here assumes that
//! the process holds the data. This module imports nothing else of the server.

pub mod faulty;
pub mod postgres;
pub mod sqlite;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use crate::secret::redact;

/// What every store operation returns: an answer at hand (a read from a cache, without an
/// allocation: the GET hot path costs what a map lookup costs) or a boxed future to await.
pub enum StoreFuture<'a, T> {
    Ready(Option<Result<T, StoreError>>),
    Pending(Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>),
}

impl<'a, T> StoreFuture<'a, T> {
    pub fn ready(result: Result<T, StoreError>) -> Self {
        StoreFuture::Ready(Some(result))
    }

    pub fn pending(future: impl Future<Output = Result<T, StoreError>> + Send + 'a) -> Self {
        StoreFuture::Pending(Box::pin(future))
    }
}

impl<T: Unpin> Future for StoreFuture<'_, T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            StoreFuture::Ready(result) => Poll::Ready(
                result
                    .take()
                    .expect("a StoreFuture polled after it was ready"),
            ),
            StoreFuture::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

/// Receives every committed change, from this process or (for a shared database) another.
pub type ChangeSink = Arc<dyn Fn(Change<'_>) + Send + Sync>;

/// Why an operation was refused or failed. Nothing of a failed write is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint: the PIN or the key already exists.
    #[error("already exists")]
    Conflict,
    /// The cluster is not in the store.
    #[error("no such cluster")]
    NoCluster,
    /// The cluster had expired when the write was made.
    #[error("the cluster has expired")]
    Expired,
    /// The cluster already holds this many keys.
    #[error("the cluster already holds {0} keys")]
    TooManyKeys(usize),
    /// The cluster already holds this many members.
    #[error("the cluster already holds {0} members")]
    TooManyMembers(u64),
    /// The disk (or the database's quota) is full; retrying later may succeed.
    #[error("the disk is full")]
    Full,
    /// The write would take the store past one of the service's [`Quota`] caps.
    #[error("{0}")]
    AtCap(Cap),
    /// The store is closed: the server is shutting down.
    #[error("the store is closed")]
    Closed,
    /// A transient failure (I/O, a database that cannot be reached); retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
}

/// The caps on what the whole store may hold, given with every write that adds to it; 0 is
/// no cap. Checked by the store itself, with its writes, so that concurrent writes cannot
/// pass a cap together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quota {
    /// Clusters stored, live and expired alike (an expired one is a row until the sweep
    /// forgets it).
    pub max_clusters: u64,
    /// [`Usage::bytes`] stored.
    pub max_bytes: u64,
}

/// Which cap of the [`Quota`] a write would pass, with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cap {
    #[error("the service already holds its maximum of {0} clusters")]
    Clusters(u64),
    #[error("the service already holds its maximum of {0} bytes of PINs, keys and values")]
    Bytes(u64),
}

/// What the store holds, as the [`Quota`] counts it. Every store counts the same way:
/// [`cluster_bytes`] per cluster, [`key_bytes`] per key, [`member_bytes`] per member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Clusters, live and expired.
    pub clusters: u64,
    /// The bytes of their rows: PINs, timestamps, token digests, key names and values,
    /// members.
    pub bytes: u64,
}

/// A cluster row without its PIN: two timestamps and a token digest.
const CLUSTER_FIELDS_BYTES: u64 = 8 + 8 + 32;

/// The bytes a cluster's own row counts against [`Quota::max_bytes`].
pub fn cluster_bytes(pin: &str) -> u64 {
    pin.len() as u64 + CLUSTER_FIELDS_BYTES
}

/// The bytes a key's row counts against [`Quota::max_bytes`]: it holds its PIN too.
pub fn key_bytes(pin: &str, key: &str, value: &str) -> u64 {
    (pin.len() + key.len() + value.len()) as u64
}

impl Quota {
    /// Whether `usage` may grow by `clusters` and `bytes`; shrinking is always allowed.
    pub fn admits(&self, usage: Usage, clusters: u64, bytes: u64) -> Result<(), Cap> {
        if clusters > 0
            && self.max_clusters > 0
            && usage.clusters.saturating_add(clusters) > self.max_clusters
        {
            return Err(Cap::Clusters(self.max_clusters));
        }
        if bytes > 0 && self.max_bytes > 0 && usage.bytes.saturating_add(bytes) > self.max_bytes {
            return Err(Cap::Bytes(self.max_bytes));
        }
        Ok(())
    }
}

/// A cluster's own record, without its keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterRecord {
    pub pin: String,
    pub created_ms: i64,
    /// Wall-clock milliseconds; at and after it the PIN answers 410.
    pub expires_ms: i64,
    /// SHA-256 of the admin token; the token itself is never stored.
    pub token_hash: [u8; 32],
}

impl fmt::Debug for ClusterRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterRecord")
            .field("pin", &redact(&self.pin))
            .field("created_ms", &self.created_ms)
            .field("expires_ms", &self.expires_ms)
            .finish_non_exhaustive()
    }
}

/// One key read: its cluster's expiry (the caller decides what "expired" means now) and the
/// value if the key exists. The hot path, so nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRead {
    pub expires_ms: i64,
    pub value: Option<String>,
}

/// Every key of a cluster, sorted by name, with the cluster's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysRead {
    pub expires_ms: i64,
    pub keys: Vec<(String, String)>,
}

/// A create-only write of one key.
pub struct NewKey {
    pub pin: String,
    pub key: String,
    pub value: String,
    /// Refused with [`StoreError::Expired`] if the cluster expires at or before this instant.
    pub now_ms: i64,
    /// Refused with [`StoreError::TooManyKeys`] if the cluster already holds this many.
    pub max_keys: usize,
    /// Refused with [`StoreError::AtCap`] if the key would take the store past it.
    pub quota: Quota,
}

/// The bytes a member's row counts against [`Quota::max_bytes`]: its PIN, node name and
/// address, a role byte and two timestamps.
pub fn member_bytes(pin: &str, node: &str, address: &str) -> u64 {
    (pin.len() + node.len() + address.len()) as u64 + 1 + 8 + 8
}

/// What a node says it is in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "master" => Some(Role::Master),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// One registered node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// 16 of `[a-z0-9]`, chosen by the node; reveals nothing about the machine.
    pub node: String,
    pub role: Role,
    /// An IP address, or a sealed one the service cannot read.
    pub address: String,
    /// Wall-clock milliseconds of the first registration; kept by later ones.
    pub joined_ms: i64,
    /// Wall-clock milliseconds of the latest registration.
    pub last_seen_ms: i64,
}

/// Every member of a cluster in joining order, with the cluster's expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersRead {
    pub expires_ms: i64,
    pub members: Vec<MemberRecord>,
}

/// A registration: creates the member, or updates its role, address and `last_seen`.
pub struct NewMember {
    pub pin: String,
    pub node: String,
    pub role: Role,
    pub address: String,
    /// The registration's time; refused with [`StoreError::Expired`] if the cluster expires
    /// at or before it.
    pub now_ms: i64,
    /// Refused with [`StoreError::TooManyMembers`] if a new member would pass it.
    pub max_members: u64,
    /// Refused with [`StoreError::AtCap`] if the row would take the store past it.
    pub quota: Quota,
}

/// Whether a registration created its member or updated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    Joined,
    Updated,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired clusters whose keys were deleted (their PINs still answer 410).
    pub emptied: u64,
    /// Clusters forgotten altogether (their PINs now answer 404).
    pub forgotten: u64,
}

/// What the store holds right now, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Clusters whose PIN is live.
    pub clusters: u64,
    /// Expired clusters still answering 410 until the sweep forgets them.
    pub tombstones: u64,
    /// Keys of live clusters.
    pub keys: u64,
    /// Members of live clusters.
    pub members: u64,
    /// Everything stored, as the [`Quota`] counts it.
    pub usage: Usage,
    /// The store cannot write (its disk is full): reads are served, writes refused.
    pub read_only: bool,
}

/// A committed change, as reported to the [`ChangeSink`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    pub pin: &'a str,
    pub what: Changed<'a>,
}

/// What of a cluster a [`Change`] concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed<'a> {
    /// This key was created or replaced.
    Key(&'a str),
    /// A member registered (joined, or registered again).
    Members,
    /// The whole cluster: deleted, expired, swept.
    Cluster,
    /// Anything may have changed (the store may have missed reports, e.g. while its
    /// notification connection was down): every waiter of every PIN re-checks. The PIN of
    /// such a change means nothing.
    Everything,
}

impl fmt::Debug for Change<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("pin", &redact(self.pin))
            .field("what", &self.what)
            .finish()
    }
}

/// Durable storage of clusters and keys.
///
/// Writes return only once the change is durable, and report it to the sink before they
/// return, so that a reader woken by the change finds it. Reads see every write that has
/// returned, from any process sharing the store. Deleting a key reports nothing: long-polls
/// wait for keys to appear, never to vanish.
///
/// A store whose disk is full is read-only, not down: it opens, serves reads, refuses writes
/// with [`StoreError::Full`], and takes writes again once space returns, without reopening.
pub trait Store: Send + Sync {
    /// Sets where changes are reported. Called once, before the first write.
    fn subscribe(&self, sink: ChangeSink);

    /// Creates a cluster without keys; [`StoreError::Conflict`] if its PIN is taken,
    /// [`StoreError::AtCap`] if it would pass a cap of `quota`.
    fn create_cluster(&self, cluster: ClusterRecord, quota: Quota) -> StoreFuture<'_, ()>;

    /// The cluster of `pin`, expired or not; `None` if it is not stored.
    fn cluster<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<ClusterRecord>>;

    /// One key of `pin`; `None` if the cluster is not stored.
    fn key<'a>(&'a self, pin: &'a str, key: &'a str) -> StoreFuture<'a, Option<KeyRead>>;

    /// Every key of `pin`; `None` if the cluster is not stored.
    fn keys<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<KeysRead>>;

    /// Create-only: of concurrent creates of one key, exactly one succeeds, the others get
    /// [`StoreError::Conflict`], decided by the store itself.
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, ()>;

    /// Replaces an existing value; false if there is no such key, [`StoreError::AtCap`] if
    /// a longer value would pass the byte cap of `quota`.
    fn replace_key(
        &self,
        pin: String,
        key: String,
        value: String,
        quota: Quota,
    ) -> StoreFuture<'_, bool>;

    /// False if there was no such key.
    fn delete_key(&self, pin: String, key: String) -> StoreFuture<'_, bool>;

    /// Registers a member, or updates it (keeping its `joined_ms` and place in the joining
    /// order); [`StoreError::NoCluster`], [`StoreError::Expired`],
    /// [`StoreError::TooManyMembers`] and [`StoreError::AtCap`] refuse it.
    fn put_member(&self, new: NewMember) -> StoreFuture<'_, Registered>;

    /// Every member of `pin` in joining order; `None` if the cluster is not stored.
    fn members<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<MembersRead>>;

    /// False if there was no such member.
    fn delete_member(&self, pin: String, node: String) -> StoreFuture<'_, bool>;

    /// Deletes a cluster, its keys and its members at once; false if there was no such
    /// cluster.
    fn delete_cluster(&self, pin: String) -> StoreFuture<'_, bool>;

    /// Deletes the keys and members of clusters expired at `now_ms`, and the clusters
    /// themselves once
    /// expired before `forget_before_ms`.
    fn sweep(&self, now_ms: i64, forget_before_ms: i64) -> StoreFuture<'_, Swept>;

    /// Counts at `now_ms`, and whether the store takes writes.
    fn inventory(&self, now_ms: i64) -> StoreFuture<'_, Inventory>;

    /// Whether the store can serve requests now (readiness, `/healthz`); by default, always.
    fn ready(&self) -> StoreFuture<'_, ()> {
        StoreFuture::ready(Ok(()))
    }

    /// Stops taking writes ([`StoreError::Closed`] from then on) and releases the storage.
    /// Nothing acknowledged is lost.
    fn close(&self);
}
