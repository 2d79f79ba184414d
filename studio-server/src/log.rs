//! Studio's decision log: every decision (start, restart, grant, revoke, kill, refusal) with its
//! reason, numbered, kept in a bounded ring and echoed to the console.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::studio::LogEntry;

/// Entries kept (older ones are dropped; their numbers are not reused).
pub const KEEP: usize = 256;

pub struct Log {
    entries: VecDeque<LogEntry>,
    next: u32,
}

impl Log {
    pub const fn new() -> Log {
        Log { entries: VecDeque::new(), next: 0 }
    }

    /// Record a decision; returns its sequence number.
    pub fn record(&mut self, text: String) -> u32 {
        let seq = self.next;
        self.next += 1;
        if self.entries.len() == KEEP {
            self.entries.pop_front();
        }
        self.entries.push_back(LogEntry { seq, text });
        seq
    }

    /// The sequence number the next decision gets.
    pub fn next(&self) -> u32 {
        self.next
    }

    /// Entries from sequence number `from` on, as many as `fits` allows.
    pub fn page(&self, from: u32, mut fits: impl FnMut(&[LogEntry]) -> bool) -> Vec<LogEntry> {
        let mut out = Vec::new();
        for e in self.entries.iter().filter(|e| e.seq >= from) {
            out.push(e.clone());
            if !fits(&out) {
                out.pop();
                break;
            }
        }
        out
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn numbers_entries_and_keeps_the_newest() {
        let mut log = Log::new();
        for i in 0..(KEEP + 10) {
            assert_eq!(log.record(format!("decision {i}")), i as u32);
        }
        assert_eq!(log.len(), KEEP);
        let all = log.page(0, |_| true);
        assert_eq!(all.first().unwrap().seq, 10);
        assert_eq!(all.last().unwrap().text, format!("decision {}", KEEP + 9));
        let three = log.page(100, |p| p.len() <= 3);
        assert_eq!(three.iter().map(|e| e.seq).collect::<Vec<_>>(), [100, 101, 102]);
    }
}
