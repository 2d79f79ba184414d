//! The OZONE-OS kernel/user ABI, shared by the kernel and every userspace program.
//!
//! Nothing here does anything: it names numbers. The kernel and userspace both depend on this
//! crate so that a syscall number, an error code or a memory-layout constant is written once.
//!
//! # Register convention (modelled on seL4's x86_64 ABI)
//!
//! A syscall is the `syscall` instruction with:
//!
//! | register | in                         | out                          |
//! |----------|----------------------------|------------------------------|
//! | `rdx`    | syscall number ([`Syscall`]) | —                          |
//! | `rdi`    | capability pointer / arg 0 | badge / result 0             |
//! | `rsi`    | message info / arg 1       | message info / result 1      |
//! | `r10`    | message register 0 / arg 2 | message register 0           |
//! | `r8`     | message register 1 / arg 3 | message register 1           |
//! | `r9`     | message register 2 / arg 4 | message register 2           |
//! | `r15`    | message register 3 / arg 5 | message register 3           |
//! | `rax`    | —                          | error code ([`Error`], 0 = ok) |
//!
//! `rcx` and `r11` are clobbered by the `syscall`/`sysret` pair; every other register is preserved.
#![no_std]
#![forbid(unsafe_code)]

/// Syscall numbers, passed in `rdx`.
///
/// Negative numbers are the seL4-style IPC syscalls (served from issue 3 on); the debug calls
/// are available in every build of the kernel that is not built with debug calls compiled out.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    Call = -1,
    ReplyRecv = -2,
    Send = -3,
    NbSend = -4,
    Recv = -5,
    Reply = -6,
    Yield = -7,
    NbRecv = -8,
    /// A Call that a signal on the caller's bound notification ends (for call timeouts): as
    /// [`Syscall::Call`] on an endpoint capability, but while the caller waits to send or for
    /// the reply, a signal of its bound notification cancels the Call, which then returns
    /// [`Error::Interrupted`] with the notification's word (taken, so cleared) in `rdi`. Bits
    /// already pending when it starts end it at once the same way. The caller must have a bound
    /// notification (else [`Error::IllegalOperation`]). Never taken by the fastpath.
    CallInterruptible = -9,
    /// Write `len` (rsi) bytes of UTF-8 at `ptr` (rdi) to the kernel console. Only threads given
    /// the debug channel may ([`invocation::TCB_SET_DEBUG_OUTPUT`]; the root task's thread has
    /// it): for any other the call returns [`Error::Denied`] and prints nothing.
    DebugWrite = -64,
    /// End the calling thread. `rdi` is an exit status the kernel logs.
    ThreadExit = -65,
}

impl Syscall {
    /// The IPC syscalls (those with a syscall-profile bit).
    pub const IPC: [Syscall; 9] = [
        Syscall::Call,
        Syscall::ReplyRecv,
        Syscall::Send,
        Syscall::NbSend,
        Syscall::Recv,
        Syscall::Reply,
        Syscall::Yield,
        Syscall::NbRecv,
        Syscall::CallInterruptible,
    ];

    /// Decode a raw syscall number; `None` for numbers the kernel does not know.
    pub const fn from_raw(raw: i64) -> Option<Syscall> {
        Some(match raw {
            -1 => Syscall::Call,
            -2 => Syscall::ReplyRecv,
            -3 => Syscall::Send,
            -4 => Syscall::NbSend,
            -5 => Syscall::Recv,
            -6 => Syscall::Reply,
            -7 => Syscall::Yield,
            -8 => Syscall::NbRecv,
            -9 => Syscall::CallInterruptible,
            -64 => Syscall::DebugWrite,
            -65 => Syscall::ThreadExit,
            _ => return None,
        })
    }

    /// The [`profile`] bit index of this syscall: `-number - 1` for the IPC syscalls (Call is
    /// bit 0, NBRecv bit 7, CallInterruptible bit 8); `None` for the debug calls, which are
    /// never denied.
    pub const fn profile_bit(self) -> Option<u32> {
        let n = self as i64;
        if n >= -9 { Some((-n - 1) as u32) } else { None }
    }
}

/// Error codes returned in `rax` (0 means success).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// An argument was out of range.
    InvalidArgument = 1,
    /// A capability pointer does not name a capability of the needed type.
    InvalidCapability = 2,
    /// The operation is not permitted with the rights held.
    IllegalOperation = 3,
    /// A range (index, size, address) is outside what is allowed.
    RangeError = 4,
    /// An alignment requirement was violated.
    AlignmentError = 5,
    /// The operation failed to look up a capability.
    FailedLookup = 6,
    /// A user buffer is not mapped, not user-accessible, or reaches into kernel memory.
    InvalidUserBuffer = 7,
    /// The requested memory or slot is already in use.
    DeleteFirst = 8,
    /// Not enough memory left to satisfy the request.
    NotEnoughMemory = 9,
    /// The syscall number is not known to this kernel.
    UnknownSyscall = 10,
    /// The syscall exists in the ABI but this kernel does not serve it yet.
    NotImplemented = 11,
    /// The thread's syscall profile does not allow this operation (see [`profile`]), or the
    /// thread may not use the kernel's debug channel (`DebugWrite`: see
    /// [`invocation::TCB_SET_DEBUG_OUTPUT`]).
    Denied = 12,
    /// A Call waited for a reply from a thread that can no longer give it: the thread that had
    /// received the Call (and so held the right to reply) was deleted or suspended (stopped,
    /// exited, or died of a fault nobody handled) before replying. The server is gone or
    /// stopped; what the call did, if anything, is unknown.
    ReplyLost = 13,
    /// A [`Syscall::CallInterruptible`] was ended by a signal on the caller's bound
    /// notification (before it was received, or while waiting for the reply, which then goes
    /// nowhere). `rdi` holds the notification's word, taken.
    Interrupted = 14,
}

impl Error {
    /// Decode a raw `rax` value; `Ok(())` for 0, `Err(None)` for an unknown code.
    pub const fn from_raw(raw: u64) -> Result<(), Option<Error>> {
        Err(Some(match raw {
            0 => return Ok(()),
            1 => Error::InvalidArgument,
            2 => Error::InvalidCapability,
            3 => Error::IllegalOperation,
            4 => Error::RangeError,
            5 => Error::AlignmentError,
            6 => Error::FailedLookup,
            7 => Error::InvalidUserBuffer,
            8 => Error::DeleteFirst,
            9 => Error::NotEnoughMemory,
            10 => Error::UnknownSyscall,
            11 => Error::NotImplemented,
            12 => Error::Denied,
            13 => Error::ReplyLost,
            14 => Error::Interrupted,
            _ => return Err(None),
        }))
    }
}

/// Exit codes written to QEMU's `isa-debug-exit` device (I/O port [`DEBUG_EXIT_PORT`]).
///
/// QEMU exits with `(code << 1) | 1`, so [`ExitCode::Success`] makes QEMU exit with 33.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// The last user thread exited and the kernel shut down cleanly.
    Success = 0x10,
    /// The kernel hit an exception or a panic.
    KernelFault = 0x11,
    /// Boot could not complete (bad boot information, bad initrd, bad root-task ELF, ...).
    BootFailure = 0x12,
    /// The kernel shut down cleanly, but a user thread had died of a fault.
    UserFault = 0x13,
}

impl ExitCode {
    /// The process exit status QEMU reports for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// Decode a QEMU exit status produced by `isa-debug-exit`.
    pub const fn from_qemu_status(status: i32) -> Option<ExitCode> {
        if status & 1 == 0 {
            return None;
        }
        Some(match status >> 1 {
            0x10 => ExitCode::Success,
            0x11 => ExitCode::KernelFault,
            0x12 => ExitCode::BootFailure,
            0x13 => ExitCode::UserFault,
            _ => return None,
        })
    }
}

/// The I/O port of QEMU's `isa-debug-exit` device as our runners configure it.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The highest user virtual address plus one: the lower canonical half less its last page (as
/// Linux's `TASK_SIZE`). Nothing can be mapped in that page, so no `syscall` instruction can sit
/// at its end and return to the non-canonical 0x8000_0000_0000 (a `sysretq` there faults in
/// ring 0 on Intel CPUs: the CVE-2012-0217 class).
pub const USER_TOP: u64 = 0x0000_7fff_ffff_f000;

/// Virtual address of the top of the root task's initial stack (the stack grows down).
pub const ROOT_STACK_TOP: u64 = 0x0000_7fff_ffff_0000;

/// Size of the root task's initial stack.
pub const ROOT_STACK_SIZE: u64 = 64 * 1024;

/// Lines the kernel and the root task print that tests and tools look for.
pub mod markers {
    /// Printed by the kernel when boot has finished, before entering the root task.
    pub const BOOT_OK: &str = "ozone: boot ok";
    /// Printed by the root task from ring 3.
    pub const ROOT_HELLO: &str = "[root] hello from ring 3";
    /// Printed by the kernel just before an ACPI power-off.
    pub const POWER_OFF: &str = "ozone: power off";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_words_round_trip_in_their_order() {
        use telemetry::{PROFILE_USED, ThreadCounters, WORDS};
        let c = ThreadCounters {
            syscalls: 1,
            invocations: 2,
            ipc_sent: 3,
            ipc_received: 4,
            faults: 5,
            denied: 6,
            cpu_ticks: 7,
        };
        assert_eq!(c.to_words(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(ThreadCounters::from_words(c.to_words()), c);
        assert_eq!(core::mem::size_of::<ThreadCounters>(), WORDS * 8);
        assert_eq!(PROFILE_USED, 7, "the profile's `used` mask follows the counters");
    }

    #[test]
    fn syscall_numbers_round_trip() {
        for s in Syscall::IPC.into_iter().chain([Syscall::DebugWrite, Syscall::ThreadExit]) {
            assert_eq!(Syscall::from_raw(s as i64), Some(s));
        }
        assert_eq!(Syscall::from_raw(0), None);
        assert_eq!(Syscall::from_raw(i64::MIN), None);
    }

    #[test]
    fn error_codes_round_trip() {
        assert_eq!(Error::from_raw(0), Ok(()));
        for raw in 1..=14u64 {
            let e = Error::from_raw(raw).unwrap_err().unwrap();
            assert_eq!(e as u64, raw);
        }
        assert_eq!(Error::from_raw(15), Err(None));
    }

    #[test]
    fn profile_bits() {
        let ipc = [
            (Syscall::Call, profile::CALL),
            (Syscall::ReplyRecv, profile::REPLY_RECV),
            (Syscall::Send, profile::SEND),
            (Syscall::NbSend, profile::NB_SEND),
            (Syscall::Recv, profile::RECV),
            (Syscall::Reply, profile::REPLY),
            (Syscall::Yield, profile::YIELD),
            (Syscall::NbRecv, profile::NB_RECV),
            (Syscall::CallInterruptible, profile::CALL_INTERRUPTIBLE),
        ];
        let mut all = 0;
        for (s, bit) in ipc {
            assert_eq!(s.profile_bit(), Some(bit));
            // The bit is `!number`, the one-instruction form the kernel may use.
            assert_eq!(!(s as i64) as u32, bit);
            all |= profile::mask(bit);
        }
        assert_eq!(all, profile::IPC);
        assert_eq!(Syscall::DebugWrite.profile_bit(), None);
        assert_eq!(Syscall::ThreadExit.profile_bit(), None);
        let objects = (profile::UNTYPED..=profile::TELEMETRY).fold(0, |m, b| m | profile::mask(b));
        assert_eq!(objects, profile::OBJECTS);
        assert_eq!(profile::OBJECTS & profile::IPC, 0);
    }

    #[test]
    fn message_info_fields() {
        let m = MessageInfo::new(0xabcde, 5, 3, 120);
        assert_eq!((m.label(), m.caps_unwrapped(), m.extra_caps(), m.length()), (0xabcde, 5, 3, 120));
        assert_eq!(MessageInfo::new(1, 8, 4, 128), MessageInfo::new(1, 0, 0, 0));
        assert_eq!(core::mem::size_of::<IpcBuffer>(), 128 * 8);
    }

    #[test]
    fn exit_codes_match_qemu_encoding() {
        assert_eq!(ExitCode::Success.qemu_status(), 33);
        for c in [ExitCode::Success, ExitCode::KernelFault, ExitCode::BootFailure, ExitCode::UserFault] {
            assert_eq!(ExitCode::from_qemu_status(c.qemu_status()), Some(c));
        }
        assert_eq!(ExitCode::from_qemu_status(0), None);
        assert_eq!(ExitCode::from_qemu_status(3), None);
    }
}

/// Kernel object types, as named to `Untyped::Retype` (issue 3 on).
pub mod object {
    /// Object type numbers.
    #[repr(u64)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ObjectType {
        Untyped = 0,
        Tcb = 1,
        Endpoint = 2,
        Notification = 3,
        CNode = 4,
        Frame4K = 5,
        Frame2M = 6,
        PageTable = 7,
        PageDirectory = 8,
        Pdpt = 9,
        Pml4 = 10,
    }

    impl ObjectType {
        pub const ALL: [ObjectType; 11] = [
            ObjectType::Untyped,
            ObjectType::Tcb,
            ObjectType::Endpoint,
            ObjectType::Notification,
            ObjectType::CNode,
            ObjectType::Frame4K,
            ObjectType::Frame2M,
            ObjectType::PageTable,
            ObjectType::PageDirectory,
            ObjectType::Pdpt,
            ObjectType::Pml4,
        ];

        pub const fn from_raw(raw: u64) -> Option<ObjectType> {
            if raw < Self::ALL.len() as u64 { Some(Self::ALL[raw as usize]) } else { None }
        }
    }

    /// log2 of the bytes one CNode slot takes.
    pub const CNODE_SLOT_BITS: u8 = 6;
    /// log2 of a TCB's size (registers, FPU state, IPC state).
    pub const TCB_BITS: u8 = 11;
    pub const ENDPOINT_BITS: u8 = 5;
    pub const NOTIFICATION_BITS: u8 = 6;
    pub const PAGE_BITS: u8 = 12;
    pub const LARGE_PAGE_BITS: u8 = 21;
    /// Smallest and largest untyped objects a retype may make.
    pub const MIN_UNTYPED_BITS: u8 = 4;
    pub const MAX_UNTYPED_BITS: u8 = 47;
    /// Largest CNode radix.
    pub const MAX_CNODE_RADIX: u8 = 24;
}

/// Message info: the first word of every message (in `rsi`), modelled on seL4's.
///
/// | bits   | field |
/// |--------|-------|
/// | 0..7   | length: message registers used (0..=[`MSG_MAX_LENGTH`]) |
/// | 7..9   | extra caps: capabilities sent (0..=[`MSG_MAX_EXTRA_CAPS`]) |
/// | 9..12  | caps unwrapped: bit i set if extra cap i arrived as its badge only |
/// | 12..64 | label: free for the protocol (invocations use it as the method) |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MessageInfo(pub u64);

/// Message registers a message can carry (4 in CPU registers, the rest in the IPC buffer).
pub const MSG_MAX_LENGTH: u64 = 120;
/// Capabilities a message can carry.
pub const MSG_MAX_EXTRA_CAPS: u64 = 3;
/// Message registers passed in CPU registers (`r10`, `r8`, `r9`, `r15`).
pub const MSG_REGISTERS: usize = 4;

impl MessageInfo {
    pub const fn new(label: u64, caps_unwrapped: u64, extra_caps: u64, length: u64) -> MessageInfo {
        MessageInfo((label << 12) | ((caps_unwrapped & 7) << 9) | ((extra_caps & 3) << 7) | (length & 0x7f))
    }
    pub const fn label(self) -> u64 {
        self.0 >> 12
    }
    pub const fn caps_unwrapped(self) -> u64 {
        (self.0 >> 9) & 7
    }
    pub const fn extra_caps(self) -> u64 {
        (self.0 >> 7) & 3
    }
    pub const fn length(self) -> u64 {
        self.0 & 0x7f
    }
}

/// The per-thread IPC buffer (one 4 KiB frame holds it), as seL4 lays it out.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IpcBuffer {
    pub tag: u64,
    /// Message registers; the first [`MSG_REGISTERS`] travel in CPU registers instead.
    pub msg: [u64; MSG_MAX_LENGTH as usize],
    pub user_data: u64,
    /// Capability pointers to send, or badges received.
    pub caps_or_badges: [u64; MSG_MAX_EXTRA_CAPS as usize],
    /// Where a received capability goes: CNode, index and depth (in the receiver's CSpace).
    pub receive_cnode: u64,
    pub receive_index: u64,
    pub receive_depth: u64,
}

/// Capability access rights (a bit set).
pub mod rights {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const GRANT: u64 = 1 << 2;
    pub const GRANT_REPLY: u64 = 1 << 3;
    pub const ALL: u64 = READ | WRITE | GRANT | GRANT_REPLY;
}

/// What the kernel hands the root task: the initial capabilities and where everything is.
///
/// The kernel maps one read-only page holding a [`BootInfo`](bootinfo::BootInfo) into the root
/// task and passes its address in `rdi` at the root task's first instruction.
pub mod bootinfo {
    /// Fixed slots of the root task's CNode.
    pub mod slot {
        /// Always empty.
        pub const NULL: u64 = 0;
        /// The root task's own TCB.
        pub const TCB: u64 = 1;
        /// The root task's CNode (its CSpace root).
        pub const CNODE: u64 = 2;
        /// The root task's PML4 (its VSpace root).
        pub const VSPACE: u64 = 3;
        /// The right to make IRQ handler capabilities.
        pub const IRQ_CONTROL: u64 = 4;
        /// The right to make I/O port capabilities.
        pub const IO_PORT_CONTROL: u64 = 5;
        /// The frame holding the boot information.
        pub const BOOT_INFO_FRAME: u64 = 6;
        /// The root task's IPC buffer frame.
        pub const IPC_BUFFER: u64 = 7;
        /// Kernel telemetry (per-thread counters) for whoever holds it.
        pub const TELEMETRY: u64 = 8;
        /// First slot of the variable-length ranges described by `BootInfo`.
        pub const FIRST_FREE: u64 = 16;
    }

    /// The most untyped regions described.
    pub const MAX_UNTYPEDS: usize = 192;

    /// A half-open range of CNode slots.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SlotRange {
        pub start: u64,
        pub end: u64,
    }

    /// One untyped capability's memory.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct UntypedDesc {
        pub paddr: u64,
        pub size_bits: u8,
        pub is_device: u8,
        pub _pad: [u8; 6],
    }

    /// The boot information page.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct BootInfo {
        /// `OZONE_BOOTINFO_MAGIC`.
        pub magic: u64,
        /// log2 of the root CNode's slot count.
        pub cnode_radix: u64,
        /// Slots the root task may use freely.
        pub empty: SlotRange,
        /// Frame caps of the root task's own image (ELF segments and stack).
        pub user_image_frames: SlotRange,
        /// Paging-structure caps of the root task's address space.
        pub user_image_paging: SlotRange,
        /// Untyped caps, described one by one in `untyped_list`.
        pub untyped: SlotRange,
        /// Read-only frame caps covering the initrd, in order.
        pub initrd_frames: SlotRange,
        /// Where the initrd is mapped in the root task and how long it is.
        pub initrd_vaddr: u64,
        pub initrd_size: u64,
        /// The root task's IPC buffer address.
        pub ipc_buffer: u64,
        /// The instance id the kernel printed.
        pub instance_id: u64,
        pub untyped_list: [UntypedDesc; MAX_UNTYPEDS],
    }

    pub const OZONE_BOOTINFO_MAGIC: u64 = 0x6f7a_6f6e_6542_4931;

    const _: () = assert!(core::mem::size_of::<BootInfo>() <= 4096);
}

/// Invocation labels: the message label of a Call on a kernel object's capability selects the
/// method. Arguments are message registers (MR0.. in order) and, for capability arguments, the
/// capability pointers in the IPC buffer's `caps_or_badges` (cap0, cap1, ...) with the message
/// info's `extra_caps` saying how many. Results come back in message registers; `rax` carries the
/// error code. See docs/abi.md for each method's arguments.
pub mod invocation {
    pub const UNTYPED_RETYPE: u64 = 1;
    /// MR0 size_bits, MR1 free bytes, MR2 flags ([`UNTYPED_INFO_HAS_CHILDREN`],
    /// [`UNTYPED_INFO_DEVICE`]), MR3 physical address. See docs/abi.md for what "free" means.
    pub const UNTYPED_GET_INFO: u64 = 2;

    pub const CNODE_COPY: u64 = 10;
    pub const CNODE_MINT: u64 = 11;
    pub const CNODE_MOVE: u64 = 12;
    pub const CNODE_MUTATE: u64 = 13;
    pub const CNODE_DELETE: u64 = 14;
    pub const CNODE_REVOKE: u64 = 15;
    pub const CNODE_CANCEL_BADGED_SENDS: u64 = 16;

    pub const TCB_CONFIGURE: u64 = 20;
    pub const TCB_SET_SPACE: u64 = 21;
    pub const TCB_SET_IPC_BUFFER: u64 = 22;
    pub const TCB_SET_PRIORITY: u64 = 23;
    pub const TCB_SET_MC_PRIORITY: u64 = 24;
    pub const TCB_READ_REGISTERS: u64 = 25;
    pub const TCB_WRITE_REGISTERS: u64 = 26;
    pub const TCB_RESUME: u64 = 27;
    pub const TCB_SUSPEND: u64 = 28;
    pub const TCB_BIND_NOTIFICATION: u64 = 29;
    pub const TCB_UNBIND_NOTIFICATION: u64 = 30;
    pub const TCB_SET_TLS_BASE: u64 = 31;
    /// MR0 = the new `allowed` mask of the thread's syscall profile (see [`crate::profile`]).
    pub const TCB_SET_PROFILE: u64 = 32;
    /// Returns MR0 = `used`, MR1 = `allowed` of the thread's syscall profile, MR2 = 1 if a
    /// learning window is armed (else 0), MR3 = the syscalls it may still make while learning.
    pub const TCB_GET_PROFILE: u64 = 33;
    /// cap0 = an endpoint capability with the write right and the grant or grant-reply right,
    /// copied into the thread's fault-handler slot (its faults become Calls on it, with its
    /// badge); no capability argument: the slot is emptied (the thread's faults then suspend it).
    pub const TCB_SET_FAULT_HANDLER: u64 = 34;
    /// MR0 = `allowed`, MR1 = N: arm a learning window. The thread's profile allows `allowed`
    /// for N more syscalls; at the syscall after them, before it is admitted, the kernel
    /// narrows `allowed` to what the thread has used of it (`used & allowed`). The rules are
    /// SetProfile's; a thread in a window cannot change its own profile.
    pub const TCB_ARM_PROFILE: u64 = 35;
    /// MR0 = 1 to let the thread use the kernel's debug channel (`DebugWrite`), 0 to take it
    /// away; cap0 = the I/O-port control capability, the authority over the machine's console.
    pub const TCB_SET_DEBUG_OUTPUT: u64 = 38;

    pub const PAGING_MAP: u64 = 40;
    pub const PAGING_UNMAP: u64 = 41;

    pub const FRAME_MAP: u64 = 50;
    pub const FRAME_UNMAP: u64 = 51;
    pub const FRAME_GET_ADDRESS: u64 = 52;

    pub const IRQ_CONTROL_GET: u64 = 60;
    pub const IRQ_HANDLER_ACK: u64 = 61;
    pub const IRQ_HANDLER_SET_NOTIFICATION: u64 = 62;
    pub const IRQ_HANDLER_CLEAR: u64 = 63;
    /// MR0/MR1 destination index and depth, cap0 the destination CNode's root: a handler
    /// capability for a message-signalled line the kernel chooses. Returns MR0 = the line,
    /// MR1 = the address and MR2 = the data a device writes to raise it (its MSI or MSI-X
    /// entry). `DeleteFirst` when every MSI line has a handler.
    pub const IRQ_CONTROL_GET_MSI: u64 = 64;

    pub const IO_PORT_CONTROL_ISSUE: u64 = 70;
    pub const IO_PORT_IN8: u64 = 71;
    pub const IO_PORT_IN16: u64 = 72;
    pub const IO_PORT_IN32: u64 = 73;
    pub const IO_PORT_OUT8: u64 = 74;
    pub const IO_PORT_OUT16: u64 = 75;
    pub const IO_PORT_OUT32: u64 = 76;

    /// cap0: a TCB. Returns its counters in MR0..MR5 ([`crate::telemetry::ThreadCounters`], in
    /// the order of [`to_words`](crate::telemetry::ThreadCounters::to_words)) and its syscall
    /// profile's `used` mask in MR6 ([`crate::telemetry::PROFILE_USED`]).
    pub const TELEMETRY_READ: u64 = 80;
    /// cap0: a TCB, cap1: a writable 4 KiB frame of normal memory, and the only capability to
    /// it (no copy: so it is no IPC buffer and no other thread's ring; `IllegalOperation`
    /// otherwise). Starts the thread's event trace
    /// ([`crate::trace`]) in that frame: the kernel keeps a copy of the frame capability in the
    /// thread (revoking the frame's capability, or the untyped it was made from, stops the
    /// trace; deleting capabilities to the frame does not, as the thread's copy keeps it) and
    /// appends one record per syscall and fault of the thread. Replaces any trace the thread
    /// had; counts start at 0.
    pub const TELEMETRY_TRACE: u64 = 81;
    /// cap0: a TCB. Stops its trace (the frame's copy is deleted). Returns MR0 = records
    /// written, MR1 = records dropped (0, 0 if it was not traced).
    pub const TELEMETRY_TRACE_OFF: u64 = 82;
    /// cap0: a TCB, MR0: how many records the reader has consumed (a sequence number counted
    /// from the start of the trace, never going back, at most the records written). Returns
    /// MR0 = records written, MR1 = records dropped. `IllegalOperation` if the thread is not
    /// traced (never was, stopped, or its ring's frame was revoked), `RangeError` for a count
    /// below the last one given or above the records written.
    pub const TELEMETRY_TRACE_ACK: u64 = 83;

    /// Register order of TCB ReadRegisters / WriteRegisters.
    pub const REGISTER_COUNT: u64 = 18;

    /// Frame Map attribute: executable.
    pub const MAP_EXECUTABLE: u64 = 1;

    /// Untyped GetInfo, MR2 bit: the untyped has derivation children (objects, or a copy).
    pub const UNTYPED_INFO_HAS_CHILDREN: u64 = 1 << 0;
    /// Untyped GetInfo, MR2 bit: device memory (only frames and untyped can be made from it).
    pub const UNTYPED_INFO_DEVICE: u64 = 1 << 1;
}

/// Kernel telemetry: the per-thread counters the kernel keeps and the telemetry capability's
/// Read returns ([`invocation::TELEMETRY_READ`]). Defined here once for the kernel, which counts
/// and replies, and for userspace, which decodes the reply (the SDK, Studio, the shaper) and
/// passes the counters on (Studio's `TELEMETRY` method sends this type, postcard-encoded, with the
/// `serde` feature).
pub mod telemetry {
    /// One thread's counters, each counting since the thread was made.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct ThreadCounters {
        /// Syscalls made (every `syscall` instruction, fastpaths included).
        pub syscalls: u64,
        /// Invocations of kernel objects.
        pub invocations: u64,
        /// Messages sent (IPC and fault messages).
        pub ipc_sent: u64,
        /// Messages received.
        pub ipc_received: u64,
        /// Faults taken.
        pub faults: u64,
        /// Operations that failed or were denied (by the thread's profile or a missing right).
        pub denied: u64,
        /// Timer ticks that found it running (each charged one tick of its timeslice): how much
        /// of the CPU it used, to the tick (Studio tells CPU-bound programs from the rest by it).
        pub cpu_ticks: u64,
    }

    /// How many message registers [`ThreadCounters`] takes in a Read reply.
    pub const WORDS: usize = 7;

    /// The message register of a Read reply that holds the thread's profile `used` mask, after
    /// the counters.
    pub const PROFILE_USED: usize = WORDS;

    impl ThreadCounters {
        /// The counters as the message registers of a Read reply, MR0..MR6.
        pub const fn to_words(&self) -> [u64; WORDS] {
            [
                self.syscalls,
                self.invocations,
                self.ipc_sent,
                self.ipc_received,
                self.faults,
                self.denied,
                self.cpu_ticks,
            ]
        }

        /// The counters from the message registers of a Read reply.
        pub const fn from_words(w: [u64; WORDS]) -> ThreadCounters {
            ThreadCounters {
                syscalls: w[0],
                invocations: w[1],
                ipc_sent: w[2],
                ipc_received: w[3],
                faults: w[4],
                denied: w[5],
                cpu_ticks: w[6],
            }
        }
    }
}

/// Per-thread event traces: what the kernel writes into a traced thread's ring
/// ([`invocation::TELEMETRY_TRACE`]).
///
/// The ring is one 4 KiB frame of [`RING_RECORDS`](trace::RING_RECORDS) records of [`RECORD_BYTES`](trace::RECORD_BYTES) bytes; the record
/// with sequence number `n` (counted from 0 since the trace started) is at byte
/// `(n % RING_RECORDS) * RECORD_BYTES`. The kernel never writes over a record the reader has not
/// consumed (acknowledged with [`invocation::TELEMETRY_TRACE_ACK`]): when the ring is full, a new
/// record is counted as dropped instead. The kernel only writes the ring, never reads it, so what
/// the frame holds cannot mislead the kernel.
///
/// A record is two little-endian words. Word 0:
///
/// | bits   | field |
/// |--------|-------|
/// | 0..8   | `what`: for a syscall the [`crate::profile`] bit of the syscall (Call, Send, ...), for a debug call, which has none, [`DEBUG_WRITE`](trace::DEBUG_WRITE) or [`THREAD_EXIT`](trace::THREAD_EXIT); for a fault its [`crate::fault`] label |
/// | 8..12  | [`Kind`](trace::Kind) (never 0 in a written record) |
/// | 12..16 | [`ObjectKind`](trace::ObjectKind) of the capability the syscall named |
/// | 16..32 | result: 0 or the [`crate::Error`] code the syscall returned at once |
/// | 32..64 | tick: the kernel's timer ticks (100 Hz) at the event, low 32 bits |
///
/// Word 1: for a syscall, the message info as the thread passed it (the invocation label is
/// `word1 >> 12`), 0 for a debug call; for a page fault the faulting address, for another exception the vector, for
/// an unknown syscall its number.
pub mod trace {
    /// Bytes per record.
    pub const RECORD_BYTES: usize = 16;
    /// Records per ring (one 4 KiB frame).
    pub const RING_RECORDS: usize = 4096 / RECORD_BYTES;

    /// What an event is.
    #[repr(u8)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub enum Kind {
        /// A syscall the thread made (denied ones included).
        Syscall = 1,
        /// A fault the thread took.
        Fault = 2,
        /// A request the thread made of a server, as the server saw it: `what` says which
        /// server ([`BY_STUDIO`], [`BY_SERVER`]), `result` is the server's answer (0, or its
        /// `ServiceError` code), `info` the method number (or [`NOT_A_METHOD`] for a label that
        /// names none) — for [`BY_SERVER`] the server's program id instead (another server's
        /// methods are its own). **The kernel
        /// never writes one**: a server adds them to its own view of a thread's events (Studio's
        /// watch, `studio-server/src/watch.rs`), and a reader of a kernel ring refuses them.
        Method = 3,
    }

    /// The method of a [`Kind::Method`] record whose label named no method of the interface.
    pub const NOT_A_METHOD: u64 = u64::MAX;

    /// `what` of a [`Kind::Method`] record: Studio answered the request itself.
    pub const BY_STUDIO: u8 = 0;
    /// `what` of a [`Kind::Method`] record: another server refused the request and told Studio
    /// so (`studio::method::REFUSED`).
    pub const BY_SERVER: u8 = 1;

    /// The kind of capability a syscall named.
    #[repr(u8)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub enum ObjectKind {
        /// None named (Yield, Reply), or the record is a fault.
        None = 0,
        Endpoint = 1,
        Notification = 2,
        Reply = 3,
        Untyped = 4,
        CNode = 5,
        Tcb = 6,
        /// A paging structure.
        Paging = 7,
        Frame = 8,
        IrqControl = 9,
        IrqHandler = 10,
        IoPortControl = 11,
        IoPort = 12,
        Telemetry = 13,
        /// The capability pointer named no capability (the lookup failed or the slot is empty).
        Invalid = 14,
    }

    impl ObjectKind {
        pub const ALL: [ObjectKind; 15] = [
            ObjectKind::None,
            ObjectKind::Endpoint,
            ObjectKind::Notification,
            ObjectKind::Reply,
            ObjectKind::Untyped,
            ObjectKind::CNode,
            ObjectKind::Tcb,
            ObjectKind::Paging,
            ObjectKind::Frame,
            ObjectKind::IrqControl,
            ObjectKind::IrqHandler,
            ObjectKind::IoPortControl,
            ObjectKind::IoPort,
            ObjectKind::Telemetry,
            ObjectKind::Invalid,
        ];
    }

    /// One decoded record.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct Record {
        pub kind: Kind,
        /// The syscall's profile bit, or the fault's label.
        pub what: u8,
        pub object: ObjectKind,
        /// 0, or the error code the syscall returned.
        pub result: u16,
        /// Timer ticks at the event (low 32 bits).
        pub tick: u32,
        /// Message info (syscalls) or the fault's word.
        pub info: u64,
    }

    /// `what` of a DebugWrite's record (the debug calls have no profile bit: their negated
    /// syscall numbers, above every profile bit).
    pub const DEBUG_WRITE: u8 = 64;
    /// `what` of a ThreadExit's record: the thread's last (result 0).
    pub const THREAD_EXIT: u8 = 65;
    const _: () = assert!(
        -(crate::Syscall::DebugWrite as i64) == DEBUG_WRITE as i64
            && -(crate::Syscall::ThreadExit as i64) == THREAD_EXIT as i64
    );

    /// Word 0 of a syscall record with result 0 and tick 0 (the kernel ORs the tick in).
    pub const fn syscall_word(what: u32, object: ObjectKind) -> u64 {
        (what as u64 & 0xff) | ((Kind::Syscall as u64) << 8) | ((object as u64) << 12)
    }

    impl Record {
        /// The invocation label a syscall record carries (`info >> 12`).
        pub const fn label(&self) -> u64 {
            self.info >> 12
        }

        /// Whether this is the record of a ThreadExit: the end of the thread's life, not a
        /// behaviour (a reader judging behaviour passes over it).
        pub const fn ends_thread(&self) -> bool {
            matches!(self.kind, Kind::Syscall) && self.what == THREAD_EXIT
        }

        /// The record as the kernel writes it.
        pub const fn to_words(&self) -> [u64; 2] {
            [
                self.what as u64
                    | ((self.kind as u64) << 8)
                    | ((self.object as u64) << 12)
                    | ((self.result as u64) << 16)
                    | ((self.tick as u64) << 32),
                self.info,
            ]
        }

        /// Decode a record; `None` for words no kernel writes (an empty slot, an unknown kind
        /// or object).
        pub const fn from_words(w: [u64; 2]) -> Option<Record> {
            let kind = match (w[0] >> 8) & 0xf {
                1 => Kind::Syscall,
                2 => Kind::Fault,
                3 => Kind::Method,
                _ => return None,
            };
            let object = (w[0] >> 12) & 0xf;
            if object as usize >= ObjectKind::ALL.len() {
                return None;
            }
            Some(Record {
                kind,
                what: w[0] as u8,
                object: ObjectKind::ALL[object as usize],
                result: (w[0] >> 16) as u16,
                tick: (w[0] >> 32) as u32,
                info: w[1],
            })
        }

        /// Decode the record at `bytes` (at least [`RECORD_BYTES`] long).
        pub fn from_bytes(bytes: &[u8]) -> Option<Record> {
            let w0 = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?);
            let w1 = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?);
            Record::from_words([w0, w1])
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_round_trip_and_garbage_is_refused() {
            for (i, &object) in ObjectKind::ALL.iter().enumerate() {
                let r = Record {
                    kind: [Kind::Syscall, Kind::Fault, Kind::Method][i % 3],
                    what: i as u8 * 3,
                    object,
                    result: i as u16,
                    tick: 0xdead_0000 + i as u32,
                    info: u64::MAX - i as u64,
                };
                assert_eq!(Record::from_words(r.to_words()), Some(r));
                let mut bytes = [0u8; RECORD_BYTES];
                bytes[..8].copy_from_slice(&r.to_words()[0].to_le_bytes());
                bytes[8..].copy_from_slice(&r.to_words()[1].to_le_bytes());
                assert_eq!(Record::from_bytes(&bytes), Some(r));
            }
            assert_eq!(Record::from_words([0, 0]), None, "an empty slot is no record");
            assert_eq!(Record::from_words([4 << 8, 0]), None, "unknown kind");
            assert_eq!(Record::from_words([(1 << 8) | (15 << 12), 0]), None, "unknown object");
            assert_eq!(Record::from_bytes(&[1; 15]), None, "too short");
            let w = syscall_word(crate::profile::CALL, ObjectKind::Endpoint);
            let r = Record::from_words([w | (7 << 32), 5 << 12]).unwrap();
            assert_eq!(
                (r.kind, r.what, r.object, r.result, r.tick, r.label()),
                (Kind::Syscall, 0, ObjectKind::Endpoint, 0, 7, 5)
            );
        }
    }
}

/// Fault message labels: a fault is delivered to the thread's fault handler as a Call with one of
/// these labels (see docs/abi.md, "Faults").
pub mod fault {
    /// Page fault: MR0 RIP, MR1 address (CR2), MR2 page-fault error code.
    pub const VM_FAULT: u64 = 1;
    /// Unknown syscall: MR0 RIP after the `syscall`, MR1 RSP, MR2 syscall number.
    pub const UNKNOWN_SYSCALL: u64 = 2;
    /// Other CPU exception: MR0 RIP, MR1 RSP, MR2 vector, MR3 error code.
    pub const USER_EXCEPTION: u64 = 3;
    /// A syscall the thread's profile does not allow: MR0 RIP after the `syscall`, MR1 RSP,
    /// MR2 syscall number, MR3 the denied [`crate::profile`] bit index.
    pub const DENIED: u64 = 4;
    /// The thread's learning window (TCB ArmProfile) just ended: its `allowed` mask was
    /// narrowed, before the syscall that came next. MR0 RIP of that syscall's `syscall`
    /// instruction, MR1 RSP, MR2 syscall number, MR3 the new `allowed` mask. The reply with
    /// label 0 resumes the thread at that instruction: the syscall runs then, under the new
    /// mask; any other label leaves it suspended (resumed, it runs the syscall).
    pub const WINDOW_ENDED: u64 = 5;
}

/// Per-thread syscall profiles: which *operation classes* a thread has used and may use.
///
/// Every TCB has two masks over the bits below: `used`, to which the kernel ORs the bits of every
/// syscall the thread makes (denied ones included), and `allowed` (initially
/// [`ALL`](profile::ALL)). A syscall is **denied** — nothing happens, the thread's `denied` counter
/// goes up, and it returns [`crate::Error::Denied`] or, if the thread has a fault handler, raises a
/// [`fault::DENIED`] fault — when one of its bits is not in `allowed`.
///
/// A syscall's bits: its IPC syscall bit ([`crate::Syscall::profile_bit`]), plus, for a Call,
/// Send or NBSend whose capability names a kernel object (not an endpoint or notification), the
/// bit of that object's kind. A Call on an endpoint is the [`CALL`](profile::CALL) bit only; an
/// Untyped Retype made with Call is [`CALL`](profile::CALL) and [`UNTYPED`](profile::UNTYPED).
/// DebugWrite and ThreadExit have no bit and are never denied; unknown syscall numbers have no bit
/// (they are unknown-syscall faults).
///
/// Bits are indices (`u32`); [`mask`](profile::mask) turns one into its mask.
pub mod profile {
    /// IPC syscalls, bit = `-number - 1`.
    pub const CALL: u32 = 0;
    pub const REPLY_RECV: u32 = 1;
    pub const SEND: u32 = 2;
    pub const NB_SEND: u32 = 3;
    pub const RECV: u32 = 4;
    pub const REPLY: u32 = 5;
    pub const YIELD: u32 = 6;
    pub const NB_RECV: u32 = 7;
    pub const CALL_INTERRUPTIBLE: u32 = 8;

    /// Kernel objects invoked (with Call, Send or NBSend), one bit per capability kind.
    pub const UNTYPED: u32 = 16;
    pub const CNODE: u32 = 17;
    pub const TCB: u32 = 18;
    /// Paging structures: PML4, PDPT, page directory, page table.
    pub const PAGING: u32 = 19;
    /// 4 KiB and 2 MiB frames.
    pub const FRAME: u32 = 20;
    pub const IRQ_CONTROL: u32 = 21;
    pub const IRQ_HANDLER: u32 = 22;
    pub const IO_PORT_CONTROL: u32 = 23;
    pub const IO_PORT: u32 = 24;
    pub const TELEMETRY: u32 = 25;

    /// The mask of bit `index`.
    pub const fn mask(index: u32) -> u64 {
        1 << index
    }

    /// Every IPC syscall bit.
    pub const IPC: u64 = 0x1ff;
    /// Every kernel-object bit.
    pub const OBJECTS: u64 = ((1 << (TELEMETRY + 1)) - 1) & !((1 << UNTYPED) - 1);
    /// The unrestricted profile (every TCB starts with it). Bits without a meaning are allowed too,
    /// so classes added later are allowed for threads that were never restricted.
    pub const ALL: u64 = u64::MAX;
}
