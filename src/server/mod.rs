//! The PIN service, `clusterctx serve`: the legacy REST API of PROTOCOL.md part 1, byte for
//! byte where old clients look, plus part 2 (long-poll, atomic create, honest expiry, admin
//! tokens, miss and creation limits, storage caps, metrics, graceful shutdown, TLS) and the
//! members of part 4, on a durable SQLite store.
//!
//! # Layout
//!
//! The arrows point one way: `routes` -> `layers` -> `extract`, `negotiate`; handlers ->
//! `state` -> `store`, `waiters`, `config`; `waiters` -> `store`; `store` imports nothing else
//! of the server.
//!
//! - `routes`: [`app`], the router, and its handlers; `paths`: the route templates.
//! - `negotiate`: `Accept` and `?format=` of the single-key route, ours and DRF's, and of
//!   the member list (JSON first).
//! - `extract`: reading requests: JSON and form bodies (trimmed as DRF did), `?wait=`,
//!   path segments, the client address.
//! - `state`: [`AppState`]: what a request means on top of the store: expiry at read time
//!   (from the [`Clock`]), admin tokens, the long-poll loops (a key; N members), the sweep.
//! - [`store`]: the [`store::Store`] trait (async operations, typed errors, change reports,
//!   the caps on what the whole store holds); [`store::sqlite`], SQLite in WAL mode,
//!   exclusively locked, `synchronous=FULL`, private files, every cluster cached in memory for
//!   reads, read-only while its disk is full; [`store::faulty`], faults on demand for tests.
//! - `waiters`: the registry of parked long-polls by (PIN, key), woken by the store's change
//!   reports: a write wakes the waiters of its key only, a registration those of the member
//!   list, a deletion or expiry all of its PIN.
//! - `config`: [`Config`], the options of `serve` and of [`spawn`], one `clap` definition.
//! - `clock`: [`Clock`], the wall clock expiry reads, and [`ManualClock`] for tests.
//! - `shutdown`: the flag that flips once; `listener`, long-polls and the sweep watch it.
//! - `auth`: PIN and admin-token generation, token digests, constant-time check.
//! - `ratelimit`: the per-client limits on misses for unknown PINs and on PIN creations.
//! - `layers`: per-request middleware: time limit, service header, metrics, miss and
//!   creation limits, the legacy emulation (406, DRF error bodies).
//! - `web`: the operator's page at `/` and its assets, embedded in the binary.
//! - `metrics`: counters and gauges in the Prometheus text format.
//! - `error`: [`ApiError`], one status and one JSON body per failure.
//! - `listener` and `tls`: the accept loop (HTTP/1.1 and HTTP/2, optionally over rustls) and
//!   the graceful drain.
//!
//! # Starting a server from tests
//!
//! [`spawn`] binds, loads the store and serves in the background of the current tokio runtime.
//! [`Config::default`] listens on `127.0.0.1:0` with an in-memory store, so tests need to set
//! only what they care about:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use clusterctx::server::{self, Config};
//!
//! let server = server::spawn(Config::default()).await?;
//! let url = server.url(); // "http://127.0.0.1:41234"
//! // ... point a client at `url` ...
//!
//! // A durable server with short-lived PINs, in legacy open mode:
//! let dir = tempfile::tempdir()?;
//! let durable = server::spawn(Config {
//!     db: Some(dir.path().join("pins.sqlite3")),
//!     ttl: std::time::Duration::from_secs(5),
//!     open: true,
//!     ..Config::default()
//! })
//! .await?;
//!
//! durable.shutdown().await; // drains connections and closes the store
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Dropping a [`Server`] also starts its shutdown, without waiting for it. For tests without a
//! socket, build the router directly: `server::app(AppState::open(Config::default())?)` and
//! drive it with `tower::ServiceExt::oneshot`. For a store that fails on demand, wrap one in
//! [`store::faulty::FaultyStore`] and give it to [`AppState::with_store`] or [`spawn_with`].
//! For expiry without sleeping, put a [`ManualClock`] in [`Config::clock`].

mod auth;
mod clock;
mod config;
mod error;
mod extract;
mod layers;
mod listener;
mod metrics;
mod negotiate;
pub mod openapi;
mod paths;
mod ratelimit;
mod routes;
mod shutdown;
mod state;
pub mod store;
mod tls;
mod waiters;
mod web;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};

pub use crate::sys::raise_fd_limit;
pub use clock::{Clock, ManualClock};
pub use config::{default_db_path, Config, DEFAULT_DB};
pub use error::ApiError;
pub use routes::app;
pub use state::AppState;

/// A running server (see [`spawn`]).
pub struct Server {
    addr: SocketAddr,
    https: bool,
    state: Arc<AppState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// The bound address (the real port when `listen` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL for clients, e.g. `http://127.0.0.1:41234` (a wildcard address becomes
    /// loopback).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", listener::reachable(self.addr))
    }

    /// The shared state, e.g. to count waiters in a test.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Parked long-polls right now.
    pub fn waiters(&self) -> i64 {
        self.state.metrics.waiters()
    }

    /// Graceful shutdown: stop accepting, answer parked long-polls with 503, let requests in
    /// flight finish (up to the grace period), close the store.
    pub async fn shutdown(mut self) {
        self.state.begin_shutdown();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.state.close_store();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.begin_shutdown();
    }
}

/// Opens the store named by `config.db`, binds `config.listen` and serves in the background of
/// the current runtime.
pub async fn spawn(config: Config) -> anyhow::Result<Server> {
    config.check()?;
    // Before the store: a bad certificate should not leave a new store file behind.
    let tls = tls_acceptor(&config)?;
    let db = config.db.clone();
    if let Some(url) = db
        .as_deref()
        .filter(|db| store::postgres::is_postgres(db))
        .and_then(|db| db.to_str())
    {
        // Not connected yet: a database that is not up answers 503 until it is.
        let store = Arc::new(store::postgres::PgStore::open(url)?);
        return serve_on(config, tls, store).await;
    }
    let store: Arc<dyn store::Store> = tokio::task::spawn_blocking(move || {
        anyhow::Ok(Arc::new(store::sqlite::SqliteStore::open_at(
            db.as_deref(),
        )?))
    })
    .await
    .context("the store loader stopped")??;
    serve_on(config, tls, store).await
}

/// [`spawn`] on a given store (`config.db` is not read).
pub async fn spawn_with(config: Config, store: Arc<dyn store::Store>) -> anyhow::Result<Server> {
    config.check()?;
    let tls = tls_acceptor(&config)?;
    serve_on(config, tls, store).await
}

fn tls_acceptor(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(tls::acceptor(cert, key)?)),
        (None, None) => Ok(None),
        _ => anyhow::bail!("HTTPS needs both a certificate and a key"),
    }
}

async fn serve_on(
    config: Config,
    tls: Option<tokio_rustls::TlsAcceptor>,
    store: Arc<dyn store::Store>,
) -> anyhow::Result<Server> {
    let state = AppState::with_store(config.clone(), store);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let https = tls.is_some();
    let serve = tokio::spawn(listener::serve(
        listener,
        tls,
        app(Arc::clone(&state)),
        state.shutdown_signal(),
        config.shutdown_grace,
    ));
    let sweep = tokio::spawn(sweep_loop(Arc::clone(&state)));
    Ok(Server {
        addr,
        https,
        state,
        tasks: vec![serve, sweep],
    })
}

/// `clusterctx serve`: serves until SIGTERM or Ctrl-C, then shuts down gracefully. Without
/// `--db`, the store is [`default_db_path`].
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    config.db.get_or_insert_with(default_db_path);
    match raise_fd_limit() {
        Ok(limit) => tracing::debug!("open files limit: {limit}"),
        Err(err) => tracing::warn!("cannot raise the open files limit: {err}"),
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let server = spawn(config.clone()).await?;
    let db = config
        .db
        .as_ref()
        .map_or_else(|| "memory".to_string(), |p| describe_db(p));
    tracing::info!(
        "listening on {} (store {db}, PINs live {}, {})",
        server.url(),
        humantime::format_duration(config.ttl),
        if config.open_mode() {
            "open mode: anyone with a PIN may replace or delete keys"
        } else {
            "admin token needed to replace or delete"
        }
    );
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The store for logs: a PostgreSQL target without its password.
fn describe_db(db: &std::path::Path) -> String {
    match db.to_str().filter(|_| store::postgres::is_postgres(db)) {
        Some(text) => store::postgres::parse(text)
            .map(|target| target.describe())
            .unwrap_or_else(|_| "postgres (unparsable)".into()),
        None => db.display().to_string(),
    }
}

/// Reclaims expired PINs every `sweep_interval` (answers do not wait for it: expiry is checked
/// at read time) and forgets clients whose miss or creation allowance has refilled.
async fn sweep_loop(state: Arc<AppState>) {
    let mut shutdown = state.shutdown_signal();
    let mut ticker = tokio::time::interval(state.config.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown::shut_down(&mut shutdown) => break,
        }
        if let Err(err) = state.sweep().await {
            tracing::warn!("expiry sweep failed: {err}");
        }
        state.limiter.sweep(std::time::Instant::now());
        state.creations.sweep(std::time::Instant::now());
    }
}
