//! Raw syscalls, following the register convention in `ozone_abi`.

use ozone_abi::{Error, Syscall};

/// Decode `rax` after a syscall.
fn result(rax: u64) -> Result<(), Error> {
    match Error::from_raw(rax) {
        Ok(()) => Ok(()),
        Err(Some(e)) => Err(e),
        Err(None) => Err(Error::InvalidArgument),
    }
}

/// A syscall with two arguments; returns `rax`.
///
/// # Safety
/// The kernel validates every argument, so no syscall can break memory safety of the caller by
/// itself; the function is unsafe because a future syscall number may write to user memory the
/// arguments name.
#[cfg(target_os = "none")]
pub unsafe fn syscall2(number: i64, a0: u64, a1: u64) -> u64 {
    let rax: u64;
    // SAFETY: `syscall` clobbers rcx and r11 (declared); the kernel preserves every other
    // register except rax (the result) and the argument registers it is told it may change.
    unsafe {
        core::arch::asm!(
            "syscall",
            in("rdx") number,
            inout("rdi") a0 => _,
            inout("rsi") a1 => _,
            lateout("rax") rax,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    rax
}

/// Host builds (unit tests, `cargo check`) have no kernel: every syscall is unknown.
///
/// # Safety
/// Always safe; `unsafe` only to match the bare-metal signature.
#[cfg(not(target_os = "none"))]
pub unsafe fn syscall2(_number: i64, _a0: u64, _a1: u64) -> u64 {
    Error::UnknownSyscall as u64
}

/// Write `bytes` (UTF-8, at most 4096) to the kernel console.
pub fn debug_write(bytes: &[u8]) -> Result<(), Error> {
    // SAFETY: the kernel only reads `bytes`, which is valid for its length.
    result(unsafe { syscall2(Syscall::DebugWrite as i64, bytes.as_ptr() as u64, bytes.len() as u64) })
}

/// `DebugWrite` with an arbitrary pointer and length (for tests of the kernel's checks).
pub fn debug_write_raw(ptr: u64, len: u64) -> Result<(), Error> {
    // SAFETY: the kernel only reads through the pointer, after validating it.
    result(unsafe { syscall2(Syscall::DebugWrite as i64, ptr, len) })
}

/// A raw syscall number with two arguments (for tests of unknown or unserved numbers).
pub fn raw(number: i64, a0: u64, a1: u64) -> Result<(), Error> {
    // SAFETY: see `syscall2`.
    result(unsafe { syscall2(number, a0, a1) })
}

/// End the calling thread with `status`.
pub fn thread_exit(status: u64) -> ! {
    // SAFETY: ThreadExit reads no memory.
    unsafe { syscall2(Syscall::ThreadExit as i64, status, 0) };
    // The kernel never returns from ThreadExit; if it did, stop here.
    #[allow(clippy::empty_loop)]
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_decode() {
        assert_eq!(result(0), Ok(()));
        assert_eq!(result(Error::InvalidUserBuffer as u64), Err(Error::InvalidUserBuffer));
        assert_eq!(result(9999), Err(Error::InvalidArgument));
    }

    #[test]
    fn host_build_has_no_kernel() {
        assert_eq!(debug_write(b"x"), Err(Error::UnknownSyscall));
    }
}
