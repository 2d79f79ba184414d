//! The telemetry capability's methods. Read: a thread's counters (cap0: its TCB) in
//! MR0..MR5 — syscalls, invocations, IPC sent, IPC received, faults, denied operations, as
//! `ozone_abi::telemetry::ThreadCounters::to_words` orders them — and in MR6 its profile's
//! `used` mask. Studio and the syscall shaper read them.
//!
//! Trace, TraceOff and TraceAck run a thread's event trace (`object/trace.rs`,
//! `ozone_abi::trace`): start it into a frame (cap1), stop it, and acknowledge the records read
//! (MR0), each answering with the records written and dropped so far.

use super::kptr::kptr;
use ozone_abi::Error;
use ozone_abi::invocation as inv;
use ozone_abi::telemetry;

use super::Cap;
use super::kmem::SlotRef;
use super::tcb::{Counters, Tcb, check_trace_frame, start_trace, stop_trace};
use crate::api::invoke::{Message, Refused, UNKNOWN_METHOD, refuse};
use crate::api::{Kernel, thread};

/// A decoded telemetry method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelemetryPlan {
    Read { tcb: *mut Tcb },
    Trace { tcb_slot: SlotRef, tcb: *mut Tcb, frame_slot: SlotRef, frame: Cap },
    TraceOff { tcb: *mut Tcb },
    TraceAck { tcb: *mut Tcb, upto: u64 },
}

fn decode(m: Message, label: u64) -> Result<TelemetryPlan, Refused> {
    if !matches!(
        label,
        inv::TELEMETRY_READ | inv::TELEMETRY_TRACE | inv::TELEMETRY_TRACE_OFF | inv::TELEMETRY_TRACE_ACK
    ) {
        return Err(UNKNOWN_METHOD);
    }
    let (tcb_slot, target) = m.cap(0)?;
    let Cap::Tcb { ptr } = target else {
        return Err(refuse(Error::InvalidCapability, "the argument is not a TCB"));
    };
    let tcb = kptr::<Tcb>(ptr);
    Ok(match label {
        inv::TELEMETRY_READ => TelemetryPlan::Read { tcb },
        inv::TELEMETRY_TRACE => {
            let (frame_slot, frame) = m.cap(1)?;
            check_trace_frame(frame_slot, &frame)?;
            TelemetryPlan::Trace { tcb_slot, tcb, frame_slot, frame }
        }
        inv::TELEMETRY_TRACE_OFF => TelemetryPlan::TraceOff { tcb },
        _ => TelemetryPlan::TraceAck { tcb, upto: m.mr(0)? },
    })
}

fn perform(k: &mut Kernel, m: Message, plan: TelemetryPlan) -> Result<(), Refused> {
    match plan {
        TelemetryPlan::Read { tcb } => {
            let (c, used): (Counters, u64) = {
                // SAFETY: a TCB capability names a live TCB (possibly the invoking thread's
                // own: the reference is the only one alive, and ends here).
                let t = unsafe { thread(tcb) };
                (t.counters, t.profile.used())
            };
            let mut words = [0; telemetry::WORDS + 1];
            words[..telemetry::WORDS].copy_from_slice(&c.to_words());
            words[telemetry::PROFILE_USED] = used;
            m.reply(&words);
        }
        TelemetryPlan::Trace { tcb_slot, tcb, frame_slot, frame } => {
            start_trace(k, m, tcb_slot, tcb, frame_slot, frame)?;
        }
        TelemetryPlan::TraceOff { tcb } => match stop_trace(k, tcb) {
            Some((written, dropped)) => m.reply(&[written, dropped]),
            None => m.restart(),
        },
        TelemetryPlan::TraceAck { tcb, upto } => {
            let counts = {
                // SAFETY: as for Read.
                let t = unsafe { thread(tcb) };
                t.trace.ack(upto).map(|()| (t.trace.written(), t.trace.dropped()))
            };
            match counts {
                Ok((written, dropped)) => m.reply(&[written, dropped]),
                Err(Error::RangeError) => {
                    return Err(refuse(Error::RangeError, "acknowledged records go back or were never written"));
                }
                Err(e) => return Err(refuse(e, "the thread is not traced")),
            }
        }
    }
    Ok(())
}

/// A telemetry invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke(k: &mut Kernel, m: Message, label: u64) -> Result<(), Refused> {
    let plan = decode(m, label)?;
    perform(k, m, plan)
}
