//! Requests and replies over kernel IPC with postcard messages (the wire format is in
//! [`crate::protocol`]): [`Client`] for calling a server, [`Server`] for serving one.
//!
//! Every [`Server`] enforces its clients' method profiles ([`Profiles`], the server half of the
//! syscall shaper, see [`crate::protocol::shaper`]): per client badge the methods used and
//! allowed, learning until the shaper says otherwise. The shaper never calls a server: Studio
//! signals [`CONTROL_SIGNAL`] on the server's notification, and the server pulls the shaper's
//! requests ([`Server`] does it between requests; see [`crate::protocol::shaper::CONTROL_SIGNAL`]).

use core::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use ozone_abi::MessageInfo;

use crate::error::{AgentError, Result};
use crate::kernel::ipc_buffer;
#[cfg(test)]
use crate::protocol::LABEL_BASE;
use crate::protocol::shaper::{self as shaper_proto, Applied, CONTROL_SIGNAL, Control, MethodProfile, Pull};
use crate::protocol::start::slot;
use crate::protocol::{self, Encodes, MAX_PAYLOAD, Method, Permutation, ServiceError, studio};
use crate::sys::{self, Msg, Received};

const WORDS: usize = MAX_PAYLOAD / 8;

/// Put an encoded payload of `len` bytes into a message: the first four words in registers, the
/// rest in the IPC buffer; the label carries the padding ([`protocol::PAD_SHIFT`]).
fn message(label: u64, words: &[u64], len: usize) -> Msg {
    let n = len.div_ceil(8);
    let mut mrs = [0u64; 4];
    for (m, w) in mrs.iter_mut().zip(&words[..n]) {
        *m = *w;
    }
    if n > 4 {
        let buf = ipc_buffer();
        buf.msg[4..n].copy_from_slice(&words[4..n]);
    }
    Msg { info: MessageInfo::new(protocol::label_with_len(label, len), 0, 0, n as u64), mrs }
}

/// A received message's label proper (a method's wire label, or a reply's status) and its
/// payload's exact length: `None` if the label is no label of this wire format.
#[inline(always)]
fn label_of(r: &Received) -> Option<(u64, usize)> {
    protocol::split_label(r.msg.info.label(), (r.msg.info.length() as usize).min(WORDS))
}

/// Decode the payload of a received message: exactly its length, nothing more nor less.
#[inline(always)]
fn payload<T: DeserializeOwned>(r: &Received) -> core::result::Result<T, ServiceError> {
    let (_, len) = label_of(r).ok_or(ServiceError::BadRequest)?;
    payload_of(r, len)
}

/// Decode the `len`-byte payload of a received message (its length from [`label_of`]).
#[inline(always)]
fn payload_of<T: DeserializeOwned>(r: &Received, len: usize) -> core::result::Result<T, ServiceError> {
    if len <= 32 {
        return protocol::decode_small(&r.msg.mrs, len);
    }
    let n = len.div_ceil(8);
    let mut words = [0u64; WORDS];
    words[..4].copy_from_slice(&r.msg.mrs);
    words[4..n].copy_from_slice(&ipc_buffer().msg[4..n]);
    protocol::decode(&words[..n], len)
}

/// Encode `value` and build the message: straight into the message registers when it fits
/// there, else through a full-size buffer into registers and the IPC buffer.
#[inline(always)]
pub(crate) fn encoded<T: Serialize + ?Sized>(label: u64, value: &T) -> core::result::Result<Msg, ServiceError> {
    if let Some((mrs, len)) = protocol::encode_small(value) {
        let info = MessageInfo::new(protocol::label_with_len(label, len), 0, 0, len.div_ceil(8) as u64);
        return Ok(Msg { info, mrs });
    }
    let mut words = [0u64; WORDS];
    let len = protocol::encode(value, &mut words)?;
    Ok(message(label, &words, len))
}

/// A connection to a server: an endpoint capability, the interface's method numbering, and the
/// interface's name (to look it up again: [`reconnect`](Client::reconnect)).
///
/// A server that stops (killed, exited, faulted) takes every capability to it with it: Studio
/// revokes them, so a call made then, or waiting for the server when it stopped, fails with
/// [`AgentError::ServerGone`] instead of waiting. A restarted server is a new incarnation with
/// none of the old one's state, reached only through a new lookup.
#[derive(Clone, Copy, Debug)]
pub struct Client {
    ep: u64,
    perm: Permutation,
    name: Name,
}

impl Client {
    /// A client of `interface` through the endpoint in slot `ep`.
    pub fn new(ep: u64, interface: &str) -> Client {
        Client::with_key(ep, interface, crate::start::protocol_key())
    }

    /// A client numbering methods with an explicit protocol key (for programs Studio did not
    /// start, which must be told the key).
    pub fn with_key(ep: u64, interface: &str, key: u64) -> Client {
        Client { ep, perm: Permutation::new(key, interface), name: Name::new(interface) }
    }

    /// Studio (every program Studio starts has it in slot 1).
    pub fn studio() -> Client {
        Client::new(slot::STUDIO, studio::INTERFACE)
    }

    /// Ask Studio for `interface` by name: Studio puts a badged capability to its server in this
    /// program's CNode, if the system description (or a later grant) allows it. Refused with
    /// `Denied` if it does not, `NotFound` for an interface nobody provides, `NotRunning` while
    /// its server is not running; asked again while the capability is held, the same slot.
    pub fn lookup(interface: &str) -> Result<Client> {
        let req = studio::Lookup { interface: interface.into() };
        let slot = Client::studio().call(studio::method::LOOKUP, &req)?;
        Ok(Client::new(slot, interface))
    }

    /// [`Client::lookup`] once per program: the slot is kept in `cache` (0: not looked up yet)
    /// and reused by later calls. For the SDK's modules that talk to one server (the timer,
    /// the network).
    pub(crate) fn lookup_cached(cache: &core::sync::atomic::AtomicU64, interface: &str) -> Result<Client> {
        use core::sync::atomic::Ordering;
        let slot = cache.load(Ordering::Relaxed);
        if slot != 0 {
            return Ok(Client::new(slot, interface));
        }
        let c = Client::lookup(interface)?;
        cache.store(c.slot(), Ordering::Relaxed);
        Ok(c)
    }

    /// Look this client's interface up again (after [`AgentError::ServerGone`]): on success the
    /// client calls the server's current incarnation. While the server is not running Studio
    /// answers [`ServiceError::NotRunning`] and the client is left as it was.
    pub fn reconnect(&mut self) -> Result<()> {
        let fresh = Client::lookup(self.name.as_str())?;
        self.ep = fresh.ep;
        Ok(())
    }

    /// The interface this client calls.
    pub fn interface(&self) -> &str {
        self.name.as_str()
    }

    /// The capability slot this client calls.
    pub fn slot(&self) -> u64 {
        self.ep
    }

    /// Call `method` with `req` and decode the response as the method's answer type.
    ///
    /// `req` is the method's request type or one encoded exactly as it ([`Encodes`]: a `&str`
    /// for a `String`). A reply that does not decode as `Resp` is [`AgentError::BadReply`].
    #[inline]
    pub fn call<Req, Resp, Q>(&self, method: Method<Req, Resp>, req: &Q) -> Result<Resp>
    where
        Resp: DeserializeOwned,
        Q: Encodes<Req> + ?Sized,
    {
        let msg = encoded(self.wire_label(method.id())?, req)?;
        let r = sys::call(self.ep, msg).map_err(gone)?;
        self.answer(&r)
    }

    /// What a reply to a call says: the answer, or the refusal.
    #[inline(always)]
    pub(crate) fn answer<Resp: DeserializeOwned>(&self, r: &Received) -> Result<Resp> {
        match label_of(r) {
            Some((0, len)) => payload_of(r, len).map_err(|_| AgentError::BadReply),
            Some((l, 0)) => Err(ServiceError::from_label(l).map_or(AgentError::BadReply, AgentError::Service)),
            _ => Err(AgentError::BadReply),
        }
    }

    /// Send `method` with `req` one way, without waiting (NBSend): the message is lost if the
    /// server is not waiting for one at that moment, and nothing comes back.
    pub fn send_nb<Req, Resp, Q>(&self, method: Method<Req, Resp>, req: &Q) -> Result<()>
    where
        Q: Encodes<Req> + ?Sized,
    {
        let msg = encoded(self.wire_label(method.id())?, req)?;
        sys::nb_send(self.ep, msg).map_err(gone)
    }

    /// The wire label of method `id`: `UnknownMethod` (before anything is sent) for a number
    /// no method has, which a [`Method`] made outside `methods!` can carry.
    #[inline(always)]
    pub(crate) fn wire_label(&self, id: u64) -> Result<u64> {
        self.perm.label(id).ok_or(AgentError::Service(ServiceError::UnknownMethod))
    }
}

/// A kernel error of a Call or Send to a server: [`AgentError::ServerGone`] if it means the
/// server is gone ([`crate::error::server_gone`]).
#[cold]
pub(crate) fn gone(e: ozone_abi::Error) -> AgentError {
    if crate::error::server_gone(e) { AgentError::ServerGone } else { AgentError::Kernel(e) }
}

/// A request a server received.
pub struct Request {
    /// The badge of the client's capability (Studio makes it the client's program id).
    pub badge: u64,
    /// The method number (after undoing the per-instance numbering).
    pub method: u64,
    /// The payload's length in bytes, as the label says (`None`: the label is no label of the
    /// wire format), worked out once by the server loop as it found the method.
    len: Option<usize>,
    msg: Received,
}

impl Request {
    /// A request of `method` from `badge` in `msg` (as the server loop makes them; for tests of
    /// handlers).
    pub fn new(badge: u64, method: u64, msg: Received) -> Request {
        Request { badge, method, len: label_of(&msg).map(|(_, len)| len), msg }
    }

    /// The raw message (label, words), for servers that take kernel messages too.
    pub fn raw(&self) -> &Received {
        &self.msg
    }
}

impl Args for Request {
    #[inline]
    fn method(&self) -> u64 {
        self.method
    }

    #[inline]
    fn payload<T: DeserializeOwned>(&self) -> core::result::Result<T, ServiceError> {
        payload_of(&self.msg, self.len.ok_or(ServiceError::BadRequest)?)
    }
}

/// A request as a handler sees it: its method number and its payload.
///
/// Handlers decode with [`decode_for`](Args::decode_for), naming the method whose arm they are
/// in: that checks the request is for that method, decodes the method's request type, and hands
/// back the only way to answer it with a value ([`Reply`], of the method's answer type). So a
/// server cannot decode a request as another method's type, nor answer one method with another's
/// type, without the compiler or the check noticing.
pub trait Args {
    /// The method number (after undoing the per-instance numbering).
    fn method(&self) -> u64;

    /// The payload decoded as `T`, whatever the method: the raw path, for implementations of
    /// this trait and for messages that belong to no method. Handlers use
    /// [`decode_for`](Args::decode_for).
    fn payload<T: DeserializeOwned>(&self) -> core::result::Result<T, ServiceError>;

    /// Decode the request of `method`, and the means to answer it. `UnknownMethod` if the request
    /// is for another method (a handler asking for the wrong method in an arm), `BadRequest` if
    /// the payload is no `Req`.
    #[inline]
    fn decode_for<Req: DeserializeOwned, Resp>(
        &self,
        method: Method<Req, Resp>,
    ) -> core::result::Result<(Req, Reply<Resp>), ServiceError> {
        if self.method() != method.id() {
            return Err(ServiceError::UnknownMethod);
        }
        Ok((self.payload()?, Reply { types: PhantomData }))
    }
}

/// What a server's handler answers.
pub type Response = core::result::Result<Msg, ServiceError>;

/// The right to answer one request, of one method, with a value of the method's answer type:
/// [`Args::decode_for`] gives it, nothing else makes one. (Refusals need none: any handler may
/// answer `Err(ServiceError)`.)
#[must_use = "a request is answered through its Reply"]
pub struct Reply<Resp> {
    types: PhantomData<fn(Resp)>,
}

impl<Resp: Serialize> Reply<Resp> {
    /// The successful answer carrying `value` (the answer type, or one encoded exactly as it).
    #[inline]
    pub fn ok<Q: Encodes<Resp> + ?Sized>(self, value: &Q) -> Response {
        encoded(0, value)
    }

    /// The answer of `result`: the value, or the refusal.
    #[inline]
    pub fn with<Q: Encodes<Resp>>(self, result: core::result::Result<Q, ServiceError>) -> Response {
        self.ok(&result?)
    }
}

impl<Resp> core::fmt::Debug for Reply<Resp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Reply")
    }
}

/// What a client of `method` gets from `response` (the decoding [`Client::call`] does with a
/// reply): for tests of servers on the host, which take a handler's response without IPC. A
/// payload that is no `Resp` is `BadRequest`.
pub fn answer_of<Req, Resp: DeserializeOwned>(
    method: Method<Req, Resp>,
    response: &Response,
) -> core::result::Result<Resp, ServiceError> {
    let _ = method;
    let r = Received { badge: 0, msg: (*response)? };
    match label_of(&r) {
        Some((0, _)) => payload(&r),
        Some((l, 0)) => Err(ServiceError::from_label(l).unwrap_or(ServiceError::BadRequest)),
        _ => Err(ServiceError::BadRequest),
    }
}

/// Answer `request` as `method`: decode its request, run `handler`, encode what it answers (the
/// one-line form of [`Args::decode_for`] and [`Reply::with`]).
#[inline]
pub fn handle<Req, Resp, Q>(
    request: &impl Args,
    method: Method<Req, Resp>,
    handler: impl FnOnce(Req) -> core::result::Result<Q, ServiceError>,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Q: Encodes<Resp>,
{
    let (req, reply) = request.decode_for(method)?;
    reply.with(handler(req))
}

/// Decides whether a client may call a method (checked after the client's method profile).
pub type Guard = fn(badge: u64, method: u64) -> bool;

/// How many client badges a server keeps method profiles for: program ids `1..=PROFILED_BADGES`
/// (Studio badges every capability to a server with the client's id). Requests with other
/// badges are not profiled.
pub const PROFILED_BADGES: usize = protocol::system::MAX_PROGRAMS;

/// A name kept without the heap (for reports).
#[derive(Clone, Copy, Debug)]
struct Name {
    bytes: [u8; protocol::system::MAX_NAME],
    len: u8,
}

impl Name {
    const EMPTY: Name = Name { bytes: [0; protocol::system::MAX_NAME], len: 0 };

    /// `s`, cut at a character boundary to fit.
    fn new(s: &str) -> Name {
        let mut n = s.len().min(protocol::system::MAX_NAME);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        let mut name = Name::EMPTY;
        name.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        name.len = n as u8;
        name
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

/// One client's method profile.
#[derive(Clone, Copy, Debug)]
struct ClientProfile {
    /// Methods called (denied calls included).
    used: u64,
    /// Methods allowed: all ones while learning, so the check is the same in both modes.
    allowed: u64,
    /// Methods whose denial has been reported (once each).
    reported: u64,
    denied: u32,
    enforcing: bool,
    /// The client's name, as the shaper gave it (for reports).
    name: Name,
    /// Requests of the client's checked: what refills its refusal budget ([`Refusals`]). Kept
    /// when the profile learns again. (64 bits: no client makes 2⁶⁴ requests, so the count
    /// never comes back to where a budget was drained.)
    messages: u64,
}

impl ClientProfile {
    const LEARNING: ClientProfile = ClientProfile {
        used: 0,
        allowed: u64::MAX,
        reported: 0,
        denied: 0,
        enforcing: false,
        name: Name::EMPTY,
        messages: 0,
    };

    fn summary(&self) -> MethodProfile {
        MethodProfile { used: self.used, allowed: self.allowed, enforcing: self.enforcing, denied: self.denied }
    }

    fn enforce(&mut self, allowed: u64, name: &str) {
        self.allowed = allowed;
        self.enforcing = true;
        self.reported = 0;
        self.denied = 0;
        self.name = Name::new(name);
    }
}

/// What [`Profiles::check`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Outside the client's profile; `report` is set the first time for this client and method.
    Deny {
        report: bool,
    },
}

/// The method profiles of a server's clients (see [`crate::protocol::shaper`]): per client badge a
/// `used` and an `allowed` mask and a mode. Learning records and allows; enforcing denies every
/// method outside `allowed`. Only the shaper changes them: its requests are pulled from it
/// ([`Server`]) and carried out with [`Profiles::apply`].
#[derive(Clone, Debug)]
pub struct Profiles {
    clients: [ClientProfile; PROFILED_BADGES],
}

impl Default for Profiles {
    fn default() -> Profiles {
        Profiles::new()
    }
}

impl Profiles {
    /// Every client learning.
    pub const fn new() -> Profiles {
        Profiles { clients: [ClientProfile::LEARNING; PROFILED_BADGES] }
    }

    /// The check on every request: record `method` as used by `badge`, and allow it if the
    /// profile does. One index and two bit operations on the allowed path.
    #[inline]
    pub fn check(&mut self, badge: u64, method: u64) -> Verdict {
        // Badge 0 wraps to an index past the end: not profiled, as every badge beyond the table.
        let Some(c) = self.clients.get_mut(badge.wrapping_sub(1) as usize) else { return Verdict::Allow };
        let bit = 1u64 << (method & 63);
        c.used |= bit;
        c.messages = c.messages.wrapping_add(1);
        if c.allowed & bit != 0 {
            return Verdict::Allow;
        }
        c.denied = c.denied.saturating_add(1);
        let report = c.reported & bit == 0;
        c.reported |= bit;
        Verdict::Deny { report }
    }

    /// Carry out a [`Control`] request of the shaper's. `InvalidArgument` for a badge no
    /// profile is kept for.
    pub fn apply(&mut self, req: &Control) -> core::result::Result<MethodProfile, ServiceError> {
        let badge = req.badge();
        let c = self.clients.get_mut(badge.wrapping_sub(1) as usize).ok_or(ServiceError::InvalidArgument)?;
        match req {
            Control::Get { .. } => {}
            Control::Enforce { name, .. } => c.enforce(c.used, name),
            Control::Set { allowed, name, .. } => c.enforce(*allowed, name),
            Control::Learn { .. } => *c = ClientProfile { messages: c.messages, ..ClientProfile::LEARNING },
        }
        Ok(c.summary())
    }

    /// The profile of `badge`, if it is one kept.
    pub fn get(&self, badge: u64) -> Option<MethodProfile> {
        self.clients.get(badge.wrapping_sub(1) as usize).map(ClientProfile::summary)
    }

    /// How many requests of `badge` were checked (0 for a badge no profile is kept for).
    fn messages(&self, badge: u64) -> u64 {
        self.clients.get(badge.wrapping_sub(1) as usize).map_or(0, |c| c.messages)
    }

    /// The name the controller gave `badge` (empty if none).
    pub fn client_name(&self, badge: u64) -> &str {
        self.clients.get(badge.wrapping_sub(1) as usize).map_or("", |c| c.name.as_str())
    }
}

/// A line of text built without the heap.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The text a server reports to Studio when it first denies `method` to a client.
fn denial_text(out: &mut impl core::fmt::Write, interface: &str, method: u64, badge: u64, client: &str) {
    let _ = if client.is_empty() {
        write!(out, "shaper: denied method {method} of `{interface}` to program {badge}")
    } else {
        write!(out, "shaper: denied method {method} of `{interface}` to {client}")
    };
}

/// A server's receive loop over one endpoint.
///
/// Every request is checked against the client's method profile ([`Profiles`]) before it reaches
/// the handler. A denied request is answered `Denied`, and its first denial per client and method
/// is reported to Studio (`studio::method::REPORT`; Studio never calls servers, so this cannot
/// deadlock).
///
/// **Profile control.** A signal with [`CONTROL_SIGNAL`] on the server's notification means the
/// shaper has requests for it: the server pulls them from the shaper (`shaper::method::PULL`,
/// through [`slot::SHAPER`]), at most [`MAX_PULLS`] in a row, carries each out on its
/// [`Profiles`] and sends back the outcome with the next pull; the signal bit is taken off
/// before the rest of the signal (if any) is handed on. The shaper answers at once and calls no
/// server, so a pull waits only while the shaper is not running. A program that serves several
/// interfaces with several `Server`s pulls for the one whose receive took the signal.
pub struct Server {
    ep: u64,
    perm: Permutation,
    guard: Option<Guard>,
    profiles: Profiles,
    interface: Name,
    /// Report denials to Studio (only programs Studio started can).
    reports: bool,
    /// Refusals told to Studio as its clients' events ([`studio::method::REFUSED`]).
    refusals: core::cell::RefCell<Refusals>,
    /// The badge and wire label of the message [`poll`](Self::poll) or [`wait`](Self::wait)
    /// returned last, for [`answer`](Self::answer)'s refusal.
    last: core::cell::Cell<(u64, u64, bool)>,
}

/// The budget of refusals a [`Server`] tells Studio about ([`studio::method::REFUSED`]), per
/// client: each refusal told takes one of the client's [`REFUSAL_CREDIT`], and every
/// [`REFUSAL_REFILL`] of its requests checked (its method profile's count,
/// [`Profiles::check`]) or refused without reaching a method (a label of the server's block that
/// is no method's, of no interface, with bad padding: counted here) give one back. A client that sends nothing but bad requests thus costs
/// the server one call to Studio for the first [`REFUSAL_CREDIT`] of them and then one for every
/// [`REFUSAL_REFILL`] — a flood is seen by the kernel's own records anyway — and takes nothing
/// from another client's budget: the budget is for the rare, slow refusals that nothing else
/// shows. A `Denied` from Studio before it ever took a report (the program lacks the `clients`
/// privilege) turns reporting off for good; after one was taken, a `Denied` is about that client
/// (no longer one: revoked, say), and changes nothing else.
///
/// Nothing here runs for a request that is answered: the refill is worked out from the
/// profile's count when a refusal comes (the count is one add in the check every request
/// passes), so an ordinary answer costs the server no more than the test that it is none.
#[derive(Clone, Debug)]
struct Refusals {
    on: bool,
    /// Studio has taken a report of this server's.
    accepted: bool,
    /// Per client (badge − 1): refusals it may still have told, its request count (checked
    /// requests and `unchecked`) when its credit was last refilled, and its refused requests
    /// that reached no method (which the profile does not count).
    credit: [u8; PROFILED_BADGES],
    counted: [u64; PROFILED_BADGES],
    unchecked: [u64; PROFILED_BADGES],
}

impl Refusals {
    const FULL: Refusals = Refusals {
        on: true,
        accepted: false,
        credit: [REFUSAL_CREDIT; PROFILED_BADGES],
        counted: [0; PROFILED_BADGES],
        unchecked: [0; PROFILED_BADGES],
    };

    /// Client `badge`, of whose requests `messages` have been checked, was refused one (which
    /// was `checked`, or reached no method): whether to tell Studio of it (never for a badge
    /// that is no client's).
    fn take(&mut self, badge: u64, messages: u64, checked: bool) -> bool {
        let at = badge.wrapping_sub(1) as usize;
        if !self.on || at >= PROFILED_BADGES {
            return false;
        }
        if !checked {
            self.unchecked[at] += 1;
        }
        let total = messages + self.unchecked[at];
        // (A count below the last refill's: the server replaced its profiles. Start again from
        // it, earning nothing now.)
        let earned = total.saturating_sub(self.counted[at]) / u64::from(REFUSAL_REFILL);
        if total < self.counted[at] {
            self.counted[at] = total;
        } else if earned > 0 {
            self.counted[at] += earned * u64::from(REFUSAL_REFILL);
            self.credit[at] = (u64::from(self.credit[at]) + earned).min(u64::from(REFUSAL_CREDIT)) as u8;
        }
        if self.credit[at] == 0 {
            return false;
        }
        self.credit[at] -= 1;
        true
    }

    /// What Studio answered a report: whether reporting goes on.
    fn told(&mut self, answer: core::result::Result<(), AgentError>) {
        match answer {
            Ok(()) => self.accepted = true,
            Err(AgentError::Service(ServiceError::Denied | ServiceError::UnknownMethod)) if !self.accepted => {
                self.on = false
            }
            Err(_) => {}
        }
    }
}

/// Refusals a server may tell Studio about in a row, per client.
pub const REFUSAL_CREDIT: u8 = 32;
/// A client's requests (checked, or refused without reaching a method) that give it one
/// refusal report back.
pub const REFUSAL_REFILL: u8 = 8;

/// The most profile-control requests a server takes from the shaper on one signal (the shaper
/// keeps fewer than this per interface, so a well-behaved shaper is always drained).
pub const MAX_PULLS: usize = 256;

/// What [`Server::poll`] or [`Server::wait`] found.
pub enum Polled {
    /// No message was waiting.
    Nothing,
    /// A message the server answered itself (a denial, a profile-control request).
    Answered,
    /// A request for the caller to handle and [`answer`](Server::answer).
    Request(Request),
    /// Anything else (a notification signal, a kernel message): answer it or not.
    Other(Received),
}

impl Server {
    /// A server of `interface` receiving on the endpoint in slot `ep`.
    pub fn new(ep: u64, interface: &str) -> Server {
        Server::with_key(ep, interface, crate::start::protocol_key())
    }

    /// The server of `interface` in a program Studio started: on the endpoint of the slot where
    /// the system description's `provides` puts it ([`slot::service`]). The name is checked
    /// against the description here, once: a server whose code and description disagree on the
    /// interface's name stops with [`AgentError::NotProvided`] at start, rather than answering
    /// every call "unknown method".
    ///
    /// `interface` is the protocol's `INTERFACE` constant, the one its clients look up.
    pub fn provided(interface: &str) -> Result<Server> {
        let info = crate::start::info().ok_or(AgentError::NotStarted)?;
        let k = info.service_index(interface).ok_or(AgentError::NotProvided)?;
        Ok(Server::new(slot::service(k as u64), interface))
    }

    /// A server numbering methods with an explicit protocol key (Studio, which makes the key).
    pub fn with_key(ep: u64, interface: &str, key: u64) -> Server {
        let info = crate::start::info();
        Server {
            ep,
            perm: Permutation::new(key, interface),
            guard: None,
            profiles: Profiles::new(),
            interface: Name::new(interface),
            reports: info.is_some(),
            refusals: core::cell::RefCell::new(Refusals { on: info.is_some(), ..Refusals::FULL }),
            last: core::cell::Cell::new((0, 0, false)),
        }
    }

    /// Check every request with `guard` too; refused requests are answered `Denied`.
    pub fn set_guard(&mut self, guard: Guard) {
        self.guard = Some(guard);
    }

    /// The clients' method profiles.
    pub fn profiles(&self) -> &Profiles {
        &self.profiles
    }

    /// The clients' method profiles, to change directly (the shaper's own interface; tests).
    pub fn profiles_mut(&mut self) -> &mut Profiles {
        &mut self.profiles
    }

    /// Report denials and refusals to Studio or not (on by default for programs Studio started).
    pub fn set_reports(&mut self, on: bool) {
        self.reports = on && crate::start::info().is_some();
        self.refusals.borrow_mut().on = self.reports;
    }

    /// The wire label of `method` (for tests and tools); `None` above the method numbers.
    pub fn label(&self, method: u64) -> Option<u64> {
        self.perm.label(method)
    }

    /// Serve forever: decode each request's method, check it, hand it to `handler`, reply.
    /// Messages whose label is no method of the interface (on this instance) are answered
    /// `UnknownMethod`.
    pub fn serve(&mut self, mut handler: impl FnMut(&Request) -> Response) -> ! {
        self.serve_raw(|incoming| match incoming {
            Incoming::Request(r) => Some(handler(r)),
            Incoming::Refused(..) => None,
            Incoming::Other(_) => Some(Err(ServiceError::UnknownMethod)),
        })
    }

    /// Like [`serve`](Self::serve), but messages that are no method (kernel fault messages,
    /// notification signals) reach `handler` as [`Incoming::Other`], and the handler may answer
    /// `None` to send no reply.
    pub fn serve_raw(&mut self, mut handler: impl FnMut(Incoming<'_>) -> Option<Response>) -> ! {
        let mut reply: Option<Msg> = None;
        loop {
            // The common case first: nothing stashed, one ReplyRecv.
            let received = match (reply.take(), crate::signals::pending() == 0) {
                (Some(m), true) => sys::reply_recv(self.ep, m),
                (None, true) => sys::recv(self.ep),
                (reply, false) => match stashed_signals() {
                    Some(signals) => match reply {
                        Some(m) => sys::reply(m).map(|()| signals),
                        None => Ok(signals),
                    },
                    // Only timer bits were stashed (not the server's).
                    None => match reply {
                        Some(m) => sys::reply_recv(self.ep, m),
                        None => sys::recv(self.ep),
                    },
                },
            };
            let Ok(mut msg) = received else { continue };
            if !self.take_control_signal(&mut msg) {
                continue;
            }
            // The whole badge (with the client's run) for the refusal report; the program id
            // for everything else.
            let (badge, label) = (msg.badge, msg.msg.info.label());
            msg.badge = studio::program_of(badge);
            let found = label_of(&msg).and_then(|(l, len)| Some((self.perm.method(l)?, len)));
            let checked = found.is_some();
            let answer = match found {
                Some((method, len)) => {
                    let request = Request { badge: msg.badge, method, len: Some(len), msg };
                    match self.admit(request.badge, method) {
                        Some(answer) => {
                            // The handler is told (a server may keep its own record of who
                            // asked for what); the answer is the method profile's.
                            let _ = handler(Incoming::Refused(&request, &answer));
                            Some(answer)
                        }
                        None => handler(Incoming::Request(&request)),
                    }
                }
                None => handler(Incoming::Other(&msg)),
            };
            self.answered(badge, label, checked, answer.as_ref());
            reply = answer.map(reply_message);
        }
    }

    /// Take one message if one is waiting (NBRecv), for servers that do other work between
    /// requests. Denials and profile control are answered here; a [`Polled::Request`] is the
    /// caller's to answer with [`answer`](Self::answer) before it polls again.
    pub fn poll(&mut self) -> Polled {
        if let Some(signals) = stashed_signals() {
            return self.classify(signals);
        }
        let Ok(msg) = sys::nb_recv(self.ep) else { return Polled::Nothing };
        // Every client's badge is its program id (never 0); NBRecv returns badge 0 and an empty
        // message when nothing was there.
        if msg.badge == 0 && msg.msg.info.0 == 0 {
            return Polled::Nothing;
        }
        self.classify(msg)
    }

    /// Wait for the next message (Recv): as [`poll`](Self::poll), but blocking, for servers
    /// whose handler needs the server itself (its [`Profiles`]). [`Polled::Nothing`] only if the
    /// receive failed.
    pub fn wait(&mut self) -> Polled {
        if let Some(signals) = stashed_signals() {
            return self.classify(signals);
        }
        match sys::recv(self.ep) {
            Ok(msg) => self.classify(msg),
            Err(_) => Polled::Nothing,
        }
    }

    /// [`answer`](Self::answer) the last message and [`wait`](Self::wait) for the next, in one
    /// system call (ReplyRecv, as [`serve_raw`](Self::serve_raw) does).
    pub fn answer_and_wait(&mut self, response: Option<Response>) -> Polled {
        let (badge, label, checked) = self.last.replace((0, 0, false));
        self.answered(badge, label, checked, response.as_ref());
        let received = match (response, stashed_signals()) {
            (Some(r), Some(signals)) => sys::reply(reply_message(r)).map(|()| signals),
            (None, Some(signals)) => Ok(signals),
            (Some(r), None) => sys::reply_recv(self.ep, reply_message(r)),
            (None, None) => sys::recv(self.ep),
        };
        match received {
            Ok(msg) => self.classify(msg),
            Err(_) => Polled::Nothing,
        }
    }

    /// Answer what the server answers itself; hand on the rest.
    fn classify(&mut self, mut msg: Received) -> Polled {
        if !self.take_control_signal(&mut msg) {
            return Polled::Answered;
        }
        let found = label_of(&msg).and_then(|(l, len)| Some((self.perm.method(l)?, len)));
        self.last.set((msg.badge, msg.msg.info.label(), found.is_some()));
        msg.badge = studio::program_of(msg.badge);
        match found {
            Some((method, len)) => match self.admit(msg.badge, method) {
                Some(answer) => {
                    self.answer(Some(answer));
                    Polled::Answered
                }
                None => Polled::Request(Request { badge: msg.badge, method, len: Some(len), msg }),
            },
            None => Polled::Other(msg),
        }
    }

    /// Answer the message [`poll`](Self::poll) or [`wait`](Self::wait) returned last (`None`:
    /// no answer).
    pub fn answer(&self, response: Option<Response>) {
        let (badge, label, checked) = self.last.replace((0, 0, false));
        self.answered(badge, label, checked, response.as_ref());
        if let Some(r) = response {
            let _ = sys::reply(reply_message(r));
        }
    }

    /// The server answers (or not) the message of client `badge` whose wire label was `label`:
    /// a refusal is told to Studio, within the budget ([`Refusals`]), before the reply goes.
    /// Only clients' messages count (Studio badges each client's capability with its program
    /// id, from 1, and its run): a signal's badge is no program's. An answer that is no refusal costs the
    /// test that it is none.
    /// `checked`: the message reached the method profile's check (its label named a method).
    #[inline(always)]
    fn answered(&self, badge: u64, label: u64, checked: bool, response: Option<&Response>) {
        if let Some(Err(e @ (ServiceError::Denied | ServiceError::UnknownMethod | ServiceError::BadRequest))) = response
        {
            self.refused(badge, label, checked, *e);
        }
    }

    /// Client `badge`'s message (the whole badge: its program id and run,
    /// [`studio::client_badge`]) with wire label `label` was refused with `code`: tell Studio,
    /// within the program's budget, naming the run. A refusal of a label of another interface's block is not told (Studio
    /// takes a server's word only about its own labels and labels of no interface,
    /// `protocol::block_of`), nor does it spend the client's budget: else a client could empty
    /// its budget with requests to no method of the server's, and have its real bad requests go
    /// untold.
    #[cold]
    #[inline(never)]
    fn refused(&self, badge: u64, label: u64, checked: bool, code: ServiceError) {
        let block = protocol::block_of(protocol::wire_label(label));
        if block != 0 && block != self.perm.block() {
            return;
        }
        let id = studio::program_of(badge);
        let mut b = self.refusals.borrow_mut();
        if b.take(id, self.profiles.messages(id), checked) {
            b.told(report_refusal(badge, label, code));
        }
    }

    /// If `msg` is a signal carrying [`CONTROL_SIGNAL`], pull the shaper's requests and take the
    /// bit off. Whether anything is left to hand on (a client's message, other signal bits).
    ///
    /// Clients' badges are program ids, far below the bit, and a badge is the kernel's, never
    /// the sender's: no client can make its message look like the signal.
    #[inline]
    fn take_control_signal(&mut self, msg: &mut Received) -> bool {
        if msg.badge & CONTROL_SIGNAL == 0 {
            return true;
        }
        self.pull_control();
        msg.badge &= !CONTROL_SIGNAL;
        msg.badge != 0 || msg.msg.info.0 != 0
    }

    /// Take the shaper's profile-control requests for this interface and carry them out.
    #[cold]
    fn pull_control(&mut self) {
        let shaper = Client::new(slot::SHAPER, shaper_proto::INTERFACE);
        let mut done: Option<Applied> = None;
        for _ in 0..MAX_PULLS {
            let pull = Pull { interface: alloc::string::String::from(self.interface.as_str()), done: done.take() };
            match shaper.call(shaper_proto::method::PULL, &pull) {
                Ok(Some(req)) => done = Some(self.apply_control(&req)),
                // No more, or no shaper to pull from (no capability in the slot, or it refused).
                _ => return,
            }
        }
    }

    /// Carry out one of the shaper's requests: its outcome for the next pull.
    pub fn apply_control(&mut self, req: &Control) -> Applied {
        Applied { badge: req.badge(), profile: self.profiles.apply(req).ok() }
    }

    /// What the server answers before the handler sees a request: denials (the client's method
    /// profile, then the guard). `None`: hand it to the handler.
    #[inline]
    fn admit(&mut self, badge: u64, method: u64) -> Option<Response> {
        if let Verdict::Deny { report } = self.profiles.check(badge, method) {
            if report && self.reports {
                self.report_denial(badge, method);
            }
            return Some(Err(ServiceError::Denied));
        }
        if self.guard.is_some_and(|g| !g(badge, method)) {
            return Some(Err(ServiceError::Denied));
        }
        None
    }

    /// Tell Studio about a denial (best effort: a failed report changes nothing).
    #[cold]
    fn report_denial(&self, badge: u64, method: u64) {
        let mut line = Line { buf: [0; 160], len: 0 };
        denial_text(&mut line, self.interface.as_str(), method, badge, self.profiles.client_name(badge));
        let text = core::str::from_utf8(&line.buf[..line.len]).unwrap_or("shaper: denied a method");
        let _ = Client::studio().call(studio::method::REPORT, text);
    }
}

/// Tell Studio that client `client`'s request with wire label `label` was refused with `code`;
/// Studio's answer.
#[cold]
fn report_refusal(client: u64, label: u64, code: ServiceError) -> core::result::Result<(), AgentError> {
    Client::studio().call(studio::method::REFUSED, &studio::Refused { client, label, code: code as u16 })
}

/// Signal bits another wait of this program took for the server's receive ([`crate::signals`]:
/// e.g. a `timer::sleep` in a handler), as the receive would have delivered them: an empty
/// message with the bits as its badge. `TIMER_SIGNAL` stays for the timer's own waits.
#[inline]
fn stashed_signals() -> Option<Received> {
    let bits = crate::signals::take(!crate::protocol::timer::TIMER_SIGNAL);
    (bits != 0).then(|| Received { badge: bits, msg: Msg::default() })
}

/// The reply message of a response.
fn reply_message(r: Response) -> Msg {
    r.unwrap_or_else(|e| Msg::new(e as u64, &[]))
}

/// What a [`Server::serve_raw`] loop received.
pub enum Incoming<'a> {
    /// A request for a method of the interface.
    Request(&'a Request),
    /// A request the method profile refused: the server answers it with the answer given; what
    /// the handler returns for it is ignored.
    Refused(&'a Request, &'a Response),
    /// Anything else: a kernel fault message, a notification signal, a malformed label.
    Other(&'a Received),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget of refusals told to Studio, per client: the first [`REFUSAL_CREDIT`] in a
    /// row, then one for every [`REFUSAL_REFILL`] messages; ordinary answers refill it; one
    /// client's flood takes nothing from another's; badges of no client are never told; a
    /// `Denied` before any report was taken turns it off, one after does not.
    #[test]
    fn a_flood_of_bad_requests_is_told_in_part_and_rare_ones_always() {
        let (credit, refill) = (REFUSAL_CREDIT as usize, REFUSAL_REFILL as usize);
        let mut b = Refusals::FULL;
        // Every refused request was checked too (its count is the profile's).
        let mut n = 0u64;
        let refused = |b: &mut Refusals, n: &mut u64| {
            *n += 1;
            b.take(5, *n, true)
        };
        let told = (0..1000).filter(|_| refused(&mut b, &mut n)).count();
        // The credit, and one for every 8 messages (each refill taken by the next refusal).
        assert_eq!(told, credit + 1000 / refill);
        assert!(b.take(6, 1, true), "another client's budget is its own");
        // Ordinary traffic fills it again (counted by the profile, nothing here); a rare refusal
        // among it is always told.
        n += (credit * refill) as u64;
        assert!(refused(&mut b, &mut n));
        assert_eq!(b.credit[4], REFUSAL_CREDIT - 1);
        for _ in 0..100 {
            n += 20;
            assert!(refused(&mut b, &mut n));
        }
        // Refusals that reached no method (the profile never counted them) refill too.
        let mut u = Refusals::FULL;
        let told = (0..1000).filter(|_| u.take(5, 0, false)).count();
        assert_eq!(told, credit + 1000 / refill);
        // A count below the last refill's (the server replaced its profiles): nothing earned,
        // and the refill goes on from there.
        let mut w = Refusals::FULL;
        w.counted[4] = 1000;
        w.credit[4] = 0;
        assert!(!w.take(5, 4, true), "nothing earned by a count that went back");
        assert!(w.take(5, 12, true), "8 requests since gave one back");
        for badge in [0, PROFILED_BADGES as u64 + 1, 1 << 40, u64::MAX] {
            assert!(!b.take(badge, u64::MAX / 2, true), "badge {badge} is no client's");
            assert!(!b.take(badge, 0, false), "badge {badge} is no client's");
        }
        // Studio's answers.
        let denied = || Err(AgentError::Service(ServiceError::Denied));
        let mut first = Refusals::FULL;
        first.told(denied());
        assert!(!first.on && !first.take(5, 1, true), "no privilege: off for good");
        let mut later = Refusals::FULL;
        later.told(Ok(()));
        later.told(denied());
        later.told(Err(AgentError::Service(ServiceError::NotFound)));
        assert!(later.on && later.take(5, 1, true), "a client no longer one changes nothing else");
        let mut off = Refusals { on: false, ..Refusals::FULL };
        assert!(!(0..100).any(|n| off.take(5, n, n % 2 == 0)));
    }
    /// The profile counts each client's checked requests (what refills its refusal budget),
    /// denied ones too, and keeps the count when it learns again.
    #[test]
    fn the_profile_counts_a_client_s_requests_for_the_refusal_budget() {
        let mut p = Profiles::new();
        for m in 0..10 {
            p.check(3, m);
        }
        enforce(&mut p, 3);
        assert!(matches!(p.check(3, 40), Verdict::Deny { .. }));
        assert_eq!((p.messages(3), p.messages(4)), (11, 0));
        p.apply(&Control::Learn { badge: 3 }).unwrap();
        assert_eq!(p.messages(3), 11, "kept when the profile learns again");
        for badge in [0, PROFILED_BADGES as u64 + 1, u64::MAX] {
            assert_eq!(p.messages(badge), 0);
        }
    }

    use alloc::string::String;

    fn enforce(p: &mut Profiles, badge: u64) -> MethodProfile {
        p.apply(&Control::Enforce { badge, name: "agent".into() }).unwrap()
    }

    #[test]
    fn learning_records_and_allows() {
        let mut p = Profiles::new();
        for m in [0, 3, 3, 62] {
            assert_eq!(p.check(1, m), Verdict::Allow);
        }
        let g = p.get(1).unwrap();
        assert_eq!(g, MethodProfile { used: 1 | 1 << 3 | 1 << 62, allowed: u64::MAX, enforcing: false, denied: 0 });
        // Other clients are separate.
        assert_eq!(p.get(2).unwrap().used, 0);
    }

    #[test]
    fn enforcing_denies_what_was_not_learned_and_reports_once() {
        let mut p = Profiles::new();
        p.check(3, 0);
        p.check(3, 2);
        let e = enforce(&mut p, 3);
        assert_eq!(e, MethodProfile { used: 0b101, allowed: 0b101, enforcing: true, denied: 0 });
        assert_eq!(p.check(3, 0), Verdict::Allow);
        assert_eq!(p.check(3, 2), Verdict::Allow);
        assert_eq!(p.check(3, 1), Verdict::Deny { report: true });
        assert_eq!(p.check(3, 1), Verdict::Deny { report: false });
        assert_eq!(p.check(3, 5), Verdict::Deny { report: true });
        let g = p.get(3).unwrap();
        assert_eq!((g.used, g.allowed, g.denied), (0b100111, 0b101, 3), "denied methods show as used");
        // A client that never called anything is denied everything once enforced.
        enforce(&mut p, 4);
        assert_eq!(p.check(4, 0), Verdict::Deny { report: true });
        // Back to learning: all allowed, all forgotten.
        let l = p.apply(&Control::Learn { badge: 3 }).unwrap();
        assert_eq!(l, MethodProfile { used: 0, allowed: u64::MAX, enforcing: false, denied: 0 });
        assert_eq!(p.check(3, 1), Verdict::Allow);
        // Set restores an exact mask.
        let s = p.apply(&Control::Set { badge: 3, allowed: 0b10, name: "x".into() }).unwrap();
        assert_eq!((s.allowed, s.enforcing), (0b10, true));
        assert_eq!(p.check(3, 1), Verdict::Allow);
        assert_eq!(p.check(3, 0), Verdict::Deny { report: true });
        assert_eq!(p.client_name(3), "x");
    }

    #[test]
    fn bad_badges_and_methods() {
        let mut p = Profiles::new();
        for badge in [0, PROFILED_BADGES as u64 + 1, 1 << 32, u64::MAX] {
            // Not profiled: always allowed, nothing recorded, nothing to control.
            assert_eq!(p.check(badge, 1), Verdict::Allow);
            assert_eq!(p.get(badge), None);
            assert_eq!(p.apply(&Control::Get { badge }), Err(ServiceError::InvalidArgument));
            assert_eq!(p.apply(&Control::Learn { badge }), Err(ServiceError::InvalidArgument));
        }
        assert!(p.get(PROFILED_BADGES as u64).is_some());
        // Method numbers wrap into 0..64 (the permutation never yields more).
        p.check(1, 64 + 2);
        assert_eq!(p.get(1).unwrap().used, 1 << 2);
        // Long and multi-byte names are cut at a character boundary.
        let long = "é".repeat(40);
        p.apply(&Control::Enforce { badge: 1, name: long }).unwrap();
        assert_eq!(p.client_name(1), "é".repeat(12));
    }

    fn request(badge: u64, label: u64, words: &[u64]) -> Received {
        Received { badge, msg: Msg::new(label, words) }
    }

    #[test]
    fn the_server_answers_denials_before_the_handler() {
        let mut s = Server::with_key(2, "echo", 0x5eed);
        // Learning: requests reach the handler, method 63 (once reserved) like any other.
        assert!(s.admit(5, 0).is_none());
        assert!(s.admit(5, 63).is_none());
        // What the shaper pulled and the server carried out.
        let done = s.apply_control(&Control::Enforce { badge: 5, name: "a".into() });
        assert_eq!(
            done,
            Applied {
                badge: 5,
                profile: Some(MethodProfile { used: 1 | 1 << 63, allowed: 1 | 1 << 63, enforcing: true, denied: 0 })
            }
        );
        // Enforcing: method 0 passes, method 1 is denied (no report: the host has no Studio).
        assert!(s.admit(5, 0).is_none());
        assert_eq!(s.admit(5, 1).unwrap(), Err(ServiceError::Denied));
        // A request about a badge no profile is kept for is refused, and says so.
        assert_eq!(s.apply_control(&Control::Get { badge: 0 }), Applied { badge: 0, profile: None });
        // The guard still applies after the profile.
        s.set_guard(|_, m| m != 0);
        assert_eq!(s.admit(5, 0).unwrap(), Err(ServiceError::Denied));
    }

    #[test]
    fn only_the_kernel_badge_makes_a_control_signal() {
        let mut s = Server::with_key(2, "echo", 0x5eed);
        // A client's request (its badge is its id) is never taken for the signal.
        let mut m = request(5, s.label(0).unwrap(), &[]);
        assert!(s.take_control_signal(&mut m));
        assert_eq!(m.badge, 5);
        // The signal alone: pulled (on the host, from no shaper), nothing left to hand on.
        let mut m = request(CONTROL_SIGNAL, 0, &[]);
        assert!(!s.take_control_signal(&mut m));
        // With another signal bit: the bit is taken off, the rest handed on.
        let other = 1 << 40;
        let mut m = request(CONTROL_SIGNAL | other, 0, &[]);
        assert!(s.take_control_signal(&mut m));
        assert_eq!(m.badge, other);
    }

    /// A request of method `m` as a server receives it (payload in registers only).
    fn typed_request<Req: Serialize>(m: u64, req: &Req) -> Request {
        let (mrs, len) = protocol::encode_small(req).unwrap();
        let label = protocol::label_with_len(LABEL_BASE, len);
        Request::new(5, m, Received { badge: 5, msg: Msg::new(label, &mrs[..len.div_ceil(8)]) })
    }

    #[test]
    fn typed_methods_round_trip_and_refuse_the_wrong_method() {
        use crate::protocol::echo::method;
        // REVERSE: a `String` in, a `String` out (longer than the registers: the IPC buffer).
        let r = typed_request(method::REVERSE.id(), &"ab");
        let long = "é".repeat(40);
        let response = handle(&r, method::REVERSE, |text| Ok(alloc::format!("{text}{long}")));
        assert_eq!(answer_of(method::REVERSE, &response), Ok(alloc::format!("ab{long}")));
        // An arm that names another method than the request's gets nothing to answer with.
        assert_eq!(r.decode_for(method::ECHO).map(|(n, _)| n), Err(ServiceError::UnknownMethod));
        // A payload that is no request of the method is refused as malformed.
        let bad = typed_request(method::ECHO.id(), &u128::MAX);
        assert_eq!(handle(&bad, method::ECHO, Ok), Err(ServiceError::BadRequest));
        // Refusals travel as themselves.
        let refused =
            handle(&typed_request(method::ECHO.id(), &7u64), method::ECHO, |_| Err::<u64, _>(ServiceError::Denied));
        assert_eq!(answer_of(method::ECHO, &refused), Err(ServiceError::Denied));
        assert_eq!(answer_of(method::ECHO, &handle(&typed_request(0, &7u64), method::ECHO, Ok)), Ok(7));
    }

    #[test]
    fn denial_reports_name_the_client() {
        let mut out = String::new();
        denial_text(&mut out, "echo", 1, 3, "shaper-check");
        assert_eq!(out, "shaper: denied method 1 of `echo` to shaper-check");
        let mut out = String::new();
        denial_text(&mut out, "echo", 1, 3, "");
        assert_eq!(out, "shaper: denied method 1 of `echo` to program 3");
        let mut line = Line { buf: [0; 160], len: 0 };
        denial_text(&mut line, &"é".repeat(200), 1, 3, "x");
        assert!(line.len <= 160 && core::str::from_utf8(&line.buf[..line.len]).is_ok());
    }

    // ---- an attacker's review of interface blocks in labels (studio-server's
    // `block_review_tests.rs` has Studio's side) ----

    /// Attack: a client hides its refusals from Studio with requests that carry *another
    /// interface's* labels. A benign server refuses such a request (`UnknownMethod`: not its
    /// block) and tells Studio of it like any refusal, taking one of the client's
    /// [`REFUSAL_CREDIT`]; Studio refuses that word (`InvalidArgument`: another interface's
    /// label, `may_tell_of`), so it is no event — yet the credit is gone. Thirty-six such requests
    /// empty the client's budget, after which only the message that brings a refill (every
    /// [`REFUSAL_REFILL`]th) is told: a client that makes that one another interface's request
    /// again has *none* of its real bad requests (its protocol fuzzing of the server's methods)
    /// told, at the cost of one silent request in eight. Before the blocks every such request
    /// was told and taken, so spending the budget was itself seen.
    ///
    /// HOLE. Smallest fix (`Server::answered`): tell of (and charge the budget for) a refusal
    /// only if its wire label's block is the server's own or 0 (`protocol::block_of`): the only
    /// ones Studio can take from it; the others are requests that reach no method, which Studio
    /// would refuse anyway. (Refunding the credit when Studio answers `InvalidArgument` would
    /// keep the count right but let a client make the server call Studio once per message.)
    ///
    /// Mended: `Server::answered` tells of (and charges for) refusals of its own block's labels
    /// and of labels of no interface only.
    #[test]
    fn requests_with_another_interface_s_labels_do_not_spend_the_client_s_refusal_budget() {
        let key = 0x5eed;
        let s = Server::with_key(2, "echo", key);
        s.refusals.borrow_mut().on = true; // as in a program Studio started
        let junk = Permutation::new(key, "secmem").label(3).unwrap();
        assert_eq!(s.perm.method(junk), None, "no method of echo's");
        for _ in 0..64 {
            s.answered(5, protocol::label_with_len(junk, 1), false, Some(&Err(ServiceError::UnknownMethod)));
        }
        assert_eq!(s.refusals.borrow().credit[4], REFUSAL_CREDIT, "nothing Studio could take was told");
        let own = s.label(1).unwrap();
        for _ in 0..REFUSAL_REFILL - 1 {
            s.answered(5, protocol::label_with_len(own, 3), true, Some(&Err(ServiceError::BadRequest)));
        }
        assert_eq!(s.refusals.borrow().credit[4], REFUSAL_CREDIT - (REFUSAL_REFILL - 1), "each bad request told");
    }

    /// Attack: a request that `rpc::Server` decodes wrongly now that labels carry a block: every
    /// method of several interfaces, under several keys (0 included), with payloads of every
    /// size class up to [`MAX_PAYLOAD`] (registers and the IPC buffer), is decoded as its own
    /// method with exactly its length, and as no method of another interface; the same message
    /// with any other padding is no request of the type, and with bit 19 set no label at all.
    ///
    /// HELD.
    #[test]
    fn blocked_labels_decode_every_request_exactly_and_as_no_other_interface_s() {
        use alloc::vec::Vec;
        let interfaces = ["echo", "studio", "secmem", "kv"];
        for key in [0u64, 0x5eed, u64::MAX] {
            let perms = interfaces.map(|i| Permutation::new(key, i));
            for (k, p) in perms.iter().enumerate() {
                for m in [0, 1, 17, protocol::MAX_METHODS - 1] {
                    let label = p.label(m).unwrap();
                    for n in [0usize, 1, 6, 7, 8, 24, 30, 31, 32, 100, 500, MAX_PAYLOAD - 3] {
                        let bytes: Vec<u8> = (0..n).map(|i| i as u8 ^ 0x5a).collect();
                        let r = Received { badge: 5, msg: encoded(label, &bytes).unwrap() };
                        let (wire, _) = label_of(&r).unwrap();
                        assert_eq!(wire, label);
                        assert_eq!(p.method(wire), Some(m));
                        for (j, q) in perms.iter().enumerate() {
                            assert!(j == k || q.method(wire).is_none(), "{} takes {}'s", interfaces[j], interfaces[k]);
                        }
                        assert_eq!(payload::<Vec<u8>>(&r), Ok(bytes.clone()));
                        let info = r.msg.info;
                        let with = |l: u64| Received {
                            badge: 5,
                            msg: Msg { info: MessageInfo::new(l, 0, 0, info.length()), mrs: r.msg.mrs },
                        };
                        let pad = (info.label() >> protocol::PAD_SHIFT) & 7;
                        for other in (0..8u64).filter(|x| *x != pad) {
                            let bad = with(info.label() & !(7 << protocol::PAD_SHIFT) | other << protocol::PAD_SHIFT);
                            assert!(
                                label_of(&bad).is_none() || payload::<Vec<u8>>(&bad).is_err(),
                                "{n} bytes, pad {other}"
                            );
                        }
                        let b19 = with(info.label() | 1 << 19);
                        assert_eq!(label_of(&b19), None);
                        assert_eq!(payload::<Vec<u8>>(&b19), Err(ServiceError::BadRequest));
                    }
                }
            }
        }
    }

    /// Attack: a hostile server answers with a reply whose label carries a block (bits 20–51),
    /// hoping a client reads it as a success or as a refusal of its choosing. A reply's status
    /// is its whole wire label: with any block bit it is neither 0 nor a [`ServiceError`], so
    /// the client gets `BadReply`.
    ///
    /// HELD.
    #[test]
    fn a_reply_with_a_block_is_no_answer() {
        let c = Client::with_key(7, "echo", 0x5eed);
        let ok = encoded(0, &7u64).unwrap();
        assert_eq!(c.answer::<u64>(&Received { badge: 0, msg: ok }), Ok(7));
        for b in [1u64 << 20, 1 << 51, Permutation::new(0x5eed, "echo").block() << 20] {
            let forged = Msg { info: MessageInfo::new(ok.info.label() | b, 0, 0, ok.info.length()), mrs: ok.mrs };
            assert_eq!(c.answer::<u64>(&Received { badge: 0, msg: forged }), Err(AgentError::BadReply));
            let status = Msg::new(ServiceError::Denied as u64 | b, &[]);
            assert_eq!(c.answer::<u64>(&Received { badge: 0, msg: status }), Err(AgentError::BadReply));
        }
    }

    // ---- attacks on the refusal budget worked out at the refusal (the refill from the method
    // profile's request count, `Server::refused` cold) ----

    use crate::protocol::{LABEL_MASK, MAX_METHODS};

    /// A server of `echo` as Studio starts one (reporting on; on the host every report fails,
    /// which changes nothing of the budget).
    fn reporting_server() -> Server {
        let s = Server::with_key(2, "echo", 0x5eed);
        s.refusals.borrow_mut().on = true;
        s
    }

    /// Whether `f` made the server tell Studio of a refusal of client `badge`'s: a refusal
    /// told always changes the client's budget (a credit taken, or a refill counted), one not
    /// told never does (it is not told only when the credit is 0 and nothing was earned).
    /// Asserts that no other client's budget changed.
    fn told_by(s: &mut Server, badge: u64, f: impl FnOnce(&mut Server)) -> bool {
        let before = s.refusals.borrow().clone();
        f(s);
        let after = s.refusals.borrow().clone();
        let at = badge.wrapping_sub(1) as usize;
        for k in (0..PROFILED_BADGES).filter(|k| *k != at) {
            let (b, a) = ((before.credit[k], before.counted[k]), (after.credit[k], after.counted[k]));
            assert_eq!(b, a, "client {}'s budget changed by client {badge}'s message", k + 1);
        }
        assert_eq!((before.on, before.accepted), (after.on, after.accepted));
        at < PROFILED_BADGES && (before.credit[at], before.counted[at]) != (after.credit[at], after.counted[at])
    }

    /// One message through the server as [`Server::wait`] and [`Server::poll`] hand it on (no
    /// receive: [`Server::classify`]), answered as the SDK's servers do: a request with
    /// `handler`'s answer ([`Server::answer`]), anything else `UnknownMethod`.
    fn serve_one(s: &mut Server, m: Received, handler: impl FnOnce(&Request) -> Response) {
        match s.classify(m) {
            Polled::Request(r) => {
                let a = handler(&r);
                s.answer(Some(a));
            }
            Polled::Other(_) => s.answer(Some(Err(ServiceError::UnknownMethod))),
            Polled::Answered | Polled::Nothing => {}
        }
    }

    /// A well-formed request of method `m` of `s`'s interface from `badge`, of one byte.
    fn good(s: &Server, badge: u64, m: u64) -> Received {
        request(badge, protocol::label_with_len(s.label(m).unwrap(), 1), &[7])
    }

    /// Attack: a client has its bad requests go untold beyond the budget, or makes the server
    /// call Studio more often than it, or moves another client's budget, by interleaving every
    /// kind of message a client can send — well-formed requests answered, answered with
    /// `BadRequest` (protocol fuzzing: real labels, garbage payloads), `Denied` by the handler or
    /// by the method profile (enforcing, `Set`), `UnknownMethod` from a handler; labels of the
    /// server's block that are no method, of no block (0, the kernel's fault labels, a method's
    /// label proper alone), a real method's label with bit 19 or with padding in an empty message
    /// (no method: not counted by `Profiles::check`), another interface's labels — with the
    /// shaper's `Learn`, `Enforce`, `Set` and `Get` of any client, from three clients at once
    /// (badges 1, 5 and 64, the last profiled one) and with messages of badges no client has (0,
    /// 65, `u64::MAX`, signal bits). Each answered message is compared with the budget as
    /// documented: every refusal of a label of the server's block or of none, of a client's,
    /// takes a credit if there is one (and is told exactly then); every [`REFUSAL_REFILL`]
    /// requests of the client's that reach the method profile give one back, up to
    /// [`REFUSAL_CREDIT`]; nothing else moves it.
    ///
    /// HELD (within the documented budget; refusals of labels of no method refill nothing: see
    /// `a_flood_of_labels_of_no_method_is_told_one_in_eight_as_documented`).
    #[test]
    fn any_interleaving_of_messages_and_controls_is_told_exactly_as_the_budget_says() {
        #[derive(Clone, Copy, Default)]
        struct Model {
            credit: u32,
            since: u32,
            told: u32,
            checked: u32,
        }
        let mut s = reporting_server();
        let own = s.perm.block() << protocol::BLOCK_SHIFT;
        let other = Permutation::new(0x5eed, "secmem");
        let clients = [1u64, 5, PROFILED_BADGES as u64];
        let mut model = [Model { credit: u32::from(REFUSAL_CREDIT), ..Model::default() }; 3];
        let mut x = 0x0bad_5eed_0000_0001u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..60_000 {
            let r = next();
            let k = (r % 3) as usize;
            let badge = clients[k];
            let m = (r >> 8) % MAX_METHODS;
            // (message, whether it reaches the profile check, the handler's answer)
            let answer = |e: ServiceError| move |_: &Request| -> Response { Err(e) };
            let ok = |_: &Request| -> Response { Ok(Msg::default()) };
            let kind = (r >> 16) % 20;
            type Step<'a> = (Received, bool, &'a dyn Fn(&Request) -> Response);
            let (msg, checked, handler): Step = match kind {
                // Ordinary traffic is most of it, else the budget never refills.
                0..=6 => (good(&s, badge, m), true, &ok),
                7 | 8 => (good(&s, badge, m), true, &answer(ServiceError::BadRequest)),
                9 => (good(&s, badge, m), true, &answer(ServiceError::Denied)),
                10 => (good(&s, badge, m), true, &answer(ServiceError::UnknownMethod)),
                11 => (good(&s, badge, m), true, &answer(ServiceError::NotFound)),
                12 => (request(badge, own | (LABEL_BASE + MAX_METHODS + (r >> 24) % 100), &[]), false, &ok),
                13 => (request(badge, (r >> 24) % 16, &[]), false, &ok),
                14 => (request(badge, s.label(m).unwrap() & LABEL_MASK, &[]), false, &ok),
                15 => (request(badge, s.label(m).unwrap() | 1 << 19, &[1]), false, &ok),
                16 => (request(badge, protocol::label_with_len(s.label(m).unwrap(), 3), &[]), false, &ok),
                17 => (request(badge, protocol::label_with_len(other.label(m).unwrap(), 1), &[1]), false, &ok),
                18 => {
                    // The shaper's control, of this client or another.
                    let b = clients[((r >> 24) % 3) as usize];
                    let c = match (r >> 32) % 4 {
                        0 => Control::Learn { badge: b },
                        1 => Control::Enforce { badge: b, name: "a".into() },
                        2 => Control::Set { badge: b, allowed: next(), name: "b".into() },
                        _ => Control::Get { badge: b },
                    };
                    assert!(!told_by(&mut s, b, |s| assert!(s.apply_control(&c).profile.is_some())));
                    continue;
                }
                _ => {
                    // A message of no client's: nothing told, no client's budget or count moved.
                    let not = [0, PROFILED_BADGES as u64 + 1, u64::MAX, 1 << 40, 1 << 45][((r >> 24) % 5) as usize];
                    let counts: Vec<u64> = clients.iter().map(|c| s.profiles.messages(*c)).collect();
                    let junk = request(not, own | (LABEL_BASE + 70), &[]);
                    assert!(!told_by(&mut s, not, |s| serve_one(s, good(s, not, m), ok)));
                    assert!(!told_by(&mut s, not, |s| serve_one(s, junk, answer(ServiceError::BadRequest))));
                    assert_eq!(counts, clients.iter().map(|c| s.profiles.messages(*c)).collect::<Vec<_>>());
                    continue;
                }
            };
            let denied = checked && s.profiles().get(badge).unwrap().allowed & 1 << m == 0;
            let code = match kind {
                _ if denied => Some(ServiceError::Denied),
                0..=6 | 11 => None,
                7 | 8 => Some(ServiceError::BadRequest),
                9 => Some(ServiceError::Denied),
                _ => Some(ServiceError::UnknownMethod),
            };
            // The model: the check counts first (and a refusal that reached no method is counted
            // by the budget itself), then the refusal takes a credit.
            let e = &mut model[k];
            let tellable = kind != 17 && code.is_some();
            if checked || tellable {
                e.checked += 1;
                e.since += 1;
                if e.since == u32::from(REFUSAL_REFILL) {
                    e.since = 0;
                    e.credit = (e.credit + 1).min(u32::from(REFUSAL_CREDIT));
                }
            }
            let expected = tellable && e.credit > 0;
            if expected {
                e.credit -= 1;
                e.told += 1;
            }
            let before = s.profiles.messages(badge);
            let told = told_by(&mut s, badge, |s| serve_one(s, msg, handler));
            assert_eq!(told, expected, "step {step}: client {badge}, kind {kind}, {code:?}");
            assert_eq!(s.profiles.messages(badge), before + u64::from(checked));
        }
        for (c, e) in clients.iter().zip(model) {
            // Never more than designed; and the fuzzing was told (the budget was not drained).
            assert!(e.told <= u32::from(REFUSAL_CREDIT) + e.checked / u32::from(REFUSAL_REFILL));
            assert!(e.told > 1000, "client {c}: {} told", e.told);
        }
    }

    /// Attack: a client floods the server with requests it refuses, to make it call Studio for
    /// each (a cost of the server's, and Studio's) — requests of real methods with garbage
    /// payloads, requests its profile denies, and labels of no method in between. The server
    /// calls Studio for the first [`REFUSAL_CREDIT`] and then for one in [`REFUSAL_REFILL`] of
    /// the client's requests (checked, or refused without reaching a method) at most, however
    /// they are mixed; and another client's rare
    /// refusal is told all the same.
    ///
    /// HELD.
    #[test]
    fn a_flood_of_refused_requests_calls_studio_no_more_than_the_budget() {
        let mut s = reporting_server();
        s.apply_control(&Control::Set { badge: 5, allowed: 1, name: "a".into() });
        let n = 8000u32;
        let mut told = 0;
        for i in 0..n {
            let m = u64::from(i) % MAX_METHODS;
            let junk = request(5, u64::from(i) % 16, &[]);
            told += u32::from(told_by(&mut s, 5, |s| serve_one(s, good(s, 5, m), |_| Err(ServiceError::BadRequest))));
            told += u32::from(told_by(&mut s, 5, |s| serve_one(s, junk, |_| Ok(Msg::default()))));
        }
        assert_eq!(s.profiles.messages(5), u64::from(n));
        // The junk (labels of no method) is refused unchecked and counts towards the refill too.
        assert_eq!(told, u32::from(REFUSAL_CREDIT) + 2 * n / u32::from(REFUSAL_REFILL));
        assert!(told_by(&mut s, 6, |s| serve_one(s, good(s, 6, 3), |_| Err(ServiceError::BadRequest))));
    }

    /// Attack: the shaper's `Learn` (which clears a profile), `Enforce` and `Set` reset the
    /// request count a drained client's refill is worked out from, giving it a full budget again
    /// (more calls to Studio), or make its later requests count for nothing (its bad requests
    /// untold). The count is kept by all four, so the refill goes on one in
    /// [`REFUSAL_REFILL`], neither more nor less; and requests the profile then denies count as
    /// any other.
    ///
    /// HELD.
    #[test]
    fn the_shaper_s_controls_neither_refill_nor_stop_the_refill() {
        let mut s = reporting_server();
        let bad = |s: &mut Server| told_by(s, 5, |s| serve_one(s, good(s, 5, 1), |_| Err(ServiceError::BadRequest)));
        // Drained (the credit, and what the requests that drained it earned), then to the next
        // refill: from here on every eighth refused request is told.
        while bad(&mut s) {}
        while !bad(&mut s) {}
        for round in 0..40 {
            let c = match round % 4 {
                0 => Control::Learn { badge: 5 },
                1 => Control::Enforce { badge: 5, name: "a".into() },
                2 => Control::Set { badge: 5, allowed: 1, name: "b".into() },
                _ => Control::Get { badge: 5 },
            };
            s.apply_control(&c);
            // Seven refused requests (denied by the profile, or bad): none told; the eighth is.
            let denied = s.profiles().get(5).unwrap().allowed & 1 << 1 == 0;
            let told: Vec<bool> = (0..REFUSAL_REFILL).map(|_| bad(&mut s)).collect();
            assert_eq!(told.iter().filter(|t| **t).count(), 1, "round {round} (denied: {denied}): {told:?}");
            assert!(told[usize::from(REFUSAL_REFILL) - 1]);
        }
    }

    /// Attack: every way a server answers — [`Server::classify`]'s own `Denied` (the method
    /// profile, the guard), [`Server::answer`] of a request or of another message,
    /// `answer(None)`, and an answer given again after [`Polled::Answered`] (the console's and
    /// the net server's loops answer `None` then; a server's slip could answer again) — tells
    /// Studio of exactly the refusals (`Denied`, `UnknownMethod`, `BadRequest`, none of the other
    /// codes), once each, about the badge and the received label (padding and all: Studio takes
    /// the padding off) of the message answered.
    ///
    /// HELD. ([`Server::answer_and_wait`] takes `last` and calls `answered` exactly as
    /// [`Server::answer`] does; it and [`Server::serve_raw`], which passes the received badge
    /// and label of the message it answers, receive, so they are read, not run, here.)
    /// A client's badge carries its run (`studio::client_badge`): the handler, the method
    /// profile and the refusal budget see the program id, and the answer keeps the whole badge
    /// for the report to Studio — two runs of a program are one client to the server.
    #[test]
    fn the_run_in_a_client_s_badge_reaches_only_the_refusal_report() {
        let mut s = reporting_server();
        s.apply_control(&Control::Set { badge: 5, allowed: !(1 << 4), name: "a".into() });
        let credit = |s: &Server| s.refusals.borrow().credit[4];
        for run in [1u32, 2, 0xffff, 0x1_0000] {
            let whole = studio::client_badge(5, run);
            assert_ne!(whole, 5);
            let m = good(&s, whole, 2);
            let Polled::Request(r) = s.classify(m) else { panic!("run {run}") };
            assert_eq!((r.badge, r.msg.badge), (5, 5), "the handler sees the program");
            assert_eq!(s.last.get(), (whole, m.msg.info.label(), true), "the answer keeps the whole badge");
            let (c, before) = (credit(&s), s.profiles.messages(5));
            assert!(told_by(&mut s, 5, |s| s.answer(Some(Err(ServiceError::BadRequest)))), "run {run}");
            assert_eq!((credit(&s), s.profiles.messages(5)), (c - 1, before), "the program's budget");
            // Its profile is the program's: method 4 is denied whatever the run.
            let m = good(&s, whole, 4);
            assert!(told_by(&mut s, 5, |s| assert!(matches!(s.classify(m), Polled::Answered))));
        }
    }

    #[test]
    fn every_answer_path_tells_each_refusal_once_about_the_message_answered() {
        let mut s = reporting_server();
        s.set_guard(|_, m| m != 9);
        s.apply_control(&Control::Set { badge: 5, allowed: !(1 << 4), name: "a".into() });
        let credit = |s: &Server| s.refusals.borrow().credit[4];
        // The profile's denial, answered by classify itself.
        let m = good(&s, 5, 4);
        assert!(told_by(&mut s, 5, |s| assert!(matches!(s.classify(m), Polled::Answered))));
        assert_eq!(s.last.get(), (0, 0, false), "nothing left to answer again");
        assert!(!told_by(&mut s, 5, |s| s.answer(Some(Err(ServiceError::Denied)))), "a slip tells nothing");
        // The guard's denial.
        let m = good(&s, 5, 9);
        assert!(told_by(&mut s, 5, |s| assert!(matches!(s.classify(m), Polled::Answered))));
        // A request: classify keeps its badge and label as received, the answer tells once.
        for (code, tells) in ServiceError::ALL.map(|e| (e, matches!(e as u64, 1..=3))) {
            let m = good(&s, 5, 2);
            let Polled::Request(r) = s.classify(m) else { panic!() };
            assert_eq!(s.last.get(), (5, m.msg.info.label(), true));
            assert_eq!(r.badge, 5);
            let c = credit(&s);
            assert_eq!(told_by(&mut s, 5, |s| s.answer(Some(Err(code)))), tells, "{code:?}");
            assert_eq!(credit(&s), c - u8::from(tells));
            assert!(!told_by(&mut s, 5, |s| s.answer(Some(Err(code)))), "{code:?} told twice");
        }
        // Not answered, or answered with a value: nothing told.
        for response in [None, Some(Ok(Msg::default()))] {
            let m = good(&s, 5, 2);
            assert!(matches!(s.classify(m), Polled::Request(_)));
            assert!(!told_by(&mut s, 5, |s| s.answer(response)));
        }
        // Another message (a label of no method), padding and all.
        let junk = request(5, protocol::label_with_len(s.label(2).unwrap(), 3), &[]);
        assert!(matches!(s.classify(junk), Polled::Other(_)));
        assert_eq!(s.last.get(), (5, junk.msg.info.label(), false));
        assert!(told_by(&mut s, 5, |s| s.answer(Some(Err(ServiceError::UnknownMethod)))));
        // A signal alone (the shaper's bit, pulled and taken off) leaves nothing to answer.
        assert!(!told_by(&mut s, 5, |s| assert!(matches!(
            s.classify(request(CONTROL_SIGNAL, 0, &[])),
            Polled::Answered
        ))));
        assert!(!told_by(&mut s, 5, |s| s.answer(Some(Err(ServiceError::UnknownMethod)))));
    }

    /// Attack: a client whose budget is drained waits out its refill with ordinary requests,
    /// hoping the refill is lost so that its next bad requests go untold: after
    /// `REFUSAL_CREDIT * REFUSAL_REFILL` (256) ordinary requests its budget is full again, and
    /// a few thousand later still full (the refill is capped, not lost) — but the count it is
    /// worked out from is a wrapping `u32` (`ClientProfile::messages`, `Refusals::counted`):
    /// after 2³² ordinary requests (an hour or so of a client calling in a loop; nothing else of
    /// the client's need happen), the count is where it was when the budget was drained, so the
    /// refill is as if the client had made no request at all. Its next 32 bad requests (all told
    /// by design, the budget being full) are told one in eight. When the refill was
    /// counted per message in a `u8` it could not be lost. (Studio sees a drained-looking
    /// budget's worth, 1 in 8; the attacker only needs to have drained its budget once, long
    /// ago.)
    ///
    /// HOLE (low: 2³² requests). Smallest fix: count in `u64` (`ClientProfile::messages: u64`,
    /// `Refusals::counted: [u64; PROFILED_BADGES]`, `take(badge, messages: u64)`; 2⁶⁴ requests
    /// cannot be made), or saturate the difference in `Refusals::take` with a per-client
    /// "refilled" bit kept by `Profiles::check` once `REFUSAL_CREDIT * REFUSAL_REFILL` requests
    /// were counted since the last refusal (dearer on the answered path).
    ///
    /// Mended: the counts are `u64` (`ClientProfile::messages`, `Refusals::counted`).
    #[test]
    fn a_drained_budget_is_full_again_after_any_number_of_ordinary_requests() {
        let mut s = reporting_server();
        let bad = |s: &mut Server| told_by(s, 5, |s| serve_one(s, good(s, 5, 1), |_| Err(ServiceError::BadRequest)));
        while bad(&mut s) || s.refusals.borrow().credit[4] != 0 {}
        // 2^32 ordinary requests: the last few made, the rest counted as `Profiles::check`
        // counts them (one wrapping add each; 2^32 of them leave the count where it was).
        for _ in 0..8 {
            let m = good(&s, 5, 2);
            serve_one(&mut s, m, |_| Ok(Msg::default()));
        }
        let c = &mut s.profiles.clients[4];
        c.messages += (1u64 << 32) - 8;
        let told = (0..REFUSAL_CREDIT).filter(|_| bad(&mut s)).count();
        assert_eq!(told, usize::from(REFUSAL_CREDIT), "a full budget after 2^32 ordinary requests");
    }

    /// Attack: a client floods the server with requests that reach no method of it — labels of
    /// the server's block that are no method's, a real method's label with bit 19 or with padding
    /// in an empty message (protocol fuzzing of the length bits), labels of no block — all of
    /// which Studio takes from the server and places as refusals. `Profiles::check` never sees
    /// them, so with the refill from its count they never refill the budget: the first [`REFUSAL_CREDIT`] are
    /// told and then none, however many follow, while the budget's documentation (`Refusals`:
    /// "a client that sends nothing but bad requests thus costs the server one call to Studio
    /// for the first `REFUSAL_CREDIT` of them and then one for every `REFUSAL_REFILL`") and the
    /// design ("one back per REFUSAL_REFILL of the client's requests") say one in eight. When
    /// the refill was counted per message, every answered message counted. Such requests reach no handler, and the kernel's
    /// records show the flood, which is why this is low; but a client that has spent its credit
    /// once can scan the server's block, or fuzz the length bits of its labels, for ever unseen
    /// by the refusal events.
    ///
    /// HOLE (low). Smallest fix: count the refusals of messages that reached no method in the
    /// budget itself, in the cold path: `Server::answered` is told whether the message was
    /// checked (`serve_raw` and `classify` know: `self.perm.method` was `Some`; `last` keeps it),
    /// and `Server::refused` adds the unchecked ones to a per-client count of `Refusals`
    /// (`take(badge, messages.wrapping_add(unchecked[at]))`): no cost for an answered request.
    /// Or, if one in eight of such a flood is not wanted, say so in `Refusals`' documentation
    /// (the refill is of requests checked only; labels of no method get the credit and no more).
    ///
    /// Mended: `Server::answered` is told whether the message reached the check (`serve_raw`
    /// and `classify` know; `last` keeps it), and `Refusals::take` counts the refusals that did
    /// not (`Refusals::unchecked`) towards the refill: nothing more on an answered request.
    #[test]
    fn a_flood_of_labels_of_no_method_is_told_one_in_eight_as_documented() {
        let mut s = reporting_server();
        let own = s.perm.block() << protocol::BLOCK_SHIFT;
        let n = 800u32;
        let mut told = 0;
        for i in 0..n {
            let l = s.label(u64::from(i) % MAX_METHODS).unwrap();
            let m = match i % 4 {
                0 => request(5, own | (LABEL_BASE + MAX_METHODS + u64::from(i) % 64), &[]),
                1 => request(5, l | 1 << 19, &[1]),
                2 => request(5, protocol::label_with_len(l, 5), &[]),
                _ => request(5, u64::from(i) % 16, &[]),
            };
            told += u32::from(told_by(&mut s, 5, |s| serve_one(s, m, |_| Ok(Msg::default()))));
        }
        assert_eq!(told, u32::from(REFUSAL_CREDIT) + n / u32::from(REFUSAL_REFILL));
    }

    /// Attack: a client that fuzzes the server's methods (real labels, garbage payloads:
    /// `BadRequest`) chooses which of its refusals spend the refill: after each seven bad
    /// requests it makes one good one, then one request with a label of no interface (label 0),
    /// which takes the refill the eight checked requests earned. Every refusal told after its
    /// credit is then of label 0, nearly none of its fuzzing (the label-0 refusals count too,
    /// so one refill in nine rounds is left to a bad request) — but Studio is told at the
    /// designed rate (one in [`REFUSAL_REFILL`] of the client's requests, each a refusal event
    /// of the client's), and the budget was never a promise of which refusals are told (it was
    /// the same when any answered message refilled it).
    ///
    /// HELD (by design; noted: which refusals past the credit become events is the client's
    /// choice).
    #[test]
    fn a_client_may_choose_which_refusals_spend_the_refill_but_not_how_many() {
        let mut s = reporting_server();
        let (mut fuzz_told, mut junk_told) = (0u32, 0u32);
        let rounds = 500u32;
        for _ in 0..rounds {
            for m in 0..7 {
                fuzz_told +=
                    u32::from(told_by(&mut s, 5, |s| serve_one(s, good(s, 5, m), |_| Err(ServiceError::BadRequest))));
            }
            let m = good(&s, 5, 9);
            serve_one(&mut s, m, |_| Ok(Msg::default()));
            junk_told += u32::from(told_by(&mut s, 5, |s| serve_one(s, request(5, 0, &[]), |_| Ok(Msg::default()))));
        }
        let refills = 9 * rounds / u32::from(REFUSAL_REFILL);
        assert!(fuzz_told <= u32::from(REFUSAL_CREDIT) + refills - junk_told, "the credit and what junk left");
        // Nine requests a round (eight checked, the junk counted by the budget), no refill lost
        // (the credit was never full): all told but the last round's remainder.
        let total = fuzz_told + junk_told;
        assert!(
            (u32::from(REFUSAL_CREDIT) + refills - 1..=u32::from(REFUSAL_CREDIT) + refills).contains(&total),
            "{total}"
        );
    }
}
