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
//! - [`secret`]: PIN and token wrappers that redact themselves in logs and `Debug` output.
//! - [`context`]: the user-data side: finding the `[ucernvm-begin]` block in any user-data
//!   format cloud-init accepts, finding and substituting `###<NAME>_PLACEHOLDER###`, checking
//!   values before they reach a file, and rewriting files atomically in the directory they
//!   were read from, refusing one swapped meanwhile.
//! - [`client`]: the HTTP client for the PIN service, with errors sorted into permanent and
//!   transient, and the retry policy that schedules attempts.
//! - [`agent`]: the boot steps built on the above: `contextualize` (master, worker, first-in
//!   election), `master-ready`, address detection, and the state kept across reboots.
//! - [`server`] (feature `server`): the PIN service: router, durable store, long-poll waiters,
//!   expiry sweep, admin tokens, rate limits, metrics, TLS.
//! - [`logging`]: tracing to journald when it is there, to stderr otherwise.
//! - [`cli`]: the command-line definition, also used to generate the man page and completions.
//! - [`manage`]: the manual commands `clusterctx pin ...` and `clusterctx key ...`.
//! - [`sys`]: process-wide OS settings (the open files limit), for the service and the load
//!   tools in `examples/`.
//!
//! `main.rs` only parses the command line, sets up logging, dispatches and maps the outcome to an
//! exit code.

pub mod agent;
pub mod cli;
pub mod client;
pub mod context;
pub mod logging;
pub mod manage;
pub mod protocol;
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
