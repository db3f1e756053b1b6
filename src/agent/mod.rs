//! The boot steps, built on [`crate::context`] and [`crate::client`].
//!
//! - [`contextualize`]: master publishes, worker waits and fills placeholders, auto elects.
//! - [`master_ready`]: the master announces that its boot has finished.
//! - [`check`]: what `contextualize` would do, without touching anything.
//! - [`config`]: settings from the ucernvm block and the command line.
//! - [`files`]: which context files are read and rewritten.
//! - [`address`]: the address a master publishes.
//! - [`state`]: the outcome kept across reboots.

pub mod address;
pub mod check;
pub mod config;
pub mod contextualize;
pub mod files;
pub mod master_ready;
pub mod state;

use std::{path::PathBuf, time::Duration};

use config::{AgentConfig, Overrides, RoleRequest};
use files::ContextSet;

/// Options shared by the agent's subcommands.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// A context file (user-data). Repeat for several: the ucernvm block is read from the
    /// first that has one, placeholders are filled in all. Default: the CernVM user-data
    /// copies (/user-data, /mnt/.rw/context/user-data, /var/lib/cloud/instance/user-data.txt)
    /// and the files cloud-init's later stages read (instance/cloud-config.txt,
    /// instance/scripts/*, scripts/per-*/*, under /var/lib/cloud), those that exist.
    #[arg(long = "context", value_name = "FILE")]
    pub context: Vec<PathBuf>,
    /// Where the outcome is recorded across reboots.
    #[arg(long, value_name = "DIR", default_value = state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Number of tries (default 50, or cvm_cluster_tries).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tries: Option<u32>,
    /// Seconds between tries, fractions allowed (default 30, or cvm_cluster_interval).
    #[arg(long, value_name = "SECS", value_parser = config::parse_interval)]
    pub interval: Option<Duration>,
    /// The PIN service URL (default: cvm_service_url, else https://cernvm-online.cern.ch).
    #[arg(long, value_name = "URL")]
    pub service_url: Option<String>,
    /// Extra trusted CA certificates (PEM) for an https service (or cvm_cluster_ca_file).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// The cluster PIN (default: cvm_cluster_pin).
    #[arg(long, value_name = "PIN")]
    pub pin: Option<String>,
    /// This node's role (default: cvm_cluster_master: yes = master, auto = election).
    #[arg(long, value_enum)]
    pub role: Option<RoleRequest>,
    /// Address or interface name to publish as master_ip (default: cvm_cluster_address, else
    /// the source address toward the PIN service).
    #[arg(long, value_name = "ADDR|IFACE")]
    pub address: Option<String>,
    /// Workers fetch values without waiting for master_ready (or cvm_cluster_wait_ready=no).
    #[arg(long)]
    pub no_wait_ready: bool,
    /// Seconds one request may take before it counts as a timeout and is retried (default
    /// 20; a long-poll adds its wait).
    #[arg(long, value_name = "SECS", value_parser = config::parse_interval)]
    pub request_timeout: Option<Duration>,
}

impl AgentArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            pin: self.pin.clone(),
            role: self.role,
            service_url: self.service_url.clone(),
            address: self.address.clone(),
            tries: self.tries,
            interval: self.interval,
            no_wait_ready: self.no_wait_ready,
            ca_file: self.ca_file.clone(),
            request_timeout: self.request_timeout,
        }
    }

    /// Loads the context files and settles the configuration. `None`: nothing to do.
    pub fn load(&self) -> anyhow::Result<Option<(ContextSet, AgentConfig)>> {
        let contexts = ContextSet::load(&self.context)?;
        if contexts.is_empty() {
            tracing::info!("no context file found: no cluster contextualization");
            return Ok(None);
        }
        let block = contexts.block()?;
        let config = AgentConfig::resolve(block.as_ref().map(|(_, b)| b), &self.overrides())?;
        let Some(config) = config else {
            tracing::info!("no cvm_cluster_pin in the context: no cluster contextualization");
            return Ok(None);
        };
        for warning in config.warnings.iter().chain(&contexts.warnings()) {
            tracing::warn!("{warning}");
        }
        Ok(Some((contexts, config)))
    }

    pub fn store(&self) -> state::StateStore {
        state::StateStore::new(&self.state_dir)
    }
}

#[derive(Debug, clap::Args)]
pub struct ContextualizeArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Only say what would be done (same as `clusterctx check`).
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct MasterReadyArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// `clusterctx contextualize`.
pub async fn contextualize_command(args: &ContextualizeArgs) -> anyhow::Result<()> {
    if args.dry_run {
        return check::run(&args.agent).map(drop);
    }
    let Some((contexts, config)) = args.agent.load()? else {
        return Ok(());
    };
    contextualize::run(&contexts, &config, &args.agent.store())
        .await
        .map(drop)
}

/// `clusterctx master-ready`.
pub async fn master_ready_command(args: &MasterReadyArgs) -> anyhow::Result<()> {
    let Some((_, config)) = args.agent.load()? else {
        return Ok(());
    };
    master_ready::run(&config, &args.agent.store())
        .await
        .map(drop)
}
