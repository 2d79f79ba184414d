//! The secure memory server's logic (crate `ozone-secmem`; the program is `src/main.rs`).
//!
//! - [`service`]: the requests (`protocol::secmem`) on top of a [`kernel::Kernel`];
//! - [`funds`]: each client's memory, granted by Studio from the client's own quota;
//! - [`buddy`]: one grant of untyped memory, split and merged as a buddy system so that freed
//!   memory is reclaimed exactly;
//! - [`window`]: addresses in a program's share window, with guard pages;
//! - [`regions`]: the region table, ownership, offers and limits;
//! - [`seal`]: sealed blobs (ChaCha20-Poly1305, per-instance key, bound to the program id);
//! - its own CNode slots are managed with the SDK's [`ozone_agent_sdk::slots::Slots`].
//!
//! Everything here also builds on the host, where `cargo test -p ozone-secmem` runs the whole
//! service against a model of the kernel (`fake.rs`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod buddy;
pub mod funds;
pub mod kernel;
pub mod regions;
pub mod seal;
pub mod service;
pub mod window;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use ozone_agent_sdk::protocol::start::slot;

/// Slots `FIRST_FREE..STUDIO_SLOTS_END` of the server's CNode are Studio's to fill (address-space
/// copies from `VSPACE_OF`, name lookups); the server manages the slots from there to the end.
pub const STUDIO_SLOTS_END: u64 = 256;

const _: () = assert!(slot::FIRST_FREE < STUDIO_SLOTS_END);

/// The slots `[first, end)` the server manages itself in a CNode of `radix` bits: from
/// [`STUDIO_SLOTS_END`] up, or — in a CNode too small for that (under 1024 slots) — its upper
/// three quarters, leaving the rest from `FIRST_FREE` to Studio.
pub fn server_slots(radix: u64) -> (u64, u64) {
    let end = 1u64 << radix.min(24);
    let first = if end >= 4 * STUDIO_SLOTS_END { STUDIO_SLOTS_END } else { (end / 4).max(slot::FIRST_FREE) };
    (first, end.max(first))
}

#[cfg(test)]
mod slot_range_tests {
    use super::*;

    #[test]
    fn studio_and_the_server_never_share_a_slot() {
        assert_eq!(server_slots(12), (256, 4096));
        assert_eq!(server_slots(10), (256, 1024));
        assert_eq!(server_slots(8), (64, 256));
        assert_eq!(server_slots(4), (slot::FIRST_FREE, slot::FIRST_FREE), "nothing: every slot is a fixed one");
        assert_eq!(server_slots(64), (256, 1 << 24));
        for r in 0..30 {
            let (a, b) = server_slots(r);
            assert!(a >= slot::FIRST_FREE && a <= b);
        }
    }
}
