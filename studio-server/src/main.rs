//! Studio, the cognition server. Started by the root task in an address space and CSpace of its
//! own (at a load address chosen from the instance seed), with an endpoint back to the root task
//! in slot 1 of its CNode.
//!
//! Today Studio reports in and waits for its authority; starting the system description's
//! servers and agents, the name service, and granting and revoking capabilities are the next
//! steps (see the issues).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println};

entry!(run);

/// Slot of the endpoint to the root task in Studio's CNode.
const ROOT_EP: u64 = 1;

fn run() -> u64 {
    let here = run as *const () as u64;
    println!("[studio] hello: running at {here:#x}");
    match sys::call(ROOT_EP, Msg::new(1, &[here])) {
        Ok(r) if r.msg.info.label() == 0 => {
            println!("[studio] the root task answered");
            0
        }
        other => {
            println!("[studio] no answer from the root task: {other:?}");
            1
        }
    }
}
