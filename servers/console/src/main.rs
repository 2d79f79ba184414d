//! The serial console server: owns COM1 and runs the system shell on it.
//!
//! Studio starts it as the program with the `serial` device and the `admin` privilege
//! (`initrd/system.toml`), which gives it (see `ozone_agent_sdk::protocol::start::slot`):
//!
//! | slot | capability |
//! |---|---|
//! | `SERVICE` | the endpoint of the `console` interface (clients `write` here) |
//! | `NOTIFICATION` | a notification bound to its thread; IRQ 4 signals [`SERIAL_SIGNAL`] on it |
//! | `SERIAL_PORTS` | the I/O ports 0x3f8..=0x3ff |
//! | `SERIAL_IRQ` | the IRQ handler of IRQ 4, already routed to the notification |
//!
//! It names them by their typed handles (`caps::service()`, `caps::serial_ports()`,
//! `caps::serial_irq()`).
//!
//! It is single-threaded: one loop receives on the endpoint, and because the notification is
//! bound, an interrupt arrives there too, as an empty message whose badge has [`SERIAL_SIGNAL`] set
//! (a bit above every program id, so no client's message passes for an interrupt). A
//! request is a program's line (`LINE`, or text by `WRITE`): attributed with the program's name
//! (from the request's badge, asked of Studio once), cleaned, filtered, rate-limited and printed
//! between the shell's lines ([`ozone_console::output`]), and answered at once; an interrupt is
//! input, handled by the [`Session`] — which may run a shell command that calls Studio. While it
//! does, clients wait on the endpoint; the kernel has no `SaveCaller`, so the server never holds
//! a client's reply while it serves anything else. The console never waits for a client: it
//! only answers them.
//!
//! **Input does not hold programs back.** A receive takes the bound notification's signal before
//! any message waiting on the endpoint (the kernel's rule, as seL4's), and typing keeps raising
//! the interrupt: so with the interrupt the console first serves the programs already waiting
//! (without blocking: NBRecv, at most [`MAX_WAITING`]), then runs the input, serving them again
//! after each command ([`Clients`]); Studio's decisions signalled meanwhile are printed there
//! too, and input signalled meanwhile is handled next.
//!
//! **Studio's decisions.** At start the console tells Studio it prints them (`FOLLOW_LOG`); from
//! then on Studio signals the notification ([`LOG_SIGNAL`]) after each decision instead of
//! printing it through the kernel's debug channel, and the console pulls the new ones with `LOG`
//! and prints them as `[studio] ...` lines, between the shell's lines like any program's. Studio
//! never calls the console (the console calls Studio: the other way round would deadlock).
//!
//! Servers the shell calls (Studio, the shaper, the store, the network server), and the servers
//! those call in turn (the device manager, the timer), must never Call the console: the console
//! would be waiting for their reply while they wait for its receive. They send their lines one
//! way (`ozone_agent_sdk::log::set_nonblocking`); a line sent while the console is busy is lost.
//! The QEMU test `shell_devices_at_boot` types `disk` and `net` while all of them start. The console prints its own lines itself, and its
//! `println!` (before the shell is up, and a panic) goes to the kernel's debug channel, which
//! Studio gives the console for that.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

extern crate alloc;

mod backend;
mod ports;

use ozone_agent_sdk::caps;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::console::{self as proto, MAX_LINE, MAX_WRITE, id, method};
use ozone_agent_sdk::protocol::studio::{LOG_SIGNAL, SERIAL_SIGNAL};
use ozone_agent_sdk::rpc::{Args, Polled, Request, Response, Server};
use ozone_agent_sdk::{entry, println};
use ozone_console::session::{Clients, Session};
use ozone_console::shell::Backend;
use ozone_console::uart::{Ports, Uart};

entry!(run);

/// Bytes of output the console queues before a writer waits.
const TX_RING: usize = 16 << 10;

fn run() -> u64 {
    // Never through the console: that would be a call to itself.
    ozone_agent_sdk::log::set_direct();
    let mut uart = Uart::new(ports::CapPorts::com1(caps::serial_ports()), TX_RING);
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
    // From here on Studio's decisions are the console's to print.
    if let Err(e) = backend.follow_log() {
        session.program_lines(&[alloc::format!("[console] Studio's decisions stay on the debug channel: {e}")]);
    }
    let serial_irq = caps::serial_irq();
    let mut server = match Server::provided(proto::INTERFACE) {
        Ok(s) => s,
        Err(e) => {
            println!("[console] cannot serve `{}`: {e}", proto::INTERFACE);
            return 1;
        }
    };
    // Signals taken and not yet handled (some come while programs waiting are served).
    let mut signals = 0u64;
    let mut answer = None;
    loop {
        if signals == 0 {
            match server.answer_and_wait(answer.take()) {
                Polled::Request(r) => answer = Some(request(&mut session, &mut backend, &r)),
                Polled::Other(m) if m.badge & SIGNALS != 0 => signals = m.badge & SIGNALS,
                // A client's message with a label that is no method learns that it is none.
                Polled::Other(_) => answer = Some(Err(ServiceError::UnknownMethod)),
                Polled::Answered | Polled::Nothing => {}
            }
        }
        if signals != 0 {
            let now = core::mem::take(&mut signals);
            // Decisions first: input may be a command that ends the system (`shutdown`).
            if now & LOG_SIGNAL != 0 {
                let lines = backend.decisions();
                session.program_lines(&lines);
            }
            if now & SERIAL_SIGNAL != 0 {
                let mut waiting = Waiting { server: &mut server };
                signals = session.interrupt(&mut backend, &mut waiting, &mut || ports::ack_serial_irq(serial_irq));
            }
        }
        let due = backend.due_notices();
        session.program_lines(&due);
    }
}

/// The signals the console handles (bits of its notification's word, above every program id).
const SIGNALS: u64 = LOG_SIGNAL | SERIAL_SIGNAL;

/// The most requests one look at the waiting programs serves, so that programs that keep
/// calling cannot hold the shell's input back either.
const MAX_WAITING: usize = 64;

/// What waits for the console between the shell's commands (see [`Clients`]): programs' requests
/// on its endpoint, and Studio's decisions (printed at once when their signal is met).
struct Waiting<'a> {
    server: &'a mut Server,
}

impl<P: Ports> Clients<P, backend::System> for Waiting<'_> {
    fn serve_waiting(&mut self, session: &mut Session<P>, backend: &mut backend::System) -> u64 {
        let mut signals = 0;
        for _ in 0..MAX_WAITING {
            match self.server.poll() {
                Polled::Nothing => break,
                Polled::Answered => {}
                Polled::Request(r) => {
                    let answer = request(session, backend, &r);
                    self.server.answer(Some(answer));
                }
                // The receive took the notification's signal first: decisions now, input after
                // the input being handled.
                Polled::Other(m) if m.badge & SIGNALS != 0 => {
                    if m.badge & LOG_SIGNAL != 0 {
                        let lines = backend.decisions();
                        session.program_lines(&lines);
                    }
                    signals |= m.badge & SERIAL_SIGNAL;
                }
                Polled::Other(_) => self.server.answer(Some(Err(ServiceError::UnknownMethod))),
            }
        }
        signals
    }
}

/// A client's request: its lines, attributed by its badge.
fn request<P: Ports>(session: &mut Session<P>, backend: &mut backend::System, r: &Request) -> Response {
    let (lines, reply) = match r.method {
        id::LINE => {
            let (l, reply) = r.decode_for(method::LINE)?;
            if l.text.len() > MAX_LINE {
                return Err(ServiceError::InvalidArgument);
            }
            (backend.program_line(r.badge, l.level, &l.text), reply)
        }
        id::WRITE => {
            let (w, reply) = r.decode_for(method::WRITE)?;
            if w.bytes.len() > MAX_WRITE {
                return Err(ServiceError::InvalidArgument);
            }
            (backend.program_write(r.badge, &w.bytes), reply)
        }
        _ => return Err(ServiceError::UnknownMethod),
    };
    // Printed while the serial line keeps up; what it cannot take is dropped and counted.
    let dropped = session.offer_program_lines(r.badge, &lines);
    backend.note_dropped(r.badge, dropped);
    reply.ok(&())
}
