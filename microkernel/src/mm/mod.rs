//! Memory management: the boot memory map, where device memory is, physical frames, the kernel heap, and the layout
//! the skim window (`ozone.kpti`) gives user address spaces.

pub mod device;
pub mod memmap;
pub mod skim;

#[cfg(target_os = "none")]
pub mod frames;
#[cfg(target_os = "none")]
pub mod heap;
