//! Boot doors: one small parser per boot protocol, each filling one [`BootInfo`].
//!
//! * [`pvh`] — QEMU/Xen PVH direct boot (`hvm_start_info`), entered in 32-bit mode;
//! * [`multiboot2`] — GRUB's multiboot2 information structure, entered in 32-bit mode;
//! * [`limine`] — the Limine boot protocol (base revision 3), entered in 64-bit mode.
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
