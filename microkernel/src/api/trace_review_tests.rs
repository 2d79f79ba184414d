//! Per-thread event traces, reviewed: a traced thread deleting its own TCB (at once, or with
//! the deletion preempted right after the TCB became a zombie) and the memory reused after it;
//! the ring's only user capability deleted; one frame given as the ring of two threads.

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::trace::{ObjectKind, Record};
use ozone_abi::{MessageInfo, Syscall, profile};

use super::handle_syscall;
use super::tests::{Fx, SLOT_TELEMETRY, tcb};
use super::trace_tests::{bytes, frame, trace};
use crate::object::Cap;
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY, SLOT_U_MAIN};
use crate::object::tcb::{TCB_TRACE, Tcb};

const DEPTH: u64 = ROOT_RADIX as u64;

/// One syscall by `t`, not restarted (a thread that deleted its own TCB never runs again).
fn once(fx: &mut Fx, t: *mut Tcb, s: Syscall, cptr: u64, label: u64, mrs: &[u64]) {
    {
        let tr = tcb(t);
        tr.regs.rip = super::tests::RIP;
        tr.regs.vector = crate::object::tcb::SYSCALL_ENTRY;
        tr.regs.rdi = cptr;
        tr.regs.rsi = MessageInfo::new(label, 0, 0, mrs.len() as u64).0;
        for (i, m) in mrs.iter().enumerate() {
            tr.regs.set_mr(i, *m);
        }
    }
    fx.make_current(t);
    handle_syscall(&mut fx.k, s as i64);
}

#[test]
fn a_traced_thread_that_deletes_its_own_tcb() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (fs, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, fs), 0);
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    let before = bytes(ring);
    once(&mut fx, t, Syscall::Call, SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ts, DEPTH]);
    fx.check("self delete");
    assert!(fx.w.slot(ts).cap().is_null());
    assert_eq!(bytes(ring), before, "the ring is not written by the deleting syscall");
    // SAFETY: the TCB's memory is still the world's; read only.
    let gone = unsafe { &*t };
    assert!(!gone.trace.is_on() && gone.slots[TCB_TRACE].cap.is_null());
}

#[test]
fn a_traced_thread_whose_revoke_of_its_own_untyped_is_preempted_at_its_tcb() {
    let mut fx = Fx::new();
    // An untyped of its own: the thread first, then 63 endpoints in a CNode of their own.
    let u2 = fx.retype_from(SLOT_U_MAIN, ObjectType::Untyped, 16);
    let cn = fx.retype_from(SLOT_U_MAIN, ObjectType::CNode, 7);
    let ts = fx.retype_from(u2, ObjectType::Tcb, 0);
    let Cap::Tcb { ptr } = fx.w.slot(ts).cap() else { panic!() };
    let t = ptr as *mut Tcb;
    fx.equip(t);
    let r = fx.invoke(u2, inv::UNTYPED_RETYPE, &[ObjectType::Endpoint as u64, 0, cn, DEPTH, 0, 63], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0);
    let (fs, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, fs), 0);
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    once(&mut fx, t, Syscall::Call, SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[u2, DEPTH]);
    fx.check("preempted self revoke");
    // The revoke stopped at the thread's own TCB, now a zombie: the thread never runs again, and
    // its trace is still on only while the TCB's copy of the frame is there (the TCB's memory
    // is kept by the zombie, the frame's by the copy).
    assert!(fx.w.slot(ts).is_zombie(), "the revoke stopped at the thread's TCB");
    // SAFETY: the TCB's memory is still the world's (the zombie keeps it); read only.
    let z = unsafe { &*t };
    assert_eq!(z.trace.is_on(), matches!(z.slots[TCB_TRACE].cap, Cap::Frame { ptr, .. } if ptr == ring));
    // Someone else finishes the revoke; then the memory is reused.
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[u2, DEPTH], &[]).rax, 0);
    // SAFETY: as above (the untyped was not retyped yet).
    let z = unsafe { &*t };
    assert!(!z.trace.is_on());
    let after = bytes(ring);
    let s = fx.free_slot();
    let r = fx.invoke(u2, inv::UNTYPED_RETYPE, &[ObjectType::Frame4K as u64, 0, 0, 0, s, 1], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0);
    assert_eq!(bytes(ring), after);
}

/// Deleting the capability the ring was made from (and every other user copy) does not stop the
/// trace: the TCB's own copy keeps the frame alive, and the kernel goes on writing it; only a
/// revoke, TraceOff, a new Trace or the thread's deletion stops it. The memory is not reused
/// meanwhile (its untyped has a child: the TCB's copy). (The ABI's words for Trace said that
/// deleting the original stops the trace.)
#[test]
fn deleting_the_rings_only_user_capability_leaves_the_trace_running_and_the_memory_pinned() {
    let mut fx = Fx::new();
    let u = fx.retype_from(SLOT_U_MAIN, ObjectType::Untyped, 12);
    let (ts, t) = fx.thread();
    let fs = fx.retype_from(u, ObjectType::Frame4K, 0);
    let Cap::Frame { ptr: ring, .. } = fx.w.slot(fs).cap() else { panic!("frame") };
    assert_eq!(trace(&mut fx, ts, fs), 0);
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[fs, DEPTH], &[]).rax, 0);
    let before = bytes(ring);
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    assert!(tcb(t).trace.is_on(), "still traced");
    assert_ne!(bytes(ring), before, "still written");
    // The untyped cannot be reset under it: a new frame does not fit (the ring fills it).
    let s = fx.free_slot();
    let r = fx.invoke(u, inv::UNTYPED_RETYPE, &[ObjectType::Frame4K as u64, 0, 0, 0, s, 1], &[SLOT_ROOT_COPY]);
    assert_ne!(r.rax, 0, "the ring's memory is not handed out again");
    // TraceOff stops it and gives the memory back.
    assert_eq!(fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_OFF, &[], &[ts]).rax, 0);
    assert!(!tcb(t).trace.is_on());
    let r = fx.invoke(u, inv::UNTYPED_RETYPE, &[ObjectType::Frame4K as u64, 0, 0, 0, s, 1], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0);
}

/// One frame given as the ring of two threads (a mistake of the tracer's): each trace keeps its
/// own cursor, so the second thread's records overwrite the first's unacknowledged ones, which
/// the kernel promises never to do (a full ring drops instead). The kernel can tell: every
/// capability to the frame is adjacent in the derivation list, and the trace copy is flagged.
#[test]
fn a_frame_already_holding_a_ring_does_not_take_a_second_threads_records_over_unread_ones() {
    let mut fx = Fx::new();
    let (as_, a) = fx.thread();
    let (bs, b) = fx.thread();
    let (fs, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, as_, fs), 0);
    fx.sys(a, Syscall::Yield, 0, 0, &[], &[]);
    let first = Record::from_bytes(&bytes(ring)[..16]).expect("a's record");
    assert_eq!((first.what, first.object), (profile::YIELD as u8, ObjectKind::None));
    // Refused, or accepted: either way a's unread record must stay as it is.
    let _ = trace(&mut fx, bs, fs);
    fx.sys(b, Syscall::Call, 60, 99, &[], &[]);
    let now = Record::from_bytes(&bytes(ring)[..16]).expect("a record");
    assert_eq!(now, first, "a's unacknowledged record 0 was overwritten by b's {now:?}");
}
