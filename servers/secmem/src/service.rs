//! The secure memory service: every request, on top of a [`Kernel`].
//!
//! # Memory: the client's own
//!
//! The server has no memory pool for clients. Every page it makes for program X — the frames of
//! X's regions and the paging structures of X's share window — comes from X's [`Funds`]: untyped
//! memory Studio retyped from X's own memory chunk, within X's quota, at the server's request
//! (`FUND`). One program can therefore exhaust only itself: a hog runs into its own quota
//! (`QuotaExceeded`) and nobody else notices.
//!
//! # Slots: the client's own too
//!
//! The server's CNode slots are cut into equal slices of `CLIENT_SLOTS` (`protocol::secmem`), one
//! per client while it runs (`Slices`). Every capability the server holds for X — X's grants
//! and their buddy halves, the frames of X's regions, the copies of others' frames X accepted, X's
//! paging structures, the scratch object that zeroes a freed piece — is in a slot of X's slice.
//! A client that uses up its slots (say, many small regions and everything its peers offer) is
//! refused `NoMemory` and nobody else notices; slices never overlap, so their sum never exceeds
//! what the server has. We chose slices over a CNode per client retyped from the client's funds:
//! that would make slots paid from the quota like pages, but every capability pointer of the
//! server would have to go through a second CNode level (a guard change of the server's CNode and
//! of every slot Studio fills there); a slice costs nothing of that and the bound is as strict.
//! The price: the server serves at most as many programs at once as it has slices. Studio sizes
//! its CNode for every program of the description that may use `secmem`; a client beyond that
//! (granted `secmem` at run time) is refused until a slice comes back — the server first forgets
//! every client that stopped.
//!
//! # Regions
//!
//! `ALLOC` takes exactly `pages` pages from the caller's funds (one piece per set bit of
//! `pages`), retypes one frame per page from those pieces (the kernel hands out only zeroed
//! memory), and maps the frames read-write, never executable, into the caller's share window at
//! an address from its [`Window`] (guard pages around every region).
//!
//! `FREE`, in this order: every peer's mapping goes (its frame copies are deleted), the owner's
//! mapping goes, then each piece is revoked (destroying the frames and anything derived from
//! them) and **scrubbed**: the server retypes one object covering the whole piece
//! ([`Object::Filler`]), which makes the kernel zero it, and revokes it again. The memory is then
//! free in the owner's funds. The server never maps client memory into itself, so a client that
//! vanishes in the middle of this (Studio revokes its memory) cannot make the server fault: the
//! kernel operations on the vanished capabilities just fail.
//!
//! # Sharing: offer, accept, unshare or drop
//!
//! `OFFER` records that the owner offers a region to a peer; nothing is mapped. The peer sees
//! its offers (`OFFERS`) and takes one with `ACCEPT`: the server copies the frame capabilities
//! (read-only copies for a read-only offer) and maps them inside the peer's own share window, at
//! an address the peer chose or one from its [`Window`] — never anywhere else, and never in the
//! server itself (an offer to the server is refused). The peer's paging structures come from the
//! peer's funds. The owner takes the region back (`UNSHARE`), or the peer lets it go (`DROP`):
//! the copies are deleted, and the kernel unmaps a frame when its capability is deleted (and
//! flushes the TLB), so the mapping is gone when the reply goes out.
//!
//! # Programs that stop
//!
//! When X stops, Studio revokes X's chunk: X's address space, the server's copy of its
//! capability, X's funds and everything made from them — X's frames and their copies mapped in
//! peers — go. The server finds out before it serves anything involving X (the caller, the peer
//! of an offer, the owner of a region shared with the caller): its copy of X's address-space
//! capability is gone ([`Kernel::holds`]). It then forgets X: records only, plus deleting the
//! copies it holds of *other* programs' frames that were mapped in X. It never touches X's
//! memory. If Studio hands out the slot of X's old address space for another program, X is gone
//! too.
//!
//! # Identities
//!
//! Everything is keyed by program id (the client's badge). A restarted program that keeps its
//! id keeps its sealed blobs; its regions, offers and funds died with its previous life.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ozone_abi::{Error, rights};
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::secmem::{self as proto, CLIENT_SLOTS, LIST_PAGE, PAGE_SIZE, id, method};
use ozone_agent_sdk::protocol::studio::MAX_FUND_ORDER;
use ozone_agent_sdk::rpc::{self, Args, Response};

use crate::buddy::UntypedOps;
use crate::funds::{Funds, MIN_GRANT_ORDER, Piece};
use crate::kernel::{Kernel, Object};
use crate::regions::{Region, Regions, Share};
use crate::seal::{Sealer, wipe};
use crate::window::Window;
use ozone_agent_sdk::slots::Slots;

/// Where the server's resources are.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The server's own program id (nothing is ever offered to it).
    pub own_id: u64,
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

/// A client's address space, as the server maps into it.
struct Space {
    /// The slot of the server's copy of its PML4 capability (one of Studio's slots).
    vspace: u64,
    window: Window,
    /// Paging structures made for it (from its funds): the piece each came from and its slot.
    tables: Vec<(Piece, u64)>,
}

/// What the server has for one running program.
struct Client {
    id: u64,
    space: Space,
    funds: Funds,
    /// Its slice of the server's slots (see [`Slices`]): every capability the server holds for
    /// it — its grants and their buddy halves, its frames, its paging structures, the copies of
    /// others' frames it accepted — is in a slot of this slice, and nowhere else.
    slots: Slots,
    /// Which slice.
    slice: usize,
}

/// The server's own slots, cut into equal slices of [`CLIENT_SLOTS`], one per client while it
/// runs. A client can use up only its own slice; slices never overlap, so their sum never
/// exceeds what the server has. A client the server has no slice left for is refused
/// (`NoMemory`) until one comes back (its program stopped): Studio gives the server a CNode with
/// a slice for every program that may use it.
struct Slices {
    first: u64,
    /// Whether each slice is a client's.
    taken: Vec<bool>,
    /// Slots in the server's range that Studio filled (address-space copies in a small CNode):
    /// never handed out in any slice.
    studio: Vec<u64>,
}

impl Slices {
    fn new((first, end): (u64, u64)) -> Slices {
        let n = (end.saturating_sub(first) / CLIENT_SLOTS) as usize;
        Slices { first, taken: alloc::vec![false; n], studio: Vec::new() }
    }

    fn range(&self, i: usize) -> (u64, u64) {
        let start = self.first + i as u64 * CLIENT_SLOTS;
        (start, start + CLIENT_SLOTS)
    }

    /// A free slice as a slot allocator (Studio's slots in it already in use).
    fn take(&mut self) -> Option<(usize, Slots)> {
        let i = self.taken.iter().position(|t| !t)?;
        self.taken[i] = true;
        let (a, b) = self.range(i);
        let mut s = Slots::new(a, b);
        for &x in &self.studio {
            s.reserve(x);
        }
        Some((i, s))
    }

    fn give_back(&mut self, i: usize) {
        if let Some(t) = self.taken.get_mut(i) {
            *t = false;
        }
    }

    /// The slice holding `slot`, if any.
    fn of(&self, slot: u64) -> Option<usize> {
        let i = (slot.checked_sub(self.first)? / CLIENT_SLOTS) as usize;
        (i < self.taken.len()).then_some(i)
    }
}

/// The kernel-facing resources: the kernel and the server's slots.
struct Mem<K> {
    k: K,
    slices: Slices,
    /// Pieces the kernel could not be made to zero (their client vanished meanwhile: its memory
    /// is zeroed by the kernel before anyone gets it again).
    scrub_failures: u64,
}

/// [`UntypedOps`] over the kernel and the slots.
struct Ops<'a, K> {
    k: &'a mut K,
    slots: &'a mut Slots,
    scrub_failures: &'a mut u64,
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

    /// Revoke the block, then scrub it: one object over all of it makes the kernel zero it.
    fn reclaim(&mut self, block: u64, bits: u8) -> Result<(), ServiceError> {
        self.k.revoke(block).map_err(kerr)?;
        let Some(s) = self.slots.alloc() else {
            *self.scrub_failures += 1;
            return Ok(());
        };
        match self.k.retype(block, Object::Filler(bits), s) {
            Ok(()) => {
                if self.k.revoke(block).is_err() {
                    let _ = self.k.delete(s);
                }
            }
            Err(_) => *self.scrub_failures += 1,
        }
        if !self.k.holds(s) {
            self.slots.free(s);
        }
        Ok(())
    }
}

impl<K: Kernel> Mem<K> {
    /// A piece of `2^order` pages of `c`'s funds, asking Studio for a grant if none fits.
    fn piece(&mut self, c: &mut Client, order: u8) -> Result<Piece, ServiceError> {
        let mut ops = Ops { k: &mut self.k, slots: &mut c.slots, scrub_failures: &mut self.scrub_failures };
        match c.funds.alloc(order, &mut ops) {
            Err(ServiceError::NoMemory) => {}
            other => return other,
        }
        self.grant(c, order)?;
        let mut ops = Ops { k: &mut self.k, slots: &mut c.slots, scrub_failures: &mut self.scrub_failures };
        c.funds.alloc(order, &mut ops)
    }

    /// A new grant for `c` with room for a piece of `2^order` pages: [`MIN_GRANT_ORDER`] or more
    /// if the client's quota has room, else exactly that.
    fn grant(&mut self, c: &mut Client, order: u8) -> Result<(), ServiceError> {
        if order > MAX_FUND_ORDER {
            return Err(ServiceError::InvalidArgument);
        }
        let want = order.clamp(MIN_GRANT_ORDER, MAX_FUND_ORDER);
        for g in [want, order] {
            let slot = c.slots.alloc().ok_or(ServiceError::NoMemory)?;
            match self.k.fund(c.id, g, slot) {
                Ok(()) => {
                    c.funds.add(slot, g);
                    return Ok(());
                }
                Err(ServiceError::QuotaExceeded) if g > order => {
                    c.slots.free(slot);
                }
                Err(e) => {
                    c.slots.free(slot);
                    return Err(e);
                }
            }
        }
        Err(ServiceError::QuotaExceeded)
    }

    fn free_piece(&mut self, c: &mut Client, p: Piece) {
        let mut ops = Ops { k: &mut self.k, slots: &mut c.slots, scrub_failures: &mut self.scrub_failures };
        let _ = c.funds.free(p, &mut ops);
    }

    /// One object in a fresh slot, from a fresh one-page piece of `c`'s funds.
    fn new_object(&mut self, c: &mut Client, obj: Object) -> Result<(Piece, u64), ServiceError> {
        let piece = self.piece(c, 0)?;
        let Some(slot) = c.slots.alloc() else {
            self.free_piece(c, piece);
            return Err(ServiceError::NoMemory);
        };
        let from = c.funds.slot(piece).unwrap_or(0);
        if let Err(e) = self.k.retype(from, obj, slot) {
            c.slots.free(slot);
            self.free_piece(c, piece);
            return Err(kerr(e));
        }
        Ok((piece, slot))
    }

    /// Map `frame` at `va` in `c`'s address space, first making whichever paging structures are
    /// missing there (from the bottom up until one fits, then mapped top down), from `c`'s funds.
    fn map(&mut self, c: &mut Client, frame: u64, va: u64, writable: bool) -> Result<(), ServiceError> {
        match self.k.map_frame(frame, c.space.vspace, va, writable) {
            Err(Error::FailedLookup) => {}
            other => return other.map_err(kerr),
        }
        let mut pending: Vec<(Object, u64)> = Vec::new();
        for obj in [Object::PageTable, Object::PageDirectory, Object::Pdpt] {
            let (piece, t) = self.new_object(c, obj)?;
            c.space.tables.push((piece, t));
            match self.k.map_table(obj, t, c.space.vspace, va) {
                Ok(()) => break,
                Err(Error::FailedLookup) => pending.push((obj, t)),
                Err(e) => return Err(kerr(e)),
            }
        }
        for &(obj, t) in pending.iter().rev() {
            self.k.map_table(obj, t, c.space.vspace, va).map_err(kerr)?;
        }
        self.k.map_frame(frame, c.space.vspace, va, writable).map_err(kerr)
    }

    /// Retype one frame per page from `pieces` of `funds` into `frames`.
    fn make_frames(&mut self, funds: &Funds, pieces: &[Piece], frames: &[u64]) -> Result<(), ServiceError> {
        let mut f = frames.iter();
        for &p in pieces {
            let from = funds.slot(p).ok_or(ServiceError::KernelError)?;
            for _ in 0..p.pages() {
                let &slot = f.next().ok_or(ServiceError::KernelError)?;
                self.k.retype(from, Object::Frame, slot).map_err(kerr)?;
            }
        }
        Ok(())
    }

    /// Delete capabilities and give their slots back to `slots` (the slice of the client they
    /// were charged to, if it still has one); on a failure the rest are still deleted and the
    /// error is returned (capabilities not deleted keep their slots).
    fn delete_all(&mut self, mut slots: Option<&mut Slots>, caps: &[u64]) -> Result<(), ServiceError> {
        let mut result = Ok(());
        for &c in caps {
            match self.k.delete(c) {
                Ok(()) => {
                    if let Some(s) = slots.as_deref_mut() {
                        s.free(c);
                    }
                }
                Err(e) => result = Err(kerr(e)),
            }
        }
        result
    }
}

/// Counters for the server's log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocs: u64,
    pub frees: u64,
    pub offers: u64,
    pub accepts: u64,
    pub unshares: u64,
    pub drops: u64,
    pub seals: u64,
    pub unseals: u64,
    pub tampered: u64,
    /// Grants Studio made from clients' quotas.
    pub grants: u64,
    /// Programs found gone (and whose state was dropped).
    pub forgotten: u64,
    /// Pieces the kernel could not be made to zero on free (their client had vanished).
    pub scrub_failures: u64,
}

/// The server.
pub struct SecMem<K> {
    mem: Mem<K>,
    regions: Regions,
    clients: BTreeMap<u64, Client>,
    own_id: u64,
    window: (u64, u64),
    sealer: Option<Sealer>,
    stats: Stats,
}

impl<K: Kernel> SecMem<K> {
    /// Set up. `sealer` is `None` when the instance gave no secret.
    pub fn new(k: K, cfg: Config, sealer: Option<Sealer>) -> SecMem<K> {
        SecMem {
            mem: Mem { k, slices: Slices::new(cfg.slots), scrub_failures: 0 },
            regions: Regions::new(),
            clients: BTreeMap::new(),
            own_id: cfg.own_id,
            window: cfg.window,
            sealer,
            stats: Stats::default(),
        }
    }

    /// What the server has done so far.
    pub fn stats(&self) -> Stats {
        Stats { scrub_failures: self.mem.scrub_failures, ..self.stats }
    }

    /// The kernel (for tests).
    pub fn kernel(&mut self) -> &mut K {
        &mut self.mem.k
    }

    /// Free slots of the server's own, in clients' slices and in slices nobody has (for tests).
    pub fn free_slots(&self) -> u64 {
        let unused = self.mem.slices.taken.iter().filter(|t| !**t).count() as u64;
        unused * CLIENT_SLOTS + self.clients.values().map(|c| c.slots.free_count()).sum::<u64>()
    }

    /// Free slots in `program`'s slice (for tests).
    pub fn client_free_slots(&self, program: u64) -> Option<u64> {
        self.clients.get(&program).map(|c| c.slots.free_count())
    }

    /// Whether the server has state for `program` (its address space, its funds).
    pub fn knows(&self, program: u64) -> bool {
        self.clients.contains_key(&program)
    }

    /// Grants in `program`'s funds.
    pub fn grants(&self, program: u64) -> usize {
        self.clients.get(&program).map_or(0, |c| c.funds.grants())
    }

    /// Pages of `program`'s funds: (granted, free).
    pub fn funds(&self, program: u64) -> (u64, u64) {
        self.clients.get(&program).map_or((0, 0), |c| (c.funds.pages(), c.funds.free_pages()))
    }

    /// Pages of `program`'s funds in use as paging structures of its share window.
    pub fn table_pages(&self, program: u64) -> usize {
        self.clients.get(&program).map_or(0, |c| c.space.tables.len())
    }

    /// Serve one request from program `caller`: each method's request decoded, and its answer
    /// encoded, as the method's types ([`rpc::handle`]).
    pub fn handle(&mut self, caller: u64, req: &impl Args) -> Response {
        // A caller in a new life: what its previous life had is gone.
        self.refresh(caller);
        match req.method() {
            id::ALLOC => rpc::handle(req, method::ALLOC, |a| self.alloc(caller, a.pages)),
            id::FREE => rpc::handle(req, method::FREE, |f| self.free(caller, f.id)),
            id::OFFER => rpc::handle(req, method::OFFER, |o| self.offer(caller, o.id, o.peer, o.writable)),
            id::UNSHARE => rpc::handle(req, method::UNSHARE, |u| self.unshare(caller, u.id, u.peer)),
            id::ACCEPT => rpc::handle(req, method::ACCEPT, |a| self.accept(caller, a.id, a.at)),
            id::DROP => rpc::handle(req, method::DROP, |d| self.drop_share(caller, d.id)),
            id::SEAL => rpc::handle(req, method::SEAL, |mut s| {
                let r = self.seal(caller, &s.data);
                wipe(&mut s.data);
                r
            }),
            id::UNSEAL => rpc::handle(req, method::UNSEAL, |u| self.unseal(caller, &u.blob)),
            id::LIST => rpc::handle(req, method::LIST, |first| {
                self.refresh_owners(caller);
                let all = self.regions.mappings(caller);
                Ok(all.into_iter().skip(first as usize).take(LIST_PAGE).collect::<Vec<_>>())
            }),
            id::OFFERS => rpc::handle(req, method::OFFERS, |first| {
                self.refresh_owners(caller);
                let all = self.regions.offers(caller);
                Ok(all.into_iter().skip(first as usize).take(LIST_PAGE).collect::<Vec<_>>())
            }),
            id::USAGE => rpc::handle(req, method::USAGE, |()| {
                self.refresh_owners(caller);
                let mut u = self.regions.usage(caller);
                u.funded = self.funds(caller).0.min(u32::MAX as u64) as u32;
                Ok(u)
            }),
            _ => Err(ServiceError::UnknownMethod),
        }
    }

    /// If `program` is known and its address space is gone, it stopped: forget it.
    fn refresh(&mut self, program: u64) {
        let Some(c) = self.clients.get(&program) else { return };
        let vspace = c.space.vspace;
        if !self.mem.k.holds(vspace) {
            self.forget(program);
        }
    }

    /// [`refresh`](Self::refresh) the owners of every region offered to or shared with `peer`.
    fn refresh_owners(&mut self, peer: u64) {
        let mut owners: Vec<u64> = self.regions.received_by(peer).into_iter().map(|(o, _)| o).collect();
        owners.sort_unstable();
        owners.dedup();
        for o in owners {
            self.refresh(o);
        }
    }

    /// Make sure the server has `program`'s address space (and so a record for it).
    fn client(&mut self, program: u64) -> Result<(), ServiceError> {
        self.refresh(program);
        if self.clients.contains_key(&program) {
            return Ok(());
        }
        let slot = self.mem.k.vspace_of(program)?;
        // Studio reuses a slot only after the capability in it is gone: whoever had it is dead.
        let dead: Vec<u64> = self.clients.iter().filter(|(_, c)| c.space.vspace == slot).map(|(&p, _)| p).collect();
        for p in dead {
            self.forget(p);
        }
        // A slot in the server's own range: take it out of the range for good (Studio chose it).
        if let Some(i) = self.mem.slices.of(slot)
            && !self.mem.slices.studio.contains(&slot)
        {
            let owner = self.clients.values_mut().find(|c| c.slice == i);
            if let Some(o) = owner
                && !o.slots.reserve(slot)
            {
                return Err(ServiceError::KernelError);
            }
            self.mem.slices.studio.push(slot);
        }
        if !self.mem.slices.taken.contains(&false) {
            // Every slice is a client's: forget the clients that stopped since (their slices
            // come back).
            let known: Vec<u64> = self.clients.keys().copied().collect();
            for p in known {
                self.refresh(p);
            }
        }
        let Some((slice, slots)) = self.mem.slices.take() else {
            // No slice left: the server serves as many programs at once as its CNode has slices
            // for (Studio makes it a slice for every program that may use it).
            return Err(ServiceError::NoMemory);
        };
        let (base, size) = self.window;
        let space = Space { vspace: slot, window: Window::new(base, size), tables: Vec::new() };
        self.clients.insert(program, Client { id: program, space, funds: Funds::new(), slots, slice });
        Ok(())
    }

    /// Drop everything for a program that stopped. Its memory — its funds, everything made
    /// from them wherever it was mapped, its address space — is already gone with its chunk, so
    /// this deletes nothing of it (the deletes below find empty slots); it only deletes the
    /// server's copies of other programs' frames that were mapped in it, and gives the slots back
    /// (its slice, once every slot in it is empty).
    fn forget(&mut self, program: u64) {
        self.stats.forgotten += 1;
        let mut gone = self.clients.remove(&program);
        let mut all_deleted = true;
        let owned: Vec<u64> = self.regions.owned_by(program).map(|r| r.id).collect();
        for id in owned {
            let Ok(region) = self.regions.remove(program, id) else { continue };
            for share in &region.shares {
                // The copies are the peer's (from its slice).
                let peer = self.clients.get_mut(&share.peer);
                if share.accepted
                    && let Some(c) = peer
                {
                    c.space.window.free(share.addr);
                    let _ = self.mem.delete_all(Some(&mut c.slots), &share.copies);
                } else {
                    let _ = self.mem.delete_all(None, &share.copies);
                }
            }
            all_deleted &= self.mem.delete_all(None, &region.frames).is_ok();
        }
        for (owner, id) in self.regions.received_by(program) {
            if let Ok(s) = self.regions.take_share(owner, id, program) {
                all_deleted &= self.mem.delete_all(None, &s.copies).is_ok();
            }
        }
        if let Some(c) = gone.take() {
            let tables: Vec<u64> = c.space.tables.iter().map(|&(_, t)| t).collect();
            all_deleted &= self.mem.delete_all(None, &tables).is_ok();
            all_deleted &= self.mem.delete_all(None, &c.funds.slots()).is_ok();
            // A slot the kernel would not empty keeps its whole slice out of use: never handed
            // to another client with a capability in it.
            if all_deleted {
                self.mem.slices.give_back(c.slice);
            }
        }
    }

    /// `ALLOC`.
    pub fn alloc(&mut self, caller: u64, pages: u32) -> Result<proto::Region, ServiceError> {
        self.regions.check_alloc(caller, pages)?;
        self.client(caller)?;
        let c = self.clients.get_mut(&caller).ok_or(ServiceError::KernelError)?;
        let (addr, blocks, frames) = try_alloc(&mut self.mem, c, pages as u64)?;
        let id = self.regions.new_id();
        let region = Region { id, owner: caller, pages, addr, blocks, frames, shares: Vec::new() };
        let r = proto::Region { id, addr, len: region.len() };
        self.regions.insert(region);
        self.stats.allocs += 1;
        Ok(r)
    }

    /// `FREE`.
    pub fn free(&mut self, caller: u64, id: u64) -> Result<(), ServiceError> {
        let region = self.regions.remove(caller, id)?;
        // 1. Nobody can reach it any more: peers' copies deleted, the owner's mapping removed.
        for share in &region.shares {
            // The copies are the peer's (from its slice).
            if share.accepted
                && let Some(c) = self.clients.get_mut(&share.peer)
            {
                let _ = self.mem.delete_all(Some(&mut c.slots), &share.copies);
                c.space.window.free(share.addr);
            } else {
                let _ = self.mem.delete_all(None, &share.copies);
            }
        }
        for &f in &region.frames {
            let _ = self.mem.k.unmap_frame(f);
        }
        // 2. Destroy the frames and have the kernel zero the memory; it stays in the owner's
        // funds for its next regions.
        if let Some(c) = self.clients.get_mut(&caller) {
            c.space.window.free(region.addr);
            for &p in &region.blocks {
                self.mem.free_piece(c, p);
            }
            for &f in &region.frames {
                c.slots.free(f);
            }
        }
        self.stats.frees += 1;
        Ok(())
    }

    /// `OFFER`: recorded only; nothing is mapped until the peer accepts.
    pub fn offer(&mut self, caller: u64, id: u64, peer: u64, writable: bool) -> Result<(), ServiceError> {
        if peer == self.own_id {
            return Err(ServiceError::InvalidArgument);
        }
        self.regions.check_offer(caller, id, peer)?;
        // The peer must be a running program (Studio says `NotFound` or `Busy` otherwise).
        self.client(peer)?;
        self.regions.owned_mut(caller, id)?.shares.push(Share::offer(peer, writable));
        self.stats.offers += 1;
        Ok(())
    }

    /// `ACCEPT`: map region `id`, offered to the caller, into the caller's share window.
    pub fn accept(&mut self, caller: u64, id: u64, at: u64) -> Result<u64, ServiceError> {
        let owner = self.regions.received(caller, id)?.0.owner;
        // An owner that stopped took its region with it.
        self.refresh(owner);
        let (region, share) = self.regions.received(caller, id)?;
        if share.accepted {
            return Err(ServiceError::Busy);
        }
        let (pages, writable, frames) = (region.pages, share.writable, region.frames.clone());
        self.regions.check_accept(caller, pages)?;
        self.client(caller)?;
        let c = self.clients.get_mut(&caller).ok_or(ServiceError::KernelError)?;
        let addr = if at == 0 {
            c.space.window.alloc(pages as u64).ok_or(ServiceError::NoMemory)?
        } else {
            c.space.window.alloc_at(at, pages as u64).ok_or(ServiceError::InvalidArgument)?
        };
        let copies = match map_copies(&mut self.mem, c, &frames, addr, writable) {
            Ok(copies) => copies,
            Err(e) => {
                c.space.window.free(addr);
                return Err(e);
            }
        };
        let s = self.regions.received_mut(caller, id)?;
        (s.accepted, s.addr, s.copies) = (true, addr, copies);
        self.stats.accepts += 1;
        Ok(addr)
    }

    /// Remove a share's mapping (if accepted): its copies are deleted, then the peer's window
    /// has the room again. Copies that could not be deleted stay on the share, which is
    /// returned to be kept on record.
    fn unmap_share(&mut self, mut share: Share) -> Result<(), (Share, ServiceError)> {
        if !share.accepted {
            return Ok(());
        }
        let mut left = Vec::new();
        let mut peer = self.clients.get_mut(&share.peer);
        for &c in &share.copies {
            if self.mem.k.delete(c).is_ok() {
                if let Some(p) = peer.as_deref_mut() {
                    p.slots.free(c);
                }
            } else {
                left.push(c);
            }
        }
        if !left.is_empty() {
            share.copies = left;
            return Err((share, ServiceError::KernelError));
        }
        if let Some(c) = self.clients.get_mut(&share.peer) {
            c.space.window.free(share.addr);
        }
        Ok(())
    }

    /// `UNSHARE`: the owner withdraws its offer, or takes the region back from the peer; the
    /// peer's mapping is gone when this returns.
    pub fn unshare(&mut self, caller: u64, id: u64, peer: u64) -> Result<(), ServiceError> {
        let share = self.regions.take_share(caller, id, peer)?;
        if let Err((share, e)) = self.unmap_share(share) {
            // Keep what could not be deleted on record, so a later UNSHARE or FREE retries.
            if let Ok(r) = self.regions.owned_mut(caller, id) {
                r.shares.push(share);
            }
            return Err(e);
        }
        self.stats.unshares += 1;
        Ok(())
    }

    /// `DROP`: the peer declines an offer, or unmaps a region it accepted.
    pub fn drop_share(&mut self, caller: u64, id: u64) -> Result<(), ServiceError> {
        let owner = self.regions.received(caller, id)?.0.owner;
        let share = self.regions.take_share(owner, id, caller)?;
        if let Err((share, e)) = self.unmap_share(share) {
            if let Ok(r) = self.regions.owned_mut(owner, id) {
                r.shares.push(share);
            }
            return Err(e);
        }
        self.stats.drops += 1;
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

/// Blocks for `pages` pages from `c`'s funds, their frames, mapped at a new place in `c`'s
/// window; on a failure everything taken is given back (the funds stay with `c`).
fn try_alloc<K: Kernel>(
    mem: &mut Mem<K>,
    c: &mut Client,
    pages: u64,
) -> Result<(u64, Vec<Piece>, Vec<u64>), ServiceError> {
    let addr = c.space.window.alloc(pages).ok_or(ServiceError::NoMemory)?;
    let mut pieces = Vec::new();
    let mut result = Ok(());
    for order in (0..64u8).rev().filter(|o| pages & (1 << o) != 0) {
        match mem.piece(c, order) {
            Ok(p) => pieces.push(p),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let frames = match result.and_then(|()| c.slots.alloc_n(pages as usize).ok_or(ServiceError::NoMemory)) {
        Ok(f) => f,
        Err(e) => {
            for p in pieces {
                mem.free_piece(c, p);
            }
            c.space.window.free(addr);
            return Err(e);
        }
    };
    let mapped = mem.make_frames(&c.funds, &pieces, &frames).and_then(|()| {
        frames.iter().enumerate().try_for_each(|(i, &f)| mem.map(c, f, addr + i as u64 * PAGE_SIZE, true))
    });
    if let Err(e) = mapped {
        // Revoking the pieces destroys the frames (unmapping those that were mapped).
        for p in pieces {
            mem.free_piece(c, p);
        }
        for f in frames {
            c.slots.free(f);
        }
        c.space.window.free(addr);
        return Err(e);
    }
    Ok((addr, pieces, frames))
}

/// Copies of `frames` (read-only unless `writable`) mapped at `addr` in `c`'s space; on a
/// failure the copies made are deleted.
fn map_copies<K: Kernel>(
    mem: &mut Mem<K>,
    c: &mut Client,
    frames: &[u64],
    addr: u64,
    writable: bool,
) -> Result<Vec<u64>, ServiceError> {
    let copies = c.slots.alloc_n(frames.len()).ok_or(ServiceError::NoMemory)?;
    let r = if writable { rights::ALL } else { rights::READ };
    let mut made = 0;
    let mut result = Ok(());
    for (i, (&f, &cp)) in frames.iter().zip(&copies).enumerate() {
        if let Err(e) = mem.k.copy(cp, f, r) {
            result = Err(kerr(e));
            break;
        }
        made += 1;
        result = mem.map(c, cp, addr + i as u64 * PAGE_SIZE, writable);
        if result.is_err() {
            break;
        }
    }
    if let Err(e) = result {
        let _ = mem.delete_all(Some(&mut c.slots), &copies[..made]);
        for &cp in &copies[made..] {
            c.slots.free(cp);
        }
        return Err(e);
    }
    Ok(copies)
}
