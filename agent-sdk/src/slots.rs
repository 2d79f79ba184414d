//! A bitmap of free CNode slots, for programs that manage slots of their own CNode: Studio (its
//! slots hold every program's objects and are reused as programs come and go) and servers with a
//! pool of their own (the secure-memory server). A bump pointer would not do: slots come back.

use alloc::vec;
use alloc::vec::Vec;

/// A bitmap over the slots `[start, end)`; a set bit is a slot in use.
pub struct Slots {
    bits: Vec<u64>,
    start: u64,
    end: u64,
    free: u64,
    /// The word to start looking at.
    hint: usize,
}

impl Slots {
    /// Manage `[start, end)` (empty if `end <= start`).
    pub fn new(start: u64, end: u64) -> Slots {
        let n = end.saturating_sub(start) as usize;
        let mut bits = vec![0u64; n.div_ceil(64)];
        if !n.is_multiple_of(64)
            && let Some(last) = bits.last_mut()
        {
            // Bits past the end are in use for good.
            *last = !0u64 << (n % 64);
        }
        Slots { bits, start, end: start + n as u64, free: n as u64, hint: 0 }
    }

    /// A free slot, now in use.
    pub fn alloc(&mut self) -> Option<u64> {
        let words = self.bits.len();
        for k in 0..words {
            let i = (self.hint + k) % words;
            let w = self.bits[i];
            if w != u64::MAX {
                let b = (!w).trailing_zeros() as usize;
                self.bits[i] |= 1 << b;
                self.hint = i;
                self.free -= 1;
                return Some(self.start + (i * 64 + b) as u64);
            }
        }
        None
    }

    /// `n` free slots, or none (then nothing changed).
    pub fn alloc_n(&mut self, n: usize) -> Option<Vec<u64>> {
        if (self.free as usize) < n {
            return None;
        }
        (0..n).map(|_| self.alloc()).collect()
    }

    /// Give `slot` back. Returns false (and changes nothing) for a slot outside the range or
    /// one that is not in use.
    pub fn free(&mut self, slot: u64) -> bool {
        let Some((w, b)) = self.position(slot) else { return false };
        if self.bits[w] & (1 << b) == 0 {
            return false;
        }
        self.bits[w] &= !(1 << b);
        self.free += 1;
        true
    }

    /// Mark `slot` in use if it is in the range and free; returns whether it was.
    pub fn reserve(&mut self, slot: u64) -> bool {
        let Some((w, b)) = self.position(slot) else { return false };
        if self.bits[w] & (1 << b) != 0 {
            return false;
        }
        self.bits[w] |= 1 << b;
        self.free -= 1;
        true
    }

    /// Whether `slot` is one of these and in use.
    pub fn in_use(&self, slot: u64) -> bool {
        self.position(slot).is_some_and(|(w, b)| self.bits[w] & (1 << b) != 0)
    }

    /// How many are free.
    pub fn free_count(&self) -> u64 {
        self.free
    }

    fn position(&self, slot: u64) -> Option<(usize, usize)> {
        if slot < self.start || slot >= self.end {
            return None;
        }
        let i = (slot - self.start) as usize;
        Some((i / 64, i % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_once_then_none() {
        let mut s = Slots::new(256, 256 + 100);
        let mut got: Vec<u64> = (0..100).map(|_| s.alloc().unwrap()).collect();
        assert_eq!(s.alloc(), None);
        assert_eq!(s.free_count(), 0);
        got.sort_unstable();
        assert_eq!(got, (256..356).collect::<Vec<_>>());
        assert!(s.free(300));
        assert!(!s.free(300), "freed twice");
        assert!(!s.free(10), "outside the range");
        assert!(!s.free(356), "past the end");
        assert_eq!(s.alloc(), Some(300));
    }

    #[test]
    fn reserve_takes_a_slot_out() {
        let mut s = Slots::new(16, 20);
        assert!(s.reserve(17));
        assert!(!s.reserve(17));
        assert!(!s.reserve(20));
        assert!(s.in_use(17));
        let mut got: Vec<u64> = (0..3).map(|_| s.alloc().unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, [16, 18, 19]);
        assert_eq!(s.alloc(), None);
    }

    #[test]
    fn alloc_n_is_all_or_nothing() {
        let mut s = Slots::new(0, 5);
        assert_eq!(s.alloc_n(6), None);
        assert_eq!(s.free_count(), 5);
        assert_eq!(s.alloc_n(5).map(|v| v.len()), Some(5));
        assert_eq!(Slots::new(10, 5).alloc(), None);
    }
}
