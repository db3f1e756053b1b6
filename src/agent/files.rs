//! The context files of one run: which are read, which are rewritten.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::context::{check_value, ContextFile, UcernvmBlock};

/// Where CernVM keeps the user-data, in the order the block is looked for: the bootloader's
/// copy, its persistent copy (amiconfig), then cloud-init's raw copy.
pub const CERNVM_USER_DATA: [&str; 3] = [
    "/user-data",
    "/mnt/.rw/context/user-data",
    "/var/lib/cloud/instance/user-data.txt",
];

/// cloud-init's directory. By the time our unit runs (after `cloud-init.service`), cloud-init
/// has split the user-data into files, and its later stages read those, not the raw
/// user-data (proven in the boot simulation, contrib/bootsim/README.md):
/// - `instance/cloud-config.txt`: read by `cloud-config` (incl. `runcmd`, which writes
///   `scripts/runcmd` from it) and `cloud-final` (deferred `write_files`);
/// - `instance/scripts/<name>`: shell parts, run by `cloud-final`; cloud-init names each after
///   its MIME `filename` (`part-NNN` only when there is none);
/// - `scripts/per-{boot,instance,once}/<name>`: `text/x-shellscript-per-*` parts.
///
/// `user-data.txt` and `user-data.txt.i` are not read again in the same boot; we fill them
/// for other consumers and for people reading them. On later boots cloud-init rewrites all
/// of these from its cache, placeholders included, so the agent fills them at every boot.
pub const CLOUD_INIT_DIR: &str = "/var/lib/cloud";

/// The files cloud-init derives from the user-data, where they exist.
pub fn cloud_init_derived_files(cloud_dir: &Path) -> Vec<PathBuf> {
    let instance = cloud_dir.join("instance");
    let mut files = vec![
        instance.join("user-data.txt.i"),
        instance.join("cloud-config.txt"),
    ];
    files.extend(regular_files_in(&instance.join("scripts")));
    for frequency in ["per-boot", "per-instance", "per-once"] {
        files.extend(regular_files_in(&cloud_dir.join("scripts").join(frequency)));
    }
    files.retain(|p| p.is_file());
    files
}

/// The regular files of `dir`, sorted, leaving out dot files (our own temporary files among
/// them) and symlinks (cloud-init writes none there; a link could point anywhere).
fn regular_files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    files
}

/// The default file list: the CernVM user-data copies and cloud-init's derived files, those
/// that exist.
pub fn default_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = CERNVM_USER_DATA
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    files.extend(cloud_init_derived_files(Path::new(CLOUD_INIT_DIR)));
    files
}

/// The loaded context files. The ucernvm block comes from the first file that has one.
#[derive(Debug)]
pub struct ContextSet {
    files: Vec<(PathBuf, ContextFile)>,
}

impl ContextSet {
    /// Loads `explicit` (every file must exist), or the defaults when it is empty. A broken
    /// file is an error naming the file (and line); nothing has been touched yet. So is a
    /// symlink, a FIFO or other non-regular file, and a file in a directory another user can
    /// write ([`ContextFile::load`]); each file's directory stays open for the rewrite.
    pub fn load(explicit: &[PathBuf]) -> anyhow::Result<Self> {
        let paths = if explicit.is_empty() {
            default_files()
        } else {
            explicit.to_vec()
        };
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let file = ContextFile::load(&path)
                .with_context(|| format!("cannot use context file {}", path.display()))?;
            files.push((path, file));
        }
        Ok(ContextSet { files })
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The ucernvm block and the file it came from.
    pub fn block(&self) -> anyhow::Result<Option<(&Path, UcernvmBlock)>> {
        for (path, file) in &self.files {
            if let Some(block) = file
                .block()
                .with_context(|| format!("cannot read the ucernvm block of {}", path.display()))?
            {
                return Ok(Some((path.as_path(), block)));
            }
        }
        Ok(None)
    }

    /// Per file: its structure (`text`, `gzip(text)`, `MIME multipart(...)`) and the keys its
    /// placeholders reference.
    pub fn describe(&self) -> Vec<(&Path, String, BTreeSet<String>)> {
        self.files
            .iter()
            .map(|(path, file)| (path.as_path(), file.structure(), file.placeholders()))
            .collect()
    }

    /// What was skipped while reading the files (undecodable parts, stray end markers), one
    /// `location: message` each.
    pub fn warnings(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|(_, file)| file.warnings())
            .collect()
    }

    /// Keys referenced by placeholders in any file.
    pub fn placeholders(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .flat_map(|(_, file)| file.placeholders())
            .collect()
    }

    /// Fills the placeholders of every file from `values`. Every value is checked first and
    /// every new content computed before the first file is written, so a bad value or a
    /// broken file changes nothing. Each file is rewritten in the directory it was read from
    /// and only if it is still the file read ([`ContextFile::rewrite`]). Returns the files rewritten, with the number of keys
    /// filled in each.
    pub fn substitute_all(
        &self,
        values: &BTreeMap<String, String>,
    ) -> anyhow::Result<BTreeMap<PathBuf, usize>> {
        for (key, value) in values {
            check_value(key, value)
                .with_context(|| format!("refusing to write the value of {key} into a file"))?;
        }
        let mut rewrites = Vec::new();
        for (path, file) in &self.files {
            let filled = file
                .placeholders()
                .iter()
                .filter(|k| values.contains_key(*k))
                .count();
            if let Some(bytes) = file
                .substitute(values)
                .with_context(|| format!("cannot fill placeholders in {}", path.display()))?
            {
                rewrites.push((path, file, bytes, filled));
            }
        }
        // A file swapped while we waited stops the run before any file is written.
        for (_, file, _, _) in &rewrites {
            file.check_unchanged()?;
        }
        let mut done = BTreeMap::new();
        for (path, file, bytes, filled) in rewrites {
            file.rewrite(&bytes)?;
            tracing::info!("filled {filled} placeholder key(s) in {}", path.display());
            done.insert(path.clone(), filled);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_files_follow_cloud_init_naming() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = dir.path();
        let write = |rel: &str| {
            let path = cloud.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "x").unwrap();
        };
        write("instance/cloud-config.txt");
        write("instance/user-data.txt.i");
        write("instance/scripts/part-001");
        write("instance/scripts/join-cluster.sh");
        write("instance/scripts/.join-cluster.sh.1234.tmp");
        write("scripts/per-boot/every-boot.sh");
        write("scripts/per-once/once.sh");
        std::os::unix::fs::symlink("/etc/passwd", cloud.join("instance/scripts/link")).unwrap();
        let found: Vec<String> = cloud_init_derived_files(cloud)
            .iter()
            .map(|p| p.strip_prefix(cloud).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "instance/user-data.txt.i",
                "instance/cloud-config.txt",
                "instance/scripts/join-cluster.sh",
                "instance/scripts/part-001",
                "scripts/per-boot/every-boot.sh",
                "scripts/per-once/once.sh",
            ]
        );
    }

    #[test]
    fn a_file_swapped_while_waiting_stops_the_run_before_any_file_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let content = "ip=###MASTER_IP_PLACEHOLDER###\n";
        let (first, second) = (dir.path().join("first"), dir.path().join("second"));
        std::fs::write(&first, content).unwrap();
        std::fs::write(&second, content).unwrap();
        let set = ContextSet::load(&[first.clone(), second.clone()]).unwrap();
        std::fs::remove_file(&second).unwrap();
        std::fs::write(&second, content).unwrap();

        let values = BTreeMap::from([("master_ip".to_string(), "10.0.0.5".to_string())]);
        let err = set.substitute_all(&values).unwrap_err();
        assert!(
            matches!(
                err.downcast_ref::<crate::context::ContextError>(),
                Some(crate::context::ContextError::Swapped { path, .. }) if *path == second
            ),
            "{err:#}"
        );
        assert_eq!(std::fs::read_to_string(&first).unwrap(), content);
    }
}
