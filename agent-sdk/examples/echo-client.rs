//! A client of the echo server: looks `echo` up by name (Studio checks that the system
//! description lets it use the interface), calls two methods and logs the answers.
//!
//! It logs with `info!`/`error!` (`ozone_agent_sdk::log`): its description lists `console` in
//! `uses`, so the lines go through the serial console server, in order with the shell's output;
//! without it they would go through the kernel's debug channel, as `println!` does.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::echo::{self, method};
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
    let echo = Client::lookup(echo::INTERFACE)?;
    let n: u64 = echo.call(method::ECHO, &42u64)?;
    let text: String = echo.call(method::REVERSE, &"agents talk over IPC")?;
    info!("echo answered {n} and reversed the text to \"{text}\"");
    Ok(())
}
