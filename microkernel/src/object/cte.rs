//! Capability slots: a [`Cte`] is one CNode slot, a capability plus its [`MdbNode`] (the links of
//! the derivation tree, see [`mdb`](super::mdb)).
//!
//! A slot is exactly `1 << CNODE_SLOT_BITS` (64) bytes and 64-byte aligned, so a CNode of radix
//! `r` is `2^r` slots back to back. All-zero bytes are an empty slot: [`Cap::Null`] with no links
//! and no flags. The empty-MDB half holds by construction (zero links, zero flags); that zero
//! bytes decode to [`Cap::Null`] is checked at compile time in [`kmem`](super::kmem), so a
//! retyped CNode, whose memory is zero, is a CNode of empty slots without a pass to initialise it.
//!
//! # The flag word
//!
//! Besides the `prev`/`next` links an MDB node has one word of flags:
//!
//! | bits   | meaning |
//! |--------|---------|
//! | 0      | `revocable`: the capability can have derivation children (seL4's `mdbRevocable`) |
//! | 1      | `first_badged`: the first of a run of badged copies (seL4's `mdbFirstBadged`) |
//! | 2      | zombie: the slot holds the last capability to a CNode (or other slot-holding object) whose slots are being deleted |
//! | 3      | zombie: it has a pinned slot (see [`delete`](super::delete)); bits 36.. are its index |
//! | 4      | zombie: it is hosted (see [`delete`](super::delete)); bits 36.. are the index of its own slot in the host object |
//! | 5      | hosted zombie: the host zombie is in slot 1 of the host object (else slot 0) |
//! | 6      | `traces`: the slot is a TCB's trace slot with a trace on (see [`trace`](super::trace)) |
//! | 8..35  | zombie: how many of the object's slots (from index 0) may still be occupied |
//! | 36..63 | zombie: a slot index (pinned slot, or own slot in the host) |
//!
//! seL4 turns such a capability into a separate `Zombie` capability type. Here the capability
//! keeps its type and the zombie state lives in the flag word, so [`Cap`] needs no extra variant;
//! lookups and invocations treat a zombie slot as holding no capability
//! ([`SlotRef::cap`](super::kmem::SlotRef::cap)).

use super::Cap;
use ozone_abi::object::CNODE_SLOT_BITS;

/// Bytes per slot.
pub const SLOT_BYTES: u64 = 1 << CNODE_SLOT_BITS;

/// One capability slot.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cte {
    pub cap: Cap,
    pub mdb: MdbNode,
}

impl Cte {
    /// An empty slot (all-zero bytes).
    pub const NULL: Cte = Cte { cap: Cap::Null, mdb: MdbNode::EMPTY };
}

const _: () = assert!(size_of::<Cte>() == SLOT_BYTES as usize, "a Cte must be exactly one CNode slot");
const _: () = assert!(align_of::<Cte>() == SLOT_BYTES as usize);

/// The derivation-tree links of a slot: kernel addresses of the previous and next slot in the
/// derivation list (0 = none) and the flag word described in the module docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MdbNode {
    prev: u64,
    next: u64,
    bits: u64,
}

const REVOCABLE: u64 = 1 << 0;
const FIRST_BADGED: u64 = 1 << 1;
const ZOMBIE: u64 = 1 << 2;
const PINNED: u64 = 1 << 3;
const HOSTED: u64 = 1 << 4;
const HOST_IN_ONE: u64 = 1 << 5;
const TRACES: u64 = 1 << 6;
const FIELD_BITS: u32 = 28;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const REMAINING_SHIFT: u32 = 8;
const PIN_SHIFT: u32 = REMAINING_SHIFT + FIELD_BITS;

/// The most slots a zombie can count (CNodes have at most `2^MAX_CNODE_RADIX`).
pub const MAX_ZOMBIE_SLOTS: u64 = FIELD_MASK;

const _: () = assert!(PIN_SHIFT + FIELD_BITS <= 64);
const _: () = assert!((1u64 << ozone_abi::object::MAX_CNODE_RADIX) <= MAX_ZOMBIE_SLOTS);

/// The deletion state of a zombie slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zombie {
    /// Slots `remaining..` of the object are empty (except, possibly, the slot the zombie itself
    /// lives in and the pinned slot).
    pub remaining: u64,
    /// A slot of the object that must be left alone until the rest is empty (see
    /// [`delete`](super::delete)).
    pub pin: Option<u64>,
    /// The zombie lives in a slot of another dying object, whose zombie must go when this one
    /// goes (see [`delete`](super::delete)).
    pub host: Option<Host>,
}

/// Where a hosted zombie's host is: the zombie's own slot is slot `own` of the host object, the
/// host zombie is in slot `host` (0 or 1) of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub own: u64,
    pub host: u64,
}

impl MdbNode {
    /// No links, no flags.
    pub const EMPTY: MdbNode = MdbNode { prev: 0, next: 0, bits: 0 };

    pub const fn prev(&self) -> u64 {
        self.prev
    }
    pub const fn next(&self) -> u64 {
        self.next
    }
    pub const fn revocable(&self) -> bool {
        self.bits & REVOCABLE != 0
    }
    pub const fn first_badged(&self) -> bool {
        self.bits & FIRST_BADGED != 0
    }

    /// The slot is a TCB's trace slot whose thread is traced into the frame it holds: emptying
    /// it turns the trace off ([`mdb::empty_slot`](super::mdb)).
    pub const fn traces(&self) -> bool {
        self.bits & TRACES != 0
    }
    pub(crate) const fn with_traces(self) -> MdbNode {
        MdbNode { bits: self.bits | TRACES, ..self }
    }

    pub(crate) const fn with_prev(self, prev: u64) -> MdbNode {
        MdbNode { prev, ..self }
    }
    pub(crate) const fn with_next(self, next: u64) -> MdbNode {
        MdbNode { next, ..self }
    }
    pub(crate) const fn with_first_badged(self, on: bool) -> MdbNode {
        let bits = if on { self.bits | FIRST_BADGED } else { self.bits & !FIRST_BADGED };
        MdbNode { bits, ..self }
    }

    /// A node with the given links and the two derivation flags, not a zombie.
    pub(crate) const fn new(prev: u64, next: u64, revocable: bool, first_badged: bool) -> MdbNode {
        let mut bits = 0;
        if revocable {
            bits |= REVOCABLE;
        }
        if first_badged {
            bits |= FIRST_BADGED;
        }
        MdbNode { prev, next, bits }
    }

    /// The zombie state, if the slot is a zombie.
    pub const fn zombie(&self) -> Option<Zombie> {
        if self.bits & ZOMBIE == 0 {
            return None;
        }
        let remaining = (self.bits >> REMAINING_SHIFT) & FIELD_MASK;
        let index = (self.bits >> PIN_SHIFT) & FIELD_MASK;
        let pin = if self.bits & PINNED != 0 { Some(index) } else { None };
        let host = if self.bits & HOSTED != 0 {
            Some(Host { own: index, host: if self.bits & HOST_IN_ONE != 0 { 1 } else { 0 } })
        } else {
            None
        };
        Some(Zombie { remaining, pin, host })
    }

    /// This node made (or kept) a zombie with the given state; links and derivation flags kept.
    /// Counts are clamped to [`MAX_ZOMBIE_SLOTS`] (slot spans are never larger). A zombie is
    /// never both pinning and hosted; if asked, the pin wins.
    pub(crate) const fn with_zombie(self, z: Zombie) -> MdbNode {
        const fn clamp(x: u64) -> u64 {
            if x > FIELD_MASK { FIELD_MASK } else { x }
        }
        let keep = self.bits & (REVOCABLE | FIRST_BADGED);
        let mut bits = keep | ZOMBIE | (clamp(z.remaining) << REMAINING_SHIFT);
        if let Some(pin) = z.pin {
            bits |= PINNED | (clamp(pin) << PIN_SHIFT);
        } else if let Some(h) = z.host {
            bits |= HOSTED | (clamp(h.own) << PIN_SHIFT);
            if h.host == 1 {
                bits |= HOST_IN_ONE;
            }
        }
        MdbNode { bits, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombie_state_round_trips_and_keeps_flags() {
        let n = MdbNode::new(0x1000, 0x2000, true, false);
        assert_eq!(n.zombie(), None);
        let z = n.with_zombie(Zombie { remaining: 1 << 24, pin: Some(77), host: None });
        assert_eq!(z.zombie(), Some(Zombie { remaining: 1 << 24, pin: Some(77), host: None }));
        assert!(z.revocable() && !z.first_badged());
        assert_eq!((z.prev(), z.next()), (0x1000, 0x2000));
        let z2 = z.with_zombie(Zombie { remaining: 3, pin: None, host: None });
        assert_eq!(z2.zombie(), Some(Zombie { remaining: 3, pin: None, host: None }));
        let h = Some(Host { own: (1 << 24) - 1, host: 1 });
        let z3 = z2.with_zombie(Zombie { remaining: 0, pin: None, host: h });
        assert_eq!(z3.zombie(), Some(Zombie { remaining: 0, pin: None, host: h }));
        assert_eq!(MdbNode::default(), MdbNode::EMPTY);
    }
}
