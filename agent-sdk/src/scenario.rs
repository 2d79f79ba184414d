//! Helpers for *scenario programs*: programs that behave in a known way (benign or hostile) so
//! that a recording of their kernel event traces can train and evaluate a model of program
//! behaviour (`agents/scenarios`).
//!
//! - [`my_seed`]: the program's `seed` from the system description (Studio's `MY_SEED`), from
//!   which a scenario chooses everything it does, so one block behaves the same on every boot and
//!   two blocks of one binary with different seeds behave differently.
//! - [`Rng`]: a small deterministic generator (SplitMix64) to draw those choices from the seed.
//! - [`phase`]: a *phase marker*, telling the recorder that a benign or a hostile stretch of the
//!   program begins.
//!
//! ## Phase markers
//!
//! A marker is a Call on the **empty** capability slot [`MARKER_SLOT`] (slot 0) with the message
//! label [`BENIGN_LABEL`] (`0x5CE0`) or [`HOSTILE_LABEL`] (`0x5CE1`) and no payload. The kernel
//! answers it at once with `InvalidCapability`: it reaches no object and changes nothing, but it
//! is a syscall, so a per-thread event trace records it (a Call naming no capability, with the
//! marker's label in its message info). The recorder takes those records out of the trace and
//! labels the events that follow with the phase, until the next marker.
//!
//! Slot 0 is empty in every program Studio starts: Studio's fixed slots are 1..=16 and what it
//! grants later goes from `FIRST_FREE` (17) up (`protocol::start::slot`); a program without a
//! CNode of its own (`caps::own_cnode()` is `None`, every agent without a pool) cannot fill
//! it either. (Studio's host tests check that no program it starts holds anything there.) A
//! program that manages its own CNode must leave slot 0 empty to use markers.

use crate::caps::Endpoint;
use crate::protocol::studio::method;
use crate::rpc::Client;
use crate::sys::Msg;
use crate::{AgentError, Result};

/// The slot phase markers call: empty in every program Studio starts (see the module's docs).
pub const MARKER_SLOT: u64 = 0;

/// The label of the marker that begins a benign phase.
pub const BENIGN_LABEL: u64 = 0x5CE0;

/// The label of the marker that begins a hostile phase.
pub const HOSTILE_LABEL: u64 = 0x5CE1;

/// What the program's next steps are, for the recorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Ordinary work: what the program is for.
    Benign,
    /// Steps a defender wants to notice (probing, flooding, scanning, fuzzing, ...).
    Hostile,
}

impl Phase {
    /// The marker's message label.
    pub const fn label(self) -> u64 {
        match self {
            Phase::Benign => BENIGN_LABEL,
            Phase::Hostile => HOSTILE_LABEL,
        }
    }

    /// The phase a marker label stands for, if it is one.
    pub const fn from_label(label: u64) -> Option<Phase> {
        match label {
            BENIGN_LABEL => Some(Phase::Benign),
            HOSTILE_LABEL => Some(Phase::Hostile),
            _ => None,
        }
    }
}

/// Mark the beginning of a phase: a Call on the empty slot [`MARKER_SLOT`] with the phase's
/// label, which the kernel refuses (`InvalidCapability`). `Ok(())` when it was refused that way;
/// any other outcome (the slot was not empty after all, or the syscall profile denied the Call)
/// is returned as the error, so a program can say its trace will lack the marker.
pub fn phase(p: Phase) -> Result<()> {
    match Endpoint::from_slot(MARKER_SLOT).call(Msg::new(p.label(), &[])) {
        Err(AgentError::Kernel(crate::Error::InvalidCapability) | AgentError::ServerGone) => Ok(()),
        Err(e) => Err(e),
        Ok(_) => Err(AgentError::BadReply),
    }
}

/// This program's `seed` from the system description (0: the description gives none), asked of
/// Studio (`MY_SEED`).
pub fn my_seed() -> Result<u64> {
    Client::studio().call(method::MY_SEED, &())
}

/// A small deterministic pseudo-random generator: SplitMix64 (Steele, Lea and Flood, 2014).
/// Not for secrets; for choosing a scenario's steps reproducibly from its seed. Every seed, 0
/// included, gives a full-period sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator starting from `seed`.
    pub const fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi` (`lo` if `hi < lo`); the tiny bias of the modulo does not matter
    /// here.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        let r = self.next_u64();
        if span == u64::MAX { r } else { lo + r % (span + 1) }
    }

    /// `true` with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// Fill `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    /// One element of `items` (`None` if it is empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() { None } else { items.get(self.range(0, items.len() as u64 - 1) as usize) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // SplitMix64 from seed 0: the published first outputs.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
        // The same seed, the same sequence; another seed, another.
        let (mut a, mut b, mut c) = (Rng::new(42), Rng::new(42), Rng::new(43));
        for _ in 0..100 {
            let x = a.next_u64();
            assert_eq!(x, b.next_u64());
            assert_ne!(x, c.next_u64());
        }
    }

    #[test]
    fn ranges_chances_and_picks_stay_in_bounds() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let x = r.range(3, 9);
            assert!((3..=9).contains(&x));
        }
        assert_eq!(r.range(5, 5), 5);
        assert_eq!(r.range(9, 3), 9);
        let _ = r.range(0, u64::MAX);
        assert!((0..100).all(|_| !r.chance(0)));
        assert!((0..100).all(|_| r.chance(100)));
        let mut buf = [0u8; 13];
        r.fill(&mut buf);
        assert!(buf.iter().any(|b| *b != 0));
        assert_eq!(r.pick::<u8>(&[]), None);
        assert!([1, 2, 3].contains(r.pick(&[1, 2, 3]).unwrap()));
    }

    #[test]
    fn marker_labels_are_distinct_and_round_trip() {
        for p in [Phase::Benign, Phase::Hostile] {
            assert_eq!(Phase::from_label(p.label()), Some(p));
        }
        assert_ne!(BENIGN_LABEL, HOSTILE_LABEL);
        assert_eq!(Phase::from_label(0), None);
        // Studio never fills the marker's slot: its fixed slots start above it.
        const { assert!(MARKER_SLOT < crate::protocol::start::slot::STUDIO) };
    }
}
