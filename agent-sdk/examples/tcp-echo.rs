//! A TCP echo service on port 7: accepts connections through the network server and sends back
//! what each peer sends, until the peer finishes. `cargo xtask qemu --net` forwards the host's
//! 127.0.0.1:5555 to it (`nc 127.0.0.1 5555`).
//!
//! Its description gives it `net` (with `net_listen = ["7"]`) and `timer` (the sockets' waits).
//! Without a network card the network server is not running, and it says so and ends.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use core::time::Duration;

use ozone_agent_sdk::net::{NetError, TcpListener};
use ozone_agent_sdk::{entry, println};

entry!(run);

/// The echo port.
const PORT: u16 = 7;

fn run() -> u64 {
    let listener = match TcpListener::bind(PORT) {
        Ok(l) => l,
        Err(e) => {
            println!("cannot listen on port {PORT}: {e:?}");
            return 0;
        }
    };
    println!("listening on port {PORT}");
    let mut served = 0u64;
    loop {
        let (conn, peer) = match listener.accept(Duration::from_secs(3600)) {
            Ok(c) => c,
            Err(NetError::TimedOut) => continue,
            Err(e) => {
                println!("accept failed: {e:?}");
                return 1;
            }
        };
        let a = peer.addr;
        let mut buf = [0u8; 512];
        let mut bytes = 0;
        loop {
            match conn.recv(&mut buf, Duration::from_secs(30)) {
                Ok(0) => break,
                Ok(n) => {
                    if conn.send(&buf[..n]).is_err() {
                        break;
                    }
                    bytes += n;
                }
                Err(_) => break,
            }
        }
        let _ = conn.close();
        served += 1;
        println!("echoed {bytes} bytes to {}.{}.{}.{}:{} (connection {served})", a[0], a[1], a[2], a[3], peer.port);
    }
}
