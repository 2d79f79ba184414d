//! The other two architectures the issue names, trained the same way as Studio's model so the
//! choice between them is measured (`ozone-trainer --compare`, `cargo xtask studio compare`):
//!
//! - [`Conv`]: a 1-D convolution over the window's embedded tokens (kernel [`KERNEL`],
//!   [`CHANNELS`] channels, ReLU), max over positions, one logit;
//! - [`Gru`]: a gated recurrent unit of [`HIDDEN`] units run over the window's embedded tokens
//!   oldest first, its last state to one logit.
//!
//! Both embed tokens as Studio's model does ([`D`] numbers each, from the same vocabulary), and
//! both start from weights drawn with the cognition crate's generator (uniform in
//! ±1/√fan-in), not candle's, so a comparison run is repeatable. Only the embedding + MLP has a
//! `no_std` forward pass in Studio; these exist on the host, to be measured against it.

use candle_core::{Device, Tensor, Var};
use ozone_cognition::Rng;
use ozone_cognition::model::D;
use ozone_cognition::token::{Token, VOCAB};
use ozone_cognition::window::WINDOW;

use crate::{Error, err};

/// A network the trainer can fit ([`crate::fit`]).
pub trait Arch {
    /// Its name in the comparison's table.
    fn name(&self) -> &'static str;
    /// The variables the optimiser updates.
    fn vars(&self) -> Vec<Var>;
    /// The logits of `windows`, a tensor of shape `(n,)`.
    fn logits(&self, windows: &[[Token; WINDOW]]) -> Result<Tensor, Error>;
    /// Multiply-adds of one window's forward pass (the embedding lookups not counted).
    fn macs(&self) -> usize;
    /// Its weights, counted.
    fn parameters(&self) -> usize {
        self.vars().iter().map(|v| v.as_tensor().elem_count()).sum()
    }
}

/// Channels of [`Conv`].
pub const CHANNELS: usize = 32;
/// Kernel width of [`Conv`] (tokens).
pub const KERNEL: usize = 3;
/// State size of [`Gru`].
pub const HIDDEN: usize = 32;

/// A variable of `shape` uniform in ±`scale`, drawn from `rng`.
fn uniform(rng: &mut Rng, shape: &[usize], scale: f32, device: &Device) -> Result<Var, Error> {
    let n = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|_| (rng.unit() * 2.0 - 1.0) * scale).collect();
    Var::from_vec(data, shape, device).map_err(err)
}

/// The embedded windows, `(n, WINDOW, D)`.
fn embed(embedding: &Var, windows: &[[Token; WINDOW]], device: &Device) -> Result<Tensor, Error> {
    let n = windows.len();
    let ids: Vec<u32> = windows.iter().flatten().map(|&t| (t as usize % VOCAB) as u32).collect();
    let ids = Tensor::from_vec(ids, n * WINDOW, device).map_err(err)?;
    embedding.as_tensor().index_select(&ids, 0).and_then(|e| e.reshape((n, WINDOW, D))).map_err(err)
}

/// `1 / (1 + e^-x)`, from operations candle differentiates.
fn sigmoid(x: &Tensor) -> Result<Tensor, Error> {
    x.neg().and_then(|x| x.exp()).and_then(|e| e.affine(1.0, 1.0)).and_then(|e| e.recip()).map_err(err)
}

/// The 1-D convolution.
pub struct Conv {
    device: Device,
    embedding: Var,
    /// `(KERNEL·D, CHANNELS)`: row `j·D + d` weighs number `d` of the `j`-th token under the
    /// kernel.
    kernel: Var,
    bias: Var,
    w2: Var,
    b2: Var,
}

impl Conv {
    pub fn new(seed: u64) -> Result<Conv, Error> {
        let device = Device::Cpu;
        let mut rng = Rng::new(seed);
        let fan_in = (D * KERNEL) as f32;
        Ok(Conv {
            embedding: uniform(&mut rng, &[VOCAB, D], 1.0, &device)?,
            kernel: uniform(&mut rng, &[KERNEL * D, CHANNELS], 1.0 / fan_in.sqrt(), &device)?,
            bias: uniform(&mut rng, &[CHANNELS], 0.1, &device)?,
            w2: uniform(&mut rng, &[1, CHANNELS], 1.0 / (CHANNELS as f32).sqrt(), &device)?,
            b2: Var::zeros(1, candle_core::DType::F32, &device).map_err(err)?,
            device,
        })
    }
}

impl Arch for Conv {
    fn name(&self) -> &'static str {
        "1-D convolution"
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.embedding.clone(), self.kernel.clone(), self.bias.clone(), self.w2.clone(), self.b2.clone()]
    }

    fn logits(&self, windows: &[[Token; WINDOW]]) -> Result<Tensor, Error> {
        // The convolution as one product: each position's KERNEL tokens side by side,
        // (n, P, KERNEL·D), times the kernel. (candle's conv1d did not train here: the loss
        // stayed at ln 2 on a corpus this formulation learns at once.)
        let n = windows.len();
        let positions = WINDOW - KERNEL + 1;
        let e = embed(&self.embedding, windows, &self.device)?;
        let shifted: Vec<Tensor> =
            (0..KERNEL).map(|j| e.narrow(1, j, positions)).collect::<Result<_, _>>().map_err(err)?;
        let y = Tensor::cat(&shifted, 2)
            .and_then(|x| x.reshape((n * positions, KERNEL * D)))
            .and_then(|x| x.matmul(self.kernel.as_tensor()))
            .and_then(|y| y.broadcast_add(self.bias.as_tensor()))
            .and_then(|y| y.relu())
            .and_then(|y| y.reshape((n, positions, CHANNELS)))
            .and_then(|y| y.max(1))
            .map_err(err)?;
        y.matmul(&self.w2.as_tensor().t().map_err(err)?)
            .and_then(|z| z.broadcast_add(self.b2.as_tensor()))
            .and_then(|z| z.squeeze(1))
            .map_err(err)
    }

    fn macs(&self) -> usize {
        (WINDOW - KERNEL + 1) * CHANNELS * D * KERNEL + CHANNELS
    }
}

/// The gated recurrent unit (Cho et al.): for each token, oldest first,
/// `r = σ(x·Wr + h·Ur + br)`, `z = σ(x·Wz + h·Uz + bz)`, `n = tanh(x·Wn + r ⊙ (h·Un) + bn)`,
/// `h = (1 − z) ⊙ n + z ⊙ h`, from `h = 0`; the logit is `h·w2 + b2`.
pub struct Gru {
    device: Device,
    embedding: Var,
    /// `(D, 3·HIDDEN)`: the r, z and n parts side by side.
    wx: Var,
    /// `(HIDDEN, 3·HIDDEN)`.
    uh: Var,
    /// `(3·HIDDEN)`.
    b: Var,
    w2: Var,
    b2: Var,
}

impl Gru {
    pub fn new(seed: u64) -> Result<Gru, Error> {
        let device = Device::Cpu;
        let mut rng = Rng::new(seed);
        let scale = 1.0 / (HIDDEN as f32).sqrt();
        Ok(Gru {
            embedding: uniform(&mut rng, &[VOCAB, D], 1.0, &device)?,
            wx: uniform(&mut rng, &[D, 3 * HIDDEN], 1.0 / (D as f32).sqrt(), &device)?,
            uh: uniform(&mut rng, &[HIDDEN, 3 * HIDDEN], scale, &device)?,
            b: uniform(&mut rng, &[3 * HIDDEN], 0.1, &device)?,
            w2: uniform(&mut rng, &[1, HIDDEN], scale, &device)?,
            b2: Var::zeros(1, candle_core::DType::F32, &device).map_err(err)?,
            device,
        })
    }
}

impl Arch for Gru {
    fn name(&self) -> &'static str {
        "GRU"
    }

    fn vars(&self) -> Vec<Var> {
        vec![self.embedding.clone(), self.wx.clone(), self.uh.clone(), self.b.clone(), self.w2.clone(), self.b2.clone()]
    }

    fn logits(&self, windows: &[[Token; WINDOW]]) -> Result<Tensor, Error> {
        let n = windows.len();
        let e = embed(&self.embedding, windows, &self.device)?;
        // Every token's input part at once: (n, WINDOW, 3·HIDDEN).
        let xs = e
            .reshape((n * WINDOW, D))
            .and_then(|e| e.matmul(self.wx.as_tensor()))
            .and_then(|x| x.broadcast_add(self.b.as_tensor()))
            .and_then(|x| x.reshape((n, WINDOW, 3 * HIDDEN)))
            .map_err(err)?;
        let mut h = Tensor::zeros((n, HIDDEN), candle_core::DType::F32, &self.device).map_err(err)?;
        for t in 0..WINDOW {
            let x = xs.narrow(1, t, 1).and_then(|x| x.squeeze(1)).map_err(err)?;
            let u = h.matmul(self.uh.as_tensor()).map_err(err)?;
            let part = |t: &Tensor, k: usize| t.narrow(1, k * HIDDEN, HIDDEN).map_err(err);
            let r = sigmoid(&(part(&x, 0)? + part(&u, 0)?).map_err(err)?)?;
            let z = sigmoid(&(part(&x, 1)? + part(&u, 1)?).map_err(err)?)?;
            let cand = (part(&x, 2)? + (r * part(&u, 2)?).map_err(err)?).and_then(|c| c.tanh()).map_err(err)?;
            // h = n + z ⊙ (h − n)
            h = (&cand + (z * (&h - &cand).map_err(err)?).map_err(err)?).map_err(err)?;
        }
        h.matmul(&self.w2.as_tensor().t().map_err(err)?)
            .and_then(|z| z.broadcast_add(self.b2.as_tensor()))
            .and_then(|z| z.squeeze(1))
            .map_err(err)
    }

    fn macs(&self) -> usize {
        WINDOW * (D + HIDDEN) * 3 * HIDDEN + HIDDEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(rng: &mut Rng, n: usize) -> Vec<[Token; WINDOW]> {
        (0..n).map(|_| core::array::from_fn(|_| rng.below(VOCAB as u64 + 10) as Token)).collect()
    }

    /// The convolution against a direct computation of its definition.
    #[test]
    fn the_convolution_is_what_its_doc_says() {
        let net = Conv::new(5).unwrap();
        let mut rng = Rng::new(1);
        let ws = windows(&mut rng, 4);
        let got = net.logits(&ws).unwrap().to_vec1::<f32>().unwrap();
        let flat = |v: &Var| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (e, k, b, w2, b2) =
            (flat(&net.embedding), flat(&net.kernel), flat(&net.bias), flat(&net.w2), flat(&net.b2));
        for (w, z) in ws.iter().zip(got) {
            let x = |pos: usize, d: usize| e[(w[pos] as usize % VOCAB) * D + d];
            let mut logit = b2[0];
            for c in 0..CHANNELS {
                let mut best = f32::MIN;
                for p in 0..=WINDOW - KERNEL {
                    let mut s = b[c];
                    for d in 0..D {
                        for j in 0..KERNEL {
                            s += k[(j * D + d) * CHANNELS + c] * x(p + j, d);
                        }
                    }
                    best = best.max(s.max(0.0));
                }
                logit += w2[c] * best;
            }
            assert!((logit - z).abs() < 1e-4, "{logit} vs {z}");
        }
    }

    /// The GRU against a direct computation of its definition.
    #[test]
    fn the_gru_is_what_its_doc_says() {
        let net = Gru::new(6).unwrap();
        let mut rng = Rng::new(2);
        let ws = windows(&mut rng, 3);
        let got = net.logits(&ws).unwrap().to_vec1::<f32>().unwrap();
        let flat = |v: &Var| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (e, wx, uh, b, w2, b2) =
            (flat(&net.embedding), flat(&net.wx), flat(&net.uh), flat(&net.b), flat(&net.w2), flat(&net.b2));
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        for (w, z) in ws.iter().zip(got) {
            let mut h = [0f32; HIDDEN];
            for &t in w {
                let x = &e[(t as usize % VOCAB) * D..][..D];
                let pre = |k: usize, j: usize, with_h: bool| {
                    let col = k * HIDDEN + j;
                    let xin: f32 = (0..D).map(|d| x[d] * wx[d * 3 * HIDDEN + col]).sum::<f32>() + b[col];
                    let hin: f32 =
                        if with_h { (0..HIDDEN).map(|i| h[i] * uh[i * 3 * HIDDEN + col]).sum() } else { 0.0 };
                    (xin, hin)
                };
                let mut next = [0f32; HIDDEN];
                for j in 0..HIDDEN {
                    let (xr, hr) = pre(0, j, true);
                    let (xz, hz) = pre(1, j, true);
                    let (xn, hn) = pre(2, j, true);
                    let (r, zz) = (sig(xr + hr), sig(xz + hz));
                    let n = (xn + r * hn).tanh();
                    next[j] = (1.0 - zz) * n + zz * h[j];
                }
                h = next;
            }
            let logit: f32 = b2[0] + (0..HIDDEN).map(|j| w2[j] * h[j]).sum::<f32>();
            assert!((logit - z).abs() < 1e-4, "{logit} vs {z}");
        }
    }

    /// Both learn the toy corpus Studio's model learns, through the same fitting.
    #[test]
    fn both_learn_a_separable_corpus() {
        let mut rng = Rng::new(11);
        let data = crate::tests::toy(&mut rng);
        let config = crate::Config { steps: 200, batch: 64, ..crate::Config::default() };
        let conv = Conv::new(1).unwrap();
        let gru = Gru::new(1).unwrap();
        for net in [&conv as &dyn Arch, &gru] {
            let losses = crate::fit(net, &data, config).unwrap();
            assert!(losses.last().unwrap() < &0.2, "{}: {losses:?}", net.name());
            let test = crate::tests::toy(&mut rng);
            let ws: Vec<_> = test.iter().map(|(w, _)| *w).collect();
            let z = net.logits(&ws).unwrap().to_vec1::<f32>().unwrap();
            let wrong = test.iter().zip(z).filter(|((_, l), z)| (*z > 0.0) != (*l == 1)).count();
            assert!(wrong <= test.len() / 20, "{}: {wrong} of {} misjudged", net.name(), test.len());
            assert!(net.parameters() > VOCAB * D && net.macs() > 0);
        }
    }
}
