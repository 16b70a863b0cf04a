//! The client core: connects to the server, authenticates, then serves three inputs at once —
//! lines from the server, direct-message datagrams from peers, and commands from the person —
//! and reports everything as [`ClientEvent`]s. [`Client`] knows nothing of terminals or stdin:
//! the `p2pchat-client` binary feeds it commands and prints its events, and the questions before
//! the chat are [`dialogue`]'s, asked through a terminal trait ([`start`] has the real stdin).
//!
//! Direct messages go from this client's UDP socket straight to the peer's announced address;
//! the server never sees them. By default they are sealed end to end ([`crate::sealed`]) with a
//! key pair made for this session, acknowledged by the receiver and sent again until they are
//! (`in_flight`); with `--plaintext` they are today's clear JSON datagrams. Received datagrams
//! pass the checks and limits of [`direct_inbox`] before they are shown. Each session key is
//! signed by the account's long-term identity ([`identity_file`]); a peer's key is used only if
//! its identity is the one pinned for it ([`peer_identities`], [`known_peers`]), so the server
//! cannot stand in the middle of a pinned peer.
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
//! acknowledgement), [`outgoing`] (lines for the server, paced), `link` (the link to the server:
//! open, trust, log in, send, read), `session` (the chat loop) and `reconnect` (its tries and
//! their waits), `inbound` (what a server line means to the person), [`dialogue`] (the login and
//! trust questions, over a small terminal trait) and [`start`] (from the flags to a client, and
//! the real stdin), [`error`] (why the client stops, exit statuses), [`event`] (what it
//! reports), [`screen`] (text from others laid out safely for a terminal),
//! [`peer_list`] (who is online), [`ui`] (the terminal: time, colour, line editor, completion,
//! history). Fixed timeouts and buffer sizes are not settings, so they live beside the code that
//! uses them.
//!
//! Dependencies run one way: this module → `session` → `reconnect` → `link` → [`secure`]; none
//! of them imports this module or one that imports it.

pub mod command;
pub mod config;
pub mod dialogue;
mod direct;
pub mod direct_inbox;
pub mod error;
pub mod event;
mod file_mail;
pub mod file_size;
pub mod find;
pub mod identity_file;
pub mod in_flight;
mod inbound;
mod inputs;
pub mod known_peers;
pub mod known_servers;
mod link;
pub mod outgoing;
pub mod pairs;
pub mod peer_identities;
pub mod peer_list;
pub mod private_file;
mod reconnect;
pub mod screen;
pub mod secure;
mod session;
pub mod start;
pub mod transfer_event;
mod transfers;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::Stream;

use crate::identity::IdentityKey;
use crate::runtime::{TcpListener, UdpSocket};
use error::Local;
use known_peers::KnownPeers;
use link::{Link, LoggedIn, Opened};
use outgoing::ServerPace;
use pairs::Pairs;
use peer_identities::PeerIdentities;
use reconnect::Redial;
use transfers::{bind_pair, Bound, FilesOff};

pub use command::Command;
pub use config::FileSettings;
pub use config::{ClientArgs, DirectLimits};
pub use direct_inbox::{DirectInbox, DirectStats};
pub use error::{exit, ClientError};
pub use event::ClientEvent;
pub use link::{AuthMode, NameCheck};
pub use peer_list::PeerList;
pub use reconnect::Reconnect;
pub use secure::{AnnouncedMatch, FirstContact, FirstUse, Transport, Trust, TrustOutcome};

/// Where the client keeps its identity keys and the identity keys it pinned for its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum IdentityStore {
    /// An identity made for this process and pins kept in memory: a changed identity is caught
    /// while it runs, and everything is forgotten after. For a library user that names no
    /// files; the binary always does.
    #[default]
    Memory,
    /// One identity file per account in `folder` ([`identity_file`]), the pins in
    /// `known_peers` ([`known_peers`]).
    Files {
        folder: PathBuf,
        known_peers: PathBuf,
    },
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
    /// Where the identities are kept.
    identity_store: IdentityStore,
    /// The account's identity, once loaded at authentication: `Some` exactly when sealing.
    identity: Option<IdentityKey>,
    /// The peers' identities, checked against the pins (sealing only).
    identities: Option<PeerIdentities>,
    reconnect: Reconnect,
    max_queued: usize,
    /// The transfer port, on the UDP port's number (`Err`: why files are off).
    listener: Result<Arc<TcpListener>, String>,
    files: FileSettings,
}

impl Client {
    /// Resolves `server` (`HOST:PORT`, HOST a name or an address), connects, secures the
    /// connection as `transport` says (with TLS: the handshake and the server's fingerprint
    /// checked, before anything is read or sent), waits for the server's `hello`, and binds the
    /// UDP socket for direct messages on the address this host uses to reach the server (so
    /// peers see datagrams come from the address the server saw), port `p2p_port` (0 = any free
    /// port), and the transfer port for files, TCP on the same address and port number (a
    /// client that cannot have it chats on without files).
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
        } = link::open(server, transport).await?;
        let local_ip = link.tcp.local_addr().map_err(Local::NoLocalAddress)?.ip();
        let Bound { udp, tcp } =
            bind_pair(local_ip, p2p_port)
                .await
                .map_err(|source| Local::BindUdp {
                    ip: local_ip,
                    port: p2p_port,
                    source,
                })?;
        let p2p_addr = udp.local_addr().map_err(Local::NoUdpAddress)?;
        let listener = tcp.map(Arc::new).map_err(|e| {
            format!(
                "this client cannot listen on TCP {} (the transfer port, the UDP port's number): {e}",
                p2p_addr
            )
        });
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
            identity_store: IdentityStore::Memory,
            identity: None,
            identities: None,
            reconnect: Reconnect::Never,
            max_queued: config::DEFAULT_MAX_QUEUED_LINES,
            listener,
            files: FileSettings::default(),
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

    /// Where to keep this account's identity key and the pins of peers' identities (default
    /// [`IdentityStore::Memory`]). Call it before [`Client::authenticate`].
    pub fn set_identity_store(&mut self, store: IdentityStore) {
        self.identity_store = store;
    }

    /// The account's identity and the pins, as the store says: made on the account's first
    /// login.
    fn load_identities(&self, username: &str) -> Result<(IdentityKey, PeerIdentities), Local> {
        let (identity, known) = match &self.identity_store {
            IdentityStore::Memory => (
                IdentityKey::generate()
                    .map_err(|e| Local::Identity(identity_file::IdentityFileError::Random(e)))?,
                KnownPeers::in_memory(),
            ),
            IdentityStore::Files {
                folder,
                known_peers,
            } => {
                let file = identity_file::path(folder, &self.server_name, username);
                let loaded = identity_file::load_or_create(&file).map_err(Local::Identity)?;
                (loaded.key, KnownPeers::load(known_peers)?)
            }
        };
        let peers = PeerIdentities::new(known, &self.server_name, username, identity.public());
        Ok((identity, peers))
    }

    /// Whether to connect again when the server is lost (default [`Reconnect::Never`]), and how
    /// many lines may wait for it meanwhile (and for the pace) at most.
    pub fn set_reconnect(&mut self, reconnect: Reconnect, max_queued: usize) {
        self.reconnect = reconnect;
        self.max_queued = max_queued;
    }

    /// How files are received and reported (default [`FileSettings::default`]).
    pub fn set_files(&mut self, files: FileSettings) {
        self.files = files;
    }

    /// Where this client receives direct messages.
    pub fn p2p_addr(&self) -> SocketAddr {
        self.p2p_addr
    }

    /// Asks the server whether a registration could take `username` (`check_name`), without
    /// sending any password. A wait the server announces is passed to `emit` (`delayed`).
    pub async fn check_name(
        &mut self,
        username: &str,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<NameCheck, ClientError> {
        self.link.check_name(username, emit).await
    }

    /// Logs in or registers, announcing the UDP port and (unless in `--plaintext` mode) the
    /// public key of a key pair made for this session. Reports a wait the server announces
    /// (`delayed`), and on success `welcome`; keeps the name and password in memory to log in
    /// again after a reconnect.
    pub async fn authenticate(
        &mut self,
        mode: AuthMode,
        username: &str,
        password: &str,
        emit: &mut dyn FnMut(ClientEvent),
    ) -> Result<(), ClientError> {
        // Before anything is sent: a file that cannot be trusted ends it here.
        if self.sealed {
            let (identity, identities) = self.load_identities(username)?;
            self.identity = Some(identity);
            self.identities = Some(identities);
        }
        let LoggedIn {
            username,
            peers,
            pairs,
        } = self
            .link
            .log_in(
                mode,
                username,
                password,
                self.p2p_addr.port(),
                // Sealing, with this account's identity (loaded above when sealing).
                self.identity.as_ref(),
                emit,
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
        let redial = match (self.reconnect, self.credentials) {
            (Reconnect::WithBackoff, Some((username, password))) => Some(Redial {
                server: self.server_name,
                // Why this session trusted the server (its fingerprint), or plaintext.
                pinned: self.trust.clone(),
                username,
                password,
                p2p_port: self.p2p_addr.port(),
                sealing: self.identity.clone(),
            }),
            _ => None,
        };
        let start = session::Start {
            link: self.link,
            pace: self.pace,
            udp: self.udp,
            p2p_addr: self.p2p_addr,
            username: self.username,
            peers: self.peers,
            direct_limits: self.direct_limits,
            pairs: self.pairs,
            identities: self.identities,
            redial,
            max_queued: self.max_queued,
            files: self.files,
            // Sealing is what keys a file's data connection: none with --plaintext.
            listener: match self.sealed {
                true => self.listener.map_err(FilesOff::NoPort),
                false => Err(FilesOff::Plaintext),
            },
        };
        session::run(start, commands, emit).await
    }
}
