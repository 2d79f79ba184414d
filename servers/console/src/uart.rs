//! The 16550 UART driver: interrupt-driven input, buffered output.
//!
//! The driver reaches the chip through [`Ports`] (register reads and writes), so the same code
//! runs over the kernel's I/O-port capability in the console server and over a simulated UART in
//! the host tests.
//!
//! - **Input**: [`Uart::init`] enables the "received data available" interrupt (IER bit 0) and
//!   the PC's interrupt gate (MCR OUT2), with the receive FIFO's trigger at one byte, so every
//!   typed character raises IRQ 4. [`Uart::interrupt`] reads IIR (which also clears a
//!   "transmitter empty" condition) and drains RBR while LSR says data is ready.
//! - **Output**: [`Uart::queue`] puts bytes in the transmit [`Ring`] (`\n` becomes `\r\n`) and
//!   [`Uart::pump`] moves them to the chip: whenever LSR says the transmitter is empty (bit 5),
//!   up to [`FIFO_SIZE`] bytes go to THR. While bytes are left and the transmitter is busy, the
//!   "transmitter empty" interrupt (IER bit 1) is on, so the next interrupt continues; it is off
//!   otherwise (an idle transmitter would raise it forever).
//! - **Full ring**: the writer waits — [`Uart::queue`] drains the chip synchronously (polling LSR)
//!   until there is room. Only a transmitter that stays busy for [`STUCK_POLLS`] polls in a row
//!   (no line at all) makes it drop bytes, counted in [`Stats::dropped`]; the driver then stops
//!   waiting until the transmitter shows signs of life again.

use alloc::vec::Vec;

use crate::ring::Ring;

/// Register offsets from the UART's base port.
pub mod reg {
    /// Read: receive buffer. Write: transmit holding register.
    pub const DATA: u16 = 0;
    /// Interrupt enable.
    pub const IER: u16 = 1;
    /// Read: interrupt identification. Write: FIFO control.
    pub const IIR_FCR: u16 = 2;
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    pub const MSR: u16 = 6;
    /// Scratch: any byte, read back (used to see whether a UART is there).
    pub const SCRATCH: u16 = 7;
}

/// LSR: a received byte is waiting.
pub const LSR_DATA_READY: u8 = 0x01;
/// LSR: a received byte was lost (the FIFO was full).
pub const LSR_OVERRUN: u8 = 0x02;
/// LSR: the transmit holding register (and FIFO) is empty.
pub const LSR_THR_EMPTY: u8 = 0x20;
/// IER: interrupt on received data.
pub const IER_RX: u8 = 0x01;
/// IER: interrupt when the transmitter is empty.
pub const IER_TX: u8 = 0x02;
/// MCR: DTR, RTS, and OUT2 (on PCs OUT2 gates the UART's interrupt line).
pub const MCR_DTR_RTS_OUT2: u8 = 0x0b;
/// FCR: FIFOs on, receive trigger at 1 byte (FIFOs are not cleared: nothing typed is lost).
pub const FCR_ENABLE_TRIGGER_1: u8 = 0x01;
/// IIR bit 0: clear when an interrupt is pending.
pub const IIR_NONE_PENDING: u8 = 0x01;

/// Bytes the transmit FIFO takes once LSR says it is empty.
pub const FIFO_SIZE: usize = 16;

/// Polls of a busy transmitter after which a writer stops waiting and drops.
pub const STUCK_POLLS: u32 = 200_000;

/// The most bytes one [`Uart::receive`] takes (the rest wait for the next call).
pub const RECEIVE_BATCH: usize = 256;

/// Register access to one UART.
pub trait Ports {
    fn read(&mut self, reg: u16) -> u8;
    fn write(&mut self, reg: u16, value: u8);
}

/// What the driver has done, for `mem`-style reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub sent: u64,
    /// Bytes dropped because the transmitter stayed busy.
    pub dropped: u64,
    /// Receive overruns the chip reported (input lost before the driver read it).
    pub overruns: u64,
}

/// The driver of one 16550.
pub struct Uart<P: Ports> {
    ports: P,
    tx: Ring,
    ier: u8,
    /// The last byte queued (to turn a lone `\n` into `\r\n`).
    last: u8,
    /// The transmitter did not empty for `STUCK_POLLS` polls; writers do not wait until it does.
    stuck: bool,
    pub stats: Stats,
}

impl<P: Ports> Uart<P> {
    /// A driver over `ports` with a transmit ring of `tx_capacity` bytes. Touches no register.
    pub fn new(ports: P, tx_capacity: usize) -> Uart<P> {
        Uart { ports, tx: Ring::new(tx_capacity), ier: 0, last: 0, stuck: false, stats: Stats::default() }
    }

    /// The register access (for tests and diagnostics).
    pub fn ports_mut(&mut self) -> &mut P {
        &mut self.ports
    }

    /// Whether a UART answers (its scratch register keeps what is written).
    pub fn present(&mut self) -> bool {
        self.ports.write(reg::SCRATCH, 0x5a);
        let a = self.ports.read(reg::SCRATCH);
        self.ports.write(reg::SCRATCH, 0xa5);
        a == 0x5a && self.ports.read(reg::SCRATCH) == 0xa5
    }

    /// Program the chip for interrupt-driven input. The line settings (speed, 8N1) stay as the
    /// kernel's console set them.
    pub fn init(&mut self) {
        self.ports.write(reg::IER, 0);
        self.ports.write(reg::IIR_FCR, FCR_ENABLE_TRIGGER_1);
        self.ports.write(reg::MCR, MCR_DTR_RTS_OUT2);
        // Clear stale conditions: line status, modem status, a pending interrupt.
        let _ = self.ports.read(reg::LSR);
        let _ = self.ports.read(reg::MSR);
        let _ = self.ports.read(reg::IIR_FCR);
        self.set_ier(IER_RX);
    }

    fn set_ier(&mut self, ier: u8) {
        if ier != self.ier {
            self.ier = ier;
            self.ports.write(reg::IER, ier);
        }
    }

    /// Handle an interrupt: acknowledge the chip's condition, take input into `input`, move
    /// output on.
    pub fn interrupt(&mut self, input: &mut Vec<u8>) {
        let _ = self.ports.read(reg::IIR_FCR);
        self.receive(input);
        self.pump();
    }

    /// Take the received bytes (at most [`RECEIVE_BATCH`]) into `input`.
    pub fn receive(&mut self, input: &mut Vec<u8>) {
        for _ in 0..RECEIVE_BATCH {
            let lsr = self.ports.read(reg::LSR);
            if lsr & LSR_OVERRUN != 0 {
                self.stats.overruns += 1;
            }
            if lsr & LSR_DATA_READY == 0 {
                break;
            }
            input.push(self.ports.read(reg::DATA));
            self.stats.received += 1;
        }
    }

    /// Whether received bytes are waiting in the chip (after [`Self::receive`] stopped, or
    /// arriving while the interrupt line was masked).
    pub fn input_waiting(&mut self) -> bool {
        self.ports.read(reg::LSR) & LSR_DATA_READY != 0
    }

    /// Queue `bytes` for output, `\n` as `\r\n`; waits for room when the ring is full (see the
    /// module docs), and starts sending.
    pub fn queue(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' && self.last != b'\r' {
                self.push(b'\r');
            }
            self.push(b);
            self.last = b;
        }
        self.pump();
    }

    fn push(&mut self, b: u8) {
        if self.tx.is_full() {
            self.drain_until(|tx| !tx.is_full());
        }
        if !self.tx.push(b) {
            self.stats.dropped += 1;
        }
    }

    /// Bytes queued and not yet given to the chip.
    pub fn pending(&self) -> usize {
        self.tx.len()
    }

    /// Bytes the transmit ring can take now without waiting for the chip.
    pub fn room(&self) -> usize {
        self.tx.free()
    }

    /// The transmit ring's size.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }

    /// Bytes gone from the transmit ring so far, sent or dropped (a count that only grows). With
    /// [`Self::pending`] it places a byte queued earlier: it is still in the ring while this count
    /// is below its position.
    pub fn gone(&self) -> u64 {
        self.stats.sent + self.stats.dropped
    }

    /// Give the chip what it takes now; turn the "transmitter empty" interrupt on if bytes are
    /// left, off if not.
    pub fn pump(&mut self) {
        while !self.tx.is_empty() && self.ports.read(reg::LSR) & LSR_THR_EMPTY != 0 {
            self.stuck = false;
            self.send_fifo();
        }
        let tx_irq = if self.tx.is_empty() { 0 } else { IER_TX };
        self.set_ier((self.ier & !IER_TX) | tx_irq);
    }

    fn send_fifo(&mut self) {
        for _ in 0..FIFO_SIZE {
            let Some(b) = self.tx.pop() else { break };
            self.ports.write(reg::DATA, b);
            self.stats.sent += 1;
        }
    }

    /// Send everything queued, polling the chip (before the system powers off, say).
    pub fn flush(&mut self) {
        self.drain_until(|tx| tx.is_empty());
        self.pump();
    }

    /// Poll the transmitter and feed it until `done` holds; a transmitter busy for
    /// [`STUCK_POLLS`] polls in a row ends the wait (and later ones, until it moves again) by
    /// dropping what is queued.
    fn drain_until(&mut self, done: impl Fn(&Ring) -> bool) {
        let mut idle_polls = 0;
        while !done(&self.tx) {
            if self.ports.read(reg::LSR) & LSR_THR_EMPTY != 0 {
                self.stuck = false;
                idle_polls = 0;
                self.send_fifo();
                continue;
            }
            idle_polls += 1;
            if self.stuck || idle_polls >= STUCK_POLLS {
                self.stuck = true;
                self.stats.dropped += self.tx.len() as u64;
                self.tx.clear();
                return;
            }
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
pub mod sim {
    //! A simulated 16550 for the host tests: a receive FIFO the test fills, a transmit FIFO that
    //! empties by a set number of bytes per LSR read (0: a dead line), and the registers the
    //! driver programs.

    use super::*;
    use alloc::collections::VecDeque;

    #[derive(Default)]
    pub struct SimUart {
        pub rx: VecDeque<u8>,
        /// Bytes that went out on the line.
        pub line: Vec<u8>,
        /// Bytes in the transmit FIFO.
        pub tx_fifo: VecDeque<u8>,
        /// Transmit FIFO bytes sent per LSR read.
        pub drain_per_poll: usize,
        /// Bytes written to THR while the FIFO was full (lost): a driver bug.
        pub overflowed: usize,
        pub ier: u8,
        pub fcr: u8,
        pub mcr: u8,
        pub scratch: u8,
        pub lsr_reads: usize,
        /// Report an overrun on the next LSR read.
        pub overrun: bool,
        /// No chip: reads float high and writes go nowhere.
        pub absent: bool,
    }

    impl SimUart {
        pub fn new() -> SimUart {
            SimUart { drain_per_poll: FIFO_SIZE, ..SimUart::default() }
        }
    }

    impl Ports for SimUart {
        fn read(&mut self, r: u16) -> u8 {
            if self.absent {
                return 0xff;
            }
            match r {
                reg::DATA => self.rx.pop_front().unwrap_or(0),
                reg::IER => self.ier,
                reg::IIR_FCR => IIR_NONE_PENDING,
                reg::MCR => self.mcr,
                reg::LSR => {
                    self.lsr_reads += 1;
                    for _ in 0..self.drain_per_poll {
                        let Some(b) = self.tx_fifo.pop_front() else { break };
                        self.line.push(b);
                    }
                    let mut lsr = 0;
                    if !self.rx.is_empty() {
                        lsr |= LSR_DATA_READY;
                    }
                    if self.tx_fifo.is_empty() {
                        lsr |= LSR_THR_EMPTY;
                    }
                    if core::mem::take(&mut self.overrun) {
                        lsr |= LSR_OVERRUN;
                    }
                    lsr
                }
                reg::SCRATCH => self.scratch,
                _ => 0,
            }
        }

        fn write(&mut self, r: u16, v: u8) {
            if self.absent {
                return;
            }
            match r {
                reg::DATA if self.tx_fifo.len() < FIFO_SIZE => self.tx_fifo.push_back(v),
                reg::DATA => self.overflowed += 1,
                reg::IER => self.ier = v,
                reg::IIR_FCR => self.fcr = v,
                reg::MCR => self.mcr = v,
                reg::SCRATCH => self.scratch = v,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::SimUart;
    use super::*;

    fn uart(capacity: usize) -> Uart<SimUart> {
        let mut u = Uart::new(SimUart::new(), capacity);
        u.init();
        u
    }

    /// Everything that reached the line once the transmit FIFO has emptied.
    fn line(u: &mut Uart<SimUart>) -> Vec<u8> {
        u.flush();
        while !u.ports.tx_fifo.is_empty() {
            let _ = u.ports.read(reg::LSR);
        }
        u.ports.line.clone()
    }

    #[test]
    fn init_enables_receive_interrupts_through_out2() {
        let mut u = uart(64);
        assert!(u.present());
        assert_eq!(u.ports.ier, IER_RX);
        assert_eq!(u.ports.mcr & 0x08, 0x08, "OUT2 gates IRQ 4");
        assert_eq!(u.ports.fcr, FCR_ENABLE_TRIGGER_1);
        let mut absent = Uart::new(SimUart { absent: true, ..SimUart::new() }, 8);
        assert!(!absent.present());
    }

    #[test]
    fn an_interrupt_drains_the_receive_fifo() {
        let mut u = uart(64);
        u.ports.rx.extend(b"ps\r");
        u.ports.overrun = true;
        let mut input = Vec::new();
        u.interrupt(&mut input);
        assert_eq!(input, b"ps\r");
        assert!(!u.input_waiting());
        assert_eq!(u.stats.received, 3);
        assert_eq!(u.stats.overruns, 1);
    }

    #[test]
    fn receive_takes_a_bounded_batch() {
        let mut u = uart(64);
        u.ports.rx.extend(core::iter::repeat_n(b'x', RECEIVE_BATCH + 10));
        let mut input = Vec::new();
        u.receive(&mut input);
        assert_eq!(input.len(), RECEIVE_BATCH);
        assert!(u.input_waiting());
        u.receive(&mut input);
        assert_eq!(input.len(), RECEIVE_BATCH + 10);
    }

    #[test]
    fn output_goes_out_in_order_with_crlf() {
        let mut u = uart(64);
        u.queue(b"one\ntwo\r\nthree\n");
        assert_eq!(line(&mut u), b"one\r\ntwo\r\nthree\r\n");
        assert_eq!(u.ports.overflowed, 0);
        assert_eq!(u.stats.dropped, 0);
    }

    #[test]
    fn a_slow_line_keeps_the_transmit_interrupt_on_until_the_ring_is_empty() {
        let mut u = uart(4096);
        u.ports.drain_per_poll = 0;
        u.queue(&[b'a'; 100]);
        // The FIFO took 16 bytes; the rest waits and the "transmitter empty" interrupt is on.
        assert_eq!(u.pending(), 100 - FIFO_SIZE);
        assert_eq!(u.ports.ier, IER_RX | IER_TX);
        // The line moves again: each interrupt sends more, until the ring is empty.
        u.ports.drain_per_poll = FIFO_SIZE;
        let mut input = Vec::new();
        for _ in 0..10 {
            u.interrupt(&mut input);
        }
        assert_eq!(u.pending(), 0);
        assert_eq!(u.ports.ier, IER_RX);
        assert_eq!(line(&mut u).len(), 100);
        assert_eq!(u.ports.overflowed, 0);
    }

    #[test]
    fn a_full_ring_makes_the_writer_wait_not_lose() {
        let mut u = uart(32);
        u.ports.drain_per_poll = 1;
        let text: Vec<u8> = (0..2000u32).map(|i| b'a' + (i % 26) as u8).collect();
        u.queue(&text);
        assert_eq!(line(&mut u), text);
        assert_eq!(u.stats.dropped, 0);
        assert_eq!(u.ports.overflowed, 0);
    }

    #[test]
    fn a_dead_line_drops_and_counts_and_does_not_hang_again() {
        let mut u = uart(32);
        u.ports.drain_per_poll = 0;
        u.queue(&[b'x'; 100]);
        assert!(u.stats.dropped > 0);
        assert_eq!(u.stats.dropped + u.stats.sent + u.pending() as u64, 100);
        // The second write does not wait STUCK_POLLS again.
        let polls = u.ports.lsr_reads;
        u.queue(&[b'y'; 100]);
        assert!(u.ports.lsr_reads - polls < 1000, "waited again: {} polls", u.ports.lsr_reads - polls);
        // The line comes back: output flows again.
        u.ports.drain_per_poll = FIFO_SIZE;
        let sent = u.stats.sent;
        u.queue(b"back\n");
        u.flush();
        assert!(u.stats.sent > sent);
    }
}
