//! A client of the console server for the `shell_commands` QEMU test: it writes through the
//! `console` interface (not the kernel's debug channel) — a short line, then a text longer than
//! one message, which the client sends in pieces — checks that an oversized request is refused,
//! and says `done` through the debug channel.
//!
//! Started from the shell (`start console-check`); `initrd/system.toml` lets it use `console`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::fmt::Write;

use ozone_agent_sdk::console_client::SerialConsole;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::console::{self as proto, MAX_WRITE, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println};

entry!(run);

/// One line of 400 numbered words: well over one message.
fn long_text() -> String {
    let mut s = String::from("long:");
    for i in 0..400 {
        let _ = write!(s, " w{i}");
    }
    s.push('\n');
    s
}

fn run() -> u64 {
    match check() {
        Ok(()) => {
            println!("done: PASS");
            0
        }
        Err(e) => {
            println!("done: FAIL: {e}");
            1
        }
    }
}

fn check() -> Result<(), String> {
    let fail = |what: &str, e: AgentError| format!("{what}: {e}");
    let mut con = SerialConsole::connect().map_err(|e| fail("lookup of `console`", e))?;
    con.write_text("hello through the console server\n").map_err(|e| fail("write", e))?;
    let long = long_text();
    if long.len() <= MAX_WRITE {
        return Err(format!("the long text is only {} bytes", long.len()));
    }
    con.write_text(&long).map_err(|e| fail("long write", e))?;
    writeln!(con, "formatted {} + {} = {}", 2, 3, 2 + 3).map_err(|_| String::from("writeln"))?;
    // One byte more than a write may carry still fits a message: the server must refuse it.
    let raw = Client::lookup(proto::INTERFACE).map_err(|e| fail("second lookup", e))?;
    let too_big = proto::Write { bytes: alloc::vec![b'x'; MAX_WRITE + 1] };
    match raw.call(method::WRITE, &too_big) {
        Err(AgentError::Service(ServiceError::InvalidArgument)) => {}
        other => return Err(format!("an oversized write was answered {other:?}")),
    }
    Ok(())
}
