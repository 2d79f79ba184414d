//! Per-thread event traces (`ozone_abi::trace`): the ring a traced thread's syscalls and faults
//! are written to, in a 4 KiB frame whose capability the thread's TCB holds a copy of (slot
//! [`TCB_TRACE`](super::tcb::TCB_TRACE)). The holder of the telemetry capability starts and
//! stops a trace and acknowledges what it has read (`object/telemetry.rs`).
//!
//! # The cursor
//!
//! [`Trace`] keeps a write cursor `next` (a kernel address inside the frame) and a limit `stop`:
//! a record may be written at `next` without any other check while `next < stop`. `stop` is the
//! nearer of the ring's end and the first record not yet acknowledged, so the IPC fastpaths
//! append with one comparison, two stores and a bump (`fast_append`), and everything else — the
//! wrap to the ring's start, a full ring's drop count — is done here, on the general path, when
//! `next` reaches `stop`. An untraced thread has `next == stop == 0`.
//!
//! # Never dangling
//!
//! The cursor points into the frame whose capability copy is in the TCB's trace slot. That slot
//! is flagged in its derivation node ([`MdbNode::traces`](super::cte::MdbNode::traces)); emptying
//! it for any reason (TRACE_OFF, a new TRACE, a revoke of the frame's capability or of its
//! untyped, the TCB's deletion) goes through [`mdb::empty_slot`](super::mdb), which then calls
//! [`slot_emptied`], and the trace is off before the frame can be reused (its memory can only be
//! retyped once every capability to it, the copy included, is gone). The kernel writes the ring
//! and never reads it: what the frame holds (anyone holding the frame may write it) means
//! nothing to the kernel.

use core::sync::atomic::{AtomicU64, Ordering};

use ozone_abi::profile;
use ozone_abi::trace::{ObjectKind, RECORD_BYTES, RING_RECORDS, syscall_word};

const RING_BYTES: u64 = (RECORD_BYTES * RING_RECORDS) as u64;
const RECORD: u64 = RECORD_BYTES as u64;

/// The current timer tick shifted into a record's tick field (bits 32..64 of word 0), so an
/// append ORs it in with one load. Set by the timer interrupt ([`set_tick`]).
static TICK_WORD: AtomicU64 = AtomicU64::new(0);

/// The timer interrupt counted tick `ticks`: records made from now on carry it.
pub fn set_tick(ticks: u64) {
    TICK_WORD.store(ticks << 32, Ordering::Relaxed);
    for (word, record) in FAST_WORDS.iter().zip(FAST_RECORDS) {
        word.store(record | ticks << 32, Ordering::Relaxed);
    }
}

/// The tick field for a record made now.
#[inline(always)]
pub fn tick_word() -> u64 {
    TICK_WORD.load(Ordering::Relaxed)
}

/// Word 0 of the IPC fastpaths' records ([`FAST_CALL`], [`FAST_REPLY_RECV`]) made now: the
/// syscall on an endpoint, result 0, with the current tick, so that an append loads it whole
/// (kept by [`set_tick`]).
static FAST_WORDS: [AtomicU64; 2] = [AtomicU64::new(FAST_RECORDS[0]), AtomicU64::new(FAST_RECORDS[1])];
/// Which of the fastpaths' records.
pub const FAST_CALL: usize = 0;
pub const FAST_REPLY_RECV: usize = 1;
/// The fastpaths' records' word 0 without the tick.
const FAST_RECORDS: [u64; 2] =
    [syscall_word(profile::CALL, ObjectKind::Endpoint), syscall_word(profile::REPLY_RECV, ObjectKind::Endpoint)];

/// Word 0 of fastpath record `which` ([`FAST_CALL`] or [`FAST_REPLY_RECV`]) made now.
#[inline(always)]
pub fn fast_word(which: usize) -> u64 {
    FAST_WORDS[which].load(Ordering::Relaxed)
}

/// A thread's trace state (all zero: not traced).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Where the next record goes (kernel address inside the frame); 0 when off.
    next: u64,
    /// Records may be written at `next` while `next < stop`.
    stop: u64,
    /// The frame's kernel address; 0 when off.
    base: u64,
    /// Records written before the current lap of the ring (a multiple of `RING_RECORDS`).
    lap: u64,
    /// Records the reader has consumed.
    acked: u64,
    /// Records that found the ring full.
    dropped: u64,
    /// A record begun before a syscall ran ([`Trace::begin`]), finished after it: its two words
    /// without the result and the tick (word 0 is never 0 in a record: 0 is none).
    begun: [u64; 2],
}

impl Trace {
    pub const OFF: Trace = Trace { next: 0, stop: 0, base: 0, lap: 0, acked: 0, dropped: 0, begun: [0, 0] };

    /// Start a new trace into the 4 KiB frame at kernel address `base` (page aligned, not 0).
    pub fn start(&mut self, base: u64) {
        debug_assert!(base != 0 && base.is_multiple_of(RING_BYTES));
        *self = Trace { next: base, stop: 0, base, lap: 0, acked: 0, dropped: 0, begun: [0, 0] };
        self.refresh_stop();
    }

    pub const fn is_on(&self) -> bool {
        self.base != 0
    }

    /// The frame's kernel address, if on.
    pub const fn frame(&self) -> Option<u64> {
        if self.base != 0 { Some(self.base) } else { None }
    }

    /// Records written since the trace started.
    pub const fn written(&self) -> u64 {
        if self.base == 0 { 0 } else { self.lap + (self.next - self.base) / RECORD }
    }

    pub const fn dropped(&self) -> u64 {
        self.dropped
    }

    pub const fn acked(&self) -> u64 {
        self.acked
    }

    /// The fastpaths' append: write `words` at the cursor if there is room before `stop` and
    /// say so; `false` leaves everything as it was (the general path then appends, wrapping or
    /// counting a drop).
    #[inline(always)]
    pub fn fast_append(&mut self, words: [u64; 2]) -> bool {
        let at = self.next;
        if at >= self.stop {
            return false;
        }
        // Two word stores (one of the array would go through the stack).
        // SAFETY: `base <= at < stop <= base + 4096` (the invariant `refresh_stop` keeps), and
        // the frame at `base` is live while the trace is on (module docs: the trace goes off
        // before the frame's memory can be reused); 16-byte records are 16-byte aligned.
        unsafe {
            core::ptr::write_volatile(at as *mut u64, words[0]);
            core::ptr::write_volatile((at + 8) as *mut u64, words[1]);
        }
        self.next = at + RECORD;
        true
    }

    /// Begin the record of a syscall about to run (`words[0]` without result and tick).
    pub fn begin(&mut self, words: [u64; 2]) {
        if self.base != 0 {
            self.begun = words;
        }
    }

    /// Whether a record was begun and not finished.
    #[inline(always)]
    pub const fn begun(&self) -> bool {
        self.begun[0] != 0
    }

    /// Finish the begun record with `rest` (result and tick) ORed into its word 0, and append it.
    pub fn finish(&mut self, rest: u64) {
        let [w0, w1] = core::mem::take(&mut self.begun);
        if w0 != 0 {
            self.append([w0 | rest, w1]);
        }
    }

    /// Append a record (the general path): wraps, counts a drop when the ring is full, does
    /// nothing when off.
    pub fn append(&mut self, words: [u64; 2]) {
        if self.base == 0 {
            return;
        }
        self.wrap();
        if !self.fast_append(words) {
            self.dropped += 1;
            return;
        }
        self.wrap();
        self.refresh_stop();
    }

    /// The reader has consumed the records before sequence number `upto`: it must not go back
    /// nor past what was written.
    pub fn ack(&mut self, upto: u64) -> Result<(), ozone_abi::Error> {
        if self.base == 0 {
            return Err(ozone_abi::Error::IllegalOperation);
        }
        if upto < self.acked || upto > self.written() {
            return Err(ozone_abi::Error::RangeError);
        }
        self.acked = upto;
        self.wrap();
        self.refresh_stop();
        Ok(())
    }

    /// A cursor at the ring's end goes back to its start, one lap on, with its limit
    /// recomputed (the fastpaths may have left it at the ring's end).
    fn wrap(&mut self) {
        if self.next == self.base + RING_BYTES {
            self.lap += RING_RECORDS as u64;
            self.next = self.base;
            self.refresh_stop();
        }
    }

    /// `stop` for the cursor: the nearer of the ring's end and the first unacknowledged record.
    fn refresh_stop(&mut self) {
        let unread = self.written() - self.acked;
        let room = RING_RECORDS as u64 - unread;
        let to_end = (self.base + RING_BYTES - self.next) / RECORD;
        self.stop = self.next + room.min(to_end) * RECORD;
    }

    /// The invariants the cursor keeps (for the invariant checker and the tests): off is all
    /// zero; on, `base` is page aligned, `base <= next < base + 4096` on a record boundary,
    /// `next <= stop <= base + 4096`, and no more unread records than the ring holds.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.base == 0 {
            return if *self == Trace::OFF { Ok(()) } else { Err("an untraced thread has trace state") };
        }
        if !self.base.is_multiple_of(RING_BYTES) {
            return Err("the ring is not page aligned");
        }
        if self.next < self.base
            || self.next > self.base + RING_BYTES
            || !(self.next - self.base).is_multiple_of(RECORD)
        {
            return Err("the cursor is outside the ring or off a record boundary");
        }
        if self.stop < self.next || self.stop > self.base + RING_BYTES {
            return Err("the limit is behind the cursor or past the ring");
        }
        if !self.lap.is_multiple_of(RING_RECORDS as u64) || self.acked > self.written() {
            return Err("the counts disagree");
        }
        if self.written() - self.acked > RING_RECORDS as u64 {
            return Err("more unread records than the ring holds");
        }
        if self.begun() {
            return Err("a record begun and not finished outside a syscall");
        }
        // The fastpaths may write up to `stop` without a check: never over an unread record.
        let writable = (self.stop - self.next) / RECORD;
        if self.written() + writable > self.acked + RING_RECORDS as u64 {
            return Err("the limit lets the fastpaths write over unread records");
        }
        Ok(())
    }
}

/// The trace slot of the TCB at `tcb` was emptied (its derivation node was flagged): the
/// thread's trace is off, its profile no longer sends its IPC to the traced fastpaths and its
/// syscalls no longer enter the traced syscall path (as [`Tcb::set_traced`](super::tcb::Tcb::set_traced)).
///
/// # Safety
/// `tcb` is a live TCB (the flag is only ever set on the trace slot of one, and its slots are
/// emptied before it goes), and no reference to its `trace`, `profile` or `syscall_handler` is
/// held by the caller (the deletion code works on slots through raw pointers).
pub unsafe fn slot_emptied(tcb: *mut super::tcb::Tcb) {
    // SAFETY: per the contract; the trace and the handler are written through the raw pointer,
    // and the one reference made (to the profile) ends within its statement.
    unsafe {
        (&raw mut (*tcb).trace).write(Trace::OFF);
        (*tcb).profile.set_traced(false);
        (&raw mut (*tcb).syscall_handler).write(super::tcb::syscall_handler(false));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(4096))]
    struct Page([u64; 512]);

    /// A ring page for a test: raw, with its address exposed, as the kernel's frames are (the
    /// kernel writes through the address; leaked, as the test worlds are).
    fn page() -> u64 {
        Box::into_raw(Box::new(Page([0; 512]))).expose_provenance() as u64
    }

    fn record(page: u64, seq: u64) -> [u64; 2] {
        let at = page + (seq % RING_RECORDS as u64) * 16;
        // SAFETY: `page` is a live test page; the record lies inside it; read only.
        unsafe { core::ptr::read_volatile(core::ptr::with_exposed_provenance::<[u64; 2]>(at as usize)) }
    }

    #[test]
    fn the_ring_never_overwrites_unread_records_and_counts_what_it_drops() {
        let base = page();
        let mut t = Trace::OFF;
        t.append([1, 1]);
        assert_eq!((t.written(), t.dropped()), (0, 0), "off: nothing happens");
        assert_eq!(t.ack(0), Err(ozone_abi::Error::IllegalOperation));
        t.start(base);
        let mut seq = 0u64;
        // Fill the ring, half by the fastpath's append, half by the general path's.
        while seq < RING_RECORDS as u64 {
            if seq.is_multiple_of(2) {
                assert!(t.fast_append([seq, !seq]));
            } else {
                t.append([seq, !seq]);
            }
            t.check().unwrap();
            seq += 1;
        }
        assert!(!t.fast_append([999, 999]), "full: the fastpath refuses");
        t.append([999, 999]);
        assert_eq!((t.written(), t.dropped()), (256, 1));
        assert_eq!(record(base, 0), [0, !0], "the oldest unread record is intact");
        assert_eq!(t.ack(257), Err(ozone_abi::Error::RangeError), "cannot acknowledge the future");
        t.ack(10).unwrap();
        assert_eq!(t.ack(9), Err(ozone_abi::Error::RangeError), "cannot go back");
        t.check().unwrap();
        for _ in 0..10 {
            assert!(
                t.fast_append([seq, !seq]) || {
                    t.append([seq, !seq]);
                    true
                }
            );
            seq += 1;
            t.check().unwrap();
        }
        assert_eq!(t.written(), 266);
        t.append([7, 7]);
        assert_eq!(t.dropped(), 2, "full again after ten more");
        assert_eq!(record(base, 256), [256, !256], "the first of the second lap is where record 0 was");
        assert_eq!(record(base, 10), [10, !10], "the first unread record is intact");
        // The fastpath alone fills a lap to the ring's end; the general path's next record wraps
        // and must see the ring as full until the reader acknowledges.
        let mut u = Trace::OFF;
        u.start(page());
        for i in 0..RING_RECORDS as u64 {
            assert!(u.fast_append([i, i]));
        }
        u.append([1000, 1000]);
        assert_eq!((u.written(), u.dropped()), (256, 1), "wrapped onto unread records: dropped");
        u.check().unwrap();
        u.ack(1).unwrap();
        u.append([1001, 1001]);
        assert_eq!((u.written(), u.dropped()), (257, 1));
        assert!(!u.fast_append([1002, 1002]), "record 1 is unread");
        // A long run with random acknowledgements keeps the invariants and loses nothing read.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..if cfg!(miri) { 300 } else { 20_000 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let before = (t.written(), t.dropped());
            if x.is_multiple_of(3) {
                let upto = t.acked() + (x >> 8) % (t.written() - t.acked() + 1);
                t.ack(upto).unwrap();
            } else if x % 3 == 1 {
                if !t.fast_append([before.0, !before.0]) {
                    t.append([before.0, !before.0]);
                }
            } else {
                t.append([before.0, !before.0]);
            }
            t.check().unwrap();
            let after = (t.written(), t.dropped());
            assert!(after.0 + after.1 >= before.0 + before.1);
            for s in t.acked()..t.written() {
                assert_eq!(record(base, s), [s, !s], "unread record {s} intact");
            }
        }
    }
}
