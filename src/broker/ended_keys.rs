//! The session keys of recently ended sessions, and whose they were: so that no other account can
//! announce one (clients keep the ids of ended sessions' keys, and would refuse to message the
//! owner of a key announced again, or take its datagrams for another's).
//!
//! Bounded both ways: at most [`MAX_ENDED_KEYS`] keys, none older than [`ENDED_KEY_MEMORY`]; the
//! oldest is forgotten first. It never touches a socket and knows nothing of online sessions.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::protocol::PublicKey;

/// Most ended keys remembered: sixteen times what a client keeps (its `MAX_RETIRED_KEYS`, 256),
/// so that a crowd logging out and in cannot push a key out here while clients still hold it.
/// About 100 bytes each (key, name, time, index): ~400 KiB at most.
pub const MAX_ENDED_KEYS: usize = 4096;

/// How long an ended key is remembered: a day. Clients make a fresh key at every login, so an
/// ended key comes back only from someone replaying it; after a day nothing is owed to its
/// sessions, and its owner proved possession of it when announcing it (only a stolen secret
/// could announce it again).
pub const ENDED_KEY_MEMORY: Duration = Duration::from_secs(24 * 60 * 60);

/// Ended keys → the lower-cased name of the account whose session announced them.
#[derive(Debug, Default)]
pub struct EndedKeys {
    owners: HashMap<PublicKey, (String, Instant)>,
    /// In the order they ended, with when: the oldest is forgotten first.
    order: VecDeque<(PublicKey, Instant)>,
}

impl EndedKeys {
    /// Remembers that `owner`'s session announcing `key` ended at `now`.
    pub fn ended(&mut self, key: PublicKey, owner: &str, now: Instant) {
        self.forget_old(now);
        if self.order.len() >= MAX_ENDED_KEYS {
            self.pop_oldest();
        }
        self.owners.insert(key, (owner.to_string(), now));
        self.order.push_back((key, now));
    }

    /// The lower-cased name whose session announced `key`, if it ended recently.
    pub fn owner(&mut self, key: &PublicKey, now: Instant) -> Option<&str> {
        self.forget_old(now);
        self.owners.get(key).map(|(name, _)| name.as_str())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > ENDED_KEY_MEMORY)
        {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, at)) = self.order.pop_front() {
            // The key may have ended again since (the same account announcing it anew): only the
            // entry of this ending goes.
            if self.owners.get(&key).is_some_and(|(_, last)| *last == at) {
                self.owners.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        PublicKey::from_bytes(bytes)
    }

    #[test]
    fn an_ended_key_is_remembered_with_its_owner_for_a_while() {
        let mut ended = EndedKeys::default();
        let start = Instant::now();
        ended.ended(key(1), "alice", start);
        assert_eq!(ended.owner(&key(1), start), Some("alice"));
        assert_eq!(ended.owner(&key(2), start), None);
        assert_eq!(
            ended.owner(&key(1), start + ENDED_KEY_MEMORY),
            Some("alice")
        );
        let later = start + ENDED_KEY_MEMORY + Duration::from_secs(1);
        assert_eq!(ended.owner(&key(1), later), None);
        assert!(ended.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_the_oldest_goes_first() {
        let mut ended = EndedKeys::default();
        let now = Instant::now();
        for n in 0..(MAX_ENDED_KEYS as u32 + 10) {
            ended.ended(key(n), "p", now);
        }
        assert_eq!(ended.len(), MAX_ENDED_KEYS);
        assert_eq!(ended.owners.len(), MAX_ENDED_KEYS);
        assert_eq!(ended.owner(&key(9), now), None);
        assert_eq!(ended.owner(&key(10), now), Some("p"));
    }

    #[test]
    fn a_key_ended_twice_is_kept_by_its_last_ending() {
        let mut ended = EndedKeys::default();
        let start = Instant::now();
        ended.ended(key(1), "alice", start);
        let later = start + Duration::from_secs(60);
        ended.ended(key(1), "alice", later);
        // The first ending expires; the second keeps the key remembered.
        let after_first = start + ENDED_KEY_MEMORY + Duration::from_secs(1);
        assert_eq!(ended.owner(&key(1), after_first), Some("alice"));
    }
}
