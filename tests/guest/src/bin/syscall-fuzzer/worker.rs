//! A fuzzing worker: a thread making seeded random syscalls from a CSpace that reaches nothing
//! but the playground CNode P (through two small CNodes it cannot name: see `shared`). It runs
//! the same code in either address space and shares nothing with the others but P and the
//! shared page.
//!
//! Each step is one syscall, of one of three sorts:
//!
//! * a **structured invocation** (60%): one of the [`INVOCATIONS`] picked uniformly, aimed at a
//!   slot that (by the shared slot cache) holds an object of its type, with arguments that are
//!   mostly valid — slots of the right kind, addresses in a few small regions so paging
//!   structures meet, the victims' entry point and IPC buffers — and sometimes garbage;
//! * an **IPC syscall** (30%) on the endpoints and notifications (victims block on them):
//!   messages up to the maximum length and with up to three capabilities, receive slots in P,
//!   replies to the victims' faults;
//! * a **raw syscall** (10%): random number (unknown ones included), capability pointer, label,
//!   length, message words and IPC-buffer fields;
//!
//! or, rarely, a **repair** (a dozen syscalls): the victims' address space mapped again where
//! it was unmapped, and two victims (made again if they were deleted) put back in their loop.
//! A worker yields every few steps so the victims run in between.
//!
//! Any syscall may block (a Recv nobody sends to, a Call nobody answers): the controller takes
//! a worker out of a syscall that blocks for too long (it returns [`RESCUED`]).
//!
//! **Counting.** Every syscall is counted by number; an invocation under the object type the
//! slot cache says its capability holds, and as a success only then (a success on a slot of
//! unknown type counts as a call of what was aimed at). The cache is the workers' record of P:
//! what their own successful calls made, copied, moved or emptied, and what a success proves
//! (only a CNode accepts CNode labels, ...). For it to stay true:
//!
//! * it is given a type only under a lock held around the syscall that made it so, and a
//!   syscall made without the lock (IPC, raw) first marks every slot it may fill unknown;
//! * the victims, whom no worker watches, may never make Untyped or CNode invocations (their
//!   syscall profile denies them, and raw syscalls never set profiles), and their receive slots
//!   never get a type;
//! * what the workers name P is always P (they cannot reach its self-capability's slot).
//!
//! What a Revoke empties (everything made from an untyped, say) keeps its type in the cache;
//! only a tracked or marked syscall can fill it again, so no success is ever counted under a
//! type its object does not have (PML4 Map, which always fails, shows none).
//!
//! **The victims' address space** is what the victims need to run at all, so the fuzzer leaves
//! its PML4, tables and code frame alone most of the time (3% of the calls aimed at them go
//! through) and does not send them in messages (deleting a copy of a mapped table unmaps it).
//! The victims' profiles always allow Yield: a victim that could not yield, looping on a Call
//! the server answers at once, would keep the CPU for whole timeslices.

use core::sync::atomic::Ordering;

use ozone_abi::object::ObjectType;
use ozone_abi::{IpcBuffer, MessageInfo, Syscall, USER_TOP, invocation as inv, profile, rights};
use ozone_agent_sdk::sys;
use ozone_guest_tests::Rng;

use crate::shared::*;

/// Labels the server's broker understands (from the fuzzer's badge).
pub const BROKER_IRQ: u64 = 0xb1;
pub const BROKER_IOPORT: u64 = 0xb2;
/// MR1 of the broker's replies (MR0 is the invocation's error code), so that a reply from
/// anyone else is not taken for one.
pub const BROKER_OK: u64 = 0xb0_c3ed;
/// MR3 of a `BROKER_IRQ` request that asks for GetMsi instead of Get.
pub const BROKER_MSI: u64 = 0x3351;

/// What a syscall returned.
pub struct Out {
    pub rax: u64,
    pub badge: u64,
    pub info: u64,
    pub mrs: [u64; 4],
    /// An object was invoked and the method succeeded: no error, an empty-labelled reply, and
    /// `rdi` still the capability pointer. (`rax` 0 alone proves nothing: a Call on a
    /// notification is a signal and returns 0 whatever its label, leaving the label in `rsi`;
    /// one on an endpoint returns whatever reply came, with `rdi` the reply's badge, 0.)
    pub invoked: bool,
}

/// The one place workers make their fuzzing syscalls (the controller recognises a worker blocked
/// here by its RIP: inside this function, at a `syscall` instruction).
#[inline(never)]
pub fn fz_syscall(number: i64, cptr: u64, info: u64, mrs: &[u64; 4]) -> Out {
    #[cfg(target_os = "none")]
    {
        let (rax, rdi, rsi, r10, r8, r9, r15): (u64, u64, u64, u64, u64, u64, u64);
        // SAFETY: a raw syscall: the kernel validates every argument and changes only the
        // registers named here (rcx and r11 are clobbered by `syscall`).
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
        Out { rax, badge: rdi, info: rsi, mrs: [r10, r8, r9, r15], invoked: false }
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (number, cptr, info, mrs);
        Out { rax: ozone_abi::Error::UnknownSyscall as u64, badge: 0, info: 0, mrs: [0; 4], invoked: false }
    }
}

/// The victims' (and workers') priority, and their MCP.
pub const VICTIM_PRIO: u64 = 100;

/// A worker gives the CPU away after this many steps.
const YIELD_EVERY: u64 = 8;

/// How far past [`fz_syscall`]'s address its `syscall` instruction may be.
pub const FZ_SYSCALL_SPAN: u64 = 256;

/// The thread: `arg` is the worker's index in its low bits and its IPC buffer's address (page
/// aligned) above. It runs one epoch after another as the controller opens them.
pub extern "C" fn worker(arg: u64) -> ! {
    let idx = (arg & 0xff) as usize % WORKERS;
    let buf = (arg & !0xfff) as *mut IpcBuffer;
    // SAFETY: the root task mapped this thread's IPC buffer at that address, writable.
    unsafe { (*buf).user_data = buf as u64 };
    let sh = shared();
    let mut epoch = 0;
    loop {
        let go = loop {
            let g = sh.go.load(Ordering::SeqCst);
            if g != epoch {
                break g;
            }
            sys::yield_now();
        };
        if go == STOP {
            sys::thread_exit(0);
        }
        epoch = go;
        let seed = sh.seed.load(Ordering::Relaxed)
            ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (idx as u64 + 1).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        let mut w = Worker { idx, rng: Rng(seed | 1), buf, sh, fault: false, exact: false, locked: false };
        // Scramble a little: xorshift seeds that differ in few bits start alike.
        for _ in 0..8 {
            w.rng.next();
        }
        let end = sh.progress[idx].load(Ordering::SeqCst) + sh.quota.load(Ordering::SeqCst);
        let mut steps = 0u64;
        while sh.progress[idx].load(Ordering::SeqCst) < end {
            w.step();
            // Let the victims (and the other workers) run between a few steps, not only when a
            // timeslice ends: they are what the steps act on. (Not a fuzzing syscall.)
            steps += 1;
            if steps.is_multiple_of(YIELD_EVERY) {
                sys::yield_now();
            }
        }
        sh.done[idx].store(epoch, Ordering::SeqCst);
    }
}

/// Arguments of one invocation.
struct Args {
    mrs: [u64; 20],
    len: usize,
    caps: [u64; 3],
    ncaps: usize,
}

impl Args {
    fn new(words: &[u64], caps: &[u64]) -> Args {
        let mut a = Args { mrs: [0; 20], len: words.len(), caps: [0; 3], ncaps: caps.len() };
        a.mrs[..words.len()].copy_from_slice(words);
        a.caps[..caps.len()].copy_from_slice(caps);
        a
    }
}

/// Kinds of slot an argument may name.
const IPC_KINDS: [Kind; 2] = [Kind::Endpoint, Kind::Notification];
/// Objects whose deletion other threads may be blocked on or running in.
const LIVE_KINDS: [Kind; 10] = [
    Kind::Tcb,
    Kind::Endpoint,
    Kind::Notification,
    Kind::Frame4K,
    Kind::Frame2M,
    Kind::Pml4,
    Kind::Pdpt,
    Kind::Pd,
    Kind::Pt,
    Kind::CNode,
];

/// Every label, for raw syscalls.
const ALL_LABELS: [u64; 46] = [
    0,
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
    inv::TCB_SET_FAULT_HANDLER,
    inv::TCB_ARM_PROFILE,
    inv::PAGING_MAP,
    inv::PAGING_UNMAP,
    inv::FRAME_MAP,
    inv::FRAME_UNMAP,
    inv::FRAME_GET_ADDRESS,
    inv::IRQ_CONTROL_GET,
    inv::IRQ_HANDLER_ACK,
    inv::IRQ_HANDLER_SET_NOTIFICATION,
    inv::IRQ_HANDLER_CLEAR,
    inv::IO_PORT_CONTROL_ISSUE,
    inv::IO_PORT_IN8,
    inv::IO_PORT_IN16,
    inv::IO_PORT_IN32,
    inv::IO_PORT_OUT8,
    inv::IO_PORT_OUT16,
    inv::IO_PORT_OUT32,
    inv::TELEMETRY_READ,
    9,
    64,
    9999,
];

/// Syscall numbers the kernel does not know (plus random ones).
const UNKNOWN_SYSCALLS: [i64; 11] = [0, 1, 2, -10, -11, -63, -66, 64, 12345, i64::MIN, i64::MAX];

/// The type a successful invocation of `label` proves its capability has, where only one type
/// has that label (paging structures share theirs across levels, frames across sizes).
fn proven_kind(label: u64) -> Option<Kind> {
    Some(match label {
        inv::UNTYPED_RETYPE | inv::UNTYPED_GET_INFO => Kind::Untyped,
        inv::CNODE_COPY..=inv::CNODE_CANCEL_BADGED_SENDS => Kind::CNode,
        inv::TCB_CONFIGURE..=inv::TCB_SET_FAULT_HANDLER => Kind::Tcb,
        inv::IRQ_HANDLER_ACK..=inv::IRQ_HANDLER_CLEAR => Kind::IrqHandler,
        inv::IO_PORT_IN8..=inv::IO_PORT_OUT32 => Kind::IoPort,
        inv::TELEMETRY_READ => Kind::Telemetry,
        _ => return None,
    })
}

/// The victims' address space: its paging structures and code frame, which the fuzzer unmaps or
/// deletes only now and then (without them the victims can only fault).
const VICTIM_SPACE: [u64; 5] = [S_VSPACE, S_VPDPT, S_VPD, S_VPT, S_VCODE];

/// What the profile the fuzzer gives a thread never allows: Untyped and CNode invocations (a
/// victim that rearranged P behind the workers' backs would make their slot cache, and so the
/// coverage, wrong).
pub const VICTIM_DENIED: u64 = profile::mask(profile::UNTYPED) | profile::mask(profile::CNODE);
/// What it always allows: Yield. A victim whose Yield is denied and whose IPC never blocks for
/// long (a Call to the server, which answers at once) keeps the CPU for whole timeslices, and
/// the workers, at the same priority, get a few steps in between: the run crawls.
pub const VICTIM_ALLOWED: u64 = profile::mask(profile::YIELD);

/// IPC syscalls that can block.
fn blocks(n: i64) -> bool {
    n == Syscall::Call as i64
        || n == Syscall::Send as i64
        || n == Syscall::Recv as i64
        || n == Syscall::ReplyRecv as i64
}

/// A random message info for a victim's loop.
pub fn victim_info(rng: &mut Rng) -> u64 {
    let label = if rng.below(4) == 0 { rng.next() >> 12 } else { rng.below(8) };
    let len = match rng.below(10) {
        0..=3 => rng.below(5),
        4..=6 => rng.below(121),
        7 | 8 => 120,
        _ => rng.below(128),
    };
    MessageInfo::new(label, rng.below(8), rng.below(4), len).0
}

/// A random syscall number for a victim's loop: mostly blocking IPC.
pub fn victim_syscall(rng: &mut Rng) -> i64 {
    match rng.below(100) {
        0..=21 => Syscall::Call as i64,
        22..=24 => Syscall::CallInterruptible as i64,
        25..=44 => Syscall::Recv as i64,
        45..=59 => Syscall::ReplyRecv as i64,
        60..=74 => Syscall::Send as i64,
        75..=79 => Syscall::NbSend as i64,
        80..=84 => Syscall::NbRecv as i64,
        85..=87 => Syscall::Reply as i64,
        88..=89 => Syscall::Yield as i64,
        90..=92 => Syscall::ThreadExit as i64,
        _ => UNKNOWN_SYSCALLS[rng.below(UNKNOWN_SYSCALLS.len() as u64) as usize],
    }
}

/// A random capability for a victim's loop: mostly endpoints and notifications of P.
pub fn victim_target(rng: &mut Rng) -> u64 {
    match rng.below(20) {
        0..=3 => S_EP[rng.below(2) as usize],
        4..=6 => S_EP_BADGED[rng.below(2) as usize],
        7..=9 => S_FAULT,
        10..=14 => S_NTFN + rng.below(N_NTFN),
        15 | 16 => S_SERVER,
        _ => FIRST_SCRATCH + rng.below(P_SLOTS as u64 - FIRST_SCRATCH),
    }
}

/// The victim buffer address of victim `i` (four 1 KiB buffers per page).
pub fn victim_buffer(i: u64) -> u64 {
    VBUF_VA + (i / 4) * 0x1000 + (i % 4) * 1024
}

struct Worker {
    idx: usize,
    rng: Rng,
    buf: *mut IpcBuffer,
    sh: &'static Shared,
    /// The last message received may have been a victim's fault (a Reply answers it).
    fault: bool,
    /// Invocations go exactly as built (no garbage length, capability count or syscall).
    exact: bool,
    /// This worker holds the cache lock.
    locked: bool,
}

impl Worker {
    fn buf(&mut self) -> &mut IpcBuffer {
        // SAFETY: this thread's IPC buffer, mapped writable; only this thread uses it.
        unsafe { &mut *self.buf }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng.below(100) < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    /// A value that is often interesting: small, a slot index, a boundary, or anything.
    fn word(&mut self) -> u64 {
        match self.below(8) {
            0 => self.below(16),
            1 => self.below(P_SLOTS as u64),
            2 => [0, 1, 63, 64, 65, 255, 256, 4096, u64::MAX, 1 << 63, USER_TOP, USER_TOP - 0x1000]
                [self.below(12) as usize],
            3 => VCODE_VA + (self.below(8) << 10),
            4 => self.below(64),
            _ => self.rng.next(),
        }
    }

    /// A capability pointer for a raw syscall: mostly a slot of P, sometimes P, sometimes
    /// anything.
    fn raw_cptr(&mut self) -> u64 {
        match self.below(10) {
            0..=6 => {
                let w = self.word();
                w_slot(w & (P_SLOTS as u64 - 1))
            }
            7 => W_P,
            _ => self.word(),
        }
    }

    /// How this worker names slot `slot` of P (P itself for [`S_CN`]); anything else, a
    /// garbage capability pointer, as it is.
    fn cptr(&self, slot: u64) -> u64 {
        match slot {
            S_CN => W_P,
            s if s < P_SLOTS as u64 => w_slot(s),
            s => s,
        }
    }

    /// The slot of P a capability pointer of this worker names directly, if any.
    fn slot_named(&self, cptr: u64) -> Option<u64> {
        match cptr {
            W_P => Some(S_CN),
            c if c >> P_RADIX == 1 => Some(c & (P_SLOTS as u64 - 1)),
            _ => None,
        }
    }

    /// Slots `first..first + count` (up to 8) of P may hold anything now.
    fn forget(&self, first: u64, count: u64) {
        for s in first..first.saturating_add(count.min(8)) {
            if s < P_SLOTS as u64 {
                self.sh.set_kind(s, Kind::Unknown);
            }
        }
    }

    /// Whether capability pointer `cptr` may name P (or a copy of it, as far as the cache knows).
    fn may_be_cnode(&self, cptr: u64) -> bool {
        match self.slot_named(cptr) {
            Some(S_CN) => true,
            Some(s) => matches!(self.sh.kind(s), Kind::CNode | Kind::Unknown),
            None => false,
        }
    }

    /// `slot`, or mostly another one if it holds part of the victims' address space: a copy
    /// sent in a message would unmap its table when the receiver deletes it.
    fn not_victim_space(&mut self, slot: u64) -> u64 {
        if VICTIM_SPACE.contains(&slot) && self.chance(97) { self.occupied(true) } else { slot }
    }

    /// A slot the cache says holds `kind`.
    fn slot_of(&mut self, kind: Kind) -> Option<u64> {
        for _ in 0..12 {
            let s = self.below(P_SLOTS as u64);
            if self.sh.kind(s) == kind {
                return Some(s);
            }
        }
        let start = self.below(P_SLOTS as u64);
        (0..P_SLOTS as u64).map(|i| (start + i) % P_SLOTS as u64).find(|&s| self.sh.kind(s) == kind)
    }

    /// A capability pointer for an argument of `kind`: mostly a slot holding one.
    fn pick(&mut self, kind: Kind) -> u64 {
        match self.below(100) {
            0..=87 => match self.slot_of(kind) {
                Some(s) => s,
                None => self.below(P_SLOTS as u64),
            },
            88..=96 => self.below(P_SLOTS as u64),
            _ => self.word(),
        }
    }

    /// As [`Self::pick`], but not a slot of the victims' address space.
    fn pick_outside_victim_space(&mut self, kind: Kind) -> u64 {
        for _ in 0..8 {
            let s = self.pick(kind);
            if !VICTIM_SPACE.contains(&s) {
                return s;
            }
        }
        self.occupied(true)
    }

    fn pick_any(&mut self, kinds: &[Kind]) -> u64 {
        let k = kinds[self.below(kinds.len() as u64) as usize];
        self.pick(k)
    }

    /// A slot that holds something (any kind), as far as the cache knows.
    fn occupied(&mut self, scratch_only: bool) -> u64 {
        let lo = if scratch_only { FIRST_SCRATCH } else { 1 };
        for _ in 0..24 {
            let s = lo + self.below(P_SLOTS as u64 - lo);
            if self.sh.kind(s) != Kind::Empty {
                return s;
            }
        }
        lo + self.below(P_SLOTS as u64 - lo)
    }

    /// An empty scratch slot, as far as the cache knows (never a victim's receive slot: what
    /// the victims receive there the workers do not see).
    fn empty_slot(&mut self) -> u64 {
        for _ in 0..24 {
            let s = FIRST_SCRATCH + self.below(VICTIM_RECEIVE - FIRST_SCRATCH);
            if self.sh.kind(s) == Kind::Empty {
                return s;
            }
        }
        FIRST_SCRATCH + self.below(VICTIM_RECEIVE - FIRST_SCRATCH)
    }

    /// The CNode to invoke or to name as a root: mostly P itself.
    fn cnode(&mut self) -> u64 {
        match self.below(100) {
            0..=87 => S_CN,
            88..=97 => self.pick(Kind::CNode),
            _ => self.word(),
        }
    }

    /// `(index, depth)` of `slot` below the root `root`: P's slots at depth 64, a sub-CNode's
    /// at its radix; sometimes garbage.
    fn slot_in(&mut self, root: u64, slot: u64) -> (u64, u64) {
        if self.chance(6) {
            return (self.word(), self.below(70));
        }
        if root == S_CN { (slot, 64) } else { (self.below(1 << SUBCN_RADIX), SUBCN_RADIX) }
    }

    /// A virtual address for mapping an object of `kind`: mostly in a few small regions, so that
    /// paging structures and frames meet; sometimes in the victims' space, sometimes anything.
    fn vaddr(&mut self, kind: Kind) -> u64 {
        match self.below(100) {
            0..=79 => {
                let base = FUZZ_REGION + (self.below(4) << 39);
                let pdpt = self.below(2) << 30;
                let pd = self.below(4) << 21;
                let pt = self.below(8) << 12;
                match kind {
                    Kind::Pdpt | Kind::Pml4 => base,
                    Kind::Pd => base + pdpt,
                    Kind::Pt | Kind::Frame2M => base + pdpt + pd,
                    _ => base + pdpt + pd + pt,
                }
            }
            // In the victims' address space, beside their code and buffers (which only the
            // repair step maps): in their page table, or (for a page table or a 2 MiB frame) in
            // another entry of their page directory.
            80..=89 => match kind {
                Kind::Pt | Kind::Frame2M => VCODE_VA + ((1 + self.below(8)) << 21),
                _ => VCODE_VA + ((3 + self.below(13)) << 12),
            },
            _ => self.word() & !0xfff,
        }
    }

    /// Count an invocation of `label` on `target`, aimed at an object of `aim`: under the type
    /// the slot cache says `target` holds when that type has the label, else as a call aimed at
    /// `aim` that cannot count as a success of it (the target was not known to be one).
    fn count(&self, aim: Kind, target: u64, label: u64, ok: bool) -> bool {
        if ok
            && self.locked
            && target < P_SLOTS as u64
            && let Some(k) = proven_kind(label)
        {
            self.sh.set_kind(target, k);
        }
        let held = if target < P_SLOTS as u64 { self.sh.kind(target) } else { Kind::Unknown };
        if inv_index(held, label).is_some() {
            self.sh.count_inv(held, label, ok);
            ok
        } else {
            self.sh.count_inv(aim, label, false);
            false
        }
    }

    /// One syscall, counted.
    fn sys(&mut self, number: i64, cptr: u64, info: u64, mrs: [u64; 4]) -> Out {
        let sh = self.sh;
        let i = self.idx;
        for (slot, v) in sh.last[i].iter().zip([number as u64, cptr, info, mrs[0]]) {
            slot.store(v, Ordering::Relaxed);
        }
        sh.blocking[i].store(1, Ordering::SeqCst);
        let mut out = fz_syscall(number, cptr, info, &mrs);
        out.invoked = out.rax == 0 && MessageInfo(out.info).label() == 0 && out.badge == cptr;
        sh.blocking[i].store(0, Ordering::SeqCst);
        sh.progress[i].fetch_add(1, Ordering::SeqCst);
        let s = sys_index(number);
        sh.sys[s][0].fetch_add(1, Ordering::Relaxed);
        if out.rax == 0 {
            sh.sys[s][1].fetch_add(1, Ordering::Relaxed);
        }
        out
    }

    fn step(&mut self) {
        match self.below(1000) {
            0..=592 => self.with_lock(Self::invocation),
            593..=891 => self.ipc(),
            892..=991 => self.raw(),
            _ => self.with_lock(Self::repair),
        }
    }

    /// Run `f` holding the cache lock. The slot cache is written with a type (or emptied) only
    /// under it, after the syscall that made it so; a syscall made without it (IPC and raw
    /// syscalls) first marks every slot it may fill unknown. So another worker preempted
    /// between its syscall and its update never leaves a type on a slot that holds something
    /// else. (A worker blocked while holding it is taken out of its syscall by the controller.)
    fn with_lock(&mut self, f: fn(&mut Self)) {
        while self.sh.lock.swap(true, Ordering::Acquire) {
            sys::yield_now();
        }
        self.locked = true;
        f(self);
        self.locked = false;
        self.sh.lock.store(false, Ordering::Release);
    }

    /// Now and then: map the victims' address space again where it was unmapped, and restart a
    /// victim in its loop (a dozen syscalls, each counted like any other).
    fn repair(&mut self) {
        self.exact = true;
        self.repair_steps();
        self.exact = false;
    }

    fn repair_steps(&mut self) {
        // What is gone is made again from the fuzzer's untyped (the code frame cannot be).
        for (slot, ty) in [
            (S_VSPACE, ObjectType::Pml4),
            (S_VPDPT, ObjectType::Pdpt),
            (S_VPD, ObjectType::PageDirectory),
            (S_VPT, ObjectType::PageTable),
        ] {
            if self.sh.kind(slot) == Kind::Empty || self.chance(5) {
                self.remake(ty, slot);
            }
        }
        // Tables that are not mapped are mapped again, top down (one that is stays as it is).
        let tables = [(S_VPDPT, Kind::Pdpt), (S_VPD, Kind::Pd), (S_VPT, Kind::Pt)];
        for (slot, kind) in tables {
            self.invoke_counted(kind, slot, inv::PAGING_MAP, Args::new(&[VCODE_VA], &[S_VSPACE]));
        }
        let rw = rights::READ | rights::WRITE;
        for (slot, va, r, x) in [
            (S_VCODE, VCODE_VA, rights::READ, inv::MAP_EXECUTABLE),
            (S_VBUF, VBUF_VA, rw, 0),
            (S_VBUF + 1, VBUF_VA + 0x1000, rw, 0),
        ] {
            // Mapped (somewhere, perhaps in a table since emptied): unmapped and mapped again.
            let map = Args::new(&[va, r, x], &[S_VSPACE]);
            let out = self.invoke(slot, inv::FRAME_MAP, &map);
            self.count(Kind::Frame4K, slot, inv::FRAME_MAP, out.invoked);
            if out.rax == ozone_abi::Error::DeleteFirst as u64 {
                self.invoke_counted(Kind::Frame4K, slot, inv::FRAME_UNMAP, Args::new(&[], &[]));
                self.invoke_counted(Kind::Frame4K, slot, inv::FRAME_MAP, map);
            }
        }
        // Two victims back in their loop: made again if they were deleted.
        for _ in 0..2 {
            let i = self.below(VICTIMS);
            let v = S_VICTIMS + i;
            if self.sh.kind(v) == Kind::Empty {
                self.remake(ObjectType::Tcb, v);
                let a = Args::new(&[0, 0, victim_buffer(i)], &[S_CN, S_VSPACE, S_VBUF + i / 4]);
                self.invoke_counted(Kind::Tcb, v, inv::TCB_CONFIGURE, a);
                let a = Args::new(&[profile::IPC], &[]);
                self.invoke_counted(Kind::Tcb, v, inv::TCB_SET_PROFILE, a);
            } else {
                let a = Args::new(&[0], &[S_CN, S_VSPACE]);
                self.invoke_counted(Kind::Tcb, v, inv::TCB_SET_SPACE, a);
            }
            self.invoke_counted(Kind::Tcb, v, inv::TCB_SET_FAULT_HANDLER, Args::new(&[], &[S_FAULT]));
            self.invoke_counted(Kind::Tcb, v, inv::TCB_SET_PRIORITY, Args::new(&[VICTIM_PRIO], &[S_AUTH]));
            let mut a = self.write_registers();
            a.mrs[0] = 1;
            a.mrs[1] = 18;
            a.mrs[2] = VCODE_VA;
            self.invoke_counted(Kind::Tcb, v, inv::TCB_WRITE_REGISTERS, a);
        }
    }

    /// Retype one object of type `ty` from the main untyped into slot `slot` of P, counted.
    fn remake(&mut self, ty: ObjectType, slot: u64) {
        let out = self.invoke(S_UT, inv::UNTYPED_RETYPE, &Args::new(&[ty as u64, 0, 0, 0, slot, 1], &[S_CN]));
        let ok = out.invoked;
        self.sh.retype[ty as usize][0].fetch_add(1, Ordering::Relaxed);
        if self.count(Kind::Untyped, S_UT, inv::UNTYPED_RETYPE, ok) {
            self.sh.retype[ty as usize][1].fetch_add(1, Ordering::Relaxed);
        }
        if ok {
            self.sh.set_kind(slot, Kind::of_type(ty));
        }
    }

    /// Invoke slot `cptr` of P with `label` and `a` (capability arguments are slots of P too),
    /// mostly with Call (a Send or NBSend of an invocation discards the results).
    fn invoke(&mut self, cptr: u64, label: u64, a: &Args) -> Out {
        let mut len = a.len;
        if !self.exact && self.chance(3) {
            len = self.below(128) as usize;
        }
        let extra = if self.exact || self.chance(97) { a.ncaps } else { self.below(4) as usize };
        let caps = [self.cptr(a.caps[0]), self.cptr(a.caps[1]), self.cptr(a.caps[2])];
        let cptr = self.cptr(cptr);
        let buf = self.buf();
        for i in 4..a.len.max(4) {
            buf.msg[i] = a.mrs[i];
        }
        buf.caps_or_badges[..a.ncaps].copy_from_slice(&caps[..a.ncaps]);
        // No receive slot: should the capability turn out to be an endpoint after all, nothing
        // arrives in P unseen.
        buf.receive_cnode = 0;
        let info = MessageInfo::new(label, 0, extra as u64, len as u64).0;
        let number = match if self.exact { 0 } else { self.below(100) } {
            0..=93 => Syscall::Call as i64,
            94..=96 => Syscall::Send as i64,
            _ => Syscall::NbSend as i64,
        };
        let mrs = [a.mrs[0], a.mrs[1], a.mrs[2], a.mrs[3]];
        self.sys(number, cptr, info, mrs)
    }

    fn invoke_counted(&mut self, aim: Kind, target: u64, label: u64, a: Args) {
        let out = self.invoke(target, label, &a);
        self.count(aim, target, label, out.invoked);
    }

    /// A capability for a victim's loop (see [`victim_target`]), never one the cache says is an
    /// untyped or a CNode.
    fn victim_target(&mut self) -> u64 {
        for _ in 0..4 {
            let t = victim_target(&mut self.rng);
            if !matches!(self.sh.kind(t), Kind::Untyped | Kind::CNode) {
                return t;
            }
        }
        S_EP[0]
    }

    /// Message register `i` of what the last syscall returned.
    fn reply_word(&mut self, out: &Out, i: usize) -> u64 {
        if i < 4 { out.mrs[i] } else { self.buf().msg[i] }
    }

    /// One invocation from the table, with arguments for it.
    fn invocation(&mut self) {
        let e = &INVOCATIONS[self.below(N_INV as u64) as usize];
        match e.kind {
            Kind::IrqControl if e.label == inv::IRQ_CONTROL_GET_MSI => return self.broker_msi(),
            Kind::IrqControl => return self.broker_irq(),
            Kind::IoPortControl => return self.broker_ioport(),
            _ => {}
        }
        let mut target = self.pick(e.kind);
        let label = e.label;
        let a = match label {
            inv::UNTYPED_RETYPE => return self.retype(target),
            inv::CNODE_COPY | inv::CNODE_MINT | inv::CNODE_MOVE | inv::CNODE_MUTATE => {
                return self.cnode_copy(label);
            }
            inv::CNODE_DELETE | inv::CNODE_REVOKE | inv::CNODE_CANCEL_BADGED_SENDS => {
                return self.cnode_delete(label);
            }
            inv::TCB_CONFIGURE => {
                let reserved = self.reserved();
                let vaddr = self.buffer_vaddr();
                let (cs, vs, f) = (self.cspace(), self.thread_vspace(), self.buffer_frame());
                Args::new(&[reserved, 0, vaddr], &[cs, vs, f])
            }
            inv::TCB_SET_SPACE => {
                let reserved = self.reserved();
                let (cs, vs) = (self.cspace(), self.thread_vspace());
                Args::new(&[reserved], &[cs, vs])
            }
            inv::TCB_SET_FAULT_HANDLER => match self.fault_handler() {
                Some(ep) => Args::new(&[], &[ep]),
                None => Args::new(&[], &[]),
            },
            inv::TCB_SET_IPC_BUFFER => {
                let vaddr = self.buffer_vaddr();
                let f = self.buffer_frame();
                Args::new(&[vaddr], &[f])
            }
            inv::TCB_SET_PRIORITY | inv::TCB_SET_MC_PRIORITY => {
                // Mostly the workers' priority: a victim below it runs only when every worker
                // is blocked.
                let prio = match self.below(20) {
                    0..=11 => VICTIM_PRIO,
                    12..=16 => self.below(VICTIM_PRIO + 1),
                    17 | 18 => VICTIM_PRIO + 1 + self.below(155),
                    _ => self.word(),
                };
                let auth = if self.chance(60) { S_AUTH } else { self.pick(Kind::Tcb) };
                Args::new(&[prio], &[auth])
            }
            inv::TCB_READ_REGISTERS => {
                let count = if self.chance(85) { 18 } else { self.below(20) };
                Args::new(&[self.below(2), count], &[])
            }
            inv::TCB_WRITE_REGISTERS => self.write_registers(),
            inv::TCB_BIND_NOTIFICATION | inv::IRQ_HANDLER_SET_NOTIFICATION => {
                let n = self.pick(Kind::Notification);
                Args::new(&[], &[n])
            }
            inv::TCB_SET_TLS_BASE => {
                let base = if self.chance(60) { victim_buffer(self.below(VICTIMS)) } else { self.word() };
                Args::new(&[base], &[])
            }
            inv::TCB_SET_PROFILE | inv::TCB_ARM_PROFILE => {
                let allowed = match self.below(10) {
                    0..=5 => profile::IPC,
                    6 | 7 => profile::IPC & !profile::mask(self.below(8) as u32),
                    8 => profile::ALL,
                    _ => self.rng.next(),
                };
                // A learning window: short ones end while the run goes on; sometimes the
                // longest the kernel takes, or one it refuses (u64::MAX).
                let learn = match self.below(8) {
                    0..=5 => self.below(64),
                    6 => u64::MAX - 1,
                    _ => u64::MAX,
                };
                Args::new(&[allowed & !VICTIM_DENIED | VICTIM_ALLOWED, learn], &[])
            }
            inv::PAGING_MAP => {
                let va = self.vaddr(e.kind);
                let vs = self.vspace();
                Args::new(&[va], &[vs])
            }
            inv::FRAME_MAP => {
                let va = self.vaddr(e.kind);
                let r = match self.below(10) {
                    0..=6 => rights::READ | rights::WRITE,
                    7 | 8 => rights::READ,
                    _ => self.word(),
                };
                let attrs = match self.below(20) {
                    0 | 1 => inv::MAP_EXECUTABLE,
                    2 => self.word(),
                    _ => 0,
                };
                let vs = self.vspace();
                Args::new(&[va, r, attrs], &[vs])
            }
            inv::IO_PORT_IN8 | inv::IO_PORT_IN16 | inv::IO_PORT_IN32 => {
                let port = self.port();
                Args::new(&[port], &[])
            }
            inv::IO_PORT_OUT8 | inv::IO_PORT_OUT16 | inv::IO_PORT_OUT32 => {
                let port = self.port();
                Args::new(&[port, self.rng.next()], &[])
            }
            inv::TELEMETRY_READ => {
                let t = self.pick(Kind::Tcb);
                Args::new(&[], &[t])
            }
            // Methods without arguments: GetInfo, Resume, Suspend, Unbind, GetProfile, Unmap,
            // GetAddress, Ack, Clear.
            _ => Args::new(&[], &[]),
        };
        if e.kind == Kind::Telemetry && self.chance(90) {
            target = S_TELEMETRY;
        }
        // The victims' tables and code are mapped and unmapped by the repair step; others only
        // now and then.
        let maps = matches!(label, inv::PAGING_MAP | inv::PAGING_UNMAP | inv::FRAME_MAP | inv::FRAME_UNMAP);
        if maps && VICTIM_SPACE.contains(&target) && self.chance(97) {
            target = self.pick_outside_victim_space(e.kind);
        }
        let out = self.invoke(target, label, &a);
        self.count(e.kind, target, label, out.invoked);
        self.learn_from(target, label, &a, &out);
    }

    /// What an invocation's result says about the invoked slot.
    fn learn_from(&mut self, target: u64, label: u64, a: &Args, out: &Out) {
        let no_args = matches!(
            label,
            inv::UNTYPED_GET_INFO | inv::FRAME_GET_ADDRESS | inv::TCB_GET_PROFILE | inv::IRQ_HANDLER_ACK
        );
        if target >= P_SLOTS as u64 {
            return;
        }
        if out.rax == ozone_abi::Error::InvalidCapability as u64 && a.ncaps == 0 {
            self.sh.set_kind(target, Kind::Empty);
        } else if out.rax == ozone_abi::Error::IllegalOperation as u64 && no_args {
            self.sh.set_kind(target, Kind::Unknown);
        }
        if label == inv::TCB_READ_REGISTERS && out.invoked && a.mrs[1] >= 7 {
            let (rip, rdx) = (out.mrs[0], self.reply_word(out, 6) as i64);
            let at_syscall = rip == VCODE_VA + VCODE_SYSCALL || rip == VCODE_VA + VCODE_SYSCALL + 2;
            if at_syscall && blocks(rdx) {
                self.sh.bump(stat::VICTIM_IN_IPC);
                self.sh.bump(match rdx {
                    -1 => stat::VICTIM_IN_CALL,
                    -3 => stat::VICTIM_IN_SEND,
                    _ => stat::VICTIM_IN_RECV,
                });
            }
        }
    }

    /// Untyped Retype of any object type (and garbage ones), mostly into empty slots of P.
    fn retype(&mut self, untyped: u64) {
        let ty = if self.chance(92) { self.below(11) } else { [11, 12, 63, 255, u64::MAX][self.below(5) as usize] };
        let size = match ty {
            0 => match self.below(10) {
                0..=7 => 4 + self.below(13),
                8 => 17 + self.below(8),
                _ => self.word(),
            },
            4 => match self.below(10) {
                0..=8 => 1 + self.below(5),
                _ => [0, 24, 25, 64][self.below(4) as usize],
            },
            _ => {
                if self.chance(90) {
                    0
                } else {
                    self.word()
                }
            }
        };
        let root = if self.chance(92) { S_CN } else { self.cnode() };
        let (node_index, node_depth) = match self.below(100) {
            0..=87 => (0, 0),
            88..=95 => (S_SUBCN, 64),
            _ => (self.word(), self.below(70)),
        };
        let into_p = root == S_CN && node_depth == 0;
        let offset = if into_p { self.empty_slot() } else { self.below(1 << SUBCN_RADIX) };
        let count = match self.below(100) {
            0..=84 => 1,
            85..=94 => 2 + self.below(3),
            _ => [0, 257, self.word()][self.below(3) as usize],
        };
        let a = Args::new(&[ty, size, node_index, node_depth, offset, count], &[root]);
        let out = self.invoke(untyped, inv::UNTYPED_RETYPE, &a);
        let ok = out.invoked;
        let counted = self.count(Kind::Untyped, untyped, inv::UNTYPED_RETYPE, ok);
        if let Some(t) = ObjectType::from_raw(ty) {
            self.sh.retype[ty as usize][0].fetch_add(1, Ordering::Relaxed);
            if counted {
                self.sh.retype[ty as usize][1].fetch_add(1, Ordering::Relaxed);
            }
            if ok {
                if into_p {
                    for s in offset..offset.saturating_add(count).min(P_SLOTS as u64) {
                        self.sh.set_kind(s, Kind::of_type(t));
                        if t == ObjectType::Tcb {
                            // A new thread may do anything: confined at once, as the victims are.
                            let a = Args::new(&[profile::IPC], &[]);
                            self.exact = true;
                            self.invoke_counted(Kind::Tcb, s, inv::TCB_SET_PROFILE, a);
                            self.exact = false;
                        }
                    }
                } else {
                    // Perhaps into a copy of P.
                    self.forget(offset, count);
                }
            }
        }
        if out.rax == ozone_abi::Error::DeleteFirst as u64 && into_p && count == 1 {
            self.sh.set_kind(offset, Kind::Unknown);
        }
    }

    /// CNode Copy, Mint, Move or Mutate.
    fn cnode_copy(&mut self, label: u64) {
        let moving = label == inv::CNODE_MOVE || label == inv::CNODE_MUTATE;
        let dest_root = if self.chance(88) { S_CN } else { self.cnode() };
        let dest_slot = self.empty_slot();
        let (di, dd) = self.slot_in(dest_root, dest_slot);
        let src_root = if self.chance(90) { S_CN } else { self.cnode() };
        // Moves mostly take what the fuzzer made, so its fixed objects last a while.
        let src_slot = if moving && self.chance(75) {
            self.occupied(true)
        } else {
            let s = self.occupied(false);
            // Deleting a copy of a mapped table unmaps it: the victims' tables are copied (and
            // moved) only now and then.
            let keep = matches!(s, S_CN | S_UT | S_FAULT) && moving || VICTIM_SPACE.contains(&s);
            if keep && self.chance(97) { self.occupied(true) } else { s }
        };
        let (si, sd) = self.slot_in(src_root, src_slot);
        // What the slot actually named holds (the index may be garbage).
        let src_kind = self.sh.kind(si);
        let rights = if self.chance(70) { rights::ALL } else { self.below(16) };
        let data = match src_kind {
            Kind::Endpoint | Kind::Notification if label == inv::CNODE_MINT && self.chance(80) => 1 + self.below(255),
            Kind::Endpoint | Kind::Notification if label == inv::CNODE_MUTATE && self.chance(80) => 0,
            Kind::CNode if self.chance(70) => 64 - P_RADIX,
            Kind::CNode => (self.below(4) << 6) | self.below(64),
            _ => {
                if self.chance(50) {
                    0
                } else {
                    self.word()
                }
            }
        };
        let a = match label {
            inv::CNODE_COPY => Args::new(&[di, dd, si, sd, rights], &[src_root]),
            inv::CNODE_MINT => Args::new(&[di, dd, si, sd, rights, data], &[src_root]),
            inv::CNODE_MOVE => Args::new(&[di, dd, si, sd], &[src_root]),
            _ => Args::new(&[di, dd, si, sd, data], &[src_root]),
        };
        let out = self.invoke(dest_root, label, &a);
        let ok = out.invoked;
        self.count(Kind::CNode, dest_root, label, ok);
        let in_p = dest_root == S_CN && src_root == S_CN && dd == 64 && sd == 64;
        if ok && in_p {
            self.sh.set_kind(di, src_kind);
            if moving {
                self.sh.set_kind(si, Kind::Empty);
            }
        } else if ok && dd != SUBCN_RADIX {
            // Perhaps into a copy of P with another guard: its slot index is the low bits.
            self.forget(di & (P_SLOTS as u64 - 1), 1);
        } else if out.rax == ozone_abi::Error::DeleteFirst as u64 && dest_root == S_CN && dd == 64 {
            self.sh.set_kind(di, Kind::Unknown);
        }
    }

    /// CNode Delete, Revoke or CancelBadgedSends.
    fn cnode_delete(&mut self, label: u64) {
        let root = if self.chance(88) { S_CN } else { self.cnode() };
        let slot = match label {
            inv::CNODE_CANCEL_BADGED_SENDS => self.pick(Kind::Endpoint),
            _ => match self.below(100) {
                0..=54 => self.occupied(true),
                55..=94 => {
                    let k = LIVE_KINDS[self.below(LIVE_KINDS.len() as u64) as usize];
                    self.pick(k)
                }
                _ => self.occupied(false),
            },
        };
        // P itself, the untyped and the fault endpoint are deleted only now and then, and so is
        // the victims' address space (deleted or revoked).
        let keep = label == inv::CNODE_DELETE && matches!(slot, S_CN | S_UT | S_FAULT) && self.chance(95)
            || label != inv::CNODE_CANCEL_BADGED_SENDS && VICTIM_SPACE.contains(&slot) && self.chance(97);
        let slot = if keep { self.occupied(true) } else { slot };
        let (index, depth) = self.slot_in(root, slot);
        let kind = self.sh.kind(index);
        let out = self.invoke(root, label, &Args::new(&[index, depth], &[]));
        let ok = out.invoked;
        self.count(Kind::CNode, root, label, ok);
        if ok && root == S_CN && depth == 64 && label != inv::CNODE_CANCEL_BADGED_SENDS {
            if LIVE_KINDS.contains(&kind) {
                self.sh.bump(stat::DELETED_LIVE);
            }
            if label == inv::CNODE_DELETE {
                self.sh.set_kind(index, Kind::Empty);
            }
        }
    }

    /// A thread's CSpace: almost always P. (A thread whose CSpace is another CNode has no
    /// usable fault handler there, and each of its faults costs a register dump on the console.)
    fn cspace(&mut self) -> u64 {
        match self.below(100) {
            0..=97 => S_CN,
            98 => self.pick(Kind::CNode),
            _ => self.word(),
        }
    }

    /// A thread's fault handler: almost always the fault endpoint (as for [`Self::cspace`]);
    /// now and then any capability (refused unless it is an endpoint with the rights a fault
    /// handler needs), or none (the thread's faults then suspend it).
    fn fault_handler(&mut self) -> Option<u64> {
        match self.below(100) {
            0..=95 => Some(S_FAULT),
            96 | 97 => Some(self.word()),
            _ => None,
        }
    }

    /// MR0 of Configure and SetSpace, reserved: almost always 0, now and then not (refused).
    fn reserved(&mut self) -> u64 {
        if self.chance(97) { 0 } else { self.word() }
    }

    /// A thread's VSpace: mostly the victims' address space (elsewhere a victim only faults).
    fn thread_vspace(&mut self) -> u64 {
        match self.below(100) {
            0..=94 => S_VSPACE,
            95..=98 => self.pick(Kind::Pml4),
            _ => self.word(),
        }
    }

    /// The address space to map into: the victims', or one of the fuzzer's own.
    fn vspace(&mut self) -> u64 {
        match self.below(100) {
            0..=49 => S_VSPACE,
            50..=94 => self.pick(Kind::Pml4),
            _ => self.word(),
        }
    }

    fn buffer_vaddr(&mut self) -> u64 {
        match self.below(10) {
            0..=5 => victim_buffer(self.below(VICTIMS)),
            6 | 7 => 0,
            _ => self.word(),
        }
    }

    fn buffer_frame(&mut self) -> u64 {
        match self.below(100) {
            0..=59 => S_VBUF + self.below(2),
            60..=94 => self.pick(Kind::Frame4K),
            _ => self.word(),
        }
    }

    fn port(&mut self) -> u64 {
        if self.chance(85) { IOPORT_FIRST + self.below(IOPORT_LAST - IOPORT_FIRST + 1) } else { self.word() & 0xffff }
    }

    /// WriteRegisters: mostly the victim loop with a random IPC syscall, capability and message.
    fn write_registers(&mut self) -> Args {
        let count = if self.chance(85) { 18 } else { self.below(20) };
        let rip = match self.below(10) {
            0..=6 => VCODE_VA,
            7 => VCODE_VA + self.below(VICTIM_CODE.len() as u64),
            _ => self.word(),
        };
        let mut rflags = 0x202;
        if self.chance(10) {
            rflags |= self.rng.next() & 0x24_0cd5;
        }
        if self.chance(3) {
            rflags |= 0x100;
        }
        let mut regs = [0u64; 18];
        for r in regs.iter_mut() {
            *r = self.word();
        }
        regs[0] = rip;
        regs[2] = rflags;
        regs[4] = victim_syscall(&mut self.rng) as u64; // rbx
        regs[14] = self.victim_target(); // r12
        regs[15] = victim_info(&mut self.rng); // r13
        let resume = if self.chance(75) { 1 } else { 0 };
        let mut words = [0u64; 20];
        words[0] = resume;
        words[1] = count;
        words[2..].copy_from_slice(&regs);
        Args::new(&words, &[])
    }

    /// IRQControl Get through the server's broker (it holds IRQ control).
    fn broker_irq(&mut self) {
        // The lines q35's I/O APIC has (ISA and PCI INTx), the kernel's whole range (24-63: no
        // I/O APIC input, refused), and numbers past it.
        let irq = match self.below(10) {
            0..=6 => self.below(24),
            7..=8 => self.below(64),
            _ => [24, 63, 255, u64::MAX][self.below(4) as usize],
        };
        let slot = self.empty_slot();
        let depth = if self.chance(92) { 64 } else { self.below(70) };
        let out = self.sys(
            Syscall::Call as i64,
            w_slot(S_SERVER),
            MessageInfo::new(BROKER_IRQ, 0, 0, 3).0,
            [irq, slot, depth, 0],
        );
        let ok = out.rax == 0 && MessageInfo(out.info).label() == 0 && out.mrs == [0, BROKER_OK, 0, 0];
        self.sh.count_inv(Kind::IrqControl, inv::IRQ_CONTROL_GET, ok);
        if ok && depth == 64 {
            self.sh.set_kind(slot, Kind::IrqHandler);
        }
    }

    /// IRQControl GetMsi through the server's broker (a handler for an MSI line the kernel
    /// chooses; no device here raises one, but the handler's methods run on it).
    fn broker_msi(&mut self) {
        let slot = self.empty_slot();
        let depth = if self.chance(92) { 64 } else { self.below(70) };
        let out = self.sys(
            Syscall::Call as i64,
            w_slot(S_SERVER),
            MessageInfo::new(BROKER_IRQ, 0, 0, 4).0,
            [0, slot, depth, BROKER_MSI],
        );
        let ok = out.rax == 0 && MessageInfo(out.info).label() == 0 && out.mrs == [0, BROKER_OK, 0, 0];
        self.sh.count_inv(Kind::IrqControl, inv::IRQ_CONTROL_GET_MSI, ok);
        if ok && depth == 64 {
            self.sh.set_kind(slot, Kind::IrqHandler);
        }
    }

    /// IOPortControl Issue through the server's broker (it holds I/O port control and issues
    /// only ranges inside the harmless one, or ranges the kernel must refuse).
    fn broker_ioport(&mut self) {
        let (first, last) = match self.below(10) {
            0..=7 => {
                let first = IOPORT_FIRST + self.below(IOPORT_LAST - IOPORT_FIRST + 1);
                (first, first + self.below(IOPORT_LAST - first + 1))
            }
            8 => (IOPORT_LAST, IOPORT_FIRST),
            _ => (IOPORT_FIRST, 0x1_0000 + self.below(1 << 20)),
        };
        let slot = self.empty_slot();
        let depth = if self.chance(92) { 64 } else { self.below(70) };
        let out = self.sys(
            Syscall::Call as i64,
            w_slot(S_SERVER),
            MessageInfo::new(BROKER_IOPORT, 0, 0, 4).0,
            [first, last, slot, depth],
        );
        let ok = out.rax == 0 && MessageInfo(out.info).label() == 0 && out.mrs == [0, BROKER_OK, 0, 0];
        self.sh.count_inv(Kind::IoPortControl, inv::IO_PORT_CONTROL_ISSUE, ok);
        if ok && depth == 64 {
            self.sh.set_kind(slot, Kind::IoPort);
        }
    }

    /// Fill the message words beyond the registers, the capabilities to send and the receive
    /// slot; returns the message info.
    fn message(&mut self, label: u64) -> (u64, u64) {
        let len = match self.below(20) {
            0..=7 => self.below(5),
            8..=12 => 5 + self.below(115),
            13..=17 => 120,
            _ => self.below(128),
        };
        let extra = if self.chance(60) { 0 } else { 1 + self.below(3) };
        let mut caps = [0u64; 3];
        for c in caps.iter_mut() {
            *c = match self.below(20) {
                0..=11 => self.occupied(false),
                12..=16 => S_EP_BADGED[self.below(2) as usize],
                _ => self.word(),
            };
            let slot = self.not_victim_space(*c);
            *c = self.cptr(slot);
        }
        // Words 4.. travel in the IPC buffer.
        let end = len.clamp(4, 120) as usize;
        let mut words = [0u64; 120];
        for w in words[4..end].iter_mut() {
            *w = self.word();
        }
        let (rc, ri, rd) = (
            if self.chance(90) { W_P } else { self.word() },
            self.empty_slot(),
            if self.chance(92) { 64 } else { self.below(70) },
        );
        let buf = self.buf();
        buf.msg[4..end].copy_from_slice(&words[4..end]);
        buf.caps_or_badges = caps;
        buf.receive_cnode = rc;
        buf.receive_index = ri;
        buf.receive_depth = rd;
        if len == 120 {
            self.sh.bump(stat::MAX_LENGTH);
        }
        if extra == 3 {
            self.sh.bump(stat::THREE_CAPS);
        }
        let unwrapped = self.below(8);
        (MessageInfo::new(label, unwrapped, extra, len).0, ri)
    }

    /// An IPC syscall on the endpoints and notifications.
    fn ipc(&mut self) {
        let number = match self.below(100) {
            0..=17 => Syscall::Call,
            18..=26 => Syscall::ReplyRecv,
            27..=35 => Syscall::Send,
            36..=51 => Syscall::NbSend,
            52..=60 => Syscall::Recv,
            61..=69 => Syscall::Reply,
            70..=74 => Syscall::Yield,
            _ => Syscall::NbRecv,
        };
        let cptr = match number {
            Syscall::Yield | Syscall::Reply => self.word(),
            Syscall::Call | Syscall::Send | Syscall::NbSend => match self.below(100) {
                0..=69 => self.pick_any(&IPC_KINDS),
                70..=81 => S_SERVER,
                82..=89 => S_FAULT,
                _ => self.below(P_SLOTS as u64),
            },
            _ => match self.below(100) {
                0..=64 => self.pick_any(&IPC_KINDS),
                65..=89 => S_FAULT,
                _ => self.below(P_SLOTS as u64),
            },
        };
        let replying = matches!(number, Syscall::Reply | Syscall::ReplyRecv);
        let answer_fault = replying && self.fault && self.chance(70);
        let label = if answer_fault {
            0
        } else if self.chance(70) {
            self.below(16)
        } else {
            self.rng.next() >> 12
        };
        let (mut info, receive_slot) = self.message(label);
        // It may receive a capability: unknown until we know.
        let was_empty = self.sh.kind(receive_slot) == Kind::Empty;
        self.sh.set_kind(receive_slot, Kind::Unknown);
        let mut mrs = [self.word(), self.word(), self.word(), self.word()];
        if answer_fault {
            // Resume the victim: for an unknown syscall MR0 is its rax, MR1 its new RIP.
            info = MessageInfo::new(0, 0, 0, 2).0;
            mrs[1] = if self.chance(60) { VCODE_VA } else { self.word() };
            self.sh.bump(stat::FAULT_REPLIES);
        }
        let target = if matches!(number, Syscall::Yield | Syscall::Reply) { cptr } else { self.cptr(cptr) };
        let out = self.sys(number as i64, target, info, mrs);
        if replying {
            self.fault = false;
        }
        let receives = matches!(number, Syscall::Call | Syscall::Recv | Syscall::NbRecv | Syscall::ReplyRecv);
        let mut got_cap = false;
        let line = self.sh.irq_line.load(Ordering::Relaxed);
        if receives && out.rax == 0 && self.sh.kind(cptr) == Kind::Notification && out.badge == 1 << line {
            self.sh.bump(stat::INTERRUPTS);
        }
        if receives && out.rax == 0 {
            let r = MessageInfo(out.info);
            // A victim's fault arrives as a Call with a fault label on the fault endpoint.
            self.fault = number != Syscall::Call && (1..=4).contains(&r.label()) && out.badge == 0;
            if self.fault && cptr == S_FAULT {
                self.sh.bump(stat::FAULTS_RECEIVED);
            }
            let unwrapped = r.caps_unwrapped().count_ones() as u64;
            if unwrapped > 0 {
                self.sh.bump(stat::BADGES_UNWRAPPED);
            }
            if r.extra_caps() > unwrapped {
                self.sh.bump(stat::CAPS_RECEIVED);
                got_cap = true;
            }
            if r.length() == 120 {
                self.sh.bump(stat::MAX_LENGTH);
            }
        }
        if was_empty && !got_cap {
            // Nothing arrived: still empty (no one else fills a slot marked unknown).
            self.sh.set_kind(receive_slot, Kind::Empty);
        }
    }

    /// Anything: random number, capability pointer, label, length and buffer.
    fn raw(&mut self) {
        let number: i64 = match self.below(100) {
            0..=39 => Syscall::Call as i64,
            40..=49 => Syscall::Send as i64,
            50..=59 => Syscall::NbSend as i64,
            60..=79 => {
                [Syscall::Recv, Syscall::NbRecv, Syscall::NbRecv, Syscall::ReplyRecv, Syscall::Reply, Syscall::Yield]
                    [self.below(6) as usize] as i64
            }
            80..=87 => Syscall::DebugWrite as i64,
            _ => {
                if self.chance(70) {
                    UNKNOWN_SYSCALLS[self.below(UNKNOWN_SYSCALLS.len() as u64) as usize]
                } else {
                    let n = self.rng.next() as i64;
                    if Syscall::from_raw(n).is_some() { 99 } else { n }
                }
            }
        };
        // Mostly a slot of P (a raw small number names nothing: see W_P), or P itself.
        let mut cptr = self.raw_cptr();
        let label =
            if self.chance(75) { ALL_LABELS[self.below(ALL_LABELS.len() as u64) as usize] } else { self.word() };
        // Never SetProfile or ArmProfile: a thread whose profile allowed Untyped or CNode
        // invocations could fill P unseen (see VICTIM_DENIED).
        let label =
            if label == inv::TCB_SET_PROFILE || label == inv::TCB_ARM_PROFILE { inv::TCB_GET_PROFILE } else { label };
        let mut info = MessageInfo::new(label, self.below(8), self.below(4), self.below(128)).0;
        let mut words = [0u64; 12];
        for w in words.iter_mut() {
            *w = self.word();
        }
        let depth = self.below(70);
        let mut caps = [0u64; 3];
        for (c, w) in caps.iter_mut().zip(words) {
            let slot = self.not_victim_space(w);
            *c = if self.chance(70) { self.cptr(slot) } else { slot };
        }
        if self.chance(50) {
            words[9] = W_P;
        }
        let buf = self.buf();
        buf.caps_or_badges = caps;
        for (i, w) in words[3..9].iter().enumerate() {
            buf.msg[4 + i] = *w;
        }
        buf.receive_cnode = words[9];
        buf.receive_index = words[10];
        buf.receive_depth = depth;
        if number == Syscall::DebugWrite as i64 {
            // Never print: nothing, or something the kernel must refuse.
            let (p, l) = match self.below(5) {
                0 => (0, 0),
                1 => (0x1000, 16),
                2 => (0xffff_8000_0000_0000 | (self.rng.next() & 0x7fff_ffff_f000), 8),
                3 => (self.word(), 4097 + self.below(1000)),
                _ => (USER_TOP - 8, 16),
            };
            cptr = p;
            info = l;
        }
        let mrs = [self.word(), self.word(), self.word(), words[11]];
        let invokes =
            number == Syscall::Call as i64 || number == Syscall::Send as i64 || number == Syscall::NbSend as i64;
        let label = MessageInfo(info).label();
        // Whatever this may fill in P is unknown from now on (see `with_lock`): the destination
        // of a Copy, Mint, Move or Mutate, the slots of a Retype, the broker's destination, the
        // receive slot.
        // (Only what P, or what may be a copy of it, names.)
        if invokes {
            match label {
                // A copy of P with a shorter guard takes the low bits as the index.
                inv::CNODE_COPY..=inv::CNODE_MUTATE if self.may_be_cnode(cptr) => {
                    self.forget(mrs[0] & (P_SLOTS as u64 - 1), 1)
                }
                inv::UNTYPED_RETYPE if self.may_be_cnode(caps[0]) => self.forget(words[3], words[4]),
                BROKER_IRQ => self.forget(mrs[1], 1),
                BROKER_IOPORT => self.forget(mrs[2], 1),
                _ => {}
            }
        }
        let receives =
            [Syscall::Call, Syscall::Recv, Syscall::NbRecv, Syscall::ReplyRecv].iter().any(|&n| n as i64 == number);
        if receives && self.may_be_cnode(words[9]) {
            self.forget(words[10] & (P_SLOTS as u64 - 1), 1);
        }
        let out = self.sys(number, cptr, info, mrs);
        if invokes && let Some(slot) = self.slot_named(cptr) {
            let kind = self.sh.kind(slot);
            if inv_index(kind, label).is_some() || (out.invoked && proven_kind(label).is_some()) {
                self.count(kind, slot, label, out.invoked);
            }
        }
    }
}
