//! Guest test agent: uses its capability to `echo` until it stops working. The test revokes the
//! capability from the shell (`revoke revocation-probe echo`); the probe's next call must fail,
//! and asking Studio for `echo` again must be refused.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

use ozone_agent_sdk::protocol::echo::{self, method};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{entry, println, sys};

entry!(run);

fn run() -> u64 {
    let echo = match Client::lookup(echo::INTERFACE) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL: no echo: {e}");
            return 1;
        }
    };
    let mut calls: u64 = 0;
    loop {
        match echo.call(method::ECHO, &calls) {
            Ok(n) if n == calls => {
                if calls == 0 {
                    println!("echo works (slot {})", echo.slot());
                }
                calls += 1;
            }
            Ok(n) => {
                println!("FAIL: echo answered {n} to {calls}");
                return 1;
            }
            Err(e) => {
                println!("echo failed after {calls} calls: {e}");
                match Client::lookup(echo::INTERFACE) {
                    Err(e) => println!("lookup refused: {e}"),
                    Ok(_) => println!("FAIL: lookup granted again"),
                }
                return 0;
            }
        }
        sys::yield_now();
    }
}
