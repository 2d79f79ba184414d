//! The device manager's logic, host-tested: PCI enumeration over a configuration-space seam
//! ([`pci`]), the claims and the filters that keep each driver to its own device ([`manager`]),
//! and the carving of device memory into the frames of BAR pages ([`memory`]). The binary
//! (`main.rs`) puts the kernel behind the seams and serves the `devices` interface.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod manager;
pub mod memory;
pub mod pci;
