//! Why the server refused something: [`ErrorCode`], the `code` of an `error` message, with its
//! name on the wire and whether it ends the connection. Shared by server and client; the table of
//! codes lives here alone, so a new code is one variant, one place in [`ErrorCode::ALL`] and one
//! name (the compiler and the tests below insist on all three). It knows nothing of the messages
//! around it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why the server refused something. Serialized in snake_case (`bad_credentials`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Unknown user or wrong password (the two are not told apart).
    BadCredentials,
    /// Registration of a name that exists (names are compared without regard to case).
    NameTaken,
    /// A registration of a name online on another connection (cannot happen: the name exists).
    /// Older servers sent it to a login whose name was online; a login now takes the name over
    /// ([`ErrorCode::Replaced`] to the old session).
    AlreadyOnline,
    InvalidUsername,
    InvalidPassword,
    /// A `p2p_port` of 0.
    InvalidPort,
    /// A chat command before login.
    NotLoggedIn,
    /// A login or registration after login.
    AlreadyLoggedIn,
    /// Not JSON, not an object with a `type`, or fields that do not fit the type.
    Malformed,
    UnknownType,
    InvalidUtf8,
    LineTooLong,
    /// A room message with no text.
    EmptyMessage,
    /// A room line of a kind this server does not know (from a newer client); not relayed.
    UnknownKind,
    /// The server is at its connection limit.
    ServerFull,
    /// The account could not be written to disk; nothing was registered.
    StorageFailure,
    /// No login or registration arrived within the authentication deadline.
    AuthTimeout,
    /// Too many connections from the client's address have not logged in yet.
    TooManyConnections,
    /// The client sends faster than the flood limit allows; the line was dropped.
    RateLimited,
    /// The client kept on flooding after the warnings and is disconnected.
    Flood,
    /// The client did not answer the server's `ping` in time.
    PingTimeout,
    /// The client's address has registered `--register-per-ip-hour` accounts within the hour.
    RegistrationLimit,
    /// Another online session announced the same IP address and UDP port for direct messages.
    EndpointInUse,
    /// A TLS server got no TLS handshake (the client speaks plaintext); sent in plaintext, before
    /// closing.
    TlsRequired,
    /// The login or registration could not be checked before the authentication deadline (too
    /// many password checks queued); nothing was checked. Try again in a few seconds.
    Busy,
    /// The account logged in from another connection (its password proved), which took the
    /// name over: this session ends. A client does not connect again after it.
    Replaced,
    /// The announced session key belongs to another online session, or to one that ended
    /// recently: direct messages sealed for one would be taken for the other's.
    KeyInUse,
    /// A session key announced without a valid proof that the sender holds its secret (an
    /// older client, or a key copied from the peer list).
    KeyProofInvalid,
    /// A login refused without a check: the login throttle's next free time for the account (or
    /// the address) is more than `--login-delay-max` away, held by other attempts. The message
    /// says how many seconds to wait. Nothing was checked.
    Throttled,
    /// An identity key announced without its binding (or a binding without a key), or a binding
    /// that does not verify for the announced session key and name: peers would refuse it.
    IdentityInvalid,
    /// A code this client does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code, for tests and tools that must cover them all.
    pub const ALL: [ErrorCode; 31] = [
        ErrorCode::BadCredentials,
        ErrorCode::NameTaken,
        ErrorCode::AlreadyOnline,
        ErrorCode::InvalidUsername,
        ErrorCode::InvalidPassword,
        ErrorCode::InvalidPort,
        ErrorCode::NotLoggedIn,
        ErrorCode::AlreadyLoggedIn,
        ErrorCode::Malformed,
        ErrorCode::UnknownType,
        ErrorCode::InvalidUtf8,
        ErrorCode::LineTooLong,
        ErrorCode::EmptyMessage,
        ErrorCode::ServerFull,
        ErrorCode::StorageFailure,
        ErrorCode::AuthTimeout,
        ErrorCode::TooManyConnections,
        ErrorCode::RateLimited,
        ErrorCode::Flood,
        ErrorCode::PingTimeout,
        ErrorCode::RegistrationLimit,
        ErrorCode::EndpointInUse,
        ErrorCode::TlsRequired,
        ErrorCode::Busy,
        ErrorCode::UnknownKind,
        ErrorCode::Replaced,
        ErrorCode::KeyInUse,
        ErrorCode::KeyProofInvalid,
        ErrorCode::Throttled,
        ErrorCode::IdentityInvalid,
        ErrorCode::Unknown,
    ];

    /// Whether the server closes the connection after this error. Authentication failures and
    /// broken framing end the connection; a bad message in a healthy stream does not.
    pub fn is_fatal(self) -> bool {
        !matches!(
            self,
            ErrorCode::NotLoggedIn
                | ErrorCode::AlreadyLoggedIn
                | ErrorCode::Malformed
                | ErrorCode::UnknownType
                | ErrorCode::InvalidUtf8
                | ErrorCode::EmptyMessage
                | ErrorCode::UnknownKind
                | ErrorCode::RateLimited
        )
    }

    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::AlreadyOnline => "already_online",
            ErrorCode::InvalidUsername => "invalid_username",
            ErrorCode::InvalidPassword => "invalid_password",
            ErrorCode::InvalidPort => "invalid_port",
            ErrorCode::NotLoggedIn => "not_logged_in",
            ErrorCode::AlreadyLoggedIn => "already_logged_in",
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidUtf8 => "invalid_utf8",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::EmptyMessage => "empty_message",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::StorageFailure => "storage_failure",
            ErrorCode::AuthTimeout => "auth_timeout",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Flood => "flood",
            ErrorCode::PingTimeout => "ping_timeout",
            ErrorCode::RegistrationLimit => "registration_limit",
            ErrorCode::EndpointInUse => "endpoint_in_use",
            ErrorCode::TlsRequired => "tls_required",
            ErrorCode::Busy => "busy",
            ErrorCode::UnknownKind => "unknown_kind",
            ErrorCode::Replaced => "replaced",
            ErrorCode::KeyInUse => "key_in_use",
            ErrorCode::KeyProofInvalid => "key_proof_invalid",
            ErrorCode::Throttled => "throttled",
            ErrorCode::IdentityInvalid => "identity_invalid",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_code_all_lists_every_code_once() {
        // Exhaustive: a new code does not compile here until it gets a place, and then this
        // test fails until `ALL` has it in that place.
        let place = |code| match code {
            ErrorCode::BadCredentials => 0,
            ErrorCode::NameTaken => 1,
            ErrorCode::AlreadyOnline => 2,
            ErrorCode::InvalidUsername => 3,
            ErrorCode::InvalidPassword => 4,
            ErrorCode::InvalidPort => 5,
            ErrorCode::NotLoggedIn => 6,
            ErrorCode::AlreadyLoggedIn => 7,
            ErrorCode::Malformed => 8,
            ErrorCode::UnknownType => 9,
            ErrorCode::InvalidUtf8 => 10,
            ErrorCode::LineTooLong => 11,
            ErrorCode::EmptyMessage => 12,
            ErrorCode::ServerFull => 13,
            ErrorCode::StorageFailure => 14,
            ErrorCode::AuthTimeout => 15,
            ErrorCode::TooManyConnections => 16,
            ErrorCode::RateLimited => 17,
            ErrorCode::Flood => 18,
            ErrorCode::PingTimeout => 19,
            ErrorCode::RegistrationLimit => 20,
            ErrorCode::EndpointInUse => 21,
            ErrorCode::TlsRequired => 22,
            ErrorCode::Busy => 23,
            ErrorCode::UnknownKind => 24,
            ErrorCode::Replaced => 25,
            ErrorCode::KeyInUse => 26,
            ErrorCode::KeyProofInvalid => 27,
            ErrorCode::Throttled => 28,
            ErrorCode::IdentityInvalid => 29,
            ErrorCode::Unknown => 30,
        };
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(place(code), i, "{code}");
        }
    }

    #[test]
    fn every_error_code_name_matches_serde() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
        let unknown: ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(unknown, ErrorCode::Unknown);
    }
}
