//! In a plain text (no block, no MIME, no gzip), substitution must equal a naive reference
//! implementation of the placeholder rule, byte for byte.
#![no_main]

#[path = "../../tests/it/support/context_oracle.rs"]
mod oracle;

use std::collections::BTreeMap;

use clusterctx::context::ContextFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !oracle::is_plain(data) {
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
    // Every placeholder is replaced, whether or not `placeholders()` reported it.
    assert_eq!(
        out,
        oracle::reference_substitute(data, |_| Some("10.0.0.1"))
    );
});
