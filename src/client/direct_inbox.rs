//! The gate every received direct-message datagram passes before the person sees it, the counters
//! of what it dropped, and the reporting of those drops.
//!
//! Checks, cheapest and most basic first; the first that fails drops the datagram and counts it:
//! 1. `oversized`: longer than [`DirectLimits::max_bytes`];
//! 2. `malformed`: not a `direct` datagram (not UTF-8, not JSON, unknown type, bad fields);
//! 3. `unknown_source`: not sent from the address that the peer it names announced to the server
//!    (a spoofed or stale sender);
//! 4. `rate_limited`: the sending address used up its token bucket ([`DirectLimits::burst`]
//!    datagrams at once, refilled at [`DirectLimits::rate`] per second).
//!
//! Only datagrams that passed the source check reach the rate limiter, so its table holds online
//! peers' addresses only; it is still capped at [`MAX_TRACKED_SOURCES`] so that memory stays
//! bounded whatever the peer list says.
//!
//! Reporting never floods the terminal: the first drop of each kind from each source gets a warning
//! of its own (at most [`WARNINGS_PER_INTERVAL`] such warnings per [`SUMMARY_INTERVAL`]); every
//! other drop is counted and summed up in one warning at most once per [`SUMMARY_INTERVAL`]. The
//! running totals are always available as a [`DirectStats`] (`/stats`).
//!
//! This module never does I/O and takes the time as an argument, so it is tested without a clock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::event::ClientEvent;
use super::peer_list::PeerList;
use crate::protocol::{decode_datagram, Datagram, DirectMessage, MAX_DATAGRAM_BYTES};
use crate::rate_limit::TokenBucket;

/// Default burst: direct messages one peer may send at once before being limited. Twenty covers a
/// person pasting a few lines or a script sending a short batch.
pub const DEFAULT_DM_BURST: u32 = 20;

/// Default refill rate, datagrams per second per peer: ten a second is far above anyone typing,
/// far below what would scroll a terminal out of reach.
pub const DEFAULT_DM_RATE: f64 = 10.0;

/// Default largest datagram accepted: the largest the protocol allows.
pub const DEFAULT_DM_MAX_BYTES: usize = MAX_DATAGRAM_BYTES;

/// Most source addresses whose token buckets are kept. When full, a bucket that has refilled (and
/// so is no different from a new one) is forgotten first, else the one least recently used.
pub const MAX_TRACKED_SOURCES: usize = 256;

/// Most (kind, source) pairs remembered as already warned about; past it, new pairs are only
/// counted in the summaries.
pub const MAX_WARNED_PAIRS: usize = 1024;

/// Individual warnings allowed per [`SUMMARY_INTERVAL`]; the rest go into the summary.
pub const WARNINGS_PER_INTERVAL: u32 = 5;

/// Shortest time between two summaries of dropped datagrams.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);

/// The limits applied to received direct messages (`--dm-burst`, `--dm-rate`, `--dm-max-bytes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirectLimits {
    /// Datagrams one source address may send at once (bucket size); at least 1.
    pub burst: u32,
    /// Datagrams per second added back to each source's bucket; 0 means never refilled.
    pub rate: f64,
    /// Largest datagram accepted, in bytes.
    pub max_bytes: usize,
}

impl Default for DirectLimits {
    fn default() -> Self {
        DirectLimits {
            burst: DEFAULT_DM_BURST,
            rate: DEFAULT_DM_RATE,
            max_bytes: DEFAULT_DM_MAX_BYTES,
        }
    }
}

impl DirectLimits {
    /// Checks the limits make sense; the error names the one that does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.burst == 0 {
            return Err("the direct-message burst must be at least 1".into());
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(format!(
                "the direct-message rate must be a number of datagrams per second, 0 or more, not {}",
                self.rate
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > MAX_DATAGRAM_BYTES {
            return Err(format!(
                "the largest direct message must be 1 to {MAX_DATAGRAM_BYTES} bytes, not {}",
                self.max_bytes
            ));
        }
        Ok(())
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropKind {
    Oversized,
    Malformed,
    UnknownSource,
    RateLimited,
}

impl DropKind {
    /// The counter's name in `/stats` and its JSON form.
    pub fn as_str(self) -> &'static str {
        match self {
            DropKind::Oversized => "oversized",
            DropKind::Malformed => "malformed",
            DropKind::UnknownSource => "unknown_source",
            DropKind::RateLimited => "rate_limited",
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
}

impl DropCounts {
    fn add(&mut self, kind: DropKind) {
        let counter = match kind {
            DropKind::Oversized => &mut self.oversized,
            DropKind::Malformed => &mut self.malformed,
            DropKind::UnknownSource => &mut self.unknown_source,
            DropKind::RateLimited => &mut self.rate_limited,
        };
        *counter = counter.saturating_add(1);
    }

    pub fn total(&self) -> u64 {
        self.oversized
            .saturating_add(self.malformed)
            .saturating_add(self.unknown_source)
            .saturating_add(self.rate_limited)
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
    /// Source addresses whose token buckets are held now (at most [`MAX_TRACKED_SOURCES`]).
    pub sources_tracked: usize,
}

/// A token bucket per source address, in a table of at most [`MAX_TRACKED_SOURCES`].
#[derive(Debug)]
struct SourceBuckets {
    burst: u32,
    rate: f64,
    /// Each source's bucket and when it was last used.
    buckets: HashMap<SocketAddr, (TokenBucket, Instant)>,
}

impl SourceBuckets {
    fn new(burst: u32, rate: f64) -> Self {
        SourceBuckets {
            burst,
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token from `source`'s bucket; `false` when it is empty.
    fn take(&mut self, source: SocketAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&source) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            self.make_room(now);
        }
        let (burst, rate) = (self.burst, self.rate);
        let (bucket, used) = self
            .buckets
            .entry(source)
            .or_insert_with(|| (TokenBucket::new(burst, rate, now), now));
        *used = now;
        bucket.try_take(now)
    }

    /// Forgets every bucket that is full again; if none is, the least recently used one.
    fn make_room(&mut self, now: Instant) {
        let before = self.buckets.len();
        self.buckets.retain(|_, (bucket, _)| !bucket.is_full(now));
        if self.buckets.len() == before {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(source, _)| *source);
            if let Some(source) = oldest {
                self.buckets.remove(&source);
            }
        }
    }
}

/// Decides which drops get a warning of their own, and sums up the rest.
#[derive(Debug, Default)]
struct DropReporter {
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
    fn should_warn(&mut self, kind: DropKind, source: SocketAddr, now: Instant) -> bool {
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
    fn summary(&mut self, now: Instant) -> Option<ClientEvent> {
        let since = self.unreported_since?;
        let span = now.saturating_duration_since(since);
        if span < SUMMARY_INTERVAL {
            return None;
        }
        let counts = std::mem::take(&mut self.unreported);
        self.unreported_since = None;
        Some(ClientEvent::Warning {
            message: format!(
                "dropped {} more direct-message datagrams in the last {} s ({counts}); /stats shows the totals",
                counts.total(),
                span.as_secs()
            ),
        })
    }
}

/// The state behind the checks: limits, buckets, counters, reporting.
#[derive(Debug)]
pub struct DirectInbox {
    limits: DirectLimits,
    buckets: SourceBuckets,
    stats: DirectStats,
    reporter: DropReporter,
}

impl DirectInbox {
    pub fn new(limits: DirectLimits) -> Self {
        DirectInbox {
            limits,
            buckets: SourceBuckets::new(limits.burst, limits.rate),
            stats: DirectStats::default(),
            reporter: DropReporter::default(),
        }
    }

    /// Checks one datagram received at `now` from `source`. Returns the direct message to show, a
    /// warning about a drop, or nothing (a drop that will be in the next summary).
    pub fn receive(
        &mut self,
        payload: &[u8],
        source: SocketAddr,
        peers: &PeerList,
        now: Instant,
    ) -> Option<ClientEvent> {
        self.stats.received = self.stats.received.saturating_add(1);
        if payload.len() > self.limits.max_bytes {
            let why = format!(
                "{} bytes, more than the {} accepted",
                payload.len(),
                self.limits.max_bytes
            );
            return self.drop(DropKind::Oversized, source, now, why);
        }
        let DirectMessage { from, id, text } = match decode_datagram(payload) {
            Ok(Datagram::Direct(message)) => message,
            Err(e) => return self.drop(DropKind::Malformed, source, now, e.to_string()),
        };
        let Some(peer) = peers.verify_source(&from, source) else {
            let why = format!(
                "it claims to be from {from:?}, but that is not the announced address of an online peer"
            );
            return self.drop(DropKind::UnknownSource, source, now, why);
        };
        if !self.buckets.take(source, now) {
            let why = format!(
                "{from:?} sent more than {} direct messages at once ({} per second after that); the excess is dropped",
                self.limits.burst, self.limits.rate
            );
            return self.drop(DropKind::RateLimited, source, now, why);
        }
        self.stats.delivered = self.stats.delivered.saturating_add(1);
        Some(ClientEvent::Direct {
            from: peer.username.clone(),
            id,
            text,
            source,
        })
    }

    fn drop(
        &mut self,
        kind: DropKind,
        source: SocketAddr,
        now: Instant,
        why: String,
    ) -> Option<ClientEvent> {
        self.stats.dropped.add(kind);
        self.reporter
            .should_warn(kind, source, now)
            .then(|| ClientEvent::Warning {
                message: format!(
                    "dropped a datagram from {source} ({}): {why}; more like it are only counted (/stats)",
                    kind.as_str()
                ),
            })
    }

    /// The summary of drops not yet reported, when one is due; call it now and then.
    pub fn summary(&mut self, now: Instant) -> Option<ClientEvent> {
        self.reporter.summary(now)
    }

    /// The running totals.
    pub fn stats(&self) -> DirectStats {
        DirectStats {
            sources_tracked: self.buckets.buckets.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        });
        list
    }

    fn direct(from: &str, id: u64) -> Vec<u8> {
        encode_datagram(&Datagram::Direct(DirectMessage {
            from: from.into(),
            id,
            text: "hi".into(),
        }))
        .unwrap()
    }

    fn limits(burst: u32, rate: f64) -> DirectLimits {
        DirectLimits {
            burst,
            rate,
            ..DirectLimits::default()
        }
    }

    #[test]
    fn a_burst_passes_then_the_refill_rate_applies() {
        let mut inbox = DirectInbox::new(limits(3, 2.0));
        let (peers, alice, t0) = (peers(), addr("127.0.0.1:4000"), Instant::now());
        let delivered = |inbox: &mut DirectInbox, at: Instant| {
            matches!(
                inbox.receive(&direct("alice", 1), alice, &peers, at),
                Some(ClientEvent::Direct { .. })
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
                rate_limited: 0
            }
        );
        assert_eq!(stats.sources_tracked, 0, "strangers never get a bucket");
    }

    #[test]
    fn a_flood_gets_one_warning_per_kind_and_source_then_one_summary_per_interval() {
        let mut inbox = DirectInbox::new(DirectLimits::default());
        let (peers, t0) = (peers(), Instant::now());
        let stranger = addr("127.0.0.1:5000");
        let warnings = (0..1000)
            .filter(|_| {
                inbox
                    .receive(&direct("alice", 1), stranger, &peers, t0)
                    .is_some()
            })
            .count();
        assert_eq!(warnings, 1);
        assert!(inbox.summary(t0 + Duration::from_secs(1)).is_none());
        let Some(ClientEvent::Warning { message }) = inbox.summary(t0 + SUMMARY_INTERVAL) else {
            panic!("no summary");
        };
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
                inbox.receive(b"junk", source, &peers, t0).is_some()
            })
            .count();
        assert_eq!(warnings, WARNINGS_PER_INTERVAL as usize);
    }

    #[test]
    fn the_bucket_table_stays_bounded() {
        let mut buckets = SourceBuckets::new(2, 0.0);
        let now = Instant::now();
        for port in 0..(MAX_TRACKED_SOURCES as u16 * 4) {
            let source = SocketAddr::new(addr("127.0.0.1:1").ip(), port);
            buckets.take(source, now);
            buckets.take(source, now);
        }
        assert_eq!(buckets.buckets.len(), MAX_TRACKED_SOURCES);
    }

    #[test]
    fn limits_are_validated() {
        assert!(DirectLimits::default().validate().is_ok());
        assert!(limits(0, 1.0).validate().unwrap_err().contains("burst"));
        assert!(limits(1, -1.0).validate().unwrap_err().contains("rate"));
        assert!(limits(1, f64::NAN).validate().unwrap_err().contains("rate"));
        let too_big = DirectLimits {
            max_bytes: MAX_DATAGRAM_BYTES + 1,
            ..DirectLimits::default()
        };
        assert!(too_big.validate().unwrap_err().contains("bytes"));
    }
}
