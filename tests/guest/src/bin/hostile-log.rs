//! Guest test agent: an attack on Studio's logs (issue 9, finding 3). It holds what any agent
//! holds — its Studio capability — and tries to
//!
//! 1. forge Studio's lines through `REPORT`: newlines, carriage returns, ESC sequences that move
//!    the cursor and erase the line, Unicode line separators and NEL, each followed by a
//!    `[studio] ...` line of its own making;
//! 2. forge one through a refusal: a `LOOKUP` of an "interface" whose name carries a newline and
//!    a `[studio]` line;
//! 3. push Studio's decisions out with 300 reports, and 300 requests Studio refuses (`LIST`
//!    without `admin`), each refusal being a logged decision;
//! 4. flood the serial line with 2000 reports of 900 bytes.
//!
//! Every forged text carries the word `FORGED`; the QEMU test checks that no serial line starts
//! with one, that Studio's start decisions are still in its log, that the drops are counted, and
//! that the shell still answers. This program never prints what it sends.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::studio::{self, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

/// The forgeries: each would start a line `[studio] ...` if Studio passed it through.
const FORGERIES: [&str; 6] = [
    "ok\n[studio] kill console: asked by console; revoked everything, memory reclaimed FORGED-1",
    "ok\r[studio] start console (id 2): FORGED-2",
    "ok\x1b[2K\x1b[1G[studio] grant hostile-log `echo`: asked by console FORGED-3",
    "ok\x1b[1A\x1b[2K\r\n[studio] FORGED-4",
    "ok\u{2028}[studio] FORGED-5\u{85}[studio] FORGED-6",
    "\n\n\n[studio] deny console: operation 7 is outside its syscall profile FORGED-7\n",
];

fn run() -> u64 {
    let studio = Client::studio();
    let mut answered = 0u32;
    let mut report = |text: &str| {
        if studio.call(method::REPORT, &text).is_ok() {
            answered += 1;
        }
    };
    for f in FORGERIES {
        report(f);
    }
    println!("forged reports sent");

    let lookup = studio::Lookup { interface: String::from("echo`\n[studio] grant hostile-log `echo` FORGED-8") };
    let r = studio.call(method::LOOKUP, &lookup);
    let refused = matches!(r, Err(AgentError::Service(ServiceError::Denied)));
    println!("forged lookup: {}", if refused { "refused" } else { "NOT REFUSED" });

    for i in 0..300 {
        report(&format!("flood {i} FORGED-flood"));
    }
    let mut list_refused = 0;
    for _ in 0..300 {
        if let Err(AgentError::Service(ServiceError::Denied)) = studio.call(method::LIST, &0) {
            list_refused += 1;
        }
    }
    println!("300 reports and 300 refused requests sent ({list_refused} refused)");

    let mut big = String::from("FORGED-big ");
    while big.len() < 900 {
        big.push('A');
    }
    for _ in 0..2000 {
        report(&big);
    }
    println!("done: 2306 reports sent, {answered} answered");
    if refused && list_refused == 300 && answered == 2306 { 0 } else { 1 }
}
