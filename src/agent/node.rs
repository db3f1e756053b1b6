//! This node's name in its cluster's member list: HMAC-SHA256, keyed by a random id kept in
//! the state directory, of the PIN, written as 16 of `[a-z0-9]`. The same state directory and
//! PIN give the same name on every boot (a reboot registers the same member again); two state
//! directories on one host give two names; the name says nothing of the host, and without the
//! id nobody can tell that two clusters' names belong to one node.

use std::path::Path;

use anyhow::Context;
use ring::rand::SecureRandom;

use crate::{context::write_atomic, protocol::NODE_LEN, secret::Pin};

const NODE_ID_FILE: &str = "node-id";
const ID_BYTES: usize = 32;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The node name for `pin`, creating the random id in `state_dir` on first use (0600).
pub fn node_name(state_dir: &Path, pin: &Pin) -> anyhow::Result<String> {
    Ok(name_from_id(&node_id(state_dir)?, pin.expose()))
}

/// The node name for `pin` if the id already exists; creates nothing (for `clusterctx check`).
pub fn existing_node_name(state_dir: &Path, pin: &Pin) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(NODE_ID_FILE)).ok()?;
    let id = decode_hex(text.trim()).filter(|id| id.len() == ID_BYTES)?;
    Some(name_from_id(&id, pin.expose()))
}

/// The id in `state_dir`, created if absent or unusable (64 hex digits).
fn node_id(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = state_dir.join(NODE_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = decode_hex(text.trim()).filter(|id| id.len() == ID_BYTES) {
            return Ok(id);
        }
        tracing::warn!("{} is damaged; making a new node id", path.display());
    }
    let mut id = vec![0u8; ID_BYTES];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("failed to create state directory {}", state_dir.display()))?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    write_atomic(&path, format!("{hex}\n").as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(id)
}

fn name_from_id(id: &[u8], pin: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, id);
    let tag = ring::hmac::sign(&key, format!("clusterctx node name\0{pin}").as_bytes());
    // 16 bytes of the tag, each reduced mod 36: a slight bias, of no consequence for a name.
    tag.as_ref()[..NODE_LEN]
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = crate::protocol::hex_digit(pair[0])?;
            let lo = crate::protocol::hex_digit(pair[1])?;
            Some(hi << 4 | lo)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::is_valid_node;

    #[test]
    fn stable_per_state_dir_and_pin_distinct_otherwise() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let pin = Pin::new("enico1qq0oey");
        let first = node_name(a.path(), &pin).unwrap();
        assert!(is_valid_node(&first), "{first}");
        // A reboot: the same id is read back.
        assert_eq!(node_name(a.path(), &pin).unwrap(), first);
        assert_eq!(existing_node_name(a.path(), &pin), Some(first.clone()));
        assert_eq!(existing_node_name(b.path(), &pin), None);
        // Another state directory on the same host.
        assert_ne!(node_name(b.path(), &pin).unwrap(), first);
        // Another PIN.
        let other = node_name(a.path(), &Pin::new("aaaaaaaaaaaa")).unwrap();
        assert!(is_valid_node(&other));
        assert_ne!(other, first);
    }

    #[test]
    fn reveals_neither_the_id_nor_the_pin_and_the_id_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pin = Pin::new("enico1qq0oey");
        let name = node_name(dir.path(), &pin).unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        let id = std::fs::read_to_string(&path).unwrap();
        assert!(!id.contains(&name) && !name.contains("enico"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        // A damaged id is replaced, not trusted.
        std::fs::write(&path, "zz").unwrap();
        let renamed = node_name(dir.path(), &pin).unwrap();
        assert!(is_valid_node(&renamed));
        assert_ne!(renamed, name);
    }
}
