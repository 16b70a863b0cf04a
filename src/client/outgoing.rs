//! The lines this client owes the server, paced to the server's flood control so that none is
//! ever dropped: the server announces its burst and rate in `hello` (an older server does not,
//! and its defaults are assumed), this client keeps a token bucket a little inside them, sends
//! what the bucket allows and queues the rest, in order. While the server is out of reach
//! (reconnecting) every line waits here too, *held*: the person was told it waits for the
//! server, and is told again once every held line has gone ([`Outgoing::released`]).
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

/// A line waiting to be sent, and whether it waits for the server (held) rather than only for
/// the pace.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub message: ClientMessage,
    held: bool,
}

/// The paced queue of lines for the server.
#[derive(Debug)]
pub struct Outgoing {
    bucket: TokenBucket,
    queue: VecDeque<Waiting>,
    max_queued: usize,
    /// Held room lines sent since the last [`Outgoing::released`] report.
    released: usize,
}

impl Outgoing {
    /// A queue paced inside `pace`, from a connection that has just sent its login.
    pub fn new(pace: ServerPace, max_queued: usize, now: Instant) -> Outgoing {
        Outgoing {
            bucket: bucket(pace, now),
            queue: VecDeque::new(),
            max_queued,
            released: 0,
        }
    }

    /// A new connection (after a reconnect): its own pace, from a fresh server-side bucket; the
    /// lines still waiting stay, in order.
    pub fn repace(&mut self, pace: ServerPace, now: Instant) {
        self.bucket = bucket(pace, now);
    }

    /// Queues a line the person typed (or a request of theirs); a room line queued while the
    /// server is `away` is held.
    ///
    /// # Errors
    /// [`QueueFull`] when `--max-queued-lines` lines already wait: nothing was queued.
    pub fn push(&mut self, message: ClientMessage, away: bool) -> Result<(), QueueFull> {
        if self.queue.len() >= self.max_queued {
            return Err(QueueFull(self.queue.len()));
        }
        let held = away && is_room_line(&message);
        self.queue.push_back(Waiting { message, held });
        Ok(())
    }

    /// Queues a line ahead of the others (the answer to the server's `ping`, which must not wait
    /// behind a paste). Never refused: the server sends one `ping` at a time.
    pub fn push_front(&mut self, message: ClientMessage) {
        self.queue.push_front(Waiting {
            message,
            held: false,
        });
    }

    /// The server was lost: every room line still waiting now waits for it too (it was shown
    /// as said, and goes only once logged in again), so it counts in the next
    /// [`Outgoing::released`] report.
    pub fn hold_all(&mut self) {
        for waiting in &mut self.queue {
            waiting.held = is_room_line(&waiting.message);
        }
    }

    /// The next line, if the pace allows one now.
    pub fn pop_ready(&mut self, now: Instant) -> Option<Waiting> {
        if self.queue.is_empty() || !self.bucket.try_take(now) {
            return None;
        }
        let waiting = self.queue.pop_front()?;
        self.released += usize::from(waiting.held);
        Some(waiting)
    }

    /// Puts back a line that could not be sent (the connection broke), first in line.
    pub fn put_back(&mut self, waiting: Waiting) {
        self.released = self.released.saturating_sub(usize::from(waiting.held));
        self.queue.push_front(waiting);
    }

    /// How many held lines went since the last report, once the last of them has gone (`None`
    /// before, or when none was held): the moment to tell the person they are sent.
    pub fn released(&mut self) -> Option<usize> {
        if self.released == 0 || self.queue.iter().any(|waiting| waiting.held) {
            return None;
        }
        Some(std::mem::take(&mut self.released))
    }

    /// Held lines still waiting for the server.
    pub fn held(&self) -> usize {
        self.queue.iter().filter(|waiting| waiting.held).count()
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

/// What the person says to the room, as opposed to a request (`list`) or a `pong`.
fn is_room_line(message: &ClientMessage) -> bool {
    matches!(message, ClientMessage::Say(_))
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
            outgoing.push(say(n), false).unwrap();
        }
        let mut now = start;
        let mut sent = Vec::new();
        while let Some(wait) = outgoing.next_in(now) {
            now += wait;
            let line = outgoing
                .pop_ready(now)
                .expect("a line once the wait is over");
            assert_eq!(server.check(now), Verdict::Allow, "line {}", sent.len());
            sent.push(line.message);
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
        outgoing.push(say(1), false).unwrap();
        outgoing.push(say(2), false).unwrap();
        assert_eq!(outgoing.push(say(3), false), Err(QueueFull(2)));
        outgoing.push_front(ClientMessage::Pong);
        assert_eq!(
            outgoing.pop_ready(start).map(|w| w.message),
            Some(ClientMessage::Pong)
        );
        assert_eq!(outgoing.len(), 2);
    }

    /// Lines typed while the server is away, and lines still waiting when it was lost, are
    /// reported sent once, when the last of them has gone; a line put back after a failed send
    /// is not counted twice, and requests and lines typed since are never counted.
    #[test]
    fn held_lines_are_reported_once_when_the_last_has_gone() {
        let start = Instant::now();
        let pace = ServerPace::announced(Some(100), Some(100.0));
        let mut outgoing = Outgoing::new(pace, 100, start);
        outgoing.push(say(1), false).unwrap();
        outgoing.hold_all(); // The server was lost with line 1 unsent.
        outgoing.push(say(2), true).unwrap();
        outgoing.push(ClientMessage::List, true).unwrap();
        assert_eq!(outgoing.held(), 2);
        assert_eq!(outgoing.released(), None, "nothing sent yet");
        outgoing.repace(pace, start);
        let first = outgoing.pop_ready(start).unwrap();
        assert_eq!(first.message, say(1));
        outgoing.put_back(first); // The new connection broke at once.
        let first = outgoing.pop_ready(start).unwrap();
        assert_eq!(first.message, say(1));
        assert_eq!(outgoing.released(), None, "line 2 still waits");
        outgoing.push(say(3), false).unwrap(); // Typed once logged in again.
        assert_eq!(outgoing.pop_ready(start).unwrap().message, say(2));
        assert_eq!(outgoing.released(), Some(2));
        assert_eq!(outgoing.released(), None, "reported once");
        assert_eq!(
            outgoing.pop_ready(start).unwrap().message,
            ClientMessage::List
        );
        assert_eq!(outgoing.pop_ready(start).unwrap().message, say(3));
        assert_eq!(outgoing.released(), None);
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
