//! The modules together, as Studio will chain them: trace records of a scenario program (with
//! its phase markers) → tokens → windows → stide (the baseline) and the model → the instance's
//! adaptation → the ladder, with the features that explain the decision.

use crate::Rng;
use crate::adapt::{self, Instance};
use crate::model::Weights;
use crate::respond::{self, Level, Responder};
use crate::stide::{self, Stide};
use crate::token::{PHASE_BENIGN, PHASE_HOSTILE, Phase, Token};
use crate::window::{Baseline, Feature, Pushed, Stream};
use alloc::vec::Vec;
use ozone_abi::trace::{Kind, ObjectKind, Record};
use ozone_abi::{Error, profile};

fn syscall(what: u32, object: ObjectKind, result: Error, ok: bool, label: u64, tick: u32) -> Record {
    Record {
        kind: Kind::Syscall,
        what: what as u8,
        object,
        result: if ok { 0 } else { result as u16 },
        tick,
        info: label << 12,
    }
}

fn marker(phase: u64, tick: u32) -> Record {
    syscall(profile::CALL, ObjectKind::Invalid, Error::InvalidCapability, false, phase, tick)
}

/// A client's normal life: ask the store (label 1 or 2), now and then log (label 4) and yield.
fn benign(rng: &mut Rng, tick: &mut u32, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    while out.len() < n {
        *tick += 1 + rng.below(3) as u32;
        out.push(syscall(profile::CALL, ObjectKind::Endpoint, Error::Denied, true, 1 + rng.below(2), *tick));
        if rng.below(4) == 0 {
            out.push(syscall(profile::SEND, ObjectKind::Endpoint, Error::Denied, true, 4, *tick));
        }
        if rng.below(6) == 0 {
            out.push(syscall(profile::YIELD, ObjectKind::None, Error::Denied, true, 0, *tick));
        }
    }
    out
}

/// A hostile program probing, at the benign pace: empty slots with many labels, kernel
/// invocations the profile refuses.
fn hostile(rng: &mut Rng, tick: &mut u32, n: usize) -> Vec<Record> {
    (0..n)
        .map(|_| {
            *tick += 1 + rng.below(3) as u32;
            match rng.below(3) {
                0 => syscall(profile::CALL, ObjectKind::Invalid, Error::InvalidCapability, false, rng.below(90), *tick),
                1 => syscall(profile::CALL, ObjectKind::Tcb, Error::Denied, false, 20 + rng.below(10), *tick),
                _ => syscall(profile::CALL, ObjectKind::Endpoint, Error::Denied, true, 1, *tick),
            }
        })
        .collect()
}

#[test]
fn a_probing_phase_climbs_the_ladder_with_its_reasons() {
    for seed in 0..8 {
        scenario(seed);
    }
}

fn scenario(seed: u64) {
    let mut rng = Rng::new(seed);
    let mut tick = 0;

    // Training: benign runs of the program (no markers), tokens for stide, features for the
    // baseline.
    let mut stide = Stide::new(stide::Config::default());
    let mut baseline = Baseline::new();
    for _ in 0..20 {
        let mut stream = Stream::new();
        let mut tokens: Vec<Token> = Vec::new();
        for r in benign(&mut rng, &mut tick, 400) {
            tokens.push(crate::token::token(&r));
            if let Pushed::Window(w, _) = stream.push(&r) {
                baseline.learn(&w.features());
            }
        }
        stide.train(&tokens);
    }
    assert_eq!(stide.missed(), 0);

    // The scenario: a benign phase, then a hostile one, each after its marker.
    let mut trace = alloc::vec![marker(PHASE_BENIGN, tick)];
    trace.extend(benign(&mut rng, &mut tick, 300));
    trace.push(marker(PHASE_HOSTILE, tick));
    trace.extend(hostile(&mut rng, &mut tick, 120));

    let mut stream = Stream::new();
    let mut scorer = stide.scorer();
    let mut instance = Instance::new(adapt::Config { warmup: 32, base: 0.3, max: 0.6, ..adapt::Config::default() });
    let mut ladder = Responder::new(respond::Config::default());
    let model = Weights::seeded(1);
    let mut first_alarm: Option<(Phase, respond::Decision)> = None;
    let mut last = None;
    let mut benign_windows = 0;
    let mut hostile_windows = 0;
    for r in &trace {
        // stide sees every token (it keeps its own k), the windows only complete ones.
        let s = match crate::token::phase_marker(r) {
            None => scorer.push(&stide, crate::token::token(r)),
            Some(_) => None,
        };
        let (w, phase) = match stream.push(r) {
            Pushed::Window(w, Some(p)) => (w, p),
            Pushed::Window(_, None) => panic!("the trace starts with a marker"),
            Pushed::Marker(_) | Pushed::Filling => continue,
        };
        let s = s.expect("k <= WINDOW: a window has a stide score");
        let verdict = instance.observe(w.hash(), s.rate(stide.config()));
        let decision = ladder.observe(&verdict, baseline.top(&w.features()), w.last_tick);
        // The model runs on every window too (untrained weights: only its range is checked).
        assert!((0.0..=1.0).contains(&model.score(&w.tokens)));
        if phase == Phase::Benign {
            benign_windows += 1;
            assert_eq!(decision.level, Level::Normal, "seed {seed}: benign window {benign_windows} escalated");
        } else {
            hostile_windows += 1;
            if decision.changed && first_alarm.is_none() {
                first_alarm = Some((phase, decision));
                assert!(hostile_windows <= 12, "seed {seed}: the first alarm took {hostile_windows} windows");
            }
            last = Some(decision);
        }
    }
    assert!(benign_windows > 200);
    let (phase, alarm) = first_alarm.expect("the hostile phase alarms");
    assert_eq!((phase, alarm.level), (Phase::Hostile, Level::Alert));
    assert!(alarm.score > alarm.threshold);
    let reasons: Vec<Feature> = alarm.top_features.iter().map(|c| c.feature).collect();
    let probing = |f: &Feature| {
        matches!(f, Feature::InvalidTargets | Feature::InvalidCapability | Feature::Denied | Feature::KernelObjects)
    };
    assert!(reasons.iter().any(probing), "seed {seed}: reasons {reasons:?}");
    // A window made only of the probe is explained by the probe.
    let last = last.unwrap();
    assert!(last.top_features.iter().filter(|c| probing(&c.feature)).count() >= 2, "{:?}", last.top_features);
    // 120 hostile records, nearly all anomalous windows: well up the ladder.
    assert!(ladder.level() >= Level::Revoke, "only {:?}", ladder.level());
}
