//! The `timer` interface of the timer server (`servers/timer`): deadlines on the system's
//! monotonic clock, signalled on the client's own notification.
//!
//! **The clock** is the time stamp counter (TSC), read by every program itself
//! (`crate::timer::now`, no server call). Deadlines and periods are absolute TSC values and
//! TSC ticks; [`Clock::tsc_hz`] (asked once with [`method::CLOCK`]) converts durations. The
//! timer server measures that rate against the PIT (1,193,182 Hz) when it starts.
//!
//! **Waking.** A client holds one deadline (or one periodic timer) at the server: [`method::ARM`]
//! replaces whatever it had. The server answers at once; when the TSC reaches the deadline it
//! signals [`TIMER_SIGNAL`] on the client's notification (slot `NOTIFICATION`, bound to its
//! thread), through a signal-only copy Studio put in the server's CNode when it gave the client
//! the interface (`signals_clients` in the system description). A deadline already past is
//! signalled before the answer. A signal is a bit: it says "look at the clock", never more; a
//! waiter checks the TSC, so a stray or late signal never wakes it early.
//!
//! **Errors.** A deadline more than [`Clock::max_ahead`] ticks away, or a period below
//! [`Clock::min_period`], is `InvalidArgument`; a caller with no signal capability at the server
//! (Studio gave it none) is `NotFound`; `Busy` before the server has measured its clock.

use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "timer";

/// The bit the timer server signals on a client's notification at its deadline. Stable: the
/// SDK's waits (and interruptible calls) filter on it. Distinct from every other signal bit of
/// the system (Studio's `LOG_SIGNAL` 1<<40 and `SERIAL_SIGNAL` 1<<41, the shaper's
/// `CONTROL_SIGNAL` 1<<42, [`PIT_SIGNAL`] 1<<43) and above every program id.
pub const TIMER_SIGNAL: u64 = 1 << 44;

/// The bit the timer server signals on Studio's notification, every [`STUDIO_TICK_US`], when
/// Studio gave it a capability to (slot [`STUDIO_TICK_SLOT`] of its CNode): Studio reads the
/// programs' event traces then. Distinct from every other signal bit.
pub const STUDIO_TICK: u64 = 1 << 45;
/// The period of Studio's tick, in microseconds.
pub const STUDIO_TICK_US: u64 = 5_000;
/// Where the timer server finds its capability to signal Studio's tick: the slot
/// `client_signal` would give program id 0, which no program has (ids start at 1).
pub const STUDIO_TICK_SLOT: u64 = super::start::slot::CLIENT_SIGNALS;
/// The bit the PIT's interrupt (the `pit` device) signals on the timer server's own
/// notification.
pub const PIT_SIGNAL: u64 = 1 << 43;

/// The PIT's input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// `PERIODIC`: signal at `first`, then every `period` ticks after it (missed periods are not
/// signalled twice: a signal is a bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Periodic {
    /// The first deadline (absolute TSC).
    pub first: u64,
    /// TSC ticks between deadlines, at least [`Clock::min_period`].
    pub period: u64,
}

/// The clock's figures (`CLOCK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clock {
    /// TSC ticks per second, as the timer server measured them against the PIT.
    pub tsc_hz: u64,
    /// The shortest period `PERIODIC` accepts, in TSC ticks (100 µs).
    pub min_period: u64,
    /// The farthest a deadline may lie ahead of the server's clock, in TSC ticks (one week).
    pub max_ahead: u64,
}

super::methods! {
    /// `u64` → `()`: signal the caller at this absolute TSC value (replaces its timer).
    ARM = 0: u64 => ();
    /// `()` → `()`: cancel the caller's timer (nothing armed is no error).
    DISARM = 1: () => ();
    /// `Periodic` → `()`: signal the caller every `period` ticks from `first` (replaces its
    /// timer).
    PERIODIC = 2: Periodic => ();
    /// `()` → `Clock`: the clock's rate and the server's limits.
    CLOCK = 3: () => Clock;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_bits_are_distinct_and_above_program_ids() {
        let bits = [
            TIMER_SIGNAL,
            PIT_SIGNAL,
            STUDIO_TICK,
            crate::protocol::shaper::CONTROL_SIGNAL,
            crate::protocol::studio::LOG_SIGNAL,
            crate::protocol::studio::SERIAL_SIGNAL,
        ];
        for (i, a) in bits.iter().enumerate() {
            assert_eq!(a.count_ones(), 1);
            assert!(*a > 1 << 32, "above program ids and Studio's fault bit");
            for b in &bits[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(TIMER_SIGNAL, 1 << 44, "the bit is part of the interface");
    }

    #[test]
    fn small_requests_travel_in_registers() {
        assert!(crate::protocol::encode_small(&u64::MAX).is_some());
        assert!(crate::protocol::encode_small(&Periodic { first: u64::MAX, period: u64::MAX }).is_some());
        let c = Clock { tsc_hz: u64::MAX, min_period: u64::MAX, max_ahead: u64::MAX };
        assert!(crate::protocol::encode_small(&c).is_some());
    }
}
