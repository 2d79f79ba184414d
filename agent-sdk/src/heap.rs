//! The program's heap: `alloc` (Box, Vec, String, ...) over memory the program was given.
//!
//! A program gets its heap as frames mapped into its address space — by whoever starts it
//! (Studio, from the memory quota in the system description), or, for the root task, by itself
//! from untyped memory ([`crate::root::Root::map_heap`]). [`init`] hands that range to the
//! allocator, `buddy_system_allocator`'s heap behind a spin lock. Allocation failure is reported
//! by the `alloc` crate's handler (a panic: the thread prints it and exits).

#[cfg(target_os = "none")]
use buddy_system_allocator::LockedHeap;

#[cfg(target_os = "none")]
#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Give the heap `[base, base + size)`, which must be mapped, writable and used for nothing
/// else. More ranges may be added later.
///
/// # Safety
/// The range must be valid, writable memory owned by this program for as long as it runs.
pub unsafe fn init(base: u64, size: u64) {
    #[cfg(target_os = "none")]
    // SAFETY: per the contract.
    unsafe {
        HEAP.lock().add_to_heap(base as usize, (base + size) as usize)
    };
    #[cfg(not(target_os = "none"))]
    let _ = (base, size);
}

/// Bytes allocated now.
pub fn used() -> usize {
    #[cfg(target_os = "none")]
    return HEAP.lock().stats_alloc_actual();
    #[cfg(not(target_os = "none"))]
    0
}

/// Bytes the heap has in all.
pub fn total() -> usize {
    #[cfg(target_os = "none")]
    return HEAP.lock().stats_total_bytes();
    #[cfg(not(target_os = "none"))]
    0
}

/// Ask Studio for `pages` more heap pages from this program's memory quota and add them to the
/// heap. Returns the bytes added. Fails with `ServiceError::QuotaExceeded` when the quota has no
/// room (nothing is added then).
pub fn grow(pages: u64) -> crate::Result<u64> {
    use crate::protocol::studio::method;
    let studio = crate::rpc::Client::studio();
    let before = studio.call(method::MY_MEMORY, &())?;
    let end = studio.call(method::GROW_HEAP, &pages)?;
    let added = end.saturating_sub(before.heap_end);
    if added > 0 {
        // SAFETY: Studio just mapped [heap_end, end) writable in this address space, for this
        // program alone, right after the heap it already has.
        unsafe { init(before.heap_end, added) };
    }
    Ok(added)
}
