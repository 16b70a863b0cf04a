//! The gate every received direct-message datagram passes before the person sees it: the checks,
//! and what became of each datagram ([`Received`]). It reports outcomes as its own types and
//! knows nothing of the client's events; `client/direct.rs` turns them into warnings and messages.
//!
//! Checks, cheapest and most basic first; the first that fails drops the datagram and counts it:
//! 1. `oversized`: longer than [`DirectLimits::max_bytes`];
//! 2. `malformed`: not a `direct` datagram (not UTF-8, not JSON, unknown type, bad fields);
//! 3. `unknown_source`: not sent from the address that the peer it names announced to the server
//!    (a spoofed or stale sender);
//! 4. `replayed`: that sender already delivered a datagram with this `id`, or one so much newer
//!    that this `id` is too old to tell (`replay_window`);
//! 5. `rate_limited`: the sender used up its token bucket ([`DirectLimits::burst`] datagrams at
//!    once, refilled at [`DirectLimits::rate`] per second).
//!
//! A sender is the online peer a datagram names together with the address it came from
//! (`Sender`). Its rate limit and its replay memory are only consulted once the source check
//! has passed, so a forgery from elsewhere in a peer's name never spends that peer's budget or
//! marks its ids as seen, and a replay is dropped before it costs a token. Both tables hold
//! online peers only and are capped ([`MAX_TRACKED_SOURCES`], [`MAX_REPLAY_SENDERS`]) so that
//! memory stays bounded whatever the peer list says (`source_buckets`, `replay_window`). The
//! replay memory belongs to the peer's session: [`DirectInbox::forget_peer`] drops it when the
//! server says the peer left or joined, since a restarted client counts its ids from 1 again.
//!
//! Reporting never floods the terminal (`report`): the first drop of each kind from each source is
//! [`Received::Dropped`], worth a warning of its own (at most [`WARNINGS_PER_INTERVAL`] per
//! [`SUMMARY_INTERVAL`]); every other drop is [`Received::Counted`] and summed up in one
//! [`DropSummary`] at most once per [`SUMMARY_INTERVAL`]. The running totals are always available
//! as a [`DirectStats`] (`/stats`, `stats`).
//!
//! A client that seals (the default) takes only sealed datagrams ([`DirectInbox::receive_sealed`]),
//! checked in this order; the first that fails drops the datagram and counts it:
//! 1. `oversized`, as above;
//! 2. `unsealed`: a clear JSON datagram (it starts with `{`); `truncated`: too short for a
//!    header and tag; `malformed`: a version or kind this client does not know;
//! 3. `stale_session`: its key id names the key of a peer's ended session; `unknown_key`: a key
//!    that no online peer has (and no ended session had);
//! 4. `unknown_source`: not sent from the announced address of the peer whose key it names;
//! 5. `forged`: it does not authenticate under that key (ChaCha20-Poly1305);
//! 6. `replayed`: its counter was already authenticated under that key, or is more than the
//!    replay window older than the newest (`replay_window`);
//! 7. an acknowledgement ends here ([`Received::Acked`]); a message goes on to `rate_limited`,
//!    then `malformed` (a plaintext that is not a `direct` message from that peer), and then its
//!    id: one already shown is a retransmission ([`Received::Duplicate`]: acknowledged again,
//!    not shown), anything else is [`Received::Delivered`]. A file message (an offer or an
//!    answer, [`Kind::File`]) goes the same way, its plaintext a [`FileMessage`] from that peer;
//!    a new one is [`Received::File`], for the transfers' table.
//!
//! Nothing before step 5 is believed, and nothing is remembered before it: a forgery can neither
//! mark a counter as seen nor spend the peer's tokens.
//!
//! The limits' defaults live in [`config`](super::config); the table sizes, the replay window and
//! the intervals above are fixed and live beside the code they bound. This module never does I/O
//! and takes the time as an argument, so it is tested without a clock.

use std::net::SocketAddr;
use std::time::Instant;

use super::pairs::{Pairs, SealRefused};
use super::peer_list::PeerList;
use crate::protocol::file::{self, FileMessage};
use crate::protocol::{decode_datagram, Datagram, DecodeError, DirectMessage};
use crate::sealed::{Header, Kind, OpenError};

mod replay_window;
mod report;
mod sender;
mod source_buckets;
mod stats;

pub use super::config::DirectLimits;
pub use replay_window::{MAX_REPLAY_SENDERS, REPLAY_WINDOW};
pub use report::{DropSummary, MAX_WARNED_PAIRS, SUMMARY_INTERVAL, WARNINGS_PER_INTERVAL};
pub use source_buckets::MAX_TRACKED_SOURCES;
pub use stats::{DirectStats, DropCounts, DropKind, SentCounts};

use replay_window::{SeenCounters, SeenIds};
use report::DropReporter;
use sender::Sender;
use source_buckets::SourceBuckets;

/// What became of one received datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// It passed every check: a direct message from the online peer `from` (the name as the
    /// server spells it), received from `source`, that peer's announced address.
    Delivered {
        from: String,
        id: u64,
        text: String,
        source: SocketAddr,
    },
    /// A sealed retransmission of a message already delivered: not shown again, but to be
    /// acknowledged again (the first acknowledgement was lost).
    Duplicate {
        from: String,
        id: u64,
        source: SocketAddr,
    },
    /// A sealed acknowledgement from `from` of the message `id` this client sent.
    Acked { from: String, id: u64 },
    /// A sealed file message (an offer or an answer) that passed every check a direct message
    /// passes, from the online peer `from`: for the transfers' table, and to be acknowledged.
    File {
        from: String,
        message: FileMessage,
        source: SocketAddr,
    },
    /// Dropped, and worth a warning of its own.
    Dropped(Dropped),
    /// Dropped and only counted: it will be in the next [`DropSummary`].
    Counted,
}

/// Why a datagram was refused: the first check it failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// Longer than the `limit` accepted.
    #[error("{size} bytes, more than the {limit} accepted")]
    Oversized { size: usize, limit: usize },
    /// Not a `direct` datagram.
    #[error("{0}")]
    Malformed(DecodeError),
    /// Not from the announced address of the online peer it names; `claimed` is that name as the
    /// datagram gives it.
    #[error(
        "it claims to be from {claimed:?}, but that is not the announced address of an online peer"
    )]
    UnknownSource { claimed: String },
    /// The sender already delivered a datagram with this `id` (a captured datagram sent again), or
    /// `id` is more than the replay window older than the newest it delivered.
    #[error(
        "{claimed:?} already sent a direct message with id {id}, or one more than {window} ids \
         newer: a replayed datagram"
    )]
    Replayed {
        claimed: String,
        id: u64,
        window: u64,
    },
    /// A clear JSON datagram at a client that seals.
    #[error("a clear (unsealed) datagram; this client takes only sealed direct messages")]
    Unsealed,
    /// A sealed datagram this client cannot read: too short, or a version or kind it does not
    /// know.
    #[error("{0}")]
    Unreadable(OpenError),
    /// The key it names belongs to no online peer now; `ended` when it was a peer's earlier
    /// session.
    #[error("{}", if *ended { "sealed under the key of a session that has ended" } else { "sealed under a key that no online peer has" })]
    UnknownKey { ended: bool },
    /// Not sent from the announced address of the peer whose key it names.
    #[error("sealed under {claimed:?}'s key, but not from {claimed:?}'s announced address")]
    SealedFromElsewhere { claimed: String },
    /// It does not authenticate under the key its header names.
    #[error("it names {claimed:?}'s key but does not decrypt under it: forged or corrupted")]
    Forged { claimed: String },
    /// Sealed under the key of a peer whose identity this client does not trust now: not
    /// opened ([`super::pairs::SealRefused::Untrusted`]).
    #[error("sealed under {claimed:?}'s session key, whose identity is not trusted now (see /verify {claimed}); not opened")]
    Untrusted { claimed: String },
    /// Its counter was already authenticated under that key (a captured datagram sent again).
    #[error("{claimed:?} already sent a datagram with counter {counter}, or one more than {window} newer: a replayed datagram")]
    ReplayedCounter {
        claimed: String,
        counter: u64,
        window: u64,
    },
    /// The sender used up its token bucket (`burst`, refilled at `rate` per second).
    #[error(
        "{claimed:?} sent more than {burst} direct messages at once ({rate} per second after \
         that); the excess is dropped"
    )]
    RateLimited {
        claimed: String,
        burst: u32,
        rate: f64,
    },
}

impl Rejection {
    /// The counter this rejection goes into.
    pub fn kind(&self) -> DropKind {
        match self {
            Rejection::Oversized { .. } => DropKind::Oversized,
            Rejection::Malformed(_) => DropKind::Malformed,
            Rejection::UnknownSource { .. } => DropKind::UnknownSource,
            Rejection::RateLimited { .. } => DropKind::RateLimited,
            Rejection::Replayed { .. } | Rejection::ReplayedCounter { .. } => DropKind::Replayed,
            Rejection::Unsealed => DropKind::Unsealed,
            Rejection::Unreadable(OpenError::Truncated { .. }) => DropKind::Truncated,
            Rejection::Unreadable(_) => DropKind::Malformed,
            Rejection::UnknownKey { ended: true } => DropKind::StaleSession,
            Rejection::UnknownKey { ended: false } => DropKind::UnknownKey,
            Rejection::SealedFromElsewhere { .. } => DropKind::UnknownSource,
            Rejection::Forged { .. } => DropKind::Forged,
            Rejection::Untrusted { .. } => DropKind::Untrusted,
        }
    }
}

/// A dropped datagram that gets a warning of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    /// The address it came from.
    pub sender: SocketAddr,
    pub rejection: Rejection,
}

/// The warning as a person reads it.
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dropped a datagram from {} ({}): {}; more like it are only counted (/stats)",
            self.sender,
            self.rejection.kind().as_str(),
            self.rejection
        )
    }
}

/// The state behind the checks: limits, buckets, counters, reporting.
#[derive(Debug)]
pub struct DirectInbox {
    limits: DirectLimits,
    buckets: SourceBuckets,
    seen: SeenIds,
    counters: SeenCounters,
    stats: DirectStats,
    reporter: DropReporter,
}

impl DirectInbox {
    pub fn new(limits: DirectLimits) -> Self {
        DirectInbox {
            limits,
            buckets: SourceBuckets::new(limits.burst, limits.rate),
            seen: SeenIds::default(),
            counters: SeenCounters::default(),
            stats: DirectStats::default(),
            reporter: DropReporter::default(),
        }
    }

    /// Checks one datagram received at `now` from `source`: delivered, dropped with a warning,
    /// or dropped and only counted (for the next summary).
    pub fn receive(
        &mut self,
        payload: &[u8],
        source: SocketAddr,
        peers: &PeerList,
        now: Instant,
    ) -> Received {
        self.stats.received = self.stats.received.saturating_add(1);
        let checked = self.check(payload, source, peers, now);
        self.account(checked, source, now)
    }

    /// Checks one sealed datagram received at `now` from `source` (a client that seals takes
    /// no other kind): delivered, a retransmission or an acknowledgement, dropped with a
    /// warning, or dropped and only counted.
    pub fn receive_sealed(
        &mut self,
        payload: &[u8],
        source: SocketAddr,
        peers: &PeerList,
        pairs: &mut Pairs,
        now: Instant,
    ) -> Received {
        self.stats.received = self.stats.received.saturating_add(1);
        let checked = self.check_sealed(payload, source, peers, pairs, now);
        self.account(checked, source, now)
    }

    /// Counts an outcome, and decides whether a drop gets a warning of its own.
    fn account(
        &mut self,
        checked: Result<Received, Rejection>,
        source: SocketAddr,
        now: Instant,
    ) -> Received {
        match checked {
            // A file message is counted among the datagrams received, not the messages shown.
            Ok(received @ Received::File { .. }) => received,
            Ok(received) => {
                let counter = match received {
                    Received::Acked { .. } => &mut self.stats.acks,
                    Received::Duplicate { .. } => &mut self.stats.duplicates,
                    _ => &mut self.stats.delivered,
                };
                *counter = counter.saturating_add(1);
                received
            }
            Err(rejection) => {
                let kind = rejection.kind();
                self.stats.dropped.add(kind);
                if self.reporter.should_warn(kind, source, now) {
                    Received::Dropped(Dropped {
                        sender: source,
                        rejection,
                    })
                } else {
                    Received::Counted
                }
            }
        }
    }

    /// The sealed checks, in the order of the module's header.
    fn check_sealed(
        &mut self,
        payload: &[u8],
        source: SocketAddr,
        peers: &PeerList,
        pairs: &mut Pairs,
        now: Instant,
    ) -> Result<Received, Rejection> {
        if payload.len() > self.limits.max_bytes {
            return Err(Rejection::Oversized {
                size: payload.len(),
                limit: self.limits.max_bytes,
            });
        }
        if payload.first() == Some(&b'{') {
            return Err(Rejection::Unsealed);
        }
        let header = Header::parse(payload).map_err(Rejection::Unreadable)?;
        let Some(peer) = pairs
            .named_by(&header.key_id)
            .and_then(|name| peers.get(name))
            .cloned()
        else {
            return Err(Rejection::UnknownKey {
                ended: pairs.is_retired(&header.key_id),
            });
        };
        let claimed = peer.username.clone();
        if peers.verify_source(&peer.username, source).is_none() {
            return Err(Rejection::SealedFromElsewhere { claimed });
        }
        let keys = pairs.keys(&peer).map_err(|refused| match refused {
            SealRefused::Untrusted { .. } => Rejection::Untrusted {
                claimed: claimed.clone(),
            },
            _ => Rejection::UnknownKey { ended: true },
        })?;
        let plaintext = keys.open(&header, payload).map_err(|_| Rejection::Forged {
            claimed: claimed.clone(),
        })?;
        if !self
            .counters
            .check_and_record(header.key_id, header.counter)
        {
            return Err(Rejection::ReplayedCounter {
                claimed,
                counter: header.counter,
                window: REPLAY_WINDOW,
            });
        }
        if header.kind == Kind::Ack {
            let id: [u8; 8] = plaintext.as_slice().try_into().map_err(|_| {
                Rejection::Malformed(DecodeError::Malformed(
                    "an acknowledgement holds an 8-byte id".into(),
                ))
            })?;
            return Ok(Received::Acked {
                from: claimed,
                id: u64::from_be_bytes(id),
            });
        }
        let sender = Sender::new(&peer.username, source);
        if !self.buckets.take(&sender, now) {
            return Err(Rejection::RateLimited {
                claimed,
                burst: self.limits.burst,
                rate: self.limits.rate,
            });
        }
        if header.kind == Kind::File {
            let message = file::decode(&plaintext).map_err(Rejection::Malformed)?;
            if !message.from.eq_ignore_ascii_case(&peer.username) {
                return Err(Rejection::Malformed(DecodeError::Malformed(
                    "the sealed file message names another sender than its key".into(),
                )));
            }
            if !self.seen.is_new(&sender, message.id) {
                return Ok(Received::Duplicate {
                    from: claimed,
                    id: message.id,
                    source,
                });
            }
            self.seen.record(&sender, message.id, now);
            return Ok(Received::File {
                from: claimed,
                message,
                source,
            });
        }
        let DirectMessage { from, id, text } = match decode_datagram(&plaintext) {
            Ok(Datagram::Direct(message)) => message,
            Err(e) => return Err(Rejection::Malformed(e)),
        };
        if !from.eq_ignore_ascii_case(&peer.username) {
            return Err(Rejection::Malformed(DecodeError::Malformed(
                "the sealed message names another sender than its key".into(),
            )));
        }
        if !self.seen.is_new(&sender, id) {
            return Ok(Received::Duplicate {
                from: claimed,
                id,
                source,
            });
        }
        self.seen.record(&sender, id, now);
        Ok(Received::Delivered {
            from: claimed,
            id,
            text,
            source,
        })
    }

    /// The checks, in order; the first that fails rejects the datagram.
    fn check(
        &mut self,
        payload: &[u8],
        source: SocketAddr,
        peers: &PeerList,
        now: Instant,
    ) -> Result<Received, Rejection> {
        if payload.len() > self.limits.max_bytes {
            return Err(Rejection::Oversized {
                size: payload.len(),
                limit: self.limits.max_bytes,
            });
        }
        let DirectMessage { from, id, text } = match decode_datagram(payload) {
            Ok(Datagram::Direct(message)) => message,
            Err(e) => return Err(Rejection::Malformed(e)),
        };
        let Some(peer) = peers.verify_source(&from, source) else {
            return Err(Rejection::UnknownSource { claimed: from });
        };
        let sender = Sender::new(&peer.username, source);
        if !self.seen.is_new(&sender, id) {
            return Err(Rejection::Replayed {
                claimed: from,
                id,
                window: REPLAY_WINDOW,
            });
        }
        if !self.buckets.take(&sender, now) {
            return Err(Rejection::RateLimited {
                claimed: from,
                burst: self.limits.burst,
                rate: self.limits.rate,
            });
        }
        // Only a delivered id is remembered: one dropped by the rate limit was never shown, so
        // it is not a replay if it comes again.
        self.seen.record(&sender, id, now);
        Ok(Received::Delivered {
            from: peer.username.clone(),
            id,
            text,
            source,
        })
    }

    /// Forgets what `username`'s last session delivered, so that its next one (a restarted
    /// client, counting ids from 1 again) is not taken for a replay. Call it when the server
    /// says the peer left or joined.
    pub fn forget_peer(&mut self, username: &str) {
        let gone = username.to_ascii_lowercase();
        self.seen.retain_names(|name| name != gone);
    }

    /// Forgets the sessions of everyone not in `online` (the server's full list of who is
    /// online: whoever is missing has left).
    pub fn keep_only<'a>(&mut self, online: impl IntoIterator<Item = &'a str>) {
        let online: std::collections::HashSet<String> =
            online.into_iter().map(str::to_ascii_lowercase).collect();
        self.seen.retain_names(|name| online.contains(name));
    }

    /// Forgets the counter windows of keys that name no online peer any more (call it after
    /// `pairs` has heard of a change in who is online).
    pub fn keep_current_keys(&mut self, pairs: &Pairs) {
        self.counters.retain(|key| pairs.named_by(key).is_some());
    }

    /// The summary of drops not yet reported, when one is due; call it now and then.
    pub fn summary(&mut self, now: Instant) -> Option<DropSummary> {
        self.reporter.summary(now)
    }

    /// The running totals.
    pub fn stats(&self) -> DirectStats {
        DirectStats {
            sources_tracked: self.buckets.len(),
            shown: self.stats.delivered,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::protocol::{encode_datagram, PeerInfo};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn peers() -> PeerList {
        let mut list = PeerList::default();
        list.insert(PeerInfo {
            username: "alice".into(),
            ip: addr("127.0.0.1:4000").ip(),
            p2p_port: 4000,
            public_key: None,
            identity_key: None,
            identity_binding: None,
        });
        list
    }

    /// An inbox whose per-sender bucket holds `burst` and refills at `rate` a second.
    fn bucketed(burst: u32, rate: f64) -> DirectInbox {
        DirectInbox::new(DirectLimits {
            burst,
            rate,
            ..DirectLimits::default()
        })
    }

    fn direct(from: &str, id: u64) -> Vec<u8> {
        encode_datagram(&Datagram::Direct(DirectMessage {
            from: from.into(),
            id,
            text: "hi".into(),
        }))
        .unwrap()
    }

    #[test]
    fn a_burst_passes_then_the_refill_rate_applies() {
        let mut inbox = bucketed(3, 2.0);
        let (peers, alice, t0) = (peers(), addr("127.0.0.1:4000"), Instant::now());
        let mut id = 0;
        let mut delivered = |inbox: &mut DirectInbox, at: Instant| {
            id += 1;
            matches!(
                inbox.receive(&direct("alice", id), alice, &peers, at),
                Received::Delivered { .. }
            )
        };
        let first: Vec<bool> = (0..5).map(|_| delivered(&mut inbox, t0)).collect();
        assert_eq!(first, [true, true, true, false, false]);
        // Half a second at 2 per second gives one token back.
        let later = t0 + Duration::from_millis(500);
        assert!(delivered(&mut inbox, later));
        assert!(!delivered(&mut inbox, later));
        let stats = inbox.stats();
        assert_eq!((stats.received, stats.delivered), (7, 4));
        assert_eq!(stats.dropped.rate_limited, 3);
    }

    #[test]
    fn each_kind_of_drop_is_counted() {
        let mut inbox = DirectInbox::new(DirectLimits {
            max_bytes: 100,
            ..DirectLimits::default()
        });
        let (peers, now) = (peers(), Instant::now());
        let stranger = addr("127.0.0.1:5000");
        inbox.receive(&[b'x'; 101], stranger, &peers, now);
        inbox.receive(b"\xff\xfe", stranger, &peers, now);
        inbox.receive(b"{\"type\":\"direct\"}", stranger, &peers, now);
        inbox.receive(&direct("alice", 1), stranger, &peers, now);
        let stats = inbox.stats();
        assert_eq!(stats.received, 4);
        assert_eq!(
            stats.dropped,
            DropCounts {
                oversized: 1,
                malformed: 2,
                unknown_source: 1,
                rate_limited: 0,
                replayed: 0,
                ..DropCounts::default()
            }
        );
        assert_eq!(stats.sources_tracked, 0, "strangers never get a bucket");
    }

    #[test]
    fn a_replayed_datagram_is_dropped_once_delivered_and_counted() {
        let mut inbox = DirectInbox::new(DirectLimits::default());
        let (peers, alice, now) = (peers(), addr("127.0.0.1:4000"), Instant::now());
        let datagram = direct("alice", 7);
        assert!(matches!(
            inbox.receive(&datagram, alice, &peers, now),
            Received::Delivered { id: 7, .. }
        ));
        let Received::Dropped(dropped) = inbox.receive(&datagram, alice, &peers, now) else {
            panic!("the replay was not dropped with a warning");
        };
        assert_eq!(
            dropped.to_string(),
            "dropped a datagram from 127.0.0.1:4000 (replayed): \"alice\" already sent a direct \
             message with id 7, or one more than 1024 ids newer: a replayed datagram; more like it \
             are only counted (/stats)"
        );
        // The same id under another spelling of the name, or from the IPv4-mapped address, is the
        // same sender.
        let mapped = addr("[::ffff:127.0.0.1]:4000");
        assert!(!matches!(
            inbox.receive(&direct("ALICE", 7), mapped, &peers, now),
            Received::Delivered { .. }
        ));
        let stats = inbox.stats();
        assert_eq!((stats.received, stats.delivered), (3, 1));
        assert_eq!(stats.dropped.replayed, 2);
        assert_eq!(stats.dropped.rate_limited, 0, "a replay costs no token");
    }

    #[test]
    fn a_peer_that_left_or_joined_again_may_count_from_one_again() {
        let mut inbox = DirectInbox::new(DirectLimits::default());
        let (mut peers, alice, now) = (peers(), addr("127.0.0.1:4000"), Instant::now());
        let delivered = |inbox: &mut DirectInbox, peers: &PeerList| {
            matches!(
                inbox.receive(&direct("alice", 1), alice, peers, now),
                Received::Delivered { .. }
            )
        };
        assert!(delivered(&mut inbox, &peers));
        assert!(!delivered(&mut inbox, &peers));
        inbox.forget_peer("Alice");
        assert!(delivered(&mut inbox, &peers), "after left or joined");
        inbox.keep_only(["alice"]);
        assert!(!delivered(&mut inbox, &peers), "still the same session");
        peers.insert(PeerInfo {
            username: "bob".into(),
            ip: addr("127.0.0.2:1").ip(),
            p2p_port: 4000,
            public_key: None,
            identity_key: None,
            identity_binding: None,
        });
        inbox.keep_only(["bob"]);
        assert!(delivered(&mut inbox, &peers), "alice was not in the list");
    }

    #[test]
    fn forgeries_from_elsewhere_neither_spend_the_peers_tokens_nor_burn_its_ids() {
        let mut inbox = bucketed(3, 0.0);
        let (peers, alice, now) = (peers(), addr("127.0.0.1:4000"), Instant::now());
        for (id, forger) in ["127.0.0.1:4001", "127.0.0.2:4000", "[::1]:4000"]
            .iter()
            .cycle()
            .take(300)
            .enumerate()
        {
            inbox.receive(&direct("alice", id as u64), addr(forger), &peers, now);
        }
        assert_eq!(inbox.stats().dropped.unknown_source, 300);
        let delivered: Vec<u64> = (0..4)
            .filter_map(
                |id| match inbox.receive(&direct("alice", id), alice, &peers, now) {
                    Received::Delivered { id, .. } => Some(id),
                    _ => None,
                },
            )
            .collect();
        assert_eq!(delivered, [0, 1, 2], "alice's whole burst, her own ids");
        // The rate-limited one was never shown, so it is not a replay when it comes again.
        inbox.receive(&direct("alice", 3), alice, &peers, now);
        let stats = inbox.stats();
        assert_eq!(stats.dropped.rate_limited, 2);
        assert_eq!(stats.dropped.replayed, 0);
    }

    #[test]
    fn a_flood_gets_one_warning_per_kind_and_source_then_one_summary_per_interval() {
        let mut inbox = DirectInbox::new(DirectLimits::default());
        let (peers, t0) = (peers(), Instant::now());
        let stranger = addr("127.0.0.1:5000");
        let warnings = (0..1000)
            .filter(|_| {
                matches!(
                    inbox.receive(&direct("alice", 1), stranger, &peers, t0),
                    Received::Dropped(_)
                )
            })
            .count();
        assert_eq!(warnings, 1);
        assert!(inbox.summary(t0 + Duration::from_secs(1)).is_none());
        let Some(summary) = inbox.summary(t0 + SUMMARY_INTERVAL) else {
            panic!("no summary");
        };
        let message = summary.to_string();
        assert!(message.contains("999 unknown_source"), "{message}");
        assert!(
            inbox.summary(t0 + SUMMARY_INTERVAL * 2).is_none(),
            "nothing new"
        );
    }

    #[test]
    fn many_sources_get_at_most_a_few_warnings_per_interval() {
        let mut inbox = DirectInbox::new(DirectLimits::default());
        let (peers, t0) = (peers(), Instant::now());
        let warnings = (0..1000u16)
            .filter(|i| {
                let source = SocketAddr::new(addr("127.0.0.1:1").ip(), 10_000 + i);
                matches!(
                    inbox.receive(b"junk", source, &peers, t0),
                    Received::Dropped(_)
                )
            })
            .count();
        assert_eq!(warnings, WARNINGS_PER_INTERVAL as usize);
    }

    #[test]
    fn warnings_read_as_before() {
        let mut inbox = bucketed(1, 0.5);
        let (peers, now) = (peers(), Instant::now());
        let (alice, stranger) = (addr("127.0.0.1:4000"), addr("127.0.0.1:5000"));
        let warning = |received: Received| match received {
            Received::Dropped(dropped) => dropped.to_string(),
            other => panic!("not a warning: {other:?}"),
        };
        assert_eq!(
            warning(inbox.receive(&direct("alice", 1), stranger, &peers, now)),
            "dropped a datagram from 127.0.0.1:5000 (unknown_source): it claims to be from \"alice\", \
             but that is not the announced address of an online peer; more like it are only counted (/stats)"
        );
        assert_eq!(
            inbox.receive(&direct("Alice", 2), alice, &peers, now),
            Received::Delivered {
                from: "alice".into(),
                id: 2,
                text: "hi".into(),
                source: alice
            }
        );
        assert_eq!(
            warning(inbox.receive(&direct("Alice", 3), alice, &peers, now)),
            "dropped a datagram from 127.0.0.1:4000 (rate_limited): \"Alice\" sent more than 1 direct \
             messages at once (0.5 per second after that); the excess is dropped; more like it are only \
             counted (/stats)"
        );
        assert_eq!(
            warning(inbox.receive(&[b'x'; 70_000], alice, &peers, now)),
            "dropped a datagram from 127.0.0.1:4000 (oversized): 70000 bytes, more than the 65507 \
             accepted; more like it are only counted (/stats)"
        );
        let not_json = warning(inbox.receive(b"junk", alice, &peers, now));
        let decode_error = decode_datagram(b"junk").unwrap_err();
        assert_eq!(
            not_json,
            format!("dropped a datagram from 127.0.0.1:4000 (malformed): {decode_error}; more like it are only counted (/stats)")
        );
    }
}
