//! The clients' timers: at most one per client (a client's `ARM` or `PERIODIC` replaces what it
//! had), kept in a table indexed by program id, so the server's memory and work per request are
//! bounded however often a client asks: a flood of requests from one client changes one entry
//! and never grows the table or delays another client's deadline.
//!
//! There are at most [`MAX_CLIENTS`] timers, so finding the earliest is a scan of the table:
//! simple, and fewer instructions at this size than keeping a heap in order.

use ozone_agent_sdk::protocol::system::MAX_PROGRAMS;

/// Program ids are 1..=MAX_CLIENTS.
pub const MAX_CLIENTS: usize = MAX_PROGRAMS;

/// One client's timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The next deadline (absolute TSC ticks).
    pub deadline: u64,
    /// Ticks between deadlines; 0 for a one-shot timer.
    pub period: u64,
}

/// What the server accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The farthest a deadline (or a period) may lie ahead, in ticks.
    pub max_ahead: u64,
    /// The shortest period, in ticks.
    pub min_period: u64,
}

/// Why a timer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The badge is no program id.
    NoSuchClient,
    /// The deadline (or period) lies beyond [`Limits::max_ahead`].
    TooFar,
    /// The period is below [`Limits::min_period`].
    PeriodTooShort,
}

/// What an `arm` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Armed {
    /// The deadline is past: signal the client now (a periodic timer is kept, at its next
    /// deadline).
    Due,
    /// Kept until its deadline.
    Queued,
}

/// Every client's timer.
pub struct Queue {
    timers: [Option<Timer>; MAX_CLIENTS + 1],
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::new()
    }
}

impl Queue {
    pub const fn new() -> Queue {
        Queue { timers: [None; MAX_CLIENTS + 1] }
    }

    fn index(client: u64) -> Result<usize, Refused> {
        match client {
            1..=MAX_PROGRAMS_U64 => Ok(client as usize),
            _ => Err(Refused::NoSuchClient),
        }
    }

    /// Set `client`'s timer (replacing what it had) at `deadline`, then every `period` ticks
    /// (0: once), the clock reading `now`.
    pub fn arm(&mut self, client: u64, deadline: u64, period: u64, now: u64, limits: Limits) -> Result<Armed, Refused> {
        let i = Queue::index(client)?;
        if deadline.saturating_sub(now) > limits.max_ahead || period > limits.max_ahead {
            return Err(Refused::TooFar);
        }
        if period != 0 && period < limits.min_period {
            return Err(Refused::PeriodTooShort);
        }
        let mut t = Timer { deadline, period };
        if deadline > now {
            self.timers[i] = Some(t);
            return Ok(Armed::Queued);
        }
        self.timers[i] = if period == 0 {
            None
        } else {
            advance(&mut t, now);
            Some(t)
        };
        Ok(Armed::Due)
    }

    /// Cancel `client`'s timer (none armed is no error).
    pub fn disarm(&mut self, client: u64) {
        if let Ok(i) = Queue::index(client) {
            self.timers[i] = None;
        }
    }

    /// `client`'s timer.
    pub fn get(&self, client: u64) -> Option<Timer> {
        Queue::index(client).ok().and_then(|i| self.timers[i])
    }

    /// The earliest deadline.
    pub fn earliest(&self) -> Option<u64> {
        self.timers.iter().flatten().map(|t| t.deadline).min()
    }

    /// How many timers are armed.
    pub fn len(&self) -> usize {
        self.timers.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The clients whose deadline is at or before `now`, earliest first (ties by id), each once:
    /// one-shot timers are removed, periodic ones move to their first deadline after `now`
    /// (periods missed are not signalled again: a signal is one bit). Returns how many are in
    /// `due`.
    pub fn expire(&mut self, now: u64, due: &mut [u64; MAX_CLIENTS]) -> usize {
        let mut order = [(0u64, 0u64); MAX_CLIENTS];
        let mut n = 0;
        for (id, slot) in self.timers.iter_mut().enumerate() {
            let Some(t) = slot else { continue };
            if t.deadline > now {
                continue;
            }
            order[n] = (t.deadline, id as u64);
            n += 1;
            if t.period == 0 {
                *slot = None;
            } else {
                advance(t, now);
            }
        }
        order[..n].sort_unstable();
        for (d, (_, id)) in due.iter_mut().zip(&order[..n]) {
            *d = *id;
        }
        n
    }
}

const MAX_PROGRAMS_U64: u64 = MAX_PROGRAMS as u64;

/// Move a periodic timer to its first deadline after `now`.
fn advance(t: &mut Timer, now: u64) {
    let missed = (now - t.deadline) / t.period + 1;
    t.deadline = t.deadline.saturating_add(missed.saturating_mul(t.period));
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_ahead: 1_000_000, min_period: 100 };

    fn due(q: &mut Queue, now: u64) -> Vec<u64> {
        let mut d = [0; MAX_CLIENTS];
        let n = q.expire(now, &mut d);
        d[..n].to_vec()
    }

    #[test]
    fn deadlines_expire_in_order_and_once() {
        let mut q = Queue::new();
        assert_eq!(q.arm(3, 500, 0, 0, LIMITS), Ok(Armed::Queued));
        assert_eq!(q.arm(1, 700, 0, 0, LIMITS), Ok(Armed::Queued));
        assert_eq!(q.arm(2, 300, 0, 0, LIMITS), Ok(Armed::Queued));
        assert_eq!(q.arm(4, 500, 0, 0, LIMITS), Ok(Armed::Queued));
        assert_eq!(q.earliest(), Some(300));
        assert_eq!(due(&mut q, 299), Vec::<u64>::new(), "nothing before its deadline");
        assert_eq!(due(&mut q, 600), [2, 3, 4]);
        assert_eq!(due(&mut q, 600), Vec::<u64>::new(), "each once");
        assert_eq!(q.earliest(), Some(700));
        assert_eq!(due(&mut q, 700), [1], "at the deadline exactly");
        assert!(q.is_empty());
        assert_eq!(q.earliest(), None);
    }

    #[test]
    fn re_arming_replaces_and_disarm_cancels() {
        let mut q = Queue::new();
        q.arm(5, 100, 0, 0, LIMITS).unwrap();
        q.arm(5, 900, 0, 0, LIMITS).unwrap();
        assert_eq!((q.len(), q.earliest()), (1, Some(900)));
        assert_eq!(due(&mut q, 500), Vec::<u64>::new(), "the replaced deadline is gone");
        q.arm(5, 50, 0, 0, LIMITS).unwrap();
        assert_eq!(q.earliest(), Some(50));
        q.disarm(5);
        q.disarm(5);
        q.disarm(0);
        q.disarm(u64::MAX);
        assert!(q.is_empty());
        // A flood from one client is one entry.
        for d in 0..10_000 {
            q.arm(7, 1_000 + d, 0, 0, LIMITS).unwrap();
        }
        q.arm(8, 5_000, 0, 0, LIMITS).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(due(&mut q, 20_000), [8, 7], "the flooding client's last deadline, and the other's");
    }

    #[test]
    fn past_deadlines_are_due_at_once() {
        let mut q = Queue::new();
        assert_eq!(q.arm(1, 10, 0, 10, LIMITS), Ok(Armed::Due));
        assert_eq!(q.arm(1, 0, 0, 1_000, LIMITS), Ok(Armed::Due));
        assert!(q.is_empty(), "a past one-shot deadline is not kept");
        // A past periodic one is signalled now and kept at its next deadline after now.
        assert_eq!(q.arm(2, 100, 250, 1_000, LIMITS), Ok(Armed::Due));
        assert_eq!(q.get(2), Some(Timer { deadline: 1_100, period: 250 }));
    }

    #[test]
    fn periodic_timers_skip_missed_periods() {
        let mut q = Queue::new();
        q.arm(9, 1_000, 100, 0, LIMITS).unwrap();
        assert_eq!(due(&mut q, 1_000), [9]);
        assert_eq!(q.get(9).unwrap().deadline, 1_100);
        // Late by three periods and a half: one signal, the next deadline after now.
        assert_eq!(due(&mut q, 1_450), [9]);
        assert_eq!(q.get(9).unwrap().deadline, 1_500);
        assert_eq!(due(&mut q, 1_499), Vec::<u64>::new());
        // Near the end of the clock: the deadline saturates instead of wrapping to the past.
        q.arm(9, u64::MAX - 10, 150, u64::MAX - 500_000, LIMITS).unwrap();
        assert_eq!(due(&mut q, u64::MAX - 5), [9]);
        assert_eq!(q.get(9).unwrap().deadline, u64::MAX);
    }

    #[test]
    fn bounds_are_refused() {
        let mut q = Queue::new();
        assert_eq!(q.arm(0, 10, 0, 0, LIMITS), Err(Refused::NoSuchClient));
        assert_eq!(q.arm(MAX_CLIENTS as u64 + 1, 10, 0, 0, LIMITS), Err(Refused::NoSuchClient));
        assert_eq!(q.arm(1 << 44 | 1, 10, 0, 0, LIMITS), Err(Refused::NoSuchClient));
        assert_eq!(q.arm(MAX_CLIENTS as u64, 10, 0, 0, LIMITS), Ok(Armed::Queued));
        assert_eq!(q.arm(1, 1_000_001, 0, 0, LIMITS), Err(Refused::TooFar));
        assert_eq!(q.arm(1, u64::MAX, 0, 5, LIMITS), Err(Refused::TooFar));
        assert_eq!(q.arm(1, 1_000_000, 0, 0, LIMITS), Ok(Armed::Queued));
        assert_eq!(q.arm(1, 10, 99, 0, LIMITS), Err(Refused::PeriodTooShort));
        assert_eq!(q.arm(1, 10, 1_000_001, 0, LIMITS), Err(Refused::TooFar));
        // A refused request leaves the client's timer as it was.
        assert_eq!(q.get(1), Some(Timer { deadline: 1_000_000, period: 0 }));
    }
}
