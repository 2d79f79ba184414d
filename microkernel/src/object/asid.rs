//! Address-space identifiers (ASIDs): how a mapping names its address space without holding a
//! pointer into memory that may be gone.
//!
//! A frame or paging-structure capability that is mapped must remember where, so that Unmap and
//! deletion can remove the entry. It cannot remember the PML4's address: the PML4 may be deleted
//! (its last capability goes) while the mapped capability lives on elsewhere — Studio gives the
//! secure-memory server copies of a program's PML4 capability, the server maps its own frames
//! into the program, then the program is killed — and a walk from that address would read freed
//! memory, perhaps another object by then, and could clear a word anywhere. So, as in seL4, every
//! PML4 gets an **ASID** when it is made, the mapping records the ASID, and the [`AsidTable`]
//! says which PML4 (if any) an ASID stands for now. Deleting the last capability to a PML4
//! releases its ASID; an Unmap (or deletion) of a capability mapped under a released ASID finds
//! no address space and only forgets the mapping, touching no memory.
//!
//! ASIDs are reused, so an [`Asid`] carries the *generation* of its table entry besides the index:
//! an entry's generation goes up each time it is given out, and a lookup only succeeds for the
//! current generation, so a capability mapped into a long-gone address space can never reach a
//! new one that got the same index. (seL4 has no generations: there a stale capability can
//! unmap its frame if the new owner of the ASID mapped that same frame at the same address.) An entry whose
//! generation counter is exhausted (2^52 uses) is retired, never given out again.
//!
//! The table is bounded ([`ASID_COUNT`] address spaces at a time, as many as seL4 has on x86_64:
//! 8 pools of 512); a Retype of a PML4 when none is free fails (`DeleteFirst`, seL4's error when an
//! ASID pool is full) before it changes anything. There are no ASID pool capabilities: whoever may
//! retype PML4s draws on the one table.
//! Free entries are reused first-in first-out, so an index comes back as late as possible.
//!
//! All-zero bytes are an empty table (every entry free), so the kernel's table lives in `.bss`.

/// log2 of the number of ASIDs.
pub const ASID_BITS: u32 = 12;
/// How many address spaces (PML4s) can exist at once.
pub const ASID_COUNT: usize = 1 << ASID_BITS;

const INDEX_MASK: u64 = ASID_COUNT as u64 - 1;
/// The largest generation an [`Asid`] can carry.
const MAX_GENERATION: u64 = u64::MAX >> ASID_BITS;

/// An address-space identifier as a mapping records it: table index in the low [`ASID_BITS`],
/// generation (≥ 1 for an ASID that was ever given out) above. Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Asid(u64);

impl Asid {
    /// From its raw value (tests; a made-up value names no address space unless the table says so).
    pub const fn from_raw(raw: u64) -> Asid {
        Asid(raw)
    }

    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The table entry.
    pub const fn index(self) -> usize {
        (self.0 & INDEX_MASK) as usize
    }

    pub const fn generation(self) -> u64 {
        self.0 >> ASID_BITS
    }

    const fn new(index: usize, generation: u64) -> Asid {
        Asid(generation << ASID_BITS | index as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Kernel address of the PML4 the ASID stands for; 0 = free.
    pml4: u64,
    /// The last ASID given out from this entry (raw; 0 = never used).
    asid: u64,
}

/// Which PML4 each ASID stands for (see the module docs).
pub struct AsidTable {
    entries: [Entry; ASID_COUNT],
    /// Entries `fresh..` have never been given out (they are free).
    fresh: u32,
    /// Entries given back, first-in first-out: `recycled[(head + i) % ASID_COUNT]` for `i < len`.
    recycled: [u16; ASID_COUNT],
    head: u32,
    len: u32,
}

const _: () = assert!(ASID_COUNT <= u16::MAX as usize + 1);

impl Default for AsidTable {
    fn default() -> Self {
        AsidTable::new()
    }
}

impl AsidTable {
    /// Every ASID free (all-zero bytes).
    pub const fn new() -> AsidTable {
        AsidTable {
            entries: [Entry { pml4: 0, asid: 0 }; ASID_COUNT],
            fresh: 0,
            recycled: [0; ASID_COUNT],
            head: 0,
            len: 0,
        }
    }

    /// How many ASIDs can be given out now.
    pub const fn free_count(&self) -> usize {
        (ASID_COUNT - self.fresh as usize) + self.len as usize
    }

    /// A new ASID for the PML4 at kernel address `pml4` (non-zero); `None` if every ASID is in use.
    pub fn assign(&mut self, pml4: u64) -> Option<Asid> {
        if pml4 == 0 {
            return None;
        }
        let index = if (self.fresh as usize) < ASID_COUNT {
            self.fresh += 1;
            self.fresh as usize - 1
        } else if self.len > 0 {
            let i = self.recycled[self.head as usize % ASID_COUNT] as usize;
            self.head = (self.head + 1) % ASID_COUNT as u32;
            self.len -= 1;
            i
        } else {
            return None;
        };
        let e = &mut self.entries[index];
        // Free entries in the queue never have an exhausted generation (see `release`).
        let asid = Asid::new(index, Asid(e.asid).generation() + 1);
        *e = Entry { pml4, asid: asid.0 };
        Some(asid)
    }

    /// The PML4 `asid` stands for, if that address space still exists. (A free entry has no PML4;
    /// a live one answers only to its current ASID, index and generation.)
    #[inline]
    pub fn lookup(&self, asid: Asid) -> Option<u64> {
        let e = self.entries[asid.index()];
        (e.asid == asid.0 && e.pml4 != 0).then_some(e.pml4)
    }

    /// The PML4 at `pml4`, named by `asid`, is being destroyed: the ASID stands for nothing from
    /// now on. Does nothing if `asid` is not `pml4`'s current ASID.
    pub fn release(&mut self, asid: Asid, pml4: u64) {
        if self.lookup(asid) != Some(pml4) {
            return;
        }
        let index = asid.index();
        let e = &mut self.entries[index];
        e.pml4 = 0;
        if asid.generation() == MAX_GENERATION {
            // Retired: giving it out again would repeat a generation.
            return;
        }
        let tail = (self.head + self.len) as usize % ASID_COUNT;
        self.recycled[tail] = index as u16;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn table() -> Box<AsidTable> {
        Box::new(AsidTable::new())
    }

    #[test]
    fn assign_lookup_release() {
        let mut t = table();
        assert_eq!(t.free_count(), ASID_COUNT);
        assert_eq!(t.assign(0), None);
        let a = t.assign(0x1000).unwrap();
        let b = t.assign(0x2000).unwrap();
        assert_ne!(a, b);
        assert_ne!(a.raw(), 0);
        assert_eq!((t.lookup(a), t.lookup(b)), (Some(0x1000), Some(0x2000)));
        assert_eq!(t.free_count(), ASID_COUNT - 2);
        // Releasing needs the right PML4.
        t.release(a, 0x2000);
        assert_eq!(t.lookup(a), Some(0x1000));
        t.release(a, 0x1000);
        assert_eq!(t.lookup(a), None);
        assert_eq!(t.free_count(), ASID_COUNT - 1);
        // Twice is nothing.
        t.release(a, 0x1000);
        assert_eq!(t.free_count(), ASID_COUNT - 1);
        // Made-up values name nothing.
        assert_eq!(t.lookup(Asid::from_raw(0)), None);
        assert_eq!(t.lookup(Asid::from_raw(b.index() as u64)), None);
        assert_eq!(t.lookup(Asid::from_raw(b.raw() + (1 << ASID_BITS))), None);
    }

    #[test]
    fn exhaustion_and_fifo_reuse_with_new_generations() {
        let mut t = table();
        let all: Vec<Asid> = (0..ASID_COUNT as u64).map(|i| t.assign(0x1000 * (i + 1)).unwrap()).collect();
        assert_eq!(t.free_count(), 0);
        assert_eq!(t.assign(0xdead_0000), None);
        // Give back three; they come back in the same order, each with a new generation.
        for &i in &[7, 3, 900] {
            t.release(all[i], 0x1000 * (i as u64 + 1));
        }
        assert_eq!(t.free_count(), 3);
        for &i in &[7usize, 3, 900] {
            let n = t.assign(0x4242_0000).unwrap();
            assert_eq!(n.index(), all[i].index());
            assert_eq!(n.generation(), all[i].generation() + 1);
            // The old ASID does not reach the new address space.
            assert_eq!(t.lookup(all[i]), None);
            assert_eq!(t.lookup(n), Some(0x4242_0000));
        }
        assert_eq!(t.assign(0xdead_0000), None);
    }

    #[test]
    fn exhausted_generations_retire_the_entry() {
        let mut t = table();
        let a = t.assign(0x1000).unwrap();
        let a = Asid::new(a.index(), MAX_GENERATION);
        t.entries[a.index()].asid = a.raw();
        assert_eq!(t.lookup(a), Some(0x1000));
        t.release(a, 0x1000);
        assert_eq!(t.lookup(a), None);
        // Not queued for reuse: the fresh entries are used, then nothing.
        assert_eq!(t.free_count(), ASID_COUNT - 1);
        for _ in 0..ASID_COUNT - 1 {
            assert_ne!(t.assign(0x2000).unwrap().index(), a.index());
        }
        assert_eq!(t.assign(0x2000), None);
    }

    #[test]
    fn all_zero_bytes_are_an_empty_table() {
        // SAFETY: the table is integers only; all-zero bytes are a valid value of every field.
        let z: Box<AsidTable> = unsafe { Box::new_zeroed().assume_init() };
        let n = table();
        assert_eq!(z.entries, n.entries);
        assert_eq!((z.fresh, z.head, z.len), (n.fresh, n.head, n.len));
        assert_eq!(z.free_count(), ASID_COUNT);
    }
}
