//! Starting a program from its ELF image in an address space and CSpace of its own — what the
//! root task does for Studio, and Studio for every server and agent.
//!
//! The loader (`ozone-loader`, the same code the kernel uses for the root task) validates the
//! image. Every object of the new program (CNode, PML4, paging structures, frames, TCB) is made by
//! the *child* allocator ([`Alloc`]) — for Studio's programs, from the program's own untyped
//! memory, so revoking that untyped reclaims all of it. Each page is filled through a second
//! capability to the same frame, mapped for a moment into the caller's scratch window (whose
//! paging structures come from the caller's *own* allocator).
//!
//! [`build`] makes the program and leaves its thread stopped, so the caller can put capabilities
//! into its CNode first; [`start`] then sets its registers and resumes it.

use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_loader::elf::{ElfError, ElfImage, LoadError, LoadTarget, SegmentFlags};

use crate::caps::{CNode, Frame, Tcb, VSpace};
use crate::kernel::{self as k, UserRegisters};

/// Where the caller maps the child's frames while it fills them.
const SCRATCH: u64 = 0x200_0000_0000;
/// The scratch window's size: a program's image, stack or heap region is at most this large.
const SCRATCH_SIZE: u64 = 0x40_0000_0000;
/// The most pages one program region may have.
const MAX_PAGES: usize = 4096;

/// Makes kernel objects in slots of the caller's CNode.
pub trait Alloc {
    /// The caller's CNode (single level, depth 64) where new objects' capabilities go.
    fn cnode(&self) -> u64;
    /// A free slot of that CNode.
    fn slot(&self) -> Result<u64, Error>;
    /// Give back a slot whose capability was deleted.
    fn free_slot(&self, slot: u64);
    /// A new object of type `ty` (and size, for untyped and CNodes) in a fresh slot.
    fn retype(&self, ty: ObjectType, size_bits: u64) -> Result<u64, Error>;
}

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

/// Where a program's parts go in its address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Added to the image's addresses (position-independent images; ignored for fixed ones).
    pub bias: u64,
    pub stack_top: u64,
    pub stack_size: u64,
    pub ipc_buffer: u64,
    /// A heap of `heap_size` bytes (0: none) at `heap_base`.
    pub heap_base: u64,
    pub heap_size: u64,
    /// The information page (start information or boot information), mapped read-only; its
    /// address is the program's first `rdi`.
    pub info_page: u64,
}

/// A program made by [`build`].
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Slots in the caller's CNode: the program's TCB, CNode (guard set for depth 64) and PML4.
    pub tcb: u64,
    pub cnode: u64,
    pub vspace: u64,
    /// The IPC buffer's frame.
    pub ipc_frame: u64,
    pub entry: u64,
    pub layout: Layout,
}

impl Process {
    /// The program's thread, as a typed handle (the capability in [`tcb`](Self::tcb)).
    pub const fn thread(&self) -> Tcb {
        Tcb::from_slot(self.tcb)
    }
    /// The program's CNode (the capability in [`cnode`](Self::cnode)).
    pub const fn cspace(&self) -> CNode {
        CNode::from_slot(self.cnode)
    }
    /// The program's address space (the capability in [`vspace`](Self::vspace)).
    pub const fn address_space(&self) -> VSpace {
        VSpace::from_slot(self.vspace)
    }
    /// The frame of the program's IPC buffer (the capability in [`ipc_frame`](Self::ipc_frame)).
    pub const fn ipc_buffer_frame(&self) -> Frame {
        Frame::from_slot(self.ipc_frame)
    }
}

struct Loader<'a> {
    child: &'a dyn Alloc,
    own: &'a dyn Alloc,
    own_vspace: u64,
    pml4: u64,
    /// Lowest page of the region being filled (scratch addresses are relative to it).
    base: u64,
    /// The scratch copies mapped so far (slots), to unmap and delete afterwards.
    scratch: [u64; MAX_PAGES],
    pages: usize,
}

impl Loader<'_> {
    /// Map a new frame at `va` in the child, and a copy of it at the matching scratch address.
    /// Returns the frame's slot.
    fn page(&mut self, va: u64, write: bool, exec: bool) -> Result<u64, SpawnError> {
        if self.pages == MAX_PAGES || va.wrapping_sub(self.base) >= SCRATCH_SIZE {
            return Err(SpawnError::TooLarge);
        }
        let f = self.child.retype(ObjectType::Frame4K, 0)?;
        let r = if write { rights::READ | rights::WRITE } else { rights::READ };
        map_frame_with_tables(self.child, f, self.pml4, va, r, exec)?;
        let copy = self.own.slot()?;
        if let Err(e) = k::cnode_copy(self.own.cnode(), copy, f, rights::ALL) {
            self.own.free_slot(copy);
            return Err(e.into());
        }
        self.scratch[self.pages] = copy;
        self.pages += 1;
        let sva = SCRATCH + (va - self.base);
        map_frame_with_tables(self.own, copy, self.own_vspace, sva, rights::READ | rights::WRITE, false)?;
        Ok(f)
    }

    fn scratch_addr(&self, va: u64) -> u64 {
        SCRATCH + va.wrapping_sub(self.base)
    }

    /// Unmap and delete the scratch copies.
    fn finish(&mut self) {
        for &s in &self.scratch[..self.pages] {
            let _ = k::frame_unmap(s);
            let _ = k::cnode_delete(self.own.cnode(), s);
            self.own.free_slot(s);
        }
        self.pages = 0;
    }

    /// Map `len` bytes of fresh pages at `base` in the child (zeroed by the kernel).
    fn region(&mut self, base: u64, len: u64, write: bool) -> Result<(), SpawnError> {
        self.base = base;
        let mut va = base;
        while va < base + len {
            let f = self.child.retype(ObjectType::Frame4K, 0)?;
            let r = if write { rights::READ | rights::WRITE } else { rights::READ };
            map_frame_with_tables(self.child, f, self.pml4, va, r, false)?;
            va += 4096;
        }
        Ok(())
    }
}

impl Drop for Loader<'_> {
    fn drop(&mut self) {
        self.finish();
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
        // this address space, and the loader writes only inside segments.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
        Ok(())
    }
}

/// Map the frame in slot `frame` at `va` in the address space `pml4`, first making (with `a`)
/// whichever paging structures are missing there.
pub fn map_frame_with_tables(a: &dyn Alloc, frame: u64, pml4: u64, va: u64, r: u64, exec: bool) -> Result<(), Error> {
    match k::frame_map(frame, pml4, va, r, exec) {
        Err(Error::FailedLookup) => {}
        other => return other,
    }
    // Find the missing levels from the bottom up; map them top down.
    let mut pending = [0u64; 3];
    let mut n = 0;
    for ty in [ObjectType::PageTable, ObjectType::PageDirectory, ObjectType::Pdpt] {
        let t = a.retype(ty, 0)?;
        match k::paging_map(t, pml4, va) {
            Ok(()) => break,
            Err(Error::FailedLookup) => {
                pending[n] = t;
                n += 1;
            }
            Err(e) => return Err(e),
        }
    }
    for &t in pending[..n].iter().rev() {
        k::paging_map(t, pml4, va)?;
    }
    k::frame_map(frame, pml4, va, r, exec)
}

/// Make the program `image` with the layout `layout`: a CNode of `2^cnode_radix` slots (single
/// level), an address space with the image, stack, heap and IPC buffer, and the information
/// page holding `info`; a thread at priority `prio` (with `authority`, a TCB capability of the
/// caller, as the priority authority) whose fault handler is a copy of the endpoint capability in
/// slot `fault_ep` of the *caller's* CSpace (0 for none), kept in the thread's TCB: the program
/// holds no capability to it, so it cannot send anything that looks like one of its faults. The
/// thread is left stopped: see [`start`].
#[allow(clippy::too_many_arguments)]
pub fn build(
    child: &dyn Alloc,
    own: &dyn Alloc,
    own_vspace: u64,
    authority: u64,
    image: &[u8],
    mut layout: Layout,
    cnode_radix: u64,
    prio: u64,
    fault_ep: u64,
    info: &[u8],
) -> Result<Process, SpawnError> {
    let elf = ElfImage::parse(image).map_err(SpawnError::Elf)?;
    if !elf.is_position_independent() {
        layout.bias = 0;
    }
    if info.len() > 4096 {
        return Err(SpawnError::TooLarge);
    }
    let raw = child.retype(ObjectType::CNode, cnode_radix)?;
    let cnode = child.slot()?;
    k::cnode_mutate(child.cnode(), cnode, raw, 64 - cnode_radix)?;
    child.free_slot(raw);
    let vspace = child.retype(ObjectType::Pml4, 0)?;
    let (lo, _) = elf.vaddr_range();
    let mut loader =
        Loader { child, own, own_vspace, pml4: vspace, base: lo + layout.bias, scratch: [0; MAX_PAGES], pages: 0 };
    let loaded = elf.load(layout.bias, &mut loader);
    loader.finish();
    let entry = match loaded {
        Ok(e) => e,
        Err(LoadError::Elf(e)) => return Err(SpawnError::Elf(e)),
        Err(LoadError::Target(e)) => return Err(e),
    };
    loader.region(layout.stack_top - layout.stack_size, layout.stack_size, true)?;
    loader.region(layout.heap_base, layout.heap_size, true)?;
    // The IPC buffer records its own address (the SDK finds it through the TLS base).
    loader.base = layout.ipc_buffer;
    let ipc_frame = loader.page(layout.ipc_buffer, true, false)?;
    // SAFETY: the IPC buffer page is mapped at its scratch address, writable.
    unsafe { (*(SCRATCH as *mut ozone_abi::IpcBuffer)).user_data = layout.ipc_buffer };
    loader.finish();
    if layout.info_page != 0 {
        loader.base = layout.info_page;
        loader.page(layout.info_page, false, false)?;
        // SAFETY: the information page is mapped at its scratch address, writable here (read-only
        // in the child), and `info` is at most one page.
        unsafe { core::ptr::copy_nonoverlapping(info.as_ptr(), SCRATCH as *mut u8, info.len()) };
        loader.finish();
    }
    let tcb = child.retype(ObjectType::Tcb, 0)?;
    k::tcb_configure(tcb, fault_ep, cnode, vspace, layout.ipc_buffer, ipc_frame)?;
    k::tcb_set_priority(tcb, authority, prio)?;
    k::tcb_set_tls_base(tcb, layout.ipc_buffer)?;
    Ok(Process { tcb, cnode, vspace, ipc_frame, entry, layout })
}

/// Start a program made by [`build`]: its first instruction is its entry point, with the stack
/// at the layout's stack top and `rdi` = the information page.
pub fn start(p: &Process) -> Result<(), Error> {
    let regs = UserRegisters {
        rip: p.entry,
        rsp: p.layout.stack_top,
        rflags: 0x202,
        rdi: p.layout.info_page,
        ..Default::default()
    };
    k::tcb_write_registers(p.tcb, true, &regs)
}

/// Copy the capability in `src` (of the caller's CNode `src_cnode`) into slot `dest` of the CNode
/// `dest_cnode`, with `r` rights.
pub fn copy_into(dest_cnode: u64, dest: u64, src_cnode: u64, src: u64, r: u64) -> Result<(), Error> {
    k::invoke(dest_cnode, ozone_abi::invocation::CNODE_COPY, &[dest, 64, src, 64, r], &[src_cnode]).map(|_| ())
}

/// Like [`copy_into`], with a badge.
pub fn mint_into(dest_cnode: u64, dest: u64, src_cnode: u64, src: u64, r: u64, badge: u64) -> Result<(), Error> {
    k::invoke(dest_cnode, ozone_abi::invocation::CNODE_MINT, &[dest, 64, src, 64, r, badge], &[src_cnode]).map(|_| ())
}

/// Move the capability in `src` into slot `dest` of `dest_cnode`.
pub fn move_into(dest_cnode: u64, dest: u64, src_cnode: u64, src: u64) -> Result<(), Error> {
    k::invoke(dest_cnode, ozone_abi::invocation::CNODE_MOVE, &[dest, 64, src, 64], &[src_cnode]).map(|_| ())
}
