//! The methods of interrupt capabilities. IRQ control (one capability, given to the root task)
//! issues a handler capability per line, once (Get: MR0 the line, MR1/MR2 destination index and
//! depth; cap0 the destination CNode's root). A line is a GSI: an input of one of the machine's
//! I/O APICs (every one the MADT lists), below [`MAX_IRQS`]; any other number is refused with
//! `RangeError`. Get takes no trigger mode or polarity: those are the firmware's word (the MADT's
//! interrupt-source overrides), or, for lines it says nothing about, edge/active-high below GSI
//! 16 and level/active-low from 16 (PCI INTx); see `crate::interrupts`. A program cannot
//! program an input the wrong way round.
//!
//! GetMsi (MR0/MR1 destination index and depth; cap0 the destination CNode's root) issues a
//! handler for a message-signalled line the kernel chooses (the lowest free one of
//! `interrupts::MAX_MSIS`) and answers the line, and the address and data a device must write to
//! raise it (MR0, MR1, MR2). Such a line behaves like the others: masked from delivery to Ack (the
//! kernel cannot mask a device's MSI at its source, so one arriving while the line is masked is
//! held and delivered at the unmask; Clear and the handler's deletion drop it).
//!
//! An IRQ handler capability routes its line to a notification (SetNotification, cap0: a
//! notification with the write right; each interrupt signals the capability's badge, or bit
//! `irq % 64` if it is unbadged), stops routing it (Clear), and unmasks it after a delivery
//! (Ack). Every line, edge or level, is masked when it fires and stays masked until the
//! handler's Ack: a device holding a level-triggered line asserted interrupts once per Ack,
//! never in a storm. Ack unmasks only a routed line (one with a notification): acknowledging
//! a cleared line, or one never routed, changes nothing.
//!
//! Each method is decoded into an [`IrqPlan`], every argument checked, then performed.

use ozone_abi::Error;
use ozone_abi::invocation as inv;

use super::cspace::lookup_slot;
use super::kmem::SlotRef;
use super::{Cap, Rights, mdb};
use crate::api::invoke::{Message, Refused, UNKNOWN_METHOD, refuse};
use crate::api::{Kernel, MAX_IRQS};
use crate::interrupts::MAX_LINES;

/// A decoded interrupt method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqPlan {
    /// Issue a handler capability for `irq` into the empty slot `dest`; for an MSI line,
    /// answer it with its address and data.
    Issue {
        irq: u8,
        dest: SlotRef,
        msi: Option<(u64, u64)>,
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
    match label {
        inv::IRQ_CONTROL_GET => {
            let irq = m.mr(0)?;
            let (index, depth) = (m.mr(1)?, m.mr(2)?);
            let (_, root) = m.cap(0)?;
            if irq >= MAX_LINES as u64 {
                return Err(refuse(Error::RangeError, "the line is past the kernel's interrupt lines"));
            }
            if !k.platform.irq_line(irq as u8) {
                return Err(refuse(Error::RangeError, "no I/O APIC input has this line"));
            }
            if k.irq_issued[irq as usize] {
                return Err(refuse(Error::DeleteFirst, "a handler capability for the line exists"));
            }
            let dest = lookup_slot(&root, index, depth)?;
            if !dest.is_empty() {
                return Err(refuse(Error::DeleteFirst, "the destination slot is occupied"));
            }
            Ok(IrqPlan::Issue { irq: irq as u8, dest, msi: None })
        }
        inv::IRQ_CONTROL_GET_MSI => {
            let (index, depth) = (m.mr(0)?, m.mr(1)?);
            let (_, root) = m.cap(0)?;
            let Some(irq) = (MAX_LINES..MAX_IRQS).find(|&i| !k.irq_issued[i]) else {
                return Err(refuse(Error::DeleteFirst, "every MSI line has a handler"));
            };
            let Some(msi) = k.platform.msi_message(irq as u8) else {
                return Err(refuse(Error::RangeError, "the machine cannot deliver this MSI line"));
            };
            let dest = lookup_slot(&root, index, depth)?;
            if !dest.is_empty() {
                return Err(refuse(Error::DeleteFirst, "the destination slot is occupied"));
            }
            Ok(IrqPlan::Issue { irq: irq as u8, dest, msi: Some(msi) })
        }
        _ => Err(UNKNOWN_METHOD),
    }
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

fn perform(k: &mut Kernel, m: Message, control: SlotRef, plan: IrqPlan) {
    match plan {
        IrqPlan::Issue { irq, dest, msi } => {
            mdb::insert_new_cap(control, dest, Cap::IrqHandler { irq });
            k.irq_issued[irq as usize] = true;
            // A new handler starts with its line masked and nothing held: an MSI a previous
            // owner's device sent after that handler's deletion does not reach the new owner.
            k.platform.irq_enable(irq, false);
            if let Some((address, data)) = msi {
                m.reply(&[u64::from(irq), address, data]);
            }
        }
        IrqPlan::Ack { irq } => {
            // Only a routed line is unmasked: one with no notification stays masked.
            if k.irq_notification.get(irq as usize).is_some_and(|&n| n != 0) {
                k.platform.irq_ack(irq);
            }
        }
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
    perform(k, m, slot, plan);
    Ok(())
}

/// An IRQ-handler invocation (the dispatcher is `api/invoke.rs`); `slot` is the handler's.
pub(crate) fn invoke_handler(k: &mut Kernel, m: Message, slot: SlotRef, irq: u8, label: u64) -> Result<(), Refused> {
    let plan = decode_handler(m, irq, label)?;
    perform(k, m, slot, plan);
    Ok(())
}
