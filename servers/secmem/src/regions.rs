//! The region table: which regions exist, who owns them, to whom they are offered, where they
//! are mapped, which pieces of the owner's funds and which capability slots they hold, and the
//! per-program limits.
//!
//! Kernel-free: the service ([`crate::service`]) asks here whether a request is allowed before it
//! touches the kernel, and records the outcome here after. Identities are program ids (badges).
//!
//! Limits (from `protocol::secmem`): a region has 1..=`MAX_REGION_PAGES` pages; a program owns
//! at most `QUOTA_PAGES` pages in at most `MAX_REGIONS` regions; a region is offered to or shared
//! with at most `MAX_SHARES` other programs; a program has accepted at most `MAX_ACCEPTED_PAGES`
//! pages of others' regions. The memory of a region is its owner's (its funds); a peer's paging
//! structures for an accepted region are the peer's.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::secmem::{
    MAX_ACCEPTED_PAGES, MAX_REGION_PAGES, MAX_REGIONS, MAX_SHARES, Mapping, Offered, PAGE_SIZE, QUOTA_PAGES, Usage,
};

use crate::funds::Piece;

/// A region offered to a program other than its owner, and mapped there once accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub peer: u64,
    pub writable: bool,
    /// Whether the peer accepted it: only then is it mapped there.
    pub accepted: bool,
    /// Its address in the peer (0 until accepted).
    pub addr: u64,
    /// The frame capability copies mapped in the peer (one per page, in order; none until
    /// accepted).
    pub copies: Vec<u64>,
}

impl Share {
    /// An offer, not mapped anywhere.
    pub fn offer(peer: u64, writable: bool) -> Share {
        Share { peer, writable, accepted: false, addr: 0, copies: Vec::new() }
    }
}

/// One region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub id: u64,
    pub owner: u64,
    pub pages: u32,
    /// Its address in the owner.
    pub addr: u64,
    /// The pieces of the owner's funds its frames were made from (their pages add up to
    /// `pages`).
    pub blocks: Vec<Piece>,
    /// The frame capabilities, mapped in the owner (one per page, in order).
    pub frames: Vec<u64>,
    pub shares: Vec<Share>,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.pages as u64 * PAGE_SIZE
    }

    pub fn is_empty(&self) -> bool {
        self.pages == 0
    }

    pub fn share(&self, peer: u64) -> Option<&Share> {
        self.shares.iter().find(|s| s.peer == peer)
    }
}

/// All regions.
#[derive(Default)]
pub struct Regions {
    map: BTreeMap<u64, Region>,
    last_id: u64,
}

impl Regions {
    pub fn new() -> Regions {
        Regions::default()
    }

    /// A new region id (never reused, so a stale id names nothing rather than someone else's
    /// region).
    pub fn new_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    /// Whether `owner` may allocate a region of `pages` pages.
    pub fn check_alloc(&self, owner: u64, pages: u32) -> Result<(), ServiceError> {
        if pages == 0 || pages > MAX_REGION_PAGES {
            return Err(ServiceError::InvalidArgument);
        }
        let u = self.usage(owner);
        if u.pages + pages > QUOTA_PAGES || u.regions as usize >= MAX_REGIONS {
            return Err(ServiceError::QuotaExceeded);
        }
        Ok(())
    }

    pub fn insert(&mut self, r: Region) {
        self.map.insert(r.id, r);
    }

    /// Region `id` if `caller` owns it: `NotFound` if there is none, `Denied` if it is someone
    /// else's.
    pub fn owned(&self, caller: u64, id: u64) -> Result<&Region, ServiceError> {
        let r = self.map.get(&id).ok_or(ServiceError::NotFound)?;
        if r.owner != caller {
            return Err(ServiceError::Denied);
        }
        Ok(r)
    }

    /// As [`owned`](Self::owned), mutable.
    pub fn owned_mut(&mut self, caller: u64, id: u64) -> Result<&mut Region, ServiceError> {
        self.owned(caller, id)?;
        self.map.get_mut(&id).ok_or(ServiceError::NotFound)
    }

    /// Remove region `id` if `caller` owns it.
    pub fn remove(&mut self, caller: u64, id: u64) -> Result<Region, ServiceError> {
        self.owned(caller, id)?;
        self.map.remove(&id).ok_or(ServiceError::NotFound)
    }

    /// Whether `caller` may offer region `id` to `peer`.
    pub fn check_offer(&self, caller: u64, id: u64, peer: u64) -> Result<(), ServiceError> {
        let r = self.owned(caller, id)?;
        if peer == 0 || peer == caller {
            return Err(ServiceError::InvalidArgument);
        }
        if r.share(peer).is_some() || r.shares.len() >= MAX_SHARES {
            return Err(ServiceError::Busy);
        }
        Ok(())
    }

    /// Region `id` and its share with `peer`, from the peer's side: `NotFound` unless the region
    /// is offered to or shared with `peer`.
    pub fn received(&self, peer: u64, id: u64) -> Result<(&Region, &Share), ServiceError> {
        let r = self.map.get(&id).ok_or(ServiceError::NotFound)?;
        Ok((r, r.share(peer).ok_or(ServiceError::NotFound)?))
    }

    /// As [`received`](Self::received), the share mutable.
    pub fn received_mut(&mut self, peer: u64, id: u64) -> Result<&mut Share, ServiceError> {
        let r = self.map.get_mut(&id).ok_or(ServiceError::NotFound)?;
        r.shares.iter_mut().find(|s| s.peer == peer).ok_or(ServiceError::NotFound)
    }

    /// Whether `peer` may accept `pages` more pages of others' regions.
    pub fn check_accept(&self, peer: u64, pages: u32) -> Result<(), ServiceError> {
        let held: u32 = self.shared_with(peer).map(|(r, _)| r.pages).sum();
        if held + pages > MAX_ACCEPTED_PAGES {
            return Err(ServiceError::QuotaExceeded);
        }
        Ok(())
    }

    /// Remove the share of region `id` with `peer`: `NotFound` if there is none.
    pub fn take_share(&mut self, caller: u64, id: u64, peer: u64) -> Result<Share, ServiceError> {
        let r = self.owned_mut(caller, id)?;
        let i = r.shares.iter().position(|s| s.peer == peer).ok_or(ServiceError::NotFound)?;
        Ok(r.shares.remove(i))
    }

    /// Regions `owner` owns.
    pub fn owned_by(&self, owner: u64) -> impl Iterator<Item = &Region> {
        self.map.values().filter(move |r| r.owner == owner)
    }

    /// Regions shared with `peer` (accepted), with the share.
    pub fn shared_with(&self, peer: u64) -> impl Iterator<Item = (&Region, &Share)> {
        self.map.values().filter_map(move |r| r.share(peer).filter(|s| s.accepted).map(|s| (r, s)))
    }

    /// Regions offered to `peer` and not accepted yet, with the offer.
    pub fn offered_to(&self, peer: u64) -> impl Iterator<Item = (&Region, &Share)> {
        self.map.values().filter_map(move |r| r.share(peer).filter(|s| !s.accepted).map(|s| (r, s)))
    }

    /// Every region offered to or shared with `peer` (by id), with its owner.
    pub fn received_by(&self, peer: u64) -> Vec<(u64, u64)> {
        self.map.values().filter(|r| r.share(peer).is_some()).map(|r| (r.owner, r.id)).collect()
    }

    /// The offers to `peer`.
    pub fn offers(&self, peer: u64) -> Vec<Offered> {
        self.offered_to(peer)
            .map(|(r, s)| Offered { id: r.id, owner: r.owner, len: r.len(), writable: s.writable })
            .collect()
    }

    /// What is mapped in `program`: its own regions (by id), then those it accepted.
    pub fn mappings(&self, program: u64) -> Vec<Mapping> {
        let own = self.owned_by(program).map(|r| Mapping {
            id: r.id,
            owner: r.owner,
            addr: r.addr,
            len: r.len(),
            writable: true,
        });
        let shared = self.shared_with(program).map(|(r, s)| Mapping {
            id: r.id,
            owner: r.owner,
            addr: s.addr,
            len: r.len(),
            writable: s.writable,
        });
        own.chain(shared).collect()
    }

    pub fn usage(&self, program: u64) -> Usage {
        let (mut pages, mut regions) = (0, 0);
        for r in self.owned_by(program) {
            pages += r.pages;
            regions += 1;
        }
        Usage {
            pages,
            quota: QUOTA_PAGES,
            regions,
            shared_with_me: self.shared_with(program).count() as u32,
            offers: self.offered_to(program).count() as u32,
            funded: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(r: &mut Regions, owner: u64, pages: u32) -> u64 {
        r.check_alloc(owner, pages).unwrap();
        let id = r.new_id();
        r.insert(Region {
            id,
            owner,
            pages,
            addr: 0x1000 * id,
            blocks: Vec::new(),
            frames: Vec::new(),
            shares: Vec::new(),
        });
        id
    }

    #[test]
    fn only_the_owner_may_touch_a_region() {
        let mut r = Regions::new();
        let a = region(&mut r, 10, 2);
        assert_eq!(r.owned(10, a).unwrap().pages, 2);
        assert_eq!(r.owned(11, a), Err(ServiceError::Denied));
        assert_eq!(r.owned(10, a + 1), Err(ServiceError::NotFound));
        assert_eq!(r.remove(11, a).map(|x| x.id), Err(ServiceError::Denied));
        assert_eq!(r.check_offer(11, a, 12), Err(ServiceError::Denied));
        assert_eq!(r.take_share(11, a, 12).map(|s| s.peer), Err(ServiceError::Denied));
        assert_eq!(r.len(), 1, "refused requests change nothing");
        assert_eq!(r.remove(10, a).unwrap().id, a);
        assert_eq!(r.owned(10, a), Err(ServiceError::NotFound), "gone");
        assert!(r.is_empty());
    }

    #[test]
    fn ids_are_never_reused() {
        let mut r = Regions::new();
        let a = region(&mut r, 1, 1);
        r.remove(1, a).unwrap();
        let b = region(&mut r, 1, 1);
        assert_ne!(a, b);
    }

    #[test]
    fn page_and_region_limits() {
        let mut r = Regions::new();
        assert_eq!(r.check_alloc(1, 0), Err(ServiceError::InvalidArgument));
        assert_eq!(r.check_alloc(1, MAX_REGION_PAGES + 1), Err(ServiceError::InvalidArgument));
        region(&mut r, 1, MAX_REGION_PAGES);
        region(&mut r, 1, QUOTA_PAGES - MAX_REGION_PAGES);
        assert_eq!(r.check_alloc(1, 1), Err(ServiceError::QuotaExceeded));
        assert_eq!(r.check_alloc(2, 1), Ok(()), "quotas are per program");
        for _ in 0..MAX_REGIONS {
            region(&mut r, 3, 1);
        }
        assert_eq!(r.check_alloc(3, 1), Err(ServiceError::QuotaExceeded));
        assert_eq!(r.usage(3).regions as usize, MAX_REGIONS);
        assert_eq!(r.usage(1).pages, QUOTA_PAGES);
    }

    #[test]
    fn share_rules() {
        let mut r = Regions::new();
        let a = region(&mut r, 1, 1);
        assert_eq!(r.check_offer(1, a, 1), Err(ServiceError::InvalidArgument), "with oneself");
        assert_eq!(r.check_offer(1, a, 0), Err(ServiceError::InvalidArgument), "with program 0");
        for peer in 2..2 + MAX_SHARES as u64 {
            r.check_offer(1, a, peer).unwrap();
            r.owned_mut(1, a).unwrap().shares.push(Share::offer(peer, false));
        }
        assert_eq!(r.check_offer(1, a, 2), Err(ServiceError::Busy), "already offered");
        assert_eq!(r.check_offer(1, a, 99), Err(ServiceError::Busy), "too many peers");
        assert_eq!(r.usage(2).offers, 1);
        assert_eq!(r.usage(2).shared_with_me, 0);
        assert!(r.mappings(2).is_empty(), "an offer maps nothing");
        assert_eq!(r.offers(2), [Offered { id: a, owner: 1, len: PAGE_SIZE, writable: false }]);
        assert_eq!(r.received(99, a).map(|(r, _)| r.id), Err(ServiceError::NotFound), "not offered to 99");
        let s = r.received_mut(2, a).unwrap();
        (s.accepted, s.addr) = (true, 0x9000);
        assert_eq!(r.usage(2).shared_with_me, 1);
        assert!(r.offers(2).is_empty());
        assert_eq!(r.mappings(2), [Mapping { id: a, owner: 1, addr: 0x9000, len: PAGE_SIZE, writable: false }]);
        assert_eq!(r.received_by(2), [(1, a)]);
        assert_eq!(r.take_share(1, a, 2).unwrap().peer, 2);
        assert_eq!(r.take_share(1, a, 2).map(|s| s.peer), Err(ServiceError::NotFound));
        assert!(r.mappings(2).is_empty());
        assert_eq!(r.mappings(1).len(), 1);
        assert!(r.mappings(1)[0].writable);
    }

    #[test]
    fn accepted_pages_are_limited() {
        let mut r = Regions::new();
        let big = region(&mut r, 1, MAX_REGION_PAGES);
        r.owned_mut(1, big).unwrap().shares.push(Share::offer(2, false));
        r.check_accept(2, MAX_REGION_PAGES).unwrap();
        r.received_mut(2, big).unwrap().accepted = true;
        assert_eq!(r.check_accept(2, MAX_ACCEPTED_PAGES - MAX_REGION_PAGES), Ok(()));
        assert_eq!(r.check_accept(2, MAX_ACCEPTED_PAGES - MAX_REGION_PAGES + 1), Err(ServiceError::QuotaExceeded));
        assert_eq!(r.check_accept(3, MAX_ACCEPTED_PAGES), Ok(()), "per program");
    }
}
