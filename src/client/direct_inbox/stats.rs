//! The direct-message counters `/stats` shows, each named for what it counts: of the messages
//! this client sent, how many were acknowledged by their recipient or given up on
//! ([`SentCounts`]); of the datagrams it received, how many were messages shown,
//! acknowledgements, retransmissions, or dropped by reason ([`DropKind`]).

use std::fmt;

use serde::Serialize;

/// Why a datagram was dropped: the name of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropKind {
    Oversized,
    Malformed,
    UnknownSource,
    RateLimited,
    Replayed,
    /// A clear JSON datagram at a client that seals.
    Unsealed,
    /// Too short for a sealed header and tag.
    Truncated,
    /// Sealed under a key that no online peer has and no ended session had.
    UnknownKey,
    /// Sealed under the key of a peer's ended session.
    StaleSession,
    /// Does not authenticate under the key its header names.
    Forged,
    /// Sealed under the session key of a peer whose identity is not trusted now (changed and not
    /// yet `/trust`ed, or a binding that does not verify): not even opened.
    Untrusted,
}

impl DropKind {
    /// Every kind, in the order of the JSON form.
    pub const ALL: [DropKind; 11] = [
        DropKind::Oversized,
        DropKind::Malformed,
        DropKind::UnknownSource,
        DropKind::RateLimited,
        DropKind::Replayed,
        DropKind::Unsealed,
        DropKind::Truncated,
        DropKind::UnknownKey,
        DropKind::StaleSession,
        DropKind::Forged,
        DropKind::Untrusted,
    ];
}

impl DropKind {
    /// The counter's name in `/stats` and its JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::Oversized => "oversized",
            DropKind::Malformed => "malformed",
            DropKind::UnknownSource => "unknown_source",
            DropKind::RateLimited => "rate_limited",
            DropKind::Replayed => "replayed",
            DropKind::Unsealed => "unsealed",
            DropKind::Truncated => "truncated",
            DropKind::UnknownKey => "unknown_key",
            DropKind::StaleSession => "stale_session",
            DropKind::Forged => "forged",
            DropKind::Untrusted => "untrusted",
        }
    }
}

/// Dropped datagrams, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    pub oversized: u64,
    pub malformed: u64,
    pub unknown_source: u64,
    pub rate_limited: u64,
    /// After the older fields in the JSON form, so that they keep their places.
    pub replayed: u64,
    pub unsealed: u64,
    pub truncated: u64,
    pub unknown_key: u64,
    pub stale_session: u64,
    pub forged: u64,
    pub untrusted: u64,
}

impl DropCounts {
    fn counter(&mut self, kind: DropKind) -> &mut u64 {
        match kind {
            DropKind::Oversized => &mut self.oversized,
            DropKind::Malformed => &mut self.malformed,
            DropKind::UnknownSource => &mut self.unknown_source,
            DropKind::RateLimited => &mut self.rate_limited,
            DropKind::Replayed => &mut self.replayed,
            DropKind::Unsealed => &mut self.unsealed,
            DropKind::Truncated => &mut self.truncated,
            DropKind::UnknownKey => &mut self.unknown_key,
            DropKind::StaleSession => &mut self.stale_session,
            DropKind::Forged => &mut self.forged,
            DropKind::Untrusted => &mut self.untrusted,
        }
    }

    /// The count of one kind.
    pub fn get(&self, kind: DropKind) -> u64 {
        *self.clone().counter(kind)
    }

    pub(super) fn add(&mut self, kind: DropKind) {
        let counter = self.counter(kind);
        *counter = counter.saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        DropKind::ALL
            .iter()
            .fold(0u64, |sum, kind| sum.saturating_add(self.get(*kind)))
    }
}

/// "3 oversized, 10 rate_limited": the non-zero counts, for a person.
impl fmt::Display for DropCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = DropKind::ALL
            .iter()
            .map(|kind| (self.get(*kind), kind))
            .filter(|(n, _)| *n > 0)
            .map(|(n, kind)| format!("{n} {}", kind.as_str()))
            .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Totals since the client started. Of the datagrams received, each is a message shown, an
/// acknowledgement, a retransmission of a message already shown, or dropped; of the messages
/// sent, each is acknowledged, not delivered, or still awaiting its answer.
///
/// The JSON form keeps its first fields' names for the scripts that read them; `delivered` is
/// the old name of `shown` (messages received and shown here, not messages of this client's
/// that reached someone: those are `acknowledged`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectStats {
    /// Datagrams received, of every kind and outcome.
    pub received: u64,
    /// Messages received and shown: the old name of [`DirectStats::shown`].
    pub delivered: u64,
    pub dropped: DropCounts,
    /// Senders (a peer's name and address) whose token buckets are held now (at most
    /// [`MAX_TRACKED_SOURCES`](super::MAX_TRACKED_SOURCES)).
    pub sources_tracked: usize,
    /// Sealed acknowledgements received (of messages this client sent).
    pub acks: u64,
    /// Sealed retransmissions of a message already shown: acknowledged again, not shown.
    pub duplicates: u64,
    /// Messages received and shown (the same count as `delivered`, by a name that says so).
    pub shown: u64,
    /// What became of the messages this client sent.
    #[serde(flatten)]
    pub outgoing: SentCounts,
}

impl DirectStats {
    /// These counters of received datagrams with the counts of messages sent.
    pub fn with_sent(self, outgoing: SentCounts) -> DirectStats {
        DirectStats { outgoing, ..self }
    }
}

/// The messages this client sent, since it started: each left it (`sent`), and once its
/// recipient answers is `acknowledged`, or after every try is `not_delivered`. In the clear
/// protocol (`--plaintext`) nothing is acknowledged: only `sent` counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SentCounts {
    pub sent: u64,
    pub acknowledged: u64,
    pub not_delivered: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_the_non_zero_ones() {
        let mut counts = DropCounts::default();
        assert_eq!(counts.to_string(), "none");
        counts.add(DropKind::Oversized);
        for _ in 0..10 {
            counts.add(DropKind::RateLimited);
        }
        assert_eq!(counts.to_string(), "1 oversized, 10 rate_limited");
        assert_eq!(counts.total(), 11);
    }
}
