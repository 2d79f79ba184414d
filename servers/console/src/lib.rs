//! The serial console server's logic, host-testable: the 16550 driver over an abstract register
//! interface ([`uart`]), its transmit queue ([`ring`]), the line editor ([`line`](mod@line)), the shell
//! ([`shell`]), programs' output ([`output`]) and the session that ties them together
//! ([`session`]).
//!
//! The `console` binary (`src/main.rs`) runs it on OZONE-OS over the I/O-port and IRQ
//! capabilities Studio gives a program with the `serial` device, answers the `console` interface
//! (`ozone_agent_sdk::protocol::console`) and talks to Studio for the shell's commands.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod line;
pub mod output;
pub mod ring;
pub mod session;
pub mod shell;
pub mod uart;
