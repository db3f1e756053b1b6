//! What crosses the wire between agents and the PIN service, shared by both sides so they
//! cannot drift apart. The legacy shapes are in PROTOCOL.md part 1; ours in part 2.

use serde::{Deserialize, Serialize};

/// Root of the REST API. Every cluster lives under `{API_PREFIX}/<pin>`.
pub const API_PREFIX: &str = "/api/v1/clusters";

/// Response header by which our service names itself and what it supports, so an agent knows
/// whether long-poll and atomic create are there. Legacy servers never send it.
pub const SERVICE_HEADER: &str = "x-clusterctx-service";

/// Features announced in [`SERVICE_HEADER`], space separated after `clusterctx/<version>`.
pub const FEATURE_LONG_POLL: &str = "long-poll";
pub const FEATURE_ATOMIC_CREATE: &str = "atomic-create";

/// The value our service sends in [`SERVICE_HEADER`].
pub fn service_header_value() -> String {
    format!(
        "clusterctx/{} {FEATURE_LONG_POLL} {FEATURE_ATOMIC_CREATE}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Length of a PIN: 12 characters of `[a-z0-9]`, about 62 bits.
pub const PIN_LEN: usize = 12;
/// Longest key name the legacy service accepted.
pub const MAX_KEY_LEN: usize = 100;
/// Longest value the legacy service accepted (values must also be non-empty).
pub const MAX_VALUE_LEN: usize = 1000;
/// Most members a service may be configured to keep per cluster (`serve --max-members`): a
/// list of that many sealed addresses of [`MAX_VALUE_LEN`] must still fit a client's answer cap.
pub const MAX_MEMBERS: u64 = 4096;
/// Upper bound of the long-poll `?wait=` parameter, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// The key a master publishes its address under.
pub const KEY_MASTER_IP: &str = "master_ip";
/// The key a master publishes once its own boot has finished.
pub const KEY_MASTER_READY: &str = "master_ready";
/// The member placeholders' values (part 4, "Membership"): made by the agent from the member
/// list, never stored at the service. Every address, comma-separated, master first.
pub const KEY_CLUSTER_MEMBERS: &str = "cluster_members";
/// The workers' addresses, comma-separated, in joining order (empty for a cluster of one).
pub const KEY_CLUSTER_WORKERS: &str = "cluster_workers";
/// The number of members the lists were filled at (`cvm_cluster_size`).
pub const KEY_CLUSTER_SIZE: &str = "cluster_size";

/// One stored item, as the legacy service renders it in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyItem {
    pub key: String,
    pub value: String,
}

/// The length of a member's node name, all of `[a-z0-9]`.
pub const NODE_LEN: usize = 16;

/// Whether `node` is a member's node name: exactly [`NODE_LEN`] of `[a-z0-9]`.
pub fn is_valid_node(node: &str) -> bool {
    node.len() == NODE_LEN
        && node
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `address` may be a member's address: an IP address, or a sealed one (which the
/// service cannot read, so it checks the form only), of at most [`MAX_VALUE_LEN`] bytes.
pub fn is_valid_member_address(address: &str) -> bool {
    address.len() <= MAX_VALUE_LEN
        && (address.parse::<std::net::IpAddr>().is_ok() || crate::seal::is_sealed(address))
}

/// One member of a cluster, as `GET .../members` lists it (ours, not legacy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberItem {
    pub node: String,
    /// `master` or `worker`.
    pub role: String,
    /// An IP address, or a sealed value only the cluster's nodes can open.
    pub address: String,
    /// RFC 3339, UTC: the first registration.
    pub joined_at: String,
    /// RFC 3339, UTC: the latest registration.
    pub last_seen: String,
}

/// A member's registration body: `PUT .../members/<node>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRegistration {
    pub address: String,
    pub role: String,
}

/// A cluster as the service describes it. `pin` and `creation_time` are the legacy fields;
/// the rest are ours and optional so that legacy answers still parse. Its `Debug` redacts the
/// PIN and the admin token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub pin: String,
    /// RFC 3339.
    pub creation_time: String,
    /// RFC 3339; absent from legacy servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Only in the answer to the creating POST: needed to replace or delete keys later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

impl std::fmt::Debug for ClusterInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterInfo")
            .field("pin", &crate::secret::redact(&self.pin))
            .field("creation_time", &self.creation_time)
            .field("expires_at", &self.expires_at)
            .field(
                "admin_token",
                &self.admin_token.as_deref().map(crate::secret::redact),
            )
            .finish()
    }
}

/// The JSON body of every error answer from our service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Whether `pin` has the form of a PIN. Checked on both sides: the client refuses to put a
/// malformed PIN into a URL, the server answers 404 without touching the store.
pub fn is_valid_pin(pin: &str) -> bool {
    pin.len() == PIN_LEN
        && pin
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Why a key name or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("key name is empty")]
    EmptyKey,
    #[error("key name is longer than {MAX_KEY_LEN} characters")]
    KeyTooLong,
    #[error("key name may only contain A-Z, a-z, 0-9, '_' and '-'")]
    KeyCharacters,
    #[error("value is empty")]
    EmptyValue,
    #[error("value is longer than {MAX_VALUE_LEN} characters")]
    ValueTooLong,
}

/// Key names: `[A-Za-z0-9_-]`, 1 to [`MAX_KEY_LEN`] characters.
pub fn validate_key_name(key: &str) -> Result<(), ItemError> {
    if key.is_empty() {
        return Err(ItemError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(ItemError::KeyTooLong);
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ItemError::KeyCharacters);
    }
    Ok(())
}

/// Values: 1 to [`MAX_VALUE_LEN`] characters (counted as characters, like Django's `max_length`).
/// The service stores any such text; the agent is stricter before writing a value into a file
/// (see `context::check_value`).
pub fn validate_value(value: &str) -> Result<(), ItemError> {
    if value.is_empty() {
        return Err(ItemError::EmptyValue);
    }
    if value.chars().count() > MAX_VALUE_LEN {
        return Err(ItemError::ValueTooLong);
    }
    Ok(())
}

/// The legacy text rendering of one item: `master_ip: 10.10.25.5`.
pub fn render_text(key: &str, value: &str) -> String {
    format!("{key}: {value}")
}

/// The value of one hexadecimal digit (either case): the `%XX` of a form body, the `=XX` of
/// quoted-printable.
pub fn hex_digit(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_sixteen_lowercase_letters_and_digits() {
        assert!(is_valid_node("0123456789abcdef"));
        assert!(is_valid_node("zzzzzzzzzzzzzzzz"));
        for bad in [
            "",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789ABCDEF",
            "0123456789abcde-",
            "0123456789abcde/",
            "0123456789abcd\u{e9}",
        ] {
            assert!(!is_valid_node(bad), "{bad:?}");
        }
    }

    #[test]
    fn member_addresses_are_ip_addresses_or_sealed() {
        for good in ["10.0.0.1", "127.0.0.1", "::1", "fe80::1", "2001:db8::42"] {
            assert!(is_valid_member_address(good), "{good}");
        }
        let secret =
            crate::secret::ClusterSecret::parse("a-cluster-secret-for-this-test0").unwrap();
        let sealer = crate::seal::Sealer::new(&secret, &crate::secret::Pin::new("enico1qq0oey"));
        let sealed = sealer.seal("address", "10.0.0.1").unwrap();
        assert!(is_valid_member_address(&sealed));
        for bad in [
            "",
            "10.0.0",
            "10.0.0.256",
            " 10.0.0.1",
            "10.0.0.1\n",
            "host.example.org",
            "10.0.0.1:22",
            "ccs1.",
            "ccs1.!!!!",
        ] {
            assert!(!is_valid_member_address(bad), "{bad:?}");
        }
        assert!(!is_valid_member_address(&"1".repeat(MAX_VALUE_LEN + 1)));
    }

    #[test]
    fn cluster_info_debug_shows_neither_pin_nor_token() {
        let info = ClusterInfo {
            pin: "enico1qq0oey".into(),
            creation_time: "2026-12-02T06:00:00Z".into(),
            expires_at: None,
            admin_token: Some("tok3n-that-must-not-leak".into()),
        };
        let shown = format!("{info:?}");
        assert!(!shown.contains("enico1qq0oey"), "{shown}");
        assert!(!shown.contains("tok3n-that-must-not-leak"), "{shown}");
        assert!(shown.contains("2026-12-02T06:00:00Z"), "{shown}");
    }

    #[test]
    fn pins() {
        assert!(is_valid_pin("enico1qq0oey"));
        assert!(!is_valid_pin("enico1qq0oe"));
        assert!(!is_valid_pin("Enico1qq0oey"));
        assert!(!is_valid_pin("enico1qq0oe/"));
        assert!(!is_valid_pin(""));
    }

    #[test]
    fn key_names() {
        assert_eq!(validate_key_name("master_ip"), Ok(()));
        assert_eq!(validate_key_name("A-b_9"), Ok(()));
        assert_eq!(validate_key_name(""), Err(ItemError::EmptyKey));
        assert_eq!(validate_key_name("a b"), Err(ItemError::KeyCharacters));
        assert_eq!(validate_key_name("ключ"), Err(ItemError::KeyCharacters));
        assert_eq!(validate_key_name(&"k".repeat(100)), Ok(()));
        assert_eq!(
            validate_key_name(&"k".repeat(101)),
            Err(ItemError::KeyTooLong)
        );
    }

    #[test]
    fn values_count_characters() {
        assert_eq!(validate_value(""), Err(ItemError::EmptyValue));
        assert_eq!(validate_value(&"é".repeat(1000)), Ok(()));
        assert_eq!(
            validate_value(&"x".repeat(1001)),
            Err(ItemError::ValueTooLong)
        );
    }

    #[test]
    fn text_rendering() {
        assert_eq!(
            render_text("master_ip", "10.10.25.5"),
            "master_ip: 10.10.25.5"
        );
    }

    #[test]
    fn hex_digits() {
        for (b, v) in [(b'0', 0), (b'9', 9), (b'a', 10), (b'F', 15)] {
            assert_eq!(hex_digit(b), Some(v));
        }
        for b in [b'g', b'G', b'+', b'-', b' ', 0xff] {
            assert_eq!(hex_digit(b), None);
        }
    }
}
