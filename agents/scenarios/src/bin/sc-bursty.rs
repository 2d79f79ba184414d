//! `sc-bursty` (benign): bursts of request/response traffic to `sc-rr` separated by idle phases
//! on the timer, burst sizes and idle times drawn from its seed.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::entry;
use ozone_scenarios::{begin_traffic, pause};

entry!(run);

fn run() -> u64 {
    let (mut sc, mut t) = match begin_traffic() {
        Ok(started) => started,
        Err(status) => return status,
    };
    if let Err(e) = t.every_method(&mut sc.rng) {
        return sc.fail("first calls", e);
    }
    let bursts = sc.steps(4, 12);
    for _ in 0..bursts {
        for _ in 0..sc.rng.range(10, 120) {
            if let Err(e) = t.round(&mut sc.rng) {
                return sc.fail(&alloc::format!("after {} calls", t.calls), e);
            }
        }
        pause(sc.millis(300, 2_500));
    }
    sc.end(&alloc::format!("{bursts} bursts, {} calls, {} unexpected answers", t.calls, t.mismatches))
}
