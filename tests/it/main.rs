//! The integration tests: one binary, so the dependency tree is linked once, not once per file.
//!
//! - `context_*`: the context reader and atomic rewrites on real files (proptest against the
//!   oracle in `support::context_oracle`, the shipped examples, a real full tmpfs, files and
//!   directories swapped by a second, unprivileged user while the agent waits).
//! - `agent_*`: the agent against the real service in-process, against the scripted fault
//!   server (`support::faulty`), and as the `clusterctx` binary that systemd runs;
//!   `agent_failover`: several service URLs, transient failures moving to the next;
//!   `agent_sealed`: sealed clusters, and what the service and the logs never hold.
//! - `server_*`: the PIN service through its router, over real sockets, and across restarts;
//!   its limits, caps and a real full tmpfs; `server_members`: cluster membership;
//!   `server_replicas`: several `serve` processes on one throw-away PostgreSQL
//!   (`support::postgres`); `support::stores` runs the API suite on both stores.
//! - `sealed_cli`: sealed values through the operator commands, and what the service kept.
//! - `members_cli`: the operator's view of membership (`clusterctx members`, `pin show`), and
//!   the operator commands' several service URLs.
//! - `web_*`: the operator's page: its headers and HTML through the router, and a real headless
//!   Chromium creating a PIN and watching the cluster form.
//! - `agent_legacy`: `auto` against a legacy-like service whose create races
//!   (`support::legacy`).
//! - `legacy_fidelity`: what a legacy client sees, row by row, in both modes; the miss limit
//!   behind a NAT.
//! - `legacy_shell_compat`: the legacy shell agent (`legacy_shell_agent.sh`) against our
//!   service.
//!
//! Everything shared lives in [`support`].

mod support;

mod agent_cli;
#[cfg(feature = "server")]
mod agent_cluster;
#[cfg(feature = "server")]
mod agent_failover;
mod agent_faults;
#[cfg(feature = "server")]
mod agent_legacy;
#[cfg(feature = "server")]
mod agent_members;
#[cfg(feature = "server")]
mod agent_sealed;
mod context_atomic;
mod context_examples;
mod context_proptest;
mod context_swap;
#[cfg(feature = "server")]
mod legacy_fidelity;
#[cfg(feature = "server")]
mod legacy_shell_compat;
#[cfg(feature = "server")]
mod members_cli;
#[cfg(feature = "server")]
mod sealed_cli;
#[cfg(feature = "server")]
mod server_api;
#[cfg(feature = "server")]
mod server_durability;
#[cfg(feature = "server")]
mod server_limits;
#[cfg(feature = "server")]
mod server_live;
#[cfg(feature = "server")]
mod server_members;
#[cfg(feature = "server")]
mod server_openapi;
#[cfg(feature = "server")]
mod server_postgres_disk;
#[cfg(feature = "server")]
mod server_replicas;
#[cfg(feature = "server")]
mod web_browser;
#[cfg(feature = "server")]
mod web_page;
