//! Trains Studio's behaviour model on the host, with candle (`cargo xtask studio train`).
//!
//! The network is the one [`ozone_cognition::model`] defines and Studio runs in `no_std`: an
//! embedding of each of a window's [`WINDOW`] tokens, mean and max pooling, one ReLU hidden layer
//! of [`H`] units and one output logit. [`Net`] holds it as candle variables laid out exactly as
//! the weights file is (`Linear`'s `(out, in)` weights), so [`Net::weights`] is a copy, not a
//! conversion, and [`Net::logits`] is the same computation as `Weights::logit` (the parity tests
//! hold them to 1e-5).
//!
//! Training ([`train`]) is deterministic: the start is `Weights::seeded(seed)` (the cognition
//! crate's generator, not candle's), every minibatch is drawn with the same generator, and
//! candle runs on the CPU in one thread (`cargo xtask studio train` sets `RAYON_NUM_THREADS=1`;
//! the matrix products here are too small for threads to pay anyway). The same corpus and seed
//! give the same weights file, byte for byte.
//!
//! Each step draws half its batch from the normal windows and half from the hostile ones
//! (uniformly among the distinct windows of each class, whatever their frequency: the rare
//! normal windows are the ones that would raise false alarms), and minimises the binary
//! cross-entropy of the logit against the label with AdamW ([`fit`], the same for every
//! architecture).
//!
//! [`arch`] holds the two other architectures the choice was made against (a 1-D convolution and
//! a GRU), trained by the same [`fit`]; `ozone-trainer --compare` measures all three on the
//! held-out lives with Studio's detector (docs/studio.md, "The model").

pub mod arch;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use ozone_cognition::Rng;
use ozone_cognition::model::{D, H, POOLED, Weights};
use ozone_cognition::token::{Token, VOCAB};
use ozone_cognition::window::WINDOW;

/// A failure of candle's, as text.
pub type Error = String;

pub(crate) fn err(e: candle_core::Error) -> Error {
    e.to_string()
}

/// The model as candle variables (the layouts of `ozone_cognition::model`).
pub struct Net {
    device: Device,
    embedding: Var,
    w1: Var,
    b1: Var,
    w2: Var,
    b2: Var,
}

impl Net {
    /// The network holding `w`.
    pub fn new(w: &Weights) -> Result<Net, Error> {
        let device = Device::Cpu;
        Ok(Net {
            embedding: Var::from_slice(w.embedding(), (VOCAB, D), &device).map_err(err)?,
            w1: Var::from_slice(w.w1(), (H, POOLED), &device).map_err(err)?,
            b1: Var::from_slice(w.b1(), H, &device).map_err(err)?,
            w2: Var::from_slice(w.w2(), (1, H), &device).map_err(err)?,
            b2: Var::from_slice(&[w.b2()], 1, &device).map_err(err)?,
            device,
        })
    }

    /// The logits of `windows`, a tensor of shape `(n,)`.
    pub fn logits(&self, windows: &[[Token; WINDOW]]) -> Result<Tensor, Error> {
        let n = windows.len();
        // Tokens outside the vocabulary fold into it, as in `Weights::pool`.
        let ids: Vec<u32> = windows.iter().flatten().map(|&t| (t as usize % VOCAB) as u32).collect();
        let ids = Tensor::from_vec(ids, n * WINDOW, &self.device).map_err(err)?;
        let e =
            self.embedding.as_tensor().index_select(&ids, 0).and_then(|e| e.reshape((n, WINDOW, D))).map_err(err)?;
        let mean = e.mean(1).map_err(err)?;
        let max = e.max(1).map_err(err)?;
        let x = Tensor::cat(&[&mean, &max], 1).map_err(err)?;
        let h = x
            .matmul(&self.w1.as_tensor().t().map_err(err)?)
            .and_then(|h| h.broadcast_add(self.b1.as_tensor()))
            .and_then(|h| h.relu())
            .map_err(err)?;
        h.matmul(&self.w2.as_tensor().t().map_err(err)?)
            .and_then(|z| z.broadcast_add(self.b2.as_tensor()))
            .and_then(|z| z.squeeze(1))
            .map_err(err)
    }

    /// The logits of `windows` as numbers.
    pub fn logit_values(&self, windows: &[[Token; WINDOW]]) -> Result<Vec<f32>, Error> {
        self.logits(windows)?.to_vec1::<f32>().map_err(err)
    }

    /// The weights as they are now.
    pub fn weights(&self) -> Result<Weights, Error> {
        let flat = |v: &Var| v.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(err);
        let mut w = Weights::zeroed();
        w.embedding_mut().copy_from_slice(&flat(&self.embedding)?);
        w.w1_mut().copy_from_slice(&flat(&self.w1)?);
        w.b1_mut().copy_from_slice(&flat(&self.b1)?);
        w.w2_mut().copy_from_slice(&flat(&self.w2)?);
        *w.b2_mut() = flat(&self.b2)?[0];
        Ok(w)
    }
}

impl arch::Arch for Net {
    fn name(&self) -> &'static str {
        "embedding + MLP"
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.embedding.clone(), self.w1.clone(), self.b1.clone(), self.w2.clone(), self.b2.clone()]
    }

    fn logits(&self, windows: &[[Token; WINDOW]]) -> Result<Tensor, Error> {
        Net::logits(self, windows)
    }

    fn macs(&self) -> usize {
        // Pooling: WINDOW additions and comparisons per embedding number; then the two layers.
        2 * WINDOW * D + H * POOLED + H
    }
}

/// Training settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Seeds the start and the minibatches.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: usize,
    /// Windows per step (half normal, half hostile).
    pub batch: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
}

impl Default for Config {
    fn default() -> Config {
        Config { seed: 0x0c0f_fee0, steps: 3000, batch: 256, learning_rate: 0.01, weight_decay: 1e-4 }
    }
}

/// What [`train`] gives.
pub struct Trained {
    pub weights: Weights,
    /// The mean loss of every block of 100 steps (the last block may be shorter).
    pub losses: Vec<f32>,
}

/// The binary cross-entropy of logits `z` against labels `y` (0 or 1), mean over the batch, in
/// the form that neither overflows nor loses precision for large |z|:
/// `max(z, 0) - z·y + ln(1 + e^(-|z|))`.
pub fn bce_with_logits(z: &Tensor, y: &Tensor) -> Result<Tensor, Error> {
    let soft =
        z.abs().and_then(|a| a.neg()).and_then(|a| a.exp()).and_then(|e| e.affine(1.0, 1.0)).and_then(|e| e.log());
    z.relu().and_then(|r| r.sub(&(z * y)?)).and_then(|l| l.add(&soft?)).and_then(|l| l.mean_all()).map_err(err)
}

/// Train Studio's model on labelled windows (label 0 normal, 1 hostile; each distinct window
/// once), from `Weights::seeded(config.seed)`. Both classes must be present.
pub fn train(data: &[([Token; WINDOW], u8)], config: Config) -> Result<Trained, Error> {
    let net = Net::new(&Weights::seeded(config.seed))?;
    let losses = fit(&net, data, config)?;
    Ok(Trained { weights: net.weights()?, losses })
}

/// Fit `net` to labelled windows as the module doc says; the mean loss of every block of 100
/// steps. Both classes must be present.
pub fn fit(net: &dyn arch::Arch, data: &[([Token; WINDOW], u8)], config: Config) -> Result<Vec<f32>, Error> {
    let normal: Vec<&[Token; WINDOW]> = data.iter().filter(|(_, l)| *l == 0).map(|(w, _)| w).collect();
    let hostile: Vec<&[Token; WINDOW]> = data.iter().filter(|(_, l)| *l != 0).map(|(w, _)| w).collect();
    if normal.is_empty() || hostile.is_empty() {
        return Err(format!(
            "training needs windows of both classes: {} normal, {} hostile",
            normal.len(),
            hostile.len()
        ));
    }
    let params = ParamsAdamW { lr: config.learning_rate, weight_decay: config.weight_decay, ..Default::default() };
    let mut opt = AdamW::new(net.vars(), params).map_err(err)?;
    let mut rng = Rng::new(config.seed ^ 0x5eed_0fba_7c4e_5eed);
    let half = (config.batch / 2).max(1);
    let mut labels = vec![0f32; half];
    labels.extend(std::iter::repeat_n(1f32, half));
    let y = Tensor::from_vec(labels, 2 * half, &Device::Cpu).map_err(err)?;
    let (mut losses, mut sum, mut n) = (Vec::new(), 0f32, 0);
    for step in 0..config.steps {
        let mut batch = Vec::with_capacity(2 * half);
        batch.extend((0..half).map(|_| *normal[rng.below(normal.len() as u64) as usize]));
        batch.extend((0..half).map(|_| *hostile[rng.below(hostile.len() as u64) as usize]));
        let loss = bce_with_logits(&net.logits(&batch)?, &y)?;
        opt.backward_step(&loss).map_err(err)?;
        sum += loss.to_scalar::<f32>().map_err(err)?;
        n += 1;
        if n == 100 || step + 1 == config.steps {
            losses.push(sum / n as f32);
            (sum, n) = (0.0, 0);
        }
    }
    Ok(losses)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn random_windows(rng: &mut Rng, n: usize, below: u64) -> Vec<[Token; WINDOW]> {
        (0..n).map(|_| core::array::from_fn(|_| rng.below(below) as Token)).collect()
    }

    /// candle's forward pass and Studio's agree to 1e-5 on fixed weights, for the logit and the
    /// score (tokens past the vocabulary included).
    #[test]
    fn candle_and_studio_agree_on_fixed_weights() {
        let mut rng = Rng::new(3);
        for seed in 0..3 {
            let mut w = Weights::seeded(seed);
            *w.b2_mut() = 0.25 - seed as f32 * 0.5;
            let net = Net::new(&w).unwrap();
            let windows = random_windows(&mut rng, 300, VOCAB as u64 + 40);
            let candle = net.logit_values(&windows).unwrap();
            for (win, z) in windows.iter().zip(&candle) {
                let studio = w.logit(win);
                assert!((studio - z).abs() < 1e-5, "logit {studio} vs candle {z}");
                let s = ozone_cognition::model::sigmoid(*z);
                assert!((w.score(win) - s).abs() < 1e-5);
            }
            assert_eq!(net.weights().unwrap(), w, "the variables are the weights, copied");
        }
    }

    /// The stable BCE matches the textbook one where the latter is finite, and stays finite
    /// where it is not.
    #[test]
    fn bce_is_the_textbook_one_and_stable() {
        let dev = Device::Cpu;
        let z = [-3.0f32, -0.5, 0.0, 0.7, 4.0];
        let y = [0.0f32, 1.0, 1.0, 0.0, 1.0];
        let got = bce_with_logits(&Tensor::new(&z, &dev).unwrap(), &Tensor::new(&y, &dev).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want: f32 = z
            .iter()
            .zip(&y)
            .map(|(&z, &y)| {
                let p = 1.0 / (1.0 + (-z).exp());
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            })
            .sum::<f32>()
            / z.len() as f32;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        let big =
            bce_with_logits(&Tensor::new(&[200f32, -200.0], &dev).unwrap(), &Tensor::new(&[0f32, 1.0], &dev).unwrap())
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        assert!((big - 200.0).abs() < 1e-3, "{big}");
    }

    /// A toy corpus: normal windows use tokens 0..20, hostile ones carry a token from 100..110.
    pub(crate) fn toy(rng: &mut Rng) -> Vec<([Token; WINDOW], u8)> {
        let mut data: Vec<_> = random_windows(rng, 400, 20).into_iter().map(|w| (w, 0)).collect();
        for mut w in random_windows(rng, 100, 20) {
            w[rng.below(WINDOW as u64) as usize] = 100 + rng.below(10) as Token;
            data.push((w, 1));
        }
        data
    }

    #[test]
    fn training_learns_a_separable_corpus_and_is_deterministic() {
        let mut rng = Rng::new(11);
        let data = toy(&mut rng);
        let config = Config { steps: 300, batch: 64, ..Config::default() };
        let a = train(&data, config).unwrap();
        assert!(a.losses.last().unwrap() < &0.1, "loss fell: {:?}", a.losses);
        assert!(a.losses.first().unwrap() > a.losses.last().unwrap());
        // Held-out windows of the same kinds are told apart by Studio's own forward pass.
        let test = toy(&mut rng);
        let wrong = test.iter().filter(|(w, l)| (a.weights.score(w) > 0.5) != (*l == 1)).count();
        assert!(wrong <= test.len() / 50, "{wrong} of {} misjudged", test.len());
        // The same corpus and seed give the same weights, byte for byte; another seed does not.
        let b = train(&data, config).unwrap();
        assert_eq!(a.weights.to_bytes(), b.weights.to_bytes());
        let c = train(&data, Config { seed: 1, ..config }).unwrap();
        assert_ne!(a.weights.to_bytes(), c.weights.to_bytes());
        // And candle agrees with Studio on the trained weights too.
        let net = Net::new(&a.weights).unwrap();
        let windows: Vec<_> = test.iter().map(|(w, _)| *w).collect();
        for (w, z) in windows.iter().zip(net.logit_values(&windows).unwrap()) {
            assert!((a.weights.logit(w) - z).abs() < 1e-4 * z.abs().max(1.0), "{} vs {z}", a.weights.logit(w));
        }
    }

    #[test]
    fn one_class_is_refused() {
        let mut rng = Rng::new(1);
        let data: Vec<_> = random_windows(&mut rng, 10, 20).into_iter().map(|w| (w, 0)).collect();
        let e = train(&data, Config::default()).err().unwrap();
        assert!(e.contains("10 normal, 0 hostile"), "{e}");
    }
}
