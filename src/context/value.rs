//! Checks on a value before it may go into a context file.
//!
//! Values come from the PIN service, which anyone who knows the PIN can write to (and a
//! legacy service lets them overwrite). The files they go into are YAML, INI and shell that
//! run as root at boot, and the placeholder may sit anywhere: in a double-quoted string, a
//! single-quoted one, a bare `VAR=###X_PLACEHOLDER###` assignment, a YAML plain scalar. So:
//!
//! - No value may leave its line: no C0 control character (newline, CR, NUL, ...), no DEL, no
//!   C1 control (U+0080 to U+009F, NEL included), no Unicode line or paragraph separator
//!   (U+2028, U+2029, which YAML 1.1 parsers such as PyYAML take as line breaks).
//! - No Unicode format character (general category Cf: bidi controls such as U+202E, zero-width
//!   characters, the BOM, soft hyphen, tags) anywhere: they are invisible, so a reviewer of the
//!   file would not see what a reader acts on (the "trojan source" trick).
//! - `master_ip` must be a plain IPv4 or IPv6 address as [`std::net::IpAddr`] parses it: no
//!   brackets, no port, no zone (`%eth0`), no surrounding blanks.
//! - Every other value must not start with a character YAML reserves at the start of a plain
//!   scalar (`` @ % & * ! | > # , ' " [ ] { } ` ``), nor be a lone `-` or `:`: in
//!   `key: ###X_PLACEHOLDER###` those make the line invalid YAML or give it another meaning
//!   (an alias, a tag, a flow collection). `-`, `:` and `?` followed by more text are plain
//!   scalars, so `::1` and `-x` are fine. An address passes this rule as it is.
//! - Every other value may only hold characters that are inert in sh, bash and YAML in all
//!   those positions: letters and digits (any script), and `. _ - : / @ + = , % ^`. That
//!   excludes whitespace (`A=x rm -rf /` runs a command), quotes and backslash (`'` can close a
//!   quote and turn later lines of the script into code), `` ` $ ; & | < > ( ) { } [ ] * ? ! # ~ ``.
//!   Host names, ports, paths, URLs without a query, base64 tokens and e-mail addresses pass.
//! - Lengths follow the service's limits ([`crate::protocol`]), except for the member lists
//!   (`cluster_members`, `cluster_workers`), which the agent makes itself and which may hold a
//!   thousand addresses: they must be IP addresses separated by commas (the workers' list is
//!   empty in a cluster of one), and `cluster_size` a number.

use std::net::IpAddr;

use crate::protocol::{
    self, ItemError, KEY_CLUSTER_MEMBERS, KEY_CLUSTER_SIZE, KEY_CLUSTER_WORKERS, KEY_MASTER_IP,
};

/// Why a value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Bad key name, empty value or value too long: the service's own limits.
    #[error(transparent)]
    Item(#[from] ItemError),
    /// A character that could end the line or confuse whatever reads the file.
    #[error(
        "value contains the control or line-break character U+{code:04X} at character {position}"
    )]
    Control {
        /// The offending character's code point.
        code: u32,
        /// 1-based position in characters.
        position: usize,
    },
    /// An invisible Unicode format character (category Cf).
    #[error("value contains the invisible format character U+{code:04X} (bidi control, zero-width or similar) at character {position}")]
    Format {
        /// The offending character's code point.
        code: u32,
        /// 1-based position in characters.
        position: usize,
    },
    /// A first character that makes `key: <value>` something other than a plain YAML scalar.
    #[error("value starts with {character:?}, which YAML reserves at the start of a plain scalar")]
    ReservedStart {
        /// The first character.
        character: char,
    },
    /// A character a shell or YAML reader would act on, in a value other than `master_ip`.
    #[error("value contains {character:?} at character {position}; values may only hold letters, digits and the punctuation {ALLOWED_PUNCTUATION}")]
    Unsafe {
        /// The offending character.
        character: char,
        /// 1-based position in characters.
        position: usize,
    },
    /// A member list with an item that is not an address.
    #[error("value of {key} holds {shown}, which is not an IPv4 or IPv6 address")]
    NotAnAddressList {
        key: &'static str,
        /// The item, escaped and cut short, safe to log.
        shown: String,
    },
    /// `cluster_size` that is not a number.
    #[error("value of {KEY_CLUSTER_SIZE} is not a number: {shown}")]
    NotANumber {
        /// The value, escaped and cut short, safe to log.
        shown: String,
    },
    /// `master_ip` that is not an address.
    #[error("value of {KEY_MASTER_IP} is not an IPv4 or IPv6 address: {shown}")]
    NotAnAddress {
        /// The value, escaped and cut short, safe to log.
        shown: String,
    },
}

/// Whether `value` may be written into a context file for `key`. See the module doc for the
/// rules. Call it for every value before touching any file.
pub fn check_value(key: &str, value: &str) -> Result<(), ValueError> {
    protocol::validate_key_name(key)?;
    if let Some(key) = [KEY_CLUSTER_MEMBERS, KEY_CLUSTER_WORKERS]
        .into_iter()
        .find(|list| *list == key)
    {
        return check_address_list(key, value);
    }
    if key == KEY_CLUSTER_SIZE {
        return match value.parse::<u32>() {
            Ok(_) if value.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err(ValueError::NotANumber {
                shown: shown(value),
            }),
        };
    }
    protocol::validate_value(value)?;
    if let Some((index, c)) = value.chars().enumerate().find(|(_, c)| is_forbidden(*c)) {
        return Err(ValueError::Control {
            code: u32::from(c),
            position: index + 1,
        });
    }
    if let Some((index, c)) = value.chars().enumerate().find(|(_, c)| is_format(*c)) {
        return Err(ValueError::Format {
            code: u32::from(c),
            position: index + 1,
        });
    }
    if key == KEY_MASTER_IP {
        if value.parse::<IpAddr>().is_err() {
            return Err(ValueError::NotAnAddress {
                shown: shown(value),
            });
        }
        return Ok(());
    }
    if let Some(character) = reserved_start(value) {
        return Err(ValueError::ReservedStart { character });
    }
    if let Some((index, character)) = value.chars().enumerate().find(|(_, c)| !is_inert(*c)) {
        return Err(ValueError::Unsafe {
            character,
            position: index + 1,
        });
    }
    Ok(())
}

/// A member list: IP addresses separated by commas, nothing else (so no shell or YAML
/// character can pass), or empty. No length limit: it never travels through the service.
fn check_address_list(key: &'static str, value: &str) -> Result<(), ValueError> {
    if value.is_empty() {
        return Ok(());
    }
    match value
        .split(',')
        .find(|item| item.parse::<IpAddr>().is_err())
    {
        Some(item) => Err(ValueError::NotAnAddressList {
            key,
            shown: shown(item),
        }),
        None => Ok(()),
    }
}

/// The ASCII punctuation a value other than `master_ip` may hold.
const ALLOWED_PUNCTUATION: &str = "._-:/@+=,%^";

/// The YAML indicators that may not begin a plain scalar (YAML 1.2, `ns-plain-first`).
const RESERVED_FIRST: &str = "@%&*!|>#,'\"[]{}`";
/// Indicators that may begin a plain scalar only when more text follows.
const RESERVED_ALONE: &str = "-:?";

/// The first character of `value`, if YAML would not read `key: <value>` as a plain scalar
/// because of it.
fn reserved_start(value: &str) -> Option<char> {
    let mut chars = value.chars();
    let first = chars.next()?;
    let alone = chars.next().is_none();
    (RESERVED_FIRST.contains(first) || (alone && RESERVED_ALONE.contains(first))).then_some(first)
}

/// Unicode general category Cf (format), as of Unicode 15.1: bidi embeddings, overrides and
/// isolates, zero-width space and joiners, word joiner and invisible operators, the BOM, soft
/// hyphen, Arabic and Syriac marks, interlinear annotation, Egyptian, shorthand and musical
/// format controls, tag characters.
const FORMAT: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT
        .iter()
        .any(|(first, last)| (*first..=*last).contains(&c))
}

fn is_forbidden(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn is_inert(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || ALLOWED_PUNCTUATION.contains(c)
    } else {
        !c.is_whitespace()
    }
}

/// At most 64 characters of `value`, escaped, for a log line.
fn shown(value: &str) -> String {
    const SHOWN: usize = 64;
    let mut shown: String = value
        .chars()
        .take(SHOWN)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if value.chars().count() > SHOWN {
        shown.push('…');
    }
    format!("\"{shown}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        for ok in [
            "10.10.25.5",
            "::1",
            "fe80::1",
            "2001:db8::42",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(check_value("master_ip", ok), Ok(()), "{ok}");
        }
        for bad in [
            "10.10.25",
            "10.10.25.256",
            "010.10.25.5",
            "[::1]",
            "fe80::1%eth0",
            "10.0.0.1:80",
            " 10.0.0.1",
            "10.0.0.1 ",
            "host.example",
            "10.0.0.1;reboot",
            "$(reboot)",
        ] {
            assert!(
                matches!(
                    check_value("master_ip", bad),
                    Err(ValueError::NotAnAddress { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_keys_take_inert_text() {
        for ok in [
            "db.example:5432",
            "https://db.example:8443/a/b",
            "user@example.org",
            "dGVzdA+/==",
            "a,b,c",
            "50%^2",
            "héllo-wörld",
            "日本",
            "10.0.0.1",
        ] {
            assert_eq!(check_value("db_host", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn other_keys_refuse_what_a_shell_or_yaml_would_act_on() {
        for (value, character, position) in [
            ("x rm", ' ', 2),
            ("a'", '\'', 2),
            ("a\"b", '"', 2),
            ("a\\b", '\\', 2),
            ("$(reboot)", '$', 1),
            ("a`id`", '`', 2),
            ("a;b", ';', 2),
            ("a&b", '&', 2),
            ("a|b", '|', 2),
            ("a>b", '>', 2),
            ("a<b", '<', 2),
            ("(a)", '(', 1),
            ("a{b}", '{', 2),
            ("a[b]", '[', 2),
            ("a*", '*', 2),
            ("a?", '?', 2),
            ("a!", '!', 2),
            ("a #b", ' ', 2),
            ("a#b", '#', 2),
            ("~root", '~', 1),
            ("no\u{a0}break", '\u{a0}', 3),
            ("ideo\u{3000}space", '\u{3000}', 5),
        ] {
            assert_eq!(
                check_value("k", value),
                Err(ValueError::Unsafe {
                    character,
                    position
                }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn yaml_indicators_at_the_start_are_refused() {
        for character in "@%&*!|>#,'\"[]{}`".chars() {
            for value in [character.to_string(), format!("{character}x")] {
                assert_eq!(
                    check_value("k", &value),
                    Err(ValueError::ReservedStart { character }),
                    "{value:?}"
                );
            }
        }
        for alone in ['-', ':', '?'] {
            assert_eq!(
                check_value("k", &alone.to_string()),
                Err(ValueError::ReservedStart { character: alone }),
            );
        }
        // Followed by more text, `-` and `:` start a plain scalar; inside a value `@ % ,` are
        // plain text.
        for ok in ["-x", ":x", "::1", "a@b", "50%", "a,b", "x-", "x:y"] {
            assert_eq!(check_value("k", ok), Ok(()), "{ok}");
        }
        for address in ["::1", "::ffff:10.0.0.1", "10.0.0.1"] {
            assert_eq!(check_value("master_ip", address), Ok(()), "{address}");
            assert_eq!(check_value("db_host", address), Ok(()), "{address}");
        }
    }

    #[test]
    fn format_characters_are_refused_anywhere() {
        for (class, code) in [
            ("left-to-right embedding", 0x202A),
            ("right-to-left embedding", 0x202B),
            ("pop directional formatting", 0x202C),
            ("left-to-right override", 0x202D),
            ("right-to-left override", 0x202E),
            ("left-to-right isolate", 0x2066),
            ("right-to-left isolate", 0x2067),
            ("first strong isolate", 0x2068),
            ("pop directional isolate", 0x2069),
            ("left-to-right mark", 0x200E),
            ("right-to-left mark", 0x200F),
            ("arabic letter mark", 0x061C),
            ("zero-width space", 0x200B),
            ("zero-width non-joiner", 0x200C),
            ("zero-width joiner", 0x200D),
            ("word joiner", 0x2060),
            ("byte order mark", 0xFEFF),
            ("soft hyphen", 0x00AD),
            ("mongolian vowel separator", 0x180E),
            ("interlinear annotation", 0xFFF9),
            ("tag letter", 0xE0041),
        ] {
            let c = char::from_u32(code).unwrap();
            for (value, position) in [
                (format!("{c}abc"), 1),
                (format!("ab{c}c"), 3),
                (format!("abc{c}"), 4),
            ] {
                for key in ["k", "master_ip"] {
                    assert_eq!(
                        check_value(key, &value),
                        Err(ValueError::Format { code, position }),
                        "{class} in {key}"
                    );
                }
            }
        }
        // Visible non-ASCII letters stay allowed.
        assert_eq!(check_value("k", "héllo-日本"), Ok(()));
    }

    #[test]
    fn control_characters_and_line_separators() {
        for (value, code, position) in [
            ("10.0.0.1\nreboot", 0x0a, 9),
            ("a\rb", 0x0d, 2),
            ("\0", 0, 1),
            ("tab\there", 0x09, 4),
            ("del\u{7f}", 0x7f, 4),
            ("nel\u{85}", 0x85, 4),
            ("c1\u{9f}", 0x9f, 3),
            ("ls\u{2028}", 0x2028, 3),
            ("ps\u{2029}", 0x2029, 3),
            ("esc\u{1b}[31m", 0x1b, 4),
        ] {
            assert_eq!(
                check_value("any", value),
                Err(ValueError::Control { code, position }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn a_newline_in_master_ip_is_reported_as_such() {
        assert_eq!(
            check_value("master_ip", "10.0.0.1\n"),
            Err(ValueError::Control {
                code: 0x0a,
                position: 9
            })
        );
    }

    #[test]
    fn limits() {
        assert_eq!(
            check_value("k", ""),
            Err(ValueError::Item(ItemError::EmptyValue))
        );
        assert_eq!(
            check_value("k", &"x".repeat(protocol::MAX_VALUE_LEN + 1)),
            Err(ValueError::Item(ItemError::ValueTooLong))
        );
        assert_eq!(
            check_value("bad key", "v"),
            Err(ValueError::Item(ItemError::KeyCharacters))
        );
    }

    #[test]
    fn member_lists_are_addresses_of_any_number_and_the_size_a_number() {
        let thousand: Vec<String> = (0..1000)
            .map(|i| format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
            .collect();
        assert_eq!(check_value("cluster_members", &thousand.join(",")), Ok(()));
        assert_eq!(
            check_value("cluster_workers", ""),
            Ok(()),
            "a cluster of one"
        );
        assert_eq!(check_value("cluster_workers", "10.0.0.2,fd00::3"), Ok(()));
        for bad in [
            "10.0.0.2,",
            "10.0.0.2;reboot",
            "10.0.0.2, 10.0.0.3",
            "$(id)",
            "10.0.0.2\n",
        ] {
            assert!(
                matches!(
                    check_value("cluster_workers", bad),
                    Err(ValueError::NotAnAddressList { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(check_value("cluster_size", "8"), Ok(()));
        for bad in ["", "+8", "8 ", "-1", "x"] {
            assert!(
                matches!(
                    check_value("cluster_size", bad),
                    Err(ValueError::NotANumber { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_message_never_carries_a_raw_control_character_or_a_huge_value() {
        let err = check_value("master_ip", &"9".repeat(900)).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 150, "{text}");
        assert!(text.ends_with("…\""));
    }
}
