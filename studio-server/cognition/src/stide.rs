//! stide: the classical baseline (Forrest, Hofmeyr, Somayaji and Longstaff, "A sense of self for
//! Unix processes", 1996; Warrender, Forrest and Pearlmutter, 1999, for the locality frame).
//!
//! One [`Stide`] per program. Training slides a window of `k` tokens ([`Config::k`], 6 by
//! default) over the program's normal traces and stores every sequence seen. Scoring slides the
//! same window over a new stream: a sequence not in the database is a *mismatch*. Single
//! mismatches happen in normal runs too, so the signal is their density: the **locality frame
//! count** (LFC) is the number of mismatches among the last [`Config::frame`] sequences (20), and
//! the stream is anomalous while the LFC exceeds [`Config::threshold`].
//!
//! The database holds 64-bit hashes of the sequences (see `hash_tokens` in the crate root), not
//! the sequences: 8 bytes each. It is **bounded** by [`Config::capacity`]: once full, training
//! stores no new sequence and counts it in [`Stide::missed`] instead. A sequence that did not fit
//! then scores as a mismatch, so a full database errs towards alarms (a false positive a human
//! can see), never towards accepting behaviour it did not learn. `missed() > 0` says the
//! capacity was too small for the program.

use crate::token::Token;
use alloc::collections::{BTreeSet, VecDeque};

/// stide's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Sequence length (at least 1).
    pub k: usize,
    /// Locality frame: how many of the last sequences the count covers (at least 1).
    pub frame: usize,
    /// Anomalous while more than this many of the frame's sequences mismatch.
    pub threshold: usize,
    /// Most sequences the database holds.
    pub capacity: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config { k: 6, frame: 20, threshold: 4, capacity: 8192 }
    }
}

/// One program's database of normal sequences.
#[derive(Clone, Debug)]
pub struct Stide {
    config: Config,
    db: BTreeSet<u64>,
    missed: u64,
}

/// What scoring one more sequence gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Score {
    /// The sequence ending with this token is not in the database.
    pub mismatch: bool,
    /// Mismatches among the last [`Config::frame`] sequences (this one included).
    pub lfc: usize,
    /// `lfc > threshold`.
    pub anomalous: bool,
}

impl Score {
    /// The LFC as a fraction of the frame, in [0, 1]: a score comparable to the model's.
    pub fn rate(&self, config: &Config) -> f32 {
        self.lfc as f32 / config.frame.max(1) as f32
    }
}

/// The summary of a scored stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Sequences scored.
    pub sequences: usize,
    /// Of which mismatched.
    pub mismatches: usize,
    /// The largest LFC reached.
    pub max_lfc: usize,
    /// The index (in the stream) of the token that first made the stream anomalous.
    pub first_anomaly: Option<usize>,
    /// Sequences scored while anomalous.
    pub anomalous: usize,
}

impl Stide {
    /// An empty database (`k` and `frame` are raised to 1 if given 0).
    pub fn new(config: Config) -> Stide {
        let config = Config { k: config.k.max(1), frame: config.frame.max(1), ..config };
        Stide { config, db: BTreeSet::new(), missed: 0 }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Judge with another LFC threshold (the database stays: it depends on `k` only).
    pub fn set_threshold(&mut self, threshold: usize) {
        self.config.threshold = threshold;
    }

    /// Sequences stored.
    pub fn len(&self) -> usize {
        self.db.len()
    }

    pub fn is_empty(&self) -> bool {
        self.db.is_empty()
    }

    /// New sequences training could not store because the database was full.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Learn one normal trace (sequences do not span two calls). Returns how many new sequences
    /// were stored.
    pub fn train(&mut self, trace: &[Token]) -> usize {
        let mut added = 0;
        for seq in trace.windows(self.config.k) {
            let h = crate::hash_tokens(seq);
            if self.db.contains(&h) {
                continue;
            }
            if self.db.len() >= self.config.capacity {
                self.missed += 1;
            } else {
                self.db.insert(h);
                added += 1;
            }
        }
        added
    }

    /// Whether `seq` (of length `k`) is a normal sequence.
    pub fn contains(&self, seq: &[Token]) -> bool {
        seq.len() == self.config.k && self.db.contains(&crate::hash_tokens(seq))
    }

    /// A scorer for a new stream of this program.
    pub fn scorer(&self) -> Scorer {
        Scorer {
            recent: VecDeque::with_capacity(self.config.k),
            frame: VecDeque::with_capacity(self.config.frame),
            lfc: 0,
        }
    }

    /// Score a whole stream.
    pub fn score_stream(&self, stream: &[Token]) -> Report {
        let mut scorer = self.scorer();
        let mut r = Report::default();
        for (i, &t) in stream.iter().enumerate() {
            let Some(s) = scorer.push(self, t) else { continue };
            r.sequences += 1;
            r.mismatches += s.mismatch as usize;
            r.max_lfc = r.max_lfc.max(s.lfc);
            if s.anomalous {
                r.anomalous += 1;
                r.first_anomaly.get_or_insert(i);
            }
        }
        r
    }
}

/// The state of scoring one stream: the last `k` tokens and the locality frame.
#[derive(Clone, Debug)]
pub struct Scorer {
    recent: VecDeque<Token>,
    frame: VecDeque<bool>,
    lfc: usize,
}

impl Scorer {
    /// Take the next token; once `k` tokens have been seen, the score of the sequence it ends.
    /// `stide` must be the database the scorer was made from (its `k` and `frame`).
    pub fn push(&mut self, stide: &Stide, t: Token) -> Option<Score> {
        let c = &stide.config;
        if self.recent.len() == c.k {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
        if self.recent.len() < c.k {
            return None;
        }
        let mismatch = !stide.db.contains(&crate::hash_tokens(self.recent.make_contiguous()));
        if self.frame.len() == c.frame && self.frame.pop_front() == Some(true) {
            self.lfc -= 1;
        }
        self.frame.push_back(mismatch);
        self.lfc += mismatch as usize;
        Some(Score { mismatch, lfc: self.lfc, anomalous: self.lfc > c.threshold })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A program's normal loop: a request cycle with a little variation.
    fn normal(n: usize) -> Vec<Token> {
        let cycle = [10, 11, 12, 13, 11, 14];
        (0..n).map(|i| if i % 37 == 36 { 15 } else { cycle[i % cycle.len()] }).collect()
    }

    #[test]
    fn normal_traces_score_clean_and_each_sequence_is_stored_once() {
        let mut s = Stide::new(Config::default());
        let trace = normal(500);
        let added = s.train(&trace);
        assert!(added > 0);
        assert_eq!(added, s.len());
        assert_eq!(s.train(&trace), 0, "nothing new the second time");
        let r = s.score_stream(&normal(300));
        assert_eq!(r.sequences, 300 - 5);
        assert_eq!((r.mismatches, r.max_lfc, r.first_anomaly), (0, 0, None));
        assert!(s.contains(&trace[..6]));
        assert!(!s.contains(&trace[..5]), "wrong length");
    }

    #[test]
    fn a_foreign_burst_is_anomalous_and_found_where_it_starts() {
        let mut s = Stide::new(Config::default());
        s.train(&normal(500));
        let mut stream = normal(120);
        let burst_at = stream.len();
        stream.extend([40, 41, 40, 42, 43, 40, 41, 44, 45, 46, 40, 47]);
        stream.extend(normal(60));
        let r = s.score_stream(&stream);
        let first = r.first_anomaly.expect("the burst is anomalous");
        // The threshold is 4: the 5th mismatch raises it, within the burst.
        assert!(first >= burst_at + 4 && first < burst_at + 12, "first anomaly at {first}");
        assert!(r.max_lfc > 10);
        // The stream returns to normal once the burst leaves the frame.
        let mut scorer = s.scorer();
        let last = stream.iter().filter_map(|&t| scorer.push(&s, t)).last().unwrap();
        assert_eq!((last.lfc, last.anomalous), (0, false));
    }

    #[test]
    fn one_odd_token_makes_k_mismatches() {
        let mut s = Stide::new(Config::default());
        s.train(&normal(500));
        let mut stream = normal(400);
        // One odd token every 40: each is in k = 6 sequences, so 6 mismatches in a row, and no
        // frame of 20 sees two of them. Anomalous at threshold 4, not at 6.
        for i in (20..400).step_by(40) {
            stream[i] = 99;
        }
        let r = s.score_stream(&stream);
        assert_eq!(r.mismatches, 6 * 10);
        assert_eq!(r.max_lfc, 6);
        let lenient = Stide { config: Config { threshold: 6, ..Config::default() }, ..s.clone() };
        assert_eq!(lenient.score_stream(&stream).first_anomaly, None);
        assert!(s.score_stream(&stream).first_anomaly.is_some(), "but 6 > 4");
    }

    #[test]
    fn the_database_is_bounded_and_a_full_one_errs_towards_alarms() {
        let config = Config { capacity: 10, ..Config::default() };
        let mut s = Stide::new(config);
        let trace: Vec<Token> = (0..200).collect();
        let added = s.train(&trace);
        assert_eq!((added, s.len()), (10, 10));
        assert_eq!(s.missed(), (200 - 5 - 10) as u64);
        // What did not fit is a mismatch, and enough of them are an anomaly.
        let r = s.score_stream(&trace);
        assert_eq!(r.mismatches, 200 - 5 - 10);
        assert!(r.first_anomaly.is_some());
    }

    #[test]
    fn lfc_counts_only_the_frame() {
        let config = Config { k: 1, frame: 4, threshold: 2, capacity: 100 };
        let mut s = Stide::new(config);
        s.train(&[1]);
        let mut scorer = s.scorer();
        let lfcs: Vec<(usize, bool)> = [2, 2, 2, 1, 1, 1, 1, 2]
            .iter()
            .map(|&t| scorer.push(&s, t).map(|x| (x.lfc, x.anomalous)).unwrap())
            .collect();
        assert_eq!(
            lfcs,
            [(1, false), (2, false), (3, true), (3, true), (2, false), (1, false), (0, false), (1, false)]
        );
        let rate = scorer.push(&s, 2).unwrap().rate(&config);
        assert_eq!(rate, 0.5);
    }
}
