//! Interrupt controllers and the timer: the legacy PIC (remapped, then masked for good), the
//! local APIC (enabled, with its timer calibrated against the ACPI PM timer and run periodic),
//! and every I/O APIC the MADT lists (every input masked until a user driver asks for one).
//!
//! Each routed line (GSI `g`, see `crate::interrupts` for which exist and how they signal) has
//! vector [`IRQ_BASE_VECTOR`]` + g` on the boot CPU; its redirection entry carries the line's
//! trigger mode and polarity from the MADT's overrides or the defaults. The trap layer masks a
//! line when it fires, before the EOI (so a level-triggered line still asserted does not fire
//! again), and the handler's `Ack` unmasks it.

use core::sync::atomic::{AtomicU64, Ordering};

const _: () = assert!(MAX_MSIS <= 64);

use spin::Once;
use x86_64::instructions::port::Port;

use super::acpi::{MAX_IOAPICS, Platform};
use super::paging;
use super::trap::{PIC_BASE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::interrupts::{IoApicInputs, MAX_LINES, MAX_MSIS, Polarity, Routes, Trigger};

/// Timer interrupts per second.
pub const TIMER_HZ: u64 = 100;

const LAPIC_EOI: usize = 0xb0;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
/// LINT0: where firmware's "virtual wire" mode brings the 8259 PIC's output in.
const LAPIC_LVT_LINT0: usize = 0x350;
const LAPIC_TIMER_INITIAL: usize = 0x380;
const LAPIC_TIMER_CURRENT: usize = 0x390;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

const PM_TIMER_HZ: u64 = 3_579_545;

static LAPIC_BASE: Once<u64> = Once::new();
/// Every I/O APIC's registers (kernel address, in the MADT's order) and the routing table.
static IOAPICS: Once<([u64; MAX_IOAPICS], Routes)> = Once::new();
/// Vector of interrupt line (GSI) 0 routed through an I/O APIC (line n arrives at this + n, for
/// n below `interrupts::MAX_LINES`: vectors 0x40-0x7f).
pub const IRQ_BASE_VECTOR: u8 = 0x40;
const _: () = assert!(IRQ_BASE_VECTOR as usize + MAX_LINES <= SPURIOUS_VECTOR as usize);
/// Vector of MSI line `interrupts::MAX_LINES` (MSI line n arrives at this + n - MAX_LINES:
/// vectors 0x80-0x9f).
pub const MSI_BASE_VECTOR: u8 = 0x80;
const _: () = assert!(MSI_BASE_VECTOR as usize >= IRQ_BASE_VECTOR as usize + MAX_LINES);
const _: () = assert!(MSI_BASE_VECTOR as usize + MAX_MSIS <= SPURIOUS_VECTOR as usize);
/// MSI lines unmasked (bit n: line MAX_LINES + n), and MSIs that arrived while their line was
/// masked, held for the unmask.
static MSI_UNMASKED: AtomicU64 = AtomicU64::new(0);
static MSI_HELD: AtomicU64 = AtomicU64::new(0);
const LAPIC_ICR_LOW: usize = 0x300;
/// ICR: destination shorthand "self", fixed delivery, edge.
const ICR_SELF: u32 = 0b01 << 18;
/// Redirection entry: level-triggered, active-low.
const RTE_LEVEL: u32 = 1 << 15;
const RTE_ACTIVE_LOW: u32 = 1 << 13;
static TICKS: AtomicU64 = AtomicU64::new(0);

fn lapic_read(reg: usize) -> u32 {
    let base = *LAPIC_BASE.get().expect("LAPIC mapped before use");
    // SAFETY: a LAPIC register inside the uncached MMIO page mapped in `init`.
    unsafe { core::ptr::read_volatile((base as usize + reg) as *const u32) }
}

fn lapic_write(reg: usize, value: u32) {
    let base = *LAPIC_BASE.get().expect("LAPIC mapped before use");
    // SAFETY: a LAPIC register inside the uncached MMIO page mapped in `init`.
    unsafe { core::ptr::write_volatile((base as usize + reg) as *mut u32, value) }
}

/// Remap the 8259 PICs away from the exception vectors and mask every line.
pub fn disable_legacy_pic() {
    // SAFETY: the standard 8259 command/data ports; the ICW sequence below is the documented
    // initialisation, ending with all lines masked.
    unsafe {
        let (mut c1, mut d1) = (Port::<u8>::new(0x20), Port::<u8>::new(0x21));
        let (mut c2, mut d2) = (Port::<u8>::new(0xa0), Port::<u8>::new(0xa1));
        c1.write(0x11);
        c2.write(0x11);
        d1.write(PIC_BASE_VECTOR);
        d2.write(PIC_BASE_VECTOR + 8);
        d1.write(4);
        d2.write(2);
        d1.write(1);
        d2.write(1);
        d1.write(0xff);
        d2.write(0xff);
    }
}

/// Map and enable the local APIC with its LINT0 input masked (so the legacy PIC, masked too,
/// can reach the CPU by no path even if something re-programmed it), mask every I/O APIC input.
pub fn init(platform: &Platform) -> Result<(), paging::PagingError> {
    let base = paging::map_mmio(platform.lapic_phys, 4096)?;
    LAPIC_BASE.call_once(|| base.as_u64());
    lapic_write(LAPIC_SVR, 0x100 | SPURIOUS_VECTOR as u32);
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED);
    lapic_write(LAPIC_LVT_LINT0, LVT_MASKED);
    let mut regs_of = [0u64; MAX_IOAPICS];
    let mut inputs = [IoApicInputs { gsi_base: 0, inputs: 0 }; MAX_IOAPICS];
    let mut n = 0;
    for io in platform.ioapics.iter().flatten() {
        let regs = paging::map_mmio(io.phys as u64, 32)?.as_u64() as usize;
        let sel = regs as *mut u32;
        let win = (regs + 0x10) as *mut u32;
        // SAFETY: IOREGSEL/IOWIN of an I/O APIC the MADT describes, mapped uncached above.
        let max = unsafe {
            core::ptr::write_volatile(sel, 1);
            let max = (core::ptr::read_volatile(win) >> 16) & 0xff;
            for i in 0..=max {
                core::ptr::write_volatile(sel, 0x10 + 2 * i);
                core::ptr::write_volatile(win, LVT_MASKED);
            }
            max
        };
        regs_of[n] = regs as u64;
        inputs[n] = IoApicInputs { gsi_base: io.gsi_base, inputs: max + 1 };
        n += 1;
    }
    let overrides = platform.overrides;
    let mut list =
        [crate::interrupts::SourceOverride { bus: 0, source: 0, gsi: 0, flags: 0 }; super::acpi::MAX_OVERRIDES];
    let mut m = 0;
    for o in overrides.iter().flatten() {
        list[m] = *o;
        m += 1;
    }
    let routes = Routes::build(&inputs[..n], &list[..m]);
    crate::info!(
        "interrupts: {} I/O APIC(s), {} lines routed (of GSIs 0-{}), {} source override(s); ISA IRQ 0 on GSI {}",
        n,
        routes.count(),
        MAX_LINES - 1,
        m,
        routes.isa_gsi(0).unwrap_or(0)
    );
    if routes.beyond + routes.ignored > 0 || platform.ioapics_dropped + platform.overrides_dropped > 0 {
        crate::warn!(
            "interrupts: {} input(s) past GSI {} not routed, {} MADT entries ignored, {} I/O APIC(s) and {} override(s) past the kernel's tables",
            routes.beyond,
            MAX_LINES - 1,
            routes.ignored,
            platform.ioapics_dropped,
            platform.overrides_dropped
        );
    }
    IOAPICS.call_once(|| (regs_of, routes));
    Ok(())
}

/// Whether some I/O APIC input has line (GSI) `irq`.
pub fn irq_line(irq: u8) -> bool {
    IOAPICS.get().is_some_and(|(_, r)| r.line(u64::from(irq)).is_some())
}

fn read_pm_timer(port: u16, wide: bool) -> u64 {
    // SAFETY: the ACPI PM timer port from the FADT; reading it has no side effects.
    let v = unsafe { Port::<u32>::new(port).read() } as u64;
    if wide { v } else { v & 0x00ff_ffff }
}

/// Measure the LAPIC timer against the PM timer for 0.5 ms (1790 PM-timer ticks, so the
/// reading is good to about 0.06%) and start it at [`TIMER_HZ`].
/// Returns LAPIC timer ticks per second (at divide-by-16).
pub fn start_timer(platform: &Platform) -> Result<u64, &'static str> {
    let (port, wide) = platform.pm_timer.ok_or("no ACPI PM timer to calibrate the LAPIC timer")?;
    let mask = if wide { u32::MAX as u64 } else { 0x00ff_ffff };
    let window = PM_TIMER_HZ / 2000;

    lapic_write(LAPIC_TIMER_DIVIDE, 0b0011); // divide by 16
    lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | TIMER_VECTOR as u32);
    let start = read_pm_timer(port, wide);
    lapic_write(LAPIC_TIMER_INITIAL, u32::MAX);
    loop {
        let now = read_pm_timer(port, wide);
        if (now.wrapping_sub(start) & mask) >= window {
            break;
        }
        core::hint::spin_loop();
    }
    let elapsed = (u32::MAX - lapic_read(LAPIC_TIMER_CURRENT)) as u64;
    let per_second = elapsed * 2000;
    let initial = (per_second / TIMER_HZ).clamp(1, u32::MAX as u64) as u32;
    lapic_write(LAPIC_TIMER_INITIAL, 0);
    lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | TIMER_VECTOR as u32);
    lapic_write(LAPIC_TIMER_INITIAL, initial);
    Ok(per_second)
}

/// Signal end of interrupt to the local APIC.
pub fn eoi() {
    if LAPIC_BASE.get().is_some() {
        lapic_write(LAPIC_EOI, 0);
    }
}

/// The timer interrupt: count it.
pub fn timer_interrupt() {
    TICKS.fetch_add(1, Ordering::Relaxed);
    eoi();
}

/// Timer interrupts so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Let interrupts in until `n` more timer ticks have been counted (halting in between).
pub fn wait_ticks(n: u64) {
    let target = ticks() + n;
    while ticks() < target {
        // `sti; hlt` as one sequence: an interrupt between them would be missed by `hlt` otherwise.
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
}

/// The address/data pair that raises MSI line `irq` (`interrupts::is_msi`): the boot CPU's
/// local APIC (id 0, physical destination), fixed delivery, edge, the line's vector.
pub fn msi_message(irq: u8) -> Option<(u64, u64)> {
    let n = usize::from(irq).checked_sub(MAX_LINES).filter(|&n| n < MAX_MSIS)?;
    Some((0xfee0_0000, u64::from(MSI_BASE_VECTOR) + n as u64))
}

/// Mask or unmask line `irq`: an I/O APIC input ([`ioapic_set`]) or an MSI line. The kernel
/// cannot mask an MSI at the device, so its mask is the kernel's: an MSI that arrives masked is
/// held ([`msi_arrived`]) and raised again (a self-IPI, taken once the kernel lets interrupts in)
/// when the line is unmasked. `drop_held` forgets a held one (Clear, the handler's deletion).
pub fn line_set(irq: u8, masked: bool, drop_held: bool) {
    let Some(n) = usize::from(irq).checked_sub(MAX_LINES) else {
        ioapic_set(irq, masked);
        return;
    };
    if n >= MAX_MSIS {
        return;
    }
    let bit = 1u64 << n;
    if drop_held {
        MSI_HELD.fetch_and(!bit, Ordering::Relaxed);
    }
    if masked {
        MSI_UNMASKED.fetch_and(!bit, Ordering::Relaxed);
        return;
    }
    MSI_UNMASKED.fetch_or(bit, Ordering::Relaxed);
    if MSI_HELD.fetch_and(!bit, Ordering::Relaxed) & bit != 0 {
        lapic_write(LAPIC_ICR_LOW, ICR_SELF | (u32::from(MSI_BASE_VECTOR) + n as u32));
    }
}

/// An MSI arrived on vector `MSI_BASE_VECTOR + n`: returns its line if it is unmasked (now
/// masked until the handler's Ack), or `None` (held for the unmask).
pub fn msi_arrived(n: usize) -> Option<u8> {
    let bit = 1u64 << (n % MAX_MSIS);
    if MSI_UNMASKED.fetch_and(!bit, Ordering::Relaxed) & bit != 0 {
        Some((MAX_LINES + n % MAX_MSIS) as u8)
    } else {
        MSI_HELD.fetch_or(bit, Ordering::Relaxed);
        None
    }
}

/// Route interrupt line (GSI) `irq` to vector `IRQ_BASE_VECTOR + irq` on the boot CPU, with the
/// line's trigger mode and polarity, masked or not. A line no I/O APIC has is left alone.
pub fn ioapic_set(irq: u8, masked: bool) {
    let Some((regs_of, routes)) = IOAPICS.get() else { return };
    let Some(line) = routes.line(u64::from(irq)) else { return };
    let Some(&regs) = regs_of.get(line.ioapic as usize) else { return };
    // `routes.line` has lines below MAX_LINES only, so the vector is at most 0x7f.
    let mut low = u32::from(IRQ_BASE_VECTOR) + u32::from(irq);
    if line.trigger == Trigger::Level {
        low |= RTE_LEVEL;
    }
    if line.polarity == Polarity::ActiveLow {
        low |= RTE_ACTIVE_LOW;
    }
    if masked {
        low |= LVT_MASKED;
    }
    let pin = u32::from(line.pin);
    let sel = regs as *mut u32;
    let win = (regs + 0x10) as *mut u32;
    // SAFETY: IOREGSEL/IOWIN of an I/O APIC mapped in `init`; redirection entry `pin`, which the
    // I/O APIC has (the routing table was built from its own count); destination APIC id 0, the
    // boot CPU, in the high word, written first so the entry is never live half-written.
    unsafe {
        core::ptr::write_volatile(sel, 0x10 + 2 * pin + 1);
        core::ptr::write_volatile(win, 0);
        core::ptr::write_volatile(sel, 0x10 + 2 * pin);
        core::ptr::write_volatile(win, low);
    }
}
