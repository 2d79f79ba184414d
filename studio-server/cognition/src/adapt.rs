//! Per-instance adaptation: every running program gets a threshold of its own, and remembers
//! the windows it has been seen (or allowed) to produce.
//!
//! A model trained on other programs' traces scores a new, benign program higher than the
//! programs it knows: one global threshold would alarm on it forever. So each [`Instance`]:
//!
//! - **Warms up** for its first [`Config::warmup`] windows: it collects their scores (mean and
//!   variance, Welford) and puts their hashes into its set of *accepted* windows. Then its
//!   threshold becomes `mean + k·std` of the warm-up scores, **clamped to
//!   [`base`, `max`]** ([`Config::base`], [`Config::max`]): a noisy program cannot raise it past
//!   `max`, a quiet one cannot lower it below `base`. Until then the threshold is `max`. With
//!   no warm-up (`warmup` 0) it is `base` from the start.
//! - **Accepts** windows: a window whose hash is in the set scores as normal (0) whatever the
//!   detector says. Warm-up windows go in, and so do windows a human allowed ([`Instance::allow`],
//!   after an alarm). The set is bounded ([`Config::capacity`]); when full, the oldest entry
//!   goes (first in, first out), so warm-up windows can be pushed out by many allows.
//!
//! What warm-up trusts: a program hostile from its first window teaches its instance that its
//! behaviour is normal, as the shaper's learning window does for its profile. Two things limit
//! that: a warm-up window scoring above `max` is **not** learned or accepted and alarms as it
//! would later (nor does it count towards the warm-up: a program all of whose windows score
//! above `max` stays warming up, alarming at `max`), and the threshold never exceeds `max`. Windows after the warm-up that the
//! warm-up never saw and that score above the threshold alarm.
//!
//! Scores are taken in [0, 1] (the model's sigmoid, stide's LFC rate); anything else is clamped
//! into it, and a NaN is read as 1 (the most anomalous).

use alloc::collections::{BTreeSet, VecDeque};

/// Adaptation settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Warm-up length, in windows.
    pub warmup: u32,
    /// The lowest threshold (and the model's threshold for programs like those it trained on).
    pub base: f32,
    /// The highest threshold; also the threshold during warm-up.
    pub max: f32,
    /// `k` in `mean + k·std`.
    pub k_sigma: f32,
    /// Most accepted windows kept.
    pub capacity: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { warmup: 64, base: 0.5, max: 0.9, k_sigma: 3.0, capacity: 1024 }
    }
}

impl Config {
    /// The settings made usable whatever they were: `base` and `max` in [0, 1] (a NaN is 1),
    /// `max >= base`, `k_sigma` finite (a NaN is 0).
    pub fn sanitised(self) -> Config {
        let base = unit(self.base);
        let max = unit(self.max).max(base);
        let k_sigma = if self.k_sigma.is_finite() { self.k_sigma } else { 0.0 };
        Config { base, max, k_sigma, ..self }
    }
}

/// A score clamped into [0, 1], a NaN read as 1.
fn unit(x: f32) -> f32 {
    if x.is_nan() { 1.0 } else { x.clamp(0.0, 1.0) }
}

/// Where an instance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    WarmingUp,
    Watching,
}

/// What an instance made of one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The detector's score, clamped into [0, 1].
    pub raw: f32,
    /// The score that counts: 0 for an accepted window, else `raw`.
    pub score: f32,
    /// The threshold it was compared with.
    pub threshold: f32,
    /// `score > threshold`.
    pub anomalous: bool,
    /// The window was in the accepted set.
    pub known: bool,
    /// The stage the instance was in when it saw the window.
    pub stage: Stage,
}

/// One running program's adaptation state.
#[derive(Clone, Debug)]
pub struct Instance {
    config: Config,
    /// Warm-up windows learned.
    n: u32,
    mean: f32,
    m2: f32,
    threshold: f32,
    accepted: BTreeSet<u64>,
    /// The accepted windows in the order they went in (for eviction).
    order: VecDeque<u64>,
}

impl Instance {
    pub fn new(config: Config) -> Instance {
        let config = config.sanitised();
        Instance {
            config,
            n: 0,
            mean: 0.0,
            m2: 0.0,
            threshold: if config.warmup == 0 { config.base } else { config.max },
            accepted: BTreeSet::new(),
            order: VecDeque::new(),
        }
    }

    /// The settings in force (sanitised).
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stage(&self) -> Stage {
        if self.n < self.config.warmup { Stage::WarmingUp } else { Stage::Watching }
    }

    /// The threshold in force, always within [`base`, `max`].
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Whether a window (by [`crate::window::Window::hash`]) is accepted.
    pub fn is_accepted(&self, hash: u64) -> bool {
        self.accepted.contains(&hash)
    }

    /// How many windows are accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.len()
    }

    /// Judge one window: its hash and the detector's score.
    pub fn observe(&mut self, hash: u64, raw: f32) -> Verdict {
        self.observe_window(hash, raw, raw)
    }

    /// [`Instance::observe`] for a detector whose score `raw` is not the window's own but, say,
    /// a mean over a frame of windows ([`crate::detect`]): in the warm-up, a window whose own
    /// score `window` is above `max` is neither learned nor accepted, whatever the frame's mean
    /// (a frame that starts full of zeros would otherwise let a program hostile from its start
    /// have its first hostile windows accepted, and a flood that repeats one window would then
    /// count 0 for ever). With `window == raw` this is [`Instance::observe`].
    pub fn observe_window(&mut self, hash: u64, raw: f32, window: f32) -> Verdict {
        let raw = unit(raw);
        let stage = self.stage();
        let known = self.accepted.contains(&hash);
        let score = if known { 0.0 } else { raw };
        let threshold = self.threshold;
        let anomalous = score > threshold;
        if stage == Stage::WarmingUp && !anomalous && (known || unit(window) <= self.config.max) {
            self.learn(raw);
            self.accept(hash);
        }
        Verdict { raw, score, threshold, anomalous, known, stage }
    }

    /// A human accepted this window: from now on it scores as normal.
    pub fn allow(&mut self, hash: u64) {
        self.accept(hash);
    }

    fn learn(&mut self, raw: f32) {
        self.n += 1;
        let d = raw - self.mean;
        self.mean += d / self.n as f32;
        self.m2 += d * (raw - self.mean);
        if self.n == self.config.warmup {
            let var = if self.n > 1 { self.m2 / (self.n - 1) as f32 } else { 0.0 };
            let t = self.mean + self.config.k_sigma * libm::sqrtf(var.max(0.0));
            // max/min rather than clamp: never panics, and a NaN falls to `base`.
            self.threshold = t.max(self.config.base).min(self.config.max);
        }
    }

    fn accept(&mut self, hash: u64) {
        if self.config.capacity == 0 || !self.accepted.insert(hash) {
            return;
        }
        self.order.push_back(hash);
        while self.order.len() > self.config.capacity {
            if let Some(old) = self.order.pop_front() {
                self.accepted.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// A benign program the model never saw: its windows score 0.6 to 0.7 (above the base
    /// threshold 0.5). Window `i` of its repertoire has hash `i`.
    fn benign(rng: &mut Rng, repertoire: u64) -> (u64, f32) {
        (rng.below(repertoire), 0.6 + 0.1 * rng.unit())
    }

    #[test]
    fn a_benign_program_unseen_in_training_stops_alarming_after_warm_up() {
        let config = Config::default();
        let mut rng = Rng::new(1);
        let mut i = Instance::new(config);
        let mut static_alarms = 0;
        for _ in 0..config.warmup {
            let (h, s) = benign(&mut rng, 40);
            static_alarms += (s > config.base) as u32;
            let v = i.observe(h, s);
            assert!(!v.anomalous && v.stage == Stage::WarmingUp);
        }
        assert_eq!(static_alarms, config.warmup, "the base threshold alone would alarm on every window");
        assert_eq!(i.stage(), Stage::Watching);
        assert!(i.threshold() > 0.7 && i.threshold() <= config.max, "threshold {}", i.threshold());
        // Windows seen in warm-up, and new windows of the same kind, no longer alarm.
        let mut known = 0;
        for _ in 0..1000 {
            let (h, s) = benign(&mut rng, 200);
            let v = i.observe(h, s);
            assert!(!v.anomalous, "{v:?}");
            known += v.known as u32;
        }
        assert!(known > 50 && known < 500, "{known} known windows");
    }

    #[test]
    fn a_hostile_burst_after_warm_up_still_alarms() {
        let mut rng = Rng::new(2);
        let mut i = Instance::new(Config::default());
        for _ in 0..64 {
            let (h, s) = benign(&mut rng, 40);
            i.observe(h, s);
        }
        let alarms = (0..20).filter(|k| i.observe(1000 + k, 0.8 + 0.01 * *k as f32).anomalous).count();
        assert_eq!(alarms, 20);
        // A noisy warm-up (scores all over) raises the threshold only to max.
        let mut noisy = Instance::new(Config::default());
        for k in 0..64 {
            noisy.observe(k, if k % 2 == 0 { 0.1 } else { 0.89 });
        }
        assert_eq!(noisy.threshold(), 0.9);
        assert!(noisy.observe(5000, 0.95).anomalous);
        // A quiet warm-up leaves it at base.
        let mut quiet = Instance::new(Config::default());
        for k in 0..64 {
            quiet.observe(k, 0.01);
        }
        assert_eq!(quiet.threshold(), 0.5);
        assert!(quiet.observe(5000, 0.6).anomalous);
    }

    #[test]
    fn warm_up_does_not_learn_what_scores_above_max() {
        let mut i = Instance::new(Config { warmup: 10, ..Config::default() });
        let v = i.observe(7, 0.99);
        assert!(v.anomalous && v.stage == Stage::WarmingUp);
        assert!(!i.is_accepted(7));
        assert_eq!(i.stage(), Stage::WarmingUp, "not counted towards warm-up");
        assert!(i.observe(7, 0.99).anomalous, "still anomalous the second time");
    }

    #[test]
    fn allow_accepts_a_window_and_the_set_is_bounded() {
        let mut i = Instance::new(Config { warmup: 0, capacity: 2, ..Config::default() });
        assert_eq!(i.stage(), Stage::Watching);
        assert!(i.observe(1, 0.95).anomalous);
        i.allow(1);
        let v = i.observe(1, 0.95);
        assert!(!v.anomalous && v.known && v.score == 0.0 && v.raw == 0.95);
        i.allow(2);
        i.allow(2); // no duplicate entry
        assert_eq!(i.accepted(), 2);
        i.allow(3);
        assert_eq!(i.accepted(), 2);
        assert!(!i.is_accepted(1), "the oldest went");
        assert!(i.is_accepted(2) && i.is_accepted(3));
        assert!(i.observe(1, 0.95).anomalous);
    }

    #[test]
    fn the_threshold_never_leaves_its_bounds() {
        let mut rng = Rng::new(3);
        let odd = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 2.0, 0.0, 1.0];
        for round in 0..300 {
            let pick = |rng: &mut Rng| if rng.below(8) == 0 { odd[rng.below(7) as usize] } else { rng.unit() };
            let config = Config {
                warmup: rng.below(50) as u32,
                base: pick(&mut rng),
                max: pick(&mut rng),
                k_sigma: if round % 10 == 0 { f32::NAN } else { rng.unit() * 10.0 - 2.0 },
                capacity: rng.below(40) as usize,
            };
            let mut i = Instance::new(config);
            let c = *i.config();
            assert!((0.0..=1.0).contains(&c.base) && c.base <= c.max && c.max <= 1.0, "{config:?} -> {c:?}");
            for _ in 0..200 {
                let h = rng.below(30);
                let v = i.observe(h, pick(&mut rng));
                assert!((0.0..=1.0).contains(&v.raw) && (0.0..=1.0).contains(&v.score));
                for t in [v.threshold, i.threshold()] {
                    assert!(t >= c.base && t <= c.max, "threshold {t} outside [{}, {}]", c.base, c.max);
                }
                if rng.below(10) == 0 {
                    i.allow(rng.below(30));
                }
                assert!(i.accepted() <= c.capacity);
            }
        }
    }
}
