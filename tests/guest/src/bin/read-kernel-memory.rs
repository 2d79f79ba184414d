//! Guest test: a root task that reads the kernel's memory. The page is present but
//! supervisor-only, so the read must fault (protection violation), be reported, and end the task.
//!
//! **Raw on purpose.** A root task testing the kernel's memory protection from ring 3: it names no
//! capability and makes no kernel call but the fault itself, so it has nothing to take from `caps`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::{entry, println};

entry!(run);

/// The kernel image's first page.
const KERNEL_TEXT: u64 = 0xffff_ffff_8020_0000;

fn run() -> u64 {
    println!("[read-kernel-memory] reading kernel text from ring 3");
    // SAFETY: not safe, on purpose: the kernel page is not user-accessible, so this faults.
    let v = unsafe { core::ptr::read_volatile(KERNEL_TEXT as *const u64) };
    println!("[read-kernel-memory] FAIL: read {v:#x} from kernel memory");
    1
}
