//! Guest test agent: a hostile program. Every attempt must be contained (refused with an error,
//! or, for the last one, ending this program alone) and reported, while every other program keeps
//! working:
//!
//! 1. random capability pointers with random invocations;
//! 2. calling a server it was not granted (`echo`, not in its `uses`), Studio's administration
//!    (it has no `admin` privilege), and a slot never granted;
//! 3. more memory than its quota;
//! 4. malformed messages (random labels, lengths and words) to every system server: Studio, the
//!    console, secure memory and the shaper (its `uses`) — then a proper request to each, which
//!    must still be answered;
//! 5. a write to unmapped memory: a page fault, which Studio reports, answers by revoking
//!    everything the program had and reclaiming its memory.
//!
//! The capabilities it names are typed handles (`caps`), the unknown slot of 2. included: it claims
//! an endpoint there, as an attacker would. Only 1. speaks the raw ABI (`kernel::invoke`), on
//! purpose: random labels on random slots are no object's methods.
//!
//! (Spinning forever is `spinner`'s job.) Progress is printed as `[hostile] ...` lines; the QEMU
//! test checks them and the Studio decisions they cause.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::string::String;

use ozone_abi::MessageInfo;
use ozone_agent_sdk::caps::{self, Endpoint};
use ozone_agent_sdk::kernel::{self as k, ipc_buffer};
use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::protocol::{LABEL_BASE, Permutation, ServiceError, console, secmem, shaper};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::sys::Msg;
use ozone_agent_sdk::{AgentError, entry, heap, println};
use ozone_guest_tests::Rng;

entry!(run);

fn run() -> u64 {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut failures = 0;
    let mut check = |what: &str, ok: bool| {
        println!("{what}: {}", if ok { "contained" } else { "NOT CONTAINED" });
        if !ok {
            failures += 1;
        }
    };

    // 1. Random capability pointers (not slot 1, Studio, whose EXIT method would end this program:
    //    tested on purpose below).
    let mut refused = 0;
    const PROBES: u32 = 2000;
    for _ in 0..PROBES {
        let cptr = match rng.next() % 3 {
            0 => rng.next(),
            1 => rng.next() % 256,
            _ => 2 + rng.next() % 13,
        };
        // What Studio gave it on purpose: Studio, its console log capability, its own
        // notification (an invocation of which is a signal to itself).
        let own = caps::notification().map_or(u64::MAX, |n| n.slot());
        if cptr == caps::studio().slot() || cptr == caps::log().slot() || cptr == own {
            refused += 1;
            continue;
        }
        let label = rng.next() % 128;
        let args = [rng.next(), rng.next(), rng.next(), rng.next()];
        if k::invoke(cptr, label, &args, &[]).is_err() {
            refused += 1;
        }
    }
    println!("{PROBES} random capability pointers: {refused} refused");
    check("random capability pointers", refused == PROBES);

    // 2. Servers it was not granted.
    let echo = Client::lookup("echo");
    check("lookup of an interface not granted", matches!(echo, Err(AgentError::Service(ServiceError::Denied))));
    let kill: Result<(), AgentError> = Client::studio().call(method::KILL, &String::from("console"));
    check("studio administration without the privilege", kill == Err(AgentError::Service(ServiceError::Denied)));
    let r = Endpoint::from_slot(200).call(Msg::new(LABEL_BASE, &[1, 2, 3]));
    check("call through a slot never granted", r.is_err());

    // 3. More memory than the quota.
    let r = heap::grow(1 << 20);
    check("memory beyond the quota", matches!(r, Err(AgentError::Service(_))));

    // 4. Malformed messages to every server it can reach.
    let studio = caps::studio();
    let mut targets = alloc::vec![(studio, String::from("studio"))];
    for name in ["console", "secmem", "shaper"] {
        match caps::lookup(name) {
            Ok(ep) => targets.push((ep, String::from(name))),
            Err(e) => println!("cannot reach {name}: {e}"),
        }
    }
    let studio_exit =
        Permutation::new(ozone_agent_sdk::start::protocol_key(), "studio").label(method::EXIT.id()).unwrap_or(0);
    let mut answered = 0u32;
    let mut sent = 0u32;
    for (ep, name) in &targets {
        for _ in 0..200 {
            let m = rng.next() % 64;
            let label =
                Permutation::new(ozone_agent_sdk::start::protocol_key(), name).label(m).unwrap_or(LABEL_BASE + m);
            if *ep == studio && label == studio_exit {
                continue;
            }
            let len = rng.next() % 121;
            let buf = ipc_buffer();
            for w in buf.msg.iter_mut().take(len as usize).skip(4) {
                *w = rng.next();
            }
            let mrs = [rng.next(), rng.next(), rng.next(), rng.next()];
            let msg = Msg { info: MessageInfo::new(label, 0, 0, len), mrs };
            sent += 1;
            if ep.call(msg).is_ok() {
                answered += 1;
            }
        }
    }
    println!("{sent} malformed messages to {} servers: {answered} answered", targets.len());
    // Every server still answers a proper request.
    let studio_ok = Client::studio().call(method::MY_MEMORY, &()).is_ok();
    check("studio still serves", studio_ok);
    // A server serves if it answers, even with a refusal: by now the shaper may enforce this
    // agent's method profiles, learned from its random labels, and deny a method it never used.
    fn answers<T>(r: Result<T, AgentError>) -> bool {
        matches!(r, Ok(_) | Err(AgentError::Service(_)))
    }
    for (ep, name) in targets.iter().skip(1) {
        let c = ep.client(name);
        let ok = match name.as_str() {
            "console" => {
                let w = console::Write { bytes: b"the console still serves\n".to_vec() };
                answers(c.call(console::method::WRITE, &w))
            }
            "secmem" => answers(c.call(secmem::method::USAGE, &())),
            "shaper" => answers(c.call(shaper::method::STATUS, &())),
            _ => true,
        };
        check(&alloc::format!("{name} still serves"), ok);
    }

    println!("{} attempts not contained", failures);
    // 5. A page fault: the end of this program.
    println!("writing to unmapped memory");
    // SAFETY: not safe at all, on purpose: nothing is mapped at 0x10, so this faults and Studio
    // stops the program.
    unsafe { core::ptr::write_volatile(0x10 as *mut u64, 0xbad) };
    println!("FAIL: the write did not fault");
    1
}
