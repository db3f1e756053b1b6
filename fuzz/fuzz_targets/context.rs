//! Any bytes as a context file: decoding, the block reader, placeholders and substitution
//! must never panic, substitution without values must change nothing, and whatever a
//! substitution produces must read again.
#![no_main]

#[path = "../../tests/it/support/context_oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    oracle::exercise(data);
});
