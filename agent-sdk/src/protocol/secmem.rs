//! The `secmem` interface (the secure memory server): method numbers, message types and limits.
//!
//! - **Regions**: `ALLOC` gives the caller `pages` fresh frames, zero-filled, mapped read-write
//!   into the caller's address space inside [`SHARE_WINDOW`](super::start::SHARE_WINDOW) with an
//!   unmapped guard page before and after. The memory is the caller's own: Studio funds the
//!   server from the caller's memory quota (`studio` method `FUND`), so a program can exhaust
//!   only itself, and everything the server made from those funds goes when the program stops.
//!   Funds stay with the server for the program until it stops and are reused for its later
//!   regions (the caller's quota shows them as used). `FREE` unmaps the region everywhere and
//!   has the kernel zero it before its memory is reused.
//! - **Sharing is an offer the peer must accept.** The owner of a region offers it to another
//!   program (`OFFER`, by program id); nothing is mapped until the peer takes it with `ACCEPT`,
//!   which maps it inside the peer's own share window (at an address the peer may choose; never
//!   outside that window). The offer is withdrawn or the mapping taken away by the owner
//!   (`UNSHARE`) or dropped by the peer (`DROP`); either way the peer has lost the mapping when
//!   the reply goes out. The server never maps anything into itself, so an offer to the server
//!   is refused.
//! - **Sealing**: `SEAL` encrypts up to [`MAX_SEAL_DATA`] bytes with ChaCha20-Poly1305 under the
//!   server's per-instance key, bound to the caller's program id; `UNSEAL` gives them back to the
//!   same program id only, and answers `Tampered` for any other blob.
//!
//! Identities are program ids (the badges Studio puts on clients' capabilities). A blob is bound
//! to the id of the program that sealed it, so it unseals for that program only as long as the
//! program keeps its id. Errors are [`ServiceError`](super::ServiceError) codes: `BadRequest`
//! (payload did not decode), `InvalidArgument` (zero or too many pages, oversized data or blob,
//! offering to oneself, program 0 or the server, an `ACCEPT` address outside the caller's share
//! window, unaligned or without room for the region and its guard pages), `NotFound` (no such
//! region, offer, share or program), `Denied` (the region is someone else's; sealing without an
//! instance secret), `QuotaExceeded` (the caller's memory quota has no room for the pages, or more
//! than [`QUOTA_PAGES`] pages or [`MAX_REGIONS`] regions owned, or more than
//! [`MAX_ACCEPTED_PAGES`] accepted), `Busy` (already offered to or shared with that peer, or
//! [`MAX_SHARES`] peers; an offer accepted twice), `NoMemory` (the server's slots or the caller's
//! share window ran out), `Tampered` (a blob failed authentication), `KernelError`.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "secmem";

super::methods! {
    /// [`Alloc`] → [`Region`].
    ALLOC = 0: Alloc => Region;
    /// [`Free`] → `()`.
    FREE = 1: Free => ();
    /// [`Offer`] → `()`: offer the caller's region to a peer; nothing is mapped
    /// until the peer accepts.
    OFFER = 2: Offer => ();
    /// [`Unshare`] → `()`: the owner withdraws an offer or takes an accepted
    /// region back from the peer.
    UNSHARE = 3: Unshare => ();
    /// [`Seal`] → `Vec<u8>`: the blob ([`super::blob`]).
    SEAL = 4: Seal => Vec<u8>;
    /// [`Unseal`] → `Vec<u8>`: the data sealed.
    UNSEAL = 5: Unseal => Vec<u8>;
    /// `u32` first index → `Vec<`[`Mapping`]`>`: the regions mapped in the caller
    /// (its own, then those it accepted), as many as fit one message; ask again from the next
    /// index.
    LIST = 6: u32 => Vec<Mapping>;
    /// `()` → [`Usage`] of the caller.
    USAGE = 7: () => Usage;
    /// [`Accept`] → `u64`: take a region offered to the caller into its share
    /// window; its address there.
    ACCEPT = 8: Accept => u64;
    /// [`DropShare`] → `()`: the caller declines an offer, or unmaps a region it
    /// accepted.
    DROP = 9: DropShare => ();
    /// `u32` first index → `Vec<`[`Offered`]`>`: offers to the caller not yet
    /// accepted, as many as fit one message.
    OFFERS = 10: u32 => Vec<Offered>;
}

/// Bytes in a page.
pub const PAGE_SIZE: u64 = 4096;
/// The most pages one region may have.
pub const MAX_REGION_PAGES: u32 = 128;
/// The most pages one program may own at a time (its regions together), whatever its memory
/// quota: each page takes one of the server's capability slots.
pub const QUOTA_PAGES: u32 = 256;
/// The most pages of other programs' regions one program may have accepted at a time.
pub const MAX_ACCEPTED_PAGES: u32 = 256;
/// The most regions one program may own at a time.
pub const MAX_REGIONS: usize = 64;
/// The server's capability slots for one client (its slice): its grants and their buddy halves,
/// the frames of its regions, the copies of others' frames it accepted, its paging structures.
/// Enough for a client at every limit above; a client that runs out is refused (`NoMemory`)
/// and nobody else notices. The server has a slice per client, never more clients than slices.
pub const CLIENT_SLOTS: u64 = 640;
/// The most programs one region may be offered to or shared with at a time.
pub const MAX_SHARES: usize = 4;
/// The most [`Mapping`]s one `LIST` reply carries.
pub const LIST_PAGE: usize = 16;

/// The most bytes one `SEAL` takes (a message carries at most 960 bytes of payload; the blob is
/// [`blob::OVERHEAD`] bytes longer than the data).
pub const MAX_SEAL_DATA: usize = 512;
/// The longest blob.
pub const MAX_BLOB: usize = MAX_SEAL_DATA + blob::OVERHEAD;

/// The layout of a sealed blob: `version ‖ nonce ‖ ciphertext ‖ tag`, where the ciphertext is as
/// long as the data. The associated data authenticated with it is [`blob::AD_PREFIX`] ‖ version ‖
/// the sealing program's id (8 bytes, little-endian).
pub mod blob {
    /// The first byte of every blob of this format.
    pub const VERSION: u8 = 1;
    /// ChaCha20-Poly1305's nonce.
    pub const NONCE_LEN: usize = 12;
    /// Poly1305's tag.
    pub const TAG_LEN: usize = 16;
    /// Blob bytes beyond the data.
    pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
    /// The start of the associated data.
    pub const AD_PREFIX: &[u8] = b"ozone-secmem seal";
}

/// Request of `ALLOC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alloc {
    /// 1..=[`MAX_REGION_PAGES`].
    pub pages: u32,
}

/// A region as its owner sees it (the reply of `ALLOC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Names the region in later requests; never reused while the server runs.
    pub id: u64,
    /// Its first byte in the caller's address space.
    pub addr: u64,
    /// Its length in bytes (pages × [`PAGE_SIZE`]).
    pub len: u64,
}

/// Request of `FREE`: only the owner may free a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Free {
    pub id: u64,
}

/// Request of `OFFER`: offer the caller's region `id` to program `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: u64,
    /// The peer's program id (the badge Studio gives it; `ozone_agent_sdk::start::info().id`).
    pub peer: u64,
    /// Map it writable in the peer (otherwise read-only).
    pub writable: bool,
}

/// Request of `UNSHARE`: the offer is withdrawn, or the peer loses the mapping before the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unshare {
    pub id: u64,
    pub peer: u64,
}

/// Request of `ACCEPT`: map region `id`, offered to the caller, into the caller's share window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accept {
    pub id: u64,
    /// Where: 0 lets the server choose; otherwise a page-aligned address inside the caller's
    /// share window with room for the region and a free guard page on each side.
    pub at: u64,
}

/// Request of `DROP`: decline the offer of region `id`, or unmap it if accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropShare {
    pub id: u64,
}

/// An offer to the caller (the reply of `OFFERS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offered {
    pub id: u64,
    pub owner: u64,
    pub len: u64,
    pub writable: bool,
}

/// Request of `SEAL`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    /// At most [`MAX_SEAL_DATA`] bytes.
    pub data: Vec<u8>,
}

/// Request of `UNSEAL`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unseal {
    /// A blob from `SEAL`, at most [`MAX_BLOB`] bytes.
    pub blob: Vec<u8>,
}

/// One region mapped in the caller (the reply of `LIST`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub id: u64,
    /// The program that owns it (the caller itself for its own regions).
    pub owner: u64,
    pub addr: u64,
    pub len: u64,
    pub writable: bool,
}

/// The caller's use of the server (the reply of `USAGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Pages in the regions it owns.
    pub pages: u32,
    /// [`QUOTA_PAGES`].
    pub quota: u32,
    /// Regions it owns.
    pub regions: u32,
    /// Regions others share with it (accepted).
    pub shared_with_me: u32,
    /// Offers to it not yet accepted.
    pub offers: u32,
    /// Pages Studio funded the server with from its memory quota: its regions, the paging
    /// structures of its share window, and what is free for its next regions.
    pub funded: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_PAYLOAD, decode, encode};

    #[test]
    fn the_largest_messages_fit() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let n = encode(&Unseal { blob: alloc::vec![0xff; MAX_BLOB] }, &mut words).unwrap();
        assert_eq!(decode::<Unseal>(&words, n).unwrap().blob.len(), MAX_BLOB);
        let m = Mapping { id: u64::MAX, owner: u64::MAX, addr: u64::MAX, len: u64::MAX, writable: true };
        let list: Vec<Mapping> = alloc::vec![m; LIST_PAGE];
        let n = encode(&list, &mut words).unwrap();
        assert_eq!(decode::<Vec<Mapping>>(&words, n).unwrap(), list);
        let o = Offered { id: u64::MAX, owner: u64::MAX, len: u64::MAX, writable: true };
        let offers: Vec<Offered> = alloc::vec![o; LIST_PAGE];
        let n = encode(&offers, &mut words).unwrap();
        assert_eq!(decode::<Vec<Offered>>(&words, n).unwrap(), offers);
    }
}
