//! `virtio-drivers`' [`Hal`] over the program's DMA arena and BAR window ([`crate::device`] sets
//! them up). Request buffers live anywhere in the program's memory, whose physical addresses
//! the program does not know and which need not be contiguous, so `share` bounces them through
//! arena pages and `unshare` copies the device's answer back.
//!
//! The `Hal` methods cannot fail, so a full arena or an address outside the device's BARs is a
//! panic: the driver program stops and Studio restarts it (its `restart` policy); the arena is
//! sized for the drivers' queues and one request in flight at a time.

use core::ptr::NonNull;

use spin::Mutex;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::arena::{Arena, PAGE};
use crate::window::Window;

/// The arena and the window, once the device is claimed.
pub(crate) static STATE: Mutex<Option<(Arena, Window)>> = Mutex::new(None);

/// The `Hal` of drivers on OZONE-OS.
pub struct OzoneHal;

fn pages_for(len: usize) -> usize {
    len.div_ceil(PAGE).max(1)
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned, contiguous arena pages that nothing else uses
// until `dma_dealloc`; `mmio_phys_to_virt` answers only addresses inside the device's mapped BARs;
// `share`/`unshare` give the device arena pages of their own for each buffer.
unsafe impl Hal for OzoneHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let mut s = STATE.lock();
        let (arena, _) = s.as_mut().expect("DMA before the device was claimed");
        let i = arena.alloc(pages).expect("the DMA arena is full");
        let virt = arena.virt_of(i);
        // SAFETY: `pages` arena pages from `virt`, mapped read-write and now ours alone.
        unsafe { core::ptr::write_bytes(virt as *mut u8, 0, pages * PAGE) };
        (arena.phys_of(i) as PhysAddr, NonNull::new(virt as *mut u8).expect("the arena is not at 0"))
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        let mut s = STATE.lock();
        let Some((arena, _)) = s.as_mut() else { return -1 };
        match arena.index_of_phys(paddr) {
            Some(i) if arena.free(i, pages) => 0,
            _ => -1,
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        let s = STATE.lock();
        let (_, window) = s.as_ref().expect("MMIO before the device was claimed");
        let virt = window.virt(paddr, size as u64).expect("an address outside the device's BARs");
        NonNull::new(virt as *mut u8).expect("the window is not at 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let len = buffer.len();
        let mut s = STATE.lock();
        let (arena, _) = s.as_mut().expect("DMA before the device was claimed");
        let i = arena.alloc(pages_for(len)).expect("the DMA arena is full");
        let virt = arena.virt_of(i) as *mut u8;
        // SAFETY: the bounce pages are ours alone (just allocated, mapped read-write, at least
        // `len` bytes); the caller guarantees `buffer` is valid for `len` bytes.
        unsafe {
            core::ptr::write_bytes(virt, 0, pages_for(len) * PAGE);
            if direction != BufferDirection::DeviceToDriver {
                core::ptr::copy_nonoverlapping(buffer.as_ptr() as *const u8, virt, len);
            }
        }
        arena.phys_of(i) as PhysAddr
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let len = buffer.len();
        let mut s = STATE.lock();
        let Some((arena, _)) = s.as_mut() else { return };
        let Some(i) = arena.index_of_phys(paddr) else { return };
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: `paddr` is the bounce buffer `share` gave for this buffer (`len` bytes of
            // mapped arena pages); the caller guarantees `buffer` is valid and not in use.
            unsafe { core::ptr::copy_nonoverlapping(arena.virt_of(i) as *const u8, buffer.as_ptr() as *mut u8, len) };
        }
        arena.free(i, pages_for(len));
    }
}
