//! Userspace: loading programs and running them in ring 3.

pub mod elf;
