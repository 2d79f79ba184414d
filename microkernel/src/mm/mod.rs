//! Memory management: the boot memory map, physical frames and the kernel heap.

pub mod memmap;
