//! The in-guest syscall fuzzer, booted as the root task. A fuzzer thread throws seeded random
//! syscalls and invocations — random capability pointers, labels, lengths, message words and
//! capability arguments — at the kernel from a CSpace of its own (its own untyped memory,
//! endpoints, notifications, frames, a spare TCB, CNodes). A server thread answers its Calls, and
//! a sentinel thread keeps doing IPC and checking its own memory. At the end the root tears the
//! fuzzer's world down and checks that all of its memory is back in its untyped: one object the
//! size of the whole untyped can be retyped again.
//!
//! Output: `[fuzzer] seed=... syscalls=N errors=N` and `[fuzzer] PASS`, or `[fuzzer] FAIL: why`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ozone_abi::bootinfo::slot;
use ozone_abi::object::ObjectType;
use ozone_abi::{MessageInfo, Syscall, invocation as inv, rights};
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::root::{self, Root, Stacks};
use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println};
use ozone_guest_tests::Rng;

entry!(run);

/// Syscalls the fuzzer makes.
const ROUNDS: u64 = 100_000;
/// The fuzzer's CNode: 2^8 slots.
const FUZZ_RADIX: u64 = 8;
/// The fuzzer's untyped: 2^20 bytes.
const FUZZ_UNTYPED_BITS: u64 = 20;

static ROOT: Root = Root::new();
static STACKS: Stacks<4, { 16 * 1024 }> = Stacks::new();

static DONE: AtomicBool = AtomicBool::new(false);
static SYSCALLS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static SENTINEL_ROUNDS: AtomicU64 = AtomicU64::new(0);
static SENTINEL_BAD: AtomicU64 = AtomicU64::new(0);
/// Set by the sentinel when the fuzzer stopped making progress (blocked for ever).
static STUCK: AtomicBool = AtomicBool::new(false);
/// The fuzzer's last syscall (number, capability pointer, message info), for the report.
static LAST: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// A value that is often interesting: small, a slot index, a boundary, or anything.
fn word(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => rng.below(16),
        1 => rng.below(1 << FUZZ_RADIX),
        2 => [0, 1, 63, 64, 65, 255, 256, 4096, u64::MAX, 1 << 63, 0x7fff_ffff_f000][rng.below(11) as usize],
        3 => 0x40_0000 + (rng.below(512) << 12),
        4 => rng.below(64),
        _ => rng.next(),
    }
}

/// Invocation labels worth trying, plus garbage.
const LABELS: &[u64] = &[
    inv::UNTYPED_RETYPE,
    inv::UNTYPED_GET_INFO,
    inv::CNODE_COPY,
    inv::CNODE_MINT,
    inv::CNODE_MOVE,
    inv::CNODE_MUTATE,
    inv::CNODE_DELETE,
    inv::CNODE_REVOKE,
    inv::CNODE_CANCEL_BADGED_SENDS,
    inv::TCB_CONFIGURE,
    inv::TCB_SET_SPACE,
    inv::TCB_SET_IPC_BUFFER,
    inv::TCB_SET_PRIORITY,
    inv::TCB_SET_MC_PRIORITY,
    inv::TCB_READ_REGISTERS,
    inv::TCB_WRITE_REGISTERS,
    inv::TCB_RESUME,
    inv::TCB_SUSPEND,
    inv::TCB_BIND_NOTIFICATION,
    inv::TCB_UNBIND_NOTIFICATION,
    inv::TCB_SET_TLS_BASE,
    inv::TCB_SET_PROFILE,
    inv::TCB_GET_PROFILE,
    inv::PAGING_MAP,
    inv::PAGING_UNMAP,
    inv::FRAME_MAP,
    inv::FRAME_UNMAP,
    inv::FRAME_GET_ADDRESS,
    inv::IRQ_CONTROL_GET,
    inv::IO_PORT_CONTROL_ISSUE,
    0,
    9999,
];

/// The fuzzer: only non-blocking syscalls and Calls (the server answers those on endpoints).
extern "C" fn fuzzer(seed: u64) -> ! {
    let mut rng = Rng(seed | 1);
    let buf = k::ipc_buffer();
    for _ in 0..ROUNDS {
        let number = match rng.below(8) {
            0..=3 => Syscall::Call as i64,
            4 => Syscall::NbSend as i64,
            5 => Syscall::NbRecv as i64,
            6 => Syscall::Yield as i64,
            _ => [Syscall::Reply as i64, -9, 1, 12345][rng.below(4) as usize],
        };
        let cptr = word(&mut rng);
        let label = LABELS[rng.below(LABELS.len() as u64) as usize];
        let length = rng.below(8);
        let extra = rng.below(4);
        for c in buf.caps_or_badges.iter_mut() {
            *c = word(&mut rng);
        }
        for m in buf.msg.iter_mut().take(8) {
            *m = word(&mut rng);
        }
        buf.receive_cnode = word(&mut rng);
        buf.receive_index = word(&mut rng);
        buf.receive_depth = rng.below(70);
        let info = MessageInfo::new(label, 0, extra, length).0;
        LAST[0].store(number as u64, Ordering::Relaxed);
        LAST[1].store(cptr, Ordering::Relaxed);
        LAST[2].store(info, Ordering::Relaxed);
        let mrs = [word(&mut rng), word(&mut rng), word(&mut rng), word(&mut rng)];
        let rax: u64;
        // SAFETY: a raw syscall with random arguments: the kernel must cope; only the registers
        // named are changed.
        unsafe {
            core::arch::asm!(
                "syscall",
                in("rdx") number,
                inout("rdi") cptr => _,
                inout("rsi") info => _,
                inout("r10") mrs[0] => _,
                inout("r8") mrs[1] => _,
                inout("r9") mrs[2] => _,
                inout("r15") mrs[3] => _,
                lateout("rax") rax,
                out("rcx") _,
                out("r11") _,
                options(nostack),
            );
        }
        SYSCALLS.fetch_add(1, Ordering::Relaxed);
        if rax != 0 {
            ERRORS.fetch_add(1, Ordering::Relaxed);
        }
    }
    DONE.store(true, Ordering::SeqCst);
    sys::thread_exit(0)
}

/// Answers every Call on the fuzzer's endpoint (so Calls on endpoints do not block for ever).
extern "C" fn server(ep: u64) -> ! {
    let mut r = sys::recv(ep);
    loop {
        let _ = r;
        r = sys::reply_recv(ep, Msg::new(0, &[]));
    }
}

/// Keeps doing IPC with the server and checking a block of its own memory.
extern "C" fn sentinel(ep: u64) -> ! {
    let mut memory = [0u64; 256];
    for (i, m) in memory.iter_mut().enumerate() {
        *m = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let mut last_seen = u64::MAX;
    let mut still = 0;
    while !DONE.load(Ordering::SeqCst) {
        // Watchdog: the fuzzer runs between our rounds; if it stops advancing it is stuck.
        let n = SYSCALLS.load(Ordering::Relaxed);
        still = if n == last_seen { still + 1 } else { 0 };
        last_seen = n;
        if still > 10_000 {
            STUCK.store(true, Ordering::SeqCst);
            DONE.store(true, Ordering::SeqCst);
            break;
        }
        if sys::call(ep, Msg::new(1, &[7])).is_err() {
            SENTINEL_BAD.fetch_add(1, Ordering::Relaxed);
        }
        for (i, m) in memory.iter().enumerate() {
            if core::hint::black_box(*m) != (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) {
                SENTINEL_BAD.fetch_add(1, Ordering::Relaxed);
            }
        }
        SENTINEL_ROUNDS.fetch_add(1, Ordering::Relaxed);
        sys::yield_now();
    }
    sys::thread_exit(0)
}

fn fail(why: &str) -> u64 {
    println!("[fuzzer] FAIL: {why}");
    1
}

fn run() -> u64 {
    let Some(info) = root::boot_info() else { return fail("no boot information") };
    if ROOT.init(info).is_err() {
        return fail("setup");
    }
    let seed = info.instance_id ^ 0x0207_a11c_e5ee_d5ee;
    // The fuzzer's world: a CNode, an untyped, and some objects, all copied into its CNode.
    let Ok(ut) = ROOT.retype(ObjectType::Untyped, FUZZ_UNTYPED_BITS) else { return fail("untyped") };
    let Ok(cn_raw) = ROOT.retype(ObjectType::CNode, FUZZ_RADIX) else { return fail("cnode") };
    let Ok(cn) = ROOT.slot() else { return fail("slot") };
    // A guard so the fuzzer's 64-bit capability pointers resolve in one level.
    if k::cnode_mutate(slot::CNODE, cn, cn_raw, 64 - FUZZ_RADIX).is_err() {
        return fail("guard");
    }
    let Ok(ep) = ROOT.retype(ObjectType::Endpoint, 0) else { return fail("ep") };
    let Ok(ntfn) = ROOT.retype(ObjectType::Notification, 0) else { return fail("ntfn") };
    let Ok(spare) = ROOT.retype(ObjectType::Tcb, 0) else { return fail("tcb") };
    let mut objects = [0u64; 8];
    for (i, ty) in
        [ObjectType::Frame4K, ObjectType::Frame4K, ObjectType::Notification, ObjectType::CNode].into_iter().enumerate()
    {
        let Ok(s) = ROOT.retype(ty, 4) else { return fail("objects") };
        objects[i] = s;
    }
    // Populate the fuzzer's CNode: slot 1 untyped (moved in: it is the fuzzer's), 2 endpoint
    // (badged), 3 notification, 4 spare TCB, 5.. the rest.
    let copies: [(u64, u64); 8] =
        [(1, ut), (2, ep), (3, ntfn), (4, spare), (5, objects[0]), (6, objects[1]), (7, objects[2]), (8, objects[3])];
    for (dest, src) in copies {
        let r = if dest == 2 {
            k::invoke(cn, inv::CNODE_MINT, &[dest, 64, src, 64, rights::ALL, 0xf022], &[slot::CNODE])
        } else {
            k::invoke(cn, inv::CNODE_COPY, &[dest, 64, src, 64, rights::ALL], &[slot::CNODE])
        };
        if let Err(e) = r {
            println!("[fuzzer] cannot put slot {src} into the fuzzer's slot {dest}: {e:?}");
            return fail("populate");
        }
    }
    // Threads: server (high), sentinel and fuzzer (equal, sharing the CPU by timeslices).
    if ROOT.spawn(server, ep, 200, 0, STACKS.next_top()).is_err() {
        return fail("server");
    }
    if k::tcb_set_priority(slot::TCB, slot::TCB, 250).is_err() {
        return fail("priority");
    }
    let Ok(sent) = ROOT.spawn(sentinel, ep, 100, 0, STACKS.next_top()) else { return fail("sentinel") };
    // The fuzzer runs with the fuzzer CNode as its CSpace.
    let Ok(fz) = ROOT.retype(ObjectType::Tcb, 0) else { return fail("fuzzer tcb") };
    let Ok(frame) = ROOT.retype(ObjectType::Frame4K, 0) else { return fail("fuzzer buffer") };
    let buf = 0x3f_e000;
    if k::frame_map(frame, slot::VSPACE, buf, rights::READ | rights::WRITE, false).is_err()
        || k::tcb_configure(fz, 0, cn, slot::VSPACE, buf, frame).is_err()
        || k::tcb_set_priority(fz, slot::TCB, 100).is_err()
    {
        return fail("fuzzer setup");
    }
    // SAFETY: the fuzzer's IPC buffer, just mapped here.
    unsafe { (*(buf as *mut ozone_abi::IpcBuffer)).user_data = buf };
    let regs = k::UserRegisters {
        rip: fuzzer as *const () as u64,
        rsp: STACKS.next_top(),
        rflags: 0x202,
        rdi: seed,
        ..Default::default()
    };
    if k::tcb_set_tls_base(fz, buf).is_err() || k::tcb_write_registers(fz, true, &regs).is_err() {
        return fail("fuzzer start");
    }
    println!("[fuzzer] seed={seed:#x} rounds={ROUNDS}");
    // Let them run: we wait on a notification nobody signals, polling between timeslices.
    if k::tcb_set_priority(slot::TCB, slot::TCB, 50).is_err() {
        return fail("priority");
    }
    // We run only when both fuzzer and sentinel are blocked or done (they are at 100).
    while !DONE.load(Ordering::SeqCst) {
        sys::yield_now();
    }
    let _ = k::tcb_set_priority(slot::TCB, slot::TCB, 255);
    let _ = k::tcb_suspend(sent);
    let _ = k::tcb_suspend(fz);
    println!(
        "[fuzzer] syscalls={} errors={} sentinel_rounds={} sentinel_bad={}",
        SYSCALLS.load(Ordering::SeqCst),
        ERRORS.load(Ordering::SeqCst),
        SENTINEL_ROUNDS.load(Ordering::SeqCst),
        SENTINEL_BAD.load(Ordering::SeqCst)
    );
    if STUCK.load(Ordering::SeqCst) {
        println!(
            "[fuzzer] stuck after syscall {:#x} cptr={:#x} info={:#x}",
            LAST[0].load(Ordering::SeqCst),
            LAST[1].load(Ordering::SeqCst),
            LAST[2].load(Ordering::SeqCst)
        );
    }
    if SYSCALLS.load(Ordering::SeqCst) != ROUNDS {
        return fail("the fuzzer did not finish");
    }
    if SENTINEL_BAD.load(Ordering::SeqCst) != 0 || SENTINEL_ROUNDS.load(Ordering::SeqCst) == 0 {
        return fail("the sentinel saw damage or never ran");
    }
    // Tear down: delete the fuzzer's TCB and CNode (with everything in it), revoke its untyped.
    if k::cnode_delete(slot::CNODE, fz).is_err() || k::cnode_revoke(slot::CNODE, cn_raw).is_err() {
        return fail("teardown");
    }
    let _ = k::cnode_delete(slot::CNODE, cn);
    let _ = k::cnode_delete(slot::CNODE, cn_raw);
    if k::cnode_revoke(slot::CNODE, ut).is_err() {
        return fail("revoke the fuzzer's untyped");
    }
    // All of the fuzzer's memory is back: its untyped takes one object of its full size.
    let Ok(whole) = ROOT.slot() else { return fail("slot") };
    if k::untyped_retype(ut, ObjectType::Untyped, FUZZ_UNTYPED_BITS, slot::CNODE, 0, 0, whole, 1).is_err() {
        return fail("the fuzzer's untyped is not whole again");
    }
    println!("[fuzzer] PASS");
    0
}
