//! The agent `outside`: asks Studio how much of its memory quota it uses, logs it and exits.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, error, info};

entry!(run);

fn run() -> u64 {
    match work() {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            1
        }
    }
}

fn work() -> Result<(), AgentError> {
    let memory = Client::studio().call(method::MY_MEMORY, &())?;
    info!("hello from `{}`: {} of {} bytes of my quota used", ozone_agent_sdk::start::name(), memory.used, memory.quota);
    Ok(())
}
