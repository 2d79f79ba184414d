//! The system's wire protocols: how a request and its reply travel in one kernel IPC message,
//! the per-instance numbering of methods, and the message types of every system server.
//!
//! A request is one `Call`: the message label is the method's *wire label* and the message words
//! carry the request encoded with postcard (little-endian bytes, zero-padded to whole words; the
//! first four words travel in registers, the rest in the IPC buffer). The reply's label is 0 with
//! the encoded response, or a [`ServiceError`] code with no payload.
//!
//! Wire labels are per instance: [`Permutation`] maps a method number (0..64) to a label with a
//! bijection keyed by the instance's protocol key and the interface name. Studio hands every
//! program the key in its start information, and [`crate::rpc`] resolves labels at run time, so
//! a program works unchanged on every instance while a label learned on one instance means nothing
//! on another.
//!
//! A label says which interface it is for, too: its bits from [`BLOCK_SHIFT`] up are the
//! interface's *block* (32 bits from the same key and name), the same for all of the
//! interface's methods and, but by a 2⁻³² chance, different from every other interface's. A
//! server answers only labels of its own block (any other is `UnknownMethod`), and Studio, which
//! reads the kernel's record of a Call (its label, not its endpoint), can tell from the label
//! which interface a request was for: a server's word about a request of its client binds to
//! the client's requests *to that server* only (docs/studio.md, "Other servers' refusals").
//!
//! | label bits | what |
//! |---|---|
//! | 0–15 | a method's label proper ([`LABEL_BASE`] + its permuted number), or a reply's status |
//! | 16–18 | the payload's padding bytes ([`PAD_SHIFT`]) |
//! | 19 | 0 |
//! | 20–51 | the interface's block (requests; 0 in replies) |

pub mod console;
pub mod devices;
pub mod echo;
pub mod net;
pub mod root;
pub mod secmem;
pub mod shaper;
pub mod start;
pub mod store;
pub mod studio;
pub mod system;
pub mod timer;

use core::marker::PhantomData;

use serde::{Deserialize, Serialize};

/// One method of an interface: its number and, in its type, what it takes and what it answers.
///
/// Every interface's `method` module has one of these per method. [`crate::rpc::Client::call`]
/// takes one and encodes a `Req` and decodes a `Resp`; a server decodes the request and builds its
/// answer through the same descriptor ([`crate::rpc::Args::decode_for`]), so client and server
/// agree on a method's types at compile time. The descriptor is the number alone at run time
/// (zero-sized types aside, `Method` is a `u64`): calls through it cost what bare numbers cost.
///
/// A request of the wrong type does not compile:
///
/// ```compile_fail
/// use ozone_agent_sdk::protocol::echo::method;
/// use ozone_agent_sdk::rpc::Client;
/// let echo = Client::with_key(5, "echo", 0);
/// // ECHO takes a `u64`, not text.
/// let _ = echo.call(method::ECHO, &"forty-two");
/// ```
///
/// nor does expecting the wrong answer:
///
/// ```compile_fail
/// use ozone_agent_sdk::protocol::echo::method;
/// use ozone_agent_sdk::rpc::Client;
/// let echo = Client::with_key(5, "echo", 0);
/// // REVERSE answers a `String`.
/// let n: Result<u64, _> = echo.call(method::REVERSE, &"abc");
/// ```
pub struct Method<Req, Resp> {
    id: u64,
    types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Method<Req, Resp> {
    /// The method numbered `id`. Numbers at or above [`MAX_METHODS`] name no method: `methods!`
    /// refuses them at compile time, and [`crate::rpc::Client::call`] refuses a `Method` made
    /// here with one (`UnknownMethod`, nothing sent).
    ///
    /// Interfaces declare their methods with `methods!` (in `protocol`), which gives each number
    /// its request and answer types once, for client and server alike: a `Method` made here by
    /// hand carries whatever types its maker says, and nothing checks them against the server's.
    /// It stays public for the guest tests that call a method number no interface declares
    /// (`hostile-shaper` asks Studio for one it no longer has).
    pub const fn new(id: u64) -> Method<Req, Resp> {
        Method { id, types: PhantomData }
    }

    /// The method number (before the per-instance permutation): what servers match on and what
    /// Studio's authorisation table is keyed by.
    #[inline(always)]
    pub const fn id(self) -> u64 {
        self.id
    }
}

// By hand: derives would ask `Req: Clone` and `Resp: Clone` although only the number is copied.
impl<Req, Resp> Clone for Method<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for Method<Req, Resp> {}

impl<Req, Resp> PartialEq for Method<Req, Resp> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<Req, Resp> Eq for Method<Req, Resp> {}

impl<Req, Resp> core::fmt::Debug for Method<Req, Resp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "method {}", self.id)
    }
}

/// `Self` is encoded exactly as `T` is (postcard writes the same bytes), so it may be sent where
/// a `T` is expected: a `&str` for a `String`, a borrowed view of a message type for the owned
/// one. Every type is encoded as itself.
pub trait Encodes<T>: Serialize {}

impl<T: Serialize> Encodes<T> for T {}
impl Encodes<alloc::string::String> for str {}
impl Encodes<alloc::string::String> for &str {}
impl Encodes<alloc::vec::Vec<u8>> for [u8] {}
impl Encodes<alloc::vec::Vec<u8>> for &[u8] {}

/// Declares an interface's methods: a typed [`Method`] constant per method in `method`, and the
/// bare number of each in `id` (for servers that match on numbers).
///
/// The system's interfaces use it, and so does an interface in its own crate (a *protocol
/// crate* that a server and its clients share, as `cargo xtask new-agent NAME --server` makes):
///
/// ```
/// # extern crate alloc;
/// pub mod kv {
///     use alloc::string::String;
///     ozone_agent_sdk::methods! {
///         /// `String` → `Option<u64>`: the value stored under a key.
///         GET = 0: String => Option<u64>;
///         /// `(String, u64)` → `()`: store a value.
///         PUT = 1: (String, u64) => ();
///     }
/// }
/// assert_eq!(kv::method::PUT.id(), 1);
/// assert_eq!(kv::id::GET, 0);
/// ```
///
/// The macro expands to two modules, `method` and `id`, in the module it is invoked in; the
/// request and answer types are resolved in that module. A method number must be below
/// [`MAX_METHODS`] (a larger one does not compile).
#[macro_export]
macro_rules! methods {
    ($($(#[$doc:meta])* $name:ident = $id:literal : $req:ty => $resp:ty;)*) => {
        /// The interface's methods (numbers before the per-instance permutation), with the type
        /// of each one's request and answer.
        pub mod method {
            #[allow(unused_imports)]
            use super::*;
            use $crate::protocol::Method;
            $($(#[$doc])* pub const $name: Method<$req, $resp> = Method::new($id);)*

            // Checked when the interface compiles: every number below `MAX_METHODS` (a larger
            // one would have no wire label) and no number twice (two methods answered by one arm).
            const _: () = {
                let ids: &[u64] = &[$($id),*];
                let mut i = 0;
                while i < ids.len() {
                    assert!(ids[i] < $crate::protocol::MAX_METHODS, "method numbers are below MAX_METHODS (64)");
                    let mut j = i + 1;
                    while j < ids.len() {
                        assert!(ids[i] != ids[j], "two methods of the interface have the same number");
                        j += 1;
                    }
                    i += 1;
                }
            };
        }

        /// The methods' bare numbers (`method::X.id()`), to match on.
        pub mod id {
            $(#[doc = concat!("The number of `method::", stringify!($name), "`.")]
            pub const $name: u64 = super::method::$name.id();)*
        }
    };
}
#[doc(inline)]
pub use crate::methods;

/// The most payload bytes one message carries (120 message words).
pub const MAX_PAYLOAD: usize = ozone_abi::MSG_MAX_LENGTH as usize * 8;

/// Method numbers are below this.
pub const MAX_METHODS: u64 = 64;

/// Wire labels start here (labels 1..=15 are kernel fault messages).
pub const LABEL_BASE: u64 = 0x100;

/// Why a server refused a request (the reply label; 0 is success).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceError {
    /// The request did not decode (malformed postcard, wrong length).
    BadRequest = 1,
    /// The label names no method of this interface (on this instance).
    UnknownMethod = 2,
    /// The caller's profile does not allow this method (the shaper), or it lacks the privilege.
    Denied = 3,
    /// No such agent, interface, region or capability.
    NotFound = 4,
    /// The caller's memory quota is used up.
    QuotaExceeded = 5,
    /// The server itself ran out of memory or slots.
    NoMemory = 6,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 7,
    /// The object is in a state that does not allow this (already running, not running, ...).
    Busy = 8,
    /// A sealed blob failed authentication (tampered, or sealed by someone else).
    Tampered = 9,
    /// A kernel operation the server made on the caller's behalf failed.
    KernelError = 10,
    /// The server of the interface is not running (stopped, or faulted or exited and not
    /// restarted): not a transient state, it runs again only if started or restarted.
    NotRunning = 11,
}

impl ServiceError {
    pub const ALL: [ServiceError; 11] = [
        ServiceError::BadRequest,
        ServiceError::UnknownMethod,
        ServiceError::Denied,
        ServiceError::NotFound,
        ServiceError::QuotaExceeded,
        ServiceError::NoMemory,
        ServiceError::InvalidArgument,
        ServiceError::Busy,
        ServiceError::Tampered,
        ServiceError::KernelError,
        ServiceError::NotRunning,
    ];

    /// Decode a reply label (`None` for labels that are no error code).
    pub fn from_label(label: u64) -> Option<ServiceError> {
        ServiceError::ALL.iter().copied().find(|e| *e as u64 == label)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceError::BadRequest => "malformed request",
            ServiceError::UnknownMethod => "unknown method",
            ServiceError::Denied => "denied",
            ServiceError::NotFound => "not found",
            ServiceError::QuotaExceeded => "memory quota exceeded",
            ServiceError::NoMemory => "server out of memory",
            ServiceError::InvalidArgument => "invalid argument",
            ServiceError::Busy => "busy",
            ServiceError::Tampered => "authentication failed",
            ServiceError::KernelError => "kernel operation failed",
            ServiceError::NotRunning => "server not running",
        }
    }
}

impl core::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The per-instance method numbering of one interface: a bijection on `0..MAX_METHODS`,
/// `label = block << BLOCK_SHIFT | LABEL_BASE + ((method * mul + add) mod 64)` with `mul` odd
/// and `block` the interface's (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permutation {
    mul: u64,
    add: u64,
    /// The multiplicative inverse of `mul` modulo 64.
    inv: u64,
    /// The interface's block shifted into place (`block << BLOCK_SHIFT`): the bits above
    /// [`LABEL_MASK`] every label of the interface has, and no other. Never 0 (a label without
    /// a block is no interface's).
    high: u64,
}

impl Permutation {
    /// The numbering of `interface` under the instance's protocol key (0, the key of a program
    /// started without start information, numbers the methods in order; the block is the
    /// interface's all the same).
    pub fn new(key: u64, interface: &str) -> Permutation {
        let h = mix(key ^ fnv1a(interface.as_bytes()));
        let high = ((h >> 16) & BLOCK_MASK).max(1) << BLOCK_SHIFT;
        if key == 0 {
            return Permutation { mul: 1, add: 0, inv: 1, high };
        }
        let mul = (h & 63) | 1;
        let add = (h >> 8) & 63;
        // Odd numbers are their own inverse's seed: x * x^-1 = 1 mod 64, found by search (32 tries).
        let inv = (1..64).step_by(2).find(|i| (mul * i) & 63 == 1).unwrap_or(1);
        Permutation { mul, add, inv, high }
    }

    /// The interface's block: the bits from [`BLOCK_SHIFT`] up of each of its labels.
    pub const fn block(self) -> u64 {
        self.high >> BLOCK_SHIFT
    }

    /// The wire label of `method`; `None` for a number at or above [`MAX_METHODS`] (which no
    /// label stands for: method 64 never reaches method 0).
    pub fn label(self, method: u64) -> Option<u64> {
        if method >= MAX_METHODS {
            return None;
        }
        Some(self.high | (LABEL_BASE + ((method.wrapping_mul(self.mul).wrapping_add(self.add)) & 63)))
    }

    /// The method a wire label (without padding: [`split_label`]) stands for, if it is a label
    /// of this interface at all.
    pub fn method(self, label: u64) -> Option<u64> {
        // One test for the block, the padding, bit 19 and anything above the block.
        if label & !LABEL_MASK != self.high {
            return None;
        }
        let l = (label & LABEL_MASK).checked_sub(LABEL_BASE)?;
        if l >= MAX_METHODS {
            return None;
        }
        Some((l.wrapping_sub(self.add) & 63).wrapping_mul(self.inv) & 63)
    }
}

/// The interface block a wire label carries (0: none, so no interface's).
pub const fn block_of(label: u64) -> u64 {
    (label >> BLOCK_SHIFT) & BLOCK_MASK
}

/// FNV-1a, for hashing interface names into permutation keys.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64's finaliser: spreads the bits of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The label bits that carry a message's padding: how many bytes of its last word are not part
/// of the payload (0..=7). With them a payload's exact length in bytes travels in every message
/// (`8 * words - padding`) at no cost in words, and decoding can insist on it ([`decode`]).
pub const PAD_SHIFT: u64 = 16;

/// The label bits below [`PAD_SHIFT`]: a method's label proper in a request, the status (0 or a
/// [`ServiceError`]) in a reply.
pub const LABEL_MASK: u64 = (1 << PAD_SHIFT) - 1;

/// Where an interface's block starts in a label (module docs).
pub const BLOCK_SHIFT: u64 = 20;

/// An interface block's bits (above [`BLOCK_SHIFT`]): 32, so that the label fits the 52 bits a
/// message's label has.
pub const BLOCK_MASK: u64 = 0xffff_ffff;

/// The bits of a wire label: the label proper and the block, without the padding.
pub const WIRE_MASK: u64 = LABEL_MASK | BLOCK_MASK << BLOCK_SHIFT;

/// A received label without its padding bits: what names a method of an interface (and what
/// Studio matches requests by).
pub const fn wire_label(label: u64) -> u64 {
    label & WIRE_MASK
}

/// `label` carrying the padding of a `bytes`-byte payload.
#[inline(always)]
pub const fn label_with_len(label: u64, bytes: usize) -> u64 {
    label | ((bytes.wrapping_neg() & 7) as u64) << PAD_SHIFT
}

/// A received label split into its wire label (the label proper and the block, [`wire_label`])
/// and the payload length it gives for a message of `words` words: `None` if bit 19 or bits
/// above the block are set or the length is impossible (padding in an empty message).
#[inline(always)]
pub fn split_label(label: u64, words: usize) -> Option<(u64, usize)> {
    let above = label >> PAD_SHIFT;
    let pad = above & 0xf;
    // Bit 19 makes `pad` more than 7; anything above the block makes `above` too large.
    if pad > 7 || (words == 0 && pad != 0) || above >> (BLOCK_SHIFT - PAD_SHIFT) > BLOCK_MASK {
        return None;
    }
    Some((label & !(7 << PAD_SHIFT), words * 8 - pad as usize))
}

/// Encode `value` into the four register words if it fits in 32 bytes; returns them and the
/// payload's length in bytes (`len.div_ceil(8)` words are used). (The common case: most requests
/// and replies are a few bytes.)
#[inline(always)]
pub fn encode_small<T: Serialize + ?Sized>(value: &T) -> Option<([u64; 4], usize)> {
    let (small, used) = postcard::serialize_with_flavor(value, Registers { bytes: [0; 32], len: 0 }).ok()?;
    let mut mrs = [0u64; 4];
    bytes_to_words(&small, &mut mrs);
    Some((mrs, used))
}

/// postcard's output into the 32 bytes of the four register words, a byte at a time. postcard's
/// own slice output copies each field's bytes with `copy_from_slice`, a call of `memcpy` for a
/// varint's one or two bytes on every small message (through the GOT in the programs'
/// position-independent build); a byte's store is what those need. (Shifting the bytes into
/// the words as they come measured 2 instructions more a round trip.)
struct Registers {
    bytes: [u8; 32],
    len: usize,
}

impl postcard::ser_flavors::Flavor for Registers {
    type Output = ([u8; 32], usize);

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        let slot = self.bytes.get_mut(self.len).ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = byte;
        self.len += 1;
        Ok(())
    }

    #[inline(always)]
    fn finalize(self) -> postcard::Result<Self::Output> {
        Ok((self.bytes, self.len))
    }
}

/// Encode `value` into message words (through a full-size buffer: [`encode_small`] is the fast
/// way for values that fit the registers); returns the payload's length in bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T, words: &mut [u64; MAX_PAYLOAD / 8]) -> Result<usize, ServiceError> {
    let mut bytes = [0u8; MAX_PAYLOAD];
    let used = postcard::to_slice(value, &mut bytes).map_err(|_| ServiceError::InvalidArgument)?.len();
    bytes_to_words(&bytes, &mut words[..used.div_ceil(8)]);
    Ok(used)
}

fn bytes_to_words(bytes: &[u8], words: &mut [u64]) {
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        *w = u64::from_le_bytes(a);
    }
}

fn words_to_bytes(words: &[u64], bytes: &mut [u8]) {
    for (b, w) in bytes.chunks_exact_mut(8).zip(words) {
        b.copy_from_slice(&w.to_le_bytes());
    }
}

/// Decode a value from the first `len` bytes of the register words of a message (at most 32),
/// strictly ([`decode_exact`]).
#[inline(always)]
pub fn decode_small<T: serde::de::DeserializeOwned>(mrs: &[u64; 4], len: usize) -> Result<T, ServiceError> {
    if len > 32 {
        return Err(ServiceError::BadRequest);
    }
    let mut bytes = [0u8; 32];
    words_to_bytes(mrs, &mut bytes);
    decode_exact(&bytes[..len])
}

/// Decode a value from the first `len` bytes of message words, strictly ([`decode_exact`]).
pub fn decode<T: serde::de::DeserializeOwned>(words: &[u64], len: usize) -> Result<T, ServiceError> {
    if len > words.len().min(MAX_PAYLOAD / 8) * 8 {
        return Err(ServiceError::BadRequest);
    }
    if len <= 32 {
        let mut mrs = [0u64; 4];
        let n = len.div_ceil(8);
        mrs[..n].copy_from_slice(&words[..n]);
        return decode_small(&mrs, len);
    }
    let mut bytes = [0u8; MAX_PAYLOAD];
    words_to_bytes(&words[..len.div_ceil(8)], &mut bytes);
    decode_exact(&bytes[..len])
}

/// Decode a value that must be exactly `bytes`: what an encoder of the type sends, with nothing
/// left over. Anything else is `BadRequest`: a message of one type never decodes as another
/// that is a prefix of it, nor with trailing bytes ignored (the message's length in bytes
/// travels with it, [`PAD_SHIFT`]).
#[inline(always)]
pub fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ServiceError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        _ => Err(ServiceError::BadRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;

    #[test]
    fn permutations_are_bijections() {
        for key in [0u64, 1, 0xdead_beef, u64::MAX, 0x1234_5678_9abc_def0] {
            for iface in ["studio", "console", "secmem", "shaper", "echo"] {
                let p = Permutation::new(key, iface);
                let block = p.block() << BLOCK_SHIFT;
                assert_ne!(block, 0);
                let mut seen = [false; 64];
                for m in 0..MAX_METHODS {
                    let l = p.label(m).unwrap();
                    assert_eq!(block_of(l), p.block());
                    let proper = l & LABEL_MASK;
                    assert!((LABEL_BASE..LABEL_BASE + 64).contains(&proper));
                    assert!(!seen[(proper - LABEL_BASE) as usize], "label {l} twice");
                    seen[(proper - LABEL_BASE) as usize] = true;
                    assert_eq!(p.method(l), Some(m));
                    // The label proper alone (no block), or with padding bits, names nothing.
                    assert_eq!(p.method(proper), None);
                    assert_eq!(p.method(l | 1 << PAD_SHIFT), None);
                    assert_eq!(split_label(label_with_len(l, 5), 1), Some((l, 5)));
                }
                assert_eq!(p.label(MAX_METHODS), None);
                assert_eq!(p.method(block | (LABEL_BASE - 1)), None);
                assert_eq!(p.method(block | (LABEL_BASE + 64)), None);
                assert_eq!(p.method(0), None);
            }
        }
    }

    #[test]
    fn permutations_differ_between_instances_and_interfaces() {
        let a = Permutation::new(0x1111, "studio");
        let b = Permutation::new(0x2222, "studio");
        let c = Permutation::new(0x1111, "console");
        let differs = |p: Permutation, q: Permutation| (0..8).any(|m| p.label(m) != q.label(m));
        assert!(differs(a, b));
        assert!(differs(a, c));
    }

    /// No label of one interface names a method of another: every interface of the system has
    /// a block of its own (under many keys), so a label says which interface it is for.
    #[test]
    fn an_interface_s_labels_are_no_other_interface_s() {
        let interfaces = [studio::INTERFACE, console::INTERFACE, secmem::INTERFACE, shaper::INTERFACE, echo::INTERFACE];
        for key in (0..200u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let perms: Vec<Permutation> = interfaces.iter().map(|i| Permutation::new(key, i)).collect();
            for (a, p) in perms.iter().enumerate() {
                for (b, q) in perms.iter().enumerate() {
                    if a != b {
                        assert_ne!(p.block(), q.block(), "key {key:#x}: {} and {}", interfaces[a], interfaces[b]);
                        assert!((0..MAX_METHODS).all(|m| q.method(p.label(m).unwrap()).is_none()));
                    }
                }
            }
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let value = (7u32, String::from("hello, agents"), alloc::vec![1u8, 2, 3]);
        let len = encode(&value, &mut words).unwrap();
        assert_eq!(len, 19);
        let back: (u32, String, Vec<u8>) = decode(&words[..3], len).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn small_messages_decode_from_registers() {
        let (mrs, len) = encode_small(&(7u64, String::from("hi"))).unwrap();
        assert_eq!(len, 4);
        assert_eq!(decode_small::<(u64, String)>(&mrs, len).unwrap(), (7, String::from("hi")));
        assert_eq!(decode_small::<(u64, String)>(&mrs, 0), Err(ServiceError::BadRequest));
        assert_eq!(decode_small::<(u64, String)>(&mrs, 33), Err(ServiceError::BadRequest));
        assert!(encode_small(&alloc::vec![0u8; 40]).is_none(), "too big for the registers");
        // The register words hold exactly postcard's bytes, up to the 32 they have room for.
        for n in 0..=40usize {
            let value = (n as u64 * 0x1234_5678_9abc, alloc::vec![n as u8; n.saturating_sub(12)]);
            let mut bytes = [0u8; 64];
            let expected = postcard::to_slice(&value, &mut bytes).unwrap().len();
            match encode_small(&value) {
                Some((mrs, len)) => {
                    assert_eq!(len, expected);
                    let mut got = [0u8; 32];
                    words_to_bytes(&mrs, &mut got);
                    assert_eq!(got[..len], bytes[..len]);
                    assert!(got[len..].iter().all(|&b| b == 0), "nothing after the value");
                }
                None => assert!(expected > 32, "{expected} bytes fit the registers"),
            }
        }
    }

    #[test]
    fn oversized_and_malformed_payloads_are_errors() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let big = alloc::vec![0xAAu8; MAX_PAYLOAD];
        assert_eq!(encode(&big, &mut words), Err(ServiceError::InvalidArgument));
        // A string whose length prefix runs past the message.
        let bad = [0xff_ff_ff_7f_u64];
        assert_eq!(decode::<String>(&bad, 8), Err(ServiceError::BadRequest));
        // Invalid UTF-8.
        let bad = [u64::from_le_bytes([2, 0xff, 0xfe, 0, 0, 0, 0, 0])];
        assert_eq!(decode::<String>(&bad, 3), Err(ServiceError::BadRequest));
        // A length beyond the words given.
        assert_eq!(decode::<String>(&bad, 9), Err(ServiceError::BadRequest));
    }

    #[test]
    fn labels_carry_the_exact_length() {
        for len in 0..=64usize {
            let l = label_with_len(LABEL_BASE + 5, len);
            assert_eq!(split_label(l, len.div_ceil(8)), Some((LABEL_BASE + 5, len)));
        }
        // Padding in an empty message, or bits above the padding: no label at all.
        assert_eq!(split_label(LABEL_BASE | 1 << PAD_SHIFT, 0), None);
        assert_eq!(split_label(LABEL_BASE | 8 << PAD_SHIFT, 1), None);
        // Bit 19 and bits above the block are no label's; the block is kept.
        assert_eq!(split_label(LABEL_BASE | 1 << 19, 1), None);
        assert_eq!(split_label(LABEL_BASE | 1 << 52, 1), None);
        assert_eq!(split_label(LABEL_BASE | 1 << 40, 1), Some((LABEL_BASE | 1 << 40, 8)));
    }

    #[test]
    fn decoding_is_strict_about_what_follows_the_value() {
        #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
        struct Put {
            key: String,
            value: Vec<u8>,
        }
        let (mrs, len) = encode_small(&7u64).unwrap();
        assert_eq!(decode_small::<u64>(&mrs, len), Ok(7));
        // A byte more than the value (the padding read as payload) is refused.
        assert_eq!(decode_small::<u64>(&mrs, len + 1), Err(ServiceError::BadRequest));
        assert_eq!(decode_small::<u64>(&mrs, 8), Err(ServiceError::BadRequest));
        // A request of another shape: a bare string where a struct is expected (the padding
        // once decoded as an empty `value`), a struct where a string or number is expected.
        let (mrs, len) = encode_small(&"key").unwrap();
        assert_eq!(decode_small::<Put>(&mrs, len), Err(ServiceError::BadRequest));
        assert_eq!(decode_small::<Put>(&mrs, 8), Err(ServiceError::BadRequest));
        let (mrs, len) = encode_small(&Put { key: "k".into(), value: alloc::vec![1, 2, 3, 4, 5, 6, 7, 8] }).unwrap();
        assert_eq!(decode_small::<Put>(&mrs, len).map(|p| p.value.len()), Ok(8));
        assert_eq!(decode_small::<String>(&mrs, len), Err(ServiceError::BadRequest));
        assert_eq!(decode_small::<u64>(&mrs, len), Err(ServiceError::BadRequest));
        // A `u64` reply read as a string.
        let (mrs, len) = encode_small(&3u64).unwrap();
        assert_eq!(decode_small::<String>(&mrs, len), Err(ServiceError::BadRequest));
        // The empty message is exactly `()`.
        assert_eq!(decode::<()>(&[], 0), Ok(()));
        assert_eq!(decode::<()>(&[0], 8), Err(ServiceError::BadRequest));
        // The same rules beyond the registers.
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let long = "x".repeat(100);
        let len = encode(&long, &mut words).unwrap();
        assert_eq!(decode::<String>(&words, len), Ok(long.clone()));
        assert_eq!(decode::<String>(&words, len + 1), Err(ServiceError::BadRequest));
        assert_eq!(decode::<String>(&words, len - 1), Err(ServiceError::BadRequest));
    }

    #[test]
    fn method_numbers_out_of_range_have_no_label() {
        for key in [0u64, 0x5eed] {
            let p = Permutation::new(key, "kv");
            assert_eq!(p.label(MAX_METHODS), None);
            assert_eq!(p.label(64 + 3), None, "64 + 3 never aliases method 3");
            assert_eq!(p.label(u64::MAX), None);
            assert!(p.label(MAX_METHODS - 1).is_some());
        }
    }

    #[test]
    fn error_labels_round_trip() {
        for e in ServiceError::ALL {
            assert_eq!(ServiceError::from_label(e as u64), Some(e));
        }
        assert_eq!(ServiceError::from_label(0), None);
        assert_eq!(ServiceError::from_label(99), None);
    }

    // ---- attacks on `Permutation` keeping its block shifted and on `split_label`'s one test ----

    /// Attack: a label the restructured `Permutation::method` (one test `label & !LABEL_MASK !=
    /// high` for block, padding, bit 19 and bits above the block) or `split_label` (`above =
    /// label >> PAD_SHIFT`) takes differently from their former definitions, so that a message of
    /// another interface, with stray bits or an impossible length, reaches a method (or one that
    /// should is lost). Both are compared with their former definitions (two tests each), and with what
    /// they must be (`method` is `Some(m)` exactly for `label(m)`), over every padding 0..15
    /// (bit 19 included), blocks 0, 1, the interface's, its neighbours, another interface's and
    /// `BLOCK_MASK`, bits 52 and 63, labels proper 0..=15, around [`LABEL_BASE`] (−1, +0, +63,
    /// +64) and `LABEL_MASK`, message lengths 0..=WORDS and beyond, under keys 0, one and
    /// `u64::MAX`; then 400 000 random labels.
    ///
    /// HELD.
    #[test]
    fn method_and_split_label_are_what_they_were_for_every_label() {
        // The former definitions.
        let old_method = |p: Permutation, label: u64| -> Option<u64> {
            let block = p.block();
            if label >> BLOCK_SHIFT != block || label & !WIRE_MASK != 0 {
                return None;
            }
            let l = (label & LABEL_MASK).checked_sub(LABEL_BASE)?;
            if l >= MAX_METHODS {
                return None;
            }
            Some((l.wrapping_sub(p.add) & 63).wrapping_mul(p.inv) & 63)
        };
        let old_split = |label: u64, words: usize| -> Option<(u64, usize)> {
            let pad = (label >> PAD_SHIFT) & 0xf;
            if pad > 7 || (words == 0 && pad != 0) || label >> BLOCK_SHIFT > BLOCK_MASK {
                return None;
            }
            Some((wire_label(label), words * 8 - pad as usize))
        };
        let words_max = MAX_PAYLOAD / 8;
        let lengths = [0usize, 1, 2, 4, 5, words_max - 1, words_max, words_max + 1];
        let mut checked = 0u64;
        let mut check = |p: Permutation, label: u64| {
            let m = p.method(label);
            assert_eq!(m, old_method(p, label), "{label:#x}");
            // Exactly the interface's labels name a method, each its own.
            let own = (0..MAX_METHODS).find(|&k| p.label(k) == Some(label));
            assert_eq!(m, own, "{label:#x}");
            for &w in &lengths {
                let split = split_label(label, w);
                assert_eq!(split, old_split(label, w), "{label:#x}, {w} words");
                if let Some((wire, len)) = split {
                    assert_eq!(wire, wire_label(label));
                    assert!(len <= w * 8 && len + 7 >= w * 8);
                    assert_eq!(wire & !WIRE_MASK, 0, "no stray bit survives");
                    assert_eq!(label_with_len(wire, len), label, "{label:#x}: padding is the length's");
                }
            }
            checked += 1;
        };
        for key in [0u64, 1, u64::MAX] {
            let p = Permutation::new(key, "echo");
            let other = Permutation::new(key, "secmem").block();
            let blocks = [0, 1, p.block(), p.block() - 1, p.block() + 1, other, BLOCK_MASK - 1, BLOCK_MASK];
            let mut low: Vec<u64> = (0..=15).collect();
            low.extend([LABEL_BASE - 1, LABEL_BASE, LABEL_BASE + 1, LABEL_BASE + 63, LABEL_BASE + 64]);
            low.extend([LABEL_BASE + 65, LABEL_BASE | 1 << 8, LABEL_MASK - 1, LABEL_MASK]);
            low.extend((0..MAX_METHODS).map(|m| p.label(m).unwrap() & LABEL_MASK));
            for &b in &blocks {
                for pad in 0..16u64 {
                    for high in [0u64, 1 << 52, 1 << 63, 0xfff << 52] {
                        for &l in &low {
                            check(p, high | (b & BLOCK_MASK) << BLOCK_SHIFT | pad << PAD_SHIFT | l);
                        }
                    }
                }
            }
            let mut x = 0x0123_4567_89ab_cdefu64 ^ key;
            for _ in 0..400_000 / 3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Uniform labels, and labels near the interface's (its block, few stray bits).
                check(p, x);
                check(p, p.block() << BLOCK_SHIFT | (x & 0xf_ffff));
                check(p, p.label(x % MAX_METHODS).unwrap() ^ (1 << (x >> 58)));
            }
        }
        assert!(checked > 500_000);
    }
}
