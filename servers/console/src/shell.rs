//! The shell: parses a command line, asks a [`Backend`] (Studio, the shaper and the clock in the
//! console server; a fake in the host tests) and formats the answer.
//!
//! Every command answers in text ending with a newline. Problems are one line each:
//! `error: unknown command ...`, `usage: ...` for missing or extra arguments, and
//! `error: <reason>` for what Studio refused (the reason is the [`ServiceError`] text, followed by
//! a hint where the shell knows more). Nothing typed can make the shell panic: arguments are
//! bounded by the line editor, numbers are parsed with range checks, and the backend's lists are
//! paged with a bound on the number of pages.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use ozone_agent_sdk::AgentError;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::console::Level;
use ozone_agent_sdk::protocol::net::Status;
use ozone_agent_sdk::protocol::store::{Fault, Health, NamedUsage};
use ozone_agent_sdk::protocol::studio::{
    AgentInfo, AgentState, CapInfo, LogEntry, MAX_FOLLOW_SECONDS, ReportEntry, ReportPage, SystemMemory, Telemetry,
    WatchReport, thousandths as milli,
};

/// What the shell needs from the system.
pub trait Backend {
    /// Programs from index `from` on (as many as fit one reply; empty past the end).
    fn list(&mut self, from: u32) -> Result<Vec<AgentInfo>, AgentError>;
    fn caps(&mut self, agent: &str) -> Result<Vec<CapInfo>, AgentError>;
    /// Returns the slot of the capability in the agent's CNode.
    fn grant(&mut self, agent: &str, interface: &str) -> Result<Option<u64>, AgentError>;
    fn revoke(&mut self, agent: &str, interface: &str) -> Result<(), AgentError>;
    fn kill(&mut self, agent: &str) -> Result<(), AgentError>;
    /// Returns the program's id.
    fn start(&mut self, agent: &str) -> Result<u64, AgentError>;
    /// Decisions from sequence number `from` on (as many as fit one reply; empty past the end).
    fn log(&mut self, from: u32) -> Result<Vec<LogEntry>, AgentError>;
    /// Programs' reports from sequence number `from` on, and what each had dropped.
    fn reports(&mut self, from: u32) -> Result<ReportPage, AgentError>;
    fn memory(&mut self) -> Result<SystemMemory, AgentError>;
    fn profile(&mut self, agent: &str) -> Result<Profile, AgentError>;
    /// What Studio's watch knows of `agent`'s behaviour.
    fn watch(&mut self, agent: &str) -> Result<WatchReport, AgentError>;
    /// Studio's `FOLLOW`: its live lines about `agent` for `seconds` (0: no longer).
    fn follow(&mut self, agent: &str, seconds: u32) -> Result<(), AgentError>;
    /// Studio's `ALLOW` and `RESUME` of an agent its watch responded to.
    fn allow(&mut self, agent: &str) -> Result<(), AgentError>;
    fn resume(&mut self, agent: &str) -> Result<(), AgentError>;
    /// Time `calls` round trips to Studio.
    fn bench(&mut self, calls: u32) -> Result<Bench, AgentError>;
    /// Ask Studio to power the machine off (status 0). Returns only if that failed, with why.
    fn shutdown(&mut self) -> AgentError;
    /// Set the level of `agent`'s lines the console prints (`None`: leave it); returns its level
    /// and how many of its lines the rate limit dropped.
    fn log_level(&mut self, agent: &str, level: Option<Level>) -> Result<(Level, u64), AgentError>;
    /// The storage server's health (without reading the disk) and every namespace's use.
    fn disk(&mut self) -> Result<(Health, Vec<NamedUsage>), DeviceError>;
    /// The network server's status: interface, address, lease, frames, every program's sockets.
    fn net(&mut self) -> Result<Status, DeviceError>;
    /// Studio's decisions made since the last call, as lines to print (`[studio] ...`). The
    /// session prints them after each command's answer, so the decisions a command caused come
    /// right after it, before the next command runs (a `shutdown` typed at once included).
    fn decisions(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// Why `disk` or `net` has nothing to show: the call failed, or the store refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    Agent(AgentError),
    Store(Fault),
}

impl From<AgentError> for DeviceError {
    fn from(e: AgentError) -> DeviceError {
        DeviceError::Agent(e)
    }
}

/// An agent's profile as the shell shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    /// What the syscall shaper reports: its mode (learning, enforcing, ...), the syscalls the
    /// agent made and how many were denied, and what it may use and has used.
    Shaper { mode: String, syscalls: u64, denied: u64, rows: Vec<ProfileRow> },
    /// No shaper to ask (`why`): the kernel's counters of the agent's thread, through Studio.
    Counters { why: String, counters: Telemetry },
}

/// One part of a shaped profile: the kernel's operations, or one server's methods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileRow {
    /// `kernel` or an interface name.
    pub what: String,
    /// What is allowed and what was used (`None`: its server has not reported it yet).
    pub masks: Option<(String, String)>,
}

/// The result of [`Backend::bench`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bench {
    pub calls: u32,
    /// TSC cycles of all calls together.
    pub total_cycles: u64,
    /// Of the fastest call.
    pub min_cycles: u64,
}

/// What the server does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Print the prompt and read the next line.
    Continue,
    /// Power off: the output so far must reach the line, then Studio is asked to shut down.
    Shutdown,
}

/// One shell command.
pub struct Command {
    pub name: &'static str,
    /// The arguments, as the usage line shows them (`[X]` is optional).
    pub args: &'static str,
    pub help: &'static str,
    required: usize,
    optional: usize,
}

const fn cmd(name: &'static str, args: &'static str, required: usize, optional: usize, help: &'static str) -> Command {
    Command { name, args, help, required, optional }
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Command] = &[
    cmd("help", "[COMMAND]", 0, 1, "list the commands, or explain one"),
    cmd("ps", "", 0, 0, "agents and servers: state, priority, memory used and quota"),
    cmd("caps", "AGENT", 1, 0, "the capabilities Studio put in AGENT's CNode, by slot"),
    cmd("grant", "AGENT INTERFACE", 2, 0, "let AGENT use INTERFACE (a capability in its CNode)"),
    cmd("revoke", "AGENT INTERFACE", 2, 0, "take INTERFACE away from AGENT (its capability is deleted)"),
    cmd("kill", "AGENT", 1, 0, "stop AGENT, revoke its capabilities, reclaim its memory"),
    cmd("start", "AGENT", 1, 0, "start AGENT (again)"),
    cmd("profile", "AGENT", 1, 0, "AGENT's syscall profile (kernel counters without a shaper)"),
    cmd(
        "studio",
        "explain|watch|allow|resume AGENT [SECONDS|off]",
        2,
        1,
        "Studio's watch of AGENT: explain (events, warm-up, anomalies, why), watch (its scores and response now, then live for SECONDS, default 30, or off), allow (accept what was found anomalous), resume (a suspended agent)",
    ),
    cmd("log", "[N]", 0, 1, "Studio's last N decisions and their reasons (default 20)"),
    cmd("reports", "[N]", 0, 1, "programs' last N reports to Studio, and what each had dropped (default 20)"),
    cmd("mem", "", 0, 0, "system memory: total, free, used by programs"),
    cmd("bench", "[CALLS]", 0, 1, "time CALLS round trips to Studio with rdtsc (default 1000)"),
    cmd("disk", "", 0, 0, "the store: health, and the space each program uses of its quota"),
    cmd("net", "", 0, 0, "the network: interface, address, lease, frames, sockets per program"),
    cmd("loglevel", "AGENT [LEVEL]", 1, 1, "AGENT's lines shown: error, warn, info (default) or debug"),
    cmd("shutdown", "", 0, 0, "power the machine off"),
];

/// `log` without a count shows this many.
pub const LOG_DEFAULT: u32 = 20;
/// Studio keeps this many decisions.
pub const LOG_MAX: u32 = 256;
pub const BENCH_DEFAULT: u32 = 1000;
pub const BENCH_MAX: u32 = 100_000;
/// Pages of a list the shell asks for at most (a misbehaving backend cannot make it loop).
const MAX_PAGES: usize = 1024;

/// Run one command line; its output goes to `out`.
pub fn execute(line: &str, backend: &mut dyn Backend, out: &mut String) -> Outcome {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some((&name, args)) = words.split_first() else { return Outcome::Continue };
    let Some(command) = COMMANDS.iter().find(|c| c.name == name) else {
        let _ = writeln!(out, "error: unknown command `{}` (type `help` for the list)", clip(name));
        return Outcome::Continue;
    };
    if args.len() < command.required || args.len() > command.required + command.optional {
        usage(out, command);
        return Outcome::Continue;
    }
    let arg = |i: usize| args.get(i).copied();
    // The arguments (the count was checked against the table above; missing ones are empty).
    let (r0, r1) = (arg(0).unwrap_or(""), arg(1).unwrap_or(""));
    // What the user typed, shortened for messages.
    let a0 = arg(0).map_or("", clip);
    let a1 = arg(1).map_or("", clip);
    let no_program = format!("no program `{a0}`");
    let not_running = format!("`{a0}` is not running");
    match name {
        "help" => help(out, arg(0)),
        "ps" => ps(out, backend),
        "caps" => match backend.caps(r0) {
            Ok(caps) => show_caps(out, a0, caps),
            Err(e) => error(out, e, &[(ServiceError::NotFound, &no_program)]),
        },
        "grant" => match backend.grant(r0, r1) {
            Ok(Some(slot)) => {
                let _ = writeln!(out, "granted: {a0} may use `{a1}` (capability in its slot {slot})");
            }
            Ok(None) => {
                let _ = writeln!(
                    out,
                    "granted: {a0} may use `{a1}` (no capability placed: {a0} or the server of `{a1}` is not running; it may look `{a1}` up once both run)"
                );
            }
            Err(e) => {
                let not_found = format!("no program `{a0}` or no interface `{a1}`");
                error(out, e, &[(ServiceError::NotFound, &not_found)])
            }
        },
        "revoke" => match backend.revoke(r0, r1) {
            Ok(()) => {
                let _ = writeln!(out, "revoked: {a0} may no longer use `{a1}`");
            }
            Err(e) => error(out, e, &[(ServiceError::NotFound, &no_program)]),
        },
        "kill" => match backend.kill(r0) {
            Ok(()) => {
                let _ = writeln!(out, "killed {a0}: capabilities revoked, memory reclaimed");
            }
            Err(e) => error(
                out,
                e,
                &[
                    (ServiceError::NotFound, &no_program),
                    (ServiceError::Busy, &not_running),
                    (ServiceError::InvalidArgument, "the console cannot kill itself"),
                ],
            ),
        },
        "start" => match backend.start(r0) {
            Ok(id) => {
                let _ = writeln!(out, "started {a0} (id {id})");
            }
            Err(e) => {
                let running = format!("`{a0}` is already running");
                error(out, e, &[(ServiceError::NotFound, &no_program), (ServiceError::Busy, &running)])
            }
        },
        "studio" => {
            let (no_agent, not_running) = (format!("no program `{a1}`"), format!("`{a1}` is not running"));
            let hints = [(ServiceError::NotFound, no_agent.as_str()), (ServiceError::Busy, not_running.as_str())];
            match r0 {
                _ if r0 != "watch" && arg(2).is_some() => usage(out, command),
                "explain" => match backend.watch(r1) {
                    Ok(w) => show_watch(out, a1, &w),
                    Err(e) => error(out, e, &hints),
                },
                "watch" => watch(out, backend, command, r1, a1, arg(2), &hints),
                "allow" => match backend.allow(r1) {
                    Ok(()) => {
                        let _ =
                            writeln!(out, "{a1}: what the watch found anomalous is accepted as normal for this run");
                    }
                    Err(e) => {
                        let busy = format!("`{a1}` is neither running nor suspended, or Studio has no model");
                        error(out, e, &[(ServiceError::NotFound, &no_agent), (ServiceError::Busy, &busy)])
                    }
                },
                "resume" => match backend.resume(r1) {
                    Ok(()) => {
                        let _ = writeln!(out, "{a1} runs again (what it lost stays revoked)");
                    }
                    Err(e) => {
                        let busy = format!("`{a1}` is not suspended");
                        error(out, e, &[(ServiceError::NotFound, &no_agent), (ServiceError::Busy, &busy)])
                    }
                },
                _ => usage(out, command),
            }
        }
        "profile" => match backend.profile(r0) {
            Ok(p) => show_profile(out, a0, p),
            Err(e) => error(out, e, &[(ServiceError::NotFound, &no_program), (ServiceError::Busy, &not_running)]),
        },
        "log" => {
            if let Some(n) = number(out, command, arg(0), LOG_DEFAULT, LOG_MAX) {
                log(out, backend, n);
            }
        }
        "reports" => {
            if let Some(n) = number(out, command, arg(0), LOG_DEFAULT, LOG_MAX) {
                reports(out, backend, n);
            }
        }
        "mem" => mem(out, backend),
        "disk" => disk(out, backend),
        "net" => net(out, backend),
        "bench" => {
            if let Some(n) = number(out, command, arg(0), BENCH_DEFAULT, BENCH_MAX) {
                bench(out, backend, n);
            }
        }
        "loglevel" => {
            let level = match arg(1) {
                None => None,
                Some(l) => match Level::parse(l) {
                    Some(l) => Some(l),
                    None => {
                        let _ = writeln!(out, "error: `{a1}` is not a level (error, warn, info or debug)");
                        usage(out, command);
                        return Outcome::Continue;
                    }
                },
            };
            match backend.log_level(r0, level) {
                Ok((l, dropped)) => {
                    let _ = writeln!(
                        out,
                        "{a0} logs at {} and above; {dropped} of its lines dropped by the rate limit",
                        l.name()
                    );
                }
                Err(e) => error(out, e, &[(ServiceError::NotFound, &no_program)]),
            }
        }
        "shutdown" => {
            let _ = writeln!(out, "shutting down");
            return Outcome::Shutdown;
        }
        _ => {
            let _ = writeln!(out, "error: `{name}` is listed but not implemented");
        }
    }
    Outcome::Continue
}

/// The shutdown request came back: the system did not power off.
pub fn shutdown_failed(out: &mut String, e: AgentError) {
    error(out, e, &[]);
    let _ = writeln!(out, "the system is still running");
}

/// At most 40 characters of what the user typed, for messages.
fn clip(s: &str) -> &str {
    // The line editor keeps ASCII only, so any byte index is a character boundary; stay safe
    // for other callers anyway.
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A name another server gave (a namespace, an interface), clipped, with every character the
/// terminal would act on (line breaks, escapes, direction controls) shown as `?`.
fn shown(s: &str) -> String {
    clip(s).chars().map(|c| if ozone_agent_sdk::protocol::console::printable(c) { c } else { '?' }).collect()
}

/// `studio watch AGENT [SECONDS|off]`: the scores now (or what the watch knows, without a
/// model), then Studio's live lines for SECONDS (default [`FOLLOW_DEFAULT`]); `off` ends them.
fn watch(
    out: &mut String,
    backend: &mut dyn Backend,
    command: &Command,
    agent: &str,
    shown: &str,
    seconds: Option<&str>,
    hints: &[(ServiceError, &str)],
) {
    let seconds = match seconds {
        Some("off") => 0,
        s => match number(out, command, s, FOLLOW_DEFAULT, MAX_FOLLOW_SECONDS) {
            Some(n) => n,
            None => return,
        },
    };
    if seconds > 0 {
        match backend.watch(agent) {
            Ok(w) if w.model => {
                let _ = writeln!(out, "{shown}: {}", w.scores());
            }
            Ok(w) => show_watch(out, shown, &w),
            Err(e) => return error(out, e, hints),
        }
    }
    match backend.follow(agent, seconds) {
        Ok(()) if seconds == 0 => {
            let _ = writeln!(out, "{shown}: no more live lines");
        }
        Ok(()) => {
            let _ =
                writeln!(out, "{shown}: Studio's live lines for {seconds} s (`studio watch {shown} off` ends them)");
        }
        Err(e) => error(out, e, hints),
    }
}

/// How long `studio watch` follows an agent when not told.
const FOLLOW_DEFAULT: u32 = 30;

fn usage(out: &mut String, c: &Command) {
    let sep = if c.args.is_empty() { "" } else { " " };
    let _ = writeln!(out, "usage: {}{sep}{}  ({})", c.name, c.args, c.help);
}

/// Print a backend error, one line: `error: <reason>`, then the hint for that reason if the
/// command gave one.
fn error(out: &mut String, e: AgentError, hints: &[(ServiceError, &str)]) {
    let _ = match e {
        AgentError::Service(s) => match hints.iter().find(|(h, _)| *h == s) {
            Some((_, hint)) => writeln!(out, "error: {s}: {hint}"),
            None if s == ServiceError::Denied => writeln!(out, "error: {s}: the console lacks the `admin` privilege"),
            None => writeln!(out, "error: {s}"),
        },
        AgentError::NotStarted => writeln!(out, "error: the console was not started by Studio"),
        other => writeln!(out, "error: {other}"),
    };
}

/// An optional count argument in `1..=max`.
fn number(out: &mut String, c: &Command, arg: Option<&str>, default: u32, max: u32) -> Option<u32> {
    let Some(text) = arg else { return Some(default) };
    match text.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Some(n),
        _ => {
            let _ = writeln!(out, "error: `{}` is not a number from 1 to {max}", clip(text));
            usage(out, c);
            None
        }
    }
}

fn help(out: &mut String, topic: Option<&str>) {
    if let Some(t) = topic {
        match COMMANDS.iter().find(|c| c.name == t) {
            Some(c) => usage(out, c),
            None => {
                let _ = writeln!(out, "error: unknown command `{}` (type `help` for the list)", clip(t));
            }
        }
        return;
    }
    let _ = writeln!(out, "commands:");
    for c in COMMANDS {
        let left = if c.args.is_empty() { String::from(c.name) } else { format!("{} {}", c.name, c.args) };
        let _ = writeln!(out, "  {left:<24} {}", c.help);
    }
}

/// Collect every page of a paged list; `next` gives the index after a page.
fn pages<T>(
    mut fetch: impl FnMut(u32) -> Result<Vec<T>, AgentError>,
    next: impl Fn(u32, &[T]) -> u32,
) -> Result<Vec<T>, AgentError> {
    let mut all = Vec::new();
    let mut from = 0;
    for _ in 0..MAX_PAGES {
        let page = fetch(from)?;
        if page.is_empty() {
            break;
        }
        let after = next(from, &page);
        all.extend(page);
        if after <= from {
            break;
        }
        from = after;
    }
    Ok(all)
}

fn state(s: AgentState) -> &'static str {
    match s {
        AgentState::Stopped => "stopped",
        AgentState::Running => "running",
        AgentState::Faulted => "faulted",
        AgentState::Suspended => "suspended",
        AgentState::Exited => "exited",
    }
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

fn ps(out: &mut String, backend: &mut dyn Backend) {
    let list = match pages(|from| backend.list(from), |from, page| from.saturating_add(page.len() as u32)) {
        Ok(l) => l,
        Err(e) => return error(out, e, &[]),
    };
    let _ = writeln!(out, " ID  NAME                      KIND    STATE    PRIO   USED KiB  QUOTA KiB  RESTARTS");
    for a in &list {
        let kind = if a.server { "server" } else { "agent" };
        let _ = writeln!(
            out,
            "{:>3}  {:<24}  {:<6}  {:<7}  {:>4}  {:>9}  {:>9}  {:>8}",
            a.id,
            clip(&a.name),
            kind,
            state(a.state),
            a.priority,
            kib(a.used),
            kib(a.quota),
            a.restarts
        );
    }
    let running = list.iter().filter(|a| a.state == AgentState::Running).count();
    let _ = writeln!(out, "{} programs, {running} running", list.len());
}

fn show_caps(out: &mut String, agent: &str, mut caps: Vec<CapInfo>) {
    caps.sort_by_key(|c| c.slot);
    if caps.is_empty() {
        let _ = writeln!(out, "{agent} holds no capabilities from Studio (it is not running)");
        return;
    }
    let _ = writeln!(out, "capabilities of {agent}:");
    for c in caps {
        let _ = writeln!(out, "  slot {:>3}  {}", c.slot, c.what);
    }
}

fn show_watch(out: &mut String, agent: &str, w: &WatchReport) {
    if !w.traced {
        let _ =
            writeln!(out, "{agent} is not traced (Studio traces agents, not servers, when the description says so)");
        return;
    }
    let _ = writeln!(out, "watch of {agent}: {} events read, {} dropped by the kernel (ring full)", w.read, w.dropped);
    if w.learned < w.warmup {
        let _ = writeln!(out, "  warming up: {} of {} events learned as its normal behaviour", w.learned, w.warmup);
    } else {
        let now = if w.anomalous { "anomalous now" } else { "normal now" };
        let _ = writeln!(out, "  warm-up of {} events learned; {} anomalous stretches; {now}", w.warmup, w.stretches);
    }
    if w.model {
        let now = if w.model_anomalous { "anomalous now" } else { "normal now" };
        let _ = writeln!(
            out,
            "  model: {} windows judged; frame score {} (threshold {}, highest {}); {} anomalous stretches; {now}",
            w.windows,
            milli(w.score),
            milli(w.threshold),
            milli(w.peak),
            w.model_stretches
        );
        let _ = writeln!(out, "  response: {} (Studio acts up to {})", w.level, w.limit);
    } else {
        let _ = writeln!(out, "  model: none (Studio has no behaviour model: stide alone)");
    }
    if w.refused > 0 || w.refusals_unplaced > 0 {
        let _ = writeln!(
            out,
            "  servers refused {} of its requests ({} more told of with no Call of its: dropped)",
            w.refused, w.refusals_unplaced
        );
    }
    for line in &w.lines {
        let _ = writeln!(out, "  {}", clip_line(line));
    }
}

/// A line of the watch's, shortened to fit the console.
fn clip_line(line: &str) -> &str {
    match line.char_indices().nth(200) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

fn show_profile(out: &mut String, agent: &str, profile: Profile) {
    match profile {
        Profile::Shaper { mode, syscalls, denied, rows } => {
            let _ = writeln!(out, "profile of {agent}: {mode}; {syscalls} syscalls, {denied} denied");
            for r in rows {
                match r.masks {
                    Some((allowed, used)) => {
                        let _ = writeln!(out, "  {:<8} allowed: {allowed}", clip(&r.what));
                        let _ = writeln!(out, "  {:<8} used:    {used}", clip(&r.what));
                    }
                    None => {
                        let _ = writeln!(out, "  {:<8} (not reported by its server yet)", clip(&r.what));
                    }
                }
            }
        }
        Profile::Counters { why, counters: t } => {
            let _ = writeln!(out, "profile of {agent}: {why}; the kernel's counters of its thread:");
            let _ = writeln!(
                out,
                "  syscalls {}  invocations {}  ipc sent {}  ipc received {}  faults {}  denied {}  cpu ticks {}",
                t.syscalls, t.invocations, t.ipc_sent, t.ipc_received, t.faults, t.denied, t.cpu_ticks
            );
        }
    }
}

fn log(out: &mut String, backend: &mut dyn Backend, n: u32) {
    // Page through from the start, keeping the newest `n`.
    let mut last: VecDeque<LogEntry> = VecDeque::new();
    let mut from = 0u32;
    for _ in 0..MAX_PAGES {
        let page = match backend.log(from) {
            Ok(p) => p,
            Err(e) => return error(out, e, &[]),
        };
        let Some(next) = page.last().map(|e| e.seq.saturating_add(1)) else { break };
        for e in page {
            if last.len() == n as usize {
                last.pop_front();
            }
            last.push_back(e);
        }
        if next <= from {
            break;
        }
        from = next;
    }
    if last.is_empty() {
        let _ = writeln!(out, "Studio has logged no decisions");
    }
    for e in last {
        let _ = writeln!(out, "{:>5}  {}", e.seq, e.text);
    }
}

fn reports(out: &mut String, backend: &mut dyn Backend, n: u32) {
    // Page through from the start, keeping the newest `n`; the drop counts come with every page.
    let mut last: VecDeque<ReportEntry> = VecDeque::new();
    let mut dropped = None;
    let mut from = 0u32;
    for _ in 0..MAX_PAGES {
        let page = match backend.reports(from) {
            Ok(p) => p,
            Err(e) => return error(out, e, &[]),
        };
        dropped.get_or_insert(page.dropped);
        let Some(next) = page.entries.last().map(|e| e.seq.saturating_add(1)) else { break };
        for e in page.entries {
            if last.len() == n as usize {
                last.pop_front();
            }
            last.push_back(e);
        }
        if next <= from {
            break;
        }
        from = next;
    }
    for d in dropped.unwrap_or_default() {
        let _ = writeln!(
            out,
            "dropped  {}: {} reports, {} refusals not logged (over budget)",
            d.from, d.reports, d.refusals
        );
    }
    if last.is_empty() {
        let _ = writeln!(out, "no reports");
    }
    for e in last {
        let _ = writeln!(out, "{:>5}  [{}] {}", e.seq, e.from, e.text);
    }
}

fn mem(out: &mut String, backend: &mut dyn Backend) {
    match backend.memory() {
        Ok(m) => {
            let _ = writeln!(out, "total              {:>9} KiB  memory Studio holds for programs", kib(m.total));
            let _ = writeln!(out, "free               {:>9} KiB  in no program's quota", kib(m.free));
            let _ =
                writeln!(out, "used by programs   {:>9} KiB  objects and pages made for them", kib(m.used_by_programs));
        }
        Err(e) => error(out, e, &[]),
    }
}

/// A `disk` or `net` failure, one line, with what it most likely means.
fn device_error(out: &mut String, e: DeviceError, server: &str, what: &str) {
    match e {
        DeviceError::Agent(AgentError::Service(ServiceError::NotRunning | ServiceError::NotFound)) => {
            let _ = writeln!(out, "error: the {server} server is not running ({what})");
        }
        DeviceError::Agent(AgentError::ServerGone) => {
            let _ = writeln!(out, "error: the {server} server stopped while answering");
        }
        DeviceError::Agent(AgentError::Service(ServiceError::Denied)) => {
            let _ = writeln!(out, "error: denied: the console may not use the {server} server's administration");
        }
        DeviceError::Agent(e) => error(out, e, &[]),
        DeviceError::Store(f) => {
            let _ = writeln!(out, "error: the store answered {f:?}");
        }
    }
}

fn disk(out: &mut String, backend: &mut dyn Backend) {
    let (h, mut usage) = match backend.disk() {
        Ok(d) => d,
        Err(e) => return device_error(out, e, "storage", "no disk, or the disk could not be opened"),
    };
    let used = h.blocks.saturating_sub(h.free_blocks);
    let _ = writeln!(
        out,
        "store: generation {}, {} of {} blocks used ({} KiB free), {} namespaces, {} objects",
        h.generation,
        used,
        h.blocks,
        h.free_blocks.saturating_mul(4),
        h.namespaces,
        h.objects
    );
    let state = if h.read_only { "read-only after a device error" } else { "writable" };
    if h.damaged == 0 {
        let _ = writeln!(out, "health: {state}, nothing damaged found");
    } else {
        let _ = writeln!(out, "health: {state}, {} damaged objects found (reported at start-up)", h.damaged);
    }
    usage.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    let _ = writeln!(out, "PROGRAM                    USED B   QUOTA B   KEYS  RECORDS");
    for u in &usage {
        let _ = writeln!(
            out,
            "{:<24}  {:>8}  {:>8}  {:>5}  {:>7}",
            shown(&u.namespace),
            u.usage.bytes,
            u.usage.quota,
            u.usage.keys,
            u.usage.records
        );
    }
    let _ = writeln!(out, "{} programs store data", usage.len());
}

fn ip(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

fn net(out: &mut String, backend: &mut dyn Backend) {
    let s = match backend.net() {
        Ok(s) => s,
        Err(e) => return device_error(out, e, "network", "no network card"),
    };
    let name = shown(core::str::from_utf8(&s.interface).unwrap_or("?").trim_end_matches('\0'));
    let m = s.mac;
    let _ = writeln!(
        out,
        "{name}: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, rx {} frames ({} dropped), tx {} frames",
        m[0], m[1], m[2], m[3], m[4], m[5], s.rx_frames, s.rx_dropped, s.tx_frames
    );
    match (&s.address, &s.lease) {
        (Some(a), Some(l)) if s.dhcp => {
            let _ = writeln!(
                out,
                "address {}/{} leased from DHCP server {} (at {} ms of the server's clock)",
                ip(a.addr),
                a.prefix,
                ip(l.server),
                l.since_ms
            );
        }
        (Some(a), _) => {
            let _ = writeln!(out, "address {}/{} static (no DHCP answer)", ip(a.addr), a.prefix);
        }
        (None, _) => {
            let _ = writeln!(out, "no address yet (asking DHCP)");
        }
    }
    if let Some(g) = s.gateway {
        let _ = writeln!(out, "gateway {}", ip(g));
    }
    // Name the clients (their badges are program ids).
    let programs =
        pages(|from| backend.list(from), |from, page| from.saturating_add(page.len() as u32)).unwrap_or_default();
    let _ = writeln!(out, "PROGRAM                   TCP  UDP  BUFFERED B");
    for c in &s.clients {
        let name = programs
            .iter()
            .find(|a| a.id == c.client)
            .map_or_else(|| format!("id {}", c.client), |a| String::from(clip(&a.name)));
        let _ = writeln!(out, "{name:<24}  {:>3}  {:>3}  {:>10}", c.tcp, c.udp, c.buffer_bytes);
    }
    let _ = writeln!(out, "{} programs hold sockets", s.clients.len());
}

fn bench(out: &mut String, backend: &mut dyn Backend, calls: u32) {
    match backend.bench(calls) {
        Ok(b) => {
            let per_call = b.total_cycles / u64::from(b.calls.max(1));
            let _ = writeln!(
                out,
                "bench: {} round trips to Studio (MY_MEMORY): {per_call} cycles per call on average, {} at best (rdtsc)",
                b.calls, b.min_cycles
            );
        }
        Err(e) => error(out, e, &[]),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// A pretend system: two programs, a log, and a record of what was asked.
    pub(crate) struct Fake {
        pub(crate) agents: Vec<AgentInfo>,
        pub(crate) log: Vec<LogEntry>,
        pub(crate) reports: ReportPage,
        page: usize,
        pub(crate) asked: Vec<String>,
        /// Studio's decisions not yet printed (a kill makes one).
        pub(crate) decided: Vec<String>,
        /// What `disk` and `net` answer.
        pub(crate) disk: Result<(Health, Vec<NamedUsage>), DeviceError>,
        pub(crate) net: Result<Status, DeviceError>,
    }

    fn agent(id: u64, name: &str, state: AgentState) -> AgentInfo {
        AgentInfo {
            id,
            name: name.into(),
            state,
            server: name == "console",
            priority: if name == "console" { 150 } else { 100 },
            quota: 1 << 20,
            used: 300 * 1024 + 1,
            restarts: 0,
        }
    }

    impl Fake {
        pub(crate) fn new() -> Fake {
            Fake {
                agents: vec![agent(1, "hello", AgentState::Exited), agent(2, "console", AgentState::Running)],
                log: (0..40).map(|i| LogEntry { seq: i, text: format!("decision {i}") }).collect(),
                reports: ReportPage::default(),
                page: 3,
                asked: Vec::new(),
                disk: Err(DeviceError::Agent(AgentError::Service(ServiceError::NotRunning))),
                net: Err(DeviceError::Agent(AgentError::Service(ServiceError::NotRunning))),
                decided: Vec::new(),
            }
        }

        fn find(&mut self, name: &str) -> Result<usize, AgentError> {
            self.agents.iter().position(|a| a.name == name).ok_or(AgentError::Service(ServiceError::NotFound))
        }
    }

    impl Backend for Fake {
        fn reports(&mut self, from: u32) -> Result<ReportPage, AgentError> {
            self.asked.push(format!("reports {from}"));
            let entries = self.reports.entries.iter().filter(|e| e.seq >= from).take(self.page).cloned().collect();
            Ok(ReportPage { dropped: self.reports.dropped.clone(), entries })
        }

        fn list(&mut self, from: u32) -> Result<Vec<AgentInfo>, AgentError> {
            self.asked.push(format!("list {from}"));
            Ok(self.agents.iter().skip(from as usize).take(1).cloned().collect())
        }
        fn caps(&mut self, agent: &str) -> Result<Vec<CapInfo>, AgentError> {
            self.find(agent)?;
            Ok(vec![CapInfo { slot: 2, what: "serves console".into() }, CapInfo { slot: 1, what: "studio".into() }])
        }
        fn grant(&mut self, agent: &str, interface: &str) -> Result<Option<u64>, AgentError> {
            let i = self.find(agent)?;
            if interface != "console" {
                return Err(AgentError::Service(ServiceError::NotFound));
            }
            Ok((self.agents[i].state == AgentState::Running).then_some(16))
        }
        fn revoke(&mut self, agent: &str, _interface: &str) -> Result<(), AgentError> {
            self.find(agent).map(|_| ())
        }
        fn kill(&mut self, agent: &str) -> Result<(), AgentError> {
            let i = self.find(agent)?;
            if agent == "console" {
                return Err(AgentError::Service(ServiceError::InvalidArgument));
            }
            if self.agents[i].state != AgentState::Running {
                return Err(AgentError::Service(ServiceError::Busy));
            }
            self.agents[i].state = AgentState::Stopped;
            self.decided.push(format!("[studio] kill {agent}: asked by console"));
            Ok(())
        }
        fn start(&mut self, agent: &str) -> Result<u64, AgentError> {
            let i = self.find(agent)?;
            if self.agents[i].state == AgentState::Running {
                return Err(AgentError::Service(ServiceError::Busy));
            }
            self.agents[i].state = AgentState::Running;
            Ok(self.agents[i].id)
        }
        fn log(&mut self, from: u32) -> Result<Vec<LogEntry>, AgentError> {
            self.asked.push(format!("log {from}"));
            Ok(self.log.iter().filter(|e| e.seq >= from).take(self.page).cloned().collect())
        }
        fn memory(&mut self) -> Result<SystemMemory, AgentError> {
            Ok(SystemMemory { total: 192 << 20, free: 180 << 20, used_by_programs: 3 << 20 })
        }
        fn watch(&mut self, agent: &str) -> Result<WatchReport, AgentError> {
            let i = self.find(agent)?;
            if self.agents[i].state != AgentState::Running {
                return Err(AgentError::Service(ServiceError::Busy));
            }
            if agent == "console" {
                return Ok(WatchReport::default());
            }
            Ok(WatchReport {
                traced: true,
                read: 5000,
                dropped: 12,
                learned: 2048,
                warmup: 2048,
                stretches: 1,
                anomalous: true,
                lines: vec!["behaves unlike its warm-up from event 2425".into()],
                model: agent == "worker",
                windows: 4985,
                score: 875,
                threshold: 500,
                peak: 1000,
                model_stretches: 2,
                model_anomalous: true,
                level: "throttle".into(),
                limit: "kill".into(),
                refused: 3,
                refusals_unplaced: 1,
            })
        }
        fn follow(&mut self, agent: &str, seconds: u32) -> Result<(), AgentError> {
            let i = self.find(agent)?;
            if self.agents[i].state != AgentState::Running {
                return Err(AgentError::Service(ServiceError::Busy));
            }
            self.asked.push(format!("follow {agent} {seconds}"));
            Ok(())
        }
        fn allow(&mut self, agent: &str) -> Result<(), AgentError> {
            let i = self.find(agent)?;
            if self.agents[i].state != AgentState::Running && self.agents[i].state != AgentState::Suspended {
                return Err(AgentError::Service(ServiceError::Busy));
            }
            self.agents[i].state = AgentState::Running;
            Ok(())
        }
        fn resume(&mut self, agent: &str) -> Result<(), AgentError> {
            let i = self.find(agent)?;
            if self.agents[i].state != AgentState::Suspended {
                return Err(AgentError::Service(ServiceError::Busy));
            }
            self.agents[i].state = AgentState::Running;
            Ok(())
        }
        fn profile(&mut self, agent: &str) -> Result<Profile, AgentError> {
            self.find(agent)?;
            if agent == "console" {
                let rows = vec![
                    ProfileRow { what: "kernel".into(), masks: Some(("call, recv".into(), "call".into())) },
                    ProfileRow { what: "echo".into(), masks: None },
                ];
                return Ok(Profile::Shaper { mode: "enforcing".into(), syscalls: 99, denied: 1, rows });
            }
            let counters = Telemetry {
                syscalls: 7,
                invocations: 3,
                ipc_sent: 2,
                ipc_received: 1,
                faults: 0,
                denied: 0,
                cpu_ticks: 4,
            };
            Ok(Profile::Counters { why: "the syscall shaper is not running".into(), counters })
        }
        fn bench(&mut self, calls: u32) -> Result<Bench, AgentError> {
            Ok(Bench { calls, total_cycles: u64::from(calls) * 5000, min_cycles: 4000 })
        }
        fn shutdown(&mut self) -> AgentError {
            self.asked.push("shutdown".into());
            AgentError::Service(ServiceError::KernelError)
        }
        fn disk(&mut self) -> Result<(Health, Vec<NamedUsage>), DeviceError> {
            self.disk.clone()
        }
        fn net(&mut self) -> Result<Status, DeviceError> {
            self.net.clone()
        }
        fn log_level(&mut self, agent: &str, level: Option<Level>) -> Result<(Level, u64), AgentError> {
            self.find(agent)?;
            self.asked.push(format!("loglevel {agent} {level:?}"));
            Ok((level.unwrap_or(Level::Info), 7))
        }

        fn decisions(&mut self) -> Vec<String> {
            core::mem::take(&mut self.decided)
        }
    }

    fn run(fake: &mut Fake, line: &str) -> String {
        let mut out = String::new();
        assert_eq!(execute(line, fake, &mut out), Outcome::Continue, "{line}");
        assert!(out.ends_with('\n'), "{line}: {out:?}");
        out
    }

    #[test]
    fn help_lists_every_command_on_one_line_each() {
        let out = run(&mut Fake::new(), "help");
        for c in COMMANDS {
            assert_eq!(
                out.lines().filter(|l| l.trim_start().starts_with(&format!("{} ", c.name))).count(),
                1,
                "{}",
                c.name
            );
        }
        assert_eq!(out.lines().count(), COMMANDS.len() + 1);
        assert!(run(&mut Fake::new(), "help kill").starts_with("usage: kill AGENT"));
        assert!(run(&mut Fake::new(), "help nope").starts_with("error: unknown command `nope`"));
    }

    #[test]
    fn studio_explain_shows_the_watch_and_its_reasons() {
        let mut fake = Fake::new();
        fake.agents.push(agent(3, "worker", AgentState::Running));
        let out = run(&mut fake, "studio explain worker");
        assert!(out.starts_with("watch of worker: 5000 events read, 12 dropped"), "{out}");
        assert!(run(&mut fake, "studio explain hello").contains("`hello` is not running"));
        assert!(
            out.contains("1 anomalous stretches; anomalous now") && out.contains("behaves unlike its warm-up"),
            "{out}"
        );
        assert!(
            out.contains(
                "model: 4985 windows judged; frame score 0.875 (threshold 0.500, highest 1.000); 2 anomalous stretches; anomalous now"
            ),
            "{out}"
        );
        assert!(run(&mut fake, "studio explain console").contains("console is not traced"));
        assert!(run(&mut fake, "studio explain nosuch").contains("no program `nosuch`"));
        assert!(out.contains("  response: throttle (Studio acts up to kill)"), "{out}");
        assert!(
            out.contains("  servers refused 3 of its requests (1 more told of with no Call of its: dropped)"),
            "{out}"
        );
        assert!(run(&mut fake, "studio frob worker").starts_with("usage: studio explain|watch|allow|resume AGENT"));
        let now = run(&mut fake, "studio watch worker");
        assert_eq!(
            now,
            "worker: frame score 0.875 (threshold 0.500, highest 1.000); 4985 windows judged; response throttle (up to kill)\n\
             worker: Studio's live lines for 30 s (`studio watch worker off` ends them)\n"
        );
        assert_eq!(fake.asked.last().map(String::as_str), Some("follow worker 30"));
        assert!(
            run(&mut fake, "studio watch worker 600").ends_with("for 600 s (`studio watch worker off` ends them)\n")
        );
        assert_eq!(run(&mut fake, "studio watch worker off"), "worker: no more live lines\n");
        assert_eq!(fake.asked.last().map(String::as_str), Some("follow worker 0"));
        let asked = fake.asked.len();
        for bad in ["0", "601", "-1", "soon"] {
            let out = run(&mut fake, &format!("studio watch worker {bad}"));
            assert!(out.contains("is not a number from 1 to 600"), "{bad}: {out}");
        }
        assert!(run(&mut fake, "studio explain worker 5").starts_with("usage: studio"), "only watch takes a time");
        assert!(run(&mut fake, "studio watch hello").contains("`hello` is not running"));
        assert_eq!(fake.asked.len(), asked, "nothing asked of Studio for a bad time or another command's");
    }

    /// Attack: odd arguments to `studio watch AGENT [SECONDS|off]` — `off` in another case, 0
    /// and -0, a time one past the longest, past `u32`, in another notation, extra words, no
    /// agent — to have Studio asked for a follow it did not mean (0 taken as "no longer", a
    /// wrapped time) or an error for another command's words. Each is refused by the shell
    /// before Studio is asked; `off` asks only the `FOLLOW` of 0 (no scores first); a number
    /// with leading zeros or a sign is read as itself, within 1 to 600; an `off` for a program
    /// not running says so.
    ///
    /// HELD.
    #[test]
    fn studio_watch_takes_a_time_from_1_to_600_or_off_and_nothing_else() {
        let mut fake = Fake::new();
        fake.agents.push(agent(3, "worker", AgentState::Running));
        let asked = fake.asked.len();
        for bad in ["OFF", "Off", "0", "-0", "601", "4294967296", "4294967396", "99999999999999999999", "1e2", "30s"] {
            let out = run(&mut fake, &format!("studio watch worker {bad}"));
            assert!(out.contains("is not a number from 1 to 600"), "{bad}: {out}");
            assert!(out.contains("usage: studio explain|watch|allow|resume AGENT [SECONDS|off]"), "{bad}: {out}");
        }
        for line in
            ["studio watch", "studio watch worker 5 5", "studio watch worker off off", "studio watch worker off now"]
        {
            assert!(run(&mut fake, line).starts_with("usage: studio"), "{line}");
        }
        assert_eq!(fake.asked.len(), asked, "Studio was asked: {:?}", &fake.asked[asked..]);
        assert_eq!(run(&mut fake, "studio watch worker off"), "worker: no more live lines\n");
        assert_eq!(fake.asked[asked..], ["follow worker 0"]);
        for (typed, seconds) in [("005", 5), ("+5", 5), ("600", 600), ("1", 1)] {
            let out = run(&mut fake, &format!("studio watch worker {typed}"));
            assert!(
                out.ends_with(&format!("for {seconds} s (`studio watch worker off` ends them)\n")),
                "{typed}: {out}"
            );
            assert_eq!(fake.asked.last().cloned(), Some(format!("follow worker {seconds}")));
        }
        assert!(run(&mut fake, "studio watch hello off").contains("`hello` is not running"));
    }

    #[test]
    fn studio_allow_and_resume_say_what_they_did_or_why_not() {
        let mut fake = Fake::new();
        fake.agents.push(agent(3, "worker", AgentState::Suspended));
        fake.agents.push(agent(4, "done", AgentState::Exited));
        assert!(run(&mut fake, "ps").contains("suspended"));
        assert_eq!(run(&mut fake, "studio resume worker"), "worker runs again (what it lost stays revoked)\n");
        assert!(run(&mut fake, "studio resume worker").contains("`worker` is not suspended"));
        assert_eq!(
            run(&mut fake, "studio allow worker"),
            "worker: what the watch found anomalous is accepted as normal for this run\n"
        );
        assert!(run(&mut fake, "studio allow done").contains("neither running nor suspended"));
        assert!(run(&mut fake, "studio allow nosuch").contains("no program `nosuch`"));
    }

    #[test]
    fn empty_lines_do_nothing_and_unknown_commands_are_one_line() {
        let mut out = String::new();
        assert_eq!(execute("   ", &mut Fake::new(), &mut out), Outcome::Continue);
        assert!(out.is_empty());
        let out = run(&mut Fake::new(), "frobnicate now");
        assert_eq!(out, "error: unknown command `frobnicate` (type `help` for the list)\n");
        let long = "x".repeat(150);
        let out = run(&mut Fake::new(), &long);
        assert!(out.len() < 120, "{out}");
    }

    #[test]
    fn wrong_argument_counts_print_usage() {
        let mut f = Fake::new();
        assert_eq!(run(&mut f, "caps"), "usage: caps AGENT  (the capabilities Studio put in AGENT's CNode, by slot)\n");
        assert!(run(&mut f, "grant hello").starts_with("usage: grant AGENT INTERFACE"));
        assert!(run(&mut f, "kill a b").starts_with("usage: kill AGENT"));
        assert!(run(&mut f, "ps extra").starts_with("usage: ps  ("));
        assert!(run(&mut f, "log 1 2").starts_with("usage: log [N]"));
        assert!(f.asked.is_empty(), "nothing was asked: {:?}", f.asked);
    }

    #[test]
    fn ps_pages_through_every_program() {
        let mut f = Fake::new();
        let out = run(&mut f, "ps");
        assert_eq!(f.asked, ["list 0", "list 1", "list 2"]);
        let console = out.lines().find(|l| l.contains("console")).unwrap();
        assert!(console.contains("running") && console.contains("server") && console.contains("150"), "{console}");
        assert!(console.contains(" 301 ") && console.contains(" 1024 "), "used and quota in KiB: {console}");
        assert!(out.lines().any(|l| l.contains("hello") && l.contains("exited")));
        assert!(out.ends_with("2 programs, 1 running\n"));
    }

    #[test]
    fn caps_grant_revoke() {
        let mut f = Fake::new();
        let out = run(&mut f, "caps console");
        // By slot, whatever order Studio sent.
        assert!(out.find("slot   1").unwrap() < out.find("slot   2").unwrap(), "{out}");
        assert!(out.contains("slot   1  studio") && out.contains("slot   2  serves console"), "{out}");
        assert_eq!(
            run(&mut f, "grant console console"),
            "granted: console may use `console` (capability in its slot 16)\n"
        );
        // Not running: recorded all the same, and the answer says so (not an error).
        assert_eq!(
            run(&mut f, "grant hello console"),
            "granted: hello may use `console` (no capability placed: hello or the server of `console` is not running; it may look `console` up once both run)\n"
        );
        assert!(run(&mut f, "grant hello nosuch").starts_with("error: not found: "));
        assert_eq!(run(&mut f, "revoke hello console"), "revoked: hello may no longer use `console`\n");
        assert!(run(&mut f, "caps ghost").starts_with("error: not found: no program `ghost`"));
    }

    #[test]
    fn kill_and_start_report_studio_errors() {
        let mut f = Fake::new();
        assert!(run(&mut f, "kill hello").starts_with("error: busy"));
        assert!(run(&mut f, "kill console").starts_with("error: invalid argument"));
        assert_eq!(run(&mut f, "start hello"), "started hello (id 1)\n");
        assert!(run(&mut f, "start hello").starts_with("error: busy"));
        assert_eq!(run(&mut f, "kill hello"), "killed hello: capabilities revoked, memory reclaimed\n");
        assert!(run(&mut f, "ps").lines().any(|l| l.contains("hello") && l.contains("stopped")));
        assert!(run(&mut f, "kill nobody").starts_with("error: not found"));
    }

    #[test]
    fn log_shows_the_newest_entries() {
        let mut f = Fake::new();
        let out = run(&mut f, "log");
        assert_eq!(out.lines().count(), LOG_DEFAULT as usize);
        assert!(out.lines().next().unwrap().ends_with("decision 20"));
        assert!(out.lines().last().unwrap().ends_with("decision 39"));
        let out = run(&mut f, "log 2");
        assert_eq!(out, "   38  decision 38\n   39  decision 39\n");
        f.log.clear();
        assert_eq!(run(&mut f, "log"), "Studio has logged no decisions\n");
    }

    #[test]
    fn reports_show_the_newest_and_the_drops() {
        use ozone_agent_sdk::protocol::studio::Dropped;
        let mut f = Fake::new();
        assert_eq!(run(&mut f, "reports"), "no reports\n");
        f.reports.entries =
            (0..30).map(|i| ReportEntry { seq: i, from: "echo".into(), text: format!("report {i}") }).collect();
        f.reports.dropped = vec![Dropped { from: "hostile".into(), reports: 2268, refusals: 3 }];
        let out = run(&mut f, "reports 2");
        assert_eq!(
            out,
            "dropped  hostile: 2268 reports, 3 refusals not logged (over budget)\n   28  [echo] report 28\n   29  \
             [echo] report 29\n"
        );
        assert!(run(&mut f, "reports 0").contains("usage: reports [N]"));
    }

    #[test]
    fn numbers_are_checked() {
        let mut f = Fake::new();
        for bad in ["0", "257", "-1", "99999999999999999999", "ten", "1e3"] {
            let out = run(&mut f, &format!("log {bad}"));
            assert!(out.starts_with("error: `") && out.contains("is not a number from 1 to 256"), "{bad}: {out}");
            assert!(out.contains("usage: log [N]"));
        }
        assert!(run(&mut f, "bench 100001").contains("from 1 to 100000"));
        assert!(f.asked.is_empty());
    }

    #[test]
    fn disk_shows_health_and_each_programs_use_or_why_not() {
        use ozone_agent_sdk::protocol::store::Usage;
        let mut f = Fake::new();
        assert_eq!(
            run(&mut f, "disk"),
            "error: the storage server is not running (no disk, or the disk could not be opened)\n"
        );
        f.disk = Err(DeviceError::Agent(AgentError::Service(ServiceError::Denied)));
        assert!(run(&mut f, "disk").starts_with("error: denied"));
        f.disk = Err(DeviceError::Store(Fault::Corrupt));
        assert_eq!(run(&mut f, "disk"), "error: the store answered Corrupt\n");
        let health = Health {
            generation: 9,
            blocks: 4096,
            free_blocks: 4000,
            namespaces: 2,
            objects: 5,
            damaged: 1,
            read_only: true,
        };
        let usage = |n: &str, bytes| NamedUsage {
            namespace: n.into(),
            usage: Usage { bytes, keys: 3, records: 1, quota: 98304 },
        };
        f.disk = Ok((health, vec![usage("zeta", 10), usage("alpha", 4096)]));
        let out = run(&mut f, "disk");
        assert!(
            out.starts_with("store: generation 9, 96 of 4096 blocks used (16000 KiB free), 2 namespaces, 5 objects\n"),
            "{out}"
        );
        assert!(out.contains("health: read-only after a device error, 1 damaged objects found"), "{out}");
        let alpha = out.find("alpha").unwrap();
        assert!(alpha < out.find("zeta").unwrap(), "sorted by program: {out}");
        assert!(out.contains("alpha                         4096     98304      3        1"), "{out}");
        assert!(out.ends_with("2 programs store data\n"), "{out}");
        assert_eq!(
            run(&mut f, "disk x"),
            "usage: disk  (the store: health, and the space each program uses of its quota)\n"
        );
    }

    #[test]
    fn net_shows_the_interface_and_names_each_programs_sockets() {
        use ozone_agent_sdk::protocol::net::{Cidr, ClientSockets, Lease};
        let mut f = Fake::new();
        assert_eq!(run(&mut f, "net"), "error: the network server is not running (no network card)\n");
        let cidr = Cidr { addr: [10, 0, 2, 15], prefix: 24 };
        let mut status = Status {
            interface: *b"eth0\0\0\0\0",
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            dhcp: true,
            address: Some(cidr),
            gateway: Some([10, 0, 2, 2]),
            lease: Some(Lease {
                address: cidr,
                router: Some([10, 0, 2, 2]),
                server: [10, 0, 2, 2],
                dns: None,
                since_ms: 1500,
            }),
            rx_frames: 12,
            tx_frames: 10,
            rx_dropped: 1,
            clients: vec![
                ClientSockets { client: 1, tcp: 2, udp: 0, buffer_bytes: 8192 },
                ClientSockets { client: 77, tcp: 0, udp: 1, buffer_bytes: 4096 },
            ],
        };
        f.net = Ok(status.clone());
        let out = run(&mut f, "net");
        assert!(out.starts_with("eth0: mac 52:54:00:12:34:56, rx 12 frames (1 dropped), tx 10 frames\n"), "{out}");
        assert!(out.contains("address 10.0.2.15/24 leased from DHCP server 10.0.2.2"), "{out}");
        assert!(out.contains("gateway 10.0.2.2\n"), "{out}");
        assert!(out.contains("hello                       2    0        8192\n"), "program 1 is named: {out}");
        assert!(out.contains("id 77                       0    1        4096\n"), "unknown ids stay ids: {out}");
        status.dhcp = false;
        status.lease = None;
        status.address = Some(Cidr { addr: [10, 0, 3, 86], prefix: 24 });
        f.net = Ok(status);
        assert!(run(&mut f, "net").contains("address 10.0.3.86/24 static"));
    }

    /// Names the storage and network servers give (a namespace, an interface) are printed as one
    /// piece of one line: no line break or terminal escape of theirs reaches the terminal.
    #[test]
    fn server_given_names_cannot_forge_lines_or_escapes() {
        use ozone_agent_sdk::protocol::store::Usage;
        let mut f = Fake::new();
        let health = Health {
            generation: 1,
            blocks: 8,
            free_blocks: 8,
            namespaces: 1,
            objects: 0,
            damaged: 0,
            read_only: false,
        };
        let forged = NamedUsage {
            namespace: "x\n[studio] kill console\x1b[2J\u{9b}2J\u{202e}".into(),
            usage: Usage { bytes: 1, keys: 1, records: 0, quota: 2 },
        };
        f.disk = Ok((health, vec![forged]));
        let out = run(&mut f, "disk");
        assert_eq!(out.lines().count(), 5, "{out}");
        assert!(out.chars().all(|c| c == '\n' || ozone_agent_sdk::protocol::console::printable(c)), "{out:?}");
        assert!(out.contains("x?[studio] kill console?[2J?2J?"), "{out}");
        f.net = Ok(Status {
            interface: *b"e\x1b[2J\n\r\0",
            mac: [0; 6],
            dhcp: false,
            address: None,
            gateway: None,
            lease: None,
            rx_frames: 0,
            tx_frames: 0,
            rx_dropped: 0,
            clients: vec![],
        });
        let out = run(&mut f, "net");
        assert!(out.chars().all(|c| c == '\n' || ozone_agent_sdk::protocol::console::printable(c)), "{out:?}");
        assert!(out.starts_with("e?[2J??: mac"), "{out}");
    }

    #[test]
    fn mem_profile_bench() {
        let mut f = Fake::new();
        let out = run(&mut f, "mem");
        assert!(out.contains("total                 196608 KiB"), "{out}");
        assert!(out.contains("used by programs        3072 KiB"), "{out}");
        let out = run(&mut f, "profile hello");
        assert!(out.contains("shaper is not running") && out.contains("syscalls 7"), "{out}");
        let out = run(&mut f, "profile console");
        assert_eq!(
            out,
            "profile of console: enforcing; 99 syscalls, 1 denied\n  kernel   allowed: call, recv\n  \
             kernel   used:    call\n  echo     (not reported by its server yet)\n"
        );
        let out = run(&mut f, "bench 10");
        assert!(out.contains("10 round trips") && out.contains("5000 cycles per call"), "{out}");
    }

    #[test]
    fn loglevel_sets_and_shows_a_programs_level() {
        let mut f = Fake::new();
        assert_eq!(
            run(&mut f, "loglevel hello warn"),
            "hello logs at warn and above; 7 of its lines dropped by the rate limit\n"
        );
        assert_eq!(
            run(&mut f, "loglevel hello").lines().next().unwrap(),
            "hello logs at info and above; 7 of its lines dropped by the rate limit"
        );
        let out = run(&mut f, "loglevel hello loud");
        assert!(
            out.starts_with("error: `loud` is not a level") && out.contains("usage: loglevel AGENT [LEVEL]"),
            "{out}"
        );
        assert!(run(&mut f, "loglevel ghost info").starts_with("error: not found: no program `ghost`"));
        assert_eq!(f.asked, ["loglevel hello Some(Warn)", "loglevel hello None"]);
    }

    #[test]
    fn shutdown_asks_the_server_to_power_off() {
        let mut out = String::new();
        assert_eq!(execute("shutdown", &mut Fake::new(), &mut out), Outcome::Shutdown);
        assert_eq!(out, "shutting down\n");
        let mut out = String::new();
        shutdown_failed(&mut out, AgentError::Service(ServiceError::KernelError));
        assert!(out.starts_with("error: kernel operation failed"));
    }

    #[test]
    fn garbage_never_panics() {
        let mut f = Fake::new();
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let len = (seed % 60) as usize;
            let line: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let words = ["ps", "kill", "log", "bench", "caps", " ", "help", "grant", "0", "x"];
                    if seed.is_multiple_of(3) {
                        words[(seed >> 8) as usize % words.len()].to_string()
                    } else {
                        char::from((seed % 95) as u8 + 32).to_string()
                    }
                })
                .collect();
            let mut out = String::new();
            let _ = execute(&line, &mut f, &mut out);
        }
    }
}
