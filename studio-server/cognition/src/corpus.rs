//! The recorded scenario corpus, read back on the host (`std` feature): what `cargo xtask studio
//! record` wrote to `target/studio/traces/run-R/NAME.LIFE.trace`, the split into training and
//! held-out lives that both `cargo xtask studio train` and `studio eval` use, and the labelled
//! windows the model trains on.
//!
//! # The split
//!
//! Held out from training, always: the last [`HELD_OUT_RUNS`] runs (seeds no training run had)
//! and every life of the programs in [`HELD_OUT_PROGRAMS`] in any run (scenario kinds, benign and
//! hostile, the detectors never saw). Evaluation is on the held-out runs, all programs.
//!
//! # The labels
//!
//! A window (the [`WINDOW`] tokens ending at an event, within one gap-free stretch) is **normal**
//! (label 0) when none of its events is in a hostile phase. It is **hostile** (label 1) when any
//! of its events is in a hostile phase *and* the same window never occurs in a normal position of
//! the training lives: a mimicry program's hostile phase is mostly its benign cover traffic, and
//! labelling that cover hostile would teach the model that normal traffic is hostile. The same
//! window in both is kept once, as normal. (Labelling by the newest event alone taught the model
//! that a slow program's hostile step is normal once one more event follows it: of the 16
//! windows that hold the step, 15 were labelled normal; `cargo xtask studio validate` preferred
//! this rule, 22/22 at 0/35 against 20/22 at 1/35.)

use crate::token::{Phase, Token, phase_marker, token};
use crate::window::WINDOW;
use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use ozone_abi::trace::Record;
use std::path::Path;

/// Programs never trained on (any run): two benign kinds and two hostile ones.
pub const HELD_OUT_PROGRAMS: [&str; 4] = ["sc-bursty", "sc-secmem", "sc-privprobe", "sc-slow-fuzz"];

/// The last runs recorded are held out.
pub const HELD_OUT_RUNS: u64 = 2;

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
        // The end of the life (Studio passes over it too): not behaviour.
        if r.ends_thread() {
            continue;
        }
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
pub fn load(dir: &Path) -> Result<Vec<Recorded>, String> {
    let mut out = Vec::new();
    let runs = std::fs::read_dir(dir)
        .map_err(|e| alloc::format!("{}: {e} (record first: cargo xtask studio record)", dir.display()))?;
    for run in runs.flatten() {
        let Ok(files) = std::fs::read_dir(run.path()) else { continue };
        for f in files.flatten() {
            let text = std::fs::read_to_string(f.path()).map_err(|e| alloc::format!("{}: {e}", f.path().display()))?;
            out.extend(parse_trace(&text));
        }
    }
    out.sort_by(|a, b| (a.run, &a.program, a.life).cmp(&(b.run, &b.program, b.life)));
    Ok(out)
}

/// The corpus split into lives to train on and lives to judge.
pub struct Split<'a> {
    pub train: Vec<&'a Recorded>,
    pub test: Vec<&'a Recorded>,
    /// The first held-out run.
    pub first_test_run: u64,
}

/// Split `all` as the module doc says; an error when too few runs were recorded to hold any
/// out and keep one to train on.
pub fn split(all: &[Recorded]) -> Result<Split<'_>, String> {
    split_last(all, HELD_OUT_RUNS)
}

/// Split `all` with its last `held_out` runs held out (at least one) instead of
/// [`HELD_OUT_RUNS`]: to judge a model on runs recorded after it was trained, its training runs
/// the same. An error when that leaves no run to train on.
pub fn split_last(all: &[Recorded], held_out: u64) -> Result<Split<'_>, String> {
    let runs = all.iter().map(|r| r.run).max().map_or(0, |m| m + 1);
    if held_out == 0 {
        return Err("at least one run must be held out".to_string());
    }
    if runs <= held_out {
        return Err(alloc::format!(
            "{runs} run(s) recorded: holding out {held_out} needs at least {} (cargo xtask studio record --runs {})",
            held_out + 1,
            held_out + 2
        ));
    }
    let first_test_run = runs - held_out;
    let held_out = |r: &Recorded| HELD_OUT_PROGRAMS.contains(&r.program.as_str());
    let train = all.iter().filter(|r| r.run < first_test_run && !held_out(r)).collect();
    let test = all.iter().filter(|r| r.run >= first_test_run).collect();
    Ok(Split { train, test, first_test_run })
}

/// Every window of a life (each gap-free stretch's windows, in order), with its phase:
/// hostile if any of its events is in a hostile phase, else the phase of its newest event.
pub fn windows(r: &Recorded) -> Vec<([Token; WINDOW], Option<Phase>)> {
    let mut out = Vec::new();
    let mut run: Vec<(Token, Option<Phase>)> = Vec::new();
    for e in &r.events {
        if e.after_gap {
            run.clear();
        }
        run.push((e.token, e.phase));
        if run.len() >= WINDOW {
            let last = &run[run.len() - WINDOW..];
            let w: [Token; WINDOW] = core::array::from_fn(|i| last[i].0);
            let hostile = last.iter().any(|(_, p)| *p == Some(Phase::Hostile));
            out.push((w, if hostile { Some(Phase::Hostile) } else { e.phase }));
        }
    }
    out
}

/// The labelled training windows of `lives` (the module doc's labels), each once, in a
/// deterministic order (sorted), with how often it occurred.
pub fn labelled(lives: &[&Recorded]) -> Vec<([Token; WINDOW], u8, u32)> {
    let mut normal: BTreeMap<[Token; WINDOW], u32> = BTreeMap::new();
    let mut hostile: BTreeMap<[Token; WINDOW], u32> = BTreeMap::new();
    for r in lives {
        for (w, phase) in windows(r) {
            let map = if phase == Some(Phase::Hostile) { &mut hostile } else { &mut normal };
            *map.entry(w).or_insert(0) += 1;
        }
    }
    let mut out: Vec<_> = normal.iter().map(|(w, &n)| (*w, 0u8, n)).collect();
    out.extend(hostile.iter().filter(|(w, _)| !normal.contains_key(*w)).map(|(w, &n)| (*w, 1u8, n)));
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn life(program: &str, run: u64) -> Recorded {
        Recorded { program: program.to_string(), run, life: 0, events: Vec::new() }
    }

    #[test]
    fn the_last_runs_are_held_out_and_held_out_programs_never_train() {
        let all: Vec<Recorded> = (0..6).flat_map(|run| [life("sc-kv", run), life(HELD_OUT_PROGRAMS[0], run)]).collect();
        let runs = |lives: &[&Recorded]| {
            let mut r: Vec<u64> = lives.iter().map(|l| l.run).collect();
            r.dedup();
            r
        };
        let s = split(&all).unwrap();
        assert_eq!((s.first_test_run, runs(&s.train), runs(&s.test)), (4, vec![0, 1, 2, 3], vec![4, 5]));
        assert!(s.train.iter().all(|l| l.program == "sc-kv"), "a held-out program is never trained on");
        assert_eq!(s.test.len(), 4, "every program of the held-out runs is judged");
        let s = split_last(&all, 4).unwrap();
        assert_eq!((s.first_test_run, runs(&s.train), runs(&s.test)), (2, vec![0, 1], vec![2, 3, 4, 5]));
        assert!(split_last(&all, 6).err().unwrap().contains("needs at least 7"));
        assert!(split_last(&all, 0).is_err());
        assert!(split(&all[..4]).is_err(), "two runs: none left to train on");
    }

    #[test]
    fn a_thread_exit_record_is_the_end_of_a_life_not_an_event() {
        use ozone_abi::trace::{DEBUG_WRITE, THREAD_EXIT, syscall_word};
        let call = syscall_word(ozone_abi::profile::CALL, ozone_abi::trace::ObjectKind::Endpoint);
        let exit = syscall_word(THREAD_EXIT.into(), ozone_abi::trace::ObjectKind::None);
        let debug = syscall_word(DEBUG_WRITE.into(), ozone_abi::trace::ObjectKind::None);
        let text =
            alloc::format!("# program sc-x seed 1 run 0 life 0 dropped 0\n{call:x} 5000\n{debug:x} 0\n{exit:x} 0\n");
        let r = parse_trace(&text).unwrap();
        assert_eq!(r.events.len(), 2, "the Call and the DebugWrite; not the exit");
        assert_ne!(r.events[0].token, r.events[1].token);
    }
}
