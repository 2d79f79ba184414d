//! Studio's cognition: how Studio learns what each program normally does and notices when it
//! stops doing it.
//!
//! The kernel writes one [`ozone_abi::trace::Record`] per syscall and fault of a traced thread.
//! From there:
//!
//! 1. [`token`] turns each record into a token of a small vocabulary (and recognises the phase
//!    markers scenario programs emit);
//! 2. [`window`] keeps each program's last [`window::WINDOW`] tokens and summarises a window in
//!    a few named features (what the explanations of a decision are made of);
//! 3. two detectors score the stream: [`stide`], the classical baseline (Forrest et al.'s
//!    sequence matching), and [`model`], the forward pass of a small learned model whose weights
//!    a host trainer produces;
//! 4. [`adapt`] fits a detector's threshold to each program instance during its warm-up and
//!    remembers the windows it (or a human) accepted; [`detect`] is the model's detector for one
//!    program (window scores smoothed over a frame, judged by the adapted threshold);
//! 5. [`respond`] turns anomalous windows into the graded-response ladder (alert, throttle,
//!    revoke, suspend, kill), one step at a time.
//!
//! Everything here is pure computation on values: no I/O, no clock, no capabilities. Studio
//! feeds it records and carries out its decisions. The crate is `no_std` with `alloc` and builds
//! for the bare target; the `std` feature adds the host's side: `corpus`, the recorded traces
//! read back, split and labelled for training and evaluation.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod adapt;
#[cfg(feature = "std")]
pub mod corpus;
pub mod detect;
#[cfg(feature = "std")]
pub mod eval;
pub mod model;
pub mod respond;
pub mod stide;
pub mod token;
pub mod window;

/// FNV-1a over 16-bit tokens: the hash of a token sequence (stide's database, the windows an
/// instance has accepted). 64 bits, so accidental collisions do not happen in practice; FNV is
/// not collision resistant, but a program that wanted a hostile window to pass as an accepted
/// one would have to find a colliding sequence among the tokens its own syscalls can produce.
pub(crate) fn hash_tokens(tokens: &[token::Token]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &t in tokens {
        for b in t.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// SplitMix64: a small deterministic generator (weights' seeded start, tests). Not for secrets.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [0, n) (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[cfg(test)]
mod detector_review_tests;
#[cfg(all(test, feature = "std"))]
mod label_review_tests;
#[cfg(test)]
mod pipeline_tests;
