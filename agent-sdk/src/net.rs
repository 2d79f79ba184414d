//! Sockets over the network server (interface `net`, messages in [`crate::protocol::net`]): TCP
//! connections and listeners, UDP sockets, with timeouts.
//!
//! ```ignore
//! use core::time::Duration;
//! let s = TcpStream::connect([10, 0, 2, 2], 8000, Duration::from_secs(5))?;
//! s.send(b"hello")?;
//! let mut buf = [0u8; 512];
//! let n = s.recv(&mut buf, Duration::from_secs(5))?;   // 0: the peer finished
//! s.close()?;
//!
//! let l = TcpListener::bind(8080)?;
//! let (conn, peer) = l.accept(Duration::from_secs(30))?;
//!
//! let u = UdpSocket::bind(0)?;                         // a port the server picks
//! u.send_to(b"ping", [10, 0, 2, 2], 9000)?;
//! let (n, from) = u.recv_from(&mut buf, Duration::from_millis(500))?;
//! ```
//!
//! The program needs the `net` interface, with rules in its system description (`net_listen`,
//! `net_connect`: what it may listen on and reach), and the `timer` interface for the waits.
//! The server never keeps a caller waiting: an operation that cannot complete now answers
//! "would block", and these calls sleep a little (1 ms, doubling up to [`MAX_BACKOFF_MS`]) and
//! ask again until the timeout; a [`NET_SIGNAL`] from the server (one of the program's sockets
//! may be ready) ends the sleep early. Data moves in pieces of at most
//! [`MAX_IO`] bytes per request; [`TcpStream::send`] sends all it
//! is given in as many requests as it takes. A socket not closed is closed by the server when the
//! program stops.

use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;

use crate::error::AgentError;
use crate::protocol::Method;
use crate::protocol::net::NET_SIGNAL;
use crate::protocol::net::{self as proto, Endpoint, Handle, Io, MAX_BACKLOG, MAX_IO, Status, method};
use crate::protocol::timer::TIMER_SIGNAL;
use crate::rpc::Client;
use crate::{caps, signals, timer};

pub use crate::protocol::net::{Endpoint as Peer, SocketInfo};

/// The longest sleep between two tries of an operation that would block.
pub const MAX_BACKOFF_MS: u64 = 16;

/// Why a socket operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetError {
    /// The connection is over: refused, reset, or the peer finished (sending).
    Closed,
    /// The timeout passed first.
    TimedOut,
    /// The server refused the request (`Denied`: outside the program's rules), or the call
    /// failed (the server is gone: its sockets went with it).
    Agent(AgentError),
}

impl From<AgentError> for NetError {
    fn from(e: AgentError) -> NetError {
        NetError::Agent(e)
    }
}

impl core::fmt::Display for NetError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetError::Closed => f.write_str("connection closed"),
            NetError::TimedOut => f.write_str("timed out"),
            NetError::Agent(e) => write!(f, "{e}"),
        }
    }
}

/// Results of socket operations.
pub type Result<T> = core::result::Result<T, NetError>;

/// The network server's endpoint here, once looked up (0: not yet).
static SERVER: AtomicU64 = AtomicU64::new(0);

fn server() -> Result<Client> {
    Ok(Client::lookup_cached(&SERVER, proto::INTERFACE)?)
}

/// Call the server; a server that is gone is looked up again by the next socket made (its
/// sockets went with it, so this call is not repeated).
fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(m: Method<Req, Resp>, req: &Req) -> Result<Resp> {
    match server()?.call(m, req) {
        Err(AgentError::ServerGone) => {
            SERVER.store(0, Ordering::Relaxed);
            Err(NetError::Agent(AgentError::ServerGone))
        }
        r => Ok(r?),
    }
}

/// Ask `op` until it is done or `timeout` has passed (sleeping between tries).
fn wait<T>(timeout: Duration, mut op: impl FnMut() -> Result<Io<T>>) -> Result<T> {
    let deadline = timer::Deadline::after(timeout)?;
    let mut backoff = 1u64;
    loop {
        match op()? {
            Io::Ready(v) => return Ok(v),
            Io::Closed => return Err(NetError::Closed),
            Io::WouldBlock => {}
        }
        if deadline.reached() {
            return Err(NetError::TimedOut);
        }
        let step = timer::Deadline::after(Duration::from_millis(backoff))?;
        nap(step.min(deadline))?;
        backoff = (backoff * 2).min(MAX_BACKOFF_MS);
    }
}

/// Sleep until `until`, or until the network server signals [`NET_SIGNAL`] (one of this
/// program's sockets may be ready), whichever comes first. Either wake-up may be stale: the
/// caller asks the server again.
fn nap(until: timer::Deadline) -> Result<()> {
    if signals::take(NET_SIGNAL) != 0 || until.reached() {
        return Ok(());
    }
    timer::arm(until)?;
    let n = caps::notification().ok_or(AgentError::NotStarted)?;
    loop {
        let word = n.wait()?;
        signals::stash(word & !(TIMER_SIGNAL | NET_SIGNAL));
        if word & (TIMER_SIGNAL | NET_SIGNAL) != 0 {
            return Ok(());
        }
    }
}

/// Wait without end (for sends, which the server's connection timeout bounds).
const FOREVER: Duration = Duration::from_secs(7 * 24 * 3600);

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    handle: Handle,
    local: Endpoint,
}

impl TcpStream {
    /// Connect to `addr:port`, waiting up to `timeout` for the connection to be up.
    /// `Agent(Service(Denied))` if the program's rules do not allow the peer; `Closed` if the
    /// peer refused. A connection not up in time is closed.
    pub fn connect(addr: [u8; 4], port: u16, timeout: Duration) -> Result<TcpStream> {
        let handle = call(method::TCP_CONNECT, &proto::Connect { peer: Endpoint { addr, port } })?;
        match wait(timeout, || call(method::TCP_CONNECTED, &handle)) {
            Ok(local) => Ok(TcpStream { handle, local }),
            Err(e) => {
                let _ = call(method::CLOSE, &handle);
                Err(e)
            }
        }
    }

    /// This end's address and port.
    pub fn local(&self) -> Endpoint {
        self.local
    }

    /// The server's handle of the connection.
    pub fn handle(&self) -> Handle {
        self.handle
    }

    /// Send all of `data` (waiting while the connection's buffers are full). `Closed` if the
    /// connection ended first.
    pub fn send(&self, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(MAX_IO) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let req = proto::Send { handle: self.handle, data: rest.to_vec() };
                let n = wait(FOREVER, || call(method::TCP_SEND, &req))? as usize;
                rest = &rest[n.min(rest.len())..];
            }
        }
        Ok(())
    }

    /// Receive into `buf` (at most [`MAX_IO`] bytes at a time), waiting up to `timeout` for
    /// something to arrive: the bytes received, 0 once the peer has finished sending.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let max = buf.len().min(MAX_IO) as u32;
        match wait(timeout, || call(method::TCP_RECV, &proto::Recv { handle: self.handle, max })) {
            Ok(data) => {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n)
            }
            Err(NetError::Closed) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Send no more (the peer reads the end); receiving goes on.
    pub fn shutdown(&self) -> Result<()> {
        call(method::TCP_SHUTDOWN, &self.handle)
    }

    /// Close the connection (what was sent is still delivered).
    pub fn close(self) -> Result<()> {
        call(method::CLOSE, &self.handle)
    }
}

/// A TCP listener.
#[derive(Debug)]
pub struct TcpListener {
    handle: Handle,
    port: u16,
}

impl TcpListener {
    /// Listen on `port` (the program's `net_listen` rules must allow it), with a backlog of
    /// [`MAX_BACKLOG`] connections.
    pub fn bind(port: u16) -> Result<TcpListener> {
        TcpListener::with_backlog(port, MAX_BACKLOG)
    }

    /// Listen on `port` with a backlog of 1..=[`MAX_BACKLOG`] (each costs the program buffer
    /// space at the server).
    pub fn with_backlog(port: u16, backlog: u8) -> Result<TcpListener> {
        let handle = call(method::TCP_LISTEN, &proto::Listen { port, backlog })?;
        Ok(TcpListener { handle, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The next connection, waiting up to `timeout`: it and its peer.
    pub fn accept(&self, timeout: Duration) -> Result<(TcpStream, Endpoint)> {
        let a = wait(timeout, || call(method::TCP_ACCEPT, &self.handle))?;
        let local = match call(method::TCP_CONNECTED, &a.handle) {
            Ok(Io::Ready(local)) => local,
            _ => Endpoint { addr: [0; 4], port: self.port },
        };
        Ok((TcpStream { handle: a.handle, local }, a.peer))
    }

    /// Stop listening (connections not accepted yet are reset).
    pub fn close(self) -> Result<()> {
        call(method::CLOSE, &self.handle)
    }
}

/// A UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    handle: Handle,
    port: u16,
}

impl UdpSocket {
    /// A socket on `port` (the program's `net_listen` rules must allow it), or on a port the
    /// server picks for 0 (then it hears only from peers the `net_connect` rules allow).
    pub fn bind(port: u16) -> Result<UdpSocket> {
        let b = call(method::UDP_BIND, &port)?;
        Ok(UdpSocket { handle: b.handle, port: b.port })
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Send one datagram of at most [`MAX_IO`] bytes to `addr:port` (waiting up to a second
    /// while the socket's send buffer is full).
    pub fn send_to(&self, data: &[u8], addr: [u8; 4], port: u16) -> Result<()> {
        if data.len() > MAX_IO {
            return Err(NetError::Agent(AgentError::Service(crate::protocol::ServiceError::InvalidArgument)));
        }
        let req = proto::SendTo { handle: self.handle, peer: Endpoint { addr, port }, data: data.to_vec() };
        wait(Duration::from_secs(1), || call(method::UDP_SEND_TO, &req))
    }

    /// The next datagram, waiting up to `timeout`: its length in `buf` (a longer datagram is
    /// cut to `buf`, at most [`MAX_IO`] bytes) and its sender.
    pub fn recv_from(&self, buf: &mut [u8], timeout: Duration) -> Result<(usize, Endpoint)> {
        let max = buf.len().clamp(1, MAX_IO) as u32;
        let d = wait(timeout, || call(method::UDP_RECV_FROM, &proto::Recv { handle: self.handle, max }))?;
        let n = d.data.len().min(buf.len());
        buf[..n].copy_from_slice(&d.data[..n]);
        Ok((n, d.peer))
    }

    /// Close the socket.
    pub fn close(self) -> Result<()> {
        call(method::CLOSE, &self.handle)
    }
}

/// The interface, its address and lease, and this program's sockets (every program's for the
/// shell).
pub fn status() -> Result<Status> {
    call(method::STATUS, &())
}

/// This program's sockets, from index `first` (at most [`proto::LIST_PAGE`]).
pub fn sockets(first: u32) -> Result<alloc::vec::Vec<SocketInfo>> {
    call(method::SOCKETS, &first)
}
