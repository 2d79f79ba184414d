//! A virtio-blk device, interrupt-driven: a read or write is queued, the program waits on its
//! notification for [`DEVICE_SIGNAL`], acknowledges the device
//! (which lowers its level-triggered line) and then the kernel's handler (which unmasks it), and
//! takes the completion. A flush waits by polling the queue (`virtio-drivers` has no
//! non-blocking flush); it is one request.

use ozone_agent_sdk::caps::{self, IrqHandler};
use ozone_agent_sdk::signals;
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;

use crate::device::{self, Claimed, DEVICE_SIGNAL, DeviceError, ManagedConfig};
use crate::hal::OzoneHal;

/// Pages of DMA arena a block driver needs (its queue and the bounce buffers of one request).
pub const ARENA_PAGES: usize = 64;

/// The most bytes one request moves.
pub const MAX_REQUEST: usize = 32 * 4096;

/// A block device error.
#[derive(Debug)]
pub enum BlkError {
    Setup(DeviceError),
    Virtio(virtio_drivers::Error),
    /// A buffer that is not a whole number of sectors, or too big.
    BadLength,
}

impl From<virtio_drivers::Error> for BlkError {
    fn from(e: virtio_drivers::Error) -> BlkError {
        BlkError::Virtio(e)
    }
}

/// The program's virtio-blk device.
pub struct Blk {
    dev: VirtIOBlk<OzoneHal, PciTransport>,
    irq: Option<IrqHandler>,
    pub claimed: Claimed,
}

impl Blk {
    /// Claim the program's virtio-blk device and start it.
    pub fn open() -> Result<Blk, BlkError> {
        let claimed = device::claim("virtio-blk", ARENA_PAGES).map_err(BlkError::Setup)?;
        let (mut root, df) = ManagedConfig::root(&claimed);
        let transport = PciTransport::new::<OzoneHal, _>(&mut root, df)
            .map_err(|_| BlkError::Virtio(virtio_drivers::Error::InvalidParam))?;
        let dev = VirtIOBlk::new(transport)?;
        Ok(Blk { dev, irq: claimed.irq, claimed })
    }

    /// Sectors of 512 bytes.
    pub fn capacity(&self) -> u64 {
        self.dev.capacity()
    }

    /// Read `buf.len()` bytes (whole sectors) from `sector`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        check(buf.len())?;
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: `req`, `buf` and `resp` stay alive and untouched until `complete_read_blocks`.
        let token = unsafe { self.dev.read_blocks_nb(sector as usize, &mut req, buf, &mut resp) }?;
        self.wait(token);
        // SAFETY: the same buffers as above, for the token the queue gave.
        unsafe { self.dev.complete_read_blocks(token, &req, buf, &mut resp) }?;
        Ok(())
    }

    /// Write `buf` (whole sectors) at `sector`; durable after [`flush`](Self::flush).
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), BlkError> {
        check(buf.len())?;
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: `req`, `buf` and `resp` stay alive and untouched until `complete_write_blocks`.
        let token = unsafe { self.dev.write_blocks_nb(sector as usize, &mut req, buf, &mut resp) }?;
        self.wait(token);
        // SAFETY: the same buffers as above, for the token the queue gave.
        unsafe { self.dev.complete_write_blocks(token, &req, buf, &mut resp) }?;
        Ok(())
    }

    /// Make every completed write durable.
    pub fn flush(&mut self) -> Result<(), BlkError> {
        let flushed = self.dev.flush();
        // The flush's completion raised the interrupt too: clear it as a waited request would.
        self.settle();
        Ok(flushed?)
    }

    /// Wait for `token` to complete: on the interrupt, or (no interrupt line) by yielding.
    ///
    /// An interrupt may come before the wait sleeps, or after the request it signals was taken,
    /// and reach a server's receive loop instead of this wait (which then drops it), leaving the
    /// line masked until acknowledged. So before each sleep the device's interrupt status is read
    /// (clearing it) and the line acknowledged, and the queue looked at once more; after every
    /// completion both are done again. Otherwise a wait could sleep for ever on a masked line.
    fn wait(&mut self, token: u16) {
        let n = caps::notification();
        loop {
            if self.dev.peek_used() == Some(token) {
                break;
            }
            match (self.irq, n) {
                (Some(irq), Some(n)) => {
                    // The last completion's interrupt may have come after that request's
                    // `settle` and been taken by a server's receive, leaving the line masked and
                    // the status set: nothing would wake this wait. So clear the status and
                    // unmask the line before sleeping, and look at the queue once more (a
                    // completion from now on raises the interrupt anew).
                    self.dev.ack_interrupt();
                    let _ = irq.ack();
                    if self.dev.peek_used() == Some(token) {
                        break;
                    }
                    if signals::take(DEVICE_SIGNAL) == 0 {
                        match n.wait() {
                            Ok(bits) => signals::stash(bits & !DEVICE_SIGNAL),
                            Err(_) => ozone_agent_sdk::sys::yield_now(),
                        }
                    }
                }
                _ => ozone_agent_sdk::sys::yield_now(),
            }
        }
        self.settle();
    }

    /// Clear the device's interrupt status and acknowledge its line, dropping any stashed
    /// signal: after a completion, whoever took (or will take) its interrupt.
    fn settle(&mut self) {
        if let Some(irq) = self.irq {
            // The status is set after the used ring is written: clearing it now cannot hide a
            // later request's completion, which the next wait finds in the used ring first.
            self.dev.ack_interrupt();
            let _ = irq.ack();
            signals::take(DEVICE_SIGNAL);
        }
    }
}

fn check(len: usize) -> Result<(), BlkError> {
    if len == 0 || !len.is_multiple_of(SECTOR_SIZE) || len > MAX_REQUEST {
        return Err(BlkError::BadLength);
    }
    Ok(())
}
