//! The syscall entry's dispatch on each TCB's `syscall_handler` (a traced thread's syscalls enter
//! the traced copy of the syscall path, `entry::syscall::<true>`), attacked. The host has no
//! entry stub, so [`enter`] models it as the target runs it: the stub calls the handler the
//! current TCB holds (only the two known values may ever be there: anything else would be a
//! call to a wild pointer), and the copy it names runs `entry::syscall_with::<TRACED>` — the
//! traced or untraced fastpaths, the uncontended Yield (untraced copy only), the general path.
//! Each test asserts the secure behaviour: every syscall of a traced thread leaves exactly one
//! record (or one counted drop) in its ring, an untraced thread's none, and the handler always
//! agrees with the trace (the invariant checker runs after every syscall).

use std::vec::Vec;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::trace::{Kind, ObjectKind, RING_RECORDS, Record, syscall_word};
use ozone_abi::{MessageInfo, Syscall, profile};

use super::fastpath;
use super::handle_syscall;
use super::tests::{Fx, RIP, SLOT_TELEMETRY, tcb};
use super::trace_tests::{bytes, frame, trace};
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY, SLOT_U_MAIN};
use crate::object::tcb::{
    Registers, SYSCALL_ENTRY, SYSCALL_HANDLER_FROM_REGS, TCB_TRACE, TCB_VSPACE, Tcb, ThreadState, syscall_handler,
};
use crate::object::{Cap, mdb};

const DEPTH: u64 = ROOT_RADIX as u64;

/// How the modelled syscall left the kernel (`entry::SyscallExit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    Switched,
    Yielded,
    Scheduled,
}

/// The copy of the syscall path the entry stub calls for `t`: the traced one or not. Any other
/// handler value (0, stale, a third address) would be an indirect call to a wild pointer.
fn copy_for(t: *mut Tcb) -> bool {
    let h = tcb(t).syscall_handler;
    assert!(
        h == syscall_handler(false) || h == syscall_handler(true),
        "the syscall entry would call {h:#x}, which is neither copy of the syscall path"
    );
    h == syscall_handler(true)
}

/// `entry::syscall_with::<TRACED>` as the target runs it (the current thread made syscall
/// `number`).
fn syscall_with(fx: &mut Fx, traced: bool, number: i64) -> Exit {
    let t = fx.k.sched.current();
    let switched = if number == Syscall::Call as i64 {
        if traced { fastpath::traced_call(&mut fx.k, tcb(t)) } else { fastpath::call(&mut fx.k, tcb(t)) }
    } else {
        number == Syscall::ReplyRecv as i64
            && if traced {
                fastpath::traced_reply_recv(&mut fx.k, tcb(t))
            } else {
                fastpath::reply_recv(&mut fx.k, tcb(t))
            }
    };
    if switched {
        return Exit::Switched;
    }
    if !traced
        && number == Syscall::Yield as i64
        && tcb(t).profile.fast_allows(profile::mask(profile::YIELD))
        && fx.k.sched.highest_ready().is_none_or(|p| p < tcb(t).priority)
    {
        tcb(t).regs.rax = 0;
        return Exit::Yielded;
    }
    handle_syscall(&mut fx.k, number);
    Exit::Scheduled
}

/// Put syscall `s`'s registers in `t` (as the fixture's `sys` does).
fn load(t: *mut Tcb, s: Syscall, cptr: u64, label: u64, mrs: &[u64], caps: &[u64]) {
    let tr = tcb(t);
    tr.regs.rip = RIP;
    tr.regs.vector = SYSCALL_ENTRY;
    tr.regs.rdx = s as i64 as u64;
    tr.regs.rdi = cptr;
    tr.regs.rsi = MessageInfo::new(label, 0, caps.len() as u64, mrs.len() as u64).0;
    for (i, m) in mrs.iter().enumerate() {
        tr.regs.set_mr(i, *m);
    }
    for (i, c) in caps.iter().enumerate() {
        tr.set_ipc_cap_word(i, *c);
    }
}

/// Syscall `s` by `t` through the modelled entry: the copy its TCB names runs; a preempted
/// syscall is made again (through the entry again, so the handler is read again); the invariant
/// checker runs after it. Returns how the last attempt left.
fn enter(fx: &mut Fx, t: *mut Tcb, s: Syscall, cptr: u64, label: u64, mrs: &[u64], caps: &[u64]) -> Exit {
    load(t, s, cptr, label, mrs, caps);
    let exit = loop {
        let exit = enter_raw(fx, t, s, copy_for(t));
        let tr = tcb(t);
        if exit != Exit::Scheduled || tr.regs.rip != RIP - 2 || tr.regs.vector != SYSCALL_ENTRY {
            break exit;
        }
        tr.regs.rip = RIP;
    };
    fx.check(&format!("{s:?} on {cptr} label {label} by {t:p} through the entry"));
    exit
}

/// One attempt of the syscall whose registers are loaded in `t`, in the copy `traced` (no
/// restart, no checker).
fn enter_raw(fx: &mut Fx, t: *mut Tcb, s: Syscall, traced: bool) -> Exit {
    fx.make_current(t);
    // As `switch_to` does for a restarted thread.
    if tcb(t).state == ThreadState::Restart {
        tcb(t).state = ThreadState::Running;
    }
    syscall_with(fx, traced, s as i64)
}

/// An endpoint, a client and a server (each with its TCB's slot) that have made one round trip
/// through the general path (so the fastpaths' bits are in their profiles' `fast` masks).
fn warm_pair(fx: &mut Fx) -> (u64, (u64, *mut Tcb), (u64, *mut Tcb)) {
    let ep = fx.retype(ObjectType::Endpoint);
    let client = fx.thread();
    let server = fx.thread();
    fx.sys(server.1, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(client.1, Syscall::Call, ep, 1, &[], &[]);
    fx.sys(server.1, Syscall::ReplyRecv, ep, 0, &[], &[]);
    (ep, client, server)
}

/// Records written plus records dropped: each syscall of a traced thread adds exactly one.
fn events(t: *mut Tcb) -> u64 {
    tcb(t).trace.written() + tcb(t).trace.dropped()
}

/// Record `n` of the ring at kernel address `ring`.
fn record(ring: u64, n: u64) -> Record {
    let at = ring + (n % RING_RECORDS as u64) * 16;
    // SAFETY: `ring` is a live 4 KiB frame of the fixture's world; read only.
    let w = unsafe { core::ptr::read_volatile(at as *const [u64; 2]) };
    Record::from_words(w).unwrap_or_else(|| panic!("record {n} is no record: {w:x?}"))
}

/// The last record `t` wrote into `ring`.
fn last(t: *mut Tcb, ring: u64) -> Record {
    let n = tcb(t).trace.written();
    assert!(n > 0, "no record written");
    record(ring, n - 1)
}

/// Syscall `s` by `t` through the entry must add exactly one event to its trace, a record of
/// profile bit `bit` (not a drop).
#[allow(clippy::too_many_arguments)]
fn recorded(fx: &mut Fx, t: *mut Tcb, ring: u64, s: Syscall, cptr: u64, label: u64, mrs: &[u64], bit: u32) -> Exit {
    let (w, d) = (tcb(t).trace.written(), tcb(t).trace.dropped());
    let exit = enter(fx, t, s, cptr, label, mrs, &[]);
    assert_eq!(
        (tcb(t).trace.written(), tcb(t).trace.dropped()),
        (w + 1, d),
        "{s:?} (label {label}) by a traced thread left {exit:?} without exactly one record"
    );
    let r = last(t, ring);
    assert_eq!((r.kind, r.what), (Kind::Syscall, bit as u8), "{s:?}: the record names another syscall: {r:?}");
    exit
}

/// Raise `t`'s priority above every other ready thread, so its Yield is uncontended (it is made
/// current first: a running thread is in no ready queue).
fn lone_priority(fx: &mut Fx, t: *mut Tcb) {
    fx.make_current(t);
    tcb(t).priority = 101;
    fx.make_current(t);
}

/// A VSpace root in the thread's TCB (TCB Resume wants one).
fn give_vspace(fx: &mut Fx, t: *mut Tcb) {
    let pml4 = fx.retype(ObjectType::Pml4);
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
}

// ---- 1. the handler's place and its value at birth ----

#[test]
fn the_handler_lies_beside_the_saved_registers_outside_the_frame_and_every_new_tcb_names_the_untraced_copy() {
    let regs = core::mem::offset_of!(Tcb, regs) as i64;
    let handler = core::mem::offset_of!(Tcb, syscall_handler) as i64;
    assert_eq!(SYSCALL_HANDLER_FROM_REGS, handler - regs);
    // The stub writes the frame at [regs, regs + size) before it calls: the handler must not be
    // in it (a user register would become the call's target).
    let frame_bytes = core::mem::size_of::<Registers>() as i64;
    assert!(
        SYSCALL_HANDLER_FROM_REGS >= frame_bytes || SYSCALL_HANDLER_FROM_REGS + 8 <= 0,
        "the handler at {SYSCALL_HANDLER_FROM_REGS} from the registers is inside the {frame_bytes}-byte frame the entry writes"
    );
    assert!(handler % 8 == 0 && handler as usize + 8 <= core::mem::size_of::<Tcb>());
    assert!(core::mem::size_of::<Tcb>() <= 1 << ozone_abi::object::TCB_BITS);
    let b = Tcb::initial();
    assert_eq!(b.syscall_handler, syscall_handler(false));
    assert_ne!(b.syscall_handler, 0);

    let mut fx = Fx::new();
    let (_, t) = fx.thread();
    // Read as the stub reads it: from the address of the saved registers.
    // SAFETY: `t` is a live TCB of the world; the offset stays inside it (checked above).
    let via_regs = unsafe {
        ((&raw const (*t).regs) as *const u8).offset(SYSCALL_HANDLER_FROM_REGS as isize).cast::<u64>().read()
    };
    assert_eq!(via_regs, syscall_handler(false));
    // Several TCBs from one Retype.
    let first = fx.free_slot();
    fx.free_slot();
    fx.free_slot();
    let r =
        fx.invoke(SLOT_U_MAIN, inv::UNTYPED_RETYPE, &[ObjectType::Tcb as u64, 0, 0, 0, first, 3], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0);
    for s in first..first + 3 {
        let Cap::Tcb { ptr } = fx.w.slot(s).cap() else { panic!("TCB {s}") };
        assert_eq!(tcb(ptr as *mut Tcb).syscall_handler, syscall_handler(false), "TCB in slot {s}");
    }
    // A traced TCB's memory made into a TCB again: the new one is untraced.
    let u = fx.retype_from(SLOT_U_MAIN, ObjectType::Untyped, 12);
    let ts = fx.retype_from(u, ObjectType::Tcb, 0);
    let Cap::Tcb { ptr: old } = fx.w.slot(ts).cap() else { panic!() };
    let (fs, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, fs), 0);
    assert_eq!(tcb(old as *mut Tcb).syscall_handler, syscall_handler(true));
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[u, DEPTH], &[]).rax, 0);
    let ts2 = fx.retype_from(u, ObjectType::Tcb, 0);
    let Cap::Tcb { ptr: new } = fx.w.slot(ts2).cap() else { panic!() };
    assert_eq!(new, old, "the same memory");
    let n = new as *mut Tcb;
    assert_eq!(tcb(n).syscall_handler, syscall_handler(false));
    assert!(!tcb(n).profile.traced() && !tcb(n).trace.is_on());
    fx.equip(n);
    let before = bytes(ring);
    enter(&mut fx, n, Syscall::Yield, 0, 0, &[], &[]);
    assert_eq!(bytes(ring), before, "the new thread writes no ring");
}

// ---- 2. every syscall of a traced thread, through the entry ----

#[test]
fn through_the_entry_each_syscall_of_a_traced_thread_leaves_one_record_fastpaths_and_yield_included() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (cs, c) = fx.thread();
    let (ss, s) = fx.thread();
    let (us, u) = fx.thread();
    let _ = us;
    // Every syscall used once before the trace (so the fastpaths' bits are in `fast`).
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep, 1, &[], &[]);
    fx.sys(s, Syscall::ReplyRecv, ep, 0, &[], &[]);
    fx.sys(c, Syscall::Yield, 0, 0, &[], &[]);
    fx.sys(u, Syscall::Yield, 0, 0, &[], &[]);
    let (cf, cring) = frame(&mut fx);
    let (sf, sring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    assert_eq!(trace(&mut fx, ss, sf), 0);
    for i in 0..4 {
        let e = recorded(&mut fx, c, cring, Syscall::Call, ep, 10 + i, &[i], profile::CALL);
        assert_eq!(e, Exit::Switched, "the traced Call fastpath took round trip {i}");
        let e = recorded(&mut fx, s, sring, Syscall::ReplyRecv, ep, 0, &[i], profile::REPLY_RECV);
        assert_eq!(e, Exit::Switched, "the traced ReplyRecv fastpath took round trip {i}");
        assert_eq!(last(c, cring).label(), 10 + i);
    }
    // An uncontended Yield: the untraced thread's is taken at once, the traced one's recorded.
    lone_priority(&mut fx, u);
    assert_eq!(enter(&mut fx, u, Syscall::Yield, 0, 0, &[], &[]), Exit::Yielded, "the fast Yield is reachable");
    lone_priority(&mut fx, c);
    recorded(&mut fx, c, cring, Syscall::Yield, 0, 0, &[], profile::YIELD);
    recorded(&mut fx, c, cring, Syscall::NbSend, ep, 3, &[1], profile::NB_SEND);
    recorded(&mut fx, c, cring, Syscall::NbRecv, ep, 0, &[], profile::NB_RECV);
    recorded(&mut fx, c, cring, Syscall::Call, cs, inv::TCB_GET_PROFILE, &[], profile::CALL);
    recorded(&mut fx, c, cring, Syscall::Call, 60, 77, &[], profile::CALL);
    recorded(&mut fx, c, cring, Syscall::Reply, 0, 0, &[], profile::REPLY);
    assert_eq!(last(c, cring).object, ObjectKind::None);
    assert_eq!(tcb(u).trace.written(), 0);
}

// ---- 3. a thread that traces, retraces and untraces itself ----

#[test]
fn a_thread_tracing_replacing_and_stopping_its_own_trace_mid_syscall() {
    let mut fx = Fx::new();
    let (ep, (ts, t), (_, s)) = warm_pair(&mut fx);
    let (f1, r1) = frame(&mut fx);
    let (f2, r2) = frame(&mut fx);
    // It starts its own trace (the threads' CSpace is the root CNode: it holds the telemetry
    // capability).
    enter(&mut fx, t, Syscall::Call, SLOT_TELEMETRY, inv::TELEMETRY_TRACE, &[], &[ts, f1]);
    assert_eq!(tcb(t).regs.rax, 0);
    assert!(tcb(t).profile.traced());
    assert_eq!(tcb(t).syscall_handler, syscall_handler(true), "its next syscall enters the traced copy");
    recorded(&mut fx, t, r1, Syscall::Yield, 0, 0, &[], profile::YIELD);
    assert_eq!(recorded(&mut fx, t, r1, Syscall::Call, ep, 2, &[2], profile::CALL), Exit::Switched);
    assert_eq!(enter(&mut fx, s, Syscall::ReplyRecv, ep, 0, &[], &[]), Exit::Switched);
    // It gives itself a new ring, mid-syscall: the old ring is not written again.
    let old = bytes(r1);
    enter(&mut fx, t, Syscall::Call, SLOT_TELEMETRY, inv::TELEMETRY_TRACE, &[], &[ts, f2]);
    assert_eq!(tcb(t).regs.rax, 0);
    assert_eq!(bytes(r1), old, "the replaced ring was written by the syscall that replaced it");
    assert_eq!(tcb(t).syscall_handler, syscall_handler(true));
    assert_eq!(tcb(t).trace.written(), 0);
    recorded(&mut fx, t, r2, Syscall::Yield, 0, 0, &[], profile::YIELD);
    assert_eq!(recorded(&mut fx, t, r2, Syscall::Call, ep, 3, &[3], profile::CALL), Exit::Switched);
    assert_eq!(enter(&mut fx, s, Syscall::ReplyRecv, ep, 0, &[], &[]), Exit::Switched);
    assert_eq!(bytes(r1), old);
    // It stops its own trace, mid-syscall: the untraced copy from its next syscall on, and its
    // ring is never written again.
    enter(&mut fx, t, Syscall::Call, SLOT_TELEMETRY, inv::TELEMETRY_TRACE_OFF, &[], &[ts]);
    assert_eq!(tcb(t).regs.rax, 0);
    assert_eq!((tcb(t).regs.r10, tcb(t).regs.r8), (2, 0), "the counts of the trace it stopped");
    assert!(!tcb(t).profile.traced() && !tcb(t).trace.is_on());
    assert_eq!(tcb(t).syscall_handler, syscall_handler(false));
    let done = bytes(r2);
    assert_eq!(enter(&mut fx, t, Syscall::Call, ep, 4, &[4], &[]), Exit::Switched, "the untraced fastpath");
    assert_eq!(enter(&mut fx, s, Syscall::ReplyRecv, ep, 0, &[], &[]), Exit::Switched);
    enter(&mut fx, t, Syscall::Yield, 0, 0, &[], &[]);
    assert_eq!(bytes(r2), done);
    assert_eq!(bytes(r1), old);
}

// ---- 4. the ring revoked under a waiting thread, or by the thread itself ----

#[test]
fn a_ring_revoked_while_its_thread_waits_in_the_fastpath_or_by_the_thread_itself_is_never_written_again() {
    let mut fx = Fx::new();
    let (ep, (cs, c), (ss, s)) = warm_pair(&mut fx);
    fx.sys(c, Syscall::Yield, 0, 0, &[], &[]);
    // The server traced, then left waiting in the traced ReplyRecv fastpath.
    let (sf, sring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ss, sf), 0);
    assert_eq!(enter(&mut fx, c, Syscall::Call, ep, 2, &[2], &[]), Exit::Switched);
    assert_eq!(recorded(&mut fx, s, sring, Syscall::ReplyRecv, ep, 0, &[], profile::REPLY_RECV), Exit::Switched);
    assert!(matches!(tcb(s).state, ThreadState::BlockedOnReceive { .. }));
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[sf, DEPTH], &[]).rax, 0);
    assert_eq!(tcb(s).syscall_handler, syscall_handler(false), "a waiting thread's trace revoked");
    let before = bytes(sring);
    assert_eq!(enter(&mut fx, c, Syscall::Call, ep, 3, &[3], &[]), Exit::Switched);
    assert_eq!(enter(&mut fx, s, Syscall::ReplyRecv, ep, 0, &[], &[]), Exit::Switched, "the untraced copy");
    assert_eq!(bytes(sring), before);
    // The client revokes, mid-syscall, the untyped its own ring was made from; the memory is
    // then made a new frame, which its syscalls never write.
    let u = fx.retype_from(SLOT_U_MAIN, ObjectType::Untyped, 12);
    let rf = fx.retype_from(u, ObjectType::Frame4K, 0);
    let Cap::Frame { ptr: ring, .. } = fx.w.slot(rf).cap() else { panic!("frame") };
    assert_eq!(trace(&mut fx, cs, rf), 0);
    recorded(&mut fx, c, ring, Syscall::Yield, 0, 0, &[], profile::YIELD);
    let before = bytes(ring);
    enter(&mut fx, c, Syscall::Call, SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[u, DEPTH], &[]);
    assert_eq!(tcb(c).regs.rax, 0);
    assert_eq!(bytes(ring), before, "written by the syscall that revoked it");
    assert!(!tcb(c).trace.is_on() && !tcb(c).profile.traced());
    assert_eq!(tcb(c).syscall_handler, syscall_handler(false));
    let nf = fx.free_slot();
    let r = fx.invoke(u, inv::UNTYPED_RETYPE, &[ObjectType::Frame4K as u64, 0, 0, 0, nf, 1], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0);
    assert_eq!(fx.ptr_of(nf), ring, "the same memory");
    let reused = bytes(ring);
    assert_eq!(enter(&mut fx, c, Syscall::Call, ep, 4, &[4], &[]), Exit::Switched);
    assert_eq!(enter(&mut fx, s, Syscall::ReplyRecv, ep, 0, &[], &[]), Exit::Switched);
    enter(&mut fx, c, Syscall::Yield, 0, 0, &[], &[]);
    assert_eq!(bytes(ring), reused, "the reused memory was written");
}

impl Fx {
    fn ptr_of(&self, s: u64) -> u64 {
        match self.w.slot(s).cap() {
            Cap::Frame { ptr, .. } | Cap::Tcb { ptr } => ptr,
            c => panic!("{c:?}"),
        }
    }
}

// ---- 5. thread management on a traced thread ----

#[test]
fn suspend_resume_profiles_registers_slots_and_capability_moves_keep_the_handler_with_the_trace() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let n = fx.retype(ObjectType::Notification);
    let (mut ts, t) = fx.thread();
    give_vspace(&mut fx, t);
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    let (f, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, f), 0);
    for step in 0..11 {
        let what = match step {
            0 => {
                assert_eq!(fx.invoke(ts, inv::TCB_SUSPEND, &[], &[]).rax, 0);
                assert_eq!(tcb(t).syscall_handler, syscall_handler(true), "suspended");
                assert_eq!(fx.invoke(ts, inv::TCB_RESUME, &[], &[]).rax, 0);
                "suspend and resume"
            }
            1 => {
                fx.set_allowed(ts, profile::ALL);
                "SetProfile"
            }
            2 => {
                assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 5], &[]).rax, 0);
                // In a window every syscall takes the general path, and is recorded there.
                recorded(&mut fx, t, ring, Syscall::Yield, 0, 0, &[], profile::YIELD);
                recorded(&mut fx, t, ring, Syscall::NbSend, ep, 0, &[], profile::NB_SEND);
                "ArmProfile"
            }
            3 => {
                fx.set_allowed(ts, profile::ALL);
                "SetProfile after a window"
            }
            4 => {
                assert_eq!(fx.invoke(ts, inv::TCB_WRITE_REGISTERS, &[0, 1, RIP], &[]).rax, 0);
                "WriteRegisters"
            }
            5 => {
                assert_eq!(fx.set_fault_handler(ts, ep), 0);
                "SetFaultHandler"
            }
            6 => {
                assert_eq!(fx.invoke(ts, inv::TCB_SET_TLS_BASE, &[0x1000], &[]).rax, 0);
                "SetTLSBase"
            }
            7 => {
                assert_eq!(fx.invoke(ts, inv::TCB_BIND_NOTIFICATION, &[], &[n]).rax, 0);
                "BindNotification"
            }
            8 => {
                let d = fx.free_slot();
                let o = fx.invoke(
                    SLOT_ROOT_COPY,
                    inv::CNODE_COPY,
                    &[d, DEPTH, ts, DEPTH, ozone_abi::rights::ALL],
                    &[SLOT_ROOT_COPY],
                );
                assert_eq!(o.rax, 0);
                assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ts, DEPTH], &[]).rax, 0);
                ts = d;
                "the TCB capability copied and the original deleted"
            }
            9 => {
                let d = fx.free_slot();
                let o = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_MOVE, &[d, DEPTH, ts, DEPTH], &[SLOT_ROOT_COPY]);
                assert_eq!(o.rax, 0);
                ts = d;
                "the TCB capability moved"
            }
            _ => {
                assert_eq!(fx.invoke(ts, inv::TCB_SET_PRIORITY, &[0], &[ts]).rax, 0);
                "SetPriority"
            }
        };
        assert!(tcb(t).profile.traced() && tcb(t).trace.is_on(), "{what}: still traced");
        assert_eq!(tcb(t).syscall_handler, syscall_handler(true), "{what}");
        assert_eq!(tcb(t).trace.frame(), Some(ring), "{what}");
        assert!(!tcb(t).slots[TCB_TRACE].cap.is_null(), "{what}");
        recorded(&mut fx, t, ring, Syscall::Yield, 0, 0, &[], profile::YIELD);
    }
}

// ---- 6. the wrong copy for a thread ----

/// The untraced copy never runs for a traced thread (the handler follows the trace); were it
/// ever to, its first tests fail for it and the general path records the syscall: the Call and
/// ReplyRecv fastpaths and the uncontended Yield alike.
#[test]
fn were_the_untraced_copy_to_run_for_a_traced_thread_each_syscall_would_still_be_recorded() {
    let mut fx = Fx::new();
    let (ep, (cs, c), (ss, s)) = warm_pair(&mut fx);
    fx.sys(c, Syscall::Yield, 0, 0, &[], &[]);
    let (cf, _) = frame(&mut fx);
    let (sf, _) = frame(&mut fx);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    assert_eq!(trace(&mut fx, ss, sf), 0);
    lone_priority(&mut fx, c);
    load(c, Syscall::Yield, 0, 0, &[], &[]);
    let before = events(c);
    assert_ne!(enter_raw(&mut fx, c, Syscall::Yield, false), Exit::Yielded, "the untraced fast Yield took it");
    assert_eq!(events(c), before + 1, "Yield");
    load(c, Syscall::Call, ep, 5, &[5], &[]);
    let before = events(c);
    assert_ne!(enter_raw(&mut fx, c, Syscall::Call, false), Exit::Switched, "the untraced Call fastpath took it");
    assert_eq!(events(c), before + 1, "Call");
    assert_eq!(tcb(s).caller, c as u64, "the Call went through");
    load(s, Syscall::ReplyRecv, ep, 0, &[], &[]);
    let before = events(s);
    assert_ne!(enter_raw(&mut fx, s, Syscall::ReplyRecv, false), Exit::Switched, "the untraced ReplyRecv fastpath");
    assert_eq!(events(s), before + 1, "ReplyRecv");
    fx.check("the untraced copy run for traced threads");
}

/// The traced copy run for an untraced thread (it never is) writes nothing and does what the
/// untraced one would.
#[test]
fn were_the_traced_copy_to_run_for_an_untraced_thread_it_would_write_nothing_and_still_work() {
    let mut fx = Fx::new();
    let (ep, (_, c), (_, s)) = warm_pair(&mut fx);
    load(c, Syscall::Call, ep, 9, &[99], &[]);
    enter_raw(&mut fx, c, Syscall::Call, true);
    assert_eq!((tcb(s).caller, tcb(s).regs.r10, MessageInfo(tcb(s).regs.rsi).label()), (c as u64, 99, 9));
    load(s, Syscall::ReplyRecv, ep, 0, &[77], &[]);
    enter_raw(&mut fx, s, Syscall::ReplyRecv, true);
    assert_eq!((tcb(c).state, tcb(c).regs.r10), (ThreadState::Running, 77));
    load(c, Syscall::Yield, 0, 0, &[], &[]);
    enter_raw(&mut fx, c, Syscall::Yield, true);
    for t in [c, s] {
        assert_eq!(tcb(t).trace, crate::object::trace::Trace::OFF);
    }
    fx.check("the traced copy run for untraced threads");
}

// ---- 7. the full ring, the wrap, and the words ----

#[test]
fn through_the_entry_a_full_ring_drops_and_counts_and_the_fastpath_resumes_at_the_wrap() {
    let mut fx = Fx::new();
    let (ep, (cs, c), (_, s)) = warm_pair(&mut fx);
    let (cf, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    let round = |fx: &mut Fx, label: u64| -> bool {
        let before = events(c);
        let e = enter(fx, c, Syscall::Call, ep, label, &[label], &[]);
        assert_eq!(events(c), before + 1, "Call {label}");
        assert_eq!(tcb(s).regs.r10, label, "the Call {label} went through");
        assert_eq!(enter(fx, s, Syscall::ReplyRecv, ep, 0, &[], &[]), Exit::Switched);
        e == Exit::Switched
    };
    let n = RING_RECORDS as u64;
    let fast = (0..n + 3).filter(|&l| round(&mut fx, l)).count() as u64;
    assert_eq!(fast, n, "the fastpath until the ring was full");
    assert_eq!((tcb(c).trace.written(), tcb(c).trace.dropped()), (n, 3));
    for i in 0..n {
        assert_eq!(record(ring, i).label(), i, "record {i}");
    }
    let o = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_ACK, &[n], &[cs]);
    assert_eq!(o.rax, 0);
    for i in 0..10 {
        assert!(round(&mut fx, 1000 + i), "the fastpath after the wrap");
    }
    for i in 0..10 {
        assert_eq!(record(ring, n + i).label(), 1000 + i, "record {} at index {i}", n + i);
    }
    // Four acknowledged of the ten: 250 more fit, the next is dropped; none unread overwritten.
    // (The fastpath writes up to the ring's end, 246 records; the general path wraps and writes
    // the next; the fastpath the 3 after it.)
    let o = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_ACK, &[n + 4], &[cs]);
    assert_eq!(o.rax, 0);
    let fast = (0..n - 6 + 1).filter(|&l| round(&mut fx, 2000 + l)).count() as u64;
    assert_eq!(fast, n - 7);
    assert_eq!((tcb(c).trace.written(), tcb(c).trace.dropped()), (2 * n + 4, 4));
    for i in 4..10 {
        assert_eq!(record(ring, n + i).label(), 1000 + i, "unread record {} intact", n + i);
    }
}

#[test]
fn the_fastpaths_record_words_are_the_general_paths_words() {
    use crate::object::trace::{FAST_CALL, FAST_REPLY_RECV, fast_word, tick_word};
    let want =
        [syscall_word(profile::CALL, ObjectKind::Endpoint), syscall_word(profile::REPLY_RECV, ObjectKind::Endpoint)];
    assert_ne!(FAST_CALL, FAST_REPLY_RECV);
    // (Other tests move the tick concurrently: one consistent reading is enough.)
    let consistent = (0..100_000).any(|_| {
        let t0 = tick_word();
        let (a, b) = (fast_word(FAST_CALL), fast_word(FAST_REPLY_RECV));
        t0 == tick_word() && a == want[0] | t0 && b == want[1] | t0
    });
    assert!(consistent, "the precomputed words disagree with the tick and the syscall words");
    // The same Call recorded by the traced fastpath and by the general path.
    let mut fx = Fx::new();
    let (ep, (cs, c), (ss, s)) = warm_pair(&mut fx);
    let (cf, cring) = frame(&mut fx);
    let (sf, sring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    assert_eq!(trace(&mut fx, ss, sf), 0);
    assert_eq!(enter(&mut fx, c, Syscall::Call, ep, 5, &[1, 2], &[]), Exit::Switched);
    assert_eq!(enter(&mut fx, s, Syscall::ReplyRecv, ep, 6, &[3], &[]), Exit::Switched);
    fx.sys(c, Syscall::Call, ep, 5, &[1, 2], &[]);
    fx.sys(s, Syscall::ReplyRecv, ep, 6, &[3], &[]);
    let strip = |r: Record| Record { tick: 0, ..r };
    assert_eq!(strip(record(cring, 0)), strip(record(cring, 1)), "Call: fastpath and general path");
    assert_eq!(strip(record(sring, 0)), strip(record(sring, 1)), "ReplyRecv: fastpath and general path");
}

// ---- 8. a traced thread deleting itself, its memory made a thread again ----

#[test]
fn a_traced_thread_deleting_its_own_tcb_through_the_entry_and_its_memory_made_a_thread_again() {
    let mut fx = Fx::new();
    let u = fx.retype_from(SLOT_U_MAIN, ObjectType::Untyped, 12);
    let ts = fx.retype_from(u, ObjectType::Tcb, 0);
    let t = fx.ptr_of(ts) as *mut Tcb;
    fx.equip(t);
    let (f, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, f), 0);
    recorded(&mut fx, t, ring, Syscall::Yield, 0, 0, &[], profile::YIELD);
    let before = bytes(ring);
    load(t, Syscall::Call, SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ts, DEPTH], &[]);
    enter_raw(&mut fx, t, Syscall::Call, copy_for(t));
    fx.check("self delete through the entry");
    assert!(fx.w.slot(ts).cap().is_null());
    assert_eq!(bytes(ring), before);
    // SAFETY: the TCB's memory is still the world's; read only.
    let gone = unsafe { &*t };
    assert_eq!(gone.syscall_handler, syscall_handler(false));
    assert!(!gone.trace.is_on() && !gone.profile.traced());
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[u, DEPTH], &[]).rax, 0);
    let ts2 = fx.retype_from(u, ObjectType::Tcb, 0);
    let t2 = fx.ptr_of(ts2) as *mut Tcb;
    assert_eq!(t2, t, "the same memory");
    assert_eq!(tcb(t2).syscall_handler, syscall_handler(false));
    fx.equip(t2);
    enter(&mut fx, t2, Syscall::Yield, 0, 0, &[], &[]);
    enter(&mut fx, t2, Syscall::NbSend, 60, 0, &[], &[]);
    assert_eq!(bytes(ring), before, "the old ring written by the new thread");
}

// ---- 9. everything at random ----

/// Random IPC through the entry (Calls, ReplyRecvs, Yields, NBSends, so the fastpaths both ways
/// and the general path) by two clients and a server, with traces started, replaced, stopped,
/// revoked and acknowledged on any of them in between: every syscall of a thread traced when it
/// made it adds exactly one event to its trace, every other none; the checker runs throughout.
#[test]
fn random_ipc_through_the_entry_with_traces_coming_and_going_records_each_traced_syscall_once() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (c1s, c1) = fx.thread();
    let (c2s, c2) = fx.thread();
    let (ss, s) = fx.thread();
    fx.sys(s, Syscall::Yield, 0, 0, &[], &[]);
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    for c in [c1, c2] {
        fx.sys(c, Syscall::Yield, 0, 0, &[], &[]);
        fx.sys(c, Syscall::NbSend, ep, 0, &[], &[]);
        fx.sys(s, Syscall::ReplyRecv, ep, 0, &[], &[]);
        fx.sys(c, Syscall::Call, ep, 1, &[], &[]);
        fx.sys(s, Syscall::ReplyRecv, ep, 0, &[], &[]);
    }
    let threads = [(c1s, c1), (c2s, c2), (ss, s)];
    let frames: Vec<u64> = (0..3).map(|_| frame(&mut fx).0).collect();
    let mut x = 0x0dd_ba11_5eed_f00du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let steps: u64 = if cfg!(miri) { 100 } else { 4000 };
    let (mut traced_syscalls, mut fast, mut syscalls) = (0u64, 0u64, 0u64);
    for step in 0..steps {
        let r = next();
        let (slot, _) = threads[(r >> 8) as usize % 3];
        match r % 12 {
            0 => {
                let f = frames[(r >> 16) as usize % 3];
                let _ = trace(&mut fx, slot, f);
            }
            1 => {
                let _ = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_OFF, &[], &[slot]);
            }
            2 if r % 7 == 0 => {
                let f = frames[(r >> 16) as usize % 3];
                assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[f, DEPTH], &[]).rax, 0);
            }
            3 => {
                let t = threads[(r >> 8) as usize % 3].1;
                let w = tcb(t).trace.written();
                let _ = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_ACK, &[w], &[slot]);
            }
            _ => {
                let runnable: Vec<*mut Tcb> =
                    threads.iter().map(|&(_, t)| t).filter(|&t| tcb(t).state == ThreadState::Running).collect();
                assert!(!runnable.is_empty(), "step {step}: nobody can run");
                let t = runnable[(r >> 20) as usize % runnable.len()];
                let (call, mrs): (Syscall, &[u64]) = if t == s {
                    if (r >> 28) % 4 == 0 { (Syscall::Yield, &[]) } else { (Syscall::ReplyRecv, &[7]) }
                } else {
                    match (r >> 28) % 6 {
                        0 => (Syscall::Yield, &[]),
                        1 => (Syscall::NbSend, &[3]),
                        _ => (Syscall::Call, &[5]),
                    }
                };
                let cptr = if call == Syscall::Yield { 0 } else { ep };
                let traced = tcb(t).profile.traced();
                assert_eq!(traced, tcb(t).syscall_handler == syscall_handler(true), "step {step}");
                let before = events(t);
                let exit = enter(&mut fx, t, call, cptr, step & 0xfff, mrs, &[]);
                assert_eq!(
                    events(t),
                    before + u64::from(traced),
                    "step {step}: {call:?} by {} thread {t:p} left {exit:?} with the wrong number of records",
                    if traced { "a traced" } else { "an untraced" }
                );
                syscalls += 1;
                traced_syscalls += u64::from(traced);
                fast += u64::from(exit == Exit::Switched && traced);
            }
        }
    }
    assert!(
        syscalls > steps / 3 && traced_syscalls > syscalls / 6 && fast > traced_syscalls / 10,
        "the mix ran: {syscalls} syscalls, {traced_syscalls} traced, {fast} traced fastpaths"
    );
}

// ---- 10. the syscalls with no profile bit ----

/// The ABI (`invocation::TELEMETRY_TRACE`) promises one record per syscall and fault of a traced
/// thread. An unknown syscall number is recorded (as its fault); the debug calls, DebugWrite
/// (denied here: the thread has no debug channel) and ThreadExit, have no profile bit, and were
/// once not recorded at all: a traced thread could make them unseen. Each is recorded now, as
/// `trace::DEBUG_WRITE` or `trace::THREAD_EXIT`, with its result, naming nothing.
#[test]
fn a_traced_thread_s_debug_calls_and_unknown_syscalls_are_recorded_too() {
    use ozone_abi::Error;
    use ozone_abi::trace::{DEBUG_WRITE, THREAD_EXIT};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (f, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, f), 0);
    let before = events(t);
    load(t, Syscall::Yield, 0, 0, &[], &[]);
    enter_raw(&mut fx, t, Syscall::Yield, copy_for(t));
    tcb(t).regs.rdx = 12_345;
    let number = 12_345i64;
    fx.make_current(t);
    syscall_with(&mut fx, copy_for(t), number);
    assert_eq!(events(t), before + 2, "Yield and the unknown syscall (its fault)");
    let mut missing = Vec::new();
    for (s, what, result) in
        [(Syscall::DebugWrite, DEBUG_WRITE, Error::Denied as u16), (Syscall::ThreadExit, THREAD_EXIT, 0)]
    {
        let before = events(t);
        load(t, s, 0, 0, &[], &[]);
        // ThreadExit leaves RAX as the thread had it: its record's result is 0 all the same.
        tcb(t).regs.rax = 0x4321;
        enter_raw(&mut fx, t, s, copy_for(t));
        if tcb(t).trace.written() != before + 1 {
            missing.push(s);
            continue;
        }
        let r = last(t, ring);
        assert_eq!(
            (r.kind, r.what, r.object, r.result, r.info),
            (Kind::Syscall, what, ObjectKind::None, result, 0),
            "{s:?}"
        );
        assert_eq!(r.ends_thread(), s == Syscall::ThreadExit);
    }
    fx.check("the debug calls");
    assert!(missing.is_empty(), "a traced thread's {missing:?} left no record");
}
