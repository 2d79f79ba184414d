//! `ozone-trainer TRACES OUT [--seed N] [--steps N]`: train Studio's behaviour model on the
//! recorded corpus's training lives (`ozone_cognition::corpus`) and write the weights file.
//! `cargo xtask studio train` runs it; see the library's doc for what it does.

use ozone_cognition::corpus::{labelled, load, split};
use ozone_trainer::{Config, train};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: ozone-trainer TRACES OUT [--seed N] [--steps N]";

/// The command line (without the program's name): the traces directory, the output file and
/// the settings.
fn parse(args: impl IntoIterator<Item = String>) -> Result<(PathBuf, PathBuf, Config), String> {
    let mut args = args.into_iter();
    let mut positional = Vec::new();
    let mut config = Config::default();
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
            "--seed" => config.seed = number("--seed")?,
            "--steps" => {
                config.steps = number("--steps")? as usize;
                if config.steps == 0 {
                    return Err(format!("--steps must be at least 1; {USAGE}"));
                }
            }
            _ if a.starts_with('-') => return Err(format!("unknown option {a}; {USAGE}")),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    match <[PathBuf; 2]>::try_from(positional) {
        Ok([traces, out]) => Ok((traces, out, config)),
        Err(_) => Err(USAGE.into()),
    }
}

fn run() -> Result<(), String> {
    let (traces, out, config) = parse(std::env::args().skip(1))?;
    let (traces, out) = (&traces, &out);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_command_line_is_read_or_refused_with_the_reason() {
        let (t, o, c) = parse(args("traces out.model --seed 0x10 --steps 5")).unwrap();
        assert_eq!((t, o), (PathBuf::from("traces"), PathBuf::from("out.model")));
        assert_eq!((c.seed, c.steps), (16, 5));
        assert_eq!(parse(args("a b")).unwrap().2, Config::default());
        assert_eq!(parse(args("a")).unwrap_err(), USAGE);
        assert_eq!(parse(args("a b c")).unwrap_err(), USAGE);
        assert!(parse(args("a b --seed")).unwrap_err().starts_with("--seed needs a value"));
        assert!(parse(args("a b --seed x")).unwrap_err().starts_with("--seed x: invalid digit"));
        assert!(parse(args("a b --steps 0")).unwrap_err().starts_with("--steps must be at least 1"));
        assert!(parse(args("a b --fast")).unwrap_err().starts_with("unknown option --fast"));
    }
}
