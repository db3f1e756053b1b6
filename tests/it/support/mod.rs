//! Shared test scaffolding: nodes with their own context files and state, and the scripted
//! fault server. Every module of the integration test binary reaches it as `crate::support`.

pub mod context_oracle;
pub mod faulty;
#[cfg(feature = "server")]
pub mod legacy;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod tls;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

pub use clusterctx::agent::config::Overrides;
#[cfg(feature = "server")]
use clusterctx::agent::master_ready;
use clusterctx::{
    agent::{
        config::RoleRequest,
        contextualize::{self, Finished},
        files::ContextSet,
        state::{State, StateStore},
        AgentError, Plan,
    },
    secret::Pin,
};

pub const PIN: &str = "enico1qq0oey";

/// A worker context as the CernVM documentation shows it (the block's PIN and URL are
/// overridden per test).
pub const WORKER_CONTEXT: &str = "[example_section]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\n[amiconfig]\nplugins=cernvm\n\n[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\ncvmfs_branch=cernvm-sl7.cern.ch\n[ucernvm-end]\n";
pub const MASTER_CONTEXT: &str = "[amiconfig]\nplugins=cernvm\n\n[ucernvm-begin]\ncvm_cluster_master=yes\ncvm_cluster_pin=enico1qq0oey\n[ucernvm-end]\n";

/// One simulated VM: a directory holding its context files and its state directory.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub files: Vec<PathBuf>,
}

impl Node {
    /// A node with one context file holding `content`.
    pub fn new(content: &str) -> Node {
        Node::with_files(&[("user-data", content)])
    }

    pub fn with_files(files: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let files = files
            .iter()
            .map(|(name, content)| {
                let path = dir.path().join(name);
                std::fs::write(&path, content).unwrap();
                path
            })
            .collect();
        Node { dir, files }
    }

    pub fn read(&self, index: usize) -> String {
        std::fs::read_to_string(&self.files[index]).unwrap()
    }

    pub fn store(&self) -> StateStore {
        StateStore::new(self.state_dir())
    }

    pub fn state(&self) -> State {
        self.store().load(PIN)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Overrides for a fast schedule against `url`.
pub fn fast(url: &str, role: RoleRequest) -> Overrides {
    Overrides {
        pin: Some(Pin::new(PIN)),
        role: Some(role),
        service_url: Some(url.into()),
        tries: Some(20),
        interval: Some(Duration::from_millis(100)),
        request_timeout: Some(Duration::from_secs(2)),
        ..Overrides::default()
    }
}

/// The files and the plan made from them, as the commands make them.
fn load(files: &[PathBuf], overrides: &Overrides) -> Result<(ContextSet, Plan), AgentError> {
    let contexts = ContextSet::load(files).map_err(|err| AgentError::ContextFile(err.into()))?;
    let plan = Plan::build(&contexts, overrides)?.expect("a PIN is configured");
    Ok((contexts, plan))
}

/// Runs `clusterctx contextualize` for `node` in-process.
pub async fn contextualize(node: &Node, overrides: &Overrides) -> Result<Finished, AgentError> {
    contextualize_files(node.files.clone(), node.state_dir(), overrides.clone()).await
}

/// The same on owned data, for `tokio::spawn`.
pub async fn contextualize_files(
    files: Vec<PathBuf>,
    state_dir: PathBuf,
    overrides: Overrides,
) -> Result<Finished, AgentError> {
    let (contexts, plan) = load(&files, &overrides)?;
    contextualize::run(&plan, &contexts, &StateStore::new(state_dir)).await
}

/// Runs `clusterctx master-ready` for `node` in-process.
#[cfg(feature = "server")]
pub async fn master_ready(
    node: &Node,
    overrides: &Overrides,
) -> Result<master_ready::Announced, AgentError> {
    master_ready_files(node.files.clone(), node.state_dir(), overrides.clone()).await
}

/// The same on owned data, for `tokio::spawn`.
#[cfg(feature = "server")]
pub async fn master_ready_files(
    files: Vec<PathBuf>,
    state_dir: PathBuf,
    overrides: Overrides,
) -> Result<master_ready::Announced, AgentError> {
    let (_, plan) = load(&files, &overrides)?;
    master_ready::run(&plan.config, &StateStore::new(state_dir)).await
}

pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}
