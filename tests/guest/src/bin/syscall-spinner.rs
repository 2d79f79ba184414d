//! Guest test agent at the top of the agents' band (119) that never blocks: it makes syscalls
//! (Yield, which returns at once: nothing else of its priority is ready) well past the shaper's
//! warm-up window, without ever giving the shaper's ticker (priority 1) a turn. The kernel must
//! end its window on time all the same: its first operation outside what it learned (NBRecv,
//! never used before) is denied and Studio logs the denial; what it learned (Yield) keeps
//! working. The servers' half is on time too: it calls `echo` ECHO while it learns, and after
//! its window `echo` REVERSE (never called) is denied while ECHO still works — the kernel told
//! Studio the window ended, Studio told the shaper, and `echo` pulled the shaper's `Enforce`,
//! all before this agent's next syscall. Then it spins on Yield for ever, and the shell must
//! keep answering.
//!
//! Every line starts with `[syscall-spinner]`; a failure is `[syscall-spinner] FAIL: ...`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

use ozone_abi::Error;
use ozone_agent_sdk::caps;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::echo::{self, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println, sys};

entry!(run);

/// Yields before the first new operation: far more than any warm-up window the description
/// may set (`shaper_warmup`, 64 by default).
const SPINS: u64 = 20_000;

fn run() -> u64 {
    println!("[syscall-spinner] spinning on Yield, never blocking");
    // Learned: `echo` ECHO.
    let echo = match Client::lookup(echo::INTERFACE) {
        Ok(c) => c,
        Err(e) => {
            println!("[syscall-spinner] FAIL: no `echo`: {e}");
            return 1;
        }
    };
    if echo.call(method::ECHO, &7u64) != Ok(7) {
        println!("[syscall-spinner] FAIL: `echo` ECHO while learning");
    }
    for _ in 0..SPINS {
        sys::yield_now();
    }
    // NBRecv on its Studio endpoint: refused either way (it has no read right), but a profile
    // that allows NBRecv answers IllegalOperation, an enforced one Denied.
    match caps::studio().nb_recv() {
        Err(AgentError::Kernel(Error::Denied)) => println!("[syscall-spinner] NBRecv after {SPINS} syscalls: denied"),
        other => println!("[syscall-spinner] FAIL: NBRecv after {SPINS} syscalls: {:?}", other.map(|r| r.badge)),
    }
    match (echo.call(method::REVERSE, "abc"), echo.call(method::ECHO, &8u64)) {
        (Err(AgentError::Service(ServiceError::Denied)), Ok(8)) => {
            println!("[syscall-spinner] echo REVERSE after {SPINS} syscalls: denied; ECHO: allowed")
        }
        (reverse, echo) => {
            println!("[syscall-spinner] FAIL: echo after the window: REVERSE {reverse:?}, ECHO {echo:?}")
        }
    }
    println!("[syscall-spinner] still spinning");
    loop {
        sys::yield_now();
    }
}
