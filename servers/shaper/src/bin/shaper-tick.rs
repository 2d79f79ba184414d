//! The syscall shaper's ticker (`shaper-tick`): the shaper's clock. It runs at the lowest
//! priority and, whenever it gets the CPU — only when every other program is blocked — asks the
//! shaper (`TICK`) to look at the agents, then yields. So the shaper itself can serve requests at
//! an ordinary priority while its warm-up windows still end only at idle moments.
//!
//! It is a `server` in the system description (a system program: the shaper does not shape it,
//! and accepts `TICK` only from programs it does not shape).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper::{INTERFACE, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println, sys};

entry!(run);

fn run() -> u64 {
    // A shaper that stops (killed, or restarting) takes this capability with it: the ticker
    // looks it up again once the next one runs. It runs only when everything else is idle, so
    // waiting by yielding costs nobody anything.
    let mut shaper = match connect() {
        Ok(c) => c,
        Err(e) => {
            println!("no shaper to tick: {e}");
            return 1;
        }
    };
    loop {
        match shaper.call(method::TICK, &()) {
            Ok(()) => {}
            Err(AgentError::ServerGone) => match connect() {
                Ok(c) => shaper = c,
                Err(e) => {
                    println!("no shaper to tick: {e}");
                    return 1;
                }
            },
            Err(e) => {
                println!("the shaper refused a tick: {e}");
                return 1;
            }
        }
        sys::yield_now();
    }
}

/// Look the shaper up, waiting (yielding) while it is not running.
fn connect() -> Result<Client, AgentError> {
    loop {
        match Client::lookup(INTERFACE) {
            Err(AgentError::Service(ServiceError::NotRunning)) => sys::yield_now(),
            other => return other,
        }
    }
}
