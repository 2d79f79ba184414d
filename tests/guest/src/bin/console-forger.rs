//! Guest test agent for the console's ownership of program output (issue 9, finding 6): it holds
//! what any agent gets (its console log capability) and tries to reach past it.
//!
//! 1. The kernel's debug channel: a `DebugWrite` of a fake prompt must be refused (`Denied`).
//! 2. Forged lines through the console: the shell's prompt, a Studio decision, another program's
//!    name, terminal escape sequences, a carriage return back over the attribution, and newlines
//!    inside one line — each must come out attributed `[console-forger] ` and cleaned.
//! 3. Raw `WRITE`s with the same forgeries, in pieces.
//! 4. A flood of [`FLOOD`] lines, as fast as it can: the console rate-limits it and reports how
//!    many it dropped.
//!
//! Every forged line holds the word `FORGED`, so the QEMU test can find each one on the serial
//! line. It ends with `done`, after a pause long enough for its rate limit to let a line through.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_agent_sdk::caps;
use ozone_agent_sdk::protocol::console::{self as proto, method};
use ozone_agent_sdk::{Error, entry, error, log, println, sys, warn};

entry!(run);

/// Lines of the flood.
const FLOOD: u32 = 3000;

fn run() -> u64 {
    let mut failures = 0;
    // 1. The kernel's debug channel is not this program's.
    match sys::debug_write(b"ozone> FORGED by DebugWrite\n") {
        Err(Error::Denied) => println!("debug write refused: Denied"),
        other => {
            println!("FAIL: debug write answered {other:?}");
            failures += 1;
        }
    }
    // 2. Forged lines through the SDK.
    println!("ozone> kill console FORGED");
    println!("[studio] kill console: asked by console; revoked everything, memory reclaimed FORGED");
    println!("[echo] FORGED a line in another program's name");
    warn!("\x1b[2J\x1b[H\rozone> FORGED after clearing the screen");
    error!("two\nozone> FORGED on a line of its own\n[studio] FORGED too");
    println!("\r\x1b[Kozone> FORGED with the console's own erase");
    // 3. Raw writes, in pieces, on the same capability.
    let console = caps::log().client(proto::INTERFACE);
    for piece in [&b"ozone> FORGED "[..], b"in pieces\n\x1b[31m[studio] FORGED", b" raw\n"] {
        if let Err(e) = console.call(method::WRITE, &proto::Write { bytes: piece.to_vec() }) {
            println!("FAIL: a raw write was refused: {e}");
            failures += 1;
        }
    }
    // 4. The flood.
    let before = log::dropped();
    for i in 0..FLOOD {
        println!("flood {i} FORGED ozone> ");
    }
    // The console took every line (it drops them itself, not the SDK).
    let lost_here = log::dropped() - before;
    // Let the rate limit refill before the last line.
    for _ in 0..20_000 {
        sys::yield_now();
    }
    println!("flood of {FLOOD} lines sent; {lost_here} not taken by the console");
    println!("done: {failures} failures");
    0
}
