//! Where Studio's kernel objects come from: its own chunk ([`OwnAlloc`]: endpoints, its scratch
//! page tables, copies of capabilities) or a program's chunk ([`ChunkAlloc`]: everything of that
//! program, within its quota). Both put capabilities in Studio's CNode.

use alloc::vec::Vec;
use core::cell::RefCell;

use ozone_abi::Error;
use ozone_abi::bootinfo::slot;
use ozone_abi::object::ObjectType;
use ozone_agent_sdk::process::Alloc;

use crate::kernel::Kernel;
use crate::pool::{Tally, object_size};
use ozone_agent_sdk::slots::Slots;

fn retype_into(
    k: &dyn Kernel,
    untyped: u64,
    tally: &RefCell<Tally>,
    ty: ObjectType,
    bits: u64,
    dest: u64,
) -> Result<(), Error> {
    let bytes = object_size(ty, bits);
    if tally.borrow().fit(bytes).is_none() {
        return Err(Error::NotEnoughMemory);
    }
    k.retype(untyped, ty, bits, dest)?;
    tally.borrow_mut().take(bytes)
}

/// Studio's own objects.
pub struct OwnAlloc<'a> {
    pub k: &'a dyn Kernel,
    pub slots: &'a RefCell<Slots>,
    pub untyped: u64,
    pub tally: RefCell<Tally>,
}

impl Alloc for OwnAlloc<'_> {
    fn cnode(&self) -> u64 {
        slot::CNODE
    }
    fn slot(&self) -> Result<u64, Error> {
        self.slots.borrow_mut().alloc().ok_or(Error::NotEnoughMemory)
    }
    fn free_slot(&self, s: u64) {
        self.slots.borrow_mut().free(s);
    }
    fn retype(&self, ty: ObjectType, size_bits: u64) -> Result<u64, Error> {
        let s = self.slot()?;
        retype_into(self.k, self.untyped, &self.tally, ty, size_bits, s).inspect_err(|_| self.free_slot(s))?;
        Ok(s)
    }
}

/// A program's objects, from its chunk, never beyond its quota. Remembers the Studio slots that
/// hold capabilities derived from the chunk: revoking the chunk empties them all.
pub struct ChunkAlloc<'a> {
    pub k: &'a dyn Kernel,
    pub slots: &'a RefCell<Slots>,
    pub chunk: u64,
    /// Watermark over the chunk, bounded by the quota (not the chunk's power-of-two size).
    pub tally: RefCell<Tally>,
    pub held: RefCell<Vec<u64>>,
}

impl<'a> ChunkAlloc<'a> {
    pub fn new(k: &'a dyn Kernel, slots: &'a RefCell<Slots>, chunk: u64, quota: u64) -> ChunkAlloc<'a> {
        ChunkAlloc { k, slots, chunk, tally: RefCell::new(Tally::new(quota)), held: RefCell::new(Vec::new()) }
    }

    /// Bytes of the quota in use.
    pub fn used(&self) -> u64 {
        self.tally.borrow().watermark
    }

    /// After the chunk was revoked: every held slot is empty; give them back and start afresh.
    pub fn release(&self) {
        let mut slots = self.slots.borrow_mut();
        for s in self.held.borrow_mut().drain(..) {
            slots.free(s);
        }
        self.tally.borrow_mut().watermark = 0;
    }
}

impl Alloc for ChunkAlloc<'_> {
    fn cnode(&self) -> u64 {
        slot::CNODE
    }
    fn slot(&self) -> Result<u64, Error> {
        let s = self.slots.borrow_mut().alloc().ok_or(Error::NotEnoughMemory)?;
        self.held.borrow_mut().push(s);
        Ok(s)
    }
    fn free_slot(&self, s: u64) {
        self.held.borrow_mut().retain(|&h| h != s);
        self.slots.borrow_mut().free(s);
    }
    fn retype(&self, ty: ObjectType, size_bits: u64) -> Result<u64, Error> {
        let s = self.slot()?;
        retype_into(self.k, self.chunk, &self.tally, ty, size_bits, s).inspect_err(|_| self.free_slot(s))?;
        Ok(s)
    }
}
