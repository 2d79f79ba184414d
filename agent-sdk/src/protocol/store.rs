//! The `store` interface (the storage server): a program's own durable, encrypted key/value
//! namespace and hash-chained logs.
//!
//! **A client reaches its own namespace only.** The server takes the namespace (and the quota)
//! from the badge of the caller's capability — Studio's program id — through Studio, never from
//! the message: no request names a namespace.
//!
//! **Values travel in pieces.** A message carries at most 960 bytes, so a value longer than
//! [`MAX_PIECE`] bytes is written through a transaction: `BEGIN` gives a transaction id; `STAGE`
//! adds pieces of a value in order (the first piece of a key says the value's total length,
//! each next piece starts where the last ended) and `STAGE_DELETE` a deletion; `COMMIT` applies
//! every staged operation at once, atomically, and it is durable when the reply comes (after a
//! power cut either all of it is there or none); `ABORT` drops it. `GET` reads a value from an
//! offset, a piece at a time, and says the total length. `PUT` and `DELETE` are one-message
//! transactions for small values. A transaction belongs to the client that began it: another
//! client's id is answered as unknown.
//!
//! **Logs** are append-only and hash-chained (each record is chained with SHA-256 over the
//! previous hash and the record); `LOG_READ` checks the chain up to the record it answers and
//! reports the first broken link as [`Fault::BrokenChain`].
//!
//! `HEALTH`, `SCRUB` and `USAGE_ALL` are for the system's administrators (the shell's `disk`):
//! the server refuses them (`Denied`) to other callers.
//!
//! Answers are [`Answer`]s: the value, or a [`Fault`] of the store. The framework's
//! [`ServiceError`](super::ServiceError)s remain for requests that do not decode (`BadRequest`)
//! and for callers the server has no namespace for (`Denied`).

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "store";

super::methods! {
    /// [`Get`] → [`Answer`]`<`[`Piece`]`>`: up to [`MAX_PIECE`] bytes of a value from an offset.
    GET = 0: Get => Answer<Piece>;
    /// `()` → [`Answer`]`<u64>`: a new transaction's id.
    BEGIN = 1: () => Answer<u64>;
    /// [`Stage`] → [`Answer`]`<()>`: the next piece of a value to put.
    STAGE = 2: Stage => Answer<()>;
    /// [`StageDelete`] → [`Answer`]`<()>`: a key to delete.
    STAGE_DELETE = 3: StageDelete => Answer<()>;
    /// `u64` transaction → [`Answer`]`<()>`: apply it, atomically and durably.
    COMMIT = 4: u64 => Answer<()>;
    /// `u64` transaction → [`Answer`]`<()>`: drop it.
    ABORT = 5: u64 => Answer<()>;
    /// [`Put`] → [`Answer`]`<()>`: store a small value, durably.
    PUT = 6: Put => Answer<()>;
    /// `Vec<u8>` key → [`Answer`]`<()>`: delete a key, durably.
    DELETE = 7: Vec<u8> => Answer<()>;
    /// [`List`] → [`Answer`]`<Vec<`[`Entry`]`>>`: keys in order, at most [`LIST_PAGE`].
    LIST = 8: List => Answer<Vec<Entry>>;
    /// [`LogAppend`] → [`Answer`]`<u64>`: the record's sequence number.
    LOG_APPEND = 9: LogAppend => Answer<u64>;
    /// [`LogRead`] → [`Answer`]`<`[`Piece`]`>`: a piece of one record, its link checked.
    LOG_READ = 10: LogRead => Answer<Piece>;
    /// `Vec<u8>` log → [`Answer`]`<u64>`: the log's next sequence number (0 if none).
    LOG_LEN = 11: Vec<u8> => Answer<u64>;
    /// `()` → [`Answer`]`<`[`Usage`]`>` of the caller's namespace.
    USAGE = 12: () => Answer<Usage>;
    /// `()` → [`Answer`]`<`[`Health`]`>`, without reading the disk (administrators only).
    HEALTH = 13: () => Answer<Health>;
    /// `()` → [`Answer`]`<`[`Health`]`>` after reading and authenticating everything
    /// (administrators only).
    SCRUB = 14: () => Answer<Health>;
    /// `u32` first index → [`Answer`]`<Vec<`[`NamedUsage`]`>>`: every namespace's use, at most
    /// [`USAGE_PAGE`] from the index (administrators only).
    USAGE_ALL = 15: u32 => Answer<Vec<NamedUsage>>;
}

/// The most bytes of a value (or record) one message carries.
pub const MAX_PIECE: usize = 768;
/// The longest key (and log name).
pub const MAX_KEY: usize = 64;
/// The longest value (and log record read back; records are appended one message each, at most
/// [`MAX_PIECE`] bytes).
pub const MAX_VALUE: usize = 64 * 1024;
/// The most operations in one transaction.
pub const MAX_OPS: usize = 64;
/// The most value bytes one client may have staged, in all its open transactions together.
pub const MAX_STAGED: usize = 1024 * 1024;
/// The most transactions one client may have open.
pub const MAX_TRANSACTIONS: usize = 4;
/// The most [`Entry`]s one `LIST` answers.
pub const LIST_PAGE: usize = 12;
/// The most [`NamedUsage`]s one `USAGE_ALL` answers.
pub const USAGE_PAGE: usize = 10;

/// What the store answers: the value, or why not.
pub type Answer<T> = Result<T, Fault>;

/// Why the store refused or failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// No such key, log or record.
    NotFound,
    /// The caller's namespace would pass its quota (see [`Usage::bytes`]).
    QuotaExceeded { used: u64, quota: u64 },
    /// The disk has no room (nothing stored was touched).
    DiskFull,
    /// A key, value, record, piece or transaction over its limit.
    TooLarge,
    /// An empty key, a piece out of order or past the value's end, or a commit with a value not
    /// fully staged.
    Invalid,
    /// The object is damaged on disk (detected by its authentication; only it is lost).
    Corrupt,
    /// The log's hash chain is broken at this record.
    BrokenChain { seq: u64 },
    /// No such transaction (never begun, already ended, or another client's).
    NoTransaction,
    /// The caller has [`MAX_TRANSACTIONS`] open, or [`MAX_STAGED`] bytes staged, or the server
    /// has no room for more.
    Limit,
    /// The store cannot write now (a device error: it is read-only until the server restarts).
    Unavailable,
}

/// Request of `GET`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    pub key: Vec<u8>,
    pub offset: u32,
}

/// A piece of a value or record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The whole value's length.
    pub total: u32,
    /// Up to [`MAX_PIECE`] bytes from the offset asked for.
    pub bytes: Vec<u8>,
}

/// Request of `STAGE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub txn: u64,
    pub key: Vec<u8>,
    /// The value's total length (the same in every piece of it).
    pub total: u32,
    /// Where this piece starts: 0 for the first, then where the previous one ended. A put of a
    /// key already staged in the transaction starts over at 0.
    pub offset: u32,
    /// At most [`MAX_PIECE`] bytes.
    pub bytes: Vec<u8>,
}

/// Request of `STAGE_DELETE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageDelete {
    pub txn: u64,
    pub key: Vec<u8>,
}

/// Request of `PUT`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: Vec<u8>,
    /// At most [`MAX_PIECE`] bytes.
    pub value: Vec<u8>,
}

/// Request of `LIST`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// Keys after this one (from the first with `None`).
    pub after: Option<Vec<u8>>,
    /// At most this many (and at most [`LIST_PAGE`]).
    pub max: u32,
}

/// A key and its value's length.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: Vec<u8>,
    pub len: u32,
}

/// Request of `LOG_APPEND`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogAppend {
    pub log: Vec<u8>,
    /// At most [`MAX_PIECE`] bytes.
    pub record: Vec<u8>,
}

/// Request of `LOG_READ`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRead {
    pub log: Vec<u8>,
    pub seq: u64,
    pub offset: u32,
}

/// The caller's use of its namespace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes charged: whole 4 KiB blocks of values and records; a value of at most 256 bytes
    /// (kept in the index) is charged its bytes, its key's and 32.
    pub bytes: u64,
    pub keys: u64,
    pub records: u64,
    /// The quota Studio gives the caller.
    pub quota: u64,
}

/// The store's state (the answer of `HEALTH` and `SCRUB`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub generation: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub namespaces: u64,
    /// Values and log records.
    pub objects: u64,
    /// Objects (or metadata) found damaged.
    pub damaged: u64,
    /// Writes are refused after a device error (until the server restarts).
    pub read_only: bool,
}

/// A namespace's use (the answer of `USAGE_ALL`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedUsage {
    pub namespace: alloc::string::String,
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_PAYLOAD, decode, encode};
    use alloc::vec;

    #[test]
    fn the_largest_messages_fit() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let key = vec![0xff; MAX_KEY];
        let s = Stage { txn: u64::MAX, key: key.clone(), total: u32::MAX, offset: u32::MAX, bytes: vec![1; MAX_PIECE] };
        let n = encode(&s, &mut words).unwrap();
        assert_eq!(decode::<Stage>(&words, n).unwrap(), s);
        let p: Answer<Piece> = Ok(Piece { total: u32::MAX, bytes: vec![2; MAX_PIECE] });
        let n = encode(&p, &mut words).unwrap();
        assert_eq!(decode::<Answer<Piece>>(&words, n).unwrap(), p);
        let list: Answer<Vec<Entry>> = Ok(vec![Entry { key: key.clone(), len: u32::MAX }; LIST_PAGE]);
        let n = encode(&list, &mut words).unwrap();
        assert_eq!(decode::<Answer<Vec<Entry>>>(&words, n).unwrap(), list);
        let put = Put { key: key.clone(), value: vec![3; MAX_PIECE] };
        encode(&put, &mut words).unwrap();
        let app = LogAppend { log: key.clone(), record: vec![3; MAX_PIECE] };
        encode(&app, &mut words).unwrap();
        let l = List { after: Some(key), max: u32::MAX };
        encode(&l, &mut words).unwrap();
        let u = Usage { bytes: u64::MAX, keys: u64::MAX, records: u64::MAX, quota: u64::MAX };
        let all: Answer<Vec<NamedUsage>> = Ok(vec![NamedUsage { namespace: "n".repeat(32), usage: u }; USAGE_PAGE]);
        let n = encode(&all, &mut words).unwrap();
        assert_eq!(decode::<Answer<Vec<NamedUsage>>>(&words, n).unwrap(), all);
    }
}
