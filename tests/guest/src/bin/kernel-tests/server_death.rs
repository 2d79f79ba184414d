//! A Call that ends without its reply, on the real kernel: the thread holding the right to
//! reply is suspended or deleted (the caller gets `ReplyLost`), the endpoint a caller waits on
//! is deleted (its Call, restarted, finds the slot empty), and a CallInterruptible ended by a
//! signal on the caller's bound notification (queued, waiting for the reply, bits pending at the
//! start) while an ordinary Call is not.

use super::*;

static REG_STACKS: Stacks<8, { 16 * 1024 }> = Stacks::new();

fn start(entry: extern "C" fn(u64) -> !, arg: u64, prio: u64) -> Result<u64, Error> {
    ROOT.spawn(entry, arg, prio, 0, REG_STACKS.next_top())
}

fn stop(tcb: u64) {
    let _ = k::tcb_suspend(tcb);
    let _ = k::cnode_delete(CNODE, tcb);
}

/// Let every thread above priority 1 run until it blocks, then take the CPU back.
fn let_others_run() {
    let _ = k::tcb_set_priority(TCB, TCB, 1);
    let _ = k::tcb_set_priority(TCB, TCB, 255);
}

const UNSET: u64 = u64::MAX;

fn code<T>(r: &Result<T, Error>) -> u64 {
    match r {
        Ok(_) => 0,
        Err(e) => *e as u64,
    }
}

// ---- the thread that was to reply is gone ----

/// Word 0: the server took the Call (1); word 1: the caller's result code.
static GONE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// A notification nobody signals: the server waits there holding its reply right (a wait on a
/// notification does not give the right up; a receive on an endpoint would).
static NEVER: AtomicU64 = AtomicU64::new(0);

extern "C" fn holding_server(ep: u64) -> ! {
    if sys::recv(ep).is_ok() {
        GONE[0].store(1, Ordering::SeqCst);
    }
    let _ = sys::recv(NEVER.load(Ordering::SeqCst));
    sys::thread_exit(0)
}

extern "C" fn gone_caller(ep: u64) -> ! {
    let r = sys::call(ep, Msg::new(1, &[2]));
    GONE[1].store(code(&r), Ordering::SeqCst);
    sys::thread_exit(0)
}

/// One round: the server takes the Call, then `end` is done to it; the caller's result.
fn reply_lost_round(end: fn(u64) -> Result<(), Error>) -> Result<(u64, u64, u64), Error> {
    let ep = retype(ObjectType::Endpoint, 0)?;
    GONE[0].store(0, Ordering::SeqCst);
    GONE[1].store(UNSET, Ordering::SeqCst);
    let s = start(holding_server, ep, 100)?;
    let_others_run();
    let c = start(gone_caller, ep, 100)?;
    let_others_run();
    let before = GONE[1].load(Ordering::SeqCst);
    let ended = end(s);
    let_others_run();
    let after = GONE[1].load(Ordering::SeqCst);
    stop(s);
    stop(c);
    ended?;
    Ok((GONE[0].load(Ordering::SeqCst), before, after))
}

pub fn test_a_call_whose_server_is_suspended_or_deleted_fails_with_reply_lost() -> bool {
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    NEVER.store(n, Ordering::SeqCst);
    let suspend: fn(u64) -> Result<(), Error> = k::tcb_suspend;
    let delete: fn(u64) -> Result<(), Error> = |s| k::cnode_delete(CNODE, s);
    for (what, end) in [("suspended", suspend), ("deleted", delete)] {
        let r = reply_lost_round(end);
        check!(r.is_ok(), "{what}: {r:?}");
        let (took, before, after) = r.unwrap_or_default();
        check!(
            took == 1 && before == UNSET,
            "{what}: the server took the Call ({took}), the caller waited ({before:#x})"
        );
        check!(after == Error::ReplyLost as u64, "{what}: the caller got {after:#x}, not ReplyLost");
    }
    true
}

/// The caller's results: the Call queued on the endpoint copy, then a later one.
static DELETED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

extern "C" fn deleted_ep_caller(ep: u64) -> ! {
    let r = sys::call(ep, Msg::new(1, &[2]));
    DELETED[0].store(code(&r), Ordering::SeqCst);
    let r = sys::call_interruptible(ep, Msg::new(1, &[2]));
    DELETED[1].store(if let Err(sys::SysError::Kernel(e)) = r { e as u64 } else { 0 }, Ordering::SeqCst);
    sys::thread_exit(0)
}

pub fn test_a_call_queued_on_a_deleted_endpoint_fails() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let copy = slot();
    check!(k::cnode_copy(CNODE, copy, ep, rights::ALL).is_ok(), "copy");
    for d in &DELETED {
        d.store(UNSET, Ordering::SeqCst);
    }
    let Ok(c) = start(deleted_ep_caller, copy, 100) else { return false };
    let_others_run();
    let waited = DELETED[0].load(Ordering::SeqCst);
    let revoked = k::cnode_revoke(CNODE, ep).and_then(|()| k::cnode_delete(CNODE, ep));
    let_others_run();
    stop(c);
    check!(waited == UNSET && revoked.is_ok(), "the caller waited ({waited:#x}); revoke and delete: {revoked:?}");
    check_eq!(DELETED[0].load(Ordering::SeqCst), Error::InvalidCapability as u64);
    check_eq!(DELETED[1].load(Ordering::SeqCst), Error::InvalidCapability as u64);
    true
}

// ---- CallInterruptible ----

/// What the client saw: (result code, bits or reply word) of each of its four Calls, then the
/// word it polled from its notification.
static INTR: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
static INTR_GO: AtomicU64 = AtomicU64::new(0);
static INTR_NTFN: AtomicU64 = AtomicU64::new(0);

fn record_interruptible(i: usize, r: Result<sys::Received, sys::SysError>) {
    let (code, word) = match r {
        Ok(r) => (0, r.msg.mrs[0]),
        Err(sys::SysError::Interrupted { bits }) => (Error::Interrupted as u64, bits),
        Err(sys::SysError::Kernel(e)) => (e as u64, 0),
    };
    INTR[2 * i].store(code, Ordering::SeqCst);
    INTR[2 * i + 1].store(word, Ordering::SeqCst);
}

extern "C" fn interruptible_client(ep: u64) -> ! {
    // 1: queued (nobody receives), interrupted.
    record_interruptible(0, sys::call_interruptible(ep, Msg::new(1, &[1])));
    // 2: received, interrupted while waiting for the reply.
    record_interruptible(1, sys::call_interruptible(ep, Msg::new(2, &[2])));
    let _ = sys::recv(INTR_GO.load(Ordering::SeqCst));
    // 3: bits already pending: ended at once.
    record_interruptible(2, sys::call_interruptible(ep, Msg::new(3, &[3])));
    // 4: an ordinary Call is not interrupted; the signal stays pending.
    let r = sys::call(ep, Msg::new(4, &[4]));
    record_interruptible(3, r.map_err(sys::SysError::Kernel));
    let polled = sys::nb_recv(INTR_NTFN.load(Ordering::SeqCst)).map(|r| r.badge).unwrap_or(UNSET);
    INTR[8].store(polled, Ordering::SeqCst);
    sys::thread_exit(0)
}

fn signal_with(n: u64, badge: u64) -> bool {
    let s = slot();
    k::cnode_mint(CNODE, s, n, rights::ALL, badge).is_ok() && sys::send(s, Msg::default()).is_ok()
}

pub fn test_call_interruptible_ends_on_a_bound_signal() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let Ok(go) = retype(ObjectType::Notification, 0) else { return false };
    INTR_GO.store(go, Ordering::SeqCst);
    INTR_NTFN.store(n, Ordering::SeqCst);
    for w in &INTR {
        w.store(UNSET, Ordering::SeqCst);
    }
    // Without a bound notification nothing could end it: refused.
    check_eq!(sys::call_interruptible(ep, Msg::new(0, &[])), Err(sys::SysError::Kernel(Error::IllegalOperation)));
    let Ok(c) = start(interruptible_client, ep, 100) else { return false };
    let bound = k::tcb_bind_notification(c, n);
    let_others_run(); // the client's first Call waits in the endpoint's queue
    let queued = INTR[0].load(Ordering::SeqCst) == UNSET;
    let s1 = signal_with(n, 0x4);
    let_others_run(); // interrupted; its second Call waits in the queue
    // We receive the second Call, and the signal comes while the client waits for our reply.
    let second = sys::recv(ep).map(|r| r.msg.info.label());
    let s2 = signal_with(n, 0x8);
    // Our late reply goes nowhere (and is no error).
    let late = sys::reply(Msg::new(0, &[0xbad]));
    let_others_run(); // the client records, then waits for `go`
    let s3 = signal_with(n, 0x10) && signal_with(go, 1);
    let_others_run(); // its third Call fails at once; its fourth (ordinary) waits
    let fourth = sys::recv(ep).map(|r| r.msg.info.label());
    let s4 = signal_with(n, 0x20);
    let answered = sys::reply(Msg::new(0, &[0x77]));
    let_others_run();
    stop(c);
    check!(bound.is_ok() && queued, "bind: {bound:?}; the first Call waited: {queued}");
    check!(s1 && s2 && s3 && s4, "signals: {s1} {s2} {s3} {s4}");
    check_eq!(second, Ok(2));
    check_eq!(late, Ok(()));
    check_eq!(fourth, Ok(4));
    check_eq!(answered, Ok(()));
    let got: [u64; 9] = core::array::from_fn(|i| INTR[i].load(Ordering::SeqCst));
    let i = Error::Interrupted as u64;
    check_eq!(got, [i, 0x4, i, 0x8, i, 0x10, 0, 0x77, 0x20]);
    true
}
