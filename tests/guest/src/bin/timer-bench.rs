//! Guest benchmark agent, for `cargo xtask bench` (under `-icount`, a TSC tick is one guest
//! instruction): `timer_sleep_wake` is the time from a sleeper's deadline (the TSC value it
//! slept until) to the sleeper running again — the PIT's countdown ending (rounded up to whole
//! PIT counts of 838 ns), the interrupt, the timer server's wake-up, its signal, and the
//! sleeper's return from its wait.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use core::time::Duration;

use ozone_agent_sdk::timer::{self, Deadline};
use ozone_agent_sdk::{entry, println};

entry!(run);

const SAMPLES: usize = 21;

fn run() -> u64 {
    // The first sleep looks the timer up and asks its rate: not measured.
    if let Err(e) = timer::sleep(Duration::from_micros(100)) {
        println!("FAIL: {e}");
        return 1;
    }
    let mut samples = [0u64; SAMPLES];
    for (i, s) in samples.iter_mut().enumerate() {
        // Deadlines at different phases of the PIT's counts.
        let Ok(deadline) = Deadline::after_ticks(200_000 + i as u64 * 7_919) else { return 1 };
        if let Err(e) = timer::sleep_until(deadline) {
            println!("FAIL: {e}");
            return 1;
        }
        *s = timer::now() - deadline.ticks();
    }
    samples.sort_unstable();
    let p90 = samples[(SAMPLES * 9).div_ceil(10) - 1];
    println!("bench: name=timer_sleep_wake median={} p90={p90} samples={SAMPLES}", samples[SAMPLES / 2]);
    0
}
