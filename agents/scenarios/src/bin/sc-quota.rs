//! `sc-quota` (hostile): quota pressure — asks Studio for more heap until it is refused, then
//! the secure-memory server for regions (paid from the same quota) until it is refused too,
//! and keeps asking a few more times after each refusal.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::secmem::SecureMemory;
use ozone_agent_sdk::{entry, heap, info};
use ozone_scenarios::hostile::{self, Tally};
use ozone_scenarios::{begin, pause};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let sm = SecureMemory::connect().ok();
    // An ordinary use of both first.
    let _ = heap::grow(4);
    if let Some(sm) = &sm
        && let Ok(r) = sm.alloc(1)
    {
        let _ = sm.free(r);
    }
    sc.mark(Phase::Hostile);
    let mut tally = Tally::default();
    let max_pages = sc.rng.range(16, 256);
    let mut refusals = 0;
    while refusals < sc.rng.range(3, 10) && tally.tried < 10_000 {
        if hostile::grow(&mut sc.rng, max_pages, &mut tally).is_err() {
            refusals += 1;
        }
    }
    info!("heap: {tally}; heap now {} KiB", heap::total() >> 10);
    let mut regions = Vec::new();
    let mut sm_tally = Tally::default();
    if let Some(sm) = &sm {
        let mut refused = 0;
        while refused < 3 && sm_tally.tried < 1_000 {
            let r = sm.alloc(sc.rng.range(1, 16) as u32);
            sm_tally.tried += 1;
            match r {
                Ok(r) => {
                    sm_tally.answered += 1;
                    regions.push(r);
                }
                Err(_) => {
                    sm_tally.refused += 1;
                    refused += 1;
                }
            }
        }
    }
    sc.end(&alloc::format!("heap {tally}; secure memory {sm_tally} ({} regions held)", regions.len()))
}
