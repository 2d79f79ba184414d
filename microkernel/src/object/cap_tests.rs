//! Unit tests of the capability core: lookup, derivation, retype, delete and finalisation,
//! revoke, rights and badges, preemption and restart. They run in the fuzzing harness's test
//! [`World`] (root CNode of 64 slots, untypeds in slots 1–3, IRQ control in slot 4).

use ozone_abi::Error;
use ozone_abi::object::{CNODE_SLOT_BITS, ENDPOINT_BITS, TCB_BITS};

use super::cnode::{self, CNodeInvocation, CNodePlan};
use super::cspace::{lookup_cap, lookup_slot, resolve_address_bits};
use super::cte::{Cte, SLOT_BYTES};
use super::delete::{self, Budget, Progress, coverage};
use super::harness::{ROOT_RADIX, SLOT_IRQ, SLOT_U_DEV, SLOT_U_MAIN, SLOT_U_SMALL, World};
use super::kmem::{SlotRef, SlotSpan};
use super::mdb;
use super::untyped::{self, RETYPE_MAX_COUNT, RetypeArgs};
use super::{Cap, FrameSize, ObjectType, PagingLevel, Rights};

const D: u64 = ROOT_RADIX as u64;

struct T {
    w: World,
}

impl T {
    fn new() -> T {
        T { w: World::new() }
    }

    fn root(&self) -> Cap {
        self.w.root()
    }

    fn cap(&self, i: u64) -> Cap {
        self.w.slot(i).cap()
    }

    fn retype_into(
        &mut self,
        ut: u64,
        ty: ObjectType,
        size_bits: u64,
        dest: Cap,
        offset: u64,
        count: u64,
    ) -> Result<(), Error> {
        let args =
            RetypeArgs { object_type: ty as u64, size_bits, node_index: 0, node_depth: 0, node_offset: offset, count };
        let plan = untyped::decode_retype(self.w.slot(ut), &args, &dest)?;
        while untyped::perform_retype(plan.clone(), &mut Budget::new(50)) == Progress::Preempted {}
        Ok(())
    }

    fn retype(&mut self, ut: u64, ty: ObjectType, size_bits: u64, offset: u64, count: u64) -> Result<(), Error> {
        let root = self.root();
        self.retype_into(ut, ty, size_bits, root, offset, count)
    }

    fn decode(&self, inv: CNodeInvocation) -> Result<CNodePlan, Error> {
        cnode::decode(&self.root(), &inv)
    }

    fn run(&mut self, inv: CNodeInvocation) -> Result<(), Error> {
        let plan = self.decode(inv)?;
        while cnode::perform(plan.clone(), &mut self.w.hooks, &mut Budget::new(4)) == Progress::Preempted {}
        Ok(())
    }

    fn copy(&mut self, dest: u64, src: u64, rights: Rights) -> Result<(), Error> {
        let root = self.root();
        self.run(CNodeInvocation::Copy {
            dest_index: dest,
            dest_depth: D,
            src_root: root,
            src_index: src,
            src_depth: D,
            rights: rights.bits(),
        })
    }

    fn mint(&mut self, dest: u64, src: u64, rights: Rights, data: u64) -> Result<(), Error> {
        let root = self.root();
        self.run(CNodeInvocation::Mint {
            dest_index: dest,
            dest_depth: D,
            src_root: root,
            src_index: src,
            src_depth: D,
            rights: rights.bits(),
            data,
        })
    }

    fn mv(&mut self, dest: u64, src: u64) -> Result<(), Error> {
        let root = self.root();
        self.run(CNodeInvocation::Move {
            dest_index: dest,
            dest_depth: D,
            src_root: root,
            src_index: src,
            src_depth: D,
        })
    }

    fn mutate(&mut self, dest: u64, src: u64, data: u64) -> Result<(), Error> {
        let root = self.root();
        self.run(CNodeInvocation::Mutate {
            dest_index: dest,
            dest_depth: D,
            src_root: root,
            src_index: src,
            src_depth: D,
            data,
        })
    }

    fn delete(&mut self, i: u64) -> Result<(), Error> {
        self.run(CNodeInvocation::Delete { index: i, depth: D })
    }

    fn revoke(&mut self, i: u64) -> Result<(), Error> {
        self.run(CNodeInvocation::Revoke { index: i, depth: D })
    }

    fn finalised_last(&self) -> usize {
        self.w.hooks.finalised.iter().filter(|e| e.1).count()
    }

    fn check(&self) {
        self.w.check_invariants(true).expect("invariants");
    }
}

fn cnode_slot(cap: &Cap, i: u64) -> SlotRef {
    SlotSpan::of_cnode(cap).and_then(|s| s.slot(i)).expect("CNode slot")
}

// ---------------------------------------------------------------------------------------------
// Slots.

#[test]
fn zero_bytes_are_an_empty_slot() {
    let zero = [0u8; 64];
    // SAFETY: the compile-time check in `kmem` establishes that zero bytes are a valid `Cte`.
    let cte: Cte = unsafe { core::mem::transmute(zero) };
    assert_eq!(cte, Cte::NULL);
    assert_eq!(size_of::<Cte>() as u64, SLOT_BYTES);
}

// ---------------------------------------------------------------------------------------------
// Lookup.

#[test]
fn lookup_single_level_and_depth_errors() {
    let t = T::new();
    let root = t.root();
    assert_eq!(lookup_slot(&root, SLOT_U_MAIN, D).unwrap(), t.w.slot(SLOT_U_MAIN));
    // Only the low `depth` bits count.
    assert_eq!(lookup_slot(&root, 0xff00 | SLOT_U_MAIN, D).unwrap(), t.w.slot(SLOT_U_MAIN));
    assert_eq!(lookup_slot(&root, 1, 0), Err(Error::RangeError));
    assert_eq!(lookup_slot(&root, 1, 65), Err(Error::RangeError));
    assert_eq!(lookup_slot(&root, 1, u64::MAX), Err(Error::RangeError));
    // Too few bits for the root's radix; too many with an untyped (not a CNode) at the slot.
    assert_eq!(lookup_slot(&root, 1, D - 1), Err(Error::FailedLookup));
    assert_eq!(lookup_slot(&root, SLOT_U_MAIN << 3, D + 3), Err(Error::FailedLookup));
    // Not a CNode root.
    assert_eq!(lookup_slot(&t.cap(SLOT_U_MAIN), 0, 6), Err(Error::FailedLookup));
    assert_eq!(lookup_slot(&Cap::Null, 0, 6), Err(Error::FailedLookup));
    assert_eq!(resolve_address_bits(&root, 0, 65), Err(Error::RangeError));
}

#[test]
fn lookup_cap_stops_at_the_first_non_cnode_and_rejects_empty_slots() {
    let t = T::new();
    let root = t.root();
    let top = |i: u64| i << (64 - D);
    let (slot, cap) = lookup_cap(&root, top(SLOT_U_MAIN) | 0x1234).unwrap();
    assert_eq!(slot, t.w.slot(SLOT_U_MAIN));
    assert!(matches!(cap, Cap::Untyped { .. }));
    assert_eq!(lookup_cap(&root, top(40)), Err(Error::InvalidCapability));
    let r = resolve_address_bits(&root, top(SLOT_U_MAIN), 64).unwrap();
    assert_eq!(r.bits_remaining, 64 - ROOT_RADIX);
}

#[test]
fn multi_level_lookup_with_guards() {
    let mut t = T::new();
    // Two CNodes: C1 (radix 2) in slot 10, C2 (radix 3) in slot 11.
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 2, 10, 1).unwrap();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 3, 11, 1).unwrap();
    // Slot 12: C1 with a 2-bit guard 0b10; then put C2 (with a 1-bit guard 1) into C1's slot 3.
    t.mint(12, 10, Rights::ALL, (0b10 << 6) | 2).unwrap();
    let c1 = t.cap(12);
    assert!(matches!(c1, Cap::CNode { radix: 2, guard_size: 2, guard: 0b10, .. }));
    let root = t.root();
    let inv = CNodeInvocation::Mint {
        dest_index: (12 << 4) | (0b10 << 2) | 3,
        dest_depth: D + 4,
        src_root: root,
        src_index: 11,
        src_depth: D,
        rights: Rights::ALL.bits(),
        data: (1 << 6) | 1,
    };
    t.run(inv).unwrap();
    let c2 = cnode_slot(&c1, 3).cap();
    assert!(matches!(c2, Cap::CNode { radix: 3, guard_size: 1, guard: 1, .. }));
    // root(6) -> C1: guard 10, index 11 (3) -> C2: guard 1, index 101 (5). 6 + 4 + 4 = 14 bits.
    let cptr = (12 << 8) | (0b10 << 6) | (0b11 << 4) | (1 << 3) | 0b101;
    assert_eq!(lookup_slot(&root, cptr, 14).unwrap(), cnode_slot(&c2, 5));
    // Stopping after C1 names C1's slot 3 (holding C2).
    assert_eq!(lookup_slot(&root, cptr >> 4, 10).unwrap(), cnode_slot(&c1, 3));
    // A wrong guard at either level, or running out of bits inside a level, fails.
    assert_eq!(lookup_slot(&root, cptr ^ (1 << 7), 14), Err(Error::FailedLookup));
    assert_eq!(lookup_slot(&root, cptr ^ (1 << 3), 14), Err(Error::FailedLookup));
    assert_eq!(lookup_slot(&root, cptr >> 1, 13), Err(Error::FailedLookup));
    assert_eq!(lookup_slot(&root, cptr >> 5, 9), Err(Error::FailedLookup));
    // Bits left over after an empty slot.
    assert_eq!(lookup_slot(&root, (cptr << 2) | 1, 16), Err(Error::FailedLookup));
    // For invocations, a 64-bit cptr with the same prefix finds the same slot when the slot
    // holds a non-CNode capability.
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 20, 1).unwrap();
    let inv = CNodeInvocation::Move { dest_index: cptr, dest_depth: 14, src_root: root, src_index: 20, src_depth: D };
    t.run(inv).unwrap();
    let (s, c) = lookup_cap(&root, (cptr << 50) | 0x3_ffff_ffff).unwrap();
    assert_eq!(s, cnode_slot(&c2, 5));
    assert!(matches!(c, Cap::Endpoint { .. }));
    t.check();
}

#[test]
fn a_guard_can_use_up_all_64_bits() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 4, 10, 1).unwrap();
    // Guard of 60 bits can only take the 58 bits Mint's data has room for; use 58 + radix 4 = 62,
    // then look up with depth 62.
    let guard = (1u64 << 58) - 3;
    t.mint(11, 10, Rights::ALL, (guard << 6) | 58).unwrap();
    let c = t.cap(11);
    assert!(matches!(c, Cap::CNode { guard_size: 58, .. }));
    let slot = lookup_slot(&c, (guard << 4) | 7, 62).unwrap();
    assert_eq!(slot, cnode_slot(&c, 7));
    assert_eq!(lookup_slot(&c, (guard << 4) | 7, 64), Err(Error::FailedLookup));
    // guard_size + radix > 64 is refused.
    assert_eq!(t.mint(12, 10, Rights::ALL, 61), Err(Error::IllegalOperation));
}

// ---------------------------------------------------------------------------------------------
// Retype.

#[test]
fn retype_places_zeroed_objects_at_the_aligned_watermark() {
    let mut t = T::new();
    let Cap::Untyped { ptr, .. } = t.cap(SLOT_U_MAIN) else { panic!() };
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 10, 3).unwrap();
    for i in 0..3 {
        assert_eq!(t.cap(10 + i), Cap::Endpoint { ptr: ptr + (i << ENDPOINT_BITS), badge: 0, rights: Rights::ALL });
        assert!(mdb::is_mdb_parent_of(t.w.slot(SLOT_U_MAIN), t.w.slot(10 + i)));
    }
    // A TCB next: aligned up to 2 KiB.
    t.retype(SLOT_U_MAIN, ObjectType::Tcb, 0, 13, 1).unwrap();
    assert_eq!(t.cap(13), Cap::Tcb { ptr: ptr + (1 << TCB_BITS) });
    assert!(matches!(t.cap(SLOT_U_MAIN), Cap::Untyped { free_index, .. } if free_index == 2 << TCB_BITS));
    // A CNode is a run of empty slots although the memory was garbage before the first retype.
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 5, 14, 1).unwrap();
    let c = t.cap(14);
    let span = SlotSpan::of_cnode(&c).unwrap();
    assert_eq!(span.count(), 32);
    assert!((0..32).all(|i| span.slot(i).unwrap().read() == Cte::NULL));
    assert_eq!(span.base() % (1 << (5 + CNODE_SLOT_BITS)), 0);
    t.check();
}

#[test]
fn retype_makes_every_object_type() {
    let mut t = T::new();
    let types = [
        (ObjectType::Untyped, 12),
        (ObjectType::Tcb, 0),
        (ObjectType::Endpoint, 0),
        (ObjectType::Notification, 0),
        (ObjectType::CNode, 1),
        (ObjectType::Frame4K, 0),
        (ObjectType::PageTable, 0),
        (ObjectType::PageDirectory, 0),
        (ObjectType::Pdpt, 0),
        (ObjectType::Pml4, 0),
    ];
    for (i, &(ty, bits)) in types.iter().enumerate() {
        t.retype(SLOT_U_SMALL, ty, bits, 10 + i as u64, 1).unwrap();
    }
    assert!(matches!(t.cap(10), Cap::Untyped { size_bits: 12, free_index: 0, device: false, .. }));
    assert!(matches!(t.cap(13), Cap::Notification { badge: 0, .. }));
    assert!(matches!(t.cap(15), Cap::Frame { size: FrameSize::Small, mapped: None, device: false, .. }));
    assert!(matches!(t.cap(19), Cap::Paging { level: PagingLevel::Pml4, mapped: None, .. }));
    // A 2 MiB frame needs a 2 MiB aligned, free 2 MiB.
    t.retype(SLOT_U_MAIN, ObjectType::Frame2M, 0, 30, 1).unwrap();
    let Cap::Frame { ptr, size: FrameSize::Large, .. } = t.cap(30) else { panic!() };
    assert_eq!(ptr % (1 << 21), 0);
    assert_eq!(t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 31, 1), Err(Error::NotEnoughMemory));
    t.check();
}

#[test]
fn retype_errors() {
    let mut t = T::new();
    let root = t.root();
    let args = |ty: u64, size_bits: u64, offset: u64, count: u64| RetypeArgs {
        object_type: ty,
        size_bits,
        node_index: 0,
        node_depth: 0,
        node_offset: offset,
        count,
    };
    let decode = |t: &T, ut: u64, a: RetypeArgs| untyped::decode_retype(t.w.slot(ut), &a, &root).map(|_| ());
    let ep = ObjectType::Endpoint as u64;
    let cn = ObjectType::CNode as u64;
    let ut = ObjectType::Untyped as u64;
    assert_eq!(decode(&t, SLOT_IRQ, args(ep, 0, 10, 1)), Err(Error::InvalidCapability));
    assert_eq!(decode(&t, 40, args(ep, 0, 10, 1)), Err(Error::InvalidCapability));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(11, 0, 10, 1)), Err(Error::InvalidArgument));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(u64::MAX, 0, 10, 1)), Err(Error::InvalidArgument));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ep, 64, 10, 1)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ut, 48, 10, 1)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(cn, 42, 10, 1)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(cn, 0, 10, 1)), Err(Error::InvalidArgument));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(cn, 25, 10, 1)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ut, 3, 10, 1)), Err(Error::InvalidArgument));
    // Destination.
    let bad_node = RetypeArgs { node_index: SLOT_U_MAIN, node_depth: D, ..args(ep, 0, 0, 1) };
    assert_eq!(decode(&t, SLOT_U_MAIN, bad_node), Err(Error::FailedLookup));
    let bad_depth = RetypeArgs { node_index: 0, node_depth: 99, ..args(ep, 0, 0, 1) };
    assert_eq!(decode(&t, SLOT_U_MAIN, bad_depth), Err(Error::RangeError));
    let not_cnode = untyped::decode_retype(t.w.slot(SLOT_U_MAIN), &args(ep, 0, 0, 1), &t.cap(SLOT_IRQ));
    assert_eq!(not_cnode.map(|_| ()), Err(Error::FailedLookup));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ep, 0, 64, 1)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ep, 0, 10, 0)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ep, 0, 0, RETYPE_MAX_COUNT + 1)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ep, 0, 60, 5)), Err(Error::RangeError));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ep, 0, 0, 3)), Err(Error::DeleteFirst));
    assert_eq!(decode(&t, SLOT_U_MAIN, args(ObjectType::Frame2M as u64, 0, 10, 2)), Err(Error::NotEnoughMemory));
    assert_eq!(decode(&t, SLOT_U_SMALL, args(ObjectType::Frame2M as u64, 0, 10, 1)), Err(Error::NotEnoughMemory));
    assert_eq!(decode(&t, SLOT_U_DEV, args(ObjectType::Tcb as u64, 0, 10, 1)), Err(Error::InvalidArgument));
    assert_eq!(decode(&t, SLOT_U_DEV, args(cn, 2, 10, 1)), Err(Error::InvalidArgument));
    // The largest fan-out works, into a CNode big enough.
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 8, 10, 1).unwrap();
    let big = t.cap(10);
    t.retype_into(SLOT_U_MAIN, ObjectType::Endpoint, 0, big, 0, RETYPE_MAX_COUNT).unwrap();
    assert!((0..256).all(|i| matches!(cnode_slot(&big, i).cap(), Cap::Endpoint { .. })));
    t.check();
}

#[test]
fn device_memory_makes_frames_and_untyped_without_zeroing() {
    let mut t = T::new();
    t.retype(SLOT_U_DEV, ObjectType::Frame4K, 0, 10, 1).unwrap();
    let Cap::Frame { ptr, device: true, .. } = t.cap(10) else { panic!("{:?}", t.cap(10)) };
    // Still the garbage pattern the test memory was filled with.
    let Cap::Untyped { ptr: base, .. } = t.cap(SLOT_U_DEV) else { panic!() };
    assert_eq!(ptr, base);
    assert!(!super::kmem::is_zero(ptr, 4096));
    t.retype(SLOT_U_DEV, ObjectType::Untyped, 16, 11, 1).unwrap();
    assert!(matches!(t.cap(11), Cap::Untyped { device: true, size_bits: 16, .. }));
    t.check();
}

#[test]
fn untyped_memory_is_reused_after_its_children_are_gone() {
    let mut t = T::new();
    t.retype(SLOT_U_SMALL, ObjectType::Tcb, 0, 10, 2).unwrap();
    let Cap::Tcb { ptr: first } = t.cap(10) else { panic!() };
    // Reset refuses while children exist.
    assert_eq!(untyped::decode_reset(t.w.slot(SLOT_U_SMALL)).map(|_| ()), Err(Error::DeleteFirst));
    // Dirty the TCB's memory (as a thread would).
    for i in 0..16 {
        t.w.hooks.finalised.clear();
        let _ = i;
    }
    t.delete(10).unwrap();
    t.delete(11).unwrap();
    // No children: the next retype starts again at the bottom, zeroed.
    t.retype(SLOT_U_SMALL, ObjectType::CNode, 4, 12, 1).unwrap();
    let c = t.cap(12);
    assert_eq!(SlotSpan::of_cnode(&c).unwrap().base(), first);
    assert!(matches!(t.cap(SLOT_U_SMALL), Cap::Untyped { free_index: 1024, .. }));
    t.check();
}

/// Fill `len` bytes at `addr` with `byte`, as a program writing into its objects would.
fn scribble(addr: u64, len: u64, byte: u8) {
    let p = core::ptr::with_exposed_provenance_mut::<u8>(usize::try_from(addr).unwrap());
    // SAFETY: test-only; callers pass ranges inside the world's memory arena, which lives as long
    // as the world and which nothing borrows while the test runs.
    unsafe { core::ptr::write_bytes(p, byte, usize::try_from(len).unwrap()) }
}

/// The indices of the untyped capability in slot `i`: (free_index, dirty_from, dirty_top).
fn indices(t: &T, i: u64) -> (u64, u64, u64) {
    let Cap::Untyped { free_index, dirty_from, dirty_top, .. } = t.cap(i) else { panic!("{:?}", t.cap(i)) };
    (free_index, dirty_from, dirty_top)
}

#[test]
fn retype_zeroes_only_what_it_hands_out() {
    let mut t = T::new();
    let Cap::Untyped { ptr, size_bits, .. } = t.cap(SLOT_U_SMALL) else { panic!() };
    let size = 1u64 << size_bits;
    // Boot state: watermark 0, all of it dirty (the test memory holds a garbage pattern).
    assert_eq!(indices(&t, SLOT_U_SMALL), (0, 0, size));
    t.retype(SLOT_U_SMALL, ObjectType::Frame4K, 0, 10, 2).unwrap();
    assert!(super::kmem::is_zero(ptr, 8192));
    assert_eq!(indices(&t, SLOT_U_SMALL), (8192, 8192, size));
    // The rest was not touched.
    assert!(!super::kmem::is_zero(ptr + 8192, 16));
    assert!(!super::kmem::is_zero(ptr + size - 16, 16));
    t.check();
}

#[test]
fn retype_after_a_reset_over_dirty_memory_gives_zeroed_objects() {
    let mut t = T::new();
    let Cap::Untyped { ptr, size_bits, .. } = t.cap(SLOT_U_SMALL) else { panic!() };
    let size = 1u64 << size_bits;
    t.retype(SLOT_U_SMALL, ObjectType::Frame4K, 0, 10, 4).unwrap();
    t.retype(SLOT_U_SMALL, ObjectType::CNode, 4, 14, 1).unwrap();
    assert!(super::kmem::is_zero(ptr, 4 * 4096 + 1024));
    // The frames are written to (as an agent would), then everything goes.
    scribble(ptr, 4 * 4096, 0x5a);
    for i in 10..15 {
        t.delete(i).unwrap();
    }
    // Reset only lowers the watermark: the memory keeps what was written.
    let plan = untyped::decode_reset(t.w.slot(SLOT_U_SMALL)).unwrap();
    assert_eq!(untyped::perform_reset(plan, &mut Budget::new(1)), Progress::Done);
    assert_eq!(indices(&t, SLOT_U_SMALL), (0, 0, size));
    assert!(!super::kmem::is_zero(ptr, 4096));
    t.check();
    // New objects over the old frames are zero: a CNode of empty slots, a page table, a frame.
    t.retype(SLOT_U_SMALL, ObjectType::CNode, 6, 10, 1).unwrap();
    let c = t.cap(10);
    let span = SlotSpan::of_cnode(&c).unwrap();
    assert_eq!(span.base(), ptr);
    assert!((0..64).all(|i| span.slot(i).unwrap().read() == Cte::NULL));
    t.retype(SLOT_U_SMALL, ObjectType::PageTable, 0, 11, 1).unwrap();
    t.retype(SLOT_U_SMALL, ObjectType::Frame4K, 0, 12, 1).unwrap();
    assert!(super::kmem::is_zero(ptr + 4096, 2 * 4096));
    assert_eq!(indices(&t, SLOT_U_SMALL), (3 * 4096, 3 * 4096, size));
    // What was not handed out is still dirty.
    assert!(!super::kmem::is_zero(ptr + 3 * 4096, 16));
    t.check();
}

#[test]
fn a_child_untyped_inherits_dirtiness_and_gives_zeroed_grandchildren() {
    let mut t = T::new();
    let Cap::Untyped { ptr, .. } = t.cap(SLOT_U_MAIN) else { panic!() };
    // A frame first (zeroed), then a 64 KiB untyped: not zeroed, all of it dirty.
    t.retype(SLOT_U_MAIN, ObjectType::Frame4K, 0, 10, 1).unwrap();
    t.retype(SLOT_U_MAIN, ObjectType::Untyped, 16, 11, 1).unwrap();
    let Cap::Untyped { ptr: child, .. } = t.cap(11) else { panic!() };
    assert_eq!(child, ptr + 65536);
    assert_eq!(indices(&t, 11), (0, 0, 65536));
    assert!(!super::kmem::is_zero(child, 16));
    t.check();
    // Grandchildren: zeroed objects, and a grandchild untyped inherits its part of the range.
    t.retype(11, ObjectType::Tcb, 0, 12, 1).unwrap();
    assert!(super::kmem::is_zero(child, 1 << TCB_BITS));
    t.retype(11, ObjectType::CNode, 3, 13, 1).unwrap();
    let c = t.cap(13);
    assert!((0..8).all(|i| cnode_slot(&c, i).read() == Cte::NULL));
    t.retype(11, ObjectType::Untyped, 12, 14, 2).unwrap();
    assert_eq!(indices(&t, 14), (0, 0, 4096));
    t.retype(14, ObjectType::Frame4K, 0, 16, 1).unwrap();
    let Cap::Frame { ptr: f, .. } = t.cap(16) else { panic!() };
    assert!(super::kmem::is_zero(f, 4096));
    t.check();

    // A child untyped over memory that is already zero is clean: an abandoned Retype zeroed the
    // first 16 KiB of the small untyped.
    let Cap::Untyped { ptr: small, .. } = t.cap(SLOT_U_SMALL) else { panic!() };
    let args = RetypeArgs {
        object_type: ObjectType::CNode as u64,
        size_bits: 10,
        node_index: 0,
        node_depth: 0,
        node_offset: 20,
        count: 1,
    };
    let plan = untyped::decode_retype(t.w.slot(SLOT_U_SMALL), &args, &t.root()).unwrap();
    assert_eq!(untyped::perform_retype(plan, &mut Budget::new(4)), Progress::Preempted);
    assert_eq!(indices(&t, SLOT_U_SMALL).1, 4 * 4096);
    assert!(t.w.slot(20).is_empty());
    t.check();
    t.retype(SLOT_U_SMALL, ObjectType::Untyped, 13, 20, 3).unwrap();
    assert_eq!(indices(&t, 20), (0, 0, 0));
    assert_eq!(indices(&t, 21), (0, 0, 0));
    assert_eq!(indices(&t, 22), (0, 0, 8192));
    assert!(super::kmem::is_zero(small, 4 * 4096));
    assert!(!super::kmem::is_zero(small + 4 * 4096, 16));
    t.check();
}

#[test]
fn a_preempted_retype_restarts_where_it_stopped_and_makes_its_caps_once() {
    let mut t = T::new();
    let Cap::Untyped { ptr, size_bits, .. } = t.cap(SLOT_U_MAIN) else { panic!() };
    let size = 1u64 << size_bits;
    // A 256 KiB CNode over dirty memory, 4 chunks (16 KiB) per call, decoded afresh each time
    // (as the kernel restarts a preempted system call).
    let bytes = 1u64 << (12 + CNODE_SLOT_BITS);
    let args = RetypeArgs {
        object_type: ObjectType::CNode as u64,
        size_bits: 12,
        node_index: 0,
        node_depth: 0,
        node_offset: 10,
        count: 1,
    };
    let mut calls = 0;
    loop {
        calls += 1;
        let plan = untyped::decode_retype(t.w.slot(SLOT_U_MAIN), &args, &t.root()).unwrap();
        let p = untyped::perform_retype(plan, &mut Budget::new(4));
        if p == Progress::Done {
            break;
        }
        // Nothing handed out yet: no capability, no child, the watermark where it was; the
        // zeroed part is recorded.
        assert!(t.w.slot(10).is_empty());
        assert!(!mdb::has_children(t.w.slot(SLOT_U_MAIN)));
        assert_eq!(indices(&t, SLOT_U_MAIN), (0, calls * 4 * 4096, size));
        assert!(super::kmem::is_zero(ptr, calls * 4 * 4096));
        assert!(!super::kmem::is_zero(ptr + calls * 4 * 4096, 16));
        t.check();
    }
    assert_eq!(calls, bytes / (4 << untyped::RETYPE_CHUNK_BITS));
    let c = t.cap(10);
    assert_eq!(SlotSpan::of_cnode(&c).unwrap().base(), ptr);
    assert!((0..4096).all(|i| cnode_slot(&c, i).read() == Cte::NULL));
    assert!(t.w.slot(11).is_empty());
    assert_eq!(indices(&t, SLOT_U_MAIN), (bytes, bytes, size));
    // Exactly one child.
    t.delete(10).unwrap();
    assert!(!mdb::has_children(t.w.slot(SLOT_U_MAIN)));
    t.check();
}

#[test]
fn device_memory_is_never_zeroed_nor_tracked() {
    let mut t = T::new();
    let Cap::Untyped { ptr, .. } = t.cap(SLOT_U_DEV) else { panic!() };
    assert_eq!(indices(&t, SLOT_U_DEV), (0, 0, 0));
    t.retype(SLOT_U_DEV, ObjectType::Frame4K, 0, 10, 2).unwrap();
    t.retype(SLOT_U_DEV, ObjectType::Untyped, 12, 12, 1).unwrap();
    assert_eq!(indices(&t, SLOT_U_DEV), (3 * 4096, 0, 0));
    assert_eq!(indices(&t, 12), (0, 0, 0));
    t.retype(12, ObjectType::Frame4K, 0, 13, 1).unwrap();
    for i in [13, 12, 11, 10] {
        t.delete(i).unwrap();
    }
    let plan = untyped::decode_reset(t.w.slot(SLOT_U_DEV)).unwrap();
    assert_eq!(untyped::perform_reset(plan, &mut Budget::new(1)), Progress::Done);
    assert_eq!(indices(&t, SLOT_U_DEV), (0, 0, 0));
    t.retype(SLOT_U_DEV, ObjectType::Frame4K, 0, 10, 16).unwrap();
    // Still the garbage pattern the test memory was filled with, every page of it.
    assert!((0..16).all(|i| !super::kmem::is_zero(ptr + i * 4096, 8)));
    t.check();
}

// ---------------------------------------------------------------------------------------------
// Derivation, rights and badges.

#[test]
fn copies_are_children_of_originals_and_siblings_of_copies() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 10, 1).unwrap();
    t.copy(11, 10, Rights::ALL).unwrap();
    t.copy(12, 11, Rights::ALL).unwrap();
    let s = |i| t.w.slot(i);
    assert!(mdb::is_mdb_parent_of(s(10), s(11)));
    assert!(!mdb::is_mdb_parent_of(s(11), s(12)));
    assert!(!mdb::has_children(s(11)));
    // Revoking a copy deletes nothing; revoking the original deletes both copies.
    t.revoke(11).unwrap();
    assert!(!t.w.slot(12).is_empty());
    t.revoke(10).unwrap();
    assert!(t.w.slot(11).is_empty() && t.w.slot(12).is_empty());
    assert!(!t.w.slot(10).is_empty());
    // The copies were not the last capabilities to the endpoint.
    assert_eq!(t.finalised_last(), 0);
    t.check();
}

#[test]
fn rights_only_narrow() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 10, 1).unwrap();
    t.copy(11, 10, Rights::READ.union(Rights::GRANT)).unwrap();
    assert!(matches!(t.cap(11), Cap::Endpoint { rights, .. } if rights == Rights::READ.union(Rights::GRANT)));
    t.copy(12, 11, Rights::ALL).unwrap();
    assert!(matches!(t.cap(12), Cap::Endpoint { rights, .. } if rights == Rights::READ.union(Rights::GRANT)));
    t.mint(13, 11, Rights::WRITE, 5).unwrap();
    assert!(matches!(t.cap(13), Cap::Endpoint { rights: Rights::NONE, badge: 5, .. }));
    // Unknown rights bits are ignored, not granted.
    t.copy(14, 12, u64::MAX.into_rights()).unwrap();
    assert!(matches!(t.cap(14), Cap::Endpoint { rights, .. } if rights == Rights::READ.union(Rights::GRANT)));
    // Move and Mutate keep the rights.
    t.mv(15, 14).unwrap();
    assert!(matches!(t.cap(15), Cap::Endpoint { rights, .. } if rights == Rights::READ.union(Rights::GRANT)));
    t.check();
}

trait IntoRights {
    fn into_rights(self) -> Rights;
}
impl IntoRights for u64 {
    fn into_rights(self) -> Rights {
        Rights::from_bits(self)
    }
}

#[test]
fn badges_are_set_once_and_badged_caps_own_their_copies() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 10, 1).unwrap();
    t.mint(11, 10, Rights::ALL, 7).unwrap(); // B7
    t.copy(12, 11, Rights::ALL).unwrap(); // copy of B7
    t.mint(13, 10, Rights::ALL, 7).unwrap(); // another B7, minted separately
    t.copy(14, 13, Rights::ALL).unwrap();
    t.mint(15, 10, Rights::ALL, 9).unwrap(); // B9
    // A badge cannot be changed, not even to itself, by Mint or Mutate.
    assert_eq!(t.mint(16, 11, Rights::ALL, 8), Err(Error::IllegalOperation));
    assert_eq!(t.mint(16, 11, Rights::ALL, 7), Err(Error::IllegalOperation));
    assert_eq!(t.mint(16, 11, Rights::ALL, 0), Err(Error::IllegalOperation));
    assert_eq!(t.mutate(16, 10, 3), Err(Error::IllegalOperation));
    // Mint with badge 0 of an unbadged capability is a plain copy.
    t.mint(16, 10, Rights::ALL, 0).unwrap();
    assert!(matches!(t.cap(16), Cap::Endpoint { badge: 0, .. }));
    let s = |i| t.w.slot(i);
    assert!(mdb::is_mdb_parent_of(s(10), s(11)) && mdb::is_mdb_parent_of(s(11), s(12)));
    // Revoking one B7 leaves the other B7 run and B9 alone.
    t.revoke(11).unwrap();
    assert!(t.w.slot(12).is_empty());
    assert!(!t.w.slot(14).is_empty() && !t.w.slot(15).is_empty());
    t.revoke(13).unwrap();
    assert!(t.w.slot(14).is_empty());
    // Deleting a badged original hands its copies to the unbadged original.
    t.copy(17, 15, Rights::ALL).unwrap();
    t.delete(15).unwrap();
    assert!(mdb::is_mdb_parent_of(t.w.slot(10), t.w.slot(17)));
    t.revoke(10).unwrap();
    assert!((11..=17).all(|i| t.w.slot(i).is_empty()));
    t.check();
}

#[test]
fn cancel_badged_sends_needs_full_rights() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 10, 1).unwrap();
    t.mint(11, 10, Rights::ALL, 3).unwrap();
    t.mint(12, 10, Rights::READ, 4).unwrap();
    t.run(CNodeInvocation::CancelBadgedSends { index: 11, depth: D }).unwrap();
    t.run(CNodeInvocation::CancelBadgedSends { index: 10, depth: D }).unwrap();
    assert_eq!(t.run(CNodeInvocation::CancelBadgedSends { index: 12, depth: D }), Err(Error::IllegalOperation));
    assert_eq!(
        t.run(CNodeInvocation::CancelBadgedSends { index: SLOT_U_MAIN, depth: D }),
        Err(Error::IllegalOperation)
    );
    let Cap::Endpoint { ptr, .. } = t.cap(10) else { panic!() };
    assert_eq!(t.w.hooks.cancelled, [(ptr, 3)]);
}

#[test]
fn what_cannot_be_copied() {
    let mut t = T::new();
    assert_eq!(t.copy(10, SLOT_IRQ, Rights::ALL), Err(Error::IllegalOperation));
    // An empty source is a failed lookup; an occupied destination needs deleting first.
    assert_eq!(t.copy(10, 40, Rights::ALL), Err(Error::FailedLookup));
    assert_eq!(t.copy(SLOT_U_DEV, SLOT_U_MAIN, Rights::ALL), Err(Error::DeleteFirst));
    // Unmapped paging structures cannot be copied, frames lose their mapping.
    t.retype(SLOT_U_MAIN, ObjectType::PageTable, 0, 10, 1).unwrap();
    assert_eq!(t.copy(11, 10, Rights::ALL), Err(Error::IllegalOperation));
    t.retype(SLOT_U_MAIN, ObjectType::Frame4K, 0, 12, 1).unwrap();
    let Cap::Frame { ptr, .. } = t.cap(12) else { panic!() };
    let mapped = Cap::Frame {
        ptr,
        size: FrameSize::Small,
        rights: Rights::ALL,
        device: false,
        mapped: Some(super::Mapping { asid: super::Asid::from_raw(0x1001), vaddr: 0x4000 }),
    };
    t.w.slot(12).set_cap(mapped);
    t.copy(13, 12, Rights::READ).unwrap();
    assert_eq!(
        t.cap(13),
        Cap::Frame { ptr, size: FrameSize::Small, rights: Rights::READ, device: false, mapped: None }
    );
    // Reply capabilities cannot be copied.
    let reply = Cap::Reply { tcb: 0, can_grant: true };
    assert_eq!(cnode::derive_cap(t.w.slot(13), &reply), Err(Error::IllegalOperation));
    assert_eq!(cnode::mask_cap_rights(Rights::READ, &reply), Cap::Reply { tcb: 0, can_grant: false });
}

#[test]
fn untyped_copies() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::Untyped, 16, 10, 1).unwrap();
    // A copy of an untyped makes the original full: objects are made through one or the other.
    t.copy(11, 10, Rights::ALL).unwrap();
    assert!(matches!(t.cap(10), Cap::Untyped { free_index: 65536, .. }));
    assert!(mdb::is_mdb_parent_of(t.w.slot(10), t.w.slot(11)));
    assert_eq!(t.retype(10, ObjectType::Endpoint, 0, 12, 1), Err(Error::NotEnoughMemory));
    t.retype(11, ObjectType::Endpoint, 0, 12, 1).unwrap();
    // An untyped with children cannot be copied.
    assert_eq!(t.copy(13, 11, Rights::ALL), Err(Error::DeleteFirst));
    assert_eq!(t.copy(13, 10, Rights::ALL), Err(Error::DeleteFirst));
    t.revoke(10).unwrap();
    assert!(t.w.slot(11).is_empty() && t.w.slot(12).is_empty());
    t.retype(10, ObjectType::Endpoint, 0, 12, 1).unwrap();
    t.check();
}

#[test]
fn move_and_mutate_keep_the_derivation_position() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 2, 10, 1).unwrap();
    t.copy(11, 10, Rights::ALL).unwrap();
    t.mv(20, 11).unwrap();
    t.mutate(21, 20, (1 << 6) | 1).unwrap();
    assert!(t.w.slot(11).is_empty() && t.w.slot(20).is_empty());
    assert!(matches!(t.cap(21), Cap::CNode { guard_size: 1, guard: 1, .. }));
    assert!(mdb::is_mdb_parent_of(t.w.slot(10), t.w.slot(21)));
    // Moving the original keeps its children.
    t.mv(22, 10).unwrap();
    t.revoke(22).unwrap();
    assert!(t.w.slot(21).is_empty());
    // Moving onto an occupied slot, or from an empty one.
    assert_eq!(t.mv(SLOT_U_MAIN, 22), Err(Error::DeleteFirst));
    assert_eq!(t.mv(30, 31), Err(Error::FailedLookup));
    t.check();
}

// ---------------------------------------------------------------------------------------------
// Delete, finalisation, revoke.

#[test]
fn deleting_the_last_capability_finalises_once() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::Notification, 0, 10, 1).unwrap();
    t.copy(11, 10, Rights::ALL).unwrap();
    t.delete(10).unwrap();
    assert_eq!(t.w.hooks.finalised, [(t.cap(11), false)]);
    let last = t.cap(11);
    t.delete(11).unwrap();
    assert_eq!(t.w.hooks.finalised[1], (last, true));
    // Deleting an empty slot does nothing.
    t.delete(11).unwrap();
    assert_eq!(t.w.hooks.finalised.len(), 2);
}

#[test]
fn deleting_a_cnode_deletes_what_it_holds() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 3, 10, 1).unwrap();
    let c = t.cap(10);
    t.retype_into(SLOT_U_MAIN, ObjectType::Endpoint, 0, c, 0, 8).unwrap();
    // An inner CNode that will hold the last capability to a TCB; an endpoint outside.
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 1, 11, 1).unwrap();
    t.retype(SLOT_U_MAIN, ObjectType::Endpoint, 0, 12, 1).unwrap();
    let inner = t.cap(11);
    let root = t.root();
    // Put the inner CNode into slot 7 of the outer one (replacing an endpoint).
    let plan = cnode::decode(&c, &CNodeInvocation::Delete { index: 7, depth: 3 }).unwrap();
    cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
    let plan = cnode::decode(
        &c,
        &CNodeInvocation::Move { dest_index: 7, dest_depth: 3, src_root: root, src_index: 11, src_depth: D },
    )
    .unwrap();
    cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
    t.retype_into(SLOT_U_MAIN, ObjectType::Tcb, 0, inner, 1, 1).unwrap();
    t.w.hooks.finalised.clear();
    t.delete(10).unwrap();
    // The CNode, 7 endpoints, the inner CNode, the TCB: all last capabilities.
    assert_eq!(t.finalised_last(), 10);
    assert_eq!(t.w.hooks.finalised.len(), 10);
    assert_eq!(t.w.zombies(), 0);
    t.check();
    // The endpoint in slot 12 is all that is left of the untyped's children; revoke and reset
    // reclaim everything.
    assert!(!t.w.slot(12).is_empty());
    t.revoke(SLOT_U_MAIN).unwrap();
    let plan = untyped::decode_reset(t.w.slot(SLOT_U_MAIN)).unwrap();
    assert_eq!(untyped::perform_reset(plan, &mut Budget::unlimited()), Progress::Done);
}

#[test]
fn a_cnode_holding_its_own_last_capability_is_destroyed() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 2, 10, 1).unwrap();
    let c = t.cap(10);
    let root = t.root();
    // Move the only capability into the CNode itself.
    let plan = cnode::decode(
        &c,
        &CNodeInvocation::Move { dest_index: 2, dest_depth: 2, src_root: root, src_index: 10, src_depth: D },
    )
    .unwrap();
    cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
    assert!(t.w.slot(10).is_empty());
    assert!(matches!(cnode_slot(&c, 2).cap(), Cap::CNode { .. }));
    // Unreachable now; revoking the untyped destroys it.
    t.revoke(SLOT_U_MAIN).unwrap();
    assert_eq!(t.finalised_last(), 1);
    assert!(!mdb::has_children(t.w.slot(SLOT_U_MAIN)));
    t.check();
}

/// Two CNodes, each holding the last capability to the other: a cycle.
#[test]
fn cycles_of_cnodes_are_destroyed() {
    let before = coverage::snapshot();
    for budget in [1, 2, 3, 1000] {
        let mut t = T::new();
        t.retype(SLOT_U_MAIN, ObjectType::CNode, 1, 10, 1).unwrap();
        t.retype(SLOT_U_SMALL, ObjectType::CNode, 2, 11, 1).unwrap();
        let (a, b) = (t.cap(10), t.cap(11));
        let root = t.root();
        let put = |t: &mut T, into: Cap, index: u64, depth: u64, from: u64| {
            let inv = CNodeInvocation::Move {
                dest_index: index,
                dest_depth: depth,
                src_root: root,
                src_index: from,
                src_depth: D,
            };
            let plan = cnode::decode(&into, &inv).unwrap();
            cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
        };
        // Something else in each, too.
        t.retype_into(SLOT_U_MAIN, ObjectType::Endpoint, 0, a, 0, 1).unwrap();
        t.retype_into(SLOT_U_SMALL, ObjectType::Notification, 0, b, 3, 1).unwrap();
        put(&mut t, a, 1, 1, 11); // A[1] = B
        put(&mut t, b, 0, 2, 10); // B[0] = A
        assert!(t.w.slot(10).is_empty() && t.w.slot(11).is_empty());
        // Revoking one untyped reaches the cycle through A; B (from the other untyped) goes too,
        // since only A kept it.
        let slot = t.w.slot(SLOT_U_MAIN);
        let mut calls = 0;
        while delete::revoke(slot, &mut t.w.hooks, &mut Budget::new(budget)) == Progress::Preempted {
            calls += 1;
            t.w.check_invariants(false).unwrap();
        }
        assert!(budget > 3 || calls > 0);
        assert_eq!(t.finalised_last(), 4, "A, B, the endpoint, the notification");
        let next = mdb::first_child(t.w.slot(SLOT_U_SMALL)).map(|s| s.read());
        assert!(next.is_none(), "{next:?}");
        assert_eq!(t.w.zombies(), 0);
        t.check();
    }
    let after = coverage::snapshot();
    assert!(after.1 > before.1 && after.2 > before.2, "the cycle was pinned and broken");
}

/// A thread's CSpace root holds the last capability to a CNode that holds the last capability to
/// the thread: deleting that TCB capability from inside deletes both.
#[test]
fn a_thread_deleting_its_own_tcb() {
    let mut t = T::new();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 2, 10, 1).unwrap();
    t.retype(SLOT_U_MAIN, ObjectType::Tcb, 0, 11, 1).unwrap();
    let (c, tcb) = (t.cap(10), t.cap(11));
    let tslots = t.w.hooks_span(&tcb);
    // TCB slot 0 = the CNode (moved: the only capability), CNode slot 1 = the TCB.
    mdb::cte_move(c, t.w.slot(10), tslots.slot(0).unwrap());
    let root = t.root();
    let inv = CNodeInvocation::Move { dest_index: 1, dest_depth: 2, src_root: root, src_index: 11, src_depth: D };
    let plan = cnode::decode(&c, &inv).unwrap();
    cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
    // The thread deletes CNode slot 1 through its CSpace (the CNode capability in its TCB).
    let mut calls = 0;
    // Restart as the kernel does: decode again each time.
    while let Ok(plan) = cnode::decode(&c, &CNodeInvocation::Delete { index: 1, depth: 2 }) {
        calls += 1;
        if cnode::perform(plan, &mut t.w.hooks, &mut Budget::new(1)) == Progress::Done {
            break;
        }
        t.w.check_invariants(false).unwrap();
    }
    assert!(calls > 1);
    assert_eq!(t.finalised_last(), 2);
    assert_eq!(t.w.hooks.finalised.iter().filter(|e| matches!(e.0, Cap::Tcb { .. })).count(), 1);
    assert!(!mdb::has_children(t.w.slot(SLOT_U_MAIN)));
    t.check();
}

/// A chain of CNodes, each holding the last capability to the next: deleting the first deletes
/// all, a few units at a time, and a half-deleted CNode is invisible to lookups.
#[test]
fn deep_chains_delete_preemptibly() {
    let mut t = T::new();
    const DEPTH: u64 = 60;
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 1, 10, 1).unwrap();
    let first = t.cap(10);
    let mut cur = first;
    for _ in 0..DEPTH {
        t.retype_into(SLOT_U_MAIN, ObjectType::CNode, 1, cur, 0, 1).unwrap();
        t.retype_into(SLOT_U_MAIN, ObjectType::Endpoint, 0, cur, 1, 1).unwrap();
        cur = cnode_slot(&cur, 0).cap();
    }
    t.w.hooks.finalised.clear();
    let slot = t.w.slot(10);
    let root = t.root();
    let mut calls = 0u32;
    while delete::delete(slot, &mut t.w.hooks, &mut Budget::new(5)) == Progress::Preempted {
        calls += 1;
        // Half-way: the slot holds a zombie, which looks empty to lookups and cannot be used.
        assert!(slot.is_zombie());
        assert_eq!(lookup_cap(&root, 10 << 58), Err(Error::InvalidCapability));
        assert_eq!(lookup_slot(&root, 10 << 1, 7), Err(Error::FailedLookup));
        assert_eq!(t.copy(20, 10, Rights::ALL), Err(Error::IllegalOperation));
        assert_eq!(t.mv(20, 10), Err(Error::IllegalOperation));
        assert_eq!(t.copy(10, SLOT_U_MAIN, Rights::ALL), Err(Error::DeleteFirst));
        if calls.is_multiple_of(8) {
            t.w.check_invariants(false).unwrap();
        }
    }
    assert!(calls > 40, "{calls}");
    // 1 + DEPTH CNodes and DEPTH endpoints.
    assert_eq!(t.finalised_last(), 1 + 2 * DEPTH as usize);
    assert!(!mdb::has_children(t.w.slot(SLOT_U_MAIN)));
    t.check();
}

/// Revoke of a wide tree (many children) and of a deep derivation (untyped inside untyped).
#[test]
fn revoke_wide_and_deep_trees() {
    let mut t = T::new();
    // Wide: 256 endpoints in one CNode, each copied into a second CNode.
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 8, 10, 1).unwrap();
    t.retype(SLOT_U_MAIN, ObjectType::CNode, 8, 11, 1).unwrap();
    let (a, b) = (t.cap(10), t.cap(11));
    t.retype_into(SLOT_U_MAIN, ObjectType::Endpoint, 0, a, 0, 256).unwrap();
    for i in 0..256 {
        let inv =
            CNodeInvocation::Copy { dest_index: i, dest_depth: 8, src_root: a, src_index: i, src_depth: 8, rights: 3 };
        let plan = cnode::decode(&b, &inv).unwrap();
        cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
    }
    // Deep: untyped 2^20 -> 2^19 -> ... -> 2^6, each holding the next in a CNode slot.
    t.retype(SLOT_U_MAIN, ObjectType::Untyped, 20, 12, 1).unwrap();
    let mut ut = 12;
    for (i, bits) in (6..20).rev().enumerate() {
        let dest = 13 + i as u64;
        t.retype(ut, ObjectType::Untyped, bits, dest, 1).unwrap();
        ut = dest;
    }
    t.retype(ut, ObjectType::Endpoint, 0, 40, 1).unwrap();
    t.w.hooks.finalised.clear();
    // Revoking one endpoint original removes just its copy.
    let plan = cnode::decode(&a, &CNodeInvocation::Revoke { index: 5, depth: 8 }).unwrap();
    cnode::perform(plan, &mut t.w.hooks, &mut Budget::unlimited());
    assert!(cnode_slot(&b, 5).is_empty() && !cnode_slot(&b, 6).is_empty());
    // The whole untyped, a unit at a time.
    let slot = t.w.slot(SLOT_U_MAIN);
    let mut calls = 0;
    while delete::revoke(slot, &mut t.w.hooks, &mut Budget::new(1)) == Progress::Preempted {
        calls += 1;
    }
    assert!(calls > 256 * 2);
    assert!((10..=40).all(|i| t.w.slot(i).is_empty()));
    // 2 CNodes + 256 endpoints + the deep endpoint were last capabilities (untyped never are).
    assert_eq!(t.w.hooks.finalised.iter().filter(|e| e.1 && !matches!(e.0, Cap::Untyped { .. })).count(), 259);
    assert_eq!(untyped::perform_reset(untyped::decode_reset(slot).unwrap(), &mut Budget::unlimited()), Progress::Done);
    t.check();
}

#[test]
fn a_revoke_that_destroys_its_own_slot_stops() {
    let mut t = T::new();
    // A CNode from the untyped, holding (the moved) untyped capability itself.
    t.retype(SLOT_U_SMALL, ObjectType::CNode, 1, 10, 1).unwrap();
    t.retype(SLOT_U_SMALL, ObjectType::Endpoint, 0, 11, 1).unwrap();
    let c = t.cap(10);
    let root = t.root();
    let inv =
        CNodeInvocation::Move { dest_index: 0, dest_depth: 1, src_root: root, src_index: SLOT_U_SMALL, src_depth: D };
    cnode::perform(cnode::decode(&c, &inv).unwrap(), &mut t.w.hooks, &mut Budget::unlimited());
    let slot = cnode_slot(&c, 0);
    while delete::revoke(slot, &mut t.w.hooks, &mut Budget::new(1)) == Progress::Preempted {}
    assert!(slot.is_empty());
    t.w.check_invariants(false).unwrap();
}

impl World {
    fn hooks_span(&self, cap: &Cap) -> SlotSpan {
        use super::delete::ObjectHooks;
        self.hooks.embedded_slots(cap).expect("TCB slots")
    }
}
