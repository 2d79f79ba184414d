//! The stack: one Ethernet interface (smoltcp) over a [`Nic`], configured statically or by
//! DHCP, and the socket table of the server's clients.
//!
//! # Ownership
//!
//! Every socket is one client's (the badge of the caller that made it), kept under the key
//! `(client, handle)`: a client names its sockets with handles counted per client from 1 and
//! never reused, and a handle is looked up with the caller's badge, so another client's socket is
//! `NotFound` exactly like one that never existed. Ports are owned too: a TCP port listened on or
//! used as a connection's local port, and a UDP port bound, is one client's until it lets it go;
//! anyone else asking for it is `Busy` (two clients never share a port, so traffic to one never
//! reaches the other).
//!
//! # Rules
//!
//! Every operation takes the caller's current [`NetRules`] and checks them against what it
//! touches: connecting and sending a datagram against `connect`, listening and binding against
//! `listen`, and again on every later use of the socket (a connection made under a rule that is
//! gone is `Denied`). A listener accepts only what arrives on its own port; a UDP socket on a
//! port the stack picked (bound to port 0) takes only datagrams from peers `connect` allows.
//!
//! # Limits
//!
//! A client has at most [`MAX_SOCKETS`] sockets and [`CLIENT_BUFFER_BYTES`] of buffers (a
//! listener's backlog sockets count; a closed connection counts until its goodbye is over or
//! [`CLOSE_LINGER_MS`] has passed), and all clients together at most
//! [`Limits::total_bytes`]. The stack takes at most [`crate::nic::RX_BUDGET`] frames per poll.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::net::{
    Accepted, Bound, CLIENT_BUFFER_BYTES, Cidr, ClientSockets, Datagram, Endpoint, Handle, Io, Kind, LIST_PAGE, Lease,
    MAX_BACKLOG, MAX_IO, MAX_SOCKETS, STATUS_CLIENTS, SocketInfo, Status, TCP_BUFFER, UDP_BUFFER, UDP_PACKETS,
};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint};

use crate::nic::{Nic, NicDevice, NicStats};
use crate::rules::{NetRules, mask};

/// How long a closed connection may take to say goodbye before it is aborted.
pub const CLOSE_LINGER_MS: u64 = 10_000;
/// A connection whose peer stops answering is dropped after this long.
pub const TCP_TIMEOUT_MS: u64 = 30_000;
/// The first port the stack picks for connections and UDP sockets bound to port 0.
pub const EPHEMERAL_FIRST: u16 = 49152;

/// Bytes of buffers one TCP socket holds.
pub const TCP_SOCKET_BYTES: usize = 2 * TCP_BUFFER;
/// Bytes of buffers one UDP socket holds.
pub const UDP_SOCKET_BYTES: usize = 2 * UDP_BUFFER;

/// What a client that was answered `WouldBlock` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    /// A connection on a listener.
    Accept,
    /// A connection to come up.
    Connected,
    /// Data (or a datagram), or the end.
    Recv,
    /// Room to send.
    Send,
}

/// How the interface gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpConfig {
    /// A fixed address, prefix length and optional default gateway.
    Static { address: [u8; 4], prefix: u8, gateway: Option<[u8; 4]> },
    /// DHCPv4.
    Dhcp,
}

/// The server-wide limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Buffer bytes of all clients together.
    pub total_bytes: usize,
    /// Clients with sockets at a time.
    pub clients: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { total_bytes: 4 * 1024 * 1024, clients: 64 }
    }
}

/// Why the stack could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// The NIC's MAC is a group address (or all zeros).
    BadMac,
    /// The static address is not a unicast address, or the prefix is not 1..=32.
    BadAddress,
    /// The gateway is not a unicast address inside the interface's subnet.
    BadGateway,
}

/// A socket of the table.
enum Entry {
    Listener { port: u16, backlog: Vec<SocketHandle> },
    Stream { sock: SocketHandle, local_port: u16, accepted: bool },
    Udp { sock: SocketHandle, port: u16, picked: bool },
}

/// A client's use of the stack.
#[derive(Default)]
struct Client {
    next: Handle,
    sockets: usize,
    bytes: usize,
    tcp: u16,
    udp: u16,
}

/// A connection closed by its owner, saying goodbye.
struct Closing {
    sock: SocketHandle,
    client: u64,
    /// The local port it holds, if it is the connection's own (not a listener's).
    port: Option<u16>,
    until_ms: u64,
}

/// The interface and the socket table.
pub struct Stack<N: Nic> {
    dev: NicDevice<N>,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    lease: Option<Lease>,
    /// The static configuration's gateway.
    gateway: Option<[u8; 4]>,
    table: BTreeMap<(u64, Handle), Entry>,
    clients: BTreeMap<u64, Client>,
    tcp_ports: BTreeMap<u16, u64>,
    udp_ports: BTreeMap<u16, u64>,
    closing: Vec<Closing>,
    next_port: u16,
    total_bytes: usize,
    limits: Limits,
    now_ms: u64,
}

fn instant(ms: u64) -> Instant {
    Instant::from_millis(i64::try_from(ms).unwrap_or(i64::MAX))
}

fn usable_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
}

fn endpoint(e: IpEndpoint) -> Endpoint {
    let IpAddress::Ipv4(a) = e.addr;
    Endpoint { addr: a.octets(), port: e.port }
}

impl<N: Nic> Stack<N> {
    /// The stack on `nic`, configured by `ip`; `seed` seeds smoltcp's randomness (initial
    /// sequence numbers, DHCP transaction ids) and the choice of local ports.
    pub fn new(nic: N, ip: IpConfig, seed: u64, limits: Limits, now_ms: u64) -> Result<Stack<N>, StackError> {
        let mac = nic.mac();
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Err(StackError::BadMac);
        }
        if let IpConfig::Static { address, prefix, gateway } = ip {
            let a = Ipv4Addr::from(address);
            if !usable_unicast(a) || !(1..=32).contains(&prefix) {
                return Err(StackError::BadAddress);
            }
            if let Some(g) = gateway {
                let m = mask(prefix);
                let (gi, ai) = (u32::from_be_bytes(g), u32::from_be_bytes(address));
                if !usable_unicast(Ipv4Addr::from(g)) || gi & m != ai & m || gi == ai {
                    return Err(StackError::BadGateway);
                }
            }
        }
        let mut dev = NicDevice::new(nic);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut dev, instant(now_ms));
        let mut sockets = SocketSet::new(Vec::new());
        let mut udp_ports = BTreeMap::new();
        let dhcp = match ip {
            IpConfig::Static { address, prefix, gateway } => {
                iface.update_ip_addrs(|addrs| {
                    let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Addr::from(address)), prefix));
                });
                if let Some(g) = gateway {
                    iface.routes_mut().add_default_ipv4_route(Ipv4Addr::from(g)).map_err(|_| StackError::BadGateway)?;
                }
                None
            }
            IpConfig::Dhcp => {
                // The DHCP client's port is the server's: no client binds it.
                udp_ports.insert(68, 0);
                Some(sockets.add(dhcpv4::Socket::new()))
            }
        };
        let next_port = EPHEMERAL_FIRST + (crate::splitmix(&mut seed.clone()) % 16384) as u16;
        Ok(Stack {
            dev,
            iface,
            sockets,
            dhcp,
            lease: None,
            gateway: match ip {
                IpConfig::Static { gateway, .. } => gateway,
                IpConfig::Dhcp => None,
            },
            table: BTreeMap::new(),
            clients: BTreeMap::new(),
            tcp_ports: BTreeMap::new(),
            udp_ports,
            closing: Vec::new(),
            next_port,
            total_bytes: 0,
            limits,
            now_ms,
        })
    }

    /// The NIC (for the driver loop: its interrupt, its queues).
    pub fn nic_mut(&mut self) -> &mut N {
        &mut self.dev.nic
    }

    /// The NIC's counters.
    pub fn stats(&self) -> NicStats {
        self.dev.stats
    }

    /// The interface's address now.
    pub fn address(&self) -> Option<Cidr> {
        self.iface
            .ip_addrs()
            .iter()
            .map(|c| match c {
                IpCidr::Ipv4(c) => Cidr { addr: c.address().octets(), prefix: c.prefix_len() },
            })
            .next()
    }

    /// Give up on DHCP (no server answered) and take the fixed `address`/`prefix`, with no
    /// gateway: how two instances joined by a point-to-point link (no DHCP server on it) meet.
    /// Refused (`BadAddress`) for an unusable address, and (`Busy`-like `false`) once a lease
    /// came or the stack was configured statically.
    pub fn fall_back_to_static(&mut self, address: [u8; 4], prefix: u8) -> Result<bool, StackError> {
        if !usable_unicast(Ipv4Addr::from(address)) || !(1..=32).contains(&prefix) {
            return Err(StackError::BadAddress);
        }
        let Some(h) = self.dhcp else { return Ok(false) };
        if self.lease.is_some() {
            return Ok(false);
        }
        self.sockets.remove(h);
        self.dhcp = None;
        self.udp_ports.remove(&68);
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(Ipv4Addr::from(address)), prefix));
        });
        Ok(true)
    }

    /// The DHCP lease, if the address came from one.
    pub fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// Receive, process and send what is due at `now_ms` (at most [`crate::nic::RX_BUDGET`]
    /// frames received); returns whether any socket may have changed.
    pub fn poll(&mut self, now_ms: u64) -> bool {
        self.now_ms = self.now_ms.max(now_ms);
        self.dev.refill();
        let changed = self.iface.poll(instant(self.now_ms), &mut self.dev, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged;
        self.dhcp_events();
        self.reap();
        self.relisten();
        changed
    }

    /// Put back to listening every backlog socket whose connection died before it was accepted
    /// (a half-open connection timed out, a peer reset it), so a listener whose owner is not
    /// accepting cannot be emptied from the wire.
    fn relisten(&mut self) {
        for e in self.table.values() {
            let Entry::Listener { port, backlog } = e else { continue };
            for &sock in backlog {
                let s = self.sockets.get_mut::<tcp::Socket>(sock);
                if matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait) {
                    s.abort();
                    let _ = s.listen(IpListenEndpoint { addr: None, port: *port });
                }
            }
        }
    }

    /// How long the driver may wait (ms) before the next [`poll`](Self::poll) if no frame comes:
    /// `None` for as long as it likes.
    pub fn next_poll(&mut self, now_ms: u64) -> Option<u64> {
        let now = self.now_ms.max(now_ms);
        let stack = self.iface.poll_delay(instant(now), &self.sockets).map(|d| d.total_millis());
        let linger = self.closing.iter().map(|c| c.until_ms.saturating_sub(now)).min();
        match (stack, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn dhcp_events(&mut self) {
        let Some(h) = self.dhcp else { return };
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            None => return,
            Some(dhcpv4::Event::Configured(c)) => {
                Some((c.address, c.router, c.server.address, c.dns_servers.first().copied()))
            }
            Some(dhcpv4::Event::Deconfigured) => None,
        };
        match event {
            Some((address, router, server, dns)) if usable_unicast(address.address()) => {
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(address));
                });
                let routes = self.iface.routes_mut();
                routes.remove_default_ipv4_route();
                if let Some(r) = router.filter(|r| usable_unicast(*r)) {
                    let _ = routes.add_default_ipv4_route(r);
                }
                self.lease = Some(Lease {
                    address: Cidr { addr: address.address().octets(), prefix: address.prefix_len() },
                    router: router.map(|r| r.octets()),
                    server: server.octets(),
                    dns: dns.map(|d| d.octets()),
                    since_ms: self.now_ms,
                });
            }
            _ => {
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.lease = None;
            }
        }
    }

    /// Drop the closed connections that are done, and abort those past their time.
    fn reap(&mut self) {
        let now = self.now_ms;
        let mut i = 0;
        while i < self.closing.len() {
            let c = &self.closing[i];
            let s = self.sockets.get_mut::<tcp::Socket>(c.sock);
            let done = matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait);
            if !done && now < c.until_ms {
                i += 1;
                continue;
            }
            s.abort();
            let c = self.closing.swap_remove(i);
            self.sockets.remove(c.sock);
            if let Some(p) = c.port {
                self.tcp_ports.remove(&p);
            }
            self.release(c.client, TCP_SOCKET_BYTES);
        }
    }

    /// Give back one socket's share of a client's limits.
    fn release(&mut self, client: u64, bytes: usize) {
        self.total_bytes = self.total_bytes.saturating_sub(bytes);
        if let Some(c) = self.clients.get_mut(&client) {
            c.sockets = c.sockets.saturating_sub(1);
            c.bytes = c.bytes.saturating_sub(bytes);
            if c.sockets == 0 && c.bytes == 0 {
                // Keep the handle counter: handles are never reused.
            }
        }
    }

    /// Take one socket's share of a client's limits, or say which limit is in the way.
    fn reserve(&mut self, client: u64, bytes: usize) -> Result<(), ServiceError> {
        if !self.clients.contains_key(&client) && self.clients.len() >= self.limits.clients {
            return Err(ServiceError::NoMemory);
        }
        if !self.handles_left(client) {
            return Err(ServiceError::NoMemory);
        }
        let c = self.clients.entry(client).or_default();
        if c.sockets >= MAX_SOCKETS || c.bytes + bytes > CLIENT_BUFFER_BYTES {
            return Err(ServiceError::QuotaExceeded);
        }
        if self.total_bytes + bytes > self.limits.total_bytes {
            return Err(ServiceError::NoMemory);
        }
        c.sockets += 1;
        c.bytes += bytes;
        self.total_bytes += bytes;
        Ok(())
    }

    /// The client's next handle. Every path that makes a socket first passes [`Self::reserve`]
    /// or [`Self::handles_left`], which refuse a client whose handles ran out, so this never
    /// wraps.
    fn new_handle(&mut self, client: u64) -> Handle {
        let c = self.clients.entry(client).or_default();
        c.next = c.next.saturating_add(1);
        c.next
    }

    /// Whether the client may still get a new handle (handles are never reused).
    fn handles_left(&self, client: u64) -> bool {
        self.clients.get(&client).is_none_or(|c| c.next < Handle::MAX)
    }

    fn counts(&mut self, client: u64, kind: Kind, up: bool) {
        let c = self.clients.entry(client).or_default();
        let n = if kind == Kind::Udp { &mut c.udp } else { &mut c.tcp };
        *n = if up { n.saturating_add(1) } else { n.saturating_sub(1) };
    }

    /// A free local port for a connection or a UDP socket, owned by `client` from now on.
    fn pick_port(&mut self, client: u64, udp: bool) -> Result<u16, ServiceError> {
        let span = u16::MAX - EPHEMERAL_FIRST + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { EPHEMERAL_FIRST } else { p + 1 };
            let ports = if udp { &mut self.udp_ports } else { &mut self.tcp_ports };
            if let alloc::collections::btree_map::Entry::Vacant(v) = ports.entry(p) {
                v.insert(client);
                return Ok(p);
            }
        }
        Err(ServiceError::NoMemory)
    }

    fn own_address(&self) -> Result<Ipv4Addr, ServiceError> {
        self.iface.ipv4_addr().filter(|a| !a.is_unspecified()).ok_or(ServiceError::NotRunning)
    }

    /// A peer one may send to: a unicast address, port not 0. The interface's own address is
    /// one: such frames take the loopback path (`nic`), to another program of this instance.
    fn check_peer(&self, peer: Endpoint) -> Result<IpEndpoint, ServiceError> {
        let a = Ipv4Addr::from(peer.addr);
        if peer.port == 0 || !usable_unicast(a) {
            return Err(ServiceError::InvalidArgument);
        }
        if let Some(Cidr { addr, prefix }) = self.address() {
            // The subnet's broadcast address.
            let m = mask(prefix);
            if prefix < 31 && u32::from_be_bytes(peer.addr) == (u32::from_be_bytes(addr) & m) | !m {
                return Err(ServiceError::InvalidArgument);
            }
        }
        Ok(IpEndpoint::new(IpAddress::Ipv4(a), peer.port))
    }

    fn new_tcp_socket() -> tcp::Socket<'static> {
        let mut s =
            tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_BUFFER]), tcp::SocketBuffer::new(vec![0; TCP_BUFFER]));
        s.set_timeout(Some(Duration::from_millis(TCP_TIMEOUT_MS)));
        s
    }

    /// Open a TCP connection to `peer` (the SYN leaves at the next poll).
    pub fn tcp_connect(&mut self, client: u64, rules: &NetRules, peer: Endpoint) -> Result<Handle, ServiceError> {
        if !rules.may_connect(peer.addr, peer.port) {
            return Err(ServiceError::Denied);
        }
        let remote = self.check_peer(peer)?;
        self.own_address()?;
        self.reserve(client, TCP_SOCKET_BYTES)?;
        let port = match self.pick_port(client, false) {
            Ok(p) => p,
            Err(e) => {
                self.release(client, TCP_SOCKET_BYTES);
                return Err(e);
            }
        };
        let mut s = Self::new_tcp_socket();
        if s.connect(self.iface.context(), remote, port).is_err() {
            self.tcp_ports.remove(&port);
            self.release(client, TCP_SOCKET_BYTES);
            return Err(ServiceError::InvalidArgument);
        }
        let sock = self.sockets.add(s);
        let h = self.new_handle(client);
        self.table.insert((client, h), Entry::Stream { sock, local_port: port, accepted: false });
        self.counts(client, Kind::TcpStream, true);
        Ok(h)
    }

    /// The rules still allow the stream (its peer for a connection made, its port for one
    /// accepted).
    fn stream_allowed(&self, rules: &NetRules, sock: SocketHandle, local_port: u16, accepted: bool) -> bool {
        if accepted {
            return rules.may_listen(local_port);
        }
        match self.sockets.get::<tcp::Socket>(sock).remote_endpoint() {
            Some(r) => {
                let e = endpoint(r);
                rules.may_connect(e.addr, e.port)
            }
            // Reset or closed: nothing more reaches the peer anyway.
            None => true,
        }
    }

    /// The client's stream `h`, checked against its rules.
    fn stream(&mut self, client: u64, rules: &NetRules, h: Handle) -> Result<&mut tcp::Socket<'static>, ServiceError> {
        let Some(Entry::Stream { sock, local_port, accepted }) = self.table.get(&(client, h)) else {
            return Err(ServiceError::NotFound);
        };
        let (sock, local_port, accepted) = (*sock, *local_port, *accepted);
        if !self.stream_allowed(rules, sock, local_port, accepted) {
            return Err(ServiceError::Denied);
        }
        Ok(self.sockets.get_mut::<tcp::Socket>(sock))
    }

    /// Whether the connection `h` is up: its local endpoint.
    pub fn tcp_connected(&mut self, client: u64, rules: &NetRules, h: Handle) -> Result<Io<Endpoint>, ServiceError> {
        let s = self.stream(client, rules, h)?;
        Ok(match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Io::WouldBlock,
            tcp::State::Closed | tcp::State::TimeWait | tcp::State::Listen => Io::Closed,
            _ => match s.local_endpoint() {
                Some(l) => Io::Ready(endpoint(l)),
                None => Io::Closed,
            },
        })
    }

    /// Listen on `port` with `backlog` connections taken by the stack before they are accepted.
    pub fn tcp_listen(
        &mut self,
        client: u64,
        rules: &NetRules,
        port: u16,
        backlog: u8,
    ) -> Result<Handle, ServiceError> {
        if port == 0 || backlog == 0 || backlog > MAX_BACKLOG {
            return Err(ServiceError::InvalidArgument);
        }
        if !rules.may_listen(port) {
            return Err(ServiceError::Denied);
        }
        if self.tcp_ports.contains_key(&port) {
            return Err(ServiceError::Busy);
        }
        let mut socks = Vec::new();
        for _ in 0..backlog {
            match self.reserve(client, TCP_SOCKET_BYTES) {
                Ok(()) => {
                    let mut s = Self::new_tcp_socket();
                    if s.listen(IpListenEndpoint { addr: None, port }).is_err() {
                        self.release(client, TCP_SOCKET_BYTES);
                        break;
                    }
                    socks.push(self.sockets.add(s));
                }
                Err(e) => {
                    for s in socks {
                        self.sockets.remove(s);
                        self.release(client, TCP_SOCKET_BYTES);
                    }
                    return Err(e);
                }
            }
        }
        let h = self.new_handle(client);
        self.tcp_ports.insert(port, client);
        self.table.insert((client, h), Entry::Listener { port, backlog: socks });
        self.counts(client, Kind::TcpListener, true);
        Ok(h)
    }

    /// A connection that came in on the client's listener `h`.
    pub fn tcp_accept(&mut self, client: u64, rules: &NetRules, h: Handle) -> Result<Io<Accepted>, ServiceError> {
        let Some(Entry::Listener { port, backlog }) = self.table.get_mut(&(client, h)) else {
            return Err(ServiceError::NotFound);
        };
        let port = *port;
        if !rules.may_listen(port) {
            return Err(ServiceError::Denied);
        }
        let mut taken = None;
        for (i, &sock) in backlog.iter().enumerate() {
            let s = self.sockets.get_mut::<tcp::Socket>(sock);
            match s.state() {
                tcp::State::Listen | tcp::State::SynReceived => {}
                // A connection that died before it was accepted: listen again.
                tcp::State::Closed | tcp::State::TimeWait => {
                    s.abort();
                    let _ = s.listen(IpListenEndpoint { addr: None, port });
                }
                _ => {
                    if taken.is_none() {
                        taken = Some(i);
                    }
                }
            }
        }
        let Some(i) = taken else { return Ok(Io::WouldBlock) };
        if !self.handles_left(client) {
            return Err(ServiceError::NoMemory);
        }
        let Some(Entry::Listener { backlog, .. }) = self.table.get_mut(&(client, h)) else {
            return Err(ServiceError::NotFound);
        };
        let sock = backlog.remove(i);
        let peer = self.sockets.get::<tcp::Socket>(sock).remote_endpoint().map(endpoint);
        // The accepted connection keeps its buffers (already counted); a fresh listening socket
        // takes its place in the backlog if the client's limits allow (else the backlog shrinks
        // until a connection of the client's goes).
        let nh = self.new_handle(client);
        self.table.insert((client, nh), Entry::Stream { sock, local_port: port, accepted: true });
        self.counts(client, Kind::TcpStream, true);
        self.refill_backlog(client, h);
        Ok(match peer {
            Some(peer) => Io::Ready(Accepted { handle: nh, peer }),
            None => Io::Ready(Accepted { handle: nh, peer: Endpoint { addr: [0; 4], port: 0 } }),
        })
    }

    /// Top the listener's backlog up to one listening socket at least (within the limits).
    fn refill_backlog(&mut self, client: u64, h: Handle) {
        let Some(Entry::Listener { port, backlog }) = self.table.get(&(client, h)) else { return };
        let port = *port;
        let listening = backlog
            .iter()
            .filter(|&&s| matches!(self.sockets.get::<tcp::Socket>(s).state(), tcp::State::Listen))
            .count();
        if listening > 0 || self.reserve(client, TCP_SOCKET_BYTES).is_err() {
            return;
        }
        let mut s = Self::new_tcp_socket();
        if s.listen(IpListenEndpoint { addr: None, port }).is_err() {
            self.release(client, TCP_SOCKET_BYTES);
            return;
        }
        let sock = self.sockets.add(s);
        if let Some(Entry::Listener { backlog, .. }) = self.table.get_mut(&(client, h)) {
            backlog.push(sock);
        }
    }

    /// Queue up to [`MAX_IO`] bytes on the connection.
    pub fn tcp_send(&mut self, client: u64, rules: &NetRules, h: Handle, data: &[u8]) -> Result<Io<u32>, ServiceError> {
        if data.is_empty() || data.len() > MAX_IO {
            return Err(ServiceError::InvalidArgument);
        }
        let s = self.stream(client, rules, h)?;
        match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => return Ok(Io::WouldBlock),
            _ if !s.may_send() => return Ok(Io::Closed),
            _ => {}
        }
        match s.send_slice(data) {
            Ok(0) => Ok(Io::WouldBlock),
            Ok(n) => Ok(Io::Ready(n as u32)),
            Err(_) => Ok(Io::Closed),
        }
    }

    /// Take up to `max` received bytes.
    pub fn tcp_recv(
        &mut self,
        client: u64,
        rules: &NetRules,
        h: Handle,
        max: u32,
    ) -> Result<Io<Vec<u8>>, ServiceError> {
        if max == 0 || max as usize > MAX_IO {
            return Err(ServiceError::InvalidArgument);
        }
        let s = self.stream(client, rules, h)?;
        if s.can_recv() {
            let mut buf = vec![0u8; max as usize];
            return Ok(match s.recv_slice(&mut buf) {
                Ok(0) => Io::WouldBlock,
                Ok(n) => {
                    buf.truncate(n);
                    Io::Ready(buf)
                }
                Err(_) => Io::Closed,
            });
        }
        Ok(match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => Io::WouldBlock,
            _ if s.may_recv() => Io::WouldBlock,
            _ => Io::Closed,
        })
    }

    /// No more sending on the connection (a FIN after what is queued).
    pub fn tcp_shutdown(&mut self, client: u64, rules: &NetRules, h: Handle) -> Result<(), ServiceError> {
        self.stream(client, rules, h)?.close();
        Ok(())
    }

    /// Close the client's socket `h`: the handle is gone at once. Needs no rules: a client may
    /// always let go.
    pub fn close(&mut self, client: u64, h: Handle) -> Result<(), ServiceError> {
        let entry = self.table.remove(&(client, h)).ok_or(ServiceError::NotFound)?;
        match entry {
            Entry::Listener { port, backlog } => {
                for sock in backlog {
                    let s = self.sockets.get_mut::<tcp::Socket>(sock);
                    if matches!(s.state(), tcp::State::Listen | tcp::State::Closed) {
                        self.sockets.remove(sock);
                        self.release(client, TCP_SOCKET_BYTES);
                    } else {
                        // A connection never accepted: reset it, then let it go like any other.
                        s.abort();
                        self.closing.push(Closing { sock, client, port: None, until_ms: self.now_ms });
                    }
                }
                self.tcp_ports.remove(&port);
                self.counts(client, Kind::TcpListener, false);
            }
            Entry::Stream { sock, local_port, accepted } => {
                self.sockets.get_mut::<tcp::Socket>(sock).close();
                let port = (!accepted).then_some(local_port);
                self.closing.push(Closing { sock, client, port, until_ms: self.now_ms + CLOSE_LINGER_MS });
                self.counts(client, Kind::TcpStream, false);
            }
            Entry::Udp { sock, port, .. } => {
                self.sockets.remove(sock);
                self.udp_ports.remove(&port);
                self.release(client, UDP_SOCKET_BYTES);
                self.counts(client, Kind::Udp, false);
            }
        }
        Ok(())
    }

    /// Close every socket of a client (its program stopped).
    pub fn forget(&mut self, client: u64) {
        let handles: Vec<Handle> = self.table.range((client, 0)..=(client, Handle::MAX)).map(|(k, _)| k.1).collect();
        for h in handles {
            let _ = self.close(client, h);
        }
        // Its connections still saying goodbye are cut short.
        for c in &mut self.closing {
            if c.client == client {
                c.until_ms = 0;
            }
        }
        self.reap();
    }

    /// A UDP socket on `port` (0: a port the stack picks).
    pub fn udp_bind(&mut self, client: u64, rules: &NetRules, port: u16) -> Result<Bound, ServiceError> {
        let picked = port == 0;
        if port != 0 {
            if !rules.may_listen(port) {
                return Err(ServiceError::Denied);
            }
            if self.udp_ports.contains_key(&port) {
                return Err(ServiceError::Busy);
            }
        }
        self.reserve(client, UDP_SOCKET_BYTES)?;
        let port = if port == 0 {
            match self.pick_port(client, true) {
                Ok(p) => p,
                Err(e) => {
                    self.release(client, UDP_SOCKET_BYTES);
                    return Err(e);
                }
            }
        } else {
            self.udp_ports.insert(port, client);
            port
        };
        let buf = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; UDP_PACKETS], vec![0u8; UDP_BUFFER]);
        let mut s = udp::Socket::new(buf(), buf());
        if s.bind(port).is_err() {
            self.udp_ports.remove(&port);
            self.release(client, UDP_SOCKET_BYTES);
            return Err(ServiceError::InvalidArgument);
        }
        let sock = self.sockets.add(s);
        let h = self.new_handle(client);
        self.table.insert((client, h), Entry::Udp { sock, port, picked });
        self.counts(client, Kind::Udp, true);
        Ok(Bound { handle: h, port })
    }

    /// The client's UDP socket `h`, checked against its rules: the socket and whether its port
    /// was picked by the stack.
    fn udp(
        &mut self,
        client: u64,
        rules: &NetRules,
        h: Handle,
    ) -> Result<(&mut udp::Socket<'static>, bool), ServiceError> {
        let Some(Entry::Udp { sock, port, picked }) = self.table.get(&(client, h)) else {
            return Err(ServiceError::NotFound);
        };
        if !*picked && !rules.may_listen(*port) {
            return Err(ServiceError::Denied);
        }
        let (sock, picked) = (*sock, *picked);
        Ok((self.sockets.get_mut::<udp::Socket>(sock), picked))
    }

    /// Queue one datagram to `peer`.
    pub fn udp_send_to(
        &mut self,
        client: u64,
        rules: &NetRules,
        h: Handle,
        peer: Endpoint,
        data: &[u8],
    ) -> Result<Io<()>, ServiceError> {
        if data.len() > MAX_IO {
            return Err(ServiceError::InvalidArgument);
        }
        if !self.table.contains_key(&(client, h)) {
            return Err(ServiceError::NotFound);
        }
        if !rules.may_connect(peer.addr, peer.port) {
            return Err(ServiceError::Denied);
        }
        let remote = self.check_peer(peer)?;
        self.own_address()?;
        let (s, _) = self.udp(client, rules, h)?;
        Ok(match s.send_slice(data, remote) {
            Ok(()) => Io::Ready(()),
            Err(udp::SendError::BufferFull) => Io::WouldBlock,
            Err(udp::SendError::Unaddressable) => return Err(ServiceError::InvalidArgument),
        })
    }

    /// The next datagram for the socket, up to `max` bytes of it.
    pub fn udp_recv_from(
        &mut self,
        client: u64,
        rules: &NetRules,
        h: Handle,
        max: u32,
    ) -> Result<Io<Datagram>, ServiceError> {
        if max == 0 || max as usize > MAX_IO {
            return Err(ServiceError::InvalidArgument);
        }
        let (s, picked) = self.udp(client, rules, h)?;
        loop {
            let Ok((data, meta)) = s.recv() else { return Ok(Io::WouldBlock) };
            let peer = endpoint(meta.endpoint);
            // A socket on a picked port hears only from the peers the client may reach.
            if picked && !rules.may_connect(peer.addr, peer.port) {
                continue;
            }
            let n = data.len().min(max as usize);
            return Ok(Io::Ready(Datagram { peer, data: data[..n].to_vec(), truncated: n < data.len() }));
        }
    }

    /// Whether what a client waits for on socket `h` may have happened (or the socket is gone,
    /// which the client must learn too): the hint behind [`crate::service::NetService::take_ready`].
    pub fn ready(&self, client: u64, h: Handle, want: Want) -> bool {
        let opening = |s: &tcp::Socket| matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived);
        match (self.table.get(&(client, h)), want) {
            (None, _) => true,
            (Some(Entry::Listener { backlog, .. }), Want::Accept) => backlog.iter().any(|&s| {
                !matches!(self.sockets.get::<tcp::Socket>(s).state(), tcp::State::Listen | tcp::State::SynReceived)
            }),
            (Some(Entry::Stream { sock, .. }), w) => {
                let s = self.sockets.get::<tcp::Socket>(*sock);
                match w {
                    Want::Connected => !opening(s),
                    Want::Recv => s.can_recv() || (!opening(s) && !s.may_recv()),
                    Want::Send => s.can_send() || (!opening(s) && !s.may_send()),
                    Want::Accept => true,
                }
            }
            (Some(Entry::Udp { sock, .. }), Want::Recv) => self.sockets.get::<udp::Socket>(*sock).can_recv(),
            (Some(Entry::Udp { sock, .. }), Want::Send) => self.sockets.get::<udp::Socket>(*sock).can_send(),
            // A request of the wrong kind never answered WouldBlock: nothing to wait for.
            _ => true,
        }
    }

    /// The client's sockets from index `first`, at most [`LIST_PAGE`].
    pub fn list(&self, client: u64, first: u32) -> Vec<SocketInfo> {
        let mut out = Vec::new();
        for (&(_, handle), e) in
            self.table.range((client, 0)..=(client, Handle::MAX)).skip(first as usize).take(LIST_PAGE)
        {
            let mut state = [0u8; 12];
            let info = match e {
                Entry::Listener { port, backlog } => {
                    let queued = backlog
                        .iter()
                        .filter(|&&s| !matches!(self.sockets.get::<tcp::Socket>(s).state(), tcp::State::Listen))
                        .count();
                    name(&mut state, "LISTEN");
                    SocketInfo {
                        handle,
                        kind: Kind::TcpListener,
                        local_port: *port,
                        peer: None,
                        state,
                        rx_queued: queued as u32,
                        tx_queued: 0,
                    }
                }
                Entry::Stream { sock, local_port, .. } => {
                    let s = self.sockets.get::<tcp::Socket>(*sock);
                    let mut text = StateText::default();
                    let _ = core::fmt::write(&mut text, format_args!("{}", s.state()));
                    name(&mut state, text.as_str());
                    SocketInfo {
                        handle,
                        kind: Kind::TcpStream,
                        local_port: *local_port,
                        peer: s.remote_endpoint().map(endpoint),
                        state,
                        rx_queued: s.recv_queue() as u32,
                        tx_queued: s.send_queue() as u32,
                    }
                }
                Entry::Udp { sock, port, .. } => {
                    let s = self.sockets.get::<udp::Socket>(*sock);
                    name(&mut state, "UDP");
                    SocketInfo {
                        handle,
                        kind: Kind::Udp,
                        local_port: *port,
                        peer: None,
                        state,
                        rx_queued: s.recv_queue() as u32,
                        tx_queued: s.send_queue() as u32,
                    }
                }
            };
            out.push(info);
        }
        out
    }

    /// The interface and the socket counts: the caller's alone, or every client's (up to
    /// [`STATUS_CLIENTS`]) if `all`.
    pub fn status(&self, client: u64, all: bool) -> Status {
        let mut interface = [0u8; 8];
        name(&mut interface, "eth0");
        let line = |(&id, c): (&u64, &Client)| ClientSockets {
            client: id,
            tcp: c.tcp,
            udp: c.udp,
            buffer_bytes: c.bytes as u32,
        };
        let clients = if all {
            self.clients.iter().filter(|(_, c)| c.sockets > 0).take(STATUS_CLIENTS).map(line).collect()
        } else {
            self.clients.get_key_value(&client).map(line).into_iter().collect()
        };
        let gateway = self.lease.and_then(|l| l.router).or_else(|| self.static_gateway());
        Status {
            interface,
            mac: self.dev.nic.mac(),
            dhcp: self.dhcp.is_some(),
            address: self.address(),
            gateway,
            lease: self.lease,
            rx_frames: self.dev.stats.rx_frames,
            tx_frames: self.dev.stats.tx_frames,
            rx_dropped: self.dev.stats.rx_dropped,
            clients,
        }
    }

    fn static_gateway(&self) -> Option<[u8; 4]> {
        self.gateway
    }

    /// Sockets, buffer bytes and handles of a client (tests, the shell).
    pub fn usage(&self, client: u64) -> (usize, usize) {
        self.clients.get(&client).map(|c| (c.sockets, c.bytes)).unwrap_or((0, 0))
    }

    /// Buffer bytes held by all clients.
    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Connections closed and still saying goodbye.
    pub fn closing(&self) -> usize {
        self.closing.len()
    }

    /// The smoltcp sockets alive (the DHCP client's included).
    pub fn live_sockets(&self) -> usize {
        self.sockets.iter().count()
    }
}

/// A fixed-size name field.
fn name(out: &mut [u8], s: &str) {
    let n = s.len().min(out.len());
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Room to format a TCP state's name.
#[derive(Default)]
struct StateText {
    buf: [u8; 16],
    len: usize,
}

impl StateText {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for StateText {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
