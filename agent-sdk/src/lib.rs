//! The OZONE-OS agent SDK: what a userspace program (agent or server) is written against.
//!
//! - [`entry!`]: the program's entry point; the runtime records Studio's start information
//!   ([`start`]) and sets up the heap ([`heap`]) before `run` is called.
//! - [`rpc`]: requests to servers and server loops with postcard messages; [`protocol`]: the
//!   system servers' interfaces, the wire format and the system description.
//! - [`sys`]: the raw syscalls; [`kernel`]: typed invocations of every kernel object;
//!   [`caps`]: typed capability handles (`Endpoint`, `Frame`, ...) with those as methods.
//! - [`println!`]/[`info!`]/[`warn!`]/[`error!`]/[`debug!`] ([`log`]): output lines, sent to the
//!   console server, which attributes them to the program; [`AgentError`]: the one error type.
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

/// Print a line (see [`log`]): to the console server, attributed `[name] ` by it, for a program
/// Studio started; to the kernel's debug channel for the root task and Studio. Text without a
/// newline still ends its line.
#[macro_export]
macro_rules! print {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}

/// Print a line (see [`log`]); the same as [`info!`].
#[macro_export]
macro_rules! println {
    () => { $crate::log::write($crate::log::Level::Info, format_args!("")) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
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
