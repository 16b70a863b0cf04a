//! The wire protocol: every message between client and server, and every direct-message datagram
//! between clients, as serde types, with their encoding and decoding over bytes.
//!
//! This module never touches I/O: it turns bytes into typed messages and back, so the parser can be
//! tested (and fuzzed) alone. Framing on TCP (one JSON object per line, with a maximum length) is
//! enforced by [`crate::connection::LineReader`]. docs/protocol.md describes every message.
//!
//! The codes of an `error` message are a table of their own ([`error_code`], re-exported here as
//! [`ErrorCode`]); every other type, the room line's kinds among them, is in this file.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

pub use crate::identity::{Binding, IdentityPublic};
pub use crate::sealed::{KeyProof, PublicKey};
pub use error_code::ErrorCode;

mod error_code;
pub mod file;

/// Version announced in `hello`; bumped when a message changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line (JSON text without its newline) the server accepts from a client. A longer line is
/// refused without being buffered whole, and the connection is closed.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Longest line a client accepts from the server. Larger than [`MAX_LINE_BYTES`] because a peer
/// list of many users may exceed what a client may send.
pub const MAX_SERVER_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Longest a peer's JSON entry in a `welcome`, `peers` or `joined` line can be: a name of 20
/// characters, the longest IPv6 address, port 65535, a public key, an identity key and its
/// binding (a test checks it). Sizes what a client may be owed for the peer list of a full
/// server.
pub const MAX_PEER_ENTRY_BYTES: usize = 340;

/// Largest direct-message datagram: the largest UDP payload over IPv4
/// (65,535 − 20 bytes of IPv4 header − 8 bytes of UDP header).
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

/// A user who is online, as the server saw them: the name they logged in with, the IP address of
/// their TCP connection, the UDP port they announced for direct messages, and the public key of
/// their session when their client seals direct messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub username: String,
    pub ip: IpAddr,
    pub p2p_port: u16,
    /// The session's X25519 public key (base64) as announced at login; absent for a client in
    /// `--plaintext` mode, whose direct messages are clear JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// The account's long-term identity key (Ed25519, base64), as announced at login; absent
    /// from a `--plaintext` or older client. Passed on as it came: receiving clients check it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<IdentityPublic>,
    /// The identity's signature over this session's `public_key` and the name
    /// ([`crate::identity`]): what a server cannot make for a key it invented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_binding: Option<Binding>,
}

impl PeerInfo {
    /// Where this peer receives direct messages.
    pub fn p2p_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.p2p_port)
    }
}

/// What a client sends to log in or register.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The UDP port on which this client receives direct messages.
    pub p2p_port: u16,
    /// This session's X25519 public key (base64 of 32 bytes; any other shape makes the message
    /// malformed), for sealed direct messages. Absent from a `--plaintext` client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// Proof that the sender holds `public_key`'s secret, made against the `hello`'s
    /// `key_challenge` and `username` (see [`crate::sealed::KeyChallenge`]). A key without one
    /// is refused (`key_proof_invalid`); absent with no key, and ignored by an older server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_proof: Option<KeyProof>,
    /// The account's long-term identity key (Ed25519, base64 of 32 bytes), with `public_key`;
    /// absent from a `--plaintext` or older client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_key: Option<IdentityPublic>,
    /// The identity's signature binding `public_key` to `username` ([`crate::identity`]): the
    /// server refuses one that does not verify (`identity_invalid`) and passes both on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_binding: Option<Binding>,
    /// The client understands `delayed` and wants to be told when the login throttle holds its
    /// login back. Absent (false) from older clients, which would take the unknown message for
    /// a broken server; older servers ignore the field.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tell_delays: bool,
}

/// Never prints the password, so a credentials value can't leak it into a log line.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("p2p_port", &self.p2p_port)
            .field("public_key", &self.public_key)
            .field("key_proof", &self.key_proof)
            .field("identity_key", &self.identity_key)
            .field("tell_delays", &self.tell_delays)
            .finish()
    }
}

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Log into an existing account.
    Login(Credentials),
    /// Create an account and log into it.
    Register(Credentials),
    /// A line to everyone else in the room (its fields are the [`RoomLine`]'s).
    Say(RoomLine),
    /// Ask for the current list of online users.
    List,
    /// Leave; the server closes the connection.
    Quit,
    /// Asks the server to answer `pong` (a client checking that the server is alive).
    Ping,
    /// The answer to the server's `ping`.
    Pong,
    /// Before login: would `username` be accepted for a registration (valid, not taken, not
    /// like an existing name)? Answered `name_ok` or a non-fatal `error`, without hashing
    /// anything; it costs what a registration does in the login throttle's address table.
    /// `tell_delays` as in [`Credentials`].
    CheckName {
        username: String,
        #[serde(default, skip_serializing_if = "is_false")]
        tell_delays: bool,
    },
}

impl ClientMessage {
    /// The `type` names of every client message, for telling an unknown type from a malformed one.
    pub const TYPES: [&'static str; 8] = [
        "login",
        "register",
        "say",
        "list",
        "quit",
        "ping",
        "pong",
        "check_name",
    ];
}

/// A line to the room: its text and what kind of line it is. The server checks it
/// ([`RoomLine::check`]) and relays it whole, from `say` to `message`, without looking at the
/// kind again: only clients show kinds apart. So a new kind of line is a variant of [`TextKind`]
/// here, a command in the client's table and a way to show it, and nothing in the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLine {
    pub text: String,
    #[serde(default, skip_serializing_if = "TextKind::is_plain")]
    pub kind: TextKind,
}

impl RoomLine {
    pub fn new(kind: TextKind, text: impl Into<String>) -> RoomLine {
        RoomLine {
            text: text.into(),
            kind,
        }
    }

    /// A plain line.
    pub fn say(text: impl Into<String>) -> RoomLine {
        RoomLine::new(TextKind::Say, text)
    }

    /// What the server checks before it relays the line (its length is the connection's
    /// [`MAX_LINE_BYTES`], and its pace the flood control's, both checked before it is decoded).
    ///
    /// # Errors
    /// Blank text, or a kind this server does not know (from a newer client): the one place that
    /// refuses one.
    pub fn check(&self) -> Result<(), RoomLineRefused> {
        if self.text.trim().is_empty() {
            Err(RoomLineRefused::Empty)
        } else if self.kind == TextKind::Unknown {
            Err(RoomLineRefused::UnknownKind)
        } else {
            Ok(())
        }
    }
}

/// Why the server does not relay a room line; both leave the connection as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomLineRefused {
    #[error("a message needs some text")]
    Empty,
    #[error("this server does not know that kind of line; it was not relayed")]
    UnknownKind,
}

impl RoomLineRefused {
    pub fn code(self) -> ErrorCode {
        match self {
            RoomLineRefused::Empty => ErrorCode::EmptyMessage,
            RoomLineRefused::UnknownKind => ErrorCode::UnknownKind,
        }
    }
}

/// What a room line is: said, or an action (`/me waves`, shown `* alice waves`). Absent on the
/// wire for a plain line, so old peers see the same bytes; a server or client that does not know
/// the field ignores it and shows an action as a plain line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextKind {
    #[default]
    Say,
    Action,
    /// A kind this program does not know (from a newer peer): the server refuses it
    /// (`unknown_kind`), a client shows it as a plain line. Never sent.
    #[serde(other)]
    Unknown,
}

impl TextKind {
    /// Whether the line is a plain one (the field is then left out).
    pub fn is_plain(&self) -> bool {
        *self == TextKind::Say
    }

    /// The name on the wire (and of the client's `--json` event for a line of this kind).
    pub fn name(self) -> &'static str {
        match self {
            TextKind::Say => "say",
            TextKind::Action => "action",
            TextKind::Unknown => "unknown",
        }
    }
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message on every connection: asks the client to log in or register, and says how
    /// fast it may send (its flood control's burst and lines per second), so that a client can
    /// pace itself and never have a line dropped. Both optional: an older server leaves them out.
    Hello {
        version: u32,
        auth: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flood_burst: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flood_rate: Option<f64>,
        /// A fresh X25519 public key for this connection alone, against which a client that
        /// announces a session key proves it holds its secret (`key_proof`). Absent from an
        /// older server, to which a client sends its key without a proof.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_challenge: Option<PublicKey>,
    },
    /// Login or registration succeeded; `peers` is everyone online, the new user included.
    Welcome {
        username: String,
        peers: Vec<PeerInfo>,
    },
    /// Someone logged in.
    Joined { peer: PeerInfo },
    /// Someone left, or their connection was lost.
    Left { username: String },
    /// A room line from another user, relayed as it was said (`text`, `kind`).
    Message {
        from: String,
        #[serde(flatten)]
        line: RoomLine,
    },
    /// The online users, in answer to `list`.
    Peers { peers: Vec<PeerInfo> },
    /// Something went wrong; when `fatal`, the server closes the connection after sending it.
    Error {
        code: ErrorCode,
        message: String,
        fatal: bool,
    },
    /// The server is stopping and closes the connection.
    Shutdown { reason: String },
    /// The connection has been quiet: the client must answer `pong`, or be disconnected.
    Ping,
    /// The answer to the client's `ping`.
    Pong,
    /// The answer to `check_name`: a registration may use this name (for now).
    NameOk { username: String },
    /// The login throttle holds this login, registration or name check back for `seconds`
    /// before checking it, because of `reason`; the answer follows the wait. Sent only to a
    /// client that asked for it (`tell_delays`): an older client would take an unknown message
    /// type for a broken server.
    Delayed { seconds: f64, reason: DelayReason },
}

/// Why the login throttle delays an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayReason {
    /// Recent failed logins on this account (from anywhere).
    Account,
    /// Recent failed logins, or registrations of taken names, from this address (an IPv4
    /// address or an IPv6 /64).
    Address,
    /// A reason this client does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl DelayReason {
    /// The name on the wire (and in the client's `--json` event).
    pub fn name(self) -> &'static str {
        match self {
            DelayReason::Account => "account",
            DelayReason::Address => "address",
            DelayReason::Unknown => "unknown",
        }
    }
}

/// For `skip_serializing_if`: a flag left out when false, as older peers sent it.
fn is_false(flag: &bool) -> bool {
    !*flag
}

impl ServerMessage {
    /// The `type` names of every server message.
    pub const TYPES: [&'static str; 12] = [
        "hello", "welcome", "joined", "left", "message", "peers", "error", "shutdown", "ping",
        "pong", "name_ok", "delayed",
    ];

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMessage::Error {
            code,
            message: message.into(),
            fatal: code.is_fatal(),
        }
    }
}

/// A direct message between two clients. In `--plaintext` mode it is one UDP datagram holding
/// this JSON object; by default the same JSON is the plaintext sealed by [`crate::sealed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Datagram {
    Direct(DirectMessage),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectMessage {
    /// The sender's username; the receiver checks it against the datagram's source address.
    pub from: String,
    /// Per-sender sequence number, so a program can tell messages apart.
    pub id: u64,
    pub text: String,
}

/// Why a line or datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is not valid UTF-8")]
    InvalidUtf8,
    /// Not JSON, not an object with a string `type`, or fields that do not fit the type.
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("unknown message type {0:?}")]
    UnknownType(String),
}

impl DecodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::InvalidUtf8 => ErrorCode::InvalidUtf8,
            DecodeError::Malformed(_) => ErrorCode::Malformed,
            DecodeError::UnknownType(_) => ErrorCode::UnknownType,
        }
    }
}

/// Encodes a message as one protocol line, newline included.
pub fn encode_line<T: Serialize>(message: &T) -> String {
    // Serializing these types cannot fail: every field is a string, number, address or list.
    let mut line = serde_json::to_string(message).expect("protocol messages always serialize");
    line.push('\n');
    line
}

/// Encodes a datagram; `None` when it would not fit in one UDP datagram.
pub fn encode_datagram(datagram: &Datagram) -> Option<Vec<u8>> {
    let bytes = serde_json::to_vec(datagram).expect("datagrams always serialize");
    (bytes.len() <= MAX_DATAGRAM_BYTES).then_some(bytes)
}

/// Decodes one line from a client (without its newline).
pub fn decode_client(line: &[u8]) -> Result<ClientMessage, DecodeError> {
    decode_typed(line, &ClientMessage::TYPES)
}

/// Decodes one line from the server (without its newline).
pub fn decode_server(line: &[u8]) -> Result<ServerMessage, DecodeError> {
    decode_typed(line, &ServerMessage::TYPES)
}

/// Decodes one direct-message datagram.
pub fn decode_datagram(payload: &[u8]) -> Result<Datagram, DecodeError> {
    decode_typed(payload, &["direct"])
}

/// Decodes an internally tagged JSON object whose `type` is one of `known`, telling apart bytes
/// that are not UTF-8, text that is not a typed JSON object, an unknown type, and fields that do
/// not fit a known type. Error texts never quote field values: a mistyped password must not be
/// echoed into an error message or a log.
fn decode_typed<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    known: &[&str],
) -> Result<T, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        DecodeError::Malformed(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let kind = match value.get("type") {
        Some(serde_json::Value::String(kind)) => kind.clone(),
        _ if !value.is_object() => {
            return Err(DecodeError::Malformed("not a JSON object".into()));
        }
        _ => return Err(DecodeError::Malformed("no string field \"type\"".into())),
    };
    if !known.contains(&kind.as_str()) {
        return Err(DecodeError::UnknownType(truncate(&kind, 64)));
    }
    serde_json::from_value(value).map_err(|e| {
        DecodeError::Malformed(format!(
            "fields do not fit a {kind:?} message: {}",
            describe_field_error(&e)
        ))
    })
}

/// serde's messages name the missing or unknown field but also quote wrong values
/// (`invalid type: string "hunter2"`); keep only what names fields.
fn describe_field_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("missing field") || text.starts_with("unknown field") {
        // "unknown field `x`, expected one of …": the field name comes from the sender's keys.
        text.split(',').next().unwrap_or(&text).to_string()
    } else {
        "a field has the wrong type or value".to_string()
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_peer_entry_is_longer_than_its_bound() {
        let longest = PeerInfo {
            username: "w".repeat(crate::rules::MAX_USERNAME_CHARS),
            ip: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            p2p_port: u16::MAX,
            public_key: Some(PublicKey::from_bytes([0xff; 32])),
            identity_key: Some(IdentityPublic::from_bytes([0xff; 32])),
            identity_binding: Some(Binding::from_bytes([0xff; 64])),
        };
        let entry = serde_json::to_string(&longest).unwrap();
        assert!(entry.len() <= MAX_PEER_ENTRY_BYTES, "{} bytes", entry.len());
    }

    #[test]
    fn client_messages_round_trip() {
        let messages = [
            ClientMessage::Login(Credentials {
                username: "alice".into(),
                password: "secret-pass".into(),
                p2p_port: 4000,
                public_key: None,
                identity_key: None,
                identity_binding: None,
                key_proof: None,
                tell_delays: false,
            }),
            ClientMessage::Register(Credentials {
                username: "bob".into(),
                password: "x".repeat(8),
                p2p_port: 1,
                public_key: Some(PublicKey::from_bytes([7; 32])),
                identity_key: None,
                identity_binding: None,
                key_proof: Some(KeyProof::from_bytes([8; 32])),
                tell_delays: true,
            }),
            ClientMessage::Say(RoomLine::say("hé\nllo")),
            ClientMessage::Say(RoomLine::new(TextKind::Action, "waves")),
            ClientMessage::List,
            ClientMessage::Quit,
            ClientMessage::Ping,
            ClientMessage::Pong,
            ClientMessage::CheckName {
                username: "carol".into(),
                tell_delays: false,
            },
            ClientMessage::CheckName {
                username: "dave".into(),
                tell_delays: true,
            },
        ];
        assert_eq!(messages.len(), ClientMessage::TYPES.len() + 2);
        for message in messages {
            let line = encode_line(&message);
            assert!(line.ends_with('\n'));
            assert_eq!(line.matches('\n').count(), 1, "one line per message");
            assert_eq!(decode_client(line.trim_end().as_bytes()), Ok(message));
        }
    }

    #[test]
    fn wire_format_is_the_documented_one() {
        let line = encode_line(&ClientMessage::Say(RoomLine::say("hi")));
        assert_eq!(line, "{\"type\":\"say\",\"text\":\"hi\"}\n");
        let login = decode_client(
            br#"{"type":"login","username":"a","password":"pw-pw-pw-pw","p2p_port":9}"#,
        );
        assert!(matches!(login, Ok(ClientMessage::Login(c)) if c.p2p_port == 9));
        let error = encode_line(&ServerMessage::error(ErrorCode::NameTaken, "taken"));
        assert_eq!(
            error,
            "{\"type\":\"error\",\"code\":\"name_taken\",\"message\":\"taken\",\"fatal\":true}\n"
        );
    }

    #[test]
    fn the_public_key_is_optional_base64_of_32_bytes() {
        let key = PublicKey::from_bytes([1; 32]);
        let login = format!(
            r#"{{"type":"login","username":"a","password":"pw-pw-pw-pw","p2p_port":9,"public_key":"{}"}}"#,
            key.to_base64()
        );
        assert!(matches!(
            decode_client(login.as_bytes()),
            Ok(ClientMessage::Login(c)) if c.public_key == Some(key)
        ));
        // A clear client's login has no key, and its peer entry none either.
        let clear =
            decode_client(br#"{"type":"login","username":"a","password":"pw","p2p_port":9}"#);
        assert!(matches!(clear, Ok(ClientMessage::Login(c)) if c.public_key.is_none()));
        let peer = PeerInfo {
            username: "a".into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 1,
            public_key: None,
            identity_key: None,
            identity_binding: None,
        };
        assert!(!encode_line(&ServerMessage::Joined { peer }).contains("public_key"));
        for bad in ["\"AAAA\"", "\"!!\"", "32", "null-ish"] {
            let line = format!(
                r#"{{"type":"register","username":"a","password":"pw","p2p_port":9,"public_key":{bad}}}"#
            );
            assert!(
                matches!(
                    decode_client(line.as_bytes()),
                    Err(DecodeError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_server_message_type_is_known_to_the_decoder() {
        let peer = PeerInfo {
            username: "a".into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 1,
            public_key: Some(PublicKey::from_bytes([9; 32])),
            identity_key: None,
            identity_binding: None,
        };
        let all = [
            ServerMessage::Hello {
                version: PROTOCOL_VERSION,
                auth: vec!["login".into()],
                flood_burst: Some(10),
                flood_rate: Some(2.5),
                key_challenge: Some(PublicKey::from_bytes([3; 32])),
            },
            ServerMessage::Welcome {
                username: "a".into(),
                peers: vec![peer.clone()],
            },
            ServerMessage::Joined { peer: peer.clone() },
            ServerMessage::Left {
                username: "a".into(),
            },
            ServerMessage::Message {
                from: "a".into(),
                line: RoomLine::new(TextKind::Action, "t"),
            },
            ServerMessage::Peers { peers: vec![peer] },
            ServerMessage::error(ErrorCode::Malformed, "m"),
            ServerMessage::Shutdown { reason: "r".into() },
            ServerMessage::Ping,
            ServerMessage::Pong,
            ServerMessage::NameOk {
                username: "a".into(),
            },
            ServerMessage::Delayed {
                seconds: 4.0,
                reason: DelayReason::Address,
            },
        ];
        assert_eq!(all.len(), ServerMessage::TYPES.len());
        for message in all {
            let line = encode_line(&message);
            assert_eq!(decode_server(line.trim_end().as_bytes()), Ok(message));
        }
    }

    #[test]
    fn delays_are_told_only_to_a_client_that_asks_and_read_as_documented() {
        // An older client's login and name check: no flag, so no `delayed` for it.
        let old = decode_client(br#"{"type":"login","username":"a","password":"pw","p2p_port":9}"#);
        assert!(matches!(old, Ok(ClientMessage::Login(c)) if !c.tell_delays));
        let old = decode_client(br#"{"type":"check_name","username":"a"}"#);
        assert!(matches!(
            old,
            Ok(ClientMessage::CheckName {
                tell_delays: false,
                ..
            })
        ));
        let asks = decode_client(br#"{"type":"check_name","username":"a","tell_delays":true}"#);
        assert!(matches!(
            asks,
            Ok(ClientMessage::CheckName {
                tell_delays: true,
                ..
            })
        ));
        // The flag is left out when false: an older client's bytes, unchanged.
        let said = encode_line(&ClientMessage::CheckName {
            username: "a".into(),
            tell_delays: false,
        });
        assert_eq!(said, "{\"type\":\"check_name\",\"username\":\"a\"}\n");
        let delayed = encode_line(&ServerMessage::Delayed {
            seconds: 4.0,
            reason: DelayReason::Address,
        });
        assert_eq!(
            delayed,
            "{\"type\":\"delayed\",\"seconds\":4.0,\"reason\":\"address\"}\n"
        );
        let future = decode_server(br#"{"type":"delayed","seconds":1.5,"reason":"moon"}"#);
        assert_eq!(
            future,
            Ok(ServerMessage::Delayed {
                seconds: 1.5,
                reason: DelayReason::Unknown
            })
        );
        for reason in [
            DelayReason::Account,
            DelayReason::Address,
            DelayReason::Unknown,
        ] {
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.name())
            );
        }
    }

    #[test]
    fn new_fields_are_optional_both_ways() {
        // An older server's hello and an older client's say, without the new fields.
        let hello = decode_server(br#"{"type":"hello","version":1,"auth":["login"]}"#);
        assert!(matches!(
            hello,
            Ok(ServerMessage::Hello {
                flood_burst: None,
                flood_rate: None,
                key_challenge: None,
                ..
            })
        ));
        let say = decode_client(br#"{"type":"say","text":"hi"}"#);
        assert_eq!(say, Ok(ClientMessage::Say(RoomLine::say("hi"))));
        // An action is marked; a kind from the future is kept apart, to be refused by a server
        // and shown plain by a client.
        let me = encode_line(&ClientMessage::Say(RoomLine::new(
            TextKind::Action,
            "waves",
        )));
        assert_eq!(
            me,
            "{\"type\":\"say\",\"text\":\"waves\",\"kind\":\"action\"}\n"
        );
        let relayed = encode_line(&ServerMessage::Message {
            from: "a".into(),
            line: RoomLine::new(TextKind::Action, "waves"),
        });
        assert_eq!(
            relayed,
            "{\"type\":\"message\",\"from\":\"a\",\"text\":\"waves\",\"kind\":\"action\"}\n"
        );
        let future = decode_server(br#"{"type":"message","from":"a","text":"t","kind":"sing"}"#);
        assert_eq!(
            future,
            Ok(ServerMessage::Message {
                from: "a".into(),
                line: RoomLine::new(TextKind::Unknown, "t"),
            })
        );
        let future = decode_client(br#"{"type":"say","text":"t","kind":"sing"}"#);
        assert_eq!(
            future,
            Ok(ClientMessage::Say(RoomLine::new(TextKind::Unknown, "t")))
        );
    }

    #[test]
    fn a_room_line_is_checked_in_one_place() {
        assert_eq!(RoomLine::say("hi").check(), Ok(()));
        assert_eq!(RoomLine::new(TextKind::Action, "waves").check(), Ok(()));
        assert_eq!(RoomLine::say(" \n\t").check(), Err(RoomLineRefused::Empty));
        let future = RoomLine::new(TextKind::Unknown, "sings");
        assert_eq!(future.check(), Err(RoomLineRefused::UnknownKind));
        assert_eq!(RoomLineRefused::UnknownKind.code(), ErrorCode::UnknownKind);
        assert!(!ErrorCode::UnknownKind.is_fatal());
        assert_eq!(RoomLineRefused::Empty.code(), ErrorCode::EmptyMessage);
    }

    #[test]
    fn every_kind_is_named_as_serde_names_it() {
        for kind in [TextKind::Say, TextKind::Action, TextKind::Unknown] {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
    }

    #[test]
    fn bad_lines_are_told_apart() {
        assert_eq!(decode_client(b"\xff\xfe"), Err(DecodeError::InvalidUtf8));
        assert!(matches!(
            decode_client(b"hello"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_client(b"[1,2]"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_client(b"{\"text\":1}"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode_client(b"{\"type\":\"dance\"}"),
            Err(DecodeError::UnknownType("dance".into()))
        );
        assert!(matches!(
            decode_client(b"{\"type\":\"say\"}"),
            Err(DecodeError::Malformed(m)) if m.contains("missing field `text`")
        ));
    }

    #[test]
    fn errors_never_quote_a_password() {
        let err = decode_client(
            br#"{"type":"login","username":"a","password":["hunter2-secret"],"p2p_port":1}"#,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let creds = Credentials {
            username: "a".into(),
            password: "hunter2-secret".into(),
            p2p_port: 1,
            public_key: None,
            identity_key: None,
            identity_binding: None,
            key_proof: None,
            tell_delays: false,
        };
        assert!(!format!("{creds:?}").contains("hunter2"));
    }

    #[test]
    fn datagrams_round_trip_and_are_capped() {
        let dm = Datagram::Direct(DirectMessage {
            from: "alice".into(),
            id: 7,
            text: "psst".into(),
        });
        let bytes = encode_datagram(&dm).unwrap();
        assert_eq!(decode_datagram(&bytes), Ok(dm));
        let huge = Datagram::Direct(DirectMessage {
            from: "alice".into(),
            id: 1,
            text: "x".repeat(MAX_DATAGRAM_BYTES),
        });
        assert_eq!(encode_datagram(&huge), None);
        assert!(decode_datagram(b"{\"type\":\"say\",\"text\":\"x\"}").is_err());
    }
}
