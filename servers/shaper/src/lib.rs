//! The syscall shaper's logic (crate `ozone-shaper`; the program is `src/main.rs`).
//!
//! Every agent gets a **syscall profile**: the kernel operations its thread may make (kept by the
//! kernel per thread, `ozone_abi::profile`) and the server methods it may call (kept by every
//! server's `rpc::Server` per client badge). [`shaper::Shaper`] watches the agents Studio runs
//! (through Studio: `PROFILE_OF` reads a program's counters and kernel profile, `SET_PROFILE`
//! and `ARM_PROFILE` change an agent's; the shaper holds no thread capability), lets each run unrestricted for a warm-up window while both halves record what it
//! uses, then enforces the record: kernel `allowed = used`, and profile control `Enforce` to
//! every server interface it shapes. Anything outside the profile is denied from then on; the
//! kernel's denials reach Studio as denied-operation faults, the servers' as reports.
//!
//! Everything here also builds on the host, where `cargo test -p ozone-shaper` runs the
//! bookkeeping against a model of the kernel, Studio and the servers (`tests.rs`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod shaper;

#[cfg(test)]
mod tests;
