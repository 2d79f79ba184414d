//! Guest test: a root task that dereferences an unmapped address. The kernel must report the
//! fault, end the task and shut down cleanly instead of going down with it.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    println!("[user-fault] writing to an unmapped address");
    // SAFETY: not safe at all, on purpose: the page at 0x10 is never mapped, so this faults and
    // the kernel ends the task.
    unsafe { core::ptr::write_volatile(0x10 as *mut u64, 0xdead) };
    println!("[user-fault] FAIL: the write did not fault");
    1
}
