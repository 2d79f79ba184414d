//! The smallest agent: says hello with the name Studio gave it, then exits with status 0.
//!
//! Built for the guest with `cargo build -p ozone-agent-sdk --examples --target
//! x86_64-unknown-none` (`cargo xtask` does this); `initrd/system.toml` names it as the binary
//! `hello`, so Studio starts it at boot.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    println!("hello from an agent: {}", ozone_agent_sdk::start::name());
    0
}
