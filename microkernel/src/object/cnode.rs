//! CNode invocations: Copy, Mint, Move, Mutate, Delete, Revoke, CancelBadgedSends.
//!
//! Each invocation is split as in seL4: [`decode`] checks every user-supplied value and has no side
//! effects; it returns a [`CNodePlan`] that [`perform`] carries out and that cannot fail (Delete
//! and Revoke may stop at a preemption point and report [`Progress::Preempted`]; the system call is
//! restarted and decodes again). Call `perform` right after `decode`, in the same kernel entry.
//!
//! # What decode checks, in order (the first failure is the error)
//!
//! Copy, Mint, Move, Mutate (`dest_root` is the invoked CNode capability, `src_root` an extra
//! capability):
//!
//! 1. destination: [`lookup_slot`]`(dest_root, dest_index, dest_depth)` —
//!    `FailedLookup` / `RangeError`;
//! 2. the destination slot is empty — else `DeleteFirst`;
//! 3. source: [`lookup_slot`]`(src_root, src_index, src_depth)` — `FailedLookup` / `RangeError`;
//! 4. the source slot holds a capability — else `FailedLookup`; it is not being deleted — else
//!    `IllegalOperation`;
//! 5. Copy: the capability with its rights masked by `rights` ([`mask_cap_rights`]) must be
//!    derivable ([`derive_cap`]: an untyped capability with children — `DeleteFirst`; IRQ
//!    control, I/O port control, reply — `IllegalOperation`; an unmapped paging-structure
//!    capability other than a PML4 — `IllegalOperation`).
//!    Mint: the same, after applying `data` with [`update_cap_data`] (a badge on an unbadged
//!    endpoint/notification capability, a guard on a CNode capability); data it cannot take
//!    (a badge on an already badged capability, a guard that does not fit) — `IllegalOperation`.
//!    Move: nothing more. Mutate: `data` applied as for Mint but badges cannot be set at all —
//!    `IllegalOperation` for endpoints and notifications.
//!
//! Delete, Revoke: the slot lookup (1.) only. CancelBadgedSends: the lookup, then the slot must
//! hold an endpoint capability with all rights — else `IllegalOperation`.
//!
//! Rights and badges only narrow: rights are intersected, a badge is set only where there was
//! none, and Move/Mutate keep the rights and badge.

use ozone_abi::Error;
use ozone_abi::invocation as inv;

use super::cspace::lookup_slot;
use super::delete::{self, Budget, ObjectHooks, Progress};
use super::kmem::SlotRef;
use super::mdb;
use super::{Cap, PagingLevel, Rights};
use crate::api::Kernel;
use crate::api::invoke::{Message, PREEMPT_BUDGET, Refused, UNKNOWN_METHOD};

/// A CNode invocation with its raw arguments (as the user passed them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CNodeInvocation {
    /// Copy the capability at `src` to `dest` with its rights masked by `rights`.
    Copy { dest_index: u64, dest_depth: u64, src_root: Cap, src_index: u64, src_depth: u64, rights: u64 },
    /// Copy with masked rights and new cap data (a badge, or a CNode guard).
    Mint { dest_index: u64, dest_depth: u64, src_root: Cap, src_index: u64, src_depth: u64, rights: u64, data: u64 },
    /// Move the capability at `src` to `dest`.
    Move { dest_index: u64, dest_depth: u64, src_root: Cap, src_index: u64, src_depth: u64 },
    /// Move with new cap data (a CNode guard).
    Mutate { dest_index: u64, dest_depth: u64, src_root: Cap, src_index: u64, src_depth: u64, data: u64 },
    /// Delete the capability at the slot.
    Delete { index: u64, depth: u64 },
    /// Delete every derivation descendant of the capability at the slot.
    Revoke { index: u64, depth: u64 },
    /// Cancel every pending send with the badge of the endpoint capability at the slot.
    CancelBadgedSends { index: u64, depth: u64 },
}

/// A decoded invocation, ready to perform. Valid only until the state changes: perform it in the
/// kernel entry that decoded it (a preempted Delete or Revoke is restarted with a fresh decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CNodePlan {
    /// Insert `cap`, derived from `src`, into the empty slot `dest`.
    Insert {
        cap: Cap,
        src: SlotRef,
        dest: SlotRef,
    },
    /// Move the capability in `src` to the empty slot `dest` as `cap`.
    Move {
        cap: Cap,
        src: SlotRef,
        dest: SlotRef,
    },
    Delete {
        slot: SlotRef,
    },
    Revoke {
        slot: SlotRef,
    },
    CancelBadgedSends {
        endpoint: u64,
        badge: u64,
    },
}

/// Check an invocation on the CNode capability `dest_root` (see the module docs).
pub fn decode(dest_root: &Cap, inv: &CNodeInvocation) -> Result<CNodePlan, Error> {
    match *inv {
        CNodeInvocation::Copy { dest_index, dest_depth, src_root, src_index, src_depth, rights } => {
            let (src, dest) = source_and_dest(dest_root, dest_index, dest_depth, &src_root, src_index, src_depth)?;
            let cap = derive_cap(src, &mask_cap_rights(Rights::from_bits(rights), &src.cap()))?;
            Ok(CNodePlan::Insert { cap, src, dest })
        }
        CNodeInvocation::Mint { dest_index, dest_depth, src_root, src_index, src_depth, rights, data } => {
            let (src, dest) = source_and_dest(dest_root, dest_index, dest_depth, &src_root, src_index, src_depth)?;
            let masked = mask_cap_rights(Rights::from_bits(rights), &src.cap());
            let updated = update_cap_data(false, data, &masked).ok_or(Error::IllegalOperation)?;
            let cap = derive_cap(src, &updated)?;
            Ok(CNodePlan::Insert { cap, src, dest })
        }
        CNodeInvocation::Move { dest_index, dest_depth, src_root, src_index, src_depth } => {
            let (src, dest) = source_and_dest(dest_root, dest_index, dest_depth, &src_root, src_index, src_depth)?;
            Ok(CNodePlan::Move { cap: src.cap(), src, dest })
        }
        CNodeInvocation::Mutate { dest_index, dest_depth, src_root, src_index, src_depth, data } => {
            let (src, dest) = source_and_dest(dest_root, dest_index, dest_depth, &src_root, src_index, src_depth)?;
            let cap = update_cap_data(true, data, &src.cap()).ok_or(Error::IllegalOperation)?;
            Ok(CNodePlan::Move { cap, src, dest })
        }
        CNodeInvocation::Delete { index, depth } => {
            Ok(CNodePlan::Delete { slot: lookup_slot(dest_root, index, depth)? })
        }
        CNodeInvocation::Revoke { index, depth } => {
            Ok(CNodePlan::Revoke { slot: lookup_slot(dest_root, index, depth)? })
        }
        CNodeInvocation::CancelBadgedSends { index, depth } => {
            let slot = lookup_slot(dest_root, index, depth)?;
            match slot.cap() {
                Cap::Endpoint { ptr, badge, rights } if rights == Rights::ALL => {
                    Ok(CNodePlan::CancelBadgedSends { endpoint: ptr, badge })
                }
                _ => Err(Error::IllegalOperation),
            }
        }
    }
}

/// Carry out a decoded invocation. Cannot fail; Delete and Revoke may be preempted.
pub fn perform(plan: CNodePlan, hooks: &mut dyn ObjectHooks, budget: &mut Budget) -> Progress {
    match plan {
        CNodePlan::Insert { cap, src, dest } => mdb::cte_insert(cap, src, dest),
        CNodePlan::Move { cap, src, dest } => mdb::cte_move(cap, src, dest),
        CNodePlan::Delete { slot } => return delete::delete(slot, hooks, budget),
        CNodePlan::Revoke { slot } => return delete::revoke(slot, hooks, budget),
        CNodePlan::CancelBadgedSends { endpoint, badge } => {
            if badge != 0 {
                hooks.cancel_badged_sends(endpoint, badge);
            }
        }
    }
    Progress::Done
}

/// Steps 1–4 of the Copy/Mint/Move/Mutate checks.
fn source_and_dest(
    dest_root: &Cap,
    dest_index: u64,
    dest_depth: u64,
    src_root: &Cap,
    src_index: u64,
    src_depth: u64,
) -> Result<(SlotRef, SlotRef), Error> {
    let dest = lookup_slot(dest_root, dest_index, dest_depth)?;
    if !dest.is_empty() {
        return Err(Error::DeleteFirst);
    }
    let src = lookup_slot(src_root, src_index, src_depth)?;
    if src.is_empty() {
        return Err(Error::FailedLookup);
    }
    if src.is_zombie() {
        return Err(Error::IllegalOperation);
    }
    Ok((src, dest))
}

/// The capability to store when copying `cap` out of `src` (seL4's `deriveCap`): untyped only
/// without children, frames lose their mapping, paging structures only while mapped, and IRQ
/// control, I/O port control and reply capabilities cannot be copied.
pub fn derive_cap(src: SlotRef, cap: &Cap) -> Result<Cap, Error> {
    match *cap {
        Cap::Untyped { .. } => mdb::ensure_no_children(src).map(|()| *cap),
        Cap::Frame { ptr, size, rights, device, .. } => Ok(Cap::Frame { ptr, size, rights, device, mapped: None }),
        // A PML4 is never mapped into anything: its capabilities copy like a CNode's (Studio
        // hands copies of a program's address space to the secure-memory server).
        Cap::Paging { level: PagingLevel::Pml4, .. } => Ok(*cap),
        Cap::Paging { mapped: None, .. } => Err(Error::IllegalOperation),
        Cap::Null | Cap::IrqControl | Cap::IoPortControl | Cap::Reply { .. } => Err(Error::IllegalOperation),
        _ => Ok(*cap),
    }
}

/// `cap` with its rights intersected with `rights` (seL4's `maskCapRights`). Capabilities without
/// rights are returned unchanged; a reply capability keeps its grant right only if `rights` has
/// [`Rights::GRANT`].
pub fn mask_cap_rights(rights: Rights, cap: &Cap) -> Cap {
    match *cap {
        Cap::Endpoint { ptr, badge, rights: r } => Cap::Endpoint { ptr, badge, rights: r.intersect(rights) },
        Cap::Notification { ptr, badge, rights: r } => Cap::Notification { ptr, badge, rights: r.intersect(rights) },
        Cap::Frame { ptr, size, rights: r, device, mapped } => {
            Cap::Frame { ptr, size, rights: r.intersect(rights), device, mapped }
        }
        Cap::Reply { tcb, can_grant } => Cap::Reply { tcb, can_grant: can_grant && rights.contains(Rights::GRANT) },
        other => other,
    }
}

/// `cap` with new cap data (seL4's `updateCapData`), or `None` if it cannot take it.
///
/// * Endpoint / notification: `data` becomes the badge, only if `preserve` is false (Mint) and the
///   capability is unbadged.
/// * CNode: `data` is `guard << 6 | guard_size` (bits 0..6 the guard size, the rest the guard,
///   truncated to `guard_size` bits); `None` if `guard_size + radix > 64`.
/// * Anything else: unchanged.
pub fn update_cap_data(preserve: bool, data: u64, cap: &Cap) -> Option<Cap> {
    match *cap {
        Cap::Endpoint { ptr, badge: 0, rights } if !preserve => Some(Cap::Endpoint { ptr, badge: data, rights }),
        Cap::Notification { ptr, badge: 0, rights } if !preserve => {
            Some(Cap::Notification { ptr, badge: data, rights })
        }
        Cap::Endpoint { .. } | Cap::Notification { .. } => None,
        Cap::CNode { ptr, radix, .. } => {
            let guard_size = (data & 0x3f) as u8;
            if u32::from(guard_size) + u32::from(radix) > 64 {
                return None;
            }
            let guard = (data >> 6) & guard_mask(guard_size);
            Some(Cap::CNode { ptr, radix, guard_size, guard })
        }
        other => Some(other),
    }
}

const fn guard_mask(bits: u8) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

// ---- the CNode methods, from the invoking thread's message ----

/// A CNode invocation (the dispatcher is `api/invoke.rs`): the raw arguments are read from the
/// message (MRs in the order of [`CNodeInvocation`]'s fields; cap0: the source CNode's root),
/// then [`decode`] and [`perform`].
pub(crate) fn invoke(k: &mut Kernel, m: Message, cap: &Cap, label: u64) -> Result<(), Refused> {
    // Copy, Mint, Move and Mutate: destination index and depth (MR0, MR1), the source CNode's
    // root (cap0), source index and depth (MR2, MR3), read in that order.
    let two_slots =
        || -> Result<(u64, u64, Cap, u64, u64), Refused> { Ok((m.mr(0)?, m.mr(1)?, m.cap(0)?.1, m.mr(2)?, m.mr(3)?)) };
    let invocation = match label {
        inv::CNODE_COPY => {
            let (dest_index, dest_depth, src_root, src_index, src_depth) = two_slots()?;
            CNodeInvocation::Copy { dest_index, dest_depth, src_root, src_index, src_depth, rights: m.mr(4)? }
        }
        inv::CNODE_MINT => {
            let (dest_index, dest_depth, src_root, src_index, src_depth) = two_slots()?;
            let (rights, data) = (m.mr(4)?, m.mr(5)?);
            CNodeInvocation::Mint { dest_index, dest_depth, src_root, src_index, src_depth, rights, data }
        }
        inv::CNODE_MOVE => {
            let (dest_index, dest_depth, src_root, src_index, src_depth) = two_slots()?;
            CNodeInvocation::Move { dest_index, dest_depth, src_root, src_index, src_depth }
        }
        inv::CNODE_MUTATE => {
            let (dest_index, dest_depth, src_root, src_index, src_depth) = two_slots()?;
            CNodeInvocation::Mutate { dest_index, dest_depth, src_root, src_index, src_depth, data: m.mr(4)? }
        }
        inv::CNODE_DELETE => CNodeInvocation::Delete { index: m.mr(0)?, depth: m.mr(1)? },
        inv::CNODE_REVOKE => CNodeInvocation::Revoke { index: m.mr(0)?, depth: m.mr(1)? },
        inv::CNODE_CANCEL_BADGED_SENDS => CNodeInvocation::CancelBadgedSends { index: m.mr(0)?, depth: m.mr(1)? },
        _ => return Err(UNKNOWN_METHOD),
    };
    let plan = decode(cap, &invocation)?;
    let mut budget = Budget::new(PREEMPT_BUDGET);
    let p = perform(plan, k, &mut budget);
    m.progress(p)
}
