//! `sc-faultstorm` (hostile): a fault storm. Each life does a moment of ordinary work, then takes
//! a fault of a kind drawn from its seed and the clock (unmapped reads and writes, a write to its
//! own code, a read of kernel memory, an undefined instruction, a breakpoint, a privileged
//! instruction, an unknown system call); Studio stops it and — `restart = "always"` — starts it
//! again at once, up to its restart limit.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::{Phase, Rng};
use ozone_agent_sdk::{entropy, entry, info};
use ozone_scenarios::begin;
use ozone_scenarios::faults::{self, Fault};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    let _ = Client::studio().call(method::MY_MEMORY, &());
    let mut rng = Rng::new(sc.seed ^ entropy::tsc());
    let kind = Fault::from_index(rng.next_u64(), faults::unmapped_address(rng.next_u64()));
    info!("taking {kind:?}");
    sc.mark(Phase::Hostile);
    faults::take(kind);
    sc.end(&alloc::format!("{kind:?} did not fault"))
}
