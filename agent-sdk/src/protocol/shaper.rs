//! The `shaper` interface: method numbers and message types.

/// Interface name.
pub const INTERFACE: &str = "shaper";
