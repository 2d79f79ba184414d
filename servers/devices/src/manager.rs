//! Claims and filters: which program holds which device, and what a driver may ask of it.
//!
//! A program claims at most one device: the first unclaimed function of a kind its description
//! allows (Studio's `CLIENT` says which; the caller's message only names the kind). Every later
//! request is about the caller's own device, found from its badge: a BAR by its index in that
//! device, a page by its index in that BAR, a configuration register by its offset in that
//! device's space — so no request can name another device. Configuration writes pass a filter
//! (the command register's decode, bus-master and INTx-disable bits; the capability area), so a
//! driver cannot move its BARs over another device's or over RAM, or change its interrupt line.

use alloc::string::String;
use alloc::vec::Vec;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::devices::{
    BarKind, COMMAND_WRITABLE, CONFIG_CAPS_START, CONFIG_SIZE, Device, DeviceSummary,
};

use crate::pci::{CAP_MSI, CAP_MSIX, CAP_VENDOR, Function, kind_of};

/// The functions found and who claimed them.
pub struct Manager {
    functions: Vec<Function>,
    /// Per function: the claimant's program id and name.
    claims: Vec<Option<(u64, String)>>,
    /// Interrupt lines whose handler was handed out, and to which program.
    lines: Vec<(u8, u64)>,
}

const PAGE: u64 = 4096;
const COMMAND: u8 = 0x04;
/// MSI's enable bit (message control bit 0) in the capability's first word.
const MSI_ENABLE: u32 = 1 << 16;
/// MSI-X's enable bit (message control bit 15) in the capability's first word.
const MSIX_ENABLE: u32 = 1 << 31;
/// The command register's INTx-disable bit.
pub const INTX_DISABLE: u32 = 0x0400;

impl Manager {
    pub fn new(functions: Vec<Function>) -> Manager {
        let claims = alloc::vec![None; functions.len()];
        Manager { functions, claims, lines: Vec::new() }
    }

    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The function program `id` claimed.
    pub fn device_of(&self, id: u64) -> Option<&Function> {
        self.claims.iter().position(|c| c.as_ref().is_some_and(|(who, _)| *who == id)).map(|i| &self.functions[i])
    }

    /// Claim a device of `kind` for program `id` (named `name`), which its description allows
    /// to claim `allowed`.
    pub fn claim(&mut self, id: u64, name: &str, kind: &str, allowed: &[String]) -> Result<Device, ServiceError> {
        if !allowed.iter().any(|k| k == kind) {
            return Err(ServiceError::Denied);
        }
        if let Some(f) = self.device_of(id) {
            // One device per program: the same one again for its kind, nothing of another.
            return if kind_of(f.vendor, f.device_id) == Some(kind) {
                Ok(describe(f))
            } else {
                Err(ServiceError::Busy)
            };
        }
        let i = (0..self.functions.len())
            .find(|&i| {
                self.claims[i].is_none() && kind_of(self.functions[i].vendor, self.functions[i].device_id) == Some(kind)
            })
            .ok_or(ServiceError::NotFound)?;
        self.claims[i] = Some((id, String::from(name)));
        Ok(describe(&self.functions[i]))
    }

    /// The physical address of page `page` of memory BAR `bar` of program `id`'s device.
    pub fn bar_page(&self, id: u64, bar: u8, page: u32) -> Result<u64, ServiceError> {
        let f = self.device_of(id).ok_or(ServiceError::Denied)?;
        let b = f.bars.iter().find(|b| b.index == bar).ok_or(ServiceError::NotFound)?;
        if b.kind == BarKind::Io {
            return Err(ServiceError::InvalidArgument);
        }
        let offset = page as u64 * PAGE;
        // A BAR smaller than a page shares its page with whatever the firmware put next to it
        // (another device's registers): its frame would reach past it.
        if offset >= b.size || b.size < PAGE || b.address & (PAGE - 1) != 0 {
            return Err(ServiceError::NotFound);
        }
        b.address.checked_add(offset).ok_or(ServiceError::NotFound)
    }

    /// The interrupt line of program `id`'s device. Lines are shared between devices (INTx);
    /// the handler of one goes to the first driver that asks and to no other (`Busy`: it polls),
    /// since whoever holds it chooses which notification the line signals.
    pub fn irq(&mut self, id: u64) -> Result<u8, ServiceError> {
        let gsi = self.device_of(id).ok_or(ServiceError::Denied)?.gsi.ok_or(ServiceError::Busy)?;
        match self.lines.iter().find(|(line, _)| *line == gsi) {
            Some(&(_, holder)) if holder != id => Err(ServiceError::Busy),
            Some(_) => Ok(gsi),
            None => {
                self.lines.push((gsi, id));
                Ok(gsi)
            }
        }
    }

    /// Whether function `f`, claimed by program `id`, is on an interrupt line whose handler
    /// another program holds.
    fn line_elsewhere(&self, f: &Function, id: u64) -> bool {
        f.gsi.is_some_and(|gsi| self.lines.iter().any(|&(line, holder)| line == gsi && holder != id))
    }

    /// The command registers (configuration addresses) of the claimed devices on a line whose
    /// handler another program holds: the manager sets their INTx-disable bit, so a device
    /// whose driver polls never raises the line another driver serves (a level-triggered line
    /// it kept asserted would be an interrupt storm there).
    pub fn intx_off(&self) -> Vec<u32> {
        self.functions
            .iter()
            .zip(&self.claims)
            .filter_map(|(f, c)| {
                let (id, _) = c.as_ref()?;
                self.line_elsewhere(f, *id).then(|| f.address(COMMAND))
            })
            .collect()
    }

    /// The configuration address of a read of `offset` in program `id`'s device.
    pub fn config_read(&self, id: u64, offset: u8) -> Result<u32, ServiceError> {
        let f = self.device_of(id).ok_or(ServiceError::Denied)?;
        check_offset(offset)?;
        Ok(f.address(offset))
    }

    /// The configuration address and the value to write for a driver's write of `value` at
    /// `offset` of its device, whose register now reads `current`.
    pub fn config_write(&self, id: u64, offset: u8, value: u32, current: u32) -> Result<(u32, u32), ServiceError> {
        let f = self.device_of(id).ok_or(ServiceError::Denied)?;
        check_offset(offset)?;
        if offset == COMMAND {
            // The command register (low half) and the status register (high half, whose
            // error bits clear when written with 1: write zeros there to leave them). A device
            // on a line another driver holds stays off it (INTx disabled).
            let keep = current & 0xffff & !(COMMAND_WRITABLE as u32);
            let forced = if self.line_elsewhere(f, id) { INTX_DISABLE } else { 0 };
            return Ok((f.address(offset), keep | (value & COMMAND_WRITABLE as u32) | forced));
        }
        // Above the header: only the body of a vendor-specific (virtio) capability. Never MSI
        // or MSI-X (which interrupt messages the device sends, and where), power management
        // (a power-state change can reset the BARs), or anything else there.
        let word = offset as u16;
        let in_vendor = f
            .caps
            .iter()
            .any(|c| c.id == CAP_VENDOR && word >= c.offset as u16 + 4 && word + 4 <= c.offset as u16 + c.len as u16);
        if offset < CONFIG_CAPS_START || !in_vendor {
            return Err(ServiceError::InvalidArgument);
        }
        Ok((f.address(offset), value))
    }

    /// The enable bits of program `id`'s device's MSI and MSI-X capabilities, as (configuration
    /// address of the capability's first word, the bit), which the manager clears when the
    /// device is claimed. Drivers take interrupts through their INTx line; a message interrupt
    /// the device may send is whatever address and data the driver wrote into the capability or
    /// the MSI-X table (in a BAR it maps), so none may be on.
    pub fn message_interrupt_enables(&self, id: u64) -> Vec<(u32, u32)> {
        let Some(f) = self.device_of(id) else { return Vec::new() };
        f.caps
            .iter()
            .filter_map(|c| match c.id {
                CAP_MSI => Some((f.address(c.offset), MSI_ENABLE)),
                CAP_MSIX => Some((f.address(c.offset), MSIX_ENABLE)),
                _ => None,
            })
            .collect()
    }

    /// Every function, with its kind and claimant.
    pub fn list(&self) -> Vec<DeviceSummary> {
        self.functions
            .iter()
            .zip(&self.claims)
            .map(|(f, c)| DeviceSummary {
                bus: f.bus,
                device: f.device,
                function: f.function,
                vendor: f.vendor,
                device_id: f.device_id,
                class: f.class,
                kind: kind_of(f.vendor, f.device_id).map(String::from),
                claimed_by: c.as_ref().map(|(_, n)| n.clone()),
                gsi: f.gsi,
            })
            .collect()
    }
}

fn check_offset(offset: u8) -> Result<(), ServiceError> {
    if offset & 3 != 0 || offset as u16 >= CONFIG_SIZE {
        return Err(ServiceError::InvalidArgument);
    }
    Ok(())
}

fn describe(f: &Function) -> Device {
    Device {
        bus: f.bus,
        device: f.device,
        function: f.function,
        vendor: f.vendor,
        device_id: f.device_id,
        class: f.class,
        bars: f.bars.clone(),
        gsi: f.gsi,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::fake::FakeBus;
    use crate::pci::{address, enumerate};
    use alloc::string::ToString;
    use alloc::vec;

    fn machine() -> Manager {
        let mut bus = FakeBus::default();
        bus.add(2, 0, 0x1af4, 0x1042, 1, &[(1, false, 0xfebd_1000, 0x1000), (4, true, 0xfe00_0000, 0x4000)]);
        bus.add(3, 0, 0x1af4, 0x1041, 1, &[(4, true, 0xfe00_4000, 0x4000)]);
        bus.add(4, 0, 0x1af4, 0x1042, 1, &[(4, true, 0xfe00_8000, 0x4000)]);
        Manager::new(enumerate(&mut bus))
    }

    fn kinds(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    /// The hostile driver: it holds a `devices` capability and a claim of its own, and tries
    /// every way to reach another device.
    #[test]
    fn a_driver_reaches_its_own_device_only() {
        let mut m = machine();
        let blk = m.claim(1, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap();
        assert_eq!(blk.device, 2);
        // A kind its description does not give: refused, even one that exists.
        assert_eq!(m.claim(2, "net", "virtio-blk", &kinds(&["virtio-net"])), Err(ServiceError::Denied));
        // A second device, of another kind, for the same program: refused.
        assert_eq!(m.claim(1, "store", "virtio-net", &kinds(&["virtio-blk", "virtio-net"])), Err(ServiceError::Busy));
        // The same kind again: its own device again (a restarted driver).
        assert_eq!(m.claim(1, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap().device, 2);
        // Another program gets the other virtio-blk, never the claimed one; a third finds none.
        assert_eq!(m.claim(3, "copy", "virtio-blk", &kinds(&["virtio-blk"])).unwrap().device, 4);
        assert_eq!(m.claim(4, "late", "virtio-blk", &kinds(&["virtio-blk"])), Err(ServiceError::NotFound));
        // Unknown kinds are refused before anything.
        assert_eq!(m.claim(5, "x", "ahci", &kinds(&["virtio-blk"])), Err(ServiceError::Denied));

        // Pages: its own BARs only, within their size, memory BARs only.
        assert_eq!(m.bar_page(1, 4, 0), Ok(0xfe00_0000));
        assert_eq!(m.bar_page(1, 4, 3), Ok(0xfe00_3000));
        assert_eq!(m.bar_page(1, 4, 4), Err(ServiceError::NotFound), "past the BAR: the next device's");
        assert_eq!(m.bar_page(1, 4, u32::MAX), Err(ServiceError::NotFound));
        assert_eq!(m.bar_page(1, 0, 0), Err(ServiceError::NotFound), "no BAR 0");
        assert_eq!(m.bar_page(1, 5, 0), Err(ServiceError::NotFound), "the upper half of a 64-bit BAR");
        assert_eq!(m.bar_page(2, 4, 0), Err(ServiceError::Denied), "nothing claimed, nothing given");
        assert_eq!(m.bar_page(3, 4, 0), Ok(0xfe00_8000));

        // Interrupts: its own line only.
        assert_eq!(m.irq(1), Ok(22), "device 2, INTA: PIRQG");
        assert_eq!(m.irq(2), Err(ServiceError::Denied));

        // Configuration: reads of its own space, aligned, in range.
        assert_eq!(m.config_read(1, 0), Ok(address(0, 2, 0, 0)));
        assert_eq!(m.config_read(1, 0xfc), Ok(address(0, 2, 0, 0xfc)));
        assert_eq!(m.config_read(1, 0x41), Err(ServiceError::InvalidArgument));
        assert_eq!(m.config_read(2, 0), Err(ServiceError::Denied));
        // Writes: never a BAR, the header or the interrupt line.
        for off in [0x00, 0x08, 0x0c, 0x10, 0x14, 0x20, 0x24, 0x30, 0x3c] {
            assert_eq!(m.config_write(1, off, 0xffff_ffff, 0), Err(ServiceError::InvalidArgument), "offset {off:#x}");
        }
        // The command register: only its four bits move; status errors are not cleared.
        assert_eq!(m.config_write(1, 0x04, 0xffff_ffff, 0x0010_0100), Ok((address(0, 2, 0, 4), 0x0100 | 0x0407)));
        assert_eq!(m.config_write(1, 0x04, 0, 0x0000_0107), Ok((address(0, 2, 0, 4), 0x0100)));
        // This device has no capability list: nothing above the header is writable.
        assert_eq!(m.config_write(1, 0x40, 7, 0), Err(ServiceError::InvalidArgument));
    }

    /// A virtio device's capabilities as QEMU lays them out: MSI-X, then vendor-specific ones,
    /// plus MSI and power management as another device could have them.
    fn machine_with_capabilities() -> Manager {
        let mut bus = FakeBus::default();
        bus.add(2, 0, 0x1af4, 0x1042, 1, &[(1, false, 0xfebd_1000, 0x1000), (4, true, 0xfe00_0000, 0x4000)]);
        bus.add_caps(2, 0, &[(0x98, 0x11, 0), (0x84, 0x09, 16), (0x70, 0x09, 20), (0x50, 0x05, 0), (0x40, 0x01, 0)]);
        Manager::new(enumerate(&mut bus))
    }

    /// Interrupt messages, power and reset are not the driver's: an enabled MSI or MSI-X lets
    /// the device send any message the driver wrote (any vector, NMI, INIT, or a write to any
    /// address), and a power-state change can reset the BARs. Above the header a driver writes
    /// only inside its device's vendor-specific (virtio) capabilities, past their header.
    #[test]
    fn a_driver_writes_no_capability_but_its_virtio_ones() {
        let mut m = machine_with_capabilities();
        m.claim(1, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap();
        for off in [0x40u8, 0x44, 0x50, 0x54, 0x58, 0x5c, 0x60, 0x98, 0x9c, 0xa0, 0xfc] {
            assert_eq!(m.config_write(1, off, 0xffff_ffff, 0), Err(ServiceError::InvalidArgument), "offset {off:#x}");
        }
        // The vendor-specific capabilities: their header is not writable, their body is.
        for off in [0x70u8, 0x84, 0x94] {
            assert_eq!(m.config_write(1, off, 0x11, 0), Err(ServiceError::InvalidArgument), "offset {off:#x}");
        }
        for off in [0x74u8, 0x78, 0x7c, 0x80, 0x88, 0x8c, 0x90] {
            assert_eq!(m.config_write(1, off, 0x11, 0), Ok((address(0, 2, 0, off), 0x11)), "offset {off:#x}");
        }
        // A claim turns message interrupts off: the manager clears these enable bits.
        assert_eq!(
            m.message_interrupt_enables(1),
            vec![(address(0, 2, 0, 0x98), 1 << 31), (address(0, 2, 0, 0x50), 1 << 16)]
        );
        assert_eq!(m.message_interrupt_enables(2), vec![]);
    }

    /// A vendor-specific capability claiming to run past the configuration space reaches no
    /// further than its end.
    #[test]
    fn a_vendor_capability_ends_with_the_space() {
        let mut bus = FakeBus::default();
        bus.add(2, 0, 0x1af4, 0x1042, 1, &[(4, true, 0xfe00_0000, 0x4000)]);
        bus.add_caps(2, 0, &[(0xf0, 0x09, 0xff)]);
        let mut m = Manager::new(enumerate(&mut bus));
        m.claim(1, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap();
        assert_eq!(m.config_write(1, 0xfc, 1, 0), Ok((address(0, 2, 0, 0xfc), 1)));
        assert_eq!(m.config_write(1, 0xf0, 1, 0), Err(ServiceError::InvalidArgument));
    }

    /// A memory BAR smaller than a page: the page holding it may hold another device's
    /// registers too (firmware packs small BARs), so no frame of it is handed out.
    #[test]
    fn a_bar_smaller_than_a_page_gives_no_frame() {
        let mut bus = FakeBus::default();
        bus.add(2, 0, 0x1af4, 0x1042, 1, &[(1, false, 0xfebd_1000, 0x100), (4, true, 0xfe00_0000, 0x4000)]);
        bus.add(3, 0, 0x8086, 0x10d3, 1, &[(0, false, 0xfebd_1100, 0x100)]);
        let mut m = Manager::new(enumerate(&mut bus));
        m.claim(1, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap();
        assert_eq!(m.bar_page(1, 1, 0), Err(ServiceError::NotFound), "the page holds device 3's BAR too");
        assert_eq!(m.bar_page(1, 4, 0), Ok(0xfe00_0000));
    }

    /// INTx lines are shared (q35: devices 2 and 6 both reach GSI 22). The handler of a line
    /// goes to the first driver that asks; another driver on it would otherwise point the
    /// handler at its own notification and take the first one's interrupts.
    #[test]
    fn a_shared_interrupt_line_goes_to_one_driver() {
        let mut bus = FakeBus::default();
        bus.add(2, 0, 0x1af4, 0x1042, 1, &[(4, true, 0xfe00_0000, 0x4000)]);
        bus.add(6, 0, 0x1af4, 0x1041, 1, &[(4, true, 0xfe00_4000, 0x4000)]);
        let mut m = Manager::new(enumerate(&mut bus));
        m.claim(1, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap();
        m.claim(2, "net", "virtio-net", &kinds(&["virtio-net"])).unwrap();
        assert_eq!(m.irq(1), Ok(22));
        assert_eq!(m.irq(1), Ok(22), "again, after a restart");
        assert_eq!(m.irq(2), Err(ServiceError::Busy), "the line is the other driver's");
        // The polling driver's device stays off the line, whatever its driver writes.
        assert_eq!(m.intx_off(), vec![address(0, 6, 0, 4)]);
        assert_eq!(m.config_write(2, 0x04, 0x0006, 0x0406), Ok((address(0, 6, 0, 4), 0x0406)));
        assert_eq!(m.config_write(1, 0x04, 0x0006, 0x0406), Ok((address(0, 2, 0, 4), 0x0006)));
    }

    #[test]
    fn the_list_names_claimants() {
        let mut m = machine();
        m.claim(9, "store", "virtio-blk", &kinds(&["virtio-blk"])).unwrap();
        let l = m.list();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].claimed_by.as_deref(), Some("store"));
        assert_eq!(l[0].kind.as_deref(), Some("virtio-blk"));
        assert_eq!(l[1].claimed_by, None);
        assert_eq!(l[1].kind.as_deref(), Some("virtio-net"));
        let _ = vec![0u8];
    }
}
