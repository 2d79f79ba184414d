//! Guest test server (admin privilege, priority above every shaped server): the shaper stopped
//! while servers have its control signal pending. It reads its own profile from the shaper,
//! which queues a `Get` for every server the shaper shapes and has Studio signal them
//! (`shaper::CONTROL_SIGNAL`); before any of them runs (they are all below it), it has Studio
//! stop the shaper, as an admin may. Each signalled server then pulls through its slot `SHAPER`
//! while nobody receives on the shaper's endpoint. Last it calls `echo`, and says whether it was
//! answered: the QEMU test `stopped_shaper` checks that it is (Studio took the servers'
//! capabilities to pull away with the shaper, so their pulls fail and they go on serving).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::echo;
use ozone_agent_sdk::protocol::shaper;
use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{entry, println, start};

entry!(run);

fn run() -> u64 {
    let Some(info) = start::info() else {
        println!("FAIL: no start information");
        return 1;
    };
    let (shaper, echo) = match (Client::lookup(shaper::INTERFACE), Client::lookup(echo::INTERFACE)) {
        (Ok(s), Ok(e)) => (s, e),
        (s, e) => {
            println!("FAIL: lookups: shaper {:?}, echo {:?}", s.map(|_| ()), e.map(|_| ()));
            return 1;
        }
    };
    // Its own profile: the shaper asks every server it shapes again, through Studio's signal.
    if let Err(e) = shaper.call(shaper::method::PROFILE, info.name()) {
        println!("FAIL: its own profile: {e}");
        return 1;
    }
    if let Err(e) = Client::studio().call(method::KILL, &String::from("shaper")) {
        println!("FAIL: kill shaper: {e}");
        return 1;
    }
    println!("killed the shaper with its signals pending in the servers");
    match echo.call(echo::method::ECHO, &7u64) {
        Ok(n) => {
            println!("echo answered {n} after the shaper's stop");
            0
        }
        Err(e) => {
            println!("FAIL: echo after the shaper's stop: {e}");
            1
        }
    }
}
