//! The root task ↔ Studio protocol: the one channel between the program the kernel starts and
//! the capability authority it builds.
//!
//! The root task builds Studio with an endpoint capability to itself in Studio's slot
//! [`STUDIO_ROOT_EP`], badged [`STUDIO_BADGE`]; Studio Calls it with a bare label (no payload
//! beyond the message registers named here). The root task answers only messages with that
//! badge, and ignores (logs) any other label.

/// The slot of Studio's CNode that holds its endpoint to the root task.
pub const STUDIO_ROOT_EP: u64 = 9;

/// The badge of Studio's endpoint to the root task.
pub const STUDIO_BADGE: u64 = 0x5710;

/// Label: Studio is up (MR0: the address Studio runs at, for the log); answered with label 0.
pub const HELLO: u64 = 1;

/// Label: end the system (MR0: the exit status); the root task powers the machine off.
pub const SHUTDOWN: u64 = 2;
