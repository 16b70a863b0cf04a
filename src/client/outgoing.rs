//! The lines this client owes the server, paced to the server's flood control so that none is
//! ever dropped: the server announces its burst and rate in `hello` (an older server does not,
//! and its defaults are assumed), this client keeps a token bucket a little inside them, sends
//! what the bucket allows and queues the rest, in order. While the server is out of reach
//! (reconnecting) every line waits here too.
//!
//! Bounded: at most `--max-queued-lines` lines wait; a line past that is refused with an error
//! the person sees (never dropped silently). Pure, like the bucket: the caller passes the time
//! and does the sending and the waiting; this module never does I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::ClientMessage;
use crate::rate_limit::TokenBucket;
use crate::rules::{DEFAULT_FLOOD_BURST, DEFAULT_FLOOD_RATE};

/// Lines of the server's burst this client leaves unused: the login line took one from the
/// server's bucket, and one more absorbs lines that arrive closer together than they were sent.
pub const BURST_MARGIN: u32 = 2;

/// The share of the server's rate this client sends at, so that network jitter bunching two
/// lines never makes them arrive faster than the server refills.
pub const RATE_SHARE: f64 = 0.9;

/// The server's flood control, as its `hello` announced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerPace {
    pub burst: u32,
    pub per_second: f64,
}

impl ServerPace {
    /// From `hello`'s optional fields; an older server's are its defaults then.
    pub fn announced(burst: Option<u32>, per_second: Option<f64>) -> ServerPace {
        ServerPace {
            burst: burst.unwrap_or(DEFAULT_FLOOD_BURST),
            per_second: per_second
                .filter(|rate| rate.is_finite() && *rate >= 0.0)
                .unwrap_or(DEFAULT_FLOOD_RATE),
        }
    }
}

/// A line the queue had no room for; the person is told, and it was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not sent: {0} lines are already waiting to be sent (--max-queued-lines)")]
pub struct QueueFull(pub usize);

/// The paced queue of lines for the server.
#[derive(Debug)]
pub struct Outgoing {
    bucket: TokenBucket,
    queue: VecDeque<ClientMessage>,
    max_queued: usize,
}

impl Outgoing {
    /// A queue paced inside `pace`, from a connection that has just sent its login.
    pub fn new(pace: ServerPace, max_queued: usize, now: Instant) -> Outgoing {
        Outgoing {
            bucket: bucket(pace, now),
            queue: VecDeque::new(),
            max_queued,
        }
    }

    /// A new connection (after a reconnect): its own pace, from a fresh server-side bucket; the
    /// lines still waiting stay, in order.
    pub fn repace(&mut self, pace: ServerPace, now: Instant) {
        self.bucket = bucket(pace, now);
    }

    /// Queues a line the person typed (or a request of theirs).
    ///
    /// # Errors
    /// [`QueueFull`] when `--max-queued-lines` lines already wait: nothing was queued.
    pub fn push(&mut self, message: ClientMessage) -> Result<(), QueueFull> {
        if self.queue.len() >= self.max_queued {
            return Err(QueueFull(self.queue.len()));
        }
        self.queue.push_back(message);
        Ok(())
    }

    /// Queues a line ahead of the others (the answer to the server's `ping`, which must not wait
    /// behind a paste). Never refused: the server sends one `ping` at a time.
    pub fn push_front(&mut self, message: ClientMessage) {
        self.queue.push_front(message);
    }

    /// The next line, if the pace allows one now.
    pub fn pop_ready(&mut self, now: Instant) -> Option<ClientMessage> {
        if self.queue.is_empty() || !self.bucket.try_take(now) {
            return None;
        }
        self.queue.pop_front()
    }

    /// Puts back a line that could not be sent (the connection broke), first in line.
    pub fn put_back(&mut self, message: ClientMessage) {
        self.queue.push_front(message);
    }

    /// How long until the next waiting line may go; `None` with nothing waiting (or a server
    /// that allows nothing more).
    pub fn next_in(&mut self, now: Instant) -> Option<Duration> {
        if self.queue.is_empty() {
            return None;
        }
        self.bucket.until_next(now)
    }

    /// Lines waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

fn bucket(pace: ServerPace, now: Instant) -> TokenBucket {
    // At least one line at once, or nothing would ever go.
    let burst = pace.burst.saturating_sub(BURST_MARGIN).max(1);
    let mut bucket = TokenBucket::new(burst, pace.per_second * RATE_SHARE, now);
    // Start as the server's bucket is after the login line: one short of full, if it is more
    // than one.
    if burst > 1 {
        bucket.try_take(now);
    }
    bucket
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RoomLine;

    fn say(n: usize) -> ClientMessage {
        ClientMessage::Say(RoomLine::say(n.to_string()))
    }

    /// Replays the server's flood control on the times this queue sends at: nothing is dropped,
    /// and every line goes, in order.
    #[test]
    fn thirty_lines_pasted_at_once_all_pass_the_servers_flood_control_in_order() {
        use crate::flood::{FloodControl, FloodLimit, Verdict};
        let pace = ServerPace::announced(Some(10), Some(5.0));
        let start = Instant::now();
        let mut server = FloodControl::new(FloodLimit::default(), start);
        assert_eq!(server.check(start), Verdict::Allow, "the login line");
        let mut outgoing = Outgoing::new(pace, 1000, start);
        for n in 0..30 {
            outgoing.push(say(n)).unwrap();
        }
        let mut now = start;
        let mut sent = Vec::new();
        while let Some(wait) = outgoing.next_in(now) {
            now += wait;
            let line = outgoing
                .pop_ready(now)
                .expect("a line once the wait is over");
            assert_eq!(server.check(now), Verdict::Allow, "line {}", sent.len());
            sent.push(line);
        }
        assert_eq!(sent, (0..30).map(say).collect::<Vec<_>>());
        // 7 at once, then 4.5 a second: the rest in about five seconds.
        let took = now - start;
        assert!(took < Duration::from_secs(6), "{took:?}");
    }

    #[test]
    fn a_full_queue_refuses_and_says_so_and_a_ping_answer_goes_first() {
        let start = Instant::now();
        let mut outgoing = Outgoing::new(ServerPace::announced(None, None), 2, start);
        outgoing.push(say(1)).unwrap();
        outgoing.push(say(2)).unwrap();
        assert_eq!(outgoing.push(say(3)), Err(QueueFull(2)));
        outgoing.push_front(ClientMessage::Pong);
        assert_eq!(outgoing.pop_ready(start), Some(ClientMessage::Pong));
        assert_eq!(outgoing.len(), 2);
    }

    #[test]
    fn an_older_servers_hello_means_its_defaults() {
        assert_eq!(
            ServerPace::announced(None, Some(f64::NAN)),
            ServerPace {
                burst: DEFAULT_FLOOD_BURST,
                per_second: DEFAULT_FLOOD_RATE
            }
        );
    }
}
