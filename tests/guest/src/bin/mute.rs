//! Guest test server: `mute`, a hostile server of the interface `mute`. The test overlay adds
//! `mute` to the shaper's `uses`, so the shaper shapes it: Studio gives it a capability to the
//! shaper's endpoint (slot `SHAPER`) and signals it when the shaper has profile-control requests
//! for it. It never pulls them, and never answers a request: the QEMU test
//! `shaper_never_waits_for_a_server` checks that the shaper, and the shell that asks it, go on
//! serving, and that the other servers still enforce their clients' methods.
//!
//! Before going silent it uses what it was given against the others: through the shaper, it tries
//! to take `echo`'s requests and to report forged outcomes for them (`PULL` naming `echo`); through
//! Studio, to have servers signalled (`SHAPED`, the shaper's method). Each is refused:
//! `[mute] ...: refused`, or `[mute] FAIL: ...`.
//!
//! It receives with the raw `Recv` (not the SDK's server loop, which would pull): this is the
//! server that does everything wrong on purpose.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper::{self, Applied, MethodProfile, Pull};
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::protocol::studio;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println, sys};

entry!(run);

fn run() -> u64 {
    let shaper = Client::new(slot::SHAPER, shaper::INTERFACE);
    // Every program id the system can have: an outcome saying each is learning everything.
    let mut failed = false;
    for badge in 1..=8 {
        let forged = MethodProfile { used: 0, allowed: u64::MAX, enforcing: false, denied: 0 };
        let pull = Pull { interface: String::from("echo"), done: Some(Applied { badge, profile: Some(forged) }) };
        match shaper.call(shaper::method::PULL, &pull) {
            Err(AgentError::Service(ServiceError::Denied)) => {}
            other => {
                println!("FAIL: the shaper let it pull `echo`'s requests: {other:?}");
                failed = true;
            }
        }
    }
    if !failed {
        println!("taking `echo`'s requests from the shaper: refused");
    }
    match Client::studio().call(studio::method::SHAPED, &None::<String>) {
        Err(AgentError::Service(ServiceError::Denied)) => println!("asking Studio to signal servers: refused"),
        other => println!("FAIL: Studio signalled servers for it: {other:?}"),
    }
    println!("silent from now on");
    loop {
        // Signals (the shaper's requests) and clients' calls alike: never pulled, never answered.
        let _ = sys::recv(slot::SERVICE);
    }
}
