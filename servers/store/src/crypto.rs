//! Keys and block sealing.
//!
//! Keys come from the 32-byte instance secret with HKDF-SHA256 (salt `ozone-store v1`): the
//! XChaCha20-Poly1305 key every block is sealed with, and a 16-byte key check value written in
//! the clear in the superblocks so that a wrong secret is told apart from damage.
//!
//! A sealed block is `nonce (24) ‖ ciphertext ‖ tag (16)`. The nonce is `salt (16) ‖ counter
//! (8, little-endian)`: the salt is chosen at every open from the caller's entropy, the counter
//! comes from a range reserved durably in the superblock before any of it is used, so a
//! (key, nonce) pair never seals two different plaintexts (see `store`). Under `cargo test` every
//! (key, nonce) used is recorded with a digest of what it sealed, and a reuse for something
//! else panics the test.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::block::BLOCK;

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of a tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed block adds to its payload.
pub const OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Payload bytes in one sealed block.
pub const PAYLOAD: usize = BLOCK - OVERHEAD;

/// The keys of one store.
pub struct Keys {
    aead: XChaCha20Poly1305,
    /// The key check value: proves the secret matches without revealing anything of the key.
    pub check: [u8; 16],
}

impl Keys {
    /// Derive the keys from the instance secret (`None` only if HKDF refused the lengths,
    /// which are far below its limit of 255 × 32 bytes).
    pub fn derive(secret: &[u8; 32]) -> Option<Keys> {
        let hk = Hkdf::<Sha256>::new(Some(b"ozone-store v1"), secret);
        let mut key = [0u8; 32];
        let mut check = [0u8; 16];
        let ok = hk.expand(b"block key", &mut key).is_ok() && hk.expand(b"key check", &mut check).is_ok();
        let aead = XChaCha20Poly1305::new(&Key::from(key));
        key.fill(0);
        ok.then_some(Keys { aead, check })
    }

    /// Seal `payload` into `out` (`nonce ‖ ciphertext ‖ tag`) under `nonce`, bound to `ad`.
    /// `None` if `out` is not `payload.len() + OVERHEAD` bytes long or the cipher refuses.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], ad: &[u8], payload: &[u8], out: &mut [u8]) -> Option<()> {
        if out.len() != payload.len() + OVERHEAD {
            return None;
        }
        #[cfg(test)]
        record::used(&self.check, &nonce, ad, payload);
        let (n, rest) = out.split_at_mut(NONCE_LEN);
        n.copy_from_slice(&nonce);
        let (body, tag) = rest.split_at_mut(payload.len());
        body.copy_from_slice(payload);
        let t = self.aead.encrypt_inout_detached(&XNonce::from(nonce), ad, body.into()).ok()?;
        tag.copy_from_slice(&t);
        Some(())
    }

    /// Open a sealed `input` (`nonce ‖ ciphertext ‖ tag`) bound to `ad` into `out`
    /// (`input.len() - OVERHEAD` bytes); the nonce it carries. `None` if it fails authentication
    /// (then `out` holds nothing of the plaintext).
    pub fn open(&self, ad: &[u8], input: &[u8], out: &mut [u8]) -> Option<[u8; NONCE_LEN]> {
        if input.len() != out.len() + OVERHEAD {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&input[..NONCE_LEN]);
        let body = &input[NONCE_LEN..input.len() - TAG_LEN];
        let tag = Tag::try_from(&input[input.len() - TAG_LEN..]).ok()?;
        out.copy_from_slice(body);
        match self.aead.decrypt_inout_detached(&XNonce::from(nonce), ad, (&mut *out).into(), &tag) {
            Ok(()) => Some(nonce),
            Err(_) => {
                out.fill(0);
                None
            }
        }
    }
}

/// A nonce from a salt and a counter.
pub fn nonce(salt: &[u8; 16], counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..16].copy_from_slice(salt);
    n[16..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// The counter of a nonce.
pub fn counter_of(nonce: &[u8; NONCE_LEN]) -> u64 {
    let mut c = [0u8; 8];
    c.copy_from_slice(&nonce[16..]);
    u64::from_le_bytes(c)
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The record of every (key, nonce) sealed with, per test thread.
#[cfg(test)]
pub mod record {
    use std::cell::RefCell;
    use std::collections::HashMap;

    type Seen = HashMap<([u8; 16], [u8; 24]), [u8; 32]>;

    std::thread_local! {
        static SEEN: RefCell<Seen> = RefCell::new(HashMap::new());
        static COUNT: RefCell<u64> = const { RefCell::new(0) };
    }

    /// Note that `nonce` sealed `ad`/`payload` under the key checked by `check`; panic if it
    /// sealed anything else before.
    pub fn used(check: &[u8; 16], nonce: &[u8; 24], ad: &[u8], payload: &[u8]) {
        let digest = super::sha256(&[&(ad.len() as u64).to_le_bytes(), ad, payload]);
        SEEN.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(old) = s.insert((*check, *nonce), digest) {
                assert_eq!(old, digest, "a (key, nonce) pair sealed two different plaintexts");
            }
        });
        COUNT.with(|c| *c.borrow_mut() += 1);
    }

    /// How many seals this thread made, and how many distinct (key, nonce) pairs.
    pub fn counts() -> (u64, usize) {
        (COUNT.with(|c| *c.borrow()), SEEN.with(|s| s.borrow().len()))
    }
}
