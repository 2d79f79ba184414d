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
    /// The server is gone: the capability called holds nothing any more. The server stopped
    /// (killed, exited, faulted: Studio then revokes every capability to it), or this program's
    /// use of the interface was revoked (or the slot never held a capability). A restarted
    /// server is a new incarnation that the old capability never reaches: look the interface up
    /// again ([`Client::reconnect`](crate::rpc::Client::reconnect)), which says which it was:
    /// [`ServiceError::NotRunning`] while the server is down, `Denied` once revoked.
    ServerGone,
}

/// Whether the kernel error `e` of a Call means the server is gone (see
/// [`AgentError::ServerGone`]): the slot no longer holds a capability (Studio revoked it when the
/// server stopped; a Call waiting in the endpoint's queue then runs again and finds the slot
/// empty).
///
/// This is the one place that maps kernel errors to [`AgentError::ServerGone`]: a kernel that
/// also fails a Call whose server died after receiving it (its reply is lost) adds that error
/// here.
pub fn server_gone(e: ozone_abi::Error) -> bool {
    matches!(e, ozone_abi::Error::InvalidCapability | ozone_abi::Error::FailedLookup)
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
            AgentError::Kernel(e) => write!(f, "kernel error: {e:?}"),
            AgentError::Service(e) => write!(f, "server error: {e}"),
            AgentError::BadReply => f.write_str("malformed reply"),
            AgentError::NotStarted => f.write_str("not started by Studio"),
            AgentError::ServerGone => {
                f.write_str("server gone (its capability was revoked: the server stopped, or the use was revoked; look it up again)")
            }
        }
    }
}

/// Results of the SDK.
pub type Result<T, E = AgentError> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use ozone_abi::Error;

    #[test]
    fn only_an_empty_slot_means_the_server_is_gone() {
        assert!(server_gone(Error::InvalidCapability));
        assert!(server_gone(Error::FailedLookup));
        for e in [Error::Denied, Error::InvalidArgument, Error::NotEnoughMemory, Error::IllegalOperation] {
            assert!(!server_gone(e), "{e:?}");
        }
        let text = alloc::format!("{}", AgentError::ServerGone);
        assert!(text.starts_with("server gone") && text.contains("look it up again"), "{text}");
    }
}
