//! The in-guest kernel test suite (in the style of sel4test), booted as the root task. Each test
//! checks one behaviour of the capability kernel from userspace — positive and negative paths —
//! and prints `[kernel-tests] ok <name>` or `[kernel-tests] FAIL <name>: <why>`; the run ends
//! with `[kernel-tests] N passed, N failed` and exit status 0 only if all passed.
//!
//! **Raw on purpose.** It tests the kernel's ABI itself, so it names capabilities by raw slot
//! numbers and calls `ozone_agent_sdk::kernel` / `sys` directly, not the typed handles of `caps`
//! that programs use: what goes into each register and message word is the subject of the test.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::sync::atomic::{AtomicU64, Ordering};

use ozone_abi::bootinfo::slot;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, MessageInfo, rights};
use ozone_agent_sdk::kernel::{self as k, UserRegisters};
use ozone_agent_sdk::root::{self, Root, Stacks};
use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println};

entry!(run);

const CNODE: u64 = slot::CNODE;
const VSPACE: u64 = slot::VSPACE;
const TCB: u64 = slot::TCB;

static ROOT: Root = Root::new();

fn slot() -> u64 {
    ROOT.slot().expect("out of slots")
}

fn retype(ty: ObjectType, size_bits: u64) -> Result<u64, Error> {
    ROOT.retype(ty, size_bits)
}

/// What the tests need of the environment.
struct Env {
    untyped: u64,
    next_slot: u64,
}

fn env() -> Env {
    Env { untyped: ROOT.untyped(), next_slot: ROOT.peek_slot() }
}

macro_rules! check {
    ($cond:expr, $($why:tt)*) => {
        if !$cond {
            ::ozone_agent_sdk::println!("[kernel-tests]      {}", format_args!($($why)*));
            return false;
        }
    };
}

macro_rules! check_eq {
    ($a:expr, $b:expr) => {{
        let (a, b) = (&$a, &$b);
        if a != b {
            ::ozone_agent_sdk::println!(
                "[kernel-tests]      {} = {:?}, expected {:?} (line {})",
                stringify!($a),
                a,
                b,
                line!()
            );
            return false;
        }
    }};
}

#[path = "kernel-tests/isolation.rs"]
mod isolation;
#[path = "kernel-tests/server_death.rs"]
mod server_death;

// ---- threads ----

static STACKS: Stacks<8, { 16 * 1024 }> = Stacks::new();

struct Thread {
    tcb: u64,
}

/// Start `entry(arg)` in a new thread sharing this CSpace and VSpace, at `prio`, with `fault_ep`
/// (a slot, 0 for none) as its fault handler.
fn spawn(entry: extern "C" fn(u64) -> !, arg: u64, prio: u64, fault_ep: u64) -> Result<Thread, Error> {
    ROOT.spawn(entry, arg, prio, fault_ep, STACKS.next_top()).map(|tcb| Thread { tcb })
}

// ---- tests ----

fn test_retype_every_object_type() -> bool {
    for ty in
        [ObjectType::Tcb, ObjectType::Endpoint, ObjectType::Notification, ObjectType::Frame4K, ObjectType::PageTable]
    {
        check!(retype(ty, 0).is_ok(), "retype {:?} failed", ty);
    }
    check!(retype(ObjectType::CNode, 4).is_ok(), "retype CNode");
    check!(retype(ObjectType::Untyped, 16).is_ok(), "retype Untyped");
    // Bad arguments.
    let s = slot();
    check!(
        k::untyped_retype(env().untyped, ObjectType::Untyped, 99, CNODE, 0, 0, s, 1).is_err(),
        "untyped of 2^99 bytes"
    );
    let bad_type = k::invoke(env().untyped, ozone_abi::invocation::UNTYPED_RETYPE, &[99, 0, 0, 0, s, 1], &[CNODE]);
    check_eq!(bad_type.map(|_| ()), Err(Error::InvalidArgument));
    check!(
        k::untyped_retype(env().untyped, ObjectType::Endpoint, 0, CNODE, 0, 0, TCB, 1).is_err(),
        "retype into an occupied slot"
    );
    let Some(info) = root::boot_info() else { return false };
    check!(
        k::untyped_retype(env().untyped, ObjectType::Endpoint, 0, CNODE, 0, 0, 1 << info.cnode_radix, 1).is_err(),
        "retype past the CNode"
    );
    check!(
        k::untyped_retype(CNODE, ObjectType::Endpoint, 0, CNODE, 0, 0, s, 1).is_err(),
        "retype on a non-untyped cap"
    );
    true
}

fn test_untyped_exhaustion_and_reuse() -> bool {
    // A small untyped, filled with endpoints until it is exhausted, revoked, and reused.
    let Ok(small) = retype(ObjectType::Untyped, 12) else { return false };
    let first = env().next_slot;
    let mut made = 0;
    loop {
        let s = slot();
        match k::untyped_retype(small, ObjectType::Endpoint, 0, CNODE, 0, 0, s, 1) {
            Ok(()) => made += 1,
            Err(e) => {
                check_eq!(e, Error::NotEnoughMemory);
                break;
            }
        }
    }
    check_eq!(made, 4096 >> ozone_abi::object::ENDPOINT_BITS);
    check!(k::cnode_revoke(CNODE, small).is_ok(), "revoke the untyped");
    // Every child is gone...
    check_eq!(sys::send(first, Msg::new(0, &[])), Err(Error::InvalidCapability));
    // ...and the memory can be retyped again.
    check!(k::untyped_retype(small, ObjectType::Endpoint, 0, CNODE, 0, 0, first, 1).is_ok(), "reuse after revoke");
    true
}

fn test_cnode_copy_mint_move_delete_revoke() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let (copy, minted, moved, grandchild) = (slot(), slot(), slot(), slot());
    check!(k::cnode_copy(CNODE, copy, ep, rights::ALL).is_ok(), "copy");
    check!(k::cnode_mint(CNODE, minted, ep, rights::WRITE, 42).is_ok(), "mint");
    // A badge cannot be changed once set.
    check!(k::cnode_mint(CNODE, grandchild, minted, rights::ALL, 7).is_err(), "re-badge must fail");
    check!(k::cnode_copy(CNODE, grandchild, minted, rights::ALL).is_ok(), "copy of minted");
    check!(k::cnode_move(CNODE, moved, copy).is_ok(), "move");
    check_eq!(k::cnode_delete(CNODE, copy), Ok(()));
    check_eq!(k::cnode_copy(CNODE, moved, ep, rights::ALL), Err(Error::DeleteFirst));
    // Revoke the original: every derived capability disappears.
    check!(k::cnode_revoke(CNODE, ep).is_ok(), "revoke");
    for s in [moved, minted, grandchild] {
        check_eq!(sys::nb_send(s, Msg::new(0, &[])), Err(Error::InvalidCapability));
    }
    check!(sys::nb_send(ep, Msg::new(0, &[])).is_ok(), "the original survives its revoke");
    true
}

fn test_rights_only_narrow() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let (ro, back) = (slot(), slot());
    check!(k::cnode_mint(CNODE, ro, ep, rights::READ, 0).is_ok(), "mint read-only");
    // Sending needs the write right.
    check_eq!(sys::nb_send(ro, Msg::new(0, &[])), Err(Error::IllegalOperation));
    // Copying with all rights does not give them back.
    check!(k::cnode_copy(CNODE, back, ro, rights::ALL).is_ok(), "copy");
    check_eq!(sys::nb_send(back, Msg::new(0, &[])), Err(Error::IllegalOperation));
    true
}

fn test_deep_and_wide_revoke() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    // Deep: a chain of 100 copies; wide: 100 copies of the original.
    let mut prev = ep;
    let mut all = [0u64; 200];
    for (i, s) in all.iter_mut().enumerate() {
        *s = slot();
        let src = if i < 100 { prev } else { ep };
        check!(k::cnode_copy(CNODE, *s, src, rights::ALL).is_ok(), "copy {i}");
        if i < 100 {
            prev = *s;
        }
    }
    check!(k::cnode_revoke(CNODE, ep).is_ok(), "revoke");
    for s in all {
        check_eq!(sys::nb_send(s, Msg::new(0, &[])), Err(Error::InvalidCapability));
    }
    true
}

static SHARED: AtomicU64 = AtomicU64::new(0);

extern "C" fn sender(ep: u64) -> ! {
    let _ = sys::send(ep, Msg::new(7, &[11, 22, 33, 44]));
    sys::thread_exit(0)
}

fn test_send_recv_with_badge() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let badged = slot();
    check!(k::cnode_mint(CNODE, badged, ep, rights::ALL, 0x5eed).is_ok(), "mint");
    check!(spawn(sender, badged, 100, 0).is_ok(), "spawn");
    let r = sys::recv(ep);
    check!(r.is_ok(), "recv");
    let r = r.unwrap();
    check_eq!(r.badge, 0x5eed);
    check_eq!(r.msg.info.label(), 7);
    check_eq!(r.msg.mrs, [11, 22, 33, 44]);
    true
}

extern "C" fn caller(ep: u64) -> ! {
    let r = sys::call(ep, Msg::new(1, &[20]));
    SHARED.store(r.map(|r| r.msg.mrs[0]).unwrap_or(u64::MAX), Ordering::SeqCst);
    let _ = sys::send(ep, Msg::new(2, &[]));
    sys::thread_exit(0)
}

fn test_call_reply() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    SHARED.store(0, Ordering::SeqCst);
    check!(spawn(caller, ep, 100, 0).is_ok(), "spawn");
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!(r.msg.info.label(), 1);
    check!(sys::reply(Msg::new(0, &[r.msg.mrs[0] + 1])).is_ok(), "reply");
    let done = sys::recv(ep).unwrap_or_default();
    check_eq!(done.msg.info.label(), 2);
    check_eq!(SHARED.load(Ordering::SeqCst), 21);
    // A second reply goes nowhere and is no error.
    check!(sys::reply(Msg::new(0, &[])).is_ok(), "reply without caller");
    true
}

fn test_non_blocking_forms() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    check!(sys::nb_send(ep, Msg::new(1, &[1])).is_ok(), "nbsend with nobody listening");
    let r = sys::nb_recv(ep);
    check!(r.is_ok(), "nbrecv");
    check_eq!(r.unwrap().badge, 0);
    true
}

fn test_notifications() -> bool {
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let (a, b) = (slot(), slot());
    check!(k::cnode_mint(CNODE, a, n, rights::ALL, 0b01).is_ok(), "mint a");
    check!(k::cnode_mint(CNODE, b, n, rights::ALL, 0b10).is_ok(), "mint b");
    check!(sys::send(a, Msg::default()).is_ok(), "signal a");
    check!(sys::send(b, Msg::default()).is_ok(), "signal b");
    check_eq!(sys::recv(n).map(|r| r.badge), Ok(0b11));
    // Polling with nothing pending returns 0.
    check_eq!(sys::nb_recv(n).map(|r| r.badge), Ok(0));
    true
}

extern "C" fn ep_waiter(ep: u64) -> ! {
    let r = sys::recv(ep);
    SHARED.store(r.map(|r| r.badge).unwrap_or(u64::MAX), Ordering::SeqCst);
    sys::thread_exit(0)
}

fn test_bound_notification() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let sig = slot();
    check!(k::cnode_mint(CNODE, sig, n, rights::ALL, 0x80).is_ok(), "mint");
    SHARED.store(0, Ordering::SeqCst);
    let Ok(t) = spawn(ep_waiter, ep, 1, 0) else { return false };
    check!(k::tcb_bind_notification(t.tcb, n).is_ok(), "bind");
    check_eq!(k::tcb_bind_notification(t.tcb, n), Err(Error::IllegalOperation));
    // Let the waiter (priority 1) run and block on the endpoint by dropping below it.
    check!(k::tcb_set_priority(TCB, TCB, 0).is_ok(), "lower own priority");
    check_eq!(SHARED.load(Ordering::SeqCst), 0);
    // Signal: the waiter, blocked on the endpoint, wakes with the badge and preempts us.
    check!(sys::send(sig, Msg::default()).is_ok(), "signal");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "raise own priority");
    check_eq!(SHARED.load(Ordering::SeqCst), 0x80);
    true
}

static FAULT_ADDR: u64 = 0x5000_0000;

extern "C" fn faulter(ep: u64) -> ! {
    // SAFETY: deliberately touches an unmapped page; the fault handler maps it and resumes.
    unsafe { core::ptr::write_volatile(FAULT_ADDR as *mut u64, 0xfeed) };
    // SAFETY: now mapped.
    let v = unsafe { core::ptr::read_volatile(FAULT_ADDR as *const u64) };
    let _ = sys::send(ep, Msg::new(9, &[v]));
    sys::thread_exit(0)
}

fn test_fault_handler_maps_and_resumes() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    SHARED.store(0, Ordering::SeqCst);
    check!(spawn(faulter, ep, 100, ep).is_ok(), "spawn");
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!(r.msg.info.label(), 1); // VM fault
    check_eq!(r.msg.mrs[1], FAULT_ADDR);
    // Map a page there (with the tables it needs) and resume the thread.
    let Ok(pt) = retype(ObjectType::PageTable, 0) else { return false };
    check_eq!(k::paging_map(pt, VSPACE, FAULT_ADDR), Err(Error::FailedLookup));
    let Ok(pd) = retype(ObjectType::PageDirectory, 0) else { return false };
    check!(k::paging_map(pd, VSPACE, FAULT_ADDR).is_ok(), "map page directory");
    check!(k::paging_map(pt, VSPACE, FAULT_ADDR).is_ok(), "map page table");
    let Ok(f) = retype(ObjectType::Frame4K, 0) else { return false };
    check!(k::frame_map(f, VSPACE, FAULT_ADDR, rights::READ | rights::WRITE, false).is_ok(), "map frame");
    check!(sys::reply(Msg::new(0, &[])).is_ok(), "resume");
    // The thread carries on and reports what it read back.
    let done = sys::recv(ep).unwrap_or_default();
    check_eq!((done.msg.info.label(), done.msg.mrs[0]), (9, 0xfeed));
    true
}

static FAULT_ADDR_2: u64 = 0x5020_0000;

extern "C" fn faulter_keeps_rax(ep: u64) -> ! {
    let out: u64;
    // SAFETY: deliberately stores to an unmapped page with a known value in rax; the fault
    // handler maps the page and resumes, and the store then completes.
    unsafe {
        core::arch::asm!(
            "mov rax, {magic}",
            "mov qword ptr [{addr}], 1",
            "mov {out}, rax",
            magic = in(reg) 0x1234_5678_9abc_def0u64,
            addr = in(reg) FAULT_ADDR_2,
            out = out(reg) out,
            out("rax") _,
        )
    };
    let _ = sys::send(ep, Msg::new(9, &[out]));
    sys::thread_exit(0)
}

fn test_fault_delivery_keeps_the_registers() -> bool {
    // We wait on the fault endpoint before the thread faults, so the fault goes straight to us.
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    check!(spawn(faulter_keeps_rax, ep, 100, ep).is_ok(), "spawn");
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!((r.msg.info.label(), r.msg.mrs[1]), (1, FAULT_ADDR_2));
    let Ok(f) = retype(ObjectType::Frame4K, 0) else { return false };
    check!(ROOT.map_frame_with_tables(f, VSPACE, FAULT_ADDR_2, rights::READ | rights::WRITE, false).is_ok(), "map");
    check!(sys::reply(Msg::new(0, &[])).is_ok(), "resume");
    let done = sys::recv(ep).unwrap_or_default();
    check_eq!((done.msg.info.label(), done.msg.mrs[0]), (9, 0x1234_5678_9abc_def0));
    true
}

extern "C" fn foreign_abi(ep: u64) -> ! {
    let r = sys::raw(0x4242, 0, 0);
    // The handler emulated the call and returned 0 (success) in rax.
    let _ = sys::send(ep, Msg::new(9, &[if r.is_ok() { 1 } else { 2 }]));
    sys::thread_exit(0)
}

fn test_unknown_syscall_becomes_a_fault() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    SHARED.store(0, Ordering::SeqCst);
    check!(spawn(foreign_abi, ep, 100, ep).is_ok(), "spawn");
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!(r.msg.info.label(), 2); // unknown syscall
    check_eq!(r.msg.mrs[2], 0x4242);
    check!(sys::reply(Msg::new(0, &[0])).is_ok(), "emulate");
    let done = sys::recv(ep).unwrap_or_default();
    check_eq!((done.msg.info.label(), done.msg.mrs[0]), (9, 1));
    true
}

extern "C" fn spinner(_: u64) -> ! {
    SHARED.fetch_add(1, Ordering::SeqCst);
    sys::thread_exit(0)
}

fn test_priorities_and_preemption() -> bool {
    SHARED.store(0, Ordering::SeqCst);
    check!(k::tcb_set_priority(TCB, TCB, 100).is_ok(), "own priority 100");
    // A higher-priority thread runs as soon as it is resumed, before spawn returns to us.
    check!(spawn(spinner, 0, 200, 0).is_ok(), "spawn high");
    check_eq!(SHARED.load(Ordering::SeqCst), 1);
    // A lower-priority one does not run while we can: yielding only rotates our own priority.
    check!(spawn(spinner, 0, 10, 0).is_ok(), "spawn low");
    sys::yield_now();
    check_eq!(SHARED.load(Ordering::SeqCst), 1);
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    // Nobody may raise a priority above its own maximum.
    let Ok(t) = retype(ObjectType::Tcb, 0) else { return false };
    check!(k::tcb_set_mc_priority(t, TCB, 50).is_ok(), "set mcp");
    check_eq!(k::tcb_set_priority(TCB, t, 60), Err(Error::RangeError));
    // Its own MCP is its ceiling, whatever the authority (ours is 255), and no MCP is raised.
    check_eq!(k::tcb_set_priority(t, TCB, 51), Err(Error::RangeError));
    check!(k::tcb_set_priority(t, TCB, 50).is_ok(), "priority at its ceiling");
    check_eq!(k::tcb_set_mc_priority(t, TCB, 51), Err(Error::RangeError));
    check_eq!(k::tcb_set_mc_priority(TCB, TCB, 255), Ok(()));
    check!(k::tcb_set_mc_priority(t, t, 40).is_ok(), "lowered");
    check_eq!(k::tcb_set_mc_priority(t, TCB, 50), Err(Error::RangeError));
    // A thread it makes starts with its maker's ceiling, not above.
    let Ok(u) = retype(ObjectType::Tcb, 0) else { return false };
    check!(k::tcb_set_priority(u, TCB, 255).is_ok(), "a new thread takes our ceiling");
    true
}

extern "C" fn fpu_user(value: u64) -> ! {
    // Put `value` in xmm3, let others run, and check it is still there.
    let out: u64;
    // SAFETY: uses only xmm3 and a general register.
    unsafe {
        core::arch::asm!("movq xmm3, {v}", v = in(reg) value);
    }
    sys::yield_now();
    sys::yield_now();
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("movq {o}, xmm3", o = out(reg) out);
    }
    if out == value {
        SHARED.fetch_add(1, Ordering::SeqCst);
    }
    sys::thread_exit(0)
}

fn test_fpu_state_is_per_thread() -> bool {
    SHARED.store(0, Ordering::SeqCst);
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "own priority 50");
    check!(spawn(fpu_user, 0x1111_2222_3333_4444, 50, 0).is_ok(), "spawn a");
    check!(spawn(fpu_user, 0x5555_6666_7777_8888, 50, 0).is_ok(), "spawn b");
    for _ in 0..6 {
        sys::yield_now();
    }
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check_eq!(SHARED.load(Ordering::SeqCst), 2);
    true
}

fn test_read_write_registers() -> bool {
    let Ok(t) = retype(ObjectType::Tcb, 0) else { return false };
    let regs = UserRegisters { rip: 0x40_1000, rsp: 0x7000, rax: 1, r15: 15, rflags: 0x202, ..Default::default() };
    check!(k::tcb_write_registers(t, false, &regs).is_ok(), "write");
    let back = k::tcb_read_registers(t, false);
    check!(back.is_ok(), "read");
    let back = back.unwrap();
    check_eq!((back.rip, back.rsp, back.rax, back.r15), (0x40_1000, 0x7000, 1, 15));
    // A non-canonical or kernel rip is refused.
    let bad = UserRegisters { rip: 0xffff_8000_0000_0000, ..regs };
    check_eq!(k::tcb_write_registers(t, false, &bad), Err(Error::InvalidArgument));
    // A thread cannot read or write its own registers this way.
    check_eq!(k::tcb_read_registers(TCB, false).map(|_| ()), Err(Error::IllegalOperation));
    true
}

fn test_deleting_a_thread_stops_it() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    SHARED.store(0, Ordering::SeqCst);
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "own priority 50");
    // The waiter preempts us and blocks on the endpoint.
    let Ok(t) = spawn(ep_waiter, ep, 100, 0) else { return false };
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    // Delete its only capability: it is gone from the endpoint's queue.
    check!(k::cnode_delete(CNODE, t.tcb).is_ok(), "delete tcb");
    check!(sys::nb_send(ep, Msg::new(0, &[])).is_ok(), "nbsend");
    sys::yield_now();
    check_eq!(SHARED.load(Ordering::SeqCst), 0);
    true
}

/// A slot of the root CNode (radix 13) the tests' allocator never reaches: always empty.
const EMPTY_SLOT: u64 = (1 << 13) - 1;

fn test_invalid_capabilities_and_arguments() -> bool {
    check_eq!(sys::call(EMPTY_SLOT, Msg::new(0, &[])).map(|_| ()), Err(Error::InvalidCapability));
    check_eq!(sys::recv(u64::MAX).map(|_| ()), Err(Error::InvalidCapability));
    // Invoking an object with an unknown method.
    check_eq!(k::invoke(TCB, 9999, &[], &[]).map(|_| ()), Err(Error::IllegalOperation));
    // Missing arguments.
    check_eq!(
        k::invoke(env().untyped, ozone_abi::invocation::UNTYPED_RETYPE, &[1], &[]).map(|_| ()),
        Err(Error::InvalidArgument)
    );
    // Receiving on a TCB is not possible.
    check_eq!(sys::recv(TCB).map(|_| ()), Err(Error::InvalidCapability));
    let _ = MessageInfo::default();
    true
}

static SPIN: AtomicU64 = AtomicU64::new(0);

extern "C" fn busy(_: u64) -> ! {
    loop {
        SPIN.fetch_add(1, Ordering::SeqCst);
    }
}

fn test_timeslices_preempt_busy_threads() -> bool {
    // A thread that never yields, at our priority: only the timer can give us the CPU back.
    SPIN.store(0, Ordering::SeqCst);
    check!(k::tcb_set_priority(TCB, TCB, 60).is_ok(), "own priority 60");
    let Ok(t) = spawn(busy, 0, 60, 0) else { return false };
    let start = SPIN.load(Ordering::SeqCst);
    let mut seen = false;
    for _ in 0..200_000_000u64 {
        if SPIN.load(Ordering::SeqCst) != start {
            seen = true;
            break;
        }
        core::hint::spin_loop();
    }
    check!(k::tcb_suspend(t.tcb).is_ok(), "suspend the busy thread");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check!(seen, "the busy thread never ran while we spun: no timeslice preemption");
    true
}

fn test_io_ports() -> bool {
    // The 16550 scratch register of COM1 (0x3ff): a byte that reads back what was written.
    let port = slot();
    check!(
        k::invoke(
            slot::IO_PORT_CONTROL,
            ozone_abi::invocation::IO_PORT_CONTROL_ISSUE,
            &[0x3ff, 0x3ff, port, 64],
            &[CNODE]
        )
        .is_ok(),
        "issue"
    );
    check!(k::invoke(port, ozone_abi::invocation::IO_PORT_OUT8, &[0x3ff, 0x5a], &[]).is_ok(), "out8");
    let r = k::invoke(port, ozone_abi::invocation::IO_PORT_IN8, &[0x3ff], &[]);
    check_eq!(r.map(|r| r.msg.mrs[0]), Ok(0x5a));
    // Outside the capability's range.
    check_eq!(k::invoke(port, ozone_abi::invocation::IO_PORT_IN8, &[0x3fe], &[]).map(|_| ()), Err(Error::RangeError));
    check_eq!(k::invoke(port, ozone_abi::invocation::IO_PORT_IN16, &[0x3ff], &[]).map(|_| ()), Err(Error::RangeError));
    true
}

fn test_irq_to_notification() -> bool {
    // COM1's "transmitter empty" interrupt (IRQ 4) through an IRQ handler capability.
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let (handler, ports) = (slot(), slot());
    check!(
        k::invoke(slot::IRQ_CONTROL, ozone_abi::invocation::IRQ_CONTROL_GET, &[4, handler, 64], &[CNODE]).is_ok(),
        "get handler"
    );
    check_eq!(
        k::invoke(slot::IRQ_CONTROL, ozone_abi::invocation::IRQ_CONTROL_GET, &[4, slot(), 64], &[CNODE]).map(|_| ()),
        Err(Error::DeleteFirst)
    );
    check!(
        k::invoke(handler, ozone_abi::invocation::IRQ_HANDLER_SET_NOTIFICATION, &[], &[n]).is_ok(),
        "set notification"
    );
    check!(
        k::invoke(
            slot::IO_PORT_CONTROL,
            ozone_abi::invocation::IO_PORT_CONTROL_ISSUE,
            &[0x3f8, 0x3ff, ports, 64],
            &[CNODE]
        )
        .is_ok(),
        "issue"
    );
    // MCR.OUT2 gates the UART's interrupt line on PCs; IER.ETBEI asks for "transmitter empty".
    let mcr = k::invoke(ports, ozone_abi::invocation::IO_PORT_IN8, &[0x3fc], &[]).map(|r| r.msg.mrs[0]).unwrap_or(0);
    let _ = k::invoke(ports, ozone_abi::invocation::IO_PORT_OUT8, &[0x3fc, mcr | 0x08], &[]);
    let _ = k::invoke(ports, ozone_abi::invocation::IO_PORT_OUT8, &[0x3f9, 0x02], &[]);
    let got = sys::recv(n).map(|r| r.badge);
    // Quiet the UART again, acknowledge, and give the line back.
    let _ = k::invoke(ports, ozone_abi::invocation::IO_PORT_OUT8, &[0x3f9, 0x00], &[]);
    let _ = k::invoke(ports, ozone_abi::invocation::IO_PORT_IN8, &[0x3fa], &[]);
    let _ = k::invoke(ports, ozone_abi::invocation::IO_PORT_OUT8, &[0x3fc, mcr], &[]);
    check!(k::invoke(handler, ozone_abi::invocation::IRQ_HANDLER_ACK, &[], &[]).is_ok(), "ack");
    check!(k::cnode_delete(CNODE, handler).is_ok(), "delete handler");
    check_eq!(got, Ok(1 << 4));
    true
}

const ISOLATED_STACK_TOP: u64 = ozone_abi::ROOT_STACK_TOP;
static SECRET: AtomicU64 = AtomicU64::new(0x5ec7e7);

extern "C" fn snooper(ep: u64) -> ! {
    // Would read our data if it could run at all in the other address space.
    let _ = core::hint::black_box(SECRET.load(Ordering::Relaxed));
    let _ = sys::send(ep, Msg::new(9, &[]));
    sys::thread_exit(0)
}

fn test_address_spaces_are_isolated() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    // A new VSpace with the paging structures our image and stack need.
    let Ok(pml4) = retype(ObjectType::Pml4, 0) else { return false };
    let code_lo = 0x40_0000u64;
    for (ty, va) in [
        (ObjectType::Pdpt, code_lo),
        (ObjectType::PageDirectory, code_lo),
        (ObjectType::PageTable, code_lo),
        (ObjectType::Pdpt, ISOLATED_STACK_TOP - 0x1000),
        (ObjectType::PageDirectory, ISOLATED_STACK_TOP - 0x1000),
        (ObjectType::PageTable, ISOLATED_STACK_TOP - 0x1000),
    ] {
        let Ok(t) = retype(ty, 0) else { return false };
        let r = k::paging_map(t, pml4, va);
        check!(r.is_ok() || r == Err(Error::DeleteFirst), "map {:?} at {:#x}: {:?}", ty, va, r);
    }
    // A thread in that address space, told to run our code: none of our memory is there, so it
    // faults on its very first instruction, and its fault handler (us) sees where.
    let Ok(tcb) = retype(ObjectType::Tcb, 0) else { return false };
    check!(k::tcb_configure(tcb, ep, CNODE, pml4, 0, 0).is_ok(), "configure");
    check!(k::tcb_set_priority(tcb, TCB, 100).is_ok(), "priority");
    let regs = UserRegisters {
        rip: snooper as *const () as u64,
        rsp: ISOLATED_STACK_TOP,
        rflags: 0x202,
        rdi: ep,
        ..Default::default()
    };
    check!(k::tcb_write_registers(tcb, true, &regs).is_ok(), "start");
    let r = sys::recv(ep).unwrap_or_default();
    // A page fault on an instruction fetch at the entry point: our code is not there.
    check_eq!(r.msg.info.label(), 1);
    check_eq!(r.msg.mrs[1], snooper as *const () as u64);
    check!(k::tcb_suspend(tcb).is_ok(), "suspend");
    true
}

fn test_device_untyped() -> bool {
    let Some(info) = root::boot_info() else { return false };
    let count = (info.untyped.end - info.untyped.start) as usize;
    let Some(i) = (0..count).find(|&i| info.untyped_list[i].is_device != 0 && info.untyped_list[i].size_bits >= 12)
    else {
        println!("[kernel-tests]      no device untyped");
        return false;
    };
    let ut = info.untyped.start + i as u64;
    let paddr = info.untyped_list[i].paddr;
    // Device memory becomes frames only.
    let s = slot();
    check!(
        k::untyped_retype(ut, ObjectType::Endpoint, 0, CNODE, 0, 0, s, 1).is_err(),
        "an endpoint from device memory"
    );
    check!(k::untyped_retype(ut, ObjectType::Tcb, 0, CNODE, 0, 0, s, 1).is_err(), "a TCB from device memory");
    check!(k::untyped_retype(ut, ObjectType::Frame4K, 0, CNODE, 0, 0, s, 1).is_ok(), "a frame from device memory");
    check_eq!(k::frame_get_address(s), Ok(paddr));
    true
}

/// The root task's list has device untyped memory above 4 GiB (64-bit BARs), overlapping no
/// RAM untyped; a frame made from it is at its physical address and maps; the kernel never reads
/// it (DebugWrite from it is refused, where reading it through the kernel's map of RAM would
/// fault: nothing maps it there).
fn test_device_untyped_above_4_gib() -> bool {
    let Some(info) = root::boot_info() else { return false };
    let list = &info.untyped_list[..(info.untyped.end - info.untyped.start) as usize];
    let Some(i) = list.iter().position(|u| u.is_device != 0 && u.paddr >= 1 << 32) else {
        println!("[kernel-tests]      no device untyped above 4 GiB");
        return false;
    };
    let high: u64 = list.iter().filter(|u| u.is_device != 0 && u.paddr >= 1 << 32).map(|u| 1u64 << u.size_bits).sum();
    check!(high >= 1 << 34, "only {:#x} bytes of device memory above 4 GiB", high);
    for d in list.iter().filter(|u| u.is_device != 0) {
        let (d0, d1) = (d.paddr, d.paddr + (1u64 << d.size_bits));
        for r in list.iter().filter(|u| u.is_device == 0) {
            let (r0, r1) = (r.paddr, r.paddr + (1u64 << r.size_bits));
            check!(d1 <= r0 || r1 <= d0, "device {:#x}-{:#x} overlaps RAM {:#x}-{:#x}", d0, d1, r0, r1);
        }
    }
    let ut = info.untyped.start + i as u64;
    let paddr = list[i].paddr;
    let s = slot();
    check_eq!(k::untyped_retype(ut, ObjectType::Tcb, 0, CNODE, 0, 0, s, 1), Err(Error::InvalidArgument));
    check!(k::untyped_retype(ut, ObjectType::Frame4K, 0, CNODE, 0, 0, s, 1).is_ok(), "a frame above 4 GiB");
    check_eq!(k::frame_get_address(s), Ok(paddr));
    let va = SCRATCH_VA + 0x10_0000;
    check!(ROOT.map_frame_with_tables(s, VSPACE, va, rights::READ | rights::WRITE, false).is_ok(), "map it");
    check_eq!(sys::debug_write_raw(va, 8), Err(Error::InvalidUserBuffer));
    check!(k::frame_unmap(s).is_ok(), "unmap");
    check!(k::cnode_delete(CNODE, s).is_ok(), "delete");
    true
}

/// PCI interrupt lines (GSI 16 and up, level-triggered, active-low on q35) get handlers like the
/// ISA ones; lines past the kernel's range or without an I/O APIC input are refused.
fn test_irq_lines_above_16() -> bool {
    use ozone_abi::invocation::{IRQ_CONTROL_GET, IRQ_HANDLER_ACK, IRQ_HANDLER_CLEAR, IRQ_HANDLER_SET_NOTIFICATION};
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    for line in [24, 63, 64, 255, 1 << 32, u64::MAX] {
        let s = slot();
        check_eq!(
            k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET, &[line, s, 64], &[CNODE]).map(|_| ()),
            Err(Error::RangeError)
        );
    }
    for line in 16..24 {
        let h = slot();
        check!(k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET, &[line, h, 64], &[CNODE]).is_ok(), "get line {}", line);
        check_eq!(
            k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET, &[line, slot(), 64], &[CNODE]).map(|_| ()),
            Err(Error::DeleteFirst)
        );
        check!(k::invoke(h, IRQ_HANDLER_SET_NOTIFICATION, &[], &[n]).is_ok(), "route line {}", line);
        check!(k::invoke(h, IRQ_HANDLER_ACK, &[], &[]).is_ok(), "ack line {}", line);
        check!(k::invoke(h, IRQ_HANDLER_CLEAR, &[], &[]).is_ok(), "clear line {}", line);
        check!(k::cnode_delete(CNODE, h).is_ok(), "delete handler {}", line);
    }
    true
}

/// A level-triggered line set up from the MADT's override: the ACPI SCI (ISA IRQ 9, GSI 9,
/// level-triggered and active-high in QEMU's MADT), raised by the PM timer's overflow event
/// (every 2^23 PM-timer ticks, 2.3 s; q35's PM1 status and enable registers at 0x600 and 0x602)
/// and held asserted until its status bit is cleared. While asserted it is delivered once per
/// Ack, never again before the Ack (no storm); once the status is cleared the line is quiet.
fn test_level_triggered_line() -> bool {
    use ozone_abi::invocation::{
        IO_PORT_CONTROL_ISSUE, IO_PORT_OUT16, IRQ_CONTROL_GET, IRQ_HANDLER_ACK, IRQ_HANDLER_SET_NOTIFICATION,
    };
    const PM1_STS: u64 = 0x600;
    const PM1_EN: u64 = 0x602;
    const TMR: u64 = 1;
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let (h, ports) = (slot(), slot());
    check!(k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET, &[9, h, 64], &[CNODE]).is_ok(), "get the SCI's line");
    check!(k::invoke(h, IRQ_HANDLER_SET_NOTIFICATION, &[], &[n]).is_ok(), "route it");
    check!(
        k::invoke(slot::IO_PORT_CONTROL, IO_PORT_CONTROL_ISSUE, &[PM1_STS, PM1_EN + 1, ports, 64], &[CNODE]).is_ok(),
        "the PM1 event registers"
    );
    let out16 = |port: u64, v: u64| k::invoke(ports, IO_PORT_OUT16, &[port, v], &[]).is_ok();
    let quiet = || {
        for _ in 0..50 {
            sys::yield_now();
            core::hint::black_box(0..10_000u64).for_each(|i| {
                core::hint::black_box(i);
            });
        }
        sys::nb_recv(n).map(|r| r.badge) == Ok(0)
    };
    check!(out16(PM1_STS, TMR) && out16(PM1_EN, TMR), "enable the timer event");
    let first = sys::recv(n).map(|r| r.badge);
    check_eq!(first, Ok(1 << 9));
    check!(quiet(), "the line fired again before its Ack");
    // Acknowledged with the event still pending: the line is still asserted, delivered again.
    check!(k::invoke(h, IRQ_HANDLER_ACK, &[], &[]).is_ok(), "ack");
    check_eq!(sys::recv(n).map(|r| r.badge), Ok(1 << 9));
    check!(quiet(), "the line fired again before its second Ack");
    // The event cleared (and disabled), then acknowledged: quiet.
    check!(out16(PM1_EN, 0) && out16(PM1_STS, TMR), "clear the timer event");
    check!(k::invoke(h, IRQ_HANDLER_ACK, &[], &[]).is_ok(), "ack");
    check!(quiet(), "the line fired after its event was cleared");
    check!(k::cnode_delete(CNODE, h).is_ok() && k::cnode_delete(CNODE, ports).is_ok(), "delete");
    true
}

/// IRQControl GetMsi: a handler for a message-signalled line the kernel chooses, with the
/// address/data pair a device writes to raise it (the boot CPU's local APIC, the line's vector);
/// Get cannot name such a line; the handler's methods work on it; a deleted one is reissued.
fn test_msi_handler() -> bool {
    use ozone_abi::invocation::{IRQ_CONTROL_GET, IRQ_CONTROL_GET_MSI, IRQ_HANDLER_ACK, IRQ_HANDLER_SET_NOTIFICATION};
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let h = slot();
    let r = k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET_MSI, &[h, 64], &[CNODE]);
    check!(r.is_ok(), "GetMsi: {:?}", r.map(|_| ()));
    let [line, address, data, _] = r.map(|r| r.msg.mrs).unwrap_or_default();
    check!((64..96).contains(&line), "MSI line {}", line);
    check_eq!((address, data), (0xfee0_0000, 0x80 + line - 64));
    check_eq!(
        k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET, &[line, slot(), 64], &[CNODE]).map(|_| ()),
        Err(Error::RangeError)
    );
    check!(k::invoke(h, IRQ_HANDLER_SET_NOTIFICATION, &[], &[n]).is_ok(), "route");
    check!(k::invoke(h, IRQ_HANDLER_ACK, &[], &[]).is_ok(), "ack");
    check!(k::cnode_delete(CNODE, h).is_ok(), "delete");
    let again = slot();
    let r = k::invoke(slot::IRQ_CONTROL, IRQ_CONTROL_GET_MSI, &[again, 64], &[CNODE]);
    check_eq!(r.map(|r| r.msg.mrs[0]), Ok(line));
    check!(k::cnode_delete(CNODE, again).is_ok(), "delete again");
    true
}

/// The boot information's slot ranges hold what it says: the image range frames only (every one
/// answers Frame GetAddress), the paging range paging structures only (none is a frame).
fn test_boot_info_ranges_hold_what_they_say() -> bool {
    let Some(info) = root::boot_info() else { return false };
    let (frames, paging) = (info.user_image_frames, info.user_image_paging);
    check!(frames.end > frames.start && paging.end > paging.start, "empty ranges {:?} {:?}", frames, paging);
    for s in frames.start..frames.end {
        check!(k::frame_get_address(s).is_ok(), "image slot {} is not a frame", s);
    }
    for s in paging.start..paging.end {
        check_eq!(k::frame_get_address(s), Err(Error::IllegalOperation));
    }
    true
}

fn test_telemetry() -> bool {
    // Our own counters: syscalls so far, including this one's predecessors.
    let read = |tcb: u64| k::invoke(slot::TELEMETRY, ozone_abi::invocation::TELEMETRY_READ, &[], &[tcb]);
    let Ok(before) = read(TCB) else { return false };
    let denied_before = k::reply_word(&before, 5);
    check!(before.msg.mrs[0] > 10, "syscalls counted: {}", before.msg.mrs[0]);
    check!(before.msg.mrs[1] > 10, "invocations counted: {}", before.msg.mrs[1]);
    let _ = sys::nb_send(EMPTY_SLOT, Msg::new(0, &[]));
    let Ok(after) = read(TCB) else { return false };
    check!(after.msg.mrs[0] >= before.msg.mrs[0] + 2, "the syscalls in between");
    // The failed send is a denied operation.
    check!(k::reply_word(&after, 5) > denied_before, "denied operations counted");
    // Only the telemetry capability reads counters.
    check_eq!(
        k::invoke(CNODE, ozone_abi::invocation::TELEMETRY_READ, &[], &[TCB]).map(|_| ()),
        Err(Error::IllegalOperation)
    );
    check_eq!(read(CNODE).map(|_| ()), Err(Error::InvalidCapability));
    true
}

/// Where `test_trace` maps its ring, read-only: a free page of the 2 MiB region of the IPC
/// buffer and the boot information, whose page table exists (no paging structure is made, so
/// no slot other tests count on is taken).
const TRACE_VA: u64 = 0x3f_e000;

fn test_trace() -> bool {
    use ozone_abi::trace::{Kind, ObjectKind, Record};
    let Ok(ring) = retype(ObjectType::Frame4K, 0) else { return false };
    // Only the telemetry capability starts a trace.
    check_eq!(
        k::invoke(CNODE, ozone_abi::invocation::TELEMETRY_TRACE, &[], &[TCB, ring]).map(|_| ()),
        Err(Error::IllegalOperation)
    );
    check!(k::telemetry_trace(slot::TELEMETRY, TCB, ring).is_ok(), "trace ourselves");
    // A send on a capability pointer that names no slot (label 0x77), and a Yield.
    let _ = sys::nb_send(u64::MAX, Msg::new(0x77, &[]));
    sys::yield_now();
    // The Trace call itself was not traced (the trace began during it); the acknowledgement's
    // answer is made before its own record is written.
    let Ok((written, dropped)) = k::telemetry_trace_ack(slot::TELEMETRY, TCB, 0) else { return false };
    check_eq!((written, dropped), (2, 0));
    check!(k::frame_map(ring, VSPACE, TRACE_VA, rights::READ, false).is_ok(), "map the ring");
    let read = |n: u64| -> Option<Record> {
        let at = (TRACE_VA + (n % ozone_abi::trace::RING_RECORDS as u64) * 16) as *const [u64; 2];
        // SAFETY: the ring is mapped read-only at TRACE_VA; the kernel writes it only while we
        // make syscalls, and this read is plain memory.
        Record::from_words(unsafe { core::ptr::read_volatile(at) })
    };
    let (Some(send), Some(yielded), Some(acked)) = (read(0), read(1), read(2)) else {
        println!("[kernel-tests]      the ring holds no records");
        return false;
    };
    check_eq!(
        (send.kind, send.what as u32, send.object, send.result, send.label()),
        (Kind::Syscall, ozone_abi::profile::NB_SEND, ObjectKind::Invalid, Error::InvalidCapability as u16, 0x77)
    );
    check_eq!((yielded.what as u32, yielded.object), (ozone_abi::profile::YIELD, ObjectKind::None));
    check_eq!((acked.object, acked.label()), (ObjectKind::Telemetry, ozone_abi::invocation::TELEMETRY_TRACE_ACK));
    // Acknowledged records are consumed; going back is refused.
    check!(k::telemetry_trace_ack(slot::TELEMETRY, TCB, written + 1).is_ok(), "ack");
    check_eq!(k::telemetry_trace_ack(slot::TELEMETRY, TCB, 0).map(|_| ()), Err(Error::RangeError));
    // Off: the counts, and nothing traced after.
    check!(k::telemetry_trace_off(slot::TELEMETRY, TCB).is_ok(), "trace off");
    check_eq!(k::telemetry_trace_ack(slot::TELEMETRY, TCB, 0).map(|_| ()), Err(Error::IllegalOperation));
    check!(k::frame_unmap(ring).is_ok(), "unmap the ring");
    check!(k::cnode_delete(CNODE, ring).is_ok(), "delete the ring");
    true
}

// ---- address spaces that go away (ASIDs) ----

/// Where the doomed address space maps the frame: index 1 at every level.
const DOOMED_VA: u64 = (1 << 39) | (1 << 30) | (1 << 21) | (1 << 12);
/// Where we map the new objects made over the doomed address space's memory, to fill them.
const SCRATCH_VA: u64 = 0x5800_0000;
const ENTRIES: usize = 512;
/// A present, writable, user entry.
const TABLE_FLAGS: u64 = 0x7;

fn va_index(shift: u32) -> usize {
    ((DOOMED_VA >> shift) & 0x1ff) as usize
}

fn scratch_page<'a>(i: usize) -> &'a mut [u64; ENTRIES] {
    // SAFETY: page `i` at SCRATCH_VA is mapped writable by the test before it asks for it, and
    // is used for nothing else.
    unsafe { &mut *((SCRATCH_VA + 0x1000 * i as u64) as *mut [u64; ENTRIES]) }
}

/// A frame capability mapped (through a copy of the PML4 capability, as Studio gives the
/// secure-memory server) into an address space that is then destroyed — its untyped revoked —
/// and whose memory becomes new objects: the old capability's Unmap and deletion must not walk
/// the freed PML4. The new objects are frames filled with exactly what such a walk would follow
/// (a chain of "tables" down to an "entry" for our frame); they must stay intact.
fn test_mapping_into_a_deleted_address_space() -> bool {
    let Ok(chunk) = retype(ObjectType::Untyped, 16) else { return false };
    let Ok(base) = k::untyped_get_info(chunk).map(|i| i.paddr) else { return false };
    // The doomed address space: PML4, PDPT, PD and PT at the start of the chunk.
    let (pml4, pdpt, pd, pt) = (slot(), slot(), slot(), slot());
    for (s, ty) in [
        (pml4, ObjectType::Pml4),
        (pdpt, ObjectType::Pdpt),
        (pd, ObjectType::PageDirectory),
        (pt, ObjectType::PageTable),
    ] {
        check!(k::untyped_retype(chunk, ty, 0, CNODE, 0, 0, s, 1).is_ok(), "retype {:?}", ty);
    }
    let server_copy = slot();
    check!(k::cnode_copy(CNODE, server_copy, pml4, rights::ALL).is_ok(), "copy the PML4 capability");
    for t in [pdpt, pd, pt] {
        check!(k::paging_map(t, server_copy, DOOMED_VA).is_ok(), "map a table");
    }
    // Our frame, from other memory; two copies mapped there, and a page table of ours too.
    let Ok(frame) = retype(ObjectType::Frame4K, 0) else { return false };
    let Ok(f) = k::frame_get_address(frame) else { return false };
    let (unmapped_later, deleted_later) = (slot(), slot());
    for (i, s) in [unmapped_later, deleted_later].into_iter().enumerate() {
        check!(k::cnode_copy(CNODE, s, frame, rights::ALL).is_ok(), "copy the frame capability");
        let va = DOOMED_VA + 0x1000 * i as u64;
        check!(k::frame_map(s, server_copy, va, rights::READ | rights::WRITE, false).is_ok(), "map a frame copy");
    }
    let Ok(our_pt) = retype(ObjectType::PageTable, 0) else { return false };
    check!(k::paging_map(our_pt, server_copy, DOOMED_VA + (1 << 21)).is_ok(), "map our page table");

    // The address space goes: every capability to its PML4 (the copy too) is revoked away.
    check!(k::cnode_revoke(CNODE, chunk).is_ok(), "revoke the chunk");
    check_eq!(k::paging_map(our_pt, server_copy, 0), Err(Error::InvalidCapability));

    // Four frames where the PML4 and its tables were, filled as a walk from the old PML4 at
    // DOOMED_VA would read them.
    let news = [slot(), slot(), slot(), slot()];
    check!(k::untyped_retype(chunk, ObjectType::Frame4K, 0, CNODE, 0, 0, news[0], 4).is_ok(), "retype frames");
    for (i, &s) in news.iter().enumerate() {
        check_eq!(k::frame_get_address(s), Ok(base + 0x1000 * i as u64));
        check!(
            ROOT.map_frame_with_tables(s, VSPACE, SCRATCH_VA + 0x1000 * i as u64, rights::READ | rights::WRITE, false)
                .is_ok(),
            "map new frame {i}"
        );
    }
    let mut expected = [[0u64; ENTRIES]; 4];
    for (i, page) in expected.iter_mut().enumerate() {
        for (j, e) in page.iter_mut().enumerate() {
            *e = 0x5a5a_0000_0000_0000 | (i as u64) << 16 | j as u64;
        }
        let shift = [39, 30, 21, 12][i];
        if i < 3 {
            page[va_index(shift)] = (base + 0x1000 * (i as u64 + 1)) | TABLE_FLAGS;
        } else {
            page[va_index(shift)] = f | TABLE_FLAGS;
            page[va_index(shift) + 1] = f | TABLE_FLAGS;
        }
        if i == 2 {
            page[va_index(shift) + 1] = (base + 0x3000) | TABLE_FLAGS;
        }
        *scratch_page(i) = *page;
    }

    // The old capabilities: Unmap, delete, Unmap of the table — all fine, nothing touched.
    check!(k::frame_unmap(unmapped_later).is_ok(), "unmap the frame copy");
    check!(k::cnode_delete(CNODE, deleted_later).is_ok(), "delete the other frame copy");
    check!(k::paging_unmap(our_pt).is_ok(), "unmap our page table");
    for (i, page) in expected.iter().enumerate() {
        check!(*scratch_page(i) == *page, "new object {i} was written by an unmap");
    }
    // The frame capability maps again, here, and still names our frame.
    check!(
        ROOT.map_frame_with_tables(unmapped_later, VSPACE, SCRATCH_VA + 0x4000, rights::READ | rights::WRITE, false)
            .is_ok(),
        "map the old copy again"
    );
    for s in [unmapped_later, news[0], news[1], news[2], news[3]] {
        check!(k::frame_unmap(s).is_ok(), "unmap");
    }
    check!(k::cnode_revoke(CNODE, chunk).is_ok(), "revoke again");
    true
}

/// Every PML4 gets an ASID and its deletion gives it back: more PML4s than there are ASIDs can
/// be made one after another. A page table copied while mapped cannot be unmapped through either
/// capability while the other exists.
fn test_asids_are_reused() -> bool {
    let Ok(small) = retype(ObjectType::Untyped, 12) else { return false };
    let s = slot();
    for i in 0..5000 {
        check!(k::untyped_retype(small, ObjectType::Pml4, 0, CNODE, 0, 0, s, 1).is_ok(), "PML4 number {i}");
        check!(k::cnode_delete(CNODE, s).is_ok(), "delete PML4 number {i}");
    }
    let Ok(pml4) = retype(ObjectType::Pml4, 0) else { return false };
    let mut last = 0;
    for ty in [ObjectType::Pdpt, ObjectType::PageDirectory, ObjectType::PageTable] {
        let Ok(t) = retype(ty, 0) else { return false };
        check!(k::paging_map(t, pml4, DOOMED_VA).is_ok(), "map {:?}", ty);
        last = t;
    }
    let copy = slot();
    check!(k::cnode_copy(CNODE, copy, last, rights::ALL).is_ok(), "copy a mapped page table");
    check_eq!(k::paging_unmap(last), Err(Error::DeleteFirst));
    check_eq!(k::paging_unmap(copy), Err(Error::DeleteFirst));
    check!(k::cnode_delete(CNODE, copy).is_ok(), "delete the copy");
    check!(k::paging_unmap(last).is_ok(), "unmap the last capability");
    true
}

// ---- Untyped GetInfo ----

fn test_untyped_get_info() -> bool {
    let Ok(ut) = retype(ObjectType::Untyped, 16) else { return false };
    let size = 1u64 << 16;
    let Ok(info) = k::untyped_get_info(ut) else { return false };
    check_eq!((info.size_bits, info.free, info.has_children, info.device), (16, size, false, false));
    check!(info.paddr != 0 && info.paddr % size == 0, "paddr {:#x}", info.paddr);
    check_eq!(info.used(), 0);
    // An endpoint, then a frame (aligned up past the endpoint): the frame's address agrees.
    let (ep, frame) = (slot(), slot());
    check!(k::untyped_retype(ut, ObjectType::Endpoint, 0, CNODE, 0, 0, ep, 1).is_ok(), "retype endpoint");
    let Ok(i) = k::untyped_get_info(ut) else { return false };
    check_eq!((i.free, i.has_children, i.paddr), (size - 32, true, info.paddr));
    check!(k::untyped_retype(ut, ObjectType::Frame4K, 0, CNODE, 0, 0, frame, 1).is_ok(), "retype frame");
    check_eq!(k::frame_get_address(frame), Ok(info.paddr + 4096));
    check_eq!(k::untyped_get_info(ut).map(|i| (i.free, i.used())), Ok((size - 8192, 8192)));
    // As many frames as `free` says fit, and no more.
    let n = k::untyped_get_info(ut).map(|i| i.free >> 12).unwrap_or(0);
    let first = env().next_slot;
    for _ in 0..n {
        let _ = slot();
    }
    check!(k::untyped_retype(ut, ObjectType::Frame4K, 0, CNODE, 0, 0, first, n).is_ok(), "retype {n} frames");
    check_eq!(k::untyped_get_info(ut).map(|i| i.free), Ok(0));
    check_eq!(k::untyped_retype(ut, ObjectType::Endpoint, 0, CNODE, 0, 0, slot(), 1), Err(Error::NotEnoughMemory));
    // Revoke: every byte is back, and a Retype of the whole size fits again.
    check!(k::cnode_revoke(CNODE, ut).is_ok(), "revoke");
    check_eq!(k::untyped_get_info(ut).map(|i| (i.free, i.has_children, i.used())), Ok((size, false, 0)));
    let whole = slot();
    check!(k::untyped_retype(ut, ObjectType::Untyped, 16, CNODE, 0, 0, whole, 1).is_ok(), "the whole size");
    check_eq!(k::untyped_get_info(whole).map(|i| (i.size_bits, i.free, i.paddr)), Ok((16, size, info.paddr)));
    // The boot untyped capabilities agree with the boot information; device memory says so.
    let Some(bi) = root::boot_info() else { return false };
    for (n, s) in (bi.untyped.start..bi.untyped.end).enumerate().step_by(7) {
        let d = bi.untyped_list[n];
        let Ok(i) = k::untyped_get_info(s) else { return false };
        check_eq!((i.paddr, i.size_bits, i.device), (d.paddr, u64::from(d.size_bits), d.is_device != 0));
    }
    // Only untyped capabilities have the method.
    check_eq!(k::untyped_get_info(CNODE), Err(Error::IllegalOperation));
    check_eq!(k::untyped_get_info(TCB), Err(Error::IllegalOperation));
    true
}

// ---- syscall profiles ----

static UNTYPED_FOR_THREADS: AtomicU64 = AtomicU64::new(0);
static RESULTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

fn code(r: Result<(), Error>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e as u64,
    }
}

extern "C" fn restricted(ep: u64) -> ! {
    // Allowed everything but NBSend and untyped invocations.
    RESULTS[0].store(code(sys::nb_send(ep, Msg::new(1, &[]))), Ordering::SeqCst);
    RESULTS[1]
        .store(code(k::untyped_get_info(UNTYPED_FOR_THREADS.load(Ordering::SeqCst)).map(|_| ())), Ordering::SeqCst);
    sys::yield_now();
    // Our Send is allowed: the test learns we are done by receiving it.
    let _ = sys::send(ep, Msg::new(2, &[]));
    sys::thread_exit(0)
}

fn test_profile_denies_without_a_handler() -> bool {
    use ozone_abi::profile::{self as p, mask};
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    UNTYPED_FOR_THREADS.store(env().untyped, Ordering::SeqCst);
    for r in &RESULTS {
        r.store(u64::MAX, Ordering::SeqCst);
    }
    // Our own profile: unrestricted, and it has seen our Calls on objects.
    let Ok((used, allowed)) = k::tcb_get_profile(TCB) else { return false };
    check_eq!(allowed, p::ALL);
    let seen = mask(p::CALL) | mask(p::UNTYPED) | mask(p::CNODE) | mask(p::TCB);
    check!(used & seen == seen, "our used mask {used:#x}");
    // A thread (lower priority: it waits until we block) with a restricted profile.
    let Ok(t) = spawn(restricted, ep, 100, 0) else { return false };
    let allowed = p::ALL & !mask(p::NB_SEND) & !mask(p::UNTYPED);
    check!(k::tcb_set_profile(t.tcb, allowed).is_ok(), "set profile");
    check_eq!(k::tcb_get_profile(t.tcb), Ok((0, allowed)));
    let r = sys::recv(ep);
    check_eq!(r.map(|r| r.msg.info.label()), Ok(2));
    check_eq!(RESULTS[0].load(Ordering::SeqCst), Error::Denied as u64);
    check_eq!(RESULTS[1].load(Ordering::SeqCst), Error::Denied as u64);
    // What it did, denied attempts included (the debug calls have no bit).
    let used = mask(p::NB_SEND) | mask(p::CALL) | mask(p::UNTYPED) | mask(p::YIELD) | mask(p::SEND);
    check_eq!(k::tcb_get_profile(t.tcb), Ok((used, allowed)));
    // Telemetry: denied operations counted, `used` after the counters (MR7).
    let tele = k::invoke(slot::TELEMETRY, ozone_abi::invocation::TELEMETRY_READ, &[], &[t.tcb]);
    check!(tele.is_ok(), "telemetry read");
    let tele = tele.unwrap();
    check_eq!(tele.msg.info.length(), ozone_abi::telemetry::WORDS as u64 + 1);
    check_eq!((k::reply_word(&tele, 5), k::reply_word(&tele, ozone_abi::telemetry::PROFILE_USED)), (2, used));
    // Only a TCB capability sets or reads a profile.
    check_eq!(
        k::invoke(CNODE, ozone_abi::invocation::TCB_SET_PROFILE, &[0], &[]).map(|_| ()),
        Err(Error::IllegalOperation)
    );
    check_eq!(
        k::invoke(t.tcb, ozone_abi::invocation::TCB_SET_PROFILE, &[], &[]).map(|_| ()),
        Err(Error::InvalidArgument)
    );
    true
}

extern "C" fn denied_sender(ep: u64) -> ! {
    // Send is denied: the fault handler decides; on resume we see Denied.
    let r = sys::send(ep, Msg::new(5, &[1, 2, 3]));
    RESULTS[0].store(code(r), Ordering::SeqCst);
    sys::thread_exit(0)
}

fn test_profile_denial_is_a_fault_for_the_handler() -> bool {
    use ozone_abi::profile::{self as p, mask};
    let Ok(fault_ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(other) = retype(ObjectType::Endpoint, 0) else { return false };
    RESULTS[0].store(u64::MAX, Ordering::SeqCst);
    let Ok(t) = spawn(denied_sender, other, 100, fault_ep) else { return false };
    check!(k::tcb_set_profile(t.tcb, p::ALL & !mask(p::SEND)).is_ok(), "set profile");
    // We wait for the fault; the thread runs, is denied, and faults.
    let r = sys::recv(fault_ep).unwrap_or_default();
    check_eq!(r.msg.info.label(), ozone_abi::fault::DENIED);
    check_eq!((r.msg.mrs[2], r.msg.mrs[3]), (ozone_abi::Syscall::Send as i64 as u64, u64::from(p::SEND)));
    check!(r.msg.mrs[0] > 0 && r.msg.mrs[0] < ozone_abi::USER_TOP, "rip {:#x}", r.msg.mrs[0]);
    let regs = k::tcb_read_registers(t.tcb, false);
    check!(regs.is_ok(), "read registers");
    let regs = regs.unwrap();
    check_eq!((regs.rip, regs.rsp), (r.msg.mrs[0], r.msg.mrs[1]));
    // Resume it: its Send returns Denied. (We reply before anything else that receives: a
    // receive would give up the right to reply.)
    check!(sys::reply(Msg::new(0, &[])).is_ok(), "resume");
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "let it run");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check_eq!(RESULTS[0].load(Ordering::SeqCst), Error::Denied as u64);
    // Nothing was sent.
    check_eq!(sys::nb_recv(other).map(|r| r.msg.info.label()), Ok(0));

    // A reply with another label leaves the thread suspended.
    RESULTS[0].store(u64::MAX, Ordering::SeqCst);
    let Ok(t2) = spawn(denied_sender, other, 100, fault_ep) else { return false };
    check!(k::tcb_set_profile(t2.tcb, p::ALL & !mask(p::SEND)).is_ok(), "set profile");
    check_eq!(sys::recv(fault_ep).map(|r| r.msg.info.label()), Ok(ozone_abi::fault::DENIED));
    check!(sys::reply(Msg::new(1, &[])).is_ok(), "leave it");
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "let it run");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check_eq!(RESULTS[0].load(Ordering::SeqCst), u64::MAX);
    // Resumed later, it comes back from its Send with Denied all the same.
    check!(k::tcb_resume(t2.tcb).is_ok(), "resume");
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "let it run");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check_eq!(RESULTS[0].load(Ordering::SeqCst), Error::Denied as u64);
    true
}

extern "C" fn call_twice(ep: u64) -> ! {
    // The first Call is allowed; before the second the server takes Call away.
    let first = sys::call(ep, Msg::new(1, &[10])).map(|r| r.msg.mrs[0]);
    RESULTS[0].store(first.unwrap_or(u64::MAX), Ordering::SeqCst);
    let second = sys::call(ep, Msg::new(1, &[20])).map(|_| ());
    let _ = sys::send(ep, Msg::new(9, &[code(second)]));
    sys::thread_exit(0)
}

fn test_profile_applies_to_the_fastpath() -> bool {
    use ozone_abi::profile::{self as p, mask};
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    RESULTS[0].store(0, Ordering::SeqCst);
    let Ok(t) = spawn(call_twice, ep, 100, 0) else { return false };
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!((r.msg.info.label(), r.msg.mrs[0]), (1, 10));
    check!(k::tcb_set_profile(t.tcb, p::ALL & !mask(p::CALL)).is_ok(), "take Call away");
    check!(sys::reply(Msg::new(0, &[11])).is_ok(), "reply");
    // We wait on the endpoint: its Call would take the fastpath straight to us, but is denied.
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!((r.msg.info.label(), r.msg.mrs[0]), (9, Error::Denied as u64));
    check_eq!(RESULTS[0].load(Ordering::SeqCst), 11);
    check_eq!(k::tcb_get_profile(t.tcb).map(|(u, _)| u), Ok(mask(p::CALL) | mask(p::SEND)));
    true
}

static DEBUG_DONE: AtomicU64 = AtomicU64::new(0);

extern "C" fn debug_only(_: u64) -> ! {
    println!("[kernel-tests]      (a thread allowed nothing prints and exits)");
    DEBUG_DONE.store(1, Ordering::SeqCst);
    sys::thread_exit(0)
}

fn test_debug_calls_are_never_denied() -> bool {
    DEBUG_DONE.store(0, Ordering::SeqCst);
    let Ok(t) = spawn(debug_only, 0, 100, 0) else { return false };
    check!(k::tcb_set_profile(t.tcb, 0).is_ok(), "allow nothing");
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "let it run");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check_eq!(DEBUG_DONE.load(Ordering::SeqCst), 1);
    check_eq!(k::tcb_get_profile(t.tcb), Ok((0, 0)));
    true
}

extern "C" fn cap_giver(ep: u64) -> ! {
    // Send two capabilities on `ep` (which has the grant right): a notification, and a badged
    // capability to `ep` itself, which arrives unwrapped as its badge.
    let buf = k::ipc_buffer();
    buf.caps_or_badges[0] = GIFT.load(Ordering::SeqCst);
    buf.caps_or_badges[1] = GIFT_BADGED.load(Ordering::SeqCst);
    let info = MessageInfo::new(5, 0, 2, 0);
    let _ = sys::send(ep, Msg { info, mrs: [0; 4] });
    sys::thread_exit(0)
}

static GIFT: AtomicU64 = AtomicU64::new(0);
static GIFT_BADGED: AtomicU64 = AtomicU64::new(0);

fn test_capability_transfer() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    let Ok(n) = retype(ObjectType::Notification, 0) else { return false };
    let badged = slot();
    check!(k::cnode_mint(CNODE, badged, ep, rights::ALL, 0xb0b).is_ok(), "mint");
    GIFT.store(n, Ordering::SeqCst);
    GIFT_BADGED.store(badged, Ordering::SeqCst);
    // Where a received capability goes: an empty slot of our CNode.
    let dest = slot();
    let buf = k::ipc_buffer();
    buf.receive_cnode = CNODE;
    buf.receive_index = dest;
    buf.receive_depth = 64;
    check!(spawn(cap_giver, ep, 100, 0).is_ok(), "spawn");
    let r = sys::recv(ep).unwrap_or_default();
    buf.receive_cnode = 0;
    check_eq!(r.msg.info.label(), 5);
    check_eq!(r.msg.info.extra_caps(), 2);
    check_eq!(r.msg.info.caps_unwrapped(), 0b10);
    check_eq!(k::ipc_buffer().caps_or_badges[1], 0xb0b);
    // The notification arrived in `dest`: signal through it and see the signal.
    check!(sys::send(dest, Msg::default()).is_ok(), "use the received capability");
    check_eq!(sys::nb_recv(n).map(|r| r.badge), Ok(0));
    // Without the grant right nothing is transferred.
    let no_grant = slot();
    check!(k::cnode_mint(CNODE, no_grant, ep, rights::READ | rights::WRITE | rights::GRANT_REPLY, 0).is_ok(), "mint");
    let dest2 = slot();
    let buf = k::ipc_buffer();
    buf.receive_cnode = CNODE;
    buf.receive_index = dest2;
    buf.receive_depth = 64;
    check!(spawn(cap_giver, no_grant, 100, 0).is_ok(), "spawn");
    let r = sys::recv(ep).unwrap_or_default();
    k::ipc_buffer().receive_cnode = 0;
    check_eq!(r.msg.info.extra_caps(), 0);
    check_eq!(sys::nb_send(dest2, Msg::default()), Err(Error::InvalidCapability));
    true
}

extern "C" fn bad_instruction(_: u64) -> ! {
    // SAFETY: deliberately undefined: the fault handler skips it.
    unsafe { core::arch::asm!("ud2") };
    SHARED.store(0x0d, Ordering::SeqCst);
    sys::thread_exit(0)
}

fn test_user_exception_fault() -> bool {
    let Ok(ep) = retype(ObjectType::Endpoint, 0) else { return false };
    SHARED.store(0, Ordering::SeqCst);
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "own priority 50");
    let Ok(t) = spawn(bad_instruction, 0, 100, ep) else { return false };
    let r = sys::recv(ep).unwrap_or_default();
    check_eq!(r.msg.info.label(), 3); // user exception
    check_eq!(r.msg.mrs[2], 6); // #UD
    // Move the thread past the 2-byte ud2 and resume it.
    let regs = k::tcb_read_registers(t.tcb, true);
    check!(regs.is_ok(), "read registers");
    let mut regs = regs.unwrap();
    check_eq!(regs.rip, r.msg.mrs[0]);
    regs.rip += 2;
    check!(k::tcb_write_registers(t.tcb, true, &regs).is_ok(), "write registers");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check!(k::tcb_set_priority(TCB, TCB, 50).is_ok(), "let it run");
    check!(k::tcb_set_priority(TCB, TCB, 255).is_ok(), "own priority back");
    check_eq!(SHARED.load(Ordering::SeqCst), 0x0d);
    true
}

fn test_sdk_heap() -> bool {
    extern crate alloc;
    use alloc::{boxed::Box, string::String, vec::Vec};
    check!(ROOT.map_heap(64).is_ok(), "map a 256 KiB heap");
    check_eq!(ozone_agent_sdk::heap::total(), 256 * 1024);
    let v: Vec<u64> = (0..10_000).collect();
    check_eq!(v.iter().sum::<u64>(), 49_995_000);
    let b = Box::new([7u8; 1000]);
    let mut s = String::new();
    for i in 0..100 {
        s.push_str(if i % 2 == 0 { "ab" } else { "c" });
    }
    check_eq!(s.len(), 150);
    check!(ozone_agent_sdk::heap::used() >= 80_000 + 1000, "usage counted");
    drop(v);
    drop(b);
    drop(s);
    check!(ozone_agent_sdk::heap::used() < 1000, "freed");
    true
}

fn run() -> u64 {
    let Some(info) = root::boot_info() else {
        println!("[kernel-tests] FAIL: no boot information");
        return 1;
    };
    let Ok(bits) = ROOT.init(info) else {
        println!("[kernel-tests] FAIL: cannot set up the IPC buffer");
        return 1;
    };
    println!(
        "[kernel-tests] untyped slot {} of 2^{bits} bytes, slots {}..{}",
        ROOT.untyped(),
        info.empty.start,
        info.empty.end
    );

    type Test = (&'static str, fn() -> bool);
    let tests: &[Test] = &[
        ("retype_every_object_type", test_retype_every_object_type),
        ("boot_info_ranges_hold_what_they_say", test_boot_info_ranges_hold_what_they_say),
        ("untyped_exhaustion_and_reuse", test_untyped_exhaustion_and_reuse),
        ("cnode_copy_mint_move_delete_revoke", test_cnode_copy_mint_move_delete_revoke),
        ("rights_only_narrow", test_rights_only_narrow),
        ("deep_and_wide_revoke", test_deep_and_wide_revoke),
        ("send_recv_with_badge", test_send_recv_with_badge),
        ("call_reply", test_call_reply),
        ("non_blocking_forms", test_non_blocking_forms),
        ("notifications", test_notifications),
        ("bound_notification", test_bound_notification),
        ("fault_handler_maps_and_resumes", test_fault_handler_maps_and_resumes),
        ("fault_delivery_keeps_the_registers", test_fault_delivery_keeps_the_registers),
        ("unknown_syscall_becomes_a_fault", test_unknown_syscall_becomes_a_fault),
        ("priorities_and_preemption", test_priorities_and_preemption),
        ("fpu_state_is_per_thread", test_fpu_state_is_per_thread),
        ("read_write_registers", test_read_write_registers),
        ("deleting_a_thread_stops_it", test_deleting_a_thread_stops_it),
        ("timeslices_preempt_busy_threads", test_timeslices_preempt_busy_threads),
        ("io_ports", test_io_ports),
        ("irq_to_notification", test_irq_to_notification),
        ("address_spaces_are_isolated", test_address_spaces_are_isolated),
        ("device_untyped", test_device_untyped),
        ("device_untyped_above_4_gib", test_device_untyped_above_4_gib),
        ("irq_lines_above_16", test_irq_lines_above_16),
        ("msi_handler", test_msi_handler),
        ("level_triggered_line", test_level_triggered_line),
        ("telemetry", test_telemetry),
        ("trace", test_trace),
        ("untyped_get_info", test_untyped_get_info),
        ("mapping_into_a_deleted_address_space", test_mapping_into_a_deleted_address_space),
        ("asids_are_reused", test_asids_are_reused),
        ("profile_denies_without_a_handler", test_profile_denies_without_a_handler),
        ("profile_denial_is_a_fault_for_the_handler", test_profile_denial_is_a_fault_for_the_handler),
        ("profile_applies_to_the_fastpath", test_profile_applies_to_the_fastpath),
        ("debug_calls_are_never_denied", test_debug_calls_are_never_denied),
        ("capability_transfer", test_capability_transfer),
        ("user_exception_fault", test_user_exception_fault),
        ("sdk_heap", test_sdk_heap),
        ("invalid_capabilities_and_arguments", test_invalid_capabilities_and_arguments),
        (
            "call_whose_server_is_suspended_or_deleted_fails_with_reply_lost",
            server_death::test_a_call_whose_server_is_suspended_or_deleted_fails_with_reply_lost,
        ),
        ("call_queued_on_a_deleted_endpoint_fails", server_death::test_a_call_queued_on_a_deleted_endpoint_fails),
        ("call_interruptible_ends_on_a_bound_signal", server_death::test_call_interruptible_ends_on_a_bound_signal),
        // Isolation regressions (see `isolation`).
        ("ipc_buffer_dies_with_its_frame", isolation::test_ipc_buffer_dies_with_its_frame),
        ("late_reply_after_a_cancelled_call", isolation::test_late_reply_after_a_cancelled_call),
        (
            "late_reply_to_a_deleted_caller_reused_as_a_thread",
            isolation::test_late_reply_to_a_deleted_caller_reused_as_a_thread,
        ),
        (
            "late_reply_to_a_deleted_caller_reused_as_a_frame",
            isolation::test_late_reply_to_a_deleted_caller_reused_as_a_frame,
        ),
        ("thread_of_a_deleted_vspace_runs_nowhere", isolation::test_thread_of_a_deleted_vspace_runs_nowhere),
        ("the_page_below_the_hole_cannot_be_mapped", isolation::test_the_page_below_the_hole_cannot_be_mapped),
        (
            "io_port_control_never_issues_the_kernels_ports",
            isolation::test_io_port_control_never_issues_the_kernels_ports,
        ),
        ("fault_reply_cannot_set_a_non_user_rip", isolation::test_fault_reply_cannot_set_a_non_user_rip),
        ("write_registers_refuses_non_user_rips", isolation::test_write_registers_refuses_non_user_rips),
        (
            "recv_on_a_deleted_endpoint_restarts_and_fails",
            isolation::test_recv_on_a_deleted_endpoint_restarts_and_fails,
        ),
        ("cancelled_badged_send_restarts_and_fails", isolation::test_cancelled_badged_send_restarts_and_fails),
        ("recv_restarts_after_suspend_and_resume", isolation::test_recv_restarts_after_suspend_and_resume),
        // Last: on a kernel that takes an NMI for a fault of the running thread, or of itself
        // while it idles, the run may end here.
        ("nmi_while_a_thread_spins", isolation::test_nmi_while_a_thread_spins),
        ("nmi_while_the_kernel_idles", isolation::test_nmi_while_the_kernel_idles),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in tests {
        if f() {
            println!("[kernel-tests] ok   {name}");
            passed += 1;
        } else {
            println!("[kernel-tests] FAIL {name}");
            failed += 1;
        }
    }
    println!("[kernel-tests] {passed} passed, {failed} failed");
    if failed == 0 { 0 } else { 1 }
}
