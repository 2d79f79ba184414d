//! Per-thread event traces (`object/trace.rs`), attacked: what a traced thread does lands in its
//! ring in order, from the general path, the faults and the IPC fastpaths alike; nothing but the
//! telemetry capability starts a trace, and only into a writable frame of normal memory; a ring
//! whose frame is revoked or deleted, or whose thread is deleted, is never written again; a full
//! ring drops (and counts) rather than overwrite what the reader has not acknowledged; and
//! tracing off leaves the fastpaths' masks as they were. Every syscall of the fixture ends with
//! the invariant checker, which knows the trace slot and the trace's cursor.

use std::vec::Vec;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::trace::{Kind, ObjectKind, RING_RECORDS, Record};
use ozone_abi::{Error, MessageInfo, Syscall, fault, profile, rights};

use super::fastpath;
use super::tests::{Fx, SLOT_TELEMETRY, tcb};
use crate::object::Cap;
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY, SLOT_U_DEV};
use crate::object::tcb::{Fault, TCB_TRACE, Tcb, ThreadState, syscall_handler};

const DEPTH: u64 = ROOT_RADIX as u64;

/// A frame of normal memory, its slot and kernel address.
pub(super) fn frame(fx: &mut Fx) -> (u64, u64) {
    let s = fx.retype(ObjectType::Frame4K);
    let Cap::Frame { ptr, .. } = fx.w.slot(s).cap() else { panic!("frame") };
    (s, ptr)
}

pub(super) fn trace(fx: &mut Fx, tcb_slot: u64, frame_slot: u64) -> u64 {
    fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE, &[], &[tcb_slot, frame_slot]).rax
}

/// TraceAck: (error, written, dropped).
fn ack(fx: &mut Fx, tcb_slot: u64, upto: u64) -> (u64, u64, u64) {
    let o = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_ACK, &[upto], &[tcb_slot]);
    (o.rax, o.mrs[0], o.mrs[1])
}

/// The records `from..to` of the ring at kernel address `ring`.
fn records(ring: u64, from: u64, to: u64) -> Vec<Record> {
    (from..to)
        .map(|n| {
            let at = ring + (n % RING_RECORDS as u64) * 16;
            // SAFETY: `ring` is a live 4 KiB frame of the fixture's world; read only.
            let w = unsafe { core::ptr::read_volatile(at as *const [u64; 2]) };
            Record::from_words(w).unwrap_or_else(|| panic!("record {n} is no record: {w:x?}"))
        })
        .collect()
}

pub(super) fn bytes(ring: u64) -> Vec<u8> {
    // SAFETY: as above.
    unsafe { core::slice::from_raw_parts(ring as *const u8, 4096) }.to_vec()
}

fn syscall(what: u32, object: ObjectKind, result: u64, info: u64) -> (Kind, u8, ObjectKind, u16, u64) {
    (Kind::Syscall, what as u8, object, result as u16, info)
}

fn summary(r: &Record) -> (Kind, u8, ObjectKind, u16, u64) {
    (r.kind, r.what, r.object, r.result, r.info)
}

#[test]
fn a_traced_thread_s_syscalls_faults_and_fast_ipc_land_in_its_ring_in_order() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (cs, client) = fx.thread();
    let (ss, server) = fx.thread();
    let (cf, cring) = frame(&mut fx);
    let (sf, sring) = frame(&mut fx);
    crate::object::trace::set_tick(7);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    assert_eq!(trace(&mut fx, ss, sf), 0);
    assert!(tcb(client).profile.traced());
    assert_eq!(tcb(client).syscall_handler, syscall_handler(true), "its syscalls enter the traced path");
    assert_ne!(syscall_handler(true), syscall_handler(false));

    fx.sys(server, Syscall::Recv, ep, 0, &[], &[]);
    // The general path (first use of Call), then the fastpaths both ways.
    fx.sys(client, Syscall::Call, ep, 1, &[10], &[]);
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[11], &[]);
    crate::object::trace::set_tick(8);
    fx.make_current(client);
    let c = tcb(client);
    c.regs.rdi = ep;
    c.regs.rsi = MessageInfo::new(2, 0, 0, 1).0;
    assert!(!fastpath::call(&mut fx.k, c), "the untraced fastpath declines a traced thread");
    assert!(fastpath::traced_call(&mut fx.k, tcb(client)), "its traced copy takes the Call");
    fx.make_current(server);
    let s = tcb(server);
    s.regs.rdi = ep;
    s.regs.rsi = MessageInfo::new(0, 0, 0, 1).0;
    assert!(!fastpath::reply_recv(&mut fx.k, s));
    assert!(fastpath::traced_reply_recv(&mut fx.k, tcb(server)));
    fx.check("the traced fastpaths");
    // An invocation, an empty slot, a denied syscall, a fault.
    fx.sys(client, Syscall::Call, cs, inv::TCB_GET_PROFILE, &[], &[]);
    fx.sys(client, Syscall::Call, 60, 77, &[], &[]);
    fx.set_allowed(cs, profile::ALL & !profile::mask(profile::YIELD));
    fx.sys(client, Syscall::Yield, 0, 0, &[], &[]);
    assert_eq!(tcb(client).regs.rax, Error::Denied as u64);
    fx.make_current(client);
    assert!(!super::raise_fault(&mut fx.k, client, Fault::VmFault { addr: 0xdead_0000, error: 4, ip: 0 }));

    let (e, written, dropped) = ack(&mut fx, cs, 0);
    assert_eq!((e, written, dropped), (0, 6, 0));
    let r = records(cring, 0, written);
    let one = |label, len| MessageInfo::new(label, 0, 0, len).0;
    assert_eq!(
        r.iter().map(summary).collect::<Vec<_>>(),
        [
            syscall(profile::CALL, ObjectKind::Endpoint, 0, one(1, 1)),
            syscall(profile::CALL, ObjectKind::Endpoint, 0, one(2, 1)),
            syscall(profile::CALL, ObjectKind::Tcb, 0, one(inv::TCB_GET_PROFILE, 0)),
            syscall(profile::CALL, ObjectKind::Invalid, Error::InvalidCapability as u64, one(77, 0)),
            syscall(profile::YIELD, ObjectKind::None, Error::Denied as u64, 0),
            (Kind::Fault, fault::VM_FAULT as u8, ObjectKind::None, 0, 0xdead_0000),
        ]
    );
    assert_eq!(r.iter().map(|r| r.tick).collect::<Vec<_>>(), [7, 8, 8, 8, 8, 8]);
    assert_eq!(r[2].label(), inv::TCB_GET_PROFILE);
    let (_, written, _) = ack(&mut fx, ss, 0);
    let r = records(sring, 0, written);
    assert_eq!(
        r.iter().map(summary).collect::<Vec<_>>(),
        [
            syscall(profile::RECV, ObjectKind::Endpoint, 0, 0),
            syscall(profile::REPLY_RECV, ObjectKind::Endpoint, 0, one(0, 1)),
            syscall(profile::REPLY_RECV, ObjectKind::Endpoint, 0, one(0, 1)),
        ]
    );
}

#[test]
fn tracing_off_leaves_the_fastpaths_as_they_were_and_the_counts_are_told() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (cs, client) = fx.thread();
    let (_, server) = fx.thread();
    fx.sys(server, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(client, Syscall::Call, ep, 1, &[], &[]);
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);
    fx.sys(client, Syscall::Yield, 0, 0, &[], &[]);
    let before = tcb(client).profile;
    let (cf, _) = frame(&mut fx);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    assert_ne!(tcb(client).profile, before);
    fx.sys(client, Syscall::Yield, 0, 0, &[], &[]);
    let o = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_OFF, &[], &[cs]);
    assert_eq!((o.rax, o.mrs[0], o.mrs[1]), (0, 1, 0));
    assert_eq!(tcb(client).profile, before, "the fastpath mask is back as it was");
    assert_eq!(tcb(client).syscall_handler, syscall_handler(false), "its syscalls enter the untraced path again");
    // The invariant checker holds the handler to the trace.
    tcb(client).syscall_handler = syscall_handler(true);
    let driver = fx.driver() as u64;
    let slots = fx.w.scan().unwrap();
    let e = super::invariants::check(&fx.k, slots.iter().map(|s| s.cap()), &[driver]).unwrap_err();
    assert!(e.contains("enter the traced path"), "{e}");
    tcb(client).syscall_handler = syscall_handler(false);
    assert!(tcb(client).slots[TCB_TRACE].cap.is_null());
    assert_eq!(ack(&mut fx, cs, 0).0, Error::IllegalOperation as u64, "not traced any more");
    let o = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_OFF, &[], &[cs]);
    assert_eq!((o.rax, o.mrs[0], o.mrs[1]), (0, 0, 0), "off again: nothing to tell");
}

#[test]
fn only_the_telemetry_capability_starts_a_trace_and_only_into_a_writable_frame_of_memory() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (fs, _) = frame(&mut fx);
    // The label on any other kernel object is not the method.
    for cap in [ts, fs] {
        let o = fx.invoke(cap, inv::TELEMETRY_TRACE, &[], &[ts, fs]);
        assert_ne!(o.rax, 0, "TRACE on slot {cap}");
    }
    // Arguments of the wrong kind.
    assert_eq!(trace(&mut fx, fs, fs), Error::InvalidCapability as u64, "cap0 must be a TCB");
    assert_eq!(trace(&mut fx, ts, ts), Error::InvalidCapability as u64, "cap1 must be a frame");
    assert_eq!(trace(&mut fx, ts, 60), Error::InvalidCapability as u64, "an empty slot");
    // A read-only copy of the frame, and a frame of device memory.
    let ro = fx.free_slot();
    let o = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_MINT, &[ro, DEPTH, fs, DEPTH, rights::READ, 0], &[SLOT_ROOT_COPY]);
    assert_eq!(o.rax, 0);
    assert_eq!(trace(&mut fx, ts, ro), Error::IllegalOperation as u64, "read-only");
    let dev = fx.retype_from(SLOT_U_DEV, ObjectType::Frame4K, 0);
    assert_eq!(trace(&mut fx, ts, dev), Error::IllegalOperation as u64, "device memory");
    // A frame with another capability to it: a copy, or a thread's IPC buffer.
    let copy = fx.free_slot();
    let o = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_COPY, &[copy, DEPTH, fs, DEPTH, rights::ALL], &[SLOT_ROOT_COPY]);
    assert_eq!(o.rax, 0);
    assert_eq!(trace(&mut fx, ts, fs), Error::IllegalOperation as u64, "a frame with a copy");
    assert_eq!(trace(&mut fx, ts, copy), Error::IllegalOperation as u64, "the copy");
    // Nothing of it started a trace.
    assert!(!tcb(t).trace.is_on() && !tcb(t).profile.traced() && tcb(t).slots[TCB_TRACE].cap.is_null());
}

#[test]
fn a_ring_whose_frame_is_revoked_deleted_or_replaced_is_never_written_again() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    for how in ["revoke", "delete the copy's parent and its copies", "replace"] {
        let (fs, ring) = frame(&mut fx);
        assert_eq!(trace(&mut fx, ts, fs), 0);
        fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
        assert_eq!(ack(&mut fx, ts, 0).1, 1, "{how}: one record");
        match how {
            "revoke" => assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[fs, DEPTH], &[]).rax, 0),
            "replace" => {
                let (other, _) = frame(&mut fx);
                assert_eq!(trace(&mut fx, ts, other), 0);
                assert_eq!(ack(&mut fx, ts, 0).1, 0, "a new trace counts from 0");
            }
            _ => {
                assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[fs, DEPTH], &[]).rax, 0);
                assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[fs, DEPTH], &[]).rax, 0);
            }
        }
        let after = bytes(ring);
        for _ in 0..5 {
            fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
            assert!(!super::raise_fault(&mut fx.k, t, Fault::UnknownSyscall { number: 9 }));
        }
        assert_eq!(bytes(ring), after, "{how}: the old ring is not written");
        if how != "replace" {
            assert!(!tcb(t).trace.is_on() && !tcb(t).profile.traced(), "{how}: the trace is off");
            assert_eq!(ack(&mut fx, ts, 0).0, Error::IllegalOperation as u64);
        }
    }
}

#[test]
fn a_traced_thread_deleted_takes_its_trace_slot_with_it() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (fs, ring) = frame(&mut fx);
    assert_eq!(trace(&mut fx, ts, fs), 0);
    fx.sys(t, Syscall::Yield, 0, 0, &[], &[]);
    // Suspend it first (a deleted thread must not be running), then delete its only capability.
    assert_eq!(fx.invoke(ts, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ts, DEPTH], &[]).rax, 0);
    let tp: *mut Tcb = t;
    // SAFETY: the TCB's memory is still the world's (the untyped was not reset); read only.
    let gone = unsafe { &*tp };
    assert!(!gone.trace.is_on() && gone.slots[TCB_TRACE].cap.is_null());
    // The frame is an ordinary frame again: it can be revoked, deleted, traced into anew.
    let (us, _) = fx.thread();
    assert_eq!(trace(&mut fx, us, fs), 0);
    assert_eq!(ack(&mut fx, us, 0).1, 0);
    let _ = ring;
}

#[test]
fn a_full_ring_drops_and_counts_and_never_overwrites_what_was_not_acknowledged() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (cs, client) = fx.thread();
    let (_, server) = fx.thread();
    let (cf, ring) = frame(&mut fx);
    fx.sys(server, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(client, Syscall::Call, ep, 1, &[], &[]);
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);
    assert_eq!(trace(&mut fx, cs, cf), 0);
    // Round trips through the fastpaths (the general path when the ring is full): labels count.
    let mut fast = 0;
    for label in 0..(RING_RECORDS as u64 + 40) {
        fx.make_current(client);
        let c = tcb(client);
        c.regs.rdi = ep;
        c.regs.rsi = MessageInfo::new(label, 0, 0, 1).0;
        assert!(!fastpath::call(&mut fx.k, c), "the untraced fastpath declines");
        if fastpath::traced_call(&mut fx.k, tcb(client)) {
            fast += 1;
        } else {
            fx.sys(client, Syscall::Call, ep, label, &[label], &[]);
        }
        assert_eq!(
            tcb(client).state,
            ThreadState::BlockedOnReply { interruptible: false },
            "the Call {label} went through"
        );
        fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);
    }
    fx.check("the round trips");
    assert_eq!(fast, RING_RECORDS, "the fastpath until the ring was full, the general path after");
    let (e, written, dropped) = ack(&mut fx, cs, 0);
    assert_eq!((e, written, dropped), (0, RING_RECORDS as u64, 40));
    let labels: Vec<u64> = records(ring, 0, written).iter().map(Record::label).collect();
    assert_eq!(labels, (0..RING_RECORDS as u64).collect::<Vec<_>>(), "the first 256, none overwritten");
    // Acknowledging makes room; past what was written, or going back, is refused.
    assert_eq!(ack(&mut fx, cs, written + 1).0, Error::RangeError as u64);
    assert_eq!(ack(&mut fx, cs, 100).0, 0);
    assert_eq!(ack(&mut fx, cs, 99).0, Error::RangeError as u64);
    fx.sys(client, Syscall::Yield, 0, 0, &[], &[]);
    let (_, written, dropped) = ack(&mut fx, cs, 100);
    assert_eq!((written, dropped), (RING_RECORDS as u64 + 1, 40));
    let last = records(ring, written - 1, written)[0];
    assert_eq!(
        (last.what, last.object),
        (profile::YIELD as u8, ObjectKind::None),
        "the new record wrapped to the start"
    );
    assert_eq!(records(ring, 100, 101)[0].label(), 100, "the first unread record is intact");
}

/// Random sequences of everything that touches a trace — Trace and TraceOff on any thread and
/// any frame, copies of frames, their revocation and deletion, frames made anew in the same
/// slots, the deletion of threads, and traced syscalls — with the invariant checker after every
/// step (the fixture's `sys`): the trace slot, its flag and the cursor always agree.
#[test]
fn random_trace_operations_keep_the_invariants() {
    let mut fx = Fx::new();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut threads: Vec<(u64, *mut Tcb)> = (0..3).map(|_| fx.thread()).collect();
    // Four frames and four slots for copies of them, reused throughout (the fixture's root
    // CNode is small).
    let originals: Vec<u64> = (0..4).map(|_| frame(&mut fx).0).collect();
    let copies: Vec<u64> = (0..4).map(|_| fx.free_slot()).collect();
    let all: Vec<u64> = originals.iter().chain(&copies).copied().collect();
    let steps: u64 = if cfg!(miri) { 60 } else { 3000 };
    let (mut traced, mut yields, mut threads_made) = (0u64, 0u64, 0);
    for _ in 0..steps {
        let r = next();
        let t = threads[(r >> 8) as usize % threads.len()];
        let f = all[(r >> 16) as usize % all.len()];
        match r % 10 {
            0..=2 => traced += u64::from(trace(&mut fx, t.0, f) == 0),
            3 => {
                let _ = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_OFF, &[], &[t.0]);
            }
            4 => {
                let c = copies[(r >> 24) as usize % copies.len()];
                let _ = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[c, DEPTH], &[]);
                let _ =
                    fx.invoke(SLOT_ROOT_COPY, inv::CNODE_COPY, &[c, DEPTH, f, DEPTH, rights::ALL], &[SLOT_ROOT_COPY]);
            }
            5 => {
                let _ = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[f, DEPTH], &[]);
            }
            6 => {
                // Delete, and make a new frame in the slot if it held an original.
                let _ = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[f, DEPTH], &[]);
                if originals.contains(&f) {
                    let o = fx.invoke(
                        crate::object::harness::SLOT_U_MAIN,
                        inv::UNTYPED_RETYPE,
                        &[ObjectType::Frame4K as u64, 0, 0, 0, f, 1],
                        &[SLOT_ROOT_COPY],
                    );
                    assert_eq!(o.rax, 0, "a new frame");
                }
            }
            7 if r % 5 == 0 && threads_made < 12 => {
                threads_made += 1;
                let _ = fx.invoke(t.0, inv::TCB_SUSPEND, &[], &[]);
                let _ = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[t.0, DEPTH], &[]);
                threads.retain(|&(s, _)| s != t.0);
                threads.push(fx.thread());
            }
            8 => {
                let _ = fx.invoke(SLOT_TELEMETRY, inv::TELEMETRY_TRACE_ACK, &[(r >> 24) % 300], &[t.0]);
            }
            _ => {
                if tcb(t.1).state == ThreadState::Running {
                    fx.sys(t.1, Syscall::Yield, 0, 0, &[], &[]);
                    yields += 1;
                }
            }
        }
    }
    assert!(traced > steps / 60 && yields > steps / 30, "the operations ran: {traced} traces started, {yields} yields");
}
