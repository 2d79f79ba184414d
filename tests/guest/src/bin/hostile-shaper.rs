//! Guest test agent: a hostile client of the syscall shaper. With no `admin` privilege it tries
//! to switch an enforced victim (`shaper-victim`) back to learning, to end another agent's
//! (`spinner-low`'s) warm-up window early, to read other programs' profiles (the victim's, a
//! server's, one that does not exist) and to change its own. Studio's rule refuses each (and logs
//! it); the shaper answers `Denied` before looking at the program named. Reading its own profile
//! is allowed. It tries the keeper's methods too (reading every agent's profile, restoring a
//! profile that allows the victim everything): refused, they need `keeper`. Then it asks Studio itself for what the shaper gets: a program's kernel profile
//! (`PROFILE_OF`), narrowing and re-arming one (`SET_PROFILE`, `ARM_PROFILE`) and a thread
//! capability by the number `TCB_OF` once had (25): refused (`Denied`, logged with the rule), and
//! the old number is no method at all.
//!
//! Every line starts with `[hostile-shaper]`; it ends with `[hostile-shaper] N attempts not
//! contained` and `[hostile-shaper] done`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::Method;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::shaper::{self, Kept, Profile, method};
use ozone_agent_sdk::protocol::studio;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

/// Say whether attempt `what` was refused (`Denied`); 1 if it was not.
fn refused(what: &str, r: Result<(), AgentError>) -> u32 {
    let contained = matches!(r, Err(AgentError::Service(ServiceError::Denied)));
    println!("{what}: {}", if contained { String::from("contained") } else { alloc::format!("NOT CONTAINED ({r:?})") });
    u32::from(!contained)
}

fn run() -> u64 {
    let Ok(shaper) = Client::lookup(shaper::INTERFACE) else {
        println!("FAIL: cannot look up the shaper");
        return 1;
    };
    let mut failures = 0u32;
    let attempts: [(&str, Method<String, Profile>, &str); 7] = [
        ("relearn the enforced victim", method::LEARN, "shaper-victim"),
        ("enforce another agent early", method::ENFORCE, "spinner-low"),
        ("read the victim's profile", method::PROFILE, "shaper-victim"),
        ("read a server's profile", method::PROFILE, "console"),
        ("probe for a program that does not exist", method::PROFILE, "no-such-program"),
        ("relearn its own profile", method::LEARN, "hostile-shaper"),
        ("enforce its own profile", method::ENFORCE, "hostile-shaper"),
    ];
    for (what, m, target) in attempts {
        failures += refused(what, shaper.call(m, &String::from(target)).map(|_| ()));
    }
    // Keeping profiles across boots is the journal's: reading every agent's, and handing the
    // victim an earlier boot's profile that allows everything (first, while this agent still
    // warms up, so that it is Studio's rule that refuses, not this agent's own method profile).
    let widen = Kept {
        agent: String::from("shaper-victim"),
        kernel: u64::MAX,
        methods: alloc::vec![(String::from("shaper"), Some(u64::MAX)), (String::from("echo"), Some(u64::MAX))],
    };
    let keeps = [
        ("read every agent's profile", shaper.call(method::SAVED, &0u32).map(|_| ())),
        ("restore a wide profile for the victim", shaper.call(method::RESTORE, &widen).map(|_| ())),
    ];
    for (what, r) in keeps {
        failures += refused(what, r);
    }
    // Its own profile it may read.
    match shaper.call(method::PROFILE, &String::from("hostile-shaper")) {
        Ok(p) if p.agent == "hostile-shaper" => println!("its own profile: {}", p.mode),
        other => {
            println!("FAIL: reading its own profile answered {other:?}");
            failures += 1;
        }
    }
    // What the shaper's privilege gets from Studio, asked directly: every id a small system has.
    let studio = Client::studio();
    let tcb_of: Method<u64, (u64, String, bool)> = Method::new(25);
    let mut refused = [0u32; 4];
    for id in 1..=8u64 {
        let rs = [
            studio.call(studio::method::PROFILE_OF, &id).map(|_| ()),
            studio.call(studio::method::SET_PROFILE, &studio::SetProfile { id, run: 1, allowed: 0 }),
            studio.call(studio::method::ARM_PROFILE, &studio::ArmProfile { id, run: 1, allowed: 0, learn: 1 }),
            studio.call(tcb_of, &id).map(|_| ()),
        ];
        for (n, r) in rs.into_iter().enumerate() {
            let want = if n == 3 { ServiceError::UnknownMethod } else { ServiceError::Denied };
            if matches!(r, Err(AgentError::Service(e)) if e == want) {
                refused[n] += 1;
            } else {
                println!("NOT CONTAINED: Studio method {n} for program {id} answered {r:?}");
            }
        }
    }
    let names = ["read a kernel profile", "set a kernel profile", "arm a kernel profile", "get a thread capability"];
    for (what, n) in names.iter().zip(refused) {
        println!("{what} through Studio: {}", if n == 8 { "contained" } else { "NOT CONTAINED" });
        failures += u32::from(n != 8);
    }
    println!("{failures} attempts not contained");
    println!("done");
    u64::from(failures != 0)
}
