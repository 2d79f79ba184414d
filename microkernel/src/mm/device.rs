//! Where device memory is: the physical ranges the root task gets as device untyped memory, so
//! that user drivers can reach PCI BARs, MMCONFIG and framebuffers as frames.
//!
//! Two parts:
//!
//! * the **32-bit hole**: from the top of RAM below 4 GiB (rounded up to 1 MiB) to the I/O APIC
//!   and local APIC pages the kernel keeps (`DEVICE_TOP` in `kmain.rs`);
//! * the **high space**: from above everything the kernel maps (its direct map of RAM, which
//!   covers at least the low 4 GiB) up to the CPU's physical address width (CPUID
//!   0x80000008), capped at 2^[`MAX_PHYS_BITS`]. This is where firmware puts 64-bit BARs (QEMU
//!   q35's 64-bit PCI window starts at the first 1 GiB boundary above RAM).
//!
//! Every region of the firmware's memory map, of any kind, is cut out of the high space: device
//! untyped memory never overlaps RAM, firmware areas or kernel memory. Starting above the direct
//! map also means a device frame is never reachable through the kernel's cached map of physical
//! memory. The cap of 2^46 bytes (64 TiB) is the size of the direct-map window
//! (`0xffff_8000_0000_0000`, then the MMIO window at `0xffff_c000_0000_0000`): capabilities name
//! memory by its kernel address (physical address + that base), so a device untyped's address
//! stays inside the window and never aliases the kernel's MMIO window or image. Device memory is
//! never read, written or zeroed by the kernel: Retype makes frames of it without touching it,
//! and DebugWrite refuses a buffer in it (`Platform::device_memory`).
//!
//! Portable and host-tested.

use crate::boot::info::{MemoryRegion, PhysRange};

/// The highest physical address width used for device memory (see the module doc).
pub const MAX_PHYS_BITS: u8 = 46;
/// The most high device ranges reported (the memory map cuts the space into pieces).
pub const MAX_HIGH_RANGES: usize = 8;

/// The high device ranges: `[floor, 2^phys_bits)` with `phys_bits` capped at [`MAX_PHYS_BITS`]
/// and `floor` raised to at least 4 GiB, minus every region of `regions`, each range aligned to
/// 4 KiB. Ranges past [`MAX_HIGH_RANGES`] are dropped, counted in the second result.
pub fn high_ranges(
    regions: &[MemoryRegion],
    floor: u64,
    phys_bits: u8,
) -> ([PhysRange; MAX_HIGH_RANGES], usize, usize) {
    let top = 1u64 << phys_bits.min(MAX_PHYS_BITS);
    let mut out = [PhysRange { start: 0, end: 0 }; MAX_HIGH_RANGES];
    let (mut n, mut dropped) = (0, 0);
    let mut at = floor.max(1 << 32).checked_next_multiple_of(4096).unwrap_or(u64::MAX);
    while at < top {
        // A region containing `at` moves it past the region.
        if let Some(r) = regions.iter().find(|r| r.base <= at && at < r.end()) {
            at = r.end().checked_next_multiple_of(4096).unwrap_or(u64::MAX);
            continue;
        }
        // Free up to the next region's start, or the top.
        let end = regions.iter().map(|r| r.base).filter(|&b| b > at).min().unwrap_or(top).min(top) & !0xfff;
        if end > at {
            if n < MAX_HIGH_RANGES {
                out[n] = PhysRange { start: at, end };
                n += 1;
            } else {
                dropped += 1;
            }
        }
        at = end.max(at + 4096);
    }
    (out, n, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::info::MemoryKind;

    const G: u64 = 1 << 30;

    fn region(base: u64, len: u64, kind: MemoryKind) -> MemoryRegion {
        MemoryRegion { base, len, kind }
    }

    fn ranges(regions: &[MemoryRegion], floor: u64, bits: u8) -> std::vec::Vec<(u64, u64)> {
        let (r, n, dropped) = high_ranges(regions, floor, bits);
        assert_eq!(dropped, 0);
        r[..n].iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn small_ram_gives_everything_from_4_gib_to_the_address_width() {
        let map = [region(0, 2 * G, MemoryKind::Usable), region(0xfeff_c000, 0x4000, MemoryKind::Reserved)];
        assert_eq!(ranges(&map, 4 * G, 40), [(4 * G, 1 << 40)]);
    }

    #[test]
    fn ram_above_4_gib_and_reserved_holes_are_cut_out() {
        let map = [
            region(0, 2 * G, MemoryKind::Usable),
            region(4 * G, 2 * G + 0x1234, MemoryKind::Usable),
            region(0xfd_0000_0000, 0x3_0000_0000, MemoryKind::Reserved),
        ];
        // The floor (the direct map's top) is below the RAM's end: RAM is cut out anyway.
        assert_eq!(ranges(&map, 4 * G, 40), [(6 * G + 0x2000, 0xfd_0000_0000)]);
    }

    #[test]
    fn the_direct_map_top_is_the_floor() {
        let map = [region(0, 5 * G + 3, MemoryKind::Usable)];
        assert_eq!(ranges(&map, 6 * G, 36), [(6 * G, 64 * G)]);
    }

    #[test]
    fn the_width_is_capped_and_nothing_overflows() {
        let map = [region(u64::MAX - 4096, 4096, MemoryKind::Reserved)];
        assert_eq!(ranges(&map, 0, 52), [(4 * G, 1 << MAX_PHYS_BITS)]);
        assert_eq!(ranges(&[], u64::MAX, 40), []);
        assert_eq!(ranges(&[], 0, 32), [], "no high space on a 32-bit-address CPU");
    }

    #[test]
    fn ranges_past_the_bound_are_counted() {
        let map: std::vec::Vec<_> = (0..12).map(|i| region(8 * G + i * 2 * G, G, MemoryKind::Reserved)).collect();
        let (_, n, dropped) = high_ranges(&map, 0, 40);
        assert_eq!((n, dropped), (MAX_HIGH_RANGES, 13 - MAX_HIGH_RANGES));
    }
}
