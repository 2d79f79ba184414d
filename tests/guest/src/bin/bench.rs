//! In-guest benchmarks, booted as the root task by `cargo xtask bench` under `-icount`, where the
//! TSC counts guest instructions. Each benchmark prints one line
//! `bench: name=<id> median=<n> p90=<n> samples=<n>`, which the xtask turns into a `BENCH` line.
//!
//! Method (as sel4bench): read the TSC right before and right after the operation, subtract the
//! cost of an empty pair of TSC reads (measured the same way), take the median and 90th
//! percentile over many samples after a warm-up.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_abi::Syscall;
use ozone_agent_sdk::{entry, println, sys};

entry!(run);

const WARMUP: usize = 16;
const SAMPLES: usize = 1000;

#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC is allowed in ring 3 (CR4.TSD is clear) and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Time `op` SAMPLES times (after a warm-up) and return the sorted raw samples.
fn measure(samples: &mut [u64; SAMPLES], mut op: impl FnMut()) {
    for _ in 0..WARMUP {
        op();
    }
    for s in samples.iter_mut() {
        let start = rdtsc();
        op();
        let end = rdtsc();
        *s = end - start;
    }
    samples.sort_unstable();
}

fn percentile(sorted: &[u64], pct: usize) -> u64 {
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn report(name: &str, sorted: &[u64], overhead: u64) {
    println!(
        "bench: name={name} median={} p90={} samples={}",
        percentile(sorted, 50).saturating_sub(overhead),
        percentile(sorted, 90).saturating_sub(overhead),
        sorted.len()
    );
}

fn run() -> u64 {
    let mut samples = [0u64; SAMPLES];

    // The cost of the measurement itself: an empty pair of TSC reads.
    measure(&mut samples, || {});
    let overhead = percentile(&samples, 50);
    println!("bench: timestamp pair costs {overhead} ticks (subtracted below)");

    // The cheapest round trip through the kernel: Yield with no other thread to run.
    measure(&mut samples, || {
        let _ = sys::raw(Syscall::Yield as i64, 0, 0);
    });
    report("null_syscall", &samples, overhead);
    0
}
