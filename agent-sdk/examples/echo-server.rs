//! An echo server: serves the `echo` interface (`ozone_agent_sdk::protocol::echo`). Studio gives
//! it the endpoint in slot `SERVICE` (`rpc::Server::provided`) because `initrd/system.toml` says it
//! `provides = ["echo"]`; clients reach it with `Client::lookup("echo")` and each request carries
//! the client's badge.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::echo::{self, id, method};
use ozone_agent_sdk::{entry, println, rpc};

entry!(run);

fn run() -> u64 {
    println!("serving `echo`");
    let mut answered: u64 = 0;
    // The endpoint of `echo` in this program: where the description's `provides` puts it.
    let mut server = match rpc::Server::provided(echo::INTERFACE) {
        Ok(s) => s,
        Err(e) => {
            println!("cannot serve `echo`: {e}");
            return 1;
        }
    };
    server.serve(|req| {
        answered += 1;
        match req.method {
            id::ECHO => rpc::handle(req, method::ECHO, Ok),
            id::REVERSE => rpc::handle(req, method::REVERSE, |text| Ok(echo::reverse(&text))),
            id::COUNT => rpc::handle(req, method::COUNT, |()| Ok(answered)),
            _ => Err(ServiceError::UnknownMethod),
        }
    })
}
