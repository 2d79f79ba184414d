//! Studio, the cognition server: the capability authority of OZONE-OS.
//!
//! The root task builds Studio and hands it the system's authority: all untyped memory, interrupt
//! and I/O-port control, kernel telemetry and the initrd (its boot-information page describes the
//! slots, as the kernel's does for the root task). Studio then
//!
//! - reads the system description (`system.bin` in the initrd, see
//!   `ozone_agent_sdk::protocol::system`) and the instance seed, and derives the instance's keys
//!   ([`keys`]);
//! - makes one endpoint per interface the description names, and starts every program marked to
//!   start, each in its own CSpace and address space at a per-instance layout ([`layout`]), from
//!   its own chunk of memory ([`pool`]) — see [`lifecycle`];
//! - serves the `studio` interface ([`service`]): the name service (`LOOKUP` mints a capability
//!   to a server's endpoint badged with the caller's id into the caller's CNode), memory
//!   (`GROW_HEAP` within the quota), reports, and administration for programs with the `admin`
//!   privilege (list, caps, grant, revoke, kill, start, logs, memory, telemetry, shutdown) — each
//!   request allowed or refused by one authorisation table ([`policy`]) first;
//! - funds the secure memory server for a client from that client's own quota ([`funding`]);
//! - is every program's fault handler: a faulting program is reported, stopped, everything it had
//!   revoked and its memory reclaimed, and it is restarted if its description says so;
//! - logs every decision with its reason, and programs' reports apart from them ([`log`]).
//!
//! What Studio knows is in [`state`]; the kernel operations it makes go through [`kernel`], so
//! that the host tests run the lifecycle and the service against a model of the kernel.
//! `docs/studio.md` describes how Studio decides.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

#[cfg(test)]
mod badge_follow_review_tests;
#[cfg(test)]
mod block_review_tests;
#[cfg(test)]
mod fake;
mod funding;
mod kernel;
mod keys;
mod layout;
mod lifecycle;
mod log;
#[cfg(test)]
mod method_event_review_tests;
mod objects;
mod perf;
#[cfg(test)]
mod placement_review_tests;
mod policy;
mod pool;
#[cfg(test)]
mod refused_review_tests;
mod service;
mod state;
#[cfg(test)]
mod tests;
mod watch;

use ozone_agent_sdk::{entry, println};

entry!(run);

fn run() -> u64 {
    let here = run as *const () as u64;
    println!("[studio] hello: running at {here:#x}");
    match state::Studio::boot() {
        Ok(studio) => studio.serve(),
        Err(e) => {
            println!("[studio] cannot start the system: {e}");
            kernel::Kernel::power_off(&kernel::Sel4, 1);
            1
        }
    }
}
