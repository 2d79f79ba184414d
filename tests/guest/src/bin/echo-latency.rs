//! Guest benchmark agent, for `cargo xtask bench`'s `echo_latency_under_load` (under `-icount`, a
//! TSC tick is one guest instruction): an interactive client's latency while CPU-bound agents of
//! its priority run. Each of 40 samples sleeps until a deadline 2 ms ahead, then calls the echo server
//! once; the sample is the time from the deadline to the echo's answer: the timer's wake-up,
//! the wait for the CPU (behind a spinner's timeslice, unless Studio lowered the spinners'
//! priority: `[system] adapt`), and one round trip to `echo`. It first waits 600 ms, long enough
//! for Studio to have classified the spinners (`studio-server/src/perf.rs`).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use core::time::Duration;

use ozone_agent_sdk::protocol::echo::{self, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::timer::{self, Deadline};
use ozone_agent_sdk::{entry, println};

entry!(run);

const SAMPLES: usize = 40;

fn run() -> u64 {
    let echo = match Client::lookup(echo::INTERFACE) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL: {e}");
            return 1;
        }
    };
    if let Err(e) = timer::sleep(Duration::from_millis(600)) {
        println!("FAIL: {e}");
        return 1;
    }
    let mut samples = [0u64; SAMPLES];
    for (i, s) in samples.iter_mut().enumerate() {
        let Ok(deadline) = Deadline::after(Duration::from_millis(2)) else { return 1 };
        if let Err(e) = timer::sleep_until(deadline) {
            println!("FAIL: {e}");
            return 1;
        }
        match echo.call(method::ECHO, &(i as u64)) {
            Ok(n) if n == i as u64 => {}
            other => {
                println!("FAIL: echo answered {other:?}");
                return 1;
            }
        }
        *s = timer::now() - deadline.ticks();
    }
    samples.sort_unstable();
    let at = |pct: usize| samples[(SAMPLES * pct).div_ceil(100) - 1];
    println!("bench: name=echo_latency_under_load median={} p90={} samples={SAMPLES} p99={}", at(50), at(90), at(99));
    0
}
