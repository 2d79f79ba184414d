//! The IPC fastpath (after seL4's): Call to a waiting server and ReplyRecv back to a waiting
//! client, for the common case — the syscall allowed by the thread's profile, a short message (at
//! most the four register words), no capabilities, no fault being delivered, nobody more
//! important ready to run — done in one straight line: look up the endpoint, move the four
//! words, switch the current thread. Anything else returns `false` and takes the general path in `super::handle_syscall`, which gives the
//! same result. The thread's syscall profile costs one `test`: of the syscall's bit in the
//! profile's `fast` mask (allowed and already recorded as used, see
//! [`Profile`]); the first use of the syscall and a denied one take
//! the general path, which records it and denies.
//!
//! A traced thread (`object/trace.rs`) enters its own copy of the syscall path: the `syscall`
//! entry calls the handler its TCB names ([`Tcb::syscall_handler`]), one indirect call where
//! the untraced thread has its direct one, and that copy tries [`traced_call`] and
//! [`traced_reply_recv`], which test the traced bit (its IPC bits are moved up in `fast`,
//! [`Profile::TRACED_SHIFT`]) and append the thread's record once every check has passed. An
//! untraced thread's fastpath has not one instruction more; and were an untraced copy ever to
//! run for a traced thread, its first test would fail and the general path would write the
//! record.
//!
//! The boot option `ozone.fastpath=off` turns both fastpaths off without adding to them: the
//! syscall bits they test are then never in a profile's `fast` mask
//! ([`Profile::disable_ipc_fastpaths`](crate::object::tcb::Profile::disable_ipc_fastpaths)), so
//! every Call and ReplyRecv fails the first test and takes the general path. Debug kernels count
//! the syscalls each fastpath took ([`hits`]; reported when the system ends), which the
//! differential test (`ipc-diff`, docs/capabilities.md) uses to show they were taken, or not.

use crate::object::kptr::kptr;
use ozone_abi::{MSG_REGISTERS, MessageInfo, profile};

#[cfg(debug_assertions)]
use core::sync::atomic::{AtomicU64, Ordering};

use super::Kernel;
use crate::object::cspace;
use crate::object::endpoint::{EP_IDLE, EP_RECV, EP_SEND, Endpoint, tcb};
use crate::object::notification::{NTFN_ACTIVE, Notification};
use crate::object::tcb::{Fault, Profile, TCB_CSPACE, Tcb, ThreadState};
use crate::object::{Cap, Rights, trace};

/// Syscalls taken by the Call and the ReplyRecv fastpath (debug kernels only: a release kernel
/// keeps its fastpaths free of any count).
#[cfg(debug_assertions)]
static HITS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// How many Calls and ReplyRecvs the fastpaths have taken since boot; `None` in a release
/// kernel, which does not count them.
pub fn hits() -> Option<(u64, u64)> {
    #[cfg(debug_assertions)]
    {
        Some((HITS[0].load(Ordering::Relaxed), HITS[1].load(Ordering::Relaxed)))
    }
    #[cfg(not(debug_assertions))]
    {
        None
    }
}

/// Count a syscall taken by fastpath `which` (0 Call, 1 ReplyRecv) in a debug kernel.
#[inline(always)]
fn count_hit(which: usize) {
    #[cfg(debug_assertions)]
    HITS[which].fetch_add(1, Ordering::Relaxed);
    #[cfg(not(debug_assertions))]
    let _ = which;
}

/// Whether a thread of priority `prio` may run now without passing over a more important one.
#[inline(always)]
fn may_run(k: &Kernel, prio: u8) -> bool {
    k.sched.highest_ready().is_none_or(|p| p <= prio)
}

/// At most the four register words and no capabilities: the message info's length (bits 0–6)
/// and extra-capability count (bits 7–8) together, as one number, are at most 4.
#[inline(always)]
fn short_message(info: MessageInfo) -> bool {
    const LENGTH_AND_CAPS: u64 = 0x1ff;
    const _: () = assert!(MSG_REGISTERS == 4);
    info.0 & LENGTH_AND_CAPS <= MSG_REGISTERS as u64
}

/// Move the message's register words (exactly `length` of them, as the general path does: the
/// receiver's other registers keep their values) and the message info from `from` to `to`.
#[inline(always)]
fn transfer(from: &Tcb, to: &mut Tcb, info: MessageInfo, badge: u64) {
    let n = info.length();
    if n > 0 {
        to.regs.r10 = from.regs.r10;
        if n > 1 {
            to.regs.r8 = from.regs.r8;
            if n > 2 {
                to.regs.r9 = from.regs.r9;
                if n > 3 {
                    to.regs.r15 = from.regs.r15;
                }
            }
        }
    }
    to.regs.rsi = MessageInfo::new(info.label(), 0, 0, n).0;
    to.regs.rdi = badge;
    to.regs.rax = 0;
}

/// Call from the current thread `t` to a server already waiting on the endpoint.
#[inline(always)]
pub fn call(k: &mut Kernel, t: &mut Tcb) -> bool {
    if !t.profile.fast_allows(profile::mask(profile::CALL)) {
        return false;
    }
    call_as::<false>(k, t)
}

/// The Call fastpath, for an untraced thread or (`TRACED`) a traced one, which appends its
/// record once every check has passed (a full ring sends it to the general path, which counts
/// the drop).
#[inline(always)]
fn call_as<const TRACED: bool>(k: &mut Kernel, t: &mut Tcb) -> bool {
    let info = MessageInfo(t.regs.rsi);
    if !short_message(info) {
        return false;
    }
    let Some(Cap::Endpoint { ptr, badge, rights }) = cspace::lookup_single_level(&t.slots[TCB_CSPACE].cap, t.regs.rdi)
    else {
        return false;
    };
    if !rights.contains(Rights::WRITE) || !(rights.contains(Rights::GRANT) || rights.contains(Rights::GRANT_REPLY)) {
        return false;
    }
    // SAFETY: the endpoint comes from a valid capability.
    let ep = unsafe { &mut *kptr::<Endpoint>(ptr) };
    if ep.state != EP_RECV || ep.queue.head == 0 {
        return false;
    }
    // SAFETY: a queued TCB is live, and it is not `t` (which is running, not waiting).
    let server = unsafe { tcb(ep.queue.head) };
    let ThreadState::BlockedOnReceive { can_grant: reply_can_grant, .. } = server.state else { return false };
    if !may_run(k, server.priority) {
        return false;
    }
    if TRACED && !t.trace.fast_append([trace::fast_word(trace::FAST_CALL), info.0]) {
        return false;
    }
    if ep.queue.remove_head(server) {
        ep.state = EP_IDLE;
    }
    transfer(t, server, info, badge);
    t.state = ThreadState::BlockedOnReply { interruptible: false };
    t.counters.ipc_sent += 1;
    // A receiver holds no reply right (receiving gave it up), so only the new link is made.
    t.reply_holder = server.addr();
    server.caller = t.addr();
    server.caller_can_grant = reply_can_grant;
    server.state = ThreadState::Running;
    server.counters.ipc_received += 1;
    count_hit(0);
    // SAFETY: `server` is live and runnable; it replaces the (now blocked) current thread.
    unsafe { k.sched.set_current_at(server, server.priority) };
    true
}

/// ReplyRecv from the current thread `t`: reply to its caller, who is waiting, and wait on the
/// endpoint, where no sender is queued.
#[inline(always)]
pub fn reply_recv(k: &mut Kernel, t: &mut Tcb) -> bool {
    if !t.profile.fast_allows(profile::mask(profile::REPLY_RECV)) {
        return false;
    }
    reply_recv_as::<false>(k, t)
}

/// The Call fastpath of a traced thread (whose syscalls enter the traced copy of the syscall
/// path): its bit is in the traced position of `fast` ([`Profile::TRACED_SHIFT`]), and it
/// appends its record once every check has passed.
#[inline(always)]
pub fn traced_call(k: &mut Kernel, t: &mut Tcb) -> bool {
    t.profile.fast_allows(profile::mask(profile::CALL) << Profile::TRACED_SHIFT) && call_as::<true>(k, t)
}

/// The ReplyRecv fastpath of a traced thread (as [`traced_call`]).
#[inline(always)]
pub fn traced_reply_recv(k: &mut Kernel, t: &mut Tcb) -> bool {
    t.profile.fast_allows(profile::mask(profile::REPLY_RECV) << Profile::TRACED_SHIFT) && reply_recv_as::<true>(k, t)
}

/// The ReplyRecv fastpath, untraced or traced (as [`call_as`]).
#[inline(always)]
fn reply_recv_as<const TRACED: bool>(k: &mut Kernel, t: &mut Tcb) -> bool {
    let info = MessageInfo(t.regs.rsi);
    if !short_message(info) || t.caller == 0 {
        return false;
    }
    // SAFETY: the reply link names a live TCB blocked on its reply, so not `t`.
    let client = unsafe { tcb(t.caller) };
    if !matches!(client.state, ThreadState::BlockedOnReply { .. })
        || client.fault != Fault::None
        || !may_run(k, client.priority)
    {
        return false;
    }
    let Some(Cap::Endpoint { ptr, rights, .. }) = cspace::lookup_single_level(&t.slots[TCB_CSPACE].cap, t.regs.rdi)
    else {
        return false;
    };
    if !rights.contains(Rights::READ) {
        return false;
    }
    // SAFETY: the endpoint comes from a valid capability.
    let ep = unsafe { &mut *kptr::<Endpoint>(ptr) };
    if ep.state == EP_SEND {
        return false;
    }
    if t.bound_notification != 0 {
        // SAFETY: a bound notification is live while bound.
        let n = unsafe { &*kptr::<Notification>(t.bound_notification) };
        if n.state == NTFN_ACTIVE {
            return false;
        }
    }
    if TRACED && !t.trace.fast_append([trace::fast_word(trace::FAST_REPLY_RECV), info.0]) {
        return false;
    }
    t.caller = 0;
    client.reply_holder = 0;
    t.state = ThreadState::BlockedOnReceive { ep: ptr, can_grant: rights.contains(Rights::GRANT) };
    ep.queue.push_back(t);
    ep.state = EP_RECV;
    transfer(t, client, info, 0);
    t.counters.ipc_sent += 1;
    client.state = ThreadState::Running;
    client.counters.ipc_received += 1;
    count_hit(1);
    // SAFETY: `client` is live and runnable; it replaces the (now blocked) current thread.
    unsafe { k.sched.set_current_at(client, client.priority) };
    true
}
