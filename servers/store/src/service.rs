//! The `store` interface (`ozone_agent_sdk::protocol::store`) served over a [`Store`].
//!
//! The server binary calls [`Service::handle`] for each request `rpc::Server` receives, with
//! the badge of the caller's capability (Studio's program id for the caller). Every request is
//! served in the caller's own namespace, which the [`Directory`] gives for the badge (the binary
//! asks Studio); nothing in a message names a namespace, so a client cannot reach another's. A
//! badge the directory does not know is refused (`Denied`).
//!
//! Transactions live in the server's memory until committed or aborted; each belongs to the
//! badge that began it (another client's id is answered as unknown). What one client may hold
//! is bounded — [`MAX_TRANSACTIONS`] open, [`MAX_STAGED`] bytes staged and never more than its
//! quota — and so is what all clients together may hold ([`MAX_OPEN_TOTAL`],
//! [`MAX_STAGED_TOTAL`]), so no client can exhaust the server's heap. A client's transactions
//! are dropped when its program is started again (the directory's `run` for its badge changes:
//! checked at its next request) or when the binary calls [`Service::forget`].

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::store::{
    self as proto, Answer, Entry, Fault, LIST_PAGE, MAX_KEY, MAX_OPS, MAX_PIECE, MAX_STAGED, MAX_TRANSACTIONS,
    MAX_VALUE, NamedUsage, Piece, USAGE_PAGE, Usage, id, method,
};
use ozone_agent_sdk::rpc::{self, Args, Response};

use crate::block::BlockDevice;
use crate::store::{self, Error, MAX_NAMESPACE, Op, Store};

/// The most transactions open in the server, all clients together.
pub const MAX_OPEN_TOTAL: usize = 64;
/// The most bytes staged in the server, all clients together.
pub const MAX_STAGED_TOTAL: usize = 8 * 1024 * 1024;

/// What the server knows of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPolicy {
    /// Its namespace (its program's name, at most 32 bytes).
    pub namespace: String,
    /// The bytes it may use (as charged: `store::Usage::bytes`).
    pub quota_bytes: u64,
    /// Which start of its program this is (Studio's `run`).
    pub run: u32,
}

/// Who a badge is.
pub trait Directory {
    /// The policy of the client with this badge; `None` for a badge the server must not serve.
    fn client(&mut self, badge: u64) -> Option<ClientPolicy>;

    /// Whether the client with this badge may see every namespace's use and the store's health
    /// (`HEALTH`, `SCRUB`, `USAGE_ALL`: the shell's `disk`). Nobody, unless the directory says.
    fn is_admin(&mut self, badge: u64) -> bool {
        let _ = badge;
        false
    }
}

enum Staged {
    Put { key: Vec<u8>, total: u32, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

struct Txn {
    owner: u64,
    ns: String,
    ops: Vec<Staged>,
    bytes: usize,
}

/// A value or record read whole, kept for the next pieces of it.
struct Cached {
    generation: u64,
    ns: String,
    what: (u8, Vec<u8>, u64),
    bytes: Vec<u8>,
}

/// The storage service.
pub struct Service<D: BlockDevice, R: Directory> {
    store: Store<D>,
    dir: R,
    txns: BTreeMap<u64, Txn>,
    next_txn: u64,
    cache: Option<Cached>,
    /// Per client: the run of its program last seen (a new one drops what the old one held).
    runs: BTreeMap<u64, u32>,
}

fn fault(e: Error) -> Fault {
    match e {
        Error::NotFound => Fault::NotFound,
        Error::QuotaExceeded { used, quota } => Fault::QuotaExceeded { used, quota },
        Error::DiskFull => Fault::DiskFull,
        Error::TooLarge => Fault::TooLarge,
        Error::Invalid => Fault::Invalid,
        Error::Corrupt(_) => Fault::Corrupt,
        Error::BrokenChain { seq } => Fault::BrokenChain { seq },
        Error::WrongKey | Error::NotFormatted | Error::Io(_) => Fault::Unavailable,
    }
}

fn check_key(key: &[u8]) -> Answer<()> {
    if key.is_empty() {
        Err(Fault::Invalid)
    } else if key.len() > MAX_KEY {
        Err(Fault::TooLarge)
    } else {
        Ok(())
    }
}

fn piece(bytes: &[u8], offset: u32) -> Answer<Piece> {
    let start = offset as usize;
    if start > bytes.len() {
        return Err(Fault::Invalid);
    }
    let end = (start + MAX_PIECE).min(bytes.len());
    Ok(Piece { total: bytes.len() as u32, bytes: bytes[start..end].to_vec() })
}

impl<D: BlockDevice, R: Directory> Service<D, R> {
    /// Serve `store`, with clients known through `dir`.
    pub fn new(store: Store<D>, dir: R) -> Service<D, R> {
        Service { store, dir, txns: BTreeMap::new(), next_txn: 1, cache: None, runs: BTreeMap::new() }
    }

    /// The store (for the server's own use: Studio's shell asks for health and usage).
    pub fn store(&mut self) -> &mut Store<D> {
        &mut self.store
    }

    /// Drop everything the server holds for a client that stopped.
    pub fn forget(&mut self, badge: u64) {
        self.txns.retain(|_, t| t.owner != badge);
    }

    /// Transactions open (all clients).
    pub fn open_transactions(&self) -> usize {
        self.txns.len()
    }

    /// Serve one request from the client with badge `badge`.
    pub fn handle(&mut self, badge: u64, req: &impl Args) -> Response {
        if matches!(req.method(), id::HEALTH | id::SCRUB | id::USAGE_ALL) {
            return self.handle_admin(badge, req);
        }
        let Some(policy) = self.dir.client(badge) else { return Err(ServiceError::Denied) };
        // A program started again is not the one that opened its transactions: drop them.
        if self.runs.insert(badge, policy.run).is_some_and(|seen| seen != policy.run) {
            self.forget(badge);
        }
        let ns = policy.namespace;
        if ns.is_empty() || ns.len() > MAX_NAMESPACE {
            return Err(ServiceError::Denied);
        }
        let quota = policy.quota_bytes;
        self.store.set_quota(&ns, Some(quota));
        let ns = ns.as_str();
        match req.method() {
            id::GET => rpc::handle(req, method::GET, |g| Ok(self.get(ns, g.key, g.offset))),
            id::BEGIN => rpc::handle(req, method::BEGIN, |()| Ok(self.begin(badge, ns))),
            id::STAGE => rpc::handle(req, method::STAGE, |s| {
                Ok(self.stage(badge, ns, quota, s.txn, s.key, s.total, s.offset, s.bytes))
            }),
            id::STAGE_DELETE => {
                rpc::handle(req, method::STAGE_DELETE, |d| Ok(self.stage_delete(badge, ns, d.txn, d.key)))
            }
            id::COMMIT => rpc::handle(req, method::COMMIT, |txn| Ok(self.commit(badge, ns, txn))),
            id::ABORT => rpc::handle(req, method::ABORT, |txn| Ok(self.take(badge, ns, txn).map(|_| ()))),
            id::PUT => rpc::handle(req, method::PUT, |p| {
                Ok(if p.value.len() > MAX_PIECE {
                    Err(Fault::TooLarge)
                } else {
                    check_key(&p.key).and_then(|()| self.store.put(ns, &p.key, &p.value).map_err(fault))
                })
            }),
            id::DELETE => rpc::handle(req, method::DELETE, |key| {
                Ok(check_key(&key).and_then(|()| self.store.delete(ns, &key).map_err(fault)))
            }),
            id::LIST => rpc::handle(req, method::LIST, |l| {
                let max = (l.max as usize).min(LIST_PAGE);
                let r = match &l.after {
                    Some(a) if a.len() > MAX_KEY => Err(Error::TooLarge),
                    a => self.store.list(ns, a.as_deref(), max),
                };
                Ok(r.map(|v| v.into_iter().map(|(key, len)| Entry { key, len }).collect::<Vec<_>>()).map_err(fault))
            }),
            id::LOG_APPEND => rpc::handle(req, method::LOG_APPEND, |a| {
                Ok(if a.record.len() > MAX_PIECE {
                    Err(Fault::TooLarge)
                } else {
                    check_key(&a.log).and_then(|()| self.store.log_append(ns, &a.log, &a.record).map_err(fault))
                })
            }),
            id::LOG_READ => rpc::handle(req, method::LOG_READ, |r| Ok(self.log_read(ns, r.log, r.seq, r.offset))),
            id::LOG_LEN => {
                rpc::handle(req, method::LOG_LEN, |log| Ok(check_key(&log).map(|()| self.store.log_len(ns, &log))))
            }
            id::USAGE => rpc::handle(req, method::USAGE, |()| {
                let u = self.store.usage(ns);
                Ok(Ok::<_, Fault>(Usage { bytes: u.bytes, keys: u.keys, records: u.records, quota }))
            }),
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    fn handle_admin(&mut self, badge: u64, req: &impl Args) -> Response {
        if !self.dir.is_admin(badge) {
            return Err(ServiceError::Denied);
        }
        let report = |h: store::Health| proto::Health {
            generation: h.generation,
            blocks: h.blocks,
            free_blocks: h.free_blocks,
            namespaces: h.namespaces,
            objects: h.objects,
            damaged: h.damaged.len() as u64,
            read_only: h.read_only,
        };
        match req.method() {
            id::HEALTH => rpc::handle(req, method::HEALTH, |()| Ok(Ok::<_, Fault>(report(self.store.health())))),
            id::SCRUB => rpc::handle(req, method::SCRUB, |()| Ok(self.store.scrub().map(report).map_err(fault))),
            id::USAGE_ALL => rpc::handle(req, method::USAGE_ALL, |first| {
                let all = self.store.usage_all();
                let page: Vec<NamedUsage> = all
                    .into_iter()
                    .skip(first as usize)
                    .take(USAGE_PAGE)
                    .map(|(namespace, u)| NamedUsage {
                        namespace,
                        usage: Usage { bytes: u.bytes, keys: u.keys, records: u.records, quota: u.quota.unwrap_or(0) },
                    })
                    .collect();
                Ok(Ok::<_, Fault>(page))
            }),
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    /// A piece of a value or record, read whole once and cached until the store changes.
    fn cached(&mut self, ns: &str, what: (u8, Vec<u8>, u64), offset: u32) -> Answer<Piece> {
        let generation = self.store.generation();
        if let Some(c) = &self.cache
            && c.generation == generation
            && c.ns == ns
            && c.what == what
        {
            return piece(&c.bytes, offset);
        }
        let bytes = if what.0 == 0 {
            self.store.get(ns, &what.1).map_err(fault)?
        } else {
            let mut r = self.store.log_read(ns, &what.1, what.2, 1).map_err(fault)?;
            r.pop().ok_or(Fault::NotFound)?.1
        };
        let p = piece(&bytes, offset);
        self.cache = Some(Cached { generation, ns: String::from(ns), what, bytes });
        p
    }

    fn get(&mut self, ns: &str, key: Vec<u8>, offset: u32) -> Answer<Piece> {
        check_key(&key)?;
        self.cached(ns, (0, key, 0), offset)
    }

    fn log_read(&mut self, ns: &str, log: Vec<u8>, seq: u64, offset: u32) -> Answer<Piece> {
        check_key(&log)?;
        self.cached(ns, (1, log, seq), offset)
    }

    fn begin(&mut self, badge: u64, ns: &str) -> Answer<u64> {
        let mine = self.txns.values().filter(|t| t.owner == badge).count();
        if mine >= MAX_TRANSACTIONS || self.txns.len() >= MAX_OPEN_TOTAL {
            return Err(Fault::Limit);
        }
        let id = self.next_txn;
        self.next_txn += 1;
        self.txns.insert(id, Txn { owner: badge, ns: String::from(ns), ops: Vec::new(), bytes: 0 });
        Ok(id)
    }

    /// The caller's transaction `txn` (in its current namespace).
    fn mine(&mut self, badge: u64, ns: &str, txn: u64) -> Answer<&mut Txn> {
        match self.txns.get_mut(&txn) {
            Some(t) if t.owner == badge && t.ns == ns => Ok(t),
            _ => Err(Fault::NoTransaction),
        }
    }

    fn take(&mut self, badge: u64, ns: &str, txn: u64) -> Answer<Txn> {
        self.mine(badge, ns, txn)?;
        self.txns.remove(&txn).ok_or(Fault::NoTransaction)
    }

    #[allow(clippy::too_many_arguments)]
    fn stage(
        &mut self,
        badge: u64,
        ns: &str,
        quota: u64,
        txn: u64,
        key: Vec<u8>,
        total: u32,
        offset: u32,
        bytes: Vec<u8>,
    ) -> Answer<()> {
        self.mine(badge, ns, txn)?;
        check_key(&key)?;
        if bytes.len() > MAX_PIECE || total as usize > MAX_VALUE {
            return Err(Fault::TooLarge);
        }
        if offset as usize + bytes.len() > total as usize {
            return Err(Fault::Invalid);
        }
        let client: usize = self.txns.values().filter(|t| t.owner == badge).map(|t| t.bytes).sum();
        let all: usize = self.txns.values().map(|t| t.bytes).sum();
        if client + bytes.len() > (quota.min(MAX_STAGED as u64) as usize) {
            return Err(if client + bytes.len() > MAX_STAGED {
                Fault::Limit
            } else {
                Fault::QuotaExceeded { used: (client + bytes.len()) as u64, quota }
            });
        }
        if all + bytes.len() > MAX_STAGED_TOTAL {
            return Err(Fault::Limit);
        }
        let t = self.mine(badge, ns, txn)?;
        if offset == 0 {
            // A value started again replaces its unfinished staging.
            if let Some(Staged::Put { key: k, total: tot, value }) = t.ops.last()
                && *k == key
                && value.len() < *tot as usize
            {
                t.bytes -= value.len();
                t.ops.pop();
            }
            if t.ops.len() >= MAX_OPS {
                return Err(Fault::TooLarge);
            }
            t.bytes += bytes.len();
            t.ops.push(Staged::Put { key, total, value: bytes });
            return Ok(());
        }
        match t.ops.last_mut() {
            Some(Staged::Put { key: k, total: tot, value })
                if *k == key && *tot == total && value.len() == offset as usize =>
            {
                value.extend_from_slice(&bytes);
                t.bytes += bytes.len();
                Ok(())
            }
            _ => Err(Fault::Invalid),
        }
    }

    fn stage_delete(&mut self, badge: u64, ns: &str, txn: u64, key: Vec<u8>) -> Answer<()> {
        let t = self.mine(badge, ns, txn)?;
        check_key(&key)?;
        if t.ops.len() >= MAX_OPS {
            return Err(Fault::TooLarge);
        }
        t.ops.push(Staged::Delete { key });
        Ok(())
    }

    fn commit(&mut self, badge: u64, ns: &str, txn: u64) -> Answer<()> {
        let t = self.take(badge, ns, txn)?;
        let mut ops = Vec::with_capacity(t.ops.len());
        for op in t.ops {
            ops.push(match op {
                Staged::Put { key, total, value } => {
                    if value.len() != total as usize {
                        return Err(Fault::Invalid);
                    }
                    Op::Put { key, value }
                }
                Staged::Delete { key } => Op::Delete { key },
            });
        }
        self.store.commit(ns, &ops).map_err(fault)
    }
}

/// Re-exported for the binary: what the store reports at start-up.
pub use store::{Health, Recovery};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{MemDisk, Rng};
    use ozone_agent_sdk::protocol::Method;
    use ozone_agent_sdk::protocol::store::{Get, List, LogAppend, LogRead, Put, Stage, StageDelete};
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use std::collections::HashMap;

    struct Bytes(u64, Vec<u8>);

    impl Args for Bytes {
        fn method(&self) -> u64 {
            self.0
        }
        fn payload<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
            postcard::from_bytes(&self.1).map_err(|_| ServiceError::BadRequest)
        }
    }

    struct Dir(HashMap<u64, ClientPolicy>);

    /// The shell's badge in these tests: an administrator with no namespace.
    const SHELL: u64 = 3;

    impl Directory for Dir {
        fn client(&mut self, badge: u64) -> Option<ClientPolicy> {
            self.0.get(&badge).cloned()
        }
        fn is_admin(&mut self, badge: u64) -> bool {
            badge == SHELL
        }
    }

    const A: u64 = 11;
    const B: u64 = 12;
    const SMALL: u64 = 13;

    fn service() -> Service<MemDisk, Dir> {
        let store = Store::format(MemDisk::new(1024), &[5; 32], [1; 16]).unwrap();
        let mut d = HashMap::new();
        d.insert(A, ClientPolicy { namespace: "alice".into(), quota_bytes: 2 << 20, run: 1 });
        d.insert(B, ClientPolicy { namespace: "bob".into(), quota_bytes: 2 << 20, run: 1 });
        d.insert(SMALL, ClientPolicy { namespace: "small".into(), quota_bytes: 8192, run: 1 });
        Service::new(store, Dir(d))
    }

    fn call<Q: Serialize, R: DeserializeOwned>(
        s: &mut Service<MemDisk, Dir>,
        who: u64,
        m: Method<Q, R>,
        req: &Q,
    ) -> Result<R, ServiceError> {
        let payload = Bytes(m.id(), postcard::to_allocvec(req).unwrap());
        rpc::answer_of(m, &s.handle(who, &payload))
    }

    fn put_big(s: &mut Service<MemDisk, Dir>, who: u64, key: &[u8], value: &[u8]) -> Answer<()> {
        let txn = call(s, who, method::BEGIN, &()).unwrap()?;
        let mut off = 0;
        while off < value.len() || off == 0 {
            let end = (off + MAX_PIECE).min(value.len());
            let st = Stage {
                txn,
                key: key.to_vec(),
                total: value.len() as u32,
                offset: off as u32,
                bytes: value[off..end].to_vec(),
            };
            call(s, who, method::STAGE, &st).unwrap()?;
            off = end;
            if value.is_empty() {
                break;
            }
        }
        call(s, who, method::COMMIT, &txn).unwrap()
    }

    fn get_all(s: &mut Service<MemDisk, Dir>, who: u64, key: &[u8]) -> Answer<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let p = call(s, who, method::GET, &Get { key: key.to_vec(), offset: out.len() as u32 }).unwrap()?;
            out.extend_from_slice(&p.bytes);
            if out.len() >= p.total as usize {
                return Ok(out);
            }
        }
    }

    #[test]
    fn each_client_reaches_its_own_namespace_only() {
        let mut s = service();
        call(&mut s, A, method::PUT, &Put { key: b"k".to_vec(), value: b"alice's".to_vec() }).unwrap().unwrap();
        call(&mut s, B, method::PUT, &Put { key: b"k".to_vec(), value: b"bob's".to_vec() }).unwrap().unwrap();
        assert_eq!(get_all(&mut s, A, b"k").unwrap(), b"alice's");
        assert_eq!(get_all(&mut s, B, b"k").unwrap(), b"bob's");
        call(&mut s, A, method::PUT, &Put { key: b"only-a".to_vec(), value: b"x".to_vec() }).unwrap().unwrap();
        assert_eq!(get_all(&mut s, B, b"only-a"), Err(Fault::NotFound));
        assert_eq!(call(&mut s, B, method::DELETE, &b"only-a".to_vec()).unwrap(), Err(Fault::NotFound));
        let l = call(&mut s, B, method::LIST, &List { after: None, max: 100 }).unwrap().unwrap();
        assert_eq!(l, [Entry { key: b"k".to_vec(), len: 5 }]);
        // Keys that look like paths or names of other namespaces are just keys.
        call(&mut s, B, method::PUT, &Put { key: b"../alice/k".to_vec(), value: b"y".to_vec() }).unwrap().unwrap();
        assert_eq!(get_all(&mut s, A, b"k").unwrap(), b"alice's");
        assert_eq!(s.store().namespaces(), ["alice", "bob"]);
        // A badge the directory does not know is refused.
        assert_eq!(call(&mut s, 99, method::GET, &Get { key: b"k".to_vec(), offset: 0 }), Err(ServiceError::Denied));
        assert_eq!(call(&mut s, 0, method::USAGE, &()), Err(ServiceError::Denied));
    }

    #[test]
    fn big_values_in_pieces_and_atomic_transactions() {
        let mut s = service();
        let big: Vec<u8> = (0..MAX_VALUE).map(|i| (i * 7) as u8).collect();
        put_big(&mut s, A, b"big", &big).unwrap();
        assert_eq!(get_all(&mut s, A, b"big").unwrap(), big);
        put_big(&mut s, A, b"empty", b"").unwrap();
        assert_eq!(get_all(&mut s, A, b"empty").unwrap(), b"");
        // Several keys at once; a delete of a missing key refuses the whole transaction.
        let txn = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
        let st = Stage { txn, key: b"x".to_vec(), total: 1, offset: 0, bytes: b"1".to_vec() };
        call(&mut s, A, method::STAGE, &st).unwrap().unwrap();
        call(&mut s, A, method::STAGE_DELETE, &StageDelete { txn, key: b"missing".to_vec() }).unwrap().unwrap();
        assert_eq!(call(&mut s, A, method::COMMIT, &txn).unwrap(), Err(Fault::NotFound));
        assert_eq!(get_all(&mut s, A, b"x"), Err(Fault::NotFound));
        assert_eq!(call(&mut s, A, method::COMMIT, &txn).unwrap(), Err(Fault::NoTransaction), "ended");
        // A value not fully staged cannot be committed.
        let txn = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
        let st = Stage { txn, key: b"x".to_vec(), total: 10, offset: 0, bytes: b"12345".to_vec() };
        call(&mut s, A, method::STAGE, &st).unwrap().unwrap();
        assert_eq!(call(&mut s, A, method::COMMIT, &txn).unwrap(), Err(Fault::Invalid));
        assert_eq!(s.open_transactions(), 0);
        // Pieces out of order, past the end, or for another key are refused.
        let txn = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
        let mut st = Stage { txn, key: b"x".to_vec(), total: 10, offset: 0, bytes: b"12345".to_vec() };
        call(&mut s, A, method::STAGE, &st).unwrap().unwrap();
        st.offset = 6;
        assert_eq!(call(&mut s, A, method::STAGE, &st).unwrap(), Err(Fault::Invalid));
        st.offset = 5;
        st.bytes = b"123456".to_vec();
        assert_eq!(call(&mut s, A, method::STAGE, &st).unwrap(), Err(Fault::Invalid));
        st.bytes = b"67890".to_vec();
        st.key = b"y".to_vec();
        assert_eq!(call(&mut s, A, method::STAGE, &st).unwrap(), Err(Fault::Invalid));
        st.key = b"x".to_vec();
        st.total = 11;
        assert_eq!(call(&mut s, A, method::STAGE, &st).unwrap(), Err(Fault::Invalid));
        st.total = 10;
        call(&mut s, A, method::STAGE, &st).unwrap().unwrap();
        call(&mut s, A, method::COMMIT, &txn).unwrap().unwrap();
        assert_eq!(get_all(&mut s, A, b"x").unwrap(), b"1234567890");
        assert_eq!(call(&mut s, A, method::GET, &Get { key: b"x".to_vec(), offset: 11 }).unwrap(), Err(Fault::Invalid));
    }

    /// A client that stops with transactions open and is started again (Studio's `run` for
    /// its id changes) finds none of them: they would otherwise hold its transaction slots and
    /// staged bytes for good, and a few crashes would lock it out of writing.
    #[test]
    fn a_restarted_client_starts_with_no_transactions() {
        let mut s = service();
        let mut old = Vec::new();
        for _ in 0..MAX_TRANSACTIONS {
            let txn = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
            let st = Stage { txn, key: b"k".to_vec(), total: 4, offset: 0, bytes: b"ab".to_vec() };
            call(&mut s, A, method::STAGE, &st).unwrap().unwrap();
            old.push(txn);
        }
        assert_eq!(call(&mut s, A, method::BEGIN, &()).unwrap(), Err(Fault::Limit));
        let b = call(&mut s, B, method::BEGIN, &()).unwrap().unwrap();
        // Alice's program stops and starts again.
        s.dir.0.get_mut(&A).unwrap().run = 2;
        assert_eq!(s.open_transactions(), MAX_TRANSACTIONS + 1, "nothing dropped before it asks");
        let fresh = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
        assert_eq!(s.open_transactions(), 2, "its old transactions are gone, Bob's stays");
        for txn in old {
            assert_eq!(call(&mut s, A, method::COMMIT, &txn).unwrap(), Err(Fault::NoTransaction));
        }
        assert_eq!(call(&mut s, A, method::ABORT, &fresh).unwrap(), Ok(()));
        assert_eq!(call(&mut s, B, method::ABORT, &b).unwrap(), Ok(()));
        assert_eq!(get_all(&mut s, A, b"k"), Err(Fault::NotFound), "nothing half-staged was written");
    }

    #[test]
    fn transactions_are_their_clients_own() {
        let mut s = service();
        let txn = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
        let st = Stage { txn, key: b"k".to_vec(), total: 1, offset: 0, bytes: b"a".to_vec() };
        // Bob cannot stage into, commit, or abort Alice's transaction, nor guess others.
        assert_eq!(call(&mut s, B, method::STAGE, &st).unwrap(), Err(Fault::NoTransaction));
        assert_eq!(
            call(&mut s, B, method::STAGE_DELETE, &StageDelete { txn, key: b"k".to_vec() }).unwrap(),
            Err(Fault::NoTransaction)
        );
        assert_eq!(call(&mut s, B, method::COMMIT, &txn).unwrap(), Err(Fault::NoTransaction));
        assert_eq!(call(&mut s, B, method::ABORT, &txn).unwrap(), Err(Fault::NoTransaction));
        for bogus in [0, txn + 1, u64::MAX] {
            assert_eq!(call(&mut s, A, method::COMMIT, &bogus).unwrap(), Err(Fault::NoTransaction));
        }
        // Alice's is untouched.
        call(&mut s, A, method::STAGE, &st).unwrap().unwrap();
        call(&mut s, A, method::COMMIT, &txn).unwrap().unwrap();
        assert_eq!(get_all(&mut s, A, b"k").unwrap(), b"a");
        assert_eq!(get_all(&mut s, B, b"k"), Err(Fault::NotFound));
        // Forgotten with its client.
        let txn = call(&mut s, B, method::BEGIN, &()).unwrap().unwrap();
        s.forget(B);
        assert_eq!(call(&mut s, B, method::COMMIT, &txn).unwrap(), Err(Fault::NoTransaction));
    }

    #[test]
    fn a_client_cannot_exhaust_the_server() {
        let mut s = service();
        let mut txns = Vec::new();
        for _ in 0..MAX_TRANSACTIONS {
            txns.push(call(&mut s, A, method::BEGIN, &()).unwrap().unwrap());
        }
        assert_eq!(call(&mut s, A, method::BEGIN, &()).unwrap(), Err(Fault::Limit));
        // Others still can.
        let tb = call(&mut s, B, method::BEGIN, &()).unwrap().unwrap();
        call(&mut s, B, method::ABORT, &tb).unwrap().unwrap();
        // Staging is bounded: MAX_STAGED bytes in all of a client's transactions.
        let mut staged = 0usize;
        let mut refused = None;
        'outer: for (n, &txn) in txns.iter().enumerate() {
            for k in 0..MAX_OPS {
                let key = alloc::format!("k{n}-{k}").into_bytes();
                let mut off = 0;
                while off < MAX_VALUE {
                    let n = MAX_PIECE.min(MAX_VALUE - off);
                    let st = Stage {
                        txn,
                        key: key.clone(),
                        total: MAX_VALUE as u32,
                        offset: off as u32,
                        bytes: alloc::vec![0; n],
                    };
                    match call(&mut s, A, method::STAGE, &st).unwrap() {
                        Ok(()) => staged += n,
                        Err(f) => {
                            refused = Some(f);
                            break 'outer;
                        }
                    }
                    off += MAX_PIECE;
                }
            }
        }
        assert_eq!(refused, Some(Fault::Limit));
        assert!(staged <= MAX_STAGED && staged + MAX_PIECE > MAX_STAGED, "{staged}");
        for t in txns {
            call(&mut s, A, method::ABORT, &t).unwrap().unwrap();
        }
        assert_eq!(s.open_transactions(), 0);
    }

    #[test]
    fn staging_and_writing_past_the_quota() {
        let mut s = service();
        // 8 KiB of quota: two blocks.
        let txn = call(&mut s, SMALL, method::BEGIN, &()).unwrap().unwrap();
        let mut off = 0;
        let fault = loop {
            let st = Stage { txn, key: b"k".to_vec(), total: 20_000, offset: off, bytes: alloc::vec![1; MAX_PIECE] };
            match call(&mut s, SMALL, method::STAGE, &st).unwrap() {
                Ok(()) => off += MAX_PIECE as u32,
                Err(f) => break f,
            }
        };
        assert!(matches!(fault, Fault::QuotaExceeded { quota: 8192, .. }), "{fault:?}");
        assert!(off as usize <= 8192);
        call(&mut s, SMALL, method::ABORT, &txn).unwrap().unwrap();
        call(&mut s, SMALL, method::PUT, &Put { key: b"a".to_vec(), value: alloc::vec![1; 700] }).unwrap().unwrap();
        call(&mut s, SMALL, method::PUT, &Put { key: b"b".to_vec(), value: alloc::vec![2; 700] }).unwrap().unwrap();
        let r = call(&mut s, SMALL, method::PUT, &Put { key: b"c".to_vec(), value: alloc::vec![3; 1] }).unwrap();
        assert_eq!(r, Err(Fault::QuotaExceeded { used: 2 * 4096 + 1 + 1 + 32, quota: 8192 }));
        let r =
            call(&mut s, SMALL, method::LOG_APPEND, &LogAppend { log: b"l".to_vec(), record: b"r".to_vec() }).unwrap();
        assert!(matches!(r, Err(Fault::QuotaExceeded { .. })));
        assert_eq!(get_all(&mut s, SMALL, b"a").unwrap(), [1; 700]);
        let u = call(&mut s, SMALL, method::USAGE, &()).unwrap().unwrap();
        assert_eq!(u, Usage { bytes: 8192, keys: 2, records: 0, quota: 8192 });
    }

    #[test]
    fn logs_through_the_service() {
        let mut s = service();
        for i in 0..5u64 {
            let r = call(
                &mut s,
                A,
                method::LOG_APPEND,
                &LogAppend { log: b"d".to_vec(), record: alloc::vec![i as u8; 700] },
            );
            assert_eq!(r.unwrap(), Ok(i));
        }
        assert_eq!(call(&mut s, A, method::LOG_LEN, &b"d".to_vec()).unwrap(), Ok(5));
        assert_eq!(call(&mut s, B, method::LOG_LEN, &b"d".to_vec()).unwrap(), Ok(0));
        let p = call(&mut s, A, method::LOG_READ, &LogRead { log: b"d".to_vec(), seq: 3, offset: 0 }).unwrap().unwrap();
        assert_eq!(p, Piece { total: 700, bytes: alloc::vec![3; 700] });
        let r = call(&mut s, B, method::LOG_READ, &LogRead { log: b"d".to_vec(), seq: 3, offset: 0 }).unwrap();
        assert_eq!(r, Err(Fault::NotFound));
        let r = call(&mut s, A, method::LOG_READ, &LogRead { log: b"d".to_vec(), seq: 5, offset: 0 }).unwrap();
        assert_eq!(r, Err(Fault::NotFound));
        let r = call(
            &mut s,
            A,
            method::LOG_APPEND,
            &LogAppend { log: b"d".to_vec(), record: alloc::vec![0; MAX_PIECE + 1] },
        );
        assert_eq!(r.unwrap(), Err(Fault::TooLarge));
    }

    #[test]
    fn odd_and_hostile_payloads() {
        let mut s = service();
        let big_key = alloc::vec![1; MAX_KEY + 1];
        assert_eq!(
            call(&mut s, A, method::GET, &Get { key: big_key.clone(), offset: 0 }).unwrap(),
            Err(Fault::TooLarge)
        );
        assert_eq!(call(&mut s, A, method::GET, &Get { key: Vec::new(), offset: 0 }).unwrap(), Err(Fault::Invalid));
        assert_eq!(
            call(&mut s, A, method::PUT, &Put { key: big_key.clone(), value: Vec::new() }).unwrap(),
            Err(Fault::TooLarge)
        );
        assert_eq!(
            call(&mut s, A, method::PUT, &Put { key: b"k".to_vec(), value: alloc::vec![0; MAX_PIECE + 1] }).unwrap(),
            Err(Fault::TooLarge)
        );
        assert_eq!(
            call(&mut s, A, method::LIST, &List { after: Some(big_key), max: u32::MAX }).unwrap(),
            Err(Fault::TooLarge)
        );
        let txn = call(&mut s, A, method::BEGIN, &()).unwrap().unwrap();
        let st = Stage { txn, key: b"k".to_vec(), total: u32::MAX, offset: 0, bytes: Vec::new() };
        assert_eq!(call(&mut s, A, method::STAGE, &st).unwrap(), Err(Fault::TooLarge));
        let st = Stage { txn, key: b"k".to_vec(), total: 5, offset: u32::MAX, bytes: alloc::vec![1; 5] };
        assert_eq!(call(&mut s, A, method::STAGE, &st).unwrap(), Err(Fault::Invalid));
        // Random bytes for every method (and unknown methods): an answer, never a panic.
        let mut rng = Rng::new(5);
        for _ in 0..3000 {
            let m = rng.below(20);
            let n = rng.below(1000) as usize;
            let payload: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let _ = s.handle(A, &Bytes(m, payload));
        }
        for m in 16..64 {
            assert_eq!(s.handle(A, &Bytes(m, Vec::new())).err(), Some(ServiceError::UnknownMethod));
        }
        assert_eq!(s.handle(A, &Bytes(method::GET.id(), alloc::vec![0xff; 3])).err(), Some(ServiceError::BadRequest));
    }

    #[test]
    fn only_administrators_see_every_namespace() {
        let mut s = service();
        call(&mut s, A, method::PUT, &Put { key: b"k".to_vec(), value: b"v".to_vec() }).unwrap().unwrap();
        call(&mut s, B, method::PUT, &Put { key: b"k".to_vec(), value: b"w".to_vec() }).unwrap().unwrap();
        for who in [A, B, 99] {
            assert_eq!(call(&mut s, who, method::HEALTH, &()), Err(ServiceError::Denied));
            assert_eq!(call(&mut s, who, method::SCRUB, &()), Err(ServiceError::Denied));
            assert_eq!(call(&mut s, who, method::USAGE_ALL, &0), Err(ServiceError::Denied));
        }
        let h = call(&mut s, SHELL, method::HEALTH, &()).unwrap().unwrap();
        assert_eq!((h.namespaces, h.objects, h.damaged, h.read_only), (2, 2, 0, false));
        assert_eq!(call(&mut s, SHELL, method::SCRUB, &()).unwrap().unwrap().damaged, 0);
        let all = call(&mut s, SHELL, method::USAGE_ALL, &0).unwrap().unwrap();
        assert_eq!(all.iter().map(|n| n.namespace.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(all[0].usage.bytes, 1 + 1 + 32, "a small value is charged its bytes, its key's and 32");
        assert_eq!(call(&mut s, SHELL, method::USAGE_ALL, &2).unwrap().unwrap(), []);
        // The administrator has no namespace of its own.
        assert_eq!(call(&mut s, SHELL, method::USAGE, &()), Err(ServiceError::Denied));
    }
}
