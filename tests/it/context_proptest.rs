//! Property tests of the context module through its public API: whatever the bytes, reading
//! never panics; substitution without values is the identity; in a plain file, substitution
//! equals an independent reference implementation of the placeholder rule; `check_value`
//! refuses every control character.

use crate::support::context_oracle as oracle;

use std::collections::BTreeMap;

use clusterctx::context::{check_value, ContextFile, ValueError};
use oracle::{exercise, is_plain, reference_substitute};
use proptest::prelude::*;

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
        // A lone `:` is refused (YAML reads `key: :` as a mapping); `:` after text is not.
        value in "[a-z0-9.][a-z0-9.:]{0,7}",
    ) {
        // The pieces hold no `[` (no block) and no gzip magic; a MIME header may still form.
        let text = pieces.concat();
        prop_assume!(is_plain(&text));
        let file = ContextFile::from_bytes("p", text.clone());
        let values: BTreeMap<String, String> = file
            .placeholders()
            .into_iter()
            .map(|k| (k, value.clone()))
            .collect();
        let expected = reference_substitute(&text, |key| values.get(key).map(String::as_str));
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

    #[test]
    fn check_value_refuses_bidi_and_zero_width_characters_anywhere(
        prefix in "[a-z0-9.]{0,8}",
        format in prop_oneof![0x200Bu32..=0x200F, 0x202Au32..=0x202E, 0x2066u32..=0x2069, Just(0xFEFFu32)],
        suffix in "[a-z0-9.]{0,8}",
        key in prop_oneof![Just("master_ip"), Just("db_host")],
    ) {
        let c = char::from_u32(format).unwrap();
        let value = format!("{prefix}{c}{suffix}");
        let refused = matches!(check_value(key, &value), Err(ValueError::Format { .. }));
        prop_assert!(refused, "{:?} was not refused as a format character", value);
    }
}
