//! Per-instance values derived from the instance seed (32 bytes in the initrd): the protocol key
//! that numbers methods, the layout key that places programs, and secrets for servers. Each is
//! ChaCha20's keystream under the seed with a nonce naming the purpose — a PRF, so knowing one
//! derived value says nothing about the seed or the others.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

use ozone_agent_sdk::protocol::fnv1a;

/// 32 bytes for `purpose` (and `name`, e.g. a program) under `seed`.
pub fn derive(seed: &[u8; 32], purpose: &str, name: &str) -> [u8; 32] {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&fnv1a(purpose.as_bytes()).to_le_bytes());
    nonce[8..].copy_from_slice(&(fnv1a(name.as_bytes()) as u32).to_le_bytes());
    let mut out = [0u8; 32];
    let mut c = ChaCha20::new(seed.into(), &nonce.into());
    c.apply_keystream(&mut out);
    out
}

/// A 64-bit value for `purpose`.
pub fn derive_u64(seed: &[u8; 32], purpose: &str) -> u64 {
    let b = derive(seed, purpose, "");
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_stable_and_separate() {
        let s1 = [1u8; 32];
        let s2 = [2u8; 32];
        assert_eq!(derive(&s1, "a", "x"), derive(&s1, "a", "x"));
        assert_ne!(derive(&s1, "a", "x"), derive(&s2, "a", "x"));
        assert_ne!(derive(&s1, "a", "x"), derive(&s1, "b", "x"));
        assert_ne!(derive(&s1, "a", "x"), derive(&s1, "a", "y"));
        assert_ne!(derive_u64(&s1, "protocol"), 0);
    }
}
