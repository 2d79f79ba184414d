//! Guest test agent at the top of the agents' band (119): tries to raise a thread — its own or any
//! other — into the servers' band. A program is given no capability to its own thread, and Studio
//! makes every program thread's maximum controlled priority its own priority, so every attempt
//! must be refused: TCB SetPriority and SetMCPriority through every slot of its CNode (2^8), with
//! every slot as the authority it names, to the bottom of the servers' band and to 255: every slot
//! claimed as a thread ([`Tcb`]), as an attacker would. Its two endpoints (Studio's and the
//! console's, `caps::studio()` and `caps::log()`) are left out: an invocation on an endpoint is a
//! message to its server, not a thread operation.
//!
//! Then it checks that it still runs and Studio still answers, and exits. Every line starts with
//! `[priority-probe]`; a failure is `[priority-probe] FAIL: ...`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_agent_sdk::caps::{self, Tcb};
use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::protocol::system::{AGENT_PRIORITY_MAX, SERVER_PRIORITY_MIN};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{entry, println};

entry!(run);

/// Slots of its CNode (`CNODE_RADIX` 8 in Studio).
const SLOTS: u64 = 256;

fn run() -> u64 {
    let mut tried = 0u64;
    let mut raised = 0u64;
    // The target slots: every slot but the endpoints (Studio, the console log capability) and
    // its own notification (any invocation of those is a message: the kernel cannot tell it from
    // a thread operation); the authorities: the same, and those are not threads either way.
    let own = caps::notification().map_or(u64::MAX, |n| n.slot());
    let endpoints = [caps::studio().slot(), caps::log().slot(), own];
    let slots = || (0..SLOTS).filter(|s| !endpoints.contains(s)).map(Tcb::from_slot);
    for target in slots() {
        for authority in [target.slot(), 0, 2, 16].map(Tcb::from_slot) {
            for prio in [u64::from(SERVER_PRIORITY_MIN), 255] {
                for (what, r) in [
                    ("SetPriority", target.set_priority(authority, prio)),
                    ("SetMCPriority", target.set_mc_priority(authority, prio)),
                ] {
                    tried += 1;
                    if r.is_ok() {
                        raised += 1;
                        println!("FAIL: {what} to {prio} through slot {} worked", target.slot());
                    }
                }
            }
        }
    }
    println!(
        "at priority {AGENT_PRIORITY_MAX}: {tried} attempts to raise a thread to {SERVER_PRIORITY_MIN} \
         or 255: {} refused",
        tried - raised
    );
    let studio = Client::studio().call(method::MY_MEMORY, &()).is_ok();
    if !studio {
        println!("FAIL: Studio does not answer");
    }
    println!("done");
    u64::from(raised != 0 || !studio)
}
