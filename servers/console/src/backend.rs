//! The shell's backend on OZONE-OS: Studio's administration methods (the console has the `admin`
//! privilege), the syscall shaper's profiles for `profile` (or, without a running shaper, the
//! kernel counters Studio reads), and the TSC for `bench`.

use alloc::string::String;
use alloc::vec::Vec;

use alloc::format;

use ozone_agent_sdk::AgentError;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::console::Level;
use ozone_agent_sdk::protocol::shaper::{self, KernelOps, Methods, Mode};
use ozone_agent_sdk::protocol::studio::{
    self as studio, AgentInfo, AgentState, CapInfo, Follow, LogEntry, ReportPage, SystemMemory, Telemetry, WatchReport,
    method,
};
use ozone_agent_sdk::protocol::{net, store};
use ozone_agent_sdk::rpc::Client;
use ozone_console::output::Output;
use ozone_console::shell::{Backend, Bench, DeviceError, Profile, ProfileRow};

/// The program that provides the `shaper` interface in the system description.
const SHAPER_PROGRAM: &str = "shaper";

/// Studio, reached through the capability every program holds, and the record of programs'
/// output (names, levels, rate limits).
pub struct System {
    studio: Client,
    pub output: Output,
    /// The number of Studio's next decision to print, once the console prints them
    /// ([`System::follow_log`]).
    next_decision: Option<u32>,
}

impl System {
    pub fn new() -> System {
        System { studio: Client::studio(), output: Output::new(), next_decision: None }
    }

    /// The name Studio gave program `id` (its id is its place in the description, plus one: the
    /// page from there starts with it, unless the description changed under us — then page on).
    pub fn name_of(studio: &Client, id: u64) -> Option<String> {
        let mut from = u32::try_from(id.checked_sub(1)?).ok()?;
        for _ in 0..64 {
            let page: Vec<AgentInfo> = studio.call(method::LIST, &from).ok()?;
            if let Some(a) = page.iter().find(|a| a.id == id) {
                return Some(a.name.clone());
            }
            if page.is_empty() {
                return None;
            }
            from = from.saturating_add(page.len() as u32);
        }
        None
    }

    /// The lines to print for a program's line (see [`Output::lines`]).
    pub fn program_line(&mut self, id: u64, level: Level, text: &[u8]) -> Vec<String> {
        let studio = self.studio;
        let name = self.output.name(id, &mut |id| System::name_of(&studio, id));
        self.output.lines(id, &name, level, text, rdtsc())
    }

    /// `n` lines of program `id` the serial line could not take (see [`Output::note_dropped`]).
    pub fn note_dropped(&mut self, id: u64, n: u64) {
        self.output.note_dropped(id, n, rdtsc());
    }

    /// The lines to print for text a program wrote (see [`Output::write`]).
    pub fn program_write(&mut self, id: u64, bytes: &[u8]) -> Vec<String> {
        let studio = self.studio;
        let name = self.output.name(id, &mut |id| System::name_of(&studio, id));
        self.output.write(id, &name, bytes, rdtsc())
    }

    /// Drop notices due now.
    pub fn due_notices(&mut self) -> Vec<String> {
        self.output.due_notices(rdtsc())
    }

    /// Tell Studio the console prints its decisions from now on ([`Backend::decisions`]).
    pub fn follow_log(&mut self) -> Result<(), AgentError> {
        self.next_decision = Some(self.studio.call(method::FOLLOW_LOG, &())?);
        Ok(())
    }

    /// The shaper, if it runs and the console may call it; otherwise why not.
    ///
    /// Studio is asked first whether it runs (to tell "no shaper" from "not running"); a
    /// capability to it goes when it stops, so it is looked up each time.
    fn shaper(&mut self) -> Result<Client, String> {
        let mut from = 0u32;
        let state = loop {
            let page: Vec<AgentInfo> = self.studio.call(method::LIST, &from).map_err(|e| format!("{e}"))?;
            if page.is_empty() {
                return Err(String::from("there is no syscall shaper in this system"));
            }
            if let Some(a) = page.iter().find(|a| a.name == SHAPER_PROGRAM) {
                break a.state;
            }
            from = from.saturating_add(page.len() as u32);
        };
        if state != AgentState::Running {
            return Err(String::from("the syscall shaper is not running"));
        }
        // Looked up each time: a shaper that stopped took the capability to it along (a lookup
        // of one still held gives it back at once).
        match Client::lookup(shaper::INTERFACE) {
            Ok(c) => Ok(c),
            Err(AgentError::Service(ServiceError::NotRunning)) => {
                Err(String::from("the syscall shaper is not running"))
            }
            Err(AgentError::Service(ServiceError::Denied)) => {
                Err(String::from("the console may not use the shaper (its `uses` in initrd/system.toml)"))
            }
            Err(e) => Err(format!("the shaper cannot be reached ({e})")),
        }
    }
}

/// The shell's view of the shaper's profile.
fn shaped(p: shaper::Profile) -> Profile {
    let mode = match p.mode {
        Mode::Learning => format!(
            "learning ({} of {} warm-up syscalls made)",
            p.syscalls.saturating_sub(p.window_start).min(p.warmup),
            p.warmup
        ),
        m => String::from(m.as_str()),
    };
    let mut rows = alloc::vec![ProfileRow {
        what: String::from("kernel"),
        masks: Some((format!("{}", KernelOps(p.kernel_allowed)), format!("{}", KernelOps(p.kernel_used)))),
    }];
    for i in p.interfaces {
        let masks = i.methods.map(|m| (format!("{}", Methods(m.allowed)), format!("{}", Methods(m.used))));
        rows.push(ProfileRow { what: i.interface, masks });
    }
    Profile::Shaper { mode, syscalls: p.syscalls, denied: p.denied, rows }
}

/// The time-stamp counter.
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` only reads the time-stamp counter; every x86_64 CPU has it, and OZONE-OS
    // does not set CR4.TSD, so it is allowed in user mode.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl Backend for System {
    fn list(&mut self, from: u32) -> Result<Vec<AgentInfo>, AgentError> {
        self.studio.call(method::LIST, &from)
    }

    fn caps(&mut self, agent: &str) -> Result<Vec<CapInfo>, AgentError> {
        self.studio.call(method::CAPS, &String::from(agent))
    }

    fn grant(&mut self, agent: &str, interface: &str) -> Result<Option<u64>, AgentError> {
        self.studio.call(method::GRANT, &studio::Grant { agent: agent.into(), interface: interface.into() })
    }

    fn revoke(&mut self, agent: &str, interface: &str) -> Result<(), AgentError> {
        self.studio.call(method::REVOKE, &studio::Grant { agent: agent.into(), interface: interface.into() })
    }

    fn kill(&mut self, agent: &str) -> Result<(), AgentError> {
        self.studio.call(method::KILL, &String::from(agent))
    }

    fn start(&mut self, agent: &str) -> Result<u64, AgentError> {
        self.studio.call(method::START, &String::from(agent))
    }

    /// Studio's decisions from the next one on, as `[studio] ...` lines; a bounded number of
    /// pages (Studio keeps a bounded log). Nothing until [`System::follow_log`] succeeded.
    fn decisions(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let Some(next) = self.next_decision.as_mut() else { return lines };
        for _ in 0..64 {
            let page = match self.studio.call(method::LOG, &*next) {
                Ok(p) => p,
                Err(e) => {
                    lines.push(format!("[console] cannot read Studio's decisions: {e}"));
                    break;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else { break };
            lines.extend(
                page.iter()
                    .filter(|e| e.seq >= *next)
                    .map(|e| ozone_console::output::attribute("studio", Level::Info, e.text.as_bytes())),
            );
            *next = last.saturating_add(1);
        }
        lines
    }

    fn log(&mut self, from: u32) -> Result<Vec<LogEntry>, AgentError> {
        self.studio.call(method::LOG, &from)
    }

    fn reports(&mut self, from: u32) -> Result<ReportPage, AgentError> {
        self.studio.call(method::REPORTS, &from)
    }

    fn memory(&mut self) -> Result<SystemMemory, AgentError> {
        self.studio.call(method::MEMORY, &())
    }

    fn profile(&mut self, agent: &str) -> Result<Profile, AgentError> {
        let why = match self.shaper() {
            Ok(shaper) => match shaper.call(shaper::method::PROFILE, &String::from(agent)) {
                Ok(p) => return Ok(shaped(p)),
                // The shaper knows the agents it has seen run; Studio knows them all.
                Err(AgentError::Service(ServiceError::NotFound)) => String::from("the shaper has not seen it run"),
                Err(e) => return Err(e),
            },
            Err(why) => why,
        };
        let counters: Telemetry = self.studio.call(method::TELEMETRY, &String::from(agent))?;
        Ok(Profile::Counters { why, counters })
    }

    fn watch(&mut self, agent: &str) -> Result<WatchReport, AgentError> {
        self.studio.call(method::WATCH, &String::from(agent))
    }

    fn follow(&mut self, agent: &str, seconds: u32) -> Result<(), AgentError> {
        self.studio.call(method::FOLLOW, &Follow { agent: String::from(agent), seconds })
    }

    fn allow(&mut self, agent: &str) -> Result<(), AgentError> {
        self.studio.call(method::ALLOW, &String::from(agent))
    }

    fn resume(&mut self, agent: &str) -> Result<(), AgentError> {
        self.studio.call(method::RESUME, &String::from(agent))
    }

    fn bench(&mut self, calls: u32) -> Result<Bench, AgentError> {
        let mut min = u64::MAX;
        let start = rdtsc();
        for _ in 0..calls {
            let t0 = rdtsc();
            let _: studio::MemInfo = self.studio.call(method::MY_MEMORY, &())?;
            min = min.min(rdtsc().wrapping_sub(t0));
        }
        let total = rdtsc().wrapping_sub(start);
        Ok(Bench { calls, total_cycles: total, min_cycles: if calls == 0 { 0 } else { min } })
    }

    fn shutdown(&mut self) -> AgentError {
        match self.studio.call(method::SHUTDOWN, &0) {
            Ok(()) => AgentError::BadReply,
            Err(e) => e,
        }
    }

    /// Looked up at each command: the storage server may have started, stopped or restarted
    /// since the last one. The calls have no timeout (the console holds no timer): a server that
    /// never answers hangs the console until it ends (`docs/storage.md`).
    fn disk(&mut self) -> Result<(store::Health, Vec<store::NamedUsage>), DeviceError> {
        let server = Client::lookup(store::INTERFACE)?;
        let health = server.call(store::method::HEALTH, &())?.map_err(DeviceError::Store)?;
        let mut all = Vec::new();
        // Bounded: a store holds at most as many namespaces as it has blocks.
        for _ in 0..1024 {
            let page = server.call(store::method::USAGE_ALL, &(all.len() as u32))?.map_err(DeviceError::Store)?;
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        Ok((health, all))
    }

    fn net(&mut self) -> Result<net::Status, DeviceError> {
        let server = Client::lookup(net::INTERFACE)?;
        Ok(server.call(net::method::STATUS, &())?)
    }

    fn log_level(&mut self, agent: &str, level: Option<Level>) -> Result<(Level, u64), AgentError> {
        // Only programs Studio knows (by name: a level may be set before the program runs).
        let mut from = 0u32;
        let mut id = None;
        for _ in 0..1024 {
            let page: Vec<AgentInfo> = self.studio.call(method::LIST, &from)?;
            if page.is_empty() {
                break;
            }
            if let Some(a) = page.iter().find(|a| a.name == agent) {
                id = Some(a.id);
                break;
            }
            from = from.saturating_add(page.len() as u32);
        }
        let id = id.ok_or(AgentError::Service(ServiceError::NotFound))?;
        if let Some(l) = level {
            self.output.set_level(agent, l);
        }
        Ok((self.output.level(agent), self.output.dropped(id)))
    }
}
