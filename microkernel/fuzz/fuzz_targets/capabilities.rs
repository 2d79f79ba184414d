//! Capability operations decoded from fuzzer bytes, run on the capability core and on its
//! reference model (`ozone_kernel::object::harness::run_bytes`): the first byte picks the mode
//! (compare with the model, or abandon preempted operations half-way and check invariants), every
//! following 25 bytes are one operation. Any difference or broken invariant panics, which
//! libFuzzer reports with the input that caused it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    ozone_kernel::object::harness::run_bytes(data);
});
