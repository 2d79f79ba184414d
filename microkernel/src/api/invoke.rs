//! Object invocations: a Call (or Send) on a capability to a kernel object other than an
//! endpoint or notification. Each method decodes its arguments — message registers, and
//! capability arguments looked up from the IPC buffer — checking everything before changing
//! anything, then performs (seL4's decode/perform split). Long operations (Delete, Revoke,
//! Retype's zeroing) run on a budget; when it runs out the syscall is *restarted*: the thread
//! resumes at its `syscall` instruction after any pending interrupt, and the operation continues
//! where it stopped.

use ozone_abi::invocation as inv;
use ozone_abi::{Error, MessageInfo};

use super::{Kernel, thread};
use crate::object::cnode::{self, CNodeInvocation};
use crate::object::cspace::{lookup_cap, lookup_slot};
use crate::object::delete::{self, Budget, Progress};
use crate::object::kmem::{SlotRef, SlotSpan};
use crate::object::notification::{self, Notification};
use crate::object::tcb::{KERNEL_WRITTEN, SYSCALL_INSN_LEN, TCB_CSPACE, TCB_IPC_BUFFER, TCB_VSPACE, Tcb, ThreadState};
use crate::object::untyped::{self, RetypeArgs};
use crate::object::{Asid, Cap, FrameSize, KERNEL_PHYS_OFFSET, Mapping, ObjectType, PagingLevel, Rights, mdb, vspace};

/// Units of work one kernel entry may spend on a preemptible operation.
pub const PREEMPT_BUDGET: u32 = 64;

/// Message register `i` of the current message of the thread `t` (every function here takes the
/// invoking thread as a raw pointer and makes a reference only for one access: see
/// [`super::thread`]).
fn mr(t: *mut Tcb, i: usize) -> Result<u64, Error> {
    // SAFETY: `t` is the live invoking thread; the reference ends with this function.
    let t = unsafe { thread(t) };
    let info = MessageInfo(t.regs.rsi);
    if i as u64 >= info.length() {
        return Err(Error::InvalidArgument);
    }
    if i < ozone_abi::MSG_REGISTERS {
        return Ok(t.regs.mr(i));
    }
    t.ipc_msg(i).ok_or(Error::InvalidArgument)
}

/// Capability argument `i`: looked up in the caller's CSpace from its IPC buffer.
fn cap_arg(t: *mut Tcb, i: usize) -> Result<(SlotRef, Cap), Error> {
    let (root, cptr) = {
        // SAFETY: `t` is the live invoking thread; the reference ends before the lookup.
        let t = unsafe { thread(t) };
        let info = MessageInfo(t.regs.rsi);
        if i as u64 >= info.extra_caps() {
            return Err(Error::InvalidCapability);
        }
        (t.slots[TCB_CSPACE].cap, t.ipc_cap_word(i).ok_or(Error::InvalidCapability)?)
    };
    lookup_cap(&root, cptr).map_err(|_| Error::InvalidCapability)
}

/// Put results in the caller's message registers (the first four in registers, the rest in its
/// IPC buffer, where it has one).
fn reply_words(t: *mut Tcb, words: &[u64]) {
    // SAFETY: `t` is the live invoking thread; the reference ends with this function.
    let t = unsafe { thread(t) };
    let mut n = 0;
    for (i, w) in words.iter().enumerate() {
        if i < ozone_abi::MSG_REGISTERS {
            t.regs.set_mr(i, *w);
        } else if !t.set_ipc_msg(i, *w) {
            break;
        }
        n += 1;
    }
    t.regs.rsi = MessageInfo::new(0, 0, 0, n).0;
}

/// Resume the caller at its `syscall` instruction so the preempted operation continues.
fn restart(t: *mut Tcb) {
    // SAFETY: `t` is the live invoking thread; one access.
    let t = unsafe { thread(t) };
    t.regs.rip = t.regs.rip.wrapping_sub(SYSCALL_INSN_LEN);
}

fn progress(t: *mut Tcb, p: Progress) -> Result<(), Error> {
    if p == Progress::Preempted {
        restart(t);
    }
    Ok(())
}

/// Invoke the object `cap` (in `slot`) with the current thread `t`'s message.
pub(crate) fn invoke(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, cap: Cap) -> Result<(), Error> {
    // SAFETY: `t` is the live invoking thread; one access.
    let (request, rip_at_entry) = unsafe { (thread(t).regs.rsi, thread(t).regs.rip) };
    let label = MessageInfo(request).label();
    let result = match cap {
        Cap::Untyped { .. } => untyped_invocation(k, t, slot, label),
        Cap::CNode { .. } => cnode_invocation(k, t, &cap, label),
        Cap::Tcb { ptr } => tcb_invocation(k, t, slot, ptr, label),
        Cap::Paging { .. } => paging_invocation(k, t, slot, cap, label),
        Cap::Frame { .. } => frame_invocation(k, t, slot, cap, label),
        Cap::IrqControl => irq_control_invocation(k, t, slot, label),
        Cap::IrqHandler { irq } => irq_handler_invocation(k, t, irq, label),
        Cap::IoPortControl => io_port_control_invocation(t, slot, label),
        Cap::IoPort { first, last } => io_port_invocation(k, t, first, last, label),
        Cap::Telemetry => telemetry_invocation(t, label),
        _ => Err(Error::IllegalOperation),
    };
    // SAFETY: `t` is the live invoking thread; the method is done.
    let t = unsafe { thread(t) };
    let restarted = t.regs.rip != rip_at_entry;
    if result.is_ok() && !restarted && t.regs.rsi == request {
        // The method returned nothing: an empty reply.
        t.regs.rsi = MessageInfo::new(0, 0, 0, 0).0;
    }
    result
}

fn untyped_invocation(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, label: u64) -> Result<(), Error> {
    match label {
        inv::UNTYPED_RETYPE => untyped_retype(k, t, slot),
        inv::UNTYPED_GET_INFO => {
            let info = untyped::get_info(slot)?;
            let mut flags = 0;
            if info.has_children {
                flags |= inv::UNTYPED_INFO_HAS_CHILDREN;
            }
            if info.device {
                flags |= inv::UNTYPED_INFO_DEVICE;
            }
            reply_words(t, &[u64::from(info.size_bits), info.free, flags, info.paddr]);
            Ok(())
        }
        _ => Err(Error::IllegalOperation),
    }
}

fn untyped_retype(k: &mut Kernel, t: *mut Tcb, slot: SlotRef) -> Result<(), Error> {
    let args = RetypeArgs {
        object_type: mr(t, 0)?,
        size_bits: mr(t, 1)?,
        node_index: mr(t, 2)?,
        node_depth: mr(t, 3)?,
        node_offset: mr(t, 4)?,
        count: mr(t, 5)?,
    };
    let (_, dest_root) = cap_arg(t, 0)?;
    let plan = untyped::decode_retype(slot, &args, &dest_root)?;
    // Every PML4 gets an ASID when it is made (in `init_object`): there must be enough of them.
    if args.object_type == ObjectType::Pml4 as u64 && (k.asids.free_count() as u64) < args.count {
        return Err(Error::DeleteFirst);
    }
    let mut budget = Budget::new(PREEMPT_BUDGET);
    if untyped::perform_retype(plan, &mut budget) == Progress::Preempted {
        restart(t);
        return Ok(());
    }
    // Give the new objects their initial state where all-zero memory is not it.
    let node =
        if args.node_depth == 0 { dest_root } else { lookup_slot(&dest_root, args.node_index, args.node_depth)?.cap() };
    let span = SlotSpan::of_cnode(&node).ok_or(Error::FailedLookup)?;
    for i in 0..args.count {
        let Some(s) = span.slot(args.node_offset + i) else { break };
        init_object(k, s);
    }
    Ok(())
}

/// Initialise a freshly retyped object, whose only capability is in `slot`.
fn init_object(k: &mut Kernel, slot: SlotRef) {
    match slot.cap() {
        Cap::Tcb { ptr } => {
            // SAFETY: the TCB was just carved from untyped memory: nothing else refers to it.
            unsafe { (ptr as *mut Tcb).write(Tcb::initial()) };
        }
        Cap::Paging { ptr, level: PagingLevel::Pml4, .. } => {
            // SAFETY: the kernel's PML4 is live for ever.
            let kernel = (k.kernel_pml4 != 0).then(|| unsafe { &*(k.kernel_pml4 as *const vspace::Table) });
            vspace::init_pml4(ptr, kernel);
            // Checked before the Retype: there is an ASID for every new PML4. (Were there none,
            // the capability would stay without one: no address space, refused as a VSpace.)
            if let Some(asid) = k.asids.assign(ptr) {
                slot.set_cap(Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: Some(Mapping { asid, vaddr: 0 }) });
            }
        }
        _ => {}
    }
}

/// The address space a PML4 capability argument names: its PML4 and ASID. `InvalidCapability`
/// for anything else (a PML4 capability always has a live ASID; checked all the same).
#[inline(always)]
fn vspace_root(k: &Kernel, cap: &Cap) -> Result<(u64, Asid), Error> {
    let Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: Some(m) } = *cap else {
        return Err(Error::InvalidCapability);
    };
    match k.asids.lookup(m.asid) {
        Some(pml4) if pml4 == ptr => Ok((ptr, m.asid)),
        _ => Err(Error::InvalidCapability),
    }
}

fn cnode_invocation(k: &mut Kernel, t: *mut Tcb, cap: &Cap, label: u64) -> Result<(), Error> {
    let src = |t: *mut Tcb| cap_arg(t, 0).map(|(_, c)| c);
    let invocation = match label {
        inv::CNODE_COPY => CNodeInvocation::Copy {
            dest_index: mr(t, 0)?,
            dest_depth: mr(t, 1)?,
            src_root: src(t)?,
            src_index: mr(t, 2)?,
            src_depth: mr(t, 3)?,
            rights: mr(t, 4)?,
        },
        inv::CNODE_MINT => CNodeInvocation::Mint {
            dest_index: mr(t, 0)?,
            dest_depth: mr(t, 1)?,
            src_root: src(t)?,
            src_index: mr(t, 2)?,
            src_depth: mr(t, 3)?,
            rights: mr(t, 4)?,
            data: mr(t, 5)?,
        },
        inv::CNODE_MOVE => CNodeInvocation::Move {
            dest_index: mr(t, 0)?,
            dest_depth: mr(t, 1)?,
            src_root: src(t)?,
            src_index: mr(t, 2)?,
            src_depth: mr(t, 3)?,
        },
        inv::CNODE_MUTATE => CNodeInvocation::Mutate {
            dest_index: mr(t, 0)?,
            dest_depth: mr(t, 1)?,
            src_root: src(t)?,
            src_index: mr(t, 2)?,
            src_depth: mr(t, 3)?,
            data: mr(t, 4)?,
        },
        inv::CNODE_DELETE => CNodeInvocation::Delete { index: mr(t, 0)?, depth: mr(t, 1)? },
        inv::CNODE_REVOKE => CNodeInvocation::Revoke { index: mr(t, 0)?, depth: mr(t, 1)? },
        inv::CNODE_CANCEL_BADGED_SENDS => CNodeInvocation::CancelBadgedSends { index: mr(t, 0)?, depth: mr(t, 1)? },
        _ => return Err(Error::IllegalOperation),
    };
    let plan = cnode::decode(cap, &invocation)?;
    let mut budget = Budget::new(PREEMPT_BUDGET);
    let p = cnode::perform(plan, k, &mut budget);
    progress(t, p)
}

/// Empty one of the TCB's capability slots on a budget (the capability may be the last one to a
/// large CNode). `Preempted`: the caller restarts the syscall, which decodes again.
fn clear_tcb_slot(k: &mut Kernel, target: *mut Tcb, index: usize) -> Progress {
    // SAFETY: a TCB capability names a live TCB.
    let slot = unsafe { Tcb::slots_of(target) }.slot(index as u64).expect("a TCB slot index");
    if slot.is_empty() {
        return Progress::Done;
    }
    delete::delete(slot, k, &mut Budget::new(PREEMPT_BUDGET))
}

/// What one of a TCB's slots is to hold: the capability decoded from `src`.
#[derive(Clone, Copy)]
struct TcbSlotArg {
    index: usize,
    src: SlotRef,
    cap: Cap,
}

/// Install capabilities in a TCB's slots (Configure, SetSpace, SetIPCBuffer), as seL4's
/// `invokeTCB_ThreadControl` does: first delete what they replace, preemptibly (a preempted
/// call is restarted and decoded again); then, since those deletions may have destroyed the
/// sources or the TCB itself (the old CSpace root may have been the last capability to the
/// CNode that holds them), check that every source and the invoked TCB capability still hold
/// what was decoded (`InvalidCapability` if not: the replaced slots are then left empty), and
/// only then insert.
fn install_tcb_caps(
    k: &mut Kernel,
    t: *mut Tcb,
    tcb_slot: SlotRef,
    target: *mut Tcb,
    args: &[TcbSlotArg],
) -> Result<Progress, Error> {
    for a in args {
        if clear_tcb_slot(k, target, a.index) == Progress::Preempted {
            restart(t);
            return Ok(Progress::Preempted);
        }
    }
    if tcb_slot.cap() != (Cap::Tcb { ptr: target as u64 }) || args.iter().any(|a| a.src.cap() != a.cap) {
        return Err(Error::InvalidCapability);
    }
    // SAFETY: the invoked capability (checked just above) names this live TCB.
    let slots = unsafe { Tcb::slots_of(target) };
    for a in args {
        // A VSpace root is used as it is (it got its ASID when it was made).
        let derived = match a.cap {
            Cap::Paging { level: PagingLevel::Pml4, .. } => a.cap,
            _ => cnode::derive_cap(a.src, &a.cap)?,
        };
        if derived.is_null() {
            return Err(Error::IllegalOperation);
        }
        let dest = slots.slot(a.index as u64).ok_or(Error::InvalidArgument)?;
        mdb::cte_insert(derived, a.src, dest);
    }
    Ok(Progress::Done)
}

/// Register order of ReadRegisters / WriteRegisters.
fn register_list(r: &mut crate::object::tcb::Registers) -> [&mut u64; 18] {
    [
        &mut r.rip,
        &mut r.rsp,
        &mut r.rflags,
        &mut r.rax,
        &mut r.rbx,
        &mut r.rcx,
        &mut r.rdx,
        &mut r.rsi,
        &mut r.rdi,
        &mut r.rbp,
        &mut r.r8,
        &mut r.r9,
        &mut r.r10,
        &mut r.r11,
        &mut r.r12,
        &mut r.r13,
        &mut r.r14,
        &mut r.r15,
    ]
}

/// RFLAGS bits a thread may set: CF, PF, AF, ZF, SF, TF, DF, OF, AC, ID; IF is always set.
pub const USER_RFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;

/// An address a thread may run at or use as its TLS base: below the end of user memory (which
/// stops a page short of the canonical hole, so the instruction after any user `syscall` is
/// canonical too).
pub const fn is_user_address(addr: u64) -> bool {
    addr < ozone_abi::USER_TOP
}

/// Run `f` on the TCB `target` points at, which may be the invoking thread itself (no reference
/// to which is live either: see [`super::thread`]).
fn with_target<R>(target: *mut Tcb, f: impl FnOnce(&mut Tcb) -> R) -> R {
    // SAFETY: a TCB capability names a live TCB; `f` makes one access and runs no kernel
    // operation, so its reference is the only one used meanwhile.
    f(unsafe { thread(target) })
}

fn tcb_invocation(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, target_ptr: u64, label: u64) -> Result<(), Error> {
    let target = target_ptr as *mut Tcb;
    let is_self = core::ptr::eq(target, t);
    match label {
        inv::TCB_CONFIGURE | inv::TCB_SET_SPACE => {
            let fault_handler = mr(t, 0)?;
            let (cs_slot, cspace) = cap_arg(t, 0)?;
            let (vs_slot, vspace_cap) = cap_arg(t, 1)?;
            if !matches!(cspace, Cap::CNode { .. }) || vspace_root(k, &vspace_cap).is_err() {
                return Err(Error::IllegalOperation);
            }
            let mut args = [
                TcbSlotArg { index: TCB_CSPACE, src: cs_slot, cap: cspace },
                TcbSlotArg { index: TCB_VSPACE, src: vs_slot, cap: vspace_cap },
                TcbSlotArg { index: TCB_IPC_BUFFER, src: cs_slot, cap: Cap::Null },
            ];
            let mut buffer_vaddr = None;
            if label == inv::TCB_CONFIGURE {
                let vaddr = mr(t, 2)?;
                if vaddr != 0 {
                    let (frame_slot, frame) = cap_arg(t, 2)?;
                    check_ipc_buffer(vaddr, &frame)?;
                    args[2] = TcbSlotArg { index: TCB_IPC_BUFFER, src: frame_slot, cap: frame };
                    buffer_vaddr = Some(vaddr);
                }
            }
            let n = if buffer_vaddr.is_some() { 3 } else { 2 };
            let installed = install_tcb_caps(k, t, slot, target, &args[..n]);
            if is_self {
                // The thread's own address space changed, or went (the old one was deleted and
                // the install failed): the CPU follows at once, not at the next switch.
                let pml4 = with_target(t, |t| super::address_space_of(k, t));
                k.platform.set_vspace(pml4);
            }
            if installed? == Progress::Preempted {
                return Ok(());
            }
            with_target(target, |target| {
                target.fault_handler = fault_handler;
                if let Some(vaddr) = buffer_vaddr {
                    target.ipc_buffer_vaddr = vaddr;
                }
            });
            Ok(())
        }
        inv::TCB_SET_IPC_BUFFER => {
            let vaddr = mr(t, 0)?;
            if vaddr == 0 {
                if clear_tcb_slot(k, target, TCB_IPC_BUFFER) == Progress::Preempted {
                    restart(t);
                    return Ok(());
                }
                with_target(target, |target| target.ipc_buffer_vaddr = 0);
                return Ok(());
            }
            let (frame_slot, frame) = cap_arg(t, 0)?;
            check_ipc_buffer(vaddr, &frame)?;
            let arg = TcbSlotArg { index: TCB_IPC_BUFFER, src: frame_slot, cap: frame };
            if install_tcb_caps(k, t, slot, target, &[arg])? == Progress::Done {
                with_target(target, |target| target.ipc_buffer_vaddr = vaddr);
            }
            Ok(())
        }
        inv::TCB_SET_PRIORITY | inv::TCB_SET_MC_PRIORITY => {
            let prio = mr(t, 0)?;
            let (_, authority) = cap_arg(t, 0)?;
            let Cap::Tcb { ptr: auth } = authority else { return Err(Error::InvalidCapability) };
            let mcp = with_target(auth as *mut Tcb, |a| a.mcp);
            if prio > 255 || prio > u64::from(mcp) {
                return Err(Error::RangeError);
            }
            if label == inv::TCB_SET_MC_PRIORITY {
                with_target(target, |target| target.mcp = prio as u8);
            } else {
                // A ready thread moves to its new priority's queue.
                let queued = with_target(target, |target| target.queued);
                // SAFETY: `target` is live (a TCB capability names a live TCB).
                unsafe { k.sched.remove(target) };
                with_target(target, |target| target.priority = prio as u8);
                if queued {
                    // SAFETY: `target` is live, runnable (it was queued) and not the current thread.
                    unsafe { k.sched.wake(target) };
                }
                k.sched.current_blocked();
            }
            Ok(())
        }
        inv::TCB_READ_REGISTERS => {
            if is_self {
                return Err(Error::IllegalOperation);
            }
            let suspend = mr(t, 0)? != 0;
            let count = mr(t, 1)?;
            if count == 0 || count > inv::REGISTER_COUNT {
                return Err(Error::RangeError);
            }
            if suspend {
                suspend_thread(k, target);
            }
            let mut words = [0u64; 18];
            with_target(target, |target| {
                for (w, r) in words.iter_mut().zip(register_list(&mut target.regs)) {
                    *w = *r;
                }
            });
            reply_words(t, &words[..count as usize]);
            Ok(())
        }
        inv::TCB_WRITE_REGISTERS => {
            if is_self {
                return Err(Error::IllegalOperation);
            }
            let resume = mr(t, 0)? != 0;
            let count = mr(t, 1)?;
            if count == 0 || count > inv::REGISTER_COUNT {
                return Err(Error::RangeError);
            }
            let mut values = [0u64; 18];
            for (i, v) in values.iter_mut().enumerate().take(count as usize) {
                *v = mr(t, 2 + i)?;
            }
            if !is_user_address(values[0]) {
                return Err(Error::InvalidArgument);
            }
            with_target(target, |target| {
                for (r, v) in register_list(&mut target.regs).into_iter().zip(values).take(count as usize) {
                    *r = v;
                }
                target.regs.rflags = (target.regs.rflags & USER_RFLAGS) | 0x202;
                // Written by the kernel: return with `iretq` so every register is restored.
                target.regs.vector = KERNEL_WRITTEN;
            });
            if resume {
                resume_thread(k, target);
            }
            Ok(())
        }
        inv::TCB_RESUME => {
            resume_thread(k, target);
            Ok(())
        }
        inv::TCB_SUSPEND => {
            suspend_thread(k, target);
            Ok(())
        }
        inv::TCB_BIND_NOTIFICATION => {
            let (_, n) = cap_arg(t, 0)?;
            let Cap::Notification { ptr, rights, .. } = n else { return Err(Error::InvalidCapability) };
            if !rights.contains(Rights::READ) {
                return Err(Error::IllegalOperation);
            }
            // SAFETY: a notification capability names a live notification.
            with_target(target, |target| unsafe { notification::bind(ptr as *mut Notification, target) })
        }
        inv::TCB_UNBIND_NOTIFICATION => with_target(target, notification::unbind),
        inv::TCB_SET_PROFILE => {
            let allowed = mr(t, 0)?;
            with_target(target, |target| target.profile.set_allowed(allowed));
            Ok(())
        }
        inv::TCB_GET_PROFILE => {
            let p = with_target(target, |target| target.profile);
            reply_words(t, &[p.used(), p.allowed()]);
            Ok(())
        }
        inv::TCB_SET_TLS_BASE => {
            let base = mr(t, 0)?;
            if !is_user_address(base) {
                return Err(Error::InvalidArgument);
            }
            with_target(target, |target| target.tls_base = base);
            if is_self {
                k.platform.set_tls_base(base);
            }
            Ok(())
        }
        _ => Err(Error::IllegalOperation),
    }
}

/// The IPC buffer must be a writable 4 KiB frame of normal memory (never device memory, whose
/// reads and writes have side effects), and the 1 KiB buffer must be 1 KiB aligned inside the
/// page at a user address.
fn check_ipc_buffer(vaddr: u64, frame: &Cap) -> Result<(), Error> {
    match frame {
        Cap::Frame { size: FrameSize::Small, rights, device: false, .. } if rights.contains(Rights::WRITE) => {}
        Cap::Frame { .. } => return Err(Error::IllegalOperation),
        _ => return Err(Error::InvalidCapability),
    }
    if !vaddr.is_multiple_of(1024) || !is_user_address(vaddr) {
        return Err(Error::AlignmentError);
    }
    Ok(())
}

/// Make a thread runnable (TCB Resume): an inactive thread runs again where its registers say
/// (a syscall it was taken out of was rewound then, and is executed again).
pub(crate) fn resume_thread(k: &mut Kernel, t: *mut Tcb) {
    // SAFETY: callers pass live TCBs from valid capabilities.
    let tr = unsafe { &mut *t };
    if tr.state == ThreadState::Inactive {
        // A thread with no address space cannot run.
        if tr.slots[TCB_VSPACE].cap.is_null() {
            return;
        }
        tr.state = ThreadState::Restart;
        if k.sched.current() != t {
            // SAFETY: live and now runnable.
            unsafe { k.sched.wake(t) };
        }
    }
}

/// Stop a thread (TCB Suspend): out of any IPC and the run queues.
pub(crate) fn suspend_thread(k: &mut Kernel, t: *mut Tcb) {
    // SAFETY: callers pass live TCBs from valid capabilities.
    unsafe {
        crate::object::endpoint::cancel_ipc(t);
        k.sched.remove(t);
        (*t).state = ThreadState::Inactive;
    }
    if k.sched.current() == t {
        k.sched.current_blocked();
    }
}

fn paging_invocation(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, cap: Cap, label: u64) -> Result<(), Error> {
    let Cap::Paging { ptr, level, mapped } = cap else { return Err(Error::InvalidCapability) };
    match label {
        inv::PAGING_MAP => {
            let vaddr = mr(t, 0)?;
            let (_, root) = cap_arg(t, 0)?;
            let (pml4, asid) = vspace_root(k, &root)?;
            if mapped.is_some() || level == PagingLevel::Pml4 {
                return Err(Error::IllegalOperation);
            }
            vspace::map_table(pml4, ptr, level, vaddr)?;
            slot.set_cap(Cap::Paging { ptr, level, mapped: Some(Mapping { asid, vaddr }) });
            Ok(())
        }
        inv::PAGING_UNMAP => {
            // A PML4 is mapped into nothing (its `mapped` is its ASID, which stays).
            if level == PagingLevel::Pml4 {
                return Ok(());
            }
            let Some(m) = mapped else { return Ok(()) };
            // Copies share the mapping: only the last capability may take it away (seL4's rule),
            // so two capabilities to one table are never both free to map it (see `vspace`).
            if !mdb::is_final_cap(slot) {
                return Err(Error::DeleteFirst);
            }
            // The address space may be gone (its PML4 deleted): then there is no entry to clear.
            if let Some(pml4) = k.asids.lookup(m.asid) {
                vspace::unmap_table(pml4, ptr, level, m.vaddr);
                k.platform.flush_tlb(pml4, 0);
            }
            // What hung below the table must not come back with it (see `vspace`).
            vspace::clear_table(ptr);
            slot.set_cap(Cap::Paging { ptr, level, mapped: None });
            Ok(())
        }
        _ => Err(Error::IllegalOperation),
    }
}

fn frame_invocation(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, cap: Cap, label: u64) -> Result<(), Error> {
    let Cap::Frame { ptr, size, rights, device, mapped } = cap else { return Err(Error::InvalidCapability) };
    match label {
        inv::FRAME_MAP => {
            let vaddr = mr(t, 0)?;
            let want = Rights::from_bits(mr(t, 1)?);
            let attrs = mr(t, 2)?;
            let (_, root) = cap_arg(t, 0)?;
            let (pml4, asid) = vspace_root(k, &root)?;
            if mapped.is_some() {
                return Err(Error::DeleteFirst);
            }
            let exec = attrs & inv::MAP_EXECUTABLE != 0;
            vspace::map_frame(pml4, ptr, size, vaddr, rights.intersect(want), exec)?;
            slot.set_cap(Cap::Frame { ptr, size, rights, device, mapped: Some(Mapping { asid, vaddr }) });
            Ok(())
        }
        inv::FRAME_UNMAP => {
            if let Some(m) = mapped {
                // The address space may be gone (its PML4 deleted): then there is nothing to clear.
                if let Some(pml4) = k.asids.lookup(m.asid) {
                    vspace::unmap_frame(pml4, ptr, size, m.vaddr);
                    k.platform.flush_tlb(pml4, m.vaddr);
                }
                slot.set_cap(Cap::Frame { ptr, size, rights, device, mapped: None });
            }
            Ok(())
        }
        inv::FRAME_GET_ADDRESS => {
            reply_words(t, &[ptr.wrapping_sub(KERNEL_PHYS_OFFSET)]);
            Ok(())
        }
        _ => Err(Error::IllegalOperation),
    }
}

fn irq_control_invocation(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, label: u64) -> Result<(), Error> {
    if label != inv::IRQ_CONTROL_GET {
        return Err(Error::IllegalOperation);
    }
    let irq = mr(t, 0)?;
    let (index, depth) = (mr(t, 1)?, mr(t, 2)?);
    let (_, root) = cap_arg(t, 0)?;
    if irq >= super::MAX_IRQS as u64 {
        return Err(Error::RangeError);
    }
    if k.irq_issued[irq as usize] {
        return Err(Error::DeleteFirst);
    }
    let dest = lookup_slot(&root, index, depth)?;
    if !dest.is_empty() {
        return Err(Error::DeleteFirst);
    }
    mdb::insert_new_cap(slot, dest, Cap::IrqHandler { irq: irq as u8 });
    k.irq_issued[irq as usize] = true;
    Ok(())
}

fn irq_handler_invocation(k: &mut Kernel, t: *mut Tcb, irq: u8, label: u64) -> Result<(), Error> {
    match label {
        inv::IRQ_HANDLER_ACK => {
            k.platform.irq_ack(irq);
            Ok(())
        }
        inv::IRQ_HANDLER_SET_NOTIFICATION => {
            let (_, n) = cap_arg(t, 0)?;
            let Cap::Notification { ptr, rights, .. } = n else { return Err(Error::InvalidCapability) };
            if !rights.contains(Rights::WRITE) {
                return Err(Error::IllegalOperation);
            }
            k.irq_notification[irq as usize] = ptr;
            k.platform.irq_enable(irq, true);
            Ok(())
        }
        inv::IRQ_HANDLER_CLEAR => {
            k.irq_notification[irq as usize] = 0;
            k.platform.irq_enable(irq, false);
            Ok(())
        }
        _ => Err(Error::IllegalOperation),
    }
}

fn io_port_control_invocation(t: *mut Tcb, slot: SlotRef, label: u64) -> Result<(), Error> {
    if label != inv::IO_PORT_CONTROL_ISSUE {
        return Err(Error::IllegalOperation);
    }
    let (first, last) = (mr(t, 0)?, mr(t, 1)?);
    let (index, depth) = (mr(t, 2)?, mr(t, 3)?);
    let (_, root) = cap_arg(t, 0)?;
    if first > last || last > 0xffff {
        return Err(Error::RangeError);
    }
    let dest = lookup_slot(&root, index, depth)?;
    if !dest.is_empty() {
        return Err(Error::DeleteFirst);
    }
    mdb::insert_new_cap(slot, dest, Cap::IoPort { first: first as u16, last: last as u16 });
    Ok(())
}

fn io_port_invocation(k: &mut Kernel, t: *mut Tcb, first: u16, last: u16, label: u64) -> Result<(), Error> {
    let (size, write) = match label {
        inv::IO_PORT_IN8 => (1, false),
        inv::IO_PORT_IN16 => (2, false),
        inv::IO_PORT_IN32 => (4, false),
        inv::IO_PORT_OUT8 => (1, true),
        inv::IO_PORT_OUT16 => (2, true),
        inv::IO_PORT_OUT32 => (4, true),
        _ => return Err(Error::IllegalOperation),
    };
    let port = mr(t, 0)?;
    // The whole access, `size` bytes from `port`, must lie in the capability's range (a port
    // near u64::MAX must not wrap round into it).
    let end = port.checked_add(size as u64 - 1).ok_or(Error::RangeError)?;
    if port < u64::from(first) || end > u64::from(last) {
        return Err(Error::RangeError);
    }
    if write {
        let value = mr(t, 1)?;
        k.platform.port_out(port as u16, size, value as u32);
        Ok(())
    } else {
        let v = k.platform.port_in(port as u16, size);
        reply_words(t, &[u64::from(v)]);
        Ok(())
    }
}

/// Telemetry Read: a thread's counters (cap0: its TCB) in MR0..MR5: syscalls, invocations, IPC
/// sent, IPC received, faults, denied operations; MR6: its profile's `used` mask.
fn telemetry_invocation(t: *mut Tcb, label: u64) -> Result<(), Error> {
    if label != inv::TELEMETRY_READ {
        return Err(Error::IllegalOperation);
    }
    let (_, target) = cap_arg(t, 0)?;
    let Cap::Tcb { ptr } = target else { return Err(Error::InvalidCapability) };
    let (c, used) = with_target(ptr as *mut Tcb, |target| (target.counters, target.profile.used()));
    reply_words(t, &[c.syscalls, c.invocations, c.ipc_sent, c.ipc_received, c.faults, c.denied, used]);
    Ok(())
}
