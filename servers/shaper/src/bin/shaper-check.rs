//! A test agent for the syscall shaper (the `shaper` QEMU test): it warms up with a few kernel
//! operations (Call, Yield) and server methods (`echo` ECHO, `shaper` STATUS), waits until the
//! shaper enforces its profile (polling STATUS, which it used from the start), then steps outside
//! the profile once in each half — a new kernel operation (NBRecv) and a new method (`echo`
//! REVERSE) — and checks that both are denied while what it learned still works.
//!
//! The shaper looks at agents when its ticker runs, at the lowest priority, i.e. when the system
//! is idle; an agent that polls never lets it idle. So this one runs at the ticker's priority (1)
//! and yields between polls, which gives the ticker its turn.
//!
//! Every line it prints starts with `[shaper-check]`; the last is `[shaper-check] PASS` or
//! `[shaper-check] FAIL: why`, then `[shaper-check] done`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::echo::{self, method as echo_method};
use ozone_agent_sdk::protocol::shaper::{self, Mode, method as shaper_method};
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, Error, entry, println, sys};

entry!(run);

/// STATUS polls before giving up (each is one Call; the shaper answers when the system is idle).
const MAX_POLLS: u32 = 100_000;

fn run() -> u64 {
    let result = check();
    match &result {
        Ok(()) => println!("PASS"),
        Err(why) => println!("FAIL: {why}"),
    }
    println!("done");
    result.is_err() as u64
}

/// An error of `what`, as a message.
fn fail(what: &'static str) -> impl Fn(AgentError) -> String {
    move |e| format!("{what}: {e}")
}

fn check() -> Result<(), String> {
    let shaper = Client::lookup(shaper::INTERFACE).map_err(fail("lookup of `shaper`"))?;
    let echo = Client::lookup(echo::INTERFACE).map_err(fail("lookup of `echo`"))?;

    // Warm-up: Call and Yield in the kernel, ECHO and STATUS in the servers.
    let n: u64 = echo.call(echo_method::ECHO, &7u64).map_err(fail("echo during warm-up"))?;
    if n != 7 {
        return Err(format!("echo answered {n}"));
    }
    sys::yield_now();
    let mut polls = 0;
    loop {
        sys::yield_now();
        let mode: Mode = shaper.call(shaper_method::STATUS, &()).map_err(fail("status"))?;
        polls += 1;
        match mode {
            Mode::Enforcing => break,
            _ if polls >= MAX_POLLS => return Err(format!("still {mode} after {polls} polls")),
            _ => {}
        }
    }
    println!("profile enforced after {polls} status polls");

    // What it learned still works.
    let n: u64 = echo.call(echo_method::ECHO, &8u64).map_err(fail("echo after enforcement"))?;
    if n != 8 {
        return Err(format!("echo answered {n}"));
    }
    sys::yield_now();
    println!("learned operations still allowed: call, yield, echo ECHO, shaper STATUS");

    // A method it never used: denied by the echo server, before its handler.
    match echo.call(echo_method::REVERSE, &"abc") {
        Err(AgentError::Service(ServiceError::Denied)) => {
            println!("new method denied: echo REVERSE -> {}", ServiceError::Denied)
        }
        other => return Err(format!("echo REVERSE outside the profile answered {other:?}")),
    }
    // Its own profile, through a shaper method it never used: denied by the shaper's server.
    match shaper.call(shaper_method::PROFILE, &"shaper-check") {
        Err(AgentError::Service(ServiceError::Denied)) => {
            println!("new method denied: shaper PROFILE -> {}", ServiceError::Denied)
        }
        other => return Err(format!("shaper PROFILE outside the profile answered {other:?}")),
    }
    // A kernel operation it never used: NBRecv (on Studio's endpoint, which it could not receive
    // on anyway: without the profile the kernel would say IllegalOperation).
    match sys::nb_recv(slot::STUDIO) {
        Err(Error::Denied) => println!("new kernel operation denied: nb-recv -> Denied"),
        other => return Err(format!("nb-recv outside the profile returned {other:?}")),
    }
    // And still: the learned ones.
    let n: u64 = echo.call(echo_method::ECHO, &9u64).map_err(fail("echo after the denials"))?;
    let mode: Mode = shaper.call(shaper_method::STATUS, &()).map_err(fail("status after the denials"))?;
    if n != 9 || mode != Mode::Enforcing {
        return Err(format!("after the denials: echo {n}, mode {mode}"));
    }
    Ok(())
}
