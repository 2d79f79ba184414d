//! The one error type of the SDK.

use core::fmt;

use crate::protocol::ServiceError;

/// What can go wrong when a program talks to the kernel or to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// A kernel operation failed (bad capability, no rights, out of memory, ...).
    Kernel(ozone_abi::Error),
    /// A server refused the request.
    Service(ServiceError),
    /// A server's reply did not decode.
    BadReply,
    /// The program was not started by Studio (no start information).
    NotStarted,
    /// The program serves an interface its system description does not say it provides
    /// (`provides`), or under another name.
    NotProvided,
    /// The server is gone: the capability called holds nothing any more. The server stopped
    /// (killed, exited, faulted: Studio then revokes every capability to it), or this program's
    /// use of the interface was revoked (or the slot never held a capability). A restarted
    /// server is a new incarnation that the old capability never reaches: look the interface up
    /// again ([`Client::reconnect`](crate::rpc::Client::reconnect)), which says which it was:
    /// [`ServiceError::NotRunning`] while the server is down, `Denied` once revoked.
    ServerGone,
    /// The server did not answer by the deadline of a
    /// [`call_timeout`](crate::rpc::Client::call_timeout).
    TimedOut,
}

/// Whether the kernel error `e` of a Call means the server is gone (see
/// [`AgentError::ServerGone`]): the slot no longer holds a capability (Studio revoked it when the
/// server stopped; a Call waiting in the endpoint's queue then runs again and finds the slot
/// empty), or the server received the Call and was stopped before it replied (`ReplyLost`).
///
/// This is the one place that maps kernel errors to [`AgentError::ServerGone`].
pub fn server_gone(e: ozone_abi::Error) -> bool {
    matches!(e, ozone_abi::Error::InvalidCapability | ozone_abi::Error::FailedLookup | ozone_abi::Error::ReplyLost)
}

impl From<ozone_abi::Error> for AgentError {
    fn from(e: ozone_abi::Error) -> Self {
        AgentError::Kernel(e)
    }
}

impl From<ServiceError> for AgentError {
    fn from(e: ServiceError) -> Self {
        AgentError::Service(e)
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Kernel(e) => write!(f, "kernel: {}", kernel_text(*e)),
            AgentError::Service(e) => write!(f, "server error: {e}"),
            AgentError::BadReply => f.write_str("malformed reply"),
            AgentError::NotStarted => f.write_str("not started by Studio"),
            AgentError::NotProvided => {
                f.write_str("this program serves an interface its system description does not list in `provides`")
            }
            AgentError::TimedOut => f.write_str("timed out: the server did not answer in time"),
            AgentError::ServerGone => {
                f.write_str("server gone (its capability was revoked: the server stopped, or the use was revoked; look it up again)")
            }
        }
    }
}

/// Results of the SDK.
pub type Result<T, E = AgentError> = core::result::Result<T, E>;

/// What a kernel error means, in words (the codes are in `ozone_abi::Error`).
pub fn kernel_text(e: ozone_abi::Error) -> &'static str {
    use ozone_abi::Error as E;
    match e {
        E::InvalidArgument => "invalid argument",
        E::InvalidCapability => "no capability of the needed type in that slot",
        E::IllegalOperation => "not permitted with the rights the capability carries",
        E::RangeError => "out of range",
        E::AlignmentError => "misaligned",
        E::FailedLookup => "capability lookup failed",
        E::InvalidUserBuffer => "buffer not mapped or not user memory",
        E::DeleteFirst => "slot or memory already in use",
        E::NotEnoughMemory => "not enough memory",
        E::UnknownSyscall => "unknown system call",
        E::NotImplemented => "not implemented by this kernel",
        E::Denied => "outside the thread's syscall profile",
        E::ReplyLost => "the server is gone: it was stopped before replying",
        E::Interrupted => "the call was interrupted by a signal on the bound notification",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use ozone_abi::Error;

    #[test]
    fn kernel_errors_read_as_words() {
        let e = AgentError::Kernel(ozone_abi::Error::InvalidCapability);
        assert_eq!(format!("{e}"), "kernel: no capability of the needed type in that slot");
        assert!(!format!("{}", AgentError::Kernel(ozone_abi::Error::Denied)).contains("Denied"));
    }

    #[test]
    fn only_an_empty_slot_means_the_server_is_gone() {
        assert!(server_gone(Error::InvalidCapability));
        assert!(server_gone(Error::FailedLookup));
        assert!(server_gone(Error::ReplyLost));
        assert!(!server_gone(Error::Interrupted));
        for e in [Error::Denied, Error::InvalidArgument, Error::NotEnoughMemory, Error::IllegalOperation] {
            assert!(!server_gone(e), "{e:?}");
        }
        let text = alloc::format!("{}", AgentError::ServerGone);
        assert!(text.starts_with("server gone") && text.contains("look it up again"), "{text}");
    }
}
