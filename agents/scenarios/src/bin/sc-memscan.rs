//! `sc-memscan` (hostile): memory scanning through faults. It reads its own stack, heap and image
//! (mapped: no fault), then reads addresses of a scan through the address space where nothing is
//! mapped: the first such read faults and Studio stops it. Its block says `restart = "always"`,
//! so Studio starts it again, up to its restart limit, and each life reads at another address
//! (the seed mixed with the clock): a scan of several faults.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::scenario::{Phase, Rng};
use ozone_agent_sdk::{entropy, entry, info};
use ozone_scenarios::faults::{self, Fault};
use ozone_scenarios::{begin, pause};

entry!(run);

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    // Its own memory: a byte of the stack, of each page of a heap vector, of the code.
    let on_stack = [sc.seed as u8; 64];
    let heap: Vec<u8> = alloc::vec![1u8; 64 * 1024];
    let mut sum = faults::read(on_stack.as_ptr() as u64) as u64;
    for page in (0..heap.len()).step_by(4096) {
        sum += faults::read(heap.as_ptr() as u64 + page as u64) as u64;
    }
    sum += faults::read(run as *const () as u64) as u64;
    sc.mark(Phase::Hostile);
    let mut rng = Rng::new(sc.seed ^ entropy::tsc());
    let start = faults::unmapped_address(rng.next_u64()) & !0xfff;
    let stride = 4096 << rng.range(0, 9);
    info!("read its own memory (sum {sum}); scanning from {start:#x} by {stride:#x}");
    for k in 0..16u64 {
        faults::take(Fault::ReadUnmapped(start + k * stride));
    }
    sc.end("the scan did not fault")
}
