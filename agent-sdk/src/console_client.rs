//! A typed client of the serial console server (interface `console`, messages in
//! [`crate::protocol::console`]) for raw text: the console prints it a whole line at a time,
//! each line attributed `[<name>] ` to this program and cleaned of control characters, between
//! the shell's lines.
//!
//! ```ignore
//! use core::fmt::Write;
//! let mut con = SerialConsole::connect()?;       // the program's description must `use` "console"
//! con.write_str("hello\n")?;
//! writeln!(con, "{} requests", 3).ok();
//! ```
//!
//! (Most programs want [`crate::println!`] and [`crate::log`] instead, which need no lookup: they
//! go through the console capability Studio puts in every program's `LOG` slot.)

use core::fmt;

use crate::error::{AgentError, Result};
use crate::protocol::console::{self as proto, MAX_WRITE, method};
use crate::rpc::Client;

/// A connection to the console server.
#[derive(Clone, Copy, Debug)]
pub struct SerialConsole {
    client: Client,
    /// The last error of a [`fmt::Write`] use (which can only say "failed").
    last_error: Option<AgentError>,
}

impl SerialConsole {
    /// Look the console up through Studio.
    pub fn connect() -> Result<SerialConsole> {
        Ok(SerialConsole::with_client(Client::lookup(proto::INTERFACE)?))
    }

    /// A console reached through an existing client (an endpoint the program already holds).
    pub fn with_client(client: Client) -> SerialConsole {
        SerialConsole { client, last_error: None }
    }

    /// Write `bytes` to the serial line (in pieces of at most [`MAX_WRITE`] bytes, in order; the
    /// console holds the start of a line until its end arrives). Returns once everything is taken.
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<()> {
        for piece in bytes.chunks(MAX_WRITE) {
            let req = proto::Write { bytes: piece.into() };
            self.client.call(method::WRITE, &req)?;
        }
        Ok(())
    }

    /// Write text to the serial line.
    pub fn write_text(&self, text: &str) -> Result<()> {
        self.write_bytes(text.as_bytes())
    }

    /// Why the last `fmt::Write` call failed, if it did.
    pub fn last_error(&self) -> Option<AgentError> {
        self.last_error
    }
}

impl fmt::Write for SerialConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_text(s).map_err(|e| {
            self.last_error = Some(e);
            fmt::Error
        })
    }
}
