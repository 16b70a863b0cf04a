//! Who each online peer proves to be, and whether this user trusts it: the policy of the identity
//! gate ([`pairs`](super::pairs) enforces it). For every peer entry the server sends (`welcome`,
//! `joined`, `peers`), the peer's identity binding is checked ([`crate::identity`]) and its
//! identity compared with the one pinned in the known-peers file:
//!
//! - first contact: the identity is pinned (trust on first use, as OpenSSH and Signal do) and
//!   the session key admitted;
//! - the pinned identity: admitted (and marked verified in `/peers` if its safety number was
//!   confirmed);
//! - another identity than the pinned one: **withheld** — nothing sealed to it, nothing from it
//!   opened — and the person warned, until `/trust NAME` (or `/verify NAME confirm`) pins it;
//! - a binding that does not verify, or half of one: withheld, with a warning;
//! - no identity at all (an older client): admitted while the peer has no pin (there is nothing
//!   to compare with, as before identities), with a warning; withheld once it has one (a server
//!   stripping the identity off must not get around the pin).
//!
//! Warnings come once per peer session and verdict, not on every peer list. The file's writes
//! are [`known_peers`](super::known_peers)'; this module never does I/O of its own.

use std::collections::HashMap;

use super::event::ClientEvent;
use super::known_peers::{KnownPeers, KnownPeersError};
use crate::identity::{check_announced, BindingError, IdentityPublic, SafetyNumber};
use crate::protocol::{PeerInfo, PublicKey};

/// What a peer's current entry proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its identity is the pinned one (or was just pinned).
    Trusted {
        identity: IdentityPublic,
        verified: bool,
    },
    /// Its identity is not the pinned one.
    Changed {
        pinned: IdentityPublic,
        announced: IdentityPublic,
    },
    /// Its binding does not vouch for its session key.
    Unverifiable(BindingError),
    /// It announced no identity (an older client); `pinned` if it had one before.
    NoIdentity { pinned: Option<IdentityPublic> },
}

impl Verdict {
    /// Whether its session key may be used.
    pub fn admits(&self) -> bool {
        matches!(
            self,
            Verdict::Trusted { .. } | Verdict::NoIdentity { pinned: None }
        )
    }
}

/// Why `/trust` or `/verify` did nothing; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityCommandError {
    #[error("no such user online: {0}")]
    NotOnline(String),
    #[error("that is you: /verify and /trust are about someone else")]
    ToSelf,
    #[error("{0}'s client does not seal direct messages (--plaintext): it has no identity")]
    Clear(String),
    #[error("{0}'s client announces no identity key (an older client): there is nothing to compare or trust")]
    NoIdentity(String),
    #[error("{name}'s identity cannot be trusted: {why} (not {name}'s key at all: the server or someone in the middle made it)")]
    Unverifiable { name: String, why: BindingError },
    #[error(
        "{0}'s identity is not the one whose safety number /verify {0} showed (it changed, or \
         no number was shown): nothing confirmed; run /verify {0} again and compare the number"
    )]
    NotShown(String),
    #[error("this client has no identity (--plaintext)")]
    NoOwnIdentity,
    #[error("{0}")]
    File(String),
}

/// The identities of this session's peers.
#[derive(Debug)]
pub struct PeerIdentities {
    known: KnownPeers,
    /// The server as typed: the pins are per server.
    server: String,
    /// This client's name and identity, for safety numbers.
    my_name: String,
    my_identity: IdentityPublic,
    /// Lower-cased name → the session key last vetted and what it proved: one entry per online
    /// peer (the server's list bounds it; `left` and full lists remove the others).
    seen: HashMap<String, (PublicKey, Verdict)>,
    /// Lower-cased name → the identity whose safety number `/verify NAME` showed last: the only
    /// one `/verify NAME confirm` may mark verified, so a server that announces another
    /// identity between the two confirms nothing. Bounded as `seen` (removed with it).
    shown: HashMap<String, IdentityPublic>,
}

impl PeerIdentities {
    pub fn new(
        known: KnownPeers,
        server: &str,
        my_name: &str,
        my_identity: IdentityPublic,
    ) -> Self {
        PeerIdentities {
            known,
            server: server.to_string(),
            my_name: my_name.to_string(),
            my_identity,
            seen: HashMap::new(),
            shown: HashMap::new(),
        }
    }

    /// Checks one peer entry: its verdict (`None` for a peer without a session key, or this
    /// client itself) and what to tell the person (only when it is news).
    pub fn vet(&mut self, peer: &PeerInfo) -> Option<(PublicKey, Verdict, Vec<ClientEvent>)> {
        let session = peer.public_key?;
        let name = peer.username.to_ascii_lowercase();
        if name == self.my_name.to_ascii_lowercase() {
            return None;
        }
        let pinned = self.known.find(&self.server, &name).cloned();
        let mut events = Vec::new();
        let verdict = match check_announced(
            peer.identity_key.as_ref(),
            peer.identity_binding.as_ref(),
            &peer.username,
            Some(&session),
        ) {
            Err(why) => Verdict::Unverifiable(why),
            Ok(None) => Verdict::NoIdentity {
                pinned: pinned.map(|p| p.identity),
            },
            Ok(Some(identity)) => match pinned {
                Some(pin) if pin.identity == identity => Verdict::Trusted {
                    identity,
                    verified: pin.verified,
                },
                Some(pin) => Verdict::Changed {
                    pinned: pin.identity,
                    announced: identity,
                },
                // Pinned this session already, but the file could not keep it: still trusted,
                // and not written (nor warned about) again on every list.
                None if matches!(
                    self.seen.get(&name),
                    Some((_, Verdict::Trusted { identity: seen, .. })) if *seen == identity
                ) =>
                {
                    Verdict::Trusted {
                        identity,
                        verified: false,
                    }
                }
                None => {
                    match self.known.pin(&self.server, &name, identity, false) {
                        Ok(_) => events.push(ClientEvent::IdentityPinned {
                            peer: peer.username.clone(),
                            identity,
                        }),
                        // Trusted for this session still: the pin is what could not be kept.
                        Err(e) => events.push(ClientEvent::Warning {
                            message: format!(
                                "{}'s identity could not be pinned for next time: {e}",
                                peer.username
                            ),
                        }),
                    }
                    Verdict::Trusted {
                        identity,
                        verified: false,
                    }
                }
            },
        };
        let news = self.seen.get(&name) != Some(&(session, verdict.clone()));
        if news {
            match &verdict {
                Verdict::Changed { pinned, announced } => {
                    events.push(ClientEvent::IdentityChanged {
                        peer: peer.username.clone(),
                        pinned: *pinned,
                        announced: *announced,
                    })
                }
                Verdict::Unverifiable(why) => events.push(ClientEvent::IdentityUnverified {
                    peer: peer.username.clone(),
                    reason: why.to_string(),
                }),
                Verdict::NoIdentity { pinned: Some(_) } => {
                    events.push(ClientEvent::IdentityUnverified {
                        peer: peer.username.clone(),
                        reason: "its identity is pinned, but this entry announces none: \
                                 someone may be in the middle"
                            .into(),
                    })
                }
                Verdict::NoIdentity { pinned: None } => events.push(ClientEvent::Warning {
                    message: format!(
                        "{}'s client proves no identity (an older client): direct messages to \
                         it are sealed to the key the server announced, which the server could \
                         have made",
                        peer.username
                    ),
                }),
                Verdict::Trusted { .. } => {}
            }
        }
        self.seen.insert(name, (session, verdict.clone()));
        Some((session, verdict, events))
    }

    /// The peer forgot its session (`left`, or missing from a full list).
    pub fn forget(&mut self, username: &str) {
        self.seen.remove(&username.to_ascii_lowercase());
        self.shown.remove(&username.to_ascii_lowercase());
    }

    /// A full list (`welcome`, `peers`): whoever is missing from it has left.
    pub fn keep_only<'a>(&mut self, online: impl Iterator<Item = &'a str>) {
        let online: std::collections::HashSet<String> =
            online.map(str::to_ascii_lowercase).collect();
        self.seen.retain(|name, _| online.contains(name));
        self.shown.retain(|name, _| online.contains(name));
    }

    /// Whether `username`'s current identity is pinned and its safety number confirmed.
    pub fn is_verified(&self, username: &str) -> bool {
        matches!(
            self.seen.get(&username.to_ascii_lowercase()),
            Some((_, Verdict::Trusted { verified: true, .. }))
        )
    }

    /// The identity `peer` announces now, if it may be compared or trusted.
    fn announced(
        &self,
        peer: Option<&PeerInfo>,
        name: &str,
    ) -> Result<(PublicKey, IdentityPublic, bool), IdentityCommandError> {
        let peer = peer.ok_or_else(|| IdentityCommandError::NotOnline(name.to_string()))?;
        if peer.username.eq_ignore_ascii_case(&self.my_name) {
            return Err(IdentityCommandError::ToSelf);
        }
        if peer.public_key.is_none() {
            return Err(IdentityCommandError::Clear(peer.username.clone()));
        }
        match self.seen.get(&peer.username.to_ascii_lowercase()) {
            Some((session, Verdict::Trusted { identity, .. })) => Ok((*session, *identity, true)),
            Some((session, Verdict::Changed { announced, .. })) => {
                Ok((*session, *announced, false))
            }
            Some((_, Verdict::Unverifiable(why))) => Err(IdentityCommandError::Unverifiable {
                name: peer.username.clone(),
                why: *why,
            }),
            Some((_, Verdict::NoIdentity { .. })) | None => {
                Err(IdentityCommandError::NoIdentity(peer.username.clone()))
            }
        }
    }

    /// `/verify NAME`: the safety number of this client's identity and the one `peer` announces
    /// now (the new one, when it changed: to compare before trusting it).
    ///
    /// # Errors
    /// The peer is not online, is this client, or has no identity that could be compared.
    pub fn safety_number(
        &mut self,
        name: &str,
        peer: Option<&PeerInfo>,
    ) -> Result<ClientEvent, IdentityCommandError> {
        let (_, identity, trusted) = self.announced(peer, name)?;
        let peer_name = peer.map_or(name, |p| p.username.as_str());
        let number = SafetyNumber::new(&self.my_name, &self.my_identity, peer_name, &identity);
        self.shown.insert(peer_name.to_ascii_lowercase(), identity);
        Ok(ClientEvent::SafetyNumber {
            peer: peer_name.to_string(),
            number: number.to_string(),
            verified: self.is_verified(peer_name),
            trusted,
        })
    }

    /// `/trust NAME` (`verified`: false) or `/verify NAME confirm` (true): pins the identity
    /// `peer` announces now and returns its session key to admit, and what to tell. A confirm
    /// only pins the identity the last `/verify NAME` showed: the person compared that one.
    ///
    /// # Errors
    /// As [`PeerIdentities::safety_number`]; a confirm of an identity not shown
    /// ([`IdentityCommandError::NotShown`]); the file cannot be written.
    pub fn trust(
        &mut self,
        name: &str,
        peer: Option<&PeerInfo>,
        verified: bool,
    ) -> Result<(PublicKey, ClientEvent), IdentityCommandError> {
        let (session, identity, _) = self.announced(peer, name)?;
        let peer_name = peer.map_or(name, |p| p.username.as_str()).to_string();
        if verified && self.shown.get(&peer_name.to_ascii_lowercase()) != Some(&identity) {
            return Err(IdentityCommandError::NotShown(peer_name));
        }
        self.known
            .pin(&self.server, &peer_name, identity, verified)
            .map_err(|e: KnownPeersError| IdentityCommandError::File(e.to_string()))?;
        self.seen.insert(
            peer_name.to_ascii_lowercase(),
            (session, Verdict::Trusted { identity, verified }),
        );
        let event = if verified {
            ClientEvent::IdentityVerified { peer: peer_name }
        } else {
            ClientEvent::IdentityTrusted {
                peer: peer_name,
                identity,
            }
        };
        Ok((session, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::IdentityKey;
    use crate::sealed::SessionKey;
    use tempfile::TempDir;

    fn entry(name: &str, identity: Option<&IdentityKey>) -> PeerInfo {
        let session = SessionKey::generate().public_key();
        PeerInfo {
            username: name.into(),
            ip: "127.0.0.1".parse().unwrap(),
            p2p_port: 9,
            public_key: Some(session),
            identity_key: identity.map(IdentityKey::public),
            identity_binding: identity.map(|key| key.bind(name, &session)),
        }
    }

    fn identities(dir: &TempDir) -> PeerIdentities {
        let known = KnownPeers::load(&dir.path().join("known_peers")).unwrap();
        let me = IdentityKey::from_seed(&[9; 32]);
        PeerIdentities::new(known, "h:1", "alice", me.public())
    }

    #[test]
    fn first_contact_pins_a_change_is_withheld_until_trusted_and_warned_once() {
        let dir = TempDir::new().unwrap();
        let mut alice = identities(&dir);
        let bob = IdentityKey::from_seed(&[1; 32]);
        let first = entry("bob", Some(&bob));
        let (_, verdict, events) = alice.vet(&first).unwrap();
        assert!(verdict.admits());
        assert!(matches!(events[..], [ClientEvent::IdentityPinned { .. }]));
        // Pinned in the file: a new session of this client finds it.
        let mut later = identities(&dir);
        let (_, verdict, events) = later.vet(&entry("Bob", Some(&bob))).unwrap();
        assert_eq!(
            verdict,
            Verdict::Trusted {
                identity: bob.public(),
                verified: false
            }
        );
        assert!(events.is_empty());
        // Another identity for bob (the server's own, or a new device): withheld, warned once.
        let mallory = IdentityKey::from_seed(&[2; 32]);
        let changed = entry("bob", Some(&mallory));
        let (_, verdict, events) = later.vet(&changed).unwrap();
        assert!(!verdict.admits());
        assert!(matches!(events[..], [ClientEvent::IdentityChanged { .. }]));
        let (_, _, again) = later.vet(&changed).unwrap();
        assert!(again.is_empty(), "the same news is not told twice");
        // Gone from a full list and back: told again; nothing kept of who left.
        later.keep_only(["carol"].into_iter());
        assert!(later.seen.is_empty());
        let (_, _, back) = later.vet(&changed).unwrap();
        assert!(matches!(back[..], [ClientEvent::IdentityChanged { .. }]));
        // /trust pins the new identity: admitted from then on, in the file too.
        let (session, told) = later.trust("BOB", Some(&changed), false).unwrap();
        assert_eq!(Some(session), changed.public_key);
        assert!(matches!(told, ClientEvent::IdentityTrusted { .. }));
        assert!(later.vet(&changed).unwrap().1.admits());
        assert!(identities(&dir)
            .vet(&entry("bob", Some(&mallory)))
            .unwrap()
            .1
            .admits());
    }

    #[test]
    fn a_forged_binding_or_a_stripped_identity_is_withheld() {
        let dir = TempDir::new().unwrap();
        let mut alice = identities(&dir);
        let bob = IdentityKey::from_seed(&[1; 32]);
        // bob's identity, over a session key the server made: the binding is bob's for another.
        let mut forged = entry("bob", Some(&bob));
        forged.public_key = Some(SessionKey::generate().public_key());
        let (_, verdict, events) = alice.vet(&forged).unwrap();
        assert_eq!(verdict, Verdict::Unverifiable(BindingError::Forged));
        assert!(matches!(
            events[..],
            [ClientEvent::IdentityUnverified { .. }]
        ));
        assert!(alice.trust("bob", Some(&forged), false).is_err());
        // An older client, never pinned: admitted (nothing to compare), with a warning.
        let (_, verdict, _) = alice.vet(&entry("carol", None)).unwrap();
        assert!(verdict.admits());
        // Once pinned, an entry without identity is withheld.
        alice.vet(&entry("bob", Some(&bob))).unwrap();
        let (_, verdict, _) = alice.vet(&entry("bob", None)).unwrap();
        assert!(!verdict.admits());
    }

    #[test]
    fn verifying_marks_the_peer_and_a_change_drops_the_mark() {
        let dir = TempDir::new().unwrap();
        let mut alice = identities(&dir);
        let bob = IdentityKey::from_seed(&[1; 32]);
        let first = entry("bob", Some(&bob));
        alice.vet(&first).unwrap();
        let shown = alice.safety_number("bob", Some(&first)).unwrap();
        let ClientEvent::SafetyNumber {
            number, verified, ..
        } = shown
        else {
            panic!("{shown:?}")
        };
        assert!(!verified);
        // bob's side computes the same number.
        let me = IdentityKey::from_seed(&[9; 32]).public();
        assert_eq!(
            number,
            SafetyNumber::new("bob", &bob.public(), "alice", &me).to_string()
        );
        alice.trust("bob", Some(&first), true).unwrap();
        assert!(alice.is_verified("bob"));
        let mut later = identities(&dir);
        later.vet(&entry("bob", Some(&bob))).unwrap();
        assert!(later.is_verified("bob"), "kept in the file");
        let other = entry("bob", Some(&IdentityKey::from_seed(&[3; 32])));
        later.vet(&other).unwrap();
        assert!(!later.is_verified("bob"));
        later.trust("bob", Some(&other), false).unwrap();
        assert!(
            !later.is_verified("bob"),
            "a trusted change is not verified"
        );
        assert_eq!(
            later.safety_number("alice", None),
            Err(IdentityCommandError::NotOnline("alice".into()))
        );
    }

    #[test]
    fn a_confirm_marks_verified_only_the_identity_the_last_verify_showed() {
        let dir = TempDir::new().unwrap();
        let mut alice = identities(&dir);
        let bob = IdentityKey::from_seed(&[1; 32]);
        let real = entry("bob", Some(&bob));
        alice.vet(&real).unwrap();
        // No number shown: nothing to confirm.
        let refused = alice.trust("bob", Some(&real), true);
        assert_eq!(refused, Err(IdentityCommandError::NotShown("bob".into())));
        // The real number shown, then another identity announced for bob: not confirmed.
        alice.safety_number("bob", Some(&real)).unwrap();
        let other = entry("bob", Some(&IdentityKey::from_seed(&[3; 32])));
        alice.vet(&other).unwrap();
        assert_eq!(
            alice.trust("bob", Some(&other), true),
            Err(IdentityCommandError::NotShown("bob".into()))
        );
        assert!(!alice.is_verified("bob"));
        assert!(!alice.vet(&other).unwrap().1.admits(), "nothing pinned");
        // Shown, then confirmed: the one compared is verified (any spelling of the name).
        alice.safety_number("BOB", Some(&other)).unwrap();
        alice.trust("bob", Some(&other), true).unwrap();
        assert!(alice.is_verified("bob"));
        // Who leaves takes what was shown along.
        alice.forget("bob");
        assert!(alice.shown.is_empty());
    }
}
