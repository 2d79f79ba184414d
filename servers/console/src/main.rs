//! The serial console server: owns COM1 and runs the system shell on it.
//!
//! Studio starts it as the program with the `serial` device and the `admin` privilege
//! (`initrd/system.toml`), which gives it (see `ozone_agent_sdk::protocol::start::slot`):
//!
//! | slot | capability |
//! |---|---|
//! | `SERVICE` | the endpoint of the `console` interface (clients `write` here) |
//! | `NOTIFICATION` | a notification bound to its thread; IRQ 4 signals bit 4 of it |
//! | `SERIAL_PORTS` | the I/O ports 0x3f8..=0x3ff |
//! | `SERIAL_IRQ` | the IRQ handler of IRQ 4, already routed to the notification |
//!
//! It is single-threaded: one loop receives on the endpoint, and because the notification is
//! bound, an interrupt arrives there too, as an empty message whose badge has bit 4 set. A
//! request is a client's `write` (queued, answered at once); an interrupt is input, handled by
//! the [`Session`] — which may run a shell command that calls Studio. While it does, clients wait
//! on the endpoint; the kernel has no `SaveCaller`, so the server never holds a client's reply
//! while it serves anything else.
//!
//! Servers the shell calls (Studio, the shaper) must never `write` to the console themselves:
//! the console would be waiting for their reply while they wait for its receive. They print
//! through the kernel's debug channel instead, as every program's `println!` does.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

mod backend;
mod ports;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::console::{self as proto, MAX_WRITE, method};
use ozone_agent_sdk::protocol::start::slot;
use ozone_agent_sdk::rpc::{self, Incoming, Request, Response, Server};
use ozone_agent_sdk::{entry, println};
use ozone_console::session::Session;
use ozone_console::uart::Uart;

entry!(run);

/// The IRQ line of COM1; its signal is this bit of the notification word.
const SERIAL_IRQ_LINE: u64 = 4;
/// Bytes of output the console queues before a writer waits.
const TX_RING: usize = 16 << 10;

fn run() -> u64 {
    let mut uart = Uart::new(ports::CapPorts::com1(slot::SERIAL_PORTS), TX_RING);
    if !uart.present() {
        println!("[console] no UART answers at COM1 (or no serial capability): the shell cannot run");
        return 1;
    }
    uart.init();
    let mut session = Session::new(uart);
    let mut backend = backend::System::new();
    // For `cargo xtask bench` (boot_to_shell): the time stamp counter as the shell comes up —
    // under `-icount`, guest instructions since reset.
    // SAFETY: RDTSC only reads the time stamp counter, which ring 3 may do here.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    println!("[console] shell ready at tsc {tsc}");
    session.start();
    let mut server = Server::new(slot::SERVICE, proto::INTERFACE);
    server.serve_raw(|incoming| match incoming {
        Incoming::Request(r) => Some(request(&mut session, r)),
        Incoming::Other(m) => {
            if m.badge & (1 << SERIAL_IRQ_LINE) != 0 {
                session.interrupt(&mut backend, &mut ports::ack_serial_irq);
            }
            // A signal has no caller, so this reply goes nowhere; a client's message with a
            // label that is no method learns that it is none.
            Some(Err(ServiceError::UnknownMethod))
        }
    })
}

/// A client's request.
fn request<P: ozone_console::uart::Ports>(session: &mut Session<P>, r: &Request) -> Response {
    match r.method {
        method::WRITE => {
            let w: proto::Write = r.decode()?;
            if w.bytes.len() > MAX_WRITE {
                return Err(ServiceError::InvalidArgument);
            }
            session.write(&w.bytes);
            rpc::ok(&())
        }
        _ => Err(ServiceError::UnknownMethod),
    }
}
