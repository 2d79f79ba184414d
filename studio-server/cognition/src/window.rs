//! Windows: each program's last [`WINDOW`] tokens, and what a window is made of.
//!
//! A [`Stream`] is one program's view: records go in (phase markers are stripped and remembered,
//! see [`crate::token::phase_marker`]), and once [`WINDOW`] tokens have been seen every further
//! token completes a new [`Window`] (they slide by one token). The detectors score windows.
//!
//! A window's [`Features`] are a short, named summary for explanations — a decision says which
//! features of the window were furthest from the program's normal ones ([`Baseline::top`]):
//!
//! | feature | value |
//! |---------|-------|
//! | one per coarse group ([`Group`]) | the fraction of the window's events in it |
//! | `denied` | the fraction refused by the profile (denied results and denied faults) or by a server (method events answered denied) |
//! | `bad-requests` | the fraction of method events a server could not take (unknown method, did not decode) |
//! | `invalid-cap` | the fraction whose result was an invalid capability or failed lookup |
//! | `distinct` | distinct tokens / [`WINDOW`] |
//! | `rate` | log2(1 + events per second), from the ticks of the window's first and last event |

use crate::token::{self, Answer, Decoded, FaultClass, Phase, ResultClass, Token};
use ozone_abi::profile;
use ozone_abi::trace::Record;

/// Tokens per window.
pub const WINDOW: usize = 16;

/// The kernel's timer ticks per second (the trace's `tick`).
pub const TICKS_PER_SECOND: u32 = 100;

/// One window: [`WINDOW`] consecutive tokens of a program, oldest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub tokens: [Token; WINDOW],
    /// Tick of the first (oldest) event.
    pub first_tick: u32,
    /// Tick of the last event.
    pub last_tick: u32,
}

impl Window {
    /// The hash of the window's tokens (ticks are not part of it).
    pub fn hash(&self) -> u64 {
        crate::hash_tokens(&self.tokens)
    }

    /// The window's features.
    pub fn features(&self) -> Features {
        let mut f = [0f32; FEATURES];
        let step = 1.0 / WINDOW as f32;
        for &t in &self.tokens {
            f[group(t) as usize] += step;
            match token::decode(t) {
                Some(
                    Decoded::Fault(FaultClass::Denied)
                    | Decoded::Method { answer: Answer::Denied, .. }
                    | Decoded::Refused { answer: Answer::Denied },
                ) => f[Feature::Denied as usize] += step,
                Some(
                    Decoded::Method { answer: Answer::UnknownMethod | Answer::BadRequest, .. }
                    | Decoded::Refused { answer: Answer::UnknownMethod | Answer::BadRequest },
                ) => f[Feature::BadRequests as usize] += step,
                Some(Decoded::Plain { result, .. } | Decoded::Labelled { result, .. }) => match result {
                    ResultClass::Denied => f[Feature::Denied as usize] += step,
                    ResultClass::InvalidCapability => f[Feature::InvalidCapability as usize] += step,
                    _ => {}
                },
                _ => {}
            }
        }
        let mut sorted = self.tokens;
        sorted.sort_unstable();
        let distinct = 1 + sorted.windows(2).filter(|p| p[0] != p[1]).count();
        f[Feature::Distinct as usize] = distinct as f32 / WINDOW as f32;
        // Ticks wrap at 32 bits; a window spans far less than 2^32 ticks (497 days).
        let ticks = self.last_tick.wrapping_sub(self.first_tick).max(1);
        let per_second = (WINDOW - 1) as f32 * TICKS_PER_SECOND as f32 / ticks as f32;
        f[Feature::Rate as usize] = libm::log2f(1.0 + per_second);
        Features(f)
    }
}

/// Coarse groups of tokens, the first features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Fault = 0,
    /// Calls to a server (an endpoint).
    Call = 1,
    /// Sends and signals (Send/NBSend to an endpoint or a notification).
    Send = 2,
    /// Receives: Recv, NBRecv, ReplyRecv.
    Receive = 3,
    /// Reply, Yield and the debug calls.
    Reply = 4,
    /// Invocations of kernel objects (untyped, CNode, TCB, paging, frames, IRQ, I/O ports,
    /// telemetry).
    Kernel = 5,
    /// Syscalls naming no capability (an empty slot, a failed lookup).
    Invalid = 6,
    /// Anything else (a Call on a notification, ...).
    Other = 7,
    /// Method events: requests as the server saw them.
    Requests = 8,
}

/// How many groups there are.
pub const GROUPS: usize = 9;

/// The group of a token.
pub fn group(t: Token) -> Group {
    match token::decode(t) {
        Some(Decoded::Fault(_)) => Group::Fault,
        Some(Decoded::Method { .. } | Decoded::Refused { .. }) => Group::Requests,
        Some(Decoded::Labelled { target: 1, .. }) => Group::Kernel,
        Some(Decoded::Labelled { target: 2, .. }) => Group::Invalid,
        Some(Decoded::Labelled { send: false, .. }) => Group::Call,
        Some(Decoded::Labelled { send: true, .. }) => Group::Send,
        Some(Decoded::Plain { group: 5, .. }) => Group::Invalid,
        Some(Decoded::Plain { what, .. }) => match what as u32 {
            profile::RECV | profile::NB_RECV | profile::REPLY_RECV => Group::Receive,
            profile::SEND | profile::NB_SEND => Group::Send,
            profile::REPLY | profile::YIELD | 9 => Group::Reply,
            _ => Group::Other,
        },
        None => Group::Other,
    }
}

/// The features, in [`Features`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    Faults = 0,
    Calls = 1,
    Sends = 2,
    Receives = 3,
    Replies = 4,
    KernelObjects = 5,
    InvalidTargets = 6,
    OtherSyscalls = 7,
    Requests = 8,
    Denied = 9,
    InvalidCapability = 10,
    BadRequests = 11,
    Distinct = 12,
    Rate = 13,
}

/// How many features there are.
pub const FEATURES: usize = 14;

impl Feature {
    pub const ALL: [Feature; FEATURES] = [
        Feature::Faults,
        Feature::Calls,
        Feature::Sends,
        Feature::Receives,
        Feature::Replies,
        Feature::KernelObjects,
        Feature::InvalidTargets,
        Feature::OtherSyscalls,
        Feature::Requests,
        Feature::Denied,
        Feature::InvalidCapability,
        Feature::BadRequests,
        Feature::Distinct,
        Feature::Rate,
    ];

    /// The feature's name in decisions and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Faults => "faults",
            Feature::Calls => "calls",
            Feature::Sends => "sends",
            Feature::Receives => "receives",
            Feature::Replies => "replies",
            Feature::KernelObjects => "kernel-objects",
            Feature::InvalidTargets => "invalid-targets",
            Feature::OtherSyscalls => "other-syscalls",
            Feature::Requests => "requests",
            Feature::Denied => "denied",
            Feature::InvalidCapability => "invalid-cap",
            Feature::BadRequests => "bad-requests",
            Feature::Distinct => "distinct",
            Feature::Rate => "rate",
        }
    }
}

/// A window's features, indexed by [`Feature`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Features(pub [f32; FEATURES]);

impl Features {
    pub fn get(&self, f: Feature) -> f32 {
        self.0[f as usize]
    }
}

/// How many features an explanation names.
pub const TOP: usize = 3;

/// A feature's part in an explanation: its value and how many standard deviations it is from
/// the program's normal value (signed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Contribution {
    pub feature: Feature,
    pub value: f32,
    pub z: f32,
}

/// The smallest standard deviation [`Baseline::top`] divides by: a feature that never varied in
/// normal windows (always 0, say) is not infinitely surprising the first time it does.
pub const MIN_STD: f32 = 0.05;

/// A program's normal features: the running mean and variance (Welford) of the features of the
/// windows it learned from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline {
    n: u32,
    mean: [f32; FEATURES],
    m2: [f32; FEATURES],
}

impl Baseline {
    pub fn new() -> Baseline {
        Baseline::default()
    }

    /// Windows learned.
    pub fn count(&self) -> u32 {
        self.n
    }

    /// Learn one normal window's features.
    pub fn learn(&mut self, f: &Features) {
        self.n = self.n.saturating_add(1);
        let n = self.n as f32;
        for i in 0..FEATURES {
            let d = f.0[i] - self.mean[i];
            self.mean[i] += d / n;
            self.m2[i] += d * (f.0[i] - self.mean[i]);
        }
    }

    /// The mean of feature `f` over the windows learned (0 before any).
    pub fn mean(&self, f: Feature) -> f32 {
        self.mean[f as usize]
    }

    /// The standard deviation of feature `f`, at least [`MIN_STD`].
    pub fn std(&self, f: Feature) -> f32 {
        let var = if self.n > 1 { self.m2[f as usize] / (self.n - 1) as f32 } else { 0.0 };
        libm::sqrtf(var.max(0.0)).max(MIN_STD)
    }

    /// The [`TOP`] features of `f` furthest from normal, furthest first (ties: feature order).
    pub fn top(&self, f: &Features) -> [Contribution; TOP] {
        let mut all = Feature::ALL.map(|feature| {
            let value = f.get(feature);
            Contribution { feature, value, z: (value - self.mean(feature)) / self.std(feature) }
        });
        // A stable sort by |z| descending; features are finite, so total_cmp is the usual order.
        all.sort_by(|a, b| b.z.abs().total_cmp(&a.z.abs()));
        [all[0], all[1], all[2]]
    }
}

/// What pushing a record into a [`Stream`] gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pushed {
    /// A phase marker: stripped, and the stream's phase is now this.
    Marker(Phase),
    /// Fewer than [`WINDOW`] tokens seen so far.
    Filling,
    /// A new window, ending with this record's token, and the phase it is in (`None` before
    /// any marker).
    Window(Window, Option<Phase>),
}

/// One program's stream of tokens and its sliding window.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    tokens: [Token; WINDOW],
    ticks: [u32; WINDOW],
    /// Where the next token goes.
    next: usize,
    /// Tokens seen, up to [`WINDOW`].
    filled: usize,
    phase: Option<Phase>,
}

impl Stream {
    pub fn new() -> Stream {
        Stream::default()
    }

    /// The phase the last marker started (`None` before any).
    pub fn phase(&self) -> Option<Phase> {
        self.phase
    }

    /// Take one record.
    pub fn push(&mut self, record: &Record) -> Pushed {
        if let Some(p) = token::phase_marker(record) {
            self.phase = Some(p);
            return Pushed::Marker(p);
        }
        match self.push_token(token::token(record), record.tick) {
            Some(w) => Pushed::Window(w, self.phase),
            None => Pushed::Filling,
        }
    }

    /// Take one token (already made) at `tick`; the window it completes, if any.
    pub fn push_token(&mut self, t: Token, tick: u32) -> Option<Window> {
        self.tokens[self.next] = t;
        self.ticks[self.next] = tick;
        self.next = (self.next + 1) % WINDOW;
        self.filled = (self.filled + 1).min(WINDOW);
        if self.filled < WINDOW {
            return None;
        }
        // `next` is now the oldest token.
        let tokens = core::array::from_fn(|i| self.tokens[(self.next + i) % WINDOW]);
        let oldest = self.next;
        let newest = (self.next + WINDOW - 1) % WINDOW;
        Some(Window { tokens, first_tick: self.ticks[oldest], last_tick: self.ticks[newest] })
    }

    /// Forget the tokens (a new run of the program starts from nothing); the phase stays.
    pub fn clear(&mut self) {
        self.filled = 0;
        self.next = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{PHASE_HOSTILE, token};
    use ozone_abi::Error;
    use ozone_abi::trace::{Kind, ObjectKind};

    fn call(label: u64, result: u16, tick: u32) -> Record {
        Record { kind: Kind::Syscall, what: 0, object: ObjectKind::Endpoint, result, tick, info: label << 12 }
    }

    fn recv(tick: u32) -> Record {
        Record {
            kind: Kind::Syscall,
            what: profile::RECV as u8,
            object: ObjectKind::Endpoint,
            result: 0,
            tick,
            info: 0,
        }
    }

    #[test]
    fn windows_slide_one_token_at_a_time() {
        let mut s = Stream::new();
        for i in 0..WINDOW as u32 - 1 {
            assert_eq!(s.push(&call(i as u64, 0, i)), Pushed::Filling);
        }
        let Pushed::Window(w, None) = s.push(&call(15, 0, 15)) else { panic!("no window") };
        let expect: [Token; WINDOW] = core::array::from_fn(|i| token(&call(i as u64, 0, 0)));
        assert_eq!(w.tokens, expect);
        assert_eq!((w.first_tick, w.last_tick), (0, 15));
        let Pushed::Window(w2, _) = s.push(&call(99, 0, 16)) else { panic!("no window") };
        assert_eq!(w2.tokens[..WINDOW - 1], w.tokens[1..]);
        assert_eq!(w2.tokens[WINDOW - 1], token(&call(99, 0, 0)));
        assert_eq!((w2.first_tick, w2.last_tick), (1, 16));
        s.clear();
        assert_eq!(s.push(&call(1, 0, 17)), Pushed::Filling);
    }

    #[test]
    fn markers_are_stripped_and_label_what_follows() {
        let mut s = Stream::new();
        for i in 0..WINDOW as u32 {
            s.push(&call(1, 0, i));
        }
        let marker = Record {
            kind: Kind::Syscall,
            what: 0,
            object: ObjectKind::Invalid,
            result: Error::InvalidCapability as u16,
            tick: 0,
            info: PHASE_HOSTILE << 12,
        };
        assert_eq!(s.push(&marker), Pushed::Marker(Phase::Hostile));
        let Pushed::Window(w, Some(Phase::Hostile)) = s.push(&call(2, 0, 20)) else { panic!() };
        // The marker's token is in no window.
        assert!(!w.tokens.contains(&token(&marker)));
        assert_eq!(s.phase(), Some(Phase::Hostile));
    }

    #[test]
    fn features_count_what_the_window_holds() {
        let mut s = Stream::new();
        let mut last = None;
        // 8 calls (4 of them denied), 8 receives, one event per tick.
        for i in 0..8u32 {
            s.push(&call(3, if i < 4 { Error::Denied as u16 } else { 0 }, 2 * i));
            last = Some(s.push(&recv(2 * i + 1)));
        }
        let Some(Pushed::Window(w, _)) = last else { panic!() };
        let f = w.features();
        assert_eq!(f.get(Feature::Calls), 0.5);
        assert_eq!(f.get(Feature::Receives), 0.5);
        assert_eq!(f.get(Feature::Faults), 0.0);
        assert_eq!(f.get(Feature::Denied), 0.25);
        assert_eq!(f.get(Feature::InvalidCapability), 0.0);
        assert_eq!(f.get(Feature::Distinct), 3.0 / 16.0, "denied call, call, recv");
        // 15 intervals in 15 ticks: 100 events per second.
        assert!((f.get(Feature::Rate) - libm::log2f(101.0)).abs() < 1e-5);
        let groups: f32 = f.0[..GROUPS].iter().sum();
        assert!((groups - 1.0).abs() < 1e-6, "every token is in one group");
    }

    #[test]
    fn rate_survives_tick_wraparound_and_equal_ticks() {
        let mut w = Window { tokens: [0; WINDOW], first_tick: u32::MAX - 4, last_tick: 10 };
        let wrapped = w.features().get(Feature::Rate);
        assert!((wrapped - libm::log2f(1.0 + 1500.0 / 15.0)).abs() < 1e-5);
        w.first_tick = 10;
        assert!(w.features().get(Feature::Rate).is_finite());
    }

    #[test]
    fn baseline_names_the_features_that_moved() {
        let mut b = Baseline::new();
        let mut normal = [0f32; FEATURES];
        normal[Feature::Calls as usize] = 0.5;
        normal[Feature::Receives as usize] = 0.5;
        normal[Feature::Rate as usize] = 6.0;
        for i in 0..50 {
            let mut f = normal;
            f[Feature::Rate as usize] += (i % 5) as f32 * 0.1; // normal jitter
            b.learn(&Features(f));
        }
        assert_eq!(b.count(), 50);
        assert!((b.mean(Feature::Calls) - 0.5).abs() < 1e-6);
        assert!(b.std(Feature::Rate) > MIN_STD);
        let mut odd = normal;
        odd[Feature::InvalidTargets as usize] = 0.75;
        odd[Feature::Calls as usize] = 0.125;
        odd[Feature::Denied as usize] = 0.25;
        let top = b.top(&Features(odd));
        let names = top.map(|c| c.feature);
        assert_eq!(names, [Feature::InvalidTargets, Feature::Calls, Feature::Denied]);
        assert!(top[0].z > 0.0 && top[1].z < 0.0);
        assert_eq!(top[0].value, 0.75);
    }

    #[test]
    fn groups_cover_the_syscalls() {
        let t = |what: u32, object: ObjectKind, label: u64| {
            group(token(&Record {
                kind: Kind::Syscall,
                what: what as u8,
                object,
                result: 0,
                tick: 0,
                info: label << 12,
            }))
        };
        assert_eq!(t(profile::CALL, ObjectKind::Endpoint, 1), Group::Call);
        assert_eq!(t(profile::SEND, ObjectKind::Endpoint, 1), Group::Send);
        assert_eq!(t(profile::SEND, ObjectKind::Notification, 0), Group::Send);
        assert_eq!(t(profile::REPLY_RECV, ObjectKind::Endpoint, 0), Group::Receive);
        assert_eq!(t(profile::YIELD, ObjectKind::None, 0), Group::Reply);
        assert_eq!(t(profile::CALL, ObjectKind::Untyped, 1), Group::Kernel);
        assert_eq!(t(profile::CALL, ObjectKind::Invalid, 1), Group::Invalid);
        assert_eq!(t(profile::RECV, ObjectKind::Invalid, 0), Group::Invalid);
        assert_eq!(t(profile::CALL, ObjectKind::Notification, 0), Group::Other);
        let f = Record { kind: Kind::Fault, what: 1, object: ObjectKind::None, result: 0, tick: 0, info: 0 };
        assert_eq!(group(token(&f)), Group::Fault);
    }
}
