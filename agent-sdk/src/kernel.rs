//! Typed wrappers for the kernel's object invocations (see `ozone_abi::invocation` and
//! docs/abi.md). Capability arguments travel in the calling thread's IPC buffer, which this
//! module finds through the FS segment: a thread's TLS base points at its IPC buffer, whose
//! `user_data` word holds the buffer's own address ([`set_own_ipc_buffer`] sets that up).

use ozone_abi::invocation as inv;
use ozone_abi::telemetry::ThreadCounters;
use ozone_abi::{Error, IpcBuffer, MessageInfo};

use crate::sys::{Msg, Received, call};

/// The calling thread's IPC buffer.
#[cfg(target_os = "none")]
pub fn ipc_buffer() -> &'static mut IpcBuffer {
    let p: u64;
    // SAFETY: reads the `user_data` word of the IPC buffer FS points at (set up by
    // `set_own_ipc_buffer` or by whoever started the thread).
    unsafe {
        core::arch::asm!(
            "mov {}, fs:[{off}]",
            out(reg) p,
            off = const core::mem::offset_of!(IpcBuffer, user_data),
            options(nostack, readonly, preserves_flags)
        )
    };
    // SAFETY: the IPC buffer is a mapped, writable page owned by this thread.
    unsafe { &mut *(p as *mut IpcBuffer) }
}

/// The calling thread's IPC buffer: on the host (tests of servers and clients), a buffer of the
/// thread's own, made on first use, so messages longer than the registers encode as on the target.
#[cfg(not(target_os = "none"))]
pub fn ipc_buffer() -> &'static mut IpcBuffer {
    extern crate std;
    use alloc::boxed::Box;
    std::thread_local! {
        static BUFFER: *mut IpcBuffer = Box::into_raw(Box::new(IpcBuffer {
            tag: 0,
            msg: [0; ozone_abi::MSG_MAX_LENGTH as usize],
            user_data: 0,
            caps_or_badges: [0; ozone_abi::MSG_MAX_EXTRA_CAPS as usize],
            receive_cnode: 0,
            receive_index: 0,
            receive_depth: 0,
        }));
    }
    // SAFETY: the buffer was leaked for this thread alone and is never freed; as on the target,
    // the thread's code uses it one message at a time.
    BUFFER.with(|b| unsafe { &mut **b })
}

/// Make `buffer` (the thread's IPC buffer at that address) findable by [`ipc_buffer`]: record its
/// address in it and set the thread's TLS base (`tcb`: a capability to the thread itself).
pub fn set_own_ipc_buffer(tcb: u64, buffer: u64) -> Result<(), Error> {
    // SAFETY: `buffer` is the caller's mapped IPC buffer.
    unsafe { (*(buffer as *mut IpcBuffer)).user_data = buffer };
    tcb_set_tls_base(tcb, buffer)
}

/// Call `cap` with `label`, message words `args` (any number up to 120) and capability
/// arguments `caps`.
pub fn invoke(cap: u64, label: u64, args: &[u64], caps: &[u64]) -> Result<Received, Error> {
    // The IPC buffer is only needed for capability arguments and words beyond the fourth.
    if !caps.is_empty() || args.len() > 4 {
        let buf = ipc_buffer();
        for (i, c) in caps.iter().enumerate() {
            buf.caps_or_badges[i] = *c;
        }
        for (i, a) in args.iter().enumerate().skip(4) {
            buf.msg[i] = *a;
        }
    }
    let mut mrs = [0u64; 4];
    for (m, a) in mrs.iter_mut().zip(args) {
        *m = *a;
    }
    let info = MessageInfo::new(label, 0, caps.len() as u64, args.len() as u64);
    call(cap, Msg { info, mrs })
}

/// Message register `i` of a reply (registers first, then the IPC buffer).
pub fn reply_word(r: &Received, i: usize) -> u64 {
    if i < 4 { r.msg.mrs[i] } else { ipc_buffer().msg[i] }
}

/// Telemetry Read through the telemetry capability in slot `telemetry`: the counters of the
/// thread `tcb` and its syscall profile's `used` mask.
pub fn telemetry_read(telemetry: u64, tcb: u64) -> Result<(ThreadCounters, u64), Error> {
    let r = invoke(telemetry, inv::TELEMETRY_READ, &[], &[tcb])?;
    let mut words = [0u64; ozone_abi::telemetry::WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = reply_word(&r, i);
    }
    Ok((ThreadCounters::from_words(words), reply_word(&r, ozone_abi::telemetry::PROFILE_USED)))
}

/// Start the event trace of the thread `tcb` into the 4 KiB frame `frame` (the kernel keeps a
/// copy of the frame capability; see `ozone_abi::trace`).
pub fn telemetry_trace(telemetry: u64, tcb: u64, frame: u64) -> Result<(), Error> {
    invoke(telemetry, inv::TELEMETRY_TRACE, &[], &[tcb, frame]).map(|_| ())
}

/// Stop the event trace of the thread `tcb`: (records written, records dropped).
pub fn telemetry_trace_off(telemetry: u64, tcb: u64) -> Result<(u64, u64), Error> {
    let r = invoke(telemetry, inv::TELEMETRY_TRACE_OFF, &[], &[tcb])?;
    Ok((reply_word(&r, 0), reply_word(&r, 1)))
}

/// The reader of `tcb`'s trace has consumed the records before sequence number `upto`:
/// (records written, records dropped) so far.
pub fn telemetry_trace_ack(telemetry: u64, tcb: u64, upto: u64) -> Result<(u64, u64), Error> {
    let r = invoke(telemetry, inv::TELEMETRY_TRACE_ACK, &[upto], &[tcb])?;
    Ok((reply_word(&r, 0), reply_word(&r, 1)))
}

#[allow(clippy::too_many_arguments)]
pub fn untyped_retype(
    untyped: u64,
    ty: ozone_abi::object::ObjectType,
    size_bits: u64,
    root: u64,
    node_index: u64,
    node_depth: u64,
    offset: u64,
    count: u64,
) -> Result<(), Error> {
    invoke(untyped, inv::UNTYPED_RETYPE, &[ty as u64, size_bits, node_index, node_depth, offset, count], &[root])
        .map(|_| ())
}

/// What Untyped GetInfo reports (see docs/abi.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UntypedInfo {
    /// The untyped is `2^size_bits` bytes.
    pub size_bits: u64,
    /// Bytes a Retype through this capability can still use without a reset: all of it when it
    /// has no children (the next Retype resets it), else from the watermark to the end. Exactly
    /// `free >> b` objects of `2^b` bytes fit.
    pub free: u64,
    /// It has derivation children (objects made from it, or a copy of it).
    pub has_children: bool,
    /// Physical address of the memory.
    pub paddr: u64,
    /// Device memory (frames and untyped only).
    pub device: bool,
}

impl UntypedInfo {
    /// Bytes in use: the size less what is free.
    pub fn used(&self) -> u64 {
        (1u64 << self.size_bits.min(63)).saturating_sub(self.free)
    }
}

pub fn untyped_get_info(untyped: u64) -> Result<UntypedInfo, Error> {
    let r = invoke(untyped, inv::UNTYPED_GET_INFO, &[], &[])?;
    let [size_bits, free, flags, paddr] = r.msg.mrs;
    Ok(UntypedInfo {
        size_bits,
        free,
        has_children: flags & inv::UNTYPED_INFO_HAS_CHILDREN != 0,
        paddr,
        device: flags & inv::UNTYPED_INFO_DEVICE != 0,
    })
}

/// Slots are addressed within `root` by index at full depth (64).
pub fn cnode_copy(root: u64, dest: u64, src: u64, rights: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_COPY, &[dest, 64, src, 64, rights], &[root]).map(|_| ())
}
pub fn cnode_mint(root: u64, dest: u64, src: u64, rights: u64, badge: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_MINT, &[dest, 64, src, 64, rights, badge], &[root]).map(|_| ())
}
pub fn cnode_move(root: u64, dest: u64, src: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_MOVE, &[dest, 64, src, 64], &[root]).map(|_| ())
}
pub fn cnode_mutate(root: u64, dest: u64, src: u64, data: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_MUTATE, &[dest, 64, src, 64, data], &[root]).map(|_| ())
}
pub fn cnode_delete(root: u64, slot: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_DELETE, &[slot, 64], &[]).map(|_| ())
}
pub fn cnode_revoke(root: u64, slot: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_REVOKE, &[slot, 64], &[]).map(|_| ())
}
pub fn cnode_cancel_badged_sends(root: u64, slot: u64) -> Result<(), Error> {
    invoke(root, inv::CNODE_CANCEL_BADGED_SENDS, &[slot, 64], &[]).map(|_| ())
}

/// Give a thread its CSpace, VSpace and IPC buffer (`buffer_frame` mapped at `buffer_vaddr`),
/// and its fault handler: a copy of the endpoint capability in slot `fault_ep` of the *caller's*
/// CSpace (0: none), kept in the thread's TCB (see [`tcb_set_fault_handler`]). The thread's own
/// CSpace need not hold it.
pub fn tcb_configure(
    tcb: u64,
    fault_ep: u64,
    cspace: u64,
    vspace: u64,
    buffer_vaddr: u64,
    buffer_frame: u64,
) -> Result<(), Error> {
    invoke(tcb, inv::TCB_CONFIGURE, &[0, 0, buffer_vaddr], &[cspace, vspace, buffer_frame])?;
    tcb_set_fault_handler(tcb, fault_ep)
}
/// Set a thread's fault handler: a copy of the endpoint capability in slot `fault_ep` of the
/// caller's CSpace (it needs the write right and the grant or grant-reply right), or none (0).
/// The thread's faults become Calls on it, with its badge; without one a fault suspends the
/// thread.
pub fn tcb_set_fault_handler(tcb: u64, fault_ep: u64) -> Result<(), Error> {
    let caps: &[u64] = if fault_ep == 0 { &[] } else { &[fault_ep] };
    invoke(tcb, inv::TCB_SET_FAULT_HANDLER, &[], caps).map(|_| ())
}
pub fn tcb_set_priority(tcb: u64, authority: u64, prio: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_SET_PRIORITY, &[prio], &[authority]).map(|_| ())
}
pub fn tcb_set_mc_priority(tcb: u64, authority: u64, mcp: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_SET_MC_PRIORITY, &[mcp], &[authority]).map(|_| ())
}
/// Let the thread use the kernel's debug channel (`DebugWrite`), or take it away; `authority` is
/// the I/O-port control capability (see `ozone_abi::invocation::TCB_SET_DEBUG_OUTPUT`).
pub fn tcb_set_debug_output(tcb: u64, authority: u64, on: bool) -> Result<(), Error> {
    invoke(tcb, inv::TCB_SET_DEBUG_OUTPUT, &[u64::from(on)], &[authority]).map(|_| ())
}
pub fn tcb_resume(tcb: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_RESUME, &[], &[]).map(|_| ())
}
pub fn tcb_suspend(tcb: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_SUSPEND, &[], &[]).map(|_| ())
}
pub fn tcb_set_tls_base(tcb: u64, base: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_SET_TLS_BASE, &[base], &[]).map(|_| ())
}
/// Set the `allowed` mask of a thread's syscall profile (`ozone_abi::profile`).
pub fn tcb_set_profile(tcb: u64, allowed: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_SET_PROFILE, &[allowed], &[]).map(|_| ())
}
/// A thread's syscall profile: `(used, allowed)`.
pub fn tcb_get_profile(tcb: u64) -> Result<(u64, u64), Error> {
    invoke(tcb, inv::TCB_GET_PROFILE, &[], &[]).map(|r| (r.msg.mrs[0], r.msg.mrs[1]))
}
/// Arm a learning window: the thread may use `allowed` for `learn` more syscalls; at the next,
/// before it is admitted, the kernel narrows `allowed` to what the thread used of it.
pub fn tcb_arm_profile(tcb: u64, allowed: u64, learn: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_ARM_PROFILE, &[allowed, learn], &[]).map(|_| ())
}
/// A thread's learning window: the syscalls it may still make while learning, `None` if no
/// window is armed (never armed, or over: its `allowed` has been narrowed).
pub fn tcb_profile_window(tcb: u64) -> Result<Option<u64>, Error> {
    invoke(tcb, inv::TCB_GET_PROFILE, &[], &[]).map(|r| (r.msg.mrs[2] == 1).then_some(r.msg.mrs[3]))
}
pub fn tcb_bind_notification(tcb: u64, ntfn: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_BIND_NOTIFICATION, &[], &[ntfn]).map(|_| ())
}
pub fn tcb_unbind_notification(tcb: u64) -> Result<(), Error> {
    invoke(tcb, inv::TCB_UNBIND_NOTIFICATION, &[], &[]).map(|_| ())
}

/// Registers in the order of ReadRegisters/WriteRegisters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegisters {
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl UserRegisters {
    fn to_words(self) -> [u64; 18] {
        [
            self.rip,
            self.rsp,
            self.rflags,
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
        ]
    }
    fn from_words(w: &[u64; 18]) -> Self {
        UserRegisters {
            rip: w[0],
            rsp: w[1],
            rflags: w[2],
            rax: w[3],
            rbx: w[4],
            rcx: w[5],
            rdx: w[6],
            rsi: w[7],
            rdi: w[8],
            rbp: w[9],
            r8: w[10],
            r9: w[11],
            r10: w[12],
            r11: w[13],
            r12: w[14],
            r13: w[15],
            r14: w[16],
            r15: w[17],
        }
    }
}

pub fn tcb_write_registers(tcb: u64, resume: bool, regs: &UserRegisters) -> Result<(), Error> {
    let mut args = [0u64; 20];
    args[0] = resume as u64;
    args[1] = 18;
    args[2..].copy_from_slice(&regs.to_words());
    invoke(tcb, inv::TCB_WRITE_REGISTERS, &args, &[]).map(|_| ())
}

pub fn tcb_read_registers(tcb: u64, suspend: bool) -> Result<UserRegisters, Error> {
    let r = invoke(tcb, inv::TCB_READ_REGISTERS, &[suspend as u64, 18], &[])?;
    let mut w = [0u64; 18];
    for (i, v) in w.iter_mut().enumerate() {
        *v = reply_word(&r, i);
    }
    Ok(UserRegisters::from_words(&w))
}

pub fn paging_map(table: u64, vspace: u64, vaddr: u64) -> Result<(), Error> {
    invoke(table, inv::PAGING_MAP, &[vaddr], &[vspace]).map(|_| ())
}
pub fn paging_unmap(table: u64) -> Result<(), Error> {
    invoke(table, inv::PAGING_UNMAP, &[], &[]).map(|_| ())
}
pub fn frame_map(frame: u64, vspace: u64, vaddr: u64, rights: u64, executable: bool) -> Result<(), Error> {
    let attrs = if executable { inv::MAP_EXECUTABLE } else { 0 };
    invoke(frame, inv::FRAME_MAP, &[vaddr, rights, attrs], &[vspace]).map(|_| ())
}
pub fn frame_unmap(frame: u64) -> Result<(), Error> {
    invoke(frame, inv::FRAME_UNMAP, &[], &[]).map(|_| ())
}
pub fn frame_get_address(frame: u64) -> Result<u64, Error> {
    invoke(frame, inv::FRAME_GET_ADDRESS, &[], &[]).map(|r| r.msg.mrs[0])
}
