//! QEMU tests of the userspace system's promises, each driving the shell with a script:
//! lifecycle (100 start/kill cycles leave free memory where it was), a hostile agent contained
//! while everything else keeps working, revocation taking effect at the agent's next use, and the
//! secure-memory server from the outside (zeroed regions, guard pages, sealed blobs, a revoked
//! shared region vanishing from the peer).

use std::time::Duration;

use super::{Ctx, Expect, Failure, SHUTDOWN, TestResult, success};

/// Runs that start programs in the background get longer than a plain boot.
const LONG: Duration = Duration::from_secs(240);

/// Run `script` on the full system and check the transcript: a clean shutdown, `present` all
/// there, `absent` nowhere.
fn scripted(ctx: &Ctx, script: &[&str], present: &[&str], absent: &[&str]) -> TestResult {
    let mut run = ctx.system_script(script)?;
    run.timeout = Some(LONG);
    let result = run.run()?;
    let expect = Expect { outcome: success(), present, absent, allow_panic: false };
    let problems = expect.problems(&result);
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// 100 spawn/kill cycles of an agent (driven by the `lifecycle` agent through Studio) leave the
/// free memory the kernel's untyped capabilities report exactly where it started.
pub fn lifecycle(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &["start lifecycle", "@wait [lifecycle] 100 spawn/kill cycles", "ps", SHUTDOWN],
        &[
            "[lifecycle] 100 spawn/kill cycles of spinner: free memory",
            "[lifecycle] PASS",
            "[studio] lifecycle exited with status 0",
        ],
        &["[lifecycle] FAIL", "memory accounting differs"],
    )
}

/// The hostile agent: every attempt contained and reported, the agent itself ended by its page
/// fault with everything revoked, a spinning agent of the same priority does not stop the others,
/// and other agents keep working afterwards.
pub fn hostile_agent(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start spinner",
            "start hostile",
            "@wait [studio] hostile faulted",
            "kill spinner",
            "start echo-client",
            "@wait [echo-client] echo answered",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[spinner] spinning forever",
            "[hostile] 2000 random capability pointers: 2000 refused",
            "[hostile] lookup of an interface not granted: contained",
            "[studio] refuse hostile: lookup of `echo`, which it may not use",
            "[hostile] studio administration without the privilege: contained",
            "[hostile] call through a slot never granted: contained",
            "[hostile] memory beyond the quota: contained",
            "[hostile] studio still serves: contained",
            "[hostile] console still serves: contained",
            "[hostile] the console still serves",
            "[hostile] secmem still serves: contained",
            "[hostile] shaper still serves: contained",
            "[hostile] 0 attempts not contained",
            "[studio] hostile faulted: page fault at 0x10",
            "[studio] kill spinner: asked by console",
            "[echo-client] echo answered 42",
            "hostile                   agent   faulted",
        ],
        &["NOT CONTAINED", "[hostile] FAIL"],
    )
}

/// A hostile client of the shaper (no `admin`): relearning an enforced victim, enforcing another
/// agent early, reading others' profiles and changing its own are all refused by Studio's rule and
/// logged; the victim stays enforced (checked live, by the shell, and by a new run of it that
/// finds its denied operations still denied), the other agent keeps learning, and the shell
/// answers throughout.
pub fn hostile_shaper(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start shaper-victim",
            "@wait [shaper-victim] enforced after",
            "start spinner-low",
            "@wait [studio] give shaper a copy of the thread of spinner-low",
            "start hostile-shaper",
            "@wait [hostile-shaper] done",
            "profile shaper-victim",
            "profile spinner-low",
            "kill spinner-low",
            "kill shaper-victim",
            "start shaper-victim",
            "@wait [shaper-victim] after the attack",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[shaper-victim] enforced after",
            "[hostile-shaper] relearn the enforced victim: contained",
            "[studio] refuse hostile-shaper: relearning the profile of shaper-victim through the shaper: changing \
             another program's syscall profile needs the `admin` privilege",
            "[hostile-shaper] enforce another agent early: contained",
            "[studio] refuse hostile-shaper: enforcing the profile of spinner-low through the shaper",
            "[hostile-shaper] read the victim's profile: contained",
            "[studio] refuse hostile-shaper: reading the profile of shaper-victim through the shaper: reading \
             another program's syscall profile needs the `admin` privilege",
            "[hostile-shaper] read a server's profile: contained",
            "[hostile-shaper] probe for a program that does not exist: contained",
            "[hostile-shaper] relearn its own profile: contained",
            "[studio] refuse hostile-shaper: relearning the profile of hostile-shaper through the shaper: no program \
             changes its own syscall profile",
            "[hostile-shaper] enforce its own profile: contained",
            "[hostile-shaper] its own profile: learning",
            "[hostile-shaper] 0 attempts not contained",
            "[studio] hostile-shaper exited with status 0",
            "profile of shaper-victim: enforcing",
            "profile of spinner-low: learning (",
            "[shaper-victim] after the attack: still enforcing; echo REVERSE and nb-recv denied",
            "[studio] shaper-victim exited with status 0",
            "shaper-victim             agent   exited",
        ],
        &["NOT CONTAINED", "[hostile-shaper] FAIL", "[shaper-victim] FAIL", "asked by hostile-shaper"],
    )
}

/// Priority bands: an agent at the top of the agents' band (119) that spins forever leaves every
/// server running — the shell answers `ps` and `kill` — and another agent at 119 cannot raise a
/// thread into the servers' band (or to 255) through any capability it holds.
pub fn priority_ceiling(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start spinner-top",
            "@wait [spinner] spinning forever",
            "start priority-probe",
            "@wait [priority-probe] done",
            "ps",
            "kill spinner-top",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[studio] start spinner-top (id",
            "priority 119,",
            "[spinner] spinning forever",
            "[priority-probe] at priority 119: 4064 attempts to raise a thread to 120 or 255: 4064 refused",
            "[priority-probe] done",
            "[studio] priority-probe exited with status 0",
            "spinner-top               agent   running   119",
            "[studio] kill spinner-top: asked by console",
            "spinner-top               agent   stopped   119",
        ],
        &["[priority-probe] FAIL"],
    )
}

/// After `revoke`, the agent's next use of the capability fails, and Studio refuses to hand it
/// out again; `grant` gives it back.
pub fn revocation(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start revocation-probe",
            "@wait [revocation-probe] echo works",
            "revoke revocation-probe echo",
            "@wait [revocation-probe] lookup refused",
            "log",
            SHUTDOWN,
        ],
        &[
            "[revocation-probe] echo works",
            "[studio] revoke revocation-probe `echo`: capability in slot",
            "[revocation-probe] echo failed after",
            "kernel error: InvalidCapability",
            "[studio] refuse revocation-probe: lookup of `echo`, which it may not use",
            "[revocation-probe] lookup refused: server error: denied",
            "[studio] revocation-probe exited with status 0",
        ],
        &["[revocation-probe] FAIL"],
    )
}

/// The secure-memory server seen from agents: zeroed regions, refusals, sealing round trip and
/// tamper detection, another program's sealed blob refused, a freed region faulting at once, and
/// a shared region the owner revokes vanishing from the peer (its next read faults).
pub fn secure_memory(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start secmem-check-fault",
            "@wait [studio] secmem-check-fault faulted",
            "start secmem-check-share",
            "start secmem-check-peer",
            "@wait [studio] secmem-check-peer faulted",
            SHUTDOWN,
        ],
        &[
            "[secmem-check-fault] passed",
            "[secmem-check-share] passed",
            "[secmem-check-peer] the owner's sealed blob does not unseal here: refused",
            "[studio] secmem-check-fault faulted: page fault at",
            "[studio] secmem-check-peer faulted: page fault at",
        ],
        &["[secmem-check-fault] FAILED", "[secmem-check-share] FAILED", "[secmem-check-peer] FAILED"],
    )
}

/// The console server stopped and started again (by an admin agent, through Studio): the new one
/// takes the serial interrupt again and the shell answers at its new prompt.
pub fn console_restart(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &["start console-restart", "ps", SHUTDOWN],
        &[
            "[console-restart] console stopped; starting it again",
            "[console-restart] console started again",
            "[studio] kill console: asked by console-restart",
            "console                   server  running",
        ],
        &["[console-restart] FAIL"],
    )
}

/// A program whose description says `restart = true` is restarted after each fault, up to
/// Studio's limit of five restarts; then it stays faulted, and its memory is all back.
pub fn restart_policy(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &["mem", "start crasher", "@wait not restarting (restart limit reached)", "ps", "mem", SHUTDOWN],
        &[
            "[crasher] faulting on purpose",
            "revoked everything, memory reclaimed; restarting (restart = true)",
            "[studio] start crasher (id",
            "): restart policy",
            "revoked everything, memory reclaimed; not restarting (restart limit reached)",
            "crasher                   agent   faulted   100          0        512         5",
        ],
        &["[crasher] FAIL"],
    )
}
