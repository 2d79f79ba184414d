//! The network server's logic (crate `ozone-net`; the program that drives it with a virtio-net
//! driver is the crate's binary).
//!
//! - [`nic`]: the [`nic::Nic`] trait a driver implements, its smoltcp adapter, and
//!   [`nic::Link`], two in-memory NICs back to back for tests;
//! - [`stack`]: the interface (static or DHCP), the poll loop, and the socket table: every socket
//!   one client's, with per-client limits;
//! - [`rules`]: which ports a program may listen on and which peers it may reach, parsed from the
//!   system description's `net_listen` and `net_connect`;
//! - [`service`]: the `net` interface (`ozone_agent_sdk::protocol::net`) on top of a stack and a
//!   [`service::Directory`] of clients' rules.
//!
//! Everything here builds on the host, where `cargo test -p ozone-net` runs whole servers over
//! [`nic::Link`]s, hostile clients and a frame fuzzer.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod nic;
pub mod rules;
pub mod service;
pub mod stack;

#[cfg(test)]
mod tests;

/// SplitMix64: the next pseudo-random word of `state` (link impairments, port choice, tests).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut x = *state;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
