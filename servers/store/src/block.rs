//! Block devices: the interface the store writes through ([`BlockDevice`]), and two devices in
//! memory — [`MemDisk`], and [`CrashDisk`], which models a disk's volatile write cache so that
//! tests can cut the power at any write.
//!
//! Blocks are [`BLOCK`] bytes and addressed by their number (`lba`, in blocks, not sectors). A
//! write is durable only once a later [`BlockDevice::flush`] has returned: until then the device
//! may keep it, lose it, or — at a power cut — keep only some of its 512-byte sectors.

use alloc::vec;
use alloc::vec::Vec;

/// Bytes in a block.
pub const BLOCK: usize = 4096;
/// Bytes in a sector: the unit a disk writes atomically (a torn block is torn at this grain).
pub const SECTOR: usize = 512;

/// A device error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// The block number is past the device's end.
    OutOfRange,
    /// The device failed the request (or is gone: the power was cut).
    Failed,
}

/// A device of [`blocks`](BlockDevice::blocks) blocks of [`BLOCK`] bytes.
pub trait BlockDevice {
    /// How many blocks the device has.
    fn blocks(&self) -> u64;
    /// Read block `lba`.
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), IoError>;
    /// Write block `lba`; durable only after the next [`flush`](BlockDevice::flush) returns.
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), IoError>;
    /// Make every write before it durable.
    fn flush(&mut self) -> Result<(), IoError>;
}

impl<D: BlockDevice + ?Sized> BlockDevice for &mut D {
    fn blocks(&self) -> u64 {
        (**self).blocks()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), IoError> {
        (**self).read(lba, buf)
    }
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), IoError> {
        (**self).write(lba, buf)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        (**self).flush()
    }
}

/// A disk in memory: every write is durable at once.
#[derive(Clone, Debug)]
pub struct MemDisk {
    data: Vec<u8>,
}

impl MemDisk {
    /// A zeroed disk of `blocks` blocks.
    pub fn new(blocks: u64) -> MemDisk {
        MemDisk { data: vec![0; blocks as usize * BLOCK] }
    }

    /// A disk holding `image` (its length rounded down to whole blocks).
    pub fn from_image(mut image: Vec<u8>) -> MemDisk {
        image.truncate(image.len() / BLOCK * BLOCK);
        MemDisk { data: image }
    }

    /// The whole image.
    pub fn image(&self) -> &[u8] {
        &self.data
    }

    /// The whole image, to damage it.
    pub fn image_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl BlockDevice for MemDisk {
    fn blocks(&self) -> u64 {
        (self.data.len() / BLOCK) as u64
    }
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), IoError> {
        let at = span(lba, self.blocks())?;
        buf.copy_from_slice(&self.data[at..at + BLOCK]);
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), IoError> {
        let at = span(lba, self.blocks())?;
        self.data[at..at + BLOCK].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        Ok(())
    }
}

fn span(lba: u64, blocks: u64) -> Result<usize, IoError> {
    if lba >= blocks { Err(IoError::OutOfRange) } else { Ok(lba as usize * BLOCK) }
}

/// A small deterministic generator (xorshift64*), for the simulated devices and tests.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// A disk with a volatile write cache. Writes since the last flush are pending; at a power cut
/// ([`CrashDisk::cut_power`], or automatically at the `n`th request set by
/// [`CrashDisk::cut_at`]) each pending write independently survives whole, is lost, or is
/// torn (each of its 512-byte sectors new or old at random). After the cut every request fails
/// until [`CrashDisk::reboot`].
#[derive(Clone, Debug)]
pub struct CrashDisk {
    durable: MemDisk,
    /// Pending writes, oldest first (a block written twice appears twice).
    pending: Vec<(u64, [u8; BLOCK])>,
    rng: Rng,
    writes: u64,
    cut_at: Option<u64>,
    dead: bool,
}

impl CrashDisk {
    /// A zeroed disk of `blocks` blocks; `seed` decides the fate of pending writes at a cut.
    pub fn new(blocks: u64, seed: u64) -> CrashDisk {
        CrashDisk {
            durable: MemDisk::new(blocks),
            pending: Vec::new(),
            rng: Rng::new(seed),
            writes: 0,
            cut_at: None,
            dead: false,
        }
    }

    /// Cut the power just before the write or flush numbered `n` (counting both from 0 over
    /// the disk's life) would be done: that request and every later one fail.
    pub fn cut_at(&mut self, n: u64) {
        self.cut_at = Some(n);
    }

    /// Writes and flushes done so far.
    pub fn requests(&self) -> u64 {
        self.writes
    }

    /// Whether the power is cut.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Cut the power now: each pending write survives, is lost or is torn, independently.
    pub fn cut_power(&mut self) {
        if self.dead {
            return;
        }
        self.dead = true;
        let pending = core::mem::take(&mut self.pending);
        for (lba, data) in pending {
            let at = lba as usize * BLOCK;
            let old = &mut self.durable.data[at..at + BLOCK];
            match self.rng.below(3) {
                0 => old.copy_from_slice(&data),
                1 => {}
                _ => {
                    for s in 0..BLOCK / SECTOR {
                        if self.rng.below(2) == 0 {
                            old[s * SECTOR..(s + 1) * SECTOR].copy_from_slice(&data[s * SECTOR..(s + 1) * SECTOR]);
                        }
                    }
                }
            }
        }
    }

    /// Power on again: what survived the cut is what the disk holds.
    pub fn reboot(&mut self) {
        self.cut_power();
        self.dead = false;
        self.cut_at = None;
    }

    /// The durable image (what a cut now would keep at least).
    pub fn durable(&self) -> &MemDisk {
        &self.durable
    }
}

impl BlockDevice for CrashDisk {
    fn blocks(&self) -> u64 {
        self.durable.blocks()
    }
    fn read(&mut self, lba: u64, buf: &mut [u8; BLOCK]) -> Result<(), IoError> {
        if self.dead {
            return Err(IoError::Failed);
        }
        self.durable.read(lba, buf)?;
        // The cache answers reads with the newest data.
        if let Some((_, d)) = self.pending.iter().rev().find(|(l, _)| *l == lba) {
            buf.copy_from_slice(d);
        }
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8; BLOCK]) -> Result<(), IoError> {
        if self.dead {
            return Err(IoError::Failed);
        }
        if self.cut_at == Some(self.writes) {
            self.cut_power();
            return Err(IoError::Failed);
        }
        span(lba, self.blocks())?;
        self.writes += 1;
        self.pending.push((lba, *buf));
        Ok(())
    }
    fn flush(&mut self) -> Result<(), IoError> {
        if self.dead {
            return Err(IoError::Failed);
        }
        if self.cut_at == Some(self.writes) {
            self.cut_power();
            return Err(IoError::Failed);
        }
        self.writes += 1;
        for (lba, data) in core::mem::take(&mut self.pending) {
            self.durable.write(lba, &data)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushed_writes_survive_and_unflushed_ones_may_tear() {
        let mut torn = 0;
        for seed in 0..64 {
            let mut d = CrashDisk::new(4, seed);
            d.write(0, &[1; BLOCK]).unwrap();
            d.flush().unwrap();
            d.write(1, &[2; BLOCK]).unwrap();
            d.cut_power();
            assert_eq!(d.read(0, &mut [0; BLOCK]), Err(IoError::Failed));
            d.reboot();
            let mut b = [0; BLOCK];
            d.read(0, &mut b).unwrap();
            assert_eq!(b, [1; BLOCK]);
            d.read(1, &mut b).unwrap();
            if b.contains(&2) && b.contains(&0) {
                torn += 1;
                assert!(b.chunks(SECTOR).all(|s| s.iter().all(|&x| x == s[0])), "torn at sector grain");
            }
        }
        assert!(torn > 0);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let mut d = MemDisk::new(2);
        assert_eq!(d.read(2, &mut [0; BLOCK]), Err(IoError::OutOfRange));
        assert_eq!(d.write(u64::MAX, &[0; BLOCK]), Err(IoError::OutOfRange));
    }
}
