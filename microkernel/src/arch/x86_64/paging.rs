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
use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
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

    // SAFETY: the new tables map the kernel image (code, stacks, data) at the same virtual
    // addresses as before, so execution continues; the loader's low mappings go away, and
    // nothing refers to them any more (physical memory is reached through the direct map once
    // `set_phys_offset` below runs, before any further access).
    unsafe { Cr3::write(pml4, Cr3Flags::empty()) };
    frames::set_phys_offset(PHYS_MAP_BASE);
    KERNEL_PML4.store(pml4.start_address().as_u64(), Ordering::Relaxed);
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

/// A user buffer is not (entirely) mapped user-accessible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadUserBuffer;

/// Access rights of a user mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserFlags {
    pub write: bool,
    pub exec: bool,
}

/// A user address space: a PML4 whose top half is the kernel's.
pub struct AddressSpace {
    pml4: PhysFrame,
}

impl AddressSpace {
    /// A new, empty user address space.
    pub fn new() -> Result<AddressSpace, PagingError> {
        let pml4 = frames::alloc_zeroed().ok_or(PagingError::OutOfMemory)?;
        let kernel = KERNEL_PML4.load(Ordering::Relaxed);
        // SAFETY: both frames are page tables reachable through the direct map; the new one is
        // not in use yet.
        unsafe {
            let src = &*(frames::phys_to_virt(kernel) as *const PageTable);
            let dst = &mut *(frames::phys_to_virt(pml4.start_address().as_u64()) as *mut PageTable);
            for i in 256..512 {
                dst[i] = src[i].clone();
            }
        }
        Ok(AddressSpace { pml4 })
    }

    /// Map a fresh zeroed frame at user page `vaddr`.
    pub fn map_new_page(&mut self, vaddr: u64, flags: UserFlags) -> Result<PhysFrame, PagingError> {
        debug_assert!(vaddr < ozone_abi::USER_TOP);
        let frame = frames::alloc_zeroed().ok_or(PagingError::OutOfMemory)?;
        let mut f = F::PRESENT | F::USER_ACCESSIBLE;
        if flags.write {
            f |= F::WRITABLE;
        }
        if !flags.exec {
            f |= F::NO_EXECUTE;
        }
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let mut m = mapper(self.pml4);
        // SAFETY: a user page in this address space, onto a fresh frame nobody else maps.
        let table_flags = F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE;
        match unsafe { m.map_to_with_table_flags(page, frame, f, table_flags, &mut KernelFrames) } {
            Ok(flush) => flush.ignore(),
            Err(e) => {
                // SAFETY: the frame was never mapped.
                unsafe { frames::free(frame) };
                return Err(e.into());
            }
        }
        Ok(frame)
    }

    /// The physical address behind user address `vaddr`, if it is mapped user-accessible
    /// (and writable, if `write`).
    pub fn translate_user(&self, vaddr: u64, write: bool) -> Option<u64> {
        if vaddr >= ozone_abi::USER_TOP {
            return None;
        }
        let m = mapper(self.pml4);
        match m.translate(VirtAddr::new(vaddr)) {
            TranslateResult::Mapped { frame, offset, flags } => {
                let ok = flags.contains(F::USER_ACCESSIBLE) && (!write || flags.contains(F::WRITABLE));
                ok.then(|| frame.start_address().as_u64() + offset)
            }
            _ => None,
        }
    }

    /// Frames this address space uses for its user half: page tables and mapped pages.
    pub fn user_frames(&self) -> usize {
        let mut n = 0;
        walk_user_half(self.pml4, &mut |_frame| n += 1);
        n
    }

    /// Make this the current address space.
    pub fn activate(&self) {
        // SAFETY: the top half is the kernel's, so the kernel keeps running unchanged.
        unsafe { Cr3::write(self.pml4, Cr3Flags::empty()) };
    }

    /// Copy `out.len()` bytes of user memory at `vaddr` into `out`, reading through the direct
    /// map (never through the user mapping, so SMAP stays on). Fails if any byte is not mapped
    /// user-accessible.
    pub fn copy_from_user(&self, vaddr: u64, out: &mut [u8]) -> Result<(), BadUserBuffer> {
        let mut done = 0usize;
        while done < out.len() {
            let va = vaddr.checked_add(done as u64).ok_or(BadUserBuffer)?;
            let phys = self.translate_user(va, false).ok_or(BadUserBuffer)?;
            let in_page = (4096 - (va & 0xfff)) as usize;
            let n = in_page.min(out.len() - done);
            // SAFETY: [phys, phys+n) lies in one mapped user frame, reached via the direct map.
            unsafe { core::ptr::copy_nonoverlapping(frames::phys_to_virt(phys), out[done..].as_mut_ptr(), n) };
            done += n;
        }
        Ok(())
    }

    /// Write `bytes` to user memory at `vaddr` through the direct map (ignoring the user
    /// mapping's write permission: used by the loader to fill read-only segments).
    pub fn write_user(&mut self, vaddr: u64, bytes: &[u8]) -> Result<(), BadUserBuffer> {
        let mut done = 0usize;
        while done < bytes.len() {
            let va = vaddr.checked_add(done as u64).ok_or(BadUserBuffer)?;
            let phys = self.translate_user(va, false).ok_or(BadUserBuffer)?;
            let in_page = (4096 - (va & 0xfff)) as usize;
            let n = in_page.min(bytes.len() - done);
            // SAFETY: [phys, phys+n) lies in one mapped user frame, reached via the direct map.
            unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), frames::phys_to_virt(phys), n) };
            done += n;
        }
        Ok(())
    }
}

/// Visit every frame of the user half of `pml4`, leaves before the tables that hold them (so a
/// visitor may free each frame as it goes). User mappings are 4 KiB pages only.
fn walk_user_half(pml4: PhysFrame, visit: &mut dyn FnMut(PhysFrame)) {
    fn table(frame: PhysFrame) -> &'static PageTable {
        // SAFETY: `frame` is a page table of an address space the kernel owns, reached through
        // the direct map; the walk only reads it (the visitor frees a table after its entries).
        unsafe { &*(frames::phys_to_virt(frame.start_address().as_u64()) as *const PageTable) }
    }
    fn walk(frame: PhysFrame, level: u8, visit: &mut dyn FnMut(PhysFrame)) {
        for entry in table(frame).iter() {
            if !entry.flags().contains(F::PRESENT) {
                continue;
            }
            let child = PhysFrame::containing_address(entry.addr());
            if level > 1 {
                walk(child, level - 1, visit);
            }
            visit(child);
        }
    }
    for entry in table(pml4).iter().take(256) {
        if entry.flags().contains(F::PRESENT) {
            let pdpt = PhysFrame::containing_address(entry.addr());
            walk(pdpt, 3, visit);
            visit(pdpt);
        }
    }
}

impl Drop for AddressSpace {
    /// Give back every frame of the user half and the PML4 itself. The kernel switches to its own
    /// page tables first if this address space is the current one.
    fn drop(&mut self) {
        let (current, _) = Cr3::read();
        if current == self.pml4 {
            let kernel = PhysFrame::containing_address(PhysAddr::new(KERNEL_PML4.load(Ordering::Relaxed)));
            // SAFETY: the kernel's tables map the kernel identically; the user half goes away.
            unsafe { Cr3::write(kernel, Cr3Flags::empty()) };
        }
        // SAFETY (for each frame): the address space is no longer current and nothing else maps
        // its user frames or refers to its tables.
        walk_user_half(self.pml4, &mut |frame| unsafe { frames::free(frame) });
        // SAFETY: as above, for the top-level table.
        unsafe { frames::free(self.pml4) };
    }
}
