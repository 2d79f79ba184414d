//! The kernel's address space and user address spaces (x86_64 four-level paging).
//!
//! Layout of the top half, shared by every address space:
//!
//! | range                          | what                                                  |
//! |--------------------------------|-------------------------------------------------------|
//! | `0xffff_8000_0000_0000` + phys | direct map of all physical memory (RW, NX)            |
//! | `0xffff_c000_0000_0000` + ...  | MMIO window: device registers, uncached (RW, NX)      |
//! | `0xffff_ffff_8000_0000` + ...  | the kernel image, per section: text R-X, rodata R--, data/bss RW- |
//!
//! Every PML4 slot of the top half gets its PDPT at boot, before the first user address space is
//! made, so later kernel mappings appear in every address space without copying. Guard pages
//! below each kernel stack stay unmapped. The bottom half belongs to the user.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size1GiB, Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::boot::BootInfo;
use crate::mm::frames::{self, KernelFrames};

/// Where the direct map of physical memory starts.
pub const PHYS_MAP_BASE: u64 = 0xffff_8000_0000_0000;
/// Where device registers are mapped.
pub const MMIO_BASE: u64 = 0xffff_c000_0000_0000;
/// The kernel's link address minus its physical load address (PVH, multiboot2).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;

static KERNEL_PML4: AtomicU64 = AtomicU64::new(0);
static NEXT_MMIO: AtomicU64 = AtomicU64::new(MMIO_BASE);
/// The top of the physical memory the direct map covers.
static DIRECT_MAP_TOP: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

fn sym(s: *const u8) -> u64 {
    s as u64
}

/// Virtual bounds of the kernel image, page-aligned.
pub fn kernel_image() -> (u64, u64) {
    (sym(&raw const __kernel_start), sym(&raw const __kernel_end))
}

#[derive(Debug)]
pub enum PagingError {
    OutOfMemory,
    AlreadyMapped,
    NotMapped,
}

impl<S: x86_64::structures::paging::PageSize> From<MapToError<S>> for PagingError {
    fn from(e: MapToError<S>) -> Self {
        match e {
            MapToError::FrameAllocationFailed => PagingError::OutOfMemory,
            _ => PagingError::AlreadyMapped,
        }
    }
}

/// A page table hierarchy reached through the current physical offset.
fn mapper(pml4: PhysFrame) -> OffsetPageTable<'static> {
    let table = frames::phys_to_virt(pml4.start_address().as_u64()) as *mut PageTable;
    // SAFETY: `pml4` is a page-table frame owned by the kernel, reachable through the current
    // physical offset, and all of its sub-tables are too; callers do not hold another mapper to
    // the same tables at the same time.
    unsafe { OffsetPageTable::new(&mut *table, frames::phys_offset()) }
}

/// Build the kernel's page tables and switch to them. Returns the top of physical memory mapped.
///
/// Before this the loader's mapping is in use (identity or HHDM, via `frames::phys_offset`);
/// after it, the direct map at [`PHYS_MAP_BASE`].
pub fn init_kernel_space(boot: &BootInfo, guard_pages: &[VirtAddr], use_1g_pages: bool) -> Result<u64, PagingError> {
    let pml4 = frames::alloc_zeroed().ok_or(PagingError::OutOfMemory)?;
    let mut m = mapper(pml4);
    let mut alloc = KernelFrames;

    // Pre-create every top-half PDPT so all address spaces share them.
    {
        let table = m.level_4_table_mut();
        for entry in table.iter_mut().skip(256) {
            let pdpt = frames::alloc_zeroed().ok_or(PagingError::OutOfMemory)?;
            entry.set_frame(pdpt, F::PRESENT | F::WRITABLE);
        }
    }

    // The kernel image, section by section.
    let (text, text_end, ro, ro_end, data, end) = (
        sym(&raw const __text_start),
        sym(&raw const __text_end),
        sym(&raw const __rodata_start),
        sym(&raw const __rodata_end),
        sym(&raw const __data_start),
        sym(&raw const __kernel_end),
    );
    let (image_start, _) = kernel_image();
    let phys_of = |v: u64| v - image_start + boot.kernel_phys_base;
    let sections = [
        (text, text_end, F::PRESENT | F::GLOBAL),
        (ro, ro_end, F::PRESENT | F::GLOBAL | F::NO_EXECUTE),
        (data, end, F::PRESENT | F::GLOBAL | F::WRITABLE | F::NO_EXECUTE),
    ];
    for (start, end, flags) in sections {
        let mut v = start;
        while v < end {
            if !guard_pages.iter().any(|g| g.as_u64() == v) {
                let page = Page::<Size4KiB>::containing_address(VirtAddr::new(v));
                let frame = PhysFrame::containing_address(PhysAddr::new(phys_of(v)));
                // SAFETY: maps the kernel's own image onto its physical pages, in tables not yet
                // in use.
                unsafe {
                    m.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut alloc)?.ignore()
                };
            }
            v += 4096;
        }
    }

    // The direct map: all memory the firmware describes as RAM (usable, ACPI, loader, kernel),
    // and at least the 32-bit space (ACPI tables, firmware areas). Reserved ranges above 4 GiB
    // are device windows: those get their own uncached mappings (`map_mmio`) when needed.
    let ram_top = boot
        .regions()
        .iter()
        .filter(|r| r.kind != crate::boot::MemoryKind::Reserved)
        .map(|r| r.end())
        .max()
        .unwrap_or(0);
    let huge = if use_1g_pages { 1u64 << 30 } else { 1u64 << 21 };
    let top = ram_top.max(1 << 32).next_multiple_of(huge);
    let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::GLOBAL;
    let mut p = 0;
    while p < top {
        let virt = VirtAddr::new(PHYS_MAP_BASE + p);
        let phys = PhysAddr::new(p);
        // SAFETY: the direct map aliases physical memory in the kernel half, never executable.
        unsafe {
            if use_1g_pages {
                let page = Page::<Size1GiB>::containing_address(virt);
                let frame = PhysFrame::<Size1GiB>::containing_address(phys);
                m.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut alloc)?.ignore();
            } else {
                let page = Page::<Size2MiB>::containing_address(virt);
                let frame = PhysFrame::<Size2MiB>::containing_address(phys);
                m.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut alloc)?.ignore();
            }
        }
        p += huge;
    }

    // The loader's low mappings go away here; nothing refers to them any more (physical memory
    // is reached through the direct map once `set_phys_offset` runs, before any further access).
    // SAFETY: the new tables map the kernel image at the same virtual addresses, so it goes on.
    unsafe { Cr3::write(pml4, Cr3Flags::empty()) };
    frames::set_phys_offset(PHYS_MAP_BASE);
    KERNEL_PML4.store(pml4.start_address().as_u64(), Ordering::Relaxed);
    DIRECT_MAP_TOP.store(top, Ordering::Relaxed);
    Ok(top)
}

/// Map `size` bytes of device registers at `phys`, uncached; returns their virtual address.
pub fn map_mmio(phys: u64, size: u64) -> Result<VirtAddr, PagingError> {
    let first = phys & !0xfff;
    let last = (phys + size.max(1) - 1) & !0xfff;
    let pages = (last - first) / 4096 + 1;
    let base = NEXT_MMIO.fetch_add(pages * 4096, Ordering::Relaxed);
    let mut m = mapper(PhysFrame::containing_address(PhysAddr::new(KERNEL_PML4.load(Ordering::Relaxed))));
    for i in 0..pages {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(base + i * 4096));
        let frame = PhysFrame::containing_address(PhysAddr::new(first + i * 4096));
        let flags = F::PRESENT | F::WRITABLE | F::NO_EXECUTE | F::NO_CACHE | F::WRITE_THROUGH | F::GLOBAL;
        // SAFETY: a fresh virtual page in the MMIO window, mapped onto device registers.
        unsafe { m.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut KernelFrames)?.flush() };
    }
    Ok(VirtAddr::new(base + (phys - first)))
}

/// Kernel (direct-map) address of the kernel's PML4.
pub fn kernel_pml4_kaddr() -> u64 {
    KERNEL_PML4.load(Ordering::Relaxed) + PHYS_MAP_BASE
}

/// The top of the physical memory the direct map covers (after [`init_kernel_space`]).
pub fn direct_map_top() -> u64 {
    DIRECT_MAP_TOP.load(Ordering::Relaxed)
}

/// The physical address `vaddr` has in the kernel's own page tables.
pub fn kernel_translate(vaddr: u64) -> Option<u64> {
    let m = mapper(PhysFrame::containing_address(PhysAddr::new(KERNEL_PML4.load(Ordering::Relaxed))));
    m.translate_addr(VirtAddr::try_new(vaddr).ok()?).map(|p| p.as_u64())
}

/// A new PML4 whose only mappings are the skim window's trampoline pages (`kpti.rs`): each
/// 4 KiB page of `pages` at its kernel address, onto the frame the kernel's tables map it to,
/// supervisor-only, read-only unless writable, no-execute unless executable; its tables are
/// supervisor-only too. Returns its kernel (direct-map) address.
pub fn build_trampoline(pages: &[crate::mm::skim::TrampolinePage]) -> Result<u64, PagingError> {
    let pml4 = frames::alloc_zeroed().ok_or(PagingError::OutOfMemory)?;
    let mut m = mapper(pml4);
    for p in pages {
        let phys = kernel_translate(p.vaddr).ok_or(PagingError::NotMapped)?;
        let mut flags = F::PRESENT;
        if p.writable {
            flags |= F::WRITABLE;
        }
        if !p.executable {
            flags |= F::NO_EXECUTE;
        }
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(p.vaddr));
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        // SAFETY: a fresh hierarchy no CPU uses yet; it aliases a kernel page onto the frame the
        // kernel's own tables give it, with no more access than there.
        unsafe { m.map_to_with_table_flags(page, frame, flags, F::PRESENT | F::WRITABLE, &mut KernelFrames)?.ignore() };
    }
    Ok(pml4.start_address().as_u64() + PHYS_MAP_BASE)
}
