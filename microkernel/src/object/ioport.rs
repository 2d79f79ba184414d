//! The methods of I/O-port capabilities. I/O-port control (one capability, given to the root
//! task) issues a capability to a range of ports (Issue: MR0/MR1 first and last port, MR2/MR3
//! destination index and depth; cap0 the destination CNode's root). An I/O-port capability
//! reads and writes 1, 2 or 4 bytes at a port inside its range (In8/16/32: MR0 port, result in
//! MR0; Out8/16/32: MR0 port, MR1 value), through the kernel's `Platform`.
//!
//! Issue refuses ranges that hold a port the kernel drives itself (`Platform::kernel_port`): on
//! x86 the legacy PICs with their aliases and edge/level registers, which the kernel keeps masked
//! (a program that re-initialised them could deliver device interrupts on exception vectors; the
//! local APIC's LINT0 is masked too, as a second line), and the ports the kernel ends the run with
//! (QEMU's debug-exit device, the ACPI PM1 control and SMI command ports). COM1 is not among
//! them: the console server drives it, and the kernel's log shares the line by design.
//!
//! Each method is decoded into an [`IoPortPlan`], every argument checked, then performed.

use ozone_abi::Error;
use ozone_abi::invocation as inv;

use super::cspace::lookup_slot;
use super::kmem::SlotRef;
use super::{Cap, mdb};
use crate::api::Kernel;
use crate::api::invoke::{Message, Refused, UNKNOWN_METHOD, refuse};

/// A decoded I/O-port method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoPortPlan {
    /// Issue a capability to ports `first..=last` into the empty slot `dest`.
    Issue {
        first: u16,
        last: u16,
        dest: SlotRef,
    },
    In {
        port: u16,
        size: u8,
    },
    Out {
        port: u16,
        size: u8,
        value: u32,
    },
}

fn decode_control(k: &Kernel, m: Message, label: u64) -> Result<IoPortPlan, Refused> {
    if label != inv::IO_PORT_CONTROL_ISSUE {
        return Err(UNKNOWN_METHOD);
    }
    let (first, last) = (m.mr(0)?, m.mr(1)?);
    let (index, depth) = (m.mr(2)?, m.mr(3)?);
    let (_, root) = m.cap(0)?;
    if first > last || last > 0xffff {
        return Err(refuse(Error::RangeError, "the port range is empty or beyond port 0xffff"));
    }
    if k.platform.kernel_port(first as u16, last as u16) {
        return Err(refuse(Error::IllegalOperation, "the range holds ports the kernel drives"));
    }
    let dest = lookup_slot(&root, index, depth)?;
    if !dest.is_empty() {
        return Err(refuse(Error::DeleteFirst, "the destination slot is occupied"));
    }
    Ok(IoPortPlan::Issue { first: first as u16, last: last as u16, dest })
}

fn decode_port(m: Message, first: u16, last: u16, label: u64) -> Result<IoPortPlan, Refused> {
    let (size, write) = match label {
        inv::IO_PORT_IN8 => (1, false),
        inv::IO_PORT_IN16 => (2, false),
        inv::IO_PORT_IN32 => (4, false),
        inv::IO_PORT_OUT8 => (1, true),
        inv::IO_PORT_OUT16 => (2, true),
        inv::IO_PORT_OUT32 => (4, true),
        _ => return Err(UNKNOWN_METHOD),
    };
    const OUTSIDE: Refused = refuse(Error::RangeError, "the access is not inside the capability's ports");
    let port = m.mr(0)?;
    // The whole access, `size` bytes from `port`, must lie in the capability's range (a port
    // near u64::MAX must not wrap round into it).
    let end = port.checked_add(u64::from(size) - 1).ok_or(OUTSIDE)?;
    if port < u64::from(first) || end > u64::from(last) {
        return Err(OUTSIDE);
    }
    let port = port as u16;
    Ok(if write { IoPortPlan::Out { port, size, value: m.mr(1)? as u32 } } else { IoPortPlan::In { port, size } })
}

fn perform(k: &mut Kernel, m: Message, control: SlotRef, plan: IoPortPlan) {
    match plan {
        IoPortPlan::Issue { first, last, dest } => mdb::insert_new_cap(control, dest, Cap::IoPort { first, last }),
        IoPortPlan::In { port, size } => m.reply(&[u64::from(k.platform.port_in(port, size))]),
        IoPortPlan::Out { port, size, value } => k.platform.port_out(port, size, value),
    }
}

/// An I/O-port-control invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke_control(k: &mut Kernel, m: Message, slot: SlotRef, label: u64) -> Result<(), Refused> {
    let plan = decode_control(k, m, label)?;
    perform(k, m, slot, plan);
    Ok(())
}

/// An I/O-port invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke(
    k: &mut Kernel,
    m: Message,
    slot: SlotRef,
    first: u16,
    last: u16,
    label: u64,
) -> Result<(), Refused> {
    let plan = decode_port(m, first, last, label)?;
    perform(k, m, slot, plan);
    Ok(())
}
