//! The 8254 programmable interval timer (PIT), channel 0, as the timer server drives it: the
//! port numbers and command bytes, and the arithmetic between TSC ticks and PIT counts.
//!
//! Channel 0 runs in **mode 0** ("interrupt on terminal count"): writing the command byte
//! [`ONE_SHOT`] drives its output low, the count written next (low byte, then high byte) counts
//! down at [`PIT_HZ`], and the output rises — one edge, ISA IRQ 0, GSI 2 — when it reaches zero.
//! One count is about 838 ns and the counter has 16 bits, so one countdown reaches at most
//! [`MAX_COUNT`] counts (about 54.9 ms); a deadline farther away is chained: the server programs
//! the longest countdown, and at its interrupt the next one.

pub use ozone_agent_sdk::protocol::timer::PIT_HZ;

/// Channel 0's data port.
pub const CHANNEL0: u16 = 0x40;
/// The mode/command port.
pub const COMMAND: u16 = 0x43;
/// Channel 0, low byte then high byte, mode 0 (interrupt on terminal count), binary.
pub const ONE_SHOT: u8 = 0b0011_0000;
/// Channel 0, latch the count (the next two reads of [`CHANNEL0`] return it, low byte first).
pub const LATCH: u8 = 0b0000_0000;
/// The longest countdown (a count of 0 would mean 65,536; the server never writes it).
pub const MAX_COUNT: u16 = u16::MAX;
/// PIT counts the server measures the TSC over at start (about 1.7 ms).
pub const CALIBRATION_COUNTS: u16 = 2048;

/// The countdown to program for a deadline `ticks` TSC ticks away, at `tsc_hz` ticks per
/// second: the counts rounded up plus one (mode 0 raises its output one count after the count
/// reaches zero, and a countdown that ended early only costs another), at least 1, at most
/// [`MAX_COUNT`] (the rest is chained). A rate of 0 gives the longest countdown.
pub fn countdown(ticks: u64, tsc_hz: u64) -> u16 {
    if tsc_hz == 0 {
        return MAX_COUNT;
    }
    let counts = (ticks as u128 * PIT_HZ as u128).div_ceil(tsc_hz as u128) + 1;
    counts.min(MAX_COUNT as u128) as u16
}

/// Counts a down-counter went through from `start` to `now` (it counts down; 0 if it did not
/// move, and the counter never wraps within a measurement).
pub fn counted(start: u16, now: u16) -> u16 {
    start.saturating_sub(now)
}

/// TSC ticks per second from a measurement: `ticks` TSC ticks over `counts` PIT counts.
/// `None` for a measurement that means nothing (no counts, no ticks, or a rate beyond 64 bits).
pub fn tsc_rate(ticks: u64, counts: u64) -> Option<u64> {
    if counts == 0 || ticks == 0 {
        return None;
    }
    u64::try_from(ticks as u128 * PIT_HZ as u128 / counts as u128).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GHZ: u64 = 1_000_000_000;

    #[test]
    fn command_bytes() {
        assert_eq!(ONE_SHOT, 0x30);
        assert_eq!(LATCH, 0x00);
    }

    #[test]
    fn countdowns_round_up_and_are_bounded() {
        // 1 ms at 1 GHz: 1,193.182 counts, rounded up, plus one.
        assert_eq!(countdown(1_000_000, GHZ), 1_195);
        // Exactly one count's worth of ticks: one count, plus one.
        assert_eq!(countdown(1, PIT_HZ), 2);
        // Nothing left, or a deadline past: the shortest countdown.
        assert_eq!(countdown(0, GHZ), 1);
        assert_eq!(countdown(1, GHZ), 2);
        // Beyond one countdown: the longest, then chained.
        assert_eq!(countdown(GHZ, GHZ), MAX_COUNT);
        assert_eq!(countdown(u64::MAX, u64::MAX), MAX_COUNT);
        assert_eq!(countdown(u64::MAX, 1), MAX_COUNT);
        assert_eq!(countdown(5, 0), MAX_COUNT);
        // Never early: the countdown's time is at least the ticks asked.
        for ticks in [1u64, 837, 838, 839, 10_000, 54_000_000] {
            let c = countdown(ticks, GHZ) as u128;
            assert!((c - 1) * GHZ as u128 >= ticks as u128 * PIT_HZ as u128 || c == MAX_COUNT as u128, "{ticks}");
        }
    }

    #[test]
    fn rates_from_measurements() {
        // 2048 counts at 1 GHz take 1,716,389 ticks (rounded down).
        let ticks = 2048 * GHZ / PIT_HZ;
        let hz = tsc_rate(ticks, 2048).unwrap();
        assert!(hz.abs_diff(GHZ) < GHZ / 1_000_000, "{hz}");
        assert_eq!(tsc_rate(0, 2048), None);
        assert_eq!(tsc_rate(5, 0), None);
        assert_eq!(tsc_rate(u64::MAX, 1), None);
        assert_eq!(counted(0xffff, 0xf7ff), 2048);
        assert_eq!(counted(10, 12), 0);
    }
}
