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
//! (label 0) when none of its events is in a hostile phase. One that holds a hostile-phase event
//! and never occurs in a normal position of the training lives is **hostile** (label 1) when it is
//! *evidence*:
//!
//! - one of its hostile-phase events is *unordinary*: a token no benign program's normal window
//!   holds (a probe of an empty slot, a refused method, a fault), or — a request seen only by
//!   its size aside — one its own program never makes in a normal window (a mimic's heap grab
//!   among its request traffic, though benign programs grow their heaps): the window shows the
//!   hostile act. (Benign programs: those with no hostile phase in any training life. A hostile
//!   program's own normal windows do not make a token ordinary for everyone: a refusal told
//!   after its benign marker would have made refusals ordinary.)
//! - or all of its events are in a hostile phase, unless it is made only of protocol requests
//!   seen by their size (Calls and Sends whose token keeps the message's size class, not the
//!   label) of more than one kind: a hostile program's own pattern (the same request over and
//!   over, requests of memory from Studio and Studio's answers), whereas requests of several
//!   sizes say only that requests were made — whether the server refused them is not in the
//!   window (servers tell Studio of refusals within a budget and Studio keeps 64 a tick, so a
//!   protocol fuzzer's windows without them are its sample, not its behaviour).
//!
//! The others are **not trained on**: nothing in them tells them from ordinary traffic of the
//! same mix, and calling them hostile taught the model that ordinary traffic of that mix is —
//! the windows where a flood begins (a program's mixed requests and the flood's first large
//! ones) and a protocol fuzzer's windows whose refusals were not told made a benign program's
//! bursts of mixed requests, never trained on, score as an attack (`sc-bursty` raised an alarm
//! in 12 of 16 held-out lives; docs/studio.md "Evaluation" has the rules compared). The same
//! window in both positions is kept once, as normal.
//!
//! A mimicry program's hostile phase is mostly its benign cover: its windows are hostile only
//! where its hostile steps show. A slow program's one hostile step (a fuzzing Call and its
//! refusal) is hostile in each of the 16 windows that hold it, not only where it is the newest
//! event (labelling by the newest event taught the model that such a step is normal once one
//! more event follows it; `studio validate` preferred this, 22/22 at 0/35 against 20/22 at 1/35).

use crate::token::{Decoded, LABELS_KEPT, Phase, Token, decode, phase_marker, token};
use crate::window::WINDOW;
use alloc::collections::{BTreeMap, BTreeSet};
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

/// Every window of a life (each gap-free stretch's windows, in order), with which of its events
/// are in a hostile phase and the phase of its newest event.
fn phased_windows(r: &Recorded) -> Vec<([Token; WINDOW], [bool; WINDOW], Option<Phase>)> {
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
            let hostile: [bool; WINDOW] = core::array::from_fn(|i| last[i].1 == Some(Phase::Hostile));
            out.push((w, hostile, e.phase));
        }
    }
    out
}

/// Every window of a life (each gap-free stretch's windows, in order), with its phase:
/// hostile if any of its events is in a hostile phase, else the phase of its newest event.
pub fn windows(r: &Recorded) -> Vec<([Token; WINDOW], Option<Phase>)> {
    phased_windows(r)
        .into_iter()
        .map(|(w, hostile, newest)| (w, if hostile.contains(&true) { Some(Phase::Hostile) } else { newest }))
        .collect()
}

/// Whether `t` is a protocol request seen only by its size: a Call or Send whose token keeps the
/// message's size class, not its label (`token.rs`).
fn sized_request(t: Token) -> bool {
    matches!(decode(t), Some(Decoded::Labelled { bucket, .. }) if u64::from(bucket) >= LABELS_KEPT)
}

/// What the labels make of `lives`' windows (the module doc's rule), each distinct window once.
#[derive(Debug, Default)]
pub struct Labelled {
    /// Each window with its label and how often it occurred, sorted.
    pub windows: Vec<([Token; WINDOW], u8, u32)>,
    /// Windows with a hostile-phase event not trained on (not evidence), each distinct one once.
    pub left_out: usize,
}

/// The labelled training windows of `lives` (the module doc's labels), each once, in a
/// deterministic order (sorted), with how often it occurred.
pub fn labelled(lives: &[&Recorded]) -> Vec<([Token; WINDOW], u8, u32)> {
    label(lives).windows
}

/// [`labelled`], and how many distinct windows the rule left out.
pub fn label(lives: &[&Recorded]) -> Labelled {
    let windows: Vec<_> =
        lives.iter().flat_map(|r| phased_windows(r).into_iter().map(|w| (r.program.as_str(), w))).collect();
    let hostile_programs: BTreeSet<&str> = lives.iter().filter(|r| r.hostile()).map(|r| r.program.as_str()).collect();
    let mut normal: BTreeMap<[Token; WINDOW], u32> = BTreeMap::new();
    // What benign programs do in their normal windows, and what each program does in its own.
    let mut benign_habit: BTreeSet<Token> = BTreeSet::new();
    let mut own_habit: BTreeMap<&str, BTreeSet<Token>> = BTreeMap::new();
    for (program, (w, hostile, _)) in &windows {
        if !hostile.contains(&true) {
            *normal.entry(*w).or_insert(0) += 1;
            own_habit.entry(program).or_default().extend(w);
            if !hostile_programs.contains(program) {
                benign_habit.extend(w);
            }
        }
    }
    let none = BTreeSet::new();
    let mut hostile_windows: BTreeMap<[Token; WINDOW], u32> = BTreeMap::new();
    let mut left_out: BTreeSet<[Token; WINDOW]> = BTreeSet::new();
    for (program, (w, hostile, _)) in &windows {
        if !hostile.contains(&true) || normal.contains_key(w) {
            continue;
        }
        let own = own_habit.get(program).unwrap_or(&none);
        let unordinary = |t: &Token| !benign_habit.contains(t) || (!sized_request(*t) && !own.contains(t));
        let shows = w.iter().zip(hostile).any(|(t, h)| *h && unordinary(t));
        let whole = !hostile.contains(&false);
        let requests_only = w.iter().all(|t| sized_request(*t)) && w.iter().any(|t| *t != w[0]);
        if shows || (whole && !requests_only) {
            *hostile_windows.entry(*w).or_insert(0) += 1;
        } else {
            left_out.insert(*w);
        }
    }
    left_out.retain(|w| !hostile_windows.contains_key(w));
    let mut out: Vec<_> = normal.iter().map(|(w, &n)| (*w, 0u8, n)).collect();
    out.extend(hostile_windows.iter().map(|(w, &n)| (*w, 1u8, n)));
    out.sort_unstable();
    Labelled { windows: out, left_out: left_out.len() }
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
