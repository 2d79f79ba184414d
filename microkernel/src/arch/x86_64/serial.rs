//! The kernel console: COM1 (I/O port 0x3f8), 115200 8N1, polled.
//!
//! The kernel only ever writes to the serial port, with interrupts disabled (the kernel is not
//! preemptible), so a spin lock suffices. The userspace console driver (a later server) owns the
//! port's interrupt and input side through IOPort and IRQ capabilities.

use core::fmt;
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

const COM1: u16 = 0x3f8;

static PORT: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Initialise COM1. Safe to call more than once; output before this call is dropped.
pub fn init() {
    // SAFETY: COM1's eight registers at 0x3f8..0x400 belong to the kernel console and nothing
    // else in the kernel touches them.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else { return };
    let config = Config { baud_rate: uart_16550::BaudRate::Baud115200, ..Config::DEFAULT };
    // A machine without COM1 simply has no console.
    if uart.init(config).is_ok() {
        *PORT.lock() = Some(uart);
    }
}

struct Writer<'a>(&'a mut Uart16550<PioBackend>);

impl fmt::Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.split_inclusive('\n') {
            match chunk.strip_suffix('\n') {
                Some(line) => {
                    self.0.send_bytes_exact(line.as_bytes());
                    self.0.send_bytes_exact(b"\r\n");
                }
                None => self.0.send_bytes_exact(chunk.as_bytes()),
            }
        }
        Ok(())
    }
}

/// Write formatted text to the console.
pub fn write_fmt(args: fmt::Arguments<'_>) {
    let mut port = PORT.lock();
    if let Some(uart) = port.as_mut() {
        let _ = fmt::Write::write_fmt(&mut Writer(uart), args);
    }
}

/// Write formatted text if nobody is writing now; false (nothing written) if the console is
/// held by the code this one interrupted (an NMI may arrive in the middle of any write).
pub fn try_write_fmt(args: fmt::Arguments<'_>) -> bool {
    let Some(mut port) = PORT.try_lock() else { return false };
    if let Some(uart) = port.as_mut() {
        let _ = fmt::Write::write_fmt(&mut Writer(uart), args);
    }
    true
}

/// Write to the console even if the lock is held (for the exception and panic paths, which may
/// have interrupted a writer). Output may interleave; that is better than a silent hang.
pub fn write_fmt_emergency(args: fmt::Arguments<'_>) {
    // SAFETY: only reached on the fatal paths, which never return to the interrupted writer.
    unsafe { PORT.force_unlock() };
    write_fmt(args);
}
