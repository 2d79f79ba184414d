//! The kernel-state invariant checker in the guest (debug kernels only).
//!
//! A debug kernel booted with `ozone.check=invariants` (or `ozone.check=invariants:N`, every
//! N-th time) runs [`crate::api::invariants::check`] over every capability reachable from the
//! root task's CNode, the root task and the current thread, after every syscall (slow paths and
//! fastpaths) and every user fault, before the return to ring 3; and that every PML4 among them
//! has the top half every address space gets (with `ozone.kpti=on`, the trampoline alone). A violation
//! stops the machine with a kernel fault, naming what was broken and the syscall that broke it,
//! so an in-guest test suite fails on it. Release kernels have none of this.

use crate::object::kptr::kptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::api::{Kernel, invariants};
use crate::object::kmem::SlotSpan;
use crate::object::tcb::Tcb;
use crate::object::{Cap, PagingLevel, vspace};

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Check at every `EVERY`-th kernel entry.
static EVERY: AtomicU64 = AtomicU64::new(1);
static ENTRIES: AtomicU64 = AtomicU64::new(0);
/// The root task's CNode (its slots are where every boot capability started) and its TCB.
static ROOT_CNODE: AtomicU64 = AtomicU64::new(0);
static ROOT_CNODE_SLOTS: AtomicU64 = AtomicU64::new(0);
static ROOT_TCB: AtomicU64 = AtomicU64::new(0);

/// Turn the checker on from the kernel command line value of `ozone.check`.
pub fn configure(value: &str, root_cnode: SlotSpan, root_tcb: *mut Tcb) -> Result<(), &'static str> {
    let every = match value.strip_prefix("invariants") {
        Some("") => 1,
        Some(n) => n.strip_prefix(':').and_then(|n| n.parse().ok()).filter(|&n| n > 0).ok_or("bad interval")?,
        None => return Err("unknown checker (expected `invariants` or `invariants:N`)"),
    };
    EVERY.store(every, Ordering::Relaxed);
    ROOT_CNODE.store(root_cnode.base(), Ordering::Relaxed);
    ROOT_CNODE_SLOTS.store(root_cnode.count(), Ordering::Relaxed);
    ROOT_TCB.store(root_tcb as u64, Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    crate::info!("invariant checker on: after every {every} syscalls and faults (debug kernel)");
    Ok(())
}

/// The syscall number of the last syscall entry (for the report).
static LAST_SYSCALL: AtomicU64 = AtomicU64::new(0);
/// A syscall or a fault happened since the last check.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Every address space's top half is the one `Kernel::kernel_pml4` gives: the kernel half, or,
/// with the skim window on (`ozone.kpti`), the trampoline alone (whose pages the boot checked).
fn top_halves(k: &Kernel, caps: impl Iterator<Item = Cap>) -> Result<(), alloc::string::String> {
    for cap in caps {
        let Cap::Paging { ptr, level: PagingLevel::Pml4, .. } = cap else { continue };
        // SAFETY: `ptr` is a PML4 a reachable capability names (live until that capability goes,
        // and none goes during the check); the kernel's template lives for ever; the kernel,
        // which alone writes them, is busy checking.
        if let Some(i) = unsafe { vspace::top_half_differs(ptr, k.kernel_pml4) } {
            return Err(alloc::format!("the PML4 at {ptr:#x} differs from the kernel's template in top-half slot {i}"));
        }
    }
    Ok(())
}

/// A syscall entry with `number` (recorded for the report): the next exit checks.
#[inline(always)]
pub fn note_syscall(number: i64) {
    LAST_SYSCALL.store(number as u64, Ordering::Relaxed);
    PENDING.store(true, Ordering::Relaxed);
}

/// A fault of a user thread: the next exit checks.
#[inline(always)]
pub fn note_fault() {
    PENDING.store(true, Ordering::Relaxed);
}

/// After a kernel entry, before the return to ring 3: check, if it is on and a syscall or a
/// fault came since the last check (an entry for an interrupt alone — a timer tick, a device —
/// is not checked: checking every tick would leave the threads no time between ticks).
#[inline(always)]
pub fn after_entry(k: &Kernel) {
    if ENABLED.load(Ordering::Relaxed) && PENDING.swap(false, Ordering::Relaxed) {
        check_now(k);
    }
}

#[cold]
#[inline(never)]
fn check_now(k: &Kernel) {
    let n = ENTRIES.fetch_add(1, Ordering::Relaxed) + 1;
    if !n.is_multiple_of(EVERY.load(Ordering::Relaxed)) {
        return;
    }
    // SAFETY: the root CNode is kernel memory for good (never untyped, so never retyped); its
    // slots are read by value.
    let root = unsafe { SlotSpan::new(ROOT_CNODE.load(Ordering::Relaxed), ROOT_CNODE_SLOTS.load(Ordering::Relaxed)) };
    let mut roots: alloc::vec::Vec<_> = (0..root.count()).filter_map(|i| root.slot(i)).collect();
    for t in [kptr::<Tcb>(ROOT_TCB.load(Ordering::Relaxed)), k.sched.current()] {
        if !t.is_null() {
            // SAFETY: the root TCB's memory is the kernel's for good; the current thread is live.
            let slots = unsafe { Tcb::slots_of(t) };
            roots.extend((0..slots.count()).filter_map(|i| slots.slot(i)));
        }
    }
    let result = invariants::reachable(roots).and_then(|slots| {
        invariants::check(k, slots.iter().map(|s| s.cap()), &[])?;
        top_halves(k, slots.iter().map(|s| s.cap()))
    });
    if let Err(e) = result {
        let syscall = LAST_SYSCALL.load(Ordering::Relaxed) as i64;
        crate::kprint!("ozone: kernel invariant broken after kernel entry {n} (last syscall {syscall}): {e}\n");
        crate::arch::x86_64::power::exit(ozone_abi::ExitCode::KernelFault);
    }
}
