//! Addresses inside one program's share window, with guard pages.
//!
//! Every program's address space has the window `SHARE_WINDOW .. + SHARE_WINDOW_SIZE` where
//! Studio places nothing; the server maps regions only there. A region of `n` pages takes a
//! *reservation* of `n + 2` pages: one unmapped guard page, the region, another unmapped guard
//! page. So a region never touches another region or the window's edges, and a run off either
//! end of it faults. Reservations are placed first fit from the bottom of the window (keeping
//! the page tables few) and freed space is merged with its neighbours and reused.

use alloc::collections::BTreeMap;

use ozone_agent_sdk::protocol::secmem::PAGE_SIZE;

/// Guard pages on each side of a region.
pub const GUARD_PAGES: u64 = 1;

/// The free and reserved parts of one window.
#[derive(Clone, Debug)]
pub struct Window {
    base: u64,
    pages: u64,
    /// Free runs: first page index → length in pages; never adjacent (merged on free).
    free: BTreeMap<u64, u64>,
    /// Reservations: the region's address → its pages (without the guards).
    used: BTreeMap<u64, u64>,
}

impl Window {
    /// The window of `size` bytes at `base` (both page-aligned).
    pub fn new(base: u64, size: u64) -> Window {
        let pages = size / PAGE_SIZE;
        let mut free = BTreeMap::new();
        if pages > 0 {
            free.insert(0, pages);
        }
        Window { base, pages, free, used: BTreeMap::new() }
    }

    /// Reserve room for a region of `pages` pages; returns its address (its first mapped page).
    pub fn alloc(&mut self, pages: u64) -> Option<u64> {
        let need = pages.checked_add(2 * GUARD_PAGES)?;
        if pages == 0 {
            return None;
        }
        let (&start, &len) = self.free.iter().find(|&(_, &len)| len >= need)?;
        self.free.remove(&start);
        if len > need {
            self.free.insert(start + need, len - need);
        }
        let addr = self.base + (start + GUARD_PAGES) * PAGE_SIZE;
        self.used.insert(addr, pages);
        Some(addr)
    }

    /// Reserve room for a region of `pages` pages at `addr` exactly (page-aligned, with its guard
    /// pages inside the window and free); returns `addr`, or `None` if it does not fit there.
    pub fn alloc_at(&mut self, addr: u64, pages: u64) -> Option<u64> {
        if pages == 0 || !addr.is_multiple_of(PAGE_SIZE) || addr < self.base + GUARD_PAGES * PAGE_SIZE {
            return None;
        }
        let need = pages.checked_add(2 * GUARD_PAGES)?;
        let first = (addr - self.base) / PAGE_SIZE - GUARD_PAGES;
        let end = first.checked_add(need)?;
        if end > self.pages {
            return None;
        }
        // The free run that holds `first`, if it also holds the end.
        let (&start, &len) = self.free.range(..=first).next_back()?;
        if start + len < end {
            return None;
        }
        self.free.remove(&start);
        if first > start {
            self.free.insert(start, first - start);
        }
        if start + len > end {
            self.free.insert(end, start + len - end);
        }
        self.used.insert(addr, pages);
        Some(addr)
    }

    /// Give back the reservation of the region at `addr`; returns its pages, or `None` if no
    /// region starts there.
    pub fn free(&mut self, addr: u64) -> Option<u64> {
        let pages = self.used.remove(&addr)?;
        let mut start = (addr - self.base) / PAGE_SIZE - GUARD_PAGES;
        let mut len = pages + 2 * GUARD_PAGES;
        // Merge with the free run just below and the one just above.
        if let Some((&s, &l)) = self.free.range(..start).next_back()
            && s + l == start
        {
            self.free.remove(&s);
            start = s;
            len += l;
        }
        if let Some(l) = self.free.remove(&(start + len)) {
            len += l;
        }
        self.free.insert(start, len);
        Some(pages)
    }

    /// Whether a region starts at `addr`.
    pub fn contains(&self, addr: u64) -> bool {
        self.used.contains_key(&addr)
    }

    /// Regions reserved now.
    pub fn regions(&self) -> usize {
        self.used.len()
    }

    /// The whole window is free.
    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }

    /// Pages of the window.
    pub fn pages(&self) -> u64 {
        self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const BASE: u64 = 0x300_0000_0000;
    const P: u64 = PAGE_SIZE;

    #[test]
    fn regions_have_guard_pages_on_both_sides() {
        let mut w = Window::new(BASE, 64 * P);
        let a = w.alloc(3).unwrap();
        let b = w.alloc(1).unwrap();
        let c = w.alloc(5).unwrap();
        // Nothing at the window's first page; at least one unmapped page between regions.
        assert_eq!(a, BASE + P);
        assert!(b >= a + 3 * P + P, "no guard between a and b");
        assert!(c >= b + P + P, "no guard between b and c");
        assert_eq!(b - (a + 3 * P), 2 * P, "each region has its own guards");
    }

    #[test]
    fn the_window_end_is_never_mapped() {
        let mut w = Window::new(BASE, 10 * P);
        // 10 pages hold a region of at most 8.
        assert_eq!(w.alloc(9), None);
        let a = w.alloc(8).unwrap();
        assert_eq!(a + 8 * P, BASE + 9 * P, "the last page stays a guard");
        assert_eq!(w.alloc(1), None);
    }

    #[test]
    fn freed_space_is_reused_and_merged() {
        let mut w = Window::new(BASE, 64 * P);
        let a = w.alloc(4).unwrap();
        let b = w.alloc(4).unwrap();
        let c = w.alloc(4).unwrap();
        assert_eq!(w.free(a), Some(4));
        assert_eq!(w.alloc(4), Some(a), "first fit reuses the hole");
        assert_eq!(w.free(a), Some(4));
        assert_eq!(w.free(b), Some(4));
        // a's and b's reservations merged: 12 pages, room for a region of 10.
        assert_eq!(w.alloc(10), Some(a));
        assert_eq!(w.free(a), Some(10));
        assert_eq!(w.free(c), Some(4));
        assert!(w.is_empty());
        // Everything merged back into one run.
        assert_eq!(w.alloc(62), Some(BASE + P));
    }

    #[test]
    fn bad_frees_change_nothing() {
        let mut w = Window::new(BASE, 16 * P);
        let a = w.alloc(2).unwrap();
        assert_eq!(w.free(a + P), None);
        assert_eq!(w.free(BASE), None);
        assert_eq!(w.free(a), Some(2));
        assert_eq!(w.free(a), None, "freed twice");
        assert_eq!(w.alloc(0), None);
        assert_eq!(w.alloc(u64::MAX), None);
    }

    #[test]
    fn a_chosen_address_must_be_free_inside_the_window_with_its_guards() {
        let mut w = Window::new(BASE, 32 * P);
        assert_eq!(w.alloc_at(BASE, 1), None, "no room for the guard below");
        assert_eq!(w.alloc_at(BASE + P + 1, 1), None, "unaligned");
        assert_eq!(w.alloc_at(BASE - 4 * P, 1), None, "below the window");
        assert_eq!(w.alloc_at(BASE + 31 * P, 1), None, "no room for the guard above");
        assert_eq!(w.alloc_at(BASE + 40 * P, 1), None, "above the window");
        assert_eq!(w.alloc_at(!(P - 1), 1), None);
        assert_eq!(w.alloc_at(BASE + 30 * P, 1), Some(BASE + 30 * P), "the last place that fits");
        let a = w.alloc_at(BASE + 10 * P, 4).unwrap();
        assert_eq!(w.alloc_at(BASE + 14 * P, 1), None, "on a's guard page");
        assert_eq!(w.alloc_at(BASE + 8 * P, 1), None, "its guard would be a's");
        assert_eq!(w.alloc_at(BASE + 11 * P, 1), None, "inside a");
        assert_eq!(w.alloc_at(BASE + 16 * P, 1), Some(BASE + 16 * P));
        // First fit still finds the room below a.
        assert_eq!(w.alloc(7), Some(BASE + P));
        assert_eq!(w.free(a), Some(4));
        assert_eq!(w.alloc_at(BASE + 10 * P, 5), None, "would touch the region above");
        assert_eq!(w.alloc_at(BASE + 10 * P, 4), Some(BASE + 10 * P), "free again");
    }

    #[test]
    fn reservations_never_overlap() {
        // A deterministic churn of allocations and frees.
        let mut w = Window::new(BASE, 256 * P);
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) && !live.is_empty() {
                let (a, n) = live.swap_remove((x as usize / 3) % live.len());
                assert_eq!(w.free(a), Some(n));
            } else if x.is_multiple_of(5) {
                let n = 1 + (x >> 20) % 9;
                let at = BASE + ((x >> 32) % 260) * P;
                if let Some(a) = w.alloc_at(at, n) {
                    assert_eq!(a, at);
                    live.push((a, n));
                }
            } else {
                let n = 1 + (x >> 20) % 9;
                if let Some(a) = w.alloc(n) {
                    live.push((a, n));
                }
            }
            // Every reservation (with its guards) inside the window and disjoint from the others.
            let mut spans: Vec<(u64, u64)> = live.iter().map(|&(a, n)| (a - P, a + (n + 1) * P)).collect();
            spans.sort_unstable();
            for s in &spans {
                assert!(s.0 >= BASE && s.1 <= BASE + 256 * P);
            }
            for pair in spans.windows(2) {
                assert!(pair[0].1 <= pair[1].0, "overlap: {pair:?}");
            }
        }
    }
}
