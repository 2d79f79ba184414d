//! Guest test agent: the timer service, for the QEMU test `timer` (run under `-icount`, where a
//! TSC tick is one guest instruction).
//!
//! - **Sleeps wake on time**: for deadlines from one that has passed to one beyond a single PIT
//!   countdown (chained), the sleeper runs again at the deadline or after it, never before, and
//!   within [`LATE_BOUND_US`] of it; `sleep(d)` lasts `d` at least.
//! - **A ticker** ticks at each period's end, in order, never early.
//! - **Past deadlines** are signalled at once; a **disarmed** timer signals nothing.
//! - **Bad requests** are refused with the error the protocol names: a deadline beyond the
//!   server's `max_ahead`, a period below `min_period` or of 0, an unknown method.
//!
//! Prints `PASS`, or `FAIL: ...` lines and `FAILED` (the console prefixes `[timer-check] `).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use core::time::Duration;

use ozone_agent_sdk::protocol::timer::{self as proto, Periodic, TIMER_SIGNAL, method};
use ozone_agent_sdk::protocol::{Method, ServiceError};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::timer::{self, Deadline, Ticker};
use ozone_agent_sdk::{AgentError, caps, entry, println, sys};

entry!(run);

/// How late a wake-up may be: far above the wake-up path (a few thousand instructions, see
/// `timer_sleep_wake`) and the PIT's granularity (838 ns), far below any sleep measured here.
const LATE_BOUND_US: u64 = 500;

fn run() -> u64 {
    let mut failures = 0u32;
    let mut check = |ok: bool, what: &str| {
        if !ok {
            println!("FAIL: {what}");
            failures += 1;
        }
    };
    let clock = match timer::clock() {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL: no clock from the timer server: {e}");
            println!("FAILED");
            return 1;
        }
    };
    let hz = clock.tsc_hz;
    println!("clock: {hz} TSC ticks per second, periods from {} ticks", clock.min_period);
    let late_bound = hz / 1_000_000 * LATE_BOUND_US;

    // Sleeps wake at their deadline, never before.
    let mut last_wake = 0;
    for us in [0u64, 100, 1_000, 7_000, 30_000, 80_000] {
        let deadline = match Deadline::after(Duration::from_micros(us)) {
            Ok(d) => d,
            Err(e) => {
                check(false, &alloc::format!("a deadline {us} µs away: {e}"));
                continue;
            }
        };
        let slept = timer::sleep_until(deadline);
        let woke = timer::now();
        check(slept.is_ok(), &alloc::format!("sleep of {us} µs: {slept:?}"));
        let early = deadline.ticks().saturating_sub(woke);
        check(early == 0, &alloc::format!("woke {early} ticks early from {us} µs"));
        let late = woke.saturating_sub(deadline.ticks());
        check(late <= late_bound, &alloc::format!("woke {late} ticks late from {us} µs (bound {late_bound})"));
        check(woke > last_wake, "wake-ups out of order");
        last_wake = woke;
        println!("slept until a deadline {us} µs away: woke on time");
    }
    let t0 = timer::now();
    let r = timer::sleep(Duration::from_millis(2));
    let took = timer::now() - t0;
    check(
        r.is_ok() && took >= timer::ticks_of(Duration::from_millis(2), hz).unwrap_or(u64::MAX),
        "sleep(2 ms) was short",
    );
    println!("sleep(2 ms) lasted 2 ms at least");

    // A ticker: each tick at or after its deadline, in order.
    match Ticker::new(Duration::from_millis(3)) {
        Ok(mut ticker) => {
            let mut previous = timer::now();
            for n in 0..5 {
                let due = ticker.next().ticks();
                let ended = ticker.tick();
                let at = timer::now();
                check(ended.is_ok_and(|e| e >= 1), &alloc::format!("tick {n}: {ended:?}"));
                check(at >= due && at > previous, &alloc::format!("tick {n} early or out of order"));
                let late = at.saturating_sub(due);
                check(late <= late_bound, &alloc::format!("tick {n} {late} ticks late"));
                previous = at;
            }
            check(ticker.stop().is_ok(), "the ticker did not stop");
            println!("a ticker ticked 5 times on time");
        }
        Err(e) => check(false, &alloc::format!("no ticker: {e}")),
    }

    // A past deadline is signalled before the answer; a disarmed timer signals nothing.
    let notification = caps::notification();
    let poll = || notification.map_or(0, |n| n.poll().unwrap_or(0));
    let _ = poll();
    let _ = timer::arm(Deadline(1));
    check(poll() & TIMER_SIGNAL != 0, "a past deadline was not signalled at once");
    let soon = Deadline::after(Duration::from_millis(1)).unwrap_or(Deadline(0));
    let armed = timer::arm(soon).and_then(|()| timer::disarm());
    check(armed.is_ok(), "arm and disarm");
    while timer::now() < soon.ticks() + 2 * late_bound {
        sys::yield_now();
    }
    check(poll() & TIMER_SIGNAL == 0, "a disarmed timer signalled");
    println!("a past deadline is signalled at once; a disarmed timer never");

    // Bad requests.
    let server = match Client::lookup(proto::INTERFACE) {
        Ok(s) => s,
        Err(e) => {
            check(false, &alloc::format!("lookup: {e}"));
            Client::new(0, proto::INTERFACE)
        }
    };
    let invalid = Err(AgentError::Service(ServiceError::InvalidArgument));
    let far = timer::now().saturating_add(clock.max_ahead).saturating_add(hz);
    check(server.call(method::ARM, &far) == invalid, "a deadline beyond max_ahead was accepted");
    check(server.call(method::ARM, &u64::MAX) == invalid, "a deadline at the end of time was accepted");
    let short = Periodic { first: timer::now(), period: clock.min_period - 1 };
    check(server.call(method::PERIODIC, &short) == invalid, "a period below min_period was accepted");
    let zero = Periodic { first: timer::now(), period: 0 };
    check(server.call(method::PERIODIC, &zero) == invalid, "a period of 0 was accepted");
    // Past its warm-up the shaper enforces the methods it learned: an unknown one is denied
    // before the server's dispatch would call it unknown.
    let unknown: Method<(), ()> = Method::new(40);
    let r = server.call(unknown, &());
    let refused = [ServiceError::UnknownMethod, ServiceError::Denied].map(|e| Err(AgentError::Service(e)));
    check(refused.contains(&r), &alloc::format!("an unknown method: {r:?}"));
    println!("bad requests refused");
    // The timer still serves after all that.
    check(timer::sleep(Duration::from_micros(500)).is_ok(), "no sleep after the bad requests");

    if failures == 0 {
        println!("PASS");
        0
    } else {
        println!("FAILED");
        1
    }
}
