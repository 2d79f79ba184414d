//! Host regression tests of the kernel's isolation: each one drives the syscall layer into a
//! state an attacker holding ordinary authority (its own threads, frames, untyped memory,
//! endpoints, an I/O-port capability) can reach, and checks that the kernel keeps its promise
//! there. Each failed on the kernel before the fix it guards (the state is named in the test).

extern crate std;

use std::vec::Vec;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, IpcBuffer, MessageInfo, Syscall, USER_TOP};

use super::tests::{Fx, RIP, tcb};
use super::{address_space_of, fastpath};
use crate::object::delete::{self, Budget};
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY, SLOT_U_DEV, SLOT_U_MAIN};
use crate::object::kmem::SlotSpan;
use crate::object::tcb::{
    KERNEL_WRITTEN, SYSCALL_ENTRY, TCB_CSPACE, TCB_FAULT_HANDLER, TCB_IPC_BUFFER, TCB_VSPACE, Tcb, ThreadState,
};
use crate::object::{Cap, mdb};

const DEPTH: u64 = ROOT_RADIX as u64;

/// The kernel address of the object a slot's capability names.
fn object_of(fx: &Fx, slot: u64) -> u64 {
    match fx.w.slot(slot).cap() {
        Cap::Frame { ptr, .. } | Cap::CNode { ptr, .. } | Cap::Tcb { ptr } | Cap::Untyped { ptr, .. } => ptr,
        Cap::Paging { ptr, .. } | Cap::Endpoint { ptr, .. } | Cap::Notification { ptr, .. } => ptr,
        c => panic!("no object: {c:?}"),
    }
}

fn bytes(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: the tests read memory of the world's arena, which lives as long as the fixture.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len) }.to_vec()
}

fn delete(fx: &mut Fx, slot: u64) -> u64 {
    fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[slot, DEPTH], &[]).rax
}

fn revoke(fx: &mut Fx, slot: u64) -> u64 {
    fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[slot, DEPTH], &[]).rax
}

/// The capability slots of a fixture thread.
fn slots(t: *mut Tcb) -> SlotSpan {
    // SAFETY: the tests pass TCBs of their fixture, alive for the whole test.
    unsafe { Tcb::slots_of(t) }
}

/// Give the thread `t` an address space (a copy of a new PML4 capability in its VSpace slot),
/// as a thread needs to be resumed.
fn give_vspace(fx: &mut Fx, t: *mut Tcb) {
    let pml4 = fx.retype(ObjectType::Pml4);
    let dest = slots(t).slot(TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
}

/// A copy of the capability in `src` with `rights` and `badge`, in a new slot.
fn mint(fx: &mut Fx, src: u64, rights: u64, badge: u64) -> u64 {
    let dest = fx.free_slot();
    let r = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_MINT, &[dest, DEPTH, src, DEPTH, rights, badge], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0, "mint of slot {src}");
    dest
}

fn check_world(fx: &Fx) {
    if let Err(e) = fx.w.check_invariants(false) {
        panic!("kernel invariants broken: {e}");
    }
}

// ---- 1. the IPC buffer is looked up through its slot, never cached ----

#[test]
fn a_revoked_ipc_buffer_is_never_written_whatever_its_memory_became() {
    let mut fx = Fx::new();
    let (rs, r) = fx.thread();
    let (_, s) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let ut = fx.retype_from(SLOT_U_MAIN, ObjectType::Untyped, 12);
    let frame = fx.retype_from(ut, ObjectType::Frame4K, 0);
    assert_eq!(fx.invoke(rs, inv::TCB_SET_IPC_BUFFER, &[0x10_0400], &[frame]).rax, 0);
    let page = object_of(&fx, frame);
    assert_eq!(tcb(r).ipc_buffer(), Some((page + 0x400) as *mut IpcBuffer));

    // Revoking the untyped deletes every copy of the frame, the TCB's own included; its memory
    // is then a CNode (a page table would do as well).
    assert_eq!(revoke(&mut fx, ut), 0);
    assert_eq!(tcb(r).ipc_buffer(), None);
    let cnode = fx.retype_from(ut, ObjectType::CNode, 6);
    assert_eq!(object_of(&fx, cnode), page);
    let before = bytes(page, 4096);

    // A long message to the thread: crafted words that would be capabilities in the CNode.
    fx.sys(r, Syscall::Recv, ep, 0, &[], &[]);
    let words: Vec<u64> = (0..30).map(|i| 0x4141_0000_0000_0000 | i).collect();
    assert_eq!(fx.sys(s, Syscall::Send, ep, 7, &words, &[]).rax, 0);
    assert_eq!(tcb(r).state, ThreadState::Running);
    assert_eq!(MessageInfo(tcb(r).regs.rsi).length(), 4, "cut to the register words: no buffer");
    assert_eq!(tcb(r).regs.r15, words[3]);
    assert_eq!(bytes(page, 4096), before, "the CNode's memory is untouched");
    // Results of invocations do not reach it either.
    fx.sys(r, Syscall::Call, SLOT_U_MAIN, inv::UNTYPED_GET_INFO, &[], &[]);
    assert_eq!(bytes(page, 4096), before);
    check_world(&fx);
}

#[test]
fn device_frames_are_refused_as_ipc_buffers() {
    let mut fx = Fx::new();
    let (ts, _) = fx.thread();
    let dev = fx.retype_from(SLOT_U_DEV, ObjectType::Frame4K, 0);
    assert_eq!(fx.invoke(ts, inv::TCB_SET_IPC_BUFFER, &[0x10_0000], &[dev]).rax, Error::IllegalOperation as u64);
    let normal = fx.retype(ObjectType::Frame4K);
    assert_eq!(fx.invoke(ts, inv::TCB_SET_IPC_BUFFER, &[0x10_0000], &[normal]).rax, 0);
}

// ---- 2. the reply right lives only while both threads do ----

#[test]
fn a_late_reply_never_answers_a_later_call() {
    let mut fx = Fx::new();
    let (cs, c) = fx.thread();
    give_vspace(&mut fx, c);
    let (_, s1) = fx.thread();
    let (_, s2) = fx.thread();
    let (ep1, ep2) = (fx.retype(ObjectType::Endpoint), fx.retype(ObjectType::Endpoint));
    fx.sys(s1, Syscall::Recv, ep1, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep1, 0, &[1], &[]);
    assert_eq!((tcb(s1).caller, tcb(c).reply_holder), (c as u64, s1 as u64));

    // The caller is suspended: nobody can reply to it any more, and its Call will run again.
    assert_eq!(fx.invoke(cs, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert_eq!((tcb(s1).caller, tcb(c).reply_holder), (0, 0));
    assert_eq!((tcb(c).regs.rip, tcb(c).regs.vector), (RIP - 2, KERNEL_WRITTEN));
    assert_eq!(fx.invoke(cs, inv::TCB_RESUME, &[], &[]).rax, 0);
    assert_eq!(tcb(c).state, ThreadState::Restart);

    // Its next Call goes to another server; the first server's late reply reaches nobody.
    fx.sys(s2, Syscall::Recv, ep2, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep2, 0, &[2], &[]);
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: false });
    assert_eq!(fx.sys(s1, Syscall::Reply, 0, 0, &[0xbad], &[]).rax, 0);
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: false });
    fx.sys(s2, Syscall::Reply, 0, 0, &[42], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.r10), (ThreadState::Running, 42));
}

#[test]
fn deleting_either_side_of_a_call_cuts_the_reply_right() {
    let mut fx = Fx::new();
    let (cs, c) = fx.thread();
    let (ss, s) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep, 0, &[1], &[]);
    // The caller's TCB goes: the server's right goes with it, so its memory, whatever it
    // becomes, is never "replied to".
    assert_eq!(delete(&mut fx, cs), 0);
    assert_eq!(tcb(s).caller, 0);
    assert_eq!(fx.sys(s, Syscall::Reply, 0, 0, &[7], &[]).rax, 0);
    check_world(&fx);

    // The server's TCB goes: the caller is woken with `ReplyLost` (seL4 would leave it blocked),
    // and nobody holds a right to it.
    let (_, c2) = fx.thread();
    let (ss2, s2) = fx.thread();
    fx.sys(s2, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(c2, Syscall::Call, ep, 0, &[1], &[]);
    assert_eq!(tcb(c2).reply_holder, s2 as u64);
    assert_eq!(delete(&mut fx, ss2), 0);
    assert_eq!(
        (tcb(c2).state, tcb(c2).reply_holder, tcb(c2).regs.rax),
        (ThreadState::Running, 0, Error::ReplyLost as u64)
    );
    check_world(&fx);
    let _ = ss;
}

#[test]
fn a_server_that_receives_again_gives_up_its_reply_right() {
    let mut fx = Fx::new();
    let (_, c) = fx.thread();
    let (_, s) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep, 0, &[1], &[]);
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    assert_eq!(
        (tcb(s).caller, tcb(c).reply_holder, tcb(c).state),
        (0, 0, ThreadState::BlockedOnReply { interruptible: false })
    );
}

#[test]
fn the_reply_may_carry_capabilities_only_if_the_receivers_capability_grants() {
    let mut fx = Fx::new();
    let (_, c) = fx.thread();
    let (_, s) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    // The server receives through a capability without the grant right; the client calls with
    // every right. (The caller's capability decided before: it could grant through the reply.)
    let no_grant = mint(&mut fx, ep, ozone_abi::rights::READ | ozone_abi::rights::WRITE, 0);
    fx.sys(s, Syscall::Recv, no_grant, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep, 0, &[1], &[]);
    assert_eq!((tcb(s).caller, tcb(s).caller_can_grant), (c as u64, false));
    fx.sys(s, Syscall::Reply, 0, 0, &[], &[]);
    // And the other way round: a client whose capability may only grant replies, a server that
    // may grant.
    let reply_only = mint(&mut fx, ep, ozone_abi::rights::WRITE | ozone_abi::rights::GRANT_REPLY, 0);
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(c, Syscall::Call, reply_only, 0, &[1], &[]);
    assert_eq!((tcb(s).caller, tcb(s).caller_can_grant), (c as u64, true));
}

// ---- 3. a thread without a VSpace runs in no one's address space ----

#[test]
fn a_thread_whose_vspace_is_deleted_runs_on_the_kernel_pml4() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let pml4 = fx.retype(ObjectType::Pml4);
    // A stand-in for the kernel's PML4 (the fixture has none; only compared here).
    fx.k.kernel_pml4 = 0x7000_0000;
    assert_eq!(fx.invoke(ts, inv::TCB_SET_SPACE, &[0], &[SLOT_ROOT_COPY, pml4]).rax, 0);
    assert_eq!(address_space_of(&fx.k, tcb(t)), object_of(&fx, pml4));
    // Revoke and delete the PML4: the TCB's copy goes too; the thread is still runnable.
    assert_eq!(revoke(&mut fx, pml4), 0);
    assert_eq!(delete(&mut fx, pml4), 0);
    assert!(slots(t).slot(TCB_VSPACE as u64).unwrap().is_empty());
    assert!(tcb(t).state.is_runnable());
    assert_eq!(address_space_of(&fx.k, tcb(t)), 0x7000_0000);
}

// ---- 4. installing a TCB's capabilities re-checks what its deletions destroyed ----

/// A thread `a` whose CSpace root is the last capability to a CNode N1 holding, in slot 1, a
/// copy of a's TCB capability, in slot 2 the only capability to a CNode N2 and in slot 3 a copy
/// of a PML4 capability. Returns a's TCB.
fn thread_rooted_in_its_own_cnode(fx: &mut Fx) -> *mut Tcb {
    let (as_, a) = fx.thread();
    let n1 = fx.retype_from(SLOT_U_MAIN, ObjectType::CNode, 4);
    let n2 = fx.retype_from(SLOT_U_MAIN, ObjectType::CNode, 4);
    let pml4 = fx.retype(ObjectType::Pml4);
    let n1_cap = fx.w.slot(n1).cap();
    let span = SlotSpan::of_cnode(&n1_cap).unwrap();
    mdb::cte_insert(fx.w.slot(as_).cap(), fx.w.slot(as_), span.slot(1).unwrap());
    mdb::cte_move(fx.w.slot(n2).cap(), fx.w.slot(n2), span.slot(2).unwrap());
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), span.slot(3).unwrap());
    let cs_slot = slots(a).slot(TCB_CSPACE as u64).unwrap();
    assert_eq!(delete::delete(cs_slot, &mut *fx.k, &mut Budget::unlimited()), delete::Progress::Done);
    let Cap::CNode { ptr, radix, .. } = n1_cap else { unreachable!() };
    mdb::cte_insert(Cap::CNode { ptr, radix, guard_size: 64 - radix, guard: 0 }, fx.w.slot(n1), cs_slot);
    assert_eq!(delete(fx, n1), 0);
    a
}

#[test]
fn set_space_refuses_a_source_its_own_deletion_destroyed() {
    let mut fx = Fx::new();
    let a = thread_rooted_in_its_own_cnode(&mut fx);
    fx.machine.space.set(1);
    fx.k.kernel_pml4 = 0x7000_0000;
    // a installs N2 (its cap 2) as its own CSpace: deleting the old root destroys N1, and with it
    // the only capability to N2. The kernel must notice, not install a capability to a dead CNode.
    let r = fx.sys(a, Syscall::Call, 1, inv::TCB_SET_SPACE, &[0], &[2, 3]);
    assert_eq!(r.rax, Error::InvalidCapability as u64);
    assert!(slots(a).slot(TCB_CSPACE as u64).unwrap().is_empty());
    // The thread configured itself: the CPU left whatever address space it had for the kernel's.
    assert_eq!(fx.machine.space.get(), 0x7000_0000);
    check_world(&fx);
}

#[test]
fn replacing_a_big_cspace_root_is_preemptible() {
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    // t's CSpace root is the last capability to a CNode of 256 slots, each a copy of an
    // endpoint capability: deleting it is more work than one kernel entry may do.
    let big = fx.retype_from(SLOT_U_MAIN, ObjectType::CNode, 8);
    let ep = fx.retype(ObjectType::Endpoint);
    let big_cap = fx.w.slot(big).cap();
    let span = SlotSpan::of_cnode(&big_cap).unwrap();
    for i in 0..256 {
        mdb::cte_insert(fx.w.slot(ep).cap(), fx.w.slot(ep), span.slot(i).unwrap());
    }
    let cs_slot = slots(t).slot(TCB_CSPACE as u64).unwrap();
    assert_eq!(delete::delete(cs_slot, &mut *fx.k, &mut Budget::unlimited()), delete::Progress::Done);
    mdb::cte_insert(big_cap, fx.w.slot(big), cs_slot);
    assert_eq!(delete(&mut fx, big), 0);

    let restarts = fx.restarts;
    let pml4 = fx.retype(ObjectType::Pml4);
    assert_eq!(fx.invoke(ts, inv::TCB_SET_SPACE, &[0], &[SLOT_ROOT_COPY, pml4]).rax, 0);
    assert!(fx.restarts > restarts, "the deletion was preempted at least once");
    assert!(matches!(cs_slot.cap(), Cap::CNode { .. }));
    assert!(!mdb::has_children(fx.w.slot(ep)), "every copy went with the old root");
    // SetIPCBuffer(0) deletes on a budget too (a single frame: done at once).
    assert_eq!(fx.invoke(ts, inv::TCB_SET_IPC_BUFFER, &[0], &[]).rax, 0);
    assert!(slots(t).slot(TCB_IPC_BUFFER as u64).unwrap().is_empty());
    check_world(&fx);
}

// ---- 5. no user RIP outside user memory ----

#[test]
fn user_memory_ends_a_page_below_the_canonical_hole() {
    assert_eq!(USER_TOP, 0x7fff_ffff_f000);
    let mut fx = Fx::new();
    let (ts, _) = fx.thread();
    // WriteRegisters and the TLS base refuse a RIP or base at or above it.
    for bad in [USER_TOP, 0x8000_0000_0000, u64::MAX] {
        let r = fx.invoke(ts, inv::TCB_WRITE_REGISTERS, &[0, 1, bad], &[]);
        assert_eq!(r.rax, Error::InvalidArgument as u64);
        assert_eq!(fx.invoke(ts, inv::TCB_SET_TLS_BASE, &[bad], &[]).rax, Error::InvalidArgument as u64);
    }
    assert_eq!(fx.invoke(ts, inv::TCB_WRITE_REGISTERS, &[0, 1, USER_TOP - 2], &[]).rax, 0);
}

// ---- 6. I/O port ranges ----

#[test]
fn io_port_accesses_stay_inside_the_capability_and_never_wrap() {
    let mut fx = Fx::new();
    let io = fx.free_slot();
    // SAFETY: the slot is empty; an I/O-port capability names no memory.
    unsafe { mdb::insert_root_cap(fx.w.slot(io), Cap::IoPort { first: 0xfff0, last: 0xffff }) };
    let range = Error::RangeError as u64;
    assert_eq!(fx.invoke(io, inv::IO_PORT_IN16, &[0xfffe], &[]).rax, 0);
    assert_eq!(fx.invoke(io, inv::IO_PORT_IN32, &[0xfffe], &[]).rax, range);
    assert_eq!(fx.invoke(io, inv::IO_PORT_IN32, &[0xfffc], &[]).rax, 0);
    assert_eq!(fx.invoke(io, inv::IO_PORT_OUT8, &[0xffef, 0], &[]).rax, range);
    for port in [u64::MAX, u64::MAX - 1, 1 << 63, 0x1_0000] {
        assert_eq!(fx.invoke(io, inv::IO_PORT_IN32, &[port], &[]).rax, range, "port {port:#x}");
        assert_eq!(fx.invoke(io, inv::IO_PORT_OUT8, &[port, 0], &[]).rax, range, "port {port:#x}");
    }
}

// ---- 8. the fastpath moves exactly the message ----

#[test]
fn the_fastpath_copies_only_the_message_words() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (_, client) = fx.thread();
    let (_, server) = fx.thread();
    // Warm both directions up so that the fastpath takes them (see the profile tests).
    fx.sys(server, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(client, Syscall::Call, ep, 0, &[1], &[]);
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[1], &[]);
    for length in 0..=4u64 {
        let (s, c) = (tcb(server), tcb(client));
        (s.regs.r10, s.regs.r8, s.regs.r9, s.regs.r15) = (0x50, 0x51, 0x52, 0x53);
        (c.regs.r10, c.regs.r8, c.regs.r9, c.regs.r15) = (0xc0, 0xc1, 0xc2, 0xc3);
        c.regs.rdi = ep;
        c.regs.rsi = MessageInfo::new(9, 0, 0, length).0;
        fx.make_current(client);
        assert!(fastpath::call(&mut fx.k, tcb(client)), "length {length} takes the fastpath");
        let s = tcb(server);
        let got = [s.regs.r10, s.regs.r8, s.regs.r9, s.regs.r15];
        let want: Vec<u64> = (0..4).map(|i| if i < length { 0xc0 + i } else { 0x50 + i }).collect();
        assert_eq!(got.to_vec(), want, "length {length}: the server's other registers are its own");
        assert_eq!(MessageInfo(s.regs.rsi).length(), length);
        // And back, with the same rule.
        (s.regs.r10, s.regs.r8, s.regs.r9, s.regs.r15) = (0xd0, 0xd1, 0xd2, 0xd3);
        let c = tcb(client);
        (c.regs.r10, c.regs.r8, c.regs.r9, c.regs.r15) = (0xe0, 0xe1, 0xe2, 0xe3);
        s.regs.rdi = ep;
        s.regs.rsi = MessageInfo::new(0, 0, 0, length).0;
        fx.make_current(server);
        assert!(fastpath::reply_recv(&mut fx.k, tcb(server)));
        let c = tcb(client);
        let got = [c.regs.r10, c.regs.r8, c.regs.r9, c.regs.r15];
        let want: Vec<u64> = (0..4).map(|i| if i < length { 0xd0 + i } else { 0xe0 + i }).collect();
        assert_eq!(got.to_vec(), want, "length {length}: the client's other registers are its own");
    }
}

// ---- 9. a syscall taken out of blocking IPC is executed again ----

#[test]
fn a_receive_on_a_deleted_endpoint_runs_again_and_fails() {
    let mut fx = Fx::new();
    let (_, w) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    fx.sys(w, Syscall::Recv, ep, 0, &[], &[]);
    assert_eq!(delete(&mut fx, ep), 0);
    let t = tcb(w);
    assert_eq!((t.state, t.regs.rip, t.regs.vector), (ThreadState::Restart, RIP - 2, KERNEL_WRITTEN));
    // When it runs it executes the `syscall` again: its Recv now names an empty slot.
    assert_eq!(fx.sys(w, Syscall::Recv, ep, 0, &[], &[]).rax, Error::InvalidCapability as u64);
}

#[test]
fn cancelled_badged_sends_and_resumed_receives_run_again() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let badged = mint(&mut fx, ep, ozone_abi::rights::ALL, 5);
    let (_, s) = fx.thread();
    fx.sys(s, Syscall::Send, badged, 0, &[1], &[]);
    assert!(matches!(tcb(s).state, ThreadState::BlockedOnSend { badge: 5, .. }));
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_CANCEL_BADGED_SENDS, &[badged, DEPTH], &[]).rax, 0);
    assert_eq!((tcb(s).state, tcb(s).regs.rip), (ThreadState::Restart, RIP - 2));

    // Suspend and Resume of a blocked receiver: it receives again, and gets a real message.
    let (ws, w) = fx.thread();
    give_vspace(&mut fx, w);
    fx.sys(w, Syscall::Recv, ep, 0, &[], &[]);
    assert_eq!(fx.invoke(ws, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert_eq!(fx.invoke(ws, inv::TCB_RESUME, &[], &[]).rax, 0);
    assert_eq!((tcb(w).state, tcb(w).regs.rip), (ThreadState::Restart, RIP - 2));
    fx.sys(w, Syscall::Recv, ep, 0, &[], &[]);
    assert!(matches!(tcb(w).state, ThreadState::BlockedOnReceive { .. }), "blocked again");
    fx.sys(s, Syscall::Send, badged, 3, &[0x77], &[]);
    assert_eq!((tcb(w).state, tcb(w).regs.rdi, tcb(w).regs.r10), (ThreadState::Running, 5, 0x77));

    // A thread suspended while running (its last syscall completed) is not rewound.
    let (ws2, w2) = fx.thread();
    give_vspace(&mut fx, w2);
    assert_eq!(fx.sys(w2, Syscall::NbRecv, ep, 0, &[], &[]).rax, 0);
    assert_eq!(tcb(w2).regs.vector, SYSCALL_ENTRY);
    assert_eq!(fx.invoke(ws2, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert_eq!(fx.invoke(ws2, inv::TCB_RESUME, &[], &[]).rax, 0);
    assert_eq!(tcb(w2).regs.rip, RIP, "a completed syscall is not run twice");
}

#[test]
fn a_receive_completed_by_a_bound_signal_is_not_run_again() {
    let mut fx = Fx::new();
    let (ws, w) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let n = fx.retype(ObjectType::Notification);
    assert_eq!(fx.invoke(ws, inv::TCB_BIND_NOTIFICATION, &[], &[n]).rax, 0);
    fx.sys(w, Syscall::Recv, ep, 0, &[], &[]);
    let d = fx.driver();
    fx.sys(d, Syscall::Send, n, 0, &[], &[]);
    let t = tcb(w);
    assert_eq!((t.state, t.regs.rip, t.regs.vector), (ThreadState::Running, RIP, SYSCALL_ENTRY));
}

// ---- the fault reply cannot aim a thread outside user memory ----

#[test]
fn a_fault_reply_cannot_set_a_rip_outside_user_memory() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let (ts, t) = fx.thread();
    let (_, handler) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, ep), 0);
    for (new_rip, want) in [(0x8000_0000_0000u64, 0), (u64::MAX, 0), (USER_TOP, 0), (USER_TOP - 0x10, USER_TOP - 0x10)]
    {
        fx.sys(handler, Syscall::Recv, ep, 0, &[], &[]);
        // An unknown syscall number is a fault for the handler.
        (tcb(t).regs.rip, tcb(t).regs.vector) = (RIP, SYSCALL_ENTRY);
        fx.make_current(t);
        super::handle_syscall(&mut fx.k, -77);
        assert_eq!(tcb(t).state, ThreadState::BlockedOnReply { interruptible: false });
        fx.sys(handler, Syscall::Reply, 0, 0, &[1, new_rip], &[]);
        assert_eq!(tcb(t).state, ThreadState::Running);
        assert_eq!(tcb(t).regs.rip, want, "reply rip {new_rip:#x}");
    }
}

#[test]
fn a_frame_cannot_be_mapped_in_the_last_page_below_the_canonical_hole() {
    let mut fx = Fx::new();
    let pml4 = fx.retype(ObjectType::Pml4);
    let tables = [ObjectType::Pdpt, ObjectType::PageDirectory, ObjectType::PageTable].map(|t| fx.retype(t));
    let last = 0x7fff_ffff_f000u64;
    for t in tables {
        assert_eq!(fx.invoke(t, inv::PAGING_MAP, &[last - 0x1000], &[pml4]).rax, 0);
    }
    let frame = fx.retype(ObjectType::Frame4K);
    let rw = ozone_abi::rights::READ | ozone_abi::rights::WRITE;
    assert_eq!(
        fx.invoke(frame, inv::FRAME_MAP, &[last, rw, inv::MAP_EXECUTABLE], &[pml4]).rax,
        Error::InvalidArgument as u64
    );
    assert_eq!(fx.invoke(frame, inv::FRAME_MAP, &[last - 0x1000, rw, 0], &[pml4]).rax, 0);
}

// ---- the invariant checker itself ----

#[test]
fn the_invariant_checker_notices_broken_links() {
    let mut fx = Fx::new();
    let (_, c) = fx.thread();
    let (_, s) = fx.thread();
    let (_, other) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(c, Syscall::Call, ep, 0, &[1], &[]);
    let verdict = |fx: &Fx| {
        let caps: Vec<Cap> = fx.w.scan().unwrap().iter().map(|s| s.cap()).collect();
        super::invariants::check(&fx.k, caps, &[])
    };
    assert_eq!(verdict(&fx), Ok(()));
    // A reply right to a thread that is not waiting for it (the old kernel's late reply).
    tcb(s).caller = other as u64;
    let e = verdict(&fx).unwrap_err();
    assert!(e.contains("may reply to") || e.contains("holds its reply right"), "{e}");
    tcb(s).caller = c as u64;
    // A thread blocked on an endpoint that is not in its queue.
    let saved = tcb(other).state;
    tcb(other).state = ThreadState::BlockedOnReceive { ep: object_of(&fx, ep), can_grant: true };
    let e = verdict(&fx).unwrap_err();
    assert!(e.contains("not in the queue") || e.contains("does not belong"), "{e}");
    tcb(other).state = saved;
    // A runnable thread that is neither current nor ready (it would never run again).
    // SAFETY: a live fixture thread.
    unsafe { fx.k.sched.remove(other) };
    assert!(verdict(&fx).unwrap_err().contains("neither current nor in a ready queue"));
    // SAFETY: `other` is a live, runnable fixture thread in no queue.
    unsafe { fx.k.sched.push_back(other) };
    // A fault outside its delivery.
    tcb(other).fault = crate::object::tcb::Fault::UnknownSyscall { number: 1 };
    assert!(verdict(&fx).unwrap_err().contains("outside its delivery"));
    tcb(other).fault = crate::object::tcb::Fault::None;
    assert_eq!(verdict(&fx), Ok(()));
}

#[test]
fn a_cancelled_fault_delivery_leaves_no_fault_behind() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let badged = mint(&mut fx, ep, ozone_abi::rights::ALL, 9);
    let (ts, t) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, badged), 0);
    // An unknown syscall while nobody receives on the handler's endpoint: queued as a fault.
    (tcb(t).regs.rip, tcb(t).regs.vector) = (RIP, SYSCALL_ENTRY);
    fx.make_current(t);
    super::handle_syscall(&mut fx.k, -77);
    assert!(matches!(tcb(t).state, ThreadState::BlockedOnSend { is_call: true, .. }));
    // The handler's owner cancels the badged sends: the thread restarts with no fault pending
    // (a stale one would turn its next Call's reply into a fault reply that sets its RIP).
    assert_eq!(fx.invoke(SLOT_ROOT_COPY, inv::CNODE_CANCEL_BADGED_SENDS, &[badged, DEPTH], &[]).rax, 0);
    assert_eq!((tcb(t).state, tcb(t).fault), (ThreadState::Restart, crate::object::tcb::Fault::None));
    fx.check("CancelBadgedSends of a fault delivery");
    // The same through the endpoint's deletion.
    (tcb(t).regs.rip, tcb(t).regs.vector) = (RIP, SYSCALL_ENTRY);
    fx.make_current(t);
    super::handle_syscall(&mut fx.k, -77);
    assert!(matches!(tcb(t).state, ThreadState::BlockedOnSend { is_call: true, .. }));
    // (Revoked first: the thread's fault-handler slot holds a copy of `badged`, a descendant.)
    assert_eq!(revoke(&mut fx, ep), 0);
    assert_eq!(delete(&mut fx, ep), 0);
    assert_eq!((tcb(t).state, tcb(t).fault), (ThreadState::Restart, crate::object::tcb::Fault::None));
    fx.check("deletion of a fault endpoint");
}

#[test]
fn a_ready_thread_whose_priority_changes_stays_ready() {
    let mut fx = Fx::new();
    // The driver's own TCB capability is the authority: the fixture's driver may give any
    // priority up to its MCP, and the threads it makes start with its MCP.
    let d = fx.driver();
    tcb(d).mcp = 255;
    let (ts, t) = fx.thread();
    assert!(tcb(t).queued);
    assert_eq!(tcb(t).mcp, 255, "a new thread's ceiling is its creator's");
    let driver = fx.free_slot();
    // SAFETY: the slot is empty; the driver is a live TCB that no capability names yet.
    unsafe { mdb::insert_root_cap(fx.w.slot(driver), Cap::Tcb { ptr: d as u64 }) };
    assert_eq!(fx.invoke(ts, inv::TCB_SET_PRIORITY, &[200], &[driver]).rax, 0);
    assert_eq!((tcb(t).priority, tcb(t).queued), (200, true), "re-queued at its new priority");
    fx.check("SetPriority of a ready thread");
}

// ---- I/O-port control never issues the kernel's own ports ----

#[test]
fn io_port_control_never_issues_a_port_the_kernel_drives() {
    let mut fx = Fx::new();
    let control = fx.free_slot();
    // SAFETY: the slot is empty; the I/O-port control capability names no memory.
    unsafe { mdb::insert_root_cap(fx.w.slot(control), Cap::IoPortControl) };
    let issue = |fx: &mut Fx, first: u64, last: u64| {
        let dest = fx.free_slot();
        let r = fx.invoke(control, inv::IO_PORT_CONTROL_ISSUE, &[first, last, dest, DEPTH], &[SLOT_ROOT_COPY]).rax;
        (r, fx.w.slot(dest).cap())
    };
    // The test machine drives port 0x20: no range that holds it is issued, however it is cut.
    for (first, last) in [(0x20, 0x20), (0x1f, 0x20), (0x20, 0x21), (0, 0xffff), (0x10, 0x30)] {
        let (r, cap) = issue(&mut fx, first, last);
        assert_eq!(r, Error::IllegalOperation as u64, "{first:#x}..={last:#x}");
        assert_eq!(cap, Cap::Null, "nothing issued for {first:#x}..={last:#x}");
        assert_eq!(fx.k.last_refusal.map(|r| r.why), Some("the range holds ports the kernel drives"));
    }
    // Its neighbours are.
    for (first, last) in [(0x1f, 0x1f), (0x21, 0x2f)] {
        let (r, cap) = issue(&mut fx, first, last);
        assert_eq!(r, 0);
        assert_eq!(cap, Cap::IoPort { first: first as u16, last: last as u16 });
    }
}

// ---- the fault-handler slot: what it takes, where it comes from, when it empties ----

fn slot_of(t: *mut Tcb, index: usize) -> crate::object::kmem::SlotRef {
    slots(t).slot(index as u64).expect("a TCB slot")
}

#[test]
fn set_fault_handler_takes_only_an_endpoint_that_can_carry_a_fault() {
    use ozone_abi::rights::{GRANT, GRANT_REPLY, READ, WRITE};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let ntfn = fx.retype(ObjectType::Notification);
    let frame = fx.retype(ObjectType::Frame4K);
    let empty = fx.free_slot();
    let handler = slot_of(t, TCB_FAULT_HANDLER);
    // Not an endpoint, or nothing at all: InvalidCapability.
    for s in [ntfn, frame, ts, SLOT_ROOT_COPY, empty] {
        assert_eq!(fx.set_fault_handler(ts, s), Error::InvalidCapability as u64, "slot {s}");
    }
    // An endpoint without the write right, or with neither grant nor grant-reply:
    // IllegalOperation (the Call could not be sent, or could never be answered).
    for r in [READ, READ | GRANT | GRANT_REPLY, WRITE, READ | WRITE] {
        let c = mint(&mut fx, ep, r, 0x40 + r);
        assert_eq!(fx.set_fault_handler(ts, c), Error::IllegalOperation as u64, "rights {r:#x}");
    }
    assert!(handler.is_empty(), "a refused SetFaultHandler changes nothing");
    // More than one capability: InvalidArgument.
    let ok = mint(&mut fx, ep, WRITE | GRANT_REPLY, 7);
    let r = fx.invoke(ts, inv::TCB_SET_FAULT_HANDLER, &[], &[ok, ok]);
    assert_eq!(r.rax, Error::InvalidArgument as u64);
    assert!(handler.is_empty());
    // Write with grant-reply, or with grant: taken, as a copy with the badge and rights.
    assert_eq!(fx.set_fault_handler(ts, ok), 0);
    assert!(matches!(handler.cap(), Cap::Endpoint { badge: 7, rights, .. } if rights.bits() == WRITE | GRANT_REPLY));
    let g = mint(&mut fx, ep, WRITE | GRANT, 8);
    assert_eq!(fx.set_fault_handler(ts, g), 0, "replacing the handler");
    assert!(matches!(handler.cap(), Cap::Endpoint { badge: 8, .. }));
    // No capability: the slot is emptied.
    assert_eq!(fx.set_fault_handler(ts, 0), 0);
    assert!(handler.is_empty());
    // Configure and SetSpace no longer take a fault-handler word: MR0 must be 0.
    let pml4 = fx.retype(ObjectType::Pml4);
    for label in [inv::TCB_CONFIGURE, inv::TCB_SET_SPACE] {
        let r = fx.invoke(ts, label, &[ok, 0, 0], &[SLOT_ROOT_COPY, pml4]);
        assert_eq!(r.rax, Error::InvalidArgument as u64, "label {label}");
    }
    assert!(handler.is_empty());
}

#[test]
fn a_fault_goes_to_the_slot_copy_whatever_the_faulting_thread_holds() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let badged = mint(&mut fx, ep, ozone_abi::rights::WRITE | ozone_abi::rights::GRANT_REPLY, 0x77);
    let (ts, t) = fx.thread();
    let (_, handler) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, badged), 0);
    // The capability it was copied from goes: the copy in the TCB stays (deleting is not
    // revoking), and no capability with that badge is left in any CSpace.
    assert_eq!(delete(&mut fx, badged), 0);
    assert!(
        fx.w.scan().unwrap().iter().all(|s| !matches!(s.cap(), Cap::Endpoint { badge: 0x77, .. })
            || s.addr() == slot_of(t, TCB_FAULT_HANDLER).addr())
    );
    fx.sys(handler, Syscall::Recv, ep, 0, &[], &[]);
    (tcb(t).regs.rip, tcb(t).regs.vector) = (RIP, SYSCALL_ENTRY);
    fx.make_current(t);
    super::handle_syscall(&mut fx.k, -77);
    fx.check("a fault through the slot copy");
    assert_eq!(tcb(t).state, ThreadState::BlockedOnReply { interruptible: false });
    let m = fx.out(handler);
    assert_eq!((m.label, tcb(handler).regs.rdi), (ozone_abi::fault::UNKNOWN_SYSCALL, 0x77));
    // A message from the thread itself with a fault label is an ordinary message (badge 0: it
    // can only use the capabilities of its CSpace) and sets no fault.
    fx.sys(handler, Syscall::Reply, 0, 0, &[0], &[]);
    assert_eq!(tcb(t).state, ThreadState::Running);
    fx.sys(handler, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(t, Syscall::Call, ep, ozone_abi::fault::DENIED, &[1, 2, 3, 4], &[]);
    assert_eq!(
        (tcb(t).state, tcb(t).fault),
        (ThreadState::BlockedOnReply { interruptible: false }, crate::object::tcb::Fault::None)
    );
    assert_eq!((fx.out(handler).label, tcb(handler).regs.rdi), (ozone_abi::fault::DENIED, 0));
}

#[test]
fn revoking_the_fault_endpoint_empties_the_slot_and_the_fault_then_has_no_handler() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let badged = mint(&mut fx, ep, ozone_abi::rights::ALL, 5);
    let (ts, t) = fx.thread();
    assert_eq!(fx.set_fault_handler(ts, badged), 0);
    assert!(!slot_of(t, TCB_FAULT_HANDLER).is_empty());
    // Revoking the badged capability takes its copy in the TCB away.
    assert_eq!(revoke(&mut fx, badged), 0);
    assert!(slot_of(t, TCB_FAULT_HANDLER).is_empty());
    // A fault now finds no handler: an unknown syscall returns UnknownSyscall, and any other
    // fault is refused delivery (the entry code then suspends the thread).
    (tcb(t).regs.rip, tcb(t).regs.vector) = (RIP, SYSCALL_ENTRY);
    fx.make_current(t);
    super::handle_syscall(&mut fx.k, -77);
    assert_eq!((tcb(t).state, tcb(t).regs.rax), (ThreadState::Running, Error::UnknownSyscall as u64));
    let vm = crate::object::tcb::Fault::VmFault { addr: 0x10, error: 4, ip: RIP };
    assert!(!super::raise_fault(&mut fx.k, t, vm));
    assert_eq!(tcb(t).fault, crate::object::tcb::Fault::None);
    fx.check("a fault with an empty handler slot");
    // The same when the endpoint itself is deleted (through its last capabilities).
    assert_eq!(fx.set_fault_handler(ts, badged), 0);
    assert_eq!(revoke(&mut fx, ep), 0);
    assert!(slot_of(t, TCB_FAULT_HANDLER).is_empty(), "revoking the original reaches every copy");
    assert_eq!(delete(&mut fx, ep), 0);
    fx.check("the fault endpoint deleted");
}

#[test]
fn deleting_the_thread_deletes_its_fault_handler_copy() {
    let mut fx = Fx::new();
    let ep = fx.retype(ObjectType::Endpoint);
    let badged = mint(&mut fx, ep, ozone_abi::rights::ALL, 5);
    let (ts, _) = fx.thread();
    let with_badge =
        |fx: &Fx| fx.w.scan().unwrap().iter().filter(|s| matches!(s.cap(), Cap::Endpoint { badge: 5, .. })).count();
    assert_eq!(fx.set_fault_handler(ts, badged), 0);
    assert_eq!(with_badge(&fx), 2, "the TCB holds a copy");
    assert!(mdb::has_children(fx.w.slot(badged)));
    assert_eq!(delete(&mut fx, ts), 0);
    assert_eq!(with_badge(&fx), 1, "the TCB's copy went with it");
    assert!(!mdb::has_children(fx.w.slot(badged)));
    check_world(&fx);
    fx.check("the TCB deleted");
}

// ---- no thread widens a syscall profile ----

#[test]
fn a_thread_cannot_allow_another_or_itself_more_than_it_is_allowed() {
    use ozone_abi::profile::{self, mask};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (us, _u) = fx.thread();
    // `t` may Call and invoke TCBs, nothing else.
    let own = mask(profile::CALL) | mask(profile::TCB);
    fx.set_allowed(ts, own);
    let set = |fx: &mut Fx, target: u64, allowed: u64| {
        fx.sys(t, Syscall::Call, target, inv::TCB_SET_PROFILE, &[allowed], &[]).rax
    };
    // Anything beyond its own mask, for another thread or for itself: IllegalOperation.
    for (target, allowed) in [(us, profile::ALL), (us, own | mask(profile::UNTYPED)), (ts, profile::ALL)] {
        assert_eq!(set(&mut fx, target, allowed), Error::IllegalOperation as u64, "{target}: {allowed:#x}");
    }
    assert_eq!(fx.profile(us).1, profile::ALL, "refused: unchanged");
    assert_eq!(fx.profile(ts).1, own);
    // Within it: allowed.
    assert_eq!(set(&mut fx, us, mask(profile::CALL)), 0);
    assert_eq!(fx.profile(us).1, mask(profile::CALL));
    // It may narrow itself, and then cannot widen itself back.
    assert_eq!(set(&mut fx, ts, own & !mask(profile::CALL) | mask(profile::TCB)), 0);
    assert_eq!(fx.profile(ts).1, mask(profile::TCB));
    // (Without Call it cannot invoke anything: denied before the rule is even reached.)
    assert_eq!(set(&mut fx, ts, own), Error::Denied as u64);
    assert_eq!(fx.profile(ts).1, mask(profile::TCB));
    // The driver (unrestricted) may give back anything.
    fx.set_allowed(ts, profile::ALL);
}

// ---- learning windows: the kernel ends a warm-up on time ----

/// A TCB capability to thread `t` in a new slot (as a program holding its own thread would).
fn tcb_cap(fx: &mut Fx, t: *mut Tcb) -> u64 {
    let s = fx.free_slot();
    // SAFETY: the slot is empty; a second capability to a live TCB, inserted as a root.
    unsafe { mdb::insert_root_cap(fx.w.slot(s), Cap::Tcb { ptr: t as u64 }) };
    s
}

/// GetProfile of the thread in `tcb_slot`: (used, allowed, the window's syscalls left if armed).
fn window(fx: &mut Fx, tcb_slot: u64) -> (u64, u64, Option<u64>) {
    let r = fx.invoke(tcb_slot, inv::TCB_GET_PROFILE, &[], &[]);
    assert_eq!(r.rax, 0);
    assert!(r.mrs[2] <= 1);
    (r.mrs[0], r.mrs[1], (r.mrs[2] == 1).then_some(r.mrs[3]))
}

#[test]
fn a_learning_window_ends_exactly_after_its_syscalls() {
    use ozone_abi::profile::{self, mask};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (_, server) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let ntfn = fx.retype(ObjectType::Notification);
    // Before the window: Call and ReplyRecv recorded, so both directions take the fastpaths.
    fx.sys(server, Syscall::Recv, ep, 0, &[], &[]);
    fx.sys(t, Syscall::Call, ep, 1, &[], &[]);
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);
    let call = |fx: &mut Fx| {
        fx.make_current(t);
        let c = tcb(t);
        (c.regs.rdi, c.regs.rsi, c.regs.rip, c.regs.vector) = (ep, MessageInfo::new(2, 0, 0, 0).0, RIP, SYSCALL_ENTRY);
        fastpath::call(&mut fx.k, c)
    };
    assert!(call(&mut fx), "taken before the window");
    fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);

    // Five syscalls of learning; a refused arm changes nothing.
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, u64::MAX], &[]).rax, Error::RangeError as u64);
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL], &[]).rax, Error::InvalidArgument as u64);
    assert_eq!(window(&mut fx, ts).2, None);
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 5], &[]).rax, 0);
    let used_before = window(&mut fx, ts).0;
    assert_eq!(window(&mut fx, ts), (used_before, profile::ALL, Some(5)));
    // While armed no syscall of the thread takes a fastpath (each is counted in the general
    // path), recorded bits included.
    assert!(!call(&mut fx), "no fastpath while a window is armed");
    assert_eq!(tcb(t).profile.window(), Some(5), "a fastpath that declines counts nothing");
    let learned = [
        (Syscall::Call, ep),     // 1: the server waits: a Call the general path takes
        (Syscall::NbSend, ntfn), // 2
        (Syscall::Yield, 0),     // 3
        (Syscall::NbRecv, ntfn), // 4
    ];
    for (i, (s, cptr)) in learned.into_iter().enumerate() {
        let r = fx.sys(t, s, cptr, 0, &[], &[]);
        assert_ne!(r.rax, Error::Denied as u64, "{s:?} learned");
        if s == Syscall::Call {
            fx.sys(server, Syscall::ReplyRecv, ep, 0, &[], &[]);
        }
        assert_eq!(window(&mut fx, ts).2, Some(4 - i as u64));
    }
    // An unknown syscall number counts too (the kernel's syscall count does), and records nothing.
    fx.make_current(t);
    (tcb(t).regs.rip, tcb(t).regs.vector) = (RIP, SYSCALL_ENTRY);
    super::handle_syscall(&mut fx.k, -77);
    assert_eq!(tcb(t).regs.rax, Error::UnknownSyscall as u64);
    let (used, allowed, left) = window(&mut fx, ts);
    assert_eq!((allowed, left), (profile::ALL, Some(0)), "all five learned, nothing narrowed yet");
    let expect = used_before | mask(profile::NB_SEND) | mask(profile::YIELD) | mask(profile::NB_RECV);
    assert_eq!(used, expect);

    // The sixth syscall narrows first, then is checked: a used class passes...
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(window(&mut fx, ts), (expect, expect, None));
    // ...the first class outside the learned profile is denied, and so is every later one.
    let denied = tcb(t).counters.denied;
    assert_eq!(fx.sys(t, Syscall::Send, ntfn, 0, &[], &[]).rax, Error::Denied as u64);
    assert_eq!(fx.sys(t, Syscall::Call, SLOT_U_MAIN, inv::UNTYPED_GET_INFO, &[], &[]).rax, Error::Denied as u64);
    assert_eq!(tcb(t).counters.denied, denied + 2);
    assert_eq!(window(&mut fx, ts).1, expect, "a denied use widens nothing");
    // The fastpaths are back for what it learned.
    assert!(call(&mut fx), "fastpath again after the window");
    fx.check("a learning window");
}

#[test]
fn a_window_ends_on_a_denied_syscall_too_and_the_next_arm_or_set_replaces_it() {
    use ozone_abi::profile::{self, mask};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let ntfn = fx.retype(ObjectType::Notification);
    // A window inside a narrower mask: the narrowing keeps inside it (used & allowed).
    let within = profile::ALL & !mask(profile::SEND);
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[within, 2], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Send, ntfn, 0, &[], &[]).rax, Error::Denied as u64, "denied while learning");
    assert_eq!(fx.sys(t, Syscall::NbSend, ntfn, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, Error::Denied as u64);
    let (used, allowed, left) = window(&mut fx, ts);
    assert_eq!((allowed, left), (mask(profile::NB_SEND), None));
    assert!(used & mask(profile::SEND) != 0, "the denied use is recorded, never allowed");
    // Arming again starts a new window; SetProfile replaces it.
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 0], &[]).rax, 0);
    fx.set_allowed(ts, profile::ALL);
    assert_eq!(window(&mut fx, ts), (used, profile::ALL, None));
    for _ in 0..3 {
        assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    }
    assert_eq!(window(&mut fx, ts).1, profile::ALL, "no window: never narrowed");
    // A window of 0: the very next syscall narrows. (`used` is never cleared: what the thread
    // ever tried, denied tries included, is what a later window learns.)
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 0], &[]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Send, ntfn, 0, &[], &[]).rax, 0);
    assert_eq!(window(&mut fx, ts), (used, used, None));
    assert_eq!(fx.sys(t, Syscall::Call, SLOT_U_MAIN, inv::UNTYPED_GET_INFO, &[], &[]).rax, Error::Denied as u64);
    fx.check("windows replaced");
}

#[test]
fn arming_follows_the_profile_rule_and_a_thread_cannot_move_its_own_window() {
    use ozone_abi::profile::{self, mask};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let (us, u) = fx.thread();
    let own = tcb_cap(&mut fx, t);
    // `t` may Call, invoke TCBs and Yield.
    let t_allowed = mask(profile::CALL) | mask(profile::TCB) | mask(profile::YIELD);
    fx.set_allowed(ts, t_allowed);
    let arm = |fx: &mut Fx, target: u64, allowed: u64, n: u64| {
        fx.sys(t, Syscall::Call, target, inv::TCB_ARM_PROFILE, &[allowed, n], &[]).rax
    };
    // Arming cannot widen past the invoker's own profile, for another thread or itself.
    for (target, allowed) in [(us, profile::ALL), (us, t_allowed | mask(profile::SEND)), (own, profile::ALL)] {
        assert_eq!(arm(&mut fx, target, allowed, 10), Error::IllegalOperation as u64);
    }
    assert_eq!(window(&mut fx, us), (0, profile::ALL, None), "refused: unchanged");
    assert_eq!(arm(&mut fx, us, mask(profile::YIELD) | mask(profile::CALL), 1), 0);
    assert_eq!(window(&mut fx, us).1, mask(profile::YIELD) | mask(profile::CALL));
    // Its narrowing never reaches past what the arming allowed.
    assert_eq!(fx.sys(u, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(fx.sys(u, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(window(&mut fx, us), (mask(profile::YIELD), mask(profile::YIELD), None));

    // A thread in a window can neither postpone its end, leave it, nor narrow-and-rearm itself:
    // its own SetProfile and ArmProfile are refused (and count as window syscalls).
    fx.set_allowed(ts, profile::ALL);
    assert_eq!(fx.invoke(ts, inv::TCB_ARM_PROFILE, &[profile::ALL, 4], &[]).rax, 0);
    for (label, mrs) in [
        (inv::TCB_ARM_PROFILE, &[profile::ALL, 1000][..]),
        (inv::TCB_SET_PROFILE, &[profile::ALL][..]),
        (inv::TCB_ARM_PROFILE, &[mask(profile::CALL), 0][..]),
    ] {
        fx.k.last_refusal = None;
        let r = fx.sys(t, Syscall::Call, own, label, mrs, &[]).rax;
        assert_eq!(r, Error::IllegalOperation as u64);
        assert_eq!(
            fx.k.last_refusal.map(|w| w.why),
            Some("a thread in a learning window cannot change its own profile")
        );
    }
    assert_eq!(window(&mut fx, ts).2, Some(1));
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    assert_eq!(window(&mut fx, ts).2, Some(0));
    assert_eq!(fx.sys(t, Syscall::Yield, 0, 0, &[], &[]).rax, 0);
    // Over: its profile is what it used; now (outside a window) it may narrow itself only.
    let (used, allowed, left) = window(&mut fx, ts);
    assert_eq!((allowed, left), (used, None));
    assert_eq!(used, mask(profile::CALL) | mask(profile::TCB) | mask(profile::YIELD));
    assert_eq!(
        fx.sys(t, Syscall::Call, own, inv::TCB_ARM_PROFILE, &[profile::ALL, 9], &[]).rax,
        Error::IllegalOperation as u64
    );
    fx.check("the profile rule for windows");
}

// ---- priority ceilings ----

#[test]
fn no_priority_is_set_above_the_thread_s_own_mcp_and_no_mcp_is_raised() {
    let mut fx = Fx::new();
    let d = fx.driver();
    tcb(d).mcp = 255;
    let driver = tcb_cap(&mut fx, d);
    let (ts, t) = fx.thread();
    let (_, u) = fx.thread();
    let t_own = tcb_cap(&mut fx, t);
    let why = |fx: &mut Fx, who: *mut Tcb, target: u64, label: u64, v: u64, auth: u64| {
        fx.k.last_refusal = None;
        let r = fx.sys(who, Syscall::Call, target, label, &[v], &[auth]).rax;
        (r, fx.k.last_refusal.map(|w| w.why))
    };
    // The creator sets its ceiling below its own; then the thread's priority stays below it,
    // whatever the authority (the driver's MCP is 255).
    assert_eq!(fx.invoke(ts, inv::TCB_SET_MC_PRIORITY, &[50], &[driver]).rax, 0);
    assert_eq!(fx.invoke(ts, inv::TCB_SET_PRIORITY, &[50], &[driver]).rax, 0);
    for p in [51, 99, 255] {
        let r = why(&mut fx, d, ts, inv::TCB_SET_PRIORITY, p, driver);
        assert_eq!(r, (Error::RangeError as u64, Some("the priority is above the thread's own maximum")));
    }
    // Nobody raises an MCP: not the driver with its 255, not the thread itself with the
    // driver's capability as authority, not with its own.
    for (who, auth) in [(d, driver), (t, driver), (t, t_own)] {
        let r = why(&mut fx, who, ts, inv::TCB_SET_MC_PRIORITY, 51, auth);
        assert_eq!(r.0, Error::RangeError as u64);
    }
    assert_eq!(
        why(&mut fx, t, t_own, inv::TCB_SET_MC_PRIORITY, 51, driver),
        (Error::RangeError as u64, Some("a maximum controlled priority is never raised"))
    );
    assert_eq!(
        why(&mut fx, t, t_own, inv::TCB_SET_PRIORITY, 51, driver),
        (Error::RangeError as u64, Some("the priority is above the thread's own maximum"))
    );
    assert_eq!((tcb(t).mcp, tcb(t).priority), (50, 50));
    // Lowering is always possible, and then final.
    assert_eq!(fx.sys(t, Syscall::Call, t_own, inv::TCB_SET_PRIORITY, &[40], &[t_own]).rax, 0);
    assert_eq!(fx.sys(t, Syscall::Call, t_own, inv::TCB_SET_MC_PRIORITY, &[40], &[t_own]).rax, 0);
    assert_eq!(fx.invoke(ts, inv::TCB_SET_MC_PRIORITY, &[50], &[driver]).rax, Error::RangeError as u64);
    // A thread it makes starts with its ceiling, and cannot be raised above it either.
    let before = fx.free_slot();
    assert_eq!(
        fx.sys(
            t,
            Syscall::Call,
            SLOT_U_MAIN,
            inv::UNTYPED_RETYPE,
            &[ObjectType::Tcb as u64, 0, 0, 0, before, 1],
            &[SLOT_ROOT_COPY]
        )
        .rax,
        0
    );
    let Cap::Tcb { ptr } = fx.w.slot(before).cap() else { panic!("a new TCB") };
    assert_eq!(tcb(ptr as *mut Tcb).mcp, 40);
    assert_eq!(fx.invoke(before, inv::TCB_SET_PRIORITY, &[41], &[driver]).rax, Error::RangeError as u64);
    assert_eq!(fx.invoke(before, inv::TCB_SET_PRIORITY, &[40], &[driver]).rax, 0);
    // Every thread's priority is within its ceiling.
    for x in [t, u, ptr as *mut Tcb] {
        assert!(tcb(x).priority <= tcb(x).mcp, "{x:p}");
    }
    fx.check("priority ceilings");
}

/// A thread a confined thread makes is no less confined: its profile allows no more than its
/// creator's, so a program narrowed by the shaper cannot escape its profile through a thread of
/// its own making.
#[test]
fn a_new_thread_allows_no_more_than_the_thread_that_made_it() {
    use ozone_abi::profile::{self, mask};
    let mut fx = Fx::new();
    let (ts, t) = fx.thread();
    let narrowed = mask(profile::CALL) | mask(profile::YIELD) | mask(profile::UNTYPED);
    fx.set_allowed(ts, narrowed);
    let at = fx.free_slot();
    let retype = &[ObjectType::Tcb as u64, 0, 0, 0, at, 1];
    assert_eq!(fx.sys(t, Syscall::Call, SLOT_U_MAIN, inv::UNTYPED_RETYPE, retype, &[SLOT_ROOT_COPY]).rax, 0);
    let Cap::Tcb { ptr } = fx.w.slot(at).cap() else { panic!("a new TCB") };
    assert_eq!(tcb(ptr as *mut Tcb).profile.allowed(), narrowed);
    // The driver (unconfined) still makes unconfined threads.
    let (_, u) = fx.thread();
    assert_eq!(tcb(u).profile.allowed(), profile::ALL);
    fx.check("new threads inherit their creator's profile");
}
