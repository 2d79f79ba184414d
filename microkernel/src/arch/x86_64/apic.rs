//! Interrupt controllers and the timer: the legacy PIC (remapped, then masked for good), the
//! local APIC (enabled, with its timer calibrated against the ACPI PM timer and run periodic),
//! and the I/O APICs (every input masked until a user driver asks for one).

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Once;
use x86_64::instructions::port::Port;

use super::acpi::Platform;
use super::paging;
use super::trap::{PIC_BASE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};

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
/// The first I/O APIC's registers (kernel address) and its first GSI.
static IOAPIC: Once<(u64, u32)> = Once::new();
/// Vector of interrupt line 0 routed through the I/O APIC (line n arrives at this + n).
pub const IRQ_BASE_VECTOR: u8 = 0x40;
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
    for io in platform.ioapics.iter().flatten() {
        let regs = paging::map_mmio(io.phys as u64, 32)?.as_u64() as usize;
        IOAPIC.call_once(|| (regs as u64, io.gsi_base));
        let sel = regs as *mut u32;
        let win = (regs + 0x10) as *mut u32;
        // SAFETY: IOREGSEL/IOWIN of an I/O APIC the MADT describes, mapped uncached above.
        unsafe {
            core::ptr::write_volatile(sel, 1);
            let max = (core::ptr::read_volatile(win) >> 16) & 0xff;
            for i in 0..=max {
                core::ptr::write_volatile(sel, 0x10 + 2 * i);
                core::ptr::write_volatile(win, LVT_MASKED);
            }
        }
    }
    Ok(())
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

/// Route interrupt line `irq` (a GSI of the first I/O APIC; ISA interrupt-source overrides are
/// not applied) to vector `IRQ_BASE_VECTOR + irq` on this CPU, edge-triggered, masked or not.
pub fn ioapic_set(irq: u8, masked: bool) {
    let Some(&(regs, gsi_base)) = IOAPIC.get() else { return };
    let Some(pin) = u32::from(irq).checked_sub(gsi_base) else { return };
    let low = u32::from(IRQ_BASE_VECTOR + irq) | if masked { LVT_MASKED } else { 0 };
    let sel = regs as *mut u32;
    let win = (regs + 0x10) as *mut u32;
    // SAFETY: IOREGSEL/IOWIN of the I/O APIC mapped in `init`; redirection entry `pin`
    // (destination: APIC id 0, the boot CPU, in the high word).
    unsafe {
        core::ptr::write_volatile(sel, 0x10 + 2 * pin + 1);
        core::ptr::write_volatile(win, 0);
        core::ptr::write_volatile(sel, 0x10 + 2 * pin);
        core::ptr::write_volatile(win, low);
    }
}
