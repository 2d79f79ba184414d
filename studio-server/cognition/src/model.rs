//! The behaviour model's forward pass, and its weights' binary format.
//!
//! A host trainer (candle, in xtask) learns the weights; Studio only runs the forward pass
//! written out here by hand. The two must agree to 1e-5, so this is the exact definition.
//!
//! # The forward pass
//!
//! Input: a window of [`WINDOW`] tokens `t[0..W]`, oldest first. A token at or above [`VOCAB`]
//! (no [`crate::token::token`] gives one) is read as `t % VOCAB`, so no input can index out of
//! the table. All arithmetic is `f32`.
//!
//! 1. **Embedding**: `e[s][i] = E[t[s] * D + i]` for `s < W`, `i < D`. `E` is `VOCAB × D`,
//!    row-major: row `v` is token `v`'s embedding.
//! 2. **Pooling**: `mean[i] = (e[0][i] + e[1][i] + ... + e[W-1][i]) / W` (summed in window
//!    order, then divided), `max[i] = max over s of e[s][i]`. The pooled vector is their
//!    concatenation, **mean first**: `x = [mean[0], ..., mean[D-1], max[0], ..., max[D-1]]`, of
//!    length `2D`.
//! 3. **Hidden layer**: `h[j] = relu(b1[j] + sum over i < 2D of W1[j * 2D + i] * x[i])` for
//!    `j < H`, summed in `i` order. `W1` is `H × 2D`, row-major: row `j` is hidden unit `j`'s
//!    weights, i.e. candle's `Linear` layout (weight of shape `(out, in)`, `y = x Wᵀ + b`).
//! 4. **Output**: `z = b2 + sum over j < H of w2[j] * h[j]`; `w2` is candle's `Linear(H, 1)`
//!    weight of shape `(1, H)`, `b2` its bias.
//! 5. **Score**: `sigmoid(z)`, computed as `1 / (1 + exp(-z))` for `z >= 0` and
//!    `exp(z) / (1 + exp(z))` for `z < 0` (`libm::expf`), in [0, 1]; a NaN `z` (only finite
//!    weights near `f32::MAX` can overflow to one) scores 1. High means unlike the
//!    normal behaviour the model learned (the trainer labels hostile windows 1).
//!
//! # The weights file
//!
//! Little-endian throughout; [`Weights::from_bytes`] accepts exactly this and nothing else:
//!
//! | offset | bytes | field |
//! |--------|-------|-------|
//! | 0 | 4 | magic `OZCM` |
//! | 4 | 4 | version, u32 = [`VERSION`] |
//! | 8 | 4 | VOCAB, u32 |
//! | 12 | 4 | WINDOW, u32 |
//! | 16 | 4 | D, u32 |
//! | 20 | 4 | H, u32 |
//! | 24 | 4 × VOCAB × D | `E`, f32 |
//! | … | 4 × H × 2D | `W1`, f32 |
//! | … | 4 × H | `b1`, f32 |
//! | … | 4 × H | `w2`, f32 |
//! | … | 4 | `b2`, f32 |
//!
//! The dimensions must be this build's ([`VOCAB`], [`WINDOW`], [`D`], [`H`]): a file made for
//! another vocabulary or window is refused, not reinterpreted. Every weight must be finite.

use crate::token::{Token, VOCAB};
use crate::window::WINDOW;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Embedding width.
pub const D: usize = 16;
/// Hidden units.
pub const H: usize = 32;
/// The pooled vector's length (mean and max).
pub const POOLED: usize = 2 * D;

/// The file's first four bytes.
pub const MAGIC: [u8; 4] = *b"OZCM";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Header bytes (magic, version, four dimensions).
pub const HEADER: usize = 24;
/// Number of `f32` weights.
pub const PARAMS: usize = VOCAB * D + H * POOLED + H + H + 1;
/// The file's exact length.
pub const BYTES: usize = HEADER + 4 * PARAMS;

/// Why a weights file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// Fewer bytes than the header.
    TooShort { found: usize },
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// A version this build does not read.
    UnsupportedVersion(u32),
    /// A dimension differs from this build's.
    Mismatch { field: &'static str, expected: u32, found: u32 },
    /// The length is not [`BYTES`] (truncated, or bytes after the weights).
    WrongLength { expected: usize, found: usize },
    /// Weight number `index` (in file order) is a NaN or an infinity.
    NotFinite { index: usize },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FormatError::TooShort { found } => {
                write!(f, "weights: {found} bytes, shorter than the {HEADER}-byte header")
            }
            FormatError::BadMagic => write!(f, "weights: not a weights file (bad magic)"),
            FormatError::UnsupportedVersion(v) => write!(f, "weights: version {v}, this build reads {VERSION}"),
            FormatError::Mismatch { field, expected, found } => {
                write!(f, "weights: {field} is {found}, this build's is {expected}")
            }
            FormatError::WrongLength { expected, found } => {
                write!(f, "weights: {found} bytes, expected {expected}")
            }
            FormatError::NotFinite { index } => write!(f, "weights: weight {index} is not finite"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {}

/// The model's weights (the layouts are the module doc's).
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    embedding: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: f32,
}

impl Weights {
    /// All zero: every window scores exactly 0.5.
    pub fn zeroed() -> Weights {
        Weights {
            embedding: vec![0.0; VOCAB * D],
            w1: vec![0.0; H * POOLED],
            b1: vec![0.0; H],
            w2: vec![0.0; H],
            b2: 0.0,
        }
    }

    /// Small deterministic weights from a seed (uniform, scaled by 1/sqrt(fan-in)): a start for
    /// training and a model for tests, not a detector.
    pub fn seeded(seed: u64) -> Weights {
        let mut rng = crate::Rng::new(seed);
        let mut uniform =
            |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * scale).collect() };
        let embedding = uniform(VOCAB * D, 1.0);
        let w1 = uniform(H * POOLED, 1.0 / libm::sqrtf(POOLED as f32));
        let b1 = uniform(H, 0.1);
        let w2 = uniform(H, 1.0 / libm::sqrtf(H as f32));
        Weights { embedding, w1, b1, w2, b2: 0.0 }
    }

    /// `E`, `VOCAB × D` row-major.
    pub fn embedding(&self) -> &[f32] {
        &self.embedding
    }

    /// `W1`, `H × 2D` row-major.
    pub fn w1(&self) -> &[f32] {
        &self.w1
    }

    pub fn b1(&self) -> &[f32] {
        &self.b1
    }

    pub fn w2(&self) -> &[f32] {
        &self.w2
    }

    pub fn b2(&self) -> f32 {
        self.b2
    }

    /// `E`, `VOCAB × D` row-major.
    pub fn embedding_mut(&mut self) -> &mut [f32] {
        &mut self.embedding
    }

    /// `W1`, `H × 2D` row-major.
    pub fn w1_mut(&mut self) -> &mut [f32] {
        &mut self.w1
    }

    pub fn b1_mut(&mut self) -> &mut [f32] {
        &mut self.b1
    }

    pub fn w2_mut(&mut self) -> &mut [f32] {
        &mut self.w2
    }

    pub fn b2_mut(&mut self) -> &mut f32 {
        &mut self.b2
    }

    /// Every weight in file order.
    fn params(&self) -> impl Iterator<Item = f32> + '_ {
        self.embedding.iter().chain(&self.w1).chain(&self.b1).chain(&self.w2).copied().chain(Some(self.b2))
    }

    /// The weights file ([`BYTES`] long).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BYTES);
        out.extend_from_slice(&MAGIC);
        for v in [VERSION, VOCAB as u32, WINDOW as u32, D as u32, H as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for w in self.params() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Read a weights file; any input that is not exactly one is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Weights, FormatError> {
        if bytes.len() < HEADER {
            return Err(FormatError::TooShort { found: bytes.len() });
        }
        if bytes[0..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let word = |i: usize| u32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
        if word(1) != VERSION {
            return Err(FormatError::UnsupportedVersion(word(1)));
        }
        let dims = [("VOCAB", VOCAB), ("WINDOW", WINDOW), ("D", D), ("H", H)];
        for (k, (field, expected)) in dims.into_iter().enumerate() {
            if word(2 + k) != expected as u32 {
                return Err(FormatError::Mismatch { field, expected: expected as u32, found: word(2 + k) });
            }
        }
        if bytes.len() != BYTES {
            return Err(FormatError::WrongLength { expected: BYTES, found: bytes.len() });
        }
        let mut params = Vec::with_capacity(PARAMS);
        for (index, c) in bytes[HEADER..].chunks_exact(4).enumerate() {
            let w = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            if !w.is_finite() {
                return Err(FormatError::NotFinite { index });
            }
            params.push(w);
        }
        let b2 = params.pop().unwrap_or(0.0);
        let w2 = params.split_off(params.len() - H);
        let b1 = params.split_off(params.len() - H);
        let w1 = params.split_off(params.len() - H * POOLED);
        Ok(Weights { embedding: params, w1, b1, w2, b2 })
    }

    /// The pooled vector `x` of a window (step 2).
    pub fn pool(&self, tokens: &[Token; WINDOW]) -> [f32; POOLED] {
        let row = |t: Token| {
            let start = (t as usize % VOCAB) * D;
            &self.embedding[start..start + D]
        };
        let mut x = [0f32; POOLED];
        let (mean, max) = x.split_at_mut(D);
        max.copy_from_slice(row(tokens[0]));
        for &t in tokens {
            for (i, &e) in row(t).iter().enumerate() {
                mean[i] += e;
                max[i] = max[i].max(e);
            }
        }
        for m in mean.iter_mut() {
            *m /= WINDOW as f32;
        }
        x
    }

    /// The logit `z` of a window (steps 1 to 4).
    pub fn logit(&self, tokens: &[Token; WINDOW]) -> f32 {
        let x = self.pool(tokens);
        let mut z = self.b2;
        for j in 0..H {
            let mut h = self.b1[j];
            for (i, &xi) in x.iter().enumerate() {
                h += self.w1[j * POOLED + i] * xi;
            }
            z += self.w2[j] * h.max(0.0);
        }
        z
    }

    /// The score of a window, in [0, 1]: high is unlike normal.
    pub fn score(&self, tokens: &[Token; WINDOW]) -> f32 {
        sigmoid(self.logit(tokens))
    }
}

/// The forward pass in fixed point, for Studio: the bare target has no FPU (soft float), where
/// the `f32` pass costs about 183,000 instructions a window (`studio_infer` before this, in
/// docs/PERFORMANCE.md). Built from [`Weights`] when they are loaded; the file stays `f32`.
///
/// - `E` and `W1` are rounded to `i16` at a power-of-two scale each (`E·2^fe`, `W1·2^fw`, the
///   largest exponent at which the largest magnitude still fits in 15 bits);
/// - pooling is exact in integers: the sum of the window's rows (the mean times [`WINDOW`]) and
///   [`WINDOW`] times the max, so both halves of `x` share the scale `WINDOW·2^fe`;
/// - the hidden layer accumulates `W1·x` in `i64` (no overflow: 32 products of at most
///   2^15 · 2^19, and `b1` rounded to the same scale and bounded by 2^62), and applies the ReLU
///   in integers;
/// - the output layer too: `w2` rounded to `i16` at `2^f2`, `b2` to the output's scale, the
///   sum in `i128`; one conversion to floating point for the logit, then the sigmoid as in
///   [`Weights::score`].
///
/// The error against the `f32` pass comes from the roundings only: each weight of `E`, `W1` and
/// `w2` is within half a step (`2^-fe/2`, `2^-fw/2`, `2^-f2/2`) of its value. `quantised_scores_track_the_float_pass`
/// bounds the score difference on seeded weights, and `cargo xtask studio eval` reports it on
/// the trained model and the held-out windows, with the decisions that differ (none expected).
#[derive(Clone, Debug)]
pub struct Quantised {
    embedding: Vec<i16>,
    w1: Vec<i16>,
    b1: Vec<i64>,
    w2: Vec<i16>,
    b2: i128,
    /// `1 / (WINDOW · 2^(fe + fw + f2))`: from the output accumulator back to the logit.
    unscale: f64,
}

/// Windows Studio scores when it loads a model and prints the scores of: the same on every
/// machine (tokens from a fixed seed), so a test can hold the guest's fixed-point pass (soft
/// float for the last steps) against the host's.
pub fn probe_windows() -> [[Token; WINDOW]; PROBES] {
    let mut rng = crate::Rng::new(0x0520_5e1f);
    core::array::from_fn(|_| core::array::from_fn(|_| rng.below(VOCAB as u64) as Token))
}

/// How many probe windows.
pub const PROBES: usize = 4;

/// The bounds of the fixed-point biases (see [`Quantised::new`]).
const B1_LIMIT: f64 = (1u64 << 62) as f64;
const B2_LIMIT: f64 = (1u128 << 125) as f64;

/// The exponent `f` with `max · 2^f` as large as possible but at most `i16::MAX` (0 for an
/// all-zero tensor), within ±200.
fn fit_exponent(values: &[f32]) -> i32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    if max == 0.0 {
        return 0;
    }
    let mut f = 0i32;
    while f < 200 && max * libm::ldexp(1.0, f + 1) <= i16::MAX as f64 {
        f += 1;
    }
    while f > -200 && max * libm::ldexp(1.0, f) > i16::MAX as f64 {
        f -= 1;
    }
    f
}

fn quantise(values: &[f32], f: i32) -> Vec<i16> {
    let scale = libm::ldexp(1.0, f);
    values.iter().map(|&v| libm::round(v as f64 * scale).clamp(i16::MIN as f64, i16::MAX as f64) as i16).collect()
}

impl Quantised {
    pub fn new(w: &Weights) -> Quantised {
        let (mut fe, mut fw, mut f2) = (fit_exponent(&w.embedding), fit_exponent(&w.w1), fit_exponent(&w.w2));
        // Weights tiny beside their biases fit large exponents, at which a bias would leave its
        // bound (and be clamped to a sliver of its value): the scales come down until every bias
        // fits. The weights lose only bits that could not count beside such a bias; the clamps
        // below are then never reached.
        let b1_max = w.b1.iter().fold(0f64, |m, b| m.max(b.abs() as f64));
        while b1_max * WINDOW as f64 * libm::ldexp(1.0, fe + fw) > B1_LIMIT {
            if fe >= fw {
                fe -= 1;
            } else {
                fw -= 1;
            }
        }
        while w.b2.abs() as f64 * WINDOW as f64 * libm::ldexp(1.0, fe + fw + f2) > B2_LIMIT {
            f2 -= 1;
        }
        let hidden = WINDOW as f64 * libm::ldexp(1.0, fe + fw);
        let out = hidden * libm::ldexp(1.0, f2);
        Quantised {
            embedding: quantise(&w.embedding, fe),
            w1: quantise(&w.w1, fw),
            // Within ±2^62 by the scales' choice (the clamp is a second guard), so that adding
            // the products (at most 32 · 2^34) never overflows.
            b1: w.b1.iter().map(|&b| libm::round(b as f64 * hidden).clamp(-B1_LIMIT, B1_LIMIT) as i64).collect(),
            w2: quantise(&w.w2, f2),
            // Likewise ±2^125 against 32 products of at most 2^15 · 2^63.
            b2: libm::round(w.b2 as f64 * out).clamp(-B2_LIMIT, B2_LIMIT) as i128,
            unscale: 1.0 / out,
        }
    }

    /// The logit of a window (the module doc's steps, in fixed point as above).
    pub fn logit(&self, tokens: &[Token; WINDOW]) -> f32 {
        let mut x = [0i64; POOLED];
        let (sum, max) = x.split_at_mut(D);
        max.fill(i64::MIN);
        for &t in tokens {
            let start = (t as usize % VOCAB) * D;
            for (i, &e) in self.embedding[start..start + D].iter().enumerate() {
                sum[i] += e as i64;
                max[i] = max[i].max(e as i64);
            }
        }
        for m in max.iter_mut() {
            *m *= WINDOW as i64;
        }
        let mut z = self.b2;
        for (j, &w2) in self.w2.iter().enumerate() {
            let row = &self.w1[j * POOLED..(j + 1) * POOLED];
            let mut acc = self.b1[j];
            for (&w, &xi) in row.iter().zip(x.iter()) {
                acc += w as i64 * xi;
            }
            if acc > 0 {
                z += w2 as i128 * acc as i128;
            }
        }
        (z as f64 * self.unscale) as f32
    }

    /// The score of a window, in [0, 1].
    pub fn score(&self, tokens: &[Token; WINDOW]) -> f32 {
        sigmoid(self.logit(tokens))
    }
}

/// The logistic function, without overflow for large |z|. A NaN (finite weights so large that a
/// sum overflowed, `inf - inf`) is 1, the most anomalous score: a broken model errs towards
/// alarms.
pub fn sigmoid(z: f32) -> f32 {
    if z.is_nan() {
        1.0
    } else if z >= 0.0 {
        1.0 / (1.0 + libm::expf(-z))
    } else {
        let e = libm::expf(z);
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// The forward pass again, written independently (f64, explicit loops, no pooling helper).
    fn reference(w: &Weights, tokens: &[Token; WINDOW]) -> f64 {
        let mut x = [0f64; POOLED];
        for i in 0..D {
            let col = |s: usize| w.embedding[tokens[s] as usize * D + i] as f64;
            x[i] = (0..WINDOW).map(col).sum::<f64>() / WINDOW as f64;
            x[D + i] = (0..WINDOW).map(col).fold(f64::NEG_INFINITY, f64::max);
        }
        let mut z = w.b2 as f64;
        for j in 0..H {
            let h: f64 = w.b1[j] as f64 + (0..POOLED).map(|i| w.w1[j * POOLED + i] as f64 * x[i]).sum::<f64>();
            z += w.w2[j] as f64 * h.max(0.0);
        }
        1.0 / (1.0 + (-z).exp())
    }

    fn random_window(rng: &mut Rng) -> [Token; WINDOW] {
        core::array::from_fn(|_| rng.below(VOCAB as u64) as Token)
    }

    #[test]
    fn forward_pass_matches_an_independent_reference() {
        let mut rng = Rng::new(7);
        for seed in 0..4 {
            let mut w = Weights::seeded(seed);
            *w.b2_mut() = 0.3 * seed as f32 - 0.5;
            for _ in 0..200 {
                let t = random_window(&mut rng);
                let (got, want) = (w.score(&t), reference(&w, &t));
                assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
            }
        }
    }

    #[test]
    fn quantised_scores_track_the_float_pass() {
        let mut rng = Rng::new(17);
        let mut worst = 0f32;
        for seed in 0..4 {
            let mut w = Weights::seeded(seed);
            *w.b2_mut() = 0.5 - seed as f32 * 0.4;
            // Embeddings of a trained model's spread, not all in [-1, 1].
            w.embedding_mut().iter_mut().step_by(7).for_each(|e| *e *= 3.0);
            let q = Quantised::new(&w);
            for _ in 0..300 {
                let t = random_window(&mut rng);
                let (f, i) = (w.score(&t), q.score(&t));
                worst = worst.max((f - i).abs());
                assert!((w.logit(&t) - q.logit(&t)).abs() < 2e-3, "{} vs {}", w.logit(&t), q.logit(&t));
            }
        }
        assert!(worst < 5e-4, "worst score difference {worst}");
        // The zero model is exact, and a window past the vocabulary folds as in the float pass.
        let z = Quantised::new(&Weights::zeroed());
        assert_eq!(z.score(&[0; WINDOW]), 0.5);
        let w = Weights::seeded(9);
        let q = Quantised::new(&w);
        let mut t = [3 as Token; WINDOW];
        t[2] = VOCAB as Token + 3;
        assert_eq!(q.logit(&t), q.logit(&[3; WINDOW]));
    }

    #[test]
    fn quantising_extreme_weights_neither_panics_nor_leaves_the_range() {
        let mut w = Weights::seeded(4);
        w.embedding_mut()[0] = 3e38;
        w.w1_mut()[5] = -3e38;
        w.b1_mut()[2] = 3e38;
        let q = Quantised::new(&w);
        for v in 0..64 {
            let s = q.score(&[v; WINDOW]);
            assert!((0.0..=1.0).contains(&s), "{s}");
        }
        let mut tiny = Weights::zeroed();
        tiny.embedding_mut()[D] = 1e-30;
        tiny.w1_mut()[0] = 1e-30;
        let s = Quantised::new(&tiny).score(&[1; WINDOW]);
        assert!((0.0..=1.0).contains(&s));
    }

    /// Finite weights whose biases would leave the fixed-point bounds at the scales `E`, `W1` and
    /// `w2` fit to (tiny inputs, ordinary biases: a model that has collapsed onto its biases):
    /// the biases must still count at their value, not be clamped to a sliver of it.
    #[test]
    fn quantised_biases_keep_their_value_beside_tiny_weights() {
        let mut w = Weights::zeroed();
        w.embedding_mut().iter_mut().enumerate().for_each(|(k, e)| *e = 1e-9 * (k % 7) as f32);
        w.w1_mut().iter_mut().enumerate().for_each(|(k, e)| *e = -1e-9 * (k % 5) as f32);
        w.b1_mut().iter_mut().enumerate().for_each(|(j, b)| *b = 0.5 - 0.03 * j as f32);
        w.w2_mut().iter_mut().enumerate().for_each(|(j, v)| *v = if j % 2 == 0 { 1e-9 } else { 0.7 });
        *w.b2_mut() = -2.0;
        let q = Quantised::new(&w);
        for t in [[0 as Token; WINDOW], [5; WINDOW], core::array::from_fn(|i| (i * 211) as Token)] {
            let (f, i) = (w.logit(&t), q.logit(&t));
            assert!((f - i).abs() < 1e-3 * f.abs().max(1.0), "f32 logit {f}, fixed point {i}");
        }
        // And the output bias alone beside a tiny everything else.
        let mut w = Weights::zeroed();
        w.embedding_mut()[0] = 1e-30;
        w.w1_mut()[0] = 1e-30;
        w.w2_mut()[0] = 1e-30;
        *w.b2_mut() = 3.0;
        assert!((Quantised::new(&w).logit(&[0; WINDOW]) - 3.0).abs() < 1e-3);
    }

    /// Any finite weights (every exponent, subnormals, ±f32::MAX, per tensor a scale of its
    /// own) and any token: no overflow (tests run with overflow checks), a score in [0, 1].
    #[test]
    fn quantised_never_overflows_on_any_finite_weights() {
        let mut rng = Rng::new(23);
        let finite = |rng: &mut Rng, exp_cap: u32| loop {
            let bits = (rng.next_u64() as u32 & !(0xff << 23)) | ((rng.below(exp_cap as u64 + 1) as u32) << 23);
            let v = f32::from_bits(bits);
            if v.is_finite() {
                return v;
            }
        };
        for round in 0..48 {
            // Each tensor drawn around an exponent of its own: tiny, ordinary or huge.
            let cap = |k: u32| [254u32, 20, 127, 160, 254][((round + k) % 5) as usize];
            let mut w = Weights::zeroed();
            let c = cap(0);
            w.embedding_mut().iter_mut().for_each(|e| *e = finite(&mut rng, c));
            let c = cap(1);
            w.w1_mut().iter_mut().for_each(|e| *e = finite(&mut rng, c));
            let c = cap(2);
            w.b1_mut().iter_mut().for_each(|e| *e = finite(&mut rng, c));
            let c = cap(3);
            w.w2_mut().iter_mut().for_each(|e| *e = finite(&mut rng, c));
            *w.b2_mut() = if round % 7 == 0 { f32::MIN } else { finite(&mut rng, cap(4)) };
            let q = Quantised::new(&w);
            for _ in 0..32 {
                let t: [Token; WINDOW] = core::array::from_fn(|_| rng.next_u64() as Token);
                let s = q.score(&t);
                assert!((0.0..=1.0).contains(&s), "{s}");
            }
        }
    }

    #[test]
    fn pooling_is_mean_then_max() {
        let mut w = Weights::zeroed();
        assert_eq!(w.score(&[0; WINDOW]), 0.5);
        w.embedding_mut()[D] = 1.0; // token 1, dimension 0
        w.w1_mut()[0] = 1.0; // hidden 0 reads mean[0]
        w.w1_mut()[POOLED + D] = 1.0; // hidden 1 reads max[0]
        w.w2_mut()[0] = 1.0;
        w.w2_mut()[1] = 10.0;
        let mut t = [0 as Token; WINDOW];
        t[5] = 1;
        // mean[0] = 1/16, max[0] = 1: z = 1/16 + 10 (swapped halves would give 1 + 10/16).
        assert_eq!(w.logit(&t), 10.0625);
        // ReLU: a negative pre-activation contributes nothing.
        w.b1_mut()[1] = -5.0;
        assert_eq!(w.logit(&t), 0.0625);
        // Tokens at or above VOCAB are folded, not out of bounds.
        t[5] = VOCAB as Token + 1;
        assert_eq!(w.logit(&t), 0.0625);
    }

    #[test]
    fn scores_stay_in_range_for_extreme_logits() {
        for z in [-1e30f32, -100.0, -1.0, 0.0, 1.0, 100.0, 1e30, f32::MAX, f32::MIN] {
            let s = sigmoid(z);
            assert!((0.0..=1.0).contains(&s), "sigmoid({z}) = {s}");
        }
        assert!(sigmoid(-100.0) > 0.0 && sigmoid(-100.0) < 1e-40);
        assert_eq!(sigmoid(100.0), 1.0);
        assert_eq!(sigmoid(f32::NAN), 1.0);
        let mut huge = Weights::zeroed();
        huge.embedding_mut()[0] = 3e38;
        huge.w1_mut()[0] = 3e38;
        huge.w1_mut()[D] = 3e38;
        huge.w1_mut()[POOLED] = 3e38;
        huge.w2_mut()[0] = 3e38;
        huge.w2_mut()[1] = -3e38;
        // Both hidden units overflow to +inf; z = inf - inf.
        assert!(huge.logit(&[0; WINDOW]).is_nan());
        assert_eq!(huge.score(&[0; WINDOW]), 1.0, "overflowed sums are the most anomalous");
        let mut w = Weights::seeded(3);
        w.embedding_mut().iter_mut().for_each(|e| *e *= 1e6);
        let s = w.score(&[9; WINDOW]);
        assert!((0.0..=1.0).contains(&s));
    }

    #[test]
    fn bytes_round_trip() {
        let w = Weights::seeded(11);
        let b = w.to_bytes();
        assert_eq!(b.len(), BYTES);
        assert_eq!(&b[..4], b"OZCM");
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), VOCAB as u32);
        let back = Weights::from_bytes(&b).unwrap();
        assert_eq!(back, w);
        // The last four bytes are b2.
        let mut w2 = w.clone();
        *w2.b2_mut() = 1.5;
        assert_eq!(w2.to_bytes()[BYTES - 4..], 1.5f32.to_le_bytes());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let good = Weights::seeded(1).to_bytes();
        assert_eq!(Weights::from_bytes(&[]), Err(FormatError::TooShort { found: 0 }));
        assert_eq!(Weights::from_bytes(&good[..23]), Err(FormatError::TooShort { found: 23 }));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::BadMagic));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::UnsupportedVersion(2)));
        let mut b = good.clone();
        b[16..20].copy_from_slice(&8u32.to_le_bytes());
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::Mismatch { field: "D", expected: 16, found: 8 }));
        let mut b = good.clone();
        b[12..16].copy_from_slice(&32u32.to_le_bytes());
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::Mismatch { field: "WINDOW", expected: 16, found: 32 }));
        assert_eq!(
            Weights::from_bytes(&good[..BYTES - 1]),
            Err(FormatError::WrongLength { expected: BYTES, found: BYTES - 1 })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::WrongLength { expected: BYTES, found: BYTES + 1 }));
        let mut b = good.clone();
        b[HEADER + 4 * 7..HEADER + 4 * 8].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::NotFinite { index: 7 }));
        let mut b = good;
        b[BYTES - 4..].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert_eq!(Weights::from_bytes(&b), Err(FormatError::NotFinite { index: PARAMS - 1 }));
        // Every message names the problem.
        let msg = alloc::format!("{}", FormatError::Mismatch { field: "D", expected: 16, found: 8 });
        assert_eq!(msg, "weights: D is 8, this build's is 16");
    }

    #[test]
    fn no_input_panics() {
        let good = Weights::seeded(2).to_bytes();
        let mut rng = Rng::new(99);
        // Every truncation of the header and a spread of truncations of the body.
        for len in (0..64).chain((64..BYTES).step_by(997)) {
            assert!(Weights::from_bytes(&good[..len]).is_err());
        }
        // Garbage of random lengths, and garbage behind a good header (at the right length).
        for _ in 0..64 {
            let len = rng.below(200) as usize;
            let junk: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            assert!(Weights::from_bytes(&junk).is_err());
        }
        for _ in 0..16 {
            let mut b = good.clone();
            for byte in b[HEADER..].iter_mut() {
                *byte = rng.next_u64() as u8;
            }
            if let Ok(w) = Weights::from_bytes(&b) {
                let s = w.score(&[1; WINDOW]);
                assert!((0.0..=1.0).contains(&s));
            }
        }
        // Random flips of single bytes anywhere.
        for _ in 0..256 {
            let mut b = good.clone();
            let i = rng.below(BYTES as u64) as usize;
            b[i] ^= 1 << rng.below(8);
            let _ = Weights::from_bytes(&b);
        }
    }
}
