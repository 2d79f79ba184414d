//! The differential IPC program, booted as the root task: seeded random IPC between threads in
//! two address spaces, whose every observation is folded into hashes that must not depend on
//! whether the kernel took its IPC fastpath (`ozone.fastpath=on|off`; the QEMU test
//! `ipc_fastpath_differential` boots it both ways with one seed and compares the transcripts).
//!
//! **Who runs.** Six *workers*, three in the root task's address space and three in a second one
//! (a second copy of this program, loaded from the initrd, at the same addresses), all with the
//! root task's CNode as their CSpace (single level, so the fastpath's lookup applies), and a
//! *controller* (the root task's thread). Every worker has a priority of its own, above the
//! controller's; the controller reshuffles them every [`SHUFFLE_EVERY`] steps. With no two
//! threads of one priority, who runs is decided by IPC alone, never by where a timer tick
//! lands: the controller runs only when every worker is blocked, and the run is the same however
//! long each syscall takes — so the same on both paths, and any difference is a difference the
//! fastpath made.
//!
//! Every [`REFRESH_EVERY`] steps the controller also replaces an idle worker's thread by a new
//! one (a new TCB in the same slot, carrying on with the worker's hash), whose profile has
//! recorded nothing yet: its first Call and ReplyRecv are not the fastpath's. One in four of
//! them may not Call at all (its profile denies it, and it has no fault handler): the fastpath
//! must leave its Calls to the general path, which denies them.
//!
//! **Steps.** At each step the controller picks an idle worker (blocked on its own notification)
//! and gives it a command of one to three IPC operations, then signals it: Call, ReplyRecv,
//! Send, NBSend, Recv, NBRecv or Reply on one of three endpoints, through a capability with all
//! rights and a badge, without the grant right, without a badge, read-only or write-only;
//! messages of random length up to 127 words (longer than the 120 the kernel moves), random
//! words and labels, and sometimes up to three extra capabilities (a frame, a notification and
//! a write-only endpoint of the worker's own, or the very badged capability the message travels
//! on, which arrives unwrapped as its badge), or an unknown syscall number, which the kernel
//! delivers to the worker's fault handler (endpoint 0) as a fault message. It prefers endpoints
//! with a partner already waiting, so that Calls to waiting receivers and ReplyRecvs to waiting
//! callers (the fastpath's cases) are common, and so are their near misses: no receiver yet, a
//! sender queued, a fault to answer, extra capabilities, long messages, a more important thread
//! made ready by the operation before, a first use not yet recorded in the thread's profile. A
//! worker that received a Call (or a message it cannot attribute) answers with Reply or
//! ReplyRecv next; when every worker is blocked in IPC, the controller unblocks one by sending
//! to or receiving (and replying) on its endpoint. Now and then the controller signals a
//! worker's bound notification instead: a worker blocked receiving on an endpoint takes the
//! signal; otherwise it is pending and the worker's next receive takes it (a ReplyRecv with a
//! signal pending is one the fastpath must leave alone).
//!
//! **What is compared.** Each worker folds into its hash everything each operation returns — the
//! error code, badge, message info, the four register words, the buffer words up to the
//! received length, the badges of unwrapped capabilities, what a received capability is (a
//! frame by its address, a notification by the badge it signals, a write-only endpoint by the
//! error it gives) — and the step at which the operation returned (the order of events). The
//! controller folds in what it observes. The output is one line per worker, the controller's
//! line, coverage counts per operation and a total, then `[ipcdiff] PASS` or `[ipcdiff] FAIL`.
//!
//! **Parameters.** The initrd file `ipcdiff.args`: `seed=` (hex with `0x`, or decimal) and
//! `steps=`. Without it, the seed comes from the instance id and the run is
//! [`DEFAULT_STEPS`] steps long.
//!
//! **Raw on purpose.** It compares the kernel's IPC with a model word for word, so it speaks raw
//! syscalls on raw slot numbers (`ozone_agent_sdk::kernel`, `sys`, `process`), not the typed
//! handles of `caps`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::sync::atomic::{AtomicU64, Ordering};

use ozone_abi::bootinfo::slot;
use ozone_abi::object::ObjectType;
use ozone_abi::{IpcBuffer, MSG_MAX_LENGTH, MessageInfo, Syscall, rights};
use ozone_agent_sdk::kernel::{self as k, UserRegisters};
use ozone_agent_sdk::process::{self, Layout};
use ozone_agent_sdk::root::{self, Root, Stacks};
use ozone_agent_sdk::{entry, println};
use ozone_guest_tests::Rng;
use ozone_loader::elf::ElfImage;
use ozone_loader::initrd::Initrd;

entry!(run);

unsafe extern "C" {
    /// The program's entry point (the SDK's runtime): where this copy of the image was loaded.
    fn _start() -> !;
}

/// Steps of a run without `ipcdiff.args`.
const DEFAULT_STEPS: u64 = 20_000;
/// Workers: the first [`WORKERS_A`] in the root task's address space, the rest in the second.
const WORKERS: usize = 6;
const WORKERS_A: usize = 3;
/// Endpoints the workers talk over; endpoint 0 is also every worker's fault handler.
const EPS: usize = 3;
/// Capability variants per worker and endpoint (see [`variant_rights`]).
const VARIANTS: usize = 5;
/// Operations in one command at most.
const MAX_OPS: usize = 3;
/// Words of one operation in a command: kind, endpoint, variant, label, length, extra-capability
/// selection, seed.
const OP_WORDS: usize = 7;
/// The controller's priority (below every worker's) and the priorities workers are given.
const CONTROLLER_PRIO: u64 = 10;
const WORKER_PRIOS: [u64; WORKERS] = [20, 30, 40, 50, 60, 70];
/// Steps between two reshuffles of the workers' priorities, and between two replacements of an
/// idle worker's thread by a new one (whose profile has recorded nothing yet).
const SHUFFLE_EVERY: u64 = 97;
const REFRESH_EVERY: u64 = 331;
/// Unknown syscall number a worker makes to fault.
const FAULT_SYSCALL: i64 = -100;

/// Badges: a worker's capability to an endpoint has `BADGE_WORKER | w << 5 | e << 3 | v` (see
/// [`badge_of`]); the fault handler capability `BADGE_FAULT | w`; the controller's `BADGE_CTRL`;
/// a worker's gift notification `BADGE_GIFT_NTFN | w`, its gift endpoint `BADGE_GIFT_EP | w`.
const BADGE_WORKER: u64 = 0x1000;
const BADGE_FAULT: u64 = 0x8000;
const BADGE_CTRL: u64 = 0xc0;
const BADGE_GIFT_NTFN: u64 = 0x2000;
const BADGE_GIFT_EP: u64 = 0x4000;
/// The badge the controller signals a worker's bound notification with (`| w`).
const BADGE_BOUND: u64 = 0x10_0000;

/// Where things are (inside the page table of the root task's IPC buffer, below the program
/// image): the shared page in both address spaces, the workers' IPC buffers in each, the second
/// address space's own.
const SHARED_VA: u64 = 0x3f_8000;
const A_WORKER_BUFFERS: u64 = 0x3f_0000;
const B_IPC_BUFFER: u64 = 0x20_0000;
const B_WORKER_BUFFERS: u64 = 0x20_2000;

/// Operation kinds (also the coverage rows).
mod op {
    pub const CALL: u64 = 0;
    pub const REPLY_RECV: u64 = 1;
    pub const SEND: u64 = 2;
    pub const NB_SEND: u64 = 3;
    pub const RECV: u64 = 4;
    pub const NB_RECV: u64 = 5;
    pub const REPLY: u64 = 6;
    pub const FAULT: u64 = 7;
    pub const KINDS: usize = 8;
    pub const NAMES: [&str; KINDS] = ["Call", "ReplyRecv", "Send", "NBSend", "Recv", "NBRecv", "Reply", "fault"];
}

/// What a worker owes after receiving (`must_reply`).
mod owe {
    pub const NOTHING: u64 = 0;
    /// A Call from a worker.
    pub const CALL: u64 = 1;
    /// A fault message: the reply has label 0 (resume) and one word (the syscall's result).
    pub const FAULT: u64 = 2;
    /// A message whose sender the badge does not name: answer in case it was a Call.
    pub const MAYBE: u64 = 3;
}

/// Counters of the run (besides the per-operation coverage).
mod stat {
    pub const LONG: usize = 0;
    pub const TOO_LONG: usize = 1;
    pub const CAPS_SENT: usize = 2;
    pub const CAPS_RECEIVED: usize = 3;
    pub const UNWRAPPED: usize = 4;
    pub const FAULTS_HANDLED: usize = 5;
    pub const DRAIN_SEND: usize = 6;
    pub const DRAIN_RECV: usize = 7;
    pub const SHUFFLES: usize = 8;
    pub const CROSS_AS: usize = 9;
    pub const RECEIVED: usize = 10;
    pub const BOUND_SIGNALS: usize = 11;
    pub const SIGNALS_RECEIVED: usize = 12;
    pub const NEW_THREADS: usize = 13;
    pub const DENIED: usize = 14;
    pub const N: usize = 15;
    pub const NAMES: [&str; N] = [
        "long",
        "too_long",
        "caps_sent",
        "caps_received",
        "unwrapped",
        "faults_handled",
        "drain_send",
        "drain_recv",
        "shuffles",
        "cross_as",
        "received",
        "bound_signals",
        "signals_received",
        "new_threads",
        "denied",
    ];
}

/// What the threads share, in one page mapped at [`SHARED_VA`] in both address spaces: the
/// capability table, each worker's command, state and results.
#[repr(C)]
struct Shared {
    /// The controller's step (folded in by the workers as the order of events).
    step: AtomicU64,
    /// Per worker: its command (`ops` operations of [`OP_WORDS`] words), how many commands it
    /// has taken, what it is doing (0 idle, else `1 + kind | endpoint << 8`), what it owes.
    ops: [AtomicU64; WORKERS],
    cmd: [[AtomicU64; MAX_OPS * OP_WORDS]; WORKERS],
    taken: [AtomicU64; WORKERS],
    doing: [AtomicU64; WORKERS],
    owes: [AtomicU64; WORKERS],
    /// Per worker: its hash and operation count.
    hash: [AtomicU64; WORKERS],
    count: [AtomicU64; WORKERS],
    /// Capabilities (root CNode slots): per worker, endpoint and variant; the command
    /// notification, gift frame, gift notification and gift endpoint and receive slot per
    /// worker; the controller's endpoint capabilities.
    ep_caps: [[[AtomicU64; VARIANTS]; EPS]; WORKERS],
    cmd_ntfn: [AtomicU64; WORKERS],
    gift_frame: [AtomicU64; WORKERS],
    gift_ntfn: [AtomicU64; WORKERS],
    gift_ep: [AtomicU64; WORKERS],
    receive_slot: [AtomicU64; WORKERS],
    /// The gift frames' physical addresses (a received frame is named by its index here).
    gift_phys: [AtomicU64; WORKERS],
    /// Coverage per operation kind: made, succeeded.
    coverage: [[AtomicU64; 2]; op::KINDS],
    stats: [AtomicU64; stat::N],
}

const _: () = assert!(core::mem::size_of::<Shared>() <= 4096);

fn shared() -> &'static Shared {
    // SAFETY: the root task maps the (zero-filled) shared frame at SHARED_VA in both address
    // spaces before any thread that calls this runs; `Shared` is all atomics, for which zero
    // bytes are valid values, and every access is atomic.
    unsafe { &*(SHARED_VA as *const Shared) }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::SeqCst)
}

fn put(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::SeqCst)
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::SeqCst);
}

/// Fold `x` into the running hash `h`.
fn fold(h: u64, x: u64) -> u64 {
    (h.rotate_left(7) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (h >> 29)
}

/// The badge of worker `w`'s capability variant `v` to endpoint `e` (0 for the unbadged one).
const fn badge_of(w: usize, e: usize, v: usize) -> u64 {
    if v == 2 { 0 } else { BADGE_WORKER | (w as u64) << 5 | (e as u64) << 3 | v as u64 }
}

/// The rights of capability variant `v`: 0 all (badged), 1 no grant (badged), 2 all (no badge),
/// 3 read only, 4 write only (badged; a Call through it would leave the caller stuck for good,
/// so only sends use it).
const fn variant_rights(v: usize) -> u64 {
    match v {
        0 | 2 => rights::ALL,
        1 => rights::READ | rights::WRITE | rights::GRANT_REPLY,
        3 => rights::READ,
        _ => rights::WRITE,
    }
}

/// The worker a badge names, if any (an endpoint capability of one, or its fault capability).
fn sender_of(badge: u64) -> Option<usize> {
    let w = if badge & BADGE_FAULT != 0 {
        badge & 0xff
    } else if badge & !0xff == BADGE_WORKER {
        (badge >> 5) & 7
    } else {
        return None;
    };
    ((w as usize) < WORKERS).then_some(w as usize)
}

/// All registers one IPC syscall returns: rax, rdi (badge), rsi (message info), the four
/// register words.
#[derive(Clone, Copy, Default)]
struct Regs {
    rax: u64,
    badge: u64,
    info: u64,
    mrs: [u64; 4],
}

/// One raw IPC syscall (or an unknown number, to fault), with every register the kernel may
/// change returned.
#[cfg(target_os = "none")]
fn ipc(number: i64, cptr: u64, info: u64, mrs: [u64; 4]) -> Regs {
    let (rax, rdi, rsi, r10, r8, r9, r15): (u64, u64, u64, u64, u64, u64, u64);
    // SAFETY: a raw syscall: it reads and writes only the registers named here (rcx and r11 are
    // clobbered by `syscall`) and this thread's IPC buffer, which is read afresh after it; the
    // kernel validates every argument.
    unsafe {
        core::arch::asm!(
            "syscall",
            in("rdx") number,
            inout("rdi") cptr => rdi,
            inout("rsi") info => rsi,
            inout("r10") mrs[0] => r10,
            inout("r8") mrs[1] => r8,
            inout("r9") mrs[2] => r9,
            inout("r15") mrs[3] => r15,
            lateout("rax") rax,
            out("rcx") _,
            out("r11") _,
            options(nostack),
        );
    }
    Regs { rax, badge: rdi, info: rsi, mrs: [r10, r8, r9, r15] }
}

#[cfg(not(target_os = "none"))]
fn ipc(_number: i64, _cptr: u64, _info: u64, _mrs: [u64; 4]) -> Regs {
    Regs { rax: ozone_abi::Error::UnknownSyscall as u64, ..Regs::default() }
}

// ---- the workers ----

/// A worker's state while it runs (in its own address space; everything shared is in
/// [`Shared`]).
struct Worker {
    idx: usize,
    buf: *mut IpcBuffer,
    hash: u64,
}

/// Worker `arg & 0xff`, whose IPC buffer is at `arg & !0xfff`: wait for a command, carry it out,
/// record what it saw; forever.
extern "C" fn worker(arg: u64) -> ! {
    let idx = (arg & 0xff) as usize % WORKERS;
    let buf = (arg & !0xfff) as *mut IpcBuffer;
    // SAFETY: the root task mapped this thread's IPC buffer at that address, writable, and no
    // other thread uses it.
    unsafe { (*buf).user_data = buf as u64 };
    let sh = shared();
    // A worker's thread may be a replacement: it carries on with its predecessor's hash.
    let mut w = Worker { idx, buf, hash: get(&sh.hash[idx]) };
    let ntfn = get(&sh.cmd_ntfn[idx]);
    loop {
        put(&sh.doing[idx], 0);
        // Wait for the controller's signal (a notification, not an endpoint: not compared).
        ipc(Syscall::Recv as i64, ntfn, 0, [0; 4]);
        bump(&sh.taken[idx]);
        let n = get(&sh.ops[idx]) as usize;
        for i in 0..n.min(MAX_OPS) {
            let mut words = [0u64; OP_WORDS];
            for (j, word) in words.iter_mut().enumerate() {
                *word = get(&sh.cmd[idx][i * OP_WORDS + j]);
            }
            w.perform(words);
        }
        put(&sh.hash[idx], w.hash);
    }
}

impl Worker {
    fn buffer(&self) -> &'static mut IpcBuffer {
        // SAFETY: this worker's IPC buffer (mapped writable by the root task for this thread
        // alone); the kernel writes it only while the thread is in a syscall, when no reference
        // made here is in use.
        unsafe { &mut *self.buf }
    }

    fn note(&mut self, x: u64) {
        self.hash = fold(self.hash, x);
    }

    /// Carry out one operation and fold in everything it returned.
    fn perform(&mut self, words: [u64; OP_WORDS]) {
        let sh = shared();
        let me = self.idx;
        let [kind, e, v, label, length, capsel, seed] = words;
        let (e, v) = (e as usize % EPS, v as usize % VARIANTS);
        // What is owed decides the operation: a worker that owes a reply replies first.
        let owed = get(&sh.owes[me]);
        let kind = match kind {
            _ if owed != owe::NOTHING && kind != op::REPLY && kind != op::REPLY_RECV => op::REPLY_RECV,
            _ => kind,
        };
        let mut rng = Rng(seed | 1);
        let mut info = MessageInfo::new(label, 0, 0, length).0;
        let mut mrs = [rng.next(), rng.next(), rng.next(), rng.next()];
        if owed == owe::FAULT {
            // Resume the faulted thread; MR0 becomes the result of its unknown syscall.
            info = MessageInfo::new(0, 0, 0, 1).0;
        }
        let b = self.buffer();
        let len = MessageInfo(info).length().min(MSG_MAX_LENGTH) as usize;
        for m in b.msg.iter_mut().take(len).skip(4) {
            *m = rng.next();
        }
        if len > 4 {
            bump(&sh.stats[stat::LONG]);
        }
        if MessageInfo(info).length() > MSG_MAX_LENGTH {
            bump(&sh.stats[stat::TOO_LONG]);
        }
        // Extra capabilities: three 3-bit choices (0 none, which ends the list).
        let cap = get(&sh.ep_caps[me][e][v]);
        let mut extra = 0;
        for i in 0..3 {
            let c = match (capsel >> (3 * i)) & 7 {
                1 => get(&sh.gift_frame[me]),
                2 => get(&sh.gift_ntfn[me]),
                3 => get(&sh.gift_ep[me]),
                // The capability the message travels on, unwrapped to its badge — or, where that
                // would be a copy with the read right (no badge, or a reply, which unwraps
                // nothing), the write-only one to the same endpoint.
                4 if v == 2 || kind == op::REPLY || kind == op::REPLY_RECV => get(&sh.ep_caps[me][e][4]),
                4 => cap,
                // The capability to the next endpoint (a copy; write-only, so the probe below
                // cannot take a message).
                5 => get(&sh.ep_caps[me][(e + 1) % EPS][4]),
                // An empty slot: the transfer stops there.
                6 => get(&sh.receive_slot[(me + 1) % WORKERS]),
                _ => break,
            };
            b.caps_or_badges[i] = c;
            extra += 1;
        }
        if extra > 0 && owed != owe::FAULT {
            let i = MessageInfo(info);
            info = MessageInfo::new(i.label(), 0, extra, i.length()).0;
            bump(&sh.stats[stat::CAPS_SENT]);
        }
        b.receive_cnode = slot::CNODE;
        b.receive_index = get(&sh.receive_slot[me]);
        b.receive_depth = 64;
        let (number, cptr) = match kind {
            op::CALL => (Syscall::Call as i64, cap),
            op::REPLY_RECV => (Syscall::ReplyRecv as i64, cap),
            op::SEND => (Syscall::Send as i64, cap),
            op::NB_SEND => (Syscall::NbSend as i64, cap),
            op::RECV => (Syscall::Recv as i64, cap),
            op::NB_RECV => (Syscall::NbRecv as i64, cap),
            op::REPLY => (Syscall::Reply as i64, 0),
            _ => (FAULT_SYSCALL, cap),
        };
        if matches!(kind, op::RECV | op::NB_RECV) {
            info = 0;
            mrs = [0; 4];
        }
        // (A fault is delivered on the fault handler's endpoint, 0.)
        let on = if kind == op::FAULT { 0 } else { e as u64 };
        put(&sh.doing[me], (1 + kind) | on << 8);
        let r = ipc(number, cptr, info, mrs);
        let step = get(&sh.step);
        if kind == op::REPLY || kind == op::REPLY_RECV {
            put(&sh.owes[me], owe::NOTHING);
        }
        bump(&sh.count[me]);
        bump(&sh.coverage[kind as usize][0]);
        // A fault "succeeds" when its handler resumes the thread (its result is the handler's).
        if r.rax == 0 || (kind == op::FAULT && r.rax != ozone_abi::Error::UnknownSyscall as u64) {
            bump(&sh.coverage[kind as usize][1]);
        }
        if r.rax == ozone_abi::Error::Denied as u64 {
            bump(&sh.stats[stat::DENIED]);
        }
        for x in [kind, step, r.rax, r.badge, r.info, r.mrs[0], r.mrs[1], r.mrs[2], r.mrs[3]] {
            self.note(x);
        }
        let receives = matches!(kind, op::CALL | op::REPLY_RECV | op::RECV | op::NB_RECV);
        if receives && r.rax == 0 {
            self.received(kind, r);
        }
    }

    /// Fold in a received message's buffer words and capabilities, and note what is owed.
    fn received(&mut self, kind: u64, r: Regs) {
        let sh = shared();
        let me = self.idx;
        let info = MessageInfo(r.info);
        bump(&sh.stats[stat::RECEIVED]);
        let b = self.buffer();
        let len = info.length().min(MSG_MAX_LENGTH) as usize;
        for i in 4..len {
            self.note(b.msg[i]);
        }
        if let Some(s) = sender_of(r.badge)
            && (s < WORKERS_A) != (me < WORKERS_A)
        {
            bump(&sh.stats[stat::CROSS_AS]);
        }
        for i in 0..info.extra_caps() as usize {
            if info.caps_unwrapped() & (1 << i) != 0 {
                bump(&sh.stats[stat::UNWRAPPED]);
                self.note(b.caps_or_badges[i]);
            }
        }
        if info.extra_caps() > 0 && info.caps_unwrapped() != (1 << info.extra_caps()) - 1 {
            self.probe_received_cap();
        }
        // A message answered by a reply (the reply to a Call owes nothing).
        if kind != op::CALL && !(kind == op::NB_RECV && r.badge == 0 && r.info == 0) {
            let owed = if r.badge & BADGE_BOUND != 0 {
                // The bound notification's signal, taken instead of a message.
                bump(&sh.stats[stat::SIGNALS_RECEIVED]);
                owe::NOTHING
            } else if r.badge & BADGE_FAULT != 0 {
                bump(&sh.stats[stat::FAULTS_HANDLED]);
                owe::FAULT
            } else if r.badge == BADGE_CTRL {
                owe::NOTHING
            } else {
                match sender_of(r.badge) {
                    Some(s) if get(&sh.doing[s]) & 0xff == 1 + op::CALL => owe::CALL,
                    Some(_) => owe::NOTHING,
                    None => owe::MAYBE,
                }
            };
            put(&sh.owes[me], owed);
        }
    }

    /// Name the capability in the receive slot, fold the name in, and empty the slot.
    fn probe_received_cap(&mut self) {
        let sh = shared();
        let me = self.idx;
        let s = get(&sh.receive_slot[me]);
        bump(&sh.stats[stat::CAPS_RECEIVED]);
        // NBRecv: a notification answers (it is polled), a write-only endpoint refuses, a frame
        // is no capability to receive on.
        let r = ipc(Syscall::NbRecv as i64, s, 0, [0; 4]);
        self.note(r.rax);
        if r.rax == 0 {
            // A notification: signal it through this capability and poll it again: its badge.
            ipc(Syscall::NbSend as i64, s, 0, [0; 4]);
            let r = ipc(Syscall::NbRecv as i64, s, 0, [0; 4]);
            self.note(r.badge);
        } else if r.rax == ozone_abi::Error::InvalidCapability as u64 {
            match k::frame_get_address(s) {
                Ok(phys) => {
                    let index = sh.gift_phys.iter().position(|p| get(p) == phys).map_or(u64::MAX, |i| i as u64);
                    self.note(index);
                }
                Err(e) => self.note(0xe000 | e as u64),
            }
        }
        let d = k::cnode_delete(slot::CNODE, s);
        self.note(d.err().map_or(0, |e| e as u64));
    }
}

// ---- the controller ----

static ROOT: Root = Root::new();
/// Stacks of the six workers (the second address space's use those of its own copy).
static STACKS: Stacks<WORKERS, { 16 * 1024 }> = Stacks::new();

/// `Err(what)` for a failed setup step.
fn step<T>(r: Result<T, ozone_abi::Error>, what: &'static str) -> Result<T, &'static str> {
    r.map_err(|e| {
        println!("[ipcdiff] {what}: {e:?}");
        what
    })
}

/// Where a worker's thread lives: its TCB's slot, fault handler, address space, IPC buffer (its
/// address and frame), bound notification, stack, priority.
#[derive(Clone, Copy, Default)]
struct Seat {
    tcb: u64,
    fault: u64,
    vspace: u64,
    buffer: u64,
    frame: u64,
    bound: u64,
    stack: u64,
    prio: u64,
}

impl Seat {
    /// Configure the thread in `tcb`, bind its notification and start it at the worker's entry.
    /// A `restricted` thread may not Call (its profile denies it) and has no fault handler, so a
    /// Call returns `Denied` (and an unknown syscall `UnknownSyscall`).
    fn start(&self, idx: usize, restricted: bool) -> Result<(), &'static str> {
        let fault = if restricted { 0 } else { self.fault };
        step(k::tcb_configure(self.tcb, fault, slot::CNODE, self.vspace, self.buffer, self.frame), "configure")?;
        if restricted {
            let allowed = ozone_abi::profile::ALL & !ozone_abi::profile::mask(ozone_abi::profile::CALL);
            step(k::tcb_set_profile(self.tcb, allowed), "a worker's profile")?;
        }
        step(k::tcb_bind_notification(self.tcb, self.bound), "bind a notification")?;
        step(k::tcb_set_priority(self.tcb, slot::TCB, self.prio), "worker priority")?;
        step(k::tcb_set_tls_base(self.tcb, self.buffer), "worker TLS")?;
        let regs = UserRegisters {
            rip: worker as *const () as u64,
            rsp: self.stack,
            rflags: 0x202,
            rdi: self.buffer | idx as u64,
            ..Default::default()
        };
        step(k::tcb_write_registers(self.tcb, true, &regs), "start a worker")
    }
}

/// The controller: its random stream, hash, the workers' threads and the endpoints.
struct Controller {
    rng: Rng,
    hash: u64,
    seats: [Seat; WORKERS],
    /// Per endpoint: a capability with all rights and the controller's badge.
    eps: [u64; EPS],
    /// Notification capabilities to signal each worker's command notification, and its bound
    /// notification.
    signal: [u64; WORKERS],
    bound: [u64; WORKERS],
}

/// Whether worker `w` is blocked in a receive (on which endpoint) or a send.
fn blocked(w: usize) -> Option<(u64, usize)> {
    let d = get(&shared().doing[w]);
    (d != 0).then(|| ((d & 0xff) - 1, (d >> 8) as usize % EPS))
}

fn is_receive(kind: u64) -> bool {
    matches!(kind, op::RECV | op::REPLY_RECV)
}

impl Controller {
    fn note(&mut self, x: u64) {
        self.hash = fold(self.hash, x);
    }

    /// An endpoint with a worker blocked receiving (`receivers`) or sending, if any (the first
    /// found from a random start), else a random one.
    fn endpoint(&mut self, receivers: bool) -> usize {
        let start = self.rng.below(WORKERS as u64) as usize;
        for i in 0..WORKERS {
            let w = (start + i) % WORKERS;
            if let Some((kind, e)) = blocked(w)
                && is_receive(kind) == receivers
            {
                return e;
            }
        }
        self.rng.below(EPS as u64) as usize
    }

    /// One random operation for a worker that owes `owed`, written as command operation `i`.
    fn choose(&mut self, w: usize, i: usize, owed: u64) {
        let sh = shared();
        let r = self.rng.below(100);
        let kind = if owed != owe::NOTHING && i == 0 {
            if r < 75 { op::REPLY_RECV } else { op::REPLY }
        } else {
            match r {
                0..30 => op::CALL,
                30..44 => op::REPLY_RECV,
                44..58 => op::RECV,
                58..68 => op::SEND,
                68..80 => op::NB_SEND,
                80..88 => op::NB_RECV,
                88..94 => op::FAULT,
                _ => op::REPLY,
            }
        };
        let prefer = self.rng.below(100) < 70;
        let e = match kind {
            op::CALL | op::SEND | op::NB_SEND if prefer => self.endpoint(true),
            op::REPLY_RECV | op::RECV | op::NB_RECV if prefer => self.endpoint(false),
            _ => self.rng.below(EPS as u64) as usize,
        };
        let v = match (kind, self.rng.below(100)) {
            (_, 0..60) => 0,
            (_, 60..78) => 1,
            (_, 78..94) => 2,
            // Read-only: sends fail (a Call's too).
            (_, 94..97) => 3,
            // Write-only: receives fail; no Call through it.
            (op::CALL, _) => 0,
            _ => 4,
        };
        let length = match self.rng.below(100) {
            0..60 => self.rng.below(5),
            60..88 => 5 + self.rng.below(116),
            _ => 121 + self.rng.below(7),
        };
        let capsel = if self.rng.below(100) < 18 {
            let n = 1 + self.rng.below(3);
            (0..n).fold(0, |acc, j| acc | (1 + self.rng.below(6)) << (3 * j))
        } else {
            0
        };
        // Labels are never 0, so an empty NBRecv (badge 0, message info 0) is told from a message.
        let label = 1 + self.rng.below((1 << 20) - 1);
        let words = [kind, e as u64, v as u64, label, length, capsel, self.rng.next()];
        for (j, x) in words.into_iter().enumerate() {
            put(&sh.cmd[w][i * OP_WORDS + j], x);
        }
    }

    /// Give idle worker `w` a command of one to three operations and let it run.
    fn command(&mut self, w: usize) -> Result<(), &'static str> {
        let sh = shared();
        let n = 1 + (self.rng.below(100) >= 70) as usize + (self.rng.below(100) >= 85) as usize;
        let owed = get(&sh.owes[w]);
        for i in 0..n {
            self.choose(w, i, owed);
        }
        put(&sh.ops[w], n as u64);
        let taken = get(&sh.taken[w]);
        ipc(Syscall::NbSend as i64, self.signal[w], 0, [0; 4]);
        // The worker is more important: it has taken the command by now.
        if get(&sh.taken[w]) == taken {
            return Err("a worker did not take its command");
        }
        Ok(())
    }

    /// Every worker is blocked in IPC: unblock one by sending to its endpoint or receiving from
    /// it (and replying). Returns whether something happened.
    fn drain(&mut self) -> bool {
        let sh = shared();
        let start = self.rng.below(WORKERS as u64) as usize;
        for i in 0..WORKERS {
            let w = (start + i) % WORKERS;
            let Some((kind, e)) = blocked(w) else { continue };
            if is_receive(kind) {
                let mrs = [self.rng.next(), self.rng.next(), 0, 0];
                let r = ipc(Syscall::NbSend as i64, self.eps[e], MessageInfo::new(0xc0, 0, 0, 2).0, mrs);
                self.note(r.rax);
                bump(&sh.stats[stat::DRAIN_SEND]);
                return true;
            }
            let r = ipc(Syscall::NbRecv as i64, self.eps[e], 0, [0; 4]);
            for x in [r.rax, r.badge, r.info, r.mrs[0], r.mrs[1], r.mrs[2], r.mrs[3]] {
                self.note(x);
            }
            if r.rax != 0 || (r.badge == 0 && r.info == 0) {
                continue;
            }
            bump(&sh.stats[stat::DRAIN_RECV]);
            // Reply whatever it was (nothing happens for a Send): label 0 resumes a fault.
            let info = MessageInfo::new(0, 0, 0, 1).0;
            let r = ipc(Syscall::Reply as i64, 0, info, [self.rng.next(), 0, 0, 0]);
            self.note(r.rax);
            return true;
        }
        false
    }

    /// Give the workers new priorities: a random order of [`WORKER_PRIOS`].
    fn shuffle(&mut self) -> Result<(), &'static str> {
        let mut prios = WORKER_PRIOS;
        for i in (1..WORKERS).rev() {
            prios.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        for (w, p) in prios.into_iter().enumerate() {
            self.seats[w].prio = p;
            step(k::tcb_set_priority(self.seats[w].tcb, slot::TCB, p), "a worker's priority")?;
        }
        bump(&shared().stats[stat::SHUFFLES]);
        Ok(())
    }

    /// Replace an idle worker that owes nothing (if there is one) by a new thread in a new TCB,
    /// made in the same slot: its profile has recorded nothing, so its first Call and ReplyRecv
    /// take the general path.
    fn refresh(&mut self) -> Result<(), &'static str> {
        let sh = shared();
        let start = self.rng.below(WORKERS as u64) as usize;
        let Some(w) = (0..WORKERS)
            .map(|i| (start + i) % WORKERS)
            .find(|&w| get(&sh.doing[w]) == 0 && get(&sh.owes[w]) == owe::NOTHING)
        else {
            return Ok(());
        };
        let seat = self.seats[w];
        step(k::cnode_delete(slot::CNODE, seat.tcb), "delete a worker")?;
        // A capability its predecessor received but could not name (denied) goes too.
        step(k::cnode_delete(slot::CNODE, get(&sh.receive_slot[w])), "empty a receive slot")?;
        step(k::untyped_retype(ROOT.untyped(), ObjectType::Tcb, 0, slot::CNODE, 0, 0, seat.tcb, 1), "a new worker")?;
        seat.start(w, self.rng.below(4) == 0)?;
        bump(&sh.stats[stat::NEW_THREADS]);
        Ok(())
    }

    /// One step: a command to an idle worker (one that owes a reply half of the time), or, with
    /// none idle, a drain.
    fn step(&mut self) -> Result<(), &'static str> {
        let sh = shared();
        // Now and then a signal to a worker's bound notification: a worker blocked receiving on
        // an endpoint takes it instead of a message; otherwise it is pending, and the worker's
        // next receive takes it (a ReplyRecv then cannot take the fastpath).
        if self.rng.below(100) < 4 {
            let w = self.rng.below(WORKERS as u64) as usize;
            let r = ipc(Syscall::NbSend as i64, self.bound[w], 0, [0; 4]);
            self.note(r.rax);
            bump(&sh.stats[stat::BOUND_SIGNALS]);
            return Ok(());
        }
        let idle: u64 = (0..WORKERS).filter(|&w| get(&sh.doing[w]) == 0).fold(0, |m, w| m | 1 << w);
        if idle == 0 {
            return if self.drain() { Ok(()) } else { Err("every worker is blocked and none can be unblocked") };
        }
        let owing = (0..WORKERS).filter(|&w| idle & 1 << w != 0 && get(&sh.owes[w]) != owe::NOTHING);
        let owing: u64 = owing.fold(0, |m, w| m | 1 << w);
        let pool = if owing != 0 && self.rng.below(2) == 0 { owing } else { idle };
        let pick = self.rng.below(pool.count_ones() as u64) as u32;
        let w = (0..WORKERS).filter(|&w| pool & 1 << w != 0).nth(pick as usize).unwrap_or(0);
        self.command(w)
    }

    /// After the last step: until every worker is idle and owes nothing, let those who owe a
    /// reply reply and drain the rest.
    fn settle(&mut self) -> Result<(), &'static str> {
        let sh = shared();
        for _ in 0..10_000 {
            if let Some(w) = (0..WORKERS).find(|&w| get(&sh.doing[w]) == 0 && get(&sh.owes[w]) != owe::NOTHING) {
                put(&sh.ops[w], 1);
                let words = [op::REPLY, 0, 0, 0, 1, 0, self.rng.next()];
                for (j, x) in words.into_iter().enumerate() {
                    put(&sh.cmd[w][j], x);
                }
                ipc(Syscall::NbSend as i64, self.signal[w], 0, [0; 4]);
            } else if (0..WORKERS).any(|w| get(&sh.doing[w]) != 0) {
                if !self.drain() {
                    return Err("at the end, a worker is blocked and cannot be unblocked");
                }
            } else {
                return Ok(());
            }
        }
        Err("the workers did not settle")
    }
}

/// The capabilities, the shared page, the second address space and the workers (started, each
/// waiting for its first command).
fn setup(image: &[u8]) -> Result<Controller, &'static str> {
    let sh_frame = step(ROOT.retype(ObjectType::Frame4K, 0), "the shared page")?;
    let sh_frame_b = step(ROOT.slot(), "slot")?;
    step(k::cnode_copy(slot::CNODE, sh_frame_b, sh_frame, rights::ALL), "copy the shared page")?;
    let rw = rights::READ | rights::WRITE;
    step(ROOT.map_frame_with_tables(sh_frame, slot::VSPACE, SHARED_VA, rw, false), "map the shared page")?;
    let sh = shared();

    let mut eps = [0; EPS];
    let mut ctrl = [0; EPS];
    for e in 0..EPS {
        eps[e] = step(ROOT.retype(ObjectType::Endpoint, 0), "an endpoint")?;
        ctrl[e] = step(ROOT.slot(), "slot")?;
        step(k::cnode_mint(slot::CNODE, ctrl[e], eps[e], rights::ALL, BADGE_CTRL), "the controller's badge")?;
    }
    let mut signal = [0; WORKERS];
    let mut bound = [0; WORKERS];
    let mut bound_ntfn = [0; WORKERS];
    let mut faults = [0; WORKERS];
    for w in 0..WORKERS {
        for (e, &ep) in eps.iter().enumerate() {
            for v in 0..VARIANTS {
                let s = step(ROOT.slot(), "slot")?;
                step(k::cnode_mint(slot::CNODE, s, ep, variant_rights(v), badge_of(w, e, v)), "a worker's cap")?;
                put(&sh.ep_caps[w][e][v], s);
            }
        }
        let n = step(ROOT.retype(ObjectType::Notification, 0), "a notification")?;
        put(&sh.cmd_ntfn[w], n);
        signal[w] = step(ROOT.slot(), "slot")?;
        step(k::cnode_mint(slot::CNODE, signal[w], n, rights::WRITE, 1), "the controller's signal")?;
        bound_ntfn[w] = step(ROOT.retype(ObjectType::Notification, 0), "a bound notification")?;
        bound[w] = step(ROOT.slot(), "slot")?;
        let b = BADGE_BOUND | w as u64;
        step(k::cnode_mint(slot::CNODE, bound[w], bound_ntfn[w], rights::WRITE, b), "the bound signal")?;
        faults[w] = step(ROOT.slot(), "slot")?;
        let fault_rights = rights::WRITE | rights::GRANT_REPLY;
        step(k::cnode_mint(slot::CNODE, faults[w], eps[0], fault_rights, BADGE_FAULT | w as u64), "fault cap")?;
        let f = step(ROOT.retype(ObjectType::Frame4K, 0), "a gift frame")?;
        put(&sh.gift_frame[w], f);
        put(&sh.gift_phys[w], step(k::frame_get_address(f), "a gift frame's address")?);
        let gn = step(ROOT.retype(ObjectType::Notification, 0), "a gift notification")?;
        let gnb = step(ROOT.slot(), "slot")?;
        step(k::cnode_mint(slot::CNODE, gnb, gn, rw, BADGE_GIFT_NTFN | w as u64), "the gift notification")?;
        put(&sh.gift_ntfn[w], gnb);
        let ge = step(ROOT.slot(), "slot")?;
        step(k::cnode_mint(slot::CNODE, ge, eps[w % EPS], rights::WRITE, BADGE_GIFT_EP | w as u64), "gift ep")?;
        put(&sh.gift_ep[w], ge);
        put(&sh.receive_slot[w], step(ROOT.slot(), "slot")?);
    }

    // The second address space: this program again, at the same addresses (so the workers'
    // entry point, stacks and the shared page are where they are here).
    let Ok(elf) = ElfImage::parse(image) else { return Err("the root task's ELF") };
    let start = _start as *const () as u64;
    let layout = Layout {
        bias: if elf.is_position_independent() { start.wrapping_sub(elf.entry(0)) } else { 0 },
        stack_top: ozone_abi::ROOT_STACK_TOP,
        stack_size: 0x1000,
        ipc_buffer: B_IPC_BUFFER,
        heap_base: 0,
        heap_size: 0,
        info_page: 0,
    };
    let p = process::build(&ROOT, &ROOT, slot::VSPACE, slot::TCB, image, layout, 1, WORKER_PRIOS[0], 0, &[]).map_err(
        |e| {
            println!("[ipcdiff] cannot build the second address space: {e:?}");
            "the second address space"
        },
    )?;
    step(ROOT.map_frame_with_tables(sh_frame_b, p.vspace, SHARED_VA, rw, false), "map the shared page")?;
    let mut seats = [Seat::default(); WORKERS];
    for (w, seat) in seats.iter_mut().enumerate() {
        let (vspace, buffer) = if w < WORKERS_A {
            (slot::VSPACE, A_WORKER_BUFFERS + 0x1000 * w as u64)
        } else {
            (p.vspace, B_WORKER_BUFFERS + 0x1000 * (w - WORKERS_A) as u64)
        };
        let tcb = step(ROOT.retype(ObjectType::Tcb, 0), "a worker")?;
        let frame = step(ROOT.retype(ObjectType::Frame4K, 0), "a buffer")?;
        step(ROOT.map_frame_with_tables(frame, vspace, buffer, rw, false), "map a buffer")?;
        let (fault, bound, stack, prio) = (faults[w], bound_ntfn[w], STACKS.next_top(), WORKER_PRIOS[w]);
        *seat = Seat { tcb, fault, vspace, buffer, frame, bound, stack, prio };
        put(&sh.hash[w], fold(0, w as u64));
        seat.start(w, false)?;
    }
    Ok(Controller { rng: Rng(0), hash: 0, seats, eps: ctrl, signal, bound })
}

/// `seed=` and `steps=` from the initrd's `ipcdiff.args`.
fn parameters(initrd: &Initrd<'_>, instance: u64) -> (u64, u64) {
    let mut seed = instance ^ 0x1dc0_d1ff_0000_0001;
    let mut steps = DEFAULT_STEPS;
    let text = initrd.file("ipcdiff.args").and_then(|b| core::str::from_utf8(b).ok()).unwrap_or("");
    for line in text.split(|c: char| c == '\n' || c.is_whitespace()) {
        let Some((key, value)) = line.split_once('=') else { continue };
        let v = match value.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => value.parse().ok(),
        };
        match (key, v) {
            ("seed", Some(v)) => seed = v,
            ("steps", Some(v)) => steps = v,
            _ => {}
        }
    }
    (seed, steps)
}

fn fail(why: &str) -> u64 {
    let sh = shared();
    for w in 0..WORKERS {
        println!(
            "[ipcdiff] worker {w}: doing={:#x} owes={} ops={}",
            get(&sh.doing[w]),
            get(&sh.owes[w]),
            get(&sh.count[w])
        );
    }
    println!("[ipcdiff] FAIL: {why}");
    1
}

fn run() -> u64 {
    let Some(info) = root::boot_info() else { return fail("no boot information") };
    if ROOT.init(info).is_err() {
        println!("[ipcdiff] FAIL: setup");
        return 1;
    }
    // SAFETY: the kernel maps the initrd read-only at `initrd_vaddr` for `initrd_size` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(info.initrd_vaddr as *const u8, info.initrd_size as usize) };
    let Ok(initrd) = Initrd::new(bytes) else { return fail("bad initrd") };
    let Some(image) = initrd.file("root-task") else { return fail("no root-task in the initrd") };
    let (seed, steps) = parameters(&initrd, info.instance_id);
    println!(
        "[ipcdiff] seed={seed:#018x} steps={steps} workers={WORKERS} ({WORKERS_A} in each of 2 address spaces) endpoints={EPS}"
    );
    let mut c = match setup(image) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    c.rng = Rng(seed | 1);
    for _ in 0..8 {
        c.rng.next();
    }
    // From now on the controller runs only when every worker is blocked.
    if let Err(e) = step(k::tcb_set_priority(slot::TCB, slot::TCB, CONTROLLER_PRIO), "the controller's priority") {
        return fail(e);
    }
    let sh = shared();
    for s in 0..steps {
        put(&sh.step, s);
        if s % SHUFFLE_EVERY == SHUFFLE_EVERY - 1
            && let Err(e) = c.shuffle()
        {
            return fail(e);
        }
        if s % REFRESH_EVERY == REFRESH_EVERY - 1
            && let Err(e) = c.refresh()
        {
            return fail(e);
        }
        if let Err(e) = c.step() {
            println!("[ipcdiff] at step {s}");
            return fail(e);
        }
    }
    put(&sh.step, steps);
    if let Err(e) = c.settle() {
        return fail(e);
    }
    report(&c, steps)
}

/// The transcript: per worker, the controller, coverage; then the verdict.
fn report(c: &Controller, steps: u64) -> u64 {
    let sh = shared();
    let mut total = fold(0, c.hash);
    let mut ops = 0;
    for w in 0..WORKERS {
        let (h, n) = (get(&sh.hash[w]), get(&sh.count[w]));
        let space = if w < WORKERS_A { 'A' } else { 'B' };
        println!("[ipcdiff] worker {w} space={space} ops={n} hash={h:#018x}");
        total = fold(fold(total, h), n);
        ops += n;
    }
    println!("[ipcdiff] controller hash={:#018x}", c.hash);
    let mut missing = None;
    for (kind, name) in op::NAMES.iter().enumerate() {
        let (made, ok) = (get(&sh.coverage[kind][0]), get(&sh.coverage[kind][1]));
        println!("[ipcdiff] coverage {name} made={made} ok={ok}");
        if made == 0 || ok == 0 {
            missing = Some(*name);
        }
    }
    for (i, name) in stat::NAMES.iter().enumerate() {
        let n = get(&sh.stats[i]);
        println!("[ipcdiff] coverage {name}={n}");
        if n == 0 {
            missing = Some(*name);
        }
    }
    println!("[ipcdiff] transcript steps={steps} ipc_ops={ops} hash={total:#018x}");
    if let Some(name) = missing {
        println!("[ipcdiff] FAIL: coverage: no successful {name}");
        return 1;
    }
    println!("[ipcdiff] PASS");
    0
}
