//! Faults taken on purpose: what `sc-faultstorm` and `sc-memscan` end with. Each function here
//! makes the calling thread fault; Studio, its fault handler, then stops the program (and starts
//! it again when its `restart` policy says so: that is how the storm and the scan get their
//! next fault). The only unsafe code of the scenarios is here.
#![allow(unsafe_code)]

/// The kinds of fault a storm draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A read of an address nothing is mapped at.
    ReadUnmapped(u64),
    /// A write to an address nothing is mapped at.
    WriteUnmapped(u64),
    /// A write to the program's own code (mapped read-only and executable).
    WriteCode,
    /// A read of kernel memory (the upper half), which user mode may not touch.
    ReadKernel,
    /// An undefined instruction (`ud2`).
    InvalidOpcode,
    /// A breakpoint (`int3`).
    Breakpoint,
    /// A privileged instruction (`hlt`) in user mode: a general-protection fault.
    Privileged,
    /// A system call number the kernel does not know.
    UnknownSyscall,
}

impl Fault {
    /// The number of kinds [`Fault::from_index`] knows.
    pub const KINDS: u64 = 8;

    /// Kind `i % KINDS`, with `addr` for the kinds that take an address.
    pub fn from_index(i: u64, addr: u64) -> Fault {
        match i % Self::KINDS {
            0 => Fault::ReadUnmapped(addr),
            1 => Fault::WriteUnmapped(addr),
            2 => Fault::WriteCode,
            3 => Fault::ReadKernel,
            4 => Fault::InvalidOpcode,
            5 => Fault::Breakpoint,
            6 => Fault::Privileged,
            _ => Fault::UnknownSyscall,
        }
    }
}

/// An address nothing is mapped at, drawn from `r`: in `0x7f00_0000_0000..0x7fff_0000_0000`
/// (Studio's layouts put everything below 2 TiB and the share window at 3 TiB: `layout.rs`),
/// or in the first page (never mapped).
pub fn unmapped_address(r: u64) -> u64 {
    if r.is_multiple_of(8) { r % 4096 } else { 0x7f00_0000_0000 + (r % 0xff_0000_0000) }
}

/// Read the byte at `addr`: the value if it is mapped; a fault (the program's end) if not.
#[inline(never)]
pub fn read(addr: u64) -> u8 {
    // SAFETY: not safe for an unmapped address, on purpose: the read faults and Studio stops
    // the program. For a mapped address it is a plain read of a byte the program may read
    // (callers read their own stack, heap and image); a volatile read creates no reference.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Take the fault `f`. Returns only if the fault did not happen (which is a finding).
pub fn take(f: Fault) {
    match f {
        Fault::ReadUnmapped(a) => {
            let _ = read(a);
        }
        Fault::WriteUnmapped(a) => {
            // SAFETY: not safe, on purpose: nothing is mapped at `a`, so the write faults.
            unsafe { core::ptr::write_volatile(a as *mut u8, 0xbd) };
        }
        Fault::WriteCode => {
            let code = take as *const () as u64;
            // SAFETY: not safe, on purpose: code pages are mapped read-only (W^X), so the write
            // faults before it changes anything.
            unsafe { core::ptr::write_volatile(code as *mut u8, 0xcc) };
        }
        Fault::ReadKernel => {
            let _ = read(0xffff_8000_0000_0000);
        }
        #[cfg(target_arch = "x86_64")]
        Fault::InvalidOpcode => {
            // SAFETY: `ud2` raises #UD and touches no memory; the kernel turns it into a fault
            // message to Studio.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        #[cfg(target_arch = "x86_64")]
        Fault::Breakpoint => {
            // SAFETY: `int3` raises #BP and touches no memory.
            unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
        }
        #[cfg(target_arch = "x86_64")]
        Fault::Privileged => {
            // SAFETY: `hlt` in ring 3 raises #GP and does nothing else.
            unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        }
        Fault::UnknownSyscall => {
            let _ = ozone_agent_sdk::sys::raw(0x5ce5, 0, 0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmapped_addresses_stay_in_their_windows() {
        for r in 0..10_000u64 {
            let a = unmapped_address(r.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(a < 4096 || (0x7f00_0000_0000..0x7fff_0000_0000).contains(&a), "{a:#x}");
        }
        for i in 0..Fault::KINDS {
            assert_eq!(Fault::from_index(i, 0), Fault::from_index(i + Fault::KINDS, 0));
        }
    }
}
