//! Studio's cognition for performance: which agents are CPU-bound and which wait for work, from
//! how they behave, and their priorities adjusted within their band.
//!
//! Every [`PERIOD_TICKS`] of Studio's ticks (100 ms) Studio reads each running agent's kernel
//! counters (`ozone_abi::telemetry::ThreadCounters`): the timer ticks that found it running
//! (`cpu_ticks`, charged by the scheduler) and the messages it received (`ipc_received`:
//! requests and replies, each from another thread). An agent caught running at
//! [`CPU_BOUND_TICKS`] or more of the period's timer ticks while receiving at most
//! [`MESSAGES_PER_TICK`] messages per tick it ran is **CPU-bound** (a compute loop, a spinner);
//! anything else **interactive** (it waits for requests or replies, or runs too little to say).
//!
//! Messages, not syscalls: a spinner can make as many cheap syscalls as it likes (a poll of its
//! own notification, a yield, a refused invocation) without waiting for anything, but a message
//! needs another thread to send or answer it. What still passes for interactive is a loop of
//! calls to a server that answers at once: it is request traffic by every counter the kernel
//! keeps, and a flood of calls is the watch's to judge (docs/studio.md, "Performance"). A CPU-bound
//! agent's priority goes down [`PERF_STEP`] below the description's (its band's floor, not below
//! 1), so that an interactive agent of the same priority runs as soon as its work arrives instead
//! of waiting behind the loop's timeslices; after [`CALM_PERIODS`] interactive periods in a row it
//! gets its priority back. Each change is a logged decision with its reasons. The watch's
//! throttle (a graded response) outranks this: a throttled agent's priority is left alone.
//!
//! `[system] adapt = false` turns it off (`cargo xtask bench`'s `echo_latency_under_load`
//! measures both). Servers are not adjusted: their priorities order the system; nor are agents
//! that provide an interface (they serve requests: a client could otherwise get the agent that
//! serves it demoted by sending a request just before each timer tick, or by asking for costly
//! work).
//!
//! A run is judged from its first instruction (its thread's counters start at zero, so the
//! baseline is zero, [`Perf::starting`]); its lines are bounded ([`LINES_PER_RUN`], then one
//! line saying the rest are not logged) and refill no program's log budget, so an agent that
//! swings between busy and calm cannot flush the decision log. A priority change the kernel
//! refuses leaves the state as it was, and is tried again at the next period.
//!
//! **What it cannot see** (docs/studio.md, "Performance"): `cpu_ticks` is sampled at timer
//! ticks, so a program that learns the tick's phase (from `rdtsc`) and blocks across each tick
//! is never caught running; and a loop that makes a few cheap calls a tick (Studio answers an
//! unknown method at once) receives enough messages to pass for interactive. Both need the
//! kernel to account CPU time exactly (the TSC read at every switch), which it does not yet.

use alloc::format;

use ozone_agent_sdk::protocol::studio::{AgentState, Telemetry};
use ozone_agent_sdk::protocol::system::Kind;

use crate::state::Studio;

/// Studio ticks (5 ms each) per classification period.
pub const PERIOD_TICKS: u32 = 20;

/// Timer ticks (of the 10 in a period at 100 Hz) an agent must be caught running at to be
/// CPU-bound.
pub const CPU_BOUND_TICKS: u64 = 2;

/// At most this many messages received per timer tick it ran, for a CPU-bound agent.
pub const MESSAGES_PER_TICK: u64 = 4;

/// How far below its description's priority a CPU-bound agent goes.
pub const PERF_STEP: u8 = 8;

/// Interactive periods in a row before a demoted agent gets its priority back.
pub const CALM_PERIODS: u32 = 3;

/// Lines perf logs about one run of an agent (then one saying the rest are not logged).
pub const LINES_PER_RUN: u32 = 8;

/// What Studio knows of one agent run's use of the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Perf {
    /// The counters at the last period's end (`None` before the first reading of this run).
    last: Option<Telemetry>,
    /// Its class in the last period.
    pub cpu_bound: bool,
    /// Its priority is lowered.
    pub demoted: bool,
    /// Interactive periods in a row while demoted.
    calm: u32,
    /// Lines logged about this run.
    lines: u32,
    /// The counters' change over the last period, for the log: (cpu ticks, messages received,
    /// syscalls).
    pub delta: (u64, u64, u64),
}

/// The class of a period in which an agent was caught running at `cpu` timer ticks and received
/// `received` messages.
pub fn cpu_bound(cpu: u64, received: u64) -> bool {
    cpu >= CPU_BOUND_TICKS && received <= MESSAGES_PER_TICK.saturating_mul(cpu)
}

impl Perf {
    /// A new run's: its thread's counters start at zero, so its first period is judged too.
    pub fn starting() -> Perf {
        Perf { last: Some(Telemetry::default()), ..Perf::default() }
    }

    /// The priority change `period` asked for was refused by the kernel: undo it, so the next
    /// period asks again.
    pub fn refused(&mut self, lower: bool) {
        if lower {
            self.demoted = false;
        } else {
            self.demoted = true;
            self.calm = CALM_PERIODS - 1;
        }
    }

    /// The period ended with counters `now`: whether its priority should change (`Some(true)`:
    /// lower it, `Some(false)`: restore it).
    pub fn period(&mut self, now: Telemetry) -> Option<bool> {
        let last = self.last.replace(now)?;
        let cpu = now.cpu_ticks.saturating_sub(last.cpu_ticks);
        let received = now.ipc_received.saturating_sub(last.ipc_received);
        self.delta = (cpu, received, now.syscalls.saturating_sub(last.syscalls));
        self.cpu_bound = cpu_bound(cpu, received);
        match (self.cpu_bound, self.demoted) {
            (true, false) => {
                self.demoted = true;
                self.calm = 0;
                Some(true)
            }
            (true, true) => {
                self.calm = 0;
                None
            }
            (false, true) => {
                self.calm += 1;
                if self.calm >= CALM_PERIODS {
                    self.demoted = false;
                    self.calm = 0;
                    Some(false)
                } else {
                    None
                }
            }
            (false, false) => None,
        }
    }
}

impl Studio {
    /// At every [`PERIOD_TICKS`]-th tick: classify every running agent and adjust its priority.
    pub(crate) fn perf_tick(&mut self) {
        if !self.desc.system.adapt || !self.watch_ticks.is_multiple_of(u64::from(PERIOD_TICKS)) {
            return;
        }
        for i in 0..self.agents.len() {
            let a = &self.agents[i];
            let (Some(p), true, true, true) =
                (a.proc, a.state == AgentState::Running, a.prog.kind == Kind::Agent, a.prog.provides.is_empty())
            else {
                continue;
            };
            let Ok(now) = self.k.telemetry(p.tcb) else { continue };
            let Some(lower) = self.agents[i].perf.period(now) else { continue };
            let throttled = self.agents[i].watch.as_ref().is_some_and(crate::watch::Watch::throttled);
            let name = self.agents[i].prog.name.clone();
            let band = self.agents[i].prog.priority;
            let (cpu, received, syscalls) = self.agents[i].perf.delta;
            if throttled {
                // The watch's response holds its priority; the class is still kept.
                continue;
            }
            let line = if lower {
                let to = band.saturating_sub(PERF_STEP).max(1);
                let done = self.k.set_priority(p.tcb, u64::from(to));
                if done.is_err() {
                    self.agents[i].perf.refused(true);
                }
                format!(
                    "perf {name}: CPU-bound (running at {cpu} of the last {} timer ticks, {received} messages received, {syscalls} syscalls): priority {band} -> {to} ({done:?})",
                    PERIOD_TICKS / 2
                )
            } else {
                let done = self.k.set_priority(p.tcb, u64::from(band));
                if done.is_err() {
                    self.agents[i].perf.refused(false);
                }
                format!(
                    "perf {name}: interactive again ({CALM_PERIODS} periods: running at {cpu} of the last {} timer ticks, {received} messages received, {syscalls} syscalls): priority {band} restored ({done:?})",
                    PERIOD_TICKS / 2
                )
            };
            let perf = &mut self.agents[i].perf;
            perf.lines = perf.lines.saturating_add(1);
            if perf.lines <= LINES_PER_RUN {
                self.log.note(&line);
            } else if perf.lines == LINES_PER_RUN + 1 {
                self.log.note(&format!("perf {name}: further lines about this run are not logged"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(cpu_ticks: u64, received: u64) -> Telemetry {
        Telemetry { cpu_ticks, ipc_received: received, syscalls: 2 * received, ..Telemetry::default() }
    }

    #[test]
    fn a_loop_is_cpu_bound_a_waiter_is_not() {
        assert!(cpu_bound(5, 0), "a spinner");
        assert!(cpu_bound(10, 40), "a compute loop that gets a few messages");
        assert!(!cpu_bound(10, 41));
        assert!(!cpu_bound(1, 0), "caught running once: not enough to say");
        assert!(!cpu_bound(0, 5000), "a request server that blocks");
        assert!(!cpu_bound(u64::MAX, u64::MAX) || MESSAGES_PER_TICK.saturating_mul(u64::MAX) == u64::MAX);
    }

    #[test]
    fn syscalls_alone_do_not_make_a_loop_interactive() {
        let mut p = Perf::default();
        assert_eq!(p.period(Telemetry::default()), None);
        let spinner = Telemetry { cpu_ticks: 10, syscalls: 100_000, ..Telemetry::default() };
        assert_eq!(p.period(spinner), Some(true), "cheap syscalls without a message: CPU-bound");
        let mut q = Perf::default();
        assert_eq!(q.period(Telemetry::default()), None);
        let client = Telemetry { cpu_ticks: 10, syscalls: 100_000, ipc_received: 50_000, ..Telemetry::default() };
        assert_eq!(q.period(client), None, "answered calls: request traffic");
    }

    #[test]
    fn lowered_when_cpu_bound_restored_after_calm_periods() {
        let mut p = Perf::default();
        assert_eq!(p.period(at(0, 0)), None, "the first reading is a baseline");
        assert_eq!(p.period(at(6, 0)), Some(true));
        assert!(p.demoted && p.cpu_bound);
        assert_eq!(p.period(at(12, 1)), None, "still CPU-bound: nothing to change");
        assert_eq!(p.period(at(12, 50)), None);
        assert_eq!(p.period(at(12, 90)), None);
        assert_eq!(p.period(at(16, 91)), None, "CPU-bound again: the calm count starts over");
        assert_eq!(p.period(at(16, 95)), None);
        assert_eq!(p.period(at(17, 99)), None);
        assert_eq!(p.period(at(17, 120)), Some(false), "three interactive periods");
        assert!(!p.demoted);
        // Counters that go backwards (a new run's thread read by mistake) are no panic.
        assert_eq!(p.period(at(0, 0)), None);
    }

    #[test]
    fn a_new_run_is_judged_from_its_first_period_and_a_refusal_is_asked_again() {
        let mut p = Perf::starting();
        assert_eq!(p.period(at(10, 0)), Some(true), "no baseline period to hide in");
        p.refused(true);
        assert!(!p.demoted);
        assert_eq!(p.period(at(20, 0)), Some(true), "asked again");
        for n in 1..CALM_PERIODS {
            assert_eq!(p.period(at(20, 100 * u64::from(n))), None);
        }
        assert_eq!(p.period(at(20, 1000)), Some(false));
        p.refused(false);
        assert!(p.demoted);
        assert_eq!(p.period(at(20, 2000)), Some(false), "the restore is asked again at the next calm period");
    }
}
