//! Raw entropy for nonces and salts at start-up: RDRAND when the CPU has it, and the TSC. Not a
//! random number generator: callers mix these words with a secret of their own (an HMAC or a
//! KDF), so two instances never share the result even where RDRAND is missing.

/// The time-stamp counter (0 off x86_64).
#[cfg(target_arch = "x86_64")]
pub fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter (user mode may: CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The time-stamp counter (0 off x86_64).
#[cfg(not(target_arch = "x86_64"))]
pub fn tsc() -> u64 {
    0
}

/// A random word from RDRAND, if the CPU has it (up to ten tries, as Intel recommends).
#[cfg(target_arch = "x86_64")]
pub fn rdrand() -> Option<u64> {
    use core::arch::x86_64::{__cpuid, _rdrand64_step};
    // CPUID leaf 1, ECX bit 30: RDRAND.
    if __cpuid(1).ecx & (1 << 30) == 0 {
        return None;
    }
    #[target_feature(enable = "rdrand")]
    fn step() -> Option<u64> {
        let mut v = 0u64;
        (_rdrand64_step(&mut v) == 1).then_some(v)
    }
    // SAFETY: CPUID said the CPU has RDRAND.
    (0..10).find_map(|_| unsafe { step() })
}

/// A random word from RDRAND, if the CPU has it.
#[cfg(not(target_arch = "x86_64"))]
pub fn rdrand() -> Option<u64> {
    None
}

/// Forty bytes of this moment's entropy: the TSC, then four RDRAND words (the TSC again for
/// each one the CPU cannot give).
pub fn boot_bytes() -> [u8; 40] {
    let mut words = [0u64; 5];
    words[0] = tsc();
    for w in &mut words[1..] {
        *w = rdrand().unwrap_or_else(tsc);
    }
    let mut bytes = [0u8; 40];
    for (b, w) in bytes.chunks_exact_mut(8).zip(words) {
        b.copy_from_slice(&w.to_le_bytes());
    }
    bytes
}
