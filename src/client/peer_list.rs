//! The client's copy of who is online, kept current from the server's `welcome`, `joined`,
//! `left` and `peers` messages. Names are looked up without regard to case, as the server does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::protocol::PeerInfo;

#[derive(Debug, Default, Clone)]
pub struct PeerList {
    /// Lower-cased username → peer.
    peers: BTreeMap<String, PeerInfo>,
    /// Lower-cased names whose current identity this user verified (`/verify NAME confirm`),
    /// as the identity checks last found; kept apart from the list, which the server replaces.
    verified: BTreeSet<String>,
}

impl PeerList {
    pub fn replace(&mut self, peers: Vec<PeerInfo>) {
        self.peers = peers
            .into_iter()
            .map(|p| (p.username.to_ascii_lowercase(), p))
            .collect();
    }

    pub fn insert(&mut self, peer: PeerInfo) {
        self.peers.insert(peer.username.to_ascii_lowercase(), peer);
    }

    pub fn remove(&mut self, username: &str) {
        self.peers.remove(&username.to_ascii_lowercase());
    }

    pub fn get(&self, username: &str) -> Option<&PeerInfo> {
        self.peers.get(&username.to_ascii_lowercase())
    }

    /// Marks `username` verified (its identity is the one whose safety number was confirmed),
    /// or not.
    pub fn set_verified(&mut self, username: &str, verified: bool) {
        let name = username.to_ascii_lowercase();
        if verified {
            self.verified.insert(name);
        } else {
            self.verified.remove(&name);
        }
    }

    /// The online peers marked verified, as the server spells their names, in name order.
    pub fn verified(&self) -> Vec<String> {
        self.peers
            .iter()
            .filter(|(name, _)| self.verified.contains(*name))
            .map(|(_, peer)| peer.username.clone())
            .collect()
    }

    /// Everyone online, in name order.
    pub fn to_vec(&self) -> Vec<PeerInfo> {
        self.peers.values().cloned().collect()
    }

    /// The online peer named `username`, if `source` is the address it announced for direct
    /// messages (IPv4-mapped IPv6 addresses count as their IPv4 address).
    pub fn verify_source(&self, username: &str, source: SocketAddr) -> Option<&PeerInfo> {
        let peer = self.get(username)?;
        let announced = peer.p2p_addr();
        (announced.ip().to_canonical() == source.ip().to_canonical()
            && announced.port() == source.port())
        .then_some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, addr: &str) -> PeerInfo {
        let addr: SocketAddr = addr.parse().unwrap();
        PeerInfo {
            username: name.into(),
            ip: addr.ip(),
            p2p_port: addr.port(),
            public_key: None,
            identity_key: None,
            identity_binding: None,
        }
    }

    #[test]
    fn tracks_joins_and_leaves_without_regard_to_case() {
        let mut list = PeerList::default();
        list.replace(vec![
            peer("alice", "127.0.0.1:1"),
            peer("Bob", "127.0.0.1:2"),
        ]);
        list.insert(peer("carol", "127.0.0.1:3"));
        list.remove("BOB");
        let names: Vec<_> = list.to_vec().into_iter().map(|p| p.username).collect();
        assert_eq!(names, ["alice", "carol"]);
        assert!(list.get("ALICE").is_some());
    }

    #[test]
    fn a_datagram_must_come_from_the_announced_address() {
        let mut list = PeerList::default();
        list.insert(peer("alice", "10.0.0.1:4000"));
        assert!(list
            .verify_source("alice", "10.0.0.1:4000".parse().unwrap())
            .is_some());
        assert!(list
            .verify_source("alice", "[::ffff:10.0.0.1]:4000".parse().unwrap())
            .is_some());
        assert!(list
            .verify_source("alice", "10.0.0.1:4001".parse().unwrap())
            .is_none());
        assert!(list
            .verify_source("alice", "10.0.0.2:4000".parse().unwrap())
            .is_none());
        assert!(list
            .verify_source("mallory", "10.0.0.1:4000".parse().unwrap())
            .is_none());
    }
}
