//! The syscall shaper's protocols: the `shaper` interface (what the shell asks), the **profile
//! control** method every server answers (what the shaper tells servers), and helpers that turn
//! profile masks into names.
//!
//! An agent's *syscall profile* has two halves:
//!
//! - **kernel operations**, kept by the kernel per thread (`ozone_abi::profile`): a `used` mask the
//!   kernel ORs every syscall's bits into (one bit per IPC syscall kind, one per kind of kernel
//!   object invoked) and an `allowed` mask; a syscall outside `allowed` is denied (the thread's
//!   fault handler, Studio, logs it and resumes the thread with `Error::Denied`);
//! - **server methods**, kept by every server's [`crate::rpc::Server`] per client badge: a `used`
//!   and an `allowed` mask of method numbers (methods are below 64). A request outside `allowed`
//!   is answered [`ServiceError::Denied`](super::ServiceError::Denied) without reaching the
//!   handler, counted, and reported to Studio (the first time per client and method).
//!
//! The shaper (`servers/shaper`) learns both during an agent's warm-up window of
//! [`WARMUP_SYSCALLS`] syscalls, then enforces them: kernel `allowed` = `used`, and a
//! [`Control::Enforce`] to every server interface it shapes, which the server pulls
//! ([`CONTROL_SIGNAL`]).
//!
//! Method numbers travel permuted per instance ([`super::Permutation`]) like every method; the
//! SDK resolves them at run time, so profiles hold the *unpermuted* numbers of the protocol
//! modules and mean the same on every instance.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "shaper";

/// The badge bit of the signal that tells a server the shaper has profile-control requests for
/// it: Studio signals it on the server's notification when the shaper asks
/// ([`studio::method::SHAPED`](super::studio::method::SHAPED)). The server's
/// [`crate::rpc::Server`] then pulls them ([`method::PULL`]) through the capability to the
/// shaper Studio put in its [`slot::SHAPER`](super::start::slot::SHAPER), carries them out on its
/// clients' profiles and sends the results with its next pull.
///
/// **The shaper never calls a server.** It only signals (through Studio) and answers; a server
/// that never pulls leaves its own clients' method profiles unenforced and nothing else: the
/// shaper, and the shell that asks it, never wait for it. Above every program id, like
/// [`studio::LOG_SIGNAL`](super::studio::LOG_SIGNAL).
pub const CONTROL_SIGNAL: u64 = 1 << 42;

/// The badge bit of a server's capability to pull ([`slot::SHAPER`](super::start::slot::SHAPER)):
/// Studio mints it with `PULL_BADGE | id`, which no client's capability has (a client's badge
/// is its id). The shaper takes [`method::PULL`] on it and nothing else, so the capability makes
/// no server a client of the shaper.
pub const PULL_BADGE: u64 = 1 << 43;

/// The warm-up window when the start information gives none: an agent's profile is enforced
/// once its thread has made this many syscalls (at the shaper's next look, which comes when the
/// system is idle). Studio passes the system description's `[system] shaper_warmup` (same
/// default) to the shaper in `StartInfo::shaper_warmup`.
pub const WARMUP_SYSCALLS: u64 = 64;

super::methods! {
    /// `String` agent → [`Profile`]. `NotFound` if the shaper has never seen
    /// it run, `Busy` if it is not running (as Studio's methods answer).
    PROFILE = 0: String => Profile;
    /// `String` agent → [`Profile`]: end its warm-up now and enforce what it has
    /// used. A program cannot enforce or relearn its own profile (`Denied`).
    ENFORCE = 1: String => Profile;
    /// `String` agent → [`Profile`]: back to learning — the kernel allows it
    /// everything again, servers forget its methods, a new warm-up window starts.
    LEARN = 2: String => Profile;
    /// `()` → [`Mode`]: the caller's own mode (a harmless probe).
    STATUS = 3: () => Mode;
    /// `()` → `()`: look at every agent now (end warm-up windows that are over, notice stops and
    /// restarts). From unshaped programs only — the shaper's ticker, which calls it whenever it
    /// runs: at the lowest priority, that is when the system is idle. Others get `Denied`.
    TICK = 4: () => ();
    /// [`Pull`] → `Option<Control>`: from the server providing `interface` only (the caller's
    /// badge must be its provider's id, `Denied` otherwise): take the result of the previous
    /// request it was given (`done`), and hand it the next one of that interface, `None` when
    /// there are no more. The SDK's server loop calls it on [`CONTROL_SIGNAL`].
    PULL = 5: Pull => Option<Control>;
    /// `u32` index → [`SavedPage`]: the index-th profile worth keeping across boots (`None`
    /// past the last): every agent whose profile is enforced, and the profiles restored for
    /// agents not seen running yet; with a digest of the whole list, so that a reader paging
    /// through it sees when it changed meanwhile. From a program Studio lets keep profiles
    /// (`MAY_SHAPE` with [`ShapeOp::Keep`](crate::protocol::studio::ShapeOp::Keep): the `keeper`
    /// privilege) only, `Denied` otherwise. The journal pages through them and keeps them in the
    /// store.
    SAVED = 6: u32 => SavedPage;
    /// [`Kept`] → [`Restored`]: a profile an earlier boot kept. Same leave as `SAVED`. It applies
    /// to the agent of that name only if this run of the shaper has not enforced, relearned or
    /// restored it yet (`Busy` otherwise: what this boot learned or was told wins), and only if
    /// it names exactly the interfaces this shaper shapes (`InvalidArgument`: the system
    /// changed, the agent learns again); never to a server or the shaper (`InvalidArgument`).
    /// A running agent is enforced at once, another when it starts ([`Restored`]); `NoMemory`
    /// when [`MAX_PENDING`] restores already wait for their agents. It only ever narrows: an
    /// agent whose profile is restored is one that would otherwise still be learning, allowed
    /// everything.
    RESTORE = 7: Kept => Restored;
}

/// The most restored profiles that wait for their agents to start.
pub const MAX_PENDING: usize = super::system::MAX_PROGRAMS;

/// An agent's enforced profile, as kept across boots ([`method::SAVED`], [`method::RESTORE`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub agent: String,
    /// The kernel operations allowed (`ozone_abi::profile` bits).
    pub kernel: u64,
    /// Per shaped interface, the methods allowed; `None` where the shaper does not know them
    /// (the server had not reported them, or restarted before it did): restored, that interface
    /// fails closed, as for a server that restarted before it reported: enforced with what the
    /// agent has used when the server takes the request (at its start: nothing).
    pub methods: Vec<(String, Option<u64>)>,
}

impl Kept {
    /// A digest of `list` (FNV-1a over every field), to tell one list from another.
    pub fn digest(list: &[Kept]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        for k in list {
            eat(&(k.agent.len() as u64).to_le_bytes());
            eat(k.agent.as_bytes());
            eat(&k.kernel.to_le_bytes());
            for (interface, mask) in &k.methods {
                eat(&(interface.len() as u64).to_le_bytes());
                eat(interface.as_bytes());
                match mask {
                    Some(m) => {
                        eat(&[1]);
                        eat(&m.to_le_bytes());
                    }
                    None => eat(&[0]),
                }
            }
            eat(&[0xff]);
        }
        h
    }
}

/// The answer of [`method::SAVED`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedPage {
    /// [`Kept::digest`] of the whole list as it stands.
    pub digest: u64,
    pub kept: Option<Kept>,
}

/// What [`method::RESTORE`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restored {
    /// The agent runs: its profile is enforced now.
    Now,
    /// The agent is not running: its profile is enforced when it starts.
    AtStart,
}

/// Request of [`method::PULL`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pull {
    /// The interface whose requests the caller pulls (one it provides).
    pub interface: String,
    /// The outcome of the request the previous pull handed it, if any.
    pub done: Option<Applied>,
}

/// What a server made of one [`Control`] request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The client the request was about.
    pub badge: u64,
    /// That client's profile afterwards; `None` if the server refused the request (a badge it
    /// keeps no profile for).
    pub profile: Option<MethodProfile>,
}

/// Where an agent's profile stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Not shaped: a server, or the shaper itself.
    Unshaped,
    /// Not running (never started, stopped, or between a stop and its restart).
    NotRunning,
    /// In its warm-up window: every operation is allowed and recorded.
    Learning,
    /// Its profile is enforced.
    Enforcing,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Unshaped => "unshaped",
            Mode::NotRunning => "not running",
            Mode::Learning => "learning",
            Mode::Enforcing => "enforcing",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's profile, as `PROFILE` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub agent: String,
    pub id: u64,
    pub mode: Mode,
    /// Syscalls its thread has made (kernel telemetry), and how many were denied.
    pub syscalls: u64,
    pub denied: u64,
    /// The warm-up window, in syscalls from `window_start`.
    pub warmup: u64,
    pub window_start: u64,
    /// Kernel operations (`ozone_abi::profile` bits; [`KernelOps`] names them).
    pub kernel_used: u64,
    pub kernel_allowed: u64,
    /// One entry per interface the shaper shapes.
    pub interfaces: Vec<InterfaceProfile>,
}

/// An agent's methods of one interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceProfile {
    pub interface: String,
    /// `None` if the server did not answer (not running, or refused).
    pub methods: Option<MethodProfile>,
}

/// A profile-control request ([`method::PULL`]'s answer). Badges are program ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// Read the profile.
    Get { badge: u64 },
    /// Start enforcing: `allowed = used`. `name` (the agent's) is used in reports.
    Enforce { badge: u64, name: String },
    /// Enforce exactly `allowed` (the shaper restores a profile this way after the server
    /// restarted and forgot it).
    Set { badge: u64, allowed: u64, name: String },
    /// Back to learning: everything allowed, `used` and the denial counts cleared (the count of
    /// the client's requests that refills the server's refusal budget is kept).
    Learn { badge: u64 },
}

impl Control {
    /// The client the request is about.
    pub fn badge(&self) -> u64 {
        match self {
            Control::Get { badge } | Control::Enforce { badge, .. } | Control::Set { badge, .. } => *badge,
            Control::Learn { badge } => *badge,
        }
    }
}

/// One client's profile in one server: what a server reports after each [`Control`] request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodProfile {
    /// Methods called (denied calls included).
    pub used: u64,
    /// Methods allowed (all while learning).
    pub allowed: u64,
    pub enforcing: bool,
    /// Requests denied since enforcing began.
    pub denied: u32,
}

/// Kernel profile bits and their names (the bit indices of `ozone_abi::profile`).
pub const KERNEL_OPS: [(u32, &str); 19] = [
    (0, "call"),
    (1, "reply-recv"),
    (2, "send"),
    (3, "nb-send"),
    (4, "recv"),
    (5, "reply"),
    (6, "yield"),
    (7, "nb-recv"),
    (8, "call-interruptible"),
    (16, "untyped"),
    (17, "cnode"),
    (18, "tcb"),
    (19, "paging"),
    (20, "frame"),
    (21, "irq-control"),
    (22, "irq-handler"),
    (23, "io-port-control"),
    (24, "io-port"),
    (25, "telemetry"),
];

/// The name of kernel profile bit `bit`, if it has one.
pub fn kernel_op_name(bit: u32) -> Option<&'static str> {
    KERNEL_OPS.iter().find(|(b, _)| *b == bit).map(|(_, n)| *n)
}

/// Displays a kernel profile mask as names: `call, yield, tcb`; bits without a name as
/// `bit N`; the full mask as `all`, the empty one as `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOps(pub u64);

impl fmt::Display for KernelOps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_mask(f, self.0, |f, bit| match kernel_op_name(bit as u32) {
            Some(n) => f.write_str(n),
            None => write!(f, "bit {bit}"),
        })
    }
}

/// Displays a method mask as numbers: `0, 1, 5`; `all` and `none` as for [`KernelOps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Methods(pub u64);

impl fmt::Display for Methods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_mask(f, self.0, |f, bit| write!(f, "{bit}"))
    }
}

/// Write `mask` as its set bits, each by `one`, separated by `, `; the full mask as `all`, the
/// empty one as `none`.
fn write_mask(
    f: &mut fmt::Formatter<'_>,
    mask: u64,
    one: impl Fn(&mut fmt::Formatter<'_>, u64) -> fmt::Result,
) -> fmt::Result {
    match mask {
        0 => return f.write_str("none"),
        u64::MAX => return f.write_str("all"),
        _ => {}
    }
    for (i, bit) in Bits(mask).enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        one(f, bit)?;
    }
    Ok(())
}

/// The set bits of a mask, lowest first.
#[derive(Clone, Copy, Debug)]
pub struct Bits(pub u64);

impl Iterator for Bits {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as u64;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// The most interfaces the shaper shapes (its own `shaper` included): a [`Profile`] with this
/// many fits one message.
pub const MAX_SHAPED: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_PAYLOAD, decode, encode};
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn masks_display_as_names() {
        assert_eq!(KernelOps(0).to_string(), "none");
        assert_eq!(KernelOps(u64::MAX).to_string(), "all");
        assert_eq!(KernelOps(1 | 1 << 6 | 1 << 18).to_string(), "call, yield, tcb");
        assert_eq!(KernelOps(1 << 7 | 1 << 40).to_string(), "nb-recv, bit 40");
        assert_eq!(Methods(0b1011).to_string(), "0, 1, 3");
        assert_eq!(Methods(1 << 63).to_string(), "63");
        assert_eq!(Methods(0).to_string(), "none");
        assert_eq!(Bits(0b1010_0001).collect::<Vec<_>>(), vec![0, 5, 7]);
    }

    #[test]
    fn kernel_op_names_follow_the_abi() {
        use ozone_abi::profile as p;
        let abi = [
            (p::CALL, "call"),
            (p::REPLY_RECV, "reply-recv"),
            (p::SEND, "send"),
            (p::NB_SEND, "nb-send"),
            (p::RECV, "recv"),
            (p::REPLY, "reply"),
            (p::YIELD, "yield"),
            (p::NB_RECV, "nb-recv"),
            (p::CALL_INTERRUPTIBLE, "call-interruptible"),
            (p::UNTYPED, "untyped"),
            (p::CNODE, "cnode"),
            (p::TCB, "tcb"),
            (p::PAGING, "paging"),
            (p::FRAME, "frame"),
            (p::IRQ_CONTROL, "irq-control"),
            (p::IRQ_HANDLER, "irq-handler"),
            (p::IO_PORT_CONTROL, "io-port-control"),
            (p::IO_PORT, "io-port"),
            (p::TELEMETRY, "telemetry"),
        ];
        assert_eq!(abi.len(), KERNEL_OPS.len());
        for (bit, name) in abi {
            assert_eq!(kernel_op_name(bit), Some(name));
        }
        let named = KERNEL_OPS.iter().fold(0u64, |m, (b, _)| m | p::mask(*b));
        assert_eq!(named, p::IPC | p::OBJECTS, "every bit the ABI defines has a name");
    }

    #[test]
    fn a_full_profile_fits_one_message() {
        let methods = Some(MethodProfile { used: u64::MAX, allowed: u64::MAX, enforcing: true, denied: u32::MAX });
        let name = |n: usize| "x".repeat(n);
        let p = Profile {
            agent: name(24),
            id: 32,
            mode: Mode::Enforcing,
            syscalls: u64::MAX,
            denied: u64::MAX,
            warmup: u64::MAX,
            window_start: u64::MAX,
            kernel_used: u64::MAX,
            kernel_allowed: u64::MAX,
            // Every interface a description could name to the shaper (6 provided per server is
            // the limit per program; the shaper shapes at most MAX_SHAPED).
            interfaces: (0..MAX_SHAPED)
                .map(|i| InterfaceProfile { interface: format!("{}{i}", name(22)), methods })
                .collect(),
        };
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let n = encode(&p, &mut words).unwrap();
        assert_eq!(decode::<Profile>(&words, n).unwrap(), p);
        let c = Control::Set { badge: 32, allowed: u64::MAX, name: name(24) };
        let n = encode(&c, &mut words).unwrap();
        assert_eq!(decode::<Control>(&words, n).unwrap(), c);
    }
}
