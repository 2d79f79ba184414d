//! `sc-protofuzz` (hostile): protocol fuzzing of servers — malformed messages (labels among the
//! interfaces' wire labels, random lengths and words) to `sc-rr`, `echo` and Studio, then one
//! proper request to each to see that it still serves.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::caps::{self, Endpoint};
use ozone_agent_sdk::protocol::echo;
use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, info};
use ozone_scenarios::hostile::{self, Tally};
use ozone_scenarios::{begin, lookup, pause, rr};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let mut targets: Vec<(Endpoint, &str)> = Vec::new();
    for name in [rr::INTERFACE, echo::INTERFACE] {
        match lookup(name) {
            Ok(c) => targets.push((Endpoint::from_slot(c.slot()), name)),
            Err(e) => info!("cannot reach {name}: {e}"),
        }
    }
    targets.push((caps::studio(), "studio"));
    // A proper call of each first, as a client would.
    let _ = Client::new(targets[0].0.slot(), targets[0].1).call(rr::method::STATS, &());
    sc.mark(Phase::Hostile);
    let messages = sc.steps(200, 1_500);
    let mut tally = Tally::default();
    for _ in 0..messages {
        let (ep, interface) = *sc.rng.pick(&targets).unwrap_or(&(caps::studio(), "studio"));
        hostile::fuzz(ep, interface, &mut sc.rng, &mut tally);
    }
    sc.mark(Phase::Benign);
    let studio_ok = Client::studio().call(method::MY_MEMORY, &()).is_ok();
    let rr_ok = lookup(rr::INTERFACE).and_then(|c| c.call(rr::method::STATS, &())).is_ok();
    sc.end(&alloc::format!("fuzzing: {tally}; afterwards studio serves: {studio_ok}, sc-rr serves: {rr_ok}"))
}
