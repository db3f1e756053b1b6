//! Finding `###<NAME>_PLACEHOLDER###` in a decoded text.
//!
//! # The rule, precisely
//!
//! A placeholder is `###`, then NAME, then `_PLACEHOLDER###`, where NAME is one or more of
//! `[A-Za-z0-9_-]` and at most [`MAX_KEY_LEN`] long (a longer name could never be a key on the
//! service, so it is left alone). The key it stands for is NAME in ASCII lower case:
//! `###MASTER_IP_PLACEHOLDER###` is `master_ip`.
//!
//! Matches are found leftmost first and never overlap, exactly as the legacy
//! `sed s/###MASTER_IP_PLACEHOLDER###/.../g` found its one placeholder. Since `#` is not a
//! name character, NAME is the whole run of name characters after the opening `###`, which
//! settles the odd cases:
//!
//! - `###A_PLACEHOLDER_PLACEHOLDER###` is one placeholder for key `a_placeholder`.
//! - `####MASTER_IP_PLACEHOLDER###` is a `#` followed by the `master_ip` placeholder; the
//!   extra `#` stays. Likewise a trailing extra `#` stays.
//! - `###A_PLACEHOLDER###B_PLACEHOLDER###` is the `a` placeholder followed by the text
//!   `B_PLACEHOLDER###`: the closing `###` is not reused as an opening one.
//! - `###_PLACEHOLDER###` (empty NAME) and `###a b_PLACEHOLDER###` are not placeholders.
//!
//! A placeholder never spans a line break (no name character is one), so skipping whole lines
//! (those of the ucernvm block) is exact.
//!
//! Substitution is a single pass over the original text: a value that happens to contain
//! something shaped like a placeholder is inserted as is, never expanded again in that pass.

use std::ops::Range;

use crate::protocol::MAX_KEY_LEN;

const OPEN: &[u8] = b"###";
const SUFFIX: &[u8] = b"_PLACEHOLDER";

/// One placeholder in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// From the first `#` of the opening `###` to the end of the closing one.
    pub range: Range<usize>,
    /// NAME in lower case.
    pub key: String,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Every placeholder in `text`, in order, except those starting inside one of `skip` (sorted,
/// non-overlapping byte ranges, such as the ucernvm block's lines).
pub(crate) fn find(text: &[u8], skip: &[Range<usize>]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut skip = skip.iter().peekable();
    let mut i = 0;
    while i + OPEN.len() <= text.len() {
        while skip.next_if(|range| range.end <= i).is_some() {}
        if let Some(range) = skip.peek() {
            if range.start <= i {
                i = range.end;
                continue;
            }
        }
        if &text[i..i + OPEN.len()] != OPEN {
            i += 1;
            continue;
        }
        let name_start = i + OPEN.len();
        let run = text[name_start..]
            .iter()
            .take_while(|&&b| is_name_byte(b))
            .count();
        let run_end = name_start + run;
        let name_len = run.saturating_sub(SUFFIX.len());
        let is_placeholder = run > SUFFIX.len()
            && name_len <= MAX_KEY_LEN
            && text[name_start..run_end].ends_with(SUFFIX)
            && text[run_end..].starts_with(OPEN);
        if is_placeholder {
            let name = &text[name_start..name_start + name_len];
            found.push(Found {
                range: i..run_end + OPEN.len(),
                // Name bytes are ASCII, so this is lossless.
                key: String::from_utf8_lossy(name).to_ascii_lowercase(),
            });
            i = run_end + OPEN.len();
        } else {
            i += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &[u8]) -> Vec<(Range<usize>, String)> {
        find(text, &[])
            .into_iter()
            .map(|f| (f.range, f.key))
            .collect()
    }

    #[test]
    fn master_ip() {
        assert_eq!(
            keys(b"ip=###MASTER_IP_PLACEHOLDER###\n"),
            [(3..30, "master_ip".to_string())]
        );
    }

    #[test]
    fn names_are_lower_cased_and_may_hold_dashes_and_digits() {
        assert_eq!(
            keys(b"###Db-Host2_PLACEHOLDER### ###x_PLACEHOLDER###"),
            [(0..26, "db-host2".to_string()), (27..46, "x".to_string())]
        );
    }

    #[test]
    fn odd_cases() {
        assert_eq!(
            keys(b"###A_PLACEHOLDER_PLACEHOLDER###"),
            [(0..31, "a_placeholder".to_string())]
        );
        assert_eq!(
            keys(b"####MASTER_IP_PLACEHOLDER####"),
            [(1..28, "master_ip".to_string())]
        );
        assert_eq!(
            keys(b"###A_PLACEHOLDER###B_PLACEHOLDER###"),
            [(0..19, "a".to_string())]
        );
        assert_eq!(
            keys(b"###A_PLACEHOLDER######B_PLACEHOLDER###"),
            [(0..19, "a".to_string()), (19..38, "b".to_string())]
        );
        assert_eq!(
            keys(b"###A_PLACEHOLDER###_PLACEHOLDER###"),
            [(0..19, "a".to_string())]
        );
        assert_eq!(keys(b"###_PLACEHOLDER###"), []);
        assert_eq!(keys(b"###a b_PLACEHOLDER###"), []);
        assert_eq!(keys(b"###A_PLACEHOLDER##"), []);
        assert_eq!(keys(b"###A_placeholder###"), []);
        assert_eq!(keys(b"##A_PLACEHOLDER###"), []);
        assert_eq!(keys(b"###A_PLACEHOLDER\n###"), []);
        assert_eq!(keys(b"###\xC3\xA9_PLACEHOLDER###"), []);
    }

    #[test]
    fn a_run_that_fails_does_not_hide_a_later_placeholder() {
        assert_eq!(
            keys(b"###nope ###yes_PLACEHOLDER###"),
            [(8..29, "yes".to_string())]
        );
    }

    #[test]
    fn name_length_is_bounded_by_the_key_limit() {
        let ok = format!("###{}_PLACEHOLDER###", "k".repeat(MAX_KEY_LEN));
        let long = format!("###{}_PLACEHOLDER###", "k".repeat(MAX_KEY_LEN + 1));
        assert_eq!(find(ok.as_bytes(), &[]).len(), 1);
        assert_eq!(find(long.as_bytes(), &[]), []);
    }

    #[test]
    fn skipped_ranges() {
        let text = b"###A_PLACEHOLDER###\n###B_PLACEHOLDER###\n###C_PLACEHOLDER###\n";
        let found: Vec<_> = find(text, std::slice::from_ref(&(20..40)))
            .into_iter()
            .map(|f| f.key)
            .collect();
        assert_eq!(found, ["a", "c"]);
        let found: Vec<_> = find(text, &[0..1, 20..40, 40..60])
            .into_iter()
            .map(|f| f.key)
            .collect();
        assert!(found.is_empty());
    }
}
