//! Studio's slot allocator: which slots of its CNode are free. Slots are reused (programs come and
//! go: a killed program's slots return here), so this is a bitmap rather than a bump pointer.

use alloc::vec;
use alloc::vec::Vec;

pub struct Slots {
    /// One bit per slot of the range; set = in use.
    bits: Vec<u64>,
    start: u64,
    end: u64,
    /// Where to start looking.
    hint: usize,
    free: u64,
}

impl Slots {
    /// Manage the slots `[start, end)`.
    pub fn new(start: u64, end: u64) -> Slots {
        let n = (end - start) as usize;
        let mut bits = vec![0u64; n.div_ceil(64)];
        // Bits past the end are in use for good.
        if !n.is_multiple_of(64) {
            *bits.last_mut().unwrap() = !0u64 << (n % 64);
        }
        Slots { bits, start, end, hint: 0, free: end - start }
    }

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

    /// Return a slot. Freeing a slot outside the range or one that is free is a bug in Studio,
    /// reported by `false`.
    pub fn free(&mut self, slot: u64) -> bool {
        if slot < self.start || slot >= self.end {
            return false;
        }
        let i = (slot - self.start) as usize;
        let (w, b) = (i / 64, i % 64);
        if self.bits[w] & (1 << b) == 0 {
            return false;
        }
        self.bits[w] &= !(1 << b);
        self.free += 1;
        true
    }

    #[cfg(test)]
    pub fn free_count(&self) -> u64 {
        self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_every_slot_once_and_reuses_freed_ones() {
        let mut s = Slots::new(100, 230);
        let mut got: Vec<u64> = (0..130).map(|_| s.alloc().unwrap()).collect();
        assert_eq!(s.alloc(), None);
        got.sort();
        assert_eq!(got, (100..230).collect::<Vec<_>>());
        assert!(s.free(150));
        assert!(!s.free(150), "double free is refused");
        assert!(!s.free(99) && !s.free(230));
        assert_eq!(s.free_count(), 1);
        assert_eq!(s.alloc(), Some(150));
        assert_eq!(s.free_count(), 0);
    }
}
