//! Sealed direct messages sent and not yet acknowledged: what to send again and when, and when to
//! give up. The schedule: the first try, then a try after [`FIRST_RETRY`], each wait twice the
//! one before but at most [`MAX_RETRY_WAIT`], [`MAX_TRIES`] tries in all, and one more wait before
//! reporting `not delivered` — 100 + 200 + 6 × 400 ms = 2.7 s from the first try to the verdict.
//!
//! Why eight tries and not four: a message is lost for good only when every try is. At 20 %
//! random loss four tries lose one message in 625 (0.2⁴), so one in seven runs of 100 messages
//! would lose one; eight lose one in 390,625 (0.2⁸). On a LAN an answer takes a millisecond, so
//! the first retry can come soon, and capping the wait keeps the verdict under 3 s.
//!
//! Bounded: at most [`MAX_IN_FLIGHT_PER_PEER`] messages to one peer and [`MAX_IN_FLIGHT`] in all
//! await an answer; beyond that a send is refused, never queued. This module never does I/O and
//! never seals: the chat loop does both and asks it what is due.

use std::collections::HashMap;
use std::time::Duration;

use crate::protocol::PublicKey;

/// Tries in all (the first send and its retransmissions) before a message is reported as not
/// delivered.
pub const MAX_TRIES: u32 = 8;

/// Wait after the first try before the second; each later wait is twice the one before, up to
/// [`MAX_RETRY_WAIT`].
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Longest wait between two tries (and after the last one).
pub const MAX_RETRY_WAIT: Duration = Duration::from_millis(400);

/// Messages to one peer that may await an acknowledgement at once.
pub const MAX_IN_FLIGHT_PER_PEER: usize = 64;

/// Messages to all peers that may await an acknowledgement at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// One message awaiting its acknowledgement.
#[derive(Debug, Clone)]
struct Pending {
    /// The peer's name as the server spells it.
    to: String,
    /// The peer's session key when it was sent: a peer with another key is another session,
    /// which never got it.
    key: PublicKey,
    /// The sealed message's plaintext, sealed again (under a new counter) for each try.
    plaintext: Vec<u8>,
    tries: u32,
}

/// Messages awaiting an acknowledgement, by (lower-cased peer name, message id).
#[derive(Debug, Default)]
pub struct InFlight {
    pending: HashMap<(String, u64), Pending>,
}

/// Why a send was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("{MAX_IN_FLIGHT_PER_PEER} direct messages to {0} are still awaiting an answer")]
    Peer(String),
    #[error("{MAX_IN_FLIGHT} direct messages are still awaiting an answer")]
    All,
}

/// What to do when a message's timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Nothing: it was acknowledged (or given up) meanwhile.
    Nothing,
    /// Send `plaintext` to `to` again, sealed anew, and look again after `wait`.
    Resend {
        to: String,
        plaintext: Vec<u8>,
        wait: Duration,
    },
    /// Every try went unanswered: report it as not delivered.
    GiveUp { to: String },
}

/// The wait after try number `tries` (1 = the first send).
pub fn wait_after(tries: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(2u32.saturating_pow(tries.saturating_sub(1)));
    doubled.min(MAX_RETRY_WAIT)
}

/// From the first try to the `not delivered` verdict: every wait of the schedule.
pub fn time_to_verdict() -> Duration {
    (1..=MAX_TRIES).map(wait_after).sum()
}

impl InFlight {
    /// Whether one more message to `to` may be sent now.
    ///
    /// # Errors
    /// [`Busy`] when a bound is reached.
    pub fn check_room(&self, to: &str) -> Result<(), Busy> {
        if self.pending.len() >= MAX_IN_FLIGHT {
            return Err(Busy::All);
        }
        let name = to.to_ascii_lowercase();
        let to_peer = self.pending.keys().filter(|(n, _)| *n == name).count();
        if to_peer >= MAX_IN_FLIGHT_PER_PEER {
            return Err(Busy::Peer(to.to_string()));
        }
        Ok(())
    }

    /// Records message `id` just sent (first try) to `to` under `key`; returns the wait before
    /// its timer. Call [`InFlight::check_room`] first.
    pub fn sent(&mut self, to: &str, key: PublicKey, id: u64, plaintext: Vec<u8>) -> Duration {
        self.pending.insert(
            (to.to_ascii_lowercase(), id),
            Pending {
                to: to.to_string(),
                key,
                plaintext,
                tries: 1,
            },
        );
        wait_after(1)
    }

    /// An acknowledgement of `id` from `from`: the peer's name as the server spells it, when it
    /// was awaited (and it no longer is).
    pub fn acked(&mut self, from: &str, id: u64) -> Option<String> {
        self.pending
            .remove(&(from.to_ascii_lowercase(), id))
            .map(|p| p.to)
    }

    /// `id` to `to`'s timer fired; `current_key` is the peer's session key now (`None` when it
    /// is offline).
    pub fn due(&mut self, to: &str, id: u64, current_key: Option<PublicKey>) -> Due {
        let slot = (to.to_ascii_lowercase(), id);
        let Some(pending) = self.pending.get_mut(&slot) else {
            return Due::Nothing;
        };
        if pending.tries >= MAX_TRIES || current_key != Some(pending.key) {
            let to = pending.to.clone();
            self.pending.remove(&slot);
            return Due::GiveUp { to };
        }
        pending.tries += 1;
        Due::Resend {
            to: pending.to.clone(),
            plaintext: pending.plaintext.clone(),
            wait: wait_after(pending.tries),
        }
    }

    /// How many messages await an answer.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    #[test]
    fn eight_tries_in_under_three_seconds_then_give_up() {
        let mut flight = InFlight::default();
        let mut total = flight.sent("Bob", key(1), 7, b"m".to_vec());
        for tries in 2..=MAX_TRIES {
            match flight.due("bob", 7, Some(key(1))) {
                Due::Resend { to, wait, .. } => {
                    assert_eq!(to, "Bob");
                    assert_eq!(wait, wait_after(tries));
                    total += wait;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(total, Duration::from_millis(2_700));
        assert_eq!(total, time_to_verdict());
        assert_eq!(
            flight.due("bob", 7, Some(key(1))),
            Due::GiveUp { to: "Bob".into() }
        );
        assert!(flight.is_empty());
        assert_eq!(flight.due("bob", 7, Some(key(1))), Due::Nothing);
    }

    #[test]
    fn an_ack_ends_it_and_a_new_session_gives_up_at_once() {
        let mut flight = InFlight::default();
        flight.sent("bob", key(1), 1, vec![]);
        flight.sent("bob", key(1), 2, vec![]);
        assert_eq!(flight.acked("BOB", 1), Some("bob".into()));
        assert_eq!(flight.acked("bob", 1), None, "acknowledged once");
        assert_eq!(flight.due("bob", 1, Some(key(1))), Due::Nothing);
        assert_eq!(
            flight.due("bob", 2, Some(key(2))),
            Due::GiveUp { to: "bob".into() }
        );
        flight.sent("bob", key(1), 3, vec![]);
        assert_eq!(flight.due("bob", 3, None), Due::GiveUp { to: "bob".into() });
    }

    #[test]
    fn in_flight_messages_are_bounded_per_peer_and_in_all() {
        let mut flight = InFlight::default();
        for id in 0..MAX_IN_FLIGHT_PER_PEER as u64 {
            flight.check_room("bob").unwrap();
            flight.sent("bob", key(1), id, vec![]);
        }
        assert_eq!(flight.check_room("Bob"), Err(Busy::Peer("Bob".into())));
        let mut n = 0;
        while flight.len() < MAX_IN_FLIGHT {
            flight.check_room(&format!("p{n}")).unwrap();
            flight.sent(&format!("p{n}"), key(1), 0, vec![]);
            n += 1;
        }
        assert_eq!(flight.check_room("carol"), Err(Busy::All));
    }
}
