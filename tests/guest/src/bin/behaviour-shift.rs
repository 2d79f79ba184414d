//! Guest test agent for Studio's watch (`studio-server/src/watch.rs`): a steady loop of the same
//! few syscalls — a Yield, and a one-way send on an empty slot with one of four labels — long
//! enough to be its whole warm-up and more, then, if its name ends in `-shift`, a burst of
//! sends with labels it never used (a probe of methods), then the steady loop again. The
//! program `steady` runs the same binary without the burst: Studio's watch must flag the one
//! and never the other.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::start;
use ozone_agent_sdk::sys::{self, Msg};
use ozone_agent_sdk::{entry, println};

entry!(run);

/// A slot no program holds anything in (Studio's fixed slots begin at 1).
const EMPTY: u64 = 0;

fn steady(rounds: u64) {
    for n in 0..rounds {
        sys::yield_now();
        let _ = sys::nb_send(EMPTY, Msg::new(n % 4, &[]));
    }
}

fn run() -> u64 {
    let shift = start::name().ends_with("-shift");
    // Printed first, so that the shaper learns the console call in the warm-up it gives every
    // agent (64 syscalls) and allows the later lines.
    println!("steady loop");
    steady(3000);
    if shift {
        println!("probing");
        for n in 0..200 {
            let _ = sys::nb_send(EMPTY, Msg::new(1000 + n * 7, &[]));
        }
    }
    steady(1000);
    println!("done");
    0
}
