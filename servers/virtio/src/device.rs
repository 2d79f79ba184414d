//! Claiming the program's device from the device manager and mapping it.
//!
//! The driver program has a pool, its own CNode and its own address space (Studio gives them to
//! programs with `pci` claims). [`claim`] asks the manager for its device, makes the DMA arena
//! (frames retyped one after another from the pool, so physically contiguous — checked), maps
//! the arena and every page of the device's memory BARs in [`DEVICE_WINDOW`], takes the
//! interrupt handler and points it at the program's notification with [`DEVICE_SIGNAL`], and
//! hands the whole to the [`Hal`](crate::hal::OzoneHal).

use alloc::string::String;
use core::cell::RefCell;

use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_agent_sdk::caps::{self, CNode, IrqHandler, Notification, Untyped, VSpace};
use ozone_agent_sdk::process::Alloc;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::devices::{self as proto, BarKind, BarPage, ConfigWrite, Device, method};
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::slots::Slots;
use ozone_agent_sdk::{AgentError, kernel, process, start};
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};

use crate::arena::{Arena, PAGE};
use crate::hal::STATE;
use crate::window::{Mapped, Window};

/// Where drivers map their device: the DMA arena at the start, the BARs from 1 GiB in.
pub const DEVICE_WINDOW: u64 = 0x380_0000_0000;
const BARS_AT: u64 = DEVICE_WINDOW + (1 << 30);
/// The most pages of one BAR a driver maps (virtio BARs are a few pages).
pub const MAX_BAR_PAGES: u64 = 256;
/// The notification bit the device's interrupt signals.
pub const DEVICE_SIGNAL: u64 = 1 << 39;

/// Why a device could not be claimed or set up.
#[derive(Debug)]
pub enum DeviceError {
    /// No pool, CNode or address space of its own (no `pci` claim in its description).
    NotADriver,
    /// The manager's answer (`Denied`, `NotFound`, ...).
    Manager(AgentError),
    Kernel(Error, &'static str),
    /// The pool's frames came back not contiguous.
    ArenaNotContiguous,
    /// A capability the manager should have sent did not arrive.
    NoCapability(&'static str),
}

/// A claimed, mapped device.
pub struct Claimed {
    pub device: Device,
    pub devices: Client,
    pub irq: Option<IrqHandler>,
}

/// Objects from the pool, slots from this program's own range.
struct Own {
    pool: Untyped,
    cnode: CNode,
    slots: RefCell<Slots>,
}

impl process::Alloc for Own {
    fn cnode(&self) -> u64 {
        slot::OWN_CNODE
    }
    fn slot(&self) -> Result<u64, Error> {
        self.slots.borrow_mut().alloc().ok_or(Error::NotEnoughMemory)
    }
    fn free_slot(&self, s: u64) {
        self.slots.borrow_mut().free(s);
    }
    fn retype(&self, ty: ObjectType, size_bits: u64) -> Result<u64, Error> {
        let s = self.slot()?;
        self.pool
            .retype_into(ty, size_bits, self.cnode, s, 1)
            .map_err(caps::kernel_error)
            .inspect_err(|_| self.free_slot(s))?;
        Ok(s)
    }
}

/// The first slot a driver manages itself (below are Studio's).
const OWN_FIRST_SLOT: u64 = slot::CLIENT_SIGNALS;

/// Claim a device of `kind`, with a DMA arena of `arena_pages` pages.
pub fn claim(kind: &str, arena_pages: usize) -> Result<Claimed, DeviceError> {
    let (Some(pool), Some(cnode), Some(vspace), Some(info)) =
        (caps::pool(), caps::own_cnode(), caps::own_vspace(), start::info())
    else {
        return Err(DeviceError::NotADriver);
    };
    let own = Own { pool, cnode, slots: RefCell::new(Slots::new(OWN_FIRST_SLOT, 1 << info.cnode_radix)) };
    let devices = Client::lookup(proto::INTERFACE).map_err(DeviceError::Manager)?;
    let device = devices.call(method::CLAIM, &String::from(kind)).map_err(DeviceError::Manager)?;

    // The arena: contiguous frames, mapped read-write.
    let first = own.slot().map_err(|e| DeviceError::Kernel(e, "slots for the arena"))?;
    let mut slots = alloc::vec![first];
    for _ in 1..arena_pages {
        slots.push(own.slot().map_err(|e| DeviceError::Kernel(e, "slots for the arena"))?);
    }
    let mut phys0 = 0;
    for (i, &s) in slots.iter().enumerate() {
        pool.retype_into(ObjectType::Frame4K, 0, cnode, s, 1)
            .map_err(|e| DeviceError::Kernel(caps::kernel_error(e), "arena frames"))?;
        let p = kernel::frame_get_address(s).map_err(|e| DeviceError::Kernel(e, "arena frame address"))?;
        if i == 0 {
            phys0 = p;
        } else if p != phys0 + (i * PAGE) as u64 {
            return Err(DeviceError::ArenaNotContiguous);
        }
    }
    for (i, &s) in slots.iter().enumerate() {
        map(&own, vspace, s, DEVICE_WINDOW + (i * PAGE) as u64)?;
    }
    let arena = Arena::new(phys0, DEVICE_WINDOW, arena_pages);

    // The BARs, page by page, each frame sent by the manager.
    let mut window = Window::default();
    let mut va = BARS_AT;
    // (A memory BAR smaller than a page is not mapped: the manager gives no frame of a page
    // that may hold another device's registers too.)
    for bar in device.bars.iter().filter(|b| b.kind != BarKind::Io && b.size >= PAGE as u64) {
        let pages = (bar.size as usize).div_ceil(PAGE).min(MAX_BAR_PAGES as usize) as u64;
        for page in 0..pages {
            let s = own.slot().map_err(|e| DeviceError::Kernel(e, "slots for BAR pages"))?;
            receive_into(s, || devices.call(method::BAR_PAGE, &BarPage { bar: bar.index, page: page as u32 }))
                .map_err(DeviceError::Manager)?;
            match kernel::frame_get_address(s) {
                Ok(p) if p == bar.address + page * PAGE as u64 => {}
                _ => return Err(DeviceError::NoCapability("a BAR page's frame")),
            }
            map(&own, vspace, s, va + page * PAGE as u64)?;
        }
        window.add(Mapped { phys: bar.address, virt: va, size: pages * PAGE as u64 });
        va += (pages * PAGE as u64).next_power_of_two().max(1 << 21);
    }

    // The interrupt, signalling this program's notification with DEVICE_SIGNAL. A line another
    // driver already holds (INTx lines are shared) answers `Busy`: this driver then polls.
    let line = if device.gsi.is_some() {
        let h = own.slot().map_err(|e| DeviceError::Kernel(e, "a slot for the handler"))?;
        match receive_into(h, || devices.call(method::IRQ, &())) {
            Ok(_) => Some(h),
            Err(AgentError::Service(ServiceError::Busy)) => None,
            Err(e) => return Err(DeviceError::Manager(e)),
        }
    } else {
        None
    };
    let irq = if let Some(h) = line {
        let badged = own.slot().map_err(|e| DeviceError::Kernel(e, "a slot for the signal"))?;
        let n = caps::notification().ok_or(DeviceError::NotADriver)?;
        cnode
            .mint(n, badged, rights::WRITE, DEVICE_SIGNAL)
            .map_err(|e| DeviceError::Kernel(caps::kernel_error(e), "minting the signal"))?;
        let handler = IrqHandler::from_slot(h);
        handler
            .set_notification(Notification::from_slot(badged))
            .map_err(|_| DeviceError::NoCapability("the interrupt handler"))?;
        Some(handler)
    } else {
        None
    };
    *STATE.lock() = Some((arena, window));
    Ok(Claimed { device, devices, irq })
}

fn map(own: &Own, vspace: VSpace, frame: u64, va: u64) -> Result<(), DeviceError> {
    process::map_frame_with_tables(own, frame, vspace.slot(), va, rights::READ | rights::WRITE, false)
        .map_err(|e| DeviceError::Kernel(e, "mapping"))
}

/// Run `call` with this program's receive slot set to `slot` of its own CNode (for a reply that
/// carries a capability), and clear it after.
fn receive_into<T>(slot: u64, call: impl FnOnce() -> ozone_agent_sdk::Result<T>) -> ozone_agent_sdk::Result<T> {
    let b = kernel::ipc_buffer();
    b.receive_cnode = slot::OWN_CNODE;
    b.receive_index = slot;
    b.receive_depth = 64;
    let r = call();
    kernel::ipc_buffer().receive_cnode = 0;
    r
}

/// The device's configuration space through the manager: `virtio-drivers` reads the capability
/// list and BARs with it. Reads of other functions answer all-ones (nothing there).
pub struct ManagedConfig {
    devices: Client,
    own: DeviceFunction,
}

impl ManagedConfig {
    pub fn new(c: &Claimed) -> ManagedConfig {
        let own = DeviceFunction { bus: c.device.bus, device: c.device.device, function: c.device.function };
        ManagedConfig { devices: Client::new(c.devices.slot(), proto::INTERFACE), own }
    }

    /// A PCI root over it, and the device's function, for `PciTransport::new`.
    pub fn root(c: &Claimed) -> (PciRoot<ManagedConfig>, DeviceFunction) {
        let m = ManagedConfig::new(c);
        let df = m.own;
        (PciRoot::new(m), df)
    }
}

impl ConfigurationAccess for ManagedConfig {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        if df != self.own {
            return 0xffff_ffff;
        }
        self.devices.call(method::CONFIG_READ, &offset).unwrap_or(0xffff_ffff)
    }
    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        if df == self.own {
            let _ = self.devices.call(method::CONFIG_WRITE, &ConfigWrite { offset, value: data });
        }
    }
    unsafe fn unsafe_clone(&self) -> Self {
        ManagedConfig { devices: Client::new(self.devices.slot(), proto::INTERFACE), own: self.own }
    }
}
