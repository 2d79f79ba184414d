//! Reading the boot archive ([`initrd`], ustar) and loading ELF programs ([`elf`]), with every
//! check on untrusted input. The kernel uses it for the root task; the root task and Studio use it
//! for every other program. Portable and heap-free; unit-tested on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

pub mod elf;
pub mod initrd;

/// For the tests' random mutations: xorshift64, seeded, reproducible.
#[cfg(test)]
mod test_rng {
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }
}
