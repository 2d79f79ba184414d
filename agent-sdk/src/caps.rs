//! Typed capability handles: one newtype per kernel object type over the raw slot number (the
//! capability pointer) that [`crate::sys`] and [`crate::kernel`] take, with that object's
//! operations as methods.
//!
//! ```ignore
//! use ozone_agent_sdk::caps::{self, Endpoint};
//!
//! let ep = Endpoint::from_slot(20);               // says what the program expects in slot 20
//! let reply = ep.call(Msg::new(0, &[1, 2]))?;     // sys::call(20, ..)
//! let server = caps::service().server("echo");    // the fixed slots of a program Studio started
//! ```
//!
//! **Design.** Each type is a `#[repr(transparent)]` newtype over the slot number (`u64`), `Copy`,
//! the size of a `u64`; a separate type per object (not a `Cap<T>` with markers) so each has
//! exactly its object's methods and its docs in one place. Every type implements [`Capability`]
//! (`from_slot`, `slot`); those a retype can make implement [`Object`] too, which gives
//! [`Untyped::retype`] the object type to ask for.
//!
//! **What the type promises.** A handle is a *claim* about a slot, not a proof: `from_slot` is
//! safe and checks nothing, and the slot may be empty, hold another type, or be revoked later.
//! The kernel checks every capability at every use, so a wrong claim can never break memory
//! safety; it comes back as an error. An empty slot (a revoked or deleted capability) is
//! `AgentError::Kernel(Error::InvalidCapability)`; so is a capability *argument* of the wrong
//! type (a frame passed as the `VSpace` of [`Frame::map`]). Invoking an object of another type is
//! `IllegalOperation` (the method is not one of that object's). One case the kernel cannot catch:
//! a Call or Send on an endpoint or notification is IPC, not an invocation, so a method of, say,
//! [`Tcb`] on a slot that really holds an endpoint sends that endpoint a message. Claim types
//! only for slots whose contents you know (Studio's fixed slots below, slots you filled).
//!
//! **Thin.** Every method is one existing [`crate::kernel`] / [`crate::sys`] function (or one
//! [`kernel::invoke`] with the ABI's label, for what `kernel` has no wrapper for: IRQ and I/O port
//! capabilities, telemetry, copies into another CNode), with the kernel's
//! [`Error`] turned into [`AgentError`]. No method adds kernel behaviour; docs/abi.md is the
//! reference for what each does.
//!
//! **Fixed slots.** [`studio`], [`service`], [`log`], [`notification`], [`pool`] and the others name the
//! slots Studio fills in every program it starts (`protocol::start::slot`). Where the start
//! information says whether the program has the capability, the accessor returns an `Option`:
//! [`pool`], [`own_cnode`] and [`own_vspace`] (programs with a pool). [`notification`] is `None` only in a program Studio did not start: Studio makes one
//! for servers and programs with devices, which the program cannot see from its start
//! information, so in an agent it names an empty slot.
//!
//! The root task and Studio name their own fixed slots (their thread, CNode, address space, the
//! control capabilities) through [`boot`]; code that reports the kernel's errors unchanged (a
//! server's kernel seam) turns a handle method's error back with [`kernel_error`].
//!
//! Slots named inside a [`CNode`] (the destination of a copy or a retype) are indices in that
//! CNode at full depth (64), as everywhere in the SDK: the programs' CSpaces are single-level.

use ozone_abi::Error;
use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;

use crate::error::{AgentError, Result};
use crate::kernel::{self, UntypedInfo, UserRegisters};
use crate::protocol::start::slot;
use crate::rpc::{Client, Server};
use crate::start;
use crate::sys::{self, Msg, Received};

/// A typed handle to the capability in one slot of the program's CSpace.
pub trait Capability: Copy {
    /// The kernel object's name, for messages ("endpoint", "frame", ...).
    const KIND: &'static str;
    /// A handle to the capability in `slot`. Checks nothing: the kernel checks the capability when
    /// the handle is used (see the module docs for what a wrong claim gives).
    fn from_slot(slot: u64) -> Self;
    /// The slot (capability pointer) the handle names.
    fn slot(self) -> u64;
}

/// A capability type [`Untyped::retype`] can make.
pub trait Object: Capability {
    /// The object type asked of Untyped Retype.
    const TYPE: ObjectType;
}

macro_rules! capability {
    ($(#[$doc:meta])* $name:ident, $kind:literal $(, $ty:ident)?) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(u64);

        impl $name {
            /// A handle to the capability in `slot` (see [`Capability::from_slot`]).
            pub const fn from_slot(slot: u64) -> Self {
                $name(slot)
            }
            /// The slot (capability pointer) this handle names.
            pub const fn slot(self) -> u64 {
                self.0
            }
        }

        impl Capability for $name {
            const KIND: &'static str = $kind;
            fn from_slot(slot: u64) -> Self {
                $name(slot)
            }
            fn slot(self) -> u64 {
                self.0
            }
        }

        impl From<$name> for AnyCap {
            fn from(c: $name) -> AnyCap {
                AnyCap(c.0)
            }
        }

        $(impl Object for $name {
            const TYPE: ObjectType = ObjectType::$ty;
        })?
    };
}

/// A capability whose type the program does not claim (for [`CNode::delete`], [`CNode::revoke`]
/// or a copy of whatever is in a slot). Every typed handle converts into one.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnyCap(u64);

impl AnyCap {
    /// A handle to whatever capability is in `slot`.
    pub const fn from_slot(slot: u64) -> Self {
        AnyCap(slot)
    }
    /// The slot this handle names.
    pub const fn slot(self) -> u64 {
        self.0
    }
}

impl Capability for AnyCap {
    const KIND: &'static str = "capability";
    fn from_slot(slot: u64) -> Self {
        AnyCap(slot)
    }
    fn slot(self) -> u64 {
        self.0
    }
}

capability!(
    /// An endpoint: synchronous IPC (send, receive, call and reply). Sending needs the write
    /// right, receiving the read right; a badged copy tells the receiver who sent.
    Endpoint, "endpoint", Endpoint
);
capability!(
    /// A notification: a word of signal bits. A signal ORs the capability's badge into it; a
    /// wait returns the word and clears it.
    Notification, "notification", Notification
);
capability!(
    /// Untyped memory: where every kernel object comes from ([`retype`](Untyped::retype)).
    Untyped, "untyped", Untyped
);
capability!(
    /// A CNode: a table of capability slots. Its methods name slots of this CNode.
    CNode, "cnode", CNode
);
capability!(
    /// A thread control block: a thread's registers, spaces, priority and syscall profile.
    Tcb, "tcb", Tcb
);
capability!(
    /// A page frame, 4 KiB (what [`Untyped::retype`] makes) or 2 MiB (make it with
    /// [`Untyped::retype_into`] and `ObjectType::Frame2M`; the methods are the same).
    Frame, "frame", Frame4K
);
capability!(
    /// A page table (maps 2 MiB of 4 KiB frames): mapped into a [`VSpace`] under a page directory.
    PageTable, "page table", PageTable
);
capability!(
    /// A page directory (maps 1 GiB: page tables or 2 MiB frames).
    PageDirectory, "page directory", PageDirectory
);
capability!(
    /// A page-directory-pointer table (maps 512 GiB of page directories).
    Pdpt, "pdpt", Pdpt
);
capability!(
    /// An address space: a PML4, the root of the paging structures. Frames and tables are
    /// mapped *into* it; it is given to threads with [`Tcb::configure`].
    VSpace, "vspace", Pml4
);
capability!(
    /// The authority to make IRQ handler capabilities (the root task's, then Studio's).
    IrqControl, "irq control"
);
capability!(
    /// One interrupt line: routed to a notification, acknowledged after each interrupt.
    IrqHandler, "irq handler"
);
capability!(
    /// The authority to make I/O port capabilities (the root task's, then Studio's).
    IoPortControl, "i/o port control"
);
capability!(
    /// A range of x86 I/O ports.
    IoPort, "i/o port"
);
capability!(
    /// The authority to read any thread's kernel counters (the syscall shaper's).
    Telemetry, "telemetry"
);

impl Endpoint {
    /// Send `msg` and wait for the reply (`sys::call`).
    pub fn call(self, msg: Msg) -> Result<Received> {
        Ok(sys::call(self.0, msg)?)
    }

    /// Send `msg`, waiting for a receiver (`sys::send`).
    pub fn send(self, msg: Msg) -> Result<()> {
        Ok(sys::send(self.0, msg)?)
    }

    /// Send `msg` if a receiver is waiting, else drop it (`sys::nb_send`).
    pub fn nb_send(self, msg: Msg) -> Result<()> {
        Ok(sys::nb_send(self.0, msg)?)
    }

    /// Wait for a message (`sys::recv`).
    pub fn recv(self) -> Result<Received> {
        Ok(sys::recv(self.0)?)
    }

    /// Take a message if one is waiting (`sys::nb_recv`): badge 0 and an empty message if not.
    pub fn nb_recv(self) -> Result<Received> {
        Ok(sys::nb_recv(self.0)?)
    }

    /// Reply to the last Call received, then wait for the next message here (`sys::reply_recv`).
    pub fn reply_recv(self, msg: Msg) -> Result<Received> {
        Ok(sys::reply_recv(self.0, msg)?)
    }

    /// An RPC client of `interface` through this endpoint ([`Client::new`]).
    pub fn client(self, interface: &str) -> Client {
        Client::new(self.0, interface)
    }

    /// An RPC server of `interface` receiving on this endpoint ([`Server::new`]).
    pub fn server(self, interface: &str) -> Server {
        Server::new(self.0, interface)
    }
}

impl From<Client> for Endpoint {
    /// The endpoint an RPC client calls.
    fn from(c: Client) -> Endpoint {
        Endpoint(c.slot())
    }
}

impl Notification {
    /// Signal: OR this capability's badge into the word (a Send).
    pub fn signal(self) -> Result<()> {
        Ok(sys::send(self.0, Msg::default())?)
    }

    /// Wait until the word is non-zero; returns it and clears it (a Recv).
    pub fn wait(self) -> Result<u64> {
        Ok(sys::recv(self.0)?.badge)
    }

    /// The word, cleared, without waiting: 0 if nothing was signalled (an NBRecv).
    pub fn poll(self) -> Result<u64> {
        Ok(sys::nb_recv(self.0)?.badge)
    }
}

impl Untyped {
    /// Size, free bytes, children, physical address (`kernel::untyped_get_info`).
    pub fn get_info(self) -> Result<UntypedInfo> {
        Ok(kernel::untyped_get_info(self.0)?)
    }

    /// Make `count` objects of type `ty` (`size_bits`: the size of untyped objects, the radix of
    /// CNodes, ignored otherwise) into the empty slots `first_slot..first_slot + count` of `dest`.
    pub fn retype_into(self, ty: ObjectType, size_bits: u64, dest: CNode, first_slot: u64, count: u64) -> Result<()> {
        Ok(kernel::untyped_retype(self.0, ty, size_bits, dest.0, 0, 0, first_slot, count)?)
    }

    /// Make one object of type `T` into the empty slot `slot` of `dest` and return its handle:
    /// `untyped.retype::<Endpoint>(0, cnode, 20)?`. `size_bits` as for
    /// [`retype_into`](Self::retype_into).
    pub fn retype<T: Object>(self, size_bits: u64, dest: CNode, slot: u64) -> Result<T> {
        self.retype_into(T::TYPE, size_bits, dest, slot, 1)?;
        Ok(T::from_slot(slot))
    }
}

impl CNode {
    /// Copy `src` (a slot of this CNode) into the empty slot `dest` with `rights` (intersected
    /// with the source's; `ozone_abi::rights`). Returns the copy.
    pub fn copy<T: Capability>(self, src: T, dest: u64, rights: u64) -> Result<T> {
        kernel::cnode_copy(self.0, dest, src.slot(), rights)?;
        Ok(T::from_slot(dest))
    }

    /// As [`copy`](Self::copy), setting `badge` (on an unbadged endpoint or notification).
    pub fn mint<T: Capability>(self, src: T, dest: u64, rights: u64, badge: u64) -> Result<T> {
        kernel::cnode_mint(self.0, dest, src.slot(), rights, badge)?;
        Ok(T::from_slot(dest))
    }

    /// Move `src` into the empty slot `dest` (`src` is empty afterwards). Returns the moved one.
    pub fn move_cap<T: Capability>(self, src: T, dest: u64) -> Result<T> {
        kernel::cnode_move(self.0, dest, src.slot())?;
        Ok(T::from_slot(dest))
    }

    /// As [`move_cap`](Self::move_cap), setting `data` (a badge, or a CNode's guard).
    pub fn mutate<T: Capability>(self, src: T, dest: u64, data: u64) -> Result<T> {
        kernel::cnode_mutate(self.0, dest, src.slot(), data)?;
        Ok(T::from_slot(dest))
    }

    /// Delete the capability (the last one to an object finalises the object).
    pub fn delete(self, cap: impl Into<AnyCap>) -> Result<()> {
        Ok(kernel::cnode_delete(self.0, cap.into().slot())?)
    }

    /// Delete every capability derived from this one (the capability itself stays).
    pub fn revoke(self, cap: impl Into<AnyCap>) -> Result<()> {
        Ok(kernel::cnode_revoke(self.0, cap.into().slot())?)
    }

    /// Abort the sends waiting on the endpoint with `ep`'s badge (`ep` must have all rights).
    pub fn cancel_badged_sends(self, ep: Endpoint) -> Result<()> {
        Ok(kernel::cnode_cancel_badged_sends(self.0, ep.0)?)
    }

    /// Copy `src` (a slot of the CNode `from`, usually the caller's own) into the empty slot
    /// `dest` of *this* CNode (another program's) with `rights` (CNode Copy, as
    /// `process::copy_into`). No handle comes back: `dest` is a slot of this CNode, not of the
    /// caller's CSpace.
    pub fn copy_in(self, dest: u64, from: CNode, src: impl Into<AnyCap>, rights: u64) -> Result<()> {
        kernel::invoke(self.0, inv::CNODE_COPY, &[dest, 64, src.into().slot(), 64, rights], &[from.0])?;
        Ok(())
    }

    /// As [`copy_in`](Self::copy_in), setting `badge` (CNode Mint, as `process::mint_into`).
    pub fn mint_in(self, dest: u64, from: CNode, src: impl Into<AnyCap>, rights: u64, badge: u64) -> Result<()> {
        kernel::invoke(self.0, inv::CNODE_MINT, &[dest, 64, src.into().slot(), 64, rights, badge], &[from.0])?;
        Ok(())
    }

    /// Move `src` (a slot of `from`) into the empty slot `dest` of this CNode (CNode Move, as
    /// `process::move_into`); `src` is empty afterwards.
    pub fn move_in(self, dest: u64, from: CNode, src: impl Into<AnyCap>) -> Result<()> {
        kernel::invoke(self.0, inv::CNODE_MOVE, &[dest, 64, src.into().slot(), 64], &[from.0])?;
        Ok(())
    }
}

/// A thread's syscall profile (see docs/abi.md, "Syscall profiles").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Every operation class the thread's syscalls have reached.
    pub used: u64,
    /// The classes it may use (`ozone_abi::profile`).
    pub allowed: u64,
}

impl Tcb {
    /// Give the thread its CSpace, VSpace and IPC buffer (`buffer` mapped at `buffer_vaddr`), and
    /// its fault endpoint — copied from the caller's CSpace into the thread's TCB, so the thread
    /// need not hold it (`None`: no fault handler).
    pub fn configure(
        self,
        fault_ep: Option<Endpoint>,
        cspace: CNode,
        vspace: VSpace,
        buffer_vaddr: u64,
        buffer: Frame,
    ) -> Result<()> {
        let fault = fault_ep.map_or(0, Endpoint::slot);
        Ok(kernel::tcb_configure(self.0, fault, cspace.0, vspace.0, buffer_vaddr, buffer.0)?)
    }

    /// Set (`Some`) or remove (`None`) the thread's fault handler: a copy of `fault_ep`, from the
    /// caller's CSpace, kept in the TCB (`kernel::tcb_set_fault_handler`).
    pub fn set_fault_handler(self, fault_ep: Option<Endpoint>) -> Result<()> {
        Ok(kernel::tcb_set_fault_handler(self.0, fault_ep.map_or(0, Endpoint::slot))?)
    }

    /// Set the priority; at most `authority`'s maximum controlled priority.
    pub fn set_priority(self, authority: Tcb, priority: u64) -> Result<()> {
        Ok(kernel::tcb_set_priority(self.0, authority.0, priority)?)
    }

    /// Set the maximum controlled priority; at most `authority`'s.
    pub fn set_mc_priority(self, authority: Tcb, mcp: u64) -> Result<()> {
        Ok(kernel::tcb_set_mc_priority(self.0, authority.0, mcp)?)
    }

    /// Let the thread use the kernel's debug channel (`DebugWrite`), or take it away; the
    /// I/O-port control capability is the authority (`kernel::tcb_set_debug_output`).
    pub fn set_debug_output(self, authority: IoPortControl, on: bool) -> Result<()> {
        Ok(kernel::tcb_set_debug_output(self.0, authority.0, on)?)
    }

    /// Make the thread runnable.
    pub fn resume(self) -> Result<()> {
        Ok(kernel::tcb_resume(self.0)?)
    }

    /// Stop the thread (cancelling any IPC it is blocked in).
    pub fn suspend(self) -> Result<()> {
        Ok(kernel::tcb_suspend(self.0)?)
    }

    /// Set the thread's FS base (the SDK's threads keep their IPC buffer's address there).
    pub fn set_tls_base(self, base: u64) -> Result<()> {
        Ok(kernel::tcb_set_tls_base(self.0, base)?)
    }

    /// Its registers (not the caller's own thread), suspending it first if `suspend`.
    pub fn read_registers(self, suspend: bool) -> Result<UserRegisters> {
        Ok(kernel::tcb_read_registers(self.0, suspend)?)
    }

    /// Set its registers (not the caller's own thread), resuming it afterwards if `resume`.
    pub fn write_registers(self, resume: bool, regs: &UserRegisters) -> Result<()> {
        Ok(kernel::tcb_write_registers(self.0, resume, regs)?)
    }

    /// Bind `ntfn` to the thread: its receives on endpoints also wake for signals there.
    pub fn bind_notification(self, ntfn: Notification) -> Result<()> {
        Ok(kernel::tcb_bind_notification(self.0, ntfn.0)?)
    }

    /// Undo [`bind_notification`](Self::bind_notification).
    pub fn unbind_notification(self) -> Result<()> {
        Ok(kernel::tcb_unbind_notification(self.0)?)
    }

    /// Set the `allowed` mask of the thread's syscall profile.
    pub fn set_profile(self, allowed: u64) -> Result<()> {
        Ok(kernel::tcb_set_profile(self.0, allowed)?)
    }

    /// The thread's syscall profile.
    pub fn get_profile(self) -> Result<Profile> {
        let (used, allowed) = kernel::tcb_get_profile(self.0)?;
        Ok(Profile { used, allowed })
    }

    /// Arm a learning window: the thread may use `allowed` for `learn` more syscalls, then the
    /// kernel narrows `allowed` to what it used (`kernel::tcb_arm_profile`).
    pub fn arm_profile(self, allowed: u64, learn: u64) -> Result<()> {
        Ok(kernel::tcb_arm_profile(self.0, allowed, learn)?)
    }

    /// The syscalls the thread may still make while learning; `None` if no learning window is
    /// armed (`kernel::tcb_profile_window`).
    pub fn profile_window(self) -> Result<Option<u64>> {
        Ok(kernel::tcb_profile_window(self.0)?)
    }
}

impl Frame {
    /// Map the frame at `vaddr` in `vspace` with `rights` (`ozone_abi::rights`; read is needed)
    /// and, if `executable`, without no-execute. The page table (or, for 2 MiB frames, page
    /// directory) there must be mapped already.
    pub fn map(self, vspace: VSpace, vaddr: u64, rights: u64, executable: bool) -> Result<()> {
        Ok(kernel::frame_map(self.0, vspace.0, vaddr, rights, executable)?)
    }

    /// Unmap the frame.
    pub fn unmap(self) -> Result<()> {
        Ok(kernel::frame_unmap(self.0)?)
    }

    /// The frame's physical address.
    pub fn address(self) -> Result<u64> {
        Ok(kernel::frame_get_address(self.0)?)
    }
}

macro_rules! paging_structure {
    ($name:ident) => {
        impl $name {
            /// Map it into `vspace` at the place covering `vaddr` (the level above must be mapped).
            pub fn map(self, vspace: VSpace, vaddr: u64) -> Result<()> {
                Ok(kernel::paging_map(self.0, vspace.0, vaddr)?)
            }

            /// Unmap it.
            pub fn unmap(self) -> Result<()> {
                Ok(kernel::paging_unmap(self.0)?)
            }
        }
    };
}

paging_structure!(PageTable);
paging_structure!(PageDirectory);
paging_structure!(Pdpt);

impl IrqControl {
    /// Make the handler capability of line `irq` (a GSI below 64 that the machine's I/O APICs
    /// have; PCI INTx lines are 16 and up) in the empty slot `slot` of `dest`.
    pub fn get(self, irq: u64, dest: CNode, slot: u64) -> Result<IrqHandler> {
        kernel::invoke(self.0, inv::IRQ_CONTROL_GET, &[irq, slot, 64], &[dest.0])?;
        Ok(IrqHandler(slot))
    }

    /// Make the handler capability of a message-signalled line the kernel chooses, in the
    /// empty slot `slot` of `dest`. Returns it with the line and the address/data pair to
    /// program into the device's MSI capability or MSI-X table entry.
    pub fn get_msi(self, dest: CNode, slot: u64) -> Result<(IrqHandler, Msi)> {
        let r = kernel::invoke(self.0, inv::IRQ_CONTROL_GET_MSI, &[slot, 64], &[dest.0])?;
        let [line, address, data, _] = r.msg.mrs;
        Ok((IrqHandler(slot), Msi { line, address, data }))
    }
}

/// What a device writes to raise an MSI line ([`IrqControl::get_msi`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    /// The kernel's line number (its bit in an unbadged notification is `line % 64`).
    pub line: u64,
    pub address: u64,
    pub data: u64,
}

impl IrqHandler {
    /// Unmask the line again after an interrupt.
    pub fn ack(self) -> Result<()> {
        kernel::invoke(self.0, inv::IRQ_HANDLER_ACK, &[], &[])?;
        Ok(())
    }

    /// Deliver the line's interrupts to `ntfn` (bit `irq` is signalled).
    pub fn set_notification(self, ntfn: Notification) -> Result<()> {
        kernel::invoke(self.0, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn.0])?;
        Ok(())
    }

    /// Stop delivering the line's interrupts.
    pub fn clear(self) -> Result<()> {
        kernel::invoke(self.0, inv::IRQ_HANDLER_CLEAR, &[], &[])?;
        Ok(())
    }
}

impl IoPortControl {
    /// Make an I/O port capability for the ports `first..=last` in the empty slot `slot` of `dest`.
    pub fn issue(self, first: u16, last: u16, dest: CNode, slot: u64) -> Result<IoPort> {
        kernel::invoke(self.0, inv::IO_PORT_CONTROL_ISSUE, &[first.into(), last.into(), slot, 64], &[dest.0])?;
        Ok(IoPort(slot))
    }
}

impl IoPort {
    fn read(self, label: u64, port: u16) -> Result<u64> {
        Ok(kernel::invoke(self.0, label, &[port.into()], &[])?.msg.mrs[0])
    }

    fn write(self, label: u64, port: u16, value: u64) -> Result<()> {
        kernel::invoke(self.0, label, &[port.into(), value], &[])?;
        Ok(())
    }

    /// Read a byte from `port` (inside the capability's range).
    pub fn in8(self, port: u16) -> Result<u8> {
        self.read(inv::IO_PORT_IN8, port).map(|v| v as u8)
    }
    /// Read 16 bits from `port`.
    pub fn in16(self, port: u16) -> Result<u16> {
        self.read(inv::IO_PORT_IN16, port).map(|v| v as u16)
    }
    /// Read 32 bits from `port`.
    pub fn in32(self, port: u16) -> Result<u32> {
        self.read(inv::IO_PORT_IN32, port).map(|v| v as u32)
    }
    /// Write a byte to `port`.
    pub fn out8(self, port: u16, value: u8) -> Result<()> {
        self.write(inv::IO_PORT_OUT8, port, value.into())
    }
    /// Write 16 bits to `port`.
    pub fn out16(self, port: u16, value: u16) -> Result<()> {
        self.write(inv::IO_PORT_OUT16, port, value.into())
    }
    /// Write 32 bits to `port`.
    pub fn out32(self, port: u16, value: u32) -> Result<()> {
        self.write(inv::IO_PORT_OUT32, port, value.into())
    }
}

pub use ozone_abi::telemetry::ThreadCounters;

/// What [`Telemetry::read`] tells of one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTelemetry {
    /// Its kernel counters.
    pub counters: ThreadCounters,
    /// Its syscall profile's `used` mask (`ozone_abi::profile` bits).
    pub profile_used: u64,
}

impl Telemetry {
    /// The counters and the profile's `used` mask of the thread `tcb`.
    pub fn read(self, tcb: Tcb) -> Result<ThreadTelemetry> {
        let (counters, profile_used) = kernel::telemetry_read(self.0, tcb.0)?;
        Ok(ThreadTelemetry { counters, profile_used })
    }

    /// Start the event trace of the thread `tcb` into `ring` (a writable 4 KiB frame that has no
    /// other capability; see `ozone_abi::trace`).
    pub fn trace(self, tcb: Tcb, ring: Frame) -> Result<()> {
        Ok(kernel::telemetry_trace(self.0, tcb.0, ring.0)?)
    }

    /// Stop the event trace of `tcb`: (records written, records dropped).
    pub fn trace_off(self, tcb: Tcb) -> Result<(u64, u64)> {
        Ok(kernel::telemetry_trace_off(self.0, tcb.0)?)
    }

    /// The records of `tcb`'s trace before sequence number `upto` are read: (records written,
    /// records dropped) so far.
    pub fn trace_ack(self, tcb: Tcb, upto: u64) -> Result<(u64, u64)> {
        Ok(kernel::telemetry_trace_ack(self.0, tcb.0, upto)?)
    }
}

/// The kernel's error behind a failed handle method, for code that reports kernel errors as such
/// (the servers' kernel seams). Handle methods fail only with `AgentError::Kernel`; any other
/// error (a server's, which they never return) is reported as `InvalidArgument`, not dropped.
pub fn kernel_error(e: AgentError) -> Error {
    match e {
        AgentError::Kernel(e) => e,
        // The kernel said the capability is gone.
        AgentError::ServerGone => Error::InvalidCapability,
        AgentError::Service(_)
        | AgentError::BadReply
        | AgentError::NotStarted
        | AgentError::NotProvided
        | AgentError::TimedOut => Error::InvalidArgument,
    }
}

/// The fixed slots of the root task (`ozone_abi::bootinfo::slot`, what the kernel gives it) and of
/// Studio, whose CNode the root task lays out the same way. In programs Studio starts these
/// slots hold other things (the functions below).
pub mod boot {
    use super::{CNode, Frame, IoPortControl, IrqControl, Tcb, Telemetry, VSpace};
    use ozone_abi::bootinfo::slot;

    /// The program's own thread.
    pub const TCB: Tcb = Tcb::from_slot(slot::TCB);
    /// The program's own CNode (single level).
    pub const CNODE: CNode = CNode::from_slot(slot::CNODE);
    /// The program's own address space.
    pub const VSPACE: VSpace = VSpace::from_slot(slot::VSPACE);
    /// The authority to make IRQ handler capabilities.
    pub const IRQ_CONTROL: IrqControl = IrqControl::from_slot(slot::IRQ_CONTROL);
    /// The authority to make I/O port capabilities (and to give the kernel's debug channel).
    pub const IO_PORT_CONTROL: IoPortControl = IoPortControl::from_slot(slot::IO_PORT_CONTROL);
    /// The frame of the program's IPC buffer.
    pub const IPC_BUFFER: Frame = Frame::from_slot(slot::IPC_BUFFER);
    /// The authority to read any thread's kernel counters.
    pub const TELEMETRY: Telemetry = Telemetry::from_slot(slot::TELEMETRY);
}

// The fixed slots of a program Studio started (`protocol::start::slot`). In other programs (the
// root task, Studio) these slots hold other things (see the bootinfo slots in docs/abi.md).

/// Studio's endpoint (badged with this program's id): the name service, memory, administration.
pub fn studio() -> Endpoint {
    Endpoint(slot::STUDIO)
}

/// Servers: the endpoint of the first interface they provide (clients hold badged copies).
pub fn service() -> Endpoint {
    Endpoint(slot::SERVICE)
}

/// Servers: the endpoint of the `k`-th interface they provide (0 is [`service`]); `None` past
/// the most a program can provide.
pub fn service_at(k: u64) -> Option<Endpoint> {
    ((k as usize) < slot::MAX_SERVICES).then(|| Endpoint(slot::service(k)))
}

/// Every program but the console server: the console's endpoint (badged with this program's
/// id), where its log lines go (`crate::log`; the console prints the id as the program's name).
pub fn log() -> Endpoint {
    Endpoint(slot::LOG)
}

/// The notification bound to this program's thread; `None` if Studio did not start the program.
///
/// Studio makes one for every program it starts (interrupts, events, the timer server's
/// wake-ups: `crate::timer`); a wait on it that takes bits it is not waiting for keeps them in
/// `crate::signals`.
pub fn notification() -> Option<Notification> {
    start::info().map(|_| Notification(slot::NOTIFICATION))
}

/// The `serial` device's I/O ports (COM1, 0x3f8..=0x3ff): only for programs with that device.
pub fn serial_ports() -> IoPort {
    IoPort(slot::SERIAL_PORTS)
}

/// The `serial` device's interrupt (IRQ 4, signalling [`notification`]): only for programs with
/// that device.
pub fn serial_irq() -> IrqHandler {
    IrqHandler(slot::SERIAL_IRQ)
}

/// Does this program have a pool of its own (`vspaces` privilege)? The start information says.
fn has_pool() -> bool {
    start::info().is_some_and(|i| i.pool_size > 0)
}

/// Programs with a pool: the untyped memory to make objects from (`StartInfo::pool_size` bytes).
pub fn pool() -> Option<Untyped> {
    has_pool().then_some(Untyped(slot::POOL))
}

/// Programs with a pool: their own CNode (to retype into and to manage their slots).
pub fn own_cnode() -> Option<CNode> {
    has_pool().then_some(CNode(slot::OWN_CNODE))
}

/// Programs with a pool: their own address space (to map what they make).
pub fn own_vspace() -> Option<VSpace> {
    has_pool().then_some(VSpace(slot::OWN_VSPACE))
}

/// Ask Studio for `interface` by name ([`Client::lookup`]) and return the endpoint it put in this
/// program's CNode. `Service(Denied)` if the program may not use it.
pub fn lookup(interface: &str) -> Result<Endpoint> {
    Client::lookup(interface).map(Endpoint::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    /// On the host every syscall is unknown: each method must report that as a kernel error.
    const HOST: Result<()> = Err(AgentError::Kernel(Error::UnknownSyscall));

    #[test]
    fn handles_are_slot_numbers() {
        assert_eq!(size_of::<Endpoint>(), size_of::<u64>());
        assert_eq!(size_of::<VSpace>(), size_of::<u64>());
        assert_eq!(Endpoint::from_slot(17).slot(), 17);
        assert_eq!(<Frame as Capability>::from_slot(40).slot(), 40);
        assert_eq!(AnyCap::from(Tcb::from_slot(9)), AnyCap::from_slot(9));
        const EP: Endpoint = Endpoint::from_slot(3);
        assert_eq!(EP.slot(), 3);
    }

    #[test]
    fn retypeable_types_name_their_object() {
        assert_eq!(Endpoint::TYPE, ObjectType::Endpoint);
        assert_eq!(Notification::TYPE, ObjectType::Notification);
        assert_eq!(Untyped::TYPE, ObjectType::Untyped);
        assert_eq!(CNode::TYPE, ObjectType::CNode);
        assert_eq!(Tcb::TYPE, ObjectType::Tcb);
        assert_eq!(Frame::TYPE, ObjectType::Frame4K);
        assert_eq!(PageTable::TYPE, ObjectType::PageTable);
        assert_eq!(PageDirectory::TYPE, ObjectType::PageDirectory);
        assert_eq!(Pdpt::TYPE, ObjectType::Pdpt);
        assert_eq!(VSpace::TYPE, ObjectType::Pml4);
        let kinds = [Endpoint::KIND, Frame::KIND, VSpace::KIND, IoPort::KIND, AnyCap::KIND];
        assert!(kinds.iter().all(|k| !k.is_empty()));
    }

    #[test]
    fn fixed_slots() {
        assert_eq!(studio().slot(), slot::STUDIO);
        assert_eq!(service().slot(), slot::SERVICE);
        assert_eq!(service_at(0), Some(service()));
        assert_eq!(service_at(1).map(Endpoint::slot), Some(10));
        assert_eq!(service_at(5).map(Endpoint::slot), Some(14));
        assert_eq!(service_at(6), None);
        assert_eq!(service_at(u64::MAX), None);
        assert_eq!(log().slot(), slot::LOG);
        assert_eq!(serial_ports().slot(), slot::SERIAL_PORTS);
        assert_eq!(serial_irq().slot(), slot::SERIAL_IRQ);
        // The host test has no start information: nothing Studio gives is claimed.
        assert_eq!(notification(), None);
        assert_eq!((pool(), own_cnode(), own_vspace()), (None, None, None));
    }

    #[test]
    fn boot_slots_and_kernel_errors() {
        use ozone_abi::bootinfo::slot as b;
        assert_eq!(boot::TCB.slot(), b::TCB);
        assert_eq!(boot::CNODE.slot(), b::CNODE);
        assert_eq!(boot::VSPACE.slot(), b::VSPACE);
        assert_eq!(boot::IRQ_CONTROL.slot(), b::IRQ_CONTROL);
        assert_eq!(boot::IO_PORT_CONTROL.slot(), b::IO_PORT_CONTROL);
        assert_eq!(boot::IPC_BUFFER.slot(), b::IPC_BUFFER);
        assert_eq!(boot::TELEMETRY.slot(), b::TELEMETRY);
        assert_eq!(kernel_error(AgentError::Kernel(Error::DeleteFirst)), Error::DeleteFirst);
        assert_eq!(kernel_error(AgentError::BadReply), Error::InvalidArgument);
        let t = Tcb::from_slot(30);
        assert_eq!(t.arm_profile(0xff, 10), HOST);
        assert_eq!(t.profile_window().map(|_| ()), HOST);
    }

    #[test]
    fn kernel_errors_come_back_as_agent_errors() {
        // Only methods that travel in registers: the host has no IPC buffer.
        let ep = Endpoint::from_slot(20);
        assert_eq!(ep.call(Msg::new(1, &[2])).map(|_| ()), HOST);
        assert_eq!(ep.send(Msg::default()), HOST);
        assert_eq!(ep.nb_send(Msg::default()), HOST);
        assert_eq!(ep.recv().map(|_| ()), HOST);
        assert_eq!(ep.nb_recv().map(|_| ()), HOST);
        let n = Notification::from_slot(3);
        assert_eq!(n.signal(), HOST);
        assert_eq!(n.wait().map(|_| ()), HOST);
        assert_eq!(n.poll().map(|_| ()), HOST);
        assert_eq!(Untyped::from_slot(6).get_info().map(|_| ()), HOST);
        let t = Tcb::from_slot(30);
        assert_eq!(t.resume(), HOST);
        assert_eq!(t.suspend(), HOST);
        assert_eq!(t.set_profile(0xff), HOST);
        assert_eq!(t.get_profile().map(|_| ()), HOST);
        let f = Frame::from_slot(31);
        assert_eq!(f.address().map(|_| ()), HOST);
        assert_eq!(f.unmap(), HOST);
        assert_eq!(PageTable::from_slot(32).unmap(), HOST);
        assert_eq!(serial_irq().ack(), HOST);
        assert_eq!(serial_ports().in8(0x3fd).map(|_| ()), HOST);
        assert_eq!(serial_ports().out8(0x3f8, b'x'), HOST);
        assert_eq!(Endpoint::from(ep.client("echo")), ep);
        // Studio's name service is a Call on Studio's endpoint, in registers too.
        assert_eq!(lookup("echo"), Err(AgentError::Kernel(Error::UnknownSyscall)));
    }
}
