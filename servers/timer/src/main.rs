//! The timer server: owns the PIT and wakes its clients at their deadlines.
//!
//! Studio starts it as the program with the `pit` device and `signals_clients`
//! (`initrd/system.toml`), which gives it (see `ozone_agent_sdk::protocol::start::slot`):
//!
//! | slot | capability |
//! |---|---|
//! | `SERVICE` | the endpoint of the `timer` interface |
//! | `NOTIFICATION` | a notification bound to its thread; the PIT's interrupt signals [`PIT_SIGNAL`] |
//! | `DEVICE_PORTS` | the I/O ports 0x40..=0x43 |
//! | `DEVICE_IRQ` | the handler of interrupt line 2 (ISA IRQ 0 after the MADT's override), routed to the notification |
//! | `client_signal(id)` | for each client holding the interface: its notification, signal-only, badged `TIMER_SIGNAL` |
//! | `STUDIO_TICK_SLOT` | Studio's notification, signal-only, badged `STUDIO_TICK` (when Studio traces programs) |
//!
//! **Studio's tick.** When Studio gave it the capability in `STUDIO_TICK_SLOT`, the server
//! signals it every `STUDIO_TICK_US` on its own, with no request (Studio calls no program):
//! Studio reads the programs' event traces then. It is kept apart from the clients' timers and
//! counts in the earliest deadline like one of them.
//!
//! **At start** it measures the TSC's rate against the PIT ([`calibrate`]: the TSC ticks over
//! [`CALIBRATION_COUNTS`] PIT counts, about 1.7 ms of busy polling), then serves.
//!
//! **Serving** is one loop over one receive: a client's request (`ARM`, `DISARM`, `PERIODIC`,
//! `CLOCK`) is answered at once; the PIT's interrupt arrives through the bound notification as
//! a message whose badge has [`PIT_SIGNAL`]. Each client has at most one timer
//! ([`ozone_timer::queue`]); the PIT counts down, in one-shot mode, to the earliest deadline
//! (chained through 16-bit countdowns for far ones). At an interrupt the server acknowledges the
//! line first (so no countdown it programs next can end while the line is masked), signals every
//! client whose deadline the TSC has reached — by the TSC, never by the interrupt alone, so no
//! client is woken early — and programs the next countdown. A request that makes a deadline
//! the earliest reprograms the PIT; one that removes the earliest leaves it (its interrupt finds
//! nothing due and programs the next).
//!
//! **Hostile clients.** A client is its badge (its program id). A deadline beyond one week, or a
//! period below 100 µs, is refused (`InvalidArgument`); a client whose notification Studio did
//! not give the server (no `client_signal` capability) is refused (`NotFound`) — checked with a
//! non-blocking receive on the slot, which a signal-only capability refuses with
//! `IllegalOperation` and an empty slot with `InvalidCapability`. A past deadline is signalled
//! before the answer. A client's signal capability that is gone when its deadline comes (it
//! stopped) drops its timer.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use ozone_abi::Error;
use ozone_agent_sdk::caps::{self, IoPort, IrqHandler, Notification};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::protocol::timer::{self as proto, Clock, PIT_SIGNAL, id, method};
use ozone_agent_sdk::rpc::{Args, Polled, Request, Response};
use ozone_agent_sdk::{entry, println, sys};
use ozone_timer::pit::{self, CALIBRATION_COUNTS};
use ozone_timer::queue::{Armed, Limits, MAX_CLIENTS, Queue, Refused};

entry!(run);

/// Polls of the PIT's counter before the server decides it does not count (far more than the
/// calibration takes: a few thousand).
const MAX_POLLS: u32 = 1 << 20;

fn run() -> u64 {
    // The network server waits for the timer while the console's shell may be waiting for it
    // (`net`): a Call from here to the console would close the circle. Lines go one way.
    ozone_agent_sdk::log::set_nonblocking();
    let pit = Pit { ports: IoPort::from_slot(slot::DEVICE_PORTS) };
    let irq = IrqHandler::from_slot(slot::DEVICE_IRQ);
    let clock = match calibrate(&pit) {
        Ok(hz) => {
            println!("TSC at {hz} Hz, measured over {CALIBRATION_COUNTS} PIT counts");
            Some(Clock { tsc_hz: hz, min_period: hz / 10_000, max_ahead: hz.saturating_mul(7 * 24 * 3600) })
        }
        Err(why) => {
            println!("cannot measure the clock: {why}; every request is refused (busy)");
            None
        }
    };
    let mut server = caps::service().server(proto::INTERFACE);
    let mut state = State { queue: Queue::new(), pit, clock, programmed: None, known: 0, studio_tick: None };
    state.start_studio_tick();
    let mut answer = None;
    loop {
        match server.answer_and_wait(answer.take()) {
            Polled::Request(r) => answer = Some(state.request(&r)),
            Polled::Other(m) if m.badge & PIT_SIGNAL != 0 => {
                // Unmask the line before programming the next countdown (an edge while masked
                // would be lost).
                let _ = irq.ack();
                state.programmed = None;
                state.expire();
            }
            // Signal bits that are not the PIT's (all lie above every client's badge, a program
            // id): nothing to answer.
            Polled::Other(m) if m.badge > MAX_CLIENTS as u64 => {}
            // A client's message that is no method.
            Polled::Other(_) => answer = Some(Err(ServiceError::UnknownMethod)),
            Polled::Answered | Polled::Nothing => {}
        }
    }
}

/// The PIT's ports.
struct Pit {
    ports: IoPort,
}

impl Pit {
    /// Start a one-shot countdown of `counts` on channel 0.
    fn countdown(&self, counts: u16) -> Result<(), Error> {
        let [lo, hi] = counts.to_le_bytes();
        let r = self
            .ports
            .out8(pit::COMMAND, pit::ONE_SHOT)
            .and_then(|()| self.ports.out8(pit::CHANNEL0, lo))
            .and_then(|()| self.ports.out8(pit::CHANNEL0, hi));
        r.map_err(caps::kernel_error)
    }

    /// Channel 0's count now.
    fn count(&self) -> Result<u16, Error> {
        let r = self.ports.out8(pit::COMMAND, pit::LATCH).and_then(|()| {
            let lo = self.ports.in8(pit::CHANNEL0)?;
            let hi = self.ports.in8(pit::CHANNEL0)?;
            Ok(u16::from_le_bytes([lo, hi]))
        });
        r.map_err(caps::kernel_error)
    }
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time stamp counter, which ring 3 may do.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second: the TSC read as the PIT's count changes, and again
/// [`CALIBRATION_COUNTS`] counts later (both readings follow a change of the count by the same
/// polling delay, which cancels).
fn calibrate(pit: &Pit) -> Result<u64, &'static str> {
    pit.countdown(pit::MAX_COUNT).map_err(|_| "no PIT ports (the `pit` device)")?;
    let first = pit.count().map_err(|_| "the PIT's count cannot be read")?;
    let mut polls = 0;
    let mut poll = || -> Result<u16, &'static str> {
        polls += 1;
        if polls > MAX_POLLS {
            return Err("the PIT does not count");
        }
        pit.count().map_err(|_| "the PIT's count cannot be read")
    };
    let mut start = first;
    while start == first {
        start = poll()?;
    }
    let t0 = rdtsc();
    loop {
        let now = poll()?;
        let counts = pit::counted(start, now);
        if counts >= CALIBRATION_COUNTS {
            let t1 = rdtsc();
            return pit::tsc_rate(t1 - t0, counts as u64).ok_or("the TSC does not count");
        }
    }
}

struct State {
    queue: Queue,
    pit: Pit,
    clock: Option<Clock>,
    /// The deadline the PIT counts down to (through chained countdowns), if any.
    programmed: Option<u64>,
    /// Clients whose signal capability was found (bit = id): checked once, until a signal
    /// through it fails.
    known: u128,
    /// Studio's tick (next deadline, period), if Studio gave the capability for it.
    studio_tick: Option<(u64, u64)>,
}

impl State {
    fn request(&mut self, r: &Request) -> Response {
        let Some(clock) = self.clock else { return Err(ServiceError::Busy) };
        let limits = Limits { max_ahead: clock.max_ahead, min_period: clock.min_period };
        let client = r.badge;
        match r.method {
            id::ARM => {
                let (deadline, reply) = r.decode_for(method::ARM)?;
                self.arm(client, deadline, 0, limits)?;
                reply.ok(&())
            }
            id::PERIODIC => {
                let (p, reply) = r.decode_for(method::PERIODIC)?;
                if p.period == 0 {
                    return Err(ServiceError::InvalidArgument);
                }
                self.arm(client, p.first, p.period, limits)?;
                reply.ok(&())
            }
            id::DISARM => {
                let ((), reply) = r.decode_for(method::DISARM)?;
                // The PIT is left counting: its interrupt finds nothing due and moves on.
                self.queue.disarm(client);
                reply.ok(&())
            }
            id::CLOCK => {
                let ((), reply) = r.decode_for(method::CLOCK)?;
                reply.ok(&clock)
            }
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    fn arm(&mut self, client: u64, deadline: u64, period: u64, limits: Limits) -> Result<(), ServiceError> {
        let Some(at) = slot::client_signal(client) else { return Err(ServiceError::NotFound) };
        if !self.can_signal(client, at) {
            return Err(ServiceError::NotFound);
        }
        let now = rdtsc();
        match self.queue.arm(client, deadline, period, now, limits) {
            Err(Refused::NoSuchClient) => Err(ServiceError::NotFound),
            Err(Refused::TooFar | Refused::PeriodTooShort) => Err(ServiceError::InvalidArgument),
            Ok(Armed::Due) => {
                self.signal(client);
                self.program();
                Ok(())
            }
            Ok(Armed::Queued) => {
                self.program();
                Ok(())
            }
        }
    }

    /// Whether the server holds a capability to signal `client` (at slot `at`).
    fn can_signal(&mut self, client: u64, at: u64) -> bool {
        let bit = 1u128 << client;
        if self.known & bit != 0 {
            return true;
        }
        // A signal-only capability refuses a receive (IllegalOperation); an empty slot is
        // InvalidCapability. Nothing is received either way.
        let there = !matches!(sys::nb_recv(at), Err(Error::InvalidCapability));
        if there {
            self.known |= bit;
        }
        there
    }

    /// Signal `client`'s notification; a capability gone (the client stopped) drops its timer.
    fn signal(&mut self, client: u64) {
        let Some(at) = slot::client_signal(client) else { return };
        if Notification::from_slot(at).signal().is_err() {
            self.known &= !(1u128 << client);
            self.queue.disarm(client);
        }
    }

    /// Signal every client whose deadline the clock reached, then program the next countdown.
    fn expire(&mut self) {
        let mut due = [0u64; MAX_CLIENTS];
        let now = rdtsc();
        let n = self.queue.expire(now, &mut due);
        for &client in &due[..n] {
            self.signal(client);
        }
        if let Some((deadline, period)) = self.studio_tick
            && deadline <= now
        {
            let missed = (now - deadline) / period + 1;
            self.studio_tick = Some((deadline + missed * period, period));
            if Notification::from_slot(proto::STUDIO_TICK_SLOT).signal().is_err() {
                self.studio_tick = None;
            }
        }
        self.program();
    }

    /// Start Studio's tick if Studio gave the capability for it (and the clock is measured).
    fn start_studio_tick(&mut self) {
        let Some(clock) = self.clock else { return };
        // As `can_signal`: a signal-only capability refuses a receive, an empty slot is invalid.
        if matches!(sys::nb_recv(proto::STUDIO_TICK_SLOT), Err(Error::InvalidCapability)) {
            return;
        }
        let period = (clock.tsc_hz / 1_000_000).max(1) * proto::STUDIO_TICK_US;
        self.studio_tick = Some((rdtsc() + period, period));
        println!("signals Studio's tick every {} us", proto::STUDIO_TICK_US);
        self.program();
    }

    /// Make the PIT count down to the earliest deadline, unless it already does.
    fn program(&mut self) {
        let Some(clock) = self.clock else { return };
        let tick = self.studio_tick.map(|(d, _)| d);
        let Some(next) = [self.queue.earliest(), tick].into_iter().flatten().min() else { return };
        if self.programmed.is_some_and(|p| p <= next) {
            return;
        }
        let counts = pit::countdown(next.saturating_sub(rdtsc()), clock.tsc_hz);
        if self.pit.countdown(counts).is_ok() {
            self.programmed = Some(next);
        }
    }
}
