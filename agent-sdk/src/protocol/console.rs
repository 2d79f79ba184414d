//! The `console` interface of the serial console server (`servers/console`): the one way programs
//! put text on the serial line. The kernel's debug channel is the kernel's (and the root task's,
//! Studio's before the console is up, and the console's own crash reports): other programs are
//! refused it.
//!
//! The server owns COM1 (its I/O ports and IRQ 4) and runs the system shell on it. Every line a
//! client sends is **attributed** by the server: it prints `[<name>] ` before it, where the name
//! is the one Studio gave the program whose badge the request carries (never taken from the
//! text), so no program can print the shell's prompt or another program's line. The server also
//!
//! - strips control characters (everything below 0x20 but the newline, which ends a line, and
//!   DEL; a tab becomes a space), so no escape sequence reaches the terminal;
//! - prints a line whole, never inside the shell's prompt, the text being typed, or a command's
//!   answer: while the prompt is shown it erases the prompt line, prints the program's line and
//!   prints the prompt and the partial input again (as readline does);
//! - rate-limits each program (a burst, then a steady rate) and says how many lines it dropped:
//!   `[console] dropped N lines from NAME`;
//! - filters each program's lines by [`Level`] (the shell's `loglevel NAME LEVEL`).
//!
//! A program logs with [`method::LINE`] (what the SDK's `println!`, `info!`, `warn!` and `error!`
//! send through the capability Studio puts in every program's `LOG` start slot). [`method::WRITE`]
//! takes raw text for `ozone_agent_sdk::console_client`: it is printed a whole line at a time
//! (the start of a line waits for the rest of it, up to a bound), each attributed and filtered as
//! an `Info` line.
//!
//! `\n` is sent as `\r\n`.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "console";

super::methods! {
    /// [`Write`] → `()`: text for the serial line, as `Info` lines.
    /// `InvalidArgument` if there are more than [`MAX_WRITE`] bytes.
    WRITE = 0: Write => ();
    /// [`Line`] → `()`: one log line at a level. `InvalidArgument` if the text has
    /// more than [`MAX_LINE`] bytes. Also accepted as a one-way message
    /// (non-blocking send, no answer) from servers the console itself calls.
    LINE = 1: Line => ();
}

/// The most bytes one `WRITE` carries: one message's payload less postcard's length prefix.
pub const MAX_WRITE: usize = super::MAX_PAYLOAD - 4;

/// The most bytes of text one `LINE` carries (its level and length prefix take the rest).
pub const MAX_LINE: usize = MAX_WRITE - 1;

/// Text (any bytes; UTF-8 expected) for the serial line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub bytes: Vec<u8>,
}

/// How serious a log line is; ordered from the most to the least serious, so a program's filter
/// level lets through every line at or above it in seriousness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Something that failed: printed as `[name] error: ...`.
    Error,
    /// Something unexpected the program carries on after: `[name] warning: ...`.
    Warn,
    /// Ordinary progress (`println!`, `info!`): `[name] ...`.
    Info,
    /// Detail, hidden unless the program's level is `debug`.
    Debug,
}

impl Level {
    /// Every level, most serious first.
    pub const ALL: [Level; 4] = [Level::Error, Level::Warn, Level::Info, Level::Debug];

    /// The word printed after the program's name (`None` for `Info`).
    pub const fn word(self) -> Option<&'static str> {
        match self {
            Level::Error => Some("error"),
            Level::Warn => Some("warning"),
            Level::Info => None,
            Level::Debug => Some("debug"),
        }
    }

    /// The level's name in the shell's `loglevel` command.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    /// The level named `name` (as [`Level::name`] spells it).
    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }
}

/// One log line: the text without its newline (a newline inside starts another attributed line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub level: Level,
    pub text: Vec<u8>,
}

/// Whether the console (and Studio's log) shows `c` of a program's text as it is: not a control
/// character (C0, DEL, C1), not a Unicode line or paragraph separator, a zero-width or a direction
/// control — anything that could end a line, move the cursor or reorder what a line shows, so
/// that a program's text can never pass for another program's or the shell's.
pub fn printable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
        ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_PAYLOAD, decode, encode};

    #[test]
    fn the_largest_write_fits_one_message() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let w = Write { bytes: alloc::vec![0xa5; MAX_WRITE] };
        let n = encode(&w, &mut words).unwrap();
        assert_eq!(decode::<Write>(&words, n).unwrap(), w);
        let too_big = Write { bytes: alloc::vec![0; MAX_PAYLOAD] };
        assert!(encode(&too_big, &mut words).is_err());
    }

    #[test]
    fn the_longest_line_fits_one_message_at_every_level() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        for level in Level::ALL {
            let l = Line { level, text: alloc::vec![b'x'; MAX_LINE] };
            let n = encode(&l, &mut words).unwrap();
            assert_eq!(decode::<Line>(&words, n).unwrap(), l);
        }
    }

    #[test]
    fn levels_are_ordered_and_named() {
        assert!(Level::Error < Level::Warn && Level::Warn < Level::Info && Level::Info < Level::Debug);
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse("verbose"), None);
        assert_eq!(Level::Info.word(), None);
    }
}
