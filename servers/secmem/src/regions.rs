//! The region table: which regions exist, who owns them, where they are mapped, which pool
//! blocks and capability slots they hold, and the per-program limits.
//!
//! Kernel-free: the service ([`crate::service`]) asks here whether a request is allowed before it
//! touches the kernel, and records the outcome here after. Identities are program ids (badges).
//!
//! Limits (from `protocol::secmem`): a region has 1..=`MAX_REGION_PAGES` pages; a program owns
//! at most `QUOTA_PAGES` pages in at most `MAX_REGIONS` regions; a region is shared with at most
//! `MAX_SHARES` other programs. Shared pages count against the owner's quota only.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::secmem::{
    MAX_REGION_PAGES, MAX_REGIONS, MAX_SHARES, Mapping, PAGE_SIZE, QUOTA_PAGES, Usage,
};

use crate::buddy::Block;

/// A region mapped into a program other than its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    pub peer: u64,
    /// Its address in the peer.
    pub addr: u64,
    pub writable: bool,
    /// The frame capability copies mapped in the peer (one per page, in order).
    pub copies: Vec<u64>,
}

/// One region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub id: u64,
    pub owner: u64,
    pub pages: u32,
    /// Its address in the owner.
    pub addr: u64,
    /// The pool blocks its frames were made from (their pages add up to `pages`).
    pub blocks: Vec<Block>,
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

    /// Whether `caller` may share region `id` with `peer`.
    pub fn check_share(&self, caller: u64, id: u64, peer: u64) -> Result<(), ServiceError> {
        let r = self.owned(caller, id)?;
        if peer == 0 || peer == caller {
            return Err(ServiceError::InvalidArgument);
        }
        if r.share(peer).is_some() || r.shares.len() >= MAX_SHARES {
            return Err(ServiceError::Busy);
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

    /// Regions shared with `peer`, with the share.
    pub fn shared_with(&self, peer: u64) -> impl Iterator<Item = (&Region, &Share)> {
        self.map.values().filter_map(move |r| r.share(peer).map(|s| (r, s)))
    }

    /// What is mapped in `program`: its own regions (by id), then those shared with it.
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
        Usage { pages, quota: QUOTA_PAGES, regions, shared_with_me: self.shared_with(program).count() as u32 }
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
        assert_eq!(r.check_share(11, a, 12), Err(ServiceError::Denied));
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
        assert_eq!(r.check_share(1, a, 1), Err(ServiceError::InvalidArgument), "with oneself");
        assert_eq!(r.check_share(1, a, 0), Err(ServiceError::InvalidArgument), "with program 0");
        for peer in 2..2 + MAX_SHARES as u64 {
            r.check_share(1, a, peer).unwrap();
            r.owned_mut(1, a).unwrap().shares.push(Share { peer, addr: 0x9000, writable: false, copies: Vec::new() });
        }
        assert_eq!(r.check_share(1, a, 2), Err(ServiceError::Busy), "already shared");
        assert_eq!(r.check_share(1, a, 99), Err(ServiceError::Busy), "too many peers");
        assert_eq!(r.usage(2).shared_with_me, 1);
        assert_eq!(r.mappings(2), [Mapping { id: a, owner: 1, addr: 0x9000, len: PAGE_SIZE, writable: false }]);
        assert_eq!(r.take_share(1, a, 2).unwrap().peer, 2);
        assert_eq!(r.take_share(1, a, 2).map(|s| s.peer), Err(ServiceError::NotFound));
        assert!(r.mappings(2).is_empty());
        assert_eq!(r.mappings(1).len(), 1);
        assert!(r.mappings(1)[0].writable);
    }
}
