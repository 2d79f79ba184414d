//! Network interface cards as the stack sees them: the [`Nic`] trait a driver implements, the
//! adapter that makes one a smoltcp [`Device`], and [`Link`], two in-memory NICs joined back to
//! back (optionally losing and reordering frames, from a seed) for host tests.
//!
//! The adapter bounds the work of one poll: at most [`RX_BUDGET`] frames are taken from the NIC
//! per poll, so a peer flooding the wire cannot keep the server in one poll for ever, and a frame
//! longer than [`MAX_FRAME`] is dropped and counted before the stack sees it.
//!
//! **Loopback.** Frames the stack sends to its own MAC address, and its ARP requests for its own
//! address (sender and target IP the same, from its own MAC: how smoltcp resolves itself), never
//! reach the wire: they go back to the stack's receive side, at most [`LOOPBACK_FRAMES`] waiting
//! (more are dropped and counted, as a full transmit queue would). So two programs on one
//! instance reach each other through the server at its own address, as on any host.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// The longest Ethernet frame handled (1500 bytes of payload and the 14-byte header; no FCS).
pub const MAX_FRAME: usize = 1514;

/// The most frames one poll takes from the NIC.
pub const RX_BUDGET: usize = 64;

/// The most frames waiting on the loopback path.
pub const LOOPBACK_FRAMES: usize = 64;

/// Why a NIC did not send a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicError {
    /// No room in the transmit queue now (the frame is dropped; TCP sends it again).
    Full,
    /// The frame is longer than the device takes.
    TooLong,
    /// The device failed.
    Device,
}

/// A network interface card: what a driver gives the stack.
pub trait Nic {
    /// Its MAC address.
    fn mac(&self) -> [u8; 6];
    /// Send one Ethernet frame (header included, no FCS).
    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError>;
    /// Copy the next received frame into `buf` and give its length; `None` if none is waiting.
    /// A frame longer than `buf` is the driver's to drop (or to give back truncated: the stack
    /// drops a frame whose length is `buf.len()` or more as possibly truncated).
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize>;
}

/// Counters of the adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NicStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames dropped before the stack: too long (or truncated by the driver).
    pub rx_dropped: u64,
    /// Frames the NIC refused to send, or the loopback path had no room for.
    pub tx_errors: u64,
    /// Frames sent to the stack itself (loopback), counted in neither `tx_frames` nor
    /// `rx_frames`.
    pub looped: u64,
}

/// A [`Nic`] as a smoltcp [`Device`].
pub struct NicDevice<N> {
    pub nic: N,
    /// Room for one received frame, one byte longer than [`MAX_FRAME`] to see a frame too long.
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Frames the stack sent itself, waiting to be received.
    looped: VecDeque<Vec<u8>>,
    budget: usize,
    pub stats: NicStats,
}

impl<N: Nic> NicDevice<N> {
    pub fn new(nic: N) -> NicDevice<N> {
        NicDevice {
            nic,
            rx: vec![0; MAX_FRAME + 1],
            tx: vec![0; MAX_FRAME],
            looped: VecDeque::new(),
            budget: RX_BUDGET,
            stats: NicStats::default(),
        }
    }

    /// A new poll: the receive budget starts again.
    pub fn refill(&mut self) {
        self.budget = RX_BUDGET;
    }

    /// The next frame within the budget, dropping frames too long: its length in `self.rx`.
    fn next_frame(&mut self) -> Option<usize> {
        while self.budget > 0 {
            self.budget -= 1;
            if let Some(f) = self.looped.pop_front() {
                // Built by the stack within its MTU: it fits.
                let n = f.len().min(MAX_FRAME);
                self.rx[..n].copy_from_slice(&f[..n]);
                return Some(n);
            }
            let n = self.nic.receive(&mut self.rx)?;
            if n == 0 || n > MAX_FRAME {
                self.stats.rx_dropped += 1;
                continue;
            }
            self.stats.rx_frames += 1;
            return Some(n);
        }
        None
    }
}

/// A received frame.
pub struct Rx<'a> {
    frame: &'a [u8],
}

/// The right to send one frame.
pub struct Tx<'a, N> {
    nic: &'a mut N,
    buf: &'a mut [u8],
    looped: &'a mut VecDeque<Vec<u8>>,
    stats: &'a mut NicStats,
}

/// Whether the stack, at `mac`, sent `frame` to itself: to its own MAC address, or an ARP request
/// from it for the address it asks from (smoltcp resolving its own address).
pub fn to_itself(frame: &[u8], mac: [u8; 6]) -> bool {
    if frame.len() < 14 {
        return false;
    }
    if frame[0..6] == mac {
        return true;
    }
    // Ethernet type ARP; hardware Ethernet (1), protocol IPv4 (0x0800), lengths 6 and 4, request
    // (1); sender MAC ours; sender IP (28..32) the target IP (38..42).
    let arp = &frame[14..];
    frame[12..14] == [0x08, 0x06]
        && arp.len() >= 28
        && arp[0..8] == [0, 1, 8, 0, 6, 4, 0, 1]
        && arp[8..14] == mac
        && arp[14..18] == arp[24..28]
}

impl phy::RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl<N: Nic> phy::TxToken for Tx<'_, N> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // The stack never builds a frame longer than the MTU it was told; should it ask for
        // more, it builds it in a scratch buffer of that size and the frame is not sent.
        if len > self.buf.len() {
            let mut scratch = vec![0u8; len];
            let r = f(&mut scratch);
            self.stats.tx_errors += 1;
            return r;
        }
        let r = f(&mut self.buf[..len]);
        let frame = &self.buf[..len];
        if to_itself(frame, self.nic.mac()) {
            if self.looped.len() < LOOPBACK_FRAMES {
                self.looped.push_back(frame.to_vec());
                self.stats.looped += 1;
            } else {
                self.stats.tx_errors += 1;
            }
            return r;
        }
        match self.nic.transmit(frame) {
            Ok(()) => self.stats.tx_frames += 1,
            Err(_) => self.stats.tx_errors += 1,
        }
        r
    }
}

impl<N: Nic> Device for NicDevice<N> {
    type RxToken<'a>
        = Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'a, N>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let n = self.next_frame()?;
        let NicDevice { nic, rx, tx, looped, stats, .. } = self;
        Some((Rx { frame: &rx[..n] }, Tx { nic, buf: &mut tx[..], looped, stats }))
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let NicDevice { nic, tx, looped, stats, .. } = self;
        Some(Tx { nic, buf: &mut tx[..], looped, stats })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(RX_BUDGET);
        caps
    }
}

/// How a [`Link`] mistreats frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Impairment {
    /// Frames lost, per thousand.
    pub loss_per_mille: u16,
    /// Frames delivered after the next one, per thousand.
    pub reorder_per_mille: u16,
    /// The seed of the choices (the same seed, the same fate for the same frames).
    pub seed: u64,
}

/// The frames in flight each way, and the dice.
struct Wire {
    queues: [VecDeque<Vec<u8>>; 2],
    impairment: Impairment,
    rng: u64,
    /// Frames each side sent, lost.
    pub sent: [u64; 2],
    pub lost: [u64; 2],
}

/// Frames queued per direction before the wire drops them (as a full NIC queue would).
pub const LINK_QUEUE: usize = 256;

impl Wire {
    fn roll(&mut self) -> u16 {
        (crate::splitmix(&mut self.rng) % 1000) as u16
    }
}

/// Two in-memory NICs joined back to back: what one sends, the other receives.
pub struct Link;

/// One end of a [`Link`].
pub struct LinkEnd {
    wire: Rc<RefCell<Wire>>,
    side: usize,
    mac: [u8; 6],
}

impl Link {
    /// A perfect link: its two ends, with MACs `02:00:00:00:00:01` and `…:02`.
    pub fn pair() -> (LinkEnd, LinkEnd) {
        Link::impaired(Impairment::default())
    }

    /// A link that loses and reorders frames as `impairment` says.
    pub fn impaired(impairment: Impairment) -> (LinkEnd, LinkEnd) {
        let wire = Rc::new(RefCell::new(Wire {
            queues: [VecDeque::new(), VecDeque::new()],
            impairment,
            rng: impairment.seed ^ 0x6c69_6e6b,
            sent: [0; 2],
            lost: [0; 2],
        }));
        let a = LinkEnd { wire: wire.clone(), side: 0, mac: [2, 0, 0, 0, 0, 1] };
        let b = LinkEnd { wire, side: 1, mac: [2, 0, 0, 0, 0, 2] };
        (a, b)
    }
}

impl LinkEnd {
    /// Put a frame on the wire towards this end as if the peer had sent it (for fuzzers).
    pub fn inject(&self, frame: &[u8]) {
        let mut w = self.wire.borrow_mut();
        let q = &mut w.queues[self.side];
        if q.len() < LINK_QUEUE {
            q.push_back(frame.to_vec());
        }
    }

    /// Frames waiting for this end.
    pub fn pending(&self) -> usize {
        self.wire.borrow().queues[self.side].len()
    }

    /// Frames this end sent, and how many of them the wire lost.
    pub fn sent_lost(&self) -> (u64, u64) {
        let w = self.wire.borrow();
        (w.sent[self.side], w.lost[self.side])
    }
}

impl Nic for LinkEnd {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn transmit(&mut self, frame: &[u8]) -> Result<(), NicError> {
        if frame.len() > MAX_FRAME {
            return Err(NicError::TooLong);
        }
        let mut w = self.wire.borrow_mut();
        let other = 1 - self.side;
        w.sent[self.side] += 1;
        let imp = w.impairment;
        if imp.loss_per_mille > 0 && w.roll() < imp.loss_per_mille {
            w.lost[self.side] += 1;
            return Ok(());
        }
        let reorder = imp.reorder_per_mille > 0 && w.roll() < imp.reorder_per_mille;
        let q = &mut w.queues[other];
        if q.len() >= LINK_QUEUE {
            return Err(NicError::Full);
        }
        match q.pop_back() {
            Some(last) if reorder => {
                q.push_back(frame.to_vec());
                q.push_back(last);
            }
            Some(last) => {
                q.push_back(last);
                q.push_back(frame.to_vec());
            }
            None => q.push_back(frame.to_vec()),
        }
        Ok(())
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        let frame = self.wire.borrow_mut().queues[self.side].pop_front()?;
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        // A frame longer than the buffer comes back as the buffer's length: the adapter drops it.
        Some(if frame.len() > buf.len() { buf.len() } else { n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_carries_frames_both_ways() {
        let (mut a, mut b) = Link::pair();
        a.transmit(b"to b").unwrap();
        b.transmit(b"to a").unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(b.receive(&mut buf), Some(4));
        assert_eq!(&buf[..4], b"to b");
        assert_eq!(a.receive(&mut buf), Some(4));
        assert_eq!(&buf[..4], b"to a");
        assert_eq!(a.receive(&mut buf), None);
        assert_eq!(a.transmit(&[0; MAX_FRAME + 1]), Err(NicError::TooLong));
    }

    #[test]
    fn an_impaired_link_loses_and_reorders_by_its_seed() {
        let run = |seed| {
            let (mut a, mut b) = Link::impaired(Impairment { loss_per_mille: 200, reorder_per_mille: 200, seed });
            for i in 0..100u8 {
                a.transmit(&[i]).unwrap();
            }
            let mut got = Vec::new();
            let mut buf = [0u8; 4];
            while let Some(n) = b.receive(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            got
        };
        let x = run(7);
        assert_eq!(x, run(7), "the same seed, the same fate");
        assert!(x.len() < 100 && x.len() > 50, "about a fifth lost: {}", x.len());
        assert!(x.windows(2).any(|w| w[0] > w[1]), "some reordered");
        assert_ne!(x, run(8));
    }

    #[test]
    fn the_adapter_drops_long_frames_and_bounds_a_poll() {
        let (_a, b) = Link::pair();
        let mut dev = NicDevice::new(b);
        dev.nic.inject(&[0u8; MAX_FRAME + 100]);
        for _ in 0..RX_BUDGET + 10 {
            dev.nic.inject(&[1u8; 60]);
        }
        let mut n = 0;
        while dev.receive(Instant::from_millis(0)).is_some() {
            n += 1;
        }
        assert_eq!(n, RX_BUDGET - 1, "the long frame used one of the budget");
        assert_eq!(dev.stats.rx_dropped, 1);
        dev.refill();
        assert!(dev.receive(Instant::from_millis(0)).is_some());
    }
}
