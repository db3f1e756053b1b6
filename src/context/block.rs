//! The `[ucernvm-begin]` ... `[ucernvm-end]` block: a small, total line reader.
//!
//! The reader takes the bytes of one decoded text (a plain file, or one MIME part after its
//! transfer encoding is undone) and never fails outright: it returns what it found, the byte
//! ranges the blocks cover (placeholder scanning skips them), the first problem, and notes for
//! lines it ignored. [`super::ContextFile::block`] turns that into an answer for the whole file.
//!
//! # Rules
//!
//! The legacy bootloader (`parse_user_data.cc` in cernvm-micro) compared whole lines with the
//! markers, split `key=value` at the first `=`, upper-cased keys and let the shell `source` the
//! result, so a later duplicate won. We keep those meanings and are more forgiving where the
//! legacy reader silently did nothing useful:
//!
//! - A marker line is `[ucernvm-begin]` or `[ucernvm-end]` once surrounding ASCII whitespace is
//!   trimmed (so CRLF files and indented blocks work; the legacy reader missed those). Markers
//!   are case-sensitive, as they always were. A UTF-8 byte order mark before the first line is
//!   ignored.
//! - Inside a block, blank lines and lines whose first non-blank character is `#` or `;` are
//!   comments. Other lines are split at the first `=`; lines without `=` are ignored (noted).
//!   The key is trimmed and lower-cased (lookups are case-insensitive); the value is trimmed and
//!   one pair of matching surrounding quotes (`"..."` or `'...'`) is removed, as the shell did.
//! - A key given twice: the last one wins (noted), like the legacy `source`.
//! - A line inside a block that is not UTF-8 is an error with its line number: we cannot know
//!   what the key or value was meant to be.
//! - `[ucernvm-begin]` without a following `[ucernvm-end]` is an error naming the begin line; a
//!   second `[ucernvm-begin]` inside an open block is an error naming both lines. An
//!   `[ucernvm-end]` outside a block is ignored (noted).
//! - Several blocks in one text are all returned; the caller decides (see
//!   [`super::ContextFile::block`]).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use super::Location;

const BEGIN: &[u8] = b"[ucernvm-begin]";
const END: &[u8] = b"[ucernvm-end]";
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The ucernvm block of a context file: the `key=value` lines between the markers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UcernvmBlock {
    /// Where the `[ucernvm-begin]` line is, for messages.
    begin: Location,
    /// Every entry in file order, duplicates included, so messages can point at any line.
    entries: Vec<Entry>,
    /// Lines that were ignored or overridden, as `location: what` messages for `check`.
    warnings: Vec<String>,
}

/// One `key=value` line of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Lower-cased, trimmed.
    pub key: String,
    /// Trimmed, one pair of surrounding quotes removed; exactly what the caller should use.
    pub value: String,
    /// The line the entry is on, for messages like `worker.txt:14: cvm_cluster_master=maybe`.
    pub location: Location,
}

impl UcernvmBlock {
    /// The value of `key` (case-insensitive); the last line wins when a key is repeated.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entry(key).map(|entry| entry.value.as_str())
    }

    /// The entry that [`get`](Self::get) answers from, with its location.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .rev()
            .find(|entry| entry.key.eq_ignore_ascii_case(key))
    }

    /// All entries in file order, including ones overridden by a later duplicate.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Where the block starts (its `[ucernvm-begin]` line).
    pub fn location(&self) -> &Location {
        &self.begin
    }

    /// Lines of the block that were ignored or overridden, one message each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The effective key-value map (last duplicate wins), used to compare repeated blocks.
    pub(crate) fn effective(&self) -> BTreeMap<&str, &str> {
        self.entries
            .iter()
            .map(|entry| (entry.key.as_str(), entry.value.as_str()))
            .collect()
    }
}

/// The legacy truth values: `yes`, `on`, `true`, `1` are true; `no`, `off`, `false`, `0` are
/// false (ASCII case-insensitive, surrounding whitespace ignored); anything else is `None`.
pub fn legacy_bool(value: &str) -> Option<bool> {
    let value = value.trim();
    const TRUE: [&str; 4] = ["yes", "on", "true", "1"];
    const FALSE: [&str; 4] = ["no", "off", "false", "0"];
    if TRUE.iter().any(|t| value.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| value.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// What is wrong with a block, with 1-based line numbers within the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    Unclosed { line: usize },
    NestedBegin { line: usize, open: usize },
    NotUtf8 { line: usize },
}

/// A block as found in one text, before locations are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawBlock {
    pub begin_line: usize,
    /// `(line, key, value)` in file order.
    pub entries: Vec<(usize, String, String)>,
    /// `(line, message)`.
    pub notes: Vec<(usize, String)>,
}

/// Everything the reader learned from one text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    pub blocks: Vec<RawBlock>,
    /// Byte ranges from the start of each begin line to the end of its end line (or of the text
    /// when the block is not closed). Placeholders in there are not substituted.
    pub regions: Vec<Range<usize>>,
    /// The first problem; scanning goes on after it so `regions` stay complete.
    pub problem: Option<Problem>,
    /// `(line, message)` for markers outside blocks.
    pub notes: Vec<(usize, String)>,
}

/// Reads every block in `text`.
pub(crate) fn scan(text: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut open: Option<OpenBlock> = None;
    let mut offset = 0;
    for (index, raw_line) in text.split_inclusive(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let start = offset;
        offset += raw_line.len();
        let mut line = raw_line;
        if index == 0 {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        let line = line.trim_ascii();
        if line == BEGIN {
            match &open {
                Some(block) => {
                    scan.problem.get_or_insert(Problem::NestedBegin {
                        line: line_no,
                        open: block.raw.begin_line,
                    });
                }
                None => {
                    open = Some(OpenBlock {
                        region_start: start,
                        raw: RawBlock {
                            begin_line: line_no,
                            entries: Vec::new(),
                            notes: Vec::new(),
                        },
                        last_line_of_key: HashMap::new(),
                    })
                }
            }
            continue;
        }
        if line == END {
            match open.take() {
                Some(block) => {
                    scan.regions.push(block.region_start..offset);
                    scan.blocks.push(block.raw);
                }
                None => scan.notes.push((
                    line_no,
                    "[ucernvm-end] outside a block is ignored".to_string(),
                )),
            }
            continue;
        }
        let Some(block) = &mut open else {
            continue;
        };
        let Ok(line) = std::str::from_utf8(line) else {
            scan.problem
                .get_or_insert(Problem::NotUtf8 { line: line_no });
            continue;
        };
        block.read_entry(line_no, line);
    }
    if let Some(block) = open {
        scan.regions.push(block.region_start..text.len());
        scan.problem.get_or_insert(Problem::Unclosed {
            line: block.raw.begin_line,
        });
    }
    scan
}

/// A block whose end line has not been seen yet.
struct OpenBlock {
    /// Where its begin line starts in the text.
    region_start: usize,
    raw: RawBlock,
    /// To note a repeated key without searching all earlier entries.
    last_line_of_key: HashMap<String, usize>,
}

impl OpenBlock {
    /// Reads one trimmed line inside the block.
    fn read_entry(&mut self, line_no: usize, line: &str) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            return;
        }
        let notes = &mut self.raw.notes;
        let Some((key, value)) = line.split_once('=') else {
            notes.push((line_no, "line without '=' is ignored".to_string()));
            return;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            notes.push((line_no, "line without a key is ignored".to_string()));
            return;
        }
        if let Some(previous) = self.last_line_of_key.insert(key.clone(), line_no) {
            notes.push((
                line_no,
                format!("{key} repeats line {previous}; the last one wins"),
            ));
        }
        self.raw
            .entries
            .push((line_no, key, unquote(value.trim()).to_string()));
    }
}

/// Removes one pair of matching surrounding quotes, as the shell that sourced the legacy
/// parser's output did.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

/// Attaches locations to a raw block. `place(line)` maps a line of the scanned text to a
/// location in the file.
pub(crate) fn located(raw: &RawBlock, place: &dyn Fn(usize) -> Location) -> UcernvmBlock {
    UcernvmBlock {
        begin: place(raw.begin_line),
        entries: raw
            .entries
            .iter()
            .map(|(line, key, value)| Entry {
                key: key.clone(),
                value: value.clone(),
                location: place(*line),
            })
            .collect(),
        warnings: raw
            .notes
            .iter()
            .map(|(line, note)| format!("{}: {note}", place(*line)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(scan: &Scan) -> Vec<Vec<(usize, &str, &str)>> {
        scan.blocks
            .iter()
            .map(|b| {
                b.entries
                    .iter()
                    .map(|(l, k, v)| (*l, k.as_str(), v.as_str()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn reads_a_block() {
        let text = b"[amiconfig]\nplugins=cernvm\n[ucernvm-begin]\ncvm_cluster_pin=abc\nCVM_Cluster_Master=yes\n[ucernvm-end]\nx=1\n";
        let scan = scan(text);
        assert_eq!(scan.problem, None);
        assert_eq!(
            entries(&scan),
            [[
                (4, "cvm_cluster_pin", "abc"),
                (5, "cvm_cluster_master", "yes")
            ]]
        );
        assert_eq!(scan.regions, std::slice::from_ref(&(27..100)));
        assert_eq!(
            &text[scan.regions[0].clone()],
            b"[ucernvm-begin]\ncvm_cluster_pin=abc\nCVM_Cluster_Master=yes\n[ucernvm-end]\n"
        );
    }

    #[test]
    fn splits_at_the_first_equals_sign_and_trims() {
        let scan = scan(b"[ucernvm-begin]\n  cvm_service_url = http://h/?a=b  \n[ucernvm-end]\n");
        assert_eq!(entries(&scan), [[(2, "cvm_service_url", "http://h/?a=b")]]);
    }

    #[test]
    fn crlf_bom_and_indentation() {
        let scan = scan(b"\xEF\xBB\xBF[ucernvm-begin]\r\n\tk=v\r\n  [ucernvm-end]  \r\n");
        assert_eq!(scan.problem, None);
        assert_eq!(entries(&scan), [[(2, "k", "v")]]);
    }

    #[test]
    fn block_at_end_without_trailing_newline() {
        let text = b"a\n[ucernvm-begin]\nk=v\n[ucernvm-end]";
        let scan = scan(text);
        assert_eq!(scan.problem, None);
        assert_eq!(entries(&scan), [[(3, "k", "v")]]);
        assert_eq!(scan.regions, std::slice::from_ref(&(2..text.len())));
    }

    #[test]
    fn a_bom_is_only_skipped_on_the_first_line() {
        let scan = scan(b"x\n\xEF\xBB\xBF[ucernvm-begin]\nk=v\n[ucernvm-end]\n");
        assert!(scan.blocks.is_empty());
    }

    #[test]
    fn markers_are_case_sensitive_whole_lines() {
        for text in [
            &b"[UCERNVM-BEGIN]\nk=v\n[ucernvm-end]\n"[..],
            b"# [ucernvm-begin]\nk=v\n",
            b"[ucernvm-begin] x\nk=v\n",
        ] {
            let scan = scan(text);
            assert!(
                scan.blocks.is_empty(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn comments_blank_lines_and_lines_without_equals() {
        let scan =
            scan(b"[ucernvm-begin]\n\n# c=1\n; d=2\nnoequals\n=novalue\nk=\n[ucernvm-end]\n");
        assert_eq!(scan.problem, None);
        assert_eq!(entries(&scan), [[(7, "k", "")]]);
        assert_eq!(
            scan.blocks[0].notes,
            [
                (5, "line without '=' is ignored".to_string()),
                (6, "line without a key is ignored".to_string())
            ]
        );
    }

    #[test]
    fn quotes_are_removed_once_and_only_in_pairs() {
        let scan =
            scan(b"[ucernvm-begin]\na=\"x y\"\nb='z'\nc=\"\"q\"\"\nd=\"open\ne='\n[ucernvm-end]\n");
        assert_eq!(
            entries(&scan),
            [[
                (2, "a", "x y"),
                (3, "b", "z"),
                (4, "c", "\"q\""),
                (5, "d", "\"open"),
                (6, "e", "'")
            ]]
        );
    }

    #[test]
    fn duplicates_are_kept_and_noted() {
        let scan = scan(b"[ucernvm-begin]\nk=1\nK=2\n[ucernvm-end]\n");
        assert_eq!(entries(&scan), [[(2, "k", "1"), (3, "k", "2")]]);
        assert_eq!(
            scan.blocks[0].notes,
            [(3, "k repeats line 2; the last one wins".to_string())]
        );
    }

    #[test]
    fn begin_without_end() {
        let scan = scan(b"a\n[ucernvm-begin]\nk=v\n");
        assert_eq!(scan.problem, Some(Problem::Unclosed { line: 2 }));
        assert_eq!(scan.regions, std::slice::from_ref(&(2..22)));
        assert!(scan.blocks.is_empty());
    }

    #[test]
    fn nested_begin() {
        let scan = scan(b"[ucernvm-begin]\n[ucernvm-begin]\nk=v\n[ucernvm-end]\n");
        assert_eq!(
            scan.problem,
            Some(Problem::NestedBegin { line: 2, open: 1 })
        );
        assert_eq!(entries(&scan), [[(3, "k", "v")]]);
    }

    #[test]
    fn non_utf8_inside_the_block_is_an_error_outside_it_is_not() {
        let scan = scan(b"\xFF\xFE\n[ucernvm-begin]\nk=v\nx=\xC3\x28\n[ucernvm-end]\n\xFF\n");
        assert_eq!(scan.problem, Some(Problem::NotUtf8 { line: 4 }));
        assert_eq!(entries(&scan), [[(3, "k", "v")]]);
    }

    #[test]
    fn stray_end_is_noted() {
        let scan = scan(b"[ucernvm-end]\n[ucernvm-begin]\nk=v\n[ucernvm-end]\n");
        assert_eq!(scan.problem, None);
        assert_eq!(scan.notes.len(), 1);
        assert_eq!(scan.notes[0].0, 1);
        assert_eq!(entries(&scan), [[(3, "k", "v")]]);
    }

    #[test]
    fn several_blocks_are_all_returned() {
        let scan =
            scan(b"[ucernvm-begin]\na=1\n[ucernvm-end]\n[ucernvm-begin]\nb=2\n[ucernvm-end]\n");
        assert_eq!(entries(&scan), [[(2, "a", "1")], [(5, "b", "2")]]);
        assert_eq!(scan.regions.len(), 2);
    }

    #[test]
    fn legacy_booleans() {
        for t in ["yes", "YES", "On", "true", "True", "1", " yes "] {
            assert_eq!(legacy_bool(t), Some(true), "{t}");
        }
        for f in ["no", "NO", "off", "False", "0"] {
            assert_eq!(legacy_bool(f), Some(false), "{f}");
        }
        for other in ["", "auto", "2", "y", "yes please"] {
            assert_eq!(legacy_bool(other), None, "{other}");
        }
    }
}
