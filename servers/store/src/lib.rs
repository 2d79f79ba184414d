//! The storage server's logic (crate `ozone-store`): a crash-safe, encrypted key/value store on
//! a block device, and the `store` interface served over it.
//!
//! - [`block`]: the block device interface, and devices in memory for tests (one that models a
//!   volatile write cache and power cuts);
//! - [`store`]: the store — copy-on-write, a generation-numbered superblock pair, every block
//!   sealed with XChaCha20-Poly1305 and bound to its place and write; namespaces, quotas, atomic
//!   commits, hash-chained logs, recovery and scrubbing (the design is in its documentation and
//!   in `docs/storage.md`);
//! - [`service`]: the `store` interface (`ozone_agent_sdk::protocol::store`) on top of a
//!   [`store::Store`]: each client reaches only its own namespace, with limits on what it may
//!   keep open in the server;
//! - `crypto`, `codec`: key derivation and block sealing; the metadata encoding.
//!
//! Everything here builds for the bare target and is tested on the host (`cargo test -p
//! ozone-store`), against the devices in [`block`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod block;
mod codec;
mod crypto;
pub mod service;
pub mod store;

#[cfg(test)]
mod tests;
