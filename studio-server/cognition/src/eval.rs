//! Judging detectors on recorded lives, as `cargo xtask studio eval` and the trainer's
//! architecture comparison do (host only, the `std` feature).
//!
//! A hostile life is **detected** when an alarm falls in its hostile phase; a benign life with
//! any alarm is a **false alarm**. Each life's alarms also feed a graded-response ladder
//! ([`Ladder`], Studio's default steps and suspension time), and the level it ends at is counted:
//! the decisions the detector would have taken.

use crate::adapt::{Stage, Verdict};
use crate::corpus::{Event, Recorded, Split};
use crate::detect::{self, Detector};
use crate::model::{Quantised, Weights};
use crate::respond::{self, Level, Responder};
use crate::stide::Stide;
use crate::token::Phase;
use crate::token::Token;
use crate::window::{Contribution, Feature, Stream, TOP, WINDOW, Window};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;

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
    /// The decisions taken: `decisions[h][l]` lives (benign `h = 0`, hostile `h = 1`) whose
    /// graded-response ladder (`respond::Responder`, Studio's default steps and suspension time)
    /// ended at level `l` (Normal ... Kill), fed the detector's counted alarms.
    pub decisions: [[usize; 6]; 2],
}

/// A graded-response ladder fed one life's verdicts as Studio's would be: every alarm, in any
/// phase, climbs it (Studio does not know the phases). Once a life is suspended it takes no
/// more verdicts: in Studio the program no longer runs, and the records it wrote before its
/// suspension climb its ladder no further; it is killed when its suspension time runs out
/// unless a human resumes or allows it, so [`Level::Suspend`] here means "suspended, then killed
/// with nobody at the console". The recorded lives ran without responses, so what a life did
/// after the level it reached is what it would have done had Studio only alerted.
pub struct Ladder(Responder);

impl Default for Ladder {
    fn default() -> Ladder {
        Ladder::new()
    }
}

impl Ladder {
    pub fn new() -> Ladder {
        Ladder(Responder::new(respond::Config::default()))
    }

    /// One verdict at timer tick `tick`; `score` and `threshold` are what the detector compared.
    pub fn observe(&mut self, anomalous: bool, score: f32, threshold: f32, tick: u32) {
        if self.0.level() >= Level::Suspend {
            return;
        }
        let verdict = Verdict { raw: score, score, threshold, anomalous, known: false, stage: Stage::Watching };
        // The explanation is not evaluated here; the ladder only needs the verdict.
        let none = [Contribution { feature: Feature::ALL[0], value: 0.0, z: 0.0 }; TOP];
        self.0.observe(&verdict, none, tick);
    }

    pub fn level(&self) -> Level {
        self.0.level()
    }
}

impl Outcome {
    /// Count one life whose first counted alarm (event index, tick) is `alarm`: for a hostile
    /// life, only an alarm in its hostile phase counts (the caller's filter).
    pub fn tally(&mut self, r: &Recorded, alarm: Option<(usize, u32)>, level: Level) {
        self.decisions[usize::from(r.hostile())][level as usize] += 1;
        if r.hostile() {
            self.hostile += 1;
            let first = r.events.iter().enumerate().find(|(_, e)| e.phase == Some(Phase::Hostile));
            if let (Some((a, at)), Some((h, e))) = (alarm, first) {
                self.detected += 1;
                self.events_to_detect.push(a.saturating_sub(h));
                self.ticks_to_detect.push(at.wrapping_sub(e.tick));
            }
        } else {
            self.benign += 1;
            self.false_alarms += alarm.is_some() as usize;
            let (first, last) = (r.events.first().map_or(0, |e| e.tick), r.events.last().map_or(0, |e| e.tick));
            self.benign_hours += f64::from(last.wrapping_sub(first)) / 100.0 / 3600.0;
        }
    }

    pub fn detection_rate(&self) -> f64 {
        self.detected as f64 / self.hostile.max(1) as f64
    }

    pub fn false_alarm_rate(&self) -> f64 {
        self.false_alarms as f64 / self.benign.max(1) as f64
    }
}

/// Whether an alarm at event `e` counts: any alarm in a benign life, only one in the hostile
/// phase in a hostile life.
pub fn counts(r: &Recorded, e: &Event) -> bool {
    !r.hostile() || e.phase == Some(Phase::Hostile)
}

/// Score the lives `test` with `stide`: a hostile life is detected when an alarm falls in its
/// hostile phase; a benign life (no hostile event) with any alarm is a false alarm. Warm-up
/// events (`skip`) are not scored.
pub fn score(stide: &Stide, test: &[&Recorded], skip: usize) -> Outcome {
    let mut o = Outcome::default();
    for r in test {
        let mut scorer = stide.scorer();
        let mut alarm = None;
        let mut ladder = Ladder::new();
        let frame = stide.config().frame.max(1) as f32;
        for (n, e) in r.events.iter().enumerate() {
            if e.after_gap {
                scorer = stide.scorer();
            }
            let Some(s) = scorer.push(stide, e.token) else { continue };
            if n < skip {
                continue;
            }
            let counted = s.anomalous && counts(r, e);
            ladder.observe(s.anomalous, s.lfc as f32 / frame, stide.config().threshold as f32 / frame, e.tick);
            if alarm.is_none() && counted {
                alarm = Some((n, e.tick));
            }
        }
        o.tally(r, alarm, ladder.level());
    }
    o
}

/// One window of a held-out life with the model's score of it.
#[derive(Clone, Copy, Debug)]
pub struct ScoredWindow {
    /// The index of its newest event.
    pub event: usize,
    pub hash: u64,
    /// Studio's score (the fixed-point pass, `model::Quantised`), and the `f32` pass's.
    pub score: f32,
    pub float: f32,
    /// Records were dropped just before it (the detector's frame starts again).
    pub after_gap: bool,
}

/// The windows of `r` Studio's stream makes (none across a gap), each with the index of its
/// newest event and whether records were dropped just before it.
pub fn windows_of(r: &Recorded) -> Vec<(usize, Window, bool)> {
    let mut stream = Stream::new();
    let mut gap = false;
    let mut out = Vec::new();
    for (n, e) in r.events.iter().enumerate() {
        if e.after_gap {
            stream.clear();
            gap = true;
        }
        if let Some(w) = stream.push_token(e.token, e.tick) {
            out.push((n, w, gap));
            gap = false;
        }
    }
    out
}

/// Every window of `r` (see [`windows_of`]) scored by `score`, which gives each window's
/// (score, `f32` score) for a whole batch of windows at once, or fails.
pub fn score_windows_with<E>(
    r: &Recorded,
    score: impl FnOnce(&[[Token; WINDOW]]) -> Result<Vec<(f32, f32)>, E>,
) -> Result<Vec<ScoredWindow>, E> {
    let windows = windows_of(r);
    let tokens: Vec<[Token; WINDOW]> = windows.iter().map(|(_, w, _)| w.tokens).collect();
    let scores = score(&tokens)?;
    assert_eq!(scores.len(), windows.len(), "one score per window");
    Ok(windows
        .iter()
        .zip(scores)
        .map(|((n, w, gap), (score, float))| ScoredWindow { event: *n, hash: w.hash(), score, float, after_gap: *gap })
        .collect())
}

/// The model's score of every window of `r`: Studio's forward pass (fixed point) and the `f32`
/// one.
pub fn score_windows(weights: &Weights, model: &Quantised, r: &Recorded) -> Vec<ScoredWindow> {
    let Ok(scored) = score_windows_with(r, |windows| {
        Ok::<_, core::convert::Infallible>(windows.iter().map(|w| (model.score(w), weights.score(w))).collect())
    });
    scored
}

/// Judge pre-scored lives with the model's detector under `config`.
pub fn judge(lives: &[(&Recorded, Vec<ScoredWindow>)], config: detect::Config) -> Outcome {
    let mut o = Outcome::default();
    for (r, windows) in lives {
        let mut d = Detector::new(config);
        let mut alarm = None;
        let mut ladder = Ladder::new();
        for w in windows {
            if w.after_gap {
                d.gap();
            }
            let j = d.judge(w.hash, w.score);
            let e = &r.events[w.event];
            let counted = j.verdict.anomalous && counts(r, e);
            ladder.observe(j.verdict.anomalous, j.verdict.score, j.verdict.threshold, e.tick);
            if alarm.is_none() && counted {
                alarm = Some((w.event, e.tick));
            }
        }
        o.tally(r, alarm, ladder.level());
    }
    o
}

/// The held-out lives a detector is judged on, and how many were left out and why.
pub struct Judged<'a> {
    pub lives: Vec<&'a Recorded>,
    /// Lives shorter than one window.
    pub short: usize,
    /// Lives of a hostile program without a hostile event.
    pub unlabelled: usize,
}

/// Of `split`'s held-out lives (of `all`), the judged ones: those long enough for one window (a
/// shorter life makes no window for the model, and 15 syscalls are no behaviour), and whose label
/// is known: a life of a program that is hostile in other lives but has no hostile event itself
/// lost its phase marker in a drop or ended before it (its events are of unknown phase).
pub fn judged<'a>(all: &[Recorded], split: &Split<'a>) -> Judged<'a> {
    let hostile_kinds: BTreeSet<&str> = all.iter().filter(|r| r.hostile()).map(|r| r.program.as_str()).collect();
    let short = split.test.iter().filter(|r| r.events.len() < WINDOW).count();
    let unlabelled = split
        .test
        .iter()
        .filter(|r| r.events.len() >= WINDOW)
        .filter(|r| !r.hostile() && hostile_kinds.contains(r.program.as_str()))
        .count();
    let test: Vec<&Recorded> = split
        .test
        .iter()
        .copied()
        .filter(|r| r.events.len() >= WINDOW)
        .filter(|r| r.hostile() || !hostile_kinds.contains(r.program.as_str()))
        .collect();
    Judged { lives: test, short, unlabelled }
}

/// A ROC curve: (false-alarm rate, detection rate) points, sorted, from (0, 0) to (1, 1).
pub type Curve = Vec<(f64, f64)>;

/// The curve through the outcomes of one detector at several thresholds.
pub fn curve(points: impl Iterator<Item = Outcome>) -> Curve {
    let mut c: Curve = points.map(|o| (o.false_alarm_rate(), o.detection_rate())).collect();
    c.push((0.0, 0.0));
    c.push((1.0, 1.0));
    c.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    c
}

/// The best detection rate at a false-alarm rate of at most `fa`.
pub fn detection_at(c: &Curve, fa: f64) -> f64 {
    c.iter().filter(|p| p.0 <= fa + 1e-12).map(|p| p.1).fold(0.0, f64::max)
}

/// The model's detector on pre-scored lives at the threshold base `base` (the adapted
/// threshold's floor, and its ceiling raised to it), the rest Studio's defaults: the points of
/// the model's ROC curve.
pub fn judge_at(lives: &[(&Recorded, Vec<ScoredWindow>)], base: f32) -> Outcome {
    let mut c = detect::Config::default();
    c.adapt.base = base;
    c.adapt.max = c.adapt.max.max(base);
    judge(lives, c)
}

/// Add `o`'s lives to `into`'s.
pub fn merge(into: &mut Outcome, o: Outcome) {
    into.hostile += o.hostile;
    into.detected += o.detected;
    into.benign += o.benign;
    into.false_alarms += o.false_alarms;
    into.benign_hours += o.benign_hours;
    into.events_to_detect.extend(o.events_to_detect);
    into.ticks_to_detect.extend(o.ticks_to_detect);
    for (a, b) in into.decisions.iter_mut().flatten().zip(o.decisions.iter().flatten()) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::parse_trace;
    use crate::stide::Config;
    use alloc::format;
    use alloc::string::String;
    use ozone_abi::trace::{ObjectKind, syscall_word};

    /// A trace line: a Call on an endpoint with `label`.
    fn call(label: u64) -> String {
        format!("{:x} {:x}\n", syscall_word(ozone_abi::profile::CALL, ObjectKind::Endpoint), label << 12)
    }

    /// A trace line: a phase marker (a Call on an empty slot with `label`).
    fn marker(label: u64) -> String {
        format!("{:x} {:x}\n", syscall_word(ozone_abi::profile::CALL, ObjectKind::Invalid), label << 12)
    }

    /// A trace of program `name`: 40 ordinary calls (labels 0, 1, 2) in a benign phase, then the
    /// marker of a hostile phase.
    fn ordinary_then_hostile(name: &str) -> String {
        format!("# program {name} seed 1 run 0 life 0 dropped 0\n{}{}{}", marker(0x5CE0), ordinary(40), marker(0x5CE1))
    }

    /// The life of a benign program (`sc-benign`, never hostile) whose benign phase is `body`.
    fn benign_life(body: &str) -> crate::corpus::Recorded {
        parse_trace(&format!("# program sc-benign seed 2 run 0 life 0 dropped 0\n{}{body}", marker(0x5CE0))).unwrap()
    }

    /// `n` ordinary calls (labels 0, 1, 2 in turn).
    fn ordinary(n: u64) -> String {
        (0..n).map(|n| call(n % 3)).collect()
    }

    #[test]
    /// The training labels (`corpus` module doc): a hostile step that shows (a token no normal
    /// window holds) labels every window it is in hostile — the windows after it too, whose
    /// newest event is benign again — unless the same window also occurs in a normal position.
    fn a_window_holding_a_hostile_step_is_labelled_hostile() {
        use crate::corpus::{labelled, windows};
        use crate::token::Phase;
        let mut text = ordinary_then_hostile("sc-s");
        text += &call(99);
        text += &marker(0x5CE0);
        for n in 0..40 {
            text += &call(n % 3);
        }
        let r = parse_trace(&text).unwrap();
        let w = windows(&r);
        let hostile: Vec<usize> = (0..w.len()).filter(|&i| w[i].1 == Some(Phase::Hostile)).collect();
        // Windows end at events 15..81; the step is event 40: windows ending at 40..=55.
        assert_eq!(hostile, (40 - 15..=55 - 15).collect::<Vec<_>>());
        assert!(w[hostile[0]].0.contains(&r.events[40].token));
        let l = labelled(&[&r]);
        assert_eq!(l.iter().filter(|(_, label, _)| *label == 1).count(), 16, "each window with the step, once");
        assert!(l.iter().all(|(w, label, _)| (*label == 1) == w.contains(&r.events[40].token)));
    }

    #[test]
    /// A hostile step made only of what ordinary programs do, among ordinary traffic, is not
    /// evidence: the windows that hold part of it are not trained on (neither label), unless
    /// they lie wholly in a hostile phase — a flood's middle is hostile, its first windows (the
    /// program's ordinary requests and a few large ones, as in a benign burst) are not.
    fn a_window_showing_nothing_unordinary_is_hostile_only_wholly_in_a_hostile_phase() {
        use crate::corpus::label;
        // The flood: label 2 is an ordinary call (in the normal windows before it).
        let mut text = ordinary_then_hostile("sc-f");
        for _ in 0..40 {
            text += &call(2);
        }
        let r = parse_trace(&text).unwrap();
        let benign = benign_life(&ordinary(40));
        let l = label(&[&benign, &r]);
        let hostile: Vec<_> = l.windows.iter().filter(|(_, label, _)| *label == 1).collect();
        assert_eq!(hostile.len(), 1, "only the flood's middle (every event hostile): {hostile:?}");
        assert!(hostile[0].0.iter().all(|t| *t == r.events[40].token));
        assert_eq!(hostile[0].2, 40 - 15, "the windows wholly in the flood");
        // Windows ending at events 40..=54 hold 1..=15 of the flood's calls; the one with 15
        // ...2,2,2 preceded by a single 0 or 1 is distinct from every normal window.
        assert_eq!(l.left_out, 15, "the flood's first windows: neither label");
        assert!(l.windows.iter().all(|(w, label, _)| *label == 1 || w.contains(&r.events[0].token)));

        // The same step with one call no normal window holds: every window with it is evidence.
        let flood = format!("{}{}", marker(0x5CE1), call(2));
        let text = text.replacen(&flood, &format!("{}{}", marker(0x5CE1), call(99)), 1);
        let r = parse_trace(&text).unwrap();
        let l = label(&[&benign, &r]);
        let unordinary = r.events.iter().find(|e| e.phase == Some(crate::token::Phase::Hostile)).unwrap().token;
        let with_it = l.windows.iter().filter(|(w, _, _)| w.contains(&unordinary));
        assert_eq!(with_it.clone().count(), 16);
        assert!(with_it.clone().all(|(_, label, _)| *label == 1));
        assert_eq!(l.left_out, 0, "the flood's first windows hold the call no normal window holds");
    }

    #[test]
    /// Wholly hostile windows made only of protocol requests seen by their size (labels from
    /// 128 up): one request over and over is evidence (a flood), requests of several sizes are
    /// not (what the server made of them is not in the window) — whether or not ordinary
    /// windows hold such requests.
    fn wholly_hostile_requests_of_several_sizes_are_not_evidence_one_repeated_is() {
        use crate::corpus::label;
        /// A Call with a protocol label of `words` words.
        fn sized(words: u64) -> String {
            format!("{:x} {:x}\n", syscall_word(ozone_abi::profile::CALL, ObjectKind::Endpoint), (0x4000 << 12) | words)
        }
        let lead: String = (0..40).map(|n| call(n % 3) + &sized([0, 8, 30, 100][n as usize % 4])).collect();
        let benign = benign_life(&lead);
        let mut text = format!("# program sc-f seed 1 run 0 life 0 dropped 0\n{}{lead}", marker(0x5CE0));
        text += &marker(0x5CE1);
        // A fuzzer whose refusals were not told: sizes in an order no normal window has.
        for n in 0..40u64 {
            text += &sized([100, 8, 8, 30, 0][n as usize % 5]);
        }
        // A flood: the largest size over and over.
        for _ in 0..40 {
            text += &sized(100);
        }
        let r = parse_trace(&text).unwrap();
        let largest = r.events.last().unwrap().token;
        let l = label(&[&benign, &r]);
        let hostile: Vec<_> = l.windows.iter().filter(|(_, label, _)| *label == 1).collect();
        assert_eq!(hostile.len(), 1, "the flood alone: {hostile:?}");
        assert_eq!(hostile[0].0, [largest; WINDOW]);
        assert!(l.left_out >= 5, "the fuzzer's windows (five distinct ones) and the flood's first ones");
    }

    #[test]
    /// A hostile step of a kind benign programs make (label 1 here: a heap grab, say) shows in
    /// a program that never makes it in its own normal windows (a mimic whose cover is other
    /// traffic); and a token a hostile program's benign phase holds (a refusal told late, after
    /// its benign marker) is still unordinary when no benign program makes it.
    fn a_step_unlike_its_own_program_or_unlike_any_benign_one_is_evidence() {
        use crate::corpus::label;
        let benign = benign_life(&ordinary(40));
        let cover: String = (0..40).map(|n| call([0, 2][n % 2])).collect();
        let mut text = format!("# program sc-m seed 1 run 0 life 0 dropped 0\n{}{cover}", marker(0x5CE0));
        // Told late: in the benign phase (between two calls the cover never makes, so that no
        // window of it is a window of the hostile step's).
        text += &(call(5) + &call(77) + &call(5));
        text += &cover;
        for step in [1, 77] {
            text += &format!("{}{}{}{cover}", marker(0x5CE1), call(step), marker(0x5CE0));
        }
        let r = parse_trace(&text).unwrap();
        let l = label(&[&benign, &r]);
        for step in [1, 77] {
            let at = r
                .events
                .iter()
                .position(|e| e.phase == Some(crate::token::Phase::Hostile) && e.token == call_token(step));
            let token = r.events[at.expect("the step")].token;
            let hostile = l.windows.iter().filter(|(w, label, _)| *label == 1 && w.contains(&token)).count();
            assert_eq!(hostile, 16, "every window holding step {step} is evidence");
        }
        assert_eq!(l.left_out, 0);
        // The mimic's cover alone is never hostile.
        assert!(
            l.windows.iter().all(|(w, label, _)| *label == 0 || w.iter().any(|t| [1, 77].map(call_token).contains(t)))
        );
    }

    /// The token of [`call`]`(label)`.
    fn call_token(label: u64) -> Token {
        parse_trace(&format!("# program x seed 1 run 0 life 0 dropped 0\n{}", call(label))).unwrap().events[0].token
    }

    #[test]
    fn traces_are_read_back_with_their_phases_and_stide_scores_them() {
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
        // 100 unseen sequences in a row climb the ladder to Suspend (1 + 3 + 5 + 8 anomalous
        // verdicts), where it stops; the benign life never leaves Normal.
        assert_eq!(o.decisions, [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0]]);
        // Suspended, a life takes no more verdicts, however long its records go on.
        let mut ladder = Ladder::new();
        for t in 0..17 {
            ladder.observe(true, 0.9, 0.5, t);
        }
        assert_eq!(ladder.level(), Level::Suspend);
        for t in 17..10_000 {
            ladder.observe(t % 2 == 0, 0.9, 0.5, t);
        }
        assert_eq!(ladder.level(), Level::Suspend);
        // A single stray anomaly only alerts.
        let mut ladder = Ladder::new();
        ladder.observe(true, 0.9, 0.5, 0);
        for t in 1..50 {
            ladder.observe(false, 0.1, 0.5, t);
        }
        assert_eq!(ladder.level(), Level::Alert);
    }
}
