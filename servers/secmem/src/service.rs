//! The secure memory service: every request, on top of a [`Kernel`].
//!
//! # Regions
//!
//! `ALLOC` takes exactly `pages` pages from the pool ([`Buddy::alloc_pages`]: one block per set
//! bit of `pages`), retypes one frame per page from those blocks (the kernel hands out only
//! zeroed memory: memory above an untyped's watermark is zero, and a reused untyped is reset —
//! zeroed — before its next Retype), and maps the frames read-write, never executable, into the
//! caller's share window at an address from its [`Window`] (guard pages around every region).
//! Paging structures the client's address space lacks there are made from the pool too, kept
//! for the client and reused by its later regions.
//!
//! `FREE`, in this order: every peer's mapping goes (its frame copies are deleted), the owner's
//! mapping goes, each frame is mapped at a scratch page in the server and zeroed, and then the
//! region's blocks are revoked (destroying the frames and anything derived from them) and given
//! back to the pool. No client can write to the region while it is being zeroed.
//!
//! # Sharing
//!
//! The owner maps its region into a peer with `SHARE`: the peer gets copies of the frame
//! capabilities (read-only copies for a read-only share), mapped at an address from the peer's
//! own window. `UNSHARE` deletes those copies; the kernel unmaps a frame when its capability is
//! deleted (and flushes the TLB), so the peer has lost the mapping when the reply goes out.
//!
//! # Address spaces
//!
//! The server learns a program's address-space capability from Studio (`VSPACE_OF`, by program
//! id) the first time it needs it and keeps it. When a program ends, Studio destroys its address
//! space, which deletes the server's copy; the next request that finds the copy gone
//! (`InvalidCapability`) — or finds Studio handing out the same slot for another program — drops
//! everything the server had for the old program (its regions are freed as above, shares into
//! it removed, its paging structures reclaimed) and asks Studio again.
//!
//! # Identities
//!
//! Everything is keyed by program id (the client's badge). A restarted program that keeps its
//! id keeps its sealed blobs; its regions die with its old address space as just described.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ozone_abi::{Error, rights};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::secmem::{self as proto, LIST_PAGE, PAGE_SIZE, method};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};

use crate::buddy::{Block, Buddy, UntypedOps};
use crate::kernel::{Kernel, Object};
use crate::regions::{Region, Regions, Share};
use crate::seal::{Sealer, wipe};
use crate::window::Window;
use ozone_agent_sdk::slots::Slots;

/// Where the server's resources are.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The untyped capability of the pool, and its size in bytes.
    pub pool: u64,
    pub pool_size: u64,
    /// The server's own address space.
    pub own_vspace: u64,
    /// The slots the server manages itself: `[first, end)`.
    pub slots: (u64, u64),
    /// The share window (the same range in every address space): base and size in bytes.
    pub window: (u64, u64),
}

/// A kernel error as the client sees it.
fn kerr(e: Error) -> ServiceError {
    match e {
        Error::NotEnoughMemory => ServiceError::NoMemory,
        _ => ServiceError::KernelError,
    }
}

/// Why an operation on a client's address space failed.
enum Fail {
    /// The server's copy of the address-space capability is gone (the program ended).
    Stale,
    Service(ServiceError),
}

impl From<ServiceError> for Fail {
    fn from(e: ServiceError) -> Fail {
        Fail::Service(e)
    }
}

/// A mapping error into a client's space: `InvalidCapability` means the space is gone.
fn map_fail(e: Error) -> Fail {
    if e == Error::InvalidCapability { Fail::Stale } else { Fail::Service(kerr(e)) }
}

/// One address space the server maps into.
struct Space {
    /// The slot of the server's copy of its PML4 capability.
    vspace: u64,
    window: Window,
    /// Paging structures made for it: the pool block each came from and its slot.
    tables: Vec<(Block, u64)>,
}

/// The kernel-facing resources: the kernel, the server's slots and its pool.
struct Mem<K> {
    k: K,
    slots: Slots,
    pool: Buddy,
}

/// [`UntypedOps`] over the kernel and the slots (disjoint from the pool it serves).
struct Ops<'a, K> {
    k: &'a mut K,
    slots: &'a mut Slots,
}

impl<K: Kernel> UntypedOps for Ops<'_, K> {
    fn split(&mut self, parent: u64, child_bits: u8) -> Result<[u64; 2], ServiceError> {
        let s = self.slots.alloc_n(2).ok_or(ServiceError::NoMemory)?;
        for (i, &slot) in s.iter().enumerate() {
            if let Err(e) = self.k.retype(parent, Object::Untyped(child_bits), slot) {
                if i == 1 {
                    // Take the first half back: the parent has no other children.
                    let _ = self.k.revoke(parent);
                }
                for &x in &s {
                    self.slots.free(x);
                }
                return Err(kerr(e));
            }
        }
        Ok([s[0], s[1]])
    }

    fn merge(&mut self, parent: u64, halves: [u64; 2]) -> Result<(), ServiceError> {
        self.k.revoke(parent).map_err(kerr)?;
        for h in halves {
            self.slots.free(h);
        }
        Ok(())
    }

    fn reclaim(&mut self, block: u64) -> Result<(), ServiceError> {
        self.k.revoke(block).map_err(kerr)
    }
}

impl<K: Kernel> Mem<K> {
    fn ops(&mut self) -> (Ops<'_, K>, &mut Buddy) {
        (Ops { k: &mut self.k, slots: &mut self.slots }, &mut self.pool)
    }

    fn alloc_blocks(&mut self, pages: u64) -> Result<Vec<Block>, ServiceError> {
        let (mut ops, pool) = self.ops();
        pool.alloc_pages(pages, &mut ops)
    }

    fn free_block(&mut self, b: Block) {
        let (mut ops, pool) = self.ops();
        let _ = pool.free(b, &mut ops);
    }

    /// One object in a fresh slot, from a fresh one-page block.
    fn new_object(&mut self, obj: Object) -> Result<(Block, u64), ServiceError> {
        let block = {
            let (mut ops, pool) = self.ops();
            pool.alloc(0, &mut ops)?
        };
        let Some(slot) = self.slots.alloc() else {
            self.free_block(block);
            return Err(ServiceError::NoMemory);
        };
        let from = self.pool.slot(block).unwrap_or(0);
        if let Err(e) = self.k.retype(from, obj, slot) {
            self.slots.free(slot);
            self.free_block(block);
            return Err(kerr(e));
        }
        Ok((block, slot))
    }

    /// Map `frame` at `va` in `space`, first making whichever paging structures are missing
    /// there (from the bottom up until one fits, then mapped top down).
    fn map(&mut self, space: &mut Space, frame: u64, va: u64, writable: bool) -> Result<(), Fail> {
        match self.k.map_frame(frame, space.vspace, va, writable) {
            Err(Error::FailedLookup) => {}
            other => return other.map_err(map_fail),
        }
        let mut pending: Vec<u64> = Vec::new();
        for obj in [Object::PageTable, Object::PageDirectory, Object::Pdpt] {
            let (block, t) = self.new_object(obj)?;
            space.tables.push((block, t));
            match self.k.map_table(t, space.vspace, va) {
                Ok(()) => break,
                Err(Error::FailedLookup) => pending.push(t),
                Err(e) => return Err(map_fail(e)),
            }
        }
        for &t in pending.iter().rev() {
            self.k.map_table(t, space.vspace, va).map_err(map_fail)?;
        }
        self.k.map_frame(frame, space.vspace, va, writable).map_err(map_fail)
    }

    /// Retype one frame per page from `blocks` into `frames` (as many as the blocks have pages).
    fn make_frames(&mut self, blocks: &[Block], frames: &[u64]) -> Result<(), ServiceError> {
        let mut f = frames.iter();
        for &b in blocks {
            let from = self.pool.slot(b).ok_or(ServiceError::KernelError)?;
            for _ in 0..b.pages() {
                let &slot = f.next().ok_or(ServiceError::KernelError)?;
                self.k.retype(from, Object::Frame, slot).map_err(kerr)?;
            }
        }
        Ok(())
    }

    /// Delete capability copies and give their slots back; on a failure the rest are still
    /// deleted and the error is returned (copies not deleted keep their slots).
    fn delete_all(&mut self, caps: &[u64]) -> Result<(), ServiceError> {
        let mut result = Ok(());
        for &c in caps {
            match self.k.delete(c) {
                Ok(()) => {
                    self.slots.free(c);
                }
                Err(e) => result = Err(kerr(e)),
            }
        }
        result
    }
}

/// A reply: one of the response types, serialised as that type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Unit,
    Region(proto::Region),
    Addr(u64),
    Bytes(Vec<u8>),
    List(Vec<proto::Mapping>),
    Usage(proto::Usage),
}

impl Serialize for Answer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Unit => ().serialize(s),
            Answer::Region(r) => r.serialize(s),
            Answer::Addr(a) => a.serialize(s),
            Answer::Bytes(b) => b.serialize(s),
            Answer::List(l) => l.serialize(s),
            Answer::Usage(u) => u.serialize(s),
        }
    }
}

/// A request's payload, decodable as any request type (`rpc::Request` on the target; bytes in
/// tests).
pub trait Payload {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError>;
}

impl Payload for ozone_agent_sdk::rpc::Request {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        ozone_agent_sdk::rpc::Request::decode(self)
    }
}

/// Counters for the server's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocs: u64,
    pub frees: u64,
    pub shares: u64,
    pub unshares: u64,
    pub seals: u64,
    pub unseals: u64,
    pub tampered: u64,
    /// Programs whose address space was found gone (and whose state was dropped).
    pub forgotten: u64,
    /// Frames that could not be zeroed on free (the kernel still zeroes them before reuse).
    pub zero_failures: u64,
}

/// The server.
pub struct SecMem<K> {
    mem: Mem<K>,
    regions: Regions,
    spaces: BTreeMap<u64, Space>,
    own: Space,
    /// The page in the server's own window where frames are zeroed.
    scratch: u64,
    window: (u64, u64),
    sealer: Option<Sealer>,
    stats: Stats,
}

impl<K: Kernel> SecMem<K> {
    /// Set up: the pool, the slots, and the paging structures of the scratch page (so freeing
    /// never needs memory). `sealer` is `None` when the instance gave no secret.
    pub fn new(k: K, cfg: Config, sealer: Option<Sealer>) -> SecMem<K> {
        let (base, size) = cfg.window;
        let mut s = SecMem {
            mem: Mem { k, slots: Slots::new(cfg.slots.0, cfg.slots.1), pool: Buddy::for_pool(cfg.pool, cfg.pool_size) },
            regions: Regions::new(),
            spaces: BTreeMap::new(),
            own: Space { vspace: cfg.own_vspace, window: Window::new(base, size), tables: Vec::new() },
            scratch: base + PAGE_SIZE,
            window: cfg.window,
            sealer,
            stats: Stats::default(),
        };
        let _ = s.prepare_scratch();
        s
    }

    /// Map a frame at the scratch page once, so its paging structures exist from then on.
    fn prepare_scratch(&mut self) -> Result<(), ServiceError> {
        let (block, frame) = self.mem.new_object(Object::Frame)?;
        let r = self.mem.map(&mut self.own, frame, self.scratch, true);
        let _ = self.mem.k.unmap_frame(frame);
        self.mem.free_block(block);
        self.mem.slots.free(frame);
        r.map_err(|_| ServiceError::KernelError)
    }

    /// Pages left in the pool.
    pub fn free_pages(&self) -> u64 {
        self.mem.pool.free_pages()
    }

    /// What the server has done so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The kernel (for tests).
    pub fn kernel(&mut self) -> &mut K {
        &mut self.mem.k
    }

    /// Pages held as paging structures (for clients and the scratch page).
    pub fn table_pages(&self) -> usize {
        self.own.tables.len() + self.spaces.values().map(|s| s.tables.len()).sum::<usize>()
    }

    /// Serve one request from program `caller`.
    pub fn handle(&mut self, caller: u64, m: u64, req: &impl Payload) -> Result<Answer, ServiceError> {
        match m {
            method::ALLOC => {
                let a: proto::Alloc = req.decode()?;
                self.alloc(caller, a.pages).map(Answer::Region)
            }
            method::FREE => {
                let f: proto::Free = req.decode()?;
                self.free(caller, f.id).map(|()| Answer::Unit)
            }
            method::SHARE => {
                let s: proto::Share = req.decode()?;
                self.share(caller, s.id, s.peer, s.writable).map(Answer::Addr)
            }
            method::UNSHARE => {
                let u: proto::Unshare = req.decode()?;
                self.unshare(caller, u.id, u.peer).map(|()| Answer::Unit)
            }
            method::SEAL => {
                let mut s: proto::Seal = req.decode()?;
                let r = self.seal(caller, &s.data);
                wipe(&mut s.data);
                r.map(Answer::Bytes)
            }
            method::UNSEAL => {
                let u: proto::Unseal = req.decode()?;
                self.unseal(caller, &u.blob).map(Answer::Bytes)
            }
            method::LIST => {
                let first: u32 = req.decode()?;
                let all = self.regions.mappings(caller);
                Ok(Answer::List(all.into_iter().skip(first as usize).take(LIST_PAGE).collect()))
            }
            method::USAGE => {
                let () = req.decode()?;
                Ok(Answer::Usage(self.regions.usage(caller)))
            }
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    /// Run `f` on `program`'s address space; if the space turns out to be gone, drop what the
    /// server had for the program and try once more with a fresh one.
    fn with_space<T>(
        &mut self,
        program: u64,
        mut f: impl FnMut(&mut Self, u64) -> Result<T, Fail>,
    ) -> Result<T, ServiceError> {
        for attempt in 0..2 {
            self.space(program)?;
            match f(self, program) {
                Ok(v) => return Ok(v),
                Err(Fail::Service(e)) => return Err(e),
                Err(Fail::Stale) if attempt == 0 => self.forget(program),
                Err(Fail::Stale) => return Err(ServiceError::KernelError),
            }
        }
        Err(ServiceError::KernelError)
    }

    /// Make sure the server has `program`'s address space.
    fn space(&mut self, program: u64) -> Result<(), ServiceError> {
        if self.spaces.contains_key(&program) {
            return Ok(());
        }
        let slot = self.mem.k.vspace_of(program)?;
        // A slot in the server's own range: take it out of the range for good (Studio chose it).
        if self.mem.slots.in_use(slot) {
            return Err(ServiceError::KernelError);
        }
        self.mem.slots.reserve(slot);
        // Studio reuses a slot only after the capability in it is gone: whoever had it is dead.
        let dead: Vec<u64> = self.spaces.iter().filter(|(_, s)| s.vspace == slot).map(|(&p, _)| p).collect();
        for p in dead {
            self.forget(p);
        }
        let (base, size) = self.window;
        self.spaces.insert(program, Space { vspace: slot, window: Window::new(base, size), tables: Vec::new() });
        Ok(())
    }

    /// Drop everything for a program whose address space is gone: its regions are freed, shares
    /// into it removed, its paging structures reclaimed.
    fn forget(&mut self, program: u64) {
        self.stats.forgotten += 1;
        let owned: Vec<u64> = self.regions.owned_by(program).map(|r| r.id).collect();
        for id in owned {
            let _ = self.free(program, id);
        }
        let shared: Vec<(u64, u64)> = self.regions.shared_with(program).map(|(r, _)| (r.owner, r.id)).collect();
        for (owner, id) in shared {
            if let Ok(s) = self.regions.take_share(owner, id, program) {
                let _ = self.mem.delete_all(&s.copies);
            }
        }
        if let Some(space) = self.spaces.remove(&program) {
            for (block, slot) in space.tables {
                self.mem.free_block(block);
                self.mem.slots.free(slot);
            }
        }
    }

    /// `ALLOC`.
    pub fn alloc(&mut self, caller: u64, pages: u32) -> Result<proto::Region, ServiceError> {
        self.regions.check_alloc(caller, pages)?;
        let region = self.with_space(caller, |s, p| s.try_alloc(p, pages))?;
        let r = proto::Region { id: region.id, addr: region.addr, len: region.len() };
        self.regions.insert(region);
        self.stats.allocs += 1;
        Ok(r)
    }

    fn try_alloc(&mut self, caller: u64, pages: u32) -> Result<Region, Fail> {
        let n = pages as usize;
        let space = self.spaces.get_mut(&caller).ok_or(ServiceError::KernelError)?;
        let addr = space.window.alloc(n as u64).ok_or(ServiceError::NoMemory)?;
        let blocks = match self.mem.alloc_blocks(n as u64) {
            Ok(b) => b,
            Err(e) => {
                space.window.free(addr);
                return Err(e.into());
            }
        };
        let Some(frames) = self.mem.slots.alloc_n(n) else {
            for b in blocks {
                self.mem.free_block(b);
            }
            space.window.free(addr);
            return Err(ServiceError::NoMemory.into());
        };
        let mapped = self.mem.make_frames(&blocks, &frames).map_err(Fail::from).and_then(|()| {
            frames.iter().enumerate().try_for_each(|(i, &f)| self.mem.map(space, f, addr + i as u64 * PAGE_SIZE, true))
        });
        if let Err(e) = mapped {
            // Revoking the blocks destroys the frames (unmapping those that were mapped); they
            // were never written, so there is nothing to zero.
            for b in blocks {
                self.mem.free_block(b);
            }
            for f in frames {
                self.mem.slots.free(f);
            }
            space.window.free(addr);
            return Err(e);
        }
        let id = self.regions.new_id();
        Ok(Region { id, owner: caller, pages, addr, blocks, frames, shares: Vec::new() })
    }

    /// `FREE`.
    pub fn free(&mut self, caller: u64, id: u64) -> Result<(), ServiceError> {
        let region = self.regions.remove(caller, id)?;
        // 1. Nobody can reach it any more: peers' copies deleted, the owner's mapping removed.
        for share in &region.shares {
            let _ = self.mem.delete_all(&share.copies);
            if let Some(space) = self.spaces.get_mut(&share.peer) {
                space.window.free(share.addr);
            }
        }
        for &f in &region.frames {
            let _ = self.mem.k.unmap_frame(f);
        }
        if let Some(space) = self.spaces.get_mut(&caller) {
            space.window.free(region.addr);
        }
        // 2. Zero every page through the scratch mapping.
        for &f in &region.frames {
            if self.zero_frame(f).is_err() {
                self.stats.zero_failures += 1;
            }
        }
        // 3. Destroy the frames (and any copy left) and give the memory back.
        for &b in &region.blocks {
            self.mem.free_block(b);
        }
        for &f in &region.frames {
            self.mem.slots.free(f);
        }
        for share in &region.shares {
            for &c in &share.copies {
                self.mem.slots.free(c);
            }
        }
        self.stats.frees += 1;
        Ok(())
    }

    /// Zero the (unmapped) frame in `frame` through the scratch page.
    fn zero_frame(&mut self, frame: u64) -> Result<(), Error> {
        self.mem.k.map_frame(frame, self.own.vspace, self.scratch, true)?;
        // SAFETY: the frame was just mapped writable at the scratch page, which nothing else
        // uses and nothing refers to; it is unmapped right after.
        unsafe { self.mem.k.zero_own(self.scratch, PAGE_SIZE as usize) };
        self.mem.k.unmap_frame(frame)
    }

    /// `SHARE`.
    pub fn share(&mut self, caller: u64, id: u64, peer: u64, writable: bool) -> Result<u64, ServiceError> {
        self.regions.check_share(caller, id, peer)?;
        let frames = self.regions.owned(caller, id)?.frames.clone();
        let share = self.with_space(peer, |s, p| s.try_share(p, &frames, writable))?;
        let addr = share.addr;
        match self.regions.owned_mut(caller, id) {
            Ok(r) => r.shares.push(share),
            // The owner's own address space went away while the peer's was found (the region
            // was freed by `forget`): undo.
            Err(e) => {
                let _ = self.mem.delete_all(&share.copies);
                if let Some(space) = self.spaces.get_mut(&peer) {
                    space.window.free(addr);
                }
                return Err(e);
            }
        }
        self.stats.shares += 1;
        Ok(addr)
    }

    fn try_share(&mut self, peer: u64, frames: &[u64], writable: bool) -> Result<Share, Fail> {
        let space = self.spaces.get_mut(&peer).ok_or(ServiceError::KernelError)?;
        let addr = space.window.alloc(frames.len() as u64).ok_or(ServiceError::NoMemory)?;
        let Some(copies) = self.mem.slots.alloc_n(frames.len()) else {
            space.window.free(addr);
            return Err(ServiceError::NoMemory.into());
        };
        let r = if writable { rights::ALL } else { rights::READ };
        let mut made = 0;
        let mut result = Ok(());
        for (i, (&f, &c)) in frames.iter().zip(&copies).enumerate() {
            if let Err(e) = self.mem.k.copy(c, f, r) {
                result = Err(Fail::Service(kerr(e)));
                break;
            }
            made += 1;
            result = self.mem.map(space, c, addr + i as u64 * PAGE_SIZE, writable);
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            let _ = self.mem.delete_all(&copies[..made]);
            for &c in &copies[made..] {
                self.mem.slots.free(c);
            }
            space.window.free(addr);
            return Err(e);
        }
        Ok(Share { peer, addr, writable, copies })
    }

    /// `UNSHARE`: the peer's mapping is gone when this returns.
    pub fn unshare(&mut self, caller: u64, id: u64, peer: u64) -> Result<(), ServiceError> {
        let mut share = self.regions.take_share(caller, id, peer)?;
        let mut left = Vec::new();
        for &c in &share.copies {
            if self.mem.k.delete(c).is_ok() {
                self.mem.slots.free(c);
            } else {
                left.push(c);
            }
        }
        if !left.is_empty() {
            // Keep what could not be deleted on record, so a later UNSHARE or FREE retries.
            share.copies = left;
            if let Ok(r) = self.regions.owned_mut(caller, id) {
                r.shares.push(share);
            }
            return Err(ServiceError::KernelError);
        }
        if let Some(space) = self.spaces.get_mut(&peer) {
            space.window.free(share.addr);
        }
        self.stats.unshares += 1;
        Ok(())
    }

    /// `SEAL`.
    pub fn seal(&mut self, caller: u64, data: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let s = self.sealer.as_mut().ok_or(ServiceError::Denied)?;
        let b = s.seal(caller, data)?;
        self.stats.seals += 1;
        Ok(b)
    }

    /// `UNSEAL`.
    pub fn unseal(&mut self, caller: u64, blob: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let s = self.sealer.as_ref().ok_or(ServiceError::Denied)?;
        let r = s.unseal(caller, blob);
        match r {
            Ok(_) => self.stats.unseals += 1,
            Err(ServiceError::Tampered) => self.stats.tampered += 1,
            Err(_) => {}
        }
        r
    }
}
