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
//! taken across a gap). The run's whole serial log goes to `target/studio/serial-run-R.log`.
//!
//! **eval** reads them back and scores the classical baseline, stide (Forrest et al.), as
//! `ozone_cognition::stide` implements it, on the runs not used for training (see [`eval`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ozone_cognition::corpus::{self, Recorded, load};
use ozone_cognition::detect;
use ozone_cognition::eval::{
    Curve, Judged, Outcome, ScoredWindow, curve, detection_at, judge, judge_at, judged, merge, score, score_windows,
};
use ozone_cognition::model::{Quantised, Weights};
use ozone_cognition::respond::Level;
use ozone_cognition::stide::{Config, Stide};
use ozone_cognition::token::Phase;

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
/// sequence that goes back is a new life: Studio restarted the program). Studio's method events
/// (`Kind::Method`) are in the lines among the kernel's records, unnumbered.
pub fn parse_dump(serial: &str) -> BTreeMap<String, Vec<Life>> {
    let mut out: BTreeMap<String, Vec<Life>> = BTreeMap::new();
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for line in serial.lines() {
        // A line may follow the shell's prompt or a terminal escape on the serial line (the
        // console prints Studio's lines between the shell's): the dump starts where its marker
        // is, if only those come before it — a program's own text (a report Studio echoes, a
        // line the console prints with the program's name) is no dump line, whatever it says.
        let Some(at) = line.find("[studio] trace ") else { continue };
        if !only_prompt(&line[..at]) {
            continue;
        }
        let rest = &line.trim_end()[at + "[studio] trace ".len()..];
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
        if lives.is_empty() || seq < *expected {
            lives.push(Life::default());
        }
        let life = lives.last_mut().expect("pushed");
        let mut n = seq;
        for pair in fields {
            let Some((a, b)) = pair.split_once(':') else { continue };
            let (Ok(w0), Ok(w1)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else { continue };
            life.records.push([w0, w1]);
            // Studio's method events are not the kernel's records, and not numbered.
            if ozone_abi::trace::Record::from_words([w0, w1]).is_none_or(|r| r.kind != ozone_abi::trace::Kind::Method) {
                n += 1;
            }
        }
        *expected = n;
    }
    out
}

/// Whether `prefix` is only what the console prints before one of Studio's lines: the shell's
/// prompts (`ozone> `) and terminal control sequences (`ESC [ ... letter`).
fn only_prompt(prefix: &str) -> bool {
    let mut rest = prefix;
    loop {
        if let Some(r) = rest.strip_prefix("ozone> ") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("\x1b[") {
            let Some(end) = r.find(|c: char| c.is_ascii_alphabetic()) else { return false };
            rest = &r[end + 1..];
        } else {
            return rest.is_empty() || rest == "\r";
        }
    }
}

/// `cargo xtask studio record --runs N`.
pub fn record(ws: &Workspace, range: std::ops::Range<u64>) -> Result<()> {
    let runs = range.end;
    deps::ensure_rust_target()?;
    deps::ensure(&[Need::Qemu])?;
    let artifacts = build::build_all(ws, Profile::Release)?;
    let seed = initrd::resolve_seed(ws, None)?;
    let base =
        crate::system::load_with_overlay(ws, Path::new(SCENARIOS), &artifacts.programs, crate::qemu::MEMORY_MIB)?;
    let dir = traces_dir(ws);
    for run in range {
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
        // One initrd a run: two recordings of different runs may go side by side.
        let initrd = initrd::write_system_initrd(ws, &format!("studio-record-{run}"), &artifacts, &system, &seed)?;
        let mut r = Run::pvh(&artifacts.kernel, &initrd, "", RECORD_TIMEOUT, &ws.target().join("qemu"));
        r.icount = true;
        r.console = Console::Capture;
        r.script = Some(SCRIPT.iter().map(|s| s.to_string()).collect());
        eprintln!("xtask: studio record: run {run} of {runs}: booting the scenarios under -icount");
        let result = r.run()?;
        // The whole serial log beside the traces, for what the traces do not say.
        let log = traces_dir(ws).with_file_name(format!("serial-run-{run}.log"));
        std::fs::create_dir_all(traces_dir(ws)).map_err(|e| format!("{}: {e}", log.display()))?;
        std::fs::write(&log, &result.serial).map_err(|e| format!("{}: {e}", log.display()))?;
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

/// Where `cargo xtask studio train` writes the model (and the initrd takes it from).
pub const MODEL: &str = "initrd/studio.model";

/// Where `cargo xtask studio eval` draws the ROC curves.
pub const ROC_IMAGE: &str = "docs/studio-roc.svg";

/// `cargo xtask studio train`: build and run the trainer (`studio-server/trainer`, candle on the
/// host) in one thread, on the recorded traces' runs before the last `held_out`, into [`MODEL`].
pub fn train(ws: &Workspace, held_out: u64) -> Result<()> {
    let traces = traces_dir(ws);
    let out = ws.root.join(MODEL);
    trainer(ws, held_out, &[traces.as_os_str(), out.as_os_str()])
}

/// `cargo xtask studio compare`: the trainer's `--compare` (writes nothing).
pub fn compare(ws: &Workspace, held_out: u64) -> Result<()> {
    trainer(ws, held_out, &["--compare".as_ref(), traces_dir(ws).as_os_str()])
}

/// The detector settings `cargo xtask studio validate` compares: frame lengths and spike counts
/// (0: no spike trigger), the rest Studio's defaults.
pub const VALIDATE_FRAMES: [usize; 3] = [8, 16, 32];
pub const VALIDATE_SPIKES: [usize; 4] = [0, 2, 3, 4];
/// The adapted threshold's floor (`adapt::Config::base`) `studio validate` compares, with
/// Studio's frame and spike count: the operating point's false alarms are chosen here, not on
/// `studio eval`'s ROC.
pub const VALIDATE_BASES: [f32; 3] = [0.5, 0.6, 0.7];

/// Runs of the recorded corpus `cargo xtask studio validate` works on: every run but the
/// `held_out` ones `studio eval` judges (`runs` recorded in all); `None` if too few are left to
/// hold two out again and keep one to train on.
pub fn validation_runs(runs: u64, held_out: u64) -> Option<u64> {
    let left = runs.checked_sub(held_out)?;
    (left > corpus::HELD_OUT_RUNS).then_some(left)
}

/// `cargo xtask studio validate`: choose the detector's settings without the held-out runs.
/// Of the runs `studio eval` does not hold out, the last two are held out again (validation
/// runs); a throwaway model is trained on the others (into `target/studio/validate/`, never the
/// initrd's), and Studio's detector is judged on the validation lives under each setting of
/// [`VALIDATE_FRAMES`] × [`VALIDATE_SPIKES`], and of [`VALIDATE_BASES`]. What it prints is what settings may be chosen on;
/// `studio eval`'s held-out runs are then judged once, with the settings chosen.
pub fn validate(ws: &Workspace, held_out: u64) -> Result<()> {
    let traces = traces_dir(ws);
    // The runs as the split sees them (the run number each trace file names), so that the
    // validation runs are never the held-out ones, whatever the directories hold.
    let mut all = load(&traces)?;
    let recorded = all.iter().map(|r| r.run + 1).max().unwrap_or(0);
    let Some(runs) = validation_runs(recorded, held_out) else {
        let need = held_out + corpus::HELD_OUT_RUNS + 1;
        return Err(format!(
            "{recorded} runs recorded in {}: validation with {held_out} held out needs at least {need} (record more: cargo xtask studio record --runs {need})",
            traces.display()
        ));
    };
    let dir = ws.target().join("studio").join("validate");
    let subset = dir.join("traces");
    let _ = std::fs::remove_dir_all(&subset);
    std::fs::create_dir_all(&subset).map_err(|e| format!("{}: {e}", subset.display()))?;
    for r in 0..runs {
        let (from, to) = (traces.join(format!("run-{r}")), subset.join(format!("run-{r}")));
        if !from.is_dir() {
            return Err(format!("{}: missing (record again: cargo xtask studio record --runs 6)", from.display()));
        }
        std::os::unix::fs::symlink(&from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    let model_path = dir.join("validate.model");
    eprintln!("xtask: studio validate: a throwaway model on runs 0..{}, judged on runs {}..{runs}", runs - 2, runs - 2);
    trainer(ws, corpus::HELD_OUT_RUNS, &[subset.as_os_str(), model_path.as_os_str()])?;
    let bytes = std::fs::read(&model_path).map_err(|e| format!("{}: {e}", model_path.display()))?;
    let weights = Weights::from_bytes(&bytes).map_err(|e| format!("{}: {e}", model_path.display()))?;
    let model = Quantised::new(&weights);
    // The lives the throwaway model was trained and is judged on: the held-out runs left out.
    all.retain(|r| r.run < runs);
    let split = corpus::split(&all)?;
    let Judged { lives, .. } = judged(&all, &split);
    let scored: Vec<(&Recorded, Vec<ScoredWindow>)> =
        lives.iter().map(|r| (*r, score_windows(&weights, &model, r))).collect();
    println!(
        "studio validate: {} validation lives (runs {}..{runs}); Studio's detector under each setting \
         (detected / hostile, false alarms / benign; * Studio's defaults)",
        scored.len(),
        split.first_test_run
    );
    let defaults = detect::Config::default();
    for frame in VALIDATE_FRAMES {
        let mut row = format!("frame {frame:2}:");
        for spikes in VALIDATE_SPIKES {
            let config = detect::Config { frame, spikes, ..defaults };
            let o = judge(&scored, config);
            let mark = if config == defaults { "*" } else { " " };
            let _ = write!(
                row,
                "  spikes {spikes}{mark} {:2}/{:2} {:2}/{:2}",
                o.detected, o.hostile, o.false_alarms, o.benign
            );
        }
        println!("{row}");
    }
    let mut row = String::from("threshold floor (frame and spikes Studio's):");
    for base in VALIDATE_BASES {
        let config = detect::Config { adapt: ozone_cognition::adapt::Config { base, ..defaults.adapt }, ..defaults };
        let o = judge(&scored, config);
        let mark = if config == defaults { "*" } else { " " };
        let _ =
            write!(row, "  base {base:.1}{mark} {:2}/{:2} {:2}/{:2}", o.detected, o.hostile, o.false_alarms, o.benign);
    }
    println!("{row}");
    Ok(())
}

/// Run the trainer with `args`, the last `held_out` runs held out.
fn trainer(ws: &Workspace, held_out: u64, args: &[&std::ffi::OsStr]) -> Result<()> {
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&ws.root)
        .env("RAYON_NUM_THREADS", "1")
        .args(["run", "--quiet", "--release", "--package", "ozone-trainer", "--"])
        .args(args)
        .args(["--held-out".to_string(), held_out.to_string()])
        .status()
        .map_err(|e| format!("cargo run -p ozone-trainer: {e}"))?;
    if !status.success() {
        return Err(format!("the trainer failed ({status})"));
    }
    Ok(())
}

/// `cargo xtask studio eval`: the model ([`MODEL`], through Studio's detector) and stide, both
/// trained on exactly the training lives of `ozone_cognition::corpus::split`, judged side by
/// side on the held-out lives (the last runs' seeds, all programs, the held-out programs never
/// seen in training). `held_out`: how many of the last runs are held out (the split's two
/// unless told: more to judge a model on runs recorded after it was trained, whose training
/// runs are then the same). stide in two forms: one database of the whole corpus's benign sequences
/// (it judges programs it never saw), and Forrest's per-program databases (a program with none
/// judged by the whole's). Printed: detection rate, false alarms per benign program and per
/// benign program-hour of guest time, and events and ticks to detection, at each detector's
/// operating point (Studio's defaults); and the ROC curves of all three over their thresholds,
/// drawn into [`ROC_IMAGE`].
pub fn eval(ws: &Workspace, held_out: u64) -> Result<()> {
    let all = load(&traces_dir(ws))?;
    let split = corpus::split_last(&all, held_out)?;
    let model_path = ws.root.join(MODEL);
    let bytes = std::fs::read(&model_path)
        .map_err(|e| format!("{}: {e} (train first: cargo xtask studio train)", model_path.display()))?;
    let weights = Weights::from_bytes(&bytes).map_err(|e| format!("{}: {e}", model_path.display()))?;
    let benign = |r: &Recorded| r.segments(|e| e.phase != Some(Phase::Hostile));
    let config = Config { capacity: 1 << 20, ..Config::default() };
    let mut whole = Stide::new(config);
    let mut per: BTreeMap<&str, Stide> = BTreeMap::new();
    for r in &split.train {
        for b in benign(r) {
            whole.train(&b);
            per.entry(r.program.as_str()).or_insert_with(|| Stide::new(config)).train(&b);
        }
    }
    let Judged { lives: test, short, unlabelled } = judged(&all, &split);
    let test = &test;
    let unseen: Vec<&str> = corpus::HELD_OUT_PROGRAMS.to_vec();
    println!(
        "studio eval: {} lives for training (runs 0..{}, without {}), {} held out (runs {}.., all programs), \
         of which {} judged ({short} shorter than a window, {unlabelled} of a hostile program without their hostile \
         phase); {} benign sequences known to stide",
        split.train.len(),
        split.first_test_run,
        unseen.join(", "),
        split.test.len(),
        split.first_test_run,
        test.len(),
        whole.len()
    );
    let model = Quantised::new(&weights);
    let scored: Vec<(&Recorded, Vec<ScoredWindow>)> =
        test.iter().map(|r| (*r, score_windows(&weights, &model, r))).collect();
    // Studio's fixed-point pass against the trainer's f32 one, on every held-out window, and
    // whether any decision differs.
    let worst = scored.iter().flat_map(|(_, w)| w.iter()).map(|w| (w.score - w.float).abs()).fold(0f32, f32::max);
    let as_float: Vec<(&Recorded, Vec<ScoredWindow>)> =
        scored.iter().map(|(r, w)| (*r, w.iter().map(|w| ScoredWindow { score: w.float, ..*w }).collect())).collect();
    let differ = scored
        .iter()
        .zip(&as_float)
        .filter(|(a, b)| {
            judge(std::slice::from_ref(*a), detect::Config::default())
                != judge(std::slice::from_ref(*b), detect::Config::default())
        })
        .count();
    println!(
        "fixed point against f32 on {} held-out windows: largest score difference {worst:.2e}; lives judged differently: {differ}",
        scored.iter().map(|(_, w)| w.len()).sum::<usize>()
    );
    let per_program = |threshold: usize| {
        let mut o = Outcome::default();
        for r in test {
            let db = per.get(r.program.as_str()).unwrap_or(&whole);
            let mut db = db.clone();
            db.set_threshold(threshold);
            let one = score(&db, &[r], 0);
            merge(&mut o, one);
        }
        o
    };
    let whole_at = |threshold: usize| {
        let mut db = whole.clone();
        db.set_threshold(threshold);
        score(&db, test, 0)
    };
    let model_at = |base: f32| judge_at(&scored, base);
    println!(
        "\nat the operating point (Studio's defaults; every window scored, where Studio samples 32 a tick of a busy agent; \
         decisions: each life's ladder fed every alarm, a suspended life killed when its time runs out):"
    );
    report("model (embedding + MLP)", &judge(&scored, detect::Config::default()));
    report("stide, whole corpus", &whole_at(config.threshold));
    report("stide, per program", &per_program(config.threshold));

    let frame = config.frame;
    let curves = [
        ("model", curve((0..=100).map(|b| model_at(b as f32 / 100.0)))),
        ("stide, whole corpus", curve((0..=frame).map(whole_at))),
        ("stide, per program", curve((0..=frame).map(per_program))),
    ];
    println!("\nover all thresholds (ROC):");
    for (name, c) in &curves {
        println!(
            "{name:<28} detection at 0 % false alarms {:.0} %, at <= 10 %: {:.0} %, at <= 25 %: {:.0} %",
            100.0 * detection_at(c, 0.0),
            100.0 * detection_at(c, 0.10),
            100.0 * detection_at(c, 0.25)
        );
    }
    let image = ws.root.join(ROC_IMAGE);
    draw_roc(&image, &curves, test.len())?;
    println!("drew {}", image.display());

    println!("\nper held-out life (model / stide per program; an alarm with the level the model's ladder ended at):");
    let model_default = detect::Config::default();
    for (r, windows) in &scored {
        let m = judge(&[(*r, windows.clone())], model_default);
        let st = score(per.get(r.program.as_str()).unwrap_or(&whole), &[r], 0);
        let mark = |o: &Outcome| {
            let ended = o.decisions.iter().flat_map(|d| d.iter().enumerate()).filter(|(_, n)| **n > 0).map(|(l, _)| l);
            let level = Level::ALL[ended.max().unwrap_or(0)];
            if o.detected + o.false_alarms > 0 { format!("alarm→{}", level.name()) } else { "-".to_string() }
        };
        let peak = windows.iter().map(|w| w.score).fold(0.0f32, f32::max);
        println!(
            "  {:<22}{} run {} {:>7} events {:>6} windows {:<8} max window score {peak:.2}  model {:<15} stide {}",
            r.program,
            if unseen.contains(&r.program.as_str()) { "*" } else { " " },
            r.run,
            r.events.len(),
            windows.len(),
            if r.hostile() { "hostile" } else { "benign" },
            mark(&m),
            mark(&st)
        );
    }
    println!("  (* a program never trained on)");
    Ok(())
}

fn report(name: &str, o: &Outcome) {
    let median = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    let ticks: Vec<usize> = o.ticks_to_detect.iter().map(|&t| t as usize).collect();
    println!(
        "{name:<28} detected {}/{} hostile ({:.0} %), false alarms {}/{} benign ({:.0} %, {:.1} per benign program-hour), \
         median to detection {} events / {} ticks",
        o.detected,
        o.hostile,
        100.0 * o.detection_rate(),
        o.false_alarms,
        o.benign,
        100.0 * o.false_alarm_rate(),
        o.false_alarms as f64 / o.benign_hours.max(1e-9),
        median(&o.events_to_detect).map_or("-".into(), |v| v.to_string()),
        median(&ticks).map_or("-".into(), |v| v.to_string()),
    );
    for (h, kind) in [(1, "hostile"), (0, "benign")] {
        let each: Vec<String> = Level::ALL[..5]
            .iter()
            .map(|l| {
                let name = if *l == Level::Suspend { "suspend (then kill)" } else { l.name() };
                format!("{name} {}", o.decisions[h][*l as usize])
            })
            .collect();
        println!("{:<28}   decisions taken, {kind} lives by the level they ended at: {}", "", each.join(", "));
    }
}

/// Draw the ROC curves into an SVG image.
fn draw_roc(path: &Path, curves: &[(&str, Curve)], lives: usize) -> Result<()> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let root = SVGBackend::new(path, (640, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let caption = format!("Studio's detectors on {lives} held-out program lives");
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("false alarms (fraction of benign lives)")
        .y_desc("detection (fraction of hostile lives)")
        .draw()
        .map_err(|x| e(&x))?;
    let colours = [RED, BLUE, GREEN];
    for ((name, c), colour) in curves.iter().zip(colours) {
        chart
            .draw_series(LineSeries::new(c.iter().copied(), colour.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
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
[studio] trace sc-x 0 1100:8000\n\
ozone> \x1b[K[studio] trace sc-x 1 1100:9000\n";
        let lives = parse_dump(serial);
        assert_eq!(lives["sc-x"].len(), 2, "a sequence starting again is a new life");
        assert_eq!(
            lives["sc-x"][0],
            Life { records: vec![[0x1100, 0x5000], [0x1100, 0x6000], [0x1100, 0x7000]], gaps: vec![3], dropped: 4 }
        );
        assert_eq!(
            lives["sc-x"][1].records,
            vec![[0x1100, 0x8000], [0x1100, 0x9000]],
            "a line after the shell's prompt is read too"
        );
        assert_eq!(lives["sc-y"][0].records, vec![[0x200, 0]]);
    }

    /// A program's text that holds a dump line (a report Studio echoes, a line of its own) is
    /// not read as one: it could split another program's life or forge its events.
    #[test]
    fn dump_lines_inside_other_lines_are_not_read() {
        let serial = "\
[studio] trace sc-x 0 1100:5000\n\
[studio] report from sc-y: [studio] trace sc-x 0 300:3\n\
[sc-y] [studio] trace sc-x 0 2e100:5ce1000\n\
\x1b[K[studio] trace sc-x 1 1100:6000\n";
        let lives = parse_dump(serial);
        assert_eq!(lives.len(), 1);
        assert_eq!(lives["sc-x"], vec![Life { records: vec![[0x1100, 0x5000], [0x1100, 0x6000]], ..Life::default() }]);
        assert!(only_prompt("") && only_prompt("ozone> ") && only_prompt("ozone> \x1b[2K") && only_prompt("\x1b[K"));
        assert!(!only_prompt("[sc-y] ") && !only_prompt("ozone> x") && !only_prompt("\x1b[12"));
    }

    #[test]
    fn method_events_in_the_dump_are_kept_and_not_numbered() {
        // A Call (seq 0), Studio's method event after it, a line that starts with a method event
        // (numbered as the kernel record after it: 2), then a restart.
        let serial = "\
[studio] trace sc-x 0 1100:5000 300:7 1100:6000\n\
[studio] trace sc-x 2 30300:2 1100:7000\n\
[studio] trace sc-x 3 1100:7100\n\
[studio] trace sc-x 0 1100:8000\n";
        let lives = parse_dump(serial);
        assert_eq!(lives["sc-x"].len(), 2, "{lives:?}");
        assert_eq!(
            lives["sc-x"][0].records,
            vec![[0x1100, 0x5000], [0x300, 7], [0x1100, 0x6000], [0x30300, 2], [0x1100, 0x7000], [0x1100, 0x7100]]
        );
        assert_eq!(lives["sc-x"][1].records, vec![[0x1100, 0x8000]]);
    }

    #[test]
    fn validation_leaves_the_held_out_runs_alone_and_needs_enough() {
        assert_eq!(validation_runs(6, 2), Some(4), "runs 0..4: train on 0..2, validate on 2..4");
        assert_eq!(validation_runs(5, 2), Some(3));
        assert_eq!(validation_runs(4, 2), None);
        assert_eq!(validation_runs(0, 2), None);
        assert_eq!(validation_runs(42, 16), Some(26), "runs 0..26: train on 0..24, validate on 24..26");
        assert_eq!(validation_runs(18, 16), None);
        // Studio's defaults are among the settings compared.
        let d = detect::Config::default();
        assert!(VALIDATE_FRAMES.contains(&d.frame) && VALIDATE_SPIKES.contains(&d.spikes));
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
}
