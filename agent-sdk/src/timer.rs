//! Time: the monotonic clock, `sleep`, deadlines and periodic tickers, on the timer server
//! (`servers/timer`, interface [`INTERFACE`](crate::protocol::timer::INTERFACE)).
//!
//! **The clock** is the time stamp counter: [`now`] reads it (one instruction, no server call)
//! and returns TSC ticks. Ticks become time through the rate the timer server measured against
//! the PIT when it started ([`tsc_hz`]: asked once, then kept). Under `-icount shift=0` a tick is
//! one guest instruction.
//!
//! **Sleeping** arms a deadline at the timer server (`ARM`, answered at once) and waits on the
//! program's notification (slot `NOTIFICATION`, bound to its thread) for
//! [`TIMER_SIGNAL`]: the server signals it when the TSC reaches the deadline. The wait checks the
//! clock after every wake-up, so a sleep never ends early, whatever signals arrive. Other bits
//! the notification delivers meanwhile (an interrupt, the shaper's control signal) are kept in
//! the program's pending word ([`crate::signals`]) for the wait that looks for them — a server's
//! receive takes them from there.
//!
//! A program needs the `timer` interface (`uses = ["timer"]` in the system description, or a
//! grant): Studio then gives the timer server the right to signal the program's notification.
//! The first use looks the interface up (one call to Studio) and asks the clock's rate (one call
//! to the timer server); later sleeps make one call (`ARM`) and one wait. Agents shaped by the
//! syscall shaper should sleep once during their warm-up, so that the wait and the timer's
//! methods are in their profiles.
//!
//! A program has one timer at the server: a [`sleep`] replaces a [`Ticker`]'s period (and a new
//! ticker a sleep's deadline), so a program uses one at a time.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use crate::caps;
use crate::error::{AgentError, Result};
use crate::protocol::ServiceError;
use crate::protocol::timer::{self as proto, Clock, Periodic, TIMER_SIGNAL, method};
use crate::rpc::Client;
use crate::signals;

/// The timer server's endpoint in this program's CNode, once looked up (0: not yet).
static SERVER: AtomicU64 = AtomicU64::new(0);
/// The clock's rate, once asked (0: not yet).
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

/// The clock: the time stamp counter, in ticks.
#[inline]
pub fn now() -> u64 {
    // SAFETY: RDTSC only reads the time stamp counter, which ring 3 may do (the kernel leaves
    // CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The timer server (looked up once).
fn server() -> Result<Client> {
    Client::lookup_cached(&SERVER, proto::INTERFACE)
}

/// Call the timer server; if it has restarted since it was looked up (its capability went with
/// the old incarnation: `ServerGone`), look the new one up and call it once more. While it is
/// not running this is `Service(NotRunning)`.
fn call<Req, Resp: serde::de::DeserializeOwned, Q: crate::protocol::Encodes<Req> + ?Sized>(
    m: crate::protocol::Method<Req, Resp>,
    req: &Q,
) -> Result<Resp> {
    match server()?.call(m, req) {
        Err(AgentError::ServerGone) => {
            SERVER.store(0, Ordering::Relaxed);
            server()?.call(m, req)
        }
        r => r,
    }
}

/// The clock's figures, from the timer server.
pub fn clock() -> Result<Clock> {
    let c = call(method::CLOCK, &())?;
    TSC_HZ.store(c.tsc_hz, Ordering::Relaxed);
    Ok(c)
}

/// TSC ticks per second (asked of the timer server once, then kept).
pub fn tsc_hz() -> Result<u64> {
    match TSC_HZ.load(Ordering::Relaxed) {
        0 => clock().map(|c| c.tsc_hz),
        hz => Ok(hz),
    }
}

/// `d` in ticks at `hz` ticks per second, rounded up (a sleep is never shorter than asked);
/// `None` if it does not fit 64 bits.
pub fn ticks_of(d: Duration, hz: u64) -> Option<u64> {
    let t = (d.as_nanos().checked_mul(hz as u128)?).div_ceil(1_000_000_000);
    u64::try_from(t).ok()
}

/// `ticks` at `hz` ticks per second as a duration, rounded down (0 for a rate of 0).
pub fn duration_of(ticks: u64, hz: u64) -> Duration {
    if hz == 0 {
        return Duration::ZERO;
    }
    let ns = ticks as u128 * 1_000_000_000 / hz as u128;
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// A point of the clock (absolute TSC ticks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub u64);

impl Deadline {
    /// `d` from now. `InvalidArgument` if it does not fit the clock.
    pub fn after(d: Duration) -> Result<Deadline> {
        let t = ticks_of(d, tsc_hz()?).ok_or(AgentError::Service(ServiceError::InvalidArgument))?;
        Deadline::after_ticks(t)
    }

    /// `ticks` from now. `InvalidArgument` if it does not fit the clock.
    pub fn after_ticks(ticks: u64) -> Result<Deadline> {
        now().checked_add(ticks).map(Deadline).ok_or(AgentError::Service(ServiceError::InvalidArgument))
    }

    /// The TSC value.
    pub fn ticks(self) -> u64 {
        self.0
    }

    /// Whether the clock has reached it.
    pub fn reached(self) -> bool {
        now() >= self.0
    }

    /// Ticks left (0 once reached).
    pub fn remaining_ticks(self) -> u64 {
        self.0.saturating_sub(now())
    }

    /// Time left (zero once reached).
    pub fn remaining(self) -> Result<Duration> {
        Ok(duration_of(self.remaining_ticks(), tsc_hz()?))
    }
}

/// Wait until the timer server signals [`TIMER_SIGNAL`] (or one is pending): one wake-up, which
/// may be stale — callers check the clock. Other bits are kept for other waits.
pub fn wait_signal() -> Result<()> {
    if signals::take(TIMER_SIGNAL) != 0 {
        return Ok(());
    }
    let n = caps::notification().ok_or(AgentError::NotStarted)?;
    loop {
        let word = n.wait()?;
        signals::stash(word & !TIMER_SIGNAL);
        if word & TIMER_SIGNAL != 0 {
            return Ok(());
        }
    }
}

/// Arm the program's timer at `deadline` (replacing what it had) without waiting: the timer
/// server signals [`TIMER_SIGNAL`] when the clock reaches it.
pub fn arm(deadline: Deadline) -> Result<()> {
    call(method::ARM, &deadline.0)
}

/// Cancel the program's timer.
pub fn disarm() -> Result<()> {
    call(method::DISARM, &())
}

/// Sleep until the clock reaches `deadline` (at once if it has).
///
/// A wake-up before the deadline (a stale signal, or Studio waking the clients of a timer server
/// that stopped) arms the timer again: if the timer server is gone, that fails
/// (`Service(NotRunning)` while it is down) instead of waiting for ever.
pub fn sleep_until(deadline: Deadline) -> Result<()> {
    while !deadline.reached() {
        arm(deadline)?;
        wait_signal()?;
    }
    Ok(())
}

/// Sleep for `d` at least.
pub fn sleep(d: Duration) -> Result<()> {
    sleep_until(Deadline::after(d)?)
}

/// A periodic wake-up: the timer server signals every period (one `PERIODIC` request at the
/// start, none per tick).
pub struct Ticker {
    next: u64,
    period: u64,
}

impl Ticker {
    /// Tick every `period` from now (the first tick one period from now). `InvalidArgument`
    /// below the server's `min_period` (100 µs).
    pub fn new(period: Duration) -> Result<Ticker> {
        let period = ticks_of(period, tsc_hz()?).ok_or(AgentError::Service(ServiceError::InvalidArgument))?;
        Ticker::with_ticks(period)
    }

    /// Tick every `period` TSC ticks from now.
    pub fn with_ticks(period: u64) -> Result<Ticker> {
        let first = Deadline::after_ticks(period)?.0;
        call(method::PERIODIC, &Periodic { first, period })?;
        Ok(Ticker { next: first, period })
    }

    /// Wait for the next tick. Returns how many periods ended since the last tick (more than 1
    /// if the program was late; the missed ticks are not delivered again).
    pub fn tick(&mut self) -> Result<u64> {
        while now() < self.next {
            wait_signal()?;
        }
        let behind = (now() - self.next) / self.period;
        let ended = behind + 1;
        self.next = self.next.saturating_add(ended.saturating_mul(self.period));
        Ok(ended)
    }

    /// The deadline of the next tick.
    pub fn next(&self) -> Deadline {
        Deadline(self.next)
    }

    /// Stop ticking (also done when the ticker is dropped).
    pub fn stop(self) -> Result<()> {
        let r = disarm();
        core::mem::forget(self);
        r
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = disarm();
    }
}

/// Calls with a deadline (here, not in [`crate::rpc`], which the timer is built on).
impl Client {
    /// [`call`](Client::call), but give up at `timeout` from now: `AgentError::TimedOut` if the
    /// server has not answered by then (it may or may not have received the request: whether to
    /// try again is the caller's to decide). A server that stops meanwhile is
    /// [`AgentError::ServerGone`] at once, as with `call`.
    ///
    /// Built on the timer service (the program needs `uses = ["timer"]`; without it this is
    /// `Service(Denied)`) and the kernel's interruptible Call: the program's one timer is armed at
    /// the deadline (replacing a [`Ticker`]'s or a sleep's), and its signal on the
    /// program's notification ends the Call. Costs two calls to the timer server and a poll of
    /// the notification on top of the call. Other signal bits that arrive during the call are kept
    /// for the waits that look for them ([`crate::signals`]); one that arrives while the server
    /// holds the request ends the call all the same, as `Kernel(Interrupted)` (only servers get
    /// such signals).
    pub fn call_timeout<Req, Resp, Q>(
        &self,
        method: crate::protocol::Method<Req, Resp>,
        req: &Q,
        timeout: core::time::Duration,
    ) -> Result<Resp>
    where
        Resp: serde::de::DeserializeOwned,
        Q: crate::protocol::Encodes<Req> + ?Sized,
    {
        self.call_until(method, req, Deadline::after(timeout)?)
    }

    /// [`call_timeout`](Self::call_timeout) with an absolute deadline.
    pub fn call_until<Req, Resp, Q>(
        &self,
        method: crate::protocol::Method<Req, Resp>,
        req: &Q,
        deadline: Deadline,
    ) -> Result<Resp>
    where
        Resp: serde::de::DeserializeOwned,
        Q: crate::protocol::Encodes<Req> + ?Sized,
    {
        use crate::protocol::timer::TIMER_SIGNAL;
        let label = self.wire_label(method.id())?;
        let n = crate::caps::notification().ok_or(AgentError::NotStarted)?;
        // A timer signal already in the word is an old one (the timer was disarmed or rearmed
        // since: the timer server signals nothing for a replaced deadline): drop it, keep the rest.
        let stale = n.poll()?;
        crate::signals::stash(stale & !TIMER_SIGNAL);
        let _ = crate::signals::take(TIMER_SIGNAL);
        // Arm first: the timer's call uses the IPC buffer, which a long request fills.
        arm(deadline)?;
        let msg = crate::rpc::encoded(label, req)?;
        let outcome = match crate::sys::call_interruptible(self.slot(), msg) {
            // Decode before the timer's call below overwrites the IPC buffer.
            Ok(r) => Ok(self.answer(&r)),
            Err(crate::sys::SysError::Interrupted { bits }) => Err(bits),
            Err(crate::sys::SysError::Kernel(e)) => Ok(Err(crate::rpc::gone(e))),
        };
        // Best effort: the answer (or the server's refusal) is the caller's whatever happens to
        // the timer now. A timer left armed (the timer server stopped meanwhile) signals at
        // most once more, and that signal is stale for the next call, which drops it (above).
        let _ = disarm();
        match outcome {
            Ok(answer) => {
                // A timer signal that came after the answer and before the disarm is stale.
                if let Ok(late) = n.poll() {
                    crate::signals::stash(late & !TIMER_SIGNAL);
                }
                answer
            }
            Err(bits) => {
                crate::signals::stash(bits & !TIMER_SIGNAL);
                if bits & TIMER_SIGNAL != 0 {
                    Err(AgentError::TimedOut)
                } else {
                    Err(AgentError::Kernel(ozone_abi::Error::Interrupted))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_the_safe_way() {
        assert_eq!(ticks_of(Duration::from_millis(1), 1_000_000_000), Some(1_000_000));
        // 1 ns at 3 GHz is 3 ticks; at 1.5 Hz it is one tick (rounded up, never shorter).
        assert_eq!(ticks_of(Duration::from_nanos(1), 3_000_000_000), Some(3));
        assert_eq!(ticks_of(Duration::from_nanos(1), 2), Some(1));
        assert_eq!(ticks_of(Duration::ZERO, 5), Some(0));
        assert_eq!(ticks_of(Duration::MAX, 1_000_000_000), None);
        assert_eq!(duration_of(1_500, 1_000_000_000), Duration::from_nanos(1_500));
        assert_eq!(duration_of(2, 3), Duration::from_nanos(666_666_666));
        assert_eq!(duration_of(u64::MAX, 1), Duration::from_nanos(u64::MAX));
        assert_eq!(duration_of(7, 0), Duration::ZERO);
    }

    #[test]
    fn deadlines_compare_with_the_clock() {
        let past = Deadline(0);
        assert!(past.reached());
        assert_eq!(past.remaining_ticks(), 0);
        let far = Deadline(u64::MAX);
        assert!(!far.reached());
        assert!(far.remaining_ticks() > 0);
        assert!(Deadline::after_ticks(u64::MAX).is_err());
        let t0 = now();
        assert!(Deadline::after_ticks(10).unwrap().0 >= t0 + 10);
        // The host has no timer server: the first use says so, as an error.
        assert!(sleep(Duration::from_millis(1)).is_err());
    }
}
