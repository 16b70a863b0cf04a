//! The rate limit on received direct messages: a token bucket per sender — the online peer a
//! datagram names together with the address it came from — in a table whose size is bounded
//! whatever the peer list says.
//!
//! The inbox takes a token only for a datagram that passed the source check, so a forgery sent
//! from elsewhere in a peer's name never reaches that peer's bucket; and a bucket belongs to a
//! name *and* an address, so no other account can spend it even from the same address.

use std::collections::HashMap;
use std::time::Instant;

use super::sender::Sender;
use crate::rate_limit::TokenBucket;

/// Most senders whose token buckets are kept. When full, a bucket that has refilled (and
/// so is no different from a new one) is forgotten first, else the one least recently used.
pub const MAX_TRACKED_SOURCES: usize = 256;

/// A token bucket per sender, in a table of at most [`MAX_TRACKED_SOURCES`].
#[derive(Debug)]
pub(super) struct SourceBuckets {
    burst: u32,
    rate: f64,
    /// Each sender's bucket and when it was last used.
    buckets: HashMap<Sender, (TokenBucket, Instant)>,
}

impl SourceBuckets {
    pub(super) fn new(burst: u32, rate: f64) -> Self {
        SourceBuckets {
            burst,
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token from `sender`'s bucket; `false` when it is empty.
    pub(super) fn take(&mut self, sender: &Sender, now: Instant) -> bool {
        if !self.buckets.contains_key(sender) && self.buckets.len() >= MAX_TRACKED_SOURCES {
            self.make_room(now);
        }
        let (burst, rate) = (self.burst, self.rate);
        let (bucket, used) = self
            .buckets
            .entry(sender.clone())
            .or_insert_with(|| (TokenBucket::new(burst, rate, now), now));
        *used = now;
        bucket.try_take(now)
    }

    /// How many senders have a bucket now.
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
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
                .map(|(sender, _)| sender.clone());
            if let Some(sender) = oldest {
                self.buckets.remove(&sender);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_table_stays_bounded() {
        let mut buckets = SourceBuckets::new(2, 0.0);
        let now = Instant::now();
        for port in 0..(MAX_TRACKED_SOURCES as u16 * 4) {
            let sender = Sender::new("alice", std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            buckets.take(&sender, now);
            buckets.take(&sender, now);
        }
        assert_eq!(buckets.buckets.len(), MAX_TRACKED_SOURCES);
    }
}
