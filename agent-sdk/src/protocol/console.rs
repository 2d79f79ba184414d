//! The `console` interface of the serial console server (`servers/console`): programs write text
//! to the serial line through it, buffered and interrupt-driven, instead of the kernel's polled
//! debug channel.
//!
//! The server owns COM1 (its I/O ports and IRQ 4) and runs the system shell on it; what clients
//! write appears on the same line as the shell's output, in the order the requests arrive.
//! Output is queued in the server's transmit ring and drained to the UART as it accepts bytes;
//! when the ring is full the server drains it synchronously (polling the UART) before it takes
//! more, so a `WRITE` returns once all its bytes are queued — a slow line slows writers down
//! instead of losing text. Only a UART that accepts nothing for a long time (no line at all)
//! makes the server drop bytes; it counts them.
//!
//! `\n` is sent as `\r\n`. A typed client is `ozone_agent_sdk::console_client`.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Interface name.
pub const INTERFACE: &str = "console";

/// Method numbers (before the per-instance permutation).
pub mod method {
    /// [`Write`](super::Write) → `()`: queue the bytes for the serial line. `InvalidArgument` if
    /// there are more than [`MAX_WRITE`](super::MAX_WRITE) of them.
    pub const WRITE: u64 = 0;
}

/// The most bytes one `WRITE` carries: one message's payload less postcard's length prefix.
pub const MAX_WRITE: usize = super::MAX_PAYLOAD - 4;

/// Text (any bytes; UTF-8 expected) for the serial line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_PAYLOAD, decode, encode};

    #[test]
    fn the_largest_write_fits_one_message() {
        let mut words = [0u64; MAX_PAYLOAD / 8];
        let w = Write { bytes: alloc::vec![0xa5; MAX_WRITE] };
        let n = encode(&w, &mut words).unwrap();
        assert_eq!(decode::<Write>(&words[..n]).unwrap(), w);
        let too_big = Write { bytes: alloc::vec![0; MAX_PAYLOAD] };
        assert!(encode(&too_big, &mut words).is_err());
    }
}
