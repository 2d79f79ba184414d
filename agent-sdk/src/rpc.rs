//! Requests and replies over kernel IPC with postcard messages (the wire format is in
//! [`crate::protocol`]): [`Client`] for calling a server, [`Server`] for serving one.

use serde::Serialize;
use serde::de::DeserializeOwned;

use ozone_abi::MessageInfo;

use crate::error::{AgentError, Result};
use crate::kernel::ipc_buffer;
use crate::protocol::start::slot;
use crate::protocol::{self, MAX_PAYLOAD, Permutation, ServiceError, studio};
use crate::sys::{self, Msg, Received};

const WORDS: usize = MAX_PAYLOAD / 8;

/// Put an encoded payload into a message: the first four words in registers, the rest in the
/// IPC buffer.
fn message(label: u64, words: &[u64]) -> Msg {
    let mut mrs = [0u64; 4];
    for (m, w) in mrs.iter_mut().zip(words) {
        *m = *w;
    }
    if words.len() > 4 {
        let buf = ipc_buffer();
        buf.msg[4..words.len()].copy_from_slice(&words[4..]);
    }
    Msg { info: MessageInfo::new(label, 0, 0, words.len() as u64), mrs }
}

/// Decode the payload of a received message.
fn payload<T: DeserializeOwned>(r: &Received) -> core::result::Result<T, ServiceError> {
    let n = (r.msg.info.length() as usize).min(WORDS);
    if n <= 4 {
        return protocol::decode(&r.msg.mrs[..n]);
    }
    let mut words = [0u64; WORDS];
    words[..4].copy_from_slice(&r.msg.mrs);
    words[4..n].copy_from_slice(&ipc_buffer().msg[4..n]);
    protocol::decode(&words[..n])
}

/// Encode `value` and build the message.
fn encoded<T: Serialize>(label: u64, value: &T) -> core::result::Result<Msg, ServiceError> {
    let mut words = [0u64; WORDS];
    let n = protocol::encode(value, &mut words)?;
    Ok(message(label, &words[..n]))
}

/// A connection to a server: an endpoint capability and the interface's method numbering.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    ep: u64,
    perm: Permutation,
}

impl Client {
    /// A client of `interface` through the endpoint in slot `ep`.
    pub fn new(ep: u64, interface: &str) -> Client {
        Client::with_key(ep, interface, crate::start::protocol_key())
    }

    /// A client numbering methods with an explicit protocol key (for programs Studio did not
    /// start, which must be told the key).
    pub fn with_key(ep: u64, interface: &str, key: u64) -> Client {
        Client { ep, perm: Permutation::new(key, interface) }
    }

    /// Studio (every program Studio starts has it in slot 1).
    pub fn studio() -> Client {
        Client::new(slot::STUDIO, studio::INTERFACE)
    }

    /// Ask Studio for `interface` by name: Studio puts a badged capability to its server in this
    /// program's CNode, if the system description (or a later grant) allows it.
    pub fn lookup(interface: &str) -> Result<Client> {
        let req = studio::Lookup { interface: interface.into() };
        let slot: u64 = Client::studio().call(studio::method::LOOKUP, &req)?;
        Ok(Client::new(slot, interface))
    }

    /// The capability slot this client calls.
    pub fn slot(&self) -> u64 {
        self.ep
    }

    /// Call `method` with `req` and decode the response.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(&self, method: u64, req: &Req) -> Result<Resp> {
        let msg = encoded(self.perm.label(method), req)?;
        let r = sys::call(self.ep, msg)?;
        match r.msg.info.label() {
            0 => payload(&r).map_err(|_| AgentError::BadReply),
            l => Err(ServiceError::from_label(l).map_or(AgentError::BadReply, AgentError::Service)),
        }
    }
}

/// A request a server received.
pub struct Request {
    /// The badge of the client's capability (Studio makes it the client's program id).
    pub badge: u64,
    /// The method number (after undoing the per-instance numbering).
    pub method: u64,
    msg: Received,
}

impl Request {
    /// Decode the request's payload.
    pub fn decode<T: DeserializeOwned>(&self) -> core::result::Result<T, ServiceError> {
        payload(&self.msg)
    }

    /// The raw message (label, words), for servers that take kernel messages too.
    pub fn raw(&self) -> &Received {
        &self.msg
    }
}

/// What a server's handler answers.
pub type Response = core::result::Result<Msg, ServiceError>;

/// A successful response carrying `value`.
pub fn ok<T: Serialize>(value: &T) -> Response {
    encoded(0, value)
}

/// Decides whether a client may call a method (the syscall shaper's profiles plug in here).
pub type Guard = fn(badge: u64, method: u64) -> bool;

/// A server's receive loop over one endpoint.
pub struct Server {
    ep: u64,
    perm: Permutation,
    guard: Option<Guard>,
}

impl Server {
    /// A server of `interface` receiving on the endpoint in slot `ep`.
    pub fn new(ep: u64, interface: &str) -> Server {
        Server::with_key(ep, interface, crate::start::protocol_key())
    }

    /// A server numbering methods with an explicit protocol key (Studio, which makes the key).
    pub fn with_key(ep: u64, interface: &str, key: u64) -> Server {
        Server { ep, perm: Permutation::new(key, interface), guard: None }
    }

    /// Check every request with `guard` first; refused requests are answered `Denied`.
    pub fn set_guard(&mut self, guard: Guard) {
        self.guard = Some(guard);
    }

    /// The wire label of `method` (for tests and tools).
    pub fn label(&self, method: u64) -> u64 {
        self.perm.label(method)
    }

    /// Serve forever: decode each request's method, check it, hand it to `handler`, reply.
    /// Messages whose label is no method of the interface (on this instance) are answered
    /// `UnknownMethod`.
    pub fn serve(&mut self, mut handler: impl FnMut(&Request) -> Response) -> ! {
        self.serve_raw(|incoming| match incoming {
            Incoming::Request(r) => Some(handler(r)),
            Incoming::Other(_) => Some(Err(ServiceError::UnknownMethod)),
        })
    }

    /// Like [`serve`](Self::serve), but messages that are no method (kernel fault messages,
    /// notification signals) reach `handler` as [`Incoming::Other`], and the handler may answer
    /// `None` to send no reply.
    pub fn serve_raw(&mut self, mut handler: impl FnMut(Incoming<'_>) -> Option<Response>) -> ! {
        let mut reply: Option<Msg> = None;
        loop {
            let received = match reply.take() {
                Some(m) => sys::reply_recv(self.ep, m),
                None => sys::recv(self.ep),
            };
            let Ok(msg) = received else { continue };
            let answer = match self.perm.method(msg.msg.info.label()) {
                Some(method) if self.guard.is_some_and(|g| !g(msg.badge, method)) => Some(Err(ServiceError::Denied)),
                Some(method) => handler(Incoming::Request(&Request { badge: msg.badge, method, msg })),
                None => handler(Incoming::Other(&msg)),
            };
            reply = answer.map(|a| a.unwrap_or_else(|e| Msg::new(e as u64, &[])));
        }
    }
}

/// What a [`Server::serve_raw`] loop received.
pub enum Incoming<'a> {
    /// A request for a method of the interface.
    Request(&'a Request),
    /// Anything else: a kernel fault message, a notification signal, a malformed label.
    Other(&'a Received),
}
