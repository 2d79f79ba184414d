//! The derivation tree ("mapping database", MDB), modelled on seL4's.
//!
//! # Representation
//!
//! As in seL4, the tree is a doubly-linked list of slots in derivation **pre-order** (each
//! capability is followed by its descendants), plus two bits per node:
//!
//! * `revocable` — the capability can have children: untyped capabilities, capabilities made by
//!   Retype, a badged endpoint/notification capability minted from an unbadged one, an IRQ
//!   handler made from IRQ control, an I/O port range made from I/O port control. Plain copies are
//!   not revocable: a copy of a copy is a sibling, not a grandchild.
//! * `first_badged` — set on a badged original (and handed on to the next node when it is
//!   deleted), so that two separately minted runs with the same badge do not swallow each other.
//!
//! `A` is the parent of the node `B` after it ([`is_mdb_parent_of`]) when `A` is revocable, `A`'s
//! region contains `B`'s ([`same_region_as`]: untyped memory contains the objects made from it,
//! otherwise the same object), and, for endpoints and notifications, `A` is unbadged, or `B` has
//! `A`'s badge and is not itself `first_badged`. The descendants of `A` are the maximal run of
//! nodes after `A` that are its MDB children in that sense.
//!
//! New capabilities go right after their source ([`cte_insert`], [`insert_new_cap`]), moves keep
//! the list position ([`cte_move`]), so all capabilities to one object are adjacent and
//! [`is_final_cap`] only looks at the two neighbours.
//!
//! Why a list and not an explicit tree: the list needs two links per slot and fits the 64-byte
//! slot next to a 40-byte capability; insert, move and remove are O(1); and it is the structure
//! seL4's proofs are about. The reference model used for fuzzing keeps an explicit tree (parent
//! links) and the fuzzer checks that both give the same descendants.

use ozone_abi::Error;
use ozone_abi::object::{CNODE_SLOT_BITS, ENDPOINT_BITS, NOTIFICATION_BITS, PAGE_BITS, TCB_BITS};

use super::Cap;
use super::cte::{Cte, MdbNode, SLOT_BYTES};
use super::kmem::SlotRef;

/// The memory a capability names: `(base, size_bits)`, for capabilities to objects that live in
/// retyped memory. `None` for capabilities that name no memory (IRQ, I/O port, reply, null).
pub fn object_region(cap: &Cap) -> Option<(u64, u8)> {
    Some(match *cap {
        Cap::Untyped { ptr, size_bits, .. } => (ptr, size_bits),
        Cap::CNode { ptr, radix, .. } => (ptr, radix.saturating_add(CNODE_SLOT_BITS)),
        Cap::Tcb { ptr } => (ptr, TCB_BITS),
        Cap::Endpoint { ptr, .. } => (ptr, ENDPOINT_BITS),
        Cap::Notification { ptr, .. } => (ptr, NOTIFICATION_BITS),
        Cap::Frame { ptr, size, .. } => (ptr, size.bits()),
        Cap::Paging { ptr, .. } => (ptr, PAGE_BITS),
        Cap::Null
        | Cap::Reply { .. }
        | Cap::IrqControl
        | Cap::IrqHandler { .. }
        | Cap::IoPortControl
        | Cap::Telemetry
        | Cap::IoPort { .. } => return None,
    })
}

/// Whether region `inner` lies inside region `outer` (both `(base, size_bits)`).
pub fn region_contains(outer: (u64, u8), inner: (u64, u8)) -> bool {
    let top = |(base, bits): (u64, u8)| u128::from(base) + (1u128 << bits.min(64));
    u128::from(outer.0) <= u128::from(inner.0) && top(inner) <= top(outer)
}

/// seL4's `sameRegionAs`: `b` is in the memory `a` covers (untyped), or names the same object
/// (IRQ control covers IRQ handlers, I/O port control covers I/O port ranges).
pub fn same_region_as(a: &Cap, b: &Cap) -> bool {
    match (*a, *b) {
        (Cap::Untyped { ptr, size_bits, .. }, _) => {
            object_region(b).is_some_and(|r| region_contains((ptr, size_bits), r))
        }
        (Cap::Endpoint { ptr: p, .. }, Cap::Endpoint { ptr: q, .. }) => p == q,
        (Cap::Notification { ptr: p, .. }, Cap::Notification { ptr: q, .. }) => p == q,
        (Cap::CNode { ptr: p, radix: r, .. }, Cap::CNode { ptr: q, radix: s, .. }) => p == q && r == s,
        (Cap::Tcb { ptr: p }, Cap::Tcb { ptr: q }) => p == q,
        (Cap::Reply { tcb: p, .. }, Cap::Reply { tcb: q, .. }) => p == q,
        (Cap::Frame { ptr: p, size: s, .. }, Cap::Frame { ptr: q, size: t, .. }) => p == q && s == t,
        (Cap::Paging { ptr: p, level: l, .. }, Cap::Paging { ptr: q, level: m, .. }) => p == q && l == m,
        (Cap::IrqControl, Cap::IrqControl | Cap::IrqHandler { .. }) => true,
        (Cap::IrqHandler { irq: i }, Cap::IrqHandler { irq: j }) => i == j,
        (Cap::IoPortControl, Cap::IoPortControl | Cap::IoPort { .. }) => true,
        (Cap::IoPort { first: f, last: l }, Cap::IoPort { first: g, last: m }) => f == g && l == m,
        (Cap::Telemetry, Cap::Telemetry) => true,
        _ => false,
    }
}

/// seL4's `sameObjectAs`: both name the same object. Untyped and control capabilities are never
/// "the same object" as anything (deleting one never finalises anything).
pub fn same_object_as(a: &Cap, b: &Cap) -> bool {
    match a {
        Cap::Untyped { .. } | Cap::IrqControl | Cap::IoPortControl | Cap::Telemetry => false,
        _ => same_region_as(a, b),
    }
}

/// seL4's `isCapRevocable`: whether `derived`, made from `src`, can have children of its own.
pub fn is_cap_revocable(derived: &Cap, src: &Cap) -> bool {
    match (*derived, *src) {
        (Cap::Endpoint { badge: b, .. }, Cap::Endpoint { badge: c, .. }) => b != c,
        (Cap::Notification { badge: b, .. }, Cap::Notification { badge: c, .. }) => b != c,
        (Cap::IrqHandler { .. }, Cap::IrqControl) => true,
        (Cap::IoPort { .. }, Cap::IoPortControl) => true,
        (Cap::Untyped { .. }, _) => true,
        _ => false,
    }
}

/// The parent test on slot contents (see the module docs).
pub(crate) fn is_parent(a: &Cte, b: &Cte) -> bool {
    if !a.mdb.revocable() || !same_region_as(&a.cap, &b.cap) {
        return false;
    }
    match a.cap {
        Cap::Endpoint { badge, .. } | Cap::Notification { badge, .. } if badge != 0 => {
            let b_badge = match b.cap {
                Cap::Endpoint { badge, .. } | Cap::Notification { badge, .. } => badge,
                _ => return false,
            };
            b_badge == badge && !b.mdb.first_badged()
        }
        _ => true,
    }
}

/// Whether the capability in `b` is an MDB child of the one in `a` (meaningful when `b` comes
/// after `a` in the derivation list).
pub fn is_mdb_parent_of(a: SlotRef, b: SlotRef) -> bool {
    is_parent(&a.read(), &b.read())
}

/// The first child of the capability in `slot`, if it has any.
pub fn first_child(slot: SlotRef) -> Option<SlotRef> {
    let cte = slot.read();
    let next = SlotRef::from_link(cte.mdb.next())?;
    is_parent(&cte, &next.read()).then_some(next)
}

/// Whether the capability in `slot` has derivation children.
pub fn has_children(slot: SlotRef) -> bool {
    first_child(slot).is_some()
}

/// [`Error::DeleteFirst`] if the capability in `slot` has children (seL4's `ensureNoChildren`,
/// whose error is `RevokeFirst`).
pub fn ensure_no_children(slot: SlotRef) -> Result<(), Error> {
    if has_children(slot) { Err(Error::DeleteFirst) } else { Ok(()) }
}

/// Whether the capability in `slot` is the last one to its object: no neighbour in the derivation
/// list names the same object.
pub fn is_final_cap(slot: SlotRef) -> bool {
    let cte = slot.read();
    let prev_same = SlotRef::from_link(cte.mdb.prev()).is_some_and(|p| same_object_as(&p.raw_cap(), &cte.cap));
    let next_same = SlotRef::from_link(cte.mdb.next()).is_some_and(|n| same_object_as(&cte.cap, &n.raw_cap()));
    !prev_same && !next_same
}

/// A copy of an untyped capability over the same memory makes the source full, so that objects
/// are only made through one of the two until both are reset (seL4's `setUntypedCapAsFull`).
fn set_untyped_as_full(src_cap: &Cap, new_cap: &Cap, src: SlotRef) {
    if let (Cap::Untyped { ptr, size_bits, device, .. }, Cap::Untyped { ptr: nptr, size_bits: nbits, .. }) =
        (*src_cap, *new_cap)
        && ptr == nptr
        && size_bits == nbits
    {
        let full = 1u64.checked_shl(u32::from(size_bits)).unwrap_or(u64::MAX);
        // Full: the dirty range is empty (canonically at the watermark); a later reset makes the
        // whole untyped dirty, as nothing is known about what the copy's objects left behind.
        let dirty = if device { 0 } else { full };
        src.set_cap(Cap::Untyped { ptr, size_bits, free_index: full, dirty_from: dirty, dirty_top: dirty, device });
    }
}

/// Put `new_cap` (derived from the capability in `src`) into the empty slot `dest`, right after
/// `src` in the derivation list (seL4's `cteInsert`).
pub fn cte_insert(new_cap: Cap, src: SlotRef, dest: SlotRef) {
    let src_cte = src.read();
    let revocable = is_cap_revocable(&new_cap, &src_cte.cap);
    let next = src_cte.mdb.next();
    set_untyped_as_full(&src_cte.cap, &new_cap, src);
    dest.write(Cte { cap: new_cap, mdb: MdbNode::new(src.addr(), next, revocable, revocable) });
    src.set_mdb(src.mdb().with_next(dest.addr()));
    if let Some(n) = SlotRef::from_link(next) {
        n.set_mdb(n.mdb().with_prev(dest.addr()));
    }
}

/// Put a capability for a newly created object into the empty slot `dest` as a child of the
/// untyped capability in `parent` (seL4's `insertNewCap`).
pub fn insert_new_cap(parent: SlotRef, dest: SlotRef, cap: Cap) {
    let next = parent.mdb().next();
    dest.write(Cte { cap, mdb: MdbNode::new(parent.addr(), next, true, true) });
    parent.set_mdb(parent.mdb().with_next(dest.addr()));
    if let Some(n) = SlotRef::from_link(next) {
        n.set_mdb(n.mdb().with_prev(dest.addr()));
    }
}

/// Put `cap` into the empty slot `slot` as a derivation root (no parent; revocable). For boot
/// code: the initial untyped, IRQ control and root CNode capabilities.
///
/// # Safety
///
/// `cap` must name objects (or memory) that nothing else names: boot code creating the first
/// capability to each. Every later capability must be derived from it. A CNode must have a radix
/// of at least 1 (as Retype requires) and zeroed or valid slots; an untyped must be aligned to its
/// size, and its memory at and above `free_index` zero outside `dirty_from..dirty_top` unless it
/// is device memory (whose dirty indices are 0).
pub unsafe fn insert_root_cap(slot: SlotRef, cap: Cap) {
    slot.write(Cte { cap, mdb: MdbNode::new(0, 0, true, true) });
}

/// Move the capability in `src` to the empty slot `dest`, replacing it with `new_cap` (the same
/// capability, or one with new cap data for Mutate), keeping its place in the derivation list.
pub fn cte_move(new_cap: Cap, src: SlotRef, dest: SlotRef) {
    let mdb = src.mdb();
    dest.write(Cte { cap: new_cap, mdb });
    src.write(Cte::NULL);
    if let Some(p) = SlotRef::from_link(mdb.prev()) {
        p.set_mdb(p.mdb().with_next(dest.addr()));
    }
    if let Some(n) = SlotRef::from_link(mdb.next()) {
        n.set_mdb(n.mdb().with_prev(dest.addr()));
    }
}

/// Unlink the slot from the derivation list and empty it (seL4's `emptySlot`, without the
/// finalisation, which [`delete`](super::delete) does). A `first_badged` mark passes on to the
/// next node.
pub(crate) fn empty_slot(slot: SlotRef) {
    let mdb = slot.mdb();
    let prev = SlotRef::from_link(mdb.prev());
    let next = SlotRef::from_link(mdb.next());
    if let Some(p) = prev {
        p.set_mdb(p.mdb().with_next(mdb.next()));
    }
    if let Some(n) = next {
        let nm = n.mdb();
        n.set_mdb(nm.with_prev(mdb.prev()).with_first_badged(nm.first_badged() || mdb.first_badged()));
    }
    slot.write(Cte::NULL);
    if mdb.traces() {
        // SAFETY: only Telemetry Trace flags a slot, and only slot TCB_TRACE of a live TCB, at
        // the start of the TCB (`slots` is its first field); a TCB's slots are emptied before
        // it goes.
        unsafe {
            super::trace::slot_emptied(
                (slot.addr() - (super::tcb::TCB_TRACE as u64) * SLOT_BYTES) as *mut super::tcb::Tcb,
            )
        };
    }
}
