//! The DMA arena's pages: physically contiguous, mapped at one virtual range; allocations are
//! runs of contiguous pages, first fit (virtqueues want contiguous memory; bounce buffers take a
//! page or two).

use alloc::vec;
use alloc::vec::Vec;

/// Page size.
pub const PAGE: usize = 4096;

/// Which pages of the arena are in use.
pub struct Arena {
    /// Physical address of the first page.
    pub phys: u64,
    /// Virtual address of the first page.
    pub virt: u64,
    used: Vec<bool>,
}

impl Arena {
    pub fn new(phys: u64, virt: u64, pages: usize) -> Arena {
        Arena { phys, virt, used: vec![false; pages] }
    }

    pub fn pages(&self) -> usize {
        self.used.len()
    }

    pub fn free_pages(&self) -> usize {
        self.used.iter().filter(|u| !**u).count()
    }

    /// `n` contiguous pages: their index, or `None` if no run is free.
    pub fn alloc(&mut self, n: usize) -> Option<usize> {
        if n == 0 || n > self.used.len() {
            return None;
        }
        let mut run = 0;
        for i in 0..self.used.len() {
            run = if self.used[i] { 0 } else { run + 1 };
            if run == n {
                let first = i + 1 - n;
                self.used[first..=i].iter_mut().for_each(|u| *u = true);
                return Some(first);
            }
        }
        None
    }

    /// Give back `n` pages from `first`; false (nothing changed) unless all were in use.
    pub fn free(&mut self, first: usize, n: usize) -> bool {
        let Some(pages) = first.checked_add(n).and_then(|end| self.used.get(first..end)) else { return false };
        if n == 0 || !pages.iter().all(|u| *u) {
            return false;
        }
        self.used[first..first + n].iter_mut().for_each(|u| *u = false);
        true
    }

    /// The page index of physical address `paddr` inside the arena.
    pub fn index_of_phys(&self, paddr: u64) -> Option<usize> {
        let off = paddr.checked_sub(self.phys)?;
        let i = (off / PAGE as u64) as usize;
        (i < self.used.len()).then_some(i)
    }

    pub fn phys_of(&self, index: usize) -> u64 {
        self.phys + (index * PAGE) as u64
    }

    pub fn virt_of(&self, index: usize) -> u64 {
        self.virt + (index * PAGE) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_contiguous_and_never_overlap() {
        let mut a = Arena::new(0x10_0000, 0x4000_0000, 8);
        let x = a.alloc(3).unwrap();
        let y = a.alloc(2).unwrap();
        assert_eq!((x, y), (0, 3));
        assert!(a.alloc(4).is_none(), "only 3 left");
        assert!(a.free(0, 3));
        assert!(!a.free(0, 3), "twice");
        assert!(!a.free(3, 5), "pages not in use");
        assert!(!a.free(7, usize::MAX), "overflow");
        assert_eq!(a.alloc(3), Some(0));
        assert_eq!(a.alloc(3), Some(5));
        assert_eq!(a.free_pages(), 0);
        assert_eq!(a.alloc(0), None);
        assert_eq!(a.index_of_phys(0x10_0000 + 2 * 4096 + 5), Some(2));
        assert_eq!(a.index_of_phys(0x10_0000 + 8 * 4096), None);
        assert_eq!(a.index_of_phys(0xf_f000), None);
        assert_eq!(a.phys_of(2), 0x10_2000);
        assert_eq!(a.virt_of(2), 0x4000_2000);
    }
}
