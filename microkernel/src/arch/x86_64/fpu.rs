//! User FPU/SSE/AVX state, switched lazily. The kernel itself never uses these registers (it
//! is built soft-float), so the CPU's FPU registers belong to one thread, the *owner*, until
//! another thread touches them: the kernel sets CR0.TS whenever a thread other than the owner
//! runs, and that thread's first FPU instruction traps (#NM); the kernel then saves the owner's
//! state to its TCB, loads the new thread's, and lets the instruction run again. Threads that
//! never use the FPU never pay for it. XSAVE/XRSTOR (x87, SSE and, where present, AVX state) when
//! the CPU has XSAVE, FXSAVE/FXRSTOR otherwise.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};

use super::cpu::Features;
use crate::object::tcb::FpuArea;

static USE_XSAVE: AtomicBool = AtomicBool::new(false);
/// The state components saved (XCR0).
static MASK: AtomicU64 = AtomicU64::new(0);

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
        MASK.store(mask.bits(), Ordering::Relaxed);
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

/// Save the CPU's user FPU state into `area`.
pub fn save(area: &mut FpuArea) {
    let mask = MASK.load(Ordering::Relaxed);
    // SAFETY: `area` is 64-byte aligned and large enough (checked at boot against
    // `save_area_size`); FPU/SSE were enabled by `init`.
    unsafe {
        if USE_XSAVE.load(Ordering::Relaxed) {
            core::arch::asm!("xsave64 [{}]", in(reg) area.0.as_mut_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack));
        } else {
            core::arch::asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack));
        }
    }
}

/// Load the user FPU state from `area` into the CPU.
pub fn restore(area: &FpuArea) {
    let mask = MASK.load(Ordering::Relaxed);
    // SAFETY: as for `save`; the area holds a state written by `save` or `initial_state`.
    unsafe {
        if USE_XSAVE.load(Ordering::Relaxed) {
            core::arch::asm!("xrstor64 [{}]", in(reg) area.0.as_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack, readonly));
        } else {
            core::arch::asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, readonly));
        }
    }
}

static TS_SET: AtomicBool = AtomicBool::new(false);

/// Let the running thread use the FPU registers as they are (it owns them) or make its first FPU
/// instruction trap (it does not).
#[inline(always)]
pub fn set_owned(owned: bool) {
    if TS_SET.load(Ordering::Relaxed) != owned {
        return;
    }
    TS_SET.store(!owned, Ordering::Relaxed);
    // SAFETY: toggling CR0.TS only changes whether FPU instructions trap.
    unsafe {
        if owned {
            x86_64::instructions::interrupts::without_interrupts(|| core::arch::asm!("clts", options(nomem, nostack)));
        } else {
            Cr0::update(|f| f.insert(Cr0Flags::TASK_SWITCHED));
        }
    }
}
