//! `sc-console` (benign): a console writer — log lines of drawn lengths and levels, in short
//! runs with pauses between them, staying under the console's per-program rate limit.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;

use ozone_agent_sdk::scenario::Phase;
use ozone_agent_sdk::{entry, info, log, warn};
use ozone_scenarios::{begin, pause};

entry!(run);

const WORDS: [&str; 12] =
    ["status", "ok", "queue", "depth", "latency", "tick", "sample", "value", "window", "flush", "cache", "hit"];

fn run() -> u64 {
    let mut sc = begin(Phase::Benign);
    pause(sc.millis(1, 20));
    let runs = sc.steps(5, 15);
    let mut lines = 0u64;
    for r in 0..runs {
        for _ in 0..sc.rng.range(1, 12) {
            let mut line = String::new();
            for _ in 0..sc.rng.range(1, 24) {
                line.push_str(sc.rng.pick(&WORDS).copied().unwrap_or("x"));
                line.push(' ');
            }
            let n = sc.rng.range(0, 1 << 20);
            if sc.rng.chance(10) {
                warn!("run {r}: {line}{n}");
            } else {
                info!("run {r}: {line}{n}");
            }
            lines += 1;
        }
        pause(sc.millis(100, 800));
    }
    sc.end(&alloc::format!("{lines} lines in {runs} runs ({} dropped)", log::dropped()))
}
