//! CPU features and control-register hardening.
//!
//! What the kernel needs to know about the processor it runs on (CPUID), and turning on the
//! protections it has: NX (EFER.NXE), write protection in ring 0 (CR0.WP), SMEP, SMAP and UMIP;
//! machine-check exceptions (CR4.MCE). Also what the processor says about the speculation
//! hazards the boot options of `spectre.rs` and `fpu.rs` address (IBPB, RDCL_NO).

use core::arch::x86_64::{__cpuid, __cpuid_count};
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// The processor features the kernel cares about.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    pub nx: bool,
    pub page_1g: bool,
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
    pub pcid: bool,
    pub xsave: bool,
    /// The machine-check exception and architecture (MCE and MCA): #MC can be enabled and
    /// IA32_MCG_STATUS read.
    pub mca: bool,
    /// The indirect branch prediction barrier: a write of 1 to IA32_PRED_CMD (MSR 0x49) makes
    /// predictions trained before it unable to steer indirect branches after it. Intel
    /// advertises it with IBRS in `CPUID.(EAX=7,ECX=0):EDX[26]`, AMD in `CPUID.0x80000008:EBX[12]`.
    pub ibpb: bool,
    /// IA32_ARCH_CAPABILITIES.RDCL_NO: the processor is not subject to rogue data cache load
    /// (Meltdown), so mapping the kernel in user page tables exposes nothing through it.
    pub rdcl_no: bool,
    /// `CPUID.1:ECX[31]`: the kernel runs under a hypervisor (reported; a guest is as subject to
    /// Meltdown as bare metal on the same processor).
    pub hypervisor: bool,
    /// The vendor (CPUID leaf 0) is AMD or Hygon, whose processors are not subject to rogue data
    /// cache load (Meltdown) whether or not they report `RDCL_NO`.
    pub meltdown_immune_vendor: bool,
    /// The physical address width in bits (`CPUID.0x80000008:EAX[7:0]`; 36, the architectural
    /// minimum with PAE, where the leaf is missing).
    pub phys_bits: u8,
}

impl Features {
    pub fn detect() -> Features {
        // Leaves beyond the maximum are checked before they are read.
        let (max_basic, max_ext) = (__cpuid(0).eax, __cpuid(0x8000_0000).eax);
        let mut f = Features::default();
        let l0 = __cpuid(0);
        let vendor = [l0.ebx.to_le_bytes(), l0.edx.to_le_bytes(), l0.ecx.to_le_bytes()];
        f.meltdown_immune_vendor = matches!(vendor.as_flattened(), b"AuthenticAMD" | b"HygonGenuine");
        if max_basic >= 1 {
            let l1 = __cpuid(1);
            f.pcid = l1.ecx & (1 << 17) != 0;
            f.xsave = l1.ecx & (1 << 26) != 0;
            f.hypervisor = l1.ecx & (1 << 31) != 0;
            f.mca = l1.edx & (1 << 7) != 0 && l1.edx & (1 << 14) != 0;
        }
        if max_basic >= 7 {
            let l7 = __cpuid_count(7, 0);
            f.smep = l7.ebx & (1 << 7) != 0;
            f.smap = l7.ebx & (1 << 20) != 0;
            f.umip = l7.ecx & (1 << 2) != 0;
            f.ibpb = l7.edx & (1 << 26) != 0;
            if l7.edx & (1 << 29) != 0 {
                // SAFETY: IA32_ARCH_CAPABILITIES (0x10a) exists when CPUID.7:EDX[29] says so;
                // reading it has no side effects.
                let caps = unsafe { x86_64::registers::model_specific::Msr::new(0x10a).read() };
                f.rdcl_no = caps & 1 != 0;
            }
        }
        if max_ext >= 0x8000_0001 {
            let e1 = __cpuid(0x8000_0001);
            f.nx = e1.edx & (1 << 20) != 0;
            f.page_1g = e1.edx & (1 << 26) != 0;
        }
        f.phys_bits = 36;
        if max_ext >= 0x8000_0008 {
            let e8 = __cpuid(0x8000_0008);
            f.ibpb |= e8.ebx & (1 << 12) != 0;
            let bits = (e8.eax & 0xff) as u8;
            if bits >= 32 {
                f.phys_bits = bits;
            }
        }
        f
    }
}

/// Turn on NX and CR0.WP. Must run before the kernel's own page tables (which use NX) are loaded.
pub fn enable_nx_and_wp(features: &Features) {
    if features.nx {
        // SAFETY: setting NXE only makes the NX bit in page tables meaningful; no mapping the
        // kernel relies on has NX set before this.
        unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    // SAFETY: WP makes ring 0 honour read-only mappings; the kernel never writes through one.
    unsafe { Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT)) };
}

/// Turn on SMEP, SMAP and UMIP where present. After this the kernel cannot execute user pages,
/// nor touch user memory (it reads user buffers through the direct map of their frames), and
/// ring 3 cannot use SGDT/SIDT/SLDT/SMSW/STR.
pub fn enable_user_protections(features: &Features) {
    let mut set = Cr4Flags::empty();
    if features.smep {
        set |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
    }
    if features.smap {
        set |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION;
    }
    if features.umip {
        set |= Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION;
    }
    // Machine checks become #MC (reported, see `fault::machine_check`) instead of shutting the
    // processor down.
    if features.mca {
        set |= Cr4Flags::MACHINE_CHECK_EXCEPTION;
    }
    // SAFETY: the kernel never executes user pages and never dereferences user addresses.
    unsafe { Cr4::update(|f| f.insert(set)) };
}

/// Load the address space whose PML4 is at physical address `pml4` (CR3 with PCID 0, no cache
/// flags), flushing the TLB's non-global entries. A plain `mov` to CR3: on the thread-switch path
/// the checks of `PhysAddr::new` and `PhysFrame::containing_address` cost five instructions, more
/// than the boot options' test that comes with the write (`spectre::switch_is_plain`).
///
/// # Safety
/// `pml4` must be the 4 KiB-aligned physical address of a PML4 that maps the kernel as the
/// kernel's own tables do, and that stays alive while it is loaded.
#[inline(always)]
pub unsafe fn write_cr3(pml4: u64) {
    // SAFETY: per the caller's guarantee the new tables map the running kernel (its code, stack
    // and data) at the same addresses, so execution continues unchanged.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags)) };
}

/// The CR3 register as it is (the loaded PML4's physical address; no PCID or cache flags are
/// ever set in it).
#[inline(always)]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: reading CR3 has no side effects and is allowed in ring 0.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// The time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is allowed in ring 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Stop this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
