//! Host tests of the two ways a Call ends without its reply: the thread that was to reply is
//! gone (deleted or suspended: the caller gets `ReplyLost`), and a CallInterruptible ended by a
//! signal on the caller's bound notification (`Interrupted`, with the signalled word). Each test
//! runs the real syscall layer on the fixture of `tests`, with the invariant checker after every
//! syscall.

extern crate std;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, Syscall};

use super::tests::{Fx, tcb};
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY};
use crate::object::mdb;
use crate::object::notification::{NTFN_ACTIVE, NTFN_IDLE, Notification};
use crate::object::tcb::{TCB_VSPACE, Tcb, ThreadState};

const DEPTH: u64 = ROOT_RADIX as u64;

/// A world with a server and a client thread, an endpoint, and a notification bound to the
/// client: (fixture, endpoint slot, notification slot, client TCB slot, client, server TCB slot,
/// server).
struct World {
    fx: Fx,
    ep: u64,
    ntfn: u64,
    client_slot: u64,
    client: *mut Tcb,
    server_slot: u64,
    server: *mut Tcb,
}

fn world() -> World {
    let mut fx = Fx::new();
    let (client_slot, client) = fx.thread();
    let (server_slot, server) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let ntfn = fx.retype(ObjectType::Notification);
    assert_eq!(fx.invoke(client_slot, inv::TCB_BIND_NOTIFICATION, &[], &[ntfn]).rax, 0);
    World { fx, ep, ntfn, client_slot, client, server_slot, server }
}

impl World {
    fn signal(&mut self, badge_slot: u64) -> u64 {
        let d = self.fx.driver();
        self.fx.sys(d, Syscall::Send, badge_slot, 0, &[], &[]).rax
    }

    /// A badged copy of the notification capability (the signal's bits).
    fn badged_ntfn(&mut self, badge: u64) -> u64 {
        let dest = self.fx.free_slot();
        let r = self.fx.invoke(
            SLOT_ROOT_COPY,
            inv::CNODE_MINT,
            &[dest, DEPTH, self.ntfn, DEPTH, ozone_abi::rights::ALL, badge],
            &[SLOT_ROOT_COPY],
        );
        assert_eq!(r.rax, 0);
        dest
    }

    fn ntfn_state(&self) -> (u64, u64) {
        let crate::object::Cap::Notification { ptr, .. } = self.fx.w.slot(self.ntfn).cap() else { panic!() };
        // SAFETY: the notification is a live object of the world.
        let n = unsafe { &*(ptr as *const Notification) };
        (n.state, n.word)
    }

    /// The server waits on the endpoint and the client Calls (`interruptible` or not): the
    /// client waits for the reply, the server holds the right to give it.
    fn call_received(&mut self, interruptible: bool) {
        let (s, c, ep) = (self.server, self.client, self.ep);
        self.fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
        let call = if interruptible { Syscall::CallInterruptible } else { Syscall::Call };
        self.fx.sys(c, call, ep, 0, &[1], &[]);
        assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible });
        assert_eq!((tcb(s).caller, tcb(c).reply_holder), (c as u64, s as u64));
    }
}

fn give_vspace(fx: &mut Fx, t: *mut Tcb) {
    let pml4 = fx.retype(ObjectType::Pml4);
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
}

fn lost(t: *mut Tcb) -> bool {
    (tcb(t).state, tcb(t).regs.rax, tcb(t).reply_holder) == (ThreadState::Running, Error::ReplyLost as u64, 0)
}

// ---- the thread that was to reply is gone ----

#[test]
fn a_deleted_reply_holder_wakes_its_caller_with_reply_lost() {
    let mut w = world();
    w.call_received(false);
    let r = w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[w.server_slot, DEPTH], &[]);
    assert_eq!(r.rax, 0);
    assert!(lost(w.client));
    assert_eq!((tcb(w.client).regs.rsi, tcb(w.client).regs.rdi), (0, 0), "an empty message, no badge");
}

#[test]
fn a_suspended_reply_holder_wakes_its_caller_and_its_late_reply_goes_nowhere() {
    let mut w = world();
    give_vspace(&mut w.fx, w.server);
    w.call_received(false);
    assert_eq!(w.fx.invoke(w.server_slot, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert!(lost(w.client));
    assert_eq!(tcb(w.server).caller, 0);
    // The client calls again, a second server receives it; the first, resumed, replies: its
    // reply reaches nobody, the client still waits for the second server's.
    let (_, s2) = w.fx.thread();
    let (c, ep) = (w.client, w.ep);
    w.fx.sys(s2, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::Call, ep, 0, &[2], &[]);
    assert_eq!(tcb(c).reply_holder, s2 as u64);
    assert_eq!(w.fx.invoke(w.server_slot, inv::TCB_RESUME, &[], &[]).rax, 0);
    let s = w.server;
    w.fx.sys(s, Syscall::Reply, 0, 0, &[0xbad], &[]);
    assert_eq!((tcb(c).state, tcb(c).reply_holder), (ThreadState::BlockedOnReply { interruptible: false }, s2 as u64));
    w.fx.sys(s2, Syscall::Reply, 0, 0, &[0x600d], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.rax, tcb(c).regs.r10), (ThreadState::Running, 0, 0x600d));
}

#[test]
fn a_server_that_receives_again_without_replying_leaves_its_caller_waiting() {
    let mut w = world();
    w.call_received(false);
    let (s, ep) = (w.server, w.ep);
    w.fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    assert_eq!(
        (tcb(w.client).state, tcb(w.client).reply_holder),
        (ThreadState::BlockedOnReply { interruptible: false }, 0)
    );
}

#[test]
fn a_thread_that_exits_holding_a_reply_right_wakes_its_caller() {
    let mut w = world();
    w.call_received(false);
    let s = w.server;
    w.fx.sys(s, Syscall::ThreadExit, 0, 0, &[], &[]);
    assert!(lost(w.client));
}

#[test]
fn a_fault_whose_handler_is_suspended_is_taken_again() {
    let mut w = world();
    // The client's faults go to the endpoint, where the server receives one.
    assert_eq!(w.fx.set_fault_handler(w.client_slot, w.ep), 0);
    let (s, c, ep) = (w.server, w.client, w.ep);
    w.fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::Send, 0, 0, &[], &[]);
    let _ = super::raise_fault(&mut w.fx.k, c, crate::object::tcb::Fault::UnknownSyscall { number: 99 });
    assert_eq!(tcb(s).caller, c as u64);
    assert_eq!(w.fx.invoke(w.server_slot, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    // Not woken with an error: restarted, to fault again when it runs.
    assert_eq!(tcb(c).state, ThreadState::Restart);
    assert_eq!(tcb(c).fault, crate::object::tcb::Fault::None);
}

#[test]
fn a_server_left_suspended_by_its_fault_handler_wakes_its_caller() {
    let mut w = world();
    let fault_ep = w.fx.retype(ObjectType::Endpoint);
    assert_eq!(w.fx.set_fault_handler(w.server_slot, fault_ep), 0);
    let (_, handler) = w.fx.thread();
    w.fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    w.call_received(false);
    // The server faults while it holds the reply right; its handler receives the fault and
    // answers with a non-zero label: the server stays suspended, its caller gets ReplyLost.
    let s = w.server;
    w.fx.make_current(s);
    assert!(super::raise_fault(&mut w.fx.k, s, crate::object::tcb::Fault::UnknownSyscall { number: 99 }));
    assert_eq!(tcb(handler).caller, s as u64);
    assert_eq!(tcb(s).caller, w.client as u64, "a fault does not give the reply right up");
    w.fx.sys(handler, Syscall::Reply, 0, 1, &[], &[]);
    assert_eq!(tcb(s).state, ThreadState::Inactive);
    assert!(lost(w.client));
}

#[test]
fn senders_on_a_deleted_endpoint_restart_and_find_an_empty_slot() {
    let mut w = world();
    let (c, ep) = (w.client, w.ep);
    // A copy of the endpoint capability (as a client holds Studio's), and a Call queued on it.
    let copy = w.fx.free_slot();
    let r = w.fx.invoke(
        SLOT_ROOT_COPY,
        inv::CNODE_COPY,
        &[copy, DEPTH, ep, DEPTH, ozone_abi::rights::ALL],
        &[SLOT_ROOT_COPY],
    );
    assert_eq!(r.rax, 0);
    w.fx.sys(c, Syscall::Call, copy, 0, &[1], &[]);
    assert!(matches!(tcb(c).state, ThreadState::BlockedOnSend { .. }));
    // The owner revokes and deletes its original: the caller is restarted ...
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[ep, DEPTH], &[]).rax, 0);
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ep, DEPTH], &[]).rax, 0);
    assert_eq!(tcb(c).state, ThreadState::Restart);
    // ... and its Call, executed again, fails on the empty slot, as does any later one.
    assert_eq!(w.fx.sys(c, Syscall::Call, copy, 0, &[1], &[]).rax, Error::InvalidCapability as u64);
    assert_eq!(w.fx.sys(c, Syscall::CallInterruptible, copy, 0, &[1], &[]).rax, Error::InvalidCapability as u64);
    assert!(tcb(c).state.is_runnable(), "never blocked again");
}

// ---- CallInterruptible ----

#[test]
fn an_interruptible_call_queued_to_send_is_interrupted() {
    let mut w = world();
    let b = w.badged_ntfn(0x40);
    let (c, ep) = (w.client, w.ep);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert!(matches!(tcb(c).state, ThreadState::BlockedOnSend { interruptible: true, .. }));
    assert_eq!(w.signal(b), 0);
    assert_eq!(
        (tcb(c).state, tcb(c).regs.rax, tcb(c).regs.rdi),
        (ThreadState::Running, Error::Interrupted as u64, 0x40)
    );
    assert!(w.fx.endpoint(ep).queue.is_empty(), "off the endpoint's queue");
    assert_eq!(w.ntfn_state(), (NTFN_IDLE, 0), "the word was taken");
    // A receiver now finds nothing.
    let s = w.server;
    w.fx.sys(s, Syscall::NbRecv, ep, 0, &[], &[]);
    assert_eq!(tcb(s).caller, 0);
}

#[test]
fn an_interruptible_call_waiting_for_its_reply_is_interrupted_and_the_late_reply_goes_nowhere() {
    let mut w = world();
    let b = w.badged_ntfn(0x8);
    w.call_received(true);
    let (c, s, ep) = (w.client, w.server, w.ep);
    assert_eq!(w.signal(b), 0);
    assert_eq!(
        (tcb(c).state, tcb(c).regs.rax, tcb(c).regs.rdi),
        (ThreadState::Running, Error::Interrupted as u64, 0x8)
    );
    assert_eq!((tcb(s).caller, tcb(c).reply_holder), (0, 0), "the reply link is cut");
    // The client calls again (an ordinary Call) and waits; the first server's late reply does
    // not reach it.
    let (_, s2) = w.fx.thread();
    w.fx.sys(s2, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::Call, ep, 0, &[2], &[]);
    w.fx.sys(s, Syscall::Reply, 0, 0, &[0xbad], &[]);
    assert_eq!((tcb(c).state, tcb(c).reply_holder), (ThreadState::BlockedOnReply { interruptible: false }, s2 as u64));
}

#[test]
fn bits_pending_when_an_interruptible_call_starts_end_it_at_once() {
    let mut w = world();
    let (b1, b2) = (w.badged_ntfn(0x1), w.badged_ntfn(0x4));
    w.signal(b1);
    w.signal(b2);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x5));
    let (c, s, ep) = (w.client, w.server, w.ep);
    w.fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    let r = w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert_eq!((r.rax, tcb(c).regs.rdi, tcb(c).state), (Error::Interrupted as u64, 0x5, ThreadState::Running));
    assert_eq!(w.ntfn_state(), (NTFN_IDLE, 0));
    // Nothing was sent: the server still waits.
    assert!(matches!(tcb(s).state, ThreadState::BlockedOnReceive { .. }));
}

#[test]
fn binding_a_notification_with_bits_pending_ends_an_interruptible_call() {
    let mut w = world();
    let (c, ep) = (w.client, w.ep);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    // Unbound while it waits: nothing can interrupt it now ...
    assert_eq!(w.fx.invoke(w.client_slot, inv::TCB_UNBIND_NOTIFICATION, &[], &[]).rax, 0);
    let b = w.badged_ntfn(0x20);
    w.signal(b);
    assert!(matches!(tcb(c).state, ThreadState::BlockedOnSend { interruptible: true, .. }));
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x20));
    // ... until a notification with bits pending is bound: they end it at once.
    let ntfn = w.ntfn;
    assert_eq!(w.fx.invoke(w.client_slot, inv::TCB_BIND_NOTIFICATION, &[], &[ntfn]).rax, 0);
    assert_eq!(
        (tcb(c).state, tcb(c).regs.rax, tcb(c).regs.rdi),
        (ThreadState::Running, Error::Interrupted as u64, 0x20)
    );
    assert_eq!(w.ntfn_state(), (NTFN_IDLE, 0));
}

#[test]
fn an_interruptible_call_that_is_replied_to_completes() {
    let mut w = world();
    w.call_received(true);
    let (c, s) = (w.client, w.server);
    w.fx.sys(s, Syscall::Reply, 0, 0, &[0x77], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.rax, tcb(c).regs.r10), (ThreadState::Running, 0, 0x77));
    // A signal now is only pending (for the next receive or interruptible Call).
    let b = w.badged_ntfn(0x2);
    w.signal(b);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x2));
}

#[test]
fn an_ordinary_call_is_not_interrupted() {
    let mut w = world();
    let b = w.badged_ntfn(0x10);
    w.call_received(false);
    w.signal(b);
    let (c, s) = (w.client, w.server);
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: false });
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x10));
    w.fx.sys(s, Syscall::Reply, 0, 0, &[0x99], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.rax, tcb(c).regs.r10), (ThreadState::Running, 0, 0x99));
    // Queued to send, likewise.
    let ep = w.ep;
    w.fx.sys(c, Syscall::Call, ep, 0, &[1], &[]);
    w.signal(b);
    assert!(matches!(tcb(c).state, ThreadState::BlockedOnSend { interruptible: false, .. }));
}

#[test]
fn an_interruptible_call_needs_a_bound_notification_and_an_endpoint() {
    let mut w = world();
    let (s, ep, ntfn) = (w.server, w.ep, w.ntfn);
    // The server has no bound notification: nothing could ever end the Call.
    let r = w.fx.sys(s, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert_eq!((r.rax, tcb(s).state), (Error::IllegalOperation as u64, ThreadState::Running));
    let c = w.client;
    for cptr in [ntfn, w.client_slot, 0, u64::MAX] {
        let r = w.fx.sys(c, Syscall::CallInterruptible, cptr, 0, &[1], &[]);
        assert_eq!(r.rax, Error::InvalidCapability as u64, "cptr {cptr}");
    }
    // A capability without the write right.
    let ro = w.fx.free_slot();
    let r = w.fx.invoke(
        SLOT_ROOT_COPY,
        inv::CNODE_MINT,
        &[ro, DEPTH, ep, DEPTH, ozone_abi::rights::READ, 0],
        &[SLOT_ROOT_COPY],
    );
    assert_eq!(r.rax, 0);
    assert_eq!(w.fx.sys(c, Syscall::CallInterruptible, ro, 0, &[1], &[]).rax, Error::IllegalOperation as u64);
}

#[test]
fn an_interruptible_call_is_never_taken_by_the_fastpath_and_reply_recv_fastpath_still_answers_it() {
    let mut w = world();
    let (c, s, ep) = (w.client, w.server, w.ep);
    w.fx.sys(s, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.make_current(c);
    {
        let tr = tcb(c);
        tr.regs.rdx = Syscall::CallInterruptible as i64 as u64;
        tr.regs.rdi = ep;
    }
    // The fastpath is entered only for the Call number: the syscall layer takes this one.
    super::handle_syscall(&mut w.fx.k, Syscall::CallInterruptible as i64);
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: true });
    w.fx.sys(s, Syscall::ReplyRecv, ep, 0, &[5], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.r10), (ThreadState::Running, 5));
}
