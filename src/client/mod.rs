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
//! Its parts: [`command`] (what the person types), [`config`] (the flags, and every default of
//! the client), [`secure`] (TLS and whom to trust, before anything is said) with
//! [`known_servers`] (the pinned fingerprints), [`direct_inbox`] (the checks on received
//! datagrams), `direct` (sending direct messages, and received ones as events), [`pairs`] (the
//! session key and the pairwise keys), [`in_flight`] (sealed messages awaiting an
//! acknowledgement), [`error`] (why the client stops, exit statuses), [`event`] (what it
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
pub mod known_servers;
pub mod pairs;
pub mod peer_list;
pub mod screen;
pub mod secure;
pub mod ui;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, Stream, StreamExt};

use crate::connection::{self, LineReader, ReadError, StreamReader, StreamWriter};
use crate::protocol::{
    decode_server, encode_line, ClientMessage, Credentials, ErrorCode, ServerMessage,
    MAX_LINE_BYTES, MAX_SERVER_LINE_BYTES,
};
use crate::runtime::{self, TcpStream, ToSocketAddrs, UdpSocket};
use crate::sealed::SessionKey;
use direct::{summary_event, Courier};
use pairs::Pairs;

pub use command::Command;
pub use config::{ClientArgs, DirectLimits};
pub use direct_inbox::{DirectInbox, DirectStats};
pub use error::{exit, ClientError};
pub use event::ClientEvent;
pub use peer_list::PeerList;
pub use secure::{FirstContact, Transport, Trust, TrustOutcome};

/// How long to wait for the server's first message (and for the TLS handshake before it), and
/// for its answer to a login.
const SERVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// After `quit`, how long to wait for the server to close its side, so that everything sent
/// before `quit` is known to have been read.
const QUIT_DRAIN: Duration = Duration::from_secs(2);

/// How long to try each of the server's addresses before giving up on it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Receive buffer for datagrams: any UDP payload fits, so an oversized one is seen whole and
/// refused rather than silently cut.
const DATAGRAM_BUFFER: usize = 65_536;

/// How often the chat loop wakes up with nothing to do, to give out a due summary of dropped
/// datagrams even when no more arrive.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// Log into an existing account, or create one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Login,
    Register,
}

/// A connection to the server plus the UDP socket for direct messages.
pub struct Client {
    server: SocketAddr,
    tcp: TcpStream,
    writer: StreamWriter,
    reader: LineReader<StreamReader>,
    trust: Option<TrustOutcome>,
    udp: Arc<UdpSocket>,
    p2p_addr: SocketAddr,
    username: String,
    peers: PeerList,
    direct_limits: DirectLimits,
    /// Whether direct messages are sealed (the default) or clear (`--plaintext`).
    sealed: bool,
    /// This session's key and pairwise keys, made at authentication when sealing.
    pairs: Option<Pairs>,
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
        let (tcp, server_addr) = connected.ok_or_else(|| unreachable(last_error.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (stream, trust) =
            secure::establish(tcp.clone(), server, transport, SERVER_ANSWER_TIMEOUT).await?;
        let (_, reader, writer) = stream.into_parts();
        let mut reader = LineReader::new(reader, MAX_SERVER_LINE_BYTES);
        match next_message(&mut reader).await? {
            ServerMessage::Hello { .. } => {}
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
        }
        let local_ip = tcp
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
            server: server_addr,
            tcp,
            writer,
            reader,
            trust,
            udp: Arc::new(udp),
            p2p_addr,
            username: String::new(),
            peers: PeerList::default(),
            direct_limits: DirectLimits::default(),
            sealed: true,
            pairs: None,
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

    /// Where this client receives direct messages.
    pub fn p2p_addr(&self) -> SocketAddr {
        self.p2p_addr
    }

    /// Logs in or registers, announcing the UDP port and (unless in `--plaintext` mode) the
    /// public key of a key pair made for this session. On success reports `welcome`.
    pub async fn authenticate(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        // A fresh key pair for every session: nothing sealed in it can be opened later with
        // anything kept on disk, and an ended session's datagrams name a key no one uses.
        let pairs = self.sealed.then(|| Pairs::new(SessionKey::generate()));
        let credentials = Credentials {
            username: username.to_string(),
            password: password.to_string(),
            p2p_port: self.p2p_addr.port(),
            public_key: pairs.as_ref().map(Pairs::public_key),
        };
        let request = match mode {
            AuthMode::Login => ClientMessage::Login(credentials),
            AuthMode::Register => ClientMessage::Register(credentials),
        };
        self.send(&request).await?;
        loop {
            match next_message(&mut self.reader).await? {
                ServerMessage::Welcome { username, peers } => {
                    self.username = username.clone();
                    self.peers.replace(peers.clone());
                    self.pairs = pairs.map(|mut pairs| {
                        pairs.set_my_name(&username);
                        pairs.replace(&peers);
                        pairs
                    });
                    emit(ClientEvent::Welcome { username, peers });
                    return Ok(());
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

    /// Chats until the person quits (a `Quit` command or the end of `commands`) — `Ok` — or the
    /// server goes away — `Err`. Every event is passed to `emit`.
    pub async fn run(
        self,
        commands: impl Stream<Item = String> + Unpin,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        let Client {
            reader,
            udp,
            tcp,
            mut writer,
            mut peers,
            username,
            direct_limits,
            pairs,
            ..
        } = self;
        let mut inbox = DirectInbox::new(direct_limits);
        let (mut courier, timers) = Courier::new(udp.clone(), pairs);
        let from_server = stream::unfold(reader, |mut reader| async move {
            let line = reader.next_line().await;
            Some((Input::Server(line), reader))
        });
        let from_peers = stream::unfold(udp.clone(), |udp| async move {
            let mut buf = vec![0; DATAGRAM_BUFFER];
            let received = udp.recv_from(&mut buf).await.map(|(n, source)| {
                buf.truncate(n);
                (buf, source)
            });
            Some((Input::Datagram(received), udp))
        });
        let from_person = commands
            .map(Input::Command)
            .chain(stream::iter([Input::EndOfCommands]));
        let from_timers = timers.map(Input::Retransmit);
        let ticks = stream::unfold((), |()| async {
            runtime::sleep(HOUSEKEEPING_TICK).await;
            Some((Input::Tick, ()))
        });
        // Pinned on the heap: the unfold streams hold futures that must not move.
        let mut inputs = Box::pin(stream::select(
            stream::select(from_server, stream::select(ticks, from_timers)),
            stream::select(from_peers, from_person),
        ));

        while let Some(input) = inputs.next().await {
            match input {
                Input::Server(Ok(Some(line))) => {
                    let message = decode_server(&line).map_err(|e| {
                        ClientError::Disconnected(format!("the server sent a bad message: {e}"))
                    })?;
                    if message == ServerMessage::Ping {
                        send(&mut writer, &ClientMessage::Pong).await?;
                        continue;
                    }
                    courier.track_sessions(&mut inbox, &message);
                    on_server_message(message, &mut peers, emit)?;
                }
                Input::Server(Ok(None)) => {
                    return Err(ClientError::Disconnected(
                        "the server closed the connection".into(),
                    ))
                }
                Input::Server(Err(e)) => {
                    return Err(ClientError::Disconnected(format!(
                        "lost the connection to the server: {e}"
                    )))
                }
                Input::Datagram(Ok((payload, source))) => {
                    let now = Instant::now();
                    if let Some(event) = courier
                        .receive(&mut inbox, &payload, source, &peers, now)
                        .await
                    {
                        emit(event);
                    }
                    if let Some(summary) = inbox.summary(now) {
                        emit(summary_event(summary));
                    }
                }
                Input::Retransmit(fired) => {
                    if let Some(event) = courier.timer_fired(fired, &peers).await {
                        emit(event);
                    }
                }
                Input::Tick => {
                    if let Some(summary) = inbox.summary(Instant::now()) {
                        emit(summary_event(summary));
                    }
                }
                Input::Datagram(Err(e)) => {
                    emit(ClientEvent::Warning {
                        message: format!("receiving a direct message failed: {e}"),
                    });
                }
                Input::Command(line) => match command::parse(&line) {
                    Ok(None) => {}
                    Ok(Some(Command::Quit)) => break,
                    Ok(Some(Command::Help)) => emit(ClientEvent::Help {
                        text: command::HELP.into(),
                    }),
                    Ok(Some(Command::Peers)) => send(&mut writer, &ClientMessage::List).await?,
                    Ok(Some(Command::Stats)) => emit(ClientEvent::DirectStats(inbox.stats())),
                    // The terminal clears its screen itself; piped input has none.
                    Ok(Some(Command::Clear)) => {}
                    Ok(Some(Command::Say(text))) => {
                        let message = ClientMessage::Say { text };
                        if encode_line(&message).len() > MAX_LINE_BYTES {
                            emit(ClientEvent::error(format!(
                                "message too long: the server takes lines of at most {MAX_LINE_BYTES} bytes"
                            )));
                        } else {
                            send(&mut writer, &message).await?;
                        }
                    }
                    Ok(Some(Command::Direct { to, text })) => {
                        emit(courier.send(&peers, &username, to, text).await);
                    }
                    Err(wrong) => emit(ClientEvent::error(wrong.to_string())),
                },
                Input::EndOfCommands => break,
            }
        }
        quit(tcp, writer, inputs).await;
        Ok(())
    }

    async fn send(&mut self, message: &ClientMessage) -> Result<(), ClientError> {
        send(&mut self.writer, message).await
    }
}

/// Everything the chat loop waits for.
enum Input {
    Server(Result<Option<Vec<u8>>, ReadError>),
    Datagram(io::Result<(Vec<u8>, SocketAddr)>),
    Command(String),
    EndOfCommands,
    /// Time passed (every [`HOUSEKEEPING_TICK`]).
    Tick,
    /// A sealed direct message's retransmission timer fired.
    Retransmit(direct::TimerFired),
}

async fn send(out: &mut StreamWriter, message: &ClientMessage) -> Result<(), ClientError> {
    connection::write_message(out, message)
        .await
        .map_err(|e| ClientError::Disconnected(format!("lost the connection to the server: {e}")))
}

/// Says `quit`, closes the sending side (with TLS, `close_notify` first), and reads what the
/// server still sends until it closes (all bounded by [`QUIT_DRAIN`]): closing with unread data
/// would reset the connection and could destroy the last messages sent.
async fn quit(
    tcp: TcpStream,
    mut out: StreamWriter,
    mut inputs: impl Stream<Item = Input> + Unpin,
) {
    let say_quit = async move {
        let _ = send(&mut out, &ClientMessage::Quit).await;
        let _ = futures::io::AsyncWriteExt::close(&mut out).await;
    };
    let until_closed = async move {
        while let Some(input) = inputs.next().await {
            if matches!(input, Input::Server(Ok(None) | Err(_))) {
                break;
            }
        }
    };
    let close = connection::close_gracefully(&tcp, QUIT_DRAIN, say_quit, until_closed);
    let _ = runtime::timeout(QUIT_DRAIN, close).await;
}

/// Reads the next message from the server, with a deadline.
async fn next_message(reader: &mut LineReader<StreamReader>) -> Result<ServerMessage, ClientError> {
    let line = runtime::timeout(SERVER_ANSWER_TIMEOUT, reader.next_line())
        .await
        .ok_or_else(|| {
            ClientError::Disconnected(format!(
                "the server did not answer within {} s",
                SERVER_ANSWER_TIMEOUT.as_secs()
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

/// Applies one server message to the peer list and reports it.
fn on_server_message(
    message: ServerMessage,
    peers: &mut PeerList,
    emit: &mut dyn FnMut(ClientEvent),
) -> Result<(), ClientError> {
    match message {
        ServerMessage::Joined { peer } => {
            peers.insert(peer.clone());
            emit(ClientEvent::Joined { peer });
            emit(ClientEvent::Peers {
                peers: peers.to_vec(),
            });
        }
        ServerMessage::Left { username } => {
            peers.remove(&username);
            emit(ClientEvent::Left { username });
            emit(ClientEvent::Peers {
                peers: peers.to_vec(),
            });
        }
        ServerMessage::Peers { peers: list } | ServerMessage::Welcome { peers: list, .. } => {
            peers.replace(list);
            emit(ClientEvent::Peers {
                peers: peers.to_vec(),
            });
        }
        ServerMessage::Message { from, text } => emit(ClientEvent::Message { from, text }),
        ServerMessage::Error {
            code,
            message,
            fatal,
        } => {
            if fatal {
                return Err(ClientError::Disconnected(format!(
                    "the server closed the connection: {message} ({code})"
                )));
            }
            emit(ClientEvent::Error {
                code: Some(code),
                message,
            });
        }
        ServerMessage::Shutdown { reason } => {
            emit(ClientEvent::Shutdown {
                reason: reason.clone(),
            });
            return Err(ClientError::Disconnected(format!("server: {reason}")));
        }
        ServerMessage::Hello { .. } | ServerMessage::Ping | ServerMessage::Pong => {}
    }
    Ok(())
}
