//! The broker: the one task that owns the set of online users and fans messages out to them.
//!
//! Connections talk to it through a bounded [`Event`] queue. It never waits on a client: it puts
//! lines into each client's [`Outbox`] (the send queue, [`crate::outbox`]) without waiting, and a
//! client whose queue is full is disconnected ("send queue exceeded") and announced as gone, so
//! one slow reader can neither grow the server's memory nor hold up the others.
//!
//! It owns the online set and nothing else: it never touches a socket, never authenticates, and
//! never blocks on anything but its own event queue.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use crate::connection::Disconnect;
use crate::outbox::{Outbox, Undeliverable};
use crate::protocol::{encode_line, PeerInfo, ServerMessage};

/// Identifies one logged-in connection, so that a late `Leave` from an old connection cannot
/// remove a newer session of the same user.
pub type SessionId = u64;

/// How many events may wait for the broker.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// Why a login was refused by the broker.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("the name is online already")]
    AlreadyOnline,
    /// Another online session announced the same IP address and UDP port: direct messages for
    /// one would reach the other.
    #[error("the direct-message endpoint is announced by another online session")]
    EndpointInUse,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What connections tell the broker.
pub enum Event {
    /// A user has authenticated. The broker sends them `welcome` with everyone online and
    /// announces them to the others, or refuses if the name is online already, or if another
    /// online session announced the same direct-message endpoint (IP and UDP port).
    Join {
        id: SessionId,
        peer: PeerInfo,
        outbox: Outbox,
        reply: oneshot::Sender<Result<(), JoinRefused>>,
    },
    /// The connection ended (any reason).
    Leave { id: SessionId },
    /// A room message, relayed to everyone but the sender.
    Say { id: SessionId, text: String },
    /// The sender wants the list of online users.
    List { id: SessionId },
    /// The server is stopping: refuse new logins and announce nothing more.
    Shutdown,
}

struct Session {
    peer: PeerInfo,
    outbox: Outbox,
}

/// The broker's state: who is online.
#[derive(Default)]
struct Broker {
    sessions: HashMap<SessionId, Session>,
    /// Lower-cased username → session, for the "already online" check.
    by_name: HashMap<String, SessionId>,
    /// Announced direct-message endpoint (IP, UDP port) → session: one endpoint, one session.
    by_endpoint: HashMap<SocketAddr, SessionId>,
    shutting_down: bool,
}

/// Runs the broker until every sender of `events` is dropped.
pub async fn run(mut events: mpsc::Receiver<Event>) {
    let mut broker = Broker::default();
    while let Some(event) = events.next().await {
        broker.handle(event);
    }
}

impl Broker {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Join {
                id,
                peer,
                outbox,
                reply,
            } => {
                let refused = if self.shutting_down {
                    Some(JoinRefused::ShuttingDown)
                } else if self
                    .by_name
                    .contains_key(&peer.username.to_ascii_lowercase())
                {
                    Some(JoinRefused::AlreadyOnline)
                } else if self.by_endpoint.contains_key(&peer.p2p_addr()) {
                    Some(JoinRefused::EndpointInUse)
                } else {
                    None
                };
                if let Some(refused) = refused {
                    let _ = reply.send(Err(refused));
                    return;
                }
                if reply.send(Ok(())).is_err() {
                    return; // The connection went away while authenticating.
                }
                self.join(id, peer, outbox);
            }
            Event::Leave { id } => self.remove(id, None),
            Event::Say { id, text } => {
                if let Some(from) = self.sessions.get(&id).map(|s| s.peer.username.clone()) {
                    self.broadcast(&ServerMessage::Message { from, text }, Some(id));
                }
            }
            Event::List { id } => {
                let peers = ServerMessage::Peers {
                    peers: self.peers(),
                };
                self.send_to(id, &peers);
            }
            Event::Shutdown => self.shutting_down = true,
        }
    }

    fn join(&mut self, id: SessionId, peer: PeerInfo, outbox: Outbox) {
        log::info!(
            "{} is online (direct messages at {})",
            peer.username,
            peer.p2p_addr()
        );
        self.by_name.insert(peer.username.to_ascii_lowercase(), id);
        self.by_endpoint.insert(peer.p2p_addr(), id);
        let joined = ServerMessage::Joined { peer: peer.clone() };
        self.sessions.insert(id, Session { peer, outbox });
        let welcome = ServerMessage::Welcome {
            username: self.sessions[&id].peer.username.clone(),
            peers: self.peers(),
        };
        self.send_to(id, &welcome);
        self.broadcast(&joined, Some(id));
    }

    /// Removes a session and announces it; `reason` is logged when the broker itself dropped it.
    fn remove(&mut self, id: SessionId, reason: Option<Disconnect>) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        self.by_endpoint.remove(&session.peer.p2p_addr());
        let name = session.peer.username;
        self.by_name.remove(&name.to_ascii_lowercase());
        match reason {
            Some(reason) => log::warn!("{name} disconnected: {reason}"),
            None => log::info!("{name} left"),
        }
        self.broadcast(&ServerMessage::Left { username: name }, None);
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self.sessions.values().map(|s| s.peer.clone()).collect();
        peers.sort_by(|a, b| {
            a.username
                .to_ascii_lowercase()
                .cmp(&b.username.to_ascii_lowercase())
        });
        peers
    }

    fn send_to(&mut self, id: SessionId, message: &ServerMessage) {
        let overflowed = match self.sessions.get_mut(&id) {
            Some(session) => session.outbox.push(message) == Err(Undeliverable::QueueFull),
            None => false,
        };
        if overflowed {
            self.remove(id, Some(Disconnect::SendQueueExceeded));
        }
    }

    /// Sends one encoded copy of `message` to every session but `except`. Sessions whose queue
    /// is full are dropped afterwards (which announces them, and may drop more).
    fn broadcast(&mut self, message: &ServerMessage, except: Option<SessionId>) {
        if self.shutting_down {
            return; // Every connection is being told `shutdown`; nothing else matters now.
        }
        let line: Arc<str> = Arc::from(encode_line(message));
        let mut overflowed = Vec::new();
        for (&id, session) in self.sessions.iter_mut() {
            if Some(id) == except {
                continue;
            }
            if session.outbox.push_line(&line) == Err(Undeliverable::QueueFull) {
                overflowed.push(id);
            }
        }
        for id in overflowed {
            self.remove(id, Some(Disconnect::SendQueueExceeded));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{self, OutboxReader, QueueLimits};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicBool, Ordering};

    struct TestClient {
        lines: OutboxReader,
        closed: Arc<AtomicBool>,
    }

    impl TestClient {
        /// Everything owed, as if the socket had taken it.
        fn received(&mut self) -> Vec<ServerMessage> {
            use futures::FutureExt;
            let Some(Some(bytes)) = self.lines.next().now_or_never() else {
                return Vec::new();
            };
            self.lines.written(bytes.len());
            bytes
                .split(|&b| b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| crate::protocol::decode_server(line).unwrap())
                .collect()
        }
    }

    fn join(broker: &mut Broker, id: SessionId, name: &str) -> TestClient {
        join_limited(broker, id, name, QueueLimits::default())
    }

    fn join_limited(
        broker: &mut Broker,
        id: SessionId,
        name: &str,
        limits: QueueLimits,
    ) -> TestClient {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let (outbox, rx) =
            outbox::channel(limits, Box::new(move || flag.store(true, Ordering::SeqCst)));
        let (reply, mut answer) = oneshot::channel();
        broker.handle(Event::Join {
            id,
            peer: PeerInfo {
                username: name.into(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                p2p_port: 1000 + id as u16,
                public_key: None,
            },
            outbox,
            reply,
        });
        assert_eq!(answer.try_recv().unwrap(), Some(Ok(())));
        TestClient { lines: rx, closed }
    }

    fn names(peers: &[PeerInfo]) -> Vec<&str> {
        peers.iter().map(|p| p.username.as_str()).collect()
    }

    #[test]
    fn joins_are_welcomed_and_announced() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        match &alice.received()[..] {
            [ServerMessage::Welcome { peers: p1, .. }, ServerMessage::Joined { peer }] => {
                assert_eq!(names(p1), ["alice"]);
                assert_eq!(peer.username, "bob");
            }
            other => panic!("{other:?}"),
        }
        match &bob.received()[..] {
            [ServerMessage::Welcome { peers, .. }] => assert_eq!(names(peers), ["alice", "bob"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_name_already_online_is_refused_whatever_its_case() {
        let mut broker = Broker::default();
        let _alice = join(&mut broker, 1, "alice");
        let (outbox, _rx) = outbox::channel(QueueLimits::default(), Box::new(|| {}));
        let (reply, mut answer) = oneshot::channel();
        broker.handle(Event::Join {
            id: 2,
            peer: PeerInfo {
                username: "ALICE".into(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                p2p_port: 9,
                public_key: None,
            },
            outbox,
            reply,
        });
        assert_eq!(
            answer.try_recv().unwrap(),
            Some(Err(JoinRefused::AlreadyOnline))
        );
    }

    #[test]
    fn an_endpoint_announced_by_an_online_session_is_refused_until_it_leaves() {
        let mut broker = Broker::default();
        let _alice = join(&mut broker, 1, "alice");
        let mallory = |broker: &mut Broker, id| {
            let (outbox, _rx) = outbox::channel(QueueLimits::default(), Box::new(|| {}));
            let (reply, mut answer) = oneshot::channel();
            broker.handle(Event::Join {
                id,
                peer: PeerInfo {
                    username: "mallory".into(),
                    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    p2p_port: 1001, // alice's
                    public_key: None,
                },
                outbox,
                reply,
            });
            answer.try_recv().unwrap()
        };
        assert_eq!(
            mallory(&mut broker, 2),
            Some(Err(JoinRefused::EndpointInUse))
        );
        assert_eq!(names(&broker.peers()), ["alice"]);
        broker.handle(Event::Leave { id: 1 });
        assert_eq!(mallory(&mut broker, 3), Some(Ok(())));
    }

    #[test]
    fn room_messages_reach_everyone_but_the_sender() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        alice.received();
        bob.received();
        broker.handle(Event::Say {
            id: 1,
            text: "hi".into(),
        });
        assert!(alice.received().is_empty());
        assert_eq!(
            bob.received(),
            [ServerMessage::Message {
                from: "alice".into(),
                text: "hi".into()
            }]
        );
    }

    #[test]
    fn a_stale_leave_does_not_remove_a_newer_session() {
        let mut broker = Broker::default();
        let _old = join(&mut broker, 1, "alice");
        broker.handle(Event::Leave { id: 1 });
        let _new = join(&mut broker, 2, "alice");
        broker.handle(Event::Leave { id: 1 });
        assert_eq!(names(&broker.peers()), ["alice"]);
    }

    #[test]
    fn a_client_that_does_not_read_is_dropped_and_the_others_are_served() {
        let mut broker = Broker::default();
        let limits = QueueLimits {
            bytes: 256,
            ..QueueLimits::default()
        };
        let slow = join_limited(&mut broker, 1, "slow", limits);
        let mut alice = join(&mut broker, 2, "alice");
        let _bob = join(&mut broker, 3, "bob");
        for i in 0..5 {
            broker.handle(Event::Say {
                id: 3,
                text: format!("m{i}"),
            });
        }
        assert!(
            slow.closed.load(Ordering::SeqCst),
            "slow reader was not closed"
        );
        assert_eq!(names(&broker.peers()), ["alice", "bob"]);
        let got = alice.received();
        let texts: Vec<_> = got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Message { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["m0", "m1", "m2", "m3", "m4"]);
        assert!(got.contains(&ServerMessage::Left {
            username: "slow".into()
        }));
    }

    #[test]
    fn the_send_queue_is_bounded_in_bytes_too() {
        let mut broker = Broker::default();
        let limits = QueueLimits {
            bytes: 4096,
            ..QueueLimits::default()
        };
        let mut slow = join_limited(&mut broker, 1, "slow", limits);
        let _bob = join(&mut broker, 2, "bob");
        slow.received();
        let big = "x".repeat(1500);
        for _ in 0..2 {
            broker.handle(Event::Say {
                id: 2,
                text: big.clone(),
            });
        }
        assert!(!slow.closed.load(Ordering::SeqCst), "3 KiB fit in 4 KiB");
        // Taking a line frees its bytes.
        assert_eq!(slow.received().len(), 2);
        for _ in 0..2 {
            broker.handle(Event::Say {
                id: 2,
                text: big.clone(),
            });
        }
        assert!(!slow.closed.load(Ordering::SeqCst));
        broker.handle(Event::Say { id: 2, text: big });
        assert!(slow.closed.load(Ordering::SeqCst), "4.5 KiB exceed 4 KiB");
        assert_eq!(names(&broker.peers()), ["bob"]);
    }
}
