//! The client core: connects to the server, authenticates, then serves three inputs at once —
//! lines from the server, direct-message datagrams from peers, and commands from the person —
//! and reports everything as [`ClientEvent`]s. It knows nothing of terminals or stdin: the
//! `p2pchat-client` binary feeds it commands and prints its events.
//!
//! Direct messages go from this client's UDP socket straight to the peer's announced address;
//! the server never sees them. By default they are sealed end to end ([`crate::sealed`]) with a
//! key pair made for this session, acknowledged by the receiver and sent again until they are
//! (`in_flight`); with `--plaintext` they are today's clear JSON datagrams. Received datagrams
//! pass the checks and limits of [`direct_inbox`] before they are shown.
//!
//! The server may go away (a restart, a broken link): with reconnecting on (`session`), the
//! chat goes on — direct messages still flow, typed lines wait — while the client connects
//! again with backoff, checks the server's fingerprint against the one this session trusted,
//! and logs in again with this session's credentials (kept in memory only). Lines for the
//! server are paced to its announced flood control ([`outgoing`]), so none is dropped.
//!
//! Its parts: [`command`] (what the person types), [`config`] (the flags, and every default of
//! the client), [`secure`] (TLS and whom to trust, before anything is said) with
//! [`known_servers`] (the pinned fingerprints), [`direct_inbox`] (the checks on received
//! datagrams), `direct` (sending direct messages, and received ones as events), [`pairs`] (the
//! session key and the pairwise keys), [`in_flight`] (sealed messages awaiting an
//! acknowledgement), [`outgoing`] (lines for the server, paced), `session` (the chat loop) and
//! `reconnect` (its tries and their waits), `inbound` (what a server line means to the person),
//! [`error`] (why the client stops, exit statuses), [`event`] (what it
//! reports), [`screen`] (text from others laid out safely for a terminal),
//! [`peer_list`] (who is online), [`ui`] (the terminal: time, colour, line editor, completion,
//! history). The timeouts and buffer sizes
//! below are fixed, not settings, so they live beside the code that uses them.

pub mod command;
pub mod config;
mod direct;
pub mod direct_inbox;
pub mod error;
pub mod event;
pub mod in_flight;
mod inbound;
pub mod known_servers;
pub mod outgoing;
pub mod pairs;
pub mod peer_list;
mod reconnect;
pub mod screen;
pub mod secure;
mod session;
pub mod ui;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::Stream;

use crate::connection::{self, LineReader, StreamReader, StreamWriter};
use crate::protocol::{
    decode_server, ClientMessage, Credentials, ErrorCode, PeerInfo, ServerMessage,
    MAX_SERVER_LINE_BYTES,
};
use crate::runtime::{self, TcpStream, ToSocketAddrs, UdpSocket};
use crate::sealed::SessionKey;
use crate::tls::Fingerprint;
use outgoing::ServerPace;
use pairs::Pairs;

pub use command::Command;
pub use config::{ClientArgs, DirectLimits};
pub use direct_inbox::{DirectInbox, DirectStats};
pub use error::{exit, ClientError};
pub use event::ClientEvent;
pub use peer_list::PeerList;
pub use secure::{FirstContact, Transport, Trust, TrustOutcome};

/// How long to wait for the server's answer to a login (its password check may queue).
const SERVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a port may take to show it is a p2pchat server: the TLS handshake and the `hello`
/// after it. A p2pchat server sends `hello` at once, so a port that says nothing (or something
/// else) within this is not one, and is reported as such instead of after the 30 s above.
const GREETING_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to try each of the server's addresses before giving up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Added to "connection refused": the usual reason, and the fix.
const REFUSED_HINT: &str = "is the server running? (`just server`)";

/// Log into an existing account, or create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Login,
    Register,
}

/// Whether the client connects again when it loses the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Exit (status 5) on loss: scripts' default.
    Never,
    /// Connect again with backoff, and log in again: a terminal's default.
    WithBackoff,
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
struct Link {
    tcp: TcpStream,
    writer: StreamWriter,
    reader: LineReader<StreamReader>,
}

/// A link that has said `hello`, with what it told.
struct Opened {
    link: Link,
    addr: SocketAddr,
    trust: Option<TrustOutcome>,
    pace: ServerPace,
}

/// A connection to the server plus the UDP socket for direct messages.
pub struct Client {
    /// The server as the person gave it (`HOST:PORT`), to connect to again.
    server_name: String,
    server: SocketAddr,
    link: Link,
    trust: Option<TrustOutcome>,
    pace: ServerPace,
    udp: Arc<UdpSocket>,
    p2p_addr: SocketAddr,
    username: String,
    peers: PeerList,
    direct_limits: DirectLimits,
    /// Whether direct messages are sealed (the default) or clear (`--plaintext`).
    sealed: bool,
    /// This session's key and pairwise keys, made at authentication when sealing.
    pairs: Option<Pairs>,
    /// This session's name and password, to log in again after a reconnect. Memory only.
    credentials: Option<(String, String)>,
    reconnect: Reconnect,
    max_queued: usize,
}

impl Client {
    /// Resolves `server` (`HOST:PORT`, HOST a name or an address), connects, secures the
    /// connection as `transport` says (with TLS: the handshake and the server's fingerprint
    /// checked, before anything is read or sent), waits for the server's `hello`, and binds the
    /// UDP socket for direct messages on the address this host uses to reach the server (so
    /// peers see datagrams come from the address the server saw), port `p2p_port` (0 = any free
    /// port).
    pub async fn connect(
        server: &str,
        p2p_port: u16,
        transport: Transport,
    ) -> Result<Client, ClientError> {
        let Opened {
            link,
            addr,
            trust,
            pace,
        } = open_link(server, transport).await?;
        let local_ip = link
            .tcp
            .local_addr()
            .map_err(|e| ClientError::Local(format!("no local address: {e}")))?
            .ip();
        let udp = UdpSocket::bind(SocketAddr::new(local_ip, p2p_port))
            .await
            .map_err(|e| {
                ClientError::Local(format!(
                    "cannot bind UDP port {p2p_port} on {local_ip}: {e}"
                ))
            })?;
        let p2p_addr = udp
            .local_addr()
            .map_err(|e| ClientError::Local(format!("no UDP address: {e}")))?;
        Ok(Client {
            server_name: server.to_string(),
            server: addr,
            link,
            trust,
            pace,
            udp: Arc::new(udp),
            p2p_addr,
            username: String::new(),
            peers: PeerList::default(),
            direct_limits: DirectLimits::default(),
            sealed: true,
            pairs: None,
            credentials: None,
            reconnect: Reconnect::Never,
            max_queued: config::DEFAULT_MAX_QUEUED_LINES,
        })
    }

    pub fn server_addr(&self) -> SocketAddr {
        self.server
    }

    /// Why the server was trusted (`None` with the plaintext protocol).
    pub fn trust(&self) -> Option<&TrustOutcome> {
        self.trust.as_ref()
    }

    /// Sets the limits on received direct messages (default [`DirectLimits::default`]).
    ///
    /// # Errors
    /// A limit that makes no sense (burst 0, a negative rate, …), named in the message.
    pub fn set_direct_limits(&mut self, limits: DirectLimits) -> Result<(), ClientError> {
        limits.validate()?;
        self.direct_limits = limits;
        Ok(())
    }

    /// Speak the clear direct-message protocol (`--plaintext`: clear JSON datagrams, no key, no
    /// acknowledgements) instead of sealing. Call it before [`Client::authenticate`].
    pub fn set_plaintext(&mut self, plaintext: bool) {
        self.sealed = !plaintext;
    }

    /// Whether to connect again when the server is lost (default [`Reconnect::Never`]), and how
    /// many lines may wait for it meanwhile (and for the pace) at most.
    pub fn set_reconnect(&mut self, reconnect: Reconnect, max_queued: usize) {
        self.reconnect = reconnect;
        self.max_queued = max_queued;
    }

    /// Where this client receives direct messages.
    pub fn p2p_addr(&self) -> SocketAddr {
        self.p2p_addr
    }

    /// Asks the server whether a registration could take `username` (`check_name`), without
    /// sending any password.
    pub async fn check_name(&mut self, username: &str) -> Result<NameCheck, ClientError> {
        let request = ClientMessage::CheckName {
            username: username.to_string(),
        };
        send(&mut self.link.writer, &request).await?;
        loop {
            match next_message(&mut self.link.reader, SERVER_ANSWER_TIMEOUT).await? {
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
                    return Err(ClientError::Disconnected(format!("server: {reason}")))
                }
                _ => {}
            }
        }
    }

    /// Logs in or registers, announcing the UDP port and (unless in `--plaintext` mode) the
    /// public key of a key pair made for this session. On success reports `welcome`, and keeps
    /// the name and password in memory to log in again after a reconnect.
    pub async fn authenticate(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        let (username, peers, pairs) = log_in(
            &mut self.link,
            mode,
            username,
            password,
            self.p2p_addr.port(),
            self.sealed,
        )
        .await?;
        self.username = username.clone();
        self.peers.replace(peers.clone());
        self.pairs = pairs;
        self.credentials = Some((username.clone(), password.to_string()));
        emit(ClientEvent::Welcome { username, peers });
        Ok(())
    }

    /// Chats until the person quits (a `Quit` command or the end of `commands`) — `Ok` — or the
    /// server goes away for good — `Err` (at once with [`Reconnect::Never`]; otherwise when a
    /// login again is refused or the server's fingerprint changed). Every event is passed to
    /// `emit`.
    pub async fn run(
        self,
        commands: impl Stream<Item = Command> + Unpin,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        session::run(self, commands, emit).await
    }

    /// How to connect again: the fingerprint this session trusted, or plaintext.
    fn pinned(&self) -> Option<Fingerprint> {
        self.trust.as_ref().map(|trust| match trust {
            TrustOutcome::Required { fingerprint }
            | TrustOutcome::Known { fingerprint, .. }
            | TrustOutcome::Recorded { fingerprint, .. } => *fingerprint,
        })
    }
}

/// Resolves and connects to `server`, secures the connection, and reads its `hello`, each within
/// its timeout.
async fn open_link(server: &str, transport: Transport) -> Result<Opened, ClientError> {
    let unreachable =
        |why: String| ClientError::Unreachable(format!("cannot reach {server}: {why}"));
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .collect();
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address found");
    let mut connected = None;
    for addr in addrs {
        match runtime::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Some(Ok(stream)) => {
                connected = Some((stream, addr));
                break;
            }
            Some(Err(e)) => last_error = e,
            None => {
                last_error = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no answer from {addr} within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ),
                )
            }
        }
    }
    let (tcp, addr) = connected.ok_or_else(|| {
        if last_error.kind() == io::ErrorKind::ConnectionRefused {
            unreachable(format!("{last_error}; {REFUSED_HINT}"))
        } else {
            unreachable(last_error.to_string())
        }
    })?;
    let _ = tcp.set_nodelay(true);
    let (stream, trust) = secure::establish(tcp.clone(), server, transport, GREETING_TIMEOUT)
        .await
        .map_err(|e| match e {
            ClientError::Unreachable(why) if why.contains("did not complete a TLS handshake") => {
                ClientError::Unreachable(format!(
                    "{server} is not a p2pchat server: {why} (p2pchat servers answer at once)"
                ))
            }
            other => other,
        })?;
    let (_, reader, writer) = stream.into_parts();
    let mut reader = LineReader::new(reader, MAX_SERVER_LINE_BYTES);
    let not_p2pchat =
        |why: &str| ClientError::Unreachable(format!("{server} is not a p2pchat server: {why}"));
    let hello = match next_message(&mut reader, GREETING_TIMEOUT).await {
        Ok(hello) => hello,
        Err(ClientError::Disconnected(why)) if why.contains("did not answer") => {
            return Err(not_p2pchat(&format!(
                "it sent no hello within {} s",
                GREETING_TIMEOUT.as_secs()
            )))
        }
        Err(ClientError::Disconnected(why)) if why.contains("bad message") => {
            return Err(not_p2pchat("its first line was not a p2pchat message"))
        }
        Err(other) => return Err(other),
    };
    let pace = match hello {
        ServerMessage::Hello {
            flood_burst,
            flood_rate,
            ..
        } => ServerPace::announced(flood_burst, flood_rate),
        ServerMessage::Error {
            code: ErrorCode::TlsRequired,
            ..
        } => {
            return Err(ClientError::Unreachable(format!(
                "{server} requires TLS; connect without --plaintext"
            )))
        }
        ServerMessage::Error {
            code: ErrorCode::ServerFull | ErrorCode::TooManyConnections,
            message,
            ..
        } => return Err(ClientError::Unreachable(format!("{server}: {message}"))),
        _ => {
            return Err(ClientError::Disconnected(format!(
                "{server} is not a p2pchat server: its first message was not hello"
            )))
        }
    };
    Ok(Opened {
        link: Link {
            tcp,
            writer,
            reader,
        },
        addr,
        trust,
        pace,
    })
}

/// Sends a login or registration on `link` and waits for `welcome`: the name as the server
/// spells it, who is online, and (when sealing) the new session's keys.
async fn log_in(
    link: &mut Link,
    mode: AuthMode,
    username: &str,
    password: &str,
    p2p_port: u16,
    sealed: bool,
) -> Result<(String, Vec<PeerInfo>, Option<Pairs>), ClientError> {
    // A fresh key pair for every session (a login again after a reconnect too): nothing sealed
    // in it can be opened later with anything kept on disk, and an ended session's datagrams
    // name a key no one uses.
    let mut pairs = sealed.then(|| Pairs::new(SessionKey::generate()));
    let credentials = Credentials {
        username: username.to_string(),
        password: password.to_string(),
        p2p_port,
        public_key: pairs.as_ref().map(Pairs::public_key),
    };
    let request = match mode {
        AuthMode::Login => ClientMessage::Login(credentials),
        AuthMode::Register => ClientMessage::Register(credentials),
    };
    send(&mut link.writer, &request).await?;
    loop {
        match next_message(&mut link.reader, SERVER_ANSWER_TIMEOUT).await? {
            ServerMessage::Welcome { username, peers } => {
                if let Some(pairs) = pairs.as_mut() {
                    pairs.set_my_name(&username);
                    pairs.replace(&peers);
                }
                return Ok((username, peers, pairs));
            }
            ServerMessage::Error { code, message, .. } => {
                return Err(ClientError::Refused { code, message })
            }
            ServerMessage::Shutdown { reason } => {
                return Err(ClientError::Disconnected(format!("server: {reason}")))
            }
            _ => {} // Nothing else is expected before `welcome`; ignore it.
        }
    }
}

async fn send(out: &mut StreamWriter, message: &ClientMessage) -> Result<(), ClientError> {
    connection::write_message(out, message)
        .await
        .map_err(|e| ClientError::Disconnected(format!("lost the connection to the server: {e}")))
}

/// Reads the next message from the server, within `timeout`.
async fn next_message(
    reader: &mut LineReader<StreamReader>,
    timeout: Duration,
) -> Result<ServerMessage, ClientError> {
    let line = runtime::timeout(timeout, reader.next_line())
        .await
        .ok_or_else(|| {
            ClientError::Disconnected(format!(
                "the server did not answer within {} s",
                timeout.as_secs()
            ))
        })?;
    match line {
        Ok(Some(line)) => decode_server(&line)
            .map_err(|e| ClientError::Disconnected(format!("the server sent a bad message: {e}"))),
        Ok(None) => Err(ClientError::Disconnected(
            "the server closed the connection".into(),
        )),
        Err(e) => Err(ClientError::Disconnected(format!(
            "lost the connection to the server: {e}"
        ))),
    }
}
