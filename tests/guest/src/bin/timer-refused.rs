//! Guest test agent: a program whose description does not give it the `timer` interface. Its
//! sleep is refused (Studio denies the lookup), and so is its every way to the timer server:
//! prints `PASS`, or `FAIL: ...` and `FAILED`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use core::time::Duration;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::protocol::timer::{self as proto, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::timer::{self, Deadline};
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

fn run() -> u64 {
    let denied = Err(AgentError::Service(ServiceError::Denied));
    let mut ok = true;
    let slept = timer::sleep(Duration::from_millis(1));
    if slept != denied {
        println!("FAIL: a sleep without the timer interface: {slept:?}");
        ok = false;
    }
    if timer::arm(Deadline(1)) != denied {
        println!("FAIL: an ARM without the timer interface was not denied");
        ok = false;
    }
    // No capability to the server anywhere in its CNode's slots Studio fills.
    for s in slot::FIRST_FREE..slot::FIRST_FREE + 16 {
        let r = Client::new(s, proto::INTERFACE).call(method::ARM, &1u64);
        if r.is_ok() {
            println!("FAIL: slot {s} reaches the timer server");
            ok = false;
        }
    }
    if ok {
        println!("sleep without the timer interface: refused");
        println!("PASS");
        0
    } else {
        println!("FAILED");
        1
    }
}
