//! Guest test agent (admin privilege): starts and kills `spinner` 100 times through Studio and
//! checks that free memory — as Studio accounts it from its untyped capabilities — is exactly
//! where it started, and that the system still starts programs afterwards.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::studio::{SystemMemory, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

const CYCLES: u32 = 100;
const VICTIM: &str = "spinner";

fn run() -> u64 {
    match cycles() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            println!("FAIL: {e}");
            1
        }
    }
}

fn cycles() -> Result<bool, AgentError> {
    let studio = Client::studio();
    let before: SystemMemory = studio.call(method::MEMORY, &())?;
    for i in 0..CYCLES {
        let _id: u64 = studio.call(method::START, &String::from(VICTIM))?;
        let () = studio.call(method::KILL, &String::from(VICTIM))?;
        if i == 0 {
            let after_one: SystemMemory = studio.call(method::MEMORY, &())?;
            println!("after one cycle: free {} bytes (before {})", after_one.free, before.free);
        }
    }
    let after: SystemMemory = studio.call(method::MEMORY, &())?;
    println!("{CYCLES} spawn/kill cycles of {VICTIM}: free memory {} bytes before, {} after", before.free, after.free);
    if after.free != before.free {
        println!("FAIL: {} bytes lost", before.free as i128 - after.free as i128);
        return Ok(false);
    }
    println!("PASS");
    Ok(true)
}
