//! QEMU tests of the timer service, under `-icount` (a TSC tick is one guest instruction, and an
//! idle guest's clock jumps to its next timer, so sleeps take little wall time): sleeps wake on
//! time and never early, a ticker ticks in order, bad requests are refused, and a program
//! without the `timer` interface cannot sleep. Order and no-early-wake are asserted, with a
//! bound on lateness far above the wake-up path; no figure of speed is.

use std::time::Duration;

use super::{Ctx, Expect, Failure, SHUTDOWN, TestResult, success};

/// The run starts two programs and sleeps about 0.2 s of guest time.
const TIMEOUT: Duration = Duration::from_secs(240);

/// `timer-check` and `timer-refused` pass; the timer server measured its clock; after the timer
/// server is killed and started again, `timer-check` passes again.
pub fn timer(ctx: &Ctx) -> TestResult {
    let mut run = ctx.system_script(&[
        "start timer-check",
        "@wait [studio] timer-check exited",
        "start timer-refused",
        "@wait [studio] timer-refused exited",
        // A sleeper when the timer server is killed: woken, its sleep ends with the absence.
        "start timer-orphan",
        "@wait [timer-orphan] sleeping for 60 s",
        // A new timer server (a new clock measurement, no timers) serves a new client.
        "kill timer",
        "@wait [studio] timer-orphan exited",
        "start timer",
        "@wait [timer] TSC at ",
        "start timer-check",
        "@wait [studio] timer-check exited",
        SHUTDOWN,
    ])?;
    run.icount = true;
    run.timeout = Some(TIMEOUT);
    let result = run.run()?;
    let present = [
        "[timer] TSC at ",
        "[timer-check] slept until a deadline 80000 µs away: woke on time",
        "[timer-check] sleep(2 ms) lasted 2 ms at least",
        "[timer-check] a ticker ticked 5 times on time",
        "[timer-check] a past deadline is signalled at once; a disarmed timer never",
        "[timer-check] bad requests refused",
        "[timer-check] PASS",
        "[studio] timer-check exited with status 0",
        "[timer-refused] sleep without the timer interface: refused",
        "[timer-refused] PASS",
        "[timer-orphan] the timer server stopped: the sleep ended with `server not running`",
        "[studio] timer-orphan exited with status 0",
    ];
    let absent = ["FAIL", "[timer] cannot measure the clock"];
    let expect = Expect { outcome: success(), present: &present, absent: &absent, allow_panic: false };
    let mut problems = expect.problems(&result);
    let passes = result.serial.matches("[timer-check] PASS").count();
    if passes != 2 {
        problems.push(format!(
            "timer-check passed {passes} times, not twice (before and after the timer server's restart)"
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}
