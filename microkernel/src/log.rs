//! Kernel log: leveled lines on the console, each beginning `ozone: `.
//!
//! The level is chosen on the command line with `ozone.log=error|warn|info|debug` (default
//! `info`). Lines tools look for (the markers in `ozone_abi::markers`) are printed at `info`.

use core::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s {
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    pub const fn prefix(self) -> &'static str {
        match self {
            Level::Error => "ozone: error: ",
            Level::Warn => "ozone: warning: ",
            Level::Info => "ozone: ",
            Level::Debug => "ozone: debug: ",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Print a line at `level` (used by the macros).
#[cfg(target_os = "none")]
pub fn log(level: Level, args: core::fmt::Arguments<'_>) {
    if enabled(level) {
        crate::arch::x86_64::serial::write_fmt(format_args!("{}{}\n", level.prefix(), args));
    }
}

/// On the host the log goes to standard error (unit tests).
#[cfg(not(target_os = "none"))]
pub fn log(level: Level, args: core::fmt::Arguments<'_>) {
    if enabled(level) {
        extern crate std;
        std::eprintln!("{}{}", level.prefix(), args);
    }
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::log($crate::log::Level::Debug, format_args!($($t)*)) } }

/// Print raw text to the console, no prefix, no level.
#[macro_export]
macro_rules! kprint {
    ($($t:tt)*) => { $crate::arch::x86_64::serial::write_fmt(format_args!($($t)*)) }
}
