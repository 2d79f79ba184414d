//! Guest test agent: the network between two instances, and the rules.
//!
//! As `net-check` (rules: `net_connect = ["10.0.3.0/24:7"]`, no `net_listen`) it first reaches
//! past its rules, each refused with `Denied` by the network server: a connection to port 8 of
//! the peer, one to a host outside 10.0.3.0/24, a listener on port 80, a UDP datagram to port 9.
//! Then it connects to `tcp-echo` on the other instance (10.0.3.1:7), waiting for the peer's
//! address to come up, sends 2000 bytes, and checks the echo. As `net-nogrant` (no `net` in its
//! description) its lookup of the interface is refused. Prints `PASS`, or `FAIL: ...`.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use ozone_agent_sdk::net::{NetError, TcpListener, TcpStream, UdpSocket};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::{AgentError, entry, println, start, timer};

entry!(run);

/// The other instance's address (`--peer listen` has the MAC ending in 01).
const PEER: [u8; 4] = [10, 0, 3, 1];

fn denied<T: core::fmt::Debug>(what: &str, r: Result<T, NetError>, failures: &mut Vec<String>) {
    match r {
        Err(NetError::Agent(AgentError::Service(ServiceError::Denied))) => println!("refused: {what}"),
        other => failures.push(format!("{what}: {other:?}, not Denied")),
    }
}

fn run() -> u64 {
    let mut failures = Vec::new();
    let name = start::info().map(|i| i.name()).unwrap_or("");
    if name == "net-nogrant" {
        match TcpStream::connect(PEER, 7, Duration::from_secs(1)) {
            Err(NetError::Agent(e)) => println!("without the grant: refused ({e})"),
            other => failures.push(format!("a program without `net` connected: {other:?}")),
        }
    } else {
        let short = Duration::from_secs(1);
        denied("connect to port 8 of the peer", TcpStream::connect(PEER, 8, short), &mut failures);
        denied("connect to 10.0.4.1:7", TcpStream::connect([10, 0, 4, 1], 7, short), &mut failures);
        denied("listen on port 80", TcpListener::bind(80), &mut failures);
        match UdpSocket::bind(0) {
            Ok(u) => {
                denied("a datagram to port 9 of the peer", u.send_to(b"x", PEER, 9), &mut failures);
                let _ = u.close();
            }
            Err(e) => failures.push(format!("a UDP socket on a picked port: {e:?}")),
        }
        echo(&mut failures);
    }
    if failures.is_empty() {
        println!("PASS");
        0
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        1
    }
}

/// Connect to the peer's echo (its address comes up a few seconds after boot), send 2000 bytes,
/// read them back.
fn echo(failures: &mut Vec<String>) {
    let deadline = match timer::Deadline::after(Duration::from_secs(90)) {
        Ok(d) => d,
        Err(e) => {
            failures.push(format!("no clock: {e:?}"));
            return;
        }
    };
    let conn = loop {
        match TcpStream::connect(PEER, 7, Duration::from_secs(5)) {
            Ok(c) => break c,
            // Refused or unanswered (the peer's address is not up yet), or this instance has no
            // address yet itself (`NotRunning`).
            Err(
                NetError::Closed | NetError::TimedOut | NetError::Agent(AgentError::Service(ServiceError::NotRunning)),
            ) if !deadline.reached() => {
                let _ = timer::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                failures.push(format!("connect to the peer's echo: {e:?}"));
                return;
            }
        }
    };
    let l = conn.local();
    println!("connected from {}.{}.{}.{}:{}", l.addr[0], l.addr[1], l.addr[2], l.addr[3], l.port);
    let data: Vec<u8> = (0..2000u32).map(|i| (i * 13 + 5) as u8).collect();
    if let Err(e) = conn.send(&data) {
        failures.push(format!("send: {e:?}"));
        return;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.len() < data.len() {
        match conn.recv(&mut buf, Duration::from_secs(20)) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                failures.push(format!("recv after {} bytes: {e:?}", got.len()));
                break;
            }
        }
    }
    let _ = conn.close();
    if got == data {
        println!("the peer echoed {} bytes", got.len());
    } else {
        failures.push(format!("the echo differs ({} bytes back)", got.len()));
    }
}
