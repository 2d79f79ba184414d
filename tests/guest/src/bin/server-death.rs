//! Guest test agent: a client of `echo` while the server is killed and started again from the
//! shell (the QEMU test `server_death`).
//!
//! Once Studio says the server stopped, a call through its old capability must fail at once
//! with `AgentError::ServerGone` (Studio revoked every capability to the stopped server), never
//! wait; so does the next, and a lookup is answered `ServiceError::NotRunning`. Then it looks `echo` up again until the new incarnation runs,
//! and checks that it is a new one: its request count started again, below the count it had
//! reached before the kill.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::echo::{self, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println, sys};

entry!(run);

/// Calls made before it says it is ready: the count the old incarnation reaches at least.
const WARM_CALLS: u64 = 20;

fn run() -> u64 {
    match check() {
        Ok(()) => 0,
        Err(why) => {
            println!("FAIL: {why}");
            1
        }
    }
}

fn check() -> Result<(), alloc::string::String> {
    use alloc::format;
    let mut echo = Client::lookup(echo::INTERFACE).map_err(|e| format!("no echo: {e}"))?;
    for n in 0..WARM_CALLS {
        let got = echo.call(method::ECHO, &n).map_err(|e| format!("echo {n}: {e}"))?;
        if got != n {
            return Err(format!("echo answered {got} to {n}"));
        }
        sys::yield_now();
    }
    let before = echo.call(method::COUNT, &()).map_err(|e| format!("count: {e}"))?;
    println!("ready: echo answered {WARM_CALLS} calls, count {before} (slot {})", echo.slot());

    // Wait for the kill outside any call to `echo`: asking Studio, which answers a lookup of a
    // running server with the capability already held, and `NotRunning` once it stopped. (A
    // call `echo` had received and not answered when it was killed waits for the kernel to
    // fail it; this test is about the capability.)
    let mut polls: u64 = 0;
    loop {
        match Client::lookup(echo::INTERFACE) {
            Ok(c) if c.slot() == echo.slot() => polls += 1,
            Ok(c) => return Err(format!("a lookup while it runs gave another slot ({})", c.slot())),
            Err(AgentError::Service(ServiceError::NotRunning)) => break,
            Err(e) => return Err(format!("lookup while waiting for the kill: {e}")),
        }
        sys::yield_now();
    }
    let gone = match echo.call(method::ECHO, &polls) {
        Err(e) => e,
        Ok(n) => return Err(format!("the stopped server answered {n}")),
    };
    if gone != AgentError::ServerGone {
        return Err(format!("the first call after the kill failed with {gone:?}, not ServerGone"));
    }
    println!("echo gone: the first call after the kill: {gone}");
    // The old capability stays gone: no call waits for the next incarnation.
    match echo.call(method::ECHO, &1u64) {
        Err(AgentError::ServerGone) => println!("a call while it is down: server gone"),
        other => return Err(format!("a call while it is down: {other:?}")),
    }
    match Client::lookup(echo::INTERFACE) {
        Err(AgentError::Service(ServiceError::NotRunning)) => {
            println!("lookup while it is down: {}", ServiceError::NotRunning)
        }
        Err(e) => return Err(format!("lookup while it is down: {e}")),
        Ok(c) => return Err(format!("lookup while it is down gave slot {}", c.slot())),
    }

    // Recover: look it up again until the new incarnation runs.
    let mut tries: u64 = 0;
    loop {
        match echo.reconnect() {
            Ok(()) => break,
            Err(AgentError::Service(ServiceError::NotRunning)) => tries += 1,
            Err(e) => return Err(format!("reconnect: {e}")),
        }
        sys::yield_now();
    }
    let got = echo.call(method::ECHO, &7u64).map_err(|e| format!("echo after the restart: {e}"))?;
    let after = echo.call(method::COUNT, &()).map_err(|e| format!("count after the restart: {e}"))?;
    if got != 7 {
        return Err(format!("echo answered {got} to 7 after the restart"));
    }
    if after >= before {
        return Err(format!("count {after} after the restart, {before} before: the old state survived"));
    }
    println!(
        "recovered: looked `{}` up again ({tries} lookups refused meanwhile); echo answered {got}; \
         a new incarnation (count {after}, was {before})",
        echo.interface()
    );
    Ok(())
}
