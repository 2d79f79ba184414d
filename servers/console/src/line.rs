//! The line editor: turns the bytes typed on the serial line into echo and complete lines.
//!
//! - Printable ASCII (space to `~`) is appended and echoed; tab counts as a space.
//! - Backspace (0x08) and DEL (0x7f) erase the last character (echo `\b \b`); Ctrl-U erases the
//!   whole line; Ctrl-C abandons it (echo `^C`).
//! - `\r` or `\n` ends the line; a `\n` right after a `\r` (a CRLF terminal) is swallowed, so one
//!   Enter is one line.
//! - Escape sequences (arrow keys and the like: ESC `[` ... final byte, ESC `O` x) are skipped
//!   whole; every other control byte and every byte ≥ 0x80 is ignored (the shell is ASCII).
//! - A line longer than [`MAX_LINE`] is not cut silently: further characters ring the bell and
//!   are not kept, and Enter reports [`Event::TooLong`].

use alloc::string::String;
use alloc::vec::Vec;

/// The most characters one line holds.
pub const MAX_LINE: usize = 200;

const BELL: u8 = 0x07;
const BACKSPACE: u8 = 0x08;
const DEL: u8 = 0x7f;
const ESC: u8 = 0x1b;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;

/// What one input byte did, besides its echo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing to act on (the byte was kept, erased something, or was ignored).
    None,
    /// Enter: this line is complete.
    Line(String),
    /// Enter after a line longer than [`MAX_LINE`]: it was discarded.
    TooLong,
    /// Ctrl-C: the line was abandoned.
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    /// Not in an escape sequence.
    No,
    /// After ESC.
    Started,
    /// After ESC `[`: parameters until a final byte (0x40..=0x7e).
    Csi,
    /// After ESC `O`: one more byte.
    Ss3,
}

/// The line being typed.
pub struct LineEditor {
    line: Vec<u8>,
    overflow: bool,
    escape: Escape,
    after_cr: bool,
}

impl Default for LineEditor {
    fn default() -> Self {
        LineEditor::new()
    }
}

impl LineEditor {
    pub const fn new() -> LineEditor {
        LineEditor { line: Vec::new(), overflow: false, escape: Escape::No, after_cr: false }
    }

    /// What has been typed so far.
    pub fn current(&self) -> &[u8] {
        &self.line
    }

    /// Take one input byte; echo goes to `echo`.
    pub fn feed(&mut self, b: u8, echo: &mut Vec<u8>) -> Event {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::No => {}
            Escape::Started => {
                self.escape = match b {
                    b'[' => Escape::Csi,
                    b'O' => Escape::Ss3,
                    _ => Escape::No,
                };
                return Event::None;
            }
            Escape::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.escape = Escape::No;
                }
                return Event::None;
            }
            Escape::Ss3 => {
                self.escape = Escape::No;
                return Event::None;
            }
        }
        match b {
            b'\n' if after_cr => Event::None,
            b'\r' | b'\n' => {
                self.after_cr = b == b'\r';
                echo.extend_from_slice(b"\r\n");
                let overflow = core::mem::replace(&mut self.overflow, false);
                let line = core::mem::take(&mut self.line);
                if overflow {
                    Event::TooLong
                } else {
                    // Only printable ASCII is ever kept, so this is valid UTF-8.
                    Event::Line(line.iter().map(|&c| c as char).collect())
                }
            }
            b'\t' | 0x20..=0x7e => {
                let c = if b == b'\t' { b' ' } else { b };
                if self.line.len() < MAX_LINE && !self.overflow {
                    self.line.push(c);
                    echo.push(c);
                } else {
                    self.overflow = true;
                    echo.push(BELL);
                }
                Event::None
            }
            BACKSPACE | DEL => {
                // Characters past MAX_LINE were never shown: erase what the terminal shows.
                self.overflow = false;
                if self.line.pop().is_some() {
                    echo.extend_from_slice(b"\x08 \x08");
                }
                Event::None
            }
            CTRL_U => {
                for _ in 0..self.line.len() {
                    echo.extend_from_slice(b"\x08 \x08");
                }
                self.line.clear();
                self.overflow = false;
                Event::None
            }
            CTRL_C => {
                self.line.clear();
                self.overflow = false;
                echo.extend_from_slice(b"^C\r\n");
                Event::Cancelled
            }
            ESC => {
                self.escape = Escape::Started;
                Event::None
            }
            _ => Event::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(ed: &mut LineEditor, input: &[u8]) -> (Vec<Event>, Vec<u8>) {
        let mut echo = Vec::new();
        let events = input.iter().map(|&b| ed.feed(b, &mut echo)).filter(|e| *e != Event::None).collect();
        (events, echo)
    }

    #[test]
    fn a_typed_line_is_echoed_and_completed() {
        let mut ed = LineEditor::new();
        let (events, echo) = feed_all(&mut ed, b"ps\r");
        assert_eq!(events, [Event::Line("ps".into())]);
        assert_eq!(echo, b"ps\r\n");
        assert!(ed.current().is_empty());
    }

    #[test]
    fn crlf_is_one_enter_but_lf_alone_is_one_too() {
        let mut ed = LineEditor::new();
        let (events, _) = feed_all(&mut ed, b"a\r\nb\n\nc\r\r");
        assert_eq!(
            events,
            [
                Event::Line("a".into()),
                Event::Line("b".into()),
                Event::Line("".into()),
                Event::Line("c".into()),
                Event::Line("".into())
            ]
        );
    }

    #[test]
    fn backspace_and_del_erase() {
        let mut ed = LineEditor::new();
        let (events, echo) = feed_all(&mut ed, b"psx\x08\x7f\x7fkill\x7f\x7f\x7f\x7fcaps\r");
        assert_eq!(events, [Event::Line("caps".into())]);
        assert!(echo.starts_with(b"psx\x08 \x08\x08 \x08\x08 \x08"));
        // Erasing an empty line echoes nothing.
        let (_, echo) = feed_all(&mut ed, b"\x7f\x08");
        assert!(echo.is_empty());
    }

    #[test]
    fn ctrl_u_and_ctrl_c() {
        let mut ed = LineEditor::new();
        let (events, _) = feed_all(&mut ed, b"junk\x15ps\r");
        assert_eq!(events, [Event::Line("ps".into())]);
        let (events, echo) = feed_all(&mut ed, b"half\x03");
        assert_eq!(events, [Event::Cancelled]);
        assert!(echo.ends_with(b"^C\r\n"));
        assert!(ed.current().is_empty());
    }

    #[test]
    fn escape_sequences_and_binary_garbage_are_ignored() {
        let mut ed = LineEditor::new();
        let mut input = b"p\x1b[A\x1b[1;5C\x1bOPs".to_vec();
        input.extend((0x80..=0xffu8).chain([0, 1, 2, 4, 0x1c, 0x1f]));
        input.push(b'\r');
        let (events, echo) = feed_all(&mut ed, &input);
        assert_eq!(events, [Event::Line("ps".into())]);
        assert_eq!(echo, b"ps\r\n");
    }

    #[test]
    fn tabs_are_spaces() {
        let mut ed = LineEditor::new();
        let (events, _) = feed_all(&mut ed, b"caps\tconsole\r");
        assert_eq!(events, [Event::Line("caps console".into())]);
    }

    #[test]
    fn an_overlong_line_is_refused_whole() {
        let mut ed = LineEditor::new();
        let mut input = alloc::vec![b'x'; MAX_LINE + 50];
        input.push(b'\r');
        let (events, echo) = feed_all(&mut ed, &input);
        assert_eq!(events, [Event::TooLong]);
        assert_eq!(echo.iter().filter(|&&b| b == b'x').count(), MAX_LINE);
        assert_eq!(echo.iter().filter(|&&b| b == BELL).count(), 50);
        // The editor is usable again.
        let (events, _) = feed_all(&mut ed, b"help\r");
        assert_eq!(events, [Event::Line("help".into())]);
    }
}
