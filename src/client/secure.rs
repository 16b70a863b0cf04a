//! How the client secures its connection before it says anything: the TLS handshake, the check
//! of the server's fingerprint against `--trust` or the known-servers file (under the name typed
//! and at the address it answered at: OpenSSH's `CheckHostIP`), the first-contact decision (ask
//! the person; `--accept-new`; else refuse, as OpenSSH in batch mode) — also for a new name at an
//! address known with the same key, which is said in the question ([`KnownAs`]) but never
//! trusted without one of the two — and telling a plaintext
//! server (or a refusal sent before TLS) apart from a broken one.
//!
//! The password is never at risk here: this runs to the end — handshake, fingerprint checked or
//! accepted — before the client reads the server's `hello`, let alone sends a login. What is
//! trusted and why is [`TrustOutcome`]; why not is a [`NotTrusted`]. It never reads or writes a
//! protocol line.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;

use super::error::{AddressChanged, ClientError, Local, NotP2pchat, NotTrusted, Unreachable};
use super::known_servers::{self, KnownAs, KnownServers};
use crate::connection::Stream;
use crate::discovery::Announced;
use crate::protocol::{decode_server, ServerMessage};
use crate::runtime::{self, TcpStream};
use crate::tls::{self, Fingerprint};

/// At most this much of what a server sends first is kept, to say what it was when it was not
/// TLS (a plaintext `hello`, or a refusal sent before TLS).
const FIRST_BYTES_KEPT: usize = 1024;

/// How the client talks to the server.
pub enum Transport {
    /// The plaintext protocol (`--plaintext`): anyone on the path reads everything.
    Plaintext,
    /// TLS, trusting the server as `Trust` says.
    Tls(Trust),
}

/// Whom the client trusts.
pub enum Trust {
    /// Exactly this fingerprint (`--trust`); the known-servers file is neither read nor written.
    Required(Fingerprint),
    /// Whatever the known-servers file at this path pinned; a server it does not know is met
    /// as `first_contact` says.
    KnownServers {
        path: PathBuf,
        first_contact: FirstUse,
        /// What the LAN announced about the server, when it was found there: compared at first
        /// contact, never a pin.
        announced: Option<Announced>,
    },
}

/// How the certificate met compares with what was announced on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnouncedMatch {
    /// The announced fingerprint is the certificate's.
    Matches,
    /// Another fingerprint was announced: someone announced a server that is not this one
    /// (a spoof), or the server's key changed since it started announcing.
    Differs(Fingerprint),
    /// The announcement had no fingerprint.
    NoneAnnounced,
}

/// What to do with a server the known-servers file does not know (under its name or at its
/// address).
pub enum FirstUse {
    /// Ask the person (on a terminal).
    Ask(Ask),
    /// Trust and record it (`--accept-new`, OpenSSH's `StrictHostKeyChecking=accept-new`).
    AcceptNew,
    /// Refuse it, sending nothing (no terminal, no `--accept-new`: OpenSSH in batch mode).
    Refuse,
}

/// Asks the person whether to trust a server met for the first time: `Ok(true)` to go on.
pub type Ask = Box<dyn FnMut(&FirstContact) -> Result<bool, ClientError> + Send>;

/// A server met for the first time.
#[derive(Debug, Clone)]
pub struct FirstContact {
    /// As typed.
    pub server: String,
    pub fingerprint: Fingerprint,
    /// Where it will be recorded.
    pub file: PathBuf,
    /// The same key is already pinned at the address it answered at, under other names.
    pub known_as: Option<KnownAs>,
    /// What the LAN announced, when the server was found there.
    pub announced: Option<Announced>,
}

impl FirstContact {
    /// How the certificate compares with the announcement, when the server was found on the
    /// LAN.
    pub fn announced_match(&self) -> Option<AnnouncedMatch> {
        let announced = self.announced.as_ref()?;
        Some(match announced.fingerprint {
            Some(fp) if fp == self.fingerprint => AnnouncedMatch::Matches,
            Some(fp) => AnnouncedMatch::Differs(fp),
            None => AnnouncedMatch::NoneAnnounced,
        })
    }
}

/// Why the client trusted the server it is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustOutcome {
    /// Its fingerprint is the one `--trust` named.
    Required { fingerprint: Fingerprint },
    /// Its fingerprint is the one pinned at `line` of `file`.
    Known {
        fingerprint: Fingerprint,
        file: PathBuf,
        line: usize,
    },
    /// Met for the first time (under this name; its key may be `known_as` others at its
    /// address) and recorded at `line` of `file`; `asked` if the person said yes.
    Recorded {
        fingerprint: Fingerprint,
        file: PathBuf,
        line: usize,
        asked: bool,
        known_as: Option<KnownAs>,
    },
}

impl TrustOutcome {
    /// The fingerprint trusted, whatever the reason.
    pub fn fingerprint(&self) -> Fingerprint {
        match self {
            TrustOutcome::Required { fingerprint }
            | TrustOutcome::Known { fingerprint, .. }
            | TrustOutcome::Recorded { fingerprint, .. } => *fingerprint,
        }
    }
}

/// Makes the connection to `server` (as typed) a [`Stream`] as `transport` says; with TLS, only
/// once the server is trusted.
///
/// # Errors
/// [`ClientError::NotTrusted`]: the fingerprint changed (under the name, or at the address),
/// is not the required one, the person said no, or the server is unknown and may not be met
/// ([`FirstUse::Refuse`]). [`ClientError::Unreachable`]: the server speaks plaintext, refused the connection
/// before TLS, completed no handshake within `handshake_timeout` (not a p2pchat server), or the
/// handshake failed. [`ClientError::Local`]: the known-servers file.
pub async fn establish(
    tcp: TcpStream,
    server: &str,
    transport: Transport,
    handshake_timeout: Duration,
) -> Result<(Stream, Option<TrustOutcome>), ClientError> {
    let trust = match transport {
        Transport::Plaintext => return Ok((Stream::plain(tcp), None)),
        Transport::Tls(trust) => trust,
    };
    // The address the name led to, as the file writes it: a name never met before may be a
    // server met under another name (OpenSSH's CheckHostIP).
    let address = tcp.peer_addr().ok().map(known_servers::address_key);
    let (mut known, first_contact, expected) = match trust {
        Trust::Required(fingerprint) => (None, None, Some(fingerprint)),
        Trust::KnownServers {
            path,
            first_contact,
            announced,
        } => {
            let known = KnownServers::load(&path).map_err(Local::KnownServers)?;
            let expected = pins(&known, server, address.as_deref())
                .first()
                .map(|(_, entry)| entry.fingerprint);
            (Some(known), Some((first_contact, announced)), expected)
        }
    };
    let presented: tls::Presented = Arc::new(Mutex::new(None));
    let config = tls::client_config(expected, presented.clone());
    let connector = TlsConnector::from(Arc::new(config));
    let watched = FirstBytes::new(tcp.clone());
    let handshake = connector
        .connect(tls::server_name(), watched)
        .into_fallible();
    let Some(handshake) = runtime::timeout(handshake_timeout, handshake).await else {
        let how = NotP2pchat::NoHandshake {
            after: handshake_timeout,
        };
        return Err(ClientError::unreachable(
            server,
            Unreachable::NotP2pchat(how),
        ));
    };
    let session = match handshake {
        Ok(session) => session,
        Err((error, watched)) => {
            let presented = *presented.lock().unwrap_or_else(|p| p.into_inner());
            return Err(handshake_failed(
                server,
                error,
                &watched.first,
                expected.zip(presented),
                known.as_ref().map(|k| (k, address.as_deref())),
            ));
        }
    };
    let fingerprint = presented
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .expect("a completed handshake went through the verifier");
    let Some(known) = known.as_mut() else {
        return Ok((
            Stream::tls(tcp, session),
            Some(TrustOutcome::Required { fingerprint }),
        ));
    };
    let pinned = pins(known, server, address.as_deref());
    // The handshake checked the first pin; another line at the address may pin another key
    // (the address now answers for another server, or a machine in the middle).
    if let Some((pin, entry)) = pinned.iter().find(|(_, e)| e.fingerprint != fingerprint) {
        return Err(ClientError::not_trusted(
            server,
            changed(known, pin, entry, fingerprint),
        ));
    }
    let typed = known_servers::key(server);
    let outcome = match pinned.first() {
        Some((PinnedBy::Name, entry)) => TrustOutcome::Known {
            fingerprint,
            file: known.path().into(),
            line: entry.line,
        },
        // The address typed as it is recorded beside a name: known by that line.
        Some((PinnedBy::Address(at), entry)) if *at == typed => TrustOutcome::Known {
            fingerprint,
            file: known.path().into(),
            line: entry.line,
        },
        // A new name at a pinned address is a first contact (every pin there has this key,
        // checked above): the name may have been made to lead there.
        _ => {
            let known_as = match (pinned.first(), address.as_deref()) {
                (Some((_, first)), Some(at)) => Some(KnownAs {
                    address: at.to_string(),
                    names: pinned.iter().map(|(_, e)| e.server.clone()).collect(),
                    line: first.line,
                }),
                _ => None,
            };
            let (first_contact, announced) = match first_contact {
                Some((first_contact, announced)) => (Some(first_contact), announced),
                None => (None, None),
            };
            let contact = FirstContact {
                server: server.to_string(),
                fingerprint,
                file: known.path().into(),
                known_as,
                announced,
            };
            let asked = match first_contact {
                Some(FirstUse::Ask(mut ask)) => {
                    if !ask(&contact)? {
                        return Err(ClientError::not_trusted(
                            server,
                            NotTrusted::Declined { fingerprint },
                        ));
                    }
                    true
                }
                Some(FirstUse::AcceptNew) => false,
                Some(FirstUse::Refuse) | None => {
                    return Err(ClientError::not_trusted(
                        server,
                        NotTrusted::Unknown {
                            fingerprint,
                            file: contact.file,
                            known_as: contact.known_as.map(Box::new),
                        },
                    ))
                }
            };
            let entry = known
                .add(server, address.as_deref(), fingerprint)
                .map_err(Local::KnownServers)?;
            TrustOutcome::Recorded {
                fingerprint,
                file: contact.file,
                line: entry.line,
                asked,
                known_as: contact.known_as,
            }
        }
    };
    // The session keeps its FirstBytes (at most FIRST_BYTES_KEPT bytes, kept once).
    Ok((Stream::tls(tcp, session), Some(outcome)))
}

/// Why an entry of the known-servers file applies to the server met: its name, or the address
/// it answered at (as the file writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
enum PinnedBy {
    Name,
    Address(String),
}

/// Every line of `known` that pins the server met as `server` at `address`: the name's first,
/// then every line recorded at the address under another name.
fn pins<'k>(
    known: &'k KnownServers,
    server: &str,
    address: Option<&str>,
) -> Vec<(PinnedBy, &'k known_servers::Entry)> {
    let by_name = known.find(server);
    let mut pins: Vec<_> = by_name
        .map(|entry| (PinnedBy::Name, entry))
        .into_iter()
        .collect();
    if let Some(address) = address {
        pins.extend(
            known
                .at_address(address)
                .filter(|entry| Some(*entry) != by_name)
                .map(|entry| (PinnedBy::Address(address.to_string()), entry)),
        );
    }
    pins
}

/// The refusal for a server that presented `presented` where `entry` pins another key.
fn changed(
    known: &KnownServers,
    pin: &PinnedBy,
    entry: &known_servers::Entry,
    presented: Fingerprint,
) -> NotTrusted {
    match pin {
        PinnedBy::Name => NotTrusted::Changed {
            presented,
            pinned: entry.fingerprint,
            file: known.path().into(),
            line: entry.line,
        },
        PinnedBy::Address(address) => NotTrusted::AddressChanged(Box::new(AddressChanged {
            presented,
            pinned: entry.fingerprint,
            address: address.clone(),
            file: known.path().into(),
            line: entry.line,
        })),
    }
}

/// What to say when the handshake failed: a changed or wrong fingerprint (`pins`: expected and
/// presented), a server that speaks plaintext or refused before TLS, or a broken handshake.
/// `known` is the known-servers file and the address the server answered at.
fn handshake_failed(
    server: &str,
    error: io::Error,
    first: &[u8],
    pins: Option<(Fingerprint, Fingerprint)>,
    known: Option<(&KnownServers, Option<&str>)>,
) -> ClientError {
    if let Some((expected, presented)) = pins.filter(|(e, p)| e != p) {
        let pinned = known.and_then(|(known, address)| {
            let (pin, entry) = self::pins(known, server, address).into_iter().next()?;
            Some(changed(known, &pin, entry, presented))
        });
        let why = pinned.unwrap_or(NotTrusted::NotRequired {
            presented,
            required: expected,
        });
        return ClientError::not_trusted(server, why);
    }
    let first_line = first.split(|&b| b == b'\n').next().unwrap_or_default();
    let why = if first.first() == Some(&b'{') {
        match decode_server(first_line) {
            Ok(ServerMessage::Error { code, message, .. }) => {
                Unreachable::TurnedAway { code, message }
            }
            _ => Unreachable::SpeaksPlaintext {
                first: String::from_utf8_lossy(&first_line[..first_line.len().min(32)]).into(),
            },
        }
    } else {
        Unreachable::Handshake(error)
    };
    ClientError::unreachable(server, why)
}

/// A stream that keeps the first [`FIRST_BYTES_KEPT`] bytes read from it.
struct FirstBytes {
    inner: TcpStream,
    first: Vec<u8>,
}

impl FirstBytes {
    fn new(inner: TcpStream) -> Self {
        FirstBytes {
            inner,
            first: Vec::new(),
        }
    }
}

impl AsyncRead for FirstBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = read {
            let room = FIRST_BYTES_KEPT.saturating_sub(this.first.len());
            this.first.extend_from_slice(&buf[..n.min(room)]);
        }
        read
    }
}

impl AsyncWrite for FirstBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
