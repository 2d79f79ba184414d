//! Where the device's BAR pages are mapped: physical ranges to virtual ones, so the `Hal` can
//! answer `mmio_phys_to_virt` for addresses inside the device's own BARs, and for nothing else.

use alloc::vec::Vec;

/// One mapped BAR: `size` bytes at physical `phys`, virtual `virt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub phys: u64,
    pub virt: u64,
    pub size: u64,
}

/// The mapped BARs.
#[derive(Default)]
pub struct Window {
    bars: Vec<Mapped>,
}

impl Window {
    pub fn add(&mut self, m: Mapped) {
        self.bars.push(m);
    }

    /// The virtual address of `size` bytes at physical `paddr`, if they lie inside one mapped BAR.
    pub fn virt(&self, paddr: u64, size: u64) -> Option<u64> {
        self.bars.iter().find_map(|b| {
            let off = paddr.checked_sub(b.phys)?;
            (off.checked_add(size)? <= b.size).then_some(b.virt + off)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ranges_inside_a_bar_translate() {
        let mut w = Window::default();
        w.add(Mapped { phys: 0xfe00_0000, virt: 0x400_4000_0000, size: 0x4000 });
        assert_eq!(w.virt(0xfe00_0000, 4), Some(0x400_4000_0000));
        assert_eq!(w.virt(0xfe00_3ffc, 4), Some(0x400_4000_3ffc));
        assert_eq!(w.virt(0xfe00_3ffd, 4), None, "straddles the end");
        assert_eq!(w.virt(0xfdff_fffc, 4), None);
        assert_eq!(w.virt(0xfe00_0000, u64::MAX), None);
    }
}
