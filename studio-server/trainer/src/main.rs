//! `ozone-trainer TRACES OUT [--seed N] [--steps N]`: train Studio's behaviour model on the
//! recorded corpus's training lives (`ozone_cognition::corpus`) and write the weights file.
//! `cargo xtask studio train` runs it; see the library's doc for what it does.

use ozone_cognition::corpus::{labelled, load, split};
use ozone_trainer::{Config, train};
use std::path::PathBuf;
use std::process::ExitCode;

fn run() -> Result<(), String> {
    let usage = "usage: ozone-trainer TRACES OUT [--seed N] [--steps N]";
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut config = Config::default();
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value; {usage}"))?;
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.map_err(|e| format!("{name} {v}: {e}"))
        };
        match a.as_str() {
            "--seed" => config.seed = number("--seed")?,
            "--steps" => config.steps = number("--steps")? as usize,
            _ if a.starts_with('-') => return Err(format!("unknown option {a}; {usage}")),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [traces, out] = positional.as_slice() else { return Err(usage.into()) };
    let all = load(traces)?;
    let split = split(&all)?;
    let data = labelled(&split.train);
    let hostile = data.iter().filter(|(_, l, _)| *l == 1).count();
    println!(
        "studio train: {} lives of runs 0..{} (held-out programs left out), {} distinct windows: {} normal, {hostile} hostile; seed {:#x}, {} steps",
        split.train.len(),
        split.first_test_run,
        data.len(),
        data.len() - hostile,
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
