//! `ozone-trainer TRACES OUT [--seed N] [--steps N] [--held-out N]`: train Studio's behaviour
//! model on the recorded corpus's training lives (`ozone_cognition::corpus`: the runs before the
//! last N, two unless told) and write the weights file.
//! `cargo xtask studio train` runs it; see the library's doc for what it does.
//!
//! `ozone-trainer --compare TRACES [--seed N] [--steps N] [--held-out N]` (`cargo xtask studio compare`): train
//! the three architectures (`ozone_trainer::arch`) on the same windows with the same settings and
//! judge each on the held-out lives with Studio's detector (its defaults, and over its
//! thresholds), as `cargo xtask studio eval` judges Studio's model; writes nothing.

use ozone_cognition::corpus::{HELD_OUT_RUNS, Recorded, label, load, split_last};
use ozone_cognition::eval::{self, ScoredWindow};
use ozone_cognition::model::{Weights, sigmoid};
use ozone_trainer::arch::{Arch, Conv, Gru};
use ozone_trainer::{Config, Net, fit, train};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ozone-trainer TRACES OUT [OPTIONS] | ozone-trainer --compare TRACES [OPTIONS]; options: --seed N, --steps N, --held-out N";

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Task {
    /// Train Studio's model from the traces into the file.
    Train(PathBuf, PathBuf),
    /// Compare the architectures on the traces.
    Compare(PathBuf),
}

/// What the command line asks for: the task, the training settings, and how many of the last
/// runs are held out (the others are trained on).
#[derive(Debug, PartialEq)]
struct Job {
    task: Task,
    config: Config,
    held_out: u64,
}

/// The command line (without the program's name).
fn parse(args: impl IntoIterator<Item = String>) -> Result<Job, String> {
    let mut args = args.into_iter();
    let mut positional = Vec::new();
    let mut config = Config::default();
    let mut held_out = HELD_OUT_RUNS;
    let mut compare = false;
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value; {USAGE}"))?;
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|e| format!("{name} {v}: {e}"))
        };
        match a.as_str() {
            "--compare" => compare = true,
            "--seed" => config.seed = number("--seed")?,
            "--steps" => {
                config.steps = number("--steps")? as usize;
                if config.steps == 0 {
                    return Err(format!("--steps must be at least 1; {USAGE}"));
                }
            }
            "--held-out" => {
                held_out = number("--held-out")?;
                if held_out == 0 {
                    return Err(format!("--held-out must be at least 1; {USAGE}"));
                }
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}; {USAGE}")),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let task = match (compare, positional.len()) {
        (false, 2) => {
            let out = positional.pop().expect("two");
            Task::Train(positional.pop().expect("two"), out)
        }
        (true, 1) => Task::Compare(positional.pop().expect("one")),
        _ => return Err(USAGE.into()),
    };
    Ok(Job { task, config, held_out })
}

fn run() -> Result<(), String> {
    let job = parse(std::env::args().skip(1))?;
    match &job.task {
        Task::Train(traces, out) => train_into(traces, out, job.config, job.held_out),
        Task::Compare(traces) => compare(traces, job.config, job.held_out),
    }
}

/// Score every window of `r` with `net` (its sigmoid, in `f32`).
fn scored(net: &dyn Arch, r: &Recorded) -> Result<Vec<ScoredWindow>, String> {
    eval::score_windows_with(r, |ws| {
        if ws.is_empty() {
            return Ok(Vec::new());
        }
        let z = net.logits(ws)?.to_vec1::<f32>().map_err(|e| e.to_string())?;
        Ok(z.into_iter().map(|z| (sigmoid(z), sigmoid(z))).collect())
    })
}

fn compare(traces: &std::path::Path, config: Config, held_out: u64) -> Result<(), String> {
    let all = load(traces)?;
    let split = split_last(&all, held_out)?;
    let data: Vec<_> = label(&split.train).windows.into_iter().map(|(w, l, _)| (w, l)).collect();
    let judged = eval::judged(&all, &split);
    println!(
        "studio compare: {} training windows of {} lives; {} held-out lives judged; {} steps each, seed {:#x}",
        data.len(),
        split.train.len(),
        judged.lives.len(),
        config.steps,
        config.seed
    );
    let mlp = Net::new(&Weights::seeded(config.seed))?;
    let conv = Conv::new(config.seed)?;
    let gru = Gru::new(config.seed)?;
    println!(
        "{:<18} {:>8} {:>10} {:>8} {:>10} {:>22} {:>22} {:>12} {:>12} {:>12}",
        "architecture",
        "weights",
        "MACs/win",
        "train s",
        "last loss",
        "detected (defaults)",
        "false alarms",
        "det @0% FA",
        "det @<=10%",
        "det @<=25%"
    );
    for net in [&mlp as &dyn Arch, &conv, &gru] {
        let start = std::time::Instant::now();
        let losses = fit(net, &data, config)?;
        let seconds = start.elapsed().as_secs_f64();
        let lives: Vec<(&Recorded, Vec<ScoredWindow>)> =
            judged.lives.iter().map(|r| scored(net, r).map(|w| (*r, w))).collect::<Result<_, _>>()?;
        let o = eval::judge(&lives, ozone_cognition::detect::Config::default());
        let c = eval::curve((0..=100).map(|b| eval::judge_at(&lives, b as f32 / 100.0)));
        println!(
            "{:<18} {:>8} {:>10} {:>8.0} {:>10.4} {:>22} {:>22} {:>11.0}% {:>11.0}% {:>11.0}%",
            net.name(),
            net.parameters(),
            net.macs(),
            seconds,
            losses.last().copied().unwrap_or(f32::NAN),
            format!("{}/{} ({:.0} %)", o.detected, o.hostile, 100.0 * o.detection_rate()),
            format!("{}/{} ({:.0} %)", o.false_alarms, o.benign, 100.0 * o.false_alarm_rate()),
            100.0 * eval::detection_at(&c, 0.0),
            100.0 * eval::detection_at(&c, 0.10),
            100.0 * eval::detection_at(&c, 0.25)
        );
    }
    Ok(())
}

fn train_into(traces: &std::path::Path, out: &std::path::Path, config: Config, held_out: u64) -> Result<(), String> {
    let all = load(traces)?;
    let split = split_last(&all, held_out)?;
    let labelled = label(&split.train);
    let data = labelled.windows;
    let hostile = data.iter().filter(|(_, l, _)| *l == 1).count();
    println!(
        "studio train: {} lives of runs 0..{} (held-out programs left out), {} distinct windows: {} normal, {hostile} hostile \
         ({} more with a hostile-phase event not trained on: nothing in them unordinary); seed {:#x}, {} steps",
        split.train.len(),
        split.first_test_run,
        data.len(),
        data.len() - hostile,
        labelled.left_out,
        config.seed,
        config.steps
    );
    let windows: Vec<_> = data.iter().map(|(w, l, _)| (*w, *l)).collect();
    let trained = train(&windows, config)?;
    let curve: Vec<String> = trained.losses.iter().map(|l| format!("{l:.4}")).collect();
    println!("studio train: loss per 100 steps: {}", curve.join(" "));
    let w = &trained.weights;
    let wrong = |label: u8| data.iter().filter(|(x, l, _)| *l == label && (w.score(x) > 0.5) != (label == 1)).count();
    println!(
        "studio train: on the training windows (Studio's forward pass, threshold 0.5): {} of {} normal and {} of {hostile} hostile misjudged",
        wrong(0),
        data.len() - hostile,
        wrong(1)
    );
    std::fs::write(out, w.to_bytes()).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("studio train: wrote {} ({} bytes)", out.display(), ozone_cognition::model::BYTES);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ozone-trainer: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_command_line_is_read_or_refused_with_the_reason() {
        let job = parse(args("traces out.model --seed 0x10 --steps 5")).unwrap();
        assert_eq!(job.task, Task::Train(PathBuf::from("traces"), PathBuf::from("out.model")));
        assert_eq!((job.config.seed, job.config.steps, job.held_out), (16, 5, HELD_OUT_RUNS));
        assert_eq!(parse(args("a b")).unwrap().config, Config::default());
        assert_eq!(
            parse(args("--compare t --steps 7 --held-out 16")).unwrap(),
            Job { task: Task::Compare("t".into()), config: Config { steps: 7, ..Config::default() }, held_out: 16 }
        );
        assert!(parse(args("a b --held-out 0")).unwrap_err().starts_with("--held-out must be at least 1"));
        assert_eq!(parse(args("--compare a b")).unwrap_err(), USAGE);
        assert_eq!(parse(args("--compare")).unwrap_err(), USAGE);
        assert_eq!(parse(args("a")).unwrap_err(), USAGE);
        assert_eq!(parse(args("a b c")).unwrap_err(), USAGE);
        assert!(parse(args("a b --seed")).unwrap_err().starts_with("--seed needs a value"));
        assert!(parse(args("a b --seed x")).unwrap_err().starts_with("--seed x: invalid digit"));
        assert!(parse(args("a b --steps 0")).unwrap_err().starts_with("--steps must be at least 1"));
        assert!(parse(args("a b --fast")).unwrap_err().starts_with("unknown option --fast"));
    }
}
