//! Memory management: the boot memory map, physical frames and the kernel heap.

pub mod memmap;

#[cfg(target_os = "none")]
pub mod frames;
#[cfg(target_os = "none")]
pub mod heap;
