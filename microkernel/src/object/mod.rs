//! Kernel objects and the capabilities that name them (the seL4 object model).
//!
//! Every kernel object lives in memory retyped from an untyped capability; a capability ([`Cap`])
//! is a typed, rights-carrying reference to one object, stored in a CNode slot. Object pointers
//! in capabilities are *kernel virtual addresses*: in the kernel they point into the direct map of
//! physical memory, in host tests into an ordinary allocation standing in for physical memory
//! (see [`KERNEL_PHYS_OFFSET`]).
//!
//! This part of the kernel is portable: it builds and is tested (and fuzzed against a reference
//! model) on the host.

pub mod asid;
pub mod endpoint;
#[cfg(test)]
mod ipc_tests;
pub mod notification;
pub mod tcb;
#[cfg(test)]
pub(crate) mod test_object;
pub mod vspace;

pub use asid::Asid;
pub use ozone_abi::object::ObjectType;

/// Added to a physical address to get the kernel virtual address objects are reached through.
#[cfg(target_os = "none")]
pub const KERNEL_PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// On the host, "physical" addresses of test memory are its ordinary addresses.
#[cfg(not(target_os = "none"))]
pub const KERNEL_PHYS_OFFSET: u64 = 0;

/// Capability rights: a subset of read, write, grant and grant-reply. Rights only ever narrow
/// along derivation (Mint and Mutate intersect, never add).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Rights(u8);

impl Rights {
    pub const NONE: Rights = Rights(0);
    pub const READ: Rights = Rights(ozone_abi::rights::READ as u8);
    pub const WRITE: Rights = Rights(ozone_abi::rights::WRITE as u8);
    pub const GRANT: Rights = Rights(ozone_abi::rights::GRANT as u8);
    pub const GRANT_REPLY: Rights = Rights(ozone_abi::rights::GRANT_REPLY as u8);
    pub const ALL: Rights = Rights(ozone_abi::rights::ALL as u8);

    /// From the ABI bit set; unknown bits are ignored.
    pub const fn from_bits(bits: u64) -> Rights {
        Rights((bits & ozone_abi::rights::ALL) as u8)
    }
    pub const fn bits(self) -> u64 {
        self.0 as u64
    }
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }
    /// The rights in both.
    pub const fn intersect(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }
    pub const fn union(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }
}

/// Size of a frame object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameSize {
    /// 4 KiB.
    Small,
    /// 2 MiB.
    Large,
}

impl FrameSize {
    pub const fn bits(self) -> u8 {
        match self {
            FrameSize::Small => ozone_abi::object::PAGE_BITS,
            FrameSize::Large => ozone_abi::object::LARGE_PAGE_BITS,
        }
    }
}

/// Level of an x86_64 paging object. A PML4 is the root of an address space (a VSpace).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagingLevel {
    PageTable,
    PageDirectory,
    Pdpt,
    Pml4,
}

/// Where a frame or paging object is mapped: the address space, by its [`Asid`] (never by the
/// PML4's address, which may be freed while the mapped capability lives on; see [`asid`]), and
/// the virtual address. A PML4 capability uses the same field for the ASID the PML4 was given
/// when it was made (`vaddr` 0): seL4's "mapped" PML4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mapping {
    pub asid: Asid,
    pub vaddr: u64,
}

/// A capability. `ptr` fields are kernel virtual addresses of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Cap {
    /// An empty slot.
    #[default]
    Null,
    /// `2^size_bits` bytes of memory at `ptr`; `free_index` bytes from the start are used by
    /// children (the watermark). For normal memory, bytes from `dirty_from` up to `dirty_top` may
    /// hold stale data and every other byte at or above the watermark is zero (`free_index <=
    /// dirty_from <= dirty_top <= size`; an empty dirty range is `dirty_from == dirty_top ==
    /// free_index`); see [`untyped`]. Device untyped (MMIO) can only be retyped into frames and
    /// untyped, is never zeroed and has both dirty indices 0.
    Untyped {
        ptr: u64,
        size_bits: u8,
        free_index: u64,
        dirty_from: u64,
        dirty_top: u64,
        device: bool,
    },
    /// `2^radix` slots at `ptr`; lookups through it consume `guard_size` bits that must equal
    /// `guard`, then `radix` bits of slot index.
    CNode {
        ptr: u64,
        radix: u8,
        guard_size: u8,
        guard: u64,
    },
    Tcb {
        ptr: u64,
    },
    Endpoint {
        ptr: u64,
        badge: u64,
        rights: Rights,
    },
    Notification {
        ptr: u64,
        badge: u64,
        rights: Rights,
    },
    /// The one-shot right to reply to the thread at `tcb` (made by Call).
    Reply {
        tcb: u64,
        can_grant: bool,
    },
    Frame {
        ptr: u64,
        size: FrameSize,
        rights: Rights,
        device: bool,
        mapped: Option<Mapping>,
    },
    /// A paging structure. For a PDPT, PD or PT `mapped` is where it is mapped; for a PML4 it is
    /// the PML4's ASID (every PML4 the kernel makes has one; a PML4 capability without one names
    /// no usable address space).
    Paging {
        ptr: u64,
        level: PagingLevel,
        mapped: Option<Mapping>,
    },
    IrqControl,
    IrqHandler {
        irq: u8,
    },
    IoPortControl,
    /// The right to read any thread's telemetry counters.
    Telemetry,
    IoPort {
        first: u16,
        last: u16,
    },
}

impl Cap {
    pub const fn is_null(&self) -> bool {
        matches!(self, Cap::Null)
    }
}

pub mod cnode;
pub mod cspace;
pub mod cte;
pub mod delete;
pub mod ioport;
pub mod irq;
pub mod kmem;
pub mod kptr;
pub mod mdb;
pub mod paging;
pub mod telemetry;
pub mod trace;
pub mod untyped;

#[cfg(test)]
mod cap_tests;
#[cfg(test)]
mod fuzz_tests;
#[cfg(any(test, feature = "fuzzing"))]
pub mod harness;
