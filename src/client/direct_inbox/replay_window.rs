//! Replay protection for received direct messages: per sender, which recent `id`s were already
//! delivered, so that a captured datagram sent again from the sender's address is dropped
//! (`replayed`) instead of shown again.
//!
//! A sender increases `id` with each direct message it sends (docs/protocol.md), to anyone, so
//! the ids one receiver sees from it rise, with gaps. That makes a sliding window the natural
//! memory, as in IPsec and WireGuard (RFC 6479): the highest id delivered plus one bit for each
//! of the [`REPLAY_WINDOW`] ids below it. An id above the highest is new; one inside the window
//! is new unless its bit is set; one older than the window is refused, as too old to tell.
//! Datagrams on a LAN arrive in order, so an honest one is never that late.
//!
//! The memory belongs to the sender's session: a client that restarts counts its ids from 1
//! again, so the inbox forgets a peer's windows when the server says it left or joined
//! (`DirectInbox::forget_peer`). The table holds at most [`MAX_REPLAY_SENDERS`] windows, each
//! 128 bytes of bits and the highest id; when full, the least recently used is forgotten. That
//! takes more peers talking to this client than a server admits by default (`--max-clients`,
//! 64); a forgotten sender's old datagrams could then be replayed once more.
//!
//! This stops replays, not forgeries: in `--plaintext` mode, someone who can forge the sender's
//! address can also send an id the sender has not used yet.
//!
//! Sealed datagrams use the same window twice: once over the header's counter, per sender key
//! ([`SeenCounters`], checked only after the datagram authenticated, so a forgery cannot mark a
//! counter as seen), which drops a captured datagram sent again (`replayed`); and once over the
//! message id (`SeenIds`), which tells a retransmission (a new counter, the same id) of a message
//! already shown, to be acknowledged again but not shown twice. A key's window lives as long as
//! the key names an online peer: sessions' keys are fresh, so a window never needs resetting.

use std::collections::HashMap;
use std::time::Instant;

use super::sender::Sender;
use crate::sealed::KeyId;

/// How many ids below the highest delivered one each sender's window remembers.
pub const REPLAY_WINDOW: u64 = 1024;

/// Most senders whose windows are kept; past it, the least recently used is forgotten.
pub const MAX_REPLAY_SENDERS: usize = 256;

/// The window's bits, 64 to a word.
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// One sender's recently delivered ids: `highest`, and a ring of [`REPLAY_WINDOW`] bits in which
/// id `n` (for `n` in the window) is bit `n % REPLAY_WINDOW`.
#[derive(Debug, Clone)]
pub(super) struct ReplayWindow {
    highest: u64,
    bits: [u64; WORDS],
}

impl ReplayWindow {
    pub(super) fn starting_at(id: u64) -> Self {
        let mut window = ReplayWindow {
            highest: id,
            bits: [0; WORDS],
        };
        window.set(id);
        window
    }

    /// Whether `id` may be delivered: not seen, and not older than the window.
    pub(super) fn is_new(&self, id: u64) -> bool {
        if id > self.highest {
            return true;
        }
        self.highest - id < REPLAY_WINDOW && !self.get(id)
    }

    /// Remembers `id` as delivered, sliding the window up if it is the highest yet.
    pub(super) fn record(&mut self, id: u64) {
        if id > self.highest {
            if id - self.highest >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                // The slots of the ids now above the old highest held ids that slid out of the
                // window: clear them before use.
                for fresh in self.highest + 1..id {
                    self.clear(fresh);
                }
                self.clear(id);
            }
            self.highest = id;
        }
        self.set(id);
    }

    fn slot(id: u64) -> (usize, u64) {
        let bit = id % REPLAY_WINDOW;
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    fn get(&self, id: u64) -> bool {
        let (word, mask) = Self::slot(id);
        self.bits[word] & mask != 0
    }

    fn set(&mut self, id: u64) {
        let (word, mask) = Self::slot(id);
        self.bits[word] |= mask;
    }

    fn clear(&mut self, id: u64) {
        let (word, mask) = Self::slot(id);
        self.bits[word] &= !mask;
    }
}

/// A replay window per sender, in a table of at most [`MAX_REPLAY_SENDERS`].
#[derive(Debug, Default)]
pub(super) struct SeenIds {
    /// Each sender's window and when it was last used.
    windows: HashMap<Sender, (ReplayWindow, Instant)>,
}

impl SeenIds {
    /// Whether `sender` may still deliver `id` (it has not, and `id` is not too old to tell).
    pub(super) fn is_new(&self, sender: &Sender, id: u64) -> bool {
        self.windows
            .get(sender)
            .is_none_or(|(window, _)| window.is_new(id))
    }

    /// Remembers that `sender` delivered `id` at `now`.
    pub(super) fn record(&mut self, sender: &Sender, id: u64, now: Instant) {
        if let Some((window, used)) = self.windows.get_mut(sender) {
            window.record(id);
            *used = now;
            return;
        }
        if self.windows.len() >= MAX_REPLAY_SENDERS {
            let oldest = self
                .windows
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(sender, _)| sender.clone());
            if let Some(sender) = oldest {
                self.windows.remove(&sender);
            }
        }
        self.windows
            .insert(sender.clone(), (ReplayWindow::starting_at(id), now));
    }

    /// Forgets the windows of every sender whose name `keep` refuses (a peer whose session
    /// ended).
    pub(super) fn retain_names(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.windows.retain(|sender, _| keep(&sender.name));
    }

    /// How many senders have a window now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.len()
    }
}

/// The counters already authenticated under each online peer's session key.
#[derive(Debug, Default)]
pub(super) struct SeenCounters {
    windows: HashMap<KeyId, ReplayWindow>,
}

impl SeenCounters {
    /// Whether `counter` under `key` is new; if it is, it is remembered.
    pub(super) fn check_and_record(&mut self, key: KeyId, counter: u64) -> bool {
        match self.windows.get_mut(&key) {
            Some(window) if !window.is_new(counter) => false,
            Some(window) => {
                window.record(counter);
                true
            }
            None => {
                self.windows.insert(key, ReplayWindow::starting_at(counter));
                true
            }
        }
    }

    /// Forgets the windows of keys `keep` refuses (ended sessions).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&KeyId) -> bool) {
        self.windows.retain(|key, _| keep(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(name: &str, port: u16) -> Sender {
        Sender::new(name, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn an_id_is_delivered_once() {
        let mut window = ReplayWindow::starting_at(5);
        assert!(!window.is_new(5));
        assert!(window.is_new(6));
        window.record(6);
        assert!(!window.is_new(6));
        // Late but unseen ids inside the window are still new, once.
        assert!(window.is_new(3));
        window.record(3);
        assert!(!window.is_new(3));
        assert!(window.is_new(4));
        assert!(window.is_new(0));
    }

    #[test]
    fn ids_older_than_the_window_are_refused_and_slid_out_slots_are_reused() {
        let mut window = ReplayWindow::starting_at(0);
        window.record(REPLAY_WINDOW - 1);
        assert!(!window.is_new(0), "seen");
        // Sliding up by one: id 0 is now out of the window, and its slot belongs to the new id.
        window.record(REPLAY_WINDOW);
        assert!(!window.is_new(0), "too old to tell");
        assert!(!window.is_new(REPLAY_WINDOW));
        assert!(window.is_new(1), "unseen, just inside the window");
        // A jump past the whole window forgets every bit.
        window.record(10 * REPLAY_WINDOW);
        assert!(window.is_new(10 * REPLAY_WINDOW - 1));
        assert!(!window.is_new(9 * REPLAY_WINDOW));
        assert!(window.is_new(u64::MAX));
        window.record(u64::MAX);
        assert!(!window.is_new(u64::MAX));
        assert!(window.is_new(u64::MAX - 1));
    }

    #[test]
    fn every_id_in_a_long_run_is_delivered_exactly_once() {
        let mut window = ReplayWindow::starting_at(0);
        for id in 1..5 * REPLAY_WINDOW {
            assert!(window.is_new(id), "{id}");
            window.record(id);
            for back in [0, 1, REPLAY_WINDOW / 2, REPLAY_WINDOW - 1] {
                if let Some(old) = id.checked_sub(back) {
                    assert!(!window.is_new(old), "{old} after {id}");
                }
            }
        }
    }

    #[test]
    fn senders_are_apart_and_the_table_stays_bounded() {
        let mut seen = SeenIds::default();
        let now = Instant::now();
        seen.record(&sender("alice", 1), 7, now);
        assert!(!seen.is_new(&sender("alice", 1), 7));
        assert!(seen.is_new(&sender("alice", 2), 7), "another address");
        assert!(seen.is_new(&sender("bob", 1), 7), "another name");
        for port in 2..(MAX_REPLAY_SENDERS as u16 * 2) {
            seen.record(&sender("alice", port), 1, now);
        }
        assert_eq!(seen.len(), MAX_REPLAY_SENDERS);
        seen.retain_names(|name| name != "alice");
        assert_eq!(seen.len(), 0);
    }
}
