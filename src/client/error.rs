//! Why the client stopped ([`ClientError`]), and the exit status of `p2pchat-client` for each
//! reason ([`exit`]).

use super::config::LimitsError;
use super::event::ClientEvent;
use crate::protocol::ErrorCode;

pub mod exit {
    //! Exit statuses of `p2pchat-client` (also documented in the README and its `--help`).

    /// Left with `:q` (or end of input).
    pub const OK: i32 = 0;
    /// A local failure: bad input at a prompt, a UDP port that cannot be bound.
    pub const LOCAL: i32 = 1;
    /// Bad command-line arguments (clap's status).
    pub const USAGE: i32 = 2;
    /// The server could not be reached (name not resolved, connection refused), is full, refuses
    /// more connections from this address, or is too busy to check the login now (`busy`): each
    /// is worth trying again later, unlike a refusal.
    pub const UNREACHABLE: i32 = 3;
    /// Login or registration refused.
    pub const REFUSED: i32 = 4;
    /// The server went away, shut down, or broke the protocol.
    pub const DISCONNECTED: i32 = 5;
    /// The server is not trusted: its fingerprint changed since it was pinned, is not the one
    /// `--trust` requires, or the person said no at first contact. Nothing was sent to it.
    pub const NOT_TRUSTED: i32 = 6;
    /// Ctrl-C on an empty line at the chat prompt: interrupted, as a shell reports SIGINT
    /// (128 + 2).
    pub const INTERRUPTED: i32 = 130;
}

/// Why the client stopped. Each variant is one exit status; the text says what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached, is full, or refuses this address.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the login or registration.
    #[error("refused ({code}): {message}")]
    Refused { code: ErrorCode, message: String },
    /// The server went away, shut down, or broke the protocol.
    #[error("{0}")]
    Disconnected(String),
    /// Something on this host failed (a prompt, the UDP socket, a setting).
    #[error("{0}")]
    Local(String),
    /// The server could not be authenticated; nothing was sent to it.
    #[error("{0}")]
    NotTrusted(String),
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable(_) => exit::UNREACHABLE,
            // Nothing was checked: trying again later may work, as with a full server.
            ClientError::Refused {
                code: ErrorCode::Busy,
                ..
            } => exit::UNREACHABLE,
            ClientError::Refused { .. } => exit::REFUSED,
            ClientError::Disconnected(_) => exit::DISCONNECTED,
            ClientError::Local(_) => exit::LOCAL,
            ClientError::NotTrusted(_) => exit::NOT_TRUSTED,
        }
    }

    /// The error as an event, with the server's code when the server refused something.
    pub fn to_event(&self) -> ClientEvent {
        ClientEvent::Error {
            code: match self {
                ClientError::Refused { code, .. } => Some(*code),
                _ => None,
            },
            message: self.to_string(),
        }
    }
}

/// A setting that makes no sense is a local failure.
impl From<LimitsError> for ClientError {
    fn from(error: LimitsError) -> Self {
        ClientError::Local(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_has_its_exit_status_and_text() {
        let refused = ClientError::Refused {
            code: ErrorCode::NameTaken,
            message: "taken".into(),
        };
        assert_eq!(refused.exit_code(), exit::REFUSED);
        assert_eq!(
            refused.to_string(),
            format!("refused ({}): taken", ErrorCode::NameTaken)
        );
        assert_eq!(
            refused.to_event(),
            ClientEvent::Error {
                code: Some(ErrorCode::NameTaken),
                message: refused.to_string()
            }
        );
        let gone = ClientError::Disconnected("server: bye".into());
        assert_eq!(gone.exit_code(), exit::DISCONNECTED);
        assert_eq!(gone.to_string(), "server: bye");
        assert_eq!(gone.to_event(), ClientEvent::error("server: bye"));
        assert_eq!(
            ClientError::Unreachable("x".into()).exit_code(),
            exit::UNREACHABLE
        );
        assert_eq!(
            ClientError::NotTrusted("x".into()).exit_code(),
            exit::NOT_TRUSTED
        );
        let busy = ClientError::Refused {
            code: ErrorCode::Busy,
            message: "the server is busy; try again in a few seconds".into(),
        };
        assert_eq!(busy.exit_code(), exit::UNREACHABLE);
        let local = ClientError::from(LimitsError::ZeroBurst);
        assert_eq!(local.exit_code(), exit::LOCAL);
        assert_eq!(
            local.to_string(),
            "the direct-message burst must be at least 1"
        );
    }
}
