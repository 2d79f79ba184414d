//! Guest benchmark program, for `cargo xtask bench` (under `-icount` a TSC tick is one guest
//! instruction): the network server's cost per exchange, at the instance's own address (the
//! server's loopback path: no wire, so what is measured is the server, the stack and the calls).
//!
//! Between two programs, this one and `net-bench-peer` (started first, at the same priority),
//! which echoes: each end asks the server again while it has nothing and yields between asks, so
//! the other end runs (no sleeps: the SDK's sockets back off by sleeping, which would measure the
//! sleep).
//! - `net_udp_roundtrip`: 64 bytes sent to the peer's UDP port and echoed back.
//! - `net_tcp_roundtrip`: the same over a TCP connection to the peer.
//!
//! Then with both ends in this program, so that no scheduling between two programs enters the
//! figures (each end asks again at once, without yielding):
//! - `net_udp_roundtrip_one`: 64 bytes from one UDP socket to the other and back.
//! - `net_tcp_roundtrip_one`: the same over an established TCP connection (one end connected,
//!   the other accepted).
//! - `net_tcp_bulk_per_kib`: 256 KiB sent through the connection in pieces of the most one request
//!   carries, and received at the other end: instructions per KiB.
//!
//! Prints `bench: name=NAME median=N p90=N samples=K` for each.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use ozone_agent_sdk::protocol::net::{
    self as proto, Accepted, Bound, Connect, Datagram, Endpoint, Handle, INTERFACE, Io, Listen, MAX_IO, Recv, Send,
    SendTo, method,
};
use ozone_agent_sdk::rpc::Client;
use ozone_agent_sdk::{AgentError, entry, println, sys, timer};

entry!(run);

const SAMPLES: usize = 41;
/// Asks of one operation before it counts as failed.
const PATIENCE: u32 = 100_000;
const BULK_KIB: usize = 256;
/// `net-bench-peer`'s ports.
const PEER_UDP: u16 = 7102;
const PEER_TCP: u16 = 7103;
/// Polls of the peer's echo of the first datagram before it is sent again (the peer may not be
/// bound yet).
const HELLO_POLLS: u32 = 1000;

fn report(name: &str, samples: &mut [u64]) {
    let (median, p90) = ozone_guest_tests::median_p90(samples);
    println!("bench: name={name} median={median} p90={p90} samples={}", samples.len());
}

/// Ask `op` until it is ready (the server polls its stack at every request).
fn ready<T>(op: impl FnMut() -> Result<Io<T>, AgentError>) -> Result<T, &'static str> {
    ready_or(op, PATIENCE, false)?.ok_or("never ready")
}

/// Ask `op` until it is ready, at most `asks` times (`None` if it never was), yielding between
/// asks if `yielding` (the other end is another program).
fn ready_or<T>(
    mut op: impl FnMut() -> Result<Io<T>, AgentError>,
    asks: u32,
    yielding: bool,
) -> Result<Option<T>, &'static str> {
    for _ in 0..asks {
        match op() {
            Ok(Io::Ready(v)) => return Ok(Some(v)),
            Ok(Io::WouldBlock) => {}
            Ok(Io::Closed) => return Err("closed"),
            Err(_) => return Err("refused"),
        }
        if yielding {
            sys::yield_now();
        }
    }
    Ok(None)
}

fn run() -> u64 {
    match bench() {
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

fn bench() -> Result<(), &'static str> {
    let net = Client::lookup(INTERFACE).map_err(|_| "no network server")?;
    // The address comes from DHCP shortly after boot.
    let mut own = None;
    for _ in 0..600 {
        let s: proto::Status = net.call(method::STATUS, &()).map_err(|_| "no status")?;
        if let Some(a) = s.address {
            own = Some(a.addr);
            break;
        }
        timer::sleep(Duration::from_millis(20)).map_err(|_| "no timer")?;
    }
    let own = own.ok_or("no address")?;
    let at = |port| Endpoint { addr: own, port };
    let payload = vec![0x6bu8; 64];
    between_programs(&net, at(PEER_UDP), at(PEER_TCP), &payload)?;

    // UDP, both ends here.
    let a: Bound = net.call(method::UDP_BIND, &7100u16).map_err(|_| "udp bind")?;
    let b: Bound = net.call(method::UDP_BIND, &7101u16).map_err(|_| "udp bind")?;
    let recv_from = |h: Handle| {
        ready(|| net.call(method::UDP_RECV_FROM, &Recv { handle: h, max: MAX_IO as u32 }))
            .map(|d: Datagram| d.data.len())
    };
    let mut udp = |_: usize| -> Result<(), &'static str> {
        let send = |from: Handle, to| {
            let r: Io<()> = net
                .call(method::UDP_SEND_TO, &SendTo { handle: from, peer: at(to), data: payload.clone() })
                .map_err(|_| "udp send")?;
            matches!(r, Io::Ready(())).then_some(()).ok_or("udp send would block")
        };
        send(a.handle, 7101)?;
        recv_from(b.handle)?;
        send(b.handle, 7100)?;
        (recv_from(a.handle)? == 64).then_some(()).ok_or("udp: short datagram")
    };
    measure("net_udp_roundtrip_one", &mut udp)?;

    // TCP: one end connects to the other's listener.
    let l: Handle = net.call(method::TCP_LISTEN, &Listen { port: 7100, backlog: 1 }).map_err(|_| "tcp listen")?;
    let c: Handle = net.call(method::TCP_CONNECT, &Connect { peer: at(7100) }).map_err(|_| "tcp connect")?;
    ready(|| net.call(method::TCP_CONNECTED, &c))?;
    let Accepted { handle: s, .. } = ready(|| net.call(method::TCP_ACCEPT, &l))?;
    let send_all = |h: Handle, data: &[u8]| -> Result<(), &'static str> {
        let mut rest = data;
        while !rest.is_empty() {
            let n: u32 = ready(|| net.call(method::TCP_SEND, &Send { handle: h, data: rest.to_vec() }))?;
            rest = &rest[(n as usize).min(rest.len())..];
        }
        Ok(())
    };
    let recv_n = |h: Handle, n: usize| -> Result<(), &'static str> {
        let mut got = 0;
        while got < n {
            let max = (n - got).min(MAX_IO) as u32;
            let d: Vec<u8> = ready(|| net.call(method::TCP_RECV, &proto::Recv { handle: h, max }))?;
            got += d.len();
        }
        Ok(())
    };
    let mut tcp = |_: usize| -> Result<(), &'static str> {
        send_all(c, &payload)?;
        recv_n(s, 64)?;
        send_all(s, &payload)?;
        recv_n(c, 64)
    };
    measure("net_tcp_roundtrip_one", &mut tcp)?;

    // Bulk: 256 KiB one way, received whole, a few times.
    let chunk = vec![0x5au8; MAX_IO];
    let bulk = |_: usize| -> Result<(), &'static str> {
        let total = BULK_KIB * 1024;
        let (mut sent, mut got) = (0usize, 0usize);
        for _ in 0..PATIENCE {
            if sent < total {
                let piece = &chunk[..(total - sent).min(MAX_IO)];
                match net.call(method::TCP_SEND, &Send { handle: c, data: piece.to_vec() }) {
                    Ok(Io::Ready(n)) => sent += n as usize,
                    Ok(Io::WouldBlock) => {}
                    _ => return Err("bulk send"),
                }
            }
            match net.call(method::TCP_RECV, &proto::Recv { handle: s, max: MAX_IO as u32 }) {
                Ok(Io::Ready(d)) => got += d.len(),
                Ok(Io::WouldBlock) => {}
                Ok(Io::Closed) | Err(_) => return Err("bulk receive"),
            }
            if got >= total {
                return Ok(());
            }
        }
        Err("bulk never finished")
    };
    let mut samples = vec![0u64; 9];
    bulk(0)?;
    for s in samples.iter_mut() {
        let t0 = timer::now();
        bulk(0)?;
        *s = (timer::now() - t0) / BULK_KIB as u64;
    }
    report("net_tcp_bulk_per_kib", &mut samples);
    let _: Result<(), AgentError> = net.call(method::CLOSE, &c);
    let _: Result<(), AgentError> = net.call(method::CLOSE, &s);
    Ok(())
}

/// `net_udp_roundtrip` and `net_tcp_roundtrip`: 64 bytes to `net-bench-peer` and back, over UDP
/// (from port 7104) and over a TCP connection; the connection is closed at the end, which ends
/// the peer.
fn between_programs(net: &Client, udp: Endpoint, tcp: Endpoint, payload: &[u8]) -> Result<(), &'static str> {
    let own: Bound = net.call(method::UDP_BIND, &7104u16).map_err(|_| "udp bind")?;
    let send = || -> Result<(), &'static str> {
        let r: Io<()> = net
            .call(method::UDP_SEND_TO, &SendTo { handle: own.handle, peer: udp, data: payload.to_vec() })
            .map_err(|_| "udp send")?;
        matches!(r, Io::Ready(())).then_some(()).ok_or("udp send would block")
    };
    let echo = |asks| {
        ready_or(|| net.call(method::UDP_RECV_FROM, &Recv { handle: own.handle, max: MAX_IO as u32 }), asks, true)
    };
    // The peer may not be up yet: say hello until it answers.
    let mut answered = false;
    for _ in 0..100 {
        send()?;
        if echo(HELLO_POLLS)?.is_some() {
            answered = true;
            break;
        }
    }
    if !answered {
        return Err("net-bench-peer never answered");
    }
    let mut udp_round = |_: usize| -> Result<(), &'static str> {
        send()?;
        let d: Datagram = echo(PATIENCE)?.ok_or("udp: no echo")?;
        (d.data.len() == 64 && d.peer == udp).then_some(()).ok_or("udp: not the peer's echo")
    };
    measure("net_udp_roundtrip", &mut udp_round)?;

    let c: Handle = net.call(method::TCP_CONNECT, &Connect { peer: tcp }).map_err(|_| "tcp connect")?;
    ready_or(|| net.call(method::TCP_CONNECTED, &c), PATIENCE, true)?.ok_or("tcp: never connected")?;
    let mut tcp_round = |_: usize| -> Result<(), &'static str> {
        let mut rest = payload;
        while !rest.is_empty() {
            let n: u32 =
                ready_or(|| net.call(method::TCP_SEND, &Send { handle: c, data: rest.to_vec() }), PATIENCE, true)?
                    .ok_or("tcp: cannot send")?;
            rest = &rest[(n as usize).min(rest.len())..];
        }
        let mut got = 0;
        while got < payload.len() {
            let max = (payload.len() - got) as u32;
            let d: Vec<u8> = ready_or(|| net.call(method::TCP_RECV, &Recv { handle: c, max }), PATIENCE, true)?
                .ok_or("tcp: no echo")?;
            got += d.len();
        }
        Ok(())
    };
    measure("net_tcp_roundtrip", &mut tcp_round)?;
    let _: Result<(), AgentError> = net.call(method::CLOSE, &c);
    let _: Result<(), AgentError> = net.call(method::CLOSE, &own.handle);
    Ok(())
}

/// Time `op` [`SAMPLES`] times after two untimed runs.
fn measure(name: &str, op: &mut impl FnMut(usize) -> Result<(), &'static str>) -> Result<(), &'static str> {
    op(0)?;
    op(1)?;
    let mut samples = vec![0u64; SAMPLES];
    for (i, s) in samples.iter_mut().enumerate() {
        let t0 = timer::now();
        op(i)?;
        *s = timer::now() - t0;
    }
    report(name, &mut samples);
    Ok(())
}
