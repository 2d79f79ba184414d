//! A typed client of the storage server (interface `store`, messages in
//! [`crate::protocol::store`]): this program's own durable, encrypted key/value namespace and
//! hash-chained logs. The server knows the namespace from the caller's identity; there is no
//! way to name another program's.
//!
//! ```ignore
//! let st = Store::connect()?;
//! st.put(b"profile", &bytes)?;                    // durable when it returns (any size ≤ 64 KiB)
//! let v: Option<Vec<u8>> = st.get(b"profile")?;
//! let mut t = st.transaction();                   // several keys, all or nothing
//! t.put(b"a", b"1").delete(b"b");
//! t.commit()?;
//! let seq = st.log_append(b"decisions", b"allowed x")?;
//! for (seq, record) in st.log_read(b"decisions", 0, 100)? { /* chain checked */ }
//! let u = st.usage()?;                            // bytes charged, quota
//! ```
//!
//! Values longer than one message are sent and read in pieces under the hood. A value read in
//! pieces is not isolated from a concurrent write of the same key by another thread of this
//! program (the read then fails with `Invalid` when the length changes).

use alloc::vec::Vec;

use crate::error::AgentError;
use crate::protocol::store::{self as proto, method};
use crate::rpc::Client;

pub use crate::protocol::store::{Entry, Fault, Health, MAX_KEY, MAX_OPS, MAX_VALUE, NamedUsage, Usage};

/// What went wrong: the call itself, or the store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The call failed (no such server, not allowed, the server is gone, ...).
    Agent(AgentError),
    /// The store refused or failed.
    Store(Fault),
}

impl From<AgentError> for Error {
    fn from(e: AgentError) -> Error {
        Error::Agent(e)
    }
}

/// A result of the store client.
pub type Result<T> = core::result::Result<T, Error>;

fn answer<T>(r: crate::error::Result<proto::Answer<T>>) -> Result<T> {
    r?.map_err(Error::Store)
}

/// A connection to the storage server.
#[derive(Clone, Copy, Debug)]
pub struct Store {
    client: Client,
}

impl Store {
    /// Look the server up through Studio (the program must be allowed to use `store`).
    pub fn connect() -> Result<Store> {
        Ok(Store { client: Client::lookup(proto::INTERFACE)? })
    }

    /// Use a capability to the server already in slot `ep`.
    pub fn with_slot(ep: u64) -> Store {
        Store { client: Client::new(ep, proto::INTERFACE) }
    }

    /// The value of `key`, or `None` if there is none. `Store(Corrupt)` if it is damaged on disk.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut total = None;
        loop {
            let req = proto::Get { key: key.to_vec(), offset: out.len() as u32 };
            let piece = match answer(self.client.call(method::GET, &req)) {
                Err(Error::Store(Fault::NotFound)) if total.is_none() => return Ok(None),
                r => r?,
            };
            if *total.get_or_insert(piece.total) != piece.total {
                return Err(Error::Store(Fault::Invalid));
            }
            out.extend_from_slice(&piece.bytes);
            if out.len() >= piece.total as usize {
                return Ok(Some(out));
            }
            if piece.bytes.is_empty() {
                return Err(Error::Agent(AgentError::BadReply));
            }
        }
    }

    /// Store `value` under `key`, durably (at most [`MAX_VALUE`] bytes).
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if value.len() <= proto::MAX_PIECE {
            let req = proto::Put { key: key.to_vec(), value: value.to_vec() };
            return answer(self.client.call(method::PUT, &req));
        }
        let mut t = self.transaction();
        t.put(key, value);
        t.commit()
    }

    /// Delete `key`, durably (`Store(NotFound)` if there is none).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        answer(self.client.call(method::DELETE, &key.to_vec()))
    }

    /// Up to `max` keys after `after` (from the first with `None`), in order, with their
    /// values' lengths.
    pub fn list(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Entry>> {
        let mut out: Vec<Entry> = Vec::new();
        let mut from = after.map(<[u8]>::to_vec);
        while out.len() < max {
            let want = (max - out.len()).min(proto::LIST_PAGE) as u32;
            let page = answer(self.client.call(method::LIST, &proto::List { after: from.clone(), max: want }))?;
            let Some(last) = page.last() else { break };
            from = Some(last.key.clone());
            let short = page.len() < want as usize;
            out.extend(page);
            if short {
                break;
            }
        }
        Ok(out)
    }

    /// A transaction: operations gathered here, sent and applied at [`Transaction::commit`].
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction { store: self, ops: Vec::new() }
    }

    /// Append `record` (at most [`proto::MAX_PIECE`] bytes) to log `log`, durably; its
    /// sequence number.
    pub fn log_append(&self, log: &[u8], record: &[u8]) -> Result<u64> {
        answer(self.client.call(method::LOG_APPEND, &proto::LogAppend { log: log.to_vec(), record: record.to_vec() }))
    }

    /// The next sequence number of log `log` (its length; 0 if there is none).
    pub fn log_len(&self, log: &[u8]) -> Result<u64> {
        answer(self.client.call(method::LOG_LEN, &log.to_vec()))
    }

    /// Up to `max` records of log `log` from `from`, each checked against the hash chain
    /// (`Store(BrokenChain { seq })` at the first bad link).
    pub fn log_read(&self, log: &[u8], from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let end = self.log_len(log)?.min(from.saturating_add(max as u64));
        let mut out = Vec::new();
        for seq in from..end {
            let mut rec = Vec::new();
            loop {
                let req = proto::LogRead { log: log.to_vec(), seq, offset: rec.len() as u32 };
                let piece = answer(self.client.call(method::LOG_READ, &req))?;
                rec.extend_from_slice(&piece.bytes);
                if rec.len() >= piece.total as usize {
                    break;
                }
                if piece.bytes.is_empty() {
                    return Err(Error::Agent(AgentError::BadReply));
                }
            }
            out.push((seq, rec));
        }
        Ok(out)
    }

    /// This program's use of the store, and its quota.
    pub fn usage(&self) -> Result<Usage> {
        answer(self.client.call(method::USAGE, &()))
    }

    /// The store's state, without reading the disk (administrators only: `Service(Denied)`
    /// for others).
    pub fn health(&self) -> Result<Health> {
        answer(self.client.call(method::HEALTH, &()))
    }

    /// The store's state after reading and authenticating everything (administrators only).
    pub fn scrub(&self) -> Result<Health> {
        answer(self.client.call(method::SCRUB, &()))
    }

    /// Every namespace's use (administrators only).
    pub fn usage_all(&self) -> Result<Vec<NamedUsage>> {
        let mut out: Vec<NamedUsage> = Vec::new();
        loop {
            let page = answer(self.client.call(method::USAGE_ALL, &(out.len() as u32)))?;
            let done = page.len() < proto::USAGE_PAGE;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }
}

/// Operations applied together by [`commit`](Transaction::commit): after a power cut either
/// all of them are there or none.
pub struct Transaction<'a> {
    store: &'a Store,
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Transaction<'_> {
    /// Put `value` under `key` (in order with the other operations).
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push((key.to_vec(), Some(value.to_vec())));
        self
    }

    /// Delete `key` (the commit fails with `NotFound` if there is none then).
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push((key.to_vec(), None));
        self
    }

    /// Send the operations and apply them, atomically and durably.
    pub fn commit(self) -> Result<()> {
        let c = &self.store.client;
        let txn = answer(c.call(method::BEGIN, &()))?;
        let staged = self.stage(txn);
        let r = staged.and_then(|()| answer(c.call(method::COMMIT, &txn)));
        if r.is_err() {
            // Gone already if the commit itself failed; otherwise it frees the server's memory.
            let _ = c.call(method::ABORT, &txn);
        }
        r
    }

    fn stage(&self, txn: u64) -> Result<()> {
        let c = &self.store.client;
        for (key, value) in &self.ops {
            match value {
                None => answer(c.call(method::STAGE_DELETE, &proto::StageDelete { txn, key: key.clone() }))?,
                Some(v) => {
                    let total = u32::try_from(v.len()).map_err(|_| Error::Store(Fault::TooLarge))?;
                    let mut offset = 0;
                    loop {
                        let end = (offset + proto::MAX_PIECE).min(v.len());
                        let req = proto::Stage {
                            txn,
                            key: key.clone(),
                            total,
                            offset: offset as u32,
                            bytes: v[offset..end].to_vec(),
                        };
                        answer(c.call(method::STAGE, &req))?;
                        offset = end;
                        if offset >= v.len() {
                            break;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
