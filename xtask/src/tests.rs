//! `cargo xtask test`: the checks ([`crate::check`]), the host tests, then the QEMU tests, one
//! after another.
//!
//! Each QEMU test boots the system (or a guest test program as the root task) under TCG with a
//! hard timeout and checks how it ended ([`Outcome`]) and what the serial log says. Boots of the
//! full system (`initrd/system.toml` with the test overlay `initrd/system-tests.toml`, which adds
//! the test programs; `plain_system` boots it without) can drive the shell with a script
//! ([`Run::script`]); those
//! that only need the system to end type [`SHUTDOWN`] at the first prompt. No test may
//! show `panicked at` in its serial log unless it expects it. A failing test prints its reason,
//! the QEMU command line, the instance seed and the whole serial log.
//!
//! The output ends with exactly one line `N passed, N failed` counting the QEMU tests; the exit
//! status is non-zero if any QEMU test, a check or the host tests failed.

use std::cell::OnceCell;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ozone_abi::{ExitCode, markers};

mod agents;
mod devices;
mod timer;

use crate::bench::parse_boot_cost;
use crate::build::{self, Artifacts, Profile};
use crate::check;
use crate::deps::{self, Need};
use crate::initrd::{self, Seed};
use crate::qemu::{Boot, NmiInjection, Outcome, Ovmf, Run, RunResult};
use crate::system;
use crate::{Result, TestArgs, Workspace};
use ozone_agent_sdk::protocol::system::{Program, SystemDescription};

/// Timeout of one PVH boot under TCG.
const PVH_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one boot through SeaBIOS and GRUB.
const SEABIOS_TIMEOUT: Duration = Duration::from_secs(60);
/// Timeout of one boot through OVMF and GRUB (UEFI firmware is slow under TCG).
const OVMF_TIMEOUT: Duration = Duration::from_secs(120);

/// Panic text no test may show unless it expects it.
const PANIC: &str = "panicked at";

/// One QEMU test.
pub struct QemuTest {
    pub name: &'static str,
    /// What the test needs installed besides QEMU.
    pub needs: &'static [Need],
    run: fn(&Ctx) -> TestResult,
}

/// The QEMU tests, in the order they run.
pub const QEMU_TESTS: &[QemuTest] = &[
    QemuTest { name: "boot_pvh", needs: &[], run: boot_pvh },
    QemuTest { name: "system_boot", needs: &[], run: system_boot },
    QemuTest { name: "plain_system", needs: &[], run: plain_system },
    QemuTest { name: "shell_commands", needs: &[], run: shell_commands },
    QemuTest { name: "shell_errors", needs: &[], run: shell_errors },
    QemuTest { name: "boot_pvh_icount", needs: &[], run: boot_pvh_icount },
    QemuTest { name: "boot_hardened", needs: &[], run: boot_hardened },
    QemuTest { name: "boot_kpti", needs: &[], run: boot_kpti },
    QemuTest { name: "boot_iso_seabios", needs: &[Need::GrubIso], run: boot_iso_seabios },
    QemuTest { name: "boot_iso_ovmf", needs: &[Need::GrubIso, Need::Ovmf], run: boot_iso_ovmf },
    QemuTest { name: "kernel_exception", needs: &[], run: kernel_exception },
    QemuTest { name: "triple_fault", needs: &[], run: triple_fault },
    QemuTest { name: "malformed_root_elf", needs: &[], run: malformed_root_elf },
    QemuTest { name: "user_fault", needs: &[], run: user_fault },
    QemuTest { name: "syscall_checks", needs: &[], run: syscall_checks },
    QemuTest { name: "acpi_poweroff", needs: &[], run: acpi_poweroff },
    QemuTest { name: "kernel_stack_overflow", needs: &[], run: kernel_stack_overflow },
    QemuTest { name: "write_kernel_text", needs: &[], run: write_kernel_text },
    QemuTest { name: "execute_kernel_data", needs: &[], run: execute_kernel_data },
    QemuTest { name: "read_kernel_memory", needs: &[], run: read_kernel_memory },
    QemuTest { name: "read_kernel_memory_kpti", needs: &[], run: read_kernel_memory_kpti },
    QemuTest { name: "bench_program", needs: &[], run: bench_program },
    QemuTest { name: "kernel_suite", needs: &[], run: kernel_suite },
    QemuTest { name: "kernel_suite_hardened", needs: &[], run: kernel_suite_hardened },
    QemuTest { name: "kernel_suite_kpti", needs: &[], run: kernel_suite_kpti },
    QemuTest { name: "syscall_fuzzer", needs: &[], run: syscall_fuzzer },
    QemuTest { name: "syscall_fuzzer_kpti", needs: &[], run: syscall_fuzzer_kpti },
    QemuTest { name: "ipc_fastpath_differential", needs: &[], run: ipc_fastpath_differential },
    QemuTest { name: "shaper_learn_then_enforce", needs: &[], run: shaper_learn_then_enforce },
    QemuTest { name: "lifecycle", needs: &[], run: agents::lifecycle },
    QemuTest { name: "hostile_agent", needs: &[], run: agents::hostile_agent },
    QemuTest { name: "hostile_shaper", needs: &[], run: agents::hostile_shaper },
    QemuTest { name: "hostile_log", needs: &[], run: agents::hostile_log },
    QemuTest { name: "priority_ceiling", needs: &[], run: agents::priority_ceiling },
    QemuTest { name: "shaper_on_time", needs: &[], run: agents::shaper_on_time },
    QemuTest { name: "shaper_never_waits_for_a_server", needs: &[], run: agents::shaper_never_waits_for_a_server },
    QemuTest { name: "stopped_shaper", needs: &[], run: agents::stopped_shaper },
    QemuTest { name: "revocation", needs: &[], run: agents::revocation },
    QemuTest { name: "secure_memory", needs: &[], run: agents::secure_memory },
    QemuTest { name: "secure_memory_hostile", needs: &[], run: agents::secure_memory_hostile },
    QemuTest { name: "console_restart", needs: &[], run: agents::console_restart },
    QemuTest { name: "restart_policy", needs: &[], run: agents::restart_policy },
    QemuTest { name: "studio_watch", needs: &[], run: agents::studio_watch },
    QemuTest { name: "studio_respond", needs: &[], run: agents::studio_respond },
    QemuTest { name: "server_death", needs: &[], run: agents::server_death },
    QemuTest { name: "call_timeout", needs: &[], run: agents::call_timeout },
    QemuTest { name: "fault_forgery", needs: &[], run: agents::fault_forgery },
    QemuTest { name: "console_output", needs: &[], run: agents::console_output },
    QemuTest { name: "new_agent", needs: &[], run: agents::new_agent },
    QemuTest { name: "timer_sleep", needs: &[], run: timer::timer },
    QemuTest { name: "virtio_blk", needs: &[], run: devices::virtio_blk },
    QemuTest { name: "net_host_tcp", needs: &[], run: devices::net_host_tcp },
    QemuTest { name: "store_persistence", needs: &[], run: devices::store_persistence },
    QemuTest { name: "store_crash", needs: &[], run: devices::store_crash },
    QemuTest { name: "net_peers", needs: &[], run: devices::net_peers },
    QemuTest { name: "journal_persistence", needs: &[], run: devices::journal_persistence },
    QemuTest { name: "store_damage", needs: &[], run: devices::store_damage },
    QemuTest { name: "shell_devices_at_boot", needs: &[], run: devices::shell_devices_at_boot },
];

/// Why a test failed, with the run that shows it.
pub struct Failure {
    pub reason: String,
    pub run: Option<Box<RunResult>>,
}

type TestResult = std::result::Result<(), Failure>;

impl From<String> for Failure {
    fn from(reason: String) -> Failure {
        Failure { reason, run: None }
    }
}

/// What a test expects of one run.
struct Expect<'a> {
    outcome: Outcome,
    /// Lines (substrings) the serial log must contain.
    present: &'a [&'a str],
    /// Substrings the serial log must not contain, besides [`PANIC`].
    absent: &'a [&'a str],
    /// Whether the test expects a panic (then [`PANIC`] is allowed).
    allow_panic: bool,
}

impl<'a> Expect<'a> {
    fn new(outcome: Outcome, present: &'a [&'a str]) -> Expect<'a> {
        Expect { outcome, present, absent: &[], allow_panic: false }
    }

    /// Every way `run` falls short of this expectation.
    fn problems(&self, run: &RunResult) -> Vec<String> {
        let mut problems = Vec::new();
        if run.outcome != self.outcome {
            problems.push(format!("expected {}, got {}", self.outcome, run.outcome));
        }
        for marker in self.present {
            if !run.serial.contains(marker) {
                problems.push(format!("serial log lacks `{marker}`"));
            }
        }
        let panic = if self.allow_panic { None } else { Some(PANIC) };
        for text in self.absent.iter().copied().chain(panic) {
            if run.serial.contains(text) {
                problems.push(format!("serial log contains `{text}`"));
            }
        }
        problems.extend(too_little_left(&run.serial));
        problems
    }

    fn check(&self, run: RunResult) -> TestResult {
        let problems = self.problems(&run);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) })
        }
    }
}

/// How much of its quota every program Studio starts must have left once built. The page tables
/// its address space needs depend on where the instance's seed places its image, stack and heap
/// (up to three tables for each of five regions: 60 KiB), and debug builds grow with the code:
/// a program with less than this left may fail to start with another seed, or after a small
/// change, so every test boot refuses it now, whatever the seed.
pub const HEADROOM_KIB: u64 = 64;

/// Every program Studio started in `serial` with less than [`HEADROOM_KIB`] of its quota left once
/// built (its `start` decision says how much).
fn too_little_left(serial: &str) -> Vec<String> {
    const LEFT: &str = " KiB of it left once built";
    let mut out = Vec::new();
    for line in serial.lines() {
        let (Some(at), Some(start)) = (line.find(LEFT), line.find("[studio] start ")) else { continue };
        let name = line[start + "[studio] start ".len()..].split(' ').next().unwrap_or("?");
        let left = line[..at].rsplit(' ').next().and_then(|n| n.parse::<u64>().ok());
        match left {
            Some(kib) if kib >= HEADROOM_KIB => {}
            Some(kib) => out.push(format!(
                "{name} has {kib} KiB of its quota left once built, under {HEADROOM_KIB} KiB: another seed's page tables \
                 or a slightly larger build would not start it (raise its memory_kib)"
            )),
            None => out.push(format!("cannot read what is left of {name}'s quota: {line}")),
        }
    }
    out
}

/// What the tests share: the build, the seed, and the lazily built ISO.
struct Ctx<'a> {
    ws: &'a Workspace,
    artifacts: &'a Artifacts,
    seed: Seed,
    scratch: PathBuf,
    iso: OnceCell<Result<PathBuf>>,
}

impl Ctx<'_> {
    /// Write an initrd with `root_task` as the root task.
    fn initrd(&self, name: &str, root_task: &[u8]) -> Result<PathBuf> {
        initrd::write_initrd(self.ws, &format!("test-{name}"), root_task, &self.seed)
    }

    /// Write an initrd with the ELF at `elf` as the root task.
    fn initrd_from(&self, name: &str, elf: &std::path::Path) -> Result<PathBuf> {
        initrd::write_initrd_from(self.ws, &format!("test-{name}"), elf, &self.seed)
    }

    /// Write the full system's initrd: root task, Studio, `system.bin` and the programs
    /// `initrd/system.toml` and its test overlay name.
    fn system_initrd(&self) -> Result<PathBuf> {
        initrd::write_system_initrd(self.ws, "test-system", self.artifacts, &self.artifacts.test_system, &self.seed)
    }

    /// The description of the system the tests boot (with the test overlay).
    fn description(&self) -> &SystemDescription {
        &self.artifacts.test_system.description
    }

    /// A PVH run of the full system that types `script` at the shell: line k after the k-th
    /// `ozone> ` prompt. The result holds the whole serial transcript and how many lines were
    /// typed ([`RunResult::typed`]).
    fn system_script(&self, script: &[&str]) -> Result<Run> {
        self.script_run(&self.system_initrd()?, script)
    }

    /// [`Ctx::system_script`] on the plain system, `initrd/system.toml` alone: what `cargo xtask
    /// qemu` boots.
    fn plain_system_script(&self, script: &[&str]) -> Result<Run> {
        let initrd = initrd::write_system_initrd(
            self.ws,
            "test-plain-system",
            self.artifacts,
            &self.artifacts.system,
            &self.seed,
        )?;
        self.script_run(&initrd, script)
    }

    /// [`Ctx::system_script`] on `initrd/system.toml` with the overlay `file` (not the test
    /// overlay): for a test whose programs do not fit beside the test overlay's.
    fn overlay_script(&self, file: &str, name: &str, script: &[&str]) -> Result<Run> {
        let system = crate::system::load_with_overlay(
            self.ws,
            std::path::Path::new(file),
            &self.artifacts.programs,
            crate::qemu::MEMORY_MIB,
        )?;
        let initrd = initrd::write_system_initrd(self.ws, name, self.artifacts, &system, &self.seed)?;
        self.script_run(&initrd, script)
    }

    fn script_run(&self, initrd: &std::path::Path, script: &[&str]) -> Result<Run> {
        let mut run = self.pvh(initrd, "");
        run.script = Some(script.iter().map(|line| line.to_string()).collect());
        Ok(run)
    }

    /// A PVH run of the full system with `cmdline` that ends by itself: `shutdown` is typed if
    /// the shell's prompt appears (without a shell, the system ends when the root task does).
    fn system(&self, cmdline: &str) -> Result<Run> {
        let mut run = self.system_script(&[SHUTDOWN])?;
        if let Boot::Pvh { cmdline: c, .. } = &mut run.boot {
            *c = cmdline.to_string();
        }
        Ok(run)
    }

    /// A PVH run of the kernel with `initrd` and `cmdline`.
    fn pvh(&self, initrd: &std::path::Path, cmdline: &str) -> Run {
        Run::pvh(&self.artifacts.kernel, initrd, cmdline, PVH_TIMEOUT, &self.scratch)
    }

    /// The GRUB ISO with the default initrd, built on first use.
    fn iso(&self) -> Result<PathBuf> {
        self.iso
            .get_or_init(|| {
                let initrd = self.system_initrd()?;
                crate::iso::build_grub_iso(self.ws, &self.artifacts.kernel, &initrd, "")
            })
            .clone()
    }
}

/// The markers a complete boot shows.
const BOOTED: &[&str] = &[markers::BOOT_OK, markers::ROOT_HELLO, STUDIO_UP];

/// Studio, started by the root task in its own address space, has reported in and been answered.
const STUDIO_UP: &str = "[studio] the root task answered";

fn success() -> Outcome {
    Outcome::Exit(ExitCode::Success)
}

fn boot_pvh(ctx: &Ctx) -> TestResult {
    let run = ctx.system("")?.run()?;
    // The periodic LAPIC timer must have interrupted the kernel (it waits for two ticks).
    let ticks = run.serial.lines().find_map(|l| {
        let rest = &l[l.find(TICKS_PREFIX)? + TICKS_PREFIX.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
    });
    match ticks {
        Some(n) if n >= 2 => Expect::new(success(), BOOTED).check(run),
        other => Err(Failure {
            reason: format!("expected at least 2 timer ticks counted, got {other:?}"),
            run: Some(Box::new(run)),
        }),
    }
}

/// Every hardening boot option on (docs/hardening.md): eager FPU switching, and a branch
/// prediction barrier (where the CPU has one; QEMU's TCG CPU does not) and a return stack buffer
/// fill on every address-space switch.
const HARDENED: &str = "ozone.fpu=eager ozone.spectre=ibpb";
/// What the kernel says it turned on for [`HARDENED`].
const HARDENED_LINES: &[&str] =
    &["ozone: hardening: fpu=eager (state switched with the thread); address-space switch: "];

/// The full system boots and shuts down cleanly with [`HARDENED`] (every thread switch moves the
/// FPU state, every address-space switch fills the RSB); a mistyped option stops the boot.
fn boot_hardened(ctx: &Ctx) -> TestResult {
    let run = ctx.system(HARDENED)?.run()?;
    let present: Vec<&str> = BOOTED.iter().chain(HARDENED_LINES).copied().collect();
    Expect::new(success(), &present).check(run)?;
    let run = ctx.system("ozone.fpu=eagre")?.run()?;
    let expect = Expect {
        outcome: Outcome::Exit(ExitCode::BootFailure),
        present: &["ozone: unknown value ozone.fpu=eagre (expected lazy or eager)"],
        absent: &[markers::ROOT_HELLO],
        allow_panic: false,
    };
    expect.check(run).map_err(|f| Failure { reason: format!("mistyped option: {}", f.reason), ..f })
}

/// What the kernel says when the skim window is on (`ozone.kpti=on`, docs/hardening.md): user
/// address spaces map the trampoline's pages of the kernel and nothing else of it. The kernel
/// checks the trampoline's tables against their page list before it says so.
const KPTI_LINE: &str = "; kpti=on: skim window, user address spaces map ";

/// The full system boots and shuts down cleanly with the skim window on, together with the other
/// hardening options ([`HARDENED`]: the barriers then follow the user CR3 the kernel records
/// instead of loading); a mistyped value stops the boot.
fn boot_kpti(ctx: &Ctx) -> TestResult {
    let run = ctx.system(&format!("{HARDENED} ozone.kpti=on"))?.run()?;
    let present: Vec<&str> = BOOTED.iter().chain(HARDENED_LINES).chain([&KPTI_LINE]).copied().collect();
    Expect::new(success(), &present).check(run)?;
    let run = ctx.system("ozone.kpti=yes")?.run()?;
    let expect = Expect {
        outcome: Outcome::Exit(ExitCode::BootFailure),
        present: &["ozone: unknown value ozone.kpti=yes (expected off, on or auto)"],
        absent: &[markers::ROOT_HELLO],
        allow_panic: false,
    };
    expect.check(run).map_err(|f| Failure { reason: format!("mistyped option: {}", f.reason), ..f })
}

/// The shell command that powers the machine off.
pub const SHUTDOWN: &str = "shutdown";

/// The plain system, `initrd/system.toml` without the test overlay, is what `ps` shows: every
/// program of the description, running or stopped, and not one test program; the test programs
/// are not in its initrd either, so the shell cannot start one. Asserted against both files as
/// built: each overlay program is absent from `ps` and from the initrd's `system.bin`, and
/// `start` of one is refused as unknown.
fn plain_system(ctx: &Ctx) -> TestResult {
    let plain = &ctx.artifacts.system.description;
    let tests = ctx.description();
    let added: Vec<&str> =
        tests.programs.iter().map(|p| p.name.as_str()).filter(|name| plain.program(name).is_none()).collect();
    let Some(test_program) = added.first() else {
        return Err(format!("{} adds no programs to {}", system::TEST_OVERLAY, system::SOURCE).into());
    };
    // The plain system's programs first, unchanged but for the interfaces the overlay's
    // `[[uses]]` added to their `uses`.
    let same = |t: &Program, p: &Program| {
        let mut t = t.clone();
        t.uses.truncate(p.uses.len());
        t == *p
    };
    if tests.programs.len() != plain.programs.len() + added.len()
        || !tests.programs.iter().zip(&plain.programs).all(|(t, p)| same(t, p))
    {
        return Err("the test system does not start with the plain system's programs, unchanged".to_string().into());
    }
    // `ps` prints each name in a column of 24 between two-space gaps.
    let column = |name: &str| format!("  {name:<24}  ");
    let mut ps = ShellStep::new("ps", &[&format!("{} programs, ", plain.programs.len())]);
    ps.rows = plain.programs.iter().map(|p| vec![column(&p.name)]).collect();
    ps.absent = added.iter().map(|name| column(name)).collect();
    let steps = [
        ps,
        ShellStep::new(&format!("start {test_program}"), &["error: not found"]),
        ShellStep::new(SHUTDOWN, &["shutting down"]),
    ];
    let script: Vec<&str> = steps.iter().map(|s| s.line.as_str()).collect();
    let run = ctx.plain_system_script(&script)?.run()?;
    let mut problems = Vec::new();
    if !run.outcome.is_clean() {
        problems.push(format!("expected a clean shutdown, got {}", run.outcome));
    }
    problems.extend(Expect::new(run.outcome.clone(), &[STUDIO_UP]).problems(&run));
    if run.typed < script.len() {
        problems.push(format!("only {} of the {} lines were typed (too few prompts)", run.typed, script.len()));
    }
    problems.extend(shell_problems(&run.serial, &steps));
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) }) }
}

/// The line the `hello` agent of `initrd/system.toml` prints when Studio starts it.
const HELLO: &str = "[hello] hello from an agent: hello";

/// The full system of `initrd/system.toml` boots: Studio starts the `hello` agent from the
/// description. Once it has said hello (the shell's prompt comes as soon as Studio has started
/// everything, before lower-priority agents get to run), `shutdown` at the shell powers the
/// machine off; the run must end cleanly.
fn system_boot(ctx: &Ctx) -> TestResult {
    let wait_hello = format!("{}{HELLO}", crate::qemu::WAIT_DIRECTIVE);
    let run = ctx.system_script(&[&wait_hello, SHUTDOWN])?.run()?;
    let mut problems = Expect::new(run.outcome.clone(), &[markers::BOOT_OK, STUDIO_UP, HELLO]).problems(&run);
    if !run.outcome.is_clean() {
        problems.insert(0, format!("expected a clean shutdown, got {}", run.outcome));
    }
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) }) }
}

/// The kernel's count of timer interrupts at shutdown.
const TICKS_PREFIX: &str = "ozone: timer ticks counted: ";

/// A deliberate kernel fault selected with `ozone.test=<hook>` must end as `KernelFault` with a
/// report containing `present`.
fn kernel_hook(ctx: &Ctx, hook: &str, present: &[&str]) -> TestResult {
    let run = ctx.system(&format!("ozone.test={hook}"))?.run()?;
    let expect = Expect {
        outcome: Outcome::Exit(ExitCode::KernelFault),
        present,
        absent: &[markers::ROOT_HELLO, "did not fault"],
        allow_panic: false,
    };
    expect.check(run)
}

fn kernel_stack_overflow(ctx: &Ctx) -> TestResult {
    kernel_hook(
        ctx,
        "kernel-stack-overflow",
        &["ozone: kernel exception: #DF double fault", "stack guard page: kernel stack overflow"],
    )
}

fn write_kernel_text(ctx: &Ctx) -> TestResult {
    // Error code 0x3: a write to a present page.
    kernel_hook(ctx, "write-kernel-text", &["ozone: kernel exception: #PF page fault (vector 14) error=0x3 "])
}

fn execute_kernel_data(ctx: &Ctx) -> TestResult {
    // Error code 0x11: an instruction fetch from a present, no-execute page.
    kernel_hook(ctx, "execute-kernel-data", &["ozone: kernel exception: #PF page fault (vector 14) error=0x11 "])
}

/// The benchmark program runs to completion and reports every benchmark (its numbers are for
/// `cargo xtask bench`, not checked here).
fn bench_program(ctx: &Ctx) -> TestResult {
    let initrd = ctx.initrd_from("bench", &ctx.artifacts.bench)?;
    let mut run = ctx.pvh(&initrd, "");
    run.icount = true;
    let run = run.run()?;
    let lines = crate::bench::guest_bench_lines(&run.serial, "instr", "icount");
    if !lines.iter().any(|l| l.starts_with("BENCH name=null_syscall ")) {
        return Err(Failure { reason: "no null_syscall benchmark line".into(), run: Some(Box::new(run)) });
    }
    Expect::new(success(), &[]).check(run)
}

/// The kernel suite with the skim window on (`ozone.kpti=on`), under the invariant checker, which
/// also checks that every address space's top half is the trampoline's: every entry and exit
/// switches CR3, interrupts from ring 3 are copied from the entry stack, and the suite's NMIs (in
/// ring 3 and while the kernel idles) take the paranoid entry.
fn kernel_suite_kpti(ctx: &Ctx) -> TestResult {
    kernel_suite_with(
        ctx,
        "ozone.kpti=on ozone.check=invariants",
        &[KPTI_LINE, "ozone: invariant checker on: after every 1 syscalls and faults"],
    )
}

/// The line after which the kernel suite waits for an NMI and then a byte at COM1
/// (`tests/guest/src/bin/kernel-tests/isolation.rs`).
const NMI_MARKER: &str = "[kernel-tests] nmi: inject now";
/// How many times it asks: while a thread spins in ring 3, and while the kernel idles.
const NMI_CUES: usize = 2;

/// The in-guest kernel test suite: every test passes, with the kernel's invariant checker after
/// every syscall and fault (`ozone.check=invariants`, debug kernel): a broken invariant stops the
/// machine as a kernel fault. The suite's NMI tests get their NMIs (injected through QEMU's
/// monitor at the suite's cue), and for each the kernel logs a line about it before the suite
/// goes on.
fn kernel_suite(ctx: &Ctx) -> TestResult {
    kernel_suite_with(
        ctx,
        "ozone.check=invariants",
        &["ozone: invariant checker on: after every 1 syscalls and faults"],
    )
}

/// How long the kernel suite may take with the invariant checker after every syscall and fault
/// (it walks every reachable capability each time; about 40 s against two seconds without).
const CHECKED_SUITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The kernel suite with every hardening option on ([`HARDENED`]): the FPU isolation test
/// (`fpu_state_is_per_thread`) then checks eager switching.
fn kernel_suite_hardened(ctx: &Ctx) -> TestResult {
    kernel_suite_with(ctx, HARDENED, HARDENED_LINES)
}

/// The kernel suite booted with `cmdline`; the log must also show `present`.
fn kernel_suite_with(ctx: &Ctx, cmdline: &str, present: &[&str]) -> TestResult {
    let initrd = ctx.initrd_from("kernel-tests", &ctx.artifacts.kernel_tests)?;
    let mut run = ctx.pvh(&initrd, cmdline);
    if cmdline.contains("ozone.check=") {
        run.timeout = Some(CHECKED_SUITE_TIMEOUT);
    }
    run.nmi = Some(NmiInjection { marker: NMI_MARKER.to_string(), ack: "n".to_string() });
    let run = run.run()?;
    let mut wanted = vec![
        " passed, 0 failed",
        "[kernel-tests] ok   fpu_state_is_per_thread",
        "[kernel-tests] ok   invalid_capabilities_and_arguments",
        "[kernel-tests] ok   nmi_while_the_kernel_idles",
        "[kernel-tests] ok   call_interruptible_ends_on_a_bound_signal",
    ];
    wanted.extend_from_slice(present);
    let expect = Expect { outcome: success(), present: &wanted, absent: &["[kernel-tests] FAIL"], allow_panic: false };
    let mut problems = expect.problems(&run);
    problems.extend(nmi_problems(&run.serial, run.nmis, NMI_CUES));
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) }) }
}

/// What is wrong with the NMIs of a kernel-suite run: `injected` of them were sent (`expected`
/// wanted), and after each cue, before the suite's next line, the kernel must have logged a line
/// (`ozone: ...`) naming the NMI.
fn nmi_problems(serial: &str, injected: usize, expected: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let cues = serial.matches(NMI_MARKER).count();
    if cues != expected {
        problems.push(format!("the suite asked for {cues} NMIs (`{NMI_MARKER}`), expected {expected}"));
    }
    if injected != cues {
        problems.push(format!("{injected} of {cues} NMIs were injected"));
    }
    for (i, after) in serial.split(NMI_MARKER).skip(1).enumerate() {
        // From the line after the cue to the suite's next line.
        let rest = after.split_once('\n').map_or("", |(_, rest)| rest);
        let window = rest.find("[kernel-tests]").map_or(rest, |end| &rest[..end]);
        if !window.lines().any(|l| l.starts_with("ozone: ") && l.contains("NMI")) {
            problems.push(format!(
                "no kernel line about NMI {} (a line `ozone: ...NMI...` between the cue and the suite's next line)",
                i + 1
            ));
        }
    }
    problems
}

/// The syscall fuzzer's seed in CI (`OZONE_SYSCALL_FUZZ_SEED` overrides it).
const FUZZ_SEED: u64 = 0x0207_a11c_e5ee_d5ee;
/// Syscalls the fuzzer's workers make in CI (`OZONE_SYSCALL_FUZZ_SYSCALLS` overrides it).
const FUZZ_SYSCALLS: u64 = 200_000;

/// Every invocation the fuzzer can aim at with the authority it holds: every label of every
/// object type (IRQControl Get and IOPortControl Issue through the server's broker, which holds
/// the control capabilities), each Untyped Retype object type, and every syscall a worker makes
/// (ThreadExit only the victims make: a worker must keep running).
const FUZZ_COVERAGE: &[&str] = &[
    "Untyped/Retype",
    "Untyped/GetInfo",
    "CNode/Copy",
    "CNode/Mint",
    "CNode/Move",
    "CNode/Mutate",
    "CNode/Delete",
    "CNode/Revoke",
    "CNode/CancelBadgedSends",
    "TCB/Configure",
    "TCB/SetSpace",
    "TCB/SetIPCBuffer",
    "TCB/SetPriority",
    "TCB/SetMCPriority",
    "TCB/ReadRegisters",
    "TCB/WriteRegisters",
    "TCB/Resume",
    "TCB/Suspend",
    "TCB/BindNotification",
    "TCB/UnbindNotification",
    "TCB/SetTLSBase",
    "TCB/SetProfile",
    "TCB/GetProfile",
    "TCB/SetFaultHandler",
    "TCB/ArmProfile",
    "PML4/Map",
    "PML4/Unmap",
    "PDPT/Map",
    "PDPT/Unmap",
    "PageDirectory/Map",
    "PageDirectory/Unmap",
    "PageTable/Map",
    "PageTable/Unmap",
    "Frame4K/Map",
    "Frame4K/Unmap",
    "Frame4K/GetAddress",
    "Frame2M/Map",
    "Frame2M/Unmap",
    "Frame2M/GetAddress",
    "IRQControl/Get",
    "IRQControl/GetMsi",
    "IRQHandler/Ack",
    "IRQHandler/SetNotification",
    "IRQHandler/Clear",
    "IOPortControl/Issue",
    "IOPort/In8",
    "IOPort/In16",
    "IOPort/In32",
    "IOPort/Out8",
    "IOPort/Out16",
    "IOPort/Out32",
    "Telemetry/Read",
    "Untyped/Retype(Untyped)",
    "Untyped/Retype(TCB)",
    "Untyped/Retype(Endpoint)",
    "Untyped/Retype(Notification)",
    "Untyped/Retype(CNode)",
    "Untyped/Retype(Frame4K)",
    "Untyped/Retype(Frame2M)",
    "Untyped/Retype(PageTable)",
    "Untyped/Retype(PageDirectory)",
    "Untyped/Retype(PDPT)",
    "Untyped/Retype(PML4)",
    "syscall/Call",
    "syscall/ReplyRecv",
    "syscall/Send",
    "syscall/NBSend",
    "syscall/Recv",
    "syscall/Reply",
    "syscall/Yield",
    "syscall/NBRecv",
    "syscall/DebugWrite",
    "syscall/unknown",
];

/// The coverage entries that cannot succeed with any authority, and why: they must never
/// succeed, and every other entry must succeed at least once.
const FUZZ_NEVER_SUCCEEDS: &[(&str, &str)] = &[
    ("PML4/Map", "a PML4 is the root of an address space and is mapped into nothing: always IllegalOperation"),
    (
        "syscall/unknown",
        "a number the kernel does not know fails with UnknownSyscall (the workers have no fault handler)",
    ),
];

/// How often the kernel's invariant checker runs under the fuzzer in CI (debug kernels; it walks
/// every capability reachable from the root task, so checking after every syscall would make the
/// run 30 times slower): `ozone.check=invariants:1000` adds about a third to its time.
const FUZZ_CHECK: &str = "invariants:1000";

/// The fuzzer's parameters: its seed and length from `OZONE_SYSCALL_FUZZ_SEED` (hex with `0x`,
/// or decimal) and `OZONE_SYSCALL_FUZZ_SYSCALLS`, else the CI values; and the kernel's invariant
/// checker (`ozone.check=`) from `OZONE_SYSCALL_FUZZ_CHECK` (`invariants:N`, or `off`), else
/// [`FUZZ_CHECK`] for a debug kernel (`release`: whether the kernel is a release build, which
/// has no checker).
fn fuzz_parameters(release: bool) -> Result<(u64, u64, Option<String>)> {
    let parse = |name: &str, default: u64| -> Result<u64> {
        match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => {
                let v = v.trim().replace('_', "");
                let parsed = match v.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => v.parse(),
                };
                parsed.map_err(|e| format!("{name}={v}: {e}"))
            }
        }
    };
    let check = match std::env::var("OZONE_SYSCALL_FUZZ_CHECK") {
        Ok(c) if c.trim() == "off" || c.trim().is_empty() => None,
        Ok(c) => Some(c.trim().to_string()),
        Err(_) => (!release).then(|| FUZZ_CHECK.to_string()),
    };
    Ok((parse("OZONE_SYSCALL_FUZZ_SEED", FUZZ_SEED)?, parse("OZONE_SYSCALL_FUZZ_SYSCALLS", FUZZ_SYSCALLS)?, check))
}

/// What the coverage lines (`[fuzz] coverage NAME calls=N ok=N`) of a fuzzer run lack.
fn fuzz_coverage_problems(serial: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for &name in FUZZ_COVERAGE {
        let prefix = format!("[fuzz] coverage {name} calls=");
        let Some(rest) = serial.lines().find_map(|l| l.strip_prefix(&prefix)) else {
            problems.push(format!("no coverage line for {name}"));
            continue;
        };
        let mut fields = rest.split(" ok=");
        let calls = fields.next().and_then(|c| c.trim().parse::<u64>().ok());
        let ok = fields.next().and_then(|c| c.trim().parse::<u64>().ok());
        let never = FUZZ_NEVER_SUCCEEDS.iter().any(|(n, _)| *n == name);
        match (calls, ok) {
            (Some(0), _) => problems.push(format!("{name} was never reached")),
            (Some(_), Some(0)) if !never => problems.push(format!("{name} never succeeded")),
            // The kernel let something impossible succeed (or the fuzzer miscounted).
            (Some(_), Some(n)) if never && n > 0 => problems.push(format!("{name} succeeded {n} times")),
            (Some(_), Some(_)) => {}
            _ => problems.push(format!("cannot read the coverage line for {name}")),
        }
    }
    problems
}

/// The syscall fuzzer: four workers in two address spaces make seeded random syscalls (CI: 200,000
/// from a fixed seed) at every invocation of every object the fuzzer holds, victim threads block
/// in IPC, a sentinel checks the system stays healthy, after every epoch all the fuzzer's memory
/// is back, and the kernel's invariant checker runs after every 1000th syscall. Under `-icount`
/// the run is deterministic: a seed replays exactly. In a run at least as long as the CI's, every
/// coverage entry must be reached and, unless [`FUZZ_NEVER_SUCCEEDS`] says why not, succeed.
fn syscall_fuzzer(ctx: &Ctx) -> TestResult {
    syscall_fuzzer_with(ctx, "")
}

/// The syscall fuzzer with the skim window on (`ozone.kpti=on`): address spaces made, deleted and
/// swapped under threads (`SetSpace`, `Configure`, revocations) while the kernel records, rather
/// than loads, the CR3 the next exit uses.
fn syscall_fuzzer_kpti(ctx: &Ctx) -> TestResult {
    syscall_fuzzer_with(ctx, "ozone.kpti=on")
}

/// The syscall fuzzer booted with `extra` on the kernel command line besides the checker's option.
fn syscall_fuzzer_with(ctx: &Ctx, extra: &str) -> TestResult {
    let release = ctx.artifacts.kernel.parent().and_then(|d| d.file_name()) == Some(Profile::Release.dir().as_ref());
    let (seed, syscalls, check) = fuzz_parameters(release)?;
    let elf = crate::read_file(&ctx.artifacts.syscall_fuzzer)?;
    let elf = initrd::strip_elf(&elf).unwrap_or(elf);
    // Fixed widths: under -icount even parsing a longer number would shift every later timer
    // tick, and runs of different lengths would differ from the start instead of at the end.
    let args = format!("seed={seed:#018x}\nsyscalls={syscalls:020}\n");
    let bytes =
        initrd::archive(&[(initrd::ROOT_TASK, &elf), (initrd::SEED, &ctx.seed.0), ("fuzz.args", args.as_bytes())])?;
    let path = ctx.ws.target().join("initrd").join("test-syscall-fuzzer.tar");
    crate::write_file(&path, &bytes)?;
    let check_option = check.as_ref().map_or(String::new(), |c| format!("ozone.check={}", c.trim()));
    let cmdline = [extra, &check_option].iter().filter(|s| !s.is_empty()).copied().collect::<Vec<_>>().join(" ");
    let mut run = ctx.pvh(&path, &cmdline);
    run.icount = true;
    // About 5 s per 100,000 syscalls here, 7 s with the CI's checker (some seeds take up to
    // twice that): a second per 4,000, and half a minute to boot and report. A checker that runs
    // more often than the CI's: a second per 100 (every entry is about 30 times slower).
    let often = check.as_deref().is_some_and(|c| c != FUZZ_CHECK);
    let per_second = if often { 100 } else { 4_000 };
    run.timeout = Some(Duration::from_secs(30 + syscalls / per_second));
    let run = run.run()?;
    let expect = Expect {
        outcome: success(),
        present: &["[fuzz] PASS"],
        absent: &["[fuzz] FAIL", "ozone: kernel"],
        allow_panic: false,
    };
    let mut problems = expect.problems(&run);
    if extra.contains("ozone.kpti=on") && !run.serial.contains(KPTI_LINE) {
        problems.push(format!("serial log lacks `{KPTI_LINE}`"));
    }
    let made = run.serial.lines().find_map(|l| {
        let rest = l.strip_prefix("[fuzz] syscalls=")?;
        rest.split(' ').next()?.parse::<u64>().ok()
    });
    match made {
        Some(n) if n >= syscalls => {}
        other => problems.push(format!("expected at least {syscalls} syscalls, the fuzzer reports {other:?}")),
    }
    // Coverage is asked of runs at least as long as the CI's (a shorter one reproduces a seed).
    if syscalls >= FUZZ_SYSCALLS {
        problems.extend(fuzz_coverage_problems(&run.serial));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let checker = if cmdline.is_empty() { String::new() } else { format!(", {cmdline}") };
        problems.insert(0, format!("fuzz seed {seed:#x}, {syscalls} syscalls{checker}"));
        Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) })
    }
}

/// The differential IPC test's seed and steps in CI (`OZONE_IPC_DIFF_SEED` and
/// `OZONE_IPC_DIFF_STEPS` override them). 50,000 steps make about 65,000 IPC operations.
const IPC_DIFF_SEED: u64 = 0x0d1f_f0fa_57ba_7401;
const IPC_DIFF_STEPS: u64 = 50_000;
/// IPC operations a run must make at least, and fastpath hits a debug kernel must count with
/// the fastpath on (CI's seed gives about 6,800).
const IPC_DIFF_MIN_OPS: u64 = 10_000;
const IPC_DIFF_MIN_HITS: u64 = 1_000;
const IPC_DIFF_PREFIX: &str = "[ipcdiff] ";
const FASTPATH_HITS_PREFIX: &str = "ozone: ipc fastpath hits: ";

/// A number from the environment variable `name` (hex with `0x`, or decimal), else `default`.
fn env_number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => {
            let v = v.trim().replace('_', "");
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|e| format!("{name}={v}: {e}"))
        }
    }
}

/// The `[ipcdiff]` lines of a run: its transcript (hashes, per-thread counts, coverage, verdict).
fn ipc_diff_transcript(serial: &str) -> Vec<&str> {
    serial.lines().filter_map(|l| l.find(IPC_DIFF_PREFIX).map(|i| &l[i..])).collect()
}

/// The kernel's count of syscalls its fastpaths took (`call`, `reply_recv`), printed by debug
/// kernels at the end.
fn fastpath_hits(serial: &str) -> Option<(u64, u64)> {
    let rest = serial.lines().find_map(|l| Some(&l[l.find(FASTPATH_HITS_PREFIX)? + FASTPATH_HITS_PREFIX.len()..]))?;
    let field = |name: &str| -> Option<u64> {
        let v = rest.split(' ').find_map(|f| f.strip_prefix(name))?;
        v.parse().ok()
    };
    Some((field("call=")?, field("reply_recv=")?))
}

/// The IPC fastpath against the general path: the `ipc-diff` program (six threads in two
/// address spaces making seeded random Call, ReplyRecv, Send, NBSend, Recv, NBRecv and Reply
/// with random lengths, words, badges, capability transfers and faults; see its header) boots
/// twice with the same seed, with `ozone.fastpath=on` and `ozone.fastpath=off`, at once (a debug
/// kernel with its invariant checker after every 1000th syscall, [`FUZZ_CHECK`]). Both
/// must pass, make at least [`IPC_DIFF_MIN_OPS`] IPC operations and print the same transcript:
/// every thread's hash of all it observed, its operation count, the coverage counts. A debug
/// kernel's count of fastpath hits must be at least [`IPC_DIFF_MIN_HITS`] with the fastpath on
/// and 0 with it off.
fn ipc_fastpath_differential(ctx: &Ctx) -> TestResult {
    let seed = env_number("OZONE_IPC_DIFF_SEED", IPC_DIFF_SEED)?;
    let steps = env_number("OZONE_IPC_DIFF_STEPS", IPC_DIFF_STEPS)?;
    let release = ctx.artifacts.kernel.parent().and_then(|d| d.file_name()) == Some(Profile::Release.dir().as_ref());
    let elf = crate::read_file(&ctx.artifacts.ipc_diff)?;
    let elf = initrd::strip_elf(&elf).unwrap_or(elf);
    let args = format!("seed={seed:#018x}\nsteps={steps}\n");
    let bytes =
        initrd::archive(&[(initrd::ROOT_TASK, &elf), (initrd::SEED, &ctx.seed.0), ("ipcdiff.args", args.as_bytes())])?;
    let path = ctx.ws.target().join("initrd").join("test-ipc-diff.tar");
    crate::write_file(&path, &bytes)?;
    // The two boots run side by side, each with a scratch directory of its own.
    let runs: Vec<Run> = ["on", "off"]
        .iter()
        .map(|mode| {
            // A debug kernel also runs its invariant checker, as under the syscall fuzzer.
            let check = if release { String::new() } else { format!(" ozone.check={FUZZ_CHECK}") };
            let mut run = ctx.pvh(&path, &format!("ozone.fastpath={mode}{check}"));
            run.scratch = ctx.scratch.join(format!("ipc-diff-{mode}"));
            // About 5 s for 50,000 steps on a debug kernel here; a second per 500 steps is ample.
            run.timeout = Some(Duration::from_secs(30 + steps / 500));
            run
        })
        .collect();
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = runs.iter().map(|run| s.spawn(move || run.run())).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a QEMU run panicked".into()))).collect::<Vec<_>>()
    });
    let mut results = results.into_iter();
    let (Some(on), Some(off)) = (results.next(), results.next()) else {
        return Err("two runs expected".to_string().into());
    };
    let (on, off) = (on?, off?);
    let mut problems = Vec::new();
    for (mode, run) in [("on", &on), ("off", &off)] {
        let expect = Expect {
            outcome: success(),
            present: &["[ipcdiff] PASS"],
            absent: &["[ipcdiff] FAIL", "ozone: kernel", "user fault"],
            allow_panic: false,
        };
        problems.extend(expect.problems(run).into_iter().map(|p| format!("fastpath {mode}: {p}")));
        let banner = format!("ozone: ipc fastpath: {mode}");
        if !run.serial.contains(&banner) {
            problems.push(format!("fastpath {mode}: the boot log lacks `{banner}`"));
        }
        let ops = run.serial.lines().find_map(|l| {
            let rest = &l[l.find("[ipcdiff] transcript ")?..];
            rest.split(' ').find_map(|f| f.strip_prefix("ipc_ops="))?.parse::<u64>().ok()
        });
        match ops {
            Some(n) if n >= IPC_DIFF_MIN_OPS => {}
            other => {
                problems.push(format!("fastpath {mode}: expected {IPC_DIFF_MIN_OPS} IPC operations, got {other:?}"))
            }
        }
    }
    let (a, b) = (ipc_diff_transcript(&on.serial), ipc_diff_transcript(&off.serial));
    if a != b {
        let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        problems.push(format!(
            "the transcripts differ (fastpath on: {} lines, off: {}); first difference, line {}: on `{}`, off `{}`",
            a.len(),
            b.len(),
            first + 1,
            a.get(first).unwrap_or(&"(none)"),
            b.get(first).unwrap_or(&"(none)")
        ));
    }
    match (fastpath_hits(&on.serial), fastpath_hits(&off.serial)) {
        (Some((call, rr)), Some((0, 0))) if call + rr >= IPC_DIFF_MIN_HITS && call > 0 && rr > 0 => {}
        (None, None) if release => {}
        (on_hits, off_hits) => problems.push(format!(
            "fastpath hits (Call, ReplyRecv): on {on_hits:?}, off {off_hits:?}; expected at least \
             {IPC_DIFF_MIN_HITS} (both kinds) on and none off"
        )),
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.insert(0, format!("ipc-diff seed {seed:#x}, {steps} steps"));
    // Show the run that failed, or the one with the fastpath on.
    let shown = if off.serial.contains("[ipcdiff] PASS") { on } else { off };
    Err(Failure { reason: problems.join("; "), run: Some(Box::new(shown)) })
}

fn read_kernel_memory(ctx: &Ctx) -> TestResult {
    let initrd = ctx.initrd_from("read-kernel-memory", &ctx.artifacts.read_kernel_memory)?;
    let run = ctx.pvh(&initrd, "").run()?;
    let expect = Expect {
        outcome: Outcome::Exit(ExitCode::UserFault),
        // Error code 0x5: a ring-3 read of a present supervisor page.
        present: &["ozone: user fault in task root: #PF page fault (vector 14) error=0x5 ", "cr2=0xffffffff80200000"],
        absent: &["[read-kernel-memory] FAIL"],
        allow_panic: false,
    };
    expect.check(run)
}

/// With the skim window on, the kernel's image is not mapped in the root task's address space at
/// all: the same read faults on a page that is not present (error code 0x4), not on a
/// supervisor page (0x5, [`read_kernel_memory`]). `ozone.kpti=auto` leaves it off under QEMU
/// (CPUID's hypervisor bit is set), so there the read finds the supervisor page.
fn read_kernel_memory_kpti(ctx: &Ctx) -> TestResult {
    let initrd = ctx.initrd_from("read-kernel-memory", &ctx.artifacts.read_kernel_memory)?;
    let run = ctx.pvh(&initrd, "ozone.kpti=auto").run()?;
    let expect = Expect {
        outcome: Outcome::Exit(ExitCode::UserFault),
        present: &[
            "; kpti=auto: kernel half and direct map mapped in every address space",
            "ozone: user fault in task root: #PF page fault (vector 14) error=0x5 ",
        ],
        absent: &["[read-kernel-memory] FAIL"],
        allow_panic: false,
    };
    expect.check(run).map_err(|f| Failure { reason: format!("ozone.kpti=auto: {}", f.reason), ..f })?;
    let run = ctx.pvh(&initrd, "ozone.kpti=on").run()?;
    let expect = Expect {
        outcome: Outcome::Exit(ExitCode::UserFault),
        present: &[
            KPTI_LINE,
            // Error code 0x4: a ring-3 read of a page that is not present.
            "ozone: user fault in task root: #PF page fault (vector 14) error=0x4 ",
            "cr2=0xffffffff80200000",
        ],
        absent: &["[read-kernel-memory] FAIL"],
        allow_panic: false,
    };
    expect.check(run)
}

fn boot_pvh_icount(ctx: &Ctx) -> TestResult {
    let mut run = ctx.system("")?;
    run.icount = true;
    let result = run.run()?;
    match parse_boot_cost(&result.serial) {
        Some(n) if n > 0 => Expect::new(success(), BOOTED).check(result),
        Some(_) => Err(Failure { reason: "the boot cost is 0 ticks".into(), run: Some(Box::new(result)) }),
        None => Err(Failure {
            reason: "serial log has no `ozone: boot cost: <N> tsc ticks` line".into(),
            run: Some(Box::new(result)),
        }),
    }
}

fn boot_iso(ctx: &Ctx, uefi: Option<Ovmf>, timeout: Duration) -> TestResult {
    let iso = ctx.iso()?;
    let mut run = ctx.pvh(&ctx.artifacts.kernel, "");
    run.boot = Boot::Iso { iso, uefi };
    run.script = Some(vec![SHUTDOWN.to_string()]);
    run.timeout = Some(timeout);
    Expect::new(success(), BOOTED).check(run.run()?)
}

fn boot_iso_seabios(ctx: &Ctx) -> TestResult {
    boot_iso(ctx, None, SEABIOS_TIMEOUT)
}

fn boot_iso_ovmf(ctx: &Ctx) -> TestResult {
    let ovmf = Ovmf::find().ok_or_else(deps::ovmf_missing)?;
    boot_iso(ctx, Some(ovmf), OVMF_TIMEOUT)
}

fn kernel_exception(ctx: &Ctx) -> TestResult {
    let run = ctx.system("ozone.test=kernel-exception")?.run()?;
    Expect::new(Outcome::Exit(ExitCode::KernelFault), &["ozone: kernel exception"]).check(run)
}

fn triple_fault(ctx: &Ctx) -> TestResult {
    let run = ctx.system("ozone.test=triple-fault")?.run()?;
    Expect::new(Outcome::GuestReset, &["ozone: test: triple fault"]).check(run)
}

fn malformed_root_elf(ctx: &Ctx) -> TestResult {
    let elf = crate::read_file(&ctx.artifacts.root_task)?;
    let variants = [("garbage", initrd::garbage_root_task()), ("truncated", initrd::truncated_root_task(&elf))];
    for (variant, root_task) in variants {
        let initrd = ctx.initrd(&format!("malformed-{variant}"), &root_task)?;
        let run = ctx.pvh(&initrd, "").run()?;
        let expect = Expect {
            outcome: Outcome::Exit(ExitCode::BootFailure),
            present: &["ozone: root task: invalid ELF"],
            absent: &["panicked"],
            allow_panic: false,
        };
        expect.check(run).map_err(|f| Failure { reason: format!("{variant} root task: {}", f.reason), ..f })?;
    }
    Ok(())
}

fn user_fault(ctx: &Ctx) -> TestResult {
    let initrd = ctx.initrd_from("user-fault", &ctx.artifacts.user_fault)?;
    let run = ctx.pvh(&initrd, "").run()?;
    Expect::new(Outcome::Exit(ExitCode::UserFault), &["ozone: user fault", "ozone: the root task has ended"]).check(run)
}

fn syscall_checks(ctx: &Ctx) -> TestResult {
    let initrd = ctx.initrd_from("syscall-checks", &ctx.artifacts.syscall_checks)?;
    Expect::new(success(), &["[syscall-checks] PASS"]).check(ctx.pvh(&initrd, "").run()?)
}

fn acpi_poweroff(ctx: &Ctx) -> TestResult {
    let mut run = ctx.system("")?;
    run.debug_exit = false;
    Expect::new(Outcome::PowerOff, &[markers::POWER_OFF]).check(run.run()?)
}

/// The syscall shaper: `shaper-check`, started from the shell, warms up (Call, Yield; `echo`
/// ECHO, `shaper` STATUS), is enforced by the shaper once its window is over, then steps outside
/// its profile: the kernel denies a new operation (NBRecv; Studio logs its `deny` decision) and
/// the servers deny new methods (`echo` REVERSE, `shaper` PROFILE; each reports to Studio), while
/// what it learned keeps working.
fn shaper_learn_then_enforce(ctx: &Ctx) -> TestResult {
    // Reports are read with `reports` (the console prints Studio's decisions, not programs' reports).
    let script = ["start shaper-check", "@wait [shaper-check] done", "reports 32", SHUTDOWN];
    let run = ctx.system_script(&script)?.run()?;
    let expect = Expect {
        outcome: success(),
        present: &[
            "[shaper] shaping `shaper`, `echo`, `secmem`, `timer`, `mute` after a warm-up of 64 syscalls per agent",
            "shaper: enforce shaper-check's profile (warm-up over after ",
            "[shaper-check] profile enforced after ",
            "[shaper-check] learned operations still allowed",
            // The kernel half: denied, reported to Studio as a fault, resumed with Denied.
            "[studio] deny shaper-check: operation 7 is outside its syscall profile",
            "[shaper-check] new kernel operation denied: nb-recv -> Denied",
            // The server half: denied before the handler, reported to Studio.
            "[echo] shaper: denied method 1 of `echo` to shaper-check",
            "[shaper-check] new method denied: echo REVERSE -> denied",
            "[shaper] shaper: denied method 0 of `shaper` to shaper-check",
            "[shaper-check] PASS",
        ],
        absent: &["[shaper-check] FAIL", "shaper-check faulted"],
        allow_panic: false,
    };
    expect.check(run)
}

/// One line typed at the shell and what its answer — the serial output from that prompt to the
/// next one — must (`present`) and must not (`absent`) contain. Each of `rows` is a set of words
/// that must appear together on one line of the answer (a table row); `check` looks at the whole
/// answer and says what is wrong with it.
struct ShellStep {
    line: String,
    present: Vec<String>,
    absent: Vec<String>,
    rows: Vec<Vec<String>>,
    check: Option<fn(&str) -> Option<String>>,
}

impl ShellStep {
    fn new(line: &str, present: &[&str]) -> ShellStep {
        ShellStep {
            line: line.to_string(),
            present: present.iter().map(|s| s.to_string()).collect(),
            absent: Vec::new(),
            rows: Vec::new(),
            check: None,
        }
    }

    fn absent(mut self, absent: &[&str]) -> ShellStep {
        self.absent.extend(absent.iter().map(|s| s.to_string()));
        self
    }

    fn row(mut self, words: &[&str]) -> ShellStep {
        self.rows.push(words.iter().map(|s| s.to_string()).collect());
        self
    }

    fn check(mut self, check: fn(&str) -> Option<String>) -> ShellStep {
        self.check = Some(check);
        self
    }
}

/// The shell's answer to each typed line: the serial output after the k-th prompt answers the
/// k-th typed line (other programs' output may be mixed in; checks only look for what must or
/// must not be there). `@wait` lines are not typed and have no answer.
fn shell_answers(serial: &str) -> Vec<&str> {
    // New prompts only: the console prints its prompt again after programs' lines.
    let starts = crate::qemu::fresh_prompts(serial);
    let mut answers = Vec::new();
    for (k, &at) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(serial.len());
        answers.push(&serial[at + crate::qemu::PROMPT.len()..end]);
    }
    answers
}

/// Every way the answers in `serial` fall short of `steps`.
fn shell_problems(serial: &str, steps: &[ShellStep]) -> Vec<String> {
    let answers = shell_answers(serial);
    let mut problems = Vec::new();
    let typed = steps.iter().filter(|s| !s.line.starts_with(crate::qemu::WAIT_DIRECTIVE));
    for (i, step) in typed.enumerate() {
        let shown: String = step.line.chars().take(40).collect();
        let Some(answer) = answers.get(i) else {
            problems.push(format!("no answer to `{shown}` (typed line {})", i + 1));
            continue;
        };
        for p in &step.present {
            if !answer.contains(p.as_str()) {
                problems.push(format!("the answer to `{shown}` lacks `{p}`"));
            }
        }
        for a in &step.absent {
            if answer.contains(a.as_str()) {
                problems.push(format!("the answer to `{shown}` contains `{a}`"));
            }
        }
        for row in &step.rows {
            if !answer.lines().any(|l| row.iter().all(|w| l.contains(w.as_str()))) {
                problems.push(format!("the answer to `{shown}` has no line with all of {row:?}"));
            }
        }
        if let Some(problem) = step.check.and_then(|c| c(answer)) {
            problems.push(format!("the answer to `{shown}`: {problem}"));
        }
    }
    problems
}

/// Boot the full system, type `steps` at the shell (the last one should be `shutdown`) and check
/// every answer, that the whole script was typed, that the transcript shows each of `transcript`
/// somewhere, and that the system ended cleanly.
fn shell_session(ctx: &Ctx, steps: &[ShellStep], transcript: &[&str]) -> TestResult {
    let script: Vec<&str> = steps.iter().map(|s| s.line.as_str()).collect();
    let run = ctx.system_script(&script)?.run()?;
    let present: Vec<&str> = [STUDIO_UP].iter().chain(transcript).copied().collect();
    let mut problems = Expect::new(run.outcome.clone(), &present).problems(&run);
    if !run.outcome.is_clean() {
        problems.insert(0, format!("expected a clean shutdown, got {}", run.outcome));
    }
    let to_type = script.iter().filter(|l| !l.starts_with(crate::qemu::WAIT_DIRECTIVE)).count();
    if run.typed < to_type {
        problems.push(format!("only {} of the {to_type} lines were typed (too few prompts)", run.typed));
    }
    problems.extend(shell_problems(&run.serial, steps));
    if problems.is_empty() { Ok(()) } else { Err(Failure { reason: problems.join("; "), run: Some(Box::new(run)) }) }
}

/// The number before `unit` in `text` (`1234 cycles` → 1234).
fn number_before(text: &str, unit: &str) -> Option<u64> {
    let head = text[..text.find(unit)?].trim_end();
    let digits = head.rsplit(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// `None` if the first number before `unit` after `after` in `answer` is positive, else why not.
fn positive(answer: &str, after: &str, unit: &str) -> Option<String> {
    let rest = answer.find(after).map(|at| &answer[at..]);
    match rest.and_then(|r| number_before(r, unit)) {
        Some(n) if n > 0 => None,
        other => Some(format!("expected a positive number before `{unit}` after `{after}`, got {other:?}")),
    }
}

/// The shell's test program: an agent that spins forever, started only when asked.
const SPINNER: &str = "spinner";

/// The console's client for the tests: writes through the `console` interface.
const CONSOLE_CHECK: &str = "console-check";

/// Every shell command against the live system, in one boot: `help` lists them all; `ps` shows
/// the console running and the spinner stopped; `caps`, `grant`, `revoke` change what the
/// console holds; `start` and `kill` move the spinner and Studio's log records why; `profile`
/// shows the shaper's masks; `mem` and `bench` report numbers; `shutdown` powers off cleanly.
/// On the way `console-check` writes through the console server (a line, a text longer than one
/// message, an oversized request that must be refused).
fn shell_commands(ctx: &Ctx) -> TestResult {
    let desc = ctx.description();
    if desc.program(SPINNER).is_none() {
        return Err(format!(
            "{} has no `{SPINNER}` program for the shell tests to start and kill",
            system::TEST_OVERLAY
        )
        .into());
    }
    // An interface served by some other program, for grant and revoke.
    let iface = desc
        .programs
        .iter()
        .filter(|p| p.name != "console")
        .find_map(|p| p.provides.first())
        .map_or("console", |s| s.as_str());
    let held = format!("interface {iface}");
    // With the syscall shaper, `profile` shows its masks; without, the kernel's counters.
    let profile_shows = if desc.program("shaper").is_some() { "kernel   allowed: " } else { "  syscalls " };
    let steps = [
        ShellStep::new(
            "help",
            &[
                "help [COMMAND]",
                "\n  ps ",
                "caps AGENT",
                "grant AGENT INTERFACE",
                "revoke AGENT INTERFACE",
                "kill AGENT",
                "start AGENT",
                "profile AGENT",
                "log [N]",
                "\n  mem ",
                "bench [CALLS]",
                "\n  shutdown ",
            ],
        ),
        ShellStep::new("ps", &["ID  NAME", "programs, "])
            .row(&["console", "server", "running", "150"])
            .row(&[SPINNER, "agent", "stopped"]),
        ShellStep::new(
            "caps console",
            &[
                "capabilities of console:",
                "studio",
                "serves console",
                "serial ports 0x3f8-0x3ff",
                "serial interrupt (IRQ 4)",
            ],
        )
        .absent(&[&held]),
        ShellStep::new(&format!("grant console {iface}"), &[&format!("granted: console may use `{iface}`")]),
        ShellStep::new("caps console", &[&held]),
        ShellStep::new(&format!("revoke console {iface}"), &[&format!("revoked: console may no longer use `{iface}`")]),
        ShellStep::new("caps console", &["serves console"]).absent(&[&held]),
        ShellStep::new(&format!("start {CONSOLE_CHECK}"), &[&format!("started {CONSOLE_CHECK} (id ")]),
        ShellStep::new(&format!("{}[{CONSOLE_CHECK}] done", crate::qemu::WAIT_DIRECTIVE), &[]),
        // A grant to a program that is not running: recorded and logged, not an error.
        ShellStep::new(
            &format!("grant {SPINNER} {iface}"),
            &[
                &format!("granted: {SPINNER} may use `{iface}` (no capability placed"),
                &format!("grant {SPINNER} `{iface}`: recorded; it is not running"),
            ],
        ),
        ShellStep::new(&format!("start {SPINNER}"), &[&format!("started {SPINNER} (id ")]),
        ShellStep::new("ps", &[]).row(&[SPINNER, "running"]),
        ShellStep::new(&format!("revoke {SPINNER} {iface}"), &[&format!("revoke {SPINNER} `{iface}`: held none")]),
        // The shaper answers at once, from what it has seen (it looks at agents when the system
        // is idle, which it is not while the spinner runs; then the shell shows the counters).
        ShellStep::new(&format!("profile {SPINNER}"), &[&format!("profile of {SPINNER}: ")]),
        ShellStep::new(
            &format!("kill {SPINNER}"),
            &[&format!("killed {SPINNER}: capabilities revoked, memory reclaimed")],
        ),
        ShellStep::new("ps", &[]).row(&[SPINNER, "stopped"]).row(&["console", "running"]),
        ShellStep::new("profile console", &[profile_shows]),
        ShellStep::new(&format!("profile {SPINNER}"), &[&format!("error: busy: `{SPINNER}` is not running")]),
        ShellStep::new(&format!("start {SPINNER}"), &[&format!("started {SPINNER}")]),
        ShellStep::new(
            "log 60",
            &[
                "start console (id",
                &format!("start {SPINNER} (id"),
                &format!("kill {SPINNER}: asked by console"),
                &format!("grant console `{iface}`"),
                &format!("revoke console `{iface}`"),
            ],
        ),
        ShellStep::new("mem", &["total ", "used by programs"]).check(|a| positive(a, "free", "KiB")),
        ShellStep::new("bench 100", &["100 round trips to Studio"]).check(|a| positive(a, "", "cycles per call")),
        ShellStep::new("shutdown", &["shutting down", "[studio] shutdown (status 0): asked by console"]),
    ];
    if desc.program(CONSOLE_CHECK).is_none() {
        return Err(format!("{} has no `{CONSOLE_CHECK}` program", system::TEST_OVERLAY).into());
    }
    let mut long = String::from("long:");
    for i in 0..400 {
        long.push_str(&format!(" w{i}"));
    }
    // The client sends it in pieces of one message each; the console prints it as one line.
    let written = [
        "[console-check] hello through the console server\r\n",
        &format!("[console-check] {long}\r\n"),
        "[console-check] formatted 2 + 3 = 5\r\n",
        "[console-check] done: PASS",
    ];
    shell_session(ctx, &steps, &written)
}

/// What the shell does with mistakes, in one boot: unknown commands, missing and extra
/// arguments, Studio's refusals, bad numbers, an over-long line, and editing keys typed on the
/// serial line (DEL, arrow-key escape sequences, non-ASCII bytes) — each answered with one clear
/// line, the shell staying up until `shutdown`.
fn shell_errors(ctx: &Ctx) -> TestResult {
    let long = "x".repeat(300);
    let steps = [
        ShellStep::new("frobnicate", &["error: unknown command `frobnicate` (type `help` for the list)"]),
        ShellStep::new("caps", &["usage: caps AGENT"]),
        ShellStep::new("grant console", &["usage: grant AGENT INTERFACE"]),
        ShellStep::new("kill a b", &["usage: kill AGENT"]),
        ShellStep::new("caps nosuch", &["error: not found"]),
        ShellStep::new(&format!("kill {SPINNER}"), &["error: busy"]),
        ShellStep::new("kill console", &["error: invalid argument"]),
        ShellStep::new("start console", &["error: busy"]),
        ShellStep::new("grant console nosuch", &["error: not found"]),
        ShellStep::new("profile nosuch", &["error: not found"]),
        ShellStep::new("log 0", &["error: `0` is not a number from 1 to 256", "usage: log [N]"]),
        ShellStep::new("bench 99999999999999999999", &["is not a number from 1 to 100000"]),
        ShellStep::new(&long, &["error: the line is too long (at most 200 characters)"]),
        // DEL erases the `z`: this is `ps`.
        ShellStep::new("pz\u{7f}s", &["ID  NAME"]).row(&["console", "running"]),
        // Arrow keys (escape sequences) are ignored: this is `help`.
        ShellStep::new("\u{1b}[Ahelp\u{1b}[B", &["commands:"]),
        // Bytes outside ASCII are ignored: this is `hlp`.
        ShellStep::new("h\u{e9}lp", &["error: unknown command `hlp`"]),
        ShellStep::new("help shutdown", &["usage: shutdown"]),
        ShellStep::new("shutdown", &["shutting down"]),
    ];
    shell_session(ctx, &steps, &[])
}

#[cfg(test)]
mod shell_unit_tests {
    use super::*;

    const TRANSCRIPT: &str = "boot\r\nozone> ps\r\n ID  NAME\r\n  2  console  server  running  150\r\n\
        ozone> [agent] hi\r\nmem\r\nfree  4096 KiB\r\nozone> shutdown\r\nshutting down\r\n";

    #[test]
    fn answers_are_split_at_prompts_and_checked() {
        let answers = shell_answers(TRANSCRIPT);
        assert_eq!(answers.len(), 3);
        assert!(answers[1].contains("[agent] hi") && answers[1].contains("free  4096 KiB"));
        let good = [
            ShellStep::new("ps", &["ID  NAME"]).row(&["console", "running"]).absent(&["error"]),
            ShellStep::new("mem", &[]).check(|a| positive(a, "free", "KiB")),
            ShellStep::new("shutdown", &["shutting down"]),
        ];
        assert_eq!(shell_problems(TRANSCRIPT, &good), Vec::<String>::new());
        let bad = [
            ShellStep::new("ps", &["nothing like this"]).row(&["console", "stopped"]).absent(&["console"]),
            ShellStep::new("mem", &[]).check(|a| positive(a, "total", "KiB")),
            ShellStep::new("shutdown", &[]),
            ShellStep::new("more", &[]),
        ];
        let problems = shell_problems(TRANSCRIPT, &bad);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(problems[4].contains("no answer to `more`"));
        // `@wait` lines take no answer.
        let waiting = [
            ShellStep::new("ps", &["ID  NAME"]),
            ShellStep::new("@wait [agent] hi", &["never checked"]),
            ShellStep::new("mem", &["free"]),
        ];
        assert_eq!(shell_problems(TRANSCRIPT, &waiting), Vec::<String>::new());
    }

    #[test]
    fn numbers_before_units() {
        assert_eq!(number_before("bench: 10 calls: 2500 cycles per call", "cycles per call"), Some(2500));
        assert_eq!(number_before("free   4096 KiB", "KiB"), Some(4096));
        assert_eq!(number_before("no number KiB", "KiB"), None);
        assert_eq!(number_before("nothing", "KiB"), None);
        assert!(positive("free 0 KiB", "free", "KiB").is_some());
    }
}

/// The tests whose name contains `filter` (all without one).
pub fn select(filter: Option<&str>) -> Vec<&'static QemuTest> {
    QEMU_TESTS.iter().filter(|t| filter.is_none_or(|f| t.name.contains(f))).collect()
}

/// `cargo xtask test`; `Ok(true)` when everything passed.
pub fn command(ws: &Workspace, args: &TestArgs) -> Result<bool> {
    let selected = select(args.filter.as_deref());
    if selected.is_empty() {
        let names: Vec<&str> = QEMU_TESTS.iter().map(|t| t.name).collect();
        return Err(format!(
            "no QEMU test matches `{}`; the tests are: {}",
            args.filter.as_deref().unwrap_or(""),
            names.join(", ")
        ));
    }
    deps::ensure_rust_target()?;
    let mut needs = vec![Need::Qemu];
    for need in selected.iter().flat_map(|t| t.needs) {
        if !needs.contains(need) {
            needs.push(*need);
        }
    }
    deps::ensure(&needs)?;

    let (checks_ok, host_ok) = if args.filter.is_none() {
        eprintln!("xtask: checks (rustfmt, clippy, rustdoc)");
        let checks_ok = check::run(ws)?;
        eprintln!("xtask: host tests");
        (checks_ok, build::host_tests(ws)?)
    } else {
        eprintln!("xtask: --filter given: skipping the checks and the host tests");
        (true, true)
    };

    eprintln!("xtask: building the kernel and userspace");
    let artifacts = match build::build_all(ws, Profile::from_release_flag(args.release)) {
        Ok(artifacts) => artifacts,
        Err(message) => {
            eprintln!("xtask: {message}");
            for test in &selected {
                println!("test qemu::{} ... FAILED (build failed)", test.name);
            }
            summary(checks_ok, host_ok, 0, selected.len());
            return Ok(false);
        }
    };
    let seed = initrd::resolve_seed(ws, args.seed)?;
    let ctx = Ctx { ws, artifacts: &artifacts, seed, scratch: ws.target().join("qemu"), iso: OnceCell::new() };

    let plural = if selected.len() == 1 { "" } else { "s" };
    println!("\nrunning {} QEMU test{plural} (instance seed {})", selected.len(), seed.to_hex());
    let start = Instant::now();
    let (mut passed, mut failed) = (0, 0);
    for test in &selected {
        print!("test qemu::{} ... ", test.name);
        let _ = std::io::stdout().flush();
        let test_start = Instant::now();
        match (test.run)(&ctx) {
            Ok(()) => {
                passed += 1;
                println!("ok ({:.1} s)", test_start.elapsed().as_secs_f64());
            }
            Err(failure) => {
                failed += 1;
                println!("FAILED ({:.1} s)", test_start.elapsed().as_secs_f64());
                report(&failure, &seed);
            }
        }
    }
    println!("\nQEMU tests took {:.1} s", start.elapsed().as_secs_f64());
    summary(checks_ok, host_ok, passed, failed);
    Ok(checks_ok && host_ok && failed == 0)
}

/// Print why a test failed, with its serial log.
fn report(failure: &Failure, seed: &Seed) {
    println!("    reason: {}", failure.reason);
    println!("    seed: {} (rerun with --seed)", seed.to_hex());
    let Some(run) = &failure.run else { return };
    println!("    qemu ({:.1} s): {}", run.elapsed.as_secs_f64(), run.command);
    println!("---- serial log ({} bytes) ----", run.serial.len());
    print!("{}", run.serial);
    if !run.serial.is_empty() && !run.serial.ends_with('\n') {
        println!();
    }
    if !run.stderr.trim().is_empty() {
        println!("---- QEMU stderr ----");
        print!("{}", run.stderr);
        if !run.stderr.ends_with('\n') {
            println!();
        }
    }
    println!("---- end of log ----");
}

/// The closing lines.
fn summary(checks_ok: bool, host_ok: bool, passed: usize, failed: usize) {
    if !checks_ok {
        println!("checks: FAILED (see the `check ... FAILED` lines above)");
    }
    if !host_ok {
        println!("host tests: FAILED (see the cargo test output above)");
    }
    println!("{passed} passed, {failed} failed");
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn a_program_started_with_too_little_of_its_quota_left_is_a_problem() {
        let start = |name: &str, left: &str| {
            format!(
                "[studio] start {name} (id 3, priority 1, quota 256 KiB, {left} KiB of it left once built, entry 0x1000): in the system description\n"
            )
        };
        let serial =
            start("roomy", "64") + &start("tight", "12") + &start("odd", "x") + "[studio] start nothing else\n";
        let problems = too_little_left(&serial);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("tight has 12 KiB of its quota left once built, under 64 KiB"));
        assert!(problems[1].starts_with("cannot read what is left of odd's quota"));
        let run = run_with(success(), &(start("tight", "60") + "ok"));
        assert!(Expect::new(success(), &["ok"]).problems(&run)[0].contains("tight has 60 KiB"));
    }

    fn run_with(outcome: Outcome, serial: &str) -> RunResult {
        RunResult {
            outcome,
            serial: serial.to_string(),
            stderr: String::new(),
            elapsed: Duration::ZERO,
            command: String::new(),
            typed: 0,
            nmis: 0,
        }
    }

    #[test]
    fn test_names_are_unique_and_filterable() {
        let names: Vec<&str> = QEMU_TESTS.iter().map(|t| t.name).collect();
        for (i, name) in names.iter().enumerate() {
            assert!(!names[i + 1..].contains(name), "duplicate test {name}");
        }
        assert_eq!(select(None).len(), QEMU_TESTS.len());
        let iso: Vec<&str> = select(Some("iso")).iter().map(|t| t.name).collect();
        assert_eq!(iso, ["boot_iso_seabios", "boot_iso_ovmf"]);
        assert!(select(Some("no-such-test")).is_empty());
    }

    #[test]
    fn fuzz_coverage_needs_every_entry_reached_and_succeeding() {
        let line = |name: &str, calls: u64, ok: u64| format!("[fuzz] coverage {name} calls={calls} ok={ok}\r\n");
        let never = |name: &str| FUZZ_NEVER_SUCCEEDS.iter().any(|(n, _)| *n == name);
        assert!(FUZZ_NEVER_SUCCEEDS.iter().all(|(n, _)| FUZZ_COVERAGE.contains(n)));
        let good: String = FUZZ_COVERAGE.iter().map(|n| line(n, 3, if never(n) { 0 } else { 1 })).collect();
        assert!(fuzz_coverage_problems(&good).is_empty());
        let never_ok = good.replace(&line("TCB/Suspend", 3, 1), &line("TCB/Suspend", 3, 0));
        assert_eq!(fuzz_coverage_problems(&never_ok), ["TCB/Suspend never succeeded"]);
        let unreached = good.replace(&line("IOPort/In16", 3, 1), &line("IOPort/In16", 0, 0));
        assert_eq!(fuzz_coverage_problems(&unreached), ["IOPort/In16 was never reached"]);
        let missing = good.replace(&line("syscall/Recv", 3, 1), "");
        assert_eq!(fuzz_coverage_problems(&missing), ["no coverage line for syscall/Recv"]);
        // What cannot succeed with any authority must not.
        let impossible = good.replace(&line("PML4/Map", 3, 0), &line("PML4/Map", 3, 2));
        assert_eq!(fuzz_coverage_problems(&impossible), ["PML4/Map succeeded 2 times"]);
        // Names are whole: `Untyped/Retype` is not satisfied by `Untyped/Retype(TCB)`.
        let only_typed = good.replace(&line("Untyped/Retype", 3, 1), "");
        assert_eq!(fuzz_coverage_problems(&only_typed), ["no coverage line for Untyped/Retype"]);
    }

    #[test]
    fn nmi_cues_need_injections_and_kernel_lines() {
        let good = format!(
            "[kernel-tests] ok   a\n{NMI_MARKER} (spinning)\nozone: NMI (vector 2): ignored\n[kernel-tests] ok   b\n\
             {NMI_MARKER} (idle)\nozone: NMI while idle\n[kernel-tests] ok   c\n"
        );
        assert_eq!(nmi_problems(&good, 2, 2), Vec::<String>::new());
        assert_eq!(nmi_problems(&good, 1, 2).len(), 1);
        // The kernel's line must come between the cue and the suite's next line, from the kernel.
        let late = format!("{NMI_MARKER} (x)\n[kernel-tests] ok   b\nozone: NMI\n");
        assert_eq!(nmi_problems(&late, 1, 1).len(), 1);
        let not_kernel = format!("{NMI_MARKER} (x)\n[other] NMI\n[kernel-tests] ok   b\n");
        assert_eq!(nmi_problems(&not_kernel, 1, 1).len(), 1);
        // Any kernel line naming the NMI counts here; a run that ends there (a kernel fault) is
        // caught by the outcome and the suite's summary.
        let ended = format!("{NMI_MARKER} (x)\nozone: kernel exception: #NMI\n");
        assert_eq!(nmi_problems(&ended, 1, 1), Vec::<String>::new());
        assert_eq!(nmi_problems("", 0, 2).len(), 1);
    }

    #[test]
    fn expectations() {
        let good = format!("{}\n{}\n{}\n", markers::BOOT_OK, markers::ROOT_HELLO, STUDIO_UP);
        let expect = Expect::new(success(), BOOTED);
        assert!(expect.problems(&run_with(success(), &good)).is_empty());

        let problems = expect.problems(&run_with(Outcome::GuestReset, markers::BOOT_OK));
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("got guest reset"));
        assert!(problems[1].contains(markers::ROOT_HELLO));

        let panicked = format!("{good}kernel panicked at src/lib.rs:1:1\n");
        assert_eq!(expect.problems(&run_with(success(), &panicked)).len(), 1);
        let allowing = Expect { allow_panic: true, ..Expect::new(success(), BOOTED) };
        assert!(allowing.problems(&run_with(success(), &panicked)).is_empty());

        let strict = Expect { absent: &["panicked"], ..Expect::new(success(), &[]) };
        assert_eq!(strict.problems(&run_with(success(), "it panicked\n")).len(), 1);
    }
}
