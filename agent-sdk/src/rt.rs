//! The program runtime: `_start` and the panic handler.
//!
//! The kernel enters a program at `_start` with the stack pointer 16-byte aligned at the top of
//! its stack. `_start` records the start information whose address arrives in `rdi`
//! ([`crate::start`]), gives the heap it describes to the allocator ([`crate::heap`]), calls the
//! program's `ozone_main` (made by [`crate::entry!`]) and ends the thread with its return value
//! as exit status. A panic prints its message and exits with
//! status [`PANIC_STATUS`].

use core::arch::global_asm;

/// Exit status of a thread that panicked.
pub const PANIC_STATUS: u64 = 101;

global_asm!(
    r#"
    .section .text._start, "ax"
    .global _start
_start:
    xor %ebp, %ebp
    # rdi: the start-information page (or the root task's boot information), passed on.
    and $-16, %rsp
    call {start}
    ud2
    "#,
    start = sym start_rust,
    options(att_syntax)
);

unsafe extern "C" {
    fn ozone_main() -> u64;
}

extern "C" fn start_rust(start_info: u64) -> ! {
    // SAFETY: whoever starts a program passes 0 or a mapped page in rdi (Studio: the start
    // information; the kernel: the root task's boot information, which `record` rejects).
    let info = unsafe { crate::start::record(start_info) };
    if let Some(info) = info.filter(|i| i.heap_size > 0) {
        // SAFETY: Studio maps the heap it describes writable, for this program alone.
        unsafe { crate::heap::init(info.heap_base, info.heap_size) };
    }
    // SAFETY: `ozone_main` is defined by the program through `entry!`, with this signature.
    let status = unsafe { ozone_main() };
    // A program Studio started tells Studio it ended (Studio reclaims it and does not answer).
    if crate::start::info().is_some() {
        let _ = crate::rpc::Client::studio().call(crate::protocol::studio::method::EXIT, &status);
    }
    crate::sys::thread_exit(status)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::println!("panic: {info}");
    crate::sys::thread_exit(PANIC_STATUS)
}
