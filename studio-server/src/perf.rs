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
//! measures both). Servers are not adjusted: their priorities order the system.

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
}

/// The class of a period in which an agent was caught running at `cpu` timer ticks and received
/// `received` messages.
pub fn cpu_bound(cpu: u64, received: u64) -> bool {
    cpu >= CPU_BOUND_TICKS && received <= MESSAGES_PER_TICK.saturating_mul(cpu)
}

impl Perf {
    /// The period ended with counters `now`: whether its priority should change (`Some(true)`:
    /// lower it, `Some(false)`: restore it).
    pub fn period(&mut self, now: Telemetry) -> Option<bool> {
        let last = self.last.replace(now)?;
        let cpu = now.cpu_ticks.saturating_sub(last.cpu_ticks);
        let received = now.ipc_received.saturating_sub(last.ipc_received);
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

    /// The counters' change over the last period, for the log: (cpu ticks, messages received,
    /// syscalls).
    pub fn last_delta(&self, before: Telemetry) -> (u64, u64, u64) {
        let now = self.last.unwrap_or_default();
        (
            now.cpu_ticks.saturating_sub(before.cpu_ticks),
            now.ipc_received.saturating_sub(before.ipc_received),
            now.syscalls.saturating_sub(before.syscalls),
        )
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
            let (Some(p), true, true) = (a.proc, a.state == AgentState::Running, a.prog.kind == Kind::Agent) else {
                continue;
            };
            let Ok(now) = self.k.telemetry(p.tcb) else { continue };
            let before = self.agents[i].perf.last.unwrap_or_default();
            let Some(lower) = self.agents[i].perf.period(now) else { continue };
            let throttled = self.agents[i].watch.as_ref().is_some_and(crate::watch::Watch::throttled);
            let name = self.agents[i].prog.name.clone();
            let band = self.agents[i].prog.priority;
            let (cpu, received, syscalls) = self.agents[i].perf.last_delta(before);
            if throttled {
                // The watch's response holds its priority; the class is still kept.
                continue;
            }
            if lower {
                let to = band.saturating_sub(PERF_STEP).max(1);
                let done = self.k.set_priority(p.tcb, u64::from(to));
                self.decide(format!(
                    "perf {name}: CPU-bound (running at {cpu} of the last {} timer ticks, {received} messages received, {syscalls} syscalls): priority {band} -> {to} ({done:?})",
                    PERIOD_TICKS / 2
                ));
            } else {
                let done = self.k.set_priority(p.tcb, u64::from(band));
                self.decide(format!(
                    "perf {name}: interactive again ({CALM_PERIODS} periods: running at {cpu} of the last {} timer ticks, {received} messages received, {syscalls} syscalls): priority {band} restored ({done:?})",
                    PERIOD_TICKS / 2
                ));
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
}
