//! The context files of one run: which are read, which are rewritten.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::Context;

use crate::context::{check_value, write_atomic, ContextFile, UcernvmBlock};

/// Where CernVM keeps the user-data, in the order the block is looked for: the bootloader's
/// copy, its persistent copy (amiconfig), then cloud-init's raw copy.
pub const CERNVM_USER_DATA: [&str; 3] = [
    "/user-data",
    "/mnt/.rw/context/user-data",
    "/var/lib/cloud/instance/user-data.txt",
];

/// cloud-init's instance directory. By the time our unit runs (after `cloud-init.service`),
/// cloud-init has split the user-data into files here, and its later stages read those, not
/// the raw user-data: `cloud-config.txt` (config and final modules, incl. `runcmd`),
/// `scripts/part-*` (shell parts, run by `cloud-final`), `user-data.txt.i` (the processed
/// MIME, kept for reference). A substitution only reaches cloud-init if made there too.
pub const CLOUD_INIT_INSTANCE: &str = "/var/lib/cloud/instance";

/// The files cloud-init derives from the user-data, where they exist.
pub fn cloud_init_derived_files(instance: &Path) -> Vec<PathBuf> {
    let mut files = vec![
        instance.join("user-data.txt.i"),
        instance.join("cloud-config.txt"),
    ];
    if let Ok(entries) = std::fs::read_dir(instance.join("scripts")) {
        let mut parts: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("part-"))
            })
            .collect();
        parts.sort();
        files.extend(parts);
    }
    files.retain(|p| p.is_file());
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
    files.extend(cloud_init_derived_files(Path::new(CLOUD_INIT_INSTANCE)));
    files
}

/// The loaded context files. The ucernvm block comes from the first file that has one.
#[derive(Debug)]
pub struct ContextSet {
    files: Vec<(PathBuf, ContextFile)>,
}

impl ContextSet {
    /// Loads `explicit` (every file must exist), or the defaults when it is empty. A broken
    /// file is an error naming the file (and line); nothing has been touched yet.
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

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
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
    /// broken file changes nothing. Returns the files rewritten, with the number of keys
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
                rewrites.push((path, bytes, filled));
            }
        }
        let mut done = BTreeMap::new();
        for (path, bytes, filled) in rewrites {
            write_atomic(path, &bytes)
                .with_context(|| format!("failed to rewrite {}", path.display()))?;
            tracing::info!("filled {filled} placeholder key(s) in {}", path.display());
            done.insert(path.clone(), filled);
        }
        Ok(done)
    }
}
