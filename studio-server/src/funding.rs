//! Secure memory paid by its user: the `FUND` request of the program that provides `secmem`.
//!
//! The secure memory server has no memory of its own for clients. When client X needs pages, the
//! server asks Studio to fund it: Studio retypes an untyped of `2^order` pages from X's own
//! memory chunk — within X's quota, counted in X's `used` like X's heap — straight into a slot of
//! the server's CNode. Everything the server makes from it is derived from X's chunk, so when X
//! stops and Studio revokes the chunk, the funds, the frames made from them and every mapping of
//! those frames (in X, in peers) go with it, and the memory returns with X's chunk. A program can
//! therefore exhaust only its own quota.
//!
//! # Funds that outlive the server, and a provider that funds without asking
//!
//! The grants do not come from X's chunk directly but from X's *funding untypeds* ([`Funding`]):
//! untyped memory carved from X's chunk (at least [`MIN_CARVE`], or the grant's size), kept by
//! Studio for X, each with its own watermark. X's `used` counts what its funding untypeds hold
//! (their watermarks), not their size. When the provider stops (crash, kill, restart), Studio
//! revokes every client's funding untypeds ([`Funding::reset`]): the grants in the dead server's
//! CNode and everything made from them go, the watermarks drop to zero and the bytes count for X
//! no more; the next life of the server is funded from the same untypeds again (the kernel
//! places objects from the start of an untyped with no children). Nothing of X's quota leaks per
//! restart; what was carved stays set aside for X's secure memory until X stops.
//!
//! A provider may ask for funds no client asked it for. That is bounded: the funding untypeds of
//! X never exceed [`SHARE_DIVISOR`]-th of X's quota (half), so a hostile provider can take at
//! most half the quota of each program that may use `secmem` — and gives it back when it stops.
//!
//! The rules, in the order they are checked (the first that fails is the refusal, logged):
//!
//! | rule | refusal |
//! |---|---|
//! | the caller provides `secmem` | `Denied` |
//! | the client is a program of the description | `NotFound` |
//! | the client is not the caller | `Denied` |
//! | the client is running | `Busy` |
//! | the client may use `secmem` (nobody else's quota is charged) | `Denied` |
//! | `order <= MAX_FUND_ORDER` | `InvalidArgument` |
//! | the slot is in the server's own range (`FIRST_SERVER_SLOT..`, never Studio's slots) | `InvalidArgument` |
//! | the client's funding untypeds have room, or its quota has room for another within its share | `QuotaExceeded` |
//! | the kernel makes it (the slot is empty and in the CNode) | `InvalidArgument` / `KernelError` |

use ozone_abi::Error;
use ozone_abi::object::ObjectType;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::studio::{Fund, MAX_FUND_ORDER};

use alloc::vec::Vec;
use core::cell::RefCell;
use ozone_agent_sdk::process::Alloc;

use crate::kernel::Kernel;
use crate::objects::ChunkAlloc;
use crate::pool::{Tally, object_size};

/// The interface whose provider may ask.
pub const INTERFACE: &str = ozone_agent_sdk::protocol::secmem::INTERFACE;
/// Studio fills the slots below this in every program's CNode; the server's own slots start here.
pub const FIRST_SERVER_SLOT: u64 = 256;
const PAGE_BITS: u64 = 12;
/// The smallest funding untyped carved: 64 KiB (the server's usual grant).
pub const MIN_CARVE: u64 = 64 << 10;
/// A client's funding untypeds add up to at most its quota divided by this.
pub const SHARE_DIVISOR: u64 = 2;

/// Untyped memory carved from a client's chunk for its secure memory: Studio's slot of each
/// (derived from the chunk, so it goes when the client stops), the watermark over it, and the
/// bytes of the chunk its carving took (its size and the alignment before it).
#[derive(Default)]
pub struct Funding {
    pub untypeds: Vec<(u64, Tally, u64)>,
}

impl Funding {
    /// Bytes of the client's chunk set aside for its secure memory.
    pub fn carved(&self) -> u64 {
        self.untypeds.iter().map(|(_, _, took)| took).sum()
    }

    /// Bytes of them in use (grants made and not taken back).
    pub fn used(&self) -> u64 {
        self.untypeds.iter().map(|(_, t, _)| t.watermark).sum()
    }

    /// The provider stopped: revoke everything made from the funding untypeds (the grants and
    /// all derived from them, wherever they are) and count them empty. They stay carved.
    pub fn reset(&mut self, k: &dyn Kernel) {
        for (slot, t, _) in &mut self.untypeds {
            if k.revoke(*slot).is_ok() {
                t.watermark = 0;
            }
        }
    }

    /// The client stopped: its chunk was revoked, the untypeds are gone with it.
    pub fn forget(&mut self) {
        self.untypeds.clear();
    }
}

/// What Studio knows of the client named in a request.
pub struct Client<'a> {
    pub is_caller: bool,
    pub running: bool,
    pub may_use: bool,
    /// Its chunk, while it runs.
    pub mem: Option<&'a ChunkAlloc<'a>>,
    /// Its funding untypeds.
    pub funding: &'a RefCell<Funding>,
}

/// The two programs of a request.
pub struct Parties<'a> {
    /// Whether the caller provides `secmem`.
    pub provider: bool,
    /// The caller's CNode (a Studio slot), while it runs.
    pub cnode: Option<u64>,
    /// The client, if it is a program of the description.
    pub client: Option<Client<'a>>,
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    NotProvider,
    NoSuchClient,
    ClientIsCaller,
    ClientNotRunning,
    ClientMayNotUse,
    Order,
    Slot,
    Quota,
    Kernel(Error),
}

impl Refusal {
    /// The rule that refused, for the log.
    pub fn rule(self) -> &'static str {
        match self {
            Refusal::NotProvider => "only the program that provides `secmem` is funded",
            Refusal::NoSuchClient => "no such program",
            Refusal::ClientIsCaller => "a server is never funded from its own quota this way",
            Refusal::ClientNotRunning => "the client is not running",
            Refusal::ClientMayNotUse => "the client may not use `secmem`, so its quota is not charged",
            Refusal::Order => "more than the largest grant",
            Refusal::Slot => "the slot is not one of the server's own",
            Refusal::Quota => "the client's quota has no room",
            Refusal::Kernel(_) => "the kernel refused the retype",
        }
    }

    /// The answer the caller gets.
    pub fn answer(self) -> ServiceError {
        match self {
            Refusal::NotProvider | Refusal::ClientIsCaller | Refusal::ClientMayNotUse => ServiceError::Denied,
            Refusal::NoSuchClient => ServiceError::NotFound,
            Refusal::ClientNotRunning => ServiceError::Busy,
            Refusal::Order | Refusal::Slot | Refusal::Kernel(Error::DeleteFirst | Error::RangeError) => {
                ServiceError::InvalidArgument
            }
            Refusal::Quota => ServiceError::QuotaExceeded,
            Refusal::Kernel(_) => ServiceError::KernelError,
        }
    }
}

/// Where a grant comes from: a funding untyped with room (its index), or a new one of this many
/// bytes carved from the chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Untyped(usize),
    Carve(u64),
}

/// Check a request against the rules (no kernel operation); returns the client's chunk, the
/// server's CNode and where the grant comes from.
pub fn check<'a>(req: &Fund, p: &Parties<'a>) -> Result<(&'a ChunkAlloc<'a>, u64, Source), Refusal> {
    if !p.provider {
        return Err(Refusal::NotProvider);
    }
    let c = p.client.as_ref().ok_or(Refusal::NoSuchClient)?;
    if c.is_caller {
        return Err(Refusal::ClientIsCaller);
    }
    let (true, Some(mem), Some(cnode)) = (c.running, c.mem, p.cnode) else {
        return Err(Refusal::ClientNotRunning);
    };
    if !c.may_use {
        return Err(Refusal::ClientMayNotUse);
    }
    if req.order > MAX_FUND_ORDER {
        return Err(Refusal::Order);
    }
    if req.slot < FIRST_SERVER_SLOT {
        return Err(Refusal::Slot);
    }
    let bytes = object_size(ObjectType::Untyped, PAGE_BITS + req.order as u64);
    let funding = c.funding.borrow();
    if let Some(u) = funding.untypeds.iter().position(|(_, t, _)| t.fit(bytes).is_some()) {
        return Ok((mem, cnode, Source::Untyped(u)));
    }
    let carve = bytes.max(MIN_CARVE);
    let tally = mem.tally.borrow();
    let took = tally.fit(carve).map(|at| at + carve - tally.watermark);
    if took.is_none_or(|t| funding.carved() + t > tally.size / SHARE_DIVISOR) {
        return Err(Refusal::Quota);
    }
    Ok((mem, cnode, Source::Carve(carve)))
}

/// Carry out a request: check it, carve a funding untyped from the client's chunk if none has
/// room, then retype the grant from it into the server's slot (a failed retype changes nothing
/// but the carve, which stays the client's), and count it in the client's quota.
pub fn fund(k: &dyn Kernel, req: &Fund, p: &Parties<'_>) -> Result<(), Refusal> {
    let (mem, cnode, source) = check(req, p)?;
    let Some(c) = p.client.as_ref() else { return Err(Refusal::NoSuchClient) };
    let mut funding = c.funding.borrow_mut();
    let u = match source {
        Source::Untyped(u) => u,
        Source::Carve(bytes) => {
            let bits = bytes.trailing_zeros() as u64;
            let from = mem.used();
            let slot = mem.retype(ObjectType::Untyped, bits).map_err(|e| match e {
                Error::NotEnoughMemory => Refusal::Quota,
                e => Refusal::Kernel(e),
            })?;
            funding.untypeds.push((slot, Tally::new(bytes), mem.used() - from));
            funding.untypeds.len() - 1
        }
    };
    let (from, tally, _) = &mut funding.untypeds[u];
    let bits = PAGE_BITS + req.order as u64;
    k.retype_into(*from, ObjectType::Untyped, bits, cnode, req.slot).map_err(|e| match e {
        Error::NotEnoughMemory => Refusal::Quota,
        e => Refusal::Kernel(e),
    })?;
    tally.take(object_size(ObjectType::Untyped, bits)).map_err(|_| Refusal::Quota)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ozone_agent_sdk::slots::Slots;

    fn req(order: u8, slot: u64) -> Fund {
        Fund { client: 5, order, slot }
    }

    #[test]
    fn every_rule_refuses_in_order() {
        let slots = RefCell::new(Slots::new(100, 200));
        // A client with a 1 MiB quota, 200 KiB of it used.
        let fake = crate::fake::Fake::new(&[], &[]);
        let mem = ChunkAlloc::new(&fake, &slots, 42, 1 << 20);
        mem.tally.borrow_mut().take(200 << 10).unwrap();
        let funding = RefCell::new(Funding::default());
        let client =
            |is_caller, running, may_use| Client { is_caller, running, may_use, mem: Some(&mem), funding: &funding };
        let ok = || Parties { provider: true, cnode: Some(7), client: Some(client(false, true, true)) };
        assert!(check(&req(4, 300), &ok()).is_ok());
        let refused = |p: Parties<'_>, r: Fund| check(&r, &p).map(|_| ()).unwrap_err();
        assert_eq!(refused(Parties { provider: false, ..ok() }, req(4, 300)), Refusal::NotProvider);
        assert_eq!(refused(Parties { client: None, ..ok() }, req(4, 300)), Refusal::NoSuchClient);
        assert_eq!(
            refused(Parties { client: Some(client(true, true, true)), ..ok() }, req(4, 300)),
            Refusal::ClientIsCaller
        );
        assert_eq!(
            refused(Parties { client: Some(client(false, false, true)), ..ok() }, req(4, 300)),
            Refusal::ClientNotRunning
        );
        assert_eq!(refused(Parties { cnode: None, ..ok() }, req(4, 300)), Refusal::ClientNotRunning);
        assert_eq!(
            refused(Parties { client: Some(client(false, true, false)), ..ok() }, req(4, 300)),
            Refusal::ClientMayNotUse
        );
        assert_eq!(refused(ok(), req(MAX_FUND_ORDER + 1, 300)), Refusal::Order);
        assert_eq!(refused(ok(), req(u8::MAX, 300)), Refusal::Order);
        assert_eq!(refused(ok(), req(4, FIRST_SERVER_SLOT - 1)), Refusal::Slot);
        assert_eq!(refused(ok(), req(4, 0)), Refusal::Slot);
        // The share is half the quota (512 KiB), alignment included: 256 KiB at 256 KiB takes
        // 312 KiB of the chunk — fits; 512 KiB at 512 KiB would take 824 KiB — does not.
        assert_eq!(check(&req(6, 300), &ok()).map(|r| r.2), Ok(Source::Carve(256 << 10)));
        assert_eq!(refused(ok(), req(7, 300)), Refusal::Quota);
        // A funding untyped with room is used before anything is carved.
        funding.borrow_mut().untypeds.push((9, Tally::new(64 << 10), 64 << 10));
        assert_eq!(check(&req(4, 300), &ok()).map(|r| r.2), Ok(Source::Untyped(0)));
        assert_eq!(check(&req(5, 300), &ok()).map(|r| r.2), Ok(Source::Carve(128 << 10)));
        assert_eq!(Refusal::Quota.answer(), ServiceError::QuotaExceeded);
        assert_eq!(Refusal::NotProvider.answer(), ServiceError::Denied);
        assert_eq!(Refusal::Kernel(Error::DeleteFirst).answer(), ServiceError::InvalidArgument);
    }
}
