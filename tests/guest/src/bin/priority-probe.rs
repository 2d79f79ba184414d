//! Guest test agent at the top of the agents' band (119): tries to raise a thread — its own or any
//! other — into the servers' band. A program is given no capability to its own thread, and Studio
//! makes every program thread's maximum controlled priority its own priority, so every attempt
//! must be refused: TCB SetPriority and SetMCPriority through every slot of its CNode (2^8), with
//! every slot as the authority it names, to the bottom of the servers' band and to 255. Its two
//! endpoints to Studio (slots 1 and 15) are left out: an invocation on an endpoint is a message to
//! Studio, not a thread operation.
//!
//! Then it checks that it still runs and Studio still answers, and exits. Every line starts with
//! `[priority-probe]`; a failure is `[priority-probe] FAIL: ...`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_abi::invocation as inv;
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::protocol::start::slot;
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
    // The target slots: every slot but the endpoints (Studio, the console log capability); the
    // authorities: the same, and the endpoints are not threads either way.
    let slots = || (0..SLOTS).filter(|s| *s != slot::STUDIO && *s != slot::LOG);
    for target in slots() {
        for authority in [target, 0, 2, 16] {
            for (label, prio) in [
                (inv::TCB_SET_PRIORITY, u64::from(SERVER_PRIORITY_MIN)),
                (inv::TCB_SET_PRIORITY, 255),
                (inv::TCB_SET_MC_PRIORITY, u64::from(SERVER_PRIORITY_MIN)),
                (inv::TCB_SET_MC_PRIORITY, 255),
            ] {
                tried += 1;
                if k::invoke(target, label, &[prio], &[authority]).is_ok() {
                    raised += 1;
                    println!("FAIL: label {label} to {prio} through slot {target} worked");
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
