//! Userspace: loading programs and running them in ring 3.

pub mod elf;
#[cfg(target_os = "none")]
pub mod task;
