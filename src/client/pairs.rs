//! This session's sealed channels with online peers: the session key, which online peer each key
//! id names, the pairwise keys (computed on first use, forgotten when the peer's session ends),
//! the keys of ended sessions, and the one counter every sealed datagram this session sends
//! takes its nonce from.
//!
//! The counter is one for the whole session, not one per peer: if a peer came back with the same
//! public key (only a misbehaving server would announce one twice), the same pairwise keys would
//! come back too, and a per-peer counter starting again would reuse nonces. A session-wide
//! counter never repeats under this session's key, whatever the server says.
//!
//! A key is bound to the first online name that announced it, and stays so while that peer is
//! online: another name announcing it (only a broken or hostile server would pass that on) is
//! never believed, so it can neither take the owner's datagrams nor, by leaving, retire the
//! owner's key. A key's end is only ever taken from its owner's `left`.
//!
//! The identity gate: pairwise keys are made only with a session key that was *admitted*
//! ([`Pairs::admit`]) — one whose binding to the peer's identity verified, for an identity this
//! user trusts (pinned on first contact, or `/trust`ed after a change: `peer_identities`
//! decides). Everything sealed to a peer, and everything opened from one, goes through
//! [`Pairs::keys`], so a key the server invented for a peer seals and opens nothing, whatever
//! uses the keys (direct messages today, file transfers tomorrow).
//!
//! Memory: one entry per online peer with a key (the peer list is the server's), plus at most
//! [`MAX_RETIRED_KEYS`] ids of ended sessions. This module never does I/O.

use std::collections::{HashMap, VecDeque};

use crate::protocol::{PeerInfo, PublicKey};
use crate::sealed::{KeyId, KeyProof, Kind, PairError, PairKeys, SessionKey};

/// Ended sessions' key ids remembered, so that their datagrams are told apart (`stale_session`)
/// and a key announced again is refused; the oldest is forgotten first.
pub const MAX_RETIRED_KEYS: usize = 256;

/// The sealed side of this session.
#[derive(Debug)]
pub struct Pairs {
    session: SessionKey,
    /// This client's name as the server spells it (from `welcome`).
    my_name: String,
    /// Key id → lower-cased name of the online peer whose session key it is.
    by_key_id: HashMap<KeyId, String>,
    /// Lower-cased name → the peer key the pairwise keys were made with, and those keys.
    keys: HashMap<String, (PublicKey, PairKeys)>,
    /// Lower-cased name → the one session key of that peer keys may be made with: its identity
    /// checked and trusted. A peer absent here gets nothing sealed, and nothing of it is opened.
    admitted: HashMap<String, PublicKey>,
    retired: VecDeque<KeyId>,
    /// The next counter for a datagram this session seals (never 0, never reused).
    next_counter: u64,
}

/// Why a datagram could not be sealed for a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealRefused {
    /// The peer's client speaks the clear protocol (`--plaintext`).
    #[error("{0}'s client does not seal direct messages (--plaintext)")]
    NoKey(String),
    #[error("{name}'s key cannot be used: {why}")]
    BadKey { name: String, why: PairError },
    /// The key was the key of an ended session: announced again, it is not believed.
    #[error("{0} announced the key of an ended session")]
    Retired(String),
    /// The key is another online peer's: whatever is sealed with it would be read as theirs.
    #[error("{name} announced {owner}'s session key")]
    KeyOfAnother { name: String, owner: String },
    #[error("this session has sealed 2^64 datagrams; log in again")]
    CountersExhausted,
    /// The peer's identity is not trusted now (changed and not `/trust`ed, or unverifiable).
    #[error("{name}'s identity is not trusted now (compare safety numbers with /verify {name}, then /trust {name})")]
    Untrusted { name: String },
}

impl Pairs {
    pub fn new(session: SessionKey) -> Self {
        Pairs {
            session,
            my_name: String::new(),
            by_key_id: HashMap::new(),
            keys: HashMap::new(),
            admitted: HashMap::new(),
            retired: VecDeque::new(),
            next_counter: 1,
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.session.public_key()
    }

    /// The proof that this session holds its key, for the server's `hello` challenge; `None`
    /// for a challenge that gives no shared secret (the server then refuses the key).
    pub fn prove(&self, challenge: &PublicKey, my_name: &str) -> Option<KeyProof> {
        self.session.prove(challenge, my_name).ok()
    }

    pub fn set_my_name(&mut self, name: &str) {
        self.my_name = name.to_string();
    }

    /// Lets pairwise keys be made with `key`, `username`'s session key: its identity checked
    /// and trusted. Replaces whatever key was admitted for that name before.
    pub fn admit(&mut self, username: &str, key: PublicKey) {
        let name = username.to_ascii_lowercase();
        if self.admitted.get(&name) != Some(&key) {
            self.keys.remove(&name);
        }
        self.admitted.insert(name, key);
    }

    /// Seals nothing for `username` and opens nothing from it any more (its identity changed, or
    /// cannot be checked); the keys made with it are forgotten.
    pub fn withhold(&mut self, username: &str) {
        let name = username.to_ascii_lowercase();
        self.admitted.remove(&name);
        self.keys.remove(&name);
    }

    /// Whether keys may be made with `key` for `username` now.
    pub fn is_admitted(&self, username: &str, key: &PublicKey) -> bool {
        self.admitted.get(&username.to_ascii_lowercase()) == Some(key)
    }

    /// A peer's session started (`joined`), or is in a full list (`welcome`, `peers`).
    pub fn peer_online(&mut self, peer: &PeerInfo) {
        let name = peer.username.to_ascii_lowercase();
        let new_id = peer.public_key.map(|key| key.key_id());
        // The same name with another key: its earlier session has ended.
        let ended: Vec<KeyId> = self
            .by_key_id
            .iter()
            .filter(|(id, n)| **n == name && Some(**id) != new_id)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            self.by_key_id.remove(&id);
            self.keys.remove(&name);
            self.retire(id);
        }
        // Never re-pointed: a key bound to another online name stays that name's.
        if let Some(id) = new_id.filter(|id| !self.is_retired(id)) {
            self.by_key_id.entry(id).or_insert(name);
        }
    }

    /// A peer's session ended (`left`, or missing from a full list): its key id is retired and
    /// its pairwise keys forgotten.
    pub fn peer_gone(&mut self, username: &str) {
        let name = username.to_ascii_lowercase();
        self.keys.remove(&name);
        self.admitted.remove(&name);
        let ids: Vec<KeyId> = self
            .by_key_id
            .iter()
            .filter(|(_, n)| **n == name)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.by_key_id.remove(&id);
            self.retire(id);
        }
    }

    /// Replaces the whole table from a full list: whoever is missing has left.
    pub fn replace(&mut self, online: &[PeerInfo]) {
        let names: std::collections::HashSet<String> = online
            .iter()
            .map(|p| p.username.to_ascii_lowercase())
            .collect();
        let gone: Vec<String> = self
            .by_key_id
            .values()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.peer_gone(&name);
        }
        for peer in online {
            self.peer_online(peer);
        }
    }

    fn retire(&mut self, id: KeyId) {
        if self.retired.contains(&id) {
            return;
        }
        if self.retired.len() >= MAX_RETIRED_KEYS {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
    }

    /// The lower-cased name of the online peer whose current session key `id` names.
    pub fn named_by(&self, id: &KeyId) -> Option<&str> {
        self.by_key_id.get(id).map(String::as_str)
    }

    /// Whether `id` is the key of a session that has ended.
    pub fn is_retired(&self, id: &KeyId) -> bool {
        self.retired.contains(id)
    }

    /// The pairwise keys with `peer`, made on first use.
    ///
    /// # Errors
    /// The peer has no key, a retired one, one that gives no shared secret, or one not admitted
    /// ([`Pairs::admit`]): its identity not trusted now.
    pub fn keys(&mut self, peer: &PeerInfo) -> Result<&PairKeys, SealRefused> {
        let key = peer
            .public_key
            .ok_or_else(|| SealRefused::NoKey(peer.username.clone()))?;
        if self.is_retired(&key.key_id()) {
            return Err(SealRefused::Retired(peer.username.clone()));
        }
        let name = peer.username.to_ascii_lowercase();
        if let Some(owner) = self.named_by(&key.key_id()).filter(|owner| **owner != name) {
            return Err(SealRefused::KeyOfAnother {
                name: peer.username.clone(),
                owner: owner.to_string(),
            });
        }
        if !self.is_admitted(&name, &key) {
            return Err(SealRefused::Untrusted {
                name: peer.username.clone(),
            });
        }
        let fresh = !matches!(self.keys.get(&name), Some((k, _)) if *k == key);
        if fresh {
            let pair = self
                .session
                .pair(&self.my_name, &peer.username, &key)
                .map_err(|why| SealRefused::BadKey {
                    name: peer.username.clone(),
                    why,
                })?;
            self.keys.insert(name.clone(), (key, pair));
        }
        Ok(&self.keys[&name].1)
    }

    /// Seals `plaintext` for `peer` under the next counter.
    ///
    /// # Errors
    /// As [`Pairs::keys`], or the counter is used up.
    pub fn seal(
        &mut self,
        peer: &PeerInfo,
        kind: Kind,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealRefused> {
        let counter = self.next_counter;
        if counter == u64::MAX {
            return Err(SealRefused::CountersExhausted);
        }
        let keys = self.keys(peer)?;
        let datagram = keys.seal(kind, counter, plaintext);
        self.next_counter += 1;
        Ok(datagram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::Header;

    fn peer(name: &str, key: Option<PublicKey>) -> PeerInfo {
        PeerInfo {
            username: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 9,
            public_key: key,
            identity_key: None,
            identity_binding: None,
        }
    }

    #[test]
    fn counters_never_repeat_even_when_a_key_comes_back() {
        let mut alice = Pairs::new(SessionKey::generate());
        alice.set_my_name("alice");
        let bob_key = SessionKey::generate().public_key();
        let bob = peer("bob", Some(bob_key));
        alice.peer_online(&bob);
        alice.admit("bob", bob_key);
        let first = Header::parse(&alice.seal(&bob, Kind::Message, b"1").unwrap()).unwrap();
        let second = Header::parse(&alice.seal(&bob, Kind::Ack, b"2").unwrap()).unwrap();
        assert_eq!((first.counter, second.counter), (1, 2));
        alice.peer_gone("bob");
        assert!(alice.is_retired(&bob_key.key_id()));
        assert_eq!(alice.named_by(&bob_key.key_id()), None);
        // Announced again (a misbehaving server): refused, nothing sealed.
        alice.peer_online(&bob);
        assert_eq!(
            alice.seal(&bob, Kind::Message, b"3"),
            Err(SealRefused::Retired("bob".into()))
        );
        let carol_key = SessionKey::generate().public_key();
        let carol = peer("carol", Some(carol_key));
        alice.peer_online(&carol);
        alice.admit("carol", carol_key);
        let third = Header::parse(&alice.seal(&carol, Kind::Message, b"3").unwrap()).unwrap();
        assert_eq!(third.counter, 3);
    }

    #[test]
    fn a_clear_peer_has_no_keys_and_a_full_list_retires_the_missing() {
        let mut alice = Pairs::new(SessionKey::generate());
        let clear = peer("dave", None);
        assert_eq!(
            alice.seal(&clear, Kind::Message, b"x"),
            Err(SealRefused::NoKey("dave".into()))
        );
        let bob_key = SessionKey::generate().public_key();
        alice.replace(&[peer("Bob", Some(bob_key)), clear.clone()]);
        assert_eq!(alice.named_by(&bob_key.key_id()), Some("bob"));
        alice.replace(&[clear]);
        assert!(alice.is_retired(&bob_key.key_id()));
    }

    #[test]
    fn a_key_copied_by_another_name_is_neither_re_pointed_nor_retired_by_it() {
        let mut bob = Pairs::new(SessionKey::generate());
        bob.set_my_name("bob");
        let alice_key = SessionKey::generate().public_key();
        let alice = peer("alice", Some(alice_key));
        let mallory = peer("mallory", Some(alice_key));
        bob.peer_online(&alice);
        bob.admit("alice", alice_key);
        bob.peer_online(&mallory);
        bob.admit("mallory", alice_key);
        assert_eq!(bob.named_by(&alice_key.key_id()), Some("alice"));
        assert_eq!(
            bob.seal(&mallory, Kind::Message, b"x"),
            Err(SealRefused::KeyOfAnother {
                name: "mallory".into(),
                owner: "alice".into()
            })
        );
        // mallory leaving (or a full list without her) ends nothing of alice's.
        bob.peer_gone("mallory");
        bob.replace(std::slice::from_ref(&alice));
        assert!(!bob.is_retired(&alice_key.key_id()));
        assert_eq!(bob.named_by(&alice_key.key_id()), Some("alice"));
        assert!(bob.seal(&alice, Kind::Message, b"still").is_ok());
        // alice leaving does.
        bob.peer_gone("alice");
        assert!(bob.is_retired(&alice_key.key_id()));
    }

    #[test]
    fn the_retired_list_is_bounded() {
        let mut alice = Pairs::new(SessionKey::generate());
        for i in 0..MAX_RETIRED_KEYS + 10 {
            let name = format!("p{i}");
            alice.peer_online(&peer(&name, Some(SessionKey::generate().public_key())));
            alice.peer_gone(&name);
        }
        assert_eq!(alice.retired.len(), MAX_RETIRED_KEYS);
    }

    #[test]
    fn nothing_is_sealed_or_opened_for_a_key_not_admitted() {
        let (alice_session, bob_session) = (SessionKey::generate(), SessionKey::generate());
        let (alice_key, bob_key) = (alice_session.public_key(), bob_session.public_key());
        let mut alice = Pairs::new(alice_session);
        alice.set_my_name("alice");
        let mut bob = Pairs::new(bob_session);
        bob.set_my_name("bob");
        let bob_entry = peer("bob", Some(bob_key));
        let alice_entry = peer("alice", Some(alice_key));
        alice.peer_online(&bob_entry);
        bob.peer_online(&alice_entry);
        let untrusted = |name: &str| SealRefused::Untrusted { name: name.into() };
        assert_eq!(
            alice.seal(&bob_entry, Kind::Message, b"x"),
            Err(untrusted("bob"))
        );
        alice.admit("bob", bob_key);
        bob.admit("alice", alice_key);
        let sealed = alice.seal(&bob_entry, Kind::Message, b"hi").unwrap();
        let header = Header::parse(&sealed).unwrap();
        assert!(bob
            .keys(&alice_entry)
            .unwrap()
            .open(&header, &sealed)
            .is_ok());
        // A key the server announces for bob instead (another session): not admitted.
        let forged = peer("bob", Some(SessionKey::generate().public_key()));
        alice.peer_online(&forged);
        assert_eq!(
            alice.seal(&forged, Kind::Message, b"x"),
            Err(untrusted("bob"))
        );
        // Withheld (bob's identity changed): nothing opened from alice's side either.
        bob.withhold("alice");
        assert_eq!(bob.keys(&alice_entry).err(), Some(untrusted("alice")));
    }
}
