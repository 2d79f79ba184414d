//! `sc-bulk` (benign): bulk transfers through `sc-rr` — a few "files", each sent in chunks of
//! 256 to 512 bytes (`ECHO`: the largest messages the server takes) back to back as fast as the
//! server answers, every chunk checked as it comes back, and each file's digest asked of the
//! server (`HASH` over its last chunk) and checked, with a rest between files. Large messages at
//! a flood's rate, every one answered as expected: what a busy, well-behaved copy looks like.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::entry;
use ozone_scenarios::rr::{self, Hash, method};
use ozone_scenarios::{begin_traffic, pause};

entry!(run);

/// The bytes of a file's last chunk its digest is asked over (the other clients hash up to this).
const HASHED: usize = 128;

fn run() -> u64 {
    let (mut sc, t) = match begin_traffic() {
        Ok(started) => started,
        Err(status) => return status,
    };
    let client = t.client();
    let files = sc.steps(3, 8);
    let (mut calls, mut wrong) = (0u64, 0u64);
    for f in 0..files {
        let chunks = sc.rng.range(40, 300);
        let mut chunk = alloc::vec![0u8; 512];
        for c in 0..chunks {
            chunk.resize(sc.rng.range(256, 512) as usize, 0);
            sc.rng.fill(&mut chunk);
            match client.call(method::ECHO, &chunk) {
                Ok(back) if back == chunk => {}
                Ok(_) => wrong += 1,
                Err(e) => return sc.fail(&alloc::format!("file {f}, chunk {c}"), e),
            }
            calls += 1;
        }
        let data: alloc::vec::Vec<u8> = chunk.iter().copied().take(HASHED).collect();
        let rounds = sc.rng.range(1, rr::MAX_ROUNDS as u64) as u32;
        let want = rr::hash(&data, rounds);
        match client.call(method::HASH, &Hash { data, rounds }) {
            Ok(got) if got == want => {}
            Ok(_) => wrong += 1,
            Err(e) => return sc.fail(&alloc::format!("file {f}, its digest"), e),
        }
        calls += 1;
        pause(sc.millis(50, 600));
    }
    sc.end(&alloc::format!("{files} files, {calls} calls, {wrong} answers not as sent"))
}
