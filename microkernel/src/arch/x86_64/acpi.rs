//! Reading the firmware's ACPI tables with the `acpi` crate: where the local APIC and I/O APICs
//! are, the MADT's interrupt-source overrides (applied by `crate::interrupts`), the ACPI PM timer (to calibrate the LAPIC timer), HPET, and how to power off.
//!
//! The crate is used without its `alloc` feature (which needs the nightly allocator API); the
//! MADT is walked entry by entry instead of through `PlatformInfo`.

use core::ptr::NonNull;

use acpi::address::AddressSpace as GasSpace;
use acpi::fadt::Fadt;
use acpi::hpet::HpetInfo;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

use crate::boot::AcpiRoot;
use crate::interrupts::SourceOverride;
use crate::mm::frames;

/// ACPI tables are read through the direct map; nothing needs mapping or unmapping.
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = frames::phys_to_virt(phys as u64) as *mut T;
        // SAFETY: the direct map covers all physical memory the firmware described and the low
        // 4 GiB, where firmware places ACPI tables; `virt` is never null in the kernel half.
        unsafe { PhysicalMapping::new(phys, NonNull::new_unchecked(virt), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

pub const MAX_IOAPICS: usize = 8;
/// The most interrupt-source overrides kept (ISA has 16 IRQs; room for a few more entries).
pub const MAX_OVERRIDES: usize = 24;

#[derive(Clone, Copy, Debug)]
pub struct IoApicInfo {
    pub id: u8,
    pub phys: u32,
    pub gsi_base: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct PowerOffInfo {
    pub pm1a_cnt: u16,
    pub pm1b_cnt: Option<u16>,
    pub slp_typ_a: u8,
    pub slp_typ_b: u8,
    pub smi_cmd: u16,
    pub acpi_enable: u8,
}

/// What the kernel takes from ACPI.
#[derive(Clone, Copy, Debug)]
pub struct Platform {
    pub lapic_phys: u64,
    pub ioapics: [Option<IoApicInfo>; MAX_IOAPICS],
    /// I/O APICs the MADT lists past [`MAX_IOAPICS`] (not used; reported at boot).
    pub ioapics_dropped: usize,
    pub overrides: [Option<SourceOverride>; MAX_OVERRIDES],
    /// Overrides past [`MAX_OVERRIDES`] (not applied; reported at boot).
    pub overrides_dropped: usize,
    pub has_legacy_pics: bool,
    /// ACPI PM timer I/O port and whether it is 32 bits wide (24 otherwise).
    pub pm_timer: Option<(u16, bool)>,
    pub hpet_phys: Option<u64>,
    pub power_off: Option<PowerOffInfo>,
}

/// Read the tables starting at `root`.
pub fn discover(root: AcpiRoot) -> Result<Platform, acpi::AcpiError> {
    // SAFETY: the address comes from the boot loader and is validated (signature, checksum) by
    // the crate before use; all physical memory is mapped (see `DirectMap`).
    let tables = unsafe {
        match root {
            AcpiRoot::Rsdp(phys) => AcpiTables::from_rsdp(DirectMap, phys as usize)?,
            AcpiRoot::Rsdt { revision, phys } => AcpiTables::from_rsdt(DirectMap, revision, phys as usize)?,
        }
    };
    let mut p = Platform {
        lapic_phys: 0xfee0_0000,
        ioapics: [None; MAX_IOAPICS],
        ioapics_dropped: 0,
        overrides: [None; MAX_OVERRIDES],
        overrides_dropped: 0,
        has_legacy_pics: true,
        pm_timer: None,
        hpet_phys: None,
        power_off: None,
    };

    let madt = tables.find_table::<Madt>()?;
    p.lapic_phys = madt.get().local_apic_address as u64;
    p.has_legacy_pics = madt.get().flags & 1 != 0;
    let (mut n, mut o) = (0, 0);
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::IoApic(e) if n < MAX_IOAPICS => {
                p.ioapics[n] = Some(IoApicInfo {
                    id: e.io_apic_id,
                    phys: e.io_apic_address,
                    gsi_base: e.global_system_interrupt_base,
                });
                n += 1;
            }
            MadtEntry::IoApic(_) => p.ioapics_dropped += 1,
            MadtEntry::InterruptSourceOverride(e) if o < MAX_OVERRIDES => {
                p.overrides[o] =
                    Some(SourceOverride { bus: e.bus, source: e.irq, gsi: e.global_system_interrupt, flags: e.flags });
                o += 1;
            }
            MadtEntry::InterruptSourceOverride(_) => p.overrides_dropped += 1,
            MadtEntry::LocalApicAddressOverride(e) => p.lapic_phys = e.local_apic_address,
            _ => {}
        }
    }

    let fadt = tables.find_table::<Fadt>()?;
    if let Some(base) = fadt.pm_timer_block()?
        && base.address_space == GasSpace::SystemIo
    {
        p.pm_timer = Some((base.address as u16, { fadt.flags }.pm_timer_is_32_bit()));
    }
    if let Ok(h) = HpetInfo::new(&tables) {
        p.hpet_phys = Some(h.base_address as u64);
    }

    // Power-off: PM1 control registers from the FADT, sleep types from the DSDT.
    let pm1a = fadt.pm1a_control_block()?;
    let pm1b = fadt.pm1b_control_block()?;
    if pm1a.address_space == GasSpace::SystemIo
        && let Ok(dsdt) = tables.dsdt()
    {
        // SAFETY: the DSDT's AML stream as located and length-checked by the crate, read
        // through the direct map.
        let aml =
            unsafe { core::slice::from_raw_parts(frames::phys_to_virt(dsdt.address as u64), dsdt.length as usize) };
        if let Some((a, b)) = crate::power::find_s5_sleep_types(aml) {
            p.power_off = Some(PowerOffInfo {
                pm1a_cnt: pm1a.address as u16,
                pm1b_cnt: pm1b
                    .filter(|g| g.address_space == GasSpace::SystemIo && g.address != 0)
                    .map(|g| g.address as u16),
                slp_typ_a: a,
                slp_typ_b: b,
                smi_cmd: fadt.smi_cmd_port as u16,
                acpi_enable: fadt.acpi_enable,
            });
        }
    }
    Ok(p)
}
