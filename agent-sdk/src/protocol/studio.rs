//! Studio's interface (`studio`): the name service, memory, reports, and — for programs with the
//! `admin` privilege — administration of agents. Which caller may ask which method of whom is
//! Studio's authorisation table (`docs/studio.md`).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = super::system::STUDIO_INTERFACE;

super::methods! {
    /// `Lookup` → `u64` slot: a badged capability to the named interface, put in the caller's CNode.
    LOOKUP = 0: Lookup => u64;
    /// `()` → `MemInfo` of the caller.
    MY_MEMORY = 1: () => MemInfo;
    /// `u64` pages → `u64` new heap end: more heap from the caller's own quota.
    GROW_HEAP = 2: u64 => u64;
    /// `String` → `()`: a report for Studio's report log (not its decision log). Studio
    /// attributes it to the caller by its badge, replaces control characters, keeps at most
    /// [`REPORT_MAX_CHARS`] characters, and drops (counting them) the
    /// reports of a program over its budget ([`REPORT_BUDGET`]); the
    /// answer is `()` either way.
    REPORT = 3: String => ();
    /// `u64` status → never answers: the program has ended (the runtime sends it when `run`
    /// returns); Studio reclaims everything and applies the restart policy.
    EXIT = 4: u64 => ();
    /// `()` → `u64`: the caller's `seed` from the system description (0: none given). Scenario
    /// programs choose what they do from it (`ozone_agent_sdk::scenario::my_seed`).
    MY_SEED = 5: () => u64;
    // Administration (`admin` privilege).
    /// `u32` first index → `Vec<AgentInfo>` (as many as fit; ask again from the next index).
    LIST = 8: u32 => AgentList;
    /// `String` agent → `Vec<CapInfo>`.
    CAPS = 9: String => Vec<CapInfo>;
    /// `Grant` → the slot of the capability in the agent's CNode, or `None` if the agent or the
    /// interface's server is not running: the grant is recorded either way (and logged), and the
    /// agent may look the interface up once both run.
    GRANT = 10: Grant => Option<u64>;
    /// `Grant` (same shape) → `()`: delete the agent's capability to the interface.
    REVOKE = 11: Grant => ();
    /// `String` agent → `()`: stop it, revoke everything, reclaim its memory.
    KILL = 12: String => ();
    /// `String` agent → `u64` id: start it (again).
    START = 13: String => u64;
    /// `u32` first sequence number → `Vec<LogEntry>` (as many as fit).
    LOG = 14: u32 => LogPage;
    /// `()` → `SystemMemory`.
    MEMORY = 15: () => SystemMemory;
    /// `u8` status → never answers: the system powers off (0 = success).
    SHUTDOWN = 16: u8 => ();
    /// `String` agent → `Telemetry`.
    TELEMETRY = 17: String => Telemetry;
    /// `u32` first sequence number → `ReportPage`: programs' reports (as many as fit) and the
    /// count of what each program had dropped.
    REPORTS = 18: u32 => ReportPage;
    // `vspaces` privilege.
    /// `u64` client badge → `u64` slot: a copy of that program's address-space capability.
    VSPACE_OF = 24: u64 => u64;
    // `profiles` privilege. The shaper holds no thread capability of anyone: Studio reads and
    // changes programs' kernel profiles for it, on their own threads, within the rules of its
    // table (`docs/studio.md`).
    /// `ShapeAsk` → `()`: may program `caller` do `op` to the program named `target` through the
    /// shaper? Studio answers by [`may_shape`] and logs every refusal;
    /// `Denied` if not. Only the shaper asks: the `shaper` interface's `PROFILE`, `ENFORCE` and
    /// `LEARN` are Studio's to allow, the shaper carries them out.
    MAY_SHAPE = 26: ShapeAsk => ();
    /// `u64` program id → [`ThreadProfile`]: the program's name, whether it is a server, which
    /// run of it this is, its thread's kernel counters and syscall profile. `NotFound` past the
    /// last program, `Busy` if it is not running.
    PROFILE_OF = 28: u64 => ThreadProfile;
    /// [`SetProfile`] → `()`: set the `allowed` mask of an agent's thread (this ends a learning
    /// window). Never another server's, never the caller's, never wider than the mask in force
    /// (unless a relearn was allowed: see `ARM_PROFILE`); `Busy` if that
    /// run of the program is no longer running.
    SET_PROFILE = 29: SetProfile => ();
    /// [`ArmProfile`] → `()`: arm an agent's learning window: `allowed` for `learn` more
    /// syscalls, then the kernel narrows `allowed` to what the thread used. Same scope as
    /// `SET_PROFILE`; `allowed` wider than the mask in force only once after Studio allowed a
    /// relearn of that run of the program (`MAY_SHAPE` with [`ShapeOp::Learn`], asked for an
    /// `admin` program).
    ARM_PROFILE = 30: ArmProfile => ();
    // The program that provides `secmem` only.
    /// [`Fund`] → `()`: pay the secure memory server for memory it makes for a
    /// client, from that client's own quota. Studio retypes an untyped of `2^order` pages from the
    /// client's memory chunk (counted in its quota like everything else the client has) straight
    /// into slot `slot` of the server's CNode, so it goes when the client stops. `Denied` unless
    /// the caller provides `secmem` and the client is another running program that may use it;
    /// `InvalidArgument` for an order above [`MAX_FUND_ORDER`] or a slot
    /// outside the server's own range; `QuotaExceeded` when the client's quota has no room.
    FUND = 27: Fund => ();
    /// `()` → `u32`, the sequence number of Studio's next decision; for the program with the
    /// `serial` device (the console server) only: from now on Studio no longer prints its
    /// decisions through the kernel's debug channel but signals [`LOG_SIGNAL`]
    /// on the console's notification after each, and the console pulls them with `LOG` and prints
    /// them as `[studio] ...` between the shell's lines. Studio prints them itself again whenever
    /// that program is not running.
    FOLLOW_LOG = 31: () => u32;
    // `profiles` privilege: the shaper's control of servers' method profiles.
    /// `Option<String>` interface → `Vec<Shaped>`: the interfaces of the caller's `uses` (the
    /// one named, or all of them) and who provides them; Studio signals
    /// [`CONTROL_SIGNAL`](crate::protocol::shaper::CONTROL_SIGNAL) on each running provider's
    /// notification, and the server then pulls the caller's profile-control requests
    /// (`shaper::method::PULL`). `Denied` for an interface not in the caller's `uses`. A signal
    /// never blocks: Studio and the caller never wait for a server.
    SHAPED = 32: Option<String> => Vec<Shaped>;
    /// Program id → [`ClientInfo`]: what the system description says about a client of the
    /// caller (a program that may use an interface the caller provides) that the caller needs to
    /// serve it: its name, the PCI devices it may claim, its store quota, its network rules.
    /// Each of the last three only to a caller that provides the interface it is about
    /// (`devices`, `store`, `net`); to others it reads as none. `Denied` for a program that is
    /// not the caller's client, `NotFound` for no such program.
    CLIENT = 33: u64 => ClientInfo;
    /// Program name → [`WatchReport`]: what Studio's watch knows of a running agent's behaviour
    /// (the shell's `studio explain`). Needs `admin`; `NotFound` for no such program, `Busy` for
    /// one not running.
    WATCH = 34: String => WatchReport;
    /// Program name → `()`: a human accepts the behaviour Studio's watch found anomalous (the
    /// shell's `studio allow`): the windows of its anomalous stretch are accepted as normal for
    /// this run, its response goes back to none (a throttled priority restored, a suspended
    /// thread resumed; what was revoked stays revoked). Needs `admin`; `NotFound`, `Busy` for a
    /// program neither running nor suspended.
    ALLOW = 35: String => ();
    /// Program name → `()`: let an agent the watch suspended run again (the shell's `studio
    /// resume`); it stays at `revoke`, and further anomalies suspend it again. Needs `admin`;
    /// `Busy` for a program that is not suspended.
    RESUME = 36: String => ();
    // `clients` privilege: a server's word on its clients.
    /// [`Refused`] → `()`: the caller (a server) refused a request of its client `client` — the
    /// method profile or the server's guard refused it, its label named no method, or it did not
    /// decode. Studio adds it to the client's events after the client's Call that carried
    /// `label`, and only there: an event whose Call is not among the client's records (none
    /// with that label, or each already answered by an event) is dropped. `Denied` unless the
    /// caller has `clients` and `client` may use an interface the caller provides;
    /// `InvalidArgument` for a code that is no refusal. [`rpc::Server`](crate::rpc::Server)
    /// sends them itself (within a budget).
    REFUSED = 37: Refused => ();
    /// [`Follow`] → `()`: the shell's `studio watch AGENT`: for the next `seconds` (at most
    /// [`MAX_FOLLOW_SECONDS`]) Studio notes the agent's scores in its log once a second when
    /// they changed (`watch NAME live: ...`; the console prints them as they come), at most 32
    /// lines a follow (the decision log keeps 256), and says when it stops (the time is up, the
    /// lines are used up, the run ended). One agent is followed at a time: a new follow replaces
    /// the last; `seconds` 0 ends the follow of that agent (not another's). Needs `admin`; `NotFound` for no such
    /// program, `Busy` for one not running, `InvalidArgument` for more than
    /// [`MAX_FOLLOW_SECONDS`].
    FOLLOW = 38: Follow => ();
}

/// The request of [`method::FOLLOW`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follow {
    /// The agent's name.
    pub agent: String,
    /// For how long; 0: no longer.
    pub seconds: u32,
}

/// The longest [`method::FOLLOW`] (ten minutes).
pub const MAX_FOLLOW_SECONDS: u32 = 600;

/// The request of [`method::REFUSED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// The badge the client's request came with: its program id and run ([`client_badge`]; a
    /// word about an earlier run than the client's current one is kept nowhere; a badge
    /// without run bits is taken as the current run's).
    pub client: u64,
    /// The wire label of the client's request, as the server received it.
    pub label: u64,
    /// The server's answer: `ServiceError::Denied`, `UnknownMethod` or `BadRequest`.
    pub code: u16,
}

/// The answer of [`method::WATCH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchReport {
    /// Whether the program is traced (agents are, when the description traces).
    pub traced: bool,
    /// Events of this run read from its trace, and dropped by the kernel (its ring was full).
    pub read: u64,
    pub dropped: u64,
    /// Events of its warm-up learned so far, and how many the warm-up takes.
    pub learned: u64,
    pub warmup: u64,
    /// Anomalous stretches of this run so far, and whether it is in one now.
    pub stretches: u64,
    pub anomalous: bool,
    /// The watch's last lines about this run (at most 8, oldest first).
    pub lines: Vec<String>,
    /// Whether Studio's behaviour model judges it too; its windows judged this run.
    pub model: bool,
    pub windows: u64,
    /// The model's last frame score, the threshold it met and the run's highest frame score,
    /// in thousandths.
    pub score: u32,
    pub threshold: u32,
    pub peak: u32,
    /// The model's anomalous stretches of this run so far, and whether it is in one now.
    pub model_stretches: u64,
    pub model_anomalous: bool,
    /// The graded response reached this run (`"normal"`, `"alert"`, ... `"kill"`), and the
    /// highest the description lets Studio carry out for it.
    pub level: String,
    pub limit: String,
    /// Its requests other servers refused and told Studio of ([`method::REFUSED`]) that became
    /// events of this run, and those told of with no Call of its to go after (dropped).
    pub refused: u64,
    pub refusals_unplaced: u64,
}

impl WatchReport {
    /// The scores in one line (`studio watch`, and Studio's live lines): the model's last frame
    /// score, threshold and highest, windows judged and the response reached; without a model,
    /// what stide says.
    pub fn scores(&self) -> String {
        if self.model {
            alloc::format!(
                "frame score {} (threshold {}, highest {}); {} windows judged; response {} (up to {})",
                thousandths(self.score),
                thousandths(self.threshold),
                thousandths(self.peak),
                self.windows,
                self.level,
                self.limit
            )
        } else {
            let warm = if self.learned < self.warmup { "warming up" } else { "warmed up" };
            let now = if self.anomalous { "anomalous now" } else { "normal now" };
            alloc::format!(
                "{} events read; stide {warm}, {} anomalous stretches, {now} (no model)",
                self.read,
                self.stretches
            )
        }
    }
}

/// A value in thousandths as a decimal (`823` → `0.823`).
pub fn thousandths(x: u32) -> String {
    alloc::format!("{}.{:03}", x / 1000, x % 1000)
}

/// The answer of [`method::CLIENT`]: the description's word on one program, for its servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub name: String,
    /// The PCI device kinds it may claim (the description's `pci`).
    pub pci: Vec<String>,
    /// Its quota in the storage server, in KiB (`store_kib`; 0: none).
    pub store_kib: u32,
    /// Ports it may listen on (`net_listen`), as written in the description.
    pub net_listen: Vec<String>,
    /// Peers it may reach (`net_connect`), as written in the description.
    pub net_connect: Vec<String>,
    /// It has the `admin` privilege (servers show it system-wide views: the store's health and
    /// every namespace's use, every program's sockets).
    pub admin: bool,
    /// Which start of the program this is (from 1; 0 before its first): a server drops what it
    /// held for an earlier run (open transactions, sockets) when it sees a new one.
    pub run: u32,
}

/// One interface of [`method::SHAPED`]'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shaped {
    pub interface: String,
    /// The id (badge) of the server that provides it; 0 if no server of the description does.
    pub provider: u64,
    /// The provider runs, and was signalled.
    pub signalled: bool,
}

/// The largest grant [`method::FUND`] makes: `2^10` pages (4 MiB).
pub const MAX_FUND_ORDER: u8 = 10;

/// Request of [`method::FUND`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fund {
    /// The client's program id (the badge it calls the server with).
    pub client: u64,
    /// `2^order` pages.
    pub order: u8,
    /// An empty slot of the server's CNode, at or above the slots Studio fills itself (256).
    pub slot: u64,
}

/// The reply to [`method::PROFILE_OF`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadProfile {
    pub name: String,
    pub server: bool,
    /// Which start of the program this is (from 1; every start counts): a change names the run
    /// it means, so it never reaches a later run by mistake.
    pub run: u32,
    /// Syscalls its thread made (this run).
    pub syscalls: u64,
    /// Operations the kernel denied it (this run).
    pub denied: u64,
    /// The kernel profile: every operation kind it tried, denied ones too.
    pub used: u64,
    /// The kernel profile: the operation kinds it may use.
    pub allowed: u64,
    /// Its learning window: syscalls still learned (`None`: no window armed, or over).
    pub window: Option<u64>,
}

/// The request of [`method::SET_PROFILE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetProfile {
    pub id: u64,
    pub run: u32,
    pub allowed: u64,
}

/// The request of [`method::ARM_PROFILE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmProfile {
    pub id: u64,
    pub run: u32,
    pub allowed: u64,
    pub learn: u64,
}

/// What a program asks the shaper to do to a program's syscall profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShapeOp {
    /// Read it (`PROFILE`).
    Profile,
    /// End its warm-up window now (`ENFORCE`).
    Enforce,
    /// Put it back into learning (`LEARN`).
    Learn,
    /// Read every agent's enforced profile and restore those an earlier boot kept (`SAVED`,
    /// `RESTORE`; the shaper names the target [`KEEP_TARGET`]).
    Keep,
}

/// The target the shaper names when it asks Studio about [`ShapeOp::Keep`]: no program's name
/// (names have no spaces), so Studio's log reads "keeping the syscall profiles of every agent".
pub const KEEP_TARGET: &str = "every agent";

impl ShapeOp {
    /// The privilege a program needs to do it to another program.
    pub const fn privilege(self) -> super::system::Privilege {
        match self {
            ShapeOp::Profile | ShapeOp::Enforce | ShapeOp::Learn => super::system::Privilege::Admin,
            ShapeOp::Keep => super::system::Privilege::Keeper,
        }
    }
}

impl core::fmt::Display for ShapeOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ShapeOp::Profile => "reading the profile",
            ShapeOp::Enforce => "enforcing the profile",
            ShapeOp::Learn => "relearning the profile",
            ShapeOp::Keep => "keeping the syscall profiles",
        })
    }
}

/// The request of [`method::MAY_SHAPE`]: `caller` is the badge the shaper saw (a program id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeAsk {
    pub caller: u64,
    pub target: String,
    pub op: ShapeOp,
}

/// Who may do what to a syscall profile through the shaper: the rule Studio applies to
/// [`method::MAY_SHAPE`]. `caller` and `target` are program names, `privileged` whether the
/// caller holds the privilege the operation needs ([`ShapeOp::privilege`]). Returns the rule that
/// refuses, for the log.
///
/// - Every program may read its own profile.
/// - No program changes its own mode (relearning would reopen its window; an agent that wants a
///   tighter profile has nothing to ask for).
/// - Reading or changing another program's profile needs `admin`: a profile tells what a program
///   does, and changing one lifts or imposes restrictions on it.
/// - Keeping every agent's profile across boots (reading them all, restoring them at the next
///   boot) needs `keeper`, whatever the target names.
pub fn may_shape(caller: &str, privileged: bool, target: &str, op: ShapeOp) -> Result<(), &'static str> {
    match op {
        ShapeOp::Keep if privileged => Ok(()),
        ShapeOp::Keep => Err("keeping syscall profiles across boots needs the `keeper` privilege"),
        ShapeOp::Profile if caller == target => Ok(()),
        ShapeOp::Enforce | ShapeOp::Learn if caller == target => Err("no program changes its own syscall profile"),
        _ if privileged => Ok(()),
        ShapeOp::Profile => Err("reading another program's syscall profile needs the `admin` privilege"),
        ShapeOp::Enforce | ShapeOp::Learn => {
            Err("changing another program's syscall profile needs the `admin` privilege")
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lookup {
    pub interface: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub agent: String,
    pub interface: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentState {
    /// Known from the description, never started or killed.
    Stopped,
    Running,
    /// Ended by a fault (and not restarted).
    Faulted,
    /// Returned from its entry point.
    Exited,
    /// Its thread stopped by Studio's watch (a graded response), its memory kept, until a human
    /// allows or resumes it, or the time runs out and it is killed.
    Suspended,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: u64,
    pub name: String,
    pub state: AgentState,
    pub server: bool,
    pub priority: u8,
    pub quota: u64,
    /// Bytes of its quota in use (kernel objects and pages made for it).
    pub used: u64,
    pub restarts: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapInfo {
    pub slot: u64,
    /// What it is: `studio`, `interface echo`, `serial ports`, ...
    pub what: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub seq: u32,
    pub text: String,
}

/// The most characters of a report Studio keeps (the rest is cut, marked with `~`).
pub const REPORT_MAX_CHARS: usize = 160;

/// Report lines a program has in hand: each report (and each refusal Studio logs for it) takes
/// one, each decision Studio records of its own gives every program one back, up to this many.
/// Over budget, reports are dropped and counted.
pub const REPORT_BUDGET: u32 = 32;

/// A program's report, as Studio recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEntry {
    pub seq: u32,
    /// The reporting program's name, from its badge (never from the text).
    pub from: String,
    /// The text, without control characters, at most [`REPORT_MAX_CHARS`] characters.
    pub text: String,
}

/// What a program lost to the limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub from: String,
    /// Its reports dropped (over budget) since Studio started.
    pub reports: u64,
    /// Studio's refusals of its requests that were counted but not logged (over budget).
    pub refusals: u64,
}

/// The reply to [`method::REPORTS`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPage {
    /// Every program that had something dropped.
    pub dropped: Vec<Dropped>,
    pub entries: Vec<ReportEntry>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemInfo {
    pub quota: u64,
    pub used: u64,
    pub heap_base: u64,
    pub heap_end: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemMemory {
    /// All memory Studio holds for programs, in bytes.
    pub total: u64,
    /// Of it, free (not in any program's quota), as the kernel's untyped capabilities report it.
    pub free: u64,
    /// Of quotas handed out, bytes in use.
    pub used_by_programs: u64,
}

/// A program's kernel counters, as `TELEMETRY` sends them: the ABI's type, defined once.
pub type Telemetry = ozone_abi::telemetry::ThreadCounters;

/// Where a client's badge carries its run: Studio badges each capability a program gets to a
/// server's interface with the program's id and the low 16 bits of its run (bits 16–31, below
/// Studio's fault bit and every signal bit), so that a server's word about a request names the
/// run that made it ([`method::REFUSED`]: a word about an earlier run is kept nowhere).
/// [`rpc::Server`](crate::rpc::Server) hands its handler the program id alone
/// ([`program_of`]): to a server a client is its program, whichever run.
pub const RUN_SHIFT: u32 = 16;
/// The bits of a client badge that hold its run.
pub const RUN_MASK: u64 = 0xffff << RUN_SHIFT;

/// The badge of program `id`'s capabilities to servers in its run `run` (runs count from 1):
/// the run's bits are never 0 for a run (run 65,535 is followed by bits 1 again), so that 0
/// always means a badge without a run.
pub const fn client_badge(id: u64, run: u32) -> u64 {
    let bits = if run == 0 { 0 } else { (run - 1) % 0xffff + 1 };
    id | (bits as u64) << RUN_SHIFT
}

/// The program id of a client badge (any other badge unchanged: signal and fault bits lie
/// above the run's).
pub const fn program_of(badge: u64) -> u64 {
    badge & !RUN_MASK
}

/// The run bits of a client badge (0: a badge without them; else the run's, counted modulo
/// 65,535 from 1).
pub const fn run_of(badge: u64) -> u32 {
    ((badge & RUN_MASK) >> RUN_SHIFT) as u32
}

/// The badge bit of the signal Studio sends the console server's notification when it has a new
/// decision for it to print ([`method::FOLLOW_LOG`]).
///
/// Notification badges lie above every program id (programs' badges are their ids, at most
/// [`MAX_PROGRAMS`](super::system::MAX_PROGRAMS)) and Studio's fault bit (bit 32), so the console,
/// which receives its clients' requests and its notification's signals in one `Recv`, can never
/// take a client's message for a signal.
pub const LOG_SIGNAL: u64 = 1 << 40;

/// The badge the console server's serial interrupt (IRQ 4) signals on its notification (Studio
/// routes the line through a capability with this badge).
pub const SERIAL_SIGNAL: u64 = 1 << 41;

/// Studio's replies to `LIST` and `LOG` fit one message; callers page through with indices.
pub type AgentList = Vec<AgentInfo>;
pub type LogPage = Vec<LogEntry>;

#[cfg(test)]
mod tests {
    use super::{LOG_SIGNAL, SERIAL_SIGNAL, ShapeOp, client_badge, may_shape, program_of, run_of};

    #[test]
    fn own_profile_is_readable_never_changeable() {
        for admin in [false, true] {
            assert_eq!(may_shape("a", admin, "a", ShapeOp::Profile), Ok(()));
            assert!(may_shape("a", admin, "a", ShapeOp::Enforce).is_err());
            assert!(may_shape("a", admin, "a", ShapeOp::Learn).is_err());
        }
    }

    #[test]
    fn another_programs_profile_needs_admin() {
        for op in [ShapeOp::Profile, ShapeOp::Enforce, ShapeOp::Learn] {
            assert_eq!(may_shape("console", true, "victim", op), Ok(()));
            let refused = may_shape("hostile", false, "victim", op).unwrap_err();
            assert!(refused.contains("needs the `admin` privilege"), "{op:?}: {refused}");
        }
        // Names that differ only in case or by a prefix are other programs.
        assert!(may_shape("victim", false, "victim-2", ShapeOp::Profile).is_err());
        assert!(may_shape("victim", false, "Victim", ShapeOp::Profile).is_err());
    }

    #[test]
    fn keeping_profiles_needs_the_keeper_privilege_whatever_the_target() {
        for target in ["*", "journal", "victim", ""] {
            assert_eq!(may_shape("journal", true, target, ShapeOp::Keep), Ok(()));
            let refused = may_shape("journal", false, target, ShapeOp::Keep).unwrap_err();
            assert!(refused.contains("needs the `keeper` privilege"), "{target}: {refused}");
        }
        assert_eq!(ShapeOp::Keep.privilege(), super::super::system::Privilege::Keeper);
        for op in [ShapeOp::Profile, ShapeOp::Enforce, ShapeOp::Learn] {
            assert_eq!(op.privilege(), super::super::system::Privilege::Admin);
        }
    }

    /// A client badge holds the program id and its run's low 16 bits apart, below Studio's
    /// fault bit (bit 32) and every signal bit, and `program_of` leaves every other badge alone.
    #[test]
    fn client_badges_keep_the_id_and_the_run_apart_from_every_other_bit() {
        use crate::protocol::shaper::{CONTROL_SIGNAL, PULL_BADGE};
        use crate::protocol::system::MAX_PROGRAMS;
        use crate::protocol::timer::{PIT_SIGNAL, STUDIO_TICK, TIMER_SIGNAL};
        let signals =
            [LOG_SIGNAL, SERIAL_SIGNAL, CONTROL_SIGNAL, PULL_BADGE, TIMER_SIGNAL, PIT_SIGNAL, STUDIO_TICK, 1 << 32];
        for id in 1..=MAX_PROGRAMS as u64 {
            for run in [1u32, 2, 0xfffe, 0xffff, 0x1_0000, 0x1_0001, u32::MAX] {
                let b = client_badge(id, run);
                assert_eq!(program_of(b), id, "{id} {run}");
                assert!(run_of(b) != 0, "a run always has run bits: {id} {run}");
                assert!(b < 1 << 32 && signals.iter().all(|s| b & s == 0), "{b:#x}");
            }
            assert_eq!(client_badge(id, 0), id);
        }
        // Consecutive runs differ, across the wrap of the 16 bits too.
        for run in [1u32, 2, 0xfffe, 0xffff, 0x1_0000, 0x1_0001, 0x2_0000, u32::MAX - 1] {
            assert_ne!(run_of(client_badge(5, run)), run_of(client_badge(5, run + 1)), "{run}");
        }
        assert_eq!(run_of(client_badge(5, 0xffff)), 0xffff);
        assert_eq!(run_of(client_badge(5, 0x1_0000)), 1, "the count goes on from 1, never 0");
        for s in signals {
            assert_eq!(program_of(s | 7), s | 7, "a signal or fault badge is no client's");
        }
    }
}
