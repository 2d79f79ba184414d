//! Guest test agent: faults at once, every time it runs. Its description says `restart = true`,
//! so Studio restarts it after each fault — until its restart limit, when Studio gives up and
//! leaves it faulted. Every round is reclaimed in full.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    println!("faulting on purpose");
    // SAFETY: not safe at all, on purpose: nothing is mapped at 0x18, so this faults and Studio
    // stops (and restarts) the program.
    unsafe { core::ptr::write_volatile(0x18 as *mut u64, 1) };
    println!("FAIL: the write did not fault");
    1
}
