//! Why the client stopped ([`ClientError`]), and the exit status of `p2pchat-client` for each
//! reason ([`exit`]).
//!
//! Every cause is a variant, never a sentence: the exit status and every decision (is it worth
//! connecting again? is it a typing mistake to ask about again?) come from the variant, and the
//! text is made from it only when it is shown (`Display`). Rewording a message changes nothing
//! else.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::config::{LimitsError, DEFAULT_SERVER_PORT};
use super::event::ClientEvent;
use super::known_servers::{KnownAs, KnownServersError};
use super::ui::EditorError;
use crate::connection::ReadError;
use crate::discovery::{DiscoveryError, Found};
use crate::protocol::{DecodeError, ErrorCode};
use crate::tls::Fingerprint;

pub mod exit {
    //! Exit statuses of `p2pchat-client` (also documented in the README and its `--help`).

    /// Left with `:q` (or end of input).
    pub const OK: i32 = 0;
    /// A local failure: bad input at a prompt, a UDP port that cannot be bound.
    pub const LOCAL: i32 = 1;
    /// Bad command-line arguments (clap's status); also, without `--server` and without a
    /// terminal, several servers announced on the LAN (which one is for `--server` to say).
    pub const USAGE: i32 = 2;
    /// The server could not be reached (name not resolved, connection refused), is not a
    /// p2pchat server, is full, refuses more connections from this address, or is too busy to
    /// check the login now (`busy`): each is worth trying again later, unlike a refusal.
    pub const UNREACHABLE: i32 = 3;
    /// Login or registration refused.
    pub const REFUSED: i32 = 4;
    /// The server went away, shut down, or broke the protocol.
    pub const DISCONNECTED: i32 = 5;
    /// The server is not trusted: its fingerprint changed since it was pinned (under its name or
    /// at its address), is not the one `--trust` requires, the person said no at first contact,
    /// or, without a terminal, it was met for the first time without `--accept-new`. Nothing
    /// was sent to it.
    pub const NOT_TRUSTED: i32 = 6;
    /// The account logged in from another connection, which took the name over (the server's
    /// `replaced`): this client does not connect again, or the two would take turns.
    pub const REPLACED: i32 = 7;
    /// Ctrl-C on an empty line at the chat prompt: interrupted, as a shell reports SIGINT
    /// (128 + 2).
    pub const INTERRUPTED: i32 = 130;
}

/// Added to "connection refused" at the address `just server` serves (this host, port 12000):
/// the usual fix there.
const JUST_SERVER_HINT: &str = "(`just server` starts one)";

/// Why the client stopped. Each variant is one exit status ([`ClientError::exit_code`]).
#[derive(Debug)]
pub enum ClientError {
    /// `server` (as the person gave it) could not be reached, or is not one to talk to now.
    Unreachable { server: String, why: Unreachable },
    /// The server refused the login or registration.
    Refused { code: ErrorCode, message: String },
    /// The server went away, shut down, or broke the protocol.
    Disconnected(Disconnect),
    /// Something on this host failed (a prompt, the UDP socket, a setting).
    Local(Local),
    /// `server` could not be authenticated; nothing was sent to it.
    NotTrusted { server: String, why: NotTrusted },
    /// No `--server`, several servers announced on the LAN, and no terminal to ask which:
    /// a usage error (exit 2), naming them.
    Ambiguous(Vec<Found>),
    /// `--accept-new` without `--server`: the server would be whichever one the LAN announced,
    /// trusted blindly and sent the script's password (anyone on the LAN can announce). A usage
    /// error (exit 2).
    AcceptNewWithoutServer,
}

/// Why the server could not be reached: each may work later (exit 3).
#[derive(Debug)]
pub enum Unreachable {
    /// The name did not resolve.
    Resolve(io::Error),
    /// The name resolved to no address.
    NoAddress,
    /// The last address refused or failed the connection.
    Connect(io::Error),
    /// The last address did not take the connection in time.
    ConnectTimeout { addr: SocketAddr, after: Duration },
    /// Something answers at that port, but not a p2pchat server.
    NotP2pchat(NotP2pchat),
    /// A plaintext p2pchat server (this client wants TLS); `first` is what it sent.
    SpeaksPlaintext { first: String },
    /// A TLS server, and this client speaks `--plaintext`.
    TlsRequired,
    /// The server turned the connection away before any login: full, too many connections from
    /// this address.
    TurnedAway { code: ErrorCode, message: String },
    /// The TLS handshake broke.
    Handshake(io::Error),
}

/// How a port showed it is not a p2pchat server (which answers at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotP2pchat {
    #[error(
        "it did not complete a TLS handshake within {} s (p2pchat servers answer at once)",
        .after.as_secs()
    )]
    NoHandshake { after: Duration },
    #[error("it sent no hello within {} s", .after.as_secs())]
    NoHello { after: Duration },
    #[error("its first line was not a p2pchat message")]
    NotAMessage,
    /// A protocol message, but not `hello`.
    #[error("its first message was not hello")]
    NotHello,
}

/// Why the connection to the server ended (exit 5).
#[derive(Debug, thiserror::Error)]
pub enum Disconnect {
    #[error("the server closed the connection")]
    Closed,
    /// Writing to the server failed.
    #[error("lost the connection to the server: {0}")]
    Lost(#[source] io::Error),
    /// Reading from the server failed, or its stream broke a line.
    #[error("lost the connection to the server: {0}")]
    Unreadable(#[source] ReadError),
    #[error("the server did not answer within {} s", .after.as_secs())]
    Silent { after: Duration },
    /// A line that is not a protocol message.
    #[error("the server sent a bad message: {0}")]
    BadMessage(#[source] DecodeError),
    /// The server ended the connection with a fatal error.
    #[error("the server closed the connection: {message} ({code})")]
    Fatal { code: ErrorCode, message: String },
    #[error("server: {reason}")]
    Shutdown { reason: String },
}

/// What failed on this host (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Local {
    /// `--discover` could not browse the LAN (no multicast here, say).
    #[error(transparent)]
    Discovery(DiscoveryError),
    /// The connection has no local address to bind the UDP socket to.
    #[error("no local address: {0}")]
    NoLocalAddress(#[source] io::Error),
    /// The UDP port for direct messages cannot be bound.
    #[error("cannot bind UDP port {port} on {ip}: {source}")]
    BindUdp {
        ip: IpAddr,
        port: u16,
        source: io::Error,
    },
    #[error("no UDP address: {0}")]
    NoUdpAddress(#[source] io::Error),
    /// A limit on direct messages that makes no sense.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The known-servers file cannot be read or written.
    #[error(transparent)]
    KnownServers(#[from] KnownServersError),
    /// The account's identity key cannot be read, made or trusted.
    #[error(transparent)]
    Identity(super::identity_file::IdentityFileError),
    /// The known-peers file cannot be read or trusted.
    #[error(transparent)]
    KnownPeers(#[from] super::known_peers::KnownPeersError),
    /// No folder for the identity keys.
    #[error("neither XDG_DATA_HOME nor HOME is set: there is no place for this account's identity key (or use --plaintext)")]
    NoIdentityFolder,
    /// No folder for the known-servers file, and no `--known-servers`.
    #[error(
        "neither XDG_CONFIG_HOME nor HOME is set: name the known-servers file with --known-servers"
    )]
    NoKnownServersFile,
    /// The first answer was neither `login` nor `register` (without a terminal).
    #[error("expected 'login' or 'register', got {answer:?}")]
    NotLoginOrRegister { answer: String },
    /// Input ended at a prompt.
    #[error("input ended before login (expected: login or register, username, password)")]
    InputEnded,
    #[error("cannot read stdin: {0}")]
    Stdin(#[source] io::Error),
    /// Reading the password without echo failed.
    #[error("cannot read the password: {0}")]
    Password(#[source] io::Error),
    /// The line editor could not take the terminal.
    #[error(transparent)]
    Terminal(#[from] EditorError),
}

/// Why the server is not trusted (exit 6). Nothing was sent to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotTrusted {
    /// Met for the first time, and the person did not say yes.
    Declined { fingerprint: Fingerprint },
    /// Met for the first time with no one to ask (no terminal) and no `--accept-new`: refused,
    /// as OpenSSH in batch mode refuses an unknown host. `file` is where it would be recorded.
    Unknown {
        fingerprint: Fingerprint,
        file: PathBuf,
        /// Its key is pinned at its address under other names: said, never trusted for it
        /// (boxed: rare, and it would make every error larger).
        known_as: Option<Box<KnownAs>>,
    },
    /// Another fingerprint at an address the file pins under another name (boxed: the largest
    /// cause, and rare).
    AddressChanged(Box<AddressChanged>),
    /// Another fingerprint than the one pinned at `line` of `file`.
    Changed {
        presented: Fingerprint,
        pinned: Fingerprint,
        file: PathBuf,
        line: usize,
    },
    /// Another fingerprint than the one `--trust` requires.
    NotRequired {
        presented: Fingerprint,
        required: Fingerprint,
    },
}

/// A server met at `address`, where line `line` of `file` pins another fingerprint under
/// another name: the address now answers for another server, or someone is in the middle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressChanged {
    pub presented: Fingerprint,
    pub pinned: Fingerprint,
    pub address: String,
    pub file: PathBuf,
    pub line: usize,
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            // Nothing was checked: trying again later may work, as with a full server.
            ClientError::Refused {
                code: ErrorCode::Busy | ErrorCode::Throttled,
                ..
            } => exit::UNREACHABLE,
            ClientError::Refused { .. } => exit::REFUSED,
            ClientError::Disconnected(Disconnect::Fatal {
                code: ErrorCode::Replaced,
                ..
            }) => exit::REPLACED,
            ClientError::Disconnected(_) => exit::DISCONNECTED,
            ClientError::Local(_) => exit::LOCAL,
            ClientError::NotTrusted { .. } => exit::NOT_TRUSTED,
            ClientError::Ambiguous(_) | ClientError::AcceptNewWithoutServer => exit::USAGE,
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

    pub(super) fn unreachable(server: &str, why: Unreachable) -> ClientError {
        ClientError::Unreachable {
            server: server.to_string(),
            why,
        }
    }

    pub(super) fn not_trusted(server: &str, why: NotTrusted) -> ClientError {
        ClientError::NotTrusted {
            server: server.to_string(),
            why,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Unreachable { server, why } => unreachable_text(f, server, why),
            ClientError::Refused { code, message } => write!(f, "refused ({code}): {message}"),
            ClientError::Disconnected(why) => write!(f, "{why}"),
            ClientError::Local(why) => write!(f, "{why}"),
            ClientError::NotTrusted { server, why } => not_trusted_text(f, server, why),
            ClientError::AcceptNewWithoutServer => write!(
                f,
                "--accept-new needs --server: name the server with --server HOST[:PORT] \
                 (a server found on the LAN may be anyone's announcement, and --accept-new \
                 would trust it and send it the password)"
            ),
            ClientError::Ambiguous(found) => {
                let named: Vec<String> = found.iter().map(Found::to_string).collect();
                write!(
                    f,
                    "{} servers announce themselves on the LAN: {}; choose one with --server",
                    found.len(),
                    named.join("; ")
                )
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Unreachable {
                why: Unreachable::Resolve(e) | Unreachable::Connect(e) | Unreachable::Handshake(e),
                ..
            } => Some(e),
            ClientError::Disconnected(why) => std::error::Error::source(why),
            ClientError::Local(why) => std::error::Error::source(why),
            _ => None,
        }
    }
}

fn unreachable_text(f: &mut fmt::Formatter<'_>, server: &str, why: &Unreachable) -> fmt::Result {
    match why {
        Unreachable::Resolve(e) => write!(f, "cannot reach {server}: {e}"),
        Unreachable::NoAddress => write!(f, "cannot reach {server}: no address found"),
        // The usual reason, at the address the person gave (which may not be the one they
        // meant); `just server` only where it would answer.
        Unreachable::Connect(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            write!(
                f,
                "cannot reach {server}: {e}; is a p2pchat server running at {server}?"
            )?;
            if served_by_just_server(server) {
                write!(f, " {JUST_SERVER_HINT}")?;
            }
            Ok(())
        }
        Unreachable::Connect(e) => write!(f, "cannot reach {server}: {e}"),
        Unreachable::ConnectTimeout { addr, after } => write!(
            f,
            "cannot reach {server}: no answer from {addr} within {} s",
            after.as_secs()
        ),
        Unreachable::NotP2pchat(how) => write!(f, "{server} is not a p2pchat server: {how}"),
        Unreachable::SpeaksPlaintext { first } => write!(
            f,
            "{server} speaks plaintext p2pchat (it sent {first:?} where a TLS record should be); \
             if you accept that passwords and messages cross the network readable by anyone, \
             connect with --plaintext"
        ),
        Unreachable::TlsRequired => {
            write!(f, "{server} requires TLS; connect without --plaintext")
        }
        Unreachable::TurnedAway { message, .. } => write!(f, "{server}: {message}"),
        Unreachable::Handshake(e) => write!(f, "TLS handshake with {server} failed: {e}"),
    }
}

/// Whether `server` (`HOST:PORT`, as `--server` makes it) is where `just server` listens: this
/// host (a loopback address, or `localhost`), port 12000.
fn served_by_just_server(server: &str) -> bool {
    let Some((host, port)) = server.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    local && port.parse() == Ok(DEFAULT_SERVER_PORT)
}

fn not_trusted_text(f: &mut fmt::Formatter<'_>, server: &str, why: &NotTrusted) -> fmt::Result {
    match why {
        NotTrusted::Declined { fingerprint } => write!(
            f,
            "{server} is not trusted: its fingerprint {fingerprint} was not accepted; nothing was sent to it"
        ),
        NotTrusted::Unknown {
            fingerprint,
            file,
            known_as,
        } => {
            write!(
                f,
                "{server} is not a known server and there is no terminal to ask on; nothing was sent \
                 to it. Its fingerprint is {fingerprint}"
            )?;
            if let Some(known_as) = known_as {
                write!(
                    f,
                    " ({known_as} of {}; a new name is still a first contact)",
                    file.display()
                )?;
            }
            write!(
                f,
                ". If that is the fingerprint the server printed at start, connect with --trust \
                 {fingerprint}; to trust whatever answers there now and record it in {}, connect \
                 once with --accept-new",
                file.display()
            )
        }
        NotTrusted::AddressChanged(changed) => write!(
            f,
            "\n\
             @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
             @    WARNING: SERVER IDENTIFICATION HAS CHANGED!         @\n\
             @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
             {server} answered at {address}, which line {line} of {file} pins to {pinned};\n\
             it presented {presented}. Another server now has that address, someone may be\n\
             listening in (a machine in the middle), or the server's key was replaced.\n\
             Nothing was sent to it: no login, no password.\n\
             If the change is expected, forget the old one and connect again:\n    \
             p2pchat-client --forget {address}{known_servers}\n\
             (it removes line {line} of {file}).",
            address = changed.address,
            line = changed.line,
            pinned = changed.pinned,
            presented = changed.presented,
            file = changed.file.display(),
            known_servers = forget_file_flag(&changed.file),
        ),
        NotTrusted::Changed {
            presented,
            pinned,
            file,
            line,
        } => write!(
            f,
            "\n\
             @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
             @    WARNING: SERVER IDENTIFICATION HAS CHANGED!         @\n\
             @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
             Someone may be listening in (a machine in the middle), or the server's key was\n\
             replaced. {server} presented {presented};\n\
             line {line} of {file} pins {pinned}.\n\
             Nothing was sent to it: no login, no password.\n\
             If the change is expected, forget the old one and connect again:\n    \
             p2pchat-client --forget {server}{known_servers}\n\
             (it removes line {line} of {file}).",
            file = file.display(),
            known_servers = forget_file_flag(file),
        ),
        NotTrusted::NotRequired {
            presented,
            required,
        } => write!(
            f,
            "{server} presented {presented}, not the fingerprint --trust requires ({required}); nothing was sent to it"
        ),
    }
}

/// ` --known-servers FILE` when `file` is not where `--forget` looks by default.
fn forget_file_flag(file: &std::path::Path) -> String {
    match super::known_servers::default_path() {
        Some(default) if default == file => String::new(),
        _ => format!(" --known-servers {}", file.display()),
    }
}

impl From<Disconnect> for ClientError {
    fn from(why: Disconnect) -> Self {
        ClientError::Disconnected(why)
    }
}

impl From<Local> for ClientError {
    fn from(why: Local) -> Self {
        ClientError::Local(why)
    }
}

/// A setting that makes no sense is a local failure.
impl From<LimitsError> for ClientError {
    fn from(error: LimitsError) -> Self {
        ClientError::Local(error.into())
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
        let gone = ClientError::Disconnected(Disconnect::Shutdown {
            reason: "bye".into(),
        });
        assert_eq!(gone.exit_code(), exit::DISCONNECTED);
        assert_eq!(gone.to_string(), "server: bye");
        assert_eq!(gone.to_event(), ClientEvent::error("server: bye"));
        let replaced = ClientError::Disconnected(Disconnect::Fatal {
            code: ErrorCode::Replaced,
            message: "alice logged in from another connection".into(),
        });
        assert_eq!(replaced.exit_code(), exit::REPLACED);
        let down = ClientError::unreachable("h:1", Unreachable::NoAddress);
        assert_eq!(down.exit_code(), exit::UNREACHABLE);
        assert_eq!(down.to_string(), "cannot reach h:1: no address found");
        let declined = ClientError::not_trusted(
            "h:1",
            NotTrusted::Declined {
                fingerprint: Fingerprint::of_certificate(b"cert"),
            },
        );
        assert_eq!(declined.exit_code(), exit::NOT_TRUSTED);
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
        assert_eq!(
            ClientError::from(Local::InputEnded).exit_code(),
            exit::LOCAL
        );
    }

    #[test]
    fn a_port_that_is_not_a_p2pchat_server_is_unreachable_whatever_it_did() {
        let after = Duration::from_secs(5);
        for how in [
            NotP2pchat::NoHandshake { after },
            NotP2pchat::NoHello { after },
            NotP2pchat::NotAMessage,
            NotP2pchat::NotHello,
        ] {
            let error = ClientError::unreachable("h:1", Unreachable::NotP2pchat(how));
            assert_eq!(error.exit_code(), exit::UNREACHABLE);
            assert!(
                error
                    .to_string()
                    .starts_with("h:1 is not a p2pchat server: "),
                "{error}"
            );
        }
    }

    #[test]
    fn only_a_refused_connection_gets_the_hint_naming_the_address() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        let text = ClientError::unreachable("h:1", Unreachable::Connect(refused())).to_string();
        assert!(
            text.ends_with("; is a p2pchat server running at h:1?"),
            "{text}"
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        let text = ClientError::unreachable("h:1", Unreachable::Connect(reset)).to_string();
        assert!(!text.contains("running"), "{text}");
        // `just server` only where it listens: this host, port 12000.
        for local in [
            "127.0.0.1:12000",
            "LocalHost:12000",
            "[::1]:12000",
            "127.9.9.9:12000",
        ] {
            let text = ClientError::unreachable(local, Unreachable::Connect(refused())).to_string();
            assert!(
                text.ends_with(&format!("running at {local}? {JUST_SERVER_HINT}")),
                "{text}"
            );
        }
        for elsewhere in ["127.0.0.1:12001", "chat.lab:12000", "10.0.0.1:12000"] {
            let text =
                ClientError::unreachable(elsewhere, Unreachable::Connect(refused())).to_string();
            assert!(!text.contains("just server"), "{text}");
        }
    }
}
