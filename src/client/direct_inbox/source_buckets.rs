//! The rate limit on received direct messages: a token bucket per source address, in a table
//! whose size is bounded whatever the peer list says.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::rate_limit::TokenBucket;

/// Most source addresses whose token buckets are kept. When full, a bucket that has refilled (and
/// so is no different from a new one) is forgotten first, else the one least recently used.
pub const MAX_TRACKED_SOURCES: usize = 256;

/// A token bucket per source address, in a table of at most [`MAX_TRACKED_SOURCES`].
#[derive(Debug)]
pub(super) struct SourceBuckets {
    burst: u32,
    rate: f64,
    /// Each source's bucket and when it was last used.
    buckets: HashMap<SocketAddr, (TokenBucket, Instant)>,
}

impl SourceBuckets {
    pub(super) fn new(burst: u32, rate: f64) -> Self {
        SourceBuckets {
            burst,
            rate,
            buckets: HashMap::new(),
        }
    }

    /// Takes a token from `source`'s bucket; `false` when it is empty.
    pub(super) fn take(&mut self, source: SocketAddr, now: Instant) -> bool {
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

    /// How many sources have a bucket now.
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
                .map(|(source, _)| *source);
            if let Some(source) = oldest {
                self.buckets.remove(&source);
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
        let ip = "127.0.0.1".parse().unwrap();
        for port in 0..(MAX_TRACKED_SOURCES as u16 * 4) {
            let source = SocketAddr::new(ip, port);
            buckets.take(source, now);
            buckets.take(source, now);
        }
        assert_eq!(buckets.buckets.len(), MAX_TRACKED_SOURCES);
    }
}
