//! A fresh-context review of the spike trigger (`detect.rs`) and how it meets the ladder
//! (`respond.rs`) and `allow` as Studio's watch drives them (`studio-server/src/watch.rs`).
//! Two problems it found are mended (each test failed before: spikes latched every later window
//! anomalous; `allow` left the spikes counted); the third is a known gap, ignored with its
//! reason: it states the behaviour wanted.

use crate::adapt::Verdict;
use crate::detect::{Config, Detector, Judged};
use crate::respond::{self, Level, Responder};
use crate::window::{Contribution, Feature, TOP};
use alloc::collections::VecDeque;

/// The spike trigger with the count of three these tests were written for (Studio's count is
/// chosen by `cargo xtask studio validate`).
const THREE: Config = Config { spikes: 3, ..Config::DEFAULT };

fn top() -> [Contribution; TOP] {
    [Contribution { feature: Feature::Calls, value: 0.0, z: 0.0 }; TOP]
}

/// Studio's watch in small: the detector, the ladder (verdicts masked at Suspend, as
/// `Watch::judge` does) and the flagged windows `ALLOW` accepts.
struct Watch {
    d: Detector,
    ladder: Responder,
    flagged: VecDeque<u64>,
}

impl Watch {
    fn new() -> Watch {
        Watch { d: Detector::new(THREE), ladder: Responder::new(respond::Config::default()), flagged: VecDeque::new() }
    }

    fn judge(&mut self, hash: u64, raw: f32) -> Judged {
        let j = self.d.judge(hash, raw);
        let v =
            if self.ladder.level() == Level::Suspend { Verdict { anomalous: false, ..j.verdict } } else { j.verdict };
        self.ladder.observe(&v, top(), 0);
        if j.verdict.anomalous {
            if self.flagged.len() == 256 {
                self.flagged.pop_front();
            }
            self.flagged.push_back(hash);
        }
        j
    }

    /// `Watch::allow`: the flagged windows accepted, the ladder back to Normal.
    fn allow(&mut self) {
        assert!(self.ladder.allow());
        for h in self.flagged.drain(..) {
            self.d.allow(h);
        }
        self.d.forgive();
    }

    /// A benign program's warm-up: 20 windows of its repertoire (hashes 0..4), all accepted.
    fn warmed() -> Watch {
        let mut w = Watch::new();
        for n in 0..20 {
            assert!(!w.judge(n % 4, 0.1).verdict.anomalous);
        }
        w
    }
}

/// Held: the horizon is the last 512 windows, the current one included (starts 0, 2, 511
/// alarm at 511; starts 0, 2, 512 do not at 512).
#[test]
fn the_horizon_counts_exactly_the_last_512_windows() {
    for (third, alarms) in [(511u64, true), (512, false)] {
        let mut d = Detector::new(THREE);
        for n in 0..=third {
            let sure = n == 0 || n == 2 || n == third;
            let j = d.judge(10_000 + n, if sure { 0.99 } else { 0.0 });
            if n == third {
                assert_eq!(j.verdict.anomalous, alarms, "third spike at {third}: {j:?}");
            }
        }
    }
}

/// Problem: once three spikes are in the horizon, *every* following window is anomalous until
/// the oldest spike leaves it (up to ~510 windows), even windows the program's own warm-up
/// accepted (score 0). The ladder counts consecutive anomalous windows (steps 1, 3, 5, 8), so
/// three isolated sure windows — one piece of evidence — suspend the program 17 windows
/// later and, with `respond = "kill"`, kill it 30 s after, though all it did afterwards was its
/// warm-up's own windows. A frame alarm needs the behaviour to last; this one does not.
#[test]
fn three_isolated_spikes_do_not_suspend_a_program_doing_only_its_warm_up_windows() {
    let mut w = Watch::warmed();
    let mut latched = 0;
    for n in 20..1000u64 {
        let spike = matches!(n, 100 | 250 | 400);
        let (hash, raw) = if spike { (900 + n, 0.96) } else { (n % 4, 0.1) };
        let j = w.judge(hash, raw);
        latched += (!spike && j.verdict.score == 0.0 && j.verdict.anomalous) as u32;
    }
    assert!(w.ladder.level() < Level::Suspend, "ladder at {:?}", w.ladder.level());
    assert_eq!(latched, 0, "{latched} accepted windows (score 0) judged anomalous");
}

/// Problem: `ALLOW` (the human said the behaviour is fine) accepts the flagged windows and puts
/// the ladder back to Normal, but the spikes stay counted — and the first two spikes were never
/// flagged (they were not anomalous when seen), so they are not accepted either. The very next
/// window, an accepted one, is anomalous again, and the ladder climbs back to Suspend within
/// 17 windows. `RESUME` (back to Revoke) is re-suspended within 8 the same way.
#[test]
fn allow_after_a_spike_alarm_sticks() {
    let mut w = Watch::warmed();
    for n in 20..200u64 {
        let spike = matches!(n, 60 | 100 | 140);
        let (hash, raw) = if spike { (900 + n, 0.96) } else { (n % 4, 0.1) };
        w.judge(hash, raw);
    }
    assert!(w.ladder.level() >= Level::Alert);
    assert!(!w.d.instance().is_accepted(960), "the first spike was never flagged, so ALLOW will not accept it");
    w.allow();
    let j = w.judge(1, 0.1);
    assert!(!j.verdict.anomalous, "right after ALLOW, an accepted window: {j:?}");
    for n in 0..40u64 {
        w.judge(n % 4, 0.1);
    }
    assert_eq!(w.ladder.level(), Level::Normal, "the ladder climbed again after ALLOW");
}

/// Problem (evasion): spikes are counted as *runs*, not windows. A mimic that bunches its
/// hostile steps into two runs of 15 sure windows every 257 windows (about 6 % of its windows
/// at 1.0, among windows its warm-up accepted) never alarms: two runs per horizon, and 15 of 32
/// in the frame is 0.47, under the base threshold 0.5. The docs' mimic, with a sure *pair*
/// every 60 windows (3 %), is caught. (The horizon is in windows, which the agent makes as
/// cheaply as it makes syscalls, so spacing steps past it costs it nothing but padding.)
#[test]
#[ignore = "known gap (docs/studio.md, Evaluation): a mimic bunching sure windows into two runs per 512 windows is caught by neither trigger"]
fn a_mimic_bunching_its_sure_windows_is_caught() {
    let mut w = Watch::warmed();
    let mut sure = 0;
    let mut alarms = 0;
    for n in 0..5000u64 {
        let hostile = n % 257 < 15;
        let (hash, raw) = if hostile { (100_000 + n, 1.0) } else { (n % 4, 0.1) };
        sure += hostile as u32;
        alarms += w.judge(hash, raw).verdict.anomalous as u32;
    }
    assert!(sure > 280);
    assert!(alarms > 0, "{sure} windows scoring 1.0 in 5000, no alarm");
}
