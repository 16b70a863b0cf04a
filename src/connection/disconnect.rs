//! Why the server ends a connection: one [`Disconnect`] per way a session can end, turned into
//! text only where it is logged.
//!
//! The texts are the server's log vocabulary ("… disconnected: send queue exceeded"); they are
//! never sent to the client, which is told why in a protocol `error` or `shutdown` message.

use std::fmt;
use std::time::Duration;

use super::ReadError;
use crate::protocol::ErrorCode;

/// Why a connection ended. `Display` gives the reason as the log states it.
#[derive(Debug, thiserror::Error)]
pub enum Disconnect {
    /// The client closed the connection between two lines.
    #[error("closed by the client")]
    ClosedByClient,
    /// The client sent `quit`.
    #[error("quit")]
    Quit,
    /// No login or registration within the allowed time.
    #[error("no login within {} s", .0.as_secs_f64())]
    AuthTimeout(Duration),
    /// No answer to a `ping` within the allowed time.
    #[error("ping timeout ({} s)", .0.as_secs_f64())]
    PingTimeout(Duration),
    /// The client went on sending too fast after the warnings.
    #[error("flooding")]
    Flood,
    /// No complete line could be read: too long ([`ReadError::TooLong`]), cut off, or the
    /// socket failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The client does not read what it is sent: its send queue is full.
    #[error("send queue exceeded")]
    SendQueueExceeded,
    /// The client does not read: its socket accepted nothing for this long while it was owed
    /// bytes.
    #[error("send stalled (nothing written for {} s)", .0.as_secs_f64())]
    SendStalled(Duration),
    /// The server is stopping.
    #[error("server shutting down")]
    ServerShuttingDown,
    /// A TLS server got no TLS handshake: the client sent nothing within the grace, or a first
    /// byte that does not start one. It was told `tls_required`.
    #[error("no TLS handshake (told tls_required)")]
    TlsRequired,
    /// The TLS handshake failed (the client refused the certificate, or spoke garbage).
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
    /// The TLS handshake did not complete within its deadline (`--tls-handshake-timeout`, never
    /// later than the login deadline).
    #[error("no TLS handshake within {} s", .0.as_secs_f64())]
    HandshakeTimeout(Duration),
    /// A login from another connection proved the password and took the name over; the client
    /// was told `replaced`.
    #[error("replaced by a login from another connection")]
    Replaced,
    /// A login or registration was refused, which ends the connection.
    #[error("{action} refused ({code})")]
    Refused { action: AuthAction, code: ErrorCode },
}

/// What a client asked to be let in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAction {
    Login,
    Registration,
}

impl fmt::Display for AuthAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthAction::Login => "login",
            AuthAction::Registration => "registration",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_log_has_always_said_them() {
        let cases = [
            (Disconnect::ClosedByClient, "closed by the client"),
            (Disconnect::Quit, "quit"),
            (
                Disconnect::AuthTimeout(Duration::from_secs(20)),
                "no login within 20 s",
            ),
            (
                Disconnect::AuthTimeout(Duration::from_millis(1500)),
                "no login within 1.5 s",
            ),
            (
                Disconnect::PingTimeout(Duration::from_secs(30)),
                "ping timeout (30 s)",
            ),
            (Disconnect::Flood, "flooding"),
            (
                Disconnect::Read(ReadError::TooLong { max: 65536 }),
                "line longer than 65536 bytes",
            ),
            (
                Disconnect::Read(ReadError::Truncated),
                "connection closed in the middle of a line",
            ),
            (Disconnect::SendQueueExceeded, "send queue exceeded"),
            (
                Disconnect::SendStalled(Duration::from_secs(30)),
                "send stalled (nothing written for 30 s)",
            ),
            (
                Disconnect::TlsRequired,
                "no TLS handshake (told tls_required)",
            ),
            (
                Disconnect::HandshakeTimeout(Duration::from_secs(20)),
                "no TLS handshake within 20 s",
            ),
            (Disconnect::ServerShuttingDown, "server shutting down"),
            (
                Disconnect::Refused {
                    action: AuthAction::Registration,
                    code: ErrorCode::NameTaken,
                },
                "registration refused (name_taken)",
            ),
            (
                Disconnect::Refused {
                    action: AuthAction::Login,
                    code: ErrorCode::BadCredentials,
                },
                "login refused (bad_credentials)",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }
}
