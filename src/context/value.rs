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
//! - `master_ip` must be a plain IPv4 or IPv6 address as [`std::net::IpAddr`] parses it: no
//!   brackets, no port, no zone (`%eth0`), no surrounding blanks.
//! - Every other value may only hold characters that are inert in sh, bash and YAML in all
//!   those positions: letters and digits (any script), and `. _ - : / @ + = , % ^`. That
//!   excludes whitespace (`A=x rm -rf /` runs a command), quotes and backslash (`'` can close a
//!   quote and turn later lines of the script into code), `` ` $ ; & | < > ( ) { } [ ] * ? ! # ~ ``.
//!   Host names, ports, paths, URLs without a query, base64 tokens and e-mail addresses pass.
//! - Lengths follow the service's limits ([`crate::protocol`]).

use std::net::IpAddr;

use crate::protocol::{self, ItemError, KEY_MASTER_IP};

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
    /// A character a shell or YAML reader would act on, in a value other than `master_ip`.
    #[error("value contains {character:?} at character {position}; values may only hold letters, digits and the punctuation {ALLOWED_PUNCTUATION}")]
    Unsafe {
        /// The offending character.
        character: char,
        /// 1-based position in characters.
        position: usize,
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
    protocol::validate_value(value)?;
    if let Some((index, c)) = value.chars().enumerate().find(|(_, c)| is_forbidden(*c)) {
        return Err(ValueError::Control {
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
    if let Some((index, character)) = value.chars().enumerate().find(|(_, c)| !is_inert(*c)) {
        return Err(ValueError::Unsafe {
            character,
            position: index + 1,
        });
    }
    Ok(())
}

/// The ASCII punctuation a value other than `master_ip` may hold.
const ALLOWED_PUNCTUATION: &str = "._-:/@+=,%^";

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
            ("'", '\'', 1),
            ("a\"b", '"', 2),
            ("a\\b", '\\', 2),
            ("$(reboot)", '$', 1),
            ("`id`", '`', 1),
            ("a;b", ';', 2),
            ("a&b", '&', 2),
            ("a|b", '|', 2),
            ("a>b", '>', 2),
            ("a<b", '<', 2),
            ("(a)", '(', 1),
            ("{a}", '{', 1),
            ("[a]", '[', 1),
            ("a*", '*', 2),
            ("a?", '?', 2),
            ("!a", '!', 1),
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
    fn the_message_never_carries_a_raw_control_character_or_a_huge_value() {
        let err = check_value("master_ip", &"9".repeat(900)).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 150, "{text}");
        assert!(text.ends_with("…\""));
    }
}
