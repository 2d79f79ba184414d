//! The `net` interface (the network server, `servers/net`): method numbers, message types and
//! limits.
//!
//! - **Sockets are the caller's own.** Every socket belongs to the program that made it (the
//!   badge of its capability). A [`Handle`] names a socket among the caller's sockets only: a
//!   handle of another program's socket, or a guessed one, is `NotFound`. Handles are never
//!   reused while the server runs.
//! - **Rules.** Studio gives each program its rules from the system description (`net_listen`,
//!   `net_connect`; syntax in `docs/network.md`). TCP `CONNECT` and UDP `SEND_TO` must match a
//!   `net_connect` rule (peer address/prefix and port); TCP `LISTEN` and UDP `BIND` of a port
//!   must match a `net_listen` range. The rules are asked again on every request, so a rule
//!   taken away stops the sockets it allowed (`Denied`). A program without rules (no `net`
//!   grant) is `Denied` everything but `STATUS`.
//! - **Nothing blocks the server.** A request that cannot complete now answers
//!   [`Io::WouldBlock`]; the SDK (`ozone_agent_sdk::net`) waits a little and asks again until
//!   its timeout, or earlier when the server signals [`NET_SIGNAL`]. [`Io::Closed`] says the connection is over (the peer finished sending, reset
//!   it, or refused it).
//! - **Limits.** A program has at most [`MAX_SOCKETS`] sockets (a listener's backlog counts) and
//!   [`CLIENT_BUFFER_BYTES`] of socket buffers; beyond that `QuotaExceeded`. A request moves at
//!   most [`MAX_IO`] bytes; a UDP datagram is at most [`MAX_IO`] bytes.
//!
//! Errors are [`ServiceError`](super::ServiceError) codes: `BadRequest` (did not decode),
//! `Denied` (no rules, or outside them), `NotFound` (no such socket of the caller's, or a socket
//! of another kind), `InvalidArgument` (port 0 where one is needed, an empty or oversized
//! payload, a backlog out of range, an unusable address), `Busy` (the port is in use; the
//! socket is not in a state for this: sending before the connection is up), `QuotaExceeded`
//! (the caller's limits), `NoMemory` (the server's own limits), `NotRunning` (the interface has no
//! address yet: DHCP has not answered).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "net";

/// A socket, among the caller's sockets.
pub type Handle = u32;

super::methods! {
    /// `()` → [`Status`]: the interface, its address and lease, and socket counts.
    STATUS = 0: () => Status;
    /// [`Connect`] → [`Handle`]: start a TCP connection (the SYN goes out at once); wait for
    /// it with `CONNECTED`.
    TCP_CONNECT = 1: Connect => Handle;
    /// [`Handle`] → [`Io`]`<`[`Endpoint`]`>`: whether the connection is up (its local
    /// endpoint); `Closed` if it was refused or reset.
    TCP_CONNECTED = 2: Handle => Io<Endpoint>;
    /// [`Listen`] → [`Handle`]: a TCP listener on a port.
    TCP_LISTEN = 3: Listen => Handle;
    /// [`Handle`] of a listener → [`Io`]`<`[`Accepted`]`>`: a connection that came in.
    TCP_ACCEPT = 4: Handle => Io<Accepted>;
    /// [`Send`] → [`Io`]`<u32>`: the bytes the connection took (1..=len), `WouldBlock` if its
    /// send buffer is full.
    TCP_SEND = 5: Send => Io<u32>;
    /// [`Recv`] → [`Io`]`<Vec<u8>>`: 1..=max bytes received; `Closed` once the peer has finished
    /// and everything was read.
    TCP_RECV = 6: Recv => Io<Vec<u8>>;
    /// [`Handle`] → `()`: no more sending (FIN); receiving goes on.
    TCP_SHUTDOWN = 7: Handle => ();
    /// [`Handle`] → `()`: close any socket; the handle is gone at once.
    CLOSE = 8: Handle => ();
    /// `u16` port → [`Bound`]: a UDP socket; port 0 picks a free port (no `net_listen` rule
    /// needed: such a socket receives only from peers its `net_connect` rules allow).
    UDP_BIND = 9: u16 => Bound;
    /// [`SendTo`] → [`Io`]`<()>`: one datagram queued; `WouldBlock` if the send buffer is full.
    UDP_SEND_TO = 10: SendTo => Io<()>;
    /// [`Recv`] → [`Io`]`<`[`Datagram`]`>`: the next datagram.
    UDP_RECV_FROM = 11: Recv => Io<Datagram>;
    /// `u32` first index → `Vec<`[`SocketInfo`]`>`: the caller's sockets, as many as fit one
    /// message ([`LIST_PAGE`]); ask again from the next index.
    SOCKETS = 12: u32 => Vec<SocketInfo>;
}

/// The most bytes one `TCP_SEND`, `TCP_RECV`, `UDP_SEND_TO` or `UDP_RECV_FROM` moves (a message
/// carries at most 960 bytes of payload).
pub const MAX_IO: usize = 800;
/// The most sockets one program may have at a time (every socket of a listener's backlog counts).
pub const MAX_SOCKETS: usize = 16;
/// The most bytes of socket buffers one program may hold at a time.
pub const CLIENT_BUFFER_BYTES: usize = 256 * 1024;
/// Receive and send buffer of a TCP socket, each.
pub const TCP_BUFFER: usize = 16 * 1024;
/// Receive and send payload buffer of a UDP socket, each.
pub const UDP_BUFFER: usize = 8 * 1024;
/// Datagrams a UDP socket queues each way.
pub const UDP_PACKETS: usize = 16;
/// The largest backlog of a listener (connections accepted by the stack before `TCP_ACCEPT`).
pub const MAX_BACKLOG: u8 = 4;
/// The most [`SocketInfo`]s one `SOCKETS` reply carries.
pub const LIST_PAGE: usize = 16;
/// The most programs `STATUS` lists.
pub const STATUS_CLIENTS: usize = 16;
/// The bit the network server signals on a client's notification when something the client was
/// answered `WouldBlock` for may have happened (if Studio gave the server the client's signal
/// capability, as for the timer's `signals_clients`). A hint: the SDK asks again, and without it
/// asks again after a short sleep anyway. Distinct from the other signal bits of the system
/// (see `protocol::timer`).
pub const NET_SIGNAL: u64 = 1 << 45;

/// The outcome of an operation that may have to wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Io<T> {
    /// Done.
    Ready(T),
    /// Not now: ask again later.
    WouldBlock,
    /// The connection is over (finished, reset or refused).
    Closed,
}

/// An IPv4 address and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: [u8; 4],
    pub port: u16,
}

/// Request of `TCP_CONNECT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    pub peer: Endpoint,
}

/// Request of `TCP_LISTEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    pub port: u16,
    /// 1..=[`MAX_BACKLOG`].
    pub backlog: u8,
}

/// A connection `TCP_ACCEPT` took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The new connection's handle.
    pub handle: Handle,
    pub peer: Endpoint,
}

/// Request of `TCP_SEND`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub handle: Handle,
    /// 1..=[`MAX_IO`] bytes.
    pub data: Vec<u8>,
}

/// Request of `TCP_RECV` and `UDP_RECV_FROM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recv {
    pub handle: Handle,
    /// 1..=[`MAX_IO`]: the most bytes wanted.
    pub max: u32,
}

/// A UDP socket (`UDP_BIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    pub handle: Handle,
    /// The local port (the one picked, for port 0).
    pub port: u16,
}

/// Request of `UDP_SEND_TO`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTo {
    pub handle: Handle,
    pub peer: Endpoint,
    /// 0..=[`MAX_IO`] bytes: one datagram.
    pub data: Vec<u8>,
}

/// A datagram received.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Datagram {
    pub peer: Endpoint,
    pub data: Vec<u8>,
    /// The datagram was longer than asked for: the rest is dropped.
    pub truncated: bool,
}

/// What kind of socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    TcpListener,
    TcpStream,
    Udp,
}

/// One of the caller's sockets (`SOCKETS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    pub handle: Handle,
    pub kind: Kind,
    pub local_port: u16,
    /// The peer of a connection.
    pub peer: Option<Endpoint>,
    /// The TCP state (smoltcp's name for it: "ESTABLISHED", "LISTEN", ...), "UDP" for UDP.
    pub state: [u8; 12],
    /// Bytes waiting to be read.
    pub rx_queued: u32,
    /// Bytes waiting to be sent.
    pub tx_queued: u32,
}

/// An address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: [u8; 4],
    pub prefix: u8,
}

/// A DHCP lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub address: Cidr,
    pub router: Option<[u8; 4]>,
    /// The server that granted it.
    pub server: [u8; 4],
    /// The first DNS server offered.
    pub dns: Option<[u8; 4]>,
    /// The server's clock (ms) when it was granted.
    pub since_ms: u64,
}

/// Sockets of one program (`STATUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSockets {
    /// The program id.
    pub client: u64,
    pub tcp: u16,
    pub udp: u16,
    /// Buffer bytes held.
    pub buffer_bytes: u32,
}

/// The reply of `STATUS`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The interface's name ("eth0").
    pub interface: [u8; 8],
    pub mac: [u8; 6],
    /// Whether the address comes from DHCP.
    pub dhcp: bool,
    /// The address now (none while DHCP has not answered).
    pub address: Option<Cidr>,
    pub gateway: Option<[u8; 4]>,
    pub lease: Option<Lease>,
    /// Frames received and sent, and received frames dropped before the stack (too long).
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_dropped: u64,
    /// Per program: the caller's own line, or every program's (at most [`STATUS_CLIENTS`]) for a
    /// caller the server lets see them all (the shell).
    pub clients: Vec<ClientSockets>,
}

/// The text of a fixed-size name field (up to its first zero byte).
pub fn name_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_PAYLOAD, decode, encode};

    #[test]
    fn the_largest_messages_fit() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let peer = Endpoint { addr: [255; 4], port: u16::MAX };
        let s = SendTo { handle: u32::MAX, peer, data: alloc::vec![0xff; MAX_IO] };
        let n = encode(&s, &mut words).unwrap();
        assert_eq!(decode::<SendTo>(&words, n).unwrap(), s);
        let d = Io::Ready(Datagram { peer, data: alloc::vec![0xff; MAX_IO], truncated: true });
        let n = encode(&d, &mut words).unwrap();
        assert_eq!(decode::<Io<Datagram>>(&words, n).unwrap(), d);
        let info = SocketInfo {
            handle: u32::MAX,
            kind: Kind::TcpStream,
            local_port: u16::MAX,
            peer: Some(peer),
            state: [b'X'; 12],
            rx_queued: u32::MAX,
            tx_queued: u32::MAX,
        };
        let list = alloc::vec![info; LIST_PAGE];
        let n = encode(&list, &mut words).unwrap();
        assert_eq!(decode::<Vec<SocketInfo>>(&words, n).unwrap(), list);
        let c = ClientSockets { client: u64::MAX, tcp: u16::MAX, udp: u16::MAX, buffer_bytes: u32::MAX };
        let cidr = Cidr { addr: [255; 4], prefix: 32 };
        let lease =
            Lease { address: cidr, router: Some([1; 4]), server: [1; 4], dns: Some([1; 4]), since_ms: u64::MAX };
        let st = Status {
            interface: [b'x'; 8],
            mac: [0xff; 6],
            dhcp: true,
            address: Some(cidr),
            gateway: Some([1; 4]),
            lease: Some(lease),
            rx_frames: u64::MAX,
            tx_frames: u64::MAX,
            rx_dropped: u64::MAX,
            clients: alloc::vec![c; STATUS_CLIENTS],
        };
        let n = encode(&st, &mut words).unwrap();
        assert_eq!(decode::<Status>(&words, n).unwrap(), st);
    }
}
