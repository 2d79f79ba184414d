//! Memory for programs. Studio holds all untyped memory. Each program gets a *chunk*: an untyped
//! capability of its own (the quota rounded up to a power of two), carved from the pool; every
//! object of the program is made from its chunk, so revoking the chunk stops the program and
//! reclaims all of its memory at once, and no program can take more than its chunk.
//!
//! A chunk whose program ended goes back on a free list for the next program of that size (the
//! pool untyped it came from cannot take it back while its other chunks live — the kernel's
//! untyped memory is a watermark). Free memory is what the pool untyped can still give plus the
//! free chunks.
//!
//! [`Tally`] mirrors the kernel's placement rule (each object at the watermark aligned up to its
//! size) so Studio knows how much of a chunk is used without asking the kernel.

use alloc::vec::Vec;

use ozone_abi::Error;
use ozone_abi::object::{self as obj, ObjectType};

/// Bytes an object of type `ty` takes.
pub fn object_size(ty: ObjectType, size_bits: u64) -> u64 {
    match ty {
        ObjectType::Untyped => 1 << size_bits,
        ObjectType::CNode => 1 << (obj::CNODE_SLOT_BITS as u64 + size_bits),
        ObjectType::Tcb => 1 << obj::TCB_BITS,
        ObjectType::Endpoint => 1 << obj::ENDPOINT_BITS,
        ObjectType::Notification => 1 << obj::NOTIFICATION_BITS,
        ObjectType::Frame2M => 1 << obj::LARGE_PAGE_BITS,
        _ => 1 << obj::PAGE_BITS,
    }
}

/// A watermark over one untyped region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub size: u64,
    pub watermark: u64,
}

impl Tally {
    pub fn new(size: u64) -> Tally {
        Tally { size, watermark: 0 }
    }

    /// Where an object of `bytes` (a power of two) would go, if it fits.
    pub fn fit(&self, bytes: u64) -> Option<u64> {
        let at = self.watermark.checked_next_multiple_of(bytes)?;
        (at.checked_add(bytes)? <= self.size).then_some(at)
    }

    /// Account for an object of `bytes` placed by the kernel.
    pub fn take(&mut self, bytes: u64) -> Result<(), Error> {
        let at = self.fit(bytes).ok_or(Error::NotEnoughMemory)?;
        self.watermark = at + bytes;
        Ok(())
    }

    pub fn free(&self) -> u64 {
        self.size - self.watermark
    }
}

/// One pool untyped.
#[derive(Clone, Copy, Debug)]
pub struct PoolUntyped {
    pub slot: u64,
    pub tally: Tally,
}

/// The pool and the free chunks.
pub struct Pool {
    pub untyped: Vec<PoolUntyped>,
    /// Free chunks: (slot, size_bits).
    pub free_chunks: Vec<(u64, u8)>,
    /// All memory the pool started with.
    pub total: u64,
}

/// The chunk size (log2) for a quota of `bytes`: the quota rounded up to a power of two.
pub fn chunk_bits(bytes: u64) -> u8 {
    bytes.max(4096).next_power_of_two().trailing_zeros() as u8
}

impl Pool {
    pub fn new(untyped: Vec<PoolUntyped>) -> Pool {
        let total = untyped.iter().map(|u| u.tally.size).sum();
        Pool { untyped, free_chunks: Vec::new(), total }
    }

    /// A chunk of `2^bits` bytes: a free one, or a new one made by `carve(pool_slot, bits)` (which
    /// retypes it in the kernel and returns the new capability's slot).
    pub fn chunk(&mut self, bits: u8, carve: impl FnOnce(u64, u8) -> Result<u64, Error>) -> Result<u64, Error> {
        if let Some(i) = self.free_chunks.iter().position(|&(_, b)| b == bits) {
            return Ok(self.free_chunks.swap_remove(i).0);
        }
        let bytes = 1u64 << bits;
        // The smallest pool untyped it fits in (keeps the big ones for big chunks).
        let u = self
            .untyped
            .iter_mut()
            .filter(|u| u.tally.fit(bytes).is_some())
            .min_by_key(|u| u.tally.size)
            .ok_or(Error::NotEnoughMemory)?;
        let slot = carve(u.slot, bits)?;
        u.tally.take(bytes)?;
        Ok(slot)
    }

    /// A chunk whose objects are all gone (revoked) is free again.
    pub fn give_back(&mut self, slot: u64, bits: u8) {
        self.free_chunks.push((slot, bits));
    }

    /// Bytes not in any program's chunk.
    pub fn free(&self) -> u64 {
        self.untyped.iter().map(|u| u.tally.free()).sum::<u64>()
            + self.free_chunks.iter().map(|&(_, b)| 1u64 << b).sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn tally_follows_the_kernel_placement_rule() {
        let mut t = Tally::new(1 << 16);
        t.take(32).unwrap();
        assert_eq!(t.watermark, 32);
        t.take(4096).unwrap();
        assert_eq!(t.watermark, 8192, "aligned up to the object size");
        t.take(2048).unwrap();
        assert_eq!(t.watermark, 10240);
        assert_eq!(t.take(1 << 16), Err(Error::NotEnoughMemory));
        assert_eq!(t.free(), (1 << 16) - 10240);
    }

    #[test]
    fn chunks_are_carved_once_and_reused() {
        let mut pool = Pool::new(vec![
            PoolUntyped { slot: 1, tally: Tally::new(1 << 24) },
            PoolUntyped { slot: 2, tally: Tally::new(1 << 21) },
        ]);
        let start = pool.free();
        let mut next = 100;
        let mut carve = |_u: u64, _b: u8| {
            next += 1;
            Ok(next)
        };
        let a = pool.chunk(20, &mut carve).unwrap();
        assert_eq!(pool.untyped[1].tally.watermark, 1 << 20, "the smaller untyped is used first");
        assert_eq!(pool.free(), start - (1 << 20));
        pool.give_back(a, 20);
        assert_eq!(pool.free(), start, "a free chunk counts as free");
        let b = pool.chunk(20, |_, _| panic!("must reuse the free chunk")).unwrap();
        assert_eq!(a, b);
        assert_eq!(pool.chunk(30, &mut carve), Err(Error::NotEnoughMemory));
        assert_eq!(chunk_bits(1024 * 1024), 20);
        assert_eq!(chunk_bits(1024 * 1024 + 1), 21);
        assert_eq!(chunk_bits(1), 12);
    }
}
