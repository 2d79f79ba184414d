//! Building the root task: the one thread the kernel starts, holding every initial capability
//! (seL4's "create initial thread").
//!
//! Its objects — root CNode, TCB, PML4 and the paging structures, frames for its ELF image,
//! stack, IPC buffer and boot-information page — are carved out of the kernel's boot memory pool
//! and named by *root* capabilities (no untyped parent). All remaining free memory becomes
//! untyped capabilities in the root CNode, and the device memory (the 32-bit hole above RAM, and
//! the physical space above RAM and 4 GiB up to the CPU's address width: `mm/device.rs`) device
//! untyped capabilities, described in the boot-information page; the initrd is mapped read-only
//! and its frames handed over too. Memory that finds no room in the boot information's list
//! (`MAX_UNTYPEDS`) is reported at boot, not handed out.

use crate::object::kptr::kptr;
use ozone_abi::bootinfo::{self, BootInfo, SlotRange, UntypedDesc, slot};
use ozone_abi::object::MAX_UNTYPED_BITS;
use ozone_abi::{ROOT_STACK_SIZE, ROOT_STACK_TOP};

use crate::api::Kernel;
use crate::boot::PhysRange;
use crate::mm::frames;
use crate::object::kmem::{SlotRef, SlotSpan};
use crate::object::tcb::{TCB_CSPACE, TCB_IPC_BUFFER, TCB_VSPACE, Tcb, ThreadState};
use crate::object::{Asid, Cap, FrameSize, KERNEL_PHYS_OFFSET, Mapping, PagingLevel, Rights, mdb, vspace};
use crate::user::elf::{ElfImage, LoadTarget, SegmentFlags};

/// log2 of the root CNode's slot count.
pub const ROOT_CNODE_RADIX: u8 = 13;
/// Where a position-independent root task is loaded.
pub const IMAGE_BIAS: u64 = 0x40_0000;
/// The root task's IPC buffer and boot-information page.
pub const IPC_BUFFER_VADDR: u64 = 0x20_0000;
pub const BOOTINFO_VADDR: u64 = 0x20_1000;
/// Where the initrd is mapped in the root task.
pub const INITRD_VADDR: u64 = 0x10_0000_0000;

#[derive(Debug)]
pub enum RootError {
    OutOfMemory,
    OutOfSlots,
    Elf(crate::user::elf::ElfError),
    Map(ozone_abi::Error),
}

impl core::fmt::Display for RootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RootError::OutOfMemory => write!(f, "out of boot memory"),
            RootError::OutOfSlots => write!(f, "the root CNode is full"),
            RootError::Elf(e) => write!(f, "invalid ELF: {e}"),
            RootError::Map(e) => write!(f, "cannot map: {e:?}"),
        }
    }
}

fn kaddr(phys: u64) -> u64 {
    phys + KERNEL_PHYS_OFFSET
}

fn frame() -> Result<u64, RootError> {
    frames::alloc_zeroed().map(|f| kaddr(f.start_address().as_u64())).ok_or(RootError::OutOfMemory)
}

struct Builder {
    cnode: SlotSpan,
    next_slot: u64,
    pml4: u64,
    /// The root task's address space's ASID.
    asid: Asid,
}

impl Builder {
    fn slot(&self, index: u64) -> SlotRef {
        self.cnode.slot(index).expect("fixed slots are inside the root CNode")
    }

    fn put(&mut self, cap: Cap) -> Result<u64, RootError> {
        let index = self.next_slot;
        let s = self.cnode.slot(index).ok_or(RootError::OutOfSlots)?;
        // SAFETY: each boot object is named by exactly one root capability made here.
        unsafe { mdb::insert_root_cap(s, cap) };
        self.next_slot += 1;
        Ok(index)
    }

    /// Make sure the PDPT, page directory and page table covering `vaddr` exist.
    fn ensure_tables(&mut self, vaddr: u64) -> Result<(), RootError> {
        for level in [PagingLevel::Pdpt, PagingLevel::PageDirectory, PagingLevel::PageTable] {
            let table = frame()?;
            // SAFETY: the root task's PML4 and a fresh frame of the kernel pool, both live.
            match unsafe { vspace::map_table(self.pml4, table, level, vaddr) } {
                Ok(()) => {
                    self.put(Cap::Paging { ptr: table, level, mapped: Some(Mapping { asid: self.asid, vaddr }) })?;
                }
                Err(ozone_abi::Error::DeleteFirst) => {
                    // Already there: give the spare frame back.
                    // SAFETY: never mapped or named.
                    unsafe {
                        frames::free(x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(
                            table - KERNEL_PHYS_OFFSET,
                        )))
                    };
                }
                Err(e) => return Err(RootError::Map(e)),
            }
        }
        Ok(())
    }

    /// Map the frame at kernel address `f` at `vaddr` and name it by a new capability.
    fn map(&mut self, f: u64, vaddr: u64, write: bool, exec: bool, device: bool) -> Result<u64, RootError> {
        let rights = if write { Rights::READ.union(Rights::WRITE) } else { Rights::READ };
        // Make the paging structures only when the walk finds them missing.
        // SAFETY: the root task's PML4 is live; `f` is a frame of the kernel pool.
        match unsafe { vspace::map_frame(self.pml4, f, FrameSize::Small, vaddr, rights, exec) } {
            Ok(()) => {}
            Err(ozone_abi::Error::FailedLookup) => {
                self.ensure_tables(vaddr)?;
                // SAFETY: as above.
                unsafe { vspace::map_frame(self.pml4, f, FrameSize::Small, vaddr, rights, exec) }
                    .map_err(RootError::Map)?;
            }
            Err(e) => return Err(RootError::Map(e)),
        }
        let cap_rights = if device { Rights::READ } else { Rights::ALL };
        self.put(Cap::Frame {
            ptr: f,
            size: FrameSize::Small,
            rights: cap_rights,
            device,
            mapped: Some(Mapping { asid: self.asid, vaddr }),
        })
    }
}

impl LoadTarget for Builder {
    type Error = RootError;

    fn map(&mut self, vaddr: u64, size: u64, flags: SegmentFlags) -> Result<(), RootError> {
        let mut v = vaddr;
        while v < vaddr + size {
            let f = frame()?;
            Builder::map(self, f, v, flags.write, flags.exec, false)?;
            v += 4096;
        }
        Ok(())
    }

    fn write(&mut self, vaddr: u64, bytes: &[u8]) -> Result<(), RootError> {
        let mut done = 0;
        while done < bytes.len() {
            let va = vaddr + done as u64;
            // SAFETY: the root task's PML4 is live.
            let (phys, _) =
                unsafe { vspace::translate(self.pml4, va) }.ok_or(RootError::Map(ozone_abi::Error::FailedLookup))?;
            let n = ((4096 - (va & 0xfff)) as usize).min(bytes.len() - done);
            // SAFETY: `phys` is inside a frame this builder just mapped, reached via the direct map.
            unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), kaddr(phys) as *mut u8, n) };
            done += n;
        }
        Ok(())
    }
}

/// Build the root task from `image`, give it `untyped` memory and the initrd, make it the
/// current thread. Returns its TCB.
pub fn create(
    k: &mut Kernel,
    image: &ElfImage<'_>,
    untyped: &[PhysRange],
    device: &[PhysRange],
    initrd: PhysRange,
    instance_id: u64,
) -> Result<*mut Tcb, RootError> {
    // The root CNode: 2^12 slots of 64 bytes = 64 contiguous frames.
    let cnode_order = ROOT_CNODE_RADIX + ozone_abi::object::CNODE_SLOT_BITS - 12;
    let cnode_ptr = frames::alloc_block_zeroed(cnode_order).ok_or(RootError::OutOfMemory)?;
    let cnode_ptr = kaddr(cnode_ptr.start_address().as_u64());
    let cnode_cap = Cap::CNode { ptr: cnode_ptr, radix: ROOT_CNODE_RADIX, guard_size: 64 - ROOT_CNODE_RADIX, guard: 0 };
    let span = SlotSpan::of_cnode(&cnode_cap).ok_or(RootError::OutOfSlots)?;
    let pml4 = frame()?;
    // SAFETY: the kernel's PML4 lives for ever; `pml4` is a fresh frame of the kernel pool.
    unsafe { vspace::init_pml4(pml4, Some(&*(k.kernel_pml4 as *const vspace::Table))) };
    // The first ASID: the table is empty at boot.
    let asid = k.asids.assign(pml4).ok_or(RootError::Map(ozone_abi::Error::DeleteFirst))?;
    let mut b = Builder { cnode: span, next_slot: slot::FIRST_FREE, pml4, asid };

    let tcb_ptr = frame()?;
    // SAFETY: a fresh frame, named by nothing else.
    unsafe { (kptr::<Tcb>(tcb_ptr)).write(Tcb::initial()) };
    // SAFETY: these are the first and only capabilities to each of the boot objects below.
    unsafe {
        mdb::insert_root_cap(b.slot(slot::CNODE), cnode_cap);
        mdb::insert_root_cap(
            b.slot(slot::VSPACE),
            Cap::Paging { ptr: pml4, level: PagingLevel::Pml4, mapped: Some(Mapping { asid, vaddr: 0 }) },
        );
        mdb::insert_root_cap(b.slot(slot::TCB), Cap::Tcb { ptr: tcb_ptr });
        mdb::insert_root_cap(b.slot(slot::IRQ_CONTROL), Cap::IrqControl);
        mdb::insert_root_cap(b.slot(slot::IO_PORT_CONTROL), Cap::IoPortControl);
        mdb::insert_root_cap(b.slot(slot::TELEMETRY), Cap::Telemetry);
    }

    // The image.
    let bias = if image.is_position_independent() { IMAGE_BIAS } else { 0 };
    // The paging structures of the image, the stack, the IPC buffer and the boot information
    // first, so that the slot range of the image's frames holds frames only (the boot information
    // promises that), and the tables have a range of their own.
    let paging_start = b.next_slot;
    let (lo, hi) = image.vaddr_range();
    let regions = [
        (lo.wrapping_add(bias), hi.wrapping_add(bias)),
        (ROOT_STACK_TOP - ROOT_STACK_SIZE, ROOT_STACK_TOP),
        (IPC_BUFFER_VADDR, IPC_BUFFER_VADDR + 4096),
        (BOOTINFO_VADDR, BOOTINFO_VADDR + 4096),
    ];
    for (start, end) in regions {
        let mut va = start & !((1 << 21) - 1);
        while va < end {
            b.ensure_tables(va)?;
            va += 1 << 21;
        }
    }
    let paging_end = b.next_slot;
    let frames_start = b.next_slot;
    let entry = image.load(bias, &mut b).map_err(|e| match e {
        crate::user::elf::LoadError::Elf(e) => RootError::Elf(e),
        crate::user::elf::LoadError::Target(e) => e,
    })?;
    // The stack.
    let mut v = ROOT_STACK_TOP - ROOT_STACK_SIZE;
    while v < ROOT_STACK_TOP {
        let f = frame()?;
        b.map(f, v, true, false, false)?;
        v += 4096;
    }
    let frames_end = b.next_slot;

    // IPC buffer and boot information, in their fixed slots (copied there from the image range).
    let ipc = frame()?;
    let ipc_slot = b.map(ipc, IPC_BUFFER_VADDR, true, false, false)?;
    let info_frame = frame()?;
    let info_slot = b.map(info_frame, BOOTINFO_VADDR, false, false, false)?;
    mdb::cte_move(b.slot(ipc_slot).cap(), b.slot(ipc_slot), b.slot(slot::IPC_BUFFER));
    mdb::cte_move(b.slot(info_slot).cap(), b.slot(info_slot), b.slot(slot::BOOT_INFO_FRAME));

    // The initrd, read-only. Its paging structures are made first, so that the slot range of
    // its frames holds frames only (the boot information promises that).
    let initrd_pages = (initrd.end - (initrd.start & !0xfff)).div_ceil(4096);
    let mut va = INITRD_VADDR;
    while va < INITRD_VADDR + initrd_pages * 4096 {
        b.ensure_tables(va)?;
        va = (va + (1 << 21)) & !((1 << 21) - 1);
    }
    let initrd_start = b.next_slot;
    let mut p = initrd.start & !0xfff;
    let mut va = INITRD_VADDR;
    while p < initrd.end {
        b.map(kaddr(p), va, false, false, true)?;
        p += 4096;
        va += 4096;
    }
    let initrd_end = b.next_slot;

    // Untyped memory: everything else.
    let untyped_start = b.next_slot;
    let mut list = [UntypedDesc::default(); bootinfo::MAX_UNTYPEDS];
    let mut n = 0;
    let mut lost_ram = 0u64;
    for r in untyped {
        let mut err = None;
        crate::mm::memmap::split_aligned(r.start, r.end, 12, MAX_UNTYPED_BITS, &mut |base, bits| {
            if err.is_some() {
                return;
            }
            if n == bootinfo::MAX_UNTYPEDS {
                lost_ram += 1 << bits;
                return;
            }
            // The memory's contents are unknown (a boot loader may have used it): all of it is
            // dirty, so each Retype zeroes (preemptibly) the part it hands out, and objects are
            // still born in zeroed memory.
            let size = 1u64 << bits;
            let cap = Cap::Untyped {
                ptr: kaddr(base),
                size_bits: bits,
                free_index: 0,
                dirty_from: 0,
                dirty_top: size,
                device: false,
            };
            match b.put(cap) {
                Ok(_) => {
                    list[n] = UntypedDesc { paddr: base, size_bits: bits, is_device: 0, _pad: [0; 6] };
                    n += 1;
                }
                Err(e) => err = Some(e),
            }
        });
        if let Some(e) = err {
            return Err(e);
        }
    }
    // Device memory: the physical ranges above RAM and below the I/O APIC in the 32-bit space
    // (PCI windows, MMCONFIG, framebuffers) and above RAM and 4 GiB (64-bit BARs), as device
    // untyped: retypeable into frames and untyped only, never zeroed or read by the kernel. A
    // capability names its memory by kernel address (physical + the direct map's base), which
    // the kernel never dereferences for device memory.
    let mut err = None;
    let mut lost = 0u64;
    for r in device {
        crate::mm::memmap::split_aligned(r.start, r.end, 12, MAX_UNTYPED_BITS, &mut |base, bits| {
            if err.is_some() {
                return;
            }
            if n == bootinfo::MAX_UNTYPEDS {
                lost += 1 << bits;
                return;
            }
            match b.put(Cap::Untyped {
                ptr: kaddr(base),
                size_bits: bits,
                free_index: 0,
                dirty_from: 0,
                dirty_top: 0,
                device: true,
            }) {
                Ok(_) => {
                    list[n] = UntypedDesc { paddr: base, size_bits: bits, is_device: 1, _pad: [0; 6] };
                    n += 1;
                }
                Err(e) => err = Some(e),
            }
        });
    }
    if let Some(e) = err {
        return Err(e);
    }
    if lost_ram > 0 {
        crate::warn!("root task: {} KiB of RAM past the boot information's untyped list", lost_ram >> 10);
    }
    if lost > 0 {
        crate::warn!("root task: {} MiB of device memory past the boot information's untyped list", lost >> 20);
    }
    let untyped_end = b.next_slot;

    // The root task's own TCB: its CSpace, VSpace and IPC buffer.
    // SAFETY: the root TCB was initialised above and lives for good.
    let tslots = unsafe { Tcb::slots_of(kptr::<Tcb>(tcb_ptr)) };
    for (from, to) in [(slot::CNODE, TCB_CSPACE), (slot::VSPACE, TCB_VSPACE), (slot::IPC_BUFFER, TCB_IPC_BUFFER)] {
        let src = b.slot(from);
        let cap = match src.cap() {
            Cap::Frame { ptr, size, rights, device, .. } => Cap::Frame { ptr, size, rights, device, mapped: None },
            c => c,
        };
        mdb::cte_insert(cap, src, tslots.slot(to as u64).expect("TCB slots"));
    }
    // SAFETY: the TCB was initialised above and nothing else refers to it yet.
    let t = unsafe { &mut *kptr::<Tcb>(tcb_ptr) };
    t.ipc_buffer_vaddr = IPC_BUFFER_VADDR;
    t.priority = 255;
    t.mcp = 255;
    // The root task may print through the kernel's debug channel (and pass that on).
    t.debug_output = true;
    let (cs, ss) = crate::arch::x86_64::syscall::user_selectors();
    t.regs.rip = entry;
    t.regs.rsp = ROOT_STACK_TOP;
    t.regs.rdi = BOOTINFO_VADDR;
    t.regs.rflags = 0x202;
    t.regs.cs = cs;
    t.regs.ss = ss;
    t.regs.vector = u64::MAX;
    t.state = ThreadState::Running;

    // The boot information page.
    let info = BootInfo {
        magic: bootinfo::OZONE_BOOTINFO_MAGIC,
        cnode_radix: u64::from(ROOT_CNODE_RADIX),
        empty: SlotRange { start: untyped_end, end: 1 << ROOT_CNODE_RADIX },
        user_image_frames: SlotRange { start: frames_start, end: frames_end },
        user_image_paging: SlotRange { start: paging_start, end: paging_end },
        untyped: SlotRange { start: untyped_start, end: untyped_end },
        initrd_frames: SlotRange { start: initrd_start, end: initrd_end },
        initrd_vaddr: INITRD_VADDR,
        initrd_size: initrd.end - initrd.start,
        ipc_buffer: IPC_BUFFER_VADDR,
        instance_id,
        untyped_list: list,
    };
    // SAFETY: the boot-information frame was allocated above and is only mapped read-only in
    // the root task.
    unsafe { (info_frame as *mut BootInfo).write(info) };
    crate::info!(
        "root task: {} untyped caps ({} MiB of RAM, {} MiB of device memory), {} image frames, {} initrd frames, {} slots used",
        n,
        list[..n].iter().filter(|u| u.is_device == 0).map(|u| 1u64 << u.size_bits).sum::<u64>() >> 20,
        list[..n].iter().filter(|u| u.is_device != 0).map(|u| 1u64 << u.size_bits).sum::<u64>() >> 20,
        frames_end - frames_start,
        initrd_end - initrd_start,
        untyped_end
    );
    Ok(kptr::<Tcb>(tcb_ptr))
}
