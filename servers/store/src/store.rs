//! The store: a crash-consistent, encrypted, copy-on-write key/value store with namespaces,
//! quotas and hash-chained logs, on a [`BlockDevice`].
//!
//! # On disk
//!
//! - Blocks 0 and 1 are the **superblock pair**. Generation `g` is written to block `g mod 2`:
//!   a 32-byte header in the clear (magic `OZSTORE\0`, format version, the key check value) and
//!   a sealed body (generation, nonce reservation, device size, root pointer). The newest
//!   superblock that authenticates is the store's state.
//! - Every other block is **sealed** (XChaCha20-Poly1305, `nonce ‖ ciphertext ‖ tag`) with
//!   associated data `kind ‖ lba ‖ counter`: a block is bound to where it lies and to the one
//!   write that made it, so a block copied elsewhere, or an older block at the same place, fails
//!   authentication. A pointer is `(lba, counter)`, and the counters never repeat (below), so a
//!   pointer names exactly one sealed write.
//! - The **root** (the list of namespaces with a pointer to each one's index), each
//!   namespace's **index** (its keys with the pointers to their blocks, its logs with a pointer
//!   per segment of 256 records) and each log **segment** (its records' pointers and chain
//!   hashes) are chains of metadata blocks, each block written twice (two mirrors) so that one damaged copy
//!   loses nothing. **Objects** (values, log records) are sealed blocks of their own, except
//!   values of at most [`INLINE_MAX`] bytes, which are kept in their namespace's index.
//!
//! # Crash consistency
//!
//! Nothing reachable from the newest durable superblock is ever overwritten. A commit writes
//! its new objects and the new index of every namespace it changes, then the new root, all to
//! free blocks; flushes; writes the next generation's superblock to the *other* slot; flushes;
//! and only then answers. A power cut before the second flush leaves the previous superblock
//! (and everything it reaches) intact — the half-written one fails authentication or is older;
//! after it, the new one is durable. So a commit is all or nothing, and one acknowledged is
//! there after any crash. Blocks freed by a commit become reusable only once it is durable.
//! After a device error the store refuses to write until it is opened again (what reached the
//! disk is then unknown).
//!
//! # Nonces
//!
//! Nonces are `salt ‖ counter`. The salt is new at every open (from the caller's entropy). The
//! counter never repeats even with a constant salt: the superblock records `hi`, and every
//! counter below `hi` may have been used. On open (and when a range runs out) the store first
//! writes and flushes a superblock that raises `hi` by a range (sealed with the counter `hi`
//! itself: such a reservation superblock is a function of the durable state alone, so rewriting
//! it after a crash seals the same plaintext), and only then uses counters from that range.
//! Formatting over an image sealed with the same secret starts above its counters.
//!
//! # What is not detected
//!
//! Rolling the **whole** device back to an older image (or both superblocks and everything they
//! reach) is indistinguishable from a crash: detecting it needs a trusted monotonic counter
//! outside the disk. The counters then restart from the old image's `hi`; the fresh salt of
//! every open keeps nonces apart (a random 128-bit salt collides with negligible probability).
//!
//! # Recovery and damage
//!
//! [`Store::open`] picks the newest authentic superblock, reads the root and every namespace
//! index (either mirror), and rebuilds the free-space map. An index with both mirrors damaged
//! loses that namespace, reported in [`Recovery`]; a damaged root falls back to the older
//! superblock if its tree is intact (reported: the newest generation is lost). Values and log
//! records are read when asked for: a damaged one answers [`Error::Corrupt`] naming it and
//! nothing else is affected; [`Store::scrub`] reads everything and lists what is damaged.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use crate::block::{BLOCK, BlockDevice, IoError};
use crate::codec::{Malformed, Reader, Writer};
use crate::crypto::{self, Keys, NONCE_LEN, OVERHEAD, PAYLOAD};

/// The longest namespace name (a program's name).
pub const MAX_NAMESPACE: usize = 32;
/// The longest key (and log name), the longest value (and log record) and the most operations
/// in one commit: the protocol's limits, one definition for the wire and the disk.
pub use ozone_agent_sdk::protocol::store::{MAX_KEY, MAX_OPS, MAX_VALUE};
/// The most value bytes in one commit.
pub const MAX_COMMIT_BYTES: usize = 1024 * 1024;
/// The fewest blocks a device must have.
pub const MIN_BLOCKS: u64 = 16;
/// The most blocks the store uses (64 GiB; the free-space map is one bit per block in memory).
pub const MAX_BLOCKS: u64 = 1 << 24;
/// Counters reserved at a time.
pub const NONCE_RANGE: u64 = 1 << 20;

const MAGIC: [u8; 8] = *b"OZSTORE\0";
const VERSION: u32 = 1;
const HEADER: usize = 32;
const SB_BODY: usize = BLOCK - HEADER - OVERHEAD;
/// Metadata bytes in one chain block (after the two mirrors of the next block's pointer).
const CHUNK: usize = PAYLOAD - 32;

const KIND_INDEX: u8 = 1;
const KIND_VALUE: u8 = 2;
const KIND_RECORD: u8 = 3;

/// Something the store found damaged (or lost).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// A superblock slot did not authenticate (normal after a power cut during its write).
    Superblock { slot: u8 },
    /// The newest generation's tree was unreadable: the store went back to the previous one.
    Generation { lost: u64 },
    /// The root of every namespace.
    Root,
    /// A namespace's index (both mirrors): its keys and logs are lost.
    Namespace(String),
    /// A value.
    Value { ns: String, key: Vec<u8> },
    /// A log record.
    Record { ns: String, log: Vec<u8>, seq: u64 },
    /// The device is smaller than the store formatted on it.
    Device { formatted: u64, present: u64 },
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No such key, namespace or log record.
    NotFound,
    /// The namespace would use more than its quota (bytes as charged: see [`Usage::bytes`]).
    QuotaExceeded { used: u64, quota: u64 },
    /// The device has no room for the write (nothing stored was touched), or is too small
    /// ([`MIN_BLOCKS`]) to format.
    DiskFull,
    /// A name, key, value, record or commit over its limit.
    TooLarge,
    /// An empty name or key, or a name that is not UTF-8.
    Invalid,
    /// Authenticated data did not verify: the object named is damaged.
    Corrupt(Damage),
    /// A log's hash chain is broken at this record (the first bad link).
    BrokenChain { seq: u64 },
    /// The device holds a store sealed with another secret.
    WrongKey,
    /// The device holds no store.
    NotFormatted,
    /// The device failed (after a failed write the store refuses writes until opened again).
    Io(IoError),
}

impl From<IoError> for Error {
    fn from(e: IoError) -> Error {
        Error::Io(e)
    }
}

/// A result of the store.
pub type Result<T> = core::result::Result<T, Error>;

/// One operation of an atomic [`Store::commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// What [`Store::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The generation the store opened at (before the open's own reservation).
    pub generation: u64,
    /// Damage found (a torn superblock after a crash is normal and loses nothing).
    pub damaged: Vec<Damage>,
    /// What was lost for good.
    pub dropped: Vec<Damage>,
}

/// A namespace's use of the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged: whole blocks of its values and log records; for a value of at most
    /// [`INLINE_MAX`] bytes (kept in the index) its bytes, its key's and [`INDEX_CHARGE`].
    pub bytes: u64,
    /// Keys.
    pub keys: u64,
    /// Log records.
    pub records: u64,
    /// Its quota, if one is set.
    pub quota: Option<u64>,
}

/// The store's state (cheap: nothing is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub generation: u64,
    pub blocks: u64,
    pub free_blocks: u64,
    pub namespaces: u64,
    /// Values and log records.
    pub objects: u64,
    /// What is known to be damaged (from the open; [`Store::scrub`] looks everywhere).
    pub damaged: Vec<Damage>,
    /// Whether writes are refused after a device error.
    pub read_only: bool,
}

/// Where a sealed block is and which write made it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ptr {
    lba: u64,
    ctr: u64,
}

type Mirror = [Ptr; 2];
const NONE: Mirror = [Ptr { lba: 0, ctr: 0 }; 2];

#[derive(Clone, Debug, Default)]
struct Chain {
    head: Mirror,
    len: u32,
    lbas: Vec<u64>,
}

#[derive(Clone, Debug)]
struct Object {
    len: u32,
    blocks: Vec<Ptr>,
    /// A small value kept in the index itself (then `blocks` is empty).
    inline: Option<Vec<u8>>,
}

/// Values up to this long are kept in their namespace's index, not in blocks of their own.
pub const INLINE_MAX: usize = 256;
/// Bytes charged for a key kept in the index, beyond the key and an inline value.
pub const INDEX_CHARGE: u64 = 32;

/// Bytes charged for a value of `len` bytes under a key of `key_len` bytes: whole blocks, or
/// for a value kept in the index its bytes, the key's and [`INDEX_CHARGE`].
fn charge(key_len: usize, len: usize) -> u64 {
    if len <= INLINE_MAX { (key_len + len) as u64 + INDEX_CHARGE } else { blocks_for(len) * BLOCK as u64 }
}

/// Blocks of its own a value of `len` bytes takes.
fn value_blocks(len: usize) -> u64 {
    if len <= INLINE_MAX { 0 } else { blocks_for(len) }
}

#[derive(Clone, Debug)]
struct Record {
    obj: Object,
    /// The chain hash after this record: SHA-256(previous hash ‖ record).
    hash: [u8; 32],
}

/// Records per log segment: a log's record metadata is kept in segments of this many records,
/// each a metadata chain of its own, so that an append rewrites only the last segment.
const SEGMENT: u64 = 256;

/// A log's records, by segment: each segment shared between the durable state and a commit in
/// progress until the commit changes it, so that an append copies one segment, not the log.
#[derive(Clone, Debug, Default)]
struct Records {
    segments: BTreeMap<u64, Rc<BTreeMap<u64, Record>>>,
    count: u64,
    blocks: u64,
}

impl Records {
    fn get(&self, seq: u64) -> Option<&Record> {
        self.segments.get(&(seq / SEGMENT))?.get(&seq)
    }

    /// Insert (or replace) record `seq`; whether it is new.
    fn insert(&mut self, seq: u64, r: Record) -> bool {
        let seg = Rc::make_mut(self.segments.entry(seq / SEGMENT).or_default());
        self.blocks += r.obj.blocks.len() as u64;
        match seg.insert(seq, r) {
            Some(old) => {
                self.blocks -= old.obj.blocks.len() as u64;
                false
            }
            None => {
                self.count += 1;
                true
            }
        }
    }

    fn segment(&self, k: u64) -> impl Iterator<Item = (&u64, &Record)> {
        self.segments.get(&k).into_iter().flat_map(|s| s.iter())
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &Record)> {
        self.segments.values().flat_map(|s| s.iter())
    }
}

#[derive(Clone, Debug, Default)]
struct Log {
    next_seq: u64,
    records: Records,
    /// The durable chain of each segment (segment `k` holds records `k·SEGMENT..`).
    segments: BTreeMap<u64, Chain>,
    /// Segments changed since they were written.
    dirty: BTreeSet<u64>,
}

#[derive(Clone, Debug, Default)]
struct Ns {
    entries: BTreeMap<Vec<u8>, Object>,
    logs: BTreeMap<Vec<u8>, Log>,
    index: Chain,
}

impl Ns {
    /// Bytes charged to the namespace.
    fn usage_bytes(&self) -> u64 {
        let v: u64 = self.entries.iter().map(|(k, o)| charge(k.len(), o.len as usize)).sum();
        let r: u64 = self.logs.values().map(|l| l.records.blocks).sum();
        v + r * BLOCK as u64
    }
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.logs.is_empty()
    }
}

struct Super {
    generation: u64,
    hi: u64,
    blocks: u64,
    root: Mirror,
    root_len: u32,
}

enum Slot {
    Absent,
    OtherKey,
    Unreadable,
    Valid(Super),
}

/// The store on device `D`.
pub struct Store<D: BlockDevice> {
    dev: D,
    keys: Keys,
    salt: [u8; 16],
    generation: u64,
    ctr: u64,
    hi: u64,
    blocks: u64,
    used: Vec<u64>,
    free: u64,
    cursor: u64,
    pending: Vec<u64>,
    root: Chain,
    spaces: BTreeMap<String, Ns>,
    quotas: BTreeMap<String, u64>,
    damaged: Vec<Damage>,
    read_only: bool,
    /// A device error met by the last reads (so that it is reported as such, never as damage).
    io: Option<IoError>,
}

fn check_ns(ns: &str) -> Result<()> {
    if ns.is_empty() {
        Err(Error::Invalid)
    } else if ns.len() > MAX_NAMESPACE {
        Err(Error::TooLarge)
    } else {
        Ok(())
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        Err(Error::Invalid)
    } else if key.len() > MAX_KEY {
        Err(Error::TooLarge)
    } else {
        Ok(())
    }
}

fn blocks_for(len: usize) -> u64 {
    len.div_ceil(PAYLOAD) as u64
}

fn block_ad(kind: u8, p: Ptr) -> [u8; 32] {
    let mut ad = [0u8; 32];
    ad[..15].copy_from_slice(b"ozone-store blk");
    ad[15] = kind;
    ad[16..24].copy_from_slice(&p.lba.to_le_bytes());
    ad[24..].copy_from_slice(&p.ctr.to_le_bytes());
    ad
}

fn sb_ad(slot: u8, header: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(15 + HEADER);
    ad.extend_from_slice(b"ozone-store sb");
    ad.push(slot);
    ad.extend_from_slice(header);
    ad
}

fn genesis(ns: &str, log: &[u8]) -> [u8; 32] {
    crypto::sha256(&[
        b"ozone-store log",
        &(ns.len() as u64).to_le_bytes(),
        ns.as_bytes(),
        &(log.len() as u64).to_le_bytes(),
        log,
    ])
}

fn put_ptr(w: &mut Writer, p: Ptr) {
    w.u64(p.lba);
    w.u64(p.ctr);
}

fn get_ptr(r: &mut Reader<'_>, blocks: u64) -> core::result::Result<Ptr, Malformed> {
    let p = Ptr { lba: r.u64()?, ctr: r.u64()? };
    if p.lba < 2 || p.lba >= blocks {
        return Err(Malformed);
    }
    Ok(p)
}

/// The block count that marks a value kept in the index.
const INLINE_MARK: u32 = u32::MAX;

fn put_object(w: &mut Writer, o: &Object) {
    w.u32(o.len);
    if let Some(v) = &o.inline {
        w.u32(INLINE_MARK);
        w.raw(v);
        return;
    }
    w.u32(o.blocks.len() as u32);
    for &p in &o.blocks {
        put_ptr(w, p);
    }
}

/// An object of at most `max` bytes; kept in the index only if `inline` allows it.
fn get_object(r: &mut Reader<'_>, blocks: u64, max: usize, inline: bool) -> core::result::Result<Object, Malformed> {
    let len = r.u32()?;
    if len as usize > max {
        return Err(Malformed);
    }
    let n = r.u32()?;
    if n == INLINE_MARK {
        if !inline || len as usize > INLINE_MAX {
            return Err(Malformed);
        }
        let v = r.raw(len as usize)?.to_vec();
        return Ok(Object { len, blocks: Vec::new(), inline: Some(v) });
    }
    let n = n as usize;
    if n as u64 != blocks_for(len as usize) || (inline && len as usize <= INLINE_MAX) {
        return Err(Malformed);
    }
    let blocks = (0..n).map(|_| get_ptr(r, blocks)).collect::<core::result::Result<Vec<_>, _>>()?;
    Ok(Object { len, blocks, inline: None })
}

fn encode_ns(ns: &Ns) -> Vec<u8> {
    let mut w = Writer::default();
    w.u32(ns.entries.len() as u32);
    for (k, o) in &ns.entries {
        w.bytes(k);
        put_object(&mut w, o);
    }
    w.u32(ns.logs.len() as u32);
    for (name, log) in &ns.logs {
        w.bytes(name);
        w.u64(log.next_seq);
        w.u32(log.segments.len() as u32);
        for (&k, chain) in &log.segments {
            w.u64(k);
            put_ptr(&mut w, chain.head[0]);
            put_ptr(&mut w, chain.head[1]);
            w.u32(chain.len);
        }
    }
    w.buf
}

fn encode_segment(log: &Log, k: u64) -> Vec<u8> {
    let mut w = Writer::default();
    let records: Vec<(&u64, &Record)> = log.records.segment(k).collect();
    w.u32(records.len() as u32);
    for (&seq, rec) in records {
        w.u64(seq);
        w.raw(&rec.hash);
        put_object(&mut w, &rec.obj);
    }
    w.buf
}

fn decode_segment(bytes: &[u8], blocks: u64, k: u64, log: &mut Log) -> core::result::Result<(), Malformed> {
    let mut r = Reader::new(bytes);
    for _ in 0..r.count(48)? {
        let seq = r.u64()?;
        let mut hash = [0u8; 32];
        hash.copy_from_slice(r.raw(32)?);
        let obj = get_object(&mut r, blocks, MAX_VALUE + 32, false)?;
        if seq >= log.next_seq || seq / SEGMENT != k || !log.records.insert(seq, Record { obj, hash }) {
            return Err(Malformed);
        }
    }
    if !r.is_empty() {
        return Err(Malformed);
    }
    Ok(())
}

fn decode_ns(bytes: &[u8], blocks: u64) -> core::result::Result<Ns, Malformed> {
    let mut r = Reader::new(bytes);
    let mut ns = Ns::default();
    for _ in 0..r.count(13)? {
        let k = r.bytes(MAX_KEY)?.to_vec();
        let o = get_object(&mut r, blocks, MAX_VALUE, true)?;
        if k.is_empty() || ns.entries.insert(k, o).is_some() {
            return Err(Malformed);
        }
    }
    for _ in 0..r.count(16)? {
        let name = r.bytes(MAX_KEY)?.to_vec();
        let next_seq = r.u64()?;
        let mut log = Log { next_seq, ..Log::default() };
        for _ in 0..r.count(44)? {
            let k = r.u64()?;
            let head = [get_ptr(&mut r, blocks)?, get_ptr(&mut r, blocks)?];
            let len = r.u32()?;
            if k > next_seq / SEGMENT || log.segments.insert(k, Chain { head, len, lbas: Vec::new() }).is_some() {
                return Err(Malformed);
            }
        }
        if name.is_empty() || ns.logs.insert(name, log).is_some() {
            return Err(Malformed);
        }
    }
    if !r.is_empty() {
        return Err(Malformed);
    }
    Ok(ns)
}

impl<D: BlockDevice> Store<D> {
    /// Make a new, empty store on `dev`, sealed under keys derived from `secret`; `salt` must be
    /// fresh at every format and open (boot entropy). Whatever the device held is gone (if it
    /// held a store sealed with the same secret, the new one's counters start above its own).
    pub fn format(mut dev: D, secret: &[u8; 32], salt: [u8; 16]) -> Result<Store<D>> {
        let present = dev.blocks();
        if present < MIN_BLOCKS {
            // No room for a store on it.
            return Err(Error::DiskFull);
        }
        let keys = Keys::derive(secret).ok_or(Error::Invalid)?;
        let (mut generation, mut hi) = (0, 0);
        for slot in 0..2u8 {
            if let Slot::Valid(s) = read_slot(&mut dev, &keys, slot)? {
                generation = generation.max(s.generation);
                hi = hi.max(s.hi);
            }
        }
        dev.write(0, &[0; BLOCK])?;
        dev.write(1, &[0; BLOCK])?;
        dev.flush()?;
        let blocks = present.min(MAX_BLOCKS);
        let mut s = Store::new(dev, keys, salt, blocks);
        s.generation = generation;
        s.ctr = hi;
        s.hi = hi;
        s.reserve()?;
        Ok(s)
    }

    fn new(dev: D, keys: Keys, salt: [u8; 16], blocks: u64) -> Store<D> {
        let mut used = vec![0u64; blocks.div_ceil(64) as usize];
        used[0] |= 0b11;
        Store {
            dev,
            keys,
            salt,
            generation: 0,
            ctr: 0,
            hi: 0,
            blocks,
            used,
            free: blocks - 2,
            cursor: 2,
            pending: Vec::new(),
            root: Chain::default(),
            spaces: BTreeMap::new(),
            quotas: BTreeMap::new(),
            damaged: Vec::new(),
            read_only: false,
            io: None,
        }
    }

    /// Open the store on `dev` with `secret` (and a fresh `salt`): recover from whatever a
    /// crash left, and say what was damaged or lost.
    pub fn open(mut dev: D, secret: &[u8; 32], salt: [u8; 16]) -> Result<(Store<D>, Recovery)> {
        let present = dev.blocks();
        if present < 2 {
            return Err(Error::NotFormatted);
        }
        let keys = Keys::derive(secret).ok_or(Error::Invalid)?;
        let slots = [read_slot(&mut dev, &keys, 0)?, read_slot(&mut dev, &keys, 1)?];
        let mut rec = Recovery::default();
        let mut valid: Vec<Super> = Vec::new();
        let (mut ours, mut other) = (false, false);
        for (i, s) in slots.into_iter().enumerate() {
            match s {
                Slot::Absent => {}
                Slot::OtherKey => other = true,
                Slot::Unreadable => {
                    ours = true;
                    rec.damaged.push(Damage::Superblock { slot: i as u8 });
                }
                Slot::Valid(s) => {
                    ours = true;
                    valid.push(s);
                }
            }
        }
        if valid.is_empty() {
            return Err(if ours {
                Error::Corrupt(Damage::Superblock { slot: 0 })
            } else if other {
                Error::WrongKey
            } else {
                Error::NotFormatted
            });
        }
        valid.sort_by_key(|s| core::cmp::Reverse(s.generation));
        let generation = valid[0].generation;
        let hi = valid.iter().map(|s| s.hi).max().unwrap_or(0);
        let mut last = Error::Corrupt(Damage::Root);
        for (i, sb) in valid.iter().enumerate() {
            if sb.blocks > present {
                last = Error::Corrupt(Damage::Device { formatted: sb.blocks, present });
                continue;
            }
            let mut s = Store::new(&mut dev, Keys::derive(secret).ok_or(Error::Invalid)?, salt, sb.blocks);
            match s.load(sb) {
                Ok((dropped, lost_records)) => {
                    let (blocks, used, free, root, spaces) = (s.blocks, s.used, s.free, s.root, s.spaces);
                    if i > 0 {
                        rec.damaged.push(Damage::Root);
                        rec.dropped.push(Damage::Generation { lost: generation });
                    }
                    for name in dropped {
                        rec.damaged.push(Damage::Namespace(name.clone()));
                        rec.dropped.push(Damage::Namespace(name));
                    }
                    for d in lost_records {
                        rec.damaged.push(d.clone());
                        rec.dropped.push(d);
                    }
                    rec.generation = sb.generation;
                    let mut store = Store::new(dev, keys, salt, blocks);
                    store.used = used;
                    store.free = free;
                    store.root = root;
                    store.spaces = spaces;
                    // After a fall-back the reservation goes over the damaged newest superblock
                    // (a generation of its parity), never over the one the store stands on.
                    store.generation = if i > 0 { generation + 1 } else { generation };
                    store.ctr = hi;
                    store.hi = hi;
                    store.damaged =
                        rec.damaged.iter().filter(|d| !matches!(d, Damage::Superblock { .. })).cloned().collect();
                    store.reserve()?;
                    return Ok((store, rec));
                }
                // A device error is no reason to fall back to an older generation.
                Err(Error::Io(e)) => return Err(Error::Io(e)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Open the store on `dev`, or format one if the device holds none (`NotFormatted`: a
    /// blank or foreign device). A store sealed with another secret (`WrongKey`), a damaged one
    /// or a device error is never formatted over: that error is returned and the device is left
    /// as it was. The `Recovery` of a fresh store is empty.
    pub fn open_or_format(mut dev: D, secret: &[u8; 32], salt: [u8; 16]) -> Result<(Store<D>, Recovery)> {
        let rec = match Store::open(&mut dev, secret, salt) {
            Ok((_, rec)) => rec,
            Err(Error::NotFormatted) => {
                let s = Store::format(dev, secret, salt)?;
                let generation = s.generation;
                return Ok((s, Recovery { generation, ..Recovery::default() }));
            }
            Err(e) => return Err(e),
        };
        // Opened through a borrow: open again owning the device. What the first open wrote is
        // durable, so this one finds the same tree; its report is the first one's.
        let (s, _) = Store::open(dev, secret, salt)?;
        Ok((s, rec))
    }

    /// Read the tree of superblock `sb` into this (fresh) store: the namespaces whose index
    /// was unreadable are dropped and named.
    fn load(&mut self, sb: &Super) -> Result<(Vec<String>, Vec<Damage>)> {
        self.io = None;
        let Some((bytes, lbas)) = self.read_chain(sb.root, sb.root_len) else {
            return Err(self.unread(Error::Corrupt(Damage::Root)));
        };
        let mut r = Reader::new(&bytes);
        let mut heads = Vec::new();
        let bad = || Error::Corrupt(Damage::Root);
        // An empty root (a store just formatted) has no namespaces.
        let count = if bytes.is_empty() { 0 } else { r.count(40).map_err(|_| bad())? };
        for _ in 0..count {
            let name = r.bytes(MAX_NAMESPACE).map_err(|_| bad())?;
            let name = String::from(core::str::from_utf8(name).map_err(|_| bad())?);
            let head =
                [get_ptr(&mut r, self.blocks).map_err(|_| bad())?, get_ptr(&mut r, self.blocks).map_err(|_| bad())?];
            let len = r.u32().map_err(|_| bad())?;
            heads.push((name, head, len));
        }
        if !r.is_empty() {
            return Err(bad());
        }
        for &l in &lbas {
            self.mark(l);
        }
        self.root = Chain { head: sb.root, len: sb.root_len, lbas };
        let mut dropped = Vec::new();
        let mut damaged = Vec::new();
        for (name, head, len) in heads {
            let Some((bytes, lbas)) = self.read_chain(head, len) else {
                // A device error is no damage: the open fails rather than drop anything.
                if let Some(e) = self.io.take() {
                    return Err(Error::Io(e));
                }
                dropped.push(name);
                continue;
            };
            let Ok(mut ns) = decode_ns(&bytes, self.blocks) else {
                dropped.push(name);
                continue;
            };
            for &l in &lbas {
                self.mark(l);
            }
            // Each log's segments: one unreadable in both mirrors loses its records only.
            for (log_name, log) in ns.logs.iter_mut() {
                let mut segments = core::mem::take(&mut log.segments);
                for (&k, chain) in segments.iter_mut() {
                    let read = self.read_chain(chain.head, chain.len);
                    let ok = read.and_then(|(bytes, lbas)| {
                        let mut scratch = Log { next_seq: log.next_seq, ..Log::default() };
                        decode_segment(&bytes, self.blocks, k, &mut scratch).ok()?;
                        for (&seq, r) in scratch.records.iter() {
                            log.records.insert(seq, r.clone());
                        }
                        Some(lbas)
                    });
                    match ok {
                        Some(lbas) => {
                            for &l in &lbas {
                                self.mark(l);
                            }
                            chain.lbas = lbas;
                        }
                        None => {
                            if let Some(e) = self.io.take() {
                                return Err(Error::Io(e));
                            }
                            // Rewritten (without the lost records) at the next append to it.
                            log.dirty.insert(k);
                            damaged.push(Damage::Record { ns: name.clone(), log: log_name.clone(), seq: k * SEGMENT });
                        }
                    }
                }
                log.segments = segments;
            }
            for o in ns.entries.values() {
                for p in &o.blocks {
                    self.mark(p.lba);
                }
            }
            for (_, r) in ns.logs.values().flat_map(|l| l.records.iter()) {
                for p in &r.obj.blocks {
                    self.mark(p.lba);
                }
            }
            ns.index = Chain { head, len, lbas };
            self.spaces.insert(name, ns);
        }
        // A dropped namespace stays in the root until the next commit rewrites the root
        // without it.
        Ok((dropped, damaged))
    }

    fn mark(&mut self, lba: u64) {
        if lba < 2 || lba >= self.blocks {
            return;
        }
        let (w, b) = ((lba / 64) as usize, lba % 64);
        if let Some(word) = self.used.get_mut(w)
            && *word & (1 << b) == 0
        {
            *word |= 1 << b;
            self.free -= 1;
        }
    }

    fn unmark(&mut self, lba: u64) {
        let (w, b) = ((lba / 64) as usize, lba % 64);
        if lba >= 2
            && let Some(word) = self.used.get_mut(w)
            && *word & (1 << b) != 0
        {
            *word &= !(1 << b);
            self.free += 1;
        }
    }

    fn is_used(&self, lba: u64) -> bool {
        self.used.get((lba / 64) as usize).is_none_or(|w| w & (1 << (lba % 64)) != 0)
    }

    fn alloc(&mut self) -> Result<u64> {
        if self.free == 0 {
            return Err(Error::DiskFull);
        }
        for _ in 0..self.blocks {
            let l = self.cursor;
            self.cursor = if self.cursor + 1 >= self.blocks { 2 } else { self.cursor + 1 };
            if !self.is_used(l) {
                self.mark(l);
                self.pending.push(l);
                return Ok(l);
            }
        }
        Err(Error::DiskFull)
    }

    /// Give back the blocks of a commit that failed.
    fn abort(&mut self) {
        for l in core::mem::take(&mut self.pending) {
            self.unmark(l);
        }
    }

    fn fail<T>(&mut self, e: Error) -> Result<T> {
        if let Error::Io(_) = e {
            self.read_only = true;
        }
        self.abort();
        Err(e)
    }

    /// Durably raise the nonce reservation (see the module documentation).
    fn reserve(&mut self) -> Result<()> {
        debug_assert_eq!(self.ctr, self.hi);
        let generation = self.generation + 1;
        let hi = self.hi + 1 + NONCE_RANGE;
        let root = self.root.clone();
        let r = self.write_super(generation, hi, &root, self.hi).and_then(|()| Ok(self.dev.flush()?));
        if let Err(e) = r {
            self.read_only = true;
            return Err(e);
        }
        self.generation = generation;
        self.ctr = self.hi + 1;
        self.hi = hi;
        Ok(())
    }

    fn next_ctr(&mut self) -> Result<u64> {
        if self.ctr >= self.hi {
            self.reserve()?;
        }
        let c = self.ctr;
        self.ctr += 1;
        Ok(c)
    }

    fn write_super(&mut self, generation: u64, hi: u64, root: &Chain, ctr: u64) -> Result<()> {
        let slot = (generation % 2) as u8;
        let mut w = Writer::default();
        w.u64(generation);
        w.u64(hi);
        w.u64(self.blocks);
        put_ptr(&mut w, root.head[0]);
        put_ptr(&mut w, root.head[1]);
        w.u32(root.len);
        let mut body = [0u8; SB_BODY];
        body[..w.buf.len()].copy_from_slice(&w.buf);
        let mut block = [0u8; BLOCK];
        block[..8].copy_from_slice(&MAGIC);
        block[8..12].copy_from_slice(&VERSION.to_le_bytes());
        block[16..32].copy_from_slice(&self.keys.check);
        let ad = sb_ad(slot, &block[..HEADER]);
        self.keys.seal(crypto::nonce(&self.salt, ctr), &ad, &body, &mut block[HEADER..]).ok_or(Error::TooLarge)?;
        self.dev.write(slot as u64, &block)?;
        Ok(())
    }

    fn write_sealed(&mut self, kind: u8, payload: &[u8; PAYLOAD]) -> Result<Ptr> {
        let lba = self.alloc()?;
        let ctr = self.next_ctr()?;
        let p = Ptr { lba, ctr };
        let mut block = [0u8; BLOCK];
        self.keys
            .seal(crypto::nonce(&self.salt, ctr), &block_ad(kind, p), payload, &mut block)
            .ok_or(Error::TooLarge)?;
        self.dev.write(lba, &block)?;
        Ok(p)
    }

    fn read_sealed(&mut self, kind: u8, p: Ptr) -> Option<[u8; PAYLOAD]> {
        if p.lba < 2 || p.lba >= self.blocks {
            return None;
        }
        let mut block = [0u8; BLOCK];
        match self.dev.read(p.lba, &mut block) {
            Ok(()) => {}
            Err(IoError::OutOfRange) => return None,
            Err(e) => {
                self.io = Some(e);
                return None;
            }
        }
        let mut out = [0u8; PAYLOAD];
        let nonce = self.keys.open(&block_ad(kind, p), &block, &mut out)?;
        let n: [u8; NONCE_LEN] = nonce;
        (crypto::counter_of(&n) == p.ctr).then_some(out)
    }

    fn write_object(&mut self, kind: u8, bytes: &[u8]) -> Result<Object> {
        if kind == KIND_VALUE && bytes.len() <= INLINE_MAX {
            return Ok(Object { len: bytes.len() as u32, blocks: Vec::new(), inline: Some(bytes.to_vec()) });
        }
        let mut blocks = Vec::new();
        for chunk in bytes.chunks(PAYLOAD) {
            let mut payload = [0u8; PAYLOAD];
            payload[..chunk.len()].copy_from_slice(chunk);
            blocks.push(self.write_sealed(kind, &payload)?);
        }
        Ok(Object { len: bytes.len() as u32, blocks, inline: None })
    }

    /// What a failed read means: `damage`, unless the device failed (then `Io`).
    fn unread(&mut self, damage: Error) -> Error {
        match self.io.take() {
            Some(e) => Error::Io(e),
            None => damage,
        }
    }

    fn read_object(&mut self, kind: u8, o: &Object) -> Option<Vec<u8>> {
        if let Some(v) = &o.inline {
            return Some(v.clone());
        }
        let mut out = Vec::with_capacity(o.len as usize);
        for &p in &o.blocks {
            out.extend_from_slice(&self.read_sealed(kind, p)?);
        }
        out.truncate(o.len as usize);
        Some(out)
    }

    fn write_chain(&mut self, bytes: &[u8]) -> Result<Chain> {
        let mut next = NONE;
        let mut lbas = Vec::new();
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        for chunk in chunks.into_iter().rev() {
            let mut payload = [0u8; PAYLOAD];
            payload[..8].copy_from_slice(&next[0].lba.to_le_bytes());
            payload[8..16].copy_from_slice(&next[0].ctr.to_le_bytes());
            payload[16..24].copy_from_slice(&next[1].lba.to_le_bytes());
            payload[24..32].copy_from_slice(&next[1].ctr.to_le_bytes());
            payload[32..32 + chunk.len()].copy_from_slice(chunk);
            let a = self.write_sealed(KIND_INDEX, &payload)?;
            let b = self.write_sealed(KIND_INDEX, &payload)?;
            lbas.push(a.lba);
            lbas.push(b.lba);
            next = [a, b];
        }
        Ok(Chain { head: next, len: bytes.len() as u32, lbas })
    }

    /// The bytes of a metadata chain and every block of it (both mirrors); `None` if some
    /// block is unreadable in both mirrors or the chain is malformed.
    fn read_chain(&mut self, head: Mirror, len: u32) -> Option<(Vec<u8>, Vec<u64>)> {
        let n = (len as usize).div_ceil(CHUNK);
        if n as u64 > self.blocks {
            return None;
        }
        // No capacity from the length: it grows with blocks that authenticated.
        let mut bytes = Vec::new();
        let mut lbas = Vec::new();
        let mut at = head;
        for i in 0..n {
            let payload = self.read_sealed(KIND_INDEX, at[0]).or_else(|| self.read_sealed(KIND_INDEX, at[1]))?;
            lbas.extend([at[0].lba, at[1].lba]);
            let take = (len as usize - bytes.len()).min(CHUNK);
            bytes.extend_from_slice(&payload[32..32 + take]);
            let mut r = Reader::new(&payload[..32]);
            let next = [Ptr { lba: r.u64().ok()?, ctr: r.u64().ok()? }, Ptr { lba: r.u64().ok()?, ctr: r.u64().ok()? }];
            if (i + 1 == n) != (next == NONE) {
                return None;
            }
            at = next;
        }
        Some((bytes, lbas))
    }

    /// Free blocks kept for commits that do not grow the data (deletes), so that a full disk
    /// can always be emptied.
    fn reserve_blocks(&self) -> u64 {
        let largest = self.spaces.values().map(|n| n.index.lbas.len() as u64).max().unwrap_or(0);
        2 * (largest + self.root.lbas.len() as u64) + 16
    }

    /// Refuse a commit to `ns` that takes its charge from `before` to `after` bytes and needs
    /// `grow` more blocks for data.
    fn admit(&self, ns: &str, before: u64, after: u64, grow: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::Io(IoError::Failed));
        }
        if after > before
            && let Some(&quota) = self.quotas.get(ns)
            && after > quota
        {
            return Err(Error::QuotaExceeded { used: after, quota });
        }
        if (after > before || grow > 0) && self.free < grow + self.reserve_blocks() {
            return Err(Error::DiskFull);
        }
        Ok(())
    }

    /// Make `changed` (namespaces, `None` for gone) the new state, durably; `freed` are the
    /// blocks the change no longer needs.
    fn finish(&mut self, changed: Vec<(String, Ns)>, mut freed: Vec<u64>) -> Result<()> {
        let r = self.finish_inner(changed, &mut freed);
        match r {
            Ok(()) => {
                self.pending.clear();
                for l in freed {
                    self.unmark(l);
                }
                Ok(())
            }
            Err(e) => self.fail(e),
        }
    }

    fn finish_inner(&mut self, changed: Vec<(String, Ns)>, freed: &mut Vec<u64>) -> Result<()> {
        let mut new_spaces: Vec<(String, Option<Ns>)> = Vec::new();
        for (name, mut ns) in changed {
            freed.extend_from_slice(&ns.index.lbas);
            if ns.is_empty() {
                new_spaces.push((name, None));
            } else {
                for log in ns.logs.values_mut() {
                    for k in core::mem::take(&mut log.dirty) {
                        let chain = self.write_chain(&encode_segment(log, k))?;
                        if let Some(old) = log.segments.insert(k, chain) {
                            freed.extend_from_slice(&old.lbas);
                        }
                    }
                }
                ns.index = self.write_chain(&encode_ns(&ns))?;
                new_spaces.push((name, Some(ns)));
            }
        }
        // The root: every namespace's index head, with the changed ones' new heads.
        let mut w = Writer::default();
        let mut all: BTreeMap<&str, (Mirror, u32)> =
            self.spaces.iter().map(|(n, s)| (n.as_str(), (s.index.head, s.index.len))).collect();
        for (name, ns) in &new_spaces {
            match ns {
                Some(ns) => all.insert(name.as_str(), (ns.index.head, ns.index.len)),
                None => all.remove(name.as_str()),
            };
        }
        w.u32(all.len() as u32);
        for (name, (head, len)) in &all {
            w.bytes(name.as_bytes());
            put_ptr(&mut w, head[0]);
            put_ptr(&mut w, head[1]);
            w.u32(*len);
        }
        let root = self.write_chain(&w.buf)?;
        self.dev.flush()?;
        let ctr = self.next_ctr()?;
        let generation = self.generation + 1;
        self.write_super(generation, self.hi, &root, ctr)?;
        self.dev.flush()?;
        // Durable.
        self.generation = generation;
        freed.extend_from_slice(&self.root.lbas);
        self.root = root;
        for (name, ns) in new_spaces {
            match ns {
                Some(ns) => {
                    self.spaces.insert(name, ns);
                }
                None => {
                    self.spaces.remove(&name);
                }
            }
        }
        Ok(())
    }

    /// Set the quota of `ns` in bytes (as charged: see [`Usage::bytes`]), for this run of the
    /// store.
    /// Writes that would grow the namespace past it are refused; deletes always pass.
    pub fn set_quota(&mut self, ns: &str, bytes: Option<u64>) {
        match bytes {
            Some(b) => self.quotas.insert(String::from(ns), b),
            None => self.quotas.remove(ns),
        };
    }

    /// The value of `key` in `ns`.
    pub fn get(&mut self, ns: &str, key: &[u8]) -> Result<Vec<u8>> {
        check_ns(ns)?;
        check_key(key)?;
        let o = self.spaces.get(ns).and_then(|n| n.entries.get(key)).cloned().ok_or(Error::NotFound)?;
        self.io = None;
        match self.read_object(KIND_VALUE, &o) {
            Some(v) => Ok(v),
            None => Err(self.unread(Error::Corrupt(Damage::Value { ns: String::from(ns), key: key.to_vec() }))),
        }
    }

    /// The length of the value of `key` in `ns`.
    pub fn value_len(&self, ns: &str, key: &[u8]) -> Result<u32> {
        self.spaces.get(ns).and_then(|n| n.entries.get(key)).map(|o| o.len).ok_or(Error::NotFound)
    }

    /// Store `value` under `key` in `ns`, durably.
    pub fn put(&mut self, ns: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.commit(ns, &[Op::Put { key: key.to_vec(), value: value.to_vec() }])
    }

    /// Delete `key` in `ns`, durably (`NotFound` if there is none).
    pub fn delete(&mut self, ns: &str, key: &[u8]) -> Result<()> {
        self.commit(ns, &[Op::Delete { key: key.to_vec() }])
    }

    /// Apply `ops` to `ns` in order, atomically and durably: after a crash either all are
    /// there or none. Refused whole if a delete finds no key (at its turn), a limit is passed,
    /// the quota or the disk has no room.
    pub fn commit(&mut self, ns: &str, ops: &[Op]) -> Result<()> {
        check_ns(ns)?;
        if ops.len() > MAX_OPS {
            return Err(Error::TooLarge);
        }
        let mut total = 0usize;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    check_key(key)?;
                    if value.len() > MAX_VALUE {
                        return Err(Error::TooLarge);
                    }
                    total += value.len();
                }
                Op::Delete { key } => check_key(key)?,
            }
        }
        if total > MAX_COMMIT_BYTES {
            return Err(Error::TooLarge);
        }
        let old = self.spaces.get(ns).cloned().unwrap_or_default();
        // The final state of each key touched: `Some(index of the op)` for a put, `None` gone.
        let mut last: BTreeMap<&[u8], Option<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Put { key, .. } => {
                    last.insert(key, Some(i));
                }
                Op::Delete { key } => {
                    let exists = match last.get(key.as_slice()) {
                        Some(s) => s.is_some(),
                        None => old.entries.contains_key(key),
                    };
                    if !exists {
                        return Err(Error::NotFound);
                    }
                    last.insert(key, None);
                }
            }
        }
        let before = old.usage_bytes();
        let mut after = before;
        let (mut gone, mut new) = (0, 0);
        for (key, fate) in &last {
            if let Some(o) = old.entries.get(*key) {
                after -= charge(key.len(), o.len as usize);
                gone += o.blocks.len() as u64;
            }
            if let Some(i) = fate
                && let Op::Put { value, .. } = &ops[*i]
            {
                after += charge(key.len(), value.len());
                new += value_blocks(value.len());
            }
        }
        self.admit(ns, before, after, new.saturating_sub(gone))?;
        let mut ns_new = old;
        let mut freed = Vec::new();
        for (key, fate) in last {
            if let Some(o) = ns_new.entries.remove(key) {
                freed.extend(o.blocks.iter().map(|p| p.lba));
            }
            if let Some(i) = fate
                && let Op::Put { value, .. } = &ops[i]
            {
                match self.write_object(KIND_VALUE, value) {
                    Ok(o) => {
                        ns_new.entries.insert(key.to_vec(), o);
                    }
                    Err(e) => return self.fail(e),
                }
            }
        }
        self.finish(alloc::vec![(String::from(ns), ns_new)], freed)
    }

    /// Up to `max` keys of `ns` after `after` (from the first with `None`), in order, with the
    /// length of each value.
    pub fn list(&self, ns: &str, after: Option<&[u8]>, max: usize) -> Result<Vec<(Vec<u8>, u32)>> {
        check_ns(ns)?;
        let Some(n) = self.spaces.get(ns) else { return Ok(Vec::new()) };
        use core::ops::Bound;
        let lower = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        Ok(n.entries.range::<[u8], _>((lower, Bound::Unbounded)).take(max).map(|(k, o)| (k.clone(), o.len)).collect())
    }

    /// Append `record` to log `log` of `ns`, durably; its sequence number (0 for a log's first).
    /// The record is chained: SHA-256(previous hash ‖ record).
    pub fn log_append(&mut self, ns: &str, log: &[u8], record: &[u8]) -> Result<u64> {
        check_ns(ns)?;
        check_key(log)?;
        if record.len() > MAX_VALUE {
            return Err(Error::TooLarge);
        }
        let mut ns_new = self.spaces.get(ns).cloned().unwrap_or_default();
        let before = ns_new.usage_bytes();
        let grow = blocks_for(record.len() + 32);
        self.admit(ns, before, before + grow * BLOCK as u64, grow)?;
        let l = ns_new.logs.entry(log.to_vec()).or_default();
        let seq = l.next_seq;
        let prev = match seq.checked_sub(1).and_then(|s| l.records.get(s)) {
            Some(r) => r.hash,
            None => genesis(ns, log),
        };
        let mut plain = Vec::with_capacity(32 + record.len());
        plain.extend_from_slice(&prev);
        plain.extend_from_slice(record);
        let obj = match self.write_object(KIND_RECORD, &plain) {
            Ok(o) => o,
            Err(e) => return self.fail(e),
        };
        let hash = crypto::sha256(&[&prev, record]);
        let l = ns_new.logs.entry(log.to_vec()).or_default();
        l.records.insert(seq, Record { obj, hash });
        l.dirty.insert(seq / SEGMENT);
        l.next_seq = seq + 1;
        self.finish(alloc::vec![(String::from(ns), ns_new)], Vec::new())?;
        Ok(seq)
    }

    /// Up to `max` records of log `log` of `ns` from `from`, each checked against the chain:
    /// `BrokenChain` names the first record that does not follow from the one before it.
    pub fn log_read(&mut self, ns: &str, log: &[u8], from: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        check_ns(ns)?;
        check_key(log)?;
        let l = self.spaces.get(ns).and_then(|n| n.logs.get(log)).ok_or(Error::NotFound)?;
        if from > l.next_seq {
            return Err(Error::NotFound);
        }
        let mut prev = match from.checked_sub(1) {
            None => genesis(ns, log),
            Some(s) => l.records.get(s).ok_or(Error::BrokenChain { seq: s })?.hash,
        };
        let end = l.next_seq.min(from.saturating_add(max as u64));
        // The records asked for (a missing one is a broken link).
        let wanted: Vec<(u64, Option<Record>)> = (from..end).map(|s| (s, l.records.get(s).cloned())).collect();
        let mut out = Vec::new();
        for (seq, r) in wanted {
            let r = r.ok_or(Error::BrokenChain { seq })?;
            self.io = None;
            let Some(bytes) = self.read_object(KIND_RECORD, &r.obj) else {
                let damage = Error::Corrupt(Damage::Record { ns: String::from(ns), log: log.to_vec(), seq });
                return Err(self.unread(damage));
            };
            if bytes.len() < 32 || bytes[..32] != prev || crypto::sha256(&[&prev, &bytes[32..]]) != r.hash {
                return Err(Error::BrokenChain { seq });
            }
            prev = r.hash;
            out.push((seq, bytes[32..].to_vec()));
        }
        Ok(out)
    }

    /// The next sequence number of log `log` of `ns` (0 for none).
    pub fn log_len(&self, ns: &str, log: &[u8]) -> u64 {
        self.spaces.get(ns).and_then(|n| n.logs.get(log)).map_or(0, |l| l.next_seq)
    }

    /// The use of `ns`.
    pub fn usage(&self, ns: &str) -> Usage {
        let quota = self.quotas.get(ns).copied();
        match self.spaces.get(ns) {
            Some(n) => Usage {
                bytes: n.usage_bytes(),
                keys: n.entries.len() as u64,
                records: n.logs.values().map(|l| l.records.count).sum(),
                quota,
            },
            None => Usage { quota, ..Usage::default() },
        }
    }

    /// The use of every namespace.
    pub fn usage_all(&self) -> Vec<(String, Usage)> {
        self.spaces.keys().map(|n| (n.clone(), self.usage(n))).collect()
    }

    /// The store's state, without reading anything.
    pub fn health(&self) -> Health {
        Health {
            generation: self.generation,
            blocks: self.blocks,
            free_blocks: self.free,
            namespaces: self.spaces.len() as u64,
            objects: self
                .spaces
                .values()
                .map(|n| n.entries.len() as u64 + n.logs.values().map(|l| l.records.count).sum::<u64>())
                .sum(),
            damaged: self.damaged.clone(),
            read_only: self.read_only,
        }
    }

    /// Read and authenticate every value and log record, and check every log's chain: the
    /// state, with everything found damaged (a record whose link is broken counts as damaged).
    /// `Io` if the device fails meanwhile (nothing is then taken for damage).
    pub fn scrub(&mut self) -> Result<Health> {
        let mut damaged = self.damaged.clone();
        let names: Vec<String> = self.spaces.keys().cloned().collect();
        self.io = None;
        for name in names {
            let Some(ns) = self.spaces.get(&name).cloned() else { continue };
            for (key, o) in &ns.entries {
                if self.read_object(KIND_VALUE, o).is_none() {
                    if let Some(e) = self.io.take() {
                        return Err(Error::Io(e));
                    }
                    damaged.push(Damage::Value { ns: name.clone(), key: key.clone() });
                }
            }
            for (log, l) in &ns.logs {
                let mut from = 0;
                while from < l.next_seq {
                    match self.log_read(&name, log, from, 64) {
                        Ok(v) => match v.last() {
                            Some(r) => from = r.0 + 1,
                            None => break,
                        },
                        Err(Error::BrokenChain { seq }) | Err(Error::Corrupt(Damage::Record { seq, .. })) => {
                            damaged.push(Damage::Record { ns: name.clone(), log: log.clone(), seq });
                            from = seq + 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        damaged.dedup();
        let mut h = self.health();
        h.damaged = damaged;
        Ok(h)
    }

    /// The generation of the durable state: it changes with every commit (for caches).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The namespaces, in order.
    pub fn namespaces(&self) -> Vec<String> {
        self.spaces.keys().cloned().collect()
    }

    /// The device (to close the store and keep it).
    pub fn into_device(self) -> D {
        self.dev
    }

    /// The device, to damage it in tests.
    #[cfg(test)]
    pub(crate) fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// The blocks holding the value of `key` (for tests that damage it).
    #[cfg(test)]
    pub(crate) fn value_blocks(&self, ns: &str, key: &[u8]) -> Vec<u64> {
        self.spaces
            .get(ns)
            .and_then(|n| n.entries.get(key))
            .map_or(Vec::new(), |o| o.blocks.iter().map(|p| p.lba).collect())
    }

    /// Rewrite log record `seq` with `record` under a valid seal but without fixing the chain
    /// (for the test that the chain catches it).
    #[cfg(test)]
    pub(crate) fn forge_record(&mut self, ns: &str, log: &[u8], seq: u64, record: &[u8]) -> Result<()> {
        let mut ns_new = self.spaces.get(ns).cloned().ok_or(Error::NotFound)?;
        let l = ns_new.logs.get_mut(log).ok_or(Error::NotFound)?;
        let old = l.records.get(seq).ok_or(Error::NotFound)?.clone();
        let prev = self.read_object(KIND_RECORD, &old.obj).ok_or(Error::NotFound)?;
        let mut plain = prev[..32].to_vec();
        plain.extend_from_slice(record);
        let obj = self.write_object(KIND_RECORD, &plain)?;
        let l = ns_new.logs.get_mut(log).ok_or(Error::NotFound)?;
        l.records.insert(seq, Record { obj, hash: old.hash });
        l.dirty.insert(seq / SEGMENT);
        self.finish(alloc::vec![(String::from(ns), ns_new)], old.obj.blocks.iter().map(|p| p.lba).collect())
    }

    /// The blocks of log segment `k` (both mirrors; for tests that damage it).
    #[cfg(test)]
    pub(crate) fn segment_blocks(&self, ns: &str, log: &[u8], k: u64) -> Vec<u64> {
        self.spaces
            .get(ns)
            .and_then(|n| n.logs.get(log))
            .and_then(|l| l.segments.get(&k))
            .map_or(Vec::new(), |c| c.lbas.clone())
    }

    /// The blocks of the root (both mirrors; for tests that damage it).
    #[cfg(test)]
    pub(crate) fn root_blocks(&self) -> Vec<u64> {
        self.root.lbas.clone()
    }

    /// Every block in use (for tests).
    #[cfg(test)]
    pub(crate) fn used_blocks(&self) -> u64 {
        self.blocks - self.free
    }
}

fn read_slot<D: BlockDevice>(dev: &mut D, keys: &Keys, slot: u8) -> Result<Slot> {
    let mut block = [0u8; BLOCK];
    dev.read(slot as u64, &mut block)?;
    if block[..8] != MAGIC {
        return Ok(Slot::Absent);
    }
    if block[16..32] != keys.check {
        return Ok(Slot::OtherKey);
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&block[8..12]);
    if u32::from_le_bytes(v) != VERSION {
        return Ok(Slot::Unreadable);
    }
    let ad = sb_ad(slot, &block[..HEADER]);
    let mut body = [0u8; SB_BODY];
    if keys.open(&ad, &block[HEADER..], &mut body).is_none() {
        return Ok(Slot::Unreadable);
    }
    let mut r = Reader::new(&body);
    let parse = |r: &mut Reader<'_>| -> core::result::Result<Super, Malformed> {
        let generation = r.u64()?;
        let hi = r.u64()?;
        let blocks = r.u64()?;
        if !(MIN_BLOCKS..=MAX_BLOCKS).contains(&blocks) {
            return Err(Malformed);
        }
        let mut head = NONE;
        for h in &mut head {
            *h = Ptr { lba: r.u64()?, ctr: r.u64()? };
        }
        let root_len = r.u32()?;
        if head != NONE && head.iter().any(|p| p.lba < 2 || p.lba >= blocks) {
            return Err(Malformed);
        }
        Ok(Super { generation, hi, blocks, root: head, root_len })
    };
    match parse(&mut r) {
        Ok(s) if s.generation % 2 == slot as u64 => Ok(Slot::Valid(s)),
        _ => Ok(Slot::Unreadable),
    }
}
