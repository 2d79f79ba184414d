//! The program's start information (see [`crate::protocol::start`]), recorded by the runtime
//! before `run` is called.
//!
//! A leaf of the SDK's modules: it reads the page and nothing else. The runtime (`rt`) gives the
//! heap it describes to the allocator ([`crate::heap`]), and [`crate::rpc`] reads the protocol key
//! here, so neither of them is imported from this module.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::protocol::start::{START_MAGIC, StartInfo};

static START_INFO: AtomicU64 = AtomicU64::new(0);

/// Record the start-information page at `addr` if it is one (the runtime calls this with the
/// program's first `rdi`, then gives the heap it describes to the allocator). Returns the
/// information, or `None` if `addr` holds none.
///
/// # Safety
/// `addr` must be 0 or the address of a mapped, readable page that stays mapped.
pub unsafe fn record(addr: u64) -> Option<&'static StartInfo> {
    if addr == 0 || !addr.is_multiple_of(4096) {
        return None;
    }
    // SAFETY: per the contract, the page is mapped and readable, and stays so.
    let info: &'static StartInfo = unsafe { &*(addr as *const StartInfo) };
    if info.magic != START_MAGIC {
        return None;
    }
    START_INFO.store(addr, Ordering::Relaxed);
    Some(info)
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
