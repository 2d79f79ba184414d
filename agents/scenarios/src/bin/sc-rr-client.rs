//! `sc-rr-client` (benign): a request/response client of `sc-rr`: rounds of calls with drawn
//! methods and arguments, each answer checked, with short thinking pauses between them; the
//! number of rounds and the pauses come from its seed.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::entry;
use ozone_agent_sdk::scenario::Phase;
use ozone_scenarios::traffic::Traffic;
use ozone_scenarios::{begin, pause};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    // Sleep once early: the timer's methods join the syscall profile during the warm-up.
    pause(sc.millis(1, 20));
    let mut t = match Traffic::connect() {
        Ok(t) => t,
        Err(e) => return sc.fail("looking up `sc-rr`", e),
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
