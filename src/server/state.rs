//! The service's state: what a request means, on top of a [`Store`] that keeps the data.
//!
//! Expiry is decided here, at read time, from the cluster's `expires_ms` and the configured
//! [`Clock`](super::Clock); the sweep only reclaims space. Admin tokens are checked here. A
//! write is answered 201/200/204 only once the store has made it durable, and the store
//! reports it to the waiter registry before that, so a woken long-poll finds the value.

use std::{sync::Arc, time::Duration};

use axum::http::HeaderValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::time::Instant;

use super::{
    auth,
    config::Config,
    error::ApiError,
    metrics::Metrics,
    ratelimit::{CreationLimiter, MissLimiter},
    shutdown::{shut_down, Shutdown},
    store::{
        sqlite::SqliteStore, ClusterRecord, Inventory, KeyRead, MemberRecord, MembersRead, NewKey,
        NewMember, Quota, Registered, Role, Store, StoreError, Swept,
    },
    waiters::{Waiters, MEMBERS},
};
use crate::{
    protocol::{self, ClusterInfo, KeyItem, MemberItem},
    secret::redact,
};

/// How often a fresh PIN may collide with an existing one before we give up (at 62 bits, even
/// once is a miracle; a broken random source is not).
const PIN_ATTEMPTS: usize = 8;

/// A key lookup that found the cluster alive.
pub(crate) enum KeyState {
    Found(String),
    /// Not there (yet); a long-poll waits for it until the cluster expires at the latest.
    Absent {
        expires_ms: i64,
    },
}

/// Everything the handlers share. Build one with [`AppState::open`] (or
/// [`AppState::with_store`]) and hand it to [`super::app`].
pub struct AppState {
    store: Arc<dyn Store>,
    /// Parked long-polls, woken by the store's change reports.
    waiters: Arc<Waiters>,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: MissLimiter,
    /// Per-client allowance of PIN creations.
    pub(crate) creations: CreationLimiter,
    /// Flips once, at shutdown; long-polls and connections watch it.
    shutdown: Shutdown,
    /// The value of [`protocol::SERVICE_HEADER`], built once.
    pub(crate) service_header: HeaderValue,
}

impl AppState {
    /// Opens the SQLite store named by `config.db` (in memory when `None`). Blocking: from
    /// async code, open the store inside `spawn_blocking` (as [`super::spawn`] does).
    pub fn open(config: Config) -> anyhow::Result<Arc<AppState>> {
        let store = SqliteStore::open_at(config.db.as_deref())?;
        Ok(AppState::with_store(config, Arc::new(store)))
    }

    /// The state on any store; its change reports feed the waiter registry from now on.
    pub fn with_store(config: Config, store: Arc<dyn Store>) -> Arc<AppState> {
        let waiters = Arc::new(Waiters::default());
        store.subscribe({
            let waiters = Arc::clone(&waiters);
            Arc::new(move |change| waiters.changed(change))
        });
        Arc::new(AppState {
            store,
            waiters,
            limiter: MissLimiter::new(config.miss_burst, config.miss_per_sec),
            creations: CreationLimiter::new(config.create_burst, config.create_per_sec),
            config,
            metrics: Metrics::default(),
            shutdown: Shutdown::new(),
            service_header: HeaderValue::from_str(&protocol::service_header_value())
                .unwrap_or_else(|_| HeaderValue::from_static("clusterctx")),
        })
    }

    fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
    }

    /// The caps on what the whole store may hold, given with every write that adds to it.
    fn quota(&self) -> Quota {
        Quota {
            max_clusters: self.config.max_clusters,
            max_bytes: self.config.max_stored_bytes,
        }
    }

    /// [`store_failed`], counting refusals by a cap.
    fn write_failed(&self, err: StoreError) -> ApiError {
        if let StoreError::AtCap(cap) = err {
            self.metrics.cap_refused(cap);
        }
        store_failed(err)
    }

    /// `found` if it exists and its cluster has not expired now.
    fn alive<T>(&self, found: Option<T>, expires_ms: impl Fn(&T) -> i64) -> Result<T, ApiError> {
        match found {
            None => Err(ApiError::UnknownPin),
            Some(found) if self.now_ms() >= expires_ms(&found) => Err(ApiError::Expired),
            Some(found) => Ok(found),
        }
    }

    async fn live_cluster(&self, pin: &str) -> Result<ClusterRecord, ApiError> {
        check_pin(pin)?;
        let found = self.store.cluster(pin).await.map_err(store_failed)?;
        self.alive(found, |c| c.expires_ms)
    }

    /// `GET /api/v1/clusters/<pin>`.
    pub(crate) async fn cluster_info(&self, pin: &str) -> Result<ClusterInfo, ApiError> {
        let cluster = self.live_cluster(pin).await?;
        Ok(ClusterInfo {
            pin: cluster.pin,
            creation_time: rfc3339(cluster.created_ms),
            expires_at: Some(rfc3339(cluster.expires_ms)),
            admin_token: None,
        })
    }

    /// `GET /api/v1/clusters/<pin>/keys`.
    pub(crate) async fn list_keys(&self, pin: &str) -> Result<Vec<KeyItem>, ApiError> {
        check_pin(pin)?;
        let found = self.store.keys(pin).await.map_err(store_failed)?;
        let read = self.alive(found, |r| r.expires_ms)?;
        Ok(read
            .keys
            .into_iter()
            .map(|(key, value)| KeyItem { key, value })
            .collect())
    }

    /// The hot path: one store read.
    pub(crate) async fn lookup_key(&self, pin: &str, key: &str) -> Result<KeyState, ApiError> {
        check_pin(pin)?;
        let found = self.store.key(pin, key).await.map_err(store_failed)?;
        self.key_state(found)
    }

    /// What a key read means now: expiry is judged at this instant, by each reader.
    fn key_state(&self, found: Option<KeyRead>) -> Result<KeyState, ApiError> {
        let read = self.alive(found, |r| r.expires_ms)?;
        Ok(match read.value {
            Some(value) => KeyState::Found(value),
            None => KeyState::Absent {
                expires_ms: read.expires_ms,
            },
        })
    }

    /// Long-poll: parks until `key` of `pin` is written, the cluster goes away or expires,
    /// `wait` is over, or the server shuts down, whichever comes first. `expires_ms` comes
    /// from the lookup that found the key absent.
    pub(crate) async fn wait_for_key(
        &self,
        pin: &str,
        key: &str,
        wait: Duration,
        expires_ms: i64,
    ) -> Result<String, ApiError> {
        let _counted = self.metrics.waiter();
        let parked = self.waiters.register(pin, key);
        let mut shutdown = self.shutdown.signal();
        let until_expiry = u64::try_from(expires_ms.saturating_sub(self.now_ms())).unwrap_or(0);
        // An expiring PIN answers 410 the moment it expires, not at the end of the wait.
        let deadline = Instant::now() + wait.min(Duration::from_millis(until_expiry));
        let mut woken = false;
        loop {
            // Before the check: a write between the check and the wait still wakes us.
            let notified = parked.notified();
            let state = if woken {
                // One read for every waiter of this key woken by the same change.
                let found = parked
                    .shared_key(|| self.store.key(pin, key))
                    .await
                    .map_err(store_failed)?;
                self.key_state(found)?
            } else {
                self.lookup_key(pin, key).await?
            };
            if let KeyState::Found(value) = state {
                return Ok(value);
            }
            tokio::select! {
                _ = notified => woken = true,
                _ = tokio::time::sleep_until(deadline) => {
                    // A last look: the key may have come at the final instant, or the PIN
                    // expired.
                    return match self.lookup_key(pin, key).await? {
                        KeyState::Found(value) => Ok(value),
                        KeyState::Absent { .. } => Err(ApiError::KeyNotFound),
                    };
                }
                _ = shut_down(&mut shutdown) => return Err(ApiError::ShuttingDown),
            }
        }
    }

    /// `PUT .../members/<node>`: joins the cluster, or registers again (new address or role,
    /// a fresh `last_seen`, the same place in the joining order). `node` and `address` are
    /// checked by the caller.
    pub(crate) async fn register_member(
        &self,
        pin: &str,
        node: String,
        role: Role,
        address: String,
    ) -> Result<Registered, ApiError> {
        check_pin(pin)?;
        let new = NewMember {
            pin: pin.to_string(),
            node: node.clone(),
            role,
            address,
            now_ms: self.now_ms(),
            max_members: self.config.max_members,
            quota: self.quota(),
        };
        let registered = self
            .store
            .put_member(new)
            .await
            .map_err(|err| self.write_failed(err))?;
        if registered == Registered::Joined {
            self.metrics.member_joined();
            tracing::info!(
                "node {node} joined cluster {} as {}",
                redact(pin),
                role.as_str()
            );
        }
        Ok(registered)
    }

    /// `GET .../members`: in joining order, with the cluster's expiry.
    async fn members(&self, pin: &str) -> Result<MembersRead, ApiError> {
        check_pin(pin)?;
        let found = self.store.members(pin).await.map_err(store_failed)?;
        self.alive(found, |r| r.expires_ms)
    }

    /// `GET .../members?wait=S&min=N`: the members once there are at least `min` of them, or
    /// as they stand when `wait` is over; 410 the moment the cluster expires, 404 if it is
    /// deleted meanwhile.
    pub(crate) async fn wait_for_members(
        &self,
        pin: &str,
        min: usize,
        wait: Duration,
    ) -> Result<Vec<MemberItem>, ApiError> {
        let read = self.members(pin).await?;
        if read.members.len() >= min || wait.is_zero() {
            return Ok(member_items(read.members));
        }
        let _counted = self.metrics.member_waiter();
        let parked = self.waiters.register(pin, MEMBERS);
        let mut shutdown = self.shutdown.signal();
        let until_expiry =
            u64::try_from(read.expires_ms.saturating_sub(self.now_ms())).unwrap_or(0);
        let deadline = Instant::now() + wait.min(Duration::from_millis(until_expiry));
        let mut woken = false;
        loop {
            // Before the check: a registration between the check and the wait still wakes us.
            let notified = parked.notified();
            let members = if woken {
                // One read for every waiter on this list woken by the same registration.
                let found = parked
                    .shared_members(|| self.store.members(pin))
                    .await
                    .map_err(store_failed)?;
                self.alive(found, |r| r.expires_ms)?.members
            } else {
                self.members(pin).await?.members
            };
            if members.len() >= min {
                return Ok(member_items(members));
            }
            tokio::select! {
                _ = notified => woken = true,
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(member_items(self.members(pin).await?.members));
                }
                _ = shut_down(&mut shutdown) => return Err(ApiError::ShuttingDown),
            }
        }
    }

    /// `DELETE .../members/<node>`.
    pub(crate) async fn delete_member(
        &self,
        pin: &str,
        node: String,
        token: Option<String>,
    ) -> Result<(), ApiError> {
        self.authorize(pin, token.as_deref()).await?;
        let deleted = self
            .store
            .delete_member(pin.to_string(), node.clone())
            .await
            .map_err(store_failed)?;
        if !deleted {
            return Err(ApiError::MemberNotFound);
        }
        tracing::info!("node {node} deleted from cluster {}", redact(pin));
        Ok(())
    }

    /// `POST /api/v1/clusters`: a fresh PIN and admin token, durable before they are returned.
    pub(crate) async fn create_cluster(&self) -> Result<ClusterInfo, ApiError> {
        let token = auth::new_token().map_err(random_failed)?;
        let token_hash = auth::hash_token(&token);
        let ttl_ms = i64::try_from(self.config.ttl.as_millis()).unwrap_or(i64::MAX);
        for _ in 0..PIN_ATTEMPTS {
            let created_ms = self.now_ms();
            let cluster = ClusterRecord {
                pin: auth::new_pin().map_err(random_failed)?,
                created_ms,
                expires_ms: created_ms.saturating_add(ttl_ms),
                token_hash,
            };
            match self
                .store
                .create_cluster(cluster.clone(), self.quota())
                .await
            {
                Ok(()) => {
                    return Ok(ClusterInfo {
                        creation_time: rfc3339(cluster.created_ms),
                        expires_at: Some(rfc3339(cluster.expires_ms)),
                        pin: cluster.pin,
                        admin_token: Some(token),
                    })
                }
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(self.write_failed(err)),
            }
        }
        tracing::error!(
            "{PIN_ATTEMPTS} fresh PINs in a row were taken: is the random source broken?"
        );
        Err(ApiError::Internal)
    }

    /// `POST .../keys`: create-only. Of concurrent creates of one key, the store lets exactly
    /// one through; the others get [`ApiError::KeyExists`].
    pub(crate) async fn create_key(
        &self,
        pin: &str,
        key: String,
        value: String,
    ) -> Result<(), ApiError> {
        // Fast refusals without a write. The store only ever shows committed keys, so
        // "present" is final.
        if let KeyState::Found(_) = self.lookup_key(pin, &key).await? {
            return Err(ApiError::KeyExists);
        }
        let new = NewKey {
            pin: pin.to_string(),
            key: key.clone(),
            value,
            now_ms: self.now_ms(),
            max_keys: self.config.max_keys,
            quota: self.quota(),
        };
        self.store.create_key(new).await.map_err(|err| match err {
            StoreError::Conflict => ApiError::KeyExists,
            err => self.write_failed(err),
        })?;
        tracing::info!("key {key} created in cluster {}", redact(pin));
        Ok(())
    }

    /// `PUT`/`PATCH .../keys/<key>`: replaces an existing value (`None`: a PATCH that changes
    /// nothing). Returns the value now stored.
    pub(crate) async fn update_key(
        &self,
        pin: &str,
        key: String,
        value: Option<String>,
        token: Option<String>,
    ) -> Result<String, ApiError> {
        self.authorize(pin, token.as_deref()).await?;
        let Some(value) = value else {
            return match self.lookup_key(pin, &key).await? {
                KeyState::Found(current) => Ok(current),
                KeyState::Absent { .. } => Err(ApiError::KeyNotFound),
            };
        };
        let replaced = self
            .store
            .replace_key(pin.to_string(), key.clone(), value.clone(), self.quota())
            .await
            .map_err(|err| self.write_failed(err))?;
        if !replaced {
            return Err(ApiError::KeyNotFound);
        }
        tracing::info!("key {key} replaced in cluster {}", redact(pin));
        Ok(value)
    }

    /// `DELETE .../keys/<key>`.
    pub(crate) async fn delete_key(
        &self,
        pin: &str,
        key: String,
        token: Option<String>,
    ) -> Result<(), ApiError> {
        self.authorize(pin, token.as_deref()).await?;
        let deleted = self
            .store
            .delete_key(pin.to_string(), key.clone())
            .await
            .map_err(store_failed)?;
        if !deleted {
            return Err(ApiError::KeyNotFound);
        }
        tracing::info!("key {key} deleted from cluster {}", redact(pin));
        Ok(())
    }

    /// `DELETE /api/v1/clusters/<pin>`: the cluster and its keys; its PIN becomes unknown, and
    /// its parked long-polls answer 404 now rather than at their deadline.
    pub(crate) async fn delete_cluster(
        &self,
        pin: &str,
        token: Option<String>,
    ) -> Result<(), ApiError> {
        self.authorize(pin, token.as_deref()).await?;
        let deleted = self
            .store
            .delete_cluster(pin.to_string())
            .await
            .map_err(store_failed)?;
        if !deleted {
            return Err(ApiError::UnknownPin);
        }
        tracing::info!("cluster {} deleted", redact(pin));
        Ok(())
    }

    /// Deletes the keys of expired clusters, and forgets clusters that expired longer than
    /// `tombstone_for` ago (until then their PIN answers 410, then 404).
    pub(crate) async fn sweep(&self) -> Result<Swept, ApiError> {
        let now = self.now_ms();
        let keep_ms = i64::try_from(self.config.tombstone_for.as_millis()).unwrap_or(i64::MAX);
        let swept = self
            .store
            .sweep(now, now.saturating_sub(keep_ms))
            .await
            .map_err(store_failed)?;
        self.metrics.swept(swept);
        if swept != Swept::default() {
            tracing::debug!(
                "expiry sweep: keys of {} expired PINs deleted, {} expired PINs forgotten",
                swept.emptied,
                swept.forgotten
            );
        }
        Ok(swept)
    }

    /// Counts for `/metrics`.
    pub(crate) async fn inventory(&self) -> Result<Inventory, ApiError> {
        self.store
            .inventory(self.now_ms())
            .await
            .map_err(store_failed)
    }

    /// Long-poll waiters woken by changes so far.
    /// Whether the store can serve now, within a second.
    pub(crate) async fn store_ready(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(Duration::from_secs(1), self.store.ready()).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable("no answer within 1 s".into())),
        }
    }

    pub(crate) fn wakeups(&self) -> u64 {
        self.waiters.wakeups()
    }

    /// Store reads made for woken long-polls so far (one per key and wake, shared).
    pub(crate) fn rereads(&self) -> u64 {
        self.waiters.rereads()
    }

    /// Flips once to true when the server begins to shut down.
    pub(crate) fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.signal()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.has_begun()
    }

    /// Starts a graceful shutdown: the listener stops, parked long-polls answer 503 at once.
    pub fn begin_shutdown(&self) {
        self.shutdown.begin();
    }

    /// Closes the store. Writes from here on answer 503; nothing acknowledged is lost.
    pub(crate) fn close_store(&self) {
        self.store.close();
    }

    /// Checks that `pin` is alive and that `token` may change it.
    async fn authorize(&self, pin: &str, token: Option<&str>) -> Result<(), ApiError> {
        let cluster = self.live_cluster(pin).await?;
        if self.config.open_mode() {
            return Ok(());
        }
        match token {
            None => Err(ApiError::MissingToken),
            Some(token) if !auth::token_matches(&cluster.token_hash, token) => {
                Err(ApiError::WrongToken)
            }
            Some(_) => Ok(()),
        }
    }
}

/// A malformed PIN is unknown without a lookup.
fn check_pin(pin: &str) -> Result<(), ApiError> {
    if protocol::is_valid_pin(pin) {
        Ok(())
    } else {
        Err(ApiError::UnknownPin)
    }
}

fn store_failed(err: StoreError) -> ApiError {
    match err {
        StoreError::NoCluster => ApiError::UnknownPin,
        StoreError::Expired => ApiError::Expired,
        StoreError::TooManyKeys(n) => ApiError::TooManyKeys(n),
        StoreError::TooManyMembers(n) => ApiError::TooManyMembers(n),
        StoreError::Conflict => ApiError::KeyExists,
        StoreError::Closed => ApiError::ShuttingDown,
        // The store logs when it becomes read-only and when it takes writes again.
        StoreError::Full => ApiError::StorageFull,
        StoreError::AtCap(cap) => ApiError::StorageCap(cap),
        StoreError::Unavailable(reason) => {
            tracing::error!("the store failed: {reason}");
            ApiError::StoreFailed(reason)
        }
    }
}

fn random_failed(err: auth::RandomError) -> ApiError {
    tracing::error!("{err}");
    ApiError::Internal
}

fn member_items(members: Vec<MemberRecord>) -> Vec<MemberItem> {
    members
        .into_iter()
        .map(|m| MemberItem {
            node: m.node,
            role: m.role.as_str().to_string(),
            address: m.address,
            joined_at: rfc3339(m.joined_ms),
            last_seen: rfc3339(m.last_seen_ms),
        })
        .collect()
}

/// RFC 3339 in UTC, e.g. `2026-05-01T12:00:00.123Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{clock::ManualClock, store::faulty::FaultyStore};

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    fn faulty() -> (Arc<AppState>, Arc<FaultyStore>) {
        let store = Arc::new(FaultyStore::new(Arc::new(
            SqliteStore::open_in_memory().unwrap(),
        )));
        let state = AppState::with_store(Config::default(), Arc::clone(&store) as Arc<dyn Store>);
        (state, store)
    }

    #[tokio::test]
    async fn a_full_disk_answers_507_and_nothing_is_written() {
        let (state, store) = faulty();
        let info = state.create_cluster().await.unwrap();
        store.fail_writes(1, StoreError::Full);
        let err = state
            .create_key(&info.pin, "k".into(), "v".into())
            .await
            .expect_err("the disk is full");
        assert!(matches!(err, ApiError::StorageFull), "{err}");
        assert!(matches!(
            state.lookup_key(&info.pin, "k").await.unwrap(),
            KeyState::Absent { .. }
        ));
        // The fault was one write long: the next one goes through.
        state
            .create_key(&info.pin, "k".into(), "v".into())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_unavailable_store_answers_503_for_reads_and_writes() {
        let (state, store) = faulty();
        store.fail_writes(1, StoreError::Unavailable("connection refused".into()));
        assert!(matches!(
            state.create_cluster().await,
            Err(ApiError::StoreFailed(_))
        ));
        let info = state.create_cluster().await.unwrap();
        store.fail_reads(1, StoreError::Unavailable("connection refused".into()));
        assert!(matches!(
            state.lookup_key(&info.pin, "k").await,
            Err(ApiError::StoreFailed(_))
        ));
        assert!(matches!(
            state.lookup_key(&info.pin, "k").await,
            Ok(KeyState::Absent { .. })
        ));
    }

    #[tokio::test]
    async fn closed_store_refuses_writes_with_503() {
        let state = AppState::open(Config::default()).unwrap();
        let info = state.create_cluster().await.unwrap();
        state.close_store();
        let err = state
            .create_key(&info.pin, "k".into(), "v".into())
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::ShuttingDown), "{err}");
    }

    #[tokio::test]
    async fn the_sweep_follows_the_clock_not_the_calendar() {
        let clock = ManualClock::starting_now();
        let state = AppState::open(Config {
            ttl: Duration::from_secs(3600),
            tombstone_for: Duration::from_secs(3600),
            clock: clock.clock(),
            ..Config::default()
        })
        .unwrap();
        let info = state.create_cluster().await.unwrap();
        state
            .create_key(&info.pin, "k".into(), "v".into())
            .await
            .unwrap();
        assert_eq!(state.sweep().await.unwrap(), Swept::default());
        clock.advance(Duration::from_secs(3600));
        assert!(matches!(
            state.lookup_key(&info.pin, "k").await,
            Err(ApiError::Expired)
        ));
        assert_eq!(state.sweep().await.unwrap().emptied, 1);
        assert_eq!(state.inventory().await.unwrap().tombstones, 1);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(state.sweep().await.unwrap().forgotten, 1);
        assert!(matches!(
            state.cluster_info(&info.pin).await,
            Err(ApiError::UnknownPin)
        ));
    }
}
