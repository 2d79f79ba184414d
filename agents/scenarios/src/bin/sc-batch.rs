//! `sc-batch` (benign): a batch job against `sc-rr` — a few batches, each a table of values
//! written (`PUT`) back to back as fast as the server answers and its last values read back
//! (`GET`) and checked, with a short rest between batches. Every request is ordinary and
//! answered, at a rate of the order of a flood's: what a busy, well-behaved client looks like.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::entry;
use ozone_scenarios::rr::{self, Put, method};
use ozone_scenarios::{begin_traffic, pause};

entry!(run);

/// The keys the job writes: the upper half of the server's, which the other clients leave alone.
const FIRST_KEY: u32 = rr::MAX_KEYS as u32 / 2;
const KEYS: u64 = rr::MAX_KEYS as u64 / 2;

fn run() -> u64 {
    let (mut sc, t) = match begin_traffic() {
        Ok(started) => started,
        Err(status) => return status,
    };
    let client = t.client();
    let batches = sc.steps(3, 8);
    let (mut calls, mut wrong) = (0u64, 0u64);
    for b in 0..batches {
        let rows = sc.rng.range(50, 250);
        let base = sc.rng.next_u64();
        let key = |i: u64| FIRST_KEY + (i % KEYS) as u32;
        for i in 0..rows {
            if let Err(e) = client.call(method::PUT, &Put { key: key(i), value: base.wrapping_add(i) }) {
                return sc.fail(&alloc::format!("batch {b}, row {i}"), e);
            }
            calls += 1;
        }
        // Each key's last value.
        for i in rows.saturating_sub(KEYS)..rows {
            match client.call(method::GET, &key(i)) {
                Ok(v) if v == Some(base.wrapping_add(i)) => {}
                Ok(_) => wrong += 1,
                Err(e) => return sc.fail(&alloc::format!("batch {b}, reading row {i}"), e),
            }
            calls += 1;
        }
        pause(sc.millis(20, 400));
    }
    sc.end(&alloc::format!("{batches} batches, {calls} calls, {wrong} values read back wrong"))
}
