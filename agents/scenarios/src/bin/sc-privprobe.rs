//! `sc-privprobe` (hostile): privilege probing of Studio's administration methods (list, kill,
//! grant, shut down, read the log, change profiles, ...) by a program without any privilege, with
//! plausible arguments naming other programs; each must be refused (`Denied`, logged by Studio).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, warn};
use ozone_scenarios::hostile::{self, Tally};
use ozone_scenarios::{begin, pause};

entry!(run);

const VICTIMS: [&str; 4] = ["console", "sc-rr-server", "shaper", "secmem"];

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let _ = Client::studio().call(method::MY_MEMORY, &());
    sc.mark(Phase::Hostile);
    let attempts = sc.steps(20, 120);
    let mut tally = Tally::default();
    let mut allowed = 0;
    for _ in 0..attempts {
        let victim = sc.rng.pick(&VICTIMS).copied().unwrap_or("console");
        let (m, denied) = hostile::privilege(&mut sc.rng, victim, &mut tally);
        if !denied {
            allowed += 1;
            warn!("{m} about {victim} was not denied");
        }
        pause(sc.millis(0, 30));
    }
    sc.end(&alloc::format!("privilege probing: {tally}; {allowed} not denied"))
}
