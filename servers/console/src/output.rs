//! Programs' output: what the console does with a line a program sends before it reaches the
//! serial line — attribution, cleaning, per-program level filtering and rate limiting.
//!
//! - **Lines**: a `LINE` is one line (a newline inside starts another); text written with
//!   `WRITE` is printed a whole line at a time, the start of a line waiting for its end.
//! - **Attribution**: a line is printed as `[<name>] <text>`, the name being the one Studio gave
//!   the program whose badge (its id) the request carried; the text never chooses it. Lines at
//!   the `warn`, `error` and `debug` levels get `warning: `, `error: `, `debug: ` after the name.
//! - **Cleaning**: the text is read as UTF-8 (invalid bytes become U+FFFD); a newline ends a line
//!   (each piece is attributed on its own), a tab becomes a space, and every other control
//!   character (C0, DEL, C1: the terminal's escape sequences) is removed.
//! - **Levels**: each program has a level (`info` unless the shell's `loglevel` set another);
//!   lines less serious than it are not printed (and not counted as dropped: they were filtered).
//! - **Rate limit**: each program has a bucket of [`BURST`] lines, refilled by one line every
//!   [`REFILL_CYCLES`] time-stamp-counter cycles. A line that finds the bucket empty is dropped and
//!   counted; once the bucket holds a line again the console prints
//!   `[console] dropped N lines from NAME` (before that program's next line, or at the console's
//!   next event, whichever is first). The TSC is only a clock for the refill: nothing asserts
//!   timing.
//!
//! Everything here is host-tested; the console binary feeds it the TSC and Studio's names.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::console::Level;

/// Lines a program may send at once before the rate limit applies.
pub const BURST: u64 = 64;
/// TSC cycles per line of refill (about 2^22: a few hundred lines a second at GHz rates).
pub const REFILL_CYCLES: u64 = 1 << 22;

/// The most bytes of a line written without its newline the console holds for a program.
pub const PARTIAL_MAX: usize = 1024;

/// The name printed for a program Studio does not know (a badge no program has).
pub const UNKNOWN: &str = "?";

/// One program's rate limit.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Lines it may still send now.
    tokens: u64,
    /// The TSC at the last refill.
    refilled_at: u64,
    /// Lines dropped since the last notice.
    dropped: u64,
    /// Lines dropped in all.
    dropped_total: u64,
}

impl Bucket {
    fn new(now: u64) -> Bucket {
        Bucket { tokens: BURST, refilled_at: now, dropped: 0, dropped_total: 0 }
    }

    fn refill(&mut self, now: u64) {
        let lines = now.saturating_sub(self.refilled_at) / REFILL_CYCLES;
        if lines > 0 {
            self.tokens = self.tokens.saturating_add(lines).min(BURST);
            self.refilled_at += lines * REFILL_CYCLES;
        }
        if now < self.refilled_at {
            // A TSC that went back (another CPU, a reset): start counting from here.
            self.refilled_at = now;
        }
    }
}

/// The console's record of programs' output.
#[derive(Default)]
pub struct Output {
    /// Program id → name, as Studio said.
    names: BTreeMap<u64, String>,
    /// Program name → its level, where the shell set one.
    levels: BTreeMap<String, Level>,
    /// Program id → its rate limit.
    buckets: BTreeMap<u64, Bucket>,
    /// Program id → the start of a line it is writing with `WRITE` (no newline yet).
    partial: BTreeMap<u64, Vec<u8>>,
    /// Lines filtered out by level, in all.
    pub filtered: u64,
}

impl Output {
    pub fn new() -> Output {
        Output::default()
    }

    /// The name of program `id`, asking `lookup` (Studio) the first time. A program's id and name
    /// never change while the system runs (the id is its place in the system description).
    pub fn name(&mut self, id: u64, lookup: &mut dyn FnMut(u64) -> Option<String>) -> String {
        if let Some(n) = self.names.get(&id) {
            return n.clone();
        }
        match lookup(id) {
            Some(n) => {
                let n = clean(n.as_bytes());
                self.names.insert(id, n.clone());
                n
            }
            // Not remembered: Studio may know it later.
            None => String::from(UNKNOWN),
        }
    }

    /// The level lines of program `name` must reach to be printed.
    pub fn level(&self, name: &str) -> Level {
        self.levels.get(name).copied().unwrap_or(Level::Info)
    }

    pub fn set_level(&mut self, name: &str, level: Level) {
        self.levels.insert(String::from(name), level);
    }

    /// `n` lines of program `id` the console could not print (the serial line is behind:
    /// [`crate::session::Session::offer_program_lines`]): counted with the rate limit's drops
    /// and told the same way (`[console] dropped N lines from NAME`).
    pub fn note_dropped(&mut self, id: u64, n: u64, now: u64) {
        if n == 0 {
            return;
        }
        let bucket = self.buckets.entry(id).or_insert_with(|| Bucket::new(now));
        bucket.dropped += n;
        bucket.dropped_total += n;
    }

    /// Lines of program `id` dropped (by the rate limit, or for want of room), in all.
    pub fn dropped(&self, id: u64) -> u64 {
        self.buckets.get(&id).map_or(0, |b| b.dropped_total)
    }

    /// The lines to print for `text` that program `id` (named `name`) sent at `level` at TSC
    /// `now`: a drop notice first if one is due, then its lines, attributed and cleaned. Empty if
    /// the level filters it out or the rate limit drops it.
    pub fn lines(&mut self, id: u64, name: &str, level: Level, text: &[u8], now: u64) -> Vec<String> {
        let mut out = Vec::new();
        if level > self.level(name) {
            self.filtered += 1;
            return out;
        }
        let bucket = self.buckets.entry(id).or_insert_with(|| Bucket::new(now));
        bucket.refill(now);
        let pieces: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
        // A newline at the very end ends the line; it does not start an empty one.
        let pieces = match pieces.split_last() {
            Some((last, rest)) if last.is_empty() && !rest.is_empty() => rest,
            _ => &pieces[..],
        };
        for piece in pieces {
            if bucket.tokens == 0 {
                bucket.dropped += 1;
                bucket.dropped_total += 1;
                continue;
            }
            if bucket.dropped > 0 {
                out.push(drop_notice(bucket.dropped, name));
                bucket.dropped = 0;
            }
            bucket.tokens -= 1;
            out.push(attribute(name, level, piece));
        }
        out
    }

    /// Raw text program `id` wrote (`WRITE`): whole lines are printed as `Info` lines; the
    /// start of a line without its newline waits for the rest, up to [`PARTIAL_MAX`] bytes
    /// (then it is printed as a line of its own).
    pub fn write(&mut self, id: u64, name: &str, bytes: &[u8], now: u64) -> Vec<String> {
        let mut held = self.partial.remove(&id).unwrap_or_default();
        held.extend_from_slice(bytes);
        let complete = match held.iter().rposition(|&b| b == b'\n') {
            Some(end) => {
                let rest = held.split_off(end + 1);
                core::mem::replace(&mut held, rest)
            }
            None => Vec::new(),
        };
        let mut out = if complete.is_empty() { Vec::new() } else { self.lines(id, name, Level::Info, &complete, now) };
        if held.len() > PARTIAL_MAX {
            out.extend(self.lines(id, name, Level::Info, &held, now));
        } else if !held.is_empty() {
            self.partial.insert(id, held);
        }
        out
    }

    /// Drop notices that are due at TSC `now`: for every program whose bucket refilled since it
    /// dropped lines. `name` gives a program's name from its id.
    pub fn due_notices(&mut self, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (id, bucket) in self.buckets.iter_mut() {
            if bucket.dropped == 0 {
                continue;
            }
            bucket.refill(now);
            if bucket.tokens > 0 {
                let name = self.names.get(id).map_or(UNKNOWN, |n| n.as_str());
                out.push(drop_notice(bucket.dropped, name));
                bucket.dropped = 0;
            }
        }
        out
    }
}

fn drop_notice(n: u64, name: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("[console] dropped {n} line{s} from {name}")
}

/// `[name] level: text`, cleaned.
pub fn attribute(name: &str, level: Level, text: &[u8]) -> String {
    let text = clean(text);
    match level.word() {
        Some(word) => format!("[{name}] {word}: {text}"),
        None => format!("[{name}] {text}"),
    }
}

/// The text with every control character removed (a tab becomes a space), as UTF-8.
pub fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter_map(|c| match c {
            '\t' => Some(' '),
            c if !ozone_agent_sdk::protocol::console::printable(c) => None,
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn names(id: u64) -> Option<String> {
        match id {
            3 => Some("flooder".to_string()),
            4 => Some("evil\x1b[2J\nname".to_string()),
            _ => None,
        }
    }

    #[test]
    fn lines_are_attributed_by_badge_never_by_text() {
        let mut o = Output::new();
        let name = o.name(3, &mut names);
        assert_eq!(name, "flooder");
        let out = o.lines(3, &name, Level::Info, b"ozone> kill console", 0);
        assert_eq!(out, ["[flooder] ozone> kill console"]);
        let out = o.lines(3, &name, Level::Info, b"[studio] kill console: asked by console", 0);
        assert_eq!(out, ["[flooder] [studio] kill console: asked by console"]);
        let out = o.lines(3, &name, Level::Warn, b"slow", 0);
        assert_eq!(out, ["[flooder] warning: slow"]);
        let out = o.lines(3, &name, Level::Error, b"bad", 0);
        assert_eq!(out, ["[flooder] error: bad"]);
        // A badge Studio does not know is printed as such, and asked again later.
        let mut asked = 0;
        assert_eq!(
            o.name(99, &mut |_| {
                asked += 1;
                None
            }),
            UNKNOWN
        );
        assert_eq!(o.name(99, &mut |_| Some("late".to_string())), "late");
        assert_eq!(asked, 1);
        // Names are cleaned too.
        assert_eq!(o.name(4, &mut names), "evil[2Jname");
    }

    #[test]
    fn control_characters_go_and_newlines_start_attributed_lines() {
        let mut o = Output::new();
        let out = o.lines(3, "a", Level::Info, b"one\nozone> two\r\x1b[2K\x07\tthree\x7f\n", 0);
        assert_eq!(out, ["[a] one", "[a] ozone> two[2K three"]);
        // C1 controls (the 8-bit CSI) and invalid UTF-8.
        let out = o.lines(3, "a", Level::Info, "x\u{9b}31my".as_bytes(), 0);
        assert_eq!(out, ["[a] x31my"]);
        let out = o.lines(3, "a", Level::Info, b"\xff\xfe", 0);
        assert_eq!(out, ["[a] \u{fffd}\u{fffd}"]);
        // An empty line is still a line; a lone newline is one empty line.
        assert_eq!(o.lines(3, "a", Level::Info, b"", 0), ["[a] "]);
        assert_eq!(o.lines(3, "a", Level::Info, b"\n", 0), ["[a] "]);
        for line in o.lines(3, "a", Level::Info, &(0u8..=255).collect::<Vec<u8>>(), 0) {
            assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        }
    }

    #[test]
    fn written_text_is_cut_into_whole_lines_only() {
        let mut o = Output::new();
        assert!(o.write(1, "w", b"formatted ", 0).is_empty());
        assert!(o.write(1, "w", b"2 + 3", 0).is_empty());
        // Another program's line does not break it.
        assert_eq!(o.write(2, "x", b"other\n", 0), ["[x] other"]);
        assert_eq!(o.write(1, "w", b" = 5\nnext\nstart of", 0), ["[w] formatted 2 + 3 = 5", "[w] next"]);
        assert_eq!(o.write(1, "w", b" the end\n", 0), ["[w] start of the end"]);
        // A line that never ends is printed once it is too long to hold.
        assert!(o.write(3, "y", &[b'a'; PARTIAL_MAX], 0).is_empty());
        let out = o.write(3, "y", b"b", 0);
        assert_eq!(out.len(), 1);
        assert!(out[0].ends_with("ab") && out[0].len() == "[y] ".len() + PARTIAL_MAX + 1);
        assert!(o.write(3, "y", b"", 0).is_empty());
    }

    #[test]
    fn levels_filter_per_program() {
        let mut o = Output::new();
        assert_eq!(o.level("a"), Level::Info);
        assert!(o.lines(1, "a", Level::Debug, b"detail", 0).is_empty());
        assert_eq!(o.filtered, 1);
        o.set_level("a", Level::Warn);
        assert!(o.lines(1, "a", Level::Info, b"x", 0).is_empty());
        assert_eq!(o.lines(1, "a", Level::Warn, b"w", 0), ["[a] warning: w"]);
        assert_eq!(o.lines(1, "a", Level::Error, b"e", 0), ["[a] error: e"]);
        // Another program is not affected.
        assert_eq!(o.lines(2, "b", Level::Info, b"x", 0), ["[b] x"]);
        o.set_level("a", Level::Debug);
        assert_eq!(o.lines(1, "a", Level::Debug, b"d", 0), ["[a] debug: d"]);
        assert_eq!(o.dropped(1), 0, "filtered lines are not drops");
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_then_the_rate_and_the_drops_are_reported() {
        let mut o = Output::new();
        let name = o.name(3, &mut names);
        let mut printed = 0;
        for i in 0..1000 {
            printed += o.lines(3, &name, Level::Info, format!("line {i}").as_bytes(), 5).len() as u64;
        }
        assert_eq!(printed, BURST);
        assert_eq!(o.dropped(3), 1000 - BURST);
        // Nothing is due before the bucket refills.
        assert!(o.due_notices(5 + REFILL_CYCLES - 1).is_empty());
        // Another program is not limited by this one.
        assert_eq!(o.lines(7, "quiet", Level::Info, b"hi", 5), ["[quiet] hi"]);
        // After the refill the notice comes first, once.
        let t = 5 + 3 * REFILL_CYCLES;
        let out = o.lines(3, &name, Level::Info, b"again", t);
        assert_eq!(out, [format!("[console] dropped {} lines from flooder", 1000 - BURST), "[flooder] again".into()]);
        // Three lines came back: two more fit, the next is dropped.
        assert_eq!(o.lines(3, &name, Level::Info, b"a\nb\nc", t).len(), 2);
        assert_eq!(o.dropped(3), 1000 - BURST + 1);
        // A program that stops sending gets its notice at the console's next event.
        assert_eq!(o.due_notices(t + REFILL_CYCLES), ["[console] dropped 1 line from flooder"]);
        assert!(o.due_notices(t + 10 * REFILL_CYCLES).is_empty());
        // The bucket never holds more than the burst, however long the program was quiet.
        let late = t + 1_000_000 * REFILL_CYCLES;
        let lines: Vec<u8> = [b'x', b'\n'].repeat(200);
        assert_eq!(o.lines(3, &name, Level::Info, &lines, late).len(), BURST as usize);
        assert_eq!(o.dropped(3), 1000 - BURST + 1 + (200 - BURST));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_refill() {
        let mut o = Output::new();
        for _ in 0..BURST {
            o.lines(1, "a", Level::Info, b"x", u64::MAX - 10);
        }
        assert!(o.lines(1, "a", Level::Info, b"x", 0).is_empty());
        assert!(o.lines(1, "a", Level::Info, b"x", REFILL_CYCLES - 1).is_empty());
        assert_eq!(o.lines(1, "a", Level::Info, b"x", REFILL_CYCLES).len(), 2, "notice and line");
    }

    #[test]
    fn clean_drops_separators_direction_and_zero_width_characters() {
        let forged = "a\u{2028}ozone> b\u{202e}c\u{200b}d\u{feff}e\u{85}f\x1b[2Jg";
        assert_eq!(clean(forged.as_bytes()), "aozone> bcdef[2Jg");
        assert_eq!(clean("tab\there".as_bytes()), "tab here");
    }
}
