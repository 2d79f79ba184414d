//! Hostile host tests of CallInterruptible and `ReplyLost`: a program holding only what it can
//! legitimately get (its threads, an endpoint, its own notification and badged copies of it)
//! tries to leave a dangling reply link, a thread waiting interruptibly while bits are pending,
//! a late reply reaching a later Call, or a denied syscall that still consumes the notification's
//! word. Each runs the real syscall layer on the fixture of `tests`, with the invariant checker
//! after every syscall (it checks the reply links both ways and that no thread waits in a
//! CallInterruptible while its bound notification holds bits).

extern crate std;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, Syscall, profile};

use super::tests::{Fx, tcb};
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY};
use crate::object::mdb;
use crate::object::notification::{NTFN_ACTIVE, NTFN_IDLE, Notification};
use crate::object::tcb::{TCB_VSPACE, Tcb, ThreadState};

const DEPTH: u64 = ROOT_RADIX as u64;

/// A client with a bound notification, two server threads, an endpoint.
struct W {
    fx: Fx,
    ep: u64,
    ntfn: u64,
    client_slot: u64,
    client: *mut Tcb,
    s1_slot: u64,
    s1: *mut Tcb,
    s2: *mut Tcb,
}

fn world() -> W {
    let mut fx = Fx::new();
    let (client_slot, client) = fx.thread();
    let (s1_slot, s1) = fx.thread();
    let (_, s2) = fx.thread();
    let ep = fx.retype(ObjectType::Endpoint);
    let ntfn = fx.retype(ObjectType::Notification);
    assert_eq!(fx.invoke(client_slot, inv::TCB_BIND_NOTIFICATION, &[], &[ntfn]).rax, 0);
    W { fx, ep, ntfn, client_slot, client, s1_slot, s1, s2 }
}

impl W {
    fn mint(&mut self, src: u64, rights: u64, badge: u64) -> u64 {
        let dest = self.fx.free_slot();
        let r = self.fx.invoke(
            SLOT_ROOT_COPY,
            inv::CNODE_MINT,
            &[dest, DEPTH, src, DEPTH, rights, badge],
            &[SLOT_ROOT_COPY],
        );
        assert_eq!(r.rax, 0);
        dest
    }

    fn signal(&mut self, cap: u64) {
        let d = self.fx.driver();
        assert_eq!(self.fx.sys(d, Syscall::Send, cap, 0, &[], &[]).rax, 0);
    }

    fn ntfn_state(&self) -> (u64, u64) {
        let crate::object::Cap::Notification { ptr, .. } = self.fx.w.slot(self.ntfn).cap() else { panic!() };
        // SAFETY: the notification is a live object of the world.
        let n = unsafe { &*(ptr as *const Notification) };
        (n.state, n.word)
    }

    fn interrupted(&self, word: u64) -> bool {
        let c = tcb(self.client);
        (c.state, c.regs.rax, c.regs.rdi, c.reply_holder) == (ThreadState::Running, Error::Interrupted as u64, word, 0)
    }
}

fn give_vspace(fx: &mut Fx, t: *mut Tcb) {
    let pml4 = fx.retype(ObjectType::Pml4);
    // SAFETY: `t` is a live TCB of the fixture.
    let dest = unsafe { Tcb::slots_of(t) }.slot(TCB_VSPACE as u64).unwrap();
    mdb::cte_insert(fx.w.slot(pml4).cap(), fx.w.slot(pml4), dest);
}

#[test]
fn an_interrupt_in_a_chain_of_calls_cuts_only_the_interrupted_link() {
    // client -> s1 (interruptible), s1 -> s2 (ordinary): the interrupt cuts client/s1 only; s2's
    // reply still reaches s1, whose own reply then goes nowhere, and never to the client's next
    // Call.
    let mut w = world();
    let ep2 = w.fx.retype(ObjectType::Endpoint);
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x100);
    let (c, s1, s2, ep) = (w.client, w.s1, w.s2, w.ep);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    w.fx.sys(s2, Syscall::Recv, ep2, 0, &[], &[]);
    w.fx.sys(s1, Syscall::Call, ep2, 0, &[2], &[]);
    assert_eq!((tcb(s1).caller, tcb(s1).reply_holder, tcb(s2).caller), (c as u64, s2 as u64, s1 as u64));
    w.signal(b);
    assert!(w.interrupted(0x100));
    assert_eq!((tcb(s1).caller, tcb(s1).reply_holder), (0, s2 as u64), "s1 still waits for s2");
    // The client calls again; s2 answers s1; s1's (late) answer reaches nobody.
    let (_, s3) = w.fx.thread();
    w.fx.sys(s3, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[3], &[]);
    w.fx.sys(s2, Syscall::Reply, 0, 0, &[0x22], &[]);
    assert_eq!((tcb(s1).state, tcb(s1).regs.r10), (ThreadState::Running, 0x22));
    w.fx.sys(s1, Syscall::ReplyRecv, ep, 0, &[0xbad], &[]);
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: true });
    assert_eq!(tcb(c).reply_holder, s3 as u64);
    w.fx.sys(s3, Syscall::Reply, 0, 0, &[0x600d], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.rax, tcb(c).regs.r10), (ThreadState::Running, 0, 0x600d));
}

#[test]
fn the_reply_recv_fastpath_declines_a_reply_whose_caller_was_interrupted() {
    let mut w = world();
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x2);
    let (c, s1, ep) = (w.client, w.s1, w.ep);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    w.signal(b);
    assert!(w.interrupted(0x2));
    // The client queues an ordinary Call; the server's ReplyRecv (fastpath first, as the entry
    // path does) must not deliver its stale answer to it, and receives the new Call instead.
    w.fx.sys(c, Syscall::Call, ep, 0, &[7], &[]);
    w.fx.make_current(s1);
    {
        let tr = tcb(s1);
        tr.regs.rdi = ep;
        tr.regs.rsi = ozone_abi::MessageInfo::new(0, 0, 0, 1).0;
        tr.regs.r10 = 0xbad;
    }
    assert!(!super::fastpath::reply_recv(&mut w.fx.k, tcb(s1)), "no caller to answer: the general path");
    w.fx.sys(s1, Syscall::ReplyRecv, ep, 0, &[0xbad], &[]);
    assert_eq!(tcb(s1).regs.r10, 7, "the new Call was received");
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: false });
    assert_eq!(tcb(s1).caller, c as u64);
}

#[test]
fn a_bound_notification_deleted_mid_call_leaves_an_ordinary_wait_that_a_reply_ends() {
    let mut w = world();
    let (c, s1, ep, ntfn) = (w.client, w.s1, w.ep, w.ntfn);
    let b = w.mint(ntfn, ozone_abi::rights::ALL, 0x8);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    // Every capability to the notification goes: it is destroyed, the thread unbound.
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[ntfn, DEPTH], &[]).rax, 0);
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[ntfn, DEPTH], &[]).rax, 0);
    assert_eq!(tcb(c).bound_notification, 0);
    let d = w.fx.driver();
    assert_eq!(w.fx.sys(d, Syscall::Send, b, 0, &[], &[]).rax, Error::InvalidCapability as u64);
    assert_eq!(tcb(c).state, ThreadState::BlockedOnReply { interruptible: true });
    w.fx.sys(s1, Syscall::Reply, 0, 0, &[0x33], &[]);
    assert_eq!((tcb(c).state, tcb(c).regs.rax, tcb(c).regs.r10), (ThreadState::Running, 0, 0x33));
    // Without a bound notification a new CallInterruptible is refused.
    assert_eq!(w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]).rax, Error::IllegalOperation as u64);
}

#[test]
fn an_interruptible_caller_deleted_while_waiting_leaves_no_link_and_signals_stay_pending() {
    let mut w = world();
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x4);
    let (c, s1, ep) = (w.client, w.s1, w.ep);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    let cs = w.client_slot;
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[cs, DEPTH], &[]).rax, 0);
    assert_eq!(tcb(s1).caller, 0, "the server's reply right went with the caller");
    // The notification is unbound: a signal is only pending, nothing is woken.
    w.signal(b);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x4));
    w.fx.sys(s1, Syscall::Reply, 0, 0, &[0xbad], &[]);
    // A queued interruptible Call deleted likewise leaves the endpoint's queue.
    let (t2_slot, t2) = w.fx.thread();
    let ntfn = w.ntfn;
    assert_eq!(w.fx.invoke(t2_slot, inv::TCB_BIND_NOTIFICATION, &[], &[ntfn]).rax, 0);
    let _ = w.fx.sys(t2, Syscall::NbRecv, ntfn, 0, &[], &[]);
    assert_eq!(w.ntfn_state(), (NTFN_IDLE, 0));
    w.fx.sys(t2, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert!(matches!(tcb(t2).state, ThreadState::BlockedOnSend { interruptible: true, .. }));
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[t2_slot, DEPTH], &[]).rax, 0);
    assert!(w.fx.endpoint(ep).queue.is_empty());
    w.signal(b);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x4));
}

#[test]
fn a_suspended_and_resumed_interruptible_caller_sends_again_unless_bits_are_pending() {
    let mut w = world();
    give_vspace(&mut w.fx, w.client);
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x10);
    let (c, s1, ep, cs) = (w.client, w.s1, w.ep, w.client_slot);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert_eq!(w.fx.invoke(cs, inv::TCB_SUSPEND, &[], &[]).rax, 0);
    assert_eq!(tcb(c).state, ThreadState::Inactive);
    // A signal while it is suspended is only pending.
    w.signal(b);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x10));
    assert_eq!(w.fx.invoke(cs, inv::TCB_RESUME, &[], &[]).rax, 0);
    assert_eq!(tcb(c).state, ThreadState::Restart);
    // Run again, the Call ends at once with the pending bits: nothing reaches a server.
    w.fx.sys(s1, Syscall::NbRecv, ep, 0, &[], &[]);
    assert_eq!(tcb(s1).caller, 0);
    let r = w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert_eq!((r.rax, tcb(c).regs.rdi), (Error::Interrupted as u64, 0x10));
    assert!(w.fx.endpoint(ep).queue.is_empty());
}

#[test]
fn cancel_badged_sends_restarts_an_interruptible_sender_and_a_signal_before_it_reruns_ends_it() {
    let mut w = world();
    let ep = w.ep;
    let badged = w.mint(ep, ozone_abi::rights::ALL, 7);
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x40);
    let c = w.client;
    w.fx.sys(c, Syscall::CallInterruptible, badged, 0, &[1], &[]);
    assert_eq!(w.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_CANCEL_BADGED_SENDS, &[badged, DEPTH], &[]).rax, 0);
    assert_eq!(tcb(c).state, ThreadState::Restart);
    w.signal(b);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x40), "a restarted thread is not interrupted, the bits wait");
    let r = w.fx.sys(c, Syscall::CallInterruptible, badged, 0, &[1], &[]);
    assert_eq!((r.rax, tcb(c).regs.rdi), (Error::Interrupted as u64, 0x40));
    assert_eq!(w.ntfn_state(), (NTFN_IDLE, 0));
}

#[test]
fn a_denied_call_interruptible_leaves_the_notification_word_alone() {
    let mut w = world();
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x80);
    w.signal(b);
    let (c, ep, cs) = (w.client, w.ep, w.client_slot);
    w.fx.set_allowed(cs, profile::ALL & !profile::mask(profile::CALL_INTERRUPTIBLE));
    let r = w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    assert_eq!(r.rax, Error::Denied as u64);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x80), "a denied syscall takes nothing");
    assert_eq!(tcb(c).state, ThreadState::Running);
    // The ordinary Call is a different bit: still allowed.
    let (used, _) = w.fx.profile(cs);
    assert_ne!(used & profile::mask(profile::CALL_INTERRUPTIBLE), 0, "recorded as used");
}

#[test]
fn a_fault_handler_leaving_the_server_suspended_beats_a_later_signal() {
    // The server faults while holding the interruptible caller's reply right; its handler
    // leaves it suspended: the caller gets ReplyLost; a signal afterwards is only pending.
    let mut w = world();
    let fault_ep = w.fx.retype(ObjectType::Endpoint);
    let s1_slot = w.s1_slot;
    assert_eq!(w.fx.set_fault_handler(s1_slot, fault_ep), 0);
    let handler = w.s2;
    w.fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x1);
    let (c, s1, ep) = (w.client, w.s1, w.ep);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    w.fx.make_current(s1);
    assert!(super::raise_fault(&mut w.fx.k, s1, crate::object::tcb::Fault::UnknownSyscall { number: 99 }));
    w.fx.sys(handler, Syscall::Reply, 0, 1, &[], &[]);
    assert_eq!(tcb(s1).state, ThreadState::Inactive);
    assert_eq!((tcb(c).state, tcb(c).regs.rax), (ThreadState::Running, Error::ReplyLost as u64));
    w.signal(b);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x1));
    // And the other order: interrupted first, then the server's handler suspends it: nothing
    // more reaches the client.
    let mut w = world();
    let fault_ep = w.fx.retype(ObjectType::Endpoint);
    let s1_slot = w.s1_slot;
    assert_eq!(w.fx.set_fault_handler(s1_slot, fault_ep), 0);
    let handler = w.s2;
    w.fx.sys(handler, Syscall::Recv, fault_ep, 0, &[], &[]);
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x1);
    let (c, s1, ep) = (w.client, w.s1, w.ep);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    w.fx.make_current(s1);
    assert!(super::raise_fault(&mut w.fx.k, s1, crate::object::tcb::Fault::UnknownSyscall { number: 99 }));
    w.signal(b);
    assert!(w.interrupted(0x1));
    // The client Calls an ordinary Call on another server meanwhile.
    let (_, s3) = w.fx.thread();
    w.fx.sys(s3, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::Call, ep, 0, &[2], &[]);
    w.fx.sys(handler, Syscall::Reply, 0, 1, &[], &[]);
    assert_eq!((tcb(c).state, tcb(c).reply_holder), (ThreadState::BlockedOnReply { interruptible: false }, s3 as u64));
}

#[test]
fn an_interruptible_call_without_a_grant_right_leaves_the_caller_inactive_as_a_call_does() {
    // seL4's rule for a Call on a capability with neither grant right: no reply can come, the
    // caller is left inactive. A later signal does not wake it (it is in no Call any more).
    let mut w = world();
    let ep = w.ep;
    let bare = w.mint(ep, ozone_abi::rights::WRITE | ozone_abi::rights::READ, 0);
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x1);
    let (c, s1) = (w.client, w.s1);
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, bare, 0, &[1], &[]);
    assert_eq!((tcb(c).state, tcb(s1).caller), (ThreadState::Inactive, 0));
    w.signal(b);
    assert_eq!(tcb(c).state, ThreadState::Inactive);
    assert_eq!(w.ntfn_state(), (NTFN_ACTIVE, 0x1));
}

/// As in seL4: a thread other than the bound one cannot wait on a bound notification (nor can a
/// notification with waiters be bound: the differential fuzzer's Bind checks that), so no
/// other thread takes the signal meant to end the bound thread's CallInterruptible. (Found in
/// review: both were allowed.)
#[test]
fn a_waiter_on_a_bound_notification_cannot_steal_the_interrupt() {
    let mut w = world();
    let b = w.mint(w.ntfn, ozone_abi::rights::ALL, 0x1);
    let (c, s1, ep, ntfn) = (w.client, w.s1, w.ep, w.ntfn);
    let (_, thief) = w.fx.thread();
    let r = w.fx.sys(thief, Syscall::Recv, ntfn, 0, &[], &[]);
    assert_eq!(r.rax, ozone_abi::Error::IllegalOperation as u64, "another thread waited on a bound notification");
    let r = w.fx.sys(thief, Syscall::NbRecv, ntfn, 0, &[], &[]);
    assert_eq!(r.rax, ozone_abi::Error::IllegalOperation as u64, "another thread polled a bound notification");
    w.fx.sys(s1, Syscall::Recv, ep, 0, &[], &[]);
    w.fx.sys(c, Syscall::CallInterruptible, ep, 0, &[1], &[]);
    w.signal(b);
    assert!(w.interrupted(0x1), "the signal did not end the bound thread's Call");
}
