//! The kernel operations Studio makes, behind a trait: [`Sel4`] does them with real invocations
//! (through the typed handles of `ozone_agent_sdk::caps` and `ozone_agent_sdk::process`), and the host tests use a
//! model of the kernel instead (`fake.rs`), so that the lifecycle (start, stop, reclaim, restart)
//! and the service run under `cargo test -p ozone-studio`.
//!
//! Slots are Studio's own CNode's (single level, index = capability pointer) unless a parameter
//! is called `cnode`: that is a Studio slot holding a program's CNode, and the slot next to it
//! is an index of that program's CNode.

use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_agent_sdk::caps::{self, AnyCap, CNode, Endpoint, Notification, Tcb, Untyped, boot};
use ozone_agent_sdk::process::{self, Alloc, Layout, Process, SpawnError};
use ozone_agent_sdk::protocol::studio::Telemetry;
use ozone_agent_sdk::sys::Msg;

/// What Studio needs from the kernel (and, for [`Kernel::power_off`], from the root task).
pub trait Kernel {
    /// Retype one object of type `ty` (`size_bits` for the sized ones) from the untyped in
    /// `untyped` into the empty slot `dest`.
    fn retype(&self, untyped: u64, ty: ObjectType, size_bits: u64, dest: u64) -> Result<(), Error>;
    /// Retype one object from the untyped in Studio's `untyped` into the empty slot `dest` of
    /// the program CNode `cnode` (funding the secure memory server: see `funding`).
    fn retype_into(&self, untyped: u64, ty: ObjectType, size_bits: u64, cnode: u64, dest: u64) -> Result<(), Error>;
    /// Bytes the untyped in `untyped` can still give, and whether it has children.
    fn untyped_free(&self, untyped: u64) -> Result<(u64, bool), Error>;
    /// Delete every capability derived from the one in `slot` (objects made from an untyped go).
    fn revoke(&self, slot: u64) -> Result<(), Error>;
    /// Delete the capability in slot `at` of the program CNode `cnode` and every capability
    /// derived from it (copies the program made of it go too).
    fn delete_in(&self, cnode: u64, at: u64) -> Result<(), Error>;
    /// Copy the capability in Studio's `src` to slot `dest` of `cnode`, with `rights`.
    fn copy_into(&self, cnode: u64, dest: u64, src: u64, rights: u64) -> Result<(), Error>;
    /// Mint the capability in Studio's `src` with `rights` and `badge` into slot `dest` of `cnode`.
    fn mint_into(&self, cnode: u64, dest: u64, src: u64, rights: u64, badge: u64) -> Result<(), Error>;
    /// Mint the capability in Studio's `src` with `rights` and `badge` into Studio's own empty
    /// slot `dest`.
    fn mint_own(&self, dest: u64, src: u64, rights: u64, badge: u64) -> Result<(), Error>;
    /// Delete the capability in Studio's own slot `at`.
    fn delete_own(&self, at: u64) -> Result<(), Error>;
    /// Cancel every send waiting on the endpoint in Studio's slot `ep` with that capability's
    /// badge (CNode CancelBadgedSends): each sender runs its syscall again.
    fn cancel_badged_sends(&self, ep: u64) -> Result<(), Error>;
    /// Move the capability in Studio's `src` to slot `dest` of `cnode`.
    fn move_into(&self, cnode: u64, dest: u64, src: u64) -> Result<(), Error>;
    /// Whether slot `at` of `cnode` holds a capability.
    fn holds_cap(&self, cnode: u64, at: u64) -> bool;
    /// Make a program (see `ozone_agent_sdk::process::build`): its objects come from `child`,
    /// Studio's scratch objects from `own`; the thread is left stopped.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        child: &dyn Alloc,
        own: &dyn Alloc,
        image: &[u8],
        layout: Layout,
        cnode_radix: u64,
        priority: u64,
        fault_ep: u64,
        info: &[u8],
    ) -> Result<Process, SpawnError>;
    /// Set the thread's maximum controlled priority (with Studio's own thread as the authority).
    fn set_mc_priority(&self, tcb: u64, mcp: u64) -> Result<(), Error>;
    /// Set the thread's priority (with Studio's own thread as the authority).
    fn set_priority(&self, tcb: u64, priority: u64) -> Result<(), Error>;
    /// Stop the thread (it keeps its state and memory) / let it run again.
    fn suspend(&self, tcb: u64) -> Result<(), Error>;
    fn resume(&self, tcb: u64) -> Result<(), Error>;
    /// Bind the notification in `ntfn` to the thread in `tcb`.
    fn bind_notification(&self, tcb: u64, ntfn: u64) -> Result<(), Error>;
    /// Signal the notification in Studio's slot `ntfn` (never blocks).
    fn signal(&self, ntfn: u64) -> Result<(), Error>;
    /// Issue an I/O-port capability for `first..=last` into slot `dest` of `cnode`.
    fn issue_io_ports(&self, first: u64, last: u64, cnode: u64, dest: u64) -> Result<(), Error>;
    /// Make the handler of interrupt `irq` in Studio's empty slot `dest`, signalling `ntfn`.
    fn irq_handler(&self, irq: u64, dest: u64, ntfn: Option<u64>) -> Result<(), Error>;
    /// Start a program made by [`Kernel::build`].
    fn start(&self, p: &Process) -> Result<(), Error>;
    /// Map the frame in `frame` read-write, not executable, at `va` of `vspace`, making the
    /// missing paging structures from `mem`.
    fn map_frame(&self, mem: &dyn Alloc, frame: u64, vspace: u64, va: u64) -> Result<(), Error>;
    /// The kernel's counters of the thread in `tcb`.
    fn telemetry(&self, tcb: u64) -> Result<Telemetry, Error>;
    /// The syscall profile of the thread in `tcb`: (used, allowed, learning window: syscalls
    /// still learned, `None` if none is armed).
    fn profile(&self, tcb: u64) -> Result<(u64, u64, Option<u64>), Error>;
    /// Set the `allowed` mask of the thread in `tcb` (ends a learning window).
    fn set_profile(&self, tcb: u64, allowed: u64) -> Result<(), Error>;
    /// Arm a learning window of the thread in `tcb`: `allowed` for `learn` more syscalls.
    fn arm_profile(&self, tcb: u64, allowed: u64, learn: u64) -> Result<(), Error>;
    /// Ask the root task to end the system with `status`.
    fn power_off(&self, status: u64);
    /// Let the thread `tcb` use the kernel's debug channel (with the I/O-port control
    /// capability as the authority).
    fn set_debug_output(&self, tcb: u64, on: bool) -> Result<(), Error>;
    /// Map the frame in `ring` read-only at `va` of Studio's own address space, making the
    /// missing paging structures from `mem`.
    fn map_ring(&self, mem: &dyn Alloc, ring: u64, va: u64) -> Result<(), Error>;
    /// Start the event trace of the thread in `tcb` into the frame in `ring` (its only
    /// capability; `ozone_abi::trace`).
    fn trace(&self, tcb: u64, ring: u64) -> Result<(), Error>;
    /// The records of `tcb`'s trace before sequence number `upto` are read: (records written,
    /// records dropped).
    fn trace_ack(&self, tcb: u64, upto: u64) -> Result<(u64, u64), Error>;
    /// The two words of record `seq` of the ring mapped at `va` (by [`Kernel::map_ring`]).
    fn ring_record(&self, va: u64, seq: u64) -> [u64; 2];
}

/// Studio's endpoint to the root task and the messages it sends there
/// (`ozone_agent_sdk::protocol::root`).
pub use ozone_agent_sdk::protocol::root::{HELLO as ROOT_HELLO, SHUTDOWN as ROOT_SHUTDOWN, STUDIO_ROOT_EP as ROOT_EP};

/// The real kernel. The trait's slots are numbers (the model in `fake.rs` needs no more, and
/// the lifecycle and the service keep them in their records); here each becomes the typed handle
/// of what Studio keeps in it ([`caps`]: Studio's own fixed slots are [`boot`]'s, as the root
/// task laid out its CNode), and the operation that handle's method.
pub struct Sel4;

/// Studio's own CNode.
const OWN: CNode = boot::CNODE;

/// The kernel's error of a handle method.
fn kernel<T>(r: ozone_agent_sdk::Result<T>) -> Result<T, Error> {
    r.map_err(caps::kernel_error)
}

impl Kernel for Sel4 {
    fn retype(&self, untyped: u64, ty: ObjectType, size_bits: u64, dest: u64) -> Result<(), Error> {
        kernel(Untyped::from_slot(untyped).retype_into(ty, size_bits, OWN, dest, 1))
    }

    fn retype_into(&self, untyped: u64, ty: ObjectType, size_bits: u64, cnode: u64, dest: u64) -> Result<(), Error> {
        kernel(Untyped::from_slot(untyped).retype_into(ty, size_bits, CNode::from_slot(cnode), dest, 1))
    }

    fn untyped_free(&self, untyped: u64) -> Result<(u64, bool), Error> {
        kernel(Untyped::from_slot(untyped).get_info()).map(|i| (i.free, i.has_children))
    }

    fn revoke(&self, s: u64) -> Result<(), Error> {
        kernel(OWN.revoke(AnyCap::from_slot(s)))
    }

    fn delete_in(&self, cnode: u64, at: u64) -> Result<(), Error> {
        let (cnode, cap) = (CNode::from_slot(cnode), AnyCap::from_slot(at));
        kernel(cnode.revoke(cap))?;
        kernel(cnode.delete(cap))
    }

    fn copy_into(&self, cnode: u64, dest: u64, src: u64, r: u64) -> Result<(), Error> {
        kernel(CNode::from_slot(cnode).copy_in(dest, OWN, AnyCap::from_slot(src), r))
    }

    fn mint_own(&self, dest: u64, src: u64, r: u64, badge: u64) -> Result<(), Error> {
        kernel(OWN.mint(AnyCap::from_slot(src), dest, r, badge)).map(drop)
    }

    fn cancel_badged_sends(&self, ep: u64) -> Result<(), Error> {
        kernel(OWN.cancel_badged_sends(Endpoint::from_slot(ep)))
    }

    fn delete_own(&self, at: u64) -> Result<(), Error> {
        kernel(OWN.delete(AnyCap::from_slot(at)))
    }

    fn mint_into(&self, cnode: u64, dest: u64, src: u64, r: u64, badge: u64) -> Result<(), Error> {
        kernel(CNode::from_slot(cnode).mint_in(dest, OWN, AnyCap::from_slot(src), r, badge))
    }

    fn move_into(&self, cnode: u64, dest: u64, src: u64) -> Result<(), Error> {
        kernel(CNode::from_slot(cnode).move_in(dest, OWN, AnyCap::from_slot(src)))
    }

    fn holds_cap(&self, cnode: u64, at: u64) -> bool {
        // Moving a slot onto itself: FailedLookup if empty, DeleteFirst if it holds a capability.
        let cnode = CNode::from_slot(cnode);
        matches!(kernel(cnode.move_in(at, cnode, AnyCap::from_slot(at))), Err(Error::DeleteFirst))
    }

    fn build(
        &self,
        child: &dyn Alloc,
        own: &dyn Alloc,
        image: &[u8],
        layout: Layout,
        cnode_radix: u64,
        priority: u64,
        fault_ep: u64,
        info: &[u8],
    ) -> Result<Process, SpawnError> {
        let (vspace, tcb) = (boot::VSPACE.slot(), boot::TCB.slot());
        process::build(child, own, vspace, tcb, image, layout, cnode_radix, priority, fault_ep, info)
    }

    fn set_mc_priority(&self, tcb: u64, mcp: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).set_mc_priority(boot::TCB, mcp))
    }

    fn set_priority(&self, tcb: u64, priority: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).set_priority(boot::TCB, priority))
    }

    fn suspend(&self, tcb: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).suspend())
    }

    fn resume(&self, tcb: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).resume())
    }

    fn bind_notification(&self, tcb: u64, ntfn: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).bind_notification(Notification::from_slot(ntfn)))
    }

    fn signal(&self, ntfn: u64) -> Result<(), Error> {
        // A Send on a notification never blocks.
        kernel(Notification::from_slot(ntfn).signal())
    }

    fn issue_io_ports(&self, first: u64, last: u64, cnode: u64, dest: u64) -> Result<(), Error> {
        let port = |p: u64| u16::try_from(p).map_err(|_| Error::InvalidArgument);
        kernel(boot::IO_PORT_CONTROL.issue(port(first)?, port(last)?, CNode::from_slot(cnode), dest)).map(drop)
    }

    fn irq_handler(&self, irq: u64, dest: u64, ntfn: Option<u64>) -> Result<(), Error> {
        let handler = kernel(boot::IRQ_CONTROL.get(irq, OWN, dest))?;
        match ntfn {
            Some(n) => kernel(handler.set_notification(Notification::from_slot(n))),
            None => Ok(()),
        }
    }

    fn start(&self, p: &Process) -> Result<(), Error> {
        process::start(p)
    }

    fn map_frame(&self, mem: &dyn Alloc, frame: u64, vspace: u64, va: u64) -> Result<(), Error> {
        process::map_frame_with_tables(mem, frame, vspace, va, rights::READ | rights::WRITE, false)
    }

    fn telemetry(&self, tcb: u64) -> Result<Telemetry, Error> {
        Ok(kernel(boot::TELEMETRY.read(Tcb::from_slot(tcb)))?.counters)
    }

    fn profile(&self, tcb: u64) -> Result<(u64, u64, Option<u64>), Error> {
        let tcb = Tcb::from_slot(tcb);
        let p = kernel(tcb.get_profile())?;
        Ok((p.used, p.allowed, kernel(tcb.profile_window())?))
    }

    fn set_profile(&self, tcb: u64, allowed: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).set_profile(allowed))
    }

    fn arm_profile(&self, tcb: u64, allowed: u64, learn: u64) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).arm_profile(allowed, learn))
    }

    fn power_off(&self, status: u64) {
        let _ = Endpoint::from_slot(ROOT_EP).call(Msg::new(ROOT_SHUTDOWN, &[status]));
    }

    fn set_debug_output(&self, tcb: u64, on: bool) -> Result<(), Error> {
        kernel(Tcb::from_slot(tcb).set_debug_output(boot::IO_PORT_CONTROL, on))
    }

    fn map_ring(&self, mem: &dyn Alloc, ring: u64, va: u64) -> Result<(), Error> {
        process::map_frame_with_tables(mem, ring, ozone_abi::bootinfo::slot::VSPACE, va, rights::READ, false)
    }

    fn trace(&self, tcb: u64, ring: u64) -> Result<(), Error> {
        kernel(boot::TELEMETRY.trace(Tcb::from_slot(tcb), caps::Frame::from_slot(ring)))
    }

    fn trace_ack(&self, tcb: u64, upto: u64) -> Result<(u64, u64), Error> {
        kernel(boot::TELEMETRY.trace_ack(Tcb::from_slot(tcb), upto))
    }

    fn ring_record(&self, va: u64, seq: u64) -> [u64; 2] {
        let at = va + (seq % ozone_abi::trace::RING_RECORDS as u64) * ozone_abi::trace::RECORD_BYTES as u64;
        // SAFETY: `va` is a ring Studio mapped read-only with `map_ring` and keeps mapped while it
        // reads it (the watch of a program goes before its memory: `watch.rs`); the kernel writes
        // records, plain words, only while the traced thread runs, never while Studio does.
        unsafe { core::ptr::read_volatile(at as *const [u64; 2]) }
    }
}
