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
//! | the client's quota has room for `2^order` pages (aligned) | `QuotaExceeded` |
//! | the kernel makes it (the slot is empty and in the CNode) | `InvalidArgument` / `KernelError` |

use ozone_abi::Error;
use ozone_abi::object::ObjectType;
use ozone_agent_sdk::protocol::ServiceError;
use ozone_agent_sdk::protocol::studio::{Fund, MAX_FUND_ORDER};

use crate::kernel::Kernel;
use crate::objects::ChunkAlloc;
use crate::pool::object_size;

/// The interface whose provider may ask.
pub const INTERFACE: &str = ozone_agent_sdk::protocol::secmem::INTERFACE;
/// Studio fills the slots below this in every program's CNode; the server's own slots start here.
pub const FIRST_SERVER_SLOT: u64 = 256;
const PAGE_BITS: u64 = 12;

/// What Studio knows of the client named in a request.
pub struct Client<'a> {
    pub is_caller: bool,
    pub running: bool,
    pub may_use: bool,
    /// Its chunk, while it runs.
    pub mem: Option<&'a ChunkAlloc<'a>>,
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

/// Check a request against the rules (no kernel operation); returns the client's chunk and the
/// server's CNode.
pub fn check<'a>(req: &Fund, p: &Parties<'a>) -> Result<(&'a ChunkAlloc<'a>, u64), Refusal> {
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
    if mem.tally.borrow().fit(bytes).is_none() {
        return Err(Refusal::Quota);
    }
    Ok((mem, cnode))
}

/// Carry out a request: check it, then retype the untyped from the client's chunk into the
/// server's slot (a failed retype changes nothing), and count it in the client's quota.
pub fn fund(k: &dyn Kernel, req: &Fund, p: &Parties<'_>) -> Result<(), Refusal> {
    let (mem, cnode) = check(req, p)?;
    let bits = PAGE_BITS + req.order as u64;
    k.retype_into(mem.chunk, ObjectType::Untyped, bits, cnode, req.slot).map_err(|e| match e {
        Error::NotEnoughMemory => Refusal::Quota,
        e => Refusal::Kernel(e),
    })?;
    mem.tally.borrow_mut().take(object_size(ObjectType::Untyped, bits)).map_err(|_| Refusal::Quota)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
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
        let client = |is_caller, running, may_use| Client { is_caller, running, may_use, mem: Some(&mem) };
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
        // 512 KiB aligned: the watermark goes to 512 KiB, 1 MiB in all — fits; 1 MiB does not.
        assert!(check(&req(7, 300), &ok()).is_ok());
        assert_eq!(refused(ok(), req(8, 300)), Refusal::Quota);
        assert_eq!(Refusal::Quota.answer(), ServiceError::QuotaExceeded);
        assert_eq!(Refusal::NotProvider.answer(), ServiceError::Denied);
        assert_eq!(Refusal::Kernel(Error::DeleteFirst).answer(), ServiceError::InvalidArgument);
    }
}
