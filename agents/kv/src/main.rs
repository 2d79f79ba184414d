//! The `kv` server: serves the `kv` interface (the `kv-protocol` crate). Studio gives it
//! the interface's endpoint because its `[[program]]` block says `provides = ["kv"]`; each
//! request carries the client's badge (its program id).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;

use kv_protocol::{INTERFACE, MAX_KEY, MAX_KEYS, Put, id, method};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::{entry, error, info, rpc};

entry!(run);

fn run() -> u64 {
    // The endpoint where the description's `provides` puts the interface: a server whose
    // description does not provide `INTERFACE` stops here, saying so.
    let mut server = match rpc::Server::provided(INTERFACE) {
        Ok(server) => server,
        Err(e) => {
            error!("cannot serve `{INTERFACE}`: {e}");
            return 1;
        }
    };
    info!("serving `{INTERFACE}`");
    let mut store: BTreeMap<String, u64> = BTreeMap::new();
    server.serve(|req| match req.method {
        id::PUT => rpc::handle(req, method::PUT, |put: Put| {
            if put.key.len() > MAX_KEY {
                return Err(ServiceError::InvalidArgument);
            }
            if store.len() >= MAX_KEYS && !store.contains_key(&put.key) {
                return Err(ServiceError::QuotaExceeded);
            }
            Ok(store.insert(put.key, put.value))
        }),
        id::GET => rpc::handle(req, method::GET, |key: String| Ok(store.get(&key).copied())),
        _ => Err(ServiceError::UnknownMethod),
    })
}
