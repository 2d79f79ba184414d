//! The `secmem` interface: method numbers and message types.

/// Interface name.
pub const INTERFACE: &str = "secmem";
