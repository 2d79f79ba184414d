//! Host tests of the IPC core: endpoints, replies, notifications, faults, with the scheduler.

extern crate std;

use std::boxed::Box;

use ozone_abi::{IpcBuffer, MessageInfo};

use super::endpoint::{self, EP_IDLE, EP_RECV, EP_SEND, Endpoint, IpcEnv, fault_label};
use super::notification::{self, NTFN_ACTIVE, NTFN_IDLE, Notification};
use super::tcb::{Fault, Tcb, ThreadState};
use super::test_object::Obj;
use crate::sched::{Next, Scheduler};

struct Env {
    sched: Scheduler,
}

impl IpcEnv for Env {
    fn scheduler(&mut self) -> &mut Scheduler {
        &mut self.sched
    }
}

fn env() -> Env {
    Env { sched: Scheduler::new() }
}

fn thread(prio: u8) -> Obj<Tcb> {
    let mut t = Obj::new(Tcb::initial());
    t.priority = prio;
    t.state = ThreadState::Running;
    t
}

fn ep() -> Obj<Endpoint> {
    Obj::new(Endpoint { state: EP_IDLE, queue: Default::default() })
}

fn ntfn() -> Obj<Notification> {
    Obj::new(Notification { state: NTFN_IDLE, word: 0, queue: Default::default(), bound_tcb: 0 })
}

fn buffer() -> Obj<IpcBuffer> {
    // SAFETY: an IPC buffer is plain words, for which all-zero bytes are a valid value.
    Obj::from_box(unsafe { Box::new_zeroed().assume_init() })
}

/// The IPC core's functions over test-owned objects, passed on as the raw pointers the kernel
/// uses (never as references, which would be live while the kernel reaches the same objects
/// through their queue links). Their raw-pointer contracts hold because every object is an `Obj`
/// owned by the calling test for its whole duration.
mod ipc {
    use super::*;

    #[allow(clippy::too_many_arguments)]
    pub fn send(
        env: &mut Env,
        e: &mut Obj<Endpoint>,
        t: &mut Obj<Tcb>,
        badge: u64,
        grant: bool,
        grant_reply: bool,
        blocking: bool,
        call: bool,
    ) {
        // SAFETY: the endpoint and thread are live objects of the test.
        unsafe { endpoint::send(env, e.ptr(), t.ptr(), badge, grant, grant_reply, blocking, call, false) }
    }
    pub fn receive(env: &mut Env, e: &mut Obj<Endpoint>, t: &mut Obj<Tcb>, blocking: bool) {
        // SAFETY: the endpoint and thread are live objects of the test.
        unsafe { endpoint::receive(env, e.ptr(), t.ptr(), blocking, true) }
    }
    pub fn reply(env: &mut Env, t: &mut Obj<Tcb>) {
        // SAFETY: the thread is a live object of the test, and so is whoever it replies to.
        unsafe { endpoint::reply(env, t.ptr()) }
    }
    pub fn cancel_ipc(t: &mut Obj<Tcb>) {
        // SAFETY: the thread is a live object of the test, and so is what it is blocked on.
        unsafe { endpoint::cancel_ipc(t.ptr()) }
    }
    pub fn cancel_all(env: &mut Env, e: &mut Obj<Endpoint>) {
        // SAFETY: the endpoint is a live object of the test, and so are its waiters.
        unsafe { endpoint::cancel_all(env, e.ptr()) }
    }
    pub fn cancel_badged_sends(env: &mut Env, e: &mut Obj<Endpoint>, badge: u64) {
        // SAFETY: the endpoint is a live object of the test, and so are its waiters.
        unsafe { endpoint::cancel_badged_sends(env, e.ptr(), badge) }
    }
    pub fn signal(env: &mut Env, n: &mut Obj<Notification>, badge: u64) {
        // SAFETY: the notification is a live object of the test, and so are its waiters.
        unsafe { notification::signal(env, n.ptr(), badge) }
    }
    pub fn wait(env: &mut Env, n: &mut Obj<Notification>, t: &mut Obj<Tcb>, blocking: bool) {
        // SAFETY: the notification and thread are live objects of the test.
        unsafe { notification::wait(env, n.ptr(), t.ptr(), blocking) }
    }
    pub fn bind(n: &mut Obj<Notification>, t: &mut Obj<Tcb>) -> Result<(), ozone_abi::Error> {
        // SAFETY: the notification and thread are live objects of the test.
        unsafe { notification::bind(n.ptr(), t) }
    }
    pub fn set_current(env: &mut Env, t: &mut Obj<Tcb>) {
        // SAFETY: the thread is a live object of the test.
        unsafe { env.sched.set_current(t.ptr()) }
    }
}

fn set_msg(t: &mut Tcb, label: u64, mrs: &[u64]) {
    t.regs.rsi = MessageInfo::new(label, 0, 0, mrs.len() as u64).0;
    for (i, v) in mrs.iter().enumerate().take(4) {
        t.regs.set_mr(i, *v);
    }
}

#[test]
fn send_then_receive_delivers_message_and_badge() {
    let mut env = env();
    let mut e = ep();
    let mut s = thread(10);
    let mut r = thread(10);
    set_msg(&mut s, 42, &[1, 2, 3]);
    ipc::send(&mut env, &mut e, &mut s, 0xbad9e, false, false, true, false);
    assert!(matches!(s.state, ThreadState::BlockedOnSend { badge: 0xbad9e, .. }));
    assert_eq!(e.state, EP_SEND);
    ipc::receive(&mut env, &mut e, &mut r, true);
    assert_eq!(e.state, EP_IDLE);
    assert_eq!(s.state, ThreadState::Running);
    assert_eq!(r.regs.rdi, 0xbad9e);
    let info = MessageInfo(r.regs.rsi);
    assert_eq!((info.label(), info.length()), (42, 3));
    assert_eq!((r.regs.r10, r.regs.r8, r.regs.r9), (1, 2, 3));
    assert_eq!((s.counters.ipc_sent, r.counters.ipc_received), (1, 1));
}

#[test]
fn receive_then_send_and_fifo_order() {
    let mut env = env();
    let mut e = ep();
    let mut r1 = thread(1);
    let mut r2 = thread(1);
    let mut s = thread(1);
    ipc::receive(&mut env, &mut e, &mut r1, true);
    ipc::receive(&mut env, &mut e, &mut r2, true);
    assert_eq!(e.state, EP_RECV);
    set_msg(&mut s, 7, &[99]);
    ipc::send(&mut env, &mut e, &mut s, 5, false, false, true, false);
    // The first receiver got it, the second still waits.
    assert_eq!(r1.state, ThreadState::Running);
    assert_eq!(r1.regs.r10, 99);
    assert!(matches!(r2.state, ThreadState::BlockedOnReceive { .. }));
    assert_eq!(e.state, EP_RECV);
    // The woken receiver is ready to run.
    env.sched.current_blocked();
    assert_eq!(env.sched.schedule(), Next::Run(&mut *r1 as *mut Tcb));
}

#[test]
fn non_blocking_operations_never_wait() {
    let mut env = env();
    let mut e = ep();
    let mut s = thread(1);
    set_msg(&mut s, 1, &[1]);
    ipc::send(&mut env, &mut e, &mut s, 0, false, false, false, false);
    assert_eq!((s.state, e.state), (ThreadState::Running, EP_IDLE));
    let mut r = thread(1);
    r.regs.rdi = 77;
    ipc::receive(&mut env, &mut e, &mut r, false);
    assert_eq!((r.state, r.regs.rdi, r.regs.rsi), (ThreadState::Running, 0, 0));
}

#[test]
fn call_and_reply_round_trip() {
    let mut env = env();
    let mut e = ep();
    let mut client = thread(5);
    let mut server = thread(5);
    ipc::receive(&mut env, &mut e, &mut server, true);
    set_msg(&mut client, 3, &[10, 20]);
    ipc::send(&mut env, &mut e, &mut client, 1, false, true, true, true);
    assert_eq!(client.state, ThreadState::BlockedOnReply { interruptible: false });
    assert_eq!(server.caller, client.addr());
    assert_eq!(server.regs.r8, 20);
    set_msg(&mut server, 0, &[30]);
    ipc::reply(&mut env, &mut server);
    assert_eq!(client.state, ThreadState::Running);
    assert_eq!(client.regs.r10, 30);
    assert_eq!(client.regs.rdi, 0, "replies carry no badge");
    assert_eq!(server.caller, 0, "the reply right is one-shot");
    // A second reply has nobody to go to and changes nothing.
    client.regs.r10 = 0;
    ipc::reply(&mut env, &mut server);
    assert_eq!(client.regs.r10, 0);
}

#[test]
fn call_without_grant_rights_makes_no_reply_right() {
    let mut env = env();
    let mut e = ep();
    let mut client = thread(5);
    let mut server = thread(5);
    ipc::receive(&mut env, &mut e, &mut server, true);
    set_msg(&mut client, 3, &[]);
    ipc::send(&mut env, &mut e, &mut client, 0, false, false, true, true);
    assert_eq!(client.state, ThreadState::Inactive);
    assert_eq!(server.caller, 0);
}

#[test]
fn long_messages_use_ipc_buffers_or_are_truncated() {
    let mut env = env();
    let mut e = ep();
    let mut s = thread(1);
    let mut r = thread(1);
    let mut sb = buffer();
    let mut rb = buffer();
    let mrs: std::vec::Vec<u64> = (100..110).collect();
    set_msg(&mut s, 9, &mrs);
    for (i, v) in mrs.iter().enumerate() {
        sb.msg[i] = *v;
    }
    // Without a receiver buffer only the register part arrives.
    Tcb::attach_test_ipc_buffer(&mut *s, &mut *sb);
    ipc::receive(&mut env, &mut e, &mut r, true);
    ipc::send(&mut env, &mut e, &mut s, 0, false, false, true, false);
    assert_eq!(MessageInfo(r.regs.rsi).length(), 4);
    // With both buffers everything arrives.
    Tcb::attach_test_ipc_buffer(&mut *r, &mut *rb);
    ipc::receive(&mut env, &mut e, &mut r, true);
    ipc::send(&mut env, &mut e, &mut s, 0, false, false, true, false);
    assert_eq!(MessageInfo(r.regs.rsi).length(), 10);
    assert_eq!(&rb.msg[4..10], &mrs[4..10]);
    assert_eq!(r.regs.r15, 103);
    // A length over the maximum is clamped.
    s.regs.rsi = MessageInfo::new(1, 0, 0, 127).0;
    ipc::receive(&mut env, &mut e, &mut r, true);
    ipc::send(&mut env, &mut e, &mut s, 0, false, false, true, false);
    assert_eq!(MessageInfo(r.regs.rsi).length(), 120);
}

#[test]
fn cancel_ipc_and_cancel_badged_sends() {
    let mut env = env();
    let mut e = ep();
    let mut a = thread(1);
    let mut b = thread(1);
    let mut c = thread(1);
    for (t, badge) in [(&mut a, 1), (&mut b, 2), (&mut c, 1)] {
        set_msg(t, 0, &[]);
        ipc::send(&mut env, &mut e, t, badge, false, false, true, false);
    }
    ipc::cancel_badged_sends(&mut env, &mut e, 1);
    assert_eq!((a.state, c.state), (ThreadState::Restart, ThreadState::Restart));
    assert!(matches!(b.state, ThreadState::BlockedOnSend { badge: 2, .. }));
    ipc::cancel_ipc(&mut b);
    assert_eq!(b.state, ThreadState::Inactive);
    assert_eq!(e.state, EP_IDLE);
    assert!(e.queue.is_empty());
    // cancel_all restarts every waiter.
    let mut d = thread(1);
    ipc::receive(&mut env, &mut e, &mut d, true);
    ipc::cancel_all(&mut env, &mut e);
    assert_eq!((d.state, e.state), (ThreadState::Restart, EP_IDLE));
}

#[test]
fn notifications_accumulate_and_wake() {
    let mut env = env();
    let mut n = ntfn();
    let mut t = thread(1);
    ipc::signal(&mut env, &mut n, 0b001);
    ipc::signal(&mut env, &mut n, 0b100);
    assert_eq!((n.state, n.word), (NTFN_ACTIVE, 0b101));
    ipc::wait(&mut env, &mut n, &mut t, true);
    assert_eq!((t.regs.rdi, n.state, n.word), (0b101, NTFN_IDLE, 0));
    // Poll with nothing pending returns 0 at once.
    ipc::wait(&mut env, &mut n, &mut t, false);
    assert_eq!((t.regs.rdi, t.state), (0, ThreadState::Running));
    // A blocked waiter gets the next signal directly.
    ipc::wait(&mut env, &mut n, &mut t, true);
    assert!(matches!(t.state, ThreadState::BlockedOnNotification { .. }));
    ipc::signal(&mut env, &mut n, 0x40);
    assert_eq!((t.state, t.regs.rdi, n.state), (ThreadState::Running, 0x40, NTFN_IDLE));
}

#[test]
fn bound_notification_reaches_a_thread_waiting_on_an_endpoint() {
    let mut env = env();
    let mut e = ep();
    let mut n = ntfn();
    let mut t = thread(1);
    ipc::bind(&mut n, &mut t).unwrap();
    assert!(ipc::bind(&mut n, &mut t).is_err());
    ipc::receive(&mut env, &mut e, &mut t, true);
    ipc::signal(&mut env, &mut n, 0x8);
    assert_eq!((t.state, t.regs.rdi, e.state), (ThreadState::Running, 0x8, EP_IDLE));
    assert!(e.queue.is_empty());
    // A signal pending before the receive is taken by the receive.
    ipc::signal(&mut env, &mut n, 0x2);
    ipc::receive(&mut env, &mut e, &mut t, true);
    assert_eq!((t.state, t.regs.rdi), (ThreadState::Running, 0x2));
    notification::unbind(&mut t).unwrap();
    assert!(notification::unbind(&mut t).is_err());
    assert_eq!(n.bound_tcb, 0);
}

#[test]
fn faults_reach_the_handler_and_its_reply_decides() {
    let mut env = env();
    let mut e = ep();
    let mut handler = thread(9);
    let mut faulter = thread(1);
    ipc::receive(&mut env, &mut e, &mut handler, true);
    faulter.regs.rip = 0x40_1000;
    faulter.regs.rax = 0x5555;
    faulter.fault = Fault::VmFault { addr: 0x10, error: 6, ip: 0x40_1000 };
    ipc::send(&mut env, &mut e, &mut faulter, 0xf, false, true, true, true);
    assert_eq!(faulter.regs.rax, 0x5555, "a fault leaves the thread's registers alone");
    let info = MessageInfo(handler.regs.rsi);
    assert_eq!(info.label(), fault_label::VM_FAULT);
    assert_eq!((handler.regs.r10, handler.regs.r8, handler.regs.r9), (0x40_1000, 0x10, 6));
    assert_eq!(faulter.state, ThreadState::BlockedOnReply { interruptible: false });
    // Label 0: resume (restart the faulting instruction).
    set_msg(&mut handler, 0, &[]);
    ipc::reply(&mut env, &mut handler);
    assert_eq!((faulter.state, faulter.fault), (ThreadState::Running, Fault::None));
    assert_eq!(faulter.regs.rax, 0x5555);

    // An unknown syscall emulated by the handler: MR0 becomes rax, MR1 the new rip.
    ipc::receive(&mut env, &mut e, &mut handler, true);
    faulter.fault = Fault::UnknownSyscall { number: 0x1234 };
    ipc::send(&mut env, &mut e, &mut faulter, 0, false, true, true, true);
    assert_eq!(MessageInfo(handler.regs.rsi).label(), fault_label::UNKNOWN_SYSCALL);
    assert_eq!(handler.regs.r9, 0x1234);
    set_msg(&mut handler, 0, &[55, 0x40_2000]);
    ipc::reply(&mut env, &mut handler);
    assert_eq!((faulter.regs.rax, faulter.regs.rip), (55, 0x40_2000));

    // Any other label leaves the thread suspended.
    ipc::receive(&mut env, &mut e, &mut handler, true);
    faulter.fault = Fault::UserException { vector: 6, error: 0, ip: 0x40_3000 };
    ipc::send(&mut env, &mut e, &mut faulter, 0, false, true, true, true);
    set_msg(&mut handler, 1, &[]);
    ipc::reply(&mut env, &mut handler);
    assert_eq!(faulter.state, ThreadState::Inactive);
}

#[test]
fn denied_operation_faults_carry_the_syscall_and_bit_and_resume_with_denied() {
    let mut env = env();
    let mut e = ep();
    let mut handler = thread(9);
    let mut faulter = thread(1);
    ipc::receive(&mut env, &mut e, &mut handler, true);
    faulter.regs.rip = 0x40_1002;
    faulter.regs.rsp = 0x7fff_0000;
    faulter.regs.rax = 0;
    faulter.fault = Fault::Denied { number: -5i64 as u64, bit: ozone_abi::profile::RECV };
    ipc::send(&mut env, &mut e, &mut faulter, 0x77, false, true, true, true);
    let info = MessageInfo(handler.regs.rsi);
    assert_eq!((info.label(), info.length()), (fault_label::DENIED, 4));
    assert_eq!(
        (handler.regs.r10, handler.regs.r8, handler.regs.r9, handler.regs.r15),
        (0x40_1002, 0x7fff_0000, -5i64 as u64, u64::from(ozone_abi::profile::RECV))
    );
    assert_eq!(handler.regs.rdi, 0x77);
    assert_eq!(faulter.state, ThreadState::BlockedOnReply { interruptible: false });
    // Label 0: resume after the syscall with Denied; the reply's words change nothing else.
    set_msg(&mut handler, 0, &[55, 0x40_2000]);
    ipc::reply(&mut env, &mut handler);
    assert_eq!((faulter.state, faulter.fault), (ThreadState::Running, Fault::None));
    assert_eq!((faulter.regs.rax, faulter.regs.rip), (ozone_abi::Error::Denied as u64, 0x40_1002));
    // Any other label: suspended, registers untouched.
    faulter.regs.rax = 0;
    ipc::receive(&mut env, &mut e, &mut handler, true);
    faulter.fault = Fault::Denied { number: -1i64 as u64, bit: ozone_abi::profile::UNTYPED };
    ipc::send(&mut env, &mut e, &mut faulter, 0, false, true, true, true);
    assert_eq!(handler.regs.r15, u64::from(ozone_abi::profile::UNTYPED));
    set_msg(&mut handler, 2, &[]);
    ipc::reply(&mut env, &mut handler);
    assert_eq!((faulter.state, faulter.regs.rax), (ThreadState::Inactive, 0));
}

#[test]
fn receive_is_handed_to_scheduler_by_priority() {
    let mut env = env();
    let mut e = ep();
    let mut lo = thread(1);
    let mut hi = thread(50);
    // `lo` runs; `hi` is blocked receiving; lo sends, hi must preempt.
    ipc::set_current(&mut env, &mut lo);
    ipc::receive(&mut env, &mut e, &mut hi, true);
    set_msg(&mut lo, 1, &[]);
    ipc::send(&mut env, &mut e, &mut lo, 0, false, false, true, false);
    assert_eq!(env.sched.schedule(), Next::Run(&mut *hi as *mut Tcb));
}
