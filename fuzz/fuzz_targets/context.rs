//! Any bytes as a context file: decoding, the block reader, placeholders and substitution
//! must never panic, substitution without values must change nothing, and whatever a
//! substitution produces must read again.
#![no_main]

use std::collections::BTreeMap;

use clusterctx::context::ContextFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = ContextFile::from_bytes("fuzz", data);
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
});
