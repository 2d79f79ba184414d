//! Endpoints: synchronous, rendezvous IPC (seL4's `sendIPC` / `receiveIPC` / reply).
//!
//! An endpoint holds one queue of threads, all waiting to send or all waiting to receive. A
//! sender that finds a receiver (or a receiver that finds a sender) transfers the message at
//! once: message info and the first four message registers in CPU registers, the rest between
//! the two threads' IPC buffers, the badge of the sender's capability, and capabilities when the
//! sender's capability has the grant right (done by the kernel through [`IpcEnv`]). A Call leaves
//! the caller blocked on reply and gives the receiver the one-shot right to reply (kept in the
//! receiver's TCB, `caller`, rather than in a CNode slot: the seL4 non-MCS "caller cap" without
//! `SaveCaller`).
//!
//! When the thread holding the right to reply is deleted or suspended (stopped, exited, dead of
//! an unhandled fault), its caller is woken with `Error::ReplyLost` rather than left waiting for
//! a reply nobody can send ([`lose_reply_right`]); a thread that merely receives again without
//! replying gives the right up and its caller stays blocked, as in seL4. A *CallInterruptible*
//! (`Syscall::CallInterruptible`) is a Call that a signal on the caller's bound notification
//! ends while it waits to send or for the reply ([`interrupt`]): it returns
//! `Error::Interrupted` with the notification's word in `rdi`, and the reply link is cut, so a
//! late reply goes nowhere.
//!
//! Safety: the functions take raw object pointers; callers guarantee they point at live objects
//! of the right type (the kernel gets them from valid capabilities; host tests from boxes).

use super::kptr::kptr;
use ozone_abi::{Error, MSG_MAX_LENGTH, MSG_REGISTERS, MessageInfo};

use super::tcb::{Fault, KERNEL_WRITTEN, Tcb, ThreadState};
use crate::sched::Scheduler;

/// Endpoint state: nobody waiting.
pub const EP_IDLE: u64 = 0;
/// Threads are waiting to send.
pub const EP_SEND: u64 = 1;
/// Threads are waiting to receive.
pub const EP_RECV: u64 = 2;

/// An endpoint object.
#[repr(C)]
pub struct Endpoint {
    pub state: u64,
    pub queue: WaitQueue,
}

const _: () = assert!(core::mem::size_of::<Endpoint>() <= 1 << ozone_abi::object::ENDPOINT_BITS);

/// A FIFO of TCBs linked through `ep_next`/`ep_prev` (used by endpoints and notifications).
#[repr(C)]
#[derive(Debug, Default)]
pub struct WaitQueue {
    pub head: u64,
    pub tail: u64,
}

/// The TCB at `addr`.
///
/// # Safety
/// `addr` is a live TCB — wait queues, reply links and bound-notification links only ever hold
/// addresses of live TCBs (module invariant, kept by taking a TCB out of every queue and link
/// before it is destroyed) — and no other reference to it is used while the returned one is.
pub(crate) unsafe fn tcb<'a>(addr: u64) -> &'a mut Tcb {
    // SAFETY: per the contract.
    unsafe { &mut *kptr::<Tcb>(addr) }
}

impl WaitQueue {
    pub fn is_empty(&self) -> bool {
        self.head == 0
    }

    pub fn push_back(&mut self, t: &mut Tcb) {
        t.ep_next = 0;
        t.ep_prev = self.tail;
        if self.tail != 0 {
            // SAFETY: the tail is a live queued TCB, not `t` (which is being queued).
            unsafe { tcb(self.tail) }.ep_next = t.addr();
        } else {
            self.head = t.addr();
        }
        self.tail = t.addr();
    }

    pub fn remove(&mut self, t: &mut Tcb) {
        if t.ep_prev != 0 {
            // SAFETY: `t`'s queue neighbours are live TCBs other than `t`.
            unsafe { tcb(t.ep_prev) }.ep_next = t.ep_next;
        } else {
            self.head = t.ep_next;
        }
        if t.ep_next != 0 {
            // SAFETY: as above.
            unsafe { tcb(t.ep_next) }.ep_prev = t.ep_prev;
        } else {
            self.tail = t.ep_prev;
        }
        t.ep_next = 0;
        t.ep_prev = 0;
    }

    /// Remove `t`, the queue's head, from it; returns whether the queue is now empty (the
    /// fastpath's shorter form of [`WaitQueue::remove`]).
    #[inline(always)]
    pub fn remove_head(&mut self, t: &mut Tcb) -> bool {
        debug_assert!(self.head == t.addr() && t.ep_prev == 0);
        let next = t.ep_next;
        self.head = next;
        t.ep_next = 0;
        if next != 0 {
            // SAFETY: the new head is a live queued TCB other than `t`.
            unsafe { tcb(next) }.ep_prev = 0;
            false
        } else {
            self.tail = 0;
            true
        }
    }

    /// Take the head of the queue off it.
    ///
    /// # Safety
    /// No other reference to the head is in use while the returned one is.
    pub unsafe fn pop_front<'a>(&mut self) -> Option<&'a mut Tcb> {
        if self.head == 0 {
            return None;
        }
        // SAFETY: a queue holds live TCBs (module invariant); exclusive per the contract.
        let t = unsafe { tcb(self.head) };
        self.remove(t);
        Some(t)
    }
}

/// What IPC needs from the rest of the kernel.
pub trait IpcEnv {
    fn scheduler(&mut self) -> &mut Scheduler;

    /// Move the capabilities `info` announces from `sender` to `receiver` (the sender's
    /// capability to the endpoint at `ep` has the grant right). Returns the message info the
    /// receiver sees: `extra_caps` = how many arrived, `caps_unwrapped` set for those that
    /// arrived as a badge. The default transfers none. The threads are named by raw pointer:
    /// inserting a capability may rewrite derivation links in slots inside either TCB, so no
    /// reference to them may be live meanwhile.
    ///
    /// # Safety
    /// `sender` and `receiver` are live TCBs, and no reference to either is live.
    unsafe fn transfer_caps(
        &mut self,
        _sender: *mut Tcb,
        _receiver: *mut Tcb,
        info: MessageInfo,
        _ep: u64,
    ) -> MessageInfo {
        MessageInfo::new(info.label(), 0, 0, info.length())
    }
}

/// Copy the message `sender` is sending (described by its `rsi`) into `receiver`'s registers and
/// IPC buffer, with `badge`: exactly `length` words, the rest of the receiver's registers and
/// buffer keep their values. A message longer than the register words needs an IPC buffer on
/// both sides (each looked up through its slot now); otherwise it is cut to the register words.
///
/// The threads are named by raw pointer, and references to them are made only around the
/// capability transfer, never across it (see [`IpcEnv::transfer_caps`]).
///
/// # Safety
/// `sender` and `receiver` are different live TCBs, and no reference to either is live.
unsafe fn transfer(env: &mut dyn IpcEnv, sender: *mut Tcb, receiver: *mut Tcb, badge: u64, can_grant: bool, ep: u64) {
    let info = {
        // SAFETY: per the contract; the references end before the capability transfer.
        let (sender, receiver) = unsafe { (&mut *sender, &mut *receiver) };
        match copy_message(sender, receiver, badge) {
            Some(info) => info,
            None => return,
        }
    };
    let delivered = if can_grant && info.extra_caps() > 0 {
        // SAFETY: per the contract; no reference to either thread is live.
        unsafe { env.transfer_caps(sender, receiver, info, ep) }
    } else {
        MessageInfo::new(info.label(), 0, 0, info.length())
    };
    // SAFETY: per the contract; fresh references after the transfer.
    let (sender, receiver) = unsafe { (&mut *sender, &mut *receiver) };
    receiver.regs.rsi = delivered.0;
    receiver.regs.rdi = badge;
    receiver.regs.rax = 0;
    sender.counters.ipc_sent += 1;
    receiver.counters.ipc_received += 1;
}

/// The message part of [`transfer`]: the words (or a fault message, then `None`: nothing more
/// to do). Returns the message info with the length the receiver gets.
fn copy_message(sender: &mut Tcb, receiver: &mut Tcb, badge: u64) -> Option<MessageInfo> {
    let info = match sender.fault {
        Fault::None => MessageInfo(sender.regs.rsi),
        fault => {
            deliver_fault(sender, receiver, fault, badge);
            return None;
        }
    };
    let mut length = info.length().min(MSG_MAX_LENGTH);
    for i in 0..(length as usize).min(MSG_REGISTERS) {
        receiver.regs.set_mr(i, sender.regs.mr(i));
    }
    match (sender.ipc_buffer(), receiver.ipc_buffer()) {
        (Some(from), Some(to)) if length > MSG_REGISTERS as u64 => {
            // Two threads may share one buffer: `copy` allows the overlap, and no reference to
            // either is made.
            // SAFETY: both are IPC buffers of live frames (looked up through the threads'
            // slots just now); words MSG_REGISTERS..length lie inside each.
            unsafe {
                core::ptr::copy(
                    (&raw const (*from).msg[MSG_REGISTERS]),
                    &raw mut (*to).msg[MSG_REGISTERS],
                    length as usize - MSG_REGISTERS,
                )
            }
        }
        (Some(_), Some(_)) => {}
        _ => length = length.min(MSG_REGISTERS as u64),
    }
    Some(MessageInfo::new(info.label(), 0, info.extra_caps(), length))
}

/// Fault message labels (the handler sees these as the message label).
pub use ozone_abi::fault as fault_label;

/// The message a fault handler receives: label = fault kind, message registers = details.
fn deliver_fault(faulter: &mut Tcb, handler: &mut Tcb, fault: Fault, badge: u64) {
    let (label, mrs): (u64, [u64; 4]) = match fault {
        Fault::VmFault { addr, error, ip } => (fault_label::VM_FAULT, [ip, addr, error, 0]),
        Fault::UnknownSyscall { number } => {
            (fault_label::UNKNOWN_SYSCALL, [faulter.regs.rip, faulter.regs.rsp, number, 0])
        }
        Fault::UserException { vector, error, ip } => {
            (fault_label::USER_EXCEPTION, [ip, faulter.regs.rsp, vector, error])
        }
        Fault::Denied { number, bit } => {
            (fault_label::DENIED, [faulter.regs.rip, faulter.regs.rsp, number, u64::from(bit)])
        }
        Fault::WindowEnded { number, allowed } => {
            (fault_label::WINDOW_ENDED, [faulter.regs.rip, faulter.regs.rsp, number, allowed])
        }
        Fault::None => (0, [0; 4]),
    };
    for (i, v) in mrs.iter().enumerate() {
        handler.regs.set_mr(i, *v);
    }
    handler.regs.rsi = MessageInfo::new(label, 0, 0, 4).0;
    handler.regs.rdi = badge;
    handler.regs.rax = 0;
    faulter.counters.ipc_sent += 1;
    handler.counters.ipc_received += 1;
}

/// A Call was received: `receiver` may now reply to `caller`, which waits for it. The reply may
/// carry capabilities if the *receiver's* endpoint capability has the grant right (seL4: the
/// replier decides what its reply may carry, not the caller). A right the receiver still held
/// is given up first.
fn setup_reply(caller: &mut Tcb, receiver: &mut Tcb, can_grant: bool, interruptible: bool) {
    drop_reply_right(receiver);
    caller.state = ThreadState::BlockedOnReply { interruptible };
    caller.reply_holder = receiver.addr();
    receiver.caller = caller.addr();
    receiver.caller_can_grant = can_grant;
}

/// `t` gives up its right to reply (it receives again): the caller it named, if any, stays
/// blocked on a reply nobody can send (seL4 semantics) until it is suspended, resumed or deleted
/// (or, in a CallInterruptible, interrupted).
pub fn drop_reply_right(t: &mut Tcb) {
    if t.caller != 0 {
        // SAFETY: the reply link names a live TCB (it is cut before either side is destroyed),
        // blocked on its reply, so not `t`.
        let c = unsafe { tcb(t.caller) };
        debug_assert_eq!(c.reply_holder, t.addr());
        c.reply_holder = 0;
        t.caller = 0;
        t.caller_can_grant = false;
    }
}

/// `t`, which may hold the right to reply to a Call, is being deleted or suspended: the caller
/// it named, if any, can never get its reply, so it is woken with `Error::ReplyLost` (an empty
/// message, badge 0). A caller that was being delivered a fault is instead taken out of the
/// delivery and restarted, to take its fault again (to whichever handler then receives it), as
/// when its fault endpoint is deleted.
///
/// # Safety
/// `t` points at a live TCB, and no reference to it is live.
pub unsafe fn lose_reply_right(env: &mut dyn IpcEnv, t: *mut Tcb) {
    let caller = {
        // SAFETY: per the contract; the reference ends here.
        let t = unsafe { &mut *t };
        let caller = t.caller;
        drop_reply_right(t);
        caller
    };
    if caller == 0 {
        return;
    }
    // SAFETY: the reply link named a live TCB blocked on its reply, so not `t`; no other
    // reference to it is live.
    let c = unsafe { tcb(caller) };
    debug_assert!(matches!(c.state, ThreadState::BlockedOnReply { .. }));
    if c.fault != Fault::None {
        c.regs.rewind_syscall();
        c.cancel_fault();
        c.state = ThreadState::Restart;
    } else {
        c.regs.rax = Error::ReplyLost as u64;
        c.regs.rdi = 0;
        c.regs.rsi = 0;
        c.state = ThreadState::Running;
    }
    // SAFETY: `c` is live and now runnable.
    unsafe { env.scheduler().wake(c) };
}

/// `t`'s bound notification was signalled (or had bits pending, `word`) while `t` is blocked in
/// a CallInterruptible, waiting to send or for the reply: the Call is cancelled (`t` leaves the
/// endpoint's queue, or the reply link is cut so that a late reply goes nowhere) and returns
/// `Error::Interrupted` with `word` in `rdi` and an empty message. Returns false, doing nothing,
/// if `t` is not blocked in an interruptible Call.
///
/// # Safety
/// `t` points at a live TCB, and no other reference to it is live; the objects its state refers
/// to are live.
pub unsafe fn interrupt(env: &mut dyn IpcEnv, t: *mut Tcb, word: u64) -> bool {
    // SAFETY: per the contract.
    let tr = unsafe { &mut *t };
    match tr.state {
        ThreadState::BlockedOnSend { interruptible: true, .. } => {
            // SAFETY: `t` is live and blocked on a live endpoint.
            unsafe { leave_endpoint(tr) }
        }
        ThreadState::BlockedOnReply { interruptible: true } => cancel_reply_wait(tr),
        _ => return false,
    }
    debug_assert_eq!(tr.fault, Fault::None, "a fault is never delivered by an interruptible Call");
    tr.regs.rax = Error::Interrupted as u64;
    tr.regs.rdi = word;
    tr.regs.rsi = 0;
    tr.state = ThreadState::Running;
    // SAFETY: `t` is live and now runnable.
    unsafe { env.scheduler().wake(tr) };
    true
}

/// `t`, blocked on a reply, stops waiting for it (suspended, restarted, deleted): whoever held
/// the right to reply loses it, so a late reply can never reach a later Call of `t` or whatever
/// `t`'s memory becomes.
fn cancel_reply_wait(t: &mut Tcb) {
    if t.reply_holder != 0 {
        // SAFETY: the reply link names a live TCB, the replier, so not `t`.
        let holder = unsafe { tcb(t.reply_holder) };
        debug_assert_eq!(holder.caller, t.addr());
        holder.caller = 0;
        holder.caller_can_grant = false;
        t.reply_holder = 0;
    }
}

/// Send (or Call) on `ep` from `sender` with the capability's `badge` and rights;
/// `interruptible` (with `is_call`): a CallInterruptible, which a signal on the sender's bound
/// notification ends while it waits (the caller checked that nothing is pending).
///
/// # Safety
/// `ep` and `sender` point at live objects; `sender` is the current thread.
#[allow(clippy::too_many_arguments)]
pub unsafe fn send(
    env: &mut dyn IpcEnv,
    ep: *mut Endpoint,
    sender: *mut Tcb,
    badge: u64,
    can_grant: bool,
    can_grant_reply: bool,
    blocking: bool,
    is_call: bool,
    interruptible: bool,
) {
    // SAFETY: per the contract.
    let (e, s) = unsafe { (&mut *ep, &mut *sender) };
    match e.state {
        EP_IDLE | EP_SEND => {
            if blocking {
                s.state = ThreadState::BlockedOnSend {
                    ep: ep as u64,
                    badge,
                    can_grant,
                    can_grant_reply,
                    is_call,
                    interruptible,
                };
                e.queue.push_back(s);
                e.state = EP_SEND;
                env.scheduler().current_blocked();
            } else {
                // Nobody listening: a non-blocking send is dropped silently (seL4 semantics).
                s.regs.rax = 0;
            }
        }
        _ => {
            // SAFETY: a waiting receiver is not the sender `s`, which is running.
            let Some(r) = (unsafe { e.queue.pop_front() }) else { return };
            if e.queue.is_empty() {
                e.state = EP_IDLE;
            }
            let ThreadState::BlockedOnReceive { can_grant: reply_can_grant, .. } = r.state else { return };
            let receiver = kptr::<Tcb>(r.addr());
            // SAFETY: two different live TCBs (the receiver was waiting, the sender runs); the
            // references `s` and `r` are made again below.
            unsafe { transfer(env, sender, receiver, badge, can_grant, ep as u64) };
            // SAFETY: as above.
            let (s, r) = unsafe { (&mut *sender, &mut *receiver) };
            if s.fault == Fault::None {
                s.regs.rax = 0;
            }
            // (A faulting thread's `rax` is its own: a live register, or a denied syscall's result.)
            r.state = ThreadState::Running;
            if is_call || s.fault != Fault::None {
                if can_grant || can_grant_reply {
                    setup_reply(s, r, reply_can_grant, interruptible);
                } else {
                    s.state = ThreadState::Inactive;
                }
                env.scheduler().current_blocked();
            }
            // SAFETY: `r` is a live TCB that just became runnable.
            unsafe { env.scheduler().wake(r) };
        }
    }
}

/// Receive on `ep` (Recv, NBRecv, or the receive half of ReplyRecv); `can_grant` is the grant
/// right of the receiver's capability (whether its replies may carry capabilities). A thread
/// that receives gives up any reply right it still holds (seL4 semantics).
///
/// # Safety
/// `ep` and `receiver` point at live objects; `receiver` is the current thread.
pub unsafe fn receive(
    env: &mut dyn IpcEnv,
    ep: *mut Endpoint,
    receiver: *mut Tcb,
    blocking: bool,
    receiver_can_grant: bool,
) {
    // SAFETY: per the contract.
    let (e, r) = unsafe { (&mut *ep, &mut *receiver) };
    drop_reply_right(r);
    // A pending signal on the bound notification is received first.
    if r.bound_notification != 0 {
        let n = r.bound_notification as *mut super::notification::Notification;
        // SAFETY: a bound notification is live while bound (unbound before it is destroyed).
        if unsafe { super::notification::take_pending(n, r) } {
            return;
        }
    }
    match e.state {
        EP_IDLE | EP_RECV => {
            if blocking {
                r.state = ThreadState::BlockedOnReceive { ep: ep as u64, can_grant: receiver_can_grant };
                e.queue.push_back(r);
                e.state = EP_RECV;
                env.scheduler().current_blocked();
            } else {
                // Nothing to receive: return at once with badge 0 and an empty message.
                r.regs.rdi = 0;
                r.regs.rsi = 0;
                r.regs.rax = 0;
            }
        }
        _ => {
            // SAFETY: a waiting sender is not the receiver `r`, which is running.
            let Some(s) = (unsafe { e.queue.pop_front() }) else { return };
            if e.queue.is_empty() {
                e.state = EP_IDLE;
            }
            let ThreadState::BlockedOnSend { badge, can_grant, can_grant_reply, is_call, interruptible, .. } = s.state
            else {
                return;
            };
            let sender = kptr::<Tcb>(s.addr());
            // SAFETY: two different live TCBs (the sender was waiting, the receiver runs); the
            // references `s` and `r` are made again below.
            unsafe { transfer(env, sender, receiver, badge, can_grant, ep as u64) };
            // SAFETY: as above.
            let (s, r) = unsafe { (&mut *sender, &mut *receiver) };
            if is_call || s.fault != Fault::None {
                if can_grant || can_grant_reply {
                    setup_reply(s, r, receiver_can_grant, interruptible);
                } else {
                    s.state = ThreadState::Inactive;
                }
            } else {
                s.state = ThreadState::Running;
                s.regs.rax = 0;
                // SAFETY: `s` is live and now runnable.
                unsafe { env.scheduler().wake(s) };
            }
        }
    }
}

/// What a fault handler's reply does to the faulted thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultReply {
    /// Label 0: resume the thread (with registers the reply set, for the faults that allow it).
    Resume,
    /// Any other label: leave the thread suspended.
    Suspend,
}

/// Reply from `replier` to the thread that Called it (Reply, or the reply half of ReplyRecv).
/// Does nothing if there is no one to reply to (seL4 semantics).
///
/// # Safety
/// `replier` points at a live TCB.
pub unsafe fn reply(env: &mut dyn IpcEnv, replier: *mut Tcb) {
    // SAFETY: per the contract.
    let r = unsafe { &mut *replier };
    if r.caller == 0 {
        return;
    }
    let (caller, can_grant) = (r.caller, r.caller_can_grant);
    drop_reply_right(r);
    // SAFETY: the caller was linked to `r`, so it is a live TCB (the link is cut before either
    // side is destroyed), blocked on its reply, so not the running `r`: the two references name
    // different TCBs.
    let c = unsafe { tcb(caller) };
    // The link is cut whenever the caller stops waiting, so it is waiting now.
    debug_assert!(matches!(c.state, ThreadState::BlockedOnReply { .. }));
    if c.fault != Fault::None {
        // The handler's reply decides the faulted thread's fate.
        let info = MessageInfo(r.regs.rsi);
        let action = if info.label() == 0 { FaultReply::Resume } else { FaultReply::Suspend };
        match (c.fault, action) {
            (Fault::UnknownSyscall { .. }, FaultReply::Resume) => {
                // The handler emulated the syscall: MR0 = result (rax), MR1 = new rip if non-zero.
                if info.length() >= 1 {
                    c.regs.rax = r.regs.mr(0);
                }
                if info.length() >= 2 && r.regs.mr(1) != 0 {
                    // A RIP outside user memory becomes 0 (seL4's `sanitiseRegister`): the
                    // thread then faults in ring 3 instead of the kernel faulting on its return.
                    let rip = r.regs.mr(1);
                    c.regs.rip = if rip < ozone_abi::USER_TOP { rip } else { 0 };
                    c.regs.vector = KERNEL_WRITTEN;
                }
            }
            // The denied syscall returns, having done nothing.
            (Fault::Denied { .. }, FaultReply::Resume) => c.regs.rax = Error::Denied as u64,
            _ => {}
        }
        c.fault = Fault::None;
        c.state = match action {
            FaultReply::Resume => ThreadState::Running,
            FaultReply::Suspend => ThreadState::Inactive,
        };
        if action == FaultReply::Suspend {
            // Left suspended, as by TCB Suspend: a Call it had received and not answered gets
            // `ReplyLost`.
            // SAFETY: the faulted thread is live; the reference `c` is not used again before
            // the fresh one below.
            unsafe { lose_reply_right(env, kptr::<Tcb>(caller)) };
        }
    } else {
        // SAFETY: the replier and its caller are different live TCBs; `c` is made again below
        // (and `r` is not used again).
        unsafe { transfer(env, replier, kptr::<Tcb>(caller), 0, can_grant, 0) };
        // SAFETY: as above.
        unsafe { tcb(caller) }.state = ThreadState::Running;
    }
    // SAFETY: the caller is live; a fresh reference after the transfer (the one above is not
    // used again).
    let c = unsafe { tcb(caller) };
    if c.state.is_runnable() {
        // SAFETY: `c` is live and now runnable.
        unsafe { env.scheduler().wake(c) };
    }
}

/// Take `t` out of whatever IPC it is blocked in (Suspend, delete): it becomes inactive, and the
/// syscall it was blocked in is to be executed again if it is ever resumed (its registers are
/// rewound; seL4's `Restart`). Whoever could reply to it no longer can.
///
/// # Safety
/// `t` points at a live TCB; the objects its state refers to are live.
pub unsafe fn cancel_ipc(t: *mut Tcb) {
    // SAFETY: per the contract.
    let t = unsafe { &mut *t };
    match t.state {
        ThreadState::BlockedOnSend { .. } | ThreadState::BlockedOnReceive { .. } => {
            // SAFETY: per the contract.
            unsafe { leave_endpoint(t) }
        }
        ThreadState::BlockedOnNotification { ntfn } => {
            // SAFETY: a thread blocked on a notification keeps it alive (cancel_all runs first).
            unsafe { super::notification::cancel_wait(ntfn as *mut super::notification::Notification, t) };
        }
        ThreadState::BlockedOnReply { .. } => cancel_reply_wait(t),
        _ => return,
    }
    t.regs.rewind_syscall();
    t.state = ThreadState::Inactive;
    t.cancel_fault();
}

/// Remove `t`, blocked sending or receiving, from its endpoint's queue (its state is the
/// caller's to set).
///
/// # Safety
/// `t` is live and blocked on a live endpoint.
pub(crate) unsafe fn leave_endpoint(t: &mut Tcb) {
    let (ThreadState::BlockedOnSend { ep, .. } | ThreadState::BlockedOnReceive { ep, .. }) = t.state else { return };
    // SAFETY: a thread blocked on an endpoint keeps it alive (cancel_all runs first).
    let e = unsafe { &mut *kptr::<Endpoint>(ep) };
    e.queue.remove(t);
    if e.queue.is_empty() {
        e.state = EP_IDLE;
    }
}

/// The endpoint is going away: every waiting thread is restarted: it executes its syscall again,
/// which then fails on the missing capability (or, for a fault being delivered, takes the
/// fault again).
///
/// # Safety
/// `ep` points at a live endpoint.
pub unsafe fn cancel_all(env: &mut dyn IpcEnv, ep: *mut Endpoint) {
    // SAFETY: per the contract.
    let e = unsafe { &mut *ep };
    // SAFETY: one waiting thread at a time; no other reference to it is live.
    while let Some(t) = unsafe { e.queue.pop_front() } {
        t.regs.rewind_syscall();
        // A fault being delivered is taken again when the thread restarts: none is pending now.
        t.cancel_fault();
        t.state = ThreadState::Restart;
        // SAFETY: `t` is live.
        unsafe { env.scheduler().wake(t) };
    }
    e.state = EP_IDLE;
}

/// Restart every thread waiting to send on `ep` with `badge` (CNode CancelBadgedSends).
///
/// # Safety
/// `ep` points at a live endpoint.
pub unsafe fn cancel_badged_sends(env: &mut dyn IpcEnv, ep: *mut Endpoint, badge: u64) {
    // SAFETY: per the contract.
    let e = unsafe { &mut *ep };
    if e.state != EP_SEND {
        return;
    }
    let mut next = e.queue.head;
    while next != 0 {
        // SAFETY: a queue holds live TCBs; one at a time.
        let t = unsafe { tcb(next) };
        next = t.ep_next;
        if let ThreadState::BlockedOnSend { badge: b, .. } = t.state
            && b == badge
        {
            e.queue.remove(t);
            t.regs.rewind_syscall();
            t.cancel_fault();
            t.state = ThreadState::Restart;
            // SAFETY: `t` is live.
            unsafe { env.scheduler().wake(t) };
        }
    }
    if e.queue.is_empty() {
        e.state = EP_IDLE;
    }
}
