//! Thread control blocks: a thread's registers, FPU state, scheduling parameters and IPC state.
//!
//! A TCB is a kernel object (2^`TCB_BITS` bytes, retyped from untyped memory). Its `regs` field
//! is where the kernel entry paths save the thread's user registers (the arch layer points RSP0
//! and the `syscall` entry at it), so switching threads moves no registers: it changes which TCB
//! is current. Pointers between kernel objects (queue links, the thread an IPC is blocked on) are
//! kernel virtual addresses stored as `u64`, 0 meaning none.

use super::kptr::kptr;
use core::sync::atomic::{AtomicU64, Ordering};

use ozone_abi::invocation as inv;
use ozone_abi::{Error, IpcBuffer, MSG_REGISTERS};

use super::cte::Cte;
use super::delete::{self, Budget, Progress};
use super::kmem::{SlotRef, SlotSpan};
use super::notification::{self, Notification};
use super::paging::vspace_root;
use super::trace::Trace;
use super::{Cap, FrameSize, PagingLevel, Rights, cnode, mdb};
use crate::api::invoke::{Message, PREEMPT_BUDGET, Refused, UNKNOWN_METHOD, refuse};
use crate::api::{Kernel, thread};

/// The registers saved on every kernel entry from ring 3, in the order the entry code pushes
/// them (lowest address first). The arch layer calls this `TrapFrame`.
#[repr(C)]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Which entry saved them: an exception/interrupt vector, or the syscall marker.
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// [`Registers::vector`] of registers saved by the `syscall` entry: `rip` is the instruction
/// after the `syscall` (and canonical), and `rcx`/`r11` are the syscall ABI's scratch registers,
/// so the thread may leave with `sysretq`.
pub const SYSCALL_ENTRY: u64 = 0x100;
/// [`Registers::vector`] of registers the kernel wrote (or rewound): every register is exact, so
/// the thread leaves with `iretq`, which restores them all.
pub const KERNEL_WRITTEN: u64 = u64::MAX;

/// Length of the `syscall` instruction: a syscall is re-executed by resuming this far back.
pub const SYSCALL_INSN_LEN: u64 = 2;

impl Registers {
    /// Did this entry come from ring 3?
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// Message register `i` (< [`MSG_REGISTERS`]) as passed in CPU registers: r10, r8, r9, r15.
    pub fn mr(&self, i: usize) -> u64 {
        match i {
            0 => self.r10,
            1 => self.r8,
            2 => self.r9,
            _ => self.r15,
        }
    }

    pub fn set_mr(&mut self, i: usize, v: u64) {
        match i {
            0 => self.r10 = v,
            1 => self.r8 = v,
            2 => self.r9 = v,
            _ => self.r15 = v,
        }
    }

    /// The syscall these registers were saved in did not complete and is to be executed again
    /// when the thread next runs (seL4's `Restart` state): back up to the `syscall` instruction.
    /// Registers saved by anything but the `syscall` entry (a fault, an interrupt, a write by the
    /// kernel) already resume at the right instruction and are left alone; rewinding once marks
    /// them [`KERNEL_WRITTEN`], so a second call does nothing.
    pub fn rewind_syscall(&mut self) {
        if self.vector == SYSCALL_ENTRY {
            self.rip = self.rip.wrapping_sub(SYSCALL_INSN_LEN);
            self.vector = KERNEL_WRITTEN;
        }
    }
}

const _: () = assert!(MSG_REGISTERS == 4);

/// Bytes reserved for the thread's FPU/SSE/AVX state (XSAVE area; x87 + SSE + AVX need 832).
pub const FPU_AREA_SIZE: usize = 1024;

/// The saved FPU state, 64-byte aligned as XSAVE requires.
#[repr(C, align(64))]
#[derive(Clone)]
pub struct FpuArea(pub [u8; FPU_AREA_SIZE]);

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ThreadState {
    /// Not runnable: never started, suspended, or waiting for nothing.
    #[default]
    Inactive,
    /// Runnable (running or ready).
    Running,
    /// Runnable: taken out of a syscall that did not complete (endpoint deleted, badged sends
    /// cancelled, suspended and resumed), which it executes again when it next runs (its
    /// registers were rewound by [`Registers::rewind_syscall`]).
    Restart,
    /// Waiting in an endpoint's receive queue; `can_grant`: the grant right of the capability it
    /// receives with (whether its reply to a Call it receives may carry capabilities).
    BlockedOnReceive { ep: u64, can_grant: bool },
    /// Waiting in an endpoint's send queue with this message's parameters; `interruptible`: a
    /// CallInterruptible, which a signal on the thread's bound notification ends.
    BlockedOnSend { ep: u64, badge: u64, can_grant: bool, can_grant_reply: bool, is_call: bool, interruptible: bool },
    /// Made a Call and waits for the reply; `interruptible`: a CallInterruptible, which a signal
    /// on the thread's bound notification ends (the reply link is then cut).
    BlockedOnReply { interruptible: bool },
    /// Waiting on a notification.
    BlockedOnNotification { ntfn: u64 },
}

impl ThreadState {
    pub const fn is_runnable(self) -> bool {
        matches!(self, ThreadState::Running | ThreadState::Restart)
    }
}

/// A fault the thread took that is being (or waiting to be) delivered to its fault handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// A page fault at `addr`; `error` is the x86 page-fault error code.
    VmFault { addr: u64, error: u64, ip: u64 },
    /// A syscall number the kernel does not know (foreign ABIs are hosted this way).
    UnknownSyscall { number: u64 },
    /// Any other CPU exception in ring 3.
    UserException { vector: u64, error: u64, ip: u64 },
    /// Syscall `number` was denied by the thread's profile: `bit` is the denied
    /// `ozone_abi::profile` bit. The handler's label-0 reply resumes the thread after the
    /// syscall with `Error::Denied` in `rax`.
    Denied { number: u64, bit: u32 },
    /// The thread's learning window ended before syscall `number`, which narrowed `allowed`
    /// to the mask given. The thread resumes at the syscall instruction: the syscall runs then.
    WindowEnded { number: u64, allowed: u64 },
}

/// Per-thread counters for telemetry (read by the holder of the telemetry capability): the ABI's
/// type, which userspace decodes.
pub type Counters = ozone_abi::telemetry::ThreadCounters;

/// A thread's syscall profile (`ozone_abi::profile`): the operation classes it has used, and
/// those it may use.
///
/// Besides the two masks it keeps `fast = used & allowed`: the bits the fastpaths may take
/// without recording anything, since they are recorded already. A fastpath tests its bit there
/// with one instruction; the first use of a bit, and every denied use, goes through the general
/// path, which records the bit ([`Profile::admit`]) and denies or not. `fast` also leaves out
/// the bits of the IPC fastpaths when the boot option `ozone.fastpath=off` turned them off
/// ([`Profile::disable_ipc_fastpaths`]): then a thread's Call and ReplyRecv never pass the
/// fastpaths' first test, and the fastpaths cost nothing more when they are on.
///
/// A **learning window** (TCB ArmProfile) ends the warm-up in the kernel, on time: `window`
/// counts the syscalls the thread may still make while learning; the syscall after the last of
/// them first narrows `allowed` to `used & allowed` ([`Profile::count_syscall`]) and is then
/// checked like any other. While a window is armed `fast` is empty, so every syscall of the
/// thread takes the general path and is counted there: the fastpaths gain no instruction, and
/// the count is exact.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Profile {
    used: u64,
    allowed: u64,
    fast: u64,
    /// Bits 0..63: syscalls still learned before `allowed` narrows, [`Profile::NO_WINDOW`] if
    /// none is armed. Bit 63 ([`Profile::TRACED`]): the thread is traced. Both in one word so
    /// that the general path's one test of it (`count_syscall`) sends a thread that has a
    /// window or a trace out of the common line, and an untraced thread without a window pays
    /// nothing more for traces. A traced thread's `fast` holds its IPC fastpath bits shifted up
    /// by [`Profile::TRACED_SHIFT`]: only the traced copies of the fastpaths take its IPC (its
    /// syscalls enter them, [`Tcb::syscall_handler`]; see `api/fastpath.rs`).
    window: u64,
}

/// What [`Profile::count_syscall`] says about a syscall: nothing (0), or these bits.
pub mod counted {
    /// The thread's learning window ended before this syscall.
    pub const WINDOW_ENDED: u8 = 1;
    /// The thread is traced.
    pub const TRACED: u8 = 2;
}

/// The bits `fast` may hold: all, or all but those of the IPC fastpaths (Call and ReplyRecv)
/// after [`Profile::disable_ipc_fastpaths`]. Read only when a thread's `fast` is recomputed
/// (its first use of a syscall, a new `allowed` mask), never on a fastpath.
static FAST_PERMITTED: AtomicU64 = AtomicU64::new(u64::MAX);

impl Profile {
    /// Unrestricted, nothing used yet.
    pub const INITIAL: Profile =
        Profile { used: 0, allowed: ozone_abi::profile::ALL, fast: 0, window: Self::NO_WINDOW };

    /// The window count when no learning window is armed (and the whole word, untraced).
    pub const NO_WINDOW: u64 = (1 << 63) - 1;

    /// The window word's traced bit.
    const TRACED: u64 = 1 << 63;

    /// Bits of every syscall the thread made (denied ones included); never cleared.
    pub const fn used(&self) -> u64 {
        self.used
    }

    /// Bits the thread may use; a syscall with a bit outside it is denied.
    pub const fn allowed(&self) -> u64 {
        self.allowed
    }

    /// The window's count (without the traced bit).
    const fn count(&self) -> u64 {
        self.window & Self::NO_WINDOW
    }

    /// Set the window's count, keeping the traced bit.
    fn set_count(&mut self, count: u64) {
        self.window = (self.window & Self::TRACED) | count;
    }

    /// The syscalls the thread may still make while learning, if a window is armed.
    pub const fn window(&self) -> Option<u64> {
        if self.count() == Self::NO_WINDOW { None } else { Some(self.count()) }
    }

    /// A new `allowed` mask (TCB SetProfile); it replaces any armed window.
    pub fn set_allowed(&mut self, allowed: u64) {
        self.allowed = allowed;
        self.set_count(Self::NO_WINDOW);
        self.refresh_fast();
    }

    /// Arm a learning window (TCB ArmProfile): `allowed` now, and after `learn` more syscalls
    /// `allowed` narrows to what the thread has used of it. `learn` is below
    /// [`Profile::NO_WINDOW`] (the decode refuses it otherwise).
    pub fn arm(&mut self, allowed: u64, learn: u64) {
        debug_assert!(learn < Self::NO_WINDOW);
        self.allowed = allowed;
        self.set_count(learn);
        self.refresh_fast();
    }

    /// First thing in the general path: one test of the window word, which for a thread with
    /// neither a window nor a trace is all (0). Otherwise (out of line) count the syscall
    /// against an armed window — the syscall after the window's last narrows `allowed` to
    /// `used & allowed` before it is admitted ([`counted::WINDOW_ENDED`]) — and say whether the
    /// thread is traced ([`counted::TRACED`]). Every syscall of a thread with a window or a
    /// trace comes here: its `fast` holds none of the untraced fastpaths' bits.
    #[inline(always)]
    pub fn count_syscall(&mut self) -> u8 {
        if self.window != Self::NO_WINDOW {
            return self.count_slow();
        }
        0
    }

    #[inline(never)]
    fn count_slow(&mut self) -> u8 {
        let mut said = 0;
        if self.count() != Self::NO_WINDOW {
            if self.count() == 0 {
                self.set_allowed(self.used & self.allowed);
                said |= counted::WINDOW_ENDED;
            } else {
                self.set_count(self.count() - 1);
            }
        }
        if self.traced() {
            said |= counted::TRACED;
        }
        said
    }

    /// The window-ended fault of this thread was cancelled before its handler answered it (the
    /// thread restarts its syscall): the window is set to end again at that syscall, so the
    /// handler is told then. `allowed` is already narrowed; narrowing again changes nothing.
    pub fn owe_window_end(&mut self) {
        self.set_count(0);
        self.refresh_fast();
    }

    /// Recompute `fast`: empty while a window is armed; only the IPC fastpath bits, shifted by
    /// [`Profile::TRACED_SHIFT`], while traced.
    fn refresh_fast(&mut self) {
        let fast = if self.count() == Self::NO_WINDOW {
            Self::fast_bits(self.used, self.allowed, FAST_PERMITTED.load(Ordering::Relaxed))
        } else {
            0
        };
        self.fast = if self.traced() { (fast & Self::IPC_FASTPATH_BITS) << Self::TRACED_SHIFT } else { fast };
    }

    /// Where a traced thread's IPC fastpath bits are in `fast`.
    pub const TRACED_SHIFT: u32 = 32;

    /// The thread's trace started or stopped.
    pub fn set_traced(&mut self, on: bool) {
        self.window = if on { self.window | Self::TRACED } else { self.window & !Self::TRACED };
        self.refresh_fast();
    }

    pub const fn traced(&self) -> bool {
        self.window & Self::TRACED != 0
    }

    /// `fast` for the masks `used` and `allowed` when only the bits `permitted` may be fast.
    const fn fast_bits(used: u64, allowed: u64, permitted: u64) -> u64 {
        used & allowed & permitted
    }

    /// The bits the IPC fastpaths test (`ozone_abi::profile::CALL` and `REPLY_RECV`).
    pub const IPC_FASTPATH_BITS: u64 =
        ozone_abi::profile::mask(ozone_abi::profile::CALL) | ozone_abi::profile::mask(ozone_abi::profile::REPLY_RECV);

    /// Boot option `ozone.fastpath=off`: from now on no profile's `fast` holds the IPC
    /// fastpaths' bits, so every Call and ReplyRecv takes the general path. Called at boot,
    /// before the first thread exists (every `fast` made later leaves the bits out).
    pub fn disable_ipc_fastpaths() {
        FAST_PERMITTED.store(!Self::IPC_FASTPATH_BITS, Ordering::Relaxed);
    }

    /// Whether the IPC fastpaths may be taken at all (not turned off at boot).
    pub fn ipc_fastpaths_enabled() -> bool {
        FAST_PERMITTED.load(Ordering::Relaxed) & Self::IPC_FASTPATH_BITS == Self::IPC_FASTPATH_BITS
    }

    /// Record the operation class `mask` (one or more bits) as used, and say whether all of it
    /// is allowed.
    #[inline]
    pub fn admit(&mut self, mask: u64) -> bool {
        if self.used & mask != mask {
            self.used |= mask;
            self.refresh_fast();
        }
        self.allowed & mask == mask
    }

    /// For the fastpaths: whether `mask` is both allowed and already recorded as used, so that
    /// the syscall may go ahead with nothing else to do for the profile.
    #[inline(always)]
    pub fn fast_allows(&self, mask: u64) -> bool {
        self.fast & mask == mask
    }
}

const _: () = assert!(Profile::IPC_FASTPATH_BITS < 1 << Profile::TRACED_SHIFT);

/// Capability slots a TCB holds: its CSpace root, its VSpace root, its IPC buffer frame, its
/// fault handler, its trace ring's frame.
pub const TCB_SLOTS: usize = 5;
pub const TCB_CSPACE: usize = 0;
pub const TCB_VSPACE: usize = 1;
pub const TCB_IPC_BUFFER: usize = 2;
/// The endpoint the thread's faults are delivered to (seL4 MCS's fault-handler slot): a copy
/// made by TCB SetFaultHandler from the invoker's CSpace, so the thread itself need hold no
/// capability to it and cannot send on it. Empty: a fault suspends the thread.
pub const TCB_FAULT_HANDLER: usize = 3;
/// The frame of the thread's event trace ring (`object/trace.rs`): a copy made by Telemetry
/// Trace, flagged in its derivation node so that emptying it turns the trace off.
pub const TCB_TRACE: usize = 4;

/// Whether `cap` may be a fault handler: an endpoint capability that can carry a Call, that is
/// with the write right, and the grant or grant-reply right (without either, a Call leaves the
/// caller inactive and the handler could never resume the thread: see `endpoint`). seL4 MCS's
/// `validFaultHandler` asks the same.
pub fn is_fault_handler(cap: &Cap) -> bool {
    matches!(cap, Cap::Endpoint { rights, .. }
        if rights.contains(Rights::WRITE) && (rights.contains(Rights::GRANT) || rights.contains(Rights::GRANT_REPLY)))
}

/// A thread control block.
#[repr(C, align(64))]
pub struct Tcb {
    /// The capabilities the thread runs with (copies, tracked by the derivation tree, so revoking
    /// the originals takes them away too).
    pub slots: [Cte; TCB_SLOTS],
    /// User registers, saved here by every kernel entry from ring 3.
    pub regs: Registers,
    /// FPU/SSE/AVX state while the thread is not on the CPU.
    pub fpu: FpuArea,
    pub state: ThreadState,
    pub priority: u8,
    /// Maximum controlled priority: the highest priority this thread may give any thread.
    pub mcp: u8,
    /// In a scheduler ready queue.
    pub queued: bool,
    /// Ticks left in the current timeslice.
    pub timeslice: u32,
    pub sched_next: u64,
    pub sched_prev: u64,
    /// Links in an endpoint's or notification's wait queue.
    pub ep_next: u64,
    pub ep_prev: u64,
    /// The thread this one must reply to (the implicit reply capability a Call leaves), 0 if none.
    /// Symmetric with the caller's `reply_holder`: the link is cut from either side when either
    /// thread gives the right up, is suspended or is deleted (see `endpoint`).
    pub caller: u64,
    /// Whether that reply may carry capabilities.
    pub caller_can_grant: bool,
    /// While this thread is blocked on a reply: the thread holding the right to reply to it
    /// (whose `caller` is this thread), 0 if nobody can reply any more.
    pub reply_holder: u64,
    /// The notification bound to this thread, 0 if none.
    pub bound_notification: u64,
    /// The IPC buffer's user virtual address (the buffer itself is reached through the frame
    /// capability in the `TCB_IPC_BUFFER` slot, looked up at every use: [`Tcb::ipc_buffer`]).
    pub ipc_buffer_vaddr: u64,
    /// The fault being delivered, if the thread is blocked because of one.
    pub fault: Fault,
    /// FS base (thread-local storage), loaded when the thread runs.
    pub tls_base: u64,
    pub counters: Counters,
    /// The syscall profile.
    pub profile: Profile,
    /// Whether the thread may print through the kernel's debug channel (`DebugWrite`). Off for
    /// every new thread; on for the root task's; switched by `TCB_SET_DEBUG_OUTPUT` with the
    /// I/O-port control capability as authority.
    pub debug_output: bool,
    /// The event trace (off unless the holder of the telemetry capability started one).
    pub trace: Trace,
    /// The code the `syscall` entry calls for this thread ([`syscall_handler`]`(traced)`): the
    /// entry stub reaches it from the saved registers, at [`SYSCALL_HANDLER_FROM_REGS`], so a
    /// traced thread's syscalls go to the traced copy of the syscall path with no test in the
    /// untraced one (`api/fastpath.rs`). Changed only with the trace ([`Tcb::set_traced`]).
    pub syscall_handler: u64,
}

/// Where [`Tcb::syscall_handler`] is from the start of [`Tcb::regs`] (the saved registers the
/// `syscall` entry stub has just written, whose address it holds).
pub const SYSCALL_HANDLER_FROM_REGS: i64 =
    core::mem::offset_of!(Tcb, syscall_handler) as i64 - core::mem::offset_of!(Tcb, regs) as i64;

/// The address of the code the `syscall` entry calls for a thread that is traced or not
/// (`arch/x86_64/trap.rs`). A host build has no entry stub: a tag that tells the two apart,
/// never called.
pub fn syscall_handler(traced: bool) -> u64 {
    #[cfg(target_os = "none")]
    {
        crate::arch::x86_64::trap::syscall_handler(traced)
    }
    #[cfg(not(target_os = "none"))]
    {
        1 + traced as u64
    }
}

const _: () = assert!(core::mem::size_of::<Tcb>() <= 1 << ozone_abi::object::TCB_BITS);
// The trace slot's TCB is found from the slot's address (`mdb::empty_slot`).
const _: () = assert!(core::mem::offset_of!(Tcb, slots) == 0);

/// Timeslice length in timer ticks.
pub const TIMESLICE_TICKS: u32 = 5;

impl Tcb {
    /// Drop the fault being delivered: its delivery was cancelled and the thread restarts its
    /// syscall. A page fault or an exception is taken again when the instruction runs again; a
    /// window-ended fault would not be (the window is over), so it is owed again
    /// ([`Profile::owe_window_end`]).
    pub fn cancel_fault(&mut self) {
        if let Fault::WindowEnded { .. } = self.fault {
            self.profile.owe_window_end();
        }
        self.fault = Fault::None;
    }

    /// A TCB in its initial state: inactive, priority 0, no capabilities, empty registers, the
    /// initial FPU state (x87 control word 0x37f, MXCSR 0x1f80).
    pub fn initial() -> Tcb {
        let mut fpu = FpuArea([0; FPU_AREA_SIZE]);
        fpu.0[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        fpu.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        Tcb {
            slots: [Cte::NULL; TCB_SLOTS],
            regs: Registers::default(),
            fpu,
            state: ThreadState::Inactive,
            priority: 0,
            mcp: 0,
            queued: false,
            timeslice: TIMESLICE_TICKS,
            sched_next: 0,
            sched_prev: 0,
            ep_next: 0,
            ep_prev: 0,
            caller: 0,
            caller_can_grant: false,
            reply_holder: 0,
            bound_notification: 0,
            ipc_buffer_vaddr: 0,
            fault: Fault::None,
            tls_base: 0,
            counters: Counters::default(),
            profile: Profile::INITIAL,
            debug_output: false,
            trace: Trace::OFF,
            syscall_handler: syscall_handler(false),
        }
    }

    /// The thread's trace started (`on`) or stopped: its profile sends its IPC to the traced
    /// fastpaths or not, and its syscalls enter the traced copy of the syscall path or not.
    pub fn set_traced(&mut self, on: bool) {
        self.profile.set_traced(on);
        self.syscall_handler = syscall_handler(on);
    }

    /// The capability slots of the TCB at `t` as a span for the derivation-tree code, which
    /// reads and writes them through raw pointers: made from a raw pointer to the TCB (not a
    /// reference), so those writes never go through a shared borrow.
    ///
    /// # Safety
    /// `t` points at a live TCB (the span is used only while it lives).
    pub unsafe fn slots_of(t: *mut Tcb) -> SlotSpan {
        // SAFETY: per the contract `slots` is TCB_SLOTS 64-byte-aligned slots inside a live TCB;
        // the address is computed without creating a reference.
        unsafe { SlotSpan::new((&raw mut (*t).slots) as u64, TCB_SLOTS as u64) }
    }

    pub fn addr(&self) -> u64 {
        self as *const Tcb as u64
    }

    /// The thread's IPC buffer, looked up through its IPC-buffer slot at every use (seL4's
    /// `lookupIPCBuffer`): the kernel keeps no pointer to it, so a buffer frame that has been
    /// deleted or revoked (which empties the slot, a copy in the derivation tree) is never
    /// written again, whatever its memory became. Only a writable 4 KiB frame of normal memory
    /// serves (SetIPCBuffer and Configure accept no other).
    ///
    /// The pointer is the buffer's kernel address; the accessors below reach it only through raw
    /// reads and writes, never through a reference (two threads may share one buffer).
    pub fn ipc_buffer(&self) -> Option<*mut IpcBuffer> {
        match self.slots[TCB_IPC_BUFFER].cap {
            Cap::Frame { ptr, size: FrameSize::Small, device: false, rights, .. } if rights.contains(Rights::WRITE) => {
                Some((ptr + (self.ipc_buffer_vaddr & 0xfff)) as *mut IpcBuffer)
            }
            _ => None,
        }
    }

    /// Message word `i` (< `MSG_MAX_LENGTH`) of the thread's IPC buffer, if it has one.
    pub fn ipc_msg(&self, i: usize) -> Option<u64> {
        // SAFETY: the pointer names a live frame the thread's slot holds a capability to; the
        // index is checked by the array access.
        self.ipc_buffer().map(|b| unsafe { (&raw const (*b).msg[i]).read() })
    }

    /// Write message word `i` of the thread's IPC buffer; false if it has none.
    pub fn set_ipc_msg(&self, i: usize, v: u64) -> bool {
        let Some(b) = self.ipc_buffer() else { return false };
        // SAFETY: the pointer names a live frame the thread's slot holds a capability to, and the
        // index is checked by the array access; a raw write, so no reference to the buffer exists.
        unsafe { (&raw mut (*b).msg[i]).write(v) };
        true
    }

    /// Capability word `i` (a cptr sent, or a badge received) of the thread's IPC buffer.
    pub fn ipc_cap_word(&self, i: usize) -> Option<u64> {
        // SAFETY: the pointer names a live frame the thread's slot holds a capability to; the index
        // is checked by the array access.
        self.ipc_buffer().map(|b| unsafe { (&raw const (*b).caps_or_badges[i]).read() })
    }

    /// Write capability word `i` of the thread's IPC buffer; false if it has none.
    pub fn set_ipc_cap_word(&self, i: usize, v: u64) -> bool {
        let Some(b) = self.ipc_buffer() else { return false };
        // SAFETY: the pointer names a live frame the thread's slot holds a capability to; the index
        // is checked by the array access; a raw write.
        unsafe { (&raw mut (*b).caps_or_badges[i]).write(v) };
        true
    }

    /// Host tests: make the (boxed, 4 KiB-aligned or not) `buf` the IPC buffer of the TCB at `t`,
    /// through a frame capability in its IPC-buffer slot, as SetIPCBuffer leaves it.
    #[cfg(test)]
    #[allow(clippy::not_unsafe_ptr_arg_deref, reason = "host-test helper: callers pass their fixture's live TCBs")]
    pub fn attach_test_ipc_buffer(t: *mut Tcb, buf: *mut IpcBuffer) {
        // SAFETY: `t` is a live test TCB.
        let slot = unsafe { Tcb::slots_of(t) }.slot(TCB_IPC_BUFFER as u64).expect("the IPC-buffer slot");
        let frame =
            Cap::Frame { ptr: buf as u64, size: FrameSize::Small, rights: Rights::ALL, device: false, mapped: None };
        // SAFETY: the slot is empty (test TCBs get one buffer) and the frame capability stands for
        // the test's own allocation, which outlives the TCB.
        unsafe { super::mdb::insert_root_cap(slot, frame) };
        // SAFETY: `t` is a live test TCB.
        unsafe { (*t).ipc_buffer_vaddr = 0 };
    }

    /// The receive slot the thread's IPC buffer names: (CNode cptr, index, depth).
    pub fn ipc_receive_slot(&self) -> Option<(u64, u64, u64)> {
        // SAFETY: the pointer names a live frame the thread's slot holds a capability to; raw reads.
        self.ipc_buffer().map(|b| unsafe {
            (
                (&raw const (*b).receive_cnode).read(),
                (&raw const (*b).receive_index).read(),
                (&raw const (*b).receive_depth).read(),
            )
        })
    }
}

// ---- the TCB methods, from the invoking thread's message ----
//
// Each method is decoded into a [`TcbPlan`] (every argument checked, nothing changed), then
// performed. The dispatcher is `api/invoke.rs`. Threads are named by raw pointer throughout and
// reached through `with_target` for one access at a time: the target may be the invoking thread
// itself, and a method may delete objects (the target's old CSpace root among them).

/// RFLAGS bits a thread may set: CF, PF, AF, ZF, SF, TF, DF, OF, AC, ID; IF is always set.
pub const USER_RFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;

/// An address a thread may run at or use as its TLS base: below the end of user memory (which
/// stops a page short of the canonical hole, so the instruction after any user `syscall` is
/// canonical too).
pub const fn is_user_address(addr: u64) -> bool {
    addr < ozone_abi::USER_TOP
}

/// What one of a TCB's slots is to hold: the capability decoded from `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcbSlotArg {
    index: usize,
    src: SlotRef,
    cap: Cap,
}

/// A decoded TCB method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcbPlan {
    /// Configure / SetSpace: the first `count` of `slots` are installed; the IPC buffer's
    /// address is set when there is one.
    Configure {
        slots: [TcbSlotArg; 3],
        count: usize,
        buffer_vaddr: Option<u64>,
    },
    /// SetIPCBuffer: a frame at an address, or none.
    SetIpcBuffer {
        install: Option<(TcbSlotArg, u64)>,
    },
    /// SetFaultHandler: an endpoint capability for the fault-handler slot, or none.
    SetFaultHandler {
        install: Option<TcbSlotArg>,
    },
    SetPriority {
        priority: u8,
    },
    SetMcPriority {
        mcp: u8,
    },
    ReadRegisters {
        suspend: bool,
        count: usize,
    },
    WriteRegisters {
        resume: bool,
        count: usize,
        values: [u64; REGISTERS],
    },
    Resume,
    Suspend,
    BindNotification {
        notification: u64,
    },
    UnbindNotification,
    SetProfile {
        allowed: u64,
    },
    ArmProfile {
        allowed: u64,
        learn: u64,
    },
    GetProfile,
    SetTlsBase {
        base: u64,
    },
    SetDebugOutput {
        on: bool,
    },
}

/// Registers ReadRegisters / WriteRegisters reach.
const REGISTERS: usize = 18;
const _: () = assert!(REGISTERS as u64 == ozone_abi::invocation::REGISTER_COUNT);

/// Register order of ReadRegisters / WriteRegisters.
fn register_list(r: &mut Registers) -> [&mut u64; REGISTERS] {
    [
        &mut r.rip,
        &mut r.rsp,
        &mut r.rflags,
        &mut r.rax,
        &mut r.rbx,
        &mut r.rcx,
        &mut r.rdx,
        &mut r.rsi,
        &mut r.rdi,
        &mut r.rbp,
        &mut r.r8,
        &mut r.r9,
        &mut r.r10,
        &mut r.r11,
        &mut r.r12,
        &mut r.r13,
        &mut r.r14,
        &mut r.r15,
    ]
}

/// Run `f` on the TCB `target` points at, which may be the invoking thread itself (no reference
/// to which is live either: see `api::thread`).
fn with_target<R>(target: *mut Tcb, f: impl FnOnce(&mut Tcb) -> R) -> R {
    // SAFETY: a TCB capability names a live TCB; `f` makes one access and runs no kernel
    // operation, so its reference is the only one used meanwhile.
    f(unsafe { thread(target) })
}

/// The IPC buffer must be a writable 4 KiB frame of normal memory (never device memory, whose
/// reads and writes have side effects), and the 1 KiB buffer must be 1 KiB aligned inside the
/// page at a user address.
fn check_ipc_buffer(vaddr: u64, frame: &Cap) -> Result<(), Refused> {
    match frame {
        Cap::Frame { size: FrameSize::Small, rights, device: false, .. } if rights.contains(Rights::WRITE) => {}
        Cap::Frame { .. } => {
            return Err(refuse(
                Error::IllegalOperation,
                "an IPC buffer must be a writable 4 KiB frame of normal memory",
            ));
        }
        _ => return Err(refuse(Error::InvalidCapability, "the IPC-buffer argument is not a frame")),
    }
    if !vaddr.is_multiple_of(1024) || !is_user_address(vaddr) {
        return Err(refuse(Error::AlignmentError, "the IPC buffer must be 1 KiB aligned, in user memory"));
    }
    Ok(())
}

/// The number of registers ReadRegisters / WriteRegisters name, checked.
fn register_count(m: Message) -> Result<usize, Refused> {
    let count = m.mr(1)?;
    if count == 0 || count > REGISTERS as u64 {
        return Err(refuse(Error::RangeError, "the register count is 0 or above the register list"));
    }
    Ok(count as usize)
}

fn decode(k: &Kernel, m: Message, target: *mut Tcb, label: u64) -> Result<TcbPlan, Refused> {
    let is_self = core::ptr::eq(target, m.thread());
    const NOT_SELF: Refused = refuse(Error::IllegalOperation, "a thread cannot read or write its own registers");
    const OWN_WINDOW: Refused =
        refuse(Error::IllegalOperation, "a thread in a learning window cannot change its own profile");
    Ok(match label {
        inv::TCB_CONFIGURE | inv::TCB_SET_SPACE => {
            // Formerly a fault-handler cptr; the fault handler is a capability of its own now
            // (SetFaultHandler), and a word that would be silently ignored is refused instead.
            if m.mr(0)? != 0 {
                return Err(refuse(
                    Error::InvalidArgument,
                    "MR0 is reserved and must be 0 (the fault handler is set with SetFaultHandler)",
                ));
            }
            let (cs_slot, cspace) = m.cap(0)?;
            let (vs_slot, vspace_cap) = m.cap(1)?;
            if !matches!(cspace, Cap::CNode { .. }) {
                return Err(refuse(Error::IllegalOperation, "the CSpace root is not a CNode"));
            }
            if vspace_root(k, &vspace_cap).is_err() {
                return Err(refuse(Error::IllegalOperation, "the VSpace root is not a live PML4"));
            }
            let mut slots = [
                TcbSlotArg { index: TCB_CSPACE, src: cs_slot, cap: cspace },
                TcbSlotArg { index: TCB_VSPACE, src: vs_slot, cap: vspace_cap },
                TcbSlotArg { index: TCB_IPC_BUFFER, src: cs_slot, cap: Cap::Null },
            ];
            let mut buffer_vaddr = None;
            if label == inv::TCB_CONFIGURE {
                let vaddr = m.mr(2)?;
                if vaddr != 0 {
                    let (frame_slot, frame) = m.cap(2)?;
                    check_ipc_buffer(vaddr, &frame)?;
                    slots[2] = TcbSlotArg { index: TCB_IPC_BUFFER, src: frame_slot, cap: frame };
                    buffer_vaddr = Some(vaddr);
                }
            }
            let count = if buffer_vaddr.is_some() { 3 } else { 2 };
            TcbPlan::Configure { slots, count, buffer_vaddr }
        }
        inv::TCB_SET_FAULT_HANDLER => match m.extra_caps() {
            0 => TcbPlan::SetFaultHandler { install: None },
            1 => {
                let (src, cap) = m.cap(0)?;
                if !matches!(cap, Cap::Endpoint { .. }) {
                    return Err(refuse(Error::InvalidCapability, "a fault handler must be an endpoint capability"));
                }
                if !is_fault_handler(&cap) {
                    return Err(refuse(
                        Error::IllegalOperation,
                        "a fault handler needs the write right and the grant or grant-reply right",
                    ));
                }
                TcbPlan::SetFaultHandler { install: Some(TcbSlotArg { index: TCB_FAULT_HANDLER, src, cap }) }
            }
            _ => {
                return Err(refuse(
                    Error::InvalidArgument,
                    "SetFaultHandler takes one endpoint capability, or none to remove the handler",
                ));
            }
        },
        inv::TCB_SET_IPC_BUFFER => {
            let vaddr = m.mr(0)?;
            if vaddr == 0 {
                TcbPlan::SetIpcBuffer { install: None }
            } else {
                let (frame_slot, frame) = m.cap(0)?;
                check_ipc_buffer(vaddr, &frame)?;
                TcbPlan::SetIpcBuffer {
                    install: Some((TcbSlotArg { index: TCB_IPC_BUFFER, src: frame_slot, cap: frame }, vaddr)),
                }
            }
        }
        inv::TCB_SET_PRIORITY | inv::TCB_SET_MC_PRIORITY => {
            let prio = m.mr(0)?;
            let (_, authority) = m.cap(0)?;
            let Cap::Tcb { ptr: auth } = authority else {
                return Err(refuse(Error::InvalidCapability, "the authority argument is not a TCB"));
            };
            let mcp = with_target(kptr::<Tcb>(auth), |a| a.mcp);
            if prio > 255 || prio > u64::from(mcp) {
                return Err(refuse(Error::RangeError, "the priority is above the authority's maximum"));
            }
            // The target's own MCP is its ceiling too, and MCPs only ever come down: a holder of
            // a thread's capability (and of a high-MCP authority) can neither raise the thread
            // above its ceiling nor raise the ceiling. New threads start with their creator's.
            let own = with_target(target, |t| t.mcp);
            if prio > u64::from(own) {
                return Err(if label == inv::TCB_SET_MC_PRIORITY {
                    refuse(Error::RangeError, "a maximum controlled priority is never raised")
                } else {
                    refuse(Error::RangeError, "the priority is above the thread's own maximum")
                });
            }
            if label == inv::TCB_SET_MC_PRIORITY {
                TcbPlan::SetMcPriority { mcp: prio as u8 }
            } else {
                TcbPlan::SetPriority { priority: prio as u8 }
            }
        }
        inv::TCB_READ_REGISTERS => {
            if is_self {
                return Err(NOT_SELF);
            }
            TcbPlan::ReadRegisters { suspend: m.mr(0)? != 0, count: register_count(m)? }
        }
        inv::TCB_WRITE_REGISTERS => {
            if is_self {
                return Err(NOT_SELF);
            }
            let resume = m.mr(0)? != 0;
            let count = register_count(m)?;
            let mut values = [0u64; REGISTERS];
            for (i, v) in values.iter_mut().enumerate().take(count) {
                *v = m.mr(2 + i)?;
            }
            if !is_user_address(values[0]) {
                return Err(refuse(Error::InvalidArgument, "the instruction pointer is not a user address"));
            }
            TcbPlan::WriteRegisters { resume, count, values }
        }
        inv::TCB_RESUME => TcbPlan::Resume,
        inv::TCB_SUSPEND => TcbPlan::Suspend,
        inv::TCB_BIND_NOTIFICATION => {
            let (_, n) = m.cap(0)?;
            let Cap::Notification { ptr, rights, .. } = n else {
                return Err(refuse(Error::InvalidCapability, "the argument is not a notification"));
            };
            if !rights.contains(Rights::READ) {
                return Err(refuse(Error::IllegalOperation, "a bound notification needs the read right"));
            }
            TcbPlan::BindNotification { notification: ptr }
        }
        inv::TCB_UNBIND_NOTIFICATION => TcbPlan::UnbindNotification,
        inv::TCB_SET_PROFILE | inv::TCB_ARM_PROFILE => {
            let allowed = m.mr(0)?;
            // No thread widens a profile (as no thread gives a priority above its own MCP): the
            // target may be allowed only what the invoking thread is allowed itself.
            let own = with_target(m.thread(), |t| t.profile.allowed());
            if allowed & !own != 0 {
                return Err(refuse(
                    Error::IllegalOperation,
                    "the profile allows operations the invoking thread's own profile does not",
                ));
            }
            // A thread in a learning window cannot move its own window's end or leave it.
            if is_self && with_target(target, |t| t.profile.window().is_some()) {
                return Err(OWN_WINDOW);
            }
            if label == inv::TCB_ARM_PROFILE {
                let learn = m.mr(1)?;
                if learn >= Profile::NO_WINDOW {
                    return Err(refuse(Error::RangeError, "the learning window is too long"));
                }
                TcbPlan::ArmProfile { allowed, learn }
            } else {
                TcbPlan::SetProfile { allowed }
            }
        }
        inv::TCB_GET_PROFILE => TcbPlan::GetProfile,
        inv::TCB_SET_DEBUG_OUTPUT => {
            let on = match m.mr(0)? {
                0 => false,
                1 => true,
                _ => return Err(refuse(Error::InvalidArgument, "the debug output switch is neither 0 nor 1")),
            };
            let (_, authority) = m.cap(0)?;
            if !matches!(authority, Cap::IoPortControl) {
                return Err(refuse(
                    Error::InvalidCapability,
                    "the authority argument is not the I/O-port control capability",
                ));
            }
            TcbPlan::SetDebugOutput { on }
        }
        inv::TCB_SET_TLS_BASE => {
            let base = m.mr(0)?;
            if !is_user_address(base) {
                return Err(refuse(Error::InvalidArgument, "the TLS base is not a user address"));
            }
            TcbPlan::SetTlsBase { base }
        }
        _ => return Err(UNKNOWN_METHOD),
    })
}

fn perform(k: &mut Kernel, m: Message, slot: SlotRef, target: *mut Tcb, plan: TcbPlan) -> Result<(), Refused> {
    let is_self = core::ptr::eq(target, m.thread());
    match plan {
        TcbPlan::Configure { slots, count, buffer_vaddr } => {
            let installed = install_tcb_caps(k, m, slot, target, &slots[..count]);
            if is_self {
                // The thread's own address space changed, or went (the old one was deleted and
                // the install failed): the CPU follows at once, not at the next switch.
                let pml4 = with_target(target, |t| crate::api::address_space_of(k, t));
                k.platform.set_vspace(pml4);
            }
            if installed? == Progress::Preempted {
                return Ok(());
            }
            if let Some(vaddr) = buffer_vaddr {
                with_target(target, |target| target.ipc_buffer_vaddr = vaddr);
            }
        }
        TcbPlan::SetFaultHandler { install: None } => {
            if clear_tcb_slot(k, target, TCB_FAULT_HANDLER) == Progress::Preempted {
                m.restart();
            }
        }
        TcbPlan::SetFaultHandler { install: Some(arg) } => {
            install_tcb_caps(k, m, slot, target, &[arg])?;
        }
        TcbPlan::SetIpcBuffer { install: None } => {
            if clear_tcb_slot(k, target, TCB_IPC_BUFFER) == Progress::Preempted {
                m.restart();
                return Ok(());
            }
            with_target(target, |target| target.ipc_buffer_vaddr = 0);
        }
        TcbPlan::SetIpcBuffer { install: Some((arg, vaddr)) } => {
            if install_tcb_caps(k, m, slot, target, &[arg])? == Progress::Done {
                with_target(target, |target| target.ipc_buffer_vaddr = vaddr);
            }
        }
        TcbPlan::SetMcPriority { mcp } => with_target(target, |target| target.mcp = mcp),
        TcbPlan::SetPriority { priority } => {
            // A ready thread moves to its new priority's queue.
            let queued = with_target(target, |target| target.queued);
            // SAFETY: `target` is live (a TCB capability names a live TCB).
            unsafe { k.sched.remove(target) };
            with_target(target, |target| target.priority = priority);
            if queued {
                // SAFETY: `target` is live, runnable (it was queued) and not the current thread.
                unsafe { k.sched.wake(target) };
            }
            k.sched.current_blocked();
        }
        TcbPlan::ReadRegisters { suspend, count } => {
            if suspend {
                suspend_thread(k, target);
            }
            let mut words = [0u64; REGISTERS];
            with_target(target, |target| {
                for (w, r) in words.iter_mut().zip(register_list(&mut target.regs)) {
                    *w = *r;
                }
            });
            m.reply(&words[..count]);
        }
        TcbPlan::WriteRegisters { resume, count, values } => {
            with_target(target, |target| {
                for (r, v) in register_list(&mut target.regs).into_iter().zip(values).take(count) {
                    *r = v;
                }
                target.regs.rflags = (target.regs.rflags & USER_RFLAGS) | 0x202;
                // Written by the kernel: return with `iretq` so every register is restored.
                target.regs.vector = KERNEL_WRITTEN;
            });
            if resume {
                resume_thread(k, target);
            }
        }
        TcbPlan::Resume => resume_thread(k, target),
        TcbPlan::Suspend => suspend_thread(k, target),
        TcbPlan::BindNotification { notification } => {
            // SAFETY: a notification capability names a live notification.
            with_target(target, |target| unsafe { notification::bind(kptr::<Notification>(notification), target) })?;
            // Bits already pending end a CallInterruptible the thread is blocked in, as a signal
            // would have.
            // SAFETY: as above; no reference to the target is live.
            unsafe { notification::interrupt_bound(k, kptr::<Notification>(notification)) };
        }
        TcbPlan::UnbindNotification => with_target(target, notification::unbind)?,
        TcbPlan::SetProfile { allowed } => with_target(target, |target| target.profile.set_allowed(allowed)),
        TcbPlan::ArmProfile { allowed, learn } => with_target(target, |target| target.profile.arm(allowed, learn)),
        TcbPlan::GetProfile => {
            let p = with_target(target, |target| target.profile);
            let window = p.window();
            m.reply(&[p.used(), p.allowed(), u64::from(window.is_some()), window.unwrap_or(0)]);
        }
        TcbPlan::SetDebugOutput { on } => with_target(target, |target| target.debug_output = on),
        TcbPlan::SetTlsBase { base } => {
            with_target(target, |target| target.tls_base = base);
            if is_self {
                k.platform.set_tls_base(base);
            }
        }
    }
    Ok(())
}

/// A TCB invocation (the dispatcher is `api/invoke.rs`): `slot` holds the invoked capability,
/// which names the TCB at `target`.
pub(crate) fn invoke(k: &mut Kernel, m: Message, slot: SlotRef, target: u64, label: u64) -> Result<(), Refused> {
    let target = kptr::<Tcb>(target);
    let plan = decode(k, m, target, label)?;
    perform(k, m, slot, target, plan)
}

/// Empty one of the TCB's capability slots on a budget (the capability may be the last one to a
/// large CNode). `Preempted`: the caller restarts the syscall, which decodes again.
fn clear_tcb_slot(k: &mut Kernel, target: *mut Tcb, index: usize) -> Progress {
    // SAFETY: a TCB capability names a live TCB.
    let slot = unsafe { Tcb::slots_of(target) }.slot(index as u64).expect("a TCB slot index");
    if slot.is_empty() {
        return Progress::Done;
    }
    delete::delete(slot, k, &mut Budget::new(PREEMPT_BUDGET))
}

/// Install capabilities in a TCB's slots (Configure, SetSpace, SetIPCBuffer), as seL4's
/// `invokeTCB_ThreadControl` does: first delete what they replace, preemptibly (a preempted
/// call is restarted and decoded again); then, since those deletions may have destroyed the
/// sources or the TCB itself (the old CSpace root may have been the last capability to the
/// CNode that holds them), check that every source and the invoked TCB capability still hold
/// what was decoded (`InvalidCapability` if not: the replaced slots are then left empty), and
/// only then insert.
fn install_tcb_caps(
    k: &mut Kernel,
    m: Message,
    tcb_slot: SlotRef,
    target: *mut Tcb,
    args: &[TcbSlotArg],
) -> Result<Progress, Refused> {
    for a in args {
        if clear_tcb_slot(k, target, a.index) == Progress::Preempted {
            m.restart();
            return Ok(Progress::Preempted);
        }
    }
    if tcb_slot.cap() != (Cap::Tcb { ptr: target as u64 }) || args.iter().any(|a| a.src.cap() != a.cap) {
        return Err(refuse(
            Error::InvalidCapability,
            "deleting what the new capabilities replace destroyed a source or the TCB",
        ));
    }
    // SAFETY: the invoked capability (checked just above) names this live TCB.
    let slots = unsafe { Tcb::slots_of(target) };
    for a in args {
        // A VSpace root is used as it is (it got its ASID when it was made).
        let derived = match a.cap {
            Cap::Paging { level: PagingLevel::Pml4, .. } => a.cap,
            _ => cnode::derive_cap(a.src, &a.cap)?,
        };
        if derived.is_null() {
            return Err(refuse(Error::IllegalOperation, "the capability cannot be derived"));
        }
        let dest = slots.slot(a.index as u64).ok_or(Error::InvalidArgument)?;
        mdb::cte_insert(derived, a.src, dest);
    }
    Ok(Progress::Done)
}

/// Whether the frame capability in `slot` may hold a trace ring: a 4 KiB frame of normal memory
/// the holder may write (the kernel writes the ring on its behalf), and the only capability to
/// that frame — no copy, so it is no thread's IPC buffer and no other thread's ring, whose
/// writes would overwrite records the reader has not read (its holder may still map it to read
/// the ring: a mapping is no new capability).
pub(crate) fn check_trace_frame(slot: SlotRef, frame: &Cap) -> Result<(), Refused> {
    match frame {
        Cap::Frame { size: FrameSize::Small, rights, device: false, .. } if rights.contains(Rights::WRITE) => {}
        Cap::Frame { .. } => {
            return Err(refuse(
                Error::IllegalOperation,
                "a trace ring must be a writable 4 KiB frame of normal memory",
            ));
        }
        _ => return Err(refuse(Error::InvalidCapability, "the ring argument is not a frame")),
    }
    if !mdb::is_final_cap(slot) {
        return Err(refuse(
            Error::IllegalOperation,
            "a trace ring's frame must have no other capability (no copy, IPC buffer or other ring)",
        ));
    }
    Ok(())
}

/// Telemetry Trace: copy the frame capability in `frame_slot` into the thread's trace slot
/// (after deleting what was there) and start a new trace into it. `tcb_slot` holds the TCB
/// capability the thread was named by. `Ok(false)`: preempted, the syscall restarts.
pub(crate) fn start_trace(
    k: &mut Kernel,
    m: Message,
    tcb_slot: SlotRef,
    target: *mut Tcb,
    frame_slot: SlotRef,
    frame: Cap,
) -> Result<(), Refused> {
    check_trace_frame(frame_slot, &frame)?;
    let arg = TcbSlotArg { index: TCB_TRACE, src: frame_slot, cap: frame };
    if install_tcb_caps(k, m, tcb_slot, target, &[arg])? == Progress::Preempted {
        return Ok(());
    }
    // SAFETY: `install_tcb_caps` checked that `tcb_slot` still names this live TCB.
    let slot = unsafe { Tcb::slots_of(target) }.slot(TCB_TRACE as u64).expect("the trace slot");
    let Cap::Frame { ptr, .. } = slot.cap() else {
        return Err(refuse(Error::IllegalOperation, "the frame cannot be derived"));
    };
    slot.set_mdb(slot.mdb().with_traces());
    with_target(target, |t| {
        t.trace.start(ptr);
        t.set_traced(true);
    });
    Ok(())
}

/// Telemetry TraceOff: delete the thread's trace slot's copy (which turns the trace off) and
/// say how many records were written and dropped. `None`: preempted, the syscall restarts.
pub(crate) fn stop_trace(k: &mut Kernel, target: *mut Tcb) -> Option<(u64, u64)> {
    let counts = with_target(target, |t| (t.trace.written(), t.trace.dropped()));
    if clear_tcb_slot(k, target, TCB_TRACE) == Progress::Preempted {
        return None;
    }
    Some(counts)
}

/// Make a thread runnable (TCB Resume): an inactive thread runs again where its registers say
/// (a syscall it was taken out of was rewound then, and is executed again).
pub(crate) fn resume_thread(k: &mut Kernel, t: *mut Tcb) {
    let runnable = with_target(t, |tr| {
        // A thread with no address space cannot run.
        if tr.state != ThreadState::Inactive || tr.slots[TCB_VSPACE].cap.is_null() {
            return false;
        }
        tr.state = ThreadState::Restart;
        true
    });
    if runnable && k.sched.current() != t {
        // SAFETY: live and now runnable.
        unsafe { k.sched.wake(t) };
    }
}

/// Stop a thread (TCB Suspend, ThreadExit, a fault nobody handles): out of any IPC and the run
/// queues. A thread that had received a Call and not yet replied can no longer reply: its caller
/// is woken with `ReplyLost` (a later Resume does not give the right back).
pub(crate) fn suspend_thread(k: &mut Kernel, t: *mut Tcb) {
    // SAFETY: callers pass live TCBs from valid capabilities (or the current thread); each
    // operation makes its own short references.
    unsafe {
        super::endpoint::cancel_ipc(t);
        super::endpoint::lose_reply_right(k, t);
        k.sched.remove(t);
        (*t).state = ThreadState::Inactive;
    }
    if k.sched.current() == t {
        k.sched.current_blocked();
    }
}

#[cfg(test)]
mod tests {
    use super::Profile;
    use ozone_abi::profile::{self, mask};

    #[test]
    fn profile_records_checks_and_keeps_the_fast_mask() {
        let mut p = Profile::INITIAL;
        assert_eq!((p.used(), p.allowed()), (0, profile::ALL));
        // Nothing is fast until it has been recorded once.
        assert!(!p.fast_allows(mask(profile::CALL)));
        assert!(p.admit(mask(profile::CALL)));
        assert!(p.fast_allows(mask(profile::CALL)));
        assert!(!p.fast_allows(mask(profile::REPLY_RECV)));
        // A denied bit is recorded too, and never fast.
        p.set_allowed(profile::ALL & !mask(profile::YIELD));
        assert!(!p.admit(mask(profile::YIELD)));
        assert_eq!(p.used(), mask(profile::CALL) | mask(profile::YIELD));
        assert!(!p.fast_allows(mask(profile::YIELD)));
        assert!(p.fast_allows(mask(profile::CALL)));
        // Taking a recorded bit away takes it off the fast mask; giving it back restores it.
        p.set_allowed(0);
        assert!(!p.fast_allows(mask(profile::CALL)));
        assert!(!p.admit(mask(profile::CALL)));
        p.set_allowed(profile::ALL);
        assert!(p.fast_allows(mask(profile::CALL)) && p.fast_allows(mask(profile::YIELD)));
        // A mask of several bits is allowed only if all are.
        p.set_allowed(mask(profile::CALL));
        assert!(!p.admit(mask(profile::CALL) | mask(profile::UNTYPED)));
        assert!(p.admit(mask(profile::CALL)));
    }

    #[test]
    fn a_window_empties_fast_counts_exactly_and_narrows_to_what_was_used() {
        let mut p = Profile::INITIAL;
        assert!(p.admit(mask(profile::CALL)));
        assert!(p.fast_allows(mask(profile::CALL)));
        p.arm(profile::ALL, 3);
        assert_eq!(p.window(), Some(3));
        assert!(!p.fast_allows(mask(profile::CALL)), "nothing is fast in a window");
        for left in [2, 1, 0] {
            p.count_syscall();
            assert!(p.admit(mask(profile::YIELD)));
            assert!(!p.fast_allows(mask(profile::YIELD)), "recording in a window makes nothing fast");
            assert_eq!((p.window(), p.allowed()), (Some(left), profile::ALL));
        }
        // The fourth syscall: narrowed before it is admitted.
        p.count_syscall();
        let used = mask(profile::CALL) | mask(profile::YIELD);
        assert_eq!((p.window(), p.allowed(), p.used()), (None, used, used));
        assert!(p.fast_allows(used));
        assert!(!p.admit(mask(profile::SEND)));
        // Without a window, counting changes nothing.
        p.count_syscall();
        assert_eq!((p.window(), p.allowed()), (None, used));
        // SetProfile replaces a window.
        p.arm(profile::ALL, 0);
        p.set_allowed(profile::ALL);
        p.count_syscall();
        assert_eq!((p.window(), p.allowed()), (None, profile::ALL));
    }

    #[test]
    fn fastpath_off_leaves_only_the_ipc_fastpath_bits_out_of_fast() {
        let used = mask(profile::CALL) | mask(profile::REPLY_RECV) | mask(profile::YIELD) | mask(profile::SEND);
        let off = !Profile::IPC_FASTPATH_BITS;
        assert_eq!(Profile::fast_bits(used, profile::ALL, u64::MAX), used);
        assert_eq!(Profile::fast_bits(used, profile::ALL, off), mask(profile::YIELD) | mask(profile::SEND));
        // Still only what is allowed.
        assert_eq!(Profile::fast_bits(used, mask(profile::CALL) | mask(profile::SEND), off), mask(profile::SEND));
    }
}
