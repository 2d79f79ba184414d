//! The ELF loader the kernel loads the root task's image with. Every other program is loaded by
//! userspace with the same loader, through `ozone_agent_sdk::process`: Studio by the root task,
//! the rest by Studio.

/// The ELF loader (in `ozone-loader`, shared with userspace).
pub use ozone_loader::elf;
