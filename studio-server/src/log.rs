//! Studio's logs: its own decisions, and programs' reports — two records that nothing a program
//! sends can mix up.
//!
//! - **Decisions** (start, stop, restart, grant, revoke, kill, refusals, with their reasons) are
//!   numbered and kept in a ring of [`DECISIONS_KEPT`] entries that only Studio writes. Each is
//!   echoed on the serial line as one `[studio] ...` line.
//! - **Reports** (`REPORT`) are kept in a ring of their own ([`REPORTS_KEPT`]), so no number of
//!   them pushes a decision out. Studio attributes each to the program its badge names (never to
//!   anything in the text), replaces control characters (newline, carriage return, ESC, DEL, the
//!   C1 range and the Unicode line and direction controls) with spaces, and keeps at most
//!   [`REPORT_MAX_CHARS`] characters. On the serial line a report is one line
//!   `[studio] report from NAME: text`.
//! - **Budgets**: every program has [`REPORT_BUDGET`] lines in hand. A report takes one, and so
//!   does a refusal Studio logs for the program's request. Every decision Studio records of its
//!   own (anything but a refusal) gives every program one line back, up to the budget. Studio
//!   needs no clock for this: its own decisions are the pace, and a program cannot make them
//!   happen by asking for what it may not have. Over budget, reports are dropped and refusals are
//!   refused without a log line; both are counted per program ([`Dropped`]), the first of each
//!   spell over budget is noted once in the decision log, and `REPORTS` shows the counts.
//!
//! So a program can put at most `REPORT_BUDGET` lines of at most `REPORT_MAX_CHARS` characters on
//! the serial line between two decisions of Studio's own, and none of them starts a line.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ozone_agent_sdk::println;
use ozone_agent_sdk::protocol::studio::{Dropped, LogEntry, REPORT_BUDGET, REPORT_MAX_CHARS, ReportEntry, ReportPage};

/// Decisions kept (older ones are dropped; their numbers are not reused).
pub const DECISIONS_KEPT: usize = 256;
/// Reports kept.
pub const REPORTS_KEPT: usize = 128;
/// The most characters of a decision (its parts from requests are clipped well before this).
pub const DECISION_MAX_CHARS: usize = 400;
/// The most bytes of a decision: with its number and lengths it fits one `LOG` reply, so a page
/// from any decision on holds at least that decision.
pub const DECISION_MAX_BYTES: usize = ozone_agent_sdk::protocol::MAX_PAYLOAD - 16;

// Whether Studio keeps a character in a line: the console's rule, one for both.
use ozone_agent_sdk::protocol::console::printable;

/// `text` as one line: control characters replaced by spaces, at most `max` characters (a cut
/// line ends with `~`).
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n + 1 == max && text.chars().nth(max).is_some() {
            out.push('~');
            break;
        }
        out.push(if printable(c) { c } else { ' ' });
    }
    out
}

/// A program's standing with the log.
#[derive(Debug)]
struct Account {
    id: u64,
    budget: u32,
    dropped_reports: u64,
    unlogged_refusals: u64,
    /// Over budget since the last line it was given.
    over: bool,
}

/// Where a line goes: printed on the serial line too, or kept only.
pub trait Echo {
    fn line(&mut self, text: &str);
}

/// The serial line (the kernel's debug channel).
pub struct Serial;

impl Echo for Serial {
    fn line(&mut self, text: &str) {
        println!("[studio] {text}");
    }
}

pub struct Log {
    decisions: VecDeque<LogEntry>,
    next_decision: u32,
    reports: VecDeque<ReportEntry>,
    next_report: u32,
    accounts: Vec<Account>,
    echo: alloc::boxed::Box<dyn Echo>,
}

/// What became of a report or a refusal's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logged {
    Yes,
    /// Over budget: counted, not logged.
    Dropped,
}

impl Log {
    pub fn new(echo: alloc::boxed::Box<dyn Echo>) -> Log {
        Log {
            decisions: VecDeque::new(),
            next_decision: 0,
            reports: VecDeque::new(),
            next_report: 0,
            accounts: Vec::new(),
            echo,
        }
    }

    /// Where lines go from now on: printed (the serial line), or the console told to pull them.
    pub fn set_echo(&mut self, echo: alloc::boxed::Box<dyn Echo>) {
        self.echo = echo;
    }

    /// The sequence number the next decision gets.
    pub fn next(&self) -> u32 {
        self.next_decision
    }

    fn account(&mut self, id: u64) -> &mut Account {
        let at = match self.accounts.iter().position(|a| a.id == id) {
            Some(at) => at,
            None => {
                self.accounts.push(Account {
                    id,
                    budget: REPORT_BUDGET,
                    dropped_reports: 0,
                    unlogged_refusals: 0,
                    over: false,
                });
                self.accounts.len() - 1
            }
        };
        &mut self.accounts[at]
    }

    fn push_decision(&mut self, text: &str) -> u32 {
        let mut text = one_line(text, DECISION_MAX_CHARS);
        if text.len() > DECISION_MAX_BYTES {
            let mut end = DECISION_MAX_BYTES - 1;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('~');
        }
        self.echo.line(&text);
        let seq = self.next_decision;
        self.next_decision = self.next_decision.wrapping_add(1);
        if self.decisions.len() == DECISIONS_KEPT {
            self.decisions.pop_front();
        }
        self.decisions.push_back(LogEntry { seq, text });
        seq
    }

    /// Record a decision of Studio's own with its reason; returns its sequence number. Every
    /// program's budget grows by one line.
    pub fn decide(&mut self, text: &str) -> u32 {
        for a in &mut self.accounts {
            a.budget = (a.budget + 1).min(REPORT_BUDGET);
        }
        self.push_decision(text)
    }

    /// Record a line of the watch's (`watch.rs`) about a program: in the decision log like a
    /// decision, but refilling no program's budget (the program it is about caused it, and the
    /// watch bounds its own lines per run).
    pub fn note(&mut self, text: &str) -> u32 {
        self.push_decision(text)
    }

    /// Take one line of program `id`'s budget; `false` (and the note, once per spell) if none is
    /// left.
    fn spend(&mut self, id: u64, name: &str) -> bool {
        let a = self.account(id);
        if a.budget > 0 {
            a.budget -= 1;
            a.over = false;
            return true;
        }
        if !a.over {
            a.over = true;
            self.push_decision(&format!(
                "{name} is over its log budget ({REPORT_BUDGET} lines): its further reports are dropped and \
                 refusals not logged, and counted (`reports`), until Studio's own decisions refill it"
            ));
        }
        false
    }

    /// Record Studio's refusal of a request of program `id` (`name`), within its budget.
    pub fn refuse(&mut self, id: u64, name: &str, text: &str) -> Logged {
        if self.spend(id, name) {
            self.push_decision(text);
            Logged::Yes
        } else {
            self.account(id).unlogged_refusals += 1;
            Logged::Dropped
        }
    }

    /// Record program `id`'s (`name`, from its badge) report `text`, within its budget.
    pub fn report(&mut self, id: u64, name: &str, text: &str) -> Logged {
        if !self.spend(id, name) {
            self.account(id).dropped_reports += 1;
            return Logged::Dropped;
        }
        let text = one_line(text, REPORT_MAX_CHARS);
        self.echo.line(&format!("report from {name}: {text}"));
        let seq = self.next_report;
        self.next_report = self.next_report.wrapping_add(1);
        if self.reports.len() == REPORTS_KEPT {
            self.reports.pop_front();
        }
        self.reports.push_back(ReportEntry { seq, from: String::from(name), text });
        Logged::Yes
    }

    /// Decisions from sequence number `from` on, as many as `fits` allows.
    pub fn decisions(&self, from: u32, fits: impl FnMut(&[LogEntry]) -> bool) -> Vec<LogEntry> {
        page(self.decisions.iter().filter(|e| e.seq >= from), fits)
    }

    /// Reports from sequence number `from` on, with the drop counts (`name_of` gives a program's
    /// name), as much as `fits` allows (the counts first).
    pub fn reports(
        &self,
        from: u32,
        name_of: impl Fn(u64) -> String,
        mut fits: impl FnMut(&ReportPage) -> bool,
    ) -> ReportPage {
        let mut out = ReportPage::default();
        for a in self.accounts.iter().filter(|a| a.dropped_reports + a.unlogged_refusals > 0) {
            out.dropped.push(Dropped {
                from: name_of(a.id),
                reports: a.dropped_reports,
                refusals: a.unlogged_refusals,
            });
            if !fits(&out) {
                out.dropped.pop();
                return out;
            }
        }
        for e in self.reports.iter().filter(|e| e.seq >= from) {
            out.entries.push(e.clone());
            if !fits(&out) {
                out.entries.pop();
                break;
            }
        }
        out
    }

    #[cfg(test)]
    pub fn decision_count(&self) -> usize {
        self.decisions.len()
    }

    #[cfg(test)]
    pub fn report_count(&self) -> usize {
        self.reports.len()
    }
}

fn page<'a, T: Clone + 'a>(items: impl Iterator<Item = &'a T>, mut fits: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let mut out = Vec::new();
    for e in items {
        out.push(e.clone());
        if !fits(&out) {
            out.pop();
            break;
        }
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::rc::Rc;
    use core::cell::RefCell;

    /// Collects the lines that would go to the serial line.
    #[derive(Clone, Default)]
    pub struct Lines(pub Rc<RefCell<Vec<String>>>);

    impl Echo for Lines {
        fn line(&mut self, text: &str) {
            self.0.borrow_mut().push(format!("[studio] {text}"));
        }
    }

    fn log() -> (Log, Lines) {
        let lines = Lines::default();
        (Log::new(Box::new(lines.clone())), lines)
    }

    #[test]
    fn numbers_decisions_and_keeps_the_newest() {
        let (mut log, _) = log();
        for i in 0..(DECISIONS_KEPT + 10) {
            assert_eq!(log.decide(&format!("decision {i}")), i as u32);
        }
        assert_eq!(log.decision_count(), DECISIONS_KEPT);
        let all = log.decisions(0, |_| true);
        assert_eq!(all.first().unwrap().seq, 10);
        assert_eq!(all.last().unwrap().text, format!("decision {}", DECISIONS_KEPT + 9));
        let three = log.decisions(100, |p| p.len() <= 3);
        assert_eq!(three.iter().map(|e| e.seq).collect::<Vec<_>>(), [100, 101, 102]);
    }

    /// A decision of 400 wide characters is longer than a message: it is cut to fit one page
    /// (else `LOG` from it answers an empty page for ever, and its readers stop there).
    #[test]
    fn every_decision_fits_one_page() {
        let (mut log, _) = log();
        let seq = log.decide(&format!("grant {}", "\u{1d11e}".repeat(1000)));
        log.decide("after");
        let fits = |p: &[LogEntry]| crate::state::encoded_len(&p) <= ozone_agent_sdk::protocol::MAX_PAYLOAD;
        let page = log.decisions(seq, fits);
        assert_eq!(page.first().map(|e| e.seq), Some(seq), "{page:?}");
        assert!(page[0].text.ends_with('~') && page[0].text.starts_with("grant \u{1d11e}"));
        assert_eq!(log.decisions(seq + 1, fits)[0].text, "after");
    }

    #[test]
    fn lines_lose_their_control_characters_and_length() {
        let forged = "ok\n[studio] kill console: asked by console\r\x1b[2J\x1b]0;t\x07\u{85}\u{2028}\u{202e}x\x7f";
        let line = one_line(forged, 400);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.starts_with("ok [studio] kill console"));
        assert_eq!(line.chars().count(), forged.chars().count());
        let long = one_line(&"é".repeat(1000), REPORT_MAX_CHARS);
        assert_eq!(long.chars().count(), REPORT_MAX_CHARS);
        assert!(long.ends_with('~'));
        assert_eq!(one_line(&"a".repeat(REPORT_MAX_CHARS), REPORT_MAX_CHARS), "a".repeat(REPORT_MAX_CHARS));
        assert_eq!(one_line("", 10), "");
    }

    /// Finding 3: forged lines, a flood of reports, and a flood of long reports. Decisions stay;
    /// every line printed is Studio's, attributed and bounded; the drops are counted.
    #[test]
    fn reports_cannot_forge_erase_or_flood() {
        let (mut log, lines) = log();
        for name in ["console", "echo", "hostile"] {
            log.decide(&format!("start {name} (id 1): in the system description"));
        }
        let forged = "x\n[studio] kill console: asked by console\x1b[1A\x1b[2K[studio] deny console";
        assert_eq!(log.report(7, "hostile", forged), Logged::Yes);
        for i in 0..300 {
            log.report(7, "hostile", &format!("flood {i}"));
        }
        let big = "A".repeat(900);
        for _ in 0..2000 {
            log.report(7, "hostile", &big);
        }
        // The decisions are all there, and reports went to their own ring.
        let decisions = log.decisions(0, |_| true);
        assert_eq!(decisions.len(), 4, "{decisions:#?}");
        assert!(decisions[..3].iter().all(|d| d.text.starts_with("start ")));
        assert!(decisions[3].text.starts_with("hostile is over its log budget"));
        assert_eq!(log.report_count(), REPORT_BUDGET as usize);
        let page = log.reports(0, |_| String::from("hostile"), |_| true);
        assert_eq!(
            page.dropped,
            vec![Dropped { from: "hostile".into(), reports: 301 + 2000 - REPORT_BUDGET as u64, refusals: 0 }]
        );
        assert!(page.entries.iter().all(|e| e.from == "hostile"));
        // Every line printed: Studio's, one line, bounded; the forgery is inside a report line.
        let printed = lines.0.borrow();
        assert_eq!(printed.len(), 3 + 1 + REPORT_BUDGET as usize);
        for l in printed.iter() {
            assert!(l.starts_with("[studio] "), "{l}");
            assert!(!l.contains('\n') && !l.contains('\x1b') && l.len() < 600, "{l:?}");
        }
        assert!(printed[3].starts_with("[studio] report from hostile: x [studio] kill console"));
        // A decision of Studio's own gives one line back, and the spell's note comes again only
        // after the program was back within budget.
        drop(printed);
        log.decide("grant echo `console`: asked by console");
        assert_eq!(log.report(7, "hostile", "again"), Logged::Yes);
        assert_eq!(log.report(7, "hostile", "and again"), Logged::Dropped);
        assert_eq!(log.decisions(0, |_| true).len(), 6);
        // Another program keeps its own budget.
        assert_eq!(log.report(8, "echo", "shaper: denied method 1"), Logged::Yes);
    }

    #[test]
    fn refusals_share_the_budget_and_do_not_refill_it() {
        let (mut log, _) = log();
        log.decide("start hostile");
        for _ in 0..REPORT_BUDGET {
            assert_eq!(log.refuse(3, "hostile", "refuse hostile: LIST: needs the `admin` privilege"), Logged::Yes);
        }
        for _ in 0..1000 {
            assert_eq!(log.refuse(3, "hostile", "refuse hostile: LIST"), Logged::Dropped);
        }
        assert_eq!(log.report(3, "hostile", "x"), Logged::Dropped);
        assert_eq!(log.decision_count(), 1 + REPORT_BUDGET as usize + 1);
        let page = log.reports(0, |_| String::from("hostile"), |_| true);
        assert_eq!(page.dropped, vec![Dropped { from: "hostile".into(), reports: 1, refusals: 1000 }]);
        // Pages fit what the caller allows, the counts first.
        let none = log.reports(0, |_| String::from("hostile"), |_| false);
        assert_eq!(none, ReportPage::default());
    }
}
