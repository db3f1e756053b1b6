//! The properties of the context module that hold for any input, shared by the proptests
//! (`tests/it/context_proptest.rs`) and the cargo-fuzz targets (`fuzz/fuzz_targets/`), which
//! include this file with `#[path]`. It uses only the public API and the standard library.
#![allow(dead_code)] // each fuzz target that includes it uses a different part

use std::collections::{BTreeMap, BTreeSet};

use clusterctx::context::ContextFile;

/// Exercises every entry point on `bytes` and returns the placeholders found: nothing may
/// panic, substitution without values changes nothing, and what a substitution produces reads
/// again.
pub fn exercise(bytes: &[u8]) -> BTreeSet<String> {
    let file = ContextFile::from_bytes("fuzz", bytes);
    let _ = file.block();
    let _ = file.warnings();
    let _ = file.structure();
    let keys = file.placeholders();
    assert_eq!(file.substitute(&BTreeMap::new()).unwrap(), None);
    let values: BTreeMap<String, String> = keys
        .iter()
        .map(|key| (key.clone(), "10.0.0.1".to_string()))
        .collect();
    if let Some(out) = file.substitute(&values).unwrap() {
        assert!(!keys.is_empty());
        let again = ContextFile::from_bytes("fuzz", out);
        let _ = again.block();
        let _ = again.substitute(&values).unwrap();
    }
    keys
}

/// Whether `text` is read as one plain text, where [`reference_substitute`] applies: no `[`
/// (so no ucernvm block), no gzip magic at the start, no MIME header.
pub fn is_plain(text: &[u8]) -> bool {
    !text.contains(&b'[')
        && !text.starts_with(b"\x1f\x8b")
        && !text
            .to_ascii_lowercase()
            .windows(13)
            .any(|w| w == b"mime-version:")
}

/// The placeholder rule written differently from the library: try every start position in
/// turn, as a leftmost-first regex engine would, with an explicit name check. `value_of` gets
/// the key (NAME in lower case); `None` leaves that placeholder as it is.
pub fn reference_substitute<'v>(
    text: &[u8],
    value_of: impl Fn(&str) -> Option<&'v str>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    'scan: while i < text.len() {
        if text[i..].starts_with(b"###") {
            for name_len in (1..=100).rev() {
                let name_end = i + 3 + name_len;
                let Some(name) = text.get(i + 3..name_end) else {
                    continue;
                };
                if name
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                    && text[name_end..].starts_with(b"_PLACEHOLDER###")
                {
                    let key = String::from_utf8(name.to_vec()).unwrap().to_lowercase();
                    let end = name_end + b"_PLACEHOLDER###".len();
                    match value_of(&key) {
                        Some(value) => out.extend_from_slice(value.as_bytes()),
                        None => out.extend_from_slice(&text[i..end]),
                    }
                    i = end;
                    continue 'scan;
                }
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}
