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
mod tests;
