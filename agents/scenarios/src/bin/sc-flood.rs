//! `sc-flood` (hostile): an IPC flood of `sc-rr` — after a few ordinary calls, waves of
//! back-to-back calls with the largest payloads and as many one-way sends, as fast as it can.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, info};
use ozone_scenarios::begin_traffic;
use ozone_scenarios::hostile::{self, Tally};

entry!(run);

fn run() -> u64 {
    let (mut sc, mut t) = match begin_traffic() {
        Ok(started) => started,
        Err(status) => return status,
    };
    for _ in 0..sc.rng.range(3, 10) {
        let _ = t.round(&mut sc.rng);
    }
    sc.mark(Phase::Hostile);
    let waves = sc.steps(2, 6);
    let mut tally = Tally::default();
    for w in 0..waves {
        let calls = sc.rng.range(300, 2_000);
        hostile::flood(t.client(), &mut sc.rng, calls, &mut tally);
        info!("wave {}: {tally}", w + 1);
    }
    sc.end(&alloc::format!("flood: {tally}"))
}
