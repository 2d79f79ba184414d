//! Guest test agent: a hostile client of the `kv` server that `cargo xtask new-agent kv --server`
//! made (`agents/kv`). A key one byte over the limit, more keys than the server keeps, a method
//! the interface does not have: each is refused with its own error, nothing past a limit is
//! stored, and the server keeps answering. Prints `PASS` or `FAIL: why`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use kv_protocol::{INTERFACE, MAX_KEY, MAX_KEYS, Put, method};
use ozone_agent_sdk::protocol::{Method, ServiceError};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, error, info};

entry!(run);

fn run() -> u64 {
    match attack() {
        Ok(()) => {
            info!("PASS");
            0
        }
        Err(why) => {
            error!("FAIL: {why}");
            1
        }
    }
}

/// `got` must be the refusal `want`.
fn refused<T: core::fmt::Debug>(what: &str, got: Result<T, AgentError>, want: ServiceError) -> Result<(), String> {
    match got {
        Err(AgentError::Service(e)) if e == want => {
            info!("{what}: refused ({e})");
            Ok(())
        }
        other => Err(format!("{what}: expected `{want}`, got {other:?}")),
    }
}

fn attack() -> Result<(), String> {
    let kv = Client::lookup(INTERFACE).map_err(|e| format!("lookup: {e}"))?;
    let put = |key: &str, value: u64| kv.call(method::PUT, &Put { key: key.into(), value });
    let long = "k".repeat(MAX_KEY + 1);
    refused("a key of MAX_KEY + 1 bytes", put(&long, 1), ServiceError::InvalidArgument)?;
    if kv.call(method::GET, long.as_str()) != Ok(None) {
        return Err("the key over the limit was stored".into());
    }
    let longest = "k".repeat(MAX_KEY);
    put(&longest, 7).map_err(|e| format!("a key of MAX_KEY bytes: {e}"))?;
    // Fill the store: new keys until the server refuses one (it keeps at most MAX_KEYS).
    let mut added = 0;
    let refusal = loop {
        match put(&format!("fill-{added}"), added as u64) {
            Ok(_) if added <= MAX_KEYS => added += 1,
            Ok(_) => return Err(format!("the server kept {added} new keys, more than MAX_KEYS = {MAX_KEYS}")),
            Err(e) => break e,
        }
    };
    refused("a new key beyond MAX_KEYS", Err::<(), _>(refusal), ServiceError::QuotaExceeded)?;
    if kv.call(method::GET, format!("fill-{added}").as_str()) != Ok(None) {
        return Err("the key beyond the limit was stored".into());
    }
    // A key it has can still be replaced when the store is full.
    if put(&longest, 8) != Ok(Some(7)) {
        return Err("a full store refused to replace a key it has".into());
    }
    let nowhere: Method<(), ()> = Method::new(9);
    refused("method 9, which the interface does not declare", kv.call(nowhere, &()), ServiceError::UnknownMethod)?;
    match kv.call(method::GET, longest.as_str()) {
        Ok(Some(8)) => {}
        other => return Err(format!("the server no longer answers as it should: {other:?}")),
    }
    info!("the store kept at most {MAX_KEYS} keys ({added} added here)");
    Ok(())
}
