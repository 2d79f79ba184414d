//! The journal's logic, host-tested: Studio's decisions batched into store log records, and
//! the syscall shaper's profiles as kept in the store ([`Profiles`]).
//!
//! A record is lines `BOOT SEQ TEXT`, one per decision, at most [`MAX_RECORD`] bytes (one store
//! message); a decision longer than a record alone is cut and marked with `~`. A gap in Studio's
//! sequence numbers (its bounded log overflowed before the journal read it) is kept as a line
//! `BOOT FIRST-LAST (lost: Studio's log overflowed)`, so the record says what it does not hold.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::shaper::Kept;
use ozone_agent_sdk::protocol::studio::LogEntry;

/// The store key the shaper's profiles are kept under.
pub const PROFILES: &[u8] = b"profiles";

/// The layout of the kept profiles: this byte, then the postcard encoding of `Vec<Kept>`. A
/// value of another version is not read (the agents learn again).
pub const PROFILES_VERSION: u8 = 1;

/// The shaper's profiles as the journal keeps them: one per agent, in the order `SAVED` gave
/// them (a name given twice, which a shaper that changed between pages can do, keeps the first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profiles(pub Vec<Kept>);

impl Profiles {
    /// Add `k` unless its agent is in already; whether it was added.
    pub fn add(&mut self, k: Kept) -> bool {
        if self.0.iter().any(|p| p.agent == k.agent) {
            return false;
        }
        self.0.push(k);
        true
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = alloc::vec![PROFILES_VERSION];
        // Encoding a Vec of plain structs into a Vec cannot fail.
        out.extend(postcard::to_allocvec(&self.0).unwrap_or_default());
        out
    }

    /// Read the stored form; `None` for another version or bytes that do not decode whole.
    pub fn decode(bytes: &[u8]) -> Option<Profiles> {
        let (&version, rest) = bytes.split_first()?;
        if version != PROFILES_VERSION {
            return None;
        }
        match postcard::take_from_bytes::<Vec<Kept>>(rest) {
            Ok((v, [])) => Some(Profiles(v)),
            _ => None,
        }
    }
}

/// The most bytes of one record (a store log record travels in one message).
pub const MAX_RECORD: usize = ozone_agent_sdk::protocol::store::MAX_PIECE;

/// Turns pages of Studio's log into records, remembering where it is.
#[derive(Debug)]
pub struct Batcher {
    boot: u64,
    /// The next sequence number expected.
    next: u32,
}

impl Batcher {
    pub fn new(boot: u64) -> Batcher {
        Batcher { boot, next: 0 }
    }

    /// The sequence number to ask Studio's log from.
    pub fn next(&self) -> u32 {
        self.next
    }

    /// The lines for `page` (entries already taken are skipped), and the new position.
    pub fn lines(&mut self, page: &[LogEntry]) -> Vec<String> {
        let mut out = Vec::new();
        for e in page {
            if e.seq < self.next {
                continue;
            }
            if e.seq > self.next {
                out.push(format!("{} {}-{} (lost: Studio's log overflowed)", self.boot, self.next, e.seq - 1));
            }
            // Studio's decisions are one line already; a record line stays one line regardless.
            let text: String = e.text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            out.push(format!("{} {} {}", self.boot, e.seq, text));
            self.next = e.seq.saturating_add(1);
        }
        out
    }
}

/// Pack lines into records of at most [`MAX_RECORD`] bytes (lines joined by `\n`).
pub fn records(lines: &[String]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for l in lines {
        let mut bytes = l.as_bytes();
        let cut;
        if bytes.len() > MAX_RECORD {
            // Cut at a character boundary, leaving room for the mark.
            let mut end = MAX_RECORD - 1;
            while !l.is_char_boundary(end) {
                end -= 1;
            }
            cut = [&bytes[..end], b"~"].concat();
            bytes = &cut;
        }
        let need = bytes.len() + usize::from(!cur.is_empty());
        if cur.len() + need > MAX_RECORD {
            out.push(core::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(b'\n');
        }
        cur.extend_from_slice(bytes);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The first decision a record holds (the number on its first line): where nothing is kept from
/// if it cannot be appended.
pub fn first_decision(record: &[u8]) -> Option<u32> {
    let line = record.split(|&b| b == b'\n').next()?;
    let field = line.split(|&b| b == b' ').nth(1)?;
    let digits = field.split(|&b| b == b'-').next()?;
    core::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn entry(seq: u32, text: &str) -> LogEntry {
        LogEntry { seq, text: text.to_string() }
    }

    #[test]
    fn kept_profiles_round_trip_and_anything_else_is_refused() {
        let k = |agent: &str, kernel| Kept {
            agent: agent.into(),
            kernel,
            methods: vec![("echo".into(), Some(0b101)), ("shaper".into(), None)],
        };
        let mut p = Profiles::default();
        assert!(p.add(k("alpha", 3)));
        assert!(p.add(k("beta", u64::MAX)));
        assert!(!p.add(k("alpha", 0)), "one per agent: the first kept");
        assert_eq!(p.0[0].kernel, 3);
        let bytes = p.encode();
        assert_eq!(bytes[0], PROFILES_VERSION);
        assert_eq!(Profiles::decode(&bytes), Some(p.clone()));
        assert_eq!(Profiles::decode(&Profiles::default().encode()), Some(Profiles::default()));
        // Another version, a cut, trailing bytes, nothing: not read.
        let mut other = bytes.clone();
        other[0] = PROFILES_VERSION + 1;
        assert_eq!(Profiles::decode(&other), None);
        for cut in 0..bytes.len() {
            assert_eq!(Profiles::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Profiles::decode(&longer), None);
        // Random bytes never panic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..2000 {
            let junk: Vec<u8> = (0..n % 200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = Profiles::decode(&junk);
        }
    }

    #[test]
    fn pages_become_lines_once_and_gaps_are_named() {
        let mut b = Batcher::new(3);
        assert_eq!(b.lines(&[entry(0, "start a"), entry(1, "kill a")]), ["3 0 start a", "3 1 kill a"]);
        assert_eq!(b.next(), 2);
        // A page asked again from an older place: nothing twice.
        assert!(b.lines(&[entry(1, "kill a")]).is_empty());
        // Studio's ring overflowed: 2..=4 are gone.
        assert_eq!(b.lines(&[entry(5, "x")]), ["3 2-4 (lost: Studio's log overflowed)", "3 5 x"]);
        assert_eq!(b.next(), 6);
    }

    #[test]
    fn records_are_bounded_and_hold_every_line() {
        let lines: Vec<String> = (0..100).map(|i| format!("1 {i} {}", "d".repeat(i % 50))).collect();
        let recs = records(&lines);
        assert!(recs.iter().all(|r| !r.is_empty() && r.len() <= MAX_RECORD));
        let joined: Vec<String> =
            recs.iter().flat_map(|r| core::str::from_utf8(r).unwrap().split('\n').map(String::from)).collect();
        assert_eq!(joined, lines);
        // A line longer than a record is cut and marked, never dropped, never split.
        let long = format!("1 0 {}é", "x".repeat(MAX_RECORD));
        let recs = records(&[long.clone(), "1 1 after".to_string()]);
        assert_eq!(recs.len(), 2);
        assert!(recs[0].len() <= MAX_RECORD && recs[0].ends_with(b"~"));
        assert!(core::str::from_utf8(&recs[0]).is_ok());
        assert_eq!(recs[1], b"1 1 after");
        assert!(records(&[]).is_empty());
    }

    /// A record that cannot be appended loses its decisions and every later one: the first of
    /// them is named, not the next one to read (which is past every record of the pull).
    #[test]
    fn a_record_names_its_first_decision() {
        let mut b = Batcher::new(2);
        let mut page: Vec<LogEntry> = (0..40).map(|i| entry(i, &"d".repeat(60))).collect();
        page.push(entry(45, "after a gap"));
        let recs = records(&b.lines(&page));
        assert!(recs.len() > 2);
        assert_eq!(first_decision(&recs[0]), Some(0));
        let second = core::str::from_utf8(&recs[1]).unwrap();
        let seq: u32 = second.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(seq > 0 && seq < 40);
        assert_eq!(first_decision(&recs[1]), Some(seq));
        assert_eq!(first_decision(b"2 40-44 (lost: Studio's log overflowed)\n2 45 x"), Some(40));
        assert_eq!(first_decision(b"garbage"), None);
    }

    /// Even a decision text with a line break (Studio removes them) stays one record line, so it
    /// cannot forge a `BOOT SEQ TEXT` line.
    #[test]
    fn a_decision_is_one_line_whatever_its_text() {
        let mut b = Batcher::new(1);
        let lines = b.lines(&[entry(0, "x\n1 1 kill console\r\x1b[2K")]);
        assert_eq!(lines, ["1 0 x 1 1 kill console  [2K"]);
        let recs = records(&lines);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].iter().filter(|&&c| c == b'\n').count(), 0);
    }
}
