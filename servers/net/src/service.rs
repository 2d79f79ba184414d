//! The `net` service: every request of `ozone_agent_sdk::protocol::net`, on top of a
//! [`Stack`] and a [`Directory`] of the clients' rules.
//!
//! The program runs one loop: it waits for a request or the NIC's interrupt or the time of
//! [`NetService::next_poll`], hands a request to [`NetService::handle`] and answers it at once,
//! and calls [`NetService::poll`] when a frame came or the time is up. No request ever waits:
//! what cannot be done now answers `Io::WouldBlock`, and the client's SDK asks again (see
//! `docs/network.md` for why the server keeps no callers waiting). The service remembers, per
//! client and socket, what it answered `WouldBlock` for; after each poll
//! [`NetService::take_ready`] names the clients whose wait may be over, for the program to signal
//! `NET_SIGNAL` on their notifications (bounded: one entry per socket).
//!
//! Every request asks the directory for the caller's rules first: a caller without rules (no
//! `net` grant, or the grant taken away) is `Denied`, and its sockets are closed. The directory
//! also says which start of the caller's program this is: a new one closes the sockets of the
//! run before (a restarted program gets its ports back). `STATUS` needs
//! no rules; it shows the caller's own socket counts, or every client's to a caller the
//! directory lets see them all.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::net::{Handle, Io, Status, id, method};
use ozone_agent_sdk::rpc::{self, Args, Response};

use crate::nic::Nic;
use crate::rules::NetRules;
use crate::stack::{Stack, Want};

/// Who may do what: the server asks on every request.
pub trait Directory {
    /// The rules of the program with badge `badge` and which start of the program this is
    /// (Studio's `run`); `None` if it may not use the network.
    fn rules(&mut self, badge: u64) -> Option<(NetRules, u32)>;

    /// Whether `badge` may see every program's socket counts in `STATUS` (the shell).
    fn sees_all(&mut self, badge: u64) -> bool {
        let _ = badge;
        false
    }
}

/// The network server: its stack and its directory.
pub struct NetService<N: Nic, D: Directory> {
    stack: Stack<N>,
    dir: D,
    /// Requests answered `WouldBlock`, by client and socket (one per socket: the last).
    waiters: BTreeMap<(u64, Handle), Want>,
    /// Clients one of whose waits may be over, for [`NetService::take_ready`].
    ready: BTreeSet<u64>,
    /// Per client: the run of its program last seen (a new one closes the old run's sockets).
    runs: BTreeMap<u64, u32>,
}

impl<N: Nic, D: Directory> NetService<N, D> {
    pub fn new(stack: Stack<N>, dir: D) -> NetService<N, D> {
        NetService { stack, dir, waiters: BTreeMap::new(), ready: BTreeSet::new(), runs: BTreeMap::new() }
    }

    pub fn stack(&self) -> &Stack<N> {
        &self.stack
    }

    pub fn stack_mut(&mut self) -> &mut Stack<N> {
        &mut self.stack
    }

    pub fn directory_mut(&mut self) -> &mut D {
        &mut self.dir
    }

    /// Frames in, frames out, timers (see [`Stack::poll`]).
    pub fn poll(&mut self, now_ms: u64) -> bool {
        let changed = self.stack.poll(now_ms);
        self.check_waiters();
        changed
    }

    /// The clients to signal [`NET_SIGNAL`](ozone_agent_sdk::protocol::net::NET_SIGNAL) now:
    /// each was answered `WouldBlock` and what it waits for may have happened since. A hint
    /// (the client asks again and may be answered `WouldBlock` again); each client once.
    pub fn take_ready(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.ready).into_iter().collect()
    }

    fn check_waiters(&mut self) {
        let stack = &self.stack;
        let ready = &mut self.ready;
        self.waiters.retain(|&(client, h), want| {
            let done = stack.ready(client, h, *want);
            if done {
                ready.insert(client);
            }
            !done
        });
    }

    /// Remember that `client` waits on `h` if `r` is a `WouldBlock`.
    fn note<T>(&mut self, client: u64, h: Handle, want: Want, r: &Result<Io<T>, ServiceError>) {
        if matches!(r, Ok(Io::WouldBlock)) {
            self.waiters.insert((client, h), want);
        }
    }

    /// Milliseconds until the next poll is due without a frame (see [`Stack::next_poll`]).
    pub fn next_poll(&mut self, now_ms: u64) -> Option<u64> {
        self.stack.next_poll(now_ms)
    }

    /// The program `badge` stopped: its sockets go.
    pub fn forget(&mut self, badge: u64) {
        self.stack.forget(badge);
        self.waiters.retain(|&(c, _), _| c != badge);
        self.ready.remove(&badge);
    }

    /// The status as `caller` may see it.
    pub fn status(&mut self, caller: u64) -> Status {
        let all = self.dir.sees_all(caller);
        self.stack.status(caller, all)
    }

    /// Answer one request of `caller` at `now_ms` (never waits), then let the stack send what
    /// the request queued.
    pub fn handle(&mut self, now_ms: u64, caller: u64, req: &impl Args) -> Response {
        let response = self.dispatch(caller, req);
        self.poll(now_ms);
        response
    }

    fn dispatch(&mut self, caller: u64, req: &impl Args) -> Response {
        if req.method() == id::STATUS {
            return rpc::handle(req, method::STATUS, |()| Ok(self.status(caller)));
        }
        let Some((rules, run)) = self.dir.rules(caller) else {
            // No grant (any more): nothing of the caller's stays open.
            self.forget(caller);
            return Err(ServiceError::Denied);
        };
        // A program started again is not the one that opened its sockets: close them.
        if self.runs.insert(caller, run).is_some_and(|seen| seen != run) {
            self.forget(caller);
        }
        let r = &rules;
        match req.method() {
            id::TCP_CONNECT => rpc::handle(req, method::TCP_CONNECT, |c| self.stack.tcp_connect(caller, r, c.peer)),
            id::TCP_CONNECTED => rpc::handle(req, method::TCP_CONNECTED, |h| {
                let out = self.stack.tcp_connected(caller, r, h);
                self.note(caller, h, Want::Connected, &out);
                out
            }),
            id::TCP_LISTEN => {
                rpc::handle(req, method::TCP_LISTEN, |l| self.stack.tcp_listen(caller, r, l.port, l.backlog))
            }
            id::TCP_ACCEPT => rpc::handle(req, method::TCP_ACCEPT, |h| {
                let out = self.stack.tcp_accept(caller, r, h);
                self.note(caller, h, Want::Accept, &out);
                out
            }),
            id::TCP_SEND => rpc::handle(req, method::TCP_SEND, |m| {
                let out = self.stack.tcp_send(caller, r, m.handle, &m.data);
                self.note(caller, m.handle, Want::Send, &out);
                out
            }),
            id::TCP_RECV => rpc::handle(req, method::TCP_RECV, |m| {
                let out = self.stack.tcp_recv(caller, r, m.handle, m.max);
                self.note(caller, m.handle, Want::Recv, &out);
                out
            }),
            id::TCP_SHUTDOWN => rpc::handle(req, method::TCP_SHUTDOWN, |h| self.stack.tcp_shutdown(caller, r, h)),
            id::CLOSE => rpc::handle(req, method::CLOSE, |h| self.stack.close(caller, h)),
            id::UDP_BIND => rpc::handle(req, method::UDP_BIND, |p| self.stack.udp_bind(caller, r, p)),
            id::UDP_SEND_TO => rpc::handle(req, method::UDP_SEND_TO, |m| {
                let out = self.stack.udp_send_to(caller, r, m.handle, m.peer, &m.data);
                self.note(caller, m.handle, Want::Send, &out);
                out
            }),
            id::UDP_RECV_FROM => rpc::handle(req, method::UDP_RECV_FROM, |m| {
                let out = self.stack.udp_recv_from(caller, r, m.handle, m.max);
                self.note(caller, m.handle, Want::Recv, &out);
                out
            }),
            id::SOCKETS => {
                rpc::handle(req, method::SOCKETS, |first| Ok::<Vec<_>, ServiceError>(self.stack.list(caller, first)))
            }
            _ => Err(ServiceError::UnknownMethod),
        }
    }
}
