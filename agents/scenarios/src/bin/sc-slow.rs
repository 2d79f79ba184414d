//! `sc-slow` (hostile): the slow, low-rate version of a hostile program — one hostile step, then
//! a long pause (0.3 to 3 s, the rate drawn from its seed), for a bounded number of steps, with a
//! few ordinary calls to `sc-rr` between them. Which step it repeats is the end of its program
//! name (`sc-slow-capprobe`, `sc-slow-flood`, `sc-slow-fuzz`, `sc-slow-privprobe`,
//! `sc-slow-quota`), or drawn from its seed for any other name.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::caps::Endpoint;
use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, info, start};
use ozone_scenarios::hostile::{self, SlotScan, Tally};
use ozone_scenarios::traffic::Traffic;
use ozone_scenarios::{begin, pause};

entry!(run);

const KINDS: [&str; 5] = ["capprobe", "flood", "fuzz", "privprobe", "quota"];

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let kind = match KINDS.iter().find(|k| start::name().ends_with(*k)) {
        Some(k) => *k,
        None => sc.rng.pick(&KINDS).copied().unwrap_or("capprobe"),
    };
    let mut t = match Traffic::connect() {
        Ok(t) => t,
        Err(e) => return sc.fail("looking up `sc-rr`", e),
    };
    let _ = t.every_method(&mut sc.rng);
    let held: Vec<u64> = Vec::from([t.client().slot()]);
    let mut scan = SlotScan::new(held);
    let rr = Endpoint::from_slot(t.client().slot());
    let steps = sc.steps(10, 30);
    let (lo, hi) = (sc.rng.range(300, 1_000), sc.rng.range(1_000, 3_000));
    info!("{steps} slow `{kind}` steps, one every {lo} to {hi} ms");
    let mut tally = Tally::default();
    for _ in 0..steps {
        for _ in 0..sc.rng.range(0, 3) {
            let _ = t.round(&mut sc.rng);
        }
        sc.mark(Phase::Hostile);
        match kind {
            "capprobe" => {
                for _ in 0..sc.rng.range(1, 4) {
                    scan.step(&mut sc.rng, &mut tally);
                }
            }
            "flood" => {
                let calls = sc.rng.range(20, 80);
                hostile::flood(t.client(), &mut sc.rng, calls, &mut tally);
            }
            "fuzz" => {
                hostile::fuzz(rr, ozone_scenarios::rr::INTERFACE, &mut sc.rng, &mut tally);
            }
            "privprobe" => {
                hostile::privilege(&mut sc.rng, "console", &mut tally);
            }
            _ => {
                let _ = hostile::grow(&mut sc.rng, 32, &mut tally);
            }
        }
        sc.mark(Phase::Benign);
        pause(sc.millis(lo, hi));
    }
    sc.end(&alloc::format!("slow {kind}: {tally}; {} ordinary calls", t.calls))
}
