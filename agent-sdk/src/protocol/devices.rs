//! The `devices` interface (the device manager): drivers claim their PCI device and get its
//! pieces — one page of a memory BAR at a time, its interrupt handler, its configuration space
//! through a filter — and nothing of any other device.
//!
//! - **Claims follow the description.** A program may claim a device of a kind its description
//!   lists in `pci` (`PCI_KINDS`); the manager asks Studio (`CLIENT`) and never believes the
//!   message. One device per kind per program: a second `CLAIM` of the same kind answers the same
//!   device (so a driver that restarts gets its device back); a device claimed by one program is
//!   never handed to another.
//! - **Everything else is relative to the caller's claimed device**: a BAR is named by its index
//!   in that device, a configuration offset by its offset in that device's space. There is no
//!   way to name another device.
//! - **Capabilities come in the reply**: `BAR_PAGE` and `IRQ` answer with one capability, put in
//!   the slot the caller set as its IPC buffer's receive slot (the SDK's `devices` module does it).
//! - **Configuration writes are filtered**: the command register's I/O-space, memory-space,
//!   bus-master and INTx-disable bits, and above the header only the body of the device's
//!   vendor-specific (virtio) capabilities. Never the BARs, the expansion ROM, the interrupt
//!   line, the header, MSI, MSI-X, power management or any other capability.
//! - **Interrupt lines are shared**: the handler of a line goes to the first driver that asks;
//!   another device on it answers `IRQ` with `Busy` (its driver polls, its INTx stays disabled).
//!
//! Errors are [`ServiceError`](super::ServiceError) codes: `Denied` (a kind the description does
//! not give the caller, or no device claimed yet), `NotFound` (no unclaimed device of that kind,
//! no such BAR or page), `InvalidArgument` (an I/O-space BAR, an unaligned or out-of-range offset,
//! a write outside the filter), `Busy` (the device has no interrupt line, or another driver holds
//! it), `KernelError`.

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "devices";

/// The size of the configuration space the manager reads and writes for a driver (the PCI
/// header and capability list; extended configuration space is not reached through ports).
pub const CONFIG_SIZE: u16 = 256;

/// The first offset of the capability area (drivers may write only inside its vendor-specific
/// capabilities).
pub const CONFIG_CAPS_START: u8 = 0x40;

/// The command register's bits a driver may set or clear: I/O space, memory space, bus master,
/// INTx disable.
pub const COMMAND_WRITABLE: u16 = 0x0001 | 0x0002 | 0x0004 | 0x0400;

/// What kind of region a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BarKind {
    Memory32,
    Memory64,
    Io,
}

/// One implemented base address register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// Its index (0..=5; a 64-bit BAR takes its index and the next).
    pub index: u8,
    pub kind: BarKind,
    /// Its physical (or I/O) address, as the firmware assigned it.
    pub address: u64,
    /// Its size in bytes (a power of two).
    pub size: u64,
    pub prefetchable: bool,
}

/// A claimed device, as `CLAIM` answers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub vendor: u16,
    pub device_id: u16,
    /// Class, subclass, programming interface (the top three bytes of the class register).
    pub class: u32,
    pub bars: Vec<Bar>,
    /// Its interrupt line (a GSI), if it has an interrupt pin.
    pub gsi: Option<u8>,
}

/// Request of [`method::BAR_PAGE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarPage {
    /// The BAR's index in the caller's device.
    pub bar: u8,
    /// The 4 KiB page's index inside the BAR.
    pub page: u32,
}

/// Request of [`method::CONFIG_WRITE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigWrite {
    /// A 4-byte aligned offset.
    pub offset: u8,
    pub value: u32,
}

/// One function the manager found, for listings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSummary {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub vendor: u16,
    pub device_id: u16,
    pub class: u32,
    /// Its kind, if drivers may claim it (`PCI_KINDS`).
    pub kind: Option<String>,
    /// The program that claimed it.
    pub claimed_by: Option<String>,
    pub gsi: Option<u8>,
}

super::methods! {
    /// kind → [`Device`]: claim a device of that kind (one of the caller's `pci` kinds).
    CLAIM = 0: String => Device;
    /// [`BarPage`] → `()`: one 4 KiB page of a memory BAR of the caller's device; the reply
    /// carries the page's frame capability (device memory).
    BAR_PAGE = 1: BarPage => ();
    /// `()` → GSI: the handler of the caller's device's interrupt line; the reply carries it.
    IRQ = 2: () => u8;
    /// offset → word: a 32-bit word of the caller's device's configuration space.
    CONFIG_READ = 3: u8 => u32;
    /// [`ConfigWrite`] → `()`: a word of the caller's device's configuration space, through the
    /// filter (module doc).
    CONFIG_WRITE = 4: ConfigWrite => ();
    /// `()` → every function found, with who claimed it.
    LIST = 5: () => Vec<DeviceSummary>;
}
