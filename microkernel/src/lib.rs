//! The OZONE-OS microkernel.
//!
//! The crate is split in two:
//!
//! * portable logic that also builds and is unit-tested on the host (`cargo test`): the boot-info
//!   parsers ([`boot`]), memory-map handling ([`mm::memmap`], [`mm::device`]), interrupt routing
//!   ([`interrupts`]), the initrd reader ([`initrd`]),
//!   the ELF loader ([`user::elf`]), and the capability kernel itself — objects and capabilities
//!   ([`object`]), the syscall layer and its invariant checker ([`api`]), the scheduler
//!   ([`sched`]);
//! * the x86_64 machine layer (`arch`) and the kernel proper, built only for
//!   `x86_64-unknown-none` (by `cargo xtask`).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod boot;
/// The boot archive reader (in `ozone-loader`, shared with userspace).
pub use ozone_loader::initrd;
pub mod api;
pub mod interrupts;
pub mod log;
pub mod mm;
pub mod object;
pub mod power;
pub mod sched;
pub mod user;

#[cfg(target_os = "none")]
pub mod arch;
#[cfg(all(target_os = "none", debug_assertions))]
pub mod checker;
#[cfg(target_os = "none")]
pub mod entry;
#[cfg(target_os = "none")]
pub mod kmain;
#[cfg(target_os = "none")]
pub mod rootserver;
