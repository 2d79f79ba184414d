//! `sc-secmem` (benign): a secure-memory user — allocates zeroed, guard-paged regions, writes and
//! checks them, seals and unseals blobs, lists its regions and frees them, in rounds drawn from
//! its seed. Every method it will use is used in the first round (the syscall shaper shapes
//! `secmem`).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::secmem::{Region, SecureMemory};
use ozone_agent_sdk::{AgentError, entry};
use ozone_scenarios::{Scenario, begin, pause};

entry!(run);

/// Fill `r` with a pattern drawn from `tag` and check it reads back.
#[allow(unsafe_code)]
fn fill_and_check(r: &Region, tag: u8) -> bool {
    // SAFETY: `r` was just allocated by this program and is not freed until after this returns;
    // no other reference to its bytes exists.
    let bytes = unsafe { r.bytes_mut() };
    let fresh = bytes.iter().all(|b| *b == 0);
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_add(tag);
    }
    fresh && bytes.iter().enumerate().all(|(i, b)| *b == (i as u8).wrapping_add(tag))
}

fn round(sc: &mut Scenario, sm: &SecureMemory, n: u64) -> Result<bool, AgentError> {
    let mut ok = true;
    let mut regions: Vec<Region> = Vec::new();
    for _ in 0..sc.rng.range(1, 3) {
        let r = sm.alloc(sc.rng.range(1, 4) as u32)?;
        ok &= fill_and_check(&r, n as u8);
        regions.push(r);
    }
    let mut secret = alloc::vec![0u8; sc.rng.range(1, 512) as usize];
    sc.rng.fill(&mut secret);
    let blob = sm.seal(&secret)?;
    ok &= sm.unseal(&blob)? == secret;
    ok &= sm.list()?.len() >= regions.len();
    let _ = sm.usage()?;
    for r in regions {
        sm.free(r)?;
    }
    Ok(ok)
}

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let sm = match SecureMemory::connect() {
        Ok(s) => s,
        Err(e) => return sc.fail("connecting to secure memory", e),
    };
    let rounds = sc.steps(5, 25);
    let mut bad = 0;
    for n in 0..rounds {
        match round(&mut sc, &sm, n) {
            Ok(true) => {}
            Ok(false) => bad += 1,
            Err(e) => return sc.fail(&alloc::format!("round {n}"), e),
        }
        pause(sc.millis(20, 300));
    }
    sc.end(&alloc::format!("{rounds} rounds, {bad} with unexpected contents"))
}
