//! A memory user: shows where an agent's memory comes from and where it ends. It uses the heap
//! Studio mapped at start, asks Studio for more (`heap::grow`, charged to its quota from
//! `initrd/system.toml`), fills and checks what it got, then asks for more than its quota allows
//! and is refused — the refusal is an error value, and Studio's log records the decision.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::protocol::studio::{MemInfo, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, heap, println};

entry!(run);

fn run() -> u64 {
    match work() {
        Ok(()) => 0,
        Err(e) => {
            println!("failed: {e}");
            1
        }
    }
}

fn work() -> Result<(), AgentError> {
    let studio = Client::studio();
    let m: MemInfo = studio.call(method::MY_MEMORY, &())?;
    println!("quota {} KiB, {} KiB used, heap {} KiB", m.quota >> 10, m.used >> 10, (m.heap_end - m.heap_base) >> 10);
    let added = heap::grow(64)?;
    println!("grew the heap by {} KiB", added >> 10);
    // Use more than the first heap had: 320 KiB in one vector, every byte checked.
    let n = 320 * 1024;
    let v: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let ok = v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8);
    println!("filled and checked {} KiB: {}", n >> 10, if ok { "ok" } else { "CORRUPT" });
    match heap::grow(1 << 16) {
        Err(e) => println!("asking for 256 MiB more was refused: {e}"),
        Ok(b) => println!("asking for 256 MiB more unexpectedly gave {b} bytes"),
    }
    let m: MemInfo = studio.call(method::MY_MEMORY, &())?;
    println!("done: {} KiB of {} KiB used", m.used >> 10, m.quota >> 10);
    if ok { Ok(()) } else { Err(AgentError::BadReply) }
}
