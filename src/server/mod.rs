//! The PIN service, `clusterctx serve`: the legacy REST API of PROTOCOL.md part 1, byte for
//! byte where old clients look, plus part 2 (long-poll, atomic create, honest expiry, admin
//! tokens, miss limits, metrics, graceful shutdown, TLS), on a durable SQLite store.
//!
//! # Layout
//!
//! - `routes`: [`app`], the router, and its handlers.
//! - `extract`: reading requests: `Accept` negotiation, JSON and form bodies, `?wait=`,
//!   path segments, the client address.
//! - `state`: [`AppState`]: every cluster in memory (the read path) in step with the store
//!   (the write path: commit, then update memory, then answer); expiry at read time; the sweep.
//! - `store`: SQLite in WAL mode, exclusively locked, `synchronous=FULL`; uniqueness of keys is
//!   its primary key.
//! - `waiters`: long-poll parking and wake-up.
//! - `auth`: PIN and admin-token generation, token digests, constant-time check.
//! - `ratelimit`: the per-client limit on misses for unknown PINs.
//! - `layers`: per-request middleware: time limit, service header, metrics, miss limit.
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
//! drive it with `tower::ServiceExt::oneshot`.

mod auth;
mod error;
mod extract;
mod layers;
mod listener;
mod metrics;
mod ratelimit;
mod routes;
mod state;
mod store;
mod tls;
mod waiters;
mod web;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::http::HeaderName;
use tokio::{net::TcpListener, task::JoinHandle};

pub use crate::sys::raise_fd_limit;
pub use error::ApiError;
pub use routes::app;
pub use state::AppState;

/// Where the store lives when `--db` is not given and systemd sets no `STATE_DIRECTORY`.
pub const DEFAULT_DB: &str = "/var/lib/clusterctx-pin-service/pins.sqlite3";
/// The store's file name inside systemd's `STATE_DIRECTORY`.
const DB_FILE_NAME: &str = "pins.sqlite3";

/// Options of `clusterctx serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The durable store, a SQLite file; its directory is created if missing.
    /// [default: $STATE_DIRECTORY/pins.sqlite3 under systemd, else /var/lib/clusterctx-pin-service/pins.sqlite3]
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// How long a PIN (and its keys) lives after creation, e.g. 24h, 90m, 10s.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Legacy open mode: anyone who knows a PIN may replace or delete its keys and delete it,
    /// without the admin token.
    #[arg(long)]
    pub open: bool,
    /// Behave like the legacy CernVM (Django) service, to test legacy agents' peers: `?wait=`
    /// ignored (no long-poll), no service header, no admin token or expiry in answers.
    /// Implies --open.
    #[arg(long)]
    pub emulate_legacy: bool,
    /// PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Misses (requests for unknown PINs) a client may make in a burst before it gets 429;
    /// 0 disables the limit.
    #[arg(long, value_name = "N", default_value_t = Config::default().miss_burst)]
    pub miss_burst: u32,
    /// Misses per second refilled to each client's allowance.
    #[arg(long, value_name = "N", default_value_t = Config::default().miss_per_sec)]
    pub miss_per_sec: f64,
    /// Take the client address for the miss limit from this header (e.g. X-Forwarded-For,
    /// last entry). Only behind a proxy that sets it: clients can forge it otherwise.
    #[arg(long, value_name = "HEADER")]
    pub client_ip_header: Option<HeaderName>,
    /// Largest request body accepted, in bytes (413 beyond).
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().max_body)]
    pub max_body: usize,
    /// Time limit of a request (a long-poll gets its wait on top).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Most keys one cluster may hold.
    #[arg(long, value_name = "N", default_value_t = Config::default().max_keys)]
    pub max_keys: usize,
    /// How often expired PINs are swept from the store.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,
    /// How long an expired PIN answers 410 Gone before it is forgotten (404).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub tombstone_for: Duration,
    /// How long a shutdown waits for open requests to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

impl ServeArgs {
    pub fn into_config(self) -> Config {
        Config {
            listen: self.listen,
            db: Some(self.db.unwrap_or_else(default_db_path)),
            ttl: self.ttl,
            open: self.open || self.emulate_legacy,
            emulate_legacy: self.emulate_legacy,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            miss_burst: self.miss_burst,
            miss_per_sec: self.miss_per_sec,
            client_ip_header: self.client_ip_header,
            max_body: self.max_body,
            request_timeout: self.request_timeout,
            max_keys: self.max_keys,
            sweep_interval: self.sweep_interval,
            tombstone_for: self.tombstone_for,
            shutdown_grace: self.shutdown_grace,
        }
    }
}

/// `$STATE_DIRECTORY/pins.sqlite3` when systemd gives us a state directory (the first, if it
/// lists several), else [`DEFAULT_DB`].
pub fn default_db_path() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            let first = dirs.to_str()?.split(':').next()?.to_string();
            (!first.is_empty()).then(|| PathBuf::from(first).join(DB_FILE_NAME))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DB))
}

/// Everything a server needs. [`Config::default`] suits tests: `127.0.0.1:0`, in memory.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The SQLite file; `None` keeps everything in memory (tests, throw-away servers).
    pub db: Option<PathBuf>,
    /// Lifetime of a PIN from its creation.
    pub ttl: Duration,
    /// Legacy open mode: no admin token needed to replace or delete.
    pub open: bool,
    /// Answer as the legacy service did: no long-poll, no service header, no admin token or
    /// expiry in answers. For compatibility tests of our agent against a legacy peer.
    pub emulate_legacy: bool,
    /// Serve HTTPS with this PEM certificate chain and key.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Misses per client before 429 (0: no limit), and their refill per second.
    pub miss_burst: u32,
    pub miss_per_sec: f64,
    /// Trusted header carrying the client address, behind a proxy.
    pub client_ip_header: Option<HeaderName>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Time limit per request, before a long-poll's wait.
    pub request_timeout: Duration,
    /// Most keys per cluster.
    pub max_keys: usize,
    /// Period of the expiry sweep.
    pub sweep_interval: Duration,
    /// How long an expired PIN answers 410 before it is forgotten.
    pub tombstone_for: Duration,
    /// How long shutdown waits for open requests.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            db: None,
            ttl: Duration::from_secs(24 * 3600),
            open: false,
            emulate_legacy: false,
            tls_cert: None,
            tls_key: None,
            // Honest clients never miss; a typo'd PIN in a 300-node cluster behind one NAT
            // costs 300 misses per retry round, which this absorbs, while guessing 62-bit PINs
            // at 5 per second is hopeless.
            miss_burst: 300,
            miss_per_sec: 5.0,
            client_ip_header: None,
            // A key item is at most ~4 KiB of JSON (100-char key, 1000 chars of up to 4 bytes).
            max_body: 16 * 1024,
            request_timeout: Duration::from_secs(30),
            max_keys: 1000,
            sweep_interval: Duration::from_secs(60),
            tombstone_for: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

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

/// Opens the store, binds `config.listen` and serves in the background of the current runtime.
pub async fn spawn(config: Config) -> anyhow::Result<Server> {
    // tokio's interval panics on a zero period, which would silently end the sweep task.
    if config.sweep_interval.is_zero() {
        anyhow::bail!("the sweep interval (--sweep-interval) must be longer than zero");
    }
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("HTTPS needs both a certificate and a key"),
    };
    let state = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || AppState::open(config))
            .await
            .context("the store loader stopped")??
    };
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

/// `clusterctx serve`: serves until SIGTERM or Ctrl-C, then shuts down gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config();
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
        .map_or_else(|| "memory".to_string(), |p| p.display().to_string());
    tracing::info!(
        "listening on {} (store {db}, PINs live {}, {})",
        server.url(),
        humantime::format_duration(config.ttl),
        if config.open {
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

/// Reclaims expired PINs every `sweep_interval` (answers do not wait for it: expiry is checked
/// at read time) and forgets clients whose miss allowance has refilled.
async fn sweep_loop(state: Arc<AppState>) {
    let mut shutdown = state.shutdown_signal();
    let mut ticker = tokio::time::interval(state.config.sweep_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = state::shut_down(&mut shutdown) => break,
        }
        if let Err(err) = state.sweep().await {
            tracing::warn!("expiry sweep failed: {err}");
        }
        state.limiter.sweep(std::time::Instant::now());
    }
}
