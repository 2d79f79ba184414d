//! Hostile behaviour made only of tokens ordinary programs also make, against the training
//! labels (`corpus::label`: a window with a hostile-phase event is trained on as hostile only
//! when it is evidence) and Studio's committed model (`initrd/studio.model`, trained with them).
//!
//! A window holding a hostile step among ordinary traffic is evidence when one of the step's
//! tokens is unordinary: no benign program makes it in a normal window, or its own program never
//! does (a request seen only by its size aside). Under a rule that took "ordinary" from every
//! normal window of the corpus, a step that is an ordinary request of benign programs (more heap
//! from Studio, answered) was in no training window, and one refusal told after a hostile
//! program's benign marker (servers tell Studio of refusals after the fact) made that refusal
//! ordinary for the whole corpus: mimics making such steps scored as ordinary traffic. These
//! tests hold the mended rule to them.
//!
//! What stays open, by the rule's choice: a wholly hostile window of requests of several sizes
//! is never evidence, so a flood of requests of drawn sizes (or a fuzzer whose refusals are not
//! told: labels of another interface, which the server cannot tell of) shows the model nothing it
//! was trained on as hostile — the same tokens as a benign program's bursts of mixed requests,
//! and tokens carry no rate. That test is ignored and fails.

use crate::Rng;
use crate::corpus::{Event, Recorded, label};
use crate::detect;
use crate::eval::{judge, score_windows};
use crate::model::{Quantised, Weights};
use crate::token::{Phase, Token, service, token};
use crate::window::WINDOW;
use alloc::string::ToString;
use alloc::vec::Vec;
use ozone_abi::profile;
use ozone_abi::trace::{BY_SERVER, BY_STUDIO, Kind, ObjectKind, Record};

fn record(kind: Kind, what: u32, object: ObjectKind, result: u16, info: u64) -> Token {
    token(&Record { kind, what: what as u8, object, result, tick: 0, info })
}

/// A Call of a protocol request of `words` words (its token keeps the size class only).
fn request(words: u64) -> Token {
    record(Kind::Syscall, profile::CALL, ObjectKind::Endpoint, 0, (0x4000 << 12) | words)
}

/// A wait on the program's notification (a pause).
fn wait() -> Token {
    record(Kind::Syscall, profile::RECV, ObjectKind::Notification, 0, 0)
}

/// Studio's event for one of its methods, answered `answer` (0: ok).
fn studio(method: u64, answer: u16) -> Token {
    record(Kind::Method, u32::from(BY_STUDIO), ObjectKind::None, answer, method)
}

/// Another server's word that it refused a request (`service::*`).
fn refused(answer: u16) -> Token {
    record(Kind::Method, u32::from(BY_SERVER), ObjectKind::None, answer, 0)
}

/// More heap from Studio, as `heap::grow` asks for it: two requests to Studio, both answered.
fn heap_grab() -> Vec<Token> {
    alloc::vec![request(0), studio(1, 0), request(0), studio(2, 0)]
}

/// A malformed request (of an ordinary size) to the server of an interface the program uses,
/// which the server refuses and tells Studio of.
fn malformed() -> Vec<Token> {
    alloc::vec![request(30), refused(service::BAD_REQUEST)]
}

/// One round of an ordinary client: a request of a drawn size, then a short sleep (the timer's
/// request and the wait), as `sc-rr-client`'s traffic is made.
fn round(rng: &mut Rng, out: &mut Vec<(Token, Option<Phase>)>) {
    let words = [0, 0, 0, 2, 8, 8, 30, 30][rng.below(8) as usize];
    out.push((request(words), Some(Phase::Benign)));
    out.push((request(0), Some(Phase::Benign)));
    out.push((wait(), Some(Phase::Benign)));
}

fn life(program: &str, run: u64, events: &[(Token, Option<Phase>)]) -> Recorded {
    let events = events
        .iter()
        .enumerate()
        .map(|(n, &(token, phase))| Event { token, phase, tick: n as u32 / 4, after_gap: false })
        .collect();
    Recorded { program: program.to_string(), run, life: 0, events }
}

/// A mimic: `rounds` rounds of ordinary client traffic with `step` hidden after every
/// `every`-th, each step bracketed by phase markers (as `sc-mimicry` does).
fn mimic(seed: u64, rounds: usize, every: usize, step: &[Token]) -> Vec<(Token, Option<Phase>)> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for n in 0..rounds {
        round(&mut rng, &mut out);
        if every > 0 && n % every == every - 1 {
            out.extend(step.iter().map(|t| (*t, Some(Phase::Hostile))));
        }
    }
    out
}

/// Studio's committed model.
fn committed() -> (Weights, Quantised) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../initrd/studio.model");
    let bytes = std::fs::read(path).expect("initrd/studio.model");
    let w = Weights::from_bytes(&bytes).expect("a weights file");
    let q = Quantised::new(&w);
    (w, q)
}

/// Whether Studio's detector (its defaults) with the committed model alarms on `r` (in its
/// hostile phase, for a hostile life), and the mean score of its windows holding a hostile event.
fn alarms(r: &Recorded) -> (bool, f32) {
    let (w, q) = committed();
    let scored = score_windows(&w, &q, r);
    let o = judge(&[(r, scored.clone())], detect::Config::default());
    let hostile: Vec<f32> = scored
        .iter()
        .filter(|s| {
            let from = (s.event + 1).saturating_sub(WINDOW);
            r.events[from..=s.event].iter().any(|e| e.phase == Some(Phase::Hostile))
        })
        .map(|s| s.score)
        .collect();
    let mean = hostile.iter().sum::<f32>() / hostile.len().max(1) as f32;
    (o.detected + o.false_alarms > 0, mean)
}

#[test]
fn the_ordinary_traffic_these_tests_hide_steps_in_raises_no_alarm() {
    // The cover alone: a benign life the committed model must leave alone, so that what the
    // tests below judge is the steps, not the cover.
    for seed in 1..=4 {
        let r = life("sc-cover", 0, &mimic(seed, 400, 0, &[]));
        let (alarm, _) = alarms(&r);
        assert!(!alarm, "seed {seed}: the cover alone alarms");
    }
    // And the detector does see a mimic whose steps show an act no normal window holds (a
    // probe of an empty slot).
    let probe = record(Kind::Syscall, profile::CALL, ObjectKind::Invalid, 2, 59 << 12);
    let r = life("sc-mimic", 0, &mimic(1, 400, 8, &[probe]));
    assert!(alarms(&r).0, "a mimic probing empty slots is caught");
}

/// The seeds (of 1..=4) whose mimic hiding `step` every 8 rounds raises no alarm, each with the
/// mean score of its windows holding a step.
fn mimics_missed(step: &[Token]) -> Vec<(u64, f32)> {
    let mut missed = Vec::new();
    for seed in 1..=4 {
        let r = life("sc-mimic", 0, &mimic(seed, 400, 8, step));
        let (alarm, mean) = alarms(&r);
        if !alarm {
            missed.push((seed, mean));
        }
    }
    missed
}

#[test]
fn a_mimic_whose_steps_are_heap_grabs_is_detected() {
    let missed = mimics_missed(&heap_grab());
    assert!(missed.is_empty(), "mimics not detected (seed, mean score of the windows with a step): {missed:?}");
}

#[test]
fn a_mimic_whose_steps_are_malformed_requests_is_detected() {
    let missed = mimics_missed(&malformed());
    assert!(missed.is_empty(), "mimics not detected (seed, mean score of the windows with a step): {missed:?}");
}

#[test]
fn a_refusal_told_after_a_benign_marker_does_not_make_refusals_ordinary() {
    // Training lives: ordinary clients; a fuzzer whose last refusal was told after its benign
    // marker (the server's word comes after the Call, and the program marked its return to
    // ordinary traffic in between); a mimic hiding malformed requests.
    let clients: Vec<Recorded> = (0..4).map(|s| life("sc-client", 0, &mimic(10 + s, 200, 0, &[]))).collect();
    let fuzzer = |late: bool| {
        let mut e = mimic(20, 20, 0, &[]);
        for _ in 0..40 {
            e.push((request(100), Some(Phase::Hostile)));
            e.push((refused(service::BAD_REQUEST), Some(Phase::Hostile)));
        }
        e.push((request(100), Some(Phase::Hostile)));
        if late {
            e.push((refused(service::BAD_REQUEST), Some(Phase::Benign)));
        }
        e.extend(mimic(21, 20, 0, &[]));
        life("sc-fuzzer", 0, &e)
    };
    let mimic = life("sc-mimic", 0, &mimic(30, 200, 8, &malformed()));
    let bad = refused(service::BAD_REQUEST);
    let taught = |fuzzer: &Recorded| {
        let mut lives: Vec<&Recorded> = clients.iter().collect();
        lives.push(fuzzer);
        lives.push(&mimic);
        let l = label(&lives);
        let mimic_windows: Vec<[Token; WINDOW]> = crate::corpus::windows(&mimic)
            .into_iter()
            .filter(|(w, p)| *p == Some(Phase::Hostile) && w.contains(&bad))
            .map(|(w, _)| w)
            .collect();
        mimic_windows.iter().filter(|w| l.windows.iter().any(|(x, label, _)| x == *w && *label == 1)).count()
    };
    let told_in_time = taught(&fuzzer(false));
    assert!(told_in_time > 0, "with every refusal in its hostile phase, the mimic's steps are evidence");
    let told_late = taught(&fuzzer(true));
    assert_eq!(
        told_late, told_in_time,
        "one refusal told after the fuzzer's benign marker: {told_late} of the mimic's windows with a refusal are \
         trained on as hostile, {told_in_time} otherwise"
    );
}

#[test]
#[ignore = "open, by the labels' choice: a wholly hostile window of requests of several sizes is never evidence (a benign program's bursts of mixed requests are the same tokens, and tokens carry no rate), so a flood of requests of drawn sizes that avoids runs of the largest messages raises no alarm; rate is for the CPU budget and the shaper"]
fn a_flood_of_requests_of_drawn_sizes_is_detected() {
    let mut missed = Vec::new();
    for seed in 1..=4 {
        let mut rng = Rng::new(seed);
        let mut e = mimic(seed, 30, 0, &[]);
        // Sizes drawn, never the same twice in a row: no run of the largest messages, which
        // is what a flood of them (trained on as hostile) is made of.
        let mut last = 4;
        for _ in 0..3000 {
            let mut size = rng.below(4) as usize;
            if size == last {
                size = (size + 1 + rng.below(3) as usize) % 4;
            }
            last = size;
            e.push((request([0, 8, 30, 100][size]), Some(Phase::Hostile)));
        }
        let r = life("sc-flood", 0, &e);
        let (alarm, mean) = alarms(&r);
        if !alarm {
            missed.push((seed, mean));
        }
    }
    assert!(missed.is_empty(), "floods not detected (seed, mean window score): {missed:?}");
}
