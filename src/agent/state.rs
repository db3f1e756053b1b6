//! What a contextualization run did, kept across reboots.
//!
//! The legacy agent wrote a marker file even on failure, so a VM whose first boot met a
//! network hiccup never joined its cluster. We record the outcome instead: a later boot redoes
//! only what did not succeed, and a boot after success is a quick no-op without the network.
//!
//! The file holds the PIN in full (it must be compared) and is therefore created 0600 in a
//! root-owned directory. It never holds a cluster secret: only its fingerprint, so that a boot
//! with another secret (or none, or one where there was none) starts afresh.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::context::write_atomic;

/// Default state directory (systemd's `StateDirectory=clusterctx`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/clusterctx";
const STATE_FILE: &str = "contextualize.json";
/// Bumped when the layout changes incompatibly; an unknown version is ignored, not trusted.
const FORMAT_VERSION: u32 = 1;

/// The role this node ended up with (after an `auto` election, the elected one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Worker => "worker",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Outcome {
    /// Every step done and every file rewritten.
    Success,
    /// Stopped with this error; the next boot tries again.
    Failed { error: String },
}

/// `Debug` is written out below: the PIN is stored whole, but never printed whole.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// The PIN this state belongs to: a new PIN in the context starts from scratch.
    pub pin: String,
    /// [`crate::secret::ClusterSecret::fingerprint`] of the secret the values were sealed and
    /// opened with, `None` for an unsealed cluster: another secret starts from scratch too,
    /// since what the service holds must then be opened (or sealed) anew. Never the secret.
    /// Absent from files written before sealing existed, which were all unsealed.
    #[serde(default)]
    pub secret_fingerprint: Option<String>,
    pub role: Option<Role>,
    /// The address this node published as `master_ip`, when it is the master.
    pub published_address: Option<String>,
    /// Values fetched or published, by key: enough to fill placeholders again offline. Opened
    /// values in a sealed cluster: they are what the agent wrote into the context files, which
    /// hold them anyway, so keeping them here exposes nothing new (and reusing them needs no
    /// key).
    pub values: BTreeMap<String, String>,
    /// Files rewritten in the last run, with the number of placeholders replaced.
    pub files: BTreeMap<PathBuf, usize>,
    pub outcome: Option<Outcome>,
    /// Whether `master_ready` has been published (master only).
    pub master_ready_published: bool,
    /// RFC 3339, for people reading the file.
    pub updated_at: String,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("format", &self.format)
            .field("pin", &crate::secret::redact(&self.pin))
            .field("secret_fingerprint", &self.secret_fingerprint)
            .field("role", &self.role)
            .field("published_address", &self.published_address)
            .field("values", &self.values)
            .field("files", &self.files)
            .field("outcome", &self.outcome)
            .field("master_ready_published", &self.master_ready_published)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

impl State {
    /// A fresh state for `pin`, sealed with the secret of `secret_fingerprint` (or unsealed).
    pub fn new(pin: &str, secret_fingerprint: Option<&str>) -> Self {
        State {
            format: FORMAT_VERSION,
            pin: pin.to_string(),
            secret_fingerprint: secret_fingerprint.map(str::to_string),
            role: None,
            published_address: None,
            values: BTreeMap::new(),
            files: BTreeMap::new(),
            outcome: None,
            master_ready_published: false,
            updated_at: String::new(),
        }
    }

    pub fn succeeded(&self) -> bool {
        self.outcome == Some(Outcome::Success)
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The recorded state for `pin` and the secret of `secret_fingerprint` (`None`: an
    /// unsealed cluster), or a fresh one. A missing, unreadable or foreign-format file is not
    /// an error: it only means we know nothing and redo everything (logged).
    pub fn load(&self, pin: &str, secret_fingerprint: Option<&str>) -> State {
        let fresh = || State::new(pin, secret_fingerprint);
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return fresh(),
            Err(err) => {
                tracing::warn!("cannot read {}: {err}; starting afresh", path.display());
                return fresh();
            }
        };
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) if state.format != FORMAT_VERSION => {
                tracing::warn!("{} has an unknown format; starting afresh", path.display());
                fresh()
            }
            Ok(state) if state.pin != pin => {
                tracing::info!("recorded state is for another PIN; starting afresh");
                fresh()
            }
            Ok(state) if state.secret_fingerprint.as_deref() != secret_fingerprint => {
                let change = match (&state.secret_fingerprint, secret_fingerprint) {
                    (None, _) => "sealing is on now, it was off",
                    (_, None) => "sealing is off now, it was on",
                    _ => "the cluster secret has changed",
                };
                tracing::info!("recorded state: {change}; starting afresh");
                fresh()
            }
            Ok(state) => state,
            Err(err) => {
                tracing::warn!("{} is damaged ({err}); starting afresh", path.display());
                fresh()
            }
        }
    }

    /// Writes the state atomically (see [`write_atomic`]: a new file is created 0600, which
    /// it must be since it holds the PIN).
    pub fn save(&self, state: &mut State) -> anyhow::Result<()> {
        state.updated_at = now_rfc3339();
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("failed to create state directory {}", self.dir.display()))?;
        let bytes = serde_json::to_vec_pretty(state).context("failed to encode state")?;
        write_atomic(&self.path(), &bytes)
            .with_context(|| format!("failed to write state file {}", self.path().display()))
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("sub"));
        let mut state = State::new("enico1qq0oey", None);
        state.role = Some(Role::Master);
        state.values.insert("master_ip".into(), "10.0.0.1".into());
        state.outcome = Some(Outcome::Success);
        store.save(&mut state).unwrap();
        assert_eq!(store.load("enico1qq0oey", None), state);
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn another_pin_or_damage_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut state = State::new("aaaaaaaaaaaa", None);
        state.outcome = Some(Outcome::Success);
        store.save(&mut state).unwrap();
        assert_eq!(
            store.load("bbbbbbbbbbbb", None),
            State::new("bbbbbbbbbbbb", None)
        );
        std::fs::write(store.path(), b"{not json").unwrap();
        assert_eq!(
            store.load("aaaaaaaaaaaa", None),
            State::new("aaaaaaaaaaaa", None)
        );
    }

    #[test]
    fn another_secret_starts_afresh_and_the_secret_is_never_stored() {
        use crate::secret::ClusterSecret;
        const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";
        let fingerprint = ClusterSecret::parse(SECRET).unwrap().fingerprint();
        let other = ClusterSecret::generate().unwrap().fingerprint();
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let mut state = State::new("aaaaaaaaaaaa", Some(&fingerprint));
        state.values.insert("master_ip".into(), "10.0.0.1".into());
        state.outcome = Some(Outcome::Success);
        store.save(&mut state).unwrap();
        assert_eq!(store.load("aaaaaaaaaaaa", Some(&fingerprint)), state);
        let fresh = |fp: Option<&str>| State::new("aaaaaaaaaaaa", fp);
        assert_eq!(
            store.load("aaaaaaaaaaaa", Some(&other)),
            fresh(Some(&other))
        );
        assert_eq!(store.load("aaaaaaaaaaaa", None), fresh(None));
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains(&fingerprint), "{text}");
        assert!(!text.contains(SECRET), "{text}");

        // A file from before sealing existed: unsealed, and still valid for an unsealed run.
        let old = r#"{"format": 1, "pin": "aaaaaaaaaaaa", "role": "worker",
            "published_address": null, "values": {}, "files": {},
            "outcome": {"status": "success"}, "master_ready_published": false,
            "updated_at": ""}"#;
        std::fs::write(store.path(), old).unwrap();
        assert!(store.load("aaaaaaaaaaaa", None).succeeded());
        assert_eq!(
            store.load("aaaaaaaaaaaa", Some(&fingerprint)),
            fresh(Some(&fingerprint))
        );
    }
}
