//! The agent's subcommands as the command line gives them: their arguments, and each
//! command's wiring from arguments to [`Plan`] to the step that executes or prints it.

use std::path::PathBuf;

use super::{
    check,
    config::Overrides,
    contextualize,
    error::AgentError,
    files::ContextSet,
    master_ready,
    plan::Plan,
    state::{self, StateStore},
};

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
    /// The settings that override the ucernvm block.
    #[command(flatten)]
    pub overrides: Overrides,
}

impl AgentArgs {
    /// Loads the context files and makes the plan. `None`: nothing to do.
    pub fn plan(&self) -> Result<Option<(ContextSet, Plan)>, AgentError> {
        let contexts =
            ContextSet::load(&self.context).map_err(|err| AgentError::ContextFile(err.into()))?;
        Ok(Plan::build(&contexts, &self.overrides)?.map(|plan| (contexts, plan)))
    }

    pub fn store(&self) -> StateStore {
        StateStore::new(&self.state_dir)
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
pub async fn contextualize_command(args: &ContextualizeArgs) -> Result<(), AgentError> {
    if args.dry_run {
        return check_command(&args.agent);
    }
    let Some((contexts, plan)) = args.agent.plan()? else {
        return Ok(());
    };
    contextualize::run(&plan, &contexts, &args.agent.store())
        .await
        .map(drop)
}

/// `clusterctx master-ready`.
pub async fn master_ready_command(args: &MasterReadyArgs) -> Result<(), AgentError> {
    let Some((_, plan)) = args.agent.plan()? else {
        return Ok(());
    };
    plan.log_warnings();
    master_ready::run(&plan, &args.agent.store())
        .await
        .map(drop)
}

/// `clusterctx check`: prints the plan on stdout. Fails (with the code `contextualize` would
/// exit with) when the files or settings have a problem that would make `contextualize` fail.
pub fn check_command(args: &AgentArgs) -> Result<(), AgentError> {
    let Some((_, plan)) = args.plan()? else {
        println!("nothing to do: no context file with a cvm_cluster_pin");
        return Ok(());
    };
    let store = args.store();
    let state = store.load(plan.config.pin.expose(), plan.sealing.fingerprint());
    print!("{}", check::report(&plan, Some((&store.path(), &state))));
    match super::node::existing_node_name(store.dir(), &plan.config.pin) {
        Some(name) => println!("node name: {name}"),
        None => println!("node name: not made yet (the first contextualize makes its id)"),
    }
    Ok(())
}
