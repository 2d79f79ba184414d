//! The methods of paging structures and frames: Map and Unmap of a page table, page directory
//! or PDPT into an address space; Map, Unmap and GetAddress of a frame. The page-table edits
//! themselves are `vspace.rs`'s.
//!
//! Each method is decoded from the invoking thread's message into a plan ([`PagingPlan`],
//! [`FramePlan`]) with every argument checked, then performed. What decode checks, in order (the
//! first failure is the error):
//!
//! * Paging Map (MR0: virtual address; cap0: a PML4): cap0 is a PML4 with a live ASID — else
//!   `InvalidCapability`; the table is not mapped already and is not a PML4 — else
//!   `IllegalOperation`. Perform: `vspace::map_table`'s checks (alignment, user range, a parent
//!   table present, the entry free).
//! * Paging Unmap: nothing for a PML4 or an unmapped table; else the capability must be the last
//!   one to the table — else `DeleteFirst` (copies share one mapping, seL4's rule).
//! * Frame Map (MR0: virtual address, MR1: rights wanted, MR2: attributes; cap0: a PML4): cap0
//!   as above; the frame is not mapped already — else `DeleteFirst`. The mapping gets the
//!   capability's rights intersected with the wanted ones. Perform: `vspace::map_frame`'s checks.
//! * Frame Unmap, GetAddress: no arguments.

use ozone_abi::Error;
use ozone_abi::invocation as inv;

use super::kmem::SlotRef;
use super::{Asid, Cap, KERNEL_PHYS_OFFSET, Mapping, PagingLevel, Rights, mdb, vspace};
use crate::api::Kernel;
use crate::api::invoke::{Message, Refused, UNKNOWN_METHOD, refuse};

/// The address space a PML4 capability argument names: its PML4 and ASID. `InvalidCapability`
/// for anything else (a PML4 capability always has a live ASID; checked all the same).
#[inline(always)]
pub(crate) fn vspace_root(k: &Kernel, cap: &Cap) -> Result<(u64, Asid), Refused> {
    const NOT_A_VSPACE: Refused = refuse(Error::InvalidCapability, "the address-space argument is not a live PML4");
    let Cap::Paging { ptr, level: PagingLevel::Pml4, mapped: Some(m) } = *cap else {
        return Err(NOT_A_VSPACE);
    };
    match k.asids.lookup(m.asid) {
        Some(pml4) if pml4 == ptr => Ok((ptr, m.asid)),
        _ => Err(NOT_A_VSPACE),
    }
}

/// A decoded paging-structure method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingPlan {
    Map {
        pml4: u64,
        asid: Asid,
        vaddr: u64,
    },
    Unmap {
        mapping: Mapping,
    },
    /// Unmap of a PML4 or of a table that is not mapped.
    Nothing,
}

fn decode_paging(k: &Kernel, m: Message, slot: SlotRef, cap: Cap, label: u64) -> Result<PagingPlan, Refused> {
    let Cap::Paging { level, mapped, .. } = cap else { return Err(Error::InvalidCapability.into()) };
    match label {
        inv::PAGING_MAP => {
            let vaddr = m.mr(0)?;
            let (_, root) = m.cap(0)?;
            let (pml4, asid) = vspace_root(k, &root)?;
            if level == PagingLevel::Pml4 {
                return Err(refuse(Error::IllegalOperation, "a PML4 is mapped into nothing"));
            }
            if mapped.is_some() {
                return Err(refuse(Error::IllegalOperation, "the table is mapped already"));
            }
            Ok(PagingPlan::Map { pml4, asid, vaddr })
        }
        inv::PAGING_UNMAP => {
            // A PML4 is mapped into nothing (its `mapped` is its ASID, which stays).
            let Some(mapping) = mapped.filter(|_| level != PagingLevel::Pml4) else { return Ok(PagingPlan::Nothing) };
            // Copies share the mapping: only the last capability may take it away (seL4's rule),
            // so two capabilities to one table are never both free to map it (see `vspace`).
            if !mdb::is_final_cap(slot) {
                return Err(refuse(Error::DeleteFirst, "another capability to the table shares its mapping"));
            }
            Ok(PagingPlan::Unmap { mapping })
        }
        _ => Err(UNKNOWN_METHOD),
    }
}

fn perform_paging(k: &mut Kernel, slot: SlotRef, cap: Cap, plan: PagingPlan) -> Result<(), Refused> {
    let Cap::Paging { ptr, level, .. } = cap else { return Err(Error::InvalidCapability.into()) };
    match plan {
        PagingPlan::Map { pml4, asid, vaddr } => {
            // SAFETY: the PML4 was decoded from a capability with a live ASID, and the table is
            // named by the invoked capability.
            unsafe { vspace::map_table(pml4, ptr, level, vaddr) }?;
            slot.set_cap(Cap::Paging { ptr, level, mapped: Some(Mapping { asid, vaddr }) });
        }
        PagingPlan::Unmap { mapping } => {
            // The address space may be gone (its PML4 deleted): then there is no entry to clear.
            if let Some(pml4) = k.asids.lookup(mapping.asid) {
                // SAFETY: the ASID table names only live PML4s.
                unsafe { vspace::unmap_table(pml4, ptr, level, mapping.vaddr) };
                k.platform.flush_tlb(pml4, 0);
            }
            // What hung below the table must not come back with it (see `vspace`).
            // SAFETY: the table is named by the invoked capability.
            unsafe { vspace::clear_table(ptr) };
            slot.set_cap(Cap::Paging { ptr, level, mapped: None });
        }
        PagingPlan::Nothing => {}
    }
    Ok(())
}

/// A paging-structure invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke_paging(k: &mut Kernel, m: Message, slot: SlotRef, cap: Cap, label: u64) -> Result<(), Refused> {
    let plan = decode_paging(k, m, slot, cap, label)?;
    perform_paging(k, slot, cap, plan)
}

/// A decoded frame method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePlan {
    Map { pml4: u64, asid: Asid, vaddr: u64, rights: Rights, executable: bool },
    Unmap,
    GetAddress,
}

fn decode_frame(k: &Kernel, m: Message, cap: Cap, label: u64) -> Result<FramePlan, Refused> {
    let Cap::Frame { rights, mapped, .. } = cap else { return Err(Error::InvalidCapability.into()) };
    match label {
        inv::FRAME_MAP => {
            let vaddr = m.mr(0)?;
            let want = Rights::from_bits(m.mr(1)?);
            let attrs = m.mr(2)?;
            let (_, root) = m.cap(0)?;
            let (pml4, asid) = vspace_root(k, &root)?;
            if mapped.is_some() {
                return Err(refuse(Error::DeleteFirst, "the frame is mapped already"));
            }
            let executable = attrs & inv::MAP_EXECUTABLE != 0;
            Ok(FramePlan::Map { pml4, asid, vaddr, rights: rights.intersect(want), executable })
        }
        inv::FRAME_UNMAP => Ok(FramePlan::Unmap),
        inv::FRAME_GET_ADDRESS => Ok(FramePlan::GetAddress),
        _ => Err(UNKNOWN_METHOD),
    }
}

fn perform_frame(k: &mut Kernel, m: Message, slot: SlotRef, cap: Cap, plan: FramePlan) -> Result<(), Refused> {
    let Cap::Frame { ptr, size, rights, device, mapped } = cap else { return Err(Error::InvalidCapability.into()) };
    match plan {
        FramePlan::Map { pml4, asid, vaddr, rights: granted, executable } => {
            // Device memory (the machine's device ranges: not the initrd's read-only frames, also
            // marked device) is mapped uncacheable.
            let uncached = device && k.platform.device_memory(ptr.wrapping_sub(KERNEL_PHYS_OFFSET));
            // SAFETY: the PML4 was decoded from a capability with a live ASID, and the frame is
            // named by the invoked capability.
            unsafe { vspace::map_frame_with(pml4, ptr, size, vaddr, granted, executable, uncached) }?;
            slot.set_cap(Cap::Frame { ptr, size, rights, device, mapped: Some(Mapping { asid, vaddr }) });
        }
        FramePlan::Unmap => {
            if let Some(mapping) = mapped {
                // The address space may be gone (its PML4 deleted): then there is nothing to clear.
                if let Some(pml4) = k.asids.lookup(mapping.asid) {
                    // SAFETY: the ASID table names only live PML4s.
                    unsafe { vspace::unmap_frame(pml4, ptr, size, mapping.vaddr) };
                    k.platform.flush_tlb(pml4, mapping.vaddr);
                }
                slot.set_cap(Cap::Frame { ptr, size, rights, device, mapped: None });
            }
        }
        FramePlan::GetAddress => m.reply(&[ptr.wrapping_sub(KERNEL_PHYS_OFFSET)]),
    }
    Ok(())
}

/// A frame invocation (the dispatcher is `api/invoke.rs`).
pub(crate) fn invoke_frame(k: &mut Kernel, m: Message, slot: SlotRef, cap: Cap, label: u64) -> Result<(), Refused> {
    let plan = decode_frame(k, m, cap, label)?;
    perform_frame(k, m, slot, cap, plan)
}
