//! The telemetry capability's one method, Read: a thread's counters (cap0: its TCB) in
//! MR0..MR5 — syscalls, invocations, IPC sent, IPC received, faults, denied operations, as
//! `ozone_abi::telemetry::ThreadCounters::to_words` orders them — and in MR6 its profile's
//! `used` mask. Studio and the syscall shaper read them.

use super::kptr::kptr;
use ozone_abi::Error;
use ozone_abi::invocation as inv;
use ozone_abi::telemetry;

use super::Cap;
use super::tcb::{Counters, Tcb};
use crate::api::invoke::{Message, Refused, UNKNOWN_METHOD, refuse};
use crate::api::thread;

/// A decoded telemetry method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelemetryPlan {
    Read { tcb: *mut Tcb },
}

fn decode(m: Message, label: u64) -> Result<TelemetryPlan, Refused> {
    if label != inv::TELEMETRY_READ {
        return Err(UNKNOWN_METHOD);
    }
    let (_, target) = m.cap(0)?;
    let Cap::Tcb { ptr } = target else {
        return Err(refuse(Error::InvalidCapability, "the argument is not a TCB"));
    };
    Ok(TelemetryPlan::Read { tcb: kptr::<Tcb>(ptr) })
}

fn perform(m: Message, plan: TelemetryPlan) {
    let TelemetryPlan::Read { tcb } = plan;
    let (c, used): (Counters, u64) = {
        // SAFETY: a TCB capability names a live TCB (possibly the invoking thread's own: the
        // reference is the only one alive, and ends here).
        let t = unsafe { thread(tcb) };
        (t.counters, t.profile.used())
    };
    let mut words = [0; telemetry::WORDS + 1];
    words[..telemetry::WORDS].copy_from_slice(&c.to_words());
    words[telemetry::PROFILE_USED] = used;
    m.reply(&words);
}

/// A telemetry invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke(m: Message, label: u64) -> Result<(), Refused> {
    let plan = decode(m, label)?;
    perform(m, plan);
    Ok(())
}
