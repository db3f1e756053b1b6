//! Secrets that must never reach a log line whole: cluster PINs, admin tokens and cluster
//! secrets.
//!
//! Anyone who knows a PIN can join (and, on a legacy server, hijack) a cluster, so `Display`
//! and `Debug` show only a short prefix. The full text is available through `expose()`, which
//! is greppable: every call site is a place where the secret leaves the process on purpose
//! (a URL, a header, a state file readable only by root).
//!
//! A [`ClusterSecret`] is stricter still: it never leaves the node at all (PROTOCOL.md part 4,
//! "Sealed values"), so it shows nothing of itself, and its only outward trace is a keyed
//! [`ClusterSecret::fingerprint`].

use std::{
    fmt,
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use base64::Engine;
use ring::rand::SecureRandom;

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

/// The ucernvm block key that carries the cluster secret.
pub const CLUSTER_SECRET_KEY: &str = "cvm_cluster_secret";

/// A cluster secret: at least this many characters, i.e. 128 bits when random base64url (the
/// length [`ClusterSecret::generate`] gives).
pub const CLUSTER_SECRET_MIN_LEN: usize = 22;
/// At most this many characters: far beyond any useful strength (HKDF hashes a longer input
/// key down anyway), short enough that a wrong file (a log, a key bundle) is refused as such.
pub const CLUSTER_SECRET_MAX_LEN: usize = 128;

/// Label of the keyed hash that [`ClusterSecret::fingerprint`] computes. Versioned with the
/// sealed format so that a later format cannot be confused with this one.
const FINGERPRINT_LABEL: &[u8] = b"clusterctx cluster secret fingerprint v1";

/// The shared secret that seals a cluster's values (see [`crate::seal`]). The PIN service
/// never sees it. Built only through [`ClusterSecret::parse`], [`ClusterSecret::from_file`]
/// or [`ClusterSecret::generate`], so every value of this type is well-formed.
#[derive(Clone)]
pub struct ClusterSecret(String);

/// Why a text is not a cluster secret. Never carries the text itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("the cluster secret is too short: {len} characters, it needs at least {CLUSTER_SECRET_MIN_LEN} (e.g. `clusterctx pin create --secret` makes one)")]
    TooShort { len: usize },
    #[error("the cluster secret is too long: {len} characters, at most {CLUSTER_SECRET_MAX_LEN}")]
    TooLong { len: usize },
    /// 1-based position of the first character outside `[A-Za-z0-9_-]`. The character itself
    /// is not shown: it is a piece of the secret.
    #[error("the cluster secret may only contain A-Z, a-z, 0-9, '_' and '-': character {position} is none of them")]
    Character { position: usize },
}

/// Why a cluster secret file could not be used. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read the cluster secret from {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Like ssh with a private key: a secret others can read is no longer a secret, and one
    /// others can write is no longer ours.
    #[error("{path} is accessible by group or others (mode {mode:03o}): a cluster secret file must be private to its owner (chmod 600 {path})")]
    Permissions { path: String, mode: u32 },
    /// A FIFO would block the boot until the unit's timeout; a device is no secret file.
    #[error("{path} is not a regular file: a cluster secret file must be one")]
    NotRegular { path: String },
    /// Someone else's file could be switched to another secret behind our back.
    #[error("{path} belongs to user {owner}: a cluster secret file must belong to the user reading it, or to root")]
    Owner { path: String, owner: u32 },
    #[error("{path} holds no valid cluster secret")]
    Invalid {
        path: String,
        #[source]
        source: SecretError,
    },
}

/// The system's random source failed: no secret can be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomError;

impl ClusterSecret {
    /// Checks `text` as a cluster secret: [`CLUSTER_SECRET_MIN_LEN`] to
    /// [`CLUSTER_SECRET_MAX_LEN`] characters of `[A-Za-z0-9_-]`, taken exactly as given (no
    /// trimming: a blank is a wrong character, not something to guess about).
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        Self::parse_bytes(text.as_bytes())
    }

    fn parse_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        // Every allowed character is one byte, so until the first bad one, bytes are characters.
        if let Some(index) = bytes
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        {
            return Err(SecretError::Character {
                position: index + 1,
            });
        }
        match bytes.len() {
            len if len < CLUSTER_SECRET_MIN_LEN => Err(SecretError::TooShort { len }),
            len if len > CLUSTER_SECRET_MAX_LEN => Err(SecretError::TooLong { len }),
            _ => Ok(Self(
                String::from_utf8(bytes.to_vec()).expect("checked to be ASCII above"),
            )),
        }
    }

    /// Reads a secret from `path` (`--secret-file`): the whole file, less one trailing newline
    /// (`\n` or `\r\n`, as editors and `echo` leave them). The file must not be accessible
    /// by group or others.
    pub fn from_file(path: &Path) -> Result<Self, SecretFileError> {
        let shown = path.display().to_string();
        let read_error = |source| SecretFileError::Read {
            path: shown.clone(),
            source,
        };
        // Non-blocking: opening a FIFO must not wait for a writer (it is refused just below).
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(read_error)?;
        let meta = file.metadata().map_err(read_error)?;
        if !meta.file_type().is_file() {
            return Err(SecretFileError::NotRegular { path: shown });
        }
        let owner = meta.uid();
        if owner != 0 && owner != nix::unistd::geteuid().as_raw() {
            return Err(SecretFileError::Owner { path: shown, owner });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SecretFileError::Permissions { path: shown, mode });
        }
        // Enough to tell "too long" from "just right plus a newline", never a whole big file.
        let limit = CLUSTER_SECRET_MAX_LEN as u64 + 3;
        let mut bytes = Vec::new();
        file.take(limit)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        let text = bytes
            .strip_suffix(b"\r\n")
            .or_else(|| bytes.strip_suffix(b"\n"))
            .unwrap_or(&bytes);
        Self::parse_bytes(text).map_err(|source| SecretFileError::Invalid {
            path: shown,
            source,
        })
    }

    /// A fresh secret: 128 bits from the system's random source, base64url without padding
    /// (22 characters).
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| RandomError)?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    /// The full secret: to derive keys from, or to print once for the operator who asked
    /// for a new one. Never for a log, a state file or the network.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A keyed hash that recognises this secret again (in the agent's state file, in
    /// `check`) without revealing it: HMAC-SHA256 keyed with the secret over a fixed label,
    /// the first 128 bits in lower-case hex. Knowing it helps only someone who can guess the
    /// secret, which for a random one of 128 bits is nobody.
    pub fn fingerprint(&self) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_bytes());
        let tag = ring::hmac::sign(&key, FINGERPRINT_LABEL);
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Display for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterSecret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";

    fn private_file(dir: &tempfile::TempDir, content: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.path().join("secret");
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn cluster_secrets_are_checked() {
        assert_eq!(ClusterSecret::parse(SECRET).unwrap().expose(), SECRET);
        assert!(ClusterSecret::parse(&"a".repeat(CLUSTER_SECRET_MAX_LEN)).is_ok());
        assert_eq!(
            ClusterSecret::parse(&SECRET[..21]).unwrap_err(),
            SecretError::TooShort { len: 21 }
        );
        assert_eq!(
            ClusterSecret::parse("").unwrap_err(),
            SecretError::TooShort { len: 0 }
        );
        assert_eq!(
            ClusterSecret::parse(&"a".repeat(CLUSTER_SECRET_MAX_LEN + 1)).unwrap_err(),
            SecretError::TooLong { len: 129 }
        );
        for (bad, position) in [
            ("Zq3_xT8-vKp2LmN9wRb7sA=", 23),
            (" Zq3_xT8-vKp2LmN9wRb7sA", 1),
            ("Zq3_xT8+vKp2LmN9wRb7sA", 8),
            ("Zq3_xT8/vKp2LmN9wRb7sA", 8),
            ("Zq3_xT8.vKp2LmN9wRb7sA", 8),
            ("Zq3_xT8-vKp2LmN9wRb7sÄ", 22),
            ("Zq3_xT8-vKp2LmN9wRb7sA\n", 23),
        ] {
            assert_eq!(
                ClusterSecret::parse(bad).unwrap_err(),
                SecretError::Character { position },
                "{bad:?}"
            );
        }
    }

    #[test]
    fn errors_never_echo_the_secret() {
        let near_misses = [
            format!("{SECRET}!"),
            SECRET[..21].to_string(),
            format!("{SECRET}{}", "x".repeat(200)),
        ];
        for text in near_misses {
            let err = ClusterSecret::parse(&text).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(&SECRET[..8]), "{shown}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(&dir, format!("{SECRET}#").as_bytes(), 0o600);
        let err = ClusterSecret::from_file(&path).unwrap_err();
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        let shown = format!("{err} {err:?} {cause:?}");
        assert!(shown.contains("character 23"), "{shown}");
        assert!(!shown.contains(&SECRET[..8]), "{shown}");
    }

    #[test]
    fn secret_files_lose_one_newline_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        for content in [
            SECRET.to_string(),
            format!("{SECRET}\n"),
            format!("{SECRET}\r\n"),
        ] {
            let path = private_file(&dir, content.as_bytes(), 0o600);
            assert_eq!(ClusterSecret::from_file(&path).unwrap().expose(), SECRET);
        }
        for content in [format!("{SECRET}\n\n"), format!(" {SECRET}")] {
            let path = private_file(&dir, content.as_bytes(), 0o400);
            assert!(matches!(
                ClusterSecret::from_file(&path),
                Err(SecretFileError::Invalid {
                    source: SecretError::Character { .. },
                    ..
                })
            ));
        }
        let huge = private_file(&dir, &vec![b'a'; 1 << 20], 0o600);
        assert!(matches!(
            ClusterSecret::from_file(&huge),
            Err(SecretFileError::Invalid {
                source: SecretError::TooLong { .. },
                ..
            })
        ));
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            let path = private_file(&dir, SECRET.as_bytes(), mode);
            let err = ClusterSecret::from_file(&path).unwrap_err();
            assert!(
                matches!(err, SecretFileError::Permissions { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        let missing = dir.path().join("missing");
        let err = ClusterSecret::from_file(&missing).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        // A FIFO is refused at once, without waiting for a writer.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            ClusterSecret::from_file(&fifo),
            Err(SecretFileError::NotRegular { .. })
        ));
        // Someone else's file, private or not, could be switched to another secret behind
        // our back (needs root to give a file away).
        if nix::unistd::geteuid().is_root() {
            let theirs = private_file(&dir, SECRET.as_bytes(), 0o600);
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            assert!(matches!(
                ClusterSecret::from_file(&theirs),
                Err(SecretFileError::Owner { owner: 65534, .. })
            ));
        }
    }

    #[test]
    fn generated_secrets_are_fresh_and_valid() {
        let a = ClusterSecret::generate().unwrap();
        let b = ClusterSecret::generate().unwrap();
        assert_eq!(a.expose().len(), CLUSTER_SECRET_MIN_LEN);
        assert!(ClusterSecret::parse(a.expose()).is_ok());
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn fingerprints_recognise_without_revealing() {
        let secret = ClusterSecret::parse(SECRET).unwrap();
        let again = ClusterSecret::parse(SECRET).unwrap();
        let other = ClusterSecret::parse("Zq3_xT8-vKp2LmN9wRb7sB").unwrap();
        assert_eq!(secret.fingerprint(), again.fingerprint());
        assert_ne!(secret.fingerprint(), other.fingerprint());
        assert_eq!(secret.fingerprint().len(), 32);
        assert!(!secret.fingerprint().contains(&SECRET[..4]));
    }

    #[test]
    fn cluster_secrets_show_nothing_of_themselves() {
        let secret = ClusterSecret::parse(SECRET).unwrap();
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
        ] {
            assert!(!shown.contains(&SECRET[..3]), "{shown}");
        }
    }

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
