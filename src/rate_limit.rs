//! A token bucket: the rate limit behind the server's flood control ([`crate::flood`]) and the
//! client's limit on direct messages per sender (and anything else that allows a burst and then a
//! steady rate).
//!
//! Pure: the caller passes the time, so the arithmetic is tested without waiting. It only counts;
//! what to do with an event over the limit is the caller's policy.

use std::time::Instant;

/// Allows `burst` events at once, then `per_second` on average.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_second: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            burst: f64::from(burst),
            per_second: per_second.max(0.0),
            tokens: f64::from(burst),
            updated: now,
        }
    }

    /// Takes a token if there is one: `true` means the event is allowed.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled completely: the sender has paused long enough to have
    /// its whole burst back.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// How long until a token is there (zero if one is now); `None` if the bucket never
    /// refills (a rate of 0) and is empty.
    pub fn until_next(&mut self, now: Instant) -> Option<std::time::Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Some(std::time::Duration::ZERO);
        }
        if self.per_second <= 0.0 {
            return None;
        }
        // Rounded up to the microsecond: a wait cut short by rounding would find no token yet.
        let micros = ((1.0 - self.tokens) / self.per_second * 1e6).ceil();
        Some(std::time::Duration::from_micros(micros as u64))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 2.0, start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start), "the burst is spent");
        assert!(!bucket.is_full(start));
        let half_second = start + Duration::from_millis(500);
        assert!(
            bucket.try_take(half_second),
            "2/s refills one token in 0.5 s"
        );
        assert!(!bucket.try_take(half_second));
        let later = start + Duration::from_secs(60);
        assert!(bucket.is_full(later), "refills up to the burst, no further");
        assert!((0..3).all(|_| bucket.try_take(later)));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn until_next_says_when_the_next_token_comes() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1, 4.0, start);
        assert_eq!(bucket.until_next(start), Some(Duration::ZERO));
        assert!(bucket.try_take(start));
        let wait = bucket.until_next(start).unwrap();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-5, "{wait:?}");
        assert!(bucket.try_take(start + wait));
        let mut never = TokenBucket::new(1, 0.0, start);
        assert!(never.try_take(start));
        assert_eq!(never.until_next(start), None);
    }

    #[test]
    fn a_zero_rate_never_refills_and_time_going_backwards_is_harmless() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1, 0.0, start + Duration::from_secs(1));
        assert!(bucket.try_take(start));
        assert!(!bucket.try_take(start + Duration::from_secs(3600)));
    }
}
