//! Tokens: one kernel trace [`Record`] becomes one small integer below [`VOCAB`].
//!
//! The detectors (stide, the model) see a program as a stream of tokens. A token keeps what says
//! something about a program's behaviour and drops what only says *when* or *with which values*:
//!
//! | field | kept as | why |
//! |-------|---------|-----|
//! | `kind` | the token's range (fault or syscall) | a fault is a different event from any syscall |
//! | `what` (syscall) | the IPC syscall (9 values) and "other" (the debug calls) | which operation a program uses is its most basic habit |
//! | `what` (fault) | the fault label (5 values) and "other" | a denied syscall, a page fault and an unknown syscall mean different things |
//! | `object` | six groups (none, endpoint, notification, reply, kernel object, invalid); for labelled calls three (endpoint, kernel object, invalid) | the kernel object's exact kind is implied by the invocation label (the methods of each kind are numbered apart, [`ozone_abi::invocation`]), so the label carries it |
//! | `result` | four classes: ok, denied, invalid capability, other error | a denial (the profile said no) and a capability that is not there (probing) are the signals of a hostile program; which other error is rarely informative |
//! | invocation label | for Call/CallInterruptible/Send/NBSend on an endpoint, a kernel object or an empty slot: labels below 128 exactly; for the others, not the label but the message's size class (4: [`SizeClass`]) | below 128 the label is a kernel method or a raw label; from 128 up it is a protocol's wire label, which each system instance numbers afresh (`protocol::Permutation`, keyed by the instance's seed): a model that learned one instance's numbers would read another's as noise. The method itself comes from the server's method events. The size class says what the message carries: a flood sends the largest messages back to back |
//! | `tick` | dropped (the window's features keep the event rate) | timing varies with load, not with behaviour |
//! | `info` (other bits) | dropped (but the size class of a message whose label is not kept, above) | message lengths and capability counts vary with data; for a page fault only the address's class is kept (the null page, user memory, the kernel's half) |
//!
//! Replies and receives (ReplyRecv, Reply, Recv, NBRecv) carry the reply's label, a protocol's
//! status, which the caller sees again as its result; it is not kept. Send on a notification
//! carries a label the kernel ignores; it is not kept either.
//!
//! **Method events** ([`Kind::Method`]: a request as the server saw it, added by Studio to the
//! caller's events, never written by the kernel) keep the method number (the kernel's record of
//! the Call has only its wire label, which each boot numbers afresh) and the server's answer in
//! five classes: ok, denied (the table or the method profile refused it), unknown method, bad
//! request (it did not decode), other error. A privilege probe is ordinary Calls to the kernel,
//! and refusals to the server: only these events show the refusals. Those Studio answers itself
//! ([`BY_STUDIO`](ozone_abi::trace::BY_STUDIO)) keep the method; another server's refusals
//! ([`BY_SERVER`](ozone_abi::trace::BY_SERVER), told to Studio by servers with the `clients`
//! privilege) keep the answer class only (each server numbers its own methods): a protocol
//! fuzzer's requests look like any other Calls to the kernel, and only these say that the server
//! could not take them.
//!
//! The vocabulary is five ranges, one after the other:
//!
//! | range | tokens | formula |
//! |-------|--------|---------|
//! | faults | [`FAULTS`] (8) | `FAULT_BASE + class` (see [`FaultClass`]) |
//! | plain syscalls | [`PLAIN`] (10 × 6 × 4 = 240) | `PLAIN_BASE + (what × 6 + object group) × 4 + result` |
//! | labelled calls | [`LABELLED`] (2 × 3 × 4 × 132 = 3168) | `LABELLED_BASE + ((op × 3 + target) × 4 + result) × 132 + label bucket` (bucket: the label below 128, else 128 + size class) |
//! | method events (Studio's) | [`METHODS`] (65 × 5 = 325) | `METHOD_BASE + method bucket × 5 + answer class` (bucket 64: no method) |
//! | method events (another server's) | [`REFUSALS`] (5) | `REFUSED_BASE + answer class` |
//!
//! # Phase markers
//!
//! Scenario programs (benign and hostile test programs) mark where their phases begin with a
//! Call on an empty capability slot whose label is [`PHASE_BENIGN`] or [`PHASE_HOSTILE`]: the
//! record is a syscall on [`ObjectKind::Invalid`] with that label. [`phase_marker`] recognises
//! them so that the recorder can label what follows and strip the marker itself from the stream
//! (the detectors never see it).

use ozone_abi::trace::{Kind, ObjectKind, Record};
use ozone_abi::{Error, fault, profile};

/// Invocation label of the marker that starts a benign phase.
pub const PHASE_BENIGN: u64 = 0x5CE0;
/// Invocation label of the marker that starts a hostile phase.
pub const PHASE_HOSTILE: u64 = 0x5CE1;

/// Fault tokens.
pub const FAULTS: usize = 8;
/// Syscalls kept without their label: 10 syscalls × 6 object groups × 4 result classes.
pub const PLAIN: usize = WHATS * OBJECT_GROUPS * RESULTS;
/// Labelled calls: 2 operations × 3 targets × 4 result classes × 132 label buckets.
pub const LABELLED: usize = OPS * TARGETS * RESULTS * LABEL_BUCKETS;
/// Method events: 65 method buckets × 5 answer classes.
pub const METHODS: usize = METHOD_BUCKETS * ANSWERS;
/// Another server's method events: one per answer class.
pub const REFUSALS: usize = ANSWERS;
/// How many tokens there are: every token is below this.
pub const VOCAB: usize = FAULTS + PLAIN + LABELLED + METHODS + REFUSALS;

/// First fault token.
pub const FAULT_BASE: usize = 0;
/// First plain-syscall token.
pub const PLAIN_BASE: usize = FAULT_BASE + FAULTS;
/// First labelled-call token.
pub const LABELLED_BASE: usize = PLAIN_BASE + PLAIN;
/// First method-event token.
pub const METHOD_BASE: usize = LABELLED_BASE + LABELLED;
/// First token of another server's method events.
pub const REFUSED_BASE: usize = METHOD_BASE + METHODS;

/// Method numbers kept exactly: every protocol's methods are numbered below this
/// (`ozone_agent_sdk::protocol::MAX_METHODS`; Studio's tests check the two agree).
pub const METHODS_KEPT: u64 = 64;
/// Method buckets: the kept numbers, then one for a label that named no method.
pub const METHOD_BUCKETS: usize = METHODS_KEPT as usize + 1;
/// Answer classes of a method event ([`Answer`]).
const ANSWERS: usize = 5;

/// The server answer codes the answer classes tell apart (`ozone_agent_sdk::protocol::
/// ServiceError`'s numbers; Studio's tests check they agree).
pub mod service {
    pub const BAD_REQUEST: u16 = 1;
    pub const UNKNOWN_METHOD: u16 = 2;
    pub const DENIED: u16 = 3;
}

/// Labels below this are kept exactly.
pub const LABELS_KEPT: u64 = 128;
/// Size classes a message with a larger label is kept as ([`SizeClass`]).
pub const SIZE_CLASSES: usize = 4;
/// Label buckets of a labelled call: the kept labels, then the size classes.
pub const LABEL_BUCKETS: usize = LABELS_KEPT as usize + SIZE_CLASSES;

/// How much a message carries, by its length in words (`MessageInfo` bits 0..7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeClass {
    /// In the four message registers.
    Registers = 0,
    /// 5 to 16 words.
    Small = 1,
    /// 17 to 63 words.
    Large = 2,
    /// 64 words or more (the largest messages).
    Largest = 3,
}

impl SizeClass {
    /// The class of a message info word.
    pub const fn of(info: u64) -> SizeClass {
        match info & 0x7f {
            0..=4 => SizeClass::Registers,
            5..=16 => SizeClass::Small,
            17..=63 => SizeClass::Large,
            _ => SizeClass::Largest,
        }
    }
}

/// Syscall classes: the 9 IPC syscalls (by profile bit) and one for every other syscall.
const WHATS: usize = 10;
const OBJECT_GROUPS: usize = 6;
const RESULTS: usize = 4;
/// Call-like (Call, CallInterruptible) and send-like (Send, NBSend).
const OPS: usize = 2;
/// Endpoint, kernel object, invalid.
const TARGETS: usize = 3;

/// Page-fault addresses below this are null-pointer dereferences (the first 64 KiB).
const NULL_REGION: u64 = 0x1_0000;

/// A token: an index below [`VOCAB`].
pub type Token = u16;

/// The phase a marker starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    Benign,
    Hostile,
}

/// The result classes a token keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResultClass {
    Ok = 0,
    /// The profile refused the syscall ([`Error::Denied`]).
    Denied = 1,
    /// A capability was not there or not of the kind needed ([`Error::InvalidCapability`],
    /// [`Error::FailedLookup`]).
    InvalidCapability = 2,
    /// Any other error.
    Error = 3,
}

impl ResultClass {
    /// The class of a record's `result`.
    pub const fn of(result: u16) -> ResultClass {
        if result == 0 {
            ResultClass::Ok
        } else if result == Error::Denied as u16 {
            ResultClass::Denied
        } else if result == Error::InvalidCapability as u16 || result == Error::FailedLookup as u16 {
            ResultClass::InvalidCapability
        } else {
            ResultClass::Error
        }
    }
}

/// The answer classes a method event's token keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    Ok = 0,
    /// The server's table or the method profile refused it.
    Denied = 1,
    UnknownMethod = 2,
    /// The request did not decode.
    BadRequest = 3,
    /// Any other error (not found, busy, quota, ...).
    Error = 4,
}

impl Answer {
    pub const ALL: [Answer; ANSWERS] =
        [Answer::Ok, Answer::Denied, Answer::UnknownMethod, Answer::BadRequest, Answer::Error];

    /// The class of a server's answer code (0: success).
    pub const fn of(code: u16) -> Answer {
        match code {
            0 => Answer::Ok,
            service::DENIED => Answer::Denied,
            service::UNKNOWN_METHOD => Answer::UnknownMethod,
            service::BAD_REQUEST => Answer::BadRequest,
            _ => Answer::Error,
        }
    }
}

/// The fault classes, in token order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultClass {
    /// A page fault in the first 64 KiB (a null pointer).
    PageFaultNull = 0,
    /// A page fault elsewhere in the user half.
    PageFaultUser = 1,
    /// A page fault at or above [`ozone_abi::USER_TOP`] (the kernel's half, non-canonical).
    PageFaultKernel = 2,
    UnknownSyscall = 3,
    UserException = 4,
    /// A syscall the profile refused, raised as a fault.
    Denied = 5,
    /// A learning window ended.
    WindowEnded = 6,
    /// A label no kernel writes today.
    Other = 7,
}

/// What a token says, decoded (for explanations and the coarse groups of `window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    Fault(FaultClass),
    /// A syscall without its label: the syscall class (profile bit, 9 = other), the object
    /// group (0 none, 1 endpoint, 2 notification, 3 reply, 4 kernel object, 5 invalid) and the
    /// result class.
    Plain {
        what: u8,
        group: u8,
        result: ResultClass,
    },
    /// A labelled call: `send` for Send/NBSend (else Call/CallInterruptible), the target (0
    /// endpoint, 1 kernel object, 2 invalid), the result class and the label bucket (below
    /// [`LABELS_KEPT`] the label itself).
    Labelled {
        send: bool,
        target: u8,
        result: ResultClass,
        bucket: u16,
    },
    /// A method event: the method number (below [`METHODS_KEPT`]; `None`: the label named no
    /// method) and the server's answer.
    Method {
        method: Option<u8>,
        answer: Answer,
    },
    /// Another server's method event: its answer (a refusal, as servers tell them).
    Refused {
        answer: Answer,
    },
}

/// The phase a record marks, if it is a phase marker.
pub fn phase_marker(record: &Record) -> Option<Phase> {
    if record.kind != Kind::Syscall || record.object != ObjectKind::Invalid {
        return None;
    }
    match record.label() {
        PHASE_BENIGN => Some(Phase::Benign),
        PHASE_HOSTILE => Some(Phase::Hostile),
        _ => None,
    }
}

/// The label bucket of a message info word: its label if below [`LABELS_KEPT`], else
/// `LABELS_KEPT` + its [`SizeClass`].
pub fn label_bucket(info: u64) -> u16 {
    let label = info >> 12;
    if label < LABELS_KEPT { label as u16 } else { LABELS_KEPT as u16 + SizeClass::of(info) as u16 }
}

/// The token of a record.
pub fn token(record: &Record) -> Token {
    let t = match record.kind {
        Kind::Fault => FAULT_BASE + fault_class(record) as usize,
        Kind::Syscall => syscall_token(record),
        Kind::Method if record.what != ozone_abi::trace::BY_STUDIO => REFUSED_BASE + Answer::of(record.result) as usize,
        Kind::Method => {
            let bucket = if record.info < METHODS_KEPT { record.info as usize } else { METHODS_KEPT as usize };
            METHOD_BASE + bucket * ANSWERS + Answer::of(record.result) as usize
        }
    };
    debug_assert!(t < VOCAB);
    t as Token
}

fn fault_class(record: &Record) -> FaultClass {
    match record.what as u64 {
        fault::VM_FAULT if record.info < NULL_REGION => FaultClass::PageFaultNull,
        fault::VM_FAULT if record.info < ozone_abi::USER_TOP => FaultClass::PageFaultUser,
        fault::VM_FAULT => FaultClass::PageFaultKernel,
        fault::UNKNOWN_SYSCALL => FaultClass::UnknownSyscall,
        fault::USER_EXCEPTION => FaultClass::UserException,
        fault::DENIED => FaultClass::Denied,
        fault::WINDOW_ENDED => FaultClass::WindowEnded,
        _ => FaultClass::Other,
    }
}

fn syscall_token(record: &Record) -> usize {
    let result = ResultClass::of(record.result) as usize;
    let what = record.what as u32;
    let op = match what {
        profile::CALL | profile::CALL_INTERRUPTIBLE => Some(0),
        profile::SEND | profile::NB_SEND => Some(1),
        _ => None,
    };
    let target = match record.object {
        ObjectKind::Endpoint => Some(0),
        ObjectKind::Invalid => Some(2),
        ObjectKind::None | ObjectKind::Notification | ObjectKind::Reply => None,
        _ => Some(1),
    };
    if let (Some(op), Some(target)) = (op, target) {
        let bucket = label_bucket(record.info) as usize;
        return LABELLED_BASE + ((op * TARGETS + target) * RESULTS + result) * LABEL_BUCKETS + bucket;
    }
    let what = if what < 9 { what as usize } else { WHATS - 1 };
    let group = match record.object {
        ObjectKind::None => 0,
        ObjectKind::Endpoint => 1,
        ObjectKind::Notification => 2,
        ObjectKind::Reply => 3,
        ObjectKind::Invalid => 5,
        _ => 4,
    };
    PLAIN_BASE + (what * OBJECT_GROUPS + group) * RESULTS + result
}

/// Decode a token; `None` for a number at or above [`VOCAB`].
pub fn decode(token: Token) -> Option<Decoded> {
    let t = token as usize;
    const CLASSES: [ResultClass; 4] =
        [ResultClass::Ok, ResultClass::Denied, ResultClass::InvalidCapability, ResultClass::Error];
    const FAULT_CLASSES: [FaultClass; FAULTS] = [
        FaultClass::PageFaultNull,
        FaultClass::PageFaultUser,
        FaultClass::PageFaultKernel,
        FaultClass::UnknownSyscall,
        FaultClass::UserException,
        FaultClass::Denied,
        FaultClass::WindowEnded,
        FaultClass::Other,
    ];
    if t < PLAIN_BASE {
        Some(Decoded::Fault(FAULT_CLASSES[t - FAULT_BASE]))
    } else if t < LABELLED_BASE {
        let i = t - PLAIN_BASE;
        let result = CLASSES[i % RESULTS];
        let i = i / RESULTS;
        Some(Decoded::Plain { what: (i / OBJECT_GROUPS) as u8, group: (i % OBJECT_GROUPS) as u8, result })
    } else if t < METHOD_BASE {
        let i = t - LABELLED_BASE;
        let bucket = (i % LABEL_BUCKETS) as u16;
        let i = i / LABEL_BUCKETS;
        let result = CLASSES[i % RESULTS];
        let i = i / RESULTS;
        Some(Decoded::Labelled { send: i / TARGETS == 1, target: (i % TARGETS) as u8, result, bucket })
    } else if t < REFUSED_BASE {
        let i = t - METHOD_BASE;
        let bucket = i / ANSWERS;
        let method = (bucket < METHODS_KEPT as usize).then_some(bucket as u8);
        Some(Decoded::Method { method, answer: Answer::ALL[i % ANSWERS] })
    } else if t < VOCAB {
        Some(Decoded::Refused { answer: Answer::ALL[t - REFUSED_BASE] })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;

    fn syscall(what: u32, object: ObjectKind, result: u16, label: u64) -> Record {
        Record { kind: Kind::Syscall, what: what as u8, object, result, tick: 0, info: label << 12 }
    }

    trait WithLen {
        fn with_len(self, len: u64) -> Record;
    }

    impl WithLen for Record {
        /// The record with a message of `len` words.
        fn with_len(mut self, len: u64) -> Record {
            self.info = (self.info & !0x7f) | len;
            self
        }
    }

    fn fault(label: u64, info: u64) -> Record {
        Record { kind: Kind::Fault, what: label as u8, object: ObjectKind::None, result: 0, tick: 0, info }
    }

    /// Every record shape the kernel can write, with a spread of labels and results.
    fn all_shapes() -> impl Iterator<Item = Record> {
        let labels = [0u64, 1, 27, 83, 127, 128, 0x5CE0, 0xFFFF_FFFF, u64::MAX >> 12];
        let results = [0u16, 1, 2, 6, 12, 13, 999];
        (0u32..=255).flat_map(move |what| {
            ObjectKind::ALL.into_iter().flat_map(move |object| {
                results.into_iter().flat_map(move |r| labels.into_iter().map(move |l| syscall(what, object, r, l)))
            })
        })
    }

    #[test]
    fn every_token_is_below_vocab_and_decodes() {
        let mut seen = BTreeSet::new();
        for r in all_shapes() {
            let t = token(&r);
            assert!((t as usize) < VOCAB, "{r:?} gave {t}");
            assert!(decode(t).is_some());
            seen.insert(t);
        }
        for label in 0..=255u64 {
            for info in [0, 0x1000, 0x40_0000, ozone_abi::USER_TOP, u64::MAX] {
                let t = token(&fault(label, info));
                assert!((t as usize) < FAULTS);
                seen.insert(t);
            }
        }
        // Every fault token, and every plain and labelled combination reached by the shapes.
        assert_eq!(seen.iter().filter(|&&t| (t as usize) < PLAIN_BASE).count(), FAULTS);
        assert!(seen.len() > PLAIN);
        assert_eq!(decode(VOCAB as Token), None);
        assert_eq!(VOCAB, 8 + 240 + 3168 + 325 + 5);
    }

    fn method(m: u64, answer: u16) -> Record {
        Record { kind: Kind::Method, what: 0, object: ObjectKind::None, result: answer, tick: 9, info: m }
    }

    #[test]
    fn method_events_keep_the_method_and_the_answer_class() {
        let mut seen = BTreeSet::new();
        for m in (0..70).chain([ozone_abi::trace::NOT_A_METHOD, 1 << 40]) {
            for answer in 0..14 {
                let t = token(&method(m, answer));
                assert!((METHOD_BASE..VOCAB).contains(&(t as usize)), "{m} {answer} gave {t}");
                let want =
                    Decoded::Method { method: (m < METHODS_KEPT).then_some(m as u8), answer: Answer::of(answer) };
                assert_eq!(decode(t), Some(want));
                seen.insert(t);
            }
        }
        assert_eq!(seen.len(), METHODS, "every method token is reached");
        // The answer classes that matter are apart; the tick is not kept.
        let ok = token(&method(7, 0));
        for code in [service::DENIED, service::UNKNOWN_METHOD, service::BAD_REQUEST, 4] {
            assert_ne!(ok, token(&method(7, code)));
        }
        assert_eq!(token(&method(7, 4)), token(&method(7, 9)), "other errors are one class");
        assert_ne!(ok, token(&method(8, 0)));
        let mut other = method(7, 0);
        other.tick = 1234;
        assert_eq!(ok, token(&other));
        // A method event is never a syscall's token, nor a phase marker.
        assert!(phase_marker(&method(PHASE_HOSTILE, 0)).is_none());
    }

    /// Another server's refusals keep the answer class only, apart from Studio's events of the
    /// same class: whatever the method number, label or server number in the record.
    #[test]
    fn another_server_s_refusals_keep_the_answer_class_only() {
        let mut seen = BTreeSet::new();
        for server in [ozone_abi::trace::BY_SERVER, 2, 255] {
            for m in [0, 7, 63, 64, ozone_abi::trace::NOT_A_METHOD] {
                for answer in 0..14 {
                    let mut r = method(m, answer);
                    r.what = server;
                    let t = token(&r);
                    assert!((REFUSED_BASE..VOCAB).contains(&(t as usize)), "{server} {m} {answer} gave {t}");
                    assert_eq!(decode(t), Some(Decoded::Refused { answer: Answer::of(answer) }));
                    assert_eq!(t, token(&Record { what: ozone_abi::trace::BY_SERVER, info: 0, ..r }));
                    assert_ne!(t, token(&method(m, answer)), "never one of Studio's own");
                    seen.insert(t);
                }
            }
        }
        assert_eq!(seen.len(), REFUSALS, "every refusal token is reached");
    }

    #[test]
    fn fields_that_matter_change_the_token() {
        let base = syscall(profile::CALL, ObjectKind::Endpoint, 0, 5);
        let t = token(&base);
        // Result class.
        assert_ne!(t, token(&syscall(profile::CALL, ObjectKind::Endpoint, Error::Denied as u16, 5)));
        // Label.
        assert_ne!(t, token(&syscall(profile::CALL, ObjectKind::Endpoint, 0, 6)));
        // Target.
        assert_ne!(t, token(&syscall(profile::CALL, ObjectKind::Invalid, 0, 5)));
        assert_ne!(t, token(&syscall(profile::CALL, ObjectKind::Tcb, 0, 5)));
        // Operation.
        assert_ne!(t, token(&syscall(profile::SEND, ObjectKind::Endpoint, 0, 5)));
        // Kind.
        assert_ne!(token(&syscall(profile::CALL, ObjectKind::None, 0, 0)), token(&fault(0, 0)));
        // Recv on an endpoint and on a notification differ; Recv's label does not matter.
        let recv = token(&syscall(profile::RECV, ObjectKind::Endpoint, 0, 0));
        assert_ne!(recv, token(&syscall(profile::RECV, ObjectKind::Notification, 0, 0)));
        assert_eq!(recv, token(&syscall(profile::RECV, ObjectKind::Endpoint, 0, 77)));
    }

    #[test]
    fn coarsened_fields_do_not_change_the_token() {
        let a = syscall(profile::CALL, ObjectKind::Endpoint, 0, 5);
        let mut b = a;
        b.tick = 12345;
        b.info |= 0xfff; // length, capability counts
        assert_eq!(token(&a), token(&b));
        // Call and CallInterruptible are one operation; so are Send and NBSend.
        assert_eq!(token(&a), token(&syscall(profile::CALL_INTERRUPTIBLE, ObjectKind::Endpoint, 0, 5)));
        assert_eq!(
            token(&syscall(profile::SEND, ObjectKind::Endpoint, 0, 5)),
            token(&syscall(profile::NB_SEND, ObjectKind::Endpoint, 0, 5))
        );
        // Kernel objects are one target: their labels tell them apart.
        assert_eq!(
            token(&syscall(profile::CALL, ObjectKind::Tcb, 0, 20)),
            token(&syscall(profile::CALL, ObjectKind::Frame, 0, 20))
        );
        // Errors other than denied and invalid-capability are one class.
        assert_eq!(
            token(&syscall(profile::CALL, ObjectKind::Tcb, Error::RangeError as u16, 20)),
            token(&syscall(profile::CALL, ObjectKind::Tcb, Error::InvalidArgument as u16, 20))
        );
        assert_eq!(ResultClass::of(Error::FailedLookup as u16), ResultClass::InvalidCapability);
    }

    #[test]
    fn labels_are_kept_below_128_and_above_it_the_size_class() {
        for l in 0..LABELS_KEPT {
            assert_eq!(label_bucket(l << 12 | 100), l as u16);
        }
        // A protocol's wire labels (each instance numbers them afresh): not kept; the size is.
        for l in [LABELS_KEPT, 0x100, 0x13f, 0x7_0100, u64::MAX >> 12] {
            for (len, class) in [(0, 0), (4, 0), (5, 1), (16, 1), (17, 2), (63, 2), (64, 3), (127, 3)] {
                assert_eq!(label_bucket(l << 12 | 3 << 7 | len), LABELS_KEPT as u16 + class, "{l:#x} {len}");
            }
        }
        let call = |label: u64, len: u64| token(&syscall(profile::CALL, ObjectKind::Endpoint, 0, label).with_len(len));
        assert_eq!(call(0x105, 2), call(0x13e, 3), "two methods of a protocol, in registers");
        assert_ne!(call(0x105, 2), call(0x105, 100), "a large message is another token");
        assert_ne!(call(5, 2), call(6, 2), "small labels are kept");
    }

    #[test]
    fn decode_inverts_token() {
        let r = syscall(profile::NB_SEND, ObjectKind::Invalid, Error::InvalidCapability as u16, 42);
        assert_eq!(
            decode(token(&r)),
            Some(Decoded::Labelled { send: true, target: 2, result: ResultClass::InvalidCapability, bucket: 42 })
        );
        let r = syscall(profile::YIELD, ObjectKind::None, 0, 0);
        assert_eq!(decode(token(&r)), Some(Decoded::Plain { what: 6, group: 0, result: ResultClass::Ok }));
        let r = syscall(200, ObjectKind::Reply, Error::Denied as u16, 0);
        assert_eq!(decode(token(&r)), Some(Decoded::Plain { what: 9, group: 3, result: ResultClass::Denied }));
        assert_eq!(decode(token(&fault(fault::VM_FAULT, 8))), Some(Decoded::Fault(FaultClass::PageFaultNull)));
        assert_eq!(
            decode(token(&fault(fault::VM_FAULT, 0xffff_8000_0000_0000))),
            Some(Decoded::Fault(FaultClass::PageFaultKernel))
        );
        assert_eq!(decode(token(&fault(fault::DENIED, 0))), Some(Decoded::Fault(FaultClass::Denied)));
    }

    #[test]
    fn phase_markers_are_recognised_and_nothing_else_is() {
        let m = syscall(profile::CALL, ObjectKind::Invalid, Error::InvalidCapability as u16, PHASE_BENIGN);
        assert_eq!(phase_marker(&m), Some(Phase::Benign));
        let m = syscall(profile::CALL, ObjectKind::Invalid, Error::InvalidCapability as u16, PHASE_HOSTILE);
        assert_eq!(phase_marker(&m), Some(Phase::Hostile));
        // The same label on a real capability is a program's own message, not a marker.
        assert_eq!(phase_marker(&syscall(profile::CALL, ObjectKind::Endpoint, 0, PHASE_BENIGN)), None);
        assert_eq!(phase_marker(&syscall(profile::CALL, ObjectKind::Invalid, 2, PHASE_HOSTILE + 1)), None);
        let mut f = fault(fault::VM_FAULT, PHASE_BENIGN << 12);
        f.object = ObjectKind::Invalid;
        assert_eq!(phase_marker(&f), None, "a fault is never a marker");
    }
}
