//! The shaper's bookkeeping: which programs are agents, where each stands in its warm-up window,
//! what it has been allowed, and the requests of the `shaper` interface. Every effect on the
//! world (Studio, kernel, servers) goes through [`Env`], so the logic runs on the host in tests.
//!
//! The shaper has no timer. [`Shaper::tick`] is one look at every agent; it runs on the `TICK`
//! requests of the shaper's ticker (`src/bin/shaper-tick.rs`), a program at the lowest priority
//! that sends one whenever it gets the CPU — only when everything else is idle. An agent's window
//! therefore ends at the first idle moment after its thread has made
//! [`WARMUP_SYSCALLS`](ozone_agent_sdk::protocol::shaper::WARMUP_SYSCALLS) syscalls.
//!
//! **Servers' method profiles: the shaper never waits for a server.** Its requests to a server
//! ([`Control`]) go into a queue per interface ([`Remote`]); the shaper asks Studio to signal the
//! server ([`Env::signal`]), and the server pulls them (`PULL`, [`Shaper::pulled`]) and sends
//! each outcome back with its next pull. What the shaper shows of a server's methods is what that
//! server last reported. A server that never pulls leaves its own clients' methods unenforced
//! (its clients' kernel profiles are enforced all the same) and holds up nothing else: the shaper
//! keeps serving, and the shell's `profile` answers.
//!
//! Profiles belong to the program, not to one run of it: an agent that restarts after being
//! enforced gets its learned kernel mask again at once (servers keep method profiles per client
//! id, which survives restarts), so a crash cannot reopen the warm-up window. `LEARN` does.
//!
//! **Across boots**: the shaper calls no server, so it keeps nothing on disk itself. A keeper
//! with Studio's leave (`ShapeOp::Keep`: the `keeper` privilege; the journal server) reads the
//! profiles worth keeping (`SAVED`, [`Shaper::kept`]) and keeps them in the store, and at the next
//! boot hands them back (`RESTORE`, [`Shaper::restore`]). A restored profile only narrows: it
//! applies to an agent that this run of the shaper has not enforced, relearned or restored yet
//! (one still learning, allowed everything), and only if it names exactly the interfaces shaped
//! now; an agent not running yet gets it when it starts, before its first syscall.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_abi::profile;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper::{
    Applied, Control, InterfaceProfile, Kept, KernelOps, MAX_PENDING, MethodProfile, Methods, Mode, PULL_BADGE,
    Profile, Pull, Restored, SavedPage,
};
use ozone_agent_sdk::protocol::studio::{KEEP_TARGET, ShapeOp, ThreadProfile};
use ozone_agent_sdk::protocol::system::{MAX_NAME, MAX_PROGRAMS};
use ozone_agent_sdk::rpc::Profiles;

/// Programs not running are asked after again every this many passes.
pub const RETRY_PASSES: u64 = 16;
/// Every this many passes the shaper checks that the servers still enforce what it told them
/// (a server that restarted has forgotten) and tells them again.
pub const RECONCILE_PASSES: u64 = 256;
/// The most requests kept for one server (below what a server takes on one signal,
/// `rpc::MAX_PULLS`): a server that does not pull holds up at most this much of the shaper's
/// memory. Requests past it are dropped (the oldest `Get` first) and counted.
pub const MAX_QUEUED: usize = 128;

/// One run of a program: its id and which start of it (Studio's `PROFILE_OF` says). The shaper
/// holds no thread capability; it names threads this way, and Studio refuses a change that
/// names a run that has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thread {
    pub id: u64,
    pub run: u32,
}

/// What the shaper does to the world.
pub trait Env {
    /// Studio's `PROFILE_OF`: program `id`'s name, whether it is a server, its current run, its
    /// thread's counters and kernel profile. `NotFound` past the last program, `Busy` if it is
    /// not running.
    fn program(&mut self, id: u64) -> Result<ThreadProfile, ServiceError>;
    /// [`Env::program`] for run `t` only: `Busy` if that run has ended.
    fn thread(&mut self, t: Thread) -> Result<ThreadProfile, ServiceError> {
        self.program(t.id).and_then(|p| if p.run == t.run { Ok(p) } else { Err(ServiceError::Busy) })
    }
    /// Kernel telemetry of a thread: (syscalls made, operations denied). An error means that
    /// run of the program has ended.
    fn telemetry(&mut self, t: Thread) -> Result<(u64, u64), ServiceError> {
        self.thread(t).map(|p| (p.syscalls, p.denied))
    }
    /// A thread's kernel profile: (used, allowed).
    fn kernel_profile(&mut self, t: Thread) -> Result<(u64, u64), ServiceError> {
        self.thread(t).map(|p| (p.used, p.allowed))
    }
    /// A thread's learning window: the syscalls it may still make while learning (`None`: no
    /// window armed, or the kernel has ended it).
    fn kernel_window(&mut self, t: Thread) -> Result<Option<u64>, ServiceError> {
        self.thread(t).map(|p| p.window)
    }
    /// Studio's `SET_PROFILE`: set a thread's kernel `allowed` mask (this ends a learning
    /// window); never wider than the mask in force, unless Studio allowed a relearn.
    fn set_kernel_allowed(&mut self, t: Thread, allowed: u64) -> Result<(), ServiceError>;
    /// Studio's `ARM_PROFILE`: arm a thread's learning window: `allowed` for `learn` more
    /// syscalls, then the kernel narrows `allowed` to what the thread used, before its next
    /// syscall is admitted.
    fn arm_kernel(&mut self, t: Thread, allowed: u64, learn: u64) -> Result<(), ServiceError>;
    /// Studio's `SHAPED` for one interface: signal its server that it has requests to pull.
    /// Never blocks, and never waits for the server. Whether the server was signalled (it runs).
    fn signal(&mut self, interface: &str) -> bool;
    /// A line for Studio's decision log.
    fn report(&mut self, text: &str);
    /// Studio's `MAY_SHAPE`: whether program `caller` may do `op` to the program named `target`
    /// (`Denied` if not; Studio logs the refusal with its rule).
    fn may_shape(&mut self, caller: u64, target: &str, op: ShapeOp) -> Result<(), ServiceError>;
}

/// One program of the system, as the shaper knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: u64,
    /// Known once it has been seen running.
    pub name: Option<String>,
    /// Servers (and the shaper itself) are not shaped.
    pub unshaped: bool,
    /// The run of it the shaper knows, while it runs.
    pub thread: Option<Thread>,
    /// Its profile is enforced (this survives restarts).
    pub enforced: bool,
    /// Its thread's syscall count when the current window began.
    pub window_start: u64,
    /// The kernel mask enforced.
    pub kernel_allowed: u64,
    /// Per interface, the method mask enforced (`None`: the server has not reported it yet).
    pub methods: Vec<Option<u64>>,
    /// The last run of it the shaper saw (servers: to notice a restart).
    pub run_seen: Option<u32>,
    /// This run of the shaper put it back into learning: what it learns now wins over a
    /// profile an earlier boot kept.
    pub relearned: bool,
    /// Per interface: its mask is the shaper's fail-closed stand-in (`0`: the server restarted
    /// before it reported what the agent used), not learned; kept across boots as unknown.
    pub guessed: Vec<bool>,
}

impl Agent {
    fn new(id: u64, interfaces: usize) -> Agent {
        Agent {
            id,
            name: None,
            unshaped: false,
            thread: None,
            enforced: false,
            window_start: 0,
            kernel_allowed: profile::ALL,
            methods: alloc::vec![None; interfaces],
            run_seen: None,
            relearned: false,
            guessed: alloc::vec![false; interfaces],
        }
    }

    pub fn mode(&self) -> Mode {
        if self.unshaped {
            Mode::Unshaped
        } else if self.thread.is_none() {
            Mode::NotRunning
        } else if self.enforced {
            Mode::Enforcing
        } else {
            Mode::Learning
        }
    }

    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| format!("program {}", self.id))
    }
}

/// A request of the `shaper` interface, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    Profile(String),
    Enforce(String),
    Learn(String),
    Status,
    Tick,
    /// A server pulls the requests of an interface it provides.
    Pull(Pull),
    /// A keeper reads the index-th profile worth keeping across boots.
    Saved(u32),
    /// A keeper hands back a profile an earlier boot kept.
    Restore(Kept),
}

impl Ask {
    /// What it does to the program it names, as Studio's rule sees it (`Status` and `Tick` name
    /// none; they count as reading).
    fn op(&self) -> ShapeOp {
        match self {
            Ask::Enforce(_) => ShapeOp::Enforce,
            Ask::Learn(_) => ShapeOp::Learn,
            Ask::Saved(_) | Ask::Restore(_) => ShapeOp::Keep,
            Ask::Profile(_) | Ask::Status | Ask::Tick | Ask::Pull(_) => ShapeOp::Profile,
        }
    }
}

/// An answer to an [`Ask`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Profile(Profile),
    Mode(Mode),
    Done,
    /// The next request for a pulling server (`None`: no more).
    Control(Option<Control>),
    Kept(SavedPage),
    Restored(Restored),
}

/// A server interface the shaper shapes: who provides it, what the shaper has for it, and what
/// its server last reported.
#[derive(Clone, Debug)]
pub struct Remote {
    /// The id of the program providing it (Studio's `SHAPED`): the only badge whose pulls count.
    pub provider: u64,
    /// Requests not handed out yet.
    pub queue: VecDeque<Control>,
    /// The request handed out with the last pull, whose outcome the next pull brings.
    pub in_flight: Option<Control>,
    /// Per client (badge − 1), the profile the server last reported.
    pub known: Vec<Option<MethodProfile>>,
    /// Requests dropped because the queue was full.
    pub dropped: u64,
    /// The server was signalled and has not drained the queue since: no new signal is needed.
    pub awaited: bool,
    /// Requests were queued since the last signal was sent (sent by [`Shaper::send_signals`]).
    pub to_signal: bool,
}

impl Remote {
    fn new(provider: u64) -> Remote {
        Remote {
            provider,
            queue: VecDeque::new(),
            in_flight: None,
            known: alloc::vec![None; MAX_PROGRAMS],
            dropped: 0,
            awaited: false,
            to_signal: false,
        }
    }

    /// What the server last reported of client `badge`.
    pub fn known(&self, badge: u64) -> Option<MethodProfile> {
        self.known.get((badge as usize).wrapping_sub(1)).copied().flatten()
    }

    /// Queue `req`. A `Get` already queued is not queued again, nor is a request equal to the
    /// last one queued about the same client (requests that change a profile keep their order:
    /// Learn, Enforce, Learn ends learning). When full, the oldest `Get` makes room; if there is
    /// none, `req` is dropped. Whether something was added.
    fn push(&mut self, req: Control) -> bool {
        let badge = req.badge();
        let repeated = match req {
            Control::Get { .. } => self.queue.contains(&req),
            _ => {
                self.queue.iter().rev().find(|q| q.badge() == badge && !matches!(q, Control::Get { .. })) == Some(&req)
            }
        };
        if repeated {
            return false;
        }
        if self.queue.len() >= MAX_QUEUED {
            match self.queue.iter().position(|q| matches!(q, Control::Get { .. })) {
                Some(at) => {
                    self.queue.remove(at);
                }
                None => {
                    self.dropped += 1;
                    return false;
                }
            }
            self.dropped += 1;
        }
        self.queue.push_back(req);
        true
    }
}

/// The shaper's state.
pub struct Shaper {
    own_id: u64,
    own_name: String,
    warmup: u64,
    /// The shaped interfaces; the first is the shaper's own (`shaper`), whose profiles are the
    /// shaper's own server's ([`Profiles`]), the rest are reached through [`Env::control`].
    interfaces: Vec<String>,
    /// The remote interfaces (index `k - 1` for interface `k`).
    remotes: Vec<Remote>,
    /// Interfaces not shaped: (interface, the one shaped of the same server, its id).
    skipped: Vec<(String, String, u64)>,
    agents: Vec<Agent>,
    passes: u64,
    discovered: bool,
    /// Profiles restored for agents not seen running yet (at most [`MAX_PENDING`]).
    pending: Vec<Kept>,
    /// Agents whose restored kernel profile applies and whose methods the servers are still to
    /// be told ([`Shaper::tell_restored`]).
    restored: Vec<usize>,
}

impl Shaper {
    /// A shaper that is program `own_id` called `own_name`, with a warm-up window of `warmup`
    /// syscalls, shaping its own interface `own` and the remote `interfaces` (each with the id
    /// of the server providing it).
    ///
    /// Of the interfaces one server provides, only the first is shaped: the server has one
    /// notification, so the signals for two of its interfaces would be one, pulled for one
    /// interface only. The others are named in the log at the shaper's first look.
    pub fn new(own_id: u64, own_name: &str, warmup: u64, own: &str, interfaces: &[(&str, u64)]) -> Shaper {
        let mut all = alloc::vec![String::from(own)];
        let mut remotes: Vec<Remote> = Vec::new();
        let mut skipped = Vec::new();
        for (name, provider) in interfaces {
            match remotes.iter().position(|r| r.provider == *provider) {
                Some(k) => skipped.push((String::from(*name), all[k + 1].clone(), *provider)),
                None => {
                    all.push(String::from(*name));
                    remotes.push(Remote::new(*provider));
                }
            }
        }
        Shaper {
            own_id,
            own_name: String::from(own_name),
            warmup,
            interfaces: all,
            remotes,
            skipped,
            agents: Vec::new(),
            passes: 0,
            discovered: false,
            pending: Vec::new(),
            restored: Vec::new(),
        }
    }

    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// The remote interfaces, in the order of [`Shaper::interfaces`] from index 1.
    pub fn remotes(&self) -> &[Remote] {
        &self.remotes
    }

    /// Profile control on interface `k`: carried out at once on the shaper's own (`k` = 0), the
    /// outcome; queued for a remote server ([`Shaper::queue`]), and `None`.
    fn control(&mut self, k: usize, req: Control, own: &mut Profiles) -> Option<MethodProfile> {
        if k == 0 {
            return own.apply(&req).ok();
        }
        self.queue(k, req);
        None
    }

    /// Queue `req` for the server of remote interface `k` (≥ 1); it is signalled by the next
    /// [`Shaper::send_signals`].
    fn queue(&mut self, k: usize, req: Control) {
        if self.remotes[k - 1].push(req) {
            self.remotes[k - 1].to_signal = true;
        }
    }

    /// Ask Studio to signal the servers that have new requests and were not signalled since they
    /// last drained their queue. Never called while the shaper holds a server's pull unanswered
    /// (a call to Studio could wait, and the server with it, for as long as Studio is busy).
    pub fn send_signals(&mut self, env: &mut dyn Env) {
        for k in 1..self.interfaces.len() {
            let r = &mut self.remotes[k - 1];
            if core::mem::take(&mut r.to_signal) && !r.awaited && !r.queue.is_empty() {
                r.awaited = env.signal(&self.interfaces[k]);
            }
        }
    }

    /// What interface `k`'s server (or the shaper's own table) last said of `badge`.
    fn known(&self, k: usize, badge: u64, own: &Profiles) -> Option<MethodProfile> {
        if k == 0 { own.get(badge) } else { self.remotes[k - 1].known(badge) }
    }

    /// A pull with badge `caller`: the outcome of the request it was handed last, and the next.
    /// `Denied` unless the badge is a pull capability's ([`PULL_BADGE`]) of the program that
    /// provides the interface it names.
    pub fn pulled(&mut self, caller: u64, pull: Pull) -> Result<Option<Control>, ServiceError> {
        if caller & PULL_BADGE == 0 {
            return Err(ServiceError::Denied);
        }
        let id = caller & !PULL_BADGE;
        let k = (1..self.interfaces.len())
            .find(|&k| self.interfaces[k] == pull.interface && self.remotes[k - 1].provider == id)
            .ok_or(ServiceError::Denied)?;
        let r = &mut self.remotes[k - 1];
        match (r.in_flight.take(), pull.done) {
            (Some(req), Some(done)) if done.badge == req.badge() => self.outcome(k, &req, done),
            // Handed out and never answered (the server restarted, or lost it): again, first.
            (Some(req), _) => r.queue.push_front(req),
            // An outcome of nothing handed out: ignored.
            (None, _) => {}
        }
        let r = &mut self.remotes[k - 1];
        r.in_flight = r.queue.pop_front();
        if r.in_flight.is_none() {
            // Drained: the next request needs a new signal.
            r.awaited = false;
        }
        Ok(r.in_flight.clone())
    }

    /// Server `id` (a provider of remote interfaces) started again: it has forgotten its
    /// clients' profiles, and what it had learned of them. Every enforced agent's mask it had
    /// reported is sent again (`Set`). An enforced agent whose mask it never reported (it
    /// stopped between the `Enforce` and its outcome) cannot get it back: its methods there are
    /// enforced as none (never left learning: a crash must not open a profile), and the log
    /// says so and how to learn them again. Requests queued for it stay queued; those that
    /// would enforce what the new run has seen since its start are left out.
    fn server_restarted(&mut self, id: u64, env: &mut dyn Env) {
        for k in 1..self.interfaces.len() {
            if self.remotes[k - 1].provider != id {
                continue;
            }
            let r = &mut self.remotes[k - 1];
            r.in_flight = None;
            r.awaited = false;
            r.known.iter_mut().for_each(|p| *p = None);
            r.queue.retain(|q| !matches!(q, Control::Enforce { .. }));
            let mut lost = Vec::new();
            let mut restore = Vec::new();
            for a in self.agents.iter_mut().filter(|a| a.enforced) {
                let name = a.label();
                if a.methods[k].is_none() {
                    lost.push(name.clone());
                    a.guessed[k] = true;
                }
                let allowed = *a.methods[k].get_or_insert(0);
                restore.push(Control::Set { badge: a.id, allowed, name });
            }
            let r = &mut self.remotes[k - 1];
            for req in restore {
                r.push(req);
            }
            r.to_signal = true;
            for name in lost {
                env.report(&format!(
                    "shaper: `{}` restarted before it reported {name}'s methods: it allows {name} none \
                     (`learn {name}` learns them again)",
                    self.interfaces[k]
                ));
            }
        }
    }

    /// What server `k` made of `req`: remember it; an enforced agent that the server reports
    /// learning (it restarted and forgot) is told again.
    fn outcome(&mut self, k: usize, req: &Control, done: Applied) {
        let Some(slot) = self.remotes[k - 1].known.get_mut((done.badge as usize).wrapping_sub(1)) else { return };
        *slot = done.profile;
        let Some(i) = self.index_of_id(done.badge) else { return };
        let a = &mut self.agents[i];
        let Some(p) = done.profile else { return };
        if !a.enforced {
            return;
        }
        if p.enforcing {
            if !matches!(req, Control::Learn { .. }) && !a.guessed[k] {
                a.methods[k] = Some(p.allowed);
            }
            return;
        }
        let name = a.label();
        let again = match a.methods[k] {
            Some(allowed) => Control::Set { badge: a.id, allowed, name },
            None => Control::Enforce { badge: a.id, name },
        };
        self.queue(k, again);
    }

    /// Find the programs: ids from 1 until Studio says there are no more.
    fn discover(&mut self, env: &mut dyn Env) {
        self.discovered = true;
        for (name, shaped, id) in &self.skipped {
            env.report(&format!(
                "shaper: `{name}` is not shaped: its server (program {id}) provides `{shaped}` too, and a server \
                 pulls the requests of one interface per signal"
            ));
        }
        for id in 1..=MAX_PROGRAMS as u64 {
            let mut a = Agent::new(id, self.interfaces.len());
            if id == self.own_id {
                a.unshaped = true;
                a.name = Some(self.own_name.clone());
                self.agents.push(a);
                continue;
            }
            match env.program(id) {
                Err(ServiceError::NotFound) => break,
                Err(ServiceError::Denied) => {
                    env.report("shaper: Studio refuses programs' profiles (no `profiles` privilege): shaping nothing");
                    return;
                }
                Err(_) => self.agents.push(a),
                Ok(found) => {
                    self.agents.push(a);
                    let i = self.agents.len() - 1;
                    self.attached(i, found, env);
                }
            }
        }
    }

    /// Ask Studio about program `i` again (it was not running, or it stopped).
    fn attach(&mut self, i: usize, env: &mut dyn Env) {
        if let Ok(found) = env.program(self.agents[i].id) {
            self.attached(i, found, env);
        }
    }

    /// Program `i` runs: `found` is its current run, as Studio answered.
    fn attached(&mut self, i: usize, found: ThreadProfile, env: &mut dyn Env) {
        let thread = Thread { id: self.agents[i].id, run: found.run };
        let a = &mut self.agents[i];
        a.name = Some(found.name);
        a.thread = Some(thread);
        if found.server {
            // Not shaped; the shaper shows its counters only. A server that provides a shaped
            // interface and started again is told its clients' profiles again.
            let restarted = a.run_seen.is_some_and(|r| r != found.run);
            a.unshaped = true;
            a.run_seen = Some(found.run);
            let id = a.id;
            self.drop_pending_server(i, env);
            if restarted {
                self.server_restarted(id, env);
            }
            return;
        }
        a.window_start = 0;
        let Ok((_, allowed)) = env.kernel_profile(thread) else {
            a.thread = None;
            return;
        };
        if a.enforced {
            // Restarted after its profile was learned: the same profile applies at once.
            let mask = a.kernel_allowed;
            if env.set_kernel_allowed(thread, mask).is_err() {
                a.thread = None;
                return;
            }
            let text = format!(
                "shaper: {} restarted: its enforced profile applies again (kernel: {})",
                a.label(),
                KernelOps(mask)
            );
            env.report(&text);
        } else if allowed != profile::ALL && env.kernel_window(thread) == Ok(None) {
            // Restricted by an earlier run of the shaper (or its window ended before this run
            // of the shaper saw it): adopt that profile.
            a.enforced = true;
            a.kernel_allowed = allowed;
            // The servers' masks: as they report them (an outcome of an enforced agent's
            // `Get` that is enforcing is adopted).
            let badge = a.id;
            for k in 1..self.interfaces.len() {
                self.queue(k, Control::Get { badge });
            }
        } else if let Some(at) = self.pending.iter().position(|k| Some(&k.agent) == self.agents[i].name.as_ref()) {
            // An earlier boot kept its profile: it applies before the agent's first syscall.
            let kept = self.pending.remove(at);
            if !self.apply_kept(i, &kept, env) {
                self.pending.insert(at, kept);
            }
        } else {
            self.open_window(i, env);
        }
    }

    /// Program `i` started as a server: a profile restored for it (by its name, before it ran)
    /// has nothing to apply to.
    fn drop_pending_server(&mut self, i: usize, env: &mut dyn Env) {
        let Some(name) = self.agents[i].name.clone() else { return };
        if let Some(at) = self.pending.iter().position(|k| k.agent == name) {
            self.pending.remove(at);
            env.report(&format!("shaper: the profile kept for {name} is dropped: {name} is a server, not shaped"));
        }
    }

    /// Apply the kept profile `kept` to running agent `i`: its kernel mask now (this ends its
    /// learning window; Studio refuses anything wider than in force), its methods at the next
    /// [`Shaper::tell_restored`]. Whether it applies (not if that run has ended).
    fn apply_kept(&mut self, i: usize, kept: &Kept, env: &mut dyn Env) -> bool {
        let Some(masks) = self.masks_of(kept) else { return false };
        let Some(thread) = self.agents[i].thread else { return false };
        if env.set_kernel_allowed(thread, kept.kernel).is_err() {
            self.agents[i].thread = None;
            return false;
        }
        let a = &mut self.agents[i];
        a.enforced = true;
        a.kernel_allowed = kept.kernel;
        a.methods = masks;
        a.guessed.iter_mut().for_each(|g| *g = false);
        self.restored.push(i);
        true
    }

    /// The method masks of `kept` in the order of the shaped interfaces: `None` unless it names
    /// each shaped interface exactly once and nothing else.
    fn masks_of(&self, kept: &Kept) -> Option<Vec<Option<u64>>> {
        if kept.methods.len() != self.interfaces.len() {
            return None;
        }
        let mut masks = alloc::vec![None; self.interfaces.len()];
        for (interface, mask) in &kept.methods {
            let k = self.interfaces.iter().position(|i| i == interface)?;
            if masks[k].replace(*mask).is_some() {
                return None;
            }
        }
        masks.into_iter().collect()
    }

    /// Tell the servers the methods of the agents whose kept profiles were applied, and say so
    /// in the log.
    fn tell_restored(&mut self, env: &mut dyn Env, own: &mut Profiles) {
        for i in core::mem::take(&mut self.restored) {
            let badge = self.agents[i].id;
            let name = self.agents[i].label();
            let mut text = format!(
                "shaper: {name}'s profile kept by an earlier boot applies: kernel {}",
                KernelOps(self.agents[i].kernel_allowed)
            );
            for k in 0..self.interfaces.len() {
                // Unknown in the boot that kept it: fail-closed, as for a server that restarted
                // before it reported: enforced with what the agent has used when the server takes
                // the request (at its start: nothing), and kept as unknown again.
                let (req, shown) = match self.agents[i].methods[k] {
                    Some(allowed) => {
                        (Control::Set { badge, allowed, name: name.clone() }, format!("{}", Methods(allowed)))
                    }
                    None => {
                        self.agents[i].guessed[k] = true;
                        (Control::Enforce { badge, name: name.clone() }, String::from("unknown (enforced as used)"))
                    }
                };
                let _ = self.control(k, req, own);
                text += &format!("; `{}` methods {shown}", self.interfaces[k]);
            }
            env.report(&text);
        }
    }

    /// The profiles worth keeping across boots: every agent's that is enforced (methods a server
    /// has not reported, or that are the shaper's fail-closed stand-in, as unknown), and those
    /// restored for agents not seen running yet.
    pub fn kept(&self) -> Vec<Kept> {
        let mut all: Vec<Kept> = self
            .agents
            .iter()
            .filter(|a| a.enforced && !a.unshaped)
            .filter_map(|a| {
                let methods = (0..self.interfaces.len())
                    .map(|k| (self.interfaces[k].clone(), if a.guessed[k] { None } else { a.methods[k] }))
                    .collect();
                Some(Kept { agent: a.name.clone()?, kernel: a.kernel_allowed, methods })
            })
            .collect();
        all.extend(self.pending.iter().cloned());
        all
    }

    /// A keeper (program `caller`, with Studio's leave) hands back profile `kept` of an earlier
    /// boot. See [`ozone_agent_sdk::protocol::shaper::method::RESTORE`] for the answers.
    pub fn restore(
        &mut self,
        caller: u64,
        kept: Kept,
        env: &mut dyn Env,
        own: &mut Profiles,
    ) -> Result<Restored, ServiceError> {
        let name = kept.agent.as_str();
        let caller_name = self.index_of_id(caller).and_then(|i| self.agents[i].name.clone());
        if name.is_empty() || name.len() > MAX_NAME || name == self.own_name || caller_name.as_deref() == Some(name) {
            return Err(ServiceError::InvalidArgument);
        }
        if self.masks_of(&kept).is_none() {
            return Err(ServiceError::InvalidArgument);
        }
        if self.pending.iter().any(|k| k.agent == kept.agent) {
            return Err(ServiceError::Busy);
        }
        if let Some(i) = self.index_of(name) {
            self.refresh(i, env);
            // Its window may have ended in the kernel since the last look: then it is enforced.
            self.settle_now(i, env, own);
            let a = &self.agents[i];
            if a.unshaped {
                return Err(ServiceError::InvalidArgument);
            }
            if a.enforced || a.relearned {
                return Err(ServiceError::Busy);
            }
            if a.thread.is_some() {
                if self.apply_kept(i, &kept, env) {
                    self.tell_restored(env, own);
                    return Ok(Restored::Now);
                }
                if self.agents[i].thread.is_some() {
                    return Err(ServiceError::KernelError);
                }
            }
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(ServiceError::NoMemory);
        }
        self.pending.push(kept);
        Ok(Restored::AtStart)
    }

    /// Agent `i` is learning: make the kernel end its window on time, `warmup` syscalls after
    /// its thread started (or after `window_start`, for a relearn), whether or not the shaper
    /// gets to look then. A window already armed (by an earlier run of the shaper) is kept.
    fn open_window(&mut self, i: usize, env: &mut dyn Env) {
        let a = &self.agents[i];
        let Some(thread) = a.thread else { return };
        if matches!(env.kernel_window(thread), Ok(Some(_))) {
            return;
        }
        let Ok((syscalls, _)) = env.telemetry(thread) else { return };
        let made = syscalls.saturating_sub(a.window_start);
        // Already past it (the shaper saw it late): its next syscall ends it.
        if env.arm_kernel(thread, profile::ALL, self.warmup.saturating_sub(made)).is_err() {
            self.agents[i].thread = None;
        }
    }

    /// If learning agent `i`'s window is over, take note: report it and enforce its methods.
    fn settle(&mut self, i: usize, thread: Thread, syscalls: u64, env: &mut dyn Env, own: &mut Profiles) {
        if !self.agents[i].enforced && self.window_over(i, thread, syscalls, env) {
            let why = format!("warm-up over after {} syscalls", self.warmup);
            self.enforce(i, env, own, &why);
        }
    }

    /// Make sure program `i`'s mode is current before a request reads it: its window may have
    /// ended in the kernel since the last look (a program that never blocks leaves the ticker
    /// no turn).
    fn settle_now(&mut self, i: usize, env: &mut dyn Env, own: &mut Profiles) {
        let a = &self.agents[i];
        if a.unshaped || a.enforced {
            return;
        }
        if let Some(thread) = a.thread
            && let Ok((syscalls, _)) = env.telemetry(thread)
        {
            self.settle(i, thread, syscalls, env, own);
        }
    }

    /// Whether learning agent `i`'s window is over: the kernel has ended it (no window armed,
    /// `allowed` narrowed), or its last syscall has been made, or (without a kernel window)
    /// the thread has made `warmup` syscalls since the window began.
    fn window_over(&self, i: usize, thread: Thread, syscalls: u64, env: &mut dyn Env) -> bool {
        match env.kernel_window(thread) {
            Ok(Some(left)) => left == 0,
            Ok(None) => {
                let narrowed = env.kernel_profile(thread).is_ok_and(|(_, allowed)| allowed != profile::ALL);
                narrowed || syscalls.saturating_sub(self.agents[i].window_start) >= self.warmup
            }
            Err(_) => false,
        }
    }

    /// Make sure the run of program `i` the shaper knows is current: a run that ended means it
    /// stopped, and it may have been started again since.
    fn refresh(&mut self, i: usize, env: &mut dyn Env) {
        if self.agents[i].id == self.own_id {
            return;
        }
        if let Some(thread) = self.agents[i].thread {
            if env.telemetry(thread).is_ok() {
                return;
            }
            self.agents[i].thread = None;
        }
        self.attach(i, env);
    }

    /// Studio's signal that a program started, or that an agent's learning window ended in the
    /// kernel: find the new run now (and any run of a program the shaper has not seen), so its
    /// learning window is armed before it runs; and settle every agent whose window is over, so
    /// the servers enforce its methods before it makes another syscall (Studio resumes it after
    /// the signal, and the shaper and the servers outrank every agent).
    pub fn program_started(&mut self, env: &mut dyn Env, own: &mut Profiles) {
        if !self.discovered {
            self.discover(env);
        }
        for i in 0..self.agents.len() {
            let provider = self.remotes.iter().any(|r| r.provider == self.agents[i].id);
            if !self.agents[i].unshaped || self.agents[i].thread.is_none() || provider {
                self.refresh(i, env);
            }
            self.settle_now(i, env, own);
        }
        self.tell_restored(env, own);
        self.send_signals(env);
    }

    /// One look at every agent: attach new ones, end warm-up windows, notice stops.
    pub fn tick(&mut self, env: &mut dyn Env, own: &mut Profiles) {
        self.passes += 1;
        if !self.discovered {
            self.discover(env);
        }
        for i in 0..self.agents.len() {
            if self.agents[i].unshaped {
                continue;
            }
            match self.agents[i].thread {
                None => {
                    if self.passes.is_multiple_of(RETRY_PASSES) {
                        self.attach(i, env);
                    }
                }
                Some(thread) => match env.telemetry(thread) {
                    Ok((syscalls, _)) => self.settle(i, thread, syscalls, env, own),
                    Err(_) => {
                        // That run ended: stopped, perhaps restarted already.
                        self.agents[i].thread = None;
                        self.attach(i, env);
                    }
                },
            }
        }
        if self.passes.is_multiple_of(RECONCILE_PASSES) {
            self.reconcile();
        }
        self.tell_restored(env, own);
        self.send_signals(env);
    }

    /// End agent `i`'s window: allow exactly what it used, in the kernel and in every server.
    fn enforce(&mut self, i: usize, env: &mut dyn Env, own: &mut Profiles, why: &str) {
        let Some(thread) = self.agents[i].thread else { return };
        // What it used of what it was allowed; if the kernel has ended the window already, what
        // the kernel decided (the thread's denied tries since are in `used`, never allowed).
        let ended = env.kernel_window(thread).map(|w| w.is_none());
        let decided = env.kernel_profile(thread).and_then(|(used, allowed)| {
            let mask = if ended? && allowed != profile::ALL { allowed } else { used & allowed };
            env.set_kernel_allowed(thread, mask).map(|()| mask)
        });
        let used = match decided {
            Ok(mask) => mask,
            Err(_) => {
                self.agents[i].thread = None;
                return;
            }
        };
        let name = self.agents[i].label();
        let badge = self.agents[i].id;
        let mut text = format!("shaper: enforce {name}'s profile ({why}): kernel {}", KernelOps(used));
        let a = &mut self.agents[i];
        a.enforced = true;
        a.kernel_allowed = used;
        a.methods.iter_mut().for_each(|m| *m = None);
        a.guessed.iter_mut().for_each(|g| *g = false);
        for k in 0..self.interfaces.len() {
            let got = self.control(k, Control::Enforce { badge, name: name.clone() }, own).map(|p| p.allowed);
            self.agents[i].methods[k] = got;
            match got {
                Some(m) => text += &format!("; `{}` methods {}", self.interfaces[k], Methods(m)),
                None => text += &format!("; `{}` told", self.interfaces[k]),
            }
        }
        env.report(&text);
    }

    /// Put agent `i` back into learning.
    fn learn(&mut self, i: usize, env: &mut dyn Env, own: &mut Profiles) -> Result<(), ServiceError> {
        let thread = self.agents[i].thread.ok_or(ServiceError::Busy)?;
        let start = env.telemetry(thread).map_err(|_| ServiceError::KernelError)?.0;
        // A new window from now, which the kernel ends on time.
        env.arm_kernel(thread, profile::ALL, self.warmup).map_err(|_| ServiceError::KernelError)?;
        let badge = self.agents[i].id;
        for k in 0..self.interfaces.len() {
            let _ = self.control(k, Control::Learn { badge }, own);
        }
        let a = &mut self.agents[i];
        a.enforced = false;
        a.relearned = true;
        a.kernel_allowed = profile::ALL;
        a.window_start = start;
        a.methods.iter_mut().for_each(|m| *m = None);
        a.guessed.iter_mut().for_each(|g| *g = false);
        Ok(())
    }

    /// Ask the servers where every enforced agent stands: one that forgot an enforced profile
    /// (it restarted) is told again when its answer comes ([`Shaper::pulled`]).
    fn reconcile(&mut self) {
        let enforced: Vec<u64> =
            self.agents.iter().filter(|a| a.enforced && a.thread.is_some()).map(|a| a.id).collect();
        for badge in enforced {
            for k in 1..self.interfaces.len() {
                self.queue(k, Control::Get { badge });
            }
        }
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.agents.iter().position(|a| a.name.as_deref() == Some(name))
    }

    fn index_of_id(&self, id: u64) -> Option<usize> {
        self.agents.iter().position(|a| a.id == id)
    }

    /// Answer a request of the `shaper` interface from program `caller`. A server's pull is
    /// answered from the queue alone, without calling anyone (the signals it makes due are sent
    /// once it is answered: [`Shaper::send_signals`]); any other request sends them itself.
    pub fn request(
        &mut self,
        caller: u64,
        ask: Ask,
        env: &mut dyn Env,
        own: &mut Profiles,
    ) -> Result<Answer, ServiceError> {
        if let Ask::Pull(pull) = ask {
            return self.pulled(caller, pull).map(Answer::Control);
        }
        if caller & PULL_BADGE != 0 {
            // A pull capability pulls, and does nothing else.
            return Err(ServiceError::Denied);
        }
        let answer = self.answer(caller, ask, env, own);
        self.tell_restored(env, own);
        self.send_signals(env);
        answer
    }

    fn answer(&mut self, caller: u64, ask: Ask, env: &mut dyn Env, own: &mut Profiles) -> Result<Answer, ServiceError> {
        if !self.discovered {
            self.discover(env);
        }
        // The caller is running: if the shaper has not seen this run of it yet, it does now.
        if let Some(i) = self.index_of_id(caller) {
            self.refresh(i, env);
            self.settle_now(i, env, own);
        }
        let who = self.index_of_id(caller).map_or_else(|| format!("program {caller}"), |i| self.agents[i].label());
        match ask {
            Ask::Tick => {
                // Only unshaped programs (the ticker is a server) make the shaper look; not the
                // servers it shapes (they hold a capability to it only to pull).
                let provider = self.remotes.iter().any(|r| r.provider == caller);
                if provider || !self.index_of_id(caller).is_some_and(|i| self.agents[i].unshaped) {
                    return Err(ServiceError::Denied);
                }
                self.tick(env, own);
                Ok(Answer::Done)
            }
            Ask::Pull(_) => Err(ServiceError::InvalidArgument),
            // Keeping profiles across boots: Studio's leave (the `keeper` privilege), whatever
            // is asked; the target is every agent.
            Ask::Saved(_) | Ask::Restore(_) if env.may_shape(caller, KEEP_TARGET, ShapeOp::Keep).is_err() => {
                Err(ServiceError::Denied)
            }
            Ask::Saved(index) => {
                let all = self.kept();
                let digest = Kept::digest(&all);
                Ok(Answer::Kept(SavedPage { digest, kept: all.into_iter().nth(index as usize) }))
            }
            Ask::Restore(kept) => self.restore(caller, kept, env, own).map(Answer::Restored),
            Ask::Status => Ok(Answer::Mode(self.index_of_id(caller).map_or(Mode::Unshaped, |i| self.agents[i].mode()))),
            // Studio decides who may read or change a profile, before anything else is looked at
            // (a refused caller learns nothing, not even whether the program exists). A program
            // reading its own profile needs no one's leave.
            Ask::Profile(ref name) if self.index_of(name).is_some_and(|i| self.agents[i].id == caller) => {
                let i = self.index_of(name).ok_or(ServiceError::NotFound)?;
                Ok(Answer::Profile(self.profile(i, env, own)))
            }
            Ask::Profile(ref name) | Ask::Enforce(ref name) | Ask::Learn(ref name)
                if env.may_shape(caller, name, ask.op()).is_err() =>
            {
                Err(ServiceError::Denied)
            }
            Ask::Profile(name) => {
                let i = self.index_of(&name).ok_or(ServiceError::NotFound)?;
                self.refresh(i, env);
                self.settle_now(i, env, own);
                if self.agents[i].thread.is_none() && self.agents[i].id != self.own_id {
                    return Err(ServiceError::Busy);
                }
                Ok(Answer::Profile(self.profile(i, env, own)))
            }
            Ask::Enforce(name) | Ask::Learn(name)
                if self.index_of(&name).is_some_and(|i| self.agents[i].id == caller) =>
            {
                Err(ServiceError::Denied)
            }
            Ask::Enforce(name) => {
                let i = self.index_of(&name).ok_or(ServiceError::NotFound)?;
                self.refresh(i, env);
                self.changeable(i)?;
                if !self.agents[i].enforced {
                    self.enforce(i, env, own, &format!("asked by {who}"));
                }
                Ok(Answer::Profile(self.profile(i, env, own)))
            }
            Ask::Learn(name) => {
                let i = self.index_of(&name).ok_or(ServiceError::NotFound)?;
                self.refresh(i, env);
                self.changeable(i)?;
                self.learn(i, env, own)?;
                env.report(&format!("shaper: {name} back to learning: asked by {who}"));
                Ok(Answer::Profile(self.profile(i, env, own)))
            }
        }
    }

    /// Whether agent `i`'s profile can be enforced or relearned now.
    fn changeable(&self, i: usize) -> Result<(), ServiceError> {
        let a = &self.agents[i];
        if a.unshaped {
            return Err(ServiceError::InvalidArgument);
        }
        if a.thread.is_none() {
            return Err(ServiceError::Busy);
        }
        Ok(())
    }

    /// Agent `i`'s profile as it stands: read live from the kernel; the servers' halves as they
    /// last reported them (each is asked again, for the next look).
    fn profile(&mut self, i: usize, env: &mut dyn Env, own: &mut Profiles) -> Profile {
        let a = &self.agents[i];
        let (badge, thread) = (a.id, a.thread);
        let (syscalls, denied) = thread.and_then(|t| env.telemetry(t).ok()).unwrap_or((0, 0));
        let (kernel_used, kernel_allowed) =
            thread.and_then(|t| env.kernel_profile(t).ok()).unwrap_or((0, a.kernel_allowed));
        let interfaces = (0..self.interfaces.len())
            .map(|k| InterfaceProfile { interface: self.interfaces[k].clone(), methods: self.known(k, badge, own) })
            .collect();
        for k in 1..self.interfaces.len() {
            self.queue(k, Control::Get { badge });
        }
        let a = &self.agents[i];
        Profile {
            agent: a.label(),
            id: a.id,
            mode: a.mode(),
            syscalls,
            denied,
            warmup: self.warmup,
            window_start: a.window_start,
            kernel_used,
            kernel_allowed,
            interfaces,
        }
    }
}
