//! An attacker's review of method events (`watch.rs`: `Watch::method_event`, `method_after`,
//! `Studio::drain`; `service.rs`: `Studio::incoming`, `Studio::request`).
//!
//! The attacker is an agent Studio started (holding its own `studio` capability, badged with its
//! id, and whatever its description allows) that can make any Call or Send with any label and
//! payload, at any rate, and fill its own ring. The first four tests are the holes the review
//! found (each failed before its fix; the comment says what was wrong and what mended it); the
//! others are attacks that were defended from the start.
//!
//! Unlike the first tests of method events (tests.rs), these build requests as a client does
//! (`Client::call`): the wire label carries the payload's padding above `PAD_SHIFT`, and the
//! kernel's Call record holds that whole message info word.

use alloc::string::String;
use alloc::vec::Vec;

use ozone_abi::MessageInfo;
use ozone_abi::trace::{NOT_A_METHOD, ObjectKind};
use ozone_agent_sdk::protocol::studio::{self as proto, method};
use ozone_agent_sdk::protocol::{self, Permutation, ServiceError};
use ozone_agent_sdk::rpc::{Incoming, Request};
use ozone_agent_sdk::sys::{Msg, Received};
use ozone_cognition::token::Token;
use serde::Serialize;

use crate::lifecycle::FAULT_BIT;
use crate::state::Studio;
use crate::tests::{
    ask, boot, boot_desc, boot_with_model, call_record, description, id, method_token, model_of_token, studio_label,
    taken, token_of, trace_of,
};
use crate::watch::PENDING_METHODS;

// ---- helpers (the rest are tests.rs's) ----

/// The message a client sends for method `m` with `value` (as `rpc::encoded` builds it: the
/// label carries the padding of the payload's last word).
fn wire<T: Serialize + ?Sized>(s: &Studio, m: u64, value: &T) -> Msg {
    let (mrs, len) = protocol::encode_small(value).expect("fits in registers");
    let label = protocol::label_with_len(studio_label(s, m), len);
    Msg { info: MessageInfo::new(label, 0, 0, len.div_ceil(8) as u64), mrs }
}

/// The kernel's record of syscall `what` (a `profile` bit) on an endpoint with message `msg`.
fn record_of(what: u32, msg: &Msg, tick: u32) -> [u64; 2] {
    let w0 = ozone_abi::trace::syscall_word(what, ObjectKind::Endpoint);
    [w0 | (u64::from(tick) << 32), msg.info.0]
}

/// The kernel's record of a Call with message `msg` (what the fastpath and the slow path write).
fn kernel_call(msg: &Msg, tick: u32) -> [u64; 2] {
    record_of(ozone_abi::profile::CALL, msg, tick)
}

/// Studio's server loop handing it program `badge`'s message `msg` for method `m`.
fn deliver(s: &mut Studio, badge: u64, m: u64, msg: Msg) -> Option<ozone_agent_sdk::rpc::Response> {
    let r = Request::new(badge, m, Received { badge, msg });
    s.incoming(Incoming::Request(&r))
}

fn is_method(t: Token) -> bool {
    matches!(ozone_cognition::token::decode(t), Some(ozone_cognition::token::Decoded::Method { .. }))
}

// ---- found by the review, mended (each failed before its fix) ----

/// Found (high: the feature's order guarantee fails for ordinary traffic, and the attacker picks
/// where its events land). `Studio::request` files the event under the *bare* wire label
/// (`Permutation::label`), but a client's Call carries `label_with_len(label, len)`: the payload's
/// padding in bits 16..19 of the label, which the kernel records (the record's `info` is the whole
/// message info word). Every request whose payload is not a multiple of 8 bytes (`LIST` with a
/// `u32`, `LOOKUP`, `REPORT`, `GROW_HEAP`, ...) never matches its Call; and as `method_after`
/// looks only at the front of the queue, every later event of that tick is pushed to the end of
/// the batch too. (The first tests build Call records with bare labels, so they do not see it;
/// `Incoming::Refused`/`Other` use the raw label and do match.)
///
/// Mended: `method_after` compares the record's label without its padding (`LABEL_MASK`), and
/// every queued label is kept the same way.
#[test]
fn a_request_with_a_padded_payload_is_placed_after_its_call() {
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    let list = wire(&s, proto::id::LIST, &0u32); // 1 byte of payload: padding 7
    let memory = wire(&s, proto::id::MY_MEMORY, &()); // no payload: no padding
    assert_ne!(list.info.label(), studio_label(&s, proto::id::LIST), "the wire label carries the padding");
    {
        let mut t = trace_of(fake, &s, "client");
        t.push(kernel_call(&list, 1));
        t.push(call_record(3, 1)); // a Call to another server
        t.push(kernel_call(&memory, 1));
    }
    assert_eq!(deliver(&mut s, client, proto::id::LIST, list), Some(Err(ServiceError::Denied)));
    assert!(matches!(deliver(&mut s, client, proto::id::MY_MEMORY, memory), Some(Ok(_))));
    s.watch_tick();
    assert_eq!(
        taken(&s, "client"),
        [
            token_of(kernel_call(&list, 1)),
            method_token(proto::id::LIST, ServiceError::Denied as u16),
            token_of(call_record(3, 1)),
            token_of(kernel_call(&memory, 1)),
            method_token(proto::id::MY_MEMORY, 0),
        ],
        "each event right after its Call (docs/studio.md, \"Method events\")"
    );
}

/// Found (medium: head-of-line blocking; happens without an attacker whenever Studio's tick comes
/// between a Call's record and Studio's answer, and at will with a Send). `method_after` matches
/// only the *front* of the queue: one event whose Call is not in this batch (its Call was read at
/// the last tick, or it came by Send, which the kernel records as a Send) keeps every later
/// event of the tick from its Call, all of them going to the end of the batch. The docs promise
/// that only the event whose Call was not read goes after the batch.
///
/// Mended: match the first waiting event *with that label* (search the queue, not its front);
/// events left over go after the batch as now. (Or drain, at the start of each batch, the events
/// queued before the previous read: their Calls were read already.)
#[test]
fn one_unmatched_event_does_not_push_the_later_ones_out_of_place() {
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    // MEMORY (admin only: refused) and MY_MEMORY carry no payload: no padding, the labels match.
    let (refused_msg, mine_msg) = (wire(&s, proto::id::MEMORY, &()), wire(&s, proto::id::MY_MEMORY, &()));
    // 1. The Call is read at a tick, Studio answers it after (its tick came first).
    trace_of(fake, &s, "client").push(kernel_call(&refused_msg, 1));
    s.watch_tick();
    assert_eq!(deliver(&mut s, client, proto::id::MEMORY, refused_msg), Some(Err(ServiceError::Denied)));
    // The next tick: an ordinary request, answered, whose Call is in this batch.
    trace_of(fake, &s, "client").push(kernel_call(&mine_msg, 2));
    trace_of(fake, &s, "client").push(call_record(9, 2));
    assert!(matches!(deliver(&mut s, client, proto::id::MY_MEMORY, mine_msg), Some(Ok(_))));
    s.watch_tick();
    let denied = method_token(proto::id::MEMORY, ServiceError::Denied as u16);
    assert_eq!(
        taken(&s, "client")[1..],
        [
            token_of(kernel_call(&mine_msg, 2)),
            method_token(proto::id::MY_MEMORY, 0),
            token_of(call_record(9, 2)),
            denied
        ],
        "MY_MEMORY's event right after its Call; the late one after the batch"
    );
    // 2. The same at will: a request sent with Send (Studio serves it; the kernel records a Send).
    let send = record_of(ozone_abi::profile::SEND, &refused_msg, 3);
    trace_of(fake, &s, "client").push(send);
    trace_of(fake, &s, "client").push(kernel_call(&mine_msg, 3));
    trace_of(fake, &s, "client").push(call_record(9, 3));
    assert_eq!(deliver(&mut s, client, proto::id::MEMORY, refused_msg), Some(Err(ServiceError::Denied)));
    assert!(matches!(deliver(&mut s, client, proto::id::MY_MEMORY, mine_msg), Some(Ok(_))));
    s.watch_tick();
    // (A Send on an endpoint is a place for an event too now, as a Call is: the refusal goes
    // right after it.)
    assert_eq!(
        taken(&s, "client")[5..],
        [
            token_of(send),
            denied,
            token_of(kernel_call(&mine_msg, 3)),
            method_token(proto::id::MY_MEMORY, 0),
            token_of(call_record(9, 3)),
        ],
    );
}

/// Found (low: a refusal hidden; the Call record stays). A Call to Studio with label 0 names no
/// method and is answered `UnknownMethod`, but `incoming` takes "label 0" for "a signal" and
/// makes no event of it, against the docs ("messages whose label names no method are events
/// too"). The badge already tells a signal from a program's message: a signal's badge is the
/// notification's word (`STUDIO_TICK`, high bits), which names no program.
///
/// Mended: decide by the badge, not the label (any message whose badge names a program and that is
/// not Studio's tick is the program's: `method_event` already ignores badges naming none).
#[test]
fn a_call_with_label_zero_does_not_hide_its_refusal() {
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    let zero = Msg::new(0, &[0x41]);
    trace_of(fake, &s, "client").push(kernel_call(&zero, 1));
    assert_eq!(
        s.incoming(Incoming::Other(&Received { badge: client, msg: zero })),
        Some(Err(ServiceError::UnknownMethod))
    );
    s.watch_tick();
    assert_eq!(
        taken(&s, "client"),
        [token_of(kernel_call(&zero, 1)), method_token(NOT_A_METHOD, ServiceError::UnknownMethod as u16)]
    );
}

/// Found (medium-low: hides a privilege probe from the model entirely, since the Calls' wire labels
/// are renumbered each boot). "Refusals kept first" treats every non-zero answer alike: an agent
/// that first makes 64 requests that merely *fail* (GROW_HEAP far past its quota:
/// `InvalidArgument`, an "other error"; a LOOKUP of a stopped server, `NotRunning`, would do)
/// fills the queue with events that are not answered ones, so none can be evicted, and every
/// `Denied` after them in the tick is dropped (counted in `methods_dropped`, not judged).
///
/// Mended: rank the answers (denied > unknown method / bad request > other error > ok) and evict the
/// oldest of the lowest rank present below the new one; or keep per-class counts of what was
/// dropped and hand them to the model as one summary event per class.
#[test]
fn failing_requests_cannot_hide_the_denials_behind_them() {
    let (mut s, _fake, _) = boot();
    for _ in 0..PENDING_METHODS {
        assert_eq!(ask(&mut s, "client", method::GROW_HEAP, &(1u64 << 40)), Err(ServiceError::InvalidArgument));
    }
    for _ in 0..10 {
        assert_eq!(ask(&mut s, "client", method::LIST, &0u32), Err(ServiceError::Denied));
    }
    s.watch_tick();
    let denied = method_token(proto::id::LIST, ServiceError::Denied as u16);
    let t = taken(&s, "client");
    assert_eq!(t.len(), PENDING_METHODS);
    assert_eq!(t.iter().filter(|&&x| x == denied).count(), 10, "the denials judged, not the failures");
}

// The forged dump line (a program's REPORT echoed with `[studio] trace OTHER ...` in its text)
// is the recorder's to refuse: `xtask/src/studio.rs`, test
// `dump_lines_inside_other_lines_are_not_read` (the marker counts only after the shell's prompt
// and terminal escapes).

/// Framing: nothing another program, a stranger, a fault endpoint or an unwatched program sends
/// becomes an event of a watched agent's, and an unwatched program (a server; everything with
/// `trace = false`) never gets events.
#[test]
fn no_one_else_s_requests_land_in_a_watched_agents_stream() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    let (client, hostile) = (id(&s, "client"), id(&s, "hostile"));
    let list = wire(&s, proto::id::LIST, &0u32);
    // `client` makes one Call to another server; everything else below is someone else's.
    trace_of(fake, &s, "client").push(call_record(7, 1));
    // The hostile agent probes, with every label client's stream would hold (and label 7).
    for m in [proto::id::LIST, proto::id::MEMORY, proto::id::MY_MEMORY] {
        let msg = wire(&s, m, &());
        trace_of(fake, &s, "hostile").push(kernel_call(&msg, 1));
        let _ = deliver(&mut s, hostile, m, msg);
    }
    let _ = s.incoming(Incoming::Other(&Received { badge: hostile, msg: Msg::new(7, &[]) }));
    // Strangers and the kernel's fault badge naming client: Request, Refused, Other.
    for badge in [0, 999, u64::MAX, FAULT_BIT | client, FAULT_BIT | hostile] {
        let _ = deliver(&mut s, badge, proto::id::LIST, list);
        let r = Request::new(badge, proto::id::LIST, Received { badge, msg: list });
        let _ = s.incoming(Incoming::Refused(&r, &Err(ServiceError::Denied)));
        if badge & FAULT_BIT == 0 {
            let _ = s.incoming(Incoming::Other(&Received { badge, msg: Msg::new(7, &[]) }));
        }
    }
    // The console (a server: not traced) makes requests, allowed and not.
    ask(&mut s, "console", method::LIST, &0u32).unwrap();
    let _ = ask(&mut s, "console", method::VSPACE_OF, &client);
    s.watch_tick();
    assert_eq!(taken(&s, "client"), [token_of(call_record(7, 1))], "only its own record");
    let h = taken(&s, "hostile");
    assert_eq!(h.iter().filter(|&&t| is_method(t)).count(), 4, "the hostile agent's own four: {h:?}");
    assert!(s.agents[s.index_of("console").unwrap()].watch.is_none());
    // Nothing is traced: requests are no one's events, and nothing breaks.
    let mut desc = description();
    desc.system.trace = false;
    let (mut s, _, _) = boot_desc(desc, None);
    let client = id(&s, "client");
    assert_eq!(ask(&mut s, "client", method::LIST, &0u32), Err(ServiceError::Denied));
    let _ = s.incoming(Incoming::Other(&Received { badge: client, msg: Msg::new(0x9999, &[]) }));
    s.watch_tick();
    assert!(s.agents.iter().all(|a| a.watch.is_none()));
}

/// A restarted program's new run inherits no method event of the last: neither those waiting
/// when it faulted (drained with its last records in `reclaim`) nor those around an EXIT.
#[test]
fn a_restarted_run_starts_without_the_last_runs_method_events() {
    let (mut s, fake, _) = boot();
    ask(&mut s, "console", method::START, &String::from("crasher")).unwrap();
    let crasher = id(&s, "crasher");
    let memory = wire(&s, proto::id::MY_MEMORY, &());
    let c = s.index_of("crasher").unwrap();
    // Requests waiting (their Calls not read), then a fault: restarted.
    for _ in 0..3 {
        assert!(matches!(deliver(&mut s, crasher, proto::id::MY_MEMORY, memory), Some(Ok(_))));
        assert_eq!(ask(&mut s, "crasher", method::LIST, &0u32), Err(ServiceError::Denied));
    }
    let run = s.agents[c].run;
    assert!(s.fault(crasher, 1, [0x1000, 0x10, 6, 0]).is_none());
    assert_eq!(s.agents[c].run, run + 1, "restarted");
    trace_of(fake, &s, "crasher").push(kernel_call(&memory, 5));
    s.watch_tick();
    assert_eq!(taken(&s, "crasher"), [token_of(kernel_call(&memory, 5))], "the new run's own record only");
    // Requests, then EXIT (restart = always): the same.
    for _ in 0..3 {
        assert!(matches!(deliver(&mut s, crasher, proto::id::MY_MEMORY, memory), Some(Ok(_))));
    }
    let exit = wire(&s, proto::id::EXIT, &1u64);
    assert_eq!(deliver(&mut s, crasher, proto::id::EXIT, exit), None);
    assert_eq!(s.agents[c].run, run + 2, "restarted");
    trace_of(fake, &s, "crasher").push(kernel_call(&memory, 6));
    s.watch_tick();
    assert_eq!(taken(&s, "crasher"), [token_of(kernel_call(&memory, 6))]);
    assert_eq!(s.agents[c].watch.as_ref().unwrap().methods_dropped, 0);
}

/// The kernel's `read` counter counts the kernel's records only, through a full ring's drops and
/// any number of method events; a dropped Call's event goes after the batch and is not lost.
#[test]
fn method_events_leave_the_kernels_counters_alone_through_drops() {
    let (mut s, fake, _) = boot();
    let client = id(&s, "client");
    let memory = wire(&s, proto::id::MY_MEMORY, &());
    let t = {
        let p = s.agents[s.index_of("client").unwrap()].proc.unwrap();
        fake.s.borrow().tcb_obj(p.tcb).unwrap()
    };
    // 300 Calls to Studio: the ring keeps 256, drops 44; Studio answers all 300 (keeps 64).
    for n in 0..300u32 {
        fake.s.borrow_mut().emit(t, kernel_call(&memory, n / 100));
        assert!(matches!(deliver(&mut s, client, proto::id::MY_MEMORY, memory), Some(Ok(_))));
    }
    s.watch_tick();
    let w = s.agents[s.index_of("client").unwrap()].watch.as_ref().unwrap();
    assert_eq!((w.read, w.dropped, w.methods_dropped), (256, 44, 300 - PENDING_METHODS as u64));
    assert_eq!(w.taken.len(), 256 + PENDING_METHODS);
    s.watch_tick();
    let w = s.agents[s.index_of("client").unwrap()].watch.as_ref().unwrap();
    assert_eq!((w.read, w.taken.len()), (256, 256 + PENDING_METHODS), "an empty tick takes nothing");
}

/// Any messages at any rate, from any badge, with any label, length and payload, beside any ring
/// records: Studio neither panics nor grows (at most the ring's records and `PENDING_METHODS`
/// events an agent a tick), and its `read` counter is the kernel's. The model runs too.
#[test]
fn odd_messages_at_any_rate_never_panic_and_stay_bounded() {
    let (mut s, fake, _) =
        boot_with_model(Some(model_of_token(method_token(proto::id::LIST, ServiceError::Denied as u16))));
    ask(&mut s, "console", method::START, &String::from("hostile")).unwrap();
    let (client, hostile) = (id(&s, "client"), id(&s, "hostile"));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let labels: Vec<u64> = (0..64).map(|m| studio_label(&s, m)).collect();
    let mut written = [0u64; 2];
    for tick in 0..150u32 {
        let before = [taken(&s, "client").len(), taken(&s, "hostile").len()];
        let mut pushed = [0usize; 2];
        for _ in 0..(next() % 300) {
            let r = next();
            let who = (r % 2) as usize;
            let badge = match (r >> 1) % 8 {
                0 => 0,
                1 => next(),
                2 => FAULT_BIT | client,
                _ => [client, hostile][who],
            };
            let label = match (r >> 4) % 4 {
                0 => labels[(r >> 8) as usize % 64] | ((r >> 16) & 7) << protocol::PAD_SHIFT,
                1 => labels[(r >> 8) as usize % 64],
                2 => 0,
                _ => next() >> 12,
            };
            let msg = Msg {
                info: MessageInfo(MessageInfo::new(label, 0, 0, 0).0 | (next() & 0x1ff)),
                mrs: [next(), next(), next(), next()],
            };
            if (r >> 20) % 3 == 0 && pushed[who] < 256 {
                let name = ["client", "hostile"][who];
                let what = [ozone_abi::profile::CALL, ozone_abi::profile::SEND][(r >> 22) as usize % 2];
                trace_of(fake, &s, name).push(record_of(what, &msg, tick));
                pushed[who] += 1;
            }
            let method_of = protocol::split_label(msg.info.label(), (msg.info.length() as usize).min(4))
                .and_then(|(l, _)| Permutation::new(s.protocol_key, proto::INTERFACE).method(l));
            let received = Received { badge, msg };
            match (method_of, (r >> 24) % 3) {
                // EXIT and SHUTDOWN would end the test's agents (or the machine).
                (Some(m), _) if m == proto::id::EXIT || m == proto::id::SHUTDOWN => {}
                (Some(m), 0) => {
                    let req = Request::new(badge, m, received);
                    let _ = s.incoming(Incoming::Refused(&req, &Err(ServiceError::Denied)));
                }
                (Some(m), _) => {
                    let req = Request::new(badge, m, received);
                    let _ = s.incoming(Incoming::Request(&req));
                }
                // Fault messages (the kernel's badge) and Studio's tick are not a program's.
                (None, _) if badge & (protocol::timer::STUDIO_TICK | FAULT_BIT) == 0 => {
                    let _ = s.incoming(Incoming::Other(&received));
                }
                (None, _) => {}
            }
        }
        s.watch_tick();
        for (n, name) in ["client", "hostile"].into_iter().enumerate() {
            written[n] += pushed[n] as u64;
            let w = s.agents[s.index_of(name).unwrap()].watch.as_ref().expect("still watched");
            assert_eq!(w.read, written[n], "{name}: the kernel's records, counted");
            let grew = w.taken.len() - before[n];
            assert!(grew <= pushed[n] + PENDING_METHODS, "{name} at tick {tick}: {grew} events");
        }
    }
    assert!(s.agents.iter().all(|a| a.state != proto::AgentState::Faulted));
}
