//! The service's state: every cluster in memory (the read path, behind a lock held for a map
//! lookup), kept in step with the [`Store`] (the write path).
//!
//! Writes are serialized by the store's mutex and follow one order: check, commit to SQLite,
//! then change the maps and wake the long-poll waiters. So a reader sees a value only once it
//! is durable, and an answer of 201/200/204 means the change is on disk. Expiry is decided at
//! read time from `expires_ms`; the sweep only reclaims space.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, RwLock, RwLockReadGuard},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::http::HeaderValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio::sync::{watch, Notify};

use super::{
    auth,
    error::ApiError,
    metrics::{Inventory, Metrics},
    ratelimit::MissLimiter,
    store::{Store, StoreError, StoredCluster},
    Config,
};
use crate::{
    protocol::{self, ClusterInfo, KeyItem},
    secret::redact,
};

/// How often a fresh PIN may collide with an existing one before we give up (at 62 bits, even
/// once is a miracle; a broken random source is not).
const PIN_ATTEMPTS: usize = 8;

struct Cluster {
    created_ms: i64,
    expires_ms: i64,
    /// SHA-256 of the admin token; the token itself is never kept.
    token_hash: [u8; 32],
    /// Sorted, so that listings are stable.
    keys: BTreeMap<String, String>,
    /// Woken on every change to this cluster, so long-polls re-check their key.
    changed: Arc<Notify>,
}

impl From<StoredCluster> for Cluster {
    fn from(stored: StoredCluster) -> Self {
        Cluster {
            created_ms: stored.created_ms,
            expires_ms: stored.expires_ms,
            token_hash: stored.token_hash,
            keys: stored.keys.into_iter().collect(),
            changed: Arc::new(Notify::new()),
        }
    }
}

/// A key lookup that found the cluster alive.
pub(crate) enum KeyState {
    Found(String),
    /// Not there (yet): what a long-poll needs to wait for it.
    Absent {
        changed: Arc<Notify>,
        expires_ms: i64,
    },
}

/// Everything the handlers share. Build one with [`AppState::open`] and hand it to
/// [`super::app`].
pub struct AppState {
    clusters: RwLock<HashMap<String, Cluster>>,
    /// `None` once closed by a shutdown: late writes answer 503 rather than racing the exit.
    store: Mutex<Option<Store>>,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    pub(crate) limiter: MissLimiter,
    /// Flips to true once, at shutdown; long-polls and connections watch it.
    shutdown: watch::Sender<bool>,
    /// The value of [`protocol::SERVICE_HEADER`], built once.
    pub(crate) service_header: HeaderValue,
}

impl AppState {
    /// Opens the store named by `config.db` (in memory when `None`) and loads it. Blocking:
    /// from async code, call it inside `spawn_blocking` (as [`super::spawn`] does).
    pub fn open(config: Config) -> anyhow::Result<Arc<AppState>> {
        let store = match &config.db {
            Some(path) => Store::open(path)?,
            None => Store::open_in_memory()?,
        };
        let clusters = store
            .load()?
            .into_iter()
            .map(|c| (c.pin.clone(), Cluster::from(c)))
            .collect();
        Ok(Arc::new(AppState {
            clusters: RwLock::new(clusters),
            store: Mutex::new(Some(store)),
            limiter: MissLimiter::new(config.miss_burst, config.miss_per_sec),
            config,
            metrics: Metrics::default(),
            shutdown: watch::Sender::new(false),
            service_header: HeaderValue::from_str(&protocol::service_header_value())
                .unwrap_or_else(|_| HeaderValue::from_static("clusterctx")),
        }))
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, Cluster>> {
        self.clusters.read().unwrap_or_else(|e| e.into_inner())
    }

    fn modify<T>(&self, f: impl FnOnce(&mut HashMap<String, Cluster>) -> T) -> T {
        f(&mut self.clusters.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// `GET /api/v1/clusters/<pin>`.
    pub(crate) fn cluster_info(&self, pin: &str) -> Result<ClusterInfo, ApiError> {
        let clusters = self.read();
        let cluster = live(&clusters, pin, now_ms())?;
        Ok(ClusterInfo {
            pin: pin.to_string(),
            creation_time: rfc3339(cluster.created_ms),
            expires_at: Some(rfc3339(cluster.expires_ms)),
            admin_token: None,
        })
    }

    /// `GET /api/v1/clusters/<pin>/keys`.
    pub(crate) fn list_keys(&self, pin: &str) -> Result<Vec<KeyItem>, ApiError> {
        let clusters = self.read();
        let cluster = live(&clusters, pin, now_ms())?;
        Ok(cluster
            .keys
            .iter()
            .map(|(key, value)| KeyItem {
                key: key.clone(),
                value: value.clone(),
            })
            .collect())
    }

    /// The hot path: one map lookup under a read lock.
    pub(crate) fn lookup_key(&self, pin: &str, key: &str) -> Result<KeyState, ApiError> {
        let clusters = self.read();
        let cluster = live(&clusters, pin, now_ms())?;
        Ok(match cluster.keys.get(key) {
            Some(value) => KeyState::Found(value.clone()),
            None => KeyState::Absent {
                changed: Arc::clone(&cluster.changed),
                expires_ms: cluster.expires_ms,
            },
        })
    }

    /// `POST /api/v1/clusters`: a fresh PIN and admin token, durable before they are returned.
    pub(crate) async fn create_cluster(self: &Arc<Self>) -> Result<ClusterInfo, ApiError> {
        let token = auth::new_token().map_err(random_failed)?;
        let token_hash = auth::hash_token(&token);
        let ttl_ms = i64::try_from(self.config.ttl.as_millis()).unwrap_or(i64::MAX);
        let stored = self
            .write(move |state, store| {
                for _ in 0..PIN_ATTEMPTS {
                    let pin = auth::new_pin().map_err(random_failed)?;
                    if state.read().contains_key(&pin) {
                        continue;
                    }
                    let created_ms = now_ms();
                    let stored = StoredCluster {
                        pin: pin.clone(),
                        created_ms,
                        expires_ms: created_ms.saturating_add(ttl_ms),
                        token_hash,
                        keys: Vec::new(),
                    };
                    match store.insert_cluster(&stored) {
                        Ok(()) => {}
                        Err(StoreError::Conflict) => continue,
                        Err(err) => return Err(store_failed(err)),
                    }
                    state.modify(|clusters| clusters.insert(pin, Cluster::from(stored.clone())));
                    return Ok(stored);
                }
                tracing::error!(
                    "{PIN_ATTEMPTS} fresh PINs in a row were taken: is the random source broken?"
                );
                Err(ApiError::Internal)
            })
            .await?;
        Ok(ClusterInfo {
            creation_time: rfc3339(stored.created_ms),
            expires_at: Some(rfc3339(stored.expires_ms)),
            pin: stored.pin,
            admin_token: Some(token),
        })
    }

    /// `POST .../keys`: create-only. Of concurrent creates of one key, SQLite's primary key
    /// lets exactly one through; the others get [`ApiError::KeyExists`].
    pub(crate) async fn create_key(
        self: &Arc<Self>,
        pin: &str,
        key: String,
        value: String,
    ) -> Result<(), ApiError> {
        {
            // Fast refusals without a trip through the store's queue. Memory only ever holds
            // committed keys, so "present here" is final.
            let clusters = self.read();
            let cluster = live(&clusters, pin, now_ms())?;
            if cluster.keys.contains_key(&key) {
                return Err(ApiError::KeyExists);
            }
        }
        let pin = pin.to_string();
        self.write(move |state, store| {
            state.check_room(&pin)?;
            store
                .insert_key(&pin, &key, &value)
                .map_err(|err| match err {
                    StoreError::Conflict => ApiError::KeyExists,
                    StoreError::NoCluster => ApiError::UnknownPin,
                    err => store_failed(err),
                })?;
            tracing::info!("key {key} created in cluster {}", redact(&pin));
            state.modify(|clusters| {
                if let Some(cluster) = clusters.get_mut(&pin) {
                    cluster.keys.insert(key, value);
                    cluster.changed.notify_waiters();
                }
            });
            Ok(())
        })
        .await
    }

    /// `PUT`/`PATCH .../keys/<key>`: replaces an existing value (`None`: a PATCH that changes
    /// nothing). Returns the value now stored.
    pub(crate) async fn update_key(
        self: &Arc<Self>,
        pin: &str,
        key: String,
        value: Option<String>,
        token: Option<String>,
    ) -> Result<String, ApiError> {
        let pin = pin.to_string();
        self.write(move |state, store| {
            let current = state.authorized(&pin, token.as_deref(), |cluster| {
                cluster.keys.get(&key).cloned().ok_or(ApiError::KeyNotFound)
            })?;
            let Some(value) = value else {
                return Ok(current);
            };
            if !store.update_key(&pin, &key, &value).map_err(store_failed)? {
                return Err(ApiError::KeyNotFound);
            }
            tracing::info!("key {key} replaced in cluster {}", redact(&pin));
            state.modify(|clusters| {
                if let Some(cluster) = clusters.get_mut(&pin) {
                    cluster.keys.insert(key, value.clone());
                    cluster.changed.notify_waiters();
                }
            });
            Ok(value)
        })
        .await
    }

    /// `DELETE .../keys/<key>`.
    pub(crate) async fn delete_key(
        self: &Arc<Self>,
        pin: &str,
        key: String,
        token: Option<String>,
    ) -> Result<(), ApiError> {
        let pin = pin.to_string();
        self.write(move |state, store| {
            state.authorized(&pin, token.as_deref(), |cluster| {
                if cluster.keys.contains_key(&key) {
                    Ok(())
                } else {
                    Err(ApiError::KeyNotFound)
                }
            })?;
            if !store.delete_key(&pin, &key).map_err(store_failed)? {
                return Err(ApiError::KeyNotFound);
            }
            tracing::info!("key {key} deleted from cluster {}", redact(&pin));
            state.modify(|clusters| {
                if let Some(cluster) = clusters.get_mut(&pin) {
                    cluster.keys.remove(&key);
                }
            });
            Ok(())
        })
        .await
    }

    /// `DELETE /api/v1/clusters/<pin>`: the cluster and its keys; its PIN becomes unknown.
    pub(crate) async fn delete_cluster(
        self: &Arc<Self>,
        pin: &str,
        token: Option<String>,
    ) -> Result<(), ApiError> {
        let pin = pin.to_string();
        self.write(move |state, store| {
            state.authorized(&pin, token.as_deref(), |_| Ok(()))?;
            if !store.delete_cluster(&pin).map_err(store_failed)? {
                return Err(ApiError::UnknownPin);
            }
            tracing::info!("cluster {} deleted", redact(&pin));
            state.modify(|clusters| {
                if let Some(cluster) = clusters.remove(&pin) {
                    // Parked long-polls answer 404 now rather than at their deadline.
                    cluster.changed.notify_waiters();
                }
            });
            Ok(())
        })
        .await
    }

    /// Deletes the keys of expired clusters, and forgets clusters that expired longer than
    /// `tombstone_for` ago (until then their PIN answers 410, then 404).
    pub(crate) async fn sweep(self: &Arc<Self>) -> Result<(), ApiError> {
        self.write(|state, store| {
            let now = now_ms();
            let keep_ms = i64::try_from(state.config.tombstone_for.as_millis()).unwrap_or(i64::MAX);
            let forget_before = now.saturating_sub(keep_ms);
            let due = state.read().values().any(|c| {
                (c.expires_ms <= now && !c.keys.is_empty()) || c.expires_ms <= forget_before
            });
            if !due {
                return Ok(());
            }
            store.sweep(now, forget_before).map_err(store_failed)?;
            let forgotten = state.modify(|clusters| {
                let before = clusters.len();
                clusters.retain(|_, c| c.expires_ms > forget_before);
                for cluster in clusters.values_mut().filter(|c| c.expires_ms <= now) {
                    if !cluster.keys.is_empty() {
                        cluster.keys.clear();
                        cluster.changed.notify_waiters();
                    }
                }
                before - clusters.len()
            });
            tracing::debug!("expiry sweep done; {forgotten} expired PINs forgotten");
            Ok(())
        })
        .await
    }

    /// Counts for `/metrics`.
    pub(crate) fn inventory(&self) -> Inventory {
        let now = now_ms();
        let mut inventory = Inventory::default();
        for cluster in self.read().values() {
            if cluster.expires_ms <= now {
                inventory.tombstones += 1;
            } else {
                inventory.clusters += 1;
                inventory.keys += cluster.keys.len() as u64;
            }
        }
        inventory
    }

    /// Flips once to true when the server begins to shut down.
    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Starts a graceful shutdown: the listener stops, parked long-polls answer 503 at once.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Closes the store. Writes from here on answer 503; nothing acknowledged is lost.
    pub(crate) fn close_store(&self) {
        drop(self.store.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// Runs `op` on tokio's blocking pool (SQLite blocks) under the store's lock, so writes
    /// happen one at a time.
    async fn write<T, F>(self: &Arc<Self>, op: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&AppState, &mut Store) -> Result<T, ApiError> + Send + 'static,
    {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut store = state.store.lock().unwrap_or_else(|e| e.into_inner());
            let store = store.as_mut().ok_or(ApiError::ShuttingDown)?;
            op(&state, store)
        })
        .await
        .map_err(|err| {
            tracing::error!("a store write failed unexpectedly: {err}");
            ApiError::Internal
        })?
    }

    /// Checks that `pin` is alive and that `token` may change it, then runs `check` on it.
    fn authorized<T>(
        &self,
        pin: &str,
        token: Option<&str>,
        check: impl FnOnce(&Cluster) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let clusters = self.read();
        let cluster = live(&clusters, pin, now_ms())?;
        if !self.config.open {
            match token {
                None => return Err(ApiError::MissingToken),
                Some(token) if !auth::token_matches(&cluster.token_hash, token) => {
                    return Err(ApiError::WrongToken)
                }
                Some(_) => {}
            }
        }
        check(cluster)
    }

    fn check_room(&self, pin: &str) -> Result<(), ApiError> {
        let clusters = self.read();
        let cluster = live(&clusters, pin, now_ms())?;
        if cluster.keys.len() >= self.config.max_keys {
            return Err(ApiError::TooManyKeys(self.config.max_keys));
        }
        Ok(())
    }

    /// The store itself, for tests that provoke store failures.
    #[cfg(test)]
    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(self.store.lock().unwrap().as_mut().expect("store is open"))
    }
}

/// The cluster of `pin` if it exists and has not expired at `now`. A malformed PIN is unknown
/// without a lookup.
fn live<'a>(
    clusters: &'a HashMap<String, Cluster>,
    pin: &str,
    now: i64,
) -> Result<&'a Cluster, ApiError> {
    if !protocol::is_valid_pin(pin) {
        return Err(ApiError::UnknownPin);
    }
    match clusters.get(pin) {
        None => Err(ApiError::UnknownPin),
        Some(cluster) if now >= cluster.expires_ms => Err(ApiError::Expired),
        Some(cluster) => Ok(cluster),
    }
}

fn store_failed(err: StoreError) -> ApiError {
    match err {
        StoreError::Full => {
            tracing::error!("the store's disk is full: writes refused until space is freed");
            ApiError::StorageFull
        }
        err => {
            tracing::error!("store write failed: {err}");
            ApiError::StoreFailed(err.to_string())
        }
    }
}

fn random_failed(err: auth::RandomError) -> ApiError {
    tracing::error!("{err}");
    ApiError::Internal
}

/// Resolves once `signal` (from [`AppState::shutdown_signal`]) has flipped to true.
pub(crate) async fn shut_down(signal: &mut watch::Receiver<bool>) {
    // The sender lives as long as the state; an error means it is gone, which is shutdown too.
    let _ = signal.wait_for(|&down| down).await;
}

/// Wall-clock milliseconds: expiry times are stored and must mean the same after a restart.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
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

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[tokio::test]
    async fn a_full_disk_answers_507_and_keeps_memory_unchanged() {
        let state = AppState::open(Config::default()).unwrap();
        let info = state.create_cluster().await.unwrap();
        state.with_store(|store| store.limit_pages(8));
        let big = "v".repeat(1000);
        let mut outcome = Ok(());
        let mut last = String::new();
        for i in 0..1000 {
            last = format!("k{i}");
            outcome = state.create_key(&info.pin, last.clone(), big.clone()).await;
            if outcome.is_err() {
                break;
            }
        }
        let err = outcome.expect_err("the page limit must be hit");
        assert!(matches!(err, ApiError::StorageFull), "{err}");
        assert!(matches!(
            state.lookup_key(&info.pin, &last).unwrap(),
            KeyState::Absent { .. }
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
}
