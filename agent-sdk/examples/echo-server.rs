//! An echo server: serves the `echo` interface (`ozone_agent_sdk::protocol::echo`). Studio gives
//! it the endpoint in slot `SERVICE` (`caps::service()`) because `initrd/system.toml` says it
//! `provides = ["echo"]`; clients reach it with `Client::lookup("echo")` and each request carries
//! the client's badge.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::echo::{self, id, method};
use ozone_agent_sdk::{caps, entry, println, rpc};

entry!(run);

fn run() -> u64 {
    println!("serving `echo`");
    let mut answered: u64 = 0;
    caps::service().server(echo::INTERFACE).serve(|req| {
        answered += 1;
        match req.method {
            id::ECHO => rpc::handle(req, method::ECHO, Ok),
            id::REVERSE => rpc::handle(req, method::REVERSE, |text| Ok(echo::reverse(&text))),
            id::COUNT => rpc::handle(req, method::COUNT, |()| Ok(answered)),
            _ => Err(ServiceError::UnknownMethod),
        }
    })
}
