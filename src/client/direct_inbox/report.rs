//! Reporting drops without flooding the terminal: which drops get a warning of their own, and the
//! periodic [`DropSummary`] of the rest.
//!
//! The first drop of each kind from each source gets a warning of its own (at most
//! [`WARNINGS_PER_INTERVAL`] such warnings per [`SUMMARY_INTERVAL`]); every other drop is counted
//! and summed up at most once per [`SUMMARY_INTERVAL`].

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::stats::{DropCounts, DropKind};

/// Most (kind, source) pairs remembered as already warned about; past it, new pairs are only
/// counted in the summaries.
pub const MAX_WARNED_PAIRS: usize = 1024;

/// Individual warnings allowed per [`SUMMARY_INTERVAL`]; the rest go into the summary.
pub const WARNINGS_PER_INTERVAL: u32 = 5;

/// Shortest time between two summaries of dropped datagrams.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

/// Drops that got no warning of their own, summed up once [`SUMMARY_INTERVAL`] has passed since
/// the first of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropSummary {
    /// The drops summed up, by kind.
    pub counts: DropCounts,
    /// From the first of them to now.
    pub span: Duration,
}

/// The summary as a person reads it.
impl fmt::Display for DropSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dropped {} more direct-message datagrams in the last {} s ({}); /stats shows the totals",
            self.counts.total(),
            self.span.as_secs(),
            self.counts
        )
    }
}

/// Decides which drops get a warning of their own, and sums up the rest.
#[derive(Debug, Default)]
pub(super) struct DropReporter {
    warned: HashSet<(DropKind, SocketAddr)>,
    /// Start of the current window for [`WARNINGS_PER_INTERVAL`].
    window_start: Option<Instant>,
    warnings_in_window: u32,
    /// Drops not warned about individually since the last summary, and when the first was.
    unreported: DropCounts,
    unreported_since: Option<Instant>,
}

impl DropReporter {
    /// Whether this drop gets its own warning; if not, it is kept for the next summary.
    pub(super) fn should_warn(&mut self, kind: DropKind, source: SocketAddr, now: Instant) -> bool {
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= SUMMARY_INTERVAL);
        if window_over {
            self.window_start = Some(now);
            self.warnings_in_window = 0;
        }
        let key = (kind, source);
        let first = !self.warned.contains(&key) && self.warned.len() < MAX_WARNED_PAIRS;
        if first && self.warnings_in_window < WARNINGS_PER_INTERVAL {
            self.warned.insert(key);
            self.warnings_in_window += 1;
            return true;
        }
        self.unreported.add(kind);
        self.unreported_since.get_or_insert(now);
        false
    }

    /// The summary of unreported drops, once [`SUMMARY_INTERVAL`] has passed since the first.
    pub(super) fn summary(&mut self, now: Instant) -> Option<DropSummary> {
        let since = self.unreported_since?;
        let span = now.saturating_duration_since(since);
        if span < SUMMARY_INTERVAL {
            return None;
        }
        let counts = std::mem::take(&mut self.unreported);
        self.unreported_since = None;
        Some(DropSummary { counts, span })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_reads_as_before() {
        let summary = DropSummary {
            counts: DropCounts {
                oversized: 3,
                rate_limited: 10,
                ..DropCounts::default()
            },
            span: Duration::from_millis(6_900),
        };
        assert_eq!(
            summary.to_string(),
            "dropped 13 more direct-message datagrams in the last 6 s (3 oversized, 10 rate_limited); /stats shows the totals"
        );
    }
}
