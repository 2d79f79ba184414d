//! Address spaces built from paging objects (seL4's x86_64 VSpace).
//!
//! A VSpace is a PML4 object; the user builds the tree below it from PDPT, page-directory and
//! page-table objects retyped from untyped memory, and maps frames into it. The kernel never
//! allocates page tables on a user's behalf: mapping into a range whose table is missing fails
//! with `FailedLookup`, and the user must map the table first. The kernel half of every PML4 is
//! the kernel's own (copied when the PML4 is made, see `init_pml4`).
//!
//! Table entries hold physical addresses; the kernel reads and writes tables through the
//! direct map (`KERNEL_PHYS_OFFSET`). The functions here do the decoding checks and the entry
//! writes; the invocation layer updates the capabilities' `mapped` fields and flushes the TLB.
//!
//! # Why the walks only meet live tables
//!
//! Every walk here starts at a live PML4: one named by a capability, or found through the ASID
//! table ([`asid`](super::asid)), which forgets a PML4 when its last capability goes. The walk
//! then trusts the entries it reads. That is sound because of this invariant: *a table reachable
//! from a live PML4 has present user entries only for live objects, and each such entry is
//! recorded by a live capability whose mapping still leads to it*. The invocation layer keeps it:
//!
//! 1. An entry is written by Map through a capability, which records `(ASID, vaddr)`; it is cleared
//!    by that capability's Unmap or deletion, which walk the recorded path again and clear the
//!    entry there if it still maps the object. A copy of a frame capability starts unmapped (each
//!    records its own mapping); copies of a paging structure's capability share its one mapping.
//! 2. While a table is reachable its path from the PML4 does not change: tables move only by Unmap
//!    and Map, and Unmap **zeroes** the table ([`clear_table`]), so whatever hung below it is cut
//!    off. (seL4 does the same.) Hence the recorded walk of a reachable entry reaches it, and once
//!    the last capability to an object is deleted no reachable entry maps it.
//! 3. When the walk fails (a table on the way was unmapped or deleted, or the ASID is gone) the
//!    entry, if it still exists, is in a table no live PML4 reaches. Such a table becomes
//!    reachable again only by being mapped, which needs a capability that is not mapped, which
//!    (after its first Map) it only gets from Unmap, which zeroes it first.
//! 4. A table is mapped in at most one place: only an unmapped capability can Map; Retype makes
//!    one capability, unmapped paging capabilities cannot be copied, and Unmap of a table needs
//!    its last capability (`DeleteFirst` otherwise, seL4's `RevokeFirst`), so no two capabilities
//!    to one table are ever unmapped at once.

use super::kptr::kptr;
use ozone_abi::{Error, USER_TOP};

use super::{FrameSize, KERNEL_PHYS_OFFSET, PagingLevel, Rights};

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const ACCESSED: u64 = 1 << 5;
const DIRTY: u64 = 1 << 6;
const HUGE: u64 = 1 << 7;
/// Page-level write-through and cache disable: with the power-on PAT, both set is uncacheable
/// (UC), what device registers need.
const WRITE_THROUGH: u64 = 1 << 3;
const CACHE_DISABLE: u64 = 1 << 4;
const NO_EXECUTE: u64 = 1 << 63;
/// Physical-address bits of an entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Entries per table.
pub const ENTRIES: usize = 512;

/// A 4 KiB paging table of any level.
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

/// The paging table at `kaddr`.
///
/// # Safety
/// `kaddr` is a live, 4 KiB-aligned paging table in the direct map: from a capability, from the
/// ASID table (which forgets a PML4 before it is destroyed), or from a present non-leaf user
/// entry of a table reachable from a live PML4 (the invariant in the module docs); no other
/// reference to it is used while the returned one is.
unsafe fn table<'a>(kaddr: u64) -> &'a mut Table {
    // SAFETY: per the contract.
    unsafe { &mut *kptr::<Table>(kaddr) }
}

fn to_phys(kaddr: u64) -> u64 {
    kaddr.wrapping_sub(KERNEL_PHYS_OFFSET)
}

fn to_kaddr(phys: u64) -> u64 {
    phys.wrapping_add(KERNEL_PHYS_OFFSET)
}

/// Index into the table of `level` for `vaddr`.
const fn index(level: PagingLevel, vaddr: u64) -> usize {
    let shift = match level {
        PagingLevel::Pml4 => 39,
        PagingLevel::Pdpt => 30,
        PagingLevel::PageDirectory => 21,
        PagingLevel::PageTable => 12,
    };
    ((vaddr >> shift) & 0x1ff) as usize
}

/// The level whose entries point at tables of `level` (None for a PML4, which nothing maps).
const fn parent_level(level: PagingLevel) -> Option<PagingLevel> {
    match level {
        PagingLevel::Pml4 => None,
        PagingLevel::Pdpt => Some(PagingLevel::Pml4),
        PagingLevel::PageDirectory => Some(PagingLevel::Pdpt),
        PagingLevel::PageTable => Some(PagingLevel::PageDirectory),
    }
}

const fn child_level(level: PagingLevel) -> Option<PagingLevel> {
    match level {
        PagingLevel::Pml4 => Some(PagingLevel::Pdpt),
        PagingLevel::Pdpt => Some(PagingLevel::PageDirectory),
        PagingLevel::PageDirectory => Some(PagingLevel::PageTable),
        PagingLevel::PageTable => None,
    }
}

/// Bytes one entry of a table of `level` covers.
const fn entry_span(level: PagingLevel) -> u64 {
    match level {
        PagingLevel::Pml4 => 1 << 39,
        PagingLevel::Pdpt => 1 << 30,
        PagingLevel::PageDirectory => 1 << 21,
        PagingLevel::PageTable => 1 << 12,
    }
}

/// The table of `level` covering `vaddr` in `pml4`, walking from the top.
///
/// # Safety
/// As for [`table`]: `pml4` is a live PML4.
unsafe fn walk<'a>(pml4: u64, vaddr: u64, level: PagingLevel) -> Result<&'a mut Table, Error> {
    // SAFETY: per the contract.
    let mut t = unsafe { table(pml4) };
    let mut at = PagingLevel::Pml4;
    while at != level {
        let e = t.0[index(at, vaddr)];
        if e & PRESENT == 0 || e & HUGE != 0 {
            return Err(Error::FailedLookup);
        }
        // SAFETY: a present non-leaf entry of a table reachable from a live PML4 names a live
        // table (the module invariant); the previous reference is not used again.
        t = unsafe { table(to_kaddr(e & ADDR_MASK)) };
        at = child_level(at).ok_or(Error::FailedLookup)?;
    }
    Ok(t)
}

/// `[vaddr, vaddr + size)` must be `align`-aligned and lie in user memory (below [`USER_TOP`]).
fn check_user_vaddr(vaddr: u64, align: u64, size: u64) -> Result<(), Error> {
    if !vaddr.is_multiple_of(align) {
        return Err(Error::AlignmentError);
    }
    if vaddr.checked_add(size).is_none_or(|end| end > USER_TOP) {
        return Err(Error::InvalidArgument);
    }
    Ok(())
}

/// Copy the kernel half (entries 256..512) of `kernel_pml4` into a new PML4.
///
/// # Safety
/// `pml4` is the kernel address of a live PML4 no one else uses yet (just retyped).
pub unsafe fn init_pml4(pml4: u64, kernel_pml4: Option<&Table>) {
    // SAFETY: per the contract.
    let t = unsafe { table(pml4) };
    if let Some(k) = kernel_pml4 {
        t.0[256..].copy_from_slice(&k.0[256..]);
    }
}

/// The first top-half slot (of 512) at which the PML4 `pml4` differs from `template`, the PML4
/// every PML4 copies its top half from (`init_pml4`). Nothing but the CPU ever changes a PML4's
/// top half after `init_pml4` — the CPU sets the accessed bit of the entries it walks through,
/// which is not compared — so this is always `None` (the in-guest checker tests it).
///
/// # Safety
/// `pml4` and `template` are kernel addresses of live PML4s (from a capability; the kernel's
/// template lives for ever) that nothing writes while this reads them.
pub unsafe fn top_half_differs(pml4: u64, template: u64) -> Option<usize> {
    const SET_BY_THE_CPU: u64 = ACCESSED | DIRTY;
    // SAFETY: per the contract: both are live 4 KiB tables, only read here.
    let (t, k) = unsafe { (&*kptr::<Table>(pml4), &*kptr::<Table>(template)) };
    (256..ENTRIES).find(|&i| (t.0[i] ^ k.0[i]) & !SET_BY_THE_CPU != 0)
}

/// Map the paging object `object` (of `level`, not a PML4) into `pml4` to cover `vaddr`.
///
/// # Safety
/// `pml4` is the kernel address of a live PML4 (a capability's, or the ASID table's), and
/// `object` that of a live paging object or frame named by the caller's capability.
pub unsafe fn map_table(pml4: u64, object: u64, level: PagingLevel, vaddr: u64) -> Result<(), Error> {
    let parent = parent_level(level).ok_or(Error::IllegalOperation)?;
    // As in seL4, `vaddr` only selects the slot: any address in the range the table will cover.
    check_user_vaddr(vaddr, 1, 1)?;
    // SAFETY: per the contract.
    let p = unsafe { walk(pml4, vaddr, parent) }?;
    let slot = &mut p.0[index(parent, vaddr)];
    if *slot & PRESENT != 0 {
        return Err(Error::DeleteFirst);
    }
    *slot = to_phys(object) | PRESENT | WRITABLE | USER;
    Ok(())
}

/// Remove the paging object `object` (of `level`) mapped at `vaddr` in `pml4`. Succeeds quietly
/// if that entry no longer points at it.
///
/// # Safety
/// `pml4` is the kernel address of a live PML4: named by a capability, or found through the ASID
/// table (see "Why the walks only meet live tables" above).
pub unsafe fn unmap_table(pml4: u64, object: u64, level: PagingLevel, vaddr: u64) {
    let Some(parent) = parent_level(level) else { return };
    // SAFETY: per the contract.
    if let Ok(p) = unsafe { walk(pml4, vaddr, parent) } {
        let slot = &mut p.0[index(parent, vaddr)];
        if *slot & PRESENT != 0 && *slot & HUGE == 0 && *slot & ADDR_MASK == to_phys(object) {
            *slot = 0;
        }
    }
}

/// Empty the paging table `object` (not a PML4: its kernel half must stay): every entry 0. Unmap
/// does this, so that a table that comes back into an address space brings nothing with it.
///
/// # Safety
/// `object` is the kernel address of a live paging table named by the caller's capability.
pub unsafe fn clear_table(object: u64) {
    // SAFETY: per the contract.
    unsafe { table(object) }.0.fill(0);
}

/// The leaf entry for a frame of `size` with `rights` (read is implied; write needs WRITE;
/// `executable` clears NX).
fn leaf_entry(phys: u64, size: FrameSize, rights: Rights, executable: bool) -> u64 {
    let mut e = phys | PRESENT | USER;
    if rights.contains(Rights::WRITE) {
        e |= WRITABLE;
    }
    if !executable {
        e |= NO_EXECUTE;
    }
    if size == FrameSize::Large {
        e |= HUGE;
    }
    e
}

/// Map the frame `object` at `vaddr` in `pml4`. The rights are the capability's (already
/// masked by the caller with those requested); a frame without READ cannot be mapped.
///
/// # Safety
/// `pml4` is the kernel address of a live PML4 (a capability's, or the ASID table's), and
/// `object` that of a live paging object or frame named by the caller's capability.
pub unsafe fn map_frame(
    pml4: u64,
    object: u64,
    size: FrameSize,
    vaddr: u64,
    rights: Rights,
    executable: bool,
) -> Result<(), Error> {
    // SAFETY: per the contract.
    unsafe { map_frame_with(pml4, object, size, vaddr, rights, executable, false) }
}

/// [`map_frame`], uncacheable if `uncached` (frames of device memory: device registers must
/// not be cached, nor their reads merged or speculated).
///
/// # Safety
/// As for [`map_frame`].
pub unsafe fn map_frame_with(
    pml4: u64,
    object: u64,
    size: FrameSize,
    vaddr: u64,
    rights: Rights,
    executable: bool,
    uncached: bool,
) -> Result<(), Error> {
    if !rights.contains(Rights::READ) {
        return Err(Error::IllegalOperation);
    }
    let (level, align) = match size {
        FrameSize::Small => (PagingLevel::PageTable, 1 << 12),
        FrameSize::Large => (PagingLevel::PageDirectory, 1 << 21),
    };
    check_user_vaddr(vaddr, align, align)?;
    // SAFETY: per the contract.
    let t = unsafe { walk(pml4, vaddr, level) }?;
    let slot = &mut t.0[index(level, vaddr)];
    if *slot & PRESENT != 0 {
        return Err(Error::DeleteFirst);
    }
    *slot = leaf_entry(to_phys(object), size, rights, executable)
        | if uncached { WRITE_THROUGH | CACHE_DISABLE } else { 0 };
    Ok(())
}

/// Remove the frame `object` mapped at `vaddr` in `pml4`, if it is still there.
///
/// # Safety
/// `pml4` is the kernel address of a live PML4: named by a capability, or found through the ASID
/// table (see "Why the walks only meet live tables" above).
pub unsafe fn unmap_frame(pml4: u64, object: u64, size: FrameSize, vaddr: u64) {
    let level = match size {
        FrameSize::Small => PagingLevel::PageTable,
        FrameSize::Large => PagingLevel::PageDirectory,
    };
    // SAFETY: per the contract.
    if let Ok(t) = unsafe { walk(pml4, vaddr, level) } {
        let slot = &mut t.0[index(level, vaddr)];
        if *slot & PRESENT != 0 && *slot & ADDR_MASK == to_phys(object) {
            *slot = 0;
        }
    }
}

/// The physical address `vaddr` maps to in `pml4` and whether it is user-writable.
///
/// # Safety
/// `pml4` is the kernel address of a live PML4: named by a capability, or found through the ASID
/// table (see "Why the walks only meet live tables" above).
pub unsafe fn translate(pml4: u64, vaddr: u64) -> Option<(u64, bool)> {
    if vaddr >= USER_TOP {
        return None;
    }
    // SAFETY: per the contract.
    let mut t = unsafe { table(pml4) };
    let mut level = PagingLevel::Pml4;
    loop {
        let e = t.0[index(level, vaddr)];
        if e & PRESENT == 0 || e & USER == 0 {
            return None;
        }
        let leaf = level == PagingLevel::PageTable || (level == PagingLevel::PageDirectory && e & HUGE != 0);
        if leaf {
            let offset = vaddr & (entry_span(level) - 1);
            return Some(((e & ADDR_MASK & !(entry_span(level) - 1)) + offset, e & WRITABLE != 0));
        }
        // SAFETY: a present non-leaf entry of a table reachable from a live PML4 names a live
        // table (the module invariant); the previous reference is not used again.
        t = unsafe { table(to_kaddr(e & ADDR_MASK)) };
        level = child_level(level)?;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::object::test_object::Obj;

    fn new_table() -> Obj<Table> {
        Obj::new(Table([0; ENTRIES]))
    }

    fn k(t: &Obj<Table>) -> u64 {
        t.ptr() as u64
    }

    #[test]
    fn device_frames_are_mapped_uncacheable_and_unmap_as_any_other() {
        // SAFETY: as in the test below: this test's live tables; the frame addresses are never
        // dereferenced.
        unsafe {
            let (pml4, pdpt, pd, pt) = (new_table(), new_table(), new_table(), new_table());
            map_table(k(&pml4), k(&pdpt), PagingLevel::Pdpt, 0).unwrap();
            map_table(k(&pml4), k(&pd), PagingLevel::PageDirectory, 0).unwrap();
            map_table(k(&pml4), k(&pt), PagingLevel::PageTable, 0).unwrap();
            let (ram, dev) = (0x1000_0000u64, 0x80_0000_0000u64);
            let rw = Rights::READ.union(Rights::WRITE);
            map_frame_with(k(&pml4), to_kaddr(ram), FrameSize::Small, 0x1000, rw, false, false).unwrap();
            map_frame_with(k(&pml4), to_kaddr(dev), FrameSize::Small, 0x2000, rw, false, true).unwrap();
            let entries = &(*pt.ptr()).0;
            assert_eq!(entries[1] & (WRITE_THROUGH | CACHE_DISABLE), 0);
            assert_eq!(entries[2] & (WRITE_THROUGH | CACHE_DISABLE), WRITE_THROUGH | CACHE_DISABLE);
            assert_eq!(translate(k(&pml4), 0x2008), Some((dev + 8, true)));
            unmap_frame(k(&pml4), to_kaddr(dev), FrameSize::Small, 0x2000);
            assert_eq!(translate(k(&pml4), 0x2000), None);
        }
    }

    #[test]
    fn tables_must_be_mapped_top_down_and_frames_last() {
        // SAFETY: every table address passed is one of this test's live tables (`Obj`s, each
        // used by one reference at a time); frame addresses are never dereferenced.
        unsafe {
            let pml4 = new_table();
            let (pdpt, pd, pt) = (new_table(), new_table(), new_table());
            let frame = new_table();
            let va = 0x40_0000u64;
            let rw = Rights::READ.union(Rights::WRITE);
            assert_eq!(map_frame(k(&pml4), k(&frame), FrameSize::Small, va, rw, false), Err(Error::FailedLookup));
            assert_eq!(map_table(k(&pml4), k(&pd), PagingLevel::PageDirectory, va), Err(Error::FailedLookup));
            map_table(k(&pml4), k(&pdpt), PagingLevel::Pdpt, 0).unwrap();
            assert_eq!(map_table(k(&pml4), k(&pdpt), PagingLevel::Pdpt, 0), Err(Error::DeleteFirst));
            map_table(k(&pml4), k(&pd), PagingLevel::PageDirectory, 0).unwrap();
            map_table(k(&pml4), k(&pt), PagingLevel::PageTable, va).unwrap();
            map_frame(k(&pml4), k(&frame), FrameSize::Small, va, rw, false).unwrap();
            assert_eq!(map_frame(k(&pml4), k(&frame), FrameSize::Small, va, rw, false), Err(Error::DeleteFirst));
            assert_eq!(translate(k(&pml4), va + 0x123), Some((to_phys(k(&frame)) + 0x123, true)));
            assert_eq!(translate(k(&pml4), va + 0x1000), None);
            unmap_frame(k(&pml4), k(&frame), FrameSize::Small, va);
            assert_eq!(translate(k(&pml4), va), None);
            unmap_table(k(&pml4), k(&pt), PagingLevel::PageTable, va);
            assert_eq!(map_frame(k(&pml4), k(&frame), FrameSize::Small, va, rw, false), Err(Error::FailedLookup));
        }
    }

    #[test]
    fn rights_alignment_and_kernel_half_are_checked() {
        // SAFETY: every table address passed is one of this test's live tables (`Obj`s, each
        // used by one reference at a time); frame addresses are never dereferenced.
        unsafe {
            let pml4 = new_table();
            let (pdpt, pd, pt) = (new_table(), new_table(), new_table());
            let frame = new_table();
            map_table(k(&pml4), k(&pdpt), PagingLevel::Pdpt, 0).unwrap();
            map_table(k(&pml4), k(&pd), PagingLevel::PageDirectory, 0).unwrap();
            map_table(k(&pml4), k(&pt), PagingLevel::PageTable, 0).unwrap();
            let f = k(&frame);
            assert_eq!(
                map_frame(k(&pml4), f, FrameSize::Small, 0x1001, Rights::READ, false),
                Err(Error::AlignmentError)
            );
            assert_eq!(
                map_frame(k(&pml4), f, FrameSize::Small, 0x1000, Rights::WRITE, false),
                Err(Error::IllegalOperation)
            );
            assert_eq!(
                map_frame(k(&pml4), f, FrameSize::Small, USER_TOP, Rights::READ, false),
                Err(Error::InvalidArgument)
            );
            assert_eq!(map_table(k(&pml4), k(&pdpt), PagingLevel::Pdpt, USER_TOP), Err(Error::InvalidArgument));
            assert_eq!(map_table(k(&pml4), k(&pt), PagingLevel::PageTable, 0x1000), Err(Error::DeleteFirst));
            assert_eq!(map_table(k(&pml4), k(&pml4), PagingLevel::Pml4, 0), Err(Error::IllegalOperation));
            map_frame(k(&pml4), f, FrameSize::Small, 0x1000, Rights::READ, false).unwrap();
            assert_eq!(translate(k(&pml4), 0x1000), Some((to_phys(f), false)));
            // The leaf is user, no-execute.
            assert_eq!(pt.0[1] & (USER | NO_EXECUTE | WRITABLE), USER | NO_EXECUTE);
        }
    }

    #[test]
    fn large_frames_live_in_page_directories() {
        // SAFETY: every table address passed is one of this test's live tables (`Obj`s, each
        // used by one reference at a time); frame addresses are never dereferenced.
        unsafe {
            let pml4 = new_table();
            let (pdpt, pd) = (new_table(), new_table());
            map_table(k(&pml4), k(&pdpt), PagingLevel::Pdpt, 0).unwrap();
            map_table(k(&pml4), k(&pd), PagingLevel::PageDirectory, 0).unwrap();
            let fake_large = 0x4000_0000 + KERNEL_PHYS_OFFSET; // never dereferenced
            let rx = Rights::READ;
            assert_eq!(
                map_frame(k(&pml4), fake_large, FrameSize::Large, 0x10_0000, rx, true),
                Err(Error::AlignmentError)
            );
            map_frame(k(&pml4), fake_large, FrameSize::Large, 0x20_0000, rx, true).unwrap();
            assert_eq!(translate(k(&pml4), 0x20_1234), Some((0x4000_1234, false)));
            assert_eq!(pd.0[1] & (HUGE | NO_EXECUTE), HUGE);
            // No page table can be mapped where a large frame is.
            let pt = new_table();
            assert_eq!(map_table(k(&pml4), k(&pt), PagingLevel::PageTable, 0x20_0000), Err(Error::DeleteFirst));
            unmap_frame(k(&pml4), fake_large, FrameSize::Large, 0x20_0000);
            assert_eq!(translate(k(&pml4), 0x20_1234), None);
        }
    }
}
