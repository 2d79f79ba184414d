//! Deleting capabilities, finalising objects, and revoking derivation subtrees — all preemptible.
//!
//! # Finalisation
//!
//! Deleting a capability calls [`ObjectHooks::finalise`] with the capability and whether it was
//! the last one to its object. The kernel's implementation does what the object needs (cancel
//! IPC on an endpoint, unbind and cancel signals on a notification, suspend a TCB, unmap a mapped
//! frame — for every frame capability, last or not —, release an IRQ) and must not fail.
//!
//! Objects that hold capability slots — CNodes, and whatever [`ObjectHooks::embedded_slots`]
//! reports (a TCB's five: CSpace and VSpace roots, IPC buffer, fault handler, trace ring) — are
//! different: when their last capability is deleted, every slot they hold is deleted first,
//! recursively, and the object's memory stays allocated until then. The capability stays in its
//! slot as a **zombie** (a flag in its MDB node, see [`cte`](super::cte)): invisible to lookups
//! and invocations, still in the derivation tree (so the untyped it came from cannot be reset),
//! counting down the object's slots from the top. `finalise(cap, true)` is called once, when the
//! zombie is made.
//!
//! # Preemption
//!
//! [`delete`] and [`revoke`] do a bounded amount of work per call: one *unit* per capability
//! deleted, per zombie made, per slot stepped over. They take a [`Budget`], always do at least one
//! unit, stop when the budget is used up and return [`Progress::Preempted`]; the kernel then
//! restarts the system call, which looks the slot up again and carries on. Between two calls
//! every invariant holds (the fuzzer checks this, also with unrelated operations in between).
//!
//! A unit of deletion starts at the slot being deleted (the *top*) and walks down: from a zombie
//! to the highest slot of its object that may be occupied, into it if that holds another zombie,
//! until it reaches a capability it can delete, a slot that turned out empty, or a finished
//! zombie. The walk keeps no state outside the slots, so nothing is lost when a call stops; its
//! length is the nesting depth of dying CNodes (each dying because its last capability was in the
//! one above), charged to nothing — a deep chain of CNodes makes each unit proportionally slower.
//!
//! # Cycles
//!
//! The walk can come back to the top: a CNode whose last capability lies in a CNode whose last
//! capability lies ... in the first one (a thread deleting the last capability to its own TCB,
//! whose CSpace root holds that capability, is the everyday case). The zombie that finds the top
//! among its slots *pins* that slot — leaves it alone, notes its index — and empties the rest.
//! When only the pinned slot is left, the cycle is broken without touching the top: the zombie
//! moves into one of its own now-empty slots (it becomes *self-contained*: it lives inside the
//! object it stands for, skips its own slot and dies with the object) and *hosts* the pinned
//! capability, which notes where its host is. The slot the zombie left empties the link that
//! closed the cycle, so the top's walk now runs down to the end; when the hosted capability is
//! finally deleted, its host goes in the same unit of work (both slots are in the host's object,
//! which has nothing else left). The top keeps its capability throughout, so a restarted Delete
//! or Revoke finds the same work again.
//!
//! So, unlike seL4 (which leaves such CNodes as unreachable zombies for a later revoke of their
//! untyped), deleting a capability here always destroys everything that only it kept alive.
//!
//! Zombies are made by a walk and stay below the walk's top, so when an operation completes, none
//! of its zombies are left; a zombie exists only while the operation that made it is unfinished
//! (preempted and not yet restarted). Invoking a zombie fails; deleting it, or revoking an untyped
//! it descends from, carries on the work. (One exception, as in seL4: a Revoke that destroys the
//! slot holding its own target stops there, and the descendant it was deleting at that moment may
//! stay a zombie until its untyped is revoked.)

use super::Cap;
use super::cte::{Host, SLOT_BYTES, Zombie};
use super::kmem::{SlotRef, SlotSpan};
use super::mdb;

/// How often the rarer deletion paths ran (tests and fuzzing only): zombies made, top slots
/// pinned, cycles broken, self-contained zombie slots stepped over.
#[cfg(any(test, feature = "fuzzing"))]
pub mod coverage {
    use core::sync::atomic::{AtomicU64, Ordering};

    pub static ZOMBIES: AtomicU64 = AtomicU64::new(0);
    pub static PINS: AtomicU64 = AtomicU64::new(0);
    pub static CYCLES_BROKEN: AtomicU64 = AtomicU64::new(0);
    pub static SELF_SKIPS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn hit(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(zombies, pins, cycles broken, self skips)` so far.
    pub fn snapshot() -> (u64, u64, u64, u64) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (g(&ZOMBIES), g(&PINS), g(&CYCLES_BROKEN), g(&SELF_SKIPS))
    }
}

macro_rules! count {
    ($c:ident) => {
        #[cfg(any(test, feature = "fuzzing"))]
        coverage::hit(&coverage::$c);
    };
}

/// How far a preemptible operation got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Finished.
    Done,
    /// Stopped at a preemption point; call again (restart the system call) to continue.
    Preempted,
}

/// How much work a preemptible operation may do before it stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    left: u32,
}

impl Budget {
    /// Up to `units` units of work (at least one is always done).
    pub const fn new(units: u32) -> Budget {
        Budget { left: units }
    }

    /// Effectively no limit.
    pub const fn unlimited() -> Budget {
        Budget { left: u32::MAX }
    }

    /// Units left.
    pub const fn left(&self) -> u32 {
        self.left
    }

    /// Whether nothing is left.
    pub const fn is_exhausted(&self) -> bool {
        self.left == 0
    }

    /// Account one unit of work done; true when the budget is used up.
    pub(crate) fn spend(&mut self) -> bool {
        self.left = self.left.saturating_sub(1);
        self.left == 0
    }
}

/// What the rest of the kernel does when capabilities go away.
pub trait ObjectHooks {
    /// `cap` is being deleted; `last` says it was the last capability to its object. Called
    /// exactly once per deleted capability; for a slot-holding object's last capability, before
    /// its slots are deleted. Must not fail and must drop every kernel reference into the object
    /// when `last` is true (the memory may be reused once its untyped is reset).
    fn finalise(&mut self, cap: &Cap, last: bool);

    /// The capability slots inside the object `cap` names, for objects other than CNodes that
    /// hold slots (a TCB's five). They are deleted, recursively, when the last capability to the
    /// object is deleted. Must return the same span for the same object every time, with at least
    /// two slots. Default: none.
    fn embedded_slots(&self, _cap: &Cap) -> Option<SlotSpan> {
        None
    }

    /// CNode CancelBadgedSends on an endpoint: cancel every pending send with this badge.
    fn cancel_badged_sends(&mut self, _endpoint: u64, _badge: u64) {}
}

/// The slots held by the object `cap` names, if it is a slot-holding object.
fn slot_span(cap: &Cap, hooks: &dyn ObjectHooks) -> Option<SlotSpan> {
    match cap {
        Cap::CNode { .. } => SlotSpan::of_cnode(cap),
        _ => hooks.embedded_slots(cap).filter(|s| s.count() >= 2),
    }
}

/// Delete the capability in `slot`, finalising its object if it was the last capability to it.
/// An empty slot is done at once; a zombie slot carries on an earlier, preempted deletion.
pub fn delete(slot: SlotRef, hooks: &mut dyn ObjectHooks, budget: &mut Budget) -> Progress {
    loop {
        if slot.is_empty() {
            return Progress::Done;
        }
        delete_unit(slot, hooks);
        if budget.spend() {
            return if slot.is_empty() { Progress::Done } else { Progress::Preempted };
        }
    }
}

/// Delete every derivation descendant of the capability in `slot`; the capability itself stays.
pub fn revoke(slot: SlotRef, hooks: &mut dyn ObjectHooks, budget: &mut Budget) -> Progress {
    loop {
        // If the revoke destroys the memory holding `slot` (revoking an untyped that the CNode
        // holding `slot` was made from), `slot` is emptied on the way and the loop ends here:
        // nothing reuses the memory within one call.
        let Some(child) = mdb::first_child(slot) else { return Progress::Done };
        if delete(child, hooks, budget) == Progress::Preempted {
            return Progress::Preempted;
        }
        if budget.is_exhausted() {
            return if mdb::has_children(slot) { Progress::Preempted } else { Progress::Done };
        }
    }
}

/// One unit of deleting the non-empty slot `top` (see the module docs).
fn delete_unit(top: SlotRef, hooks: &mut dyn ObjectHooks) {
    let mut cur = top;
    loop {
        let cte = cur.read();
        let Some(zombie) = cte.mdb.zombie() else {
            if cte.cap.is_null() {
                return;
            }
            let last = mdb::is_final_cap(cur);
            if last && let Some(span) = slot_span(&cte.cap, hooks) {
                hooks.finalise(&cte.cap, true);
                cur.set_mdb(cte.mdb.with_zombie(Zombie { remaining: span.count(), pin: None, host: None }));
                count!(ZOMBIES);
            } else {
                hooks.finalise(&cte.cap, last);
                mdb::empty_slot(cur);
            }
            return;
        };
        let Some(span) = slot_span(&cte.cap, hooks) else {
            // Cannot happen (zombies are only made for slot-holding objects); drop it.
            mdb::empty_slot(cur);
            return;
        };
        if zombie.remaining == 0 {
            match (zombie.pin, zombie.host) {
                (Some(pin), _) => break_cycle(cur, span, pin),
                (None, Some(host)) => {
                    let host_slot = host_slot(cur, host);
                    mdb::empty_slot(cur);
                    // The host's object held only this slot and the host itself.
                    if let Some(h) = host_slot.filter(|h| h.is_zombie()) {
                        mdb::empty_slot(h);
                    }
                }
                (None, None) => mdb::empty_slot(cur),
            }
            return;
        }
        let index = zombie.remaining - 1;
        let keep = Zombie { remaining: index, ..zombie };
        let Some(child) = span.slot(index) else {
            cur.set_mdb(cte.mdb.with_zombie(keep));
            return;
        };
        if child == cur {
            // A self-contained zombie: its own slot goes last, with the object.
            cur.set_mdb(cte.mdb.with_zombie(keep));
            count!(SELF_SKIPS);
            return;
        }
        if child == top {
            // Back at the start: pin the top and clear the rest first. (A zombie on a cycle is
            // neither hosted nor pinned already: see the module docs. Checked in tests only;
            // were it ever wrong, the host or pin forgotten here leaves a garbage zombie, not a
            // dangling capability.)
            #[cfg(any(test, feature = "fuzzing"))]
            assert!(zombie.pin.is_none() && zombie.host.is_none(), "a cycle zombie pinned twice or hosted");
            cur.set_mdb(cte.mdb.with_zombie(Zombie { remaining: index, pin: Some(index), host: None }));
            count!(PINS);
            return;
        }
        if child.is_empty() {
            cur.set_mdb(cte.mdb.with_zombie(keep));
            return;
        }
        cur = child;
    }
}

/// The slot of a hosted zombie's host, from the zombie's own slot.
fn host_slot(own: SlotRef, host: Host) -> Option<SlotRef> {
    let base = own.addr().checked_sub(host.own.checked_mul(SLOT_BYTES)?)?;
    SlotRef::from_link(base.checked_add(host.host * SLOT_BYTES)?)
}

/// The zombie in `zslot` has emptied every slot of its object except `pin`, which holds a zombie
/// that (through a chain of dying objects) leads back to `zslot`. Move the zombie into a free slot
/// of its own object, where it hosts the pinned zombie (see the module docs).
fn break_cycle(zslot: SlotRef, span: SlotSpan, pin: u64) {
    let free_index = if pin == 0 { 1 } else { 0 };
    let (Some(pinned), Some(free)) = (span.slot(pin), span.slot(free_index)) else {
        return;
    };
    let Some(guest) = pinned.mdb().zombie() else {
        // Cannot happen: a walk only comes back round through zombies.
        return;
    };
    mdb::cte_move(zslot.raw_cap(), zslot, free);
    let z = free.mdb();
    free.set_mdb(z.with_zombie(Zombie { remaining: pin + 1, pin: None, host: None }));
    let g = pinned.mdb();
    pinned.set_mdb(g.with_zombie(Zombie { host: Some(Host { own: pin, host: free_index }), ..guest }));
    count!(CYCLES_BROKEN);
}
