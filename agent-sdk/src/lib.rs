//! The OZONE-OS agent SDK: what a userspace program (agent or server) is written against.
//!
//! - [`entry!`]: the program's entry point; the runtime records Studio's start information
//!   ([`start`]) and sets up the heap ([`heap`]) before `run` is called.
//! - [`rpc`]: requests to servers and server loops with postcard messages; [`protocol`]: the
//!   system servers' interfaces, the wire format and the system description.
//! - [`sys`]: the raw syscalls; [`kernel`]: typed invocations of every kernel object;
//!   [`caps`]: typed capability handles (`Endpoint`, `Frame`, ...) with those as methods.
//! - [`print!`]/[`println!`]: console output; [`info!`]/[`warn!`]/[`error!`] ([`log`]): log lines
//!   through the console server; [`AgentError`]: the one error type.
//! - [`root`] and [`process`]: for the root task and Studio, which build other programs.
//!
//! Programs are built for `x86_64-unknown-none` as static position-independent executables;
//! the kernel (for the root task) or Studio (for everything else) loads and relocates them.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod caps;
pub mod console_client;
pub mod error;
pub mod heap;
pub mod kernel;
pub mod log;
pub mod process;
pub mod protocol;
pub mod root;
pub mod rpc;
pub mod secmem;
pub mod slots;
pub mod start;
pub mod sys;

#[cfg(target_os = "none")]
mod rt;

pub use error::{AgentError, Result};
pub use ozone_abi as abi;
pub use ozone_abi::Error;

/// Console output through the kernel's debug channel.
pub mod console {
    use core::fmt;

    /// Formats into a fixed buffer and writes it with one syscall per 512 bytes, so a line
    /// printed with one `println!` reaches the console in one piece.
    pub struct Console {
        buf: [u8; 512],
        len: usize,
    }

    impl Console {
        pub const fn new() -> Console {
            Console { buf: [0; 512], len: 0 }
        }

        pub fn flush(&mut self) {
            if self.len > 0 {
                let _ = crate::sys::debug_write(&self.buf[..self.len]);
                self.len = 0;
            }
        }
    }

    impl Default for Console {
        fn default() -> Self {
            Console::new()
        }
    }

    impl fmt::Write for Console {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for chunk in s.as_bytes().chunks(self.buf.len()) {
                if self.len + chunk.len() > self.buf.len() {
                    self.flush();
                }
                self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
                self.len += chunk.len();
            }
            Ok(())
        }
    }

    /// Used by the printing macros.
    pub fn print(args: fmt::Arguments<'_>) {
        let mut c = Console::new();
        let _ = fmt::Write::write_fmt(&mut c, args);
        c.flush();
    }
}

/// Print to the console.
#[macro_export]
macro_rules! print {
    ($($t:tt)*) => { $crate::console::print(format_args!($($t)*)) };
}

/// Print a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($t:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($t)*))) };
}

/// Declare the program's entry point: `entry!(run);` with `fn run() -> u64` returning the exit
/// status. (On the host, where the program cannot run, the macro provides a `main` that says so.)
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "C" fn ozone_main() -> u64 {
            let f: fn() -> u64 = $main;
            f()
        }
        #[cfg(not(target_os = "none"))]
        fn main() {
            let _never_run_on_the_host: fn() -> u64 = $main;
            eprintln!("this program runs on OZONE-OS: build and boot it with `cargo xtask qemu`");
            std::process::exit(2);
        }
    };
}
