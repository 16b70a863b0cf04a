//! The counters of received direct-message datagrams: how many arrived, were delivered, and were
//! dropped by reason ([`DropKind`]). Shown by `/stats` and in its JSON form.

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
    /// Last in the JSON form, so that the fields before it keep their places.
    pub replayed: u64,
}

impl DropCounts {
    pub(super) fn add(&mut self, kind: DropKind) {
        let counter = match kind {
            DropKind::Oversized => &mut self.oversized,
            DropKind::Malformed => &mut self.malformed,
            DropKind::UnknownSource => &mut self.unknown_source,
            DropKind::RateLimited => &mut self.rate_limited,
            DropKind::Replayed => &mut self.replayed,
        };
        *counter = counter.saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        self.oversized
            .saturating_add(self.malformed)
            .saturating_add(self.unknown_source)
            .saturating_add(self.rate_limited)
            .saturating_add(self.replayed)
    }
}

/// "3 oversized, 10 rate_limited": the non-zero counts, for a person.
impl fmt::Display for DropCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.oversized, DropKind::Oversized),
            (self.malformed, DropKind::Malformed),
            (self.unknown_source, DropKind::UnknownSource),
            (self.rate_limited, DropKind::RateLimited),
            (self.replayed, DropKind::Replayed),
        ]
        .iter()
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

/// Totals since the client started: every datagram received is either delivered or dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DirectStats {
    pub received: u64,
    pub delivered: u64,
    pub dropped: DropCounts,
    /// Senders (a peer's name and address) whose token buckets are held now (at most
    /// [`MAX_TRACKED_SOURCES`](super::MAX_TRACKED_SOURCES)).
    pub sources_tracked: usize,
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
