//! [`PgStore`]: the clusters in PostgreSQL, shared by any number of `serve` replicas.
//!
//! Nothing is cached: every read is a query, so every replica reads what any replica
//! committed. Every write is one transaction, and the answer comes only after its commit.
//!
//! - Uniqueness: primary keys (a PIN, a key within its PIN), `ON CONFLICT DO NOTHING` tells
//!   the loser.
//! - Per-cluster caps (keys, members): the cluster's row is locked (`FOR UPDATE`) before the
//!   count, so concurrent writes to one cluster are serialized wherever they come from.
//! - Store-wide caps: one `usage` row holds the counts; each write that adds or removes
//!   bytes updates it in its own transaction and checks the cap against what it returns,
//!   so two writes cannot pass a cap together. Locks are taken cluster row first, usage row
//!   last, in every transaction, so they cannot deadlock. The usage row is the last
//!   statement before the commit (after `pg_notify`): every write of every replica waits for
//!   its lock, held to the end of the commit, so it is held for no round trip more than that
//!   (BENCHMARKS.md, "PostgreSQL writes: one row and one lock for every write").
//! - Wakeups: each write that wakes waiters sends `pg_notify('clusterctx', ...)` in its
//!   transaction, delivered at commit to every replica's LISTEN connection (a dedicated
//!   connection, outside the pool). The writer's own replica is told directly after commit
//!   and skips its own notification (the payload names the replica). When the LISTEN
//!   connection drops it is re-established with a bounded backoff, and then every parked
//!   waiter re-checks ([`Changed::Everything`]): whatever was written meanwhile is found.
//! - Schema: `schema_version`, migrated by whoever starts first under a transaction-scoped
//!   advisory lock; a database of a newer version is refused.
//! - Sweep: one replica at a time, the one that gets `pg_try_advisory_xact_lock`.
//! - A database that cannot be reached makes operations fail with
//!   [`StoreError::Unavailable`] (503); nothing needs a restart: the pool connects again,
//!   and the schema is checked at the first connection that works.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{error::SqlState, AsyncMessage, NoTls};

use super::{
    cluster_bytes, key_bytes, member_bytes, Change, ChangeSink, Changed, ClusterRecord, Inventory,
    KeyRead, KeysRead, MemberRecord, MembersRead, NewKey, NewMember, Quota, Registered, Role,
    Store, StoreError, StoreFuture, Swept, Usage,
};

/// The NOTIFY channel every replica listens on.
pub const CHANNEL: &str = "clusterctx";

/// The latest schema version this build knows.
pub const SCHEMA_VERSION: i32 = 1;

/// Advisory lock keys (arbitrary, fixed): the migration, the sweep.
const MIGRATION_LOCK: i64 = 0x636c_7573_7465_7201;
/// The advisory lock a replica holds while it sweeps (public for the tests that hold it).
pub const SWEEP_LOCK: i64 = 0x636c_7573_7465_7202;

/// Each step takes the schema one version up; step i makes version i + 1.
const MIGRATIONS: &[&str] = &["
CREATE TABLE clusters (
    pin         TEXT PRIMARY KEY,
    created_ms  BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL,
    token_hash  BYTEA NOT NULL
);
CREATE INDEX clusters_by_expiry ON clusters (expires_ms);
CREATE TABLE keys (
    pin    TEXT NOT NULL REFERENCES clusters(pin) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (pin, key)
);
CREATE TABLE members (
    pin           TEXT NOT NULL REFERENCES clusters(pin) ON DELETE CASCADE,
    node          TEXT NOT NULL,
    role          TEXT NOT NULL,
    address       TEXT NOT NULL,
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    joined_ms     BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    PRIMARY KEY (pin, node)
);
CREATE TABLE usage (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    clusters  BIGINT NOT NULL,
    bytes     BIGINT NOT NULL
);
INSERT INTO usage VALUES (1, 0, 0);
"];

/// The usage recount, as [`super::Usage`] counts it.
const RECOUNT: &str = "
UPDATE usage SET
    clusters = (SELECT count(*) FROM clusters),
    bytes = (SELECT coalesce(sum(octet_length(pin) + 48), 0) FROM clusters)
          + (SELECT coalesce(sum(octet_length(pin) + octet_length(key) + octet_length(value)), 0)
             FROM keys)
          + (SELECT coalesce(sum(octet_length(pin) + octet_length(node) + octet_length(address)
                                 + 17), 0) FROM members)
WHERE id = 1";

/// Whether `--db` names a PostgreSQL database rather than a SQLite file: a
/// `postgres://` / `postgresql://` URL or libpq's `key=value` form.
pub fn is_postgres(db: &Path) -> bool {
    let Some(text) = db.to_str() else {
        return false;
    };
    text.starts_with("postgres://")
        || text.starts_with("postgresql://")
        || text.split_whitespace().next().is_some_and(|word| {
            word.contains('=') && !word.contains('/') || word.starts_with("host=/")
        })
}

/// How TLS to the database is set up (see [`parse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// `sslmode` absent, `disable`, `allow` or `prefer`: plain TCP or the Unix socket.
    Off,
    /// `require`, `verify-ca`, `verify-full`: TLS, the server's certificate verified against
    /// the system's roots (or `sslrootcert`) and its name.
    Verified,
}

/// What `--db` says: the driver's configuration (password filled in from `PGPASSWORD` or
/// the password file when the URL has none), and TLS.
pub struct Target {
    pub config: tokio_postgres::Config,
    pub tls: Tls,
    pub root_cert: Option<std::path::PathBuf>,
}

impl Target {
    /// Where the database is, for logs: never the password.
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        format!(
            "postgres {}{} database {} as {}{}",
            hosts.join(","),
            self.config
                .get_ports()
                .first()
                .map_or(String::new(), |p| format!(":{p}")),
            self.config.get_dbname().unwrap_or("(default)"),
            self.config.get_user().unwrap_or("(default)"),
            if self.tls == Tls::Verified {
                ", TLS verified"
            } else {
                ""
            }
        )
    }
}

/// Parses `--db`: the sslmodes tokio-postgres does not know (`verify-ca`, `verify-full`) and
/// `sslrootcert` are taken out and handled here; the password comes from the text, then
/// `PGPASSWORD`, then `PGPASSFILE` or `~/.pgpass`, as libpq takes it.
pub fn parse(db: &str) -> anyhow::Result<Target> {
    let url = db.starts_with("postgres://") || db.starts_with("postgresql://");
    let (base, params): (String, Vec<(String, String)>) = if url {
        match db.split_once('?') {
            Some((base, query)) => (
                base.to_string(),
                query
                    .split('&')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect(),
            ),
            None => (db.to_string(), Vec::new()),
        }
    } else {
        (
            String::new(),
            db.split_whitespace()
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
        )
    };
    let mut tls = Tls::Off;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "sslmode" => match value.as_str() {
                "disable" | "allow" | "prefer" => tls = Tls::Off,
                "require" | "verify-ca" | "verify-full" => tls = Tls::Verified,
                other => anyhow::bail!("sslmode={other} is not one PostgreSQL knows"),
            },
            "sslrootcert" => root_cert = Some(std::path::PathBuf::from(value)),
            _ => kept.push((key, value)),
        }
    }
    let text = if url {
        let query: Vec<String> = kept.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if query.is_empty() {
            base
        } else {
            format!("{base}?{}", query.join("&"))
        }
    } else {
        kept.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut config: tokio_postgres::Config = text
        .parse()
        .map_err(|err| anyhow::anyhow!("--db is not a PostgreSQL connection string: {err}"))?;
    // TLS is ours to do (or not): the driver must not try on its own.
    config.ssl_mode(if tls == Tls::Verified {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Disable
    });
    if config.get_user().is_none() {
        if let Ok(user) = std::env::var("PGUSER") {
            config.user(user);
        } else if let Some(user) = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
        {
            config.user(user.name);
        }
    }
    if config.get_hosts().is_empty() {
        config.host(
            std::env::var("PGHOST")
                .as_deref()
                .unwrap_or("/run/postgresql"),
        );
    }
    if config.get_dbname().is_none() {
        if let Ok(name) = std::env::var("PGDATABASE") {
            config.dbname(name);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("clusterctx");
    if config.get_password().is_none() {
        if let Some(password) = std::env::var("PGPASSWORD")
            .ok()
            .or_else(|| password_from_file(&config))
        {
            config.password(password);
        }
    }
    Ok(Target {
        config,
        tls,
        root_cert,
    })
}

/// libpq's password file: `host:port:database:user:password` lines, `*` matching anything,
/// `\` escaping `:` and `\`; the first line that matches wins. A Unix-socket host matches
/// `localhost`, as in libpq. A file readable by others is ignored, as libpq does.
fn password_from_file(config: &tokio_postgres::Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the password file {} is readable by others: ignored (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match config.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        tokio_postgres::config::Host::Unix(_) => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    pgpass_lookup(&text, [&host, &port, dbname, user])
}

fn pgpass_lookup(text: &str, wanted: [&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' if fields.len() < 4 => fields.push(std::mem::take(&mut field)),
                c => field.push(c),
            }
        }
        fields.push(field);
        if fields.len() != 5 {
            continue;
        }
        if fields[..4]
            .iter()
            .zip(wanted)
            .all(|(f, w)| f == "*" || f == w)
        {
            return fields.pop();
        }
    }
    None
}

fn rustls_connector(
    root_cert: Option<&Path>,
) -> anyhow::Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read sslrootcert {}", path.display()))?;
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls::pki_types::CertificateDer<'static> =
                    cert.with_context(|| format!("sslrootcert {}", path.display()))?;
                roots.add(cert)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        match err.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict,
            Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => StoreError::NoCluster,
            Some(code) if *code == SqlState::DISK_FULL => StoreError::Full,
            _ => StoreError::Unavailable(format!("PostgreSQL: {}", chain(&err))),
        }
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate ...").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn pool_failed(err: deadpool_postgres::PoolError) -> StoreError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => err.into(),
        deadpool_postgres::PoolError::Closed => StoreError::Closed,
        other => StoreError::Unavailable(format!("PostgreSQL: {}", chain(&other))),
    }
}

/// See the module documentation.
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    target: Target,
    /// Names this replica in its notifications, so it skips its own.
    replica: u64,
    sink: OnceLock<ChangeSink>,
    /// The schema was checked (and migrated) on this database.
    schema_ready: AtomicBool,
    schema_lock: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Whether the LISTEN connection is up, for readiness.
    listening: AtomicBool,
}

type Client = deadpool_postgres::Object;

impl PgStore {
    /// Prepares the store for `db` (see [`parse`]) without connecting: a database that is
    /// not up yet makes operations fail with 503 until it is. Errors only for a connection
    /// string that cannot work.
    pub fn open(db: &str) -> anyhow::Result<PgStore> {
        let target = parse(db)?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match target.tls {
            Tls::Off => Manager::from_config(target.config.clone(), NoTls, manager_config),
            Tls::Verified => Manager::from_config(
                target.config.clone(),
                rustls_connector(target.root_cert.as_deref())?,
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .context("cannot set up the PostgreSQL pool")?;
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                target,
                replica: rand::random(),
                sink: OnceLock::new(),
                schema_ready: AtomicBool::new(false),
                schema_lock: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                listener: Mutex::new(None),
                listening: AtomicBool::new(false),
            }),
        })
    }

    /// Where the database is, for logs (no password).
    pub fn describe(&self) -> String {
        self.inner.target.describe()
    }

    /// Connects and migrates now, for a caller that wants the error at start.
    pub async fn connect(&self) -> Result<(), StoreError> {
        self.inner.client().await.map(drop)
    }

    fn op<'a, T, F, Fut>(&'a self, f: F) -> StoreFuture<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(Arc<Inner>, Client) -> Fut + Send + 'a,
        Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'a,
    {
        let inner = Arc::clone(&self.inner);
        StoreFuture::pending(async move {
            let client = inner.client().await?;
            f(inner, client).await
        })
    }
}

impl Inner {
    async fn client(&self) -> Result<Client, StoreError> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(StoreError::Closed);
        }
        let mut client = self.pool.get().await.map_err(pool_failed)?;
        if !self.schema_ready.load(Ordering::Acquire) {
            let _one = self.schema_lock.lock().await;
            if !self.schema_ready.load(Ordering::Acquire) {
                migrate(&mut client).await?;
                self.schema_ready.store(true, Ordering::Release);
            }
        }
        Ok(client)
    }

    fn report(&self, pin: &str, what: Changed<'_>) {
        if let Some(sink) = self.sink.get() {
            sink(Change { pin, what });
        }
    }

    /// The payload of a notification: this replica, the kind, the PIN, the key.
    fn payload(&self, pin: &str, what: Changed<'_>) -> String {
        match what {
            Changed::Key(key) => format!("{:x} k {pin} {key}", self.replica),
            Changed::Members => format!("{:x} m {pin}", self.replica),
            Changed::Cluster | Changed::Everything => format!("{:x} c {pin}", self.replica),
        }
    }

    /// A notification from the channel, reported unless it is ours (reported at commit).
    fn notified(&self, payload: &str) {
        let mut words = payload.split(' ');
        let (Some(replica), Some(kind), Some(pin)) = (words.next(), words.next(), words.next())
        else {
            return;
        };
        if u64::from_str_radix(replica, 16).ok() == Some(self.replica) {
            return;
        }
        match (kind, words.next()) {
            ("k", Some(key)) => self.report(pin, Changed::Key(key)),
            ("m", _) => self.report(pin, Changed::Members),
            ("c", _) => self.report(pin, Changed::Cluster),
            _ => {}
        }
    }
}

async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    inner: &Inner,
    pin: &str,
    what: Changed<'_>,
) -> Result<(), StoreError> {
    let statement = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(&statement, &[&CHANNEL, &inner.payload(pin, what)])
        .await?;
    Ok(())
}

/// Ends a write that wakes waiters, in the one order that keeps the usage row's lock short:
/// the notification, the usage row last (see the module's note), the commit, then the
/// writer's own replica told.
async fn commit_change(
    tx: deadpool_postgres::Transaction<'_>,
    inner: &Inner,
    pin: &str,
    what: Changed<'_>,
    quota: Quota,
    clusters: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    notify(&tx, inner, pin, what).await?;
    grow(&tx, quota, clusters, bytes).await?;
    tx.commit().await?;
    inner.report(pin, what);
    Ok(())
}

/// Creates or upgrades the schema, one replica at a time.
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .await?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {version}, written by a newer clusterctx (this \
             one knows version {SCHEMA_VERSION})"
        )));
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await?;
        let to = step as i32 + 1;
        tx.execute("DELETE FROM schema_version", &[]).await?;
        tx.execute("INSERT INTO schema_version VALUES ($1)", &[&to])
            .await?;
        tracing::info!("the database's schema is now version {to}");
    }
    tx.commit().await?;
    Ok(())
}

/// Adds `clusters` and `bytes` (either may be negative) to the usage row, refusing growth
/// past `quota`. Call it last before the commit: see the module's note on the usage row.
async fn grow(
    tx: &deadpool_postgres::Transaction<'_>,
    quota: Quota,
    clusters: i64,
    bytes: i64,
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "UPDATE usage SET clusters = clusters + $1, bytes = bytes + $2 WHERE id = 1
             RETURNING clusters, bytes",
        )
        .await?;
    let row = tx.query_one(&statement, &[&clusters, &bytes]).await?;
    let (now_clusters, now_bytes): (i64, i64) = (row.get(0), row.get(1));
    let before = Usage {
        clusters: (now_clusters - clusters).max(0) as u64,
        bytes: (now_bytes - bytes).max(0) as u64,
    };
    quota
        .admits(before, clusters.max(0) as u64, bytes.max(0) as u64)
        .map_err(StoreError::AtCap)
}

/// Runs `delete` (one row of the cluster `pin`, named by `name`, `RETURNING` the bytes it
/// counted) under the cluster's row lock and gives those bytes back to the usage row; whether
/// a row was deleted.
async fn delete_counted(
    tx: deadpool_postgres::Transaction<'_>,
    delete: &str,
    pin: &str,
    name: &str,
) -> Result<bool, StoreError> {
    if lock_cluster(&tx, pin).await?.is_none() {
        return Ok(false);
    }
    let statement = tx.prepare_cached(delete).await?;
    let Some(row) = tx.query_opt(&statement, &[&pin, &name]).await? else {
        return Ok(false);
    };
    let bytes: i32 = row.get(0);
    grow(&tx, Quota::default(), 0, -i64::from(bytes)).await?;
    tx.commit().await?;
    Ok(true)
}

/// Locks the cluster's row for the transaction; its expiry, or `None` if not stored.
async fn lock_cluster(
    tx: &deadpool_postgres::Transaction<'_>,
    pin: &str,
) -> Result<Option<i64>, StoreError> {
    let statement = tx
        .prepare_cached("SELECT expires_ms FROM clusters WHERE pin = $1 FOR UPDATE")
        .await?;
    Ok(tx.query_opt(&statement, &[&pin]).await?.map(|r| r.get(0)))
}

/// The LISTEN connection: re-established with a bounded backoff for as long as the store
/// is open; every (re-)establishment wakes every waiter to re-check.
async fn listen_loop(inner: Arc<Inner>) {
    let mut delay = Duration::from_millis(50);
    let mut down_logged = false;
    while !inner.closed.load(Ordering::Relaxed) {
        let result = match inner.target.tls {
            Tls::Off => listen_once(&inner, NoTls).await,
            Tls::Verified => match rustls_connector(inner.target.root_cert.as_deref()) {
                Ok(tls) => listen_once(&inner, tls).await,
                Err(err) => Err(format!("{err:#}")),
            },
        };
        let was_up = inner.listening.swap(false, Ordering::Relaxed);
        if was_up {
            delay = Duration::from_millis(50);
            down_logged = false;
        }
        if let Err(err) = result {
            if !down_logged {
                tracing::warn!(
                    "the notification connection to PostgreSQL is down: {err}; retrying"
                );
                down_logged = true;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn listen_once<T>(inner: &Inner, tls: T) -> Result<(), String>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = inner
        .target
        .config
        .connect(tls)
        .await
        .map_err(|e| e.to_string())?;
    let (messages_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(message)) => {
                    if messages_tx.send(Ok(message)).is_err() {
                        break;
                    }
                }
                Some(Err(err)) => {
                    let _ = messages_tx.send(Err(err.to_string()));
                    break;
                }
                None => {
                    let _ = messages_tx.send(Err("the connection closed".to_string()));
                    break;
                }
            }
        }
    });
    let _stop = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    inner.listening.store(true, Ordering::Relaxed);
    tracing::info!("listening for changes from other replicas (channel {CHANNEL})");
    // Anything written while we were not listening: every waiter looks again.
    inner.report("", Changed::Everything);
    let mut keepalive = tokio::time::interval(Duration::from_secs(5));
    keepalive.tick().await;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => inner.notified(n.payload()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Err("the connection closed".into()),
            },
            // A dead peer is noticed within seconds, not at the kernel's TCP timeout.
            _ = keepalive.tick() => {
                if inner.closed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                match tokio::time::timeout(Duration::from_secs(5), client.simple_query("")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => return Err(err.to_string()),
                    Err(_) => return Err("no answer within 5 s".into()),
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn record(row: &tokio_postgres::Row) -> Result<ClusterRecord, StoreError> {
    let hash: Vec<u8> = row.get(3);
    Ok(ClusterRecord {
        pin: row.get(0),
        created_ms: row.get(1),
        expires_ms: row.get(2),
        token_hash: hash.as_slice().try_into().map_err(|_| {
            StoreError::Unavailable("a token digest in the store is malformed".into())
        })?,
    })
}

impl Store for PgStore {
    fn subscribe(&self, sink: ChangeSink) {
        if self.inner.sink.set(sink).is_err() {
            tracing::error!("a second subscriber to the store was ignored");
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no runtime to listen for other replicas' changes on");
            return;
        };
        let task = runtime.spawn(listen_loop(Arc::clone(&self.inner)));
        *self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    fn create_cluster(&self, cluster: ClusterRecord, quota: Quota) -> StoreFuture<'_, ()> {
        self.op(move |_inner, mut client| async move {
            let tx = client.transaction().await?;
            let statement = tx
                .prepare_cached(
                    "INSERT INTO clusters (pin, created_ms, expires_ms, token_hash)
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .await?;
            let hash = &cluster.token_hash[..];
            let inserted = tx
                .execute(
                    &statement,
                    &[
                        &cluster.pin,
                        &cluster.created_ms,
                        &cluster.expires_ms,
                        &hash,
                    ],
                )
                .await?;
            if inserted == 0 {
                return Err(StoreError::Conflict);
            }
            grow(&tx, quota, 1, cluster_bytes(&cluster.pin) as i64).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn cluster<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<ClusterRecord>> {
        self.op(move |_inner, client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT pin, created_ms, expires_ms, token_hash FROM clusters WHERE pin = $1",
                )
                .await?;
            match client.query_opt(&statement, &[&pin]).await? {
                Some(row) => Ok(Some(record(&row)?)),
                None => Ok(None),
            }
        })
    }

    fn key<'a>(&'a self, pin: &'a str, key: &'a str) -> StoreFuture<'a, Option<KeyRead>> {
        self.op(move |_inner, client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT c.expires_ms, k.value FROM clusters c
                     LEFT JOIN keys k ON k.pin = c.pin AND k.key = $2 WHERE c.pin = $1",
                )
                .await?;
            Ok(client
                .query_opt(&statement, &[&pin, &key])
                .await?
                .map(|row| KeyRead {
                    expires_ms: row.get(0),
                    value: row.get(1),
                }))
        })
    }

    fn keys<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<KeysRead>> {
        self.op(move |_inner, client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT c.expires_ms, k.key, k.value FROM clusters c
                     LEFT JOIN keys k ON k.pin = c.pin WHERE c.pin = $1 ORDER BY k.key COLLATE \"C\"",
                )
                .await?;
            let rows = client.query(&statement, &[&pin]).await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            Ok(Some(KeysRead {
                expires_ms: first.get(0),
                keys: rows
                    .iter()
                    .filter_map(|row| Some((row.get::<_, Option<String>>(1)?, row.get(2))))
                    .collect(),
            }))
        })
    }

    fn create_key(&self, new: NewKey) -> StoreFuture<'_, ()> {
        self.op(move |inner, mut client| async move {
            let tx = client.transaction().await?;
            let expires_ms = lock_cluster(&tx, &new.pin)
                .await?
                .ok_or(StoreError::NoCluster)?;
            if expires_ms <= new.now_ms {
                return Err(StoreError::Expired);
            }
            let statement = tx
                .prepare_cached("SELECT count(*) FROM keys WHERE pin = $1")
                .await?;
            let count: i64 = tx.query_one(&statement, &[&new.pin]).await?.get(0);
            if count as u64 >= new.max_keys as u64 {
                return Err(StoreError::TooManyKeys(new.max_keys));
            }
            let statement = tx
                .prepare_cached(
                    "INSERT INTO keys (pin, key, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .await?;
            if tx
                .execute(&statement, &[&new.pin, &new.key, &new.value])
                .await?
                == 0
            {
                return Err(StoreError::Conflict);
            }
            let bytes = key_bytes(&new.pin, &new.key, &new.value) as i64;
            let changed = Changed::Key(&new.key);
            commit_change(tx, &inner, &new.pin, changed, new.quota, 0, bytes).await
        })
    }

    fn replace_key(
        &self,
        pin: String,
        key: String,
        value: String,
        quota: Quota,
    ) -> StoreFuture<'_, bool> {
        self.op(move |inner, mut client| async move {
            let tx = client.transaction().await?;
            if lock_cluster(&tx, &pin).await?.is_none() {
                return Ok(false);
            }
            let statement = tx
                .prepare_cached(
                    "SELECT octet_length(value) FROM keys WHERE pin = $1 AND key = $2 FOR UPDATE",
                )
                .await?;
            let Some(row) = tx.query_opt(&statement, &[&pin, &key]).await? else {
                return Ok(false);
            };
            let old: i32 = row.get(0);
            let statement = tx
                .prepare_cached("UPDATE keys SET value = $3 WHERE pin = $1 AND key = $2")
                .await?;
            tx.execute(&statement, &[&pin, &key, &value]).await?;
            let growth = value.len() as i64 - i64::from(old);
            commit_change(tx, &inner, &pin, Changed::Key(&key), quota, 0, growth).await?;
            Ok(true)
        })
    }

    fn delete_key(&self, pin: String, key: String) -> StoreFuture<'_, bool> {
        self.op(move |_inner, mut client| async move {
            let delete = "DELETE FROM keys WHERE pin = $1 AND key = $2
                 RETURNING octet_length(pin) + octet_length(key) + octet_length(value)";
            delete_counted(client.transaction().await?, delete, &pin, &key).await
        })
    }

    fn put_member(&self, new: NewMember) -> StoreFuture<'_, Registered> {
        self.op(move |inner, mut client| async move {
            let tx = client.transaction().await?;
            let expires_ms = lock_cluster(&tx, &new.pin)
                .await?
                .ok_or(StoreError::NoCluster)?;
            if expires_ms <= new.now_ms {
                return Err(StoreError::Expired);
            }
            let statement = tx
                .prepare_cached("SELECT address FROM members WHERE pin = $1 AND node = $2")
                .await?;
            let old: Option<String> = tx
                .query_opt(&statement, &[&new.pin, &new.node])
                .await?
                .map(|row| row.get(0));
            let role = new.role.as_str();
            let bytes = member_bytes(&new.pin, &new.node, &new.address) as i64;
            let (registered, growth) = match &old {
                Some(old) => {
                    let statement = tx
                        .prepare_cached(
                            "UPDATE members SET role = $3, address = $4, last_seen_ms = $5
                             WHERE pin = $1 AND node = $2",
                        )
                        .await?;
                    tx.execute(
                        &statement,
                        &[&new.pin, &new.node, &role, &new.address, &new.now_ms],
                    )
                    .await?;
                    let old_bytes = member_bytes(&new.pin, &new.node, old) as i64;
                    (Registered::Updated, bytes - old_bytes)
                }
                None => {
                    let statement = tx
                        .prepare_cached("SELECT count(*) FROM members WHERE pin = $1")
                        .await?;
                    let count: i64 = tx.query_one(&statement, &[&new.pin]).await?.get(0);
                    if count as u64 >= new.max_members {
                        return Err(StoreError::TooManyMembers(new.max_members));
                    }
                    let statement = tx
                        .prepare_cached(
                            "INSERT INTO members (pin, node, role, address, joined_ms, last_seen_ms)
                             VALUES ($1, $2, $3, $4, $5, $5)",
                        )
                        .await?;
                    tx.execute(
                        &statement,
                        &[&new.pin, &new.node, &role, &new.address, &new.now_ms],
                    )
                    .await?;
                    (Registered::Joined, bytes)
                }
            };
            commit_change(tx, &inner, &new.pin, Changed::Members, new.quota, 0, growth).await?;
            Ok(registered)
        })
    }

    fn members<'a>(&'a self, pin: &'a str) -> StoreFuture<'a, Option<MembersRead>> {
        self.op(move |_inner, client| async move {
            let statement = client
                .prepare_cached(
                    "SELECT c.expires_ms, m.node, m.role, m.address, m.joined_ms, m.last_seen_ms
                     FROM clusters c LEFT JOIN members m ON m.pin = c.pin
                     WHERE c.pin = $1 ORDER BY m.seq",
                )
                .await?;
            let rows = client.query(&statement, &[&pin]).await?;
            let Some(first) = rows.first() else {
                return Ok(None);
            };
            let mut members = Vec::new();
            for row in &rows {
                let Some(node) = row.get::<_, Option<String>>(1) else {
                    continue;
                };
                let role: String = row.get(2);
                members.push(MemberRecord {
                    node,
                    role: Role::parse(&role).ok_or_else(|| {
                        StoreError::Unavailable("a member role in the store is malformed".into())
                    })?,
                    address: row.get(3),
                    joined_ms: row.get(4),
                    last_seen_ms: row.get(5),
                });
            }
            Ok(Some(MembersRead {
                expires_ms: first.get(0),
                members,
            }))
        })
    }

    fn delete_member(&self, pin: String, node: String) -> StoreFuture<'_, bool> {
        self.op(move |_inner, mut client| async move {
            let delete = "DELETE FROM members WHERE pin = $1 AND node = $2
                 RETURNING octet_length(pin) + octet_length(node) + octet_length(address) + 17";
            delete_counted(client.transaction().await?, delete, &pin, &node).await
        })
    }

    fn delete_cluster(&self, pin: String) -> StoreFuture<'_, bool> {
        self.op(move |inner, mut client| async move {
            let tx = client.transaction().await?;
            if lock_cluster(&tx, &pin).await?.is_none() {
                return Ok(false);
            }
            let statement = tx
                .prepare_cached(
                    "SELECT octet_length($1::text) + 48
                      + (SELECT coalesce(sum(octet_length(pin) + octet_length(key)
                                             + octet_length(value)), 0) FROM keys WHERE pin = $1)
                      + (SELECT coalesce(sum(octet_length(pin) + octet_length(node)
                                             + octet_length(address) + 17), 0)
                         FROM members WHERE pin = $1)",
                )
                .await?;
            let bytes: i64 = tx.query_one(&statement, &[&pin]).await?.get(0);
            tx.execute("DELETE FROM clusters WHERE pin = $1", &[&pin])
                .await?;
            commit_change(
                tx,
                &inner,
                &pin,
                Changed::Cluster,
                Quota::default(),
                -1,
                -bytes,
            )
            .await?;
            Ok(true)
        })
    }

    fn sweep(&self, now_ms: i64, forget_before_ms: i64) -> StoreFuture<'_, Swept> {
        self.op(move |inner, mut client| async move {
            let tx = client.transaction().await?;
            let locked: bool = tx
                .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
                .await?
                .get(0);
            if !locked {
                // Another replica is sweeping.
                return Ok(Swept::default());
            }
            let emptied: Vec<String> = tx
                .query(
                    "SELECT pin FROM clusters c WHERE expires_ms <= $1 AND expires_ms > $2
                     AND (EXISTS (SELECT 1 FROM keys k WHERE k.pin = c.pin)
                          OR EXISTS (SELECT 1 FROM members m WHERE m.pin = c.pin))",
                    &[&now_ms, &forget_before_ms],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            tx.execute(
                "DELETE FROM keys WHERE pin IN (SELECT pin FROM clusters WHERE expires_ms <= $1)",
                &[&now_ms],
            )
            .await?;
            tx.execute(
                "DELETE FROM members WHERE pin IN (SELECT pin FROM clusters WHERE expires_ms <= $1)",
                &[&now_ms],
            )
            .await?;
            let forgotten: Vec<String> = tx
                .query(
                    "DELETE FROM clusters WHERE expires_ms <= $1 RETURNING pin",
                    &[&forget_before_ms],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            if emptied.is_empty() && forgotten.is_empty() {
                return Ok(Swept::default());
            }
            for pin in emptied.iter().chain(&forgotten) {
                notify(&tx, &inner, pin, Changed::Cluster).await?;
            }
            tx.execute(RECOUNT, &[]).await?;
            tx.commit().await?;
            for pin in emptied.iter().chain(&forgotten) {
                inner.report(pin, Changed::Cluster);
            }
            Ok(Swept {
                emptied: emptied.len() as u64,
                forgotten: forgotten.len() as u64,
            })
        })
    }

    fn inventory(&self, now_ms: i64) -> StoreFuture<'_, Inventory> {
        self.op(move |_inner, client| async move {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM clusters WHERE expires_ms > $1),
                            (SELECT count(*) FROM clusters WHERE expires_ms <= $1),
                            (SELECT count(*) FROM keys k JOIN clusters c USING (pin)
                             WHERE c.expires_ms > $1),
                            (SELECT count(*) FROM members m JOIN clusters c USING (pin)
                             WHERE c.expires_ms > $1),
                            u.clusters, u.bytes
                     FROM usage u WHERE u.id = 1",
                    &[&now_ms],
                )
                .await?;
            let count = |i: usize| row.get::<_, i64>(i).max(0) as u64;
            Ok(Inventory {
                clusters: count(0),
                tombstones: count(1),
                keys: count(2),
                members: count(3),
                usage: Usage {
                    clusters: count(4),
                    bytes: count(5),
                },
                read_only: false,
            })
        })
    }

    fn ready(&self) -> StoreFuture<'_, ()> {
        self.op(move |inner, client| async move {
            client.simple_query("").await?;
            if !inner.listening.load(Ordering::Relaxed) {
                return Err(StoreError::Unavailable(
                    "the notification connection is not up yet".into(),
                ));
            }
            Ok(())
        })
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::Relaxed);
        if let Some(task) = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            task.abort();
        }
        self.inner.pool.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_arguments_are_told_apart() {
        for pg in [
            "postgres://u@localhost/db",
            "postgresql://u:secret@db.example:5433/pins?sslmode=require",
            "host=/run/postgresql dbname=pins",
            "dbname=pins user=clusterctx",
        ] {
            assert!(is_postgres(Path::new(pg)), "{pg}");
        }
        for file in [
            "/var/lib/x/pins.sqlite3",
            "pins.sqlite3",
            "./a=b/pins",
            "dir/x=y",
        ] {
            assert!(!is_postgres(Path::new(file)), "{file}");
        }
    }

    #[test]
    fn sslmodes_and_passwords() {
        let target =
            parse("postgresql://u:secret@db.example:5433/pins?sslmode=verify-full").unwrap();
        assert_eq!(target.tls, Tls::Verified);
        assert_eq!(target.config.get_password(), Some(&b"secret"[..]));
        assert!(
            !target.describe().contains("secret"),
            "{}",
            target.describe()
        );
        let target = parse("host=/tmp dbname=pins user=u sslmode=prefer").unwrap();
        assert_eq!(target.tls, Tls::Off);
        assert!(parse("postgres://u@h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let text = "# comment\nother:*:*:*:no\nlocalhost:5432:pins:u:pa\\:ss\n*:*:*:*:any\n";
        assert_eq!(
            pgpass_lookup(text, ["localhost", "5432", "pins", "u"]).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, ["db", "5432", "pins", "u"]).as_deref(),
            Some("any")
        );
        assert_eq!(pgpass_lookup("h:1:d:u:p\n", ["x", "1", "d", "u"]), None);
    }
}
