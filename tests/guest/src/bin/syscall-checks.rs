//! Guest test: the kernel's syscall argument checks, seen from ring 3. Every bad pointer, length
//! or number must come back as the right error code, never as a fault or a kernel panic.
//!
//! **Raw on purpose.** It tests the raw syscall ABI (pointers, lengths, numbers), so it calls `sys`
//! directly; it names no capability.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_abi::{Error, ROOT_STACK_TOP, Syscall};
use ozone_agent_sdk::sys::{debug_write, debug_write_raw, raw};
use ozone_agent_sdk::{entry, println};

entry!(run);

fn check(name: &str, got: Result<(), Error>, want: Result<(), Error>, failures: &mut u32) {
    if got == want {
        println!("[syscall-checks] ok   {name}");
    } else {
        println!("[syscall-checks] FAIL {name}: got {got:?}, want {want:?}");
        *failures += 1;
    }
}

fn run() -> u64 {
    let mut f = 0;
    let bad = Err(Error::InvalidUserBuffer);
    check("valid buffer", debug_write(b"[syscall-checks] hello\n"), Ok(()), &mut f);
    check("empty buffer", debug_write_raw(0, 0), Ok(()), &mut f);
    check("kernel image pointer", debug_write_raw(0xffff_ffff_8020_0000, 16), bad, &mut f);
    check("direct-map pointer", debug_write_raw(0xffff_8000_0010_0000, 16), bad, &mut f);
    check("non-canonical pointer", debug_write_raw(0x0000_8000_0000_0000, 8), bad, &mut f);
    check("unmapped user page", debug_write_raw(0x1000, 8), bad, &mut f);
    check("address overflow", debug_write_raw(u64::MAX - 3, 8), bad, &mut f);
    check("runs off the end of the stack", debug_write_raw(ROOT_STACK_TOP - 4, 8), bad, &mut f);
    check("too long", debug_write_raw(0x40_0000, 4097), Err(Error::InvalidArgument), &mut f);
    check("invalid UTF-8", debug_write(&[0xff, 0xfe, b'\n']), Err(Error::InvalidArgument), &mut f);
    check("unknown syscall number", raw(12345, 0, 0), Err(Error::UnknownSyscall), &mut f);
    check("unknown negative number", raw(-1000, 0, 0), Err(Error::UnknownSyscall), &mut f);
    check("call on an empty slot", raw(Syscall::Call as i64, 0, 0), Err(Error::InvalidCapability), &mut f);
    check(
        "call on a slot past the CNode",
        raw(Syscall::Call as i64, 1 << 20, 0),
        Err(Error::InvalidCapability),
        &mut f,
    );
    check("yield", raw(Syscall::Yield as i64, 0, 0), Ok(()), &mut f);
    if f == 0 {
        println!("[syscall-checks] PASS");
        0
    } else {
        println!("[syscall-checks] {f} checks failed");
        1
    }
}
