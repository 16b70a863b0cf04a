//! Direct messages under attack, black-box: a test-owned UDP socket on 127.0.0.1 floods a real
//! `p2pchat-client` with forged, excessive, oversized and malformed datagrams. Each is dropped and
//! counted (`/stats` → `direct_stats`), the warnings stay few, and the client goes on chatting.
//!
//! The clear protocol's checks (source address, ids, limits) are tested on `--plaintext`
//! clients with crafted JSON datagrams; the sealed protocol's (the default) with datagrams sealed
//! by a test-owned peer through `p2pchat::sealed`, captured from a real client, or forged.
//!
//! Floods are sent in batches, each waited for through the counters before the next, so that the
//! kernel's socket buffer never overflows and every datagram sent is one the client received.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Instant;

use common::*;
use p2pchat::client::in_flight::{time_to_verdict, MAX_TRIES};
use p2pchat::sealed::{Header, Kind, PairKeys, PublicKey, SessionKey};
use serde_json::{json, Value};

/// Datagrams per batch: well under what the client's default socket buffer holds.
const BATCH: usize = 50;

fn start_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &[]);
    (dir, server)
}

/// A `--plaintext` server, for `--plaintext` clients: the clear protocol's checks.
fn start_clear_server() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("users.json"), &["--plaintext"]);
    (dir, server)
}

fn udp_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1")
}

/// A server (with its folder: keep both while the test runs), alice (a client started with
/// `flags`) and mallory, a real peer of hers that the test plays ([`RawPeer`]: datagrams from its
/// socket pass alice's source check). alice has seen mallory join.
fn alice_and_mallory(flags: &[&str]) -> ((tempfile::TempDir, Server), ChatClient, RawPeer) {
    let (dir, server) = start_clear_server();
    // mallory speaks the clear protocol (crafted JSON datagrams, no key): so does alice.
    let mut flags = flags.to_vec();
    flags.push("--plaintext");
    let mut alice = ChatClient::register_with_flags(server.addr, "alice", "alice-password", &flags);
    let mallory = RawPeer::register(server.addr, "mallory", "mallory-pw");
    alice.expect_joined("mallory");
    ((dir, server), alice, mallory)
}

fn forged(from: &str, id: usize) -> Vec<u8> {
    json!({"type": "direct", "from": from, "id": id, "text": format!("flood {id}")})
        .to_string()
        .into_bytes()
}

fn count(stats: &Value, path: &[&str]) -> u64 {
    let mut value = stats;
    for key in path {
        value = &value[*key];
    }
    value
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {path:?} in {stats}"))
}

/// Sends `datagrams` to `to` in batches, waiting after each until the client has received them all.
fn flood(client: &mut ChatClient, from: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    let already = count(&client.stats(), &["received"]);
    let mut sent = 0;
    for batch in datagrams.chunks(BATCH) {
        for datagram in batch {
            from.send_to(datagram, to).expect("send a datagram");
        }
        sent += batch.len() as u64;
        client.wait_for_stats(&format!("{sent} more received"), |s| {
            count(s, &["received"]) == already + sent
        });
    }
}

/// What the client made of the next datagram it received: the `direct` message, or the `warning`
/// about its drop. A test that expects a message fails at once on the warning, not at a deadline.
fn datagram_outcome(client: &mut ChatClient) -> Value {
    client.expect("a direct message or a warning", |e| {
        e["event"] == "direct" || e["event"] == "warning"
    })
}

fn events_of<'a>(client: &'a ChatClient, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    client.history.iter().filter(move |e| e["event"] == kind)
}

/// Individual warnings for `sources_and_kinds` distinct (kind, source) pairs, plus at most one
/// summary per five seconds of the test's running time.
fn assert_few_warnings(client: &ChatClient, sources_and_kinds: usize, started: Instant) {
    let warnings = events_of(client, "warning").count();
    let summaries_possible = started.elapsed().as_secs() as usize / 5 + 1;
    assert!(
        warnings >= sources_and_kinds && warnings <= sources_and_kinds + summaries_possible,
        "{warnings} warnings for {sources_and_kinds} kinds and sources: {:#?}",
        events_of(client, "warning").collect::<Vec<_>>()
    );
}

#[test]
fn a_flood_from_a_non_peer_address_is_dropped_counted_and_the_client_keeps_chatting() {
    let (_dir, server) = start_clear_server();
    let started = Instant::now();
    let clear = ["--plaintext"];
    let mut alice = ChatClient::register_with_flags(server.addr, "alice", "alice-password", &clear);
    let mut bob = ChatClient::register_with_flags(server.addr, "bob", "bob-password", &clear);
    alice.expect_joined("bob");

    // 500 well-formed direct messages claiming to be bob, from an address bob never announced.
    let stranger = udp_socket();
    let datagrams: Vec<Vec<u8>> = (0..500).map(|id| forged("bob", id)).collect();
    let target = alice.p2p_addr();
    flood(&mut alice, &stranger, target, &datagrams);

    let stats = alice.stats();
    assert_eq!(count(&stats, &["received"]), 500, "{stats}");
    assert_eq!(count(&stats, &["delivered"]), 0, "{stats}");
    assert_eq!(
        count(&stats, &["dropped", "unknown_source"]),
        500,
        "{stats}"
    );
    assert_eq!(count(&stats, &["dropped", "rate_limited"]), 0, "{stats}");
    assert_eq!(
        count(&stats, &["sources_tracked"]),
        0,
        "strangers get no bucket: {stats}"
    );
    assert_eq!(events_of(&alice, "direct").count(), 0);
    // One warning for the one source and kind; the rest only counted (and perhaps summed up).
    assert_few_warnings(&alice, 1, started);
    let first = events_of(&alice, "warning").next().unwrap();
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("unknown_source"),
        "{first}"
    );

    // Still chatting, both ways, room and direct.
    bob.send("still here?");
    assert_eq!(alice.expect_event("message")["text"], "still here?");
    alice.send("yes");
    assert_eq!(bob.expect_event("message")["text"], "yes");
    bob.send("@alice: and direct");
    let direct = alice.expect_event("direct");
    assert_eq!(
        (&direct["from"], &direct["text"]),
        (&json!("bob"), &json!("and direct"))
    );
    let stats = alice.stats();
    assert_eq!(count(&stats, &["delivered"]), 1, "{stats}");
    let finished = alice.finish();
    assert_eq!(finished.status.code(), Some(0), "{}", finished.stderr);
}

#[test]
fn a_peer_over_its_burst_gets_exactly_the_burst_delivered_and_the_excess_counted() {
    const BURST: u64 = 20;
    const SENT: usize = 50;
    let started = Instant::now();
    // A refill of one datagram per 1000 s: during the test no token comes back, so exactly the
    // burst gets through whatever the timing.
    let ((_dir, server), mut alice, mallory) =
        alice_and_mallory(&["--dm-burst", &BURST.to_string(), "--dm-rate", "0.001"]);

    // All in one go: more than twice the burst, well within the socket buffer.
    let datagrams: Vec<Vec<u8>> = (0..SENT).map(|id| forged("mallory", id)).collect();
    for datagram in &datagrams {
        mallory.send_datagram(datagram, alice.p2p_addr());
    }
    let stats = alice.wait_for_stats("all of mallory's datagrams received", |s| {
        count(s, &["received"]) == SENT as u64
    });
    assert_eq!(count(&stats, &["delivered"]), BURST, "{stats}");
    assert_eq!(
        count(&stats, &["dropped", "rate_limited"]),
        SENT as u64 - BURST,
        "{stats}"
    );
    assert_eq!(count(&stats, &["dropped", "unknown_source"]), 0, "{stats}");
    assert_eq!(count(&stats, &["sources_tracked"]), 1, "{stats}");
    // The first BURST, in order, were the ones shown.
    let ids: Vec<u64> = events_of(&alice, "direct")
        .map(|e| {
            assert_eq!(e["from"], "mallory");
            e["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(ids, (0..BURST).collect::<Vec<_>>());
    assert_few_warnings(&alice, 1, started);
    let first = events_of(&alice, "warning").next().unwrap();
    assert!(
        first["message"].as_str().unwrap().contains("rate_limited"),
        "{first}"
    );

    // The limit is per sender: another peer is not affected.
    let mut bob =
        ChatClient::register_with_flags(server.addr, "bob", "bob-password", &["--plaintext"]);
    alice.expect_joined("bob");
    bob.send("@alice: I am not mallory");
    assert_eq!(alice.expect_event("direct")["text"], "I am not mallory");
    let stats = alice.stats();
    assert_eq!(count(&stats, &["delivered"]), BURST + 1, "{stats}");
    assert_eq!(count(&stats, &["sources_tracked"]), 2, "{stats}");
}

#[test]
fn oversized_malformed_and_garbage_datagrams_are_counted_and_harmless() {
    let started = Instant::now();
    let (_server, mut alice, mallory) = alice_and_mallory(&["--dm-max-bytes", "1024"]);

    let long_text = "x".repeat(2000);
    let oversized: Vec<Vec<u8>> = vec![
        // Well-formed, from the right address, but over --dm-max-bytes.
        json!({"type": "direct", "from": "mallory", "id": 1, "text": long_text})
            .to_string()
            .into_bytes(),
        // The largest UDP payload over IPv4.
        vec![b'x'; 65_507],
    ];
    let malformed: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe\xfd".to_vec(),
        b"\x00garbage\x00".to_vec(),
        b"not json".to_vec(),
        b"[1, 2, 3]".to_vec(),
        br#"{"type": "nope"}"#.to_vec(),
        br#"{"type": "direct", "from": "mallory"}"#.to_vec(),
        br#"{"type": "direct", "from": "mallory", "id": -1, "text": "x"}"#.to_vec(),
        br#"{"type": "direct", "from": "mallory", "id": 1, "text": "cut"#.to_vec(),
        // Nesting far deeper than the JSON parser's recursion limit (and under 1024 bytes).
        "[".repeat(1_000).into_bytes(),
    ];
    // Both from mallory's real address and from a stranger: the checks come before the source.
    let stranger = udp_socket();
    let mut all = oversized.clone();
    all.extend(malformed.iter().cloned());
    let target = alice.p2p_addr();
    flood(&mut alice, &mallory.udp, target, &all);
    flood(&mut alice, &stranger, target, &all);

    let stats = alice.stats();
    let n = |v: &[Vec<u8>]| 2 * v.len() as u64;
    assert_eq!(count(&stats, &["received"]), n(&all), "{stats}");
    assert_eq!(count(&stats, &["delivered"]), 0, "{stats}");
    assert_eq!(
        count(&stats, &["dropped", "oversized"]),
        n(&oversized),
        "{stats}"
    );
    assert_eq!(
        count(&stats, &["dropped", "malformed"]),
        n(&malformed),
        "{stats}"
    );
    assert_eq!(count(&stats, &["dropped", "unknown_source"]), 0, "{stats}");
    assert_eq!(count(&stats, &["dropped", "rate_limited"]), 0, "{stats}");
    assert_eq!(events_of(&alice, "direct").count(), 0);
    // Two kinds from two sources.
    assert_few_warnings(&alice, 4, started);

    // mallory's well-formed messages still get through; the client is alive.
    mallory.send_datagram(&forged("mallory", 7), alice.p2p_addr());
    let direct = alice.expect_event("direct");
    assert_eq!(
        (&direct["from"], &direct["id"]),
        (&json!("mallory"), &json!(7))
    );
    let finished = alice.finish();
    assert_eq!(finished.status.code(), Some(0), "{}", finished.stderr);
}

#[test]
fn the_limits_are_flags_shown_in_help_and_bad_values_are_usage_errors() {
    let help = std::process::Command::new(client_bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in ["--dm-burst", "--dm-rate", "--dm-max-bytes", "/stats"] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
    for bad in [
        ["--dm-burst", "0"],
        ["--dm-rate", "-1"],
        ["--dm-rate", "NaN"],
        ["--dm-rate", "fast"],
        ["--dm-max-bytes", "0"],
        ["--dm-max-bytes", "65508"],
    ] {
        let out = std::process::Command::new(client_bin())
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
    }
}

#[test]
fn a_captured_direct_message_sent_again_from_the_senders_address_is_shown_once_and_counted_as_replayed(
) {
    const REPLAYS: u64 = 3;
    let started = Instant::now();
    let (_server, mut alice, mallory) = alice_and_mallory(&[]);

    // A real direct message from mallory, shown once.
    let captured = json!({"type": "direct", "from": "mallory", "id": 1, "text": "meet me at 5"})
        .to_string()
        .into_bytes();
    mallory.send_datagram(&captured, alice.p2p_addr());
    assert_eq!(alice.expect_event("direct")["text"], "meet me at 5");

    // The same bytes again, from the address mallory announced: the source check passes, so only
    // the id tells a replay.
    for _ in 0..REPLAYS {
        mallory.send_datagram(&captured, alice.p2p_addr());
    }
    let stats = alice.wait_for_stats("the replays received", |s| {
        count(s, &["received"]) == 1 + REPLAYS
    });
    assert_eq!(count(&stats, &["delivered"]), 1, "{stats}");
    assert_eq!(count(&stats, &["dropped", "replayed"]), REPLAYS, "{stats}");
    assert_eq!(count(&stats, &["dropped", "unknown_source"]), 0, "{stats}");
    assert_eq!(count(&stats, &["dropped", "rate_limited"]), 0, "{stats}");
    assert_eq!(events_of(&alice, "direct").count(), 1);
    assert_few_warnings(&alice, 1, started);
    let warning = events_of(&alice, "warning").next().unwrap();
    assert!(
        warning["message"].as_str().unwrap().contains("(replayed)"),
        "{warning}"
    );

    // mallory's next message (the next id) is shown as usual.
    let next = json!({"type": "direct", "from": "mallory", "id": 2, "text": "or at 6"});
    mallory.send_datagram(next.to_string().as_bytes(), alice.p2p_addr());
    assert_eq!(alice.expect_event("direct")["text"], "or at 6");
    let finished = alice.finish();
    assert_eq!(finished.status.code(), Some(0), "{}", finished.stderr);
}

#[test]
fn a_peer_that_restarts_counts_its_ids_from_one_again_and_is_not_taken_for_a_replay() {
    let (_dir, server) = start_server();
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let mut bob = ChatClient::register(server.addr, "bob", "bob-password");
    alice.expect_joined("bob");
    bob.send("@alice: first session");
    assert_eq!(bob.expect_event("direct_sent")["id"], 1);
    assert_eq!(alice.expect_event("direct")["text"], "first session");

    // bob quits and starts again on the same UDP port: a new client, whose ids start at 1 again.
    let port = bob.p2p_addr().port().to_string();
    assert_eq!(bob.finish().status.code(), Some(0));
    alice.expect(r#""bob" left"#, |e| {
        e["event"] == "left" && e["username"] == "bob"
    });
    let mut bob = ChatClient::start_with_flags(
        server.addr,
        "bob",
        &["--p2p-port", &port],
        &["login", "bob", "bob-password"],
    );
    bob.expect_event("welcome");
    alice.expect(r#""bob" joined again"#, |e| {
        e["event"] == "joined" && e["peer"]["username"] == "bob"
    });
    bob.send("@alice: second session");
    assert_eq!(bob.expect_event("direct_sent")["id"], 1);
    let outcome = datagram_outcome(&mut alice);
    assert_eq!(
        (&outcome["event"], &outcome["text"]),
        (&json!("direct"), &json!("second session")),
        "{outcome}"
    );
    let stats = alice.stats();
    assert_eq!(count(&stats, &["delivered"]), 2, "{stats}");
    assert_eq!(count(&stats, &["dropped", "replayed"]), 0, "{stats}");
}

#[test]
fn forgeries_in_a_peers_name_from_elsewhere_do_not_spend_its_rate_limit() {
    const BURST: u64 = 20;
    const FORGED: usize = 300;
    // A refill of one datagram per 1000 s: bob gets exactly his burst during the test, so every
    // token a forgery took would be one of his messages lost.
    let (_dir, server) = start_clear_server();
    let burst = BURST.to_string();
    let flags = ["--dm-burst", &burst, "--dm-rate", "0.001", "--plaintext"];
    let mut alice = ChatClient::register_with_flags(server.addr, "alice", "alice-password", &flags);
    let mut bob =
        ChatClient::register_with_flags(server.addr, "bob", "bob-password", &["--plaintext"]);
    alice.expect_joined("bob");
    // mallory is a real peer too: her own announced address is a source alice trusts, for her.
    let mallory = RawPeer::register(server.addr, "mallory", "mallory-pw");
    alice.expect_joined("mallory");

    // Forgeries in bob's name, with ids bob will use, from: a stranger's socket, another port on
    // bob's own IP, another loopback address (another host), and mallory's announced address.
    let bob_ip = bob.p2p_addr().ip();
    let forgers = [
        udp_socket(),
        UdpSocket::bind((bob_ip, 0)).unwrap(),
        UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2 (loopback is 127.0.0.0/8)"),
        mallory.udp,
    ];
    let target = alice.p2p_addr();
    for forger in &forgers {
        let datagrams: Vec<Vec<u8>> = (1..=FORGED / forgers.len())
            .map(|id| forged("bob", id))
            .collect();
        flood(&mut alice, forger, target, &datagrams);
    }
    let stats = alice.stats();
    assert_eq!(
        count(&stats, &["dropped", "unknown_source"]),
        FORGED as u64,
        "{stats}"
    );
    assert_eq!(count(&stats, &["delivered"]), 0, "{stats}");

    // bob's honest burst, all at once: every message is shown, ids 1 to BURST.
    for n in 1..=BURST {
        bob.send(&format!("@alice: honest {n}"));
    }
    let stats = alice.wait_for_stats("bob's burst received", |s| {
        count(s, &["received"]) == FORGED as u64 + BURST
    });
    assert_eq!(count(&stats, &["delivered"]), BURST, "{stats}");
    assert_eq!(count(&stats, &["dropped", "rate_limited"]), 0, "{stats}");
    assert_eq!(count(&stats, &["dropped", "replayed"]), 0, "{stats}");
    let shown: Vec<(String, u64)> = events_of(&alice, "direct")
        .map(|e| {
            assert_eq!(e["from"], "bob", "{e}");
            (
                e["text"].as_str().unwrap().to_string(),
                e["id"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = (1..=BURST).map(|n| (format!("honest {n}"), n)).collect();
    assert_eq!(shown, expected);
}

// ---- Sealed direct messages (the default) ----

/// A test-owned peer that speaks the sealed protocol through `p2pchat::sealed`: logged in with a
/// raw connection that announces its own session key and the port of a test-owned UDP socket.
struct SealedPeer {
    name: String,
    key: SessionKey,
    udp: UdpSocket,
    tcp: RawConnection,
    /// The next counter this peer seals under (never reused).
    counter: u64,
}

impl SealedPeer {
    /// Logs `name` in (`register` or `login`) with a fresh key, announcing `udp`'s port.
    fn start(server: &Server, name: &str, register: bool, udp: UdpSocket) -> SealedPeer {
        let key = SessionKey::generate();
        let mut tcp = RawConnection::connect(server.addr);
        let challenge = tcp.hello()["key_challenge"]
            .as_str()
            .and_then(PublicKey::from_base64)
            .expect("the hello's key challenge");
        let proof = key.prove(&challenge, name).expect("a proof");
        // As a current client does: the account's identity (the same at every login) vouches
        // for the session key.
        let mut seed = [0x17; 32];
        seed.iter_mut().zip(name.bytes()).for_each(|(b, n)| *b = n);
        let identity = p2pchat::identity::IdentityKey::from_seed(&seed);
        tcp.send(&json!({
            "type": if register { "register" } else { "login" },
            "username": name,
            "password": format!("{name}-password"),
            "p2p_port": udp.local_addr().unwrap().port(),
            "public_key": key.public_key().to_base64(),
            "key_proof": proof,
            "identity_key": identity.public(),
            "identity_binding": identity.bind(name, &key.public_key()),
        }));
        let welcome = tcp.expect("welcome", |m| {
            m["type"] == "welcome" || m["type"] == "error"
        });
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        SealedPeer {
            name: name.into(),
            key,
            udp,
            tcp,
            counter: 1,
        }
    }

    /// The pairwise keys with `client`, from the key it announced (its `welcome`'s own entry).
    fn keys_with(&self, client: &ChatClient) -> PairKeys {
        self.key
            .pair(&self.name, &client.name, &client.session_key())
            .unwrap()
    }

    /// A sealed direct message from this peer to `client`, under the next counter.
    fn message(&mut self, client: &ChatClient, id: u64, text: &str) -> Vec<u8> {
        let plaintext = json!({"type": "direct", "from": self.name, "id": id, "text": text});
        self.counter += 1;
        self.keys_with(client).seal(
            Kind::Message,
            self.counter - 1,
            plaintext.to_string().as_bytes(),
        )
    }

    /// Waits for the next datagram this peer's socket receives.
    fn next_datagram(&self) -> Vec<u8> {
        self.udp.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = vec![0; 65_536];
        let (n, _) = self
            .udp
            .recv_from(&mut buf)
            .expect("a datagram within the deadline");
        buf.truncate(n);
        buf
    }

    /// Opens a datagram `client` sealed for this peer: its kind and plaintext.
    fn open(&self, client: &ChatClient, datagram: &[u8]) -> (Kind, Vec<u8>) {
        let header = Header::parse(datagram).expect("a sealed header");
        let plaintext = self
            .keys_with(client)
            .open(&header, datagram)
            .expect("it opens under the pairwise keys");
        (header.kind, plaintext)
    }
}

/// A server, alice (a real client, sealing) and bob (a test-owned sealed peer); alice has seen
/// bob join.
fn alice_and_sealed_bob() -> (tempfile::TempDir, Server, ChatClient, SealedPeer) {
    let (dir, server) = start_server();
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let bob = SealedPeer::start(&server, "bob", true, udp_socket());
    alice.expect_joined("bob");
    (dir, server, alice, bob)
}

#[test]
fn a_sealed_direct_message_hides_its_text_on_the_wire_and_its_acknowledgement_reports_it_delivered()
{
    let (_dir, _server, mut alice, mut bob) = alice_and_sealed_bob();
    let secret = "the plan is under the third stone";
    alice.send(&format!("@bob: {secret}"));
    let datagram = bob.next_datagram();
    // What travels: a version byte, a header, ciphertext; never the text, the names or JSON.
    assert_eq!(datagram[0], p2pchat::sealed::VERSION);
    for clear in [secret.as_bytes(), b"third stone", b"alice", b"\"text\""] {
        assert!(
            !datagram.windows(clear.len()).any(|w| w == clear),
            "{:?} is readable in the datagram",
            String::from_utf8_lossy(clear)
        );
    }
    // bob, and only someone with bob's session key, reads it.
    let (kind, plaintext) = bob.open(&alice, &datagram);
    assert_eq!(kind, Kind::Message);
    let message: Value = serde_json::from_slice(&plaintext).unwrap();
    assert_eq!(
        message,
        json!({"type": "direct", "from": "alice", "id": 1, "text": secret})
    );
    assert_eq!(alice.expect_event("direct_sent")["id"], 1);
    // bob acknowledges it, sealed: alice reports it delivered.
    bob.counter += 1;
    let ack = bob
        .keys_with(&alice)
        .seal(Kind::Ack, bob.counter - 1, &1u64.to_be_bytes());
    bob.udp.send_to(&ack, alice.p2p_addr()).unwrap();
    assert_eq!(
        alice.expect("the delivery report", |e| e["event"] == "direct_delivered"
            || e["event"] == "direct_failed"),
        json!({"event": "direct_delivered", "to": "bob", "id": 1})
    );
    let stats = alice.stats();
    assert_eq!(count(&stats, &["acks"]), 1, "{stats}");
}

#[test]
fn an_unanswered_sealed_message_is_sent_max_tries_times_each_under_a_new_counter_then_reported_not_delivered(
) {
    let (_dir, _server, mut alice, bob) = alice_and_sealed_bob();
    let started = Instant::now();
    alice.send("@bob: are you there?");
    let report = alice.expect("the delivery report", |e| {
        e["event"] == "direct_delivered" || e["event"] == "direct_failed"
    });
    assert_eq!(
        report,
        json!({"event": "direct_failed", "to": "bob", "id": 1, "reason": "no answer from bob"})
    );
    // The schedule's sum (2.7 s): a lower bound that holds on any machine.
    assert!(
        started.elapsed() >= time_to_verdict(),
        "{:?}",
        started.elapsed()
    );
    // MAX_TRIES tries, each sealed anew (a new counter), the same message id.
    let mut counters = Vec::new();
    for _ in 0..MAX_TRIES {
        let datagram = bob.next_datagram();
        let (kind, plaintext) = bob.open(&alice, &datagram);
        assert_eq!(kind, Kind::Message);
        let message: Value = serde_json::from_slice(&plaintext).unwrap();
        assert_eq!(message["id"], 1);
        counters.push(Header::parse(&datagram).unwrap().counter);
    }
    let unique: std::collections::HashSet<_> = counters.iter().collect();
    assert_eq!(unique.len(), MAX_TRIES as usize, "{counters:?}");
    bob.udp.set_nonblocking(true).unwrap();
    let mut buf = [0; 2048];
    assert!(
        bob.udp.recv_from(&mut buf).is_err(),
        "one try too many was sent"
    );
}

#[test]
fn a_retransmitted_message_is_shown_once_and_acknowledged_each_time() {
    let (_dir, _server, mut alice, mut bob) = alice_and_sealed_bob();
    // The same message (id 1) twice, as a sender whose acknowledgement was lost sends it again:
    // sealed anew, a new counter.
    let first = bob.message(&alice, 1, "only once, please");
    let again = bob.message(&alice, 1, "only once, please");
    bob.udp.send_to(&first, alice.p2p_addr()).unwrap();
    bob.udp.send_to(&again, alice.p2p_addr()).unwrap();
    let stats = alice.wait_for_stats("both received", |s| count(s, &["received"]) == 2);
    assert_eq!(count(&stats, &["delivered"]), 1, "{stats}");
    assert_eq!(count(&stats, &["duplicates"]), 1, "{stats}");
    assert_eq!(events_of(&alice, "direct").count(), 1);
    for _ in 0..2 {
        let (kind, plaintext) = bob.open(&alice, &bob.next_datagram());
        assert_eq!((kind, plaintext), (Kind::Ack, 1u64.to_be_bytes().to_vec()));
    }
}

#[test]
fn forged_replayed_stale_and_truncated_sealed_datagrams_are_never_shown_and_are_counted() {
    let (_dir, server, mut alice, mut bob) = alice_and_sealed_bob();
    let started = Instant::now();
    let target = alice.p2p_addr();
    // Every attack comes from bob's announced address: the source check passes, so only the
    // sealing decides.
    let clear = forged("bob", 1);
    let stranger_key = SessionKey::generate();
    let alice_key = {
        let welcome = alice
            .history
            .iter()
            .find(|e| e["event"] == "welcome")
            .unwrap();
        PublicKey::from_base64(welcome["peers"][0]["public_key"].as_str().unwrap()).unwrap()
    };
    let plaintext = json!({"type": "direct", "from": "bob", "id": 1, "text": "forged"}).to_string();
    // Sealed under a key of its own, naming it.
    let unknown = stranger_key.pair("bob", "alice", &alice_key).unwrap().seal(
        Kind::Message,
        1,
        plaintext.as_bytes(),
    );
    // Sealed under that key but naming bob's: the key id is public, the key is not.
    let mut in_bobs_name = unknown.clone();
    in_bobs_name[2..10].copy_from_slice(&bob.key.public_key().key_id().0);
    let truncated = bob.message(&alice, 1, "x")[..20].to_vec();
    for datagram in [&clear, &unknown, &in_bobs_name, &truncated] {
        bob.udp.send_to(datagram, target).unwrap();
    }
    // bob's real message, then the same bytes captured and sent again, three times.
    let real = bob.message(&alice, 2, "the real one");
    for _ in 0..4 {
        bob.udp.send_to(&real, target).unwrap();
    }
    // A real message from bob's key but another address.
    let elsewhere = bob.message(&alice, 3, "from elsewhere");
    udp_socket().send_to(&elsewhere, target).unwrap();
    let stats = alice.wait_for_stats("all of them received", |s| count(s, &["received"]) == 9);
    assert_eq!(count(&stats, &["delivered"]), 1, "{stats}");
    for (counter, n) in [
        ("unsealed", 1),
        ("unknown_key", 1),
        ("forged", 1),
        ("truncated", 1),
        ("replayed", 3),
        ("unknown_source", 1),
    ] {
        assert_eq!(
            count(&stats, &["dropped", counter]),
            n,
            "{counter}: {stats}"
        );
    }
    let shown: Vec<&Value> = events_of(&alice, "direct").collect();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert_eq!(shown[0]["text"], "the real one");
    // Six kinds from two sources: the first five get warnings of their own (at most five per
    // interval), the rest are summed up.
    assert_few_warnings(&alice, 5, started);

    // bob's session ends and a new one starts on the same address, with a new key: a datagram
    // sealed in the old session is stale.
    let old_session = bob.message(&alice, 4, "from the old session");
    let SealedPeer { udp, tcp, .. } = bob;
    drop(tcp);
    alice.expect(r#""bob" left"#, |e| e["event"] == "left");
    let bob = SealedPeer::start(&server, "bob", false, udp);
    alice.expect(r#""bob" joined again"#, |e| e["event"] == "joined");
    bob.udp.send_to(&old_session, target).unwrap();
    let stats = alice.wait_for_stats("the old session's datagram", |s| {
        count(s, &["received"]) == 10
    });
    assert_eq!(count(&stats, &["dropped", "stale_session"]), 1, "{stats}");
    assert_eq!(count(&stats, &["delivered"]), 1, "{stats}");
    assert_eq!(events_of(&alice, "direct").count(), 1);
}

#[test]
fn a_sealing_client_refuses_to_message_a_peer_without_a_key_and_drops_its_clear_datagrams() {
    // A peer that announced no key speaks the clear protocol (a `--plaintext` client, or an older
    // one). `--plaintext` clients need a `--plaintext` server, so on this TLS server carol is a
    // raw connection that registers without a key, and sends a clear JSON datagram.
    let (_dir, server) = start_server();
    let mut alice = ChatClient::register(server.addr, "alice", "alice-password");
    let carol = RawPeer::register(server.addr, "carol", "carol-password");
    alice.expect_joined("carol");
    alice.send("@carol: hello?");
    let error = alice.expect_event("error");
    assert!(
        error["message"].as_str().unwrap().contains("--plaintext")
            && error["message"]
                .as_str()
                .unwrap()
                .contains("nothing was sent"),
        "{error}"
    );
    carol.send_datagram(&forged("carol", 1), alice.p2p_addr());
    let stats = alice.wait_for_stats("carol's clear datagram", |s| count(s, &["received"]) == 1);
    assert_eq!(count(&stats, &["dropped", "unsealed"]), 1, "{stats}");
    assert_eq!(count(&stats, &["delivered"]), 0, "{stats}");
}
