//! The root task: the first and only user thread the kernel starts, holding every initial
//! capability. Today it proves ring 3 works and exits; with the capability kernel it builds
//! Studio's address space and hands it authority.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    println!("{}", ozone_agent_sdk::abi::markers::ROOT_HELLO);
    0
}
