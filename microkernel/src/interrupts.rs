//! The machine's interrupt lines as the kernel routes them: which global system interrupts
//! (GSIs) exist, on which I/O APIC input each arrives, and with which trigger mode and polarity.
//!
//! The firmware's MADT lists every I/O APIC (its first GSI; the number of inputs is read from the
//! I/O APIC itself) and *interrupt-source overrides*: "ISA IRQ n arrives on GSI g, with this
//! polarity and trigger mode" (QEMU: IRQ 0, the PIT, on GSI 2; IRQs 5, 9, 10 and 11, among them
//! the ACPI SCI, level-triggered, active-high). [`Routes::build`] turns that into one table:
//!
//! * every input of every I/O APIC is one line, named by its GSI, up to [`MAX_LINES`]; GSIs past
//!   that are counted in [`Routes::beyond`] (and reported at boot), never routed;
//! * a line an ISA override targets takes the override's polarity and trigger mode ("same as the
//!   bus" meaning ISA's: active-high, edge);
//! * a line the MADT says nothing about is ISA-like below 16 (edge, active-high) and PCI-like
//!   from 16 up (level, active-low: PCI INTx, q35's GSIs 16-23);
//! * an override with reserved flag values, on a bus other than ISA, or naming a GSI no I/O APIC
//!   has, changes nothing and is counted in [`Routes::ignored`] (reported at boot).
//!
//! Lines [`MAX_LINES`]`..`[`ALL_LINES`] are message-signalled (MSI): no I/O APIC input, a vector
//! and an address/data pair each (see [`MAX_MSIS`]).
//!
//! A line's number in the kernel's interface (IRQControl `Get`) is its GSI. The trigger mode and
//! polarity are the firmware's word (or the rules above), never a program's: a program cannot
//! program an input the wrong way round to storm the CPU. [`Routes::isa_gsi`] gives the GSI of an
//! ISA IRQ. Portable and host-tested; `arch/x86_64/apic.rs` programs the I/O APICs from it.

/// The most interrupt lines (GSIs `0..MAX_LINES`) the kernel routes: each has a vector of its
/// own (`apic::IRQ_BASE_VECTOR + gsi`).
pub const MAX_LINES: usize = 64;
/// Message-signalled interrupt lines: numbers `MAX_LINES..MAX_LINES + MAX_MSIS`, each a vector
/// of its own (`apic::MSI_BASE_VECTOR + n - MAX_LINES`) that a device raises by writing the
/// line's address/data pair. Issued only by IRQControl `GetMsi`, which chooses the line.
pub const MAX_MSIS: usize = 32;
/// Every line number the kernel knows: GSIs, then MSI lines.
pub const ALL_LINES: usize = MAX_LINES + MAX_MSIS;

/// Whether line `irq` is an MSI line.
pub const fn is_msi(irq: u64) -> bool {
    irq >= MAX_LINES as u64 && irq < ALL_LINES as u64
}

/// How an input signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Edge,
    Level,
}

/// Which level of the input is "asserted".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    ActiveHigh,
    ActiveLow,
}

/// One routed line: the I/O APIC (index in the MADT's order) and input it arrives on, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    pub ioapic: u8,
    pub pin: u8,
    pub trigger: Trigger,
    pub polarity: Polarity,
}

/// An I/O APIC: its first GSI and its number of inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicInputs {
    pub gsi_base: u32,
    pub inputs: u32,
}

/// A MADT interrupt-source override, as the table gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceOverride {
    /// 0: ISA (the only bus ACPI defines).
    pub bus: u8,
    /// The bus-relative IRQ.
    pub source: u8,
    pub gsi: u32,
    /// MPS INTI flags: bits 0-1 polarity, 2-3 trigger mode.
    pub flags: u16,
}

/// The routing table.
#[derive(Clone, Copy, Debug)]
pub struct Routes {
    lines: [Option<Line>; MAX_LINES],
    /// The GSI of each ISA IRQ (identity unless an override moves it).
    isa: [u32; 16],
    /// I/O APIC inputs whose GSI is `MAX_LINES` or more (not routed).
    pub beyond: u32,
    /// Overrides that changed nothing (bad flags, another bus, a GSI no I/O APIC has), and
    /// inputs whose GSI another I/O APIC already has.
    pub ignored: u32,
}

/// The polarity and trigger mode of MPS INTI `flags` on the ISA bus, or `None` for reserved
/// values.
fn isa_flags(flags: u16) -> Option<(Polarity, Trigger)> {
    let polarity = match flags & 0b11 {
        0b00 | 0b01 => Polarity::ActiveHigh,
        0b11 => Polarity::ActiveLow,
        _ => return None,
    };
    let trigger = match (flags >> 2) & 0b11 {
        0b00 | 0b01 => Trigger::Edge,
        0b11 => Trigger::Level,
        _ => return None,
    };
    Some((polarity, trigger))
}

impl Routes {
    /// No lines.
    pub const fn empty() -> Routes {
        let mut isa = [0u32; 16];
        let mut i = 0;
        while i < 16 {
            isa[i] = i as u32;
            i += 1;
        }
        Routes { lines: [None; MAX_LINES], isa, beyond: 0, ignored: 0 }
    }

    /// The table for these I/O APICs (in the MADT's order) and overrides.
    pub fn build(ioapics: &[IoApicInputs], overrides: &[SourceOverride]) -> Routes {
        let mut r = Routes::empty();
        for (index, io) in ioapics.iter().enumerate() {
            for pin in 0..io.inputs.min(256) {
                let Some(gsi) = io.gsi_base.checked_add(pin) else { break };
                let Some(slot) = r.lines.get_mut(gsi as usize) else {
                    r.beyond += 1;
                    continue;
                };
                if slot.is_some() || index > u8::MAX as usize {
                    r.ignored += 1;
                    continue;
                }
                let (trigger, polarity) = if gsi < 16 {
                    (Trigger::Edge, Polarity::ActiveHigh)
                } else {
                    (Trigger::Level, Polarity::ActiveLow)
                };
                *slot = Some(Line { ioapic: index as u8, pin: pin as u8, trigger, polarity });
            }
        }
        for o in overrides {
            let line = r.lines.get_mut(o.gsi as usize).and_then(|l| l.as_mut());
            match (o.bus, isa_flags(o.flags), line) {
                (0, Some((polarity, trigger)), Some(line)) if o.source < 16 => {
                    line.polarity = polarity;
                    line.trigger = trigger;
                    r.isa[o.source as usize] = o.gsi;
                }
                _ => r.ignored += 1,
            }
        }
        r
    }

    /// Line `gsi`, if some I/O APIC input has it.
    pub fn line(&self, gsi: u64) -> Option<Line> {
        *self.lines.get(usize::try_from(gsi).ok()?)?
    }

    /// The GSI ISA IRQ `irq` (0-15) arrives on.
    pub fn isa_gsi(&self, irq: u8) -> Option<u32> {
        self.isa.get(irq as usize).copied()
    }

    /// How many lines are routed.
    pub fn count(&self) -> usize {
        self.lines.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_OVERRIDES: [SourceOverride; 5] = [
        SourceOverride { bus: 0, source: 0, gsi: 2, flags: 0 },
        SourceOverride { bus: 0, source: 5, gsi: 5, flags: 0xd },
        SourceOverride { bus: 0, source: 9, gsi: 9, flags: 0xd },
        SourceOverride { bus: 0, source: 10, gsi: 10, flags: 0xd },
        SourceOverride { bus: 0, source: 11, gsi: 11, flags: 0xd },
    ];

    fn line(r: &Routes, gsi: u64) -> (Trigger, Polarity) {
        let l = r.line(gsi).expect("routed");
        (l.trigger, l.polarity)
    }

    #[test]
    fn qemu_q35_lines_follow_the_madt_and_the_defaults() {
        let r = Routes::build(&[IoApicInputs { gsi_base: 0, inputs: 24 }], &QEMU_OVERRIDES);
        assert_eq!(r.count(), 24);
        assert_eq!((r.beyond, r.ignored), (0, 0));
        assert_eq!(r.isa_gsi(0), Some(2), "the PIT arrives on GSI 2");
        assert_eq!(r.isa_gsi(4), Some(4));
        assert_eq!(line(&r, 2), (Trigger::Edge, Polarity::ActiveHigh));
        assert_eq!(line(&r, 4), (Trigger::Edge, Polarity::ActiveHigh), "COM1: ISA default");
        assert_eq!(line(&r, 9), (Trigger::Level, Polarity::ActiveHigh), "the SCI");
        for gsi in 16..24 {
            assert_eq!(line(&r, gsi), (Trigger::Level, Polarity::ActiveLow), "PCI INTx on GSI {gsi}");
        }
        assert_eq!(r.line(24), None);
        assert_eq!(r.line(u64::MAX), None);
    }

    #[test]
    fn every_ioapic_is_routed_and_gsis_past_the_bound_are_counted() {
        let r =
            Routes::build(&[IoApicInputs { gsi_base: 0, inputs: 24 }, IoApicInputs { gsi_base: 24, inputs: 48 }], &[]);
        assert_eq!(r.count(), MAX_LINES);
        assert_eq!(r.beyond, 72 - MAX_LINES as u32);
        let l = r.line(40).unwrap();
        assert_eq!((l.ioapic, l.pin, l.trigger), (1, 16, Trigger::Level));
        assert_eq!(r.line(MAX_LINES as u64), None);
    }

    #[test]
    fn overlapping_ioapics_and_bad_overrides_change_nothing() {
        let r = Routes::build(
            &[IoApicInputs { gsi_base: 0, inputs: 24 }, IoApicInputs { gsi_base: 20, inputs: 8 }],
            &[
                // Reserved polarity, reserved trigger mode, another bus, a GSI no I/O APIC has,
                // an ISA IRQ past 15.
                SourceOverride { bus: 0, source: 3, gsi: 3, flags: 0b10 },
                SourceOverride { bus: 0, source: 3, gsi: 3, flags: 0b1000 },
                SourceOverride { bus: 1, source: 3, gsi: 3, flags: 0xf },
                SourceOverride { bus: 0, source: 3, gsi: 4000, flags: 0xf },
                SourceOverride { bus: 0, source: 200, gsi: 3, flags: 0xf },
            ],
        );
        assert_eq!(r.ignored, 4 + 5);
        assert_eq!(r.line(21).unwrap().ioapic, 0, "the first I/O APIC keeps its GSIs");
        assert_eq!(r.line(27).unwrap().ioapic, 1);
        assert_eq!(line(&r, 3), (Trigger::Edge, Polarity::ActiveHigh));
        assert_eq!(r.isa_gsi(3), Some(3));
        assert_eq!(r.isa_gsi(16), None);
    }

    #[test]
    fn an_active_low_level_override_applies() {
        let r = Routes::build(
            &[IoApicInputs { gsi_base: 0, inputs: 24 }],
            &[SourceOverride { bus: 0, source: 9, gsi: 20, flags: 0xf }],
        );
        assert_eq!(line(&r, 20), (Trigger::Level, Polarity::ActiveLow));
        assert_eq!(r.isa_gsi(9), Some(20));
        assert_eq!(line(&r, 9), (Trigger::Edge, Polarity::ActiveHigh));
    }

    #[test]
    fn huge_bases_do_not_overflow() {
        let r = Routes::build(&[IoApicInputs { gsi_base: u32::MAX - 2, inputs: 240 }], &[]);
        assert_eq!(r.count(), 0);
        assert_eq!(r.beyond, 3);
    }
}
