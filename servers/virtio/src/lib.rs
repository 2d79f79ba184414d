//! Userspace virtio drivers' side of the device manager (`devices` interface) and of
//! `virtio-drivers`: [`device`] claims the program's device and maps its BAR pages and a DMA
//! arena into the program's own address space; [`hal`] is `virtio-drivers`' `Hal` over them;
//! [`arena`] and [`window`] are the host-tested bookkeeping; [`blk`] (a block device) and [`net`]
//! (an Ethernet device) are on top,
//! interrupt-driven.
//!
//! DMA: the device reaches physical memory directly (no IOMMU on QEMU's default machine), so the
//! driver gives it addresses inside its own arena only — request buffers are bounced through it
//! (`Hal::share` copies in, `unshare` copies out) — but nothing stops a driver from giving any
//! other address. `docs/devices.md` says what that means.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod arena;
pub mod blk;
pub mod device;
pub mod hal;
pub mod net;
pub mod window;
