//! Userspace: loading programs and running them in ring 3.

/// The ELF loader (in `ozone-loader`, shared with userspace).
pub use ozone_loader::elf;
