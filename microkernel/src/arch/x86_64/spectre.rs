//! Branch-predictor hygiene when the CPU changes address space (boot option `ozone.spectre`).
//!
//! Branch predictors are shared by everything that runs on a core. A program can train the
//! indirect-branch predictor (Spectre v2) or leave return addresses of its own choosing in the
//! return stack buffer (RSB) so that the next program's indirect branches and returns are
//! *speculatively* steered to code of the first program's choosing, in the second program's
//! address space and with its data; and a return that finds the RSB empty (underflow) falls back
//! on some processors to the indirect-branch predictor. `ozone.spectre=ibpb` closes both channels
//! between address spaces: whenever `switch_to` loads another address space (CR3 changes), the
//! kernel
//!
//! * issues an **indirect branch prediction barrier** (IBPB: a write of 1 to IA32_PRED_CMD,
//!   MSR 0x49) where CPUID advertises it, so nothing trained before the switch predicts an
//!   indirect branch after it; and
//! * **fills the return stack buffer** with 32 entries that point at a speculation trap
//!   ([`fill_rsb`]), so no return after the switch is predicted from an entry the previous
//!   address space left, and no return underflows into the indirect-branch predictor.
//!
//! Switches between threads of one address space do neither (as Linux, which issues IBPB when
//! the memory map changes): they are one program. The default is off (`ozone.spectre=off`):
//! QEMU's emulated CPU has no speculation to attack, and the cost is measured and argued in
//! docs/hardening.md. With the option off the address-space switch pays one load and one branch.

use core::sync::atomic::{AtomicU8, Ordering};

use x86_64::registers::model_specific::Msr;

use super::cpu::Features;

/// IA32_PRED_CMD; bit 0 is IBPB.
const IA32_PRED_CMD: u32 = 0x49;
const PRED_CMD_IBPB: u64 = 1;

/// What an address-space switch does ([`IBPB`] | [`RSB_FILL`]; 0 = nothing).
static ON_SWITCH: AtomicU8 = AtomicU8::new(0);
const IBPB: u8 = 1;
const RSB_FILL: u8 = 2;
/// The skim window (`kpti.rs`) is on: the switch records the user CR3 instead of loading it.
const SKIM: u8 = 4;

/// The value of `ozone.spectre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing on address-space switches (the default).
    Off,
    /// IBPB (where the CPU has it) and an RSB fill on every address-space switch.
    Ibpb,
}

impl Mode {
    /// `off` or `ibpb`.
    pub fn parse(value: &str) -> Option<Mode> {
        match value {
            "off" => Some(Mode::Off),
            "ibpb" => Some(Mode::Ibpb),
            _ => None,
        }
    }
}

/// What [`init`] turned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Active {
    pub ibpb: bool,
    pub rsb_fill: bool,
    /// IBPB was asked for and the CPU does not advertise it (only the RSB is filled).
    pub ibpb_missing: bool,
}

/// Choose what address-space switches do; at boot, before the first thread runs.
pub fn init(mode: Mode, features: &Features) -> Active {
    let active = match mode {
        Mode::Off => Active { ibpb: false, rsb_fill: false, ibpb_missing: false },
        Mode::Ibpb => Active { ibpb: features.ibpb, rsb_fill: true, ibpb_missing: !features.ibpb },
    };
    let mut on_switch = 0;
    if active.ibpb {
        on_switch |= IBPB;
    }
    if active.rsb_fill {
        on_switch |= RSB_FILL;
    }
    ON_SWITCH.store(on_switch | (ON_SWITCH.load(Ordering::Relaxed) & SKIM), Ordering::Relaxed);
    active
}

/// The skim window is on (`kpti::init`): address-space switches leave the plain path.
pub fn set_skim_window() {
    ON_SWITCH.fetch_or(SKIM, Ordering::Relaxed);
}

/// What an address-space switch does (`entry::load_address_space`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchKind {
    /// A plain CR3 write (no option on).
    Plain,
    /// A CR3 write, then [`barriers`].
    Barriers,
    /// The skim window: the user CR3 recorded for the exit, then the barriers if it changed.
    Skim,
}

/// What an address-space switch does: one load, and for the default one test of it.
#[inline(always)]
pub fn switch_kind() -> SwitchKind {
    let on_switch = ON_SWITCH.load(Ordering::Relaxed);
    if on_switch == 0 {
        SwitchKind::Plain
    } else if on_switch & SKIM != 0 {
        SwitchKind::Skim
    } else {
        SwitchKind::Barriers
    }
}

/// The CPU has just loaded another address space (CR3 changed) and will return to it: apply the
/// barriers the boot option asked for. One load and one branch when there are none.
#[inline(always)]
pub fn address_space_switched() {
    if ON_SWITCH.load(Ordering::Relaxed) & (IBPB | RSB_FILL) != 0 {
        barriers();
    }
}

/// The barriers `ozone.spectre` asked for (none if it is off), now.
#[inline(never)]
pub fn barriers() {
    let on_switch = ON_SWITCH.load(Ordering::Relaxed);
    if on_switch & IBPB != 0 {
        // SAFETY: IA32_PRED_CMD exists when CPUID advertises IBPB (checked by `init`); writing
        // the IBPB bit only discards branch predictions.
        unsafe { Msr::new(IA32_PRED_CMD).write(PRED_CMD_IBPB) };
    }
    if on_switch & RSB_FILL != 0 {
        fill_rsb();
    }
}

/// Overwrite the return stack buffer with 32 return addresses that lead only to a speculation
/// trap (`pause; lfence` in a loop), as Linux's `__FILL_RETURN_BUFFER`: 16 rounds of two calls
/// whose return addresses are the traps, the stack pointer moved back past them after each round.
/// A processor's RSB holds at most 32 entries, so afterwards every entry is one of these: a later
/// return is predicted either correctly (for calls made after the fill) or into the trap, never
/// to an address an earlier program chose. The final `lfence` stops speculation past the loop's
/// last (mispredictable) branch. `ret` itself is predicted into a trap: one misprediction, no
/// harm. Clobbers `rcx` and the flags only (an ordinary `extern "C"` function to its callers).
#[unsafe(naked)]
pub extern "C" fn fill_rsb() {
    // SAFETY: the code touches only rcx, the flags and the stack below the return address, which
    // it restores: each round pushes two return addresses with its calls and removes them with
    // the `add`, so `ret` finds the caller's return address. The traps are reached only
    // speculatively. The kernel target has no red zone, so the pushes overwrite nothing live.
    core::arch::naked_asm!(
        "mov ecx, 16",
        "2:",
        "call 3f",
        "4:",
        "pause",
        "lfence",
        "jmp 4b",
        "3:",
        "call 5f",
        "6:",
        "pause",
        "lfence",
        "jmp 6b",
        "5:",
        "add rsp, 16",
        "dec ecx",
        "jnz 2b",
        "lfence",
        "ret",
    )
}
