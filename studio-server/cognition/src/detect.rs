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
}

impl Default for Config {
    fn default() -> Config {
        Config {
            // Longer than the warm-up: a program hostile from its start, but moderately (a slow
            // probe, a few hostile steps among ordinary traffic), does not teach the warm-up
            // its frame scores (docs/studio.md, "The detector").
            frame: 32,
            // Programs are short (tens to thousands of events): the warm-up is 16 windows, and
            // `max` bounds both the threshold and what warm-up may learn.
            adapt: adapt::Config { warmup: 16, base: 0.5, max: 0.8, k_sigma: 3.0, capacity: 1024 },
        }
    }
}

/// What the detector made of one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Judged {
    /// The model's score of this window alone, in [0, 1].
    pub window: f32,
    /// The frame score and the instance's verdict on it.
    pub verdict: Verdict,
}

/// One program instance's detector.
#[derive(Clone, Debug)]
pub struct Detector {
    frame: VecDeque<f32>,
    size: usize,
    sum: f32,
    instance: Instance,
}

impl Detector {
    pub fn new(config: Config) -> Detector {
        let size = config.frame.max(1);
        Detector {
            frame: core::iter::repeat_n(0.0, size).collect(),
            size,
            sum: 0.0,
            instance: Instance::new(config.adapt),
        }
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
        let verdict = self.instance.observe_window(hash, self.sum / self.size as f32, raw);
        Judged { window: raw, verdict }
    }

    /// Score `w` with the model (its fixed-point pass, as Studio runs it) and judge it.
    pub fn push(&mut self, model: &Quantised, w: &Window) -> Judged {
        self.judge(w.hash(), model.score(&w.tokens))
    }

    /// A human accepted this window (`studio allow`): it scores 0 from now on.
    pub fn allow(&mut self, hash: u64) {
        self.instance.allow(hash);
    }

    /// Records were dropped: the frame starts again from zeros (no score spans a gap).
    pub fn gap(&mut self) {
        self.frame.iter_mut().for_each(|s| *s = 0.0);
        self.sum = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapt::Stage;

    fn quick() -> Config {
        Config { frame: 4, adapt: adapt::Config { warmup: 4, base: 0.5, max: 0.8, k_sigma: 3.0, capacity: 64 } }
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

    #[test]
    fn bad_scores_are_read_safely() {
        let mut d = Detector::new(Config { frame: 0, ..quick() });
        assert_eq!(d.judge(1, f32::NAN).window, 1.0);
        assert_eq!(d.judge(2, -5.0).window, 0.0);
        assert_eq!(d.judge(3, 7.0).window, 1.0);
    }
}
