//! The request/response interface `sc-rr` that `sc-rr-server` serves: a little of everything a
//! service does — echo bytes, add numbers, hash with a chosen amount of work, keep a few values.
//! Its clients are `sc-rr-client`, the last pipeline stage, `sc-bursty`, `sc-mimicry`, and the
//! hostile programs that flood and fuzz it.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The interface's name: `provides` of `sc-rr-server`, and what its clients look up.
pub const INTERFACE: &str = "sc-rr";

/// The most values the server keeps.
pub const MAX_KEYS: usize = 64;

/// The most hash rounds one request may ask for.
pub const MAX_ROUNDS: u32 = 256;

/// The request of `HASH`: bytes and how many rounds to hash them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hash {
    pub data: Vec<u8>,
    pub rounds: u32,
}

/// The request of `PUT`: a value to keep under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: u32,
    pub value: u64,
}

/// The answer of `STATS`: what the server has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Requests answered (this one included).
    pub served: u64,
    /// Values kept.
    pub keys: u32,
}

ozone_agent_sdk::methods! {
    /// `Vec<u8>` → the same bytes.
    ECHO = 0: Vec<u8> => Vec<u8>;
    /// `Vec<u64>` → their sum (wrapping).
    SUM = 1: Vec<u64> => u64;
    /// [`Hash`] → the FNV-1a hash of the data, rehashed `rounds` times ([`hash`]);
    /// `InvalidArgument` above [`MAX_ROUNDS`].
    HASH = 2: Hash => u64;
    /// [`Put`] → the value it replaces; `QuotaExceeded` for a new key beyond [`MAX_KEYS`].
    PUT = 3: Put => Option<u64>;
    /// `u32` key → its value.
    GET = 4: u32 => Option<u64>;
    /// `()` → [`Stats`].
    STATS = 5: () => Stats;
}

/// FNV-1a of `data`, then `rounds` more rounds over the previous hash's bytes: work the client
/// chooses.
pub fn hash(data: &[u8], rounds: u32) -> u64 {
    fn fnv(h: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3))
    }
    let mut h = fnv(0xcbf2_9ce4_8422_2325, data);
    for _ in 0..rounds {
        h = fnv(h, &h.to_le_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fnv1a_and_rounds_change_it() {
        assert_eq!(hash(b"", 0), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a", 0), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(hash(b"a", 1), hash(b"a", 0));
        assert_eq!(hash(b"abc", 7), hash(b"abc", 7));
    }
}
