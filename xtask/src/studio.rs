//! `cargo xtask studio record|eval`: the scenario corpus's traces, and how well a detector tells
//! its hostile programs from its benign ones (docs/studio.md, "Cognition").
//!
//! **record** boots the system with the scenario programs (`initrd/system-scenarios.toml`)
//! under `-icount`, with Studio printing every traced record (`[system] trace_dump`), once per
//! run; run `r` gives every scenario a seed of its own (run 0 the overlay's, run `r` the
//! overlay's mixed with `r`), so every run differs. It waits until the long-running scenarios
//! have ended, shuts the system down, and writes each program's life (a restarted program has
//! several) to `target/studio/traces/run-R/NAME.LIFE.trace`: a header line
//! `# program NAME seed S run R life L dropped D`, then one record per line, its two words in
//! hex (`ozone_abi::trace`), phase markers included (the reader strips them), and a line `gap`
//! where the kernel dropped records (the ring was full when Studio read it: no sequence is
//! taken across a gap).
//!
//! **eval** reads them back and scores the classical baseline, stide (Forrest et al.), as
//! `ozone_cognition::stide` implements it, on the runs not used for training (see [`eval`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ozone_abi::trace::Record;
use ozone_cognition::stide::{Config, Stide};
use ozone_cognition::token::{Phase, Token, phase_marker, token};

use crate::build::{self, Profile};
use crate::deps::{self, Need};
use crate::initrd;
use crate::qemu::{Console, Run};
use crate::{Result, Workspace};

/// The overlay with the scenario programs.
pub const SCENARIOS: &str = "initrd/system-scenarios.toml";

/// Lines typed at the shell of a recording boot: wait for the scenarios that run longest, then
/// end the system.
const SCRIPT: [&str; 7] = [
    "@wait [studio] sc-mimicry exited",
    "@wait [studio] sc-slow-quota exited",
    "@wait [studio] sc-slow-fuzz exited",
    "@wait [studio] sc-rr-server exited",
    "@wait [studio] sc-stage1 exited",
    "ps",
    "shutdown",
];

/// How long one recording boot may take.
const RECORD_TIMEOUT: Duration = Duration::from_secs(1500);

/// The directory the traces go to.
pub fn traces_dir(ws: &Workspace) -> PathBuf {
    ws.target().join("studio").join("traces")
}

/// The seed of a scenario in run `run`: the overlay's in run 0, mixed with the run after.
pub fn run_seed(seed: u64, run: u64) -> u64 {
    if run == 0 {
        return seed;
    }
    // SplitMix64's finaliser over the pair; kept in TOML's range (63 bits).
    let mut z = seed ^ run.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) & 0x7fff_ffff_ffff_ffff
}

/// One program's life as recorded: its records in order, where records were dropped (the
/// indices into `records` a gap comes before), and the drops the kernel counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Life {
    pub records: Vec<[u64; 2]>,
    pub gaps: Vec<usize>,
    pub dropped: u64,
}

/// Read a serial log's `[studio] trace` lines: every program's lives, in order (a record
/// sequence that starts again at 0 is a new life: Studio restarted the program).
pub fn parse_dump(serial: &str) -> BTreeMap<String, Vec<Life>> {
    let mut out: BTreeMap<String, Vec<Life>> = BTreeMap::new();
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for line in serial.lines() {
        let Some(rest) = line.trim_end().strip_prefix("[studio] trace ") else { continue };
        let mut fields = rest.split(' ');
        let (Some(name), Some(second)) = (fields.next(), fields.next()) else { continue };
        let lives = out.entry(name.to_string()).or_default();
        if second == "dropped" {
            if let (Some(life), Some(n)) = (lives.last_mut(), fields.next().and_then(|n| n.parse().ok())) {
                life.dropped = n;
                life.gaps.push(life.records.len());
            }
            continue;
        }
        let Ok(seq) = second.parse::<u64>() else { continue };
        let expected = next.entry(name.to_string()).or_insert(0);
        if seq == 0 || lives.is_empty() || seq < *expected {
            lives.push(Life::default());
        }
        let life = lives.last_mut().expect("pushed");
        let mut n = seq;
        for pair in fields {
            let Some((a, b)) = pair.split_once(':') else { continue };
            let (Ok(w0), Ok(w1)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
            life.records.push([w0, w1]);
            n += 1;
        }
        *expected = n;
    }
    out
}

/// `cargo xtask studio record --runs N`.
pub fn record(ws: &Workspace, runs: u64) -> Result<()> {
    deps::ensure_rust_target()?;
    deps::ensure(&[Need::Qemu])?;
    let artifacts = build::build_all(ws, Profile::Release)?;
    let seed = initrd::resolve_seed(ws, None)?;
    let base =
        crate::system::load_with_overlay(ws, Path::new(SCENARIOS), &artifacts.programs, crate::qemu::MEMORY_MIB)?;
    let dir = traces_dir(ws);
    for run in 0..runs {
        let mut system = base.clone();
        system.description.system.trace_dump = true;
        let mut seeds = BTreeMap::new();
        for p in &mut system.description.programs {
            if p.binary.starts_with("sc-") {
                p.seed = run_seed(p.seed, run);
                seeds.insert(p.name.clone(), p.seed);
            }
        }
        system.compiled = system.description.to_postcard();
        let initrd = initrd::write_system_initrd(ws, "studio-record", &artifacts, &system, &seed)?;
        let mut r = Run::pvh(&artifacts.kernel, &initrd, "", RECORD_TIMEOUT, &ws.target().join("qemu"));
        r.icount = true;
        r.console = Console::Capture;
        r.script = Some(SCRIPT.iter().map(|s| s.to_string()).collect());
        eprintln!("xtask: studio record: run {run} of {runs}: booting the scenarios under -icount");
        let result = r.run()?;
        let lives = parse_dump(&result.serial);
        let out = dir.join(format!("run-{run}"));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        let mut total = 0;
        for (name, lives) in &lives {
            for (l, life) in lives.iter().enumerate() {
                let mut text = format!(
                    "# program {name} seed {} run {run} life {l} dropped {}\n",
                    seeds.get(name).copied().unwrap_or(0),
                    life.dropped
                );
                for (n, [a, b]) in life.records.iter().enumerate() {
                    if life.gaps.contains(&n) {
                        text.push_str("gap\n");
                    }
                    let _ = writeln!(text, "{a:x} {b:x}");
                }
                total += life.records.len();
                let file = out.join(format!("{name}.{l}.trace"));
                std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
            }
        }
        eprintln!(
            "xtask: studio record: run {run}: {} programs, {total} records in {} ({})",
            lives.len(),
            out.display(),
            result.outcome
        );
        if !result.outcome.is_clean() {
            return Err(format!("run {run} did not end cleanly: {}", result.outcome));
        }
    }
    Ok(())
}

/// One recorded life, read back.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub program: String,
    pub run: u64,
    pub life: u64,
    /// Its events' tokens, markers stripped, each with the phase it is in (`None` before any
    /// marker), its tick, and whether records were dropped just before it (a gap).
    pub events: Vec<Event>,
}

/// One recorded event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Event {
    pub token: Token,
    pub phase: Option<Phase>,
    pub tick: u32,
    pub after_gap: bool,
}

impl Recorded {
    /// Whether any of it is hostile.
    pub fn hostile(&self) -> bool {
        self.events.iter().any(|e| e.phase == Some(Phase::Hostile))
    }

    /// Its runs of events without a gap, filtered by `keep`.
    pub fn segments(&self, keep: impl Fn(&Event) -> bool) -> Vec<Vec<Token>> {
        let mut out: Vec<Vec<Token>> = vec![Vec::new()];
        for e in &self.events {
            if e.after_gap && !out.last().is_some_and(Vec::is_empty) {
                out.push(Vec::new());
            }
            if keep(e) {
                out.last_mut().expect("one").push(e.token);
            }
        }
        out
    }
}

/// Parse one `.trace` file.
pub fn parse_trace(text: &str) -> Option<Recorded> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let field = |k: &str| header.iter().position(|f| *f == k).and_then(|i| header.get(i + 1)).copied();
    let program = field("program")?.to_string();
    let run = field("run")?.parse().ok()?;
    let life = field("life")?.parse().ok()?;
    let mut phase = None;
    let mut events = Vec::new();
    let mut after_gap = false;
    for line in lines {
        if line.trim() == "gap" {
            after_gap = true;
            continue;
        }
        let mut w = line.split_whitespace().map(|x| u64::from_str_radix(x, 16));
        let (Some(Ok(a)), Some(Ok(b))) = (w.next(), w.next()) else { continue };
        let Some(r) = Record::from_words([a, b]) else { continue };
        if let Some(p) = phase_marker(&r) {
            phase = Some(p);
            continue;
        }
        events.push(Event { token: token(&r), phase, tick: r.tick, after_gap });
        after_gap = false;
    }
    Some(Recorded { program, run, life, events })
}

/// Every recorded life under `dir`.
pub fn load(dir: &Path) -> Result<Vec<Recorded>> {
    let mut out = Vec::new();
    let runs = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e} (record first: cargo xtask studio record)", dir.display()))?;
    for run in runs.flatten() {
        let Ok(files) = std::fs::read_dir(run.path()) else { continue };
        for f in files.flatten() {
            let text = std::fs::read_to_string(f.path()).map_err(|e| format!("{}: {e}", f.path().display()))?;
            out.extend(parse_trace(&text));
        }
    }
    out.sort_by(|a, b| (a.run, &a.program, a.life).cmp(&(b.run, &b.program, b.life)));
    Ok(out)
}

/// What one detector did on the held-out lives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub hostile: usize,
    pub detected: usize,
    pub benign: usize,
    pub false_alarms: usize,
    /// Guest hours of the benign lives (100 ticks a second).
    pub benign_hours: f64,
    /// Events from the first hostile event to the first alarm in it, per detected life.
    pub events_to_detect: Vec<usize>,
    /// The same in ticks.
    pub ticks_to_detect: Vec<u32>,
}

/// Score the lives `test` with `stide`: a hostile life is detected when an alarm falls in its
/// hostile phase; a benign life (no hostile event) with any alarm is a false alarm. Warm-up
/// events (`skip`) are not scored.
pub fn score(stide: &Stide, test: &[&Recorded], skip: usize) -> Outcome {
    let mut o = Outcome::default();
    for r in test {
        let hostile = r.hostile();
        let mut scorer = stide.scorer();
        let mut first_hostile = None;
        let mut alarm = None;
        for (n, e) in r.events.iter().enumerate() {
            let (phase, tick) = (&e.phase, &e.tick);
            if e.after_gap {
                scorer = stide.scorer();
            }
            if *phase == Some(Phase::Hostile) && first_hostile.is_none() {
                first_hostile = Some((n, *tick));
            }
            let s = scorer.push(stide, e.token);
            if n < skip {
                continue;
            }
            let anomalous = s.is_some_and(|s| s.anomalous);
            if anomalous && alarm.is_none() && (!hostile || *phase == Some(Phase::Hostile)) {
                alarm = Some((n, *tick));
            }
        }
        if hostile {
            o.hostile += 1;
            if let (Some((a, at)), Some((h, ht))) = (alarm, first_hostile) {
                o.detected += 1;
                o.events_to_detect.push(a.saturating_sub(h));
                o.ticks_to_detect.push(at.wrapping_sub(ht));
            }
        } else {
            o.benign += 1;
            o.false_alarms += alarm.is_some() as usize;
            let (first, last) = (r.events.first().map_or(0, |e| e.tick), r.events.last().map_or(0, |e| e.tick));
            o.benign_hours += f64::from(last.wrapping_sub(first)) / 100.0 / 3600.0;
        }
    }
    o
}

/// `cargo xtask studio eval`: stide trained on the benign events of the training runs (every
/// run but the last), scored on the last run, the held-out one, whose seeds no training run
/// had. Two forms: one database of the whole corpus's benign sequences (it judges programs it
/// never saw), and Forrest's per-program databases (a program with none judged by the whole's).
/// Printed: detection rate, false alarms per benign program and per benign program-hour of
/// guest time, and events and ticks to detection.
pub fn eval(ws: &Workspace) -> Result<()> {
    let all = load(&traces_dir(ws))?;
    let last = all.iter().map(|r| r.run).max().ok_or("no traces: record first (cargo xtask studio record --runs 2)")?;
    if last == 0 {
        return Err("one run recorded: evaluation needs a held-out run (cargo xtask studio record --runs 2)".into());
    }
    let (train, test): (Vec<&Recorded>, Vec<&Recorded>) = all.iter().partition(|r| r.run < last);
    let benign = |r: &Recorded| r.segments(|e| e.phase != Some(Phase::Hostile));
    let config = Config { capacity: 1 << 20, ..Config::default() };
    let mut whole = Stide::new(config);
    let mut per: BTreeMap<&str, Stide> = BTreeMap::new();
    for r in &train {
        for b in benign(r) {
            whole.train(&b);
            per.entry(r.program.as_str()).or_insert_with(|| Stide::new(config)).train(&b);
        }
    }
    println!(
        "studio eval: {} lives for training (runs 0..{last}), {} held out (run {last}); {} benign sequences known",
        train.len(),
        test.len(),
        whole.len()
    );
    let report = |name: &str, o: &Outcome| {
        let median = |v: &[usize]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.get(v.len() / 2).copied()
        };
        let mut ticks: Vec<usize> = o.ticks_to_detect.iter().map(|&t| t as usize).collect();
        ticks.sort_unstable();
        println!(
            "{name:<28} detected {}/{} hostile ({:.0} %), false alarms {}/{} benign ({:.1} per benign program-hour), \
             median to detection {} events / {} ticks",
            o.detected,
            o.hostile,
            100.0 * o.detected as f64 / o.hostile.max(1) as f64,
            o.false_alarms,
            o.benign,
            o.false_alarms as f64 / o.benign_hours.max(1e-9),
            median(&o.events_to_detect).map_or("-".into(), |v| v.to_string()),
            ticks.get(ticks.len() / 2).map_or("-".into(), |v| v.to_string()),
        );
    };
    report("stide, whole corpus", &score(&whole, &test, 0));
    let mut per_outcome = Outcome::default();
    for r in &test {
        let db = per.get(r.program.as_str()).unwrap_or(&whole);
        let o = score(db, &[r], 0);
        per_outcome.hostile += o.hostile;
        per_outcome.detected += o.detected;
        per_outcome.benign += o.benign;
        per_outcome.false_alarms += o.false_alarms;
        per_outcome.benign_hours += o.benign_hours;
        per_outcome.events_to_detect.extend(o.events_to_detect);
        per_outcome.ticks_to_detect.extend(o.ticks_to_detect);
    }
    report("stide, per program", &per_outcome);
    for r in &test {
        let o = score(per.get(r.program.as_str()).unwrap_or(&whole), &[r], 0);
        println!(
            "  {:<22} {:>7} events {:<8} {}",
            r.program,
            r.events.len(),
            if r.hostile() { "hostile" } else { "benign" },
            if o.detected + o.false_alarms > 0 { "alarm" } else { "-" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_is_read_back_into_lives() {
        let serial = "\
[studio] start sc-x\n\
[studio] trace sc-x 0 1100:5000 1100:6000\n\
[studio] trace sc-x 2 1100:7000\n\
[studio] trace sc-x dropped 4 at 3\n\
[studio] trace sc-y 0 200:0\n\
[studio] trace sc-x 0 1100:8000\n";
        let lives = parse_dump(serial);
        assert_eq!(lives["sc-x"].len(), 2, "a sequence starting again is a new life");
        assert_eq!(
            lives["sc-x"][0],
            Life { records: vec![[0x1100, 0x5000], [0x1100, 0x6000], [0x1100, 0x7000]], gaps: vec![3], dropped: 4 }
        );
        assert_eq!(lives["sc-x"][1].records, vec![[0x1100, 0x8000]]);
        assert_eq!(lives["sc-y"][0].records, vec![[0x200, 0]]);
    }

    #[test]
    fn run_seeds_differ_and_stay_in_range() {
        assert_eq!(run_seed(42, 0), 42);
        let s: Vec<u64> = (0..50).map(|r| run_seed(42, r)).collect();
        assert!(s.iter().all(|&x| x <= 0x7fff_ffff_ffff_ffff));
        let mut d = s.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), s.len());
    }

    #[test]
    fn traces_are_read_back_with_their_phases_and_stide_scores_them() {
        use ozone_abi::trace::{ObjectKind, syscall_word};
        let call = |label: u64| {
            format!("{:x} {:x}\n", syscall_word(ozone_abi::profile::CALL, ObjectKind::Endpoint), label << 12)
        };
        let marker = |label: u64| {
            format!("{:x} {:x}\n", syscall_word(ozone_abi::profile::CALL, ObjectKind::Invalid), label << 12)
        };
        let mut benign = String::from("# program sc-a seed 1 run 0 life 0 dropped 0\n");
        benign += &marker(0x5CE0);
        for n in 0..400 {
            benign += &call(n % 3);
        }
        let mut hostile = String::from("# program sc-b seed 2 run 1 life 0 dropped 0\n");
        hostile += &marker(0x5CE0);
        for n in 0..100 {
            hostile += &call(n % 3);
        }
        hostile += &marker(0x5CE1);
        for n in 0..100 {
            hostile += &call(50 + n % 11);
        }
        let a = parse_trace(&benign).unwrap();
        let b = parse_trace(&hostile).unwrap();
        assert_eq!((a.program.as_str(), a.run, a.events.len(), a.hostile()), ("sc-a", 0, 400, false));
        assert_eq!((b.events.len(), b.hostile()), (200, true));
        let mut db = Stide::new(Config::default());
        db.train(&a.events.iter().map(|e| e.token).collect::<Vec<_>>());
        assert_eq!(a.segments(|_| true).len(), 1);
        let o = score(&db, &[&a, &b], 0);
        assert_eq!((o.hostile, o.detected, o.benign, o.false_alarms), (1, 1, 1, 0));
        assert!(o.events_to_detect[0] < 20, "{:?}", o.events_to_detect);
    }
}
