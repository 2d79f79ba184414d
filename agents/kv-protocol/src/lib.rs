//! The `kv` interface: its name, message types and methods, shared by the `kv` server
//! and its clients (they depend on this crate), so both sides agree on every method's types at
//! compile time.
//!
//! A small key-value store to start from: change the methods to your interface's. A method's
//! number is below 64 and never reused for another meaning.
#![no_std]

extern crate alloc;

use alloc::string::String;
use serde::{Deserialize, Serialize};

/// The interface's name: the `provides` of the server's `[[program]]` block, and what clients
/// look up.
pub const INTERFACE: &str = "kv";

/// The longest key, in bytes.
pub const MAX_KEY: usize = 64;

/// The most keys the server keeps.
pub const MAX_KEYS: usize = 256;

/// The request of `PUT`: a value to store under a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    pub key: String,
    pub value: u64,
}

ozone_agent_sdk::methods! {
    /// `Put` → `Option<u64>`: store the value, answer the one it replaces. `InvalidArgument` for a
    /// key longer than [`MAX_KEY`], `QuotaExceeded` for a new key beyond [`MAX_KEYS`].
    PUT = 0: Put => Option<u64>;
    /// `String` key → `Option<u64>`: the value stored under it.
    GET = 1: String => Option<u64>;
}
