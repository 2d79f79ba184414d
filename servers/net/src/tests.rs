//! Host tests of whole servers: two services joined by a [`Link`], clients that keep to their
//! rules and clients that do not, exhaustion, and a fuzzer throwing random and mutated frames at
//! a server with live sockets.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use ozone_agent_sdk::protocol::net::{
    Accepted, Bound, CLIENT_BUFFER_BYTES, Connect, Datagram, Endpoint, Handle, Io, Kind, Listen, MAX_IO, MAX_SOCKETS,
    Recv, Send, SendTo, Status, id, method, name_str,
};
use ozone_agent_sdk::protocol::{Method, ServiceError};
use ozone_agent_sdk::rpc::{self, Args};
use serde::Serialize;
use serde::de::DeserializeOwned;
use smoltcp::wire::{ArpPacket, EthernetFrame, IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use crate::nic::{Impairment, Link, LinkEnd, Nic, NicError};
use crate::rules::{NetRules, PeerRule, PortRange};
use crate::service::{Directory, NetService};
use crate::stack::{IpConfig, Limits, Stack, StackError};

const A_IP: [u8; 4] = [10, 0, 0, 1];
const B_IP: [u8; 4] = [10, 0, 0, 2];

/// A client on server A.
const ALICE: u64 = 7;
/// Two clients on server B.
const BOB: u64 = 1;
const EVE: u64 = 2;
/// A program with no `net` grant.
const NOBODY: u64 = 9;

/// A request as the server's dispatch sees it.
struct Bytes(u64, Vec<u8>);

impl Args for Bytes {
    fn method(&self) -> u64 {
        self.0
    }

    fn payload<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        postcard::from_bytes(&self.1).map_err(|_| ServiceError::BadRequest)
    }
}

/// The rules of every program, changeable while the servers run.
#[derive(Clone, Default)]
struct Dir {
    rules: Rc<RefCell<BTreeMap<u64, NetRules>>>,
    all: Rc<RefCell<BTreeSet<u64>>>,
    /// Which start of each program this is (1 unless a test restarts it).
    runs: Rc<RefCell<BTreeMap<u64, u32>>>,
}

impl Directory for Dir {
    fn rules(&mut self, badge: u64) -> Option<(NetRules, u32)> {
        let run = self.runs.borrow().get(&badge).copied().unwrap_or(1);
        self.rules.borrow().get(&badge).cloned().map(|r| (r, run))
    }

    fn sees_all(&mut self, badge: u64) -> bool {
        self.all.borrow().contains(&badge)
    }
}

impl Dir {
    fn set(&self, badge: u64, listen: &[&str], connect: &[&str]) {
        let r = NetRules::parse(listen.iter().copied(), connect.iter().copied()).unwrap();
        self.rules.borrow_mut().insert(badge, r);
    }
}

/// A NIC that keeps a copy of every frame it sends (the fuzzer's seeds).
struct Tap {
    end: LinkEnd,
    frames: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl Nic for Tap {
    fn mac(&self) -> [u8; 6] {
        self.end.mac()
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError> {
        let mut f = self.frames.borrow_mut();
        if f.len() < 4096 {
            f.push(frame.to_vec());
        }
        self.end.transmit(frame)
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.end.receive(buf)
    }
}

struct World {
    a: NetService<Tap, Dir>,
    b: NetService<LinkEnd, Dir>,
    dir_a: Dir,
    dir_b: Dir,
    sent_by_a: Rc<RefCell<Vec<Vec<u8>>>>,
    now: u64,
}

fn world_with(imp: Impairment, limits: Limits) -> World {
    let (ea, eb) = Link::impaired(imp);
    let sent_by_a = Rc::new(RefCell::new(Vec::new()));
    let tap = Tap { end: ea, frames: sent_by_a.clone() };
    let sa = Stack::new(tap, IpConfig::Static { address: A_IP, prefix: 24, gateway: None }, 11, limits, 0).unwrap();
    let sb =
        Stack::new(eb, IpConfig::Static { address: B_IP, prefix: 24, gateway: Some([10, 0, 0, 254]) }, 22, limits, 0)
            .unwrap();
    let (dir_a, dir_b) = (Dir::default(), Dir::default());
    dir_a.set(ALICE, &["5000-5010"], &["10.0.0.2/32:8000-8100", "10.0.0.2/32:9000-9010"]);
    dir_b.set(BOB, &["8080", "9000-9010"], &["10.0.0.1/32:5000-5010"]);
    dir_b.set(EVE, &["8081"], &[]);
    World {
        a: NetService::new(sa, dir_a.clone()),
        b: NetService::new(sb, dir_b.clone()),
        dir_a,
        dir_b,
        sent_by_a,
        now: 0,
    }
}

fn world() -> World {
    world_with(Impairment::default(), Limits::default())
}

fn call<N: Nic, Req: Serialize, Resp: DeserializeOwned>(
    s: &mut NetService<N, Dir>,
    now: u64,
    caller: u64,
    m: Method<Req, Resp>,
    req: &Req,
) -> Result<Resp, ServiceError> {
    let payload = Bytes(m.id(), postcard::to_allocvec(req).unwrap());
    rpc::answer_of(m, &s.handle(now, caller, &payload))
}

impl World {
    fn pump(&mut self, ms: u64) {
        for _ in 0..ms {
            self.a.poll(self.now);
            self.b.poll(self.now);
            self.now += 1;
        }
    }

    fn on_a<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        who: u64,
        m: Method<Req, Resp>,
        r: &Req,
    ) -> Result<Resp, ServiceError> {
        call(&mut self.a, self.now, who, m, r)
    }

    fn on_b<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        who: u64,
        m: Method<Req, Resp>,
        r: &Req,
    ) -> Result<Resp, ServiceError> {
        call(&mut self.b, self.now, who, m, r)
    }

    /// Ask `f` until it is no longer `WouldBlock` (up to a minute of simulated time).
    fn wait<T>(&mut self, mut f: impl FnMut(&mut World) -> Result<Io<T>, ServiceError>) -> Result<Io<T>, ServiceError> {
        for _ in 0..60_000 {
            match f(self)? {
                Io::WouldBlock => self.pump(1),
                done => return Ok(done),
            }
        }
        Ok(Io::WouldBlock)
    }

    /// Alice (on A) connects to Bob's listener on B: (alice's handle, bob's handle, listener).
    fn connected(&mut self, port: u16) -> (Handle, Handle, Handle) {
        let l = self.on_b(BOB, method::TCP_LISTEN, &Listen { port, backlog: 2 }).unwrap();
        let c = self.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port } }).unwrap();
        let local = self.wait(|w| w.on_a(ALICE, method::TCP_CONNECTED, &c)).unwrap();
        assert!(matches!(local, Io::Ready(Endpoint { addr: A_IP, .. })), "{local:?}");
        let acc = self.wait(|w| w.on_b(BOB, method::TCP_ACCEPT, &l)).unwrap();
        let Io::Ready(Accepted { handle, peer }) = acc else { panic!("{acc:?}") };
        assert_eq!(peer.addr, A_IP);
        (c, handle, l)
    }

    /// Send all of `data` from `who` on `server` (a or b) and have `to` read it on the other.
    fn transfer(&mut self, from_a: bool, h: Handle, to: Handle, data: &[u8]) -> Vec<u8> {
        let (sender, receiver) = if from_a { (ALICE, BOB) } else { (BOB, ALICE) };
        let mut sent = 0;
        let mut got = Vec::new();
        for _ in 0..200_000 {
            if sent < data.len() {
                let chunk = &data[sent..data.len().min(sent + MAX_IO)];
                let req = Send { handle: h, data: chunk.to_vec() };
                let r = if from_a {
                    self.on_a(sender, method::TCP_SEND, &req)
                } else {
                    self.on_b(sender, method::TCP_SEND, &req)
                };
                match r.unwrap() {
                    Io::Ready(n) => sent += n as usize,
                    Io::WouldBlock => {}
                    Io::Closed => panic!("closed while sending"),
                }
            }
            let req = Recv { handle: to, max: MAX_IO as u32 };
            let r = if from_a {
                self.on_b(receiver, method::TCP_RECV, &req)
            } else {
                self.on_a(receiver, method::TCP_RECV, &req)
            };
            match r.unwrap() {
                Io::Ready(d) => got.extend_from_slice(&d),
                Io::WouldBlock => self.pump(1),
                Io::Closed => break,
            }
            if got.len() == data.len() {
                break;
            }
        }
        got
    }
}

fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n).map(|_| crate::splitmix(&mut s) as u8).collect()
}

#[test]
fn tcp_between_two_servers_both_ways_then_close() {
    let mut w = world();
    let (c, s, _) = w.connected(8080);
    let up = pattern(20_000, 1);
    assert_eq!(w.transfer(true, c, s, &up), up);
    let down = pattern(12_345, 2);
    assert_eq!(w.transfer(false, s, c, &down), down);
    // Alice finishes sending: Bob reads the end, and can still answer.
    w.on_a(ALICE, method::TCP_SHUTDOWN, &c).unwrap();
    let eof = w.wait(|w| w.on_b(BOB, method::TCP_RECV, &Recv { handle: s, max: 100 })).unwrap();
    assert_eq!(eof, Io::Closed);
    assert_eq!(w.transfer(false, s, c, b"bye"), b"bye");
    w.on_b(BOB, method::CLOSE, &s).unwrap();
    let eof = w.wait(|w| w.on_a(ALICE, method::TCP_RECV, &Recv { handle: c, max: 100 })).unwrap();
    assert_eq!(eof, Io::Closed);
    w.on_a(ALICE, method::CLOSE, &c).unwrap();
    assert_eq!(w.on_a(ALICE, method::CLOSE, &c), Err(ServiceError::NotFound), "a handle closes once");
    w.pump(100);
    assert_eq!(w.a.stack().closing(), 0, "both ends said goodbye");
    assert_eq!(w.a.stack().usage(ALICE), (0, 0));
    let st = w.b.status(BOB);
    assert_eq!(st.clients.len(), 1);
    assert_eq!((st.clients[0].tcp, st.clients[0].udp), (1, 0), "the listener is left");
}

#[test]
fn tcp_survives_a_lossy_reordering_link() {
    let mut w = world_with(Impairment { loss_per_mille: 50, reorder_per_mille: 100, seed: 99 }, Limits::default());
    let (c, s, _) = w.connected(8080);
    let data = pattern(30_000, 3);
    assert_eq!(w.transfer(true, c, s, &data), data);
    let (sent, lost) = w.a.stack_mut().nic_mut().end.sent_lost();
    assert!(lost > 0 && sent > lost, "the link lost {lost} of {sent}");
}

#[test]
fn a_refused_connection_is_closed() {
    let mut w = world();
    // Nobody listens on 8090 at B: B resets the SYN.
    let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 8090 } }).unwrap();
    assert_eq!(w.wait(|w| w.on_a(ALICE, method::TCP_CONNECTED, &c)).unwrap(), Io::Closed);
    assert_eq!(w.on_a(ALICE, method::TCP_SEND, &Send { handle: c, data: vec![1] }), Ok(Io::Closed));
}

#[test]
fn udp_between_two_servers() {
    let mut w = world();
    let b = w.on_b(BOB, method::UDP_BIND, &9000).unwrap();
    assert_eq!(b.port, 9000);
    let a: Bound = w.on_a(ALICE, method::UDP_BIND, &0).unwrap();
    assert!(a.port >= crate::stack::EPHEMERAL_FIRST);
    let to_b = Endpoint { addr: B_IP, port: 9000 };
    for i in 0..5u8 {
        let r = w.on_a(
            ALICE,
            method::UDP_SEND_TO,
            &SendTo { handle: a.handle, peer: to_b, data: vec![i; 100 + i as usize] },
        );
        assert_eq!(r, Ok(Io::Ready(())));
    }
    // A datagram as long as one request carries, and an empty one.
    w.on_a(ALICE, method::UDP_SEND_TO, &SendTo { handle: a.handle, peer: to_b, data: vec![0xee; MAX_IO] }).unwrap();
    w.on_a(ALICE, method::UDP_SEND_TO, &SendTo { handle: a.handle, peer: to_b, data: vec![] }).unwrap();
    let mut got = Vec::new();
    while got.len() < 7 {
        match w.wait(|w| w.on_b(BOB, method::UDP_RECV_FROM, &Recv { handle: b.handle, max: MAX_IO as u32 })).unwrap() {
            Io::Ready(d) => got.push(d),
            other => panic!("{other:?}"),
        }
    }
    for (i, d) in got.iter().take(5).enumerate() {
        assert_eq!(d.data, vec![i as u8; 100 + i]);
        assert_eq!(d.peer, Endpoint { addr: A_IP, port: a.port });
    }
    assert_eq!(got[5].data.len(), MAX_IO);
    assert!(got[6].data.is_empty());
    // Bob answers; a short read says the rest was cut.
    let back = SendTo { handle: b.handle, peer: got[0].peer, data: vec![0x42; 300] };
    // Bob's rules allow 10.0.0.1 on 5000-5010 only: not Alice's picked port.
    assert_eq!(w.on_b(BOB, method::UDP_SEND_TO, &back), Err(ServiceError::Denied));
    w.dir_b.set(BOB, &["8080", "9000-9010"], &["10.0.0.1/32:*"]);
    assert_eq!(w.on_b(BOB, method::UDP_SEND_TO, &back), Ok(Io::Ready(())));
    let d = w.wait(|w| w.on_a(ALICE, method::UDP_RECV_FROM, &Recv { handle: a.handle, max: 10 })).unwrap();
    assert_eq!(d, Io::Ready(Datagram { peer: to_b, data: vec![0x42; 10], truncated: true }));
}

#[test]
fn a_socket_on_a_picked_port_hears_only_allowed_peers() {
    let mut w = world();
    // Eve may reach nobody; her picked-port socket must not become a listener through the back door.
    let e: Bound = w.on_b(EVE, method::UDP_BIND, &0).unwrap();
    let a: Bound = w.on_a(ALICE, method::UDP_BIND, &5000).unwrap();
    w.dir_a.set(ALICE, &["5000-5010"], &["10.0.0.2/32:*"]);
    let to_eve = Endpoint { addr: B_IP, port: e.port };
    w.on_a(ALICE, method::UDP_SEND_TO, &SendTo { handle: a.handle, peer: to_eve, data: b"psst".to_vec() }).unwrap();
    w.pump(20);
    assert_eq!(w.on_b(EVE, method::UDP_RECV_FROM, &Recv { handle: e.handle, max: 64 }), Ok(Io::WouldBlock));
    // Once Eve may reach Alice's port, she hears from it.
    w.dir_b.set(EVE, &["8081"], &["10.0.0.1/32:5000"]);
    w.on_a(ALICE, method::UDP_SEND_TO, &SendTo { handle: a.handle, peer: to_eve, data: b"hi".to_vec() }).unwrap();
    let d = w.wait(|w| w.on_b(EVE, method::UDP_RECV_FROM, &Recv { handle: e.handle, max: 64 })).unwrap();
    assert!(matches!(d, Io::Ready(Datagram { ref data, .. }) if data == b"hi"), "{d:?}");
}

#[test]
fn clients_outside_their_rules_are_refused() {
    let mut w = world();
    let peer = |addr, port| Connect { peer: Endpoint { addr, port } };
    // A forbidden port at an allowed peer, an allowed port at a forbidden peer.
    assert_eq!(w.on_a(ALICE, method::TCP_CONNECT, &peer(B_IP, 22)), Err(ServiceError::Denied));
    assert_eq!(w.on_a(ALICE, method::TCP_CONNECT, &peer([10, 0, 0, 3], 8080)), Err(ServiceError::Denied));
    assert_eq!(w.on_a(ALICE, method::TCP_CONNECT, &peer(B_IP, 8101)), Err(ServiceError::Denied));
    // Listening and binding outside `listen`.
    assert_eq!(w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 8081, backlog: 1 }), Err(ServiceError::Denied));
    assert_eq!(w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 80, backlog: 1 }), Err(ServiceError::Denied));
    assert_eq!(w.on_b(BOB, method::UDP_BIND, &53), Err(ServiceError::Denied));
    assert_eq!(w.on_b(EVE, method::UDP_BIND, &9000), Err(ServiceError::Denied));
    // Datagrams outside `connect`, from a socket the client may have.
    let u: Bound = w.on_b(EVE, method::UDP_BIND, &0).unwrap();
    let st = SendTo { handle: u.handle, peer: Endpoint { addr: A_IP, port: 5000 }, data: vec![1] };
    assert_eq!(w.on_b(EVE, method::UDP_SEND_TO, &st), Err(ServiceError::Denied));
    // A program without the grant: everything but STATUS is refused.
    assert_eq!(w.on_b(NOBODY, method::UDP_BIND, &0), Err(ServiceError::Denied));
    assert_eq!(w.on_b(NOBODY, method::SOCKETS, &0), Err(ServiceError::Denied));
    assert!(w.on_b(NOBODY, method::STATUS, &()).is_ok());
    // Nothing refused left anything behind.
    assert_eq!(w.b.stack().usage(BOB), (0, 0));
    assert_eq!(w.a.stack().usage(ALICE), (0, 0));
    // Bad arguments: port 0, backlog out of range, unusable peers.
    assert_eq!(w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 8080, backlog: 0 }), Err(ServiceError::InvalidArgument));
    assert_eq!(
        w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 8080, backlog: 200 }),
        Err(ServiceError::InvalidArgument)
    );
    w.dir_a.set(ALICE, &[], &["0.0.0.0/0:*"]);
    // (Its own address, A_IP, is a peer like others: the loopback path.)
    for bad in [[0, 0, 0, 0], [255, 255, 255, 255], [224, 0, 0, 1], [127, 0, 0, 1], [10, 0, 0, 255]] {
        assert_eq!(w.on_a(ALICE, method::TCP_CONNECT, &peer(bad, 80)), Err(ServiceError::InvalidArgument), "{bad:?}");
    }
}

/// A program that stops with sockets open and is started again (Studio's `run` for its id
/// changes) starts with none: its old listener would otherwise keep its port (`Busy` to the
/// program itself) and its old sockets count against its limits for good.
#[test]
fn a_restarted_program_starts_with_no_sockets() {
    let mut w = world();
    let (c, s, l) = w.connected(8080);
    for _ in 0..4 {
        w.on_b(BOB, method::UDP_BIND, &0u16).unwrap();
    }
    let eve = w.on_b(EVE, method::TCP_LISTEN, &Listen { port: 8081, backlog: 1 }).unwrap();
    assert_ne!(w.b.stack().usage(BOB), (0, 0));
    // Bob's program restarts.
    w.dir_b.runs.borrow_mut().insert(BOB, 2);
    let l2 = w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 8080, backlog: 2 });
    assert!(l2.is_ok(), "its port is its own again: {l2:?}");
    for old in [s, l] {
        assert_eq!(w.on_b(BOB, method::CLOSE, &old), Err(ServiceError::NotFound), "the old run's handle {old}");
    }
    assert_eq!(w.b.status(BOB).clients[0].tcp, 1, "only the new listener");
    // Eve's listener is untouched, and Alice's end of the old connection still answers.
    assert_eq!(w.on_b(EVE, method::TCP_ACCEPT, &eve), Ok(Io::WouldBlock));
    w.pump(50);
    assert!(w.on_a(ALICE, method::TCP_RECV, &Recv { handle: c, max: 1 }).is_ok());
}

#[test]
fn rules_taken_away_stop_the_sockets_they_allowed() {
    let mut w = world();
    let (c, s, l) = w.connected(8080);
    // Alice may no longer reach B:8080: her connection is refused at the next use.
    w.dir_a.set(ALICE, &["5000-5010"], &["10.0.0.2/32:9000-9010"]);
    assert_eq!(w.on_a(ALICE, method::TCP_SEND, &Send { handle: c, data: vec![1] }), Err(ServiceError::Denied));
    assert_eq!(w.on_a(ALICE, method::TCP_RECV, &Recv { handle: c, max: 1 }), Err(ServiceError::Denied));
    // Closing needs no rule.
    assert_eq!(w.on_a(ALICE, method::CLOSE, &c), Ok(()));
    // Bob loses port 8080: his listener and the connection it accepted are refused.
    w.dir_b.set(BOB, &["9000"], &[]);
    assert_eq!(w.on_b(BOB, method::TCP_ACCEPT, &l), Err(ServiceError::Denied));
    assert_eq!(w.on_b(BOB, method::TCP_RECV, &Recv { handle: s, max: 1 }), Err(ServiceError::Denied));
    // Bob loses the grant: his sockets go.
    w.dir_b.rules.borrow_mut().remove(&BOB);
    assert_eq!(w.on_b(BOB, method::TCP_ACCEPT, &l), Err(ServiceError::Denied));
    w.pump(50);
    assert_eq!(w.b.stack().usage(BOB), (0, 0));
    assert!(w.b.status(BOB).clients.is_empty() || w.b.status(BOB).clients[0].tcp == 0);
}

#[test]
fn a_client_never_reaches_another_clients_sockets() {
    let mut w = world();
    let (_, s, l) = w.connected(8080);
    let u: Bound = w.on_b(BOB, method::UDP_BIND, &9001).unwrap();
    let mine: Vec<Handle> = vec![s, l, u.handle];
    // Eve guesses every handle Bob has, and more: NotFound, exactly as for handles nobody has.
    for h in (0..20).chain(mine.iter().copied()) {
        assert_eq!(w.on_b(EVE, method::TCP_SEND, &Send { handle: h, data: vec![1] }), Err(ServiceError::NotFound));
        assert_eq!(w.on_b(EVE, method::TCP_RECV, &Recv { handle: h, max: 10 }), Err(ServiceError::NotFound));
        assert_eq!(w.on_b(EVE, method::TCP_ACCEPT, &h), Err(ServiceError::NotFound));
        assert_eq!(w.on_b(EVE, method::TCP_CONNECTED, &h), Err(ServiceError::NotFound));
        assert_eq!(w.on_b(EVE, method::TCP_SHUTDOWN, &h), Err(ServiceError::NotFound));
        assert_eq!(w.on_b(EVE, method::UDP_RECV_FROM, &Recv { handle: h, max: 10 }), Err(ServiceError::NotFound));
        let st = SendTo { handle: h, peer: Endpoint { addr: A_IP, port: 5000 }, data: vec![] };
        assert_eq!(w.on_b(EVE, method::UDP_SEND_TO, &st), Err(ServiceError::NotFound));
        assert_eq!(w.on_b(EVE, method::CLOSE, &h), Err(ServiceError::NotFound));
    }
    assert!(w.on_b(EVE, method::SOCKETS, &0).unwrap().is_empty(), "Eve sees none of Bob's sockets");
    assert_eq!(w.on_b(BOB, method::SOCKETS, &0).unwrap().len(), 3);
    // Nor can she take his ports.
    w.dir_b.set(EVE, &["8080", "9001"], &[]);
    assert_eq!(w.on_b(EVE, method::TCP_LISTEN, &Listen { port: 8080, backlog: 1 }), Err(ServiceError::Busy));
    assert_eq!(w.on_b(EVE, method::UDP_BIND, &9001), Err(ServiceError::Busy));
    // A kind mix-up is NotFound too (a listener is no stream, a stream no UDP socket).
    assert_eq!(w.on_b(BOB, method::TCP_SEND, &Send { handle: l, data: vec![1] }), Err(ServiceError::NotFound));
    assert_eq!(w.on_b(BOB, method::UDP_RECV_FROM, &Recv { handle: s, max: 1 }), Err(ServiceError::NotFound));
    // Bob's connection still works. STATUS shows Eve only her own line, the shell everyone's.
    let c = w.on_a(ALICE, method::SOCKETS, &0).unwrap()[0].handle;
    assert_eq!(w.transfer(true, c, s, b"still here"), b"still here");
    let st: Status = w.on_b(EVE, method::STATUS, &()).unwrap();
    assert!(st.clients.iter().all(|c| c.client == EVE));
    w.dir_b.all.borrow_mut().insert(EVE);
    let st: Status = w.on_b(EVE, method::STATUS, &()).unwrap();
    assert!(st.clients.iter().any(|c| c.client == BOB));
    assert_eq!(name_str(&st.interface), "eth0");
    assert_eq!(st.address.map(|c| c.addr), Some(B_IP));
    assert_eq!(st.gateway, Some([10, 0, 0, 254]));
}

#[test]
fn listeners_accept_only_on_their_own_port_and_backlog_refills() {
    let mut w = world();
    let l = w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 9000, backlog: 1 }).unwrap();
    assert_eq!(w.on_b(BOB, method::TCP_ACCEPT, &l), Ok(Io::WouldBlock));
    // Three connections in a row through a backlog of one: each accept puts a listener back.
    for i in 0..3u8 {
        let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 9000 } }).unwrap();
        assert!(matches!(w.wait(|w| w.on_a(ALICE, method::TCP_CONNECTED, &c)).unwrap(), Io::Ready(_)));
        let Io::Ready(acc) = w.wait(|w| w.on_b(BOB, method::TCP_ACCEPT, &l)).unwrap() else { panic!() };
        assert_eq!(w.transfer(true, c, acc.handle, &[i; 10]), [i; 10]);
        w.on_a(ALICE, method::CLOSE, &c).unwrap();
        w.on_b(BOB, method::CLOSE, &acc.handle).unwrap();
    }
    // A connection to a port nobody listens on is not handed to the listener on 9000.
    let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 9001 } }).unwrap();
    assert_eq!(w.wait(|w| w.on_a(ALICE, method::TCP_CONNECTED, &c)).unwrap(), Io::Closed);
    assert_eq!(w.on_b(BOB, method::TCP_ACCEPT, &l), Ok(Io::WouldBlock));
}

#[test]
fn many_sockets_and_huge_sends_hit_the_limits() {
    let mut w = world();
    w.dir_b.set(EVE, &["1-65535"], &["0.0.0.0/0:*"]);
    // Sockets: at most MAX_SOCKETS, whatever the mix; bytes: at most CLIENT_BUFFER_BYTES.
    let mut handles = Vec::new();
    let refused = loop {
        match w.on_b(EVE, method::UDP_BIND, &0) {
            Ok(b) => handles.push(b.handle),
            Err(e) => break e,
        }
        assert!(handles.len() <= MAX_SOCKETS);
    };
    assert_eq!(refused, ServiceError::QuotaExceeded);
    assert_eq!(handles.len(), MAX_SOCKETS);
    let (n, bytes) = w.b.stack().usage(EVE);
    assert!(n == MAX_SOCKETS && bytes <= CLIENT_BUFFER_BYTES);
    for h in handles.drain(..) {
        w.on_b(EVE, method::CLOSE, &h).unwrap();
    }
    // TCP sockets are bigger: the bytes run out first.
    let refused = loop {
        match w.on_b(EVE, method::TCP_LISTEN, &Listen { port: 20000 + handles.len() as u16, backlog: 4 }) {
            Ok(h) => handles.push(h),
            Err(e) => break e,
        }
    };
    assert_eq!(refused, ServiceError::QuotaExceeded);
    assert!(w.b.stack().usage(EVE).1 <= CLIENT_BUFFER_BYTES);
    // Bob is not affected by Eve's hoarding.
    assert!(w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 8080, backlog: 4 }).is_ok());
    // Huge sends: more than MAX_IO in one request is refused; a full send buffer is WouldBlock,
    // never a bigger buffer.
    let (c, _s, _) = {
        w.dir_b.set(BOB, &["8080", "9000-9010"], &["10.0.0.1/32:5000-5010"]);
        let l = w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 9005, backlog: 1 }).unwrap();
        let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 9005 } }).unwrap();
        w.wait(|w| w.on_a(ALICE, method::TCP_CONNECTED, &c)).unwrap();
        let Io::Ready(acc) = w.wait(|w| w.on_b(BOB, method::TCP_ACCEPT, &l)).unwrap() else { panic!() };
        (c, acc.handle, l)
    };
    let too_big = Send { handle: c, data: vec![0; MAX_IO + 1] };
    assert_eq!(w.on_a(ALICE, method::TCP_SEND, &too_big), Err(ServiceError::InvalidArgument));
    assert_eq!(w.on_a(ALICE, method::TCP_SEND, &Send { handle: c, data: vec![] }), Err(ServiceError::InvalidArgument));
    // Bob never reads: Alice fills her send buffer and Bob's receive buffer, then waits.
    let mut queued = 0usize;
    let mut blocked = 0;
    for _ in 0..1000 {
        match w.on_a(ALICE, method::TCP_SEND, &Send { handle: c, data: vec![7; MAX_IO] }).unwrap() {
            Io::Ready(n) => queued += n as usize,
            Io::WouldBlock => {
                blocked += 1;
                w.pump(5);
            }
            Io::Closed => panic!(),
        }
    }
    assert!(blocked > 0);
    assert!(queued <= 2 * crate::stack::TCP_SOCKET_BYTES, "at most both buffers: {queued}");
    assert_eq!(
        w.on_a(ALICE, method::TCP_RECV, &Recv { handle: c, max: MAX_IO as u32 + 1 }),
        Err(ServiceError::InvalidArgument)
    );
    // Eve going away frees everything she held.
    w.b.forget(EVE);
    assert_eq!(w.b.stack().usage(EVE), (0, 0));
}

#[test]
fn close_and_reopen_churn_does_not_leak() {
    let mut w = world();
    for _ in 0..200 {
        let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 8099 } }).unwrap();
        w.on_a(ALICE, method::CLOSE, &c).unwrap();
        let u: Bound = w.on_a(ALICE, method::UDP_BIND, &0).unwrap();
        w.on_a(ALICE, method::CLOSE, &u.handle).unwrap();
        w.pump(1);
    }
    w.pump(crate::stack::CLOSE_LINGER_MS + 10);
    assert_eq!(w.a.stack().usage(ALICE), (0, 0));
    assert_eq!(w.a.stack().total_bytes(), 0);
    assert_eq!(w.a.stack().live_sockets(), 0);
    // Handles are never reused.
    let u: Bound = w.on_a(ALICE, method::UDP_BIND, &0).unwrap();
    assert!(u.handle > 400);
}

#[test]
fn the_server_wide_limit_holds_against_many_clients() {
    let limits = Limits { total_bytes: 3 * crate::stack::UDP_SOCKET_BYTES, clients: 2 };
    let mut w = world_with(Impairment::default(), limits);
    for c in 100..104 {
        w.dir_b.set(c, &[], &[]);
    }
    assert!(w.on_b(100, method::UDP_BIND, &0).is_ok());
    assert!(w.on_b(100, method::UDP_BIND, &0).is_ok());
    assert!(w.on_b(101, method::UDP_BIND, &0).is_ok());
    assert_eq!(w.on_b(101, method::UDP_BIND, &0), Err(ServiceError::NoMemory));
    assert_eq!(w.on_b(102, method::UDP_BIND, &0), Err(ServiceError::NoMemory), "a third client");
}

#[test]
fn malformed_requests_are_refused() {
    let mut w = world();
    let now = w.now;
    for m in 0..=13u64 {
        let junk = Bytes(m, vec![0xff; 40]);
        let r = w.b.handle(now, BOB, &junk);
        let e = rpc::answer_of(Method::<(), ()>::new(m), &r);
        assert!(matches!(e, Err(ServiceError::BadRequest | ServiceError::UnknownMethod)), "method {m}: {e:?}");
    }
    let r = w.b.handle(now, BOB, &Bytes(63, vec![]));
    assert_eq!(rpc::answer_of(Method::<(), ()>::new(63), &r), Err(ServiceError::UnknownMethod));
    assert_eq!(id::SOCKETS, 12);
}

#[test]
fn bad_configurations_are_errors_not_panics() {
    let cfg = |address, prefix, gateway| IpConfig::Static { address, prefix, gateway };
    let mk = |ip| Stack::new(Link::pair().0, ip, 1, Limits::default(), 0).err();
    assert_eq!(mk(cfg([0, 0, 0, 0], 24, None)), Some(StackError::BadAddress));
    assert_eq!(mk(cfg([224, 0, 0, 1], 24, None)), Some(StackError::BadAddress));
    assert_eq!(mk(cfg([255, 255, 255, 255], 24, None)), Some(StackError::BadAddress));
    assert_eq!(mk(cfg([10, 0, 0, 1], 0, None)), Some(StackError::BadAddress));
    assert_eq!(mk(cfg([10, 0, 0, 1], 33, None)), Some(StackError::BadAddress));
    assert_eq!(mk(cfg([10, 0, 0, 1], 24, Some([10, 0, 1, 1]))), Some(StackError::BadGateway));
    assert_eq!(mk(cfg([10, 0, 0, 1], 24, Some([10, 0, 0, 1]))), Some(StackError::BadGateway));
    struct Multicast;
    impl Nic for Multicast {
        fn mac(&self) -> [u8; 6] {
            [1, 0, 0x5e, 0, 0, 1]
        }
        fn transmit(&mut self, _: &[u8]) -> Result<(), NicError> {
            Ok(())
        }
        fn receive(&mut self, _: &mut [u8]) -> Option<usize> {
            None
        }
    }
    let e = Stack::new(Multicast, cfg([10, 0, 0, 1], 24, None), 1, Limits::default(), 0).err();
    assert_eq!(e, Some(StackError::BadMac));
}

#[test]
fn dhcp_asks_and_nothing_connects_before_a_lease() {
    let (a, b) = Link::pair();
    let stack = Stack::new(a, IpConfig::Dhcp, 5, Limits::default(), 0).unwrap();
    let dir = Dir::default();
    dir.set(ALICE, &["68", "5000"], &["0.0.0.0/0:*"]);
    let mut s = NetService::new(stack, dir);
    s.poll(0);
    s.poll(10);
    let mut buf = [0u8; 1600];
    let mut discover = false;
    let mut b = b;
    while let Some(n) = b.receive(&mut buf) {
        let f = EthernetFrame::new_checked(&buf[..n]).unwrap();
        if let Ok(ip) = Ipv4Packet::new_checked(f.payload())
            && ip.next_header() == IpProtocol::Udp
        {
            let u = UdpPacket::new_checked(ip.payload()).unwrap();
            discover |= u.dst_port() == 67 && u.src_port() == 68;
        }
    }
    assert!(discover, "a DHCP discover went out");
    let st = call(&mut s, 20, ALICE, method::STATUS, &()).unwrap();
    assert!(st.dhcp && st.address.is_none() && st.lease.is_none());
    let r = call(&mut s, 20, ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: [10, 0, 2, 2], port: 80 } });
    assert_eq!(r, Err(ServiceError::NotRunning));
    // The DHCP client's port is the server's.
    assert_eq!(call(&mut s, 20, ALICE, method::UDP_BIND, &68), Err(ServiceError::Busy));
    assert!(call(&mut s, 20, ALICE, method::UDP_BIND, &5000).is_ok());
}

/// What a fuzz frame turned out to be, by how far it parses.
#[derive(Default, Debug)]
struct Reached {
    not_ethernet: u64,
    other_ethertype: u64,
    arp: u64,
    bad_ipv4: u64,
    ipv4_other: u64,
    tcp_bad_checksum: u64,
    tcp: u64,
    udp_bad_checksum: u64,
    udp: u64,
    skipped_spoofs: u64,
}

impl Reached {
    fn classify(&mut self, f: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(f) else {
            self.not_ethernet += 1;
            return;
        };
        match u16::from(eth.ethertype()) {
            0x0806 => {
                self.arp += 1;
                return;
            }
            0x0800 => {}
            _ => {
                self.other_ethertype += 1;
                return;
            }
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            self.bad_ipv4 += 1;
            return;
        };
        if !ip.verify_checksum() {
            self.bad_ipv4 += 1;
            return;
        }
        let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
        match ip.next_header() {
            IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
                Ok(t) if t.verify_checksum(&src, &dst) => self.tcp += 1,
                _ => self.tcp_bad_checksum += 1,
            },
            IpProtocol::Udp => match UdpPacket::new_checked(ip.payload()) {
                Ok(u) if u.verify_checksum(&src, &dst) => self.udp += 1,
                _ => self.udp_bad_checksum += 1,
            },
            _ => self.ipv4_other += 1,
        }
    }
}

/// Mutate a frame: flip bits, overwrite bytes, cut or extend it; then often repair the IPv4 and
/// TCP/UDP checksums so the mutation reaches the layer above.
fn mutate(f: &mut Vec<u8>, rng: &mut u64) {
    let r = crate::splitmix(rng);
    match r % 6 {
        0 => {
            for _ in 0..1 + (r >> 8) % 4 {
                let i = (crate::splitmix(rng) as usize) % f.len().max(1);
                if let Some(b) = f.get_mut(i) {
                    *b ^= 1 << (crate::splitmix(rng) % 8);
                }
            }
        }
        1 => {
            // A field of the headers (Ethernet 14 + IPv4 20 + TCP 20).
            let i = 12 + (crate::splitmix(rng) as usize) % 50;
            if let Some(b) = f.get_mut(i) {
                *b = crate::splitmix(rng) as u8;
            }
        }
        2 => {
            let n = (crate::splitmix(rng) as usize) % (f.len() + 1);
            f.truncate(n);
        }
        3 => {
            let extra = (crate::splitmix(rng) as usize) % 64;
            f.extend((0..extra).map(|_| crate::splitmix(rng) as u8));
        }
        4 => {
            // IPv4 total length, header length, TCP data offset: the lengths parsers trust.
            for i in [16usize, 17, 14, 46] {
                if (crate::splitmix(rng) & 1) == 1
                    && let Some(b) = f.get_mut(i)
                {
                    *b = crate::splitmix(rng) as u8;
                }
            }
        }
        _ => {
            // TCP flags and options area.
            for i in 47..60 {
                if let Some(b) = f.get_mut(i)
                    && crate::splitmix(rng).is_multiple_of(3)
                {
                    *b = crate::splitmix(rng) as u8;
                }
            }
        }
    }
    if !crate::splitmix(rng).is_multiple_of(3) {
        repair_checksums(f);
    }
}

fn repair_checksums(f: &mut [u8]) {
    if f.len() < 14 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let Ok(mut ip) = Ipv4Packet::new_checked(&mut f[14..]) else { return };
    ip.fill_checksum();
    let (src, dst) = (IpAddress::Ipv4(ip.src_addr()), IpAddress::Ipv4(ip.dst_addr()));
    let proto = ip.next_header();
    let payload = ip.payload_mut();
    match proto {
        IpProtocol::Tcp => {
            if let Ok(mut t) = TcpPacket::new_checked(payload) {
                t.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut u) = UdpPacket::new_checked(payload) {
                u.fill_checksum(&src, &dst);
            }
        }
        _ => {}
    }
}

/// Whether a frame would speak for Alice's live sockets (her MAC in ARP, or her live connection's
/// ports): that is the peer itself talking, which no host can tell from a spoof on its wire.
fn spoofs_live(f: &[u8], live_ports: (u16, u16), udp_port: u16) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(f) else { return false };
    if u16::from(eth.ethertype()) == 0x0806 {
        return ArpPacket::new_checked(eth.payload()).is_ok_and(|a| a.source_protocol_addr() == A_IP);
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else { return false };
    match ip.next_header() {
        IpProtocol::Tcp => {
            TcpPacket::new_checked(ip.payload()).is_ok_and(|t| (t.src_port(), t.dst_port()) == live_ports)
        }
        IpProtocol::Udp => UdpPacket::new_checked(ip.payload()).is_ok_and(|u| u.dst_port() == udp_port),
        _ => false,
    }
}

#[test]
fn random_and_mutated_frames_never_crash_the_server_and_live_sockets_keep_working() {
    let mut w = world();
    // Seeds: everything Alice's server sends in a full exchange on other ports (ARP, SYN,
    // data, ACK, FIN, RST, UDP).
    {
        let (c, s, l) = w.connected(8081 - 1);
        assert_eq!(w.transfer(true, c, s, &pattern(3000, 5)), pattern(3000, 5));
        let u: Bound = w.on_a(ALICE, method::UDP_BIND, &0).unwrap();
        let bu: Bound = w.on_b(BOB, method::UDP_BIND, &9002).unwrap();
        let st = SendTo { handle: u.handle, peer: Endpoint { addr: B_IP, port: 9002 }, data: b"seed".to_vec() };
        w.on_a(ALICE, method::UDP_SEND_TO, &st).unwrap();
        w.on_a(ALICE, method::CLOSE, &c).unwrap();
        w.pump(200);
        for h in [s, l, bu.handle] {
            w.on_b(BOB, method::CLOSE, &h).unwrap();
        }
        w.on_a(ALICE, method::CLOSE, &u.handle).unwrap();
        let _ = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 8099 } });
        w.pump(50);
    }
    let seeds: Vec<Vec<u8>> = w.sent_by_a.borrow().clone();
    assert!(seeds.len() > 10, "{} seed frames", seeds.len());
    // The live sockets: a connection Alice → Bob on 9003 and Bob's UDP socket on 9004.
    let (c, s, _l) = w.connected(9003);
    let live_local = match w.on_a(ALICE, method::TCP_CONNECTED, &c).unwrap() {
        Io::Ready(e) => e.port,
        other => panic!("{other:?}"),
    };
    let bu: Bound = w.on_b(BOB, method::UDP_BIND, &9004).unwrap();
    let b_mac = [2, 0, 0, 0, 0, 2];
    let mut rng = 0x5eed_u64;
    let mut reached = Reached::default();
    let iterations = 30_000;
    let before = w.b.stack().stats();
    let mut injected = 0u64;
    for i in 0..iterations {
        let mut f = if i % 4 == 0 {
            // Random: a random length, B's MAC or broadcast, and an IPv4 or ARP type half the time.
            let n = (crate::splitmix(&mut rng) as usize) % 1600;
            let mut f: Vec<u8> = (0..n).map(|_| crate::splitmix(&mut rng) as u8).collect();
            if f.len() >= 14 {
                let dst = if i % 8 == 0 { [0xff; 6] } else { b_mac };
                f[..6].copy_from_slice(&dst);
                match crate::splitmix(&mut rng) % 4 {
                    0 => f[12..14].copy_from_slice(&[0x08, 0x00]),
                    1 => f[12..14].copy_from_slice(&[0x08, 0x06]),
                    _ => {}
                }
                if f.len() >= 34 && f[12..14] == [0x08, 0x00] {
                    f[14] = 0x45;
                    f[30..34].copy_from_slice(&B_IP);
                    repair_checksums(&mut f);
                }
            }
            f
        } else {
            let k = (crate::splitmix(&mut rng) as usize) % seeds.len();
            let mut f = seeds[k].clone();
            mutate(&mut f, &mut rng);
            f
        };
        if spoofs_live(&f, (live_local, 9003), 9004) {
            reached.skipped_spoofs += 1;
            // Change the source port: the frame is still delivered, to a connection that is not there.
            if f.len() > 36 {
                f[34] ^= 0x55;
                repair_checksums(&mut f);
            }
            if spoofs_live(&f, (live_local, 9003), 9004) {
                continue;
            }
        }
        reached.classify(&f);
        w.b.stack_mut().nic_mut().inject(&f);
        injected += 1;
        if i % 16 == 0 {
            w.pump(1);
        }
        // The frames B answers with go to A, which must survive them too.
    }
    w.pump(100);
    let after = w.b.stack().stats();
    let taken = (after.rx_frames - before.rx_frames) + (after.rx_dropped - before.rx_dropped);
    assert!(taken >= injected, "every fuzz frame reached the server: {taken} of {injected}");
    std::println!("fuzz: {iterations} frames into a server with live sockets: {reached:?}");
    assert!(reached.tcp > 1000 && reached.udp > 100 && reached.arp > 1000, "{reached:?}");
    assert!(reached.bad_ipv4 > 100 && reached.not_ethernet > 0);
    // The live sockets still work, both ways.
    let data = pattern(5000, 9);
    assert_eq!(w.transfer(true, c, s, &data), data);
    assert_eq!(w.transfer(false, s, c, b"and back"), b"and back");
    // Drain what the fuzzer delivered to Bob's UDP socket.
    while let Io::Ready(_) =
        w.on_b(BOB, method::UDP_RECV_FROM, &Recv { handle: bu.handle, max: MAX_IO as u32 }).unwrap()
    {}
    w.dir_a.set(ALICE, &["5000-5010"], &["10.0.0.2/32:*"]);
    let a: Bound = w.on_a(ALICE, method::UDP_BIND, &5001).unwrap();
    let st = SendTo { handle: a.handle, peer: Endpoint { addr: B_IP, port: 9004 }, data: b"alive".to_vec() };
    w.on_a(ALICE, method::UDP_SEND_TO, &st).unwrap();
    let d = w.wait(|w| w.on_b(BOB, method::UDP_RECV_FROM, &Recv { handle: bu.handle, max: 64 })).unwrap();
    assert!(matches!(d, Io::Ready(Datagram { ref data, .. }) if data == b"alive"), "{d:?}");
    // New connections are still accepted.
    let (c2, s2, _) = w.connected(9006);
    assert_eq!(w.transfer(true, c2, s2, b"new"), b"new");
    let list = w.on_b(BOB, method::SOCKETS, &0).unwrap();
    assert!(list.iter().any(|i| i.kind == Kind::Udp && i.local_port == 9004));
    let _ = PeerRule::parse("10.0.0.1/32:1").unwrap();
    let _ = PortRange::ALL;
}

/// A DHCP server's answer to `req` (`Offer` or `Ack`), as a whole Ethernet frame.
fn dhcp_reply(req: &smoltcp::wire::DhcpRepr<'_>, kind: smoltcp::wire::DhcpMessageType) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        DhcpPacket, DhcpRepr, EthernetAddress, EthernetProtocol, EthernetRepr, Ipv4Address, Ipv4Repr, UdpRepr,
    };
    let server = Ipv4Address::new(10, 0, 2, 2);
    let dhcp = DhcpRepr {
        message_type: kind,
        transaction_id: req.transaction_id,
        secs: 0,
        client_hardware_address: req.client_hardware_address,
        client_ip: Ipv4Address::UNSPECIFIED,
        your_ip: Ipv4Address::new(10, 0, 2, 15),
        server_ip: server,
        router: Some(server),
        subnet_mask: Some(Ipv4Address::new(255, 255, 255, 0)),
        relay_agent_ip: Ipv4Address::UNSPECIFIED,
        broadcast: false,
        requested_ip: None,
        client_identifier: None,
        server_identifier: Some(server),
        parameter_request_list: None,
        dns_servers: None,
        max_size: None,
        lease_duration: Some(3600),
        renew_duration: None,
        rebind_duration: None,
        additional_options: &[],
    };
    let dhcp_len = dhcp.buffer_len();
    let udp = UdpRepr { src_port: 67, dst_port: 68 };
    let ip = Ipv4Repr {
        src_addr: server,
        dst_addr: Ipv4Address::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: 8 + dhcp_len,
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, 0x99]),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut f = vec![0u8; 14 + 20 + 8 + dhcp_len];
    eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[14..]), &caps);
    let (src, dst) = (IpAddress::Ipv4(server), IpAddress::Ipv4(Ipv4Address::BROADCAST));
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut f[34..]),
        &src,
        &dst,
        dhcp_len,
        |p| dhcp.emit(&mut DhcpPacket::new_unchecked(p)).unwrap(),
        &caps,
    );
    f
}

#[test]
fn dhcp_lease_configures_the_interface_and_is_reported() {
    use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr};
    let (a, mut wire) = Link::pair();
    let stack = Stack::new(a, IpConfig::Dhcp, 5, Limits::default(), 0).unwrap();
    let dir = Dir::default();
    dir.set(ALICE, &[], &["10.0.2.2/32:80"]);
    let mut s = NetService::new(stack, dir);
    let mut buf = [0u8; 1600];
    let mut acked = false;
    for now in 0..5_000u64 {
        s.poll(now);
        while let Some(n) = wire.receive(&mut buf) {
            let Ok(f) = EthernetFrame::new_checked(&buf[..n]) else { continue };
            let Ok(ip) = Ipv4Packet::new_checked(f.payload()) else { continue };
            let Ok(u) = UdpPacket::new_checked(ip.payload()) else { continue };
            if u.dst_port() != 67 {
                continue;
            }
            let p = DhcpPacket::new_checked(u.payload()).unwrap();
            let req = DhcpRepr::parse(&p).unwrap();
            let answer = match req.message_type {
                DhcpMessageType::Discover => DhcpMessageType::Offer,
                DhcpMessageType::Request => {
                    acked = true;
                    DhcpMessageType::Ack
                }
                _ => continue,
            };
            wire.transmit(&dhcp_reply(&req, answer)).unwrap();
        }
        if acked && s.stack().lease().is_some() {
            break;
        }
    }
    let st = call(&mut s, 5_000, ALICE, method::STATUS, &()).unwrap();
    let lease = st.lease.expect("a lease");
    assert_eq!(lease.address.addr, [10, 0, 2, 15]);
    assert_eq!(lease.address.prefix, 24);
    assert_eq!(lease.router, Some([10, 0, 2, 2]));
    assert_eq!(lease.server, [10, 0, 2, 2]);
    assert_eq!(st.address.map(|c| c.addr), Some([10, 0, 2, 15]));
    assert_eq!(st.gateway, Some([10, 0, 2, 2]));
    // With an address, connecting works (the SYN goes out; nobody answers here).
    let c =
        call(&mut s, 5_000, ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: [10, 0, 2, 2], port: 80 } });
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn random_requests_from_hostile_clients_never_break_the_books() {
    let mut w = world();
    for c in [EVE, NOBODY, 3, 4] {
        w.dir_b.set(c, &["1-65535"], &["0.0.0.0/0:*"]);
    }
    w.dir_b.rules.borrow_mut().remove(&NOBODY);
    let mut rng = 0xbad_c0de_u64;
    let mut outcomes = BTreeMap::new();
    for i in 0..20_000u32 {
        let who = [BOB, EVE, NOBODY, 3, 4][(crate::splitmix(&mut rng) % 5) as usize];
        let m = crate::splitmix(&mut rng) % 14;
        // Half well-formed requests with random fields, half random bytes.
        let h = (crate::splitmix(&mut rng) % 24) as u32;
        let port = [0u16, 8080, 9000, 49152, 65535, 1][(crate::splitmix(&mut rng) % 6) as usize];
        let peer = Endpoint { addr: [10, 0, 0, (crate::splitmix(&mut rng) % 4) as u8], port: port.max(1) };
        let len = (crate::splitmix(&mut rng) % 1000) as usize;
        let bytes = if i % 2 == 0 {
            match m {
                id::TCP_CONNECT => postcard::to_allocvec(&Connect { peer }).unwrap(),
                id::TCP_LISTEN => postcard::to_allocvec(&Listen { port, backlog: (h % 6) as u8 }).unwrap(),
                id::TCP_SEND => postcard::to_allocvec(&Send { handle: h, data: vec![1; len] }).unwrap(),
                id::TCP_RECV | id::UDP_RECV_FROM => {
                    postcard::to_allocvec(&Recv { handle: h, max: len as u32 }).unwrap()
                }
                id::UDP_BIND => postcard::to_allocvec(&port).unwrap(),
                id::UDP_SEND_TO => postcard::to_allocvec(&SendTo { handle: h, peer, data: vec![2; len] }).unwrap(),
                id::STATUS => Vec::new(),
                _ => postcard::to_allocvec(&h).unwrap(),
            }
        } else {
            (0..len % 64).map(|_| crate::splitmix(&mut rng) as u8).collect()
        };
        let now = w.now;
        let r = w.b.handle(now, who, &Bytes(m, bytes));
        *outcomes.entry(r.err().map(|e| e as u64)).or_insert(0u32) += 1;
        if i % 8 == 0 {
            w.pump(1);
        }
    }
    std::println!("requests: {outcomes:?}");
    assert!(outcomes.get(&None).copied().unwrap_or(0) > 2000, "{outcomes:?}");
    // The books balance: every client within its limits, the total the sum of the parts.
    let mut sum = 0;
    for c in [BOB, EVE, NOBODY, 3, 4] {
        let (n, bytes) = w.b.stack().usage(c);
        assert!(n <= MAX_SOCKETS && bytes <= CLIENT_BUFFER_BYTES, "client {c}: {n} sockets, {bytes} bytes");
        sum += bytes;
    }
    assert_eq!(w.b.stack().total_bytes(), sum);
    assert_eq!(w.b.stack().usage(NOBODY), (0, 0), "no grant, nothing held");
    // Everyone leaves: nothing is left.
    for c in [BOB, EVE, NOBODY, 3, 4] {
        w.b.forget(c);
    }
    w.pump(10);
    assert_eq!(w.b.stack().total_bytes(), 0);
    assert_eq!(w.b.stack().live_sockets(), 0);
}

/// A TCP SYN from `src:sport` (with a made-up MAC) to B on `dport`.
fn syn(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetAddress, EthernetProtocol, EthernetRepr, Ipv4Address, Ipv4Repr, TcpControl, TcpRepr, TcpSeqNumber,
    };
    let tcp = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 1024,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let (s, d) = (Ipv4Address::from(src), Ipv4Address::from(B_IP));
    let ip = Ipv4Repr {
        src_addr: s,
        dst_addr: d,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0x50, src[3]]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, 2]),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut f = vec![0u8; 14 + 20 + tcp.buffer_len()];
    eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[14..]), &caps);
    tcp.emit(&mut TcpPacket::new_unchecked(&mut f[34..]), &IpAddress::Ipv4(s), &IpAddress::Ipv4(d), &caps);
    f
}

#[test]
fn spoofed_half_open_connections_do_not_kill_a_listener() {
    let mut w = world();
    let l = w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 9000, backlog: 2 }).unwrap();
    // SYNs from addresses nobody answers for (no ARP reply, no ACK): the backlog fills with
    // half-open connections.
    for i in 0..50u8 {
        w.b.stack_mut().nic_mut().inject(&syn([10, 0, 0, 100 + i], 40000 + i as u16, 9000));
        w.pump(1);
    }
    let info = w.on_b(BOB, method::SOCKETS, &0).unwrap();
    assert_eq!((info[0].kind, info[0].rx_queued), (Kind::TcpListener, 2), "both backlog sockets half-open");
    // Bob is not accepting; time passes; the half-open ones time out and listen again.
    w.pump(crate::stack::TCP_TIMEOUT_MS + 5_000);
    assert_eq!(w.on_b(BOB, method::TCP_ACCEPT, &l), Ok(Io::WouldBlock));
    let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 9000 } }).unwrap();
    assert!(matches!(w.wait(|w| w.on_a(ALICE, method::TCP_CONNECTED, &c)).unwrap(), Io::Ready(_)));
    let Io::Ready(acc) = w.wait(|w| w.on_b(BOB, method::TCP_ACCEPT, &l)).unwrap() else { panic!() };
    assert_eq!(w.transfer(true, c, acc.handle, b"through"), b"through");
}

#[test]
fn clients_waiting_are_named_when_their_socket_may_be_ready() {
    let mut w = world();
    let l = w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 8080, backlog: 1 }).unwrap();
    let u: Bound = w.on_b(EVE, method::UDP_BIND, &0).unwrap();
    assert_eq!(w.on_b(BOB, method::TCP_ACCEPT, &l), Ok(Io::WouldBlock));
    assert_eq!(w.on_b(EVE, method::UDP_RECV_FROM, &Recv { handle: u.handle, max: 10 }), Ok(Io::WouldBlock));
    w.pump(5);
    assert!(w.b.take_ready().is_empty(), "nothing happened yet");
    let c = w.on_a(ALICE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 8080 } }).unwrap();
    assert_eq!(w.on_a(ALICE, method::TCP_CONNECTED, &c), Ok(Io::WouldBlock));
    w.pump(20);
    assert_eq!(w.b.take_ready(), vec![BOB], "Bob's connection came; Eve still waits");
    assert_eq!(w.a.take_ready(), vec![ALICE], "Alice's connection is up");
    assert!(w.b.take_ready().is_empty(), "once");
    let Io::Ready(acc) = w.on_b(BOB, method::TCP_ACCEPT, &l).unwrap() else { panic!() };
    assert_eq!(w.on_b(BOB, method::TCP_RECV, &Recv { handle: acc.handle, max: 10 }), Ok(Io::WouldBlock));
    w.on_a(ALICE, method::TCP_SEND, &Send { handle: c, data: b"x".to_vec() }).unwrap();
    w.pump(20);
    assert_eq!(w.b.take_ready(), vec![BOB]);
    // A waiter whose socket goes is woken too (and forgotten).
    w.on_b(EVE, method::CLOSE, &u.handle).unwrap();
    assert_eq!(w.b.take_ready(), vec![EVE]);
}

/// A DHCP stack nobody answers takes a fixed address (the point-to-point link between two
/// instances); once configured, it keeps what it has.
#[test]
fn dhcp_without_a_server_falls_back_to_a_fixed_address() {
    let (ea, _eb) = Link::pair();
    let mut s = Stack::new(ea, IpConfig::Dhcp, 5, Limits::default(), 0).unwrap();
    for t in 0..50 {
        s.poll(t * 100);
    }
    assert_eq!(s.address(), None, "no lease without a server");
    assert_eq!(s.fall_back_to_static([255, 255, 255, 255], 24).err(), Some(StackError::BadAddress));
    assert_eq!(s.fall_back_to_static([10, 0, 3, 1], 0).err(), Some(StackError::BadAddress));
    assert_eq!(s.fall_back_to_static([10, 0, 3, 1], 24), Ok(true));
    assert_eq!(s.address().map(|c| (c.addr, c.prefix)), Some(([10, 0, 3, 1], 24)));
    assert_eq!(s.fall_back_to_static([10, 0, 3, 9], 24), Ok(false), "configured: kept");
    assert_eq!(s.address().map(|c| c.addr), Some([10, 0, 3, 1]));
    let (ea, _eb) = Link::pair();
    let mut fixed =
        Stack::new(ea, IpConfig::Static { address: A_IP, prefix: 24, gateway: None }, 5, Limits::default(), 0).unwrap();
    assert_eq!(fixed.fall_back_to_static([10, 0, 3, 1], 24), Ok(false), "a static stack is not changed");
}

#[test]
fn programs_on_one_server_reach_each_other_at_its_own_address_and_nothing_leaves() {
    let mut w = world();
    // Eve may reach Bob's port on their own server's address; Bob may answer her picked ports.
    w.dir_b.set(EVE, &[], &["10.0.0.2/32:9000-9010"]);
    w.dir_b.set(BOB, &["8080", "9000-9010"], &["10.0.0.2/32:*"]);
    let on_wire_before = w.a.stack().stats().rx_frames;
    // TCP: Eve connects to Bob on 10.0.0.2:9001.
    let l = w.on_b(BOB, method::TCP_LISTEN, &Listen { port: 9001, backlog: 1 }).unwrap();
    let c = w.on_b(EVE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 9001 } }).unwrap();
    let local = w.wait(|w| w.on_b(EVE, method::TCP_CONNECTED, &c)).unwrap();
    assert!(matches!(local, Io::Ready(Endpoint { addr: B_IP, .. })), "{local:?}");
    let Io::Ready(Accepted { handle: h, peer }) = w.wait(|w| w.on_b(BOB, method::TCP_ACCEPT, &l)).unwrap() else {
        panic!("no connection")
    };
    assert_eq!(peer.addr, B_IP);
    let data = pattern(20_000, 5);
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..200_000 {
        if sent < data.len() {
            let chunk = data[sent..data.len().min(sent + MAX_IO)].to_vec();
            if let Io::Ready(n) = w.on_b(EVE, method::TCP_SEND, &Send { handle: c, data: chunk }).unwrap() {
                sent += n as usize;
            }
        }
        match w.on_b(BOB, method::TCP_RECV, &Recv { handle: h, max: MAX_IO as u32 }).unwrap() {
            Io::Ready(d) => got.extend_from_slice(&d),
            Io::WouldBlock => w.pump(1),
            Io::Closed => break,
        }
        if got.len() == data.len() {
            break;
        }
    }
    assert_eq!(got, data);
    // UDP both ways.
    let b = w.on_b(BOB, method::UDP_BIND, &9005).unwrap();
    let e: Bound = w.on_b(EVE, method::UDP_BIND, &0).unwrap();
    let to_bob = Endpoint { addr: B_IP, port: 9005 };
    w.on_b(EVE, method::UDP_SEND_TO, &SendTo { handle: e.handle, peer: to_bob, data: b"ping".to_vec() }).unwrap();
    let d = w.wait(|w| w.on_b(BOB, method::UDP_RECV_FROM, &Recv { handle: b.handle, max: 64 })).unwrap();
    let Io::Ready(Datagram { peer, data, .. }) = d else { panic!("{d:?}") };
    assert_eq!((peer, data.as_slice()), (Endpoint { addr: B_IP, port: e.port }, &b"ping"[..]));
    w.on_b(BOB, method::UDP_SEND_TO, &SendTo { handle: b.handle, peer, data: b"pong".to_vec() }).unwrap();
    let d = w.wait(|w| w.on_b(EVE, method::UDP_RECV_FROM, &Recv { handle: e.handle, max: 64 })).unwrap();
    assert!(matches!(d, Io::Ready(Datagram { ref data, .. }) if data == b"pong"), "{d:?}");
    // Nothing of it went on the wire to A, and B counted it as looped.
    assert_eq!(w.a.stack().stats().rx_frames, on_wire_before);
    assert!(w.b.stack().stats().looped > 20);
    // The rules still hold on the loopback path: Eve may not reach Bob's 8080.
    let r = w.on_b(EVE, method::TCP_CONNECT, &Connect { peer: Endpoint { addr: B_IP, port: 8080 } });
    assert_eq!(r, Err(ServiceError::Denied));
}

#[test]
fn frames_to_itself_are_recognised_and_others_are_not() {
    use crate::nic::to_itself;
    let mac = [2, 0, 0, 0, 0, 1];
    let mut unicast = vec![0u8; 60];
    unicast[0..6].copy_from_slice(&mac);
    assert!(to_itself(&unicast, mac));
    unicast[5] = 2;
    assert!(!to_itself(&unicast, mac));
    // An ARP request from us for our own address, and one for another's.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&mac);
    arp.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    assert!(to_itself(&arp, mac));
    let mut other = arp.clone();
    other[41] = 3;
    assert!(!to_itself(&other, mac));
    // Someone else's request for our address is theirs, not ours to loop.
    let mut theirs = arp.clone();
    theirs[22] = 9;
    assert!(!to_itself(&theirs, mac));
    assert!(!to_itself(&arp[..20], mac));
    assert!(!to_itself(&[], mac));
}
