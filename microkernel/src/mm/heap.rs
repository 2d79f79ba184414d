//! The kernel heap: `buddy_system_allocator` over a fixed region in `.bss`.
//!
//! The heap holds kernel-internal bookkeeping only (the frame allocator's free lists, ACPI table
//! parsing). Objects made for userspace never come from here: from the capability kernel on they
//! are carved out of untyped memory the user holds.

use buddy_system_allocator::LockedHeap;
use core::cell::UnsafeCell;

const HEAP_SIZE: usize = 2 * 1024 * 1024;

#[repr(C, align(4096))]
struct HeapSpace(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: the region is handed to the allocator once and only ever touched through it.
unsafe impl Sync for HeapSpace {}

static SPACE: HeapSpace = HeapSpace(UnsafeCell::new([0; HEAP_SIZE]));

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// The heap's virtual range `[start, end)` (the skim window checks it maps none of it).
pub fn range() -> (u64, u64) {
    let start = SPACE.0.get() as u64;
    (start, start + HEAP_SIZE as u64)
}

/// Give the heap its memory. Called once, early in boot.
pub fn init() {
    // SAFETY: SPACE is 'static, unused by anything else, and `init` runs once.
    unsafe { HEAP.lock().init(SPACE.0.get() as usize, HEAP_SIZE) };
}
