//! The kernel operations Studio makes, behind a trait: [`Sel4`] does them with real invocations
//! (through `ozone_agent_sdk::kernel` and `ozone_agent_sdk::process`), and the host tests use a
//! model of the kernel instead (`fake.rs`), so that the lifecycle (start, stop, reclaim, restart)
//! and the service run under `cargo test -p ozone-studio`.
//!
//! Slots are Studio's own CNode's (single level, index = capability pointer) unless a parameter
//! is called `cnode`: that is a Studio slot holding a program's CNode, and the slot next to it
//! is an index of that program's CNode.

use ozone_abi::bootinfo::slot;
use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::process::{self, Alloc, Layout, Process, SpawnError};
use ozone_agent_sdk::protocol::studio::Telemetry;

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
    /// Bind the notification in `ntfn` to the thread in `tcb`.
    fn bind_notification(&self, tcb: u64, ntfn: u64) -> Result<(), Error>;
    /// Signal the notification in Studio's slot `ntfn` (never blocks).
    fn signal(&self, ntfn: u64) -> Result<(), Error>;
    /// Issue an I/O-port capability for `first..=last` into slot `dest` of `cnode`.
    fn issue_io_ports(&self, first: u64, last: u64, cnode: u64, dest: u64) -> Result<(), Error>;
    /// Make the handler of interrupt `irq` in Studio's empty slot `dest`, signalling `ntfn`.
    fn irq_handler(&self, irq: u64, dest: u64, ntfn: u64) -> Result<(), Error>;
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
}

/// Studio's endpoint to the root task and the messages it sends there
/// (`ozone_agent_sdk::protocol::root`).
pub use ozone_agent_sdk::protocol::root::{HELLO as ROOT_HELLO, SHUTDOWN as ROOT_SHUTDOWN, STUDIO_ROOT_EP as ROOT_EP};

/// The real kernel.
pub struct Sel4;

impl Kernel for Sel4 {
    fn retype(&self, untyped: u64, ty: ObjectType, size_bits: u64, dest: u64) -> Result<(), Error> {
        k::untyped_retype(untyped, ty, size_bits, slot::CNODE, 0, 0, dest, 1)
    }

    fn retype_into(&self, untyped: u64, ty: ObjectType, size_bits: u64, cnode: u64, dest: u64) -> Result<(), Error> {
        k::untyped_retype(untyped, ty, size_bits, cnode, 0, 0, dest, 1)
    }

    fn untyped_free(&self, untyped: u64) -> Result<(u64, bool), Error> {
        k::untyped_get_info(untyped).map(|i| (i.free, i.has_children))
    }

    fn revoke(&self, s: u64) -> Result<(), Error> {
        k::cnode_revoke(slot::CNODE, s)
    }

    fn delete_in(&self, cnode: u64, at: u64) -> Result<(), Error> {
        k::cnode_revoke(cnode, at)?;
        k::cnode_delete(cnode, at)
    }

    fn copy_into(&self, cnode: u64, dest: u64, src: u64, r: u64) -> Result<(), Error> {
        process::copy_into(cnode, dest, slot::CNODE, src, r)
    }

    fn mint_own(&self, dest: u64, src: u64, r: u64, badge: u64) -> Result<(), Error> {
        process::mint_into(slot::CNODE, dest, slot::CNODE, src, r, badge)
    }

    fn delete_own(&self, at: u64) -> Result<(), Error> {
        k::cnode_delete(slot::CNODE, at)
    }

    fn mint_into(&self, cnode: u64, dest: u64, src: u64, r: u64, badge: u64) -> Result<(), Error> {
        process::mint_into(cnode, dest, slot::CNODE, src, r, badge)
    }

    fn move_into(&self, cnode: u64, dest: u64, src: u64) -> Result<(), Error> {
        process::move_into(cnode, dest, slot::CNODE, src)
    }

    fn holds_cap(&self, cnode: u64, at: u64) -> bool {
        // Moving a slot onto itself: FailedLookup if empty, DeleteFirst if it holds a capability.
        matches!(process::move_into(cnode, at, cnode, at), Err(Error::DeleteFirst))
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
        process::build(child, own, slot::VSPACE, slot::TCB, image, layout, cnode_radix, priority, fault_ep, info)
    }

    fn set_mc_priority(&self, tcb: u64, mcp: u64) -> Result<(), Error> {
        k::tcb_set_mc_priority(tcb, slot::TCB, mcp)
    }

    fn bind_notification(&self, tcb: u64, ntfn: u64) -> Result<(), Error> {
        k::tcb_bind_notification(tcb, ntfn)
    }

    fn signal(&self, ntfn: u64) -> Result<(), Error> {
        ozone_agent_sdk::sys::nb_send(ntfn, ozone_agent_sdk::sys::Msg::new(0, &[]))
    }

    fn issue_io_ports(&self, first: u64, last: u64, cnode: u64, dest: u64) -> Result<(), Error> {
        k::invoke(slot::IO_PORT_CONTROL, inv::IO_PORT_CONTROL_ISSUE, &[first, last, dest, 64], &[cnode]).map(|_| ())
    }

    fn irq_handler(&self, irq: u64, dest: u64, ntfn: u64) -> Result<(), Error> {
        k::invoke(slot::IRQ_CONTROL, inv::IRQ_CONTROL_GET, &[irq, dest, 64], &[slot::CNODE])
            .and_then(|_| k::invoke(dest, inv::IRQ_HANDLER_SET_NOTIFICATION, &[], &[ntfn]))
            .map(|_| ())
    }

    fn start(&self, p: &Process) -> Result<(), Error> {
        process::start(p)
    }

    fn map_frame(&self, mem: &dyn Alloc, frame: u64, vspace: u64, va: u64) -> Result<(), Error> {
        process::map_frame_with_tables(mem, frame, vspace, va, rights::READ | rights::WRITE, false)
    }

    fn telemetry(&self, tcb: u64) -> Result<Telemetry, Error> {
        let rep = k::invoke(slot::TELEMETRY, inv::TELEMETRY_READ, &[], &[tcb])?;
        let w = |n| k::reply_word(&rep, n);
        Ok(Telemetry {
            syscalls: w(0),
            invocations: w(1),
            ipc_sent: w(2),
            ipc_received: w(3),
            faults: w(4),
            denied: w(5),
        })
    }

    fn profile(&self, tcb: u64) -> Result<(u64, u64, Option<u64>), Error> {
        let (used, allowed) = k::tcb_get_profile(tcb)?;
        Ok((used, allowed, k::tcb_profile_window(tcb)?))
    }

    fn set_profile(&self, tcb: u64, allowed: u64) -> Result<(), Error> {
        k::tcb_set_profile(tcb, allowed)
    }

    fn arm_profile(&self, tcb: u64, allowed: u64, learn: u64) -> Result<(), Error> {
        k::tcb_arm_profile(tcb, allowed, learn)
    }

    fn power_off(&self, status: u64) {
        let _ = ozone_agent_sdk::sys::call(ROOT_EP, ozone_agent_sdk::sys::Msg::new(ROOT_SHUTDOWN, &[status]));
    }

    fn set_debug_output(&self, tcb: u64, on: bool) -> Result<(), Error> {
        k::tcb_set_debug_output(tcb, slot::IO_PORT_CONTROL, on)
    }
}
