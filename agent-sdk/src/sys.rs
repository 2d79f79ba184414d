//! Raw syscalls, following the register convention in `ozone_abi`.

use ozone_abi::{Error, MessageInfo, Syscall};

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
    // SAFETY: no syscall writes memory its arguments name: DebugWrite only reads, after the
    // kernel has checked the range; the IPC syscalls write only this thread's IPC buffer, which
    // the SDK reads afresh after each syscall; an unknown number touches no memory.
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

/// A message as it travels in registers: message info and the first four message registers
/// (the rest are in the IPC buffer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Msg {
    pub info: MessageInfo,
    pub mrs: [u64; 4],
}

impl Msg {
    /// A message with `label` and up to four words (`words.len()` is the length).
    pub fn new(label: u64, words: &[u64]) -> Msg {
        let mut mrs = [0; 4];
        for (m, w) in mrs.iter_mut().zip(words) {
            *m = *w;
        }
        Msg { info: MessageInfo::new(label, 0, 0, words.len().min(4) as u64), mrs }
    }
}

/// A message received, with the badge of the capability it was sent through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub badge: u64,
    pub msg: Msg,
}

/// One IPC syscall: `rdi` = capability pointer, `rsi` = message info, `r10 r8 r9 r15` =
/// message registers; returns (error, badge, message).
#[cfg(target_os = "none")]
fn ipc(number: Syscall, cptr: u64, msg: Msg) -> (u64, Received) {
    let (rax, rdi, rsi, r10, r8, r9, r15): (u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: the syscall reads and writes only the registers named here (rcx and r11 are
    // clobbered by `syscall`); the kernel validates every argument.
    unsafe {
        core::arch::asm!(
            "syscall",
            in("rdx") number as i64,
            inout("rdi") cptr => rdi,
            inout("rsi") msg.info.0 => rsi,
            inout("r10") msg.mrs[0] => r10,
            inout("r8") msg.mrs[1] => r8,
            inout("r9") msg.mrs[2] => r9,
            inout("r15") msg.mrs[3] => r15,
            lateout("rax") rax,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    (rax, Received { badge: rdi, msg: Msg { info: MessageInfo(rsi), mrs: [r10, r8, r9, r15] } })
}

#[cfg(not(target_os = "none"))]
fn ipc(_number: Syscall, _cptr: u64, _msg: Msg) -> (u64, Received) {
    (Error::UnknownSyscall as u64, Received::default())
}

fn ipc_result(number: Syscall, cptr: u64, msg: Msg) -> Result<Received, Error> {
    let (rax, r) = ipc(number, cptr, msg);
    result(rax).map(|()| r)
}

/// Send `msg` on the endpoint `ep` and wait for the reply. Fails with [`Error::ReplyLost`] if
/// the thread that received it is stopped or deleted before replying (a server that receives
/// again without replying leaves the caller waiting).
pub fn call(ep: u64, msg: Msg) -> Result<Received, Error> {
    ipc_result(Syscall::Call, ep, msg)
}

/// How a [`call_interruptible`] ended without a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysError {
    /// The kernel refused the Call or ended it with this error (never
    /// [`Error::Interrupted`]): e.g. [`Error::ReplyLost`] when the server that received it was
    /// stopped or deleted before replying, [`Error::IllegalOperation`] when this thread has no
    /// bound notification.
    Kernel(Error),
    /// A signal on this thread's bound notification ended the Call, before the server received
    /// it or while waiting for its reply (which then goes nowhere): `bits` is the
    /// notification's word, taken (so cleared). Bits already pending when the Call started end
    /// it at once the same way.
    Interrupted { bits: u64 },
}

impl From<SysError> for crate::AgentError {
    /// [`SysError::Interrupted`] becomes `Kernel(Error::Interrupted)` (its bits are dropped).
    fn from(e: SysError) -> Self {
        match e {
            SysError::Kernel(e) => crate::AgentError::Kernel(e),
            SysError::Interrupted { .. } => crate::AgentError::Kernel(Error::Interrupted),
        }
    }
}

/// Decode the outcome of a CallInterruptible: `rax`, and `rdi` (the bits, when interrupted).
fn interruptible_result(rax: u64, r: Received) -> Result<Received, SysError> {
    match result(rax) {
        Ok(()) => Ok(r),
        Err(Error::Interrupted) => Err(SysError::Interrupted { bits: r.badge }),
        Err(e) => Err(SysError::Kernel(e)),
    }
}

/// Send `msg` on the endpoint `ep` and wait for the reply, unless a signal on this thread's
/// bound notification comes first (a timer's, for a call timeout): then the Call is cancelled
/// and [`SysError::Interrupted`] carries the notification's bits. The thread must have a bound
/// notification. A Call whose server is stopped or deleted before replying fails with
/// `SysError::Kernel(Error::ReplyLost)`, as [`call`] does.
pub fn call_interruptible(ep: u64, msg: Msg) -> Result<Received, SysError> {
    let (rax, r) = ipc(Syscall::CallInterruptible, ep, msg);
    interruptible_result(rax, r)
}

/// Send `msg` on `ep`, waiting for a receiver.
pub fn send(ep: u64, msg: Msg) -> Result<(), Error> {
    ipc_result(Syscall::Send, ep, msg).map(|_| ())
}

/// Send `msg` on `ep` if a receiver is waiting; otherwise drop it.
pub fn nb_send(ep: u64, msg: Msg) -> Result<(), Error> {
    ipc_result(Syscall::NbSend, ep, msg).map(|_| ())
}

/// Wait for a message on `ep` (or a signal on a notification).
pub fn recv(ep: u64) -> Result<Received, Error> {
    ipc_result(Syscall::Recv, ep, Msg::default())
}

/// Take a message from `ep` if one is waiting (badge 0 and an empty message if not).
pub fn nb_recv(ep: u64) -> Result<Received, Error> {
    ipc_result(Syscall::NbRecv, ep, Msg::default())
}

/// Reply to the thread whose Call this thread received last.
pub fn reply(msg: Msg) -> Result<(), Error> {
    ipc_result(Syscall::Reply, 0, msg).map(|_| ())
}

/// Reply with `msg`, then wait for the next message on `ep` (a server's loop).
pub fn reply_recv(ep: u64, msg: Msg) -> Result<Received, Error> {
    ipc_result(Syscall::ReplyRecv, ep, msg)
}

/// Give the rest of this timeslice to other threads of the same priority.
pub fn yield_now() {
    let _ = ipc(Syscall::Yield, 0, Msg::default());
}

/// Invoke the kernel object `cap` with method `label` and argument words; returns the reply.
pub fn invoke(cap: u64, label: u64, args: &[u64]) -> Result<Received, Error> {
    call(cap, Msg::new(label, args))
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
    fn interruptible_results_decode() {
        let r = Received { badge: 0x30, msg: Msg::default() };
        assert_eq!(interruptible_result(0, r), Ok(r));
        assert_eq!(interruptible_result(Error::Interrupted as u64, r), Err(SysError::Interrupted { bits: 0x30 }));
        assert_eq!(interruptible_result(Error::ReplyLost as u64, r), Err(SysError::Kernel(Error::ReplyLost)));
        assert_eq!(
            crate::AgentError::from(SysError::Interrupted { bits: 1 }),
            crate::AgentError::Kernel(Error::Interrupted)
        );
        assert_eq!(call_interruptible(1, Msg::default()), Err(SysError::Kernel(Error::UnknownSyscall)));
    }

    #[test]
    fn host_build_has_no_kernel() {
        assert_eq!(debug_write(b"x"), Err(Error::UnknownSyscall));
    }
}
