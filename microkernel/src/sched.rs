//! The scheduler: 256 fixed priorities, round robin within a priority, timeslices.
//!
//! Runnable threads other than the current one wait in one FIFO queue per priority (intrusive
//! lists through the TCBs' `sched_next`/`sched_prev`), with a 256-bit bitmap of non-empty
//! queues so the highest priority is found in constant time. The current thread is not queued
//! while it runs. As in seL4: a thread preempted by a higher-priority one goes back to the *head*
//! of its queue (it keeps its turn); one that yields or uses up its timeslice goes to the *tail*.
//! When no thread is runnable the kernel idles (there is no idle TCB).
//!
//! Safety: every TCB pointer handed to the scheduler must point at a live TCB, and a TCB must be
//! removed (`remove`) before its memory is reused; the TCB finalisation path does that.

use crate::object::kptr::kptr;
use crate::object::tcb::{TIMESLICE_TICKS, Tcb};

/// Number of priorities.
pub const PRIORITIES: usize = 256;

/// What the scheduler decided for the return to user mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Resume this thread.
    Run(*mut Tcb),
    /// Nothing is runnable: idle until an interrupt makes something runnable.
    Idle,
}

pub struct Scheduler {
    heads: [u64; PRIORITIES],
    tails: [u64; PRIORITIES],
    bitmap: [u64; PRIORITIES / 64],
    /// Number of queued threads (a quick "anyone ready?" for the fastpaths).
    ready: usize,
    current: *mut Tcb,
    /// The current thread's priority when it became current (a wake-up compares against it
    /// without reaching into the current thread, which the syscall being served is using; a
    /// priority change of the current thread asks for a reschedule anyway).
    current_priority: u8,
    /// Set when something happened that may change who should run (a wake-up of a higher
    /// priority thread, a block, a yield).
    reschedule: bool,
}

// SAFETY: the scheduler is only used by the one CPU that runs the kernel, with interrupts off.
unsafe impl Send for Scheduler {}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new()
    }
}

/// The scheduler keeps threads by address, as its queue links do: a pointer made from the
/// address, not one derived from whatever reference the caller had to the thread (which would
/// end with that reference).
#[inline(always)]
fn by_address(t: *mut Tcb) -> *mut Tcb {
    t as u64 as *mut Tcb
}

/// The TCB at `addr`.
///
/// # Safety
/// `addr` is a live TCB (a queue link, the current thread, or a caller's live TCB), and no other
/// reference to it is used while the returned one is.
unsafe fn tcb<'a>(addr: u64) -> &'a mut Tcb {
    // SAFETY: per the contract.
    unsafe { &mut *kptr::<Tcb>(addr) }
}

impl Scheduler {
    pub const fn new() -> Scheduler {
        Scheduler {
            heads: [0; PRIORITIES],
            tails: [0; PRIORITIES],
            bitmap: [0; PRIORITIES / 64],
            ready: 0,
            current: core::ptr::null_mut(),
            current_priority: 0,
            reschedule: false,
        }
    }

    /// The invariant checker's view (`api::invariants`): walk every ready queue and check it is
    /// well formed (symmetric links, each thread queued at its own priority and runnable, the
    /// bitmap and the count agreeing with the queues). Returns the queued threads.
    #[cfg(any(test, feature = "fuzzing", debug_assertions))]
    pub fn check_queues(&self) -> Result<alloc::vec::Vec<u64>, alloc::string::String> {
        use alloc::format;
        let mut out = alloc::vec::Vec::new();
        for p in 0..PRIORITIES {
            let (mut prev, mut at) = (0u64, self.heads[p]);
            while at != 0 {
                if out.len() > 1 << 20 {
                    return Err(format!("ready queue {p} does not end"));
                }
                // SAFETY: queue links hold live TCBs (module invariant); one at a time.
                let t = unsafe { tcb(at) };
                if t.sched_prev != prev || !t.queued || t.priority as usize != p || !t.state.is_runnable() {
                    return Err(format!(
                        "ready queue {p}: thread {at:#x} (prev {:#x}, queued {}, priority {}, {:?}) does not belong",
                        t.sched_prev, t.queued, t.priority, t.state
                    ));
                }
                out.push(at);
                (prev, at) = (at, t.sched_next);
            }
            if self.tails[p] != prev {
                return Err(format!("ready queue {p}: tail {:#x}, last {prev:#x}", self.tails[p]));
            }
            let bit = self.bitmap[p / 64] & (1 << (p % 64)) != 0;
            if bit != (self.heads[p] != 0) {
                return Err(format!("ready queue {p}: bitmap bit {bit} for a queue head {:#x}", self.heads[p]));
            }
        }
        if out.len() != self.ready {
            return Err(format!("ready count {} for {} queued threads", self.ready, out.len()));
        }
        Ok(out)
    }

    /// The thread on the CPU (null when idle).
    pub fn current(&self) -> *mut Tcb {
        self.current
    }

    /// Make `t` the current thread (boot: the first thread).
    ///
    /// # Safety
    /// `t` is a live TCB or null.
    pub unsafe fn set_current(&mut self, t: *mut Tcb) {
        self.current = by_address(t);
        // SAFETY: per the contract; a read through the raw pointer (no reference is made).
        self.current_priority = if t.is_null() { 0 } else { unsafe { (&raw const (*t).priority).read() } };
    }

    /// [`Scheduler::set_current`] for a caller that has read `t`'s priority already (the
    /// fastpaths).
    ///
    /// # Safety
    /// `t` is a live TCB whose priority is `priority`.
    #[inline(always)]
    pub unsafe fn set_current_at(&mut self, t: *mut Tcb, priority: u8) {
        self.current = by_address(t);
        self.current_priority = priority;
    }

    /// The highest priority with a ready thread.
    #[inline(always)]
    pub fn highest_ready(&self) -> Option<u8> {
        if self.ready == 0 {
            return None;
        }
        for (i, word) in self.bitmap.iter().enumerate().rev() {
            if *word != 0 {
                return Some((i * 64 + 63 - word.leading_zeros() as usize) as u8);
            }
        }
        None
    }

    fn set_bit(&mut self, prio: u8) {
        self.bitmap[prio as usize / 64] |= 1 << (prio % 64);
    }

    fn clear_bit(&mut self, prio: u8) {
        self.bitmap[prio as usize / 64] &= !(1 << (prio % 64));
    }

    /// Append `t` to the tail of its priority's queue.
    ///
    /// # Safety
    /// `t` is a live TCB.
    pub unsafe fn push_back(&mut self, t: *mut Tcb) {
        // SAFETY: per the contract, `t` is a live TCB.
        let t = unsafe { tcb(t as u64) };
        if t.queued {
            return;
        }
        let p = t.priority as usize;
        t.sched_next = 0;
        t.sched_prev = self.tails[p];
        if self.tails[p] != 0 {
            // SAFETY: a queue tail is a live TCB (module invariant), not `t` (which is not queued).
            unsafe { tcb(self.tails[p]).sched_next = t.addr() };
        } else {
            self.heads[p] = t.addr();
        }
        self.tails[p] = t.addr();
        t.queued = true;
        self.ready += 1;
        self.set_bit(t.priority);
    }

    /// Put `t` at the head of its priority's queue.
    ///
    /// # Safety
    /// `t` is a live TCB.
    pub unsafe fn push_front(&mut self, t: *mut Tcb) {
        // SAFETY: per the contract, `t` is a live TCB.
        let t = unsafe { tcb(t as u64) };
        if t.queued {
            return;
        }
        let p = t.priority as usize;
        t.sched_prev = 0;
        t.sched_next = self.heads[p];
        if self.heads[p] != 0 {
            // SAFETY: a queue head is a live TCB (module invariant), not `t` (which is not queued).
            unsafe { tcb(self.heads[p]).sched_prev = t.addr() };
        } else {
            self.tails[p] = t.addr();
        }
        self.heads[p] = t.addr();
        t.queued = true;
        self.ready += 1;
        self.set_bit(t.priority);
    }

    /// Take `t` out of the ready queues (no effect if it is not queued).
    ///
    /// # Safety
    /// `t` is a live TCB.
    pub unsafe fn remove(&mut self, t: *mut Tcb) {
        // SAFETY: per the contract, `t` is a live TCB.
        let t = unsafe { tcb(t as u64) };
        if !t.queued {
            return;
        }
        let p = t.priority as usize;
        if t.sched_prev != 0 {
            // SAFETY: `t`'s queue neighbours are live TCBs (module invariant), other than `t`.
            unsafe { tcb(t.sched_prev).sched_next = t.sched_next };
        } else {
            self.heads[p] = t.sched_next;
        }
        if t.sched_next != 0 {
            // SAFETY: `t`'s queue neighbours are live TCBs (module invariant), other than `t`.
            unsafe { tcb(t.sched_next).sched_prev = t.sched_prev };
        } else {
            self.tails[p] = t.sched_prev;
        }
        t.sched_next = 0;
        t.sched_prev = 0;
        t.queued = false;
        self.ready -= 1;
        if self.heads[p] == 0 {
            self.clear_bit(t.priority);
        }
    }

    /// A thread became runnable: queue it, and ask for a reschedule if it should preempt.
    ///
    /// # Safety
    /// `t` is a live, runnable TCB that is not the current thread.
    pub unsafe fn wake(&mut self, t: *mut Tcb) {
        // SAFETY: per the contract.
        unsafe { self.push_back(t) };
        // (A current thread that blocked has asked for a reschedule already.)
        // SAFETY: per the contract; a read through the raw pointer.
        if self.current.is_null() || unsafe { (&raw const (*t).priority).read() } > self.current_priority {
            self.reschedule = true;
        }
    }

    /// The current thread blocked, was suspended or exited, or priorities changed: decide again
    /// who runs at the next return to user mode.
    pub fn current_blocked(&mut self) {
        self.reschedule = true;
    }

    /// The current thread yields: back of its queue.
    pub fn yield_current(&mut self) {
        let cur = self.current;
        // SAFETY: the current thread is live (finalising a TCB clears `current` if it names it); one access each.
        if !cur.is_null() && unsafe { tcb(cur as u64) }.state.is_runnable() {
            // SAFETY: as above.
            unsafe { tcb(cur as u64) }.timeslice = TIMESLICE_TICKS;
            // SAFETY: the current thread is live.
            unsafe { self.push_back(cur) };
        }
        // SAFETY: null is allowed.
        unsafe { self.set_current(core::ptr::null_mut()) };
        self.reschedule = true;
    }

    /// A timer tick: charge the current thread; at the end of its timeslice, round robin.
    pub fn tick(&mut self) {
        let cur = self.current;
        if cur.is_null() {
            return;
        }
        // SAFETY: the current thread is live (finalising a TCB clears `current` if it names it).
        let t = unsafe { tcb(cur as u64) };
        t.counters.cpu_ticks += 1;
        t.timeslice = t.timeslice.saturating_sub(1);
        if t.timeslice == 0 {
            self.yield_current();
        }
    }

    /// Decide who runs next.
    pub fn schedule(&mut self) -> Next {
        let cur = self.current;
        // SAFETY: the current thread is live (finalising a TCB clears `current` if it names it); one access each.
        let cur_runnable = !cur.is_null() && unsafe { tcb(cur as u64) }.state.is_runnable();
        if !cur.is_null() {
            // Its priority may have changed since it became current (SetPriority on itself).
            // SAFETY: as above.
            self.current_priority = unsafe { tcb(cur as u64) }.priority;
        }
        if !self.reschedule && cur_runnable {
            return Next::Run(cur);
        }
        self.reschedule = false;
        if cur_runnable {
            // SAFETY: the current thread is live.
            let cur_prio = unsafe { tcb(cur as u64) }.priority;
            match self.highest_ready() {
                Some(p) if p > cur_prio => {
                    // Preempted: keep its turn at the head of its queue.
                    // SAFETY: the current thread is live.
                    unsafe { self.push_front(cur) };
                }
                _ => return Next::Run(cur),
            }
        }
        match self.highest_ready() {
            Some(p) => {
                let next = kptr::<Tcb>(self.heads[p as usize]);
                // SAFETY: queue heads are live TCBs.
                unsafe {
                    self.remove(next);
                    self.set_current(next);
                }
                Next::Run(next)
            }
            None => {
                // SAFETY: null is allowed.
                unsafe { self.set_current(core::ptr::null_mut()) };
                Next::Idle
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::object::tcb::ThreadState;
    use std::boxed::Box;
    use std::vec::Vec;

    fn thread(prio: u8) -> Box<Tcb> {
        let mut t = Box::new(Tcb::initial());
        t.priority = prio;
        t.state = ThreadState::Running;
        t
    }

    fn p(t: &mut Box<Tcb>) -> *mut Tcb {
        &mut **t
    }

    // The scheduler's raw-pointer contracts hold in these tests: every TCB is a live box owned by
    // the test for its whole duration.
    fn wake(s: &mut Scheduler, t: *mut Tcb) {
        // SAFETY: the tests' TCBs are live boxes for the whole test, runnable when woken.
        unsafe { s.wake(t) }
    }
    fn push_back(s: &mut Scheduler, t: *mut Tcb) {
        // SAFETY: the tests' TCBs are live boxes for the whole test.
        unsafe { s.push_back(t) }
    }
    fn remove(s: &mut Scheduler, t: *mut Tcb) {
        // SAFETY: the tests' TCBs are live boxes for the whole test.
        unsafe { s.remove(t) }
    }

    #[test]
    fn highest_priority_runs_first_and_round_robin_within() {
        let mut s = Scheduler::new();
        let mut ts: Vec<Box<Tcb>> = [5, 200, 5, 200, 0].into_iter().map(thread).collect();
        let ptrs: Vec<*mut Tcb> = ts.iter_mut().map(p).collect();
        for &t in &ptrs {
            wake(&mut s, t);
        }
        assert_eq!(s.highest_ready(), Some(200));
        assert_eq!(s.schedule(), Next::Run(ptrs[1]));
        s.yield_current();
        assert_eq!(s.schedule(), Next::Run(ptrs[3]));
        s.yield_current();
        assert_eq!(s.schedule(), Next::Run(ptrs[1]));
        // Both 200s block: the 5s alternate, the 0 never runs.
        ts[1].state = ThreadState::BlockedOnReply { interruptible: false };
        s.current_blocked();
        assert_eq!(s.schedule(), Next::Run(ptrs[3]));
        ts[3].state = ThreadState::Inactive;
        s.current_blocked();
        assert_eq!(s.schedule(), Next::Run(ptrs[0]));
        s.yield_current();
        assert_eq!(s.schedule(), Next::Run(ptrs[2]));
        s.yield_current();
        assert_eq!(s.schedule(), Next::Run(ptrs[0]));
    }

    #[test]
    fn a_tick_is_charged_to_the_thread_it_finds_running() {
        let mut s = Scheduler::new();
        let mut a = thread(10);
        let mut b = thread(10);
        let (pa, pb) = (p(&mut a), p(&mut b));
        wake(&mut s, pa);
        wake(&mut s, pb);
        assert_eq!(s.schedule(), Next::Run(pa));
        for _ in 0..3 {
            s.tick();
        }
        s.yield_current();
        assert_eq!(s.schedule(), Next::Run(pb));
        s.tick();
        // SAFETY: both threads are live test fixtures.
        let (ta, tb) = unsafe { (tcb(pa as u64).counters.cpu_ticks, tcb(pb as u64).counters.cpu_ticks) };
        assert_eq!((ta, tb), (3, 1));
    }

    #[test]
    fn timeslice_rotates_equal_priorities() {
        let mut s = Scheduler::new();
        let mut a = thread(10);
        let mut b = thread(10);
        let (pa, pb) = (p(&mut a), p(&mut b));
        wake(&mut s, pa);
        wake(&mut s, pb);
        assert_eq!(s.schedule(), Next::Run(pa));
        for _ in 0..TIMESLICE_TICKS - 1 {
            s.tick();
            assert_eq!(s.schedule(), Next::Run(pa));
        }
        s.tick();
        assert_eq!(s.schedule(), Next::Run(pb));
    }

    #[test]
    fn a_wakeup_compares_with_the_current_threads_priority_as_it_is_now() {
        let mut s = Scheduler::new();
        let mut cur = thread(200);
        let mut mid = thread(100);
        let (c, m) = (p(&mut cur), p(&mut mid));
        wake(&mut s, c);
        assert_eq!(s.schedule(), Next::Run(c));
        // The current thread lowers its own priority (SetPriority asks for a reschedule); it
        // still runs, being the only one ready.
        cur.priority = 50;
        s.current_blocked();
        assert_eq!(s.schedule(), Next::Run(c));
        // A thread above its new priority wakes up: it preempts.
        wake(&mut s, m);
        assert_eq!(s.schedule(), Next::Run(m));
    }

    #[test]
    fn higher_priority_wakeup_preempts_and_preempted_keeps_its_turn() {
        let mut s = Scheduler::new();
        let mut lo1 = thread(1);
        let mut lo2 = thread(1);
        let mut hi = thread(9);
        let (l1, l2, h) = (p(&mut lo1), p(&mut lo2), p(&mut hi));
        wake(&mut s, l1);
        wake(&mut s, l2);
        assert_eq!(s.schedule(), Next::Run(l1));
        wake(&mut s, h);
        assert_eq!(s.schedule(), Next::Run(h));
        hi.state = ThreadState::Inactive;
        s.current_blocked();
        // l1 was preempted, so it resumes before l2.
        assert_eq!(s.schedule(), Next::Run(l1));
        // A wake-up of an equal priority does not preempt.
        let mut lo3 = thread(1);
        wake(&mut s, p(&mut lo3));
        assert_eq!(s.schedule(), Next::Run(l1));
    }

    #[test]
    fn idle_when_nothing_runs_and_remove_unlinks() {
        let mut s = Scheduler::new();
        assert_eq!(s.schedule(), Next::Idle);
        let mut a = thread(3);
        let mut b = thread(3);
        let mut c = thread(3);
        let (pa, pb, pc) = (p(&mut a), p(&mut b), p(&mut c));
        for t in [pa, pb, pc] {
            push_back(&mut s, t);
        }
        remove(&mut s, pb);
        remove(&mut s, pb);
        assert!(!b.queued);
        s.current_blocked();
        assert_eq!(s.schedule(), Next::Run(pa));
        a.state = ThreadState::Inactive;
        s.current_blocked();
        assert_eq!(s.schedule(), Next::Run(pc));
        c.state = ThreadState::Inactive;
        s.current_blocked();
        assert_eq!(s.schedule(), Next::Idle);
        assert_eq!(s.highest_ready(), None);
    }

    #[test]
    fn bitmap_covers_every_priority() {
        let mut s = Scheduler::new();
        let mut ts: Vec<Box<Tcb>> = (0..=255u8).map(thread).collect();
        for t in ts.iter_mut() {
            push_back(&mut s, p(t));
        }
        for prio in (0..=255u8).rev() {
            assert_eq!(s.highest_ready(), Some(prio));
            remove(&mut s, p(&mut ts[prio as usize]));
        }
        assert_eq!(s.highest_ready(), None);
    }
}
