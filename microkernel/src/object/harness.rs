//! Capability-level fuzzing: a reference model, a test world, operations and invariant checks.
//!
//! Built for tests and, with the `fuzzing` feature, for the cargo-fuzz target in
//! `microkernel/fuzz/`. Three drivers share it: proptest (short sequences, shrinking), a
//! deterministic long run over fixed seeds (`cargo test`), and cargo-fuzz (ops from fuzzer bytes).
//!
//! # The world
//!
//! [`World`] is a host stand-in for a booted kernel: 4 MiB of "physical memory" (filled with a
//! garbage pattern, so missing zeroing shows) carved into a 2 MiB and a 1 MiB untyped (both
//! starting as the kernel's boot untypeds do: watermark 0, all of the memory in the dirty range)
//! and a 1 MiB device untyped; a root CNode of 64 slots in
//! separate "boot" memory; a thread's CSpace-root slot holding the root CNode capability; an IRQ
//! control capability; a copy of the root CNode capability in root slot 5. TCBs get two embedded
//! slots (at the start of the TCB object) through [`RecordingHooks::embedded_slots`], so the
//! recursive deletion of TCB-held capabilities is exercised too.
//!
//! # The reference model
//!
//! [`Model`] is written to be obviously right rather than fast: maps from slot address to
//! capability, an explicit derivation tree (a parent link per capability), a map of live objects.
//! Deleting a capability is "remove it; re-parent its children to its parent; if no other
//! capability names its object, the object dies and, if it holds slots, every capability in them
//! is deleted the same way" (a work list). Revoke deletes the explicit descendants. It has no
//! zombies, no preemption and no linked list; it shares only the public data types ([`Cap`]) and
//! the documented decode order with the implementation.
//!
//! # Modes
//!
//! * [`Mode::Model`]: every operation runs on both; preemptible operations are run to completion
//!   with small budgets (checking the real invariants at every preemption point), then results,
//!   slot contents, the derivation tree and the finalisation calls are compared.
//! * [`Mode::Interleaved`]: no model; preemptible operations get one call with a small budget and
//!   are then abandoned (a later operation may restart them, or not), so operations run against
//!   half-deleted objects, zombies and half-zeroed Retypes. Only invariants are checked — and at
//!   the end, that revoking every untyped and resetting it gives back all memory, every non-zero
//!   byte of it inside the untyped's dirty range.
//!
//! # Invariants checked ([`World::check_invariants`])
//!
//! * the derivation list is well formed (links agree, empty slots have no links, zombies' counts
//!   are in range and the slots they have passed are empty);
//! * no authority amplification: along every derivation edge rights only shrink, a badged parent
//!   has children with its badge, an untyped parent's region contains the child's, other parents
//!   name the same object;
//! * live objects never overlap; every capability inside an untyped's memory lies below its
//!   watermark; an untyped's indices are in order (`free_index <= dirty_from <= dirty_top <=
//!   size`, an empty dirty range at the watermark, none for device memory) and its normal memory
//!   at and above the watermark is zero outside the dirty range (checked every so often);
//! * (model mode) no capability refers to an object the model says is dead; caps, tree and
//!   finalisation calls equal the model's.

extern crate std;

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::format;
use std::string::String;
use std::vec;
use std::vec::Vec;

use core::ptr::NonNull;

use ozone_abi::Error;
use ozone_abi::object::{
    CNODE_SLOT_BITS, ENDPOINT_BITS, LARGE_PAGE_BITS, MAX_CNODE_RADIX, MAX_UNTYPED_BITS, MIN_UNTYPED_BITS,
    NOTIFICATION_BITS, PAGE_BITS, TCB_BITS,
};

use super::cnode::{self, CNodeInvocation};
use super::cspace::{lookup_cap, lookup_slot};
use super::cte::SLOT_BYTES;
use super::delete::{self, Budget, ObjectHooks, Progress};
use super::kmem::{self, SlotRef, SlotSpan};
use super::mdb;
use super::untyped::{self, RETYPE_MAX_COUNT, RetypeArgs};
use super::{Cap, FrameSize, ObjectType, PagingLevel, Rights};

/// log2 of the test world's "physical memory".
pub const ARENA_BITS: u8 = 22;
/// Radix of the root CNode.
pub const ROOT_RADIX: u8 = 6;
/// Slots a TCB holds in the test world.
pub const TCB_SLOTS: u64 = 2;

/// Root CNode slots of the initial capabilities.
pub const SLOT_U_MAIN: u64 = 1;
pub const SLOT_U_SMALL: u64 = 2;
pub const SLOT_U_DEV: u64 = 3;
pub const SLOT_IRQ: u64 = 4;
pub const SLOT_ROOT_COPY: u64 = 5;

/// Memory standing in for physical memory: an aligned allocation whose address is exposed so
/// that capability addresses can name it.
pub struct TestMemory {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl TestMemory {
    /// `2^size_bits` bytes aligned to their size, every byte `fill`.
    pub fn new(size_bits: u8, fill: u8) -> TestMemory {
        let size = 1usize << size_bits;
        let layout = Layout::from_size_align(size, size).expect("test memory layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(p) else { handle_alloc_error(layout) };
        // SAFETY: `ptr` is valid for `size` bytes of writes (just allocated).
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), fill, size) };
        TestMemory { ptr, layout }
    }

    /// The address, with its provenance exposed for capability addresses.
    pub fn base(&self) -> u64 {
        self.ptr.as_ptr().expose_provenance() as u64
    }

    pub fn size(&self) -> u64 {
        self.layout.size() as u64
    }
}

impl Drop for TestMemory {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Hooks that record what they are told.
#[derive(Default)]
pub struct RecordingHooks {
    /// Every `finalise(cap, last)` call, in order.
    pub finalised: Vec<(Cap, bool)>,
    /// Every `cancel_badged_sends(endpoint, badge)` call.
    pub cancelled: Vec<(u64, u64)>,
}

impl ObjectHooks for RecordingHooks {
    fn finalise(&mut self, cap: &Cap, last: bool) {
        self.finalised.push((*cap, last));
    }

    fn embedded_slots(&self, cap: &Cap) -> Option<SlotSpan> {
        match *cap {
            // SAFETY: in the test world a TCB object (2 KiB, zeroed when made) keeps its
            // `TCB_SLOTS` slots at its start; a TCB capability names a live TCB (invariant).
            Cap::Tcb { ptr } => Some(unsafe { SlotSpan::new(ptr, TCB_SLOTS) }),
            _ => None,
        }
    }

    fn cancel_badged_sends(&mut self, endpoint: u64, badge: u64) {
        self.cancelled.push((endpoint, badge));
    }
}

/// The derivation parent (slot address) of each occupied slot.
pub type Parents = HashMap<u64, Option<u64>, AddrHash>;

/// Hashing for slot and object addresses (distinct, 16-byte aligned): one multiply.
#[derive(Clone, Copy, Default)]
pub struct AddrHash;

impl core::hash::BuildHasher for AddrHash {
    type Hasher = AddrHasher;
    fn build_hasher(&self) -> AddrHasher {
        AddrHasher(0)
    }
}

pub struct AddrHasher(u64);

impl core::hash::Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (x >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The test world (see the module docs).
pub struct World {
    pub arena: TestMemory,
    pub boot: TestMemory,
    /// The thread's CSpace-root slot.
    pub root_slot: SlotRef,
    pub hooks: RecordingHooks,
}

/// Where the root CNode is in boot memory, and where the CSpace-root slot is.
const BOOT_BITS: u8 = 13;
const ROOT_SLOT_OFFSET: u64 = 1 << 12;

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// A world with `2^ARENA_BITS` bytes of memory.
    pub fn new() -> World {
        World::with_arena(ARENA_BITS)
    }

    /// A world with `2^arena_bits` bytes of memory (at least `2^16`).
    pub fn with_arena(arena_bits: u8) -> World {
        let arena_bits = arena_bits.max(16);
        let arena = TestMemory::new(arena_bits, 0xa5);
        let boot = TestMemory::new(BOOT_BITS, 0);
        let root_cap = Cap::CNode { ptr: boot.base(), radix: ROOT_RADIX, guard_size: 0, guard: 0 };
        // SAFETY: boot memory is zeroed, 64-byte aligned and lives as long as the world; the
        // root CNode (4 KiB) ends where the root slot starts.
        let root_slot = unsafe { SlotRef::from_addr(boot.base() + ROOT_SLOT_OFFSET) }.expect("root slot");
        // SAFETY: the root CNode capability is the first and only capability to that memory.
        unsafe { mdb::insert_root_cap(root_slot, root_cap) };
        let world = World { arena, boot, root_slot, hooks: RecordingHooks::default() };
        let a = world.arena.base();
        let half = 1u64 << (arena_bits - 1);
        let quarter = half / 2;
        let initial = [
            (
                SLOT_U_MAIN,
                Cap::Untyped {
                    ptr: a,
                    size_bits: arena_bits - 1,
                    free_index: 0,
                    dirty_from: 0,
                    dirty_top: half,
                    device: false,
                },
            ),
            (
                SLOT_U_SMALL,
                Cap::Untyped {
                    ptr: a + half,
                    size_bits: arena_bits - 2,
                    free_index: 0,
                    dirty_from: 0,
                    dirty_top: quarter,
                    device: false,
                },
            ),
            (
                SLOT_U_DEV,
                Cap::Untyped {
                    ptr: a + half + quarter,
                    size_bits: arena_bits - 2,
                    free_index: 0,
                    dirty_from: 0,
                    dirty_top: 0,
                    device: true,
                },
            ),
            (SLOT_IRQ, Cap::IrqControl),
        ];
        for (i, cap) in initial {
            // SAFETY: the three untypeds cover disjoint quarters/halves of the arena, which nothing
            // else names; IRQ control is created once.
            unsafe { mdb::insert_root_cap(world.slot(i), cap) };
        }
        mdb::cte_insert(root_cap, root_slot, world.slot(SLOT_ROOT_COPY));
        world
    }

    /// The thread's root CNode capability.
    pub fn root(&self) -> Cap {
        self.root_slot.cap()
    }

    /// Root CNode slot `i`.
    pub fn slot(&self, i: u64) -> SlotRef {
        self.root_span().slot(i).expect("root slot index")
    }

    pub fn root_span(&self) -> SlotSpan {
        SlotSpan::of_cnode(&self.root_slot.raw_cap()).expect("root CNode")
    }

    /// A slot-holding object's slots (CNode or, in this world, TCB).
    fn holder_span(&self, cap: &Cap) -> Option<SlotSpan> {
        SlotSpan::of_cnode(cap).or_else(|| self.hooks.embedded_slots(cap))
    }

    /// Every occupied slot the kernel could reach: the root slot, slots of every object reachable
    /// from it, and every slot on the derivation lists of the initial capabilities (which include
    /// garbage no longer reachable from the root), closed under "slots of objects named there".
    /// Also checks that the empty slots met on the way have no derivation links.
    pub fn scan(&self) -> Result<Vec<SlotRef>, String> {
        self.scan_from(&[])
    }

    /// [`World::scan`], also starting from the slots `extra` (garbage that is in no list the
    /// initial capabilities reach: objects whose untyped capability was deleted).
    pub fn scan_from(&self, extra: &[u64]) -> Result<Vec<SlotRef>, String> {
        let mut seen_objects = HashSet::with_capacity_and_hasher(256, AddrHash);
        let mut seen = HashSet::with_capacity_and_hasher(1024, AddrHash);
        let mut out = Vec::with_capacity(1024);
        let mut work: Vec<SlotRef> = vec![self.root_slot];
        for i in [SLOT_U_MAIN, SLOT_U_SMALL, SLOT_U_DEV, SLOT_IRQ] {
            work.push(self.slot(i));
        }
        work.extend(extra.iter().filter_map(|&a| SlotRef::from_link(a)));
        while let Some(s) = work.pop() {
            let cte = s.read();
            if cte.cap.is_null() {
                if cte.mdb != Default::default() {
                    return Err(format!("empty slot {:#x} has MDB state {:?}", s.addr(), cte.mdb));
                }
                continue;
            }
            if !seen.insert(s.addr()) {
                continue;
            }
            out.push(s);
            for link in [cte.mdb.prev(), cte.mdb.next()] {
                if let Some(l) = SlotRef::from_link(link) {
                    work.push(l);
                }
            }
            if let Some(span) = self.holder_span(&cte.cap)
                && seen_objects.insert(span.base())
            {
                for i in 0..span.count() {
                    work.extend(span.slot(i));
                }
            }
        }
        Ok(out)
    }

    /// Every occupied slot (see [`World::scan`]), by address.
    pub fn universe(&self) -> BTreeSet<u64> {
        self.scan().unwrap_or_default().iter().map(|s| s.addr()).collect()
    }

    /// Check every real-side invariant (see the module docs); `zero_check` also scans the memory
    /// above each watermark. Returns the derivation parent of every non-empty slot.
    pub fn check_invariants(&self, zero_check: bool) -> Result<Parents, String> {
        self.check_invariants_from(zero_check, &[])
    }

    /// [`World::check_invariants`], scanning from `extra` slots too (see [`World::scan_from`]).
    pub fn check_invariants_from(&self, zero_check: bool, extra: &[u64]) -> Result<Parents, String> {
        let occupied = self.scan_from(extra)?;
        let mut heads = Vec::new();
        for &s in &occupied {
            let a = s.addr();
            let cte = s.read();
            match SlotRef::from_link(cte.mdb.prev()) {
                Some(p) if p.mdb().next() != a => return Err(format!("{a:#x}: prev.next != self")),
                Some(_) => {}
                None => heads.push(s),
            }
            if let Some(n) = SlotRef::from_link(cte.mdb.next())
                && n.mdb().prev() != a
            {
                return Err(format!("{a:#x}: next.prev != self"));
            }
            if let Some(z) = cte.mdb.zombie() {
                let span = self.holder_span(&cte.cap).ok_or_else(|| format!("zombie {a:#x} holds no slots"))?;
                if z.remaining > span.count() || z.pin.is_some_and(|p| p >= span.count()) {
                    return Err(format!("zombie {a:#x} counts out of range: {z:?}"));
                }
                for i in z.remaining..span.count() {
                    let c = span.slot(i).expect("in range");
                    if c != s && Some(i) != z.pin && !c.is_empty() {
                        return Err(format!("zombie {a:#x} passed occupied slot {i}"));
                    }
                }
                if let Some(h) = z.host {
                    let host = SlotRef::from_link(a - h.own * SLOT_BYTES + h.host * SLOT_BYTES)
                        .filter(|h| h.is_zombie())
                        .ok_or_else(|| format!("hosted zombie {a:#x} has no host"))?;
                    let hspan = self.holder_span(&host.raw_cap()).ok_or("host holds no slots")?;
                    if hspan.index_of(s) != Some(h.own) || hspan.index_of(host) != Some(h.host) {
                        return Err(format!(
                            "hosted zombie {a:#x}: host {:#x} is not its object's zombie",
                            host.addr()
                        ));
                    }
                }
            }
        }

        // The derivation tree, from the pre-order lists: a node's parent is the nearest
        // ancestor on a stack of open runs.
        let mut parent = Parents::with_capacity_and_hasher(occupied.len(), AddrHash);
        let mut listed = 0usize;
        for h in heads {
            let mut stack: Vec<SlotRef> = Vec::new();
            let mut cur = Some(h);
            while let Some(s) = cur {
                listed += 1;
                if listed > occupied.len() {
                    return Err(String::from("derivation list has a cycle"));
                }
                while let Some(&top) = stack.last() {
                    if mdb::is_mdb_parent_of(top, s) {
                        break;
                    }
                    stack.pop();
                }
                let p = stack.last().copied();
                if let Some(p) = p {
                    check_edge(&p.raw_cap(), &s.raw_cap())
                        .map_err(|e| format!("{:#x} -> {:#x}: {e}", p.addr(), s.addr()))?;
                }
                parent.insert(s.addr(), p.map(|p| p.addr()));
                stack.push(s);
                cur = SlotRef::from_link(s.mdb().next());
            }
        }
        if listed != occupied.len() {
            return Err(format!("{} occupied slots but {listed} on derivation lists", occupied.len()));
        }

        // Memory. Regions of all capabilities (the boot-time root CNode aside): they must nest or
        // be disjoint; distinct objects must be disjoint; whatever lies inside an untyped lies
        // below its watermark.
        let mut regions: Vec<(u64, u64, Cap)> = occupied
            .iter()
            .map(|s| s.raw_cap())
            .filter_map(|c| mdb::object_region(&c).map(|(b, s)| (b, b + (1u64 << s), c)))
            .filter(|&(b, _, _)| b != self.boot.base())
            .collect();
        regions.sort_by_key(|&(b, e, _)| (b, core::cmp::Reverse(e)));
        let mut open: Vec<u64> = Vec::new();
        let mut last_object: Option<(u64, Cap)> = None;
        for &(b, e, c) in &regions {
            while open.last().is_some_and(|&end| end <= b) {
                open.pop();
            }
            if open.last().is_some_and(|&end| e > end) {
                return Err(format!("{c:?} straddles the end of another region"));
            }
            open.push(e);
            if !matches!(c, Cap::Untyped { .. }) {
                if let Some((end, prev)) = last_object
                    && b < end
                    && !mdb::same_object_as(&prev, &c)
                {
                    return Err(format!("objects overlap: {prev:?} and {c:?}"));
                }
                last_object = Some((e, c));
            }
        }
        for &(p, e, u) in &regions {
            let Cap::Untyped { free_index, dirty_from, dirty_top, device, .. } = u else { continue };
            if free_index > e - p {
                return Err(format!("watermark beyond the end: {u:?}"));
            }
            if device && (dirty_from, dirty_top) != (0, 0) {
                return Err(format!("device untyped with a dirty range: {u:?}"));
            }
            if !device
                && (free_index > dirty_from
                    || dirty_from > dirty_top
                    || dirty_top > e - p
                    || (dirty_from == dirty_top && dirty_from != free_index))
            {
                return Err(format!("dirty range out of order: {u:?}"));
            }
            let first = regions.partition_point(|&(b, _, _)| b < p);
            for &(b, end, c) in regions[first..].iter().take_while(|&&(b, _, _)| b < e) {
                let alias = b == p && end == e && matches!(c, Cap::Untyped { .. });
                if end > e || alias {
                    continue;
                }
                if end > p + free_index {
                    return Err(format!("{c:?} is not below the watermark of {u:?}"));
                }
            }
            if zero_check
                && !device
                && !(kmem::is_zero(p + free_index, dirty_from - free_index)
                    && kmem::is_zero(p + dirty_top, e - p - dirty_top))
            {
                return Err(format!("memory above the watermark of {u:?}, outside its dirty range, is not zero"));
            }
        }
        Ok(parent)
    }

    /// Count the zombies in the world.
    pub fn zombies(&self) -> usize {
        self.scan().unwrap_or_default().iter().filter(|s| s.is_zombie()).count()
    }
}

/// The authority rules along one derivation edge.
fn check_edge(parent: &Cap, child: &Cap) -> Result<(), String> {
    match (*parent, *child) {
        (Cap::Untyped { ptr, size_bits, .. }, c) => {
            let r = mdb::object_region(&c).ok_or("untyped parent of a capability without memory")?;
            if !mdb::region_contains((ptr, size_bits), r) {
                return Err(String::from("child outside its untyped"));
            }
            if let Cap::Untyped { device: d2, .. } = c
                && d2 != matches!(parent, Cap::Untyped { device: true, .. })
            {
                return Err(String::from("device flag changed"));
            }
        }
        (Cap::Endpoint { ptr, badge, rights }, Cap::Endpoint { ptr: p2, badge: b2, rights: r2 })
        | (Cap::Notification { ptr, badge, rights }, Cap::Notification { ptr: p2, badge: b2, rights: r2 }) => {
            if ptr != p2 || !rights.contains(r2) || (badge != 0 && badge != b2) {
                return Err(String::from("endpoint/notification authority grew"));
            }
        }
        (Cap::Frame { ptr, size, rights, .. }, Cap::Frame { ptr: p2, size: s2, rights: r2, .. }) => {
            if ptr != p2 || size != s2 || !rights.contains(r2) {
                return Err(String::from("frame authority grew"));
            }
        }
        (p, c) => {
            if !mdb::same_region_as(&p, &c) {
                return Err(String::from("child names another object"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The reference model.

type CapId = u32;

#[derive(Clone, Debug)]
struct MCap {
    cap: Cap,
    slot: u64,
    parent: Option<CapId>,
    /// Can have children (made by retype, an untyped, a newly badged copy, a handler from a
    /// control capability).
    original: bool,
}

#[derive(Clone, Debug)]
struct MObj {
    bits: u8,
    /// The untyped region it was made from (`None` for boot objects).
    from: Option<(u64, u8)>,
}

/// The reference model (see the module docs).
#[derive(Clone, Debug)]
pub struct Model {
    slots: BTreeMap<u64, CapId>,
    caps: BTreeMap<CapId, MCap>,
    /// Live objects that are not untyped memory, by address.
    objects: BTreeMap<u64, MObj>,
    next_id: CapId,
    root_slot: u64,
    /// Expected finalisation calls.
    pub finalised: Vec<(Cap, bool)>,
    pub cancelled: Vec<(u64, u64)>,
}

/// The identity of the object a capability names, for "is it the last one"; `None` for
/// capabilities that are never the last of anything in particular (untyped, control).
fn obj_key(cap: &Cap) -> Option<(u8, u64, u64)> {
    Some(match *cap {
        Cap::CNode { ptr, radix, .. } => (1, ptr, u64::from(radix)),
        Cap::Tcb { ptr } => (2, ptr, 0),
        Cap::Endpoint { ptr, .. } => (3, ptr, 0),
        Cap::Notification { ptr, .. } => (4, ptr, 0),
        Cap::Reply { tcb, .. } => (5, tcb, 0),
        Cap::Frame { ptr, size, .. } => (6, ptr, size.bits().into()),
        Cap::Paging { ptr, level, .. } => (7, ptr, level as u64),
        Cap::IrqHandler { irq } => (8, irq.into(), 0),
        Cap::IoPort { first, last } => (9, first.into(), last.into()),
        // Untyped and control capabilities (and any capability added later that names no object).
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

/// A total order on capabilities, for comparing multisets.
fn cap_key(c: &Cap) -> [u64; 6] {
    let m = |m: Option<super::Mapping>| m.map_or([0, 0], |m| [m.asid.raw(), m.vaddr + 1]);
    match *c {
        Cap::Null => [0; 6],
        Cap::Untyped { ptr, size_bits, free_index, dirty_from, dirty_top, device } => {
            [1, ptr, u64::from(size_bits) << 1 | u64::from(device), free_index, dirty_from, dirty_top]
        }
        Cap::CNode { ptr, radix, guard_size, guard } => [2, ptr, radix.into(), guard_size.into(), guard, 0],
        Cap::Tcb { ptr } => [3, ptr, 0, 0, 0, 0],
        Cap::Endpoint { ptr, badge, rights } => [4, ptr, badge, rights.bits(), 0, 0],
        Cap::Notification { ptr, badge, rights } => [5, ptr, badge, rights.bits(), 0, 0],
        Cap::Reply { tcb, can_grant } => [6, tcb, can_grant.into(), 0, 0, 0],
        Cap::Frame { ptr, size, rights, device, mapped } => {
            let [v, a] = m(mapped);
            [7, ptr, u64::from(size.bits()) << 8 | rights.bits() << 1 | u64::from(device), v, a, 0]
        }
        Cap::Paging { ptr, level, mapped } => {
            let [v, a] = m(mapped);
            [8, ptr, level as u64, v, a, 0]
        }
        Cap::IrqControl => [9, 0, 0, 0, 0, 0],
        Cap::IrqHandler { irq } => [10, irq.into(), 0, 0, 0, 0],
        Cap::IoPortControl => [11, 0, 0, 0, 0, 0],
        Cap::IoPort { first, last } => [12, first.into(), last.into(), 0, 0, 0],
        #[allow(unreachable_patterns)]
        _ => [u64::MAX, 0, 0, 0, 0, 0],
    }
}

/// `(base, slot count)` of a slot-holding object in the test world.
fn model_holder(cap: &Cap) -> Option<(u64, u64)> {
    match *cap {
        Cap::CNode { ptr, radix, .. } => Some((ptr, 1u64 << radix)),
        Cap::Tcb { ptr } => Some((ptr, TCB_SLOTS)),
        _ => None,
    }
}

/// Bits `[shift, shift + width)` of `x` (shifts of 64 or more give 0).
fn bits(x: u64, shift: u32, width: u32) -> u64 {
    let v = if shift >= 64 { 0 } else { u128::from(x) >> shift };
    (v & ((1u128 << width) - 1)) as u64
}

impl Model {
    /// The model of a fresh [`World`].
    pub fn new(world: &World) -> Model {
        let mut m = Model {
            slots: BTreeMap::new(),
            caps: BTreeMap::new(),
            objects: BTreeMap::new(),
            next_id: 0,
            root_slot: world.root_slot.addr(),
            finalised: Vec::new(),
            cancelled: Vec::new(),
        };
        let root_cap = world.root();
        let root_id = m.insert(world.root_slot.addr(), root_cap, None, true);
        m.objects.insert(world.boot.base(), MObj { bits: ROOT_RADIX + CNODE_SLOT_BITS, from: None });
        for i in [SLOT_U_MAIN, SLOT_U_SMALL, SLOT_U_DEV, SLOT_IRQ] {
            m.insert(world.slot(i).addr(), world.slot(i).cap(), None, true);
        }
        m.insert(world.slot(SLOT_ROOT_COPY).addr(), root_cap, Some(root_id), false);
        m
    }

    fn insert(&mut self, slot: u64, cap: Cap, parent: Option<CapId>, original: bool) -> CapId {
        let id = self.next_id;
        self.next_id += 1;
        self.caps.insert(id, MCap { cap, slot, parent, original });
        self.slots.insert(slot, id);
        id
    }

    fn root(&self) -> Cap {
        self.content(self.root_slot)
    }

    fn content(&self, slot: u64) -> Cap {
        self.slots.get(&slot).map_or(Cap::Null, |id| self.caps[id].cap)
    }

    fn has_children(&self, id: CapId) -> bool {
        self.caps.values().any(|c| c.parent == Some(id))
    }

    fn descendants(&self, id: CapId) -> Vec<CapId> {
        let mut out = Vec::new();
        let mut work = vec![id];
        while let Some(p) = work.pop() {
            for (&cid, c) in &self.caps {
                if c.parent == Some(p) {
                    out.push(cid);
                    work.push(cid);
                }
            }
        }
        out
    }

    /// seL4 `resolveAddressBits`, restated: `(slot, bits left)`.
    fn resolve(&self, node: Cap, cptr: u64, depth: u32) -> Result<(u64, u32), Error> {
        let Cap::CNode { ptr, radix, guard_size, guard } = node else { return Err(Error::FailedLookup) };
        let (radix, gs) = (u32::from(radix), u32::from(guard_size));
        if radix + gs == 0 || gs > depth || bits(cptr, depth - gs, gs) != guard || radix + gs > depth {
            return Err(Error::FailedLookup);
        }
        let slot = ptr + bits(cptr, depth - gs - radix, radix) * SLOT_BYTES;
        let left = depth - gs - radix;
        if left == 0 {
            return Ok((slot, 0));
        }
        match self.content(slot) {
            next @ Cap::CNode { .. } => self.resolve(next, cptr, left),
            _ => Ok((slot, left)),
        }
    }

    fn lookup_slot(&self, root: Cap, cptr: u64, depth: u64) -> Result<u64, Error> {
        if !matches!(root, Cap::CNode { .. }) {
            return Err(Error::FailedLookup);
        }
        if !(1..=64).contains(&depth) {
            return Err(Error::RangeError);
        }
        match self.resolve(root, cptr, depth as u32)? {
            (slot, 0) => Ok(slot),
            _ => Err(Error::FailedLookup),
        }
    }

    /// The invoked capability: `(slot, cap)`.
    fn lookup_cap(&self, cptr: u64) -> Result<(u64, Cap), Error> {
        let (slot, _) = self.resolve(self.root(), cptr, 64)?;
        match self.content(slot) {
            Cap::Null => Err(Error::InvalidCapability),
            cap => Ok((slot, cap)),
        }
    }

    fn root_for(&self, r: Root) -> Result<Cap, Error> {
        match r {
            Root::Thread => Ok(self.root()),
            Root::At(cptr) => self.lookup_cap(cptr).map(|(_, c)| c),
        }
    }

    /// Delete a capability and everything only it kept alive.
    fn delete_cap(&mut self, id: CapId) {
        let mut work = vec![id];
        while let Some(id) = work.pop() {
            let Some(c) = self.caps.remove(&id) else { continue };
            self.slots.remove(&c.slot);
            for other in self.caps.values_mut() {
                if other.parent == Some(id) {
                    other.parent = c.parent;
                }
            }
            let last = match obj_key(&c.cap) {
                None => true,
                Some(k) => !self.caps.values().any(|o| obj_key(&o.cap) == Some(k)),
            };
            self.finalised.push((c.cap, last));
            if !last {
                continue;
            }
            if let Some((base, count)) = model_holder(&c.cap) {
                for i in 0..count {
                    if let Some(&inner) = self.slots.get(&(base + i * SLOT_BYTES)) {
                        work.push(inner);
                    }
                }
            }
            if let Some((_, ptr, _)) = obj_key(&c.cap)
                && mdb::object_region(&c.cap).is_some()
            {
                self.objects.remove(&ptr);
            }
        }
    }

    fn derive(&self, src: CapId, cap: Cap) -> Result<Cap, Error> {
        match cap {
            Cap::Untyped { .. } if self.has_children(src) => Err(Error::DeleteFirst),
            Cap::Frame { ptr, size, rights, device, .. } => Ok(Cap::Frame { ptr, size, rights, device, mapped: None }),
            Cap::Paging { level: PagingLevel::Pml4, .. } => Ok(cap),
            Cap::Paging { mapped: None, .. } => Err(Error::IllegalOperation),
            Cap::Null | Cap::IrqControl | Cap::IoPortControl | Cap::Reply { .. } => Err(Error::IllegalOperation),
            c => Ok(c),
        }
    }

    /// Insert a capability derived from `src` (Copy/Mint/TCB install).
    fn insert_derived(&mut self, src: CapId, dest: u64, cap: Cap) {
        let s = self.caps[&src].clone();
        let original = match (cap, s.cap) {
            (Cap::Untyped { .. }, _) => true,
            (Cap::Endpoint { badge: a, .. }, Cap::Endpoint { badge: b, .. }) => a != b,
            (Cap::Notification { badge: a, .. }, Cap::Notification { badge: b, .. }) => a != b,
            (Cap::IrqHandler { .. }, Cap::IrqControl) | (Cap::IoPort { .. }, Cap::IoPortControl) => true,
            _ => false,
        };
        let parent = if s.original { Some(src) } else { s.parent };
        if let (Cap::Untyped { ptr, size_bits, device, .. }, Cap::Untyped { ptr: p2, size_bits: b2, .. }) = (s.cap, cap)
            && ptr == p2
            && size_bits == b2
        {
            let full_index = 1u64 << size_bits;
            let dirty = if device { 0 } else { full_index };
            let full =
                Cap::Untyped { ptr, size_bits, free_index: full_index, dirty_from: dirty, dirty_top: dirty, device };
            self.caps.get_mut(&src).expect("source").cap = full;
        }
        self.insert(dest, cap, parent, original);
    }

    fn cnode_op(&mut self, inv: Root, op: &CNodeOp) -> Result<(), Error> {
        let dest_root = self.root_for(inv)?;
        let src_root = match op {
            CNodeOp::Copy { src_root, .. }
            | CNodeOp::Mint { src_root, .. }
            | CNodeOp::Move { src_root, .. }
            | CNodeOp::Mutate { src_root, .. } => self.root_for(*src_root)?,
            _ => Cap::Null,
        };
        match *op {
            CNodeOp::Copy { dest, src, rights, .. } => {
                let (s, d) = self.src_dest(dest_root, dest, src_root, src)?;
                let cap = self.derive(s, mask_rights(self.caps[&s].cap, rights))?;
                self.insert_derived(s, d, cap);
            }
            CNodeOp::Mint { dest, src, rights, data, .. } => {
                let (s, d) = self.src_dest(dest_root, dest, src_root, src)?;
                let cap =
                    with_data(false, data, mask_rights(self.caps[&s].cap, rights)).ok_or(Error::IllegalOperation)?;
                let cap = self.derive(s, cap)?;
                self.insert_derived(s, d, cap);
            }
            CNodeOp::Move { dest, src, .. } | CNodeOp::Mutate { dest, src, .. } => {
                let (s, d) = self.src_dest(dest_root, dest, src_root, src)?;
                let mut cap = self.caps[&s].cap;
                if let CNodeOp::Mutate { data, .. } = *op {
                    cap = with_data(true, data, cap).ok_or(Error::IllegalOperation)?;
                }
                let c = self.caps.get_mut(&s).expect("source");
                self.slots.remove(&c.slot);
                c.slot = d;
                c.cap = cap;
                self.slots.insert(d, s);
            }
            CNodeOp::Delete { slot } => {
                let slot = self.lookup_slot(dest_root, slot.0, slot.1)?;
                if let Some(&id) = self.slots.get(&slot) {
                    self.delete_cap(id);
                }
            }
            CNodeOp::Revoke { slot } => {
                let slot = self.lookup_slot(dest_root, slot.0, slot.1)?;
                if let Some(&id) = self.slots.get(&slot) {
                    for d in self.descendants(id) {
                        self.delete_cap(d);
                    }
                }
            }
            CNodeOp::CancelBadgedSends { slot } => {
                let slot = self.lookup_slot(dest_root, slot.0, slot.1)?;
                match self.content(slot) {
                    Cap::Endpoint { ptr, badge, rights } if rights == Rights::ALL => {
                        if badge != 0 {
                            self.cancelled.push((ptr, badge));
                        }
                    }
                    _ => return Err(Error::IllegalOperation),
                }
            }
        }
        Ok(())
    }

    fn src_dest(
        &self,
        dest_root: Cap,
        dest: (u64, u64),
        src_root: Cap,
        src: (u64, u64),
    ) -> Result<(CapId, u64), Error> {
        let d = self.lookup_slot(dest_root, dest.0, dest.1)?;
        if self.slots.contains_key(&d) {
            return Err(Error::DeleteFirst);
        }
        let s = self.lookup_slot(src_root, src.0, src.1)?;
        let id = *self.slots.get(&s).ok_or(Error::FailedLookup)?;
        Ok((id, d))
    }

    fn retype(&mut self, r: &RetypeOp) -> Result<(), Error> {
        let (uslot, ucap) = self.lookup_cap(r.untyped)?;
        let dest_root = self.root_for(r.dest_root)?;
        let Cap::Untyped { ptr, size_bits: ubits, free_index, dirty_from, dirty_top, device } = ucap else {
            return Err(Error::InvalidCapability);
        };
        let ty = ObjectType::from_raw(r.object_type).ok_or(Error::InvalidArgument)?;
        if r.size_bits >= 64 {
            return Err(Error::RangeError);
        }
        let obits = match ty {
            ObjectType::Untyped => r.size_bits,
            ObjectType::CNode => r.size_bits + u64::from(CNODE_SLOT_BITS),
            ObjectType::Tcb => TCB_BITS.into(),
            ObjectType::Endpoint => ENDPOINT_BITS.into(),
            ObjectType::Notification => NOTIFICATION_BITS.into(),
            ObjectType::Frame2M => LARGE_PAGE_BITS.into(),
            _ => PAGE_BITS.into(),
        };
        if obits > u64::from(MAX_UNTYPED_BITS) {
            return Err(Error::RangeError);
        }
        if ty == ObjectType::CNode && r.size_bits == 0 {
            return Err(Error::InvalidArgument);
        }
        if ty == ObjectType::CNode && r.size_bits > u64::from(MAX_CNODE_RADIX) {
            return Err(Error::RangeError);
        }
        if ty == ObjectType::Untyped && r.size_bits < u64::from(MIN_UNTYPED_BITS) {
            return Err(Error::InvalidArgument);
        }
        let node = if r.node_depth == 0 {
            dest_root
        } else {
            self.content(self.lookup_slot(dest_root, r.node_index, r.node_depth)?)
        };
        let Cap::CNode { ptr: nptr, radix, .. } = node else { return Err(Error::FailedLookup) };
        let n = 1u64 << radix;
        if r.node_offset >= n || r.count == 0 || r.count > RETYPE_MAX_COUNT || r.count > n - r.node_offset {
            return Err(Error::RangeError);
        }
        let dests: Vec<u64> = (0..r.count).map(|i| nptr + (r.node_offset + i) * SLOT_BYTES).collect();
        if dests.iter().any(|d| self.slots.contains_key(d)) {
            return Err(Error::DeleteFirst);
        }
        let uid = self.slots[&uslot];
        let reset = !self.has_children(uid);
        let free = if reset { 0 } else { free_index };
        // A reset makes everything below the old watermark dirty.
        let dirty_from = if reset && free_index != 0 && !device { 0 } else { dirty_from };
        let size = 1u64 << ubits;
        if (size - free) >> obits < r.count {
            return Err(Error::NotEnoughMemory);
        }
        if device && !matches!(ty, ObjectType::Frame4K | ObjectType::Frame2M | ObjectType::Untyped) {
            return Err(Error::InvalidArgument);
        }
        let first = free.div_ceil(1 << obits) * (1 << obits);
        let new_free = first + (r.count << obits);
        // Zeroing covers the objects (and the gap below them) up to the dirty top; a child
        // untyped is not zeroed but inherits the part of the dirty range it covers.
        let zeroed_to =
            if device || ty == ObjectType::Untyped { dirty_from } else { dirty_from.max(new_free.min(dirty_top)) };
        let (from_after, top_after) = if device {
            (0, 0)
        } else {
            let from = zeroed_to.max(new_free);
            let top = dirty_top.max(from);
            if from == top { (new_free, new_free) } else { (from, top) }
        };
        self.caps.get_mut(&uid).expect("untyped").cap = Cap::Untyped {
            ptr,
            size_bits: ubits,
            free_index: new_free,
            dirty_from: from_after,
            dirty_top: top_after,
            device,
        };
        let sb = r.size_bits as u8;
        for (i, d) in dests.into_iter().enumerate() {
            let base = ptr + first + ((i as u64) << obits);
            let all = Rights::ALL;
            let cap = match ty {
                ObjectType::Untyped => {
                    let off = base - ptr;
                    let size = 1u64 << obits;
                    let lo = dirty_from.clamp(off, off + size) - off;
                    let hi = dirty_top.clamp(off, off + size) - off;
                    let (lo, hi) = if device || lo == hi { (0, 0) } else { (lo, hi) };
                    Cap::Untyped { ptr: base, size_bits: sb, free_index: 0, dirty_from: lo, dirty_top: hi, device }
                }
                ObjectType::Tcb => Cap::Tcb { ptr: base },
                ObjectType::Endpoint => Cap::Endpoint { ptr: base, badge: 0, rights: all },
                ObjectType::Notification => Cap::Notification { ptr: base, badge: 0, rights: all },
                ObjectType::CNode => Cap::CNode { ptr: base, radix: sb, guard_size: 0, guard: 0 },
                ObjectType::Frame4K => {
                    Cap::Frame { ptr: base, size: FrameSize::Small, rights: all, device, mapped: None }
                }
                ObjectType::Frame2M => {
                    Cap::Frame { ptr: base, size: FrameSize::Large, rights: all, device, mapped: None }
                }
                ObjectType::PageTable => Cap::Paging { ptr: base, level: PagingLevel::PageTable, mapped: None },
                ObjectType::PageDirectory => Cap::Paging { ptr: base, level: PagingLevel::PageDirectory, mapped: None },
                ObjectType::Pdpt => Cap::Paging { ptr: base, level: PagingLevel::Pdpt, mapped: None },
                ObjectType::Pml4 => Cap::Paging { ptr: base, level: PagingLevel::Pml4, mapped: None },
            };
            if ty != ObjectType::Untyped {
                self.objects.insert(base, MObj { bits: obits as u8, from: Some((ptr, ubits)) });
            }
            self.insert(d, cap, Some(uid), true);
        }
        Ok(())
    }

    fn reset(&mut self, cptr: u64) -> Result<(), Error> {
        let (slot, cap) = self.lookup_cap(cptr)?;
        let Cap::Untyped { ptr, size_bits, free_index, dirty_from, dirty_top, device } = cap else {
            return Err(Error::InvalidCapability);
        };
        let id = self.slots[&slot];
        if self.has_children(id) {
            return Err(Error::DeleteFirst);
        }
        // Nothing is zeroed: what was below the watermark joins the dirty range.
        let dirty_from = if free_index != 0 && !device { 0 } else { dirty_from };
        self.caps.get_mut(&id).expect("untyped").cap =
            Cap::Untyped { ptr, size_bits, free_index: 0, dirty_from, dirty_top, device };
        Ok(())
    }

    fn tcb_slot(&self, tcb: u64, which: u64) -> Result<u64, Error> {
        let (_, cap) = self.lookup_cap(tcb)?;
        let Cap::Tcb { ptr } = cap else { return Err(Error::InvalidCapability) };
        if which >= TCB_SLOTS {
            return Err(Error::RangeError);
        }
        Ok(ptr + which * SLOT_BYTES)
    }

    fn tcb_install(&mut self, tcb: u64, which: u64, src: (u64, u64)) -> Result<(), Error> {
        let dest = self.tcb_slot(tcb, which)?;
        if self.slots.contains_key(&dest) {
            return Err(Error::DeleteFirst);
        }
        let s = self.lookup_slot(self.root(), src.0, src.1)?;
        let id = *self.slots.get(&s).ok_or(Error::FailedLookup)?;
        let cap = self.derive(id, self.caps[&id].cap)?;
        self.insert_derived(id, dest, cap);
        Ok(())
    }

    /// Apply an operation; the result the implementation must give.
    pub fn apply(&mut self, op: &Op) -> Result<(), Error> {
        match op {
            Op::Retype(r) => self.retype(r),
            Op::CNode { inv, op } => self.cnode_op(*inv, op),
            Op::Reset { untyped, .. } => self.reset(*untyped),
            Op::Lookup { cptr } => self.lookup_cap(*cptr).map(|_| ()),
            Op::TcbInstall { tcb, which, src } => self.tcb_install(*tcb, *which, *src),
            Op::TcbClear { tcb, which, .. } => {
                let slot = self.tcb_slot(*tcb, *which)?;
                if let Some(&id) = self.slots.get(&slot) {
                    self.delete_cap(id);
                }
                Ok(())
            }
        }
    }

    /// Whether a Revoke would destroy the slot holding its own target (then the outcome depends on
    /// the order of deletion — seL4 documents it as "may only partially complete" — and the model
    /// cannot predict it).
    fn revoke_destroys_target(&self, op: &Op) -> bool {
        let Op::CNode { inv, op: CNodeOp::Revoke { slot } } = op else { return false };
        let Ok(root) = self.root_for(*inv) else { return false };
        let Ok(s) = self.lookup_slot(root, slot.0, slot.1) else { return false };
        let Some(&id) = self.slots.get(&s) else { return false };
        let mut m = self.clone();
        for d in m.descendants(id) {
            m.delete_cap(d);
        }
        !m.caps.contains_key(&id)
    }

    /// Model-internal sanity: every capability names a live object, objects sit inside the
    /// untyped they came from and do not overlap.
    fn check(&self) -> Result<(), String> {
        for c in self.caps.values() {
            if let Some((_, ptr, _)) = obj_key(&c.cap)
                && mdb::object_region(&c.cap).is_some()
                && !self.objects.contains_key(&ptr)
            {
                return Err(format!("model: {:?} names a dead object", c.cap));
            }
        }
        let mut end = 0u64;
        for (&base, o) in &self.objects {
            if base < end {
                return Err(format!("model: objects overlap at {base:#x}"));
            }
            end = base + (1u64 << o.bits);
            if let Some(from) = o.from
                && !mdb::region_contains(from, (base, o.bits))
            {
                return Err(format!("model: object at {base:#x} outside its untyped"));
            }
        }
        Ok(())
    }
}

fn mask_rights(cap: Cap, rights: u64) -> Cap {
    let m = Rights::from_bits(rights);
    match cap {
        Cap::Endpoint { ptr, badge, rights } => Cap::Endpoint { ptr, badge, rights: rights.intersect(m) },
        Cap::Notification { ptr, badge, rights } => Cap::Notification { ptr, badge, rights: rights.intersect(m) },
        Cap::Frame { ptr, size, rights, device, mapped } => {
            Cap::Frame { ptr, size, rights: rights.intersect(m), device, mapped }
        }
        Cap::Reply { tcb, can_grant } => Cap::Reply { tcb, can_grant: can_grant && m.contains(Rights::GRANT) },
        c => c,
    }
}

fn with_data(preserve: bool, data: u64, cap: Cap) -> Option<Cap> {
    match cap {
        Cap::Endpoint { ptr, badge, rights } => {
            (!preserve && badge == 0).then_some(Cap::Endpoint { ptr, badge: data, rights })
        }
        Cap::Notification { ptr, badge, rights } => {
            (!preserve && badge == 0).then_some(Cap::Notification { ptr, badge: data, rights })
        }
        Cap::CNode { ptr, radix, .. } => {
            let gs = data % 64;
            (gs + u64::from(radix) <= 64).then(|| Cap::CNode {
                ptr,
                radix,
                guard_size: gs as u8,
                guard: bits(data, 6, gs as u32),
            })
        }
        c => Some(c),
    }
}

// ---------------------------------------------------------------------------------------------
// Operations.

/// Which capability an operation uses as a CNode root: the thread's root CNode capability, or the
/// capability at a `cptr` (which may be anything, to exercise "not a CNode").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    Thread,
    At(u64),
}

/// A CNode invocation in the harness's terms (slots as `(cptr, depth)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CNodeOp {
    Copy { dest: (u64, u64), src_root: Root, src: (u64, u64), rights: u64 },
    Mint { dest: (u64, u64), src_root: Root, src: (u64, u64), rights: u64, data: u64 },
    Move { dest: (u64, u64), src_root: Root, src: (u64, u64) },
    Mutate { dest: (u64, u64), src_root: Root, src: (u64, u64), data: u64 },
    Delete { slot: (u64, u64) },
    Revoke { slot: (u64, u64) },
    CancelBadgedSends { slot: (u64, u64) },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetypeOp {
    pub untyped: u64,
    pub object_type: u64,
    pub size_bits: u64,
    pub dest_root: Root,
    pub node_index: u64,
    pub node_depth: u64,
    pub node_offset: u64,
    pub count: u64,
}

/// One fuzzing operation. `budget` is the work per call for preemptible ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Retype(RetypeOp),
    CNode {
        inv: Root,
        op: CNodeOp,
    },
    Reset {
        untyped: u64,
    },
    /// Look a capability up for invocation (and compare the result).
    Lookup {
        cptr: u64,
    },
    /// Copy a capability into one of a TCB's slots (as TCB SetSpace would).
    TcbInstall {
        tcb: u64,
        which: u64,
        src: (u64, u64),
    },
    /// Delete a TCB slot's capability.
    TcbClear {
        tcb: u64,
        which: u64,
    },
}

/// Raw fuzzer input for one operation; [`Harness::decode_op`] turns it into an [`Op`] biased
/// towards meaningful arguments, using the current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOp {
    pub kind: u8,
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

impl RawOp {
    /// Bytes per raw op in fuzzer input.
    pub const BYTES: usize = 25;

    pub fn from_bytes(b: &[u8]) -> RawOp {
        let mut buf = [0u8; Self::BYTES];
        let n = b.len().min(Self::BYTES);
        buf[..n].copy_from_slice(&b[..n]);
        let w = |i: usize| u64::from_le_bytes(buf[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
        RawOp { kind: buf[0], a: w(0), b: w(1), c: w(2) }
    }
}

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn raw_op(&mut self) -> RawOp {
        RawOp { kind: self.next_u64() as u8, a: self.next_u64(), b: self.next_u64(), c: self.next_u64() }
    }
}

/// How the harness runs operations (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Model,
    Interleaved,
}

/// Counters of what a run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops: u64,
    pub ok: u64,
    pub errors: u64,
    pub preemptions: u64,
    pub skipped: u64,
    pub max_zombies: usize,
}

/// A world, its model, and the operation loop.
pub struct Harness {
    pub world: World,
    pub model: Model,
    pub mode: Mode,
    pub stats: Stats,
    /// Full state comparison every this many operations (1 = every operation).
    pub check_every: u64,
    /// Memory zero scan every this many operations.
    pub zero_check_every: u64,
    /// Counts of (operation, result), when enabled.
    pub histogram: Option<BTreeMap<(String, String), u64>>,
}

const TCB_TYPE: u64 = ObjectType::Tcb as u64;

impl Harness {
    pub fn new(mode: Mode) -> Harness {
        Harness::with_arena(mode, ARENA_BITS)
    }

    /// A harness whose world has `2^arena_bits` bytes of memory.
    pub fn with_arena(mode: Mode, arena_bits: u8) -> Harness {
        let world = World::with_arena(arena_bits);
        let model = Model::new(&world);
        Harness { world, model, mode, stats: Stats::default(), check_every: 1, zero_check_every: 64, histogram: None }
    }

    /// Root slot indices whose capability matches `pred`; the initial capabilities (slots 1..=5)
    /// only now and then, so that the world does not lose its untyped memory early.
    fn slots_where(&self, w: u64, pred: impl Fn(&Cap) -> bool) -> Vec<u64> {
        let span = self.world.root_span();
        let initial_too = (w >> 40).is_multiple_of(64);
        (0..span.count())
            .filter(|&i| initial_too || !(SLOT_U_MAIN..=SLOT_ROOT_COPY).contains(&i))
            .filter(|&i| span.slot(i).is_some_and(|s| pred(&s.raw_cap())))
            .collect()
    }

    /// A root slot index: usually one matching `pred`, sometimes any (not an initial one, mostly).
    fn pick(&self, w: u64, pred: impl Fn(&Cap) -> bool) -> u64 {
        let v = self.slots_where(w, pred);
        if !w.is_multiple_of(8) && !v.is_empty() {
            return v[(w >> 3) as usize % v.len()];
        }
        let i = (w >> 3) % (1 << ROOT_RADIX);
        if !(w >> 40).is_multiple_of(64) && (SLOT_U_MAIN..=SLOT_ROOT_COPY).contains(&i) { i + 8 } else { i }
    }

    /// Like [`Harness::pick`], but the initial capabilities are as likely as any other (for
    /// operations that use a capability without consuming it).
    fn pick_any(&self, w: u64, pred: impl Fn(&Cap) -> bool) -> u64 {
        self.pick(w & !(63 << 40), pred)
    }

    /// A `(cptr, depth)` slot address for CNode arguments: mostly a root slot, sometimes a slot in
    /// a CNode held in the root CNode, sometimes garbage.
    fn addr(&self, w: u64, pred: impl Fn(&Cap) -> bool) -> (u64, u64) {
        let root_bits = u64::from(ROOT_RADIX);
        match (w >> 56) % 16 {
            0..=9 => (self.pick(w, pred), root_bits),
            10..=13 => {
                let i = self.pick(w, |c| matches!(c, Cap::CNode { .. }));
                match self.world.slot(i).cap() {
                    Cap::CNode { radix, guard_size, guard, .. } => {
                        let lvl = u32::from(radix) + u32::from(guard_size);
                        let j = (w >> 20) & ((1 << radix) - 1);
                        let cptr = i.checked_shl(lvl).unwrap_or(0) | guard.checked_shl(radix.into()).unwrap_or(0) | j;
                        (cptr, root_bits + u64::from(lvl))
                    }
                    _ => (i, root_bits),
                }
            }
            14 => (w & 0xffff, (w >> 16) % 70),
            _ => (w >> 8, 64),
        }
    }

    /// A `cptr` naming a capability for invocation (depth 64).
    fn cap_cptr(&self, w: u64, pred: impl Fn(&Cap) -> bool) -> u64 {
        let shift = 64 - u32::from(ROOT_RADIX);
        match (w >> 56) % 16 {
            0..=12 => self.pick_any(w, pred) << shift,
            13..=14 => {
                let i = self.pick(w, |c| matches!(c, Cap::CNode { .. }));
                (i << shift) | ((w >> 8) & ((1 << shift) - 1))
            }
            _ => w,
        }
    }

    fn root_choice(&self, w: u64) -> Root {
        if w.is_multiple_of(16) {
            Root::At(self.cap_cptr(w >> 4, |c| matches!(c, Cap::CNode { .. })))
        } else {
            Root::Thread
        }
    }

    /// Turn raw input into an operation, using the current state to aim at real slots.
    pub fn decode_op(&self, r: RawOp) -> (Op, u32) {
        let RawOp { kind, a, b, c } = r;
        let budget = match c % 8 {
            0 => 1,
            1..=5 => 1 + ((c >> 3) % 8) as u32,
            6 => 64,
            _ => 1000,
        };
        let any = |_: &Cap| true;
        let full = |cap: &Cap| !cap.is_null();
        let empty = |cap: &Cap| cap.is_null();
        let is_untyped = |cap: &Cap| matches!(cap, Cap::Untyped { .. });
        let op = match kind % 32 {
            0..=5 => {
                let object_type = match b % 32 {
                    0..=10 => b % 32,
                    11..=14 => ObjectType::CNode as u64,
                    15..=18 => ObjectType::Endpoint as u64,
                    19..=21 => ObjectType::Untyped as u64,
                    22..=24 => TCB_TYPE,
                    25..=26 => ObjectType::Notification as u64,
                    27..=29 => ObjectType::Frame4K as u64,
                    30 => ObjectType::from_raw(b >> 8 & 7).map_or(0, |t| t as u64),
                    _ => (b >> 8) % 20,
                };
                let device_ok = matches!(object_type, 0 | 5 | 6) || (b >> 60) % 8 == 0;
                let untyped = |cap: &Cap| matches!(cap, Cap::Untyped { device, .. } if device_ok || !device);
                let size_bits = match (b >> 8) % 16 {
                    0 => [0, 25, 41, 42, 43, 47, 48, 63, 64, 65, u64::MAX][(b >> 12) as usize % 11],
                    1 => (b >> 12) % 9,
                    _ if object_type == ObjectType::CNode as u64 => 1 + (b >> 12) % 4,
                    _ if object_type == ObjectType::Untyped as u64 => 4 + (b >> 12) % 14,
                    _ => (b >> 12) % 3,
                };
                let dest_root = self.root_choice(a >> 40);
                let (node_index, node_depth) = if (a >> 44) % 8 == 0 {
                    self.addr(a.rotate_left(17), |c| matches!(c, Cap::CNode { .. }))
                } else {
                    (0, 0)
                };
                let node_offset = if (b >> 20) % 8 == 0 { (b >> 24) % 80 } else { self.pick(b >> 24, empty) };
                let count = match (b >> 40) % 16 {
                    0 => (b >> 44) % 300,
                    1..=10 => 1,
                    _ => 1 + (b >> 44) % 4,
                };
                Op::Retype(RetypeOp {
                    untyped: self.cap_cptr(a, untyped),
                    object_type,
                    size_bits,
                    dest_root,
                    node_index,
                    node_depth,
                    node_offset,
                    count,
                })
            }
            6..=9 => Op::CNode {
                inv: self.root_choice(c >> 8),
                op: CNodeOp::Copy {
                    dest: self.addr(a, empty),
                    src_root: self.root_choice(c >> 12),
                    src: self.addr(b, full),
                    rights: (c >> 16) % 16,
                },
            },
            10..=12 => {
                let data = match (c >> 20) % 4 {
                    0 => 0,
                    1 => 1 + (c >> 24) % 4,
                    2 => c >> 24,
                    _ => (((c >> 24) % 4) << 6) | ((c >> 30) % 4),
                };
                Op::CNode {
                    inv: self.root_choice(c >> 8),
                    op: CNodeOp::Mint {
                        dest: self.addr(a, empty),
                        src_root: self.root_choice(c >> 12),
                        src: self.addr(b, full),
                        rights: (c >> 16) % 16,
                        data,
                    },
                }
            }
            13..=14 => {
                // Half the time, move a CNode or TCB capability into another CNode: this is how
                // cycles of CNodes (and TCBs) holding each other's last capabilities arise.
                let holder = |c: &Cap| matches!(c, Cap::CNode { .. } | Cap::Tcb { .. });
                let (dest, src) = if (c >> 40) % 2 == 0 {
                    (self.addr((a & !(0xff << 56)) | (10 << 56), empty), self.addr(b & !(0xff << 56), holder))
                } else {
                    (self.addr(a, empty), self.addr(b, full))
                };
                Op::CNode {
                    inv: self.root_choice(c >> 8),
                    op: CNodeOp::Move { dest, src_root: self.root_choice(c >> 12), src },
                }
            }
            15 => Op::CNode {
                inv: self.root_choice(c >> 8),
                op: CNodeOp::Mutate {
                    dest: self.addr(a, empty),
                    src_root: self.root_choice(c >> 12),
                    src: self.addr(b, full),
                    data: (((b >> 50) % 4) << 6) | ((b >> 54) % 4),
                },
            },
            16..=19 => Op::CNode { inv: self.root_choice(c >> 8), op: CNodeOp::Delete { slot: self.addr(a, full) } },
            20..=21 => {
                let slot = match (c >> 40) % 4 {
                    0 => (self.pick_any(a, is_untyped), u64::from(ROOT_RADIX)),
                    1 => self.addr(a, is_untyped),
                    _ => self.addr(a, full),
                };
                Op::CNode { inv: self.root_choice(c >> 8), op: CNodeOp::Revoke { slot } }
            }
            22 => Op::Reset { untyped: self.cap_cptr(a, is_untyped) },
            23..=25 => Op::Lookup { cptr: self.cap_cptr(a, if b % 4 == 0 { any } else { full }) },
            26 => Op::CNode {
                inv: self.root_choice(c >> 8),
                op: CNodeOp::CancelBadgedSends { slot: self.addr(a, |c| matches!(c, Cap::Endpoint { .. })) },
            },
            27..=29 => Op::TcbInstall {
                tcb: self.cap_cptr(a, |c| matches!(c, Cap::Tcb { .. })),
                which: if b % 16 == 0 { b >> 4 } else { b % TCB_SLOTS },
                src: self.addr(b.rotate_left(13), full),
            },
            _ => Op::TcbClear {
                tcb: self.cap_cptr(a, |c| matches!(c, Cap::Tcb { .. })),
                which: if b % 16 == 0 { b >> 4 } else { b % TCB_SLOTS },
            },
        };
        (op, budget)
    }

    fn real_root(&self, r: Root) -> Result<Cap, Error> {
        match r {
            Root::Thread => Ok(self.world.root()),
            Root::At(cptr) => lookup_cap(&self.world.root(), cptr).map(|(_, c)| c),
        }
    }

    fn tcb_slot(&self, tcb: u64, which: u64) -> Result<SlotRef, Error> {
        let (_, cap) = lookup_cap(&self.world.root(), tcb)?;
        if !matches!(cap, Cap::Tcb { .. }) {
            return Err(Error::InvalidCapability);
        }
        self.world.hooks.embedded_slots(&cap).and_then(|s| s.slot(which)).ok_or(Error::RangeError)
    }

    /// Run a preemptible operation: to completion (model mode, checking invariants at each
    /// preemption point) or for one call (interleaved mode).
    fn run_preemptible(
        &mut self,
        budget: u32,
        mut step: impl FnMut(&mut World, &mut Budget) -> Progress,
    ) -> Result<(), String> {
        loop {
            let mut b = Budget::new(budget);
            if step(&mut self.world, &mut b) == Progress::Done {
                return Ok(());
            }
            self.stats.preemptions += 1;
            if self.mode == Mode::Interleaved {
                return Ok(());
            }
            let known: Vec<u64> = self.model.slots.keys().copied().collect();
            self.world.check_invariants_from(false, &known).map_err(|e| format!("at a preemption point: {e}"))?;
        }
    }

    /// Run `op` on the implementation. `Err(Ok(e))` is the kernel error; `Err(Err(msg))` a
    /// failed invariant at a preemption point.
    fn real_apply(&mut self, op: &Op, budget: u32) -> Result<Result<(), Error>, String> {
        let root = self.world.root();
        Ok(match *op {
            Op::Retype(r) => {
                let res = (|| {
                    let (uslot, _) = lookup_cap(&root, r.untyped)?;
                    let dest_root = self.real_root(r.dest_root)?;
                    let args = RetypeArgs {
                        object_type: r.object_type,
                        size_bits: r.size_bits,
                        node_index: r.node_index,
                        node_depth: r.node_depth,
                        node_offset: r.node_offset,
                        count: r.count,
                    };
                    untyped::decode_retype(uslot, &args, &dest_root)
                })();
                match res {
                    Ok(plan) => {
                        self.run_preemptible(budget, |_, b| untyped::perform_retype(plan.clone(), b))?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Reset { untyped: cptr } => match lookup_cap(&root, cptr).and_then(|(s, _)| untyped::decode_reset(s)) {
                Ok(plan) => {
                    self.run_preemptible(budget, |_, b| untyped::perform_reset(plan.clone(), b))?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::CNode { inv, op } => {
                let res = (|| {
                    let dest_root = self.real_root(inv)?;
                    let with_src = |src_root: Root| self.real_root(src_root);
                    let inv = match op {
                        CNodeOp::Copy { dest, src_root, src, rights } => CNodeInvocation::Copy {
                            dest_index: dest.0,
                            dest_depth: dest.1,
                            src_root: with_src(src_root)?,
                            src_index: src.0,
                            src_depth: src.1,
                            rights,
                        },
                        CNodeOp::Mint { dest, src_root, src, rights, data } => CNodeInvocation::Mint {
                            dest_index: dest.0,
                            dest_depth: dest.1,
                            src_root: with_src(src_root)?,
                            src_index: src.0,
                            src_depth: src.1,
                            rights,
                            data,
                        },
                        CNodeOp::Move { dest, src_root, src } => CNodeInvocation::Move {
                            dest_index: dest.0,
                            dest_depth: dest.1,
                            src_root: with_src(src_root)?,
                            src_index: src.0,
                            src_depth: src.1,
                        },
                        CNodeOp::Mutate { dest, src_root, src, data } => CNodeInvocation::Mutate {
                            dest_index: dest.0,
                            dest_depth: dest.1,
                            src_root: with_src(src_root)?,
                            src_index: src.0,
                            src_depth: src.1,
                            data,
                        },
                        CNodeOp::Delete { slot } => CNodeInvocation::Delete { index: slot.0, depth: slot.1 },
                        CNodeOp::Revoke { slot } => CNodeInvocation::Revoke { index: slot.0, depth: slot.1 },
                        CNodeOp::CancelBadgedSends { slot } => {
                            CNodeInvocation::CancelBadgedSends { index: slot.0, depth: slot.1 }
                        }
                    };
                    cnode::decode(&dest_root, &inv)
                })();
                match res {
                    Ok(plan) => {
                        self.run_preemptible(budget, |w, b| cnode::perform(plan.clone(), &mut w.hooks, b))?;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Lookup { cptr } => {
                let real = lookup_cap(&root, cptr).map(|(s, c)| (s.addr(), c));
                if self.mode == Mode::Model {
                    let model = self.model.lookup_cap(cptr);
                    if real != model {
                        return Err(format!("lookup {cptr:#x}: real {real:?}, model {model:?}"));
                    }
                }
                real.map(|_| ())
            }
            Op::TcbInstall { tcb, which, src } => {
                let res = (|| {
                    let dest = self.tcb_slot(tcb, which)?;
                    if !dest.is_empty() {
                        return Err(Error::DeleteFirst);
                    }
                    let s = lookup_slot(&root, src.0, src.1)?;
                    if s.is_empty() {
                        return Err(Error::FailedLookup);
                    }
                    if s.is_zombie() {
                        return Err(Error::IllegalOperation);
                    }
                    let cap = cnode::derive_cap(s, &s.cap())?;
                    Ok((cap, s, dest))
                })();
                res.map(|(cap, s, dest)| mdb::cte_insert(cap, s, dest))
            }
            Op::TcbClear { tcb, which } => match self.tcb_slot(tcb, which) {
                Ok(slot) => {
                    self.run_preemptible(budget, |w, b| delete::delete(slot, &mut w.hooks, b))?;
                    Ok(())
                }
                Err(e) => Err(e),
            },
        })
    }

    /// Run one operation and check; `Err` describes a failure.
    pub fn step(&mut self, raw: RawOp) -> Result<(), String> {
        if raw.kind >= 248 {
            return self.entangle(raw);
        }
        let (op, budget) = self.decode_op(raw);
        self.run_op(op, budget)
    }

    /// A few ordinary operations that make a cycle: two CNodes (or a CNode and a TCB) whose only
    /// capabilities are in each other. Revoking their untyped then has to delete a cycle.
    fn entangle(&mut self, raw: RawOp) -> Result<(), String> {
        let d = u64::from(ROOT_RADIX);
        let cnodes = self.slots_where(0, |c| matches!(c, Cap::CNode { radix: 1..=8, guard_size: 0, .. }));
        let tcbs = self.slots_where(0, |c| matches!(c, Cap::Tcb { .. }));
        let Some(&x) = cnodes.get(raw.a as usize % cnodes.len().max(1)) else { return Ok(()) };
        let Cap::CNode { radix: xr, .. } = self.world.slot(x).cap() else { return Ok(()) };
        let xr = u64::from(xr);
        let with_tcb = raw.kind.is_multiple_of(2) && !tcbs.is_empty();
        let budget = 1 + (raw.c % 4) as u32;
        if with_tcb {
            // TCB slot <- copy of X; X[l] <- the TCB capability; delete X's root capability.
            let y = tcbs[raw.b as usize % tcbs.len()];
            let l = raw.c % (1 << xr);
            let t = Op::TcbInstall { tcb: y << (64 - d), which: raw.c % TCB_SLOTS, src: (x, d) };
            self.run_op(t, budget)?;
            let mv = CNodeOp::Move { dest: ((x << xr) | l, d + xr), src_root: Root::Thread, src: (y, d) };
            self.run_op(Op::CNode { inv: Root::Thread, op: mv }, budget)?;
            self.run_op(Op::CNode { inv: Root::Thread, op: CNodeOp::Delete { slot: (x, d) } }, budget)
        } else {
            // Y[k] <- X; X[l] <- Y (reached through Y[k]).
            let Some(&y) =
                cnodes.iter().find(|&&y| y != x && !raw.b.is_multiple_of(3)).or(cnodes.iter().find(|&&y| y != x))
            else {
                return Ok(());
            };
            let Cap::CNode { radix: yr, .. } = self.world.slot(y).cap() else { return Ok(()) };
            let yr = u64::from(yr);
            let (k, l) = (raw.b % (1 << yr), raw.c % (1 << xr));
            let mv1 = CNodeOp::Move { dest: ((y << yr) | k, d + yr), src_root: Root::Thread, src: (x, d) };
            self.run_op(Op::CNode { inv: Root::Thread, op: mv1 }, budget)?;
            let dest = ((((y << yr) | k) << xr) | l, d + yr + xr);
            let mv2 = CNodeOp::Move { dest, src_root: Root::Thread, src: (y, d) };
            self.run_op(Op::CNode { inv: Root::Thread, op: mv2 }, budget)
        }
    }

    /// Run one decoded operation and check.
    fn run_op(&mut self, op: Op, budget: u32) -> Result<(), String> {
        self.stats.ops += 1;
        if self.mode == Mode::Model && self.model.revoke_destroys_target(&op) {
            self.stats.skipped += 1;
            return Ok(());
        }
        let real = self.real_apply(&op, budget).map_err(|e| format!("{op:?}: {e}"))?;
        match real {
            Ok(()) => self.stats.ok += 1,
            Err(_) => self.stats.errors += 1,
        }
        if let Some(h) = self.histogram.as_mut() {
            let name = match &op {
                Op::Retype(r) => format!("Retype{}", r.object_type),
                Op::CNode { op, .. } => format!("{op:?}").split([' ', '{']).next().unwrap_or("").into(),
                o => format!("{o:?}").split([' ', '{']).next().unwrap_or("").into(),
            };
            *h.entry((name, format!("{real:?}"))).or_insert(0) += 1;
        }
        let n = self.stats.ops;
        let zero_check = self.zero_check_every != 0 && n.is_multiple_of(self.zero_check_every);
        match self.mode {
            Mode::Model => {
                let expected = self.model.apply(&op);
                if real != expected {
                    return Err(format!("{op:?}: implementation gave {real:?}, model {expected:?}"));
                }
                if n.is_multiple_of(self.check_every) || zero_check {
                    self.compare(zero_check).map_err(|e| format!("after {op:?}: {e}"))?;
                }
            }
            Mode::Interleaved => {
                self.world.hooks.finalised.clear();
                self.world.hooks.cancelled.clear();
                if n.is_multiple_of(self.check_every) || zero_check {
                    self.world.check_invariants(zero_check).map_err(|e| format!("after {op:?}: {e}"))?;
                    self.stats.max_zombies = self.stats.max_zombies.max(self.world.zombies());
                }
            }
        }
        Ok(())
    }

    /// Compare the implementation with the model and check every invariant.
    pub fn compare(&mut self, zero_check: bool) -> Result<(), String> {
        let known: Vec<u64> = self.model.slots.keys().copied().collect();
        let parents = self.world.check_invariants_from(zero_check, &known)?;
        self.model.check()?;
        let m = &self.model;
        for (&addr, id) in &m.slots {
            let cte = SlotRef::from_link(addr).expect("slot").read();
            if cte.cap != m.caps[id].cap || cte.mdb.zombie().is_some() {
                return Err(format!("slot {addr:#x}: real {:?}, model {:?}", cte, m.caps[id].cap));
            }
        }
        for &addr in parents.keys() {
            if !m.slots.contains_key(&addr) {
                return Err(format!(
                    "slot {addr:#x} holds {:?}, model: empty",
                    SlotRef::from_link(addr).map(|s| s.read())
                ));
            }
        }
        for (id, c) in &m.caps {
            let want = c.parent.map(|p| m.caps[&p].slot);
            let got = parents.get(&c.slot).copied().flatten();
            if want != got {
                return Err(format!(
                    "capability {:?} (model #{id}) at {:#x}: real parent {got:?}, model {want:?}",
                    c.cap, c.slot
                ));
            }
        }
        let mut fr: Vec<Cap> = self.world.hooks.finalised.iter().map(|e| e.0).collect();
        let mut fm: Vec<Cap> = self.model.finalised.iter().map(|e| e.0).collect();
        let mut lr: Vec<_> = self.world.hooks.finalised.iter().filter(|e| e.1).filter_map(|e| obj_key(&e.0)).collect();
        let mut lm: Vec<_> = self.model.finalised.iter().filter(|e| e.1).filter_map(|e| obj_key(&e.0)).collect();
        fr.sort_by_key(cap_key);
        fm.sort_by_key(cap_key);
        lr.sort();
        lm.sort();
        if fr != fm || lr != lm {
            return Err(format!(
                "finalisation differs: real {:?}, model {:?}",
                self.world.hooks.finalised, self.model.finalised
            ));
        }
        if self.world.hooks.cancelled != self.model.cancelled {
            return Err(format!(
                "cancel-badged-sends: real {:?}, model {:?}",
                self.world.hooks.cancelled, self.model.cancelled
            ));
        }
        self.world.hooks.finalised.clear();
        self.model.finalised.clear();
        self.world.hooks.cancelled.clear();
        self.model.cancelled.clear();
        Ok(())
    }

    /// Tear the world down: finish every unfinished deletion, revoke and reset every untyped
    /// capability that has no derivation parent (in small steps, checking invariants on the way)
    /// and check that all memory came back: no zombie, no object left inside any of those
    /// untypeds, their watermarks at 0 and their normal memory zero.
    pub fn teardown(&mut self) -> Result<(), String> {
        let mut hooks = RecordingHooks::default();
        let mut roots: Vec<SlotRef> = Vec::new();
        // Finishing a zombie, or revoking an untyped, can leave new zombies behind when a revoke
        // destroys the slot of its own target (a CNode made from an untyped holding that
        // untyped's capability): repeat until nothing is left to do.
        for _round in 0..100 {
            // Zombies whose operation was abandoned: finish them.
            while let Some(z) = self.world.scan()?.into_iter().find(|s| s.is_zombie()) {
                while delete::delete(z, &mut hooks, &mut Budget::new(3)) == Progress::Preempted {}
            }
            let parents = self.world.check_invariants(false)?;
            roots = parents
                .iter()
                .filter(|(_, p)| p.is_none())
                .filter_map(|(&a, _)| SlotRef::from_link(a))
                .filter(|s| matches!(s.cap(), Cap::Untyped { .. }))
                .collect();
            roots.sort_by_key(|s| s.addr());
            for &s in &roots {
                if !matches!(s.cap(), Cap::Untyped { .. }) {
                    // Deleted by an earlier revoke (it was kept in an object made from that untyped).
                    continue;
                }
                let mut steps = 0u64;
                while delete::revoke(s, &mut hooks, &mut Budget::new(5)) == Progress::Preempted {
                    steps += 1;
                    if steps.is_multiple_of(64) {
                        self.world.check_invariants(false).map_err(|e| format!("during teardown revoke: {e}"))?;
                    }
                }
                if !matches!(s.cap(), Cap::Untyped { .. }) {
                    // It was kept in an object made from itself, and the revoke destroyed it.
                    continue;
                }
                let plan = untyped::decode_reset(s).map_err(|e| format!("reset after revoke: {e:?}"))?;
                while untyped::perform_reset(plan.clone(), &mut Budget::new(7)) == Progress::Preempted {}
            }
            if self.world.zombies() == 0 {
                break;
            }
        }
        self.world.check_invariants(true)?;
        if self.world.zombies() != 0 {
            return Err(String::from("zombies left after teardown"));
        }
        let mut regions = Vec::new();
        for &s in &roots {
            if let Cap::Untyped { ptr, size_bits, free_index, dirty_from, dirty_top, device } = s.cap() {
                let outside_dirty_zero =
                    kmem::is_zero(ptr, dirty_from) && kmem::is_zero(ptr + dirty_top, (1 << size_bits) - dirty_top);
                if free_index != 0 || (!device && !outside_dirty_zero) {
                    return Err(format!("untyped {:?} not fully reclaimed", s.cap()));
                }
                regions.push((ptr, size_bits));
            }
        }
        for a in self.world.universe() {
            let cap = SlotRef::from_link(a).expect("slot").raw_cap();
            if let Some(r) = mdb::object_region(&cap)
                && regions.iter().any(|&u| mdb::region_contains(u, r) && u != r)
            {
                return Err(format!("{cap:?} survived the teardown"));
            }
        }
        Ok(())
    }
}

/// Run the operations encoded in `data` (fuzzer input): the first byte picks the mode, the rest
/// is [`RawOp::BYTES`]-byte operations. Panics on any failure.
pub fn run_bytes(data: &[u8]) {
    let Some((&mode, ops)) = data.split_first() else { return };
    let mode = if mode % 4 == 0 { Mode::Interleaved } else { Mode::Model };
    // Small memory: fuzzers run many short inputs, and set-up and teardown touch all of it.
    let mut h = Harness::with_arena(mode, 17);
    h.zero_check_every = 16;
    for chunk in ops.chunks(RawOp::BYTES) {
        if let Err(e) = h.step(RawOp::from_bytes(chunk)) {
            panic!("capability fuzzing failure: {e}");
        }
    }
    if let Err(e) = h.teardown() {
        panic!("capability fuzzing teardown failure: {e}");
    }
}

/// Run at least `ops` operations from `seed`, in fresh worlds of `per_world` raw operations
/// each; returns the statistics. Panics on any failure, naming the seed, world and step.
pub fn run_seed(seed: u64, ops: u64, per_world: u64, mode: Mode, check_every: u64) -> Stats {
    let mut rng = Rng::new(seed);
    let mut total = Stats::default();
    let mut world_no = 0;
    while total.ops < ops {
        let mut h = Harness::new(mode);
        h.check_every = check_every;
        h.zero_check_every = 4096;
        for i in 0..per_world {
            if h.stats.ops + total.ops >= ops {
                break;
            }
            let raw = rng.raw_op();
            if let Err(e) = h.step(raw) {
                panic!("seed {seed:#x}, world {world_no}, step {i}: {e}");
            }
        }
        if let Err(e) = h.compare_or_check().and_then(|()| h.teardown()) {
            panic!("seed {seed:#x}, world {world_no}, at the end: {e}");
        }
        world_no += 1;
        total.ops += h.stats.ops;
        total.ok += h.stats.ok;
        total.errors += h.stats.errors;
        total.preemptions += h.stats.preemptions;
        total.skipped += h.stats.skipped;
        total.max_zombies = total.max_zombies.max(h.stats.max_zombies);
    }
    total
}

impl Harness {
    /// The full end-of-sequence check for the harness's mode.
    pub fn compare_or_check(&mut self) -> Result<(), String> {
        match self.mode {
            Mode::Model => self.compare(true),
            Mode::Interleaved => self.world.check_invariants(true).map(|_| ()),
        }
    }
}
