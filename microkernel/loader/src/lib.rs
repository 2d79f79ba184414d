//! Reading the boot archive ([`initrd`], ustar) and loading ELF programs ([`elf`]), with every
//! check on untrusted input. The kernel uses it for the root task; the root task and Studio use it
//! for every other program. Portable and heap-free; unit-tested on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod elf;
pub mod initrd;
