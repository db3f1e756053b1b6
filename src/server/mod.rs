//! The PIN service, `clusterctx serve`: the legacy REST API of PROTOCOL.md part 1, byte for
//! byte where old clients look, plus part 2 (long-poll, atomic create, honest expiry, admin
//! tokens, miss limits, metrics, graceful shutdown, TLS), on a durable SQLite store.
//!
//! # Layout
//!
//! The arrows point one way: `routes` -> `layers` -> `extract`; handlers -> `state` ->
//! `store`, `waiters`; `store` imports nothing else of the server.
//!
//! - `routes`: [`app`], the router, and its handlers; `paths`: the route templates.
//! - `extract`: reading requests: `Accept` negotiation, JSON and form bodies, `?wait=`,
//!   path segments, the client address.
//! - `state`: [`AppState`]: what a request means on top of the store: expiry at read time
//!   (from the [`Clock`]), admin tokens, the long-poll loop, the sweep.
//! - [`store`]: the [`store::Store`] trait (async operations, typed errors, change reports);
//!   [`store::sqlite`], SQLite in WAL mode, exclusively locked, `synchronous=FULL`, private
//!   files, every cluster cached in memory for reads; [`store::faulty`], faults on demand
//!   for tests.
//! - `waiters`: the registry of parked long-polls by (PIN, key), woken by the store's change
//!   reports: a write wakes the waiters of its key only, a deletion or expiry all of its PIN.
//! - `clock`: [`Clock`], the wall clock expiry reads, and [`ManualClock`] for tests.
//! - `shutdown`: the flag that flips once; `listener`, long-polls and the sweep watch it.
//! - `auth`: PIN and admin-token generation, token digests, constant-time check.
//! - `ratelimit`: the per-client limit on misses for unknown PINs.
//! - `layers`: per-request middleware: time limit, service header, metrics, miss limit.
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
mod error;
mod extract;
mod layers;
mod listener;
mod metrics;
mod paths;
mod ratelimit;
mod routes;
mod shutdown;
mod state;
pub mod store;
mod tls;
mod waiters;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use axum::http::HeaderName;
use tokio::{net::TcpListener, task::JoinHandle};

pub use crate::sys::raise_fd_limit;
pub use clock::{Clock, ManualClock};
pub use error::ApiError;
pub use routes::app;
pub use state::AppState;

/// Where the store lives when `--db` is not given and systemd sets no `STATE_DIRECTORY`.
pub const DEFAULT_DB: &str = "/var/lib/clusterctx-pin-service/pins.sqlite3";
/// The store's file name inside systemd's `STATE_DIRECTORY`.
const DB_FILE_NAME: &str = "pins.sqlite3";

/// Everything a server needs, and the options of `clusterctx serve`: one definition for both,
/// so an option is one field here. [`Config::default`] holds the command line's defaults,
/// except that it listens on `127.0.0.1:0` and keeps the store in memory, which suits tests.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address and port to listen on (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The durable store, a SQLite file; its directory is created if missing.
    /// [default: $STATE_DIRECTORY/pins.sqlite3 under systemd, else /var/lib/clusterctx-pin-service/pins.sqlite3]
    // `None` in a `Config` made in code keeps everything in memory (tests, throw-away
    // servers); `serve` fills in the default path instead.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// How long a PIN (and its keys) lives after creation, e.g. 24h, 90m, 10s.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = positive_duration)]
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
    // Honest clients never miss; a typo'd PIN in a 300-node cluster behind one NAT costs 300
    // misses per retry round, which this absorbs, while guessing 62-bit PINs at 5 per second
    // is hopeless.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub miss_burst: u32,
    /// Misses per second refilled to each client's allowance.
    #[arg(long, value_name = "N", default_value_t = 5.0)]
    pub miss_per_sec: f64,
    /// Take the client address for the miss limit from this header (e.g. X-Forwarded-For,
    /// last entry). Only behind a proxy that sets it: clients can forge it otherwise.
    #[arg(long, value_name = "HEADER")]
    pub client_ip_header: Option<HeaderName>,
    /// Largest request body accepted, in bytes (413 beyond).
    // A key item is at most ~4 KiB of JSON (100-char key, 1000 chars of up to 4 bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024)]
    pub max_body: usize,
    /// Time limit of a request (a long-poll gets its wait on top).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    pub request_timeout: Duration,
    /// Most keys one cluster may hold.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_keys: usize,
    /// How often expired PINs are swept from the store.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = positive_duration)]
    pub sweep_interval: Duration,
    /// How long an expired PIN answers 410 Gone before it is forgotten (404).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub tombstone_for: Duration,
    /// How long a shutdown waits for open requests to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Where expiry reads the time: the system's clock, or a test's [`ManualClock`].
    #[arg(skip)]
    pub clock: Clock,
}

impl Config {
    /// Whether replacing and deleting skip the admin token: `--open`, or the legacy
    /// emulation, which implies it.
    pub fn open_mode(&self) -> bool {
        self.open || self.emulate_legacy
    }

    /// What the command line refuses at parsing, for configurations made in code.
    fn check(&self) -> anyhow::Result<()> {
        for (value, option) in [
            (self.ttl, "the PIN lifetime (--ttl)"),
            (
                self.request_timeout,
                "the request time limit (--request-timeout)",
            ),
            // tokio's interval panics on a zero period, which would silently end the sweep.
            (self.sweep_interval, "the sweep interval (--sweep-interval)"),
        ] {
            if value.is_zero() {
                anyhow::bail!("{option} must be longer than zero");
            }
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        use clap::{Args, FromArgMatches};
        let matches = Config::augment_args(clap::Command::new("serve"))
            .no_binary_name(true)
            .try_get_matches_from(std::iter::empty::<&str>())
            .expect("the defaults of `serve` parse");
        let mut config = Config::from_arg_matches(&matches).expect("the defaults of `serve` parse");
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

/// A duration on the command line that must not be zero (a zero TTL or time limit would
/// refuse everything, with no error to say why).
fn positive_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw).map_err(|err| err.to_string())?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
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
    let store: Arc<dyn store::Store> = tokio::task::spawn_blocking(move || {
        anyhow::Ok(Arc::new(match db {
            Some(path) => store::sqlite::SqliteStore::open(&path)?,
            None => store::sqlite::SqliteStore::open_in_memory()?,
        }))
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
        .map_or_else(|| "memory".to_string(), |p| p.display().to_string());
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

/// Reclaims expired PINs every `sweep_interval` (answers do not wait for it: expiry is checked
/// at read time) and forgets clients whose miss allowance has refilled.
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
    }
}
