//! The program's start information (see [`crate::protocol::start`]), recorded by the runtime
//! before `run` is called.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::start::{START_MAGIC, StartInfo};

static START_INFO: AtomicU64 = AtomicU64::new(0);

/// Record the start-information page at `addr` if it is one (the runtime calls this with the
/// program's first `rdi`); sets up the heap Studio mapped. Returns whether it was one.
///
/// # Safety
/// `addr` must be 0 or the address of a mapped, readable page that stays mapped.
pub unsafe fn record(addr: u64) -> bool {
    if addr == 0 || !addr.is_multiple_of(4096) {
        return false;
    }
    // SAFETY: per the contract, the page is mapped and readable.
    let info = unsafe { &*(addr as *const StartInfo) };
    if info.magic != START_MAGIC {
        return false;
    }
    START_INFO.store(addr, Ordering::Relaxed);
    if info.heap_size > 0 {
        // SAFETY: Studio maps the heap writable for this program alone.
        unsafe { crate::heap::init(info.heap_base, info.heap_size) };
    }
    true
}

/// This program's start information, if Studio started it.
pub fn info() -> Option<&'static StartInfo> {
    let a = START_INFO.load(Ordering::Relaxed);
    // SAFETY: `record` checked the page; Studio keeps it mapped read-only for the program's life.
    (a != 0).then(|| unsafe { &*(a as *const StartInfo) })
}

/// The instance's protocol key (0, the identity numbering, for programs Studio did not start).
pub fn protocol_key() -> u64 {
    info().map_or(0, |i| i.protocol_key)
}

/// This program's name ("root" when Studio did not start it).
pub fn name() -> &'static str {
    info().map_or("root", |i| i.name())
}
