//! Guest benchmark agent (admin privilege), for `cargo xtask bench`: `agent_spawn` is the time
//! Studio takes to start an agent — from this program's `START spinner` request to Studio's
//! answer, which comes once the spinner's CSpace, address space, image, stack, heap and thread
//! are made and its thread is resumed (under `-icount`: guest instructions). Each start is
//! followed by a kill (not timed).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::protocol::studio::method;
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{entry, println};

entry!(run);

const SAMPLES: usize = 21;

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn run() -> u64 {
    let studio = Client::studio();
    let victim = String::from("spinner");
    let mut samples = [0u64; SAMPLES];
    for s in samples.iter_mut() {
        let t0 = rdtsc();
        let started: Result<u64, _> = studio.call(method::START, &victim);
        *s = rdtsc() - t0;
        let killed: Result<(), _> = studio.call(method::KILL, &victim);
        if let Err(e) = started.map(|_| ()).and(killed) {
            println!("FAIL: {e}");
            return 1;
        }
    }
    samples.sort_unstable();
    let p90 = samples[(SAMPLES * 9).div_ceil(10) - 1];
    println!("bench: name=agent_spawn median={} p90={p90} samples={SAMPLES}", samples[SAMPLES / 2]);
    0
}
