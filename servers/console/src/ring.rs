//! A fixed-size byte ring: the console's transmit queue between writers (the shell, clients)
//! and the UART. No allocation after creation; pushing into a full ring is refused, the caller
//! decides whether to wait (drain the UART) or drop.

use alloc::boxed::Box;

/// A FIFO of bytes with a fixed capacity.
pub struct Ring {
    buf: Box<[u8]>,
    /// Index of the oldest byte.
    head: usize,
    /// Bytes held.
    len: usize,
}

impl Ring {
    /// An empty ring holding up to `capacity` bytes (at least one).
    pub fn new(capacity: usize) -> Ring {
        Ring { buf: alloc::vec![0; capacity.max(1)].into_boxed_slice(), head: 0, len: 0 }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.buf.len()
    }

    /// Room left.
    pub fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Append `b`; `false` (and nothing changes) if the ring is full.
    pub fn push(&mut self, b: u8) -> bool {
        if self.is_full() {
            return false;
        }
        let tail = (self.head + self.len) % self.buf.len();
        self.buf[tail] = b;
        self.len += 1;
        true
    }

    /// Take the oldest byte.
    pub fn pop(&mut self) -> Option<u8> {
        if self.is_empty() {
            return None;
        }
        let b = self.buf[self.head];
        self.head = (self.head + 1) % self.buf.len();
        self.len -= 1;
        Some(b)
    }

    /// Forget everything queued.
    pub fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn first_in_first_out_across_the_wrap() {
        let mut r = Ring::new(4);
        assert!(r.is_empty());
        for round in 0..10u8 {
            assert!(r.push(round));
            assert!(r.push(round.wrapping_add(100)));
            assert_eq!(r.len(), 2);
            assert_eq!(r.pop(), Some(round));
            assert_eq!(r.pop(), Some(round.wrapping_add(100)));
        }
        assert_eq!(r.pop(), None);
    }

    #[test]
    fn a_full_ring_refuses_and_keeps_its_bytes() {
        let mut r = Ring::new(3);
        assert!(r.push(1) && r.push(2) && r.push(3));
        assert!(r.is_full());
        assert_eq!(r.free(), 0);
        assert!(!r.push(4));
        let out: Vec<u8> = core::iter::from_fn(|| r.pop()).collect();
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(r.capacity(), 3);
    }

    #[test]
    fn clear_empties_and_zero_capacity_is_one() {
        let mut r = Ring::new(0);
        assert_eq!(r.capacity(), 1);
        assert!(r.push(9));
        r.clear();
        assert!(r.is_empty() && r.free() == 1);
    }
}
