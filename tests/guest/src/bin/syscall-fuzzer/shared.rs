//! What the fuzzer's threads share across its address spaces: one page, mapped at [`SHARED_VA`]
//! in the root task's address space and in the second one, holding the run's parameters, the
//! epoch handshake, the workers' progress (for the controller's watchdog), the coverage
//! counters and a cache of what each slot of the playground CNode holds.
//!
//! Also the layout of the playground CNode (`P`, the fuzzer's CSpace) and the coverage tables:
//! which (object type, label) pairs and syscalls exist, and which of them can succeed with the
//! authority the fuzzer holds.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;

/// Where the shared page is mapped, in both address spaces (inside the page table the kernel
/// made for the root task's IPC buffer; below the program image, which starts at 4 MiB).
pub const SHARED_VA: u64 = 0x3f_8000;

/// Worker threads: two in the root task's address space, two in the second one.
pub const WORKERS: usize = 4;

/// `go` value that tells the workers the run is over.
pub const STOP: u64 = u64::MAX;

/// `rax` a worker sees when the controller took it out of a syscall that blocked for too long.
pub const RESCUED: u64 = 0x5e5c_0ed0;

// ---- the playground CNode P: 2^8 slots, guard 56, so slot k is capability pointer k ----

pub const P_RADIX: u64 = 8;
pub const P_SLOTS: usize = 1 << P_RADIX;
/// P itself: for the victims (whose CSpace is P) a capability to P in its own slot 1; for the
/// workers, P as they name it (capability pointer [`W_P`]).
pub const S_CN: u64 = 1;

// ---- how the workers name P ----
//
// A worker's CSpace root R is a CNode of two slots (guard 55). R's slot 1 holds P without a
// guard, so P's slot k is capability pointer `0x100 | k`. R's slot 0 holds a CNode I of two
// slots (guard 7) whose slot 1 holds P with P's own guard: capability pointer 1 names P itself,
// for CNode invocations, Retype destinations and receive slots. Every lookup walks through R and
// I, so no capability to either can be named: the fuzzer cannot change them, and what a worker
// names P is always P. (Were P's self-capability in P, a worker could delete it and put another
// CNode of P's shape there, and everything the workers believe about P would go wrong.)

/// P as the workers name it.
pub const W_P: u64 = 1;
/// Capability pointer of P's slot `slot` for a worker.
pub const fn w_slot(slot: u64) -> u64 {
    0x100 | slot
}
/// Guard sizes of R (in the workers' TCBs) and of I (in R's slot 0).
pub const R_GUARD: u64 = 64 - 8 - 1;
pub const I_GUARD: u64 = 8 - 1;
/// The fuzzer's main untyped (2^23 bytes) and a small one (2^16).
pub const S_UT: u64 = 2;
pub const S_UT_SMALL: u64 = 3;
/// The server's endpoint: write, grant and grant-reply, badged; the server also brokers
/// IRQControl Get and IOPortControl Issue for the fuzzer.
pub const S_SERVER: u64 = 4;
/// The victims' fault endpoint.
pub const S_FAULT: u64 = 5;
/// Two endpoints and a badged copy of each.
pub const S_EP: [u64; 2] = [6, 7];
pub const S_EP_BADGED: [u64; 2] = [8, 9];
pub const EP_BADGES: [u64; 2] = [0x11, 0x22];
/// Four notifications.
pub const S_NTFN: u64 = 10;
pub const N_NTFN: u64 = 4;
pub const S_TELEMETRY: u64 = 14;
/// An IRQ handler and an I/O port range over [`IOPORT_FIRST`, `IOPORT_LAST`].
pub const S_IRQ: u64 = 15;
pub const S_IOPORT: u64 = 16;
/// The victims' address space: PML4, PDPT, page directory, page table, code frame.
pub const S_VSPACE: u64 = 17;
pub const S_VPDPT: u64 = 18;
pub const S_VPD: u64 = 19;
pub const S_VPT: u64 = 20;
pub const S_VCODE: u64 = 21;
/// The victim threads.
pub const S_VICTIMS: u64 = 22;
pub const VICTIMS: u64 = 8;
/// The two frames holding the victims' IPC buffers (four 1 KiB buffers each).
pub const S_VBUF: u64 = 30;
/// Spare objects: four 4 KiB frames, a CNode of radix 4, an empty PML4, an unmapped PDPT, page
/// directory and page table, and a 2 MiB frame.
pub const S_FRAMES: u64 = 32;
pub const N_FRAMES: u64 = 4;
pub const S_SUBCN: u64 = 36;
pub const SUBCN_RADIX: u64 = 4;
pub const S_PML4: u64 = 37;
pub const S_PDPT: u64 = 38;
pub const S_PD: u64 = 39;
pub const S_PT: u64 = 40;
pub const S_FRAME2M: u64 = 41;
/// A thread that never runs, with the victims' MCP: the authority for their priorities.
pub const S_AUTH: u64 = 42;
/// Slots from here up start empty: destinations of Retype, Copy, Mint, receives.
pub const FIRST_SCRATCH: u64 = 48;
/// Victim `i` receives capabilities into slot `VICTIM_RECEIVE + i`.
pub const VICTIM_RECEIVE: u64 = 240;

/// The harmless I/O ports the fuzzer may hold: COM4's, a device this machine does not have.
pub const IOPORT_FIRST: u64 = 0x2e8;
pub const IOPORT_LAST: u64 = 0x2ef;
/// The one interrupt line the fuzzer is never given: COM1's, the console's.
pub const IRQ_REFUSED: u64 = 4;

// ---- the victims' address space ----

/// Victim code, then the two IPC-buffer pages.
pub const VCODE_VA: u64 = 0x80_0000_0000;
pub const VBUF_VA: u64 = VCODE_VA + 0x1000;
/// Offsets in the victim loop: the IPC syscall and the instruction after it.
pub const VCODE_SYSCALL: u64 = 9;
/// Base of the regions where the fuzzer maps paging structures and frames (PML4 slots 2..5).
pub const FUZZ_REGION: u64 = 0x100_0000_0000;

/// The victim loop: `1: mov rdx, rbx; mov rdi, r12; mov rsi, r13; syscall; mov rdx, -7
/// (Yield); syscall; jmp 1b`. A victim repeats the IPC syscall its registers name, yielding
/// after each, and touches no memory.
pub const VICTIM_CODE: [u8; 22] = [
    0x48, 0x89, 0xda, // mov rdx, rbx
    0x4c, 0x89, 0xe7, // mov rdi, r12
    0x4c, 0x89, 0xee, // mov rsi, r13
    0x0f, 0x05, // syscall
    0x48, 0xc7, 0xc2, 0xf9, 0xff, 0xff, 0xff, // mov rdx, -7
    0x0f, 0x05, // syscall
    0xeb, 0xea, // jmp 0
];

// ---- what a slot holds (a hint: the cache can be stale) ----

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Empty = 0,
    /// Occupied by something the fuzzer does not know.
    Unknown,
    Untyped,
    CNode,
    Tcb,
    Endpoint,
    Notification,
    Pml4,
    Pdpt,
    Pd,
    Pt,
    Frame4K,
    Frame2M,
    IrqHandler,
    IoPort,
    Telemetry,
    /// Never in P: the server holds them and brokers their invocations.
    IrqControl,
    IoPortControl,
}

impl Kind {
    pub const fn from_raw(v: u8) -> Kind {
        match v {
            0 => Kind::Empty,
            2 => Kind::Untyped,
            3 => Kind::CNode,
            4 => Kind::Tcb,
            5 => Kind::Endpoint,
            6 => Kind::Notification,
            7 => Kind::Pml4,
            8 => Kind::Pdpt,
            9 => Kind::Pd,
            10 => Kind::Pt,
            11 => Kind::Frame4K,
            12 => Kind::Frame2M,
            13 => Kind::IrqHandler,
            14 => Kind::IoPort,
            15 => Kind::Telemetry,
            16 => Kind::IrqControl,
            17 => Kind::IoPortControl,
            _ => Kind::Unknown,
        }
    }

    pub const fn of_type(t: ObjectType) -> Kind {
        match t {
            ObjectType::Untyped => Kind::Untyped,
            ObjectType::Tcb => Kind::Tcb,
            ObjectType::Endpoint => Kind::Endpoint,
            ObjectType::Notification => Kind::Notification,
            ObjectType::CNode => Kind::CNode,
            ObjectType::Frame4K => Kind::Frame4K,
            ObjectType::Frame2M => Kind::Frame2M,
            ObjectType::PageTable => Kind::Pt,
            ObjectType::PageDirectory => Kind::Pd,
            ObjectType::Pdpt => Kind::Pdpt,
            ObjectType::Pml4 => Kind::Pml4,
        }
    }
}

// ---- coverage tables ----

/// One invocation the fuzzer aims at: an object type and a label.
pub struct Entry {
    pub ty: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub label: u64,
}

const fn e(ty: &'static str, name: &'static str, kind: Kind, label: u64) -> Entry {
    Entry { ty, name, kind, label }
}

/// Every invocation label of every object type the fuzzer can hold (IRQControl Get and
/// IOPortControl Issue through the server's broker).
pub const INVOCATIONS: [Entry; 52] = [
    e("Untyped", "Retype", Kind::Untyped, inv::UNTYPED_RETYPE),
    e("Untyped", "GetInfo", Kind::Untyped, inv::UNTYPED_GET_INFO),
    e("CNode", "Copy", Kind::CNode, inv::CNODE_COPY),
    e("CNode", "Mint", Kind::CNode, inv::CNODE_MINT),
    e("CNode", "Move", Kind::CNode, inv::CNODE_MOVE),
    e("CNode", "Mutate", Kind::CNode, inv::CNODE_MUTATE),
    e("CNode", "Delete", Kind::CNode, inv::CNODE_DELETE),
    e("CNode", "Revoke", Kind::CNode, inv::CNODE_REVOKE),
    e("CNode", "CancelBadgedSends", Kind::CNode, inv::CNODE_CANCEL_BADGED_SENDS),
    e("TCB", "Configure", Kind::Tcb, inv::TCB_CONFIGURE),
    e("TCB", "SetSpace", Kind::Tcb, inv::TCB_SET_SPACE),
    e("TCB", "SetIPCBuffer", Kind::Tcb, inv::TCB_SET_IPC_BUFFER),
    e("TCB", "SetPriority", Kind::Tcb, inv::TCB_SET_PRIORITY),
    e("TCB", "SetMCPriority", Kind::Tcb, inv::TCB_SET_MC_PRIORITY),
    e("TCB", "ReadRegisters", Kind::Tcb, inv::TCB_READ_REGISTERS),
    e("TCB", "WriteRegisters", Kind::Tcb, inv::TCB_WRITE_REGISTERS),
    e("TCB", "Resume", Kind::Tcb, inv::TCB_RESUME),
    e("TCB", "Suspend", Kind::Tcb, inv::TCB_SUSPEND),
    e("TCB", "BindNotification", Kind::Tcb, inv::TCB_BIND_NOTIFICATION),
    e("TCB", "UnbindNotification", Kind::Tcb, inv::TCB_UNBIND_NOTIFICATION),
    e("TCB", "SetTLSBase", Kind::Tcb, inv::TCB_SET_TLS_BASE),
    e("TCB", "SetProfile", Kind::Tcb, inv::TCB_SET_PROFILE),
    e("TCB", "GetProfile", Kind::Tcb, inv::TCB_GET_PROFILE),
    e("TCB", "ArmProfile", Kind::Tcb, inv::TCB_ARM_PROFILE),
    e("TCB", "SetFaultHandler", Kind::Tcb, inv::TCB_SET_FAULT_HANDLER),
    e("PML4", "Map", Kind::Pml4, inv::PAGING_MAP),
    e("PML4", "Unmap", Kind::Pml4, inv::PAGING_UNMAP),
    e("PDPT", "Map", Kind::Pdpt, inv::PAGING_MAP),
    e("PDPT", "Unmap", Kind::Pdpt, inv::PAGING_UNMAP),
    e("PageDirectory", "Map", Kind::Pd, inv::PAGING_MAP),
    e("PageDirectory", "Unmap", Kind::Pd, inv::PAGING_UNMAP),
    e("PageTable", "Map", Kind::Pt, inv::PAGING_MAP),
    e("PageTable", "Unmap", Kind::Pt, inv::PAGING_UNMAP),
    e("Frame4K", "Map", Kind::Frame4K, inv::FRAME_MAP),
    e("Frame4K", "Unmap", Kind::Frame4K, inv::FRAME_UNMAP),
    e("Frame4K", "GetAddress", Kind::Frame4K, inv::FRAME_GET_ADDRESS),
    e("Frame2M", "Map", Kind::Frame2M, inv::FRAME_MAP),
    e("Frame2M", "Unmap", Kind::Frame2M, inv::FRAME_UNMAP),
    e("Frame2M", "GetAddress", Kind::Frame2M, inv::FRAME_GET_ADDRESS),
    e("IRQControl", "Get", Kind::IrqControl, inv::IRQ_CONTROL_GET),
    e("IRQControl", "GetMsi", Kind::IrqControl, inv::IRQ_CONTROL_GET_MSI),
    e("IRQHandler", "Ack", Kind::IrqHandler, inv::IRQ_HANDLER_ACK),
    e("IRQHandler", "SetNotification", Kind::IrqHandler, inv::IRQ_HANDLER_SET_NOTIFICATION),
    e("IRQHandler", "Clear", Kind::IrqHandler, inv::IRQ_HANDLER_CLEAR),
    e("IOPortControl", "Issue", Kind::IoPortControl, inv::IO_PORT_CONTROL_ISSUE),
    e("IOPort", "In8", Kind::IoPort, inv::IO_PORT_IN8),
    e("IOPort", "In16", Kind::IoPort, inv::IO_PORT_IN16),
    e("IOPort", "In32", Kind::IoPort, inv::IO_PORT_IN32),
    e("IOPort", "Out8", Kind::IoPort, inv::IO_PORT_OUT8),
    e("IOPort", "Out16", Kind::IoPort, inv::IO_PORT_OUT16),
    e("IOPort", "Out32", Kind::IoPort, inv::IO_PORT_OUT32),
    e("Telemetry", "Read", Kind::Telemetry, inv::TELEMETRY_READ),
];
pub const N_INV: usize = INVOCATIONS.len();

/// The entry of `label` aimed at an object of `kind`.
pub fn inv_index(kind: Kind, label: u64) -> Option<usize> {
    INVOCATIONS.iter().position(|x| x.kind == kind && x.label == label)
}

/// Object type names for the per-type Retype lines (in `ObjectType` order).
pub const TYPE_NAMES: [&str; 11] = [
    "Untyped",
    "TCB",
    "Endpoint",
    "Notification",
    "CNode",
    "Frame4K",
    "Frame2M",
    "PageTable",
    "PageDirectory",
    "PDPT",
    "PML4",
];

/// Syscalls the workers make, by name; the last is every number the kernel does not know.
/// (ThreadExit is left to the victims: a worker must keep running.)
pub const SYSCALLS: [&str; 10] =
    ["Call", "ReplyRecv", "Send", "NBSend", "Recv", "Reply", "Yield", "NBRecv", "DebugWrite", "unknown"];
pub const N_SYS: usize = SYSCALLS.len();

/// The coverage index of syscall number `n`.
pub const fn sys_index(n: i64) -> usize {
    match n {
        -8..=-1 => (-n - 1) as usize,
        -64 => 8,
        _ => 9,
    }
}

/// Counters that are not coverage.
pub mod stat {
    /// Workers taken out of a syscall that blocked for too long.
    pub const RESCUES: usize = 0;
    /// Fault messages of victims received by workers, and replies to them.
    pub const FAULTS_RECEIVED: usize = 1;
    pub const FAULT_REPLIES: usize = 2;
    /// Messages received that carried a capability into a receive slot, or an unwrapped badge.
    pub const CAPS_RECEIVED: usize = 3;
    pub const BADGES_UNWRAPPED: usize = 4;
    /// ReadRegisters found a victim inside its IPC syscall with a blocking number (it was, or
    /// had just been, blocked in IPC); by syscall below.
    pub const VICTIM_IN_IPC: usize = 5;
    /// Messages sent or received of the maximum length (120 words), and with 3 capabilities.
    pub const MAX_LENGTH: usize = 6;
    pub const THREE_CAPS: usize = 7;
    /// Invocations aimed at slots the fuzzer believed to hold a thread, endpoint, frame or
    /// paging structure that deleted or revoked it (CNode Delete/Revoke that succeeded).
    pub const DELETED_LIVE: usize = 8;
    /// Waits on a notification that returned exactly the bit of the epoch's interrupt line: an
    /// interrupt delivered (a signal with that very badge is possible too, but rare).
    pub const INTERRUPTS: usize = 9;
    /// ReadRegisters found a victim in its IPC syscall: a Call (sending or waiting for the
    /// reply), a Send, a Recv or ReplyRecv (receiving).
    pub const VICTIM_IN_CALL: usize = 10;
    pub const VICTIM_IN_SEND: usize = 11;
    pub const VICTIM_IN_RECV: usize = 12;
    pub const N: usize = 13;
}

/// The shared page.
#[repr(C)]
pub struct Shared {
    pub seed: AtomicU64,
    /// The epoch the workers may run; [`STOP`] ends the run.
    pub go: AtomicU64,
    /// Syscalls each worker makes this epoch.
    pub quota: AtomicU64,
    /// The interrupt line of this epoch's IRQ handler.
    pub irq_line: AtomicU64,
    /// The last epoch each worker finished.
    pub done: [AtomicU64; WORKERS],
    /// Syscalls each worker has made (all epochs).
    pub progress: [AtomicU64; WORKERS],
    /// 1 while a worker is inside one of its fuzzing syscalls.
    pub blocking: [AtomicU64; WORKERS],
    /// Each worker's current syscall: number, capability pointer, message info, MR0.
    pub last: [[AtomicU64; 4]; WORKERS],
    pub stats: [AtomicU64; stat::N],
    /// Per invocation entry: calls, successes.
    pub inv: [[AtomicU64; 2]; N_INV],
    /// Per object type: Retype calls naming it, successes.
    pub retype: [[AtomicU64; 2]; 11],
    /// Per syscall: calls, successes.
    pub sys: [[AtomicU64; 2]; N_SYS],
    /// Held by a worker around a structured invocation: the marks before its syscall, the
    /// syscall, what it learned after (see `worker`).
    pub lock: AtomicBool,
    /// What each slot of P holds, as far as the fuzzer knows (`Kind` values).
    pub kinds: [AtomicU8; P_SLOTS],
}

const _: () = assert!(core::mem::size_of::<Shared>() <= 4096);

/// The shared page. Only call this in a thread of an address space that maps it.
pub fn shared() -> &'static Shared {
    // SAFETY: the root task maps the (zero-filled) shared frame at SHARED_VA in both address
    // spaces before any thread that calls this runs; `Shared` is all atomics, for which zero
    // bytes are valid values, and every access is atomic.
    unsafe { &*(SHARED_VA as *const Shared) }
}

impl Shared {
    pub fn kind(&self, slot: u64) -> Kind {
        match self.kinds.get(slot as usize) {
            Some(k) => Kind::from_raw(k.load(Ordering::Relaxed)),
            None => Kind::Unknown,
        }
    }

    /// Record what slot `slot` holds. The victims' receive slots never get a type: the victims
    /// fill them unseen whenever they are empty (and a Revoke empties slots unseen too).
    pub fn set_kind(&self, slot: u64, kind: Kind) {
        let unwatched = (VICTIM_RECEIVE..VICTIM_RECEIVE + VICTIMS).contains(&slot);
        let kind = if unwatched && kind != Kind::Empty { Kind::Unknown } else { kind };
        if let Some(k) = self.kinds.get(slot as usize) {
            k.store(kind as u8, Ordering::Relaxed);
        }
    }

    pub fn bump(&self, stat: usize) {
        self.stats[stat].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_inv(&self, kind: Kind, label: u64, ok: bool) {
        if let Some(i) = inv_index(kind, label) {
            self.inv[i][0].fetch_add(1, Ordering::Relaxed);
            if ok {
                self.inv[i][1].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
