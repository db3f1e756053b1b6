//! Whether a run seals what it publishes and opens what it reads (PROTOCOL.md part 4, "Sealed
//! values"): the one switch that every step of a [`super::Plan`] goes through, so that no
//! value reaches the service unsealed, or a file unopened, when the cluster has a secret.

use std::sync::Arc;

use crate::{
    seal::{OpenError, SealError, Sealer},
    secret::{ClusterSecret, Pin},
};

/// Sealing on (with the cluster's [`Sealer`]) or off. Holds the derived key, never the secret.
#[derive(Clone)]
pub enum Sealing {
    /// No cluster secret: values go to the service and come back as they are.
    Off,
    /// A cluster secret: values are sealed for the service and must open when read.
    On(Arc<Sealed>),
}

/// What sealing needs: the key, and how to name the secret without showing it.
pub struct Sealed {
    sealer: Sealer,
    /// [`ClusterSecret::fingerprint`]: for `check` and the state file.
    fingerprint: String,
}

impl Sealing {
    /// On when there is a secret: the key of `secret` for `pin`.
    pub fn new(secret: Option<&ClusterSecret>, pin: &Pin) -> Self {
        match secret {
            None => Sealing::Off,
            Some(secret) => Sealing::On(Arc::new(Sealed {
                sealer: Sealer::new(secret, pin),
                fingerprint: secret.fingerprint(),
            })),
        }
    }

    /// The secret's fingerprint, when sealing is on.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Sealing::Off => None,
            Sealing::On(sealed) => Some(&sealed.fingerprint),
        }
    }

    pub fn is_on(&self) -> bool {
        matches!(self, Sealing::On(_))
    }

    /// The text to publish for `value` under `key`: the value itself, or sealed.
    pub fn seal(&self, key: &str, value: &str) -> Result<String, SealError> {
        match self {
            Sealing::Off => Ok(value.to_string()),
            Sealing::On(sealed) => sealed.sealer.seal(key, value),
        }
    }

    /// The value behind the service's `text` for `key`: the text itself, or opened. With
    /// sealing on, anything this cluster did not seal is an error (naming the key, never the
    /// text).
    pub fn open(&self, key: &str, text: &str) -> Result<String, OpenError> {
        match self {
            Sealing::Off => Ok(text.to_string()),
            Sealing::On(sealed) => sealed.sealer.open(key, text),
        }
    }
}

impl std::fmt::Display for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sealing::Off => f.write_str("off"),
            Sealing::On(sealed) => {
                write!(f, "on (cluster secret fingerprint {})", sealed.fingerprint)
            }
        }
    }
}

/// Like `Display`: the fingerprint at most, never the secret or the key.
impl std::fmt::Debug for Sealing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sealing::Off => f.write_str("Sealing::Off"),
            Sealing::On(sealed) => write!(f, "Sealing::On(fingerprint {})", sealed.fingerprint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";

    #[test]
    fn off_passes_values_through_and_on_seals_and_opens() {
        let pin = Pin::new("enico1qq0oey");
        let off = Sealing::new(None, &pin);
        assert_eq!(off.seal("master_ip", "10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(off.open("master_ip", "10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(off.fingerprint(), None);

        let secret = ClusterSecret::parse(SECRET).unwrap();
        let on = Sealing::new(Some(&secret), &pin);
        let sealed = on.seal("master_ip", "10.0.0.1").unwrap();
        assert!(crate::seal::is_sealed(&sealed), "{sealed}");
        assert_eq!(on.open("master_ip", &sealed).unwrap(), "10.0.0.1");
        assert!(matches!(
            on.open("master_ip", "10.0.0.1"),
            Err(OpenError::NotSealed { .. })
        ));
        assert_eq!(on.fingerprint(), Some(secret.fingerprint().as_str()));
    }

    #[test]
    fn neither_display_nor_debug_shows_the_secret() {
        let secret = ClusterSecret::parse(SECRET).unwrap();
        let on = Sealing::new(Some(&secret), &Pin::new("enico1qq0oey"));
        let shown = format!("{on} {on:?} {on:#?}");
        assert!(!shown.contains(&SECRET[..4]), "{shown}");
        assert!(shown.contains(&secret.fingerprint()), "{shown}");
        assert_eq!(
            Sealing::new(None, &Pin::new("enico1qq0oey")).to_string(),
            "off"
        );
    }
}
