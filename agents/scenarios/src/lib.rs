//! Scenario programs: small agents that behave in a known way — benign work, or hostile steps —
//! with every choice drawn from the program's seed, so that recordings of their kernel event
//! traces can train and evaluate a model of program behaviour. `docs/scenarios.md` lists them;
//! `initrd/system-scenarios.toml` puts them in a system (`cargo xtask qemu --overlay
//! initrd/system-scenarios.toml`).
//!
//! Every scenario starts with [`begin`]: it asks Studio for the program's seed (the description's
//! `seed`; a program whose block gives none draws one from the CPU and prints it, so that run can
//! be repeated), prints it, and marks its first phase ([`ozone_agent_sdk::scenario::phase`]).
//! Benign programs stay in [`Phase::Benign`]; hostile ones mark [`Phase::Hostile`] before each
//! hostile stretch and [`Phase::Benign`] when they go back to ordinary traffic. Every scenario
//! ends by itself after a number of steps or a time chosen from its seed ([`Scenario::end`]).
//!
//! The library holds what several programs share:
//!
//! - [`rr`]: the request/response interface `sc-rr` of `sc-rr-server`, and [`stage`]: the
//!   pipeline stages' interface;
//! - [`serve_until_idle`]: a server loop that ends when no request came for a while;
//! - [`traffic`]: one round of a request/response client's ordinary traffic;
//! - [`faults`]: the faults a fault storm and a memory scan take (the only unsafe code here);
//! - [`hostile`]: the hostile steps (capability probing, floods, protocol fuzzing, privilege
//!   probing, quota pressure), each one small step, run in a loop by the hostile programs, slowly
//!   by `sc-slow`, and hidden in ordinary traffic by `sc-mimicry`.
#![cfg_attr(target_os = "none", no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod faults;
pub mod hostile;
pub mod rr;
pub mod stage;
pub mod traffic;

use core::time::Duration;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::timer::TIMER_SIGNAL;
use ozone_agent_sdk::rpc::{Client, Polled, Request, Response, Server};
use ozone_agent_sdk::scenario::{self, Phase, Rng};
use ozone_agent_sdk::timer::{self, Deadline};
use ozone_agent_sdk::{AgentError, entropy, info, warn};

/// A running scenario: its seed and the generator drawn from it.
pub struct Scenario {
    /// The seed every choice comes from.
    pub seed: u64,
    /// The generator seeded with it.
    pub rng: Rng,
    /// The phase last marked.
    pub phase: Phase,
}

/// Start a scenario: the seed (Studio's `MY_SEED`; drawn from the CPU when the description gives
/// none), printed as `seed 0x...`, and the first phase marked.
pub fn begin(first: Phase) -> Scenario {
    let given = scenario::my_seed().unwrap_or(0);
    let (seed, whence) = if given != 0 {
        (given, "from the system description")
    } else {
        (entropy::rdrand().unwrap_or(0) ^ entropy::tsc() | 1, "drawn at start: none in the system description")
    };
    info!("seed {seed:#x} ({whence})");
    let mut s = Scenario { seed, rng: Rng::new(seed), phase: first };
    s.mark(first);
    s
}

impl Scenario {
    /// Mark the beginning of phase `p` (see [`ozone_agent_sdk::scenario::phase`]); a marker the
    /// kernel did not refuse as expected is said once, as a warning.
    pub fn mark(&mut self, p: Phase) {
        self.phase = p;
        if let Err(e) = scenario::phase(p) {
            warn!("phase marker not recorded: {e}");
        }
    }

    /// A number of steps in `lo..=hi`.
    pub fn steps(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.range(lo, hi)
    }

    /// A duration of `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.rng.range(lo, hi))
    }

    /// The end of the scenario: one line, and the exit status (0).
    pub fn end(&self, what: &str) -> u64 {
        info!("done: {what}");
        0
    }

    /// The end of a scenario that failed at something it needed: one line, status 1.
    pub fn fail(&self, what: &str, e: AgentError) -> u64 {
        warn!("stopped: {what}: {e}");
        1
    }
}

/// Sleep for `d`; a timer that fails (no `timer` in the program's `uses`) is a busy wait on the
/// clock instead, so a scenario's pacing never depends on it.
pub fn pause(d: Duration) {
    if timer::sleep(d).is_ok() {
        return;
    }
    let start = timer::now();
    let hz = timer::tsc_hz().unwrap_or(1_000_000_000);
    let ticks = timer::ticks_of(d, hz).unwrap_or(u64::MAX);
    while timer::now().wrapping_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Look `interface` up, waiting (up to about five seconds) while its server is not running yet:
/// at boot a client may run before Studio has started its server.
pub fn lookup(interface: &str) -> Result<Client, AgentError> {
    let mut tries = 0;
    loop {
        match Client::lookup(interface) {
            Err(AgentError::Service(ServiceError::NotRunning)) if tries < 50 => {
                tries += 1;
                pause(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// How often [`serve_until_idle`] looks at the clock.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// Notification bits start here: clients' badges (program ids) are far below.
const SIGNAL_BITS: u64 = 1 << 40;

/// Serve `server` with `handler` until no request came for `idle` after the first one, or
/// `limit` has passed since the start; the number of requests served. A message that is no
/// method of the interface (a fuzzer's label) is answered `UnknownMethod`; notification signals
/// are not answered. The timer (`uses = ["timer"]`) wakes the loop to look at the clock.
pub fn serve_until_idle(
    server: &mut Server,
    idle: Duration,
    limit: Duration,
    mut handler: impl FnMut(&Request) -> Response,
) -> Result<u64, AgentError> {
    let hz = timer::tsc_hz()?;
    let idle = timer::ticks_of(idle, hz).unwrap_or(u64::MAX);
    let limit = timer::ticks_of(limit, hz).unwrap_or(u64::MAX);
    let start = timer::now();
    let mut last = start;
    let mut served = 0u64;
    timer::arm(Deadline::after(IDLE_CHECK)?)?;
    let mut polled = server.wait();
    loop {
        let response = match polled {
            Polled::Request(r) => {
                served += 1;
                last = timer::now();
                Some(handler(&r))
            }
            Polled::Other(m) if m.badge >= SIGNAL_BITS => {
                if m.badge & TIMER_SIGNAL != 0 {
                    let now = timer::now();
                    if (served > 0 && now.wrapping_sub(last) > idle) || now.wrapping_sub(start) > limit {
                        return Ok(served);
                    }
                    timer::arm(Deadline::after(IDLE_CHECK)?)?;
                }
                None
            }
            Polled::Other(_) => Some(Err(ServiceError::UnknownMethod)),
            Polled::Answered | Polled::Nothing => None,
        };
        polled = server.answer_and_wait(response);
    }
}

/// The start the request/response scenarios share: a benign phase, a short pause (so the
/// timer's methods join the syscall profile during the warm-up), then `sc-rr` looked up.
/// `Err(status)`: it is not there (said, as [`Scenario::fail`] says it).
pub fn begin_traffic() -> Result<(Scenario, traffic::Traffic), u64> {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    match traffic::Traffic::connect() {
        Ok(t) => Ok((sc, t)),
        Err(e) => Err(sc.fail("looking up `sc-rr`", e)),
    }
}
