//! `sc-capprobe` (hostile): capability probing and slot scanning — after a short benign start,
//! it invokes every slot of its CNode in order and then random capability pointers, with random
//! labels and words, counting what the kernel refuses.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, info};
use ozone_scenarios::hostile::{SlotScan, Tally};
use ozone_scenarios::{begin, pause};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    sc.mark(Phase::Hostile);
    let probes = sc.steps(400, 3_000);
    let mut scan = SlotScan::new(Vec::new());
    let mut tally = Tally::default();
    for i in 0..probes {
        scan.step(&mut sc.rng, &mut tally);
        if i % 512 == 511 {
            info!("{} probes so far", i + 1);
        }
    }
    sc.end(&alloc::format!("slot scan: {tally}"))
}
