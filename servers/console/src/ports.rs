//! The console's hardware access: the UART's registers through the `serial` device's I/O-port
//! capability ([`IoPort`]), and the acknowledgement of its interrupt ([`IrqHandler`]).

use ozone_agent_sdk::caps::{IoPort, IrqHandler};
use ozone_console::uart::Ports;

/// COM1's first register.
const COM1: u16 = 0x3f8;

/// A UART's registers through an I/O-port capability covering them.
pub struct CapPorts {
    ports: IoPort,
    base: u16,
}

impl CapPorts {
    /// COM1 through `ports` (a capability covering its eight registers).
    pub fn com1(ports: IoPort) -> CapPorts {
        CapPorts { ports, base: COM1 }
    }
}

impl Ports for CapPorts {
    /// A failed read (no capability) reads as 0: no data ready, transmitter busy — the driver
    /// then neither spins on input nor sends (and, if it must wait, gives up and drops).
    fn read(&mut self, reg: u16) -> u8 {
        self.ports.in8(self.base.wrapping_add(reg)).unwrap_or(0)
    }

    /// A failed write (no capability) changes nothing: the reads above then report the UART
    /// absent or busy, which is what the driver acts on.
    fn write(&mut self, reg: u16, value: u8) {
        let _ = self.ports.out8(self.base.wrapping_add(reg), value);
    }
}

/// Unmask the serial line's interrupt (`irq`) again after it was handled. A failure (no handler
/// capability) leaves the line masked: the console then serves its clients without input.
pub fn ack_serial_irq(irq: IrqHandler) {
    let _ = irq.ack();
}
