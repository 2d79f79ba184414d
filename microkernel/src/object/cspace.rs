//! CSpace addressing: turning a capability pointer (`cptr`) into a slot, seL4 style.
//!
//! A CSpace is a tree of CNodes. A lookup starts at a root CNode capability with a `cptr` and a
//! `depth` (how many of the `cptr`'s low bits to use). Each CNode capability on the way consumes
//! `guard_size + radix` bits, most significant first: the top `guard_size` bits must equal the
//! capability's `guard`, the next `radix` bits index a slot. If bits remain and that slot holds a
//! CNode capability, the lookup goes on in that CNode; otherwise it stops there.
//!
//! * [`resolve_address_bits`] is the walk itself (seL4's `resolveAddressBits`).
//! * [`lookup_slot`] is for CNode and Retype arguments: `depth` must be `1..=64` and must be used
//!   up exactly (seL4's `lookupSlotForCNodeOp`).
//! * [`lookup_cap`] is for invoking a capability: depth 64, and the walk may stop early at the
//!   first slot that does not hold a CNode capability (seL4's `lookupCap`).
//!
//! Errors: [`Error::FailedLookup`] when the root is not a CNode capability, a guard does not
//! match, the bits run out inside a level, or bits are left over; [`Error::RangeError`] for a
//! depth outside `1..=64`; [`Error::InvalidCapability`] from [`lookup_cap`] when the slot found is
//! empty. A slot whose capability is being deleted (a zombie) looks empty and is never walked
//! through.
//!
//! Lookups have no side effects, take `O(levels)` time, and never fail on any `cptr`/`depth`
//! values (all shifts are checked).

use ozone_abi::Error;

use super::Cap;
use super::kmem::{SlotRef, SlotSpan};

/// Where a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub slot: SlotRef,
    /// Bits of the depth not used up (non-zero when the walk stopped at a slot that does not
    /// hold a CNode capability).
    pub bits_remaining: u8,
}

/// The low `width` bits set.
const fn mask(width: u32) -> u64 {
    if width >= 64 { u64::MAX } else { (1u64 << width) - 1 }
}

/// Bits `shift .. shift + width` of `x`.
fn bits_at(x: u64, shift: u32, width: u32) -> u64 {
    x.checked_shr(shift).unwrap_or(0) & mask(width)
}

/// Walk the CSpace under `root` with the low `depth` bits of `cptr` (see the module docs).
pub fn resolve_address_bits(root: &Cap, cptr: u64, depth: u8) -> Result<Resolved, Error> {
    if depth > 64 {
        return Err(Error::RangeError);
    }
    let mut node = *root;
    let mut n_bits = u32::from(depth);
    loop {
        let Cap::CNode { radix, guard_size, guard, .. } = node else {
            return Err(Error::FailedLookup);
        };
        let (radix, guard_size) = (u32::from(radix), u32::from(guard_size));
        let level = radix + guard_size;
        if level == 0 || guard_size > n_bits || bits_at(cptr, n_bits - guard_size, guard_size) != guard {
            return Err(Error::FailedLookup);
        }
        if level > n_bits {
            return Err(Error::FailedLookup);
        }
        let index = bits_at(cptr, n_bits - level, radix);
        let slot = SlotSpan::of_cnode(&node).and_then(|s| s.slot(index)).ok_or(Error::FailedLookup)?;
        n_bits -= level;
        if n_bits == 0 {
            return Ok(Resolved { slot, bits_remaining: 0 });
        }
        // `slot.cap()` is Null for a zombie, so a lookup never walks into a dying CNode.
        match slot.cap() {
            next @ Cap::CNode { .. } => node = next,
            _ => return Ok(Resolved { slot, bits_remaining: n_bits as u8 }),
        }
    }
}

/// The slot `cptr` names at exactly `depth` bits under `root` (for CNode and Retype arguments).
pub fn lookup_slot(root: &Cap, cptr: u64, depth: u64) -> Result<SlotRef, Error> {
    if !matches!(root, Cap::CNode { .. }) {
        return Err(Error::FailedLookup);
    }
    let depth = u8::try_from(depth).ok().filter(|d| (1..=64).contains(d)).ok_or(Error::RangeError)?;
    let r = resolve_address_bits(root, cptr, depth)?;
    if r.bits_remaining != 0 {
        return Err(Error::FailedLookup);
    }
    Ok(r.slot)
}

/// The capability `cptr` names under `root` (for invocations): the slot and its capability, which
/// is never [`Cap::Null`].
pub fn lookup_cap(root: &Cap, cptr: u64) -> Result<(SlotRef, Cap), Error> {
    let r = resolve_address_bits(root, cptr, 64)?;
    let cap = r.slot.cap();
    if cap.is_null() { Err(Error::InvalidCapability) } else { Ok((r.slot, cap)) }
}

/// The capability at `cptr` when the CSpace is a single CNode that consumes all 64 bits (guard
/// plus radix), the usual shape, in a few instructions for the IPC fastpath; `None` for anything
/// else, which [`lookup_cap`] handles. The slot's contents come back as they are: a zombie slot
/// (a CNode or TCB being deleted) shows its CNode/TCB capability, so callers must accept only the
/// capability types they expect (the fastpath takes endpoints only).
#[inline(always)]
pub fn lookup_single_level(root: &Cap, cptr: u64) -> Option<Cap> {
    let Cap::CNode { ptr, radix, guard_size, guard } = *root else { return None };
    if u32::from(guard_size) + u32::from(radix) != 64 || radix == 0 || radix >= 64 {
        return None;
    }
    if cptr >> radix != guard {
        return None;
    }
    let index = cptr & ((1u64 << radix) - 1);
    // SAFETY: a CNode capability names a live CNode of 2^radix slots and `index < 2^radix`.
    let slot = unsafe { SlotRef::from_addr(ptr + (index << ozone_abi::object::CNODE_SLOT_BITS)) }?;
    Some(slot.raw_cap())
}
