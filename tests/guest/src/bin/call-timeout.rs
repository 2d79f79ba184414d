//! Guest test agent: calls with a deadline (`Client::call_timeout`, the QEMU test
//! `call_timeout`).
//!
//! A call to a server that never answers (`mute`) ends with `AgentError::TimedOut`, never before
//! its deadline; calls answered in time are unaffected and leave no stale signal behind (the next
//! ones are not cut short). Then, while the shell kills `echo`, it calls `echo` with a 100 ms
//! timeout in a loop: the call the kill meets fails with `ServerGone` well within its timeout
//! (whether it was queued, held by the server, or made after the kill), never `TimedOut`; it
//! looks `echo` up again until the new incarnation runs and calls it with a timeout once more.
//! It is an agent, so the syscall shaper enforces its warm-up: every kind of operation is used
//! in the first calls.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::time::Duration;

use ozone_agent_sdk::protocol::echo::{self, method};
use ozone_agent_sdk::protocol::{Method, ServiceError};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::timer;
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

/// A method of `mute` (which answers none).
const MUTE_ANY: Method<u64, u64> = Method::new(0);

fn run() -> u64 {
    match check() {
        Ok(()) => {
            println!("PASS");
            0
        }
        Err(why) => {
            println!("FAIL: {why}");
            1
        }
    }
}

/// Microseconds in `ticks` of the clock.
fn micros(ticks: u64, hz: u64) -> u128 {
    timer::duration_of(ticks, hz).as_micros()
}

fn check() -> Result<(), String> {
    let hz = timer::tsc_hz().map_err(|e| format!("clock: {e}"))?;
    let mut echo = Client::lookup(echo::INTERFACE).map_err(|e| format!("no echo: {e}"))?;
    let mute = Client::lookup("mute").map_err(|e| format!("no mute: {e}"))?;

    // A server that never answers: timed out, not before the deadline.
    let timeout = Duration::from_millis(20);
    let t0 = timer::now();
    match mute.call_timeout(MUTE_ANY, &1, timeout) {
        Err(AgentError::TimedOut) => {}
        other => return Err(format!("a call to a server that never answers ended with {other:?}")),
    }
    let took = timer::now() - t0;
    if took < timer::ticks_of(timeout, hz).unwrap_or(u64::MAX) {
        return Err(format!("timed out early: after {} µs of 20000", micros(took, hz)));
    }
    println!("a server that never answers: timed out (asked 20000 µs, took {} µs)", micros(took, hz));
    timer::sleep(Duration::from_millis(1)).map_err(|e| format!("sleep: {e}"))?;

    // Answered calls: unaffected, and no signal of theirs cuts a later call short. (REVERSE
    // first: the shaper enforces what the warm-up used, and the loop below ends it.)
    let long = "a request longer than the registers, through the IPC buffer";
    match echo.call_timeout(method::REVERSE, long, Duration::from_millis(50)) {
        Ok(r) if r == echo::reverse(long) => {}
        other => return Err(format!("a long request with a timeout: {other:?}")),
    }
    for n in 0..20u64 {
        match echo.call_timeout(method::ECHO, &n, Duration::from_millis(50)) {
            Ok(got) if got == n => {}
            other => return Err(format!("echo {n} with a timeout: {other:?}")),
        }
    }
    println!("ready: 21 calls answered within their timeouts");

    // The kill: the call it meets fails at once, within its timeout.
    let timeout = Duration::from_millis(100);
    let mut n = 0u64;
    let (err, took) = loop {
        let t = timer::now();
        match echo.call_timeout(method::ECHO, &n, timeout) {
            Ok(got) if got == n => n += 1,
            Ok(got) => return Err(format!("echo answered {got} to {n}")),
            Err(e) => break (e, timer::now() - t),
        }
    };
    if err != AgentError::ServerGone {
        return Err(format!("the call the kill met ended with {err:?}, not ServerGone"));
    }
    if took >= timer::ticks_of(timeout, hz).unwrap_or(0) {
        return Err(format!("the call the kill met waited out its timeout ({} µs)", micros(took, hz)));
    }
    println!("echo killed: server gone after {} µs, within the 100000 µs timeout ({n} calls before)", micros(took, hz));

    // Recover: look it up again until the new incarnation runs.
    let mut refused = 0u32;
    loop {
        match echo.reconnect() {
            Ok(()) => break,
            Err(AgentError::Service(ServiceError::NotRunning)) => {
                refused += 1;
                timer::sleep(Duration::from_millis(1)).map_err(|e| format!("sleep: {e}"))?;
            }
            Err(e) => return Err(format!("reconnect: {e}")),
        }
    }
    match echo.call_timeout(method::ECHO, &7, timeout) {
        Ok(7) => {}
        other => return Err(format!("echo after the restart: {other:?}")),
    }
    println!("recovered: looked `echo` up again ({refused} lookups refused meanwhile); echo answered in time");
    Ok(())
}
