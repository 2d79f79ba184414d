//! The timer server's logic, apart from its hardware and its IPC so that the host tests run it:
//! the clients' deadlines ([`queue`]) and the PIT's arithmetic ([`pit`]).
#![cfg_attr(not(test), no_std)]

pub mod pit;
pub mod queue;
