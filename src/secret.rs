//! Secrets that must never reach a log line whole: cluster PINs and admin tokens.
//!
//! Anyone who knows a PIN can join (and, on a legacy server, hijack) a cluster, so `Display`
//! and `Debug` show only a short prefix. The full text is available through `expose()`, which
//! is greppable: every call site is a place where the secret leaves the process on purpose
//! (a URL, a header, a state file readable only by root).

use std::fmt;

/// How many leading characters of a secret are shown in logs: enough to tell two clusters
/// apart when reading a journal, far too few to guess the rest (12 chars of 36 symbols).
const SHOWN_PREFIX: usize = 3;

/// Redacts `secret` for logs: `abc…` (or `…` alone for very short strings).
pub fn redact(secret: &str) -> String {
    if secret.chars().count() <= SHOWN_PREFIX * 2 {
        return "…".to_string();
    }
    let prefix: String = secret.chars().take(SHOWN_PREFIX).collect();
    format!("{prefix}…")
}

/// Replaces every occurrence of `secret` in `text` with its redacted form. Used for messages
/// that carry a secret embedded in a URL or path, e.g. errors from the HTTP client.
pub fn redact_in(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, &redact(secret))
}

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The full secret, for URLs, headers and root-only state files.
            pub fn expose(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&redact(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), redact(&self.0))
            }
        }
    };
}

secret_type!(
    /// A cluster PIN.
    Pin
);
secret_type!(
    /// The admin token returned when a cluster is created.
    AdminToken
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_debug_redact() {
        let pin = Pin::new("enico1qq0oey");
        assert_eq!(pin.to_string(), "eni…");
        assert_eq!(format!("{pin:?}"), "Pin(eni…)");
        assert_eq!(pin.expose(), "enico1qq0oey");
        assert!(!format!("{:?}", AdminToken::new("supersecrettoken")).contains("secret"));
    }

    #[test]
    fn short_secrets_are_hidden_entirely() {
        assert_eq!(redact("abc"), "…");
        assert_eq!(redact("abcdef"), "…");
    }

    #[test]
    fn redact_in_replaces_every_occurrence() {
        let url = "http://x/api/v1/clusters/enico1qq0oey/keys/master_ip?pin=enico1qq0oey";
        let out = redact_in(url, "enico1qq0oey");
        assert!(!out.contains("enico1qq0oey"));
        assert_eq!(out.matches("eni…").count(), 2);
    }
}
