//! A reference model of the kernel's IPC semantics, and a world that runs the real syscall layer
//! beside it, for model-based fuzzing (driven by `model_tests`).
//!
//! The world is the syscall-layer fixture of `tests` ([`Fx`]): five threads (in two CSpaces, two
//! address spaces and two priorities), two endpoints reached through capabilities of various
//! rights and badges, a notification bound to a thread, four frames that serve as IPC buffers
//! (two threads may share one), and four receive slots in each CSpace for transferred
//! capabilities. Each [`Op`] is a syscall of one thread (Send, NBSend, Call, Recv, NBRecv, Reply,
//! ReplyRecv, CallInterruptible, with a message of up to 127 words and up to three capabilities),
//! "let a thread run" (an activation: a thread whose syscall was rewound executes it again), or
//! something the driver thread does to the world: Suspend, Resume, SetIPCBuffer, revoking or deleting a buffer frame,
//! deleting an endpoint, CancelBadgedSends, deleting a thread (and making each of these again),
//! Signal, Bind/Unbind, emptying a receive slot, SetFaultHandler (any endpoint capability, a
//! notification, an empty slot, or none); and a thread's fault (an unknown syscall), delivered as
//! a Call on the endpoint capability in its TCB's fault-handler slot and answered by the
//! handler's reply.
//!
//! The [`Model`] is written to be obviously right rather than fast: thread states as an enum,
//! queues as vectors, the reply link as explicit indices both ways, each frame's memory as words.
//! It follows the documented semantics (`docs/abi.md`: the reply right, restart, the IPC buffer
//! looked up at every use) step by step. After every operation [`Sim::compare`] checks that the
//! kernel agrees with it on everything a thread can observe and on the IPC state behind it: every
//! thread's state (what it is blocked on, with which badge and rights), its return registers
//! (`rax` of a completed syscall, badge, message info, message registers), whether its syscall
//! was rewound, its reply link both ways, its IPC buffer (or none), its fault handler (or none)
//! and whether it is being delivered a fault, its counters; every
//! endpoint's and the notification's state and queue order; the contents of every capability
//! slot involved; every word of every frame. The kernel-state invariant checker runs after every
//! operation too.

extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, IpcBuffer, MSG_MAX_EXTRA_CAPS, MSG_MAX_LENGTH, MSG_REGISTERS, MessageInfo, Syscall, rights};

use super::tests::{Fx, RIP, tcb};
use super::{fastpath, handle_syscall};
use crate::object::endpoint::{EP_IDLE, EP_RECV, EP_SEND, Endpoint};
use crate::object::harness::{ROOT_RADIX, SLOT_ROOT_COPY, SLOT_U_MAIN};
use crate::object::notification::{NTFN_ACTIVE, NTFN_IDLE, NTFN_WAITING, Notification};
use crate::object::tcb::{Fault, KERNEL_WRITTEN, SYSCALL_ENTRY, TCB_FAULT_HANDLER, TCB_VSPACE, Tcb, ThreadState};
use crate::object::{Cap, mdb};

pub const THREADS: usize = 5;
pub const ENDPOINTS: usize = 2;
pub const FRAMES: usize = 4;
pub const RECV_SLOTS: usize = 4;

const DEPTH: u64 = ROOT_RADIX as u64;
const SLOTS: usize = 1 << ROOT_RADIX;

// Where the world's capabilities live in the root CNode (the CSpace of every thread).
const SLOT_TCB: u64 = 7;
const SLOT_PML4: u64 = 12;
const SLOT_EP: u64 = 14;
const SLOT_NTFN: u64 = SLOT_EP + (ENDPOINTS * EP_CAPS.len()) as u64;
const SLOT_FRAME: u64 = SLOT_NTFN + NTFN_CAPS.len() as u64;
const SLOT_RECV: u64 = SLOT_FRAME + FRAMES as u64;
const SLOT_EMPTY: u64 = SLOT_RECV + RECV_SLOTS as u64;
/// The second CSpace's CNode (radix 6), and a capability to it with the guard that makes it a
/// CSpace root (as the fixture's root CNode is for its threads).
const SLOT_CNODE_B: u64 = SLOT_EMPTY + 1;
const SLOT_CNODE_B_ROOT: u64 = SLOT_CNODE_B + 1;
const _: () = assert!(SLOT_CNODE_B_ROOT < SLOTS as u64);
/// Threads from this one on run in the second CSpace (and the second address space).
const FIRST_IN_B: usize = 3;

const R: u64 = rights::READ;
const W: u64 = rights::WRITE;
const G: u64 = rights::GRANT;
const GR: u64 = rights::GRANT_REPLY;
const ALL: u64 = rights::ALL;

/// The capabilities to each endpoint: (rights, badge); the first is the original (from Retype),
/// the others are minted from it. A badge is offset by the endpoint's index. Badges are above the
/// CNode's 64 slots, so an unwrapped badge left in a capability word names no capability.
const EP_CAPS: [(u64, u64); 6] = [(ALL, 0), (R | W, 0), (R | W | GR, 0), (ALL, 0x150), (W | GR, 0x260), (R, 0)];
/// The capabilities to the notification: the original, and two badged ones.
const NTFN_CAPS: [(u64, u64); 3] = [(ALL, 0), (ALL, 0x1), (W, 0x100)];

/// Where a thread's 1 KiB IPC buffer may sit in its frame (word offset of each quarter).
const BUFFER_WORDS: usize = 128;
const FRAME_WORDS: usize = 512;
const W_MSG: usize = core::mem::offset_of!(IpcBuffer, msg) / 8;
const W_CAPS: usize = core::mem::offset_of!(IpcBuffer, caps_or_badges) / 8;
const W_RECV: usize = core::mem::offset_of!(IpcBuffer, receive_cnode) / 8;
const _: () = assert!(core::mem::size_of::<IpcBuffer>() == BUFFER_WORDS * 8);

/// The syscall number of a modelled thread's fault: one the kernel does not know.
const UNKNOWN_SYSCALL: i64 = -77;
/// The stack pointer of a thread that faults (the fault message carries it).
const FAULT_RSP: u64 = 0x7ffe_f000;

/// The syscalls a modelled thread makes (their operation kinds are their indices), but for
/// [`Syscall::CallInterruptible`], which `Op::Sys` names as `call` = 7 ([`SYSCALLS`]) and whose
/// kind is [`K_CALL_INTERRUPTIBLE`] (added after the others).
pub const CALLS: [Syscall; 7] =
    [Syscall::Send, Syscall::NbSend, Syscall::Call, Syscall::Recv, Syscall::NbRecv, Syscall::Reply, Syscall::ReplyRecv];
/// Every syscall a modelled thread makes: `Op::Sys`'s `call` indexes it.
pub const SYSCALLS: [Syscall; 8] = [
    Syscall::Send,
    Syscall::NbSend,
    Syscall::Call,
    Syscall::Recv,
    Syscall::NbRecv,
    Syscall::Reply,
    Syscall::ReplyRecv,
    Syscall::CallInterruptible,
];
/// The operation kind of a CallInterruptible.
const K_CALL_INTERRUPTIBLE: usize = 26;

/// The capability pointers a syscall names: every endpoint and notification capability, and an
/// empty slot.
fn syscall_cptr(i: u8) -> u64 {
    let n = (ENDPOINTS * EP_CAPS.len() + NTFN_CAPS.len()) as u64;
    match u64::from(i) % (n + 1) {
        x if x < n => SLOT_EP + x,
        _ => SLOT_EMPTY,
    }
}

/// The capability pointers a message may carry: those, the frames, the receive slots, and the
/// main untyped (which has children, so it cannot be copied: transfer stops there); from 200 on,
/// a badged capability to the endpoint the syscall names (which arrives unwrapped), if it names
/// one.
fn extra_cptr(i: u8, syscall_slot: u64) -> u64 {
    let eps = SLOT_EP..SLOT_EP + (ENDPOINTS * EP_CAPS.len()) as u64;
    if i >= 200 && eps.contains(&syscall_slot) {
        let base = syscall_slot - (syscall_slot - SLOT_EP) % EP_CAPS.len() as u64;
        return base + 3 + u64::from(i % 2);
    }
    let n = SLOT_EMPTY + 1 - SLOT_EP;
    match u64::from(i) % (n + 1) {
        x if x < n => SLOT_EP + x,
        _ => SLOT_U_MAIN,
    }
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The `t`-th runnable thread makes syscall `SYSCALLS[call]` on `syscall_cptr(cap)` with `len`
    /// words (from `seed`) under `label`, `ncaps` extra capabilities `extra_cptr(caps[i], ..)`,
    /// and first sets its receive slot (`recv`: 0–3 a receive slot, 4 a depth of 0, 5 a
    /// non-CNode, else unchanged). A thread whose last syscall was rewound executes that one
    /// instead (as the CPU would).
    Sys {
        t: u8,
        call: u8,
        cap: u8,
        label: u16,
        len: u8,
        seed: u64,
        ncaps: u8,
        caps: [u8; 3],
        recv: u8,
    },
    /// Let the `t`-th thread taken out of a syscall (or, if none is, the `t`-th runnable thread)
    /// run: an activation, and its rewound syscall if it has one.
    Run(u8),
    /// Suspend the `t`-th blocked thread (thread `t % THREADS` if none is blocked or if `t` is
    /// at least `THREADS`).
    Suspend(u8),
    /// Resume the `t`-th inactive thread (thread `t` if none is inactive).
    Resume(u8),
    /// SetIPCBuffer of thread `t`: frame `frame` at quarter `off`, or none.
    SetBuffer {
        t: u8,
        frame: Option<u8>,
        off: u8,
    },
    /// Revoke a frame's capability: every thread using it as IPC buffer loses its buffer.
    RevokeFrame(u8),
    /// Revoke and delete a frame's original capability: the frame is destroyed.
    DeleteFrame(u8),
    /// Make a destroyed frame again (a new object, zeroed).
    RecreateFrame(u8),
    /// Revoke and delete an endpoint's original capability: the endpoint is destroyed.
    DeleteEndpoint(u8),
    /// Make a destroyed endpoint again (a new object), with its minted capabilities.
    RecreateEndpoint(u8),
    /// CNode CancelBadgedSends on endpoint capability slot `i`.
    CancelBadged(u8),
    DeleteThread(u8),
    /// Make a deleted thread again (a new TCB), with frame `frame` at quarter `off` as its buffer.
    NewThread {
        t: u8,
        frame: u8,
        off: u8,
    },
    /// The driver signals the notification through capability `NTFN_CAPS[i]`.
    Signal(u8),
    Bind(u8),
    Unbind(u8),
    /// Delete whatever capability receive slot `r % 4` holds, in the root CNode (`r % 8 < 4`) or
    /// the second CSpace's.
    ClearRecv(u8),
    /// TCB SetFaultHandler of thread `t`, by the driver, with [`fault_handler_arg`]`(cap)`.
    SetFaultHandler {
        t: u8,
        cap: u8,
    },
    /// The `t`-th runnable thread makes an unknown syscall: a fault for its handler, if it has one.
    Fault(u8),
}

/// What SetFaultHandler is given: an endpoint capability (any of them, whatever its rights), the
/// notification, an empty slot, or (`None`) no capability at all.
fn fault_handler_arg(cap: u8) -> Option<u64> {
    let eps = (ENDPOINTS * EP_CAPS.len()) as u64;
    match u64::from(cap) % (eps + 3) {
        x if x < eps => Some(SLOT_EP + x),
        x if x == eps => Some(SLOT_NTFN),
        x if x == eps + 1 => Some(SLOT_EMPTY),
        _ => None,
    }
}

impl Op {
    /// Its index in [`OP_NAMES`].
    pub fn kind(&self) -> usize {
        match *self {
            Op::Sys { call, .. } => match call as usize % SYSCALLS.len() {
                i if i < CALLS.len() => i,
                _ => K_CALL_INTERRUPTIBLE,
            },
            Op::Run(_) => 7,
            Op::Suspend(_) => 8,
            Op::Resume(_) => 9,
            Op::SetBuffer { frame: Some(_), .. } => 10,
            Op::SetBuffer { frame: None, .. } => 11,
            Op::RevokeFrame(_) => 12,
            Op::DeleteEndpoint(_) => 13,
            Op::RecreateEndpoint(_) => 14,
            Op::CancelBadged(_) => 15,
            Op::DeleteThread(_) => 16,
            Op::NewThread { .. } => 17,
            Op::Signal(_) => 18,
            Op::Bind(_) | Op::Unbind(_) => 19,
            Op::ClearRecv(_) => 20,
            Op::DeleteFrame(_) => 21,
            Op::RecreateFrame(_) => 22,
            Op::SetFaultHandler { cap, .. } if fault_handler_arg(cap).is_some() => 23,
            Op::SetFaultHandler { .. } => 24,
            Op::Fault(_) => 25,
        }
    }
}

/// Names of the operation kinds, for the coverage counts: the syscalls, then the others.
pub const OP_NAMES: [&str; 27] = [
    "Send",
    "NBSend",
    "Call",
    "Recv",
    "NBRecv",
    "Reply",
    "ReplyRecv",
    "Run",
    "Suspend",
    "Resume",
    "SetBuffer(frame)",
    "SetBuffer(0)",
    "RevokeFrame",
    "DeleteEndpoint",
    "RecreateEndpoint",
    "CancelBadgedSends",
    "DeleteThread",
    "NewThread",
    "Signal",
    "Bind/Unbind",
    "ClearRecv",
    "DeleteFrame",
    "RecreateFrame",
    "SetFaultHandler(cap)",
    "SetFaultHandler(none)",
    "Fault",
    "CallInterruptible",
];

/// The interesting cases the runs must reach (see [`Coverage`]).
pub const EVENT_NAMES: [&str; 32] = [
    "late reply dropped (caller suspended, resumed or deleted)",
    "rewound syscall executed again",
    "suspended caller rewound",
    "receive completed by a bound signal (not rewound)",
    "receive completed by a bound signal: its next run does not repeat it",
    "buffer revoked or unset mid-IPC",
    "long message cut to the register words",
    "long message copied between buffers",
    "capability transferred",
    "capability unwrapped to its badge",
    "waiter restarted by endpoint deletion",
    "sender restarted by CancelBadgedSends",
    "Call without a grant right leaves the caller inactive",
    "reply link cut by the server receiving again",
    "Call taken by the fastpath",
    "ReplyRecv taken by the fastpath",
    "capability transferred into the other CSpace",
    "SetFaultHandler refused (not an endpoint, or rights a fault needs missing)",
    "fault delivered through the TCB's fault-handler slot",
    "fault with an empty fault-handler slot (UnknownSyscall)",
    "fault reply resumed the thread",
    "fault reply left the thread suspended",
    "fault delivery cancelled (the thread faults again when it runs)",
    "interruptible Call interrupted while queued to send",
    "interruptible Call interrupted while waiting for the reply",
    "interruptible Call ended at once by bits already pending",
    "late reply after an interrupt goes nowhere",
    "caller woken with ReplyLost: the replier suspended",
    "caller woken with ReplyLost: the replier deleted",
    "fault delivery restarted: its handler thread suspended or deleted",
    "interruptible Call completed by the reply",
    "signal to a bound thread in an ordinary Call leaves it waiting",
];

const EV_LATE_REPLY: usize = 0;
const EV_RERUN: usize = 1;
const EV_CALLER_REWOUND: usize = 2;
const EV_BOUND_RECV: usize = 3;
const EV_BOUND_NOT_RERUN: usize = 4;
const EV_BUFFER_MID_IPC: usize = 5;
const EV_CUT: usize = 6;
const EV_LONG: usize = 7;
const EV_CAP: usize = 8;
const EV_UNWRAP: usize = 9;
const EV_CANCEL_ALL: usize = 10;
const EV_CANCEL_BADGED: usize = 11;
const EV_CALL_NO_GRANT: usize = 12;
const EV_RECV_CUTS_REPLY: usize = 13;
const EV_FAST_CALL: usize = 14;
const EV_FAST_REPLY_RECV: usize = 15;
const EV_CAP_ACROSS: usize = 16;
const EV_HANDLER_REFUSED: usize = 17;
const EV_FAULT_DELIVERED: usize = 18;
const EV_FAULT_NO_HANDLER: usize = 19;
const EV_FAULT_RESUMED: usize = 20;
const EV_FAULT_SUSPENDED: usize = 21;
const EV_FAULT_CANCELLED: usize = 22;
const EV_INTR_QUEUED: usize = 23;
const EV_INTR_REPLY: usize = 24;
const EV_INTR_PENDING: usize = 25;
const EV_INTR_LATE_REPLY: usize = 26;
const EV_LOST_SUSPENDED: usize = 27;
const EV_LOST_DELETED: usize = 28;
const EV_LOST_FAULT: usize = 29;
const EV_INTR_REPLIED: usize = 30;
const EV_PLAIN_NOT_INTERRUPTED: usize = 31;

/// How often each operation kind ran (and was not skipped because its thread or object was not
/// in a state for it), and how often each interesting case happened.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    pub ops: [u64; OP_NAMES.len()],
    pub events: [u64; EVENT_NAMES.len()],
    /// Operations that found no thread or object in a state for them, by kind.
    pub skipped: [u64; OP_NAMES.len()],
}

impl Coverage {
    pub fn add(&mut self, other: &Coverage) {
        for (a, b) in self.ops.iter_mut().zip(other.ops) {
            *a += b;
        }
        for (a, b) in self.events.iter_mut().zip(other.events) {
            *a += b;
        }
        for (a, b) in self.skipped.iter_mut().zip(other.skipped) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.ops.iter().sum::<u64>() + self.skipped.iter().sum::<u64>()
    }

    /// One line per operation kind and interesting case.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for ((n, c), k) in OP_NAMES.iter().zip(self.ops).zip(self.skipped) {
            s += &format!("  op {n}: {c} (skipped {k})\n");
        }
        for (n, c) in EVENT_NAMES.iter().zip(self.events) {
            s += &format!("  case {n}: {c}\n");
        }
        s
    }

    /// The kinds and cases never reached.
    pub fn missing(&self) -> Vec<&'static str> {
        let ops = OP_NAMES.iter().zip(self.ops).filter(|(_, c)| *c == 0).map(|(n, _)| *n);
        let evs = EVENT_NAMES.iter().zip(self.events).filter(|(_, c)| *c == 0).map(|(n, _)| *n);
        ops.chain(evs).collect()
    }
}

// ---- the model ----

/// A capability, as the model knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MCap {
    Ep {
        e: usize,
        badge: u64,
        rights: u64,
    },
    Ntfn {
        badge: u64,
        rights: u64,
    },
    Frame(usize),
    /// An untyped capability with children: it cannot be copied.
    Untyped,
    /// Anything else (never named by a modelled syscall).
    Other,
}

/// A thread's state (as the kernel's `ThreadState`, with model indices for objects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum St {
    Inactive,
    Running,
    Restart,
    Send {
        e: usize,
        badge: u64,
        grant: bool,
        grant_reply: bool,
        call: bool,
        intr: bool,
    },
    Recv {
        e: usize,
        grant: bool,
    },
    /// `intr`: a CallInterruptible.
    Reply {
        intr: bool,
    },
    Ntfn,
}

impl St {
    fn runnable(self) -> bool {
        matches!(self, St::Running | St::Restart)
    }
    fn blocked(self) -> bool {
        !matches!(self, St::Running | St::Restart | St::Inactive)
    }
}

/// The registers a thread's syscalls use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub mr: [u64; MSG_REGISTERS],
    /// Rewound to the `syscall` instruction (executed again when the thread runs).
    pub rewound: bool,
}

#[derive(Clone, Debug)]
pub struct MThread {
    pub alive: bool,
    pub st: St,
    pub regs: Regs,
    pub caller: Option<usize>,
    pub caller_grant: bool,
    pub reply_holder: Option<usize>,
    pub bound: bool,
    /// Which CSpace it looks capabilities up in.
    pub space: usize,
    /// (frame, quarter) of the IPC buffer.
    pub buffer: Option<(usize, usize)>,
    pub sent: u64,
    pub received: u64,
    pub failed: u64,
    /// Its reply right was cut from the caller's side (coverage only).
    lost_caller: bool,
    /// ... by an interrupt (coverage only).
    lost_to_interrupt: bool,
    /// Its last receive was completed by a bound signal (coverage only).
    bound_signalled: bool,
    /// The capability in its fault-handler slot (an endpoint), if any.
    pub handler: Option<MCap>,
    /// It is being delivered a fault (its unknown syscall): queued to send it, or waiting for
    /// the handler's reply.
    pub fault: bool,
    /// The instruction pointer a fault reply gave it (it resumes there), until its next syscall.
    pub jumped: Option<u64>,
}

impl MThread {
    fn new() -> MThread {
        MThread {
            alive: true,
            st: St::Running,
            regs: Regs::default(),
            caller: None,
            caller_grant: false,
            reply_holder: None,
            bound: false,
            space: 0,
            buffer: None,
            sent: 0,
            received: 0,
            failed: 0,
            lost_caller: false,
            lost_to_interrupt: false,
            bound_signalled: false,
            handler: None,
            fault: false,
            jumped: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct MEp {
    pub alive: bool,
    pub state: u64,
    pub queue: Vec<usize>,
}

#[derive(Clone, Debug, Default)]
pub struct MNtfn {
    pub state: u64,
    pub word: u64,
    pub queue: Vec<usize>,
    pub bound: Option<usize>,
}

/// The reference model.
#[derive(Clone, Debug)]
pub struct Model {
    pub th: Vec<MThread>,
    pub ep: Vec<MEp>,
    pub n: MNtfn,
    /// Every frame's memory, and whether the frame exists.
    pub mem: Vec<[u64; FRAME_WORDS]>,
    pub frame_alive: Vec<bool>,
    /// The slots of each CSpace's CNode: the fixture's root CNode, and the second CSpace's, which
    /// holds copies of the endpoint, notification and frame capabilities at the same indices, a
    /// capability to itself at the root CNode's `SLOT_ROOT_COPY`, and receive slots of its own.
    pub slots: [Vec<Option<MCap>>; 2],
    pub cov: Coverage,
}

fn err(e: Error) -> u64 {
    e as u64
}

impl Model {
    /// Word `w` of thread `t`'s IPC buffer, if it has one: (frame, index in the frame).
    fn buf(&self, t: usize, w: usize) -> Option<(usize, usize)> {
        self.th[t].buffer.map(|(f, q)| (f, q * BUFFER_WORDS + w))
    }

    fn read(&self, t: usize, w: usize) -> Option<u64> {
        self.buf(t, w).map(|(f, i)| self.mem[f][i])
    }

    fn write(&mut self, t: usize, w: usize, v: u64) -> bool {
        let Some((f, i)) = self.buf(t, w) else { return false };
        self.mem[f][i] = v;
        true
    }

    /// The capability `cptr` names in thread `t`'s CSpace (a single CNode whose guard takes the
    /// bits above its 64 slots).
    fn lookup(&self, t: usize, cptr: u64) -> Option<MCap> {
        if cptr >= SLOTS as u64 {
            return None;
        }
        self.slots[self.th[t].space][cptr as usize]
    }

    // -- the reply link --

    fn drop_reply_right(&mut self, t: usize) {
        if let Some(c) = self.th[t].caller.take() {
            assert_eq!(self.th[c].reply_holder, Some(t), "model: reply link not symmetric");
            self.th[c].reply_holder = None;
            self.th[t].caller_grant = false;
        }
    }

    fn cancel_reply_wait(&mut self, t: usize) {
        if let Some(h) = self.th[t].reply_holder.take() {
            self.th[h].caller = None;
            self.th[h].caller_grant = false;
            self.th[h].lost_caller = true;
            self.th[h].lost_to_interrupt = false;
        }
    }

    /// `t` is suspended or deleted (`deleted`): a caller waiting for its reply is woken with
    /// `ReplyLost`, or, if it was being delivered a fault, restarted to take the fault again.
    fn lose_reply_right(&mut self, t: usize, deleted: bool) {
        let Some(c) = self.th[t].caller else { return };
        self.drop_reply_right(t);
        assert!(matches!(self.th[c].st, St::Reply { .. }), "model: a reply right to a thread not waiting for it");
        if self.th[c].fault {
            self.rewind(c);
            self.th[c].st = St::Restart;
            self.cov.events[EV_LOST_FAULT] += 1;
        } else {
            let r = &mut self.th[c].regs;
            (r.rax, r.rdi, r.rsi) = (err(Error::ReplyLost), 0, 0);
            self.th[c].st = St::Running;
            self.cov.events[if deleted { EV_LOST_DELETED } else { EV_LOST_SUSPENDED }] += 1;
        }
    }

    /// `t`'s bound notification was signalled with `word` pending: a CallInterruptible it is
    /// blocked in ends with `Interrupted`. Whether it was.
    fn interrupt(&mut self, t: usize, word: u64) -> bool {
        match self.th[t].st {
            St::Send { intr: true, .. } => {
                self.leave_endpoint(t);
                self.cov.events[EV_INTR_QUEUED] += 1;
            }
            St::Reply { intr: true } => {
                let h = self.th[t].reply_holder;
                self.cancel_reply_wait(t);
                if let Some(h) = h {
                    self.th[h].lost_to_interrupt = true;
                }
                self.cov.events[EV_INTR_REPLY] += 1;
            }
            St::Send { .. } | St::Reply { .. } => {
                self.cov.events[EV_PLAIN_NOT_INTERRUPTED] += 1;
                return false;
            }
            _ => return false,
        }
        assert!(!self.th[t].fault, "model: an interruptible Call delivers a fault");
        let r = &mut self.th[t].regs;
        (r.rax, r.rdi, r.rsi) = (err(Error::Interrupted), word, 0);
        self.th[t].st = St::Running;
        true
    }

    fn setup_reply(&mut self, caller: usize, receiver: usize, grant: bool, intr: bool) {
        self.drop_reply_right(receiver);
        self.th[caller].st = St::Reply { intr };
        self.th[caller].reply_holder = Some(receiver);
        self.th[receiver].caller = Some(caller);
        self.th[receiver].caller_grant = grant;
        self.th[receiver].lost_caller = false;
    }

    // -- restart --

    fn rewind(&mut self, t: usize) {
        self.th[t].regs.rewound = true;
        // A fault being delivered is taken again when the thread runs its syscall again.
        if core::mem::take(&mut self.th[t].fault) {
            self.cov.events[EV_FAULT_CANCELLED] += 1;
        }
    }

    /// Take `t` out of the IPC it is blocked in (Suspend, deletion).
    fn cancel_ipc(&mut self, t: usize) {
        match self.th[t].st {
            St::Send { .. } | St::Recv { .. } => self.leave_endpoint(t),
            St::Ntfn => {
                self.n.queue.retain(|&x| x != t);
                if self.n.queue.is_empty() && self.n.state == NTFN_WAITING {
                    self.n.state = NTFN_IDLE;
                }
            }
            St::Reply { .. } => {
                self.cancel_reply_wait(t);
                self.cov.events[EV_CALLER_REWOUND] += 1;
            }
            _ => return,
        }
        self.rewind(t);
        self.th[t].st = St::Inactive;
    }

    fn leave_endpoint(&mut self, t: usize) {
        let (St::Send { e, .. } | St::Recv { e, .. }) = self.th[t].st else { return };
        self.ep[e].queue.retain(|&x| x != t);
        if self.ep[e].queue.is_empty() {
            self.ep[e].state = EP_IDLE;
        }
    }

    // -- message transfer --

    /// The receive slot `r`'s buffer names, if it is an empty slot.
    fn receive_slot(&self, r: usize) -> Option<usize> {
        let cnode = self.read(r, W_RECV)?;
        let index = self.read(r, W_RECV + 1)?;
        let depth = self.read(r, W_RECV + 2)?;
        if self.lookup(r, cnode) != Some(MCap::Other) || cnode != SLOT_ROOT_COPY {
            return None;
        }
        if depth == 0 {
            return None;
        }
        assert_eq!(depth, DEPTH, "model: the ops write depth 0 or the root CNode's radix");
        assert!((SLOT_RECV..SLOT_RECV + RECV_SLOTS as u64).contains(&index), "model: receive index {index}");
        self.slots[self.th[r].space][index as usize].is_none().then_some(index as usize)
    }

    /// Capability transfer: returns (caps_unwrapped, extra_caps delivered).
    fn transfer_caps(&mut self, s: usize, r: usize, extra: u64, ep: Option<usize>) -> (u64, u64) {
        if self.th[s].buffer.is_none() || self.th[r].buffer.is_none() {
            return (0, 0);
        }
        let mut dest = self.receive_slot(r);
        let (mut count, mut unwrapped) = (0, 0);
        for i in 0..extra.min(MSG_MAX_EXTRA_CAPS) as usize {
            let cptr = self.read(s, W_CAPS + i).expect("sender buffer");
            let Some(cap) = self.lookup(s, cptr) else { break };
            match cap {
                MCap::Ep { e, badge, .. } if Some(e) == ep && badge != 0 => {
                    self.write(r, W_CAPS + i, badge);
                    unwrapped |= 1 << i;
                    self.cov.events[EV_UNWRAP] += 1;
                }
                MCap::Ep { .. } | MCap::Ntfn { .. } | MCap::Frame(_) => {
                    let Some(d) = dest.take() else { break };
                    self.slots[self.th[r].space][d] = Some(cap);
                    self.cov.events[EV_CAP] += 1;
                    if self.th[s].space != self.th[r].space {
                        self.cov.events[EV_CAP_ACROSS] += 1;
                    }
                }
                MCap::Untyped => break,
                MCap::Other => panic!("model: a message carries capability pointer {cptr}, which is not modelled"),
            }
            count += 1;
        }
        (unwrapped, count)
    }

    /// Move the message `s` is sending (its `rsi`) to `r`, with `badge`.
    fn transfer(&mut self, s: usize, r: usize, badge: u64, can_grant: bool, ep: Option<usize>) {
        if self.th[s].fault {
            // The kernel's fault message: RIP after the `syscall`, RSP, the syscall number.
            let rr = &mut self.th[r].regs;
            rr.mr = [RIP, FAULT_RSP, UNKNOWN_SYSCALL as u64, 0];
            rr.rsi = MessageInfo::new(ozone_abi::fault::UNKNOWN_SYSCALL, 0, 0, 4).0;
            rr.rdi = badge;
            rr.rax = 0;
            self.th[s].sent += 1;
            self.th[r].received += 1;
            self.cov.events[EV_FAULT_DELIVERED] += 1;
            return;
        }
        let info = MessageInfo(self.th[s].regs.rsi);
        let mut length = info.length().min(MSG_MAX_LENGTH);
        for i in 0..(length as usize).min(MSG_REGISTERS) {
            self.th[r].regs.mr[i] = self.th[s].regs.mr[i];
        }
        match (self.th[s].buffer, self.th[r].buffer) {
            (Some(_), Some(_)) if length > MSG_REGISTERS as u64 => {
                let words: Vec<u64> =
                    (MSG_REGISTERS..length as usize).map(|i| self.read(s, W_MSG + i).expect("buffer")).collect();
                for (i, w) in words.into_iter().enumerate() {
                    self.write(r, W_MSG + MSG_REGISTERS + i, w);
                }
                self.cov.events[EV_LONG] += 1;
            }
            (Some(_), Some(_)) => {}
            _ => {
                if length > MSG_REGISTERS as u64 {
                    self.cov.events[EV_CUT] += 1;
                }
                length = length.min(MSG_REGISTERS as u64);
            }
        }
        let (unwrapped, count) =
            if can_grant && info.extra_caps() > 0 { self.transfer_caps(s, r, info.extra_caps(), ep) } else { (0, 0) };
        let rr = &mut self.th[r].regs;
        rr.rsi = MessageInfo::new(info.label(), unwrapped, count, length).0;
        rr.rdi = badge;
        rr.rax = 0;
        self.th[s].sent += 1;
        self.th[r].received += 1;
    }

    fn deliver_signal(&mut self, t: usize, word: u64) {
        let th = &mut self.th[t];
        th.regs.rdi = word;
        th.regs.rsi = 0;
        th.regs.rax = 0;
        th.st = St::Running;
    }

    // -- the syscalls --

    #[allow(clippy::too_many_arguments)]
    fn ep_send(&mut self, s: usize, e: usize, badge: u64, rights: u64, blocking: bool, call: bool, intr: bool) {
        let (grant, grant_reply) = (rights & G != 0, rights & GR != 0);
        if self.ep[e].state != EP_RECV {
            if blocking {
                self.th[s].st = St::Send { e, badge, grant, grant_reply, call, intr };
                self.ep[e].queue.push(s);
                self.ep[e].state = EP_SEND;
            } else {
                self.th[s].regs.rax = 0;
            }
            return;
        }
        let r = self.ep[e].queue.remove(0);
        if self.ep[e].queue.is_empty() {
            self.ep[e].state = EP_IDLE;
        }
        let St::Recv { grant: reply_grant, .. } = self.th[r].st else {
            panic!("model: a receive queue holds a non-receiver")
        };
        self.transfer(s, r, badge, grant, Some(e));
        self.th[s].regs.rax = 0;
        self.th[r].st = St::Running;
        if call {
            if grant || grant_reply {
                self.setup_reply(s, r, reply_grant, intr);
            } else {
                self.th[s].st = St::Inactive;
                self.cov.events[EV_CALL_NO_GRANT] += 1;
            }
        }
    }

    fn ep_recv(&mut self, r: usize, e: usize, blocking: bool, grant: bool) {
        if self.th[r].caller.is_some() {
            self.cov.events[EV_RECV_CUTS_REPLY] += 1;
        }
        self.drop_reply_right(r);
        if self.th[r].bound && self.n.state == NTFN_ACTIVE {
            let word = core::mem::take(&mut self.n.word);
            self.n.state = NTFN_IDLE;
            self.deliver_signal(r, word);
            return;
        }
        if self.ep[e].state != EP_SEND {
            if blocking {
                self.th[r].st = St::Recv { e, grant };
                self.ep[e].queue.push(r);
                self.ep[e].state = EP_RECV;
            } else {
                let rr = &mut self.th[r].regs;
                (rr.rdi, rr.rsi, rr.rax) = (0, 0, 0);
            }
            return;
        }
        let s = self.ep[e].queue.remove(0);
        if self.ep[e].queue.is_empty() {
            self.ep[e].state = EP_IDLE;
        }
        let St::Send { badge, grant: s_grant, grant_reply, call, intr, .. } = self.th[s].st else {
            panic!("model: a send queue holds a non-sender")
        };
        self.transfer(s, r, badge, s_grant, Some(e));
        if call {
            if s_grant || grant_reply {
                self.setup_reply(s, r, grant, intr);
            } else {
                self.th[s].st = St::Inactive;
                self.cov.events[EV_CALL_NO_GRANT] += 1;
            }
        } else {
            self.th[s].st = St::Running;
            self.th[s].regs.rax = 0;
        }
    }

    /// Signal the notification with `badge`.
    pub fn signal(&mut self, badge: u64) {
        if self.n.state == NTFN_WAITING {
            let w = self.n.queue.remove(0);
            if self.n.queue.is_empty() {
                self.n.state = NTFN_IDLE;
            }
            self.deliver_signal(w, badge);
            return;
        }
        if self.n.state == NTFN_IDLE
            && let Some(b) = self.n.bound
            && matches!(self.th[b].st, St::Recv { .. })
        {
            self.leave_endpoint(b);
            self.deliver_signal(b, badge);
            self.th[b].bound_signalled = true;
            self.cov.events[EV_BOUND_RECV] += 1;
            return;
        }
        if let Some(b) = self.n.bound
            && self.interrupt(b, self.n.word | badge)
        {
            self.n.word = 0;
            self.n.state = NTFN_IDLE;
            return;
        }
        self.n.word |= badge;
        self.n.state = NTFN_ACTIVE;
    }

    fn wait(&mut self, t: usize, blocking: bool) {
        if self.n.state == NTFN_ACTIVE {
            let word = core::mem::take(&mut self.n.word);
            self.n.state = NTFN_IDLE;
            self.deliver_signal(t, word);
        } else if blocking {
            self.th[t].st = St::Ntfn;
            self.n.queue.push(t);
            self.n.state = NTFN_WAITING;
        } else {
            self.deliver_signal(t, 0);
        }
    }

    fn reply(&mut self, t: usize) {
        let Some(c) = self.th[t].caller else {
            if self.th[t].lost_caller {
                self.cov.events[EV_LATE_REPLY] += 1;
                self.th[t].lost_caller = false;
            }
            if core::mem::take(&mut self.th[t].lost_to_interrupt) {
                self.cov.events[EV_INTR_LATE_REPLY] += 1;
            }
            return;
        };
        let grant = self.th[t].caller_grant;
        self.drop_reply_right(t);
        let St::Reply { intr } = self.th[c].st else { panic!("model: a reply right to a thread not waiting for it") };
        if intr {
            self.cov.events[EV_INTR_REPLIED] += 1;
        }
        if core::mem::take(&mut self.th[c].fault) {
            // The handler's reply decides: label 0 resumes the thread with MR0 as its syscall's
            // result and a non-zero MR1 as its new RIP (0 if not a user address); any other label
            // leaves it suspended.
            let info = MessageInfo(self.th[t].regs.rsi);
            let mr = self.th[t].regs.mr;
            if info.label() == 0 {
                if info.length() >= 1 {
                    self.th[c].regs.rax = mr[0];
                }
                if info.length() >= 2 && mr[1] != 0 {
                    self.th[c].jumped = Some(if mr[1] < ozone_abi::USER_TOP { mr[1] } else { 0 });
                }
                self.th[c].st = St::Running;
                self.cov.events[EV_FAULT_RESUMED] += 1;
            } else {
                self.th[c].st = St::Inactive;
                self.cov.events[EV_FAULT_SUSPENDED] += 1;
                // Left suspended, as by TCB Suspend.
                self.lose_reply_right(c, false);
            }
            return;
        }
        self.transfer(t, c, 0, grant, None);
        self.th[c].st = St::Running;
    }

    /// Thread `t` made an unknown syscall: a Call on its fault handler's endpoint (with the
    /// handler capability's badge and grant right; the reply right always), or, with none,
    /// `UnknownSyscall`.
    fn fault(&mut self, t: usize) {
        match self.th[t].handler {
            Some(MCap::Ep { e, badge, rights }) => {
                self.th[t].fault = true;
                self.ep_send(t, e, badge, rights | GR, true, true, false);
            }
            None => {
                self.th[t].regs.rax = err(Error::UnknownSyscall);
                self.cov.events[EV_FAULT_NO_HANDLER] += 1;
            }
            Some(c) => panic!("model: a fault handler slot holds {c:?}"),
        }
    }

    fn send(&mut self, t: usize, blocking: bool, call: bool) -> Result<(), Error> {
        match self.lookup(t, self.th[t].regs.rdi) {
            Some(MCap::Ep { e, badge, rights }) => {
                if rights & W == 0 {
                    return Err(Error::IllegalOperation);
                }
                self.ep_send(t, e, badge, rights, blocking, call, false);
                Ok(())
            }
            Some(MCap::Ntfn { badge, rights }) => {
                if rights & W == 0 {
                    return Err(Error::IllegalOperation);
                }
                self.signal(badge);
                Ok(())
            }
            None => Err(Error::InvalidCapability),
            Some(c) => panic!("model: a syscall names {c:?}"),
        }
    }

    /// CallInterruptible: on an endpoint capability with the write right, by a thread with a
    /// bound notification; bits pending end it at once.
    fn call_interruptible(&mut self, t: usize) -> Result<(), Error> {
        let Some(MCap::Ep { e, badge, rights }) = self.lookup(t, self.th[t].regs.rdi) else {
            return Err(Error::InvalidCapability);
        };
        if rights & W == 0 || !self.th[t].bound {
            return Err(Error::IllegalOperation);
        }
        if self.n.state == NTFN_ACTIVE {
            let word = core::mem::take(&mut self.n.word);
            self.n.state = NTFN_IDLE;
            (self.th[t].regs.rdi, self.th[t].regs.rsi) = (word, 0);
            self.cov.events[EV_INTR_PENDING] += 1;
            return Err(Error::Interrupted);
        }
        self.ep_send(t, e, badge, rights, true, true, true);
        Ok(())
    }

    fn recv(&mut self, t: usize, blocking: bool) -> Result<(), Error> {
        match self.lookup(t, self.th[t].regs.rdi) {
            Some(MCap::Ep { e, rights, .. }) => {
                if rights & R == 0 {
                    return Err(Error::IllegalOperation);
                }
                self.ep_recv(t, e, blocking, rights & G != 0);
                Ok(())
            }
            Some(MCap::Ntfn { rights, .. }) => {
                if rights & R == 0 {
                    return Err(Error::IllegalOperation);
                }
                // Bound to another thread: its alone to wait on.
                if self.n.bound.is_some_and(|b| b != t) {
                    return Err(Error::IllegalOperation);
                }
                self.wait(t, blocking);
                Ok(())
            }
            None => Err(Error::InvalidCapability),
            Some(c) => panic!("model: a syscall names {c:?}"),
        }
    }

    /// Thread `t` is switched to: a thread taken out of a syscall becomes running.
    fn activate(&mut self, t: usize) {
        if self.th[t].st == St::Restart {
            self.th[t].st = St::Running;
        }
    }

    /// Thread `t` executes the syscall its registers describe.
    fn exec(&mut self, t: usize) {
        self.activate(t);
        if self.th[t].regs.rewound {
            self.cov.events[EV_RERUN] += 1;
        }
        self.th[t].bound_signalled = false;
        self.th[t].regs.rewound = false;
        self.th[t].regs.rax = 0;
        self.th[t].jumped = None;
        let number = self.th[t].regs.rdx as i64;
        if number == UNKNOWN_SYSCALL {
            return self.fault(t);
        }
        let s = Syscall::from_raw(number).expect("a modelled syscall");
        let r = match s {
            Syscall::Send => self.send(t, true, false),
            Syscall::NbSend => self.send(t, false, false),
            Syscall::Call => self.send(t, true, true),
            Syscall::CallInterruptible => self.call_interruptible(t),
            Syscall::Recv => self.recv(t, true),
            Syscall::NbRecv => self.recv(t, false),
            Syscall::Reply => {
                self.reply(t);
                Ok(())
            }
            Syscall::ReplyRecv => {
                self.reply(t);
                self.recv(t, true)
            }
            _ => panic!("model: {s:?} is not modelled"),
        };
        if let Err(e) = r {
            self.th[t].failed += 1;
            self.th[t].regs.rax = err(e);
        }
    }

    /// TCB Suspend.
    fn suspend(&mut self, t: usize) {
        self.cancel_ipc(t);
        self.lose_reply_right(t, false);
        self.th[t].st = St::Inactive;
    }

    /// TCB Resume (every thread has an address space).
    fn resume(&mut self, t: usize) {
        if self.th[t].st == St::Inactive {
            self.th[t].st = St::Restart;
        }
    }

    /// The last capability to thread `t` is deleted.
    fn delete_thread(&mut self, t: usize) {
        self.cancel_ipc(t);
        self.th[t].st = St::Inactive;
        if self.th[t].bound {
            self.th[t].bound = false;
            self.n.bound = None;
        }
        self.lose_reply_right(t, true);
        self.th[t].alive = false;
        self.th[t].buffer = None;
        self.th[t].handler = None;
    }

    /// The endpoint's last capability is deleted: every waiter restarts.
    fn cancel_all(&mut self, e: usize) {
        for t in core::mem::take(&mut self.ep[e].queue) {
            self.rewind(t);
            self.th[t].st = St::Restart;
            self.cov.events[EV_CANCEL_ALL] += 1;
        }
        self.ep[e].state = EP_IDLE;
    }

    /// CancelBadgedSends through a capability with `badge` (an unbadged one cancels nothing,
    /// as in seL4).
    fn cancel_badged_sends(&mut self, e: usize, badge: u64) {
        if badge == 0 || self.ep[e].state != EP_SEND {
            return;
        }
        for t in self.ep[e].queue.clone() {
            if let St::Send { badge: b, .. } = self.th[t].st
                && b == badge
            {
                self.ep[e].queue.retain(|&x| x != t);
                self.rewind(t);
                self.th[t].st = St::Restart;
                self.cov.events[EV_CANCEL_BADGED] += 1;
            }
        }
        if self.ep[e].queue.is_empty() {
            self.ep[e].state = EP_IDLE;
        }
    }

    /// A thread loses its IPC buffer (revoked frame, or SetIPCBuffer(0)).
    fn lose_buffer(&mut self, t: usize) {
        if self.th[t].buffer.take().is_some() && self.th[t].st.blocked() {
            self.cov.events[EV_BUFFER_MID_IPC] += 1;
        }
    }
}

// ---- the world the kernel runs, beside the model ----

/// The fixture, the model, and which kernel object stands for which model object.
pub struct Sim {
    pub fx: Fx,
    pub m: Model,
    tcbs: [*mut Tcb; THREADS],
    eps: [u64; ENDPOINTS],
    ntfn: u64,
    frames: [u64; FRAMES],
}

fn retype_into(fx: &mut Fx, ty: ObjectType, slot: u64) -> Result<(), String> {
    let r = fx.invoke(SLOT_U_MAIN, inv::UNTYPED_RETYPE, &[ty as u64, 0, 0, 0, slot, 1], &[SLOT_ROOT_COPY]);
    if r.rax != 0 {
        return Err(format!("retype of {ty:?} into slot {slot}: error {}", r.rax));
    }
    Ok(())
}

fn mint(fx: &mut Fx, dest: u64, src: u64, rights: u64, badge: u64) {
    let r = fx.invoke(SLOT_ROOT_COPY, inv::CNODE_MINT, &[dest, DEPTH, src, DEPTH, rights, badge], &[SLOT_ROOT_COPY]);
    assert_eq!(r.rax, 0, "mint into slot {dest}");
}

fn object(fx: &Fx, slot: u64) -> u64 {
    match fx.w.slot(slot).cap() {
        Cap::Endpoint { ptr, .. } | Cap::Notification { ptr, .. } | Cap::Frame { ptr, .. } | Cap::Tcb { ptr } => ptr,
        c => panic!("slot {slot}: {c:?}"),
    }
}

fn vaddr(off: usize) -> u64 {
    0x10_0000 + (off as u64) * 0x400
}

impl Default for Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Sim {
    /// The initial world: every thread runnable with frame `t % 4` (quarter `t / 4`) as its IPC
    /// buffer, threads 0–2 in one address space and the others in another, the notification bound
    /// to thread 0.
    pub fn new() -> Sim {
        let mut fx = Fx::new();
        for i in 0..2 {
            retype_into(&mut fx, ObjectType::Pml4, SLOT_PML4 + i).expect("PML4");
        }
        for e in 0..ENDPOINTS as u64 {
            Self::make_endpoint(&mut fx, e as usize).expect("endpoint");
        }
        retype_into(&mut fx, ObjectType::Notification, SLOT_NTFN).expect("notification");
        for (i, &(rights, badge)) in NTFN_CAPS.iter().enumerate().skip(1) {
            mint(&mut fx, SLOT_NTFN + i as u64, SLOT_NTFN, rights, badge);
        }
        for f in 0..FRAMES as u64 {
            retype_into(&mut fx, ObjectType::Frame4K, SLOT_FRAME + f).expect("frame");
        }
        let mut sim = Sim {
            tcbs: [core::ptr::null_mut(); THREADS],
            eps: [0; ENDPOINTS],
            ntfn: object(&fx, SLOT_NTFN),
            frames: [0; FRAMES],
            m: Model {
                th: (0..THREADS).map(|_| MThread::new()).collect(),
                ep: (0..ENDPOINTS).map(|_| MEp { alive: true, ..MEp::default() }).collect(),
                n: MNtfn::default(),
                mem: std::vec![[0; FRAME_WORDS]; FRAMES],
                frame_alive: std::vec![true; FRAMES],
                slots: [std::vec![None; SLOTS], std::vec![None; SLOTS]],
                cov: Coverage::default(),
            },
            fx,
        };
        for e in 0..ENDPOINTS {
            sim.eps[e] = object(&sim.fx, SLOT_EP + (e * EP_CAPS.len()) as u64);
        }
        for f in 0..FRAMES {
            sim.frames[f] = object(&sim.fx, SLOT_FRAME + f as u64);
        }
        let r = sim.fx.invoke(
            SLOT_U_MAIN,
            inv::UNTYPED_RETYPE,
            &[ObjectType::CNode as u64, DEPTH, 0, 0, SLOT_CNODE_B, 1],
            &[SLOT_ROOT_COPY],
        );
        assert_eq!(r.rax, 0, "the second CNode");
        let guard_size_58 = 64 - DEPTH;
        mint(&mut sim.fx, SLOT_CNODE_B_ROOT, SLOT_CNODE_B, ALL, guard_size_58);
        sim.copy_to_b(SLOT_CNODE_B, SLOT_ROOT_COPY);
        for s in SLOT_EP..SLOT_RECV {
            sim.copy_to_b(s, s);
        }
        for t in 0..THREADS {
            sim.make_thread(t, t % FRAMES, t / FRAMES).expect("thread");
        }
        let r = sim.fx.invoke(SLOT_TCB, inv::TCB_BIND_NOTIFICATION, &[], &[SLOT_NTFN]);
        assert_eq!(r.rax, 0);
        sim.m.th[0].bound = true;
        sim.m.n.bound = Some(0);
        // The model's view of every slot, from the world as made.
        for space in 0..2 {
            for s in 0..SLOTS {
                sim.m.slots[space][s] = sim.classify(space, s as u64);
            }
        }
        sim.compare().expect("the initial world agrees with the model");
        sim
    }

    fn make_endpoint(fx: &mut Fx, e: usize) -> Result<(), String> {
        let base = SLOT_EP + (e * EP_CAPS.len()) as u64;
        retype_into(fx, ObjectType::Endpoint, base)?;
        for (i, &(rights, badge)) in EP_CAPS.iter().enumerate().skip(1) {
            mint(fx, base + i as u64, base, rights, if badge == 0 { 0 } else { badge + e as u64 });
        }
        Ok(())
    }

    /// Copy the capability in root CNode slot `src` into the second CNode's slot `dest`.
    fn copy_to_b(&mut self, src: u64, dest: u64) {
        let r = self.fx.invoke(SLOT_CNODE_B, inv::CNODE_COPY, &[dest, DEPTH, src, DEPTH, ALL], &[SLOT_ROOT_COPY]);
        assert_eq!(r.rax, 0, "copy of slot {src} into the second CNode");
    }

    /// Slot `s` of CSpace `space`'s CNode.
    fn slot(&self, space: usize, s: u64) -> crate::object::kmem::SlotRef {
        if space == 0 {
            return self.fx.w.slot(s);
        }
        let b = self.fx.w.slot(SLOT_CNODE_B).cap();
        crate::object::kmem::SlotSpan::of_cnode(&b).and_then(|span| span.slot(s)).expect("a slot of the second CNode")
    }

    /// The model capability for what the kernel holds in slot `s` of CSpace `space`.
    fn classify(&self, space: usize, s: u64) -> Option<MCap> {
        Some(match self.slot(space, s).cap() {
            Cap::Null => return None,
            Cap::Endpoint { ptr, badge, rights } => MCap::Ep {
                e: self.eps.iter().position(|&p| p == ptr).expect("a world endpoint"),
                badge,
                rights: rights.bits(),
            },
            Cap::Notification { ptr, badge, rights } => {
                assert_eq!(ptr, self.ntfn);
                MCap::Ntfn { badge, rights: rights.bits() }
            }
            Cap::Frame { ptr, .. } if self.frames.contains(&ptr) => {
                MCap::Frame(self.frames.iter().position(|&p| p == ptr).unwrap())
            }
            Cap::Untyped { .. } if space == 0 && s == SLOT_U_MAIN => MCap::Untyped,
            _ => MCap::Other,
        })
    }

    /// Make thread `t` (a new TCB in its slot): runnable, in its address space, with frame `f`
    /// (quarter `off`) as its IPC buffer, registers as after a completed syscall.
    fn make_thread(&mut self, t: usize, f: usize, off: usize) -> Result<(), String> {
        let slot = SLOT_TCB + t as u64;
        retype_into(&mut self.fx, ObjectType::Tcb, slot)?;
        let p = object(&self.fx, slot) as *mut Tcb;
        self.fx.equip(p);
        let in_b = t >= FIRST_IN_B;
        let pml4 = SLOT_PML4 + u64::from(in_b);
        // SAFETY: `p` is a live TCB of the world (just made); the span is used at once.
        let dest = unsafe { Tcb::slots_of(p) }.slot(TCB_VSPACE as u64).expect("VSpace slot");
        mdb::cte_insert(self.fx.w.slot(pml4).cap(), self.fx.w.slot(pml4), dest);
        // (The fixture gave it a buffer of its own, replaced here.)
        let live = self.m.frame_alive[f];
        let r = if live {
            self.fx.invoke(slot, inv::TCB_SET_IPC_BUFFER, &[vaddr(off)], &[SLOT_FRAME + f as u64])
        } else {
            self.fx.invoke(slot, inv::TCB_SET_IPC_BUFFER, &[0], &[])
        };
        assert_eq!(r.rax, 0, "SetIPCBuffer of a new thread");
        if in_b {
            let r = self.fx.invoke(slot, inv::TCB_SET_SPACE, &[0], &[SLOT_CNODE_B_ROOT, pml4]);
            assert_eq!(r.rax, 0, "SetSpace into the second CSpace");
        }
        // Threads 3 and 4 run one priority above the others: a Call or ReplyRecv to one of them
        // from a lower one's side still takes the fastpath, the other way round only when no
        // higher thread is ready (else the general path, with the same result).
        if in_b {
            // SAFETY: `p` is a live, runnable thread of the world, neither current nor referenced
            // elsewhere meanwhile; it is queued again at its new priority.
            unsafe {
                self.fx.k.sched.remove(p);
                tcb(p).priority += 1;
                self.fx.k.sched.wake(p);
            }
        }
        let tr = tcb(p);
        (tr.regs.rip, tr.regs.vector) = (RIP, SYSCALL_ENTRY);
        self.tcbs[t] = p;
        self.m.th[t] = MThread::new();
        self.m.th[t].buffer = live.then_some((f, off));
        self.m.th[t].space = usize::from(in_b);
        Ok(())
    }

    fn tid(&self, p: u64) -> Result<usize, String> {
        (0..THREADS)
            .find(|&t| self.m.th[t].alive && self.tcbs[t] as u64 == p)
            .ok_or_else(|| format!("{p:#x} is no live thread of the world"))
    }

    fn ep_id(&self, p: u64) -> Result<usize, String> {
        (0..ENDPOINTS)
            .find(|&e| self.m.ep[e].alive && self.eps[e] == p)
            .ok_or_else(|| format!("{p:#x} is no live endpoint of the world"))
    }

    /// The user's part of a new syscall: registers, message words, capability pointers, receive
    /// slot, written into the thread's registers and (if it has one) IPC buffer, in the kernel's
    /// thread and in the model alike.
    #[allow(clippy::too_many_arguments)]
    fn user_writes(
        &mut self,
        t: usize,
        call: u8,
        cap: u8,
        label: u16,
        len: u8,
        seed: u64,
        ncaps: u8,
        caps: [u8; 3],
        recv: u8,
    ) {
        let s = SYSCALLS[call as usize % SYSCALLS.len()];
        let cptr = syscall_cptr(cap);
        let len = u64::from(len) & 0x7f;
        let ncaps = u64::from(ncaps) & 3;
        let info = MessageInfo::new(u64::from(label), 0, ncaps, len).0;
        let word = |i: usize| seed.rotate_left(i as u32 * 7) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let tr = tcb(self.tcbs[t]);
        let m = &mut self.m;
        tr.regs.rdx = s as i64 as u64;
        tr.regs.rdi = cptr;
        tr.regs.rsi = info;
        m.th[t].regs.rdx = tr.regs.rdx;
        m.th[t].regs.rdi = cptr;
        m.th[t].regs.rsi = info;
        for i in 0..MSG_REGISTERS {
            tr.regs.set_mr(i, word(i));
            m.th[t].regs.mr[i] = word(i);
        }
        for i in MSG_REGISTERS..(len as usize).min(MSG_MAX_LENGTH as usize) {
            let a = tr.set_ipc_msg(i, word(i));
            let b = m.write(t, W_MSG + i, word(i));
            assert_eq!(a, b, "the thread's buffer, in the kernel and in the model");
        }
        for (i, &x) in caps.iter().enumerate().take(ncaps as usize) {
            let c = extra_cptr(x, cptr);
            tr.set_ipc_cap_word(i, c);
            m.write(t, W_CAPS + i, c);
        }
        let fields = match recv {
            0..=3 => Some([SLOT_ROOT_COPY, SLOT_RECV + u64::from(recv), DEPTH]),
            4 => Some([SLOT_ROOT_COPY, SLOT_RECV, 0]),
            5 => Some([SLOT_EMPTY, SLOT_RECV, DEPTH]),
            _ => None,
        };
        if let (Some(fields), Some(b)) = (fields, tr.ipc_buffer()) {
            for (i, v) in fields.into_iter().enumerate() {
                // SAFETY: `b` is the thread's IPC buffer (a live frame its slot holds), and the
                // receive fields lie inside it; a raw write, as the thread's own store would be.
                unsafe { (&raw mut (*b).receive_cnode).add(i).write(v) };
                m.write(t, W_RECV + i, v);
            }
        }
    }

    /// The kernel runs thread `t` (an activation), and, if `syscall`, the syscall its registers
    /// describe, fastpath first as the entry does.
    fn run_impl(&mut self, t: usize, syscall: bool) {
        let fast = self.run_impl_inner(t, syscall);
        if fast {
            let ev =
                if self.m.th[t].regs.rdx == Syscall::Call as i64 as u64 { EV_FAST_CALL } else { EV_FAST_REPLY_RECV };
            self.m.cov.events[ev] += 1;
        }
    }

    /// [`Sim::run_impl`]; returns whether a fastpath took the syscall.
    fn run_impl_inner(&mut self, t: usize, syscall: bool) -> bool {
        let p = self.tcbs[t];
        self.fx.make_current(p);
        let tr = tcb(p);
        if tr.state == ThreadState::Restart {
            tr.state = ThreadState::Running;
        }
        if !syscall {
            return false;
        }
        // The `syscall` instruction (at RIP - 2 for a rewound thread) enters with RIP after it.
        (tr.regs.rip, tr.regs.vector) = (RIP, SYSCALL_ENTRY);
        let number = tr.regs.rdx as i64;
        let fast = if number == Syscall::Call as i64 {
            fastpath::call(&mut self.fx.k, tcb(p))
        } else if number == Syscall::ReplyRecv as i64 {
            fastpath::reply_recv(&mut self.fx.k, tcb(p))
        } else {
            false
        };
        if !fast {
            handle_syscall(&mut self.fx.k, number);
        }
        fast
    }

    fn live(&self, t: u8) -> Option<usize> {
        let t = t as usize % THREADS;
        self.m.th[t].alive.then_some(t)
    }

    /// The `t`-th (modulo) live thread with state `st` (any runnable one if `None`).
    fn pick(&self, t: u8, st: Option<St>) -> Option<usize> {
        let ok = |m: &MThread| m.alive && st.map_or(m.st.runnable(), |s| m.st == s);
        let r: Vec<usize> = (0..THREADS).filter(|&i| ok(&self.m.th[i])).collect();
        (!r.is_empty()).then(|| r[t as usize % r.len()])
    }

    /// Perform `op` on both sides; `Err` when the kernel's answer to a driver invocation differs
    /// from the model's. Returns whether the op ran (false: skipped).
    fn apply(&mut self, op: &Op) -> Result<bool, String> {
        let cov_op = |c: &mut Coverage, i: usize| c.ops[i] += 1;
        let expect = |what: &str, got: u64, want: u64| {
            if got == want { Ok(()) } else { Err(format!("{what}: the kernel returned {got}, the model {want}")) }
        };
        match *op {
            Op::Sys { t, call, cap, label, len, seed, ncaps, caps, recv } => {
                // A runnable thread makes it (a blocked one could not); a CallInterruptible, most of
                // the time, by the thread the notification is bound to (only it can be interrupted).
                let bound = self.m.n.bound.filter(|&b| self.m.th[b].alive && self.m.th[b].st.runnable());
                let t = match bound {
                    Some(b) if op.kind() == K_CALL_INTERRUPTIBLE && t % 4 != 0 => Some(b),
                    _ => self.pick(t, None),
                };
                let Some(t) = t else { return Ok(false) };
                if self.m.th[t].regs.rewound {
                    // The thread can only execute its rewound syscall.
                    cov_op(&mut self.m.cov, 7);
                } else {
                    self.user_writes(t, call, cap, label, len, seed, ncaps, caps, recv);
                    cov_op(&mut self.m.cov, op.kind());
                }
                if self.m.th[t].bound_signalled && !self.m.th[t].regs.rewound {
                    self.m.cov.events[EV_BOUND_NOT_RERUN] += 1;
                }
                self.run_impl(t, true);
                self.m.exec(t);
            }
            Op::Run(t) => {
                // A thread taken out of a syscall if there is one, else any runnable one.
                let Some(t) = self.pick(t, Some(St::Restart)).or_else(|| self.pick(t, None)) else { return Ok(false) };
                cov_op(&mut self.m.cov, 7);
                let rewound = self.m.th[t].regs.rewound;
                if !rewound && self.m.th[t].bound_signalled {
                    self.m.cov.events[EV_BOUND_NOT_RERUN] += 1;
                    self.m.th[t].bound_signalled = false;
                }
                self.run_impl(t, rewound);
                if rewound {
                    self.m.exec(t);
                } else {
                    self.m.activate(t);
                }
            }
            Op::Suspend(t) | Op::Resume(t) => {
                let suspend = matches!(op, Op::Suspend(_));
                // Preferably a blocked thread to suspend, an inactive one to resume.
                let blocked: Vec<usize> =
                    (0..THREADS).filter(|&i| self.m.th[i].alive && self.m.th[i].st.blocked()).collect();
                let preferred = if suspend && (t as usize) < THREADS {
                    (!blocked.is_empty()).then(|| blocked[t as usize % blocked.len()])
                } else if suspend {
                    None
                } else {
                    self.pick(t, Some(St::Inactive))
                };
                let Some(t) = preferred.or_else(|| self.live(t)) else { return Ok(false) };
                let label = if suspend { inv::TCB_SUSPEND } else { inv::TCB_RESUME };
                let r = self.fx.invoke(SLOT_TCB + t as u64, label, &[], &[]);
                if suspend {
                    self.m.suspend(t);
                } else {
                    self.m.resume(t);
                }
                cov_op(&mut self.m.cov, if suspend { 8 } else { 9 });
                expect("Suspend/Resume", r.rax, 0)?;
            }
            Op::SetBuffer { t, frame, off } => {
                let Some(t) = self.live(t) else { return Ok(false) };
                let slot = SLOT_TCB + t as u64;
                let r = match frame {
                    Some(f) => {
                        let (f, off) = (f as usize % FRAMES, off as usize % 4);
                        cov_op(&mut self.m.cov, 10);
                        let r = self.fx.invoke(slot, inv::TCB_SET_IPC_BUFFER, &[vaddr(off)], &[SLOT_FRAME + f as u64]);
                        if !self.m.frame_alive[f] {
                            // No capability in the slot: nothing changes.
                            return expect("SetIPCBuffer of a deleted frame", r.rax, err(Error::InvalidCapability))
                                .map(|()| true);
                        }
                        self.m.th[t].buffer = Some((f, off));
                        r
                    }
                    None => {
                        cov_op(&mut self.m.cov, 11);
                        self.m.lose_buffer(t);
                        self.fx.invoke(slot, inv::TCB_SET_IPC_BUFFER, &[0], &[])
                    }
                };
                expect("SetIPCBuffer", r.rax, 0)?;
            }
            Op::RevokeFrame(f) | Op::DeleteFrame(f) => {
                let f = f as usize % FRAMES;
                if !self.m.frame_alive[f] {
                    return Ok(false);
                }
                let delete = matches!(op, Op::DeleteFrame(_));
                cov_op(&mut self.m.cov, if delete { 21 } else { 12 });
                let slot = SLOT_FRAME + f as u64;
                let r = self.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[slot, DEPTH], &[]);
                for t in 0..THREADS {
                    if self.m.th[t].buffer.is_some_and(|(g, _)| g == f) {
                        self.m.lose_buffer(t);
                    }
                }
                // Every copy goes: in receive slots, in the second CNode.
                for (space, slots) in self.m.slots.iter_mut().enumerate() {
                    for (i, c) in slots.iter_mut().enumerate() {
                        if *c == Some(MCap::Frame(f)) && (space, i as u64) != (0, slot) {
                            *c = None;
                        }
                    }
                }
                expect("Revoke of a frame", r.rax, 0)?;
                if delete {
                    let r = self.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[slot, DEPTH], &[]);
                    self.m.slots[0][slot as usize] = None;
                    self.m.frame_alive[f] = false;
                    expect("Delete of a frame", r.rax, 0)?;
                }
            }
            Op::RecreateFrame(f) => {
                let f = f as usize % FRAMES;
                if self.m.frame_alive[f] {
                    return Ok(false);
                }
                cov_op(&mut self.m.cov, 22);
                let slot = SLOT_FRAME + f as u64;
                retype_into(&mut self.fx, ObjectType::Frame4K, slot)?;
                self.frames[f] = object(&self.fx, slot);
                self.m.mem[f] = [0; FRAME_WORDS];
                self.m.frame_alive[f] = true;
                self.m.slots[0][slot as usize] = Some(MCap::Frame(f));
                if self.m.slots[1][slot as usize].is_none() {
                    self.copy_to_b(slot, slot);
                    self.m.slots[1][slot as usize] = Some(MCap::Frame(f));
                }
            }
            Op::DeleteEndpoint(e) => {
                let e = e as usize % ENDPOINTS;
                if !self.m.ep[e].alive {
                    return Ok(false);
                }
                cov_op(&mut self.m.cov, 13);
                let orig = SLOT_EP + (e * EP_CAPS.len()) as u64;
                let r1 = self.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_REVOKE, &[orig, DEPTH], &[]);
                let r2 = self.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[orig, DEPTH], &[]);
                for s in self.m.slots.iter_mut().flatten() {
                    if matches!(s, Some(MCap::Ep { e: x, .. }) if *x == e) {
                        *s = None;
                    }
                }
                // The copies in fault-handler slots descend from the original too.
                for th in self.m.th.iter_mut() {
                    if matches!(th.handler, Some(MCap::Ep { e: x, .. }) if x == e) {
                        th.handler = None;
                    }
                }
                self.m.cancel_all(e);
                self.m.ep[e].alive = false;
                expect("Revoke of an endpoint", r1.rax, 0)?;
                expect("Delete of an endpoint", r2.rax, 0)?;
            }
            Op::RecreateEndpoint(e) => {
                let e = e as usize % ENDPOINTS;
                if self.m.ep[e].alive {
                    return Ok(false);
                }
                Self::make_endpoint(&mut self.fx, e)?;
                cov_op(&mut self.m.cov, 14);
                self.eps[e] = object(&self.fx, SLOT_EP + (e * EP_CAPS.len()) as u64);
                self.m.ep[e] = MEp { alive: true, ..MEp::default() };
                for (i, &(rights, badge)) in EP_CAPS.iter().enumerate() {
                    let badge = if badge == 0 { 0 } else { badge + e as u64 };
                    let s = SLOT_EP + (e * EP_CAPS.len() + i) as u64;
                    self.copy_to_b(s, s);
                    for space in 0..2 {
                        self.m.slots[space][s as usize] = Some(MCap::Ep { e, badge, rights });
                    }
                }
            }
            Op::CancelBadged(i) => {
                let slot = SLOT_EP + u64::from(i) % (ENDPOINTS * EP_CAPS.len()) as u64;
                cov_op(&mut self.m.cov, 15);
                let r = self.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_CANCEL_BADGED_SENDS, &[slot, DEPTH], &[]);
                let want = match self.m.slots[0][slot as usize] {
                    Some(MCap::Ep { e, badge, rights: ALL }) => {
                        self.m.cancel_badged_sends(e, badge);
                        0
                    }
                    _ => err(Error::IllegalOperation),
                };
                expect("CancelBadgedSends", r.rax, want)?;
            }
            Op::DeleteThread(t) => {
                let Some(t) = self.live(t) else { return Ok(false) };
                cov_op(&mut self.m.cov, 16);
                let r = self.fx.invoke(SLOT_ROOT_COPY, inv::CNODE_DELETE, &[SLOT_TCB + t as u64, DEPTH], &[]);
                self.m.delete_thread(t);
                expect("Delete of a thread", r.rax, 0)?;
            }
            Op::NewThread { t, frame, off } => {
                let t = t as usize % THREADS;
                if self.m.th[t].alive {
                    return Ok(false);
                }
                cov_op(&mut self.m.cov, 17);
                self.make_thread(t, frame as usize % FRAMES, off as usize % 4)?;
            }
            Op::Signal(i) => {
                let i = i as usize % NTFN_CAPS.len();
                cov_op(&mut self.m.cov, 18);
                let d = self.fx.driver();
                let r = self.fx.sys(d, Syscall::Send, SLOT_NTFN + i as u64, 0, &[], &[]);
                let (rights, badge) = NTFN_CAPS[i];
                assert!(rights & W != 0);
                self.m.signal(badge);
                expect("Signal", r.rax, 0)?;
            }
            Op::Bind(t) | Op::Unbind(t) => {
                let Some(t) = self.live(t) else { return Ok(false) };
                cov_op(&mut self.m.cov, 19);
                let slot = SLOT_TCB + t as u64;
                let (r, want) = if matches!(op, Op::Bind(_)) {
                    let r = self.fx.invoke(slot, inv::TCB_BIND_NOTIFICATION, &[], &[SLOT_NTFN]);
                    let ok = self.m.n.bound.is_none() && !self.m.th[t].bound && self.m.n.state != NTFN_WAITING;
                    if ok {
                        self.m.n.bound = Some(t);
                        self.m.th[t].bound = true;
                        // Bits pending end a CallInterruptible the thread waits in.
                        if self.m.n.state == NTFN_ACTIVE && self.m.interrupt(t, self.m.n.word) {
                            self.m.n.word = 0;
                            self.m.n.state = NTFN_IDLE;
                        }
                    }
                    (r, if ok { 0 } else { err(Error::IllegalOperation) })
                } else {
                    let r = self.fx.invoke(slot, inv::TCB_UNBIND_NOTIFICATION, &[], &[]);
                    let ok = self.m.th[t].bound;
                    if ok {
                        self.m.n.bound = None;
                        self.m.th[t].bound = false;
                    }
                    (r, if ok { 0 } else { err(Error::IllegalOperation) })
                };
                expect("Bind/Unbind", r.rax, want)?;
            }
            Op::ClearRecv(r) => {
                let s = SLOT_RECV + u64::from(r) % RECV_SLOTS as u64;
                let space = usize::from(r as usize % (2 * RECV_SLOTS) >= RECV_SLOTS);
                cov_op(&mut self.m.cov, 20);
                let cnode = if space == 0 { SLOT_ROOT_COPY } else { SLOT_CNODE_B };
                let res = self.fx.invoke(cnode, inv::CNODE_DELETE, &[s, DEPTH], &[]);
                self.m.slots[space][s as usize] = None;
                expect("Delete of a receive slot", res.rax, 0)?;
            }
            Op::SetFaultHandler { t, cap } => {
                let Some(t) = self.live(t) else { return Ok(false) };
                cov_op(&mut self.m.cov, op.kind());
                let arg = fault_handler_arg(cap);
                let caps: Vec<u64> = arg.into_iter().collect();
                let r = self.fx.invoke(SLOT_TCB + t as u64, inv::TCB_SET_FAULT_HANDLER, &[], &caps);
                let want = match arg.map(|s| self.m.slots[0][s as usize]) {
                    None => {
                        self.m.th[t].handler = None;
                        0
                    }
                    Some(Some(c @ MCap::Ep { rights, .. })) if rights & W != 0 && rights & (G | GR) != 0 => {
                        self.m.th[t].handler = Some(c);
                        0
                    }
                    Some(Some(MCap::Ep { .. })) => err(Error::IllegalOperation),
                    Some(_) => err(Error::InvalidCapability),
                };
                if want != 0 {
                    self.m.cov.events[EV_HANDLER_REFUSED] += 1;
                }
                expect("SetFaultHandler", r.rax, want)?;
            }
            Op::Fault(t) => {
                let Some(t) = self.pick(t, None) else { return Ok(false) };
                if self.m.th[t].regs.rewound {
                    // The thread can only execute its rewound syscall.
                    cov_op(&mut self.m.cov, 7);
                } else {
                    cov_op(&mut self.m.cov, 25);
                    let tr = tcb(self.tcbs[t]);
                    tr.regs.rdx = UNKNOWN_SYSCALL as u64;
                    tr.regs.rsp = FAULT_RSP;
                    self.m.th[t].regs.rdx = UNKNOWN_SYSCALL as u64;
                }
                self.run_impl(t, true);
                self.m.exec(t);
            }
        }
        Ok(true)
    }

    /// Perform `op`, run the invariant checker, and compare the kernel with the model.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        if !self.apply(op)? {
            self.m.cov.skipped[op.kind()] += 1;
        }
        self.fx.check(&format!("{op:?}"));
        self.compare()
    }

    /// Everything the model predicts, against the kernel.
    pub fn compare(&self) -> Result<(), String> {
        for t in 0..THREADS {
            if self.m.th[t].alive {
                self.compare_thread(t).map_err(|e| format!("thread {t}: {e}"))?;
            }
        }
        for e in 0..ENDPOINTS {
            let me = &self.m.ep[e];
            if !me.alive {
                continue;
            }
            // SAFETY: the endpoint is live (the model says so, and the slots are compared below).
            let ke = unsafe { &*(self.eps[e] as *const Endpoint) };
            let q = self.queue(ke.queue.head)?;
            if (ke.state, &q) != (me.state, &me.queue) {
                return Err(format!(
                    "endpoint {e}: kernel state {} queue {q:?}, model {} {:?}",
                    ke.state, me.state, me.queue
                ));
            }
        }
        // SAFETY: the notification is never deleted.
        let kn = unsafe { &*(self.ntfn as *const Notification) };
        let q = self.queue(kn.queue.head)?;
        let bound = if kn.bound_tcb == 0 { None } else { Some(self.tid(kn.bound_tcb)?) };
        let n = &self.m.n;
        if (kn.state, kn.word, &q, bound) != (n.state, n.word, &n.queue, n.bound) {
            return Err(format!(
                "notification: kernel state {} word {:#x} queue {q:?} bound {bound:?}, model {} {:#x} {:?} {:?}",
                kn.state, kn.word, n.state, n.word, n.queue, n.bound
            ));
        }
        for space in 0..2 {
            for s in (SLOT_EP..=SLOT_EMPTY).chain([SLOT_U_MAIN, SLOT_ROOT_COPY]) {
                let k = self.classify_live(space, s)?;
                if k != self.m.slots[space][s as usize] {
                    let m = self.m.slots[space][s as usize];
                    return Err(format!("CSpace {space} slot {s}: kernel {k:?}, model {m:?}"));
                }
            }
        }
        for f in (0..FRAMES).filter(|&f| self.m.frame_alive[f]) {
            for i in 0..FRAME_WORDS {
                // SAFETY: the frame is live (the model says so, and its capability is compared
                // above); the read is inside the 4 KiB frame.
                let k = unsafe { (self.frames[f] as *const u64).add(i).read() };
                if k != self.m.mem[f][i] {
                    return Err(format!("frame {f} word {i}: kernel {k:#x}, model {:#x}", self.m.mem[f][i]));
                }
            }
        }
        Ok(())
    }

    /// [`Sim::classify`] that tolerates endpoints the model thinks dead (reported as a mismatch).
    fn classify_live(&self, space: usize, s: u64) -> Result<Option<MCap>, String> {
        match self.slot(space, s).cap() {
            Cap::Endpoint { ptr, badge, rights } => Ok(Some(MCap::Ep {
                e: self.ep_id(ptr).map_err(|e| format!("slot {s}: {e}"))?,
                badge,
                rights: rights.bits(),
            })),
            _ => Ok(self.classify(space, s)),
        }
    }

    fn queue(&self, head: u64) -> Result<Vec<usize>, String> {
        let mut out = Vec::new();
        let mut at = head;
        while at != 0 {
            out.push(self.tid(at)?);
            if out.len() > THREADS {
                return Err("a wait queue does not end".into());
            }
            at = tcb(at as *mut Tcb).ep_next;
        }
        Ok(out)
    }

    fn compare_thread(&self, t: usize) -> Result<(), String> {
        let kt = tcb(self.tcbs[t]);
        let mt = &self.m.th[t];
        let st = match kt.state {
            ThreadState::Inactive => St::Inactive,
            ThreadState::Running => St::Running,
            ThreadState::Restart => St::Restart,
            ThreadState::BlockedOnReply { interruptible } => St::Reply { intr: interruptible },
            ThreadState::BlockedOnNotification { ntfn } if ntfn == self.ntfn => St::Ntfn,
            ThreadState::BlockedOnReceive { ep, can_grant } => St::Recv { e: self.ep_id(ep)?, grant: can_grant },
            ThreadState::BlockedOnSend { ep, badge, can_grant, can_grant_reply, is_call, interruptible } => St::Send {
                e: self.ep_id(ep)?,
                badge,
                grant: can_grant,
                grant_reply: can_grant_reply,
                call: is_call,
                intr: interruptible,
            },
            s => return Err(format!("unexpected state {s:?}")),
        };
        if st != mt.st {
            return Err(format!("kernel state {st:?}, model {:?}", mt.st));
        }
        let r = &kt.regs;
        let rewound = match (r.rip, r.vector) {
            (rip, KERNEL_WRITTEN) if Some(rip) == mt.jumped => false,
            (rip, v) if mt.jumped.is_some() => {
                return Err(format!("rip {rip:#x} vector {v:#x}, model: a fault reply set rip {:#x?}", mt.jumped));
            }
            (RIP, SYSCALL_ENTRY) => false,
            (x, KERNEL_WRITTEN) if x == RIP - 2 => true,
            (rip, v) => return Err(format!("rip {rip:#x} vector {v:#x}")),
        };
        let mr = [r.r10, r.r8, r.r9, r.r15];
        let k = Regs { rax: r.rax, rdi: r.rdi, rsi: r.rsi, rdx: r.rdx, mr, rewound };
        let mut m = mt.regs;
        // A thread blocked or rewound has not returned from its syscall: its `rax` is not a
        // result (the fastpath leaves the caller's as it was).
        if mt.st.blocked() || mt.regs.rewound {
            m.rax = k.rax;
        }
        if k != m {
            return Err(format!("kernel registers {k:x?}, model {m:x?}"));
        }
        let caller = if kt.caller == 0 { None } else { Some(self.tid(kt.caller)?) };
        let holder = if kt.reply_holder == 0 { None } else { Some(self.tid(kt.reply_holder)?) };
        if (caller, holder) != (mt.caller, mt.reply_holder) {
            return Err(format!(
                "reply link (caller, holder): kernel {:?}, model {:?}",
                (caller, holder),
                (mt.caller, mt.reply_holder)
            ));
        }
        if caller.is_some() && kt.caller_can_grant != mt.caller_grant {
            return Err(format!("reply grant: kernel {}, model {}", kt.caller_can_grant, mt.caller_grant));
        }
        if (kt.bound_notification != 0) != mt.bound {
            return Err(format!("bound: kernel {:#x}, model {}", kt.bound_notification, mt.bound));
        }
        let want = mt.buffer.map(|(f, q)| (self.frames[f] + (q * BUFFER_WORDS * 8) as u64) as *mut IpcBuffer);
        if kt.ipc_buffer() != want {
            return Err(format!("IPC buffer: kernel {:?}, model {want:?} ({:?})", kt.ipc_buffer(), mt.buffer));
        }
        let handler = match kt.slots[TCB_FAULT_HANDLER].cap {
            Cap::Null => None,
            Cap::Endpoint { ptr, badge, rights } => {
                Some(MCap::Ep { e: self.ep_id(ptr)?, badge, rights: rights.bits() })
            }
            c => return Err(format!("fault-handler slot holds {c:?}")),
        };
        if handler != mt.handler {
            return Err(format!("fault handler: kernel {handler:?}, model {:?}", mt.handler));
        }
        if (kt.fault != Fault::None) != mt.fault {
            return Err(format!("fault: kernel {:?}, model {}", kt.fault, mt.fault));
        }
        let c = &kt.counters;
        if (c.ipc_sent, c.ipc_received, c.denied) != (mt.sent, mt.received, mt.failed) {
            return Err(format!(
                "counters (sent, received, failed): kernel {:?}, model {:?}",
                (c.ipc_sent, c.ipc_received, c.denied),
                (mt.sent, mt.received, mt.failed)
            ));
        }
        Ok(())
    }
}

// ---- operations at random ----

/// A deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u8 {
        (self.next() % n) as u8
    }
}

/// A message length: mostly short (the fastpath's and the register words'), sometimes long, up
/// to the 127 the message info can say.
pub fn length(x: u8) -> u8 {
    match x % 8 {
        0..=3 => x % 5,
        4..=5 => x % 12,
        6 => x % 121,
        _ => 120 + x % 8,
    }
}

/// One operation from a number stream, syscalls most of the time (the same mix as the
/// proptest strategy in `model_tests`).
pub fn random_op(rng: &mut Rng) -> Op {
    let t = rng.below(THREADS as u64);
    match rng.below(100) {
        0..=45 => Op::Sys {
            t,
            call: rng.below(SYSCALLS.len() as u64),
            cap: rng.next() as u8,
            // Label 0 a quarter of the time: a fault reply resumes the thread only with label 0.
            label: if rng.below(4) == 0 { 0 } else { rng.next() as u16 & 0xff },
            len: length(rng.next() as u8),
            seed: rng.next(),
            ncaps: if rng.below(2) == 0 { rng.below(4) } else { 0 },
            caps: [rng.next() as u8, rng.next() as u8, rng.next() as u8],
            recv: rng.below(8),
        },
        46..=55 => Op::Run(t),
        56..=65 => Op::Suspend(rng.below(2 * THREADS as u64)),
        66..=72 => Op::Resume(t),
        73..=74 => Op::SetBuffer { t, frame: Some(rng.below(FRAMES as u64)), off: rng.below(4) },
        75 => Op::SetBuffer { t, frame: None, off: 0 },
        76 => match rng.below(4) {
            0 => Op::DeleteFrame(rng.below(FRAMES as u64)),
            1 => Op::RecreateFrame(rng.below(FRAMES as u64)),
            _ => Op::RevokeFrame(rng.below(FRAMES as u64)),
        },
        77 => Op::DeleteEndpoint(rng.below(ENDPOINTS as u64)),
        78..=79 => Op::RecreateEndpoint(rng.below(ENDPOINTS as u64)),
        80..=81 => Op::CancelBadged(rng.below((ENDPOINTS * EP_CAPS.len()) as u64)),
        82 => Op::DeleteThread(t),
        83..=84 => Op::NewThread { t, frame: rng.below(FRAMES as u64), off: rng.below(4) },
        85..=89 => Op::Signal(rng.below(NTFN_CAPS.len() as u64)),
        90 => Op::Bind(t),
        91 => Op::Unbind(t),
        92..=94 => Op::ClearRecv(rng.below(2 * RECV_SLOTS as u64)),
        95..=96 => Op::SetFaultHandler { t, cap: rng.next() as u8 },
        _ => Op::Fault(t),
    }
}

/// Run `ops` operations from `seed` in worlds of `per_world` operations each; on a divergence,
/// the error names the seed, the world, the step and the world's operations so far.
pub fn run_seed(seed: u64, ops: u64, per_world: u64) -> Result<Coverage, String> {
    let mut rng = Rng::new(seed);
    let mut cov = Coverage::default();
    let mut done = 0;
    let mut world = 0;
    while done < ops {
        let mut sim = Sim::new();
        let mut log = Vec::new();
        let n = per_world.min(ops - done);
        for i in 0..n {
            let op = random_op(&mut rng);
            log.push(op.clone());
            if let Err(e) = sim.step(&op) {
                let tail = log.len().saturating_sub(40);
                let mut s = format!("seed {seed:#x}, world {world}, step {i}: {e}\nlast operations:\n");
                for (j, op) in log.iter().enumerate().skip(tail) {
                    s += &format!("  {j}: {op:?}\n");
                }
                return Err(s);
            }
        }
        cov.add(&sim.m.cov);
        done += n;
        world += 1;
    }
    Ok(cov)
}
