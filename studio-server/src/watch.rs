//! Studio's watch over the agents it starts: their kernel event traces (`ozone_abi::trace`),
//! read at Studio's tick, and what they say about each agent's behaviour.
//!
//! **Tracing.** When the description says so (`[system] trace`, on by default) every agent
//! (`kind = "agent"`) is traced from before its first instruction: its ring is a 4 KiB frame
//! from the agent's own chunk (so it goes with the agent's memory, and the revoke that reclaims
//! it stops the trace in the kernel), mapped read-only in Studio's address space at
//! [`ring_va`]`(id)`. The watch of an agent goes before its memory does ([`Watch`] is dropped in
//! `reclaim`): Studio never reads a ring that is gone.
//!
//! **Reading.** The timer server signals Studio's notification every `STUDIO_TICK_US`
//! (`protocol::timer::STUDIO_TICK`); Studio then reads what the kernel wrote since the last tick
//! and acknowledges it at once ([`Studio::watch_tick`]). A ring holds 256 records: an
//! agent that makes more syscalls than that between two ticks loses the excess, and the kernel
//! counts it (`dropped`); the records Studio sees of such an agent are samples, each batch
//! followed by a gap, and no sequence is taken across a gap (`Watch::gap`), neither in the
//! warm-up nor after it.
//!
//! **What it learns.** Per agent instance, the classical baseline (`ozone_cognition::stide`):
//! the first [`WARMUP_EVENTS`] events of each run are its normal behaviour (as the shaper's
//! warm-up is); after them every length-6 sequence of its events is looked up, and a locality
//! frame with more unseen sequences than the threshold is an anomaly. Studio logs the start
//! and the end (after [`QUIET`] normal sequences in a row) of each anomalous stretch with the
//! frame's count, the threshold and the window features that moved most from the warm-up's
//! (`window::Baseline::top`), and says once when it sees only a sample of a run (most of its
//! events dropped: a program can fill its ring between ticks on purpose). These lines refill no
//! program's log budget and are at most [`LINES_PER_RUN`] per run. Phase markers are events
//! like any other here.
//!
//! **The model.** When the initrd has a valid behaviour model ([`MODEL_FILE`], written by `cargo
//! xtask studio train`), every window of an agent's events is also scored by it
//! (`ozone_cognition::detect`: the window's score by the model's fixed-point pass,
//! `model::Quantised`, the mean over a frame of windows, the
//! agent's own threshold adapted over its first windows). The model knows what hostile
//! behaviour looks like from the training corpus, so it judges from the agent's first windows,
//! without stide's long warm-up. Its anomalous stretches are logged like stide's, with the frame
//! score, the threshold, the window's own score and the features that moved most. A missing or
//! malformed model is said in the log once at start and the watch runs stide alone.
//!
//! **Responses.** The model's verdicts drive each run's graded-response ladder
//! (`ozone_cognition::respond`); Studio carries out every level reached up to the description's
//! `respond` (alert, throttle, revoke, suspend, kill: [`Studio::respond`]) and logs the levels
//! above it as not done. `ALLOW` and `RESUME` are the human's way down. docs/studio.md,
//! "Responses".
//!
//! **Recording.** With `[system] trace_dump`, every record is also printed on the serial
//! console (`[studio] trace NAME SEQ w0:w1 ...`, eight to a line, and `[studio] trace NAME
//! dropped N at SEQ` when the kernel dropped records after record SEQ - 1: N in all so far),
//! which `cargo xtask studio record` collects. An agent drives those lines (up to 32 a tick):
//! it is for recording runs only.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_abi::profile;
use ozone_abi::trace::{Kind as EventKind, ObjectKind, Record};
use ozone_cognition::detect::{self, Detector};
use ozone_cognition::model::{Quantised, Weights};
use ozone_cognition::respond::{self, Level, Responder};
use ozone_cognition::stide::{Config, Scorer, Stide};
use ozone_cognition::token::{Answer, Token, token};
use ozone_cognition::window::{Baseline, Stream};

use ozone_abi::object::ObjectType;
use ozone_agent_sdk::process::Alloc;
use ozone_agent_sdk::protocol::system::{Kind, Response};
use ozone_agent_sdk::protocol::{Permutation, block_of, wire_label};

use ozone_agent_sdk::protocol::studio::{AgentState, WatchReport};

use crate::state::Studio;

/// The behaviour model's weights in the initrd (`ozone_cognition::model`'s format).
pub const MODEL_FILE: &str = "studio.model";

/// The most windows of one agent the model judges per tick. A full ring is 256 records a tick,
/// and the model's step costs about 9,300 instructions a window (`studio_judge`): judging all of
/// them would cost Studio about 2.4 M instructions per busy agent per 5 ms tick, a CPU share an
/// agent could take from Studio (and from everyone below Studio's priority) by making syscalls.
/// Beyond this many, each window of the batch is judged with probability `MODEL_PER_TICK / n`
/// (an agent cannot know which: the draw is Studio's), and the frame and the threshold see only
/// those; [`WatchReport::windows`](ozone_agent_sdk::protocol::studio::WatchReport) says how many.
/// The agents of the scenario corpus make about 3 events a tick between them.
pub const MODEL_PER_TICK: u64 = 32;

/// Where Studio maps the ring of program `id`.
pub const fn ring_va(id: u64) -> u64 {
    RING_BASE + id * 4096
}

/// The start of Studio's ring mappings (a region of its address space nothing else uses).
const RING_BASE: u64 = 0x300_0000_0000;

/// Events of each run taken as its normal behaviour.
pub const WARMUP_EVENTS: usize = 2048;

/// Sequences in a row that must score normal before an anomalous stretch is said to end (so a
/// stretch with short quiet gaps is one stretch, logged once).
pub const QUIET: usize = 256;

/// Drops from which the watch says it sees only a sample of an agent (when they are also four
/// times what it read).
const SAMPLED_DROPS: u64 = 10_000;

/// Records per `trace` line of the dump.
const DUMP_PER_LINE: usize = 8;

/// What Studio knows of one agent's trace.
pub struct Watch {
    /// Where its ring is mapped.
    pub va: u64,
    /// Records read (and acknowledged).
    pub read: u64,
    /// Records the kernel dropped, as it last said.
    pub dropped: u64,
    /// Windows of its events.
    stream: Stream,
    /// The warm-up's database, learned segment by segment (a gap in the trace ends one).
    learning: Stide,
    /// The warm-up's tokens since the last gap, and how many it has had in all.
    segment: Vec<Token>,
    learned: usize,
    /// The database of its normal sequences, after the warm-up.
    stide: Option<(Stide, Scorer)>,
    /// Its windows' features during the warm-up.
    baseline: Baseline,
    /// In an anomalous stretch: since which record, the largest count seen, and how many
    /// sequences in a row have scored normal since the last anomalous one.
    anomalous: Option<(u64, usize, usize)>,
    /// Anomalous stretches so far.
    pub stretches: u64,
    /// Lines the watch has logged about this run ([`LINES_PER_RUN`] at most).
    pub(crate) lines: u32,
    /// The last lines about this run, logged or not (for `WATCH`).
    recent: VecDeque<String>,
    /// Whether it was said that the watch sees only a sample of this run.
    sampled: bool,
    /// The event being taken (the newest of the window judged): what it names for the revoke
    /// is worked out only when its window is anomalous ([`Used::of`]).
    newest: Option<Record>,
    /// What the events ending the model's anomalous windows of this run named, for the watch's
    /// revoke: the blocks of other programs' interfaces their requests used (at most one per
    /// interface of the instance), the servers whose refusals they were (at most one per
    /// program), and whether any was a request that names no interface it may be revoked
    /// (`unnamed`), or one with Studio's label still to be seen answered by Studio
    /// (`studio_pending`: the next event says).
    pub(crate) anomalous_blocks: Vec<u64>,
    pub(crate) anomalous_refusers: Vec<u64>,
    pub(crate) unnamed: bool,
    studio_pending: bool,
    /// The model's view of it, when Studio has a model.
    model: Option<ModelWatch>,
    /// Its requests to Studio since the last read, as Studio answered them, and other servers'
    /// refusals of its requests (method events, `Kind::Method`), each with the wire label of
    /// its Call, to go after that Call's record, and the number of records its trace had when
    /// the event came ([`Pending`]).
    methods: VecDeque<Pending>,
    /// Method events that found [`PENDING_METHODS`] waiting already.
    pub methods_dropped: u64,
    /// The labels and sequence numbers of its last Calls on an endpoint that no method event
    /// followed (at most [`UNANSWERED_CALLS`], oldest first): where another server's refusal
    /// that comes after the Call was read may still go.
    unanswered: VecDeque<(u64, u64)>,
    /// The same, of the batch being read: remembered only once the batch's words were placed
    /// ([`Watch::leftovers`]), so that a batch's requests cannot push out of `unanswered` a
    /// Call of an earlier batch that a word waiting now is about.
    fresh: Vec<(u64, u64)>,
    /// Other servers' refusals dropped because no Call of the agent's was there for them.
    pub refusals_unplaced: u64,
    /// Other servers' refusals placed after a Call of the agent's.
    pub refused: u64,
    /// The servers (their ids) that told Studio of a refusal of this run's requests, for the
    /// line the log has once per server.
    told_by: Vec<u64>,
    /// Whether the log was told that it drops method events.
    said_methods_dropped: bool,
    /// The tick of the last record read.
    last_tick: u32,
    /// Every token taken, in order (host tests only: what the detectors saw).
    #[cfg(test)]
    pub(crate) taken: Vec<Token>,
}

/// What an event names for the watch's revoke, when it ends an anomalous window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Used {
    /// Nothing (a fault, a syscall on no endpoint, Studio's answer to a request).
    Nothing,
    /// A request with a label of an interface another program provides (its block).
    Block(u64),
    /// A request with Studio's label: a request to Studio (when Studio's event follows it) or
    /// one to another endpoint carrying Studio's label.
    StudioLabel,
    /// A request with a label of no interface of the instance (a raw label, a block nobody
    /// provides): sent to an endpoint its label does not name.
    Unnamed,
    /// Another server's refusal (its program id).
    Server(u64),
}

impl Used {
    /// What record `r` names; `blocks`: the instance's interface blocks and their providers
    /// (`None`: Studio).
    fn of(r: &Record, blocks: &[(u64, Option<usize>)]) -> Used {
        if r.kind == EventKind::Method {
            return if r.what == ozone_abi::trace::BY_SERVER { Used::Server(r.info) } else { Used::Nothing };
        }
        let Some(label) = request_label(r) else { return Used::Nothing };
        let b = block_of(label);
        match blocks.iter().find(|&&(k, _)| k == b) {
            Some((_, Some(_))) => Used::Block(b),
            Some((_, None)) => Used::StudioLabel,
            None => Used::Unnamed,
        }
    }
}

/// A method event waiting for its Call's record: the Call's wire label, the event, and how many
/// records the agent's trace had when the event came (`u64::MAX` for Studio's own events).
///
/// A request's record is written when the request is made, before any server receives it, so a
/// server's word about a request can only be about one whose record was written already: its
/// event goes only after a record numbered below that count. A server cannot put its word after
/// a Call made later — in particular not after a Call of the program's next run when it speaks,
/// late, of a request of the run before (each run's trace numbers from 0).
#[derive(Clone, Copy)]
struct Pending {
    label: u64,
    event: Record,
    before: u64,
}

/// The wire label of kernel record `r` if it is a request on an endpoint (a Call, Send or
/// NBSend: what a method event may answer and what uses a server's interface).
fn request_label(r: &Record) -> Option<u64> {
    let request =
        matches!(r.what as u32, profile::CALL | profile::CALL_INTERRUPTIBLE | profile::SEND | profile::NB_SEND);
    (r.kind == EventKind::Syscall && request && r.object == ObjectKind::Endpoint).then(|| wire_label(r.label()))
}

/// The agent whose scores Studio notes live (`FOLLOW`): its index and run, until when and when
/// next (Studio's clock), and the last line noted and how many.
pub struct Following {
    agent: usize,
    run: u32,
    until: u32,
    next: u32,
    last: Option<String>,
    lines: u32,
}

/// The most lines one follow notes (the decision log keeps the last 256: a follow must not push
/// Studio's decisions out of it); then the follow ends, and says so.
pub const FOLLOW_LINES: u32 = 32;

/// Method events kept per agent between two reads (a tick): a program that calls Studio more
/// often than this in 5 ms has the rest counted, not kept.
pub const PENDING_METHODS: usize = 64;

/// Calls remembered per agent for other servers' refusals told after the Call was read.
pub const UNANSWERED_CALLS: usize = 64;

/// How much a server's answer says about the caller, for which method events a full queue
/// keeps: a refusal most, then a request that was not one (unknown method, did not decode),
/// then any other error, then an answer.
fn rank(code: u16) -> u8 {
    match Answer::of(code) {
        Answer::Denied => 3,
        Answer::UnknownMethod | Answer::BadRequest => 2,
        Answer::Error => 1,
        Answer::Ok => 0,
    }
}

/// The model's detector of one agent run, and what it said so far.
struct ModelWatch {
    detector: Detector,
    /// Which windows of a batch larger than [`MODEL_PER_TICK`] are judged.
    sampler: ozone_cognition::Rng,
    /// The batch being read: its size, and whether it is sampled.
    batch: u64,
    /// Windows judged.
    windows: u64,
    /// The last frame score and the threshold it met, and the highest frame score of the run.
    score: f32,
    threshold: f32,
    peak: f32,
    /// In an anomalous stretch: since which record, and normal windows in a row since.
    anomalous: Option<(u64, usize)>,
    stretches: u64,
    /// The graded-response ladder of this run, and the levels it rose to since the watch last
    /// acted, each with its reasons.
    responder: Responder,
    risen: Vec<(Level, String)>,
    /// The anomalous windows of this run (the most recent [`FLAGGED`]): what `ALLOW` accepts.
    flagged: VecDeque<u64>,
    /// The priority the description gave it, while it is throttled.
    pub throttled_from: Option<u8>,
}

/// Anomalous windows remembered per run for `ALLOW`.
const FLAGGED: usize = 256;

/// How far a throttled agent's priority goes down (not below 1).
pub const THROTTLE_STEP: u8 = 16;

/// A score in [0, 1] as thousandths (`WatchReport`'s form).
fn milli(x: f32) -> u32 {
    (x.clamp(0.0, 1.0) * 1000.0 + 0.5) as u32
}

/// The most lines the watch logs about one run of an agent (its anomalous stretches beyond are
/// counted in `stretches`, not logged): a program that makes its behaviour flip on purpose
/// cannot fill the decision log through the watch.
pub const LINES_PER_RUN: u32 = 8;

/// Lines kept for `WATCH`.
const RECENT: usize = 8;

impl Watch {
    /// What `WATCH` answers.
    pub fn report(&self) -> WatchReport {
        WatchReport {
            traced: true,
            read: self.read,
            dropped: self.dropped,
            learned: if self.stide.is_some() { WARMUP_EVENTS as u64 } else { self.learned as u64 },
            warmup: WARMUP_EVENTS as u64,
            stretches: self.stretches,
            anomalous: self.anomalous.is_some(),
            lines: self.recent.iter().cloned().collect(),
            model: self.model.is_some(),
            windows: self.model.as_ref().map_or(0, |m| m.windows),
            score: self.model.as_ref().map_or(0, |m| milli(m.score)),
            threshold: self.model.as_ref().map_or(0, |m| milli(m.threshold)),
            peak: self.model.as_ref().map_or(0, |m| milli(m.peak)),
            model_stretches: self.model.as_ref().map_or(0, |m| m.stretches),
            model_anomalous: self.model.as_ref().is_some_and(|m| m.anomalous.is_some()),
            level: self.model.as_ref().map_or(Level::Normal, |m| m.responder.level()).name().into(),
            limit: String::new(),
            refused: self.refused,
            refusals_unplaced: self.refusals_unplaced,
        }
    }

    /// A human accepted the behaviour found anomalous (`ALLOW`): the run's flagged windows are
    /// accepted, the ladder goes back to normal. How many windows, and the priority to restore
    /// if it was throttled; `None` if the watch has no model.
    ///
    /// A run Studio kills loses its watch with its memory: a watch still there whose ladder is
    /// at kill is one whose kill the description's limit stopped, and it is spared.
    pub fn allow(&mut self) -> Option<(usize, Option<u8>)> {
        let m = self.model.as_mut()?;
        m.responder.spare();
        if !m.responder.allow() {
            return None;
        }
        let n = m.flagged.len();
        for h in m.flagged.drain(..) {
            m.detector.allow(h);
        }
        m.detector.forgive();
        m.anomalous = None;
        m.risen.clear();
        let throttled = m.throttled_from.take();
        // What the accepted windows named is no longer for a revoke to take.
        self.anomalous_blocks.clear();
        self.anomalous_refusers.clear();
        self.unnamed = false;
        self.studio_pending = false;
        Some((n, throttled))
    }

    /// Whether Studio's model judges this run (its ladder exists).
    pub fn judged_by_model(&self) -> bool {
        self.model.is_some()
    }

    /// The ladder's level (Normal without a model).
    pub fn level(&self) -> Level {
        self.model.as_ref().map_or(Level::Normal, |m| m.responder.level())
    }

    /// Whether the watch's throttle holds the agent's priority.
    pub fn throttled(&self) -> bool {
        self.model.as_ref().is_some_and(|m| m.throttled_from.is_some())
    }

    /// A human let the suspended run go on (`RESUME`): the ladder goes back to revoke (from a
    /// kill the limit stopped too, as [`allow`](Self::allow)).
    pub fn resume(&mut self) -> bool {
        self.model.as_mut().is_some_and(|m| {
            m.responder.spare();
            m.detector.forgive();
            m.responder.resume()
        })
    }

    /// At Studio's clock `now` (100 Hz): whether a suspended run's time is up (the ladder is at
    /// kill now).
    fn expired(&mut self, now: u32) -> bool {
        self.model.as_mut().is_some_and(|m| m.responder.expire(now) == Some(Level::Kill))
    }

    /// The kernel dropped records after the last one read (the ring was full): no sequence
    /// spans the gap. The warm-up's segment so far is learned, the scorer and the windows start
    /// afresh (an anomalous stretch carries on).
    fn gap(&mut self) {
        self.stream.clear();
        if let Some(m) = &mut self.model {
            m.detector.gap();
        }
        match &mut self.stide {
            None => {
                self.learning.train(&self.segment);
                self.segment.clear();
            }
            Some((db, scorer)) => *scorer = db.scorer(),
        }
    }

    /// The watch of an agent at `va`; `model`: Studio runs its model on it too, with these
    /// detector settings, sampling large batches with a generator seeded by `sample_seed`
    /// (Studio's, never the agent's). `carried`: the level the program's earlier runs reached (a
    /// new run starts there).
    pub fn new(va: u64, model: Option<detect::Config>, sample_seed: u64, suspend_ticks: u32, carried: Level) -> Watch {
        Watch {
            va,
            read: 0,
            dropped: 0,
            stream: Stream::new(),
            learning: Stide::new(Config::default()),
            segment: Vec::new(),
            learned: 0,
            stide: None,
            baseline: Baseline::new(),
            anomalous: None,
            stretches: 0,
            lines: 0,
            recent: VecDeque::new(),
            sampled: false,
            newest: None,
            anomalous_blocks: Vec::new(),
            anomalous_refusers: Vec::new(),
            unnamed: false,
            studio_pending: false,
            methods: VecDeque::new(),
            methods_dropped: 0,
            unanswered: VecDeque::new(),
            fresh: Vec::new(),
            refusals_unplaced: 0,
            refused: 0,
            told_by: Vec::new(),
            said_methods_dropped: false,
            last_tick: 0,
            #[cfg(test)]
            taken: Vec::new(),
            model: model.map(|detect| ModelWatch {
                detector: Detector::new(detect),
                sampler: ozone_cognition::Rng::new(sample_seed),
                batch: 0,
                windows: 0,
                score: 0.0,
                threshold: 0.0,
                peak: 0.0,
                anomalous: None,
                stretches: 0,
                responder: Responder::carried(respond::Config { suspend_ticks, ..respond::Config::default() }, carried),
                risen: Vec::new(),
                flagged: VecDeque::new(),
                throttled_from: None,
            }),
        }
    }

    /// The model's judgement of `w`, the window ending at record `seq`; a line for the log when
    /// an anomalous stretch starts or ends.
    fn judge(
        &mut self,
        seq: u64,
        model: &Quantised,
        w: &ozone_cognition::window::Window,
        now: u32,
        blocks: &[(u64, Option<usize>)],
    ) -> Option<String> {
        let m = self.model.as_mut()?;
        if m.batch > MODEL_PER_TICK && m.sampler.below(m.batch) >= MODEL_PER_TICK {
            return None;
        }
        let j = m.detector.push(model, w);
        let detector_config = m.detector.config();
        m.windows += 1;
        let top = self.baseline.top(&w.features());
        // A suspended run's ladder waits for a human or its time (the windows still arriving
        // were written before the suspension): suspension is a quarantine that lasts, for
        // inspection, not a step a batch of old records climbs past.
        let verdict = if m.responder.level() == Level::Suspend {
            ozone_cognition::adapt::Verdict { anomalous: false, ..j.verdict }
        } else {
            j.verdict
        };
        let decision = m.responder.observe(&verdict, top, now);
        if j.verdict.anomalous {
            if m.flagged.len() == FLAGGED {
                m.flagged.pop_front();
            }
            m.flagged.push_back(w.hash());
            // What the window's newest event names (the event judged, in its context; the
            // older ones were judged as newest in their own windows).
            match self.newest.map_or(Used::Nothing, |r| Used::of(&r, blocks)) {
                Used::Nothing => {}
                Used::Block(b) if !self.anomalous_blocks.contains(&b) => self.anomalous_blocks.push(b),
                Used::Server(id) if !self.anomalous_refusers.contains(&id) => self.anomalous_refusers.push(id),
                Used::Block(_) | Used::Server(_) => {}
                Used::Unnamed => self.unnamed = true,
                Used::StudioLabel => self.studio_pending = true,
            }
        }
        // Why the window is anomalous: its frame, or the sure windows counted over the horizon.
        let why = |score: f32, threshold: f32| match j.spikes {
            Some(n) => format!(
                "{n} spikes (windows scoring {:.2} or more) in its last {} windows",
                detector_config.spike, detector_config.horizon
            ),
            None => format!("frame score {score:.2} over threshold {threshold:.2}"),
        };
        if decision.changed {
            let parts: Vec<String> =
                top.iter().map(|c| format!("{} {:.2} ({:+.1} sd)", c.feature.name(), c.value, c.z)).collect();
            let reason = why(decision.score, decision.threshold);
            m.risen.push((decision.level, format!("{reason} at event {seq}; moved most: {}", parts.join(", "))));
        }
        m.score = j.verdict.score;
        m.threshold = j.verdict.threshold;
        m.peak = m.peak.max(j.verdict.score);
        match (&mut m.anomalous, j.verdict.anomalous) {
            (None, true) => {
                m.anomalous = Some((seq, 0));
                m.stretches += 1;
                let top = self.baseline.top(&w.features());
                let parts: Vec<String> =
                    top.iter().map(|c| format!("{} {:.2} ({:+.1} sd)", c.feature.name(), c.value, c.z)).collect();
                Some(format!(
                    "the model finds it anomalous from event {seq}: {} (this window {:.2}); moved most: {}",
                    why(j.verdict.score, j.verdict.threshold),
                    j.window,
                    parts.join(", ")
                ))
            }
            (Some((_, quiet)), true) => {
                *quiet = 0;
                None
            }
            (Some((from, quiet)), false) => {
                *quiet += 1;
                if *quiet < QUIET {
                    return None;
                }
                let line = format!("the model finds it normal again at event {seq} (anomalous from event {from})");
                m.anomalous = None;
                Some(line)
            }
            (None, false) => None,
        }
    }

    /// A request of the agent to Studio (`by` [`BY_STUDIO`](ozone_abi::trace::BY_STUDIO), `info`
    /// its method number or [`NOT_A_METHOD`](ozone_abi::trace::NOT_A_METHOD)) or one another
    /// server refused (`by` [`BY_SERVER`](ozone_abi::trace::BY_SERVER), `info` the server's
    /// program id), answered `code`, whose Call carried wire label `label` (without the payload's
    /// padding bits): the record's fields (`ozone_abi::trace::Kind::Method`).
    ///
    /// When [`PENDING_METHODS`] of its kind wait already, the new event takes the place of the
    /// oldest one of its kind that says less ([`rank`]: a refusal more than a bad request, that
    /// more than another error, that more than an answer), so a program cannot hide its
    /// refusals behind a stream of cheap or failing requests; otherwise it is dropped. Either
    /// way one is counted. The kinds are Studio's own events (what Studio saw) and other
    /// servers' (their word), [`PENDING_METHODS`] each: neither can push the other out — a
    /// server cannot push its client's requests to Studio out of the watch, a client cannot hide
    /// a server's refusals behind requests to Studio. Among servers' words, one from a server
    /// with fewer waiting than another pushes out that one's lowest (one server cannot fill the
    /// servers' places and drop another's refusals). A server's event dropped or pushed out is
    /// counted with the unplaced ones ([`Watch::refusals_unplaced`]), not as the agent's requests.
    fn method_event(&mut self, by: u8, label: u64, info: u64, code: u16, before: u64) {
        let own = |p: &Pending| p.event.what == ozone_abi::trace::BY_STUDIO;
        let mine = by == ozone_abi::trace::BY_STUDIO;
        let event = Record { kind: EventKind::Method, what: by, object: ObjectKind::None, result: code, tick: 0, info };
        if self.methods.iter().filter(|p| own(p) == mine).count() >= PENDING_METHODS {
            if mine {
                self.methods_dropped += 1;
            } else {
                self.refusals_unplaced += 1;
            }
            // Whose words compete: Studio's own with each other; a server's with those of the
            // server with the most words waiting when that is another server, which gives way
            // whatever their rank (no server holds the servers' places while another has
            // fewer), else with its own.
            let whose = |p: &Pending, id: u64| own(p) == mine && (mine || p.event.info == id);
            let waiting = |id: u64| self.methods.iter().filter(|p| whose(p, id)).count();
            let rival = if mine {
                info
            } else {
                let most = self.methods.iter().filter(|p| !own(p)).map(|p| p.event.info).max_by_key(|&id| waiting(id));
                most.filter(|&m| waiting(m) > waiting(info)).unwrap_or(info)
            };
            let lowest = (0..self.methods.len())
                .filter(|&at| whose(&self.methods[at], rival))
                .min_by_key(|&at| rank(self.methods[at].event.result));
            match lowest {
                Some(at) if rival != info || rank(self.methods[at].event.result) < rank(code) => {
                    self.methods.remove(at);
                }
                _ => return,
            }
        }
        self.methods.push_back(Pending { label, event, before });
    }

    /// The method event that goes right after kernel record number `seq`, `r`, if `r` is a
    /// request it may have answered: a Call, Send or NBSend on an endpoint whose label (without
    /// padding) is the event's, written before the event came ([`Pending`]). For a label of
    /// Studio's own block (`studio_block`) the oldest such event of Studio's is taken, else the
    /// oldest of another server's (Studio's own event is what Studio saw of that very request:
    /// a server's early word cannot take its place); for any other label the oldest such event,
    /// whoever's (a server tells of a request before it replies, so before the client can make
    /// a later Call to Studio with the same label: such a Call cannot take the server's event).
    /// The others keep their places. A request that takes none is remembered as unanswered
    /// ([`Watch::leftovers`]).
    fn method_after(&mut self, seq: u64, r: &Record, studio_block: u64) -> Option<Record> {
        let label = request_label(r)?;
        // Among the events that may follow this request, the first of the best kind: Studio's
        // own before a server's for Studio's labels, any for the others.
        let studio_label = block_of(label) == studio_block;
        let kind = |p: &Pending| u8::from(studio_label && p.event.what != ozone_abi::trace::BY_STUDIO);
        let found = (0..self.methods.len())
            .filter(|&at| self.methods[at].label == label && seq < self.methods[at].before)
            .min_by_key(|&at| (kind(&self.methods[at]), at));
        let Some(at) = found else {
            self.fresh.push((label, seq));
            return None;
        };
        let Pending { mut event, .. } = self.methods.remove(at)?;
        event.tick = r.tick;
        if event.what != ozone_abi::trace::BY_STUDIO {
            self.refused += 1;
        }
        Some(event)
    }

    /// The method events left once a batch's records were read, to go after the batch, at
    /// `tick`: Studio's own all (the request reached Studio, so its Call was made), another
    /// server's only where a Call of the agent's with that label, written before the server
    /// spoke, was read and took no event (one each: a server cannot tell Studio of requests
    /// that were never made, nor of requests made after it spoke).
    fn leftovers(&mut self, tick: u32) -> Vec<Record> {
        let mut out = Vec::new();
        while let Some(Pending { label, mut event, before }) = self.methods.pop_front() {
            if event.what != ozone_abi::trace::BY_STUDIO {
                // The Calls of earlier batches first (the oldest unanswered), then this batch's.
                let about = |(l, seq): &(u64, u64)| *l == label && *seq < before;
                if let Some(at) = self.unanswered.iter().position(about) {
                    self.unanswered.remove(at);
                } else if let Some(at) = self.fresh.iter().position(about) {
                    self.fresh.remove(at);
                } else {
                    self.refusals_unplaced += 1;
                    continue;
                }
                self.refused += 1;
            }
            event.tick = tick;
            out.push(event);
        }
        for r in self.fresh.drain(..) {
            if self.unanswered.len() == UNANSWERED_CALLS {
                self.unanswered.pop_front();
            }
            self.unanswered.push_back(r);
        }
        out
    }

    /// Take record number `seq`; lines for the log when an anomalous stretch starts or ends.
    /// `blocks`: the instance's interface blocks and their providers (`Studio::blocks`).
    fn take(
        &mut self,
        seq: u64,
        r: &Record,
        model: Option<&Quantised>,
        now: u32,
        blocks: &[(u64, Option<usize>)],
        lines: &mut Vec<String>,
    ) {
        self.last_tick = r.tick;
        let studio_s = r.kind == EventKind::Method && r.what == ozone_abi::trace::BY_STUDIO;
        if core::mem::take(&mut self.studio_pending) && !studio_s {
            // An anomalous request with Studio's label that Studio did not answer next: it
            // went to another endpoint, which its label does not name.
            self.unnamed = true;
        }
        self.newest = Some(*r);
        // Phase markers are events like any other here (they mean something to the recorder
        // only): a program could otherwise hide calls behind a marker's label.
        let t = token(r);
        #[cfg(test)]
        self.taken.push(t);
        let window = self.stream.push_token(t, r.tick);
        if let (Some(model), Some(w)) = (model, &window) {
            lines.extend(self.judge(seq, model, w, now, blocks));
        }
        lines.extend(self.stide(seq, t, window));
    }

    /// stide's part of [`Watch::take`].
    fn stide(&mut self, seq: u64, t: Token, window: Option<ozone_cognition::window::Window>) -> Option<String> {
        let Some((stide, scorer)) = &mut self.stide else {
            if let Some(w) = &window {
                self.baseline.learn(&w.features());
            }
            self.segment.push(t);
            self.learned += 1;
            if self.learned >= WARMUP_EVENTS {
                self.learning.train(&self.segment);
                let db = core::mem::replace(&mut self.learning, Stide::new(Config::default()));
                let scorer = db.scorer();
                self.stide = Some((db, scorer));
                self.segment = Vec::new();
            }
            return None;
        };
        let score = scorer.push(stide, t)?;
        let threshold = stide.config().threshold;
        match (&mut self.anomalous, score.anomalous) {
            (None, true) => {
                self.anomalous = Some((seq, score.lfc, 0));
                self.stretches += 1;
                let why = window.map_or_else(String::new, |w| {
                    let top = self.baseline.top(&w.features());
                    let parts: Vec<String> =
                        top.iter().map(|c| format!("{} {:.2} ({:+.1} sd)", c.feature.name(), c.value, c.z)).collect();
                    format!("; moved most: {}", parts.join(", "))
                });
                Some(format!(
                    "behaves unlike its warm-up from event {seq}: {} of the last {} sequences unseen (threshold {threshold}){why}",
                    score.lfc,
                    stide.config().frame
                ))
            }
            (Some((_, max, quiet)), true) => {
                *max = (*max).max(score.lfc);
                *quiet = 0;
                None
            }
            (Some((from, max, quiet)), false) => {
                *quiet += 1;
                if *quiet < QUIET {
                    return None;
                }
                let line = format!(
                    "behaves as in its warm-up again at event {seq} (anomalous from event {from}, at most {max} unseen)"
                );
                self.anomalous = None;
                Some(line)
            }
            (None, false) => None,
        }
    }
}

impl Studio {
    /// The behaviour model from the initrd's [`MODEL_FILE`], checked; what became of it is said
    /// in the log. No model (or tracing off): the watch runs stide alone.
    pub(crate) fn load_model(&mut self, file: Option<&[u8]>) -> Option<Quantised> {
        self.tick?;
        let Some(bytes) = file else {
            self.decide(format!("no behaviour model ({MODEL_FILE}) in the initrd: the watch runs stide alone"));
            return None;
        };
        match Weights::from_bytes(bytes) {
            Ok(w) => {
                let q = Quantised::new(&w);
                // Printed so that a test can hold this pass against the host's: the scores, and
                // the logits (a score saturates at 0 or 1; its logit still says every digit).
                let probes = ozone_cognition::model::probe_windows();
                let scores: Vec<String> = probes.iter().map(|t| format!("{:.6}", q.score(t))).collect();
                let logits: Vec<String> = probes.iter().map(|t| format!("{:.6}", q.logit(t))).collect();
                self.decide(format!(
                    "behaviour model loaded ({MODEL_FILE}, {} bytes); probe windows score {} (logits {})",
                    bytes.len(),
                    scores.join(" "),
                    logits.join(" ")
                ));
                Some(q)
            }
            Err(e) => {
                self.decide(format!("the behaviour model is refused ({MODEL_FILE}: {e}): the watch runs stide alone"));
                None
            }
        }
    }

    /// Studio's notification for its tick, bound to its own thread; `None` (said in the log) if
    /// it cannot be made or bound, or the description turns tracing off.
    pub(crate) fn make_tick(&mut self) -> Option<u64> {
        if !self.desc.system.trace {
            return None;
        }
        let made = self.own.retype(ObjectType::Notification, 0);
        let bound = made.and_then(|n| self.k.bind_notification(ozone_abi::bootinfo::slot::TCB, n).map(|()| n));
        match bound {
            Ok(n) => Some(n),
            Err(e) => {
                self.decide(format!("no tick for the watch ({e:?}): agents are not traced"));
                None
            }
        }
    }

    /// Trace agent `i`, being built as `tcb` from `mem`: its ring, mapped in Studio's address
    /// space, and the trace started before it runs. Without Studio's tick nothing is traced.
    pub(crate) fn start_watch(&mut self, i: usize, mem: &dyn Alloc, tcb: u64) -> Result<(), String> {
        if self.tick.is_none() || self.agents[i].prog.kind != Kind::Agent {
            return Ok(());
        }
        let va = ring_va(self.agents[i].id);
        let ring = mem.retype(ObjectType::Frame4K, 0).map_err(|e| format!("its ring: {e:?}"))?;
        self.k.map_ring(&self.own, ring, va).map_err(|e| format!("mapping its ring: {e:?}"))?;
        self.k.trace(tcb, ring).map_err(|e| format!("tracing it: {e:?}"))?;
        let sample_seed = self.layout_key ^ self.agents[i].id.rotate_left(32) ^ u64::from(self.agents[i].run);
        let suspend_ticks = self.desc.system.suspend_seconds.saturating_mul(100);
        let carried = self.agents[i].carried;
        self.agents[i].watch =
            Some(Watch::new(va, self.model.is_some().then_some(self.detect), sample_seed, suspend_ticks, carried));
        if self.model.is_some() && carried > Level::Normal {
            // Ending itself (an exit or a fault, then its restart policy) is no way down the
            // ladder: the new run starts where the last one was, throttled again if it was.
            let name = self.agents[i].prog.name.clone();
            let throttle = carried >= Level::Throttle && self.limit(i) >= Response::Throttle;
            let mut what = String::new();
            if throttle {
                what = format!("; {}", self.throttle(i, tcb));
            }
            self.decide(format!(
                "watch {name}: this run starts at {} (its last run's level; `studio allow {name}` takes it back){what}",
                carried.min(Level::Revoke).name()
            ));
        }
        Ok(())
    }

    /// Studio's tick: read every running watched agent's new records, and carry out the graded
    /// responses its model's ladder rose to; kill a suspended agent whose time is up.
    pub(crate) fn watch_tick(&mut self) {
        self.watch_ticks = self.watch_ticks.wrapping_add(1);
        let now = self.clock();
        for i in 0..self.agents.len() {
            let state = self.agents[i].state;
            match state {
                AgentState::Running => {
                    self.drain(i);
                    let risen = self.agents[i]
                        .watch
                        .as_mut()
                        .and_then(|w| w.model.as_mut())
                        .map(|m| core::mem::take(&mut m.risen))
                        .unwrap_or_default();
                    for (level, why) in risen {
                        if !self.respond(i, level, &why) {
                            break;
                        }
                    }
                }
                AgentState::Suspended if self.agents[i].watch.as_mut().is_some_and(|w| w.expired(now)) => {
                    let secs = self.desc.system.suspend_seconds;
                    self.respond(i, Level::Kill, &format!("suspended for {secs} s without an allow or a resume"));
                }
                _ => {}
            }
        }
        self.follow_tick(now);
    }

    /// Follow agent `t`'s scores live for `seconds` (`FOLLOW`); 0 ends the follow.
    pub(crate) fn follow(&mut self, t: usize, seconds: u32) {
        let name = self.agents[t].prog.name.clone();
        // 0 ends the follow of `t` only (an `off` typed late leaves another agent's alone).
        if seconds == 0 && self.following.as_ref().is_none_or(|f| f.agent != t) {
            return;
        }
        if let Some(f) = self.following.take() {
            let was = self.agents[f.agent].prog.name.clone();
            self.log.note(&format!("watch {was} live: ends (asked)"));
        }
        if seconds == 0 {
            return;
        }
        let now = self.clock();
        self.following = Some(Following {
            agent: t,
            run: self.agents[t].run,
            until: now.wrapping_add(seconds.saturating_mul(100)),
            next: now,
            last: None,
            lines: 0,
        });
        self.log.note(&format!("watch {name} live: its scores each second they change, for {seconds} s"));
        self.follow_tick(now);
    }

    /// The followed agent's line, at most once a second and only when it changed; the end of
    /// the follow when its time is up or its run ended.
    fn follow_tick(&mut self, now: u32) {
        let Some(f) = &self.following else { return };
        // (Wrapping times: the clock wraps at 2^32, as the ladder's.)
        if (now.wrapping_sub(f.next) as i32) < 0 {
            return;
        }
        let (t, run, until, last) = (f.agent, f.run, f.until, f.last.clone());
        let a = &self.agents[t];
        let name = a.prog.name.clone();
        if a.run != run || a.proc.is_none() {
            self.following = None;
            self.log.note(&format!("watch {name} live: ends (its run ended)"));
            return;
        }
        let line = match &a.watch {
            Some(w) => WatchReport { limit: self.limit(t).name().into(), ..w.report() }.scores(),
            None => String::from("not traced"),
        };
        let changed = last.as_deref() != Some(line.as_str());
        if changed {
            self.log.note(&format!("watch {name} live: {line}"));
        }
        let f = self.following.as_mut().expect("followed above");
        if changed {
            f.last = Some(line);
            f.lines += 1;
        }
        if f.lines >= FOLLOW_LINES {
            // The decision log keeps the last 256 lines: one follow must not push Studio's
            // decisions out of it.
            self.following = None;
            self.log.note(&format!(
                "watch {name} live: ends ({FOLLOW_LINES} lines noted: `studio watch {name}` again for more)"
            ));
        } else if (now.wrapping_sub(until) as i32) >= 0 {
            self.following = None;
            self.log.note(&format!("watch {name} live: ends (its time is up)"));
        } else {
            f.next = now.wrapping_add(100);
        }
    }

    /// Studio's clock for the ladder: its ticks, counted in hundredths of a second, modulo 2^32
    /// (the ladder compares times with wrapping arithmetic: the clock must wrap at 2^32 exactly;
    /// a 32-bit tick count halved wrapped at 2^31 and killed a suspended agent at once).
    pub(crate) fn clock(&self) -> u32 {
        (self.watch_ticks.wrapping_mul(ozone_agent_sdk::protocol::timer::STUDIO_TICK_US) / 10_000) as u32
    }

    /// The priority agent `a` runs at now: the description's, less the watch's throttle or
    /// perf's demotion (what `LIST`, the shell's `ps`, shows); the description's for a program
    /// that is not running or suspended (its next run starts at it).
    pub(crate) fn priority_now(&self, a: &crate::state::Agent) -> u8 {
        let band = a.prog.priority;
        if !matches!(a.state, AgentState::Running | AgentState::Suspended) {
            band
        } else if a.watch.as_ref().is_some_and(Watch::throttled) {
            band.saturating_sub(THROTTLE_STEP).max(1)
        } else if a.perf.demoted && a.prog.kind == Kind::Agent && self.desc.system.adapt {
            band.saturating_sub(crate::perf::PERF_STEP).max(1)
        } else {
            band
        }
    }

    /// Lower agent `i`'s thread `tcb` [`THROTTLE_STEP`] below its band and remember it is
    /// throttled; what was done, for the log (`priority FROM -> TO (result)`).
    fn throttle(&mut self, i: usize, tcb: u64) -> String {
        let from = self.agents[i].prog.priority;
        let to = from.saturating_sub(THROTTLE_STEP).max(1);
        let done = self.k.set_priority(tcb, u64::from(to));
        if let Some(m) = self.agents[i].watch.as_mut().and_then(|w| w.model.as_mut()) {
            m.throttled_from = Some(from);
        }
        format!("priority {from} -> {to} ({done:?})")
    }

    /// The highest response the description lets Studio carry out for agent `i`.
    pub(crate) fn limit(&self, i: usize) -> Response {
        self.agents[i].prog.respond.unwrap_or(self.desc.system.respond)
    }

    /// Carry out level `level` of the ladder for agent `i`, or log that the description stops
    /// Studio short of it; `false` once the agent is gone (killed).
    fn respond(&mut self, i: usize, level: Level, why: &str) -> bool {
        let name = self.agents[i].prog.name.clone();
        let limit = self.limit(i);
        let wanted = match level {
            Level::Normal => return true,
            Level::Alert => Response::Alert,
            Level::Throttle => Response::Throttle,
            Level::Revoke => Response::Revoke,
            Level::Suspend => Response::Suspend,
            Level::Kill => Response::Kill,
        };
        if limit == Response::Off {
            return true;
        }
        if wanted > limit {
            self.decide(format!(
                "watch {name}: would {} ({why}); not done: its respond is {}",
                level.name(),
                limit.name()
            ));
            return true;
        }
        let Some(p) = self.agents[i].proc else { return false };
        match level {
            Level::Normal => {}
            Level::Alert => self.decide(format!("watch {name}: alert: {why}")),
            Level::Throttle => {
                let what = self.throttle(i, p.tcb);
                self.decide(format!("watch {name}: throttle: {what}: {why}"));
            }
            Level::Revoke => {
                // What the anomalous events used: a request's label names its interface (its
                // block), and other servers' refusals name their server. The interfaces the
                // events ending its anomalous windows named go: those their requests used, and
                // those whose servers refused it there. Every interface it holds goes, and
                // every one it may still look up (an agent could keep those for after the
                // revoke: its description's and its grants), when they named none (faults, a
                // capability scan, requests to Studio), or when a request carried a label that
                // does not name where it went (a label of no interface, Studio's label on a
                // request Studio did not answer, an interface it may not use: a request sent
                // to one endpoint under another's labels). The `studio` one stays: it is how
                // it is allowed, refused and ended. `revoke` logs each and refuses future
                // lookups of it.
                let a = &self.agents[i];
                let mut interfaces: Vec<String> = Vec::new();
                let candidates = a.held.iter().filter_map(|h| h.interface.clone()).chain(a.prog.uses.iter().cloned());
                for x in candidates.chain(a.granted.iter().cloned()) {
                    if x != ozone_agent_sdk::protocol::studio::INTERFACE && a.may_use(&x) && !interfaces.contains(&x) {
                        interfaces.push(x);
                    }
                }
                let (refusers, used, unnamed) = a
                    .watch
                    .as_ref()
                    .map(|w| (w.anomalous_refusers.clone(), w.anomalous_blocks.clone(), w.unnamed))
                    .unwrap_or_default();
                let blocks: Vec<u64> =
                    interfaces.iter().map(|x| Permutation::new(self.protocol_key, x).block()).collect();
                let refused = |x: &str| {
                    refusers.iter().any(|&id| {
                        self.index_of_id(id).is_some_and(|s| self.agents[s].prog.provides.iter().any(|p| p == x))
                    })
                };
                let named: Vec<String> = interfaces
                    .iter()
                    .zip(&blocks)
                    .filter(|(x, b)| refused(x) || used.contains(b))
                    .map(|(x, _)| x.clone())
                    .collect();
                let foreign = used.iter().any(|b| !blocks.contains(b));
                let said = if interfaces.is_empty() { String::from("it has none") } else { interfaces.join(", ") };
                if unnamed || foreign {
                    self.decide(format!(
                        "watch {name}: revoke: every interface it holds or may look up ({said}; its anomalous requests carried labels that do not name where they went): {why}"
                    ));
                } else if named.is_empty() {
                    self.decide(format!(
                        "watch {name}: revoke: every interface it holds or may look up ({said}; its anomalous events named none): {why}"
                    ));
                } else {
                    self.decide(format!(
                        "watch {name}: revoke: the interfaces its anomalous requests used or whose servers refused them ({}): {why}",
                        named.join(", ")
                    ));
                    interfaces = named;
                }
                for interface in interfaces {
                    let g = ozone_agent_sdk::protocol::studio::Grant { agent: name.clone(), interface };
                    let _ = self.revoke(i, &g, "Studio's watch");
                }
            }
            Level::Suspend => {
                let done = self.k.suspend(p.tcb);
                if done.is_ok() {
                    self.agents[i].state = AgentState::Suspended;
                }
                let secs = self.desc.system.suspend_seconds;
                self.decide(format!(
                    "watch {name}: suspend ({done:?}): its memory kept; `studio allow {name}` or `studio resume {name}` within {secs} s, or it is killed: {why}"
                ));
                // Only the kill can follow (the ladder may have reached it in the same batch:
                // it must not be lost, its expiry would never come).
                return true;
            }
            Level::Kill => {
                self.stop(
                    i,
                    AgentState::Stopped,
                    format!("watch {name}: kill: {why}; revoked everything, memory reclaimed"),
                );
                return false;
            }
        }
        true
    }

    /// A request of program `badge` (any badge: one that names no watched agent is no event)
    /// for `method` (`None`: its label `label` named none), answered `code` (0 or the
    /// `ServiceError`'s): an event of the agent's, read after its Call's record at the next tick.
    pub(crate) fn method_event(&mut self, badge: u64, method: Option<u64>, label: u64, code: u16) {
        let Some(i) = self.index_of_id(badge) else { return };
        if let Some(w) = self.agents[i].watch.as_mut() {
            let method = method.unwrap_or(ozone_abi::trace::NOT_A_METHOD);
            w.method_event(ozone_abi::trace::BY_STUDIO, label, method, code, u64::MAX);
        }
    }

    /// Another server refused a request of agent `t` whose Call carried wire label `label`
    /// (padding bits are taken off here), answering `code` (`REFUSED`, checked by the caller):
    /// an event of the agent's, read after that Call's record.
    ///
    /// The first refusal each server tells of a run is logged (who speaks of whom, with what):
    /// a server's word moves Studio's judgement of another program, and the log says whose.
    pub(crate) fn refused_by_server(&mut self, t: usize, server: usize, label: u64, code: u16) {
        let (server_id, server_name) = (self.agents[server].id, self.agents[server].prog.name.clone());
        let name = self.agents[t].prog.name.clone();
        let (Some(w), Some(p)) = (self.agents[t].watch.as_ref(), self.agents[t].proc) else { return };
        // How many records the agent's trace has now: the request the server speaks of is
        // among them (the count changes nothing; acknowledging what was read already is no
        // change either).
        let Ok((written, _)) = self.k.trace_ack(p.tcb, w.read) else { return };
        let Some(w) = self.agents[t].watch.as_mut() else { return };
        w.method_event(ozone_abi::trace::BY_SERVER, wire_label(label), server_id, code, written);
        if w.told_by.contains(&server_id) {
            return;
        }
        w.told_by.push(server_id);
        let what = match Answer::of(code) {
            Answer::Denied => "denied",
            Answer::UnknownMethod => "unknown method",
            Answer::BadRequest => "did not decode",
            Answer::Ok | Answer::Error => "other",
        };
        let line = format!(
            "{server_name} says it refused a request of its ({what}): the refusals {server_name} tells of are events of its from now on, each after a request of its with that label (said once)"
        );
        self.watch_line(t, &name, line);
    }

    /// Log `line` about agent `i` (named `name`) and keep it among the watch's last lines: at
    /// most [`LINES_PER_RUN`] are logged a run, and the log says when that is reached.
    fn watch_line(&mut self, i: usize, name: &str, line: String) {
        let Some(w) = self.agents[i].watch.as_mut() else { return };
        if w.recent.len() == RECENT {
            w.recent.pop_front();
        }
        w.recent.push_back(line.clone());
        w.lines = w.lines.saturating_add(1);
        if w.lines < LINES_PER_RUN {
            self.log.note(&format!("watch {name}: {line}"));
        } else if w.lines == LINES_PER_RUN {
            self.log.note(&format!("watch {name}: further lines about this run are not logged"));
        }
    }

    /// Read agent `i`'s new records, if it is watched and its memory is there (a stopped agent's
    /// last records are read this way before its memory goes: `reclaim`).
    pub(crate) fn drain(&mut self, i: usize) {
        let dump = self.desc.system.trace_dump;
        let a = &self.agents[i];
        let (Some(w), Some(p)) = (&a.watch, a.proc) else { return };
        let (va, read) = (w.va, w.read);
        let Ok((written, dropped)) = self.k.trace_ack(p.tcb, read) else {
            // The trace is gone (it cannot be, while the agent's memory is there): stop
            // reading it.
            self.agents[i].watch = None;
            return;
        };
        let name = self.agents[i].prog.name.clone();
        let now = self.clock();
        // The kernel's records with the method events after the Calls they answered; events
        // whose Call was not read (dropped, or read at an earlier tick) after them all. Each with
        // the sequence number of the kernel record it is or follows.
        let mut events = Vec::new();
        let studio_block = self.numbering.block();
        for seq in read..written {
            let Some(r) = Record::from_words(self.k.ring_record(va, seq)) else { continue };
            // The kernel writes no method event: a ring that held one would not be the kernel's.
            // A ThreadExit's record is the end of the life, not behaviour to judge.
            if r.kind == EventKind::Method || r.ends_thread() {
                continue;
            }
            events.push((seq, r));
            let Some(w) = self.agents[i].watch.as_mut() else { return };
            events.extend(w.method_after(seq, &r, studio_block).map(|m| (seq, m)));
        }
        let mut unplaced = 0;
        if let Some(w) = self.agents[i].watch.as_mut() {
            let (last, tick) = (written.saturating_sub(1), w.last_tick);
            let tick = events.last().map_or(tick, |(_, r)| r.tick);
            unplaced = w.refusals_unplaced;
            events.extend(w.leftovers(tick).into_iter().map(|m| (last, m)));
            unplaced = w.refusals_unplaced - unplaced;
        }
        if let Some(m) = self.agents[i].watch.as_mut().and_then(|w| w.model.as_mut()) {
            m.batch = events.len() as u64;
        }
        if dump {
            dump_events(&name, read, &events);
        }
        let mut lines = Vec::new();
        for (seq, r) in &events {
            let Some(w) = self.agents[i].watch.as_mut() else { break };
            w.take(*seq, r, self.model.as_ref(), now, &self.blocks, &mut lines);
        }
        let Some(w) = self.agents[i].watch.as_mut() else { return };
        w.read = written;
        // Acknowledged now, not at the next tick: a batch left unacknowledged would take the
        // ring's room until then (a busy agent's next tick would be dropped whole).
        let _ = self.k.trace_ack(p.tcb, written);
        if dropped > w.dropped {
            if dump {
                ozone_agent_sdk::println!("[studio] trace {name} dropped {dropped} at {written}");
            }
            w.dropped = dropped;
            // A full ring drops what comes after the last record it holds: the gap is here.
            w.gap();
        }
        if unplaced > 0 && w.refusals_unplaced == unplaced {
            lines.push(format!(
                "a server told Studio of {unplaced} refused requests of its with no request of its read to go after, or more than the watch keeps a tick: dropped (said once a run)"
            ));
        }
        if !w.said_methods_dropped && w.methods_dropped > 0 {
            w.said_methods_dropped = true;
            lines.push(format!(
                "makes more than {PENDING_METHODS} requests of Studio a tick: {} of them counted, not judged (refusals kept first)",
                w.methods_dropped
            ));
        }
        // Most of its events unseen: the watch says so once (a program can fill its ring between
        // ticks on purpose, to hide what comes after).
        if !w.sampled && w.dropped >= SAMPLED_DROPS && w.dropped >= 4 * w.read {
            w.sampled = true;
            lines.push(format!(
                "sees only a sample of it: {} of its {} events dropped (its ring fills between ticks)",
                w.dropped,
                w.dropped + w.read
            ));
        }
        for line in lines {
            if self.agents[i].watch.is_none() {
                return;
            }
            self.watch_line(i, &name, line);
        }
    }
}

/// Print a batch of an agent's events for the recorder (`[studio] trace NAME SEQ w0:w1 ...`,
/// [`DUMP_PER_LINE`] to a line); `read`: the sequence number of the batch's first kernel
/// record. A line's `SEQ` is the sequence number of the next kernel record at its start (a
/// method event is not the kernel's and has no number of its own), which the recorder takes for
/// where the kernel's numbering goes on (a number that goes back starts a new life).
fn dump_events(name: &str, read: u64, events: &[(u64, Record)]) {
    let mut next = read;
    for line in events.chunks(DUMP_PER_LINE) {
        let mut text =
            format!("[studio] trace {name} {}", if line[0].1.kind == EventKind::Method { next } else { line[0].0 });
        for (seq, r) in line {
            if r.kind != EventKind::Method {
                next = seq + 1;
            }
            let [w0, w1] = r.to_words();
            text.push_str(&format!(" {w0:x}:{w1:x}"));
        }
        ozone_agent_sdk::println!("{text}");
    }
}
