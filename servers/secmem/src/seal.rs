//! Sealed blobs: ChaCha20-Poly1305 under a per-instance key, bound to the sealing program's id.
//!
//! **Keys.** Studio gives the server a per-instance secret in its start information
//! (`StartInfo::secret`, derived from the instance seed and the program's name). Two keys are
//! derived from it with HMAC-SHA-256: the sealing key (`"ozone-secmem seal key v1"`) and a nonce
//! key (`"ozone-secmem nonce key v1"`). The same instance (same seed) unseals what it sealed
//! before a reboot; another instance cannot. A zero secret means Studio gave none: sealing is
//! then refused (`Denied`) rather than done under a key everyone knows.
//!
//! **Blob** (see `protocol::secmem::blob`): `version ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The
//! associated data is `"ozone-secmem seal" ‖ version ‖ program id (u64 LE)`: a blob opens only
//! for the program id that sealed it, and only as the format it claims to be. Any change to any
//! byte — or a different program id — fails authentication and is reported as `Tampered`.
//!
//! **Nonces** must never repeat under one key. The key is the same on every boot of an instance,
//! and the server keeps no state across boots, so a counter alone would repeat after a reboot.
//! Each nonce is therefore `HMAC(nonce key, boot entropy ‖ counter ‖ program id ‖ data)`
//! truncated to 96 bits: within a boot the counter makes every input distinct; across boots the
//! boot entropy (RDRAND and the TSC, gathered at start) differs; and even if it did not (a
//! machine without RDRAND replayed under `-icount`), a repeated nonce needs the same counter,
//! program *and* data, so it only shows that the same data was sealed again (the synthetic-IV
//! construction) — it never reuses a nonce for different plaintexts.

use alloc::vec::Vec;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::secmem::{MAX_BLOB, MAX_SEAL_DATA, blob};

/// HMAC-SHA-256 of the concatenation of `parts` under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes keys of any length: this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return [0; 32] };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Overwrite `bytes` with zeros in a way the compiler keeps (for plaintext and key copies).
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, exclusive reference to one byte.
        unsafe { core::ptr::write_volatile(b, 0) };
    }
    core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
}

/// The associated data of a blob sealed by `program`.
fn associated_data(program: u64) -> [u8; blob::AD_PREFIX.len() + 9] {
    let mut ad = [0u8; blob::AD_PREFIX.len() + 9];
    ad[..blob::AD_PREFIX.len()].copy_from_slice(blob::AD_PREFIX);
    ad[blob::AD_PREFIX.len()] = blob::VERSION;
    ad[blob::AD_PREFIX.len() + 1..].copy_from_slice(&program.to_le_bytes());
    ad
}

/// Seals and unseals.
pub struct Sealer {
    aead: ChaCha20Poly1305,
    nonce_key: [u8; 32],
    entropy: [u8; 32],
    counter: u64,
}

impl Sealer {
    /// A sealer under the instance `secret` with this boot's `entropy`; `None` for a zero secret.
    pub fn new(secret: &[u8; 32], entropy: [u8; 32]) -> Option<Sealer> {
        if secret.iter().all(|&b| b == 0) {
            return None;
        }
        let mut key = hmac_sha256(secret, &[b"ozone-secmem seal key v1"]);
        let aead = ChaCha20Poly1305::new(&Key::from(key));
        wipe(&mut key);
        let nonce_key = hmac_sha256(secret, &[b"ozone-secmem nonce key v1"]);
        Some(Sealer { aead, nonce_key, entropy, counter: 0 })
    }

    /// The next nonce, for `program` sealing `data`.
    fn next_nonce(&mut self, program: u64, data: &[u8]) -> Result<[u8; blob::NONCE_LEN], ServiceError> {
        let c = self.counter;
        self.counter = c.checked_add(1).ok_or(ServiceError::Busy)?;
        let h = hmac_sha256(&self.nonce_key, &[&self.entropy, &c.to_le_bytes(), &program.to_le_bytes(), data]);
        let mut n = [0u8; blob::NONCE_LEN];
        n.copy_from_slice(&h[..blob::NONCE_LEN]);
        Ok(n)
    }

    /// Seal `data` (at most [`MAX_SEAL_DATA`] bytes) for `program`.
    pub fn seal(&mut self, program: u64, data: &[u8]) -> Result<Vec<u8>, ServiceError> {
        if data.len() > MAX_SEAL_DATA {
            return Err(ServiceError::InvalidArgument);
        }
        let nonce = self.next_nonce(program, data)?;
        let mut out = Vec::with_capacity(data.len() + blob::OVERHEAD);
        out.push(blob::VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(data);
        let body = &mut out[1 + blob::NONCE_LEN..];
        let tag = self
            .aead
            .encrypt_inout_detached(&Nonce::from(nonce), &associated_data(program), body.into())
            .map_err(|_| ServiceError::InvalidArgument)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The data in `blob`, if `program` sealed it and nothing changed; `Tampered` otherwise,
    /// `InvalidArgument` for a blob longer than any seal makes.
    pub fn unseal(&self, program: u64, blob: &[u8]) -> Result<Vec<u8>, ServiceError> {
        if blob.len() > MAX_BLOB {
            return Err(ServiceError::InvalidArgument);
        }
        // Too short to be a blob, or another format: no authentic blob looks like this.
        if blob.len() < blob::OVERHEAD || blob[0] != blob::VERSION {
            return Err(ServiceError::Tampered);
        }
        let (nonce, rest) = blob[1..].split_at(blob::NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - blob::TAG_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| ServiceError::Tampered)?;
        let tag = Tag::try_from(tag).map_err(|_| ServiceError::Tampered)?;
        let mut data = Vec::from(body);
        match self.aead.decrypt_inout_detached(&nonce, &associated_data(program), data.as_mut_slice().into(), &tag) {
            Ok(()) => Ok(data),
            Err(_) => {
                // Unauthenticated plaintext is never handed out (the library decrypts only after
                // checking the tag, but wipe regardless).
                wipe(&mut data);
                Err(ServiceError::Tampered)
            }
        }
    }

    /// Seals made so far on this boot.
    pub fn count(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec;

    const SECRET: [u8; 32] = [7; 32];
    const ENTROPY: [u8; 32] = [0x5a; 32];

    fn sealer() -> Sealer {
        Sealer::new(&SECRET, ENTROPY).unwrap()
    }

    #[test]
    fn round_trip() {
        let mut s = sealer();
        for len in [0, 1, 15, 16, 17, 64, 300, MAX_SEAL_DATA] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let b = s.seal(42, &data).unwrap();
            assert_eq!(b.len(), len + blob::OVERHEAD);
            assert_eq!(b[0], blob::VERSION);
            if len >= 16 {
                assert!(!b.windows(16).any(|w| w == &data[..16]), "plaintext visible in the blob");
            }
            assert_eq!(s.unseal(42, &b).unwrap(), data);
        }
    }

    #[test]
    fn every_flipped_byte_and_bit_is_detected() {
        let mut s = sealer();
        let b = s.seal(42, b"the agent's api token").unwrap();
        for i in 0..b.len() {
            for bit in 0..8 {
                let mut t = b.clone();
                t[i] ^= 1 << bit;
                assert_eq!(s.unseal(42, &t), Err(ServiceError::Tampered), "byte {i} bit {bit}");
            }
            let mut t = b.clone();
            t[i] = !t[i];
            assert_eq!(s.unseal(42, &t), Err(ServiceError::Tampered), "byte {i} inverted");
        }
        // Truncated, extended, empty.
        for n in 0..b.len() {
            assert_eq!(s.unseal(42, &b[..n]), Err(ServiceError::Tampered), "truncated to {n}");
        }
        let mut longer = b.clone();
        longer.push(0);
        assert_eq!(s.unseal(42, &longer), Err(ServiceError::Tampered));
        assert_eq!(s.unseal(42, &b).unwrap(), b"the agent's api token");
    }

    #[test]
    fn another_program_cannot_unseal() {
        let mut s = sealer();
        let b = s.seal(42, b"mine").unwrap();
        for other in [0, 1, 41, 43, 42 | 1 << 63, u64::MAX] {
            assert_eq!(s.unseal(other, &b), Err(ServiceError::Tampered), "program {other}");
        }
    }

    #[test]
    fn another_instance_cannot_unseal_but_the_same_one_can_after_a_reboot() {
        let b = sealer().seal(42, b"kept across boots").unwrap();
        let other = Sealer::new(&[8; 32], ENTROPY).unwrap();
        assert_eq!(other.unseal(42, &b), Err(ServiceError::Tampered));
        let rebooted = Sealer::new(&SECRET, [0x11; 32]).unwrap();
        assert_eq!(rebooted.unseal(42, &b).unwrap(), b"kept across boots");
    }

    #[test]
    fn nonces_are_unique() {
        let mut s = sealer();
        let mut seen = BTreeSet::new();
        let nonce = |b: &[u8]| -> [u8; 12] { b[1..13].try_into().unwrap() };
        // The same data by the same program many times: a new nonce each time.
        for _ in 0..2000 {
            assert!(seen.insert(nonce(&s.seal(42, b"same").unwrap())));
        }
        // Different programs and data.
        for p in 0..200u64 {
            assert!(seen.insert(nonce(&s.seal(p, &p.to_le_bytes()).unwrap())));
        }
        assert_eq!(s.count(), 2200);
        // A reboot with other entropy starts the counter again but not the nonces.
        let mut r = Sealer::new(&SECRET, [0x11; 32]).unwrap();
        for _ in 0..2000 {
            assert!(seen.insert(nonce(&r.seal(42, b"same").unwrap())), "nonce repeated across boots");
        }
        // A reboot with the *same* entropy (no RDRAND, deterministic TSC): nonces repeat only for
        // the same data, so different data never shares a nonce.
        let mut same = sealer();
        assert!(seen.insert(nonce(&same.seal(42, b"different").unwrap())));
    }

    #[test]
    fn limits_and_no_secret() {
        let mut s = sealer();
        assert_eq!(s.seal(1, &vec![0; MAX_SEAL_DATA + 1]), Err(ServiceError::InvalidArgument));
        assert_eq!(s.unseal(1, &vec![blob::VERSION; MAX_BLOB + 1]), Err(ServiceError::InvalidArgument));
        assert!(Sealer::new(&[0; 32], ENTROPY).is_none());
    }

    #[test]
    fn chacha20_poly1305_matches_rfc_8439() {
        // RFC 8439 §2.8.2.
        let key: [u8; 32] = core::array::from_fn(|i| 0x80 + i as u8);
        let nonce = [0x07, 0, 0, 0, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47];
        let ad = [0x50, 0x51, 0x52, 0x53, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7];
        let mut text = *b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aead = ChaCha20Poly1305::new(&Key::from(key));
        let tag = aead.encrypt_inout_detached(&Nonce::from(nonce), &ad, (&mut text[..]).into()).unwrap();
        assert_eq!(&text[..8], &[0xd3, 0x1a, 0x8d, 0x34, 0x64, 0x8e, 0x60, 0xdb]);
        assert_eq!(
            tag[..],
            [0x1a, 0xe1, 0x0b, 0x59, 0x4f, 0x09, 0xe2, 0x6a, 0x7e, 0x90, 0x2e, 0xcb, 0xd0, 0x60, 0x06, 0x91]
        );
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231 test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(mac[..4], [0x5b, 0xdc, 0xc1, 0x46]);
        assert_eq!(mac[28..], [0x64, 0xec, 0x38, 0x43]);
    }
}
