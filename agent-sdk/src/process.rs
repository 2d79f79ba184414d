//! Starting a program from its ELF image in an address space and CSpace of its own — what the
//! root task does for Studio, and Studio for every server and agent.
//!
//! The loader (`ozone-loader`, the same code the kernel uses for the root task) validates the
//! image; each page of the program is a frame retyped from the caller's untyped memory and mapped
//! into the new address space, while a second capability to the same frame is mapped for a moment
//! into the caller's own scratch window so the caller can fill it. The program's stack and IPC
//! buffer come the same way; its IPC buffer records its own address for the SDK.

use ozone_abi::bootinfo::slot;
use ozone_abi::invocation as inv;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, ROOT_STACK_SIZE, ROOT_STACK_TOP, rights};
use ozone_loader::elf::{ElfError, ElfImage, LoadError, LoadTarget, SegmentFlags};

use crate::kernel::{self as k, UserRegisters};
use crate::root::Root;

/// Where the caller maps the child's frames while it fills them.
const SCRATCH: u64 = 0x200_0000_0000;
/// The most pages one program may have (image, stack, IPC buffer).
const MAX_PAGES: usize = 1024;
/// The child's IPC buffer.
pub const CHILD_IPC_BUFFER: u64 = 0x20_0000;

/// Why a program could not be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    Elf(ElfError),
    Kernel(Error),
    TooLarge,
}

impl From<Error> for SpawnError {
    fn from(e: Error) -> Self {
        SpawnError::Kernel(e)
    }
}

/// A started program.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Slots in the caller's CNode: the program's TCB, CNode and PML4.
    pub tcb: u64,
    pub cnode: u64,
    pub vspace: u64,
    pub entry: u64,
}

struct Loader<'a> {
    root: &'a Root,
    pml4: u64,
    /// Lowest page of the image (scratch addresses are relative to it).
    base: u64,
    /// The scratch copies mapped so far (slots), to unmap and delete afterwards.
    scratch: [u64; MAX_PAGES],
    pages: usize,
}

impl Loader<'_> {
    /// Map a new frame at `va` in the child, and a copy of it at the matching scratch address.
    fn page(&mut self, va: u64, write: bool, exec: bool) -> Result<(), SpawnError> {
        if self.pages == MAX_PAGES {
            return Err(SpawnError::TooLarge);
        }
        let f = self.root.retype(ObjectType::Frame4K, 0)?;
        let r = if write { rights::READ | rights::WRITE } else { rights::READ };
        self.root.map_frame_with_tables(f, self.pml4, va, r, exec)?;
        let copy = self.root.slot()?;
        k::cnode_copy(slot::CNODE, copy, f, rights::ALL)?;
        let sva = self.scratch_addr(va);
        self.root.map_frame_with_tables(copy, slot::VSPACE, sva, rights::READ | rights::WRITE, false)?;
        self.scratch[self.pages] = copy;
        self.pages += 1;
        Ok(())
    }

    fn scratch_addr(&self, va: u64) -> u64 {
        SCRATCH + (va.wrapping_sub(self.base) & 0xff_ffff_ffff)
    }

    /// Unmap and delete the scratch copies.
    fn finish(&mut self) {
        for &s in &self.scratch[..self.pages] {
            let _ = k::frame_unmap(s);
            let _ = k::cnode_delete(slot::CNODE, s);
        }
        self.pages = 0;
    }
}

impl LoadTarget for Loader<'_> {
    type Error = SpawnError;

    fn map(&mut self, vaddr: u64, size: u64, flags: SegmentFlags) -> Result<(), SpawnError> {
        let mut va = vaddr;
        while va < vaddr + size {
            self.page(va, flags.write, flags.exec)?;
            va += 4096;
        }
        Ok(())
    }

    fn write(&mut self, vaddr: u64, bytes: &[u8]) -> Result<(), SpawnError> {
        let dst = self.scratch_addr(vaddr) as *mut u8;
        // SAFETY: `map` mapped every page of the segment at its scratch address, writable, in
        // this address space.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }
}

/// Start the program `image` loaded at `bias` (position-independent programs; 0 for fixed
/// ones), with a CNode of `2^cnode_radix` slots (single level) and priority `prio`, and the
/// capabilities `grants` (caller slot, rights, badge) copied into its CNode slots 1, 2, ...
pub fn spawn(
    root: &Root,
    image: &[u8],
    bias: u64,
    cnode_radix: u64,
    prio: u64,
    grants: &[(u64, u64, u64)],
) -> Result<Process, SpawnError> {
    let elf = ElfImage::parse(image).map_err(SpawnError::Elf)?;
    let bias = if elf.is_position_independent() { bias } else { 0 };
    let raw = root.retype(ObjectType::CNode, cnode_radix)?;
    let cnode = root.slot()?;
    k::cnode_mutate(slot::CNODE, cnode, raw, 64 - cnode_radix)?;
    for (i, &(src, r, badge)) in grants.iter().enumerate() {
        k::invoke(cnode, inv::CNODE_MINT, &[1 + i as u64, 64, src, 64, r, badge], &[slot::CNODE])?;
    }
    let vspace = root.retype(ObjectType::Pml4, 0)?;
    let (lo, _) = elf.vaddr_range();
    let mut loader = Loader { root, pml4: vspace, base: lo + bias, scratch: [0; MAX_PAGES], pages: 0 };
    let entry = match elf.load(bias, &mut loader) {
        Ok(e) => e,
        Err(LoadError::Elf(e)) => {
            loader.finish();
            return Err(SpawnError::Elf(e));
        }
        Err(LoadError::Target(e)) => {
            loader.finish();
            return Err(e);
        }
    };
    loader.finish();
    // Stack and IPC buffer.
    loader.base = ROOT_STACK_TOP - ROOT_STACK_SIZE;
    let mut va = ROOT_STACK_TOP - ROOT_STACK_SIZE;
    while va < ROOT_STACK_TOP {
        loader.page(va, true, false)?;
        va += 4096;
    }
    loader.finish();
    loader.base = CHILD_IPC_BUFFER;
    loader.page(CHILD_IPC_BUFFER, true, false)?;
    let buffer_copy = loader.scratch[0];
    // SAFETY: the IPC buffer page is mapped at its scratch address, writable.
    unsafe { (*(SCRATCH as *mut ozone_abi::IpcBuffer)).user_data = CHILD_IPC_BUFFER };
    let buffer_frame = root.slot()?;
    k::cnode_copy(slot::CNODE, buffer_frame, buffer_copy, rights::ALL)?;
    loader.finish();
    // The thread.
    let tcb = root.retype(ObjectType::Tcb, 0)?;
    k::tcb_configure(tcb, 0, cnode, vspace, CHILD_IPC_BUFFER, buffer_frame)?;
    k::tcb_set_priority(tcb, slot::TCB, prio)?;
    k::tcb_set_tls_base(tcb, CHILD_IPC_BUFFER)?;
    let regs = UserRegisters { rip: entry, rsp: ROOT_STACK_TOP, rflags: 0x202, ..Default::default() };
    k::tcb_write_registers(tcb, true, &regs)?;
    Ok(Process { tcb, cnode, vspace, entry })
}
