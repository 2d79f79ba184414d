//! Untyped memory: Retype (making objects) and Reset (taking the memory back).
//!
//! An untyped capability covers `2^size_bits` bytes at `ptr` (aligned to its size) and carries a
//! watermark, `free_index`: bytes below it may be in use by objects made from it, bytes at and
//! above it are free. For normal (non-device) memory it also carries a **dirty range**,
//! `dirty_from..dirty_top` (offsets from `ptr`, `free_index <= dirty_from <= dirty_top <= size`):
//! free bytes inside it may hold stale data (a boot loader's, or a deleted object's), every other
//! free byte is **zero**. An empty range is written `dirty_from == dirty_top == free_index`. Retype
//! zeroes the part of the new objects that lies in the range before handing them out, so objects
//! are always born in zeroed memory and need no initialisation pass — a new CNode is a run of
//! empty slots, a new page table maps nothing, a new frame is zero-filled, and no agent ever sees
//! another's data — while memory nobody asks for is never zeroed. Device untypeds have no dirty
//! range (both indices 0) and are never zeroed.
//!
//! * **Retype** places `count` objects of one type at the watermark aligned up to the object size.
//!   If the untyped has no children, its watermark is first taken back to 0 by a reset (as seL4
//!   does), so memory whose objects are all gone is reused automatically. Unless the objects are
//!   untyped, it zeroes from `dirty_from` up to the end of the objects or `dirty_top`, whichever
//!   is lower (the alignment gap below the first object with it, if dirty), in chunks of
//!   `2^RETYPE_CHUNK_BITS` bytes, one unit of [`Budget`] each, raising `dirty_from` after each
//!   chunk — so at every preemption point the rule above holds, no capability has been made and
//!   the watermark has not moved; the restarted Retype decodes again, finds the same place and
//!   carries on. Then it puts capabilities to the objects into empty slots of a destination CNode
//!   (as derivation children of the untyped capability), advances the watermark and keeps only
//!   the part of the dirty range above it ([`dirty_after_retype`]). A child untyped is not zeroed:
//!   it inherits the part of the parent's dirty range it covers ([`child_dirty_range`]).
//! * **GetInfo** ([`get_info`]) reports the size, the bytes a Retype can still use, whether the
//!   untyped has children, its physical address and whether it is device memory.
//! * **Reset** (also an operation of its own, [`decode_reset`] / [`perform_reset`]; the syscall
//!   layer has no label for it) needs an untyped with no children; it takes the watermark to 0
//!   and, for normal memory, makes everything below the old watermark dirty (`dirty_from` goes to
//!   0; `dirty_top` is already at or above the old watermark). It zeroes nothing and always
//!   finishes. A watermark already at 0 changes nothing, so the reset a restarted Retype starts
//!   with keeps the zeroing already done.
//!
//! Untyped capabilities the kernel makes at boot for normal memory have the watermark at 0 and
//! all of the memory dirty (`dirty_top` = size: contents unknown), so each Retype zeroes what it
//! hands out. Device untypeds start with everything at 0.
//!
//! Both dirty indices live in the capability (the `Cap::Untyped` variant has room: a `Cap` is 40
//! bytes of a 64-byte slot), not in the untyped's memory, which an object may overwrite.
//!
//! # Object sizes (log2 bytes)
//!
//! TCB [`TCB_BITS`], endpoint [`ENDPOINT_BITS`], notification [`NOTIFICATION_BITS`], CNode
//! `CNODE_SLOT_BITS + radix` (radix `1..=MAX_CNODE_RADIX`, given as `size_bits`), untyped
//! `size_bits` (`MIN_UNTYPED_BITS..=MAX_UNTYPED_BITS`), 4 KiB frame and every paging structure
//! [`PAGE_BITS`], 2 MiB frame [`LARGE_PAGE_BITS`]. `size_bits` is ignored for the other types.
//!
//! # What decode checks, in order (the first failure is the error)
//!
//! 1. the invoked capability is an untyped capability — else `InvalidCapability`;
//! 2. the object type is known — else `InvalidArgument`;
//! 3. `size_bits < 64` and the object size is at most `MAX_UNTYPED_BITS` — else `RangeError`;
//! 4. a CNode has radix ≥ 1, an untyped size ≥ `MIN_UNTYPED_BITS` — else `InvalidArgument`; a
//!    CNode radix ≤ `MAX_CNODE_RADIX` — else `RangeError`;
//! 5. the destination CNode: `dest_root` itself if `node_depth` is 0, else the capability at
//!    [`lookup_slot`]`(dest_root, node_index, node_depth)` (its errors); it must be a CNode
//!    capability — else `FailedLookup`;
//! 6. `node_offset < 2^radix` — else `RangeError`; `1 ≤ count ≤ RETYPE_MAX_COUNT` — else
//!    `RangeError`; `count ≤ 2^radix - node_offset` — else `RangeError`;
//! 7. every destination slot is empty — else `DeleteFirst`;
//! 8. `count` objects fit between the watermark (0 if the untyped has no children) and the end of
//!    the untyped — else `NotEnoughMemory`;
//! 9. device memory only becomes frames or untyped — else `InvalidArgument`.

use super::kptr::kptr;
use ozone_abi::Error;
use ozone_abi::object::{
    CNODE_SLOT_BITS, ENDPOINT_BITS, LARGE_PAGE_BITS, MAX_CNODE_RADIX, MAX_UNTYPED_BITS, MIN_UNTYPED_BITS,
    NOTIFICATION_BITS, PAGE_BITS, TCB_BITS,
};

use ozone_abi::invocation as inv;

use super::cspace::lookup_slot;
use super::delete::{Budget, Progress};
use super::kmem::{self, SlotRef, SlotSpan};
use super::mdb;
use super::tcb::Tcb;
use super::{Cap, FrameSize, Mapping, ObjectType, PagingLevel, Rights, vspace};
use crate::api::Kernel;
use crate::api::invoke::{Message, PREEMPT_BUDGET, Refused, UNKNOWN_METHOD, refuse};

/// The most objects one Retype may make (seL4's default fan-out limit).
pub const RETYPE_MAX_COUNT: u64 = 256;

/// log2 of the bytes a Retype zeroes per unit of work.
pub const RETYPE_CHUNK_BITS: u8 = 12;

/// The raw arguments of an Untyped Retype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetypeArgs {
    /// An [`ObjectType`] number.
    pub object_type: u64,
    /// Radix for a CNode, size for an untyped; ignored otherwise.
    pub size_bits: u64,
    /// Where the destination CNode is, under the `dest_root` capability (depth 0: `dest_root`).
    pub node_index: u64,
    pub node_depth: u64,
    /// First destination slot in that CNode.
    pub node_offset: u64,
    /// How many objects.
    pub count: u64,
}

/// log2 of the size of an object of type `ty` (`size_bits` as in [`RetypeArgs`]); `None` when
/// `size_bits` is 64 or more.
pub fn object_size_bits(ty: ObjectType, size_bits: u64) -> Option<u64> {
    if size_bits >= 64 {
        return None;
    }
    Some(match ty {
        ObjectType::Untyped => size_bits,
        ObjectType::CNode => size_bits + u64::from(CNODE_SLOT_BITS),
        ObjectType::Tcb => u64::from(TCB_BITS),
        ObjectType::Endpoint => u64::from(ENDPOINT_BITS),
        ObjectType::Notification => u64::from(NOTIFICATION_BITS),
        ObjectType::Frame4K => u64::from(PAGE_BITS),
        ObjectType::Frame2M => u64::from(LARGE_PAGE_BITS),
        ObjectType::PageTable | ObjectType::PageDirectory | ObjectType::Pdpt | ObjectType::Pml4 => u64::from(PAGE_BITS),
    })
}

/// A checked Retype. Valid only until the state changes: perform it in the kernel entry that
/// decoded it (the kernel restarts a preempted Retype with a fresh decode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetypePlan {
    untyped: SlotRef,
    ty: ObjectType,
    size_bits: u8,
    object_bits: u8,
    dest: SlotSpan,
    offset: u64,
    count: u64,
    /// Offset of the first object from the start of the untyped.
    first_offset: u64,
    reset: bool,
}

/// Check a Retype of the untyped capability in `untyped` (see the module docs).
pub fn decode_retype(untyped: SlotRef, args: &RetypeArgs, dest_root: &Cap) -> Result<RetypePlan, Error> {
    let Cap::Untyped { size_bits: ut_bits, free_index, device, .. } = untyped.cap() else {
        return Err(Error::InvalidCapability);
    };
    let ty = ObjectType::from_raw(args.object_type).ok_or(Error::InvalidArgument)?;
    let object_bits =
        object_size_bits(ty, args.size_bits).filter(|&b| b <= u64::from(MAX_UNTYPED_BITS)).ok_or(Error::RangeError)?;
    // Both fit in a u8 now: object_bits <= 47 and size_bits <= object_bits for untyped/CNode.
    let object_bits = object_bits as u8;
    let size_bits = args.size_bits.min(63) as u8;
    match ty {
        ObjectType::CNode if size_bits == 0 => return Err(Error::InvalidArgument),
        ObjectType::CNode if size_bits > MAX_CNODE_RADIX => return Err(Error::RangeError),
        ObjectType::Untyped if size_bits < MIN_UNTYPED_BITS => return Err(Error::InvalidArgument),
        _ => {}
    }

    let node =
        if args.node_depth == 0 { *dest_root } else { lookup_slot(dest_root, args.node_index, args.node_depth)?.cap() };
    let dest = SlotSpan::of_cnode(&node).ok_or(Error::FailedLookup)?;
    let node_size = dest.count();
    if args.node_offset >= node_size {
        return Err(Error::RangeError);
    }
    if args.count == 0 || args.count > RETYPE_MAX_COUNT {
        return Err(Error::RangeError);
    }
    if args.count > node_size - args.node_offset {
        return Err(Error::RangeError);
    }
    for i in 0..args.count {
        if !dest.slot(args.node_offset + i).is_some_and(|s| s.is_empty()) {
            return Err(Error::DeleteFirst);
        }
    }

    let reset = !mdb::has_children(untyped);
    let free = if reset { 0 } else { free_index };
    let ut_size = 1u64 << ut_bits.min(63);
    let free_bytes = ut_size.saturating_sub(free);
    if (free_bytes >> object_bits) < args.count {
        return Err(Error::NotEnoughMemory);
    }
    if device && !matches!(ty, ObjectType::Frame4K | ObjectType::Frame2M | ObjectType::Untyped) {
        return Err(Error::InvalidArgument);
    }
    // The untyped is aligned to its size, which is at least the object size (or nothing would
    // fit), so aligning the offset aligns the address; and the objects fit, so this stays inside.
    let first = free.next_multiple_of(1u64 << object_bits);
    Ok(RetypePlan {
        untyped,
        ty,
        size_bits,
        object_bits,
        dest,
        offset: args.node_offset,
        count: args.count,
        first_offset: first,
        reset,
    })
}

/// Carry out a checked Retype: lower the watermark first if the untyped has no children, zero
/// the part of the new objects' memory that may be dirty (preemptible, a chunk of
/// `2^RETYPE_CHUNK_BITS` bytes per unit of work), then make the objects (at most
/// [`RETYPE_MAX_COUNT`], not preemptible). A preempted Retype has made no capability and has
/// only zeroed memory and raised `dirty_from`; the restart decodes again, finds the same place
/// (nothing else changed the watermark, or the decode sees what did) and goes on from there.
pub fn perform_retype(plan: RetypePlan, budget: &mut Budget) -> Progress {
    if plan.reset {
        reset_watermark(plan.untyped);
    }
    let Cap::Untyped { ptr, size_bits, free_index, mut dirty_from, dirty_top, device } = plan.untyped.raw_cap() else {
        return Progress::Done;
    };
    let end = plan.first_offset + (plan.count << plan.object_bits);
    if !device && plan.ty != ObjectType::Untyped {
        // Bytes [free_index, dirty_from) are zero, and so are those from dirty_top up: zero from
        // dirty_from (which may be below the first object: the alignment gap is zeroed with it,
        // keeping that rule) to the end of the objects or dirty_top, whichever comes first.
        let zero_end = end.min(dirty_top);
        let chunk = 1u64 << RETYPE_CHUNK_BITS;
        while dirty_from < zero_end {
            let next = ((dirty_from | (chunk - 1)) + 1).min(zero_end);
            kmem::zero_untyped(ptr + dirty_from, next - dirty_from);
            dirty_from = next;
            plan.untyped.set_cap(Cap::Untyped { ptr, size_bits, free_index, dirty_from, dirty_top, device });
            if dirty_from < zero_end && budget.spend() {
                return Progress::Preempted;
            }
        }
    }
    let (from_after, top_after) = dirty_after_retype(end, dirty_from, dirty_top, device);
    plan.untyped.set_cap(Cap::Untyped {
        ptr,
        size_bits,
        free_index: end,
        dirty_from: from_after,
        dirty_top: top_after,
        device,
    });
    for i in 0..plan.count {
        let offset = plan.first_offset + (i << plan.object_bits);
        let cap = new_object_cap(plan.ty, ptr + offset, plan.size_bits, device);
        let cap = match cap {
            Cap::Untyped { ptr, size_bits, device, .. } => {
                let (dirty_from, dirty_top) =
                    child_dirty_range(offset, 1u64 << plan.object_bits, dirty_from, dirty_top, device);
                Cap::Untyped { ptr, size_bits, free_index: 0, dirty_from, dirty_top, device }
            }
            c => c,
        };
        if let Some(dest) = plan.dest.slot(plan.offset + i) {
            mdb::insert_new_cap(plan.untyped, dest, cap);
        }
    }
    Progress::Done
}

/// The dirty range of an untyped after a Retype moved its watermark to `end` (from the range
/// before it, after any zeroing): nothing below the watermark is tracked, and an empty range is
/// `(end, end)`. Device memory keeps `(0, 0)`.
pub fn dirty_after_retype(end: u64, dirty_from: u64, dirty_top: u64, device: bool) -> (u64, u64) {
    if device {
        return (0, 0);
    }
    let from = dirty_from.max(end);
    let top = dirty_top.max(from);
    if from == top { (end, end) } else { (from, top) }
}

/// The dirty range of a child untyped of `size` bytes at `offset` in its parent, whose dirty
/// range is `dirty_from..dirty_top` (the child lies at or above the parent's watermark, so every
/// byte of it outside that range is zero): the overlap, relative to the child; `(0, 0)` if none,
/// and always for device memory.
pub fn child_dirty_range(offset: u64, size: u64, dirty_from: u64, dirty_top: u64, device: bool) -> (u64, u64) {
    if device {
        return (0, 0);
    }
    let from = dirty_from.saturating_sub(offset).min(size);
    let top = dirty_top.saturating_sub(offset).min(size);
    if from == top { (0, 0) } else { (from, top) }
}

/// The capability to a new object. Objects are born in zeroed memory and need nothing else.
fn new_object_cap(ty: ObjectType, ptr: u64, size_bits: u8, device: bool) -> Cap {
    match ty {
        ObjectType::Untyped => Cap::Untyped { ptr, size_bits, free_index: 0, dirty_from: 0, dirty_top: 0, device },
        ObjectType::Tcb => Cap::Tcb { ptr },
        ObjectType::Endpoint => Cap::Endpoint { ptr, badge: 0, rights: Rights::ALL },
        ObjectType::Notification => Cap::Notification { ptr, badge: 0, rights: Rights::ALL },
        ObjectType::CNode => Cap::CNode { ptr, radix: size_bits, guard_size: 0, guard: 0 },
        ObjectType::Frame4K => Cap::Frame { ptr, size: FrameSize::Small, rights: Rights::ALL, device, mapped: None },
        ObjectType::Frame2M => Cap::Frame { ptr, size: FrameSize::Large, rights: Rights::ALL, device, mapped: None },
        ObjectType::PageTable => Cap::Paging { ptr, level: PagingLevel::PageTable, mapped: None },
        ObjectType::PageDirectory => Cap::Paging { ptr, level: PagingLevel::PageDirectory, mapped: None },
        ObjectType::Pdpt => Cap::Paging { ptr, level: PagingLevel::Pdpt, mapped: None },
        ObjectType::Pml4 => Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: None },
    }
}

/// What Untyped GetInfo reports about an untyped capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UntypedInfo {
    pub size_bits: u8,
    /// Bytes a Retype through this capability can still use: the whole untyped if it has no
    /// children (the next Retype resets it first), else the bytes from the watermark to the end.
    /// Objects of `2^b` bytes are placed aligned, and an untyped's size and address are powers of
    /// two, so exactly `free >> b` such objects fit.
    pub free: u64,
    pub has_children: bool,
    /// The physical address of the memory.
    pub paddr: u64,
    pub device: bool,
}

/// Untyped GetInfo on the capability in `untyped` (`InvalidCapability` if it is not one). Reads
/// only; the free figure is the one [`decode_retype`] uses.
pub fn get_info(untyped: SlotRef) -> Result<UntypedInfo, Error> {
    let Cap::Untyped { ptr, size_bits, free_index, device, .. } = untyped.cap() else {
        return Err(Error::InvalidCapability);
    };
    let has_children = mdb::has_children(untyped);
    let size = 1u64 << size_bits.min(63);
    let free = if has_children { size.saturating_sub(free_index) } else { size };
    Ok(UntypedInfo { size_bits, free, has_children, paddr: ptr.wrapping_sub(super::KERNEL_PHYS_OFFSET), device })
}

/// A checked Reset (valid like a [`RetypePlan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResetPlan {
    untyped: SlotRef,
}

/// Check a Reset of the untyped capability in `untyped`: it must be one (`InvalidCapability`) and
/// have no children (`DeleteFirst`).
pub fn decode_reset(untyped: SlotRef) -> Result<ResetPlan, Error> {
    if !matches!(untyped.cap(), Cap::Untyped { .. }) {
        return Err(Error::InvalidCapability);
    }
    mdb::ensure_no_children(untyped)?;
    Ok(ResetPlan { untyped })
}

/// Carry out a checked Reset. It only lowers the watermark (see the module docs), so it
/// always finishes; it keeps the [`Budget`] argument of a preemptible operation.
pub fn perform_reset(plan: ResetPlan, _budget: &mut Budget) -> Progress {
    reset_watermark(plan.untyped);
    Progress::Done
}

/// Take the watermark of a childless untyped back to 0 without touching its memory: everything
/// below the old watermark joins the dirty range. A watermark already at 0 changes nothing (so a
/// restarted Retype keeps the zeroing it has done).
fn reset_watermark(slot: SlotRef) {
    let Cap::Untyped { ptr, size_bits, free_index, dirty_from, dirty_top, device } = slot.raw_cap() else {
        return;
    };
    if free_index == 0 {
        return;
    }
    let dirty_from = if device { 0 } else { reset_dirty_from(free_index, dirty_from) };
    slot.set_cap(Cap::Untyped { ptr, size_bits, free_index: 0, dirty_from, dirty_top, device });
}

/// `dirty_from` after the watermark of a normal-memory untyped goes from `free_index` to 0: the
/// memory below the old watermark may be dirty, so the dirty range starts at 0 (it is then
/// `0..dirty_top`, as `dirty_top >= free_index`).
pub fn reset_dirty_from(free_index: u64, dirty_from: u64) -> u64 {
    if free_index == 0 { dirty_from } else { 0 }
}

// ---- the Untyped methods, from the invoking thread's message ----

/// An Untyped invocation (the dispatcher is `api/invoke.rs`): Retype (MR0..MR5: object type,
/// size bits, node index, node depth, node offset, count; cap0: the destination CNode's root)
/// and GetInfo (results: size bits, free bytes, flags, physical address).
pub(crate) fn invoke(k: &mut Kernel, m: Message, slot: SlotRef, label: u64) -> Result<(), Refused> {
    match label {
        inv::UNTYPED_RETYPE => retype(k, m, slot),
        inv::UNTYPED_GET_INFO => {
            let info = get_info(slot)?;
            let mut flags = 0;
            if info.has_children {
                flags |= inv::UNTYPED_INFO_HAS_CHILDREN;
            }
            if info.device {
                flags |= inv::UNTYPED_INFO_DEVICE;
            }
            m.reply(&[u64::from(info.size_bits), info.free, flags, info.paddr]);
            Ok(())
        }
        _ => Err(UNKNOWN_METHOD),
    }
}

fn retype(k: &mut Kernel, m: Message, slot: SlotRef) -> Result<(), Refused> {
    let args = RetypeArgs {
        object_type: m.mr(0)?,
        size_bits: m.mr(1)?,
        node_index: m.mr(2)?,
        node_depth: m.mr(3)?,
        node_offset: m.mr(4)?,
        count: m.mr(5)?,
    };
    let (_, dest_root) = m.cap(0)?;
    let plan = decode_retype(slot, &args, &dest_root)?;
    // Every PML4 gets an ASID when it is made (in `init_object`): there must be enough of them.
    if args.object_type == ObjectType::Pml4 as u64 && (k.asids.free_count() as u64) < args.count {
        return Err(refuse(Error::DeleteFirst, "not enough free ASIDs for the new PML4s"));
    }
    let mut budget = Budget::new(PREEMPT_BUDGET);
    if perform_retype(plan, &mut budget) == Progress::Preempted {
        m.restart();
        return Ok(());
    }
    // Give the new objects their initial state where all-zero memory is not it.
    let node =
        if args.node_depth == 0 { dest_root } else { lookup_slot(&dest_root, args.node_index, args.node_depth)?.cap() };
    let span = SlotSpan::of_cnode(&node).ok_or(Error::FailedLookup)?;
    // A new thread's maximum controlled priority is its creator's (MCPs are never raised, so a
    // thread gets no ceiling above the one of the thread that made it).
    // Likewise its syscall profile allows no more than its creator's: a confined thread cannot
    // make an unconfined one.
    // SAFETY: the invoking thread is live for the whole invocation; one read.
    let (mcp, allowed) = unsafe { ((*m.thread()).mcp, (*m.thread()).profile.allowed()) };
    for i in 0..args.count {
        let Some(s) = span.slot(args.node_offset + i) else { break };
        init_object(k, s, mcp, allowed);
    }
    Ok(())
}

/// Initialise a freshly retyped object, whose only capability is in `slot`; a thread gets the
/// maximum controlled priority `mcp` and a profile that allows `allowed`.
fn init_object(k: &mut Kernel, slot: SlotRef, mcp: u8, allowed: u64) {
    match slot.cap() {
        Cap::Tcb { ptr } => {
            let mut t = Tcb::initial();
            t.mcp = mcp;
            t.profile.set_allowed(allowed);
            // SAFETY: the TCB was just carved from untyped memory: nothing else refers to it.
            unsafe { (kptr::<Tcb>(ptr)).write(t) };
        }
        Cap::Paging { ptr, level: PagingLevel::Pml4, .. } => {
            // SAFETY: the kernel's PML4 is live for ever.
            let kernel = (k.kernel_pml4 != 0).then(|| unsafe { &*(k.kernel_pml4 as *const vspace::Table) });
            // SAFETY: the PML4 was just retyped; its only capability is in `slot`.
            unsafe { vspace::init_pml4(ptr, kernel) };
            // Checked before the Retype: there is an ASID for every new PML4. (Were there none,
            // the capability would stay without one: no address space, refused as a VSpace.)
            if let Some(asid) = k.asids.assign(ptr) {
                slot.set_cap(Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: Some(Mapping { asid, vaddr: 0 }) });
            }
        }
        _ => {}
    }
}
