//! The methods of interrupt capabilities. IRQ control (one capability, given to the root task)
//! issues a handler capability per line, once (Get: MR0 line, MR1/MR2 destination index and
//! depth; cap0 the destination CNode's root). An IRQ handler capability routes its line to a
//! notification (SetNotification, cap0: a notification with the write right; each interrupt
//! signals the capability's badge, or bit `irq` if it is unbadged), stops routing it
//! (Clear), and unmasks it after a delivery (Ack). The lines are the I/O APIC's, reached through
//! the kernel's `Platform`.
//!
//! Each method is decoded into an [`IrqPlan`], every argument checked, then performed.

use ozone_abi::Error;
use ozone_abi::invocation as inv;

use super::cspace::lookup_slot;
use super::kmem::SlotRef;
use super::{Cap, Rights, mdb};
use crate::api::invoke::{Message, Refused, UNKNOWN_METHOD, refuse};
use crate::api::{Kernel, MAX_IRQS};

/// A decoded interrupt method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqPlan {
    /// Issue a handler capability for `irq` into the empty slot `dest`.
    Issue {
        irq: u8,
        dest: SlotRef,
    },
    Ack {
        irq: u8,
    },
    SetNotification {
        irq: u8,
        notification: u64,
        badge: u64,
    },
    Clear {
        irq: u8,
    },
}

fn decode_control(k: &Kernel, m: Message, label: u64) -> Result<IrqPlan, Refused> {
    if label != inv::IRQ_CONTROL_GET {
        return Err(UNKNOWN_METHOD);
    }
    let irq = m.mr(0)?;
    let (index, depth) = (m.mr(1)?, m.mr(2)?);
    let (_, root) = m.cap(0)?;
    if irq >= MAX_IRQS as u64 {
        return Err(refuse(Error::RangeError, "no such interrupt line"));
    }
    if k.irq_issued[irq as usize] {
        return Err(refuse(Error::DeleteFirst, "a handler capability for the line exists"));
    }
    let dest = lookup_slot(&root, index, depth)?;
    if !dest.is_empty() {
        return Err(refuse(Error::DeleteFirst, "the destination slot is occupied"));
    }
    Ok(IrqPlan::Issue { irq: irq as u8, dest })
}

fn decode_handler(m: Message, irq: u8, label: u64) -> Result<IrqPlan, Refused> {
    match label {
        inv::IRQ_HANDLER_ACK => Ok(IrqPlan::Ack { irq }),
        inv::IRQ_HANDLER_SET_NOTIFICATION => {
            let (_, n) = m.cap(0)?;
            let Cap::Notification { ptr, rights, badge } = n else {
                return Err(refuse(Error::InvalidCapability, "the argument is not a notification"));
            };
            if !rights.contains(Rights::WRITE) {
                return Err(refuse(Error::IllegalOperation, "the notification capability cannot signal"));
            }
            // As in seL4, the interrupt signals the capability's badge; an unbadged capability
            // signals bit `irq % 64`.
            let badge = if badge != 0 { badge } else { 1 << (irq % 64) };
            Ok(IrqPlan::SetNotification { irq, notification: ptr, badge })
        }
        inv::IRQ_HANDLER_CLEAR => Ok(IrqPlan::Clear { irq }),
        _ => Err(UNKNOWN_METHOD),
    }
}

fn perform(k: &mut Kernel, control: SlotRef, plan: IrqPlan) {
    match plan {
        IrqPlan::Issue { irq, dest } => {
            mdb::insert_new_cap(control, dest, Cap::IrqHandler { irq });
            k.irq_issued[irq as usize] = true;
        }
        IrqPlan::Ack { irq } => k.platform.irq_ack(irq),
        IrqPlan::SetNotification { irq, notification, badge } => {
            k.irq_notification[irq as usize] = notification;
            k.irq_badge[irq as usize] = badge;
            k.platform.irq_enable(irq, true);
        }
        IrqPlan::Clear { irq } => {
            k.irq_notification[irq as usize] = 0;
            k.platform.irq_enable(irq, false);
        }
    }
}

/// An IRQ-control invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke_control(k: &mut Kernel, m: Message, slot: SlotRef, label: u64) -> Result<(), Refused> {
    let plan = decode_control(k, m, label)?;
    perform(k, slot, plan);
    Ok(())
}

/// An IRQ-handler invocation (the dispatcher is `api/invoke.rs`); `slot` is the handler's.
pub(crate) fn invoke_handler(k: &mut Kernel, m: Message, slot: SlotRef, irq: u8, label: u64) -> Result<(), Refused> {
    let plan = decode_handler(m, irq, label)?;
    perform(k, slot, plan);
    Ok(())
}
