//! The program's pending signal word: bits its notification delivered to a wait that was not
//! waiting for them.
//!
//! Every program Studio starts has one notification, bound to its thread (slot `NOTIFICATION`).
//! Several parts of a program wait on it for different bits: [`crate::timer`] waits for
//! `TIMER_SIGNAL`; a server's receive ([`crate::rpc::Server`]) gets the rest (interrupts, the
//! shaper's `CONTROL_SIGNAL`, Studio's signals) with its messages. A wait on a notification takes
//! the whole word, so a wait that takes bits it is not looking for [`stash`]es them here, and
//! every other wait of the SDK [`take`]s them from here before it blocks: no bit is lost,
//! whichever wait happens to be running when it arrives.
//!
//! A leaf module: it only keeps the word.

use core::sync::atomic::{AtomicU64, Ordering};

static PENDING: AtomicU64 = AtomicU64::new(0);

/// Keep `bits` for the wait that looks for them.
pub fn stash(bits: u64) {
    if bits != 0 {
        PENDING.fetch_or(bits, Ordering::Relaxed);
    }
}

/// Take the pending bits of `mask` (clearing them); 0 if none is pending.
#[inline]
pub fn take(mask: u64) -> u64 {
    // The common case, nothing pending, without a locked read-modify-write.
    if PENDING.load(Ordering::Relaxed) & mask == 0 {
        return 0;
    }
    PENDING.fetch_and(!mask, Ordering::Relaxed) & mask
}

/// The pending bits, left pending.
pub fn pending() -> u64 {
    PENDING.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_are_kept_until_taken_by_mask() {
        // One test owns the (process-wide) word.
        stash(0b1010);
        stash(0);
        assert_eq!(pending(), 0b1010);
        assert_eq!(take(0b0010), 0b0010);
        assert_eq!(take(0b0010), 0);
        assert_eq!(pending(), 0b1000);
        stash(1 << 44);
        assert_eq!(take(u64::MAX), 0b1000 | 1 << 44);
        assert_eq!(pending(), 0);
    }
}
