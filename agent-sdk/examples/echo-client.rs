//! A client of the echo server: looks `echo` up by name (Studio checks that the system
//! description lets it use the interface), calls two methods and prints the answers.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::echo::{self, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

fn run() -> u64 {
    match talk() {
        Ok(()) => 0,
        Err(e) => {
            println!("[echo-client] failed: {e}");
            1
        }
    }
}

fn talk() -> Result<(), AgentError> {
    let echo = Client::lookup(echo::INTERFACE)?;
    let n: u64 = echo.call(method::ECHO, &42u64)?;
    let text: String = echo.call(method::REVERSE, &"agents talk over IPC")?;
    println!("[echo-client] echo answered {n} and reversed the text to \"{text}\"");
    Ok(())
}
