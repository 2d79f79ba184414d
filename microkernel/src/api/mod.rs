//! The system-call layer: what each syscall does with the capability it names (seL4's
//! `handleSyscall`), and the kernel state it works on.
//!
//! A syscall names a capability by a capability pointer (`rdi`), looked up in the calling
//! thread's CSpace. Send, NBSend and Call on an endpoint are IPC, on a notification a signal, on
//! any other object an *invocation* (decoded and performed in [`invoke`]); Recv and NBRecv wait on
//! an endpoint or notification; Reply answers the last Call received; ReplyRecv does both; Yield
//! gives up the timeslice; CallInterruptible is a Call on an endpoint that a signal on the
//! caller's bound notification ends. Everything here is portable (host-tested); the machine-specific
//! effects (TLB, I/O ports, interrupts) go through [`Platform`].

#[cfg(test)]
mod device_attack_tests;
#[cfg(test)]
mod dispatch_review_tests;
pub mod fastpath;
#[cfg(test)]
mod interrupt_attack_tests;
#[cfg(any(test, feature = "fuzzing", debug_assertions))]
pub mod invariants;
pub mod invoke;
#[cfg(test)]
mod isolation_tests;
#[cfg(test)]
mod model;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod server_death_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trace_review_tests;
#[cfg(test)]
mod trace_tests;

use crate::object::kptr::kptr;
use ozone_abi::trace::{self, ObjectKind};
use ozone_abi::{Error, MSG_MAX_EXTRA_CAPS, MessageInfo, Syscall, profile};

use crate::object::asid::AsidTable;
use crate::object::cspace::{lookup_cap, lookup_slot};
use crate::object::delete::ObjectHooks;
use crate::object::endpoint::{self, Endpoint, IpcEnv};
use crate::object::kmem::{SlotRef, SlotSpan};
use crate::object::notification::{self, Notification};
use crate::object::tcb::counted as tcb_counted;
use crate::object::tcb::{Fault, TCB_CSPACE, TCB_FAULT_HANDLER, TCB_VSPACE, Tcb, ThreadState, is_fault_handler};
use crate::object::{Cap, PagingLevel, Rights, cnode, mdb, vspace};
use crate::sched::Scheduler;

/// Machine-specific effects the capability kernel needs.
pub trait Platform {
    /// A mapping at `vaddr` in the address space rooted at `pml4` was removed or changed.
    fn flush_tlb(&self, pml4: u64, vaddr: u64);
    /// Read or write an I/O port (`size` 1, 2 or 4 bytes).
    fn port_in(&self, port: u16, size: u8) -> u32;
    fn port_out(&self, port: u16, size: u8, value: u32);
    /// Whether interrupt line (GSI) `irq` exists: some I/O APIC input has it (see
    /// [`crate::interrupts`]). Only such lines get handler capabilities.
    fn irq_line(&self, irq: u8) -> bool;
    /// The address/data pair a device writes to raise MSI line `irq` (see
    /// [`crate::interrupts::MAX_MSIS`]), or `None` if the machine cannot deliver it.
    fn msi_message(&self, irq: u8) -> Option<(u64, u64)>;
    /// Route interrupt line `irq` (unmasked) or mask it (also dropping an MSI held while it was
    /// masked).
    fn irq_enable(&self, irq: u8, enable: bool);
    /// Acknowledge (end) interrupt `irq` after its handler ran, unmasking it again.
    fn irq_ack(&self, irq: u8);
    /// The running thread's TLS base changed.
    fn set_tls_base(&self, base: u64);
    /// The address space rooted at `pml4` is being destroyed: the CPU must not use it any more.
    fn vspace_deleted(&self, pml4: u64);
    /// The running thread's address space is now the one rooted at `pml4`.
    fn set_vspace(&self, pml4: u64);
    /// The TCB at `tcb` is being destroyed: the machine layer forgets it wherever it named it.
    fn thread_deleted(&self, _tcb: u64) {}
    /// DebugWrite: print `text` (whole UTF-8 text a thread wrote) on the console.
    fn console_write(&self, text: &str);
    /// ThreadExit: the thread at `tcb` ends with `status` (it is suspended right after). The
    /// machine layer may end the system here (the root task's exit).
    fn thread_exited(&self, _tcb: u64, _status: u64) {}
    /// Whether any of the I/O ports `first..=last` is one the kernel drives itself (an I/O-port
    /// capability to it is never issued).
    fn kernel_port(&self, first: u16, last: u16) -> bool;
    /// Whether the physical address `phys` is device memory (given to drivers as device
    /// untyped memory: its reads can have side effects).
    fn device_memory(&self, phys: u64) -> bool;
}

/// The interrupt lines user handlers can take: GSIs `0..interrupts::MAX_LINES` (IRQControl `Get`
/// refuses any other with `RangeError`), then the MSI lines up to `MAX_IRQS` (issued by
/// `GetMsi` only).
pub const MAX_IRQS: usize = crate::interrupts::ALL_LINES;

/// The capability kernel's state.
pub struct Kernel {
    pub sched: Scheduler,
    /// Kernel address of the kernel's own PML4 (its top half is copied into every new VSpace).
    pub kernel_pml4: u64,
    /// The notification each interrupt line signals (kernel address, 0 = none) and whether a
    /// handler capability has been issued for it.
    pub irq_notification: [u64; MAX_IRQS],
    /// The badge each line's interrupt signals (the notification capability's, or `1 << irq`).
    pub irq_badge: [u64; MAX_IRQS],
    pub irq_issued: [bool; MAX_IRQS],
    pub platform: &'static dyn Platform,
    /// The TCB whose FPU state is in the CPU registers, the FPU owner (kernel address, 0 = none).
    pub fpu_owner: u64,
    /// Which PML4 each ASID stands for (kept apart: it is large, and the kernel's is in `.bss`).
    pub asids: &'static mut AsidTable,
    /// The last invocation refused, with the rule that refused it (`api/invoke.rs`).
    pub last_refusal: Option<invoke::Refusal>,
}

impl IpcEnv for Kernel {
    fn scheduler(&mut self) -> &mut Scheduler {
        &mut self.sched
    }

    unsafe fn transfer_caps(
        &mut self,
        sender: *mut Tcb,
        receiver: *mut Tcb,
        info: MessageInfo,
        ep: u64,
    ) -> MessageInfo {
        // SAFETY: per the contract.
        unsafe { transfer_caps(sender, receiver, info, ep) }
    }
}

/// The receiving thread's receive slot (from its IPC buffer), if it names an empty slot.
fn receive_slot(receiver: &Tcb) -> Option<SlotRef> {
    let (cnode, index, depth) = receiver.ipc_receive_slot()?;
    let root = receiver.slots[TCB_CSPACE].cap;
    let node = lookup_cap(&root, cnode).ok()?.1;
    let slot = lookup_slot(&node, index, depth).ok()?;
    slot.is_empty().then_some(slot)
}

/// Capability transfer (seL4's `transferCaps`): each extra capability is either unwrapped (a
/// badged capability to the very endpoint the message travels on: only its badge is passed) or,
/// for the first one that is not, copied into the receiver's receive slot. Transfer stops at the
/// first capability that cannot be looked up or placed.
///
/// The threads are reached through short references only: inserting the capability rewrites
/// derivation links, possibly in slots inside either TCB.
///
/// # Safety
/// `sender` and `receiver` are live TCBs, and no reference to either is live.
unsafe fn transfer_caps(sender: *mut Tcb, receiver: *mut Tcb, info: MessageInfo, ep: u64) -> MessageInfo {
    let (root, mut dest) = {
        // SAFETY: per the contract; the references end here.
        let (s, r) = unsafe { (&*sender, &*receiver) };
        if s.ipc_buffer().is_none() || r.ipc_buffer().is_none() {
            return MessageInfo::new(info.label(), 0, 0, info.length());
        }
        (s.slots[TCB_CSPACE].cap, receive_slot(r))
    };
    let mut count = 0;
    let mut unwrapped = 0;
    for i in 0..info.extra_caps().min(MSG_MAX_EXTRA_CAPS) as usize {
        // SAFETY: per the contract; one access.
        let Some(cptr) = unsafe { &*sender }.ipc_cap_word(i) else { break };
        let Ok((src, cap)) = lookup_cap(&root, cptr) else { break };
        match cap {
            Cap::Endpoint { ptr, badge, .. } if ptr == ep && badge != 0 => {
                // SAFETY: per the contract; one access.
                unsafe { &*receiver }.set_ipc_cap_word(i, badge);
                unwrapped |= 1 << i;
            }
            _ => {
                let Some(d) = dest.take() else { break };
                let Ok(derived) = cnode::derive_cap(src, &cap) else { break };
                if derived.is_null() {
                    break;
                }
                mdb::cte_insert(derived, src, d);
            }
        }
        count += 1;
    }
    MessageInfo::new(info.label(), unwrapped, count, info.length())
}

/// The current thread (null when none).
fn current(k: &Kernel) -> *mut Tcb {
    k.sched.current()
}

/// The thread at `t`, for one short access.
///
/// The syscall layer names threads by raw pointer and makes a reference only for as long as it
/// reads or writes the thread's own fields: never across a capability, scheduler or IPC
/// operation, which reach TCBs (and the capability slots inside them) through pointers of their
/// own. A reference held across one of those would be aliased.
///
/// # Safety
/// `t` is a live TCB, and no other reference to it is used while the returned one is.
#[inline(always)]
pub(crate) unsafe fn thread<'a>(t: *mut Tcb) -> &'a mut Tcb {
    // SAFETY: per the contract.
    unsafe { &mut *t }
}

/// The address space (PML4 kernel address) to run `t` in: its VSpace's, or, when that has been
/// deleted or revoked (the slot's copy goes with it), the kernel's own PML4, which maps no user
/// memory: the thread then faults at its first instruction instead of running on whatever page
/// tables were loaded before (seL4 falls back to its kernel-only PML4 the same way).
#[inline(always)]
pub fn address_space_of(k: &Kernel, t: &Tcb) -> u64 {
    // The slot holds a PML4 or nothing (Configure and SetSpace accept no other; checked by the
    // invariant checker), so the capability's type is all there is to test.
    match t.slots[TCB_VSPACE].cap {
        Cap::Paging { ptr, .. } => ptr,
        _ => k.kernel_pml4,
    }
}

/// The profile bit of invoking the object `cap` names (`None` for endpoints and notifications,
/// which are IPC, and for capabilities that cannot be invoked).
pub fn object_profile_bit(cap: &Cap) -> Option<u32> {
    Some(match cap {
        Cap::Untyped { .. } => profile::UNTYPED,
        Cap::CNode { .. } => profile::CNODE,
        Cap::Tcb { .. } => profile::TCB,
        Cap::Paging { .. } => profile::PAGING,
        Cap::Frame { .. } => profile::FRAME,
        Cap::IrqControl => profile::IRQ_CONTROL,
        Cap::IrqHandler { .. } => profile::IRQ_HANDLER,
        Cap::IoPortControl => profile::IO_PORT_CONTROL,
        Cap::IoPort { .. } => profile::IO_PORT,
        Cap::Telemetry => profile::TELEMETRY,
        Cap::Null | Cap::Endpoint { .. } | Cap::Notification { .. } | Cap::Reply { .. } => return None,
    })
}

/// Handle syscall `number` from the current thread, whose registers are in its TCB. (The entry
/// path counts the syscall in the thread's telemetry, fast paths included.) On return
/// the caller's `rax` holds the error code (for the syscalls that complete now) and the
/// scheduler knows who runs next.
///
/// Every syscall first records its profile bit and is denied if the bit is not allowed; a Send,
/// NBSend or Call that invokes a kernel object then does the same with the object's bit, after
/// the capability lookup and before anything else. A denied syscall changes nothing but the
/// thread's `used` mask and `denied` counter (and raises a denied-operation fault if the thread
/// has a fault handler).
pub fn handle_syscall(k: &mut Kernel, number: i64) {
    let t = current(k);
    if t.is_null() {
        return;
    }
    // Every syscall but ThreadExit (whose thread, if ever resumed, finds its registers as it
    // left them) returns an error code in RAX: success unless a step below says otherwise.
    if number != Syscall::ThreadExit as i64 {
        // SAFETY: `t` is the live current thread; the reference is used for one access.
        unsafe { thread(t) }.regs.rax = 0;
    }
    // A thread with a learning window or a trace comes here for every syscall (its `fast` mask
    // holds none of the untraced fastpaths' bits): one test sends it out of line, where the
    // window is counted (and `allowed` narrowed when it is over, before anything is admitted)
    // and a traced thread's record is begun; the syscall itself runs in the one line below
    // for every thread, and a begun record is finished after it.
    // SAFETY: `t` is the live current thread; one access.
    let counted = unsafe { thread(t) }.profile.count_syscall();
    if counted != 0 && counted_syscall(k, t, number, counted) {
        return;
    }
    dispatch(k, t, number);
}

/// Before a syscall of a thread with a learning window or a trace (`counted`, from
/// [`Profile::count_syscall`](crate::object::tcb::Profile::count_syscall)): the window's end
/// (`true`: the syscall waits for the handler), and for a traced thread the record begun, which
/// the common line finishes with the syscall's result. (A Call or ReplyRecv the fastpaths'
/// traced copies took never comes here: `entry` tries them before the general path.)
#[inline(never)]
fn counted_syscall(k: &mut Kernel, t: *mut Tcb, number: i64, counted: u8) -> bool {
    if counted & tcb_counted::WINDOW_ENDED != 0 && window_ended(k, t, number) {
        return true;
    }
    if counted & tcb_counted::TRACED != 0 {
        begin_record(t, number);
    }
    false
}

/// Begin a traced thread's record of syscall `number` (none for an unknown syscall, a fault
/// recorded as such): what it names is looked up first (the lookup changes nothing); the
/// record is finished with the result the syscall returned at once (0 for one that blocked; a
/// preempted invocation, restarted later, is recorded each time it runs). A debug call, which
/// has no profile bit, is recorded as [`trace::DEBUG_WRITE`] or [`trace::THREAD_EXIT`].
fn begin_record(t: *mut Tcb, number: i64) {
    let Some(syscall) = Syscall::from_raw(number) else { return };
    // SAFETY: `t` is the live current thread; one access.
    let tr = unsafe { thread(t) };
    // A debug call's record carries no message info (its rsi is a length, or nothing).
    let (what, info) = match syscall.profile_bit() {
        Some(bit) => (bit, tr.regs.rsi),
        None if syscall == Syscall::DebugWrite => (u32::from(trace::DEBUG_WRITE), 0),
        None => (u32::from(trace::THREAD_EXIT), 0),
    };
    let object = match syscall {
        Syscall::Yield | Syscall::Reply | Syscall::DebugWrite | Syscall::ThreadExit => ObjectKind::None,
        _ => lookup_cap(&tr.slots[TCB_CSPACE].cap, tr.regs.rdi).map_or(ObjectKind::Invalid, |(_, c)| object_kind(&c)),
    };
    tr.trace.begin([trace::syscall_word(what, object), info]);
}

/// Finish the record a traced thread's syscall began, with the syscall's result.
#[inline(never)]
fn finish_record(t: *mut Tcb) {
    // SAFETY: `t` is the live thread that made the syscall; one access.
    let tr = unsafe { thread(t) };
    let result = tr.regs.rax & 0xffff;
    tr.trace.finish(result << 16 | crate::object::trace::tick_word());
}

/// A syscall by number: an unknown one is a fault, the debug calls are not profiled, every
/// other one is admitted or denied by the thread's profile and then run.
#[inline(always)]
fn dispatch(k: &mut Kernel, t: *mut Tcb, number: i64) {
    let Some(syscall) = Syscall::from_raw(number) else { return unknown_syscall(k, t, number) };
    // The debug calls have no profile bit: every thread may make them.
    let Some(bit) = syscall.profile_bit() else { return debug_call(k, t, syscall) };
    profiled_syscall(k, t, syscall, bit);
}

/// The kind of capability `cap` is, for a trace record.
pub fn object_kind(cap: &Cap) -> ObjectKind {
    match cap {
        Cap::Null => ObjectKind::Invalid,
        Cap::Untyped { .. } => ObjectKind::Untyped,
        Cap::CNode { .. } => ObjectKind::CNode,
        Cap::Tcb { .. } => ObjectKind::Tcb,
        Cap::Endpoint { .. } => ObjectKind::Endpoint,
        Cap::Notification { .. } => ObjectKind::Notification,
        Cap::Reply { .. } => ObjectKind::Reply,
        Cap::Frame { .. } => ObjectKind::Frame,
        Cap::Paging { .. } => ObjectKind::Paging,
        Cap::IrqControl => ObjectKind::IrqControl,
        Cap::IrqHandler { .. } => ObjectKind::IrqHandler,
        Cap::IoPortControl => ObjectKind::IoPortControl,
        Cap::IoPort { .. } => ObjectKind::IoPort,
        Cap::Telemetry => ObjectKind::Telemetry,
    }
}

/// A syscall with a profile bit: admitted or denied by the thread's profile, then run.
#[inline(always)]
fn profiled_syscall(k: &mut Kernel, t: *mut Tcb, syscall: Syscall, bit: u32) {
    // SAFETY: `t` is the live current thread; one access.
    if !unsafe { thread(t) }.profile.admit(profile::mask(bit)) {
        deny(k, t, syscall, bit);
        // SAFETY: as below.
        if unsafe { thread(t) }.trace.begun() {
            finish_record(t);
        }
        return;
    }
    let result = match syscall {
        Syscall::Send | Syscall::NbSend | Syscall::Call => send(k, t, syscall),
        Syscall::CallInterruptible => call_interruptible(k, t),
        Syscall::Recv => receive(k, t, true),
        Syscall::NbRecv => receive(k, t, false),
        Syscall::Reply => {
            // SAFETY: `t` is the live current thread.
            unsafe { endpoint::reply(k, t) };
            Ok(())
        }
        Syscall::ReplyRecv => {
            // SAFETY: `t` is the live current thread.
            unsafe { endpoint::reply(k, t) };
            receive(k, t, true)
        }
        Syscall::Yield => {
            k.sched.yield_current();
            Ok(())
        }
        Syscall::DebugWrite | Syscall::ThreadExit => Err(Error::IllegalOperation),
    };
    // SAFETY: `t` is the live thread that made the syscall; its operations are over (a thread
    // that deleted its own TCB had its trace slot emptied with it, which drops a begun record).
    let tr = unsafe { thread(t) };
    if let Err(e) = result {
        tr.counters.denied += 1;
        tr.regs.rax = e as u64;
    }
    // A traced thread's record, begun before the syscall (`counted_syscall`), takes its result.
    if tr.trace.begun() {
        finish_record(t);
    }
}

/// The most bytes one DebugWrite may print.
pub const DEBUG_WRITE_MAX: u64 = 4096;

/// The debug calls: DebugWrite (RDI: address, RSI: length of UTF-8 text to print) and
/// ThreadExit (RDI: status).
fn debug_call(k: &mut Kernel, t: *mut Tcb, syscall: Syscall) {
    // SAFETY: `t` is the live current thread; one access.
    let (rdi, rsi) = unsafe { (thread(t).regs.rdi, thread(t).regs.rsi) };
    match syscall {
        Syscall::DebugWrite => {
            let result = debug_write(k, t, rdi, rsi);
            // SAFETY: `t` is the live current thread; one access.
            unsafe { thread(t) }.regs.rax = result.err().map_or(0, |e| e as u64);
            // SAFETY: as above.
            if unsafe { thread(t) }.trace.begun() {
                finish_record(t);
            }
        }
        Syscall::ThreadExit => {
            // The record first, with result 0 (ThreadExit leaves RAX as the thread had it).
            // SAFETY: `t` is the live current thread; one access.
            unsafe { thread(t) }.trace.finish(crate::object::trace::tick_word());
            crate::debug!("thread {t:p} exited with status {rdi}");
            k.platform.thread_exited(t as u64, rdi);
            crate::object::tcb::suspend_thread(k, t);
        }
        // Every other syscall has a profile bit.
        _ => {
            // SAFETY: `t` is the live current thread; one access.
            unsafe { thread(t) }.regs.rax = Error::IllegalOperation as u64;
        }
    }
}

/// DebugWrite: copy `len` bytes of the thread `t`'s memory from `ptr` and print them if they
/// are UTF-8 — only for a thread that was given the debug channel (`Tcb::debug_output`), else
/// `Denied`. The bytes are read through the kernel's map of physical memory after a walk of the
/// thread's page tables (never through its own mapping, so SMAP stays on); every byte must be
/// mapped user-accessible.
#[inline(never)]
fn debug_write(k: &Kernel, t: *mut Tcb, ptr: u64, len: u64) -> Result<(), Error> {
    // Checked first: a thread without the channel learns nothing about its arguments.
    // SAFETY: `t` is the live current thread; one access.
    if !unsafe { thread(t) }.debug_output {
        return Err(Error::Denied);
    }
    if len > DEBUG_WRITE_MAX {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: `t` is the live current thread; one access.
    let Cap::Paging { ptr: pml4, level: PagingLevel::Pml4, .. } = unsafe { thread(t) }.slots[TCB_VSPACE].cap else {
        return Err(Error::IllegalOperation);
    };
    let mut buf = [0u8; DEBUG_WRITE_MAX as usize];
    let out = &mut buf[..len as usize];
    let mut done = 0usize;
    while done < out.len() {
        let va = ptr.checked_add(done as u64).ok_or(Error::InvalidUserBuffer)?;
        // SAFETY: the PML4 is named by the thread's VSpace capability, so live.
        let (phys, _) = unsafe { vspace::translate(pml4, va) }.ok_or(Error::InvalidUserBuffer)?;
        // The kernel does not read device registers on a thread's behalf.
        if k.platform.device_memory(phys) {
            return Err(Error::InvalidUserBuffer);
        }
        let n = ((4096 - (va & 0xfff)) as usize).min(out.len() - done);
        // [phys, phys+n) lies in one frame of normal memory (device memory was refused above)
        // mapped user-accessible in the thread's address space: user frames and kernel objects
        // are disjoint, and the kernel's map of physical memory reaches it.
        // SAFETY: so the source is n readable bytes no reference aliases; `out` has n bytes left.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (phys + crate::object::KERNEL_PHYS_OFFSET) as *const u8,
                out[done..].as_mut_ptr(),
                n,
            )
        };
        done += n;
    }
    let text = core::str::from_utf8(out).map_err(|_| Error::InvalidArgument)?;
    k.platform.console_write(text);
    Ok(())
}

/// A syscall the thread's profile does not allow: counted, and either a denied-operation fault
/// for the thread's fault handler or, without one, `Error::Denied`.
fn deny(k: &mut Kernel, t: *mut Tcb, syscall: Syscall, bit: u32) {
    {
        // SAFETY: `t` is the live current thread; the reference ends before the delivery.
        let tr = unsafe { thread(t) };
        tr.counters.denied += 1;
        // The result however the thread comes back: at once, resumed by its handler, or resumed
        // with TCB Resume after the handler left it suspended.
        tr.regs.rax = Error::Denied as u64;
    }
    deliver_fault(k, t, Fault::Denied { number: syscall as i64 as u64, bit });
}

/// `t`'s learning window has just ended, before syscall `number` (nothing of which has happened
/// yet): with a usable fault handler, `t` sends it a window-ended fault and will execute the
/// syscall again when resumed (its RIP goes back to the `syscall` instruction), so whoever
/// shapes it (Studio, for the shaper) hears of the new mask before the thread makes another
/// syscall. Returns whether it did; without a handler the syscall goes on at once.
fn window_ended(k: &mut Kernel, t: *mut Tcb, number: i64) -> bool {
    let allowed = {
        // SAFETY: `t` is the live current thread; the reference ends before the delivery.
        let tr = unsafe { thread(t) };
        // Only a syscall that came in through the `syscall` instruction can be executed again
        // (its registers say where that instruction is); and only with a handler to tell.
        if tr.regs.vector != crate::object::tcb::SYSCALL_ENTRY
            || !crate::object::tcb::is_fault_handler(&tr.slots[TCB_FAULT_HANDLER].cap)
        {
            return false;
        }
        tr.regs.rewind_syscall();
        tr.profile.allowed()
    };
    deliver_fault(k, t, Fault::WindowEnded { number: number as u64, allowed })
}

/// An unknown syscall number is a fault: the thread's fault handler may emulate it.
fn unknown_syscall(k: &mut Kernel, t: *mut Tcb, number: i64) {
    if !raise_fault(k, t, Fault::UnknownSyscall { number: number as u64 }) {
        // SAFETY: `t` is the live current thread.
        unsafe { thread(t) }.regs.rax = Error::UnknownSyscall as u64;
    }
}

/// Deliver `fault` to `t`'s fault handler (a Call on the endpoint capability in its fault-handler
/// slot) and count it in the thread's `faults`. Returns false when there is no usable handler
/// (the caller decides what happens then). `t` is the live current thread.
pub(crate) fn raise_fault(k: &mut Kernel, t: *mut Tcb, fault: Fault) -> bool {
    // SAFETY: `t` is the live current thread; one access.
    let tr = unsafe { thread(t) };
    tr.counters.faults += 1;
    if tr.trace.is_on() {
        tr.trace.append(fault_record(&fault));
    }
    deliver_fault(k, t, fault)
}

/// The trace record of a fault the thread took (`ozone_abi::trace`): its fault label and its
/// main word (the address of a page fault, the vector of an exception, the unknown number).
fn fault_record(fault: &Fault) -> [u64; 2] {
    use ozone_abi::fault as label;
    let (what, word) = match *fault {
        Fault::VmFault { addr, .. } => (label::VM_FAULT, addr),
        Fault::UnknownSyscall { number } => (label::UNKNOWN_SYSCALL, number),
        Fault::UserException { vector, .. } => (label::USER_EXCEPTION, vector),
        Fault::Denied { number, .. } => (label::DENIED, number),
        Fault::WindowEnded { number, .. } => (label::WINDOW_ENDED, number),
        Fault::None => (0, 0),
    };
    [what | ((trace::Kind::Fault as u64) << 8) | crate::object::trace::tick_word(), word]
}

/// Deliver `fault` to `t`'s fault handler, if it has one. The handler is the capability in the
/// TCB's own fault-handler slot (put there by SetFaultHandler, emptied when the endpoint is
/// revoked or deleted), never a capability of the thread's CSpace: a program need hold no
/// capability to its fault endpoint, so it cannot send a message that looks like a fault.
fn deliver_fault(k: &mut Kernel, t: *mut Tcb, fault: Fault) -> bool {
    let handler = {
        // SAFETY: `t` is the live current thread; the reference ends before the send.
        let tr = unsafe { thread(t) };
        tr.slots[TCB_FAULT_HANDLER].cap
    };
    // SetFaultHandler installs nothing else (and the invariant checker holds it to that).
    if !is_fault_handler(&handler) {
        return false;
    }
    let Cap::Endpoint { ptr, badge, rights } = handler else { return false };
    // SAFETY: `t` is the live current thread; one access.
    unsafe { thread(t) }.fault = fault;
    // SAFETY: the endpoint comes from a valid capability; `t` is live.
    unsafe {
        endpoint::send(k, kptr::<Endpoint>(ptr), t, badge, rights.contains(Rights::GRANT), true, true, true, false)
    };
    true
}

/// Send, NBSend or Call.
fn send(k: &mut Kernel, t: *mut Tcb, syscall: Syscall) -> Result<(), Error> {
    let blocking = syscall != Syscall::NbSend;
    let is_call = syscall == Syscall::Call;
    let (root, cptr) = {
        // SAFETY: `t` is the live current thread; the reference ends before the lookup.
        let tr = unsafe { thread(t) };
        (tr.slots[TCB_CSPACE].cap, tr.regs.rdi)
    };
    let (slot, cap) = lookup_cap(&root, cptr).map_err(|_| Error::InvalidCapability)?;
    match cap {
        Cap::Endpoint { ptr, badge, rights } => {
            if !rights.contains(Rights::WRITE) {
                return Err(Error::IllegalOperation);
            }
            let grant = rights.contains(Rights::GRANT);
            let grant_reply = rights.contains(Rights::GRANT_REPLY);
            // SAFETY: the endpoint comes from a valid capability; `t` is the current thread.
            unsafe { endpoint::send(k, kptr::<Endpoint>(ptr), t, badge, grant, grant_reply, blocking, is_call, false) };
            Ok(())
        }
        Cap::Notification { ptr, badge, rights } => {
            if !rights.contains(Rights::WRITE) {
                return Err(Error::IllegalOperation);
            }
            // SAFETY: the notification comes from a valid capability.
            unsafe { notification::signal(k, kptr::<Notification>(ptr), badge) };
            Ok(())
        }
        Cap::Null => Err(Error::InvalidCapability),
        _ => {
            let rip = {
                // SAFETY: `t` is the live current thread; the reference ends before the
                // invocation.
                let tr = unsafe { thread(t) };
                if let Some(bit) = object_profile_bit(&cap)
                    && !tr.profile.admit(profile::mask(bit))
                {
                    deny(k, t, syscall, bit);
                    return Ok(());
                }
                tr.counters.invocations += 1;
                tr.regs.rip
            };
            let r = invoke::invoke(k, t, slot, cap);
            // SAFETY: `t` is the live current thread; the invocation is over.
            let tr = unsafe { thread(t) };
            if tr.regs.rip != rip {
                // Preempted and to be restarted: the registers must stay as the caller left them.
                return r;
            }
            if !is_call {
                // A Send of an invocation returns no results.
                tr.regs.rsi = 0;
            }
            r
        }
    }
}

/// CallInterruptible: a Call on an endpoint capability (with the write right) that a signal on
/// the caller's bound notification ends. Refused without a bound notification
/// (`IllegalOperation`: nothing could ever end it) and on any other capability
/// (`InvalidCapability`). Bits already pending end it at once: `Interrupted`, with the word
/// taken into `rdi` and an empty message.
fn call_interruptible(k: &mut Kernel, t: *mut Tcb) -> Result<(), Error> {
    let (root, cptr, bound) = {
        // SAFETY: `t` is the live current thread; the reference ends before the lookup.
        let tr = unsafe { thread(t) };
        (tr.slots[TCB_CSPACE].cap, tr.regs.rdi, tr.bound_notification)
    };
    let (_, cap) = lookup_cap(&root, cptr).map_err(|_| Error::InvalidCapability)?;
    let Cap::Endpoint { ptr, badge, rights } = cap else { return Err(Error::InvalidCapability) };
    if !rights.contains(Rights::WRITE) || bound == 0 {
        return Err(Error::IllegalOperation);
    }
    // SAFETY: a bound notification is live while bound.
    if let Some(word) = unsafe { notification::take_pending_word(kptr::<Notification>(bound)) } {
        // SAFETY: `t` is the live current thread; one access.
        let tr = unsafe { thread(t) };
        tr.regs.rdi = word;
        tr.regs.rsi = 0;
        return Err(Error::Interrupted);
    }
    let grant = rights.contains(Rights::GRANT);
    let grant_reply = rights.contains(Rights::GRANT_REPLY);
    // SAFETY: the endpoint comes from a valid capability; `t` is the current thread.
    unsafe { endpoint::send(k, kptr::<Endpoint>(ptr), t, badge, grant, grant_reply, true, true, true) };
    Ok(())
}

fn receive(k: &mut Kernel, t: *mut Tcb, blocking: bool) -> Result<(), Error> {
    let (root, cptr) = {
        // SAFETY: `t` is the live current thread; the reference ends before the lookup.
        let tr = unsafe { thread(t) };
        (tr.slots[TCB_CSPACE].cap, tr.regs.rdi)
    };
    let (_, cap) = lookup_cap(&root, cptr).map_err(|_| Error::InvalidCapability)?;
    match cap {
        Cap::Endpoint { ptr, rights, .. } => {
            if !rights.contains(Rights::READ) {
                return Err(Error::IllegalOperation);
            }
            // SAFETY: the endpoint comes from a valid capability; `t` is the current thread.
            unsafe { endpoint::receive(k, kptr::<Endpoint>(ptr), t, blocking, rights.contains(Rights::GRANT)) };
            Ok(())
        }
        Cap::Notification { ptr, rights, .. } => {
            if !rights.contains(Rights::READ) {
                return Err(Error::IllegalOperation);
            }
            // A notification bound to a thread is that thread's alone to wait on (as in seL4):
            // another waiter would take the signals meant for it (among them the one that ends
            // its interruptible Call).
            // SAFETY: the notification comes from a valid capability; the read ends here.
            let bound = unsafe { (*kptr::<Notification>(ptr)).bound_tcb };
            if bound != 0 && bound != t as u64 {
                return Err(Error::IllegalOperation);
            }
            // SAFETY: the notification comes from a valid capability.
            unsafe { notification::wait(k, kptr::<Notification>(ptr), t, blocking) };
            Ok(())
        }
        _ => Err(Error::InvalidCapability),
    }
}

/// What happens to kernel objects when their capabilities go away.
impl ObjectHooks for Kernel {
    fn finalise(&mut self, cap: &Cap, last: bool) {
        match *cap {
            Cap::Paging { level: PagingLevel::Pml4, .. } if !last => {}
            Cap::Paging { ptr, level: PagingLevel::Pml4, mapped } => {
                // From now on the ASID stands for nothing: whatever is still mapped under it is
                // forgotten by its Unmap or deletion, which touch no memory then.
                if let Some(m) = mapped {
                    self.asids.release(m.asid, ptr);
                }
                self.platform.vspace_deleted(ptr);
            }
            // A mapped frame or paging structure leaves its address space, if that still exists
            // (the entry, if any, is in the table the recorded walk reaches; see `vspace`).
            Cap::Frame { ptr, size, mapped: Some(m), .. } => {
                if let Some(pml4) = self.asids.lookup(m.asid) {
                    // SAFETY: the ASID table names only live PML4s.
                    unsafe { vspace::unmap_frame(pml4, ptr, size, m.vaddr) };
                    self.platform.flush_tlb(pml4, m.vaddr);
                }
            }
            Cap::Paging { ptr, level, mapped: Some(m) } => {
                if let Some(pml4) = self.asids.lookup(m.asid) {
                    // SAFETY: the ASID table names only live PML4s.
                    unsafe { vspace::unmap_table(pml4, ptr, level, m.vaddr) };
                    self.platform.flush_tlb(pml4, 0);
                }
            }
            _ if !last => {}
            Cap::Tcb { ptr } => {
                let t = kptr::<Tcb>(ptr);
                if self.fpu_owner == ptr {
                    self.fpu_owner = 0;
                }
                self.platform.thread_deleted(ptr);
                // SAFETY: the last capability to a live TCB is being deleted.
                unsafe {
                    endpoint::cancel_ipc(t);
                    self.sched.remove(t);
                    if self.sched.current() == t {
                        // The thread deleted its own TCB: it never runs again, and the scheduler
                        // no longer names it (the rest of this kernel entry may still write its
                        // result registers into the dead TCB, whose memory nothing can reuse
                        // before the entry ends: a Retype is a syscall of its own).
                        (*t).state = ThreadState::Inactive;
                        self.sched.set_current(core::ptr::null_mut());
                        self.sched.current_blocked();
                    }
                    if (*t).bound_notification != 0 {
                        let _ = notification::unbind(&mut *t);
                    }
                    // A thread blocked on a reply from this one will never get it: it is woken
                    // with `ReplyLost` (seL4 leaves it blocked); nothing refers to this TCB any
                    // more.
                    endpoint::lose_reply_right(self, t);
                }
            }
            Cap::Endpoint { ptr, .. } => {
                // SAFETY: the last capability to a live endpoint is being deleted.
                unsafe { endpoint::cancel_all(self, kptr::<Endpoint>(ptr)) };
            }
            Cap::Notification { ptr, .. } => {
                for n in self.irq_notification.iter_mut() {
                    if *n == ptr {
                        *n = 0;
                    }
                }
                // SAFETY: the last capability to a live notification is being deleted.
                unsafe { notification::cancel_all(self, kptr::<Notification>(ptr)) };
            }
            Cap::IrqHandler { irq } => {
                if let Some(i) = self.irq_issued.get_mut(irq as usize) {
                    *i = false;
                    self.irq_notification[irq as usize] = 0;
                    self.platform.irq_enable(irq, false);
                }
            }
            _ => {}
        }
    }

    fn embedded_slots(&self, cap: &Cap) -> Option<SlotSpan> {
        match *cap {
            // SAFETY: a TCB capability names a live TCB.
            Cap::Tcb { ptr } => Some(unsafe { Tcb::slots_of(kptr::<Tcb>(ptr)) }),
            _ => None,
        }
    }

    fn cancel_badged_sends(&mut self, ep: u64, badge: u64) {
        // SAFETY: the endpoint comes from a valid capability (decoded by the CNode layer).
        unsafe { endpoint::cancel_badged_sends(self, kptr::<Endpoint>(ep), badge) };
    }
}

/// An interrupt on line `irq` arrived (the machine layer masked the line): signal its
/// notification. The line stays masked until the handler acknowledges it (`Ack`), so a device
/// that keeps a level-triggered line asserted interrupts once per acknowledgement, never in a
/// storm. A line with no notification (its handler was cleared or deleted while the interrupt
/// was on its way) stays masked: only `SetNotification` routes it again.
pub fn handle_interrupt(k: &mut Kernel, irq: u8) {
    let Some(&n) = k.irq_notification.get(irq as usize) else { return };
    if n != 0 {
        let badge = k.irq_badge[irq as usize];
        // SAFETY: `irq_notification` holds live notifications (cleared when they are finalised).
        unsafe { notification::signal(k, kptr::<Notification>(n), badge) };
    }
}
