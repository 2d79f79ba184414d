//! `cargo xtask bench`: in-guest benchmarks measured in guest instructions.
//!
//! Every boot runs under `-icount shift=0,align=off,sleep=off`, where the guest TSC advances by
//! exactly one tick per guest instruction, so the numbers are deterministic and independent of
//! the host. Each benchmark prints one line:
//!
//! ```text
//! BENCH name=<name> median=<N> p90=<N> samples=<k> unit=instr accel=icount
//! ```
//!
//! `--append CMDLINE` boots every benchmark with that kernel command line, so the cost of a boot
//! option (`ozone.fpu=eager`, `ozone.spectre=ibpb`; docs/hardening.md) is measured the same way.
//!
//! `--filter NAME` runs only the boots whose benchmarks' names contain NAME and prints only
//! those benchmarks (`--filter boot_to_shell` boots the system three times and nothing else).
//!
//! `boot_to_root` comes from the kernel's boot-cost line: the TSC ticks from kernel entry to the
//! root task's first instruction; `boot_to_shell` from the kernel's entry time stamp and the
//! console's as the shell comes up. Both boot the system of `initrd/system.toml`, without the
//! test overlay. `agent_spawn` is timed by the `spawn-bench` test program, in the system with the
//! test overlay, and `timer_sleep_wake` by the `timer-bench` one; `echo_latency_under_load_off`
//! and `_on` by `echo-latency` in the system of `initrd/system-bench-load.toml` with Studio's
//! `adapt` off and on (its line carries a `p99=` too). The rest come from the `bench`
//! guest program (`tests/guest/src/bin/bench.rs`), booted as the root task, which must report
//! each of [`PROGRAM_BENCHMARKS`].

use std::path::Path;
use std::time::Duration;

use crate::build::{self, Artifacts, Profile};
use crate::deps::{self, Need};
use crate::initrd::{self, Seed};
use crate::qemu::Run;
use crate::{BenchArgs, Result, Workspace};

/// The benchmarks the `bench` program reports, in its order (docs/PERFORMANCE.md has a row for
/// each): `cargo xtask bench` fails if one of them is missing.
pub const PROGRAM_BENCHMARKS: [&str; 20] = [
    "null_syscall",
    "ipc_roundtrip",
    "ipc_replyrecv",
    "ipc_call",
    "ipc_call_10words",
    "ipc_roundtrip_slowpath",
    "ipc_roundtrip_traced",
    "notify_signal_wait",
    "retype_4k",
    "map_4k",
    "revoke_1000",
    "shaper_check",
    "sdk_roundtrip",
    "shaper_call_enforced",
    "shaper_call_unprofiled",
    "shaper_call_denied",
    "studio_infer",
    "studio_infer_f32",
    "studio_judge",
    "ipc_roundtrip_interas",
];

/// How many boots `boot_to_root` is measured over.
pub const BOOT_SAMPLES: usize = 3;

/// Timeout for one benchmark boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

const BOOT_COST_PREFIX: &str = "ozone: boot cost: ";

/// The N of the kernel's line `ozone: boot cost: <N> tsc ticks from kernel entry to the root
/// task's first instruction`, if the serial log has one.
pub fn parse_boot_cost(serial: &str) -> Option<u64> {
    serial.lines().find_map(|line| {
        let rest = &line[line.find(BOOT_COST_PREFIX)? + BOOT_COST_PREFIX.len()..];
        let (number, tail) = rest.split_once(' ')?;
        if !tail.starts_with("tsc ticks") {
            return None;
        }
        number.parse().ok()
    })
}

/// Instructions from kernel entry to the shell's prompt: the console's time stamp as it comes
/// up minus the kernel's entry time stamp (both printed; under `-icount` the counter counts
/// guest instructions).
pub fn parse_boot_to_shell(serial: &str) -> Option<u64> {
    let number_after = |marker: &str| {
        serial.lines().find_map(|line| {
            let rest = &line[line.find(marker)? + marker.len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok()
        })
    };
    let entry = number_after(KERNEL_ENTRY_MARKER)?;
    let ready = number_after(SHELL_READY_MARKER)?;
    ready.checked_sub(entry)
}

/// What the kernel's boot-cost line says before its entry time stamp.
const KERNEL_ENTRY_MARKER: &str = "(kernel entry at tsc ";
/// What the console prints, with its time stamp, as the shell comes up.
const SHELL_READY_MARKER: &str = "[console] shell ready at tsc ";

/// The nearest-rank percentile `pct` (1..=100) of `samples`.
pub fn percentile(samples: &[u64], pct: u32) -> Option<u64> {
    if samples.is_empty() || !(1..=100).contains(&pct) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = (pct as usize * sorted.len()).div_ceil(100);
    Some(sorted[rank.max(1) - 1])
}

/// One `BENCH` line.
pub fn bench_line(name: &str, samples: &[u64], unit: &str, accel: &str) -> Option<String> {
    Some(format!(
        "BENCH name={name} median={} p90={} samples={} unit={unit} accel={accel}",
        percentile(samples, 50)?,
        percentile(samples, 90)?,
        samples.len()
    ))
}

/// The benchmarks of the system boots.
pub const BOOT_BENCHMARKS: [&str; 2] = ["boot_to_root", "boot_to_shell"];
/// The benchmark of the `spawn-bench` run.
pub const SPAWN_BENCHMARKS: [&str; 1] = ["agent_spawn"];
/// The benchmark of the `timer-bench` run.
pub const TIMER_BENCHMARKS: [&str; 1] = ["timer_sleep_wake"];
/// What `dev-bench` reports, in its order: the virtio-blk driver, then the storage server.
pub const DEVICE_BENCHMARKS: [&str; 5] =
    ["blk_write_4k", "blk_read_4k", "blk_write_flush_4k", "store_put_4k", "store_get_4k"];
/// What `net-bench` reports, in its order: the network server at the instance's own address,
/// between two programs (`net-bench` and `net-bench-peer`), then with both ends in one.
pub const NET_BENCHMARKS: [&str; 5] = [
    "net_udp_roundtrip",
    "net_tcp_roundtrip",
    "net_udp_roundtrip_one",
    "net_tcp_roundtrip_one",
    "net_tcp_bulk_per_kib",
];

/// What `echo-latency` reports, in the system of `initrd/system-bench-load.toml` booted with
/// Studio's `[system] adapt` off, then on.
pub const LOAD_BENCHMARKS: [&str; 2] = ["echo_latency_under_load_off", "echo_latency_under_load_on"];

/// Timeout for one boot of the load benchmark.
const LOAD_TIMEOUT: Duration = Duration::from_secs(900);

/// The overlay of the load benchmark.
const LOAD_OVERLAY: &str = "initrd/system-bench-load.toml";

/// What `nic-bench` reports: the raw device path of the network (its own card).
pub const NIC_BENCHMARKS: [&str; 1] = ["nic_arp_roundtrip"];

/// Whether the benchmark `name` is selected by `filter` (every one without a filter).
pub fn selected(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| name.contains(f))
}

/// `cargo xtask bench`.
pub fn command(ws: &Workspace, args: &BenchArgs) -> Result<()> {
    let filter = args.filter.as_deref();
    let any = |names: &[&str]| names.iter().any(|n| selected(filter, n));
    let all: Vec<&str> = BOOT_BENCHMARKS
        .iter()
        .chain(&SPAWN_BENCHMARKS)
        .chain(&TIMER_BENCHMARKS)
        .chain(&DEVICE_BENCHMARKS)
        .chain(&NET_BENCHMARKS)
        .chain(&NIC_BENCHMARKS)
        .chain(&LOAD_BENCHMARKS)
        .chain(&PROGRAM_BENCHMARKS)
        .copied()
        .collect();
    if !any(&all) {
        return Err(format!(
            "--filter `{}` selects no benchmark (they are: {})",
            filter.unwrap_or_default(),
            all.join(", ")
        ));
    }
    deps::ensure_rust_target()?;
    deps::ensure(&[Need::Qemu])?;
    let artifacts = build::build_all(ws, Profile::Release)?;
    let seed = initrd::resolve_seed(ws, args.seed)?;
    // The boots measure the system `cargo xtask qemu` boots; `spawn-bench` is a test program.
    let initrd = initrd::write_system_initrd(ws, "default", &artifacts, &artifacts.system, &seed)?;
    let scratch = ws.target().join("qemu");
    if !args.append.is_empty() {
        // The figures depend on it (the hardening options of docs/hardening.md): say so once.
        eprintln!("xtask: every benchmark boot has the kernel command line \"{}\"", args.append);
    }

    if any(&BOOT_BENCHMARKS) {
        boot_benchmarks(&artifacts, &initrd, args, &seed, &scratch)?;
    }
    if any(&SPAWN_BENCHMARKS) {
        let initrd = initrd::write_system_initrd(ws, "bench-tests", &artifacts, &artifacts.test_system, &seed)?;
        spawn_benchmark(&artifacts, &initrd, args, &scratch)?;
    }
    if any(&TIMER_BENCHMARKS) {
        let initrd = initrd::write_system_initrd(ws, "bench-tests", &artifacts, &artifacts.test_system, &seed)?;
        agent_benchmark(&artifacts, &initrd, args, &scratch, "timer-bench", "timer_sleep_wake")?;
    }
    if any(&DEVICE_BENCHMARKS) {
        let initrd = initrd::write_system_initrd(ws, "bench-tests", &artifacts, &artifacts.test_system, &seed)?;
        device_benchmarks(&artifacts, &initrd, args, &scratch)?;
    }
    if any(&NET_BENCHMARKS) {
        let initrd = initrd::write_system_initrd(ws, "bench-tests", &artifacts, &artifacts.test_system, &seed)?;
        // QEMU's user network: DHCP gives the address; nothing is forwarded.
        let net = crate::qemu::NetLink::User { forward: Vec::new() };
        program_in_system(&artifacts, &initrd, args, &scratch, "net-bench", &NET_BENCHMARKS, |run| {
            run.net = Some(net);
            // The other end of the exchanges between two programs, started first.
            if let Some(script) = run.script.as_mut() {
                script.insert(0, "start net-bench-peer".into());
            }
        })?;
    }
    if any(&NIC_BENCHMARKS) {
        let initrd = initrd::write_system_initrd(ws, "bench-tests", &artifacts, &artifacts.test_system, &seed)?;
        // The network server's card first (it claims at boot), then `nic-bench`'s own.
        program_in_system(&artifacts, &initrd, args, &scratch, "nic-bench", &NIC_BENCHMARKS, |run| {
            run.net = Some(crate::qemu::NetLink::User { forward: Vec::new() });
            run.raw_nics = 1;
        })?;
    }
    if any(&LOAD_BENCHMARKS) {
        load_benchmarks(ws, &artifacts, args, &seed, &scratch)?;
    }
    if any(&PROGRAM_BENCHMARKS) {
        program_benchmarks(ws, &artifacts, args, &seed, &scratch)?;
    }
    Ok(())
}

/// `echo_latency_under_load`: the system with [`LOAD_OVERLAY`] (two spinners and `echo-latency`,
/// all at priority 100) booted under `-icount` with Studio's `[system] adapt` off, then on;
/// `echo-latency` reports the time from each of its deadlines to its echo's answer.
fn load_benchmarks(ws: &Workspace, artifacts: &Artifacts, args: &BenchArgs, seed: &Seed, scratch: &Path) -> Result<()> {
    let base =
        crate::system::load_with_overlay(ws, Path::new(LOAD_OVERLAY), &artifacts.programs, crate::qemu::MEMORY_MIB)?;
    let mut p99 = Vec::new();
    for (adapt, name) in [(false, LOAD_BENCHMARKS[0]), (true, LOAD_BENCHMARKS[1])] {
        let mut system = base.clone();
        system.description.system.adapt = adapt;
        system.compiled = system.description.to_postcard();
        let initrd = initrd::write_system_initrd(ws, "bench-load", artifacts, &system, seed)?;
        // Seconds of guest time behind the spinners' timeslices, every instruction emulated.
        let mut run = Run::pvh(&artifacts.kernel, &initrd, &args.append, LOAD_TIMEOUT, scratch);
        run.icount = true;
        let script =
            ["start echo-latency".into(), "@wait [studio] echo-latency exited".into(), crate::tests::SHUTDOWN.into()];
        run.script = Some(script.to_vec());
        let result = run.run()?;
        let lines = guest_bench_lines(&result.serial, "instr", "icount");
        let Some(line) = lines.iter().find(|l| l.starts_with("BENCH name=echo_latency_under_load ")) else {
            eprintln!("---- serial log (echo-latency, adapt = {adapt}) ----\n{}---- end ----", result.serial);
            return Err(format!("echo-latency reported nothing (adapt = {adapt}): {}", result.outcome));
        };
        p99.push(line.split(' ').find_map(|f| f.strip_prefix("p99=")).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0));
        if selected(args.filter.as_deref(), name) {
            println!("{}", line.replacen("echo_latency_under_load", name, 1));
        }
    }
    if let [off, on] = p99[..] {
        eprintln!(
            "xtask: echo_latency_under_load: p99 {off} with adapt off, {on} with it on ({:.1}x)",
            off as f64 / on.max(1) as f64
        );
    }
    Ok(())
}

/// `boot_to_root` and `boot_to_shell`: [`BOOT_SAMPLES`] boots of the system of
/// `initrd/system.toml` (without the test overlay).
fn boot_benchmarks(artifacts: &Artifacts, initrd: &Path, args: &BenchArgs, seed: &Seed, scratch: &Path) -> Result<()> {
    let filter = args.filter.as_deref();
    let mut samples = Vec::new();
    let mut shell = Vec::new();
    for i in 0..BOOT_SAMPLES {
        let mut run = Run::pvh(&artifacts.kernel, initrd, &args.append, BOOT_TIMEOUT, scratch);
        run.icount = true;
        // Once the shell runs, the system ends only when told to.
        run.script = Some(vec![crate::tests::SHUTDOWN.to_string()]);
        let result = run.run()?;
        let cost = parse_boot_cost(&result.serial);
        if let Some(t) = parse_boot_to_shell(&result.serial) {
            shell.push(t);
        }
        match cost {
            Some(cost) if result.outcome.is_clean() => samples.push(cost),
            _ => {
                eprintln!("---- serial log (boot {}) ----\n{}---- end ----", i + 1, result.serial);
                let what = if cost.is_none() { "has no boot-cost line" } else { "did not end cleanly" };
                return Err(format!(
                    "benchmark boot {} {what}: {} (seed {}; {})",
                    i + 1,
                    result.outcome,
                    seed.to_hex(),
                    result.command
                ));
            }
        }
    }
    if samples.iter().any(|&s| s != samples[0]) {
        eprintln!("xtask: note: boot_to_root differs between boots under -icount: {samples:?}");
    }
    if selected(filter, "boot_to_root") {
        println!("{}", bench_line("boot_to_root", &samples, "instr", "icount").expect("samples"));
    }
    match bench_line("boot_to_shell", &shell, "instr", "icount") {
        Some(line) if shell.len() == samples.len() => {
            if selected(filter, "boot_to_shell") {
                println!("{line}");
            }
        }
        _ => return Err("the boots did not all show the kernel's entry time and the shell's ready line".into()),
    }
    Ok(())
}

/// `agent_spawn`: the `spawn-bench` agent times Studio's START, in the system with its test
/// overlay (`initrd` holds it).
fn spawn_benchmark(artifacts: &Artifacts, initrd: &Path, args: &BenchArgs, scratch: &Path) -> Result<()> {
    let mut run = Run::pvh(&artifacts.kernel, initrd, &args.append, BOOT_TIMEOUT, scratch);
    run.icount = true;
    run.script =
        Some(["start spawn-bench", "@wait bench: name=agent_spawn", crate::tests::SHUTDOWN].map(String::from).to_vec());
    let result = run.run()?;
    let lines = guest_bench_lines(&result.serial, "instr", "icount");
    if !result.outcome.is_clean() || lines.is_empty() {
        eprintln!("---- serial log (spawn-bench) ----\n{}---- end ----", result.serial);
        return Err(format!("the agent_spawn benchmark did not run to completion: {}", result.outcome));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// A benchmark an agent of the test overlay (`program`) measures and prints as `bench: name=NAME
/// ...`, started from the shell in the system with the test overlay (`initrd` holds it):
/// `timer_sleep_wake` from `timer-bench`.
fn agent_benchmark(
    artifacts: &Artifacts,
    initrd: &Path,
    args: &BenchArgs,
    scratch: &Path,
    program: &str,
    name: &str,
) -> Result<()> {
    let mut run = Run::pvh(&artifacts.kernel, initrd, &args.append, BOOT_TIMEOUT, scratch);
    run.icount = true;
    let script = [format!("start {program}"), format!("@wait bench: name={name}"), crate::tests::SHUTDOWN.into()];
    run.script = Some(script.to_vec());
    let result = run.run()?;
    let lines = guest_bench_lines(&result.serial, "instr", "icount");
    if !result.outcome.is_clean() || lines.is_empty() {
        eprintln!("---- serial log ({program}) ----\n{}---- end ----", result.serial);
        return Err(format!("the {name} benchmark did not run to completion: {}", result.outcome));
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

/// The device benchmarks: `dev-bench` on a disk of its own (the storage server has the first of
/// two fresh 16 MiB images, `dev-bench` the second).
fn device_benchmarks(artifacts: &Artifacts, initrd: &Path, args: &BenchArgs, scratch: &Path) -> Result<()> {
    let mut disks = Vec::new();
    for name in ["bench-store.img", "bench-blk.img"] {
        let path = scratch.join(name);
        std::fs::create_dir_all(scratch).map_err(|e| format!("cannot make {}: {e}", scratch.display()))?;
        let f = std::fs::File::create(&path).map_err(|e| format!("cannot make {}: {e}", path.display()))?;
        f.set_len(16 << 20).map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        disks.push(path);
    }
    program_in_system(artifacts, initrd, args, scratch, "dev-bench", &DEVICE_BENCHMARKS, |run| run.disks = disks)
}

/// Boot the system with the test overlay (`initrd`) under `-icount`, start `program` from the
/// shell and print the figures it reports, each of `expected`. `setup` adds to the machine, and
/// may change the shell's script (start another program first, say).
fn program_in_system(
    artifacts: &Artifacts,
    initrd: &Path,
    args: &BenchArgs,
    scratch: &Path,
    program: &str,
    expected: &[&str],
    setup: impl FnOnce(&mut Run),
) -> Result<()> {
    let mut run = Run::pvh(&artifacts.kernel, initrd, &args.append, BOOT_TIMEOUT, scratch);
    run.icount = true;
    let script =
        [format!("start {program}"), format!("@wait [studio] {program} exited"), crate::tests::SHUTDOWN.into()];
    run.script = Some(script.to_vec());
    setup(&mut run);
    let result = run.run()?;
    print_expected(&result, expected, program, args.filter.as_deref())
}

/// Print the `BENCH` lines of `result` the filter selects, once the run ended cleanly with a
/// figure for each of `expected` (`program` names the reporter in errors).
fn print_expected(
    result: &crate::qemu::RunResult,
    expected: &[&str],
    program: &str,
    filter: Option<&str>,
) -> Result<()> {
    let lines = guest_bench_lines(&result.serial, "instr", "icount");
    let missing = missing_benchmarks(&lines, expected);
    if !result.outcome.is_clean() || !missing.is_empty() {
        eprintln!("---- serial log ({program}) ----\n{}---- end ----", result.serial);
        return Err(if result.outcome.is_clean() {
            format!("the {program} program reported no figure for {}", missing.join(", "))
        } else {
            format!("the {program} program did not run to completion: {}", result.outcome)
        });
    }
    for line in lines {
        let name = line.strip_prefix("BENCH name=").and_then(|r| r.split(' ').next()).unwrap_or_default();
        if selected(filter, name) {
            println!("{line}");
        }
    }
    Ok(())
}

/// The in-guest benchmarks: the `bench` program as the root task.
fn program_benchmarks(
    ws: &Workspace,
    artifacts: &Artifacts,
    args: &BenchArgs,
    seed: &Seed,
    scratch: &Path,
) -> Result<()> {
    let initrd = initrd::write_initrd_from(ws, "bench", &artifacts.bench, seed)?;
    let mut run = Run::pvh(&artifacts.kernel, &initrd, &args.append, BOOT_TIMEOUT, scratch);
    run.icount = true;
    let result = run.run()?;
    print_expected(&result, &PROGRAM_BENCHMARKS, "bench", args.filter.as_deref())
}

/// The names of `expected` that no `BENCH` line of `lines` reports.
pub fn missing_benchmarks<'a>(lines: &[String], expected: &[&'a str]) -> Vec<&'a str> {
    expected
        .iter()
        .copied()
        .filter(|name| {
            !lines.iter().any(|l| l.strip_prefix("BENCH name=").and_then(|r| r.split(' ').next()) == Some(name))
        })
        .collect()
}

/// The guest prints `bench: name=<id> median=<n> p90=<n> samples=<n>`; turn each such line
/// into a `BENCH` line with the unit and accelerator the host knows. A program Studio started
/// prints through the console, which puts `[<name>] ` in front (and may have erased the prompt
/// line first): both are looked past.
pub fn guest_bench_lines(serial: &str, unit: &str, accel: &str) -> Vec<String> {
    serial
        .lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let line = line.rsplit("\x1b[K").next().unwrap_or(line);
            let line = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
                Some((_, rest)) => rest,
                None => line,
            };
            let rest = line.strip_prefix("bench: name=")?;
            let mut fields = rest.split(' ');
            let name = fields.next()?;
            let median: u64 = fields.next()?.strip_prefix("median=")?.parse().ok()?;
            let p90: u64 = fields.next()?.strip_prefix("p90=")?.parse().ok()?;
            let samples: u64 = fields.next()?.strip_prefix("samples=")?.parse().ok()?;
            // An optional 99th percentile after the samples.
            let p99 = match fields.next().and_then(|f| f.strip_prefix("p99=")) {
                Some(v) => format!(" p99={}", v.parse::<u64>().ok()?),
                None => String::new(),
            };
            Some(format!(
                "BENCH name={name} median={median} p90={p90}{p99} samples={samples} unit={unit} accel={accel}"
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_p99_is_carried_when_given() {
        let log = "[echo-latency] bench: name=echo_latency_under_load median=7838 p90=8346 samples=40 p99=168685\n\
                   bench: name=bad median=1 p90=2 samples=3 p99=x\n";
        assert_eq!(
            guest_bench_lines(log, "instr", "icount"),
            vec![
                "BENCH name=echo_latency_under_load median=7838 p90=8346 p99=168685 samples=40 unit=instr accel=icount"
                    .to_string()
            ]
        );
    }

    #[test]
    fn guest_lines_become_bench_lines() {
        let log = "bench: timestamp pair costs 4 ticks\r\nbench: name=null_syscall median=89 p90=91 samples=1000\r\nbench: name=broken median=x p90=1 samples=1\n";
        assert_eq!(
            guest_bench_lines(log, "instr", "icount"),
            vec!["BENCH name=null_syscall median=89 p90=91 samples=1000 unit=instr accel=icount".to_string()]
        );
        assert!(guest_bench_lines("nothing here", "instr", "icount").is_empty());
        let attributed = "ozone> \r\x1b[K[spawn-bench] bench: name=agent_spawn median=5 p90=6 samples=9\r\nozone> ";
        assert_eq!(
            guest_bench_lines(attributed, "cycles", "tcg"),
            vec!["BENCH name=agent_spawn median=5 p90=6 samples=9 unit=cycles accel=tcg".to_string()]
        );
    }

    #[test]
    fn every_program_benchmark_is_expected() {
        let lines: Vec<String> = ["null_syscall", "ipc_roundtrip", "ipc_roundtrip_interas"]
            .iter()
            .map(|n| format!("BENCH name={n} median=1 p90=1 samples=1 unit=instr accel=icount"))
            .collect();
        assert_eq!(missing_benchmarks(&lines, &["ipc_roundtrip", "ipc_roundtrip_interas"]), Vec::<&str>::new());
        // A name is matched whole: `ipc_roundtrip_interas` is no `ipc_roundtrip_inter` line.
        assert_eq!(
            missing_benchmarks(&lines, &["ipc_roundtrip_inter", "ipc_call"]),
            vec!["ipc_roundtrip_inter", "ipc_call"]
        );
        assert!(PROGRAM_BENCHMARKS.contains(&"ipc_roundtrip_interas"));
        let mut names = PROGRAM_BENCHMARKS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROGRAM_BENCHMARKS.len(), "a name listed twice");
    }

    #[test]
    fn boot_cost_line() {
        let log = "ozone: boot ok\r\nozone: boot cost: 123456 tsc ticks from kernel entry to the root task's first instruction\r\n[root] hello from ring 3\n";
        assert_eq!(parse_boot_cost(log), Some(123456));
        assert_eq!(parse_boot_cost("ozone: boot cost: 7 tsc ticks"), Some(7));
        assert_eq!(parse_boot_cost("ozone: boot ok\n"), None);
        assert_eq!(parse_boot_cost("ozone: boot cost: many tsc ticks from kernel entry\n"), None);
        assert_eq!(parse_boot_cost("ozone: boot cost: -5 tsc ticks from kernel entry\n"), None);
        assert_eq!(parse_boot_cost("ozone: boot cost: 5 cycles\n"), None);
        assert_eq!(parse_boot_cost("ozone: boot cost: 5\n"), None);
    }

    #[test]
    fn boot_to_shell_line() {
        let log = "ozone: boot cost: 900 tsc ticks from kernel entry to the root task's first instruction (kernel entry at tsc 100)\r\n[console] shell ready at tsc 5100\r\nozone> ";
        assert_eq!(parse_boot_to_shell(log), Some(5000));
        assert_eq!(parse_boot_to_shell("[console] shell ready at tsc 5100\n"), None, "no kernel entry");
        assert_eq!(parse_boot_to_shell("(kernel entry at tsc 100)\n"), None, "no shell");
        assert_eq!(parse_boot_to_shell("(kernel entry at tsc 100)\n[console] shell ready at tsc 50\n"), None);
    }

    #[test]
    fn filters_select_by_name() {
        assert!(selected(None, "boot_to_shell"));
        assert!(selected(Some("boot_to_shell"), "boot_to_shell"));
        assert!(selected(Some("boot"), "boot_to_root"));
        assert!(!selected(Some("boot_to_shell"), "boot_to_root"));
        assert!(!selected(Some("spawn"), "ipc_roundtrip"));
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[5], 50), Some(5));
        assert_eq!(percentile(&[5], 90), Some(5));
        assert_eq!(percentile(&[30, 10, 20], 50), Some(20));
        assert_eq!(percentile(&[30, 10, 20], 90), Some(30));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 90), Some(90));
        assert_eq!(percentile(&hundred, 0), None);
    }

    #[test]
    fn bench_line_format() {
        assert_eq!(
            bench_line("boot_to_root", &[100, 100, 100], "instr", "icount").unwrap(),
            "BENCH name=boot_to_root median=100 p90=100 samples=3 unit=instr accel=icount"
        );
    }
}
