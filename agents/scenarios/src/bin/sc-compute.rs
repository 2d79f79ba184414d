//! `sc-compute` (benign): compute loops with few system calls — a prime sieve, integer matrix
//! products and hash chains, sizes and counts drawn from its seed — with a progress line and a
//! short sleep between jobs.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use ozone_agent_sdk::scenario::{Phase, Rng};
use ozone_agent_sdk::{entry, info};
use ozone_scenarios::{begin, pause, rr};

entry!(run);

/// The primes below `n` (a sieve), counted.
fn sieve(n: usize) -> usize {
    let mut composite = vec![false; n];
    let mut count = 0;
    for i in 2..n {
        if !composite[i] {
            count += 1;
            let mut j = i * i;
            while j < n {
                composite[j] = true;
                j += i;
            }
        }
    }
    count
}

/// The trace of `A^2` for a random `n`×`n` matrix (wrapping arithmetic).
fn matrix(n: usize, rng: &mut Rng) -> u64 {
    let a: Vec<u64> = (0..n * n).map(|_| rng.range(0, 1000)).collect();
    let mut trace = 0u64;
    for i in 0..n {
        for j in 0..n {
            let mut s = 0u64;
            for k in 0..n {
                s = s.wrapping_add(a[i * n + k].wrapping_mul(a[k * n + j]));
            }
            if i == j {
                trace = trace.wrapping_add(s);
            }
        }
    }
    trace
}

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let jobs = sc.steps(8, 30);
    let mut digest = 0u64;
    for job in 0..jobs {
        let r = match sc.rng.range(0, 2) {
            0 => sieve(sc.rng.range(10_000, 200_000) as usize) as u64,
            1 => {
                let n = sc.rng.range(8, 48) as usize;
                matrix(n, &mut sc.rng)
            }
            _ => rr::hash(&sc.seed.to_le_bytes(), sc.rng.range(1_000, 100_000) as u32),
        };
        digest ^= r.rotate_left(job as u32);
        if job % 8 == 7 {
            info!("{} of {jobs} jobs done", job + 1);
        }
        pause(sc.millis(5, 200));
    }
    sc.end(&alloc::format!("{jobs} jobs, digest {digest:#x}"))
}
