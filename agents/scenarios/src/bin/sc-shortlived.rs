//! `sc-shortlived` (benign): starts, does a little work — asks Studio for its memory, computes,
//! makes a few calls to `sc-rr` — and exits with status 0. Its block says `restart = "always"`,
//! so Studio starts it again a few times: a program that comes and goes.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::entropy;
use ozone_agent_sdk::entry;
use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::{Phase, Rng};
use ozone_scenarios::traffic::Traffic;
use ozone_scenarios::{begin, pause, rr};

entry!(run);

fn run() -> u64 {
    let sc = begin(Phase::Benign);
    // Each life differs a little: the seed with the clock.
    let mut rng = Rng::new(sc.seed ^ entropy::tsc());
    let _ = Client::studio().call(method::MY_MEMORY, &());
    let digest = rr::hash(&sc.seed.to_le_bytes(), rng.range(100, 5_000) as u32);
    let mut calls = 0;
    if let Ok(mut t) = Traffic::connect() {
        for _ in 0..rng.range(1, 10) {
            if t.round(&mut rng).is_err() {
                break;
            }
        }
        calls = t.calls;
    }
    pause(core::time::Duration::from_millis(rng.range(50, 500)));
    sc.end(&alloc::format!("{calls} calls, digest {digest:#x}"))
}
