//! The one place where the capability code touches kernel memory through raw pointers.
//!
//! Capabilities name objects by kernel virtual address ([`Cap`] `ptr` fields; slot links in
//! [`MdbNode`]s are kernel addresses of [`Cte`]s). Everything else in
//! [`object`](super) works on [`SlotRef`]s and [`SlotSpan`]s from this module, which read and write
//! whole slots by value — no reference into object memory ever outlives one access, so two
//! `SlotRef`s to the same slot never alias a live `&mut`.
//!
//! # The invariant that makes this sound
//!
//! *Every capability stored in a slot names a live object of its type, and every non-zero MDB
//! link names a live slot.* It holds because:
//!
//! 1. Objects are only created by Untyped Retype, at the untyped's watermark, in memory that no
//!    live object uses; non-device memory at and above a watermark is always zero, so a new CNode
//!    is a run of valid empty slots (see the compile-time check below) — or by boot code through
//!    the `unsafe` constructors here, whose callers promise the same.
//! 2. Untyped memory below the watermark is reused only after a reset, and a reset needs the
//!    untyped to have no derivation children; every capability to an object made from an untyped
//!    is a descendant of it (derivation rules, [`mdb`](super::mdb)).
//! 3. Deleting the last capability to a CNode (or another slot-holding object) first deletes every
//!    capability it holds, and until then the object stays allocated: its last capability stays in
//!    the derivation tree as a zombie ([`delete`](super::delete)).
//!
//! [`Cap`] is a plain value with public fields, so the type system cannot stop kernel code from
//! *building* a capability that breaks this; capability values must only come from slots (or from
//! this module's constructors). The capability-level fuzzer checks the invariant against a
//! reference model (see `harness`).
//!
//! Addresses become pointers with [`core::ptr::with_exposed_provenance_mut`]: in the kernel they
//! are direct-map addresses; in host tests they come from an allocation whose provenance the test
//! exposed.

use core::ptr::{self, NonNull};

use super::Cap;
use super::cte::{Cte, MdbNode, SLOT_BYTES};

// All-zero bytes must be an empty slot. The MDB half is zero links and zero flags by definition;
// for the capability, Rust does not promise an enum layout, so ask the compiler that builds us:
// const evaluation rejects the transmute if zero bytes are not a valid `Cap`, and the assertion
// fails if they are a different variant.
const _: () = {
    // SAFETY: `Cap` holds only integers, booleans and field-less enums (no pointers, references
    // or padding-sensitive types), so transmuting initialised bytes to it is at worst an invalid
    // value, which const evaluation reports as a compile error instead of executing.
    let cap: Cap = unsafe { core::mem::transmute::<[u8; size_of::<Cap>()], Cap>([0; size_of::<Cap>()]) };
    assert!(matches!(cap, Cap::Null), "all-zero bytes must decode to Cap::Null");
};

/// A reference to one capability slot (a [`Cte`]) in kernel memory.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotRef(NonNull<Cte>);

impl core::fmt::Debug for SlotRef {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SlotRef({:#x})", self.addr())
    }
}

impl SlotRef {
    /// The slot at kernel address `addr`.
    ///
    /// # Safety
    ///
    /// `addr` must be the 64-byte aligned kernel address of a [`Cte`] holding valid bytes (a zeroed
    /// slot is valid) that stays allocated, and is accessed only through `SlotRef`s, for as long
    /// as the returned value (or any copy) is used. Slots inside objects come from [`SlotSpan`];
    /// this is for slots the kernel keeps elsewhere (a boot-time root slot, a TCB's slots via
    /// [`SlotSpan::new`]).
    pub unsafe fn from_addr(addr: u64) -> Option<SlotRef> {
        let p = ptr::with_exposed_provenance_mut::<Cte>(usize::try_from(addr).ok()?);
        NonNull::new(p).map(SlotRef)
    }

    /// A non-zero MDB link read from a slot; `None` for 0.
    pub(crate) fn from_link(addr: u64) -> Option<SlotRef> {
        // SAFETY: MDB links are only ever written with addresses of live slots (module invariant,
        // point 3: a slot is unlinked before the memory holding it dies).
        unsafe { SlotRef::from_addr(addr) }
    }

    /// The slot's kernel address.
    pub fn addr(self) -> u64 {
        self.0.as_ptr().addr() as u64
    }

    /// The whole slot, including zombie state. Prefer [`SlotRef::cap`].
    pub fn read(self) -> Cte {
        // SAFETY: the slot is live and holds a valid `Cte` (invariant); the read is by value and
        // no reference into the slot exists.
        unsafe { ptr::read(self.0.as_ptr()) }
    }

    /// The capability in the slot as lookups and invocations see it: [`Cap::Null`] for an empty
    /// slot and for a zombie (a capability whose object is being destroyed).
    pub fn cap(self) -> Cap {
        let cte = self.read();
        if cte.mdb.zombie().is_some() { Cap::Null } else { cte.cap }
    }

    /// The stored capability, zombie or not.
    pub(crate) fn raw_cap(self) -> Cap {
        self.read().cap
    }

    /// Whether the slot is empty (a zombie is not).
    pub fn is_empty(self) -> bool {
        self.raw_cap().is_null()
    }

    /// Whether the slot holds a zombie.
    pub fn is_zombie(self) -> bool {
        self.mdb().zombie().is_some()
    }

    pub(crate) fn mdb(self) -> MdbNode {
        self.read().mdb
    }

    pub(crate) fn write(self, cte: Cte) {
        // SAFETY: the slot is live (invariant) and only reached through `SlotRef`s, which hold no
        // references; writing a whole valid `Cte` keeps it valid.
        unsafe { ptr::write(self.0.as_ptr(), cte) }
    }

    pub(crate) fn set_cap(self, cap: Cap) {
        let mut cte = self.read();
        cte.cap = cap;
        self.write(cte);
    }

    pub(crate) fn set_mdb(self, mdb: MdbNode) {
        let mut cte = self.read();
        cte.mdb = mdb;
        self.write(cte);
    }
}

/// A run of consecutive slots inside one object: a CNode's slots, or the slots a TCB keeps (its
/// CSpace and VSpace roots).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotSpan {
    base: u64,
    count: u64,
}

impl SlotSpan {
    /// `count` slots starting at kernel address `base`.
    ///
    /// # Safety
    ///
    /// `base` must be 64-byte aligned and `base .. base + 64 * count` must be `count` valid slots
    /// inside one live object (zeroed memory is valid) that live as long as the object.
    pub const unsafe fn new(base: u64, count: u64) -> SlotSpan {
        SlotSpan { base, count }
    }

    /// The slots of the CNode a capability names; `None` for other capabilities.
    pub fn of_cnode(cap: &Cap) -> Option<SlotSpan> {
        match *cap {
            Cap::CNode { ptr, radix, .. } => {
                let count = 1u64.checked_shl(u32::from(radix))?;
                // Invariant: a CNode capability names a live CNode of `2^radix` slots.
                Some(SlotSpan { base: ptr, count })
            }
            _ => None,
        }
    }

    pub const fn base(self) -> u64 {
        self.base
    }
    pub const fn count(self) -> u64 {
        self.count
    }

    /// Slot `index`, if in range.
    pub fn slot(self, index: u64) -> Option<SlotRef> {
        if index >= self.count {
            return None;
        }
        let addr = self.base.checked_add(index.checked_mul(SLOT_BYTES)?)?;
        // SAFETY: `index < count`, so `addr` is one of the span's slots, valid and live by the
        // contract of `SlotSpan::new` / the capability invariant for `of_cnode`.
        unsafe { SlotRef::from_addr(addr) }
    }

    /// The index of `slot` in this span, if it is one of its slots.
    pub fn index_of(self, slot: SlotRef) -> Option<u64> {
        let off = slot.addr().checked_sub(self.base)?;
        let index = off / SLOT_BYTES;
        (off % SLOT_BYTES == 0 && index < self.count).then_some(index)
    }

    /// Whether `slot` is one of this span's slots.
    pub fn contains(self, slot: SlotRef) -> bool {
        self.index_of(slot).is_some()
    }
}

/// Zero `len` bytes of untyped memory at kernel address `addr`.
///
/// The caller ([`untyped`](super::untyped) reset) passes a range below an untyped's watermark
/// whose untyped has no derivation children, so no live object and no live slot is in it.
pub(crate) fn zero_untyped(addr: u64, len: u64) {
    let (Ok(a), Ok(l)) = (usize::try_from(addr), usize::try_from(len)) else { return };
    let p = ptr::with_exposed_provenance_mut::<u8>(a);
    // SAFETY: the range is inside a live untyped's memory (the capability invariant), which the
    // kernel may write; it lies at or above the untyped's watermark, where no object lives, so
    // nothing holds a reference into it.
    unsafe { ptr::write_bytes(p, 0, l) }
}

/// Whether `len` bytes at `addr` (inside live untyped memory) are all zero. For checks in tests.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn is_zero(addr: u64, len: u64) -> bool {
    let (Ok(a), Ok(l)) = (usize::try_from(addr), usize::try_from(len)) else { return false };
    let p = ptr::with_exposed_provenance::<u8>(a);
    // SAFETY: test-only; the harness passes ranges inside its own initialised memory arena.
    let bytes = unsafe { core::slice::from_raw_parts(p, l) };
    let (words, tail) = bytes.as_chunks::<8>();
    words.iter().all(|w| u64::from_ne_bytes(*w) == 0) && tail.iter().all(|&b| b == 0)
}
