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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn kernel_errors_read_as_words() {
        let e = AgentError::Kernel(ozone_abi::Error::InvalidCapability);
        assert_eq!(format!("{e}"), "kernel: no capability of the needed type in that slot");
        assert!(!format!("{}", AgentError::Kernel(ozone_abi::Error::Denied)).contains("Denied"));
    }
}
