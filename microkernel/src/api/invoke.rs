//! Object invocations: a Call (or Send) on a capability to a kernel object other than an
//! endpoint or notification. This file is the dispatcher: it hands the invoking thread's
//! [`Message`] to the object's own file, which decodes the method's arguments into a checked
//! plan — message registers, and capability arguments looked up from the IPC buffer, everything
//! checked before anything changes — and then performs it (seL4's decode/perform split):
//!
//! | capability | methods in |
//! |---|---|
//! | Untyped | `object/untyped.rs` |
//! | CNode | `object/cnode.rs` |
//! | TCB | `object/tcb.rs` |
//! | paging structure, frame | `object/paging.rs` |
//! | IRQ control, IRQ handler | `object/irq.rs` |
//! | I/O-port control, I/O port | `object/ioport.rs` |
//! | telemetry | `object/telemetry.rs` |
//!
//! Long operations (Delete, Revoke, Retype's zeroing) run on a budget; when it runs out the
//! syscall is *restarted*: the thread resumes at its `syscall` instruction after any pending
//! interrupt, and the operation continues where it stopped.
//!
//! Every refused invocation names the rule that refused it ([`Refused::why`]): the dispatcher
//! keeps the last one in [`Kernel::last_refusal`] and logs it at debug level (`ozone.log=debug`),
//! as seL4's `userError` does. The caller sees only the [`Error`].

use ozone_abi::{Error, MessageInfo};

use super::{Kernel, thread};
use crate::object::cspace::lookup_cap;
use crate::object::delete::Progress;
use crate::object::kmem::SlotRef;
use crate::object::tcb::{SYSCALL_INSN_LEN, TCB_CSPACE, Tcb};
use crate::object::{Cap, cnode, ioport, irq, paging, tcb, telemetry, untyped};

/// Units of work one kernel entry may spend on a preemptible operation.
pub const PREEMPT_BUDGET: u32 = 64;

/// Why an invocation was refused: the error its caller gets and the rule that refused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub error: Error,
    /// The rule, for the debug log ("" when a lower layer refused with `error` alone; the log
    /// then says what the error means).
    pub why: &'static str,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Refused { error, why: "" }
    }
}

/// Refuse with `error` because of the rule `why`.
pub const fn refuse(error: Error, why: &'static str) -> Refused {
    Refused { error, why }
}

/// A refused invocation, as the dispatcher records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The kind of object invoked.
    pub object: &'static str,
    pub label: u64,
    pub error: Error,
    pub why: &'static str,
}

/// The invoking thread's message: the method's arguments and where its results go. It names the
/// thread by raw pointer and makes a reference only for one access (see `api::thread`): the
/// method may delete or change any other object meanwhile, the thread's own CSpace included.
#[derive(Clone, Copy)]
pub struct Message {
    t: *mut Tcb,
}

impl Message {
    /// The invoking thread.
    pub fn thread(&self) -> *mut Tcb {
        self.t
    }

    /// Message register `i`.
    pub fn mr(&self, i: usize) -> Result<u64, Refused> {
        const SHORT: Refused = refuse(Error::InvalidArgument, "the message is shorter than the method's arguments");
        // SAFETY: `t` is the live invoking thread; the reference ends with this function.
        let t = unsafe { thread(self.t) };
        let info = MessageInfo(t.regs.rsi);
        if i as u64 >= info.length() {
            return Err(SHORT);
        }
        if i < ozone_abi::MSG_REGISTERS {
            return Ok(t.regs.mr(i));
        }
        t.ipc_msg(i).ok_or(refuse(Error::InvalidArgument, "a long message needs an IPC buffer"))
    }

    /// How many capability arguments the message names.
    pub fn extra_caps(&self) -> u64 {
        // SAFETY: `t` is the live invoking thread; the reference ends with this function.
        let t = unsafe { thread(self.t) };
        MessageInfo(t.regs.rsi).extra_caps()
    }

    /// Capability argument `i`: looked up in the caller's CSpace from its IPC buffer.
    pub fn cap(&self, i: usize) -> Result<(SlotRef, Cap), Refused> {
        let (root, cptr) = {
            // SAFETY: `t` is the live invoking thread; the reference ends before the lookup.
            let t = unsafe { thread(self.t) };
            let info = MessageInfo(t.regs.rsi);
            if i as u64 >= info.extra_caps() {
                return Err(refuse(Error::InvalidCapability, "a capability argument is missing"));
            }
            let cptr =
                t.ipc_cap_word(i).ok_or(refuse(Error::InvalidCapability, "capability arguments need an IPC buffer"))?;
            (t.slots[TCB_CSPACE].cap, cptr)
        };
        lookup_cap(&root, cptr)
            .map_err(|_| refuse(Error::InvalidCapability, "a capability argument names no capability"))
    }

    /// Put results in the caller's message registers (the first four in registers, the rest in
    /// its IPC buffer, where it has one).
    pub fn reply(&self, words: &[u64]) {
        // SAFETY: `t` is the live invoking thread; the reference ends with this function.
        let t = unsafe { thread(self.t) };
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
    pub fn restart(&self) {
        // SAFETY: `t` is the live invoking thread; one access.
        let t = unsafe { thread(self.t) };
        t.regs.rip = t.regs.rip.wrapping_sub(SYSCALL_INSN_LEN);
    }

    /// After a preemptible operation: restart the syscall if it ran out of budget.
    pub fn progress(&self, p: Progress) -> Result<(), Refused> {
        if p == Progress::Preempted {
            self.restart();
        }
        Ok(())
    }
}

/// The name of the kind of object `cap` names, for the refusal log.
fn object_name(cap: &Cap) -> &'static str {
    match cap {
        Cap::Untyped { .. } => "Untyped",
        Cap::CNode { .. } => "CNode",
        Cap::Tcb { .. } => "TCB",
        Cap::Paging { .. } => "paging structure",
        Cap::Frame { .. } => "frame",
        Cap::IrqControl => "IRQ control",
        Cap::IrqHandler { .. } => "IRQ handler",
        Cap::IoPortControl => "I/O-port control",
        Cap::IoPort { .. } => "I/O port",
        Cap::Telemetry => "telemetry",
        _ => "object",
    }
}

/// What an error from a lower layer means, for a refusal that gave no rule of its own.
fn meaning(e: Error) -> &'static str {
    match e {
        Error::InvalidArgument => "an argument is out of its domain",
        Error::InvalidCapability => "a capability argument is of the wrong kind",
        Error::IllegalOperation => "the operation is not allowed on this object or with these rights",
        Error::RangeError => "a number is out of range",
        Error::AlignmentError => "an address is misaligned",
        Error::FailedLookup => "a slot lookup failed",
        Error::InvalidUserBuffer => "a user buffer is not mapped",
        Error::DeleteFirst => "the destination is occupied or the object is in use",
        Error::NotEnoughMemory => "the untyped memory is too small",
        Error::UnknownSyscall => "unknown syscall",
        Error::NotImplemented => "not implemented",
        Error::Denied => "denied by the thread's profile",
        Error::ReplyLost => "the thread that was to reply is gone",
        Error::Interrupted => "interrupted by a signal on the bound notification",
    }
}

/// Invoke the object `cap` (in `slot`) with the current thread `t`'s message.
pub(crate) fn invoke(k: &mut Kernel, t: *mut Tcb, slot: SlotRef, cap: Cap) -> Result<(), Error> {
    // SAFETY: `t` is the live invoking thread; one access.
    let (request, rip_at_entry) = unsafe { (thread(t).regs.rsi, thread(t).regs.rip) };
    let label = MessageInfo(request).label();
    let m = Message { t };
    let result = match cap {
        Cap::Untyped { .. } => untyped::invoke(k, m, slot, label),
        Cap::CNode { .. } => cnode::invoke(k, m, &cap, label),
        Cap::Tcb { ptr } => tcb::invoke(k, m, slot, ptr, label),
        Cap::Paging { .. } => paging::invoke_paging(k, m, slot, cap, label),
        Cap::Frame { .. } => paging::invoke_frame(k, m, slot, cap, label),
        Cap::IrqControl => irq::invoke_control(k, m, slot, label),
        Cap::IrqHandler { irq } => irq::invoke_handler(k, m, slot, irq, label),
        Cap::IoPortControl => ioport::invoke_control(k, m, slot, label),
        Cap::IoPort { first, last } => ioport::invoke(k, m, slot, first, last, label),
        Cap::Telemetry => telemetry::invoke(k, m, label),
        _ => Err(refuse(Error::IllegalOperation, "the object has no methods")),
    };
    match result {
        Ok(()) => {
            // SAFETY: `t` is the live invoking thread; the method is done.
            let t = unsafe { thread(t) };
            let restarted = t.regs.rip != rip_at_entry;
            if !restarted && t.regs.rsi == request {
                // The method returned nothing: an empty reply.
                t.regs.rsi = MessageInfo::new(0, 0, 0, 0).0;
            }
            Ok(())
        }
        Err(r) => {
            let why = if r.why.is_empty() { meaning(r.error) } else { r.why };
            let refusal = Refusal { object: object_name(&cap), label, error: r.error, why };
            crate::debug!("thread {t:p}: {} method {label} refused ({:?}): {why}", refusal.object, refusal.error);
            k.last_refusal = Some(refusal);
            Err(r.error)
        }
    }
}

/// The method was not one of the object's.
pub(crate) const UNKNOWN_METHOD: Refused = refuse(Error::IllegalOperation, "the object has no such method");
