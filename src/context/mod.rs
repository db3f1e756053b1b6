//! The user-data side: the ucernvm block, placeholders, value checks, atomic rewrites.
//!
//! A [`ContextFile`] is one user-data file as the VM received it: plain text (amiconfig INI,
//! cloud-config, a shell script), gzip-compressed, or MIME multipart with 7bit, 8bit, base64
//! or quoted-printable parts, nested or not, as cloud-init accepts them. It keeps the raw
//! bytes and a map of where the texts in them are, and answers three questions:
//!
//! - [`ContextFile::block`]: the `[ucernvm-begin]` ... `[ucernvm-end]` block, wherever it is.
//! - [`ContextFile::placeholders`]: which keys `###<NAME>_PLACEHOLDER###` references.
//! - [`ContextFile::substitute`]: the file's new bytes with placeholders replaced, every other
//!   byte as it was.
//!
//! Before a value goes into a file it passes [`check_value`]; the new bytes go to disk with
//! [`ContextFile::rewrite`], in the directory the file was read from and only if it is still
//! the file read. Nothing here does network I/O or logs: the agent does both.
//!
//! ```
//! use std::collections::BTreeMap;
//! use clusterctx::context::{check_value, ContextFile};
//!
//! let file = ContextFile::from_bytes(
//!     "worker.txt",
//!     &b"[example]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\
//!        [ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n[ucernvm-end]\n"[..],
//! );
//! let block = file.block()?.expect("a ucernvm block");
//! assert_eq!(block.get("CVM_CLUSTER_PIN"), Some("enico1qq0oey"));
//! assert_eq!(file.placeholders().into_iter().collect::<Vec<_>>(), ["master_ip"]);
//!
//! let values = BTreeMap::from([("master_ip".to_string(), "10.0.0.5".to_string())]);
//! check_value("master_ip", "10.0.0.5")?;
//! let new = file.substitute(&values)?.expect("a change");
//! assert!(new.starts_with(b"[example]\nmy_master_ip=10.0.0.5\n"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - `userdata`: formats. Decodes the layers (gzip, MIME, transfer encodings) into texts and
//!   re-encodes a changed text into the same layers, copying everything else; one small
//!   module per format (`mime`, `multipart`, `gzip`, `base64`, `qp`) and one for the tree walks.
//! - `block`: the ucernvm block reader for one text, with its rules.
//! - `placeholder`: the placeholder rule for one text.
//! - `value`: [`check_value`].
//! - `held`: a loaded file's directory, held open from the read to the rewrite, and the
//!   checks that keep another local user from redirecting the rewrite (symlinks, swaps,
//!   directories others can write, FIFOs).
//! - `atomic`: the rewrite sequence in an open directory, and [`write_atomic`] by path.
//!
//! # Decisions
//!
//! - **Where the block may be**: in any text of the file (the plain file, any MIME part after
//!   its transfer encoding is undone, anything gzip-compressed), but whole within one text.
//!   The reader's rules are in the `block` module: markers are whole trimmed lines, keys are
//!   case-insensitive, the last duplicate wins, one pair of quotes around a value goes, a
//!   non-UTF-8 line inside a block is an error.
//! - **Several blocks**: the legacy bootloader used the first one, the legacy cloud-init-phase
//!   script grepped all of them. Blocks that say the same thing (the same effective keys and
//!   values, e.g. one copy per MIME part) are fine and the first is returned; blocks that
//!   differ are an error naming both, since the two legacy readers would disagree on them.
//! - **Placeholders in the block are not substituted** (nor reported): the block configures the
//!   agent itself, and a value from the service must not be able to change the PIN or the
//!   service URL a later boot uses. A block without its end line extends to the end of its
//!   text for this purpose. Placeholders in MIME headers, preambles and epilogues are not
//!   touched either: only bodies are text.
//! - **Values** must stay on their line and be inert where they land: `master_ip` an IP
//!   address, other values letters, digits and `._-:/@+=,%^` only (no blanks, quotes or shell
//!   and YAML syntax), since a placeholder may sit in a root shell script. See `value`.
//!   [`ContextFile::substitute`] checks again, so a caller that forgets [`check_value`] still
//!   cannot write a newline or `$(...)` into a file.

mod atomic;
mod block;
mod held;
mod placeholder;
mod userdata;
mod value;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

pub use atomic::write_atomic;
pub use block::{legacy_bool, Entry, UcernvmBlock};
pub use userdata::{MAX_DECODED_LEN, MAX_DEPTH};
pub use value::{check_value, ValueError};

/// Largest context file [`ContextFile::load`] reads. User-data is at most a few hundred KiB on
/// every cloud; this only keeps a wrong path (a disk image, `/dev/zero`) from eating memory.
pub const MAX_FILE_LEN: u64 = 64 << 20;

/// A place in a context file, for messages: `worker.txt:12`, or for a line inside an encoded
/// part `user-data[part 2, base64]:3`, where the line counts lines of the decoded text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as it was given.
    pub path: PathBuf,
    /// The decoding layers around the line (`gzip`, `part 2, base64`), when the line is not a
    /// line of the file itself.
    pub within: Option<String>,
    /// 1-based.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(within) = &self.within {
            write!(f, "[{within}]")?;
        }
        write!(f, ":{}", self.line)
    }
}

/// Why a context file cannot be used. Every variant names the file, and the line where one
/// applies.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("failed to read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is larger than {MAX_FILE_LEN} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{at}: [ucernvm-begin] without [ucernvm-end]")]
    UnclosedBlock { at: Location },
    #[error("{at}: [ucernvm-begin] inside the block opened at line {open_line}")]
    NestedBegin { at: Location, open_line: usize },
    #[error("{at}: line inside the ucernvm block is not valid UTF-8")]
    NotUtf8 { at: Location },
    #[error("{at}: a second ucernvm block that differs from the one at {first}")]
    ConflictingBlocks { at: Location, first: Location },
    #[error("{}: refusing the value of {key}", path.display())]
    Value {
        path: PathBuf,
        key: String,
        #[source]
        source: ValueError,
    },
    #[error("failed to recompress {}", path.display())]
    Recompress {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A FIFO, device, directory or symlink given as a context file: only regular files are
    /// read (a FIFO would block the agent) and links are never followed.
    #[error("{} is a {kind}, not a regular file; only regular files are read as context files and symbolic links are not followed", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    /// The file's directory lets another user swap the file before the agent rewrites it.
    #[error("refusing {}: its directory {} {why}, so another user could replace the file before it is rewritten", path.display(), dir.display())]
    UnsafeDirectory {
        path: PathBuf,
        dir: PathBuf,
        why: String,
    },
    /// The file or its directory changed between the read and the rewrite; nothing was
    /// written.
    #[error("refusing to rewrite {}: {why} since it was read; the file was left as it is", path.display())]
    Swapped { path: PathBuf, why: String },
    #[error("failed to rewrite {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ContextError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Read { path, .. }
            | Self::TooLarge { path }
            | Self::Value { path, .. }
            | Self::Recompress { path, .. }
            | Self::NotRegular { path, .. }
            | Self::UnsafeDirectory { path, .. }
            | Self::Swapped { path, .. }
            | Self::Write { path, .. } => path,
            Self::UnclosedBlock { at }
            | Self::NestedBegin { at, .. }
            | Self::NotUtf8 { at }
            | Self::ConflictingBlocks { at, .. } => &at.path,
        }
    }

    /// The 1-based line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::UnclosedBlock { at }
            | Self::NestedBegin { at, .. }
            | Self::NotUtf8 { at }
            | Self::ConflictingBlocks { at, .. } => Some(at.line),
            _ => None,
        }
    }
}

/// One user-data file: its raw bytes and where the texts in them are.
pub struct ContextFile {
    /// For messages; also where the agent writes the new bytes back.
    path: PathBuf,
    /// Exactly what was read: everything outside placeholders is copied from here.
    raw: Vec<u8>,
    /// How `raw` decodes into texts.
    root: userdata::Node,
    /// What the decoder could not read (left alone), for `check` and the log.
    notes: Vec<userdata::Note>,
    /// One scan per text of `root`, in the order [`userdata::texts`] gives them: every query
    /// and the substitution use these instead of scanning again.
    scanned: Vec<Scanned>,
    /// The directory held open since [`load`](Self::load), for [`rewrite`](Self::rewrite);
    /// `None` for [`from_bytes`](Self::from_bytes).
    held: Option<held::Held>,
}

impl fmt::Debug for ContextFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextFile")
            .field("path", &self.path)
            .field("len", &self.raw.len())
            .field("structure", &self.structure())
            .finish()
    }
}

/// What the one scan of a text found.
struct Scanned {
    /// The block reader's view: blocks, their regions, notes, a problem.
    scan: block::Scan,
    /// The placeholders outside the block regions.
    found: Vec<placeholder::Found>,
    /// The text's length, to check that the substitution visits the texts in scan order.
    len: usize,
}

impl Scanned {
    fn of(text: &[u8]) -> Self {
        let scan = block::scan(text);
        let found = placeholder::find(text, &scan.regions);
        Scanned {
            scan,
            found,
            len: text.len(),
        }
    }
}

impl ContextFile {
    /// Reads and decodes the file at `path`. Only reading can fail: a file that does not decode
    /// is plain text, and a part that does not decode is left alone (see
    /// [`warnings`](Self::warnings)).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ContextError> {
        let path = path.as_ref();
        let read_error = |source| ContextError::Read {
            path: path.to_path_buf(),
            source,
        };
        let held = held::Held::open(path)?;
        let mut raw = Vec::new();
        held.file()
            .take(MAX_FILE_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(read_error)?;
        if raw.len() as u64 > MAX_FILE_LEN {
            return Err(ContextError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Ok(ContextFile {
            held: Some(held),
            ..Self::from_bytes(path, raw)
        })
    }

    /// Whether the file [`load`](Self::load) read is still in place, as
    /// [`rewrite`](Self::rewrite) requires: an error says what changed. Always `Ok` for a
    /// file made with [`from_bytes`](Self::from_bytes).
    pub fn check_unchanged(&self) -> Result<(), ContextError> {
        match &self.held {
            Some(held) => held.unchanged(&self.path).map(drop),
            None => Ok(()),
        }
    }

    /// Replaces the file [`load`](Self::load) read with `bytes`, atomically, keeping its owner
    /// and mode, in the directory it was read from, and only if it is still the same file
    /// there (see the `held` module): a file or directory swapped meanwhile is an error and
    /// nothing is written. A file made with [`from_bytes`](Self::from_bytes) was not read from
    /// disk and is written with [`write_atomic`].
    pub fn rewrite(&self, bytes: &[u8]) -> Result<(), ContextError> {
        match &self.held {
            Some(held) => held.rewrite(&self.path, bytes),
            None => write_atomic(&self.path, bytes).map_err(|source| ContextError::Write {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Decodes `bytes` as the content of a file at `path` (used in messages only). Never fails
    /// and never panics, whatever the bytes.
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: impl Into<Vec<u8>>) -> Self {
        let raw = bytes.into();
        let (root, notes) = userdata::decode(&raw);
        let scanned = userdata::texts(&root, &raw)
            .iter()
            .map(|text| Scanned::of(text.text))
            .collect();
        ContextFile {
            path: path.into(),
            raw,
            root,
            notes,
            scanned,
            held: None,
        }
    }

    /// The path given to [`load`](Self::load) or [`from_bytes`](Self::from_bytes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes as read.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// How the file was read, e.g. `text`, `gzip(text)` or
    /// `MIME multipart(1: text, 2: base64(text))`; parts that were left alone show as
    /// `left as is`.
    pub fn structure(&self) -> String {
        userdata::describe(&self.root)
    }

    /// Things in the file that were skipped: parts that could not be decoded, and
    /// `[ucernvm-end]` lines outside a block. One `location: message` line each. Notes about
    /// lines inside the block are in [`UcernvmBlock::warnings`].
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings: Vec<String> = self
            .notes
            .iter()
            .map(|(within, message)| match within {
                Some(within) => format!("{}[{within}]: {message}", self.path.display()),
                None => format!("{}: {message}", self.path.display()),
            })
            .collect();
        for (text, Scanned { scan, .. }) in self.texts_scanned() {
            for (line, note) in &scan.notes {
                warnings.push(format!("{}: {note}", self.location(&text, *line)));
            }
        }
        warnings
    }

    /// The ucernvm block, or `None` when the file has none (then there is nothing to do).
    ///
    /// Errors: a block without its end line, a begin line inside a block, a line in a block
    /// that is not UTF-8, or two blocks that differ (see the module doc); each names the file
    /// and line.
    pub fn block(&self) -> Result<Option<UcernvmBlock>, ContextError> {
        let mut first: Option<UcernvmBlock> = None;
        for (text, Scanned { scan, .. }) in self.texts_scanned() {
            let place = |line| self.location(&text, line);
            if let Some(problem) = scan.problem {
                return Err(match problem {
                    block::Problem::Unclosed { line } => {
                        ContextError::UnclosedBlock { at: place(line) }
                    }
                    block::Problem::NestedBegin { line, open } => ContextError::NestedBegin {
                        at: place(line),
                        open_line: place(open).line,
                    },
                    block::Problem::NotUtf8 { line } => ContextError::NotUtf8 { at: place(line) },
                });
            }
            for raw in &scan.blocks {
                let found = block::located(raw, &place);
                match &first {
                    None => first = Some(found),
                    Some(first) if first.effective() == found.effective() => {}
                    Some(first) => {
                        return Err(ContextError::ConflictingBlocks {
                            at: found.location().clone(),
                            first: first.location().clone(),
                        })
                    }
                }
            }
        }
        Ok(first)
    }

    /// The keys the file's placeholders reference, lower case (`master_ip` for
    /// `###MASTER_IP_PLACEHOLDER###`). Placeholders inside the ucernvm block do not count. The
    /// rule, with its odd cases, is in the `placeholder` module.
    pub fn placeholders(&self) -> BTreeSet<String> {
        self.scanned
            .iter()
            .flat_map(|scanned| &scanned.found)
            .map(|found| found.key.clone())
            .collect()
    }

    /// The file's new content with every placeholder whose key is in `values` replaced by its
    /// value, or `None` when that changes nothing. Keys are matched as
    /// [`placeholders`](Self::placeholders) reports them (lower case); placeholders without a
    /// value stay as they are.
    ///
    /// Every value used is checked with [`check_value`] first; a refused one is an error and
    /// nothing is produced. Bytes outside the replaced placeholders are kept, except where an
    /// encoding forces a change: a gzip layer is recompressed and a base64 part re-encoded
    /// (see the `userdata` module).
    pub fn substitute(
        &self,
        values: &BTreeMap<String, String>,
    ) -> Result<Option<Vec<u8>>, ContextError> {
        for key in self.placeholders() {
            if let Some(value) = values.get(&key) {
                check_value(&key, value).map_err(|source| ContextError::Value {
                    path: self.path.clone(),
                    key: key.clone(),
                    source,
                })?;
            }
        }
        // The substitution visits the texts in the order they were scanned.
        let mut scanned = self.scanned.iter();
        let mut replace = |text: &[u8]| {
            let Some(scanned) = scanned.next() else {
                return Vec::new();
            };
            debug_assert_eq!(scanned.len, text.len(), "texts visited out of order");
            scanned
                .found
                .iter()
                .filter_map(|found| {
                    let value = values.get(&found.key)?;
                    Some((found.range.clone(), value.as_bytes().to_vec()))
                })
                .collect()
        };
        userdata::substitute(&self.root, &self.raw, &mut replace).map_err(|source| {
            ContextError::Recompress {
                path: self.path.clone(),
                source,
            }
        })
    }

    fn texts_scanned(&self) -> impl Iterator<Item = (userdata::TextRef<'_>, &Scanned)> {
        userdata::texts(&self.root, &self.raw)
            .into_iter()
            .zip(&self.scanned)
    }

    fn location(&self, text: &userdata::TextRef<'_>, line: usize) -> Location {
        Location {
            path: self.path.clone(),
            within: text.within.clone(),
            line: text.line_offset + line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use std::io::Write;

    const USERS: &str = "users=atlas:atlas:$6$4ZctFHqh$9kZHLCHVUvWBs76SjWxN2QfN.vATu7/AWh1dsVV8PRqm6UdBCvcPG8YVE4epYV2dVMg.nJxG1yqbi/8q8VPhO1";

    /// The master example of the legacy documentation.
    fn seed_master() -> String {
        format!(
            "[amiconfig]\nplugins=cernvm\n\n[cernvm]\norganisations=ATLAS\nshell=/bin/bash\n\
config_url=http://cernvm.cern.ch/config\n{USERS}\nedition=Desktop\nscreenRes=1280x700\n\
keyboard=us\nstartXDM=on\n\n[ucernvm-begin]\ncvm_cluster_master=yes\n\
cvm_cluster_pin=enico1qq0oey\ncvmfs_branch=cernvm-sl7.cern.ch\ncvmfs_server=hepvm.cern.ch\n\
cvmfs_path=cvm4\n[ucernvm-end]\n"
        )
    }

    /// The slave example of the legacy documentation.
    fn seed_worker() -> String {
        format!(
            "[example_section]\nmy_master_ip=###MASTER_IP_PLACEHOLDER###\n\n[amiconfig]\n\
plugins=cernvm\n\n[cernvm]\norganisations=ATLAS\nshell=/bin/bash\n\
config_url=http://cernvm.cern.ch/config\n{USERS}\nedition=Desktop\nscreenRes=1280x700\n\
keyboard=us\nstartXDM=on\n\n[ucernvm-begin]\ncvm_cluster_pin=enico1qq0oey\n\
cvmfs_branch=cernvm-sl7.cern.ch\ncvmfs_server=hepvm.cern.ch\ncvmfs_path=cvm4\n[ucernvm-end]\n"
        )
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ip() -> BTreeMap<String, String> {
        values(&[("master_ip", "10.10.25.5")])
    }

    fn file(bytes: impl Into<Vec<u8>>) -> ContextFile {
        ContextFile::from_bytes("worker.txt", bytes)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn seed_master_example() {
        let f = file(seed_master());
        let block = f.block().unwrap().unwrap();
        assert_eq!(block.get("cvm_cluster_master"), Some("yes"));
        assert_eq!(block.get("CVM_CLUSTER_PIN"), Some("enico1qq0oey"));
        assert_eq!(block.get("cvm_service_url"), None);
        assert_eq!(
            block.entry("cvmfs_path").unwrap().location.to_string(),
            "worker.txt:19"
        );
        assert_eq!(block.location().to_string(), "worker.txt:14");
        assert_eq!(
            legacy_bool(block.get("cvm_cluster_master").unwrap()),
            Some(true)
        );
        assert!(f.placeholders().is_empty());
        assert_eq!(f.substitute(&ip()).unwrap(), None);
        assert!(f.warnings().is_empty());
        assert_eq!(f.structure(), "text");
    }

    #[test]
    fn seed_worker_example() {
        let f = file(seed_worker());
        let block = f.block().unwrap().unwrap();
        assert_eq!(block.get("cvm_cluster_master"), None);
        assert_eq!(block.get("cvm_cluster_pin"), Some("enico1qq0oey"));
        assert_eq!(f.placeholders(), BTreeSet::from(["master_ip".to_string()]));
        let out = f.substitute(&ip()).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            seed_worker().replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
        );
    }

    #[test]
    fn crlf_file() {
        let text = "a=###MASTER_IP_PLACEHOLDER###\r\n[ucernvm-begin]\r\ncvm_cluster_pin=abc\r\n[ucernvm-end]\r\n";
        let f = file(text);
        assert_eq!(
            f.block().unwrap().unwrap().get("cvm_cluster_pin"),
            Some("abc")
        );
        let out = f.substitute(&ip()).unwrap().unwrap();
        assert_eq!(
            out,
            text.replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
                .as_bytes()
        );
    }

    #[test]
    fn bom_before_the_block() {
        let f = file(&b"\xEF\xBB\xBF[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n###X_PLACEHOLDER###"[..]);
        assert_eq!(
            f.block().unwrap().unwrap().get("cvm_cluster_pin"),
            Some("abc")
        );
        let out = f.substitute(&values(&[("x", "v")])).unwrap().unwrap();
        assert_eq!(
            out,
            b"\xEF\xBB\xBF[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\nv"
        );
    }

    #[test]
    fn block_at_end_of_file_without_newline() {
        let f = file(
            "ip=###MASTER_IP_PLACEHOLDER###\n[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]",
        );
        assert_eq!(
            f.block().unwrap().unwrap().get("cvm_cluster_pin"),
            Some("abc")
        );
        assert_eq!(
            f.substitute(&ip()).unwrap().unwrap(),
            b"ip=10.10.25.5\n[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]"
        );
    }

    #[test]
    fn no_block_means_nothing_to_do() {
        let f = file("#cloud-config\nruncmd: []\n");
        assert_eq!(f.block().unwrap(), None);
    }

    #[test]
    fn error_messages_name_file_and_line() {
        let mut text = "x\n".repeat(11);
        text.push_str("[ucernvm-begin]\ncvm_cluster_pin=abc\n");
        let err = file(text).block().unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker.txt:12: [ucernvm-begin] without [ucernvm-end]"
        );
        assert_eq!(err.line(), Some(12));
        assert_eq!(err.path(), Path::new("worker.txt"));

        let err = file("[ucernvm-begin]\na=1\n[ucernvm-begin]\n[ucernvm-end]\n")
            .block()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker.txt:3: [ucernvm-begin] inside the block opened at line 1"
        );

        let err = file(&b"[ucernvm-begin]\na=\xFF\n[ucernvm-end]\n"[..])
            .block()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker.txt:2: line inside the ucernvm block is not valid UTF-8"
        );
    }

    #[test]
    fn repeated_blocks_must_agree() {
        let same = "[ucernvm-begin]\na=1\nb=2\n[ucernvm-end]\n[ucernvm-begin]\nb=2\nA=0\nA=1\n[ucernvm-end]\n";
        let block = file(same).block().unwrap().unwrap();
        assert_eq!(block.location().line, 1);
        let differ = "[ucernvm-begin]\na=1\n[ucernvm-end]\n\n[ucernvm-begin]\na=2\n[ucernvm-end]\n";
        let err = file(differ).block().unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker.txt:5: a second ucernvm block that differs from the one at worker.txt:1"
        );
    }

    #[test]
    fn placeholders_in_the_block_are_neither_reported_nor_replaced() {
        let text = "[ucernvm-begin]\ncvm_service_url=###URL_PLACEHOLDER###\n[ucernvm-end]\nx=###MASTER_IP_PLACEHOLDER###\n";
        let f = file(text);
        assert_eq!(f.placeholders(), BTreeSet::from(["master_ip".to_string()]));
        let both = values(&[("master_ip", "10.0.0.1"), ("url", "http:/evil")]);
        assert_eq!(
            String::from_utf8(f.substitute(&both).unwrap().unwrap()).unwrap(),
            text.replace("###MASTER_IP_PLACEHOLDER###", "10.0.0.1")
        );
        // An unclosed block reaches to the end of its text.
        let f = file("a=###A_PLACEHOLDER###\n[ucernvm-begin]\nb=###B_PLACEHOLDER###\n");
        assert_eq!(f.placeholders(), BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn non_utf8_bytes_outside_the_block_are_preserved() {
        let text = b"\xFF\xFE binary \x00\x80 ###MASTER_IP_PLACEHOLDER###\xC3\x28\n[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n\xF0\n";
        let f = file(&text[..]);
        assert_eq!(
            f.block().unwrap().unwrap().get("cvm_cluster_pin"),
            Some("abc")
        );
        let out = f.substitute(&ip()).unwrap().unwrap();
        let mut expected = b"\xFF\xFE binary \x00\x80 10.10.25.5\xC3\x28\n".to_vec();
        expected.extend_from_slice(b"[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n\xF0\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn values_are_checked_and_only_given_keys_replaced() {
        let f = file("a=###MASTER_IP_PLACEHOLDER### b=###DB_PLACEHOLDER###\n");
        let err = f
            .substitute(&values(&[("master_ip", "10.0.0.1\nrm -rf /")]))
            .unwrap_err();
        assert!(
            matches!(&err, ContextError::Value { key, source: ValueError::Control { .. }, .. } if key == "master_ip")
        );
        assert_eq!(
            err.to_string(),
            "worker.txt: refusing the value of master_ip"
        );
        assert!(matches!(
            f.substitute(&values(&[("db", "x$(reboot)")])),
            Err(ContextError::Value { .. })
        ));
        // A bad value for a key the file does not reference is not this file's business.
        assert_eq!(
            f.substitute(&values(&[("db", "db1"), ("other", "bad\n")]))
                .unwrap()
                .unwrap(),
            b"a=###MASTER_IP_PLACEHOLDER### b=db1\n"
        );
        assert_eq!(f.substitute(&values(&[("other", "x")])).unwrap(), None);
        assert_eq!(f.substitute(&BTreeMap::new()).unwrap(), None);
        // Keys are matched in lower case, as placeholders() reports them.
        assert_eq!(f.substitute(&values(&[("DB", "db1")])).unwrap(), None);
    }

    const MULTIPART_HEAD: &str =
        "Content-Type: multipart/mixed; boundary=\"===============2954587519432768337==\"\n\
MIME-Version: 1.0\n\n--===============2954587519432768337==\n\
Content-Type: text/ucernvm; charset=\"us-ascii\"\nMIME-Version: 1.0\n\
Content-Transfer-Encoding: 7bit\n\n";

    #[test]
    fn block_inside_a_mime_part_has_file_line_numbers() {
        let text = format!(
            "{MULTIPART_HEAD}[ucernvm-begin]\ncvm_cluster_pin=abc\n[ucernvm-end]\n\n\
--===============2954587519432768337==--\n"
        );
        let f = file(text);
        let block = f.block().unwrap().unwrap();
        assert_eq!(
            block.entry("cvm_cluster_pin").unwrap().location.to_string(),
            "worker.txt:10"
        );
        assert_eq!(f.structure(), "MIME multipart(1: text)");
    }

    #[test]
    fn block_and_placeholders_inside_a_base64_part() {
        let script =
            "#!/bin/sh\n[ucernvm-begin]\ncvm_cluster_pin=abc\n\necho ###MASTER_IP_PLACEHOLDER###\n";
        let encoded = STANDARD.encode(script);
        let text = format!(
            "{MULTIPART_HEAD}hello\n\n--===============2954587519432768337==\n\
Content-Type: text/x-shellscript\nContent-Transfer-Encoding: base64\n\n{encoded}\n\n\
--===============2954587519432768337==--\n"
        );
        let f = file(text.clone());
        let err = f.block().unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker.txt[part 2, base64]:2: [ucernvm-begin] without [ucernvm-end]"
        );
        let fixed = script.replace("\n\necho", "\n[ucernvm-end]\necho");
        let text = text.replace(&encoded, &STANDARD.encode(&fixed));
        let f = file(text.clone());
        let block = f.block().unwrap().unwrap();
        assert_eq!(block.location().to_string(), "worker.txt[part 2, base64]:2");
        assert_eq!(f.placeholders(), BTreeSet::from(["master_ip".to_string()]));
        let out = String::from_utf8(f.substitute(&ip()).unwrap().unwrap()).unwrap();
        let expected = text.replace(
            &STANDARD.encode(&fixed),
            &STANDARD.encode(fixed.replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")),
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn gzip_file() {
        let worker = seed_worker();
        let f = file(gzip(worker.as_bytes()));
        assert_eq!(f.structure(), "gzip(text)");
        assert_eq!(
            f.block().unwrap().unwrap().get("cvm_cluster_pin"),
            Some("enico1qq0oey")
        );
        assert_eq!(
            f.block().unwrap().unwrap().location().to_string(),
            "worker.txt[gzip]:17"
        );
        let out = f.substitute(&ip()).unwrap().unwrap();
        assert_eq!(
            gunzip(&out),
            worker
                .replace("###MASTER_IP_PLACEHOLDER###", "10.10.25.5")
                .as_bytes()
        );
        assert_eq!(
            ContextFile::from_bytes("w", out).substitute(&ip()).unwrap(),
            None
        );
    }

    #[test]
    fn warnings_name_the_place() {
        let text = format!(
            "{MULTIPART_HEAD}[ucernvm-end]\n--===============2954587519432768337==\n\
Content-Transfer-Encoding: base64\n\n!!!\n--===============2954587519432768337==--\n"
        );
        let warnings = file(text).warnings();
        assert_eq!(
            warnings,
            [
                "worker.txt[part 2, base64]: not valid base64 (Invalid symbol 33, offset 0.); left as is",
                "worker.txt:9: [ucernvm-end] outside a block is ignored",
            ]
        );
    }

    #[test]
    fn load_reads_and_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("user-data");
        std::fs::write(&path, seed_worker()).unwrap();
        let f = ContextFile::load(&path).unwrap();
        assert_eq!(f.path(), path);
        assert_eq!(f.raw(), seed_worker().as_bytes());
        let missing = dir.path().join("missing");
        let err = ContextFile::load(&missing).unwrap_err();
        assert!(matches!(err, ContextError::Read { .. }));
        assert_eq!(err.path(), missing);
        assert!(err.to_string().contains("missing"), "{err}");
    }

    /// Inputs that a quadratic step would take minutes on finish at once.
    #[test]
    fn large_inputs_stay_linear() {
        let started = std::time::Instant::now();
        let mut qp = b"MIME-Version: 1.0\nContent-Transfer-Encoding: quoted-printable\n\n".to_vec();
        qp.resize(qp.len() + (1 << 20), b' ');
        qp.extend_from_slice(b"###X_PLACEHOLDER###");
        let f = file(qp);
        assert_eq!(f.placeholders(), BTreeSet::from(["x".to_string()]));

        let mut block = b"[ucernvm-begin]\n".to_vec();
        for i in 0..60_000 {
            block.extend_from_slice(format!("key{}=v\n", i % 30_000).as_bytes());
        }
        block.extend_from_slice(b"[ucernvm-end]\n");
        let found = file(block).block().unwrap().unwrap();
        assert_eq!(found.entries().len(), 60_000);
        assert_eq!(found.warnings().len(), 30_000);

        let mut multipart =
            b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n".to_vec();
        for _ in 0..10_000 {
            multipart.extend_from_slice(b"--b\n\n###X_PLACEHOLDER###\n");
        }
        multipart.extend_from_slice(b"--b--\n");
        let f = file(multipart);
        let out = f.substitute(&values(&[("x", "v")])).unwrap().unwrap();
        assert_eq!(out.len(), f.raw().len() - 10_000 * 18);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Segment {
            Bytes(Vec<u8>),
            Placeholder(String),
        }

        /// How the generated text is wrapped into a file.
        #[derive(Debug, Clone)]
        enum Wrap {
            Plain,
            Gzip,
            SevenBit,
            Base64 { line_len: usize, crlf: bool },
            QuotedPrintable { line_len: usize },
        }

        fn segments() -> impl Strategy<Value = Vec<Segment>> {
            // No `#` or `[` in free text: neither placeholders nor block markers can form there.
            let bytes = proptest::collection::vec(any::<u8>(), 0..24).prop_map(|mut b| {
                for x in &mut b {
                    if *x == b'#' || *x == b'[' {
                        *x = b'x';
                    }
                }
                Segment::Bytes(b)
            });
            let placeholder = "[A-Za-z0-9_-]{1,12}".prop_map(Segment::Placeholder);
            proptest::collection::vec(prop_oneof![2 => bytes, 1 => placeholder], 0..12)
        }

        fn wraps() -> impl Strategy<Value = Wrap> {
            prop_oneof![
                Just(Wrap::Plain),
                Just(Wrap::Gzip),
                Just(Wrap::SevenBit),
                (1usize..80, any::<bool>())
                    .prop_map(|(line_len, crlf)| Wrap::Base64 { line_len, crlf }),
                (4usize..40).prop_map(|line_len| Wrap::QuotedPrintable { line_len }),
            ]
        }

        fn render(segments: &[Segment], values: &BTreeMap<String, String>) -> Vec<u8> {
            // The leading `x` keeps the text from starting with the gzip magic; the trailing
            // one keeps a final CR from joining the delimiter's line break.
            let mut out = b"x".to_vec();
            for segment in segments {
                match segment {
                    Segment::Bytes(b) => out.extend_from_slice(b),
                    Segment::Placeholder(name) => match values.get(&name.to_ascii_lowercase()) {
                        Some(value) => out.extend_from_slice(value.as_bytes()),
                        None => {
                            out.extend_from_slice(format!("###{name}_PLACEHOLDER###").as_bytes())
                        }
                    },
                }
            }
            out.push(b'x');
            out
        }

        const HEAD: &[u8] = b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"=_b0undary_=\"\n\n--=_b0undary_=\n\nfirst part ###KEEP_PLACEHOLDER\n--=_b0undary_=\n";
        const TAIL: &[u8] = b"\n--=_b0undary_=--\nepilogue ###MASTER_IP_PLACEHOLDER###\n";

        fn qp_encode(text: &[u8], line_len: usize) -> Vec<u8> {
            let mut out = Vec::new();
            let mut column = 0;
            for &b in text {
                let piece = if (b'!'..=b'~').contains(&b) && b != b'=' {
                    vec![b]
                } else {
                    format!("={b:02X}").into_bytes()
                };
                if column + piece.len() > line_len {
                    out.extend_from_slice(b"=\n");
                    column = 0;
                }
                column += piece.len();
                out.extend_from_slice(&piece);
            }
            out
        }

        fn wrap(text: &[u8], how: &Wrap) -> Vec<u8> {
            let part = |headers: &[u8], body: &[u8]| [HEAD, headers, b"\n", body, TAIL].concat();
            match how {
                Wrap::Plain => text.to_vec(),
                Wrap::Gzip => gzip(text),
                Wrap::SevenBit => part(b"Content-Transfer-Encoding: 8bit\n", text),
                Wrap::Base64 { line_len, crlf } => {
                    let encoded = STANDARD.encode(text);
                    let eol: &[u8] = if *crlf { b"\r\n" } else { b"\n" };
                    let body = encoded
                        .as_bytes()
                        .chunks(*line_len)
                        .collect::<Vec<_>>()
                        .join(eol);
                    part(b"Content-Transfer-Encoding: base64\n", &body)
                }
                Wrap::QuotedPrintable { line_len } => part(
                    b"Content-Transfer-Encoding: quoted-printable\n",
                    &qp_encode(text, *line_len),
                ),
            }
        }

        /// The single generated text inside a file, decoded.
        fn generated_text(f: &ContextFile, how: &Wrap) -> Vec<u8> {
            let texts = userdata::texts(&f.root, &f.raw);
            let index = match how {
                Wrap::Plain | Wrap::Gzip => 0,
                _ => 1,
            };
            texts[index].text.to_vec()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn substitution_replaces_exactly_the_placeholders(
                segments in segments(),
                how in wraps(),
                value_seed in "[A-Za-z0-9.:_-]{1,16}",
            ) {
                let names: BTreeSet<String> = segments
                    .iter()
                    .filter_map(|s| match s {
                        Segment::Placeholder(n) => Some(n.to_ascii_lowercase()),
                        Segment::Bytes(_) => None,
                    })
                    .collect();
                let all: BTreeMap<String, String> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), format!("{value_seed}{i}")))
                    .collect();
                let half: BTreeMap<String, String> =
                    all.iter().step_by(2).map(|(k, v)| (k.clone(), v.clone())).collect();

                let original = wrap(&render(&segments, &BTreeMap::new()), &how);
                let f = ContextFile::from_bytes("p", original.clone());
                // The epilogue's placeholder is structure, not text.
                prop_assert_eq!(f.placeholders(), names.clone());
                prop_assert_eq!(f.substitute(&BTreeMap::new()).unwrap(), None);

                let out = f.substitute(&all).unwrap();
                prop_assert_eq!(out.is_some(), !names.is_empty());
                let out = out.unwrap_or(original.clone());
                let g = ContextFile::from_bytes("p", out.clone());
                prop_assert_eq!(g.structure(), f.structure());
                prop_assert_eq!(generated_text(&g, &how), render(&segments, &all));
                // Nothing outside the generated part moved.
                if !matches!(how, Wrap::Plain | Wrap::Gzip) {
                    prop_assert!(out.starts_with(HEAD));
                    prop_assert!(out.ends_with(TAIL));
                }
                // Once every placeholder is filled, substituting again changes nothing.
                prop_assert_eq!(g.substitute(&all).unwrap(), None);

                // Partial values fill only their own placeholders.
                if let Some(partial) = f.substitute(&half).unwrap() {
                    let h = ContextFile::from_bytes("p", partial);
                    prop_assert_eq!(generated_text(&h, &how), render(&segments, &half));
                }
            }
        }
    }
}
