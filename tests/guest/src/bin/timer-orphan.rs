//! Guest test agent: a sleeper whose timer server is killed while it sleeps (the QEMU test
//! `timer_sleep`). Studio wakes the clients of a stopped timer server, and the SDK's sleep arms
//! its timer again at a wake-up before the deadline: the sleep ends with the server's absence
//! (`NotRunning`), not after a wait for ever.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use core::time::Duration;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::{AgentError, entry, println, timer};

entry!(run);

fn run() -> u64 {
    // Warm-up: the operations the long sleep uses.
    if let Err(e) = timer::sleep(Duration::from_millis(1)) {
        println!("FAIL: a short sleep: {e}");
        return 1;
    }
    println!("sleeping for 60 s");
    match timer::sleep(Duration::from_secs(60)) {
        Err(AgentError::Service(ServiceError::NotRunning)) => {
            println!("the timer server stopped: the sleep ended with `server not running`");
            0
        }
        other => {
            println!("FAIL: the sleep ended with {other:?}");
            1
        }
    }
}
