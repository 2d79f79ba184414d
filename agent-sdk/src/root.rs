//! Helpers for a root task (or any program holding untyped memory and its own CNode): the boot
//! information, a simple slot allocator, retyping, and starting threads that share the caller's
//! CSpace and VSpace.

use core::sync::atomic::{AtomicU64, Ordering};

use ozone_abi::bootinfo::{BootInfo, OZONE_BOOTINFO_MAGIC, slot};
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};

use crate::caps::Object;
use crate::kernel::{self as k, UserRegisters};

/// Where the kernel maps the root task's boot-information page (its address also arrives in
/// `rdi` at the first instruction).
pub const BOOTINFO_VADDR: u64 = 0x20_1000;
/// IPC buffers for new threads are mapped from here up (inside the page table the kernel made
/// for the root task's own IPC buffer).
const FIRST_THREAD_BUFFER: u64 = 0x20_2000;
const LAST_THREAD_BUFFER: u64 = 0x3f_f000;

/// The boot information, if it is there.
pub fn boot_info() -> Option<&'static BootInfo> {
    // SAFETY: the kernel maps the page read-only at this address in the root task.
    let info = unsafe { &*(BOOTINFO_VADDR as *const BootInfo) };
    (info.magic == OZONE_BOOTINFO_MAGIC).then_some(info)
}

/// Capability-space bookkeeping of a root task.
pub struct Root {
    next_slot: AtomicU64,
    end_slot: AtomicU64,
    untyped: AtomicU64,
    next_buffer: AtomicU64,
}

impl Root {
    pub const fn new() -> Root {
        Root {
            next_slot: AtomicU64::new(0),
            end_slot: AtomicU64::new(0),
            untyped: AtomicU64::new(0),
            next_buffer: AtomicU64::new(FIRST_THREAD_BUFFER),
        }
    }

    /// Set up from the boot information: own IPC buffer findable, the largest untyped chosen.
    /// Returns that untyped's size in bits.
    pub fn init(&self, info: &BootInfo) -> Result<u8, Error> {
        k::set_own_ipc_buffer(slot::TCB, info.ipc_buffer)?;
        let (mut best, mut best_bits) = (0, 0);
        for i in 0..(info.untyped.end - info.untyped.start) as usize {
            let u = info.untyped_list[i];
            if u.is_device == 0 && u.size_bits > best_bits {
                best = info.untyped.start + i as u64;
                best_bits = u.size_bits;
            }
        }
        self.next_slot.store(info.empty.start, Ordering::Relaxed);
        self.end_slot.store(info.empty.end, Ordering::Relaxed);
        self.untyped.store(best, Ordering::Relaxed);
        Ok(best_bits)
    }

    /// The untyped capability objects are carved from.
    pub fn untyped(&self) -> u64 {
        self.untyped.load(Ordering::Relaxed)
    }

    /// A free slot of the root CNode.
    pub fn slot(&self) -> Result<u64, Error> {
        let s = self.next_slot.fetch_add(1, Ordering::Relaxed);
        if s >= self.end_slot.load(Ordering::Relaxed) {
            return Err(Error::NotEnoughMemory);
        }
        Ok(s)
    }

    /// The next slot [`slot`](Self::slot) would return.
    pub fn peek_slot(&self) -> u64 {
        self.next_slot.load(Ordering::Relaxed)
    }

    /// A new object of type `ty` in a fresh slot.
    pub fn retype(&self, ty: ObjectType, size_bits: u64) -> Result<u64, Error> {
        let s = self.slot()?;
        k::untyped_retype(self.untyped(), ty, size_bits, slot::CNODE, 0, 0, s, 1)?;
        Ok(s)
    }

    /// A new object of type `T` in a fresh slot, as its typed handle.
    pub fn make<T: Object>(&self, size_bits: u64) -> Result<T, Error> {
        self.retype(T::TYPE, size_bits).map(T::from_slot)
    }

    /// Start `entry(arg)` in a new thread sharing this CSpace and VSpace, at `prio`, on the stack
    /// whose top is `stack_top`, with the endpoint in slot `fault_ep` (0: none) as fault handler.
    /// Returns the new thread's TCB slot.
    pub fn spawn(
        &self,
        entry: extern "C" fn(u64) -> !,
        arg: u64,
        prio: u64,
        fault_ep: u64,
        stack_top: u64,
    ) -> Result<u64, Error> {
        let tcb = self.retype(ObjectType::Tcb, 0)?;
        let frame = self.retype(ObjectType::Frame4K, 0)?;
        let buf = self.next_buffer.fetch_add(0x1000, Ordering::Relaxed);
        if buf > LAST_THREAD_BUFFER {
            return Err(Error::NotEnoughMemory);
        }
        k::frame_map(frame, slot::VSPACE, buf, rights::READ | rights::WRITE, false)?;
        k::tcb_configure(tcb, fault_ep, slot::CNODE, slot::VSPACE, buf, frame)?;
        k::tcb_set_priority(tcb, slot::TCB, prio)?;
        // SAFETY: the buffer was just mapped here, writable.
        unsafe { (*(buf as *mut ozone_abi::IpcBuffer)).user_data = buf };
        k::tcb_set_tls_base(tcb, buf)?;
        let regs =
            UserRegisters { rip: entry as usize as u64, rsp: stack_top, rflags: 0x202, rdi: arg, ..Default::default() };
        k::tcb_write_registers(tcb, true, &regs)?;
        Ok(tcb)
    }
}

impl Root {
    /// Map the frame in slot `frame` at `va` in the address space `pml4`, first making (from
    /// this root's untyped) whichever paging structures are missing there.
    pub fn map_frame_with_tables(&self, frame: u64, pml4: u64, va: u64, r: u64, exec: bool) -> Result<(), Error> {
        crate::process::map_frame_with_tables(self, frame, pml4, va, r, exec)
    }

    /// Map `pages` fresh 4 KiB frames at [`HEAP_BASE`] (making the paging structures they need)
    /// and give them to the heap. For a root task; other programs get their heap from Studio.
    pub fn map_heap(&self, pages: u64) -> Result<(), Error> {
        for va in (HEAP_BASE..HEAP_BASE + pages * 4096).step_by(4096) {
            let f = self.retype(ObjectType::Frame4K, 0)?;
            self.map_frame_with_tables(f, slot::VSPACE, va, rights::READ | rights::WRITE, false)?;
        }
        // SAFETY: just mapped, writable, and used for nothing else.
        unsafe { crate::heap::init(HEAP_BASE, pages * 4096) };
        Ok(())
    }
}

/// Where [`Root::map_heap`] puts the heap (and where the root task maps Studio's).
pub const HEAP_BASE: u64 = 0x100_0000_0000;
/// The size of the heap the root task maps for Studio.
pub const STUDIO_HEAP: u64 = 4 << 20;

/// A root task's objects come from its chosen untyped into its own CNode. Its slots are handed
/// out in order and never reused (a root task makes a bounded set of objects at start).
impl crate::process::Alloc for Root {
    fn cnode(&self) -> u64 {
        slot::CNODE
    }
    fn slot(&self) -> Result<u64, Error> {
        Root::slot(self)
    }
    fn free_slot(&self, _slot: u64) {}
    fn retype(&self, ty: ObjectType, size_bits: u64) -> Result<u64, Error> {
        Root::retype(self, ty, size_bits)
    }
}

impl Default for Root {
    fn default() -> Self {
        Root::new()
    }
}

/// Stacks for threads a program starts: `N` stacks of `SIZE` bytes in its own memory.
#[repr(C, align(16))]
pub struct Stacks<const N: usize, const SIZE: usize> {
    stacks: core::cell::UnsafeCell<[[u8; SIZE]; N]>,
    next: AtomicU64,
}

// SAFETY: each stack is handed out once (round robin) and used by one thread at a time.
unsafe impl<const N: usize, const SIZE: usize> Sync for Stacks<N, SIZE> {}

impl<const N: usize, const SIZE: usize> Stacks<N, SIZE> {
    pub const fn new() -> Self {
        Stacks { stacks: core::cell::UnsafeCell::new([[0; SIZE]; N]), next: AtomicU64::new(0) }
    }

    /// The top of the next stack (they are reused round robin: no more than `N` live threads).
    pub fn next_top(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed) as usize % N;
        let base = self.stacks.get() as u64 + (n * SIZE) as u64;
        (base + SIZE as u64) & !15
    }
}

impl<const N: usize, const SIZE: usize> Default for Stacks<N, SIZE> {
    fn default() -> Self {
        Self::new()
    }
}
