//! A virtio-net device: frames out with [`Net::transmit`], frames in with [`Net::receive`]; the
//! device's interrupt signals [`DEVICE_SIGNAL`](crate::device::DEVICE_SIGNAL) on the program's
//! notification when frames arrive, and [`Net::interrupted`] acknowledges it (device, then the
//! kernel's handler). Receive buffers are queued at start and recycled after each frame.

use ozone_agent_sdk::caps::IrqHandler;
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::pci::PciTransport;

use crate::device::{self, Claimed, DeviceError, ManagedConfig};
use crate::hal::OzoneHal;

/// Receive buffers queued on the device.
pub const QUEUE: usize = 16;
/// Bytes of one receive buffer: an Ethernet frame of 1514 bytes and the virtio header.
pub const BUFFER: usize = 2048;
/// Pages of DMA arena a network driver needs: two queues, the receive buffers' bounce pages,
/// and one frame being sent.
pub const ARENA_PAGES: usize = 64;

/// A network device error.
#[derive(Debug)]
pub enum NetError {
    Setup(DeviceError),
    Virtio(virtio_drivers::Error),
    /// A frame longer than a buffer.
    TooLong,
}

impl From<virtio_drivers::Error> for NetError {
    fn from(e: virtio_drivers::Error) -> NetError {
        NetError::Virtio(e)
    }
}

/// The program's virtio-net device.
pub struct Net {
    dev: VirtIONet<OzoneHal, PciTransport, QUEUE>,
    irq: Option<IrqHandler>,
    pub claimed: Claimed,
}

impl Net {
    /// Claim the program's virtio-net device and start it.
    pub fn open() -> Result<Net, NetError> {
        let claimed = device::claim("virtio-net", ARENA_PAGES).map_err(NetError::Setup)?;
        let (mut root, df) = ManagedConfig::root(&claimed);
        let transport = PciTransport::new::<OzoneHal, _>(&mut root, df)
            .map_err(|_| NetError::Virtio(virtio_drivers::Error::InvalidParam))?;
        let dev = VirtIONet::new(transport, BUFFER)?;
        Ok(Net { dev, irq: claimed.irq, claimed })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.dev.mac_address()
    }

    /// Send one Ethernet frame (waits until the device has taken it).
    pub fn transmit(&mut self, frame: &[u8]) -> Result<(), NetError> {
        if frame.len() > BUFFER {
            return Err(NetError::TooLong);
        }
        let mut tx = self.dev.new_tx_buffer(frame.len());
        tx.packet_mut().copy_from_slice(frame);
        Ok(self.dev.send(tx)?)
    }

    /// One received frame copied into `buf` (its length), or `None` if none is waiting. A frame
    /// longer than `buf` is dropped (and `None` answered for it).
    pub fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        let rx = self.dev.receive().ok()?;
        let packet = rx.packet();
        let n = packet.len();
        let fits = n <= buf.len();
        if fits {
            buf[..n].copy_from_slice(packet);
        }
        let _ = self.dev.recycle_rx_buffer(rx);
        fits.then_some(n)
    }

    /// After [`DEVICE_SIGNAL`](crate::device::DEVICE_SIGNAL): acknowledge the interrupt at the
    /// device and unmask its line.
    pub fn interrupted(&mut self) {
        self.dev.ack_interrupt();
        if let Some(irq) = self.irq {
            let _ = irq.ack();
        }
    }

    /// Whether the device has an interrupt line (without one, poll).
    pub fn has_interrupt(&self) -> bool {
        self.irq.is_some()
    }
}
