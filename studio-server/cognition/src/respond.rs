//! The graded-response ladder, as a pure state machine: what Studio should do about one program
//! given its windows' verdicts ([`crate::adapt::Verdict`]).
//!
//! The levels, in order: [`Level::Normal`] (nothing), **Alert** (log the decision and its
//! reasons), **Throttle** (lower the program's priority / rate), **Revoke** (take back the
//! capabilities it was granted beyond its description), **Suspend** (stop its threads, wait for
//! a human), **Kill**. Studio carries them out; this module only decides.
//!
//! Rules:
//!
//! - The ladder climbs **one level at a time**: `steps[l]` ([`Config::steps`]) consecutive
//!   anomalous windows at level `l` raise it to `l + 1` (a step of 0 counts as 1). A normal
//!   window resets the count but not the level. One window raises at most one level.
//! - It **never goes down by itself**. Only a human does: [`Responder::allow`] (the behaviour is
//!   fine: back to Normal, from any level but Kill) and [`Responder::resume`] (let a suspended
//!   program run again: Suspend back to Revoke — what it lost stays revoked, and further
//!   anomalies suspend it again).
//! - A program left suspended for [`Config::suspend_ticks`] without an allow or a resume is
//!   killed ([`Responder::expire`]); records written before the suspension may still arrive and
//!   count as windows at Suspend, `steps[4]` of them kill too.
//! - **Kill** is final: nothing leaves it (a new run of the program gets a new responder).
//!
//! Each window gives a [`Decision`]: the level, the score and threshold it was judged by, and
//! the features that contributed most ([`crate::window::Baseline::top`]), which is what Studio
//! logs.

use crate::adapt::Verdict;
use crate::window::{Contribution, TOP};

/// The levels of the ladder, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Normal = 0,
    Alert = 1,
    Throttle = 2,
    Revoke = 3,
    Suspend = 4,
    Kill = 5,
}

impl Level {
    /// Every level, in order.
    pub const ALL: [Level; 6] =
        [Level::Normal, Level::Alert, Level::Throttle, Level::Revoke, Level::Suspend, Level::Kill];

    /// The level above (Kill is the top).
    pub const fn up(self) -> Level {
        match self {
            Level::Normal => Level::Alert,
            Level::Alert => Level::Throttle,
            Level::Throttle => Level::Revoke,
            Level::Revoke => Level::Suspend,
            Level::Suspend | Level::Kill => Level::Kill,
        }
    }

    /// The level's name in Studio's log.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Alert => "alert",
            Level::Throttle => "throttle",
            Level::Revoke => "revoke",
            Level::Suspend => "suspend",
            Level::Kill => "kill",
        }
    }
}

/// The ladder's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `steps[l]`: consecutive anomalous windows at level `l` (Normal = 0 ... Suspend = 4) that
    /// raise it one level.
    pub steps: [u32; 5],
    /// Timer ticks (100 Hz) a program may stay suspended before it is killed.
    pub suspend_ticks: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config { steps: [1, 3, 5, 8, 8], suspend_ticks: 30 * 100 }
    }
}

/// What the ladder decided at one window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// The level now.
    pub level: Level,
    /// The level rose at this window (Studio acts on a change).
    pub changed: bool,
    /// The window's score and the threshold it was compared with.
    pub score: f32,
    pub threshold: f32,
    /// The features furthest from the program's normal ones, furthest first.
    pub top_features: [Contribution; TOP],
}

/// One program's place on the ladder.
#[derive(Clone, Debug)]
pub struct Responder {
    config: Config,
    level: Level,
    /// Consecutive anomalous windows at this level.
    streak: u32,
    /// When the program was suspended (the tick given with the window that suspended it).
    suspended_at: u32,
}

impl Responder {
    pub fn new(config: Config) -> Responder {
        Responder { config, level: Level::Normal, streak: 0, suspended_at: 0 }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// Take one window's verdict, at timer tick `now`.
    pub fn observe(&mut self, verdict: &Verdict, top_features: [Contribution; TOP], now: u32) -> Decision {
        let mut changed = false;
        if self.level != Level::Kill {
            if verdict.anomalous {
                self.streak += 1;
                if self.streak >= self.config.steps[self.level as usize].max(1) {
                    self.raise(now);
                    changed = true;
                }
            } else {
                self.streak = 0;
            }
        }
        Decision { level: self.level, changed, score: verdict.score, threshold: verdict.threshold, top_features }
    }

    /// At timer tick `now`: kill a program suspended for [`Config::suspend_ticks`] or more.
    /// Returns the new level if it changed.
    pub fn expire(&mut self, now: u32) -> Option<Level> {
        if self.level == Level::Suspend && now.wrapping_sub(self.suspended_at) >= self.config.suspend_ticks {
            self.raise(now);
            return Some(self.level);
        }
        None
    }

    /// A human accepted the program's behaviour: back to Normal. `false` (and nothing changes)
    /// once it is killed.
    pub fn allow(&mut self) -> bool {
        if self.level == Level::Kill {
            return false;
        }
        self.level = Level::Normal;
        self.streak = 0;
        true
    }

    /// A human let a suspended program run again: back to Revoke. `false` (and nothing changes)
    /// at any other level.
    pub fn resume(&mut self) -> bool {
        if self.level != Level::Suspend {
            return false;
        }
        self.level = Level::Revoke;
        self.streak = 0;
        true
    }

    /// The kill was decided but not carried out (the description's limit stops the caller short
    /// of it, so the program still runs or is still suspended): back to Suspend, so that a human
    /// can still [`allow`](Self::allow) or [`resume`](Self::resume) it. `false` (and nothing
    /// changes) at any other level.
    /// A new run of a program whose earlier run reached `level`: it starts there (at most at
    /// Revoke: a new run is not born suspended or killed), so that ending itself is no way down
    /// the ladder. Only a human (`allow`) takes a program back to Normal.
    pub fn carried(config: Config, level: Level) -> Responder {
        Responder { config, level: level.min(Level::Revoke), streak: 0, suspended_at: 0 }
    }

    pub fn spare(&mut self) -> bool {
        if self.level != Level::Kill {
            return false;
        }
        self.level = Level::Suspend;
        self.streak = 0;
        true
    }

    fn raise(&mut self, now: u32) {
        self.level = self.level.up();
        self.streak = 0;
        if self.level == Level::Suspend {
            self.suspended_at = now;
        }
    }
}

#[cfg(test)]
mod carried_tests {
    use super::*;

    #[test]
    fn a_new_run_starts_where_the_last_one_was_but_never_suspended_or_killed() {
        assert_eq!(Responder::carried(Config::default(), Level::Throttle).level(), Level::Throttle);
        assert_eq!(Responder::carried(Config::default(), Level::Kill).level(), Level::Revoke);
        assert_eq!(Responder::carried(Config::default(), Level::Suspend).level(), Level::Revoke);
        let mut r = Responder::carried(Config::default(), Level::Normal);
        assert_eq!(r.level(), Level::Normal);
        assert!(r.allow());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::adapt::Stage;
    use crate::window::Feature;
    use alloc::vec::Vec;

    fn verdict(anomalous: bool) -> Verdict {
        let score = if anomalous { 0.95 } else { 0.2 };
        Verdict { raw: score, score, threshold: 0.7, anomalous, known: false, stage: Stage::Watching }
    }

    fn top() -> [Contribution; TOP] {
        [
            Contribution { feature: Feature::Denied, value: 0.5, z: 9.0 },
            Contribution { feature: Feature::InvalidTargets, value: 0.25, z: 5.0 },
            Contribution { feature: Feature::Calls, value: 0.1, z: -2.0 },
        ]
    }

    #[test]
    fn each_step_takes_its_count_of_consecutive_anomalies() {
        let mut r = Responder::new(Config::default());
        let mut rises = Vec::new();
        for i in 1..=40u32 {
            let d = r.observe(&verdict(true), top(), i);
            if d.changed {
                rises.push((i, d.level));
            }
        }
        // Steps 1, 3, 5, 8, 8: Alert at 1, Throttle at 4, Revoke at 9, Suspend at 17, Kill at 25.
        assert_eq!(
            rises,
            [(1, Level::Alert), (4, Level::Throttle), (9, Level::Revoke), (17, Level::Suspend), (25, Level::Kill)]
        );
    }

    #[test]
    fn a_normal_window_resets_the_count_but_not_the_level() {
        let mut r = Responder::new(Config::default());
        r.observe(&verdict(true), top(), 0);
        assert_eq!(r.level(), Level::Alert);
        for _ in 0..100 {
            r.observe(&verdict(true), top(), 0);
            r.observe(&verdict(true), top(), 0);
            r.observe(&verdict(false), top(), 0);
        }
        assert_eq!(r.level(), Level::Alert, "two in a row never make the three Throttle needs");
    }

    #[test]
    fn a_benign_stream_never_escalates() {
        let mut r = Responder::new(Config::default());
        for i in 0..10_000 {
            let d = r.observe(&verdict(false), top(), i);
            assert_eq!((d.level, d.changed), (Level::Normal, false));
        }
        assert_eq!(r.expire(u32::MAX), None);
    }

    #[test]
    fn the_ladder_never_skips_and_never_falls_by_itself() {
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            let steps = core::array::from_fn(|_| rng.below(4) as u32); // zeros included
            let mut r = Responder::new(Config { steps, suspend_ticks: rng.below(50) as u32 });
            let mut before = r.level();
            for now in 0..300u32 {
                if rng.below(7) == 0 {
                    r.expire(now);
                } else {
                    r.observe(&verdict(rng.below(3) != 0), top(), now);
                }
                let after = r.level();
                assert!(after == before || after == before.up(), "{before:?} -> {after:?} with {steps:?}");
                before = after;
            }
        }
    }

    #[test]
    fn the_decision_carries_score_threshold_and_reasons() {
        let mut r = Responder::new(Config::default());
        let d = r.observe(&verdict(true), top(), 0);
        assert_eq!((d.level, d.changed, d.score, d.threshold), (Level::Alert, true, 0.95, 0.7));
        assert_eq!(d.top_features[0].feature, Feature::Denied);
        assert_eq!(d.level.name(), "alert");
    }

    #[test]
    fn allow_and_resume_are_the_only_ways_down() {
        let climb = |to: Level| {
            let mut r = Responder::new(Config { steps: [1; 5], suspend_ticks: 100 });
            while r.level() < to {
                r.observe(&verdict(true), top(), 10);
            }
            r
        };
        for level in [Level::Alert, Level::Throttle, Level::Revoke, Level::Suspend] {
            let mut r = climb(level);
            assert_eq!(r.resume(), level == Level::Suspend);
            let mut r2 = climb(level);
            assert!(r2.allow());
            assert_eq!(r2.level(), Level::Normal);
            if level == Level::Suspend {
                assert_eq!(r.level(), Level::Revoke);
                // Anomalies after the resume suspend it again, one step later.
                r.observe(&verdict(true), top(), 20);
                assert_eq!(r.level(), Level::Suspend);
            } else {
                assert_eq!(r.level(), level, "resume only leaves Suspend");
            }
        }
        let mut dead = climb(Level::Kill);
        assert!(!dead.allow() && !dead.resume());
        // A kill not carried out can be spared: back to Suspend, where a human decides.
        let mut spared = climb(Level::Kill);
        assert!(spared.spare() && spared.level() == Level::Suspend && !spared.spare());
        assert!(spared.resume() && spared.level() == Level::Revoke);
        assert!(!climb(Level::Revoke).spare());
        let d = dead.observe(&verdict(false), top(), 0);
        assert_eq!((d.level, d.changed), (Level::Kill, false));
        assert!(!dead.observe(&verdict(true), top(), 0).changed);
    }

    #[test]
    fn a_program_left_suspended_is_killed_at_the_deadline() {
        let mut r = Responder::new(Config { steps: [1; 5], suspend_ticks: 3000 });
        let start = u32::MAX - 1000; // the deadline falls after the tick counter wraps
        for _ in 0..4 {
            r.observe(&verdict(true), top(), start);
        }
        assert_eq!(r.level(), Level::Suspend);
        assert_eq!(r.expire(start.wrapping_add(2999)), None);
        assert_eq!(r.expire(start.wrapping_add(3000)), Some(Level::Kill));
        assert_eq!(r.expire(start.wrapping_add(9000)), None, "Kill is final");
        // Expiry only concerns Suspend.
        let mut r = Responder::new(Config { steps: [1; 5], suspend_ticks: 0 });
        r.observe(&verdict(true), top(), 0);
        assert_eq!(r.expire(1_000_000), None);
        assert_eq!(r.level(), Level::Alert);
    }
}
