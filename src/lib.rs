//! clusterctx: cluster contextualization for CernVM virtual machines.
//!
//! A master publishes its address under a shared PIN to the PIN service; workers wait for it and
//! substitute it into their context files before the rest of the boot consumes them. The contract
//! with the legacy peers and the extensions beyond them are in `PROTOCOL.md`.
//!
//! # Layout
//!
//! - [`protocol`]: what crosses the wire, shared by client and server: paths, the item and
//!   cluster JSON shapes, the `key: value` text rendering, name and value limits, and the header
//!   by which our service identifies itself.
//! - [`secret`]: PIN, token and cluster secret wrappers that redact themselves in logs and
//!   `Debug` output.
//! - [`seal`]: sealed values: AES-256-GCM under a key derived from the cluster secret and the
//!   PIN, so that the PIN service never sees a cluster's values.
//! - [`context`]: the user-data side: finding the `[ucernvm-begin]` block in any user-data
//!   format cloud-init accepts, finding and substituting `###<NAME>_PLACEHOLDER###`, checking
//!   values before they reach a file, and rewriting files atomically in the directory they
//!   were read from, refusing one swapped meanwhile.
//! - [`client`]: the HTTP client for the PIN service, its errors (sorted into permanent and
//!   transient) in their own module, and the retry schedule whose window is a deadline.
//! - [`agent`]: the boot steps built on the above: one `Plan` made from the settings and the
//!   context files, which `check` prints and `contextualize` executes (master, worker,
//!   first-in election); `master-ready`; address detection; the state kept across reboots;
//!   `AgentError`, whose class is the exit code.
//! - [`server`] (feature `server`): the PIN service: router, request state, the `Store` trait
//!   (SQLite, and a fault-injecting store for tests), the long-poll waiter registry fed by the
//!   store's change reports, expiry on an injected clock and its sweep, admin tokens, rate
//!   limits, metrics, TLS. Its options are one `clap` struct, `server::Config`.
//! - [`logging`]: tracing to journald when it is there, to stderr otherwise.
//! - [`cli`]: the command-line definition, also used to generate the man page and completions.
//! - [`notify`]: progress for systemd: the retry loop's per-try lines and the final word of a
//!   run become `STATUS=` messages, so `systemctl status` shows where a boot stands.
//! - [`manage`]: the manual commands `clusterctx pin ...`, `clusterctx key ...` and
//!   `clusterctx members`, each over the service URLs given, with the agent's failover.
//! - [`sys`]: process-wide OS settings (the open files limit), for the service and the load
//!   tools in `examples/`.
//!
//! `main.rs` only parses the command line, sets up logging, dispatches and maps the outcome to an
//! exit code (an `AgentError`'s own, else 1).

pub mod agent;
pub mod cli;
pub mod client;
pub mod context;
pub mod logging;
pub mod manage;
pub mod notify;
pub mod protocol;
pub mod seal;
pub mod secret;
#[cfg(feature = "server")]
pub mod server;
pub mod sys;

/// Version string with the git commit it was built from, e.g. `0.1.0 (3f2a1c9)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("CLUSTERCTX_GIT_COMMIT"),
    ")"
);
