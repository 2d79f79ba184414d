//! The kernel operations the server makes, behind a trait: [`Sel4`] does them with real
//! invocations (through the typed handles of `ozone_agent_sdk::caps`, and Studio's `VSPACE_OF`
//! and `FUND`), and the host tests use a model of the kernel instead (`fake.rs`), so the whole
//! service runs under `cargo test`.
//!
//! The server never maps a client's memory into its own address space: a client's memory can
//! vanish at any moment (Studio revokes it when the client stops), and an access to it would
//! then fault in the server. It has the kernel zero memory instead ([`Object::Filler`]).
//!
//! Slots are indices of the server's own CNode (`slot::OWN_CNODE`, single level, so index =
//! capability pointer), addressed at depth 64.

use ozone_abi::object::CNODE_SLOT_BITS;
use ozone_abi::object::ObjectType;
use ozone_abi::{Error, rights};
use ozone_agent_sdk::AgentError;
use ozone_agent_sdk::caps::{AnyCap, CNode, Frame, PageDirectory, PageTable, Pdpt, Untyped, VSpace, kernel_error};
use ozone_agent_sdk::protocol::{ServiceError, studio};
use ozone_agent_sdk::rpc::Client;

/// Objects the server makes from a client's funds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    /// An object of `2^bits` bytes made only to have the kernel zero them (a CNode of
    /// `2^(bits - 6)` slots: the kernel zeroes every object but an untyped as it makes it).
    Filler(u8),
    /// An untyped of `2^bits` bytes.
    Untyped(u8),
    /// A 4 KiB frame.
    Frame,
    PageTable,
    PageDirectory,
    Pdpt,
}

/// What the server needs from the kernel (and, for `vspace_of`, from Studio).
pub trait Kernel {
    /// Retype one `obj` from the untyped in `untyped` into the empty slot `dest`.
    fn retype(&mut self, untyped: u64, obj: Object, dest: u64) -> Result<(), Error>;
    /// Copy the capability in `src` to the empty slot `dest`, with `rights` (`ozone_abi::rights`).
    fn copy(&mut self, dest: u64, src: u64, rights: u64) -> Result<(), Error>;
    /// Delete the capability in `slot` (a mapped frame capability is unmapped first).
    fn delete(&mut self, slot: u64) -> Result<(), Error>;
    /// Delete every capability derived from the one in `slot`.
    fn revoke(&mut self, slot: u64) -> Result<(), Error>;
    /// Map the paging structure `level` (`PageTable`, `PageDirectory` or `Pdpt`; anything else
    /// is `InvalidArgument`) in `table` at `va` in the address space `vspace`.
    fn map_table(&mut self, level: Object, table: u64, vspace: u64, va: u64) -> Result<(), Error>;
    /// Map the frame in `frame` at `va` in `vspace`, read-only or read-write, never executable.
    fn map_frame(&mut self, frame: u64, vspace: u64, va: u64, writable: bool) -> Result<(), Error>;
    /// Unmap the frame in `frame` (nothing happens if it is not mapped).
    fn unmap_frame(&mut self, frame: u64) -> Result<(), Error>;
    /// Ask Studio for a copy of program `program`'s address-space capability; returns the slot
    /// Studio put it in.
    fn vspace_of(&mut self, program: u64) -> Result<u64, ServiceError>;
    /// Ask Studio to fund the server for program `client` with an untyped of `2^order` pages from
    /// the client's quota, in the empty slot `dest`.
    fn fund(&mut self, client: u64, order: u8, dest: u64) -> Result<(), ServiceError>;
    /// Whether `slot` holds a capability.
    fn holds(&mut self, slot: u64) -> bool;
}

/// The real kernel, for the server's CNode `cnode` (`caps::own_cnode()`). The trait's slots are
/// numbers (the fake kernel's model needs no more); here each becomes the typed handle of what the
/// server keeps in it, and the operation that handle's method.
pub struct Sel4 {
    pub cnode: CNode,
}

impl Kernel for Sel4 {
    fn retype(&mut self, untyped: u64, obj: Object, dest: u64) -> Result<(), Error> {
        let (ty, bits) = match obj {
            Object::Filler(b) => (ObjectType::CNode, b.saturating_sub(CNODE_SLOT_BITS) as u64),
            Object::Untyped(b) => (ObjectType::Untyped, b as u64),
            Object::Frame => (ObjectType::Frame4K, 0),
            Object::PageTable => (ObjectType::PageTable, 0),
            Object::PageDirectory => (ObjectType::PageDirectory, 0),
            Object::Pdpt => (ObjectType::Pdpt, 0),
        };
        Untyped::from_slot(untyped).retype_into(ty, bits, self.cnode, dest, 1).map_err(kernel_error)
    }

    fn copy(&mut self, dest: u64, src: u64, r: u64) -> Result<(), Error> {
        self.cnode.copy(AnyCap::from_slot(src), dest, r).map(drop).map_err(kernel_error)
    }

    fn delete(&mut self, slot: u64) -> Result<(), Error> {
        self.cnode.delete(AnyCap::from_slot(slot)).map_err(kernel_error)
    }

    fn revoke(&mut self, slot: u64) -> Result<(), Error> {
        self.cnode.revoke(AnyCap::from_slot(slot)).map_err(kernel_error)
    }

    fn map_table(&mut self, level: Object, table: u64, vspace: u64, va: u64) -> Result<(), Error> {
        let vspace = VSpace::from_slot(vspace);
        match level {
            Object::PageTable => PageTable::from_slot(table).map(vspace, va),
            Object::PageDirectory => PageDirectory::from_slot(table).map(vspace, va),
            Object::Pdpt => Pdpt::from_slot(table).map(vspace, va),
            Object::Filler(_) | Object::Untyped(_) | Object::Frame => return Err(Error::InvalidArgument),
        }
        .map_err(kernel_error)
    }

    fn map_frame(&mut self, frame: u64, vspace: u64, va: u64, writable: bool) -> Result<(), Error> {
        let r = if writable { rights::READ | rights::WRITE } else { rights::READ };
        Frame::from_slot(frame).map(VSpace::from_slot(vspace), va, r, false).map_err(kernel_error)
    }

    fn unmap_frame(&mut self, frame: u64) -> Result<(), Error> {
        Frame::from_slot(frame).unmap().map_err(kernel_error)
    }

    fn vspace_of(&mut self, program: u64) -> Result<u64, ServiceError> {
        match Client::studio().call(studio::method::VSPACE_OF, &program) {
            Ok(slot) => Ok(slot),
            Err(AgentError::Service(e)) => Err(e),
            Err(_) => Err(ServiceError::KernelError),
        }
    }

    fn fund(&mut self, client: u64, order: u8, dest: u64) -> Result<(), ServiceError> {
        let req = studio::Fund { client, order, slot: dest };
        match Client::studio().call(studio::method::FUND, &req) {
            Ok(()) => Ok(()),
            Err(AgentError::Service(e)) => Err(e),
            Err(_) => Err(ServiceError::KernelError),
        }
    }

    fn holds(&mut self, slot: u64) -> bool {
        // Moving a slot onto itself: `DeleteFirst` exactly when it holds a capability
        // (`FailedLookup` when it is empty).
        let any = AnyCap::from_slot(slot);
        matches!(self.cnode.move_cap(any, slot), Err(AgentError::Kernel(Error::DeleteFirst)))
    }
}
