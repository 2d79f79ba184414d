//! Boot doors: one small parser per boot protocol, each filling one [`BootInfo`].
//!
//! * [`pvh`] — QEMU/Xen PVH direct boot (`hvm_start_info`), entered in 32-bit mode;
//! * [`multiboot2`] — GRUB's multiboot2 information structure, entered in 32-bit mode;
//! * [`limine`] — the Limine boot protocol (base revision 3, or 2 from older loaders), entered in
//!   64-bit mode.
//!
//! The 32-bit trampoline shared by PVH and multiboot2 lives in the arch layer
//! (`arch::x86_64::boot32`). The parsers read the loader's structures through [`PhysMemory`],
//! so the same code runs in the kernel (through the loader's mapping) and in host unit tests
//! (over synthetic byte buffers).

pub mod info;
pub mod limine;
pub mod multiboot2;
pub mod pvh;

pub use info::{AcpiRoot, BootInfo, BootInfoError, BootProtocol, MemoryKind, MemoryRegion, PhysRange};

/// Read access to physical memory as the boot loader left it.
pub trait PhysMemory {
    /// The `len` bytes at physical address `phys`, or `None` if that range cannot be read
    /// (outside the mapped range, or address overflow).
    fn bytes(&self, phys: u64, len: usize) -> Option<&[u8]>;
}

/// The little-endian `u32` at `off` in `bytes`, if it is in bounds.
pub(crate) fn le_u32(bytes: &[u8], off: usize) -> Option<u32> {
    let b = bytes.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

/// The little-endian `u64` at `off` in `bytes`, if it is in bounds.
pub(crate) fn le_u64(bytes: &[u8], off: usize) -> Option<u64> {
    let b = bytes.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// What the boot parsers' tests share.
#[cfg(test)]
pub(crate) mod testing {
    extern crate std;
    use std::vec::Vec;

    /// A `Vec<u8>` of physical memory starting at `base`.
    pub(crate) struct TestMem {
        pub(crate) base: u64,
        pub(crate) data: Vec<u8>,
    }

    impl super::PhysMemory for TestMem {
        fn bytes(&self, phys: u64, len: usize) -> Option<&[u8]> {
            let off = usize::try_from(phys.checked_sub(self.base)?).ok()?;
            self.data.get(off..off.checked_add(len)?)
        }
    }

    /// xorshift64*: a small deterministic generator for the fuzz loops.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }
}
