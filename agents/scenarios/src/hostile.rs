//! The hostile steps: each call is one small attempt, refused by the system when it works as it
//! should. The hostile programs run them in loops, `sc-slow` runs them with long pauses, and
//! `sc-mimicry` hides one now and then in ordinary traffic. What each attempt met is counted in
//! a [`Tally`], which the programs print at their end.

use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::caps::{self, Endpoint};
use ozone_agent_sdk::kernel::{self as k, ipc_buffer};
use ozone_agent_sdk::protocol::studio::{self as studio, method};
use ozone_agent_sdk::protocol::{LABEL_BASE, Permutation, ServiceError};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::scenario::Rng;
use ozone_agent_sdk::sys::Msg;
use ozone_agent_sdk::{AgentError, abi, heap, start};

use crate::rr;

/// What the attempts met.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Attempts made.
    pub tried: u64,
    /// Refused (an error from the kernel or a server).
    pub refused: u64,
    /// Answered without an error.
    pub answered: u64,
}

impl Tally {
    fn count<T, E>(&mut self, r: &Result<T, E>) {
        self.tried += 1;
        if r.is_ok() {
            self.answered += 1;
        } else {
            self.refused += 1;
        }
    }
}

impl core::fmt::Display for Tally {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} attempts: {} refused, {} answered", self.tried, self.refused, self.answered)
    }
}

/// The slots a capability probe leaves alone: Studio's (a random label could be its `EXIT`,
/// ending the probe), the console's log capability, the program's own notification (a call on
/// it is a signal to itself) and whatever the program looked up on purpose (`held`).
fn spared(slot: u64, held: &[u64]) -> bool {
    let own = caps::notification().map_or(u64::MAX, |n| n.slot());
    slot == caps::studio().slot() || slot == caps::log().slot() || slot == own || held.contains(&slot)
}

/// Capability probing and slot scanning: slots in order (`0..256`, the size of a program's
/// CNode) and then random capability pointers, each invoked with a random small label and
/// random words. Keeps its place between steps.
pub struct SlotScan {
    next: u64,
    /// Slots the probe leaves alone besides the fixed ones (Studio, the log, its notification).
    pub held: Vec<u64>,
}

impl SlotScan {
    /// A scan from slot 0.
    pub fn new(held: Vec<u64>) -> SlotScan {
        SlotScan { next: 0, held }
    }

    /// Probe one capability pointer.
    pub fn step(&mut self, rng: &mut Rng, tally: &mut Tally) {
        let cptr = if self.next < 256 {
            self.next += 1;
            self.next - 1
        } else {
            match rng.range(0, 2) {
                0 => rng.next_u64(),
                1 => rng.range(256, 1 << 16),
                _ => rng.range(0, 255),
            }
        };
        if spared(cptr, &self.held) || cptr == ozone_agent_sdk::scenario::MARKER_SLOT {
            return;
        }
        let label = rng.range(0, 127);
        let args = [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()];
        let n = rng.range(0, 4) as usize;
        tally.count(&k::invoke(cptr, label, &args[..n], &[]));
    }
}

/// IPC flood of `sc-rr`: `calls` back-to-back calls with the largest echo payload, then as
/// many one-way sends (lost when the server is not waiting).
pub fn flood(client: &Client, rng: &mut Rng, calls: u64, tally: &mut Tally) {
    let mut data = alloc::vec![0u8; 900];
    rng.fill(&mut data);
    for _ in 0..calls {
        tally.count(&client.call(rr::method::ECHO, &data));
    }
    for _ in 0..calls {
        tally.count(&client.send_nb(rr::method::SUM, &alloc::vec![rng.next_u64(); 8]));
    }
}

/// The wire label of Studio's `EXIT`, which a fuzzer of Studio leaves out (it would end the
/// fuzzer, not test Studio).
fn studio_exit() -> u64 {
    Permutation::new(start::protocol_key(), studio::INTERFACE).label(method::EXIT.id()).unwrap_or(0)
}

/// Protocol fuzzing: one malformed message to the server of `interface` at `ep`: a label among
/// the interface's wire labels (or anywhere below `0x1000`: no interface's), a random length and
/// random words. Returns whether the server answered (with anything, a refusal included).
pub fn fuzz(ep: Endpoint, interface: &str, rng: &mut Rng, tally: &mut Tally) -> bool {
    let label = if rng.chance(80) {
        let m = rng.range(0, 63);
        Permutation::new(start::protocol_key(), interface).label(m).unwrap_or(LABEL_BASE + m)
    } else {
        rng.range(16, 0xfff)
    };
    if ep == caps::studio() && label == studio_exit() {
        return false;
    }
    let len = rng.range(0, abi::MSG_MAX_LENGTH);
    let buf = ipc_buffer();
    for w in buf.msg.iter_mut().take(len as usize).skip(4) {
        *w = rng.next_u64();
    }
    let mrs = [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()];
    let msg = Msg { info: abi::MessageInfo::new(label, 0, 0, len), mrs };
    let r = ep.call(msg);
    tally.count(&r);
    r.is_ok()
}

/// The administration methods of Studio a program without privileges may not use.
pub const ADMIN_METHODS: [&str; 19] = [
    "LIST",
    "CAPS",
    "GRANT",
    "REVOKE",
    "KILL",
    "START",
    "LOG",
    "MEMORY",
    "SHUTDOWN",
    "TELEMETRY",
    "REPORTS",
    "VSPACE_OF",
    "PROFILE_OF",
    "SET_PROFILE",
    "ARM_PROFILE",
    "MAY_SHAPE",
    "FUND",
    "SHAPED",
    "CLIENT",
];

/// Privilege probing: one of Studio's administration methods ([`ADMIN_METHODS`], drawn), with
/// plausible arguments naming `victim` (another program). Returns the method's name and
/// whether Studio refused it with `Denied`, as it must for a program without privileges.
pub fn privilege(rng: &mut Rng, victim: &str, tally: &mut Tally) -> (&'static str, bool) {
    let s = Client::studio();
    let me = String::from(start::name());
    let id = rng.range(1, 40);
    let pick = rng.range(0, ADMIN_METHODS.len() as u64 - 1) as usize;
    let grant = studio::Grant { agent: me.clone(), interface: String::from("echo") };
    let r: Result<(), AgentError> = match pick {
        0 => s.call(method::LIST, &0u32).map(drop),
        1 => s.call(method::CAPS, victim).map(drop),
        2 => s.call(method::GRANT, &grant).map(drop),
        3 => s.call(method::REVOKE, &studio::Grant { agent: String::from(victim), interface: String::from("sc-rr") }),
        4 => s.call(method::KILL, victim),
        5 => s.call(method::START, victim).map(drop),
        6 => s.call(method::LOG, &0u32).map(drop),
        7 => s.call(method::MEMORY, &()).map(drop),
        8 => s.call(method::SHUTDOWN, &0u8),
        9 => s.call(method::TELEMETRY, victim).map(drop),
        10 => s.call(method::REPORTS, &0u32).map(drop),
        11 => s.call(method::VSPACE_OF, &id).map(drop),
        12 => s.call(method::PROFILE_OF, &id).map(drop),
        13 => s.call(method::SET_PROFILE, &studio::SetProfile { id, run: 1, allowed: u64::MAX }),
        14 => s.call(method::ARM_PROFILE, &studio::ArmProfile { id, run: 1, allowed: u64::MAX, learn: 1 }),
        15 => s.call(
            method::MAY_SHAPE,
            &studio::ShapeAsk { caller: id, target: String::from(victim), op: studio::ShapeOp::Learn },
        ),
        16 => s.call(method::FUND, &studio::Fund { client: id, order: 0, slot: 300 }),
        17 => s.call(method::SHAPED, &None::<String>).map(drop),
        _ => s.call(method::CLIENT, &id).map(drop),
    };
    tally.count(&r);
    (ADMIN_METHODS[pick], r == Err(AgentError::Service(ServiceError::Denied)))
}

/// Quota pressure: ask Studio for `1..=max_pages` more heap pages. `Ok(bytes)` granted, or the
/// refusal (`Service(QuotaExceeded)` once the quota is used up).
pub fn grow(rng: &mut Rng, max_pages: u64, tally: &mut Tally) -> Result<u64, AgentError> {
    let r = heap::grow(rng.range(1, max_pages.max(1)));
    tally.count(&r);
    r
}
