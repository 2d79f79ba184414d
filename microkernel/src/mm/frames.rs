//! The physical frame allocator: every free 4 KiB frame of the boot memory map, handed out by
//! `buddy_system_allocator`'s frame allocator (a buddy allocator over frame numbers).
//!
//! Frames are accessed through the direct map of physical memory (see `arch::x86_64::paging`);
//! before the kernel's own page tables are live, through the mapping the boot loader left
//! (identity for PVH/multiboot2, Limine's HHDM).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use buddy_system_allocator::LockedFrameAllocator;
use x86_64::structures::paging::{FrameAllocator, FrameDeallocator, PhysFrame, Size4KiB};
use x86_64::{PhysAddr, VirtAddr};

use crate::boot::PhysRange;

pub const FRAME_SIZE: u64 = 4096;

static FRAMES: LockedFrameAllocator<32> = LockedFrameAllocator::new();
static FREE_FRAMES: AtomicUsize = AtomicUsize::new(0);
/// Added to a physical address to reach it (loader offset at first, the direct map later).
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Make `[range.start, range.end)` (page-aligned) available.
pub fn add_free_range(range: PhysRange) {
    let (start, end) = ((range.start / FRAME_SIZE) as usize, (range.end / FRAME_SIZE) as usize);
    if end > start {
        FRAMES.lock().add_frame(start, end);
        FREE_FRAMES.fetch_add(end - start, Ordering::Relaxed);
    }
}

/// Number of free frames.
pub fn free_frames() -> usize {
    FREE_FRAMES.load(Ordering::Relaxed)
}

/// Set how physical memory is reached from now on.
pub fn set_phys_offset(offset: u64) {
    PHYS_OFFSET.store(offset, Ordering::Relaxed);
}

/// The current offset from physical to virtual addresses.
pub fn phys_offset() -> VirtAddr {
    VirtAddr::new(PHYS_OFFSET.load(Ordering::Relaxed))
}

/// Where physical address `phys` can be read and written right now.
pub fn phys_to_virt(phys: u64) -> *mut u8 {
    (PHYS_OFFSET.load(Ordering::Relaxed).wrapping_add(phys)) as *mut u8
}

/// One frame, zero-filled, or `None` when memory is exhausted.
pub fn alloc_zeroed() -> Option<PhysFrame> {
    let n = FRAMES.lock().alloc(1)?;
    FREE_FRAMES.fetch_sub(1, Ordering::Relaxed);
    let phys = n as u64 * FRAME_SIZE;
    // SAFETY: the frame was free, so nothing else refers to it, and it is reachable through the
    // current physical mapping.
    unsafe { core::ptr::write_bytes(phys_to_virt(phys), 0, FRAME_SIZE as usize) };
    Some(PhysFrame::containing_address(PhysAddr::new(phys)))
}

/// `2^order` contiguous frames, aligned to their size, zero-filled; returns the first.
pub fn alloc_block_zeroed(order: u8) -> Option<PhysFrame> {
    let count = 1usize << order;
    let n = FRAMES.lock().alloc(count)?;
    FREE_FRAMES.fetch_sub(count, Ordering::Relaxed);
    let phys = n as u64 * FRAME_SIZE;
    // SAFETY: the frames were free, so nothing else refers to them; they are reachable through
    // the current physical mapping.
    unsafe { core::ptr::write_bytes(phys_to_virt(phys), 0, count * FRAME_SIZE as usize) };
    Some(PhysFrame::containing_address(PhysAddr::new(phys)))
}

/// Give a frame back.
///
/// # Safety
/// Nothing may use the frame afterwards (no mapping, no page-table entry, no kernel pointer).
pub unsafe fn free(frame: PhysFrame) {
    FRAMES.lock().dealloc((frame.start_address().as_u64() / FRAME_SIZE) as usize, 1);
    FREE_FRAMES.fetch_add(1, Ordering::Relaxed);
}

/// The allocator as the `x86_64` crate's page-table code wants it.
pub struct KernelFrames;

// SAFETY: every frame returned is free, unique and zeroed.
unsafe impl FrameAllocator<Size4KiB> for KernelFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        alloc_zeroed()
    }
}

impl FrameDeallocator<Size4KiB> for KernelFrames {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame<Size4KiB>) {
        // SAFETY: the caller guarantees the frame is no longer used.
        unsafe { free(frame) }
    }
}
