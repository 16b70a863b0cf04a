//! The link to the server, the one place that speaks to it before the chat: open it (resolve,
//! connect, TLS and whom to trust, `hello`), log in or register on it, ask whether a name is
//! free, send a line, read the next message — each within its timeout. The first connection
//! ([`Client`](super::Client)), the chat loop ([`session`](super::session)) and reconnecting
//! ([`reconnect`](super::reconnect)) all use it; it uses none of them.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{ClientError, Disconnect, NotP2pchat, Unreachable};
use super::event::ClientEvent;
use super::inbound;
use super::outgoing::ServerPace;
use super::pairs::Pairs;
use super::secure::{self, Transport, TrustOutcome};
use crate::connection::{self, LineReader, StreamReader, StreamWriter};
use crate::identity::IdentityKey;
use crate::protocol::{
    decode_server, ClientMessage, Credentials, DelayReason, ErrorCode, PeerInfo, PublicKey,
    ServerMessage, MAX_SERVER_LINE_BYTES,
};
use crate::runtime::{self, TcpStream, ToSocketAddrs};
use crate::sealed::SessionKey;

/// How long to wait for the server's answer to a login (its password check may queue).
const SERVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a port may take to show it is a p2pchat server: the TLS handshake and the `hello`
/// after it. A p2pchat server sends `hello` at once, so a port that says nothing (or something
/// else) within this is not one, and is reported as such instead of after the 30 s above.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to try each of the server's addresses before giving up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Log into an existing account, or create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Login,
    Register,
}

/// What the server said of a name checked before a registration (`check_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    /// Free and valid, for now.
    Available,
    /// Taken, too like a taken name, or invalid: the server's code and words.
    Refused { code: ErrorCode, message: String },
    /// The server does not know `check_name` (an older one): it will tell at registration.
    NotSupported,
}

/// A connection to the server: the socket, and the two halves of its (maybe TLS) stream.
pub(super) struct Link {
    pub(super) tcp: TcpStream,
    pub(super) writer: StreamWriter,
    pub(super) reader: LineReader<StreamReader>,
    /// The server's `hello` challenge: a session key announced on this link is proved against
    /// it. `None` from an older server, to which the key goes without a proof.
    pub(super) key_challenge: Option<PublicKey>,
}

/// A link that has said `hello`, with what it told.
pub(super) struct Opened {
    pub(super) link: Link,
    pub(super) addr: SocketAddr,
    pub(super) trust: Option<TrustOutcome>,
    pub(super) pace: ServerPace,
}

/// What `welcome` told: the name as the server spells it, who is online, and (when sealing) the
/// new session's keys.
pub(super) struct LoggedIn {
    pub(super) username: String,
    pub(super) peers: Vec<PeerInfo>,
    pub(super) pairs: Option<Pairs>,
}

/// Resolves and connects to `server` (as typed), secures the connection as `transport` says,
/// and reads its `hello`, each within its timeout.
pub(super) async fn open(server: &str, transport: Transport) -> Result<Opened, ClientError> {
    let unreachable = |why| ClientError::unreachable(server, why);
    let not_p2pchat = |how| unreachable(Unreachable::NotP2pchat(how));
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .await
        .map_err(|e| unreachable(Unreachable::Resolve(e)))?
        .collect();
    // The last address's failure is the one told.
    let mut failure = Unreachable::NoAddress;
    let mut connected = None;
    for addr in addrs {
        match runtime::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Some(Ok(stream)) => {
                connected = Some((stream, addr));
                break;
            }
            Some(Err(e)) => failure = Unreachable::Connect(e),
            None => {
                failure = Unreachable::ConnectTimeout {
                    addr,
                    after: CONNECT_TIMEOUT,
                }
            }
        }
    }
    let Some((tcp, addr)) = connected else {
        return Err(unreachable(failure));
    };
    let _ = tcp.set_nodelay(true);
    let (stream, trust) =
        secure::establish(tcp.clone(), server, transport, GREETING_TIMEOUT).await?;
    let (_, reader, writer) = stream.into_parts();
    let mut reader = LineReader::new(reader, MAX_SERVER_LINE_BYTES);
    let hello = match next_message(&mut reader, GREETING_TIMEOUT).await {
        Ok(hello) => hello,
        Err(Disconnect::Silent { after }) => {
            return Err(not_p2pchat(NotP2pchat::NoHello { after }))
        }
        Err(Disconnect::BadMessage(_)) => return Err(not_p2pchat(NotP2pchat::NotAMessage)),
        Err(other) => return Err(other.into()),
    };
    let (pace, key_challenge) = match hello {
        ServerMessage::Hello {
            flood_burst,
            flood_rate,
            key_challenge,
            ..
        } => (
            ServerPace::announced(flood_burst, flood_rate),
            key_challenge,
        ),
        ServerMessage::Error {
            code: ErrorCode::TlsRequired,
            ..
        } => return Err(unreachable(Unreachable::TlsRequired)),
        ServerMessage::Error {
            code: code @ (ErrorCode::ServerFull | ErrorCode::TooManyConnections),
            message,
            ..
        } => return Err(unreachable(Unreachable::TurnedAway { code, message })),
        _ => return Err(not_p2pchat(NotP2pchat::NotHello)),
    };
    Ok(Opened {
        link: Link {
            tcp,
            writer,
            reader,
            key_challenge,
        },
        addr,
        trust,
        pace,
    })
}

impl Link {
    /// Sends a login or registration and waits for `welcome`; a wait the server announces
    /// (`delayed`) is passed to `emit` meanwhile.
    pub(super) async fn log_in<E: FnMut(ClientEvent) + ?Sized>(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
        p2p_port: u16,
        sealing: Option<&IdentityKey>,
        emit: &mut E,
    ) -> Result<LoggedIn, ClientError> {
        // A fresh key pair for every session (a login again after a reconnect too): nothing
        // sealed in it can be opened later with anything kept on disk, and an ended session's
        // datagrams name a key no one uses.
        let mut pairs = sealing.map(|_| Pairs::new(SessionKey::generate()));
        // Proves the key is this session's, so that no one else can announce it. A challenge
        // that gives no shared secret (a broken server) gets no proof: the server refuses the
        // key, and says why.
        let key_proof = match (&pairs, &self.key_challenge) {
            (Some(pairs), Some(challenge)) => pairs.prove(challenge, username),
            _ => None,
        };
        // The account's identity vouches for this session's key, so that peers can tell it from
        // a key the server made up.
        let (identity_key, identity_binding) = match (&pairs, sealing) {
            (Some(pairs), Some(identity)) => (
                Some(identity.public()),
                Some(identity.bind(username, &pairs.public_key())),
            ),
            _ => (None, None),
        };
        let credentials = Credentials {
            username: username.to_string(),
            password: password.to_string(),
            p2p_port,
            public_key: pairs.as_ref().map(Pairs::public_key),
            identity_key,
            identity_binding,
            key_proof,
            tell_delays: true,
        };
        let request = match mode {
            AuthMode::Login => ClientMessage::Login(credentials),
            AuthMode::Register => ClientMessage::Register(credentials),
        };
        send(&mut self.writer, &request).await?;
        loop {
            match next_message(&mut self.reader, SERVER_ANSWER_TIMEOUT).await? {
                ServerMessage::Welcome {
                    username: welcomed,
                    peers,
                } => {
                    inbound::check_welcome(username, &welcomed, &peers)
                        .map_err(Disconnect::BadMessage)?;
                    let username = welcomed;
                    if let Some(pairs) = pairs.as_mut() {
                        pairs.set_my_name(&username);
                        pairs.replace(&peers);
                    }
                    return Ok(LoggedIn {
                        username,
                        peers,
                        pairs,
                    });
                }
                ServerMessage::Error { code, message, .. } => {
                    return Err(ClientError::Refused { code, message })
                }
                ServerMessage::Shutdown { reason } => {
                    return Err(Disconnect::Shutdown { reason }.into())
                }
                ServerMessage::Delayed { seconds, reason } => delayed(seconds, reason, emit),
                _ => {} // Nothing else is expected before `welcome`; ignore it.
            }
        }
    }

    /// Asks whether a registration could take `username` (`check_name`), without sending any
    /// password; a wait the server announces (`delayed`) is passed to `emit` meanwhile.
    pub(super) async fn check_name(
        &mut self,
        username: &str,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<NameCheck, ClientError> {
        let request = ClientMessage::CheckName {
            username: username.to_string(),
            tell_delays: true,
        };
        send(&mut self.writer, &request).await?;
        loop {
            match next_message(&mut self.reader, SERVER_ANSWER_TIMEOUT).await? {
                ServerMessage::NameOk { .. } => return Ok(NameCheck::Available),
                ServerMessage::Error {
                    code: ErrorCode::UnknownType,
                    fatal: false,
                    ..
                } => return Ok(NameCheck::NotSupported),
                ServerMessage::Error {
                    code,
                    message,
                    fatal: false,
                } => return Ok(NameCheck::Refused { code, message }),
                ServerMessage::Error { code, message, .. } => {
                    return Err(ClientError::Refused { code, message })
                }
                ServerMessage::Shutdown { reason } => {
                    return Err(Disconnect::Shutdown { reason }.into())
                }
                ServerMessage::Delayed { seconds, reason } => delayed(seconds, reason, emit),
                _ => {}
            }
        }
    }
}

/// Reports the server's `delayed`. A number of seconds that is no duration (negative, not a
/// number, beyond reckoning) says nothing true, and is left out.
fn delayed<E: FnMut(ClientEvent) + ?Sized>(seconds: f64, reason: DelayReason, emit: &mut E) {
    if let Ok(wait) = Duration::try_from_secs_f64(seconds) {
        emit(ClientEvent::Delayed { wait, reason });
    }
}

/// Sends one message.
pub(super) async fn send(
    out: &mut StreamWriter,
    message: &ClientMessage,
) -> Result<(), Disconnect> {
    connection::write_message(out, message)
        .await
        .map_err(Disconnect::Lost)
}

/// Reads the next message from the server, within `timeout`.
async fn next_message(
    reader: &mut LineReader<StreamReader>,
    timeout: Duration,
) -> Result<ServerMessage, Disconnect> {
    let line = runtime::timeout(timeout, reader.next_line())
        .await
        .ok_or(Disconnect::Silent { after: timeout })?;
    match line {
        Ok(Some(line)) => decode_server(&line).map_err(Disconnect::BadMessage),
        Ok(None) => Err(Disconnect::Closed),
        Err(e) => Err(Disconnect::Unreadable(e)),
    }
}
