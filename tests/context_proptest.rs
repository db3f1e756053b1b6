//! Property tests of the context module through its public API: whatever the bytes, reading
//! never panics; substitution without values is the identity; in a plain file, substitution
//! equals an independent reference implementation of the placeholder rule; `check_value`
//! refuses every control character.

use std::collections::{BTreeMap, BTreeSet};

use clusterctx::context::{check_value, ContextFile, ValueError};
use proptest::prelude::*;

/// Exercises every entry point; returns the placeholders found.
fn exercise(bytes: &[u8]) -> BTreeSet<String> {
    let file = ContextFile::from_bytes("fuzz", bytes.to_vec());
    let _ = file.block();
    let _ = file.warnings();
    let _ = file.structure();
    let keys = file.placeholders();
    assert_eq!(file.substitute(&BTreeMap::new()).unwrap(), None);
    let values: BTreeMap<String, String> = keys
        .iter()
        .map(|k| (k.clone(), "10.0.0.1".to_string()))
        .collect();
    if let Some(out) = file.substitute(&values).unwrap() {
        assert!(!keys.is_empty());
        let again = ContextFile::from_bytes("fuzz", out);
        let _ = again.block();
        let _ = again.substitute(&values).unwrap();
    }
    keys
}

/// Pieces of the formats the decoder knows, so random documents reach deep paths.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let fixed: Vec<&'static [u8]> = vec![
        b"MIME-Version: 1.0\n",
        b"Content-Type: multipart/mixed; boundary=b\n",
        b"Content-Type: multipart/alternative; boundary=\"c\"\n",
        b"Content-Transfer-Encoding: base64\n",
        b"Content-Transfer-Encoding: quoted-printable\n",
        b"Content-Transfer-Encoding: 7bit\n",
        b"--b\n",
        b"--b--\n",
        b"--c\r\n",
        b"--c--",
        b"\n",
        b"\r\n",
        b" \t",
        b"=",
        b"=0A",
        b"=\n",
        b"###",
        b"_PLACEHOLDER###",
        b"MASTER_IP",
        b"[ucernvm-begin]\n",
        b"[ucernvm-end]\n",
        b"cvm_cluster_pin=abc\n",
        b"IyMjWF9QTEFDRUhPTERFUiMjIwo=",
        b"H4sIAAAAAAACA1NWVvZ1DA5xDYr3DIgP8HF0dvXw93FxDVJWVuYCADhfJTwcAAAA",
        b"\x1f\x8b",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
        b"\xEF\xBB\xBF",
        b"\xFF",
    ];
    prop_oneof![
        3 => proptest::sample::select(fixed).prop_map(<[u8]>::to_vec),
        1 => proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

fn document() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(token(), 0..40).prop_map(|tokens| tokens.concat())
}

/// The placeholder rule written differently from the library: try every start position in
/// turn, as a leftmost-first regex engine would, with an explicit name check.
fn reference_substitute(text: &[u8], values: &BTreeMap<String, String>) -> Vec<u8> {
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
                    match values.get(&key) {
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn format_like_documents_never_panic(bytes in document()) {
        exercise(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn plain_substitution_matches_the_reference(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just(b"###".to_vec()),
                Just(b"#".to_vec()),
                Just(b"_PLACEHOLDER".to_vec()),
                Just(b"_PLACEHOLDER###".to_vec()),
                "[A-Za-z0-9_-]{1,6}".prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..4)
                    .prop_map(|b| b.into_iter().filter(|&x| x != b'[' && x != 0x1f).collect()),
            ],
            0..30,
        ),
        value in "[a-z0-9.:]{1,8}",
    ) {
        // No `[` (no block) and no gzip magic: the file is one plain text.
        let text = pieces.concat();
        prop_assume!(!text.to_ascii_lowercase().windows(13).any(|w| w == b"mime-version:"));
        let file = ContextFile::from_bytes("p", text.clone());
        let values: BTreeMap<String, String> = file
            .placeholders()
            .into_iter()
            .map(|k| (k, value.clone()))
            .collect();
        let expected = reference_substitute(&text, &values);
        let out = file.substitute(&values).unwrap().unwrap_or_else(|| text.clone());
        prop_assert_eq!(out, expected);
    }

    #[test]
    fn check_value_refuses_every_control_character(
        prefix in "[a-z0-9.]{0,8}",
        control in prop_oneof![0u32..0x20, 0x7fu32..0xa0, Just(0x2028u32), Just(0x2029u32)],
        suffix in "[a-z0-9.]{0,8}",
        key in prop_oneof![Just("master_ip"), Just("db_host")],
    ) {
        let c = char::from_u32(control).unwrap();
        let value = format!("{prefix}{c}{suffix}");
        let refused = matches!(check_value(key, &value), Err(ValueError::Control { .. }));
        prop_assert!(refused, "{:?} was not refused as a control character", value);
    }
}
