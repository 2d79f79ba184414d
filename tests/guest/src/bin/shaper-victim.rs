//! Guest test agent: the victim of `hostile-shaper`. Its first run warms up (Call and Yield in the
//! kernel, `echo` ECHO and `shaper` STATUS), waits until the shaper enforces its profile, prints
//! `[shaper-victim] enforced`, and from then on checks, whenever it gets the CPU, that it is still
//! enforced and that `echo` REVERSE (never used) is still denied.
//!
//! A later run (the QEMU test kills it and starts it again after the attack) finds itself enforced
//! from its first request — the profile belongs to the program — and checks once that REVERSE and
//! a kernel operation it never used (NBRecv) are denied, then exits.
//!
//! Like `shaper-check` it runs at the shaper's ticker's priority (1) and yields between polls, so
//! the ticker gets its turns and the shaper can end its window. Every line starts with
//! `[shaper-victim]`; a failure is `[shaper-victim] FAIL: why`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use ozone_agent_sdk::caps;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::echo::{self, method as echo_method};
use ozone_agent_sdk::protocol::shaper::{self, Mode, method as shaper_method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, Error, entry, println, sys};

entry!(run);

/// STATUS polls before giving up on being enforced.
const MAX_POLLS: u32 = 100_000;

fn run() -> u64 {
    match check() {
        Ok(()) => 0,
        Err(why) => {
            println!("FAIL: {why}");
            1
        }
    }
}

fn fail(what: &'static str) -> impl Fn(AgentError) -> String {
    move |e| format!("{what}: {e}")
}

/// `echo` REVERSE, outside the profile, must be denied.
fn reverse_denied(echo: Client) -> Result<(), String> {
    match echo.call(echo_method::REVERSE, &"abc") {
        Err(AgentError::Service(ServiceError::Denied)) => Ok(()),
        other => Err(format!("echo REVERSE outside the profile answered {other:?}")),
    }
}

fn status(shaper: Client) -> Result<Mode, String> {
    shaper.call(shaper_method::STATUS, &()).map_err(fail("status"))
}

fn check() -> Result<(), String> {
    let shaper = Client::lookup(shaper::INTERFACE).map_err(fail("lookup of `shaper`"))?;
    let echo = Client::lookup(echo::INTERFACE).map_err(fail("lookup of `echo`"))?;
    if status(shaper)? == Mode::Enforcing {
        // A later run: what the first run learned applies again, whatever happened meanwhile.
        reverse_denied(echo)?;
        match caps::studio().nb_recv() {
            Err(AgentError::Kernel(Error::Denied)) => {}
            other => return Err(format!("nb-recv outside the profile returned {other:?}")),
        }
        let mode = status(shaper)?;
        if mode != Mode::Enforcing {
            return Err(format!("after the denials: {mode}"));
        }
        println!("after the attack: still enforcing; echo REVERSE and nb-recv denied");
        return Ok(());
    }
    let n: u64 = echo.call(echo_method::ECHO, &7u64).map_err(fail("echo during warm-up"))?;
    if n != 7 {
        return Err(format!("echo answered {n}"));
    }
    let mut polls = 0;
    loop {
        sys::yield_now();
        let mode = status(shaper)?;
        polls += 1;
        match mode {
            Mode::Enforcing => break,
            _ if polls >= MAX_POLLS => return Err(format!("still {mode} after {polls} polls")),
            _ => {}
        }
    }
    reverse_denied(echo)?;
    println!("enforced after {polls} status polls; echo REVERSE denied");
    // Until killed: still enforced, REVERSE still denied (the servers report the first denial
    // only, so this does not fill the log).
    loop {
        sys::yield_now();
        let mode = status(shaper)?;
        if mode != Mode::Enforcing {
            return Err(format!("back to {mode} after being enforced"));
        }
        reverse_denied(echo)?;
    }
}
