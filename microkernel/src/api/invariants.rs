//! The kernel-state invariant checker: seL4's invariants over the syscall layer's state, as
//! executable checks (our substitute for its proofs), compiled into the host tests, the fuzzing
//! harness and debug kernels (`crate::checker` in the guest), never into a release kernel.
//!
//! Given every capability in the system (a scan of the derivation lists and CNodes) and the
//! kernel state, it checks that:
//!
//! * every pointer the kernel keeps names a live object of the right type that the
//!   corresponding state still holds, with symmetric back-links: a thread's reply link
//!   (`caller` ↔ `reply_holder`, the caller blocked on the reply), its bound notification
//!   (`bound_notification` ↔ `bound_tcb`), the endpoint or notification it is blocked on (and it
//!   is in that object's queue), the interrupt lines' notifications, the FPU owner, the current
//!   thread;
//! * the interrupt lines: a handler capability exists for exactly the lines marked issued, each
//!   a line the machine has (an I/O APIC input, or an MSI line it can deliver, below `MAX_IRQS`),
//!   and only an issued line signals a notification;
//! * a thread's slots hold what they may: a CNode or nothing as its CSpace, a PML4 whose ASID
//!   still stands for it or nothing as its VSpace, a writable 4 KiB frame of normal memory or
//!   nothing as its IPC buffer, a live endpoint with the write and (grant or grant-reply)
//!   rights or nothing as its fault handler;
//! * every wait queue is well formed (symmetric links, ends where its tail says, no cycles), its
//!   object's state agrees with it (idle ⇔ empty; all senders or all receivers), and every
//!   thread in it is blocked on that very object;
//! * the ready queues hold exactly the runnable, queued threads, at their own priority (see
//!   `Scheduler::check_queues`), and every runnable thread but the current one is queued; a
//!   thread being delivered a fault is blocked in that delivery.
//!
//! The capability-level invariants (derivation tree, object overlap, untyped watermarks) are
//! the harness's (`object::harness::World::check_invariants`); the two run together in the host
//! tests. In the guest, a debug kernel booted with `ozone.check=invariants` runs [`check`] over
//! [`reachable`] capabilities after every kernel entry (see `kmain`); release kernels have none of
//! this.

use crate::object::kptr::kptr;
use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::Kernel;
use crate::object::endpoint::{EP_IDLE, EP_RECV, EP_SEND, Endpoint, WaitQueue};
use crate::object::kmem::{SlotRef, SlotSpan};
use crate::object::notification::{NTFN_ACTIVE, NTFN_IDLE, NTFN_WAITING, Notification};
use crate::object::tcb::{
    Fault, TCB_CSPACE, TCB_FAULT_HANDLER, TCB_IPC_BUFFER, TCB_TRACE, TCB_VSPACE, Tcb, ThreadState, is_fault_handler,
};
use crate::object::trace::Trace;
use crate::object::{Cap, FrameSize, PagingLevel, Rights};

/// The live objects the capabilities name.
struct Objects {
    tcbs: BTreeSet<u64>,
    endpoints: BTreeSet<u64>,
    notifications: BTreeSet<u64>,
}

fn t<'a>(addr: u64) -> &'a Tcb {
    // SAFETY: only called on addresses in `Objects::tcbs` (live TCBs), read only.
    unsafe { &*kptr::<Tcb>(addr) }
}

/// Walk a wait queue: its threads in order, checking the links.
fn walk(q: &WaitQueue, objs: &Objects, what: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    let (mut prev, mut at) = (0u64, q.head);
    while at != 0 {
        if !objs.tcbs.contains(&at) {
            return Err(format!("{what}: queue holds {at:#x}, which is no live TCB"));
        }
        if out.len() > objs.tcbs.len() {
            return Err(format!("{what}: queue does not end"));
        }
        if t(at).ep_prev != prev {
            return Err(format!("{what}: {at:#x}.prev is {:#x}, not {prev:#x}", t(at).ep_prev));
        }
        out.push(at);
        (prev, at) = (at, t(at).ep_next);
    }
    if q.tail != prev {
        return Err(format!("{what}: tail {:#x}, last {prev:#x}", q.tail));
    }
    Ok(out)
}

/// Check the kernel state against every capability in `caps`; `extra_tcbs` are threads that no
/// capability names (host tests' driver threads).
pub fn check(k: &Kernel, caps: impl IntoIterator<Item = Cap>, extra_tcbs: &[u64]) -> Result<(), String> {
    let mut objs = Objects { tcbs: BTreeSet::new(), endpoints: BTreeSet::new(), notifications: BTreeSet::new() };
    objs.tcbs.extend(extra_tcbs);
    let mut handlers = [false; super::MAX_IRQS];
    for cap in caps {
        match cap {
            Cap::IrqHandler { irq } => {
                let Some(h) = handlers.get_mut(irq as usize) else {
                    return Err(format!("a handler capability names line {irq}, past MAX_IRQS"));
                };
                let exists = if crate::interrupts::is_msi(u64::from(irq)) {
                    k.platform.msi_message(irq).is_some()
                } else {
                    k.platform.irq_line(irq)
                };
                if !exists {
                    return Err(format!("a handler capability names line {irq}, which the machine lacks"));
                }
                *h = true;
            }
            Cap::Tcb { ptr } => {
                objs.tcbs.insert(ptr);
            }
            Cap::Endpoint { ptr, .. } => {
                objs.endpoints.insert(ptr);
            }
            Cap::Notification { ptr, .. } => {
                objs.notifications.insert(ptr);
            }
            _ => {}
        }
    }

    // Wait queues: who is in which.
    let mut waiting_on = alloc::collections::BTreeMap::new();
    for &e in &objs.endpoints {
        // SAFETY: a capability names this live endpoint; read only.
        let ep = unsafe { &*kptr::<Endpoint>(e) };
        let what = format!("endpoint {e:#x}");
        let q = walk(&ep.queue, &objs, &what)?;
        match (ep.state, q.is_empty()) {
            (EP_IDLE, true) | (EP_SEND | EP_RECV, false) => {}
            (s, empty) => return Err(format!("{what}: state {s} with an empty queue: {empty}")),
        }
        for &w in &q {
            let ok = match t(w).state {
                ThreadState::BlockedOnSend { ep: x, .. } => ep.state == EP_SEND && x == e,
                ThreadState::BlockedOnReceive { ep: x, .. } => ep.state == EP_RECV && x == e,
                _ => false,
            };
            if !ok {
                return Err(format!("{what} (state {}): queued thread {w:#x} is {:?}", ep.state, t(w).state));
            }
            if waiting_on.insert(w, e).is_some() {
                return Err(format!("thread {w:#x} is in two wait queues"));
            }
        }
    }
    for &n in &objs.notifications {
        // SAFETY: a capability names this live notification; read only.
        let ntfn = unsafe { &*kptr::<Notification>(n) };
        let what = format!("notification {n:#x}");
        let q = walk(&ntfn.queue, &objs, &what)?;
        match (ntfn.state, q.is_empty()) {
            (NTFN_WAITING, false) | (NTFN_IDLE | NTFN_ACTIVE, true) => {}
            (s, empty) => return Err(format!("{what}: state {s} with an empty queue: {empty}")),
        }
        for &w in &q {
            if t(w).state != (ThreadState::BlockedOnNotification { ntfn: n }) {
                return Err(format!("{what}: queued thread {w:#x} is {:?}", t(w).state));
            }
            if waiting_on.insert(w, n).is_some() {
                return Err(format!("thread {w:#x} is in two wait queues"));
            }
        }
        if ntfn.bound_tcb != 0 && (!objs.tcbs.contains(&ntfn.bound_tcb) || t(ntfn.bound_tcb).bound_notification != n) {
            return Err(format!("{what}: bound to {:#x}, which is not bound back", ntfn.bound_tcb));
        }
    }

    let ready: BTreeSet<u64> = k.sched.check_queues()?.into_iter().collect();
    for &a in &objs.tcbs {
        let th = t(a);
        let what = format!("thread {a:#x} ({:?})", th.state);
        // Blocked on an object: the object is live and holds it in its queue.
        match th.state {
            ThreadState::BlockedOnSend { ep, .. } | ThreadState::BlockedOnReceive { ep, .. }
                if waiting_on.get(&a) != Some(&ep) =>
            {
                return Err(format!("{what}: not in the queue of its endpoint"));
            }
            ThreadState::BlockedOnNotification { ntfn } if waiting_on.get(&a) != Some(&ntfn) => {
                return Err(format!("{what}: not in the queue of its notification"));
            }
            _ => {}
        }
        // The reply link, both ways.
        if th.caller != 0 {
            let c = th.caller;
            if !objs.tcbs.contains(&c)
                || t(c).reply_holder != a
                || !matches!(t(c).state, ThreadState::BlockedOnReply { .. })
            {
                return Err(format!("{what}: may reply to {c:#x}, which is not waiting for it"));
            }
        }
        if th.reply_holder != 0 {
            let h = th.reply_holder;
            if !matches!(th.state, ThreadState::BlockedOnReply { .. }) || !objs.tcbs.contains(&h) || t(h).caller != a {
                return Err(format!("{what}: {h:#x} holds its reply right, but not as the link says"));
            }
        }
        if th.bound_notification != 0
            && (!objs.notifications.contains(&th.bound_notification)
                // SAFETY: checked live just above.
                || unsafe { (*kptr::<Notification>(th.bound_notification)).bound_tcb } != a)
        {
            return Err(format!("{what}: bound notification {:#x} is not bound back", th.bound_notification));
        }
        // A CallInterruptible ends as soon as its bound notification holds bits: a thread never
        // waits in one while they are pending.
        if th.bound_notification != 0
            && matches!(
                th.state,
                ThreadState::BlockedOnSend { interruptible: true, .. } | ThreadState::BlockedOnReply { interruptible: true }
            )
            // SAFETY: checked live just above.
            && unsafe { (*kptr::<Notification>(th.bound_notification)).state } == NTFN_ACTIVE
        {
            return Err(format!("{what}: waits in a CallInterruptible while its bound notification has bits pending"));
        }
        // A fault is only being delivered: waiting to be received, or for the handler's reply.
        if th.fault != Fault::None
            && !matches!(
                th.state,
                ThreadState::BlockedOnSend { is_call: true, interruptible: false, .. }
                    | ThreadState::BlockedOnReply { interruptible: false }
            )
        {
            return Err(format!("{what}: holds fault {:?} outside its delivery", th.fault));
        }
        // Only a Call is interruptible (a CallInterruptible; a fault's delivery never is: the
        // check above).
        if matches!(th.state, ThreadState::BlockedOnSend { is_call: false, interruptible: true, .. }) {
            return Err(format!("{what}: an interruptible Send"));
        }
        // Scheduling: queued exactly when in a ready queue, and every runnable thread is either
        // queued or the current one (a runnable thread in no queue would never run again).
        if th.queued != ready.contains(&a) {
            return Err(format!("{what}: queued flag {} disagrees with the ready queues", th.queued));
        }
        if th.state.is_runnable() && !th.queued && a != k.sched.current() as u64 {
            return Err(format!("{what}: runnable, but neither current nor in a ready queue"));
        }
        // Its slots hold only what they may.
        match th.slots[TCB_CSPACE].cap {
            Cap::Null | Cap::CNode { .. } => {}
            c => return Err(format!("{what}: CSpace slot holds {c:?}")),
        }
        match th.slots[TCB_VSPACE].cap {
            Cap::Null => {}
            Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: Some(m) } if k.asids.lookup(m.asid) == Some(ptr) => {}
            c => return Err(format!("{what}: VSpace slot holds {c:?}")),
        }
        match th.slots[TCB_IPC_BUFFER].cap {
            Cap::Null => {}
            Cap::Frame { size: FrameSize::Small, device: false, rights, .. } if rights.contains(Rights::WRITE) => {}
            c => return Err(format!("{what}: IPC-buffer slot holds {c:?}")),
        }
        match th.slots[TCB_FAULT_HANDLER].cap {
            Cap::Null => {}
            c @ Cap::Endpoint { ptr, .. } if is_fault_handler(&c) && objs.endpoints.contains(&ptr) => {}
            c => return Err(format!("{what}: fault-handler slot holds {c:?}")),
        }
        // The trace: on exactly when the trace slot holds a flagged writable 4 KiB frame of
        // normal memory, into that frame, with the profile sending IPC to the traced fastpaths.
        let ring = &th.slots[TCB_TRACE];
        match ring.cap {
            Cap::Null if th.trace == Trace::OFF && !th.profile.traced() && !ring.mdb.traces() => {}
            Cap::Frame { ptr, size: FrameSize::Small, device: false, rights, .. }
                if rights.contains(Rights::WRITE)
                    && ring.mdb.traces()
                    && th.trace.frame() == Some(ptr)
                    && th.profile.traced() => {}
            c => {
                return Err(format!(
                    "{what}: trace slot holds {c:?} (flagged {}, derivation node {:x?}), trace {:?}, profile traced {}",
                    ring.mdb.traces(),
                    ring.mdb,
                    th.trace,
                    th.profile.traced()
                ));
            }
        }
        th.trace.check().map_err(|e| format!("{what}: trace: {e}"))?;
        if th.syscall_handler != crate::object::tcb::syscall_handler(th.profile.traced()) {
            return Err(format!(
                "{what}: its syscalls enter the {} path, its profile says {}",
                if th.profile.traced() { "untraced" } else { "traced" },
                if th.profile.traced() { "traced" } else { "untraced" }
            ));
        }
    }
    for (irq, &n) in k.irq_notification.iter().enumerate() {
        if n != 0 && !objs.notifications.contains(&n) {
            return Err(format!("interrupt line {irq} signals {n:#x}, which is no live notification"));
        }
        if n != 0 && !k.irq_issued[irq] {
            return Err(format!("interrupt line {irq} signals {n:#x} with no handler issued"));
        }
        if k.irq_issued[irq] != handlers[irq] {
            return Err(format!(
                "interrupt line {irq}: marked issued {}, handler capabilities {}",
                k.irq_issued[irq], handlers[irq]
            ));
        }
    }
    if k.fpu_owner != 0 && !objs.tcbs.contains(&k.fpu_owner) {
        return Err(format!("the FPU owner {:#x} is no live TCB", k.fpu_owner));
    }
    let cur = k.sched.current() as u64;
    if cur != 0 && !objs.tcbs.contains(&cur) {
        return Err(format!("the current thread {cur:#x} is no live TCB"));
    }
    Ok(())
}

/// Every occupied slot reachable from `roots`: through the derivation lists (each capability is
/// linked to its neighbours) and the slots of every CNode and TCB a capability names. Also
/// checks that an empty slot met on the way has no derivation links, and that the links are
/// symmetric.
pub fn reachable(roots: impl IntoIterator<Item = SlotRef>) -> Result<Vec<SlotRef>, String> {
    let mut seen = BTreeSet::new();
    let mut holders = BTreeSet::new();
    let mut trace_slots = BTreeSet::new();
    let mut flagged = Vec::new();
    let mut out = Vec::new();
    let mut work: Vec<SlotRef> = roots.into_iter().collect();
    while let Some(slot) = work.pop() {
        let cte = slot.read();
        let links = [cte.mdb.prev(), cte.mdb.next()];
        if cte.cap.is_null() {
            if links != [0, 0] {
                return Err(format!("empty slot {:#x} has derivation links {links:#x?}", slot.addr()));
            }
            continue;
        }
        if !seen.insert(slot.addr()) {
            continue;
        }
        out.push(slot);
        if cte.mdb.traces() {
            flagged.push(slot.addr());
        }
        // Only a slot-holding object's last capability becomes a zombie (`delete`): zombie
        // bits on any other are a corrupted derivation node.
        if cte.mdb.zombie().is_some() && !matches!(cte.cap, Cap::CNode { .. } | Cap::Tcb { .. }) {
            return Err(format!("slot {:#x}: zombie bits on {:?}, which holds no slots", slot.addr(), cte.cap));
        }
        if let Some(p) = SlotRef::from_link(links[0])
            && p.read().mdb.next() != slot.addr()
        {
            return Err(format!("slot {:#x}: its previous slot does not link back", slot.addr()));
        }
        work.extend(links.iter().filter_map(|&l| SlotRef::from_link(l)));
        let span = match cte.cap {
            Cap::Tcb { ptr } => {
                // SAFETY: a TCB capability names a live TCB.
                let span = unsafe { Tcb::slots_of(kptr::<Tcb>(ptr)) };
                trace_slots.extend(span.slot(TCB_TRACE as u64).map(|s| s.addr()));
                Some(span)
            }
            c => SlotSpan::of_cnode(&c),
        };
        if let Some(span) = span
            && holders.insert(span.base())
        {
            work.extend((0..span.count()).filter_map(|i| span.slot(i)));
        }
    }
    // Only a TCB's trace slot may carry the trace flag (emptying a flagged slot writes into the
    // TCB around it).
    if let Some(a) = flagged.iter().find(|a| !trace_slots.contains(a)) {
        return Err(format!("slot {a:#x} is flagged as a trace slot but is no TCB's"));
    }
    Ok(out)
}
