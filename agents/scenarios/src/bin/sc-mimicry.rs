//! `sc-mimicry` (hostile): mimicry — the request/response client's ordinary traffic to `sc-rr`,
//! with a hostile step hidden in it every so often (a probe of a capability slot, an
//! administration method of Studio, a malformed message to `sc-rr`, a little more heap), each
//! bracketed by phase markers. How often, and which steps, come from its seed.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::caps::Endpoint;
use ozone_agent_sdk::entry;
use ozone_agent_sdk::scenario::Phase;
use ozone_scenarios::hostile::{self, SlotScan, Tally};
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
    let mut scan = SlotScan::new(Vec::from([t.client().slot()]));
    let rr = Endpoint::from_slot(t.client().slot());
    let rounds = sc.steps(150, 500);
    let every = sc.rng.range(5, 25);
    let think = sc.rng.range(2, 40);
    let mut tally = Tally::default();
    let mut hidden = 0;
    for n in 0..rounds {
        if let Err(e) = t.round(&mut sc.rng) {
            return sc.fail(&alloc::format!("after {} calls", t.calls), e);
        }
        if n % every == every - 1 && sc.rng.chance(80) {
            sc.mark(Phase::Hostile);
            match sc.rng.range(0, 3) {
                0 => scan.step(&mut sc.rng, &mut tally),
                1 => {
                    hostile::privilege(&mut sc.rng, "sc-rr-server", &mut tally);
                }
                2 => {
                    hostile::fuzz(rr, ozone_scenarios::rr::INTERFACE, &mut sc.rng, &mut tally);
                }
                _ => {
                    let _ = hostile::grow(&mut sc.rng, 2, &mut tally);
                }
            }
            hidden += 1;
            sc.mark(Phase::Benign);
        }
        let d = sc.millis(0, think);
        if !d.is_zero() {
            pause(d);
        }
    }
    sc.end(&alloc::format!("{} ordinary calls, {hidden} hidden hostile steps ({tally})", t.calls))
}
