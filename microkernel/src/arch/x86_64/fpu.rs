//! User FPU/SSE/AVX state, switched lazily (the default) or eagerly (`ozone.fpu=eager`). The
//! kernel itself never uses these registers (it is built soft-float), so the CPU's FPU registers
//! belong to one thread, the *owner*.
//!
//! **Lazy**: the owner keeps the registers until another thread touches them: the kernel sets
//! CR0.TS whenever a thread other than the owner runs, and that thread's first FPU instruction
//! traps (#NM); the kernel then saves the owner's state to its TCB, loads the new thread's, and
//! lets the instruction run again. Threads that never use the FPU never pay for it. On real
//! hardware this leaves the owner's values in the registers while another thread runs, and
//! processors that execute FPU instructions speculatively before the #NM is taken leak them
//! (LazyFP, CVE-2018-3665).
//!
//! **Eager**: every switch to a thread that does not own the registers saves the owner's state
//! and loads the new thread's at once; CR0.TS is never set, so no thread ever runs with another
//! thread's values in the registers, architecturally or speculatively.
//!
//! XSAVE/XRSTOR (x87, SSE and, where present, AVX state) when the CPU has XSAVE, FXSAVE/FXRSTOR
//! otherwise.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};

use super::cpu::Features;
use crate::object::tcb::FpuArea;

static USE_XSAVE: AtomicBool = AtomicBool::new(false);

/// Enable the FPU, SSE and (where present) AVX for ring 3.
pub fn init(features: &Features) {
    // SAFETY: turning on FPU/SSE support: the kernel does not use these registers itself.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    if features.xsave {
        // SAFETY: OSXSAVE only enables XGETBV/XSETBV/XSAVE, supported per CPUID.
        unsafe { Cr4::update(|f| f.insert(Cr4Flags::OSXSAVE)) };
        let supported = supported_xcr0();
        let mut mask = XCr0Flags::X87 | XCr0Flags::SSE;
        if supported & XCr0Flags::AVX.bits() != 0 {
            mask |= XCr0Flags::AVX;
        }
        // SAFETY: only components the CPU reports (CPUID 0xd) are enabled; x87 is mandatory.
        unsafe { XCr0::write(mask) };
        USE_XSAVE.store(true, Ordering::Relaxed);
    }
}

fn supported_xcr0() -> u64 {
    let r = core::arch::x86_64::__cpuid_count(0xd, 0);
    ((r.edx as u64) << 32) | r.eax as u64
}

/// Bytes of the save area the enabled components need (must fit the TCB's area).
pub fn save_area_size() -> usize {
    if USE_XSAVE.load(Ordering::Relaxed) { core::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize } else { 512 }
}

/// The state a new thread starts with: x87 control word 0x37f, MXCSR 0x1f80 (all exceptions
/// masked), everything else zero (for XRSTOR, XSTATE_BV = 0 selects the initial state).
pub fn initial_state(area: &mut FpuArea) {
    area.0.fill(0);
    area.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    area.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
}

/// Save the CPU's user FPU state into `from` (if there is one to keep) and load `to`'s: the eager
/// switch, and #NM's. XSAVE/XRSTOR with every component XCR0 enables (EDX:EAX all ones: the
/// requested-feature bitmap is XCR0 AND EDX:EAX), so neither the mask nor the choice of
/// instructions is looked up twice.
#[inline(always)]
pub fn hand_over(from: Option<&mut FpuArea>, to: &FpuArea) {
    // SAFETY: both areas are 64-byte aligned and large enough (checked at boot against
    // `save_area_size`) and distinct (`from` is another thread's); `to` holds a state written by
    // `hand_over` or the initial state a TCB is made with (see `initial_state`); FPU/SSE were enabled by `init`.
    unsafe {
        if USE_XSAVE.load(Ordering::Relaxed) {
            if let Some(from) = from {
                core::arch::asm!("xsave64 [{}]", in(reg) from.0.as_mut_ptr(), in("eax") u32::MAX, in("edx") u32::MAX, options(nostack));
            }
            core::arch::asm!("xrstor64 [{}]", in(reg) to.0.as_ptr(), in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, readonly));
        } else {
            if let Some(from) = from {
                core::arch::asm!("fxsave64 [{}]", in(reg) from.0.as_mut_ptr(), options(nostack));
            }
            core::arch::asm!("fxrstor64 [{}]", in(reg) to.0.as_ptr(), options(nostack, readonly));
        }
    }
}

/// CR0.TS is set: the running thread's first FPU instruction traps. Never set when eager.
static TS_SET: AtomicBool = AtomicBool::new(false);
/// `ozone.fpu=eager`: FPU state is switched with the thread, never through #NM.
static EAGER: AtomicBool = AtomicBool::new(false);

/// How the FPU state follows the running thread (boot option `ozone.fpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switching {
    /// CR0.TS and #NM: the state moves when a thread first uses the FPU (the default).
    Lazy,
    /// Saved and restored on every switch to a thread that does not own it.
    Eager,
}

impl Switching {
    /// The value of `ozone.fpu` (`lazy` or `eager`).
    pub fn parse(value: &str) -> Option<Switching> {
        match value {
            "lazy" => Some(Switching::Lazy),
            "eager" => Some(Switching::Eager),
            _ => None,
        }
    }

    /// The option's value for this mode.
    pub fn name(self) -> &'static str {
        match self {
            Switching::Lazy => "lazy",
            Switching::Eager => "eager",
        }
    }
}

/// Choose lazy or eager switching; at boot, before the first thread runs (CR0.TS is clear).
pub fn set_switching(mode: Switching) {
    EAGER.store(mode == Switching::Eager, Ordering::Relaxed);
}

/// A thread is about to run; `owned` says whether it owns the FPU registers. If it does, it uses
/// them as they are. If it does not: lazily, its first FPU instruction will trap; eagerly,
/// `take_over` runs now, and must save the owner's state, load the thread's and make it the
/// owner.
///
/// Lazy switching's fast case (CR0.TS already right) is one load and one comparison. Eager
/// switching leaves CR0.TS clear, so the same comparison sends exactly the switches to a thread
/// that is not the owner on to `take_over`: the default pays nothing for the option.
#[inline(always)]
pub fn switch(owned: bool, take_over: impl FnOnce()) {
    if TS_SET.load(Ordering::Relaxed) != owned {
        return;
    }
    // Here either CR0.TS must change (lazy), or CR0.TS is clear and the thread is not the owner.
    if EAGER.load(Ordering::Relaxed) {
        take_over();
    } else {
        set_trap(!owned);
    }
}

/// Let the running thread use the FPU registers as they are (it owns them) or make its first FPU
/// instruction trap (it does not).
#[inline(always)]
pub fn set_owned(owned: bool) {
    if TS_SET.load(Ordering::Relaxed) == owned {
        set_trap(!owned);
    }
}

/// Set or clear CR0.TS.
#[inline(always)]
fn set_trap(trap: bool) {
    TS_SET.store(trap, Ordering::Relaxed);
    // SAFETY: toggling CR0.TS only changes whether FPU instructions trap.
    unsafe {
        if trap {
            Cr0::update(|f| f.insert(Cr0Flags::TASK_SWITCHED));
        } else {
            x86_64::instructions::interrupts::without_interrupts(|| core::arch::asm!("clts", options(nomem, nostack)));
        }
    }
}
