//! Flood control: the server's policy for a client that sends lines too fast. Every line passes
//! a token bucket ([`crate::rate_limit`]); past the burst a line is dropped with a warning, and a
//! client that keeps on without pausing long enough to refill its burst is disconnected.
//!
//! Beside the token bucket rather than in it: the bucket is a mechanism that the client's direct
//! inbox shares, the strikes and their forgiveness are the server's policy. Pure, like the
//! bucket: the caller passes the time, and acts on the [`Verdict`] (this module never sends or
//! closes anything). [`FloodLimit`]'s defaults are here (the burst and rate in [`crate::rules`], which
//! the client shares).

use std::time::Instant;

use crate::rate_limit::TokenBucket;
pub use crate::rules::{DEFAULT_FLOOD_BURST, DEFAULT_FLOOD_RATE};

/// Default for `--flood-strikes`: lines dropped for flooding, without a pause long enough to
/// refill the burst, before the client is disconnected.
pub const DEFAULT_FLOOD_STRIKES: u32 = 10;

/// Per-client flood control: a token bucket on every line the client sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodLimit {
    pub burst: u32,
    pub per_second: f64,
    pub strikes: u32,
}

impl Default for FloodLimit {
    fn default() -> Self {
        FloodLimit {
            burst: DEFAULT_FLOOD_BURST,
            per_second: DEFAULT_FLOOD_RATE,
            strikes: DEFAULT_FLOOD_STRIKES,
        }
    }
}

/// Flood control for one client: a token bucket on every line it sends, and the lines dropped
/// since it last paused.
pub struct FloodControl {
    limit: FloodLimit,
    bucket: TokenBucket,
    /// Lines dropped since the client last paused long enough to refill its burst.
    dropped: u32,
}

/// What to do with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Drop the line and warn; `dropped` lines so far.
    Drop {
        dropped: u32,
    },
    /// The last strike: disconnect the client.
    Disconnect,
}

impl FloodControl {
    pub fn new(limit: FloodLimit, now: Instant) -> FloodControl {
        FloodControl {
            limit,
            bucket: TokenBucket::new(limit.burst, limit.per_second, now),
            dropped: 0,
        }
    }

    /// The limit this control applies (for the warning that quotes it).
    pub fn limit(&self) -> FloodLimit {
        self.limit
    }

    /// Counts a line that arrived at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        if self.dropped > 0 && self.bucket.is_full(now) {
            self.dropped = 0;
        }
        if self.bucket.try_take(now) {
            return Verdict::Allow;
        }
        self.dropped += 1;
        if self.dropped >= self.limit.strikes {
            Verdict::Disconnect
        } else {
            Verdict::Drop {
                dropped: self.dropped,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flood_control_warns_then_disconnects_and_forgives_a_pause() {
        let limit = FloodLimit {
            burst: 2,
            per_second: 1.0,
            strikes: 3,
        };
        let t0 = Instant::now();
        let mut flood = FloodControl::new(limit, t0);
        assert!(matches!(flood.check(t0), Verdict::Allow));
        assert!(matches!(flood.check(t0), Verdict::Allow));
        assert!(matches!(flood.check(t0), Verdict::Drop { dropped: 1 }));
        assert!(matches!(flood.check(t0), Verdict::Drop { dropped: 2 }));
        // A pause that refills the whole burst forgives the warnings.
        let t1 = t0 + Duration::from_secs(2);
        assert!(matches!(flood.check(t1), Verdict::Allow));
        assert!(matches!(flood.check(t1), Verdict::Allow));
        assert!(matches!(flood.check(t1), Verdict::Drop { dropped: 1 }));
        assert!(matches!(flood.check(t1), Verdict::Drop { dropped: 2 }));
        assert!(matches!(flood.check(t1), Verdict::Disconnect));
    }
}
