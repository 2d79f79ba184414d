//! The model's detector for one running program: the shared model's window scores, smoothed
//! over a frame, judged by the program's own adapted threshold ([`crate::adapt`]).
//!
//! One window's score is noisy: a benign program now and then makes a window the model finds
//! odd, and a window the model never saw in training may score high once. Hostile behaviour
//! lasts: a scan or a flood is many windows. So, as stide counts mismatches over a locality
//! frame, the detector judges the **frame score**: the mean of the last [`Config::frame`]
//! window scores (a window the instance has accepted counts 0; the frame starts full of zeros).
//! That mean goes to the instance's [`crate::adapt::Instance`], which warms up on it, fits its
//! threshold within `[base, max]`, and says whether it is anomalous; a warm-up window whose own
//! score is above `max` is not accepted however low the frame's mean
//! ([`crate::adapt::Instance::observe_window`]).
//!
//! **A second trigger: rare, sure windows.** A mimic hides a hostile step every so often among
//! ordinary traffic: the windows that hold the step score near 1, but they are a few among
//! hundreds and no frame's mean rises. So the detector also counts *spikes* — runs of windows
//! each scoring at least [`Config::spike`] (not accepted ones) — and a run with
//! [`Config::spikes`] of them starting within the last [`Config::horizon`] windows has its sure
//! windows anomalous whatever its frame score ([`Judged::spikes`] says how many, for the log);
//! the windows between spikes are judged by their frame as ever. The settings were
//! chosen on a validation split (a model trained on runs 0–1 of the corpus, judged on runs 2–3;
//! docs/studio.md, "Evaluation"): there no benign life had more than one spike, so three leave a
//! margin.
//!
//! Studio runs this for every traced program; `cargo xtask studio eval` runs the same code on
//! the recorded corpus.

use crate::adapt::{self, Instance, Verdict};
use crate::model::Quantised;
use crate::window::Window;
use alloc::collections::VecDeque;

/// The detector's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Windows in the frame (at least 1).
    pub frame: usize,
    /// The per-instance adaptation of the frame score.
    pub adapt: adapt::Config,
    /// A window scoring at least this (not accepted) is part of a spike.
    pub spike: f32,
    /// Spikes within [`Config::horizon`] windows that make a run anomalous (0: no such trigger).
    pub spikes: usize,
    /// Windows the spikes are counted over.
    pub horizon: u64,
}

impl Config {
    /// Studio's settings. The spike count (4) and the frame (32) are what `cargo xtask studio
    /// validate` chose: detection and false alarms on the validation runs (docs/studio.md).
    pub const DEFAULT: Config = Config {
        // Longer than the warm-up: a program hostile from its start, but moderately (a slow
        // probe, a few hostile steps among ordinary traffic), does not teach the warm-up
        // its frame scores (docs/studio.md, "The detector").
        frame: 32,
        // Programs are short (tens to thousands of events): the warm-up is 16 windows, and
        // `max` bounds both the threshold and what warm-up may learn.
        adapt: adapt::Config { warmup: 16, base: 0.5, max: 0.8, k_sigma: 3.0, capacity: 1024 },
        spike: 0.95,
        spikes: 4,
        horizon: 512,
    };
}

impl Default for Config {
    fn default() -> Config {
        Config::DEFAULT
    }
}

/// What the detector made of one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judged {
    /// The model's score of this window alone, in [0, 1].
    pub window: f32,
    /// The frame score and the instance's verdict on it; anomalous too when the spikes are
    /// enough (then `spikes` is `Some`).
    pub verdict: Verdict,
    /// How many spikes started within the horizon, when they made the window anomalous.
    pub spikes: Option<usize>,
}

/// One program instance's detector.
#[derive(Clone, Debug)]
pub struct Detector {
    frame: VecDeque<f32>,
    size: usize,
    sum: f32,
    instance: Instance,
    config: Config,
    /// Windows judged.
    judged: u64,
    /// Whether the last window was part of a spike.
    in_spike: bool,
    /// The window numbers where the spikes within the horizon started.
    spike_starts: VecDeque<u64>,
}

impl Detector {
    pub fn new(config: Config) -> Detector {
        let size = config.frame.max(1);
        Detector {
            frame: core::iter::repeat_n(0.0, size).collect(),
            size,
            sum: 0.0,
            instance: Instance::new(config.adapt),
            config,
            judged: 0,
            in_spike: false,
            spike_starts: VecDeque::new(),
        }
    }

    /// The detector's settings.
    pub fn config(&self) -> Config {
        self.config
    }

    /// The instance's adaptation state.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Judge a window the model scored `raw` (hash [`Window::hash`]).
    pub fn judge(&mut self, hash: u64, raw: f32) -> Judged {
        let raw = if raw.is_nan() { 1.0 } else { raw.clamp(0.0, 1.0) };
        let counted = if self.instance.is_accepted(hash) { 0.0 } else { raw };
        self.frame.push_back(counted);
        // The sum is recomputed rather than kept running: no drift over a long life.
        while self.frame.len() > self.size {
            self.frame.pop_front();
        }
        self.sum = self.frame.iter().sum();
        // Warm-up accepts a window by its own score, not by the frame's mean (diluted by the
        // zeros a frame starts with).
        let mut verdict = self.instance.observe_window(hash, self.sum / self.size as f32, raw);
        // Spikes: runs of sure windows, counted over the horizon.
        let high = counted >= self.config.spike;
        if high && !self.in_spike {
            self.spike_starts.push_back(self.judged);
        }
        self.in_spike = high;
        while self.spike_starts.front().is_some_and(|&s| self.judged - s >= self.config.horizon) {
            self.spike_starts.pop_front();
        }
        self.judged += 1;
        let n = self.spike_starts.len();
        // Only the sure windows themselves are anomalous by the count: the spikes are one piece
        // of evidence each time, not a state that makes every later window anomalous (the ladder
        // climbs on anomalous windows in a row).
        let spikes = (high && self.config.spikes > 0 && n >= self.config.spikes && !verdict.anomalous).then_some(n);
        if spikes.is_some() {
            verdict.anomalous = true;
        }
        Judged { window: raw, verdict, spikes }
    }

    /// Score `w` with the model (its fixed-point pass, as Studio runs it) and judge it.
    pub fn push(&mut self, model: &Quantised, w: &Window) -> Judged {
        self.judge(w.hash(), model.score(&w.tokens))
    }

    /// A human accepted this window (`studio allow`): it scores 0 from now on.
    pub fn allow(&mut self, hash: u64) {
        self.instance.allow(hash);
    }

    /// A human accepted the run's behaviour (`studio allow`) or let it go on (`studio resume`):
    /// the spikes counted so far are forgotten (the first of them were never flagged, so
    /// accepting the flagged windows alone would leave them to alarm again at the next spike).
    pub fn forgive(&mut self) {
        self.spike_starts.clear();
        self.in_spike = false;
    }

    /// Records were dropped: the frame starts again from zeros (no score spans a gap), and the
    /// next sure window starts a new spike (the spikes counted so far stay).
    pub fn gap(&mut self) {
        self.frame.iter_mut().for_each(|s| *s = 0.0);
        self.sum = 0.0;
        self.in_spike = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::Stage;

    fn quick() -> Config {
        Config {
            frame: 4,
            adapt: adapt::Config { warmup: 4, base: 0.5, max: 0.8, k_sigma: 3.0, capacity: 64 },
            ..Config::default()
        }
    }

    #[test]
    fn one_odd_window_is_not_an_alarm_a_run_of_them_is() {
        let mut d = Detector::new(quick());
        for h in 0..4 {
            let j = d.judge(h, 0.1);
            assert!(!j.verdict.anomalous);
            assert_eq!(j.verdict.stage, Stage::WarmingUp);
        }
        assert_eq!(d.instance().threshold(), 0.5, "a quiet warm-up keeps the base");
        // One window at 1.0: the frame mean is (0.1·3 + 1)/4 = 0.325.
        let j = d.judge(100, 1.0);
        assert!(!j.verdict.anomalous, "{j:?}");
        assert_eq!(j.window, 1.0);
        // Three in a row: (0.1 + 3)/4 = 0.775 > 0.5.
        d.judge(101, 1.0);
        let j = d.judge(102, 1.0);
        assert!(j.verdict.anomalous, "{j:?}");
        assert!((j.verdict.score - 0.775).abs() < 1e-6);
    }

    #[test]
    fn accepted_windows_count_zero_and_gaps_clear_the_frame() {
        let mut d = Detector::new(quick());
        for h in 0..4 {
            d.judge(h, 0.2);
        }
        // Windows seen in warm-up are accepted: however the model scores them now, they count 0.
        for _ in 0..8 {
            assert_eq!(d.judge(1, 1.0).verdict.score, 0.0);
        }
        d.judge(200, 1.0);
        d.judge(201, 1.0);
        d.judge(202, 1.0);
        assert!(d.judge(203, 1.0).verdict.anomalous);
        d.gap();
        assert!(!d.judge(204, 1.0).verdict.anomalous, "after a gap the frame starts from zeros");
        // A human allowed 205: it no longer counts.
        d.allow(205);
        assert_eq!(d.judge(205, 1.0).verdict.score, 0.0);
    }

    #[test]
    fn a_program_hostile_from_its_start_is_not_learned() {
        let mut d = Detector::new(quick());
        let mut alarms = 0;
        for h in 0..20 {
            alarms += d.judge(h, 0.95).verdict.anomalous as u32;
        }
        // Its frame climbs past max (0.8) at the fourth window, is not learned from then on,
        // and alarms.
        assert!(alarms >= 16, "{alarms}");
        assert_eq!(d.instance().stage(), Stage::WarmingUp, "it never finished warming up");
    }

    /// A flood or a scan repeats one window: a program doing it from its first syscall must not
    /// have that window accepted in its warm-up because the frame (starting full of zeros)
    /// dilutes the window's own score below `max`.
    #[test]
    fn a_program_repeating_one_hostile_window_from_its_start_alarms() {
        let mut d = Detector::new(Config::default());
        let alarms = (0..200).filter(|_| d.judge(0xf100d, 1.0).verdict.anomalous).count();
        assert!(!d.instance().is_accepted(0xf100d), "a window scoring 1.0 was accepted in warm-up");
        assert!(alarms > 150, "{alarms} alarms in 200 windows scoring 1.0");
    }

    /// A slow hostile program is hostile from its start but never loudly: its windows score
    /// about 0.65, under `max`, so warm-up accepts them. A frame as long as the warm-up or
    /// longer (32 windows, starting from zeros) keeps the warm-up's frame scores low, so the
    /// threshold stays near its base and the sustained 0.65 alarms once the frame fills; with
    /// a frame of 8 the warm-up would learn 0.65 as normal and raise the threshold over it.
    #[test]
    fn a_program_moderately_hostile_from_its_start_alarms_once_the_frame_fills() {
        let run = |frame: usize| {
            let mut d = Detector::new(Config { frame, ..Config::default() });
            (0..200u64).filter(|&h| d.judge(h, 0.65).verdict.anomalous).count()
        };
        assert_eq!(Config::default().frame, 32);
        assert!(run(32) > 150, "{}", run(32));
        assert_eq!(run(8), 0, "the short frame's warm-up learns it");
    }

    /// The spike trigger with a count of three (the mechanism; Studio's count is chosen by
    /// `cargo xtask studio validate`, docs/studio.md).
    const THREE: Config = Config { spikes: 3, ..Config::DEFAULT };

    /// A mimic: a sure window pair every 60 windows among windows scoring 0.1. The frame never
    /// rises past its threshold; the third spike within the horizon is an alarm, says so, and
    /// spikes older than the horizon no longer count. An accepted window is no spike.
    #[test]
    fn rare_sure_windows_alarm_once_there_are_enough_within_the_horizon() {
        let mut d = Detector::new(THREE);
        let mut first = None;
        for n in 0..400u64 {
            let spike = n % 60 == 30 || n % 60 == 31;
            let j = d.judge(n, if spike { 0.99 } else { 0.1 });
            if j.verdict.anomalous && first.is_none() {
                first = Some((n, j.spikes));
            }
            assert!(j.verdict.score < j.verdict.threshold, "the frame alone never alarms: {j:?}");
        }
        assert_eq!(first, Some((150, Some(3))), "the third spike (windows 150, 151) alarms");
        // Quiet for longer than the horizon: the old spikes fall out, one new one alarms no more.
        let mut d = Detector::new(THREE);
        for n in 0..3u64 {
            d.judge(n, 0.99);
            d.judge(100 + n, 0.1);
        }
        // Only the sure windows are anomalous by the count, not the ordinary ones after them.
        assert!(!d.judge(1000, 0.1).verdict.anomalous, "three spikes do not make every later window anomalous");
        assert!(d.judge(1001, 0.99).verdict.anomalous, "a fourth within the horizon is");
        for n in 0..600u64 {
            d.judge(2000 + n, 0.1);
        }
        assert!(!d.judge(5000, 0.99).verdict.anomalous, "one spike after the horizon is no alarm");
        // Windows a human accepted are no spikes; `spikes: 0` turns the trigger off.
        let mut d = Detector::new(THREE);
        for n in 0..20u64 {
            d.judge(n, 0.1);
        }
        d.allow(77);
        for _ in 0..5 {
            assert!(!d.judge(77, 0.99).verdict.anomalous);
            d.judge(1, 0.1);
        }
        let mut d = Detector::new(Config { spikes: 0, ..Config::default() });
        assert!((0..40u64).all(|n| !d.judge(n, if n % 2 == 0 { 0.99 } else { 0.0 }).verdict.anomalous));
    }

    #[test]
    fn bad_scores_are_read_safely() {
        let mut d = Detector::new(Config { frame: 0, ..quick() });
        assert_eq!(d.judge(1, f32::NAN).window, 1.0);
        assert_eq!(d.judge(2, -5.0).window, 0.0);
        assert_eq!(d.judge(3, 7.0).window, 1.0);
    }
}
