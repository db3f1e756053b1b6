//! Sealed values: what a cluster with a [`ClusterSecret`] publishes, so that the PIN service
//! (ours or the legacy one) learns neither addresses nor values, and a value nobody in the
//! cluster sealed is recognised as such (PROTOCOL.md part 4, "Sealed values").
//!
//! The format, for another implementation (the vectors in `contrib/sealed-values/` check it):
//!
//! - key: HKDF-SHA256 with the secret's text as input key material, the PIN's text as salt,
//!   [`KEY_INFO`] as info, 32 bytes, used as an AES-256-GCM key;
//! - associated data: the PIN and the key name, each as a 4-byte big-endian length and its
//!   bytes, so that no two (PIN, key) pairs frame to the same bytes;
//! - a fresh random 96-bit nonce per value;
//! - text: [`PREFIX`] then base64url without padding (RFC 4648 section 5) of
//!   nonce | ciphertext | 16-byte tag.
//!
//! AES-256-GCM rather than ChaCha20-Poly1305: for values this short both cost microseconds,
//! but AES-GCM is the one that WebCrypto and Go's standard library have, so a browser page
//! or a small tool can open a sealed value without a third-party library.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ring::{
    aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN},
    hkdf,
    rand::{SecureRandom, SystemRandom},
};

use crate::{
    protocol::MAX_VALUE_LEN,
    secret::{ClusterSecret, Pin, RandomError},
};

/// What every sealed value starts with; the `1` is the format version.
pub const PREFIX: &str = "ccs1.";

/// HKDF info for the value key. A new format gets a new label, so its keys differ.
pub const KEY_INFO: &[u8] = b"clusterctx sealed values v1";

const TAG_LEN: usize = 16;

/// Longest plaintext, in bytes of UTF-8, whose sealed form still fits the legacy service's
/// [`MAX_VALUE_LEN`] (718). base64 of `n` bytes takes `ceil(4n / 3)` characters, so the
/// largest payload that fits `m` characters is `floor(3m / 4)` bytes.
pub const MAX_PLAIN_LEN: usize = (MAX_VALUE_LEN - PREFIX.len()) * 3 / 4 - NONCE_LEN - TAG_LEN;

/// Why a value cannot be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("an empty value cannot be published")]
    Empty,
    #[error("the value is {len} bytes long; sealed, at most {MAX_PLAIN_LEN} bytes fit the service's limit")]
    TooLong { len: usize },
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// Why a value does not open. Names the key, never the value (which may be anyone's text,
/// e.g. a forged address).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the value of {key} is not sealed: it was not published by this cluster")]
    NotSealed { key: String },
    #[error(
        "the value of {key} is not a well-formed sealed value: it was not sealed by this cluster"
    )]
    Malformed { key: String },
    #[error("the value of {key} was not sealed by this cluster: it does not open with this cluster secret for this PIN and key")]
    DoesNotOpen { key: String },
}

/// The key a member's address is sealed under (binds it to its use): the agent seals its own,
/// the member placeholders and `clusterctx members` open them.
pub const MEMBER_ADDRESS_KEY: &str = "cluster_member_address";

/// Whether `text` has the form of a sealed value: [`PREFIX`], base64url, long enough for a
/// nonce, a tag and one byte. Says nothing about who sealed it: only [`Sealer::open`] does.
pub fn is_sealed(text: &str) -> bool {
    text.strip_prefix(PREFIX)
        .and_then(|body| URL_SAFE_NO_PAD.decode(body).ok())
        .is_some_and(|bytes| bytes.len() > NONCE_LEN + TAG_LEN)
}

/// Seals and opens the values of one cluster (one secret, one PIN). Holds the derived key,
/// not the secret.
pub struct Sealer {
    /// AES-256-GCM under the key derived from the secret and the PIN.
    key: LessSafeKey,
    /// Half of the associated data of every value.
    pin: Pin,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(secret: &ClusterSecret, pin: &Pin) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, &derive_key(secret, pin))
            .expect("derive_key gives exactly the AES-256 key length");
        Self {
            key: LessSafeKey::new(key),
            pin: pin.clone(),
        }
    }

    /// `value` sealed for `key`, under a fresh random nonce.
    pub fn seal(&self, key: &str, value: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| RandomError)?;
        self.seal_with_nonce(key, value, nonce)
    }

    /// The deterministic core of [`Sealer::seal`]. Private: outside of `seal`, only the test
    /// vectors call it, with their fixed nonces; reusing a nonce under one key would give
    /// away the XOR of two plaintexts and allow forgeries.
    fn seal_with_nonce(
        &self,
        key: &str,
        value: &str,
        nonce: [u8; NONCE_LEN],
    ) -> Result<String, SealError> {
        if value.is_empty() {
            return Err(SealError::Empty);
        }
        if value.len() > MAX_PLAIN_LEN {
            return Err(SealError::TooLong { len: value.len() });
        }
        let mut payload = Vec::with_capacity(NONCE_LEN + value.len() + TAG_LEN);
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(value.as_bytes());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(&self.pin, key)),
                &mut payload[NONCE_LEN..],
            )
            .expect("a value of at most MAX_PLAIN_LEN bytes is far within AES-GCM's limit");
        payload.extend_from_slice(tag.as_ref());
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(payload)))
    }

    /// The value that `text` seals for `key`, if it was sealed with this secret for this PIN
    /// and this key.
    pub fn open(&self, key: &str, text: &str) -> Result<String, OpenError> {
        let body = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| OpenError::NotSealed {
                key: key.to_string(),
            })?;
        let malformed = || OpenError::Malformed {
            key: key.to_string(),
        };
        // Strict decoding (no padding, no stray trailing bits): one payload has one text, so
        // a changed character is a changed payload and fails the tag.
        let mut payload = URL_SAFE_NO_PAD.decode(body).map_err(|_| malformed())?;
        if payload.len() <= NONCE_LEN + TAG_LEN {
            return Err(malformed());
        }
        let (nonce, sealed) = payload.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| malformed())?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(associated_data(&self.pin, key)), sealed)
            .map_err(|_| OpenError::DoesNotOpen {
                key: key.to_string(),
            })?;
        // Only a holder of the secret can get here, and our sealing takes only text.
        String::from_utf8(plain.to_vec()).map_err(|_| malformed())
    }
}

/// HKDF-SHA256(salt = PIN, input = secret, info = [`KEY_INFO`]), 32 bytes.
fn derive_key(secret: &ClusterSecret, pin: &Pin) -> [u8; 32] {
    let mut key = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, pin.expose().as_bytes())
        .extract(secret.expose().as_bytes())
        .expand(&[KEY_INFO], &AES_256_GCM)
        .and_then(|okm| okm.fill(&mut key))
        .expect("32 bytes is within HKDF-SHA256's output limit");
    key
}

/// PIN and key name, each as a 4-byte big-endian length and its bytes.
fn associated_data(pin: &Pin, key: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(8 + pin.expose().len() + key.len());
    for field in [pin.expose(), key] {
        let len = u32::try_from(field.len()).expect("PINs and key names are short");
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(field.as_bytes());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Zq3_xT8-vKp2LmN9wRb7sA";
    const PIN: &str = "enico1qq0oey";

    fn sealer(secret: &str, pin: &str) -> Sealer {
        Sealer::new(&ClusterSecret::parse(secret).unwrap(), &Pin::new(pin))
    }

    #[test]
    fn values_round_trip() {
        let sealer = sealer(SECRET, PIN);
        for (key, value) in [
            ("master_ip", "10.10.25.5"),
            ("master_ip", "2001:db8::17"),
            ("master_ready", "yes"),
            ("db_url", "postgres://db.example.org:5432/x"),
            ("name", "ключ-ü"),
        ] {
            let sealed = sealer.seal(key, value).unwrap();
            assert!(is_sealed(&sealed), "{sealed}");
            assert_eq!(sealer.open(key, &sealed).unwrap(), value);
        }
    }

    #[test]
    fn every_seal_has_its_own_nonce() {
        let sealer = sealer(SECRET, PIN);
        let a = sealer.seal("master_ip", "10.0.0.1").unwrap();
        let b = sealer.seal("master_ip", "10.0.0.1").unwrap();
        assert_ne!(a, b);
        assert_ne!(a[..PREFIX.len() + 16], b[..PREFIX.len() + 16]);
    }

    #[test]
    fn a_value_does_not_move_to_another_key_pin_or_secret() {
        let sealed = sealer(SECRET, PIN).seal("master_ip", "10.0.0.1").unwrap();
        let does_not_open = |sealer: Sealer, key: &str| {
            assert_eq!(
                sealer.open(key, &sealed),
                Err(OpenError::DoesNotOpen { key: key.into() })
            );
        };
        does_not_open(sealer(SECRET, PIN), "master_ready");
        does_not_open(sealer(SECRET, PIN), "master_ip_");
        does_not_open(sealer(SECRET, "enico1qq0oez"), "master_ip");
        does_not_open(sealer("Zq3_xT8-vKp2LmN9wRb7sB", PIN), "master_ip");
        does_not_open(sealer(&format!("{SECRET}A"), PIN), "master_ip");
    }

    #[test]
    fn associated_data_is_unambiguous() {
        // Without lengths, ("ab", "c") and ("a", "bc") would be the same bytes.
        assert_ne!(
            associated_data(&Pin::new("ab"), "c"),
            associated_data(&Pin::new("a"), "bc")
        );
        assert_eq!(
            associated_data(&Pin::new("ab"), "c"),
            b"\0\0\0\x02ab\0\0\0\x01c"
        );
    }

    #[test]
    fn any_changed_byte_fails() {
        let sealer = sealer(SECRET, PIN);
        let sealed = sealer.seal("master_ip", "192.168.100.200").unwrap();
        for position in 0..sealed.len() {
            for flip in [0x01u8, 0x20] {
                let mut bytes = sealed.clone().into_bytes();
                bytes[position] ^= flip;
                let tampered = String::from_utf8(bytes).unwrap();
                assert!(
                    sealer.open("master_ip", &tampered).is_err(),
                    "flipping {flip:#x} at {position} still opens: {tampered}"
                );
            }
        }
        // Every bit of the payload itself, re-encoded canonically.
        let payload = URL_SAFE_NO_PAD.decode(&sealed[PREFIX.len()..]).unwrap();
        for bit in 0..payload.len() * 8 {
            let mut changed = payload.clone();
            changed[bit / 8] ^= 1 << (bit % 8);
            let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(changed));
            assert_eq!(
                sealer.open("master_ip", &text),
                Err(OpenError::DoesNotOpen {
                    key: "master_ip".into()
                }),
                "bit {bit}"
            );
        }
        for cut in [PREFIX.len(), PREFIX.len() + 10, sealed.len() - 1] {
            assert!(sealer.open("master_ip", &sealed[..cut]).is_err());
        }
        assert!(sealer.open("master_ip", &format!("{sealed}A")).is_err());
        assert!(sealer.open("master_ip", &format!("{sealed}AA")).is_err());
        assert!(sealer.open("master_ip", &format!("{sealed}=")).is_err());
    }

    #[test]
    fn errors_say_what_and_never_show_the_value() {
        let sealer = sealer(SECRET, PIN);
        for (text, expected) in [
            (
                "10.6.6.6",
                OpenError::NotSealed {
                    key: "master_ip".into(),
                },
            ),
            (
                "ccs1.10.6.6.6",
                OpenError::Malformed {
                    key: "master_ip".into(),
                },
            ),
            (
                "ccs1.MTAuNi42LjY",
                OpenError::Malformed {
                    key: "master_ip".into(),
                },
            ),
        ] {
            let err = sealer.open("master_ip", text).unwrap_err();
            assert_eq!(err, expected);
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("6.6"), "{shown}");
            assert!(shown.contains("master_ip"), "{shown}");
            assert!(shown.contains("not"), "{shown}");
        }
        let other = super::tests::sealer("Zq3_xT8-vKp2LmN9wRb7sB", PIN)
            .seal("master_ip", "10.6.6.6")
            .unwrap();
        let err = sealer.open("master_ip", &other).unwrap_err();
        assert!(
            err.to_string().contains("not sealed by this cluster"),
            "{err}"
        );
    }

    #[test]
    fn sealed_values_are_text_safe_and_fit_the_legacy_limit() {
        let sealer = sealer(SECRET, PIN);
        let largest = "é".repeat(MAX_PLAIN_LEN / 2);
        assert_eq!(largest.len(), MAX_PLAIN_LEN);
        for (key, value) in [
            ("master_ip", "255.255.255.255".to_string()),
            (
                "master_ip",
                "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".to_string(),
            ),
            ("master_ready", "yes".to_string()),
            ("big", "x".repeat(MAX_PLAIN_LEN)),
            ("big", largest),
        ] {
            let sealed = sealer.seal(key, &value).unwrap();
            assert!(sealed.chars().count() <= MAX_VALUE_LEN, "{}", sealed.len());
            assert_eq!(crate::protocol::validate_value(&sealed), Ok(()));
            // The generic rule for values that go into files: a sealed text passes it.
            assert_eq!(crate::context::check_value("other_key", &sealed), Ok(()));
            assert!(sealed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
        }
        assert_eq!(MAX_PLAIN_LEN, 718);
        let full = sealer.seal("big", &"x".repeat(MAX_PLAIN_LEN)).unwrap();
        assert_eq!(full.len(), MAX_VALUE_LEN);
        assert!(matches!(
            sealer.seal("big", &"x".repeat(MAX_PLAIN_LEN + 1)),
            Err(SealError::TooLong { len: 719 })
        ));
        assert!(matches!(sealer.seal("big", ""), Err(SealError::Empty)));
    }

    #[test]
    fn is_sealed_looks_at_the_form_only() {
        let sealed = sealer(SECRET, PIN).seal("k", "v").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!is_sealed("10.0.0.1"));
        assert!(!is_sealed("ccs1."));
        assert!(!is_sealed("ccs1.!!!!"));
        assert!(!is_sealed(&sealed[..sealed.len() - 2]));
        assert!(!is_sealed(&format!("ccs2.{}", &sealed[PREFIX.len()..])));
    }

    #[test]
    fn debug_shows_no_secret_and_no_key() {
        let secret = ClusterSecret::parse(SECRET).unwrap();
        let sealer = Sealer::new(&secret, &Pin::new(PIN));
        let key_hex: String = derive_key(&secret, &Pin::new(PIN))
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let shown = format!("{sealer:?} {sealer:#?} {secret:?} {secret}");
        assert!(!shown.contains(&SECRET[..3]), "{shown}");
        assert!(!shown.contains(PIN), "{shown}");
        assert!(!shown.contains(&key_hex[..8]), "{shown}");
        assert!(shown.contains("Sealer"), "{shown}");
    }

    /// The vectors written down for other implementations, recomputed with their fixed nonces
    /// and opened again.
    #[test]
    fn test_vectors() {
        #[derive(serde::Deserialize)]
        struct Vector {
            secret: String,
            pin: String,
            key: String,
            nonce_hex: String,
            plaintext: String,
            derived_key_hex: String,
            associated_data_hex: String,
            secret_fingerprint: String,
            sealed: String,
        }
        #[derive(serde::Deserialize)]
        struct MustNotOpen {
            why: String,
            secret: String,
            pin: String,
            key: String,
            sealed: String,
        }
        #[derive(serde::Deserialize)]
        struct Vectors {
            vectors: Vec<Vector>,
            must_not_open: Vec<MustNotOpen>,
        }
        fn hex(bytes: &[u8]) -> String {
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
        let file = include_str!("../contrib/sealed-values/vectors.json");
        let vectors: Vectors = serde_json::from_str(file).unwrap();
        assert!(vectors.vectors.len() >= 5);
        for v in vectors.vectors {
            let secret = ClusterSecret::parse(&v.secret).unwrap();
            let pin = Pin::new(v.pin.as_str());
            let nonce: [u8; NONCE_LEN] = (0..NONCE_LEN)
                .map(|i| u8::from_str_radix(&v.nonce_hex[2 * i..2 * i + 2], 16).unwrap())
                .collect::<Vec<_>>()
                .try_into()
                .unwrap();
            assert_eq!(hex(&derive_key(&secret, &pin)), v.derived_key_hex);
            assert_eq!(hex(&associated_data(&pin, &v.key)), v.associated_data_hex);
            assert_eq!(secret.fingerprint(), v.secret_fingerprint);
            let sealer = Sealer::new(&secret, &pin);
            assert_eq!(
                sealer.seal_with_nonce(&v.key, &v.plaintext, nonce).unwrap(),
                v.sealed,
                "{} {}",
                v.pin,
                v.key
            );
            assert_eq!(sealer.open(&v.key, &v.sealed).unwrap(), v.plaintext);
        }
        assert!(vectors.must_not_open.len() >= 5);
        for v in vectors.must_not_open {
            let sealer = sealer(&v.secret, &v.pin);
            assert!(sealer.open(&v.key, &v.sealed).is_err(), "{}", v.why);
        }
    }
}
