//! Shared test scaffolding: nodes with their own context files and state, and the scripted
//! fault server. Every module of the integration test binary reaches it as `crate::support`.

pub mod context_oracle;
pub mod disk;
pub mod faulty;
#[cfg(feature = "server")]
pub mod legacy;
#[cfg(feature = "server")]
pub mod postgres;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod stores;
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
        self.store().load(PIN, None)
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
        service_url: vec![url.into()],
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
    master_ready::run(&plan, &StateStore::new(state_dir)).await
}

pub fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Every log line of a test, as the agent writes it: every level of our own code, debug of
/// the libraries under it. One subscriber for the whole test binary sends each line to the
/// capture of the thread it is logged on, so a test that runs its nodes and its in-process
/// service on a current-thread runtime (`#[tokio::test]`) sees all of their lines and none of
/// another test's. (A subscriber per test, `set_default`, loses lines when tests run in
/// parallel: tracing caches per call site whether anyone listens.)
#[cfg(feature = "server")]
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(feature = "server")]
thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Ends the capture of its thread when dropped; stays on that thread.
#[cfg(feature = "server")]
pub struct Capturing(std::marker::PhantomData<*const ()>);

#[cfg(feature = "server")]
impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURE.with(|capture| capture.borrow_mut().take());
    }
}

#[cfg(feature = "server")]
impl Logs {
    /// Starts capturing this thread's lines, until the guard is dropped.
    pub fn capture() -> (Logs, Capturing) {
        static INSTALL: std::sync::Once = std::sync::Once::new();
        INSTALL.call_once(|| {
            use tracing_subscriber::{filter::dynamic_filter_fn, prelude::*};
            // Dynamic: asked again for every line (a plain `filter_fn` is cached per call site,
            // and whether this thread captures changes from test to test).
            let wanted = dynamic_filter_fn(|meta, _| {
                CAPTURE.with(|capture| capture.borrow().is_some())
                    && (meta.target().starts_with("clusterctx")
                        || *meta.level() <= tracing::Level::DEBUG)
            });
            let layer = tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(|| ToCapture)
                .with_filter(wanted);
            tracing_subscriber::registry()
                .with(layer)
                .try_init()
                .expect("no other global subscriber in the test binary");
        });
        let logs = Logs::default();
        CAPTURE.with(|capture| *capture.borrow_mut() = Some(logs.clone()));
        (logs, Capturing(std::marker::PhantomData))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Asserts that no captured line contains any of `needles`.
    pub fn assert_none_contains(&self, needles: &[&str]) {
        let text = self.text();
        for line in text.lines() {
            for needle in needles {
                assert!(!line.contains(needle), "{needle:?} in the log: {line}");
            }
        }
    }
}

/// Writes a formatted line into the capture of the current thread.
#[cfg(feature = "server")]
struct ToCapture;

#[cfg(feature = "server")]
impl std::io::Write for ToCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|capture| {
            if let Some(logs) = &*capture.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
