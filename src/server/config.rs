//! [`Config`]: everything a server needs, and the options of `clusterctx serve`, said once.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use axum::http::HeaderName;

use super::clock::Clock;
use crate::protocol;

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
    /// The durable store: a SQLite file (its directory is created if missing), or a
    /// PostgreSQL database shared by replicas: a postgres:// or postgresql:// URL, or libpq's
    /// "host=/run/postgresql dbname=pins" form (password from PGPASSWORD or ~/.pgpass).
    /// [default: $STATE_DIRECTORY/pins.sqlite3 under systemd, else /var/lib/clusterctx-pin-service/pins.sqlite3]
    // `None` in a `Config` made in code keeps everything in memory (tests, throw-away
    // servers); `serve` fills in the default path instead.
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<PathBuf>,
    /// How long a PIN (and its keys) lives after creation, e.g. 24h, 90m, 10s.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = positive_duration)]
    pub ttl: Duration,
    /// Legacy open mode: anyone who knows a PIN may replace or delete its keys and delete it,
    /// without the admin token.
    #[arg(long)]
    pub open: bool,
    /// Behave like the legacy CernVM (Django) service, to test legacy agents' peers: `?wait=`
    /// ignored (no long-poll), no service header, no admin token or expiry in answers, DRF's
    /// content negotiation (406) and error bodies, `[]` for the keys of an unknown PIN, no
    /// trailing-slash routes. Implies --open.
    #[arg(long)]
    pub emulate_legacy: bool,
    /// PEM certificate chain: serve HTTPS instead of HTTP (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Misses (requests for unknown PINs) a client may make in a burst before its misses get
    /// 429 (requests for PINs that exist are always served); 0 disables the limit.
    // Honest clients never miss; a typo'd PIN in a 300-node cluster behind one NAT costs 300
    // misses per retry round, which this absorbs, while guessing 62-bit PINs at 5 per second
    // is hopeless.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub miss_burst: u32,
    /// Misses per second refilled to each client's allowance.
    #[arg(long, value_name = "N", default_value_t = 5.0)]
    pub miss_per_sec: f64,
    /// PIN creations a client may make in a burst before it gets 429; 0 disables the limit.
    // A CI system that makes a cluster a minute uses a sixth of the refill below, and a
    // pipeline that starts a few dozen clusters at once fits in the burst; a client creating
    // as fast as it can gets 60, then one every 10 s.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub create_burst: u32,
    /// PIN creations per second refilled to each client's allowance (0.1: one every 10 s).
    #[arg(long, value_name = "N", default_value_t = 0.1)]
    pub create_per_sec: f64,
    /// Take the client address for the miss and creation limits from this header (e.g.
    /// X-Forwarded-For, last entry) instead of the connection's peer. Only behind a proxy that
    /// sets it: clients can forge it otherwise.
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
    /// Most members one cluster may hold (403 beyond, like --max-keys), at most 4096.
    // A member row is about 60 B of disk: 1,024 of them are 60 KB, and a cluster of that size
    // is already rare. The upper bound keeps the longest list inside what agents read.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=protocol::MAX_MEMBERS))]
    pub max_members: u64,
    /// Most clusters the store may hold, live or expired until the sweep forgets them (507
    /// beyond); 0: no cap.
    // About 450 B of memory and 100 B of disk each (measured): 100,000 is 45 MB.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub max_clusters: u64,
    /// Most bytes of PINs, keys and values the store may hold (507 beyond); 0: no cap.
    // Memory costs 2.5 times these bytes with 200-character values and 12 times with 1-character
    // keys and values (measured), so 64 MiB is 160 to 800 MB; a cluster of a few short keys
    // counts about 300 B, so --max-clusters of them fit.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_stored_bytes: u64,
    /// How often expired PINs are swept from the store.
    #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = positive_duration)]
    pub sweep_interval: Duration,
    /// How long an expired PIN answers 410 Gone before it is forgotten (404).
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub tombstone_for: Duration,
    /// How long a shutdown waits for open requests to finish.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Where expiry reads the time: the system's clock, or a test's
    /// [`ManualClock`](super::ManualClock).
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
    pub(crate) fn check(&self) -> anyhow::Result<()> {
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
