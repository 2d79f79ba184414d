//! What Studio knows: every program of the description ([`Agent`]: its state, memory,
//! capabilities given, interfaces granted and revoked) and the system ([`Studio`]: the
//! description, the binaries, keys, memory pool, logs).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;

use ozone_abi::Error;
use ozone_abi::object::ObjectType;
use ozone_agent_sdk::process::Process;
use ozone_agent_sdk::protocol::MAX_PAYLOAD;
use ozone_agent_sdk::protocol::start::slot as pslot;
use ozone_agent_sdk::protocol::studio::AgentState;
use ozone_agent_sdk::protocol::system::{Program, SystemDescription};
use ozone_agent_sdk::slots::Slots;

use crate::funding::Funding;
use crate::kernel::Kernel;
use crate::log::{Log, Logged};
use crate::objects::{ChunkAlloc, OwnAlloc};
use crate::pool::Pool;

/// Every program's CNode: 2^8 slots (Studio uses slots below 256 for what it gives).
pub const CNODE_RADIX: u64 = 8;

/// A capability Studio put in a program's CNode, for `caps` and `revoke`.
pub struct Held {
    pub slot: u64,
    pub what: String,
    /// The interface, for endpoint capabilities obtained by lookup or grant.
    pub interface: Option<String>,
    /// For copies of another program's objects: that program's id (the copy goes with it).
    pub from: Option<u64>,
}

/// One program of the description.
pub struct Agent {
    pub id: u64,
    pub prog: Program,
    pub state: AgentState,
    pub restarts: u32,
    /// Which start of it this is (every start counts, from 1): `PROFILE_OF` names it, and a
    /// profile change naming another run is refused, so it never reaches a later run.
    pub run: u32,
    /// Studio allowed a relearn of this run's syscall profile (`MAY_SHAPE`, asked for an `admin`
    /// program): the next `ARM_PROFILE` may widen its `allowed` mask, once.
    pub relearn: bool,
    /// The chunk (slot, size_bits) while it runs.
    pub chunk: Option<(u64, u8)>,
    /// A driver's chunk after it stopped, kept for its next run and no other program: the
    /// device it drove may still write (DMA) into frames of it (`pci` programs only).
    pub kept_chunk: Option<(u64, u8)>,
    pub mem: Option<ChunkAlloc<'static>>,
    pub proc: Option<Process>,
    pub held: Vec<Held>,
    /// Interfaces granted at run time beyond the description's `uses`.
    pub granted: Vec<String>,
    /// Interfaces revoked at run time (they override the description).
    pub revoked: Vec<String>,
    pub heap_end: u64,
    /// One endpoint per interface it provides (Studio's slots; they outlive restarts).
    pub endpoints: Vec<(String, u64)>,
    /// Studio's slot of the notification bound to its thread, while it runs (servers only).
    pub notification: Option<u64>,
    /// Untyped memory carved from its chunk for its secure memory (`FUND`), while it runs.
    pub funding: RefCell<Funding>,
    /// Its event trace, while it runs traced (`watch`).
    pub watch: Option<crate::watch::Watch>,
    /// Its use of the CPU this run (`perf`).
    pub perf: crate::perf::Perf,
    /// The highest graded-response level its runs reached (`watch`): a new run starts there,
    /// until a human allows it.
    pub carried: ozone_cognition::respond::Level,
}

impl Agent {
    /// The badge of its capabilities to servers in its current run: its id and run
    /// (`protocol::studio::client_badge`), so that a server's word names the run.
    pub fn client_badge(&self) -> u64 {
        ozone_agent_sdk::protocol::studio::client_badge(self.id, self.run)
    }

    pub fn may_use(&self, interface: &str) -> bool {
        !self.revoked.iter().any(|r| r == interface)
            && (self.prog.may_use(interface) || self.granted.iter().any(|g| g == interface))
    }

    /// Bytes of its quota in use: its chunk's, where the funding untypeds count for what the
    /// secure memory server holds of them (a dead server's grants count no more).
    pub fn used(&self) -> u64 {
        let f = self.funding.borrow();
        self.mem.as_ref().map_or(0, |m| m.used()).saturating_sub(f.carved()) + f.used()
    }

    /// A slot of its CNode Studio has not used (Studio uses slots below 2^8 only).
    pub fn free_child_slot(&self) -> Option<u64> {
        (pslot::FIRST_FREE..1 << CNODE_RADIX).find(|s| !self.held.iter().any(|h| h.slot == *s))
    }
}

pub struct Studio {
    pub k: &'static dyn Kernel,
    pub desc: SystemDescription,
    /// The binaries the description names, from the initrd.
    pub images: Vec<(String, &'static [u8])>,
    pub seed: [u8; 32],
    pub protocol_key: u64,
    /// Studio's own method numbering on this instance (from `protocol_key`): the wire label of
    /// each request's method, for its method event.
    pub numbering: ozone_agent_sdk::protocol::Permutation,
    /// Every interface's label block on this instance (`protocol::block_of`) and the program
    /// that provides it (`None`: Studio), made at boot: whose requests a label is for.
    pub blocks: Vec<(u64, Option<usize>)>,
    pub layout_key: u64,
    pub slots: &'static RefCell<Slots>,
    pub own: OwnAlloc<'static>,
    pub pool: Pool,
    /// Device memory for the device manager: untyped capabilities (slot, physical address,
    /// size in bits); Studio keeps them and gives the device manager copies.
    pub device_untyped: Vec<(u64, u64, u8)>,
    pub agents: Vec<Agent>,
    pub log: Log,
    /// Studio's endpoint (programs hold badged copies).
    pub ep: u64,
    /// The console server (the program with the `serial` device) and Studio's badged copy of its
    /// notification ([`LOG_SIGNAL`](ozone_agent_sdk::protocol::studio::LOG_SIGNAL)), while it
    /// runs; `true` once it prints Studio's decisions (`FOLLOW_LOG`): the log then signals it
    /// instead of printing them.
    pub log_signal: Option<(usize, u64, bool)>,
    /// Studio's notification, bound to its thread: the timer server signals Studio's tick on it
    /// (`watch`). `None` if it could not be made (then no agent is traced).
    pub tick: Option<u64>,
    /// The behaviour model the watch runs beside stide (`watch::MODEL_FILE`), if the initrd
    /// has a valid one and agents are traced.
    pub model: Option<ozone_cognition::model::Quantised>,
    /// The model's detector settings for each agent run.
    pub detect: ozone_cognition::detect::Config,
    /// Studio's ticks so far (the watch's clock for the graded responses). 64 bits: the clock
    /// in hundredths that the ladder compares modulo 2^32 must wrap at 2^32, not at a fraction.
    pub watch_ticks: u64,
    /// The agent whose scores Studio notes live (`FOLLOW`, the shell's `studio watch`).
    pub following: Option<crate::watch::Following>,
}

impl Studio {
    /// Record a decision with its reason.
    pub fn decide(&mut self, text: String) {
        self.log.decide(&text);
    }

    /// Record the refusal of a request of program `i`.
    pub fn refused(&mut self, i: usize, text: String) -> Logged {
        let (id, name) = (self.agents[i].id, self.agents[i].prog.name.clone());
        self.log.refuse(id, &name, &text)
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.prog.name == name)
    }

    pub fn index_of_id(&self, id: u64) -> Option<usize> {
        let i = id.checked_sub(1)? as usize;
        (i < self.agents.len()).then_some(i)
    }

    /// The name of program `id`, for the logs.
    pub fn name_of(&self, id: u64) -> String {
        self.index_of_id(id).map_or_else(|| format!("program {id}"), |i| self.agents[i].prog.name.to_string())
    }

    pub fn image(&self, binary: &str) -> Option<&'static [u8]> {
        self.images.iter().find(|(n, _)| n == binary).map(|(_, b)| *b)
    }

    /// Whether program `t` may use an interface program `i` provides.
    pub fn is_client_of(&self, t: usize, i: usize) -> bool {
        self.agents[i].prog.provides.iter().any(|s| self.agents[t].may_use(s))
    }
}

/// Carve a chunk of `2^bits` bytes from the pool into a new Studio slot.
pub fn carve(k: &dyn Kernel, pool: &mut Pool, slots: &RefCell<Slots>, bits: u8) -> Result<u64, Error> {
    pool.chunk(bits, |untyped, bits| {
        let s = slots.borrow_mut().alloc().ok_or(Error::NotEnoughMemory)?;
        k.retype(untyped, ObjectType::Untyped, bits as u64, s).inspect_err(|_| {
            slots.borrow_mut().free(s);
        })?;
        Ok(s)
    })
}

pub fn encoded_len<T: serde::Serialize>(v: &T) -> usize {
    let mut buf = [0u8; MAX_PAYLOAD];
    postcard::to_slice(v, &mut buf).map_or(usize::MAX, |b| b.len())
}

/// As many items as fit one reply.
pub fn fitting<T: serde::Serialize>(mut v: Vec<T>) -> Vec<T> {
    while !v.is_empty() && encoded_len(&v) > MAX_PAYLOAD {
        v.pop();
    }
    v
}
