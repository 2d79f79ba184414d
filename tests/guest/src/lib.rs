//! What the guest test programs share: a small seeded random-number generator, and the
//! benchmark programs' percentiles and timing loop.
#![cfg_attr(target_os = "none", no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

/// xorshift64*: small, seeded, reproducible (a failing run is replayed from its seed).
pub struct Rng(pub u64);

impl Rng {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The median and the 90th percentile of `samples` (sorted in place; not empty), as the
/// benchmark programs print them (`bench: name=N median=M p90=P samples=K`).
pub fn median_p90(samples: &mut [u64]) -> (u64, u64) {
    samples.sort_unstable();
    let n = samples.len();
    (samples[n / 2], samples[(n * 9).div_ceil(10) - 1])
}

/// Time `op` `samples` times with the clock `now` (after two untimed runs; `op` gets the run's
/// index, the untimed ones `samples` and `samples + 1`), and print
/// `bench: name=NAME median=M p90=P samples=K` through `print`; or `FAIL: NAME` and `false`
/// when `op` fails.
pub fn measure(
    name: &str,
    samples: usize,
    now: impl Fn() -> u64,
    print: impl Fn(core::fmt::Arguments),
    mut op: impl FnMut(usize) -> bool,
) -> bool {
    for i in 0..2 {
        if !op(samples + i) {
            print(format_args!("FAIL: {name} (warm-up)"));
            return false;
        }
    }
    let mut times = [0u64; 64];
    let times = &mut times[..samples.min(64)];
    for (i, t) in times.iter_mut().enumerate() {
        let t0 = now();
        if !op(i) {
            print(format_args!("FAIL: {name}"));
            return false;
        }
        *t = now() - t0;
    }
    let n = times.len();
    let (median, p90) = median_p90(times);
    print(format_args!("bench: name={name} median={median} p90={p90} samples={n}"));
    true
}
