//! A pool of untyped memory as a buddy allocator of untyped capabilities: each grant of memory a
//! client's funds hold (`funds.rs`) is one such pool.
//!
//! The kernel's untyped memory is a bump allocator: memory retyped from an untyped comes back
//! only when *all* of its children are gone (the next Retype then resets it). So a pool that hands
//! out and takes back pieces of memory independently has to split itself into separate untypeds.
//! This module does that lazily, as a binary buddy system:
//!
//! - a *block* of order `o` is an untyped capability of `2^o` pages; the whole pool (the `POOL`
//!   capability) is the one block of the top order;
//! - to get a block of order `o`, a free block of the smallest larger order is **split**: it is
//!   retyped into its two halves (two untypeds of half the size), one of which is split further
//!   or handed out;
//! - a block handed out has frames or paging structures retyped from it; giving it back
//!   **reclaims** it (a revoke of its capability destroys everything made from it and every copy
//!   of those, which unmaps them wherever they are mapped), so it is empty and reusable;
//! - when both halves of a split block are free again they are **merged**: a revoke of the
//!   parent deletes the two half capabilities and the parent is one free block again, whose
//!   memory the kernel resets on its next Retype.
//!
//! The bookkeeping here is kernel-free; the kernel operations are behind [`UntypedOps`], so the
//! algorithm is tested on the host. Every kernel operation comes first and the bookkeeping
//! changes only when it succeeded, so a failure leaves the tree consistent.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;

/// log2 of a page.
pub const PAGE_BITS: u8 = 12;

/// The kernel operations the pool needs, on capability slots.
pub trait UntypedOps {
    /// Retype the untyped in `parent` into its two halves, untypeds of `child_bits` bits each, in
    /// two new slots (first the lower half).
    fn split(&mut self, parent: u64, child_bits: u8) -> Result<[u64; 2], ServiceError>;
    /// Delete the two halves of `parent` (both empty) and give their slots back.
    fn merge(&mut self, parent: u64, halves: [u64; 2]) -> Result<(), ServiceError>;
    /// Destroy every object made from the untyped in `block` (and every copy of them); the block
    /// has `2^bits` bytes.
    fn reclaim(&mut self, block: u64, bits: u8) -> Result<(), ServiceError>;
}

/// A block of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Block {
    /// `2^order` pages.
    pub order: u8,
    /// Its position among the blocks of its order (its first page is `index << order`).
    pub index: u64,
}

impl Block {
    /// Pages in the block.
    pub fn pages(self) -> u64 {
        1 << self.order
    }

    /// The block's first page, counted from the pool's start.
    pub fn first_page(self) -> u64 {
        self.index << self.order
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Split,
    Used,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    slot: u64,
    state: State,
}

/// The pool.
pub struct Buddy {
    nodes: BTreeMap<Block, Node>,
    /// Indices of the free blocks of each order.
    free: Vec<BTreeSet<u64>>,
    top: u8,
    free_pages: u64,
}

impl Buddy {
    /// A pool of `2^top` pages, the untyped capability in slot `root` (nothing if `root` is
    /// `None`: every allocation fails).
    pub fn new(root: Option<u64>, top: u8) -> Buddy {
        let mut b = Buddy { nodes: BTreeMap::new(), free: vec![BTreeSet::new(); top as usize + 1], top, free_pages: 0 };
        if let Some(slot) = root {
            b.nodes.insert(Block { order: top, index: 0 }, Node { slot, state: State::Free });
            b.free[top as usize].insert(0);
            b.free_pages = 1 << top;
        }
        b
    }

    /// The pool for `size` bytes of untyped memory in slot `root` (the largest power of two of
    /// pages in it; none if less than a page).
    pub fn for_pool(root: u64, size: u64) -> Buddy {
        if size < 1 << PAGE_BITS {
            return Buddy::new(None, 0);
        }
        let bits = 63 - size.leading_zeros() as u8;
        Buddy::new(Some(root), bits - PAGE_BITS)
    }

    /// The order of the whole pool.
    pub fn top(&self) -> u8 {
        self.top
    }

    /// Pages not handed out.
    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    /// The slot of a block handed out (its untyped capability).
    pub fn slot(&self, block: Block) -> Option<u64> {
        self.nodes.get(&block).filter(|n| n.state == State::Used).map(|n| n.slot)
    }

    /// A block of `2^order` pages; `NoMemory` if there is no room.
    pub fn alloc(&mut self, order: u8, ops: &mut impl UntypedOps) -> Result<Block, ServiceError> {
        if order > self.top {
            return Err(ServiceError::NoMemory);
        }
        let from = (order..=self.top).find(|&o| !self.free[o as usize].is_empty()).ok_or(ServiceError::NoMemory)?;
        let mut block = Block { order: from, index: *self.free[from as usize].first().ok_or(ServiceError::NoMemory)? };
        while block.order > order {
            let node = self.nodes[&block];
            let halves = match ops.split(node.slot, PAGE_BITS + block.order - 1) {
                Ok(h) => h,
                Err(e) => {
                    // Undo the splits made for this request (as far as the kernel lets us).
                    self.coalesce(block, ops);
                    return Err(e);
                }
            };
            self.free[block.order as usize].remove(&block.index);
            self.nodes.insert(block, Node { slot: node.slot, state: State::Split });
            let (o, i) = (block.order - 1, block.index * 2);
            for (k, slot) in halves.into_iter().enumerate() {
                self.nodes.insert(Block { order: o, index: i + k as u64 }, Node { slot, state: State::Free });
                self.free[o as usize].insert(i + k as u64);
            }
            block = Block { order: o, index: i };
        }
        self.free[order as usize].remove(&block.index);
        if let Some(n) = self.nodes.get_mut(&block) {
            n.state = State::Used;
        }
        self.free_pages -= block.pages();
        Ok(block)
    }

    /// Give `block` back: everything made from it is destroyed, and it is merged with its buddy
    /// as far as possible. `NotFound` for a block that is not handed out.
    pub fn free(&mut self, block: Block, ops: &mut impl UntypedOps) -> Result<(), ServiceError> {
        let node = *self.nodes.get(&block).filter(|n| n.state == State::Used).ok_or(ServiceError::NotFound)?;
        ops.reclaim(node.slot, PAGE_BITS + block.order)?;
        self.nodes.insert(block, Node { slot: node.slot, state: State::Free });
        self.free[block.order as usize].insert(block.index);
        self.free_pages += block.pages();
        self.coalesce(block, ops);
        Ok(())
    }

    /// Merge the free block `block` with its buddy, and so on up, while both halves are free.
    fn coalesce(&mut self, block: Block, ops: &mut impl UntypedOps) {
        let mut b = block;
        while b.order < self.top {
            let buddy = Block { order: b.order, index: b.index ^ 1 };
            if self.nodes.get(&buddy).is_none_or(|n| n.state != State::Free) {
                break;
            }
            let parent = Block { order: b.order + 1, index: b.index / 2 };
            let (lo, hi) = (
                Block { order: b.order, index: parent.index * 2 },
                Block { order: b.order, index: parent.index * 2 + 1 },
            );
            let halves = [self.nodes[&lo].slot, self.nodes[&hi].slot];
            if ops.merge(self.nodes[&parent].slot, halves).is_err() {
                // Both halves stay free blocks; still consistent.
                break;
            }
            for h in [lo, hi] {
                self.nodes.remove(&h);
                self.free[h.order as usize].remove(&h.index);
            }
            if let Some(p) = self.nodes.get_mut(&parent) {
                p.state = State::Free;
            }
            self.free[parent.order as usize].insert(parent.index);
            b = parent;
        }
    }

    /// Blocks whose pages together are `pages`: one per set bit, largest first (so a region
    /// takes exactly its pages from the pool). Rolls back on failure.
    pub fn alloc_pages(&mut self, pages: u64, ops: &mut impl UntypedOps) -> Result<Vec<Block>, ServiceError> {
        if pages > self.free_pages {
            return Err(ServiceError::NoMemory);
        }
        let mut got = Vec::new();
        for order in (0..64u8).rev().filter(|o| pages & (1 << o) != 0) {
            match self.alloc(order, ops) {
                Ok(b) => got.push(b),
                Err(e) => {
                    for b in got {
                        let _ = self.free(b, ops);
                    }
                    return Err(e);
                }
            }
        }
        Ok(got)
    }

    /// Every slot the tree holds (the whole pool's and those of the blocks split from it).
    pub fn slots(&self) -> impl Iterator<Item = u64> + '_ {
        self.nodes.values().map(|n| n.slot)
    }

    /// Whether the tree is in its first state: one free block, the whole pool.
    pub fn is_whole(&self) -> bool {
        self.nodes.len() == 1 && self.free[self.top as usize].contains(&0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the operations and checks their preconditions.
    #[derive(Default)]
    struct Ops {
        next: u64,
        /// Live untyped slots: slot → (bits, children, has objects).
        live: BTreeMap<u64, (u8, Vec<u64>)>,
        splits: usize,
        merges: usize,
        reclaims: usize,
        fail_split_after: Option<usize>,
    }

    impl Ops {
        fn new(root_bits: u8) -> Ops {
            let mut o = Ops { next: 100, ..Default::default() };
            o.live.insert(6, (root_bits, Vec::new()));
            o
        }
    }

    impl UntypedOps for Ops {
        fn split(&mut self, parent: u64, child_bits: u8) -> Result<[u64; 2], ServiceError> {
            if self.fail_split_after.is_some_and(|n| self.splits >= n) {
                return Err(ServiceError::NoMemory);
            }
            let (bits, children) = self.live.get(&parent).expect("split of a dead untyped");
            assert!(children.is_empty(), "split of an untyped that has children");
            assert_eq!(*bits, child_bits + 1);
            let s = [self.next, self.next + 1];
            self.next += 2;
            self.live.get_mut(&parent).unwrap().1.extend(s);
            for c in s {
                self.live.insert(c, (child_bits, Vec::new()));
            }
            self.splits += 1;
            Ok(s)
        }
        fn merge(&mut self, parent: u64, halves: [u64; 2]) -> Result<(), ServiceError> {
            let children = &self.live[&parent].1;
            assert_eq!(children[..], halves[..]);
            for h in halves {
                assert!(self.live[&h].1.is_empty(), "merge of a half that has children");
                self.live.remove(&h);
            }
            self.live.get_mut(&parent).unwrap().1.clear();
            self.merges += 1;
            Ok(())
        }
        fn reclaim(&mut self, block: u64, _bits: u8) -> Result<(), ServiceError> {
            assert!(self.live.contains_key(&block));
            self.reclaims += 1;
            Ok(())
        }
    }

    #[test]
    fn split_down_and_merge_back_up() {
        let mut ops = Ops::new(12 + 4);
        let mut b = Buddy::new(Some(6), 4);
        let one = b.alloc(0, &mut ops).unwrap();
        assert_eq!(ops.splits, 4);
        assert_eq!(one, Block { order: 0, index: 0 });
        assert_eq!(b.free_pages(), 15);
        let two = b.alloc(1, &mut ops).unwrap();
        assert_eq!(two, Block { order: 1, index: 1 });
        assert_eq!(ops.splits, 4, "the buddy of a split is used first");
        b.free(one, &mut ops).unwrap();
        assert_eq!(ops.merges, 1, "page 0 merges with page 1; pages 2-3 are in use");
        b.free(two, &mut ops).unwrap();
        assert!(b.is_whole());
        assert_eq!(ops.merges, 4);
        assert_eq!(ops.reclaims, 2);
        assert_eq!(ops.live.len(), 1);
    }

    #[test]
    fn exact_page_counts_and_exhaustion() {
        let mut ops = Ops::new(12 + 4);
        let mut b = Buddy::new(Some(6), 4);
        let five = b.alloc_pages(5, &mut ops).unwrap();
        assert_eq!(five.iter().map(|x| x.pages()).collect::<Vec<_>>(), [4, 1]);
        let eleven = b.alloc_pages(11, &mut ops).unwrap();
        assert_eq!(eleven.iter().map(|x| x.pages()).sum::<u64>(), 11);
        assert_eq!(b.free_pages(), 0);
        assert_eq!(b.alloc(0, &mut ops), Err(ServiceError::NoMemory));
        assert_eq!(b.alloc_pages(1, &mut ops), Err(ServiceError::NoMemory));
        // Blocks never overlap.
        let mut pages: Vec<u64> =
            five.iter().chain(&eleven).flat_map(|x| x.first_page()..x.first_page() + x.pages()).collect();
        pages.sort_unstable();
        assert_eq!(pages, (0..16).collect::<Vec<_>>());
        for x in five.into_iter().chain(eleven) {
            b.free(x, &mut ops).unwrap();
        }
        assert!(b.is_whole());
        assert_eq!(b.free_pages(), 16);
    }

    #[test]
    fn fragmentation_refuses_a_large_block_until_merged() {
        let mut ops = Ops::new(12 + 2);
        let mut b = Buddy::new(Some(6), 2);
        let blocks: Vec<Block> = (0..4).map(|_| b.alloc(0, &mut ops).unwrap()).collect();
        b.free(blocks[0], &mut ops).unwrap();
        b.free(blocks[2], &mut ops).unwrap();
        assert_eq!(b.free_pages(), 2);
        assert_eq!(b.alloc(1, &mut ops), Err(ServiceError::NoMemory), "two free pages, but not buddies");
        b.free(blocks[1], &mut ops).unwrap();
        assert_eq!(b.alloc(1, &mut ops), Ok(Block { order: 1, index: 0 }));
    }

    #[test]
    fn bad_frees_and_failures_keep_the_tree_consistent() {
        let mut ops = Ops::new(12 + 3);
        let mut b = Buddy::new(Some(6), 3);
        assert_eq!(b.free(Block { order: 0, index: 0 }, &mut ops), Err(ServiceError::NotFound));
        let x = b.alloc(2, &mut ops).unwrap();
        assert_eq!(b.free(Block { order: 2, index: 1 }, &mut ops), Err(ServiceError::NotFound), "a free block");
        assert_eq!(b.free(Block { order: 3, index: 0 }, &mut ops), Err(ServiceError::NotFound), "a split block");
        // A split that fails half-way: the splits made for the request are merged again.
        let live = ops.live.len();
        ops.fail_split_after = Some(ops.splits + 1);
        assert_eq!(b.alloc_pages(3, &mut ops), Err(ServiceError::NoMemory));
        assert_eq!(b.free_pages(), 4);
        assert_eq!(ops.live.len(), live, "no half left over");
        ops.fail_split_after = None;
        let y = b.alloc_pages(3, &mut ops).unwrap();
        assert_eq!(b.free_pages(), 1);
        b.free(x, &mut ops).unwrap();
        for z in y {
            b.free(z, &mut ops).unwrap();
        }
        assert!(b.is_whole());
        assert_eq!(Buddy::for_pool(6, 100).alloc(0, &mut ops), Err(ServiceError::NoMemory));
        assert_eq!(Buddy::for_pool(6, (1 << 22) + 4096).top(), 10);
    }
}
