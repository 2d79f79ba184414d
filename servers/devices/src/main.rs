//! The device manager (`devices`): Studio starts it with the `pci` device — the configuration
//! ports 0xcf8..=0xcff, the handlers of the PCI interrupt lines and copies of the device untyped
//! memory — and a pool, its own CNode (to carve frames into) and the `clients` privilege (to ask
//! Studio what a driver's description lets it claim). It enumerates PCI once at start, then
//! serves the `devices` interface: each driver gets its own device's BAR pages, interrupt handler
//! and configuration space, and nothing else (`ozone_devices::manager`).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::vec::Vec;
use ozone_abi::Error;
use ozone_abi::MessageInfo;
use ozone_abi::object::ObjectType;
use ozone_agent_sdk::caps::{self, CNode, IoPort, Untyped};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::devices::{self as proto, id, method};
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::protocol::studio::method as studio;
use ozone_agent_sdk::protocol::system::PCI_GSI_FIRST;
use ozone_agent_sdk::rpc::{Args, Client, Request, Response, handle};
use ozone_agent_sdk::slots::Slots;
use ozone_agent_sdk::{entry, kernel, println, start};
use ozone_devices::manager::{INTX_DISABLE, Manager};
use ozone_devices::memory::{Carver, DeviceMemory};
use ozone_devices::pci::{self, ConfigSpace};

entry!(run);

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;

/// Configuration mechanism #1 through the I/O-port capability.
struct Ports(IoPort);

impl ConfigSpace for Ports {
    fn read32(&mut self, address: u32) -> u32 {
        // A refused port access reads as an absent device does.
        self.0.out32(CONFIG_ADDRESS, address).and_then(|()| self.0.in32(CONFIG_DATA)).unwrap_or(0xffff_ffff)
    }
    fn write32(&mut self, address: u32, value: u32) {
        let _ = self.0.out32(CONFIG_ADDRESS, address).and_then(|()| self.0.out32(CONFIG_DATA, value));
    }
}

/// Carving through the kernel, into this program's own CNode.
struct Kernel {
    cnode: CNode,
    slots: Slots,
}

impl Kernel {
    fn slot(&mut self) -> Result<u64, Error> {
        self.slots.alloc().ok_or(Error::NotEnoughMemory)
    }
}

impl Carver for Kernel {
    fn split(&mut self, slot: u64, bits: u8) -> Result<(u64, u64), Error> {
        // Two consecutive slots: one retype makes both halves.
        let (a, b) = (self.slot()?, self.slot()?);
        let r = if b == a + 1 {
            Untyped::from_slot(slot).retype_into(ObjectType::Untyped, bits as u64 - 1, self.cnode, a, 2)
        } else {
            Untyped::from_slot(slot).retype_into(ObjectType::Untyped, bits as u64 - 1, self.cnode, a, 1).and_then(
                |()| Untyped::from_slot(slot).retype_into(ObjectType::Untyped, bits as u64 - 1, self.cnode, b, 1),
            )
        };
        r.map_err(caps::kernel_error).map(|()| (a, b)).inspect_err(|_| {
            self.slots.free(a);
            self.slots.free(b);
        })
    }
    fn frame(&mut self, slot: u64) -> Result<u64, Error> {
        let f = self.slot()?;
        Untyped::from_slot(slot).retype_into(ObjectType::Frame4K, 0, self.cnode, f, 1).map_err(caps::kernel_error)?;
        Ok(f)
    }
}

struct State {
    manager: Manager,
    memory: DeviceMemory,
    kernel: Kernel,
    ports: Ports,
    studio: Client,
}

fn run() -> u64 {
    // The store and the network server call the device manager while the console's shell may be
    // waiting for them (`disk`, `net`): a Call from here to the console would close the circle
    // (console → store → device manager → console). Lines go one way, never waiting.
    ozone_agent_sdk::log::set_nonblocking();
    let Some(info) = start::info() else {
        println!("not started by Studio: no start information");
        return 1;
    };
    let Some(cnode) = caps::own_cnode() else {
        println!("no CNode of its own: cannot carve device memory");
        return 1;
    };
    let mut ports = Ports(IoPort::from_slot(slot::DEVICE_PORTS));
    let functions = pci::enumerate(&mut ports);
    if functions.is_empty() {
        println!("no PCI function answers (no `pci` device?)");
    }
    for f in &functions {
        println!(
            "{:02x}:{:02x}.{} {:04x}:{:04x} class {:06x}{}{}",
            f.bus,
            f.device,
            f.function,
            f.vendor,
            f.device_id,
            f.class,
            pci::kind_of(f.vendor, f.device_id).map_or(alloc::string::String::new(), |k| alloc::format!(" {k}")),
            f.gsi.map_or(alloc::string::String::new(), |g| alloc::format!(" GSI {g}"))
        );
    }
    let mut untypeds = Vec::new();
    for s in slot::DEVICE_UNTYPED..slot::DEVICE_FIRST_FREE {
        match Untyped::from_slot(s).get_info() {
            Ok(u) if u.device => untypeds.push((s, u.paddr, u.size_bits as u8)),
            _ => break,
        }
    }
    println!("{} device untyped capabilities", untypeds.len());
    let end = 1u64 << info.cnode_radix;
    let mut state = State {
        manager: Manager::new(functions),
        memory: DeviceMemory::new(&untypeds),
        kernel: Kernel { cnode, slots: Slots::new(slot::DEVICE_FIRST_FREE, end) },
        ports,
        studio: Client::studio(),
    };
    let mut server = caps::service().server(proto::INTERFACE);
    server.serve(|r| state.request(r))
}

impl State {
    fn request(&mut self, r: &Request) -> Response {
        let who = r.badge;
        match r.method {
            id::CLAIM => {
                let (kind, reply) = r.decode_for(method::CLAIM)?;
                let client = self.studio.call(studio::CLIENT, &who).map_err(|_| ServiceError::Denied)?;
                let d = self.manager.claim(who, &client.name, &kind, &client.pci);
                if let Ok(d) = &d {
                    println!("{} claims {:02x}:{:02x}.{} ({kind})", client.name, d.bus, d.device, d.function);
                    // Memory decoding and bus mastering on: the driver cannot do without them.
                    if let Ok(a) = self.manager.config_read(who, 4) {
                        let v = self.ports.read32(a);
                        self.ports.write32(a, (v & 0xffff) | 0x6);
                    }
                    // Message interrupts off (the driver cannot turn them on again).
                    for (a, enable) in self.manager.message_interrupt_enables(who) {
                        let v = self.ports.read32(a);
                        if v & enable != 0 {
                            self.ports.write32(a, v & !enable);
                        }
                    }
                    // Off its line at once if another driver holds that line.
                    self.quiet_shared_lines();
                }
                reply.with(d)
            }
            id::BAR_PAGE => {
                let (p, reply) = r.decode_for(method::BAR_PAGE)?;
                let paddr = self.manager.bar_page(who, p.bar, p.page)?;
                let frame = self.memory.frame_at(&mut self.kernel, paddr).map_err(|e| {
                    println!("cannot make the frame of {paddr:#x}: {e:?}");
                    ServiceError::KernelError
                })?;
                with_cap(reply.ok(&()), frame)
            }
            id::IRQ => {
                let (_, reply) = r.decode_for(method::IRQ)?;
                let gsi = self.manager.irq(who);
                self.quiet_shared_lines();
                let gsi = gsi?;
                let Some(k) = gsi.checked_sub(PCI_GSI_FIRST) else { return Err(ServiceError::Busy) };
                with_cap(reply.ok(&gsi), slot::PCI_IRQS + k as u64)
            }
            id::CONFIG_READ => handle(r, method::CONFIG_READ, |offset| {
                let a = self.manager.config_read(who, offset)?;
                Ok(self.ports.read32(a))
            }),
            id::CONFIG_WRITE => handle(r, method::CONFIG_WRITE, |w| {
                let current = self.manager.config_read(who, w.offset).map(|a| self.ports.read32(a))?;
                let (a, v) = self.manager.config_write(who, w.offset, w.value, current)?;
                self.ports.write32(a, v);
                Ok(())
            }),
            id::LIST => handle(r, method::LIST, |()| Ok(self.manager.list())),
            _ => Err(ServiceError::UnknownMethod),
        }
    }
}

impl State {
    /// Set INTx-disable on every claimed device whose line another driver holds
    /// ([`Manager::intx_off`]).
    fn quiet_shared_lines(&mut self) {
        for a in self.manager.intx_off() {
            let v = self.ports.read32(a);
            if v & INTX_DISABLE == 0 {
                self.ports.write32(a, (v & 0xffff) | INTX_DISABLE);
            }
        }
    }
}

/// The answer `response` carrying a copy of the capability in `slot` (the caller's endpoint
/// capability has the grant-reply right; this server's has grant).
fn with_cap(response: Response, slot: u64) -> Response {
    let mut m = response?;
    m.info = MessageInfo::new(m.info.label(), 0, 1, m.info.length());
    kernel::ipc_buffer().caps_or_badges[0] = slot;
    Ok(m)
}
