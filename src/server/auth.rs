//! PINs and admin tokens: drawn from the OS random source, tokens stored only as SHA-256
//! digests and checked in constant time.

use axum::http::{header, HeaderMap};
use base64::Engine;

use crate::protocol::PIN_LEN;

const PIN_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Largest multiple of 36 that fits a byte: bytes at or above it are drawn again, so every
/// symbol is equally likely (`b % 36` on all 256 values would favour the first 4 symbols).
const PIN_BYTE_LIMIT: u8 = 252;
/// 256 bits: guessing is hopeless, and the digest of a token reveals nothing usable.
const TOKEN_BYTES: usize = 32;

/// The OS random source failed (it does not, on any supported system, but we do not panic).
#[derive(Debug, thiserror::Error)]
#[error("the OS random source failed: {0}")]
pub struct RandomError(getrandom::Error);

/// A fresh PIN: [`PIN_LEN`] characters of `[a-z0-9]`, uniformly distributed.
pub fn new_pin() -> Result<String, RandomError> {
    let mut pin = String::with_capacity(PIN_LEN);
    let mut buf = [0u8; 32];
    while pin.len() < PIN_LEN {
        getrandom::fill(&mut buf).map_err(RandomError)?;
        for &byte in buf.iter().filter(|&&b| b < PIN_BYTE_LIMIT) {
            pin.push(char::from(PIN_ALPHABET[usize::from(byte % 36)]));
            if pin.len() == PIN_LEN {
                break;
            }
        }
    }
    Ok(pin)
}

/// A fresh admin token: 32 random bytes, base64url without padding (43 characters).
pub fn new_token() -> Result<String, RandomError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(RandomError)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps instead of the token: a stolen database does not hand out write access.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Whether `presented` is the token whose digest is `stored`. The comparison of the digests
/// takes the same time wherever they differ. (ring's own `constant_time` module is deprecated
/// as internal, so the fold is written out here; comparing digests rather than tokens means a
/// timing difference could only ever reveal bits of a SHA-256 output anyway.)
pub fn token_matches(stored: &[u8; 32], presented: &str) -> bool {
    let candidate = hash_token(presented);
    let diff = stored
        .iter()
        .zip(candidate.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::is_valid_pin;

    #[test]
    fn pins_are_well_formed_and_differ() {
        let a = new_pin().unwrap();
        let b = new_pin().unwrap();
        assert!(is_valid_pin(&a), "{a}");
        assert!(is_valid_pin(&b), "{b}");
        assert_ne!(a, b);
    }

    #[test]
    fn pin_symbols_are_roughly_uniform() {
        // 36 symbols, 36,000 draws: each expected 1000 times. Modulo bias on raw bytes would
        // give the first four symbols ~1.14x the others; a 20% band catches a gross skew
        // without flaking (the standard deviation is ~31).
        let mut counts = [0u32; 36];
        for _ in 0..3000 {
            for b in new_pin().unwrap().bytes() {
                let index = PIN_ALPHABET.iter().position(|&s| s == b).unwrap();
                counts[index] += 1;
            }
        }
        for (symbol, &count) in PIN_ALPHABET.iter().zip(&counts) {
            assert!(
                (850..1150).contains(&count),
                "symbol {} drawn {count} times",
                char::from(*symbol)
            );
        }
    }

    #[test]
    fn tokens_check_against_their_digest_only() {
        let token = new_token().unwrap();
        assert_eq!(token.len(), 43);
        let stored = hash_token(&token);
        assert!(token_matches(&stored, &token));
        assert!(!token_matches(&stored, &new_token().unwrap()));
        assert!(!token_matches(&stored, ""));
    }

    #[test]
    fn bearer_header_parsing() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }
}
