//! Program output: [`println!`](crate::println), [`print!`](crate::print),
//! [`info!`](crate::info), [`warn!`](crate::warn), [`error!`](macro@crate::error) and
//! [`debug!`](crate::debug) format one line and send it to the serial console server, which
//! prints it attributed to the program.
//!
//! ```ignore
//! use ozone_agent_sdk::{error, info, println, warn};
//!
//! println!("serving {} clients", 3);      // [echo-client] serving 3 clients
//! info!("serving {} clients", 3);         // the same
//! warn!("retrying");                       // [echo-client] warning: retrying
//! error!("lookup failed: {e}");            // [echo-client] error: lookup failed: ...
//! ```
//!
//! **Attribution is the console's.** A program writes only its message; the console server puts
//! `[<name>] ` (and `warning: ` / `error: ` / `debug: ` for those levels) in front, with the name
//! Studio gave the program whose capability the line came through. A program cannot print a line
//! that looks like the shell's prompt or another program's (see `protocol::console`).
//!
//! **The line** is built on the stack, without the heap, and is at most [`MAX_LINE`] bytes of
//! text — one console message, so lines of different programs and threads never interleave; a
//! longer one is cut at a character boundary and ends with `...`. A trailing newline is dropped
//! (the console ends every line); a newline inside starts another line, attributed the same way.
//!
//! **Where it goes**, for every thread of the program (the mode is one atomic word):
//!
//! 1. A program Studio started sends each line to the console with a Call on the capability
//!    Studio put in its `LOG` start slot (`protocol::start::slot::LOG`, badged with its id). If
//!    that fails (no capability, the console refused it), the line is **dropped and counted**
//!    ([`dropped`]); it never goes to the kernel's debug channel, which such a program may not
//!    use anyway.
//! 2. A program Studio did not start (the root task, Studio, the kernel test programs the root
//!    task runs) uses the kernel's debug channel; a thread the kernel refuses it to (only threads
//!    given the channel may use it) has its lines dropped and counted.
//! 3. [`set_direct`]: the kernel's debug channel from now on — for the console server itself
//!    (a line to the console from the console would be a call to itself), which Studio gives
//!    the channel for its own lines and crash reports.
//! 4. [`set_nonblocking`]: lines go to the console as one-way messages that never wait (NBSend),
//!    dropped if the console is not waiting for one at that moment (not counted: the kernel does
//!    not say). For servers the console's shell calls (the syscall shaper, the store, the
//!    network server) and those they call (the device manager, the timer): the console waits
//!    for their answer, so a Call from them to the console would deadlock.
//!
//! A Call to the console waits while the console is busy (running a shell command). While the
//! console server is stopped Studio takes every program's log capability away (a Call would wait
//! for a console that may never come back — for the program restarting it, forever), so lines are
//! dropped and counted then; Studio gives it back when the console runs again.

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::Result;
pub use crate::protocol::console::Level;
use crate::protocol::console::{self as proto, method};
use crate::protocol::start::slot;
use crate::rpc::Client;
use crate::{start, sys};

/// The longest line's text, in bytes: one console `LINE`.
pub const MAX_LINE: usize = proto::MAX_LINE;

/// What ends a line that was cut to fit.
const CUT_MARK: &str = "...";

/// One log line's text, built without the heap: at most [`MAX_LINE`] bytes of UTF-8.
struct Line {
    buf: [u8; MAX_LINE],
    len: usize,
    /// Text was dropped: the line ends with [`CUT_MARK`].
    cut: bool,
}

impl Line {
    fn format(args: fmt::Arguments<'_>) -> Line {
        let mut line = Line { buf: [0; MAX_LINE], len: 0, cut: false };
        let _ = line.write_fmt(args);
        line.finish();
        line
    }

    /// Mark a cut line; drop one trailing newline of a whole one.
    fn finish(&mut self) {
        if self.cut {
            let full = self.len;
            // Back off to a character boundary that leaves room for the mark.
            while self.len > MAX_LINE - CUT_MARK.len() || (self.len < full && is_continuation(self.buf[self.len])) {
                self.len -= 1;
            }
            self.buf[self.len..self.len + CUT_MARK.len()].copy_from_slice(CUT_MARK.as_bytes());
            self.len += CUT_MARK.len();
        } else if self.len > 0 && self.buf[self.len - 1] == b'\n' {
            self.len -= 1;
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A byte inside a UTF-8 character (not its first).
fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            // Once something was dropped, drop the rest too: later pieces must not fill the gap.
            return Ok(());
        }
        let room = MAX_LINE - self.len;
        let mut n = s.len().min(room);
        if n < s.len() {
            self.cut = true;
            while !s.is_char_boundary(n) {
                n -= 1;
            }
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// A console `LINE` request borrowing its text: encodes exactly as [`proto::Line`] (postcard
/// writes a byte slice and a `Vec<u8>` alike), without copying the line to the heap.
#[derive(Serialize)]
struct LineRef<'a> {
    level: Level,
    text: &'a [u8],
}

impl crate::protocol::Encodes<proto::Line> for LineRef<'_> {}

/// The output mode (one word for every thread).
const AUTO: u64 = 0;
const DIRECT: u64 = 1;
const NONBLOCKING: u64 = 2;

static MODE: AtomicU64 = AtomicU64::new(AUTO);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Where one line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// The console, with a Call.
    Console,
    /// The console, with a one-way message.
    ConsoleOneWay,
    /// The kernel's debug channel.
    Kernel,
}

fn path(mode: u64, started_by_studio: bool) -> Path {
    match mode {
        DIRECT => Path::Kernel,
        NONBLOCKING => Path::ConsoleOneWay,
        _ if started_by_studio => Path::Console,
        _ => Path::Kernel,
    }
}

/// The effects of sending a line (the real ones in [`write`], fakes in the tests).
trait Sink {
    fn console(&self, level: Level, text: &[u8]) -> Result<()>;
    fn console_one_way(&self, level: Level, text: &[u8]) -> Result<()>;
    /// The kernel channel, with the level word in front and a newline after.
    fn kernel(&self, level: Level, text: &[u8]) -> core::result::Result<(), crate::Error>;
}

/// Send one line by `path`; a line that could not be sent counts in `dropped`. Returns whether
/// it was sent.
fn emit(path: Path, level: Level, text: &[u8], sink: &impl Sink, dropped: &AtomicU64) -> bool {
    let sent = match path {
        Path::Console => sink.console(level, text).is_ok(),
        Path::ConsoleOneWay => sink.console_one_way(level, text).is_ok(),
        Path::Kernel => sink.kernel(level, text).is_ok(),
    };
    if !sent {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
    sent
}

struct System;

impl Sink for System {
    fn console(&self, level: Level, text: &[u8]) -> Result<()> {
        Client::new(slot::LOG, proto::INTERFACE).call(method::LINE, &LineRef { level, text })
    }

    fn console_one_way(&self, level: Level, text: &[u8]) -> Result<()> {
        Client::new(slot::LOG, proto::INTERFACE).send_nb(method::LINE, &LineRef { level, text })
    }

    fn kernel(&self, level: Level, text: &[u8]) -> core::result::Result<(), crate::Error> {
        // The level word, the text and the newline in one DebugWrite (lines never interleave).
        let mut buf = [0u8; MAX_LINE + 16];
        let mut n = 0;
        let mut put = |bytes: &[u8]| {
            buf[n..n + bytes.len()].copy_from_slice(bytes);
            n += bytes.len();
        };
        if let Some(word) = level.word() {
            put(word.as_bytes());
            put(b": ");
        }
        put(text);
        put(b"\n");
        sys::debug_write(&buf[..n])
    }
}

/// Format a line at `level` and send it (what the macros call).
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let line = Line::format(args);
    let path = path(MODE.load(Ordering::Acquire), start::info().is_some());
    emit(path, level, line.as_bytes(), &System, &DROPPED);
}

/// Print through the kernel's debug channel from now on, in every thread of the program. Only
/// for a program whose threads were given the channel (the console server); anyone else's
/// lines are then refused by the kernel and dropped.
pub fn set_direct() {
    MODE.store(DIRECT, Ordering::Release);
}

/// Send lines to the console as one-way messages that never wait, from now on (for servers the
/// console calls: see the module docs).
pub fn set_nonblocking() {
    MODE.store(NONBLOCKING, Ordering::Release);
}

/// Lines this program could not send (no console capability, the console refused them, or the
/// kernel refused the debug channel).
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Log a line: `[name] message` (see [`crate::log`]).
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}

/// Log a warning: `[name] warning: message` (see [`crate::log`]).
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) };
}

/// Log an error: `[name] error: message` (see [`crate::log`]).
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) };
}

/// Log detail: `[name] debug: message`, shown only where the program's level is `debug`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AgentError;
    use crate::protocol::{MAX_PAYLOAD, encode};
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};

    fn text(args: fmt::Arguments<'_>) -> String {
        let line = Line::format(args);
        String::from(core::str::from_utf8(line.as_bytes()).expect("lines are UTF-8"))
    }

    #[test]
    fn a_line_is_the_message_alone() {
        assert_eq!(text(format_args!("answered {}", 42)), "answered 42");
        assert_eq!(text(format_args!("with a newline\n")), "with a newline");
        assert_eq!(text(format_args!("two\nlines\n\n")), "two\nlines\n");
        assert_eq!(text(format_args!("")), "");
    }

    #[test]
    fn over_long_lines_are_cut_at_a_character_boundary() {
        // Exactly full: nothing cut.
        let fits = "x".repeat(MAX_LINE);
        let t = text(format_args!("{fits}"));
        assert_eq!(t.len(), MAX_LINE);
        assert!(!t.contains("..."));
        // One byte more: cut, marked, still MAX_LINE.
        let t = text(format_args!("{fits}y"));
        assert_eq!(t.len(), MAX_LINE);
        assert!(t.ends_with("xxx..."), "{t:?}");
        // Multi-byte characters, in many pieces: valid UTF-8, no later piece fills the gap.
        for pad in 0..4 {
            let mut args = String::new();
            args.push_str(&"p".repeat(pad));
            for _ in 0..400 {
                args.push_str("é€");
            }
            let t = text(format_args!("{args}{}", "!"));
            assert!(t.len() <= MAX_LINE && t.ends_with("..."), "{}", t.len());
            assert!(!t.contains('!'));
            assert!(args.starts_with(t.trim_end_matches("...")));
        }
    }

    #[test]
    fn the_longest_line_is_one_console_message() {
        let line = Line::format(format_args!("{}", "z".repeat(5000)));
        assert_eq!(line.as_bytes().len(), MAX_LINE);
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let n = encode(&LineRef { level: Level::Warn, text: line.as_bytes() }, &mut words).unwrap();
        let mut owned = [0u64; MAX_PAYLOAD / 8];
        let m = encode(&proto::Line { level: Level::Warn, text: line.as_bytes().to_vec() }, &mut owned).unwrap();
        assert_eq!((n, &words[..n.div_ceil(8)]), (m, &owned[..m.div_ceil(8)]), "same encoding as the protocol's Line");
    }

    /// A fake system: records what each path got.
    #[derive(Default)]
    struct Fake {
        console: RefCell<Vec<(Level, Vec<u8>)>>,
        one_way: RefCell<Vec<Vec<u8>>>,
        kernel: RefCell<Vec<Vec<u8>>>,
        console_fails: Cell<bool>,
        kernel_refuses: Cell<bool>,
    }

    impl Sink for Fake {
        fn console(&self, level: Level, text: &[u8]) -> Result<()> {
            if self.console_fails.get() {
                return Err(AgentError::Kernel(crate::Error::InvalidCapability));
            }
            self.console.borrow_mut().push((level, text.to_vec()));
            Ok(())
        }
        fn console_one_way(&self, _level: Level, text: &[u8]) -> Result<()> {
            self.one_way.borrow_mut().push(text.to_vec());
            Ok(())
        }
        fn kernel(&self, _level: Level, text: &[u8]) -> core::result::Result<(), crate::Error> {
            if self.kernel_refuses.get() {
                return Err(crate::Error::Denied);
            }
            self.kernel.borrow_mut().push(text.to_vec());
            Ok(())
        }
    }

    #[test]
    fn programs_studio_started_use_the_console_and_never_the_kernel_channel() {
        let f = Fake::default();
        let dropped = AtomicU64::new(0);
        let p = path(AUTO, true);
        assert_eq!(p, Path::Console);
        assert!(emit(p, Level::Warn, b"one", &f, &dropped));
        // The console capability fails (none, or revoked): dropped and counted, not rerouted.
        f.console_fails.set(true);
        assert!(!emit(p, Level::Info, b"two", &f, &dropped));
        assert!(!emit(p, Level::Info, b"three", &f, &dropped));
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
        assert_eq!(*f.console.borrow(), [(Level::Warn, b"one".to_vec())]);
        assert!(f.kernel.borrow().is_empty(), "an unprivileged program's line reached the kernel channel");
        // Back again: the next line goes through.
        f.console_fails.set(false);
        assert!(emit(p, Level::Info, b"four", &f, &dropped));
        assert_eq!(f.console.borrow().len(), 2);
    }

    #[test]
    fn other_programs_use_the_kernel_channel_and_count_refusals() {
        let f = Fake::default();
        let dropped = AtomicU64::new(0);
        assert_eq!(path(AUTO, false), Path::Kernel);
        assert!(emit(Path::Kernel, Level::Info, b"root", &f, &dropped));
        f.kernel_refuses.set(true);
        assert!(!emit(Path::Kernel, Level::Info, b"a thread without the channel", &f, &dropped));
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        assert_eq!(*f.kernel.borrow(), [b"root".to_vec()]);
        assert!(f.console.borrow().is_empty());
    }

    #[test]
    fn modes_override_the_default() {
        for started in [true, false] {
            assert_eq!(path(DIRECT, started), Path::Kernel);
            assert_eq!(path(NONBLOCKING, started), Path::ConsoleOneWay);
        }
        let f = Fake::default();
        let dropped = AtomicU64::new(0);
        assert!(emit(Path::ConsoleOneWay, Level::Info, b"x", &f, &dropped));
        assert_eq!(*f.one_way.borrow(), [b"x".to_vec()]);
    }

    #[test]
    fn on_the_host_lines_go_nowhere_quietly() {
        // No start information and no kernel: the macros format and return (counted dropped).
        let before = dropped();
        crate::info!("host {}", 1);
        crate::warn!("host");
        crate::error!("host");
        crate::debug!("host");
        crate::println!("host");
        assert!(dropped() >= before + 5);
    }
}
