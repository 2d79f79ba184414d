//! Notifications: asynchronous signals, as seL4's. A notification holds one word; Signal ORs the
//! sender's badge into it (or hands it straight to a waiting thread), Wait takes the word and
//! clears it (or blocks until a signal comes). A notification can be *bound* to one TCB: a signal
//! then also reaches that thread while it waits on an endpoint, so a server can take both IPC
//! and interrupts through one receive. A signal to a bound thread blocked in a CallInterruptible
//! ends that Call with the notification's word (see `endpoint::interrupt`).

use super::kptr::kptr;
use ozone_abi::MessageInfo;

use super::endpoint::{IpcEnv, WaitQueue, tcb};
use super::tcb::{Tcb, ThreadState};

/// No pending word, nobody waiting.
pub const NTFN_IDLE: u64 = 0;
/// Threads are waiting.
pub const NTFN_WAITING: u64 = 1;
/// A word is pending.
pub const NTFN_ACTIVE: u64 = 2;

/// A notification object.
#[repr(C)]
pub struct Notification {
    pub state: u64,
    pub word: u64,
    pub queue: WaitQueue,
    /// The TCB bound to this notification, 0 if none.
    pub bound_tcb: u64,
}

const _: () = assert!(core::mem::size_of::<Notification>() <= 1 << ozone_abi::object::NOTIFICATION_BITS);

/// Complete `t`'s wait with `word`: badge in `rdi`, empty message.
fn deliver(t: &mut Tcb, word: u64) {
    t.regs.rdi = word;
    t.regs.rsi = MessageInfo::new(0, 0, 0, 0).0;
    t.regs.rax = 0;
    t.state = ThreadState::Running;
}

/// Signal `n` with `badge`.
///
/// # Safety
/// `n` points at a live notification.
pub unsafe fn signal(env: &mut dyn IpcEnv, n: *mut Notification, badge: u64) {
    // SAFETY: per the contract.
    let n = unsafe { &mut *n };
    match n.state {
        NTFN_WAITING => {
            // SAFETY: no other reference to the waiting thread is live here.
            let Some(t) = (unsafe { n.queue.pop_front() }) else { return };
            if n.queue.is_empty() {
                n.state = NTFN_IDLE;
            }
            deliver(t, badge);
            // SAFETY: `t` is live and now runnable.
            unsafe { env.scheduler().wake(t) };
        }
        _ => {
            // A bound thread waiting on an endpoint takes the signal directly.
            if n.state == NTFN_IDLE && n.bound_tcb != 0 {
                // SAFETY: a bound TCB is live (unbound before it is destroyed).
                let t = unsafe { tcb(n.bound_tcb) };
                if let ThreadState::BlockedOnReceive { .. } = t.state {
                    // The receive completes with the signal (it is not restarted).
                    // SAFETY: `t` is live; its endpoint is live while it waits there.
                    unsafe { super::endpoint::leave_endpoint(t) };
                    deliver(t, badge);
                    // SAFETY: `t` is live and now runnable.
                    unsafe { env.scheduler().wake(t) };
                    return;
                }
            }
            // A bound thread in a CallInterruptible: the signal (with any bits pending, which
            // can have come while it was bound elsewhere) ends the Call.
            if n.bound_tcb != 0 {
                let word = n.word | badge;
                // SAFETY: a bound TCB is live (unbound before it is destroyed), and no reference
                // to it is live here; the objects its state names are live while it waits.
                if unsafe { super::endpoint::interrupt(env, kptr::<Tcb>(n.bound_tcb), word) } {
                    n.word = 0;
                    n.state = NTFN_IDLE;
                    return;
                }
            }
            n.word |= badge;
            n.state = NTFN_ACTIVE;
        }
    }
}

/// Wait on `n` (Wait, or Poll when not blocking: returns 0 at once if nothing is pending).
///
/// # Safety
/// `n` and `t` point at live objects; `t` is the current thread.
pub unsafe fn wait(env: &mut dyn IpcEnv, n: *mut Notification, t: *mut Tcb, blocking: bool) {
    // SAFETY: per the contract.
    let (n_ref, t) = unsafe { (&mut *n, &mut *t) };
    match n_ref.state {
        NTFN_ACTIVE => {
            let word = core::mem::replace(&mut n_ref.word, 0);
            n_ref.state = NTFN_IDLE;
            deliver(t, word);
        }
        _ if blocking => {
            t.state = ThreadState::BlockedOnNotification { ntfn: n as u64 };
            n_ref.queue.push_back(t);
            n_ref.state = NTFN_WAITING;
            env.scheduler().current_blocked();
        }
        _ => deliver(t, 0),
    }
}

/// If `n` has a pending word, give it to `t` (a bound thread starting a receive). Returns
/// whether it did.
///
/// # Safety
/// `n` and `t` point at live objects.
pub unsafe fn take_pending(n: *mut Notification, t: &mut Tcb) -> bool {
    // SAFETY: per the contract.
    let n = unsafe { &mut *n };
    if n.state != NTFN_ACTIVE {
        return false;
    }
    let word = core::mem::replace(&mut n.word, 0);
    n.state = NTFN_IDLE;
    deliver(t, word);
    true
}

/// For a CallInterruptible starting: if `t`'s bound notification `n` has a pending word, take
/// it (the Call fails at once with it). Returns the word, if there was one.
///
/// # Safety
/// `n` points at a live notification.
pub unsafe fn take_pending_word(n: *mut Notification) -> Option<u64> {
    // SAFETY: per the contract.
    let n = unsafe { &mut *n };
    if n.state != NTFN_ACTIVE {
        return None;
    }
    n.state = NTFN_IDLE;
    Some(core::mem::replace(&mut n.word, 0))
}

/// `n` was just bound: if it has a word pending and its thread is blocked in a
/// CallInterruptible, that Call ends now with the word (as a signal would have ended it), so a
/// bound thread never waits interruptibly while its notification holds bits.
///
/// # Safety
/// `n` points at a live notification, and no reference to its bound thread is live.
pub unsafe fn interrupt_bound(env: &mut dyn IpcEnv, n: *mut Notification) {
    // SAFETY: per the contract.
    let n = unsafe { &mut *n };
    if n.state != NTFN_ACTIVE || n.bound_tcb == 0 {
        return;
    }
    // SAFETY: a bound TCB is live, and no reference to it is live (the contract); the objects
    // its state names are live while it waits.
    if unsafe { super::endpoint::interrupt(env, kptr::<Tcb>(n.bound_tcb), n.word) } {
        n.word = 0;
        n.state = NTFN_IDLE;
    }
}

/// Remove `t` from `n`'s wait queue.
///
/// # Safety
/// `n` and `t` point at live objects and `t` waits on `n`.
pub unsafe fn cancel_wait(n: *mut Notification, t: &mut Tcb) {
    // SAFETY: per the contract.
    let n = unsafe { &mut *n };
    n.queue.remove(t);
    if n.queue.is_empty() && n.state == NTFN_WAITING {
        n.state = NTFN_IDLE;
    }
}

/// The notification is going away: waiting threads restart; a bound TCB is unbound.
///
/// # Safety
/// `n` points at a live notification.
pub unsafe fn cancel_all(env: &mut dyn IpcEnv, n: *mut Notification) {
    // SAFETY: per the contract.
    let n = unsafe { &mut *n };
    // SAFETY: one waiting thread at a time; no other reference to it is live.
    while let Some(t) = unsafe { n.queue.pop_front() } {
        t.regs.rewind_syscall();
        t.state = ThreadState::Restart;
        // SAFETY: `t` is live.
        unsafe { env.scheduler().wake(t) };
    }
    if n.bound_tcb != 0 {
        // SAFETY: a bound TCB is live (unbound before it is destroyed).
        unsafe { tcb(n.bound_tcb) }.bound_notification = 0;
        n.bound_tcb = 0;
    }
    n.state = NTFN_IDLE;
    n.word = 0;
}

/// Bind `n` to `t` (TCB BindNotification). Fails if either is already bound, or if threads wait
/// on `n` (as in seL4: once bound, only `t` may wait on it, and a waiter already there would
/// take `t`'s signals).
///
/// # Safety
/// `n` and `t` point at live objects.
pub unsafe fn bind(n: *mut Notification, t: &mut Tcb) -> Result<(), ozone_abi::Error> {
    // SAFETY: per the contract.
    let n_ref = unsafe { &mut *n };
    if n_ref.bound_tcb != 0 || t.bound_notification != 0 || n_ref.state == NTFN_WAITING {
        return Err(ozone_abi::Error::IllegalOperation);
    }
    n_ref.bound_tcb = t.addr();
    t.bound_notification = n as u64;
    Ok(())
}

/// Unbind `t`'s notification (TCB UnbindNotification). Fails if none is bound.
pub fn unbind(t: &mut Tcb) -> Result<(), ozone_abi::Error> {
    if t.bound_notification == 0 {
        return Err(ozone_abi::Error::IllegalOperation);
    }
    // SAFETY: a bound notification is live (cancel_all unbinds before it is destroyed).
    let n = unsafe { &mut *kptr::<Notification>(t.bound_notification) };
    n.bound_tcb = 0;
    t.bound_notification = 0;
    Ok(())
}
