//! A model of the kernel (and of Studio's `VSPACE_OF` and `FUND`) for the host tests:
//! capabilities with a derivation tree, untyped memory with watermarks, physical memory,
//! four-level address spaces, and each program's memory chunk, which Studio revokes when the
//! program stops.
//!
//! It follows the rules the real kernel documents (docs/abi.md, `microkernel/src/object`):
//! Retype places objects at an untyped's aligned watermark, resets it first when it has no
//! children, and hands out zeroed frames; a frame capability maps once; copying a frame
//! capability gives an unmapped one; deleting a frame capability unmaps it; revoke deletes every
//! descendant; paging structures are mapped top down (`FailedLookup` when the level above is
//! missing, `DeleteFirst` when the place is taken). Each operation checks everything before it
//! changes anything. The model also records what was in every frame when it was destroyed, and
//! which physical pages hold data that no live frame owns (memory not zeroed after use).

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;

use ozone_abi::{Error, rights};
use ozone_agent_sdk::protocol::ServiceError;

use crate::kernel::{Kernel, Object};

const PAGE: u64 = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Pdpt,
    Pd,
    Pt,
}

impl Level {
    /// log2 of the span one structure of this level maps.
    fn span_bits(self) -> u32 {
        match self {
            Level::Pdpt => 39,
            Level::Pd => 30,
            Level::Pt => 21,
        }
    }
}

#[derive(Clone, Debug)]
enum Obj {
    Untyped {
        bits: u8,
        phys: u64,
        watermark: u64,
    },
    Frame {
        phys: u64,
    },
    /// An object made only to be zeroed (a CNode in the real kernel).
    Filler,
    Table {
        level: Level,
    },
    Pml4,
}

#[derive(Clone, Copy, Debug)]
struct Cap {
    obj: usize,
    writable: bool,
    /// The slot of the capability this one was derived from.
    parent: Option<u64>,
    /// Where a frame or table capability is mapped: (PML4 object, address).
    mapped: Option<(usize, u64)>,
}

/// The model.
pub struct Fake {
    objs: Vec<Obj>,
    caps: BTreeMap<u64, Cap>,
    /// Physical memory, by page address.
    mem: BTreeMap<u64, Vec<u8>>,
    /// Per PML4 object: the paging structures present ((level, va >> span)) and the pages
    /// (va → (frame object, writable)).
    tables: BTreeMap<usize, BTreeSet<(u8, u64)>>,
    pages: BTreeMap<usize, BTreeMap<u64, (usize, bool)>>,
    /// Program id → its PML4 object (running programs).
    programs: BTreeMap<u64, usize>,
    /// Program id → log2 of its chunk's size (its quota), for chunks made from now on.
    quota_bits: BTreeMap<u64, u8>,
    /// Pages granted by `fund` per running program.
    pub funded: BTreeMap<u64, u64>,
    /// Calls to `fund`.
    pub fund_calls: usize,
    /// Where Studio puts capabilities it gives the server.
    studio_slots: BTreeSet<u64>,
    /// The server's own PML4 object.
    own: usize,
    /// Physical pages of destroyed frames, with whether they were all zero then.
    pub destroyed: Vec<(u64, bool)>,
    /// Calls to `vspace_of`.
    pub vspace_calls: usize,
    /// Fail the n-th retype from now on (counting down), for failure-injection tests.
    pub fail_retype_in: Option<usize>,
}

/// The server's slots in the fake CNode: an untyped for tests of the model itself, and the
/// server's own address space (where the server must never map anything).
pub const POOL: u64 = 6;
pub const OWN_VSPACE: u64 = 8;
pub const POOL_PHYS: u64 = 0x100_0000;
/// Where Studio keeps program `p`'s chunk: slot `CHUNKS + p` (outside the server's slots).
pub const CHUNKS: u64 = 1 << 40;
/// A program's quota unless set: 4 MiB.
pub const DEFAULT_QUOTA_BITS: u8 = 22;

impl Fake {
    /// A kernel with an untyped of `2^pool_bits` bytes in slot [`POOL`], the server's address
    /// space in [`OWN_VSPACE`], and the programs `programs` running.
    pub fn new(pool_bits: u8, programs: &[u64]) -> Fake {
        let mut f = Fake {
            objs: Vec::new(),
            caps: BTreeMap::new(),
            mem: BTreeMap::new(),
            tables: BTreeMap::new(),
            pages: BTreeMap::new(),
            programs: BTreeMap::new(),
            quota_bits: BTreeMap::new(),
            funded: BTreeMap::new(),
            fund_calls: 0,
            studio_slots: BTreeSet::new(),
            own: 0,
            destroyed: Vec::new(),
            vspace_calls: 0,
            fail_retype_in: None,
        };
        let pool = f.new_obj(Obj::Untyped { bits: pool_bits, phys: POOL_PHYS, watermark: 0 });
        f.caps.insert(POOL, Cap { obj: pool, writable: true, parent: None, mapped: None });
        f.own = f.new_pml4();
        f.caps.insert(OWN_VSPACE, Cap { obj: f.own, writable: true, parent: None, mapped: None });
        for &p in programs {
            f.start(p);
        }
        f
    }

    fn new_obj(&mut self, o: Obj) -> usize {
        self.objs.push(o);
        self.objs.len() - 1
    }

    fn new_pml4(&mut self) -> usize {
        let o = self.new_obj(Obj::Pml4);
        self.tables.insert(o, BTreeSet::new());
        self.pages.insert(o, BTreeMap::new());
        o
    }

    /// Start program `p` (again) with a fresh address space and a fresh chunk.
    pub fn start(&mut self, p: u64) {
        let o = self.new_pml4();
        self.programs.insert(p, o);
        let bits = self.quota_bits.get(&p).copied().unwrap_or(DEFAULT_QUOTA_BITS);
        // Each program's chunks lie in its own physical range (4 GiB apart).
        let chunk = self.new_obj(Obj::Untyped { bits, phys: p << 32, watermark: 0 });
        self.caps.insert(CHUNKS + p, Cap { obj: chunk, writable: true, parent: None, mapped: None });
        self.funded.insert(p, 0);
    }

    /// Program `p`'s quota (its chunk of `2^bits` bytes) from its next start on.
    pub fn set_quota_bits(&mut self, p: u64, bits: u8) {
        self.quota_bits.insert(p, bits);
    }

    /// Studio ends program `p`: it revokes the program's chunk (everything made from it goes,
    /// wherever it is mapped: the funds the server had for it and all made from them) and its
    /// address space is destroyed, which deletes every capability to it (the server's copy
    /// too).
    pub fn kill(&mut self, p: u64) {
        let Some(o) = self.programs.remove(&p) else { return };
        for d in self.descendants(CHUNKS + p).into_iter().rev() {
            self.remove_cap(d);
        }
        self.remove_cap(CHUNKS + p);
        self.funded.remove(&p);
        let slots: Vec<u64> = self.caps.iter().filter(|(_, c)| c.obj == o).map(|(&s, _)| s).collect();
        for s in slots {
            self.remove_cap(s);
            self.studio_slots.remove(&s);
        }
        self.pages.insert(o, BTreeMap::new());
        self.tables.insert(o, BTreeSet::new());
    }

    fn pml4_at(&self, slot: u64) -> Result<usize, Error> {
        match self.caps.get(&slot) {
            Some(c) if matches!(self.objs[c.obj], Obj::Pml4) => Ok(c.obj),
            _ => Err(Error::InvalidCapability),
        }
    }

    /// The frame object and writability at `va` in PML4 object `pml4`, if reachable.
    fn translate_obj(&self, pml4: usize, va: u64) -> Option<(usize, bool)> {
        let t = &self.tables[&pml4];
        for l in [Level::Pdpt, Level::Pd, Level::Pt] {
            if !t.contains(&(l as u8, va >> l.span_bits())) {
                return None;
            }
        }
        self.pages[&pml4].get(&(va & !(PAGE - 1))).copied()
    }

    fn frame_phys(&self, obj: usize) -> u64 {
        match self.objs[obj] {
            Obj::Frame { phys } => phys,
            _ => unreachable!("not a frame"),
        }
    }

    /// Read `len` bytes at `va` in program `p`; `None` if any page is not mapped.
    pub fn read(&self, p: u64, va: u64, len: usize) -> Option<Vec<u8>> {
        let pml4 = *self.programs.get(&p)?;
        let mut out = Vec::with_capacity(len);
        for a in va..va + len as u64 {
            let (f, _) = self.translate_obj(pml4, a)?;
            out.push(self.mem[&self.frame_phys(f)][(a % PAGE) as usize]);
        }
        Some(out)
    }

    /// Write `bytes` at `va` in program `p`; false (nothing written) if a page is not mapped
    /// writable.
    pub fn write(&mut self, p: u64, va: u64, bytes: &[u8]) -> bool {
        let Some(&pml4) = self.programs.get(&p) else { return false };
        let mut phys = Vec::new();
        for a in va..va + bytes.len() as u64 {
            match self.translate_obj(pml4, a) {
                Some((f, true)) => phys.push(self.frame_phys(f) + a % PAGE),
                _ => return false,
            }
        }
        for (pa, &b) in phys.into_iter().zip(bytes) {
            self.mem.get_mut(&(pa & !(PAGE - 1))).unwrap()[(pa % PAGE) as usize] = b;
        }
        true
    }

    /// Pages mapped in program `p` (or in the server, for 0).
    pub fn mapped_pages(&self, p: u64) -> usize {
        let o = if p == 0 { self.own } else { self.programs[&p] };
        self.pages[&o].len()
    }

    /// Capabilities in the server's CNode.
    pub fn cap_count(&self) -> usize {
        self.caps.keys().filter(|&&s| s < CHUNKS).count()
    }

    /// Capabilities derived from program `p`'s chunk (the server's funds for it and everything
    /// made from them).
    pub fn caps_from(&self, p: u64) -> usize {
        if !self.caps.contains_key(&(CHUNKS + p)) {
            return 0;
        }
        self.descendants(CHUNKS + p).len()
    }

    /// Physical pages holding data that no live frame owns: memory used and not zeroed.
    pub fn dirty_pages(&self) -> usize {
        let live: BTreeSet<u64> = self
            .caps
            .values()
            .filter_map(|c| match self.objs[c.obj] {
                Obj::Frame { phys } => Some(phys),
                _ => None,
            })
            .collect();
        self.mem.iter().filter(|(pa, bytes)| !live.contains(pa) && bytes.iter().any(|&b| b != 0)).count()
    }

    /// The slots of capabilities derived from `slot`, deepest last.
    fn descendants(&self, slot: u64) -> Vec<u64> {
        let mut out = Vec::new();
        let mut frontier = vec![slot];
        while let Some(s) = frontier.pop() {
            for (&c, cap) in &self.caps {
                if cap.parent == Some(s) {
                    out.push(c);
                    frontier.push(c);
                }
            }
        }
        out
    }

    fn unmap_cap(&mut self, slot: u64) {
        let Some(cap) = self.caps.get(&slot).copied() else { return };
        let Some((pml4, va)) = cap.mapped else { return };
        match self.objs[cap.obj] {
            Obj::Frame { .. } => {
                if let Some(p) = self.pages.get_mut(&pml4)
                    && p.get(&va).is_some_and(|&(o, _)| o == cap.obj)
                {
                    p.remove(&va);
                }
            }
            Obj::Table { level } => {
                if let Some(t) = self.tables.get_mut(&pml4) {
                    t.remove(&(level as u8, va >> level.span_bits()));
                }
            }
            _ => {}
        }
        if let Some(c) = self.caps.get_mut(&slot) {
            c.mapped = None;
        }
    }

    /// Delete one capability: unmap it, give its children to its parent, finalise the object if
    /// it was the last capability to it.
    fn remove_cap(&mut self, slot: u64) {
        self.unmap_cap(slot);
        let Some(cap) = self.caps.remove(&slot) else { return };
        for c in self.caps.values_mut() {
            if c.parent == Some(slot) {
                c.parent = cap.parent;
            }
        }
        if !self.caps.values().any(|c| c.obj == cap.obj)
            && let Obj::Frame { phys } = self.objs[cap.obj]
        {
            let zero = self.mem[&phys].iter().all(|&b| b == 0);
            self.destroyed.push((phys, zero));
        }
    }

    fn has_children(&self, slot: u64) -> bool {
        self.caps.values().any(|c| c.parent == Some(slot))
    }
}

impl Kernel for Fake {
    fn retype(&mut self, untyped: u64, obj: Object, dest: u64) -> Result<(), Error> {
        let cap = *self.caps.get(&untyped).ok_or(Error::InvalidCapability)?;
        let Obj::Untyped { bits, phys, watermark } = self.objs[cap.obj] else { return Err(Error::InvalidCapability) };
        if self.caps.contains_key(&dest) {
            return Err(Error::DeleteFirst);
        }
        let size_bits = match obj {
            Object::Untyped(b) | Object::Filler(b) => b,
            _ => 12,
        };
        let mark = if self.has_children(untyped) { watermark } else { 0 };
        let at = mark.next_multiple_of(1 << size_bits);
        if at + (1 << size_bits) > 1 << bits {
            return Err(Error::NotEnoughMemory);
        }
        if let Some(n) = self.fail_retype_in.as_mut() {
            if *n == 0 {
                self.fail_retype_in = None;
                return Err(Error::NotEnoughMemory);
            }
            *n -= 1;
        }
        let pa = phys + at;
        let o = match obj {
            Object::Untyped(b) => Obj::Untyped { bits: b, phys: pa, watermark: 0 },
            Object::Filler(b) => {
                // The kernel zeroes every object but an untyped as it makes it.
                for page in (pa..pa + (1u64 << b)).step_by(PAGE as usize) {
                    if let Some(m) = self.mem.get_mut(&page) {
                        m.fill(0);
                    }
                }
                Obj::Filler
            }
            Object::Frame => {
                // Memory above a watermark is zero: a new frame is zero-filled.
                self.mem.insert(pa, vec![0; PAGE as usize]);
                Obj::Frame { phys: pa }
            }
            Object::PageTable => Obj::Table { level: Level::Pt },
            Object::PageDirectory => Obj::Table { level: Level::Pd },
            Object::Pdpt => Obj::Table { level: Level::Pdpt },
        };
        let id = self.new_obj(o);
        if let Obj::Untyped { watermark, .. } = &mut self.objs[cap.obj] {
            *watermark = at + (1 << size_bits);
        }
        self.caps.insert(dest, Cap { obj: id, writable: true, parent: Some(untyped), mapped: None });
        Ok(())
    }

    fn copy(&mut self, dest: u64, src: u64, r: u64) -> Result<(), Error> {
        if self.caps.contains_key(&dest) {
            return Err(Error::DeleteFirst);
        }
        let cap = *self.caps.get(&src).ok_or(Error::FailedLookup)?;
        match self.objs[cap.obj] {
            Obj::Untyped { .. } if self.has_children(src) => return Err(Error::DeleteFirst),
            Obj::Table { .. } if cap.mapped.is_none() => return Err(Error::IllegalOperation),
            _ => {}
        }
        let writable = cap.writable && r & rights::WRITE != 0;
        self.caps.insert(dest, Cap { obj: cap.obj, writable, parent: Some(src), mapped: None });
        Ok(())
    }

    fn delete(&mut self, slot: u64) -> Result<(), Error> {
        // Deleting an empty slot succeeds (as in seL4).
        self.remove_cap(slot);
        Ok(())
    }

    fn revoke(&mut self, slot: u64) -> Result<(), Error> {
        if !self.caps.contains_key(&slot) {
            return Ok(());
        }
        for d in self.descendants(slot).into_iter().rev() {
            self.remove_cap(d);
        }
        Ok(())
    }

    fn map_table(&mut self, named: Object, table: u64, vspace: u64, va: u64) -> Result<(), Error> {
        let named = match named {
            Object::PageTable => Level::Pt,
            Object::PageDirectory => Level::Pd,
            Object::Pdpt => Level::Pdpt,
            Object::Filler(_) | Object::Untyped(_) | Object::Frame => return Err(Error::InvalidArgument),
        };
        let pml4 = self.pml4_at(vspace)?;
        let cap = *self.caps.get(&table).ok_or(Error::InvalidCapability)?;
        // The server names the level it made (the kernel would map whatever the capability is;
        // the model holds the server to its claim).
        let Obj::Table { level } = self.objs[cap.obj] else { return Err(Error::InvalidCapability) };
        if level != named {
            return Err(Error::InvalidCapability);
        }
        if cap.mapped.is_some() {
            return Err(Error::IllegalOperation);
        }
        let t = &self.tables[&pml4];
        let above = match level {
            Level::Pdpt => None,
            Level::Pd => Some(Level::Pdpt),
            Level::Pt => Some(Level::Pd),
        };
        if let Some(a) = above
            && !t.contains(&(a as u8, va >> a.span_bits()))
        {
            return Err(Error::FailedLookup);
        }
        let key = (level as u8, va >> level.span_bits());
        if t.contains(&key) {
            return Err(Error::DeleteFirst);
        }
        self.tables.get_mut(&pml4).unwrap().insert(key);
        self.caps.get_mut(&table).unwrap().mapped = Some((pml4, va));
        Ok(())
    }

    fn map_frame(&mut self, frame: u64, vspace: u64, va: u64, writable: bool) -> Result<(), Error> {
        let pml4 = self.pml4_at(vspace)?;
        let cap = *self.caps.get(&frame).ok_or(Error::InvalidCapability)?;
        if !matches!(self.objs[cap.obj], Obj::Frame { .. }) {
            return Err(Error::InvalidCapability);
        }
        if !va.is_multiple_of(PAGE) {
            return Err(Error::AlignmentError);
        }
        if cap.mapped.is_some() {
            return Err(Error::DeleteFirst);
        }
        if !self.tables[&pml4].contains(&(Level::Pt as u8, va >> Level::Pt.span_bits())) {
            return Err(Error::FailedLookup);
        }
        if self.pages[&pml4].contains_key(&va) {
            return Err(Error::DeleteFirst);
        }
        self.pages.get_mut(&pml4).unwrap().insert(va, (cap.obj, writable && cap.writable));
        self.caps.get_mut(&frame).unwrap().mapped = Some((pml4, va));
        Ok(())
    }

    fn unmap_frame(&mut self, frame: u64) -> Result<(), Error> {
        if !self.caps.contains_key(&frame) {
            return Err(Error::FailedLookup);
        }
        self.unmap_cap(frame);
        Ok(())
    }

    fn vspace_of(&mut self, program: u64) -> Result<u64, ServiceError> {
        self.vspace_calls += 1;
        let &o = self.programs.get(&program).ok_or(ServiceError::NotFound)?;
        // Studio fills its slots from FIRST_FREE up, reusing freed ones.
        let slot = (16..256)
            .find(|s| !self.studio_slots.contains(s) && !self.caps.contains_key(s))
            .ok_or(ServiceError::NoMemory)?;
        self.studio_slots.insert(slot);
        self.caps.insert(slot, Cap { obj: o, writable: true, parent: None, mapped: None });
        Ok(slot)
    }

    fn fund(&mut self, client: u64, order: u8, dest: u64) -> Result<(), ServiceError> {
        self.fund_calls += 1;
        // Studio's checks: a running program, a sensible order, a slot of the server's own.
        if !self.programs.contains_key(&client) {
            return Err(ServiceError::Denied);
        }
        if order > ozone_agent_sdk::protocol::studio::MAX_FUND_ORDER || dest < 256 {
            return Err(ServiceError::InvalidArgument);
        }
        match self.retype(CHUNKS + client, Object::Untyped(12 + order), dest) {
            Ok(()) => {
                *self.funded.entry(client).or_default() += 1 << order;
                Ok(())
            }
            Err(Error::NotEnoughMemory) => Err(ServiceError::QuotaExceeded),
            Err(_) => Err(ServiceError::KernelError),
        }
    }

    fn holds(&mut self, slot: u64) -> bool {
        self.caps.contains_key(&slot)
    }
}
