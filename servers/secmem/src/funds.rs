//! One client's funds: the untyped memory Studio gave the server for that client, from the
//! client's own memory chunk (`studio` method `FUND`).
//!
//! Each grant is an untyped of `2^order` pages, kept as a [`Buddy`] pool of its own; a *piece*
//! is a block of one grant. Everything the server makes for the client — the frames of its
//! regions, the paging structures of its share window — comes from its pieces, and nothing of
//! one client's funds is ever used for another. Grants are asked for only when the client's
//! free pieces do not fit a request, at least [`MIN_GRANT_ORDER`] at a time (fewer calls to
//! Studio), or exactly what is needed when the client's quota has no room for that much.
//!
//! When the client stops, Studio revokes its chunk: the grants and everything made from them
//! (mapped anywhere) go with it. (When the server stops, Studio revokes the grants it had and
//! they count for the client no more; a client's grants add up to at most half its quota.) The server then only forgets the records here
//! ([`Funds::slots`] gives back the capability slots, all empty by then).

use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;

use crate::buddy::{Block, Buddy, UntypedOps};

/// The smallest grant asked for: 16 pages (64 KiB).
pub const MIN_GRANT_ORDER: u8 = 4;

/// A block of one of a client's grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Piece {
    /// Index of the grant (grants are never removed while the client lives).
    pub grant: usize,
    pub block: Block,
}

impl Piece {
    pub fn pages(self) -> u64 {
        self.block.pages()
    }
}

/// One client's grants.
#[derive(Default)]
pub struct Funds {
    grants: Vec<Buddy>,
}

impl Funds {
    pub fn new() -> Funds {
        Funds::default()
    }

    /// A grant of `2^order` pages, the untyped capability in `slot`.
    pub fn add(&mut self, slot: u64, order: u8) {
        self.grants.push(Buddy::new(Some(slot), order));
    }

    /// Grants so far.
    pub fn grants(&self) -> usize {
        self.grants.len()
    }

    /// Pages granted (all charged to the client's quota).
    pub fn pages(&self) -> u64 {
        self.grants.iter().map(|g| 1u64 << g.top()).sum()
    }

    /// Pages granted and not in use.
    pub fn free_pages(&self) -> u64 {
        self.grants.iter().map(|g| g.free_pages()).sum()
    }

    /// A piece of `2^order` pages from a grant with room; `NoMemory` if none has.
    pub fn alloc(&mut self, order: u8, ops: &mut impl UntypedOps) -> Result<Piece, ServiceError> {
        for (i, g) in self.grants.iter_mut().enumerate() {
            if g.top() < order || g.free_pages() < 1 << order {
                continue;
            }
            match g.alloc(order, ops) {
                Ok(block) => return Ok(Piece { grant: i, block }),
                Err(ServiceError::NoMemory) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::NoMemory)
    }

    /// The untyped capability of a piece in use.
    pub fn slot(&self, p: Piece) -> Option<u64> {
        self.grants.get(p.grant)?.slot(p.block)
    }

    /// Give a piece back (everything made from it is destroyed).
    pub fn free(&mut self, p: Piece, ops: &mut impl UntypedOps) -> Result<(), ServiceError> {
        self.grants.get_mut(p.grant).ok_or(ServiceError::NotFound)?.free(p.block, ops)
    }

    /// Every capability slot the grants hold.
    pub fn slots(&self) -> Vec<u64> {
        self.grants.iter().flat_map(|g| g.slots()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits into fresh slots and never fails.
    struct Ops(u64);

    impl UntypedOps for Ops {
        fn split(&mut self, _parent: u64, _bits: u8) -> Result<[u64; 2], ServiceError> {
            self.0 += 2;
            Ok([self.0 - 1, self.0])
        }
        fn merge(&mut self, _parent: u64, _halves: [u64; 2]) -> Result<(), ServiceError> {
            Ok(())
        }
        fn reclaim(&mut self, _block: u64, _bits: u8) -> Result<(), ServiceError> {
            Ok(())
        }
    }

    #[test]
    fn pieces_come_from_the_grants_only() {
        let mut f = Funds::new();
        let mut ops = Ops(1000);
        assert_eq!(f.alloc(0, &mut ops), Err(ServiceError::NoMemory), "no grant: nothing");
        f.add(10, 2);
        f.add(20, 0);
        assert_eq!(f.pages(), 5);
        let a = f.alloc(2, &mut ops).unwrap();
        assert_eq!((a.grant, f.slot(a)), (0, Some(10)));
        let b = f.alloc(0, &mut ops).unwrap();
        assert_eq!((b.grant, f.slot(b)), (1, Some(20)), "the second grant, the first is used up");
        assert_eq!(f.alloc(0, &mut ops), Err(ServiceError::NoMemory));
        assert_eq!(f.free_pages(), 0);
        f.free(a, &mut ops).unwrap();
        assert_eq!(f.free_pages(), 4);
        let c = f.alloc(1, &mut ops).unwrap();
        assert_eq!(c.grant, 0);
        assert_eq!(f.free(Piece { grant: 7, block: c.block }, &mut ops), Err(ServiceError::NotFound));
        let slots = f.slots();
        assert!(slots.contains(&10) && slots.contains(&20) && slots.len() > 2, "split halves too");
    }
}
