//! The boot steps, built on [`crate::context`] and [`crate::client`].
//!
//! One decision, one place: [`plan`] turns the settings and the context files into a
//! [`Plan`] (role, what to publish, whether to wait for `master_ready`, which keys to fetch,
//! which files to fill, the schedule, the warnings); [`check`] prints it and
//! [`contextualize`] executes it.
//!
//! - [`command`]: the subcommands' arguments and their wiring (arguments -> plan -> step).
//! - [`plan`]: the [`Plan`], made once from [`config`] and [`files`].
//! - [`contextualize`]: executes a plan: master publishes, worker waits and fills
//!   placeholders, auto elects.
//! - [`master_ready`]: the master announces that its boot has finished.
//! - [`check`]: a plan as a report, without touching anything.
//! - [`error`]: [`AgentError`], why a run failed, and the exit code of each class.
//! - [`config`]: settings from the ucernvm block and the command line (one definition).
//! - [`files`]: which context files are read and rewritten.
//! - [`sealing`]: sealing on or off, the plan's one way out and in for values.
//! - [`address`]: the address a master publishes.
//! - [`state`]: the outcome kept across reboots.
//! - [`node`]: this node's name in the member list.
//!
//! The imports point one way: `command` -> `check`, `contextualize`, `master_ready` -> `plan`
//! -> `config`, `files`, `sealing`, `state`; every step -> `error`; nothing imports `command`.

pub mod address;
pub mod check;
pub mod command;
pub mod config;
pub mod contextualize;
pub mod error;
pub mod files;
pub mod master_ready;
pub mod node;
pub mod plan;
pub mod sealing;
pub mod state;

pub use command::{
    check_command, contextualize_command, master_ready_command, AgentArgs, CheckArgs,
    ContextualizeArgs, MasterReadyArgs,
};
pub use error::AgentError;
pub use plan::Plan;
