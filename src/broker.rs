//! The broker: the one task that owns the set of online users and fans messages out to them.
//!
//! Connections talk to it through a bounded [`Event`] queue. It never waits on a client: it puts
//! lines into each client's [`Outbox`] (the send queue, [`crate::outbox`]) without waiting, and a
//! client whose queue is full is disconnected ("send queue exceeded") and announced as gone, so
//! one slow reader can neither grow the server's memory nor hold up the others.
//!
//! Room and presence lines (`message`, `joined`, `left`) go to everyone, so they are appended once
//! to a shared chunk ([`chunk`]) that is sealed and handed to every client as a range of the same
//! buffer: one reference, one lock and at most one wake-up per client per chunk, however many
//! lines it holds. A chunk is sealed when its earliest line is due: a room line at once if the
//! last chunk went out more than [`ROOM_TICK`] ago, else at that tick (so lines coming faster
//! than that share a write, like Nagle's algorithm, with a bounded delay); a presence line
//! [`announce_tick`] after the first of its chunk (longer with more clients online, so a join
//! storm fans out ten times a second rather than fifty). Before a line of a client's own
//! (`peers`) the chunk is sealed, so each client receives everything in the order it happened.
//! The lines themselves are unchanged, so every client understands them.
//!
//! A join storm is its heaviest work: every login sends the newcomer everyone online and tells
//! everyone about the newcomer, O(N) bytes per login. So the peer list is kept sorted by a key
//! computed once per session, and each peer's JSON is encoded once at login and copied, never
//! re-serialised, into `welcome` and `peers`.
//!
//! It owns the online set and nothing else: it never touches a socket, never authenticates, and
//! never blocks on anything but its own event queue.

mod chunk;
mod ended_keys;

pub use ended_keys::{ENDED_KEY_MEMORY, MAX_ENDED_KEYS};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::StreamExt;

use crate::connection::Disconnect;
use crate::outbox::{Outbox, Undeliverable};
use crate::protocol::{encode_line, PeerInfo, PublicKey, RoomLine, ServerMessage};
use crate::runtime;

/// Identifies one logged-in connection, so that a late `Leave` from an old connection cannot
/// remove a newer session of the same user.
pub type SessionId = u64;

/// How many events may wait for the broker.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// How long after the previous chunk a room line may wait for others, so that they go out in one
/// write. Each chunk costs every receiver a wake-up and a `send()` (~5 µs with the loopback's
/// receiving side), so at 2,000 lines a second to a room of 1,000 the server is clocked by its own
/// fan-out: measured (`paced`, quiet machine), a 2 ms or 5 ms tick changed nothing (the cycle over
/// 1,000 writers is longer: 0.52 µs per delivery, 1.3 × ngircd), 10 ms gave 0.38 µs and 20 ms
/// 0.22 µs, with latency p50 / p99 of 15 / 28 ms against 16 / 40 ms at 2 ms (less CPU, less
/// queueing). A line that comes when nothing went out for this long is sent at once, so only a
/// room busier than 50 lines a second waits, and 20 ms is far below what a person notices.
pub const ROOM_TICK: Duration = Duration::from_millis(20);

/// The least a `joined` or `left` line may wait for others due to the same clients (see
/// [`announce_tick`]). During a login storm every idle client is owed one line per login: sent
/// one by one, each is a wake-up and a `send()` per client. 20 ms is far below what a person
/// notices in a presence list.
pub const ANNOUNCE_TICK: Duration = Duration::from_millis(20);

/// How much the presence tick grows per client online: one fan-out costs every online client a
/// wake-up and a `send()` (5–8 µs each with the loopback's receiving side, measured in the
/// 10,000-client storm), so the tick grows with the crowd to keep fan-outs to about a third of
/// one core (20 µs × 1,000 online = 20 ms).
pub const ANNOUNCE_TICK_PER_CLIENT: Duration = Duration::from_micros(20);

/// The most a `joined` or `left` line may wait, however many are online (reached at 10,000, so
/// that the third-of-a-core rule holds that far): a fifth of a second is still below what a
/// person notices in a presence list. At 100 ms (reached at 5,000) a 10,000-client storm over
/// TLS wrote 1.7 times as often as in plaintext, because it lasted longer: 20.8 s of server
/// CPU; at 200 ms, 16.5 s (docs/performance.md, "Over TLS").
pub const MAX_ANNOUNCE_TICK: Duration = Duration::from_millis(200);

/// How long a presence line may wait with `online` clients online: [`ANNOUNCE_TICK`], growing
/// by [`ANNOUNCE_TICK_PER_CLIENT`] per client up to [`MAX_ANNOUNCE_TICK`].
pub fn announce_tick(online: usize) -> Duration {
    let grown = ANNOUNCE_TICK_PER_CLIENT.saturating_mul(u32::try_from(online).unwrap_or(u32::MAX));
    grown.clamp(ANNOUNCE_TICK, MAX_ANNOUNCE_TICK)
}

/// Most bytes in a chunk before it is sealed regardless of its deadline (about 700 `joined`
/// lines, or 1,000 short room lines): bounds the broker's buffer and what a client owed nothing
/// may take past its send-queue cap in one go.
pub const MAX_CHUNK_BYTES: usize = 64 * 1024;

/// Why a login was refused by the broker.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    /// The name is online, and the join may not take it over (a registration).
    #[error("the name is online already")]
    AlreadyOnline,
    /// Another online session announced the same IP address and UDP port: direct messages for
    /// one would reach the other.
    #[error("the direct-message endpoint is announced by another online session")]
    EndpointInUse,
    /// The session key is announced by another online session, or was by one of another
    /// account that ended recently: clients would take one's direct messages for the other's,
    /// and one's end for the other's.
    #[error("the session key is another session's, online or recently ended")]
    KeyInUse,
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What connections tell the broker.
pub enum Event {
    /// A user has authenticated. The broker sends them `welcome` with everyone online and
    /// announces them to the others, or refuses if another online session announced the same
    /// direct-message endpoint (IP and UDP port), or if the name is online already and this
    /// join may not take it over.
    Join {
        id: SessionId,
        peer: PeerInfo,
        outbox: Outbox,
        /// A login that proved the password takes the name over from a session online under
        /// it (which is announced `left`, and told through its `replaced`); a registration
        /// never does (its name cannot exist).
        takes_over: bool,
        /// Fired when a later login takes this session's name over: the session then tells its
        /// client `replaced` and ends. Dropped unfired when the session leaves otherwise.
        replaced: oneshot::Sender<()>,
        reply: oneshot::Sender<Result<(), JoinRefused>>,
    },
    /// The connection ended (any reason).
    Leave { id: SessionId },
    /// A room line, relayed as it is to everyone but the sender (the session checked it).
    Say { id: SessionId, line: RoomLine },
    /// The sender wants the list of online users.
    List { id: SessionId },
    /// The server is stopping: hand out every line still held back, then refuse new logins and
    /// announce nothing more. `done` is answered once the held lines are in the send queues, so
    /// that the server's `shutdown` notice, queued after it, comes last.
    Shutdown { done: oneshot::Sender<()> },
}

struct Session {
    peer: PeerInfo,
    /// The sort key, computed once: the lower-cased username.
    key: String,
    outbox: Outbox,
    /// Tells the session's connection that a login from elsewhere took its name over.
    replaced: oneshot::Sender<()>,
}

/// The broker's state: who is online.
#[derive(Default)]
struct Broker {
    sessions: HashMap<SessionId, Session>,
    /// Lower-cased username → session and its peer entry (the peer as JSON, encoded once at
    /// login and copied into every `welcome`, `peers` and `joined` that lists it), in the order
    /// of the peer list; also the "already online" check. The entry is here rather than in the
    /// session so that a peer list is one walk of this map: a 10,000-client storm copies 50
    /// million entries into `welcome`s, and looking each session up cost the storm over TLS
    /// 2–3 s of its 17 s of server CPU (docs/performance.md, "Over TLS").
    by_name: BTreeMap<String, (SessionId, Box<str>)>,
    /// Announced direct-message endpoint (IP, UDP port) → session: one endpoint, one session.
    by_endpoint: HashMap<SocketAddr, SessionId>,
    /// Announced session key → session: one key, one session.
    by_key: HashMap<PublicKey, SessionId>,
    /// The keys of sessions that ended recently, and whose they were (bounded).
    ended_keys: ended_keys::EndedKeys,
    /// Total length of every session's `entry`, to size a peer list in one allocation.
    entries_len: usize,
    /// Room and presence lines not yet handed out.
    chunk: chunk::Chunk,
    /// When the last chunk was handed out: the ticks count from there.
    last_seal: Option<Instant>,
    /// Scratch: the ranges of a chunk one session receives.
    ranges: Vec<Range<usize>>,
    shutting_down: bool,
}

/// Runs the broker until every sender of `events` is dropped.
pub async fn run(mut events: mpsc::Receiver<Event>) {
    let mut broker = Broker::default();
    loop {
        let event = match broker.chunk.due() {
            None => events.next().await,
            Some(due) => {
                let left = due.saturating_duration_since(Instant::now());
                match runtime::timeout(left, events.next()).await {
                    Some(event) => event,
                    None => {
                        broker.seal();
                        continue;
                    }
                }
            }
        };
        let Some(event) = event else { break };
        broker.handle(event);
        if broker.chunk.due().is_some_and(|due| due <= Instant::now()) {
            broker.seal();
        }
    }
    broker.seal();
}

impl Broker {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Join {
                id,
                peer,
                outbox,
                takes_over,
                replaced,
                reply,
            } => {
                let key = peer.username.to_ascii_lowercase();
                let online = self.by_name.get(&key).map(|(id, _)| *id);
                // The session being replaced may well have announced the same endpoint (the
                // same laptop, the same --p2p-port): it frees it.
                let endpoint_owner = self.by_endpoint.get(&peer.p2p_addr()).copied();
                let refused = if self.shutting_down {
                    Some(JoinRefused::ShuttingDown)
                } else if online.is_some() && !takes_over {
                    Some(JoinRefused::AlreadyOnline)
                } else if endpoint_owner.is_some_and(|owner| Some(owner) != online) {
                    Some(JoinRefused::EndpointInUse)
                } else if peer
                    .public_key
                    .is_some_and(|k| !self.key_free_for(&k, &key, online))
                {
                    Some(JoinRefused::KeyInUse)
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
                if let Some(old) = online {
                    self.replace(old);
                }
                self.join(id, key, peer, outbox, replaced);
            }
            Event::Leave { id } => {
                self.remove(id, None);
                // A crowd leaving at once must not build one chunk past the bound.
                self.seal_if_full();
            }
            Event::Say { id, line } => {
                if let Some(from) = self.sessions.get(&id).map(|s| s.peer.username.clone()) {
                    self.say(id, &ServerMessage::Message { from, line });
                }
            }
            // Once shutting down, every connection is being told `shutdown`: that comes last.
            Event::List { .. } if self.shutting_down => {}
            Event::List { id } => {
                self.seal();
                let peers = self.peers_line();
                self.send_line_to(id, peers);
            }
            Event::Shutdown { done } => {
                self.seal();
                self.shutting_down = true;
                let _ = done.send(());
            }
        }
    }

    /// Whether `key` may be announced by the account `name` (lower-cased), whose session
    /// `online` (if any) the join takes over: not while another session announces it, nor when
    /// another account's session announced it recently. The same account may announce it again
    /// (taking over its own lingering session).
    fn key_free_for(&mut self, key: &PublicKey, name: &str, online: Option<SessionId>) -> bool {
        if let Some(&holder) = self.by_key.get(key) {
            return Some(holder) == online;
        }
        self.ended_keys
            .owner(key, Instant::now())
            .is_none_or(|owner| owner == name)
    }

    /// Takes session `old` out for a login that took its name over: announced `left` (its
    /// session key ends with it; the new session's `joined` follows), and told so through its
    /// `replaced`, on which its connection queues the `replaced` error behind everything it was
    /// owed and closes. Its late `Leave` finds nothing: its id is gone.
    fn replace(&mut self, old: SessionId) {
        let Some(session) = self.unlist(old) else {
            return;
        };
        let name = session.peer.username;
        log::info!("{name} left: replaced by a login from another connection");
        // Its connection may have ended meanwhile (its `Leave` on the way): nothing to tell.
        let _ = session.replaced.send(());
        self.announce(&encode_line(&ServerMessage::Left { username: name }));
    }

    fn join(
        &mut self,
        id: SessionId,
        key: String,
        peer: PeerInfo,
        outbox: Outbox,
        replaced: oneshot::Sender<()>,
    ) {
        log::info!(
            "{} is online (direct messages at {})",
            peer.username,
            peer.p2p_addr()
        );
        let entry: Box<str> = serde_json::to_string(&peer)
            .expect("a peer always serializes")
            .into();
        self.by_endpoint.insert(peer.p2p_addr(), id);
        if let Some(public_key) = peer.public_key {
            self.by_key.insert(public_key, id);
        }
        self.entries_len += entry.len();
        let announcement = format!("{{\"type\":\"joined\",\"peer\":{entry}}}\n");
        self.by_name.insert(key.clone(), (id, entry));
        self.sessions.insert(
            id,
            Session {
                peer,
                key,
                outbox,
                replaced,
            },
        );
        let welcome = self.welcome_line(&self.sessions[&id].peer.username);
        let session = self.sessions.get_mut(&id).expect("inserted above");
        if session.outbox.push_owned(welcome) == Err(Undeliverable::QueueFull) {
            // Owed so much already that its welcome passes the cap: it never was online for
            // the others, so it leaves without a `joined` or a `left`.
            let session = self.unlist(id).expect("inserted above");
            let name = session.peer.username;
            log::warn!("{name} disconnected: {}", Disconnect::SendQueueExceeded);
            return;
        }
        self.announce(&announcement);
        // Its welcome listed everyone before it: it is owed what follows its own `joined`.
        self.chunk.starts_here(id);
        self.seal_if_full();
    }

    /// Removes a session and announces it; `reason` is logged when the broker itself dropped it.
    fn remove(&mut self, id: SessionId, reason: Option<Disconnect>) {
        let Some(session) = self.unlist(id) else {
            return;
        };
        let name = session.peer.username;
        match reason {
            Some(reason) => log::warn!("{name} disconnected: {reason}"),
            None => log::info!("{name} left"),
        }
        self.announce(&encode_line(&ServerMessage::Left { username: name }));
    }

    /// Takes a session out of the online set without announcing it.
    fn unlist(&mut self, id: SessionId) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        self.chunk.forget(id);
        self.by_endpoint.remove(&session.peer.p2p_addr());
        if let Some(public_key) = session.peer.public_key {
            self.by_key.remove(&public_key);
            // Its end is remembered whatever the reason (left, replaced, dropped): clients
            // retire the key, so another account announcing it would be refused by them.
            self.ended_keys
                .ended(public_key, &session.key, Instant::now());
        }
        if let Some((_, entry)) = self.by_name.remove(&session.key) {
            self.entries_len -= entry.len();
        }
        Some(session)
    }

    /// `{"type":"welcome","username":…,"peers":[…]}`, the same bytes as serialising
    /// [`ServerMessage::Welcome`], built from the encoded entries.
    fn welcome_line(&self, username: &str) -> String {
        let username = serde_json::to_string(username).expect("a string always serializes");
        let mut line = String::with_capacity(48 + username.len() + self.peer_list_len());
        line.push_str("{\"type\":\"welcome\",\"username\":");
        line.push_str(&username);
        line.push_str(",\"peers\":");
        self.push_peer_list(&mut line);
        line.push_str("}\n");
        line
    }

    /// `{"type":"peers","peers":[…]}`, the same bytes as serialising [`ServerMessage::Peers`].
    fn peers_line(&self) -> String {
        let mut line = String::with_capacity(32 + self.peer_list_len());
        line.push_str("{\"type\":\"peers\",\"peers\":");
        self.push_peer_list(&mut line);
        line.push_str("}\n");
        line
    }

    fn peer_list_len(&self) -> usize {
        self.entries_len + self.sessions.len() + 2
    }

    /// Appends the JSON array of every online peer, sorted by lower-cased name.
    fn push_peer_list(&self, out: &mut String) {
        out.push('[');
        for (i, (_, entry)) in self.by_name.values().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(entry);
        }
        out.push(']');
    }

    /// When a room line appended now must go out: at once if the last chunk went out
    /// [`ROOM_TICK`] ago or more, else that tick after it.
    fn room_due(&self) -> Instant {
        let now = Instant::now();
        self.last_seal
            .map_or(now, |last| (last + ROOM_TICK).max(now))
    }

    /// Appends a `joined` or `left` line for every online session, due one presence tick after
    /// the first line of the chunk.
    fn announce(&mut self, line: &str) {
        if self.shutting_down {
            return; // Every connection is being told `shutdown`; nothing else matters now.
        }
        // From the line itself, not from the last chunk as a room line: a join storm slows
        // every login down, and logins further apart than the tick would then each cost a full
        // fan-out, which slows them further.
        let due = Instant::now() + announce_tick(self.sessions.len());
        self.chunk.append(line.as_bytes(), due);
    }

    /// Appends a room line for every session but its sender, due within [`ROOM_TICK`].
    fn say(&mut self, sender: SessionId, message: &ServerMessage) {
        if self.shutting_down {
            return; // Every connection is being told `shutdown`; nothing else matters now.
        }
        let due = self.room_due();
        self.chunk
            .append_from(sender, encode_line(message).as_bytes(), due);
        self.seal_if_full();
    }

    fn seal_if_full(&mut self) {
        if self.chunk.len() >= MAX_CHUNK_BYTES {
            self.seal();
        }
    }

    /// Hands the waiting room and presence lines out: one shared chunk, and to each session the
    /// ranges of it that it is owed. Sessions whose queue is full are dropped afterwards, which
    /// announces them: another round, which may drop more.
    fn seal(&mut self) {
        while let Some(sealed) = self.chunk.seal() {
            self.last_seal = Some(Instant::now());
            let mut overflowed = Vec::new();
            for (&id, session) in self.sessions.iter_mut() {
                sealed.ranges_for(id, &mut self.ranges);
                if session.outbox.push_shared(&sealed.bytes, &self.ranges)
                    == Err(Undeliverable::QueueFull)
                {
                    overflowed.push(id);
                }
            }
            for id in overflowed {
                self.remove(id, Some(Disconnect::SendQueueExceeded));
            }
        }
    }

    /// Sends a line of `id`'s own (the chunk is sealed before, by the callers that need it).
    fn send_line_to(&mut self, id: SessionId, line: String) {
        let overflowed = match self.sessions.get_mut(&id) {
            Some(session) => session.outbox.push_owned(line) == Err(Undeliverable::QueueFull),
            None => false,
        };
        if overflowed {
            self.remove(id, Some(Disconnect::SendQueueExceeded));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{self, OutboxReader, QueueLimits};
    use crate::protocol::TextKind;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Everything owed in one take, as the socket would get it; `None` if nothing is owed.
    fn take(reader: &mut OutboxReader) -> Option<Vec<u8>> {
        use futures::FutureExt;
        let batch = reader.next().now_or_never()??;
        let bytes: Vec<u8> = batch.iter().flat_map(|s| s.bytes().to_vec()).collect();
        reader.written(bytes.len());
        reader.recycle(batch);
        Some(bytes)
    }

    struct TestClient {
        lines: OutboxReader,
        closed: Arc<AtomicBool>,
        replaced: oneshot::Receiver<()>,
    }

    impl TestClient {
        /// Everything owed, as if the socket had taken it.
        fn received(&mut self) -> Vec<ServerMessage> {
            let Some(bytes) = take(&mut self.lines) else {
                return Vec::new();
            };
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
        let (replaced, told) = oneshot::channel();
        broker.handle(Event::Join {
            id,
            peer: PeerInfo {
                username: name.into(),
                ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                p2p_port: 1000 + id as u16,
                public_key: None,
                identity_key: None,
                identity_binding: None,
            },
            outbox,
            takes_over: false,
            replaced,
            reply,
        });
        assert_eq!(answer.try_recv().unwrap(), Some(Ok(())));
        broker.seal(); // The tick ends.
        TestClient {
            lines: rx,
            closed,
            replaced: told,
        }
    }

    impl Broker {
        /// The peer list as a `list` would get it.
        fn peers(&self) -> Vec<PeerInfo> {
            match crate::protocol::decode_server(self.peers_line().trim_end().as_bytes()) {
                Ok(ServerMessage::Peers { peers }) => peers,
                other => panic!("{other:?}"),
            }
        }
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
                identity_key: None,
                identity_binding: None,
            },
            outbox,
            takes_over: false,
            replaced: oneshot::channel().0,
            reply,
        });
        assert_eq!(
            answer.try_recv().unwrap(),
            Some(Err(JoinRefused::AlreadyOnline))
        );
    }

    #[test]
    fn a_key_is_announced_by_one_account_only_while_online_and_after_it_ended() {
        let mut broker = Broker::default();
        let alice_key = crate::protocol::PublicKey::from_bytes([1; 32]);
        let attempt = |broker: &mut Broker, id, name: &str, takes_over, key| {
            let (outbox, _rx) = outbox::channel(QueueLimits::default(), Box::new(|| {}));
            let (reply, mut answer) = oneshot::channel();
            broker.handle(Event::Join {
                id,
                peer: PeerInfo {
                    username: name.into(),
                    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    p2p_port: 1000 + id as u16,
                    public_key: Some(key),
                    identity_key: None,
                    identity_binding: None,
                },
                outbox,
                takes_over,
                replaced: oneshot::channel().0,
                reply,
            });
            answer.try_recv().unwrap().unwrap()
        };
        assert_eq!(attempt(&mut broker, 1, "alice", true, alice_key), Ok(()));
        // mallory announcing alice's key while she is online: refused, alice stays.
        assert_eq!(
            attempt(&mut broker, 2, "mallory", true, alice_key),
            Err(JoinRefused::KeyInUse)
        );
        assert_eq!(names(&broker.peers()), ["alice"]);
        // alice taking over her own session may announce it again.
        assert_eq!(attempt(&mut broker, 3, "Alice", true, alice_key), Ok(()));
        // Once alice's session ended, her key is still not mallory's to announce…
        broker.handle(Event::Leave { id: 3 });
        assert!(broker.by_key.is_empty());
        assert_eq!(
            attempt(&mut broker, 4, "mallory", true, alice_key),
            Err(JoinRefused::KeyInUse)
        );
        // …but alice's own again, and a fresh key is anyone's.
        assert_eq!(attempt(&mut broker, 5, "alice", true, alice_key), Ok(()));
        let fresh = crate::protocol::PublicKey::from_bytes([2; 32]);
        assert_eq!(attempt(&mut broker, 6, "mallory", true, fresh), Ok(()));
    }

    #[test]
    fn a_login_takes_an_online_name_over_and_the_old_sessions_late_leave_changes_nothing() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        alice.received();
        bob.received();
        // A registration never takes a name over.
        let attempt = |broker: &mut Broker, id, takes_over, p2p_port| {
            let (outbox, rx) = outbox::channel(QueueLimits::default(), Box::new(|| {}));
            let (reply, mut answer) = oneshot::channel();
            let (replaced, told) = oneshot::channel();
            broker.handle(Event::Join {
                id,
                peer: PeerInfo {
                    username: "Alice".into(),
                    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    p2p_port,
                    public_key: None,
                    identity_key: None,
                    identity_binding: None,
                },
                outbox,
                takes_over,
                replaced,
                reply,
            });
            broker.seal();
            let answer = answer.try_recv().unwrap();
            (answer, rx, told)
        };
        let (answer, ..) = attempt(&mut broker, 3, false, 3003);
        assert_eq!(answer, Some(Err(JoinRefused::AlreadyOnline)));
        // Nor does a login announcing bob's endpoint: nothing changes for alice.
        let (answer, ..) = attempt(&mut broker, 4, true, 1002);
        assert_eq!(answer, Some(Err(JoinRefused::EndpointInUse)));
        assert_eq!(alice.replaced.try_recv(), Ok(None));
        // A login from the old session's own endpoint takes it over.
        let (answer, mut new_alice, mut told) = attempt(&mut broker, 5, true, 1001);
        assert_eq!(answer, Some(Ok(())));
        assert_eq!(alice.replaced.try_recv(), Ok(Some(())));
        assert!(alice.received().is_empty(), "told by its session, not here");
        match &bob.received()[..] {
            [ServerMessage::Left { username }, ServerMessage::Joined { peer }] => {
                assert_eq!(username, "alice");
                assert_eq!((peer.username.as_str(), peer.p2p_port), ("Alice", 1001));
            }
            other => panic!("{other:?}"),
        }
        assert!(take(&mut new_alice).is_some(), "its welcome");
        // The old connection's `Leave`, after the new session joined: the new one stays.
        broker.handle(Event::Leave { id: 1 });
        broker.seal();
        assert!(bob.received().is_empty());
        assert_eq!(names(&broker.peers()), ["Alice", "bob"]);
        assert_eq!(told.try_recv(), Ok(None));
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
                    identity_key: None,
                    identity_binding: None,
                },
                outbox,
                takes_over: false,
                replaced: oneshot::channel().0,
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

    /// A room line from `id`, and the tick ends.
    fn say(broker: &mut Broker, id: SessionId, line: RoomLine) {
        broker.handle(Event::Say { id, line });
        broker.seal();
    }

    #[test]
    fn room_messages_reach_everyone_but_the_sender() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        alice.received();
        bob.received();
        // Any kind: the broker relays a line whole, without looking at it.
        say(&mut broker, 1, RoomLine::new(TextKind::Action, "hi"));
        assert!(alice.received().is_empty());
        assert_eq!(
            bob.received(),
            [ServerMessage::Message {
                from: "alice".into(),
                line: RoomLine::new(TextKind::Action, "hi"),
            }]
        );
    }

    #[test]
    fn a_room_line_is_held_once_for_all_its_receivers() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        let mut carol = join(&mut broker, 3, "carol");
        for client in [&mut alice, &mut bob, &mut carol] {
            client.received();
        }
        say(&mut broker, 1, RoomLine::say("hi"));
        use futures::FutureExt;
        let shared = |client: &mut TestClient| match client.lines.next().now_or_never() {
            Some(Some(batch)) => match &batch.iter().collect::<Vec<_>>()[..] {
                [outbox::Segment::Shared { chunk, .. }] => chunk.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert!(Arc::ptr_eq(&shared(&mut bob), &shared(&mut carol)));
        assert!(alice.received().is_empty());
    }

    #[test]
    fn a_room_line_after_a_quiet_spell_goes_at_once_and_later_ones_wait_for_the_tick() {
        let mut broker = Broker::default();
        let _alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        bob.received();
        broker.last_seal = None;
        broker.handle(Event::Say {
            id: 1,
            line: RoomLine::say("first"),
        });
        assert!(broker.chunk.due().unwrap() <= Instant::now(), "due at once");
        broker.seal();
        let sealed_at = broker.last_seal.unwrap();
        for text in ["second", "third"] {
            broker.handle(Event::Say {
                id: 1,
                line: RoomLine::say(text),
            });
        }
        assert!(broker.chunk.due().unwrap() >= sealed_at + ROOM_TICK);
        broker.seal();
        // Both held lines went out together, after the first, in order.
        let batches = bob.batches();
        assert_eq!(batches.len(), 1);
        let texts: Vec<String> = batches[0]
            .lines()
            .map(
                |l| match crate::protocol::decode_server(l.as_bytes()).unwrap() {
                    ServerMessage::Message { line, .. } => line.text,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(texts, ["first", "second", "third"]);
    }

    #[test]
    fn shutdown_hands_out_the_held_lines_before_it_is_answered() {
        let mut broker = Broker::default();
        let _alice = join(&mut broker, 1, "alice");
        let mut bob = join(&mut broker, 2, "bob");
        bob.received();
        broker.last_seal = Some(Instant::now()); // A line just went out: the next one is held.
        broker.handle(Event::Say {
            id: 1,
            line: RoomLine::say("last words"),
        });
        assert!(bob.batches().is_empty(), "held for the tick");
        let (done, mut answered) = oneshot::channel();
        broker.handle(Event::Shutdown { done });
        assert_eq!(answered.try_recv(), Ok(Some(())));
        let batches = bob.batches();
        assert_eq!(batches.len(), 1);
        assert!(batches[0].contains("last words"), "{batches:?}");
    }

    #[test]
    fn a_newcomer_whose_welcome_passes_its_cap_is_neither_announced_nor_left_behind() {
        let mut broker = Broker::default();
        let mut bob = join(&mut broker, 1, "bob");
        for id in 2..40 {
            join(&mut broker, id, &format!("peer{id:02}"));
        }
        bob.received();
        // A client owed 900 bytes already (it stopped reading before its login ended) whose
        // welcome, listing 40 peers, passes its 1 KiB cap.
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let limits = QueueLimits {
            bytes: 1024,
            ..QueueLimits::default()
        };
        let (mut outbox, _rx) =
            outbox::channel(limits, Box::new(move || flag.store(true, Ordering::SeqCst)));
        outbox.push_line(&format!("{}\n", "x".repeat(899))).unwrap();
        let (reply, _answer) = oneshot::channel();
        broker.handle(Event::Join {
            id: 100,
            peer: peer(100, "greedy"),
            outbox,
            takes_over: false,
            replaced: oneshot::channel().0,
            reply,
        });
        broker.seal();
        assert!(closed.load(Ordering::SeqCst), "dropped for its cap");
        assert!(!names(&broker.peers()).contains(&"greedy"));
        assert!(
            bob.batches().is_empty(),
            "the others saw it neither join nor leave"
        );
        // Its name and endpoint are free again, and a later login is announced once.
        let _again = join(&mut broker, 101, "greedy");
        let joined: Vec<String> = bob.batches();
        assert_eq!(joined.concat().matches("greedy").count(), 1, "{joined:?}");
    }

    #[test]
    fn a_crowd_leaving_at_once_is_announced_in_bounded_chunks() {
        let mut broker = Broker::default();
        let mut stays = join(&mut broker, 0, "stays");
        for id in 1..=3000 {
            join(&mut broker, id, &format!("u{id:05}"));
        }
        stays.received();
        for id in 1..=3000 {
            broker.handle(Event::Leave { id });
            assert!(broker.chunk.len() <= MAX_CHUNK_BYTES, "at leave {id}");
        }
        broker.seal();
        let left = stays.received();
        assert_eq!(left.len(), 3000);
        assert!(left.iter().all(|m| matches!(m, ServerMessage::Left { .. })));
    }

    #[test]
    fn a_list_asked_once_shutting_down_gets_no_answer_after_the_shutdown_notice() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        alice.received();
        let (done, _answered) = oneshot::channel();
        broker.handle(Event::Shutdown { done });
        broker.handle(Event::List { id: 1 });
        broker.seal();
        assert!(alice.received().is_empty());
    }

    #[test]
    fn the_presence_tick_grows_with_the_crowd_within_its_bounds() {
        assert_eq!(announce_tick(0), ANNOUNCE_TICK);
        assert_eq!(announce_tick(1_000), ANNOUNCE_TICK);
        assert_eq!(announce_tick(2_500), Duration::from_millis(50));
        assert_eq!(announce_tick(5_000), Duration::from_millis(100));
        assert_eq!(announce_tick(10_000), MAX_ANNOUNCE_TICK);
        assert_eq!(announce_tick(20_000), MAX_ANNOUNCE_TICK);
        assert_eq!(announce_tick(usize::MAX), MAX_ANNOUNCE_TICK);
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
            say(&mut broker, 3, RoomLine::say(format!("m{i}")));
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
                ServerMessage::Message { line, .. } => Some(line.text.as_str()),
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
            say(&mut broker, 2, RoomLine::say(big.as_str()));
        }
        assert!(!slow.closed.load(Ordering::SeqCst), "3 KiB fit in 4 KiB");
        // Taking a line frees its bytes.
        assert_eq!(slow.received().len(), 2);
        for _ in 0..2 {
            say(&mut broker, 2, RoomLine::say(big.as_str()));
        }
        assert!(!slow.closed.load(Ordering::SeqCst));
        say(&mut broker, 2, RoomLine::say(big.as_str()));
        assert!(slow.closed.load(Ordering::SeqCst), "4.5 KiB exceed 4 KiB");
        assert_eq!(names(&broker.peers()), ["bob"]);
    }

    /// Logs `name` in without ending the tick; `key` is its public key, if any.
    fn join_in_tick(broker: &mut Broker, id: SessionId, name: &str) -> TestClient {
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        let (outbox, rx) = outbox::channel(
            QueueLimits::default(),
            Box::new(move || flag.store(true, Ordering::SeqCst)),
        );
        let (reply, mut answer) = oneshot::channel();
        let (replaced, told) = oneshot::channel();
        broker.handle(Event::Join {
            id,
            peer: peer(id, name),
            outbox,
            takes_over: false,
            replaced,
            reply,
        });
        assert_eq!(answer.try_recv().unwrap(), Some(Ok(())));
        TestClient {
            lines: rx,
            closed,
            replaced: told,
        }
    }

    fn peer(id: SessionId, name: &str) -> PeerInfo {
        PeerInfo {
            username: name.into(),
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            p2p_port: 1000 + id as u16,
            public_key: None,
            identity_key: None,
            identity_binding: None,
        }
    }

    impl TestClient {
        /// What the writer would take in one go: everything owed so far, as one string (the
        /// broker's lines within a tick land in the buffer together).
        fn batches(&mut self) -> Vec<String> {
            take(&mut self.lines)
                .map(|bytes| String::from_utf8(bytes).unwrap())
                .into_iter()
                .collect()
        }
    }

    fn joined(id: SessionId, name: &str) -> String {
        encode_line(&ServerMessage::Joined {
            peer: peer(id, name),
        })
    }

    fn left(name: &str) -> String {
        encode_line(&ServerMessage::Left {
            username: name.into(),
        })
    }

    #[test]
    fn the_peer_list_is_sorted_by_name_whatever_its_case_and_encoded_as_serde_would() {
        let mut broker = Broker::default();
        let names_in = [
            "carol",
            "Bob",
            "alice",
            "\u{e9}mile",
            "dave\"quote",
            "ALBERT",
        ];
        let mut clients = Vec::new();
        for (i, name) in names_in.iter().enumerate() {
            clients.push(join(&mut broker, i as SessionId + 1, name));
        }
        // A peer with a public key, encoded by the same entry.
        let key: crate::protocol::PublicKey =
            serde_json::from_str(&format!("\"{}\"", "A".repeat(43) + "=")).unwrap();
        let (outbox, mut rx) = outbox::channel(QueueLimits::default(), Box::new(|| {}));
        let (reply, _answer) = oneshot::channel();
        let zed = PeerInfo {
            public_key: Some(key),
            identity_key: None,
            identity_binding: None,
            ..peer(50, "zed")
        };
        broker.handle(Event::Join {
            id: 50,
            peer: zed.clone(),
            outbox,
            takes_over: false,
            replaced: oneshot::channel().0,
            reply,
        });
        let mut expected: Vec<PeerInfo> = names_in
            .iter()
            .enumerate()
            .map(|(i, n)| peer(i as SessionId + 1, n))
            .chain([zed])
            .collect();
        expected.sort_by_key(|p| p.username.to_ascii_lowercase());
        let welcome = String::from_utf8(take(&mut rx).unwrap()).unwrap();
        assert_eq!(
            welcome,
            encode_line(&ServerMessage::Welcome {
                username: "zed".into(),
                peers: expected.clone(),
            })
        );
        assert_eq!(
            broker.peers_line(),
            encode_line(&ServerMessage::Peers { peers: expected })
        );
        assert_eq!(
            names(&broker.peers()),
            [
                "ALBERT",
                "alice",
                "Bob",
                "carol",
                "dave\"quote",
                "zed",
                "\u{e9}mile"
            ]
        );
    }

    #[test]
    fn announcements_within_a_tick_reach_each_client_as_one_batch_of_its_own() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        alice.received();
        let mut bob = join_in_tick(&mut broker, 2, "bob");
        let mut carol = join_in_tick(&mut broker, 3, "carol");
        broker.handle(Event::Leave { id: 2 });
        let mut dave = join_in_tick(&mut broker, 4, "dave");
        assert!(alice.batches().is_empty(), "held until the tick ends");
        broker.seal();
        // alice was online before the tick: everything, in order, in one entry.
        assert_eq!(
            alice.batches(),
            [joined(2, "bob") + &joined(3, "carol") + &left("bob") + &joined(4, "dave")]
        );
        // carol's welcome listed bob: she is owed what happened after her own `joined`.
        match &carol.received()[..] {
            [ServerMessage::Welcome { peers, .. }, ServerMessage::Left { username }, ServerMessage::Joined { peer }] =>
            {
                assert_eq!(names(peers), ["alice", "bob", "carol"]);
                assert_eq!(username, "bob");
                assert_eq!(peer.username, "dave");
            }
            other => panic!("{other:?}"),
        }
        // dave joined last: his welcome is all he gets; bob left: nothing after his welcome.
        match &dave.received()[..] {
            [ServerMessage::Welcome { peers, .. }] => {
                assert_eq!(names(peers), ["alice", "carol", "dave"])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(bob.received().len(), 1);
        // Nothing is sent twice.
        broker.seal();
        assert!(alice.batches().is_empty() && carol.batches().is_empty());
    }

    #[test]
    fn a_room_message_or_list_sends_the_waiting_announcements_first() {
        let mut broker = Broker::default();
        let mut alice = join(&mut broker, 1, "alice");
        alice.received();
        let _bob = join_in_tick(&mut broker, 2, "bob");
        broker.handle(Event::Say {
            id: 2,
            line: RoomLine::say("hi"),
        });
        let _carol = join_in_tick(&mut broker, 3, "carol");
        broker.handle(Event::List { id: 1 });
        match &alice.received()[..] {
            [ServerMessage::Joined { peer: b }, ServerMessage::Message { from, .. }, ServerMessage::Joined { peer: c }, ServerMessage::Peers { peers }] =>
            {
                assert_eq!((b.username.as_str(), from.as_str()), ("bob", "bob"));
                assert_eq!(c.username, "carol");
                assert_eq!(names(peers), ["alice", "bob", "carol"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_batch_is_sent_without_waiting_for_the_tick() {
        let mut broker = Broker::default();
        let mut watcher = join(&mut broker, 1, "watcher");
        watcher.received();
        let line = joined(2, "u00002").len();
        let mut others = Vec::new();
        let mut held = 0;
        for id in 2.. {
            others.push(join_in_tick(&mut broker, id, &format!("u{id:05}")));
            held += line;
            if held >= MAX_CHUNK_BYTES {
                break;
            }
            assert!(watcher.batches().is_empty(), "sent before it was full");
        }
        let batches = watcher.batches();
        assert_eq!(batches.len(), 1, "sent when full");
        assert_eq!(batches[0].len(), held);
        assert_eq!(batches[0].lines().count(), others.len());
    }
}
