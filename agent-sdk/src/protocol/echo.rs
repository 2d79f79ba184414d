//! The `echo` interface of the example echo server (`agent-sdk/examples/echo-server.rs`): the
//! smallest useful protocol, and the one `sdk_roundtrip` measures.

use alloc::string::String;

/// Interface name.
pub const INTERFACE: &str = "echo";

super::methods! {
    /// `u64` → `u64`: the same number back.
    ECHO = 0: u64 => u64;
    /// `String` → `String`: the text reversed (by characters).
    REVERSE = 1: String => String;
    /// `()` → `u64`: how many requests the server has answered.
    COUNT = 2: () => u64;
}

/// Reverse `s` by characters (the server's work for `REVERSE`).
pub fn reverse(s: &str) -> String {
    s.chars().rev().collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reverses_by_characters() {
        assert_eq!(super::reverse("ozone é"), "é enozo");
        assert_eq!(super::reverse(""), "");
    }
}
