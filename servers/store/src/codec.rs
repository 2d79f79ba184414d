//! The byte encoding of the store's metadata (superblock body, root and namespace indexes):
//! little-endian integers and length-prefixed byte strings. Decoding checks every length
//! against what is left and fails cleanly on anything short or malformed.

use alloc::vec::Vec;

/// Appends encoded values to a buffer.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A byte string of at most `u32::MAX` bytes, with its length.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.raw(v);
    }
}

/// The input did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Reads encoded values from a buffer.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { rest: buf }
    }
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed);
        }
        let (a, b) = self.rest.split_at(n);
        self.rest = b;
        Ok(a)
    }
    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.raw(4)?);
        Ok(u32::from_le_bytes(b))
    }
    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.raw(8)?);
        Ok(u64::from_le_bytes(b))
    }
    /// A byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Malformed);
        }
        self.raw(n)
    }
    /// A count of items each at least `min_size` bytes long: refused if the rest cannot hold
    /// them (so a hostile count cannot make the decoder reserve memory).
    pub fn count(&mut self, min_size: usize) -> Result<usize, Malformed> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.rest.len() {
            return Err(Malformed);
        }
        Ok(n)
    }
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}
