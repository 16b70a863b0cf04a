//! Direct messages as the person sees them: sending one straight to a peer's announced UDP
//! address — sealed and acknowledged by default, clear JSON in `--plaintext` mode — sending
//! acknowledgements and retransmissions, turning what the [`DirectInbox`] made of a received
//! datagram into events, and telling the inbox and the pairwise keys when a peer's session ends
//! or starts. The checks are the inbox's, the cryptography [`crate::sealed`]'s, the schedule
//! [`in_flight`](super::in_flight)'s; the chat loop in `client/mod.rs` calls these.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::mpsc;

use crate::protocol::{
    encode_datagram, Datagram, DirectMessage, PeerInfo, ServerMessage, MAX_DATAGRAM_BYTES,
};
use crate::runtime::{self, UdpSocket};
use crate::sealed::{Kind, OVERHEAD};

use super::direct_inbox::{DirectInbox, DropSummary, Received, SentCounts};
use super::event::ClientEvent;
use super::file_mail::{FileMail, FileNews, FileNotSent};
use super::in_flight::{Busy, Due, InFlight, MAX_IN_FLIGHT};
use super::pairs::{Pairs, SealRefused};
use super::peer_identities::{IdentityCommandError, PeerIdentities};
use super::peer_list::PeerList;
use crate::protocol::file::{self as file_message, FileMessage, FileSignal, TransferId};

/// A direct message that left: for whom, its id, and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sent {
    pub(super) to: String,
    pub(super) id: u64,
    pub(super) destination: SocketAddr,
}

/// Why a direct message was not sent; each says so ("nothing was sent").
#[derive(Debug, thiserror::Error)]
pub(super) enum NotSent {
    /// `/msg` to the person themselves: it would reach this very client, under a key no peer
    /// has, and be dropped as forged.
    #[error("that is you: a direct message goes to someone else; nothing was sent")]
    ToSelf,
    #[error("no such user online: {to}; nothing was sent")]
    NotOnline { to: String },
    #[error(
        "{to} seals direct messages, and this client speaks the clear protocol (--plaintext): \
         it would drop them; nothing was sent"
    )]
    PeerSeals { to: String },
    #[error(
        "{to} speaks the clear protocol (--plaintext): direct messages to it would not be \
         private, so this client does not send them; nothing was sent"
    )]
    PeerIsClear { to: String },
    #[error(
        "direct message too long: one datagram carries at most {max} bytes of message; nothing was sent"
    )]
    TooLong { max: usize },
    #[error("{0}; nothing was sent: wait for their delivery reports")]
    Busy(#[from] Busy),
    #[error("{0}; nothing was sent")]
    Refused(#[from] SealRefused),
    #[error("could not send to {} at {}: {source}", .peer.username, .peer.p2p_addr())]
    Network {
        peer: PeerInfo,
        source: std::io::Error,
    },
}

/// A retransmission timer that fired: the peer's name and the message id.
pub(super) type TimerFired = (String, u64);

/// Sending direct messages, and the per-session state that takes: the pairwise keys (absent in
/// `--plaintext` mode), the messages awaiting an acknowledgement, and their timers.
pub(super) struct Courier {
    udp: Arc<UdpSocket>,
    /// `None` in `--plaintext` mode.
    pairs: Option<Pairs>,
    /// Whom the pairwise keys may be made with: each peer's identity checked against its pin.
    /// `None` in `--plaintext` mode.
    identities: Option<PeerIdentities>,
    in_flight: InFlight,
    timers: mpsc::Sender<TimerFired>,
    next_id: u64,
    /// What became of the messages sent, for `/stats`.
    counts: SentCounts,
    /// File messages awaiting an acknowledgement, and what became of file messages sent and
    /// received, for the transfers' table.
    files: FileMail,
}

impl Courier {
    /// A courier sending from `udp`, sealing with `pairs` (or clear when `None`); timers fire
    /// into the receiver returned with it.
    pub(super) fn new(
        udp: Arc<UdpSocket>,
        pairs: Option<Pairs>,
        identities: Option<PeerIdentities>,
    ) -> (Courier, mpsc::Receiver<TimerFired>) {
        // One timer per message in flight at most, and those are bounded.
        let (timers, fired) = mpsc::channel(MAX_IN_FLIGHT);
        let courier = Courier {
            udp,
            pairs,
            identities,
            in_flight: InFlight::default(),
            timers,
            next_id: 1,
            counts: SentCounts::default(),
            files: FileMail::default(),
        };
        (courier, fired)
    }

    /// What became of the messages sent so far.
    pub(super) fn sent_counts(&self) -> SentCounts {
        self.counts
    }

    /// A new session after logging in again (a reconnect): its keys replace the ended one's.
    /// Messages still awaiting an acknowledgement under the old keys run out their tries.
    pub(super) fn replace_pairs(&mut self, pairs: Option<Pairs>) {
        self.pairs = pairs;
    }

    /// What the inbox makes of one received datagram, with the acknowledgement it calls for
    /// sent, as the event the person sees (if any).
    pub(super) async fn receive(
        &mut self,
        inbox: &mut DirectInbox,
        payload: &[u8],
        source: SocketAddr,
        peers: &PeerList,
        now: Instant,
    ) -> Option<ClientEvent> {
        let Some(pairs) = self.pairs.as_mut() else {
            return received_event(inbox.receive(payload, source, peers, now));
        };
        let received = inbox.receive_sealed(payload, source, peers, pairs, now);
        match &received {
            Received::Delivered { from, id, .. } | Received::Duplicate { from, id, .. } => {
                if let Some(warning) = self.acknowledge(from, *id, peers).await {
                    return Some(warning);
                }
            }
            Received::Acked { from, id } => {
                let to = self.in_flight.acked(from, *id)?;
                if self.files.acked(&to, *id) {
                    return None;
                }
                self.counts.acknowledged += 1;
                return Some(ClientEvent::DirectDelivered { to, id: *id });
            }
            Received::File { from, message, .. } => {
                if let Some(warning) = self.acknowledge(from, message.id, peers).await {
                    return Some(warning);
                }
            }
            _ => {}
        }
        if let Received::File { from, message, .. } = received {
            self.files.arrived(from, message);
            return None;
        }
        received_event(received)
    }

    /// Sends a sealed acknowledgement of `id` to `from`'s announced address; a warning if it
    /// could not be sent.
    async fn acknowledge(&mut self, from: &str, id: u64, peers: &PeerList) -> Option<ClientEvent> {
        let pairs = self.pairs.as_mut()?;
        let peer = peers.get(from)?;
        let sent = match pairs.seal(peer, Kind::Ack, &id.to_be_bytes()) {
            Ok(ack) => self
                .udp
                .send_to(&ack, peer.p2p_addr())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(refused) => Err(refused.to_string()),
        };
        sent.err().map(|why| ClientEvent::Warning {
            message: format!("could not acknowledge a direct message from {from}: {why}"),
        })
    }

    /// Sends a direct message to `to`: what left (a sealed one is then awaited: its timer brings
    /// its retries and at last `direct_failed`, its acknowledgement `direct_delivered`), or why
    /// nothing did — checked before anything is shown as said.
    ///
    /// # Errors
    /// [`NotSent`], each cause; nothing was sent.
    pub(super) async fn send(
        &mut self,
        peers: &PeerList,
        me: &str,
        to: String,
        text: String,
    ) -> Result<Sent, NotSent> {
        // Names are unique without regard to case, as the server has them.
        if to.eq_ignore_ascii_case(me) {
            return Err(NotSent::ToSelf);
        }
        let Some(peer) = peers.get(&to).cloned() else {
            return Err(NotSent::NotOnline { to });
        };
        let id = self.next_id;
        let message = Datagram::Direct(DirectMessage {
            from: me.to_string(),
            id,
            text,
        });
        let destination = peer.p2p_addr();
        let sent = Sent {
            to: peer.username.clone(),
            id,
            destination,
        };
        let Some(pairs) = self.pairs.as_mut() else {
            if peer.public_key.is_some() {
                return Err(NotSent::PeerSeals { to: peer.username });
            }
            let Some(payload) = encode_datagram(&message) else {
                return Err(NotSent::TooLong {
                    max: MAX_DATAGRAM_BYTES,
                });
            };
            self.next_id += 1;
            return match self.udp.send_to(&payload, destination).await {
                Ok(_) => {
                    self.counts.sent += 1;
                    Ok(sent)
                }
                Err(e) => Err(NotSent::Network { peer, source: e }),
            };
        };
        let Some(key) = peer.public_key else {
            return Err(NotSent::PeerIsClear { to: peer.username });
        };
        let plaintext = serde_json::to_vec(&message).expect("datagrams always serialize");
        if plaintext.len() + OVERHEAD > MAX_DATAGRAM_BYTES {
            return Err(NotSent::TooLong {
                max: MAX_DATAGRAM_BYTES - OVERHEAD,
            });
        }
        self.in_flight.check_room(&peer.username)?;
        let sealed = pairs.seal(&peer, Kind::Message, &plaintext)?;
        self.next_id += 1;
        if let Err(e) = self.udp.send_to(&sealed, destination).await {
            return Err(NotSent::Network { peer, source: e });
        }
        self.counts.sent += 1;
        let wait = self.in_flight.sent(&peer.username, key, id, plaintext);
        self.start_timer(&peer.username, id, wait);
        Ok(sent)
    }

    /// A retransmission timer fired: send again (sealed anew, under a new counter), or report
    /// the message as not delivered.
    pub(super) async fn timer_fired(
        &mut self,
        (to, id): TimerFired,
        peers: &PeerList,
    ) -> Option<ClientEvent> {
        let peer = peers.get(&to).cloned();
        let current_key = peer.as_ref().and_then(|p| p.public_key);
        match self.in_flight.due(&to, id, current_key) {
            Due::Nothing => None,
            Due::GiveUp { to } if self.files.given_up(&to, id) => None,
            Due::GiveUp { to } => {
                self.counts.not_delivered += 1;
                let reason = if current_key.is_some() {
                    format!("no answer from {to}")
                } else {
                    format!("{to} left or logged in again before answering")
                };
                Some(ClientEvent::DirectFailed { to, id, reason })
            }
            Due::Resend {
                to,
                plaintext,
                wait,
            } => {
                let peer = peer?;
                let kind = self.files.kind_of(&to, id);
                if let Some(pairs) = self.pairs.as_mut() {
                    if let Ok(sealed) = pairs.seal(&peer, kind, &plaintext) {
                        // A failed send is one more lost try: the schedule goes on.
                        let _ = self.udp.send_to(&sealed, peer.p2p_addr()).await;
                    }
                }
                self.start_timer(&to, id, wait);
                None
            }
        }
    }

    fn start_timer(&self, to: &str, id: u64, wait: Duration) {
        let mut timers = self.timers.clone();
        let fired = (to.to_string(), id);
        runtime::spawn(async move {
            runtime::sleep(wait).await;
            // The chat loop may have ended meanwhile; then nobody awaits the timer.
            let _ = timers.try_send(fired);
        });
    }

    /// Tells the inbox and the pairwise keys what a message from the server means: a peer that
    /// left or joined starts a new session (new key, ids from 1 again), so what its last session
    /// sent must not make its new messages look like replays, and its old key is retired. A full
    /// list (`peers`, `welcome`) ends the session of everyone missing from it. Every peer entry's
    /// identity is checked ([`PeerIdentities::vet`]): its session key admitted to the pairwise
    /// keys or withheld, its verified mark set, and what is news told through `emit`.
    pub(super) fn track_sessions(
        &mut self,
        inbox: &mut DirectInbox,
        message: &ServerMessage,
        peers: &mut PeerList,
        emit: &mut dyn FnMut(ClientEvent),
    ) {
        match message {
            ServerMessage::Joined { peer } => {
                inbox.forget_peer(&peer.username);
                if let Some(pairs) = self.pairs.as_mut() {
                    pairs.peer_gone(&peer.username);
                    pairs.peer_online(peer);
                }
                self.vet(peer, peers, emit);
            }
            ServerMessage::Left { username } => {
                inbox.forget_peer(username);
                if let Some(pairs) = self.pairs.as_mut() {
                    pairs.peer_gone(username);
                }
                if let Some(identities) = self.identities.as_mut() {
                    identities.forget(username);
                }
                peers.set_verified(username, false);
            }
            ServerMessage::Peers { peers: list } | ServerMessage::Welcome { peers: list, .. } => {
                inbox.keep_only(list.iter().map(|peer| peer.username.as_str()));
                if let Some(pairs) = self.pairs.as_mut() {
                    pairs.replace(list);
                }
                if let Some(identities) = self.identities.as_mut() {
                    identities.keep_only(list.iter().map(|peer| peer.username.as_str()));
                }
                for peer in list {
                    self.vet(peer, peers, emit);
                }
            }
            _ => return,
        }
        if let Some(pairs) = &self.pairs {
            inbox.keep_current_keys(pairs);
        }
    }

    /// Checks one peer entry's identity and opens or closes the gate in the pairwise keys.
    fn vet(&mut self, peer: &PeerInfo, peers: &mut PeerList, emit: &mut dyn FnMut(ClientEvent)) {
        let (Some(identities), Some(pairs)) = (self.identities.as_mut(), self.pairs.as_mut())
        else {
            return;
        };
        let Some((session, verdict, events)) = identities.vet(peer) else {
            return;
        };
        if verdict.admits() {
            pairs.admit(&peer.username, session);
        } else {
            pairs.withhold(&peer.username);
        }
        peers.set_verified(&peer.username, identities.is_verified(&peer.username));
        events.into_iter().for_each(emit);
    }

    /// `/verify NAME` (`confirm`: `/verify NAME confirm`) and `/trust NAME`: what to show.
    pub(super) fn identity_command(
        &mut self,
        command: IdentityCommand,
        peers: &mut PeerList,
    ) -> ClientEvent {
        let result = match (self.identities.as_mut(), self.pairs.as_mut()) {
            (Some(identities), Some(pairs)) => match &command {
                IdentityCommand::Show(name) => identities.safety_number(name, peers.get(name)),
                IdentityCommand::Trust { name, verified } => identities
                    .trust(name, peers.get(name), *verified)
                    .map(|(session, event)| {
                        if let Some(peer) = peers.get(name) {
                            pairs.admit(&peer.username, session);
                        }
                        peers.set_verified(name, identities.is_verified(name));
                        event
                    }),
            },
            _ => Err(IdentityCommandError::NoOwnIdentity),
        };
        result.unwrap_or_else(|e| ClientEvent::error(e.to_string()))
    }
}

/// What `/verify` and `/trust` ask of the identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum IdentityCommand {
    /// `/verify NAME`: show the safety number.
    Show(String),
    /// `/trust NAME` (`verified` false) or `/verify NAME confirm` (true).
    Trust { name: String, verified: bool },
}

/// What the person sees of a received datagram: the message, a warning about its drop, or
/// nothing (a drop only counted, for the next summary; a retransmission; an acknowledgement).
pub(super) fn received_event(received: Received) -> Option<ClientEvent> {
    match received {
        Received::Delivered {
            from,
            id,
            text,
            source,
        } => Some(ClientEvent::Direct {
            from,
            id,
            text,
            source,
        }),
        Received::Dropped(dropped) => Some(ClientEvent::Warning {
            message: dropped.to_string(),
        }),
        Received::Counted
        | Received::Duplicate { .. }
        | Received::Acked { .. }
        | Received::File { .. } => None,
    }
}

/// The periodic summary of drops that got no warning of their own, as a warning.
pub(super) fn summary_event(summary: DropSummary) -> ClientEvent {
    ClientEvent::Warning {
        message: summary.to_string(),
    }
}

/// File messages: a transfer's offer and answers ([`file_mail`](super::file_mail)).
impl Courier {
    /// Sends `signal` about `transfer` to the online peer `to`, sealed and then awaited as a
    /// direct message is; its fate comes back as [`FileNews`]. Returns the peer as it is online.
    ///
    /// # Errors
    /// [`FileNotSent`], each cause; nothing was sent.
    pub(crate) async fn send_file(
        &mut self,
        peers: &PeerList,
        me: &str,
        to: &str,
        transfer: TransferId,
        signal: FileSignal,
    ) -> Result<PeerInfo, FileNotSent> {
        if to.eq_ignore_ascii_case(me) {
            return Err(FileNotSent::ToSelf);
        }
        let Some(peer) = peers.get(to).cloned() else {
            return Err(FileNotSent::NotOnline { to: to.to_string() });
        };
        let Some(pairs) = self.pairs.as_mut() else {
            return Err(FileNotSent::Plaintext);
        };
        let Some(key) = peer.public_key else {
            return Err(FileNotSent::PeerIsClear {
                to: peer.username.clone(),
            });
        };
        let id = self.next_id;
        let message = FileMessage {
            from: me.to_string(),
            id,
            transfer,
            signal: signal.clone(),
        };
        let plaintext = file_message::encode(&message);
        if plaintext.len() + OVERHEAD > MAX_DATAGRAM_BYTES {
            return Err(FileNotSent::TooLong);
        }
        self.in_flight.check_room(&peer.username)?;
        let sealed = pairs.seal(&peer, Kind::File, &plaintext)?;
        self.next_id += 1;
        if let Err(source) = self.udp.send_to(&sealed, peer.p2p_addr()).await {
            return Err(FileNotSent::Network { peer, source });
        }
        let wait = self.in_flight.sent(&peer.username, key, id, plaintext);
        self.files.sent(&peer.username, id, transfer, signal);
        self.start_timer(&peer.username, id, wait);
        Ok(peer)
    }

    /// What became of file messages since last asked, oldest first.
    pub(crate) fn take_file_news(&mut self) -> Vec<FileNews> {
        self.files.take_news()
    }

    /// The pairwise keys with the online `peer`, for a transfer's data connection; `None` in
    /// `--plaintext` mode or when no keys can be made with it.
    pub(crate) fn pair_keys(&mut self, peer: &PeerInfo) -> Option<crate::sealed::PairKeys> {
        self.pairs.as_mut()?.keys(peer).ok().cloned()
    }

    /// The online peer whose current session key `key_id` names, as the server spells it.
    pub(crate) fn peer_by_key_id<'a>(
        &self,
        key_id: &crate::sealed::KeyId,
        peers: &'a PeerList,
    ) -> Option<&'a PeerInfo> {
        let name = self.pairs.as_ref()?.named_by(key_id)?;
        peers.get(name)
    }

    /// This session's key id (what a data connection's opening names), if sealing.
    pub(crate) fn my_key_id(&self) -> Option<crate::sealed::KeyId> {
        Some(self.pairs.as_ref()?.public_key().key_id())
    }
}
