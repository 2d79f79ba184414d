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
            AgentError::Kernel(ozone_abi::Error::ReplyLost) => {
                f.write_str("the server is gone: it was stopped or deleted before replying (ReplyLost)")
            }
            AgentError::Kernel(ozone_abi::Error::Interrupted) => {
                f.write_str("the call was interrupted by a signal on the bound notification (Interrupted)")
            }
            AgentError::Kernel(e) => write!(f, "kernel error: {e:?}"),
            AgentError::Service(e) => write!(f, "server error: {e}"),
            AgentError::BadReply => f.write_str("malformed reply"),
            AgentError::NotStarted => f.write_str("not started by Studio"),
        }
    }
}

/// Results of the SDK.
pub type Result<T, E = AgentError> = core::result::Result<T, E>;
