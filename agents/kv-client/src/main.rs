//! The agent `kv-client`: a client of the `kv` interface (the `kv-protocol` crate). Studio
//! lets it look the interface up because its `[[program]]` block lists `kv` in `uses`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use kv_protocol::{INTERFACE, Put, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, error, info};

entry!(run);

fn run() -> u64 {
    match talk() {
        Ok(()) => 0,
        Err(e) => {
            error!("{e}");
            1
        }
    }
}

fn talk() -> Result<(), AgentError> {
    let server = Client::lookup(INTERFACE)?;
    let replaced = server.call(method::PUT, &Put { key: "answer".into(), value: 42 })?;
    let value = server.call(method::GET, "answer")?;
    info!("stored 42 under `answer` (it replaced {replaced:?}), read back {value:?}");
    Ok(())
}
