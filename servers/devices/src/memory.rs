//! Device memory, carved into the frames of BAR pages.
//!
//! The kernel makes objects from untyped memory at a watermark, so a frame at one chosen physical
//! address cannot be cut from the middle of a large device untyped directly. The manager splits:
//! an untyped of `2^b` bytes is retyped into two untypeds of `2^(b-1)` (the kernel places them at
//! its start and its middle), the half holding the wanted page is split again, down to 4 KiB,
//! which is retyped into the page's frame. Halves not taken stay whole for later pages, so pages
//! close together share most of the path, and the frame of a page is made once and kept: the
//! manager hands out copies of it (the reply's capability transfer derives one), and can revoke
//! them all.

use alloc::vec::Vec;
use ozone_abi::Error;

/// What the manager asks of the kernel.
pub trait Carver {
    /// Retype the untyped in `slot` (of `2^bits` bytes) into two untypeds of `2^(bits-1)`,
    /// returning their slots (the lower half first).
    fn split(&mut self, slot: u64, bits: u8) -> Result<(u64, u64), Error>;
    /// Retype the 4 KiB untyped in `slot` into a 4 KiB frame, returning the frame's slot.
    fn frame(&mut self, slot: u64) -> Result<u64, Error>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Whole,
    /// Split into these two nodes (lower, upper).
    Split(usize, usize),
    /// A 4 KiB untyped retyped into this frame.
    Frame(u64),
}

#[derive(Clone, Copy, Debug)]
struct Node {
    base: u64,
    bits: u8,
    slot: u64,
    state: State,
}

/// The device untypeds and what was cut from them.
pub struct DeviceMemory {
    nodes: Vec<Node>,
    roots: usize,
}

/// The smallest piece: a 4 KiB page.
const PAGE_BITS: u8 = 12;

impl DeviceMemory {
    /// The device untypeds: (slot, physical address, size in bits).
    pub fn new(untypeds: &[(u64, u64, u8)]) -> DeviceMemory {
        let nodes: Vec<Node> = untypeds
            .iter()
            .filter(|u| u.2 >= PAGE_BITS && u.2 < 64)
            .map(|&(slot, base, bits)| Node { base, bits, slot, state: State::Whole })
            .collect();
        DeviceMemory { roots: nodes.len(), nodes }
    }

    /// Whether the page at `paddr` lies in device memory the manager holds.
    pub fn covers(&self, paddr: u64) -> bool {
        self.nodes[..self.roots].iter().any(|n| contains(n, paddr))
    }

    /// The frame of the 4 KiB page at `paddr` (page-aligned), made on first use.
    pub fn frame_at(&mut self, c: &mut dyn Carver, paddr: u64) -> Result<u64, Error> {
        if paddr & 0xfff != 0 {
            return Err(Error::AlignmentError);
        }
        let mut at = (0..self.roots).find(|&i| contains(&self.nodes[i], paddr)).ok_or(Error::RangeError)?;
        loop {
            let n = self.nodes[at];
            match n.state {
                State::Frame(f) => return Ok(f),
                State::Split(lo, hi) => at = if contains(&self.nodes[lo], paddr) { lo } else { hi },
                State::Whole if n.bits == PAGE_BITS => {
                    let f = c.frame(n.slot)?;
                    self.nodes[at].state = State::Frame(f);
                    return Ok(f);
                }
                State::Whole => {
                    let (a, b) = c.split(n.slot, n.bits)?;
                    let half = 1u64 << (n.bits - 1);
                    let lo = self.nodes.len();
                    self.nodes.push(Node { base: n.base, bits: n.bits - 1, slot: a, state: State::Whole });
                    self.nodes.push(Node { base: n.base + half, bits: n.bits - 1, slot: b, state: State::Whole });
                    self.nodes[at].state = State::Split(lo, lo + 1);
                }
            }
        }
    }

    /// Frames made so far.
    pub fn frames(&self) -> usize {
        self.nodes.iter().filter(|n| matches!(n.state, State::Frame(_))).count()
    }
}

fn contains(n: &Node, paddr: u64) -> bool {
    paddr >= n.base && paddr - n.base < (1u64 << n.bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// A carver over a model of untyped memory: slot → (base, bits, used), checking what the
    /// kernel would (only whole, unused untypeds are split or retyped).
    #[derive(Default)]
    struct Model {
        untyped: BTreeMap<u64, (u64, u8, bool)>,
        frames: BTreeMap<u64, u64>,
        next: u64,
        fail_after: Option<usize>,
        calls: usize,
    }

    impl Model {
        fn slot(&mut self) -> u64 {
            self.next += 1;
            1000 + self.next
        }
        fn tick(&mut self) -> Result<(), Error> {
            self.calls += 1;
            match self.fail_after {
                Some(n) if self.calls > n => Err(Error::NotEnoughMemory),
                _ => Ok(()),
            }
        }
    }

    impl Carver for Model {
        fn split(&mut self, slot: u64, bits: u8) -> Result<(u64, u64), Error> {
            self.tick()?;
            let (base, b, used) = *self.untyped.get(&slot).ok_or(Error::InvalidCapability)?;
            assert_eq!(b, bits);
            assert!(!used, "an untyped is split once");
            self.untyped.get_mut(&slot).unwrap().2 = true;
            let (lo, hi) = (self.slot(), self.slot());
            self.untyped.insert(lo, (base, bits - 1, false));
            self.untyped.insert(hi, (base + (1 << (bits - 1)), bits - 1, false));
            Ok((lo, hi))
        }
        fn frame(&mut self, slot: u64) -> Result<u64, Error> {
            self.tick()?;
            let (base, b, used) = *self.untyped.get(&slot).ok_or(Error::InvalidCapability)?;
            assert_eq!(b, 12);
            assert!(!used);
            self.untyped.get_mut(&slot).unwrap().2 = true;
            let f = self.slot();
            self.frames.insert(f, base);
            Ok(f)
        }
    }

    #[test]
    fn every_page_gets_the_frame_of_its_own_address() {
        let mut m = Model::default();
        m.untyped.insert(1, (0x8000_0000, 30, false));
        m.untyped.insert(2, (0x10_0000_0000, 36, false));
        let mut d = DeviceMemory::new(&[(1, 0x8000_0000, 30), (2, 0x10_0000_0000, 36)]);
        let pages = [0x8000_0000u64, 0xbfff_f000, 0x8000_1000, 0x9abc_d000, 0x10_0000_0000, 0x1f_ffff_f000];
        let mut got = Vec::new();
        for p in pages {
            let f = d.frame_at(&mut m, p).unwrap();
            assert_eq!(m.frames[&f], p, "the frame of {p:#x}");
            got.push(f);
        }
        // Asked again: the same frame, nothing new made.
        let calls = m.calls;
        for (p, f) in pages.iter().zip(&got) {
            assert_eq!(d.frame_at(&mut m, *p).unwrap(), *f);
        }
        assert_eq!(m.calls, calls);
        assert_eq!(d.frames(), pages.len());
    }

    #[test]
    fn pages_outside_device_memory_or_unaligned_are_refused() {
        let mut m = Model::default();
        m.untyped.insert(1, (0x8000_0000, 20, false));
        let mut d = DeviceMemory::new(&[(1, 0x8000_0000, 20)]);
        assert_eq!(d.frame_at(&mut m, 0x7fff_f000), Err(Error::RangeError));
        assert_eq!(d.frame_at(&mut m, 0x8010_0000), Err(Error::RangeError));
        assert_eq!(d.frame_at(&mut m, 0x8000_0010), Err(Error::AlignmentError));
        assert!(!d.covers(0x1000));
        assert!(d.covers(0x800f_f000));
    }

    #[test]
    fn a_kernel_failure_half_way_leaves_a_tree_that_still_works() {
        let mut m = Model { fail_after: Some(3), ..Model::default() };
        m.untyped.insert(1, (0, 20, false));
        let mut d = DeviceMemory::new(&[(1, 0, 20)]);
        assert_eq!(d.frame_at(&mut m, 0x5000), Err(Error::NotEnoughMemory));
        m.fail_after = None;
        let f = d.frame_at(&mut m, 0x5000).unwrap();
        assert_eq!(m.frames[&f], 0x5000);
    }
}
