//! Turning the boot memory map into free physical memory.
//!
//! Firmware memory maps are messy: entries come unsorted, may overlap, and may give the same
//! bytes two different kinds. The rule here is conservative and byte-exact:
//!
//! * a byte is **free** when some [`MemoryKind::Usable`] region contains it, **no** region of any
//!   other kind contains it, and no `reserved` range (kernel image, initrd, boot structures, ...)
//!   contains it;
//! * a 4 KiB page is free when all of its bytes are free.
//!
//! [`for_each_free_range`] reports the free pages as maximal ranges `[start, end)` (page-aligned,
//! ascending, never adjacent: adjacent free pages are merged, also across the boundary of two
//! touching usable regions).
//!
//! It allocates nothing and uses no scratch memory: it sweeps the address space from boundary to
//! boundary, finding the next boundary by a linear scan, so the work is quadratic in the number
//! of ranges. That is why the inputs are capped ([`MAX_MEMORY_REGIONS`] regions, as
//! [`BootInfo`](crate::boot::info::BootInfo) keeps, and [`MAX_RESERVED`] reserved ranges): at
//! most a few hundred thousand comparisons, once at boot.
//!
//! Ranges are half-open; a region's end saturates at `u64::MAX` (see [`MemoryRegion::end`]), so
//! the last byte of the address space is never free. Reserved ranges with `end <= start` are
//! empty and ignored.

use core::fmt;

use crate::boot::info::{MAX_MEMORY_REGIONS, MemoryKind, MemoryRegion, PhysRange};

/// The page size free ranges are aligned to.
pub const PAGE_SIZE: u64 = 4096;
/// The most reserved ranges [`for_each_free_range`] accepts.
pub const MAX_RESERVED: usize = 32;

/// Why the memory map could not be processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemMapError {
    /// More than [`MAX_MEMORY_REGIONS`] regions.
    TooManyRegions,
    /// More than [`MAX_RESERVED`] reserved ranges.
    TooManyReserved,
}

impl fmt::Display for MemMapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemMapError::TooManyRegions => {
                write!(f, "more than {MAX_MEMORY_REGIONS} memory regions")
            }
            MemMapError::TooManyReserved => write!(f, "more than {MAX_RESERVED} reserved ranges"),
        }
    }
}

impl core::error::Error for MemMapError {}

/// A range as `(start, end)`, or `None` if empty.
fn region_bounds(r: &MemoryRegion) -> Option<(u64, u64)> {
    let end = r.end();
    (end > r.base).then_some((r.base, end))
}

fn reserved_bounds(r: &PhysRange) -> Option<(u64, u64)> {
    (r.end > r.start).then_some((r.start, r.end))
}

/// Every start and end of a non-empty input range.
fn boundaries<'a>(regions: &'a [MemoryRegion], reserved: &'a [PhysRange]) -> impl Iterator<Item = u64> + 'a {
    let r = regions.iter().filter_map(region_bounds);
    let s = reserved.iter().filter_map(reserved_bounds);
    r.chain(s).flat_map(|(start, end)| [start, end])
}

/// Whether byte `x` is free by the rule in the module documentation.
fn is_free(regions: &[MemoryRegion], reserved: &[PhysRange], x: u64) -> bool {
    let inside = |(start, end): (u64, u64)| start <= x && x < end;
    let mut usable = false;
    for r in regions {
        if region_bounds(r).is_some_and(inside) {
            if r.kind != MemoryKind::Usable {
                return false;
            }
            usable = true;
        }
    }
    usable && !reserved.iter().filter_map(reserved_bounds).any(inside)
}

/// Emit the whole pages inside the free byte range `[start, end)`, if any.
fn emit_pages(start: u64, end: u64, f: &mut dyn FnMut(PhysRange)) {
    let Some(start) = start.checked_add(PAGE_SIZE - 1).map(|s| s & !(PAGE_SIZE - 1)) else {
        return;
    };
    let end = end & !(PAGE_SIZE - 1);
    if start < end {
        f(PhysRange { start, end });
    }
}

/// Call `f` with every maximal range of free pages, in ascending order.
pub fn for_each_free_range(
    regions: &[MemoryRegion],
    reserved: &[PhysRange],
    f: &mut dyn FnMut(PhysRange),
) -> Result<(), MemMapError> {
    if regions.len() > MAX_MEMORY_REGIONS {
        return Err(MemMapError::TooManyRegions);
    }
    if reserved.len() > MAX_RESERVED {
        return Err(MemMapError::TooManyReserved);
    }
    // Between two consecutive boundaries every byte has the same state, so sweep the elementary
    // intervals [x, next) in order and test one byte of each.
    let Some(mut x) = boundaries(regions, reserved).min() else {
        return Ok(());
    };
    let mut run: Option<u64> = None; // start of the free byte run being built
    while let Some(next) = boundaries(regions, reserved).filter(|&b| b > x).min() {
        if is_free(regions, reserved, x) {
            run.get_or_insert(x);
        } else if let Some(start) = run.take() {
            emit_pages(start, x, f);
        }
        x = next;
    }
    if let Some(start) = run {
        emit_pages(start, x, f);
    }
    Ok(())
}

/// Total bytes in free pages.
pub fn total_free(regions: &[MemoryRegion], reserved: &[PhysRange]) -> Result<u64, MemMapError> {
    let mut total = 0u64;
    for_each_free_range(regions, reserved, &mut |r| {
        total = total.saturating_add(r.end.saturating_sub(r.start));
    })?;
    Ok(total)
}

/// One past the highest byte of any non-empty region, of any kind (0 if there is none). This is
/// how much physical address space a direct map must cover.
pub fn highest_address(regions: &[MemoryRegion]) -> u64 {
    regions.iter().filter_map(region_bounds).map(|(_, end)| end).max().unwrap_or(0)
}

/// Cut `[start, end)` into the fewest naturally aligned power-of-two blocks of at most
/// `2^max_bits` and at least `2^min_bits` bytes (the shape untyped capabilities need), calling
/// `f(base, size_bits)` for each in ascending order. Pieces smaller than `2^min_bits` at the
/// edges are left out.
pub fn split_aligned(start: u64, end: u64, min_bits: u8, max_bits: u8, f: &mut dyn FnMut(u64, u8)) {
    let min = 1u64 << min_bits;
    let mut base = start.checked_next_multiple_of(min).unwrap_or(u64::MAX);
    let end = end & !(min - 1);
    while base < end {
        // The largest block that is aligned at `base`, fits before `end` and is allowed.
        let align_bits = if base == 0 { 63 } else { base.trailing_zeros() as u8 };
        let fit_bits = (63 - (end - base).leading_zeros()) as u8;
        let bits = align_bits.min(fit_bits).min(max_bits);
        f(base, bits);
        base += 1u64 << bits;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const K: u64 = 1024;
    const P: u64 = PAGE_SIZE;

    fn region(base: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { base, len, kind }
    }
    fn usable(base: u64, len: u64) -> MemoryRegion {
        region(base, len, MemoryKind::Usable)
    }
    fn range(start: u64, end: u64) -> PhysRange {
        PhysRange { start, end }
    }
    fn free(regions: &[MemoryRegion], reserved: &[PhysRange]) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for_each_free_range(regions, reserved, &mut |r| out.push((r.start, r.end))).unwrap();
        out
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(free(&[], &[]), []);
        assert_eq!(free(&[], &[range(0, 10 * P)]), []);
        assert_eq!(free(&[usable(P, 0)], &[]), []);
        assert_eq!(highest_address(&[]), 0);
        assert_eq!(total_free(&[], &[]), Ok(0));
    }

    #[test]
    fn single_region_is_rounded_inwards() {
        assert_eq!(free(&[usable(P, 4 * P)], &[]), [(P, 5 * P)]);
        assert_eq!(free(&[usable(P + 1, 4 * P)], &[]), [(2 * P, 5 * P)]);
        assert_eq!(free(&[usable(P + 1, 4 * P - 2)], &[]), [(2 * P, 4 * P)]);
        // Less than a page, or straddling a page boundary without a whole page: nothing.
        assert_eq!(free(&[usable(P + 1, P)], &[]), []);
        assert_eq!(free(&[usable(10, 100)], &[]), []);
    }

    #[test]
    fn unsorted_and_adjacent_regions_merge() {
        let regions = [usable(8 * P, 2 * P), usable(0, 2 * P), usable(2 * P, 3 * P), usable(20 * P, P)];
        assert_eq!(free(&regions, &[]), [(0, 5 * P), (8 * P, 10 * P), (20 * P, 21 * P)]);
        // A page split between two touching usable regions is whole.
        let regions = [usable(P + 512, 3 * P), usable(0, P + 512)];
        assert_eq!(free(&regions, &[]), [(0, 4 * P)]);
        // Overlapping usable regions are their union.
        let regions = [usable(0, 4 * P), usable(2 * P, 4 * P), usable(P, P)];
        assert_eq!(free(&regions, &[]), [(0, 6 * P)]);
    }

    #[test]
    fn non_usable_regions_win_over_usable() {
        let regions = [
            usable(0, 16 * P),
            region(4 * P + 100, 10, MemoryKind::AcpiNvs),
            region(10 * P, 2 * P, MemoryKind::Reserved),
        ];
        assert_eq!(free(&regions, &[]), [(0, 4 * P), (5 * P, 10 * P), (12 * P, 16 * P)]);
        // Order of the entries does not matter.
        let mut rev = regions;
        rev.reverse();
        assert_eq!(free(&rev, &[]), free(&regions, &[]));
        // Every non-usable kind blocks, including the reclaimable ones.
        for kind in [
            MemoryKind::AcpiReclaimable,
            MemoryKind::AcpiNvs,
            MemoryKind::Defective,
            MemoryKind::BootloaderReclaimable,
            MemoryKind::KernelAndModules,
            MemoryKind::Framebuffer,
            MemoryKind::Reserved,
        ] {
            assert_eq!(free(&[usable(0, 4 * P), region(P, P, kind)], &[]), [(0, P), (2 * P, 4 * P)]);
        }
    }

    #[test]
    fn reserved_ranges_split_regions() {
        let regions = [usable(0, 64 * P)];
        let reserved = [range(10 * P, 12 * P), range(30 * P + 1, 30 * P + 2), range(0, 1)];
        assert_eq!(free(&regions, &reserved), [(P, 10 * P), (12 * P, 30 * P), (31 * P, 64 * P)]);
        // Empty and inverted reserved ranges are ignored.
        let reserved = [range(5 * P, 5 * P), range(9 * P, 3 * P)];
        assert_eq!(free(&regions, &reserved), [(0, 64 * P)]);
        // A reserved range covering everything leaves nothing.
        assert_eq!(free(&regions, &[range(0, u64::MAX)]), []);
    }

    #[test]
    fn address_space_limits_do_not_overflow() {
        let top = u64::MAX;
        // Region running off the end of the address space: its end saturates.
        let regions = [usable(top - 8 * P + 1, u64::MAX)];
        assert_eq!(free(&regions, &[]), [(top - 8 * P + 1, top - P + 1)]);
        assert_eq!(highest_address(&regions), u64::MAX);
        // The last whole page below u64::MAX cannot end at 2^64, so it is not free.
        let regions = [usable(top - P + 1, P - 1)];
        assert_eq!(free(&regions, &[]), []);
        // Base near the top with a rounding-up overflow.
        assert_eq!(free(&[usable(top - 10, 5)], &[]), []);
        let reserved = [range(top - 3 * P, top)];
        assert_eq!(free(&[usable(0, u64::MAX)], &reserved), [(0, top - 3 * P - P + 1)]);
        assert_eq!(free(&[usable(u64::MAX, u64::MAX)], &[range(u64::MAX, u64::MAX)]), []);
    }

    #[test]
    fn caps_are_enforced() {
        let regions = [usable(0, P); MAX_MEMORY_REGIONS + 1];
        assert_eq!(for_each_free_range(&regions, &[], &mut |_| {}), Err(MemMapError::TooManyRegions));
        let reserved = [range(0, P); MAX_RESERVED + 1];
        assert_eq!(for_each_free_range(&[], &reserved, &mut |_| {}), Err(MemMapError::TooManyReserved));
        assert_eq!(total_free(&regions, &[]), Err(MemMapError::TooManyRegions));
        assert!(!MemMapError::TooManyReserved.to_string().is_empty());
        // At the caps it works.
        let regions = [usable(0, P); MAX_MEMORY_REGIONS];
        let reserved = [range(0, 1); MAX_RESERVED];
        assert_eq!(free(&regions, &reserved), []);
    }

    #[test]
    fn totals_and_highest_address() {
        let regions = [
            usable(0, 640 * K),
            region(640 * K, 384 * K, MemoryKind::Reserved),
            usable(1024 * K, 31 * 1024 * K),
            region(0xfee0_0000, P, MemoryKind::Reserved),
            region(0, 0, MemoryKind::Reserved),
        ];
        let reserved = [range(1024 * K, 2048 * K)];
        assert_eq!(total_free(&regions, &reserved), Ok(640 * K + 30 * 1024 * K));
        assert_eq!(highest_address(&regions), 0xfee0_0000 + P);
    }

    /// A minimal xorshift generator, so the randomized tests are reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Compare against a per-unit bitmap on a small address space. All boundaries are multiples
    /// of `UNIT` (smaller than a page), so a unit's state is exact.
    #[test]
    fn randomized_against_bitmap_reference() {
        const UNIT: u64 = 256;
        const PAGES: u64 = 32;
        const UNITS: u64 = PAGES * P / UNIT;
        const PER_PAGE: u64 = P / UNIT;
        let kinds = [MemoryKind::Usable, MemoryKind::Usable, MemoryKind::Reserved, MemoryKind::AcpiNvs];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let mut regions = Vec::new();
            for _ in 0..rng.below(8) {
                // Mostly page-aligned edges, sometimes not, sometimes long.
                let unit_step = if rng.below(2) == 0 { PER_PAGE } else { 1 };
                let base = rng.below(UNITS / unit_step) * unit_step * UNIT;
                let len = rng.below(UNITS / 2 / unit_step + 1) * unit_step * UNIT;
                let len = len.min(UNITS * UNIT - base); // stay inside the modelled space
                regions.push(region(base, len, kinds[rng.below(4) as usize]));
            }
            let mut reserved = Vec::new();
            for _ in 0..rng.below(4) {
                let a = rng.below(UNITS + 1) * UNIT;
                let b = rng.below(UNITS + 1) * UNIT;
                reserved.push(range(a, b)); // may be empty or inverted
            }

            let mut units = [false; UNITS as usize];
            for (u, state) in units.iter_mut().enumerate() {
                let x = u as u64 * UNIT;
                let inside = |s: u64, e: u64| s <= x && x < e;
                let any_usable = regions.iter().any(|r| r.kind == MemoryKind::Usable && inside(r.base, r.base + r.len));
                let any_other = regions.iter().any(|r| r.kind != MemoryKind::Usable && inside(r.base, r.base + r.len));
                let any_reserved = reserved.iter().any(|r| inside(r.start, r.end));
                *state = any_usable && !any_other && !any_reserved;
            }
            let mut expected: Vec<(u64, u64)> = Vec::new();
            for p in 0..PAGES {
                let whole = (0..PER_PAGE).all(|i| units[(p * PER_PAGE + i) as usize]);
                if whole {
                    match expected.last_mut() {
                        Some(last) if last.1 == p * P => last.1 += P,
                        _ => expected.push((p * P, (p + 1) * P)),
                    }
                }
            }
            assert_eq!(free(&regions, &reserved), expected, "{regions:?} {reserved:?}");
            let total: u64 = expected.iter().map(|(s, e)| e - s).sum();
            assert_eq!(total_free(&regions, &reserved), Ok(total));
        }
    }

    #[test]
    fn split_aligned_makes_aligned_power_of_two_blocks_covering_the_range() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let start = x % (1 << 34);
            let end = start + (x >> 40) % (1 << 30);
            let mut blocks = std::vec::Vec::new();
            split_aligned(start, end, 12, 30, &mut |b, bits| blocks.push((b, bits)));
            let mut at = start.next_multiple_of(1 << 12);
            for &(b, bits) in &blocks {
                assert_eq!(b, at, "contiguous");
                assert!((12..=30).contains(&bits));
                assert_eq!(b % (1 << bits), 0, "aligned");
                at = b + (1 << bits);
            }
            assert_eq!(at, if blocks.is_empty() { start.next_multiple_of(1 << 12).max(at) } else { end & !0xfff });
        }
        let mut blocks = std::vec::Vec::new();
        split_aligned(0x10_0000, 0x1000_0000, 12, 47, &mut |b, bits| blocks.push((b, bits)));
        assert_eq!(blocks[0], (0x10_0000, 20));
        assert_eq!(*blocks.last().unwrap(), (0x800_0000, 27));
        let mut none = 0;
        split_aligned(0x1001, 0x1fff, 12, 47, &mut |_, _| none += 1);
        assert_eq!(none, 0);
    }
}
