//! Ending the run: QEMU's `isa-debug-exit` device (the exit status tells tests what happened),
//! then ACPI S5 power-off for a clean shutdown, or a halt for a failure.

use ozone_abi::{DEBUG_EXIT_PORT, ExitCode};
use spin::Once;
use x86_64::instructions::port::Port;

use super::acpi::PowerOffInfo;
use super::cpu;

static POWER_OFF: Once<PowerOffInfo> = Once::new();

/// Remember how to power off (from ACPI).
pub fn set_power_off(info: PowerOffInfo) {
    POWER_OFF.call_once(|| info);
}

/// Stop the machine with `code`. Clean codes power off through ACPI when no `isa-debug-exit`
/// device is present; failure codes halt so the report stays on the console.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: the isa-debug-exit port; on a machine without that device the write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    if matches!(code, ExitCode::Success | ExitCode::UserFault) {
        acpi_power_off();
        crate::error!("ACPI power-off did not take effect; halting");
    } else {
        crate::kprint!("ozone: halted\n");
    }
    cpu::halt_forever()
}

/// The I/O ports this module drives (each `(first, last)`): the debug-exit device and, where
/// ACPI described them, the PM1 control blocks and the SMI command port.
pub fn kernel_ports() -> [Option<(u16, u16)>; 4] {
    let p = POWER_OFF.get();
    [
        Some((DEBUG_EXIT_PORT, DEBUG_EXIT_PORT.saturating_add(3))),
        p.map(|p| (p.pm1a_cnt, p.pm1a_cnt.saturating_add(1))),
        p.and_then(|p| p.pm1b_cnt).map(|b| (b, b.saturating_add(1))),
        p.filter(|p| p.smi_cmd != 0).map(|p| (p.smi_cmd, p.smi_cmd)),
    ]
}

fn acpi_power_off() {
    let Some(p) = POWER_OFF.get() else { return };
    // SAFETY: the PM1 control and SMI command ports as the FADT describes them.
    unsafe {
        let mut pm1a = Port::<u16>::new(p.pm1a_cnt);
        // Hand the ACPI hardware to the OS first if the firmware has not (SCI_EN clear).
        if pm1a.read() & 1 == 0 && p.smi_cmd != 0 && p.acpi_enable != 0 {
            Port::<u8>::new(p.smi_cmd).write(p.acpi_enable);
            for _ in 0..1_000_000 {
                if pm1a.read() & 1 != 0 {
                    break;
                }
                core::hint::spin_loop();
            }
        }
        const SLP_EN: u16 = 1 << 13;
        pm1a.write(((p.slp_typ_a as u16 & 7) << 10) | SLP_EN);
        if let Some(b) = p.pm1b_cnt {
            Port::<u16>::new(b).write(((p.slp_typ_b as u16 & 7) << 10) | SLP_EN);
        }
        // The power goes away asynchronously: give it about a second (port reads take roughly
        // a microsecond each) before declaring failure.
        for _ in 0..1_000_000 {
            pm1a.read();
        }
    }
}
