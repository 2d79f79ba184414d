//! Guest test agent for Studio's watch (`studio-server/src/watch.rs`): a steady loop of the same
//! few syscalls — a Yield, and a one-way send on an empty slot with one of four labels — long
//! enough to be its whole warm-up and more, then, if its name ends in `-shift`, a burst of
//! sends with labels it never used (a probe of methods), then the steady loop again. The
//! program `steady` runs the same binary without the burst: Studio's watch must flag the one
//! and never the other. In its burst the `-shift` one also calls the echo server with labels
//! that name no method: echo (with the `clients` privilege) tells Studio of each refusal, which
//! Studio logs once and counts among its events (`REFUSED`).
//!
//! It sleeps on the timer after every [`BATCH`] syscalls, longer than Studio's tick, so that its
//! ring (256 records) never fills between two of Studio's reads: the watch sees every event, and
//! the test does not depend on which of them a full ring would have dropped.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use core::time::Duration;

use ozone_agent_sdk::caps::Endpoint;
use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println, rpc, start, timer};

entry!(run);

/// A slot no program holds anything in (Studio's fixed slots begin at 1).
const EMPTY: u64 = 0;

/// Syscalls between two sleeps: fewer than a ring holds.
const BATCH: u64 = 100;

/// A sleep longer than Studio's tick (5 ms).
const PAUSE: Duration = Duration::from_millis(12);

fn pause() {
    if let Err(e) = timer::sleep(PAUSE) {
        println!("cannot sleep: {e:?}");
    }
}

fn steady(rounds: u64) {
    for n in 0..rounds {
        sys::yield_now();
        let _ = sys::nb_send(EMPTY, Msg::new(n % 4, &[]));
        if n % (BATCH / 2) == BATCH / 2 - 1 {
            pause();
        }
    }
}

fn run() -> u64 {
    let shift = start::name().ends_with("-shift");
    // First, so that the shaper learns the console's call and the timer's in the warm-up it
    // gives every agent (64 syscalls) and allows them later.
    println!("steady loop");
    pause();
    steady(1500);
    if shift {
        println!("probing");
        for n in 0..BATCH {
            let _ = sys::nb_send(EMPTY, Msg::new(1000 + n * 7, &[]));
        }
        match rpc::Client::lookup("echo") {
            Ok(echo) => {
                let ep = Endpoint::from_slot(echo.slot());
                // Labels below the protocols' (0x100): no method of any interface.
                let refused = (1..4)
                    .filter(|&label| ep.call(Msg::new(label, &[])).is_ok_and(|r| r.msg.info.label() != 0))
                    .count();
                println!("echo refused {refused} of 3 requests");
            }
            Err(e) => println!("cannot look up echo: {e:?}"),
        }
        pause();
    }
    steady(500);
    println!("done");
    0
}
