//! The console's hardware access: the UART's registers through the kernel's I/O-port capability
//! (`IO_PORT_IN8` / `IO_PORT_OUT8` invocations), and the acknowledgement of IRQ 4.

use ozone_abi::invocation as inv;
use ozone_agent_sdk::kernel as k;
use ozone_agent_sdk::protocol::start::slot;
use ozone_console::uart::Ports;

/// COM1's first register.
const COM1: u64 = 0x3f8;

/// A UART's registers through an I/O-port capability covering them.
pub struct CapPorts {
    cap: u64,
    base: u64,
}

impl CapPorts {
    /// COM1 through the capability in slot `cap`.
    pub fn com1(cap: u64) -> CapPorts {
        CapPorts { cap, base: COM1 }
    }
}

impl Ports for CapPorts {
    /// A failed read (no capability) reads as 0: no data ready, transmitter busy — the driver
    /// then neither spins on input nor sends (and, if it must wait, gives up and drops).
    fn read(&mut self, reg: u16) -> u8 {
        k::invoke(self.cap, inv::IO_PORT_IN8, &[self.base + u64::from(reg)], &[]).map_or(0, |r| r.msg.mrs[0] as u8)
    }

    fn write(&mut self, reg: u16, value: u8) {
        let _ = k::invoke(self.cap, inv::IO_PORT_OUT8, &[self.base + u64::from(reg), u64::from(value)], &[]);
    }
}

/// Unmask IRQ 4 again after its interrupt was handled.
pub fn ack_serial_irq() {
    let _ = k::invoke(slot::SERIAL_IRQ, inv::IRQ_HANDLER_ACK, &[], &[]);
}
