//! A typed client of the secure memory server (interface `secmem`, messages in
//! [`crate::protocol::secmem`]): zeroed, guard-paged regions paid from the caller's own memory
//! quota, sharing them with other programs by offer and acceptance, and sealed blobs.
//!
//! ```ignore
//! let sm = SecureMemory::connect()?;
//! let r = sm.alloc(2)?;                    // 8 KiB of this program's quota, zero, at r.addr
//! let bytes = unsafe { r.bytes_mut() };    // the caller's to use until `free`
//! sm.offer(r.id, peer_id, false)?;         // nothing is mapped in the peer yet
//! // the peer: let o = sm.offers()?[0]; let at = sm.accept(o.id, 0)?;  (or sm.drop_share(o.id))
//! sm.unshare(r.id, peer_id)?;              // the peer's mapping is gone when this returns
//! sm.free(r)?;                             // unmapped everywhere, zeroed by the kernel
//! let blob = sm.seal(b"api token")?;       // ≤ 512 bytes; only this program can unseal it
//! assert_eq!(sm.unseal(&blob)?, b"api token");
//! ```

use alloc::vec::Vec;

use crate::error::Result;
use crate::protocol::secmem::{self as proto, method};
use crate::rpc::Client;

pub use crate::protocol::secmem::{MAX_SEAL_DATA, Mapping, Offered, Usage};

/// A region of secure memory mapped in this program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The server's name for it.
    pub id: u64,
    /// Its first byte here.
    pub addr: u64,
    /// Its length in bytes.
    pub len: u64,
}

impl Region {
    /// The region's bytes.
    ///
    /// # Safety
    /// The region must still be mapped in this program (not freed, and — for a region another
    /// program shared with this one — not unshared: the owner can take it away at any moment,
    /// and it goes when the owner stops, after which an access faults), and the caller must not
    /// create overlapping references.
    pub unsafe fn bytes_mut(&self) -> &'static mut [u8] {
        // SAFETY: per the contract, `len` bytes at `addr` are mapped writable and unaliased.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len as usize) }
    }
}

impl From<proto::Region> for Region {
    fn from(r: proto::Region) -> Region {
        Region { id: r.id, addr: r.addr, len: r.len }
    }
}

/// A connection to the secure memory server.
#[derive(Clone, Copy, Debug)]
pub struct SecureMemory {
    client: Client,
}

impl SecureMemory {
    /// Look the server up through Studio (the program must be allowed to use `secmem`).
    pub fn connect() -> Result<SecureMemory> {
        Ok(SecureMemory { client: Client::lookup(proto::INTERFACE)? })
    }

    /// Use a capability to the server already in slot `ep`.
    pub fn with_slot(ep: u64) -> SecureMemory {
        SecureMemory { client: Client::new(ep, proto::INTERFACE) }
    }

    /// `pages` zero-filled pages, mapped read-write here with unmapped guard pages around them,
    /// paid from this program's own memory quota (`QuotaExceeded` when it has no room).
    pub fn alloc(&self, pages: u32) -> Result<Region> {
        let r = self.client.call(method::ALLOC, &proto::Alloc { pages })?;
        Ok(r.into())
    }

    /// Unmap the region here and in every peer; the kernel zeroes it before it is reused.
    pub fn free(&self, region: Region) -> Result<()> {
        self.free_id(region.id)
    }

    /// [`free`](Self::free) by id.
    pub fn free_id(&self, id: u64) -> Result<()> {
        self.client.call(method::FREE, &proto::Free { id })
    }

    /// Offer this program's region `id` to program `peer` (read-only unless `writable`). Nothing
    /// is mapped in the peer until it [`accept`](Self::accept)s.
    pub fn offer(&self, id: u64, peer: u64, writable: bool) -> Result<()> {
        self.client.call(method::OFFER, &proto::Offer { id, peer, writable })
    }

    /// Withdraw the offer of region `id` to `peer`, or take the region back if the peer accepted
    /// it: its mapping is gone when this returns.
    pub fn unshare(&self, id: u64, peer: u64) -> Result<()> {
        self.client.call(method::UNSHARE, &proto::Unshare { id, peer })
    }

    /// Offers to this program not yet accepted.
    pub fn offers(&self) -> Result<Vec<Offered>> {
        let mut all = Vec::new();
        loop {
            let page = self.client.call(method::OFFERS, &(all.len() as u32))?;
            let n = page.len();
            all.extend(page);
            if n < proto::LIST_PAGE {
                return Ok(all);
            }
        }
    }

    /// Take region `id`, offered to this program, into its share window: at `at` (page-aligned,
    /// inside the window, with a free page on each side) or, for `at == 0`, wherever the server
    /// finds room. Returns its address here.
    pub fn accept(&self, id: u64, at: u64) -> Result<u64> {
        self.client.call(method::ACCEPT, &proto::Accept { id, at })
    }

    /// Decline the offer of region `id`, or unmap it here if it was accepted.
    pub fn drop_share(&self, id: u64) -> Result<()> {
        self.client.call(method::DROP, &proto::DropShare { id })
    }

    /// Encrypt and authenticate `data` (at most [`MAX_SEAL_DATA`] bytes) so that only this
    /// program (by its program id) can [`unseal`](Self::unseal) it, on this instance.
    pub fn seal(&self, data: &[u8]) -> Result<Vec<u8>> {
        self.client.call(method::SEAL, &proto::Seal { data: data.into() })
    }

    /// The data in a blob this program sealed; `Service(Tampered)` if it was changed or sealed
    /// by another program.
    pub fn unseal(&self, blob: &[u8]) -> Result<Vec<u8>> {
        self.client.call(method::UNSEAL, &proto::Unseal { blob: blob.into() })
    }

    /// Every region mapped here: this program's own, then those it accepted.
    pub fn list(&self) -> Result<Vec<Mapping>> {
        let mut all = Vec::new();
        loop {
            let page = self.client.call(method::LIST, &(all.len() as u32))?;
            let n = page.len();
            all.extend(page);
            if n < proto::LIST_PAGE {
                return Ok(all);
            }
        }
    }

    /// This program's pages, limits, regions, offers and funds.
    pub fn usage(&self) -> Result<Usage> {
        self.client.call(method::USAGE, &())
    }
}
