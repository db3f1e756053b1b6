//! In a plain text (no block, no MIME, no gzip), substitution must equal a naive reference
//! implementation of the placeholder rule, byte for byte.
#![no_main]

use std::collections::BTreeMap;

use clusterctx::context::ContextFile;
use libfuzzer_sys::fuzz_target;

/// Leftmost-first, as a regex engine would: at each position, the longest run of name
/// characters after `###` that is followed by `_PLACEHOLDER###`.
fn reference(text: &[u8], value: &str) -> Vec<u8> {
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
                    out.extend_from_slice(value.as_bytes());
                    i = name_end + b"_PLACEHOLDER###".len();
                    continue 'scan;
                }
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.contains(&b'[')
        || data.starts_with(b"\x1f\x8b")
        || data
            .to_ascii_lowercase()
            .windows(13)
            .any(|w| w == b"mime-version:")
    {
        return;
    }
    let file = ContextFile::from_bytes("fuzz", data);
    let values: BTreeMap<String, String> = file
        .placeholders()
        .into_iter()
        .map(|key| (key, "10.0.0.1".to_string()))
        .collect();
    let out = file
        .substitute(&values)
        .unwrap()
        .unwrap_or_else(|| data.to_vec());
    assert_eq!(out, reference(data, "10.0.0.1"));
});
