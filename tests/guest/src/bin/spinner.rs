//! Guest test agent: spins forever without making a syscall. The scheduler's timeslices keep
//! every other thread of its priority running, and higher priorities are not disturbed at all;
//! `kill spinner` (Studio revoking its memory) is the only way it stops.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    println!("spinning forever");
    loop {
        core::hint::spin_loop();
    }
}
