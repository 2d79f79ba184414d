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
        // The servers that find no device end at boot (their memory comes back then): the
        // measurement starts once they have.
        &[
            "@wait [studio] store exited",
            "@wait [studio] net exited",
            "@wait [studio] journal exited",
            "start lifecycle",
            // Its end, not its last line but one: `ps` and the shutdown would race its PASS.
            "@wait [studio] lifecycle exited",
            "ps",
            SHUTDOWN,
        ],
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
            // (after whatever partial line its malformed WRITEs left: the console joins a
            // program's text into whole lines)
            "the console still serves",
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
            "profile spinner-low",
            "@wait profile of spinner-low: learning (",
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
            "[hostile-shaper] read every agent's profile: contained",
            "[hostile-shaper] restore a wide profile for the victim: contained",
            "[studio] refuse hostile-shaper: keeping the syscall profiles of every agent through the shaper: keeping \
             syscall profiles across boots needs the `keeper` privilege",
            "[hostile-shaper] its own profile: learning",
            "[hostile-shaper] read a kernel profile through Studio: contained",
            "[studio] refuse hostile-shaper: PROFILE_OF needs the `profiles` privilege (rule PROFILE_OF)",
            "[hostile-shaper] set a kernel profile through Studio: contained",
            "[studio] refuse hostile-shaper: SET_PROFILE needs the `profiles` privilege (rule SET_PROFILE)",
            "[hostile-shaper] arm a kernel profile through Studio: contained",
            "[studio] refuse hostile-shaper: ARM_PROFILE needs the `profiles` privilege (rule ARM_PROFILE)",
            "[hostile-shaper] get a thread capability through Studio: contained",
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

/// Enforcement on time: `syscall-spinner`, at the top of the agents' band (119), makes syscalls
/// and never blocks, so the shaper's ticker (priority 1) never runs while it does. Its window
/// ends in the kernel all the same, after the warm-up's syscalls: its first new operation is
/// denied and Studio logs the denial; the shell keeps answering, and asked, the shaper reports
/// it enforcing (the kernel's decision, in Studio's log, once).
pub fn shaper_on_time(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start syscall-spinner",
            "@wait [syscall-spinner] still spinning",
            // Yields are no messages: Studio's perf finds it CPU-bound and lowers it 8.
            "@wait [studio] perf syscall-spinner: CPU-bound",
            "ps",
            "profile syscall-spinner",
            "log",
            "reports 32",
            "kill syscall-spinner",
            SHUTDOWN,
        ],
        &[
            "[studio] start syscall-spinner (id",
            "priority 119,",
            "[syscall-spinner] spinning on Yield, never blocking",
            "[studio] deny syscall-spinner: operation",
            "[syscall-spinner] NBRecv after 20000 syscalls: denied",
            "[syscall-spinner] echo REVERSE after 20000 syscalls: denied; ECHO: allowed",
            "[syscall-spinner] still spinning",
            "syscall-spinner           agent   running   111",
            "profile of syscall-spinner: enforcing",
            "shaper: enforce syscall-spinner's profile (warm-up over after 64 syscalls): kernel",
            "[studio] kill syscall-spinner: asked by console",
        ],
        &["[syscall-spinner] FAIL"],
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
            "@wait [spinner-top] spinning forever",
            "start priority-probe",
            "@wait [priority-probe] done",
            // It shares priority 119 with the spinner: its exit comes within a timeslice or so,
            // not necessarily before the next line would be typed.
            "@wait [studio] priority-probe exited with status 0",
            // The spinner is CPU-bound: Studio's perf lowers it 8 within its band from its
            // first 100 ms (the probe's runs go on at 119 beside it all the same).
            "@wait [studio] perf spinner-top: CPU-bound",
            "ps",
            "kill spinner-top",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[studio] start spinner-top (id",
            "priority 119,",
            "[spinner-top] spinning forever",
            "[priority-probe] at priority 119: 4048 attempts to raise a thread to 120 or 255: 4048 refused",
            "[priority-probe] done",
            "[studio] priority-probe exited with status 0",
            "priority 119 -> 111 (Ok(()))",
            "spinner-top               agent   running   111",
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
            "server gone (its capability was revoked",
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
            // The owner goes on after the peer's fault (a new region once it unshared): shut
            // down only once it is done.
            "@wait [secmem-check-share] passed",
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

/// Secure memory is paid by its user: two hogs exhaust only their own quotas (Studio counts the
/// funds in them), another program's large allocations still succeed, and all the hogs' memory
/// is back once they are killed. Sharing takes the peer's consent: an offer maps nothing, offers
/// into the server are refused, an accept outside the receiver's share window is refused, and a
/// revoked region is gone from the receiver. The system still serves others afterwards.
pub fn secure_memory_hostile(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            // The programs that end on their own have ended: free memory changes only by the hogs.
            "@wait [studio] hello exited",
            "@wait [studio] memory-user exited",
            "@wait [studio] echo-client exited",
            "start secmem-check-hogs",
            "@wait [secmem-check-hogs] PASS",
            "start secmem-check-hostile",
            "start secmem-check-victim",
            "@wait [secmem-check-hostile] PASS",
            "@wait [secmem-check-victim] PASS",
            "start echo-client",
            "@wait [echo-client] echo answered",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[secmem-check-hog-1] secmem-check-hog-1 exhausted its own quota",
            "[secmem-check-hog-2] secmem-check-hog-2 exhausted its own quota",
            "[studio] refuse secmem: fund secmem-check-hog-1 (",
            "the client's quota has no room",
            "[secmem-check-hogs] two regions of 128 pages after the hogs: allocated",
            "[studio] kill secmem-check-hog-1: asked by secmem-check-hogs",
            "[studio] kill secmem-check-hog-2: asked by secmem-check-hogs",
            "[secmem-check-hogs] PASS",
            "[secmem-check-hostile] offers into the server itself: refused",
            "[secmem-check-victim] an offer not accepted mapped nothing; declined",
            "[secmem-check-hostile] 13 accepts outside its share window: refused",
            "[secmem-check-victim] revoked the region from the hostile",
            "[secmem-check-hostile] the victim revoked its region: gone from here",
            "[secmem-check-hostile] PASS",
            "[secmem-check-victim] PASS",
            "[echo-client] echo answered 42",
            "secmem                    server  running",
        ],
        &["FAILED", "[studio] secmem faulted", "memory accounting differs"],
    )
}

/// A hostile server the shaper shapes (`mute`: the overlay adds it to the shaper's `uses`) never
/// pulls the shaper's requests and never answers anyone. The shaper never waits for it: an agent
/// (`shaper-victim`) is enforced, the other servers (`echo`) pull and enforce their half, the
/// shell's `profile` answers (showing `mute`'s half as not reported), and the shell goes on
/// serving. `mute`'s attempts to take `echo`'s requests from the shaper and to have Studio signal
/// servers are refused. (With the shaper calling the servers it shaped, this hung the shaper, and
/// then the shell at `profile`.)
pub fn shaper_never_waits_for_a_server(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start mute",
            "@wait [mute] silent from now on",
            "start shaper-victim",
            "@wait [shaper-victim] enforced",
            "profile shaper-victim",
            "reports 32",
            "kill shaper-victim",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[mute] taking `echo`'s requests from the shaper: refused",
            "[mute] asking Studio to signal servers: refused",
            "[studio] refuse mute: SHAPED needs the `profiles` privilege",
            // (`reports` clips the line at `mu~`: `mute`'s half is checked in the profile below.)
            "; `echo` told; `secmem` told; `timer` told; `mu",
            "profile of shaper-victim: enforcing",
            "  echo     allowed: 0",
            "  mute     (not reported by its server yet)",
            "[studio] kill shaper-victim: asked by console",
            "mute                      server  running",
        ],
        &["[mute] FAIL", "[shaper-victim] FAIL", "shaper-victim faulted"],
    )
}

/// The shaper stopped while servers have its control signal pending: `shaper-killer` (admin,
/// above every shaped server) reads its own profile from the shaper, which has Studio signal
/// `echo`, `secmem` and `mute`, and stops the shaper before any of them runs. Their pulls find no
/// capability (Studio takes it away while the shaper is down, and cancels a pull waiting on its
/// endpoint), so they go on serving: `echo` answers `shaper-killer` and `echo-client`. Started
/// again, the shaper shapes as before.
pub fn stopped_shaper(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start shaper-killer",
            "@wait [shaper-killer] killed the shaper",
            "@wait [shaper-killer] echo answered",
            "start shaper",
            "start shaper-victim",
            "@wait [shaper-victim] enforced",
            "ps",
            SHUTDOWN,
        ],
        &[
            "[studio] kill shaper: asked by shaper-killer",
            "[shaper-killer] echo answered 7 after the shaper's stop",
            "[echo-client] echo answered 42",
            "[studio] start shaper (id",
            "[shaper-victim] enforced",
            "shaper                    server  running",
        ],
        &["[shaper-killer] FAIL"],
    )
}

/// The console server stopped and started again (by an admin agent, through Studio): the new one
/// takes the serial interrupt again and the shell answers at its new prompt.
pub fn console_restart(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &["start console-restart", "ps", SHUTDOWN],
        &[
            "[studio] kill console: asked by console-restart",
            "[studio] start console (id 2, ",
            // The line printed while the console was down is dropped and counted (and absent).
            "[console-restart] console started again (id 2); 1 line dropped while it was down",
            "console                   server  running",
        ],
        &["[console-restart] FAIL", "[console-restart] console stopped"],
    )
}

/// A server killed from the shell takes its clients' capabilities with it: the client's next
/// call fails at once with `ServerGone` (never waits), a lookup while the server is down is
/// answered "server not running", and after `start echo` the client looks it up again and
/// reaches the new incarnation (its state started again). The operator's kill is not followed by
/// a restart although `echo` says `restart = true`.
pub fn server_death(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start server-death",
            "@wait [server-death] ready:",
            "kill echo",
            "@wait [server-death] lookup while it is down",
            "ps",
            "start echo",
            "@wait [server-death] recovered",
            SHUTDOWN,
        ],
        &[
            "[server-death] ready: echo answered 20 calls",
            "[studio] kill echo: asked by console; revoked everything, memory reclaimed; `echo`: ",
            " client capabilities revoked, waiting calls cancelled (clients look it up again); not restarted: a \
             kill stops it whatever its policy (restart = always)",
            "[server-death] echo gone: the first call after the kill: server gone (its capability was revoked",
            "[server-death] a call while it is down: server gone",
            "[server-death] lookup while it is down: server not running",
            "echo                      server  stopped",
            "[studio] start echo (id ",
            "[server-death] recovered: looked `echo` up again (",
            "echo answered 7; a new incarnation (count ",
            "[studio] server-death exited with status 0",
        ],
        // The operator's kill is not followed by the restart policy's start.
        &["[server-death] FAIL", "): restart policy"],
    )
}

/// Calls with a deadline: a server that never answers times out (not early), answered calls
/// leave no stale signal, and the call a kill meets fails with `ServerGone` within its timeout;
/// the client recovers once the server runs again.
///
/// Under `-icount` (the guest's clock is its instruction count), so a loaded host cannot make the
/// guest's timeouts expire while the kill is under way.
pub fn call_timeout(ctx: &Ctx) -> TestResult {
    let mut run = ctx.system_script(&[
        "start mute",
        "@wait [mute] silent from now on",
        "start call-timeout",
        "@wait [call-timeout] ready:",
        "kill echo",
        "@wait [call-timeout] echo killed",
        "start echo",
        "@wait [studio] call-timeout exited",
        SHUTDOWN,
    ])?;
    run.icount = true;
    run.timeout = Some(LONG);
    let result = run.run()?;
    let present = [
        "[call-timeout] a server that never answers: timed out (asked 20000 µs, took ",
        "[call-timeout] ready: 21 calls answered within their timeouts",
        "[call-timeout] echo killed: server gone after ",
        "[call-timeout] recovered: looked `echo` up again (",
        "[call-timeout] PASS",
        "[studio] call-timeout exited with status 0",
    ];
    let absent = ["[call-timeout] FAIL", "deny call-timeout"];
    let expect = Expect { outcome: success(), present: &present, absent: &absent, allow_panic: false };
    let problems = expect.problems(&result);
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// A program whose description says `restart = true` is restarted after each fault, up to
/// Studio's limit of five restarts; then it stays faulted, and its memory is all back.
pub fn restart_policy(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &["mem", "start crasher", "@wait not restarting (restart limit reached)", "ps", "mem", SHUTDOWN],
        &[
            "[crasher] faulting on purpose",
            "revoked everything, memory reclaimed; restarting (restart = always)",
            "[studio] start crasher (id",
            "): restart policy",
            "revoked everything, memory reclaimed; not restarting (restart limit reached)",
            "crasher                   agent   faulted   100          0        512         5",
        ],
        &["[crasher] FAIL"],
    )
}

/// Studio's watch (`studio-server/src/watch.rs`): two agents of one binary run the same steady
/// loop through their warm-up; one then makes a burst of methods it never used. The watch (on
/// by default, every agent traced by the kernel from its first instruction, read at the timer
/// server's tick) says so for that one, with the count, the threshold and the features that
/// moved, and never for the other. The shell's `studio explain` shows the watch of a running
/// agent, the model's part included, and says a server is not traced; `studio watch` follows
/// an agent's scores live for the seconds asked and says when it stops. The shifting one's burst
/// also calls echo with labels naming no method: echo tells Studio, which logs once that echo's
/// refusals are events of the agent's (`REFUSED`). Studio loaded the
/// initrd's behaviour model, and its probe scores are the host's ([`model_parity_problems`]).
/// (The model's own judgement of these test agents, never seen in training, is not asserted:
/// its false alarms are measured by `cargo xtask studio eval`.)
pub fn studio_watch(ctx: &Ctx) -> TestResult {
    let script = [
        "start watch-steady",
        "start watch-shift",
        "@wait [studio] watch-shift exited",
        "@wait [studio] watch-steady exited",
        "start spinner",
        "@wait [spinner] spinning forever",
        "studio explain spinner",
        "studio explain console",
        "studio watch spinner 2",
        "@wait [studio] watch spinner live: ends (its time is up)",
        SHUTDOWN,
    ];
    let mut run = ctx.system_script(&script)?;
    run.timeout = Some(LONG);
    let result = run.run()?;
    let present = [
        "[timer] signals Studio's tick every 5000 us",
        "[watch-shift] probing",
        "[studio] watch watch-shift: behaves unlike its warm-up from event",
        "sequences unseen (threshold 4); moved most:",
        "[watch-steady] done",
        "[watch-shift] echo refused 3 of 3 requests",
        "[studio] watch watch-shift: echo says it refused a request of its (unknown method): the refusals echo tells of are events of its",
        "watch of spinner: ",
        "warming up: ",
        "  model: ",
        " windows judged; frame score ",
        "console is not traced",
        "spinner: Studio's live lines for 2 s (`studio watch spinner off` ends them)",
        "[studio] watch spinner live: its scores each second they change, for 2 s",
        "[studio] watch spinner live: frame score ",
        "[studio] behaviour model loaded (studio.model, ",
    ];
    let absent = ["[studio] watch watch-steady: behaves unlike", "no tick for the watch", "cannot start watch-"];
    let expect = Expect { outcome: success(), present: &present, absent: &absent, allow_panic: false };
    let mut problems = expect.problems(&result);
    problems.extend(model_parity_problems(ctx, &result.serial));
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// Studio's graded responses (docs/studio.md, "Responses"), on the system with the overlay
/// `initrd/system-respond.toml`: the scenario corpus's flood
/// (`resp-flood`, `sc-flood`) beside a benign client of the same server (`resp-client`,
/// `sc-rr-client`), both with `respond = "kill"`. Studio's model finds the flood anomalous and
/// climbs the ladder one level at a time, each step logged with its reasons and carried out:
/// alert, throttle (priority 100 -> 84), revoke (what its flood used: its `sc-rr` capability
/// deleted, lookups refused), suspend (thread stopped, memory kept: `ps` and `studio explain` say so), and kill
/// once it stays suspended for `suspend_seconds` (30). The client is never touched.
pub fn studio_respond(ctx: &Ctx) -> TestResult {
    let script = [
        "start sc-rr-server",
        "start resp-client",
        "start resp-flood",
        "@wait [studio] watch resp-flood: suspend",
        "studio explain resp-flood",
        "ps",
        "@wait [studio] watch resp-flood: kill",
        "ps",
        SHUTDOWN,
    ];
    let mut run = ctx.overlay_script("initrd/system-respond.toml", "test-respond", &script)?;
    run.timeout = Some(LONG);
    let result = run.run()?;
    let steps = [
        "[studio] watch resp-flood: alert: frame score ",
        "[studio] watch resp-flood: throttle: priority 100 -> 84 (Ok(())): frame score ",
        "[studio] watch resp-flood: revoke: the interfaces its anomalous requests used or whose servers refused them (",
        "[studio] revoke resp-flood `sc-rr`: capability in slot ",
        "[studio] watch resp-flood: suspend (Ok(())): its memory kept",
        "  response: suspend (Studio acts up to kill)",
        "[studio] watch resp-flood: kill: suspended for 30 s without an allow or a resume",
    ];
    let absent = [
        "[studio] watch resp-client: alert",
        "[studio] watch resp-client: throttle",
        "[studio] watch resp-client: would",
        "[studio] watch resp-client: kill",
        "cannot start",
    ];
    let expect = Expect { outcome: success(), present: &steps, absent: &absent, allow_panic: false };
    let mut problems = expect.problems(&result);
    // In this order.
    let at: Vec<Option<usize>> = steps.iter().map(|s| result.serial.find(s)).collect();
    if at.iter().all(Option::is_some) && !at.windows(2).all(|w| w[0] < w[1]) {
        problems.push(format!("the steps are out of order: {at:?}"));
    }
    if !result.serial.lines().any(|l| l.contains(" resp-flood ") && l.contains(" agent   suspended ")) {
        problems.push("`ps` did not show resp-flood suspended".into());
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// The parity of Studio's model in the guest: the probe windows' scores Studio printed when it
/// loaded the initrd's model must be the host's fixed-point pass's (to the printed 6 decimals:
/// the few floating-point steps are soft float there, hardware here) and within the stated bound
/// of the f32 pass (`model::Quantised`; the trainer's tests hold the f32 pass to candle's), and
/// their logits the host's to every printed digit (random probe windows score 1.0 with a model
/// that flags what it never saw: the score alone would hold nothing).
fn model_parity_problems(ctx: &Ctx, serial: &str) -> Vec<String> {
    use ozone_cognition::model::{Quantised, Weights, probe_windows};
    let path = ctx.ws.root.join(crate::studio::MODEL);
    let weights = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| Weights::from_bytes(&b).map_err(|e| e.to_string()))
    {
        Ok(w) => w,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let Some(line) = serial.lines().find_map(|l| l.split_once("; probe windows score ").map(|(_, r)| r)) else {
        return vec!["Studio printed no probe scores".into()];
    };
    let Some((scores, logits)) = line.split_once(" (logits ") else {
        return vec![format!("Studio printed no probe logits: {line}")];
    };
    let guest: Vec<f32> = scores.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let q = Quantised::new(&weights);
    let mut problems = Vec::new();
    if guest.len() != probe_windows().len() {
        problems.push(format!("{} probe scores printed: {line}", guest.len()));
    }
    // The logits to every printed digit: the same fixed-point pass (a saturated score says
    // nothing of its last steps; its logit does).
    let host: Vec<String> = probe_windows().iter().map(|t| format!("{:.6}", q.logit(t))).collect();
    let printed: Vec<&str> = logits.trim_end_matches(')').split_whitespace().collect();
    if printed != host {
        problems.push(format!("probe logits: the guest printed {printed:?}, the host's fixed-point pass {host:?}"));
    }
    for (t, g) in probe_windows().iter().zip(&guest) {
        let (host, float) = (q.score(t), weights.score(t));
        if (host - g).abs() > 1.5e-6 {
            problems.push(format!("probe: the guest scored {g}, the host's fixed-point pass {host:.6}"));
        }
        if (float - g).abs() > 1e-3 {
            problems.push(format!("probe: the guest scored {g}, the f32 pass {float:.6}"));
        }
    }
    problems
}

/// Finding 3 of issue 9: `hostile-log` forges Studio's lines (newlines, carriage returns, ESC
/// sequences, Unicode separators, a forged interface name in a refused lookup), sends 300
/// reports and 300 refused requests, then 2000 reports of 900 bytes. Every forgery carries
/// `FORGED`. No serial line may start with one (each is inside a line Studio attributes to
/// `hostile-log`), Studio's start decisions must still be in its log, the drops must be counted
/// and shown, the serial line must carry a bounded number of the reports, and the shell must
/// answer afterwards.
pub fn hostile_log(ctx: &Ctx) -> TestResult {
    let script = [
        "start hostile-log",
        "@wait [hostile-log] done:",
        "@wait [studio] hostile-log exited",
        "log 256",
        "reports 3",
        "ps",
        SHUTDOWN,
    ];
    let mut run = ctx.system_script(&script)?;
    run.timeout = Some(LONG);
    let result = run.run()?;
    let present = [
        "[hostile-log] forged reports sent",
        "[hostile-log] forged lookup: refused",
        "[hostile-log] 300 reports and 300 refused requests sent (300 refused)",
        "[hostile-log] done: 2306 reports sent, 2306 answered",
        "[studio] hostile-log is over its log budget",
        "[studio] hostile-log exited with status 0",
        // The decision log (`log 256`) still has the start decisions.
        "start console (id ",
        "start shaper (id ",
        "start hostile-log (id ",
        "dropped  hostile-log: ",
        "  [hostile-log] ",
        "hostile-log               agent   exited",
    ];
    let expect = Expect { outcome: success(), present: &present, absent: &["NOT REFUSED"], allow_panic: false };
    let mut problems = expect.problems(&result);
    problems.extend(log_forgery_problems(&result.serial));
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// What is wrong with the serial log of `hostile_log` beyond the markers: forged lines, a decision
/// log without its start decisions, an unbounded flood, missing drop counts.
fn log_forgery_problems(serial: &str) -> Vec<String> {
    let mut problems = Vec::new();
    // Where a forgery may appear: inside a line Studio attributes to hostile-log (its report, its
    // refusal), or such a line as the shell shows it (`  SEQ  [hostile-log] ...` in `reports`,
    // `  SEQ  refuse hostile-log: ...` in `log`).
    let attributed = |line: &str| {
        let l = line.trim_start_matches("ozone> ");
        let row = |after: &str| {
            l.trim_start().split_once(after).is_some_and(|(seq, _)| !seq.is_empty() && seq.parse::<u32>().is_ok())
        };
        l.starts_with("[studio] report from hostile-log: ")
            || l.starts_with("[studio] refuse hostile-log: ")
            || row("  [hostile-log] ")
            || row("  refuse hostile-log: ")
    };
    for line in serial.split(['\n', '\r']) {
        // The console's own erase before a line it prints while the prompt is shown.
        let line = line.strip_prefix("\x1b[K").unwrap_or(line);
        if line.contains("FORGED") && !attributed(line) {
            problems.push(format!("a forged line reached the serial line on its own: {line:?}"));
        }
        if line.contains('\x1b') && line.contains("FORGED") {
            problems.push(format!("an escape sequence passed through: {line:?}"));
        }
    }
    let reports = serial.lines().filter(|l| l.starts_with("[studio] report from hostile-log: ")).count();
    // Reports are printed by Studio only while the console does not print its log (the console
    // prints decisions only; reports are read with `reports`): at most its budget and a few.
    if reports > 64 {
        problems.push(format!(
            "{reports} of hostile-log's 2306 reports were printed: expected at most its budget (32) and a few"
        ));
    }
    match serial.lines().find_map(|l| l.split_once("dropped  hostile-log: ").map(|(_, rest)| rest)) {
        Some(rest) => {
            let numbers: Vec<u64> = rest.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
            match numbers[..] {
                [dropped, refusals, ..] if dropped >= 2306 - 64 && refusals >= 300 - 64 => {}
                _ => problems.push(format!("the drop count is not what was dropped: {rest:?}")),
            }
        }
        None => problems.push(String::from("`reports` shows no drop count for hostile-log")),
    }
    problems
}

/// The program that forges the shell's prompt and other programs' lines and floods the console
/// (`tests/guest/src/bin/console-forger.rs`).
const FORGER: &str = "console-forger";

/// What the forger's run must show: its probes' verdicts, and the console's drop notice.
const FORGER_LINES: &[&str] = &["[console-forger] debug write refused: Denied", "[console-forger] done: 0 failures"];

/// The shell driven while the forger floods: each command, and what its answer must hold.
const FORGER_SCRIPT: &[(&str, &str)] = &[
    ("start console-forger", "started console-forger"),
    ("ps", " programs, "),
    ("help", "loglevel AGENT [LEVEL]"),
    ("mem", "used by programs"),
    ("ps", "console-forger"),
];

/// The console owns program output (issue 9, finding 6): a program is refused the kernel's debug
/// channel; whatever it prints (the shell's prompt, Studio's and other programs' names, escape
/// sequences, carriage returns, newlines) comes out as lines of its own, attributed
/// `[console-forger] ` and cleaned; its flood is rate-limited and the drops are counted and
/// reported; the shell, driven while it floods, answers every command in one piece.
pub fn console_output(ctx: &Ctx) -> TestResult {
    let mut script: Vec<&str> = FORGER_SCRIPT.iter().map(|(l, _)| *l).collect();
    script.extend(["@wait [console-forger] done", "loglevel console-forger", SHUTDOWN]);
    let mut run = ctx.system_script(&script)?;
    run.timeout = Some(LONG);
    let result = run.run()?;
    let expect = Expect { outcome: success(), present: FORGER_LINES, absent: &["FAIL"], allow_panic: false };
    let mut problems = expect.problems(&result);
    let typed = script.iter().filter(|l| !l.starts_with(crate::qemu::WAIT_DIRECTIVE)).count();
    if result.typed < typed {
        problems.push(format!("only {} of the {typed} lines were typed (too few prompts)", result.typed));
    }
    problems.extend(console_output_problems(&result.serial, &script));
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(result)) }) }
}

/// What the serial transcript of [`console_output`] shows wrong: a forged line not attributed to
/// the forger, a line starting with the prompt that is not the shell's, an escape sequence other
/// than the console's own erase, a command's answer with a program's line inside, a missing drop
/// count.
fn console_output_problems(serial: &str, script: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let prefix = format!("[{FORGER}] ");
    let erase = &crate::qemu::ERASE_LINE[1..];
    for raw in serial.split('\n') {
        let raw = raw.trim_end_matches('\r');
        // What a terminal shows: the text after the last erase.
        let visible = raw.rsplit(erase).next().unwrap_or(raw);
        let shown: String = visible.chars().take(80).collect();
        if raw.contains("FORGED") && !visible.starts_with(&prefix) {
            problems.push(format!("a forged line is not attributed to {FORGER}: {shown:?}"));
        }
        if let Some(rest) = visible.strip_prefix(crate::qemu::PROMPT)
            && !rest.is_empty()
            && !script.contains(&rest)
        {
            problems.push(format!("a line starts with the prompt but is not the shell's: {shown:?}"));
        }
        if raw.replace(erase, "").contains('\x1b') || visible.contains('\r') {
            problems.push(format!("a program's control characters reached the terminal: {shown:?}"));
        }
        if visible.starts_with("[studio]") && visible.contains("FORGED") {
            problems.push(format!("a forged Studio line: {shown:?}"));
        }
    }
    let dropped: u64 = serial
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("[console] dropped ")?;
            let (n, from) = rest.split_once(" line")?;
            from.ends_with(&format!("from {FORGER}")).then(|| n.parse::<u64>().ok())?
        })
        .sum();
    if dropped == 0 {
        problems.push(format!("no `[console] dropped N lines from {FORGER}` with N > 0"));
    }
    // Each command's answer, from its echo to the next new prompt, is the shell's alone.
    let answers = super::shell_answers(serial);
    let typed = script.iter().filter(|l| !l.starts_with(crate::qemu::WAIT_DIRECTIVE));
    for (i, line) in typed.enumerate() {
        let Some(answer) = answers.get(i) else {
            problems.push(format!("no answer to `{line}`"));
            continue;
        };
        let Some(at) = answer.find(&format!("{line}\r\n")) else {
            problems.push(format!("the echo of `{line}` is not one piece"));
            continue;
        };
        let body = &answer[at..];
        if body.contains(erase) || body.contains(&prefix) {
            problems.push(format!("the answer to `{line}` is split by a program's line"));
        }
        if let Some((_, want)) = FORGER_SCRIPT.iter().find(|(l, _)| *l == *line)
            && !body.contains(want)
        {
            problems.push(format!("the answer to `{line}` lacks `{want}`"));
        }
        if line.starts_with("loglevel") && !body.contains("logs at info and above; ") {
            problems.push(String::from("`loglevel` did not answer"));
        }
    }
    problems
}

/// A program that tries to forge fault messages to Studio (issue 9, finding 3): through every
/// capability in its CNode it tries to change a thread's fault handler or widen a profile (it
/// holds no capability to its own thread) and sends every fault label with fault-shaped words.
/// Its fault endpoint is in its thread's fault-handler slot, not in its CNode, so none of it is a
/// fault to Studio: Studio logs no fault and no denial for it, it is still running afterwards,
/// its capabilities list no fault endpoint, and the shell and another agent still work.
pub fn fault_forgery(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start fault-forger",
            "@wait [fault-forger] done",
            "ps",
            "caps fault-forger",
            "start echo-client",
            "@wait [echo-client] echo answered",
            SHUTDOWN,
        ],
        &[
            "[fault-forger] 0 attempts not contained",
            "[fault-forger] done",
            "fault-forger              agent   running",
            "capabilities of fault-forger:",
            "  slot   1  studio",
            "[echo-client] echo answered 42",
        ],
        &[
            "NOT CONTAINED",
            "[fault-forger] FAIL",
            "fault-forger faulted",
            "deny fault-forger",
            "fault-forger exited",
            "fault endpoint",
        ],
    )
}

/// Programs in crates of their own, as `cargo xtask new-agent` made them: the `kv` server
/// (`agents/kv`, its interface in `agents/kv-protocol`) answers its client (`agents/kv-client`),
/// and keeps what it stored across the client's runs; a hostile client (`kv-hostile`) meets the
/// server's limits (key length, number of keys, undeclared methods); the agent `outside`, whose crate is outside
/// the workspace (`tests/outside`, named by `path` in the test overlay), runs too.
pub fn new_agent(ctx: &Ctx) -> TestResult {
    scripted(
        ctx,
        &[
            "start kv",
            "@wait [kv] serving `kv`",
            "start kv-client",
            "@wait [studio] kv-client exited",
            "start kv-client",
            "@wait (it replaced Some(42))",
            "start kv-hostile",
            "@wait [studio] kv-hostile exited",
            "start outside",
            "@wait [outside] hello from",
            SHUTDOWN,
        ],
        &[
            "[kv] serving `kv`",
            "[kv-client] stored 42 under `answer` (it replaced None), read back Some(42)",
            "[kv-client] stored 42 under `answer` (it replaced Some(42)), read back Some(42)",
            "[studio] kv-client exited with status 0",
            "[kv-hostile] a key of MAX_KEY + 1 bytes: refused (invalid argument)",
            "[kv-hostile] a new key beyond MAX_KEYS: refused (memory quota exceeded)",
            "[kv-hostile] method 9, which the interface does not declare: refused (unknown method)",
            "[kv-hostile] PASS",
            "[studio] kv-hostile exited with status 0",
            "[outside] hello from `outside`: ",
            "[studio] outside exited with status 0",
        ],
        &["exited with status 1", "[kv-hostile] FAIL"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &[&str] = &["ps", "@wait x", "mem"];

    fn clean() -> String {
        String::from(
            "boot\r\nozone> \r\x1b[K[console-forger] ozone> FORGED\r\nozone> ps\r\n ID NAME\r\n2 programs, 1 running\r\n\
             ozone> \r\x1b[K[console] dropped 7 lines from console-forger\r\nozone> mem\r\nused by programs\r\nozone> ",
        )
    }

    #[test]
    fn a_clean_transcript_passes() {
        assert_eq!(console_output_problems(&clean(), SCRIPT), Vec::<String>::new());
    }

    #[test]
    fn forgeries_splits_and_missing_drops_are_found() {
        let cases = [
            (clean().replace("[console-forger] ozone> FORGED", "ozone> FORGED"), "not attributed"),
            (clean().replace("[console-forger] ozone> FORGED", "ozone> kill x"), "not the shell's"),
            (clean().replace("2 programs", "\x1b[2J2 programs"), "control characters"),
            (clean().replace("2 programs", "\r\x1b[K[console-forger] x\r\n2 programs"), "split by a program's line"),
            (clean().replace("dropped 7", "dropped 0"), "no `[console] dropped"),
            (clean().replace("ozone> mem\r\n", "ozone> me\r\x1b[K[a] b\r\nm\r\n"), "echo of `mem`"),
        ];
        for (serial, want) in cases {
            let problems = console_output_problems(&serial, SCRIPT);
            assert!(problems.iter().any(|p| p.contains(want)), "{want}: {problems:?}");
        }
    }
}
