//! PCI enumeration through configuration mechanism #1 (ports 0xcf8/0xcfc): every bus, device and
//! function; each function's identity, class, BARs (sized by the usual write-all-ones probe,
//! with decoding off meanwhile) and interrupt pin; and the pin's interrupt line on the q35
//! machine.
//!
//! Interrupt routing: reading it properly means evaluating the ACPI `_PRT` (AML). The q35
//! chipset QEMU models wires device `d`'s pin `p` (1 = INTA) on bus 0 to PIRQ `(d + p - 1) % 4 + 4`
//! (PIRQE..H), and PIRQ `n` to I/O APIC input `16 + n`, the routing its own ACPI tables describe;
//! the manager uses that table (functions behind bridges are listed but get no line). A real
//! machine needs an AML interpreter here; `docs/devices.md` says so.

use alloc::vec::Vec;
use ozone_agent_sdk::protocol::devices::{Bar, BarKind};

/// Reads and writes of 32-bit configuration words, by configuration address (the value written
/// to port 0xcf8: enable bit, bus, device, function, register).
pub trait ConfigSpace {
    fn read32(&mut self, address: u32) -> u32;
    fn write32(&mut self, address: u32, value: u32);
}

/// The configuration address of a register (`offset` is rounded down to its word).
pub fn address(bus: u8, device: u8, function: u8, offset: u8) -> u32 {
    0x8000_0000
        | (bus as u32) << 16
        | ((device & 0x1f) as u32) << 11
        | ((function & 7) as u32) << 8
        | (offset & 0xfc) as u32
}

/// One function found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub vendor: u16,
    pub device_id: u16,
    /// Class, subclass, programming interface.
    pub class: u32,
    pub header_type: u8,
    pub bars: Vec<Bar>,
    /// Interrupt pin: 0 none, 1..=4 INTA..INTD.
    pub pin: u8,
    pub gsi: Option<u8>,
    /// Its capability list, in list order.
    pub caps: Vec<Capability>,
}

/// One entry of a function's capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Where it starts in the configuration space (0x40 and up, 4-byte aligned).
    pub offset: u8,
    /// Its capability id (`CAP_*`).
    pub id: u8,
    /// Its length in bytes, for a vendor-specific capability (which says it in its third
    /// byte); 0 for the others.
    pub len: u8,
}

/// Capability id: message signalled interrupts.
pub const CAP_MSI: u8 = 0x05;
/// Capability id: vendor-specific (every virtio capability).
pub const CAP_VENDOR: u8 = 0x09;
/// Capability id: MSI-X.
pub const CAP_MSIX: u8 = 0x11;

impl Function {
    /// The configuration address of one of its registers.
    pub fn address(&self, offset: u8) -> u32 {
        address(self.bus, self.device, self.function, offset)
    }
}

/// The kind a driver may claim a function as (`PCI_KINDS`): modern (non-transitional) virtio
/// devices only, which is what `cargo xtask qemu` attaches.
pub fn kind_of(vendor: u16, device_id: u16) -> Option<&'static str> {
    match (vendor, device_id) {
        (0x1af4, 0x1042) => Some("virtio-blk"),
        (0x1af4, 0x1041) => Some("virtio-net"),
        _ => None,
    }
}

/// The q35 interrupt line of `pin` (1..=4) of device `device` on bus 0 (module doc).
pub fn q35_gsi(bus: u8, device: u8, pin: u8) -> Option<u8> {
    if bus != 0 || !(1..=4).contains(&pin) || device >= 25 {
        return None;
    }
    Some(16 + (device + pin - 1) % 4 + 4)
}

const COMMAND: u8 = 0x04;
const COMMAND_DECODE: u32 = 0x3;
/// The status register's bit saying the function has a capability list.
const STATUS_CAPABILITIES: u32 = 0x10;
const CAPABILITIES_POINTER: u8 = 0x34;

/// Every function on every bus.
pub fn enumerate(c: &mut dyn ConfigSpace) -> Vec<Function> {
    let mut found = Vec::new();
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            let id = c.read32(address(bus, device, 0, 0));
            if id & 0xffff == 0xffff {
                continue;
            }
            let multi = (c.read32(address(bus, device, 0, 0x0c)) >> 16) & 0x80 != 0;
            for function in 0..if multi { 8 } else { 1 } {
                if let Some(f) = probe(c, bus, device, function) {
                    found.push(f);
                }
            }
        }
    }
    found
}

fn probe(c: &mut dyn ConfigSpace, bus: u8, device: u8, function: u8) -> Option<Function> {
    let at = |o| address(bus, device, function, o);
    let id = c.read32(at(0));
    let vendor = id as u16;
    if vendor == 0xffff {
        return None;
    }
    let class = c.read32(at(0x08)) >> 8;
    let header_type = ((c.read32(at(0x0c)) >> 16) & 0x7f) as u8;
    let (bars, pin) = if header_type == 0 {
        (size_bars(c, bus, device, function, 6), ((c.read32(at(0x3c)) >> 8) & 0xff) as u8)
    } else if header_type == 1 {
        (size_bars(c, bus, device, function, 2), ((c.read32(at(0x3c)) >> 8) & 0xff) as u8)
    } else {
        (Vec::new(), 0)
    };
    Some(Function {
        bus,
        device,
        function,
        vendor,
        device_id: (id >> 16) as u16,
        class,
        header_type,
        bars,
        pin,
        gsi: q35_gsi(bus, device, pin),
        caps: capabilities(c, bus, device, function),
    })
}

/// The capability list: from the pointer at 0x34 when the status register says there is one,
/// each entry's next pointer after it. Pointers below 0x40 end it; so does the 48th entry (all
/// that fit above the header: a longer list loops).
fn capabilities(c: &mut dyn ConfigSpace, bus: u8, device: u8, function: u8) -> Vec<Capability> {
    let at = |o| address(bus, device, function, o);
    let mut caps = Vec::new();
    if (c.read32(at(COMMAND)) >> 16) & STATUS_CAPABILITIES == 0 {
        return caps;
    }
    let mut next = (c.read32(at(CAPABILITIES_POINTER)) & 0xfc) as u8;
    while next >= 0x40 && caps.len() < 48 {
        let word = c.read32(at(next));
        let id = word as u8;
        let len = if id == CAP_VENDOR { (word >> 16) as u8 } else { 0 };
        caps.push(Capability { offset: next, id, len });
        next = ((word >> 8) & 0xfc) as u8;
    }
    caps
}

/// Size the first `count` BARs, with memory and I/O decoding off while they read all-ones.
fn size_bars(c: &mut dyn ConfigSpace, bus: u8, device: u8, function: u8, count: u8) -> Vec<Bar> {
    let at = |o| address(bus, device, function, o);
    let command = c.read32(at(COMMAND));
    c.write32(at(COMMAND), command & !COMMAND_DECODE & 0xffff);
    let mut bars = Vec::new();
    let mut i = 0;
    while i < count {
        let reg = 0x10 + 4 * i;
        let orig = c.read32(at(reg));
        c.write32(at(reg), 0xffff_ffff);
        let mask = c.read32(at(reg));
        c.write32(at(reg), orig);
        if orig & 1 == 1 {
            let m = mask & !0x3 & 0xffff;
            if m != 0 {
                bars.push(Bar {
                    index: i,
                    kind: BarKind::Io,
                    address: (orig & !0x3) as u64,
                    size: ((!m & 0xffff) + 1) as u64,
                    prefetchable: false,
                });
            }
            i += 1;
            continue;
        }
        let prefetchable = orig & 0x8 != 0;
        if (orig >> 1) & 3 == 2 && i + 1 < count {
            let hreg = reg + 4;
            let horig = c.read32(at(hreg));
            c.write32(at(hreg), 0xffff_ffff);
            let hmask = c.read32(at(hreg));
            c.write32(at(hreg), horig);
            let full = (hmask as u64) << 32 | (mask & !0xf) as u64;
            if full != 0 {
                bars.push(Bar {
                    index: i,
                    kind: BarKind::Memory64,
                    address: (horig as u64) << 32 | (orig & !0xf) as u64,
                    size: (!full).wrapping_add(1),
                    prefetchable,
                });
            }
            i += 2;
            continue;
        }
        let m = mask & !0xf;
        if m != 0 {
            bars.push(Bar {
                index: i,
                kind: BarKind::Memory32,
                address: (orig & !0xf) as u64,
                size: ((!m) as u64 + 1) & 0xffff_ffff,
                prefetchable,
            });
        }
        i += 1;
    }
    c.write32(at(COMMAND), command & 0xffff);
    bars
}

/// A configuration space in memory, for tests: functions' registers, BAR sizes (the write-all-ones
/// probe answers them), and a log of writes.
#[cfg(test)]
pub mod fake {
    use super::*;
    use alloc::collections::BTreeMap;

    #[derive(Default)]
    pub struct FakeBus {
        pub regs: BTreeMap<u32, u32>,
        /// Per BAR register: the mask of its address bits (which bits stick when written).
        pub bar_masks: BTreeMap<u32, u32>,
        pub writes: Vec<(u32, u32)>,
    }

    impl FakeBus {
        /// Add a header-type-0 function with `bars`: (index, 64-bit, address, size).
        pub fn add(&mut self, dev: u8, func: u8, vendor: u16, id: u16, pin: u8, bars: &[(u8, bool, u64, u64)]) {
            let a = |o| address(0, dev, func, o);
            self.regs.insert(a(0), (id as u32) << 16 | vendor as u32);
            self.regs.insert(a(0x08), 0x0100_0000);
            self.regs.insert(a(0x0c), 0); // header type 0, single-function
            self.regs.insert(a(0x04), 0x0007);
            self.regs.insert(a(0x3c), (pin as u32) << 8 | 11);
            for &(i, wide, addr, size) in bars {
                let r = a(0x10 + 4 * i);
                let mask = !(size - 1);
                self.regs.insert(r, (addr as u32 & 0xffff_fff0) | if wide { 0x4 } else { 0 });
                self.bar_masks.insert(r, (mask as u32 & 0xffff_fff0) | if wide { 0x4 } else { 0 });
                if wide {
                    let h = a(0x10 + 4 * (i + 1));
                    self.regs.insert(h, (addr >> 32) as u32);
                    self.bar_masks.insert(h, (mask >> 32) as u32);
                }
            }
        }

        /// Give function `dev`.`func` a capability list: (offset, id, third byte) each, chained
        /// in this order.
        pub fn add_caps(&mut self, dev: u8, func: u8, caps: &[(u8, u8, u8)]) {
            let a = |o| address(0, dev, func, o);
            let status = self.regs.get(&a(0x04)).copied().unwrap_or(0);
            self.regs.insert(a(0x04), status | STATUS_CAPABILITIES << 16);
            self.regs.insert(a(CAPABILITIES_POINTER), caps.first().map_or(0, |c| c.0 as u32));
            for (i, &(offset, id, third)) in caps.iter().enumerate() {
                let next = caps.get(i + 1).map_or(0, |c| c.0);
                self.regs.insert(a(offset), (third as u32) << 16 | (next as u32) << 8 | id as u32);
            }
        }
    }

    impl ConfigSpace for FakeBus {
        fn read32(&mut self, address: u32) -> u32 {
            self.regs.get(&address).copied().unwrap_or(if address & 0xff == 0 { 0xffff_ffff } else { 0 })
        }
        fn write32(&mut self, address: u32, value: u32) {
            self.writes.push((address, value));
            let bar_register = (0x10..0x28).contains(&(address & 0xff));
            let v = match self.bar_masks.get(&address) {
                Some(&m) if value == 0xffff_ffff => m,
                // Unimplemented BARs are hard-wired to zero.
                None if bar_register => 0,
                // The status register (the command word's upper half) is not written so.
                _ if address & 0xff == COMMAND as u32 => {
                    value & 0xffff | self.regs.get(&address).copied().unwrap_or(0) & 0xffff_0000
                }
                _ => value,
            };
            self.regs.insert(address, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeBus;
    use super::*;

    #[test]
    fn finds_functions_and_sizes_their_bars() {
        let mut bus = FakeBus::default();
        bus.add(3, 0, 0x1af4, 0x1042, 1, &[(1, false, 0xfebd_1000, 0x1000), (4, true, 0x8_0000_0000, 0x4000)]);
        bus.add(4, 0, 0x8086, 0x10d3, 0, &[]);
        let found = enumerate(&mut bus);
        assert_eq!(found.len(), 2);
        let blk = &found[0];
        assert_eq!((blk.device, blk.vendor, blk.device_id), (3, 0x1af4, 0x1042));
        assert_eq!(kind_of(blk.vendor, blk.device_id), Some("virtio-blk"));
        assert_eq!(blk.bars.len(), 2);
        assert_eq!(
            blk.bars[0],
            Bar { index: 1, kind: BarKind::Memory32, address: 0xfebd_1000, size: 0x1000, prefetchable: false }
        );
        assert_eq!(
            blk.bars[1],
            Bar { index: 4, kind: BarKind::Memory64, address: 0x8_0000_0000, size: 0x4000, prefetchable: false }
        );
        // Device 3, INTA on q35: PIRQ (3 + 0) % 4 + 4 = H, GSI 23.
        assert_eq!(blk.gsi, Some(23));
        assert_eq!(found[1].gsi, None, "no pin, no line");
        // Every BAR came back to what the firmware put there, and decoding was restored.
        assert_eq!(bus.read32(address(0, 3, 0, 0x10 + 4)), 0xfebd_1000);
        assert_eq!(bus.read32(address(0, 3, 0, 0x04)), 0x0007);
    }

    #[test]
    fn reads_the_capability_list_and_stops_a_looping_one() {
        let mut bus = FakeBus::default();
        bus.add(3, 0, 0x1af4, 0x1042, 1, &[]);
        bus.add_caps(3, 0, &[(0x98, CAP_MSIX, 7), (0x84, CAP_VENDOR, 16), (0x40, 0x01, 3)]);
        bus.add(4, 0, 0x1af4, 0x1041, 1, &[]);
        bus.add_caps(4, 0, &[(0x40, CAP_VENDOR, 20)]);
        // The entry points back at itself: the list never ends.
        bus.regs.insert(address(0, 4, 0, 0x40), 20 << 16 | 0x40 << 8 | CAP_VENDOR as u32);
        let found = enumerate(&mut bus);
        assert_eq!(
            found[0].caps,
            [
                Capability { offset: 0x98, id: CAP_MSIX, len: 0 },
                Capability { offset: 0x84, id: CAP_VENDOR, len: 16 },
                Capability { offset: 0x40, id: 0x01, len: 0 },
            ]
        );
        assert_eq!(found[1].caps.len(), 48);
    }

    #[test]
    fn q35_routing_is_the_chipset_swizzle() {
        assert_eq!(q35_gsi(0, 0, 1), Some(20));
        assert_eq!(q35_gsi(0, 1, 1), Some(21));
        assert_eq!(q35_gsi(0, 1, 4), Some(20));
        assert_eq!(q35_gsi(0, 2, 2), Some(23));
        assert_eq!(q35_gsi(0, 2, 0), None);
        assert_eq!(q35_gsi(0, 2, 5), None);
        assert_eq!(q35_gsi(1, 2, 1), None);
        assert_eq!(q35_gsi(0, 31, 1), None, "the chipset's own devices have their own routing");
    }
}
