//! `sc-churn` (benign): memory churn with heap growth — allocations of drawn sizes kept for a
//! while and freed, the working set rising and falling in waves; when the heap runs short it asks
//! Studio for more (`heap::grow`), staying within half of its quota.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, heap, info};
use ozone_scenarios::{begin, pause};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let quota = match Client::studio().call(method::MY_MEMORY, &()) {
        Ok(m) => m.quota as usize,
        Err(e) => return sc.fail("asking for its memory", e),
    };
    let waves = sc.steps(3, 8);
    let mut live: Vec<Vec<u8>> = Vec::new();
    let (mut allocated, mut grown) = (0u64, 0u64);
    for wave in 0..waves {
        // Rise to a drawn working set, then fall to a drawn rest.
        let target = sc.rng.range(heap::total() as u64 / 4, quota as u64 / 2) as usize;
        while heap::used() + 4096 < target {
            let size = sc.rng.range(16, 16 * 1024) as usize;
            if heap::used() + size + 64 * 1024 > heap::total() {
                let pages = sc.rng.range(8, 32);
                if heap::total() + (pages as usize) * 4096 > quota / 2 {
                    break;
                }
                match heap::grow(pages) {
                    Ok(_) => grown += pages,
                    Err(_) => break,
                }
            }
            let mut v = alloc::vec![0u8; size];
            v[size - 1] = wave as u8;
            live.push(v);
            allocated += 1;
            if sc.rng.chance(30) && !live.is_empty() {
                let i = sc.rng.range(0, live.len() as u64 - 1) as usize;
                live.swap_remove(i);
            }
        }
        let keep = sc.rng.range(0, live.len() as u64 / 3) as usize;
        while live.len() > keep {
            let i = sc.rng.range(0, live.len() as u64 - 1) as usize;
            live.swap_remove(i);
        }
        info!("wave {}: heap {} of {} KiB in use", wave + 1, heap::used() >> 10, heap::total() >> 10);
        pause(sc.millis(50, 400));
    }
    sc.end(&alloc::format!("{allocated} allocations in {waves} waves; heap grown by {grown} pages"))
}
