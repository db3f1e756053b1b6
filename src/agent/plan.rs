//! What a run will do, decided once from the settings and the context files: `clusterctx
//! check` prints a [`Plan`], `contextualize` executes it, and neither decides anything of its
//! own about roles, keys or files.
//!
//! The second version's features are additions here: registration of every node before it
//! waits (a step of [`Plan`] that every role takes first), waiting for N members and member
//! placeholders (fields of [`Steps`], taken from the files' placeholders as `fetch` is),
//! several service URLs (in [`AgentConfig`]). Sealing is one already: [`Plan::sealing`], which
//! every published value goes through on its way out and every value read on its way in.

use std::{collections::BTreeSet, path::PathBuf};

use super::{
    config::{keys, AddressChoice, AgentConfig, Overrides, RoleRequest},
    error::AgentError,
    files::ContextSet,
    sealing::Sealing,
    state::Role,
};
use crate::protocol::KEY_MASTER_IP;

/// Everything a run will do, before any network traffic or write.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The settings: PIN, service, requested role, schedule, client options.
    pub config: AgentConfig,
    /// What the node does for the role it asked for.
    pub role: RolePlan,
    /// Whether published values are sealed and values read must open (a cluster secret).
    pub sealing: Sealing,
    /// Each context file with the keys its placeholders reference.
    pub files: Vec<PlannedFile>,
    /// Where the ucernvm block was found (`file:line`), if it was.
    pub block: Option<String>,
    /// Non-fatal remarks, for `check` and the boot journal alike.
    pub warnings: Vec<Warning>,
    /// Whether a file references a member placeholder: the node then waits, after its own
    /// steps, for `cvm_cluster_size` members. Every node registers either way.
    pub wait_members: bool,
}

/// The placeholders filled from the member list, not from keys.
pub mod member_keys {
    pub use crate::protocol::{
        KEY_CLUSTER_MEMBERS as MEMBERS, KEY_CLUSTER_SIZE as SIZE, KEY_CLUSTER_WORKERS as WORKERS,
    };
    pub const ALL: [&str; 3] = [MEMBERS, WORKERS, SIZE];
}

/// The steps of each role the node may end up with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RolePlan {
    /// Publish, then go on as master.
    Master { publish: Publish, then: Steps },
    /// Go on as worker.
    Worker { then: Steps },
    /// Try to publish: the first node to create the key is master, every other a worker.
    Elect {
        publish: Publish,
        if_elected: Steps,
        if_not: Steps,
    },
}

/// A key the node creates (create-only) with its own address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub key: &'static str,
    pub address: AddressChoice,
}

/// What a node does once its role is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    /// Keys waited for and fetched before `master_ready`: `master_ip` in a sealed cluster, so
    /// that a forged one is refused at once, not after a window spent waiting for the
    /// `master_ready` that the real master, stopped by the forgery, never publishes.
    pub first: BTreeSet<String>,
    /// Wait for the master's `master_ready` before fetching the rest.
    pub wait_ready: bool,
    /// Keys waited for and fetched, in this order; those the node published or fetched
    /// `first` are not among them.
    pub fetch: BTreeSet<String>,
}

/// One context file and what the run does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    pub path: PathBuf,
    /// `text`, `gzip(text)`, `MIME multipart(...)`.
    pub structure: String,
    /// The keys its placeholders reference: it is rewritten when there is at least one.
    pub keys: BTreeSet<String>,
}

/// A remark about the input that does not stop the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub about: Concern,
    pub message: String,
}

/// What a warning is about (`check` shows the two kinds in different places).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concern {
    /// The context files and their block: unknown `cvm_cluster_*` keys, duplicate keys, lines
    /// without `=`, parts that could not be decoded.
    Files,
    /// The settings as resolved (a service URL without a scheme).
    Settings,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Plan {
    /// Reads the block from `contexts`, settles the settings with `overrides` and decides.
    /// `Ok(None)`: no context file, or no PIN in it: nothing to do, which is not an error.
    pub fn build(contexts: &ContextSet, overrides: &Overrides) -> Result<Option<Plan>, AgentError> {
        if contexts.is_empty() {
            tracing::info!("no context file found: no cluster contextualization");
            return Ok(None);
        }
        let block = contexts
            .block()
            .map_err(|err| AgentError::ContextFile(err.into()))?;
        let block = block.map(|(_, block)| block);
        let Some(config) = AgentConfig::resolve(block.as_ref(), overrides)? else {
            tracing::info!("no cvm_cluster_pin in the context: no cluster contextualization");
            return Ok(None);
        };

        let mut warnings = Vec::new();
        let files_warning = |message: String| Warning {
            about: Concern::Files,
            message,
        };
        if let Some(block) = &block {
            for entry in block.entries() {
                if entry.key.starts_with("cvm_cluster_") && !keys::ALL.contains(&entry.key.as_str())
                {
                    warnings.push(files_warning(format!(
                        "{}: unknown key {} (a typo?)",
                        entry.location, entry.key
                    )));
                }
            }
            warnings.extend(block.warnings().iter().cloned().map(files_warning));
        }
        warnings.extend(contexts.warnings().into_iter().map(files_warning));
        warnings.extend(config.warnings.iter().map(|message| Warning {
            about: Concern::Settings,
            message: message.clone(),
        }));

        let files: Vec<PlannedFile> = contexts
            .describe()
            .into_iter()
            .map(|(path, structure, keys)| PlannedFile {
                path: path.to_path_buf(),
                structure,
                keys,
            })
            .collect();
        let mut needed: BTreeSet<String> = files.iter().flat_map(|f| f.keys.clone()).collect();
        let wait_members = member_keys::ALL.iter().any(|key| needed.contains(*key));
        needed.retain(|key| !member_keys::ALL.contains(&key.as_str()));
        if wait_members && config.cluster_size.is_none() {
            return Err(AgentError::Config(
                format!(
                    "a context file uses a member placeholder (###CLUSTER_MEMBERS_PLACEHOLDER###, \
                     ###CLUSTER_WORKERS_PLACEHOLDER### or ###CLUSTER_SIZE_PLACEHOLDER###) but \
                     no {} (or --cluster-size) says how many members to wait for",
                    keys::SIZE
                )
                .into(),
            ));
        }
        let role = RolePlan::decide(&config, &needed);
        let sealing = Sealing::new(config.secret.as_ref(), &config.pin);
        Ok(Some(Plan {
            config,
            role,
            sealing,
            files,
            block: block.map(|b| b.location().to_string()),
            warnings,
            wait_members,
        }))
    }

    /// Every key a placeholder references.
    pub fn placeholders(&self) -> BTreeSet<String> {
        self.files.iter().flat_map(|f| f.keys.clone()).collect()
    }

    /// The files that reference a member placeholder (they wait for the members).
    pub fn member_files(&self) -> impl Iterator<Item = &PlannedFile> {
        self.files
            .iter()
            .filter(|f| member_keys::ALL.iter().any(|key| f.keys.contains(*key)))
    }

    /// The files that will be rewritten.
    pub fn files_to_fill(&self) -> impl Iterator<Item = &PlannedFile> {
        self.files.iter().filter(|f| !f.keys.is_empty())
    }

    /// Sends every warning to the log (the boot journal under systemd).
    pub fn log_warnings(&self) {
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
    }
}

impl RolePlan {
    fn decide(config: &AgentConfig, needed: &BTreeSet<String>) -> Self {
        let publish = Publish {
            key: KEY_MASTER_IP,
            address: config.address.clone(),
        };
        let as_master = Steps {
            first: BTreeSet::new(),
            wait_ready: false,
            fetch: needed
                .iter()
                .filter(|key| *key != publish.key)
                .cloned()
                .collect(),
        };
        // The legacy agent always fetched master_ip; we record it for `check` and reboots.
        let mut worker_fetch = needed.clone();
        worker_fetch.insert(KEY_MASTER_IP.to_string());
        let mut first = BTreeSet::new();
        if config.secret.is_some() && config.wait_ready {
            worker_fetch.remove(KEY_MASTER_IP);
            first.insert(KEY_MASTER_IP.to_string());
        }
        let as_worker = Steps {
            first,
            wait_ready: config.wait_ready,
            fetch: worker_fetch,
        };
        match config.role {
            RoleRequest::Master => RolePlan::Master {
                publish,
                then: as_master,
            },
            RoleRequest::Worker => RolePlan::Worker { then: as_worker },
            RoleRequest::Auto => RolePlan::Elect {
                publish,
                if_elected: as_master,
                if_not: as_worker,
            },
        }
    }

    /// What is published, whatever the election's outcome.
    pub fn publish(&self) -> Option<&Publish> {
        match self {
            RolePlan::Master { publish, .. } | RolePlan::Elect { publish, .. } => Some(publish),
            RolePlan::Worker { .. } => None,
        }
    }

    /// The steps of each role this node may end up with.
    pub fn possible_steps(&self) -> Vec<(Role, &Steps)> {
        match self {
            RolePlan::Master { then, .. } => vec![(Role::Master, then)],
            RolePlan::Worker { then } => vec![(Role::Worker, then)],
            RolePlan::Elect {
                if_elected, if_not, ..
            } => vec![(Role::Master, if_elected), (Role::Worker, if_not)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Pin;

    fn plan(content: &str, overrides: Overrides) -> Plan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        std::fs::write(&path, content).unwrap();
        let contexts = ContextSet::load(&[path]).unwrap();
        Plan::build(&contexts, &overrides).unwrap().unwrap()
    }

    const BLOCK: &str = "[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\ncvm_cluster_mastr=yes\ncvm_cluster_tries=3\ncvm_cluster_tries=4\nnonsense\n[ucernvm-end]\nip=###MASTER_IP_PLACEHOLDER###\nx=###GREETING_PLACEHOLDER###\n";

    #[test]
    fn a_worker_waits_then_fetches_every_key_and_master_ip() {
        let plan = plan(BLOCK, Overrides::default());
        let RolePlan::Worker { then } = &plan.role else {
            panic!("{:?}", plan.role);
        };
        assert!(then.wait_ready);
        assert_eq!(
            then.fetch.iter().map(String::as_str).collect::<Vec<_>>(),
            ["greeting", "master_ip"]
        );
        assert!(plan.role.publish().is_none());
        assert_eq!(plan.files_to_fill().count(), 1);
    }

    #[test]
    fn a_master_publishes_and_does_not_fetch_what_it_published() {
        let overrides = Overrides {
            role: Some(RoleRequest::Master),
            ..Overrides::default()
        };
        let plan = plan(BLOCK, overrides);
        let RolePlan::Master { publish, then } = &plan.role else {
            panic!("{:?}", plan.role);
        };
        assert_eq!(publish.key, KEY_MASTER_IP);
        assert!(!then.wait_ready);
        assert_eq!(then.fetch.iter().collect::<Vec<_>>(), ["greeting"]);
    }

    #[test]
    fn an_election_plans_both_outcomes_and_no_wait_ready_is_honoured() {
        let overrides = Overrides {
            role: Some(RoleRequest::Auto),
            no_wait_ready: true,
            pin: Some(Pin::new("enico1qq0oey")),
            ..Overrides::default()
        };
        let plan = plan(BLOCK, overrides);
        let steps = plan.role.possible_steps();
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|(_, steps)| !steps.wait_ready));
        assert!(plan.role.publish().is_some());
    }

    #[test]
    fn the_block_warnings_are_in_the_plan() {
        let plan = plan(BLOCK, Overrides::default());
        let files: Vec<&str> = plan
            .warnings
            .iter()
            .filter(|w| w.about == Concern::Files)
            .map(|w| w.message.as_str())
            .collect();
        assert!(
            files
                .iter()
                .any(|w| w.contains("unknown key cvm_cluster_mastr")),
            "{files:?}"
        );
        assert!(
            files.len() >= 3,
            "unknown key, duplicate, no '=': {files:?}"
        );
    }

    #[test]
    fn a_sealed_worker_fetches_master_ip_before_it_waits_for_master_ready() {
        const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";
        let sealed = BLOCK.replace(
            "[ucernvm-end]",
            &format!("cvm_cluster_secret={SECRET}\n[ucernvm-end]"),
        );
        let sealed_plan = plan(&sealed, Overrides::default());
        assert!(sealed_plan.sealing.is_on());
        let RolePlan::Worker { then } = &sealed_plan.role else {
            panic!("{:?}", sealed_plan.role);
        };
        assert_eq!(then.first.iter().collect::<Vec<_>>(), ["master_ip"]);
        assert!(then.wait_ready);
        assert_eq!(then.fetch.iter().collect::<Vec<_>>(), ["greeting"]);
        assert!(!format!("{sealed_plan:?}").contains(SECRET));

        // Without waiting for master_ready there is nothing to be first before.
        let overrides = Overrides {
            no_wait_ready: true,
            ..Overrides::default()
        };
        let RolePlan::Worker { then } = plan(&sealed, overrides).role else {
            panic!("a worker");
        };
        assert!(then.first.is_empty());
        assert!(then.fetch.contains("master_ip"));
        assert!(!plan(BLOCK, Overrides::default()).sealing.is_on());
    }

    #[test]
    fn no_pin_is_no_plan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        std::fs::write(&path, "#cloud-config\n").unwrap();
        let contexts = ContextSet::load(&[path]).unwrap();
        assert!(Plan::build(&contexts, &Overrides::default())
            .unwrap()
            .is_none());
    }
}
