//! A typed client of the secure memory server (interface `secmem`, messages in
//! [`crate::protocol::secmem`]): zeroed, guard-paged regions, sharing them with other programs,
//! and sealed blobs.
//!
//! ```ignore
//! let sm = SecureMemory::connect()?;
//! let r = sm.alloc(2)?;                    // 8 KiB, zero, mapped at r.addr
//! let bytes = unsafe { r.bytes_mut() };    // the caller's to use until `free`
//! let at_peer = sm.share(r.id, peer_id, false)?;
//! sm.unshare(r.id, peer_id)?;              // the peer's mapping is gone when this returns
//! sm.free(r)?;                             // zeroed and unmapped
//! let blob = sm.seal(b"api token")?;       // ≤ 512 bytes; only this program can unseal it
//! assert_eq!(sm.unseal(&blob)?, b"api token");
//! ```

use alloc::vec::Vec;

use crate::error::Result;
use crate::protocol::secmem::{self as proto, method};
use crate::rpc::Client;

pub use crate::protocol::secmem::{MAX_SEAL_DATA, Mapping, Usage};

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
    /// after which an access faults), and the caller must not create overlapping references.
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

    /// `pages` zero-filled pages, mapped read-write here with unmapped guard pages around them.
    pub fn alloc(&self, pages: u32) -> Result<Region> {
        let r: proto::Region = self.client.call(method::ALLOC, &proto::Alloc { pages })?;
        Ok(r.into())
    }

    /// Unmap the region here and in every peer, zero it and give its memory back.
    pub fn free(&self, region: Region) -> Result<()> {
        self.free_id(region.id)
    }

    /// [`free`](Self::free) by id.
    pub fn free_id(&self, id: u64) -> Result<()> {
        self.client.call(method::FREE, &proto::Free { id })
    }

    /// Map this program's region `id` into program `peer` (read-only unless `writable`); returns
    /// its address there (tell the peer yourself, or let it find it with [`list`](Self::list)).
    pub fn share(&self, id: u64, peer: u64, writable: bool) -> Result<u64> {
        self.client.call(method::SHARE, &proto::Share { id, peer, writable })
    }

    /// Take the region away from `peer`: its mapping is gone when this returns.
    pub fn unshare(&self, id: u64, peer: u64) -> Result<()> {
        self.client.call(method::UNSHARE, &proto::Unshare { id, peer })
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

    /// Every region mapped here: this program's own, then those shared with it.
    pub fn list(&self) -> Result<Vec<Mapping>> {
        let mut all = Vec::new();
        loop {
            let page: Vec<Mapping> = self.client.call(method::LIST, &(all.len() as u32))?;
            let n = page.len();
            all.extend(page);
            if n < proto::LIST_PAGE {
                return Ok(all);
            }
        }
    }

    /// This program's pages, quota and regions.
    pub fn usage(&self) -> Result<Usage> {
        self.client.call(method::USAGE, &())
    }
}
