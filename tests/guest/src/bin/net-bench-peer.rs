//! Guest benchmark program, for `cargo xtask bench`: the other end of `net-bench`'s exchanges
//! between two programs. It echoes every UDP datagram that reaches port 7102 back to its sender,
//! and everything the one TCP connection accepted on port 7103 brings back through it; when that
//! connection closes it prints `[net-bench-peer] done` and exits.
//!
//! It asks the network server again whenever it has nothing and yields between rounds, so that
//! `net-bench`, at the same priority, runs as soon as this end has answered (the SDK's sockets
//! back off by sleeping, which would measure the sleep).
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use ozone_agent_sdk::protocol::net::{
    self as proto, Accepted, Bound, Datagram, Handle, INTERFACE, Io, Listen, MAX_IO, Recv, SendTo, method,
};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{entry, println, sys};

entry!(run);

/// The UDP port echoed.
pub const UDP_PORT: u16 = 7102;
/// The TCP port listened on.
pub const TCP_PORT: u16 = 7103;
/// Rounds without anything to do before the peer gives up (its client never came, or vanished).
const IDLE_ROUNDS: u32 = 2_000_000;

fn run() -> u64 {
    match serve() {
        Ok(()) => {
            println!("done");
            0
        }
        Err(e) => {
            println!("FAIL: {e}");
            1
        }
    }
}

fn serve() -> Result<(), &'static str> {
    let net = Client::lookup(INTERFACE).map_err(|_| "no network server")?;
    let udp: Bound = net.call(method::UDP_BIND, &UDP_PORT).map_err(|_| "udp bind")?;
    let listener: Handle =
        net.call(method::TCP_LISTEN, &Listen { port: TCP_PORT, backlog: 1 }).map_err(|_| "tcp listen")?;
    println!("echoing UDP port {UDP_PORT} and TCP port {TCP_PORT}");
    let mut conn: Option<Handle> = None;
    let mut idle = 0u32;
    while idle < IDLE_ROUNDS {
        let mut busy = false;
        let r: Io<Datagram> = net
            .call(method::UDP_RECV_FROM, &Recv { handle: udp.handle, max: MAX_IO as u32 })
            .map_err(|_| "udp receive")?;
        if let Io::Ready(d) = r {
            let back = SendTo { handle: udp.handle, peer: d.peer, data: d.data };
            let _: Io<()> = net.call(method::UDP_SEND_TO, &back).map_err(|_| "udp send")?;
            busy = true;
        }
        match conn {
            None => {
                if let Io::Ready(Accepted { handle, .. }) =
                    net.call(method::TCP_ACCEPT, &listener).map_err(|_| "tcp accept")?
                {
                    conn = Some(handle);
                    busy = true;
                }
            }
            Some(c) => match net.call(method::TCP_RECV, &Recv { handle: c, max: MAX_IO as u32 }) {
                Ok(Io::Ready(data)) => {
                    send_all(&net, c, &data)?;
                    busy = true;
                }
                Ok(Io::WouldBlock) => {}
                // The client is done.
                Ok(Io::Closed) => {
                    let _: Result<(), _> = net.call(method::CLOSE, &c);
                    return Ok(());
                }
                Err(_) => return Err("tcp receive"),
            },
        }
        idle = if busy { 0 } else { idle + 1 };
        sys::yield_now();
    }
    Err("no client came, or it vanished")
}

fn send_all(net: &Client, h: Handle, data: &[u8]) -> Result<(), &'static str> {
    let mut rest: Vec<u8> = data.to_vec();
    while !rest.is_empty() {
        match net.call(method::TCP_SEND, &proto::Send { handle: h, data: rest.clone() }) {
            Ok(Io::Ready(n)) => {
                rest.drain(..(n as usize).min(rest.len()));
            }
            Ok(Io::WouldBlock) => sys::yield_now(),
            _ => return Err("tcp send"),
        }
    }
    Ok(())
}
