//! `sc-rr-client` (benign): a request/response client of `sc-rr`: rounds of calls with drawn
//! methods and arguments, each answer checked, with short thinking pauses between them; the
//! number of rounds and the pauses come from its seed.
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
    let rounds = sc.steps(100, 400);
    let think = sc.rng.range(2, 40);
    for _ in 0..rounds {
        if let Err(e) = t.round(&mut sc.rng) {
            return sc.fail(&alloc::format!("after {} calls", t.calls), e);
        }
        let d = sc.millis(0, think);
        if !d.is_zero() {
            pause(d);
        }
    }
    sc.end(&alloc::format!("{} calls, {} unexpected answers", t.calls, t.mismatches))
}
